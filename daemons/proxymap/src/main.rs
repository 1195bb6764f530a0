//! `proxymap`: the read-only lookup service. smtpd (a local recipient at `RCPT`) and `local`
//! (a recipient's account and groups) keep a channel to it and ask for one entry of the
//! accounts database at a time; it answers from `local_passwd_file` and `local_group_file`,
//! read when they change (see the library).
//!
//! Trusts: the master (control channel, the channels it hands over) for framing only; every
//! request is decoded by `protocol` and a client that breaks the protocol loses its channel.
//! Runs as `proxymap_user` (never root, so the file permissions keep `/etc/shadow` out of a
//! landlock rule on `/etc`), landlocked to reading files beneath the directories of the two
//! files, with no network and no channel of its own to ask for.
//!
//! Like qmgr it takes every channel the master hands it and says `Idle` at once after each:
//! clients keep their channel for their life, so one process serves them all with a `poll`
//! loop, and it ignores `max_use` and `max_idle` (it ends on `Stop` or when the master goes).

#![forbid(unsafe_code)]

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use daemon::{ControlEvent, Daemon};
use nix::poll::{PollFd, PollFlags};
use protocol::proxymap::{FromProxymap, ToProxymap};
use protocol::{Channel, ChannelError};
use proxymap::Maps;

/// The longest single wait of the loop.
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
    let path = |name: &str| -> anyhow::Result<PathBuf> {
        Ok(PathBuf::from(d.settings().get(name)?.trim()))
    };
    let mut maps = Maps::new(&path("local_passwd_file")?, &path("local_group_file")?);
    // INVARIANT: the sandbox is in force before the first request is read; no file is opened
    // before it.
    d.enter_sandbox()?;
    let control = d.control_fd().try_clone_to_owned()?;
    let mut clients: Vec<(protocol::ServiceName, Channel)> = Vec::new();
    loop {
        while let Some(event) = d.poll_control()? {
            match event {
                ControlEvent::Stop => {
                    tracing::info!(clients = clients.len(), "stopping");
                    return Ok(());
                }
                ControlEvent::Incoming(from, channel) => {
                    d.idle()?;
                    tracing::debug!(client = %from, "lookup channel");
                    // Non-blocking: a client that asks without reading its answers loses
                    // its channel instead of holding this process (and every other client).
                    match channel.set_nonblocking(true) {
                        Ok(()) => clients.push((from, channel)),
                        Err(e) => tracing::warn!(client = %from, "dropping the channel: {e}"),
                    }
                }
                ControlEvent::MasterGone => {
                    tracing::info!("the master is gone; exiting");
                    return Ok(());
                }
            }
        }
        let ready = {
            let mut fds: Vec<PollFd<'_>> = std::iter::once(control.as_fd())
                .chain(clients.iter().map(|(_, c)| c.as_fd()))
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            match nix::poll::poll(&mut fds, daemon::poll_timeout(MAX_WAIT)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            fds.iter()
                .skip(1)
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<bool>>()
        };
        let mut keep = Vec::with_capacity(clients.len());
        for ((from, channel), ready) in clients.drain(..).zip(ready) {
            if !ready || answer(&mut maps, &from, &channel) {
                keep.push((from, channel));
            }
        }
        clients = keep;
    }
}

/// Answers one request on `channel`; false when the channel is to be closed.
fn answer(maps: &mut Maps, from: &protocol::ServiceName, channel: &Channel) -> bool {
    let request = match channel.recv::<ToProxymap>() {
        Ok(r) => r.msg,
        Err(ChannelError::WouldBlock) => return true,
        Err(ChannelError::PeerClosed) => return false,
        Err(e) => {
            tracing::warn!(client = %from, "closing the channel: {e}");
            return false;
        }
    };
    let ToProxymap::Lookup { table, key } = request;
    let reply = maps.lookup(table, key.as_str());
    if let FromProxymap::TempFail(why) = &reply {
        tracing::warn!(client = %from, ?table, key = key.as_str(), "lookup failed: {why}");
    }
    match channel.send(&reply, &[]) {
        Ok(()) => true,
        Err(ChannelError::WouldBlock) => {
            tracing::warn!(client = %from, "closing the channel: it does not read its answers");
            false
        }
        Err(e) => {
            tracing::warn!(client = %from, "closing the channel: {e}");
            false
        }
    }
}
