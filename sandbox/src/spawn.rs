//! Starting a daemon the way the master does: `fork` + `execve` of an
//! absolute path, an empty (or given) environment, `/dev/null` on stdin,
//! stdout and stderr on the master's log pipe, the control channel on fd 3
//! and any further descriptors on 4, 5, …, every other descriptor closed at
//! exec, and `PR_SET_PDEATHSIG(SIGKILL)` so that a daemon never outlives the
//! master.
//!
//! Trusts: the caller (the master) for the program and descriptors; checks
//! that the strings can be passed to `execve`. The work after `fork` is in
//! the private `sys` module.
//!
//! The death signal fires when the *thread* that forked exits; the master
//! is single-threaded, so that is the master. The kernel clears the signal
//! when the child changes its uid; [`crate::apply`] re-arms it.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use nix::unistd::Pid;

/// Most descriptors a child is handed, control channel included; the child
/// places them without allocating, in an array of this size. A daemon gets
/// its control channel and at most a few listeners.
pub const MAX_CHILD_FDS: usize = 16;

/// What to start.
#[derive(Debug)]
pub struct Spawn<'a> {
    /// Absolute path of the binary; no `PATH` search.
    pub program: &'a Path,
    /// `argv[0]`; the program path when `None`.
    pub arg0: Option<OsString>,
    /// `argv[1..]`.
    pub args: Vec<OsString>,
    /// The whole environment of the child; normally empty.
    pub env: Vec<(OsString, OsString)>,
    /// Becomes fd 3.
    pub control: BorrowedFd<'a>,
    /// Become fds 4, 5, … in order.
    pub extra_fds: Vec<BorrowedFd<'a>>,
    /// Becomes fds 1 and 2 (the master's log pipe); `/dev/null` when `None`.
    pub output: Option<BorrowedFd<'a>>,
    /// Start the program as a child of the caller's parent, not of the caller (the master's
    /// spawner starts daemons as children of the master, which supervises and reaps them).
    /// A single-threaded caller only.
    pub sibling: bool,
}

impl<'a> Spawn<'a> {
    pub fn new(program: &'a Path, control: BorrowedFd<'a>) -> Self {
        Spawn {
            program,
            arg0: None,
            args: Vec::new(),
            env: Vec::new(),
            control,
            extra_fds: Vec::new(),
            output: None,
            sibling: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("spawn {0:?}: the program path must be absolute")]
    RelativeProgram(PathBuf),
    #[error("spawn {program:?}: {what} contains a NUL byte")]
    Nul {
        program: PathBuf,
        what: &'static str,
    },
    #[error("spawn {program:?}: environment name {name:?} is empty or contains '='")]
    EnvName { program: PathBuf, name: OsString },
    #[error("spawn {program:?}: {count} descriptors after the control channel exceed the limit of {max}", max = MAX_CHILD_FDS - 1)]
    TooManyFds { program: PathBuf, count: usize },
    #[error("spawn {program:?}: cannot open /dev/null: {source}")]
    DevNull {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spawn {program:?}: a sibling can only be started by a single-threaded process")]
    Threaded { program: PathBuf },
    #[error("spawn {program:?}: {source}")]
    Exec {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn c_string(program: &Path, what: &'static str, value: &OsStr) -> Result<CString, SpawnError> {
    CString::new(value.as_bytes()).map_err(|_| SpawnError::Nul {
        program: program.to_owned(),
        what,
    })
}

/// Start `spec` and return the child's pid once its `execve` succeeded.
/// The caller reaps it (`waitpid`).
pub fn spawn(spec: &Spawn<'_>) -> Result<Pid, SpawnError> {
    let program = spec.program;
    if !program.is_absolute() {
        return Err(SpawnError::RelativeProgram(program.to_owned()));
    }
    if spec.extra_fds.len() + 1 > MAX_CHILD_FDS {
        return Err(SpawnError::TooManyFds {
            program: program.to_owned(),
            count: spec.extra_fds.len(),
        });
    }
    if spec.sibling && !crate::sys::single_threaded() {
        return Err(SpawnError::Threaded {
            program: program.to_owned(),
        });
    }
    let arg0 = spec.arg0.as_deref().unwrap_or(program.as_os_str());
    let mut argv = vec![c_string(program, "argv[0]", arg0)?];
    for arg in &spec.args {
        argv.push(c_string(program, "an argument", arg)?);
    }
    let mut envp = Vec::with_capacity(spec.env.len());
    for (name, value) in &spec.env {
        if name.is_empty() || name.as_bytes().contains(&b'=') {
            return Err(SpawnError::EnvName {
                program: program.to_owned(),
                name: name.clone(),
            });
        }
        let mut entry = name.clone();
        entry.push("=");
        entry.push(value);
        envp.push(c_string(program, "an environment entry", &entry)?);
    }
    let dev_null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| SpawnError::DevNull {
            program: program.to_owned(),
            source,
        })?;
    let fds = std::iter::once(spec.control)
        .chain(spec.extra_fds.iter().copied())
        .map(|fd| fd.as_raw_fd())
        .collect();
    let plan = crate::sys::ForkExec {
        program: c_string(program, "the program path", program.as_os_str())?,
        argv,
        envp,
        fds,
        stdin: dev_null.as_raw_fd(),
        output: spec
            .output
            .map(|fd| fd.as_raw_fd())
            .unwrap_or(dev_null.as_raw_fd()),
        sibling: spec.sibling,
    };
    crate::sys::fork_exec(&plan)
        .map(Pid::from_raw)
        .map_err(|source| SpawnError::Exec {
            program: program.to_owned(),
            source,
        })
}

/// Takes over descriptor `fd` that the master placed for this daemon (3: the control channel;
/// 4: the listener of an inet service). Each descriptor can be taken once; a second call, a
/// descriptor outside 3..=63, or one that is not open is an error. The descriptor is made
/// close-on-exec.
pub fn inherited_fd(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    crate::sys::claim_inherited(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    fn run_shell(script: &str, env: Vec<(OsString, OsString)>) -> (String, i32) {
        let (control, _peer) = UnixDatagram::pair().unwrap();
        let (extra, _extra_peer) = UnixDatagram::pair().unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let sh = Path::new("/bin/sh");
        let mut spec = Spawn::new(sh, control.as_fd());
        spec.args = vec!["-c".into(), script.into()];
        spec.env = env;
        spec.extra_fds = vec![extra.as_fd()];
        spec.output = Some(write_end.as_fd());
        let pid = spawn(&spec).unwrap();
        drop(spec);
        drop(write_end);
        let mut out = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut out)
            .unwrap();
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        let code = match status {
            nix::sys::wait::WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        };
        (out, code)
    }

    #[test]
    fn child_gets_exactly_its_descriptors_and_environment() {
        // `$$` is the shell itself; no command substitution, so the shell
        // holds no descriptor of its own while `ls` and `readlink` look.
        let script = "ls /proc/$$/fd; \
                      readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2 /proc/$$/fd/3 /proc/$$/fd/4; \
                      env; echo err >&2";
        let (out, code) = run_shell(script, vec![("MAIL_CONFIG".into(), "/etc/postern".into())]);
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..5], ["0", "1", "2", "3", "4"], "{out}");
        assert_eq!(lines[5], "/dev/null", "{out}");
        assert!(lines[6].starts_with("pipe:"), "{out}");
        assert_eq!(
            lines[6], lines[7],
            "stdout and stderr are the same pipe: {out}"
        );
        assert!(
            lines[8].starts_with("socket:") && lines[9].starts_with("socket:"),
            "{out}"
        );
        assert_ne!(lines[8], lines[9], "{out}");
        let env: Vec<&str> = lines[10..]
            .iter()
            .copied()
            .filter(|l| l.contains('='))
            .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
            .collect();
        assert_eq!(env, vec!["MAIL_CONFIG=/etc/postern"], "{out}");
        assert_eq!(lines.last(), Some(&"err"), "stderr goes to the pipe: {out}");
    }

    #[test]
    fn child_starts_with_default_signals() {
        // The test harness ignores SIGPIPE (Rust's runtime does); the child
        // must not inherit that, nor a blocked mask.
        let (out, code) = run_shell("grep -E '^(SigBlk|SigIgn)' /proc/self/status", vec![]);
        assert_eq!(code, 0);
        for line in out.lines() {
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
    }

    #[test]
    fn exec_errors_are_reported() {
        let (control, _peer) = UnixDatagram::pair().unwrap();
        let missing = Path::new("/nonexistent/postern-daemon");
        let err = spawn(&Spawn::new(missing, control.as_fd())).unwrap_err();
        match err {
            SpawnError::Exec { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT))
            }
            other => panic!("{other}"),
        }
        let relative = Path::new("bin/sh");
        assert!(matches!(
            spawn(&Spawn::new(relative, control.as_fd())),
            Err(SpawnError::RelativeProgram(_))
        ));
        let mut spec = Spawn::new(Path::new("/bin/sh"), control.as_fd());
        spec.env = vec![("A=B".into(), "c".into())];
        assert!(matches!(spawn(&spec), Err(SpawnError::EnvName { .. })));
        spec.env = vec![];
        spec.args = vec![OsString::from("a\0b")];
        assert!(matches!(spawn(&spec), Err(SpawnError::Nul { .. })));
    }

    #[test]
    fn inherited_fd_is_taken_once_and_only_above_stdio() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let raw = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        assert!(
            (3..64).contains(&raw),
            "descriptor {raw} outside what the test expects"
        );
        let owned = inherited_fd(raw).unwrap();
        assert_eq!(owned.as_raw_fd(), raw);
        assert_eq!(
            inherited_fd(raw).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            inherited_fd(2).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        assert_eq!(
            inherited_fd(64).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        drop(owned);
        // Closed now, and already claimed: refused either way, never a second owner.
        assert!(inherited_fd(raw).is_err());
        assert_eq!(
            inherited_fd(63).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
