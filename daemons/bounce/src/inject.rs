//! The hand-over of a report to cleanup: one channel for the life of the process, opened at
//! the first report and again after a failure; per report `Begin` (sender `<>`), the
//! `Recipients`, `Content` chunks, `End`, and cleanup's one answer.
//!
//! Trusts: nothing cleanup sends; its answer is decoded by `protocol`. A broken or closed
//! channel, or no progress within [`CLEANUP_TIMEOUT`], is a temporary failure, and the channel
//! is dropped so that cleanup discards the partial message. A channel found closed when a
//! report begins (its cleanup process ended since the last report) is replaced at once, as
//! nothing of the report was handed over yet.

use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use protocol::bounded::{BoundedBytes, BoundedVec};
use protocol::cleanup::{CHUNK_MAX, RECIPIENTS_PER_MESSAGE};
use protocol::queue::{ClientInfo, Protocol, Recipient};
use protocol::{Channel, ChannelError, FromCleanup, ReversePath, ToCleanup};

use crate::report::Report;

/// How long cleanup may take to accept a message or to answer `End` (it fsyncs a file and a
/// directory): far more than a healthy disk needs, far less than the queue manager's patience.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(100);

/// How the process obtains a channel to cleanup (in the daemon: a `Connect` to the master; in
/// tests: one end of a pair).
pub type Connect<'a> = dyn FnMut() -> Result<Channel, String> + 'a;

/// Why a report could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("no channel to cleanup: {0}")]
    Connect(String),
    #[error("cleanup channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("cleanup channel: no progress within {0:?}")]
    Timeout(Duration),
    #[error("cleanup channel: {0}")]
    Poll(nix::Error),
    #[error("report: {0}")]
    Invalid(String),
}

/// The process's channel to cleanup.
pub struct CleanupLink {
    channel: Option<Channel>,
    timeout: Duration,
}

fn poll_timeout(t: Duration) -> PollTimeout {
    let ms = t
        .as_millis()
        .saturating_add(u128::from(t.subsec_nanos() % 1_000_000 != 0));
    PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(PollTimeout::MAX)
}

impl CleanupLink {
    pub fn new(timeout: Duration) -> CleanupLink {
        CleanupLink {
            channel: None,
            timeout,
        }
    }

    /// Hands `report` over and returns cleanup's answer. On any error the channel is dropped.
    pub fn inject(
        &mut self,
        connect: &mut Connect<'_>,
        report: &Report,
    ) -> Result<FromCleanup, InjectError> {
        let result = self.try_inject(connect, report);
        if result.is_err() {
            self.channel = None;
        }
        result
    }

    fn try_inject(
        &mut self,
        connect: &mut Connect<'_>,
        report: &Report,
    ) -> Result<FromCleanup, InjectError> {
        let begin = ToCleanup::Begin {
            sender: ReversePath::Null,
            flags: report.flags.clone(),
            client: ClientInfo {
                name: None,
                address: None,
                helo: None,
                protocol: Protocol::Local,
            },
            received: report.received.clone(),
        };
        let reused = self.channel.is_some();
        if !reused {
            self.open(connect)?;
        }
        match self.send(&begin) {
            Err(InjectError::Channel(ChannelError::PeerClosed)) if reused => {
                tracing::info!("cleanup channel closed since the last report; reconnecting");
                self.open(connect)?;
                self.send(&begin)?;
            }
            other => other?,
        }
        let recipients: Vec<Recipient> = report
            .recipients
            .iter()
            .map(|path| Recipient {
                path: path.clone(),
                notify: None,
                orcpt: None,
            })
            .collect();
        for group in recipients.chunks(RECIPIENTS_PER_MESSAGE) {
            let list = BoundedVec::try_from(group.to_vec())
                .map_err(|e| InjectError::Invalid(e.to_string()))?;
            self.send(&ToCleanup::Recipients(list))?;
        }
        for piece in report.text.chunks(CHUNK_MAX) {
            let bytes = BoundedBytes::try_from(piece.to_vec())
                .map_err(|e| InjectError::Invalid(e.to_string()))?;
            self.send(&ToCleanup::Content(bytes))?;
        }
        self.send(&ToCleanup::End)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            self.wait(PollFlags::POLLIN, deadline)?;
            match self.channel()?.recv::<FromCleanup>() {
                Ok(r) => return Ok(r.msg),
                Err(ChannelError::WouldBlock) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn open(&mut self, connect: &mut Connect<'_>) -> Result<(), InjectError> {
        let channel = connect().map_err(InjectError::Connect)?;
        // Non-blocking, so a cleanup that stops reading cannot hold this process forever.
        channel.set_nonblocking(true)?;
        self.channel = Some(channel);
        Ok(())
    }

    fn channel(&self) -> Result<&Channel, InjectError> {
        self.channel
            .as_ref()
            .ok_or(InjectError::Channel(ChannelError::PeerClosed))
    }

    fn wait(&self, flags: PollFlags, deadline: Instant) -> Result<(), InjectError> {
        let channel = self.channel()?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(channel.as_fd(), flags)];
            match nix::poll::poll(&mut fds, poll_timeout(left)) {
                Ok(0) => return Err(InjectError::Timeout(self.timeout)),
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(InjectError::Poll(e)),
            }
        }
    }

    fn send(&self, msg: &ToCleanup) -> Result<(), InjectError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.channel()?.send(msg, &[]) {
                Ok(()) => return Ok(()),
                Err(ChannelError::WouldBlock) => self.wait(PollFlags::POLLOUT, deadline)?,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
