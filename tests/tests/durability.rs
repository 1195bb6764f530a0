//! The kill -9 durability test: SMTP clients hand a running instance 200 messages while a killer
//! thread sends `SIGKILL` to the instance's **cleanup** processes (one test) or its **smtpd**
//! processes (the other) at random points of the transactions. Afterwards a freshly started
//! cleanup sweeps the spool, and the queue must keep every promise the design makes:
//!
//! - every message that got `250 ... queued as ID` is in the queue under that ID, complete (owner
//!   execute bit), its checksum valid, its content carrying its token;
//! - no incomplete file exists outside `corrupt/`, but the spare a live cleanup keeps ready
//!   (empty, in `incoming/`, locked: `is_live_spare`);
//! - a message that got no `250` has no queue file, or one complete file (cleanup had made it
//!   durable when the kill cut off the reply: the at-least-once window), counted and printed;
//! - no queue file carries two messages' tokens, no token is in two files;
//! - the kills happened (at least [`MIN_KILLS`]) and the master logged each as an abnormal exit.
//!
//! Trusts: nothing the instance writes. Queue files are read through `protocol::queue` (`verify`,
//! `QueueFile::read`), replies are parsed here from the bytes on the wire, processes are found
//! through `/proc` (children of the master whose `argv[0]` names the role).
//!
//! Decisions:
//! - Randomness is seeded and the seed is printed first and in every failure message;
//!   `POSTERN_DURABILITY_SEED=<hex>` replays a plan (the kill points relative to the clients'
//!   progress, each client's sequence of message sizes and pauses); which client takes which
//!   message, and the interleaving of threads and processes, stay the scheduler's.
//! - The killer does not kill on a timer alone: clients report when they reach the points of a
//!   transaction where a kill matters (after `MAIL`, in the middle of the text, right after the
//!   final `.`); each kill waits for its message index and phase, then a random delay of up to
//!   4 ms, so kills land in cleanup's writes, its fsyncs and the window between its fsync and
//!   smtpd's reply. The victim is a random process of the role; in the middle of the text and
//!   after the `.`, a cleanup that holds a queue file's lock (`/proc/locks`) if there is one.
//!   (Every cleanup holds the lock of the spare it keeps ready for its next message, so in
//!   practice the aim is the clients' phase.)
//! - cleanup is killed one process at a time: the killer waits until the master has started a
//!   replacement (its restart back-off is at least a second) before it aims again, and the
//!   clients keep a pace (one message per 60 ms) and pause in the middle of most texts, as slow
//!   clients do, so the replacement's start-up sweep runs while other cleanups hold incomplete
//!   files. A sweep that ignored their locks loses acknowledged mail here in nearly every run.
//!   smtpd has no sweep: its clients go as fast as their pauses let them, so most smtpd
//!   processes are in the middle of a transaction when one is picked.
//! - Clients retry nothing: any answer other than `250` after the text (or `250` to `MAIL`,
//!   `RCPT`, `354` to `DATA`) or a broken connection makes the message "not accepted"; only a
//!   connection that fails before `MAIL` is opened again, and that consumes no message.
//! - The sweep before the checks: `postern stop`, `postern start`, and one more message. cleanup
//!   sweeps before it serves its first channel, so that message's `250` means a fresh cleanup
//!   has swept. The files are checked in every queue directory but `pid/` and `maildrop/`.
//! - "Logged the abnormal exit" means the master's line `pid PID killed by signal 9` for each
//!   victim, in the instance's log.
//! - qmgr is left out of master.cf: the test checks the queue files themselves, which qmgr would
//!   move on and deliver; delivery's own crash test is in `delivery.rs`.
//! - `service_throttle_time = 1s` (the least the parameter allows) keeps the master's restart
//!   back-off after each kill short, and `smtpd_timeout = 10s` bounds a wait for cleanup, so both
//!   tests stay well under a minute (about 12 s each here).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postern_tests::instance::{binary, is_live_spare, read_queued, show, wait_until, Instance};
use postern_tests::rng::Rng;
use protocol::cleanup::CHUNK_MAX;

/// SMTP transactions per test.
const MESSAGES: usize = 200;
/// Concurrent client threads, each with its own connections.
const CLIENTS: usize = 4;
/// Most kills per test.
const MAX_KILLS: usize = 16;
/// Kills that must really have happened for the test to mean anything.
const MIN_KILLS: usize = 6;
/// The clients' pace when cleanup is killed: message `i` starts no earlier than `i` times this
/// after the first, slow enough that the kills (one per restart back-off of the master, at
/// least a second, as the killer waits for each replacement) spread over the run, and each
/// replacement cleanup starts, and sweeps, while the other clients are in the middle of their
/// messages. smtpd has no sweep: its clients go as fast as they can, so that most of the time
/// every smtpd process is in the middle of a transaction.
const CLEANUP_MESSAGE_SPACING: Duration = Duration::from_millis(60);
/// Three messages in four pause up to this long in the middle of their text, as a slow client
/// does. That keeps cleanup's files open and incomplete much of the time, so a replacement
/// cleanup sweeps while other cleanups write, and a random smtpd victim is usually in the
/// middle of a transaction.
const SLOW_CLIENT_PAUSE_MS: u64 = 200;
/// Longest the killer waits for a process to replace its victim before the next kill.
const REPLACEMENT_WAIT: Duration = Duration::from_secs(2);
/// The header that carries each message's token.
const TOKEN_HEADER: &str = "X-Durability-Token: ";
/// Longest wait for any one SMTP reply; the server's own timeout (`smtpd_timeout`) is shorter.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole client phase must end within this, or the test fails rather than hang.
const CLIENT_PHASE_LIMIT: Duration = Duration::from_secs(45);
/// Directories below the queue directory that never hold queue files.
const NOT_QUEUES: &[&str] = &["pid", "maildrop"];

#[test]
fn cleanup_killed_at_random_points_loses_no_acknowledged_mail() {
    run(Scenario {
        role: "cleanup",
        spacing: CLEANUP_MESSAGE_SPACING,
        await_replacement: true,
        // The wait for each replacement (the master's back-off) spaces these kills.
        kill_spacing: 4,
    });
}

#[test]
fn smtpd_killed_at_random_points_loses_no_acknowledged_mail() {
    run(Scenario {
        role: "smtpd",
        spacing: Duration::ZERO,
        await_replacement: false,
        // About MAX_KILLS kills spread over the messages.
        kill_spacing: (2 * MESSAGES / MAX_KILLS) as u64,
    });
}

/// How one test drives its instance.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    /// The role whose processes are killed (`argv[0]` of the daemon).
    role: &'static str,
    /// Message `i` starts no earlier than `i` times this after the first.
    spacing: Duration,
    /// Whether the killer waits for a process to replace its victim before it aims again.
    await_replacement: bool,
    /// A kill lands on one of this many messages after the last (or after its replacement).
    kill_spacing: u64,
}

fn seed() -> u64 {
    if let Ok(text) = std::env::var("POSTERN_DURABILITY_SEED") {
        let text = text.trim().trim_start_matches("0x");
        return u64::from_str_radix(text, 16)
            .unwrap_or_else(|e| panic!("POSTERN_DURABILITY_SEED={text:?}: {e}"));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Rng(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

/// A point of a transaction that a client reports to the killer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `MAIL` accepted: smtpd is about to open (or reuse) its cleanup channel.
    Mail,
    /// Half the message text sent: cleanup is writing the queue file.
    Text,
    /// The final `.` sent: cleanup finishes, fsyncs and answers; smtpd replies.
    Dot,
}

const PHASES: [Phase; 4] = [Phase::Mail, Phase::Text, Phase::Dot, Phase::Dot];

#[derive(Clone, Copy, Debug)]
struct Event {
    index: usize,
    phase: Phase,
    at: Instant,
}

/// One planned kill: when message `index` (or a later one) reaches `phase`, wait `delay`.
#[derive(Clone, Copy, Debug)]
struct Target {
    index: usize,
    phase: Phase,
    delay: Duration,
}

#[derive(Clone, Debug)]
struct Kill {
    pid: i32,
    index: usize,
    phase: Phase,
    delay: Duration,
    /// Chosen among the processes in the middle of a message.
    busy: bool,
    /// How long the master took to start another process of the role (`None`: not within
    /// [`REPLACEMENT_WAIT`]).
    replaced_after: Option<Duration>,
}

impl Target {
    /// The next kill: on one of the `spacing` messages after `index`.
    fn after(index: usize, spacing: u64, rng: &mut Rng) -> Target {
        Target {
            index: index + 1 + rng.below(spacing) as usize,
            phase: PHASES[rng.below(PHASES.len() as u64) as usize],
            delay: Duration::from_micros(rng.below(4_000)),
        }
    }
}

/// What a client saw of one message.
#[derive(Clone, Debug)]
enum Outcome {
    Queued(String),
    NotAccepted(String),
}

fn token(seed: u64, index: usize) -> String {
    format!("dur-{seed:016x}-{index:04}")
}

/// The message text as sent, before dot-stuffing, with CRLF line ends.
fn message_text(rng: &mut Rng, token: &str, index: usize) -> Vec<u8> {
    let mut text = format!(
        "From: <sender@example.org>\r\n\
         To: <user@example.test>\r\n\
         Subject: durability {index}\r\n\
         Message-ID: <{token}@example.org>\r\n\
         {TOKEN_HEADER}{token}\r\n\
         \r\n"
    )
    .into_bytes();
    // Half the messages are large (80 to 200 kB, more than one `Content` chunk), so cleanup
    // has their file open while the client is still sending.
    let lines = if rng.below(2) == 0 {
        2_200 + rng.below(3_000)
    } else {
        1 + rng.below(40)
    };
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
    for _ in 0..lines {
        // Now and then a line that needs dot-stuffing on the wire.
        if rng.below(16) == 0 {
            text.push(b'.');
        }
        for _ in 0..rng.below(78) {
            text.push(ALPHABET[rng.below(ALPHABET.len() as u64) as usize]);
        }
        text.extend_from_slice(b"\r\n");
    }
    text
}

/// Dot-stuffs CRLF text for `DATA` and appends the end-of-data line.
fn stuffed(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    for line in text.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// One SMTP reply: its code and its last line.
struct Reply {
    code: u16,
    text: String,
}

struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Session {
    fn open(port: u16) -> io::Result<Session> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut session = Session {
            reader: BufReader::new(stream),
            writer,
        };
        session.expect(220, "greeting")?;
        session.command("EHLO client.example.org")?;
        session.expect(250, "EHLO")?;
        Ok(session)
    }

    fn command(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())
    }

    fn reply(&mut self) -> io::Result<Reply> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let line = line.trim_end().to_owned();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("not a reply: {line:?}"))
                })?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text: line });
            }
        }
    }

    /// A reply with `code`, or an error naming `what` and the reply.
    fn expect(&mut self, code: u16, what: &str) -> io::Result<Reply> {
        let reply = self.reply()?;
        if reply.code != code {
            return Err(io::Error::other(format!("{what}: {}", reply.text)));
        }
        Ok(reply)
    }
}

/// One transaction on an open session; `Err` when the connection broke.
fn transact(
    session: &mut Session,
    index: usize,
    text: &[u8],
    pause: Duration,
    events: &mpsc::Sender<Event>,
) -> Result<Outcome, String> {
    let event = |phase| {
        let _ = events.send(Event {
            index,
            phase,
            at: Instant::now(),
        });
    };
    let step = |session: &mut Session, line: &str, code: u16| -> Result<Option<String>, String> {
        session.command(line).map_err(|e| format!("{line}: {e}"))?;
        let reply = session.reply().map_err(|e| format!("{line}: {e}"))?;
        Ok((reply.code != code).then(|| format!("{line}: {}", reply.text)))
    };
    if let Some(refused) = step(session, "MAIL FROM:<sender@example.org>", 250)? {
        return Ok(Outcome::NotAccepted(refused));
    }
    event(Phase::Mail);
    if let Some(refused) = step(session, "RCPT TO:<user@example.test>", 250)? {
        return Ok(Outcome::NotAccepted(refused));
    }
    if let Some(refused) = step(session, "DATA", 354)? {
        return Ok(Outcome::NotAccepted(refused));
    }
    let wire = stuffed(text);
    // smtpd hands the text to cleanup in chunks of CHUNK_MAX octets and cleanup creates the
    // file with the first: a large message pauses past its first chunk, so the pause keeps an
    // incomplete file open; a small one pauses in its middle.
    let split = if wire.len() > CHUNK_MAX + 16 * 1024 {
        (CHUNK_MAX + 8 * 1024).max(wire.len() / 2)
    } else {
        wire.len() / 2
    };
    session
        .writer
        .write_all(&wire[..split])
        .map_err(|e| format!("text: {e}"))?;
    event(Phase::Text);
    thread::sleep(pause);
    session
        .writer
        .write_all(&wire[split..])
        .map_err(|e| format!("text: {e}"))?;
    event(Phase::Dot);
    let reply = session.reply().map_err(|e| format!("end of data: {e}"))?;
    if reply.code != 250 {
        return Ok(Outcome::NotAccepted(format!("end of data: {}", reply.text)));
    }
    match reply.text.split_once("queued as ") {
        Some((_, id)) if !id.trim().is_empty() => Ok(Outcome::Queued(id.trim().to_owned())),
        _ => Ok(Outcome::NotAccepted(format!(
            "250 without a queue id: {}",
            reply.text
        ))),
    }
}

/// A client thread: connections of one to four messages each, until the shared counter passes
/// [`MESSAGES`]. Returns each message index it used with its outcome.
fn client(
    port: u16,
    seed: u64,
    mut rng: Rng,
    next: Arc<AtomicUsize>,
    events: mpsc::Sender<Event>,
    first: Instant,
    spacing: Duration,
) -> Vec<(usize, Outcome)> {
    let deadline = first + CLIENT_PHASE_LIMIT;
    let mut seen = Vec::new();
    'connections: while Instant::now() < deadline {
        let mut session = match Session::open(port) {
            Ok(session) => session,
            // A process killed before MAIL: no message was at stake, open another after a
            // breath (the master may be between a kill and the restart).
            Err(_) => {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        for _ in 0..1 + rng.below(4) {
            let index = next.fetch_add(1, Ordering::SeqCst);
            if index >= MESSAGES {
                let _ = session.command("QUIT");
                break 'connections;
            }
            // Pacing, not synchronisation: nothing to wait for but the clock.
            let slot = first + spacing * index as u32;
            if let Some(early) = slot.checked_duration_since(Instant::now()) {
                thread::sleep(early);
            }
            let text = message_text(&mut rng, &token(seed, index), index);
            let pause = if rng.below(4) != 0 {
                Duration::from_millis(rng.below(SLOW_CLIENT_PAUSE_MS))
            } else {
                Duration::ZERO
            };
            match transact(&mut session, index, &text, pause, &events) {
                Ok(outcome @ Outcome::Queued(_)) => seen.push((index, outcome)),
                Ok(outcome) => {
                    // A refusal ends the connection: the next message starts afresh.
                    seen.push((index, outcome));
                    continue 'connections;
                }
                Err(broken) => {
                    seen.push((index, Outcome::NotAccepted(broken)));
                    continue 'connections;
                }
            }
        }
        let _ = session.command("QUIT");
    }
    seen
}

/// `(ppid, state)` of a process, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(i32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.get(text.rfind(')')? + 2..)?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Live children of `master` whose `argv[0]` (or, failing that, command name) is `role`.
fn processes(master: i32, role: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((ppid, state)) if ppid == master && state != 'Z' && state != 'X'))
        .filter(|&pid| {
            let argv0 = fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .and_then(|c| c.split(|&b| b == 0).next().map(<[u8]>::to_vec))
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .unwrap_or_default();
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            Path::new(&argv0).file_name().and_then(|n| n.to_str()) == Some(role)
                || comm.trim() == role
        })
        .collect();
    found.sort_unstable();
    found
}

fn master_pid(inst: &Instance) -> i32 {
    let path = inst.queue_dir().join("pid/master.pid");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// cleanup processes that hold the lock of a queue file, from `/proc/locks` (readable by anyone,
/// unlike the descriptors of a non-dumpable daemon): those are in the middle of a message.
fn lock_holders(among: &[i32]) -> Vec<i32> {
    let Ok(locks) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    // "1: FLOCK  ADVISORY  WRITE 12819 fe:00:2171658 0 EOF"; a waiter's line has "->" after the
    // number and holds nothing.
    let mut holders: Vec<i32> = locks
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            if fields.next()? != "FLOCK" {
                return None;
            }
            fields.nth(2)?.parse().ok()
        })
        .filter(|pid| among.contains(pid))
        .collect();
    holders.sort_unstable();
    holders.dedup();
    holders
}

/// The killer: when the clients' events reach its next target, kills a process of the role
/// (at `Text` and `Dot`, a cleanup in the middle of a message if there is one; otherwise any),
/// then, if the scenario says so, waits for the master to start a replacement before it aims
/// again; until every client has hung up or [`MAX_KILLS`] were made.
fn killer(
    master: i32,
    scenario: Scenario,
    mut rng: Rng,
    events: mpsc::Receiver<Event>,
) -> (Vec<Kill>, Vec<String>) {
    let role = scenario.role;
    let mut kills = Vec::new();
    let mut missed = Vec::new();
    let mut target = Target::after(0, scenario.kill_spacing, &mut rng);
    let mut resumed = Instant::now();
    for event in events {
        if kills.len() + missed.len() >= MAX_KILLS
            || event.at < resumed
            || event.index < target.index
            || event.phase != target.phase
        {
            continue;
        }
        if let Some(wait) = (event.at + target.delay).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let live = processes(master, role);
        let busy = match (role, event.phase) {
            ("cleanup", Phase::Text | Phase::Dot) => lock_holders(&live),
            _ => Vec::new(),
        };
        let pool = if busy.is_empty() { &live } else { &busy };
        let outcome = if pool.is_empty() {
            Err(format!("{target:?}: no {role} process"))
        } else {
            let pid = pool[rng.below(pool.len() as u64) as usize];
            kill(Pid::from_raw(pid), Signal::SIGKILL)
                .map(|()| pid)
                .map_err(|e| format!("{target:?}: kill {pid}: {e}"))
        };
        match outcome {
            Ok(pid) => {
                let killed_at = Instant::now();
                // Polls /proc for "a process of the role that was not there before"; there is
                // nothing to block on.
                let replaced = scenario.await_replacement
                    && wait_until(REPLACEMENT_WAIT, || {
                        processes(master, role).iter().any(|p| !live.contains(p))
                    });
                kills.push(Kill {
                    pid,
                    index: event.index,
                    phase: event.phase,
                    delay: target.delay,
                    busy: !busy.is_empty(),
                    replaced_after: replaced.then(|| killed_at.elapsed()),
                });
            }
            Err(why) => missed.push(why),
        }
        resumed = Instant::now();
        target = Target::after(event.index, scenario.kill_spacing, &mut rng);
    }
    (kills, missed)
}

/// A file found below the queue directory.
#[derive(Debug)]
struct SpoolFile {
    path: PathBuf,
    name: String,
    in_corrupt: bool,
    complete: bool,
    /// Why the file fails `verify` or cannot be read, for complete files.
    broken: Option<String>,
    tokens: Vec<String>,
}

fn scan_spool(queue_dir: &Path) -> Vec<SpoolFile> {
    let mut files = Vec::new();
    let entries =
        fs::read_dir(queue_dir).unwrap_or_else(|e| panic!("reading {}: {e}", queue_dir.display()));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if NOT_QUEUES.contains(&name.as_str()) || !entry.path().is_dir() {
            continue;
        }
        walk(&entry.path(), name == "corrupt", &mut files);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn walk(dir: &Path, in_corrupt: bool, files: &mut Vec<SpoolFile>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        if meta.is_dir() {
            walk(&path, in_corrupt, files);
            continue;
        }
        let complete = meta.permissions().mode() & 0o100 != 0;
        let (broken, tokens) = if complete {
            match read_queue_file(&path) {
                Ok(tokens) => (None, tokens),
                Err(e) => (Some(e), Vec::new()),
            }
        } else {
            (None, Vec::new())
        };
        files.push(SpoolFile {
            name: entry.file_name().to_string_lossy().into_owned(),
            path,
            in_corrupt,
            complete,
            broken,
            tokens,
        });
    }
}

/// Verifies a complete queue file (`verify`, then envelope and content read back) and returns
/// the tokens its content carries.
fn read_queue_file(path: &Path) -> Result<Vec<String>, String> {
    let message = read_queued(path).map_err(|e| e.to_string())?;
    let content = String::from_utf8_lossy(&message.content);
    Ok(content
        .split("\r\n")
        .filter_map(|line| line.strip_prefix(TOKEN_HEADER))
        .map(str::to_owned)
        .collect())
}

fn run(scenario: Scenario) {
    let role = scenario.role;
    // Both daemons must exist: `init` would leave a missing one out of master.cf.
    binary("smtpd");
    binary("cleanup");
    let seed = seed();
    let started = Instant::now();
    eprintln!("durability ({role}): seed {seed:016x} (POSTERN_DURABILITY_SEED replays it)");
    let context = format!("role {role}, seed {seed:016x}");

    let mut inst = Instance::start_without(
        &format!("durability-{role}"),
        &[("service_throttle_time", "1s"), ("smtpd_timeout", "10s")],
        &["qmgr"],
    );
    let master = master_pid(&inst);
    let mut rng = Rng(seed);

    let next = Arc::new(AtomicUsize::new(0));
    let (events_tx, events_rx) = mpsc::channel();
    let killer_rng = Rng(rng.next_u64());
    let killer = thread::spawn(move || killer(master, scenario, killer_rng, events_rx));
    let first = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (port, client_rng) = (inst.port(), Rng(rng.next_u64()));
            let (next, events) = (next.clone(), events_tx.clone());
            thread::spawn(move || {
                client(
                    port,
                    seed,
                    client_rng,
                    next,
                    events,
                    first,
                    scenario.spacing,
                )
            })
        })
        .collect();
    drop(events_tx);
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    for c in clients {
        for (index, outcome) in c.join().expect("a client thread panicked") {
            outcomes.insert(index, outcome);
        }
    }
    let (kills, missed) = killer.join().expect("the killer thread panicked");
    let client_phase = started.elapsed();
    assert_eq!(
        outcomes.len(),
        MESSAGES,
        "{context}: the clients ran out of time after {} messages",
        outcomes.len()
    );

    // Before the sweep, only for the report: files that the kills left incomplete and no
    // cleanup started since has removed.
    let incomplete_before_sweep = scan_spool(&inst.queue_dir())
        .iter()
        .filter(|f| !f.complete && !f.in_corrupt && !is_live_spare(&f.path))
        .count();

    // A sweep: cleanup removes dead writers' files when it starts, so restart the instance and
    // make a fresh cleanup serve one more message. Its 250 means the sweep is over.
    let stop = inst.stop();
    assert!(
        stop.status.success(),
        "{context}: postern stop: {}",
        show(&stop)
    );
    let start = inst.start_master();
    assert!(
        start.status.success(),
        "{context}: postern start: {}",
        show(&start)
    );
    let final_token = format!("dur-{seed:016x}-final");
    let final_id = {
        let mut session =
            Session::open(inst.port()).unwrap_or_else(|e| panic!("{context}: after restart: {e}"));
        let text = message_text(&mut rng, &final_token, MESSAGES);
        let (sink, _) = mpsc::channel();
        match transact(&mut session, MESSAGES, &text, Duration::ZERO, &sink) {
            Ok(Outcome::Queued(id)) => id,
            other => panic!("{context}: the message after the restart: {other:?}"),
        }
    };

    let files = scan_spool(&inst.queue_dir());
    let mut failures: Vec<String> = Vec::new();
    let mut by_token: BTreeMap<&str, Vec<&SpoolFile>> = BTreeMap::new();
    let mut spares = 0;
    for file in &files {
        if !file.complete && !file.in_corrupt && is_live_spare(&file.path) {
            spares += 1;
            continue;
        }
        if !file.complete && !file.in_corrupt {
            failures.push(format!(
                "incomplete file outside corrupt/: {}",
                file.path.display()
            ));
        }
        if let (Some(why), false) = (&file.broken, file.in_corrupt) {
            failures.push(format!(
                "complete but broken: {}: {why}",
                file.path.display()
            ));
        }
        if file.complete && !file.in_corrupt && file.broken.is_none() && file.tokens.len() != 1 {
            failures.push(format!(
                "{} carries {} tokens: {:?}",
                file.path.display(),
                file.tokens.len(),
                file.tokens
            ));
        }
        for t in &file.tokens {
            by_token.entry(t).or_default().push(file);
        }
    }
    for (t, holders) in &by_token {
        if holders.len() > 1 {
            let paths: Vec<_> = holders
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            failures.push(format!(
                "token {t} is in {} files: {paths:?}",
                holders.len()
            ));
        }
    }

    let mut accepted = 0;
    let mut at_least_once = Vec::new();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut all: Vec<(String, Option<String>)> = outcomes
        .iter()
        .map(|(i, o)| match o {
            Outcome::Queued(id) => (token(seed, *i), Some(id.clone())),
            Outcome::NotAccepted(_) => (token(seed, *i), None),
        })
        .collect();
    all.push((final_token.clone(), Some(final_id.clone())));
    for outcome in outcomes.values() {
        if let Outcome::NotAccepted(why) = outcome {
            // The texts name no message, so equal refusals group together.
            *refusals.entry(why.clone()).or_default() += 1;
        }
    }
    for (t, id) in &all {
        let holders = by_token.get(t.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        match id {
            Some(id) => {
                accepted += 1;
                let file = files.iter().find(|f| &f.name == id && !f.in_corrupt);
                match file {
                    None => failures.push(format!("{t}: got 250 queued as {id}, no such file")),
                    Some(f) if !f.complete => {
                        failures.push(format!("{t}: {id} got 250 but is incomplete"))
                    }
                    Some(f) if f.broken.is_some() => {
                        failures.push(format!("{t}: {id} got 250 but is broken: {:?}", f.broken))
                    }
                    Some(f) if !f.tokens.iter().any(|x| x == t) => {
                        failures.push(format!("{t}: {id} got 250 but carries {:?}", f.tokens))
                    }
                    Some(_) => {}
                }
            }
            None => {
                if let Some(f) = holders.first() {
                    at_least_once.push(format!("{t} in {}", f.name));
                }
            }
        }
    }

    let log = inst.log();
    let unlogged: Vec<i32> = kills
        .iter()
        .map(|k| k.pid)
        .filter(|pid| !log.contains(&format!("pid {pid} killed by signal 9")))
        .collect();
    // For the report only (cleanup's wording, not a promise): dead writers' files swept.
    let swept = log.matches("removed incomplete queue file").count();

    let report = format!(
        "{context}: {} messages, {accepted} accepted (with the one after the restart), \
         {} complete without a 250 (at-least-once window): {at_least_once:?}\n\
         refusals: {refusals:?}\n\
         kills ({}): {:?}\nplanned kills not carried out: {missed:?}\n\
         incomplete files removed by sweeps: {swept}, left for the last sweep: \
         {incomplete_before_sweep}; queue files after it: {} (live cleanups' spares: {spares}); \
         client phase {:.1} s, whole test {:.1} s",
        MESSAGES + 1,
        at_least_once.len(),
        kills.len(),
        kills
            .iter()
            .map(|k| format!(
                "{}{} at #{} {:?}+{}us{}",
                k.pid,
                if k.busy { " (writing)" } else { "" },
                k.index,
                k.phase,
                k.delay.as_micros(),
                match (scenario.await_replacement, k.replaced_after) {
                    (false, _) => String::new(),
                    (true, None) => ", not replaced".to_owned(),
                    (true, Some(d)) => format!(", replaced after {} ms", d.as_millis()),
                }
            ))
            .collect::<Vec<_>>(),
        files.len(),
        client_phase.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    eprintln!("{report}");
    assert!(
        failures.is_empty(),
        "{report}\nfailures:\n{}",
        failures.join("\n")
    );
    assert!(
        kills.len() >= MIN_KILLS,
        "{report}\nonly {} kills happened, at least {MIN_KILLS} are needed",
        kills.len()
    );
    assert!(
        unlogged.is_empty(),
        "{report}\nthe master did not log these killed pids as killed by signal 9: {unlogged:?}\n{log}"
    );
    assert!(
        accepted > MESSAGES / 4,
        "{report}\nso few messages accepted that the test proves little"
    );
    let stop = inst.stop();
    assert!(
        stop.status.success(),
        "{context}: postern stop: {}",
        show(&stop)
    );
}
