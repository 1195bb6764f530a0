//! Whole-system tests of local accounts added while Postern runs: a running instance (smtpd,
//! cleanup, qmgr, local, proxymap, bounce) sent mail by `swaks`, checked in the mail spool.
//!
//! - a passwd file replaced by rename (write a new file, rename it over the old one, as
//!   `useradd` and `vipw` do) with a new user in it: the new user is accepted at `RCPT` and
//!   gets the mail, and a user of the old file still gets mail;
//! - as root, the same with the system's own `/etc/passwd` and the real `useradd`: a user
//!   added after the start gets mail, and a user that existed before still does.
//!
//! Trusts: nothing the instance writes; a delivery is seen in the user's spool mailbox.
//!
//! Decisions: the harness is this file's own (libtest's output format), so that a test that
//! needs root is reported as `ignored` when run unprivileged (scripts/test.sh runs this file
//! also as `nobody`), instead of passing without checking anything. Users made with
//! `useradd` are removed by a guard (`userdel -r`) even when the test fails.

use std::fmt::Write as _;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

use postern_tests::instance::{is_root, show, wait_until, Instance};

/// `myhostname` of an instance made by `postern init`, in `mydestination`.
const DOMAIN: &str = "localhost.localdomain";
/// As root, the uids of the test passwd file's users (no system account uses them).
const UID_BASE: u32 = 62301;
/// How long a delivery may take to show in a mailbox.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Who {
    Root,
    Anyone,
}

type Test = (&'static str, Who, fn());

const TESTS: &[Test] = &[
    (
        "a_passwd_file_replaced_by_rename_is_seen_at_rcpt_and_at_delivery",
        Who::Anyone,
        a_passwd_file_replaced_by_rename_is_seen_at_rcpt_and_at_delivery,
    ),
    (
        "a_user_added_with_useradd_gets_mail_without_a_restart",
        Who::Root,
        a_user_added_with_useradd_gets_mail_without_a_restart,
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let chosen: Vec<&Test> = TESTS
        .iter()
        .filter(|(name, _, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        name == f
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let (mut passed, mut failed, mut ignored) = (0, Vec::new(), 0);
    for (name, who, test) in chosen {
        if *who == Who::Root && !is_root() {
            println!("test {name} ... ignored, needs root: it adds a system account with useradd");
            ignored += 1;
            continue;
        }
        match catch_unwind(AssertUnwindSafe(test)) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {verdict}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {} filtered out\n",
        failed.len(),
        TESTS.len() - passed - failed.len() - ignored
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn token(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Sends one message to `rcpt` with swaks; panics with swaks' output (which names the
/// refused phase and the server's reply) if it was not queued.
fn send(inst: &Instance, rcpt: &str, token: &str) {
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
    assert!(
        out.status.success(),
        "swaks to {rcpt} (exit 24: RCPT refused): {}",
        show(&out)
    );
}

/// Waits until `user`'s spool mailbox holds `token`.
fn expect_delivered(inst: &Instance, user: &str, token: &str) {
    let mailbox = inst.dir().join("mailspool").join(user);
    let found = wait_until(WAIT, || {
        fs::read_to_string(&mailbox).is_ok_and(|text| text.contains(token))
    });
    assert!(
        found,
        "{token} not delivered to {} within {WAIT:?}\n--- log\n{}",
        mailbox.display(),
        inst.log()
    );
}

fn uid(n: u32) -> u32 {
    if is_root() {
        UID_BASE + n
    } else {
        nix::unistd::getuid().as_raw()
    }
}

/// Before this change: smtpd read the passwd file once at start-up, so the new user got
/// `550 5.1.1 ... User unknown in local recipient table` at RCPT (swaks exit 24); and local's
/// landlock rule was tied to the old file's inode, so once the file was replaced every local
/// recipient was deferred with `4.3.0 cannot read .../passwd: Permission denied`.
fn a_passwd_file_replaced_by_rename_is_seen_at_rcpt_and_at_delivery() {
    let inst = Instance::init(
        "accounts-rename",
        &[("service_throttle_time", "1s"), ("home_mailbox", "")],
    );
    let dir = inst.dir().to_path_buf();
    let line = |name: &str, uid: u32| format!("{name}:x:{uid}:{uid}:{name}:/nonexistent:/bin/sh\n");
    let mut passwd = line("alice", uid(0));
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    fs::write(dir.join("passwd"), &passwd).unwrap();
    fs::write(dir.join("group"), "alice:x:1:\n").unwrap();
    inst.append(
        "main.cf",
        &format!(
            "local_passwd_file = {dir}/passwd\n\
             local_group_file = {dir}/group\n\
             local_recipient_maps = proxy:unix:passwd.byname $alias_maps\n",
            dir = dir.display()
        ),
    );
    let mut inst = inst.started();
    let tok = token("before");
    send(&inst, &format!("alice@{DOMAIN}"), &tok);
    expect_delivered(&inst, "alice", &tok);

    // A new user, added as useradd and vipw do: a new file renamed over the old one.
    passwd.push_str(&line("newuser", uid(1)));
    let new = dir.join("passwd+");
    fs::write(&new, &passwd).unwrap();
    fs::rename(&new, dir.join("passwd")).unwrap();
    let tok = token("new");
    send(&inst, &format!("newuser@{DOMAIN}"), &tok);
    expect_delivered(&inst, "newuser", &tok);
    let tok = token("after");
    send(&inst, &format!("alice@{DOMAIN}"), &tok);
    expect_delivered(&inst, "alice", &tok);
    inst.stop();
}

/// A system account made with `useradd` for this test; `userdel -r` when dropped, also when
/// the test fails.
struct SystemUser {
    name: String,
}

impl SystemUser {
    fn add(name: String) -> SystemUser {
        let out = Command::new("useradd")
            .args(["-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", &name])
            .output()
            .expect("run useradd");
        assert!(out.status.success(), "useradd {name}: {}", show(&out));
        SystemUser { name }
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        // -r: also its mail spool file, should one exist; the home does not.
        let out = Command::new("userdel").args(["-r", &self.name]).output();
        let gone = || {
            fs::read_to_string("/etc/passwd").is_ok_and(|p| {
                !p.lines()
                    .any(|l| l.split(':').next() == Some(self.name.as_str()))
            })
        };
        if !gone() {
            let _ = Command::new("userdel").arg(&self.name).output();
        }
        if !gone() {
            eprintln!("could not remove the test user {}: {out:?}", self.name);
        }
    }
}

fn user_name(what: &str) -> String {
    // At most 32 characters, lower case, as useradd wants.
    let mut name = String::new();
    let _ = write!(name, "pstn{what}{}", std::process::id() % 1_000_000);
    name
}

/// Before this change: after `useradd`, the running smtpd answered the new user with
/// `550 5.1.1` (it had read /etc/passwd at start-up), and the running local agent deferred
/// every local recipient, the old user's too, with `4.3.0 cannot read /etc/passwd:
/// Permission denied` (its landlock rule was on the inode useradd had replaced).
fn a_user_added_with_useradd_gets_mail_without_a_restart() {
    let old = SystemUser::add(user_name("old"));
    let inst = Instance::init(
        "accounts-useradd",
        &[("service_throttle_time", "1s"), ("home_mailbox", "")],
    );
    assert!(
        Path::new("/etc/passwd").is_file(),
        "the system has no /etc/passwd"
    );
    let mut inst = inst.started();
    let tok = token("old");
    send(&inst, &format!("{}@{DOMAIN}", old.name), &tok);
    expect_delivered(&inst, &old.name, &tok);

    let new = SystemUser::add(user_name("new"));
    let tok = token("new");
    send(&inst, &format!("{}@{DOMAIN}", new.name), &tok);
    expect_delivered(&inst, &new.name, &tok);
    let tok = token("old-again");
    send(&inst, &format!("{}@{DOMAIN}", old.name), &tok);
    expect_delivered(&inst, &old.name, &tok);
    inst.stop();
    drop(new);
    drop(old);
}
