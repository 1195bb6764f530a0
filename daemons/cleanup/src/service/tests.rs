//! The handler driven over a real channel pair, against a temporary spool.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use protocol::bounded::BoundedBytes;
use protocol::cleanup::{ReceivedHeader, CHUNK_MAX, RECIPIENTS_PER_MESSAGE};
use protocol::queue::{Protocol, QueueFile, QueueLimits};
use protocol::smtp::{BodyType, Envid, Notify, OriginalRecipient, Ret};
use protocol::{Domain, ForwardPath, Host, Mailbox};

use super::*;

const HOSTNAME: &str = "mx.example.test";

fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("postern-cleanup-svc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(message_size_limit: u64) -> Config {
    Config {
        myhostname: HOSTNAME.to_owned(),
        message_size_limit,
        header_size_limit: 102_400,
    }
}

/// How a served channel ended, seen from inside the cleanup's thread.
struct Ended {
    result: Result<(), ChannelEnd>,
    /// The spare when the channel had been served, before the `Cleanup` was dropped.
    spare: Option<QueueId>,
    /// The directory's names at that moment.
    names: Vec<String>,
}

/// A cleanup serving one channel in a thread, as `main` starts it (a spare prepared, then the
/// channel served); `wakes` counts its qmgr wake-ups, `first_spare` is the spare it prepared.
struct Served {
    client: Channel,
    handle: JoinHandle<Ended>,
    wakes: Arc<AtomicUsize>,
    first_spare: Option<QueueId>,
    /// Released to let the thread serve after it has prepared its spare.
    go: std::sync::mpsc::Sender<()>,
}

fn serve(dir: &Path, config: Config) -> Served {
    let s = serve_paused(dir, config);
    s.go.send(()).unwrap();
    s
}

/// Like [`serve`], but the thread waits after preparing its spare until `go` is sent.
fn serve_paused(dir: &Path, config: Config) -> Served {
    let (client, server) = Channel::pair().unwrap();
    let spool = Spool::open(dir).unwrap();
    let dir = dir.to_owned();
    let wakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&wakes);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut cleanup = Cleanup::new(config, spool);
        cleanup.prepare_spare();
        spare_tx.send(cleanup.spare_id()).unwrap();
        go_rx.recv().unwrap();
        let result = cleanup.serve(&server, "smtpd", &mut || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let ended = Ended {
            result,
            spare: cleanup.spare_id(),
            names: names(&dir),
        };
        drop(cleanup);
        ended
    });
    Served {
        client,
        handle,
        wakes,
        first_spare: spare_rx.recv().unwrap(),
        go,
    }
}

impl Served {
    fn send(&self, msg: ToCleanup) {
        self.client.send(&msg, &[]).unwrap();
    }

    fn answer(&self) -> FromCleanup {
        self.client.recv::<FromCleanup>().unwrap().msg
    }

    /// Closes the client end and returns how the handler ended and its wake-ups.
    fn close(self) -> (Result<(), ChannelEnd>, usize) {
        let (ended, wakes) = self.close_and_look();
        (ended.result, wakes)
    }

    /// Closes the client end; returns what the thread saw before dropping its `Cleanup`.
    fn close_and_look(self) -> (Ended, usize) {
        drop(self.client);
        let ended = self.handle.join().unwrap();
        (ended, self.wakes.load(Ordering::SeqCst))
    }

    /// The handler ended on its own (a protocol error): the client sees the channel closed.
    fn closed_by_cleanup(self) -> ChannelEnd {
        assert!(matches!(
            self.client.recv::<FromCleanup>(),
            Err(ChannelError::PeerClosed)
        ));
        self.handle.join().unwrap().result.unwrap_err()
    }
}

/// Checks what a channel's end left: the spare and exactly the files of `queued` while the
/// `Cleanup` lived, and, once it was dropped, the files of `queued` alone.
fn assert_left(dir: &Path, ended: &Ended, queued: &[QueueId]) {
    let mut want: Vec<String> = queued.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(names(dir), want, "after the Cleanup was dropped");
    let spare = ended.spare.expect("a spare when the channel ended");
    assert!(!queued.contains(&spare));
    want.push(spare.to_string());
    want.sort();
    assert_eq!(ended.names, want, "when the channel ended");
}

/// The names in `dir` that are not spares (or files just being created): not empty files of
/// mode 0600. For checks while the cleanup runs and may be making its next spare.
fn mail_names(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| {
            // A file removed since the listing is not there.
            std::fs::metadata(dir.join(n))
                .is_ok_and(|meta| !(meta.len() == 0 && meta.mode() & 0o777 == 0o600))
        })
        .collect()
}

fn mailbox(s: &str) -> Mailbox {
    Mailbox::parse(s, false).unwrap()
}

fn begin(sender: Option<&str>) -> ToCleanup {
    ToCleanup::Begin {
        sender: sender.map_or(ReversePath::Null, |s| ReversePath::Mailbox(mailbox(s))),
        flags: MailFlags {
            smtputf8: false,
            body: Some(BodyType::EightBitMime),
            ret: Some(Ret::Hdrs),
            envid: Some(Envid::new("env-1").unwrap()),
        },
        client: ClientInfo {
            name: Some(Domain::parse("client.example.org", false).unwrap()),
            address: Some("192.0.2.7".parse().unwrap()),
            helo: Some(Host::parse("client.example.org", false).unwrap()),
            protocol: Protocol::Esmtp,
        },
        received: ReceivedHeader::new(
            "Received: from client.example.org (client.example.org [192.0.2.7])\r\n\tby mx.example.test (Postern) with ESMTP",
        )
        .unwrap(),
    }
}

fn recipient(s: &str, dsn: bool) -> Recipient {
    Recipient {
        path: ForwardPath::Mailbox(mailbox(s)),
        notify: dsn.then_some(Notify {
            success: true,
            failure: true,
            delay: false,
        }),
        orcpt: dsn.then(|| OriginalRecipient::new("rfc822", s).unwrap()),
    }
}

fn recipients(list: &[&str]) -> ToCleanup {
    ToCleanup::Recipients(
        BoundedVec::try_from(
            list.iter()
                .enumerate()
                .map(|(i, s)| recipient(s, i == 0))
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    )
}

fn content(bytes: &[u8]) -> ToCleanup {
    ToCleanup::Content(BoundedBytes::try_from(bytes).unwrap())
}

/// Sends a whole message in chunks of at most `CHUNK_MAX`.
fn send_message(s: &Served, text: &[u8]) {
    s.send(begin(Some("sender@example.org")));
    s.send(recipients(&["a@example.test", "b@example.test"]));
    for chunk in text.chunks(CHUNK_MAX) {
        s.send(content(chunk));
    }
    s.send(ToCleanup::End);
}

fn queued(answer: FromCleanup) -> QueueId {
    match answer {
        FromCleanup::Queued { id } => id,
        other => panic!("not queued: {other:?}"),
    }
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Reads a queued file back: checks its mode, checksum and framing; returns it and its content.
fn read_back(dir: &Path, id: QueueId) -> (QueueFile, String) {
    let path = dir.join(id.to_string());
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
    protocol::queue::verify(File::open(&path).unwrap()).unwrap();
    let file = File::open(&path).unwrap();
    let queue_file = QueueFile::read(&file, QueueLimits::default()).unwrap();
    let mut text = String::new();
    queue_file
        .content(&file)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    (queue_file, text)
}

#[test]
fn a_message_round_trips_and_the_channel_serves_the_next() {
    let dir = temp_dir("round-trip");
    let s = serve(&dir, config(10_240_000));
    s.send(begin(Some("sender@example.org")));
    s.send(recipients(&["a@example.test"]));
    s.send(recipients(&["b@example.test"]));
    s.send(content(b"Subject: hello\r\nFrom: sender@exa"));
    s.send(content(b"mple.org\r\n\r\nline 1\r\n"));
    s.send(content(b"line 2\r\n"));
    s.send(ToCleanup::End);
    let first = queued(s.answer());
    assert_eq!(
        Some(first),
        s.first_spare,
        "the message is written into the spare"
    );

    let (file, text) = read_back(&dir, first);
    let env = file.envelope();
    assert_eq!(env.sender.to_string(), "<sender@example.org>");
    assert_eq!(env.flags.body, Some(BodyType::EightBitMime));
    assert_eq!(env.flags.ret, Some(Ret::Hdrs));
    assert_eq!(env.flags.envid.as_ref().unwrap().as_str(), "env-1");
    assert_eq!(env.client.address, Some("192.0.2.7".parse().unwrap()));
    assert_eq!(env.client.protocol, Protocol::Esmtp);
    let rcpts: Vec<String> = env.recipients.iter().map(|r| r.path.to_string()).collect();
    assert_eq!(rcpts, ["<a@example.test>", "<b@example.test>"]);
    assert_eq!(env.recipients[0], recipient("a@example.test", true));
    assert_eq!(file.pending().count(), 2);
    let arrival = env.arrival.to_system_time();
    assert_eq!(
        text,
        format!(
            "Received: from client.example.org (client.example.org [192.0.2.7])\r\n\tby mx.example.test (Postern) with ESMTP\r\n\
             Subject: hello\r\nFrom: sender@example.org\r\n\
             Message-ID: <{first}@{HOSTNAME}>\r\nDate: {}\r\n\
             \r\nline 1\r\nline 2\r\n",
            daemon::date::rfc5322(arrival)
        )
    );
    assert_eq!(file.content_len(), text.len() as u64);

    // The next message on the same channel, with the null sender and fields of its own.
    s.send(begin(None));
    s.send(recipients(&["c@example.test"]));
    s.send(content(
        b"MESSAGE-ID: <own@example.org>\r\ndate:\r\n Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\nbody\r\n",
    ));
    s.send(ToCleanup::End);
    let second = queued(s.answer());
    assert_ne!(first, second);
    let (file, text) = read_back(&dir, second);
    assert_eq!(file.envelope().sender, ReversePath::Null);
    // Both fields were there, so neither was added.
    assert!(!text.contains(&format!("<{second}@{HOSTNAME}>")));
    assert_eq!(text.matches("ate:").count(), 1);
    assert!(text.ends_with(
        "MESSAGE-ID: <own@example.org>\r\ndate:\r\n Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\nbody\r\n"
    ));

    let (ended, wakes) = s.close_and_look();
    ended.result.as_ref().unwrap();
    assert_eq!(wakes, 2);
    assert_left(&dir, &ended, &[first, second]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn large_messages_stream_and_a_message_may_have_no_content() {
    let dir = temp_dir("large");
    let s = serve(&dir, config(0));
    // 3 MB of body: several queue file chunks, many channel chunks.
    let mut text = b"Subject: big\r\n\r\n".to_vec();
    let line = b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n";
    while text.len() < 3_000_000 {
        text.extend_from_slice(line);
    }
    send_message(&s, &text);
    let id = queued(s.answer());
    let (_, stored) = read_back(&dir, id);
    assert!(stored.ends_with(std::str::from_utf8(&text[16..]).unwrap()));

    // End straight after the recipients: an empty message still gets its header fields.
    s.send(begin(Some("sender@example.org")));
    s.send(recipients(&["a@example.test"]));
    s.send(ToCleanup::End);
    let id = queued(s.answer());
    let (_, stored) = read_back(&dir, id);
    assert!(stored.contains(&format!("\r\nMessage-ID: <{id}@{HOSTNAME}>\r\nDate: ")));
    assert!(s.close().0.is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn over_the_size_limit_is_a_permanent_failure_and_nothing_stays() {
    let dir = temp_dir("size");
    let s = serve(&dir, config(1000));
    s.send(begin(Some("sender@example.org")));
    s.send(recipients(&["a@example.test"]));
    s.send(content(&[b'x'; 600]));
    s.send(content(&[b'x'; 600]));
    // Content after the limit is read and dropped.
    s.send(content(&[b'x'; 600]));
    s.send(ToCleanup::End);
    match s.answer() {
        FromCleanup::Failed { temporary, detail } => {
            assert!(!temporary);
            assert!(detail.as_str().contains("message_size_limit"), "{detail:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mail_names(&dir), Vec::<String>::new());
    // Exactly at the limit is fine.
    send_message(&s, &[b'y'; 1000]);
    let id = queued(s.answer());
    assert_eq!(mail_names(&dir), vec![id.to_string()]);
    // Nothing but the queued file and the next spare.
    let (ended, _) = s.close_and_look();
    assert!(ended.result.is_ok());
    assert_left(&dir, &ended, &[id]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn abort_discards_the_message_in_progress() {
    let dir = temp_dir("abort");
    let s = serve(&dir, config(0));
    // Abort before any content, after some content, and with nothing in progress.
    s.send(begin(Some("sender@example.org")));
    s.send(recipients(&["a@example.test"]));
    s.send(ToCleanup::Abort);
    s.send(begin(Some("sender@example.org")));
    s.send(recipients(&["a@example.test"]));
    s.send(content(b"Subject: x\r\n\r\nbody\r\n"));
    s.send(ToCleanup::Abort);
    s.send(ToCleanup::Abort);
    // No answer came for any of that: the next answer is the next message's.
    send_message(&s, b"Subject: kept\r\n\r\n");
    let id = queued(s.answer());
    assert_eq!(mail_names(&dir), vec![id.to_string()]);
    let (ended, wakes) = s.close_and_look();
    assert!(ended.result.is_ok());
    assert_eq!(wakes, 1);
    assert_left(&dir, &ended, &[id]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_channel_closed_mid_message_leaves_nothing() {
    let dir = temp_dir("closed");
    let s = serve(&dir, config(0));
    let s_first_spare = s.first_spare;
    assert!(s_first_spare.is_some());
    s.send(begin(Some("sender@example.org")));
    s.send(recipients(&["a@example.test"]));
    s.send(content(b"Subject: x\r\n\r\npartial"));
    let (ended, wakes) = s.close_and_look();
    assert!(ended.result.is_ok());
    assert_eq!(wakes, 0);
    // The message's file (the first spare) is gone; a new spare was made as the channel ended.
    assert_left(&dir, &ended, &[]);
    assert_ne!(ended.spare, s_first_spare);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn messages_out_of_order_close_the_channel_and_leave_nothing() {
    let dir = temp_dir("order");
    let cases: Vec<(&str, Vec<ToCleanup>)> = vec![
        ("Content before Begin", vec![content(b"x")]),
        ("End before Begin", vec![ToCleanup::End]),
        (
            "Recipients before Begin",
            vec![recipients(&["a@example.test"])],
        ),
        ("End without recipients", vec![begin(None), ToCleanup::End]),
        (
            "Content without recipients",
            vec![begin(None), content(b"x")],
        ),
        ("Begin twice", vec![begin(None), begin(None)]),
        (
            "Recipients after Content",
            vec![
                begin(None),
                recipients(&["a@example.test"]),
                content(b"Subject: x\r\n"),
                recipients(&["b@example.test"]),
            ],
        ),
        (
            "Begin during Content",
            vec![
                begin(None),
                recipients(&["a@example.test"]),
                content(b"Subject: x\r\n"),
                begin(None),
            ],
        ),
    ];
    for (name, messages) in cases {
        let s = serve(&dir, config(0));
        let last = messages.last().map(|m| m.kind()).unwrap();
        for msg in messages {
            s.send(msg);
        }
        match s.closed_by_cleanup() {
            ChannelEnd::Protocol { peer, what } => {
                assert_eq!(peer, "smtpd", "{name}");
                assert_eq!(what, format!("unexpected {last}"), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(names(&dir), Vec::<String>::new(), "{name}");
    }
    // A datagram that is not a ToCleanup at all.
    let s = serve(&dir, config(0));
    s.client
        .send(
            &FromCleanup::Queued {
                id: QueueId::new(SystemTime::now(), 1).unwrap(),
            },
            &[],
        )
        .unwrap();
    assert!(matches!(s.closed_by_cleanup(), ChannelEnd::Protocol { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn many_recipients_arrive_in_several_messages() {
    let dir = temp_dir("many");
    let s = serve(&dir, config(0));
    s.send(begin(Some("sender@example.org")));
    let all: Vec<String> = (0..200).map(|i| format!("r{i}@example.test")).collect();
    for batch in all.chunks(RECIPIENTS_PER_MESSAGE) {
        let list: Vec<&str> = batch.iter().map(String::as_str).collect();
        s.send(recipients(&list));
    }
    s.send(ToCleanup::End);
    let id = queued(s.answer());
    let (file, _) = read_back(&dir, id);
    let got: Vec<String> = file
        .envelope()
        .recipients
        .iter()
        .map(|r| r.path.mailbox().unwrap().to_string())
        .collect();
    assert_eq!(got, all);
    assert!(s.close().0.is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A directory where writing fails: a 64 KiB tmpfs when root (writes fail with ENOSPC part-way
/// through the message), a read-only directory otherwise (the create fails with EACCES).
struct Unwritable {
    dir: PathBuf,
    mounted: bool,
}

impl Unwritable {
    fn new(tag: &str) -> Unwritable {
        let dir = temp_dir(tag);
        if nix::unistd::geteuid().is_root() {
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "mount a small tmpfs");
            Unwritable { dir, mounted: true }
        } else {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
            Unwritable {
                dir,
                mounted: false,
            }
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(&self.dir).status();
        } else {
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_write_failure_is_temporary_leaves_nothing_and_the_channel_goes_on() {
    let spool = Unwritable::new("full");
    let s = serve(&spool.dir, config(0));
    // 2 MB: more than the tmpfs holds, so a chunk write fails with ENOSPC.
    let mut text = b"Subject: too big for the disk\r\n\r\n".to_vec();
    text.resize(2_000_000, b'z');
    send_message(&s, &text);
    match s.answer() {
        FromCleanup::Failed { temporary, detail } => {
            assert!(temporary);
            let expected = if spool.mounted {
                "No space left on device"
            } else {
                "Permission denied"
            };
            assert!(detail.as_str().contains(expected), "{detail:?}");
            assert!(
                detail.as_str().starts_with("queue file write error"),
                "{detail:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mail_names(&spool.dir), Vec::<String>::new());
    // The process keeps serving: a small message fits the tmpfs (when root).
    let mut ids = Vec::new();
    if spool.mounted {
        send_message(&s, b"Subject: small\r\n\r\nok\r\n");
        let id = queued(s.answer());
        assert_eq!(mail_names(&spool.dir), vec![id.to_string()]);
        ids.push(id);
    }
    let (ended, _) = s.close_and_look();
    assert!(ended.result.is_ok());
    if spool.mounted {
        // The failed message's file is gone; the queued one and the spare after it remain.
        assert_left(&spool.dir, &ended, &ids);
    } else {
        // No file could be made at all.
        assert_eq!(ended.spare, None);
        assert_eq!(ended.names, Vec::<String>::new());
    }
}

/// Whether a file's id was made before its message arrived, that is, as a spare: a message
/// without one gets its file after `Begin`, so its id is later than its arrival.
fn made_before_arrival(dir: &Path, id: QueueId) -> bool {
    let (file, _) = read_back(dir, id);
    id.created() <= file.envelope().arrival.to_system_time()
}

#[test]
fn each_message_takes_the_spare_made_after_the_previous_answer() {
    let dir = temp_dir("spare");
    let s = serve(&dir, config(1000));
    // At start-up: one spare, empty, incomplete.
    let first = s.first_spare.unwrap();
    assert_eq!(names(&dir), vec![first.to_string()]);
    let meta = std::fs::metadata(dir.join(first.to_string())).unwrap();
    assert_eq!((meta.len(), meta.mode() & 0o777), (0, 0o600));

    send_message(&s, b"Subject: one\r\n\r\n");
    let one = queued(s.answer());
    assert_eq!(one, first);
    // The next spare was made after the answer, before the next message arrived.
    send_message(&s, b"Subject: two\r\n\r\n");
    let two = queued(s.answer());
    assert_ne!(two, one);
    assert!(made_before_arrival(&dir, two));
    // A failed message (over the size limit) took the spare and removed it; the next message
    // has a spare again.
    send_message(&s, &[b'x'; 2000]);
    assert!(matches!(
        s.answer(),
        FromCleanup::Failed {
            temporary: false,
            ..
        }
    ));
    send_message(&s, b"Subject: three\r\n\r\n");
    let three = queued(s.answer());
    assert!(made_before_arrival(&dir, three));
    assert!(one < two && two < three, "ids sort by creation");

    let (ended, wakes) = s.close_and_look();
    assert!(ended.result.is_ok());
    assert_eq!(wakes, 3);
    // The spare waiting when the channel ended is removed when the cleanup ends.
    assert_left(&dir, &ended, &[one, two, three]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A directory where no file can be created until [`Blocked::unblock`]: a tmpfs with no free
/// inode when root (remounted with more), a read-only directory otherwise.
struct Blocked(Unwritable);

impl Blocked {
    fn new(tag: &str) -> Blocked {
        let dir = temp_dir(tag);
        if nix::unistd::geteuid().is_root() {
            let status = std::process::Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    "size=1m,nr_inodes=1,mode=0700",
                    "tmpfs",
                ])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "mount a tmpfs without free inodes");
            Blocked(Unwritable { dir, mounted: true })
        } else {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
            Blocked(Unwritable {
                dir,
                mounted: false,
            })
        }
    }

    fn unblock(&self) {
        if self.0.mounted {
            let status = std::process::Command::new("mount")
                .args(["-o", "remount,nr_inodes=64"])
                .arg(&self.0.dir)
                .status()
                .unwrap();
            assert!(status.success(), "remount the tmpfs with inodes");
        } else {
            std::fs::set_permissions(&self.0.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    }
}

#[test]
fn without_a_spare_a_message_creates_its_own_file() {
    let blocked = Blocked::new("fallback");
    let dir = blocked.0.dir.clone();
    let s = serve_paused(&dir, config(0));
    // The spare could not be made; now files can be created again.
    assert_eq!(s.first_spare, None);
    blocked.unblock();
    s.go.send(()).unwrap();
    send_message(&s, b"Subject: no spare\r\n\r\nbody\r\n");
    let id = queued(s.answer());
    assert!(!made_before_arrival(&dir, id), "created after Begin");
    let (_, text) = read_back(&dir, id);
    assert!(text.ends_with("\r\nbody\r\n"));
    // After the answer a spare is made again, and the next message takes it.
    send_message(&s, b"Subject: spare again\r\n\r\n");
    let next = queued(s.answer());
    assert!(made_before_arrival(&dir, next));
    let (ended, _) = s.close_and_look();
    assert!(ended.result.is_ok());
    assert_left(&dir, &ended, &[id, next]);
}

#[test]
fn details_are_bounded_and_printable() {
    let long = "é".repeat(MAX_DETAIL_LEN);
    assert!(detail(&long).as_str().len() <= MAX_DETAIL_LEN);
    assert_eq!(detail("a\nb").as_str(), "a b");
}
