//! Delivery children, the command launcher and the parent's filter, tested in a program that
//! never starts a thread (`harness = false`): `sandbox::fork_delivery_child` refuses to fork a
//! process that ever had a second thread, and every libtest harness runs tests on threads.
//!
//! Run as root the deliveries use a numeric account (64123, no passwd entry); as another user
//! they keep that user's uid.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use local::deliver::{rules_for, run, Job, Sink};
use local::launcher::Launcher;
use mailbox::{Content, Envelope, LockOptions};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use sandbox::{FsAccess, FsRule, Identity};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn test_identity() -> Identity {
    if is_root() {
        Identity {
            uid: 64_123,
            gid: 64_123,
            groups: Vec::new(),
        }
    } else {
        Identity {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: Vec::new(),
        }
    }
}

fn scratch(name: &str, id: &Identity) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("local-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(id.uid)),
            Some(nix::unistd::Gid::from_raw(id.gid)),
        )
        .unwrap();
    }
    dir
}

/// A file holding `text` framed as a queue file frames content, from offset 0.
fn queue_text(text: &[u8]) -> File {
    let path = std::env::temp_dir().join(format!(
        "local-children-{}-{}",
        std::process::id(),
        text.len()
    ));
    let mut f = File::create(&path).unwrap();
    f.write_all(&(text.len() as u32).to_be_bytes()).unwrap();
    f.write_all(text).unwrap();
    f.write_all(&0u32.to_be_bytes()).unwrap();
    let f = File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    f
}

fn job<'a>(id: Identity, sink: Sink, content: &'a Content<'a>) -> Job<'a> {
    Job {
        identity: id,
        rules: rules_for(&sink),
        sink,
        envelope: Envelope {
            sender: "a@example.org",
            recipient: "u@example.test",
        },
        content,
        hostname: "host.example.test",
        lock: LockOptions::default(),
        deadline: Duration::from_secs(30),
        launcher: None,
    }
}

fn a_maildir_delivery_lands_once_owned_by_the_recipient_mode_0600() {
    let id = test_identity();
    let home = scratch("maildir", &id);
    let text = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n";
    let file = queue_text(text);
    let content = Content::new(&file, 0, text.len() as u64);
    let sink = Sink::Maildir {
        home: home.clone(),
        relative: PathBuf::from("Maildir"),
    };
    let report = run(&job(id.clone(), sink, &content));
    assert_eq!(report.status, "2.0.0", "{report:?}");
    let new: Vec<_> = fs::read_dir(home.join("Maildir/new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new.len(), 1);
    let meta = fs::metadata(&new[0]).unwrap();
    assert_eq!(meta.uid(), id.uid);
    assert_eq!(meta.mode() & 0o777, 0o600);
    let text = fs::read_to_string(&new[0]).unwrap();
    assert!(
        text.starts_with(
            "Return-Path: <a@example.org>\nDelivered-To: u@example.test\nReceived: from x\n"
        ),
        "{text}"
    );
    fs::remove_dir_all(&home).unwrap();
}

/// The loop check runs in the child: a message that already carries
/// `Delivered-To: RECIPIENT` bounces 5.4.6 and nothing is written.
fn a_looping_message_bounces_in_the_child() {
    let id = test_identity();
    let home = scratch("loop", &id);
    let text = b"Delivered-To: U@Example.Test\r\nSubject: hi\r\n\r\nbody\r\n";
    let file = queue_text(text);
    let content = Content::new(&file, 0, text.len() as u64);
    let sink = Sink::Maildir {
        home: home.clone(),
        relative: PathBuf::from("Maildir"),
    };
    let report = run(&job(id, sink, &content));
    assert_eq!(report.status, "5.4.6", "{report:?}");
    assert!(!home.join("Maildir").exists());
    fs::remove_dir_all(&home).unwrap();
}

fn status_command_sink(home: &Path) -> Sink {
    Sink::Command {
        command: "grep -E '^(Uid|Gid|CapEff|CapPrm|CapInh|CapAmb)' /proc/self/status; echo RECIPIENT=$RECIPIENT; cat >/dev/null; exit 3".to_owned(),
        home: home.to_path_buf(),
        env: vec![
            ("RECIPIENT".to_owned(), "u@example.test".to_owned()),
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
        ],
        limit: Duration::from_secs(20),
    }
}

fn assert_ran_as(report: &local::deliver::Report, id: &Identity) {
    assert_eq!(report.status, "5.3.0", "{report:?}");
    let uid = id.uid;
    assert!(
        report
            .text
            .contains(&format!("Uid: {uid} {uid} {uid} {uid}")),
        "{report:?}"
    );
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert!(
            report.text.contains(&format!("{set}: 0000000000000000")),
            "{set}: {report:?}"
        );
    }
    assert!(
        report.text.contains("RECIPIENT=u@example.test"),
        "{report:?}"
    );
}

/// As root, a delivery child runs as the recipient's uid with every capability set empty
/// (and `confine_delivery` proved that `setresuid(0, 0, 0)` fails); the command's own view
/// of `/proc/self/status` shows it.
fn a_command_runs_as_the_recipient_without_capabilities() {
    let id = test_identity();
    let home = scratch("command", &id);
    let text = b"Subject: x\r\n\r\nbody\r\n";
    let file = queue_text(text);
    let content = Content::new(&file, 0, text.len() as u64);
    let mut j = job(id.clone(), status_command_sink(&home), &content);
    j.rules.push(FsRule {
        path: PathBuf::from("/proc"),
        access: FsAccess::READ_ONLY,
        why: "the test reads the child's status",
    });
    assert_ran_as(&run(&j), &id);
    fs::remove_dir_all(&home).unwrap();
}

fn root_is_refused_as_a_delivery_identity() {
    let root = Identity {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    };
    let text = b"x\r\n";
    let file = queue_text(text);
    let content = Content::new(&file, 0, text.len() as u64);
    let dir = std::env::temp_dir();
    let sink = Sink::File(dir.join("never"));
    let report = run(&job(root, sink, &content));
    assert_eq!(report.status, "4.3.0", "{report:?}");
    assert!(report.text.contains("root is never"), "{report:?}");
    assert!(!dir.join("never").exists());
}

/// Settings naming test paths; `passwd` and `passwd.group` must exist.
/// A `.forward` is read and parsed by a child running as its owner; a home without one
/// answers `None`, and a `.forward` of another owner is refused.
fn a_forward_file_is_read_by_its_owner() {
    use protocol::local::ForwardEntry;
    let id = test_identity();
    let home = scratch("forward", &id);
    assert_eq!(local::deliver::read_forward(&id, &home), Ok(None));
    fs::write(home.join(".forward"), "bob@example.org, \\u\n").unwrap();
    if is_root() {
        nix::unistd::chown(
            &home.join(".forward"),
            Some(nix::unistd::Uid::from_raw(id.uid)),
            Some(nix::unistd::Gid::from_raw(id.gid)),
        )
        .unwrap();
    }
    let entries = local::deliver::read_forward(&id, &home).unwrap().unwrap();
    assert!(
        entries.iter().any(|e| matches!(e, ForwardEntry::Address { address, escaped: false } if address.as_str() == "bob@example.org")),
        "{entries:?}"
    );
    fs::remove_dir_all(&home).unwrap();
}

fn settings(home_base: &Path, spool: &Path, passwd: &Path) -> conf::MainCf {
    let text = format!(
        "mail_spool_directory = {}\nlocal_home_base = {}\nlocal_passwd_file = {}\nlocal_group_file = {}.group\n",
        spool.display(),
        home_base.display(),
        passwd.display(),
        passwd.display()
    );
    conf::MainCf::parse(&text, Path::new("main.cf")).unwrap()
}

fn run_as() -> privileges::RunAs {
    privileges::RunAs::current()
}

/// A command delivery through the launcher, which applied the `local-command` profile: the
/// command still runs as the recipient without capabilities, and the answer comes back
/// through the launcher's channel.
fn a_command_runs_through_the_launcher() {
    let id = test_identity();
    let base = scratch("launcher", &id);
    let home = base.join("u");
    fs::create_dir(&home).unwrap();
    if is_root() {
        nix::unistd::chown(
            &home,
            Some(nix::unistd::Uid::from_raw(id.uid)),
            Some(nix::unistd::Gid::from_raw(id.gid)),
        )
        .unwrap();
    }
    let passwd = base.join("passwd");
    fs::write(&passwd, "").unwrap();
    fs::write(base.join("passwd.group"), "").unwrap();
    let s = settings(&base, &base, &passwd);
    let mut profile = privileges::profile("local-command", &s, run_as()).unwrap();
    // The command of this test reads its own /proc/self/status.
    profile.fs.push(FsRule {
        path: PathBuf::from("/proc"),
        access: FsAccess::READ_ONLY,
        why: "the test's command reads its status",
    });
    let launcher = Launcher::start(&profile).unwrap();
    let text = b"Subject: x\r\n\r\nbody\r\n";
    let file = queue_text(text);
    let content = Content::new(&file, 0, text.len() as u64);
    let mut j = job(id.clone(), status_command_sink(&home), &content);
    j.launcher = Some(&launcher);
    let report = run(&j);
    assert!(!launcher.is_broken(), "{report:?}");
    // The launcher's children narrow to what `rules_for` gives; /proc is not in it, so
    // grep's line is missing, but the command ran (exit 3 is 5.3.0) with the recipient's
    // variables.
    assert_eq!(report.status, "5.3.0", "{report:?}");
    assert!(
        report.text.contains("RECIPIENT=u@example.test"),
        "{report:?}"
    );
    // A second request on the same launcher.
    let exit_67 = Sink::Command {
        command: "cat >/dev/null; exit 67".to_owned(),
        home: home.clone(),
        env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
        limit: Duration::from_secs(20),
    };
    let mut j = job(id.clone(), exit_67, &content);
    j.launcher = Some(&launcher);
    let report = run(&j);
    assert_eq!(report.status, "5.1.1", "{report:?}");
    drop(launcher);
    fs::remove_dir_all(&base).unwrap();
}

/// The `local` parent's own filter: once applied, `execve` fails with EPERM and no program
/// runs, whether or not `allow_mail_to_commands` is set (commands go to the launcher).
fn the_local_parent_cannot_exec() {
    let id = test_identity();
    let base = scratch("noexec", &id);
    let (spool, homes) = (base.join("spool"), base.join("home"));
    fs::create_dir(&spool).unwrap();
    fs::create_dir(&homes).unwrap();
    let passwd = base.join("passwd");
    fs::write(&passwd, "").unwrap();
    fs::write(base.join("passwd.group"), "").unwrap();
    let mut s = settings(&homes, &spool, &passwd);
    s.set("allow_mail_to_commands", "alias, forward").unwrap();
    let profile = privileges::profile("local", &s, run_as()).unwrap();
    let witness = base.join("ran");
    match sandbox::fork_delivery_child().unwrap() {
        ForkResult::Child => {
            let code = match sandbox::apply(&profile) {
                Err(e) => {
                    eprintln!("apply: {e}");
                    2
                }
                Ok(_) => {
                    let sh = std::ffi::CString::new("/bin/sh").unwrap();
                    let args = [
                        std::ffi::CString::new("sh").unwrap(),
                        std::ffi::CString::new("-c").unwrap(),
                        std::ffi::CString::new(format!("touch {}", witness.display())).unwrap(),
                    ];
                    let env: [std::ffi::CString; 0] = [];
                    match nix::unistd::execve(&sh, &args, &env) {
                        Err(nix::errno::Errno::EPERM) => 0,
                        Err(_) => 3,
                    }
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).unwrap();
            assert_eq!(
                status,
                WaitStatus::Exited(child, 0),
                "2: the sandbox failed, 3: execve failed otherwise than EPERM"
            );
        }
    }
    assert!(!witness.exists());
    fs::remove_dir_all(&base).unwrap();
}

/// The whole of a delivery as the agent runs it: the parent's own `local` profile applied
/// first, then a delivery child forked under it. As root the mailbox file is the
/// recipient's: the child became the recipient under the parent's filter (a filter that
/// denied the id lookup once let a child deliver as a capability-less root).
fn a_delivery_under_the_parent_s_sandbox_becomes_the_recipient() {
    let id = test_identity();
    let base = scratch("parent", &id);
    let (spool, homes) = (base.join("spool"), base.join("home"));
    fs::create_dir(&spool).unwrap();
    fs::create_dir(&homes).unwrap();
    let home = homes.join("u");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    if is_root() {
        nix::unistd::chown(
            &home,
            Some(nix::unistd::Uid::from_raw(id.uid)),
            Some(nix::unistd::Gid::from_raw(id.gid)),
        )
        .unwrap();
    }
    let passwd = base.join("passwd");
    fs::write(&passwd, "").unwrap();
    fs::write(base.join("passwd.group"), "").unwrap();
    let s = settings(&homes, &spool, &passwd);
    let profile = privileges::profile("local", &s, run_as()).unwrap();
    let text = b"Subject: hi\r\n\r\nbody\r\n";
    let file = queue_text(text);
    match sandbox::fork_delivery_child().unwrap() {
        ForkResult::Child => {
            let code = match sandbox::apply(&profile) {
                Err(e) => {
                    eprintln!("apply: {e}");
                    2
                }
                Ok(_) => {
                    let content = Content::new(&file, 0, text.len() as u64);
                    let sink = Sink::Maildir {
                        home: home.clone(),
                        relative: PathBuf::from("Maildir"),
                    };
                    let report = run(&job(id.clone(), sink, &content));
                    if report.status == "2.0.0" {
                        0
                    } else {
                        eprintln!("delivery: {report:?}");
                        3
                    }
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).unwrap();
            assert_eq!(
                status,
                WaitStatus::Exited(child, 0),
                "2: apply, 3: delivery"
            );
        }
    }
    let new: Vec<_> = fs::read_dir(home.join("Maildir/new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(fs::metadata(&new[0]).unwrap().uid(), id.uid);
    fs::remove_dir_all(&base).unwrap();
}

fn main() {
    let tests: &[(&str, fn())] = &[
        (
            "a_maildir_delivery_lands_once_owned_by_the_recipient_mode_0600",
            a_maildir_delivery_lands_once_owned_by_the_recipient_mode_0600,
        ),
        (
            "a_looping_message_bounces_in_the_child",
            a_looping_message_bounces_in_the_child,
        ),
        (
            "a_command_runs_as_the_recipient_without_capabilities",
            a_command_runs_as_the_recipient_without_capabilities,
        ),
        (
            "root_is_refused_as_a_delivery_identity",
            root_is_refused_as_a_delivery_identity,
        ),
        (
            "a_command_runs_through_the_launcher",
            a_command_runs_through_the_launcher,
        ),
        ("the_local_parent_cannot_exec", the_local_parent_cannot_exec),
        (
            "a_delivery_under_the_parent_s_sandbox_becomes_the_recipient",
            a_delivery_under_the_parent_s_sandbox_becomes_the_recipient,
        ),
        (
            "a_forward_file_is_read_by_its_owner",
            a_forward_file_is_read_by_its_owner,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        test();
        println!("test {name} ... ok");
        ran += 1;
    }
    println!("test result: ok. {ran} passed; 0 failed");
}
