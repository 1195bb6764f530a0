//! `postern-master -c CONFIG_DIR [--foreground]`: the resident master, the only long-lived
//! privileged process. It reads `main.cf` and `master.cf`, binds the inet listeners, starts each
//! service's daemons on demand, brokers channels between them, and supervises them. It never
//! parses anything that came from the network.
//!
//! # Contract with the `postern` command
//!
//! - **Start**: `postern start` runs `postern-master -c DIR` with stdout a pipe. Once the
//!   listeners are bound and the pid file is written, the master prints exactly one line
//!   `ready pid=N` on stdout and then points stdout at `/dev/null`. On any start-up failure it
//!   prints the reason on stderr (`postern-master: fatal: ...`) and exits 1. Without
//!   `--foreground` it then calls `setsid` and logs to `maillog_file` if set, else to syslog
//!   (`/dev/log`, facility mail); with `--foreground` it logs to stderr.
//! - **Pid file**: `$queue_directory/pid/master.pid` holds the pid and is `flock`ed exclusively
//!   for the master's life. A second master refuses with
//!   `the mail system is already running: PID: N`; a pid file whose lock is free is stale and is
//!   replaced (logged). A clean stop removes it.
//! - **Stop**: SIGTERM or SIGINT: close the listeners, send `Stop` to every daemon, wait up to
//!   `master_stop_timeout`, SIGKILL what remains, remove the pid file, exit 0.
//! - **Reload**: SIGHUP: re-read both files, then send `Stop` to every running process (each
//!   finishes the session or request it is in and exits; one still starting is killed), so new
//!   processes serve with the new files; resident services get a new process once the old one is
//!   done. A listener whose address did not change stays open; throttles are cleared. A
//!   configuration that fails to load is logged and the running one kept. The outcome (errors,
//!   one line each) goes to `$queue_directory/pid/master.reload` once the reload settles (see
//!   `reload`).
//! - **Status**: `$queue_directory/pid/master.status`, rewritten (by rename) when it changes, at most once a second:
//!   a header line `service type processes busy limit throttled-until`, then one line per
//!   service; `limit` is `-` for unlimited, `throttled-until` is `-` or a UTC time
//!   `YYYY-MM-DDTHH:MM:SS.mmmZ`.
//! - **Log lines**: `postern/PROGRAM[PID]: text`, where PROGRAM is `master` or the daemon's
//!   command (as Postfix does: `postern/smtpd[123]`); the first word is `syslog_name`.
//!
//! Trusts: its configuration directory and the kernel. Does not trust: any daemon (see
//! `supervisor`).

#![forbid(unsafe_code)]

mod caps;
mod config;
mod kernel;
mod listen;
mod log;
mod pidfile;
mod pool;
mod reload;
mod spawner;
mod status;
mod supervisor;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use privileges::RunAs;

use crate::log::{Logger, MasterWriter, Target};
use crate::pidfile::PidFile;

const USAGE: &str = "usage: postern-master -c CONFIG_DIR [--foreground]";

struct Options {
    config_dir: PathBuf,
    foreground: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args_os().skip(1);
    let mut config_dir = None;
    let mut foreground = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-c") => {
                let dir = args.next().ok_or("-c needs a directory")?;
                config_dir = Some(PathBuf::from(dir));
            }
            Some("--foreground") => foreground = true,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let config_dir = config_dir.ok_or("-c CONFIG_DIR is required")?;
    let config_dir =
        std::path::absolute(&config_dir).map_err(|e| format!("{}: {e}", config_dir.display()))?;
    Ok(Options {
        config_dir,
        foreground,
    })
}

fn main() -> ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("postern-master: fatal: {e}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern-master: fatal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let run_as = RunAs::current();
    let cfg = config::load(&opts.config_dir, run_as).map_err(|e| e.to_string())?;

    // Signals arrive through a signalfd read by the loop; blocked here, before any child exists
    // (children get an empty mask from `sandbox::spawn`).
    let mut mask = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(sig);
    }
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    // The spawner first, while this process holds no listener, lock or log descriptor that
    // it would inherit, and before the master gives up execve.
    let spawner = spawner::Spawner::start(&cfg.config_dir, &cfg.daemon_directory, run_as)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    let pid = std::process::id();
    let (pidfile, stale) =
        PidFile::acquire(&cfg.queue_directory, pid).map_err(|e| e.to_string())?;
    let listeners = supervisor::bind_listeners(&cfg)?;

    let target = if opts.foreground {
        Target::Stderr
    } else if !cfg.maillog_file.is_empty() {
        Target::File(PathBuf::from(&cfg.maillog_file))
    } else {
        Target::Syslog
    };
    let name = if cfg.syslog_name.is_empty() {
        "postern"
    } else {
        cfg.syslog_name.as_str()
    };
    let (logger, fallback) = match Logger::open(&target, name) {
        Ok(l) => (l, None),
        Err(e) => (
            Logger::open(&Target::Stderr, name).map_err(|e| e.to_string())?,
            Some(e),
        ),
    };
    let logger = Arc::new(Mutex::new(logger));
    let writer_logger = logger.clone();
    tracing_subscriber::fmt()
        .with_writer(move || MasterWriter::new(writer_logger.clone(), pid))
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .event_format(daemon::log::LineFormat)
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    if let Some(e) = fallback {
        tracing::warn!("{e}; logging to stderr instead");
    }
    if let Some(stale) = stale {
        tracing::warn!(
            "stale pid file {} named PID {stale}, whose master is not running: replaced",
            pidfile.path().display()
        );
    }
    let dev_null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    // Everything the master opens for itself is open: confine it (privileges::master_profile).
    let report = sandbox::apply(&cfg.master_profile).map_err(|e| e.to_string())?;
    tracing::info!(
        "confined: capabilities {:#018x}, landlock {}, {} syscalls; daemons are started by spawner pid {}",
        report.caps.effective,
        report.landlock,
        report.syscall_count,
        spawner.pid()
    );
    if run_as == RunAs::Unprivileged {
        tracing::info!(
            uid = nix::unistd::getuid().as_raw(),
            "not running as root: every daemon runs under this uid, still sandboxed"
        );
    }

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready pid={pid}").map_err(|e| format!("stdout: {e}"))?;
        out.flush().map_err(|e| format!("stdout: {e}"))?;
    }
    nix::unistd::dup2_stdout(&dev_null).map_err(|e| format!("stdout to /dev/null: {e}"))?;
    drop(dev_null);
    if !opts.foreground {
        if let Err(e) = nix::unistd::setsid() {
            tracing::warn!("setsid: {e} (already a process group leader)");
        }
    }

    supervisor::Master::new(cfg, run_as, listeners, signals, logger, spawner).run();
    pidfile.remove();
    Ok(())
}
