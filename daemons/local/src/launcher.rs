//! The command launcher: the one process of the system whose seccomp filter allows `execve`.
//!
//! `local`'s privileged parent may not exec (its profile has neither `execve` nor executable
//! mappings), and a seccomp filter is inherited by every child and never widened, so a
//! `|command` delivery cannot start from it. Before the parent enters its sandbox it forks this
//! launcher, which applies the `local-command` profile (`privileges`) instead: the ids and
//! capabilities to become a recipient, the users' homes, `/usr` to exec, and nothing of the
//! spool. The parent sends it one [`ToLauncher::Run`] per command delivery with the queue
//! file's descriptor; the launcher forks a child that becomes the recipient, confines itself,
//! does the loop check and runs the command (`deliver`), and answers with the child's decoded
//! report.
//!
//! Trusts: nothing it receives; every request is decoded and checked by `protocol` (root as
//! identity, a relative home, control characters are refused), and the launcher reads no byte
//! of the message or of a user's file itself. Its descriptors are closed down to its channel
//! and the log at start, so it holds no channel to the master, qmgr or cleanup.
//!
//! Decisions:
//! - One launcher per `local` process, forked only when `allow_mail_to_commands` names a
//!   class; it ends when the parent closes the channel (and by `PR_SET_PDEATHSIG` if the
//!   parent dies).
//! - A launcher that stops answering is not restarted in place: the parent defers the
//!   delivery (`4.3.0`) and stops serving, and the master starts a new `local`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mailbox::{Content, Envelope, LockOptions};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use protocol::local::{CommandRequest, FromDeliveryChild, ToLauncher};
use protocol::{Channel, ChannelError};
use sandbox::Identity;

use crate::deliver::{self, Job, Report, Sink};

/// Beyond the child's own deadline, how long the parent waits for the launcher's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// The parent's handle on its launcher.
pub struct Launcher {
    channel: Channel,
    pid: Pid,
    broken: std::cell::Cell<bool>,
}

impl Launcher {
    /// Forks the launcher, which applies `profile` and serves until the channel closes. Call
    /// before the parent's own sandbox, in a single-threaded process.
    pub fn start(profile: &sandbox::Profile) -> anyhow::Result<Launcher> {
        let (ours, theirs) = Channel::pair()?;
        match sandbox::fork_delivery_child()? {
            ForkResult::Child => {
                drop(ours);
                let code = launcher_main(&theirs, profile);
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                Ok(Launcher {
                    channel: ours,
                    pid: child,
                    broken: std::cell::Cell::new(false),
                })
            }
        }
    }

    /// Whether the launcher failed to answer: the agent then stops serving.
    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Runs one command delivery through the launcher.
    pub fn run(&self, job: &Job<'_>) -> Report {
        if self.broken.get() {
            return Report::new("4.3.0", "the command launcher is gone");
        }
        let request = match request_of(job) {
            Ok(r) => r,
            Err(report) => return report,
        };
        let fd = job.content.file().as_fd();
        if let Err(e) = self.channel.send(&ToLauncher::Run(request), &[fd]) {
            self.broken.set(true);
            return Report::new("4.3.0", format!("cannot reach the command launcher: {e}"));
        }
        let deadline = job.deadline + ANSWER_MARGIN;
        match wait_readable(&self.channel, deadline) {
            Ok(true) => {}
            Ok(false) => {
                self.broken.set(true);
                return Report::new("4.3.0", "the command launcher did not answer in time");
            }
            Err(e) => {
                self.broken.set(true);
                return Report::new("4.3.0", format!("waiting for the command launcher: {e}"));
            }
        }
        match self.channel.recv::<FromDeliveryChild>() {
            Ok(r) => match r.msg {
                FromDeliveryChild::Result { status, diagnostic } => {
                    Report::new(&status.to_string(), diagnostic.as_str())
                }
                other => {
                    self.broken.set(true);
                    Report::new(
                        "4.3.0",
                        format!(
                            "the command launcher sent {} instead of a result",
                            protocol::Message::kind(&other)
                        ),
                    )
                }
            },
            Err(e) => {
                self.broken.set(true);
                Report::new("4.3.0", format!("the command launcher's answer: {e}"))
            }
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // A launcher between requests ends when its channel closes (after this function, with
        // the fields); one busy with a command is killed, its command's process group with it
        // by the command's own limit or the launcher's death. Reaped only when the signal went.
        if kill(self.pid, Signal::SIGKILL).is_ok() {
            let _ = waitpid(self.pid, None);
        }
    }
}

fn wait_readable(channel: &Channel, limit: Duration) -> nix::Result<bool> {
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [nix::poll::PollFd::new(
            channel.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis().min(10_000)).unwrap_or(10_000);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

fn text<const N: usize>(
    s: &str,
    what: &str,
) -> Result<protocol::bounded::BoundedString<N>, Report> {
    protocol::bounded::BoundedString::try_from(s)
        .map_err(|_| Report::new("5.3.0", format!("the command's {what} is too long")))
}

fn request_of(job: &Job<'_>) -> Result<CommandRequest, Report> {
    let Sink::Command {
        command,
        home,
        env,
        limit,
    } = &job.sink
    else {
        return Err(Report::new("4.3.0", "not a command delivery"));
    };
    let home = home.to_str().filter(|h| h.starts_with('/')).unwrap_or("/");
    let mut vars = Vec::new();
    for (name, value) in env {
        vars.push((text(name, "environment")?, text(value, "environment")?));
    }
    let request = CommandRequest {
        uid: job.identity.uid,
        gid: job.identity.gid,
        groups: job
            .identity
            .groups
            .clone()
            .try_into()
            .map_err(|_| Report::new("4.3.0", "the recipient has too many groups"))?,
        command: text(command, "text")?,
        home: text(home, "home")?,
        env: vars
            .try_into()
            .map_err(|_| Report::new("4.3.0", "the command's environment is too large"))?,
        limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1),
        sender: text(job.envelope.sender, "sender")?,
        recipient: text(job.envelope.recipient, "recipient")?,
        content_offset: job.content.offset(),
        content_len: job.content.len(),
    };
    protocol::Message::validate(&ToLauncher::Run(request.clone()))
        .map_err(|e| Report::new("5.3.0", format!("the command cannot be run: {e}")))?;
    Ok(request)
}

/// The launcher's life: close what the parent held, confine, serve.
fn launcher_main(channel: &Channel, profile: &sandbox::Profile) -> i32 {
    deliver::close_all_but(&[channel.as_fd().as_raw_fd()]);
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        tracing::error!("command launcher: cannot arm the parent-death signal: {e}");
        return 1;
    }
    match sandbox::apply(profile) {
        Ok(report) => tracing::info!(
            uid = report.uid,
            landlock = %report.landlock,
            seccomp = report.seccomp,
            "command launcher: sandbox applied"
        ),
        Err(e) => {
            tracing::error!("command launcher: cannot apply its sandbox: {e}");
            return 1;
        }
    }
    loop {
        let received = match channel.recv::<ToLauncher>() {
            Ok(r) => r,
            Err(ChannelError::PeerClosed) => return 0,
            Err(e) => {
                tracing::error!("command launcher: {e}");
                return 1;
            }
        };
        let Some(fd) = received.fds.into_iter().next() else {
            tracing::error!("command launcher: a request without its queue file");
            return 1;
        };
        let ToLauncher::Run(request) = received.msg;
        let file = File::from(fd);
        let report = run_request(&request, &file);
        let answer = deliver::result(&report.status, &report.text);
        if let Err(e) = channel.send(&answer, &[]) {
            tracing::error!("command launcher: cannot answer: {e}");
            return 1;
        }
    }
}

fn run_request(request: &CommandRequest, file: &File) -> Report {
    let content = Content::new(file, request.content_offset, request.content_len);
    let sink = Sink::Command {
        command: request.command.to_string(),
        home: PathBuf::from(request.home.as_str()),
        env: request
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        limit: Duration::from_millis(request.limit_ms),
    };
    let job = Job {
        identity: Identity {
            uid: request.uid,
            gid: request.gid,
            groups: request.groups.to_vec(),
        },
        rules: deliver::rules_for(&sink),
        sink,
        envelope: Envelope {
            sender: &request.sender,
            recipient: &request.recipient,
        },
        content: &content,
        hostname: "",
        lock: LockOptions::default(),
        deadline: Duration::from_millis(request.limit_ms) + Duration::from_secs(30),
        launcher: None,
    };
    deliver::run(&job)
}
