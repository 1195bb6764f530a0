//! The spawner's capabilities (as root). The master's own are set by `sandbox::apply` with its
//! profile (`privileges::master_profile`): CAP_KILL and CAP_NET_BIND_SERVICE.
//!
//! The spawner keeps none in its effective and permitted sets, and CAP_SETUID, CAP_SETGID,
//! CAP_SETPCAP and CAP_CHOWN in its bounding set only: a daemon is exec'd as root, and root's
//! `execve` grants the bounding set as permitted capabilities; each daemon keeps what its
//! profile says (CAP_SETPCAP for a moment, to empty its own bounding set before it changes to
//! its uid). The spawner itself cannot use them.
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

/// The spawner's sets: nothing effective, permitted, inheritable or ambient; the bounding set
/// `privileges::SPAWNER_BOUNDING`, what a daemon exec'd as root receives as its permitted set.
/// Returns the bounding mask now in force.
pub fn drop_to_spawner_set() -> Result<u64, CapsError> {
    let bounding_kept: CapsHashSet = privileges::SPAWNER_BOUNDING.iter().copied().collect();
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
    let none = CapsHashSet::new();
    call(
        "clear inheritable set",
        caps::set(None, CapSet::Inheritable, &none),
    )?;
    call(
        "clear effective set",
        caps::set(None, CapSet::Effective, &none),
    )?;
    call(
        "clear permitted set",
        caps::set(None, CapSet::Permitted, &none),
    )?;
    let want = mask(&bounding_kept);
    for (set, name, expected) in [
        (CapSet::Effective, "effective", 0),
        (CapSet::Permitted, "permitted", 0),
        (CapSet::Inheritable, "inheritable", 0),
        (CapSet::Ambient, "ambient", 0),
        (CapSet::Bounding, "bounding", want),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_spawner_bounding_set_is_what_daemons_may_keep() {
        // CAP_CHOWN 0, CAP_SETGID 6, CAP_SETUID 7, CAP_SETPCAP 8.
        let mask = privileges::SPAWNER_BOUNDING
            .iter()
            .fold(0u64, |m, c| m | c.bitmask());
        assert_eq!(mask, 1 | (1 << 6) | (1 << 7) | (1 << 8));
    }
}
