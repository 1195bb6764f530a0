//! What the kernel says about a process, read from `/proc/PID/status`: the master's independent
//! check of a child's `Ready` report (the report is the child's own word; this is not).
//!
//! Trusts: the kernel. The text is still parsed defensively (bounded read, every field optional)
//! because a process that exits between `Ready` and the read leaves nothing to parse.

use std::fs::File;
use std::io::Read;

/// `/proc/PID/status` is about 1.5 KiB; anything past this is not a status file.
const MAX_STATUS: u64 = 64 * 1024;

/// The fields of `/proc/PID/status` the master checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved and filesystem uid.
    pub uid: Option<[u32; 4]>,
    pub gid: Option<[u32; 4]>,
    pub cap_inh: Option<u64>,
    pub cap_prm: Option<u64>,
    pub cap_eff: Option<u64>,
    pub cap_bnd: Option<u64>,
    pub cap_amb: Option<u64>,
    pub no_new_privs: Option<bool>,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp: Option<u8>,
    /// `State: Z` or `X`: the process has exited and is not reaped yet; a zombie's status no
    /// longer describes a sandbox.
    pub exited: bool,
}

fn ids(value: &str) -> Option<[u32; 4]> {
    let mut it = value.split_whitespace().map(|v| v.parse::<u32>().ok());
    let ids = [it.next()??, it.next()??, it.next()??, it.next()??];
    it.next().is_none().then_some(ids)
}

pub fn parse(text: &str) -> ProcStatus {
    let mut s = ProcStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Uid" => s.uid = ids(value),
            "Gid" => s.gid = ids(value),
            "CapInh" => s.cap_inh = u64::from_str_radix(value, 16).ok(),
            "CapPrm" => s.cap_prm = u64::from_str_radix(value, 16).ok(),
            "CapEff" => s.cap_eff = u64::from_str_radix(value, 16).ok(),
            "CapBnd" => s.cap_bnd = u64::from_str_radix(value, 16).ok(),
            "CapAmb" => s.cap_amb = u64::from_str_radix(value, 16).ok(),
            "NoNewPrivs" => s.no_new_privs = value.parse::<u8>().ok().map(|v| v == 1),
            "Seccomp" => s.seccomp = value.parse().ok(),
            "State" => s.exited = value.starts_with(['Z', 'X']),
            _ => {}
        }
    }
    s
}

pub fn read(pid: i32) -> std::io::Result<ProcStatus> {
    let mut text = String::new();
    File::open(format!("/proc/{pid}/status"))?
        .take(MAX_STATUS)
        .read_to_string(&mut text)?;
    Ok(parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fields_of_interest() {
        let text = "Name:\tsmtpd\nUid:\t61001\t61001\t61001\t61001\nGid:\t61001\t61001\t61001\t61001\n\
                    CapInh:\t0000000000000001\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
                    CapBnd:\t00000000000000c0\nCapAmb:\t0000000000000002\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        let s = parse(text);
        assert_eq!(s.uid, Some([61001; 4]));
        assert_eq!(s.gid, Some([61001; 4]));
        assert_eq!(s.cap_eff, Some(0));
        assert_eq!(s.cap_bnd, Some(0xc0));
        assert_eq!((s.cap_inh, s.cap_amb), (Some(1), Some(2)));
        assert_eq!(s.no_new_privs, Some(true));
        assert_eq!(s.seccomp, Some(2));
        assert!(!s.exited);
        assert!(parse("State:\tZ (zombie)\n").exited);
        assert!(!parse("State:\tS (sleeping)\n").exited);
    }

    #[test]
    fn malformed_fields_are_absent() {
        let s = parse("Uid:\t1\t2\t3\nCapEff:\tzz\nSeccomp:\n");
        assert_eq!(s, ProcStatus::default());
    }

    #[test]
    fn reads_own_status() {
        let s = read(std::process::id() as i32).unwrap();
        assert!(s.uid.is_some() && s.cap_eff.is_some() && s.seccomp.is_some());
        assert!(s.cap_inh.is_some() && s.cap_bnd.is_some() && s.cap_amb.is_some());
    }
}
