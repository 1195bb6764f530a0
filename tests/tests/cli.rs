//! Whole-system tests of the `postern` command: `init` then `conf`, `check` on a fresh instance
//! and on a broken one, and the master's life cycle through `start`, `status`, `reload` and
//! `stop`, including a refused second start and a stale pid file. They run the built binaries
//! (`cargo build --workspace --bins` first) and pass as root and as an unprivileged user; each test
//! uses its own directory and free port and stops what it starts.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_postern-test-service"))
        .parent()
        .expect("the test service has a directory")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
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

/// A scratch directory other uids can traverse (as root the daemons run under their own uids).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("postern-cli-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "status {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

fn postern(dir: &Path, args: &[&str]) -> Run {
    let output: Output = Command::new(binary("postern"))
        .arg("-c")
        .arg(dir)
        .args(args)
        .output()
        .expect("run postern");
    Run {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// An instance made by `postern init`; dropping it stops a master it runs and removes the files.
struct Instance {
    dir: PathBuf,
    root: PathBuf,
    port: u16,
}

impl Instance {
    fn init(name: &str) -> Instance {
        let root = scratch(name);
        let dir = root.join("instance");
        let port = free_port();
        let run = postern(&dir, &["init", "--port", &port.to_string()]);
        assert_eq!(run.status, 0, "init failed:\n{}", run.show());
        Instance { dir, root, port }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("spool/pid/master.pid")
    }

    /// Points daemon_directory at a directory where the test service plays `smtpd` (next to the
    /// real master), and enables the smtpd listener that `init` wrote commented out.
    fn install_smtpd(&self) {
        let libexec = self.root.join("libexec");
        fs::create_dir_all(&libexec).unwrap();
        fs::set_permissions(&libexec, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(binary("postern-test-service"), libexec.join("smtpd")).unwrap();
        std::os::unix::fs::symlink(binary("postern-master"), libexec.join("postern-master"))
            .unwrap();
        let main_cf = fs::read_to_string(self.dir.join("main.cf")).unwrap();
        let main_cf: String = main_cf
            .lines()
            .map(|l| {
                if l.starts_with("daemon_directory =") {
                    format!("daemon_directory = {}\n", libexec.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        fs::write(
            self.dir.join("main.cf"),
            main_cf + "master_stop_timeout = 5s\n",
        )
        .unwrap();
        let listener = format!("127.0.0.1:{}", self.port);
        let master_cf = fs::read_to_string(self.dir.join("master.cf")).unwrap();
        let master_cf: String = master_cf
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(&listener) => format!("{rest}\n"),
                // Only the test service is installed here: every other service is left out.
                None if !l.is_empty() && !l.starts_with(&listener) => format!("#{l}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        assert!(
            master_cf.lines().any(|l| l.starts_with(&listener)),
            "{master_cf}"
        );
        fs::write(self.dir.join("master.cf"), master_cf).unwrap();
    }

    fn master_pid(&self) -> Option<i32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if postern(&self.dir, &["status"]).status == 0 {
            let _ = postern(&self.dir, &["stop"]);
        }
        if let Some(pid) = self.master_pid() {
            if process_exists(pid) && is_master(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn process_exists(pid: i32) -> bool {
    // A zombie is gone for our purposes: it holds no lock, socket or file.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn is_master(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().starts_with("postern-master"))
        .unwrap_or(false)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

#[test]
fn init_writes_an_instance_that_conf_reads_back() {
    let inst = Instance::init("init");
    let dir = inst.dir.display().to_string();

    let run = postern(&inst.dir, &["conf", "-n"]);
    assert_eq!(run.status, 0, "{}", run.show());
    for line in [
        format!("queue_directory = {dir}/spool"),
        format!("virtual_mailbox_base = {dir}/mail"),
        format!("maillog_file = {dir}/log/postern.log"),
        format!("virtual_mailbox_maps = texthash:{dir}/vmailbox"),
        format!(
            "daemon_directory = {}",
            bin_dir().canonicalize().unwrap().display()
        ),
        "mynetworks = 127.0.0.0/8 [::1]/128".to_string(),
        "inet_interfaces = 127.0.0.1".to_string(),
        "virtual_mailbox_domains = example.test".to_string(),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "missing {line:?}:\n{}",
            run.show()
        );
    }
    // -n prints only what main.cf sets: a default-only parameter is absent.
    assert!(!run.stdout.contains("message_size_limit"), "{}", run.show());
    let sorted = {
        let mut names: Vec<&str> = run
            .stdout
            .lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let before = names.clone();
        names.sort();
        names == before
    };
    assert!(sorted, "conf -n output is not sorted:\n{}", run.show());

    let ids = postern(
        &inst.dir,
        &["conf", "smtpd_user", "queue_user", "vmail_user"],
    );
    assert_eq!(ids.status, 0, "{}", ids.show());
    let values: Vec<&str> = ids
        .stdout
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    if is_root() {
        assert_eq!(
            values,
            ["61001:61001", "61002:61002", "61004:61004"],
            "{}",
            ids.show()
        );
    } else {
        let me = format!("{}:{}", nix::unistd::geteuid(), nix::unistd::getegid());
        assert_eq!(values, [me.as_str(); 3], "{}", ids.show());
    }

    let all = postern(&inst.dir, &["conf"]);
    assert_eq!(all.status, 0);
    assert!(
        all.stdout
            .lines()
            .any(|l| l == "message_size_limit = 10240000"),
        "{}",
        all.show()
    );

    let unknown = postern(&inst.dir, &["conf", "mynetworks", "no_such_parameter"]);
    assert_eq!(unknown.status, 1, "{}", unknown.show());
    assert_eq!(unknown.stdout, "mynetworks = 127.0.0.0/8 [::1]/128\n");
    assert_eq!(
        unknown.stderr,
        "postern: warning: no_such_parameter: unknown parameter\n"
    );

    assert_eq!(
        fs::read_to_string(inst.dir.join("vmailbox"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        ["user@example.test  example.test/user/"]
    );
    for sub in [
        "incoming", "active", "deferred", "hold", "corrupt", "maildrop", "pid",
    ] {
        assert!(inst.dir.join("spool").join(sub).is_dir(), "spool/{sub}");
    }

    let again = postern(&inst.dir, &["init"]);
    assert_eq!(again.status, 1, "{}", again.show());
    assert!(
        again
            .stderr
            .contains("main.cf: already exists; use --force"),
        "{}",
        again.show()
    );
    assert_eq!(postern(&inst.dir, &["init", "--force"]).status, 0);
}

#[test]
fn check_on_a_fresh_instance_denies_every_forbidden_action() {
    let inst = Instance::init("check");
    let run = postern(&inst.dir, &["check"]);
    assert_eq!(run.status, 0, "{}", run.show());
    assert!(!run.stdout.contains("ALLOWED"), "{}", run.show());
    assert!(!run.stdout.contains("FAILED"), "{}", run.show());
    for role in [
        "master", "smtpd", "cleanup", "qmgr", "smtp", "virtual", "local", "pickup", "bounce",
        "proxymap",
    ] {
        assert!(
            run.stdout.contains(&format!("\n  {role}:")),
            "no probes for {role}:\n{}",
            run.show()
        );
    }
    // proxymap's profile grants reading files beneath the passwd file's directory (smtpd and
    // local look accounts up through it): for it that probe is shown as granted by a named
    // rule, for every other role, local included, and the master it is denied. `execve` is
    // denied for every role: local's `|command` deliveries run in the command launcher, which
    // is no service of its own, and the master's daemons are started by its spawner. Reading
    // /etc/shadow and creating a file in /etc are denied for all: proxymap, whose rule covers
    // the directory, runs as root under a uid of its own that the file's permissions keep out
    // (unprivileged the invoking user cannot read it either); the master, which stays root, by
    // its landlock ruleset (before it confined itself, its probes could do all three).
    for (action, denied_for) in [
        ("open a path outside the rules", 9),
        ("open a secret file for reading", 10),
        ("create a file in a system directory", 10),
        ("execve a binary", 10),
        ("ptrace(PTRACE_TRACEME)", 10),
    ] {
        let denied = run
            .stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(action) && l.contains("denied ("))
            .count();
        assert_eq!(
            denied,
            denied_for,
            "{action} not denied for every role it should be:\n{}",
            run.show()
        );
        if action == "open a path outside the rules" {
            let proxymap = run
                .stdout
                .split("\n  proxymap:")
                .nth(2)
                .and_then(|s| s.lines().find(|l| l.trim_start().starts_with(action)))
                .unwrap_or_default();
            assert!(
                proxymap.contains("not denied: its profile allows reading /etc"),
                "proxymap's {action}: {proxymap:?}\n{}",
                run.show()
            );
        }
    }
    // The master's map line names the instance's own configuration directory.
    let master_paths = "  master: runs as unchanged; capabilities";
    let master_line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(master_paths))
        .unwrap_or_default();
    assert!(
        master_line.contains(&format!("paths {} (read-only)", inst.dir.display())),
        "{master_line:?}\n{}",
        run.show()
    );
    if is_root() {
        for (role, id) in [
            ("smtpd", 61001),
            ("cleanup", 61002),
            ("smtp", 61003),
            ("virtual", 61004),
        ] {
            let map_line = format!("  {role}: runs as {id}:{id};");
            assert!(
                run.stdout.contains(&map_line),
                "missing {map_line:?}:\n{}",
                run.show()
            );
        }
    } else {
        assert!(run.stdout.contains("dev mode"), "{}", run.show());
    }
}

#[test]
fn check_reports_a_broken_main_cf_with_file_line_and_column() {
    let inst = Instance::init("broken");
    let main_cf = inst.dir.join("main.cf");
    let mut f = fs::OpenOptions::new().append(true).open(&main_cf).unwrap();
    writeln!(f, "mynetwork = 10.0.0.0/8").unwrap();
    drop(f);
    let line = line_of(&fs::read_to_string(&main_cf).unwrap(), "mynetwork = 10");
    let run = postern(&inst.dir, &["check"]);
    assert_eq!(run.status, 1, "{}", run.show());
    let location = format!("{}:{line}:1:", main_cf.canonicalize().unwrap().display());
    assert!(
        run.stderr.contains(&location),
        "no {location:?}:\n{}",
        run.show()
    );
    assert!(
        run.stderr.contains("mynetworks"),
        "no suggestion:\n{}",
        run.show()
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let dir = std::env::temp_dir();
    let run = postern(&dir, &["frobnicate"]);
    assert_eq!(run.status, 2, "{}", run.show());
    assert!(
        run.stderr.contains("unknown command `frobnicate`"),
        "{}",
        run.show()
    );
    assert!(run.stderr.contains("usage: postern"), "{}", run.show());
    assert_eq!(postern(&dir, &["init", "--port", "0"]).status, 2);
    let help = postern(&dir, &["help"]);
    assert_eq!(help.status, 0);
    assert!(
        help.stdout.contains("conf [-n] [NAME...]"),
        "{}",
        help.show()
    );
}

#[test]
fn start_status_second_start_reload_stop() {
    let inst = Instance::init("lifecycle");
    inst.install_smtpd();

    let stopped = postern(&inst.dir, &["stop"]);
    assert_eq!(stopped.status, 1, "{}", stopped.show());
    assert!(
        stopped.stderr.contains("the mail system is not running"),
        "{}",
        stopped.show()
    );

    let started = postern(&inst.dir, &["start"]);
    assert_eq!(started.status, 0, "{}", started.show());
    let pid = inst.master_pid().expect("pid file after start");
    assert!(
        started
            .stderr
            .contains(&format!("the mail system is running: PID: {pid}")),
        "{}",
        started.show()
    );
    assert!(
        process_exists(pid) && is_master(pid),
        "PID {pid} is not a running master"
    );

    // The listener is bound: the service answers on the instance's port.
    let mut conn = TcpStream::connect(("127.0.0.1", inst.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"PID\r\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&conn).read_line(&mut answer).unwrap();
    assert!(
        answer.trim().parse::<u32>().is_ok(),
        "unexpected answer {answer:?}"
    );
    drop(conn);

    let status = postern(&inst.dir, &["status"]);
    assert_eq!(status.status, 0, "{}", status.show());
    assert!(
        status
            .stdout
            .contains(&format!("postern: the mail system is running: PID: {pid}")),
        "{}",
        status.show()
    );
    assert!(
        status.stdout.contains(&format!("127.0.0.1:{}", inst.port)),
        "{}",
        status.show()
    );

    let second = postern(&inst.dir, &["start"]);
    assert_eq!(second.status, 1, "{}", second.show());
    assert!(
        second
            .stderr
            .contains(&format!("the mail system is already running: PID: {pid}")),
        "{}",
        second.show()
    );

    let reload = postern(&inst.dir, &["reload"]);
    assert_eq!(reload.status, 0, "{}", reload.show());
    assert!(
        reload.stderr.contains("refreshing the mail system"),
        "{}",
        reload.show()
    );
    thread_sleep_until(|| postern(&inst.dir, &["status"]).status == 0);
    assert!(process_exists(pid), "the master exited on reload");

    let stop = postern(&inst.dir, &["stop"]);
    assert_eq!(stop.status, 0, "{}", stop.show());
    assert!(!process_exists(pid), "PID {pid} still exists after stop");
    assert!(
        TcpStream::connect(("127.0.0.1", inst.port)).is_err(),
        "listener still open"
    );

    let status = postern(&inst.dir, &["status"]);
    assert_eq!(status.status, 1, "{}", status.show());
    assert_eq!(
        status.stdout,
        "postern: the mail system is not running\n",
        "{}",
        status.show()
    );
}

#[test]
fn a_stale_pid_file_is_detected_and_replaced() {
    let inst = Instance::init("stale");
    inst.install_smtpd();
    // The pid of a process that has exited: nobody holds the pid file's lock.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    fs::write(inst.pid_file(), format!("{gone_pid}\n")).unwrap();

    let status = postern(&inst.dir, &["status"]);
    assert_eq!(status.status, 1, "{}", status.show());
    assert!(
        status.stdout.contains("not running (stale pid file"),
        "{}",
        status.show()
    );
    assert!(
        status.stdout.contains(&format!("names PID {gone_pid}")),
        "{}",
        status.show()
    );
    let stop = postern(&inst.dir, &["stop"]);
    assert_eq!(stop.status, 1, "{}", stop.show());

    let started = postern(&inst.dir, &["start"]);
    assert_eq!(started.status, 0, "{}", started.show());
    assert!(
        started.stderr.contains("stale pid file"),
        "{}",
        started.show()
    );
    let pid = inst.master_pid().unwrap();
    assert_ne!(pid, gone_pid as i32);
    assert_eq!(postern(&inst.dir, &["status"]).status, 0);
    assert_eq!(postern(&inst.dir, &["stop"]).status, 0);
}

#[test]
fn start_reports_the_masters_reason_when_it_cannot_start() {
    let inst = Instance::init("cannot");
    inst.install_smtpd();
    // Someone else holds the port: the master cannot bind its listener.
    let _taken = TcpListener::bind(("127.0.0.1", inst.port)).unwrap();
    let run = postern(&inst.dir, &["start"]);
    assert_eq!(run.status, 1, "{}", run.show());
    assert!(
        run.stderr
            .contains("postern: fatal: the mail system failed to start"),
        "{}",
        run.show()
    );
    assert!(
        run.stderr.contains(&inst.port.to_string()),
        "reason lacks the address:\n{}",
        run.show()
    );
    assert_eq!(postern(&inst.dir, &["status"]).status, 1);
}

fn thread_sleep_until(mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
