//! The hand-over of a message to cleanup, as every daemon that submits mail does it (smtpd for
//! what a client sends, bounce for its notices, local for forwarded copies): one channel for the
//! life of the process, opened at the first message and opened again after a failure; per
//! message `Begin`, the `Recipients` in order, `Content` chunks, then `End` and cleanup's one
//! answer, or `Abort`.
//!
//! Trusts: nothing cleanup sends; its answer is decoded by `protocol` into a [`FromCleanup`], and
//! anything else (a broken or closed channel, no progress within the link's timeout) is a
//! [`HandOffError`], which each daemon maps to its own temporary failure. After any failure the
//! channel is dropped, so cleanup sees it close and discards the message in progress; the next
//! message asks for a new channel. A channel found closed when a message begins (its cleanup
//! process ended since the last message) is replaced at once, as nothing of the message was
//! handed over yet.
//!
//! Sends never block without limit: the channel is non-blocking and a full socket buffer is
//! waited out with `poll`, up to the timeout, counted afresh for each send and for the answer.

use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use protocol::bounded::{BoundedBytes, BoundedVec};
use protocol::cleanup::{ReceivedHeader, CHUNK_MAX, RECIPIENTS_PER_MESSAGE};
use protocol::queue::{ClientInfo, MailFlags, Protocol, Recipient};
use protocol::{Channel, ChannelError, ForwardPath, FromCleanup, ReversePath, ToCleanup};

use crate::poll_timeout;

/// How long cleanup may take to accept a message or to answer `End` (it fsyncs a file and a
/// directory), for daemons without a client-facing timeout of their own: far more than a healthy
/// disk needs, far less than the queue manager's patience.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(100);

/// How the process obtains a channel to cleanup (in a daemon: [`crate::Daemon::connect`]; in
/// tests: one end of a `Channel::pair()`).
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
    #[error("message {0}")]
    Invalid(String),
}

/// `Begin` for a message this host makes itself (a notice, a forwarded copy): no client, no
/// HELO, protocol `Local`.
pub fn local_begin(sender: ReversePath, flags: MailFlags, received: ReceivedHeader) -> ToCleanup {
    ToCleanup::Begin {
        sender,
        flags,
        client: ClientInfo {
            name: None,
            address: None,
            helo: None,
            protocol: Protocol::Local,
        },
        received,
    }
}

/// Recipients with no NOTIFY or ORCPT of their own (a new message's, as in Postfix).
pub fn plain_recipients(paths: &[ForwardPath]) -> Vec<Recipient> {
    paths
        .iter()
        .map(|path| Recipient {
            path: path.clone(),
            notify: None,
            orcpt: None,
        })
        .collect()
}

/// The process's channel to cleanup.
pub struct CleanupLink {
    channel: Option<Channel>,
    timeout: Duration,
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

    /// The open channel's descriptor: a forked child that carries a message on (the `local`
    /// agent's forwarding child) keeps it open.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.channel.as_ref().map(|c| c.as_fd().as_raw_fd())
    }

    /// Forgets the channel (a child used it and its state is unknown); the next message opens
    /// a new one, and cleanup discards whatever the old one carried.
    pub fn reset(&mut self) {
        self.channel = None;
    }

    /// Hands over a whole message: `begin`, the recipients, `parts` one after the other as the
    /// content, `End`; returns cleanup's answer.
    pub fn hand_over(
        &mut self,
        connect: &mut Connect<'_>,
        begin: ToCleanup,
        recipients: &[Recipient],
        parts: &[&[u8]],
    ) -> Result<FromCleanup, HandOffError> {
        self.begin(connect, begin, recipients)?;
        for part in parts {
            self.content(part)?;
        }
        self.end()
    }

    /// Starts a message: opens the channel if there is none, sends `begin` and the recipients in
    /// RCPT order.
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
            // A cleanup process that ended since the last message (stopped, crashed) leaves a
            // closed channel; nothing of this message was sent yet, so a new channel may carry it.
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
                Err(e) => return self.fail(HandOffError::Invalid(format!("recipients: {e}"))),
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
                Err(e) => return self.fail(HandOffError::Invalid(format!("content: {e}"))),
            };
            self.send(&ToCleanup::Content(bytes))?;
        }
        Ok(())
    }

    /// Discards the message in progress. A failure drops the channel, which discards it as well.
    pub fn abort(&mut self) {
        if self.channel.is_some() {
            if let Err(e) = self.send(&ToCleanup::Abort) {
                tracing::warn!("cleanup abort: {e}");
            }
        }
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

    fn open(&mut self, connect: &mut Connect<'_>) -> Result<(), HandOffError> {
        let channel = connect().map_err(HandOffError::Connect)?;
        // Non-blocking, so a cleanup that stops reading cannot hold this process forever.
        channel.set_nonblocking(true)?;
        self.channel = Some(channel);
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::Detail;
    use protocol::QueueId;
    use std::sync::mpsc;

    /// A stand-in cleanup: records each message it receives and answers every `End` with
    /// `answer` (or, given `None`, never answers and waits for the link to close its end).
    fn stand_in(channel: Channel, answer: Option<FromCleanup>, log: mpsc::Sender<ToCleanup>) {
        loop {
            let msg = match channel.recv::<ToCleanup>() {
                Ok(r) => r.msg,
                Err(_) => return,
            };
            let end = msg == ToCleanup::End;
            if log.send(msg).is_err() {
                return;
            }
            if end {
                if let Some(answer) = &answer {
                    if channel.send(answer, &[]).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// A connect that hands out a new stand-in each time it is called, counting the calls.
    struct Stand {
        answer: Option<FromCleanup>,
        log: mpsc::Sender<ToCleanup>,
        threads: Vec<std::thread::JoinHandle<()>>,
        theirs: Vec<Channel>,
        keep: bool,
    }

    impl Stand {
        fn connect(&mut self) -> Result<Channel, String> {
            let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
            if self.keep {
                // Kept unanswered: this cleanup never reads.
                self.theirs.push(theirs);
            } else {
                let (answer, log) = (self.answer.clone(), self.log.clone());
                self.threads
                    .push(std::thread::spawn(move || stand_in(theirs, answer, log)));
            }
            Ok(ours)
        }
    }

    fn id() -> QueueId {
        "06617F51E53C0A010C1401".parse().unwrap()
    }

    fn begin() -> ToCleanup {
        ToCleanup::Begin {
            sender: ReversePath::parse("<s@example.org>", false).unwrap(),
            flags: MailFlags::default(),
            client: ClientInfo {
                name: None,
                address: None,
                helo: None,
                protocol: Protocol::Local,
            },
            received: ReceivedHeader::new("Received: by h (Postern);\r\n\tdate").unwrap(),
        }
    }

    fn recipients(n: usize) -> Vec<Recipient> {
        (0..n)
            .map(|i| Recipient {
                path: ForwardPath::parse(&format!("<r{i}@example.org>"), false).unwrap(),
                notify: None,
                orcpt: None,
            })
            .collect()
    }

    fn stand(answer: Option<FromCleanup>) -> (Stand, mpsc::Receiver<ToCleanup>) {
        let (log, seen) = mpsc::channel();
        let stand = Stand {
            answer,
            log,
            threads: Vec::new(),
            theirs: Vec::new(),
            keep: false,
        };
        (stand, seen)
    }

    #[test]
    fn a_message_goes_over_as_begin_recipient_groups_content_chunks_and_end() {
        let (mut stand, seen) = stand(Some(FromCleanup::Queued { id: id() }));
        let mut link = CleanupLink::new(Duration::from_secs(5));
        let big = vec![b'x'; CHUNK_MAX + 10];
        let rcpts = recipients(RECIPIENTS_PER_MESSAGE + 1);
        let answer = link
            .hand_over(
                &mut || stand.connect(),
                begin(),
                &rcpts,
                &[b"head\r\n", &big],
            )
            .unwrap();
        assert_eq!(answer, FromCleanup::Queued { id: id() });
        drop(link);
        for t in stand.threads.drain(..) {
            t.join().unwrap();
        }
        drop(stand);
        let seen: Vec<ToCleanup> = seen.iter().collect();
        let sizes: Vec<String> = seen
            .iter()
            .map(|m| match m {
                ToCleanup::Recipients(list) => format!("R{}", list.as_slice().len()),
                ToCleanup::Content(bytes) => format!("C{}", bytes.as_bytes().len()),
                other => format!("{other:?}").chars().take(5).collect(),
            })
            .collect();
        assert!(matches!(seen[0], ToCleanup::Begin { .. }), "{seen:?}");
        assert_eq!(
            sizes[1..],
            [
                format!("R{RECIPIENTS_PER_MESSAGE}"),
                "R1".to_owned(),
                "C6".to_owned(),
                format!("C{CHUNK_MAX}"),
                "C10".to_owned(),
                "End".to_owned(),
            ]
        );
    }

    #[test]
    fn the_channel_is_kept_between_messages() {
        let (mut stand, seen) = stand(Some(FromCleanup::Queued { id: id() }));
        let mut calls = 0;
        let mut link = CleanupLink::new(Duration::from_secs(5));
        {
            let mut connect = || {
                calls += 1;
                stand.connect()
            };
            for _ in 0..2 {
                link.hand_over(&mut connect, begin(), &recipients(1), &[b"x\r\n"])
                    .unwrap();
            }
        }
        assert_eq!(calls, 1, "one channel carries both messages");
        assert!(link.is_open());
        drop(link);
        for t in stand.threads.drain(..) {
            t.join().unwrap();
        }
        drop(stand);
        assert_eq!(seen.iter().filter(|m| *m == ToCleanup::End).count(), 2);
    }

    #[test]
    fn a_reused_channel_found_closed_at_begin_is_replaced_without_error() {
        let (mut stand, _seen) = stand(Some(FromCleanup::Queued { id: id() }));
        let (first, theirs) = Channel::pair().unwrap();
        let mut given = Some(first);
        let mut fresh = 0;
        let mut connect = || match given.take() {
            Some(c) => Ok(c),
            None => {
                fresh += 1;
                stand.connect()
            }
        };
        let mut link = CleanupLink::new(Duration::from_secs(5));
        // A first message whose cleanup answers, then exits.
        let peer = std::thread::spawn(move || {
            // Begin, Recipients, Content, End.
            for _ in 0..4 {
                theirs.recv::<ToCleanup>().unwrap();
            }
            theirs.send(&FromCleanup::Queued { id: id() }, &[]).unwrap();
        });
        link.hand_over(&mut connect, begin(), &recipients(1), &[b"x\r\n"])
            .unwrap();
        peer.join().unwrap();
        assert!(link.is_open());
        let answer = link
            .hand_over(&mut connect, begin(), &recipients(1), &[b"x\r\n"])
            .unwrap();
        assert_eq!(answer, FromCleanup::Queued { id: id() });
        assert_eq!(fresh, 1, "the closed channel was replaced once");
        drop(link);
        for t in stand.threads.drain(..) {
            t.join().unwrap();
        }
    }

    #[test]
    fn cleanup_refusals_are_answers_and_silence_is_a_timeout_that_drops_the_channel() {
        let detail = Detail::try_from("disk full".to_owned()).unwrap();
        let refusal = FromCleanup::Failed {
            temporary: true,
            detail,
        };
        let (mut stand, _seen) = stand(Some(refusal.clone()));
        let mut link = CleanupLink::new(Duration::from_secs(5));
        let answer = link
            .hand_over(&mut || stand.connect(), begin(), &recipients(1), &[b"x"])
            .unwrap();
        assert_eq!(answer, refusal);
        assert!(link.is_open(), "a refusal is an answer, not a failure");
        drop(link);
        for t in stand.threads.drain(..) {
            t.join().unwrap();
        }

        let (mut silent, _seen) = self::stand(None);
        silent.keep = true;
        let mut link = CleanupLink::new(Duration::from_millis(100));
        let started = Instant::now();
        let err = link
            .hand_over(&mut || silent.connect(), begin(), &recipients(1), &[b"x"])
            .unwrap_err();
        assert!(matches!(err, HandOffError::Timeout(_)), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(!link.is_open());
    }

    #[test]
    fn no_channel_is_a_connect_error_and_abort_reaches_cleanup() {
        let mut link = CleanupLink::new(Duration::from_secs(5));
        let mut refused = || Err("service cleanup is not in master.cf".to_owned());
        let err = link
            .hand_over(&mut refused, begin(), &recipients(1), &[b"x"])
            .unwrap_err();
        assert!(err.to_string().contains("not in master.cf"), "{err}");
        assert!(!link.is_open());

        let (mut stand, seen) = stand(Some(FromCleanup::Queued { id: id() }));
        link.begin(&mut || stand.connect(), begin(), &recipients(2))
            .unwrap();
        link.abort();
        drop(link);
        for t in stand.threads.drain(..) {
            t.join().unwrap();
        }
        drop(stand);
        let last = seen.iter().last();
        assert_eq!(last, Some(ToCleanup::Abort));
    }
}
