//! A daemon's sandbox declaration: who it runs as, which capabilities it
//! keeps, which paths and ports landlock lets it use and which syscalls
//! seccomp allows.
//!
//! Trusts: profiles are written in code, one per daemon, and reviewed; they
//! are still validated ([`Profile::validate`]) because a wrong declaration
//! must fail loudly rather than sandbox less. Nothing here reads outside
//! input except [`Enforcement::from_str`], which parses a `main.cf` value.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::error::ProfileError;
use crate::syscalls::{self, Syscall};

pub use caps::Capability;

/// Longest service name; `master.cf` service names are short words.
pub const MAX_SERVICE_NAME: usize = 32;
/// Most supplementary groups a daemon may hold; Postern daemons need none or
/// one, and the kernel's own limit (65536) is far beyond review.
pub const MAX_GROUPS: usize = 16;
/// Most landlock path rules in one profile; each is a reviewed grant.
pub const MAX_FS_RULES: usize = 32;
/// Most TCP ports per direction; the smtp client, the widest user, needs a
/// handful (25, 465, 587) or [`TcpPorts::Any`].
pub const MAX_PORTS: usize = 16;

/// The ids a daemon runs as once sandboxed. Numbers, so that tests and
/// `main.cf` can use ids without a passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; usually empty.
    pub groups: Vec<u32>,
}

/// Landlock rights granted beneath one path. The named sets are what Postern
/// daemons use; they combine with `|`. Rights to create devices, sockets,
/// FIFOs or symlinks, or to send device ioctls, are deliberately absent: no
/// Postern daemon may ever have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsAccess(u16);

impl FsAccess {
    pub const READ_FILE: FsAccess = FsAccess(1 << 0);
    pub const READ_DIR: FsAccess = FsAccess(1 << 1);
    pub const WRITE_FILE: FsAccess = FsAccess(1 << 2);
    pub const TRUNCATE: FsAccess = FsAccess(1 << 3);
    pub const MAKE_REG: FsAccess = FsAccess(1 << 4);
    pub const REMOVE_FILE: FsAccess = FsAccess(1 << 5);
    pub const MAKE_DIR: FsAccess = FsAccess(1 << 6);
    pub const REMOVE_DIR: FsAccess = FsAccess(1 << 7);
    pub const REFER: FsAccess = FsAccess(1 << 8);
    pub const EXECUTE: FsAccess = FsAccess(1 << 9);

    /// Read files and list directories.
    pub const READ_ONLY: FsAccess = FsAccess(Self::READ_FILE.0 | Self::READ_DIR.0);
    /// Read and write existing files (including truncation), list directories.
    pub const READ_WRITE: FsAccess =
        FsAccess(Self::READ_ONLY.0 | Self::WRITE_FILE.0 | Self::TRUNCATE.0);
    /// [`Self::READ_WRITE`] plus creating and removing regular files in the
    /// directory (cleanup in `incoming/`, pickup in `maildrop/`).
    pub const CREATE_REMOVE: FsAccess =
        FsAccess(Self::READ_WRITE.0 | Self::MAKE_REG.0 | Self::REMOVE_FILE.0);
    /// [`Self::CREATE_REMOVE`] plus landlock's REFER, needed to rename a file
    /// into or out of the directory from another one (qmgr's incoming →
    /// active → deferred). Both directories need it.
    pub const MOVE_ACROSS: FsAccess = FsAccess(Self::CREATE_REMOVE.0 | Self::REFER.0);
    /// Run the programs beneath the path (and read their libraries).
    pub const EXEC: FsAccess = FsAccess(Self::READ_FILE.0 | Self::EXECUTE.0);

    const NAMES: [(FsAccess, &'static str); 10] = [
        (Self::READ_FILE, "read_file"),
        (Self::READ_DIR, "read_dir"),
        (Self::WRITE_FILE, "write_file"),
        (Self::TRUNCATE, "truncate"),
        (Self::MAKE_REG, "make_reg"),
        (Self::REMOVE_FILE, "remove_file"),
        (Self::MAKE_DIR, "make_dir"),
        (Self::REMOVE_DIR, "remove_dir"),
        (Self::REFER, "refer"),
        (Self::EXECUTE, "execute"),
    ];

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, other: FsAccess) -> bool {
        self.0 & other.0 == other.0
    }

    /// The single rights in this set, in a fixed order.
    pub fn rights(self) -> impl Iterator<Item = FsAccess> {
        Self::NAMES
            .into_iter()
            .map(|(right, _)| right)
            .filter(move |right| self.contains(*right))
    }
}

impl std::ops::BitOr for FsAccess {
    type Output = FsAccess;
    fn bitor(self, rhs: FsAccess) -> FsAccess {
        FsAccess(self.0 | rhs.0)
    }
}

impl fmt::Display for FsAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = [
            (Self::MOVE_ACROSS, "move-across"),
            (Self::CREATE_REMOVE, "create-remove"),
            (Self::READ_WRITE, "read-write"),
            (Self::READ_ONLY, "read-only"),
            (Self::EXEC, "exec"),
        ];
        if let Some((_, name)) = named.iter().find(|(set, _)| *set == *self) {
            return f.write_str(name);
        }
        let mut first = true;
        for (right, name) in Self::NAMES {
            if self.contains(right) {
                if !first {
                    f.write_str("+")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// One landlock grant: `access` beneath `path` (a directory, or a single
/// file, for which directory rights are ignored). [`crate::apply`] opens the
/// path after the identity change, as the daemon's uid, following symlinks;
/// a path that cannot be opened then is a shortfall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: FsAccess,
    pub why: &'static str,
}

/// Which TCP ports landlock lets the daemon bind or connect to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TcpPorts {
    /// These ports only; empty denies every port.
    Only(Vec<u16>),
    /// Every port (the smtp client connecting to MX hosts on configured
    /// ports it learns at run time would otherwise need a list).
    Any,
    /// No port. The same as `Only(vec![])`.
    #[default]
    None,
}

impl TcpPorts {
    pub(crate) fn ports(&self) -> &[u16] {
        match self {
            TcpPorts::Only(ports) => ports,
            TcpPorts::Any | TcpPorts::None => &[],
        }
    }
}

impl fmt::Display for TcpPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpPorts::Any => f.write_str("any"),
            TcpPorts::None => f.write_str("none"),
            TcpPorts::Only(ports) if ports.is_empty() => f.write_str("none"),
            TcpPorts::Only(ports) => {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

/// What seccomp does with a syscall outside the allow-list.
///
/// The default is [`Violation::Errno`]: the call fails with `EPERM`, so the
/// daemon logs which operation failed and exits through its normal error
/// path, and libc's opportunistic calls (feature probes) degrade instead of
/// killing the process. The attacker gains nothing from the error: the call
/// did not happen. [`Violation::KillProcess`] ends the process with `SIGSYS`
/// instead, for daemons whose every syscall is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Violation {
    #[default]
    Errno,
    KillProcess,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::Errno => "EPERM",
            Violation::KillProcess => "kill",
        })
    }
}

/// `sandbox_enforcement` in `main.cf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcement {
    /// Anything short of the full profile is an error (the default).
    #[default]
    Required,
    /// Apply what the kernel and the privileges allow; record the rest in the
    /// [`crate::Report`].
    BestEffort,
}

/// The `main.cf` value was neither `required` nor `best_effort`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox_enforcement: expected \"required\" or \"best_effort\", found {0:?}")]
pub struct ParseEnforcementError(pub String);

impl FromStr for Enforcement {
    type Err = ParseEnforcementError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "required" => Ok(Enforcement::Required),
            "best_effort" => Ok(Enforcement::BestEffort),
            other => Err(ParseEnforcementError(other.to_owned())),
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Enforcement::Required => "required",
            Enforcement::BestEffort => "best_effort",
        })
    }
}

/// A daemon's complete sandbox. Build with [`Profile::new`] and struct update
/// syntax:
///
/// ```
/// use sandbox::{syscalls, FsAccess, FsRule, Profile};
/// let profile = Profile {
///     fs: vec![FsRule {
///         path: "/var/spool/postern/incoming".into(),
///         access: FsAccess::CREATE_REMOVE,
///         why: "write new queue files",
///     }],
///     syscalls: syscalls::set(&[syscalls::BASE, syscalls::FILES_WRITE]),
///     ..Profile::new("cleanup")
/// };
/// assert!(profile.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The `master.cf` service name, used in errors and the privilege map.
    pub service: String,
    /// `None` keeps the current ids (the master; or `--dev` runs).
    pub identity: Option<Identity>,
    /// Capabilities kept in the effective, permitted and bounding sets;
    /// normally empty.
    pub keep_caps: Vec<Capability>,
    pub fs: Vec<FsRule>,
    pub tcp_bind: TcpPorts,
    pub tcp_connect: TcpPorts,
    pub syscalls: Vec<Syscall>,
    pub on_violation: Violation,
    pub enforcement: Enforcement,
    /// Landlock's signal scope: the process may signal only processes of its own landlock
    /// domain. Every daemon has it; the master does not, because it must stop daemons that its
    /// spawner started outside the master's domain.
    pub scope_signals: bool,
}

impl Profile {
    /// A profile that keeps the current ids, no capabilities, no paths, no
    /// ports, the [`syscalls::BASE`] allow-list, `EPERM` on violation and
    /// required enforcement.
    pub fn new(service: impl Into<String>) -> Self {
        Profile {
            service: service.into(),
            identity: None,
            keep_caps: Vec::new(),
            fs: Vec::new(),
            tcp_bind: TcpPorts::None,
            tcp_connect: TcpPorts::None,
            syscalls: syscalls::BASE.to_vec(),
            on_violation: Violation::Errno,
            enforcement: Enforcement::Required,
            scope_signals: true,
        }
    }

    /// The bit mask of [`Self::keep_caps`].
    pub fn keep_caps_mask(&self) -> u64 {
        self.keep_caps
            .iter()
            .fold(0, |mask, cap| mask | cap.bitmask())
    }

    /// Distinct syscall numbers in the allow-list.
    pub fn syscall_count(&self) -> usize {
        self.syscalls
            .iter()
            .map(|s| s.nr)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Check the declaration without touching the process.
    pub fn validate(&self) -> Result<(), ProfileError> {
        validate_service(&self.service)?;
        if let Some(identity) = &self.identity {
            if identity.uid == 0 || identity.gid == 0 {
                return Err(ProfileError::RootIdentity);
            }
            if identity.groups.contains(&0) {
                return Err(ProfileError::RootGroup);
            }
            if identity.groups.len() > MAX_GROUPS {
                return Err(ProfileError::TooManyGroups(identity.groups.len()));
            }
        }
        if self.fs.len() > MAX_FS_RULES {
            return Err(ProfileError::TooManyFsRules(self.fs.len()));
        }
        let mut paths = BTreeSet::new();
        for rule in &self.fs {
            if !is_clean_absolute(&rule.path) {
                return Err(ProfileError::BadPath(rule.path.clone()));
            }
            if rule.access.is_empty() {
                return Err(ProfileError::EmptyAccess(rule.path.clone()));
            }
            if rule.why.trim().is_empty() {
                return Err(ProfileError::FsRuleWithoutReason(rule.path.clone()));
            }
            if !paths.insert(rule.path.as_path()) {
                return Err(ProfileError::DuplicatePath(rule.path.clone()));
            }
        }
        validate_ports("bind", &self.tcp_bind)?;
        validate_ports("connect", &self.tcp_connect)?;
        validate_syscalls(&self.syscalls)?;
        crate::filter::build(&self.syscalls, self.on_violation).map(drop)
    }
}

fn validate_service(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProfileError::ServiceName(name.to_owned()))
    }
}

fn is_clean_absolute(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if !path.is_absolute() || path.as_os_str().as_bytes().contains(&0) {
        return false;
    }
    // `Path::components` silently drops interior `.`; look at the bytes too.
    let has_dot_segment = path
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .any(|segment| segment == b"." || segment == b"..");
    !has_dot_segment
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn validate_ports(kind: &'static str, ports: &TcpPorts) -> Result<(), ProfileError> {
    let list = ports.ports();
    if list.len() > MAX_PORTS {
        return Err(ProfileError::TooManyPorts {
            kind,
            count: list.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for &port in list {
        if port == 0 {
            return Err(ProfileError::PortZero { kind });
        }
        if !seen.insert(port) {
            return Err(ProfileError::DuplicatePort { kind, port });
        }
    }
    Ok(())
}

fn validate_syscalls(list: &[Syscall]) -> Result<(), ProfileError> {
    if list.len() > syscalls::MAX_SYSCALLS {
        return Err(ProfileError::TooManySyscalls(list.len()));
    }
    for entry in list {
        if entry.why.trim().is_empty() {
            return Err(ProfileError::SyscallWithoutReason(entry.name));
        }
        if entry.nr < 0 || entry.nr > i64::from(u16::MAX) {
            return Err(ProfileError::SyscallNumber {
                name: entry.name,
                nr: entry.nr,
            });
        }
        if crate::filter::ALWAYS_ENOSYS.contains(&entry.nr) {
            return Err(ProfileError::AlwaysEnosys(entry.name));
        }
        for check in entry.allow_if.iter().flat_map(|all| all.iter()) {
            if check.index > 5 {
                return Err(ProfileError::ArgIndex {
                    name: entry.name,
                    index: check.index,
                });
            }
        }
    }
    if !list.iter().any(|s| s.nr == libc::SYS_exit_group) {
        return Err(ProfileError::MissingExitGroup);
    }
    Ok(())
}

/// Header of the privilege-map table whose rows [`Profile`]'s `Display` writes.
pub const PRIVILEGE_MAP_HEADER: &str = "| service | uid:gid (groups) | capabilities kept | landlock paths | TCP bind | TCP connect | syscalls | on violation |\n|---|---|---|---|---|---|---|---|";

impl fmt::Display for Profile {
    /// One privilege-map row (Markdown), matching [`PRIVILEGE_MAP_HEADER`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = match &self.identity {
            None => "unchanged".to_owned(),
            Some(id) if id.groups.is_empty() => format!("{}:{}", id.uid, id.gid),
            Some(id) => {
                let groups: Vec<String> = id.groups.iter().map(u32::to_string).collect();
                format!("{}:{} ({})", id.uid, id.gid, groups.join(","))
            }
        };
        let caps = if self.keep_caps.is_empty() {
            "none".to_owned()
        } else {
            let mut names: Vec<String> = self.keep_caps.iter().map(|c| c.to_string()).collect();
            names.sort();
            names.dedup();
            names.join(", ")
        };
        let paths = if self.fs.is_empty() {
            "none".to_owned()
        } else {
            self.fs
                .iter()
                .map(|rule| format!("{} ({})", rule.path.display(), rule.access))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        write!(
            f,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.service,
            ids,
            caps,
            paths,
            self.tcp_bind,
            self.tcp_connect,
            self.syscall_count(),
            self.on_violation
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Profile {
        Profile {
            identity: Some(Identity {
                uid: 61999,
                gid: 61999,
                groups: vec![61998],
            }),
            fs: vec![FsRule {
                path: "/var/spool/postern/incoming".into(),
                access: FsAccess::CREATE_REMOVE,
                why: "new queue files",
            }],
            tcp_connect: TcpPorts::Only(vec![25, 587]),
            ..Profile::new("cleanup")
        }
    }

    #[test]
    fn a_reasonable_profile_validates() {
        assert_eq!(valid().validate(), Ok(()));
        assert_eq!(Profile::new("qmgr").validate(), Ok(()));
    }

    #[test]
    fn defaults_are_the_strict_ones() {
        let p = Profile::new("bounce");
        assert_eq!(p.on_violation, Violation::Errno);
        assert_eq!(p.enforcement, Enforcement::Required);
        assert!(p.keep_caps.is_empty() && p.fs.is_empty());
        assert_eq!(p.tcp_bind, TcpPorts::None);
        assert_eq!(p.tcp_connect, TcpPorts::None);
    }

    #[test]
    fn service_names_are_checked() {
        for bad in [
            "",
            "Smtpd",
            "smtp d",
            "a/b",
            &"x".repeat(MAX_SERVICE_NAME + 1),
        ] {
            let p = Profile::new(bad);
            assert_eq!(
                p.validate(),
                Err(ProfileError::ServiceName(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(Profile::new("smtp-tls_2").validate(), Ok(()));
    }

    #[test]
    fn root_identity_is_refused() {
        let with = |change: fn(&mut Identity)| {
            let mut p = valid();
            if let Some(id) = p.identity.as_mut() {
                change(id);
            }
            p.validate()
        };
        assert_eq!(with(|id| id.uid = 0), Err(ProfileError::RootIdentity));
        assert_eq!(with(|id| id.gid = 0), Err(ProfileError::RootIdentity));
        assert_eq!(with(|id| id.groups.push(0)), Err(ProfileError::RootGroup));
        assert_eq!(
            with(|id| id.groups = (1..=17).collect()),
            Err(ProfileError::TooManyGroups(17))
        );
    }

    #[test]
    fn paths_must_be_clean_and_absolute() {
        for bad in [
            "relative/dir",
            "/var/../etc",
            "/var/./spool",
            "/var/spool/..",
            "./x",
            "/var/spool\0x",
        ] {
            let mut p = valid();
            p.fs[0].path = bad.into();
            assert_eq!(
                p.validate(),
                Err(ProfileError::BadPath(bad.into())),
                "{bad:?}"
            );
        }
        let mut p = valid();
        p.fs[0].path = "/var/spool/".into();
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn fs_rules_need_access_a_reason_and_distinct_paths() {
        let mut p = valid();
        p.fs[0].access = FsAccess::READ_ONLY;
        p.fs[0].access = FsAccess(0);
        assert!(matches!(p.validate(), Err(ProfileError::EmptyAccess(_))));
        let mut p = valid();
        p.fs[0].why = " ";
        assert!(matches!(
            p.validate(),
            Err(ProfileError::FsRuleWithoutReason(_))
        ));
        let mut p = valid();
        p.fs.push(p.fs[0].clone());
        assert!(matches!(p.validate(), Err(ProfileError::DuplicatePath(_))));
        let mut p = valid();
        p.fs = (0..=MAX_FS_RULES)
            .map(|i| FsRule {
                path: format!("/d{i}").into(),
                access: FsAccess::READ_ONLY,
                why: "x",
            })
            .collect();
        assert_eq!(
            p.validate(),
            Err(ProfileError::TooManyFsRules(MAX_FS_RULES + 1))
        );
    }

    #[test]
    fn ports_are_checked() {
        let mut p = valid();
        p.tcp_bind = TcpPorts::Only(vec![0]);
        assert_eq!(p.validate(), Err(ProfileError::PortZero { kind: "bind" }));
        let mut p = valid();
        p.tcp_connect = TcpPorts::Only(vec![25, 25]);
        assert_eq!(
            p.validate(),
            Err(ProfileError::DuplicatePort {
                kind: "connect",
                port: 25
            })
        );
        let mut p = valid();
        p.tcp_connect = TcpPorts::Only((1..=17).collect());
        assert_eq!(
            p.validate(),
            Err(ProfileError::TooManyPorts {
                kind: "connect",
                count: 17
            })
        );
        let mut p = valid();
        p.tcp_connect = TcpPorts::Any;
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn syscall_entries_are_checked() {
        let mut p = valid();
        p.syscalls
            .push(Syscall::new("SYS_clone3", libc::SYS_clone3, "threads"));
        assert_eq!(p.validate(), Err(ProfileError::AlwaysEnosys("clone3")));
        let mut p = valid();
        p.syscalls
            .push(Syscall::new("SYS_getuid", libc::SYS_getuid, ""));
        assert_eq!(
            p.validate(),
            Err(ProfileError::SyscallWithoutReason("getuid"))
        );
        let mut p = valid();
        p.syscalls.push(Syscall::new("bogus", -1, "x"));
        assert!(matches!(
            p.validate(),
            Err(ProfileError::SyscallNumber { .. })
        ));
        let mut p = valid();
        static BAD: &[&[crate::syscalls::ArgCheck]] = &[&[crate::syscalls::ArgCheck::eq(6, 1)]];
        p.syscalls
            .push(Syscall::new("SYS_getuid", libc::SYS_getuid, "x").when(BAD));
        assert_eq!(
            p.validate(),
            Err(ProfileError::ArgIndex {
                name: "getuid",
                index: 6
            })
        );
        let mut p = valid();
        p.syscalls.retain(|s| s.name != "exit_group");
        assert_eq!(p.validate(), Err(ProfileError::MissingExitGroup));
        let mut p = valid();
        static EMPTY: &[&[crate::syscalls::ArgCheck]] = &[&[]];
        p.syscalls
            .push(Syscall::new("SYS_getuid", libc::SYS_getuid, "x").when(EMPTY));
        assert!(matches!(p.validate(), Err(ProfileError::Filter(_))));
        let mut p = valid();
        p.syscalls = vec![crate::syscalls::BASE[0]; crate::syscalls::MAX_SYSCALLS + 1];
        assert!(matches!(
            p.validate(),
            Err(ProfileError::TooManySyscalls(_))
        ));
    }

    #[test]
    fn enforcement_parses_main_cf_values() {
        assert_eq!("required".parse(), Ok(Enforcement::Required));
        assert_eq!("best_effort".parse(), Ok(Enforcement::BestEffort));
        for bad in ["Required", "best-effort", "", " required"] {
            let err = bad.parse::<Enforcement>().unwrap_err();
            assert_eq!(err, ParseEnforcementError(bad.to_owned()));
            assert!(err.to_string().contains("sandbox_enforcement"));
        }
        assert_eq!(Enforcement::BestEffort.to_string(), "best_effort");
    }

    #[test]
    fn access_sets_nest_and_print() {
        assert!(FsAccess::MOVE_ACROSS.contains(FsAccess::CREATE_REMOVE));
        assert!(FsAccess::CREATE_REMOVE.contains(FsAccess::READ_WRITE));
        assert!(FsAccess::READ_WRITE.contains(FsAccess::READ_ONLY));
        assert!(!FsAccess::CREATE_REMOVE.contains(FsAccess::REFER));
        assert!(!FsAccess::READ_ONLY.contains(FsAccess::EXECUTE));
        assert_eq!(FsAccess::READ_ONLY.to_string(), "read-only");
        assert_eq!(
            (FsAccess::READ_ONLY | FsAccess::MAKE_DIR).to_string(),
            "read_file+read_dir+make_dir"
        );
        assert_eq!(FsAccess::MOVE_ACROSS.rights().count(), 7);
    }

    #[test]
    fn display_is_one_privilege_map_row() {
        let mut p = valid();
        p.keep_caps = vec![Capability::CAP_SETUID, Capability::CAP_SETGID];
        let row = p.to_string();
        assert_eq!(
            row,
            format!(
                "| cleanup | 61999:61999 (61998) | CAP_SETGID, CAP_SETUID | \
                 /var/spool/postern/incoming (create-remove) | none | 25,587 | {} | EPERM |",
                p.syscall_count()
            )
        );
        let columns = PRIVILEGE_MAP_HEADER
            .lines()
            .next()
            .unwrap()
            .matches('|')
            .count();
        assert_eq!(row.matches('|').count(), columns);
        assert_eq!(
            Profile::new("master")
                .to_string()
                .matches("unchanged")
                .count(),
            1
        );
    }

    #[test]
    fn syscall_count_ignores_duplicates() {
        let mut p = Profile::new("x");
        let before = p.syscall_count();
        p.syscalls.extend_from_slice(crate::syscalls::BASE);
        assert_eq!(p.syscall_count(), before);
        p.syscalls.extend_from_slice(crate::syscalls::THREADS);
        assert_eq!(p.syscall_count(), before + 2);
    }
}
