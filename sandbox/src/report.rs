//! What a sandboxed daemon tells the master about itself, and the comparison
//! of that report with the daemon's profile.
//!
//! Trusts: [`crate::apply`] fills a report from what the kernel says
//! (`/proc/thread-self/status`, `getresuid`, landlock's status, seccomp's
//! result), not from what it asked for. The master receives the report as
//! gossip and re-checks it with [`Report::shortfalls_against`]; a report
//! that claims more than the profile asks is not believed to be better, only
//! compared.

use std::fmt;

use crate::profile::Profile;

/// The five capability sets as bit masks (bit n = capability n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub bounding: u64,
}

/// How much of the landlock ruleset the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockStatus {
    FullyEnforced,
    /// The kernel's landlock ABI lacks some handled rights.
    PartiallyEnforced,
    /// No landlock (kernel without it, or the ruleset could not be built).
    NotEnforced,
}

impl fmt::Display for LandlockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LandlockStatus::FullyEnforced => "fully enforced",
            LandlockStatus::PartiallyEnforced => "partially enforced",
            LandlockStatus::NotEnforced => "not enforced",
        })
    }
}

/// The step of [`crate::apply`] a shortfall belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Threads,
    Identity,
    Capabilities,
    NoNewPrivs,
    Landlock,
    Seccomp,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Threads => "threads",
            Step::Identity => "identity",
            Step::Capabilities => "capabilities",
            Step::NoNewPrivs => "no_new_privs",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
        })
    }
}

/// One thing the profile asks for that is not in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub step: Step,
    pub detail: String,
}

impl Shortfall {
    pub(crate) fn new(step: Step, detail: impl Into<String>) -> Self {
        Shortfall {
            step,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.detail)
    }
}

/// What [`crate::apply`] found in force once it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub service: String,
    /// Real, effective and saved uid (apply checks they are equal; if not,
    /// this is the effective one and a shortfall says so).
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub caps: CapSets,
    pub no_new_privs: bool,
    /// The kernel's landlock ABI version; 0 or less when landlock is absent.
    pub landlock_abi: i32,
    pub landlock: LandlockStatus,
    /// Both seccomp filters are installed on every thread.
    pub seccomp: bool,
    /// Distinct syscalls in the installed allow-list.
    pub syscall_count: usize,
    /// Not started as root: the identity and capability-bounding steps were
    /// skipped (`--dev`); landlock and seccomp still apply.
    pub dev_mode: bool,
    /// What could not be enforced (empty when everything is in force).
    pub shortfalls: Vec<Shortfall>,
    /// Facts worth a log line that are not shortfalls (what `--dev` skipped).
    pub notes: Vec<String>,
}

impl Report {
    pub fn fully_enforced(&self) -> bool {
        self.shortfalls.is_empty()
    }

    /// Compare the observed state with what `profile` asks. Used by `apply`
    /// and again by the master on the report a daemon sends.
    pub fn shortfalls_against(&self, profile: &Profile) -> Vec<Shortfall> {
        let mut out = Vec::new();
        let keep = profile.keep_caps_mask();
        if !self.dev_mode {
            if let Some(id) = &profile.identity {
                if self.uid != id.uid || self.gid != id.gid {
                    out.push(Shortfall::new(
                        Step::Identity,
                        format!(
                            "running as uid {} gid {}, profile asks uid {} gid {}",
                            self.uid, self.gid, id.uid, id.gid
                        ),
                    ));
                }
                let mut want = id.groups.clone();
                want.sort_unstable();
                want.dedup();
                let mut have = self.groups.clone();
                have.sort_unstable();
                have.dedup();
                if have != want {
                    out.push(Shortfall::new(
                        Step::Identity,
                        format!("supplementary groups are {have:?}, profile asks {want:?}"),
                    ));
                }
            }
        }
        let caps = &self.caps;
        let mut cap_problem = |set: &str, have: u64, exact: bool| {
            let extra = have & !keep;
            let missing = keep & !have;
            if extra != 0 {
                out.push(Shortfall::new(
                    Step::Capabilities,
                    format!("{set} set still holds {extra:#x} beyond the kept {keep:#x}"),
                ));
            }
            if exact && missing != 0 {
                out.push(Shortfall::new(
                    Step::Capabilities,
                    format!("{set} set lacks kept capabilities {missing:#x}"),
                ));
            }
        };
        // Outside dev mode the kept capabilities must really be there; in
        // dev mode they can only be what the invoking user had.
        let exact = !self.dev_mode;
        cap_problem("effective", caps.effective, exact);
        cap_problem("permitted", caps.permitted, exact);
        if !self.dev_mode {
            cap_problem("bounding", caps.bounding, exact);
        }
        if caps.inheritable != 0 {
            out.push(Shortfall::new(
                Step::Capabilities,
                format!("inheritable set is {:#x}, not empty", caps.inheritable),
            ));
        }
        if caps.ambient != 0 {
            out.push(Shortfall::new(
                Step::Capabilities,
                format!("ambient set is {:#x}, not empty", caps.ambient),
            ));
        }
        if !self.no_new_privs {
            out.push(Shortfall::new(Step::NoNewPrivs, "no_new_privs is not set"));
        }
        if self.landlock != LandlockStatus::FullyEnforced {
            out.push(Shortfall::new(
                Step::Landlock,
                format!(
                    "ruleset {} (kernel landlock ABI {})",
                    self.landlock, self.landlock_abi
                ),
            ));
        }
        if !self.seccomp {
            out.push(Shortfall::new(Step::Seccomp, "filters not installed"));
        } else if self.syscall_count != profile.syscall_count() {
            out.push(Shortfall::new(
                Step::Seccomp,
                format!(
                    "allow-list has {} syscalls, profile declares {}",
                    self.syscall_count,
                    profile.syscall_count()
                ),
            ));
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service={} uid={} gid={} groups={:?} cap_eff={:#x} cap_prm={:#x} cap_inh={:#x} \
             cap_amb={:#x} cap_bnd={:#x} no_new_privs={} landlock_abi={} landlock=\"{}\" \
             seccomp={} syscalls={} dev_mode={}",
            self.service,
            self.uid,
            self.gid,
            self.groups,
            self.caps.effective,
            self.caps.permitted,
            self.caps.inheritable,
            self.caps.ambient,
            self.caps.bounding,
            self.no_new_privs,
            self.landlock_abi,
            self.landlock,
            self.seccomp,
            self.syscall_count,
            self.dev_mode
        )?;
        for shortfall in &self.shortfalls {
            write!(f, " shortfall=\"{shortfall}\"")?;
        }
        for note in &self.notes {
            write!(f, " note=\"{note}\"")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Capability, Identity};

    fn profile() -> Profile {
        Profile {
            identity: Some(Identity {
                uid: 61999,
                gid: 61999,
                groups: vec![],
            }),
            ..Profile::new("smtpd")
        }
    }

    fn good(profile: &Profile) -> Report {
        Report {
            service: profile.service.clone(),
            uid: 61999,
            gid: 61999,
            groups: vec![],
            caps: CapSets::default(),
            no_new_privs: true,
            landlock_abi: 7,
            landlock: LandlockStatus::FullyEnforced,
            seccomp: true,
            syscall_count: profile.syscall_count(),
            dev_mode: false,
            shortfalls: vec![],
            notes: vec![],
        }
    }

    fn steps(list: &[Shortfall]) -> Vec<Step> {
        list.iter().map(|s| s.step).collect()
    }

    #[test]
    fn a_report_matching_the_profile_has_no_shortfall() {
        let p = profile();
        assert_eq!(good(&p).shortfalls_against(&p), vec![]);
    }

    #[test]
    fn root_left_running_is_a_shortfall() {
        let p = profile();
        let mut r = good(&p);
        r.uid = 0;
        assert_eq!(steps(&r.shortfalls_against(&p)), vec![Step::Identity]);
        let mut r = good(&p);
        r.groups = vec![0];
        assert_eq!(steps(&r.shortfalls_against(&p)), vec![Step::Identity]);
    }

    #[test]
    fn dev_mode_skips_identity_but_not_the_rest() {
        let p = profile();
        let mut r = good(&p);
        r.dev_mode = true;
        r.uid = 1000;
        r.caps.bounding = 0x1ff_ffff_ffff;
        assert_eq!(r.shortfalls_against(&p), vec![]);
        r.seccomp = false;
        assert_eq!(steps(&r.shortfalls_against(&p)), vec![Step::Seccomp]);
    }

    #[test]
    fn any_capability_left_is_a_shortfall() {
        let p = profile();
        for set in 0..5 {
            let mut r = good(&p);
            match set {
                0 => r.caps.effective = 1,
                1 => r.caps.permitted = 1,
                2 => r.caps.inheritable = 1,
                3 => r.caps.ambient = 1,
                _ => r.caps.bounding = 1,
            }
            assert_eq!(
                steps(&r.shortfalls_against(&p)),
                vec![Step::Capabilities],
                "set {set}"
            );
        }
    }

    #[test]
    fn kept_capabilities_must_be_exactly_there() {
        let mut p = profile();
        p.keep_caps = vec![Capability::CAP_SETUID, Capability::CAP_SETGID];
        let mask = p.keep_caps_mask();
        assert_eq!(mask, 0xc0);
        let mut r = good(&p);
        r.caps.effective = mask;
        r.caps.permitted = mask;
        r.caps.bounding = mask;
        assert_eq!(r.shortfalls_against(&p), vec![]);
        r.caps.effective = Capability::CAP_SETUID.bitmask();
        let found = r.shortfalls_against(&p);
        assert_eq!(steps(&found), vec![Step::Capabilities]);
        assert!(found[0].detail.contains("lacks"));
    }

    #[test]
    fn landlock_and_seccomp_shortfalls() {
        let p = profile();
        let mut r = good(&p);
        r.landlock = LandlockStatus::PartiallyEnforced;
        r.no_new_privs = false;
        assert_eq!(
            steps(&r.shortfalls_against(&p)),
            vec![Step::NoNewPrivs, Step::Landlock]
        );
        let mut r = good(&p);
        r.syscall_count += 1;
        assert_eq!(steps(&r.shortfalls_against(&p)), vec![Step::Seccomp]);
    }
}
