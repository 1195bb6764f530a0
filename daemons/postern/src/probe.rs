//! The child side of `postern check`: `postern -c DIR __probe ROLE` applies ROLE's real profile
//! from `privileges` to this process, tries the forbidden actions of `sandbox::probe`, and writes
//! one line per result on stdout for the parent to read.
//!
//! Trusts: the configuration (as every daemon does) and the profile declarations. After `apply`
//! this process is as confined as the daemon would be, and a probe that succeeds may have changed
//! it (e.g. regained root), so it only prints and exits.
//!
//! Output, one record per line, fields separated by TAB (no field contains a TAB or newline):
//! `report<TAB>REPORT` once, then `probe<TAB>denied|allowed<TAB>ACTION<TAB>DETAIL` per probe.

use std::io::Write;
use std::path::Path;

use sandbox::ProbeTargets;

use crate::instance::Instance;

pub const REPORT_TAG: &str = "report";
pub const PROBE_TAG: &str = "probe";

/// A file no daemon profile grants: reading the passwd database is the classic first step after
/// a compromise.
pub const OUTSIDE_PATH: &str = "/etc/passwd";
/// A loopback port to try to connect to: the SMTP port, the one a compromised daemon would want.
pub const LOOPBACK_PORT: u16 = 25;
/// A program to try to execute: a shell.
pub const EXEC_PATH: &str = "/bin/sh";
/// A file no role may read, also where a rule covers its directory (proxymap's `/etc`).
pub const SECRET_PATH: &str = "/etc/shadow";

pub fn targets() -> ProbeTargets {
    ProbeTargets {
        outside_path: OUTSIDE_PATH.into(),
        loopback_port: LOOPBACK_PORT,
        exec_path: EXEC_PATH.into(),
        secret_path: SECRET_PATH.into(),
    }
}

fn clean(field: &str) -> String {
    field.replace(['\t', '\n', '\r'], " ")
}

/// Runs in the probe child. INVARIANT: called from `main` before any thread starts, so that the
/// profile can be applied (landlock and capabilities are per thread).
pub fn run(config_dir: &Path, role: &str) -> anyhow::Result<()> {
    let instance = Instance::load(config_dir)?;
    let settings = instance.settings_for_role(role)?;
    let profile = privileges::profile(role, &settings, privileges::RunAs::current())?;
    let report = sandbox::apply(&profile)?;
    let results = sandbox::probe(&targets());

    let mut out = String::new();
    out.push_str(&format!("{REPORT_TAG}\t{}\n", clean(&report.to_string())));
    for r in results {
        let verdict = if r.denied { "denied" } else { "allowed" };
        out.push_str(&format!(
            "{PROBE_TAG}\t{verdict}\t{}\t{}\n",
            clean(r.action),
            clean(&r.detail)
        ));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
