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
//! Decisions:
//! - The new message is the original text with `Delivered-To: RECIPIENT` prepended (the
//!   address being forwarded), which is what detects a loop when the copy comes back, and
//!   a `Received: by HOST (Postern) with local forward` field cleanup puts first.
//!   No `Return-Path:` (that belongs to final delivery).
//! - The envelope keeps the message's flags (SMTPUTF8, BODY, RET, ENVID); the forwarded
//!   recipients get no NOTIFY/ORCPT of their own, as in Postfix.
//! - Cleanup's `Queued` is the forwarded addresses' success; `Failed{temporary}` or a
//!   channel failure defers the recipient (4.3.0), a permanent failure bounces it (5.3.4).

use daemon::cleanup_client::{local_begin, plain_recipients, CleanupLink, Connect, HandOffError};
use protocol::cleanup::ReceivedHeader;
use protocol::queue::MailFlags;
use protocol::{ForwardPath, FromCleanup, ReversePath};

use crate::deliver::Report;

pub use daemon::cleanup_client::CLEANUP_TIMEOUT;

/// One message to send on.
pub struct Forward<'a> {
    pub sender: &'a ReversePath,
    pub flags: &'a MailFlags,
    pub recipients: &'a [ForwardPath],
    /// The address whose expansion this is, for `Delivered-To:`.
    pub delivered_to: &'a str,
    pub content: &'a [u8],
    pub hostname: &'a str,
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
    match submit(link, connect, fwd, received) {
        Ok(FromCleanup::Queued { id }) => {
            Report::new("2.0.0", format!("forwarded to {to} as {id}"))
        }
        Ok(FromCleanup::Failed {
            temporary: true,
            detail,
        }) => Report::new("4.3.0", format!("forwarding to {to}: cleanup: {detail}")),
        Ok(FromCleanup::Failed {
            temporary: false,
            detail,
        }) => Report::new("5.3.4", format!("forwarding to {to}: cleanup: {detail}")),
        Err(e) => Report::new("4.3.0", format!("forwarding to {to}: {e}")),
    }
}

fn submit(
    link: &mut CleanupLink,
    connect: &mut Connect<'_>,
    fwd: &Forward<'_>,
    received: ReceivedHeader,
) -> Result<FromCleanup, HandOffError> {
    let begin = local_begin(fwd.sender.clone(), fwd.flags.clone(), received);
    let recipients = plain_recipients(fwd.recipients);
    let head = format!("Delivered-To: {}\r\n", fwd.delivered_to);
    link.hand_over(connect, begin, &recipients, &[head.as_bytes(), fwd.content])
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Channel, ToCleanup};
    use std::time::Duration;

    fn fake_cleanup(channel: Channel, answer: FromCleanup) -> Vec<ToCleanup> {
        let mut seen = Vec::new();
        loop {
            let msg = match channel.recv::<ToCleanup>() {
                Ok(r) => r.msg,
                Err(_) => return seen,
            };
            let end = msg == ToCleanup::End;
            seen.push(msg);
            if end {
                channel.send(&answer, &[]).unwrap();
            }
        }
    }

    fn path(s: &str) -> ForwardPath {
        ForwardPath::parse(s, true).unwrap()
    }

    #[test]
    fn a_forward_is_one_message_with_the_original_sender_and_delivered_to() {
        let (ours, theirs) = Channel::pair().unwrap();
        let id: protocol::QueueId = "06617F51E53C0A010C1401".parse().unwrap();
        let server = std::thread::spawn(move || fake_cleanup(theirs, FromCleanup::Queued { id }));
        let mut given = Some(ours);
        let mut connect = || given.take().ok_or_else(|| "second connect".to_owned());
        let sender = ReversePath::parse("<s@example.org>", true).unwrap();
        let flags = MailFlags {
            smtputf8: true,
            ..MailFlags::default()
        };
        let to = [path("<a@elsewhere.example>"), path("<b@elsewhere.example>")];
        let mut link = CleanupLink::new(Duration::from_secs(5));
        let report = send(
            &mut link,
            &mut connect,
            &Forward {
                sender: &sender,
                flags: &flags,
                recipients: &to,
                delivered_to: "list@localhost",
                content: b"Subject: x\r\n\r\nbody\r\n",
                hostname: "mx.example.test",
            },
        );
        assert_eq!(report.status, "2.0.0", "{report:?}");
        assert!(report.text.contains(&id.to_string()), "{report:?}");
        drop(link);
        let seen = server.join().unwrap();
        let ToCleanup::Begin {
            sender: s,
            flags: f,
            received,
            ..
        } = &seen[0]
        else {
            panic!("{seen:?}");
        };
        assert_eq!(s, &sender);
        assert!(f.smtputf8);
        assert!(received.as_str().contains("with local forward"));
        let ToCleanup::Recipients(list) = &seen[1] else {
            panic!("{seen:?}");
        };
        assert_eq!(list.as_slice().len(), 2);
        let text: Vec<u8> = seen
            .iter()
            .filter_map(|m| match m {
                ToCleanup::Content(b) => Some(b.as_bytes().to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            text,
            b"Delivered-To: list@localhost\r\nSubject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(seen.last(), Some(&ToCleanup::End));
    }

    #[test]
    fn cleanup_failures_and_a_missing_cleanup_become_deferrals_or_bounces() {
        let sender = ReversePath::Null;
        let flags = MailFlags::default();
        let to = [path("<a@elsewhere.example>")];
        let fwd = Forward {
            sender: &sender,
            flags: &flags,
            recipients: &to,
            delivered_to: "u@localhost",
            content: b"x\r\n",
            hostname: "h",
        };
        for (temporary, status) in [(true, "4.3.0"), (false, "5.3.4")] {
            let (ours, theirs) = Channel::pair().unwrap();
            let detail = protocol::control::Detail::try_from("no".to_owned()).unwrap();
            let server = std::thread::spawn(move || {
                fake_cleanup(theirs, FromCleanup::Failed { temporary, detail })
            });
            let mut given = Some(ours);
            let mut connect = || given.take().ok_or_else(|| "second connect".to_owned());
            let report = send(
                &mut CleanupLink::new(Duration::from_secs(5)),
                &mut connect,
                &fwd,
            );
            assert_eq!(report.status, status, "{report:?}");
            server.join().unwrap();
        }
        let mut refused = || Err("service cleanup is not in master.cf".to_owned());
        let report = send(
            &mut CleanupLink::new(Duration::from_secs(5)),
            &mut refused,
            &fwd,
        );
        assert_eq!(report.status, "4.3.0", "{report:?}");
        assert!(report.text.contains("not in master.cf"), "{report:?}");
    }
}
