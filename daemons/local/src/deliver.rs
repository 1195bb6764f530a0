//! One delivery in a child process: fork, become the recipient, confine, write.
//!
//! Trusts: the destination the resolver chose (from first-hand tables) and the message text,
//! which is written as data only. Does not trust: the mailbox paths (a user controls their
//! home: files are opened with `O_NOFOLLOW`, and the child's landlock layer and ids bound what
//! a planted symlink could reach), or a command (it runs as its user, confined, with a time
//! limit).
//!
//! Decisions:
//! - The child reports through a pipe: one status line `CODE TEXT` (2.0.0, 4.x.x or 5.x.x)
//!   the parent maps to the result; a child that dies without one is a 4.3.0 deferral.
//! - Mailbox text has LF line ends (the queue stores CRLF), as Postfix writes mailboxes.
//! - Maildir (`home_mailbox` ending in `/`): `tmp/` → fsync → rename into `new/` → fsync of
//!   `new/`, file mode 0600, name `SECONDS.PPID_COUNT.HOST`; the directories are made 0700.
//! - mbox (the spool file, `home_mailbox` without `/`, or a `/file` destination): a dot-lock
//!   `NAME.lock` made with `O_EXCL` (retried for up to 10 s, a lock older than 5 min removed,
//!   as Postfix's `stale_lock_time`), then an `fcntl` write lock, a `From SENDER DATE` line,
//!   `>From ` quoting, a blank line at the end; a failed write is cut back with `ftruncate`.
//!   A new mbox is made 0600 by the recipient (the spool must let users create their file,
//!   as `/var/mail` with mode 1777 does).
//! - `|command`: `/bin/sh -c COMMAND` in the recipient's home, an environment of exactly
//!   `HOME USER LOGNAME SHELL RECIPIENT SENDER PATH=/usr/bin:/bin`; the message on stdin;
//!   stdout and stderr collected (first 400 octets kept for the diagnostic); exit 0 →
//!   delivered, 75 (EX_TEMPFAIL) → deferred 4.3.0, any other status or signal → bounced
//!   5.3.0, more than `command_time_limit` → killed and deferred 4.3.0, as Postfix.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use sandbox::{FsAccess, FsRule, Identity};

/// Longest status line a child sends back.
const MAX_REPORT: usize = 512;
/// Command output kept for the diagnostic.
const MAX_OUTPUT: usize = 400;
/// How long to wait for a dot-lock, and when one is stale.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const STALE_LOCK: Duration = Duration::from_secs(300);

/// What a child writes, and where.
#[derive(Debug, Clone)]
pub enum Sink {
    Maildir(PathBuf),
    Mbox(PathBuf),
    Command {
        command: String,
        home: PathBuf,
        env: Vec<(String, String)>,
        limit: Duration,
    },
}

/// The result of one delivery: a status class and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub status: String,
    pub text: String,
}

impl Report {
    pub fn new(status: &str, text: impl Into<String>) -> Report {
        Report {
            status: status.to_owned(),
            text: text.into(),
        }
    }
}

/// A delivery to run: as whom, confined to what, writing what.
pub struct Job<'a> {
    pub identity: Identity,
    pub rules: Vec<FsRule>,
    pub sink: Sink,
    /// Header lines to put first (Return-Path, Delivered-To), CRLF ends.
    pub prepend: &'a [u8],
    /// The message text as queued (CRLF ends).
    pub content: &'a [u8],
    /// For the mbox `From ` line.
    pub sender: &'a str,
    pub hostname: &'a str,
    /// A bound on the whole child, beyond a command's own limit.
    pub deadline: Duration,
}

/// Runs `job` in a forked child and returns what it reported.
pub fn run(job: &Job<'_>) -> Report {
    let (rd, wr) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Report::new("4.3.0", format!("cannot make a pipe: {e}")),
    };
    // INVARIANT: this daemon is single-threaded (its sandbox refused a second thread).
    let forked = sandbox::fork_delivery_child();
    match forked {
        Err(e) => Report::new("4.3.0", format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(rd);
            let report = child(job);
            let mut out = File::from(wr);
            let line = format!("{} {}", report.status, report.text);
            let _ = out.write_all(&line.as_bytes()[..line.len().min(MAX_REPORT)]);
            let code = match report.status.as_bytes().first() {
                Some(b'2') => 0,
                Some(b'4') => 75,
                _ => 1,
            };
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            parent(child, rd, job.deadline)
        }
    }
}

fn parent(child: Pid, rd: OwnedFd, deadline: Duration) -> Report {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut file = File::from(rd);
    let timed_out = loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            break true;
        }
        let mut fds = [nix::poll::PollFd::new(
            file.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis().min(10_000)).unwrap_or(10_000);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break false,
        }
        let mut chunk = [0u8; 256];
        match file.read(&mut chunk) {
            Ok(0) => break false,
            Ok(n) => {
                if buf.len() < MAX_REPORT {
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    if timed_out {
        let _ = kill(child, Signal::SIGKILL);
    }
    let status = loop {
        match waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    if timed_out {
        return Report::new(
            "4.3.0",
            "delivery timed out; the delivery process was killed",
        );
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    if let Some((code, rest)) = text.split_once(' ') {
        if code.len() == 5 && matches!(code.as_bytes()[0], b'2' | b'4' | b'5') {
            return Report::new(code, clean(rest));
        }
    }
    Report::new(
        "4.3.0",
        format!("delivery process ended without a report: {status:?}"),
    )
}

/// Printable text for a diagnostic: control characters become spaces.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn child(job: &Job<'_>) -> Report {
    match sandbox::confine_delivery("local", &job.identity, &job.rules) {
        Ok(c) => tracing::debug!(uid = c.uid, gid = c.gid, "delivery child confined"),
        Err(e) => return Report::new("4.3.0", format!("cannot confine the delivery: {e}")),
    }
    if let Sink::Maildir(dir) = &job.sink {
        for sub in ["", "tmp", "new", "cur"] {
            let path = dir.join(sub);
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Report::new(
                        "4.2.0",
                        format!("cannot create maildir {}: {e}", path.display()),
                    )
                }
            }
        }
    }
    let text = mailbox_text(job.prepend, job.content);
    match &job.sink {
        Sink::Maildir(dir) => maildir(dir, &text, job.hostname),
        Sink::Mbox(path) => mbox(path, &text, job.sender),
        Sink::Command {
            command,
            home,
            env,
            limit,
        } => run_command(command, home, env, &text, *limit),
    }
}

/// Header lines first, then the content; CRLF becomes LF.
pub fn mailbox_text(prepend: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prepend.len() + content.len());
    for part in [prepend, content] {
        let mut i = 0;
        while i < part.len() {
            if part[i] == b'\r' && part.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(part[i]);
            i += 1;
        }
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

fn maildir(dir: &Path, text: &[u8], hostname: &str) -> Report {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let host: String = hostname
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    let name = format!(
        "{}.M{}P{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        host
    );
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Report::new("4.2.0", format!("cannot write {}: {e}", tmp.display()));
    }
    if let Err(e) = fs::rename(&tmp, &new) {
        let _ = fs::remove_file(&tmp);
        return Report::new(
            "4.2.0",
            format!("cannot rename into {}: {e}", new.display()),
        );
    }
    if let Err(e) = File::open(dir.join("new")).and_then(|d| d.sync_all()) {
        return Report::new("4.2.0", format!("cannot sync {}/new: {e}", dir.display()));
    }
    Report::new("2.0.0", format!("delivered to maildir {}", dir.display()))
}

/// `From ` line date: asctime form in UTC.
fn from_date() -> String {
    let d = daemon::date::rfc5322(SystemTime::now());
    // "Mon, 30 Nov 2026 13:34:55 +0000" -> "Mon Nov 30 13:34:55 2026"
    let p: Vec<&str> = d.split_whitespace().collect();
    if p.len() < 5 {
        return d;
    }
    format!(
        "{} {} {:>2} {} {}",
        p[0].trim_end_matches(','),
        p[2],
        p[1],
        p[4],
        p[3]
    )
}

fn mbox(path: &Path, text: &[u8], sender: &str) -> Report {
    let lock = PathBuf::from(format!("{}.lock", path.display()));
    let start = Instant::now();
    loop {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
        {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let stale = fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_LOCK);
                if stale {
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if start.elapsed() > LOCK_WAIT {
                    return Report::new(
                        "4.2.0",
                        format!("cannot lock {}: {} exists", path.display(), lock.display()),
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // No right to make a lock file (a spool users cannot write): go on with the
            // fcntl lock alone, as Postfix does when the dot-lock cannot be made.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => break,
            Err(e) => return Report::new("4.2.0", format!("cannot lock {}: {e}", lock.display())),
        }
    }
    let result = append_mbox(path, text, sender);
    let _ = fs::remove_file(&lock);
    result
}

fn append_mbox(path: &Path, text: &[u8], sender: &str) -> Report {
    let mut file = match OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Report::new("4.2.0", format!("cannot open {}: {e}", path.display())),
    };
    match file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Report::new("5.2.0", format!("{} is not a regular file", path.display())),
        Err(e) => return Report::new("4.2.0", format!("cannot stat {}: {e}", path.display())),
    }
    let flock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    if let Err(e) = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETLKW(&flock)) {
        return Report::new("4.2.0", format!("cannot lock {}: {e}", path.display()));
    }
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Report::new("4.2.0", format!("cannot stat {}: {e}", path.display())),
    };
    let mut out = format!("From {} {}\n", sender, from_date()).into_bytes();
    for line in text.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    out.push(b'\n');
    if let Err(e) = file.write_all(&out).and_then(|()| file.sync_all()) {
        let _ = file.set_len(size);
        return Report::new("4.2.0", format!("cannot write {}: {e}", path.display()));
    }
    Report::new("2.0.0", format!("delivered to mailbox {}", path.display()))
}

fn run_command(
    command: &str,
    home: &Path,
    env: &[(String, String)],
    text: &[u8],
    limit: Duration,
) -> Report {
    let cstr = |s: &str| std::ffi::CString::new(s).ok();
    let (Some(sh), Some(dash_c), Some(cmd)) = (cstr("/bin/sh"), cstr("-c"), cstr(command)) else {
        return Report::new("5.3.0", "a NUL in the command");
    };
    let argv = [cstr("sh").unwrap_or_default(), dash_c, cmd];
    let envp: Vec<std::ffi::CString> = env
        .iter()
        .filter_map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect();
    let pipes = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .and_then(|a| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map(|b| (a, b)));
    let ((in_rd, in_wr), (out_rd, out_wr)) = match pipes {
        Ok(p) => p,
        Err(e) => return Report::new("4.3.0", format!("cannot make pipes: {e}")),
    };
    let pid = match sandbox::fork_delivery_child() {
        Err(e) => return Report::new("4.3.0", format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            let placed = nix::unistd::dup2_stdin(&in_rd)
                .and_then(|()| nix::unistd::dup2_stdout(&out_wr))
                .and_then(|()| nix::unistd::dup2_stderr(&out_wr));
            if placed.is_ok() {
                if home.is_dir() {
                    let _ = nix::unistd::chdir(home);
                }
                let _ = nix::unistd::execve(&sh, &argv, &envp);
            }
            std::process::exit(75);
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    drop(in_rd);
    drop(out_wr);
    let start = Instant::now();
    let mut stdin = Some(File::from(in_wr));
    if let Some(s) = &stdin {
        let _ = nix::fcntl::fcntl(
            s,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let mut reader = Some(File::from(out_rd));
    let mut output = Vec::new();
    let mut written = 0usize;
    let timed_out = |pid: Pid| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        Report::new(
            "4.3.0",
            format!("command {command:?} exceeded the time limit of {limit:?}"),
        )
    };
    while stdin.is_some() || reader.is_some() {
        if start.elapsed() > limit {
            return timed_out(pid);
        }
        let mut fds = Vec::new();
        if let Some(r) = &reader {
            fds.push(nix::poll::PollFd::new(
                r.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        if let Some(s) = &stdin {
            fds.push(nix::poll::PollFd::new(
                s.as_fd(),
                nix::poll::PollFlags::POLLOUT,
            ));
        }
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 0;
        if reader.is_some() {
            if ready[0] {
                let mut chunk = [0u8; 4096];
                match reader.as_mut().map(|r| r.read(&mut chunk)) {
                    Some(Ok(n)) if n > 0 => {
                        let keep = n.min(MAX_OUTPUT.saturating_sub(output.len()));
                        output.extend_from_slice(&chunk[..keep]);
                    }
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    _ => reader = None,
                }
            }
            i = 1;
        }
        if stdin.is_some() && ready.get(i).copied().unwrap_or(false) {
            match stdin.as_mut().map(|s| s.write(&text[written..])) {
                Some(Ok(n)) => written += n,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The command stopped reading (EPIPE): what it read is what it gets.
                _ => written = text.len(),
            }
            if written >= text.len() {
                stdin = None;
            }
        }
    }
    let status = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if start.elapsed() > limit => return timed_out(pid),
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            Ok(s) => break s,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Report::new("4.3.0", format!("waiting for the command: {e}")),
        }
    };
    let out = clean(&String::from_utf8_lossy(&output));
    let said = if out.is_empty() {
        String::new()
    } else {
        format!(". Command output: {out}")
    };
    match status {
        WaitStatus::Exited(_, 0) => {
            Report::new("2.0.0", format!("delivered to command: {command}"))
        }
        WaitStatus::Exited(_, 75) => Report::new("4.3.0", format!("temporary failure{said}")),
        WaitStatus::Exited(_, code) => Report::new(
            "5.3.0",
            format!("Command died with status {code}: \"{command}\"{said}"),
        ),
        other => Report::new(
            "5.3.0",
            format!("Command died: {other:?}: \"{command}\"{said}"),
        ),
    }
}

/// The landlock rules of a Maildir or mbox delivery, and of a command.
pub fn rules_for(sink: &Sink) -> Vec<FsRule> {
    match sink {
        // The Maildir itself once it exists; before, the directory it is made in.
        Sink::Maildir(dir) if dir.is_dir() => vec![FsRule {
            path: dir.clone(),
            access: FsAccess::CREATE_REMOVE | FsAccess::REFER | FsAccess::MAKE_DIR,
            why: "the recipient's Maildir",
        }],
        Sink::Maildir(dir) => vec![FsRule {
            path: dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf),
            access: FsAccess::CREATE_REMOVE | FsAccess::REFER | FsAccess::MAKE_DIR,
            why: "where the recipient's Maildir is made",
        }],
        Sink::Mbox(path) => vec![FsRule {
            path: path
                .parent()
                .map_or_else(|| path.clone(), Path::to_path_buf),
            access: FsAccess::CREATE_REMOVE,
            why: "the mailbox file and its dot-lock",
        }],
        Sink::Command { home, .. } => {
            let mut rules = vec![FsRule {
                path: PathBuf::from("/usr"),
                access: FsAccess::EXEC,
                why: "/bin/sh and the programs a command runs",
            }];
            for (p, access) in [
                ("/etc/ld.so.cache", FsAccess::READ_FILE),
                ("/dev/null", FsAccess::READ_WRITE),
            ] {
                if Path::new(p).exists() {
                    rules.push(FsRule {
                        path: PathBuf::from(p),
                        access,
                        why: "what a program's start-up reads",
                    });
                }
            }
            if home.is_dir() {
                rules.push(FsRule {
                    path: home.clone(),
                    access: FsAccess::CREATE_REMOVE | FsAccess::MAKE_DIR,
                    why: "the recipient's home, where the command runs",
                });
            }
            rules
        }
    }
}

/// Reads a user's `.forward` in a child that runs as the user, landlocked to read that
/// one file. `Ok(None)` when there is none; the file must be owned by the user and be a
/// regular file (Postfix refuses others), at most 64 KiB.
pub fn read_forward(identity: &Identity, home: &Path) -> Result<Option<Vec<u8>>, String> {
    let path = home.join(".forward");
    let job_rules = vec![FsRule {
        path: home.to_path_buf(),
        access: FsAccess::READ_FILE,
        why: "the user's .forward",
    }];
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    match sandbox::fork_delivery_child().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(rd);
            let mut out = File::from(wr);
            let code = match forward_child(identity, &path, &job_rules) {
                Ok(Some(bytes)) => {
                    let _ = out.write_all(b"F");
                    let _ = out.write_all(&bytes);
                    0
                }
                Ok(None) => {
                    let _ = out.write_all(b"N");
                    0
                }
                Err(e) => {
                    let _ = out.write_all(format!("E{e}").as_bytes());
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut buf = Vec::new();
            let read = File::from(rd).take(64 * 1024 + 1024).read_to_end(&mut buf);
            let _ = waitpid(child, Some(WaitPidFlag::empty()));
            read.map_err(|e| format!("reading .forward: {e}"))?;
            match buf.split_first() {
                Some((b'F', rest)) => Ok(Some(rest.to_vec())),
                Some((b'N', _)) => Ok(None),
                Some((b'E', rest)) => Err(clean(&String::from_utf8_lossy(rest))),
                _ => Err("the .forward reader ended without an answer".to_owned()),
            }
        }
    }
}

fn forward_child(
    identity: &Identity,
    path: &Path,
    rules: &[FsRule],
) -> Result<Option<Vec<u8>>, String> {
    if !path.parent().is_some_and(Path::is_dir) {
        return Ok(None);
    }
    sandbox::confine_delivery("local", identity, rules).map_err(|e| e.to_string())?;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "{}: not a regular file owned by the user; ignored",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(64 * 1024)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A numeric test account as root (no passwd entry needed), else the invoking user.
    fn test_identity() -> Identity {
        if nix::unistd::geteuid().is_root() {
            Identity {
                uid: 64_123,
                gid: 64_123,
                groups: Vec::new(),
            }
        } else {
            Identity {
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                groups: Vec::new(),
            }
        }
    }

    fn scratch(name: &str, id: &Identity) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("local-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(
                &dir,
                Some(nix::unistd::Uid::from_raw(id.uid)),
                Some(nix::unistd::Gid::from_raw(id.gid)),
            )
            .unwrap();
        }
        dir
    }

    fn job<'a>(id: Identity, sink: Sink, prepend: &'a [u8], content: &'a [u8]) -> Job<'a> {
        Job {
            identity: id,
            rules: rules_for(&sink),
            sink,
            prepend,
            content,
            sender: "a@example.org",
            hostname: "host.example.test",
            deadline: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_maildir_delivery_lands_once_owned_by_the_recipient_mode_0600() {
        let id = test_identity();
        let home = scratch("maildir", &id);
        let prepend = b"Return-Path: <a@example.org>\r\nDelivered-To: u@example.test\r\n";
        let content = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n";
        let sink = Sink::Maildir(home.join("Maildir"));
        let report = run(&job(id.clone(), sink, prepend, content));
        assert_eq!(report.status, "2.0.0", "{report:?}");
        let new: Vec<_> = fs::read_dir(home.join("Maildir/new"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(new.len(), 1);
        let meta = fs::metadata(&new[0]).unwrap();
        assert_eq!(meta.uid(), id.uid);
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = fs::read_to_string(&new[0]).unwrap();
        assert!(
            text.starts_with(
                "Return-Path: <a@example.org>\nDelivered-To: u@example.test\nReceived: from x\n"
            ),
            "{text}"
        );
        assert_eq!(fs::read_dir(home.join("Maildir/tmp")).unwrap().count(), 0);
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn an_mbox_delivery_appends_with_from_lines_and_quoting() {
        let id = test_identity();
        let spool = scratch("mbox", &id);
        let path = spool.join("user");
        for _ in 0..2 {
            let sink = Sink::Mbox(path.clone());
            let report = run(&job(
                id.clone(),
                sink,
                b"",
                b"Subject: x\r\n\r\nFrom me\r\n",
            ));
            assert_eq!(report.status, "2.0.0", "{report:?}");
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches("\nFrom a@example.org ").count()
                + usize::from(text.starts_with("From a@example.org ")),
            2,
            "{text}"
        );
        assert_eq!(text.matches("\n>From me\n").count(), 2, "{text}");
        assert_eq!(fs::metadata(&path).unwrap().uid(), id.uid);
        assert!(!spool.join("user.lock").exists());
        fs::remove_dir_all(&spool).unwrap();
    }

    /// As root, a delivery child runs as the recipient's uid with every capability set empty
    /// (and `confine_delivery` proved that `setresuid(0, 0, 0)` fails); the command's own view
    /// of `/proc/self/status` shows it.
    #[test]
    fn a_command_runs_as_the_recipient_without_capabilities() {
        let id = test_identity();
        let home = scratch("command", &id);
        let sink = Sink::Command {
            command: "grep -E '^(Uid|Gid|CapEff|CapPrm|CapInh|CapAmb)' /proc/self/status; echo RECIPIENT=$RECIPIENT; cat >/dev/null; exit 3".to_owned(),
            home: home.clone(),
            env: vec![
                ("RECIPIENT".to_owned(), "u@example.test".to_owned()),
                ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ],
            limit: Duration::from_secs(20),
        };
        let mut j = job(id.clone(), sink, b"", b"Subject: x\r\n\r\nbody\r\n");
        j.rules.push(FsRule {
            path: PathBuf::from("/proc"),
            access: FsAccess::READ_ONLY,
            why: "the test reads the child's status",
        });
        let report = run(&j);
        assert_eq!(report.status, "5.3.0", "{report:?}");
        let uid = id.uid;
        assert!(
            report
                .text
                .contains(&format!("Uid: {uid} {uid} {uid} {uid}")),
            "{report:?}"
        );
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert!(
                report.text.contains(&format!("{set}: 0000000000000000")),
                "{set}: {report:?}"
            );
        }
        assert!(
            report.text.contains("RECIPIENT=u@example.test"),
            "{report:?}"
        );
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn a_command_that_says_tempfail_is_deferred_and_one_that_hangs_is_killed() {
        let id = test_identity();
        let home = scratch("tempfail", &id);
        let make = |command: &str, limit| Sink::Command {
            command: command.to_owned(),
            home: home.clone(),
            env: Vec::new(),
            limit,
        };
        let report = run(&job(
            id.clone(),
            make("exit 75", Duration::from_secs(20)),
            b"",
            b"x\r\n",
        ));
        assert_eq!(report.status, "4.3.0", "{report:?}");
        let report = run(&job(
            id.clone(),
            make("exit 0", Duration::from_secs(20)),
            b"",
            b"x\r\n",
        ));
        assert_eq!(report.status, "2.0.0", "{report:?}");
        let report = run(&job(
            id,
            make("while :; do :; done", Duration::from_secs(1)),
            b"",
            b"x\r\n",
        ));
        assert_eq!(report.status, "4.3.0", "{report:?}");
        assert!(report.text.contains("time limit"), "{report:?}");
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn root_is_refused_as_a_delivery_identity() {
        let root = Identity {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        };
        let dir = std::env::temp_dir();
        let report = run(&job(root, Sink::Mbox(dir.join("never")), b"", b"x\r\n"));
        assert_eq!(report.status, "4.3.0", "{report:?}");
        assert!(report.text.contains("root is never"), "{report:?}");
    }
}
