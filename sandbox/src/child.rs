//! [`confine_delivery`]: narrow an already sandboxed process further, for one delivery: the
//! `local` agent forks per delivery, and the child becomes the recipient and is landlocked to
//! that recipient's mailbox before it writes a byte.
//!
//! Trusts: the caller for the identity and the paths (the agent took them from the passwd
//! database and its configuration); the kernel for the rest. It runs under the parent's
//! seccomp filter, landlock domain and `no_new_privs`, which stay in force (they only
//! narrow), so it needs from that filter: `setgroups`, `setresgid`, `setresuid`, `capget`,
//! `capset`, `prctl(PR_SET_NO_NEW_PRIVS)` and the three landlock calls.
//!
//! The order, and why:
//! 1. `setgroups`, `setresgid`, `setresuid` to the recipient (real, effective and saved), as
//!    long as the process holds CAP_SETUID/CAP_SETGID (as root; unprivileged the ids stay);
//! 2. every capability set emptied explicitly with `capset` (effective, permitted,
//!    inheritable): the kernel clears the permitted set on a change from uid 0 to non-zero
//!    ids, but not on a change between two non-root uids, and the ambient set follows the
//!    permitted one. The bounding set cannot be changed without CAP_SETPCAP, which the
//!    parent no longer has; under `no_new_privs` with empty permitted and ambient sets no
//!    `execve` can raise a capability from it;
//! 3. read back with `capget` that every set is empty and with `getresuid` that the ids
//!    are the recipient's, then prove `setresuid(0,0,0)` and `setresgid(0,0,0)` fail with
//!    `EPERM` — a failure is fatal ([`Error::Regained`]);
//! 4. a new landlock layer that handles every filesystem right and allows only `rules`.

use caps::CapSet;
use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus,
};
use nix::errno::Errno;
use nix::unistd::{self, Gid, Uid};
use std::os::fd::RawFd;

use crate::apply::{file_rights, landlock_fs, LANDLOCK_ABI};
use crate::error::Error;
use crate::profile::{FsRule, Identity};
use crate::report::{LandlockStatus, Shortfall, Step};

/// What [`confine_delivery`] put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    pub uid: u32,
    pub gid: u32,
    /// Whether the ids were changed (false when not running as root).
    pub identity_changed: bool,
    pub landlock: LandlockStatus,
}

/// Becomes `identity` (when running as root), clears every capability set, proves root
/// cannot be regained, and adds a landlock layer allowing only `rules`. `service` names the
/// caller in errors. Every failure is an error: a delivery child that is not fully confined
/// must not deliver.
pub fn confine_delivery(
    service: &str,
    identity: &Identity,
    rules: &[FsRule],
) -> Result<Confinement, Error> {
    let fail = |step, detail: String| Error::NotEnforced {
        service: service.to_owned(),
        shortfalls: vec![Shortfall::new(step, detail)],
    };
    if identity.uid == 0 || identity.gid == 0 || identity.groups.contains(&0) {
        return Err(fail(
            Step::Identity,
            "root is never a delivery identity".to_owned(),
        ));
    }
    // From getresuid, which reports failure: `geteuid` cannot, and under a filter that denies
    // it the C library's -1 reads as "not root", which would skip the identity change.
    let was_root = unistd::getresuid()
        .map_err(|e| fail(Step::Identity, format!("getresuid: {e}")))?
        .effective
        .is_root();
    if was_root {
        let groups: Vec<Gid> = identity.groups.iter().copied().map(Gid::from_raw).collect();
        let (uid, gid) = (Uid::from_raw(identity.uid), Gid::from_raw(identity.gid));
        for (call, result) in [
            ("setgroups", unistd::setgroups(&groups)),
            ("setresgid", unistd::setresgid(gid, gid, gid)),
            ("setresuid", unistd::setresuid(uid, uid, uid)),
        ] {
            result.map_err(|e| {
                fail(
                    Step::Identity,
                    format!("{call} to {}:{}: {e}", identity.uid, identity.gid),
                )
            })?;
        }
    }
    let empty = caps::CapsHashSet::new();
    for (set, name) in [
        (CapSet::Effective, "effective"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Permitted, "permitted"),
    ] {
        caps::set(None, set, &empty)
            .map_err(|e| fail(Step::Capabilities, format!("clear the {name} set: {e}")))?;
        match caps::read(None, set) {
            Ok(now) if now.is_empty() => {}
            Ok(now) => {
                return Err(fail(
                    Step::Capabilities,
                    format!("the {name} set still holds {now:?}"),
                ))
            }
            Err(e) => {
                return Err(fail(
                    Step::Capabilities,
                    format!("read the {name} set: {e}"),
                ))
            }
        }
    }
    let ids = unistd::getresuid().map_err(|e| fail(Step::Identity, format!("getresuid: {e}")))?;
    let gids = unistd::getresgid().map_err(|e| fail(Step::Identity, format!("getresgid: {e}")))?;
    if was_root {
        let want_u = Uid::from_raw(identity.uid);
        let want_g = Gid::from_raw(identity.gid);
        if [ids.real, ids.effective, ids.saved] != [want_u; 3]
            || [gids.real, gids.effective, gids.saved] != [want_g; 3]
        {
            return Err(fail(
                Step::Identity,
                format!(
                    "ids are {ids:?} {gids:?}, not {}:{}",
                    identity.uid, identity.gid
                ),
            ));
        }
        let root_u = Uid::from_raw(0);
        let root_g = Gid::from_raw(0);
        for (what, result) in [
            (
                "setresuid(0, 0, 0)",
                unistd::setresuid(root_u, root_u, root_u),
            ),
            (
                "setresgid(0, 0, 0)",
                unistd::setresgid(root_g, root_g, root_g),
            ),
        ] {
            if result != Err(Errno::EPERM) {
                return Err(Error::Regained {
                    service: service.to_owned(),
                    what,
                });
            }
        }
    }

    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .and_then(|r| r.create())
        .map_err(|e| fail(Step::Landlock, format!("create the ruleset: {e}")))?;
    for rule in rules {
        let fd = PathFd::new(&rule.path)
            .map_err(|e| fail(Step::Landlock, format!("{}: {e}", rule.path.display())))?;
        let mut access = landlock_fs(rule.access);
        let st = nix::sys::stat::fstat(&fd)
            .map_err(|e| fail(Step::Landlock, format!("{}: {e}", rule.path.display())))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            access &= file_rights();
        }
        (&mut created)
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| fail(Step::Landlock, format!("{}: {e}", rule.path.display())))?;
    }
    // `no_new_privs` is normally already set by the parent's sandbox; setting it again is
    // harmless and makes this function sound on its own.
    let status = created
        .restrict_self()
        .map_err(|e| fail(Step::Landlock, format!("landlock_restrict_self: {e}")))?;
    let landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
        RulesetStatus::NotEnforced => {
            return Err(fail(
                Step::Landlock,
                "the kernel enforced no landlock ruleset".to_owned(),
            ))
        }
    };
    Ok(Confinement {
        uid: ids.effective.as_raw(),
        gid: gids.effective.as_raw(),
        identity_changed: was_root,
        landlock,
    })
}

/// Forks a delivery child, which may then allocate and run ordinary code. Only a process that
/// never had a second thread may: a daemon whose `apply` refused a second thread and that never
/// starts one. Anything else gets [`crate::ForkError::Threaded`] (a test harness runs its
/// tests on threads, so tests of delivery children run in a single-threaded program).
pub fn fork_delivery_child() -> Result<nix::unistd::ForkResult, crate::ForkError> {
    crate::sys::fork_single_threaded()
}

/// Forks a helper process of the same program (the master's spawner), under the same rule as
/// [`fork_delivery_child`]: only a process that never had a second thread.
pub fn fork_helper() -> Result<nix::unistd::ForkResult, crate::ForkError> {
    crate::sys::fork_single_threaded()
}

/// Closes every descriptor from 3 up except those in `keep`, with one `close_range(2)` per gap
/// (a delivery child sheds what its parent held before it runs anything of the recipient's).
/// Where the kernel or the filter refuses `close_range`, it closes descriptors 3 to 1023 one
/// by one instead (the parent opens nothing above those).
pub fn close_descriptors_except(keep: &[RawFd]) {
    let ranged = gaps(keep)
        .into_iter()
        .all(|(first, last)| crate::sys::close_range(first, last).is_ok());
    if !ranged {
        for fd in 3..1024 {
            if !keep.contains(&fd) {
                let _ = nix::unistd::close(fd);
            }
        }
    }
}

/// The ranges of descriptors from 3 to `RawFd::MAX` that `keep` leaves out, in order.
fn gaps(keep: &[RawFd]) -> Vec<(RawFd, RawFd)> {
    let mut kept: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    kept.sort_unstable();
    kept.dedup();
    let mut out = Vec::new();
    let mut first: RawFd = 3;
    for fd in kept {
        if fd > first {
            out.push((first, fd - 1));
        }
        first = fd.saturating_add(1);
    }
    if first < RawFd::MAX || out.is_empty() {
        out.push((first, RawFd::MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    /// libtest runs each test on a thread of its own, so this process has had several: the
    /// fork is refused.
    #[test]
    fn a_process_that_had_threads_may_not_fork_a_delivery_child() {
        std::thread::spawn(|| ()).join().unwrap();
        assert!(!crate::sys::single_threaded());
        match super::fork_delivery_child() {
            Err(crate::ForkError::Threaded) => {}
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(nix::unistd::ForkResult::Child) => std::process::exit(0),
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
                panic!("forked child {child} in a multi-threaded process");
            }
        }
    }

    #[test]
    fn the_ranges_closed_leave_out_exactly_the_kept_descriptors() {
        use std::os::fd::RawFd;
        assert_eq!(super::gaps(&[]), vec![(3, RawFd::MAX)]);
        assert_eq!(
            super::gaps(&[9, 4, 0, 9, 5]),
            vec![(3, 3), (6, 8), (10, RawFd::MAX)]
        );
        assert_eq!(super::gaps(&[3]), vec![(4, RawFd::MAX)]);
    }
}
