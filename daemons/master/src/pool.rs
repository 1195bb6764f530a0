//! Process pools: the master's bookkeeping of one service's processes, as pure state.
//!
//! Trusts: nothing a child says. Every control message a child sends is checked here against the
//! state the master holds for that process (the table of what is permitted in each state, as in
//! OpenSSH's monitor); a message not permitted now is a [`Violation`] and the caller kills the
//! process. This module does no I/O and reads no clock: callers pass `now`, so every decision is
//! unit-tested.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// The first back-off after a failure; it doubles with each further failure up to
/// `service_throttle_time`, so a service that fails once recovers quickly and one that keeps
/// failing is retried at most once a `service_throttle_time`.
pub const FIRST_THROTTLE: Duration = Duration::from_secs(1);

/// How a service receives its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Processes accept TCP connections on a listener the master bound (fd 4).
    Inet,
    /// Processes receive channels from the master (`Incoming`) on their control channel.
    Unix,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inet => "inet",
            Kind::Unix => "unix",
        }
    }
}

/// Where a process stands in its control conversation with the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started; must say `Hello` first.
    AwaitHello,
    /// Welcomed; must apply its sandbox and say `Ready`.
    AwaitReady,
    /// Said `Ready`; the master is comparing its report and `/proc` with the profile. It is sent
    /// `Go` and becomes [`Phase::Ready`] only if they match ([`Pool::go`]); it may say nothing
    /// meanwhile, and gets no work.
    Checking,
    /// Given `Go`: serving.
    Ready,
    /// Said `Exit` (or was sent `Stop`): receives no new work, may finish the current one.
    Exiting,
}

impl Phase {
    /// Started but not yet given `Go`: still within its start-up time.
    pub fn starting(self) -> bool {
        matches!(
            self,
            Phase::AwaitHello | Phase::AwaitReady | Phase::Checking
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::AwaitHello => "before Hello",
            Phase::AwaitReady => "before Ready",
            Phase::Checking => "before Go",
            Phase::Ready => "ready",
            Phase::Exiting => "exiting",
        })
    }
}

/// A control message, reduced to what the state table needs. The master validates the message's
/// content (version, sandbox report, access matrix) before or after this state check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    Hello,
    Ready,
    Busy,
    Idle,
    Connect,
    Exit,
}

impl Said {
    pub fn kind(self) -> &'static str {
        match self {
            Said::Hello => "Hello",
            Said::Ready => "Ready",
            Said::Busy => "Busy",
            Said::Idle => "Idle",
            Said::Connect => "Connect",
            Said::Exit => "Exit",
        }
    }
}

/// A message that the process was not allowed to send in its state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} is not allowed {phase}{detail}")]
pub struct Violation {
    pub kind: &'static str,
    pub phase: Phase,
    pub detail: &'static str,
}

#[derive(Clone, Debug)]
struct Proc {
    phase: Phase,
    busy: bool,
    connect_pending: bool,
    /// The master sent `Stop`: an inet process may have accepted a connection before it read
    /// the `Stop`, and finishes that session (`Busy`, then `Idle`) before it exits.
    stopped: bool,
}

/// What to do with a channel that is waiting for a process of a unix service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Hand it to this idle, ready process (now marked busy).
    To(i32),
    /// Start a process; hand the channel over once it is ready.
    Start,
    /// Nothing can take it now (limit reached, throttled, or processes still starting).
    Wait,
}

/// Restart back-off of a service whose processes fail.
#[derive(Clone, Debug)]
pub struct Throttle {
    next: Duration,
    until: Option<Instant>,
    max: Duration,
}

impl Throttle {
    pub fn new(max: Duration) -> Throttle {
        Throttle {
            next: FIRST_THROTTLE.min(max),
            until: None,
            max,
        }
    }

    /// Records a failure at `now`; returns how long the service is now throttled for.
    pub fn failure(&mut self, now: Instant) -> Duration {
        let delay = self.next.min(self.max);
        self.until = Some(now + delay);
        self.next = delay
            .saturating_mul(2)
            .min(self.max)
            .max(FIRST_THROTTLE.min(self.max));
        delay
    }

    /// A process ended well: the next failure starts the back-off from the beginning.
    pub fn success(&mut self) {
        self.next = FIRST_THROTTLE.min(self.max);
    }

    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Forgets past failures (a reload restarts the service): it may start at once, and the next
    /// failure starts the back-off from the beginning.
    pub fn clear(&mut self) {
        self.until = None;
        self.next = FIRST_THROTTLE.min(self.max);
    }

    pub fn set_max(&mut self, max: Duration) {
        self.max = max;
        self.next = self.next.min(max);
    }
}

/// The processes of one service.
#[derive(Clone, Debug)]
pub struct Pool {
    kind: Kind,
    /// 0 means unlimited, as `maxproc 0` in Postfix.
    process_limit: u32,
    procs: BTreeMap<i32, Proc>,
    pub throttle: Throttle,
    /// No new processes (service removed on reload, or the master is stopping).
    closed: bool,
}

impl Pool {
    pub fn new(kind: Kind, process_limit: u32, throttle_max: Duration) -> Pool {
        Pool {
            kind,
            process_limit,
            procs: BTreeMap::new(),
            throttle: Throttle::new(throttle_max),
            closed: false,
        }
    }

    pub fn process_limit(&self) -> u32 {
        self.process_limit
    }

    /// A changed `maxproc` applies to the next start; running processes are not interrupted.
    pub fn set_process_limit(&mut self, limit: u32) {
        self.process_limit = limit;
    }

    pub fn close(&mut self) {
        self.closed = true;
    }

    /// A service removed by one reload and restored by the next takes new processes again.
    pub fn reopen(&mut self) {
        self.closed = false;
    }

    pub fn add(&mut self, pid: i32) {
        self.procs.insert(
            pid,
            Proc {
                phase: Phase::AwaitHello,
                busy: false,
                connect_pending: false,
                stopped: false,
            },
        );
    }

    /// Forgets a process that exited; returns the phase it was in.
    pub fn remove(&mut self, pid: i32) -> Option<Phase> {
        self.procs.remove(&pid).map(|p| p.phase)
    }

    pub fn phase(&self, pid: i32) -> Option<Phase> {
        self.procs.get(&pid).map(|p| p.phase)
    }

    /// Every process still alive, exiting ones included: this is what `maxproc` bounds.
    pub fn live(&self) -> usize {
        self.procs.len()
    }

    pub fn busy(&self) -> usize {
        self.procs.values().filter(|p| p.busy).count()
    }

    /// Processes that can take new work now or soon: a new process counts as available until it
    /// reports Busy.
    pub fn available(&self) -> usize {
        self.procs
            .values()
            .filter(|p| p.phase != Phase::Exiting && !p.busy)
            .count()
    }

    pub fn under_limit(&self) -> bool {
        self.process_limit == 0 || self.procs.len() < self.process_limit as usize
    }

    /// Whether a new process may be started now.
    pub fn may_start(&self, now: Instant) -> bool {
        !self.closed && !self.throttle.active(now) && self.under_limit()
    }

    /// Whether the master should poll this inet service's listener: every process is busy and
    /// another may be started. A readable listener then means "start one".
    pub fn wants_listener(&self, now: Instant) -> bool {
        self.kind == Kind::Inet && self.available() == 0 && self.may_start(now)
    }

    /// Where a channel waiting for this (unix) service should go.
    pub fn dispatch(&mut self, now: Instant) -> Dispatch {
        let idle = self
            .procs
            .iter()
            .find(|(_, p)| p.phase == Phase::Ready && !p.busy)
            .map(|(pid, _)| *pid);
        if let Some(pid) = idle {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.busy = true;
            }
            return Dispatch::To(pid);
        }
        let starting = self.procs.values().any(|p| p.phase.starting());
        if starting || !self.may_start(now) {
            Dispatch::Wait
        } else {
            Dispatch::Start
        }
    }

    /// The master checked a process's `Ready` and sent `Go`: it may now be handed work. Returns
    /// whether the process was waiting for it (a process stopped meanwhile stays exiting).
    pub fn go(&mut self, pid: i32) -> bool {
        match self.procs.get_mut(&pid) {
            Some(p) if p.phase == Phase::Checking => {
                p.phase = Phase::Ready;
                true
            }
            _ => false,
        }
    }

    /// The master stops a process (`Stop` sent): it gets no new work.
    pub fn mark_exiting(&mut self, pid: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.phase = Phase::Exiting;
            p.stopped = true;
        }
    }

    /// The master answered a Connect (Connected or Refused).
    pub fn connect_answered(&mut self, pid: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.connect_pending = false;
        }
    }

    /// Checks a control message against the process's state and applies it.
    pub fn on_message(&mut self, pid: i32, said: Said) -> Result<(), Violation> {
        let kind = self.kind;
        let Some(p) = self.procs.get_mut(&pid) else {
            return Err(Violation {
                kind: said.kind(),
                phase: Phase::Exiting,
                detail: " from an unknown process",
            });
        };
        let refuse = |phase: Phase, detail: &'static str| {
            Err(Violation {
                kind: said.kind(),
                phase,
                detail,
            })
        };
        match (p.phase, said) {
            (Phase::AwaitHello, Said::Hello) => {
                p.phase = Phase::AwaitReady;
                Ok(())
            }
            (Phase::AwaitReady, Said::Ready) => {
                p.phase = Phase::Checking;
                Ok(())
            }
            (Phase::Ready, Said::Busy) => match kind {
                Kind::Unix => refuse(p.phase, " for a unix service (the master marks it busy)"),
                Kind::Inet if p.busy => refuse(p.phase, " while already busy"),
                Kind::Inet => {
                    p.busy = true;
                    Ok(())
                }
            },
            // A session accepted before the `Stop` was read finishes; a process that said `Exit`
            // itself accepts nothing more.
            (Phase::Exiting, Said::Busy) if kind == Kind::Inet && p.stopped && !p.busy => {
                p.busy = true;
                Ok(())
            }
            (Phase::Ready | Phase::Exiting, Said::Idle) => {
                if p.busy {
                    p.busy = false;
                    Ok(())
                } else {
                    refuse(p.phase, " while already idle")
                }
            }
            (Phase::Ready | Phase::Exiting, Said::Connect) => {
                if p.connect_pending {
                    refuse(p.phase, " while another Connect is unanswered")
                } else {
                    p.connect_pending = true;
                    Ok(())
                }
            }
            (Phase::Ready, Said::Exit) => {
                p.phase = Phase::Exiting;
                Ok(())
            }
            (phase, _) => refuse(phase, ""),
        }
    }
}

/// Channels waiting for a process of one unix service, oldest first, bounded.
#[derive(Debug)]
pub struct Waiting<T> {
    items: std::collections::VecDeque<(Instant, T)>,
}

/// Channels that may wait for one service. Beyond this a `Connect` is refused at once: a service
/// that cannot keep up must not make the master hold an unbounded number of descriptors.
pub const MAX_WAITING_CHANNELS: usize = 256;

/// How long a channel waits for a process before it is dropped (its client then sees the channel
/// close and retries or gives up, as a Postfix client does when a service is throttled).
pub const CHANNEL_WAIT_LIMIT: Duration = Duration::from_secs(100);

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Waiting {
            items: std::collections::VecDeque::new(),
        }
    }
}

impl<T> Waiting<T> {
    /// Queues an item; gives it back when the queue is full.
    pub fn push(&mut self, now: Instant, item: T) -> Result<(), T> {
        if self.items.len() >= MAX_WAITING_CHANNELS {
            return Err(item);
        }
        self.items.push_back((now + CHANNEL_WAIT_LIMIT, item));
        Ok(())
    }

    pub fn push_front(&mut self, deadline: Instant, item: T) {
        self.items.push_front((deadline, item));
    }

    pub fn pop_with_deadline(&mut self) -> Option<(Instant, T)> {
        self.items.pop_front()
    }

    /// Removes and returns what waited past its deadline.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut expired = Vec::new();
        let mut kept = std::collections::VecDeque::new();
        for (deadline, item) in self.items.drain(..) {
            if deadline <= now {
                expired.push(item);
            } else {
                kept.push_back((deadline, item));
            }
        }
        self.items = kept;
        expired
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.items.iter().map(|(d, _)| *d).min()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.items.drain(..).map(|(_, item)| item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    fn ready(pool: &mut Pool, pid: i32) {
        pool.add(pid);
        pool.on_message(pid, Said::Hello).unwrap();
        pool.on_message(pid, Said::Ready).unwrap();
        assert!(pool.go(pid));
    }

    #[test]
    fn inet_listener_is_polled_only_when_all_are_busy_and_under_limit() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Inet, 2, MAX);
        assert!(pool.wants_listener(now), "no process: start on demand");
        pool.add(10);
        assert!(
            !pool.wants_listener(now),
            "a starting process counts as available"
        );
        pool.on_message(10, Said::Hello).unwrap();
        pool.on_message(10, Said::Ready).unwrap();
        assert!(pool.go(10));
        pool.on_message(10, Said::Busy).unwrap();
        assert!(pool.wants_listener(now));
        ready(&mut pool, 11);
        pool.on_message(11, Said::Busy).unwrap();
        assert_eq!(pool.live(), 2);
        assert!(!pool.wants_listener(now), "limit reached");
        pool.set_process_limit(3);
        assert!(pool.wants_listener(now), "a raised limit applies at once");
        pool.on_message(11, Said::Idle).unwrap();
        assert!(!pool.wants_listener(now));
    }

    #[test]
    fn unlimited_when_limit_is_zero() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Inet, 0, MAX);
        for pid in 1..500 {
            ready(&mut pool, pid);
            pool.on_message(pid, Said::Busy).unwrap();
        }
        assert!(pool.wants_listener(now));
    }

    #[test]
    fn out_of_state_messages_are_violations() {
        let mut pool = Pool::new(Kind::Inet, 5, MAX);
        pool.add(1);
        let err = pool.on_message(1, Said::Busy).unwrap_err();
        assert_eq!(err.kind, "Busy");
        assert_eq!(err.phase, Phase::AwaitHello);
        pool.on_message(1, Said::Hello).unwrap();
        assert!(pool.on_message(1, Said::Hello).is_err(), "second Hello");
        assert!(
            pool.on_message(1, Said::Connect).is_err(),
            "Connect before Ready"
        );
        pool.on_message(1, Said::Ready).unwrap();
        assert!(pool.go(1));
        assert!(pool.on_message(1, Said::Ready).is_err(), "second Ready");
        assert!(pool.on_message(1, Said::Idle).is_err(), "Idle while idle");
        pool.on_message(1, Said::Busy).unwrap();
        assert!(pool.on_message(1, Said::Busy).is_err(), "Busy while busy");
        pool.on_message(1, Said::Connect).unwrap();
        assert!(pool.on_message(1, Said::Connect).is_err(), "two Connects");
        pool.connect_answered(1);
        pool.on_message(1, Said::Connect).unwrap();
        assert!(pool.on_message(99, Said::Hello).is_err(), "unknown pid");
    }

    #[test]
    fn unix_processes_are_marked_busy_by_the_master() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Unix, 1, MAX);
        assert_eq!(pool.dispatch(now), Dispatch::Start);
        pool.add(7);
        assert_eq!(
            pool.dispatch(now),
            Dispatch::Wait,
            "wait for the starting one"
        );
        pool.on_message(7, Said::Hello).unwrap();
        pool.on_message(7, Said::Ready).unwrap();
        assert!(pool.go(7));
        assert!(
            pool.on_message(7, Said::Busy).is_err(),
            "unix child never says Busy"
        );
        assert_eq!(pool.dispatch(now), Dispatch::To(7));
        assert_eq!(pool.busy(), 1);
        assert_eq!(pool.dispatch(now), Dispatch::Wait, "limit 1 and it is busy");
        pool.on_message(7, Said::Idle).unwrap();
        assert_eq!(pool.dispatch(now), Dispatch::To(7));
    }

    #[test]
    fn a_process_gets_no_work_and_may_say_nothing_between_ready_and_go() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Unix, 1, MAX);
        pool.add(8);
        assert!(!pool.go(8), "Go before Ready");
        pool.on_message(8, Said::Hello).unwrap();
        pool.on_message(8, Said::Ready).unwrap();
        assert_eq!(pool.phase(8), Some(Phase::Checking));
        assert!(pool.phase(8).is_some_and(Phase::starting));
        assert_eq!(pool.dispatch(now), Dispatch::Wait, "not before Go");
        for said in [
            Said::Hello,
            Said::Ready,
            Said::Busy,
            Said::Idle,
            Said::Connect,
            Said::Exit,
        ] {
            let err = pool.clone().on_message(8, said).unwrap_err();
            assert_eq!(err.phase, Phase::Checking, "{said:?}");
        }
        assert!(pool.go(8));
        assert!(!pool.go(8), "Go twice");
        assert_eq!(pool.dispatch(now), Dispatch::To(8));
        // A process stopped while it was being checked is not revived by the check.
        let mut inet = Pool::new(Kind::Inet, 1, MAX);
        inet.add(9);
        inet.on_message(9, Said::Hello).unwrap();
        inet.on_message(9, Said::Ready).unwrap();
        inet.mark_exiting(9);
        assert!(!inet.go(9));
        assert_eq!(inet.phase(9), Some(Phase::Exiting));
    }

    #[test]
    fn exiting_process_gets_no_work_but_may_finish() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Unix, 2, MAX);
        ready(&mut pool, 3);
        assert_eq!(pool.dispatch(now), Dispatch::To(3));
        pool.mark_exiting(3);
        pool.on_message(3, Said::Idle).unwrap();
        assert_eq!(pool.dispatch(now), Dispatch::Start);
        assert!(pool.on_message(3, Said::Exit).is_err(), "Exit twice");
        assert!(pool.on_message(3, Said::Busy).is_err());
    }

    #[test]
    fn a_stopped_inet_process_may_finish_a_session_it_accepted_before_the_stop() {
        let mut pool = Pool::new(Kind::Inet, 2, MAX);
        ready(&mut pool, 4);
        pool.mark_exiting(4);
        pool.on_message(4, Said::Busy).unwrap();
        assert!(pool.on_message(4, Said::Busy).is_err(), "busy twice");
        pool.on_message(4, Said::Idle).unwrap();
        // One that said Exit by itself accepts nothing more.
        ready(&mut pool, 5);
        pool.on_message(5, Said::Exit).unwrap();
        assert!(pool.on_message(5, Said::Busy).is_err());
    }

    #[test]
    fn throttle_doubles_up_to_the_limit_and_blocks_starts() {
        let t0 = Instant::now();
        let mut pool = Pool::new(Kind::Inet, 5, Duration::from_secs(5));
        assert_eq!(pool.throttle.failure(t0), Duration::from_secs(1));
        assert!(!pool.may_start(t0));
        assert!(
            !pool.wants_listener(t0),
            "listener not polled while throttled"
        );
        assert!(pool.may_start(t0 + Duration::from_secs(1)));
        assert_eq!(pool.throttle.failure(t0), Duration::from_secs(2));
        assert_eq!(pool.throttle.failure(t0), Duration::from_secs(4));
        assert_eq!(pool.throttle.failure(t0), Duration::from_secs(5));
        assert_eq!(pool.throttle.failure(t0), Duration::from_secs(5));
        pool.throttle.success();
        assert_eq!(pool.throttle.failure(t0), Duration::from_secs(1));
    }

    #[test]
    fn a_cleared_throttle_lets_a_service_start_at_once_and_backs_off_from_the_start() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Unix, 1, Duration::from_secs(60));
        pool.throttle.failure(now);
        pool.throttle.failure(now);
        assert!(!pool.may_start(now));
        pool.throttle.clear();
        assert!(pool.may_start(now));
        assert_eq!(pool.throttle.until(), None);
        assert_eq!(pool.throttle.failure(now), FIRST_THROTTLE);
    }

    #[test]
    fn closed_pool_starts_nothing() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Unix, 5, MAX);
        pool.close();
        assert_eq!(pool.dispatch(now), Dispatch::Wait);
        assert!(!pool.wants_listener(now));
    }

    #[test]
    fn waiting_queue_is_bounded_and_expires() {
        let t0 = Instant::now();
        let mut q = Waiting::default();
        for i in 0..MAX_WAITING_CHANNELS {
            q.push(t0, i).unwrap();
        }
        assert_eq!(q.push(t0, 9999), Err(9999));
        assert_eq!(q.pop_with_deadline().map(|(_, i)| i), Some(0));
        assert!(q.expire(t0).is_empty());
        assert_eq!(
            q.expire(t0 + CHANNEL_WAIT_LIMIT).len(),
            MAX_WAITING_CHANNELS - 1
        );
        assert!(q.is_empty());
    }
}
