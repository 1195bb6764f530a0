//! `qmgr`: the queue manager. One resident process (master.cf's wakeup column keeps it
//! running) that moves queue files from `incoming/` to `active/`, hands their recipients to the
//! delivery agents (`virtual`, `local`, `smtp`) through channels from the master, records each
//! result in the queue file, and then removes the file, moves it to `deferred/` with its next
//! retry time, or asks `bounce` to tell the sender.
//!
//! Trusts: the master (its control channel and the channels it hands over) for framing only;
//! every message and every queue file is decoded and checked by `protocol` (see `manager`).
//! Runs as `queue_user`, landlocked to the queue directories, with no network and no way to
//! open a channel itself.
//!
//! Unlike other unix services, qmgr takes every channel the master hands it (cleanup processes
//! each keep a wake-up channel open) and says `Idle` at once after each, and ignores `max_use`
//! and `max_idle`: it is resident, as Postfix's qmgr.

#![forbid(unsafe_code)]

mod backoff;
mod config;
mod manager;
mod schedule;
mod spool;

use std::process::ExitCode;
use std::time::Duration;

use daemon::{ControlEvent, Daemon};

use config::Config;
use manager::Manager;
use spool::Spool;

/// The longest single wait of the loop; timers are rechecked at least this often.
const MAX_WAIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut d = Daemon::init()?;
    let config = Config::from_settings(d.settings())?;
    // INVARIANT: the sandbox is in force before the first channel is read and before any
    // queue file is opened.
    d.enter_sandbox()?;
    // Opened after the sandbox, as cleanup does: before it this process is root without
    // CAP_DAC_OVERRIDE and cannot enter the queue user's directories.
    let spool = Spool::open(&config.queue_directory)?;
    let recovery = spool.recover()?;
    tracing::info!(
        returned = recovery.returned,
        removed = recovery.removed,
        "recovered the queue"
    );
    let control = manager::dup(d.control_fd())?;
    let mut m = Manager::new(config, spool);
    loop {
        let mut events = false;
        while let Some(event) = d.poll_control()? {
            events = true;
            match event {
                ControlEvent::Stop => {
                    tracing::info!(active = m.active(), "stopping");
                    m.stop();
                }
                ControlEvent::Incoming(from, channel) => {
                    d.idle()?;
                    tracing::debug!(client = %from, "wake-up channel");
                    m.add_waker(channel);
                }
                ControlEvent::MasterGone => {
                    tracing::info!("the master is gone; exiting");
                    return Ok(());
                }
            }
        }
        if d.stop_requested() && m.quiescent() {
            return Ok(());
        }
        let wait = if events { Duration::ZERO } else { MAX_WAIT };
        let wait = if d.stop_requested() {
            wait.min(Duration::from_secs(1))
        } else {
            wait
        };
        m.step(&mut d, Some(std::os::fd::AsFd::as_fd(&control)), wait);
    }
}
