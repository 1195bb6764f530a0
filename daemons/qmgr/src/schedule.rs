//! Per-destination scheduling: one queue of delivery jobs per (transport, next hop), served
//! round-robin, each destination with its own concurrency window. Pure state: no I/O, no clock.
//!
//! Trusts: its caller. Nothing here comes from another process.
//!
//! Slow start, as Postfix's qmgr: a destination starts with `initial_destination_concurrency`
//! parallel requests; each request that the agent finished with at least one final result
//! (delivered or bounced: the destination answers) opens the window by one, up to the
//! transport's `*_destination_concurrency_limit` (0 = no limit); a request that produced only
//! deferrals (destination down, agent died) closes it by one, never below one. Postfix grows
//! by 1/window per delivery; Postern grows by one per request, which reaches the limit after as
//! many requests as Postfix needs deliveries of one recipient each. A destination whose queue
//! empties and has nothing in flight is forgotten, so it starts again at the initial window, as
//! Postfix's in-memory queues do.
//!
//! Besides each destination's window, a transport never has more requests in flight than its
//! cap (the caller passes `default_process_limit`): each request holds one agent process.

use std::collections::{HashMap, VecDeque};

use protocol::{Domain, QueueId};

/// A destination: the transport (master.cf service) and the next hop's normalized name.
pub type DestKey = (String, String);

/// Recipients of one message for one destination, at most the transport's recipient limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub msg: QueueId,
    pub recipients: Vec<u32>,
}

#[derive(Debug)]
struct Dest {
    nexthop: Domain,
    jobs: VecDeque<Job>,
    active: usize,
    window: usize,
    /// 0 = no limit.
    limit: usize,
}

impl Dest {
    fn may_start(&self) -> bool {
        !self.jobs.is_empty() && self.active < self.window
    }
}

/// The concurrency settings of one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    pub initial: usize,
    /// 0 = no limit.
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct Scheduler {
    dests: HashMap<DestKey, Dest>,
    /// Destinations with queued jobs, in round-robin order.
    rotation: VecDeque<DestKey>,
    per_transport: HashMap<String, usize>,
}

impl Scheduler {
    /// Queues a job for a destination.
    pub fn push(&mut self, key: DestKey, nexthop: Domain, concurrency: Concurrency, job: Job) {
        let dest = self.dests.entry(key.clone()).or_insert_with(|| Dest {
            nexthop,
            jobs: VecDeque::new(),
            active: 0,
            window: concurrency.initial.max(1),
            limit: concurrency.limit,
        });
        if dest.limit != 0 {
            dest.window = dest.window.min(dest.limit);
        }
        if dest.jobs.is_empty() {
            self.rotation.push_back(key);
        }
        dest.jobs.push_back(job);
    }

    /// The next job that may start now, round-robin over destinations, within each
    /// destination's window and `cap` requests per transport. The job counts as in flight
    /// until [`Scheduler::finished`].
    pub fn next(&mut self, cap: usize) -> Option<(DestKey, Domain, Job)> {
        for _ in 0..self.rotation.len() {
            let key = self.rotation.pop_front()?;
            let Some(dest) = self.dests.get_mut(&key) else {
                continue;
            };
            let busy = self.per_transport.get(&key.0).copied().unwrap_or(0);
            if !dest.may_start() || busy >= cap {
                if !dest.jobs.is_empty() {
                    self.rotation.push_back(key);
                }
                continue;
            }
            let Some(job) = dest.jobs.pop_front() else {
                continue;
            };
            dest.active += 1;
            *self.per_transport.entry(key.0.clone()).or_insert(0) += 1;
            let nexthop = dest.nexthop.clone();
            if !dest.jobs.is_empty() {
                self.rotation.push_back(key.clone());
            }
            return Some((key, nexthop, job));
        }
        None
    }

    /// A started job ended; `answered` says whether the destination gave a final result.
    pub fn finished(&mut self, key: &DestKey, answered: bool) {
        if let Some(n) = self.per_transport.get_mut(&key.0) {
            *n = n.saturating_sub(1);
        }
        let Some(dest) = self.dests.get_mut(key) else {
            return;
        };
        dest.active = dest.active.saturating_sub(1);
        if answered {
            if dest.limit == 0 || dest.window < dest.limit {
                dest.window += 1;
            }
        } else {
            dest.window = dest.window.saturating_sub(1).max(1);
        }
        if dest.jobs.is_empty() && dest.active == 0 {
            self.dests.remove(key);
        }
    }

    /// Takes every queued (not started) job of a destination: its transport is unavailable.
    pub fn take_queued(&mut self, key: &DestKey) -> Vec<Job> {
        let Some(dest) = self.dests.get_mut(key) else {
            return Vec::new();
        };
        let jobs: Vec<Job> = dest.jobs.drain(..).collect();
        if dest.active == 0 {
            self.dests.remove(key);
        }
        self.rotation.retain(|k| k != key);
        jobs
    }

    /// The destination's current concurrency window.
    #[cfg(test)]
    pub fn window(&self, key: &DestKey) -> Option<usize> {
        self.dests.get(key).map(|d| d.window)
    }

    /// Requests in flight, over all transports.
    pub fn in_flight(&self) -> usize {
        self.per_transport.values().sum()
    }

    /// Jobs queued and not started.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.dests.values().map(|d| d.jobs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn key(t: &str, h: &str) -> DestKey {
        (t.to_owned(), h.to_owned())
    }

    fn id(n: u32) -> QueueId {
        QueueId::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            n,
        )
        .unwrap()
    }

    fn job(n: u32) -> Job {
        Job {
            msg: id(n),
            recipients: vec![0],
        }
    }

    fn domain(h: &str) -> Domain {
        Domain::parse(h, false).unwrap()
    }

    const SLOW: Concurrency = Concurrency {
        initial: 2,
        limit: 4,
    };

    #[test]
    fn slow_start_opens_the_window_on_answers_and_closes_it_on_failures() {
        let mut s = Scheduler::default();
        let k = key("smtp", "example.test");
        for n in 0..10 {
            s.push(k.clone(), domain("example.test"), SLOW, job(n));
        }
        let a = s.next(100).unwrap();
        let _b = s.next(100).unwrap();
        assert!(s.next(100).is_none(), "initial window of 2");
        assert_eq!(a.2, job(0), "jobs of a destination in order");
        s.finished(&k, true);
        assert_eq!(s.window(&k), Some(3));
        assert!(s.next(100).is_some());
        assert!(s.next(100).is_some());
        assert!(s.next(100).is_none());
        for _ in 0..3 {
            s.finished(&k, true);
        }
        assert_eq!(s.window(&k), Some(4), "capped at the limit");
        s.finished(&k, false);
        s.finished(&k, false);
        assert_eq!(s.window(&k), Some(2));
        assert_eq!(s.in_flight(), 0);
        for _ in 0..5 {
            s.finished(&k, false);
        }
        assert!(s.window(&k).unwrap() >= 1);
    }

    #[test]
    fn destinations_take_turns_and_a_transport_has_a_cap() {
        let mut s = Scheduler::default();
        let (a, b) = (key("smtp", "a.test"), key("smtp", "b.test"));
        let wide = Concurrency {
            initial: 10,
            limit: 0,
        };
        for n in 0..3 {
            s.push(a.clone(), domain("a.test"), wide, job(n));
            s.push(b.clone(), domain("b.test"), wide, job(10 + n));
        }
        let order: Vec<String> = (0..3).map(|_| s.next(3).unwrap().0 .1).collect();
        assert_eq!(order, ["a.test", "b.test", "a.test"]);
        assert!(s.next(3).is_none(), "transport cap of 3");
        s.finished(&a, true);
        assert_eq!(s.next(3).unwrap().0, b);
        assert_eq!(s.queued(), 2);
    }

    #[test]
    fn an_unavailable_transport_gives_back_its_queued_jobs_and_idle_destinations_are_forgotten() {
        let mut s = Scheduler::default();
        let k = key("virtual", "v.test");
        for n in 0..3 {
            s.push(k.clone(), domain("v.test"), SLOW, job(n));
        }
        let started = s.next(10).unwrap();
        assert_eq!(started.2, job(0));
        assert_eq!(s.take_queued(&k), vec![job(1), job(2)]);
        assert!(s.next(10).is_none());
        s.finished(&k, true);
        assert_eq!(s.window(&k), None, "forgotten once empty and idle");
        s.push(k.clone(), domain("v.test"), SLOW, job(5));
        assert_eq!(s.window(&k), Some(2), "starts again at the initial window");
    }
}
