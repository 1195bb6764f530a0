//! Whole-system tests of delivery: a running instance (smtpd, cleanup, qmgr, the virtual and
//! local agents, bounce) driven by outside clients (`lettre`, Python's `smtplib`, `curl`, raw
//! sockets), checked where the mail ends up — in Maildirs, owned by the right uid, mode 0600,
//! with `Return-Path:`, `Delivered-To:` and `Received:` — and in the queue.
//!
//! - a virtual user and a local user get one copy each; an alias to three users gives three;
//!   unknown users are refused at `RCPT` (`550 5.1.1`);
//! - an unwritable mailbox defers (4.x.x): the message waits in `deferred/`, `postern queue
//!   list` shows it with its reason, and it is delivered on the configured back-off once the
//!   fault is gone; past `maximal_queue_lifetime` it bounces, and the report, delivered to the
//!   sender's virtual mailbox, parses with Python's `email` as `multipart/report` with the
//!   deferral's status;
//! - `kill -9` of qmgr, and separately of the virtual agent, while 200 messages flow: after a
//!   restart every accepted message is in the mailbox at least once; duplicates are counted and
//!   explained in the test's output; and qmgr again under a flow near the instance's capacity
//!   (1500 messages), where each kill repeats at most the deliveries then in flight (the
//!   destination's concurrency limit), reported per kill;
//! - the virtual agent runs under its fixed uid with no effective capability; a local delivery
//!   child runs as the recipient (as root; unprivileged, every process is the invoking user).
//! - while they serve (an SMTP session left open, after a virtual and a local delivery and a
//!   bounce), the real daemons hold only the descriptors the design gives them: found through
//!   the instance's master (pid file, `PPid`), each fd read from `/proc`, each channel's other
//!   end found with `ss` (sock_diag) and checked against the access matrix (root only).
//!
//! Trusts: nothing the instance writes — mailbox files are read as bytes and parsed here, queue
//! files through `protocol::queue` via the harness, processes through `/proc`.
//!
//! Decisions:
//! - Local users come from a passwd file of the instance's own (`local_passwd_file`), homes under
//!   `local_home_base` in the instance directory, `home_mailbox = Maildir/`. As root they have
//!   numeric uids no system account uses ([`LOCAL_UID_BASE`]), so no `useradd` is needed and
//!   nothing outside the instance changes; as an unprivileged user every account is the invoking
//!   user (the agent cannot change identity), and the root-only identity test is reported as
//!   ignored with the reason (this file runs under `postern_tests::harness`).
//! - The tests wait for readable conditions (a file in a Maildir, an empty queue, a line in the
//!   log) by polling with a deadline; the only sleeps are the killer's random pauses, which pick
//!   kill points, and the crash test's client pacing; neither synchronises anything.
//! - A daemon that is not built fails the test with the build command.
//! - Back-off checks allow one second of slack per bound: a deferred file's next attempt is its
//!   modification time, which has whole-second resolution in the queue manager's reckoning.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::message::Mailbox as LettreMailbox;
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postern_tests::harness::{self, root_test, test};
use postern_tests::instance::{binary, is_root, show, wait_until, Instance};
use postern_tests::rng::Rng;

/// The EHLO name every client uses.
const HELO: &str = "client.example.org";
/// `myhostname` of an instance made by `postern init`, one of `mydestination`'s domains.
const LOCAL_DOMAIN: &str = "localhost.localdomain";
/// The virtual mailbox `postern init` writes.
const VIRTUAL_USER: &str = "user@example.test";
/// The local users of the test passwd file.
const LOCAL_USERS: [&str; 3] = ["alice", "bob", "carol"];
/// As root, the first local user's uid (and gid); the others follow. Above the daemon identities
/// `postern init` hands out and outside Debian's allocation ranges.
const LOCAL_UID_BASE: u32 = 62101;
/// How long a client waits for a reply.
const REPLY_WAIT: Duration = Duration::from_secs(30);
/// How long a message may take from `250` to its mailbox on an idle instance.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

/// The tests of this file (`harness = false`: a root-only test run by another user is reported
/// as ignored, see `postern_tests::harness`).
const TESTS: &[harness::Test] = &[
    test(
        "a_virtual_user_gets_one_copy_with_trace_headers",
        a_virtual_user_gets_one_copy_with_trace_headers,
    ),
    test(
        "a_local_user_gets_one_copy_and_an_alias_of_three_gives_three",
        a_local_user_gets_one_copy_and_an_alias_of_three_gives_three,
    ),
    test(
        "unknown_users_are_refused_at_rcpt",
        unknown_users_are_refused_at_rcpt,
    ),
    test(
        "an_unwritable_mailbox_defers_and_is_delivered_on_the_back_off",
        an_unwritable_mailbox_defers_and_is_delivered_on_the_back_off,
    ),
    test(
        "past_the_lifetime_a_message_bounces_with_a_dsn",
        past_the_lifetime_a_message_bounces_with_a_dsn,
    ),
    test(
        "the_virtual_agent_runs_as_its_fixed_uid_without_capabilities",
        the_virtual_agent_runs_as_its_fixed_uid_without_capabilities,
    ),
    root_test(
        "a_local_delivery_child_runs_as_the_recipient",
        "unprivileged, every local user is the invoking user and the agent cannot change identity",
        a_local_delivery_child_runs_as_the_recipient,
    ),
    root_test(
        "the_real_daemons_hold_only_their_descriptors_while_they_serve",
        "a sandboxed daemon is not dumpable: only CAP_SYS_PTRACE may list its fds",
        the_real_daemons_hold_only_their_descriptors_while_they_serve,
    ),
    test(
        "after_a_reload_the_next_message_follows_a_changed_alias_and_mailbox_map",
        after_a_reload_the_next_message_follows_a_changed_alias_and_mailbox_map,
    ),
    test(
        "a_session_mid_data_across_a_reload_gets_its_250_and_is_delivered",
        a_session_mid_data_across_a_reload_gets_its_250_and_is_delivered,
    ),
    test(
        "qmgr_killed_at_random_points_loses_no_mail",
        qmgr_killed_at_random_points_loses_no_mail,
    ),
    test(
        "qmgr_killed_under_load_repeats_at_most_the_deliveries_in_flight",
        qmgr_killed_under_load_repeats_at_most_the_deliveries_in_flight,
    ),
    test(
        "the_virtual_agent_killed_at_random_points_loses_no_mail",
        the_virtual_agent_killed_at_random_points_loses_no_mail,
    ),
];

fn main() -> std::process::ExitCode {
    harness::run(TESTS)
}

// ---------------------------------------------------------------------------------------------
// Which daemons exist.

/// The daemons of a delivery instance: every one must be built (`postern init` would leave a
/// missing one out of master.cf; [`delivery_instance`] fails with the build command instead).
const ALL_DAEMONS: [&str; 7] = [
    "smtpd", "cleanup", "qmgr", "virtual", "local", "bounce", "proxymap",
];

// ---------------------------------------------------------------------------------------------
// The instance: local users, aliases, mailboxes.

/// A uid:gid pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ids {
    uid: u32,
    gid: u32,
}

/// The identity of local user `n` (index into [`LOCAL_USERS`]).
fn local_ids(n: usize) -> Ids {
    if is_root() {
        let id = LOCAL_UID_BASE + n as u32;
        Ids { uid: id, gid: id }
    } else {
        Ids {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }
}

/// An instance with local users, aliases and `settings`; `prepare` runs before the start (for
/// tables, mailboxes and files the test needs in place).
fn delivery_instance(
    name: &str,
    settings: &[(&str, &str)],
    prepare: impl FnOnce(&Instance),
) -> Instance {
    let mut all = vec![
        ("service_throttle_time", "1s"),
        ("smtpd_error_sleep_time", "0s"),
    ];
    all.extend_from_slice(settings);
    for program in ALL_DAEMONS {
        binary(program);
    }
    let inst = Instance::init(name, &all);
    let dir = inst.dir().to_path_buf();
    let home = dir.join("home");
    fs::create_dir(&home).expect("create the home base");
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    let mut passwd = String::new();
    let mut group = String::new();
    for (n, user) in LOCAL_USERS.iter().enumerate() {
        let ids = local_ids(n);
        let user_home = home.join(user);
        fs::create_dir(&user_home).unwrap();
        fs::set_permissions(&user_home, fs::Permissions::from_mode(0o700)).unwrap();
        chown(&user_home, ids);
        writeln!(
            passwd,
            "{user}:x:{}:{}:{user}:{}:/bin/sh",
            ids.uid,
            ids.gid,
            user_home.display()
        )
        .unwrap();
        writeln!(group, "{user}:x:{}:", ids.gid).unwrap();
    }
    // Commands and files named in alias tables run as this account (Postfix's default_privs).
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    fs::write(dir.join("passwd"), passwd).unwrap();
    fs::write(dir.join("group"), group).unwrap();
    fs::write(
        dir.join("aliases"),
        "# Aliases of the test instance.\n\
         postmaster: alice\n\
         team: alice, bob, carol\n",
    )
    .unwrap();
    inst.append(
        "main.cf",
        &format!(
            "local_passwd_file = {dir}/passwd\n\
             local_group_file = {dir}/group\n\
             local_home_base = {dir}/home\n\
             home_mailbox = Maildir/\n\
             alias_maps = hash:{dir}/aliases\n\
             alias_database = hash:{dir}/aliases\n",
            dir = dir.display()
        ),
    );
    prepare(&inst);
    inst.started()
}

fn chown(path: &Path, ids: Ids) {
    if is_root() {
        std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// The uid:gid of main.cf's `parameter` (`vmail_user = 61004:61004`).
fn identity(inst: &Instance, parameter: &str) -> Ids {
    let out = inst.postern(&["conf", parameter]);
    assert!(out.status.success(), "postern conf: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text
        .trim()
        .strip_prefix(&format!("{parameter} = "))
        .unwrap_or_else(|| panic!("postern conf {parameter}: {text:?}"));
    let (uid, gid) = value
        .split_once(':')
        .unwrap_or_else(|| panic!("{parameter} = {value:?}: not uid:gid"));
    Ids {
        uid: uid.parse().expect("a numeric uid"),
        gid: gid.parse().expect("a numeric gid"),
    }
}

/// The Maildir of the virtual mailbox `user` of `example.test`.
fn virtual_maildir(inst: &Instance, user: &str) -> PathBuf {
    inst.dir().join("mail/example.test").join(user)
}

fn local_maildir(inst: &Instance, user: &str) -> PathBuf {
    inst.dir().join("home").join(user).join("Maildir")
}

/// Makes `example.test/<user>` under the virtual mailbox base a directory of mode `mode`, owned
/// by the virtual agent's identity (mode 0 makes the mailbox unwritable for it).
fn make_virtual_mailbox_dir(inst: &Instance, user: &str, mode: u32) -> PathBuf {
    let vmail = identity(inst, "vmail_user");
    let domain = inst.dir().join("mail/example.test");
    if !domain.exists() {
        fs::create_dir_all(&domain).unwrap();
        fs::set_permissions(&domain, fs::Permissions::from_mode(0o700)).unwrap();
        chown(&domain, vmail);
    }
    let dir = domain.join(user);
    fs::create_dir(&dir).unwrap();
    chown(&dir, vmail);
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Mailboxes.

/// One delivered message file.
#[derive(Debug)]
struct Delivered {
    path: PathBuf,
    mode: u32,
    uid: u32,
    bytes: Vec<u8>,
}

impl Delivered {
    /// The header fields, unfolded, in order: (name, value).
    fn fields(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(&self.bytes);
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .split("\n\n")
            .next()
            .unwrap_or("");
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.to_owned(), value.trim().to_owned()));
            }
        }
        fields
    }

    fn field(&self, name: &str) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn contains(&self, needle: &str) -> bool {
        self.bytes
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// Header names in order, for a failure message.
    fn head(&self) -> String {
        self.fields()
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Every message of the Maildir `maildir` (`new/` and `cur/`), sorted by file name.
fn maildir_messages(maildir: &Path) -> Vec<Delivered> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            out.push(Delivered {
                path,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                bytes,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The messages of `maildir` that contain `token`.
fn with_token(maildir: &Path, token: &str) -> Vec<Delivered> {
    maildir_messages(maildir)
        .into_iter()
        .filter(|m| m.contains(token))
        .collect()
}

/// Waits until `count` messages with `token` are in `maildir`, then until the queue is empty
/// (the queue manager removes a file after the last result), and returns the messages then
/// present — so a duplicate made after the first copy arrived is seen.
fn await_delivery(inst: &Instance, maildir: &Path, token: &str, count: usize) -> Vec<Delivered> {
    let arrived = wait_until(DELIVERY_WAIT, || with_token(maildir, token).len() >= count);
    assert!(
        arrived,
        "{count} message(s) with {token} did not reach {} within {DELIVERY_WAIT:?}; there: {:?}\n\
         queue: {:?}\n{}",
        maildir.display(),
        with_token(maildir, token)
            .iter()
            .map(|m| &m.path)
            .collect::<Vec<_>>(),
        inst.queue_files(),
        queue_list(inst)
    );
    assert_queue_empties(inst);
    with_token(maildir, token)
}

fn assert_queue_empties(inst: &Instance) {
    let empty = wait_until(DELIVERY_WAIT, || inst.queue_files().is_empty());
    assert!(
        empty,
        "the queue did not empty: {:?}\n{}",
        inst.queue_files(),
        queue_list(inst)
    );
}

/// `postern queue list` as text (for failure messages and the deferral test).
fn queue_list(inst: &Instance) -> String {
    let out = inst.postern(&["queue", "list"]);
    format!(
        "postern queue list: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Checks one delivered copy: mode 0600, owner `uid`, `Return-Path:` first and `Delivered-To:`
/// before the trace fields (Postfix's order), and the `Received:` header smtpd added.
fn check_copy(m: &Delivered, sender: &str, recipient: &str, uid: u32) {
    let head = m.head();
    assert_eq!(m.mode, 0o600, "{}: mode {:04o}", m.path.display(), m.mode);
    assert_eq!(m.uid, uid, "{}: owner uid", m.path.display());
    let fields = m.fields();
    assert!(fields.len() >= 3, "{}: header\n{head}", m.path.display());
    assert_eq!(
        (fields[0].0.as_str(), fields[0].1.as_str()),
        ("Return-Path", format!("<{sender}>").as_str()),
        "{}: header\n{head}",
        m.path.display()
    );
    // Postfix's order: Return-Path, (X-Original-To,) Delivered-To, then the trace fields.
    let delivered_to = fields
        .iter()
        .take_while(|(n, _)| n != "Received")
        .find(|(n, _)| n == "Delivered-To")
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| {
            panic!(
                "{}: no Delivered-To: before Received:\n{head}",
                m.path.display()
            )
        });
    assert!(
        delivered_to.eq_ignore_ascii_case(recipient),
        "{}: Delivered-To {delivered_to} is not {recipient}\n{head}",
        m.path.display(),
    );
    let received = m
        .field("Received")
        .unwrap_or_else(|| panic!("{}: no Received:\n{head}", m.path.display()));
    assert!(
        received.contains(&format!("by {LOCAL_DOMAIN} (Postern)")),
        "{}: Received: {received}",
        m.path.display()
    );
}

/// A unique token for a test's message.
fn token(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("tok-{test}-{}-{nanos}", std::process::id())
}

fn message(from: &str, to: &str, subject: &str, token: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nX-Test-Token: {token}\r\n\r\n\
         Body of {subject}.\r\n.a line with a leading dot\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// Sends one message with lettre; returns the final reply's text.
fn lettre_send(port: u16, from: &str, to: &str, subject: &str, token: &str) -> String {
    let email = Message::builder()
        .from(from.parse::<LettreMailbox>().unwrap())
        .to(to.parse::<LettreMailbox>().unwrap())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(format!("Token {token}.\n"))
        .unwrap();
    let transport = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(port)
        .hello_name(ClientId::Domain(HELO.to_owned()))
        .timeout(Some(REPLY_WAIT))
        .build();
    let response = transport.send(&email).expect("lettre send");
    assert_eq!(response.code().to_string(), "250");
    response.message().collect::<Vec<_>>().join(" ")
}

/// Sends one message with Python's smtplib (tests/python/smtp_session.py); returns the data
/// reply.
fn smtplib_send(inst: &Instance, mail: &str, rcpt: &str, text: &str) -> String {
    let path = inst
        .dir()
        .join(format!("smtplib-{}.eml", std::process::id()));
    fs::write(&path, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/smtp_session.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(inst.port().to_string())
        .arg(HELO)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3 (scripts/setup.sh installs it)");
    let steps = format!(
        "ehlo\nmail {mail}\nrcpt {rcpt}\ndata {}\nquit\n",
        path.display()
    );
    child
        .stdin
        .take()
        .expect("python's stdin")
        .write_all(steps.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "smtp_session.py: {}", show(&out));
    let data = stdout
        .lines()
        .find(|l| l.starts_with("data\t"))
        .unwrap_or_else(|| panic!("no data step:\n{stdout}"));
    assert!(data.starts_with("data\t250\t"), "smtplib:\n{stdout}");
    data.to_owned()
}

/// Sends `path` with curl; returns curl's transcript line with the final reply.
fn curl_send(port: u16, from: &str, to: &str, path: &Path) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "60", "--url"])
        .arg(format!("smtp://127.0.0.1:{port}/{HELO}"))
        .args(["--mail-from", from, "--mail-rcpt", to, "-T"])
        .arg(path)
        .output()
        .expect("run curl (scripts/setup.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl failed:\n{stderr}");
    stderr
        .lines()
        .find(|l| l.contains("queued as"))
        .unwrap_or_else(|| panic!("no queued reply in curl's transcript:\n{stderr}"))
        .to_owned()
}

/// The queue id in a `250 2.0.0 Ok: queued as ID` reply (or a transcript line holding one).
fn queue_id(reply: &str) -> String {
    reply
        .split("queued as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no queue id in {reply:?}"))
        .to_owned()
}

/// A raw SMTP session: the bytes on the wire are the test's.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(REPLY_WAIT))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut c = Client { stream, reader };
        let greeting = c.reply()?;
        if !greeting.starts_with("220 ") {
            return Err(std::io::Error::other(format!("greeting {greeting}")));
        }
        let ehlo = c.cmd(&format!("EHLO {HELO}"))?;
        if !ehlo.starts_with("250") {
            return Err(std::io::Error::other(format!("EHLO: {ehlo}")));
        }
        Ok(c)
    }

    fn cmd(&mut self, line: &str) -> std::io::Result<String> {
        self.stream.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// One reply, its lines joined by `\n`.
    fn reply(&mut self) -> std::io::Result<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other(format!("closed after {lines:?}")));
            }
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Ok(lines.join("\n"));
            }
        }
    }

    /// One transaction; the final reply, or the first reply that was not the expected one.
    fn send(&mut self, from: &str, to: &str, text: &str) -> std::io::Result<String> {
        for (command, want) in [
            (format!("MAIL FROM:<{from}>"), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_owned(), "354"),
        ] {
            let reply = self.cmd(&command)?;
            if !reply.starts_with(want) {
                return Ok(reply);
            }
        }
        // RFC 5321 dot-stuffing; the text ends with CRLF.
        let mut stuffed = String::with_capacity(text.len() + 8);
        for line in text.split_inclusive("\r\n") {
            if line.starts_with('.') {
                stuffed.push('.');
            }
            stuffed.push_str(line);
        }
        self.stream.write_all(stuffed.as_bytes())?;
        self.stream.write_all(b".\r\n")?;
        self.reply()
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// `(ppid, uid line, CapEff, CapPrm)` of a process from `/proc/PID/status`.
#[derive(Debug, Clone)]
struct Status {
    ppid: i32,
    /// Real, effective, saved, filesystem.
    uids: Vec<u32>,
    cap_eff: String,
    cap_prm: String,
    name: String,
}

fn status(pid: i32) -> Option<Status> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    Some(Status {
        ppid: field("PPid:")?.parse().ok()?,
        uids: field("Uid:")?
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect(),
        cap_eff: field("CapEff:")?,
        cap_prm: field("CapPrm:")?,
        name: field("Name:")?,
    })
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live children of `parent` whose program is `role` (`argv[0]`'s file name or the command
/// name), sorted.
fn children(parent: i32, role: &str) -> Vec<i32> {
    let mut found: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&pid| {
            let Some(st) = status(pid) else { return false };
            if st.ppid != parent {
                return false;
            }
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
            let argv0 = fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .and_then(|c| c.split(|&b| b == 0).next().map(<[u8]>::to_vec))
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .unwrap_or_default();
            !zombie
                && (Path::new(&argv0).file_name().and_then(|n| n.to_str()) == Some(role)
                    || st.name == role)
        })
        .collect();
    found.sort_unstable();
    found
}

/// Every live descendant of `ancestor`.
fn descendants(ancestor: i32) -> Vec<i32> {
    let parents: BTreeMap<i32, i32> = all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, status(pid)?.ppid)))
        .collect();
    parents
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                match parents.get(&p) {
                    Some(&pp) if pp == ancestor => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

fn master_pid(inst: &Instance) -> i32 {
    let path = inst.queue_dir().join("pid/master.pid");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Delivery to each kind of mailbox.

fn a_virtual_user_gets_one_copy_with_trace_headers() {
    let inst = delivery_instance("virtual", &[], |_| {});
    let tok = token("virtual");
    let reply = lettre_send(
        inst.port(),
        "Sender <sender@example.org>",
        &format!("User <{VIRTUAL_USER}>"),
        "to a virtual user",
        &tok,
    );
    let id = queue_id(&reply);
    let copies = await_delivery(&inst, &virtual_maildir(&inst, "user"), &tok, 1);
    assert_eq!(copies.len(), 1, "one copy: {copies:?}");
    let vmail = identity(&inst, "vmail_user");
    check_copy(&copies[0], "sender@example.org", VIRTUAL_USER, vmail.uid);
    assert!(
        inst.log().contains(&id),
        "the log never names queue id {id}"
    );
}

fn a_local_user_gets_one_copy_and_an_alias_of_three_gives_three() {
    let inst = delivery_instance("local", &[], |_| {});
    let alice = format!("alice@{LOCAL_DOMAIN}");

    // One message to alice, sent with smtplib.
    let tok = token("local");
    smtplib_send(
        &inst,
        "sender@example.org",
        &alice,
        &message("sender@example.org", &alice, "to alice", &tok),
    );
    let copies = await_delivery(&inst, &local_maildir(&inst, "alice"), &tok, 1);
    assert_eq!(copies.len(), 1, "one copy: {copies:?}");
    check_copy(&copies[0], "sender@example.org", &alice, local_ids(0).uid);

    // One message to the alias team (alice, bob, carol), sent with curl: three copies.
    let tok = token("alias");
    let team = format!("team@{LOCAL_DOMAIN}");
    let path = inst.dir().join("alias.eml");
    fs::write(&path, message("sender@example.org", &team, "to team", &tok)).unwrap();
    curl_send(inst.port(), "sender@example.org", &team, &path);
    for (n, user) in LOCAL_USERS.iter().enumerate() {
        let copies = await_delivery(&inst, &local_maildir(&inst, user), &tok, 1);
        assert_eq!(
            copies.len(),
            1,
            "{user}: one copy of the alias's: {copies:?}"
        );
        let m = &copies[0];
        assert_eq!(m.mode, 0o600, "{}: mode {:04o}", m.path.display(), m.mode);
        assert_eq!(m.uid, local_ids(n).uid, "{}: owner", m.path.display());
        assert_eq!(
            m.field("Return-Path").as_deref(),
            Some("<sender@example.org>"),
            "{}:\n{}",
            m.path.display(),
            m.head()
        );
        // Postfix's local writes the address it delivers to; after alias expansion either
        // the alias or the user's own address names this delivery.
        let delivered_to = m.field("Delivered-To").unwrap_or_default();
        assert!(
            delivered_to.eq_ignore_ascii_case(&team)
                || delivered_to.eq_ignore_ascii_case(&format!("{user}@{LOCAL_DOMAIN}")),
            "{}: Delivered-To {delivered_to:?}\n{}",
            m.path.display(),
            m.head()
        );
        assert!(m.field("Received").is_some(), "{}", m.head());
    }
    let total: usize = LOCAL_USERS
        .iter()
        .map(|u| with_token(&local_maildir(&inst, u), &tok).len())
        .sum();
    assert_eq!(total, 3, "three copies of the alias's message in all");
}

// ---------------------------------------------------------------------------------------------
// Reload: the daemons that read the old tables finish and exit, new ones read the new tables.

/// `postern reload`, which must succeed.
fn reload(inst: &Instance) {
    let out = inst.postern(&["reload"]);
    assert!(out.status.success(), "postern reload: {}", show(&out));
}

fn after_a_reload_the_next_message_follows_a_changed_alias_and_mailbox_map() {
    let inst = delivery_instance("reload-tables", &[], |inst| {
        inst.append("aliases", "sales: alice\n");
    });
    let sales = format!("sales@{LOCAL_DOMAIN}");
    // Before: sales is alice. This leaves smtpd, cleanup, qmgr and local running, each with the
    // tables it read when it started.
    let tok = token("reload-before");
    lettre_send(inst.port(), "sender@example.org", &sales, "before", &tok);
    await_delivery(&inst, &local_maildir(&inst, "alice"), &tok, 1);

    let aliases = inst.dir().join("aliases");
    let text = fs::read_to_string(&aliases).unwrap();
    fs::write(&aliases, text.replace("sales: alice", "sales: bob")).unwrap();
    inst.append("vmailbox", "new@example.test  example.test/new/\n");
    reload(&inst);

    let tok = token("reload-after");
    lettre_send(inst.port(), "sender@example.org", &sales, "after", &tok);
    let copies = await_delivery(&inst, &local_maildir(&inst, "bob"), &tok, 1);
    assert_eq!(copies.len(), 1, "one copy for bob: {copies:?}");
    assert!(
        with_token(&local_maildir(&inst, "alice"), &tok).is_empty(),
        "alice got the message sent after the alias changed to bob"
    );
    // A mailbox added to virtual_mailbox_maps is accepted at RCPT and delivered.
    let tok = token("reload-new-mailbox");
    lettre_send(
        inst.port(),
        "sender@example.org",
        "new@example.test",
        "to the new mailbox",
        &tok,
    );
    await_delivery(&inst, &virtual_maildir(&inst, "new"), &tok, 1);
}

fn a_session_mid_data_across_a_reload_gets_its_250_and_is_delivered() {
    let inst = delivery_instance("reload-mid-data", &[], |_| {});
    let stream = TcpStream::connect(("127.0.0.1", inst.port())).expect("connect to smtpd");
    stream.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let reply = |reader: &mut BufReader<TcpStream>| -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read a reply line");
            assert!(
                !line.is_empty(),
                "the server closed the session; so far: {all}"
            );
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    assert!(reply(&mut reader).starts_with("220 "));
    for (cmd, code) in [
        (format!("EHLO {HELO}"), "250"),
        ("MAIL FROM:<sender@example.org>".to_owned(), "250"),
        (format!("RCPT TO:<{VIRTUAL_USER}>"), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let r = reply(&mut reader);
        assert!(r.starts_with(code), "{cmd}: {r}");
    }
    let tok = token("reload-mid-data");
    let text = message("sender@example.org", VIRTUAL_USER, "across a reload", &tok);
    let (head, tail) = text.split_at(text.len() / 2);
    writer.write_all(head.as_bytes()).unwrap();
    writer.flush().unwrap();
    reload(&inst);
    writer.write_all(tail.as_bytes()).unwrap();
    writer.write_all(b".\r\n").unwrap();
    let r = reply(&mut reader);
    assert!(
        r.starts_with("250 "),
        "end of data after the reload: {r}\n{}",
        inst.log()
    );
    writer.write_all(b"QUIT\r\n").unwrap();
    let _ = reply(&mut reader);
    let copies = await_delivery(&inst, &virtual_maildir(&inst, "user"), &tok, 1);
    assert_eq!(copies.len(), 1, "one copy: {copies:?}");
}

fn unknown_users_are_refused_at_rcpt() {
    let inst = delivery_instance("unknown", &[], |_| {});
    let mut c = Client::connect(inst.port()).expect("connect");
    assert!(c
        .cmd("MAIL FROM:<a@example.org>")
        .unwrap()
        .starts_with("250"));
    let refused = [
        (
            "nosuch@example.test",
            "550 5.1.1 <nosuch@example.test>: Recipient address rejected: User unknown in virtual mailbox table",
        ),
        (
            "nosuch@localhost.localdomain",
            "550 5.1.1 <nosuch@localhost.localdomain>: Recipient address rejected: User unknown in local recipient table",
        ),
    ];
    for (address, want) in refused {
        let reply = c.cmd(&format!("RCPT TO:<{address}>")).unwrap();
        assert_eq!(reply, want, "RCPT TO:<{address}>");
    }
    for known in [
        VIRTUAL_USER.to_owned(),
        format!("alice@{LOCAL_DOMAIN}"),
        format!("team@{LOCAL_DOMAIN}"),
        format!("postmaster@{LOCAL_DOMAIN}"),
    ] {
        let reply = c.cmd(&format!("RCPT TO:<{known}>")).unwrap();
        assert!(reply.starts_with("250"), "RCPT TO:<{known}>: {reply}");
    }
    let reply = c.cmd("QUIT").unwrap();
    assert!(reply.starts_with("221"), "{reply}");
}

// ---------------------------------------------------------------------------------------------
// Deferral, retry, lifetime.

/// Settings of the retry tests: seconds instead of Postfix's minutes.
const FAST_RETRY: [(&str, &str); 3] = [
    ("minimal_backoff_time", "2s"),
    ("maximal_backoff_time", "4s"),
    ("queue_run_delay", "1s"),
];

/// Log lines that record a delivery attempt of queue id `id` with `status=WORD`.
fn attempts(inst: &Instance, id: &str, word: &str) -> Vec<String> {
    inst.log()
        .lines()
        .filter(|l| l.contains(id) && l.contains(&format!("status={word}")))
        .map(str::to_owned)
        .collect()
}

/// The `dsn=X.Y.Z` of a qmgr log line.
fn dsn_of(line: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("dsn="))
        .map(|s| s.trim_end_matches(',').to_owned())
}

fn an_unwritable_mailbox_defers_and_is_delivered_on_the_back_off() {
    let mut mailbox = PathBuf::new();
    let inst = delivery_instance("deferral", &FAST_RETRY, |inst| {
        mailbox = make_virtual_mailbox_dir(inst, "user", 0o000);
    });
    let tok = token("deferral");
    let reply = lettre_send(
        inst.port(),
        "sender@example.org",
        VIRTUAL_USER,
        "deferred",
        &tok,
    );
    let id = queue_id(&reply);

    // The first attempt fails with a 4.x.x status and the message waits in deferred/.
    let deferred_file = inst.queue_dir().join("deferred");
    let in_deferred = || {
        inst.queue_files()
            .iter()
            .any(|p| p.starts_with(&deferred_file) && p.ends_with(&id))
    };
    assert!(
        wait_until(DELIVERY_WAIT, in_deferred),
        "{id} never reached deferred/: {:?}\n{}",
        inst.queue_files(),
        queue_list(&inst)
    );
    let first = attempts(&inst, &id, "deferred");
    assert!(!first.is_empty(), "no deferral logged for {id}");
    let dsn = dsn_of(&first[0]).unwrap_or_default();
    assert!(dsn.starts_with("4."), "a temporary status: {}", first[0]);

    // The queue listing shows it with its reason, in Postfix's mailq layout.
    let out = inst.postern(&["queue", "list"]);
    assert!(out.status.success(), "{}", show(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = listing.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{listing}"));
    let reason = lines.get(at + 1).copied().unwrap_or("");
    assert!(
        reason.trim_start().starts_with('(') && reason.trim_end().ends_with(')'),
        "no reason line after {id}:\n{listing}"
    );
    assert!(
        lines.get(at + 2).is_some_and(|l| l.trim() == VIRTUAL_USER),
        "recipient after the reason:\n{listing}"
    );

    // A second attempt comes on the back-off, and fails again.
    let second_seen = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || attempts(&inst, &id, "deferred")
            .len()
            >= 2),
        "no second attempt within 15 s (maximal_backoff_time 4s, queue_run_delay 1s):\n{}",
        attempts(&inst, &id, "deferred").join("\n")
    );
    let gap = second_seen.elapsed();
    // Bound: the back-off (at most 4 s) plus a scan interval (1 s) plus a second of slack.
    assert!(
        gap <= Duration::from_secs(6),
        "second attempt after {gap:?}"
    );

    // The fault is removed: the next attempt delivers.
    fs::set_permissions(&mailbox, fs::Permissions::from_mode(0o700)).unwrap();
    let fixed = Instant::now();
    let copies = await_delivery(&inst, &virtual_maildir(&inst, "user"), &tok, 1);
    let delay = fixed.elapsed();
    assert_eq!(copies.len(), 1, "one copy: {copies:?}");
    check_copy(
        &copies[0],
        "sender@example.org",
        VIRTUAL_USER,
        identity(&inst, "vmail_user").uid,
    );
    assert!(
        delay <= Duration::from_secs(4 + 1 + 3),
        "delivered {delay:?} after the fault was removed (back-off at most 4 s, scans every 1 s)"
    );
    let tries = attempts(&inst, &id, "deferred").len();
    assert_eq!(
        attempts(&inst, &id, "sent").len(),
        1,
        "one successful attempt"
    );
    eprintln!(
        "deferral: {tries} deferred attempts, then delivered {:.1} s after the fault was removed",
        delay.as_secs_f64()
    );
}

fn past_the_lifetime_a_message_bounces_with_a_dsn() {
    let mut settings = FAST_RETRY.to_vec();
    settings.push(("maximal_queue_lifetime", "10s"));
    let inst = delivery_instance("lifetime", &settings, |inst| {
        inst.append("vmailbox", "stuck@example.test  example.test/stuck/\n");
        make_virtual_mailbox_dir(inst, "stuck", 0o000);
    });
    let tok = token("lifetime");
    let sent = Instant::now();
    let reply = smtplib_send(
        &inst,
        VIRTUAL_USER,
        "stuck@example.test",
        &message(VIRTUAL_USER, "stuck@example.test", "never delivered", &tok),
    );
    let id = queue_id(&reply);

    // The report comes back to the sender's own mailbox.
    let inbox = virtual_maildir(&inst, "user");
    let arrived = wait_until(Duration::from_secs(40), || {
        !with_token(&inbox, &tok).is_empty()
    });
    let deferrals = attempts(&inst, &id, "deferred");
    assert!(
        arrived,
        "no report in {} within 40 s; deferrals:\n{}\n{}",
        inbox.display(),
        deferrals.join("\n"),
        queue_list(&inst)
    );
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "bounced after {waited:?}, before the 10 s lifetime"
    );
    assert_queue_empties(&inst);
    let reports = with_token(&inbox, &tok);
    assert_eq!(reports.len(), 1, "one report: {reports:?}");
    let report = &reports[0];
    assert_eq!(
        report.field("Return-Path").as_deref(),
        Some("<>"),
        "a report has the null sender:\n{}",
        report.head()
    );

    // Python's email package reads it as an RFC 3464 report.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/dsn_report.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&report.path)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "dsn_report.py: {}", show(&out));
    let parsed = String::from_utf8_lossy(&out.stdout).into_owned();
    let facts: Vec<Vec<&str>> = parsed.lines().map(|l| l.split('\t').collect()).collect();
    let fact = |key: &[&str]| -> Option<String> {
        facts
            .iter()
            .find(|f| f.len() > key.len() && f[..key.len()] == *key)
            .map(|f| f[key.len()].to_owned())
    };
    assert_eq!(
        fact(&["content-type"]).as_deref(),
        Some("multipart/report"),
        "{parsed}"
    );
    assert_eq!(
        fact(&["report-type"]).as_deref(),
        Some("delivery-status"),
        "{parsed}"
    );
    let recipient = |name: &str| fact(&["recipient", "0", name]).unwrap_or_default();
    assert!(
        recipient("Final-Recipient").ends_with("stuck@example.test"),
        "{parsed}"
    );
    assert_eq!(recipient("Action"), "failed", "{parsed}");
    // The lifetime ends the retries: the report carries the last temporary status.
    let status = recipient("Status");
    let last_dsn = deferrals.last().and_then(|l| dsn_of(l)).unwrap_or_default();
    assert!(status.starts_with("4."), "Status {status:?}:\n{parsed}");
    assert_eq!(
        status, last_dsn,
        "the report's Status is the last deferral's:\n{parsed}"
    );
    eprintln!(
        "lifetime: bounced after {:.1} s and {} attempts; report:\n{parsed}",
        waited.as_secs_f64(),
        deferrals.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Identities.

fn the_virtual_agent_runs_as_its_fixed_uid_without_capabilities() {
    let inst = delivery_instance("videntity", &[], |_| {});
    let tok = token("videntity");
    lettre_send(
        inst.port(),
        "sender@example.org",
        VIRTUAL_USER,
        "identity",
        &tok,
    );
    await_delivery(&inst, &virtual_maildir(&inst, "user"), &tok, 1);
    // The agent that delivered stays for max_idle, waiting for the next request.
    let master = master_pid(&inst);
    let agents = children(master, "virtual");
    assert!(!agents.is_empty(), "no virtual process after a delivery");
    let vmail = identity(&inst, "vmail_user");
    for pid in agents {
        let Some(st) = status(pid) else { continue };
        assert_eq!(st.uids, vec![vmail.uid; 4], "virtual {pid}: {st:?}");
        assert_eq!(st.cap_eff, "0000000000000000", "virtual {pid}: {st:?}");
        assert_eq!(st.cap_prm, "0000000000000000", "virtual {pid}: {st:?}");
        eprintln!("virtual {pid}: uid {:?}, CapEff {}", st.uids, st.cap_eff);
    }
}

fn a_local_delivery_child_runs_as_the_recipient() {
    let inst = delivery_instance("lidentity", &[], |inst| {
        // bob's .forward runs a slow command as bob: the delivery child lives long enough to
        // be seen. `exec`: the shell becomes the command, so the process that is seen is the
        // one the agent started. `/bin/true &&` first: the shell must be able to start a
        // program of its own (dash uses vfork) under the agent's seccomp filter, or sleep never
        // runs.
        let forward = inst.dir().join("home/bob/.forward");
        fs::write(&forward, "\"|/bin/true && exec sleep 4\"\n").unwrap();
        fs::set_permissions(&forward, fs::Permissions::from_mode(0o644)).unwrap();
        chown(&forward, local_ids(1));
    });
    let bob = local_ids(1);
    let tok = token("lidentity");
    let to = format!("bob@{LOCAL_DOMAIN}");
    smtplib_send(
        &inst,
        "sender@example.org",
        &to,
        &message("sender@example.org", &to, "slow", &tok),
    );
    let master = master_pid(&inst);
    let mut seen: Vec<(i32, Status)> = Vec::new();
    let found = wait_until(DELIVERY_WAIT, || {
        seen = children(master, "local")
            .into_iter()
            .flat_map(descendants)
            .filter_map(|pid| Some((pid, status(pid)?)))
            .collect();
        seen.iter().any(|(_, st)| st.uids.first() == Some(&bob.uid))
    });
    assert!(
        found,
        "no process of the local agent ran as bob ({}); its descendants: {seen:?}",
        bob.uid
    );
    for (pid, st) in seen
        .iter()
        .filter(|(_, st)| st.uids.first() == Some(&bob.uid))
    {
        assert_eq!(st.uids, vec![bob.uid; 4], "{pid}: {st:?}");
        assert_eq!(st.cap_eff, "0000000000000000", "{pid}: {st:?}");
        assert_eq!(st.cap_prm, "0000000000000000", "{pid}: {st:?}");
        eprintln!(
            "local delivery child {pid} ({}): uid {:?}, CapEff {}",
            st.name, st.uids, st.cap_eff
        );
    }
    assert_queue_empties(&inst);
}

// ---------------------------------------------------------------------------------------------
// Crash safety.

/// Kills that must happen for a crash test to mean anything.
const MIN_KILLS: usize = 3;

/// The mail flow a crash test kills into.
#[derive(Clone, Copy)]
struct Load {
    /// Messages sent.
    messages: usize,
    /// Concurrent client threads, each with one session.
    clients: usize,
    /// Message `i` starts no earlier than `i` times this after the first: the clients' pace, so
    /// the flow lasts several seconds and the kills (the master restarts a killed process after
    /// `service_throttle_time`, 1 s) land while messages are being delivered.
    spacing: Duration,
    /// The concurrency limit of the one destination (`default_destination_concurrency_limit`,
    /// which the virtual transport follows): no more deliveries
    /// than this are in flight when a kill comes, and a kill repeats at most these.
    concurrency: usize,
}

/// A paced flow: 200 messages over 8 s, Postfix's default destination concurrency (20).
const PACED: Load = Load {
    messages: 200,
    clients: 4,
    spacing: Duration::from_millis(40),
    concurrency: 20,
};

/// A flow near what the instance can take (1500 messages over 7.5 s, eight sessions), five
/// deliveries at a time: the agents' results arrive while qmgr admits and dispatches, which is
/// when a kill finds finished deliveries not yet recorded.
const LOADED: Load = Load {
    messages: 1500,
    clients: 8,
    spacing: Duration::from_millis(5),
    concurrency: 5,
};
/// The longest the queue may take to drain after the restart.
const DRAIN_WAIT: Duration = Duration::from_secs(40);

fn seed() -> u64 {
    std::env::var("POSTERN_DELIVERY_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id())
        })
}

fn qmgr_killed_at_random_points_loses_no_mail() {
    crash_test("qmgr", PACED);
}

fn qmgr_killed_under_load_repeats_at_most_the_deliveries_in_flight() {
    crash_test("qmgr", LOADED);
}

fn the_virtual_agent_killed_at_random_points_loses_no_mail() {
    crash_test("virtual", PACED);
}

fn crash_test(role: &'static str, load: Load) {
    let Load {
        messages,
        clients,
        spacing,
        concurrency,
    } = load;
    let seed = seed();
    let started = Instant::now();
    eprintln!("crash ({role}): seed {seed:016x} (POSTERN_DELIVERY_SEED replays the kill plan)");
    let concurrency_value = concurrency.to_string();
    let inst = delivery_instance(
        &format!("crash-{role}-{messages}"),
        &[
            ("minimal_backoff_time", "1s"),
            ("maximal_backoff_time", "2s"),
            ("queue_run_delay", "1s"),
            ("smtpd_timeout", "10s"),
            (
                "default_destination_concurrency_limit",
                concurrency_value.as_str(),
            ),
        ],
        |_| {},
    );
    let mut inst = inst;
    let master = master_pid(&inst);
    let maildir = virtual_maildir(&inst, "user");

    // Clients: 4 threads, each its share of the messages over one session (a new one if it
    // breaks). Accepted tokens are those that got 250 after the text.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let flowing = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..clients)
        .map(|c| {
            let (accepted, refused) = (accepted.clone(), refused.clone());
            let port = inst.port();
            let first = Instant::now();
            thread::spawn(move || {
                let mut session: Option<Client> = None;
                for i in (c..messages).step_by(clients) {
                    // Pacing, not synchronisation: nothing to wait for but the clock.
                    let slot = first + spacing * i as u32;
                    if let Some(early) = slot.checked_duration_since(Instant::now()) {
                        thread::sleep(early);
                    }
                    let tok = format!("crash-{seed:016x}-{i:03}");
                    let text = message("sender@example.org", VIRTUAL_USER, &tok, &tok);
                    let client = match session.as_mut() {
                        Some(s) => s,
                        None => match Client::connect(port) {
                            Ok(s) => session.insert(s),
                            Err(e) => {
                                refused.lock().unwrap().push(format!("{tok}: connect: {e}"));
                                continue;
                            }
                        },
                    };
                    match client.send("sender@example.org", VIRTUAL_USER, &text) {
                        Ok(r) if r.starts_with("250") => accepted.lock().unwrap().push(tok),
                        Ok(r) => {
                            refused.lock().unwrap().push(format!("{tok}: {r}"));
                            let _ = client.cmd("RSET");
                        }
                        Err(e) => {
                            refused.lock().unwrap().push(format!("{tok}: {e}"));
                            session = None;
                        }
                    }
                }
                if let Some(mut s) = session {
                    let _ = s.cmd("QUIT");
                }
            })
        })
        .collect();

    // The killer: random pauses (the kill points), then SIGKILL to a random live process of
    // the role, for as long as the clients send and the queue is not yet drained.
    let killer = {
        let flowing = flowing.clone();
        let mut rng = Rng(seed);
        thread::spawn(move || {
            let mut kills: Vec<(f64, i32)> = Vec::new();
            let mut misses = 0usize;
            let t0 = Instant::now();
            while flowing.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(150 + rng.below(700)));
                let live = children(master, role);
                if live.is_empty() {
                    misses += 1;
                    continue;
                }
                let pid = live[rng.below(live.len() as u64) as usize];
                if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    kills.push((t0.elapsed().as_secs_f64(), pid));
                }
            }
            (kills, misses)
        })
    };
    for c in clients {
        c.join().expect("a client thread panicked");
    }
    // Keep killing while the first deliveries are still being made, then stop.
    let backlog_seen = wait_until(Duration::from_secs(5), || {
        with_token(&maildir, &format!("crash-{seed:016x}-")).len() >= messages / 2
    });
    flowing.store(false, Ordering::Relaxed);
    let (kills, misses) = killer.join().expect("the killer panicked");
    let client_phase = started.elapsed();

    // The restart: stop and start the whole instance, so qmgr's start-up recovery runs too.
    let stop = inst.stop();
    assert!(stop.status.success(), "postern stop: {}", show(&stop));
    let start = inst.start_master();
    assert!(start.status.success(), "postern start: {}", show(&start));

    let accepted = accepted.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    let count_all = || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for m in maildir_messages(&maildir) {
            let text = String::from_utf8_lossy(&m.bytes);
            if let Some(tok) = text.lines().find_map(|l| l.strip_prefix("X-Test-Token: ")) {
                *counts.entry(tok.trim().to_owned()).or_default() += 1;
            }
        }
        counts
    };
    let drained = wait_until(DRAIN_WAIT, || {
        inst.queue_files().is_empty() && {
            let counts = count_all();
            accepted.iter().all(|t| counts.contains_key(t))
        }
    });
    let counts = count_all();
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|t| !counts.contains_key(*t))
        .collect();
    let duplicates: Vec<(&String, usize)> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(t, &n)| (t, n))
        .collect();
    let extra_copies: usize = duplicates.iter().map(|(_, n)| n - 1).sum();
    let unaccepted: Vec<&String> = counts.keys().filter(|t| !accepted.contains(t)).collect();
    let corrupt = fs::read_dir(inst.queue_dir().join("corrupt"))
        .map(|d| d.count())
        .unwrap_or(0);
    let log = inst.log();
    let agent_deferrals = log
        .lines()
        .filter(|l| l.contains("status=deferred"))
        .count();
    let report = format!(
        "crash ({role}), seed {seed:016x}: {} of {messages} accepted, {} refused {refused:?}\n\
         kills ({}; {misses} times no {role} process was there): {kills:?}\n\
         backlog half delivered while killing: {backlog_seen}\n\
         delivered: {} distinct accepted messages, {} duplicated ({extra_copies} extra copies, \
         {:.2} per kill, at most {concurrency} in flight at each): {duplicates:?}\n\
         delivered without a 250: {unaccepted:?}\n\
         missing: {missing:?}\n\
         deferred attempts logged: {agent_deferrals}; files in corrupt/: {corrupt}; queue left: {:?}\n\
         client phase {:.1} s, whole test {:.1} s",
        accepted.len(),
        refused.len(),
        kills.len(),
        accepted.len() - missing.len(),
        duplicates.len(),
        extra_copies as f64 / kills.len().max(1) as f64,
        inst.queue_files(),
        client_phase.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    eprintln!("{report}");
    eprintln!(
        "duplicates: a copy is made twice when the {role} kill falls after the agent renamed the \
         message into new/ and before qmgr appended the result to the queue file; the retry (or \
         the recovery of active/ at start-up) delivers it again. That is the at-least-once \
         promise; each kill can duplicate at most the deliveries then in flight."
    );
    assert!(
        drained,
        "{report}\nthe queue did not drain within {DRAIN_WAIT:?}"
    );
    assert!(missing.is_empty(), "{report}\naccepted messages lost");
    assert_eq!(corrupt, 0, "{report}\nqueue files moved to corrupt/");
    assert!(
        kills.len() >= MIN_KILLS,
        "{report}\nfewer than {MIN_KILLS} kills: the test proves little"
    );
    assert!(
        accepted.len() >= messages * 9 / 10,
        "{report}\nintake refused many messages though only {role} was killed"
    );
    assert!(
        unaccepted.is_empty(),
        "{report}\nmessages delivered that no client saw accepted (only {role} was killed)"
    );
    assert!(
        extra_copies <= kills.len() * concurrency,
        "{report}\nmore duplicates than deliveries in flight at the kills"
    );
}

// ---------------------------------------------------------------------------------------------
// Descriptor hygiene of the real daemons.

/// What one of a process's descriptors refers to, from `/proc/PID/fd`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Pipe(u64),
    Socket(u64),
    Path(PathBuf),
    /// `anon_inode:...` and anything else that is neither a path nor a pipe nor a socket.
    Other(String),
}

/// The descriptors of `pid`: fd number and target.
fn descriptors(pid: i32) -> BTreeMap<i32, Target> {
    let dir = format!("/proc/{pid}/fd");
    let listing = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let mut fds = BTreeMap::new();
    for entry in listing.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A descriptor closed between the listing and the readlink is simply gone.
        let Ok(link) = fs::read_link(entry.path()) else {
            continue;
        };
        let text = link.to_string_lossy().into_owned();
        let inode = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
        };
        let target = if let Some(inode) = inode("pipe:[") {
            Target::Pipe(inode)
        } else if let Some(inode) = inode("socket:[") {
            Target::Socket(inode)
        } else if text.starts_with('/') {
            Target::Path(link)
        } else {
            Target::Other(text)
        };
        fds.insert(fd, target);
    }
    fds
}

/// A TCP socket from `/proc/net/tcp`: local port and whether it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tcp {
    local_port: u16,
    listening: bool,
}

/// Every TCP socket of this network namespace by inode (`/proc/net/tcp` and `tcp6`).
fn tcp_sockets() -> BTreeMap<u64, Tcp> {
    let mut sockets = BTreeMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (Some(local_port), Ok(inode)) = (port, inode.parse::<u64>()) {
                sockets.insert(
                    inode,
                    Tcp {
                        local_port,
                        listening: *state == "0A",
                    },
                );
            }
        }
    }
    sockets
}

/// A UNIX socket from `ss -x -a -n`: its kind (`u_seq`, `u_str`, `u_dgr`) and the inode of its
/// peer (0 when it has none). `/proc/net/unix` does not name peers; the kernel's sock_diag,
/// which `ss` reads, does.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unix {
    kind: String,
    peer: u64,
}

fn unix_sockets() -> BTreeMap<u64, Unix> {
    let out = Command::new("ss")
        .args(["-x", "-a", "-n"])
        .output()
        .expect("run ss (Debian package iproute2; scripts/setup.sh installs it)");
    assert!(out.status.success(), "ss -x -a -n: {}", show(&out));
    let mut sockets = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port
        if fields.len() < 8 {
            continue;
        }
        let (Ok(inode), Ok(peer)) = (fields[5].parse::<u64>(), fields[7].parse::<u64>()) else {
            continue;
        };
        sockets.insert(
            inode,
            Unix {
                kind: fields[0].to_owned(),
                peer,
            },
        );
    }
    sockets
}

/// The role of each process of the instance: the master, its children by program, and their
/// descendants (a delivery child, local's command launcher) as `PARENT-ROLE/child`.
fn instance_processes(master: i32) -> BTreeMap<i32, String> {
    let mut roles = BTreeMap::from([(master, "master".to_owned())]);
    for role in ALL_DAEMONS {
        for pid in children(master, role) {
            roles.insert(pid, role.to_owned());
            for below in descendants(pid) {
                roles.insert(below, format!("{role}/child"));
            }
        }
    }
    roles
}

/// The peers each role may hold a channel to, besides its control channel to the master: the
/// access matrix of the design (smtpd→cleanup, bounce→cleanup, local→cleanup, cleanup→qmgr,
/// qmgr→{virtual,local,bounce}, smtpd→proxymap, local→proxymap) seen from both ends, and
/// local's channel to its own command launcher. At most `n` channels to each peer role.
fn allowed_peers(role: &str) -> &'static [(&'static str, usize)] {
    match role {
        // The session's cleanup channel and its proxymap channel, kept for the process's life.
        "smtpd" => &[("cleanup", 1), ("proxymap", 1)],
        // One client at a time (a daemon serves one channel at a time) and one wake-up channel.
        "cleanup" => &[
            ("smtpd", 1),
            ("bounce", 1),
            ("local", 1),
            ("local/child", 1),
            ("qmgr", 1),
        ],
        // A wake-up channel from each cleanup process, a channel to each agent process.
        "qmgr" => &[
            ("cleanup", usize::MAX),
            ("virtual", usize::MAX),
            ("local", usize::MAX),
            ("bounce", usize::MAX),
        ],
        "virtual" => &[("qmgr", 1)],
        "local" => &[
            ("qmgr", 1),
            ("cleanup", 1),
            ("local/child", 1),
            ("proxymap", 1),
        ],
        // One resident process keeps a channel from every smtpd and local process.
        "proxymap" => &[("smtpd", usize::MAX), ("local", usize::MAX)],
        "bounce" => &[("qmgr", 1), ("cleanup", 1)],
        _ => &[],
    }
}

/// Checks the descriptors of daemon `pid` of `role` against the design; returns what is wrong.
///
/// Every daemon: fd 0 `/dev/null`, fds 1 and 2 one pipe (the log), fd 3 a SOCK_SEQPACKET
/// channel whose other end the master holds; no descriptor of another process's control
/// channel, no TCP socket but smtpd's, no file or directory but cleanup's `incoming/` and
/// qmgr's queue directories.
/// - smtpd: fd 4 the listener on the instance's port, at most one accepted connection on it;
/// - cleanup: the `incoming/` directory, files in it (the spare, the file being written);
/// - qmgr: the queue directory and its queues, a duplicate of its control channel, and no
///   queue file once the queue is empty;
/// - proxymap: a duplicate of its control channel (it polls it with its clients' channels);
/// - virtual, local, bounce: nothing beyond their channels (the queue file of a request is
///   closed once the request is answered; they never see the spool directory).
#[allow(clippy::too_many_arguments)]
fn descriptor_faults(
    pid: i32,
    role: &str,
    fds: &BTreeMap<i32, Target>,
    roles: &BTreeMap<i32, String>,
    holders: &BTreeMap<u64, Vec<i32>>,
    unix: &BTreeMap<u64, Unix>,
    tcp: &BTreeMap<u64, Tcp>,
    inst: &Instance,
) -> Vec<String> {
    let mut faults = Vec::new();
    let spool = inst.queue_dir();
    let peer_roles = |inode: u64| -> Vec<String> {
        let peer = unix.get(&inode).map_or(0, |u| u.peer);
        holders
            .get(&peer)
            .map(|pids| {
                let mut r: Vec<String> = pids
                    .iter()
                    .filter(|p| **p != pid)
                    .filter_map(|p| roles.get(p).cloned())
                    .collect();
                r.sort();
                r.dedup();
                r
            })
            .unwrap_or_default()
    };
    match fds.get(&0) {
        Some(Target::Path(p)) if p == Path::new("/dev/null") => {}
        other => faults.push(format!("fd 0 is {other:?}, not /dev/null")),
    }
    match (fds.get(&1), fds.get(&2)) {
        (Some(Target::Pipe(a)), Some(Target::Pipe(b))) if a == b => {}
        other => faults.push(format!("fds 1 and 2 are {other:?}, not the log pipe")),
    }
    let control = match fds.get(&3) {
        Some(Target::Socket(inode))
            if unix.get(inode).is_some_and(|u| u.kind == "u_seq")
                && peer_roles(*inode) == ["master"] =>
        {
            Some(*inode)
        }
        other => {
            faults.push(format!(
                "fd 3 is {other:?} (peer {:?}), not a channel to the master",
                other.and_then(|t| match t {
                    Target::Socket(i) => Some(peer_roles(*i)),
                    _ => None,
                })
            ));
            None
        }
    };
    let mut channels: BTreeMap<String, usize> = BTreeMap::new();
    let mut connections = 0;
    for (&fd, target) in fds {
        if fd <= 3 {
            continue;
        }
        match target {
            Target::Socket(inode) if tcp.contains_key(inode) => {
                let t = tcp[inode];
                let ok = role == "smtpd"
                    && t.local_port == inst.port()
                    && if t.listening {
                        fd == 4
                    } else {
                        connections += 1;
                        connections == 1
                    };
                if !ok {
                    faults.push(format!("fd {fd}: TCP socket {t:?}"));
                }
            }
            Target::Socket(inode) if Some(*inode) == control => {
                // The resident services poll a duplicate of it beside their other channels.
                if role != "qmgr" && role != "proxymap" {
                    faults.push(format!(
                        "fd {fd}: a second descriptor of its control channel"
                    ));
                }
            }
            Target::Socket(inode) => {
                let kind = unix.get(inode).map(|u| u.kind.clone());
                let peers = peer_roles(*inode);
                let allowed = allowed_peers(role);
                match (kind.as_deref(), peers.as_slice()) {
                    (Some("u_seq"), [peer]) if allowed.iter().any(|(r, _)| r == peer) => {
                        let count = channels.entry(peer.clone()).or_default();
                        *count += 1;
                        let limit = allowed.iter().find(|(r, _)| r == peer).map_or(0, |a| a.1);
                        if *count > limit {
                            faults.push(format!(
                                "fd {fd}: channel {count} to {peer} (at most {limit})"
                            ));
                        }
                    }
                    _ => faults.push(format!(
                        "fd {fd}: socket {inode} ({kind:?}) whose other end {peers:?} holds"
                    )),
                }
            }
            Target::Path(path) => {
                let in_incoming = path.parent() == Some(&spool.join("incoming"));
                let is_queue_dir =
                    path == &spool || MAIL_QUEUE_DIRS.iter().any(|q| path == &spool.join(q));
                let ok = match role {
                    "cleanup" => path == &spool.join("incoming") || in_incoming,
                    "qmgr" => is_queue_dir,
                    _ => false,
                };
                if !ok {
                    faults.push(format!("fd {fd}: {}", path.display()));
                }
            }
            other => faults.push(format!("fd {fd}: {other:?}")),
        }
    }
    if role == "smtpd"
        && !matches!(fds.get(&4), Some(Target::Socket(i)) if tcp.get(i).is_some_and(|t| t.listening))
    {
        faults.push(format!("fd 4 is {:?}, not its listener", fds.get(&4)));
    }
    faults
}

/// The queue directories qmgr works in.
const MAIL_QUEUE_DIRS: [&str; 6] = [
    "incoming", "active", "deferred", "hold", "corrupt", "maildrop",
];

fn the_real_daemons_hold_only_their_descriptors_while_they_serve() {
    let missing = format!("/nonexistent-{}/file", std::process::id());
    let inst = delivery_instance("fds", &[], |inst| {
        inst.append("aliases", &format!("nofile: {missing}\n"));
    });
    // Mail through every daemon: a virtual and a local delivery, and a bounce (a file in a
    // missing directory) whose report goes through cleanup to the virtual sender.
    let tok = token("fds");
    lettre_send(
        inst.port(),
        "sender@example.org",
        VIRTUAL_USER,
        "virtual",
        &format!("{tok}-v"),
    );
    await_delivery(
        &inst,
        &virtual_maildir(&inst, "user"),
        &format!("{tok}-v"),
        1,
    );
    let bob = format!("bob@{LOCAL_DOMAIN}");
    lettre_send(
        inst.port(),
        "sender@example.org",
        &bob,
        "local",
        &format!("{tok}-l"),
    );
    await_delivery(&inst, &local_maildir(&inst, "bob"), &format!("{tok}-l"), 1);
    let nofile = format!("nofile@{LOCAL_DOMAIN}");
    lettre_send(
        inst.port(),
        VIRTUAL_USER,
        &nofile,
        "bounce",
        &format!("{tok}-b"),
    );
    await_delivery(
        &inst,
        &virtual_maildir(&inst, "user"),
        &format!("{tok}-b"),
        1,
    );
    // A session that stays open: its smtpd serves it, and the cleanup process serves that
    // smtpd's channel.
    let mut session = Client::connect(inst.port()).expect("an SMTP session");
    let text = message(
        "sender@example.org",
        VIRTUAL_USER,
        "open",
        &format!("{tok}-s"),
    );
    let reply = session
        .send("sender@example.org", VIRTUAL_USER, &text)
        .expect("a transaction");
    assert!(reply.starts_with("250"), "{reply}");
    await_delivery(
        &inst,
        &virtual_maildir(&inst, "user"),
        &format!("{tok}-s"),
        1,
    );
    assert_queue_empties(&inst);

    let master = master_pid(&inst);
    let roles = instance_processes(master);
    let mut holders: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
    let mut all_fds = BTreeMap::new();
    for &pid in roles.keys() {
        let fds = descriptors(pid);
        for target in fds.values() {
            if let Target::Socket(inode) = target {
                holders.entry(*inode).or_default().push(pid);
            }
        }
        all_fds.insert(pid, fds);
    }
    let unix = unix_sockets();
    let tcp = tcp_sockets();
    let mut report = String::new();
    let mut faults = Vec::new();
    for role in ALL_DAEMONS {
        let pids: Vec<i32> = roles
            .iter()
            .filter(|(_, r)| r.as_str() == role)
            .map(|(p, _)| *p)
            .collect();
        assert!(!pids.is_empty(), "no {role} process is running: {roles:?}");
        for pid in pids {
            let fds = &all_fds[&pid];
            writeln!(report, "{role} {pid}: {fds:?}").unwrap();
            for fault in descriptor_faults(pid, role, fds, &roles, &holders, &unix, &tcp, &inst) {
                faults.push(format!("{role} {pid}: {fault}"));
            }
        }
    }
    // The one serving the open session holds its connection and its cleanup channel.
    let serving = roles
        .iter()
        .filter(|(_, r)| r.as_str() == "smtpd")
        .any(|(pid, _)| {
            all_fds[pid]
                .values()
                .any(|t| matches!(t, Target::Socket(i) if tcp.get(i).is_some_and(|t| !t.listening)))
        });
    assert!(serving, "no smtpd holds the open session:\n{report}");
    assert!(
        faults.is_empty(),
        "{}\n\nall descriptors:\n{report}",
        faults.join("\n")
    );
    eprintln!("{report}");
    let _ = session.cmd("QUIT");
}
