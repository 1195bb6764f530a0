//! Forwarding: addresses outside `mydestination` that an alias, an include list or a
//! `.forward` names are re-submitted through cleanup as a new message, with the original
//! sender (or the list's `owner-NAME`), as Postfix's local agent does. The queue manager
//! then routes the new message like any other; this agent never talks SMTP.
//!
//! Trusts: nothing cleanup sends (decoded by `protocol`). The hand-over is the runtime's
//! [`CleanupLink`]: the channel is kept for the life of the process (opened at the first
//! forward, reopened after a failure, replaced at once when found closed before a message
//! starts); a broken channel, or no progress within [`CLEANUP_TIMEOUT`], is a temporary
//! failure and the channel is dropped, so cleanup discards the partial message.
//!
//! The message text is carried by a child, not by the agent's privileged parent: the parent
//! opens the channel and sends what it composed itself (`Begin`, the recipients, the
//! `Delivered-To:` line), then forks a child that takes the identity of `nobody` (Postfix's
//! `default_privs`), reads the message from the queue file descriptor and sends it on as
//! `Content`, then `End`, and reports cleanup's answer as a typed result. A child that fails
//! (or is killed at its deadline) leaves the channel in an unknown state, so the parent drops
//! it and cleanup discards the partial message.
//!
//! Decisions:
//! - The new message is the original text with `Delivered-To: RECIPIENT` prepended (the
//!   address being forwarded), which is what detects a loop when the copy comes back, and
//!   a `Received: by HOST (Postern) with local forward` field cleanup puts first.
//!   No `Return-Path:` (that belongs to final delivery).
//! - The envelope keeps the message's flags (SMTPUTF8, BODY, RET, ENVID); the forwarded
//!   recipients get no NOTIFY/ORCPT of their own, as in Postfix.
//! - Cleanup's `Queued` is the forwarded addresses' success; `Failed{temporary}` or a
//!   channel failure defers the recipient (4.3.0), a permanent failure bounces it (5.3.4).

use std::os::fd::AsRawFd;
use std::time::Duration;

use daemon::cleanup_client::{local_begin, plain_recipients, CleanupLink, Connect};
use mailbox::Content;
use protocol::cleanup::ReceivedHeader;
use protocol::local::FromDeliveryChild;
use protocol::queue::MailFlags;
use protocol::{ForwardPath, FromCleanup, ReversePath};
use sandbox::Identity;

use crate::deliver::{in_child, result, Report};

pub use daemon::cleanup_client::CLEANUP_TIMEOUT;

/// One message to send on.
pub struct Forward<'a> {
    pub sender: &'a ReversePath,
    pub flags: &'a MailFlags,
    pub recipients: &'a [ForwardPath],
    /// The address whose expansion this is, for `Delivered-To:`.
    pub delivered_to: &'a str,
    pub content: &'a Content<'a>,
    pub hostname: &'a str,
    /// Who the child that carries the text runs as.
    pub carrier: &'a Identity,
}

/// Hands `fwd` to cleanup on `link` and says what became of it.
pub fn send(link: &mut CleanupLink, connect: &mut Connect<'_>, fwd: &Forward<'_>) -> Report {
    let to: Vec<String> = fwd.recipients.iter().map(ToString::to_string).collect();
    let to = to.join(", ");
    let date = daemon::date::rfc5322(std::time::SystemTime::now());
    let received = match ReceivedHeader::new(&format!(
        "Received: by {} (Postern) with local forward;\r\n\t{date}",
        fwd.hostname
    )) {
        Ok(received) => received,
        Err(e) => {
            return Report::new(
                "4.3.0",
                format!("forwarding to {to}: Received: header: {e}"),
            )
        }
    };
    let begin = local_begin(fwd.sender.clone(), fwd.flags.clone(), received);
    let recipients = plain_recipients(fwd.recipients);
    let head = format!("Delivered-To: {}\r\n", fwd.delivered_to);
    if let Err(e) = link
        .begin(connect, begin, &recipients)
        .and_then(|()| link.content(head.as_bytes()))
    {
        return Report::new("4.3.0", format!("forwarding to {to}: {e}"));
    }
    let Some(channel) = link.raw_fd() else {
        return Report::new("4.3.0", format!("forwarding to {to}: no cleanup channel"));
    };
    let keep = [channel, fwd.content.file().as_raw_fd()];
    let deadline = CLEANUP_TIMEOUT * 2 + Duration::from_secs(10);
    let report = in_child(&keep, deadline, || carry(link, fwd, &to));
    if !report.status.starts_with('2') {
        // The child's part of the conversation may have stopped anywhere.
        link.reset();
    }
    report
}

/// In the child: become the carrier, send the text, end the message, report the answer.
fn carry(link: &mut CleanupLink, fwd: &Forward<'_>, to: &str) -> FromDeliveryChild {
    if let Err(e) = sandbox::confine_delivery("local", fwd.carrier, &[]) {
        return result("4.3.0", &format!("forwarding to {to}: cannot confine: {e}"));
    }
    let sent = fwd
        .content
        .chunks(u64::MAX, |chunk| {
            link.content(chunk)
                .map(|()| true)
                .map_err(std::io::Error::other)
        })
        .map_err(|e| e.to_string())
        .and_then(|()| link.end().map_err(|e| e.to_string()));
    match sent {
        Ok(FromCleanup::Queued { id }) => result("2.0.0", &format!("forwarded to {to} as {id}")),
        Ok(FromCleanup::Failed {
            temporary: true,
            detail,
        }) => result("4.3.0", &format!("forwarding to {to}: cleanup: {detail}")),
        Ok(FromCleanup::Failed {
            temporary: false,
            detail,
        }) => result("5.3.4", &format!("forwarding to {to}: cleanup: {detail}")),
        Err(e) => result("4.3.0", &format!("forwarding to {to}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No channel to cleanup: the recipient is deferred before anything is forked. (Forwarding
    /// itself, through a child, is tested against a running instance: `tests/local_mailboxes.rs`,
    /// `an_alias_and_a_forward_file_send_copies_on_through_cleanup`.)
    #[test]
    fn a_missing_cleanup_defers() {
        let sender = ReversePath::Null;
        let flags = MailFlags::default();
        let to = [ForwardPath::parse("<a@elsewhere.example>", true).unwrap()];
        let file = tempfile_with(b"x\r\n");
        let content = Content::new(&file, 0, 3);
        let nobody = Identity {
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
        };
        let fwd = Forward {
            sender: &sender,
            flags: &flags,
            recipients: &to,
            delivered_to: "u@localhost",
            content: &content,
            hostname: "h",
            carrier: &nobody,
        };
        let mut refused = || Err("service cleanup is not in master.cf".to_owned());
        let mut link = CleanupLink::new(Duration::from_secs(5));
        let report = send(&mut link, &mut refused, &fwd);
        assert_eq!(report.status, "4.3.0", "{report:?}");
        assert!(report.text.contains("not in master.cf"), "{report:?}");
        assert!(!link.is_open());
    }

    /// A file holding `text` framed as a queue file frames content.
    fn tempfile_with(text: &[u8]) -> std::fs::File {
        use std::io::Write as _;
        let path = std::env::temp_dir().join(format!("local-forward-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&(text.len() as u32).to_be_bytes()).unwrap();
        f.write_all(text).unwrap();
        f.write_all(&0u32.to_be_bytes()).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
