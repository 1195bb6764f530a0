//! One delivery in a child process: fork, become the recipient, confine, check, write.
//!
//! Trusts: the destination the resolver chose (from first-hand tables). Does not trust: the
//! message (a remote client's bytes, read by the child from the queue file descriptor), the
//! mailbox paths (a user controls their home, and someone may have planted a file in the
//! spool: every file is opened through `mailbox::safe_open`), a `.forward` (its owner's
//! words, read and parsed by a child running as that owner), or a command (it runs as its
//! user, confined, in its own session, with a time limit).
//!
//! What the privileged parent itself does, and nothing more: for a spool mailbox it makes the
//! file when it is missing (`O_EXCL|O_NOFOLLOW`, 0600, `fchown` to the recipient, in a
//! directory no user can write) and holds the dot-lock while the child writes; it forks, waits
//! with a deadline, and decodes the child's one report (`protocol::local::FromDeliveryChild`,
//! postcard over a pipe). It reads no byte of the message and no byte of a user's file.
//!
//! Decisions:
//! - Before it writes, the child checks the message's header for `Delivered-To: RECIPIENT`
//!   (a forwarding loop bounces `5.4.6`, as Postfix), so the parent never reads the header.
//! - The child closes every inherited descriptor but its report pipe and the queue file: a
//!   child that a hostile `.forward` or message subverted cannot write to the queue manager's
//!   or cleanup's channel.
//! - Mailboxes are written by the `mailbox` crate (shared with `virtual`): Maildir in the home
//!   (`home_mailbox` ending in `/`), an mbox in the home, the spool mbox, or a file an alias or
//!   `.forward` names (no owner check, a missing directory bounces `5.2.0`, as Postfix).
//! - `/dev/null` as a file destination is delivered without a child and without writing, as
//!   Postfix's `local` does.
//! - `|command`: `/bin/sh -c COMMAND` in the recipient's home, in a session of its own
//!   (`setsid`), with exactly `HOME USER LOGNAME SHELL RECIPIENT SENDER PATH=/usr/bin:/bin`;
//!   the message (LF line ends) on stdin; stdout and stderr collected (400 octets kept for the
//!   diagnostic). The command has finished when it has exited and its output is closed: a
//!   process it left in the background holding the output keeps it running. At
//!   `command_time_limit` the whole process group is killed and the delivery deferred
//!   (`4.3.0 Command time limit exceeded`). Exit statuses map as Postfix's `sys_exits` table
//!   ([`sys_exit`]); any other non-zero status or a signal bounces `5.3.0`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mailbox::{dirs, dotlock, maildir, mbox, safe_open, Content, Envelope, LockOptions};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use protocol::local::{ForwardEntry, FromDeliveryChild, MAX_REPORT};
use protocol::queue::Diagnostic;
use sandbox::{FsAccess, FsRule, Identity};

/// Command output kept for the diagnostic.
const MAX_OUTPUT: usize = 400;
/// The largest `.forward` read.
const MAX_FORWARD: u64 = 64 * 1024;

/// What a child writes, and where.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A Maildir below the recipient's home.
    Maildir { home: PathBuf, relative: PathBuf },
    /// An mbox file below the recipient's home.
    HomeMbox { home: PathBuf, relative: PathBuf },
    /// `mail_spool_directory/USER`: made and dot-locked by the parent.
    SpoolMbox(PathBuf),
    /// A file an alias, include list or `.forward` names.
    File(PathBuf),
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

    fn of(v: &mailbox::Verdict) -> Report {
        Report::new(&v.status.to_string(), v.text.clone())
    }
}

/// A delivery to run: as whom, confined to what, writing what.
pub struct Job<'a> {
    pub identity: Identity,
    pub rules: Vec<FsRule>,
    pub sink: Sink,
    /// `Return-Path:` (the sender without brackets, empty for `<>`) and `Delivered-To:`
    /// (the recipient address, also the loop check's key).
    pub envelope: Envelope<'a>,
    pub content: &'a Content<'a>,
    pub hostname: &'a str,
    pub lock: LockOptions,
    /// A bound on the whole child, beyond a command's own limit.
    pub deadline: Duration,
    /// Where a `|command` runs: the launcher, when this process may not exec itself.
    pub launcher: Option<&'a crate::launcher::Launcher>,
}

/// Runs `job` in a forked child and returns what it reported.
pub fn run(job: &Job<'_>) -> Report {
    match (&job.sink, job.launcher) {
        (Sink::File(path), _) if path == Path::new("/dev/null") => {
            return Report::new("2.0.0", "delivered to file: /dev/null");
        }
        (Sink::Command { .. }, Some(launcher)) => return launcher.run(job),
        _ => {}
    }
    // The privileged side of a spool mailbox: make it the recipient's before anyone else can,
    // and hold its dot-lock (the directory is not writable by the recipient).
    let _held = match &job.sink {
        Sink::SpoolMbox(path) => {
            if let Err(e) = safe_open::create_for(path, job.identity.uid, job.identity.gid) {
                return Report::of(&mailbox::Verdict::refused(&e, false));
            }
            match dotlock::acquire(path, &job.lock) {
                Ok(lock) => Some(lock),
                Err(e @ dotlock::LockError::Held { .. }) => {
                    return Report::new("4.2.0", e.to_string())
                }
                Err(dotlock::LockError::Io { lock, source }) => {
                    return Report::of(&mailbox::Verdict::from_io(
                        &format!("cannot create dot-lock {lock}"),
                        &source,
                    ))
                }
            }
        }
        _ => None,
    };
    let keep = [job.content.file().as_raw_fd()];
    in_child(&keep, job.deadline, || child(job))
}

/// Forks; the child closes every descriptor but `keep` and its report pipe, runs `body` and
/// reports through the pipe; the parent waits at most `deadline` and decodes the report.
pub fn in_child(
    keep: &[RawFd],
    deadline: Duration,
    body: impl FnOnce() -> FromDeliveryChild,
) -> Report {
    let (rd, wr) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return Report::new("4.3.0", format!("cannot make a pipe: {e}")),
    };
    // INVARIANT: this daemon is single-threaded (its sandbox refused a second thread), so the
    // child may run ordinary code.
    match sandbox::fork_delivery_child() {
        Err(e) => Report::new("4.3.0", format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(rd);
            let mut kept = keep.to_vec();
            kept.push(wr.as_raw_fd());
            close_all_but(&kept);
            let report = body();
            let mut out = File::from(wr);
            let code = match &report {
                FromDeliveryChild::Result { status, .. } => match status.class() {
                    2 => 0,
                    4 => 75,
                    _ => 1,
                },
                _ => 0,
            };
            if let Ok(bytes) = protocol::encode(&report) {
                let _ = out.write_all(&bytes);
            }
            std::process::exit(code);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            let (bytes, status) = wait_for_report(child, rd, deadline);
            match status {
                None => Report::new(
                    "4.3.0",
                    "delivery timed out; the delivery process was killed",
                ),
                Some(status) => match protocol::decode::<FromDeliveryChild>(&bytes) {
                    Ok(FromDeliveryChild::Result { status, diagnostic }) => {
                        Report::new(&status.to_string(), diagnostic.as_str())
                    }
                    Ok(other) => Report::new(
                        "4.3.0",
                        format!(
                            "the delivery process sent {} instead of a result",
                            other_kind(&other)
                        ),
                    ),
                    Err(e) => Report::new(
                        "4.3.0",
                        format!("delivery process ended without a valid report ({e}): {status:?}"),
                    ),
                },
            }
        }
    }
}

fn other_kind(m: &FromDeliveryChild) -> &'static str {
    protocol::Message::kind(m)
}

/// Closes every descriptor from 3 up that is not in `keep`.
pub fn close_all_but(keep: &[RawFd]) {
    sandbox::close_descriptors_except(keep);
}

/// Reads the child's report until EOF, at most [`MAX_REPORT`] octets, within `deadline`, and
/// reaps the child; `None` when the deadline passed (the child was killed).
fn wait_for_report(child: Pid, rd: OwnedFd, deadline: Duration) -> (Vec<u8>, Option<WaitStatus>) {
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
        let mut chunk = [0u8; 4096];
        match file.read(&mut chunk) {
            Ok(0) => break false,
            Ok(n) => {
                if buf.len() + n <= MAX_REPORT {
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
        return (buf, None);
    }
    (buf, Some(status.unwrap_or(WaitStatus::StillAlive)))
}

/// Printable text for a diagnostic: control characters become spaces.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A report as the child sends it: a status and a diagnostic (cleaned and cut to fit).
pub fn result(status: &str, text: &str) -> FromDeliveryChild {
    let status = status
        .parse()
        .or_else(|_| "4.3.0".parse())
        .unwrap_or_else(|_| unreachable_status());
    let mut text = clean(text);
    let mut cut = text.len().min(protocol::queue::MAX_DIAGNOSTIC_LEN);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    FromDeliveryChild::Result {
        status,
        diagnostic: Diagnostic::new(&text)
            .or_else(|_| Diagnostic::new("delivery report unprintable"))
            .unwrap_or_else(|_| unreachable_diagnostic()),
    }
}

fn unreachable_status() -> protocol::EnhancedStatus {
    // "4.3.0" is a literal valid status: this is never reached.
    protocol::EnhancedStatus::new(4, 3, 0).unwrap_or_else(|_| unreachable_status())
}

fn unreachable_diagnostic() -> Diagnostic {
    // A constant short printable text is always a valid diagnostic.
    Diagnostic::new("").unwrap_or_else(|_| unreachable_diagnostic())
}

fn from_verdict(v: &mailbox::Verdict) -> FromDeliveryChild {
    result(&v.status.to_string(), &v.text)
}

fn child(job: &Job<'_>) -> FromDeliveryChild {
    // The uid the child now runs as (the recipient's; unprivileged, the invoking user's) is the
    // owner every mailbox file and directory must have.
    let owner = match sandbox::confine_delivery("local", &job.identity, &job.rules) {
        Ok(c) => c.uid,
        Err(e) => return result("4.3.0", &format!("cannot confine the delivery: {e}")),
    };
    // The loop check reads the message's header: here, as the recipient, not in the parent.
    match job.content.delivered_to() {
        Ok(seen) if seen.contains(&job.envelope.recipient.to_lowercase()) => {
            return result(
                "5.4.6",
                &format!("mail forwarding loop for {}", job.envelope.recipient),
            )
        }
        Ok(_) => {}
        Err(e) => return result("4.3.0", &format!("cannot read the queue file: {e}")),
    }
    let mailbox_opts = |dotlock, create| mbox::Options {
        kind: mbox::Kind::Mailbox { owner },
        limit: 0,
        lock: job.lock,
        dotlock,
        create,
    };
    let verdict = match &job.sink {
        Sink::Maildir { home, relative } => maildir::deliver(
            home,
            relative,
            &job.envelope,
            job.content,
            &maildir::Options {
                limit: 0,
                hostname: job.hostname,
                owner,
            },
        ),
        Sink::HomeMbox { home, relative } => {
            if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
                if let Err(e) = dirs::ensure(home, parent, owner) {
                    return from_verdict(&mailbox::Verdict::refused_dir(&e));
                }
            }
            mbox::deliver(
                &home.join(relative),
                &job.envelope,
                job.content,
                &mailbox_opts(mbox::DotLocking::Take, true),
            )
        }
        Sink::SpoolMbox(path) => mbox::deliver(
            path,
            &job.envelope,
            job.content,
            &mailbox_opts(mbox::DotLocking::Held, false),
        ),
        Sink::File(path) => mbox::deliver(
            path,
            &job.envelope,
            job.content,
            &mbox::Options {
                kind: mbox::Kind::File,
                limit: 0,
                lock: job.lock,
                dotlock: mbox::DotLocking::MayFail,
                create: true,
            },
        ),
        Sink::Command {
            command,
            home,
            env,
            limit,
        } => {
            let mut text = mailbox::prepended(&job.envelope).into_bytes();
            if let Err(e) = job.content.copy_lf(&mut text, false) {
                return result("4.3.0", &format!("cannot read the queue file: {e}"));
            }
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            let r = run_command(command, home, env, &text, *limit);
            return result(&r.status, &r.text);
        }
    };
    from_verdict(&verdict)
}

/// Postfix's `sys_exits` table: the status and text of an exit code from `sysexits.h`.
pub fn sys_exit(code: i32) -> Option<(&'static str, &'static str)> {
    Some(match code {
        64 => ("5.3.0", "command line usage error"),
        65 => ("5.6.0", "data format error"),
        66 => ("5.3.0", "cannot open input"),
        67 => ("5.1.1", "user unknown"),
        68 => ("5.1.2", "host name unknown"),
        69 => ("5.3.0", "service unavailable"),
        70 => ("5.3.0", "internal software error"),
        71 => ("4.3.0", "system resource problem"),
        72 => ("5.3.0", "critical OS file missing"),
        73 => ("5.2.0", "can't create user output file"),
        74 => ("5.3.0", "input/output error"),
        75 => ("4.3.0", "temporary failure"),
        76 => ("5.5.0", "remote error in protocol"),
        77 => ("5.7.0", "permission denied"),
        78 => ("5.3.5", "local configuration error"),
        _ => return None,
    })
}

fn run_command(
    command: &str,
    home: &Path,
    env: &[(String, String)],
    text: &[u8],
    limit: Duration,
) -> Report {
    let cstr = |s: &str| std::ffi::CString::new(s).ok();
    let (Some(sh), Some(arg0), Some(dash_c), Some(cmd)) =
        (cstr("/bin/sh"), cstr("sh"), cstr("-c"), cstr(command))
    else {
        return Report::new("5.3.0", "a NUL in the command");
    };
    let argv = [arg0, dash_c, cmd];
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
            // Its own session and process group: the time limit kills all of it.
            let placed = nix::unistd::setsid()
                .map(drop)
                .and_then(|()| nix::unistd::dup2_stdin(&in_rd))
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
    let mut exited: Option<WaitStatus> = None;
    let timed_out = |pid: Pid, exited: bool| {
        // The whole process group: what the command left in the background too.
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
        if !exited {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        Report::new(
            "4.3.0",
            format!("Command time limit exceeded: \"{command}\""),
        )
    };
    // Done when the shell has exited and the output is closed (a background process that
    // keeps the output open keeps the delivery going, up to the time limit).
    while exited.is_none() || reader.is_some() {
        if start.elapsed() > limit {
            return timed_out(pid, exited.is_some());
        }
        if exited.is_none() {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
                Ok(s) => {
                    exited = Some(s);
                    stdin = None;
                }
                Err(e) => return Report::new("4.3.0", format!("waiting for the command: {e}")),
            }
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
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
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
    let Some(status) = exited else {
        return Report::new("4.3.0", "the command's status was lost");
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
        WaitStatus::Exited(_, code) => {
            let dsn = sys_exit(code).map_or("5.3.0", |(dsn, _)| dsn);
            Report::new(
                dsn,
                format!("Command died with status {code}: \"{command}\"{said}"),
            )
        }
        other => Report::new(
            "5.3.0",
            format!("Command died: {other:?}: \"{command}\"{said}"),
        ),
    }
}

/// The landlock rules of a delivery: the one mailbox (or its directory), or what a command
/// needs.
pub fn rules_for(sink: &Sink) -> Vec<FsRule> {
    match sink {
        // The home the Maildir or mbox lies in; `mailbox::dirs` checks each directory below.
        Sink::Maildir { home, .. } | Sink::HomeMbox { home, .. } => vec![FsRule {
            path: home.clone(),
            access: FsAccess::CREATE_REMOVE | FsAccess::REFER | FsAccess::MAKE_DIR,
            why: "the recipient's mailbox below its home",
        }],
        // Existing files of the spool, to read and append (the parent made the mailbox and
        // holds its dot-lock; the recipient creates and removes nothing there, and DAC keeps
        // it to its own file).
        Sink::SpoolMbox(path) => vec![FsRule {
            path: path
                .parent()
                .map_or_else(|| path.clone(), Path::to_path_buf),
            access: FsAccess::READ_WRITE,
            why: "the recipient's spool mailbox",
        }],
        Sink::File(path) => vec![FsRule {
            path: path
                .parent()
                .map_or_else(|| path.clone(), Path::to_path_buf),
            access: FsAccess::CREATE_REMOVE,
            why: "the file and its dot-lock",
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

/// Reads and parses a user's `.forward` in a child that runs as the user, landlocked to read
/// that home: `Ok(None)` when there is none; the file must be a regular file owned by the user
/// (Postfix refuses others), at most 64 KiB. The parent gets the parsed entries, decoded by
/// `protocol`, never the file's bytes.
pub fn read_forward(identity: &Identity, home: &Path) -> Result<Option<Vec<ForwardEntry>>, String> {
    let path = home.join(".forward");
    let rules = vec![FsRule {
        path: home.to_path_buf(),
        access: FsAccess::READ_FILE,
        why: "the user's .forward",
    }];
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    match sandbox::fork_delivery_child().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(rd);
            close_all_but(&[wr.as_raw_fd()]);
            let report = match forward_child(identity, &path, &rules) {
                Ok(Some(entries)) => match entries.try_into() {
                    Ok(list) => FromDeliveryChild::Forward(list),
                    Err(_) => result("5.3.0", &format!("{}: too many entries", path.display())),
                },
                Ok(None) => FromDeliveryChild::NoForward,
                Err(e) => result("4.3.0", &e),
            };
            let bytes = protocol::encode(&report).unwrap_or_default();
            let _ = File::from(wr).write_all(&bytes);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let (bytes, status) = wait_for_report(child, rd, Duration::from_secs(60));
            if status.is_none() {
                return Err("reading .forward timed out".to_owned());
            }
            match protocol::decode::<FromDeliveryChild>(&bytes) {
                Ok(FromDeliveryChild::Forward(list)) => Ok(Some(list.into_vec())),
                Ok(FromDeliveryChild::NoForward) => Ok(None),
                Ok(FromDeliveryChild::Result { diagnostic, .. }) => {
                    Err(diagnostic.as_str().to_owned())
                }
                Err(e) => Err(format!("the .forward reader sent no valid answer: {e}")),
            }
        }
    }
}

fn forward_child(
    identity: &Identity,
    path: &Path,
    rules: &[FsRule],
) -> Result<Option<Vec<ForwardEntry>>, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if !path.parent().is_some_and(Path::is_dir) {
        return Ok(None);
    }
    let owner = sandbox::confine_delivery("local", identity, rules)
        .map_err(|e| e.to_string())?
        .uid;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.uid() != owner {
        return Err(format!(
            "{}: not a regular file owned by the user; ignored",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FORWARD)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let targets = policy::aliases::parse_include(&text, path).map_err(|e| e.to_string())?;
    targets
        .into_iter()
        .map(entry_of)
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

fn entry_of(t: policy::aliases::Target) -> Result<ForwardEntry, String> {
    use policy::aliases::Target;
    let text = |s: String| {
        protocol::BoundedString::try_from(s).map_err(|e| format!(".forward entry: {e}"))
    };
    Ok(match t {
        Target::Address { address, escaped } => ForwardEntry::Address {
            address: text(address)?,
            escaped,
        },
        Target::Command(c) => ForwardEntry::Command(text(c)?),
        Target::File(p) => ForwardEntry::File(text(p.to_string_lossy().into_owned())?),
        Target::Include(p) => ForwardEntry::Include(text(p.to_string_lossy().into_owned())?),
    })
}

/// A `.forward` entry, decoded from the child's report, as the resolver's target.
pub fn target_of(e: ForwardEntry) -> policy::aliases::Target {
    use policy::aliases::Target;
    match e {
        ForwardEntry::Address { address, escaped } => Target::Address {
            address: address.into_string(),
            escaped,
        },
        ForwardEntry::Command(c) => Target::Command(c.into_string()),
        ForwardEntry::File(p) => Target::File(PathBuf::from(p.into_string())),
        ForwardEntry::Include(p) => Target::Include(PathBuf::from(p.into_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tests of delivery children fork, so they run in the single-threaded program
    // `tests/children.rs`.

    #[test]
    fn exit_statuses_map_as_postfix_s_sys_exits() {
        assert_eq!(sys_exit(67), Some(("5.1.1", "user unknown")));
        assert_eq!(sys_exit(75), Some(("4.3.0", "temporary failure")));
        assert_eq!(sys_exit(71).map(|s| s.0), Some("4.3.0"));
        assert_eq!(sys_exit(78).map(|s| s.0), Some("5.3.5"));
        assert_eq!(sys_exit(1), None);
        assert_eq!(sys_exit(63), None);
        assert_eq!(sys_exit(79), None);
    }
}
