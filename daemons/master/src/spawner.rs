//! The spawner: the one process that executes daemon programs, so that the master itself can
//! be confined (no `execve`, no executable memory, no `/etc`).
//!
//! The master forks it first thing, before it binds or opens anything and before it confines
//! itself, so the spawner holds nothing but its channel to the master. It keeps root's ids,
//! empties its effective and permitted capabilities and keeps in its bounding set only what a
//! daemon may keep (`privileges::SPAWNER_BOUNDING`). It is not landlocked and has no seccomp
//! filter, because each daemon starts in the spawner's domain and under its filter (both are
//! inherited across `execve`) and then applies its own profile.
//!
//! It does one thing, on a `protocol::spawn::ToSpawner::Start`: execute
//! `daemon_directory/COMMAND` (the directory of start-up) for a command that `privileges`
//! declares a profile for, after `privileges::check_program`, with an argv it builds itself
//! (its own configuration directory), the descriptors of the request at fds 3 and 4 and on
//! stdout and stderr, and as a *sibling* (`clone(CLONE_PARENT)`): the daemon's parent is the
//! master, which supervises and reaps it as before, and whose death kills it.
//!
//! Trusts: nothing the master sends (the master reads the network's gossip second-hand and
//! may be compromised); the request is decoded and checked by `protocol::spawn`, the command
//! by the declared roles. A compromised master can at most start the system's own daemons
//! with `-o` overrides, which they check as they check master.cf.

use std::path::{Path, PathBuf};

use privileges::RunAs;
use protocol::control::Detail;
use protocol::spawn::{FromSpawner, ToSpawner};
use protocol::{Channel, ChannelError};

/// The master's end of the spawner's channel.
pub struct Spawner {
    channel: Channel,
    pid: i32,
    daemon_directory: PathBuf,
}

impl Spawner {
    /// Forks the spawner. The master must be single-threaded and hold no descriptor the
    /// spawner should not keep (call it before binding or opening anything).
    pub fn start(
        config_dir: &Path,
        daemon_directory: &Path,
        run_as: RunAs,
    ) -> Result<Spawner, String> {
        let (ours, theirs) = Channel::pair().map_err(|e| format!("spawner channel: {e}"))?;
        let dev_null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?;
        let master = nix::unistd::getpid();
        match sandbox::fork_helper().map_err(|e| format!("forking the spawner: {e}"))? {
            nix::unistd::ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Spawner {
                    channel: ours,
                    pid: child.as_raw(),
                    daemon_directory: daemon_directory.to_owned(),
                })
            }
            nix::unistd::ForkResult::Child => {
                drop(ours);
                let code = match become_spawner(master, &dev_null, run_as) {
                    Ok(()) => serve(&theirs, config_dir, daemon_directory, run_as),
                    Err(e) => {
                        // stderr is still the master's here.
                        eprintln!("postern-master: fatal: spawner: {e}");
                        1
                    }
                };
                std::process::exit(code)
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks the spawner to start `command` for `service`; returns the new daemon's pid (a
    /// child of this process).
    pub fn start_daemon(
        &self,
        request: &ToSpawner,
        fds: &[std::os::fd::BorrowedFd<'_>],
        program: &Path,
    ) -> Result<i32, String> {
        if program.parent() != Some(self.daemon_directory.as_path()) {
            return Err(format!(
                "{} is not in daemon_directory {} of start-up: a new daemon_directory needs a restart",
                program.display(),
                self.daemon_directory.display()
            ));
        }
        self.channel
            .send(request, fds)
            .map_err(|e| format!("spawner: {e}"))?;
        loop {
            match self.channel.recv::<FromSpawner>() {
                Ok(received) => {
                    return match received.msg {
                        FromSpawner::Started { pid } => i32::try_from(pid)
                            .map_err(|_| format!("spawner: pid {pid} out of range")),
                        FromSpawner::Refused { reason } => Err(reason.as_str().to_owned()),
                    }
                }
                Err(ChannelError::WouldBlock) => continue,
                Err(e) => return Err(format!("spawner: {e}")),
            }
        }
    }
}

/// In the new spawner: die with the master, leave its session and its terminal, drop every
/// capability from the effective and permitted sets and all but the daemons' from the bounding
/// set.
fn become_spawner(
    master: nix::unistd::Pid,
    dev_null: &std::fs::File,
    run_as: RunAs,
) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if nix::unistd::getppid() != master {
        return Err("the master exited".into());
    }
    // Signals the master blocks for its signalfd stay blocked here: a SIGTERM or SIGHUP meant
    // for the master's process group does not end the spawner; the master's death does.
    let _ = nix::unistd::setsid();
    if run_as == RunAs::Root {
        crate::caps::drop_to_spawner_set().map_err(|e| e.to_string())?;
    }
    nix::unistd::dup2_stdin(dev_null).map_err(|e| format!("stdin: {e}"))?;
    nix::unistd::dup2_stdout(dev_null).map_err(|e| format!("stdout: {e}"))?;
    nix::unistd::dup2_stderr(dev_null).map_err(|e| format!("stderr: {e}"))?;
    Ok(())
}

/// The spawner's loop: one request, one answer, until the master closes the channel.
fn serve(channel: &Channel, config_dir: &Path, daemon_directory: &Path, run_as: RunAs) -> i32 {
    loop {
        let answer = match channel.recv::<ToSpawner>() {
            Ok(received) => start(
                &received.msg,
                &received.fds,
                config_dir,
                daemon_directory,
                run_as,
            ),
            Err(ChannelError::PeerClosed) => return 0,
            Err(ChannelError::WouldBlock) => continue,
            // The channel itself failed: nothing more can be asked or answered.
            Err(ChannelError::Recv(_) | ChannelError::Setup { .. }) => return 1,
            Err(e) => refused(format!("request refused: {e}")),
        };
        if channel.send(&answer, &[]).is_err() {
            return 1;
        }
    }
}

fn refused(text: String) -> FromSpawner {
    FromSpawner::Refused {
        reason: Detail::lossy(&text),
    }
}

fn start(
    request: &ToSpawner,
    fds: &[std::os::fd::OwnedFd],
    config_dir: &Path,
    daemon_directory: &Path,
    run_as: RunAs,
) -> FromSpawner {
    use std::os::fd::AsFd;
    let ToSpawner::Start {
        command,
        service,
        listener,
        overrides,
    } = request;
    let command = command.as_str();
    if !privileges::ROLES.contains(&command) {
        return refused(format!(
            "command {command:?} is not a daemon with a declared profile"
        ));
    }
    let program = privileges::program_path(daemon_directory, command);
    if let Err(e) = privileges::check_program(&program, run_as) {
        return refused(e.to_string());
    }
    let (control, output) = match fds {
        [control, output, ..] => (control, output),
        _ => return refused("a request without its descriptors".into()),
    };
    let argv = daemon::Args {
        program: command.to_owned(),
        config_dir: config_dir.to_owned(),
        service: service.as_str().to_owned(),
        transport: if *listener {
            daemon::Transport::Inet
        } else {
            daemon::Transport::Unix
        },
        overrides: overrides
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
    }
    .to_argv();
    let mut plan = sandbox::Spawn::new(&program, control.as_fd());
    plan.arg0 = argv.first().cloned();
    plan.args = argv.into_iter().skip(1).collect();
    plan.extra_fds = fds.get(2).map(|l| l.as_fd()).into_iter().collect();
    plan.output = Some(output.as_fd());
    plan.sibling = true;
    match sandbox::spawn(&plan) {
        Ok(pid) => match u32::try_from(pid.as_raw()) {
            Ok(pid) => FromSpawner::Started { pid },
            Err(_) => refused(format!("spawned pid {pid} out of range")),
        },
        Err(e) => refused(e.to_string()),
    }
}
