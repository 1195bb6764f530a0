//! The runtime every Postern daemon's `main` uses, so that `main` reads as the recipe:
//!
//! ```text
//! let mut d = daemon::Daemon::init(ROLE)?;   // argv, settings, fd 3, Hello/Welcome
//! // open what the sandbox will forbid (certificates, an fd on a file) ...
//! d.enter_sandbox()?;                        // INVARIANT: before any request, before any thread;
//!                                            // Ready, then nothing until the master's Go
//! d.serve_inet(handle_session)?;             // or serve_unix(handle_channel)
//! ```
//!
//! [`Daemon::enter_sandbox`] returns only once the master has checked the `Ready` report and
//! the kernel's view of this process against the profile and answered `Go`: until then the
//! listener is not polled and no channel is read. A master that finds a shortfall kills the
//! process; one that closes the channel, sends anything but `Go` or `Stop`, or says nothing
//! within [`START_TIMEOUT`] ends it with an error, having served nothing.
//!
//! A resident daemon with its own `poll` loop (qmgr, which holds many channels at once) polls
//! [`Daemon::control_fd`], takes events with [`Daemon::poll_control`] and says
//! [`Daemon::idle`] after each channel it takes, so the master hands it the next one.
//!
//! Trusts: the master for the descriptors it placed at fd 3 (control channel) and fd 4 (the
//! listener of an inet service). Does not trust: any message on those channels, which is decoded
//! by `protocol` and checked against what this side expects now (a `Welcome` when not asked, an
//! `Incoming` for an inet service, a `Connected` that was not requested, are protocol errors that
//! end the daemon). TCP clients are the handlers' business.

#![forbid(unsafe_code)]

pub mod args;
pub mod cleanup_client;
pub mod date;
pub mod log;
pub mod proxymap_client;
pub mod spool;

use std::collections::VecDeque;
use std::fmt::Display;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use conf::MainCf;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use privileges::RunAs;
pub use protocol::control::START_TIMEOUT;
use protocol::control::{
    Capabilities, ExitReason, FromMaster, LandlockReport, LandlockStatus, SandboxReport, ToMaster,
    PROTOCOL_VERSION,
};
use protocol::{Channel, ChannelError, ServiceName};

pub use args::{Args, ArgsError, Transport};

/// The control channel's descriptor, as the master places it.
pub const CONTROL_FD: i32 = 3;
/// The listener of an inet service, as the master places it.
pub const LISTENER_FD: i32 = 4;

/// How long a daemon waits for the master's answer to `Hello` or `Connect`. The master answers at
/// once unless it is stopping; a master that does not answer is gone or broken.
pub const MASTER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// After `Exit`, how long a unix-service daemon keeps serving channels the master handed it
/// before it saw the `Exit`, waiting for the master's `Stop`.
pub const EXIT_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("configuration: {0}")]
    Conf(#[from] conf::ConfError),
    #[error("-o {name}={value}: {source}")]
    Override {
        name: String,
        value: String,
        #[source]
        source: conf::ConfError,
    },
    #[error("inherited descriptor {fd}: {source}")]
    Inherited {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("control channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("control channel: unexpected {kind} from the master {when}")]
    Unexpected {
        kind: &'static str,
        when: &'static str,
    },
    #[error("control channel: no answer from the master within {0:?}")]
    Timeout(Duration),
    #[error(
        "control channel: the master speaks protocol version {0}, this daemon {PROTOCOL_VERSION}"
    )]
    Version(u32),
    #[error("privileges: {0}")]
    Privileges(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    #[error("sandbox report: {0}")]
    Report(String),
    #[error("service name {name:?}: {reason}")]
    ServiceName { name: String, reason: String },
    #[error("channel to {service} refused: {reason}")]
    Refused { service: String, reason: String },
    #[error("{service} is an {transport} service; {what}")]
    WrongTransport {
        service: String,
        transport: Transport,
        what: &'static str,
    },
    #[error("listener: {0}")]
    Listener(std::io::Error),
    #[error("poll: {0}")]
    Poll(nix::Error),
    #[error("the master is stopping: it sent Stop before this daemon started serving")]
    StoppedBeforeStart,
    #[error("prctl(PR_SET_PDEATHSIG): {0}")]
    DeathSignal(nix::Error),
}

/// A running daemon: its command line, settings and control channel.
pub struct Daemon {
    args: Args,
    settings: MainCf,
    control: Channel,
    listener: Option<TcpListener>,
    /// The sandbox is applied and the master answered `Ready` with `Go`.
    started: bool,
    stop: bool,
    /// `Stop` already returned by `poll_control` (it is reported once).
    stop_reported: bool,
    waiting: VecDeque<(ServiceName, Channel)>,
    served: u64,
}

/// What [`Daemon::poll_control`] found on the control channel.
#[derive(Debug)]
pub enum ControlEvent {
    /// The master asks this daemon to finish and exit.
    Stop,
    /// A channel from a client of this (unix) service; the master now counts this process busy
    /// until it says [`Daemon::idle`].
    Incoming(ServiceName, Channel),
    /// The master closed the control channel (it is gone).
    MasterGone,
}

/// Why a serve loop returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The master sent `Stop`.
    Stopped,
    /// `max_use` sessions served.
    MaxUse,
    /// `max_idle` without work.
    MaxIdle,
    /// The master closed the control channel (it is gone).
    MasterGone,
}

fn inherited(fd: i32) -> Result<OwnedFd, Error> {
    sandbox::inherited_fd(fd).map_err(|source| Error::Inherited { fd, source })
}

impl Daemon {
    /// Reads the command line, `main.cf` with the `-o` overrides, takes the control channel (and
    /// the listener of an inet service) and greets the master. Nothing is sandboxed yet: the
    /// caller opens what its sandbox will forbid, then calls [`Daemon::enter_sandbox`].
    pub fn init() -> Result<Daemon, Error> {
        log::init_stderr();
        Daemon::init_from(std::env::args_os())
    }

    /// [`Daemon::init`] with an explicit argv.
    pub fn init_from<I, S>(argv: I) -> Result<Daemon, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        let args = Args::parse(argv)?;
        let mut settings = MainCf::load(&args.config_dir.join("main.cf"))?;
        for (name, value) in &args.overrides {
            settings
                .set(name, value)
                .map_err(|source| Error::Override {
                    name: name.clone(),
                    value: value.clone(),
                    source,
                })?;
        }
        // The kernel clears the parent-death signal `sandbox::spawn` armed when the exec gains
        // capabilities (a daemon exec'd by root receives the master's bounding set), so arm it
        // again. A master that died before this line is noticed below: its end of the control
        // channel is closed and the Welcome never comes.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(Error::DeathSignal)?;
        let control = Channel::from_fd(inherited(CONTROL_FD)?)?;
        let listener = match args.transport {
            Transport::Inet => Some(TcpListener::from(inherited(LISTENER_FD)?)),
            Transport::Unix => None,
        };
        Daemon::start(args, settings, control, listener)
    }

    /// Greets the master on `control` (`Hello`, then waits for `Welcome`). [`Daemon::init`] calls
    /// it with the inherited descriptors; it is public for programs that obtain them otherwise.
    pub fn start(
        args: Args,
        settings: MainCf,
        control: Channel,
        listener: Option<TcpListener>,
    ) -> Result<Daemon, Error> {
        let mut d = Daemon {
            args,
            settings,
            control,
            listener,
            started: false,
            stop: false,
            stop_reported: false,
            waiting: VecDeque::new(),
            served: 0,
        };
        d.send(&ToMaster::Hello {
            version: PROTOCOL_VERSION,
        })?;
        match d.recv_within(MASTER_ANSWER_TIMEOUT)? {
            Some(FromMaster::Welcome { version }) if version == PROTOCOL_VERSION => Ok(d),
            Some(FromMaster::Welcome { version }) => Err(Error::Version(version)),
            Some(FromMaster::Stop) => Err(Error::StoppedBeforeStart),
            Some(other) => Err(Error::Unexpected {
                kind: protocol::Message::kind(&other),
                when: "instead of Welcome",
            }),
            None => Err(Error::Timeout(MASTER_ANSWER_TIMEOUT)),
        }
    }

    pub fn args(&self) -> &Args {
        &self.args
    }

    /// The role: the command name the master started this program under.
    pub fn role(&self) -> &str {
        &self.args.program
    }

    pub fn settings(&self) -> &MainCf {
        &self.settings
    }

    /// Whether the master asked this daemon to stop (it finishes the current work first).
    pub fn stop_requested(&self) -> bool {
        self.stop
    }

    /// Applies the role's sandbox profile from `privileges`, reports `Ready` with what is in
    /// force, and waits for the master's `Go` (see the module header).
    pub fn enter_sandbox(&mut self) -> Result<sandbox::Report, Error> {
        let profile = privileges::profile(self.role(), &self.settings, RunAs::current())?;
        // INVARIANT: this runs before the first request is read and before any thread starts;
        // `sandbox::apply` refuses a multi-threaded process.
        let report = sandbox::apply(&profile)?;
        let wire = to_wire(&report)?;
        self.send(&ToMaster::Ready { report: wire })?;
        tracing::info!(
            uid = report.uid,
            gid = report.gid,
            landlock = %report.landlock,
            seccomp = report.seccomp,
            dev_mode = report.dev_mode,
            "sandbox applied"
        );
        // INVARIANT: nothing is served (no accept, no channel read, no queue file opened by the
        // caller) before the master has checked this process against its profile and said Go.
        self.await_go()?;
        self.started = true;
        Ok(report)
    }

    /// Waits for the master's answer to `Ready`. Only `Go` lets the daemon serve; `Stop` (the
    /// master is stopping), a closed channel (the master refused this process, or is gone), any
    /// other message, or silence for [`START_TIMEOUT`] end start-up with an error.
    fn await_go(&mut self) -> Result<(), Error> {
        match self.recv_within(START_TIMEOUT)? {
            Some(FromMaster::Go) => Ok(()),
            Some(FromMaster::Stop) => {
                self.stop = true;
                Err(Error::StoppedBeforeStart)
            }
            Some(other) => Err(Error::Unexpected {
                kind: protocol::Message::kind(&other),
                when: "instead of Go",
            }),
            None => Err(Error::Timeout(START_TIMEOUT)),
        }
    }

    fn send(&self, msg: &ToMaster) -> Result<(), Error> {
        self.control.send(msg, &[])?;
        Ok(())
    }

    /// Waits up to `timeout` for one control message; `None` on timeout.
    fn recv_within(&mut self, timeout: Duration) -> Result<Option<FromMaster>, Error> {
        match self.recv_control(Some(timeout))? {
            Some((msg, fd)) => {
                drop(fd);
                Ok(Some(msg))
            }
            None => Ok(None),
        }
    }

    /// One control message with its descriptor (if its kind carries one).
    fn recv_control(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(FromMaster, Option<OwnedFd>)>, Error> {
        if !wait_readable(&[self.control.as_fd()], timeout)?[0] {
            return Ok(None);
        }
        let received = self.control.recv::<FromMaster>()?;
        let fd = received.fds.into_iter().next();
        Ok(Some((received.msg, fd)))
    }

    /// Asks the master for a channel to `service` (a master.cf service name). The master checks
    /// the access matrix; a refusal is [`Error::Refused`].
    pub fn connect(&mut self, service: &str) -> Result<Channel, Error> {
        let name = ServiceName::try_from(service).map_err(|e| Error::ServiceName {
            name: service.to_owned(),
            reason: e.to_string(),
        })?;
        self.send(&ToMaster::Connect {
            service: name.clone(),
        })?;
        let deadline = Instant::now() + MASTER_ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((msg, fd)) = self.recv_control(Some(left))? else {
                return Err(Error::Timeout(MASTER_ANSWER_TIMEOUT));
            };
            match (msg, fd) {
                (FromMaster::Connected { service }, Some(fd)) if service == name => {
                    return Ok(Channel::from_fd(fd)?);
                }
                (FromMaster::Refused { service, reason }, _) if service == name => {
                    return Err(Error::Refused {
                        service: service.to_string(),
                        reason: format!("{reason:?}"),
                    });
                }
                (FromMaster::Stop, _) => self.stop = true,
                (FromMaster::Incoming { from }, Some(fd))
                    if self.args.transport == Transport::Unix =>
                {
                    self.waiting.push_back((from, Channel::from_fd(fd)?));
                }
                (other, _) => {
                    return Err(Error::Unexpected {
                        kind: protocol::Message::kind(&other),
                        when: "while waiting for Connected",
                    })
                }
            }
        }
    }

    fn limits(&self) -> Result<(u64, Option<Duration>), Error> {
        let max_use = self.settings.get_int("max_use")?;
        let max_idle = self.settings.get_time("max_idle")?;
        Ok((
            u64::try_from(max_use).unwrap_or(0),
            (!max_idle.is_zero()).then_some(max_idle),
        ))
    }

    fn exit(&self, reason: ExitReason) -> Result<(), Error> {
        tracing::info!(reason = ?reason, served = self.served, "exiting");
        self.send(&ToMaster::Exit { reason })
    }

    /// The control channel, for a daemon that runs its own `poll` loop: readable means
    /// [`Daemon::poll_control`] has something. Events buffered while [`Daemon::connect`] waited
    /// for its answer are not visible on it: call `poll_control` until it returns `None` after
    /// every `connect`.
    pub fn control_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.control.as_fd()
    }

    /// The next control event without waiting: channels buffered during a `connect` first, then
    /// a `Stop` seen during one, then whatever is readable now. For resident unix daemons (qmgr)
    /// that serve many channels at once; [`Daemon::serve_unix`] remains the one-at-a-time loop.
    pub fn poll_control(&mut self) -> Result<Option<ControlEvent>, Error> {
        if self.args.transport != Transport::Unix {
            return Err(Error::WrongTransport {
                service: self.args.service.clone(),
                transport: self.args.transport,
                what: "it receives no channels",
            });
        }
        if let Some((from, channel)) = self.waiting.pop_front() {
            return Ok(Some(ControlEvent::Incoming(from, channel)));
        }
        if self.stop && !self.stop_reported {
            self.stop_reported = true;
            return Ok(Some(ControlEvent::Stop));
        }
        match self.recv_control(Some(Duration::ZERO)) {
            Ok(None) => Ok(None),
            Ok(Some((FromMaster::Stop, _))) => {
                self.stop = true;
                self.stop_reported = true;
                Ok(Some(ControlEvent::Stop))
            }
            Ok(Some((FromMaster::Incoming { from }, Some(fd)))) => {
                Ok(Some(ControlEvent::Incoming(from, Channel::from_fd(fd)?)))
            }
            Ok(Some((other, _))) => Err(Error::Unexpected {
                kind: protocol::Message::kind(&other),
                when: "while serving",
            }),
            Err(Error::Channel(ChannelError::PeerClosed)) => Ok(Some(ControlEvent::MasterGone)),
            Err(e) => Err(e),
        }
    }

    /// Tells the master this process can take another channel. A daemon using
    /// [`Daemon::poll_control`] says it once for each `Incoming` it took.
    pub fn idle(&mut self) -> Result<(), Error> {
        self.served += 1;
        self.send(&ToMaster::Idle)
    }

    /// Serves TCP connections accepted on the listener: `Busy` after each accept, `Idle` after
    /// each session; returns after `max_use` sessions, after `max_idle` without a connection, or
    /// when the master says `Stop` (between sessions).
    pub fn serve_inet<E: Display>(
        &mut self,
        mut handler: impl FnMut(&mut Daemon, TcpStream, SocketAddr) -> Result<(), E>,
    ) -> Result<Ended, Error> {
        let Some(listener) = self.listener.take() else {
            return Err(Error::WrongTransport {
                service: self.args.service.clone(),
                transport: self.args.transport,
                what: "it has no listener",
            });
        };
        assert!(self.started, "serve_inet before enter_sandbox and Go");
        let (max_use, max_idle) = self.limits()?;
        let mut idle_since = Instant::now();
        loop {
            if self.stop {
                return Ok(Ended::Stopped);
            }
            let left = max_idle.map(|m| m.saturating_sub(idle_since.elapsed()));
            if left == Some(Duration::ZERO) {
                self.exit(ExitReason::MaxIdle)?;
                return Ok(Ended::MaxIdle);
            }
            let ready = wait_readable(&[self.control.as_fd(), listener.as_fd()], left)?;
            if ready[0] {
                match self.control.recv::<FromMaster>() {
                    Ok(r) => match r.msg {
                        FromMaster::Stop => self.stop = true,
                        other => {
                            return Err(Error::Unexpected {
                                kind: protocol::Message::kind(&other),
                                when: "in an inet service",
                            })
                        }
                    },
                    Err(ChannelError::PeerClosed) => return Ok(Ended::MasterGone),
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            if !ready[1] {
                continue;
            }
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(Error::Listener(e)),
            };
            self.send(&ToMaster::Busy)?;
            if let Err(e) = handler(self, stream, peer) {
                tracing::warn!(client = %peer, "session failed: {e}");
            }
            self.served += 1;
            self.send(&ToMaster::Idle)?;
            idle_since = Instant::now();
            if max_use > 0 && self.served >= max_use {
                self.exit(ExitReason::MaxUse)?;
                return Ok(Ended::MaxUse);
            }
        }
    }

    /// Serves channels the master hands over (`Incoming`), one at a time, saying `Idle` after
    /// each; returns after `max_use` channels, after `max_idle` without one, or on `Stop`.
    pub fn serve_unix<E: Display>(
        &mut self,
        mut handler: impl FnMut(&mut Daemon, ServiceName, Channel) -> Result<(), E>,
    ) -> Result<Ended, Error> {
        if self.args.transport != Transport::Unix {
            return Err(Error::WrongTransport {
                service: self.args.service.clone(),
                transport: self.args.transport,
                what: "it receives no channels",
            });
        }
        assert!(self.started, "serve_unix before enter_sandbox and Go");
        let (max_use, max_idle) = self.limits()?;
        let mut idle_since = Instant::now();
        let mut ending: Option<(Ended, Instant)> = None;
        loop {
            if let Some((from, channel)) = self.waiting.pop_front() {
                if let Err(e) = handler(self, from.clone(), channel) {
                    tracing::warn!(client = %from, "channel failed: {e}");
                }
                self.served += 1;
                self.send(&ToMaster::Idle)?;
                idle_since = Instant::now();
                if ending.is_none() && max_use > 0 && self.served >= max_use {
                    self.exit(ExitReason::MaxUse)?;
                    ending = Some((Ended::MaxUse, Instant::now() + EXIT_GRACE));
                }
                continue;
            }
            if self.stop {
                return Ok(ending.map_or(Ended::Stopped, |(why, _)| why));
            }
            let left = match ending {
                Some((_, deadline)) => Some(deadline.saturating_duration_since(Instant::now())),
                None => max_idle.map(|m| m.saturating_sub(idle_since.elapsed())),
            };
            if left == Some(Duration::ZERO) {
                if let Some((why, _)) = ending {
                    return Ok(why);
                }
                self.exit(ExitReason::MaxIdle)?;
                ending = Some((Ended::MaxIdle, Instant::now() + EXIT_GRACE));
                continue;
            }
            match self.recv_control(left) {
                Ok(None) => {}
                Ok(Some((FromMaster::Stop, _))) => self.stop = true,
                Ok(Some((FromMaster::Incoming { from }, Some(fd)))) => {
                    self.waiting.push_back((from, Channel::from_fd(fd)?));
                }
                Ok(Some((other, _))) => {
                    return Err(Error::Unexpected {
                        kind: protocol::Message::kind(&other),
                        when: "while idle",
                    })
                }
                Err(Error::Channel(ChannelError::PeerClosed)) => return Ok(Ended::MasterGone),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `t` as a `poll` timeout, rounded up to the millisecond so that a wait of 0.4 ms does not
/// become a busy loop of zero-length polls; longer than `poll` can say is its longest.
pub fn poll_timeout(t: Duration) -> PollTimeout {
    let ms = t
        .as_millis()
        .saturating_add(u128::from(t.subsec_nanos() % 1_000_000 != 0));
    PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(PollTimeout::MAX)
}

/// Waits until some of `fds` are readable (or hung up); `None` waits without limit.
fn wait_readable(
    fds: &[std::os::fd::BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> Result<Vec<bool>, Error> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => poll_timeout(t),
    };
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    loop {
        match nix::poll::poll(&mut pfds, timeout) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Poll(e)),
        }
    }
    Ok(pfds
        .iter()
        .map(|p| {
            p.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        })
        .collect())
}

/// The sandbox's report in the protocol's wire form.
pub fn to_wire(report: &sandbox::Report) -> Result<SandboxReport, Error> {
    let c = &report.caps;
    let capabilities = Capabilities::new(
        c.effective,
        c.permitted,
        c.inheritable,
        c.ambient,
        c.bounding,
    )
    .map_err(|e| Error::Report(e.to_string()))?;
    let abi = u32::try_from(report.landlock_abi).unwrap_or(0);
    let status = match report.landlock {
        _ if abi == 0 => LandlockStatus::NotEnforced,
        sandbox::LandlockStatus::FullyEnforced => LandlockStatus::FullyEnforced,
        sandbox::LandlockStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
        sandbox::LandlockStatus::NotEnforced => LandlockStatus::NotEnforced,
    };
    let landlock = LandlockReport::new(abi, status).map_err(|e| Error::Report(e.to_string()))?;
    Ok(SandboxReport {
        uid: report.uid,
        gid: report.gid,
        capabilities,
        no_new_privs: report.no_new_privs,
        landlock,
        seccomp: report.seccomp,
        dev_mode: report.dev_mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::thread;

    fn args(transport: Transport) -> Args {
        Args {
            program: "smtpd".to_owned(),
            config_dir: PathBuf::from("/nonexistent"),
            service: "smtpd".to_owned(),
            transport,
            overrides: Vec::new(),
        }
    }

    /// Runs `master` on the other end of a fresh control channel and starts a daemon on this end.
    fn with_master<T: Send + 'static>(
        transport: Transport,
        master: impl FnOnce(Channel) -> T + Send + 'static,
    ) -> (Result<Daemon, Error>, thread::JoinHandle<T>) {
        let (ours, theirs) = Channel::pair().unwrap();
        let handle = thread::spawn(move || master(theirs));
        let d = Daemon::start(args(transport), MainCf::defaults(), ours, None);
        (d, handle)
    }

    fn expect(ch: &Channel) -> ToMaster {
        ch.recv::<ToMaster>().unwrap().msg
    }

    fn welcome(ch: &Channel) {
        assert_eq!(
            expect(ch),
            ToMaster::Hello {
                version: PROTOCOL_VERSION
            }
        );
        ch.send(
            &FromMaster::Welcome {
                version: PROTOCOL_VERSION,
            },
            &[],
        )
        .unwrap();
    }

    fn name(s: &str) -> ServiceName {
        ServiceName::try_from(s).unwrap()
    }

    #[test]
    fn hello_welcome_then_a_granted_channel_works() {
        let (d, master) = with_master(Transport::Inet, |ch| {
            welcome(&ch);
            assert_eq!(
                expect(&ch),
                ToMaster::Connect {
                    service: name("cleanup")
                }
            );
            let (a, b) = Channel::pair().unwrap();
            ch.send(
                &FromMaster::Connected {
                    service: name("cleanup"),
                },
                &[a.as_fd()],
            )
            .unwrap();
            assert_eq!(b.recv::<ToMaster>().unwrap().msg, ToMaster::Busy);
        });
        let mut d = d.unwrap();
        let channel = d.connect("cleanup").unwrap();
        channel.send(&ToMaster::Busy, &[]).unwrap();
        master.join().unwrap();
    }

    #[test]
    fn refused_connect_is_an_error_and_stop_meanwhile_is_remembered() {
        let (d, master) = with_master(Transport::Inet, |ch| {
            welcome(&ch);
            let _ = expect(&ch);
            ch.send(&FromMaster::Stop, &[]).unwrap();
            ch.send(
                &FromMaster::Refused {
                    service: name("qmgr"),
                    reason: protocol::control::RefusalReason::NotPermitted,
                },
                &[],
            )
            .unwrap();
        });
        let mut d = d.unwrap();
        assert!(!d.stop_requested());
        match d.connect("qmgr") {
            Err(Error::Refused { service, .. }) => assert_eq!(service, "qmgr"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(d.stop_requested());
        master.join().unwrap();
    }

    #[test]
    fn an_incoming_channel_to_an_inet_service_is_a_protocol_error() {
        let (d, master) = with_master(Transport::Inet, |ch| {
            welcome(&ch);
            let _ = expect(&ch);
            let (a, _b) = Channel::pair().unwrap();
            ch.send(
                &FromMaster::Incoming {
                    from: name("smtpd"),
                },
                &[a.as_fd()],
            )
            .unwrap();
        });
        let mut d = d.unwrap();
        assert!(matches!(
            d.connect("cleanup"),
            Err(Error::Unexpected {
                kind: "Incoming",
                ..
            })
        ));
        master.join().unwrap();
    }

    #[test]
    fn stop_before_welcome_and_a_silent_master_end_start_up() {
        let (d, master) = with_master(Transport::Unix, |ch| {
            let _ = expect(&ch);
            ch.send(&FromMaster::Stop, &[]).unwrap();
        });
        assert!(matches!(d, Err(Error::StoppedBeforeStart)));
        master.join().unwrap();
        let (d, master) = with_master(Transport::Unix, drop);
        assert!(matches!(d, Err(Error::Channel(ChannelError::PeerClosed))));
        master.join().unwrap();
    }

    #[test]
    fn start_up_ends_at_go_and_nothing_else_starts_serving() {
        // Go: the daemon may serve.
        let (d, master) = with_master(Transport::Unix, |ch| {
            welcome(&ch);
            ch.send(&FromMaster::Go, &[]).unwrap();
        });
        let mut d = d.unwrap();
        d.await_go().unwrap();
        master.join().unwrap();
        // A channel handed over before Go is a protocol error, not work: it is not taken.
        let (d, master) = with_master(Transport::Unix, |ch| {
            welcome(&ch);
            let (a, b) = Channel::pair().unwrap();
            ch.send(
                &FromMaster::Incoming {
                    from: name("smtpd"),
                },
                &[a.as_fd()],
            )
            .unwrap();
            drop(a);
            b
        });
        let mut d = d.unwrap();
        assert!(matches!(
            d.await_go(),
            Err(Error::Unexpected {
                kind: "Incoming",
                when: "instead of Go"
            })
        ));
        assert!(d.waiting.is_empty());
        drop(d);
        let b = master.join().unwrap();
        assert!(matches!(
            b.recv::<ToMaster>(),
            Err(ChannelError::PeerClosed)
        ));
        // Stop before Go: the master is stopping; the daemon starts nothing.
        let (d, master) = with_master(Transport::Inet, |ch| {
            welcome(&ch);
            ch.send(&FromMaster::Stop, &[]).unwrap();
        });
        let mut d = d.unwrap();
        assert!(matches!(d.await_go(), Err(Error::StoppedBeforeStart)));
        assert!(d.stop_requested());
        master.join().unwrap();
        // The master closes the channel (it refused this process, or it is gone).
        let (d, master) = with_master(Transport::Inet, |ch| welcome(&ch));
        let mut d = d.unwrap();
        master.join().unwrap();
        assert!(matches!(
            d.await_go(),
            Err(Error::Channel(ChannelError::PeerClosed))
        ));
    }

    #[test]
    fn bad_service_names_never_reach_the_master() {
        let (d, master) = with_master(Transport::Inet, |ch| {
            welcome(&ch);
            ch.set_nonblocking(true).unwrap();
            thread::sleep(Duration::from_millis(50));
            assert!(matches!(
                ch.recv::<ToMaster>(),
                Err(ChannelError::WouldBlock)
            ));
        });
        let mut d = d.unwrap();
        assert!(matches!(
            d.connect("../qmgr"),
            Err(Error::ServiceName { .. })
        ));
        master.join().unwrap();
    }

    #[test]
    fn poll_control_hands_over_channels_without_blocking_and_reports_stop_once() {
        let (d, master) = with_master(Transport::Unix, |ch| {
            welcome(&ch);
            for _ in 0..2 {
                let (a, b) = Channel::pair().unwrap();
                ch.send(
                    &FromMaster::Incoming {
                        from: name("cleanup"),
                    },
                    &[a.as_fd()],
                )
                .unwrap();
                b.send(&ToMaster::Busy, &[]).unwrap();
                assert_eq!(expect(&ch), ToMaster::Idle);
            }
            ch.send(&FromMaster::Stop, &[]).unwrap();
            // Keep the channel open until the daemon has seen Stop.
            assert_eq!(expect(&ch), ToMaster::Idle);
        });
        let mut d = d.unwrap();
        let mut taken = 0;
        let mut stops = 0;
        while stops == 0 {
            wait_readable(&[d.control_fd()], None).unwrap();
            while let Some(event) = d.poll_control().unwrap() {
                match event {
                    ControlEvent::Incoming(from, channel) => {
                        assert_eq!(from.as_str(), "cleanup");
                        assert_eq!(channel.recv::<ToMaster>().unwrap().msg, ToMaster::Busy);
                        taken += 1;
                        d.idle().unwrap();
                    }
                    ControlEvent::Stop => stops += 1,
                    ControlEvent::MasterGone => panic!("master gone"),
                }
            }
        }
        assert_eq!((taken, stops), (2, 1));
        assert!(d.stop_requested());
        assert!(d.poll_control().unwrap().is_none(), "Stop is reported once");
        d.idle().unwrap();
        master.join().unwrap();
        assert!(matches!(
            d.poll_control().unwrap(),
            Some(ControlEvent::MasterGone)
        ));
    }

    #[test]
    fn report_maps_to_the_wire() {
        let report = sandbox::Report {
            service: "smtpd".to_owned(),
            uid: 61001,
            gid: 61001,
            groups: Vec::new(),
            caps: sandbox::CapSets::default(),
            no_new_privs: true,
            landlock_abi: 7,
            landlock: sandbox::LandlockStatus::FullyEnforced,
            seccomp: true,
            syscall_count: 40,
            dev_mode: false,
            shortfalls: Vec::new(),
            notes: Vec::new(),
        };
        let wire = to_wire(&report).unwrap();
        assert_eq!((wire.uid, wire.gid), (61001, 61001));
        assert_eq!(wire.landlock.abi(), 7);
        assert_eq!(wire.landlock.status(), LandlockStatus::FullyEnforced);
        let mut bad = report.clone();
        bad.caps.effective = 1;
        assert!(
            matches!(to_wire(&bad), Err(Error::Report(_))),
            "effective not permitted"
        );
        let mut none = report;
        none.landlock_abi = 0;
        assert_eq!(
            to_wire(&none).unwrap().landlock.status(),
            LandlockStatus::NotEnforced
        );
    }
}
