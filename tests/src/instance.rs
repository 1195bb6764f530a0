//! A running Postern instance for whole-system tests: `postern init` in a scratch directory, the
//! test's main.cf settings, `postern start`; dropping it stops the master and removes the directory.
//!
//! Trusts: the built binaries next to the test executable (`cargo build --workspace --bins` first)
//! and the files the instance writes — but a queue file is read through `protocol::queue`, which
//! trusts nothing, so a test sees a damaged file as an error, not as a panic.
//!
//! Decisions:
//! - main.cf settings are appended after what `init` wrote: the conf crate, like Postfix, lets a later
//!   definition of a name override an earlier one, so `postern conf -n` shows the test's value.
//! - `master_stop_timeout = 5s` is set before the test's own settings (which may override it), so
//!   that a daemon stuck in a test does not hold the test's end for the default 30 s.
//! - `start_without` leaves chosen master.cf services out by commenting out their lines (a `#` in
//!   front, as `init` writes a service whose program is missing), so that a test about one stage
//!   of the mail flow is not raced by the next: the intake tests leave `qmgr` out, and the files
//!   they check stay in `incoming/`. A name that is not a service of the written master.cf is a
//!   mistake of the test and panics.
//! - `queue_files` leaves out a live cleanup's spare (see [`is_live_spare`]): cleanup keeps one
//!   empty, locked, incomplete file ready in `incoming/` for its next message, which is not mail.
//!   A dead cleanup's spare (its lock is free) is listed, as any file a dead writer left.
//! - The scratch directory is mode 0755 under the temporary directory: as root the daemons run under
//!   their own numeric uids and must traverse it; as an unprivileged user everything runs under
//!   that user. A failed test (the thread is panicking when the instance is dropped) keeps the
//!   directory and prints its path and the log's tail, so the failure can be examined.

use std::fs::{self, File};
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use protocol::queue::{QueueFile, QueueLimits};

/// The queue directories that hold mail (not `corrupt/` or `maildrop/`).
pub const MAIL_QUEUES: [&str; 4] = ["incoming", "active", "deferred", "hold"];

/// Lines of the log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Distinguishes two instances of the same name in one test process.
static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// The directory of the built programs: the test executable is `<target>/<profile>/deps/NAME-HASH`,
/// the programs are in `<target>/<profile>`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable has a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The path of the built program `name`; panics with the build command if it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Whether the program `name` was built (a test of a daemon that has not landed can say so).
pub fn has_binary(name: &str) -> bool {
    bin_dir().join(name).is_file()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running instance. See the module header.
pub struct Instance {
    dir: PathBuf,
    port: u16,
    running: bool,
    /// The master's pid as its pid file said right after start, so that `Drop` can still stop it
    /// if the directory (and the pid file) is gone.
    master: Option<i32>,
}

impl Instance {
    /// Makes, configures and starts an instance; panics (after cleaning up) if any step fails.
    /// `settings` are main.cf `(name, value)` pairs.
    pub fn start(name: &str, settings: &[(&str, &str)]) -> Instance {
        Instance::start_without(name, settings, &[])
    }

    /// As [`Instance::start`], with the master.cf services named in `left_out` commented out
    /// (see the module header), e.g. `&["qmgr"]` to keep queued mail in `incoming/`.
    pub fn start_without(name: &str, settings: &[(&str, &str)], left_out: &[&str]) -> Instance {
        let inst = Instance::init(name, settings);
        inst.leave_out(left_out);
        inst.started()
    }

    /// Starts the master of an instance made by [`Instance::init`] (and prepared by the test:
    /// tables, files); panics with the log if it does not start.
    pub fn started(mut self) -> Instance {
        let out = self.postern(&["start"]);
        assert!(
            out.status.success(),
            "postern start failed:\n{}\n--- log\n{}",
            show(&out),
            self.log()
        );
        self.running = true;
        self
    }

    /// Appends `text` to the instance's file `name` (for example a table such as `vmailbox`);
    /// daemons read their tables when they start.
    pub fn append(&self, name: &str, text: &str) {
        let path = self.dir.join(name);
        let mut old = match fs::read_to_string(&path) {
            Ok(old) => old,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("read {}: {e}", path.display()),
        };
        old.push_str(text);
        fs::write(&path, old).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Makes and configures an instance without starting it (`start_master` starts it).
    pub fn init(name: &str, settings: &[(&str, &str)]) -> Instance {
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("postern-{name}-{}-{serial}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the scratch directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .expect("make the scratch directory traversable");
        let inst = Instance {
            dir,
            port: free_port(),
            running: false,
            master: None,
        };
        let out = inst.postern(&["init", "--port", &inst.port.to_string()]);
        assert!(out.status.success(), "postern init failed:\n{}", show(&out));
        let mut extra = String::from(
            "\n# Settings of the test (a later definition overrides an earlier one).\n\
             master_stop_timeout = 5s\n",
        );
        for (name, value) in settings {
            extra.push_str(&format!("{name} = {value}\n"));
        }
        let main_cf = inst.dir.join("main.cf");
        let mut text = fs::read_to_string(&main_cf).expect("read main.cf");
        text.push_str(&extra);
        fs::write(&main_cf, text).expect("write main.cf");
        inst
    }

    /// Comments out the master.cf lines of the services in `services` (with their continuation
    /// lines); a service that is already commented out stays so. Panics on a name that is not a
    /// service of master.cf. Takes effect at the next `start` (or `reload`).
    pub fn leave_out(&self, services: &[&str]) {
        if services.is_empty() {
            return;
        }
        let path = self.dir.join("master.cf");
        let text = fs::read_to_string(&path).expect("read master.cf");
        let (text, found) = comment_out_services(&text, services);
        for service in services {
            assert!(
                found.contains(service),
                "{service} is not a service of {}:\n{text}",
                path.display()
            );
        }
        fs::write(&path, text).expect("write master.cf");
    }

    /// Starts the master of an instance made by [`Instance::init`].
    pub fn start_master(&mut self) -> Output {
        let out = self.postern(&["start"]);
        if out.status.success() {
            self.running = true;
            self.master = self.master_pid();
        }
        out
    }

    /// The SMTP listener's port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance (configuration) directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `queue_directory` as `init` wrote it.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// Every file in the mail queues (incoming, active, deferred, hold), sorted, but live
    /// cleanups' spares.
    pub fn queue_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for queue in MAIL_QUEUES {
            collect_files(&self.queue_dir().join(queue), &mut files);
        }
        files.retain(|f| !is_live_spare(f));
        files.sort();
        files
    }

    /// The file of queue id `id` in any mail queue.
    pub fn find_queue_file(&self, id: &str) -> Option<PathBuf> {
        self.queue_files()
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == id))
    }

    /// Runs `postern -c DIR ARGS...`.
    pub fn postern(&self, args: &[&str]) -> Output {
        Command::new(binary("postern"))
            .arg("-c")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run postern")
    }

    /// The instance's log file (`maillog_file`); empty if nothing was logged yet.
    pub fn log(&self) -> String {
        fs::read(self.dir.join("log/postern.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns whether it did within `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Stops the master (`postern stop`) and returns what the command printed.
    pub fn stop(&mut self) -> Output {
        let out = self.postern(&["stop"]);
        self.running = false;
        out
    }

    fn master_pid(&self) -> Option<i32> {
        fs::read_to_string(self.queue_dir().join("pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.running {
            let stopped = self.postern(&["stop"]).status.success();
            if !stopped {
                // The last resort: never leave a master (and its daemons) behind a test.
                let pid = self.master_pid().or(self.master);
                if let Some(pid) = pid.filter(|&p| is_master(p)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            eprintln!(
                "test failed: instance kept in {}\n--- last lines of its log\n{tail}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_master(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().starts_with("postern-master"))
        .unwrap_or(false)
}

/// master.cf `text` with the logical lines of `services` commented out, and the names of the
/// services that were found, active or already commented out. A logical line is a line that does
/// not start with white space and the continuation lines (starting with white space) after it.
fn comment_out_services<'a>(text: &str, services: &[&'a str]) -> (String, Vec<&'a str>) {
    let mut out = String::with_capacity(text.len() + 16);
    let mut found = Vec::new();
    let mut in_left_out = false;
    for line in text.split_inclusive('\n') {
        let continuation = line.starts_with([' ', '\t']);
        if !continuation {
            let name = line.split_whitespace().next().unwrap_or("");
            in_left_out = false;
            // A commented-out service line is `#name type ...` (what `init` writes).
            if let Some(service) = services
                .iter()
                .find(|s| name == **s || name.strip_prefix('#') == Some(**s))
            {
                found.push(*service);
                in_left_out = !name.starts_with('#');
            }
        }
        if in_left_out {
            out.push('#');
        }
        out.push_str(line);
    }
    (out, found)
}

/// Whether `path` is a live cleanup's spare queue file: a file directly in `incoming/`, empty,
/// without the owner-execute bit of a complete file, whose `flock` another process holds. The
/// lock is tried without waiting and released at once.
pub fn is_live_spare(path: &Path) -> bool {
    let in_incoming = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "incoming");
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !in_incoming || !meta.is_file() || meta.len() != 0 || meta.permissions().mode() & 0o100 != 0
    {
        return false;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    // Queues may hash into subdirectories; walk them all.
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// Formats a command's status and output for an assertion message.
pub fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A queue file read back and checked: complete (owner-execute bit), its checksum valid.
#[derive(Debug)]
pub struct QueuedMessage {
    pub path: PathBuf,
    pub mode: u32,
    pub file: QueueFile,
    /// The stored message text.
    pub content: Vec<u8>,
}

/// Why a queue file does not pass [`read_queued`].
#[derive(Debug, thiserror::Error)]
pub enum QueuedError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: mode {mode:04o} lacks the owner-execute bit of a complete file")]
    Incomplete { path: PathBuf, mode: u32 },
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        source: protocol::queue::QueueFileError,
    },
}

/// Reads the queue file at `path`: checks the completeness bit, [`protocol::queue::verify`], then
/// reads the envelope and the content.
pub fn read_queued(path: &Path) -> Result<QueuedMessage, QueuedError> {
    let io_err = |source| QueuedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let format_err = |source| QueuedError::Format {
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o7777;
    if mode & 0o100 == 0 {
        return Err(QueuedError::Incomplete {
            path: path.to_path_buf(),
            mode,
        });
    }
    protocol::queue::verify(io::BufReader::new(File::open(path).map_err(io_err)?))
        .map_err(format_err)?;
    let mut f = File::open(path).map_err(io_err)?;
    let file = QueueFile::read(&mut f, QueueLimits::default()).map_err(format_err)?;
    let mut content = Vec::new();
    file.content(&mut f)
        .map_err(format_err)?
        .read_to_end(&mut content)
        .map_err(io_err)?;
    Ok(QueuedMessage {
        path: path.to_path_buf(),
        mode,
        file,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::comment_out_services;

    #[test]
    fn left_out_services_are_commented_out_with_their_continuation_lines() {
        let text = "\
# comment naming qmgr
127.0.0.1:2525 inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
  -o queue_run_delay=1s
# not installed: /bin/bounce
#bounce   unix  - - n - 0 bounce
virtual   unix  - n n - - virtual
";
        let (out, found) = comment_out_services(text, &["qmgr", "bounce", "local"]);
        assert_eq!(found, ["qmgr", "bounce"]);
        assert_eq!(
            out,
            "\
# comment naming qmgr
127.0.0.1:2525 inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
#qmgr      unix  n - n 300 1 qmgr
#  -o queue_run_delay=1s
# not installed: /bin/bounce
#bounce   unix  - - n - 0 bounce
virtual   unix  - n n - - virtual
"
        );
    }
}
