//! Errors of the sandbox crate.
//!
//! Trusts nothing; every message names the service whose sandbox failed and
//! the step or profile entry that fell short, so a log line is enough to act on.

use std::path::PathBuf;

use crate::report::Shortfall;

/// Why [`crate::apply`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile itself is wrong; nothing was applied.
    #[error("sandbox for {service}: invalid profile: {problem}")]
    InvalidProfile {
        service: String,
        problem: ProfileError,
    },
    /// `apply` was called after a thread started (landlock and capabilities
    /// are per-thread, so the other threads would keep their privileges).
    #[error(
        "sandbox for {service}: {threads} threads are running; \
         the sandbox must be applied before any thread starts"
    )]
    MultiThreaded { service: String, threads: usize },
    /// The number of threads could not be read, so single-threadedness
    /// cannot be proven.
    #[error("sandbox for {service}: cannot count threads in /proc/self/task: {source}")]
    ThreadCount {
        service: String,
        #[source]
        source: std::io::Error,
    },
    /// After dropping identity, the process could become root again. The
    /// process is in an unknown state and must exit; this is fatal in every
    /// enforcement mode.
    #[error("sandbox for {service}: {what} succeeded after the identity change; the drop is not permanent")]
    Regained { service: String, what: &'static str },
    /// The parent exited while the sandbox was being set up, so its death
    /// signal may have been lost (the kernel clears it on a uid change).
    #[error("sandbox for {service}: the parent process exited during sandbox setup")]
    ParentExited { service: String },
    /// `sandbox_enforcement = required` and something was not enforced.
    #[error(
        "sandbox for {service}: not fully enforced (sandbox_enforcement = required): {}",
        list(.shortfalls)
    )]
    NotEnforced {
        service: String,
        shortfalls: Vec<Shortfall>,
    },
}

fn list(shortfalls: &[Shortfall]) -> String {
    shortfalls
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A profile declaration that cannot be applied as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("service name {0:?} must be 1 to {max} characters of a-z, 0-9, '-' or '_'", max = crate::profile::MAX_SERVICE_NAME)]
    ServiceName(String),
    #[error("identity uid 0 / gid 0 is root: use identity None to keep the current ids")]
    RootIdentity,
    #[error("supplementary group 0 (root) is not allowed")]
    RootGroup,
    #[error("{0} supplementary groups exceed the limit of {max}", max = crate::profile::MAX_GROUPS)]
    TooManyGroups(usize),
    #[error("{0} filesystem rules exceed the limit of {max}", max = crate::profile::MAX_FS_RULES)]
    TooManyFsRules(usize),
    #[error("landlock path {0:?} must be absolute, without '.' or '..' components or NUL bytes")]
    BadPath(PathBuf),
    #[error("landlock path {0:?} is listed twice")]
    DuplicatePath(PathBuf),
    #[error("landlock rule for {0:?} grants no access")]
    EmptyAccess(PathBuf),
    #[error("landlock rule for {0:?} does not say why it is needed")]
    FsRuleWithoutReason(PathBuf),
    #[error("TCP {kind} port 0 is not a port")]
    PortZero { kind: &'static str },
    #[error("TCP {kind} port {port} is listed twice")]
    DuplicatePort { kind: &'static str, port: u16 },
    #[error("{count} TCP {kind} ports exceed the limit of {max}", max = crate::profile::MAX_PORTS)]
    TooManyPorts { kind: &'static str, count: usize },
    #[error("{0} syscall entries exceed the limit of {max}", max = crate::syscalls::MAX_SYSCALLS)]
    TooManySyscalls(usize),
    #[error("syscall {0} does not say why it is allowed")]
    SyscallWithoutReason(&'static str),
    #[error("syscall {name} checks argument {index}; syscalls have arguments 0 to 5")]
    ArgIndex { name: &'static str, index: u8 },
    #[error(
        "syscall {0} is always answered with ENOSYS so that libc falls back to its older \
         sibling; allow that one instead"
    )]
    AlwaysEnosys(&'static str),
    #[error("the syscall allow-list lacks exit_group, so every clean exit would be a violation")]
    MissingExitGroup,
    #[error("syscall {name} has number {nr}, which is not a syscall number")]
    SyscallNumber { name: &'static str, nr: i64 },
    #[error("seccomp filter for the allow-list could not be built: {0}")]
    Filter(String),
}
