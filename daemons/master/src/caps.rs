//! The master's own capabilities (as root): after the listeners are bound and the files opened,
//! keep CAP_SETUID, CAP_SETGID, CAP_NET_BIND_SERVICE and CAP_KILL in the effective and permitted
//! sets, nothing inheritable or ambient, and those four plus CAP_SETPCAP and CAP_CHOWN in the
//! bounding set (`privileges::MASTER_BOUNDING_EXTRA`: what children exec'd as root must be able
//! to keep).
//!
//! Why CAP_SETPCAP stays in the bounding set only: a daemon is exec'd as root, and root's
//! `execve` grants the bounding set as permitted capabilities; the daemon needs CAP_SETPCAP for a
//! moment to empty its own bounding set before it changes to its uid (`sandbox::apply`). The
//! master itself cannot use it: it is not in its effective or permitted set.
//!
//! Trusts: the kernel; the result is read back and compared.

use caps::{CapSet, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("capabilities: {what}: {source}")]
    Call {
        what: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("capabilities: the {set} set is {got:#x} after the drop, expected {want:#x}")]
    Mismatch {
        set: &'static str,
        got: u64,
        want: u64,
    },
}

fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

fn call<T>(what: &'static str, r: Result<T, caps::errors::CapsError>) -> Result<T, CapsError> {
    r.map_err(|source| CapsError::Call { what, source })
}

/// Drops every capability but the master's; returns the effective mask now in force.
pub fn drop_to_master_set() -> Result<u64, CapsError> {
    let kept: CapsHashSet = privileges::MASTER_CAPS.iter().copied().collect();
    let mut bounding_kept = kept.clone();
    bounding_kept.extend(privileges::MASTER_BOUNDING_EXTRA.iter().copied());
    // The bounding set first: dropping from it needs CAP_SETPCAP in the effective set.
    for cap in call("read bounding set", caps::read(None, CapSet::Bounding))? {
        if !bounding_kept.contains(&cap) {
            call(
                "drop from bounding set",
                caps::drop(None, CapSet::Bounding, cap),
            )?;
        }
    }
    call("clear ambient set", caps::clear(None, CapSet::Ambient))?;
    call(
        "clear inheritable set",
        caps::set(None, CapSet::Inheritable, &CapsHashSet::new()),
    )?;
    call(
        "set effective set",
        caps::set(None, CapSet::Effective, &kept),
    )?;
    call(
        "set permitted set",
        caps::set(None, CapSet::Permitted, &kept),
    )?;
    let want = mask(&kept);
    for (set, name, expected) in [
        (CapSet::Effective, "effective", want),
        (CapSet::Permitted, "permitted", want),
        (CapSet::Inheritable, "inheritable", 0),
        (CapSet::Ambient, "ambient", 0),
        (CapSet::Bounding, "bounding", mask(&bounding_kept)),
    ] {
        let got = mask(&call("read back", caps::read(None, set))?);
        if got != expected {
            return Err(CapsError::Mismatch {
                set: name,
                got,
                want: expected,
            });
        }
    }
    Ok(want)
}

/// The effective mask the master keeps.
#[cfg(test)]
fn master_mask() -> u64 {
    privileges::MASTER_CAPS
        .iter()
        .fold(0, |m, c| m | c.bitmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_mask_is_the_four_capabilities() {
        // CAP_SETGID 6, CAP_SETUID 7, CAP_KILL 5, CAP_NET_BIND_SERVICE 10.
        assert_eq!(master_mask(), (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10));
    }
}
