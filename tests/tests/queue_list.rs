//! Whole-system tests of `postern queue list`: queue files written with `protocol::queue` into
//! the spool of an instance made by `postern init`, listed in the `mailq` layout and as JSON,
//! with incomplete and damaged files among them, and an empty queue. They run the built
//! `postern` binary (`cargo build --workspace --bins` first) and pass as root and as an
//! unprivileged user; nothing is started.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use postern_tests::instance::binary;
use protocol::bounded::BoundedVec;
use protocol::queue::{
    ClientInfo, Diagnostic, Envelope, MailFlags, Outcome, Protocol, QueueFile, QueueFileWriter,
    QueueLimits, Recipient, ResultRecord, Timestamp, ENVELOPE_VERSION,
};
use protocol::smtp::EnhancedStatus;
use protocol::{ForwardPath, Mailbox, QueueId, ReversePath};

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

fn postern(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(binary("postern"))
        .arg("-c")
        .arg(dir)
        .args(args)
        .output()
        .expect("run postern");
    Run {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// An instance made by `postern init` (nothing started); removed on drop.
struct Instance {
    root: PathBuf,
    dir: PathBuf,
}

impl Instance {
    fn init(name: &str) -> Instance {
        let root =
            std::env::temp_dir().join(format!("postern-queue-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let dir = root.join("instance");
        let run = postern(&dir, &["init", "--port", "2525"]);
        assert_eq!(run.status, 0, "init: {}", run.stderr);
        Instance { root, dir }
    }

    fn queue(&self, name: &str) -> PathBuf {
        self.dir.join("spool").join(name)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn mailbox(s: &str) -> Mailbox {
    Mailbox::parse(s, false).unwrap()
}

/// 2026-03-05 09:07:02 UTC.
const ARRIVAL: u64 = 1_772_701_622;

fn id(offset_secs: u64, seq: u32) -> QueueId {
    QueueId::new(UNIX_EPOCH + Duration::from_secs(ARRIVAL + offset_secs), seq).unwrap()
}

/// Writes a queue file as cleanup does (without the fsyncs): mode 0700 when `complete`.
fn write_queue_file(
    dir: &Path,
    id: QueueId,
    sender: Option<&str>,
    recipients: &[&str],
    content: &[u8],
    complete: bool,
) -> PathBuf {
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        arrival: Timestamp::from_micros(ARRIVAL * 1_000_000),
        sender: sender.map_or(ReversePath::Null, |s| ReversePath::Mailbox(mailbox(s))),
        flags: MailFlags::default(),
        client: ClientInfo {
            name: None,
            address: Some("192.0.2.1".parse().unwrap()),
            helo: None,
            protocol: Protocol::Esmtp,
        },
        recipients: BoundedVec::try_from(
            recipients
                .iter()
                .map(|r| Recipient {
                    path: ForwardPath::Mailbox(mailbox(r)),
                    notify: None,
                    orcpt: None,
                })
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    };
    let path = dir.join(id.to_string());
    let file = File::create(&path).unwrap();
    let mut writer = QueueFileWriter::begin(&file, &envelope).unwrap();
    writer.write_content(content).unwrap();
    if complete {
        writer.finish().unwrap();
    }
    let mode = if complete { 0o700 } else { 0o600 };
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn append(path: &Path, recipient: u32, outcome: Outcome, status: (u8, u16, u16), text: &str) {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut queue_file = QueueFile::read(&file, QueueLimits::default()).unwrap();
    let deferred = outcome == Outcome::Deferred;
    queue_file
        .append(
            &mut file,
            ResultRecord {
                recipient,
                outcome,
                status: EnhancedStatus::new(status.0, status.1, status.2).unwrap(),
                diagnostic: Diagnostic::new(text).unwrap(),
                time: Timestamp::from_micros((ARRIVAL + 60) * 1_000_000),
                next_retry: deferred.then(|| Timestamp::from_micros((ARRIVAL + 360) * 1_000_000)),
            },
        )
        .unwrap();
}

#[test]
fn an_empty_queue_says_so() {
    let instance = Instance::init("empty");
    let run = postern(&instance.dir, &["queue", "list"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "Mail queue is empty\n");
    let run = postern(&instance.dir, &["queue", "list", "--json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

#[test]
fn every_queue_is_listed_in_the_mailq_layout_and_as_json() {
    let instance = Instance::init("list");
    let body = |n: usize| {
        let mut text = b"Subject: x\r\n\r\n".to_vec();
        text.resize(n, b'y');
        text
    };
    let incoming = id(0, 1);
    write_queue_file(
        &instance.queue("incoming"),
        incoming,
        Some("alice@example.org"),
        &["bob@example.test"],
        &body(1000),
        true,
    );
    let active = id(1, 2);
    write_queue_file(
        &instance.queue("active"),
        active,
        None,
        &["postmaster@example.test"],
        &body(500),
        true,
    );
    let deferred = id(2, 3);
    let path = write_queue_file(
        &instance.queue("deferred"),
        deferred,
        Some("carol@example.org"),
        &["d1@example.net", "d2@example.net", "done@example.net"],
        &body(2000),
        true,
    );
    append(
        &path,
        0,
        Outcome::Deferred,
        (4, 4, 1),
        "connect to mx.example.net[192.0.2.9]:25: Connection refused",
    );
    append(
        &path,
        1,
        Outcome::Deferred,
        (4, 4, 1),
        "connect to mx.example.net[192.0.2.9]:25: Connection refused",
    );
    append(&path, 2, Outcome::Delivered, (2, 0, 0), "delivered");
    let held = id(3, 4);
    write_queue_file(
        &instance.queue("hold"),
        held,
        Some("dave@example.org"),
        &["erin@example.test"],
        &body(100),
        true,
    );
    // Not listed: a file being written, a message in corrupt/, a name that is no queue id.
    write_queue_file(
        &instance.queue("incoming"),
        id(4, 5),
        Some("partial@example.org"),
        &["x@example.test"],
        b"half",
        false,
    );
    write_queue_file(
        &instance.queue("corrupt"),
        id(5, 6),
        Some("corrupt@example.org"),
        &["x@example.test"],
        b"x",
        true,
    );
    fs::write(instance.queue("deferred").join("stray.txt"), "x").unwrap();
    // Damaged: complete by its mode, but cut short. Reported, not fatal.
    let damaged = id(6, 7);
    let damaged_path = write_queue_file(
        &instance.queue("deferred"),
        damaged,
        Some("mallory@example.org"),
        &["x@example.test"],
        &body(300),
        true,
    );
    let len = fs::metadata(&damaged_path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&damaged_path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let run = postern(&instance.dir, &["queue", "list"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let indent = " ".repeat(54);
    let expected = format!(
        "\
-Queue ID-              --Size-- ----Arrival Time---- -Sender/Recipient-------
{incoming}      1000 Thu Mar  5 09:07:02  alice@example.org
{indent}bob@example.test

{active}*      500 Thu Mar  5 09:07:02  MAILER-DAEMON
{indent}postmaster@example.test

{deferred}      2000 Thu Mar  5 09:07:02  carol@example.org
{reason:>88}
{indent}d1@example.net
{indent}d2@example.net

{held}!      100 Thu Mar  5 09:07:02  dave@example.org
{indent}erin@example.test

-- 3 Kbytes in 4 Requests.
",
        reason = "(connect to mx.example.net[192.0.2.9]:25: Connection refused)"
    );
    assert_eq!(run.stdout, expected, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("warning: deferred/{damaged}: damaged:")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("stray.txt"), "{}", run.stderr);
    assert!(!run.stderr.contains("partial"), "{}", run.stderr);

    let run = postern(&instance.dir, &["queue", "list", "--json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert_eq!(
        lines[0],
        format!("{{\"queue_name\": \"incoming\", \"queue_id\": \"{incoming}\", \"arrival_time\": {ARRIVAL}, \"message_size\": 1000, \"sender\": \"alice@example.org\", \"recipients\": [{{\"address\": \"bob@example.test\"}}]}}")
    );
    assert!(
        lines[1].contains("\"queue_name\": \"active\"") && lines[1].contains("\"sender\": \"\"")
    );
    assert_eq!(
        lines[2],
        format!("{{\"queue_name\": \"deferred\", \"queue_id\": \"{deferred}\", \"arrival_time\": {ARRIVAL}, \"message_size\": 2000, \"sender\": \"carol@example.org\", \"recipients\": [{{\"address\": \"d1@example.net\", \"delay_reason\": \"connect to mx.example.net[192.0.2.9]:25: Connection refused\"}}, {{\"address\": \"d2@example.net\", \"delay_reason\": \"connect to mx.example.net[192.0.2.9]:25: Connection refused\"}}]}}")
    );
    assert!(lines[3].contains("\"queue_name\": \"hold\""));
}
