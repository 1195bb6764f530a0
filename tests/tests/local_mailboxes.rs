//! Whole-system tests of what the `local` agent refuses to write, and of how it runs commands:
//! a running instance (smtpd, cleanup, qmgr, local, bounce) sent mail by `swaks`, checked in the
//! mail spool, the queue manager's log lines and `/proc`.
//!
//! - the mail spool is root's and not writable by others, so bob cannot create alice's mailbox;
//!   a mailbox planted by another user (a file bob owns), a hard-linked, a symlinked and a FIFO
//!   mailbox are not written: each delivery defers `4.2.0` saying what is wrong, promptly (the
//!   FIFO does not hang the agent), and the planted file stays as it was;
//! - a stale dot-lock that cannot be removed defers within the lock attempts (20 × 1 s) while
//!   the agent stays idle;
//! - `/dev/null` as an alias destination is delivered; a file in a missing directory bounces
//!   `5.2.0 cannot open file …: No such file or directory`; a command's exit status maps as
//!   Postfix's `sys_exits` table (67 → `5.1.1`, 75 → `4.3.0`);
//! - a command that leaves processes in the background is killed with its whole process group
//!   at `command_time_limit`: nothing of it is left running.
//!
//! Trusts: nothing the instance writes; processes are found through the instance's own master
//! (its pid file, `PPid`), and a command's leftovers by the unique arguments this test gave them.
//!
//! Decisions: as root the local users have numeric uids no system account uses
//! ([`UID_BASE`]); unprivileged, every user is the invoking user and the test that needs two
//! users (the planted mailbox) is reported as ignored with the reason.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use postern_tests::harness::{self, root_test, test};
use postern_tests::instance::{is_root, show, wait_until, Instance};

/// `myhostname` of an instance made by `postern init`, in `mydestination`.
const DOMAIN: &str = "localhost.localdomain";
const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// As root, alice's uid and gid; bob's and carol's follow.
const UID_BASE: u32 = 62201;
/// How long a deferral or delivery may take to show in the log.
const WAIT: Duration = Duration::from_secs(30);

/// The tests of this file (`harness = false`: a root-only test run by another user is reported
/// as ignored, see `postern_tests::harness`).
const TESTS: &[harness::Test] = &[
    root_test(
        "a_mailbox_planted_by_another_user_is_not_written",
        "two local users with different uids (unprivileged, every user is the invoking user)",
        a_mailbox_planted_by_another_user_is_not_written,
    ),
    test(
        "hard_linked_symlinked_and_fifo_mailboxes_are_deferred_without_a_hang",
        hard_linked_symlinked_and_fifo_mailboxes_are_deferred_without_a_hang,
    ),
    test(
        "an_unremovable_stale_lock_defers_within_the_lock_attempts_and_idles",
        an_unremovable_stale_lock_defers_within_the_lock_attempts_and_idles,
    ),
    test(
        "dev_null_missing_directories_and_command_exit_codes_as_postfix",
        dev_null_missing_directories_and_command_exit_codes_as_postfix,
    ),
    test(
        "a_command_is_killed_with_its_process_group_at_the_time_limit",
        a_command_is_killed_with_its_process_group_at_the_time_limit,
    ),
    test(
        "an_alias_and_a_forward_file_send_copies_on_through_cleanup",
        an_alias_and_a_forward_file_send_copies_on_through_cleanup,
    ),
];

fn main() -> std::process::ExitCode {
    harness::run(TESTS)
}

fn ids(n: usize) -> (u32, u32) {
    if is_root() {
        let id = UID_BASE + n as u32;
        (id, id)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    }
}

/// An instance delivering to spool mailboxes (`home_mailbox` empty) for alice, bob and carol,
/// with the test's aliases; `prepare` runs before the start.
fn instance(name: &str, settings: &[(&str, &str)], aliases: &str) -> Instance {
    let mut all = vec![("service_throttle_time", "1s"), ("home_mailbox", "")];
    all.extend_from_slice(settings);
    let inst = Instance::init(name, &all);
    let dir = inst.dir().to_path_buf();
    let home = dir.join("home");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    let (mut passwd, mut group) = (String::new(), String::new());
    for (n, user) in USERS.iter().enumerate() {
        let (uid, gid) = ids(n);
        let h = home.join(user);
        fs::create_dir(&h).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&h, Some(uid), Some(gid)).unwrap();
        }
        writeln!(
            passwd,
            "{user}:x:{uid}:{gid}:{user}:{}:/bin/sh",
            h.display()
        )
        .unwrap();
        writeln!(group, "{user}:x:{gid}:").unwrap();
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    fs::write(dir.join("passwd"), passwd).unwrap();
    fs::write(dir.join("group"), group).unwrap();
    fs::write(dir.join("aliases"), format!("postmaster: alice\n{aliases}")).unwrap();
    inst.append(
        "main.cf",
        &format!(
            "local_passwd_file = {dir}/passwd\n\
             local_group_file = {dir}/group\n\
             local_home_base = {dir}/home\n\
             alias_maps = hash:{dir}/aliases\n\
             alias_database = hash:{dir}/aliases\n",
            dir = dir.display()
        ),
    );
    inst
}

fn spool(inst: &Instance) -> PathBuf {
    inst.dir().join("mailspool")
}

/// Sends one message to `rcpt` with swaks; returns the queue id.
fn send(inst: &Instance, rcpt: &str, token: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &inst.port().to_string()])
        .args(["--from", "sender@example.org", "--to", rcpt])
        .args([
            "--helo",
            "client.example.org",
            "--header",
            &format!("Subject: {token}"),
        ])
        .args(["--body", &format!("token {token}\n")])
        .output()
        .expect("run swaks (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "swaks to {rcpt}: {}", show(&out));
    text.lines()
        .find_map(|l| l.split("queued as ").nth(1))
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|| panic!("no queue id in swaks' output:\n{text}"))
}

/// The queue manager's log line for `id` with `status=WORD`, once it is there.
fn result_line(inst: &Instance, id: &str, word: &str, wait: Duration) -> Option<String> {
    let mut found = None;
    wait_until(wait, || {
        found = inst
            .log()
            .lines()
            .find(|l| l.contains(id) && l.contains(&format!("status={word}")))
            .map(str::to_owned);
        found.is_some()
    });
    found
}

fn expect(inst: &Instance, id: &str, word: &str, dsn: &str, text: &str) -> String {
    let line = result_line(inst, id, word, WAIT).unwrap_or_else(|| {
        panic!(
            "no status={word} for {id} within {WAIT:?}\n--- log\n{}",
            inst.log()
        )
    });
    assert!(
        line.contains(&format!("dsn={dsn}")),
        "want dsn={dsn}: {line}"
    );
    assert!(line.contains(text), "want {text:?}: {line}");
    line
}

fn master_pid(inst: &Instance) -> i32 {
    let path = inst.queue_dir().join("pid/master.pid");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `/proc/PID/stat`'s fields after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The live `local` processes of the instance's master.
fn local_agents(inst: &Instance) -> Vec<i32> {
    let master = master_pid(inst).to_string();
    pids()
        .into_iter()
        .filter(|&pid| {
            let Some(f) = stat_fields(pid) else {
                return false;
            };
            // Fields from the state on: state ppid ...
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            f.get(1) == Some(&master)
                && !f[0].starts_with('Z')
                && Path::new(std::str::from_utf8(argv0).unwrap_or("")).file_name()
                    == Some("local".as_ref())
        })
        .collect()
}

/// CPU time a process and its waited-for children used (utime, stime, cutime, cstime).
fn cpu_of(pid: i32) -> Duration {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    let f = stat_fields(pid).unwrap_or_default();
    // utime is field 14 of stat, the 12th after the command name.
    let sum: u64 = (11..15)
        .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(sum * 1000 / ticks.max(1))
}

fn token(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// The defect reproduced before this change: the spool was mode 1777, so bob could create
/// `mailspool/alice` mode 0666 before alice's first message, and every later message for alice
/// went into bob's file.
fn a_mailbox_planted_by_another_user_is_not_written() {
    let mut inst = instance(
        "planted",
        &[
            ("minimal_backoff_time", "2s"),
            ("maximal_backoff_time", "3s"),
            ("queue_run_delay", "1s"),
        ],
        "",
    )
    .started();
    let spool = spool(&inst);
    let meta = fs::metadata(&spool).unwrap();
    assert_eq!(meta.uid(), 0, "the spool is root's");
    assert_eq!(
        meta.mode() & 0o022,
        0,
        "the spool is writable by nobody but its owner: {:o}",
        meta.mode() & 0o7777
    );
    let (bob, _) = ids(1);
    let (alice, _) = ids(0);
    // bob cannot create alice's mailbox himself.
    let out = Command::new("/bin/sh")
        .args(["-c", &format!("umask 0; : > {}/alice", spool.display())])
        .uid(bob)
        .gid(bob)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && !spool.join("alice").exists(),
        "bob created a file in the spool: {}",
        show(&out)
    );
    // A file bob owns is there all the same (made before the spool was tightened): mail for
    // alice must not go into it.
    let planted = spool.join("alice");
    fs::write(&planted, "").unwrap();
    std::os::unix::fs::chown(&planted, Some(bob), Some(bob)).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).unwrap();
    let tok = token("planted");
    let id = send(&inst, &format!("alice@{DOMAIN}"), &tok);
    expect(
        &inst,
        &id,
        "deferred",
        "4.2.0",
        "is not owned by the recipient",
    );
    assert_eq!(fs::read(&planted).unwrap(), b"", "bob's file was written");
    assert!(inst.log().contains("warning"), "the refusal is a warning");
    // Once the planted file is gone, the next attempt creates alice's own mailbox: 0600, hers.
    fs::remove_file(&planted).unwrap();
    expect(&inst, &id, "sent", "2.0.0", "");
    let meta = fs::metadata(&planted).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (alice, 0o600));
    assert!(fs::read_to_string(&planted).unwrap().contains(&tok));
    inst.stop();
}

/// Before this change: a hard-linked mailbox was written (only the virtual agent checked the
/// link count), a FIFO hung the delivery until the agent's deadline (`command_time_limit` plus
/// 30 s) because the open blocked, and a symlink was refused with an `ELOOP` system error.
fn hard_linked_symlinked_and_fifo_mailboxes_are_deferred_without_a_hang() {
    let inst = instance("links", &[], "");
    let spool = spool(&inst);
    let outside = inst.dir().join("outside");
    fs::write(&outside, "").unwrap();
    fs::hard_link(&outside, spool.join("alice")).unwrap();
    std::os::unix::fs::symlink(&outside, spool.join("bob")).unwrap();
    nix::unistd::mkfifo(
        &spool.join("carol"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    if is_root() {
        for (n, user) in USERS.iter().enumerate() {
            let (uid, gid) = ids(n);
            let _ = nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &spool.join(user),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
    let mut inst = inst.started();
    let started = Instant::now();
    for (user, why) in [
        ("alice", "has 2 links"),
        ("bob", "is a symbolic link"),
        ("carol", "is not a regular file"),
    ] {
        let id = send(&inst, &format!("{user}@{DOMAIN}"), &token(user));
        expect(&inst, &id, "deferred", "4.2.0", why);
    }
    assert!(
        started.elapsed() < WAIT,
        "three deferrals took {:?}",
        started.elapsed()
    );
    assert_eq!(
        fs::read(&outside).unwrap(),
        b"",
        "the link target was written"
    );
    inst.stop();
}

/// Before this change the agent retried a stale lock it could not remove at once, forever: the
/// delivery child spun at full CPU until the agent's deadline killed it.
fn an_unremovable_stale_lock_defers_within_the_lock_attempts_and_idles() {
    let mut inst = instance("stalelock", &[], "").started();
    // A directory: nobody's unlink removes it, and it looks ancient.
    let lock = spool(&inst).join("alice.lock");
    fs::create_dir(&lock).unwrap();
    fs::File::open(&lock)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let started = Instant::now();
    let id = send(&inst, &format!("alice@{DOMAIN}"), &token("stalelock"));
    let line = result_line(&inst, &id, "deferred", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no deferral within 60 s\n--- log\n{}", inst.log()));
    let took = started.elapsed();
    assert!(
        line.contains("dsn=4.2.0") && line.contains("alice.lock"),
        "{line}"
    );
    // deliver_lock_attempts (20) × deliver_lock_delay (1 s), and some slack.
    assert!(took < Duration::from_secs(45), "deferred after {took:?}");
    let agents = local_agents(&inst);
    assert!(!agents.is_empty(), "no local agent to measure");
    let cpu: Duration = agents.iter().map(|&p| cpu_of(p)).sum();
    assert!(
        cpu * 4 < took,
        "the local agent used {cpu:?} of CPU while waiting {took:?} for the lock"
    );
    inst.stop();
}

fn dev_null_missing_directories_and_command_exit_codes_as_postfix() {
    let missing = format!("/nonexistent-{}/file", std::process::id());
    let mut inst = instance(
        "destinations",
        &[],
        &format!(
            "devnull: /dev/null\n\
             nodir: {missing}\n\
             nouser: \"|exit 67\"\n\
             tempfail: \"|exit 75\"\n\
             other: \"|exit 3\"\n"
        ),
    )
    .started();
    for (alias, word, dsn, text) in [
        ("devnull", "sent", "2.0.0", "/dev/null".to_owned()),
        (
            "nodir",
            "bounced",
            "5.2.0",
            format!("cannot open file {missing}: No such file or directory"),
        ),
        (
            "nouser",
            "bounced",
            "5.1.1",
            "Command died with status 67".to_owned(),
        ),
        (
            "tempfail",
            "deferred",
            "4.3.0",
            "Command died with status 75".to_owned(),
        ),
        (
            "other",
            "bounced",
            "5.3.0",
            "Command died with status 3".to_owned(),
        ),
    ] {
        let id = send(&inst, &format!("{alias}@{DOMAIN}"), &token(alias));
        expect(&inst, &id, word, dsn, &text);
    }
    inst.stop();
}

/// The processes whose command line is exactly `args`.
fn processes_with(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    pids()
        .into_iter()
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Before this change the time limit killed only the shell: the background `sleep`s it started
/// kept running after the delivery was given up.
fn a_command_is_killed_with_its_process_group_at_the_time_limit() {
    // Arguments no other process has: this test's own leftovers, if any.
    let a = format!("{}.{}", 90000 + std::process::id() % 9000, 1);
    let b = format!("{}.{}", 90000 + std::process::id() % 9000, 2);
    let mut inst = instance(
        "cmdgroup",
        &[("command_time_limit", "3s")],
        &format!("background: \"|sleep {a} & sleep {b} &\"\n"),
    )
    .started();
    let id = send(&inst, &format!("background@{DOMAIN}"), &token("cmdgroup"));
    expect(&inst, &id, "deferred", "4.3.0", "time limit");
    let gone = wait_until(Duration::from_secs(5), || {
        processes_with(&["sleep", &a]).is_empty() && processes_with(&["sleep", &b]).is_empty()
    });
    let left: Vec<i32> = [a.as_str(), b.as_str()]
        .iter()
        .flat_map(|x| processes_with(&["sleep", x]))
        .collect();
    for pid in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
    }
    inst.stop();
    assert!(
        gone,
        "the command's background processes are still running: {left:?}"
    );
}

/// The messages in the virtual Maildir of `user@example.test` that contain `token`.
fn virtual_copies(inst: &Instance, token: &str) -> Vec<String> {
    let new = inst.dir().join("mail/example.test/user/new");
    fs::read_dir(new)
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_to_string(e.path()).ok())
                .filter(|t| t.contains(token))
                .collect()
        })
        .unwrap_or_default()
}

/// Forwarded copies are carried to cleanup by a child of the agent (the privileged parent
/// sends only what it composed): an alias and a user's `.forward` that name an address outside
/// `mydestination` each produce one new message, which reaches the virtual mailbox with the
/// `Delivered-To:` of the forwarding address.
fn an_alias_and_a_forward_file_send_copies_on_through_cleanup() {
    let inst = instance("forwarding", &[], "fwd: user@example.test\n");
    let forward = inst.dir().join("home/carol/.forward");
    fs::write(&forward, "user@example.test\n").unwrap();
    if is_root() {
        let (uid, gid) = ids(2);
        std::os::unix::fs::chown(&forward, Some(uid), Some(gid)).unwrap();
    }
    let mut inst = inst.started();
    for (rcpt, name) in [("fwd", "alias"), ("carol", "dotforward")] {
        let tok = token(name);
        let id = send(&inst, &format!("{rcpt}@{DOMAIN}"), &tok);
        expect(
            &inst,
            &id,
            "sent",
            "2.0.0",
            "forwarded to <user@example.test> as",
        );
        let arrived = wait_until(WAIT, || virtual_copies(&inst, &tok).len() == 1);
        assert!(
            arrived,
            "no forwarded copy of {rcpt}'s mail\n--- log\n{}",
            inst.log()
        );
        let copy = &virtual_copies(&inst, &tok)[0];
        assert!(
            copy.contains(&format!("Delivered-To: {rcpt}@{DOMAIN}\n")),
            "{copy}"
        );
        assert!(copy.contains("with local forward"), "{copy}");
    }
    inst.stop();
}
