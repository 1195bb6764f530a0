//! The bounce binary under its real sandbox, driven by a stand-in master: Hello and Ready with
//! seccomp in force, Go, a channel from "qmgr" with a notice and its queue file descriptor, a
//! `Connect` to cleanup answered with a fake cleanup, and the report's queue id back to qmgr.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use protocol::bounded::BoundedVec;
use protocol::control::{FromMaster, ToMaster, PROTOCOL_VERSION};
use protocol::delivery::{FromBounce, NoticeKind, ToBounce};
use protocol::queue::{
    self, ClientInfo, Diagnostic, Envelope, MailFlags, Outcome, Protocol, QueueFileWriter,
    Recipient, ResultRecord, Timestamp, ENVELOPE_VERSION,
};
use protocol::{Channel, ForwardPath, FromCleanup, QueueId, ReversePath, ServiceName, ToCleanup};

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name(s: &str) -> ServiceName {
    ServiceName::try_from(s).unwrap()
}

fn recv<M: protocol::Message>(ch: &Channel) -> protocol::channel::Received<M> {
    ch.recv::<M>().unwrap()
}

#[test]
fn a_sandboxed_bounce_reports_through_cleanup() {
    let dir =
        Scratch(std::env::temp_dir().join(format!("postern-bounce-it-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(
        dir.0.join("main.cf"),
        format!(
            "myhostname = mx.example.test\nmydomain = example.test\nqueue_directory = {}\nbounce_user = 65534:65534\n",
            dir.0.display()
        ),
    )
    .unwrap();

    // A queue file with one bounced recipient.
    let path = dir.0.join("queued");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        arrival: Timestamp::now(),
        sender: ReversePath::parse("<sender@example.org>", false).unwrap(),
        flags: MailFlags::default(),
        client: ClientInfo {
            name: None,
            address: None,
            helo: None,
            protocol: Protocol::Esmtp,
        },
        recipients: BoundedVec::try_from(vec![Recipient {
            path: ForwardPath::parse("<nobody@example.net>", false).unwrap(),
            notify: None,
            orcpt: None,
        }])
        .unwrap(),
    };
    let mut w = QueueFileWriter::begin(file.try_clone().unwrap(), &envelope).unwrap();
    w.write_content(b"Subject: hello\r\n\r\nbody\r\n").unwrap();
    w.finish().unwrap();
    let mut appender = file.try_clone().unwrap();
    queue::append_result(
        &mut appender,
        &ResultRecord {
            recipient: 0,
            outcome: Outcome::Bounced,
            status: "5.1.1".parse().unwrap(),
            diagnostic: Diagnostic::new("550 5.1.1 no such user").unwrap(),
            time: Timestamp::now(),
            next_retry: None,
        },
    )
    .unwrap();
    let read_only = std::fs::File::open(&path).unwrap();

    let (master, control) = Channel::pair().unwrap();
    let program = PathBuf::from(env!("CARGO_BIN_EXE_bounce"));
    let mut spec = sandbox::Spawn::new(&program, control.as_fd());
    spec.arg0 = Some("bounce".into());
    spec.args = ["-c", dir.0.to_str().unwrap(), "-n", "bounce", "-t", "unix"]
        .iter()
        .map(Into::into)
        .collect();
    let stderr = std::io::stderr();
    spec.output = Some(stderr.as_fd());
    let pid = sandbox::spawn(&spec).unwrap();
    drop(control);

    assert_eq!(
        recv::<ToMaster>(&master).msg,
        ToMaster::Hello {
            version: PROTOCOL_VERSION
        }
    );
    master
        .send(
            &FromMaster::Welcome {
                version: PROTOCOL_VERSION,
            },
            &[],
        )
        .unwrap();
    match recv::<ToMaster>(&master).msg {
        ToMaster::Ready { report } => assert!(report.seccomp, "seccomp in force"),
        other => panic!("{other:?}"),
    }
    // The stand-in master's verdict on the report: the daemon serves nothing before it.
    master.send(&FromMaster::Go, &[]).unwrap();

    let (qmgr, theirs) = Channel::pair().unwrap();
    master
        .send(
            &FromMaster::Incoming { from: name("qmgr") },
            &[theirs.as_fd()],
        )
        .unwrap();
    drop(theirs);
    let notice = ToBounce::Notify {
        queue_id: QueueId::parse("0005F1A2B3C4D5E6000001").unwrap(),
        kind: NoticeKind::Failure,
        recipients: BoundedVec::try_from(vec![0]).unwrap(),
    };
    qmgr.send(&notice, &[read_only.as_fd()]).unwrap();

    // The daemon asks for cleanup; the stand-in master hands it a fake one.
    assert_eq!(
        recv::<ToMaster>(&master).msg,
        ToMaster::Connect {
            service: name("cleanup")
        }
    );
    let (cleanup, theirs) = Channel::pair().unwrap();
    master
        .send(
            &FromMaster::Connected {
                service: name("cleanup"),
            },
            &[theirs.as_fd()],
        )
        .unwrap();
    drop(theirs);
    let mut content = Vec::new();
    loop {
        match recv::<ToCleanup>(&cleanup).msg {
            ToCleanup::Begin { sender, .. } => assert_eq!(sender, ReversePath::Null),
            ToCleanup::Recipients(list) => {
                assert_eq!(list[0].path.to_string(), "<sender@example.org>")
            }
            ToCleanup::Content(bytes) => content.extend_from_slice(&bytes),
            ToCleanup::End => break,
            ToCleanup::Abort => panic!("Abort"),
        }
    }
    let text = String::from_utf8(content).unwrap();
    assert!(text.contains("Content-Type: message/delivery-status"));
    assert!(text.contains("\r\nStatus: 5.1.1\r\n"));
    let id = QueueId::parse("0005F1A2B3C4D5E6000002").unwrap();
    cleanup.send(&FromCleanup::Queued { id }, &[]).unwrap();
    assert_eq!(
        recv::<FromBounce>(&qmgr).msg,
        FromBounce::Sent { id: Some(id) }
    );

    // Closing the channel ends it; Stop ends the daemon.
    drop(qmgr);
    assert_eq!(recv::<ToMaster>(&master).msg, ToMaster::Idle);
    master.send(&FromMaster::Stop, &[]).unwrap();
    // The daemon's exit closes its end of the control channel.
    let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
    assert_eq!(ready, 1, "bounce did not exit within 10 s of Stop");
    assert!(matches!(
        master.recv::<ToMaster>(),
        Err(protocol::ChannelError::PeerClosed)
    ));
    assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
}
