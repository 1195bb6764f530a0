//! `smtpd`: the SMTP server daemon. The master passes it the listening socket; it
//! accepts one client at a time, up to `max_use` sessions, and hands each message to
//! cleanup.
//!
//! Trusts: the master (control channel, listener, the cleanup and proxymap channels it
//! brokers).
//! Everything else is in the library's modules.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use std::cell::RefCell;

use daemon::proxymap_client::{self, ProxymapLink, LOOKUP_TIMEOUT};
use daemon::Daemon;
use smtpd::local_recipients::Proxymap;
use smtpd::{CleanupLink, Config};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut d = Daemon::init()?;
    let config = Config::from_settings(d.settings()).context("smtpd settings")?;
    if let Some(why) = config.local_recipients.failure() {
        tracing::error!("{why}; recipients in mydestination get 451 4.3.0 until it is fixed");
    }
    // INVARIANT: the sandbox is in force before the first connection is accepted; from
    // here on the process opens nothing, and its profile gives it no path at all.
    d.enter_sandbox()?;
    let mut link = CleanupLink::new(config.timeout);
    let mut proxymap = ProxymapLink::new(LOOKUP_TIMEOUT);
    let ended = d.serve_inet(|d, stream, peer| {
        // Both channels are asked of the master through the one control channel.
        let d = RefCell::new(d);
        let mut to_cleanup = || d.borrow_mut().connect("cleanup").map_err(|e| e.to_string());
        let mut to_proxymap = || {
            d.borrow_mut()
                .connect(proxymap_client::SERVICE)
                .map_err(|e| e.to_string())
        };
        let mut accounts = Proxymap {
            link: &mut proxymap,
            connect: &mut to_proxymap,
        };
        smtpd::run(
            stream,
            peer,
            &config,
            &mut link,
            &mut to_cleanup,
            &mut accounts,
        )
    })?;
    tracing::info!(?ended, "done");
    Ok(())
}
