use std::cell::Cell;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::thread;
use std::time::Duration;

use protocol::bounded::BoundedVec;
use protocol::delivery::NoticeKind;
use protocol::queue::{Outcome, Recipient};
use protocol::{Channel, FromCleanup, QueueId, ReversePath, ToCleanup};

use super::*;
use crate::report::tests::python_summary;
use crate::testing::*;

/// What a fake cleanup received for one message.
#[derive(Debug)]
struct Handed {
    sender: ReversePath,
    smtputf8: bool,
    received: String,
    recipients: Vec<Recipient>,
    content: Vec<u8>,
}

/// A cleanup that takes one message per answer in `answers` (`None`: close the channel at
/// `End` without answering), then closes.
fn fake_cleanup(answers: Vec<Option<FromCleanup>>) -> (Channel, thread::JoinHandle<Vec<Handed>>) {
    let (ours, theirs) = Channel::pair().unwrap();
    let handle = thread::spawn(move || {
        let mut handed = Vec::new();
        for answer in answers {
            let mut msg = None;
            let mut recipients = Vec::new();
            let mut content = Vec::new();
            loop {
                match theirs.recv::<ToCleanup>().unwrap().msg {
                    ToCleanup::Begin {
                        sender,
                        flags,
                        received,
                        ..
                    } => msg = Some((sender, flags.smtputf8, received.as_str().to_owned())),
                    ToCleanup::Recipients(list) => recipients.extend(list.iter().cloned()),
                    ToCleanup::Content(bytes) => content.extend_from_slice(&bytes),
                    ToCleanup::End => break,
                    ToCleanup::Abort => panic!("unexpected Abort"),
                }
            }
            let (sender, smtputf8, received) = msg.expect("Begin came first");
            handed.push(Handed {
                sender,
                smtputf8,
                received,
                recipients,
                content,
            });
            match answer {
                Some(a) => theirs.send(&a, &[]).unwrap(),
                None => return handed,
            }
        }
        handed
    });
    (ours, handle)
}

fn queued(n: u32) -> FromCleanup {
    FromCleanup::Queued {
        id: QueueId::parse(&format!("0005F1A2B3C4D5E60000{n:02X}")).unwrap(),
    }
}

fn notify(kind: NoticeKind, indices: &[u32]) -> ToBounce {
    ToBounce::Notify {
        queue_id: queue_id(),
        kind,
        recipients: BoundedVec::try_from(indices.to_vec()).unwrap(),
    }
}

fn bounced_file() -> TempFile {
    let env = envelope(
        "sender@example.org",
        no_flags(),
        vec![
            rcpt("nobody@example.net", None, None),
            rcpt("quiet@example.net", Some("NEVER"), None),
        ],
    );
    queue_file(
        &env,
        MESSAGE,
        &[
            (0, Outcome::Bounced, "5.1.1", "550 5.1.1 no such user"),
            (1, Outcome::Bounced, "5.1.1", "550 5.1.1 no such user"),
        ],
    )
}

fn fd(f: &TempFile) -> OwnedFd {
    OwnedFd::from(f.file.try_clone().unwrap())
}

#[test]
fn a_notice_over_a_channel_becomes_a_report_in_cleanup() {
    let (cleanup, fake) = fake_cleanup(vec![Some(queued(1)), Some(queued(2))]);
    let (qmgr, ours) = Channel::pair().unwrap();
    let server = thread::spawn(move || {
        let mut bounce = Bounce::new(config());
        let mut cleanup = Some(cleanup);
        let mut connect = || cleanup.take().ok_or_else(|| "asked twice".to_owned());
        bounce.serve(&ours, "qmgr", &mut connect)
    });
    let file = bounced_file();
    for expected in [queued(1), queued(2)] {
        qmgr.send(&notify(NoticeKind::Failure, &[0, 1]), &[file.file.as_fd()])
            .unwrap();
        let FromCleanup::Queued { id } = expected else {
            unreachable!()
        };
        assert_eq!(
            qmgr.recv::<FromBounce>().unwrap().msg,
            FromBounce::Sent { id: Some(id) }
        );
    }
    drop(qmgr);
    server.join().unwrap().unwrap();
    let handed = fake.join().unwrap();
    assert_eq!(handed.len(), 2, "one cleanup channel carried both reports");
    let h = &handed[0];
    assert_eq!(h.sender, ReversePath::Null);
    assert!(!h.smtputf8);
    assert!(h
        .received
        .starts_with("Received: by mx.example.test (Postern);"));
    assert_eq!(h.recipients, vec![rcpt("sender@example.org", None, None)]);
    let p = parse(&h.content);
    let blocks = p.parts[1].blocks();
    assert_eq!(blocks.len(), 2, "NOTIFY=NEVER is not reported");
    assert_eq!(lookup(&blocks[1], "Status"), Some("5.1.1"));
    assert_eq!(p.parts[2].body, MESSAGE);
    let summary = python_summary(&h.content);
    assert!(summary.contains(&"type multipart/report".to_owned()));
    assert!(summary.contains(&"recipient rfc822; nobody@example.net failed 5.1.1".to_owned()));
}

#[test]
fn cleanup_failures_are_passed_on() {
    let file = bounced_file();
    let detail = protocol::control::Detail::try_from("message file too big").unwrap();
    let (cleanup, fake) = fake_cleanup(vec![Some(FromCleanup::Failed {
        temporary: false,
        detail: detail.clone(),
    })]);
    let mut bounce = Bounce::new(config());
    let mut cleanup = Some(cleanup);
    let mut connect = || cleanup.take().ok_or_else(|| "no cleanup".to_owned());
    let answer = bounce.handle(notify(NoticeKind::Failure, &[0]), fd(&file), &mut connect);
    assert_eq!(
        answer,
        FromBounce::Failed {
            temporary: false,
            detail
        }
    );
    assert_eq!(fake.join().unwrap().len(), 1);
}

#[test]
fn a_lost_cleanup_is_temporary_and_replaced_for_the_next_report() {
    let file = bounced_file();
    let (first, fake1) = fake_cleanup(vec![None]);
    let (second, fake2) = fake_cleanup(vec![Some(queued(3))]);
    let mut channels = vec![second, first];
    let connects = Cell::new(0);
    let mut connect = || {
        connects.set(connects.get() + 1);
        channels.pop().ok_or_else(|| "no more".to_owned())
    };
    let mut bounce = Bounce::with_timeout(config(), Duration::from_secs(10));
    match bounce.handle(notify(NoticeKind::Failure, &[0]), fd(&file), &mut connect) {
        FromBounce::Failed { temporary, .. } => assert!(temporary),
        other => panic!("{other:?}"),
    }
    fake1.join().unwrap();
    let FromCleanup::Queued { id } = queued(3) else {
        unreachable!()
    };
    assert_eq!(
        bounce.handle(notify(NoticeKind::Failure, &[0]), fd(&file), &mut connect),
        FromBounce::Sent { id: Some(id) }
    );
    assert_eq!(connects.get(), 2);
    fake2.join().unwrap();

    // No channel at all: temporary too.
    assert!(matches!(
        bounce.handle(notify(NoticeKind::Failure, &[0]), fd(&file), &mut connect),
        FromBounce::Failed {
            temporary: true,
            ..
        }
    ));
}

#[test]
fn damaged_files_and_unwanted_notices_never_reach_cleanup() {
    let mut connect = || -> Result<Channel, String> { panic!("cleanup must not be asked") };
    let mut bounce = Bounce::new(config());

    // Every recipient said NEVER, or the notice is about mail from <>.
    let file = bounced_file();
    assert_eq!(
        bounce.handle(notify(NoticeKind::Failure, &[1]), fd(&file), &mut connect),
        FromBounce::Sent { id: None }
    );
    assert_eq!(
        bounce.handle(notify(NoticeKind::Success, &[0]), fd(&file), &mut connect),
        FromBounce::Sent { id: None }
    );

    // One flipped octet in the content: the checksum catches it.
    let bytes = std::fs::read(&file.path).unwrap();
    let at = bytes.windows(9).position(|w| w == b"quarterly").unwrap();
    file.file.write_at(b"Q", at as u64).unwrap();
    match bounce.handle(notify(NoticeKind::Failure, &[0]), fd(&file), &mut connect) {
        FromBounce::Failed { temporary, detail } => {
            assert!(!temporary);
            assert!(detail.as_str().contains("checksum"), "{detail:?}");
        }
        other => panic!("{other:?}"),
    }

    // Not a queue file at all.
    let empty = queue_file(
        &envelope(
            "a@example.org",
            no_flags(),
            vec![rcpt("b@example.test", None, None)],
        ),
        b"",
        &[],
    );
    empty.file.set_len(5).unwrap();
    assert!(matches!(
        bounce.handle(notify(NoticeKind::Failure, &[0]), fd(&empty), &mut connect),
        FromBounce::Failed {
            temporary: false,
            ..
        }
    ));
}

#[test]
fn a_notice_without_its_descriptor_ends_the_channel() {
    // A forged datagram: the Notify encoding without the descriptor its kind carries. The
    // channel refuses it on receipt, and the daemon closes the channel.
    let (qmgr, ours) = Channel::pair().unwrap();
    let bytes = protocol::encode(&notify(NoticeKind::Failure, &[0])).unwrap();
    let raw = std::os::unix::net::UnixDatagram::from(OwnedFd::from(qmgr));
    raw.send(&bytes).unwrap();
    let mut connect = || -> Result<Channel, String> { panic!("cleanup must not be asked") };
    let mut bounce = Bounce::new(config());
    assert!(bounce.serve(&ours, "qmgr", &mut connect).is_err());
}
