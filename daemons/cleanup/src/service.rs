//! One channel from smtpd (or pickup, or bounce): the message state machine of the incoming
//! queue, and the queue file each message becomes.
//!
//! Trusts: the decoded messages' values (`protocol` validated each on its own) but not their
//! order, which is enforced here; not the content, which is copied, with the header section
//! scanned by `protocol::header`. The queue directory and the kernel are trusted.
//!
//! Per message: `Begin`, one or more `Recipients`, zero or more `Content`, then `End` (answered
//! `Queued{id}` once durable, or `Failed`), or `Abort` at any point (no answer). The queue file
//! is created when the recipients are complete (at the first `Content`, or at `End`), because
//! the envelope, recipients included, comes first in the file. Anything else in a state is a
//! protocol error: the message is discarded, the error logged with the channel and the message
//! kind, and the channel closed.
//!
//! Decisions:
//! - `Abort` with no message in progress is accepted and does nothing: discarding nothing is
//!   harmless, and a sender that loses track of whether its `Begin` went out stays served.
//! - A failure while writing (disk full, I/O error) or a message over `message_size_limit`
//!   removes the file at once; the rest of the message's `Content` is read and dropped, and the
//!   answer to its `End` is `Failed` (temporary for I/O, permanent for the size).
//! - `message_size_limit` counts the content octets the sender handed over (the Received:
//!   header and added fields are not the client's), as smtpd counts them; 0 means no limit.
//! - The arrival time is when `Begin` arrived; the added `Date:` shows it.
//! - A spare queue file (see [`crate::spool`]) is kept ready so that the directory fsync is
//!   off a message's critical path: made at start-up (after the sweep, [`Cleanup::prepare_spare`]),
//!   again after each message has been answered (`Queued` or `Failed`) or aborted, while the
//!   sender and its client move on to the next transaction (never between `End` and its
//!   answer), and when a channel ends without one. A message is written into the spare
//!   (its queue id is the spare's) and committed with the file's fsync alone. Without a spare
//!   (its creation failed; logged) the message's file is created as before and committed with
//!   both fsyncs. The unused spare is removed when the `Cleanup` is dropped (the serve loop
//!   ended: channel closed and process exiting, `max_use`, `max_idle`, stop, or a fatal error);
//!   a killed cleanup's spare is an incomplete file whose lock died with it, for the next sweep.
//! - Recipients beyond the queue file's bound ([`MAX_RECIPIENTS`]) are a protocol error:
//!   smtpd enforces a far lower `smtpd_recipient_limit`.

use std::time::SystemTime;

use protocol::bounded::BoundedVec;
use protocol::channel::ChannelError;
use protocol::cleanup::{FromCleanup, ReceivedHeader, ToCleanup};
use protocol::control::{Detail, MAX_DETAIL_LEN};
use protocol::queue::{
    ClientInfo, Envelope, MailFlags, QueueFileWriter, Recipient, Timestamp, ENVELOPE_VERSION,
    MAX_RECIPIENTS,
};
use protocol::{Channel, Message, QueueId, ReversePath};

use crate::spool::{NewFile, Spool, SpoolError};
use protocol::header::{Additions, HeaderScanner};

/// Queue ids tried for one message before giving up: a collision needs two writers with the
/// same pid and counter in one microsecond, so a second try succeeds unless something is wrong.
const CREATE_ATTEMPTS: u32 = 8;

/// What cleanup takes from `main.cf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub myhostname: String,
    /// 0: no limit.
    pub message_size_limit: u64,
    pub header_size_limit: usize,
}

impl Config {
    pub fn from_settings(settings: &conf::MainCf) -> Result<Config, conf::ConfError> {
        Ok(Config {
            myhostname: settings.get("myhostname")?.trim().to_owned(),
            message_size_limit: settings.get_size("message_size_limit")?,
            header_size_limit: usize::try_from(settings.get_int("header_size_limit")?)
                .unwrap_or(usize::MAX),
        })
    }
}

/// Why a channel stopped being served before its sender closed it.
#[derive(Debug, thiserror::Error)]
pub enum ChannelEnd {
    #[error(
        "protocol error on the channel from {peer}: {what}; message discarded, channel closed"
    )]
    Protocol { peer: String, what: String },
    #[error("channel from {peer}: {source}")]
    Channel {
        peer: String,
        #[source]
        source: ChannelError,
    },
}

/// Why a message failed, as its `End` will be answered.
#[derive(Debug, Clone)]
struct Failure {
    temporary: bool,
    detail: String,
}

struct Draft {
    arrival: SystemTime,
    sender: ReversePath,
    flags: MailFlags,
    client: ClientInfo,
    received: ReceivedHeader,
    recipients: BoundedVec<Recipient, MAX_RECIPIENTS>,
}

struct Writing {
    /// The file, locked; the writer holds a clone.
    file: NewFile,
    writer: QueueFileWriter<NewFile>,
    headers: HeaderScanner,
    sender: ReversePath,
    nrcpt: usize,
    /// Content octets the sender handed over.
    received: u64,
}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    Envelope(Box<Draft>),
    Writing(Box<Writing>),
    /// The message failed; its remaining content is dropped until `End` or `Abort`.
    Failed(Failure),
}

/// The cleanup service: its settings, the spool, the queue id counter and the spare file.
pub struct Cleanup {
    config: Config,
    spool: Spool,
    counter: u32,
    /// The next message's file, its name already durable; `None` until made, after a message
    /// took it, or when making it failed.
    spare: Option<NewFile>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            tracing::debug!(queue_id = %spare.id(), "removing the unused spare queue file");
            self.spool.discard(spare);
        }
    }
}

impl Cleanup {
    /// A cleanup without a spare: [`Cleanup::prepare_spare`] makes one.
    pub fn new(config: Config, spool: Spool) -> Cleanup {
        Cleanup {
            config,
            spool,
            counter: 0,
            spare: None,
        }
    }

    /// Makes a spare queue file unless one is ready. A failure is logged and leaves none: the
    /// next message then creates its file itself, and the next call tries again.
    pub fn prepare_spare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        match self.create_file(|spool, id| spool.create_spare(id)) {
            Ok(file) => self.spare = Some(file),
            // The cause is logged as the failure is made.
            Err(e) => tracing::info!(
                "no spare queue file ({}); the next message creates its own",
                e.detail
            ),
        }
    }

    /// The queue id of the spare, if one is ready.
    #[cfg(test)]
    pub fn spare_id(&self) -> Option<QueueId> {
        self.spare.as_ref().map(NewFile::id)
    }

    /// Serves `channel` until its sender closes it (`Ok`) or breaks the protocol. `peer` names
    /// the channel's sender in log lines; `wake` is called after each message is queued.
    pub fn serve(
        &mut self,
        channel: &Channel,
        peer: &str,
        wake: &mut dyn FnMut(),
    ) -> Result<(), ChannelEnd> {
        let ended = self.serve_messages(channel, peer, wake);
        // A message cut off by the channel's end may have taken the spare.
        self.prepare_spare();
        ended
    }

    fn serve_messages(
        &mut self,
        channel: &Channel,
        peer: &str,
        wake: &mut dyn FnMut(),
    ) -> Result<(), ChannelEnd> {
        let mut state = State::Idle;
        loop {
            let msg = match channel.recv::<ToCleanup>() {
                Ok(received) => received.msg,
                Err(ChannelError::PeerClosed) => {
                    if self.abandon(std::mem::take(&mut state)) {
                        tracing::warn!(
                            channel = peer,
                            "channel closed in the middle of a message; message discarded"
                        );
                    }
                    return Ok(());
                }
                Err(ChannelError::Decode(e)) => {
                    self.abandon(state);
                    return Err(self.protocol_error(peer, format!("undecodable message: {e}")));
                }
                Err(source) => {
                    self.abandon(state);
                    return Err(ChannelEnd::Channel {
                        peer: peer.to_owned(),
                        source,
                    });
                }
            };
            let kind = msg.kind();
            state = match self.step(state, msg) {
                Ok((next, answer)) => {
                    if let Some(answer) = answer {
                        let queued = matches!(answer, FromCleanup::Queued { .. });
                        if let Err(source) = channel.send(&answer, &[]) {
                            return Err(ChannelEnd::Channel {
                                peer: peer.to_owned(),
                                source,
                            });
                        }
                        if queued {
                            wake();
                        }
                    }
                    // Off the critical path: the answer (if any) is out, and a message that
                    // took the spare has ended (answered or aborted).
                    if matches!(next, State::Idle) {
                        self.prepare_spare();
                    }
                    next
                }
                Err(state) => {
                    self.abandon(state);
                    return Err(self.protocol_error(peer, format!("unexpected {kind}")));
                }
            };
        }
    }

    fn protocol_error(&self, peer: &str, what: String) -> ChannelEnd {
        let end = ChannelEnd::Protocol {
            peer: peer.to_owned(),
            what,
        };
        tracing::warn!(channel = peer, "{end}");
        end
    }

    /// Discards the message in progress; returns whether there was one.
    fn abandon(&self, state: State) -> bool {
        match state {
            State::Idle => false,
            State::Envelope(_) | State::Failed(_) => true,
            State::Writing(w) => {
                self.spool.discard(w.file);
                true
            }
        }
    }

    /// One message in one state: the next state and the answer to send, or the state back if
    /// the message is not allowed in it.
    #[allow(clippy::result_large_err)]
    fn step(
        &mut self,
        state: State,
        msg: ToCleanup,
    ) -> Result<(State, Option<FromCleanup>), State> {
        let next = match (state, msg) {
            (
                State::Idle,
                ToCleanup::Begin {
                    sender,
                    flags,
                    client,
                    received,
                },
            ) => State::Envelope(Box::new(Draft {
                arrival: SystemTime::now(),
                sender,
                flags,
                client,
                received,
                recipients: BoundedVec::new(),
            })),
            (State::Idle, ToCleanup::Abort) => State::Idle,
            (State::Envelope(mut draft), ToCleanup::Recipients(list)) => {
                for recipient in list.into_vec() {
                    if draft.recipients.push(recipient).is_err() {
                        return Err(State::Envelope(draft));
                    }
                }
                State::Envelope(draft)
            }
            (State::Envelope(draft), ToCleanup::Content(_) | ToCleanup::End)
                if draft.recipients.is_empty() =>
            {
                return Err(State::Envelope(draft));
            }
            (State::Envelope(draft), ToCleanup::Content(data)) => {
                let state = self.open(*draft);
                self.content(state, data.as_bytes())
            }
            (State::Envelope(draft), ToCleanup::End) => {
                let state = self.open(*draft);
                return Ok(self.end(state));
            }
            (State::Writing(w), ToCleanup::Content(data)) => {
                self.content(State::Writing(w), data.as_bytes())
            }
            (state @ State::Writing(_), ToCleanup::End) => return Ok(self.end(state)),
            (State::Failed(f), ToCleanup::Content(_)) => State::Failed(f),
            (state @ State::Failed(_), ToCleanup::End) => return Ok(self.end(state)),
            (
                state @ (State::Envelope(_) | State::Writing(_) | State::Failed(_)),
                ToCleanup::Abort,
            ) => {
                self.abandon(state);
                State::Idle
            }
            (state, _) => return Err(state),
        };
        Ok((next, None))
    }

    fn next_id(&mut self) -> Result<QueueId, Failure> {
        self.counter = self.counter.wrapping_add(1);
        let seq = (std::process::id() << 10) | (self.counter & 0x3ff);
        QueueId::new(SystemTime::now(), seq).map_err(|e| Failure {
            temporary: true,
            detail: format!("cannot make a queue id: {e}"),
        })
    }

    /// Creates a queue file with `create` under a new queue id, trying another id after a
    /// collision or a sweep that took the file before it was locked.
    fn create_file(
        &mut self,
        create: impl Fn(&Spool, QueueId) -> Result<NewFile, SpoolError>,
    ) -> Result<NewFile, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let id = self.next_id()?;
            match create(&self.spool, id) {
                Ok(file) => return Ok(file),
                Err(e) if e.retry_with_new_id() && attempt < CREATE_ATTEMPTS => {
                    tracing::debug!("{e}; trying another queue id");
                }
                Err(e) => return Err(io_failure(&e)),
            }
        }
    }

    /// Creates the queue file and writes the envelope and the Received: header.
    fn open(&mut self, draft: Draft) -> State {
        match self.try_open(draft) {
            Ok(w) => State::Writing(Box::new(w)),
            Err(f) => State::Failed(f),
        }
    }

    fn try_open(&mut self, draft: Draft) -> Result<Writing, Failure> {
        let file = match self.spare.take() {
            Some(file) => file,
            None => self.create_file(Spool::create)?,
        };
        let id = file.id();
        let nrcpt = draft.recipients.len();
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            arrival: Timestamp::from_system_time(draft.arrival),
            sender: draft.sender.clone(),
            flags: draft.flags,
            client: draft.client,
            recipients: draft.recipients,
        };
        let additions = Additions {
            message_id: format!("Message-ID: <{id}@{}>\r\n", self.config.myhostname),
            date: format!("Date: {}\r\n", daemon::date::rfc5322(draft.arrival)),
        };
        let mut writer = match QueueFileWriter::begin(file.clone(), &envelope) {
            Ok(writer) => writer,
            Err(e) => {
                self.spool.discard(file);
                return Err(io_failure(&e));
            }
        };
        let received = draft.received.as_str();
        let written = writer
            .write_content(received.as_bytes())
            .and_then(|()| writer.write_content(b"\r\n"));
        if let Err(e) = written {
            self.spool.discard(file);
            return Err(io_failure(&e));
        }
        Ok(Writing {
            file,
            writer,
            headers: HeaderScanner::new(self.config.header_size_limit, additions),
            sender: draft.sender,
            nrcpt,
            received: 0,
        })
    }

    fn content(&mut self, state: State, data: &[u8]) -> State {
        let State::Writing(mut w) = state else {
            return state;
        };
        w.received = w.received.saturating_add(data.len() as u64);
        let limit = self.config.message_size_limit;
        if limit > 0 && w.received > limit {
            let id = w.file.id();
            tracing::info!(
                queue_id = %id,
                "message discarded: content exceeds message_size_limit ({limit} octets)"
            );
            self.spool.discard(w.file);
            return State::Failed(Failure {
                temporary: false,
                detail: format!("message content exceeds message_size_limit ({limit} octets)"),
            });
        }
        let Writing {
            writer, headers, ..
        } = &mut *w;
        match headers.feed(data, &mut |bytes| writer.write_content(bytes)) {
            Ok(()) => State::Writing(w),
            Err(e) => {
                let failure = io_failure(&e);
                self.spool.discard(w.file);
                State::Failed(failure)
            }
        }
    }

    /// Finishes the message; the state after it is always `Idle`.
    fn end(&mut self, state: State) -> (State, Option<FromCleanup>) {
        let answer = match state {
            State::Writing(w) => match self.commit(*w) {
                Ok(id) => FromCleanup::Queued { id },
                Err(f) => failed(f),
            },
            State::Failed(f) => failed(f),
            // Not reached: `step` sends End only from these two states (or from a draft it
            // opened, which is one of them).
            State::Idle | State::Envelope(_) => failed(Failure {
                temporary: true,
                detail: "internal error: End without a queue file".to_owned(),
            }),
        };
        (State::Idle, Some(answer))
    }

    fn commit(&mut self, w: Writing) -> Result<QueueId, Failure> {
        let Writing {
            file,
            mut writer,
            mut headers,
            sender,
            nrcpt,
            ..
        } = w;
        if let Err(e) = headers.finish(&mut |bytes| writer.write_content(bytes)) {
            self.spool.discard(file);
            return Err(io_failure(&e));
        }
        let size = writer.content_len();
        if let Err(e) = writer.finish() {
            self.spool.discard(file);
            return Err(io_failure(&e));
        }
        match self.spool.commit(file.clone()) {
            Ok(id) => {
                tracing::info!(queue_id = %id, from = %sender, nrcpt, size, "queued");
                Ok(id)
            }
            Err(e) => {
                self.spool.discard(file);
                Err(io_failure(&e))
            }
        }
    }
}

fn failed(f: Failure) -> FromCleanup {
    FromCleanup::Failed {
        temporary: f.temporary,
        detail: detail(&f.detail),
    }
}

/// A temporary failure whose detail names the error (and, through it, the system call's).
fn io_failure(e: &dyn std::error::Error) -> Failure {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    tracing::warn!("queue file write error: {text}");
    Failure {
        temporary: true,
        detail: format!("queue file write error: {text}"),
    }
}

/// `text` as a `Detail`: control characters replaced, cut to the bound at a character edge.
fn detail(text: &str) -> Detail {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > MAX_DETAIL_LEN {
        let mut cut = MAX_DETAIL_LEN;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    Detail::try_from(clean)
        .or_else(|_| Detail::try_from("queue file write error"))
        .unwrap_or_else(|_| unreachable!("a constant detail is valid"))
}

#[cfg(test)]
mod tests;
