use std::path::Path;

use super::*;

fn settings(extra: &str) -> MainCf {
    try_settings(extra).unwrap()
}

fn try_settings(extra: &str) -> Result<MainCf, conf::ConfError> {
    let text = format!(
        "queue_directory = /var/spool/postern\n\
         smtpd_user = 61001\n\
         queue_user = 61002:61003\n\
         smtp_user = 61004\n\
         vmail_user = 61005\n\
         bounce_user = 61006\n\
         proxymap_user = 61007\n\
         {extra}\n"
    );
    MainCf::parse(&text, Path::new("main.cf"))
}

#[test]
fn matrix_is_the_designed_one() {
    assert!(may_connect("smtpd", "cleanup"));
    assert!(may_connect("qmgr", "local"));
    assert!(may_connect("smtpd", "auth"));
    assert!(
        !may_connect("smtpd", "qmgr"),
        "smtpd cannot reach the queue manager"
    );
    assert!(!may_connect("cleanup", "smtpd"), "the matrix is directed");
    assert!(
        !may_connect("smtp", "cleanup"),
        "the smtp client talks to nobody"
    );
    assert!(!may_connect("virtual", "bounce"));
    assert_eq!(
        channels_of("qmgr"),
        vec!["smtp", "virtual", "local", "bounce"]
    );
    assert!(channels_of("smtp").is_empty());
}

#[test]
fn every_role_has_a_valid_profile_as_root_and_unprivileged() {
    let s = settings("virtual_mailbox_base = /var/mail/vhosts");
    for run_as in [RunAs::Root, RunAs::Unprivileged] {
        for role in ROLES.iter().chain(HELPER_ROLES) {
            let p = profile(role, &s, run_as).unwrap();
            assert_eq!(p.service, *role);
            p.validate()
                .unwrap_or_else(|e| panic!("{role} ({run_as:?}): {e}"));
        }
    }
}

#[test]
fn identities_come_from_the_settings() {
    let s = settings("");
    let smtpd = profile("smtpd", &s, RunAs::Root).unwrap();
    assert_eq!(
        smtpd.identity,
        Some(Identity {
            uid: 61001,
            gid: 61001,
            groups: vec![]
        })
    );
    let cleanup = profile("cleanup", &s, RunAs::Root).unwrap();
    assert_eq!(
        cleanup.identity.as_ref().map(|i| (i.uid, i.gid)),
        Some((61002, 61003))
    );
    assert_eq!(
        profile("smtpd", &s, RunAs::Unprivileged).unwrap().identity,
        None
    );
    let local = profile("local", &s, RunAs::Root).unwrap();
    assert_eq!(
        local.identity, None,
        "local stays root to become each recipient"
    );
    assert_eq!(
        local.keep_caps,
        vec![
            Capability::CAP_SETUID,
            Capability::CAP_SETGID,
            Capability::CAP_CHOWN
        ],
        "CAP_CHOWN gives a new spool mailbox to its recipient before anything is written"
    );
    assert!(profile("local", &s, RunAs::Unprivileged)
        .unwrap()
        .keep_caps
        .is_empty());
}

#[test]
fn bad_accounts_are_refused() {
    // Refused by main.cf's parser or, failing that, here.
    for bad in ["0", "0:5", "5:0", "root", "4294967295", "12x", "61001:"] {
        if let Ok(s) = try_settings(&format!("bounce_user = {bad}")) {
            assert!(
                profile("bounce", &s, RunAs::Root).is_err(),
                "{bad} accepted"
            );
        }
    }
    let s = settings("bounce_user = no-such-user-postern-test");
    assert!(matches!(
        profile("bounce", &s, RunAs::Root),
        Err(PrivilegeError::NoSuchUser { .. }) | Err(PrivilegeError::Setting { .. })
    ));
}

#[test]
fn only_smtp_may_connect_and_only_smtpd_accepts() {
    let s = settings("");
    for role in ROLES.iter().chain(HELPER_ROLES) {
        let p = profile(role, &s, RunAs::Root).unwrap();
        let names: Vec<&str> = p.syscalls.iter().map(|c| c.name).collect();
        assert_eq!(names.contains(&"socket"), *role == "smtp", "{role}");
        assert_eq!(names.contains(&"connect"), *role == "smtp", "{role}");
        assert_eq!(names.contains(&"accept4"), *role == "smtpd", "{role}");
        // Only local's command launcher runs |command deliveries (while
        // allow_mail_to_commands allows them); local's parent may not exec.
        assert_eq!(
            names.contains(&"execve"),
            *role == "local-command",
            "{role} may exec"
        );
        assert_eq!(names.contains(&"execve"), runs_commands(role, &s).unwrap());
        assert_eq!(p.tcp_connect == TcpPorts::Any, *role == "smtp", "{role}");
        assert_eq!(p.tcp_bind, TcpPorts::None, "{role}");
    }
}

#[test]
fn local_may_exec_only_while_commands_are_allowed() {
    let s = settings("allow_mail_to_commands =");
    let p = profile("local", &s, RunAs::Root).unwrap();
    assert!(!p.syscalls.iter().any(|c| c.name == "execve"));
    assert!(!p.fs.iter().any(|r| r.path == Path::new("/usr")));
}

#[test]
fn landlock_paths_live_under_the_queue_directory() {
    let s = settings("queue_directory = /srv/q");
    let cleanup = profile("cleanup", &s, RunAs::Root).unwrap();
    assert_eq!(cleanup.fs.len(), 1);
    assert_eq!(cleanup.fs[0].path, Path::new("/srv/q/incoming"));
    assert!(!cleanup.fs[0].access.contains(FsAccess::REFER));
    let qmgr = profile("qmgr", &s, RunAs::Root).unwrap();
    assert_eq!(qmgr.fs.len(), QUEUE_DIRS.len());
    assert!(qmgr
        .fs
        .iter()
        .all(|r| r.path.starts_with("/srv/q") && r.access.contains(FsAccess::REFER)));
    for role in ["smtpd", "smtp", "bounce"] {
        assert!(
            profile(role, &s, RunAs::Root).unwrap().fs.is_empty(),
            "{role}"
        );
    }
    if let Ok(s) = try_settings("queue_directory = relative/q") {
        assert!(matches!(
            profile("cleanup", &s, RunAs::Root),
            Err(PrivilegeError::RelativePath { .. })
        ));
    }
}

#[test]
fn enforcement_follows_the_setting_and_unknown_roles_fail() {
    let s = settings("sandbox_enforcement = best_effort");
    assert_eq!(
        profile("smtpd", &s, RunAs::Root).unwrap().enforcement,
        Enforcement::BestEffort
    );
    assert_eq!(
        profile("smtpd", &settings(""), RunAs::Root)
            .unwrap()
            .enforcement,
        Enforcement::Required
    );
    assert!(matches!(
        profile("sendmail", &settings(""), RunAs::Root),
        Err(PrivilegeError::UnknownRole(_))
    ));
}

#[test]
fn privilege_map_has_a_row_per_role_and_the_matrix() {
    let s = settings("");
    let md = privilege_map_markdown(&s, RunAs::Root).unwrap();
    assert!(md.starts_with(sandbox::PRIVILEGE_MAP_HEADER));
    for role in ROLES {
        assert!(
            md.contains(&format!("\n| {role} | ")),
            "{role} missing:\n{md}"
        );
    }
    // The master: root's ids kept, two capabilities, landlocked to its configuration, its pid
    // directory and /proc; the spawner's row says where programs are executed.
    assert!(md.contains(
        "\n| master | unchanged | CAP_KILL, CAP_NET_BIND_SERVICE | /etc/postern (read-only)<br>"
    ), "{md}");
    assert!(md.contains("\n| spawner | unchanged (root) | none (bounding set CAP_CHOWN, CAP_SETGID, CAP_SETPCAP, CAP_SETUID"), "{md}");
    assert!(md.contains("| smtpd | cleanup |"));
    assert!(md.contains("| 61001:61001 |"));
    let text = privilege_map_text(&s, RunAs::Unprivileged).unwrap();
    // The spawner's line, the master's, then every role's.
    assert_eq!(text.lines().count(), ROLES.len() + HELPER_ROLES.len() + 2);
    assert!(text.contains("smtpd: runs as unchanged;"));
    assert!(text.contains("channels to cleanup, auth"));
}

/// The settings SECURITY.md's privilege map is rendered with: the defaults, with numeric ids in
/// place of the default user names (which need passwd entries).
fn documented_settings() -> MainCf {
    let text = "smtpd_user = 61001\nqueue_user = 61002\nsmtp_user = 61003\n\
                vmail_user = 61004\nbounce_user = 61005\nproxymap_user = 61006\n";
    MainCf::parse(text, Path::new("main.cf")).unwrap()
}

#[test]
fn security_md_carries_the_generated_privilege_map() {
    let map = privilege_map_markdown(&documented_settings(), RunAs::Root).unwrap();
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../SECURITY.md")).unwrap();
    assert!(
        doc.contains(&map),
        "SECURITY.md's privilege map is out of date; it must contain exactly:\n{map}"
    );
}

/// Every role's profile under the settings above, with `|command` deliveries allowed (the
/// default) and not, as root and not: `(label, role, profile, runs commands)`.
fn every_profile() -> Vec<(String, &'static str, Profile, bool)> {
    let mut all = Vec::new();
    for commands in ["", "allow_mail_to_commands ="] {
        let s = settings(&format!(
            "virtual_mailbox_base = /var/mail/vhosts\n{commands}"
        ));
        for run_as in [RunAs::Root, RunAs::Unprivileged] {
            for role in ROLES.iter().chain(HELPER_ROLES) {
                let label = format!("{role} ({run_as:?}, {:?})", commands.trim());
                let p = profile(role, &s, run_as).unwrap_or_else(|e| panic!("{label}: {e}"));
                let runs = runs_commands(role, &s).unwrap();
                all.push((label, *role, p, runs));
            }
            let master = master_profile(&s, Path::new("/etc/postern"), run_as)
                .unwrap_or_else(|e| panic!("master: {e}"));
            all.push((format!("master ({run_as:?})"), "master", master, false));
        }
    }
    all
}

/// The syscalls whose argument checks in one group another group lifts, on purpose: a TCP
/// socket's options may be read, beyond the channel check's SO_TYPE and SO_DOMAIN; and the
/// process that runs commands maps its programs executable (its loader runs under this filter).
const DECLARED_WIDENINGS: &[(&str, &str)] = &[
    ("smtpd", "getsockopt"),
    ("smtp", "getsockopt"),
    (RUNS_COMMANDS, "mmap"),
    (RUNS_COMMANDS, "mprotect"),
];
const RUNS_COMMANDS: &str = "(the process that runs commands)";

#[test]
fn no_argument_check_is_lifted_by_another_group_unless_declared() {
    let mut widened = std::collections::BTreeSet::new();
    for (label, role, p, runs) in every_profile() {
        let mut by_nr: std::collections::BTreeMap<i64, Vec<&Syscall>> = Default::default();
        for entry in &p.syscalls {
            by_nr.entry(entry.nr).or_default().push(entry);
        }
        for entries in by_nr.values() {
            let Some(checked) = entries.iter().find(|e| !e.allow_if.is_empty()) else {
                continue;
            };
            // The filter allows the union of a syscall's entries: one without checks means any
            // arguments, whatever the others check.
            for any in entries.iter().filter(|e| e.allow_if.is_empty()) {
                assert!(
                    any.widens.is_some(),
                    "{label}: {}: {:?} lifts the checks of {:?} and is not declared a widening",
                    any.name,
                    any.why,
                    checked.why
                );
                widened.insert((if runs { RUNS_COMMANDS } else { role }, any.name));
            }
        }
        // What the filter is compiled from agrees, and names a reason for each widening.
        let merged = syscalls::merge(&p.syscalls).unwrap_or_else(|e| panic!("{label}: {e}"));
        for m in merged.iter().filter(|m| m.allow_if.is_none()) {
            let checked = by_nr[&m.nr].iter().any(|e| !e.allow_if.is_empty());
            assert_eq!(!m.widened_by.is_empty(), checked, "{label}: {}", m.name);
        }
        p.validate().unwrap_or_else(|e| panic!("{label}: {e}"));
    }
    let declared: std::collections::BTreeSet<(&str, &str)> =
        DECLARED_WIDENINGS.iter().copied().collect();
    assert_eq!(widened, declared, "the widenings that remain");
}

#[test]
fn only_the_process_that_runs_commands_may_exec_or_vfork() {
    let mut runners = 0;
    for (label, _role, p, runs) in every_profile() {
        runners += usize::from(runs);
        let names: Vec<&str> = p.syscalls.iter().map(|c| c.name).collect();
        assert_eq!(names.contains(&"execve"), runs, "{label}: execve");
        for never in ["execveat", "pkey_mprotect", "vfork"] {
            if !runs {
                assert!(!names.contains(&never), "{label}: {never}");
            }
        }
        for clone in p.syscalls.iter().filter(|c| c.name == "clone") {
            // Every alternative names its exact flags, none of them CLONE_VFORK.
            assert!(!clone.allow_if.is_empty(), "{label}: clone unchecked");
            for alternative in clone.allow_if {
                assert!(
                    alternative.iter().any(|check| check.index == 0
                        && matches!(check.cmp, syscalls::ArgCmp::Eq(flags)
                            if flags & libc::CLONE_VFORK as u64 == 0)),
                    "{label}: clone {:?}",
                    clone.why
                );
            }
        }
    }
    assert!(
        runners > 0,
        "no profile runs commands: the test proves nothing"
    );
}
