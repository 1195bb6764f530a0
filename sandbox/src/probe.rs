//! Trying, inside an already sandboxed process, the actions its sandbox
//! must forbid (`postern check`).
//!
//! Trusts: nothing about the sandbox; it asks the kernel. A probe that is
//! *not* denied may have changed this process (it may now be root again, or
//! traced), so call [`run`] only in a process that exits afterwards. The
//! probes are chosen so that a missing sandbox cannot make them harmful to
//! others: `execve` gets an argv the kernel rejects, `clone3` and `openat2`
//! get sizes the kernel rejects, sockets are closed at once.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// How long the TCP probe waits for a connection; loopback answers at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub action: &'static str,
    /// The kernel refused (EPERM or EACCES; ENOSYS for `clone3`/`openat2`).
    pub denied: bool,
    /// The errno, or what happened instead.
    pub detail: String,
}

/// Where the probes aim.
#[derive(Debug, Clone)]
pub struct ProbeTargets {
    /// A file outside the profile's landlock rules.
    pub outside_path: PathBuf,
    /// A loopback TCP port outside the profile's connect rules.
    pub loopback_port: u16,
    /// A binary to try to execute.
    pub exec_path: PathBuf,
    /// A file no daemon may read even where a rule covers its directory (`/etc/shadow`
    /// beside the passwd file): landlock or the file's permissions must refuse it.
    pub secret_path: PathBuf,
}

impl Default for ProbeTargets {
    fn default() -> Self {
        ProbeTargets {
            outside_path: "/etc/passwd".into(),
            loopback_port: 25,
            exec_path: "/bin/sh".into(),
            secret_path: "/etc/shadow".into(),
        }
    }
}

/// `EPERM: Operation not permitted` (nix's `Display` already joins the name and the text).
fn describe(errno: Errno) -> String {
    errno.to_string()
}

fn from_io(action: &'static str, result: io::Result<()>, denied_by: &[Errno]) -> ProbeResult {
    match result {
        Ok(()) => ProbeResult {
            action,
            denied: false,
            detail: "succeeded".into(),
        },
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
            ProbeResult {
                action,
                denied: denied_by.contains(&errno),
                detail: if errno == Errno::UnknownErrno {
                    e.to_string()
                } else {
                    describe(errno)
                },
            }
        }
    }
}

const REFUSED: &[Errno] = &[Errno::EPERM, Errno::EACCES];

pub fn open_outside(targets: &ProbeTargets) -> ProbeResult {
    let result = std::fs::File::open(&targets.outside_path).map(drop);
    from_io("open a path outside the rules", result, REFUSED)
}

/// Reading the shadow password file: no profile grants it by a rule of its own, so it must be
/// refused whatever rules cover its directory.
pub fn read_secret(targets: &ProbeTargets) -> ProbeResult {
    let result = std::fs::File::open(&targets.secret_path).map(drop);
    from_io("open the shadow password file", result, REFUSED)
}

pub fn tcp_connect(targets: &ProbeTargets) -> ProbeResult {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, targets.loopback_port));
    let result = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map(drop);
    from_io("TCP connect to a loopback port", result, REFUSED)
}

pub fn execve(targets: &ProbeTargets) -> ProbeResult {
    let result = match CString::new(targets.exec_path.as_os_str().as_bytes()) {
        Ok(path) => Err(crate::sys::execve_errno(&path)),
        Err(_) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    from_io("execve a binary", result, REFUSED)
}

pub fn setuid_root() -> ProbeResult {
    let result = nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).map_err(io::Error::from);
    from_io("setuid(0)", result, REFUSED)
}

pub fn ptrace_traceme() -> ProbeResult {
    let result = nix::sys::ptrace::traceme().map_err(io::Error::from);
    from_io("ptrace(PTRACE_TRACEME)", result, REFUSED)
}

fn socket_of(action: &'static str, family: AddressFamily, kind: SockType) -> ProbeResult {
    let result = socket(family, kind, SockFlag::SOCK_CLOEXEC, None)
        .map(drop)
        .map_err(io::Error::from);
    from_io(action, result, REFUSED)
}

pub fn socket_unix() -> ProbeResult {
    socket_of("socket(AF_UNIX)", AddressFamily::Unix, SockType::Datagram)
}

pub fn socket_inet() -> ProbeResult {
    socket_of("socket(AF_INET)", AddressFamily::Inet, SockType::Stream)
}

/// `clone3` must be answered with ENOSYS (so glibc falls back to `clone`).
pub fn clone3() -> ProbeResult {
    from_io(
        "clone3 answered ENOSYS",
        Err(crate::sys::clone3_errno()),
        &[Errno::ENOSYS],
    )
}

/// `openat2` must be answered with ENOSYS (so callers fall back to `openat`).
pub fn openat2() -> ProbeResult {
    from_io(
        "openat2 answered ENOSYS",
        Err(crate::sys::openat2_errno()),
        &[Errno::ENOSYS],
    )
}

/// Every probe, in a fixed order.
pub fn run(targets: &ProbeTargets) -> Vec<ProbeResult> {
    vec![
        open_outside(targets),
        read_secret(targets),
        tcp_connect(targets),
        socket_unix(),
        socket_inet(),
        execve(targets),
        clone3(),
        openat2(),
        setuid_root(),
        ptrace_traceme(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Unsandboxed, the harmless probes must report "not denied": proves the
    // probes can tell the difference. (The sandboxed side is proven by the
    // enforcement tests.)
    #[test]
    fn unsandboxed_probes_are_not_denied() {
        let targets = ProbeTargets::default();
        assert!(!socket_unix().denied);
        assert!(!socket_inet().denied);
        let exec = execve(&targets);
        assert!(!exec.denied, "{exec:?}");
        assert!(exec.detail.starts_with("EFAULT"), "{exec:?}");
        let clone = clone3();
        assert!(
            !clone.denied && clone.detail.starts_with("EINVAL"),
            "{clone:?}"
        );
        let open2 = openat2();
        assert!(
            !open2.denied && open2.detail.starts_with("EINVAL"),
            "{open2:?}"
        );
    }

    #[test]
    fn errno_classification() {
        let r = from_io(
            "x",
            Err(io::Error::from_raw_os_error(libc::EACCES)),
            REFUSED,
        );
        assert!(r.denied);
        assert!(r.detail.starts_with("EACCES"));
        let r = from_io(
            "x",
            Err(io::Error::from_raw_os_error(libc::ENOENT)),
            REFUSED,
        );
        assert!(!r.denied);
        assert!(!from_io("x", Ok(()), REFUSED).denied);
    }
}
