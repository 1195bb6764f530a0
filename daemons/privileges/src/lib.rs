//! Every daemon role's privileges, declared once: its `sandbox::Profile` (identity, capabilities,
//! landlock paths, ports, syscalls), the channels the access matrix lets it ask for, and the
//! privilege map rendered from these declarations for `postern check` and SECURITY.md.
//!
//! A role is the command name of a `master.cf` line (`smtpd`, `cleanup`, ...). Trusts: the
//! settings (`main.cf` is written by the administrator), which are still checked: an identity must
//! resolve to a non-root uid, paths must be absolute. Nothing here reads another process's bytes.
//! Widening a role is a reviewed change to this file, SECURITY.md and a test.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use conf::MainCf;
use sandbox::syscalls::{self, ArgCheck, Syscall};
use sandbox::{Capability, Enforcement, FsAccess, FsRule, Identity, Profile, TcpPorts};

/// The daemon roles that have a profile, in the order of ARCHITECTURE.md's process table.
pub const ROLES: &[&str] = &[
    "smtpd", "cleanup", "qmgr", "smtp", "virtual", "local", "pickup", "bounce", "proxymap",
];

/// Processes a daemon forks for itself before its own sandbox, each with a profile of its own
/// (not services of `master.cf`): `local-command` is the `local` agent's command launcher, the
/// one process of the system whose filter allows `execve`.
pub const HELPER_ROLES: &[&str] = &["local-command"];

/// Whether a process of `role` runs `|command` deliveries under `settings`: the one kind of
/// process whose seccomp filter lets it `execve` and map executable memory (the loader of the
/// command's programs runs under the filter it inherits) — `local`'s command launcher, while
/// `allow_mail_to_commands` is set. Every other profile must refuse both, which
/// `sandbox/tests/enforcement.rs` checks against this declaration.
pub fn runs_commands(role: &str, settings: &MainCf) -> Result<bool, PrivilegeError> {
    match role {
        "local-command" => Ok(!param(settings, "allow_mail_to_commands")?.trim().is_empty()),
        other if ROLES.contains(&other) => Ok(false),
        other => Err(PrivilegeError::UnknownRole(other.to_owned())),
    }
}

/// The master's capabilities once it is confined (effective, permitted and bounding): signal
/// children that run under other uids, bind privileged ports on reload. It changes no ids and
/// starts no program: its spawner does.
pub const MASTER_CAPS: [Capability; 2] = [Capability::CAP_KILL, Capability::CAP_NET_BIND_SERVICE];

/// The spawner's bounding set (nothing effective or permitted): a daemon exec'd as root
/// receives the bounding set as its permitted set, and keeps what its profile says.
/// CAP_SETUID and CAP_SETGID: the daemons change to their uids, `local` to each recipient.
/// CAP_SETPCAP: every daemon needs it to empty its own bounding set before it changes uid.
/// CAP_CHOWN: the `local` agent hands a spool mailbox it made to the recipient.
pub const SPAWNER_BOUNDING: [Capability; 4] = [
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_CHOWN,
];

/// Why a daemon program may not be executed: as `postfix check` warns, a program that someone
/// other than root can replace or modify runs, as root, code of whoever that is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProgramError {
    #[error("{path}: {problem}")]
    Unusable { path: PathBuf, problem: String },
    #[error("{path}: owned by uid {uid}, not by root: refusing to execute it")]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error("{path}: writable by group or others (mode {mode:04o}): refusing to execute it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
}

/// Checks a daemon program and the directory it is in before they are executed: owned by
/// root (or, under `--dev`, by root or the invoking user), not writable by group or others,
/// and the program a regular file.
pub fn check_program(program: &Path, run_as: RunAs) -> Result<(), ProgramError> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let dir = program.parent().unwrap_or(Path::new("/"));
    for (path, is_program) in [(dir, false), (program, true)] {
        let meta = std::fs::metadata(path).map_err(|e| ProgramError::Unusable {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        if is_program && !meta.is_file() {
            return Err(ProgramError::NotAFile {
                path: path.to_owned(),
            });
        }
        let owner_ok = match run_as {
            RunAs::Root => meta.uid() == 0,
            RunAs::Unprivileged => meta.uid() == 0 || meta.uid() == me,
        };
        if !owner_ok {
            return Err(ProgramError::NotRootOwned {
                path: path.to_owned(),
                uid: meta.uid(),
            });
        }
        // A sticky world-writable directory still lets anyone add files; no exception.
        if meta.mode() & 0o022 != 0 {
            return Err(ProgramError::Writable {
                path: path.to_owned(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok(())
}

/// Who may ask the master for a channel to whom: `(client role, server role, what flows)`.
/// `master.cf` can only narrow this (a service that is not configured cannot be reached).
pub const ACCESS_MATRIX: &[(&str, &str, &str)] = &[
    ("smtpd", "cleanup", "a new message from an SMTP client"),
    ("smtpd", "auth", "SASL authentication"),
    ("pickup", "cleanup", "a message from the maildrop"),
    ("bounce", "cleanup", "a delivery status notification"),
    (
        "local",
        "cleanup",
        "a message forwarded by an alias or .forward",
    ),
    ("cleanup", "qmgr", "wake-up: a new queue file"),
    ("qmgr", "smtp", "a delivery request (queue file fd)"),
    ("qmgr", "virtual", "a delivery request (queue file fd)"),
    ("qmgr", "local", "a delivery request (queue file fd)"),
    ("qmgr", "bounce", "a bounce or delay notice to send"),
    ("smtpd", "proxymap", "a local account lookup at RCPT"),
    ("local", "proxymap", "a recipient's account and groups"),
];

/// Whether a process of role `from` may be handed a channel to a service of role `to`.
pub fn may_connect(from: &str, to: &str) -> bool {
    ACCESS_MATRIX.iter().any(|(f, t, _)| *f == from && *t == to)
}

/// The roles `role` may ask for a channel to.
pub fn channels_of(role: &str) -> Vec<&'static str> {
    ACCESS_MATRIX
        .iter()
        .filter(|(f, _, _)| *f == role)
        .map(|(_, t, _)| *t)
        .collect()
}

/// Whether the daemons run as root (and so change to their own uids) or as the invoking user
/// (development: every daemon keeps that uid but is still sandboxed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAs {
    Root,
    Unprivileged,
}

impl RunAs {
    pub fn current() -> RunAs {
        if nix::unistd::geteuid().is_root() {
            RunAs::Root
        } else {
            RunAs::Unprivileged
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("no privileges are declared for the command {0:?} (known: {known})", known = ROLES.join(", "))]
    UnknownRole(String),
    #[error("parameter {name}: {source}")]
    Setting {
        name: &'static str,
        #[source]
        source: conf::ConfError,
    },
    #[error("{name} = {value}: not a user name or a numeric uid[:gid] other than 0")]
    BadAccount { name: &'static str, value: String },
    #[error("{name} = {value}: no such user in the passwd database (use a numeric uid[:gid])")]
    NoSuchUser { name: &'static str, value: String },
    #[error("{name} = {value}: cannot read the passwd database: {source}")]
    Passwd {
        name: &'static str,
        value: String,
        #[source]
        source: nix::Error,
    },
    #[error("{name} = {value}: must be an absolute path")]
    RelativePath { name: &'static str, value: String },
    #[error("{name} = {value}: unknown value: {source}")]
    Enforcement {
        name: &'static str,
        value: String,
        #[source]
        source: sandbox::ParseEnforcementError,
    },
}

fn param(settings: &MainCf, name: &'static str) -> Result<String, PrivilegeError> {
    settings
        .get(name)
        .map_err(|source| PrivilegeError::Setting { name, source })
}

fn path_param(settings: &MainCf, name: &'static str) -> Result<PathBuf, PrivilegeError> {
    let value = param(settings, name)?;
    let path = PathBuf::from(value.trim());
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(PrivilegeError::RelativePath { name, value })
    }
}

/// Resolves a `*_user` setting: a user name (looked up in the passwd database; its primary
/// group) or a numeric `uid[:gid]` that needs no passwd entry (the gid defaults to the uid).
pub fn account(settings: &MainCf, name: &'static str) -> Result<Identity, PrivilegeError> {
    let value = param(settings, name)?;
    let value = value.trim();
    let bad = || PrivilegeError::BadAccount {
        name,
        value: value.to_owned(),
    };
    let id = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
            .filter(|n| *n != 0 && *n != u32::MAX)
    };
    let (uid, gid) = if value.starts_with(|c: char| c.is_ascii_digit()) {
        match value.split_once(':') {
            Some((u, g)) => (id(u).ok_or_else(bad)?, id(g).ok_or_else(bad)?),
            None => {
                let uid = id(value).ok_or_else(bad)?;
                (uid, uid)
            }
        }
    } else {
        if value.is_empty() || value == "root" || value.contains([':', '/']) {
            return Err(bad());
        }
        let user = nix::unistd::User::from_name(value)
            .map_err(|source| PrivilegeError::Passwd {
                name,
                value: value.to_owned(),
                source,
            })?
            .ok_or_else(|| PrivilegeError::NoSuchUser {
                name,
                value: value.to_owned(),
            })?;
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        if uid == 0 || gid == 0 {
            return Err(bad());
        }
        (uid, gid)
    };
    Ok(Identity {
        uid,
        gid,
        groups: Vec::new(),
    })
}

fn enforcement(settings: &MainCf) -> Result<Enforcement, PrivilegeError> {
    let name = "sandbox_enforcement";
    let value = param(settings, name)?;
    value
        .trim()
        .parse()
        .map_err(|source| PrivilegeError::Enforcement {
            name,
            value: value.clone(),
            source,
        })
}

/// Taking over a channel the master hands over: `protocol::Channel::from_fd` checks that the
/// descriptor is an `AF_UNIX SOCK_SEQPACKET` socket before using it.
const CHANNELS: &[Syscall] = &[Syscall::new(
    "getsockopt",
    libc::SYS_getsockopt,
    "check that a received channel is a SOCK_SEQPACKET AF_UNIX socket (SO_TYPE, SO_DOMAIN only)",
)
.when(&[
    &[
        ArgCheck::eq(1, libc::SOL_SOCKET as u64),
        ArgCheck::eq(2, libc::SO_TYPE as u64),
    ],
    &[
        ArgCheck::eq(1, libc::SOL_SOCKET as u64),
        ArgCheck::eq(2, libc::SO_DOMAIN as u64),
    ],
])];

/// Queue file locks: cleanup holds `flock(LOCK_EX)` on a queue file while it writes it, and its
/// start-up sweep takes the lock (`LOCK_NB`) to tell a dead writer's incomplete file from a live
/// one's; qmgr's start-up recovery does the same in `incoming/`.
const QUEUE_LOCKS: &[Syscall] = &[Syscall::new(
    "flock",
    libc::SYS_flock,
    "lock a queue file while writing it; test a file's lock in the start-up sweep",
)];

/// Queue file times: a deferred file's mtime is its next retry time, so qmgr's deferred scan
/// needs only `stat` (Postfix's scheme); std's `File::set_times` is `futimens`, which is the
/// `utimensat` system call on a descriptor.
const QUEUE_TIMES: &[Syscall] = &[Syscall::new(
    "utimensat",
    libc::SYS_utimensat,
    "qmgr: set a deferred queue file's mtime to its next retry time",
)];

/// The virtual agent: reading a queue file by descriptor without moving its shared offset, and
/// locking an mbox file as mail readers expect (`fcntl` write lock, tried without blocking).
const VIRTUAL_DELIVERY: &[Syscall] = &[
    Syscall::new(
        "geteuid",
        libc::SYS_geteuid,
        "virtual: its own uid is the owner every mailbox and directory below the base must have",
    ),
    Syscall::new(
        "pread64",
        libc::SYS_pread64,
        "virtual: read the message from the queue file descriptor at the offset qmgr named",
    ),
    Syscall::new(
        "fcntl",
        libc::SYS_fcntl,
        "virtual: take or release an mbox file's fcntl write lock (F_SETLK only)",
    )
    .when(&[&[ArgCheck::eq(1, libc::F_SETLK as u64)]]),
];

/// Changing ids per delivery: the `local` agent forks and becomes the recipient.
const SET_IDS: &[Syscall] = &[
    Syscall::new(
        "setresuid",
        libc::SYS_setresuid,
        "local: a delivery child becomes the recipient",
    ),
    Syscall::new(
        "setresgid",
        libc::SYS_setresgid,
        "local: a delivery child takes the recipient's group",
    ),
    Syscall::new(
        "setgroups",
        libc::SYS_setgroups,
        "local: a delivery child drops supplementary groups",
    ),
];

/// What a `local` delivery child needs beyond [`SET_IDS`] to confine itself
/// (`sandbox::confine_delivery`) and to write a mailbox.
const DELIVERY_CHILD: &[Syscall] = &[
    Syscall::new(
        "fchown",
        libc::SYS_fchown,
        "local: a missing spool mailbox, just made 0600, is handed to the recipient",
    ),
    Syscall::new(
        "pread64",
        libc::SYS_pread64,
        "local: read the message from the queue file descriptor at the offset qmgr named",
    ),
    Syscall::new(
        "capget",
        libc::SYS_capget,
        "local: a delivery child proves its capability sets are empty",
    ),
    Syscall::new(
        "capset",
        libc::SYS_capset,
        "local: a delivery child empties every capability set",
    ),
    Syscall::new(
        "landlock_create_ruleset",
        libc::SYS_landlock_create_ruleset,
        "local: a delivery child landlocks itself to one mailbox",
    ),
    Syscall::new(
        "landlock_add_rule",
        libc::SYS_landlock_add_rule,
        "local: a delivery child landlocks itself to one mailbox",
    ),
    Syscall::new(
        "landlock_restrict_self",
        libc::SYS_landlock_restrict_self,
        "local: a delivery child landlocks itself to one mailbox",
    ),
    Syscall::new(
        "prctl",
        libc::SYS_prctl,
        "local: landlock_restrict_self is preceded by PR_SET_NO_NEW_PRIVS (already set; only narrows)",
    )
    .when(&[&[ArgCheck::eq(0, libc::PR_SET_NO_NEW_PRIVS as u64)]]),
    Syscall::new(
        "getresuid",
        libc::SYS_getresuid,
        "local: a delivery child reads back its ids",
    ),
    Syscall::new(
        "getresgid",
        libc::SYS_getresgid,
        "local: a delivery child reads back its ids",
    ),
    Syscall::new(
        "fcntl",
        libc::SYS_fcntl,
        "local: fcntl locks on a mailbox file, as mail readers expect",
    )
    .when(&[
        &[ArgCheck::eq(1, libc::F_SETLK as u64)],
        &[ArgCheck::eq(1, libc::F_SETLKW as u64)],
        &[ArgCheck::eq(1, libc::F_GETLK as u64)],
    ]),
    Syscall::new(
        "pipe2",
        libc::SYS_pipe2,
        "local: a delivery child reports back, a command gets its input",
    ),
];

/// What `/bin/sh` and the programs of a `|command` delivery need under the `local` agent's
/// inherited filter, beyond [`sandbox::syscalls::EXEC_START`] (seccomp filters are inherited
/// across `execve` and only narrow). Only in the profile while `allow_mail_to_commands` is set.
const COMMANDS: &[Syscall] = &[
    Syscall::new("execve", libc::SYS_execve, "local: run /bin/sh -c COMMAND"),
    Syscall::new(
        "setsid",
        libc::SYS_setsid,
        "local: a command runs in a session and process group of its own, killed whole at its time limit",
    ),
    #[cfg(target_arch = "x86_64")]
    Syscall::new(
        "dup2",
        libc::SYS_dup2,
        "local: the shell places descriptors",
    ),
    Syscall::new(
        "dup3",
        libc::SYS_dup3,
        "local: place the command's stdin and output",
    ),
    Syscall::new(
        "ioctl",
        libc::SYS_ioctl,
        "local: the shell asks whether stdin is a terminal",
    )
    .when(&[&[ArgCheck::eq(1, libc::TCGETS)]]),
    Syscall::new(
        "fcntl",
        libc::SYS_fcntl,
        "local: the shell moves descriptors (F_DUPFD)",
    )
    .when(&[&[ArgCheck::eq(1, libc::F_DUPFD as u64)]]),
    Syscall::new("getuid", libc::SYS_getuid, "local: the shell reads its ids"),
    Syscall::new(
        "geteuid",
        libc::SYS_geteuid,
        "local: the shell reads its ids",
    ),
    Syscall::new("getgid", libc::SYS_getgid, "local: the shell reads its ids"),
    Syscall::new(
        "getegid",
        libc::SYS_getegid,
        "local: the shell reads its ids",
    ),
    Syscall::new(
        "getpgrp",
        libc::SYS_getpgrp,
        "local: the shell reads its process group",
    ),
    Syscall::new(
        "getcwd",
        libc::SYS_getcwd,
        "local: the shell reads its directory",
    ),
    Syscall::new(
        "chdir",
        libc::SYS_chdir,
        "local: the command starts in the recipient's home",
    ),
    Syscall::new(
        "umask",
        libc::SYS_umask,
        "local: programs set their file mode mask",
    ),
    Syscall::new(
        "uname",
        libc::SYS_uname,
        "local: programs read the host name",
    ),
    Syscall::new(
        "readlinkat",
        libc::SYS_readlinkat,
        "local: programs resolve links",
    ),
    #[cfg(target_arch = "x86_64")]
    Syscall::new(
        "readlink",
        libc::SYS_readlink,
        "local: programs resolve links",
    ),
    #[cfg(target_arch = "x86_64")]
    Syscall::new("stat", libc::SYS_stat, "local: the shell looks up programs"),
    #[cfg(target_arch = "x86_64")]
    Syscall::new("lstat", libc::SYS_lstat, "local: programs look at files"),
    #[cfg(target_arch = "x86_64")]
    Syscall::new("open", libc::SYS_open, "local: programs open files"),
    Syscall::new(
        "sysinfo",
        libc::SYS_sysinfo,
        "local: programs read memory sizes",
    ),
    #[cfg(target_arch = "x86_64")]
    Syscall::new(
        "vfork",
        libc::SYS_vfork,
        "local: the shell (dash) starts each program of a command with vfork",
    ),
];

fn rule(path: PathBuf, access: FsAccess, why: &'static str) -> FsRule {
    FsRule { path, access, why }
}

/// The queue subdirectories qmgr moves files between.
pub const QUEUE_DIRS: &[&str] = &["incoming", "active", "deferred", "hold", "corrupt"];

/// The sandbox profile of `role` under `settings` (main.cf with the service's `-o` overrides).
pub fn profile(role: &str, settings: &MainCf, run_as: RunAs) -> Result<Profile, PrivilegeError> {
    let queue = || path_param(settings, "queue_directory");
    let user = |name: &'static str| -> Result<Option<Identity>, PrivilegeError> {
        match run_as {
            RunAs::Root => account(settings, name).map(Some),
            RunAs::Unprivileged => Ok(None),
        }
    };
    let base = Profile::new(role);
    let mut p = match role {
        "smtpd" => Profile {
            identity: user("smtpd_user")?,
            syscalls: syscalls::set(&[syscalls::BASE, CHANNELS, syscalls::ACCEPT_TCP]),
            ..base
        },
        "cleanup" => Profile {
            identity: user("queue_user")?,
            fs: vec![rule(
                queue()?.join("incoming"),
                FsAccess::CREATE_REMOVE,
                "write new queue files",
            )],
            syscalls: syscalls::set(&[
                syscalls::BASE,
                CHANNELS,
                syscalls::FILES_WRITE,
                QUEUE_LOCKS,
            ]),
            ..base
        },
        "qmgr" => {
            let q = queue()?;
            Profile {
                identity: user("queue_user")?,
                fs: QUEUE_DIRS
                    .iter()
                    .map(|d| {
                        rule(
                            q.join(d),
                            FsAccess::MOVE_ACROSS,
                            "read queue files, move them between queues, remove delivered ones",
                        )
                    })
                    .collect(),
                syscalls: syscalls::set(&[
                    syscalls::BASE,
                    CHANNELS,
                    syscalls::FILES_WRITE,
                    QUEUE_LOCKS,
                    QUEUE_TIMES,
                ]),
                ..base
            }
        }
        "smtp" => Profile {
            identity: user("smtp_user")?,
            tcp_connect: TcpPorts::Any,
            syscalls: syscalls::set(&[syscalls::BASE, CHANNELS, syscalls::CONNECT_TCP]),
            ..base
        },
        "virtual" => {
            let mailboxes = param(settings, "virtual_mailbox_base")?;
            let fs = if mailboxes.trim().is_empty() {
                Vec::new()
            } else {
                vec![rule(
                    path_param(settings, "virtual_mailbox_base")?,
                    // REFER: landlock refuses a rename between directories without it,
                    // and a Maildir delivery renames tmp/NAME to new/NAME.
                    FsAccess::MOVE_ACROSS | FsAccess::MAKE_DIR,
                    "deliver into virtual mailboxes (Maildir: create in tmp/, rename into new/)",
                )]
            };
            Profile {
                identity: user("vmail_user")?,
                fs,
                syscalls: syscalls::set(&[
                    syscalls::BASE,
                    CHANNELS,
                    syscalls::FILES_WRITE,
                    VIRTUAL_DELIVERY,
                ]),
                ..base
            }
        }
        "local" => {
            let fs = vec![
                rule(
                    path_param(settings, "mail_spool_directory")?,
                    FsAccess::CREATE_REMOVE,
                    "deliver into mailbox files (each delivery child narrows this to one mailbox)",
                ),
                rule(
                    path_param(settings, "local_home_base")?,
                    FsAccess::CREATE_REMOVE | FsAccess::MAKE_DIR | FsAccess::REFER,
                    "Maildir delivery and .forward files in users' homes (each child narrows this to one home)",
                ),
            ];
            Profile {
                identity: None,
                // CAP_CHOWN: a missing spool mailbox is made by this process in a directory
                // no user can write and handed to the recipient before anything is written.
                keep_caps: match run_as {
                    RunAs::Root => vec![
                        Capability::CAP_SETUID,
                        Capability::CAP_SETGID,
                        Capability::CAP_CHOWN,
                    ],
                    RunAs::Unprivileged => Vec::new(),
                },
                fs,
                // No EXEC_START, no COMMANDS: `|command` deliveries go to the launcher
                // (`local-command`), forked before this filter was installed.
                syscalls: syscalls::set(&[
                    syscalls::BASE,
                    CHANNELS,
                    syscalls::FILES_WRITE,
                    syscalls::FORK_WAIT,
                    SET_IDS,
                    DELIVERY_CHILD,
                ]),
                ..base
            }
        }
        "local-command" => {
            let mut fs = vec![rule(
                path_param(settings, "local_home_base")?,
                FsAccess::CREATE_REMOVE | FsAccess::MAKE_DIR,
                "a command runs in its user's home (each child narrows this to that home)",
            )];
            let mut groups: Vec<&[Syscall]> = vec![
                syscalls::BASE,
                CHANNELS,
                syscalls::FILES_WRITE,
                syscalls::FORK_WAIT,
                SET_IDS,
                DELIVERY_CHILD,
            ];
            if runs_commands(role, settings)? {
                fs.extend([
                    rule(
                        PathBuf::from("/usr"),
                        FsAccess::EXEC,
                        "|command deliveries run /bin/sh and the programs it starts",
                    ),
                    rule(
                        PathBuf::from("/etc/ld.so.cache"),
                        FsAccess::READ_FILE,
                        "the dynamic loader of a |command finds its libraries",
                    ),
                    rule(
                        PathBuf::from("/dev/null"),
                        FsAccess::READ_WRITE,
                        "a |command's programs may redirect to /dev/null",
                    ),
                ]);
                groups.extend([syscalls::EXEC_START, COMMANDS]);
            }
            Profile {
                identity: None,
                keep_caps: match run_as {
                    RunAs::Root => vec![Capability::CAP_SETUID, Capability::CAP_SETGID],
                    RunAs::Unprivileged => Vec::new(),
                },
                fs,
                syscalls: syscalls::set(&groups),
                ..base
            }
        }
        "pickup" => Profile {
            identity: user("queue_user")?,
            fs: vec![rule(
                queue()?.join("maildrop"),
                FsAccess::READ_ONLY | FsAccess::REMOVE_FILE,
                "read and remove messages posted by postdrop",
            )],
            syscalls: syscalls::set(&[syscalls::BASE, CHANNELS, syscalls::FILES_WRITE]),
            ..base
        },
        "bounce" => Profile {
            identity: user("bounce_user")?,
            syscalls: syscalls::set(&[syscalls::BASE, CHANNELS]),
            ..base
        },
        "proxymap" => {
            // SECURITY: a rule on the directory, not on the files: `useradd` and `vipw`
            // replace /etc/passwd by rename, and a rule on the old inode would refuse the new
            // file. The directory also holds /etc/shadow; the non-root `proxymap_user` cannot
            // read it (mode 0640 root:shadow), and unprivileged (`--dev`) neither can the
            // invoking user. Reading only: no write, no create, no directory listing.
            let mut fs: Vec<FsRule> = Vec::new();
            for name in ["local_passwd_file", "local_group_file"] {
                let file = path_param(settings, name)?;
                let dir = file
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
                if !fs.iter().any(|r| r.path == dir) {
                    fs.push(rule(
                        dir,
                        FsAccess::READ_FILE,
                        "read local_passwd_file and local_group_file, also after a rename replaced them",
                    ));
                }
            }
            Profile {
                identity: user("proxymap_user")?,
                fs,
                syscalls: syscalls::set(&[syscalls::BASE, CHANNELS, syscalls::FILES_READ]),
                ..base
            }
        }
        other => return Err(PrivilegeError::UnknownRole(other.to_owned())),
    };
    p.enforcement = enforcement(settings)?;
    Ok(p)
}

/// What the master needs once its listeners are bound, its pid file held and its log open.
const MASTER: &[Syscall] = &[
    Syscall::new(
        "socketpair",
        libc::SYS_socketpair,
        "make the channels it hands to daemons",
    ),
    Syscall::new("pipe2", libc::SYS_pipe2, "a pipe per daemon for its stderr"),
    Syscall::new(
        "wait4",
        libc::SYS_wait4,
        "reap daemons (children of the master, started by its spawner)",
    ),
    Syscall::new(
        "kill",
        libc::SYS_kill,
        "stop a daemon that broke the protocol or outlived the stop timeout",
    )
    .when(&[
        &[ArgCheck::eq(1, libc::SIGKILL as u64)],
        &[ArgCheck::eq(1, libc::SIGTERM as u64)],
        &[ArgCheck::eq(1, 0)],
    ]),
    Syscall::new(
        "socket",
        libc::SYS_socket,
        "bind a listener added by a reload",
    )
    .when(&[
        &[
            ArgCheck::eq(0, libc::AF_INET as u64),
            ArgCheck::masked(1, 0xf, libc::SOCK_STREAM as u64),
        ],
        &[
            ArgCheck::eq(0, libc::AF_INET6 as u64),
            ArgCheck::masked(1, 0xf, libc::SOCK_STREAM as u64),
        ],
    ]),
    Syscall::new("bind", libc::SYS_bind, "bind a listener added by a reload"),
    Syscall::new("listen", libc::SYS_listen, "listen on a new listener"),
    Syscall::new(
        "setsockopt",
        libc::SYS_setsockopt,
        "SO_REUSEADDR and IPV6_V6ONLY on a new listener",
    ),
    Syscall::new(
        "getsockname",
        libc::SYS_getsockname,
        "the address a listener is bound to",
    ),
    Syscall::new(
        "sendto",
        libc::SYS_sendto,
        "send a log line on the syslog socket connected before",
    ),
    Syscall::new("getuid", libc::SYS_getuid, "whether it runs as root"),
    Syscall::new("geteuid", libc::SYS_geteuid, "whether it runs as root"),
    Syscall::new("uname", libc::SYS_uname, "the host name of a syslog line"),
    #[cfg(target_arch = "x86_64")]
    Syscall::new(
        "dup2",
        libc::SYS_dup2,
        "point stdout at /dev/null after the ready line",
    ),
    Syscall::new(
        "dup3",
        libc::SYS_dup3,
        "point stdout at /dev/null after the ready line",
    ),
    Syscall::new(
        "setsid",
        libc::SYS_setsid,
        "leave the starting terminal's session",
    ),
    Syscall::new(
        "flock",
        libc::SYS_flock,
        "release the pid file's lock at stop",
    ),
];

/// The master's own profile, applied to itself once the listeners are bound, the pid file
/// held, the log open and the spawner forked. It keeps its ids (root) and two capabilities,
/// reads only its configuration directory and the kernel's process table, writes only its pid
/// directory, and may neither `execve` nor map executable memory: daemons are started by the
/// spawner, which the master forked before it confined itself. Not a daemon's profile: its
/// children are not born in its landlock domain, so it may signal them (no signal scope).
pub fn master_profile(
    settings: &MainCf,
    config_dir: &Path,
    run_as: RunAs,
) -> Result<Profile, PrivilegeError> {
    let queue = path_param(settings, "queue_directory")?;
    // The log (maillog_file or syslog's socket) is open before: landlock checks opens, not
    // writes to an open descriptor. A reload that names another log needs a restart.
    let fs = vec![
        rule(
            config_dir.to_owned(),
            FsAccess::READ_ONLY,
            "re-read main.cf and master.cf on reload",
        ),
        rule(
            queue.join("pid"),
            FsAccess::CREATE_REMOVE,
            "the pid file (removed at stop) and the status file (rewritten by rename)",
        ),
        rule(
            PathBuf::from("/proc"),
            FsAccess::READ_FILE,
            "compare a daemon's Ready report with /proc/PID/status",
        ),
    ];
    Ok(Profile {
        identity: None,
        keep_caps: match run_as {
            RunAs::Root => MASTER_CAPS.to_vec(),
            RunAs::Unprivileged => Vec::new(),
        },
        fs,
        // Listeners: a reload may add one on any port; CAP_NET_BIND_SERVICE is kept for it.
        tcp_bind: TcpPorts::Any,
        syscalls: syscalls::set(&[syscalls::BASE, CHANNELS, syscalls::FILES_WRITE, MASTER]),
        scope_signals: false,
        enforcement: enforcement(settings)?,
        ..Profile::new("master")
    })
}

/// What a role's `Ready` report must show: the capability mask every set must equal.
pub fn expected_caps(profile: &Profile) -> u64 {
    profile.keep_caps_mask()
}

fn caps_list(caps: &[Capability]) -> String {
    let mut names: Vec<String> = caps.iter().map(ToString::to_string).collect();
    names.sort();
    names.join(", ")
}

/// The privilege map as a Markdown table (the master's row, then one row per role), followed by
/// the access matrix.
pub fn privilege_map_markdown(settings: &MainCf, run_as: RunAs) -> Result<String, PrivilegeError> {
    let mut out = String::new();
    out.push_str(sandbox::PRIVILEGE_MAP_HEADER);
    out.push('\n');
    let config_dir = path_param(settings, "config_directory")?;
    let _ = writeln!(out, "{}", master_profile(settings, &config_dir, run_as)?);
    let _ = writeln!(
        out,
        "| spawner | unchanged ({}) | none (bounding set {}, what a daemon exec'd as root may keep) | not landlocked: each daemon starts in its domain | none | none | no filter (each daemon installs its own) | - |",
        match run_as {
            RunAs::Root => "root",
            RunAs::Unprivileged => "invoking user",
        },
        caps_list(&SPAWNER_BOUNDING)
    );
    for role in ROLES.iter().chain(HELPER_ROLES) {
        let _ = writeln!(out, "{}", profile(role, settings, run_as)?);
    }
    out.push('\n');
    out.push_str("| client | may be handed a channel to | for |\n|---|---|---|\n");
    for (from, to, why) in ACCESS_MATRIX {
        let _ = writeln!(out, "| {from} | {to} | {why} |");
    }
    Ok(out)
}

/// The privilege map as plain text, one block per role, for `postern check`.
pub fn privilege_map_text(settings: &MainCf, run_as: RunAs) -> Result<String, PrivilegeError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spawner: ids unchanged; no capabilities (bounding set {}); no landlock, no seccomp; executes only daemon_directory's programs of declared roles, as children of the master",
        caps_list(&SPAWNER_BOUNDING)
    );
    let config_dir = path_param(settings, "config_directory")?;
    for role in std::iter::once(&"master").chain(ROLES).chain(HELPER_ROLES) {
        let p = if *role == "master" {
            master_profile(settings, &config_dir, run_as)?
        } else {
            profile(role, settings, run_as)?
        };
        let ids = p.identity.as_ref().map_or_else(
            || "unchanged".to_owned(),
            |id| format!("{}:{}", id.uid, id.gid),
        );
        let caps = if p.keep_caps.is_empty() {
            "none".to_owned()
        } else {
            caps_list(&p.keep_caps)
        };
        let paths = if p.fs.is_empty() {
            "none".to_owned()
        } else {
            p.fs.iter()
                .map(|r| format!("{} ({})", r.path.display(), r.access))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let channels = channels_of(role);
        let _ = writeln!(
            out,
            "{role}: runs as {ids}; capabilities {caps}; paths {paths}; tcp bind {}; tcp connect {}; {} syscalls ({} on violation); channels to {}; enforcement {}",
            p.tcp_bind,
            p.tcp_connect,
            p.syscall_count(),
            p.on_violation,
            if channels.is_empty() { "none".to_owned() } else { channels.join(", ") },
            p.enforcement
        );
    }
    Ok(out)
}

/// Where the master finds a role's program: `daemon_directory/COMMAND`.
pub fn program_path(daemon_directory: &Path, command: &str) -> PathBuf {
    daemon_directory.join(command)
}

#[cfg(test)]
mod tests;
