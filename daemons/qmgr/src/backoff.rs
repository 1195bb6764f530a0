//! When a deferred message is tried again, and when it has been queued too long. Pure: callers
//! pass the clock.
//!
//! Postfix's rule (qmgr_active.c): the wait before the next attempt is the message's age,
//! clamped to `[minimal_backoff_time, maximal_backoff_time]`. Since the age roughly doubles with
//! every wait, the waits grow exponentially (300 s, 600 s, 1200 s, ...) up to the maximum, with
//! no per-message counter to keep. Postern does the same.

use std::time::{Duration, SystemTime};

/// The back-off settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub minimal: Duration,
    pub maximal: Duration,
}

impl Backoff {
    /// The time of the next attempt for a message that arrived at `arrival`, deferred `now`.
    pub fn next_retry(&self, arrival: SystemTime, now: SystemTime) -> SystemTime {
        let age = now.duration_since(arrival).unwrap_or(Duration::ZERO);
        // A maximal smaller than the minimal is a configuration slip; the minimal wins, as
        // Postfix's clamping order does.
        let wait = age.min(self.maximal).max(self.minimal);
        now + wait
    }
}

/// Whether a message that arrived at `arrival` has outlived `lifetime` at `now`. A lifetime of
/// zero means "try once": expired as soon as the first attempt is deferred (as Postfix).
pub fn expired(arrival: SystemTime, now: SystemTime, lifetime: Duration) -> bool {
    now.duration_since(arrival).unwrap_or(Duration::ZERO) >= lifetime
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_wait_is_the_age_clamped_so_it_doubles() {
        let b = Backoff {
            minimal: secs(300),
            maximal: secs(4000),
        };
        let t0 = SystemTime::UNIX_EPOCH + secs(1_000_000);
        // First deferral, seconds after arrival: the minimal wait.
        let r1 = b.next_retry(t0, t0 + secs(1));
        assert_eq!(r1, t0 + secs(301));
        // Each retry at its time waits about as long as the message is old.
        let r2 = b.next_retry(t0, r1);
        assert_eq!(r2.duration_since(r1).unwrap(), secs(301));
        let r3 = b.next_retry(t0, r2);
        assert_eq!(r3.duration_since(r2).unwrap(), secs(602));
        let r4 = b.next_retry(t0, r3);
        assert_eq!(r4.duration_since(r3).unwrap(), secs(1204));
        // ... up to the maximal.
        let late = t0 + secs(100_000);
        assert_eq!(b.next_retry(t0, late), late + secs(4000));
        // A clock that went backwards gives the minimal, never a panic.
        assert_eq!(b.next_retry(t0 + secs(50), t0), t0 + secs(300));
    }

    #[test]
    fn expiry_counts_from_arrival() {
        let t0 = SystemTime::UNIX_EPOCH + secs(1_000_000);
        assert!(!expired(t0, t0 + secs(9), secs(10)));
        assert!(expired(t0, t0 + secs(10), secs(10)));
        assert!(expired(t0, t0, Duration::ZERO));
    }
}
