//! The hand-over to cleanup: one channel for the whole life of the process, opened at
//! the first message and opened again after a failure; per message `Begin`,
//! `Recipients`, `Content` chunks, then `End` and the one answer, or `Abort`.
//!
//! Trusts: nothing cleanup sends; its answer is decoded by `protocol` into a
//! [`FromCleanup`], and anything else (a broken or closed channel, no answer within
//! `smtpd_timeout`) is a temporary failure: `451 4.3.0 Error: queue file write error`.
//! After any failure the channel is dropped, so cleanup sees it close and discards the
//! message in progress; the next message asks the master for a new channel. A channel
//! found closed when a message begins (its cleanup process ended since the last
//! message) is replaced at once, as nothing of the message was handed over yet.
//!
//! Sends never block without limit: the channel is non-blocking and a full socket
//! buffer is waited out with `poll`, up to `smtpd_timeout`.

use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use protocol::bounded::{BoundedBytes, BoundedVec};
use protocol::cleanup::{CHUNK_MAX, RECIPIENTS_PER_MESSAGE};
use protocol::queue::Recipient;
use protocol::{Channel, ChannelError, FromCleanup, ToCleanup};

/// How the process obtains a channel to cleanup (in the daemon: a `Connect` to the
/// master; in tests: one end of a pair).
pub type Connect<'a> = dyn FnMut() -> Result<Channel, String> + 'a;

/// Why a message could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("no channel to cleanup: {0}")]
    Connect(String),
    #[error("cleanup channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("cleanup channel: no progress within {0:?}")]
    Timeout(Duration),
    #[error("cleanup channel: {0}")]
    Poll(nix::Error),
    #[error("message content: {0}")]
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

    /// Whether a channel is open (for tests of the reconnect rule).
    pub fn is_open(&self) -> bool {
        self.channel.is_some()
    }

    /// Drops the channel after a failure; the next message opens a new one.
    fn fail<T>(&mut self, e: HandOffError) -> Result<T, HandOffError> {
        self.channel = None;
        Err(e)
    }

    fn channel(&self) -> Result<&Channel, HandOffError> {
        self.channel
            .as_ref()
            .ok_or(HandOffError::Channel(ChannelError::PeerClosed))
    }

    fn wait(&self, flags: PollFlags, deadline: Instant) -> Result<(), HandOffError> {
        let channel = self.channel()?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [PollFd::new(channel.as_fd(), flags)];
            match nix::poll::poll(&mut fds, poll_timeout(left)) {
                Ok(0) => return Err(HandOffError::Timeout(self.timeout)),
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(HandOffError::Poll(e)),
            }
        }
    }

    fn send_once(&self, msg: &ToCleanup) -> Result<(), HandOffError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.channel()?.send(msg, &[]) {
                Ok(()) => return Ok(()),
                Err(ChannelError::WouldBlock) => self.wait(PollFlags::POLLOUT, deadline)?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&mut self, msg: &ToCleanup) -> Result<(), HandOffError> {
        match self.send_once(msg) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// Starts a message: opens the channel if there is none, sends `begin` and the
    /// recipients in RCPT order.
    pub fn begin(
        &mut self,
        connect: &mut Connect<'_>,
        begin: ToCleanup,
        recipients: &[Recipient],
    ) -> Result<(), HandOffError> {
        let reused = self.channel.is_some();
        if !reused {
            self.open(connect)?;
        }
        match self.send(&begin) {
            // A cleanup process that ended since the last message (stopped, crashed)
            // leaves a closed channel; nothing of this message was sent yet, so a new
            // channel may carry it.
            Err(HandOffError::Channel(ChannelError::PeerClosed)) if reused => {
                tracing::info!("cleanup channel closed since the last message; reconnecting");
                self.open(connect)?;
                self.send(&begin)?;
            }
            other => other?,
        }
        for group in recipients.chunks(RECIPIENTS_PER_MESSAGE) {
            let list = match BoundedVec::try_from(group.to_vec()) {
                Ok(list) => list,
                Err(e) => return self.fail(HandOffError::Invalid(e.to_string())),
            };
            self.send(&ToCleanup::Recipients(list))?;
        }
        Ok(())
    }

    /// Sends `data` as `Content` chunks of at most [`CHUNK_MAX`] octets.
    pub fn content(&mut self, data: &[u8]) -> Result<(), HandOffError> {
        for piece in data.chunks(CHUNK_MAX) {
            let bytes = match BoundedBytes::try_from(piece.to_vec()) {
                Ok(bytes) => bytes,
                Err(e) => return self.fail(HandOffError::Invalid(e.to_string())),
            };
            self.send(&ToCleanup::Content(bytes))?;
        }
        Ok(())
    }

    /// Discards the message in progress. A failure drops the channel, which discards
    /// it as well.
    pub fn abort(&mut self) {
        if self.channel.is_some() {
            if let Err(e) = self.send(&ToCleanup::Abort) {
                tracing::warn!("cleanup abort: {e}");
            }
        }
    }

    fn open(&mut self, connect: &mut Connect<'_>) -> Result<(), HandOffError> {
        let channel = connect().map_err(HandOffError::Connect)?;
        channel.set_nonblocking(true)?;
        self.channel = Some(channel);
        Ok(())
    }

    /// Ends the message and waits for cleanup's answer.
    pub fn end(&mut self) -> Result<FromCleanup, HandOffError> {
        self.send(&ToCleanup::End)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Err(e) = self.wait(PollFlags::POLLIN, deadline) {
                return self.fail(e);
            }
            let received = self.channel()?.recv::<FromCleanup>();
            match received {
                Ok(r) => return Ok(r.msg),
                Err(ChannelError::WouldBlock) => continue,
                Err(e) => return self.fail(e.into()),
            }
        }
    }
}
