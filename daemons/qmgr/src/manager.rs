//! The queue manager's state and its `poll` loop: the active queue (messages in memory, at most
//! `qmgr_message_active_limit`), the scheduler, the channels to delivery agents and to bounce,
//! and the wake-up channels from cleanup.
//!
//! Trusts: the spool directories (see `spool`), and nothing that arrives on a channel. A queue
//! file is read and its checksum verified by `protocol::queue` before anything is done with it;
//! a file that fails goes to `corrupt/`. Every agent answer is decoded by `protocol` and then
//! checked against the request it answers: a result for a recipient the agent was not given,
//! or given twice, or any message while no request is open, is a protocol error that drops the
//! channel and defers what the request had left (4.3.0), as does a channel that closes
//! mid-request (the agent died). Wake-up channels carry only `Wake`.
//!
//! Order of effects (the durability contract): every recipient's result is appended to the
//! queue file (`QueueFile::append`) as soon as it is read from the agent, before qmgr does
//! anything else: each turn of the loop reads every agent's pending results before it admits
//! or dispatches anything, so a kill of qmgr repeats at most the deliveries in flight. The file
//! is fsync'd before it is moved to `deferred/` or named in a notice, not for each result (a
//! written record survives the death of any process; only a power loss can lose it, and then a
//! delivery is repeated, never lost: Postfix's agents do not fsync their done marks either). A
//! file is removed only after every recipient has a final result and bounce has answered `Sent`
//! for each notice the message needs. A crash anywhere leaves the file in `incoming/`,
//! `active/` or `deferred/` with a log of what was done; the next start moves `active/` back to
//! `incoming/` and tries the recipients without a final result again (at-least-once).
//!
//! Decisions where Postfix differs or is silent:
//! - Notices are sent when a message is finished for now: `Failure` (bounced recipients) and
//!   `Success` (delivered recipients that asked `NOTIFY=SUCCESS`) once every recipient has a
//!   final result; `Delay` once, when a message is deferred after `delay_warning_time`.
//!   Postfix flushes the bounce log of a partly deferred message at once; Postern waits until
//!   the message is done. A crash between a notice and the removal repeats the notice.
//! - An expired message (older than `maximal_queue_lifetime`, `bounce_queue_lifetime` for a
//!   sender `<>`) is tried once more, as Postfix does; what is still deferred after that attempt
//!   bounces with its last 4.x.x status.
//! - bounce unavailable (not in master.cf, refusing, or failing temporarily): the message is
//!   deferred and its notices are tried with its next attempt. A permanent `Failed` drops that
//!   notice (logged as an error): bounce has said it can never be sent.
//! - An idle channel to an agent is kept for reuse for `AGENT_IDLE` and then closed, so the
//!   agent process can go back to its own `max_idle`.
//! - Admission alternates between `incoming/` and due files of `deferred/`, so new mail gets
//!   through a backlog of retries (ARCHITECTURE.md "The queue").

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags};
use protocol::delivery::{
    DeliveryRecipient, FromAgent, FromBounce, NoticeKind, ToAgent, ToBounce, RECIPIENTS_PER_NOTICE,
};
use protocol::queue::{Diagnostic, Outcome, ResultRecord, Timestamp, MAX_DIAGNOSTIC_LEN};
use protocol::{Channel, ChannelError, EnhancedStatus, QueueFile, QueueId, QueueLimits, ToQmgr};

use crate::backoff::expired;
use crate::config::{Config, Route, TRANSPORTS};
use crate::schedule::{DestKey, Job, Scheduler};
use crate::spool::{self, Incoming, Queue, Spool};

/// How long an idle channel to a delivery agent is kept for the next request.
pub const AGENT_IDLE: Duration = Duration::from_secs(10);

/// Messages admitted per turn of the loop, so results keep flowing during a large scan.
const ADMIT_PER_TURN: usize = 100;

/// How qmgr obtains a channel to another service (the master, through `Daemon::connect`; a
/// fake in tests).
pub trait Connect {
    fn connect(&mut self, service: &str) -> Result<Channel, String>;
}

impl Connect for daemon::Daemon {
    fn connect(&mut self, service: &str) -> Result<Channel, String> {
        daemon::Daemon::connect(self, service).map_err(|e| e.to_string())
    }
}

/// What happens once a message's notices are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Remove,
    Defer,
}

struct Msg {
    file: File,
    /// The descriptor agents and bounce get.
    ro: File,
    qf: QueueFile,
    arrival: SystemTime,
    /// Jobs queued or in flight.
    outstanding: usize,
    /// A result could not be recorded: the message is deferred without acting on anything.
    write_failed: bool,
    notices: VecDeque<(NoticeKind, Vec<u32>)>,
    after: After,
}

struct Request {
    msg: QueueId,
    dest: DestKey,
    given: Vec<u32>,
    done: Vec<bool>,
    answered: bool,
}

struct Agent {
    transport: &'static str,
    channel: Channel,
    req: Option<Request>,
    idle_since: Instant,
}

#[derive(Default)]
struct Bounce {
    channel: Option<Channel>,
    inflight: Option<(QueueId, NoticeKind)>,
    queue: VecDeque<QueueId>,
}

#[derive(Clone, Copy, Debug)]
enum Token {
    Control,
    Waker(usize),
    Agent(u64),
    Bounce,
}

pub struct Manager {
    cfg: Config,
    spool: Spool,
    msgs: HashMap<QueueId, Msg>,
    sched: Scheduler,
    agents: HashMap<u64, Agent>,
    next_agent: u64,
    bounce: Bounce,
    wakers: Vec<Channel>,
    incoming: BTreeSet<QueueId>,
    deferred: BTreeSet<QueueId>,
    scan_incoming: bool,
    next_incoming_scan: Instant,
    next_deferred_scan: Instant,
    deferred_turn: bool,
    stopping: bool,
}

fn status(s: &str) -> EnhancedStatus {
    // The callers pass constants of this module; a typo is a programming error caught by tests.
    s.parse()
        .unwrap_or_else(|_| EnhancedStatus::new(4, 3, 0).unwrap_or_else(|_| unreachable!()))
}

fn diagnostic(text: &str) -> Diagnostic {
    let mut t: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    while t.len() > MAX_DIAGNOSTIC_LEN {
        t.pop();
    }
    Diagnostic::new(&t).unwrap_or_else(|_| {
        Diagnostic::new("(diagnostic not representable)").unwrap_or_else(|_| unreachable!())
    })
}

fn transport_name(t: &str) -> &'static str {
    TRANSPORTS.into_iter().find(|n| *n == t).unwrap_or("smtp")
}

impl Manager {
    pub fn new(cfg: Config, spool: Spool) -> Manager {
        let now = Instant::now();
        Manager {
            cfg,
            spool,
            msgs: HashMap::new(),
            sched: Scheduler::default(),
            agents: HashMap::new(),
            next_agent: 0,
            bounce: Bounce::default(),
            wakers: Vec::new(),
            incoming: BTreeSet::new(),
            deferred: BTreeSet::new(),
            scan_incoming: true,
            next_incoming_scan: now,
            next_deferred_scan: now,
            deferred_turn: false,
            stopping: false,
        }
    }

    /// A wake-up channel from cleanup (the master handed it over).
    pub fn add_waker(&mut self, channel: Channel) {
        if let Err(e) = channel.set_nonblocking(true) {
            tracing::warn!("wake-up channel: {e}");
            return;
        }
        self.wakers.push(channel);
        self.scan_incoming = true;
    }

    /// No new work is started; [`Manager::quiescent`] says when the work in flight is done.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Nothing is waiting for an agent or for bounce.
    pub fn quiescent(&self) -> bool {
        self.sched.in_flight() == 0 && self.bounce.inflight.is_none()
    }

    pub fn active(&self) -> usize {
        self.msgs.len()
    }

    /// One turn: timers, admission, dispatch, notices, then waits up to `max_wait` for a channel
    /// (and `control`, which is only polled). Returns whether `control` is readable.
    pub fn step(
        &mut self,
        conn: &mut dyn Connect,
        control: Option<BorrowedFd<'_>>,
        max_wait: Duration,
    ) -> bool {
        self.collect_results();
        let now = Instant::now();
        self.timers(now);
        let mut more = false;
        if !self.stopping {
            more = self.admit();
            self.dispatch(conn);
        }
        self.pump_bounce(conn);
        self.close_idle_agents(now);
        let mut wait = max_wait
            .min(self.next_incoming_scan.saturating_duration_since(now))
            .min(self.next_deferred_scan.saturating_duration_since(now));
        if more || self.scan_incoming {
            wait = Duration::ZERO;
        }
        if let Some(oldest) = self
            .agents
            .values()
            .filter(|a| a.req.is_none())
            .map(|a| a.idle_since)
            .min()
        {
            wait = wait.min((oldest + AGENT_IDLE).saturating_duration_since(now));
        }
        self.wait_and_handle(control, wait)
    }

    /// Reads and records every result the agents have sent (their channels are non-blocking),
    /// so nothing this turn does comes between a delivery and its record.
    fn collect_results(&mut self) {
        let busy: Vec<u64> = self
            .agents
            .iter()
            .filter(|(_, a)| a.req.is_some())
            .map(|(k, _)| *k)
            .collect();
        for agent_id in busy {
            self.on_agent(agent_id);
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        if self.scan_incoming || now >= self.next_incoming_scan {
            self.scan_incoming = false;
            self.next_incoming_scan = now + self.cfg.queue_run_delay;
            match self.spool.list(Queue::Incoming) {
                Ok(ids) => self.incoming.extend(ids),
                Err(e) => tracing::error!("{e}"),
            }
        }
        if now >= self.next_deferred_scan {
            self.next_deferred_scan = now + self.cfg.queue_run_delay;
            let wall = SystemTime::now();
            match self.spool.list(Queue::Deferred) {
                Ok(ids) => {
                    for id in ids {
                        if self
                            .spool
                            .mtime(Queue::Deferred, id)
                            .is_some_and(|t| t <= wall)
                        {
                            self.deferred.insert(id);
                        }
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
    }

    /// Admits messages while there is room; returns whether more are waiting for this turn's
    /// limit (not for room).
    fn admit(&mut self) -> bool {
        let mut admitted = 0;
        while self.msgs.len() < self.cfg.active_limit {
            if admitted == ADMIT_PER_TURN {
                return true;
            }
            let take_deferred = self.deferred_turn || self.incoming.is_empty();
            self.deferred_turn = !self.deferred_turn;
            let next = if take_deferred {
                self.deferred
                    .pop_first()
                    .map(|id| (id, Queue::Deferred))
                    .or_else(|| self.incoming.pop_first().map(|id| (id, Queue::Incoming)))
            } else {
                self.incoming.pop_first().map(|id| (id, Queue::Incoming))
            };
            let Some((id, from)) = next else {
                return false;
            };
            if self.msgs.contains_key(&id) {
                continue;
            }
            self.admit_one(id, from);
            admitted += 1;
        }
        false
    }

    fn admit_one(&mut self, id: QueueId, from: Queue) {
        if from == Queue::Incoming {
            match self.spool.examine_incoming(id, false) {
                Ok(Incoming::Complete) => {}
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(queue_id = %id, "{e}");
                    return;
                }
            }
        }
        if let Err(e) = self.spool.move_file(id, from, Queue::Active) {
            if !matches!(&e, spool::SpoolError::Move { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
            {
                tracing::error!(queue_id = %id, "{e}");
            }
            return;
        }
        let (file, mut ro) = match self.spool.open_file(Queue::Active, id) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(queue_id = %id, "{e}; left in active until the next start");
                return;
            }
        };
        let read = QueueFile::read(&mut ro, QueueLimits::default()).and_then(|qf| {
            ro.seek(SeekFrom::Start(0))
                .map_err(|source| protocol::QueueFileError::Io {
                    what: "header",
                    source,
                })?;
            protocol::queue::verify(&mut ro)?;
            Ok(qf)
        });
        let qf = match read {
            Ok(qf) => qf,
            Err(e) => {
                tracing::warn!(queue_id = %id, "damaged queue file moved to corrupt: {e}");
                if let Err(e) = self.spool.move_file(id, Queue::Active, Queue::Corrupt) {
                    tracing::error!(queue_id = %id, "{e}");
                }
                return;
            }
        };
        let env = qf.envelope();
        tracing::info!(
            queue_id = %id,
            from = %env.sender,
            size = qf.content_len(),
            nrcpt = env.recipients.len(),
            "(queue active)"
        );
        let arrival = env.arrival.to_system_time();
        // Group the pending recipients by destination, in envelope order.
        let mut groups: Vec<(DestKey, protocol::Domain, Vec<u32>)> = Vec::new();
        let mut unroutable: Vec<(u32, &'static str, &'static str)> = Vec::new();
        for i in qf.pending() {
            let Ok(index) = u32::try_from(i) else {
                continue;
            };
            let Some(rcpt) = env.recipients.get(i) else {
                continue;
            };
            match self.cfg.route(rcpt) {
                Route::Transport(t, hop) => {
                    let key = (t.to_owned(), hop.normalized().to_owned());
                    match groups.iter_mut().find(|(k, _, _)| *k == key) {
                        Some(g) => g.2.push(index),
                        None => groups.push((key, hop, vec![index])),
                    }
                }
                Route::Defer(s, text) => unroutable.push((index, s, text)),
            }
        }
        let mut jobs = 0;
        for (key, hop, indices) in groups {
            let limit = self.cfg.recipient_limit(&key.0);
            let concurrency = self.cfg.concurrency(&key.0);
            for chunk in indices.chunks(limit) {
                self.sched.push(
                    key.clone(),
                    hop.clone(),
                    concurrency,
                    Job {
                        msg: id,
                        recipients: chunk.to_vec(),
                    },
                );
                jobs += 1;
            }
        }
        self.msgs.insert(
            id,
            Msg {
                file,
                ro,
                qf,
                arrival,
                outstanding: jobs,
                write_failed: false,
                notices: VecDeque::new(),
                after: After::Remove,
            },
        );
        for (index, s, text) in unroutable {
            self.record(
                id,
                index,
                Outcome::Deferred,
                status(s),
                diagnostic(text),
                "none",
            );
        }
        if jobs == 0 {
            self.finish(id);
        }
    }

    /// Appends a result to the message's queue file (written, not fsync'd: see the module's
    /// durability contract) and logs it.
    fn record(
        &mut self,
        id: QueueId,
        index: u32,
        outcome: Outcome,
        dsn: EnhancedStatus,
        diag: Diagnostic,
        relay: &str,
    ) {
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        let now = SystemTime::now();
        let next_retry = (outcome == Outcome::Deferred)
            .then(|| Timestamp::from_system_time(self.cfg.backoff.next_retry(msg.arrival, now)));
        let to = msg
            .qf
            .envelope()
            .recipients
            .get(index as usize)
            .map_or_else(|| "?".to_owned(), |r| r.path.to_string());
        let delay = now
            .duration_since(msg.arrival)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let word = match outcome {
            Outcome::Delivered => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
        };
        tracing::info!(
            queue_id = %id,
            to = %to,
            relay = relay,
            delay = format!("{delay:.2}"),
            dsn = %dsn,
            status = word,
            "({diag})"
        );
        let rec = ResultRecord {
            recipient: index,
            outcome,
            status: dsn,
            diagnostic: diag,
            time: Timestamp::from_system_time(now),
            next_retry,
        };
        if let Err(e) = msg.qf.append(&mut msg.file, rec) {
            tracing::error!(queue_id = %id, "cannot record a delivery result: {e}");
            msg.write_failed = true;
        }
    }

    fn dispatch(&mut self, conn: &mut dyn Connect) {
        while let Some((key, nexthop, job)) = self.sched.next(self.cfg.transport_cap) {
            let transport = transport_name(&key.0);
            let idle = self
                .agents
                .iter()
                .find(|(_, a)| a.transport == transport && a.req.is_none())
                .map(|(k, _)| *k);
            let agent_id = match idle {
                Some(k) => k,
                None => match conn.connect(transport) {
                    Ok(channel) => {
                        if let Err(e) = channel.set_nonblocking(true) {
                            tracing::warn!("channel to {transport}: {e}");
                        }
                        let k = self.next_agent;
                        self.next_agent += 1;
                        self.agents.insert(
                            k,
                            Agent {
                                transport,
                                channel,
                                req: None,
                                idle_since: Instant::now(),
                            },
                        );
                        k
                    }
                    Err(e) => {
                        tracing::warn!("mail transport {transport} unavailable: {e}");
                        let mut jobs = vec![job];
                        jobs.extend(self.sched.take_queued(&key));
                        self.sched.finished(&key, false);
                        for job in jobs {
                            self.defer_job(&job, "mail transport unavailable", transport);
                        }
                        continue;
                    }
                },
            };
            self.send_request(agent_id, key, nexthop, job);
        }
    }

    fn send_request(&mut self, agent_id: u64, key: DestKey, nexthop: protocol::Domain, job: Job) {
        let Some(msg) = self.msgs.get(&job.msg) else {
            self.sched.finished(&key, false);
            return;
        };
        let env = msg.qf.envelope();
        let recipients: Vec<DeliveryRecipient> = job
            .recipients
            .iter()
            .filter_map(|i| {
                env.recipients.get(*i as usize).map(|r| DeliveryRecipient {
                    index: *i,
                    recipient: r.clone(),
                })
            })
            .collect();
        let request = recipients.try_into().map(|recipients| ToAgent::Deliver {
            queue_id: job.msg,
            nexthop,
            sender: env.sender.clone(),
            flags: env.flags.clone(),
            arrival: env.arrival,
            content_offset: msg.qf.content_offset(),
            content_len: msg.qf.content_len(),
            recipients,
        });
        let Some(agent) = self.agents.get_mut(&agent_id) else {
            return;
        };
        let transport = agent.transport;
        let sent = match request {
            Ok(req) => agent
                .channel
                .send(&req, &[msg.ro.as_fd()])
                .map_err(|e| e.to_string()),
            Err(_) => Err("too many recipients for one request".to_owned()),
        };
        match sent {
            Ok(()) => {
                agent.req = Some(Request {
                    msg: job.msg,
                    dest: key,
                    done: vec![false; job.recipients.len()],
                    given: job.recipients,
                    answered: false,
                });
            }
            Err(e) => {
                tracing::warn!(queue_id = %job.msg, "cannot send a request to {transport}: {e}");
                self.agents.remove(&agent_id);
                self.sched.finished(&key, false);
                self.defer_job(&job, "mail transport unavailable", transport);
            }
        }
    }

    /// Defers every recipient of a job that was not handed to an agent, and ends the job.
    fn defer_job(&mut self, job: &Job, text: &str, relay: &str) {
        for index in &job.recipients {
            self.record(
                job.msg,
                *index,
                Outcome::Deferred,
                status("4.3.0"),
                diagnostic(text),
                relay,
            );
        }
        self.job_done(job.msg);
    }

    fn job_done(&mut self, id: QueueId) {
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        msg.outstanding = msg.outstanding.saturating_sub(1);
        if msg.outstanding == 0 {
            self.finish(id);
        }
    }

    /// Every job of the message has ended: decide what becomes of it.
    fn finish(&mut self, id: QueueId) {
        let now = SystemTime::now();
        let Some(msg) = self.msgs.get(&id) else {
            return;
        };
        if msg.write_failed {
            self.defer_message(id);
            return;
        }
        let lifetime = if matches!(msg.qf.envelope().sender, protocol::ReversePath::Null) {
            self.cfg.bounce_queue_lifetime
        } else {
            self.cfg.maximal_queue_lifetime
        };
        let pending: Vec<usize> = msg.qf.pending().collect();
        if !pending.is_empty() && expired(msg.arrival, now, lifetime) {
            for i in pending {
                let (dsn, text) = match self.msgs.get(&id).and_then(|m| m.qf.result(i)) {
                    Some(r) if r.status.class() == 4 => (r.status, r.diagnostic.to_string()),
                    _ => (status("4.4.7"), String::new()),
                };
                let text = format!("message expired after {} s: {text}", lifetime.as_secs());
                if let Ok(index) = u32::try_from(i) {
                    self.record(id, index, Outcome::Bounced, dsn, diagnostic(&text), "none");
                }
            }
            if self.msgs.get(&id).is_some_and(|m| m.write_failed) {
                self.defer_message(id);
                return;
            }
        }
        let Some(msg) = self.msgs.get_mut(&id) else {
            return;
        };
        let env = msg.qf.envelope();
        let pending: Vec<u32> = msg
            .qf
            .pending()
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        let mut notices = Vec::new();
        if !pending.is_empty() {
            let age = now.duration_since(msg.arrival).unwrap_or(Duration::ZERO);
            let warn = !self.cfg.delay_warning_time.is_zero()
                && age >= self.cfg.delay_warning_time
                && !spool::warned(&msg.file).unwrap_or(true);
            if warn {
                notices.push((NoticeKind::Delay, pending));
            }
            msg.after = After::Defer;
        } else {
            let mut failed = Vec::new();
            let mut succeeded = Vec::new();
            for (i, rcpt) in env.recipients.iter().enumerate() {
                let Ok(index) = u32::try_from(i) else {
                    continue;
                };
                match msg.qf.result(i).map(|r| r.outcome) {
                    Some(Outcome::Bounced) => failed.push(index),
                    Some(Outcome::Delivered) if rcpt.notify.is_some_and(|n| n.success) => {
                        succeeded.push(index)
                    }
                    _ => {}
                }
            }
            if !failed.is_empty() {
                notices.push((NoticeKind::Failure, failed));
            }
            if !succeeded.is_empty() {
                notices.push((NoticeKind::Success, succeeded));
            }
            msg.after = After::Remove;
        }
        for (kind, list) in notices {
            for chunk in list.chunks(RECIPIENTS_PER_NOTICE) {
                msg.notices.push_back((kind, chunk.to_vec()));
            }
        }
        if msg.notices.is_empty() {
            self.complete(id);
            return;
        }
        // A notice names results: they are on disk before bounce reads them.
        if let Err(e) = msg.file.sync_data() {
            tracing::error!(queue_id = %id, "cannot fsync the result log: {e}");
            msg.notices.clear();
            self.defer_message(id);
            return;
        }
        self.bounce.queue.push_back(id);
    }

    fn complete(&mut self, id: QueueId) {
        match self.msgs.get(&id).map(|m| m.after) {
            Some(After::Remove) => self.remove_message(id),
            Some(After::Defer) => self.defer_message(id),
            None => {}
        }
    }

    fn remove_message(&mut self, id: QueueId) {
        self.msgs.remove(&id);
        match self.spool.remove(Queue::Active, id) {
            Ok(()) => tracing::info!(queue_id = %id, "removed"),
            Err(e) => tracing::error!(queue_id = %id, "{e}"),
        }
    }

    fn defer_message(&mut self, id: QueueId) {
        let Some(msg) = self.msgs.remove(&id) else {
            return;
        };
        let next = self.cfg.backoff.next_retry(msg.arrival, SystemTime::now());
        let moved = spool::set_retry_time(&msg.file, next)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.spool
                    .move_file(id, Queue::Active, Queue::Deferred)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = moved {
            tracing::error!(queue_id = %id, "cannot defer: {e}; left in active until the next start");
        }
    }

    fn pump_bounce(&mut self, conn: &mut dyn Connect) {
        while self.bounce.inflight.is_none() {
            let Some(&id) = self.bounce.queue.front() else {
                return;
            };
            let Some(msg) = self.msgs.get(&id) else {
                self.bounce.queue.pop_front();
                continue;
            };
            let Some((kind, list)) = msg.notices.front().cloned() else {
                self.bounce.queue.pop_front();
                self.complete(id);
                continue;
            };
            if self.bounce.channel.is_none() {
                match conn.connect("bounce") {
                    Ok(ch) => {
                        if let Err(e) = ch.set_nonblocking(true) {
                            tracing::warn!("channel to bounce: {e}");
                        }
                        self.bounce.channel = Some(ch);
                    }
                    Err(e) => {
                        tracing::warn!(queue_id = %id, "bounce unavailable: {e}; message deferred");
                        self.bounce.queue.pop_front();
                        self.bounce_failed(id);
                        continue;
                    }
                }
            }
            let Some(ch) = &self.bounce.channel else {
                continue;
            };
            let sent = match list.try_into() {
                Ok(recipients) => ch
                    .send(
                        &ToBounce::Notify {
                            queue_id: id,
                            kind,
                            recipients,
                        },
                        &[msg.ro.as_fd()],
                    )
                    .map_err(|e| e.to_string()),
                Err(_) => Err("too many recipients for one notice".to_owned()),
            };
            match sent {
                Ok(()) => self.bounce.inflight = Some((id, kind)),
                Err(e) => {
                    tracing::warn!(queue_id = %id, "cannot send a notice request to bounce: {e}");
                    self.bounce.channel = None;
                    self.bounce.queue.pop_front();
                    self.bounce_failed(id);
                }
            }
        }
    }

    fn bounce_failed(&mut self, id: QueueId) {
        if let Some(msg) = self.msgs.get_mut(&id) {
            msg.notices.clear();
        }
        self.defer_message(id);
    }

    fn on_bounce(&mut self) {
        loop {
            let Some(ch) = &self.bounce.channel else {
                return;
            };
            let received = ch.recv::<FromBounce>();
            let inflight = self.bounce.inflight;
            match (received, inflight) {
                (Err(ChannelError::WouldBlock), _) => return,
                (Ok(r), Some((id, kind))) => {
                    self.bounce.inflight = None;
                    let Some(msg) = self.msgs.get_mut(&id) else {
                        continue;
                    };
                    match r.msg {
                        FromBounce::Sent { id: notice } => {
                            let what = match kind {
                                NoticeKind::Failure => "non-delivery",
                                NoticeKind::Delay => "delay",
                                NoticeKind::Success => "success",
                            };
                            match notice {
                                Some(n) => {
                                    tracing::info!(queue_id = %id, "sender {what} notification: {n}")
                                }
                                None => {
                                    tracing::info!(queue_id = %id, "sender {what} notification: none needed")
                                }
                            }
                            msg.notices.pop_front();
                            if kind == NoticeKind::Delay {
                                if let Err(e) = spool::mark_warned(&msg.file) {
                                    tracing::warn!(queue_id = %id, "cannot mark the delay warning sent: {e}");
                                }
                            }
                        }
                        FromBounce::Failed {
                            temporary: true,
                            detail,
                        } => {
                            tracing::warn!(queue_id = %id, "bounce failed temporarily: {detail:?}; message deferred");
                            self.bounce.queue.retain(|q| *q != id);
                            self.bounce_failed(id);
                        }
                        FromBounce::Failed {
                            temporary: false,
                            detail,
                        } => {
                            tracing::error!(queue_id = %id, "bounce cannot send a {kind:?} notice: {detail:?}; notice dropped");
                            msg.notices.pop_front();
                        }
                    }
                }
                (Ok(r), None) => {
                    tracing::warn!(
                        "channel to bounce: protocol error: {} while no notice was asked for; channel closed",
                        protocol::Message::kind(&r.msg)
                    );
                    self.bounce.channel = None;
                    return;
                }
                (Err(e), _) => {
                    if !matches!(e, ChannelError::PeerClosed) {
                        tracing::warn!("channel to bounce: {e}; channel closed");
                    }
                    self.bounce.channel = None;
                    if let Some((id, _)) = self.bounce.inflight.take() {
                        self.bounce.queue.retain(|q| *q != id);
                        self.bounce_failed(id);
                    }
                    return;
                }
            }
        }
    }

    fn on_agent(&mut self, agent_id: u64) {
        loop {
            let Some(agent) = self.agents.get_mut(&agent_id) else {
                return;
            };
            let transport = agent.transport;
            match agent.channel.recv::<FromAgent>() {
                Err(ChannelError::WouldBlock) => return,
                Err(e) => {
                    if agent.req.is_some() || !matches!(e, ChannelError::PeerClosed) {
                        tracing::warn!("channel to {transport}: {e}; channel closed");
                    }
                    self.fail_agent(agent_id, "delivery agent died or broke the protocol");
                    return;
                }
                Ok(r) => match (r.msg, agent.req.as_mut()) {
                    (
                        FromAgent::Result {
                            index,
                            outcome,
                            status,
                            diagnostic,
                        },
                        Some(req),
                    ) => {
                        let slot = req
                            .given
                            .iter()
                            .position(|i| *i == index)
                            .filter(|p| !req.done[*p]);
                        let Some(p) = slot else {
                            tracing::warn!(
                                queue_id = %req.msg,
                                "channel to {transport}: protocol error: Result for recipient {index}, which it was not given or already answered; channel closed"
                            );
                            self.fail_agent(agent_id, "delivery agent broke the protocol");
                            return;
                        };
                        req.done[p] = true;
                        if outcome.is_final() {
                            req.answered = true;
                        }
                        let id = req.msg;
                        self.record(id, index, outcome, status, diagnostic, transport);
                    }
                    (FromAgent::Done, Some(_)) => {
                        let Some(req) = agent.req.take() else {
                            return;
                        };
                        agent.idle_since = Instant::now();
                        self.end_request(req, transport, "delivery agent gave no result");
                    }
                    (other, None) => {
                        tracing::warn!(
                            "channel to {transport}: protocol error: {} while no request is open; channel closed",
                            protocol::Message::kind(&other)
                        );
                        self.fail_agent(agent_id, "");
                        return;
                    }
                },
            }
        }
    }

    /// Defers the recipients of a request that got no result, and ends it.
    fn end_request(&mut self, req: Request, relay: &str, text: &str) {
        for (index, done) in req.given.iter().zip(&req.done) {
            if !done {
                self.record(
                    req.msg,
                    *index,
                    Outcome::Deferred,
                    status("4.3.0"),
                    diagnostic(text),
                    relay,
                );
            }
        }
        self.sched.finished(&req.dest, req.answered);
        self.job_done(req.msg);
    }

    fn fail_agent(&mut self, agent_id: u64, text: &str) {
        if let Some(agent) = self.agents.remove(&agent_id) {
            if let Some(req) = agent.req {
                self.end_request(req, agent.transport, text);
            }
        }
    }

    fn close_idle_agents(&mut self, now: Instant) {
        self.agents
            .retain(|_, a| a.req.is_some() || now < a.idle_since + AGENT_IDLE);
    }

    fn on_waker(&mut self, i: usize) -> bool {
        let Some(ch) = self.wakers.get(i) else {
            return true;
        };
        loop {
            match ch.recv::<ToQmgr>() {
                Ok(_) => self.scan_incoming = true,
                Err(ChannelError::WouldBlock) => return true,
                Err(ChannelError::PeerClosed) => return false,
                Err(e) => {
                    tracing::warn!("wake-up channel: {e}; channel closed");
                    return false;
                }
            }
        }
    }

    fn wait_and_handle(&mut self, control: Option<BorrowedFd<'_>>, wait: Duration) -> bool {
        let mut tokens = Vec::new();
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        if let Some(c) = control {
            tokens.push(Token::Control);
            fds.push(c);
        }
        for (i, w) in self.wakers.iter().enumerate() {
            tokens.push(Token::Waker(i));
            fds.push(w.as_fd());
        }
        for (k, a) in &self.agents {
            tokens.push(Token::Agent(*k));
            fds.push(a.channel.as_fd());
        }
        if let Some(b) = &self.bounce.channel {
            tokens.push(Token::Bounce);
            fds.push(b.as_fd());
        }
        let timeout = daemon::poll_timeout(wait.min(Duration::from_secs(60)));
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut pfds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return false,
            Err(e) => {
                tracing::error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
                return false;
            }
        }
        let ready: Vec<bool> = pfds
            .iter()
            .map(|p| {
                p.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            })
            .collect();
        drop(pfds);
        drop(fds);
        let mut control_ready = false;
        let mut dead_wakers = Vec::new();
        for (token, ready) in tokens.into_iter().zip(ready) {
            if !ready {
                continue;
            }
            match token {
                Token::Control => control_ready = true,
                Token::Waker(i) => {
                    if !self.on_waker(i) {
                        dead_wakers.push(i);
                    }
                }
                Token::Agent(k) => self.on_agent(k),
                Token::Bounce => self.on_bounce(),
            }
        }
        for i in dead_wakers.into_iter().rev() {
            self.wakers.remove(i);
        }
        control_ready
    }
}

/// A duplicate of a descriptor, for polling the control channel while the daemon is borrowed.
pub fn dup(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

#[cfg(test)]
mod tests;
