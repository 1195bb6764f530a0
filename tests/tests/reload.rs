//! Whole-system tests of `postern reload` on a running instance, with real clients (Python's
//! smtplib through `tests/python/smtp_session.py`, bound to a chosen loopback source address):
//!
//! - after `mynetworks` is narrowed and `reload` returns, the next connection from an address
//!   outside the new networks is refused relaying (`554 5.7.1`), although an smtpd process that
//!   read the old setting was idle and waiting for a connection;
//! - a reload that cannot bind a new listener (its port is held by the test) says so on stderr and
//!   exits non-zero, and the running services keep serving;
//! - `stop`, `status` and `reload` still work when `main.cf` has an error: they say which file and
//!   line, `reload` refuses (non-zero) and the old configuration keeps serving, `stop` stops.
//!
//! The delivery side of reload (aliases, lookup tables, a session mid-DATA) is in `delivery.rs`,
//! next to the instance with local users it needs.
//!
//! They need the programs built (`cargo build --workspace --bins`) and `python3`; they pass as
//! root and as an unprivileged user.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_tests::instance::{show, wait_until, Instance};

const HELO: &str = "client.example.org";

/// One smtplib session from `source` (a loopback address); returns its step lines
/// (`STEP<tab>CODE<tab>TEXT`).
fn session(port: u16, source: &str, steps: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/smtp_session.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(HELO)
        .arg(source)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 (scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .expect("python's stdin")
        .write_all(steps.as_bytes())
        .expect("write the steps");
    let out = child.wait_with_output().expect("wait for python3");
    assert!(out.status.success(), "smtp_session.py: {}", show(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The reply line of `step` in a session's output.
fn step<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} step in {lines:#?}"))
}

/// A relay attempt from `source`: the RCPT reply line.
fn relay_attempt(port: u16, source: &str) -> String {
    let lines = session(
        port,
        source,
        "ehlo\nmail sender@example.org\nrcpt someone@elsewhere.example\nquit\n",
    );
    step(&lines, "rcpt").to_owned()
}

/// The pids of the instance's live smtpd processes, found through its master (pid file, `PPid`:
/// the spawner starts each daemon as the master's child).
fn smtpd_pids(inst: &Instance) -> Vec<i32> {
    let Ok(text) = fs::read_to_string(inst.queue_dir().join("pid/master.pid")) else {
        return Vec::new();
    };
    let Ok(master) = text.trim().parse::<i32>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    let ppid = |pid: i32| -> Option<i32> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if ppid(pid) != Some(master) {
            continue;
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !zombie && comm.trim() == "smtpd" {
            out.push(pid);
        }
    }
    out
}

fn narrowing_mynetworks_refuses_relay_on_the_next_connection_after_reload() {
    let inst = Instance::start_without("reload-mynetworks", &[], &["qmgr"]);
    // 127.0.0.2 is in 127.0.0.0/8: relaying is permitted.
    let before = relay_attempt(inst.port(), "127.0.0.2");
    assert!(
        before.starts_with("rcpt\t250\t"),
        "before the reload: {before}"
    );
    // The smtpd that served it waits, idle, for the next connection with the old mynetworks.
    assert!(
        wait_until(Duration::from_secs(10), || !smtpd_pids(&inst).is_empty()),
        "no smtpd process after the first session"
    );
    let old = smtpd_pids(&inst);

    inst.append("main.cf", "mynetworks = 127.0.0.1/32\n");
    let reload = inst.postern(&["reload"]);
    assert!(reload.status.success(), "reload: {}", show(&reload));

    let after = relay_attempt(inst.port(), "127.0.0.2");
    assert!(
        after.starts_with("rcpt\t554\t5.7.1 "),
        "after the reload a client outside mynetworks may still relay: {after}\n{}",
        show(&reload)
    );
    // The new setting is served by a new process; the old one is gone once idle.
    assert!(
        wait_until(Duration::from_secs(10), || smtpd_pids(&inst)
            .iter()
            .all(|p| !old.contains(p))),
        "the smtpd processes of before the reload ({old:?}) are still running: {:?}",
        smtpd_pids(&inst)
    );
    // 127.0.0.1 is still in mynetworks.
    let inside = relay_attempt(inst.port(), "127.0.0.1");
    assert!(
        inside.starts_with("rcpt\t250\t"),
        "from 127.0.0.1: {inside}"
    );
}

#[test]
fn narrowing_mynetworks() {
    narrowing_mynetworks_refuses_relay_on_the_next_connection_after_reload();
}

#[test]
fn a_reload_that_cannot_bind_a_new_listener_says_so_and_exits_non_zero() {
    let inst = Instance::start_without("reload-bind", &[], &["qmgr"]);
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = held.local_addr().expect("its address").port();
    inst.append(
        "master.cf",
        &format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    );
    let reload = inst.postern(&["reload"]);
    let stderr = String::from_utf8_lossy(&reload.stderr);
    assert_eq!(reload.status.code(), Some(1), "reload: {}", show(&reload));
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "reload does not name the listener it could not bind: {}",
        show(&reload)
    );
    // The service that was running keeps serving.
    let still = relay_attempt(inst.port(), "127.0.0.1");
    assert!(
        still.starts_with("rcpt\t250\t"),
        "after the failed reload: {still}"
    );
    drop(held);
}

/// The 1-based number of the last line of `path`.
fn last_line(path: &Path) -> usize {
    fs::read_to_string(path)
        .expect("read the file")
        .lines()
        .count()
}

#[test]
fn stop_status_and_reload_work_with_a_broken_main_cf() {
    let mut inst = Instance::start_without("reload-broken", &[], &["qmgr"]);
    // An smtpd process, started with the good main.cf, is idle when the file breaks (a process
    // started after that would fail to read it).
    let first = relay_attempt(inst.port(), "127.0.0.2");
    assert!(first.starts_with("rcpt\t250\t"), "before: {first}");
    let main_cf = inst.dir().join("main.cf");
    inst.append("main.cf", "mynetworks_typo = 127.0.0.1/32\n");
    let where_ = format!("main.cf:{}:", last_line(&main_cf));

    let status = inst.postern(&["status"]);
    assert!(status.status.success(), "status: {}", show(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("the mail system is running"),
        "status: {}",
        show(&status)
    );
    assert!(
        String::from_utf8_lossy(&status.stderr).contains(&where_),
        "status does not name {where_}: {}",
        show(&status)
    );

    let reload = inst.postern(&["reload"]);
    assert_eq!(reload.status.code(), Some(1), "reload: {}", show(&reload));
    assert!(
        String::from_utf8_lossy(&reload.stderr).contains(&where_),
        "reload does not name {where_}: {}",
        show(&reload)
    );
    // The running processes were not stopped and keep serving: 127.0.0.2 is still in mynetworks.
    let still = relay_attempt(inst.port(), "127.0.0.2");
    assert!(
        still.starts_with("rcpt\t250\t"),
        "after the refused reload: {still}"
    );

    let stop = inst.stop();
    assert!(stop.status.success(), "stop: {}", show(&stop));
    assert!(
        String::from_utf8_lossy(&stop.stderr).contains(&where_),
        "stop does not name {where_}: {}",
        show(&stop)
    );
    let after = inst.postern(&["status"]);
    assert_eq!(
        after.status.code(),
        Some(1),
        "status after stop: {}",
        show(&after)
    );
}
