//! Proves that `sandbox::apply` enforces, not just configures.
//!
//! Every scenario runs in a fresh child process (this binary re-executed with
//! `--scenario NAME`), which applies a profile in its single-threaded `main`
//! and then tries what the profile must forbid and what it must allow; the
//! parent checks the child's exit status. Run as root, the identity and
//! capability scenarios run too, and every other scenario runs a second time
//! as an unprivileged uid (from a world-readable copy of this binary). Run as
//! a non-root user (`runuser -u nobody -- BINARY`), the root-only scenarios
//! are reported as ignored and the rest run as that user.
//!
//! Output follows libtest (`test NAME ... ok`, `test result: ...`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use sandbox::syscalls::{self, ArgCheck, Syscall};
use sandbox::{
    Capability, Enforcement, Error, FsAccess, FsRule, Identity, LandlockStatus, Profile, Report,
    Step, TcpPorts, Violation,
};

/// The ids the root scenarios switch to; no passwd entry needed.
const TEST_UID: u32 = 61999;
const TEST_GID: u32 = 61999;
const TEST_GROUP: u32 = 61998;
/// The unprivileged uid the root run uses to repeat the other scenarios.
const UNPRIVILEGED_UID: u32 = 61998;
/// A child that takes longer than this is killed and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

type Outcome = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

#[derive(Clone, Copy, PartialEq)]
enum Who {
    /// Needs root (changes ids and capabilities).
    Root,
    /// Runs as whoever runs the binary; as root, also as an unprivileged uid.
    Anyone,
    /// Proves `--dev` behaviour; as root, runs only as the unprivileged uid.
    Unprivileged,
}

#[derive(Clone, Copy, PartialEq)]
enum Expect {
    Success,
    KilledBy(i32),
}

struct Scenario {
    name: &'static str,
    who: Who,
    expect: Expect,
    run: fn(&Path) -> Outcome,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "identity_and_every_capability_dropped",
        who: Who::Root,
        expect: Expect::Success,
        run: identity_and_every_capability_dropped,
    },
    Scenario {
        name: "setuid_setgid_kept_for_local",
        who: Who::Root,
        expect: Expect::Success,
        run: setuid_setgid_kept_for_local,
    },
    Scenario {
        name: "landlock_paths",
        who: Who::Anyone,
        expect: Expect::Success,
        run: landlock_paths,
    },
    Scenario {
        name: "landlock_tcp_ports_and_scopes",
        who: Who::Anyone,
        expect: Expect::Success,
        run: landlock_tcp_ports_and_scopes,
    },
    Scenario {
        name: "seccomp_denies_with_eperm_by_default",
        who: Who::Anyone,
        expect: Expect::Success,
        run: seccomp_denies_with_eperm_by_default,
    },
    Scenario {
        name: "threads_work_through_the_clone3_fallback",
        who: Who::Anyone,
        expect: Expect::Success,
        run: threads_work_through_the_clone3_fallback,
    },
    Scenario {
        name: "kill_process_mode_dies_of_sigsys",
        who: Who::Anyone,
        expect: Expect::KilledBy(libc::SIGSYS),
        run: kill_process_mode_dies_of_sigsys,
    },
    Scenario {
        name: "abort_is_seen_as_sigabrt",
        who: Who::Anyone,
        expect: Expect::KilledBy(libc::SIGABRT),
        run: abort_is_seen_as_sigabrt,
    },
    Scenario {
        name: "accept_tcp_group_serves_a_connection",
        who: Who::Anyone,
        expect: Expect::Success,
        run: accept_tcp_group_serves_a_connection,
    },
    Scenario {
        name: "required_refuses_a_missing_path",
        who: Who::Anyone,
        expect: Expect::Success,
        run: required_refuses_a_missing_path,
    },
    Scenario {
        name: "best_effort_records_a_missing_path",
        who: Who::Anyone,
        expect: Expect::Success,
        run: best_effort_records_a_missing_path,
    },
    Scenario {
        name: "required_refuses_a_second_thread",
        who: Who::Anyone,
        expect: Expect::Success,
        run: required_refuses_a_second_thread,
    },
    Scenario {
        name: "best_effort_filters_every_thread",
        who: Who::Anyone,
        expect: Expect::Success,
        run: best_effort_filters_every_thread,
    },
    Scenario {
        name: "role_filters_refuse_exec_and_executable_memory",
        who: Who::Anyone,
        expect: Expect::Success,
        run: role_filters_refuse_exec_and_executable_memory,
    },
    Scenario {
        name: "probes_are_all_denied",
        who: Who::Anyone,
        expect: Expect::Success,
        run: probes_are_all_denied,
    },
    Scenario {
        name: "spawn_places_fds_and_kills_orphans",
        who: Who::Anyone,
        expect: Expect::Success,
        run: spawn_places_fds_and_kills_orphans,
    },
    Scenario {
        name: "dev_mode_is_reported",
        who: Who::Unprivileged,
        expect: Expect::Success,
        run: dev_mode_is_reported,
    },
];

// ---------------------------------------------------------------- helpers

fn expect_errno<T>(what: &str, result: io::Result<T>, errno: i32) -> Outcome {
    match result {
        Ok(_) => Err(format!("{what}: succeeded, expected errno {errno}")),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(format!("{what}: {e}, expected errno {errno}")),
    }
}

fn expect_ok<T>(what: &str, result: io::Result<T>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

fn nix_io<T>(result: nix::Result<T>) -> io::Result<T> {
    result.map_err(io::Error::from)
}

fn applied(profile: &Profile) -> Result<Report, String> {
    let report = sandbox::apply(profile).map_err(|e| format!("apply: {e}"))?;
    println!("report: {report}");
    Ok(report)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Open before apply, read after: the kernel regenerates the text on every
/// read from offset 0, and the open descriptor needs no landlock rule.
struct ProcStatus(File);

impl ProcStatus {
    fn open() -> Result<Self, String> {
        expect_ok("open /proc/self/status", File::open("/proc/self/status")).map(ProcStatus)
    }

    fn fields(&mut self) -> Result<HashMap<String, String>, String> {
        let mut text = String::new();
        expect_ok("seek status", self.0.seek(SeekFrom::Start(0)))?;
        expect_ok("read status", self.0.read_to_string(&mut text))?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect())
    }
}

fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    fields
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("/proc/self/status has no {name}"))
}

/// Entries for the credential syscalls, so that EPERM comes from the
/// kernel's credential check and not from the filter.
const CREDENTIAL_CALLS: &[Syscall] = &[
    Syscall::new(
        "SYS_setuid",
        libc::SYS_setuid,
        "test: the kernel must refuse",
    ),
    Syscall::new(
        "SYS_setresuid",
        libc::SYS_setresuid,
        "test: the kernel must refuse",
    ),
    Syscall::new(
        "SYS_setresgid",
        libc::SYS_setresgid,
        "test: the kernel must refuse",
    ),
    Syscall::new(
        "SYS_setgroups",
        libc::SYS_setgroups,
        "test: the kernel must refuse",
    ),
    Syscall::new(
        "SYS_getresuid",
        libc::SYS_getresuid,
        "test: read back the ids",
    ),
    Syscall::new(
        "SYS_prctl",
        libc::SYS_prctl,
        "test: read back keepcaps and the death signal",
    )
    .when(&[
        &[ArgCheck::eq(0, libc::PR_GET_PDEATHSIG as u64)],
        &[ArgCheck::eq(0, libc::PR_GET_KEEPCAPS as u64)],
    ]),
];

fn test_identity() -> Identity {
    Identity {
        uid: TEST_UID,
        gid: TEST_GID,
        groups: vec![TEST_GROUP],
    }
}

fn socket_unix() -> io::Result<()> {
    nix_io(nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    ))
    .map(drop)
}

fn socket_inet() -> io::Result<()> {
    nix_io(nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    ))
    .map(drop)
}

fn errno_detail_is(result: &sandbox::ProbeResult, name: &str) -> bool {
    result.detail.starts_with(&format!("{name}:"))
}

// -------------------------------------------------------------- scenarios

fn identity_and_every_capability_dropped(_dir: &Path) -> Outcome {
    let mut status = ProcStatus::open()?;
    nix_io(nix::sys::prctl::set_pdeathsig(
        nix::sys::signal::Signal::SIGKILL,
    ))
    .map_err(|e| format!("set_pdeathsig: {e}"))?;
    let profile = Profile {
        identity: Some(test_identity()),
        syscalls: syscalls::set(&[syscalls::BASE, CREDENTIAL_CALLS]),
        ..Profile::new("identity-test")
    };
    let report = applied(&profile)?;
    ensure!(!report.dev_mode, "dev_mode as root");
    ensure!(
        report.uid == TEST_UID && report.gid == TEST_GID,
        "report ids"
    );
    ensure!(
        report.groups == vec![TEST_GROUP],
        "report groups {:?}",
        report.groups
    );
    ensure!(
        report.caps == sandbox::CapSets::default(),
        "report caps {:?}",
        report.caps
    );
    ensure!(
        report.shortfalls.is_empty(),
        "shortfalls {:?}",
        report.shortfalls
    );
    ensure!(
        report.landlock == LandlockStatus::FullyEnforced,
        "landlock {}",
        report.landlock
    );

    let f = status.fields()?;
    let uid = TEST_UID.to_string();
    let gid = TEST_GID.to_string();
    ensure!(
        field(&f, "Uid")? == [uid.as_str(); 4].join(" "),
        "Uid: {}",
        field(&f, "Uid")?
    );
    ensure!(
        field(&f, "Gid")? == [gid.as_str(); 4].join(" "),
        "Gid: {}",
        field(&f, "Gid")?
    );
    ensure!(
        field(&f, "Groups")? == TEST_GROUP.to_string(),
        "Groups: {}",
        field(&f, "Groups")?
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        ensure!(
            field(&f, set)? == "0000000000000000",
            "{set}: {}",
            field(&f, set)?
        );
    }
    ensure!(
        field(&f, "NoNewPrivs")? == "1",
        "NoNewPrivs: {}",
        field(&f, "NoNewPrivs")?
    );
    ensure!(
        field(&f, "Seccomp")? == "2",
        "Seccomp: {}",
        field(&f, "Seccomp")?
    );
    ensure!(
        field(&f, "Seccomp_filters")? == "2",
        "Seccomp_filters: {}",
        field(&f, "Seccomp_filters")?
    );

    let root_uid = nix::unistd::Uid::from_raw(0);
    let root_gid = nix::unistd::Gid::from_raw(0);
    expect_errno(
        "setuid(0)",
        nix_io(nix::unistd::setuid(root_uid)),
        libc::EPERM,
    )?;
    expect_errno(
        "setresuid(0,0,0)",
        nix_io(nix::unistd::setresuid(root_uid, root_uid, root_uid)),
        libc::EPERM,
    )?;
    expect_errno(
        "setresgid(0,0,0)",
        nix_io(nix::unistd::setresgid(root_gid, root_gid, root_gid)),
        libc::EPERM,
    )?;
    expect_errno(
        "setgroups([0])",
        nix_io(nix::unistd::setgroups(&[root_gid])),
        libc::EPERM,
    )?;
    let ids = expect_ok("getresuid", nix_io(nix::unistd::getresuid()))?;
    ensure!(
        ids.real.as_raw() == TEST_UID && ids.saved.as_raw() == TEST_UID,
        "ids moved"
    );
    let death = expect_ok("get_pdeathsig", nix_io(nix::sys::prctl::get_pdeathsig()))?;
    ensure!(
        death == Some(nix::sys::signal::Signal::SIGKILL),
        "the parent-death signal was not re-armed after the uid change: {death:?}"
    );
    Ok(())
}

fn setuid_setgid_kept_for_local(_dir: &Path) -> Outcome {
    let mut status = ProcStatus::open()?;
    let profile = Profile {
        identity: Some(test_identity()),
        keep_caps: vec![Capability::CAP_SETUID, Capability::CAP_SETGID],
        syscalls: syscalls::set(&[syscalls::BASE, CREDENTIAL_CALLS]),
        ..Profile::new("local")
    };
    let report = applied(&profile)?;
    ensure!(
        report.shortfalls.is_empty(),
        "shortfalls {:?}",
        report.shortfalls
    );
    let f = status.fields()?;
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        ensure!(
            field(&f, set)? == "00000000000000c0",
            "{set}: {}",
            field(&f, set)?
        );
    }
    for set in ["CapInh", "CapAmb"] {
        ensure!(
            field(&f, set)? == "0000000000000000",
            "{set}: {}",
            field(&f, set)?
        );
    }
    ensure!(
        field(&f, "Uid")?
            .split(' ')
            .all(|u| u == TEST_UID.to_string()),
        "Uid"
    );
    let keepcaps = expect_ok("get_keepcaps", nix_io(nix::sys::prctl::get_keepcaps()))?;
    ensure!(!keepcaps, "PR_SET_KEEPCAPS left on");
    // The kept capability works: become a recipient's uid, as local does.
    let recipient = nix::unistd::Uid::from_raw(TEST_UID + 1);
    expect_ok(
        "setresuid to a recipient with CAP_SETUID",
        nix_io(nix::unistd::setresuid(recipient, recipient, recipient)),
    )?;
    let ids = expect_ok("getresuid", nix_io(nix::unistd::getresuid()))?;
    ensure!(
        ids.effective == recipient,
        "uid after setresuid: {}",
        ids.effective
    );
    Ok(())
}

fn landlock_paths(dir: &Path) -> Outcome {
    let d = |name: &str| dir.join(name);
    for sub in ["outside", "ro", "rw", "a", "b"] {
        expect_ok("mkdir", fs::create_dir(d(sub)))?;
    }
    expect_ok("write", fs::write(d("outside/secret"), "secret"))?;
    expect_ok("write", fs::write(d("ro/file"), "read me"))?;
    expect_ok("write", fs::write(d("a/queued"), "message"))?;
    expect_ok("write", fs::write(d("rw/stays"), "no refer here"))?;
    let rule = |name: &str, access| FsRule {
        path: d(name),
        access,
        why: "test",
    };
    let profile = Profile {
        fs: vec![
            rule("ro", FsAccess::READ_ONLY),
            rule("rw", FsAccess::CREATE_REMOVE),
            rule("a", FsAccess::MOVE_ACROSS),
            rule("b", FsAccess::MOVE_ACROSS),
        ],
        syscalls: syscalls::set(&[
            syscalls::BASE,
            syscalls::FILES_WRITE,
            &[Syscall::new(
                "SYS_execve",
                libc::SYS_execve,
                "test: landlock must refuse",
            )],
        ]),
        ..Profile::new("landlock-test")
    };
    let report = applied(&profile)?;
    ensure!(
        report.landlock == LandlockStatus::FullyEnforced,
        "landlock {}",
        report.landlock
    );
    ensure!(
        report.landlock_abi >= 6,
        "landlock ABI {}",
        report.landlock_abi
    );

    expect_errno(
        "open outside/secret",
        File::open(d("outside/secret")),
        libc::EACCES,
    )?;
    expect_errno("list outside/", fs::read_dir(d("outside")), libc::EACCES)?;
    expect_errno("open /etc/passwd", File::open("/etc/passwd"), libc::EACCES)?;
    expect_errno(
        "create in the parent dir",
        File::create(d("new")),
        libc::EACCES,
    )?;

    let text = expect_ok("read ro/file", fs::read_to_string(d("ro/file")))?;
    ensure!(text == "read me", "ro/file read back {text:?}");
    expect_ok("list ro/", fs::read_dir(d("ro")))?;
    expect_errno("create in ro/", File::create(d("ro/new")), libc::EACCES)?;
    expect_errno(
        "open ro/file for writing",
        OpenOptions::new().write(true).open(d("ro/file")),
        libc::EACCES,
    )?;
    expect_errno(
        "remove ro/file",
        fs::remove_file(d("ro/file")),
        libc::EACCES,
    )?;

    expect_ok("create rw/new", fs::write(d("rw/new"), "queue file"))?;
    let text = expect_ok("read rw/new", fs::read_to_string(d("rw/new")))?;
    ensure!(text == "queue file", "rw/new read back {text:?}");
    expect_ok(
        "append rw/new",
        OpenOptions::new().append(true).open(d("rw/new")),
    )?;
    expect_ok("remove rw/new", fs::remove_file(d("rw/new")))?;
    expect_errno("mkdir in rw/", fs::create_dir(d("rw/sub")), libc::EACCES)?;

    expect_ok(
        "rename a/ -> b/ (REFER)",
        fs::rename(d("a/queued"), d("b/queued")),
    )?;
    let text = expect_ok("read b/queued", fs::read_to_string(d("b/queued")))?;
    ensure!(text == "message", "b/queued read back {text:?}");
    let targets = sandbox::ProbeTargets {
        exec_path: "/bin/true".into(),
        ..sandbox::ProbeTargets::default()
    };
    let exec = sandbox::probe::execve(&targets);
    ensure!(
        exec.denied && errno_detail_is(&exec, "EACCES"),
        "execve: {exec:?}"
    );
    // Without REFER on rw/, landlock refuses the cross-directory move (EXDEV).
    expect_errno(
        "rename rw/ -> b/",
        fs::rename(d("rw/stays"), d("b/stays")),
        libc::EXDEV,
    )?;
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let listener = expect_ok(
        "bind 127.0.0.1:0",
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)),
    )?;
    Ok(expect_ok("local_addr", listener.local_addr())?.port())
}

fn landlock_tcp_ports_and_scopes(dir: &Path) -> Outcome {
    let server = expect_ok("listen", TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
    let server_port = expect_ok("local_addr", server.local_addr())?.port();
    let bind_ok = free_port()?;
    let mut other = free_port()?;
    while other == bind_ok || other == server_port {
        other = free_port()?;
    }
    let name = format!("postern-sandbox-test-{}", std::process::id());
    let abstract_addr = expect_ok(
        "abstract name",
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
    )?;
    let _abstract = expect_ok("bind abstract", UnixListener::bind_addr(&abstract_addr))?;
    let parent = nix::unistd::getppid();
    let signal_parent_before = nix::sys::signal::kill(parent, None).is_ok();
    let _ = dir;

    let profile = Profile {
        tcp_bind: TcpPorts::Only(vec![bind_ok]),
        tcp_connect: TcpPorts::Only(vec![server_port]),
        syscalls: syscalls::set(&[
            syscalls::BASE,
            syscalls::CONNECT_TCP,
            &[
                Syscall::new("SYS_socket", libc::SYS_socket, "test: any family")
                    .widening("test: landlock, not seccomp, must refuse the other families"),
                Syscall::new("SYS_bind", libc::SYS_bind, "test: landlock must refuse"),
                Syscall::new(
                    "SYS_listen",
                    libc::SYS_listen,
                    "test: std binds and listens",
                ),
                Syscall::new("SYS_kill", libc::SYS_kill, "test: landlock must refuse"),
            ],
        ]),
        ..Profile::new("tcp-test")
    };
    let report = applied(&profile)?;
    ensure!(
        report.landlock == LandlockStatus::FullyEnforced,
        "landlock {}",
        report.landlock
    );

    let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    expect_errno(
        "bind a port outside the rules",
        TcpListener::bind(local(other)),
        libc::EACCES,
    )?;
    expect_ok("bind the allowed port", TcpListener::bind(local(bind_ok)))?;
    expect_ok(
        "connect to the allowed port",
        TcpStream::connect(local(server_port)),
    )?;
    expect_errno(
        "connect to a port outside the rules",
        TcpStream::connect(local(other)),
        libc::EACCES,
    )?;
    expect_errno(
        "connect to an abstract socket made outside the domain",
        UnixStream::connect_addr(&abstract_addr),
        libc::EPERM,
    )?;
    if signal_parent_before {
        expect_errno(
            "signal the parent, outside the domain",
            nix_io(nix::sys::signal::kill(parent, None)),
            libc::EPERM,
        )?;
    } else {
        println!(
            "note: the parent could not be signalled before apply; signal scope not proven here"
        );
    }
    Ok(())
}

fn seccomp_denies_with_eperm_by_default(_dir: &Path) -> Outcome {
    let mut status = ProcStatus::open()?;
    let profile = Profile::new("seccomp-test");
    ensure!(
        profile.on_violation == Violation::Errno,
        "the default is not EPERM"
    );
    let report = applied(&profile)?;
    ensure!(report.seccomp, "seccomp not installed");
    ensure!(
        report.syscall_count == profile.syscall_count(),
        "syscall count"
    );
    let f = status.fields()?;
    ensure!(
        field(&f, "Seccomp")? == "2",
        "Seccomp: {}",
        field(&f, "Seccomp")?
    );

    expect_errno("socket(AF_UNIX)", socket_unix(), libc::EPERM)?;
    expect_errno("socket(AF_INET)", socket_inet(), libc::EPERM)?;
    let targets = sandbox::ProbeTargets::default();
    let exec = sandbox::probe::execve(&targets);
    ensure!(
        exec.denied && errno_detail_is(&exec, "EPERM"),
        "execve: {exec:?}"
    );
    let ptrace = sandbox::probe::ptrace_traceme();
    ensure!(
        ptrace.denied && errno_detail_is(&ptrace, "EPERM"),
        "ptrace: {ptrace:?}"
    );
    expect_errno("open a file", File::open("/etc/hostname"), libc::EPERM)?;
    for (name, probe) in [
        ("clone3", sandbox::probe::clone3()),
        ("openat2", sandbox::probe::openat2()),
    ] {
        ensure!(
            probe.denied && errno_detail_is(&probe, "ENOSYS"),
            "{name}: {probe:?}"
        );
    }

    // What BASE allows keeps working.
    let big = vec![7u8; 64 << 20];
    ensure!(
        big.iter().map(|b| u64::from(*b)).sum::<u64>() == 7 * (64 << 20),
        "memory"
    );
    drop(big);
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    ensure!(start.elapsed() >= Duration::from_millis(5), "sleep");
    ensure!(nix::unistd::getpid().as_raw() > 0, "getpid");
    let mut out = io::stdout();
    expect_ok(
        "write stdout",
        writeln!(out, "still writing").and_then(|()| out.flush()),
    )?;
    let map: HashMap<u32, u32> = (0..100).map(|i| (i, i)).collect();
    ensure!(map.len() == 100, "hash map");
    Ok(())
}

fn threads_work_through_the_clone3_fallback(_dir: &Path) -> Outcome {
    let profile = Profile {
        syscalls: syscalls::set(&[syscalls::BASE, syscalls::THREADS]),
        ..Profile::new("thread-test")
    };
    applied(&profile)?;
    let clone3 = sandbox::probe::clone3();
    ensure!(errno_detail_is(&clone3, "ENOSYS"), "clone3: {clone3:?}");
    let answer = std::thread::spawn(|| 6 * 7)
        .join()
        .map_err(|_| "the thread panicked".to_owned())?;
    ensure!(answer == 42, "thread answered {answer}");
    // THREADS allows clone only with thread flags: a new process is refused.
    expect_errno(
        "spawn a process",
        Command::new("/bin/true").stdin(Stdio::null()).spawn(),
        libc::EPERM,
    )?;
    Ok(())
}

fn kill_process_mode_dies_of_sigsys(_dir: &Path) -> Outcome {
    let profile = Profile {
        on_violation: Violation::KillProcess,
        ..Profile::new("kill-test")
    };
    applied(&profile)?;
    let clone3 = sandbox::probe::clone3();
    ensure!(
        errno_detail_is(&clone3, "ENOSYS"),
        "clone3 in kill mode: {clone3:?}"
    );
    let mut out = io::stdout();
    expect_ok(
        "write",
        writeln!(out, "applied; now calling socket()").and_then(|()| out.flush()),
    )?;
    let _ = socket_inet();
    Err("socket() returned in KillProcess mode".into())
}

fn abort_is_seen_as_sigabrt(_dir: &Path) -> Outcome {
    applied(&Profile::new("abort-test"))?;
    // What `panic = "abort"` does: the master must see SIGABRT, not a
    // seccomp kill or a hang.
    std::process::abort()
}

fn accept_tcp_group_serves_a_connection(_dir: &Path) -> Outcome {
    // The listener comes from "the master" (made before apply); the client
    // end stands in for a remote SMTP client.
    let listener = expect_ok("listen", TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = expect_ok("local_addr", listener.local_addr())?;
    let mut client = expect_ok("connect", TcpStream::connect(addr))?;
    let profile = Profile {
        syscalls: syscalls::set(&[syscalls::BASE, syscalls::ACCEPT_TCP]),
        ..Profile::new("smtpd")
    };
    applied(&profile)?;
    let (mut session, peer) = expect_ok("accept", listener.accept())?;
    ensure!(peer.ip().is_loopback(), "peer {peer}");
    expect_ok(
        "timeout",
        session.set_read_timeout(Some(Duration::from_secs(5))),
    )?;
    expect_ok("greet", session.write_all(b"220 postern ESMTP\r\n"))?;
    let mut greeting = [0u8; 19];
    expect_ok("read greeting", client.read_exact(&mut greeting))?;
    ensure!(
        &greeting == b"220 postern ESMTP\r\n",
        "greeting {greeting:?}"
    );
    expect_ok("send", client.write_all(b"QUIT\r\n"))?;
    let mut quit = [0u8; 6];
    expect_ok("read command", session.read_exact(&mut quit))?;
    ensure!(&quit == b"QUIT\r\n", "command {quit:?}");
    expect_ok("shutdown", session.shutdown(std::net::Shutdown::Both))?;
    expect_errno("a new socket", socket_inet(), libc::EPERM)?;
    expect_errno(
        "an outgoing connection",
        TcpStream::connect(addr),
        libc::EPERM,
    )?;
    Ok(())
}

fn missing_path_profile(dir: &Path, enforcement: Enforcement) -> Profile {
    let ok_dir = dir.join("present");
    let _ = fs::create_dir(&ok_dir);
    Profile {
        fs: vec![
            FsRule {
                path: ok_dir,
                access: FsAccess::READ_ONLY,
                why: "present",
            },
            FsRule {
                path: dir.join("does-not-exist"),
                access: FsAccess::READ_ONLY,
                why: "missing on purpose",
            },
        ],
        syscalls: syscalls::set(&[syscalls::BASE, syscalls::FILES_READ]),
        enforcement,
        ..Profile::new("missing-path")
    }
}

fn required_refuses_a_missing_path(dir: &Path) -> Outcome {
    let profile = missing_path_profile(dir, Enforcement::Required);
    match sandbox::apply(&profile) {
        Ok(report) => Err(format!("apply succeeded: {report}")),
        Err(e @ Error::NotEnforced { .. }) => {
            let message = e.to_string();
            println!("error: {message}");
            ensure!(
                message.contains("missing-path"),
                "no service name in {message:?}"
            );
            ensure!(message.contains("does-not-exist"), "no path in {message:?}");
            ensure!(message.contains("required"), "no mode in {message:?}");
            let Error::NotEnforced { shortfalls, .. } = e else {
                unreachable!()
            };
            ensure!(
                shortfalls.iter().all(|s| s.step == Step::Landlock),
                "unexpected shortfalls {shortfalls:?}"
            );
            // Everything else was still applied: fail closed.
            expect_errno("socket after the error", socket_inet(), libc::EPERM)?;
            expect_errno(
                "open outside after the error",
                File::open("/etc/passwd"),
                libc::EACCES,
            )?;
            Ok(())
        }
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

fn best_effort_records_a_missing_path(dir: &Path) -> Outcome {
    let profile = missing_path_profile(dir, Enforcement::BestEffort);
    let report = applied(&profile)?;
    ensure!(
        report.shortfalls.len() == 1,
        "shortfalls {:?}",
        report.shortfalls
    );
    let shortfall = &report.shortfalls[0];
    ensure!(
        shortfall.step == Step::Landlock && shortfall.detail.contains("does-not-exist"),
        "shortfall {shortfall}"
    );
    ensure!(
        report.seccomp && report.no_new_privs,
        "the rest was not applied"
    );
    expect_ok("list the present dir", fs::read_dir(dir.join("present")))?;
    expect_errno("open outside", File::open("/etc/passwd"), libc::EACCES)?;
    Ok(())
}

fn park_a_thread() -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<io::Result<()>>,
) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let _ = wait.recv();
        socket_inet()
    });
    (go, handle)
}

fn required_refuses_a_second_thread(_dir: &Path) -> Outcome {
    let mut status = ProcStatus::open()?;
    let (go, handle) = park_a_thread();
    let profile = Profile::new("threaded");
    match sandbox::apply(&profile) {
        Err(e @ Error::MultiThreaded { threads: 2, .. }) => {
            println!("error: {e}");
            ensure!(e.to_string().contains("threaded"), "no service name in {e}");
        }
        Err(e) => return Err(format!("unexpected error: {e}")),
        Ok(report) => return Err(format!("apply succeeded: {report}")),
    }
    let f = status.fields()?;
    ensure!(
        field(&f, "NoNewPrivs")? == "0",
        "something was applied before refusing"
    );
    ensure!(
        field(&f, "Seccomp")? == "0",
        "something was applied before refusing"
    );
    let _ = go.send(());
    let _ = handle.join();
    Ok(())
}

fn best_effort_filters_every_thread(_dir: &Path) -> Outcome {
    let (go, handle) = park_a_thread();
    let profile = Profile {
        enforcement: Enforcement::BestEffort,
        ..Profile::new("threaded")
    };
    let report = applied(&profile)?;
    ensure!(
        report.shortfalls.iter().any(|s| s.step == Step::Threads),
        "no thread shortfall in {:?}",
        report.shortfalls
    );
    ensure!(report.seccomp, "seccomp not installed");
    let _ = go.send(());
    let result = handle
        .join()
        .map_err(|_| "the thread panicked".to_owned())?;
    // TSYNC put the filter on the thread that existed before apply.
    expect_errno("socket in the other thread", result, libc::EPERM)
}

/// The settings the role filters are built from: those of `daemons/privileges`'
/// tests, with `|command` deliveries allowed (the default) or not.
fn role_settings(commands: &str) -> Result<conf::MainCf, String> {
    let commands = match commands {
        "default" => "",
        "none" => "allow_mail_to_commands =",
        other => return Err(format!("unknown commands setting {other}")),
    };
    let text = format!(
        "queue_directory = /var/spool/postern\n\
         smtpd_user = 61001\n\
         queue_user = 61002:61003\n\
         smtp_user = 61004\n\
         vmail_user = 61005\n\
         bounce_user = 61006\n\
         proxymap_user = 61007\n\
         virtual_mailbox_base = /var/mail/vhosts\n\
         {commands}\n"
    );
    conf::MainCf::parse(&text, Path::new("main.cf")).map_err(|e| e.to_string())
}

/// Every role `daemons/privileges` knows, under both settings and both ways of
/// running: each in a fresh process (`--helper role-filter`) that installs the
/// role's real allow-list and tries to start a program and to make code.
fn role_filters_refuse_exec_and_executable_memory(_dir: &Path) -> Outcome {
    let exe = expect_ok("current_exe", std::env::current_exe())?;
    let (mut runners, mut others) = (0, 0);
    for role in privileges::ROLES.iter().chain(privileges::HELPER_ROLES) {
        for commands in ["default", "none"] {
            let settings = role_settings(commands)?;
            let runs = privileges::runs_commands(role, &settings).map_err(|e| e.to_string())?;
            for run_as in ["root", "unprivileged"] {
                let output = expect_ok(
                    "run the role helper",
                    Command::new(&exe)
                        .args(["--helper", "role-filter", role, commands, run_as])
                        .stdin(Stdio::null())
                        .stderr(Stdio::inherit())
                        .output(),
                )?;
                print!("{}", String::from_utf8_lossy(&output.stdout));
                ensure!(
                    output.status.success(),
                    "{role} (commands {commands}, profile for {run_as}): {:?}",
                    output.status
                );
                if runs {
                    runners += 1;
                } else {
                    others += 1;
                }
            }
        }
    }
    // Both sides were seen, so the checks are known to tell them apart.
    ensure!(
        runners > 0 && others > 0,
        "{runners} filters of a process that runs commands, {others} others"
    );
    Ok(())
}

/// The result of a raw syscall: `Ok(return value)` or `Err(errno)`.
fn raw(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret == -1 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

fn errno_name(result: Result<libc::c_long, i32>) -> String {
    match result {
        Ok(value) => format!("allowed (returned {value})"),
        Err(libc::EPERM) => "EPERM".to_owned(),
        Err(errno) => format!("errno {errno} ({})", io::Error::from_raw_os_error(errno)),
    }
}

/// `vfork()` (`nr` SYS_vfork) or `clone(flags, 0, 0, 0, 0)` (`nr` SYS_clone)
/// made so that a child, if the filter lets one start, runs only register
/// instructions and `exit(101)`: it shares this process's memory and stack,
/// so it must not return into Rust code. Returns the child's pid or the errno.
fn vfork_child_exits_at_once(nr: libc::c_long, flags: libc::c_long) -> Result<libc::c_long, i32> {
    let ret: libc::c_long;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the syscall takes no pointers (no stack, no tid or TLS
    // addresses); a child (rax 0) exits without touching memory; the parent
    // resumes once the child has exited, with rcx and r11 clobbered as
    // declared.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov eax, {exit}",
            "mov edi, 101",
            "syscall",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") nr => ret,
            in("rdi") flags,
            in("rsi") 0usize,
            in("rdx") 0usize,
            in("r10") 0usize,
            in("r8") 0usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as on x86_64; the child (x0 0) exits without touching memory.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x8, {exit}",
            "mov x0, 101",
            "svc 0",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("x8") nr => _,
            inlateout("x0") flags => ret,
            in("x1") 0usize,
            in("x2") 0usize,
            in("x3") 0usize,
            in("x4") 0usize,
            options(nostack),
        );
    }
    if (-4095..0).contains(&ret) {
        Err((-ret) as i32)
    } else {
        Ok(ret)
    }
}

/// Started by `role_filters_refuse_exec_and_executable_memory` with ROLE
/// COMMANDS RUN_AS: installs that role's allow-list (its identity, landlock
/// paths and capabilities are left out: only seccomp is under test here, and
/// every violation answers EPERM whatever the role's own choice) and makes
/// each call directly, so no library decides for it.
fn helper_role_filter(args: &[String]) -> Outcome {
    let [role, commands, run_as] = args else {
        return Err(format!(
            "role-filter needs ROLE COMMANDS RUN_AS, got {args:?}"
        ));
    };
    let settings = role_settings(commands)?;
    let run_as = match run_as.as_str() {
        "root" => privileges::RunAs::Root,
        "unprivileged" => privileges::RunAs::Unprivileged,
        other => return Err(format!("unknown run_as {other}")),
    };
    let declared = privileges::profile(role, &settings, run_as).map_err(|e| e.to_string())?;
    let runs = privileges::runs_commands(role, &settings).map_err(|e| e.to_string())?;
    let label = format!("{role} (commands {commands}, {run_as:?})");
    let profile = Profile {
        syscalls: declared.syscalls.clone(),
        on_violation: Violation::Errno,
        ..Profile::new(role.as_str())
    };
    let report = applied(&profile)?;
    ensure!(report.seccomp, "{label}: seccomp not installed");

    let path = c"/nonexistent/postern-role-filter-test";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let page = 4096usize;
    let rx = libc::PROT_READ | libc::PROT_EXEC;
    let anonymous = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

    let mut results: Vec<(&str, Result<libc::c_long, i32>)> = Vec::new();
    // SAFETY: the path does not exist, so an execve that passes the filter
    // fails with ENOENT and returns; argv and envp are NULL-terminated arrays
    // of pointers that outlive the call.
    results.push((
        "execve",
        raw(unsafe {
            libc::syscall(
                libc::SYS_execve,
                path.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
            )
        }),
    ));
    // SAFETY: as for execve; AT_FDCWD with an absolute path, no flags.
    results.push((
        "execveat",
        raw(unsafe {
            libc::syscall(
                libc::SYS_execveat,
                libc::AT_FDCWD,
                path.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                0,
            )
        }),
    ));
    // SAFETY: a new anonymous mapping chosen by the kernel touches no memory
    // of this process; it is unmapped below if it was made.
    let exec_map =
        raw(unsafe { libc::syscall(libc::SYS_mmap, 0usize, page, rx, anonymous, -1, 0usize) });
    if let Ok(addr) = exec_map {
        // SAFETY: the mapping just made, of that length, not used by anything.
        unsafe { libc::munmap(addr as *mut libc::c_void, page) };
    }
    results.push(("mmap(PROT_EXEC)", exec_map));
    // SAFETY: as above; readable and writable, which BASE allows.
    let rw = raw(unsafe {
        libc::syscall(
            libc::SYS_mmap,
            0usize,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            anonymous,
            -1,
            0usize,
        )
    })
    .map_err(|errno| format!("{label}: a read-write mapping: errno {errno}"))?;
    // SAFETY: changes the protection of the page just mapped, which nothing
    // else refers to.
    results.push((
        "mprotect(PROT_EXEC)",
        raw(unsafe { libc::syscall(libc::SYS_mprotect, rw, page, rx) }),
    ));
    // SAFETY: as for mprotect; key -1 is the default protection key.
    results.push((
        "pkey_mprotect(PROT_EXEC)",
        raw(unsafe { libc::syscall(libc::SYS_pkey_mprotect, rw, page, rx, -1) }),
    ));
    // SAFETY: the page is ours and unused.
    unsafe { libc::munmap(rw as *mut libc::c_void, page) };

    #[cfg(target_arch = "x86_64")]
    results.push(("vfork", vfork_child_exits_at_once(libc::SYS_vfork, 0)));
    let flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as libc::c_long;
    results.push((
        "clone(CLONE_VM|CLONE_VFORK)",
        vfork_child_exits_at_once(libc::SYS_clone, flags),
    ));

    let mut problems = Vec::new();
    for (call, result) in &results {
        let ok = if runs {
            // The process that runs commands must be able to start a program
            // (the missing path answers ENOENT) and map it; the other calls
            // are reported, not required either way.
            match *call {
                "execve" => *result == Err(libc::ENOENT),
                "mmap(PROT_EXEC)" | "mprotect(PROT_EXEC)" => result.is_ok(),
                _ => true,
            }
        } else {
            *result == Err(libc::EPERM)
        };
        println!(
            "{label}: {call}: {}{}",
            errno_name(*result),
            if ok { "" } else { "  <-- wrong" }
        );
        if !ok {
            problems.push(*call);
        }
    }
    ensure!(
        problems.is_empty(),
        "{label} ({}): {}",
        if runs {
            "runs commands"
        } else {
            "runs no commands"
        },
        problems.join(", ")
    );
    Ok(())
}

fn probes_are_all_denied(dir: &Path) -> Outcome {
    let outside = dir.join("outside");
    expect_ok("write", fs::write(&outside, "x"))?;
    let server = expect_ok("listen", TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
    let secret = dir.join("secret");
    expect_ok("write", fs::write(&secret, "x"))?;
    let protected = dir.join("protected");
    expect_ok("mkdir", fs::create_dir(&protected))?;
    let targets = sandbox::ProbeTargets {
        outside_path: outside,
        loopback_port: expect_ok("local_addr", server.local_addr())?.port(),
        exec_path: "/bin/sh".into(),
        secret_path: secret,
        protected_dir: protected,
    };
    let profile = Profile {
        syscalls: syscalls::set(&[syscalls::BASE, syscalls::FILES_READ]),
        ..Profile::new("probe-test")
    };
    applied(&profile)?;
    let results = sandbox::probe(&targets);
    ensure!(results.len() == 11, "{} probes", results.len());
    for result in &results {
        println!(
            "probe {:?} denied={} ({})",
            result.action, result.denied, result.detail
        );
    }
    for result in &results {
        ensure!(result.denied, "not denied: {result:?}");
    }
    // With openat allowed by seccomp, landlock is what refuses the path.
    ensure!(
        errno_detail_is(&results[0], "EACCES"),
        "open: {:?}",
        results[0]
    );
    Ok(())
}

fn spawn_places_fds_and_kills_orphans(_dir: &Path) -> Outcome {
    expect_ok(
        "become a subreaper",
        nix_io(nix::sys::prctl::set_child_subreaper(true)),
    )?;
    let exe = expect_ok("current_exe", std::env::current_exe())?;
    let intermediate = expect_ok(
        "start the intermediate",
        Command::new(&exe)
            .args(["--helper", "intermediate"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn(),
    )?;
    let output = expect_ok("intermediate output", intermediate.wait_with_output())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{text}");
    ensure!(
        output.status.success(),
        "intermediate failed: {:?}",
        output.status
    );
    let pid: i32 = text
        .lines()
        .find_map(|l| l.strip_prefix("grandchild "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or("no grandchild pid")?;
    ensure!(
        text.lines().any(|l| l == "grandchild says ok"),
        "grandchild report: {text}"
    );
    let status = expect_ok(
        "wait for the orphaned grandchild",
        nix_io(nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            None,
        )),
    )?;
    ensure!(
        status
            == nix::sys::wait::WaitStatus::Signaled(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
                false
            ),
        "the grandchild outlived its parent: {status:?}"
    );
    Ok(())
}

/// Syscalls the grandchild's checks make, under the filter it inherits.
#[cfg(target_arch = "x86_64")]
const READLINK: Syscall = Syscall::new("SYS_readlink", libc::SYS_readlink, "test: list fds");
#[cfg(not(target_arch = "x86_64"))]
const READLINK: Syscall = Syscall::new("SYS_readlinkat", libc::SYS_readlinkat, "test: list fds");
const GRANDCHILD_CALLS: &[Syscall] = &[
    READLINK,
    Syscall::new("SYS_readlinkat", libc::SYS_readlinkat, "test: list fds"),
    Syscall::new(
        "SYS_sendto",
        libc::SYS_sendto,
        "test: report on the control channel",
    ),
    Syscall::new("SYS_recvfrom", libc::SYS_recvfrom, "test: read the report"),
    Syscall::new("SYS_prctl", libc::SYS_prctl, "test: read the death signal")
        .when(&[&[ArgCheck::eq(0, libc::PR_GET_PDEATHSIG as u64)]]),
    // Not FILES_READ: its read-only openat beside SPAWN's would be a
    // widening, which the filter refuses.
    Syscall::new("SYS_getdents64", libc::SYS_getdents64, "test: list fds"),
];

/// The landlock rules a spawner needs so that its children can start:
/// execute the binary and the libraries, read the loader cache, open
/// /dev/null. (/proc is for the grandchild's checks.)
fn spawner_rules(exe: &Path) -> Result<Vec<FsRule>, String> {
    let mut rules = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let exe_dir = exe.parent().ok_or("the binary has no directory")?;
    let mut add = |path: &Path, access: FsAccess| {
        if let Ok(real) = fs::canonicalize(path) {
            if seen.insert(real.clone()) {
                rules.push(FsRule {
                    path: real,
                    access,
                    why: "test: start a program",
                });
            }
        }
    };
    add(exe_dir, FsAccess::EXEC);
    for lib in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
        add(Path::new(lib), FsAccess::EXEC);
    }
    add(Path::new("/etc/ld.so.cache"), FsAccess::READ_ONLY);
    add(Path::new("/dev/null"), FsAccess::READ_WRITE);
    add(Path::new("/proc"), FsAccess::READ_ONLY);
    Ok(rules)
}

/// Started by `spawn_places_fds_and_kills_orphans`: sandboxes itself as a
/// spawner (the master's groups), spawns the grandchild with
/// `sandbox::spawn`, relays its report, and exits at once.
fn helper_intermediate() -> Outcome {
    let (mine, theirs) = expect_ok(
        "socketpair",
        nix_io(nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )),
    )?;
    let exe = expect_ok("current_exe", std::env::current_exe())?;
    let profile = Profile {
        fs: spawner_rules(&exe)?,
        syscalls: syscalls::set(&[
            syscalls::BASE,
            syscalls::SPAWN,
            syscalls::EXEC_START,
            GRANDCHILD_CALLS,
        ]),
        ..Profile::new("spawner")
    };
    applied(&profile)?;
    let stdout = io::stdout();
    use std::os::fd::AsFd;
    let mut spec = sandbox::Spawn::new(&exe, theirs.as_fd());
    spec.args = vec![OsString::from("--helper"), OsString::from("grandchild")];
    spec.output = Some(stdout.as_fd());
    let pid = sandbox::spawn(&spec).map_err(|e| e.to_string())?;
    drop(spec);
    drop(theirs);
    println!("grandchild {pid}");
    let mut buf = [0u8; 256];
    use std::os::fd::AsRawFd;
    let n = expect_ok(
        "read the grandchild's report",
        nix_io(nix::sys::socket::recv(
            mine.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )),
    )?;
    println!("grandchild says {}", String::from_utf8_lossy(&buf[..n]));
    expect_ok("flush", io::stdout().flush())?;
    // Exit without waiting: the death signal must take the grandchild along.
    std::process::exit(0)
}

/// The spawned daemon's view: fd 3 is the control channel, nothing else
/// above stderr, no environment, SIGKILL armed for the parent's death. It
/// runs under the filter and ruleset inherited from the intermediate.
fn helper_grandchild() -> Outcome {
    let mut problems = Vec::new();
    let death = nix::sys::prctl::get_pdeathsig();
    if death != Ok(Some(nix::sys::signal::Signal::SIGKILL)) {
        problems.push(format!("death signal {death:?}"));
    }
    if std::env::vars_os().next().is_some() {
        problems.push(format!(
            "environment {:?}",
            std::env::vars_os().collect::<Vec<_>>()
        ));
    }
    let mut fds = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc/self/fd") {
        for entry in entries.flatten() {
            let target = fs::read_link(entry.path()).unwrap_or_default();
            if !target.to_string_lossy().ends_with("/fd") {
                fds.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    fds.sort();
    if fds != ["0", "1", "2", "3"] {
        problems.push(format!("descriptors {fds:?}"));
    }
    let message = if problems.is_empty() {
        "ok".to_owned()
    } else {
        problems.join("; ")
    };
    nix_io(nix::sys::socket::send(
        3,
        message.as_bytes(),
        nix::sys::socket::MsgFlags::empty(),
    ))
    .map_err(|e| format!("send on fd 3: {e}"))?;
    std::thread::sleep(Duration::from_secs(30));
    Err("still alive 30 s after the parent exited".into())
}

fn dev_mode_is_reported(_dir: &Path) -> Outcome {
    ensure!(!is_root(), "runs only unprivileged");
    let uid = nix::unistd::getuid().as_raw();
    let profile = Profile {
        identity: Some(test_identity()),
        ..Profile::new("dev-test")
    };
    let report = applied(&profile)?;
    ensure!(report.dev_mode, "dev_mode not reported");
    ensure!(
        report.shortfalls.is_empty(),
        "shortfalls {:?}",
        report.shortfalls
    );
    ensure!(
        report.notes.iter().any(|n| n.contains("identity")),
        "no note about the skipped identity: {:?}",
        report.notes
    );
    ensure!(report.uid == uid, "uid changed in dev mode");
    ensure!(
        report.seccomp && report.landlock == LandlockStatus::FullyEnforced,
        "not enforced"
    );
    Ok(())
}

// ----------------------------------------------------------------- runner

struct Run {
    label: String,
    exe: PathBuf,
    uid: Option<u32>,
}

fn run_child(scenario: &Scenario, run: &Run, work: &Path, index: usize) -> Outcome {
    let dir = work.join(format!("s{index}"));
    expect_ok("scenario dir", fs::create_dir(&dir))?;
    if let Some(uid) = run.uid {
        expect_ok("chown scenario dir", chown(&dir, Some(uid), Some(uid)))?;
    }
    let out_path = work.join(format!("s{index}.out"));
    let out = expect_ok("output file", File::create(&out_path))?;
    let err = expect_ok("output file", out.try_clone())?;
    let mut command = Command::new(&run.exe);
    command
        .arg("--scenario")
        .arg(scenario.name)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(uid) = run.uid {
        command.uid(uid).gid(uid);
    }
    let mut child = expect_ok("start the child", command.spawn())?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = expect_ok("wait", child.try_wait())? {
            break status;
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {CHILD_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    let good = match scenario.expect {
        Expect::Success => status.success(),
        Expect::KilledBy(signal) => status.signal() == Some(signal),
    };
    if good {
        Ok(())
    } else {
        Err(format!(
            "child ended with {status}\n--- child output ---\n{output}"
        ))
    }
}

fn child_main(name: &str, dir: &Path) -> ExitCode {
    let Some(scenario) = SCENARIOS.iter().find(|s| s.name == name) else {
        eprintln!("unknown scenario {name}");
        return ExitCode::from(2);
    };
    match (scenario.run)(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A copy of this binary that an unprivileged uid can execute, whatever the
/// permissions of the build directory.
fn unprivileged_copy(work: &Path) -> io::Result<PathBuf> {
    let bin = work.join("bin");
    fs::create_dir(&bin)?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    let copy = bin.join("enforcement");
    fs::copy(std::env::current_exe()?, &copy)?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    Ok(copy)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--scenario") if args.len() == 4 => return child_main(&args[2], Path::new(&args[3])),
        Some("--helper") => {
            let result = match args.get(2).map(String::as_str) {
                Some("intermediate") => helper_intermediate(),
                Some("grandchild") => helper_grandchild(),
                Some("role-filter") => helper_role_filter(&args[3..]),
                other => Err(format!("unknown helper {other:?}")),
            };
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("FAILED: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let filters: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with('-')).collect();
    let root = is_root();
    let started = Instant::now();

    let work = std::env::temp_dir().join(format!("postern-sandbox-test-{}", std::process::id()));
    if let Err(e) = fs::create_dir(&work)
        .and_then(|()| fs::set_permissions(&work, fs::Permissions::from_mode(0o755)))
    {
        eprintln!("cannot create {}: {e}", work.display());
        return ExitCode::FAILURE;
    }
    let me = Run {
        label: String::new(),
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&args[0])),
        uid: None,
    };
    let unprivileged = if root {
        match unprivileged_copy(&work) {
            Ok(exe) => Some(Run {
                label: format!(" (as uid {UNPRIVILEGED_UID})"),
                exe,
                uid: Some(UNPRIVILEGED_UID),
            }),
            Err(e) => {
                eprintln!("cannot copy the test binary for the unprivileged runs: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };

    let mut plan: Vec<(&Scenario, Option<&Run>)> = Vec::new();
    let mut filtered = 0;
    for scenario in SCENARIOS {
        if !filters.is_empty() && !filters.iter().any(|f| scenario.name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        match (scenario.who, root) {
            (Who::Root, true) | (Who::Anyone, false) | (Who::Unprivileged, false) => {
                plan.push((scenario, Some(&me)))
            }
            (Who::Root, false) => plan.push((scenario, None)),
            (Who::Anyone, true) => {
                plan.push((scenario, Some(&me)));
                plan.push((scenario, unprivileged.as_ref()));
            }
            (Who::Unprivileged, true) => plan.push((scenario, unprivileged.as_ref())),
        }
    }

    println!("\nrunning {} tests", plan.len());
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures = Vec::new();
    for (index, (scenario, run)) in plan.iter().enumerate() {
        let Some(run) = run else {
            println!(
                "test {} ... ignored, needs root: ids and capabilities cannot be changed by uid {}",
                scenario.name,
                nix::unistd::getuid()
            );
            ignored += 1;
            continue;
        };
        let name = format!("{}{}", scenario.name, run.label);
        match run_child(scenario, run, &work, index) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(message) => {
                println!("test {name} ... FAILED");
                failures.push((name, message));
                failed += 1;
            }
        }
    }
    let _ = fs::remove_dir_all(&work);

    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, message) in &failures {
            println!("---- {name} ----\n{message}\n");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; {ignored} ignored; 0 measured; \
         {filtered} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
