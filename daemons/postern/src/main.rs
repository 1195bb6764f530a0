//! `postern`: the administration command of the Postern mail system, in the tradition of
//! Postfix's `postfix` and `postconf`.
//!
//! `postern [-c CONFIG_DIR] start [--foreground] | stop | reload | status | check |
//! init [--port N] [--force] | conf [-n] [NAME...] | queue list [--json] | help`. Usage errors
//! exit 2; a command that fails exits 1 with `postern: fatal: REASON` on stderr.
//!
//! Trusts: its command line and the configuration directory (the administrator's). Does not
//! trust: the pid file's content, the master's output, or its own probe children's output; each is
//! parsed strictly (see `control` and `check`). Runs no network code.

#![forbid(unsafe_code)]

mod args;
mod check;
mod conf_cmd;
mod control;
mod init;
mod instance;
mod layout;
mod map;
mod probe;
mod queue;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use args::Command;
use control::MasterState;
use instance::Instance;

fn main() -> ExitCode {
    let invocation = match args::parse(std::env::args_os().skip(1)) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("postern: {e}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = run(&invocation.config_dir, invocation.command, &mut stdout)
        .and_then(|status| stdout.flush().map(|()| status).map_err(Into::into));
    match result {
        Ok(status) => ExitCode::from(status),
        // The reader went away (`postern check | head`): stop quietly, with the status a shell
        // reports for a command killed by SIGPIPE.
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(e) => {
            eprintln!("postern: fatal: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

/// 128 + SIGPIPE, what a shell shows for a command that died writing to a closed pipe.
const EXIT_BROKEN_PIPE: u8 = 141;

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, each cause once: most error messages here already
/// include their source's text.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Runs `command`; what it prints for the administrator goes to `out` (stdout), diagnostics to
/// stderr.
fn run(config_dir: &Path, command: Command, out: &mut dyn Write) -> anyhow::Result<u8> {
    match command {
        Command::Help => {
            write!(out, "{}", args::USAGE)?;
            Ok(0)
        }
        Command::Init { port, force } => init(config_dir, port, force, out),
        Command::Conf {
            explicit_only,
            names,
        } => {
            let instance = Instance::load(config_dir)?;
            let rendered = conf_cmd::render(instance.main(), explicit_only, &names);
            out.write_all(rendered.stdout.as_bytes())?;
            eprint!("{}", rendered.stderr);
            Ok(u8::try_from(rendered.status).unwrap_or(1))
        }
        Command::Check => {
            let instance = Instance::load(config_dir)?;
            let status = check::run(&instance, out)?;
            Ok(u8::try_from(status).unwrap_or(1))
        }
        Command::Probe { role } => {
            // INVARIANT: nothing before this point has started a thread; the probe applies the
            // role's sandbox to this process.
            probe::run(config_dir, &role)?;
            Ok(0)
        }
        Command::Start { foreground } => start(config_dir, foreground),
        Command::Stop => stop(config_dir),
        Command::Reload => reload(config_dir),
        Command::Status => status(config_dir, out),
        Command::QueueList { json } => queue_list(config_dir, json, out),
        Command::MapCheck { aliases, tables } => {
            let instance = Instance::load(config_dir)?;
            report_map(map::check(instance.main(), &tables, aliases), out)
        }
        Command::Newaliases => {
            let instance = Instance::load(config_dir)?;
            report_map(map::newaliases(instance.main())?, out)
        }
    }
}

/// Prints what a table check found: each good table on stdout, warnings and errors on stderr;
/// exit status 1 when there is an error.
fn report_map(f: map::Findings, out: &mut dyn Write) -> anyhow::Result<u8> {
    for line in &f.checked {
        writeln!(out, "postern: {line}")?;
    }
    for w in &f.warnings {
        eprintln!("postern: warning: {w}");
    }
    for e in &f.errors {
        eprintln!("postern: error: {e}");
    }
    Ok(u8::from(!f.errors.is_empty()))
}

/// Tells the terminal what the master says in its log: a non-root start runs every daemon under
/// this uid. (In the foreground the master's own log line reaches the terminal.)
fn note_dev_mode() {
    if privileges::RunAs::current() == privileges::RunAs::Unprivileged {
        eprintln!(
            "postern: not running as root: all daemons run under uid {} (dev mode), each still sandboxed",
            nix::unistd::geteuid()
        );
    }
}

fn init(config_dir: &Path, port: u16, force: bool, out: &mut dyn Write) -> anyhow::Result<u8> {
    let dir =
        std::path::absolute(config_dir).with_context(|| format!("{}", config_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the postern binary")?;
    let daemon_directory = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let settings = init::Settings::new(dir.clone(), port, daemon_directory);
    let report = init::run(&settings, force)?;
    for warning in &report.warnings {
        eprintln!("postern: warning: {warning}");
    }
    for path in &report.written {
        writeln!(out, "postern: wrote {}", path.display())?;
    }
    writeln!(
        out,
        "postern: created an instance in {dir}; start it with: postern -c {dir} start",
        dir = dir.display()
    )?;
    Ok(0)
}

fn pid_path(instance: &Instance) -> anyhow::Result<PathBuf> {
    Ok(control::pid_file(&instance.queue_directory()?))
}

fn start(config_dir: &Path, foreground: bool) -> anyhow::Result<u8> {
    let instance = Instance::load(config_dir)?;
    let problems = instance.service_problems();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("postern: {p}");
        }
        anyhow::bail!(
            "the configuration has {} problem(s); see `postern check`",
            problems.len()
        );
    }
    let run_as = privileges::RunAs::current();
    for warning in instance.ensure_layout(run_as)? {
        eprintln!("postern: warning: {warning}");
    }
    let pid_path = pid_path(&instance)?;
    match control::inspect(&pid_path)? {
        MasterState::Running { pid } => {
            anyhow::bail!("the mail system is already running: PID: {pid}")
        }
        MasterState::Stale { pid } => eprintln!(
            "postern: warning: stale pid file {} ({}); the master replaces it",
            pid_path.display(),
            match pid {
                Some(pid) => format!("PID {pid} is not running the mail system"),
                None => "no valid pid".to_string(),
            }
        ),
        MasterState::NotRunning => {}
    }
    let daemon_directory = instance.daemon_directory().ok();
    let master = control::find_master(daemon_directory.as_deref())?;
    let cmd = control::master_command(&master, instance.config_dir(), foreground);
    if foreground {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = cmd;
        let err = cmd.exec();
        anyhow::bail!("cannot run {}: {err}", master.display());
    }
    eprintln!("postern: starting the mail system");
    note_dev_mode();
    let pid = control::start_background(cmd, control::START_TIMEOUT)?;
    eprintln!("postern: the mail system is running: PID: {pid}");
    Ok(0)
}

/// The pid of the running master, or the fatal "not running" error.
fn running_pid(pid_path: &Path) -> anyhow::Result<i32> {
    match control::inspect(pid_path)? {
        MasterState::Running { pid } => Ok(pid),
        MasterState::Stale { .. } | MasterState::NotRunning => {
            anyhow::bail!("the mail system is not running")
        }
    }
}

/// `stop`, `status` and `reload` read main.cf even when it has an error; they say so.
fn control_view(config_dir: &Path) -> anyhow::Result<instance::ControlView> {
    let view = instance::control_view(config_dir)?;
    if let Some(e) = &view.error {
        eprintln!("postern: warning: {e}");
    }
    Ok(view)
}

fn stop(config_dir: &Path) -> anyhow::Result<u8> {
    let view = control_view(config_dir)?;
    let pid_path = control::pid_file(&view.queue_directory);
    let pid = running_pid(&pid_path)?;
    let timeout = view.stop_timeout + control::STOP_MARGIN;
    eprintln!("postern: stopping the mail system");
    control::stop(&pid_path, pid, timeout)?;
    Ok(0)
}

/// Refuses a configuration that does not load (the running one keeps serving); otherwise asks
/// the master to reload and waits for its outcome, printing each failure; exit 1 if any.
fn reload(config_dir: &Path) -> anyhow::Result<u8> {
    let view = instance::control_view(config_dir)?;
    let pid = running_pid(&control::pid_file(&view.queue_directory))?;
    if let Err(e) = Instance::load(config_dir) {
        anyhow::bail!(
            "{e}: not reloaded; the mail system (PID {pid}) keeps its running configuration"
        )
    }
    eprintln!("postern: refreshing the mail system");
    let outcome = control::reload(
        &control::reload_file(&view.queue_directory),
        pid,
        control::RELOAD_TIMEOUT,
    )?;
    if outcome.errors.is_empty() {
        return Ok(0);
    }
    for e in &outcome.errors {
        eprintln!("postern: reload: {e}");
    }
    eprintln!(
        "postern: fatal: the reload had {} problem(s); the rest of the new configuration is in force",
        outcome.errors.len()
    );
    Ok(1)
}

fn queue_list(config_dir: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<u8> {
    let instance = Instance::load(config_dir)?;
    let queue_directory = instance.queue_directory()?;
    let entries = queue::scan(&queue_directory, &mut |warning| {
        eprintln!("postern: warning: {warning}");
    })?;
    if json {
        queue::write_json(&entries, out)?;
    } else {
        queue::write_text(&entries, out)?;
    }
    Ok(0)
}

fn status(config_dir: &Path, out: &mut dyn Write) -> anyhow::Result<u8> {
    let queue_directory = control_view(config_dir)?.queue_directory;
    let pid_path = control::pid_file(&queue_directory);
    match control::inspect(&pid_path)? {
        MasterState::Running { pid } => {
            writeln!(out, "postern: the mail system is running: PID: {pid}")?;
            match control::read_status(&control::status_file(&queue_directory)) {
                Ok(table) => write!(out, "{table}")?,
                Err(e) => writeln!(out, "postern: warning: {e}")?,
            }
            Ok(0)
        }
        MasterState::Stale { pid } => {
            writeln!(
                out,
                "postern: the mail system is not running (stale pid file {}{})",
                pid_path.display(),
                pid.map(|p| format!(" names PID {p}")).unwrap_or_default()
            )?;
            Ok(1)
        }
        MasterState::NotRunning => {
            writeln!(out, "postern: the mail system is not running")?;
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_shown_once() {
        let io = std::io::Error::from_raw_os_error(libc_enoent());
        let layout = layout::LayoutError::Io {
            path: "/x/spool".into(),
            source: io,
        };
        let e = anyhow::Error::new(layout);
        assert_eq!(
            describe(&e),
            "/x/spool: No such file or directory (os error 2)"
        );
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc_enoent()))
            .context("cannot find the postern binary");
        assert_eq!(
            describe(&e),
            "cannot find the postern binary: No such file or directory (os error 2)"
        );
    }

    fn libc_enoent() -> i32 {
        nix::errno::Errno::ENOENT as i32
    }
}
