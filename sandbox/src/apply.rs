//! [`apply`]: confine the calling process to a [`Profile`], in the one order
//! that works, and report what the kernel says is in force.
//!
//! Trusts: the profile (validated first) and the kernel's answers. It reads
//! `/proc/self/task`, `/proc/thread-self/status` and
//! `/proc/sys/kernel/cap_last_cap` before landlock closes them.
//!
//! INVARIANT: apply runs before the process starts any thread and before it
//! reads its first request. Landlock (below ABI 8) and `capset` act on the
//! calling thread only, so a thread started earlier would keep every
//! privilege; seccomp is installed with TSYNC, but that covers only the
//! seccomp part. Under `Required` a second thread is an error; under
//! `BestEffort` it is a recorded shortfall.
//!
//! The order, and why:
//! 1. count threads (see the invariant);
//! 2. drop the capability bounding set, while CAP_SETPCAP is still
//!    effective (the uid change below clears the effective set);
//! 3. clear the ambient set;
//! 4. `setgroups`, `setresgid`, `setresuid` (all three ids), with
//!    `PR_SET_KEEPCAPS` around `setresuid` only when capabilities are kept
//!    (otherwise the kernel clears the permitted set, which is what we want);
//! 5. set inheritable empty and permitted = effective = the kept capabilities,
//!    then prove `setresuid(0,0,0)` / `setresgid(0,0,0)` fail with EPERM
//!    (unless CAP_SETUID / CAP_SETGID are kept);
//! 6. re-arm the parent-death signal, which the kernel clears on a uid change;
//! 7. non-dumpable (no core files with mail in them, no ptrace by the same
//!    uid) and `PR_SET_NO_NEW_PRIVS`;
//! 8. read back ids and capabilities from the kernel;
//! 9. landlock: every filesystem right of [`LANDLOCK_ABI`], TCP bind and
//!    connect, the abstract-socket and signal scopes, then the profile's
//!    paths and ports;
//! 10. seccomp, last, on all threads: the filters would otherwise have to
//!     allow every call of the steps above.
//!
//! Not running as root (`--dev`), steps 2 and 4 are skipped: the ids stay,
//! and the bounding set cannot be dropped without CAP_SETPCAP (it is moot
//! once no_new_privs is set and the permitted and ambient sets are empty:
//! no `execve` can grant a capability then). Landlock and seccomp apply as
//! always.

use std::collections::HashSet;
use std::fs;

use caps::{CapSet, Capability};
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use nix::errno::Errno;
use nix::unistd::{self, Gid, Uid};

use crate::error::Error;
use crate::filter;
use crate::profile::{Enforcement, FsAccess, Profile, TcpPorts};
use crate::report::{CapSets, LandlockStatus, Report, Shortfall, Step};

/// The landlock ABI whose rights Postern handles: the newest it was tested
/// on (Linux 6.15+). Filesystem rights up to IOCTL_DEV (ABI 5), TCP bind and
/// connect (ABI 4) and the scopes (ABI 6); ABI 7 adds only audit controls.
/// On an older kernel the ruleset is partially enforced, which `Required`
/// refuses. Rights of newer ABIs (RESOLVE_UNIX in 9, UDP in 10) are left
/// unhandled until tested: UDP would cut the smtp client's DNS, and seccomp
/// already keeps every daemon but the smtp client from `socket`/`connect`.
pub const LANDLOCK_ABI: ABI = ABI::V7;

/// Highest capability number to drop when the kernel does not say
/// (`/proc/sys/kernel/cap_last_cap` unreadable): the capability sets are 64
/// bits wide; numbers the kernel does not know answer EINVAL and are skipped.
const CAP_LAST_FALLBACK: u32 = 63;

struct Progress {
    shortfalls: Vec<Shortfall>,
    notes: Vec<String>,
}

impl Progress {
    fn fall_short(&mut self, step: Step, detail: impl Into<String>) {
        self.shortfalls.push(Shortfall::new(step, detail));
    }
}

/// Confine the calling process to `profile`. Call once, from the
/// single-threaded `main`, before the first request is read.
///
/// Returns what is in force. Under [`Enforcement::Required`] (the default),
/// anything short of the whole profile is an [`Error::NotEnforced`] naming
/// every shortfall; under [`Enforcement::BestEffort`] the shortfalls are in
/// the [`Report`]. In both modes every step that can be applied is applied
/// before returning, so an error leaves the process more confined, never
/// less. An invalid profile is refused before anything changes.
pub fn apply(profile: &Profile) -> Result<Report, Error> {
    let service = profile.service.clone();
    profile
        .validate()
        .map_err(|problem| Error::InvalidProfile {
            service: service.clone(),
            problem,
        })?;
    let programs = filter::build(&profile.syscalls, profile.on_violation).map_err(|problem| {
        Error::InvalidProfile {
            service: service.clone(),
            problem,
        }
    })?;
    let required = profile.enforcement == Enforcement::Required;
    let mut progress = Progress {
        shortfalls: Vec::new(),
        notes: Vec::new(),
    };

    match thread_count() {
        Ok(1) => {}
        Ok(threads) if required => return Err(Error::MultiThreaded { service, threads }),
        Ok(threads) => progress.fall_short(
            Step::Threads,
            format!(
                "{threads} threads running: identity, capabilities and landlock \
                 cover only the calling thread (seccomp covers all)"
            ),
        ),
        Err(source) if required => return Err(Error::ThreadCount { service, source }),
        Err(e) => progress.fall_short(
            Step::Threads,
            format!("cannot count threads in /proc/self/task: {e}"),
        ),
    }

    let dev_mode = !unistd::geteuid().is_root();
    let parent = unistd::getppid();
    let death_signal = nix::sys::prctl::get_pdeathsig().ok().flatten();

    drop_privileges(profile, dev_mode, &mut progress)?;

    if let Some(signal) = death_signal {
        if nix::sys::prctl::get_pdeathsig().ok().flatten() != Some(signal) {
            if let Err(e) = nix::sys::prctl::set_pdeathsig(signal) {
                progress.fall_short(
                    Step::Identity,
                    format!("cannot re-arm the parent-death signal: {e}"),
                );
            }
        }
        if unistd::getppid() != parent {
            return Err(Error::ParentExited { service });
        }
    }

    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        progress
            .notes
            .push(format!("could not make the process non-dumpable: {e}"));
    }
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        progress.fall_short(Step::NoNewPrivs, format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"));
    }
    let no_new_privs = nix::sys::prctl::get_no_new_privs().unwrap_or(false);

    let (uid, gid, groups) = read_ids(&mut progress);
    let caps = read_caps(&mut progress);

    let (landlock_abi, landlock) = restrict_landlock(profile, &mut progress);

    // Seccomp last: see the module header of `filter` for why the fallback
    // filter goes first and why the allow-list is not installed without it.
    let seccomp = match seccompiler::apply_filter_all_threads(&programs.fallback) {
        Ok(()) => match seccompiler::apply_filter_all_threads(&programs.allow_list) {
            Ok(()) => true,
            Err(e) => {
                progress.fall_short(Step::Seccomp, format!("allow-list filter: {e}"));
                false
            }
        },
        Err(e) => {
            progress.fall_short(
                Step::Seccomp,
                format!("clone3/openat2 fallback filter: {e}; allow-list not installed"),
            );
            false
        }
    };

    let mut report = Report {
        service: service.clone(),
        uid,
        gid,
        groups,
        caps,
        no_new_privs,
        landlock_abi,
        landlock,
        seccomp,
        syscall_count: if seccomp { profile.syscall_count() } else { 0 },
        dev_mode,
        shortfalls: Vec::new(),
        notes: progress.notes,
    };
    let mut shortfalls = progress.shortfalls;
    shortfalls.extend(report.shortfalls_against(profile));
    report.shortfalls = shortfalls;
    if required && !report.shortfalls.is_empty() {
        return Err(Error::NotEnforced {
            service,
            shortfalls: report.shortfalls,
        });
    }
    Ok(report)
}

fn thread_count() -> std::io::Result<usize> {
    let mut count = 0;
    for entry in fs::read_dir("/proc/self/task")? {
        entry?;
        count += 1;
    }
    Ok(count)
}

fn cap_last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| *n <= CAP_LAST_FALLBACK)
        .unwrap_or(CAP_LAST_FALLBACK)
}

/// Steps 2 to 5 of the module header.
fn drop_privileges(
    profile: &Profile,
    dev_mode: bool,
    progress: &mut Progress,
) -> Result<(), Error> {
    let keep: HashSet<Capability> = profile.keep_caps.iter().copied().collect();
    let keep_mask = profile.keep_caps_mask();

    // INVARIANT: before the uid change, which clears CAP_SETPCAP.
    for index in 0..=cap_last_cap() {
        if keep_mask & (1u64 << index) != 0 {
            continue;
        }
        match crate::sys::capbset_drop(index) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) if dev_mode && e.raw_os_error() == Some(libc::EPERM) => {
                progress.notes.push(
                    "bounding set left as inherited: no CAP_SETPCAP (moot under no_new_privs)"
                        .into(),
                );
                break;
            }
            Err(e) => {
                progress.fall_short(
                    Step::Capabilities,
                    format!("cannot drop capability {index} from the bounding set: {e}"),
                );
                break;
            }
        }
    }
    if let Err(e) = caps::clear(None, CapSet::Ambient) {
        progress.fall_short(
            Step::Capabilities,
            format!("cannot clear the ambient set: {e}"),
        );
    }

    let mut identity_changed = false;
    match (&profile.identity, dev_mode) {
        (Some(id), true) => progress.notes.push(format!(
            "not root: identity {}:{} not applied (--dev)",
            id.uid, id.gid
        )),
        (Some(id), false) => {
            let keepcaps = !keep.is_empty();
            if keepcaps {
                if let Err(e) = nix::sys::prctl::set_keepcaps(true) {
                    progress.fall_short(Step::Capabilities, format!("PR_SET_KEEPCAPS: {e}"));
                }
            }
            let groups: Vec<Gid> = id.groups.iter().copied().map(Gid::from_raw).collect();
            let gid = Gid::from_raw(id.gid);
            let uid = Uid::from_raw(id.uid);
            let results = [
                ("setgroups", unistd::setgroups(&groups)),
                ("setresgid", unistd::setresgid(gid, gid, gid)),
                ("setresuid", unistd::setresuid(uid, uid, uid)),
            ];
            identity_changed = true;
            for (call, result) in results {
                if let Err(e) = result {
                    identity_changed = false;
                    progress.fall_short(
                        Step::Identity,
                        format!("{call} to {}:{} failed: {e}", id.uid, id.gid),
                    );
                }
            }
            if keepcaps {
                if let Err(e) = nix::sys::prctl::set_keepcaps(false) {
                    progress.fall_short(Step::Capabilities, format!("PR_SET_KEEPCAPS off: {e}"));
                }
            }
        }
        (None, _) => {}
    }

    set_base_sets(&keep, progress);

    if identity_changed {
        prove_no_regain(profile, &keep)?;
    }
    Ok(())
}

/// Inheritable empty; permitted and effective = kept (as far as permitted
/// holds them). Effective first: the kernel refuses an effective set that is
/// not within the permitted one.
fn set_base_sets(keep: &HashSet<Capability>, progress: &mut Progress) {
    let permitted = match caps::read(None, CapSet::Permitted) {
        Ok(set) => set,
        Err(e) => {
            progress.fall_short(
                Step::Capabilities,
                format!("cannot read the permitted set: {e}"),
            );
            return;
        }
    };
    let keep: caps::CapsHashSet = keep.intersection(&permitted).copied().collect();
    let steps = [
        (CapSet::Effective, "effective"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Effective, "effective"),
    ];
    for (set, name) in steps {
        let value = if matches!(set, CapSet::Inheritable) {
            caps::CapsHashSet::new()
        } else {
            keep.clone()
        };
        if let Err(e) = caps::set(None, set, &value) {
            progress.fall_short(
                Step::Capabilities,
                format!("cannot set the {name} set: {e}"),
            );
        }
    }
}

fn prove_no_regain(profile: &Profile, keep: &HashSet<Capability>) -> Result<(), Error> {
    let root_uid = Uid::from_raw(0);
    let root_gid = Gid::from_raw(0);
    let mut attempts: Vec<(&'static str, nix::Result<()>)> = Vec::new();
    if !keep.contains(&Capability::CAP_SETUID) {
        attempts.push((
            "setresuid(0, 0, 0)",
            unistd::setresuid(root_uid, root_uid, root_uid),
        ));
        attempts.push(("setuid(0)", unistd::setuid(root_uid)));
    }
    if !keep.contains(&Capability::CAP_SETGID) {
        attempts.push((
            "setresgid(0, 0, 0)",
            unistd::setresgid(root_gid, root_gid, root_gid),
        ));
        attempts.push(("setgroups([0])", unistd::setgroups(&[root_gid])));
    }
    for (what, result) in attempts {
        match result {
            Err(Errno::EPERM) => {}
            _ => {
                return Err(Error::Regained {
                    service: profile.service.clone(),
                    what,
                })
            }
        }
    }
    Ok(())
}

fn read_ids(progress: &mut Progress) -> (u32, u32, Vec<u32>) {
    let (uid, gid) = match (unistd::getresuid(), unistd::getresgid()) {
        (Ok(u), Ok(g)) => {
            if u.real != u.effective || u.effective != u.saved {
                progress.fall_short(
                    Step::Identity,
                    format!(
                        "uids differ: real {} effective {} saved {}",
                        u.real, u.effective, u.saved
                    ),
                );
            }
            if g.real != g.effective || g.effective != g.saved {
                progress.fall_short(
                    Step::Identity,
                    format!(
                        "gids differ: real {} effective {} saved {}",
                        g.real, g.effective, g.saved
                    ),
                );
            }
            (u.effective.as_raw(), g.effective.as_raw())
        }
        (u, g) => {
            progress.fall_short(Step::Identity, format!("cannot read ids: {u:?} {g:?}"));
            (u32::MAX, u32::MAX)
        }
    };
    let groups = match unistd::getgroups() {
        Ok(groups) => groups.into_iter().map(Gid::as_raw).collect(),
        Err(e) => {
            progress.fall_short(Step::Identity, format!("cannot read groups: {e}"));
            Vec::new()
        }
    };
    (uid, gid, groups)
}

/// The kernel's own account of the five sets, all 64 bits of them.
fn read_caps(progress: &mut Progress) -> CapSets {
    match fs::read_to_string("/proc/thread-self/status") {
        Ok(status) => match parse_cap_sets(&status) {
            Some(sets) => return sets,
            None => progress.fall_short(
                Step::Capabilities,
                "/proc/thread-self/status lacks a capability line",
            ),
        },
        Err(e) => progress.fall_short(
            Step::Capabilities,
            format!("cannot read /proc/thread-self/status to verify capabilities: {e}"),
        ),
    }
    // Assume the worst for what could not be read.
    CapSets {
        effective: u64::MAX,
        permitted: u64::MAX,
        inheritable: u64::MAX,
        ambient: u64::MAX,
        bounding: u64::MAX,
    }
}

fn parse_cap_sets(status: &str) -> Option<CapSets> {
    let field = |name: &str| -> Option<u64> {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            u64::from_str_radix(value.trim(), 16).ok()
        })
    };
    Some(CapSets {
        effective: field("CapEff")?,
        permitted: field("CapPrm")?,
        inheritable: field("CapInh")?,
        ambient: field("CapAmb")?,
        bounding: field("CapBnd")?,
    })
}

pub(crate) fn landlock_fs(access: FsAccess) -> BitFlags<AccessFs> {
    let mut out = BitFlags::EMPTY;
    for right in access.rights() {
        out |= match right {
            FsAccess::READ_FILE => AccessFs::ReadFile,
            FsAccess::READ_DIR => AccessFs::ReadDir,
            FsAccess::WRITE_FILE => AccessFs::WriteFile,
            FsAccess::TRUNCATE => AccessFs::Truncate,
            FsAccess::MAKE_REG => AccessFs::MakeReg,
            FsAccess::REMOVE_FILE => AccessFs::RemoveFile,
            FsAccess::MAKE_DIR => AccessFs::MakeDir,
            FsAccess::REMOVE_DIR => AccessFs::RemoveDir,
            FsAccess::REFER => AccessFs::Refer,
            FsAccess::EXECUTE => AccessFs::Execute,
            _ => continue,
        };
    }
    out
}

/// Rights that mean something on a file (not a directory).
pub(crate) fn file_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::Execute
}

fn landlock_status(status: &RestrictionStatus) -> (i32, LandlockStatus) {
    let abi = match status.landlock {
        landlock::LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => kernel_abi.unwrap_or(effective_abi as i32),
        landlock::LandlockStatus::NotEnabled | landlock::LandlockStatus::NotImplemented => 0,
    };
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockStatus::NotEnforced,
    };
    (abi, enforced)
}

fn restrict_landlock(profile: &Profile, progress: &mut Progress) -> (i32, LandlockStatus) {
    let mut created = match build_ruleset(profile) {
        Ok(created) => created,
        Err(e) => {
            progress.fall_short(Step::Landlock, format!("cannot create the ruleset: {e}"));
            return (0, LandlockStatus::NotEnforced);
        }
    };
    for rule in &profile.fs {
        let fd = match PathFd::new(&rule.path) {
            Ok(fd) => fd,
            Err(e) => {
                progress.fall_short(
                    Step::Landlock,
                    format!(
                        "rule for {} ({}) not added: {e}",
                        rule.path.display(),
                        rule.why
                    ),
                );
                continue;
            }
        };
        let mut access = landlock_fs(rule.access);
        match nix::sys::stat::fstat(&fd) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
            Ok(_) => access &= file_rights(),
            Err(e) => {
                progress.fall_short(
                    Step::Landlock,
                    format!("rule for {} not added: fstat: {e}", rule.path.display()),
                );
                continue;
            }
        }
        if let Err(e) = (&mut created).add_rule(PathBeneath::new(fd, access)) {
            progress.fall_short(
                Step::Landlock,
                format!("rule for {} not added: {e}", rule.path.display()),
            );
        }
    }
    let ports = [
        (&profile.tcp_bind, AccessNet::BindTcp, "bind"),
        (&profile.tcp_connect, AccessNet::ConnectTcp, "connect"),
    ];
    for (list, access, kind) in ports {
        for &port in list.ports() {
            if let Err(e) = (&mut created).add_rule(NetPort::new(port, access)) {
                progress.fall_short(
                    Step::Landlock,
                    format!("TCP {kind} rule for port {port} not added: {e}"),
                );
            }
        }
    }
    match created.restrict_self() {
        Ok(status) => {
            let (abi, enforced) = landlock_status(&status);
            if enforced != LandlockStatus::FullyEnforced {
                progress.notes.push(format!(
                    "landlock ABI {abi} lacks rights of ABI {}",
                    LANDLOCK_ABI as i32
                ));
            }
            (abi, enforced)
        }
        Err(e) => {
            progress.fall_short(Step::Landlock, format!("landlock_restrict_self: {e}"));
            (0, LandlockStatus::NotEnforced)
        }
    }
}

fn build_ruleset(profile: &Profile) -> Result<RulesetCreated, landlock::RulesetError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))?;
    if profile.tcp_bind != TcpPorts::Any {
        ruleset = ruleset.handle_access(AccessNet::BindTcp)?;
    }
    if profile.tcp_connect != TcpPorts::Any {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?;
    }
    let mut scopes = Scope::from_all(LANDLOCK_ABI);
    if !profile.scope_signals {
        scopes.remove(Scope::Signal);
    }
    ruleset.scope(scopes)?.create()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_lines_parse() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000000000c0\n\
                      CapEff:\t00000000000000c0\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let sets = parse_cap_sets(status).unwrap();
        assert_eq!(sets.permitted, 0xc0);
        assert_eq!(sets.effective, 0xc0);
        assert_eq!(sets.bounding, 0x1ff_ffff_ffff);
        assert_eq!(sets.inheritable, 0);
        assert!(parse_cap_sets("CapInh:\t0\n").is_none());
        assert!(parse_cap_sets(&status.replace("c0\nCapEff", "zz\nCapEff")).is_none());
    }

    #[test]
    fn own_status_parses() {
        let status = fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(parse_cap_sets(&status).is_some());
    }

    #[test]
    fn access_sets_map_to_landlock_rights() {
        assert_eq!(
            landlock_fs(FsAccess::READ_ONLY),
            AccessFs::ReadFile | AccessFs::ReadDir
        );
        let moved = landlock_fs(FsAccess::MOVE_ACROSS);
        assert!(moved.contains(AccessFs::Refer | AccessFs::MakeReg | AccessFs::RemoveFile));
        assert!(!moved.contains(AccessFs::Execute));
        let all = AccessFs::from_all(LANDLOCK_ABI);
        for right in [
            FsAccess::READ_FILE,
            FsAccess::READ_DIR,
            FsAccess::WRITE_FILE,
            FsAccess::TRUNCATE,
            FsAccess::MAKE_REG,
            FsAccess::REMOVE_FILE,
            FsAccess::MAKE_DIR,
            FsAccess::REMOVE_DIR,
            FsAccess::REFER,
            FsAccess::EXECUTE,
        ] {
            let mapped = landlock_fs(right);
            assert_eq!(mapped.iter().count(), 1, "{right}");
            assert!(
                all.contains(mapped),
                "{right} is not handled by the ruleset"
            );
        }
        assert!(!all.contains(AccessFs::ResolveUnix));
    }

    #[test]
    fn the_handled_abi_covers_net_and_scopes() {
        assert!(
            AccessNet::from_all(LANDLOCK_ABI).contains(AccessNet::BindTcp | AccessNet::ConnectTcp)
        );
        assert!(Scope::from_all(LANDLOCK_ABI).contains(Scope::Signal | Scope::AbstractUnixSocket));
    }

    #[test]
    fn cap_last_cap_is_sane() {
        let last = cap_last_cap();
        assert!((40..=CAP_LAST_FALLBACK).contains(&last));
    }
}
