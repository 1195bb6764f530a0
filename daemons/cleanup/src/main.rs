//! `cleanup`: the only writer of new queue files. smtpd (later pickup and bounce) hands it a
//! message over a channel; cleanup writes `$queue_directory/incoming/QUEUEID` with the envelope,
//! the `Received:` header, the content (adding `Message-ID:` and `Date:` when missing) and the
//! end marker, makes it durable, answers with the queue id and wakes the queue manager.
//!
//! Trusts: the master (its control channel and the channels it hands over) for framing only;
//! every message is decoded by `protocol` and its order checked by [`service`]. The queue
//! directory is the master's and the queue user's. Runs as `queue_user`, landlocked to
//! `incoming/`, with no network.

#![forbid(unsafe_code)]

mod service;
mod spool;

use std::process::ExitCode;

use daemon::Daemon;
use protocol::{Channel, ChannelError, ToQmgr};

use service::{Cleanup, Config};
use spool::Spool;

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
    let incoming =
        std::path::PathBuf::from(d.settings().get("queue_directory")?.trim()).join("incoming");
    // INVARIANT: the sandbox is in force before the first channel is read and before the sweep
    // opens any queue file.
    d.enter_sandbox()?;
    // Opened after the sandbox: before it this process is root without CAP_DAC_OVERRIDE (the
    // master's bounding set), which cannot enter the queue user's 0700 directory; landlock
    // allows it now. The descriptor then names the directory for every create, remove and
    // fsync.
    let spool = Spool::open(&incoming)?;
    let sweep = spool.sweep()?;
    tracing::info!(
        removed = sweep.removed.len(),
        in_progress = sweep.in_progress,
        complete = sweep.complete,
        "swept the incoming queue"
    );
    let mut cleanup = Cleanup::new(config, spool);
    // After the sweep, which would see it as a live writer's file anyway.
    cleanup.prepare_spare();
    let mut qmgr = Qmgr::NotConnected;
    let ended = d.serve_unix(|d, from, channel| {
        cleanup.serve(&channel, from.as_str(), &mut || qmgr.wake(d))
    })?;
    tracing::debug!(?ended, "serve loop ended");
    // Removes the unused spare; an early return through `?` drops it too.
    drop(cleanup);
    Ok(())
}

/// The wake-up channel to the queue manager.
enum Qmgr {
    NotConnected,
    Connected(Channel),
    /// The master refused (no qmgr in master.cf): not asked again by this process.
    Refused,
}

impl Qmgr {
    /// Tells qmgr a new file is in `incoming/`, never waiting for it: a full channel means
    /// wake-ups are already pending.
    fn wake(&mut self, d: &mut Daemon) {
        // A closed channel (qmgr exited) is reopened once, so this message's wake-up is not lost.
        for _ in 0..2 {
            if let Qmgr::NotConnected = self {
                *self = match d.connect("qmgr") {
                    Ok(channel) => match channel.set_nonblocking(true) {
                        Ok(()) => Qmgr::Connected(channel),
                        Err(e) => {
                            tracing::warn!("qmgr channel: {e}");
                            return;
                        }
                    },
                    Err(daemon::Error::Refused { reason, .. }) => {
                        tracing::info!(
                            "no channel to qmgr ({reason}); new mail waits for the queue manager's own scan"
                        );
                        Qmgr::Refused
                    }
                    Err(e) => {
                        tracing::warn!("cannot wake qmgr: {e}");
                        return;
                    }
                };
            }
            let Qmgr::Connected(channel) = self else {
                return;
            };
            match channel.send(&ToQmgr::Wake, &[]) {
                Ok(()) | Err(ChannelError::WouldBlock) => return,
                Err(e) => {
                    tracing::debug!("qmgr channel: {e}; reconnecting");
                    *self = Qmgr::NotConnected;
                }
            }
        }
    }
}
