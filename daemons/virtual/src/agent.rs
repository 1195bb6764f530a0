//! One channel from the queue manager: each `ToAgent::Deliver` (with the queue file's
//! read-only descriptor) is answered with one `FromAgent::Result` per recipient, in
//! request order, then `Done`.
//!
//! Trusts: the request only as `protocol` decoded it (valid addresses, at most
//! `RECIPIENTS_PER_REQUEST` recipients, unique indices); the descriptor only to be
//! something it can `pread` (a short or unreadable file defers every recipient `4.3.0`).
//! Per recipient, in Postfix's order:
//! 1. no mailbox in `virtual_mailbox_maps` (or the bare `<Postmaster>`, which has no
//!    domain) → bounced `5.1.1` "user unknown in virtual mailbox table";
//! 2. a `Delivered-To:` field of the message header equal to the recipient (compared
//!    case-insensitively) → bounced `5.4.6` "mail forwarding loop";
//! 3. a table value that would leave `virtual_mailbox_base` → deferred `4.3.5`
//!    (Postfix's "mail system configuration error"), so the administrator can fix it;
//! 4. delivery into the Maildir (value ends in `/`) or mbox file.

use std::fs::File;

use protocol::delivery::{FromAgent, ToAgent};
use protocol::{Channel, ChannelError};

use mailbox::{maildir, mbox, Content, Envelope, Verdict};

use crate::config::{mailbox_path, Config};

/// Serves `channel` until the queue manager closes it.
pub fn serve(channel: &Channel, from: &str, config: &Config) -> Result<(), ChannelError> {
    loop {
        let received = match channel.recv::<ToAgent>() {
            Ok(r) => r,
            Err(ChannelError::PeerClosed) => return Ok(()),
            Err(e) => {
                tracing::warn!(channel = from, "closing the channel: {e}");
                return Err(e);
            }
        };
        let Some(fd) = received.fds.into_iter().next() else {
            // The decoder hands over exactly fd_count() descriptors; this is unreachable
            // unless that contract breaks, and then the channel cannot be trusted.
            tracing::warn!(channel = from, "Deliver without its descriptor");
            return Err(ChannelError::PeerClosed);
        };
        let file = File::from(fd);
        handle(channel, &received.msg, &file, config)?;
    }
}

/// Delivers one request and answers it.
pub fn handle(
    channel: &Channel,
    request: &ToAgent,
    file: &File,
    config: &Config,
) -> Result<(), ChannelError> {
    let ToAgent::Deliver {
        queue_id,
        sender,
        content_offset,
        content_len,
        recipients,
        ..
    } = request;
    let content = Content::new(file, *content_offset, *content_len);
    let sender = sender.mailbox().map(|m| m.to_string()).unwrap_or_default();
    // One scan of the header serves every recipient; an unreadable file defers them all.
    let delivered_to = content.delivered_to();
    for r in recipients.iter() {
        let verdict = match &delivered_to {
            Ok(seen) => deliver_one(config, &content, &sender, &r.recipient.path, seen),
            Err(e) => Verdict::deferred(3, 0, format!("cannot read queue file {queue_id}: {e}")),
        };
        tracing::info!(
            queue_id = %queue_id,
            to = %r.recipient.path,
            status = %verdict.status,
            outcome = %verdict.outcome,
            "{}",
            verdict.text
        );
        channel.send(
            &FromAgent::Result {
                index: r.index,
                outcome: verdict.outcome,
                status: verdict.status,
                diagnostic: verdict.diagnostic(),
            },
            &[],
        )?;
    }
    channel.send(&FromAgent::Done, &[])
}

fn deliver_one(
    config: &Config,
    content: &Content<'_>,
    sender: &str,
    path: &protocol::ForwardPath,
    delivered_to: &[String],
) -> Verdict {
    let Some(mailbox) = path.mailbox() else {
        return Verdict::bounced(1, 1, "user unknown in virtual mailbox table");
    };
    let Some(value) = config.maps.find_address(mailbox, "") else {
        return Verdict::bounced(1, 1, "user unknown in virtual mailbox table");
    };
    let recipient = mailbox.to_string();
    if delivered_to.contains(&recipient.to_lowercase()) {
        return Verdict::bounced(4, 6, "mail forwarding loop for ".to_owned() + &recipient);
    }
    let Some((target, is_maildir)) = mailbox_path(value) else {
        return Verdict::deferred(
            3,
            5,
            format!(
                "mail system configuration error: virtual_mailbox_maps gives {recipient} the mailbox {value:?}, which is not a relative path below virtual_mailbox_base"
            ),
        );
    };
    let env = Envelope {
        sender,
        recipient: &recipient,
    };
    // Every mailbox below the base belongs to this agent's one uid.
    let owner = nix::unistd::geteuid().as_raw();
    if is_maildir {
        maildir::deliver(
            &config.base,
            &target,
            &env,
            content,
            &maildir::Options {
                limit: config.mailbox_limit,
                hostname: &config.hostname,
                owner,
            },
        )
    } else {
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = mailbox::dirs::ensure(&config.base, parent, owner) {
                return Verdict::refused_dir(&e);
            }
        }
        mbox::deliver(
            &config.base.join(&target),
            &env,
            content,
            &mbox::Options {
                kind: mbox::Kind::Mailbox { owner },
                limit: config.mailbox_limit,
                lock: config.lock,
                dotlock: mbox::DotLocking::Take,
                create: true,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::address::{Domain, Host, Mailbox, ReversePath};
    use protocol::delivery::DeliveryRecipient;
    use protocol::queue::{
        ClientInfo, Envelope, MailFlags, Outcome, Protocol, QueueLimits, Recipient, Timestamp,
        ENVELOPE_VERSION,
    };
    use protocol::{ForwardPath, QueueFile, QueueFileWriter, QueueId};
    use std::fs::OpenOptions;
    use std::os::fd::AsFd;
    use std::path::Path;
    use std::time::Duration;

    const TEXT: &[u8] = b"Received: from client.example.org\r\nDelivered-To: looped@example.test\r\nSubject: t\r\n\r\nhello\r\n";

    fn rcpt(s: &str) -> Recipient {
        Recipient {
            path: ForwardPath::parse(&format!("<{s}>"), false).unwrap(),
            notify: None,
            orcpt: None,
        }
    }

    /// Writes a real queue file and returns it opened read-only, with its content's
    /// offset and length as the queue manager would send them.
    fn queue_file(dir: &Path, recipients: &[&str]) -> (File, u64, u64) {
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            arrival: Timestamp::from_micros(1_700_000_000_000_000),
            sender: ReversePath::Mailbox(Mailbox::parse("a@example.org", false).unwrap()),
            flags: MailFlags::default(),
            client: ClientInfo {
                name: None,
                address: None,
                helo: Some(Host::parse("client.example.org", false).unwrap()),
                protocol: Protocol::Esmtp,
            },
            recipients: recipients
                .iter()
                .map(|r| rcpt(r))
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        };
        let path = dir.join("0005F1A2B3C4D5E6000001");
        let out = File::create(&path).unwrap();
        let mut w = QueueFileWriter::begin(out, &envelope).unwrap();
        w.write_content(TEXT).unwrap();
        w.finish().unwrap();
        let file = OpenOptions::new().read(true).open(&path).unwrap();
        let q = QueueFile::read(&file, QueueLimits::default()).unwrap();
        (file, q.content_offset(), q.content_len())
    }

    fn config(base: &Path, table: &str) -> Config {
        Config {
            base: base.to_owned(),
            maps: policy::Maps::from_tables(vec![policy::Table::parse("vmailbox", table).unwrap()]),
            mailbox_limit: 0,
            hostname: "mx.example.test".into(),
            lock: mailbox::LockOptions {
                attempts: 2,
                delay: Duration::from_millis(10),
                ..mailbox::LockOptions::default()
            },
        }
    }

    #[test]
    fn a_request_over_a_channel_gets_a_result_per_recipient_then_done() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("mail");
        std::fs::create_dir(&base).unwrap();
        let addrs = [
            "u@example.test",
            "nobody@example.test",
            "looped@example.test",
            "box@example.test",
            "escape@example.test",
        ];
        let (file, offset, len) = queue_file(dir.path(), &addrs);
        let config = config(
            &base,
            "u@example.test example.test/u/\nlooped@example.test example.test/l/\nbox@example.test example.test/box\nescape@example.test ../outside/\n",
        );
        let (qmgr, agent) = Channel::pair().unwrap();
        let server = std::thread::spawn(move || serve(&agent, "qmgr", &config));
        let request = ToAgent::Deliver {
            queue_id: QueueId::parse("0005F1A2B3C4D5E6000001").unwrap(),
            nexthop: Domain::parse("example.test", false).unwrap(),
            sender: ReversePath::Mailbox(Mailbox::parse("a@example.org", false).unwrap()),
            flags: MailFlags::default(),
            arrival: Timestamp::from_micros(1_700_000_000_000_000),
            content_offset: offset,
            content_len: len,
            recipients: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| DeliveryRecipient {
                    index: i as u32 * 10,
                    recipient: rcpt(a),
                })
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        };
        // Two requests on one channel: the second finds the first's messages there.
        for round in 1..=2 {
            qmgr.send(&request, &[file.as_fd()]).unwrap();
            let mut got = Vec::new();
            while let FromAgent::Result {
                index,
                outcome,
                status,
                diagnostic,
            } = qmgr.recv::<FromAgent>().unwrap().msg
            {
                got.push((index, outcome, status.to_string(), diagnostic));
            }
            let summary: Vec<(u32, Outcome, &str)> = got
                .iter()
                .map(|(i, o, s, _)| (*i, *o, s.as_str()))
                .collect();
            assert_eq!(
                summary,
                [
                    (0, Outcome::Delivered, "2.0.0"),
                    (10, Outcome::Bounced, "5.1.1"),
                    (20, Outcome::Bounced, "5.4.6"),
                    (30, Outcome::Delivered, "2.0.0"),
                    (40, Outcome::Deferred, "4.3.5"),
                ],
                "round {round}: {got:?}"
            );
            assert_eq!(got[1].3.as_str(), "user unknown in virtual mailbox table");
            assert!(got[2].3.as_str().contains("mail forwarding loop"));
            let new: Vec<_> = std::fs::read_dir(base.join("example.test/u/new"))
                .unwrap()
                .collect();
            assert_eq!(new.len(), round);
        }
        let new = std::fs::read_dir(base.join("example.test/u/new"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(new).unwrap();
        assert!(
            text.starts_with("Return-Path: <a@example.org>\nDelivered-To: u@example.test\nReceived: from client.example.org\n"),
            "{text}"
        );
        let mbox = std::fs::read_to_string(base.join("example.test/box")).unwrap();
        assert_eq!(
            mbox.matches("\nDelivered-To: box@example.test\n").count(),
            2
        );
        assert!(!base.join("example.test/l").exists() && !dir.path().join("outside").exists());
        drop(qmgr);
        server.join().unwrap().unwrap();
    }

    #[test]
    fn a_damaged_queue_file_defers_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let (file, offset, len) = queue_file(dir.path(), &["u@example.test"]);
        let (qmgr, agent) = Channel::pair().unwrap();
        let config = config(dir.path(), "u@example.test u/\n");
        let request = ToAgent::Deliver {
            queue_id: QueueId::parse("0005F1A2B3C4D5E6000001").unwrap(),
            nexthop: Domain::parse("example.test", false).unwrap(),
            sender: ReversePath::Null,
            flags: MailFlags::default(),
            arrival: Timestamp::from_micros(1),
            // A length the framing does not have.
            content_offset: offset,
            content_len: len + 7,
            recipients: vec![DeliveryRecipient {
                index: 0,
                recipient: rcpt("u@example.test"),
            }]
            .try_into()
            .unwrap(),
        };
        let server = std::thread::spawn(move || serve(&agent, "qmgr", &config));
        qmgr.send(&request, &[file.as_fd()]).unwrap();
        match qmgr.recv::<FromAgent>().unwrap().msg {
            FromAgent::Result {
                index: 0,
                outcome: Outcome::Deferred,
                status,
                diagnostic,
            } => {
                assert_eq!(status.to_string(), "4.3.0");
                assert!(
                    diagnostic.as_str().contains("queue file read error"),
                    "{diagnostic}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(qmgr.recv::<FromAgent>().unwrap().msg, FromAgent::Done);
        for sub in ["tmp", "new"] {
            let left = std::fs::read_dir(dir.path().join("u").join(sub))
                .unwrap()
                .count();
            assert_eq!(left, 0, "{sub}: the partial file is removed");
        }
        drop(qmgr);
        server.join().unwrap().unwrap();
    }
}
