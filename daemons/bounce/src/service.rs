//! One channel from the queue manager: each `ToBounce::Notify` with its queue file descriptor
//! becomes at most one report, handed to cleanup, and one answer.
//!
//! Trusts: nothing on the channel beyond `protocol`'s validation, and nothing in the queue file:
//! it is read through `protocol::queue` (framing, envelope, result log) and its checksum is
//! verified before any of it is returned to a sender. The descriptor is read-only, and the
//! daemon has no filesystem access of its own.
//!
//! Decisions:
//! - A file that cannot be read for an I/O error is a temporary failure; a damaged file (bad
//!   framing, checksum, envelope) is a permanent one: retrying cannot repair it.
//! - cleanup's `Failed` answer is passed on with its `temporary` flag (a report over cleanup's
//!   `message_size_limit` will not fit later either); a broken channel to cleanup or no
//!   answer is temporary.
//! - A request that decodes badly, or carries no descriptor, ends the channel: the queue
//!   manager is broken, and closing tells it so.
//! - The descriptor's file offset is shared with the queue manager's open file: this side
//!   seeks it freely, so the queue manager must not rely on it (it reads by position or opens
//!   a descriptor per request).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::time::SystemTime;

use daemon::cleanup_client::{CleanupLink, Connect};
use protocol::control::{Detail, MAX_DETAIL_LEN};
use protocol::delivery::{FromBounce, ToBounce};
use protocol::queue::{self, QueueFile, QueueFileError, QueueLimits};
use protocol::{Channel, ChannelError, FromCleanup};

use crate::config::Config;
use crate::inject::{inject, CLEANUP_TIMEOUT};
use crate::report::{self, Notice, Return, MAX_RETURNED_HEADERS};

/// Why a channel was closed before its sender closed it.
#[derive(Debug, thiserror::Error)]
pub enum ChannelEnd {
    #[error("channel from {peer}: {source}")]
    Channel {
        peer: String,
        #[source]
        source: ChannelError,
    },
    #[error("channel from {peer}: a Notify without its queue file descriptor")]
    NoDescriptor { peer: String },
}

/// The bounce daemon's state across channels: its settings and its channel to cleanup.
pub struct Bounce {
    config: Config,
    link: CleanupLink,
    /// Counts reports, for unique MIME boundaries.
    reports: u64,
}

impl Bounce {
    pub fn new(config: Config) -> Bounce {
        Bounce::with_timeout(config, CLEANUP_TIMEOUT)
    }

    pub fn with_timeout(config: Config, timeout: std::time::Duration) -> Bounce {
        Bounce {
            config,
            link: CleanupLink::new(timeout),
            reports: 0,
        }
    }

    /// Serves `channel` until the queue manager closes it (`Ok`) or breaks the protocol.
    pub fn serve(
        &mut self,
        channel: &Channel,
        peer: &str,
        connect: &mut Connect<'_>,
    ) -> Result<(), ChannelEnd> {
        let end = |source| ChannelEnd::Channel {
            peer: peer.to_owned(),
            source,
        };
        loop {
            let received = match channel.recv::<ToBounce>() {
                Ok(r) => r,
                Err(ChannelError::PeerClosed) => return Ok(()),
                Err(e) => {
                    tracing::warn!(channel = peer, "{e}");
                    return Err(end(e));
                }
            };
            let Some(fd) = received.fds.into_iter().next() else {
                return Err(ChannelEnd::NoDescriptor {
                    peer: peer.to_owned(),
                });
            };
            let answer = self.handle(received.msg, fd, connect);
            channel.send(&answer, &[]).map_err(end)?;
        }
    }

    /// One notice: read, select, compose, inject.
    pub fn handle(
        &mut self,
        request: ToBounce,
        fd: OwnedFd,
        connect: &mut Connect<'_>,
    ) -> FromBounce {
        let ToBounce::Notify {
            queue_id,
            kind,
            recipients,
        } = request;
        let mut file = File::from(fd);
        let qf = match read_checked(&mut file) {
            Ok(qf) => qf,
            Err(e) => {
                let temporary = matches!(e, QueueFileError::Io { .. });
                tracing::warn!(%queue_id, "cannot report on the queue file: {e}");
                return failed(temporary, &format!("queue file {queue_id}: {e}"));
            }
        };
        let (entries, skipped) = report::select(kind, &qf, recipients.as_slice());
        for s in &skipped {
            tracing::warn!(%queue_id, ?kind, "not reported: {s}");
        }
        if entries.is_empty() {
            tracing::info!(%queue_id, ?kind, "no recipient wants this notice");
            return FromBounce::Sent { id: None };
        }
        let envelope = qf.envelope();
        let Some(to) = report::addressees(&self.config, kind, envelope, &entries) else {
            tracing::info!(
                %queue_id,
                ?kind,
                sender = %envelope.sender,
                "notice not sent: its sender is <> and nobody else may receive it"
            );
            return FromBounce::Sent { id: None };
        };
        let returned = report::what_to_return(
            kind,
            &envelope.flags,
            qf.content_len(),
            self.config.bounce_size_limit,
        );
        let original = match read_original(&qf, &mut file, returned) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(%queue_id, "cannot read the message content: {e}");
                return failed(
                    e.kind() != std::io::ErrorKind::InvalidData,
                    &format!("queue file {queue_id}: content: {e}"),
                );
            }
        };
        let notice = Notice {
            kind,
            queue_id,
            envelope,
            entries,
            recipients: to,
        };
        self.reports = self.reports.wrapping_add(1);
        let composed = match report::compose(
            &self.config,
            &notice,
            returned,
            &original,
            SystemTime::now(),
            self.reports,
        ) {
            Ok(r) => r,
            Err(e) => return failed(false, &format!("report for {queue_id}: {e}")),
        };
        match inject(&mut self.link, connect, &composed) {
            Ok(FromCleanup::Queued { id }) => {
                tracing::info!(
                    %queue_id,
                    ?kind,
                    notice = %id,
                    recipients = notice.entries.len(),
                    "sender notification queued"
                );
                FromBounce::Sent { id: Some(id) }
            }
            Ok(FromCleanup::Failed { temporary, detail }) => {
                tracing::warn!(%queue_id, temporary, "cleanup refused the notice: {detail}");
                FromBounce::Failed { temporary, detail }
            }
            Err(e) => {
                tracing::warn!(%queue_id, "cannot hand the notice to cleanup: {e}");
                failed(true, &format!("notice for {queue_id}: {e}"))
            }
        }
    }
}

/// Reads the queue file and verifies its checksum.
fn read_checked(file: &mut File) -> Result<QueueFile, QueueFileError> {
    let qf = QueueFile::read(&mut *file, QueueLimits::default())?;
    file.seek(SeekFrom::Start(0))
        .map_err(|source| QueueFileError::Io {
            what: "header",
            source,
        })?;
    queue::verify(std::io::BufReader::new(&mut *file))?;
    Ok(qf)
}

/// The whole content, or its header section (at most [`MAX_RETURNED_HEADERS`] octets, cut at
/// a line end).
fn read_original(qf: &QueueFile, file: &mut File, returned: Return) -> std::io::Result<Vec<u8>> {
    let reader = qf.content(&mut *file).map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    match returned {
        Return::Message => {
            reader.take(qf.content_len()).read_to_end(&mut out)?;
            Ok(out)
        }
        Return::Headers => {
            let mut reader = reader.take(MAX_RETURNED_HEADERS as u64);
            let mut buf = [0u8; 8192];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                // Look for the end of the header section across the edge of two reads.
                let from = out.len().saturating_sub(3);
                out.extend_from_slice(&buf[..n]);
                if out[from..].windows(4).any(|w| w == b"\r\n\r\n") || out.starts_with(b"\r\n") {
                    break;
                }
            }
            out.truncate(report::header_section(&out).len());
            // A section cut at the size bound ends at its last complete line.
            if !out.ends_with(b"\r\n") {
                let keep = out
                    .windows(2)
                    .rposition(|w| w == b"\r\n")
                    .map_or(0, |at| at + 2);
                out.truncate(keep);
            }
            Ok(out)
        }
    }
}

/// A `Failed` answer whose detail is `text`, made safe for a log line.
fn failed(temporary: bool, text: &str) -> FromBounce {
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
    let detail = Detail::try_from(clean)
        .or_else(|_| Detail::try_from("bounce failure"))
        .unwrap_or_else(|_| unreachable!("a constant detail is valid"));
    FromBounce::Failed { temporary, detail }
}

#[cfg(test)]
mod tests;
