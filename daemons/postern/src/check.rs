//! `postern check`: validates main.cf and master.cf, creates missing directories (as `postfix
//! check` does), prints the privilege map generated from `privileges`, then proves it: for each
//! daemon role a child process (`postern __probe ROLE`) applies the role's real profile and tries
//! the forbidden actions of `sandbox::probe`.
//!
//! Every role that `privileges` declares is probed, whether or not master.cf runs it yet, so that
//! a profile is verified before its daemon is installed; the map marks which roles master.cf runs.
//!
//! Verdicts: an action must be denied, except the ones a role's own profile grants, which are
//! shown as granted and not counted as failures — the smtp client's TCP `connect` and its
//! `socket(AF_INET)` (its profile allows connecting), and `setuid(0)` for a role that keeps
//! CAP_SETUID (`local` as root, which becomes each recipient), and opening the probe's outside
//! path or executing its program when a landlock rule of the profile covers them (`local` reads
//! `local_passwd_file`, by default `/etc/passwd`, and may run `|command` deliveries through the
//! shell). Anything else that is not denied is `ALLOWED` and makes the exit status 1.
//!
//! Trusts: its own probe children only as far as their exit status and the line format of
//! `probe.rs`; a line that does not parse, a missing probe or a child that fails is a failure.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sandbox::{Capability, FsAccess, Profile, TcpPorts};

use crate::args::PROBE_SUBCOMMAND;
use crate::instance::Instance;
use crate::probe::{EXEC_PATH, LOOPBACK_PORT, MASTER, OUTSIDE_PATH, PROBE_TAG, REPORT_TAG};

/// How long one probe child may take: its slowest probe is a 2 s loopback connect.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most output kept from a probe child; its real output is a few hundred bytes.
const PROBE_OUTPUT_MAX: u64 = 64 * 1024;

/// The probe's TCP connect action, as `sandbox::probe` names it.
const ACTION_CONNECT: &str = "TCP connect to a loopback port";
const ACTION_SOCKET_INET: &str = "socket(AF_INET)";
const ACTION_SETUID: &str = "setuid(0)";
const ACTION_OPEN: &str = "open a path outside the rules";
const ACTION_EXECVE: &str = "execve a binary";

/// The landlock rule of `profile` that grants `access` to `target`, if any. The probe opens
/// the target following symlinks (`/bin/sh` is `/usr/bin/dash` on merged-/usr systems), so
/// both the name and its resolved form are compared with each rule's path.
fn path_rule<'p>(
    profile: &'p Profile,
    target: &str,
    access: FsAccess,
) -> Option<&'p sandbox::FsRule> {
    let target = Path::new(target);
    let resolved = std::fs::canonicalize(target).ok();
    profile.fs.iter().find(|rule| {
        rule.access.contains(access)
            && (target.starts_with(&rule.path)
                || resolved.as_ref().is_some_and(|r| r.starts_with(&rule.path)))
    })
}

/// How one probe came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Denied,
    /// Not denied, but the role's profile grants it; the reason is printed.
    Granted(String),
    Allowed,
}

/// Whether `profile` grants `action`, and why.
pub fn granted_by(profile: &Profile, action: &str) -> Option<String> {
    let connect = match &profile.tcp_connect {
        TcpPorts::Any => true,
        TcpPorts::Only(ports) => ports.contains(&LOOPBACK_PORT),
        TcpPorts::None => false,
    };
    let may_connect_somewhere = match &profile.tcp_connect {
        TcpPorts::Any => true,
        TcpPorts::Only(ports) => !ports.is_empty(),
        TcpPorts::None => false,
    };
    let master = profile.service == MASTER;
    match action {
        ACTION_SOCKET_INET if master => {
            Some("the master binds master.cf's listeners, on reload too".into())
        }
        ACTION_CONNECT if connect => Some(format!(
            "its profile allows TCP connect to {}",
            profile.tcp_connect
        )),
        ACTION_SOCKET_INET if may_connect_somewhere => {
            Some("its profile allows TCP connections, which need a socket".into())
        }
        ACTION_SETUID if profile.keep_caps.contains(&Capability::CAP_SETUID) => {
            Some("its profile keeps CAP_SETUID".into())
        }
        ACTION_OPEN => path_rule(profile, OUTSIDE_PATH, FsAccess::READ_FILE).map(|rule| {
            format!(
                "its profile allows reading {} ({})",
                rule.path.display(),
                rule.why
            )
        }),
        ACTION_EXECVE => path_rule(profile, EXEC_PATH, FsAccess::EXECUTE).map(|rule| {
            format!(
                "its profile allows executing beneath {} ({})",
                rule.path.display(),
                rule.why
            )
        }),
        _ => None,
    }
}

pub fn verdict(profile: &Profile, action: &str, denied: bool) -> Verdict {
    if denied {
        Verdict::Denied
    } else {
        match granted_by(profile, action) {
            Some(why) => Verdict::Granted(why),
            None => Verdict::Allowed,
        }
    }
}

/// One parsed probe line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeLine {
    pub action: String,
    pub denied: bool,
    pub detail: String,
}

/// What a probe child printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeOutput {
    pub report: Option<String>,
    pub probes: Vec<ProbeLine>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("probe output line {line}: {problem}")]
pub struct ProbeParseError {
    pub line: usize,
    pub problem: String,
}

/// Parses a probe child's stdout strictly: every line must be a known record.
pub fn parse_probe_output(text: &str) -> Result<ProbeOutput, ProbeParseError> {
    let mut out = ProbeOutput::default();
    for (i, line) in text.lines().enumerate() {
        let err = |problem: &str| ProbeParseError {
            line: i + 1,
            problem: problem.to_string(),
        };
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            [REPORT_TAG, report] if out.report.is_none() => out.report = Some(report.to_string()),
            [REPORT_TAG, _] => return Err(err("a second report")),
            [PROBE_TAG, verdict, action, detail] => {
                let denied = match *verdict {
                    "denied" => true,
                    "allowed" => false,
                    _ => return Err(err("verdict is neither `denied` nor `allowed`")),
                };
                if action.is_empty() {
                    return Err(err("empty action"));
                }
                out.probes.push(ProbeLine {
                    action: action.to_string(),
                    denied,
                    detail: detail.to_string(),
                });
            }
            _ => return Err(err("not a `report` or `probe` record")),
        }
    }
    Ok(out)
}

/// Runs `postern -c DIR __probe ROLE` and returns its stdout, or why it failed.
fn run_probe_child(config_dir: &Path, role: &str) -> Result<String, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the postern binary: {e}"))?;
    let mut child = Command::new(&exe)
        .arg("-c")
        .arg(config_dir)
        .arg(PROBE_SUBCOMMAND)
        .arg(role)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(PROBE_OUTPUT_MAX).read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for the probe: {e}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        let reason = stderr.trim();
        Err(if reason.is_empty() {
            format!("probe exited with {status}")
        } else {
            reason.to_string()
        })
    }
}

/// `postern check`. Returns the exit status.
pub fn run(instance: &Instance, out: &mut dyn Write) -> anyhow::Result<i32> {
    let run_as = privileges::RunAs::current();
    let mut failures = 0usize;

    writeln!(
        out,
        "configuration: {} and {} parsed",
        instance.main_cf_path().display(),
        instance.master_cf_path().display()
    )?;
    for problem in instance.service_problems() {
        writeln!(out, "error: {problem}")?;
        failures += 1;
    }
    for warning in instance.ensure_layout(run_as)? {
        writeln!(out, "warning: {warning}")?;
    }
    if run_as == privileges::RunAs::Unprivileged {
        writeln!(
            out,
            "note: not running as root: every daemon keeps the invoking uid (dev mode); landlock and seccomp still apply"
        )?;
    }

    let in_master_cf = instance.roles_in_master_cf();
    writeln!(out, "\nprivilege map:")?;
    // The master's row names the configuration directory this check runs on (-c), not
    // main.cf's config_directory default.
    let mut settings = instance.main().clone();
    settings.set(
        "config_directory",
        &instance.config_dir().display().to_string(),
    )?;
    let map = privileges::privilege_map_text(&settings, run_as)?;
    for line in map.lines() {
        let role = line.split(':').next().unwrap_or("");
        let mark = if role == "master" || in_master_cf.contains_key(role) {
            ""
        } else {
            " [not in master.cf]"
        };
        writeln!(out, "  {line}{mark}")?;
    }

    writeln!(
        out,
        "\nsandbox probes (each role's profile applied in a child process):"
    )?;
    let mut probes_run = 0usize;
    for role in std::iter::once(&MASTER).chain(privileges::ROLES) {
        let settings = instance.settings_for_role(role)?;
        let profile = if *role == MASTER {
            privileges::master_profile(&settings, instance.config_dir(), run_as)?
        } else {
            privileges::profile(role, &settings, run_as)?
        };
        writeln!(out, "  {role}:")?;
        let output = run_probe_child(instance.config_dir(), role)
            .and_then(|text| parse_probe_output(&text).map_err(|e| e.to_string()));
        let output = match output {
            Ok(o) if !o.probes.is_empty() => o,
            Ok(_) => {
                writeln!(out, "    FAILED: the probe reported no results")?;
                failures += 1;
                continue;
            }
            Err(why) => {
                writeln!(out, "    FAILED: {why}")?;
                failures += 1;
                continue;
            }
        };
        if let Some(report) = &output.report {
            writeln!(out, "    enforced: {report}")?;
        }
        for p in &output.probes {
            probes_run += 1;
            let line = match verdict(&profile, &p.action, p.denied) {
                Verdict::Denied => format!("denied ({})", p.detail),
                Verdict::Granted(why) => format!("not denied: {why} ({})", p.detail),
                Verdict::Allowed => {
                    failures += 1;
                    format!("ALLOWED ({})", p.detail)
                }
            };
            writeln!(out, "    {:<34} {line}", p.action)?;
        }
    }

    if failures == 0 {
        writeln!(
            out,
            "\npostern: check passed: {probes_run} probes in the master and {} roles, every forbidden action denied",
            privileges::ROLES.len()
        )?;
        Ok(0)
    } else {
        writeln!(out, "\npostern: check FAILED: {failures} problem(s) above")?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_parses_strictly() {
        let text = "report\tservice=smtpd uid=1\nprobe\tdenied\tsetuid(0)\tEPERM: Operation not permitted\nprobe\tallowed\tsocket(AF_INET)\tsucceeded\n";
        let out = parse_probe_output(text).unwrap();
        assert_eq!(out.report.as_deref(), Some("service=smtpd uid=1"));
        assert_eq!(out.probes.len(), 2);
        assert!(out.probes[0].denied);
        assert_eq!(out.probes[1].action, "socket(AF_INET)");
        assert!(!out.probes[1].denied);

        for bad in [
            "probe\tmaybe\tx\ty\n",
            "probe\tdenied\tx\n",
            "probe\tdenied\t\ty\n",
            "hello\n",
            "report\ta\nreport\tb\n",
        ] {
            assert!(parse_probe_output(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_what_a_profile_grants_is_excused() {
        let closed = Profile::new("bounce");
        for action in [
            ACTION_CONNECT,
            ACTION_SOCKET_INET,
            ACTION_SETUID,
            "execve a binary",
        ] {
            assert_eq!(
                verdict(&closed, action, false),
                Verdict::Allowed,
                "{action}"
            );
            assert_eq!(verdict(&closed, action, true), Verdict::Denied, "{action}");
        }

        let client = Profile {
            tcp_connect: TcpPorts::Any,
            ..Profile::new("smtp")
        };
        assert!(matches!(
            verdict(&client, ACTION_CONNECT, false),
            Verdict::Granted(_)
        ));
        assert!(matches!(
            verdict(&client, ACTION_SOCKET_INET, false),
            Verdict::Granted(_)
        ));
        assert_eq!(verdict(&client, "socket(AF_UNIX)", false), Verdict::Allowed);
        assert_eq!(verdict(&client, ACTION_SETUID, false), Verdict::Allowed);

        let other_port = Profile {
            tcp_connect: TcpPorts::Only(vec![587]),
            ..Profile::new("x")
        };
        assert_eq!(
            verdict(&other_port, ACTION_CONNECT, false),
            Verdict::Allowed
        );
        assert!(matches!(
            verdict(&other_port, ACTION_SOCKET_INET, false),
            Verdict::Granted(_)
        ));

        let local = Profile {
            keep_caps: vec![Capability::CAP_SETUID, Capability::CAP_SETGID],
            ..Profile::new("local")
        };
        assert!(matches!(
            verdict(&local, ACTION_SETUID, false),
            Verdict::Granted(_)
        ));
        assert_eq!(
            verdict(&local, "ptrace(PTRACE_TRACEME)", false),
            Verdict::Allowed
        );
        assert_eq!(verdict(&local, ACTION_OPEN, false), Verdict::Allowed);
        assert_eq!(verdict(&local, ACTION_EXECVE, false), Verdict::Allowed);

        let reads_passwd = Profile {
            fs: vec![
                sandbox::FsRule {
                    path: "/etc/passwd".into(),
                    access: FsAccess::READ_FILE,
                    why: "look up users",
                },
                sandbox::FsRule {
                    path: "/".into(),
                    access: FsAccess::EXEC,
                    why: "run commands",
                },
            ],
            ..Profile::new("local")
        };
        assert!(matches!(
            verdict(&reads_passwd, ACTION_OPEN, false),
            Verdict::Granted(_)
        ));
        assert!(matches!(
            verdict(&reads_passwd, ACTION_EXECVE, false),
            Verdict::Granted(_)
        ));
        // A rule for another file grants nothing.
        let other = Profile {
            fs: vec![sandbox::FsRule {
                path: "/etc/group".into(),
                access: FsAccess::READ_FILE,
                why: "groups",
            }],
            ..Profile::new("local")
        };
        assert_eq!(verdict(&other, ACTION_OPEN, false), Verdict::Allowed);
    }

    #[test]
    fn action_names_match_the_sandbox_probes() {
        // Only probes that cannot disturb the test process itself (no ptrace, no execve).
        let targets = crate::probe::targets();
        let names = [
            sandbox::probe::tcp_connect(&targets).action,
            sandbox::probe::socket_inet().action,
            sandbox::probe::setuid_root().action,
        ];
        for action in [ACTION_CONNECT, ACTION_SOCKET_INET, ACTION_SETUID] {
            assert!(names.contains(&action), "{action} not in {names:?}");
        }
        // The open probe's name, without running the others here.
        let open = sandbox::probe::open_outside(&sandbox::ProbeTargets {
            outside_path: "/nonexistent/postern-probe".into(),
            ..targets.clone()
        })
        .action;
        assert_eq!(open, ACTION_OPEN);
    }
}
