//! `virtual`: the virtual delivery agent. The queue manager hands it a channel; each
//! request brings a queue file's read-only descriptor and up to 50 recipients, which it
//! delivers into Maildir or mbox mailboxes under `virtual_mailbox_base`.
//!
//! Trusts: the master (control channel, the channels it hands over). Runs as
//! `vmail_user` (the one owner of every virtual mailbox), landlocked to the mailbox
//! base, with no network. Everything else is in the library's modules.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use daemon::Daemon;
use r#virtual::Config;

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
    // The tables are read here, before the sandbox (which allows only the mailbox
    // base): a table that cannot be read stops the daemon with the file's name, and a
    // changed table is seen by the next process the master starts.
    let config = Config::from_settings(d.settings()).context("virtual settings")?;
    // INVARIANT: the sandbox is in force before the first request is read; from here
    // on the process reaches only the mailbox base and the descriptors it is handed.
    d.enter_sandbox()?;
    let ended =
        d.serve_unix(|_, from, channel| r#virtual::serve(&channel, from.as_str(), &config))?;
    tracing::info!(?ended, "done");
    Ok(())
}
