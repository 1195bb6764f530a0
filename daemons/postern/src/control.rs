//! Talking to a running master: its pid file and lock, signals, and the start-up handshake.
//!
//! The contract with `postern-master` (see `daemons/master/src/main.rs`): the master holds an
//! exclusive `flock` on `$queue_directory/pid/master.pid` for its whole life and writes its pid there;
//! a pid file whose lock is free is stale. Started by `postern start` with stdout a pipe, it prints
//! exactly one line `ready pid=N` once its listeners are bound, or its reason on stderr and exits 1.
//! It keeps `$queue_directory/pid/master.status` (a small text table) current.
//!
//! Trusts: the pid file's lock (the kernel's word that a process holds it). Does not trust the pid
//! file's content or the master's output: both are parsed strictly and bounded, and a pid is only
//! signalled while its pid file is locked.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::layout::PID_SUBDIR;

pub const PID_FILE: &str = "master.pid";
pub const STATUS_FILE: &str = "master.status";
pub const RELOAD_FILE: &str = "master.reload";

/// How long `reload` waits for the master's outcome: the master reports once every resident
/// service has a new process, after at most 60 s (its `reload::SETTLE_LIMIT`); this adds a margin.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(75);

/// The most of `master.reload` read: a line per failure of one reload.
const RELOAD_FILE_MAX: u64 = 64 * 1024;
pub const MASTER_PROGRAM: &str = "postern-master";

/// How long `start` waits for `ready pid=N`: binding listeners and writing the pid file takes
/// milliseconds; this only bounds a master that hangs.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Added to `master_stop_timeout` while `stop` waits: the master kills what remains after its
/// timeout and then needs a moment to reap and remove its pid file.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// How often a waiting command looks at the pid file's lock.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A pid file holds one decimal number and a newline; anything longer is not a pid file.
const PID_FILE_MAX: u64 = 32;

/// The most of the master's stderr kept for the failure message of `start`.
const STDERR_KEEP: usize = 16 * 1024;

/// The most of `master.status` shown: a line per service, a few dozen services at most.
const STATUS_FILE_MAX: u64 = 64 * 1024;

/// A `ready` line is short; a longer first line is not one.
const READY_LINE_MAX: usize = 64;

/// How many times `inspect` re-reads a locked pid file that is still empty (a master between
/// taking the lock and writing its pid), one [`POLL_INTERVAL`] apart.
const EMPTY_PID_RETRIES: u32 = 20;

/// The environment variables passed to the master; everything else is cleared, as Postfix's
/// `import_environment` does.
const MASTER_ENVIRONMENT: [&str; 1] = ["TZ"];

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: locked by a running master but holds no valid pid ({content:?})")]
    BadPidFile { path: PathBuf, content: String },
    #[error("cannot find {MASTER_PROGRAM}: looked in {}", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MasterNotFound(Vec<PathBuf>),
    #[error("cannot run {path}: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("the mail system failed to start{}", stderr_suffix(.0))]
    StartFailed(String),
    #[error("the master (PID {pid}) did not report ready within {} s; stopped it", .timeout.as_secs())]
    StartTimeout { pid: u32, timeout: Duration },
    #[error("cannot signal PID {pid}: {errno}")]
    Signal { pid: i32, errno: Errno },
    #[error("the mail system (PID {pid}) did not stop within {} s", .timeout.as_secs())]
    StopTimeout { pid: i32, timeout: Duration },
    #[error("the master (PID {pid}) did not report the reload's outcome within {} s", .timeout.as_secs())]
    ReloadTimeout { pid: i32, timeout: Duration },
    #[error("the master (PID {pid}) exited during the reload")]
    ReloadMasterGone { pid: i32 },
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(": {trimmed}")
    }
}

pub fn pid_file(queue_directory: &Path) -> PathBuf {
    queue_directory.join(PID_SUBDIR).join(PID_FILE)
}

pub fn status_file(queue_directory: &Path) -> PathBuf {
    queue_directory.join(PID_SUBDIR).join(STATUS_FILE)
}

pub fn reload_file(queue_directory: &Path) -> PathBuf {
    queue_directory.join(PID_SUBDIR).join(RELOAD_FILE)
}

/// The outcome of a master's reload, as `master.reload` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub pid: i32,
    pub generation: u64,
    /// What the reload could not do, one line each; empty when it succeeded.
    pub errors: Vec<String>,
}

/// `master PID generation N`, then `error TEXT` lines; anything else is not the file.
pub fn parse_reload(text: &str) -> Option<ReloadOutcome> {
    let mut lines = text.lines();
    let mut head = lines.next()?.split(' ');
    let (Some("master"), Some(pid), Some("generation"), Some(generation), None) = (
        head.next(),
        head.next(),
        head.next(),
        head.next(),
        head.next(),
    ) else {
        return None;
    };
    let pid = parse_pid(pid)?;
    if !generation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let generation = generation.parse().ok()?;
    let mut errors = Vec::new();
    for line in lines {
        let e = line.strip_prefix("error ")?;
        if e.chars().any(char::is_control) {
            return None;
        }
        errors.push(e.to_owned());
    }
    Some(ReloadOutcome {
        pid,
        generation,
        errors,
    })
}

/// The outcome file, if it exists and parses.
pub fn read_reload(path: &Path) -> Option<ReloadOutcome> {
    let mut bytes = Vec::new();
    File::open(path)
        .ok()?
        .take(RELOAD_FILE_MAX)
        .read_to_end(&mut bytes)
        .ok()?;
    parse_reload(std::str::from_utf8(&bytes).ok()?)
}

/// Sends SIGHUP to master `pid` and waits, up to `timeout`, until `master.reload` (at
/// `outcome_path`) names a reload of that master later than the one it named before.
pub fn reload(
    outcome_path: &Path,
    pid: i32,
    timeout: Duration,
) -> Result<ReloadOutcome, ControlError> {
    let before = read_reload(outcome_path)
        .filter(|o| o.pid == pid)
        .map_or(0, |o| o.generation);
    signal(pid, Signal::SIGHUP)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(o) = read_reload(outcome_path).filter(|o| o.pid == pid && o.generation > before)
        {
            return Ok(o);
        }
        if !process_alive(pid) {
            return Err(ControlError::ReloadMasterGone { pid });
        }
        if Instant::now() >= deadline {
            return Err(ControlError::ReloadTimeout { pid, timeout });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// What the pid file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterState {
    /// No pid file.
    NotRunning,
    /// A pid file nobody holds locked: left behind by a master that died. `pid` is what it says.
    Stale { pid: Option<i32> },
    /// Locked by a live master.
    Running { pid: i32 },
}

/// Looks at the pid file and its lock.
pub fn inspect(pid_path: &Path) -> Result<MasterState, ControlError> {
    let io_err = |source| ControlError::Io {
        path: pid_path.to_path_buf(),
        source,
    };
    let mut retries = 0;
    loop {
        let file = match File::open(pid_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(MasterState::NotRunning),
            Err(e) => return Err(io_err(e)),
        };
        let content = read_bounded(&file).map_err(io_err)?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            // Dropping the lock releases it at once: looking must not keep a master from starting.
            Ok(_lock) => {
                return Ok(MasterState::Stale {
                    pid: parse_pid(&content),
                })
            }
            Err((_, Errno::EWOULDBLOCK)) => {}
            Err((_, errno)) => return Err(io_err(io::Error::from(errno))),
        }
        // Locked. A master may have taken the lock and not yet written its pid.
        let content = read_bounded(&File::open(pid_path).map_err(io_err)?).map_err(io_err)?;
        match parse_pid(&content) {
            Some(pid) => return Ok(MasterState::Running { pid }),
            None if content.is_empty() && retries < EMPTY_PID_RETRIES => {
                retries += 1;
                thread::sleep(POLL_INTERVAL);
            }
            None => {
                return Err(ControlError::BadPidFile {
                    path: pid_path.to_path_buf(),
                    content,
                })
            }
        }
    }
}

fn read_bounded(file: &File) -> io::Result<String> {
    let mut bytes = Vec::new();
    file.take(PID_FILE_MAX).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A pid file's content: optional white space around one positive decimal number.
pub fn parse_pid(content: &str) -> Option<i32> {
    let s = content.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i32>().ok().filter(|pid| *pid > 1)
}

/// A `ready pid=N` line.
pub fn parse_ready(line: &str) -> Option<u32> {
    let pid = line
        .trim_end_matches(['\n', '\r'])
        .strip_prefix("ready pid=")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|pid| *pid > 1)
}

/// The master's status table, bounded, with anything but printable text and newlines replaced.
pub fn read_status(path: &Path) -> Result<String, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io_err)?
        .take(STATUS_FILE_MAX)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let mut text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c == '\n' || !c.is_control() { c } else { '?' })
        .collect();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

pub fn signal(pid: i32, sig: Signal) -> Result<(), ControlError> {
    kill(Pid::from_raw(pid), sig).map_err(|errno| ControlError::Signal { pid, errno })
}

/// Sends SIGTERM and waits until the master has exited, up to `timeout`: first until the pid
/// file's lock is free, then until the process itself is gone (the master removes its pid file
/// shortly before it exits).
pub fn stop(pid_path: &Path, pid: i32, timeout: Duration) -> Result<(), ControlError> {
    signal(pid, Signal::SIGTERM)?;
    let deadline = Instant::now() + timeout;
    loop {
        let locked = matches!(inspect(pid_path)?, MasterState::Running { pid: now } if now == pid);
        if !locked && !process_alive(pid) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ControlError::StopTimeout { pid, timeout });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Whether `pid` names a process that has not exited (a zombie has: it holds no file, socket or
/// lock and only waits for its parent).
pub fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the command name, which ends at the last ')'.
    match stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()) {
        Some(rest) => !(rest.starts_with('Z') || rest.starts_with('X')),
        None => false,
    }
}

/// Where `postern-master` is: `daemon_directory` first, as Postfix runs `$daemon_directory/master`,
/// then the directory of this `postern` binary.
pub fn find_master(daemon_directory: Option<&Path>) -> Result<PathBuf, ControlError> {
    let mut candidates = Vec::new();
    if let Some(dir) = daemon_directory {
        candidates.push(dir.join(MASTER_PROGRAM));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        let path = dir.join(MASTER_PROGRAM);
        if !candidates.contains(&path) {
            candidates.push(path);
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(ControlError::MasterNotFound(candidates))
}

/// The command that runs the master for `config_dir` (absolute), with a cleared environment.
pub fn master_command(master: &Path, config_dir: &Path, foreground: bool) -> Command {
    let mut cmd = Command::new(master);
    cmd.arg("-c").arg(config_dir);
    if foreground {
        cmd.arg("--foreground");
    }
    cmd.env_clear();
    for name in MASTER_ENVIRONMENT {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd
}

enum StartEvent {
    Ready(u32),
    /// stdout ended or carried something other than a ready line.
    NoReady(String),
}

/// Runs the master in the background and waits for its `ready pid=N` line. Returns that pid.
pub fn start_background(mut cmd: Command, timeout: Duration) -> Result<u32, ControlError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = PathBuf::from(cmd.get_program());
    let mut child = cmd.spawn().map_err(|source| ControlError::Spawn {
        path: program,
        source,
    })?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout).take(READY_LINE_MAX as u64);
            let event = match reader.read_line(&mut line) {
                Ok(_) => match parse_ready(&line) {
                    Some(pid) => StartEvent::Ready(pid),
                    None => StartEvent::NoReady(line),
                },
                Err(e) => StartEvent::NoReady(e.to_string()),
            };
            let _ = tx.send(event);
        });
    }
    let stderr = child.stderr.take().map(|stderr| {
        thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = stderr.take(STDERR_KEEP as u64).read_to_end(&mut kept);
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    match rx.recv_timeout(timeout) {
        Ok(StartEvent::Ready(pid)) => Ok(pid),
        Ok(StartEvent::NoReady(stdout)) => {
            // The master exits after printing its reason; collect both.
            let _ = wait_bounded(&mut child, timeout);
            let mut reason = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
            if reason.trim().is_empty() {
                reason = match child.try_wait() {
                    Ok(Some(status)) => format!("{MASTER_PROGRAM} exited with {status}"),
                    _ => format!(
                        "{MASTER_PROGRAM} printed no ready line ({:?})",
                        stdout.trim()
                    ),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            Err(ControlError::StartFailed(reason))
        }
        Err(_) => {
            let pid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            Err(ControlError::StartTimeout { pid, timeout })
        }
    }
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("postern-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reload_outcome_parsing_is_strict() {
        assert_eq!(
            parse_reload("master 42 generation 3\nerror service a/inet: cannot listen\n"),
            Some(ReloadOutcome {
                pid: 42,
                generation: 3,
                errors: vec!["service a/inet: cannot listen".into()],
            })
        );
        assert_eq!(
            parse_reload("master 42 generation 0\n").map(|o| o.errors.len()),
            Some(0)
        );
        for bad in [
            "",
            "master 42 generation\n",
            "master 42 generation 1 x\n",
            "master x generation 1\n",
            "master 42 generation -1\n",
            "master 42 generation 1\nwarning x\n",
            "master 42 generation 1\nerror a\u{1b}b\n",
        ] {
            assert_eq!(parse_reload(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pid_parsing_is_strict() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("  77 "), Some(77));
        for bad in ["", "\n", "-5", "1", "0", "12a", "1 2", "99999999999", "+3"] {
            assert_eq!(parse_pid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ready_line_parsing_is_strict() {
        assert_eq!(parse_ready("ready pid=4321\n"), Some(4321));
        for bad in [
            "ready pid=\n",
            "ready pid=x",
            "ready  pid=3",
            "Ready pid=3",
            "ready pid=3 x",
            "",
        ] {
            assert_eq!(parse_ready(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_free_and_locked_pid_files() {
        let dir = scratch("inspect");
        let path = dir.join(PID_FILE);
        assert_eq!(inspect(&path).unwrap(), MasterState::NotRunning);

        std::fs::write(&path, "4242\n").unwrap();
        assert_eq!(
            inspect(&path).unwrap(),
            MasterState::Stale { pid: Some(4242) }
        );

        // A lock held through another open file description looks like a running master.
        let held =
            Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
        assert_eq!(inspect(&path).unwrap(), MasterState::Running { pid: 4242 });
        drop(held);
        assert_eq!(
            inspect(&path).unwrap(),
            MasterState::Stale { pid: Some(4242) }
        );

        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"garbage").unwrap();
        let _held =
            Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
        assert!(matches!(
            inspect(&path),
            Err(ControlError::BadPidFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn status_table_is_shown_as_text_only() {
        let dir = scratch("status");
        let path = dir.join(STATUS_FILE);
        std::fs::write(&path, "service type processes\nsmtpd inet 1\x1b[2J").unwrap();
        assert_eq!(
            read_status(&path).unwrap(),
            "service type processes\nsmtpd inet 1?[2J\n"
        );
        assert!(matches!(
            read_status(&dir.join("none")),
            Err(ControlError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stop_waits_until_the_process_is_gone() {
        let dir = scratch("stop");
        let path = dir.join(PID_FILE);
        let mut child = Command::new("/bin/sh")
            .args([
                "-c",
                "trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.05; done",
            ])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        std::fs::write(&path, format!("{pid}\n")).unwrap();
        // A reaper, as init is for a daemonized master.
        let reaper = thread::spawn(move || child.wait().unwrap());
        thread::sleep(Duration::from_millis(100));
        assert!(process_alive(pid));
        stop(&path, pid, Duration::from_secs(10)).unwrap();
        assert!(!process_alive(pid));
        assert!(reaper.join().unwrap().success());
        assert!(!process_alive(1 << 30));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stop_times_out_on_a_process_that_ignores_sigterm() {
        let dir = scratch("stop-timeout");
        let path = dir.join(PID_FILE);
        let mut child = Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        thread::sleep(Duration::from_millis(100));
        let err = stop(&path, pid, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ControlError::StopTimeout { .. }), "{err}");
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn find_master_prefers_daemon_directory() {
        let dir = scratch("find");
        assert!(matches!(
            find_master(Some(&dir)),
            Err(ControlError::MasterNotFound(_)) | Ok(_)
        ));
        std::fs::write(dir.join(MASTER_PROGRAM), "").unwrap();
        assert_eq!(find_master(Some(&dir)).unwrap(), dir.join(MASTER_PROGRAM));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn start_reports_the_ready_pid() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo ready pid=4711; exec sleep 5"]);
        assert_eq!(start_background(cmd, Duration::from_secs(5)).unwrap(), 4711);
    }

    #[test]
    fn start_failure_carries_the_masters_reason() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "echo 'fatal: cannot bind 127.0.0.1:25: permission denied' >&2; exit 1",
        ]);
        let err = start_background(cmd, Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the mail system failed to start: fatal: cannot bind 127.0.0.1:25: permission denied"
        );
    }

    #[test]
    fn start_times_out_and_kills_a_silent_master() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exec sleep 30"]);
        let started = Instant::now();
        let err = start_background(cmd, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, ControlError::StartTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn master_environment_is_cleared() {
        let cmd = master_command(
            Path::new("/x/postern-master"),
            Path::new("/etc/postern"),
            true,
        );
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-c", "/etc/postern", "--foreground"]);
        let envs: Vec<_> = cmd.get_envs().collect();
        assert!(envs.iter().all(|(k, _)| *k == "TZ"), "{envs:?}");
    }
}
