//! Whole-system tests of the master: a temporary instance (config dir, spool, a daemon_directory
//! of symlinks to the test service) run by the real `postern-master --foreground` on a free
//! loopback port, driven by real TCP clients. They pass as root and as an unprivileged user;
//! run unprivileged, the root-only tests (uid changes, capabilities) are
//! reported as ignored with the reason.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postern_tests::harness::{self, root_test, test};

const SMTPD_ID: u32 = 61801;
const QUEUE_ID: u32 = 61802;

/// The tests of this file (`harness = false`: a root-only test run by another user is reported
/// as ignored, see `postern_tests::harness`).
const TESTS: &[harness::Test] = &[
    test(
        "processes_start_on_demand_and_never_exceed_maxproc",
        processes_start_on_demand_and_never_exceed_maxproc,
    ),
    test(
        "max_use_and_max_idle_end_a_process_and_another_replaces_it",
        max_use_and_max_idle_end_a_process_and_another_replaces_it,
    ),
    test(
        "a_crashing_service_is_throttled",
        a_crashing_service_is_throttled,
    ),
    test(
        "connect_outside_the_access_matrix_is_refused_and_logged",
        connect_outside_the_access_matrix_is_refused_and_logged,
    ),
    test(
        "reload_with_a_changed_maxproc_keeps_open_connections",
        reload_with_a_changed_maxproc_keeps_open_connections,
    ),
    test(
        "a_reload_clears_the_throttle_of_a_crashing_service",
        a_reload_clears_the_throttle_of_a_crashing_service,
    ),
    test(
        "a_reload_reports_a_resident_service_that_would_not_start",
        a_reload_reports_a_resident_service_that_would_not_start,
    ),
    test(
        "stop_leaves_no_process_and_no_zombie",
        stop_leaves_no_process_and_no_zombie,
    ),
    test(
        "a_killed_master_leaves_no_daemon",
        a_killed_master_leaves_no_daemon,
    ),
    test(
        "daemons_are_sandboxed",
        daemons_are_sandboxed,
    ),
    test(
        "second_master_refuses_and_stale_pid_file_is_replaced",
        second_master_refuses_and_stale_pid_file_is_replaced,
    ),
    test(
        "a_daemon_that_lies_on_its_control_channel_is_killed_and_throttled",
        a_daemon_that_lies_on_its_control_channel_is_killed_and_throttled,
    ),
    test(
        "a_unix_service_with_a_wakeup_starts_at_boot_and_is_kept_running",
        a_unix_service_with_a_wakeup_starts_at_boot_and_is_kept_running,
    ),
    root_test(
        "daemons_run_as_their_ids_and_the_master_keeps_two_capabilities",
        "unprivileged (--dev), every daemon keeps the invoking uid and the master has no capability",
        daemons_run_as_their_ids_and_the_master_keeps_two_capabilities,
    ),
    test(
        "the_master_confines_itself_and_a_spawner_starts_the_daemons_as_its_children",
        the_master_confines_itself_and_a_spawner_starts_the_daemons_as_its_children,
    ),
    test(
        "a_reload_that_moves_what_the_confined_master_fixed_says_it_takes_a_restart",
        a_reload_that_moves_what_the_confined_master_fixed_says_it_takes_a_restart,
    ),
    test(
        "a_daemon_program_others_could_modify_is_not_executed",
        a_daemon_program_others_could_modify_is_not_executed,
    ),
    root_test(
        "a_daemon_whose_bounding_set_is_not_empty_never_gets_go",
        "unprivileged, a daemon cannot drop the bounding set it inherits, so the master cannot require an empty one",
        a_daemon_whose_bounding_set_is_not_empty_never_gets_go,
    ),
];

fn main() -> std::process::ExitCode {
    harness::run(TESTS)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn test_service() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_postern-test-service"))
}

fn master_binary() -> PathBuf {
    let path = test_service()
        .parent()
        .expect("the test service has a directory")
        .join("postern-master");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running test instance; dropping it kills the master and removes its files.
struct Instance {
    root: PathBuf,
    port: u16,
    master: Option<Child>,
    master_pid: i32,
    log: Arc<Mutex<String>>,
    /// Every daemon pid seen, for the "nothing left behind" checks.
    seen: BTreeSet<i32>,
}

fn write_mode(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

impl Instance {
    /// `services` is master.cf text where `{PORT}` is replaced by the instance's port.
    fn new(name: &str, services: &str, extra_main: &str) -> Instance {
        let root = std::env::temp_dir().join(format!(
            "postern-master-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = fs::remove_dir_all(&root);
        for dir in [
            "etc",
            "libexec",
            "spool/incoming",
            "spool/active",
            "spool/deferred",
            "spool/hold",
            "spool/corrupt",
            "spool/maildrop",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        {
            use std::os::unix::fs::PermissionsExt;
            for dir in ["", "etc", "libexec", "spool", "spool/incoming"] {
                fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        for role in ["smtpd", "cleanup", "qmgr", "bounce"] {
            std::os::unix::fs::symlink(test_service(), root.join("libexec").join(role)).unwrap();
        }
        let port = free_port();
        let main_cf = format!(
            "queue_directory = {root}/spool\n\
             daemon_directory = {root}/libexec\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             master_stop_timeout = 5s\n\
             service_throttle_time = 8s\n\
             smtpd_user = {SMTPD_ID}:{SMTPD_ID}\n\
             queue_user = {QUEUE_ID}:{QUEUE_ID}\n\
             {extra_main}\n",
            root = root.display()
        );
        write_mode(&root.join("etc/main.cf"), &main_cf);
        let inst = Instance {
            root,
            port,
            master: None,
            master_pid: 0,
            log: Arc::new(Mutex::new(String::new())),
            seen: BTreeSet::new(),
        };
        inst.write_master_cf(services);
        inst
    }

    fn write_master_cf(&self, services: &str) {
        let text = services.replace("{PORT}", &self.port.to_string());
        write_mode(&self.root.join("etc/master.cf"), &text);
    }

    fn config_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    fn pid_file(&self) -> PathBuf {
        self.root.join("spool/pid/master.pid")
    }

    fn start(&mut self) {
        let mut child = Command::new(master_binary())
            .arg("-c")
            .arg(self.config_dir())
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let pid = first
            .trim()
            .strip_prefix("ready pid=")
            .unwrap_or_else(|| {
                thread::sleep(Duration::from_millis(200));
                panic!("master did not say ready: {first:?}\nlog:\n{}", self.log())
            })
            .parse::<i32>()
            .unwrap();
        assert_eq!(pid as u32, child.id());
        self.master_pid = pid;
        self.master = Some(child);
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Live (non-zombie) children of the master.
    fn children(&mut self) -> Vec<i32> {
        let kids = children_of(self.master_pid);
        self.seen.extend(kids.iter().copied());
        kids
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.master_pid), sig).unwrap();
    }

    fn connect(&self) -> Client {
        Client::new(self.port)
    }

    /// SIGTERM and wait for the master to exit; returns its exit code.
    fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        let mut child = self.master.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "master did not stop\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("master log:\n{}", self.log());
        }
        if let Some(mut child) = self.master.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in &self.seen {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// `(ppid, state)` of a process, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(i32, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((_, state)) if state != 'Z' && state != 'X')
}

/// The daemons among `parent`'s live children: every child but the spawner, which is a fork
/// of the master (the same command line) and starts the daemons as the master's children.
fn children_of(parent: i32) -> Vec<i32> {
    live_children(parent, false)
}

/// `parent`'s live children that are (`forks == true`) or are not forks of it: the same command
/// line as the master is the spawner's mark.
fn live_children(parent: i32, forks: bool) -> Vec<i32> {
    let master_cmdline = fs::read(format!("/proc/{parent}/cmdline")).ok();
    let mut out: Vec<i32> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(stat(pid), Some((ppid, state)) if ppid == parent && state != 'Z'))
        .filter(|&pid| (fs::read(format!("/proc/{pid}/cmdline")).ok() == master_cmdline) == forks)
        .collect();
    out.sort_unstable();
    out
}

fn zombies_of(parent: i32) -> usize {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| matches!(stat(*pid), Some((ppid, 'Z')) if ppid == parent))
        .count()
}

fn status_field(pid: i32, field: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A line-protocol client of the test service.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.reader.read_line(&mut s).unwrap();
        s.trim_end().to_owned()
    }

    /// The reply line, or `None` if none comes within `wait`.
    fn try_line(&mut self, wait: Duration) -> Option<String> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut s = String::new();
        let r = self.reader.read_line(&mut s);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        match r {
            Ok(n) if n > 0 => Some(s.trim_end().to_owned()),
            _ => None,
        }
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    fn pid(&mut self) -> i32 {
        self.ask("PID").parse().unwrap()
    }

    fn quit(mut self) {
        let _ = self.ask("QUIT");
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

const SMTPD_ONLY: &str = "127.0.0.1:{PORT} inet n - n - 2 smtpd\n";

fn processes_start_on_demand_and_never_exceed_maxproc() {
    let mut inst = Instance::new("maxproc", SMTPD_ONLY, "");
    inst.start();
    thread::sleep(Duration::from_millis(300));
    assert!(
        inst.children().is_empty(),
        "no process before a client comes"
    );

    // Twice maxproc concurrent clients.
    let mut clients: Vec<Client> = (0..4).map(|_| inst.connect()).collect();
    for c in &mut clients {
        c.send("PID");
    }
    let mut max_seen = 0;
    let mut answered = Vec::new();
    for c in clients.iter_mut().take(2) {
        answered.push(c.line().parse::<i32>().unwrap());
        max_seen = max_seen.max(inst.children().len());
    }
    assert_ne!(answered[0], answered[1], "two processes serve two clients");
    // The other two wait: no third process.
    for c in clients.iter_mut().skip(2) {
        assert_eq!(c.try_line(Duration::from_millis(700)), None);
        max_seen = max_seen.max(inst.children().len());
    }
    assert_eq!(inst.children().len(), 2);
    let mut rest = clients.split_off(2);
    for c in clients {
        c.quit();
    }
    for c in &mut rest {
        let pid: i32 = c.line().parse().unwrap();
        assert!(
            answered.contains(&pid),
            "the same two processes serve the rest"
        );
        max_seen = max_seen.max(inst.children().len());
    }
    assert!(max_seen <= 2, "saw {max_seen} processes with maxproc 2");
    for c in rest {
        c.quit();
    }
    assert_eq!(inst.stop(), Some(0));
}

fn max_use_and_max_idle_end_a_process_and_another_replaces_it() {
    let services = "127.0.0.1:{PORT} inet n - n - 1 smtpd -o max_use=2 -o max_idle=2s\n";
    let mut inst = Instance::new("maxuse", services, "");
    inst.start();
    let mut c = inst.connect();
    let p1 = c.pid();
    c.quit();
    let mut c = inst.connect();
    assert_eq!(c.pid(), p1, "the idle process serves the second client");
    c.quit();
    assert!(
        wait_until(Duration::from_secs(5), || !alive(p1)),
        "process exits after max_use sessions"
    );
    assert!(inst.wait_log("max_use reached", Duration::from_secs(2)));
    let mut c = inst.connect();
    let p2 = c.pid();
    assert_ne!(p2, p1, "a new process replaces it on demand");
    c.quit();
    assert!(
        wait_until(Duration::from_secs(6), || !alive(p2)),
        "process exits after max_idle"
    );
    assert!(inst.wait_log("max_idle reached", Duration::from_secs(2)));
    let mut c = inst.connect();
    let p3 = c.pid();
    assert!(p3 != p1 && p3 != p2);
    c.quit();
    assert_eq!(zombies_of(inst.master_pid), 0);
    assert_eq!(inst.stop(), Some(0));
}

fn a_crashing_service_is_throttled() {
    let mut inst = Instance::new("crash", SMTPD_ONLY, "");
    inst.start();
    let mut c = inst.connect();
    let p1 = c.pid();
    c.send("CRASH");
    let needle = format!("throttled for 1 s after process {p1}");
    assert!(
        inst.wait_log(&needle, Duration::from_secs(5)),
        "no throttle line:\n{}",
        inst.log()
    );
    let log = inst.log();
    assert!(
        log.contains(&format!("pid {p1} killed by signal 6")),
        "{log}"
    );
    assert!(log.contains("warning: service 127.0.0.1:"), "{log}");
    // Served again once the back-off is over, and a second crash doubles it.
    let mut c = inst.connect();
    let p2 = c.pid();
    assert_ne!(p1, p2);
    c.send("CRASH");
    assert!(
        inst.wait_log(
            &format!("throttled for 2 s after process {p2}"),
            Duration::from_secs(5)
        ),
        "{}",
        inst.log()
    );
    // While throttled, no process starts: a client waits.
    let mut c = inst.connect();
    c.send("PID");
    assert_eq!(c.try_line(Duration::from_millis(800)), None);
    assert!(inst.children().is_empty());
    assert!(
        c.try_line(Duration::from_secs(5)).is_some(),
        "served after the back-off"
    );
    let status = fs::read_to_string(inst.root.join("spool/pid/master.status")).unwrap();
    assert!(status.starts_with("service type processes busy limit throttled-until\n"));
    c.quit();
    assert_eq!(inst.stop(), Some(0));
}

fn connect_outside_the_access_matrix_is_refused_and_logged() {
    let services = "127.0.0.1:{PORT} inet n - n - 2 smtpd\n\
                    cleanup unix n - n - 2 cleanup\n\
                    qmgr unix n - n - 1 qmgr\n";
    let mut inst = Instance::new("matrix", services, "");
    inst.start();
    let mut c = inst.connect();
    let smtpd = c.pid();
    assert_eq!(c.ask("CONNECT qmgr"), "REFUSED");
    assert!(inst.wait_log("refused Connect from smtpd", Duration::from_secs(2)));
    let log = inst.log();
    let line = log
        .lines()
        .find(|l| l.contains("refused Connect from smtpd"))
        .unwrap();
    assert!(
        line.contains("qmgr") && line.contains(&smtpd.to_string()),
        "{line}"
    );
    assert!(line.contains("not in the access matrix"), "{line}");
    assert_eq!(c.ask("CONNECT cleanup"), "OK", "smtpd → cleanup is allowed");
    assert_eq!(c.ask("CONNECT bounce"), "REFUSED");
    // The refused smtpd was not punished: it still serves.
    assert_eq!(c.pid(), smtpd);
    c.quit();
    assert_eq!(inst.stop(), Some(0));
}

fn reload_with_a_changed_maxproc_keeps_open_connections() {
    let services = "127.0.0.1:{PORT} inet n - n - 1 smtpd\n";
    let mut inst = Instance::new("reload", services, "");
    inst.start();
    let mut first = inst.connect();
    let p1 = first.pid();
    let mut second = inst.connect();
    second.send("PID");
    assert_eq!(
        second.try_line(Duration::from_millis(800)),
        None,
        "maxproc 1"
    );
    inst.write_master_cf("127.0.0.1:{PORT} inet n - n - 2 smtpd\n");
    inst.signal(Signal::SIGHUP);
    let p2: i32 = second.line().parse().unwrap();
    assert_ne!(p1, p2, "the raised limit starts a second process");
    assert_eq!(first.pid(), p1, "the open connection survived the reload");
    assert!(inst.log().contains("configuration reloaded"));
    first.quit();
    second.quit();
    assert_eq!(inst.stop(), Some(0));
}

/// A service throttled after crashes is restarted by a reload, so its throttle is cleared: the
/// next client is served at once, not after the back-off.
fn a_reload_clears_the_throttle_of_a_crashing_service() {
    let mut inst = Instance::new("reload-throttle", SMTPD_ONLY, "");
    inst.start();
    for delay in [1, 2] {
        let mut c = inst.connect();
        let pid = c.pid();
        c.send("CRASH");
        assert!(
            inst.wait_log(
                &format!("throttled for {delay} s after process {pid}"),
                Duration::from_secs(5)
            ),
            "{}",
            inst.log()
        );
        if delay == 1 {
            // Let the first back-off pass before the second crash.
            assert!(wait_until(Duration::from_secs(5), || {
                let text = fs::read_to_string(inst.root.join("spool/pid/master.status"))
                    .unwrap_or_default();
                text.lines().skip(1).all(|l| l.ends_with(" -"))
            }));
            thread::sleep(Duration::from_millis(100));
        }
    }
    // Throttled for 2 s now; the reload clears it.
    inst.signal(Signal::SIGHUP);
    assert!(
        inst.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        inst.log()
    );
    let mut c = inst.connect();
    c.send("PID");
    assert!(
        c.try_line(Duration::from_millis(800)).is_some(),
        "still throttled after the reload:\n{}",
        inst.log()
    );
    c.quit();
    assert_eq!(inst.stop(), Some(0));
}

/// A resident service added by a reload whose process is refused at `Ready` is named in the
/// reload's outcome file (what `postern reload` prints), and the reload settles without waiting
/// for it.
fn a_reload_reports_a_resident_service_that_would_not_start() {
    let mut inst = Instance::new("reload-fails", SMTPD_ONLY, "");
    inst.start();
    let outcome = inst.root.join("spool/pid/master.reload");
    let read = || fs::read_to_string(&outcome).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || read()
            .starts_with(&format!("master {} generation 0\n", inst.master_pid))),
        "outcome at start-up: {:?}",
        read()
    );
    inst.write_master_cf(&format!("{SMTPD_ONLY}liar-ready unix n - n 60 1 qmgr\n"));
    inst.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || read()
            .contains(" generation 1\n")),
        "no outcome of the reload: {:?}\n{}",
        read(),
        inst.log()
    );
    let text = read();
    assert!(
        text.lines()
            .any(|l| l.starts_with("error service liar-ready/unix: a new process would not start")),
        "{text}"
    );
    assert_eq!(inst.stop(), Some(0));
}

fn stop_leaves_no_process_and_no_zombie() {
    let services = "127.0.0.1:{PORT} inet n - n - 2 smtpd\ncleanup unix n - n - 2 cleanup\n";
    let mut inst = Instance::new("stop", services, "");
    inst.start();
    let mut c = inst.connect();
    assert_eq!(c.ask("CONNECT cleanup"), "OK");
    let mut idle = inst.connect();
    idle.pid();
    idle.quit();
    let kids = inst.children();
    assert!(kids.len() >= 2, "smtpd and cleanup run: {kids:?}");
    let master = inst.master_pid;
    inst.signal(Signal::SIGTERM);
    // The busy smtpd finishes its session: the client ends it.
    thread::sleep(Duration::from_millis(200));
    c.quit();
    assert_eq!(inst.stop_wait(), Some(0));
    for pid in &kids {
        assert!(!alive(*pid), "process {pid} outlived the master");
    }
    assert!(children_of(master).is_empty());
    assert!(!inst.pid_file().exists(), "pid file removed");
}

impl Instance {
    /// Waits for a master already signalled.
    fn stop_wait(&mut self) -> Option<i32> {
        let mut child = self.master.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "master did not stop\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn a_killed_master_leaves_no_daemon() {
    let services = "127.0.0.1:{PORT} inet n - n - 2 smtpd\ncleanup unix n - n - 2 cleanup\n";
    let mut inst = Instance::new("pdeathsig", services, "");
    inst.start();
    let mut c = inst.connect();
    assert_eq!(c.ask("CONNECT cleanup"), "OK");
    let kids = inst.children();
    assert!(kids.len() >= 2, "{kids:?}");
    inst.signal(Signal::SIGKILL);
    let _ = inst.master.take().map(|mut m| m.wait());
    assert!(
        wait_until(Duration::from_secs(5), || kids.iter().all(|p| !alive(*p))),
        "daemons survived a killed master"
    );
    drop(c);
}

/// An instance with smtpd (inet) and cleanup running and idle, and their pids: a client asked
/// smtpd for a cleanup channel and checked smtpd's own view of its sandbox (through its
/// pre-opened status file) before it left.
fn sandboxed_pair(name: &str) -> (Instance, i32, i32) {
    let services = "127.0.0.1:{PORT} inet n - n - 2 smtpd\ncleanup unix n - n - 2 cleanup\n";
    let mut inst = Instance::new(name, services, "");
    inst.start();
    let mut c = inst.connect();
    let smtpd = c.pid();
    assert_eq!(c.ask("CONNECT cleanup"), "OK");
    let cleanup = *inst
        .children()
        .iter()
        .find(|p| **p != smtpd)
        .expect("a cleanup process");
    // The daemon's own view agrees with the kernel's.
    c.send("STATUS");
    let mut own = String::new();
    loop {
        let line = c.line();
        if line == "." {
            break;
        }
        own.push_str(&line);
        own.push('\n');
    }
    assert!(own.contains("Seccomp:\t2"), "{own}");
    assert!(own.contains("NoNewPrivs:\t1"), "{own}");
    // Between sessions a daemon holds only what the master gave it.
    c.quit();
    thread::sleep(Duration::from_millis(300));
    (inst, smtpd, cleanup)
}

fn daemons_are_sandboxed() {
    let (mut inst, smtpd, cleanup) = sandboxed_pair("sandboxed");
    for pid in [smtpd, cleanup] {
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "pid {pid}");
        assert_eq!(status_field(pid, "Seccomp:"), "2", "pid {pid}");
        assert_eq!(
            status_field(pid, "CapEff:"),
            "0000000000000000",
            "pid {pid}"
        );
        assert_eq!(
            status_field(pid, "CapPrm:"),
            "0000000000000000",
            "pid {pid}"
        );
    }
    if !is_root() {
        // --dev: every daemon keeps the invoking uid (as root, the next test checks the ids).
        let me = nix::unistd::getuid().as_raw();
        let ids = format!("{me}\t{me}\t{me}\t{me}");
        assert_eq!(status_field(smtpd, "Uid:"), ids);
        assert_eq!(status_field(cleanup, "Uid:"), ids);
        assert!(inst.log().contains("not running as root"), "{}", inst.log());
    }
    assert_eq!(inst.stop(), Some(0));
}

/// The spawner: the master's one child that is not a daemon (a fork of the master).
fn spawner_of(master: i32) -> Vec<i32> {
    live_children(master, true)
}

/// Before this change the master ran with no landlock and no seccomp filter (`Seccomp: 0`,
/// `NoNewPrivs: 0`) and started the daemons itself.
fn the_master_confines_itself_and_a_spawner_starts_the_daemons_as_its_children() {
    let mut inst = Instance::new("confined", SMTPD_ONLY, "");
    inst.start();
    let master = inst.master_pid;
    assert_eq!(status_field(master, "NoNewPrivs:"), "1");
    assert_eq!(status_field(master, "Seccomp:"), "2");
    let spawner = spawner_of(master);
    assert_eq!(spawner.len(), 1, "one spawner: {spawner:?}");
    let spawner = spawner[0];
    // A daemon is the master's child although the spawner started it.
    let mut c = inst.connect();
    let smtpd = c.pid();
    assert_eq!(stat(smtpd).map(|(ppid, _)| ppid), Some(master));
    assert!(inst.children().contains(&smtpd));
    assert!(
        inst.log().contains("confined: capabilities"),
        "{}",
        inst.log()
    );
    if is_root() {
        // Nothing effective or permitted; in the bounding set what a daemon exec'd as root
        // may keep: CAP_CHOWN 0, CAP_SETGID 6, CAP_SETUID 7, CAP_SETPCAP 8.
        assert_eq!(status_field(spawner, "CapEff:"), "0000000000000000");
        assert_eq!(status_field(spawner, "CapPrm:"), "0000000000000000");
        assert_eq!(
            status_field(spawner, "CapBnd:"),
            format!("{:016x}", 1u64 | (1 << 6) | (1 << 7) | (1 << 8))
        );
    }
    // Unprivileged (--dev) the spawner has no capability to drop: the sets above are root's.
    c.quit();
    assert_eq!(inst.stop(), Some(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(spawner) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(spawner), "the spawner {spawner} outlived its master");
}

/// The confined master cannot reach a new daemon_directory or queue_directory: a reload says
/// that this takes a restart and keeps serving with the old ones.
fn a_reload_that_moves_what_the_confined_master_fixed_says_it_takes_a_restart() {
    let mut inst = Instance::new("reload-restart", SMTPD_ONLY, "");
    inst.start();
    let main_cf = inst.config_dir().join("main.cf");
    let text = fs::read_to_string(&main_cf).unwrap();
    let moved = text.replace("/libexec\n", "/libexec-new\n");
    assert_ne!(text, moved);
    write_mode(&main_cf, &moved);
    inst.signal(Signal::SIGHUP);
    assert!(
        inst.wait_log(
            "reload: daemon_directory changed from",
            Duration::from_secs(5)
        ),
        "{}",
        inst.log()
    );
    assert!(
        inst.log().contains("this takes a restart"),
        "{}",
        inst.log()
    );
    let mut c = inst.connect();
    assert!(c.pid() > 0, "still served from the old daemon_directory");
    c.quit();
    assert_eq!(inst.stop(), Some(0));
}

/// Before this change the master executed whatever file daemon_directory held: a program
/// that group or others could write, or (as root) one owned by another user, was run as root.
fn a_daemon_program_others_could_modify_is_not_executed() {
    use std::os::unix::fs::PermissionsExt;
    let mut inst = Instance::new("unsafe-program", SMTPD_ONLY, "service_throttle_time = 1s");
    let program = inst.root.join("libexec/smtpd");
    fs::remove_file(&program).unwrap();
    fs::copy(test_service(), &program).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o775)).unwrap();
    inst.start();
    let mut c = inst.connect();
    c.send("PID");
    assert_eq!(
        c.try_line(Duration::from_millis(800)),
        None,
        "a group-writable program served"
    );
    let refusal = format!(
        "{}: writable by group or others (mode 0775): refusing to execute it",
        program.display()
    );
    assert!(
        inst.wait_log(&refusal, Duration::from_secs(5)),
        "{}",
        inst.log()
    );
    assert!(inst.children().is_empty());
    drop(c);

    if is_root() {
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&program, Some(65534), None).unwrap();
        let refusal = format!(
            "{}: owned by uid 65534, not by root: refusing to execute it",
            program.display()
        );
        let mut c = inst.connect();
        c.send("PID");
        assert!(
            inst.wait_log(&refusal, Duration::from_secs(5)),
            "{}",
            inst.log()
        );
        assert!(inst.children().is_empty());
        drop(c);
        std::os::unix::fs::chown(&program, Some(0), None).unwrap();
    } else {
        // Unprivileged, a program owned by another user cannot be made: root's case only.
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Once the file is safe again, the service runs (after its back-off).
    let mut c = inst.connect();
    c.send("PID");
    assert!(
        c.try_line(Duration::from_secs(15)).is_some(),
        "{}",
        inst.log()
    );
    c.quit();
    assert_eq!(inst.stop(), Some(0));
}

fn daemons_run_as_their_ids_and_the_master_keeps_two_capabilities() {
    let (mut inst, smtpd, cleanup) = sandboxed_pair("identities");
    for (pid, id) in [(smtpd, SMTPD_ID), (cleanup, QUEUE_ID)] {
        let ids = format!("{id}\t{id}\t{id}\t{id}");
        assert_eq!(status_field(pid, "Uid:"), ids, "pid {pid}");
        assert_eq!(status_field(pid, "Gid:"), ids, "pid {pid}");
        assert_eq!(status_field(pid, "CapBnd:"), "0000000000000000");
    }
    // The master keeps CAP_KILL 5 and CAP_NET_BIND_SERVICE 10, in every set; it changes no
    // ids and starts no program (its spawner does).
    let two = format!("{:016x}", (1u64 << 5) | (1 << 10));
    assert_eq!(status_field(inst.master_pid, "CapEff:"), two);
    assert_eq!(status_field(inst.master_pid, "CapPrm:"), two);
    assert_eq!(status_field(inst.master_pid, "CapInh:"), "0000000000000000");
    assert_eq!(status_field(inst.master_pid, "CapAmb:"), "0000000000000000");
    assert_eq!(status_field(inst.master_pid, "CapBnd:"), two);
    assert_eq!(inst.stop(), Some(0));
}

fn second_master_refuses_and_stale_pid_file_is_replaced() {
    let mut inst = Instance::new("pidfile", SMTPD_ONLY, "");
    fs::create_dir_all(inst.root.join("spool/pid")).unwrap();
    fs::write(inst.pid_file(), "999999\n").unwrap();
    inst.start();
    assert!(
        inst.wait_log("stale pid file", Duration::from_secs(2)),
        "{}",
        inst.log()
    );
    let out = Command::new(master_binary())
        .arg("-c")
        .arg(inst.config_dir())
        .arg("--foreground")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the mail system is already running: PID: {}",
            inst.master_pid
        )),
        "{err}"
    );
    let mut pid = String::new();
    fs::File::open(inst.pid_file())
        .unwrap()
        .read_to_string(&mut pid)
        .unwrap();
    assert_eq!(pid.trim(), inst.master_pid.to_string());
    assert_eq!(inst.stop(), Some(0));
}

fn a_daemon_that_lies_on_its_control_channel_is_killed_and_throttled() {
    let services = "127.0.0.1:{PORT} inet n - n - 2 smtpd\n\
                    liar-busy unix n - n - 1 cleanup\n\
                    liar-ready unix n - n - 1 cleanup\n";
    let mut inst = Instance::new("liar", services, "");
    inst.start();
    // Busy before Ready: out of state.
    let mut c = inst.connect();
    c.send("CONNECT liar-busy");
    assert!(
        inst.wait_log(
            "protocol violation (Busy): Busy is not allowed before Ready",
            Duration::from_secs(5)
        ),
        "{}",
        inst.log()
    );
    assert!(inst.wait_log(
        "service liar-busy/unix throttled for 1 s",
        Duration::from_secs(2)
    ));
    // A perfect Ready report from a process that applied no sandbox: the kernel disagrees.
    let mut c2 = inst.connect();
    c2.send("CONNECT liar-ready");
    assert!(
        inst.wait_log("kernel says Seccomp Some(0)", Duration::from_secs(5)),
        "{}",
        inst.log()
    );
    let log = inst.log();
    let line = log
        .lines()
        .find(|l| l.contains("kernel says Seccomp"))
        .unwrap();
    assert!(
        line.contains("liar-ready") && line.contains("killed"),
        "{line}"
    );
    assert!(line.contains("NoNewPrivs"), "{line}");
    assert!(inst.wait_log("service liar-ready/unix throttled", Duration::from_secs(2)));
    drop(c);
    drop(c2);
    assert_eq!(inst.stop(), Some(0));
}

fn a_daemon_whose_bounding_set_is_not_empty_never_gets_go() {
    let services = "127.0.0.1:{PORT} inet n - n - 2 smtpd\n\
                    liar-bounding unix n - n - 1 cleanup\n";
    let mut inst = Instance::new("bounding", services, "");
    inst.start();
    let mut c = inst.connect();
    c.send("CONNECT liar-bounding");
    // Its report claims an empty bounding set; the kernel shows the one it was exec'd with,
    // the spawner's (CAP_CHOWN 0, CAP_SETGID 6, CAP_SETUID 7, CAP_SETPCAP 8).
    let bounding = 1u64 | (1 << 6) | (1 << 7) | (1 << 8);
    let needle = format!("kernel says CapBnd {bounding:#x}, profile keeps 0x0");
    assert!(
        inst.wait_log(&needle, Duration::from_secs(5)),
        "{}",
        inst.log()
    );
    let log = inst.log();
    let line = log.lines().find(|l| l.contains(&needle)).unwrap();
    assert!(
        line.contains("liar-bounding") && line.contains("protocol violation (Ready)"),
        "{line}"
    );
    assert!(line.contains("killed"), "{line}");
    // Everything else was in force: the bounding set is the only shortfall.
    assert!(
        !line.contains("CapEff") && !line.contains("Seccomp"),
        "{line}"
    );
    assert!(inst.wait_log(
        "service liar-bounding/unix throttled",
        Duration::from_secs(2)
    ));
    // The client's channel never reached a process: its Connect was granted, but the ping
    // through it is not answered while the service is throttled.
    assert!(c.try_line(Duration::from_millis(500)).is_none());
    assert!(
        !inst.log().contains("liar-bounding got Go"),
        "{}",
        inst.log()
    );
    drop(c);
    assert_eq!(inst.stop(), Some(0));
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn a_unix_service_with_a_wakeup_starts_at_boot_and_is_kept_running() {
    let services = "127.0.0.1:{PORT} inet n - n - 1 smtpd\n\
                    cleanup unix n - n - 2 cleanup\n\
                    qmgr unix n - n 300 1 qmgr\n";
    let mut inst = Instance::new("wakeup", services, "");
    inst.start();
    let resident = |inst: &mut Instance| -> Vec<i32> {
        inst.children()
            .into_iter()
            .filter(|p| comm(*p) == "qmgr")
            .collect()
    };
    let mut first = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            first = resident(&mut inst);
            first.len() == 1
        }),
        "qmgr started at boot without a request\n{}",
        inst.log()
    );
    assert!(
        !inst.children().iter().any(|p| comm(*p) == "cleanup"),
        "a service without a wakeup still starts on demand only"
    );
    kill(Pid::from_raw(first[0]), Signal::SIGKILL).unwrap();
    let mut second = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            second = resident(&mut inst);
            second.len() == 1 && second != first
        }),
        "qmgr restarted after it was killed\n{}",
        inst.log()
    );
    assert!(inst.log().contains("throttled"), "{}", inst.log());
    // It is still one process: the master never starts a second while one runs.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(resident(&mut inst), second);
    assert_eq!(inst.stop(), Some(0));
    assert!(!alive(second[0]));
}
