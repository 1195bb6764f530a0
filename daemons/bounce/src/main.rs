//! `bounce`: sends delivery status notifications. The queue manager hands it a queue file's
//! read-only descriptor and the recipients to report; it writes the report and injects it
//! through cleanup with the null sender.
//!
//! Trusts: see the library's header. The recipe: settings, sandbox, serve.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use bounce::{Bounce, Config};
use daemon::Daemon;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each error's text already includes its cause.
            tracing::error!("fatal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut d = Daemon::init()?;
    let config = Config::from_settings(d.settings())?;
    // INVARIANT: the sandbox is in force before the first channel is read; from here on the
    // process holds no descriptor but its channels.
    d.enter_sandbox()?;
    let mut bounce = Bounce::new(config);
    let ended = d.serve_unix(|d, from, channel| {
        let mut connect = || d.connect("cleanup").map_err(|e| e.to_string());
        bounce.serve(&channel, from.as_str(), &mut connect)
    })?;
    tracing::debug!(?ended, "serve loop ended");
    Ok(())
}
