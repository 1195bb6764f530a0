//! The seccomp allow-list vocabulary: one [`Syscall`] entry per system call,
//! each saying why it is allowed, grouped by purpose.
//!
//! Trusts: nothing at run time; these are reviewed declarations. The groups
//! are what a glibc-linked Rust program on Linux x86_64 or aarch64 calls, as
//! observed under the filters in this crate's enforcement tests. A profile
//! lists the groups it needs (always [`BASE`]) plus single entries; the
//! privilege map counts them. `clone3` and `openat2` never appear here: the
//! filter answers them with `ENOSYS` so that libc falls back to `clone` and
//! `openat`, whose arguments can be checked.
//!
//! # Merging: a widening is declared, never an accident
//!
//! A profile's groups may list the same syscall more than once; the filter
//! allows the union of those entries ([`merge`], which `filter::build` and
//! so `Profile::validate` and `apply` go through). A union can silently undo
//! what one entry promises, so [`merge`] refuses it, with an error naming the
//! syscall and both entries' reasons, when one entry *lifts* another:
//!
//! - an entry without argument checks lifts every entry with checks (BASE's
//!   `mmap` "never executable memory" beside an unconditional `mmap`);
//! - an entry with checks lifts another entry's *limits*: the mask conditions
//!   ([`ArgCheck::none_of`], [`ArgCheck::masked`]) that every alternative of
//!   that entry makes, i.e. what it says may never be passed. An alternative
//!   keeps a limit when one of its own checks on that argument implies it
//!   (an `eq` value that satisfies the mask, or a mask condition at least as
//!   strict); an alternative that keeps a limit only through a combination of
//!   checks counts as lifting it, which can only refuse a merge.
//!
//! Exact values (`ArgCheck::eq`) are enumerations, not limits: THREADS' and
//! FORK_WAIT's `clone` flags, or BASE's and a daemon's `fcntl` commands, are
//! alternatives that each entry writes down, and merge without ceremony. Two
//! entries without checks are the same permission twice.
//!
//! An entry that is meant to lift another says so with
//! [`Syscall::widening`] and why; [`Merged::widened_by`] lists the
//! declarations that took effect. The declared widenings are EXEC_START's
//! `mmap`/`mprotect` (the loader of a program started under the filter maps
//! code: only a process that starts programs lists EXEC_START) and the TCP
//! groups' `getsockopt` (any option of a connection may be read).

/// Upper bound on allow-list entries in one profile. Each entry costs the BPF
/// program 4 to about 20 instructions and the kernel caps a program at 4096;
/// no Postern daemon needs more than about 80 entries.
pub const MAX_SYSCALLS: usize = 200;

/// A comparison on one syscall argument (0 to 5), made on all 64 bits. For
/// an `int` argument that is stricter than the kernel (which ignores the upper
/// half), so a mismatch can only deny, never widen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgCheck {
    pub index: u8,
    pub cmp: ArgCmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgCmp {
    /// The argument equals the value.
    Eq(u64),
    /// `argument & mask == value`.
    MaskedEq { mask: u64, value: u64 },
}

impl ArgCheck {
    pub const fn eq(index: u8, value: u64) -> Self {
        ArgCheck {
            index,
            cmp: ArgCmp::Eq(value),
        }
    }

    /// None of `bits` is set in the argument.
    pub const fn none_of(index: u8, bits: u64) -> Self {
        ArgCheck {
            index,
            cmp: ArgCmp::MaskedEq {
                mask: bits,
                value: 0,
            },
        }
    }

    /// `argument & mask == value`.
    pub const fn masked(index: u8, mask: u64, value: u64) -> Self {
        ArgCheck {
            index,
            cmp: ArgCmp::MaskedEq { mask, value },
        }
    }
}

/// One allow-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Syscall {
    /// Name as in `man 2`, without the `SYS_` prefix.
    pub name: &'static str,
    /// The number on the architecture this was compiled for.
    pub nr: i64,
    /// Why a daemon needs it (shown in reviews and the privilege map).
    pub why: &'static str,
    /// Empty: any arguments. Otherwise the call is allowed when every check
    /// of at least one inner list holds.
    pub allow_if: &'static [&'static [ArgCheck]],
    /// Set by [`Syscall::widening`]: this entry is meant to allow calls that
    /// another entry for the same syscall in the same allow-list refuses, and
    /// this says why (see the module docs).
    pub widens: Option<&'static str>,
}

impl Syscall {
    pub const fn new(name: &'static str, nr: i64, why: &'static str) -> Self {
        Syscall {
            name: strip_sys_prefix(name),
            nr,
            why,
            allow_if: &[],
            widens: None,
        }
    }

    /// Restrict the entry to calls whose arguments match one of `allow_if`.
    pub const fn when(self, allow_if: &'static [&'static [ArgCheck]]) -> Self {
        Syscall { allow_if, ..self }
    }

    /// Declare that this entry deliberately lifts what another entry for the
    /// same syscall refuses when both are in one allow-list; `why` says why.
    pub const fn widening(self, why: &'static str) -> Self {
        Syscall {
            widens: Some(why),
            ..self
        }
    }
}

const fn strip_sys_prefix(name: &'static str) -> &'static str {
    let bytes = name.as_bytes();
    if bytes.len() > 4
        && bytes[0] == b'S'
        && bytes[1] == b'Y'
        && bytes[2] == b'S'
        && bytes[3] == b'_'
    {
        let (_, rest) = bytes.split_at(4);
        match std::str::from_utf8(rest) {
            Ok(rest) => rest,
            Err(_) => name,
        }
    } else {
        name
    }
}

/// `allow!(SYS_read, "why")`: the name comes from the `libc` constant, so the
/// name and the number cannot disagree.
macro_rules! allow {
    ($sys:ident, $why:expr) => {
        $crate::syscalls::Syscall::new(stringify!($sys), libc::$sys, $why)
    };
    ($sys:ident, $why:expr, $allow_if:expr) => {
        $crate::syscalls::Syscall::new(stringify!($sys), libc::$sys, $why).when($allow_if)
    };
}

/// Concatenate groups (and single entries) into one allow-list for a profile.
/// Entries for one syscall stay separate here; [`merge`] (which the filter is
/// built from) combines them under the module's merge rule.
pub fn set(groups: &[&[Syscall]]) -> Vec<Syscall> {
    groups
        .iter()
        .flat_map(|group| group.iter().copied())
        .collect()
}

/// What the filter allows for one syscall once every entry an allow-list has
/// for it is combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub name: &'static str,
    pub nr: i64,
    /// `None`: any arguments. Otherwise the alternatives of every entry.
    pub allow_if: Option<Vec<&'static [ArgCheck]>>,
    /// The reasons of the declared widenings ([`Syscall::widening`]) that
    /// took effect: each lifted what another entry for this syscall refuses.
    pub widened_by: Vec<&'static str>,
}

/// Two entries for one syscall where the wider allows what the narrower
/// refuses, and the wider is not declared with [`Syscall::widening`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name}: the entry {wider:?} would allow calls that the entry {narrower:?} refuses \
     (an entry that means to do so is declared with Syscall::widening)"
)]
pub struct Widening {
    pub name: &'static str,
    /// The reason of the entry whose checks would be lifted.
    pub narrower: &'static str,
    /// The reason of the entry that would lift them.
    pub wider: &'static str,
}

/// The mask conditions (`none_of`, `masked`) that every alternative of an
/// entry makes: what the entry says may never be passed.
fn limits(entry: &Syscall) -> Vec<ArgCheck> {
    let Some((first, rest)) = entry.allow_if.split_first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|check| matches!(check.cmp, ArgCmp::MaskedEq { .. }))
        .filter(|check| rest.iter().all(|alternative| alternative.contains(check)))
        .copied()
        .collect()
}

/// Whether every call that passes all of `alternative` passes `limit` too
/// (judged check by check: a limit that only a combination of checks keeps
/// counts as not kept, which can only refuse a merge, never widen one).
fn keeps(alternative: &[ArgCheck], limit: &ArgCheck) -> bool {
    let ArgCmp::MaskedEq { mask, value } = limit.cmp else {
        return alternative.contains(limit);
    };
    alternative.iter().any(|check| {
        check.index == limit.index
            && match check.cmp {
                ArgCmp::Eq(x) => x & mask == value,
                ArgCmp::MaskedEq {
                    mask: wider_mask,
                    value: wider_value,
                } => mask & !wider_mask == 0 && wider_value & mask == value,
            }
    })
}

/// Whether `wider` allows a call that `narrower` refuses and that the union
/// of the two would therefore let through against `narrower`'s intent.
fn lifts(wider: &Syscall, narrower: &Syscall) -> bool {
    if narrower.allow_if.is_empty() {
        return false;
    }
    if wider.allow_if.is_empty() {
        return true;
    }
    let limits = limits(narrower);
    !wider
        .allow_if
        .iter()
        .all(|alternative| limits.iter().all(|limit| keeps(alternative, limit)))
}

/// Combine an allow-list's entries per syscall (in order of first
/// appearance), refusing a merge that widens by accident (the module docs
/// give the rule).
pub fn merge(list: &[Syscall]) -> Result<Vec<Merged>, Widening> {
    let mut order: Vec<i64> = Vec::new();
    let mut by_nr: std::collections::HashMap<i64, Vec<&Syscall>> = std::collections::HashMap::new();
    for entry in list {
        let entries = by_nr.entry(entry.nr).or_default();
        if entries.is_empty() {
            order.push(entry.nr);
        }
        entries.push(entry);
    }
    let mut merged = Vec::with_capacity(order.len());
    for nr in order {
        let entries = by_nr.remove(&nr).unwrap_or_default();
        let mut widened_by = Vec::new();
        for wider in &entries {
            for narrower in &entries {
                if !lifts(wider, narrower) {
                    continue;
                }
                match wider.widens {
                    Some(why) => {
                        if !widened_by.contains(&why) {
                            widened_by.push(why);
                        }
                    }
                    None => {
                        return Err(Widening {
                            name: wider.name,
                            narrower: narrower.why,
                            wider: wider.why,
                        })
                    }
                }
            }
        }
        let allow_if = if entries.iter().any(|e| e.allow_if.is_empty()) {
            None
        } else {
            Some(
                entries
                    .iter()
                    .flat_map(|e| e.allow_if.iter().copied())
                    .collect(),
            )
        };
        let Some(first) = entries.first() else {
            continue;
        };
        merged.push(Merged {
            name: first.name,
            nr,
            allow_if,
            widened_by,
        });
    }
    Ok(merged)
}

const PROT_EXEC: u64 = libc::PROT_EXEC as u64;

/// `clone` flags glibc's `pthread_create` passes (after `clone3` got ENOSYS).
pub const THREAD_CLONE_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;

/// `clone` flags glibc's `fork` passes.
pub const FORK_CLONE_FLAGS: u64 =
    (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;

/// What every Rust daemon needs once it is running: memory, signals, time,
/// randomness, its already-open descriptors and its channels.
pub const BASE: &[Syscall] = &[
    allow!(SYS_read, "read from channels, pipes and files already open"),
    allow!(SYS_write, "write to channels and to stderr (the log pipe)"),
    allow!(SYS_writev, "std's vectored writes to stdout/stderr"),
    allow!(SYS_close, "close descriptors"),
    allow!(SYS_lseek, "seek in files already open (queue files by fd)"),
    allow!(
        SYS_fstat,
        "metadata of descriptors (std's fallback for statx)"
    ),
    allow!(SYS_newfstatat, "std's File::metadata with AT_EMPTY_PATH"),
    allow!(SYS_statx, "std's File::metadata"),
    allow!(
        SYS_fcntl,
        "std descriptor handling: try_clone (F_DUPFD_CLOEXEC), cloexec and O_NONBLOCK flags",
        &[
            &[ArgCheck::eq(1, libc::F_GETFD as u64)],
            &[ArgCheck::eq(1, libc::F_SETFD as u64)],
            &[ArgCheck::eq(1, libc::F_GETFL as u64)],
            &[ArgCheck::eq(1, libc::F_SETFL as u64)],
            &[ArgCheck::eq(1, libc::F_DUPFD_CLOEXEC as u64)],
        ]
    ),
    allow!(SYS_sendmsg, "send on channels (with SCM_RIGHTS)"),
    allow!(SYS_recvmsg, "receive on channels (with SCM_RIGHTS)"),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_poll, "wait on channels (nix/std poll)"),
    allow!(SYS_ppoll, "wait on channels (poll with a timeout)"),
    allow!(SYS_exit, "a thread exits"),
    allow!(SYS_exit_group, "the process exits"),
    allow!(SYS_brk, "the allocator"),
    allow!(
        SYS_mmap,
        "the allocator; never executable memory",
        &[&[ArgCheck::none_of(2, PROT_EXEC)]]
    ),
    allow!(
        SYS_mprotect,
        "guard pages; never executable memory",
        &[&[ArgCheck::none_of(2, PROT_EXEC)]]
    ),
    allow!(SYS_munmap, "the allocator"),
    allow!(SYS_mremap, "the allocator growing a large buffer"),
    allow!(SYS_madvise, "the allocator returning memory"),
    allow!(SYS_rt_sigreturn, "return from a signal handler"),
    allow!(
        SYS_rt_sigprocmask,
        "glibc masks signals around critical sections"
    ),
    allow!(SYS_rt_sigaction, "std installs its stack-overflow handler"),
    allow!(SYS_sigaltstack, "std's stack-overflow handler stack"),
    allow!(SYS_futex, "locks, Once, thread join"),
    allow!(SYS_rseq, "glibc registers restartable sequences"),
    allow!(SYS_getrandom, "HashMap seeds, queue ids, SMTP nonces"),
    allow!(SYS_clock_gettime, "time (when the vDSO cannot answer)"),
    allow!(SYS_clock_nanosleep, "thread::sleep, back-off"),
    allow!(
        SYS_getpid,
        "log lines carry the pid; abort() signals itself"
    ),
    allow!(SYS_gettid, "abort() signals its own thread"),
    allow!(SYS_sched_yield, "spin loops in locks"),
    allow!(
        SYS_restart_syscall,
        "the kernel restarts a call interrupted by a signal"
    ),
    allow!(
        SYS_tgkill,
        "abort() after a panic raises SIGABRT so the master sees the crash; \
         landlock's signal scope keeps it inside the domain",
        &[&[ArgCheck::eq(2, libc::SIGABRT as u64)]]
    ),
];

/// Starting threads with `std::thread::spawn` (glibc `pthread_create`).
pub const THREADS: &[Syscall] = &[
    allow!(
        SYS_clone,
        "pthread_create, with exactly glibc's thread flags (no namespaces, no fork)",
        &[&[ArgCheck::eq(0, THREAD_CLONE_FLAGS)]]
    ),
    allow!(
        SYS_set_robust_list,
        "a new thread registers its robust futex list"
    ),
];

/// Forking a child of the same program and waiting for it (the `local`
/// delivery agent forks per delivery).
pub const FORK_WAIT: &[Syscall] = &[
    allow!(
        SYS_clone,
        "fork, with exactly glibc's fork flags",
        &[&[ArgCheck::eq(0, FORK_CLONE_FLAGS)]]
    ),
    allow!(
        SYS_set_robust_list,
        "glibc re-registers the robust list in a forked child"
    ),
    allow!(SYS_wait4, "reap the child"),
    allow!(SYS_getppid, "a child checks its parent is still there"),
    allow!(
        SYS_close_range,
        "a child closes the parent's descriptors in one call",
        &[&[ArgCheck::eq(2, 0)]]
    ),
    allow!(
        SYS_kill,
        "stop a child that overran its time limit",
        &[
            &[ArgCheck::eq(1, libc::SIGKILL as u64)],
            &[ArgCheck::eq(1, libc::SIGTERM as u64)],
        ]
    ),
];

/// What [`crate::spawn()`] needs: fork, place descriptors, set the parent-death
/// signal, exec. Only the master starts programs. The program then starts
/// under the spawner's filter, so the spawner also needs [`EXEC_START`].
pub const SPAWN: &[Syscall] = &[
    allow!(SYS_openat, "open /dev/null for the child's stdin"),
    allow!(
        SYS_clone,
        "fork for spawn, with exactly glibc's fork flags",
        &[&[ArgCheck::eq(0, FORK_CLONE_FLAGS)]]
    ),
    allow!(
        SYS_set_robust_list,
        "glibc re-registers the robust list in a forked child"
    ),
    allow!(SYS_execve, "run a daemon binary"),
    allow!(
        SYS_pipe2,
        "std reports exec failures through a CLOEXEC pipe"
    ),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_dup2, "place stdio and channel descriptors in the child"),
    allow!(SYS_dup3, "place stdio and channel descriptors in the child"),
    allow!(
        SYS_close_range,
        "mark every other descriptor close-on-exec in the child"
    ),
    allow!(
        SYS_prctl,
        "the child sets its parent-death signal",
        &[&[ArgCheck::eq(0, libc::PR_SET_PDEATHSIG as u64)]]
    ),
    allow!(
        SYS_getppid,
        "the child checks the parent did not die before the death signal was armed"
    ),
    allow!(SYS_wait4, "reap children"),
    allow!(SYS_kill, "stop children"),
];

/// What the dynamic loader and Rust's runtime do between `execve` and
/// `main`. A process needs these only when programs it starts run under its
/// filter before they install their own (the master): seccomp filters are
/// inherited across `execve` and can only narrow. This is the widest group:
/// it allows executable mappings (the loader maps libraries), which each
/// daemon's own [`BASE`] takes away again.
pub const EXEC_START: &[Syscall] = &[
    allow!(SYS_execve, "run a daemon binary"),
    allow!(
        SYS_mmap,
        "the loader maps the program's libraries, executable"
    )
    .widening(
        "lifts BASE's PROT_EXEC check: a program started under this filter must map its code; \
         only a process that starts programs lists this group",
    ),
    allow!(
        SYS_mprotect,
        "the loader applies RELRO and segment protections"
    )
    .widening(
        "lifts BASE's PROT_EXEC check: the loader changes the protections of code segments; \
         only a process that starts programs lists this group",
    ),
    allow!(
        SYS_openat,
        "the loader opens libraries; std reads /proc/self/maps"
    ),
    allow!(SYS_pread64, "the loader reads ELF program headers"),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_access, "the loader looks for /etc/ld.so.preload"),
    allow!(SYS_faccessat, "the loader looks for /etc/ld.so.preload"),
    allow!(SYS_faccessat2, "the loader looks for /etc/ld.so.preload"),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_arch_prctl, "glibc sets up thread-local storage"),
    allow!(SYS_set_tid_address, "glibc registers the thread id address"),
    allow!(SYS_set_robust_list, "glibc registers the robust futex list"),
    allow!(SYS_prlimit64, "glibc and std read the stack limit"),
    allow!(
        SYS_sched_getaffinity,
        "glibc's pthread_getattr_np, used by std at start"
    ),
];

/// Serving TCP connections on a listening socket the master passed in.
pub const ACCEPT_TCP: &[Syscall] = &[
    allow!(SYS_accept4, "accept a client connection"),
    allow!(SYS_getsockname, "the local address of a connection"),
    allow!(SYS_getpeername, "the client address"),
    allow!(SYS_setsockopt, "timeouts and TCP options on a connection"),
    allow!(SYS_getsockopt, "socket errors").widening(
        "reads any option of a connection, beyond a channel check's SO_TYPE and SO_DOMAIN; \
         reading an option changes nothing",
    ),
    allow!(SYS_recvfrom, "std's TcpStream::read"),
    allow!(SYS_sendto, "std's TcpStream::write"),
    allow!(SYS_shutdown, "end a session"),
];

/// Opening TCP connections (the smtp client). Landlock decides the ports.
pub const CONNECT_TCP: &[Syscall] = &[
    allow!(
        SYS_socket,
        "an IPv4 or IPv6 stream socket; no other family or type",
        &[
            &[
                ArgCheck::eq(0, libc::AF_INET as u64),
                ArgCheck::masked(1, 0xf, libc::SOCK_STREAM as u64),
            ],
            &[
                ArgCheck::eq(0, libc::AF_INET6 as u64),
                ArgCheck::masked(1, 0xf, libc::SOCK_STREAM as u64),
            ],
        ]
    ),
    allow!(
        SYS_connect,
        "connect to a server (landlock checks the port)"
    ),
    allow!(SYS_getsockname, "the local address of a connection"),
    allow!(SYS_getpeername, "the server address"),
    allow!(SYS_setsockopt, "timeouts and TCP options on a connection"),
    allow!(SYS_getsockopt, "the result of a non-blocking connect").widening(
        "reads any option of a connection, beyond a channel check's SO_TYPE and SO_DOMAIN; \
         reading an option changes nothing",
    ),
    allow!(SYS_recvfrom, "std's TcpStream::read"),
    allow!(SYS_sendto, "std's TcpStream::write"),
    allow!(SYS_shutdown, "end a session"),
];

/// Opening files and listing directories for reading (landlock decides where).
pub const FILES_READ: &[Syscall] = &[
    allow!(
        SYS_openat,
        "open for reading: no write access, no create, no truncate",
        &[&[ArgCheck::none_of(
            2,
            (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64
        )]]
    ),
    allow!(SYS_getdents64, "list a directory (std's read_dir)"),
];

/// Creating, writing, renaming and removing files and directories (landlock
/// decides where).
pub const FILES_WRITE: &[Syscall] = &[
    allow!(SYS_openat, "open or create a file"),
    allow!(SYS_getdents64, "list a directory (std's read_dir)"),
    allow!(SYS_ftruncate, "cut a file back after a failed write"),
    allow!(
        SYS_fsync,
        "make a queue file durable before acknowledging it"
    ),
    allow!(SYS_fdatasync, "make appended data durable"),
    allow!(SYS_fchmod, "mark a queue file complete"),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_rename, "glibc's rename on x86_64"),
    allow!(SYS_renameat, "move a file between queue directories"),
    allow!(SYS_renameat2, "move a file between queue directories"),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_unlink, "glibc's unlink on x86_64"),
    allow!(SYS_unlinkat, "remove a file or an empty directory"),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_mkdir, "glibc's mkdir on x86_64"),
    allow!(SYS_mkdirat, "create a directory"),
    #[cfg(target_arch = "x86_64")]
    allow!(SYS_rmdir, "glibc's rmdir on x86_64"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn all_groups() -> Vec<(&'static str, &'static [Syscall])> {
        vec![
            ("BASE", BASE),
            ("THREADS", THREADS),
            ("FORK_WAIT", FORK_WAIT),
            ("SPAWN", SPAWN),
            ("EXEC_START", EXEC_START),
            ("ACCEPT_TCP", ACCEPT_TCP),
            ("CONNECT_TCP", CONNECT_TCP),
            ("FILES_READ", FILES_READ),
            ("FILES_WRITE", FILES_WRITE),
        ]
    }

    #[test]
    fn names_lose_the_prefix_and_match_numbers() {
        let read = allow!(SYS_read, "x");
        assert_eq!(read.name, "read");
        assert_eq!(read.nr, libc::SYS_read);
        assert_eq!(Syscall::new("plain", 1, "x").name, "plain");
        assert_eq!(Syscall::new("SYS_", 1, "x").name, "SYS_");
    }

    #[test]
    fn every_entry_says_why_and_is_unique_within_its_group() {
        for (group, entries) in all_groups() {
            let mut seen = HashMap::new();
            for entry in entries {
                assert!(
                    !entry.why.trim().is_empty(),
                    "{group}: {} has no reason",
                    entry.name
                );
                assert!(
                    seen.insert(entry.nr, entry.name).is_none(),
                    "{group}: {} listed twice",
                    entry.name
                );
                assert!(entry.name != "clone3" && entry.name != "openat2");
                if let Some(widens) = entry.widens {
                    assert!(!widens.trim().is_empty(), "{group}: {} widens", entry.name);
                }
            }
        }
    }

    #[test]
    fn base_has_what_every_process_needs_and_nothing_that_escapes() {
        let names: Vec<&str> = BASE.iter().map(|s| s.name).collect();
        for needed in [
            "exit_group",
            "exit",
            "read",
            "write",
            "mmap",
            "futex",
            "rt_sigreturn",
        ] {
            assert!(names.contains(&needed), "BASE lacks {needed}");
        }
        for never in [
            "execve", "socket", "connect", "ptrace", "openat", "clone", "setuid", "prctl", "kill",
        ] {
            assert!(!names.contains(&never), "BASE allows {never}");
        }
    }

    #[test]
    fn thread_flags_are_threads_and_fork_flags_are_not() {
        assert_ne!(THREAD_CLONE_FLAGS & libc::CLONE_THREAD as u64, 0);
        assert_eq!(FORK_CLONE_FLAGS & libc::CLONE_VM as u64, 0);
        let namespaces = (libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID) as u64;
        assert_eq!(THREAD_CLONE_FLAGS & namespaces, 0);
        assert_eq!(FORK_CLONE_FLAGS & namespaces, 0);
    }

    #[test]
    fn merge_reports_the_declared_widenings_that_took_effect() {
        let merged = merge(&set(&[BASE, EXEC_START])).expect("declared");
        let find = |name: &str| {
            merged
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let mmap = find("mmap");
        assert_eq!(mmap.allow_if, None);
        assert_eq!(mmap.widened_by.len(), 1);
        assert!(mmap.widened_by[0].contains("PROT_EXEC"));
        assert_eq!(find("mprotect").allow_if, None);
        assert!(find("read").widened_by.is_empty());
        assert_eq!(find("tgkill").allow_if.as_ref().map(Vec::len), Some(1));
        // One entry per syscall, in the order of first appearance.
        assert_eq!(
            merged.len(),
            set(&[BASE, EXEC_START])
                .iter()
                .map(|s| s.nr)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
        assert_eq!(merged[0].name, "read");
        // Alone, EXEC_START widens nothing.
        assert!(merge(EXEC_START)
            .expect("alone")
            .iter()
            .all(|m| m.widened_by.is_empty()));
    }

    #[test]
    fn merge_names_the_syscall_and_both_reasons() {
        let listed_twice = [
            BASE[0],
            allow!(SYS_tgkill, "any signal"),
            allow!(SYS_exit_group, "x"),
        ];
        let mut list = BASE.to_vec();
        list.extend_from_slice(&listed_twice);
        let err = merge(&list).expect_err("tgkill is lifted");
        assert_eq!(err.name, "tgkill");
        assert_eq!(err.wider, "any signal");
        assert!(err.narrower.starts_with("abort() after a panic"));
        assert!(err
            .to_string()
            .starts_with("tgkill: the entry \"any signal\""));
    }

    #[test]
    fn masks_are_kept_by_stricter_masks_and_matching_values() {
        let limit = ArgCheck::none_of(2, 0b0100);
        assert!(keeps(&[ArgCheck::none_of(2, 0b0110)], &limit));
        assert!(keeps(&[ArgCheck::eq(2, 0b0011)], &limit));
        assert!(!keeps(&[ArgCheck::eq(2, 0b0111)], &limit));
        assert!(!keeps(&[ArgCheck::none_of(2, 0b0010)], &limit));
        assert!(!keeps(&[ArgCheck::none_of(1, 0b0100)], &limit));
        assert!(!keeps(&[], &limit));
        let stream = ArgCheck::masked(1, 0xf, 1);
        assert!(keeps(&[ArgCheck::masked(1, 0xff, 0x81)], &stream));
        assert!(!keeps(&[ArgCheck::masked(1, 0xff, 0x82)], &stream));
    }

    #[test]
    fn set_concatenates_groups() {
        let joined = set(&[BASE, THREADS]);
        assert_eq!(joined.len(), BASE.len() + THREADS.len());
        assert_eq!(joined[BASE.len()].name, "clone");
    }
}
