//! The manager against a real spool in a temporary directory and fake agents and a fake bounce
//! daemon on `Channel::pair()`, each in its own thread.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use conf::MainCf;
use protocol::delivery::{FromAgent, FromBounce, NoticeKind, ToAgent, ToBounce};
use protocol::queue::{
    ClientInfo, Diagnostic, Envelope, MailFlags, Outcome, Protocol, Recipient, Timestamp,
    ENVELOPE_VERSION,
};
use protocol::smtp::Notify;
use protocol::{
    Channel, ForwardPath, QueueFile, QueueFileWriter, QueueId, QueueLimits, ReversePath,
};

use super::{Connect, Manager};
use crate::config::Config;
use crate::spool::tests::TempSpool;
use crate::spool::{Queue, Spool};

type Behaviour = Arc<dyn Fn(Channel) + Send + Sync>;

/// Hands out channels whose other end a thread serves with the behaviour of that service.
#[derive(Default)]
struct Fake {
    services: HashMap<&'static str, Behaviour>,
    connects: HashMap<String, usize>,
}

impl Fake {
    fn with(mut self, service: &'static str, b: Behaviour) -> Fake {
        self.services.insert(service, b);
        self
    }
}

impl Connect for Fake {
    fn connect(&mut self, service: &str) -> Result<Channel, String> {
        *self.connects.entry(service.to_owned()).or_insert(0) += 1;
        let b = self
            .services
            .get(service)
            .cloned()
            .ok_or_else(|| format!("{service}: no such unix service in master.cf"))?;
        let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
        std::thread::spawn(move || b(theirs));
        Ok(ours)
    }
}

/// What the fake agent saw: (queue id, nexthop, recipient indices, content it read by fd).
type Seen = Arc<Mutex<Vec<(QueueId, String, Vec<u32>, Vec<u8>)>>>;

/// An agent answering each recipient with `answer(index)`, recording each request.
fn agent(seen: Seen, answer: fn(u32) -> (Outcome, &'static str)) -> Behaviour {
    Arc::new(move |ch: Channel| {
        while let Ok(r) = ch.recv::<ToAgent>() {
            let ToAgent::Deliver {
                queue_id,
                nexthop,
                content_offset,
                content_len,
                recipients,
                ..
            } = r.msg;
            let fd: OwnedFd = r.fds.into_iter().next().unwrap();
            let file = std::fs::File::from(fd);
            // The content is framed in chunks; the first chunk's data follows its length.
            let mut buf = vec![0u8; content_len as usize];
            file.read_exact_at(&mut buf, content_offset + 4).unwrap();
            let indices: Vec<u32> = recipients.iter().map(|r| r.index).collect();
            seen.lock().unwrap().push((
                queue_id,
                nexthop.as_str().to_owned(),
                indices.clone(),
                buf,
            ));
            for index in indices {
                let (outcome, status) = answer(index);
                if status == "die" {
                    return;
                }
                let index = if status == "lie" { index + 1000 } else { index };
                let status = if status == "lie" { "2.0.0" } else { status };
                let _ = ch.send(
                    &FromAgent::Result {
                        index,
                        outcome,
                        status: status.parse().unwrap(),
                        diagnostic: Diagnostic::new("fake agent").unwrap(),
                    },
                    &[],
                );
            }
            let _ = ch.send(&FromAgent::Done, &[]);
        }
    })
}

type Notices = Arc<Mutex<Vec<(QueueId, NoticeKind, Vec<u32>)>>>;

fn bounce(notices: Notices, temporary_failure: bool) -> Behaviour {
    Arc::new(move |ch: Channel| {
        while let Ok(r) = ch.recv::<ToBounce>() {
            let ToBounce::Notify {
                queue_id,
                kind,
                recipients,
            } = r.msg;
            assert_eq!(r.fds.len(), 1, "the queue file travels with the notice");
            notices
                .lock()
                .unwrap()
                .push((queue_id, kind, recipients.to_vec()));
            let answer = if temporary_failure {
                FromBounce::Failed {
                    temporary: true,
                    detail: "cleanup unavailable".try_into().unwrap(),
                }
            } else {
                FromBounce::Sent { id: None }
            };
            let _ = ch.send(&answer, &[]);
        }
    })
}

fn settings(root: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut s = MainCf::defaults();
    s.set("queue_directory", root.to_str().unwrap()).unwrap();
    s.set("myhostname", "mx.example.org").unwrap();
    s.set("virtual_mailbox_domains", "v.example.test").unwrap();
    s.set("minimal_backoff_time", "60s").unwrap();
    s.set("virtual_destination_recipient_limit", "2").unwrap();
    for (k, v) in extra {
        s.set(k, v).unwrap();
    }
    Config::from_settings(&s).unwrap()
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Writes a complete queue file into `incoming/`.
fn queue(root: &std::path::Path, sender: &str, rcpts: &[&str], notify: Option<Notify>) -> QueueId {
    let id = QueueId::new(
        SystemTime::now(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    )
    .unwrap();
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        arrival: Timestamp::now(),
        sender: ReversePath::parse(sender, false).unwrap(),
        flags: MailFlags::default(),
        client: ClientInfo {
            name: None,
            address: None,
            helo: None,
            protocol: Protocol::Esmtp,
        },
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                path: ForwardPath::parse(r, false).unwrap(),
                notify,
                orcpt: None,
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    };
    let path = root.join("incoming").join(id.to_string());
    let file = std::fs::File::create(&path).unwrap();
    let mut w = QueueFileWriter::begin(file, &envelope).unwrap();
    w.write_content(b"Subject: test\r\n\r\nhello\r\n").unwrap();
    let (mut file, _) = w.finish().unwrap();
    file.flush().unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    id
}

fn read(root: &std::path::Path, q: Queue, id: QueueId) -> QueueFile {
    let f = std::fs::File::open(root.join(q.name()).join(id.to_string())).unwrap();
    QueueFile::read(f, QueueLimits::default()).unwrap()
}

fn files(root: &std::path::Path, q: Queue) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(q.name()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Turns the loop until `done` holds (or fails after a few seconds).
fn run_until(m: &mut Manager, conn: &mut Fake, mut done: impl FnMut(&Manager) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(m) {
        assert!(Instant::now() < deadline, "condition not reached");
        m.step(conn, None, Duration::from_millis(20));
    }
}

fn settled(root: &std::path::Path) -> impl FnMut(&Manager) -> bool + '_ {
    move |m: &Manager| m.active() == 0 && files(root, Queue::Incoming).is_empty() && m.quiescent()
}

#[test]
fn delivered_mail_is_recorded_then_removed_and_requests_respect_the_recipient_limit() {
    let t = TempSpool::new("deliver");
    let seen = Seen::default();
    let mut conn = Fake::default().with(
        "virtual",
        agent(seen.clone(), |_| (Outcome::Delivered, "2.0.0")),
    );
    let id = queue(
        &t.root,
        "<a@example.org>",
        &[
            "<u1@v.example.test>",
            "<u2@v.example.test>",
            "<u3@V.example.test>",
        ],
        None,
    );
    let mut m = Manager::new(
        settings(&t.root, &[("initial_destination_concurrency", "1")]),
        Spool::open(&t.root).unwrap(),
    );
    run_until(&mut m, &mut conn, settled(&t.root));
    assert!(files(&t.root, Queue::Active).is_empty());
    assert!(files(&t.root, Queue::Deferred).is_empty());
    let seen = seen.lock().unwrap();
    let requests: Vec<Vec<u32>> = seen.iter().map(|s| s.2.clone()).collect();
    assert_eq!(
        requests,
        vec![vec![0, 1], vec![2]],
        "virtual_destination_recipient_limit = 2"
    );
    assert!(seen
        .iter()
        .all(|s| s.0 == id && s.1.eq_ignore_ascii_case("v.example.test")));
    assert!(
        seen[0].3.starts_with(b"Subject: test"),
        "the agent reads the content by fd"
    );
    assert_eq!(
        conn.connects["virtual"], 1,
        "one request at a time: the channel is reused"
    );
}

#[test]
fn deferred_mail_waits_in_deferred_with_its_retry_time_then_is_delivered_when_due() {
    let t = TempSpool::new("defer");
    let seen = Seen::default();
    let mut conn = Fake::default().with(
        "virtual",
        agent(seen.clone(), |_| (Outcome::Deferred, "4.2.0")),
    );
    let id = queue(&t.root, "<a@example.org>", &["<u1@v.example.test>"], None);
    let mut m = Manager::new(settings(&t.root, &[]), Spool::open(&t.root).unwrap());
    let before = SystemTime::now();
    run_until(&mut m, &mut conn, |m| {
        m.active() == 0 && files(&t.root, Queue::Deferred).len() == 1
    });
    let qf = read(&t.root, Queue::Deferred, id);
    let r = qf.result(0).unwrap();
    assert_eq!(
        (r.outcome, r.status.to_string()),
        (Outcome::Deferred, "4.2.0".to_owned())
    );
    assert!(r.next_retry.is_some());
    let spool = Spool::open(&t.root).unwrap();
    let retry = spool.mtime(Queue::Deferred, id).unwrap();
    assert!(
        retry >= before + Duration::from_secs(59),
        "minimal_backoff_time = 60s"
    );
    // Not due: a deferred scan leaves it alone.
    m.next_deferred_scan = Instant::now();
    m.step(&mut conn, None, Duration::ZERO);
    assert_eq!(files(&t.root, Queue::Deferred).len(), 1);
    // Due now (the clock is moved by moving the file's retry time), and the fault is gone.
    crate::spool::set_retry_time(
        &std::fs::File::open(spool.path(Queue::Deferred, id)).unwrap(),
        SystemTime::now() - Duration::from_secs(1),
    )
    .unwrap();
    conn.services.insert(
        "virtual",
        agent(seen.clone(), |_| (Outcome::Delivered, "2.0.0")),
    );
    m.agents.clear();
    m.next_deferred_scan = Instant::now();
    run_until(&mut m, &mut conn, |m| {
        m.active() == 0 && files(&t.root, Queue::Deferred).is_empty()
    });
    assert!(files(&t.root, Queue::Active).is_empty());
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn an_agent_that_dies_or_lies_gets_its_recipients_deferred_and_loses_its_channel() {
    for (name, answer) in [
        (
            "dies",
            (|_| (Outcome::Delivered, "die")) as fn(u32) -> (Outcome, &'static str),
        ),
        ("lies", |_| (Outcome::Delivered, "lie")),
    ] {
        let t = TempSpool::new(name);
        let mut conn = Fake::default().with("virtual", agent(Seen::default(), answer));
        let id = queue(&t.root, "<a@example.org>", &["<u1@v.example.test>"], None);
        let mut m = Manager::new(settings(&t.root, &[]), Spool::open(&t.root).unwrap());
        run_until(&mut m, &mut conn, |m| {
            m.active() == 0 && files(&t.root, Queue::Deferred).len() == 1
        });
        let r = read(&t.root, Queue::Deferred, id)
            .result(0)
            .cloned()
            .unwrap();
        assert_eq!(r.outcome, Outcome::Deferred, "{name}");
        assert_eq!(r.status.to_string(), "4.3.0", "{name}");
        assert!(m.agents.is_empty(), "{name}: channel dropped");
    }
}

#[test]
fn an_unavailable_transport_defers_with_4_3_0() {
    let t = TempSpool::new("unavailable");
    let mut conn = Fake::default();
    let id = queue(
        &t.root,
        "<a@example.org>",
        &["<u@elsewhere.test>", "<u@v.example.test>"],
        None,
    );
    let mut m = Manager::new(settings(&t.root, &[]), Spool::open(&t.root).unwrap());
    run_until(&mut m, &mut conn, |m| {
        m.active() == 0 && files(&t.root, Queue::Deferred).len() == 1
    });
    let qf = read(&t.root, Queue::Deferred, id);
    for i in 0..2 {
        let r = qf.result(i).unwrap();
        assert_eq!(r.status.to_string(), "4.3.0");
        assert_eq!(r.diagnostic.as_str(), "mail transport unavailable");
    }
}

#[test]
fn bounced_and_notify_success_recipients_get_notices_before_removal() {
    let t = TempSpool::new("bounce");
    let notices = Notices::default();
    let mut conn = Fake::default()
        .with(
            "virtual",
            agent(Seen::default(), |i| {
                if i == 0 {
                    (Outcome::Bounced, "5.1.1")
                } else {
                    (Outcome::Delivered, "2.0.0")
                }
            }),
        )
        .with("bounce", bounce(notices.clone(), false));
    let notify = Notify {
        success: true,
        failure: true,
        delay: false,
    };
    let id = queue(
        &t.root,
        "<a@example.org>",
        &["<u1@v.example.test>", "<u2@v.example.test>"],
        Some(notify),
    );
    let mut m = Manager::new(settings(&t.root, &[]), Spool::open(&t.root).unwrap());
    run_until(&mut m, &mut conn, settled(&t.root));
    assert!(
        files(&t.root, Queue::Active).is_empty(),
        "removed after Sent"
    );
    assert_eq!(
        *notices.lock().unwrap(),
        vec![
            (id, NoticeKind::Failure, vec![0]),
            (id, NoticeKind::Success, vec![1])
        ]
    );
}

#[test]
fn without_bounce_a_bounced_message_stays_deferred_and_expired_mail_bounces() {
    let t = TempSpool::new("nobounce");
    let mut conn = Fake::default().with(
        "virtual",
        agent(Seen::default(), |_| (Outcome::Bounced, "5.1.1")),
    );
    let id = queue(&t.root, "<>", &["<u1@v.example.test>"], None);
    let mut m = Manager::new(settings(&t.root, &[]), Spool::open(&t.root).unwrap());
    run_until(&mut m, &mut conn, |m| {
        m.active() == 0 && files(&t.root, Queue::Deferred).len() == 1
    });
    assert_eq!(
        read(&t.root, Queue::Deferred, id)
            .result(0)
            .unwrap()
            .outcome,
        Outcome::Bounced
    );

    // A lifetime of zero: the deferral of the one attempt becomes a bounce with its 4.x.x status.
    let t = TempSpool::new("expire");
    let notices = Notices::default();
    let mut conn = Fake::default()
        .with(
            "virtual",
            agent(Seen::default(), |_| (Outcome::Deferred, "4.2.2")),
        )
        .with("bounce", bounce(notices.clone(), false));
    let id = queue(&t.root, "<a@example.org>", &["<u1@v.example.test>"], None);
    let mut m = Manager::new(
        settings(&t.root, &[("maximal_queue_lifetime", "0")]),
        Spool::open(&t.root).unwrap(),
    );
    run_until(&mut m, &mut conn, settled(&t.root));
    assert!(files(&t.root, Queue::Deferred).is_empty());
    assert!(files(&t.root, Queue::Active).is_empty());
    assert_eq!(
        *notices.lock().unwrap(),
        vec![(id, NoticeKind::Failure, vec![0])]
    );
}

#[test]
fn a_temporary_bounce_failure_defers_and_a_delay_warning_is_sent_once() {
    let t = TempSpool::new("delay");
    let notices = Notices::default();
    let mut conn = Fake::default()
        .with(
            "virtual",
            agent(Seen::default(), |_| (Outcome::Deferred, "4.2.0")),
        )
        .with("bounce", bounce(notices.clone(), false));
    let id = queue(&t.root, "<a@example.org>", &["<u1@v.example.test>"], None);
    let mut m = Manager::new(
        settings(
            &t.root,
            &[("delay_warning_time", "0s"), ("minimal_backoff_time", "1s")],
        ),
        Spool::open(&t.root).unwrap(),
    );
    // delay_warning_time = 0 is off.
    run_until(&mut m, &mut conn, |m| {
        m.active() == 0 && files(&t.root, Queue::Deferred).len() == 1
    });
    assert!(notices.lock().unwrap().is_empty());
    m.cfg.delay_warning_time = Duration::from_millis(1);
    for _ in 0..2 {
        m.next_deferred_scan = Instant::now();
        let spool = Spool::open(&t.root).unwrap();
        crate::spool::set_retry_time(
            &std::fs::File::open(spool.path(Queue::Deferred, id)).unwrap(),
            SystemTime::now() - Duration::from_secs(1),
        )
        .unwrap();
        let n = notices.lock().unwrap().len();
        run_until(&mut m, &mut conn, |m| {
            m.active() == 0
                && m.quiescent()
                && files(&t.root, Queue::Deferred).len() == 1
                && read(&t.root, Queue::Deferred, id).log_records() as usize >= 2 + n
        });
    }
    assert_eq!(
        *notices.lock().unwrap(),
        vec![(id, NoticeKind::Delay, vec![0])]
    );
}

#[test]
fn damaged_files_go_to_corrupt_and_incomplete_ones_stay() {
    let t = TempSpool::new("corrupt");
    let mut conn = Fake::default();
    let id = queue(&t.root, "<a@example.org>", &["<u1@v.example.test>"], None);
    let path = t.root.join("incoming").join(id.to_string());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"X", 60).unwrap();
    let writing = queue(&t.root, "<a@example.org>", &["<u1@v.example.test>"], None);
    std::fs::set_permissions(
        t.root.join("incoming").join(writing.to_string()),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut m = Manager::new(settings(&t.root, &[]), Spool::open(&t.root).unwrap());
    run_until(&mut m, &mut conn, |_| {
        files(&t.root, Queue::Corrupt).len() == 1
    });
    assert_eq!(files(&t.root, Queue::Corrupt), vec![id.to_string()]);
    assert_eq!(files(&t.root, Queue::Incoming), vec![writing.to_string()]);
    assert_eq!(m.active(), 0);
}
