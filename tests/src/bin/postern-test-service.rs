//! A minimal daemon for the master's whole-system tests. It runs under whatever role its
//! argv[0] names (tests place symlinks `smtpd`, `cleanup`, ... to it in a temporary
//! `daemon_directory`), so the master applies that role's profile and the real access matrix.
//!
//! As an inet service it speaks a line protocol on each connection:
//! `PID` → its pid; `STATUS` → its `/proc/self/status` lines of interest, then `.`;
//! `CONNECT name` → `OK` or `REFUSED` (asks the master for a channel to `name` and, if granted,
//! sends one `Ping` through it and waits for the `Pong`); `CRASH` → abort; `QUIT` → close.
//! As a unix service it answers each incoming channel's `Ping` with a `Pong`. Under the service
//! names `liar-busy`, `liar-ready` and `liar-bounding` it skips the runtime and lies on its
//! control channel, so the tests can show what the master does with a compromised daemon.
//!
//! Trusts: nothing from its TCP clients beyond line framing (lines are bounded); channel messages
//! go through `protocol`.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;

use daemon::{Daemon, Transport};
use postern_tests::probe::Probe;
use protocol::control::{
    Capabilities, FromMaster, LandlockReport, LandlockStatus, SandboxReport, ToMaster,
    PROTOCOL_VERSION,
};
use protocol::{Channel, ServiceName};

/// Longest command line read from a test client.
const MAX_LINE: u64 = 256;

/// The `/proc/self/status` fields the tests look at.
const STATUS_FIELDS: &[&str] = &[
    "Uid:",
    "Gid:",
    "CapEff:",
    "CapPrm:",
    "CapBnd:",
    "NoNewPrivs:",
    "Seccomp:",
];

fn status_lines(status: &mut File) -> std::io::Result<String> {
    // procfs regenerates the file when read again from offset 0.
    status.seek(SeekFrom::Start(0))?;
    let mut text = String::new();
    status.read_to_string(&mut text)?;
    let mut out = String::new();
    for line in text.lines() {
        if STATUS_FIELDS.iter().any(|f| line.starts_with(f)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(".\n");
    Ok(out)
}

fn ping(channel: &Channel) -> Result<(), String> {
    let me = std::process::id();
    channel
        .send(&Probe::Ping { pid: me }, &[])
        .map_err(|e| e.to_string())?;
    match channel.recv::<Probe>().map_err(|e| e.to_string())?.msg {
        Probe::Pong { .. } => Ok(()),
        other => Err(format!("unexpected {other:?}")),
    }
}

fn session(d: &mut Daemon, stream: TcpStream, status: &mut File) -> Result<(), String> {
    let mut out = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        let reply = match line.split_once(' ').unwrap_or((line, "")) {
            ("PID", _) => format!("{}\n", std::process::id()),
            ("STATUS", _) => status_lines(status).map_err(|e| e.to_string())?,
            ("CONNECT", name) => match d.connect(name) {
                Ok(channel) => match ping(&channel) {
                    Ok(()) => "OK\n".to_owned(),
                    Err(e) => format!("ERROR {e}\n"),
                },
                Err(daemon::Error::Refused { .. }) => "REFUSED\n".to_owned(),
                Err(e) => format!("ERROR {e}\n"),
            },
            ("CRASH", _) => std::process::abort(),
            ("QUIT", _) => {
                let _ = out.write_all(b"BYE\n");
                return Ok(());
            }
            _ => "UNKNOWN\n".to_owned(),
        };
        out.write_all(reply.as_bytes()).map_err(|e| e.to_string())?;
    }
}

fn answer(channel: Channel) -> Result<(), String> {
    match channel.recv::<Probe>().map_err(|e| e.to_string())?.msg {
        Probe::Ping { .. } => channel
            .send(
                &Probe::Pong {
                    pid: std::process::id(),
                },
                &[],
            )
            .map_err(|e| e.to_string()),
        other => Err(format!("unexpected {other:?}")),
    }
}

/// A daemon that lies on its control channel, for the master's tests: `liar-busy` says `Busy`
/// before `Ready`; `liar-ready` reports a perfect sandbox without applying any; `liar-bounding`
/// applies its role's sandbox but for the bounding set (see [`keep_bounding_set`]).
fn lie(how: &str) -> Result<(), Box<dyn std::error::Error>> {
    if how == "liar-bounding" {
        return keep_bounding_set();
    }
    let control = Channel::from_fd(sandbox::inherited_fd(daemon::CONTROL_FD)?)?;
    control.send(
        &ToMaster::Hello {
            version: PROTOCOL_VERSION,
        },
        &[],
    )?;
    let _welcome = control.recv::<FromMaster>()?;
    let claim = match how {
        "liar-busy" => ToMaster::Busy,
        _ => ToMaster::Ready {
            report: SandboxReport {
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                capabilities: Capabilities::NONE,
                no_new_privs: true,
                landlock: LandlockReport::new(7, LandlockStatus::FullyEnforced)?,
                seccomp: true,
                dev_mode: !nix::unistd::geteuid().is_root(),
            },
        },
    };
    control.send(&claim, &[])?;
    // The master's verdict is SIGKILL; a liar does not leave on its own.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// `liar-bounding`: its role's real profile, applied with `CAP_SETPCAP` out of the effective set
/// first, so that (as root) the bounding set cannot be emptied; `best_effort`, so that every other
/// step still runs (ids, permitted and effective sets, no_new_privs, landlock, seccomp). Its
/// `Ready` then claims an empty bounding set: only `/proc/PID/status` shows the truth. If the
/// master says `Go` anyway it logs `liar-bounding got Go` and serves like a unix test service.
/// Unprivileged (`--dev`) there is nothing to lie about: the bounding set is the inherited one,
/// which no daemon can drop, and the master accepts it.
fn keep_bounding_set() -> Result<(), Box<dyn std::error::Error>> {
    let args = daemon::Args::parse(std::env::args_os())?;
    let settings = conf::MainCf::load(&args.config_dir.join("main.cf"))?;
    let control = Channel::from_fd(sandbox::inherited_fd(daemon::CONTROL_FD)?)?;
    control.send(
        &ToMaster::Hello {
            version: PROTOCOL_VERSION,
        },
        &[],
    )?;
    let _welcome = control.recv::<FromMaster>()?;
    let mut profile = privileges::profile(&args.program, &settings, privileges::RunAs::current())?;
    profile.enforcement = sandbox::Enforcement::BestEffort;
    caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)?;
    let report = sandbox::apply(&profile)?;
    let mut wire = daemon::to_wire(&report)?;
    let c = wire.capabilities;
    wire.capabilities = Capabilities::new(
        c.effective(),
        c.permitted(),
        c.inheritable(),
        c.ambient(),
        0,
    )?;
    control.send(&ToMaster::Ready { report: wire }, &[])?;
    match control.recv::<FromMaster>()?.msg {
        FromMaster::Go => eprintln!("{} got Go", args.service),
        other => {
            // Written here: this path has no log subscriber, and the master logs stderr.
            eprintln!("{} got {other:?} instead of Go", args.service);
            return Err("no Go".into());
        }
    }
    loop {
        let received = match control.recv::<FromMaster>() {
            Ok(r) => r,
            Err(protocol::ChannelError::PeerClosed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match (received.msg, received.fds.into_iter().next()) {
            (FromMaster::Incoming { .. }, Some(fd)) => {
                answer(Channel::from_fd(fd)?)?;
                control.send(&ToMaster::Idle, &[])?;
            }
            (FromMaster::Stop, _) => return Ok(()),
            (other, _) => return Err(format!("unexpected {other:?}").into()),
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = daemon::Args::parse(argv.clone())?;
    if args.service.starts_with("liar-") {
        return lie(&args.service);
    }
    let mut d = match Daemon::init() {
        Err(daemon::Error::StoppedBeforeStart) => return Ok(()),
        other => other?,
    };
    // Opened before the sandbox, which forbids opening files.
    let mut status = File::open("/proc/self/status")?;
    match d.enter_sandbox() {
        Err(daemon::Error::StoppedBeforeStart) => return Ok(()),
        other => other?,
    };
    let ended = match d.args().transport {
        Transport::Inet => {
            d.serve_inet(|d, stream, _peer: SocketAddr| session(d, stream, &mut status))?
        }
        Transport::Unix => d.serve_unix(|_d, _from: ServiceName, channel| answer(channel))?,
    };
    tracing::info!(ended = ?ended, "done");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
