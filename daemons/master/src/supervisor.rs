//! The master's loop: one thread, one `poll`, over the signal fd, the listeners of inet services
//! whose processes are all busy, every child's control channel and every child's stderr pipe.
//!
//! Trusts: the configuration and the kernel (`waitpid`, `/proc/PID/status`). Does not trust any
//! child: each control message is decoded by `protocol`, then checked against that process's
//! state (`pool`), against its role's profile (`Ready`), and against the access matrix
//! (`Connect`). A child that breaks the protocol is logged (service, pid, message kind), killed
//! and counted as a failure of its service; a refused `Connect` is answered `Refused` and logged
//! with both services' names. A child's stderr is cut into bounded, escaped lines under a prefix
//! the master chose. The master never parses anything that came from the network.
//!
//! master.cf's wakeup column: Postfix's master writes a wake-up request to such a service's
//! socket every N seconds (starting a process to receive it), which is how its qmgr and pickup
//! run at all without mail arriving. Postern's channels are made on request only, so the master
//! cannot poke a service; instead a unix service with a wakeup greater than zero is *resident*:
//! the master starts one process of it at start-up and again whenever none is running (after a
//! crash, `max_idle` or `max_use`), subject to the usual throttle, and the daemon keeps its own
//! timer (qmgr's `queue_run_delay`). The interval's value and the `?` suffix are not used; a
//! wakeup on an inet service is ignored (its processes start when clients connect).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use privileges::RunAs;
use protocol::control::{
    ExitReason, FromMaster, LandlockStatus, RefusalReason, SandboxReport, ToMaster,
    PROTOCOL_VERSION, START_TIMEOUT,
};
use protocol::{Channel, ChannelError, Message, ServiceName};
use sandbox::Enforcement;

use crate::config::{self, Config, ServiceSpec};
use crate::kernel;
use crate::listen;
use crate::log::{LineBuffer, SharedLogger};
use crate::pool::{Dispatch, Kind, Phase, Pool, Said, Waiting};
use crate::reload;
use crate::spawner::Spawner;
use crate::status;

/// Bytes read from one child's stderr per wake-up, so that a chatty child cannot starve the others.
const MAX_LOG_READ: usize = 64 * 1024;

/// Control messages handled from one child per wake-up, for the same reason.
const MAX_MESSAGES_PER_WAKEUP: usize = 64;

/// How long a new process may take to say `Hello` and `Ready`. Start-up is reading the
/// configuration and applying the sandbox (milliseconds); a process still silent after this is
/// hung or hostile, and while it counts as available its service would get no other process.
/// The daemon waits as long for `Go` (the same constant, from `protocol`).
const READY_TIMEOUT: Duration = START_TIMEOUT;

/// A service is identified by its master.cf name and type, as in Postfix.
type Key = (String, Kind);

/// A channel waiting for a process of a unix service.
struct Pending {
    from: ServiceName,
    end: Channel,
}

struct Service {
    spec: ServiceSpec,
    pool: Pool,
    listener: Option<TcpListener>,
    waiting: Waiting<Pending>,
    /// Gone from master.cf after a reload: no new processes; forgotten once its last one exits.
    removed: bool,
}

impl Service {
    /// A service as master.cf now declares it, with no process yet.
    fn new(spec: &ServiceSpec, listener: Option<TcpListener>, throttle_time: Duration) -> Service {
        Service {
            pool: Pool::new(spec.kind, spec.process_limit, throttle_time),
            spec: spec.clone(),
            listener,
            waiting: Waiting::default(),
            removed: false,
        }
    }
}

struct Child {
    key: Key,
    program: String,
    control: Option<Channel>,
    stderr: Option<File>,
    lines: LineBuffer,
    /// Already counted as a failure (protocol violation) or ended by the master on purpose.
    accounted: bool,
    started: Instant,
}

/// Why the loop should wake up for a descriptor.
#[derive(Clone, Debug)]
enum Token {
    Signal,
    Listener(Key),
    Control(i32),
    Stderr(i32),
}

/// A reload whose outcome is not written yet: it waits for a new process of each resident
/// service (see `reload`).
struct Settling {
    generation: u64,
    outcome: reload::Outcome,
    /// When the reload happened: processes started since then read the new configuration.
    since: Instant,
    deadline: Instant,
    /// Resident services without a new process that got `Go`.
    waiting: Vec<Key>,
}

/// The status file is rewritten at most this often: its busy counts change with every session, and
/// a file written and renamed per session costs a journal commit that competes with the queue's
/// fsyncs. A change is written at once when the last write is older, otherwise when this has passed.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

pub struct Master {
    cfg: Config,
    run_as: RunAs,
    my_uid: u32,
    /// The master's own bounding set (`CapBnd`), read at start: what an unprivileged daemon
    /// inherits and cannot drop (see [`check_ready`]).
    my_bounding: Option<u64>,
    services: BTreeMap<Key, Service>,
    children: BTreeMap<i32, Child>,
    signals: SignalFd,
    logger: SharedLogger,
    stopping: Option<Instant>,
    killed_all: bool,
    status_text: String,
    /// When the status file was last written, and when a pending change is due.
    status_written: Option<Instant>,
    status_due: Option<Instant>,
    /// Starts every daemon (this process cannot `execve`).
    spawner: Spawner,
    /// Reloads so far (the generation the next outcome file names is one more).
    reload_generation: u64,
    settling: Option<Settling>,
}

fn key_of(spec: &ServiceSpec) -> Key {
    (spec.name.clone(), spec.kind)
}

/// Binds the listeners of every inet service (the start-up step that must succeed before the
/// master reports itself ready).
pub fn bind_listeners(cfg: &Config) -> Result<BTreeMap<Key, TcpListener>, String> {
    let mut out = BTreeMap::new();
    for spec in &cfg.services {
        if let Some(addr) = spec.address {
            let l = listen::bind(addr)
                .map_err(|e| format!("service {}: cannot listen on {addr}: {e}", spec.label()))?;
            out.insert(key_of(spec), l);
        }
    }
    Ok(out)
}

impl Master {
    pub fn new(
        cfg: Config,
        run_as: RunAs,
        mut listeners: BTreeMap<Key, TcpListener>,
        signals: SignalFd,
        logger: SharedLogger,
        spawner: Spawner,
    ) -> Master {
        let services = cfg
            .services
            .iter()
            .map(|spec| {
                let key = key_of(spec);
                let listener = listeners.remove(&key);
                (key, Service::new(spec, listener, cfg.throttle_time))
            })
            .collect();
        Master {
            cfg,
            run_as,
            my_uid: nix::unistd::getuid().as_raw(),
            my_bounding: kernel::read(std::process::id() as i32)
                .ok()
                .and_then(|k| k.cap_bnd),
            services,
            children: BTreeMap::new(),
            signals,
            logger,
            stopping: None,
            killed_all: false,
            status_text: String::new(),
            status_written: None,
            status_due: None,
            spawner,
            reload_generation: 0,
            settling: None,
        }
    }

    /// Writes the reload outcome file for `generation` (0 at start-up).
    fn write_reload_outcome(&self, generation: u64, outcome: &reload::Outcome) {
        let dir = crate::pidfile::pid_dir(&self.cfg.queue_directory);
        let text = reload::render(std::process::id(), generation, outcome);
        if let Err(e) = reload::write(&dir, &text) {
            tracing::warn!("cannot write {}/{}: {e}", dir.display(), reload::FILE_NAME);
        }
    }

    /// Runs until stopped; returns once every child has exited.
    pub fn run(&mut self) {
        tracing::info!(services = self.services.len(), "daemon started");
        self.write_reload_outcome(0, &reload::Outcome::default());
        loop {
            let now = Instant::now();
            self.expire_waiting(now);
            self.kill_unready(now);
            self.keep_resident(now);
            self.dispatch_all(now);
            self.settle_reload(now);
            self.write_status();
            if let Some(deadline) = self.stopping {
                if self.children.is_empty() {
                    break;
                }
                if now >= deadline && !self.killed_all {
                    tracing::warn!(
                        processes = self.children.len(),
                        "stop timeout: killing the remaining processes"
                    );
                    for (&pid, child) in self.children.iter_mut() {
                        child.accounted = true;
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    self.killed_all = true;
                }
            }
            let (tokens, ready) = self.wait(now);
            for (token, ready) in tokens.into_iter().zip(ready) {
                if !ready {
                    continue;
                }
                match token {
                    Token::Signal => self.on_signals(),
                    Token::Listener(key) => self.on_listener(&key),
                    Token::Control(pid) => self.on_control(pid),
                    Token::Stderr(pid) => self.on_stderr(pid),
                }
            }
        }
        tracing::info!("master exiting");
    }

    /// Processes that were started but are not ready in time.
    fn unready(&self) -> impl Iterator<Item = (i32, Instant)> + '_ {
        self.children.iter().filter_map(|(&pid, c)| {
            let phase = self.services.get(&c.key)?.pool.phase(pid)?;
            (!c.accounted && phase.starting()).then_some((pid, c.started + READY_TIMEOUT))
        })
    }

    fn kill_unready(&mut self, now: Instant) {
        let late: Vec<i32> = self
            .unready()
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(pid, _)| pid)
            .collect();
        for pid in late {
            self.violation(
                pid,
                "Ready",
                &format!("not ready within {} s", READY_TIMEOUT.as_secs()),
            );
        }
    }

    /// Polls; returns the tokens and which of them are ready.
    fn wait(&self, now: Instant) -> (Vec<Token>, Vec<bool>) {
        let mut tokens = vec![Token::Signal];
        let mut fds: Vec<BorrowedFd<'_>> = vec![self.signals.as_fd()];
        let mut deadline: Option<Instant> = self.stopping.map(|d| {
            if self.killed_all {
                now + Duration::from_millis(100)
            } else {
                d
            }
        });
        let mut earlier = |t: Instant| {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        };
        if let Some(due) = self.status_due {
            earlier(due);
        }
        if let Some(s) = &self.settling {
            earlier(s.deadline);
        }
        for (_, d) in self.unready() {
            earlier(d);
        }
        for (key, svc) in &self.services {
            if let Some(until) = svc.pool.throttle.until().filter(|u| *u > now) {
                earlier(until);
            }
            if let Some(d) = svc.waiting.next_deadline() {
                earlier(d);
            }
            if let Some(l) = &svc.listener {
                if self.stopping.is_none() && svc.pool.wants_listener(now) {
                    tokens.push(Token::Listener(key.clone()));
                    fds.push(l.as_fd());
                }
            }
        }
        for (&pid, child) in &self.children {
            if let Some(c) = &child.control {
                tokens.push(Token::Control(pid));
                fds.push(c.as_fd());
            }
            if let Some(e) = &child.stderr {
                tokens.push(Token::Stderr(pid));
                fds.push(e.as_fd());
            }
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let ms = d.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut pfds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return (tokens, vec![false; pfds.len()]),
            Err(e) => {
                tracing::error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
                return (tokens, vec![false; pfds.len()]);
            }
        }
        let ready = pfds
            .iter()
            .map(|p| {
                p.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            })
            .collect();
        (tokens, ready)
    }

    fn on_signals(&mut self) {
        let mut reap = false;
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => reap = true,
                    Ok(Signal::SIGHUP) if self.stopping.is_none() => self.reload(),
                    Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) if self.stopping.is_none() => {
                        tracing::info!(signal = %sig, "stopping");
                        self.begin_stop(Instant::now());
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("reading the signal fd: {e}");
                    break;
                }
            }
        }
        if reap {
            self.reap();
        }
    }

    fn on_listener(&mut self, key: &Key) {
        let now = Instant::now();
        let wants = self
            .services
            .get(key)
            .is_some_and(|s| s.pool.wants_listener(now));
        if wants {
            self.start_process(key, now);
        }
    }

    fn label(&self, key: &Key) -> String {
        format!("{}/{}", key.0, key.1.as_str())
    }

    /// Starts one process of a service; on failure the service is throttled.
    fn start_process(&mut self, key: &Key, now: Instant) {
        let Some(svc) = self.services.get_mut(key) else {
            return;
        };
        match spawn_daemon(&self.spawner, &svc.spec, svc.listener.as_ref()) {
            Ok((pid, control, stderr)) => {
                svc.pool.add(pid);
                tracing::info!(service = %svc.spec.label(), pid, "process started");
                self.children.insert(
                    pid,
                    Child {
                        key: key.clone(),
                        program: svc.spec.role.clone(),
                        control: Some(control),
                        stderr: Some(stderr),
                        lines: LineBuffer::default(),
                        accounted: false,
                        started: now,
                    },
                );
            }
            Err(e) => {
                let delay = svc.pool.throttle.failure(now);
                tracing::warn!(
                    "service {} throttled for {} s after failing to start a process: {e}",
                    svc.spec.label(),
                    delay.as_secs()
                );
            }
        }
    }

    fn on_stderr(&mut self, pid: i32) {
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        drain_stderr(&self.logger, pid, child, MAX_LOG_READ);
    }

    fn on_control(&mut self, pid: i32) {
        for _ in 0..MAX_MESSAGES_PER_WAKEUP {
            let Some(child) = self.children.get_mut(&pid) else {
                return;
            };
            let Some(control) = &child.control else {
                return;
            };
            match control.recv::<ToMaster>() {
                Ok(received) => self.on_message(pid, received.msg),
                Err(ChannelError::WouldBlock) => return,
                Err(ChannelError::PeerClosed) => {
                    child.control = None;
                    return;
                }
                Err(e) => {
                    let kind = match &e {
                        ChannelError::WrongFdCount { kind, .. } => kind,
                        _ => "undecodable message",
                    };
                    self.violation(pid, kind, &e.to_string());
                    return;
                }
            }
        }
    }

    fn send(&mut self, pid: i32, msg: &FromMaster, fd: Option<BorrowedFd<'_>>) -> bool {
        let Some(control) = self.children.get(&pid).and_then(|c| c.control.as_ref()) else {
            return false;
        };
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        match control.send(msg, &fds) {
            Ok(()) => true,
            // It is exiting; its exit status tells the rest.
            Err(ChannelError::PeerClosed) => false,
            Err(e) => {
                tracing::warn!(pid, kind = msg.kind(), "cannot send to process: {e}");
                false
            }
        }
    }

    fn on_message(&mut self, pid: i32, msg: ToMaster) {
        let Some(key) = self.children.get(&pid).map(|c| c.key.clone()) else {
            return;
        };
        let said = match &msg {
            ToMaster::Hello { .. } => Said::Hello,
            ToMaster::Ready { .. } => Said::Ready,
            ToMaster::Busy => Said::Busy,
            ToMaster::Idle => Said::Idle,
            ToMaster::Connect { .. } => Said::Connect,
            ToMaster::Exit { .. } => Said::Exit,
        };
        let checked = match self.services.get_mut(&key) {
            Some(svc) => svc.pool.on_message(pid, said),
            None => return,
        };
        if let Err(v) = checked {
            self.violation(pid, msg.kind(), &v.to_string());
            return;
        }
        match msg {
            ToMaster::Hello { version } => {
                if version != PROTOCOL_VERSION {
                    self.violation(pid, "Hello", &format!("protocol version {version}"));
                } else {
                    self.send(
                        pid,
                        &FromMaster::Welcome {
                            version: PROTOCOL_VERSION,
                        },
                        None,
                    );
                }
            }
            ToMaster::Ready { report } => self.on_ready(pid, &key, &report),
            ToMaster::Busy | ToMaster::Idle => {}
            ToMaster::Connect { service } => self.on_connect(pid, &key, service),
            ToMaster::Exit { reason } => {
                let why = match &reason {
                    ExitReason::MaxUse => "max_use reached".to_owned(),
                    ExitReason::MaxIdle => "max_idle reached".to_owned(),
                    ExitReason::Stopped => "stopped".to_owned(),
                    ExitReason::Fatal { detail } => format!("fatal: {detail}"),
                };
                tracing::info!(service = %self.label(&key), pid, reason = %why, "process exiting");
                self.send(pid, &FromMaster::Stop, None);
            }
        }
    }

    /// Compares a `Ready` report, and what the kernel says about the process, with the profile;
    /// answers `Go` if they match (or, under `best_effort`, after logging what falls short). A
    /// process refused here is killed and never gets `Go`, so it has served nothing.
    fn on_ready(&mut self, pid: i32, key: &Key, report: &SandboxReport) {
        let Some(svc) = self.services.get(key) else {
            return;
        };
        let shortfalls = check_ready(
            &svc.spec,
            self.run_as,
            (self.my_uid, self.my_bounding),
            pid,
            report,
        );
        if !shortfalls.is_empty() {
            let text = shortfalls.join("; ");
            match svc.spec.profile.enforcement {
                Enforcement::Required => {
                    self.violation(
                        pid,
                        "Ready",
                        &format!(
                            "sandbox falls short of its profile (sandbox_enforcement = required): {text}"
                        ),
                    );
                    return;
                }
                Enforcement::BestEffort => tracing::warn!(
                    service = %svc.spec.label(),
                    pid,
                    "sandbox falls short of its profile (best_effort): {text}"
                ),
            }
        }
        // INVARIANT: `Go` only after the check above, and the pool hands the process work (a
        // channel; for inet, the count of available processes) only once `Go` is sent.
        if self.send(pid, &FromMaster::Go, None) {
            if let Some(svc) = self.services.get_mut(key) {
                svc.pool.go(pid);
            }
        }
    }

    fn refuse(&mut self, pid: i32, service: ServiceName, reason: RefusalReason) {
        self.send(pid, &FromMaster::Refused { service, reason }, None);
        if let Some(svc) = self
            .children
            .get(&pid)
            .map(|c| c.key.clone())
            .and_then(|k| self.services.get_mut(&k))
        {
            svc.pool.connect_answered(pid);
        }
    }

    /// The channel broker.
    fn on_connect(&mut self, pid: i32, key: &Key, target: ServiceName) {
        let Some(client) = self.services.get(key) else {
            return;
        };
        let client_role = client.spec.role.clone();
        let client_label = client.spec.label();
        if self.stopping.is_some() {
            self.refuse(pid, target, RefusalReason::ShuttingDown);
            return;
        }
        let target_key: Key = (target.as_str().to_owned(), Kind::Unix);
        let configured = self
            .services
            .get(&target_key)
            .filter(|s| !s.removed)
            .map(|s| s.spec.role.clone());
        let target_role = configured
            .clone()
            .unwrap_or_else(|| target.as_str().to_owned());
        if !privileges::may_connect(&client_role, &target_role) {
            tracing::warn!(
                "refused Connect from {client_role} (service {client_label}, pid {pid}) to {target} ({target_role}): not in the access matrix"
            );
            self.refuse(pid, target, RefusalReason::NotPermitted);
            return;
        }
        if configured.is_none() {
            tracing::warn!(
                "refused Connect from {client_role} (service {client_label}, pid {pid}) to {target}: no such unix service in master.cf"
            );
            self.refuse(pid, target, RefusalReason::UnknownService);
            return;
        }
        let (ours, theirs) = match Channel::pair() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!("Connect from {client_label} to {target}: {e}");
                self.refuse(pid, target, RefusalReason::Unavailable);
                return;
            }
        };
        let from = match ServiceName::try_from(client_role.as_str()) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("Connect from {client_label}: role name {client_role:?}: {e}");
                self.refuse(pid, target, RefusalReason::Unavailable);
                return;
            }
        };
        let now = Instant::now();
        let queued = self
            .services
            .get_mut(&target_key)
            .map(|svc| svc.waiting.push(now, Pending { from, end: theirs }));
        if !matches!(queued, Some(Ok(()))) {
            tracing::warn!(
                "refused Connect from {client_label} (pid {pid}) to {target}: too many channels waiting"
            );
            self.refuse(pid, target, RefusalReason::Unavailable);
            return;
        }
        self.send(
            pid,
            &FromMaster::Connected { service: target },
            Some(ours.as_fd()),
        );
        if let Some(svc) = self.services.get_mut(key) {
            svc.pool.connect_answered(pid);
        }
        self.dispatch(&target_key, now);
    }

    /// Hands waiting channels of one unix service to idle processes, starting one if allowed.
    fn dispatch(&mut self, key: &Key, now: Instant) {
        loop {
            let Some(svc) = self.services.get_mut(key) else {
                return;
            };
            if svc.waiting.is_empty() {
                return;
            }
            match svc.pool.dispatch(now) {
                Dispatch::To(pid) => {
                    let Some((deadline, pending)) = svc.waiting.pop_with_deadline() else {
                        return;
                    };
                    let msg = FromMaster::Incoming {
                        from: pending.from.clone(),
                    };
                    if !self.send(pid, &msg, Some(pending.end.as_fd())) {
                        // The process is going away; the channel waits for another.
                        if let Some(svc) = self.services.get_mut(key) {
                            svc.pool.mark_exiting(pid);
                            svc.waiting.push_front(deadline, pending);
                        }
                    }
                }
                Dispatch::Start => {
                    self.start_process(key, now);
                    return;
                }
                Dispatch::Wait => return,
            }
        }
    }

    /// Starts a process of each resident service (unix, wakeup > 0) that has none.
    fn keep_resident(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .services
            .iter()
            .filter(|(_, s)| {
                s.spec.kind == Kind::Unix
                    && s.spec.wakeup > 0
                    && !s.removed
                    && s.pool.live() == 0
                    && s.pool.may_start(now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.start_process(&key, now);
        }
    }

    fn dispatch_all(&mut self, now: Instant) {
        let keys: Vec<Key> = self
            .services
            .iter()
            .filter(|(_, s)| !s.waiting.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.dispatch(&key, now);
        }
    }

    fn expire_waiting(&mut self, now: Instant) {
        for svc in self.services.values_mut() {
            let expired = svc.waiting.expire(now);
            if !expired.is_empty() {
                tracing::warn!(
                    service = %svc.spec.label(),
                    channels = expired.len(),
                    "channels waited too long for a process and were closed"
                );
            }
        }
    }

    /// A child broke the protocol: log, kill, count as a failure of its service.
    fn violation(&mut self, pid: i32, kind: &str, detail: &str) {
        let Some(child) = self.children.get_mut(&pid) else {
            return;
        };
        let key = child.key.clone();
        child.accounted = true;
        child.control = None;
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let label = self.label(&key);
        tracing::warn!(
            "process {} pid {pid} of service {label}: protocol violation ({kind}): {detail}; killed",
            child_program(&self.children, pid)
        );
        if self.stopping.is_some() {
            return;
        }
        if let Some(svc) = self.services.get_mut(&key) {
            svc.pool.mark_exiting(pid);
            let delay = svc.pool.throttle.failure(Instant::now());
            tracing::warn!(
                "service {label} throttled for {} s after process {pid} broke the protocol",
                delay.as_secs()
            );
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid.as_raw(), Some(code), None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid.as_raw(), None, Some(sig))
                }
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => break,
                Err(e) => {
                    tracing::error!("waitpid: {e}");
                    break;
                }
            }
        }
    }

    fn on_exit(&mut self, pid: i32, code: Option<i32>, signal: Option<Signal>) {
        if pid == self.spawner.pid() {
            tracing::error!(
                "the spawner (pid {pid}) ended ({}): no daemon can be started until the mail system is restarted",
                match (code, signal) {
                    (Some(c), _) => format!("exit status {c}"),
                    (_, Some(s)) => format!("signal {s}"),
                    _ => "ended".to_owned(),
                }
            );
            return;
        }
        // What it said before it exited still counts (an `Exit` with its reason, say).
        self.on_control(pid);
        let Some(mut child) = self.children.remove(&pid) else {
            return;
        };
        drain_stderr(&self.logger, pid, &mut child, usize::MAX);
        let label = self.label(&child.key);
        let abnormal = code != Some(0);
        let what = match (code, signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {} ({s})", s as i32),
            (None, None) => "ended".to_owned(),
        };
        let stopping = self.stopping.is_some();
        let Some(svc) = self.services.get_mut(&child.key) else {
            return;
        };
        let phase = svc.pool.remove(pid);
        if abnormal && !child.accounted {
            tracing::warn!("process {} pid {pid} {what}", svc.spec.program.display());
            if !stopping && !svc.removed {
                let delay = svc.pool.throttle.failure(Instant::now());
                tracing::warn!(
                    "service {label} throttled for {} s after process {pid} {what}",
                    delay.as_secs()
                );
            }
        } else if !abnormal && !child.accounted {
            if matches!(phase, Some(Phase::Ready | Phase::Exiting)) {
                svc.pool.throttle.success();
            }
            tracing::info!(service = %label, pid, "process exited");
        }
        if svc.removed && svc.pool.live() == 0 {
            self.services.remove(&child.key);
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        self.stopping = Some(now + self.cfg.stop_timeout);
        for svc in self.services.values_mut() {
            svc.listener = None;
            svc.pool.close();
            svc.waiting.drain().for_each(drop);
        }
        let pids: Vec<i32> = self.children.keys().copied().collect();
        for pid in pids {
            self.stop_child(pid);
        }
    }

    /// Asks one process to finish its current work and exit.
    fn stop_child(&mut self, pid: i32) {
        if let Some(key) = self.children.get(&pid).map(|c| c.key.clone()) {
            if let Some(svc) = self.services.get_mut(&key) {
                svc.pool.mark_exiting(pid);
            }
            self.send(pid, &FromMaster::Stop, None);
        }
    }

    fn stop_service_processes(&mut self, key: &Key) {
        let pids: Vec<i32> = self
            .children
            .iter()
            .filter(|(_, c)| &c.key == key)
            .map(|(p, _)| *p)
            .collect();
        for pid in pids {
            self.stop_child(pid);
        }
    }

    /// SIGHUP: re-reads both files; then every running process is told to finish the session
    /// or request it is in and exit (`Stop`), so that new processes, which read the new files,
    /// serve what comes next; resident services get a new process once their old one is done.
    /// A listener whose address is unchanged stays open, with its queued connections. Throttles
    /// are cleared: every service starts afresh. The outcome is written for `postern reload` once
    /// the reload settles (see `reload`).
    fn reload(&mut self) {
        let now = Instant::now();
        if let Some(previous) = self.settling.take() {
            // A second SIGHUP before the first settled: the first is reported as it stands.
            self.write_reload_outcome(previous.generation, &previous.outcome);
        }
        self.reload_generation += 1;
        let generation = self.reload_generation;
        let mut outcome = reload::Outcome::default();
        let mut cfg = match config::load(&self.cfg.config_dir, self.run_as) {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::error!("reload failed, keeping the running configuration: {e}");
                outcome.error(format!("{e}; the running configuration is kept"));
                self.write_reload_outcome(generation, &outcome);
                return;
            }
        };
        // What the confined master and its spawner fixed at start-up.
        for (name, old, new) in [
            (
                "daemon_directory",
                self.cfg.daemon_directory.display().to_string(),
                cfg.daemon_directory.display().to_string(),
            ),
            (
                "queue_directory",
                self.cfg.queue_directory.display().to_string(),
                cfg.queue_directory.display().to_string(),
            ),
            (
                "maillog_file",
                self.cfg.maillog_file.clone(),
                cfg.maillog_file.clone(),
            ),
        ] {
            if old != new {
                tracing::warn!(
                    "reload: {name} changed from {old:?} to {new:?}: this takes a restart \
                     (postern stop, postern start); running with the old value"
                );
            }
        }
        if cfg.daemon_directory != self.cfg.daemon_directory {
            for spec in &mut cfg.services {
                spec.program = privileges::program_path(&self.cfg.daemon_directory, &spec.role);
            }
        }
        let mut seen = Vec::new();
        for spec in &cfg.services {
            let key = key_of(spec);
            seen.push(key.clone());
            let rebind = match self.services.get(&key) {
                Some(old) => old.spec.address != spec.address || old.listener.is_none(),
                None => true,
            };
            let listener = match (spec.address, rebind) {
                (Some(addr), true) => match listen::bind(addr) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::error!(
                            "reload: service {}: cannot listen on {addr}: {e}; keeping it as it was",
                            spec.label()
                        );
                        outcome.error(format!(
                            "service {}: cannot listen on {addr}: {e}; keeping it as it was",
                            spec.label()
                        ));
                        continue;
                    }
                },
                _ => None,
            };
            match self.services.get_mut(&key) {
                Some(svc) => {
                    svc.spec = spec.clone();
                    svc.pool.set_process_limit(spec.process_limit);
                    svc.pool.throttle.set_max(cfg.throttle_time);
                    svc.pool.reopen();
                    svc.removed = false;
                    if let Some(l) = listener {
                        svc.listener = Some(l);
                    }
                }
                None => {
                    self.services
                        .insert(key, Service::new(spec, listener, cfg.throttle_time));
                }
            }
        }
        let gone: Vec<Key> = self
            .services
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(svc) = self.services.get_mut(&key) {
                svc.removed = true;
                svc.listener = None;
                svc.pool.close();
                svc.waiting.drain().for_each(drop);
                if svc.pool.live() == 0 {
                    self.services.remove(&key);
                    continue;
                }
            }
            self.stop_service_processes(&key);
        }
        cfg.daemon_directory = self.cfg.daemon_directory.clone();
        cfg.queue_directory = self.cfg.queue_directory.clone();
        cfg.maillog_file = self.cfg.maillog_file.clone();
        self.cfg = cfg;
        let restarted = self.restart_all();
        for svc in self.services.values_mut() {
            svc.pool.throttle.clear();
        }
        tracing::info!(
            services = self.services.len(),
            processes = restarted,
            "configuration reloaded; running processes finish their work and exit"
        );
        let waiting = self
            .services
            .iter()
            .filter(|(_, s)| s.spec.kind == Kind::Unix && s.spec.wakeup > 0 && !s.removed)
            .map(|(k, _)| k.clone())
            .collect();
        self.settling = Some(Settling {
            generation,
            outcome,
            since: now,
            deadline: now + reload::SETTLE_LIMIT,
            waiting,
        });
    }

    /// Tells every running process to finish and exit; one still starting (it has served nothing
    /// and may have read the old files) is killed, which counts as no failure. Returns how many.
    fn restart_all(&mut self) -> usize {
        let pids: Vec<(i32, Key)> = self
            .children
            .iter()
            .map(|(p, c)| (*p, c.key.clone()))
            .collect();
        let mut count = 0;
        for (pid, key) in pids {
            let phase = self.services.get(&key).and_then(|s| s.pool.phase(pid));
            match phase {
                Some(Phase::Exiting) | None => {}
                Some(p) if p.starting() => {
                    if let Some(child) = self.children.get_mut(&pid) {
                        child.accounted = true;
                        child.control = None;
                    }
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    if let Some(svc) = self.services.get_mut(&key) {
                        svc.pool.mark_exiting(pid);
                    }
                    count += 1;
                }
                Some(_) => {
                    self.stop_child(pid);
                    count += 1;
                }
            }
        }
        count
    }

    /// Writes a reload's outcome once every resident service has a new process that got `Go`,
    /// or failed to start one, or [`reload::SETTLE_LIMIT`] passed.
    fn settle_reload(&mut self, now: Instant) {
        let Some(mut s) = self.settling.take() else {
            return;
        };
        let since = s.since;
        let mut waiting = std::mem::take(&mut s.waiting);
        waiting.retain(|key| {
            let Some(svc) = self.services.get(key).filter(|svc| !svc.removed) else {
                return false;
            };
            let started = self.children.iter().any(|(pid, c)| {
                &c.key == key && c.started >= since && svc.pool.phase(*pid) == Some(Phase::Ready)
            });
            if started {
                return false;
            }
            // Cleared by the reload: set again only by a failure since.
            if svc.pool.throttle.until().is_some() {
                s.outcome.error(format!(
                    "service {}: a new process would not start (throttled; the log says why)",
                    svc.spec.label()
                ));
                return false;
            }
            true
        });
        if !waiting.is_empty() && now < s.deadline {
            s.waiting = waiting;
            self.settling = Some(s);
            return;
        }
        for key in &waiting {
            s.outcome.error(format!(
                "service {}: no new process within {} s (the previous one is still finishing its work)",
                self.label(key),
                reload::SETTLE_LIMIT.as_secs()
            ));
        }
        for e in &s.outcome.errors {
            tracing::warn!("reload: {e}");
        }
        self.write_reload_outcome(s.generation, &s.outcome);
    }

    fn write_status(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let rows: Vec<status::Row> = self
            .services
            .values()
            .map(|s| status::Row {
                service: s.spec.name.clone(),
                kind: s.spec.kind.as_str(),
                processes: s.pool.live(),
                busy: s.pool.busy(),
                limit: s.pool.process_limit(),
                throttled_until: s
                    .pool
                    .throttle
                    .until()
                    .filter(|u| *u > now)
                    .map(|u| wall + (u - now)),
            })
            .collect();
        let text = status::render(&rows);
        if text == self.status_text {
            self.status_due = None;
            return;
        }
        if let Some(next) = self
            .status_written
            .map(|at| at + STATUS_INTERVAL)
            .filter(|next| *next > now)
        {
            self.status_due = Some(next);
            return;
        }
        let dir = crate::pidfile::pid_dir(&self.cfg.queue_directory);
        if let Err(e) = status::write(&dir, &text) {
            tracing::warn!("cannot write {}/master.status: {e}", dir.display());
        }
        self.status_text = text;
        self.status_written = Some(now);
        self.status_due = None;
    }
}

fn child_program(children: &BTreeMap<i32, Child>, pid: i32) -> String {
    children
        .get(&pid)
        .map_or_else(|| "?".to_owned(), |c| c.program.clone())
}

/// Reads what a child wrote to stderr and logs it line by line under its prefix.
fn drain_stderr(logger: &SharedLogger, pid: i32, child: &mut Child, limit: usize) {
    let Some(stderr) = child.stderr.as_mut() else {
        return;
    };
    let mut buf = [0u8; 4096];
    let mut total = 0;
    let mut eof = false;
    let mut lines = Vec::new();
    while total < limit {
        match stderr.read(&mut buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                total += n;
                lines.extend(child.lines.push(&buf[..n]));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                eof = true;
                break;
            }
        }
    }
    if eof {
        lines.extend(child.lines.finish());
        child.stderr = None;
    }
    if lines.is_empty() {
        return;
    }
    let mut logger = logger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for line in lines {
        logger.line(&child.program, pid as u32, &line);
    }
}

/// What a daemon's capability bounding set must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bounding {
    /// As root: `sandbox::apply` empties it, but for the capabilities the profile keeps, while
    /// the `CAP_SETPCAP` the master left in its own bounding set is still effective.
    Exactly(u64),
    /// Unprivileged (`--dev`): dropping from it needs `CAP_SETPCAP`, so a daemon keeps what it
    /// inherited, the master's own set, and must hold nothing beyond it. What makes that set
    /// harmless is checked beside it: `no_new_privs` and empty permitted, inheritable and
    /// ambient sets, so no `execve` can turn it into a capability.
    Within(u64),
    /// Unprivileged, and the master could not read its own set: nothing to compare with.
    Unknown,
}

impl Bounding {
    fn expected(run_as: RunAs, keep: u64, master: Option<u64>) -> Bounding {
        match (run_as, master) {
            (RunAs::Root, _) => Bounding::Exactly(keep),
            (RunAs::Unprivileged, Some(set)) => Bounding::Within(set),
            (RunAs::Unprivileged, None) => Bounding::Unknown,
        }
    }

    fn allows(self, set: u64) -> bool {
        match self {
            Bounding::Exactly(want) => set == want,
            Bounding::Within(limit) => set & !limit == 0,
            Bounding::Unknown => false,
        }
    }
}

impl std::fmt::Display for Bounding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bounding::Exactly(want) => write!(f, "profile keeps {want:#x}"),
            Bounding::Within(limit) => write!(f, "the master's own is {limit:#x}"),
            Bounding::Unknown => f.write_str("the master's own is unknown"),
        }
    }
}

/// Checks a `Ready` report and the kernel's view of the process against the profile. `me` is
/// the master's uid and its own bounding set. Returns what falls short (empty: all in force).
fn check_ready(
    spec: &ServiceSpec,
    run_as: RunAs,
    me: (u32, Option<u64>),
    pid: i32,
    report: &SandboxReport,
) -> Vec<String> {
    let (my_uid, my_bounding) = me;
    let profile = &spec.profile;
    let keep = profile.keep_caps_mask();
    let bounding = Bounding::expected(run_as, keep, my_bounding);
    let mut short = Vec::new();
    let (uid, gid) = match (&profile.identity, run_as) {
        (Some(id), RunAs::Root) => (Some(id.uid), Some(id.gid)),
        (None, RunAs::Root) => (Some(0), None),
        (_, RunAs::Unprivileged) => (Some(my_uid), None),
    };
    // The daemon's own word.
    if run_as == RunAs::Root && report.dev_mode {
        short.push("report says dev mode, but the master runs as root".to_owned());
    }
    if uid.is_some_and(|u| report.uid != u) || gid.is_some_and(|g| report.gid != g) {
        short.push(format!("report says uid {} gid {}", report.uid, report.gid));
    }
    let caps = &report.capabilities;
    if caps.effective() != keep
        || caps.permitted() != keep
        || caps.inheritable() != 0
        || caps.ambient() != 0
    {
        short.push(format!(
            "report says capabilities effective {:#x} permitted {:#x} inheritable {:#x} ambient {:#x}, profile keeps {keep:#x}",
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient()
        ));
    }
    if !bounding.allows(caps.bounding()) {
        short.push(format!(
            "report says bounding set {:#x}, {bounding}",
            caps.bounding()
        ));
    }
    if !report.no_new_privs {
        short.push("report says no_new_privs is off".to_owned());
    }
    if !report.seccomp {
        short.push("report says no seccomp filter".to_owned());
    }
    if report.landlock.status() != LandlockStatus::FullyEnforced {
        short.push(format!(
            "report says landlock {:?} (ABI {})",
            report.landlock.status(),
            report.landlock.abi()
        ));
    }
    // The kernel's word. A daemon that served its sessions and exited before the master read its
    // report (a busy machine) can no longer be checked, and no longer holds anything: the report's
    // own word above still counts.
    match kernel::read(pid) {
        Ok(k) if k.exited => {
            tracing::warn!(pid, "process exited before its sandbox could be read back");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(pid, "process exited before its sandbox could be read back");
        }
        Ok(k) => {
            if let Some(u) = uid {
                if k.uid != Some([u; 4]) {
                    short.push(format!("kernel says uids {:?}, expected {u}", k.uid));
                }
            }
            if let Some(g) = gid {
                if k.gid != Some([g; 4]) {
                    short.push(format!("kernel says gids {:?}, expected {g}", k.gid));
                }
            }
            if k.cap_eff != Some(keep) || k.cap_prm != Some(keep) {
                short.push(format!(
                    "kernel says CapEff {:?} CapPrm {:?}, profile keeps {keep:#x}",
                    k.cap_eff, k.cap_prm
                ));
            }
            if k.cap_inh != Some(0) || k.cap_amb != Some(0) {
                short.push(format!(
                    "kernel says CapInh {:?} CapAmb {:?}, expected 0",
                    k.cap_inh, k.cap_amb
                ));
            }
            if !k.cap_bnd.is_some_and(|set| bounding.allows(set)) {
                let set = k
                    .cap_bnd
                    .map_or_else(|| "?".to_owned(), |set| format!("{set:#x}"));
                short.push(format!("kernel says CapBnd {set}, {bounding}"));
            }
            if k.no_new_privs != Some(true) {
                short.push("kernel says NoNewPrivs is not 1".to_owned());
            }
            if k.seccomp != Some(2) {
                short.push(format!("kernel says Seccomp {:?}", k.seccomp));
            }
        }
        Err(e) => short.push(format!("cannot read /proc/{pid}/status: {e}")),
    }
    short
}

/// Starts one daemon process through the spawner: control channel at fd 3, the listener at
/// fd 4 for an inet service, stdout and stderr on a pipe the master reads, an empty
/// environment; the process is a child of the master.
fn spawn_daemon(
    spawner: &Spawner,
    spec: &ServiceSpec,
    listener: Option<&TcpListener>,
) -> Result<(i32, Channel, File), String> {
    let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
    ours.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (log_read, log_write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| format!("pipe: {e}"))?;
    // Only the master's end is non-blocking: the child's stderr blocks as usual.
    let flags = nix::fcntl::fcntl(&log_write, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| format!("fcntl: {e}"))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&log_write, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| format!("fcntl: {e}"))?;
    let field = |what: &str, value: &str| {
        protocol::spawn::Field::try_from(value)
            .map_err(|e| format!("{what} {value:?} cannot be passed to the spawner: {e}"))
    };
    let command = ServiceName::try_from(spec.role.clone())
        .map_err(|e| format!("command {:?}: {e}", spec.role))?;
    let mut overrides = Vec::with_capacity(spec.overrides.len());
    for (name, value) in &spec.overrides {
        overrides.push((field("parameter", name)?, field("value", value)?));
    }
    let request = protocol::spawn::ToSpawner::Start {
        command,
        service: field("service name", &spec.name)?,
        listener: listener.is_some(),
        overrides: overrides
            .try_into()
            .map_err(|e| format!("too many -o overrides: {e:?}"))?,
    };
    let mut fds = vec![theirs.as_fd(), log_write.as_fd()];
    fds.extend(listener.map(|l| l.as_fd()));
    let pid = spawner.start_daemon(&request, &fds, &spec.program)?;
    drop(fds);
    drop(theirs);
    drop(log_write);
    Ok((pid, ours, File::from(log_read)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounding_set_expected_of_a_daemon() {
        // As root: exactly what the profile keeps (local keeps two), nothing more or less.
        let root = Bounding::expected(RunAs::Root, 0xc0, Some(0x5e1));
        assert!(root.allows(0xc0));
        assert!(
            !root.allows(0x5e1),
            "the master's bounding set, not emptied"
        );
        assert!(!root.allows(0x40), "a kept capability missing");
        assert!(Bounding::expected(RunAs::Root, 0, None).allows(0));
        assert!(!Bounding::expected(RunAs::Root, 0, None).allows(1 << 8));
        // Unprivileged: within the master's own, which the daemon could not drop.
        let dev = Bounding::expected(RunAs::Unprivileged, 0, Some(0x1ff_ffff_ffff));
        assert!(dev.allows(0x1ff_ffff_ffff) && dev.allows(0));
        assert!(!dev.allows(1 << 41), "more than the master holds");
        assert!(!Bounding::expected(RunAs::Unprivileged, 0, None).allows(0));
    }
}
