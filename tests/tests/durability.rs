//! The kill -9 durability test: SMTP clients hand a running instance 200 messages while a killer
//! thread sends `SIGKILL` to the instance's **cleanup** processes (one test) or its **smtpd**
//! processes (the other) at random points of the transactions. Afterwards a freshly started
//! cleanup sweeps the spool, and the queue must keep every promise the design makes:
//!
//! - every message that got `250 ... queued as ID` is in the queue under that ID, complete (owner
//!   execute bit), its checksum valid, its content carrying its token;
//! - no incomplete file exists outside `corrupt/`;
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
//!   progress and the message sizes; thread interleaving stays the scheduler's).
//! - The killer does not kill on a timer alone: clients report when they reach the points of a
//!   transaction where a kill matters (after `MAIL`, in the middle of the text, right after the
//!   final `.`), and each planned kill waits for its message index and phase, then a random delay
//!   of a few milliseconds, so kills land in cleanup's write, its fsyncs and the window between its
//!   fsync and smtpd's reply. The victim is a random live process of the role.
//! - Clients retry nothing: any answer other than `250` after the text (or `250` to `MAIL`,
//!   `RCPT`, `354` to `DATA`) or a broken connection makes the message "not accepted"; only a
//!   connection that fails before `MAIL` is opened again, and that consumes no message.
//! - qmgr is left out of master.cf: the test checks the queue files themselves, which qmgr would
//!   move on and deliver; delivery's own crash test is in `delivery.rs`.
//! - `service_throttle_time = 1s` (the least the parameter allows) keeps the master's restart
//!   back-off after each kill short, and `smtpd_timeout = 10s` bounds a wait for cleanup, so both
//!   tests stay well under a minute.

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
use postern_tests::instance::{has_binary, read_queued, show, Instance};

/// SMTP transactions per test.
const MESSAGES: usize = 200;
/// Concurrent client threads, each with its own connections.
const CLIENTS: usize = 4;
/// Kills planned per test, spread over the transactions.
const PLANNED_KILLS: usize = 12;
/// Kills that must really have happened for the test to mean anything.
const MIN_KILLS: usize = 5;
/// The header that carries each message's token.
const TOKEN_HEADER: &str = "X-Durability-Token: ";
/// Longest wait for any one SMTP reply; the server's own timeout (`smtpd_timeout`) is shorter.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a planned kill waits for a process of its role to exist.
const VICTIM_WAIT: Duration = Duration::from_secs(3);
/// The whole client phase must end within this, or the test fails rather than hang.
const CLIENT_PHASE_LIMIT: Duration = Duration::from_secs(45);
/// Directories below the queue directory that never hold queue files.
const NOT_QUEUES: &[&str] = &["pid", "maildrop"];

#[test]
fn cleanup_killed_at_random_points_loses_no_acknowledged_mail() {
    run("cleanup");
}

#[test]
fn smtpd_killed_at_random_points_loses_no_acknowledged_mail() {
    run("smtpd");
}

/// splitmix64: small, seedable, good enough to pick kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
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
    Rng(nanos ^ u64::from(std::process::id()).rotate_left(32)).next()
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
}

fn plan(rng: &mut Rng) -> Vec<Target> {
    let segment = MESSAGES / PLANNED_KILLS;
    (0..PLANNED_KILLS)
        .map(|k| Target {
            // Leaves the first messages of a segment alone, so kills do not bunch up.
            index: k * segment + 2 + rng.below(segment as u64 - 2) as usize,
            phase: PHASES[rng.below(PHASES.len() as u64) as usize],
            delay: Duration::from_micros(rng.below(4_000)),
        })
        .collect()
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
    // One message in eight is large, so a kill can land in the middle of cleanup's writes.
    let lines = if rng.below(8) == 0 {
        2_000 + rng.below(3_000)
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
    let half = wire.len() / 2;
    session
        .writer
        .write_all(&wire[..half])
        .map_err(|e| format!("text: {e}"))?;
    event(Phase::Text);
    session
        .writer
        .write_all(&wire[half..])
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
    deadline: Instant,
) -> Vec<(usize, Outcome)> {
    let mut seen = Vec::new();
    'connections: while Instant::now() < deadline {
        let mut session = match Session::open(port) {
            Ok(session) => session,
            // A process killed before MAIL: no message was at stake, open another.
            Err(_) => continue,
        };
        for _ in 0..1 + rng.below(4) {
            let index = next.fetch_add(1, Ordering::SeqCst);
            if index >= MESSAGES {
                let _ = session.command("QUIT");
                break 'connections;
            }
            let text = message_text(&mut rng, &token(seed, index), index);
            match transact(&mut session, index, &text, &events) {
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

/// The killer: carries out `targets` in order as the clients' events reach them, until every
/// client has hung up.
fn killer(
    master: i32,
    role: &'static str,
    targets: Vec<Target>,
    mut rng: Rng,
    events: mpsc::Receiver<Event>,
) -> (Vec<Kill>, Vec<String>) {
    let mut kills = Vec::new();
    let mut missed = Vec::new();
    let mut targets = targets.into_iter().peekable();
    for event in events {
        let Some(target) = targets.peek().copied() else {
            continue;
        };
        if event.index < target.index || event.phase != target.phase {
            continue;
        }
        targets.next();
        if let Some(wait) = (event.at + target.delay).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let give_up = Instant::now() + VICTIM_WAIT;
        let victim = loop {
            let live = processes(master, role);
            if !live.is_empty() {
                break Some(live[rng.below(live.len() as u64) as usize]);
            }
            if Instant::now() >= give_up {
                break None;
            }
            // Polls /proc for the condition "a process of the role exists"; nothing to block on.
            thread::sleep(Duration::from_millis(5));
        };
        let Some(pid) = victim else {
            missed.push(format!("{target:?}: no {role} process"));
            continue;
        };
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => kills.push(Kill {
                pid,
                index: event.index,
                phase: event.phase,
                delay: target.delay,
            }),
            Err(e) => missed.push(format!("{target:?}: kill {pid}: {e}")),
        }
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

fn run(role: &'static str) {
    if !(has_binary("smtpd") && has_binary("cleanup")) {
        eprintln!("note: smtpd or cleanup is not built: the durability test has nothing to kill");
        return;
    }
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
    let targets = plan(&mut rng);

    let next = Arc::new(AtomicUsize::new(0));
    let (events_tx, events_rx) = mpsc::channel();
    let killer_rng = Rng(rng.next());
    let killer = thread::spawn(move || killer(master, role, targets, killer_rng, events_rx));
    let deadline = Instant::now() + CLIENT_PHASE_LIMIT;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (port, client_rng) = (inst.port(), Rng(rng.next()));
            let (next, events) = (next.clone(), events_tx.clone());
            thread::spawn(move || client(port, seed, client_rng, next, events, deadline))
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
        .filter(|f| !f.complete && !f.in_corrupt)
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
        match transact(&mut session, MESSAGES, &text, &sink) {
            Ok(Outcome::Queued(id)) => id,
            other => panic!("{context}: the message after the restart: {other:?}"),
        }
    };

    let files = scan_spool(&inst.queue_dir());
    let mut failures: Vec<String> = Vec::new();
    let mut by_token: BTreeMap<&str, Vec<&SpoolFile>> = BTreeMap::new();
    for file in &files {
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

    let report = format!(
        "{context}: {} messages, {accepted} accepted (with the one after the restart), \
         {} complete without a 250 (at-least-once window): {at_least_once:?}\n\
         refusals: {refusals:?}\n\
         kills ({}): {:?}\nplanned kills not carried out: {missed:?}\n\
         incomplete files before the sweep: {incomplete_before_sweep}; queue files after it: {}; \
         client phase {:.1} s, whole test {:.1} s",
        MESSAGES + 1,
        at_least_once.len(),
        kills.len(),
        kills
            .iter()
            .map(|k| format!(
                "{} at #{} {:?}+{}us",
                k.pid,
                k.index,
                k.phase,
                k.delay.as_micros()
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
