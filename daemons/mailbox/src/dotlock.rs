//! Dot-locking a mailbox (`NAME.lock`, made with `O_EXCL`), as mail readers of the mbox
//! format expect. Bounded: at most `attempts` tries `delay` apart (Postfix's
//! `deliver_lock_attempts`, `deliver_lock_delay`). A lock older than `stale_after`
//! (Postfix's `stale_lock_time`) is removed as a dead process's; one that cannot be removed
//! counts as a held lock, so a lock that never goes away costs `attempts × delay` of idle
//! waiting, never a busy loop.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::LockOptions;

/// A held dot-lock; removed when dropped.
#[derive(Debug)]
pub struct DotLock(PathBuf);

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(lock = %self.0.display(), "cannot remove dot-lock: {e}");
        }
    }
}

/// Why no dot-lock was had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot lock mailbox {mailbox} for exclusive access: {lock} exists")]
    Held { mailbox: String, lock: String },
    #[error("cannot create dot-lock {lock}: {source}")]
    Io {
        lock: String,
        #[source]
        source: io::Error,
    },
}

/// The dot-lock's name for `mailbox`.
pub fn lock_path(mailbox: &Path) -> PathBuf {
    let mut name = OsString::from(mailbox.as_os_str());
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the dot-lock of `mailbox`.
pub fn acquire(mailbox: &Path, opts: &LockOptions) -> Result<DotLock, LockError> {
    let lock = lock_path(mailbox);
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock)
        {
            Ok(_) => return Ok(DotLock(lock)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = std::fs::symlink_metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > opts.stale_after);
                if stale {
                    match std::fs::remove_file(&lock) {
                        // Gone: try again at once (this still counts as an attempt).
                        Ok(()) => {
                            tracing::warn!(lock = %lock.display(), "removed a stale dot-lock");
                            continue;
                        }
                        Err(e) => tracing::warn!(
                            lock = %lock.display(),
                            "cannot remove a stale dot-lock: {e}"
                        ),
                    }
                }
                if attempt < attempts {
                    std::thread::sleep(opts.delay);
                }
            }
            Err(source) => {
                return Err(LockError::Io {
                    lock: lock.display().to_string(),
                    source,
                })
            }
        }
    }
    Err(LockError::Held {
        mailbox: mailbox.display().to_string(),
        lock: lock.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn opts() -> LockOptions {
        LockOptions {
            attempts: 4,
            delay: Duration::from_millis(150),
            stale_after: Duration::from_secs(500),
        }
    }

    fn thread_cpu() -> Duration {
        let usage =
            nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
        };
        t(usage.user_time()) + t(usage.system_time())
    }

    #[test]
    fn a_lock_is_taken_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("u");
        let held = acquire(&mbox, &opts()).unwrap();
        assert!(dir.path().join("u.lock").exists());
        let again = acquire(&mbox, &opts());
        assert!(matches!(again, Err(LockError::Held { .. })), "{again:?}");
        drop(held);
        assert!(!dir.path().join("u.lock").exists());
    }

    #[test]
    fn a_stale_lock_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("u");
        let lock = dir.path().join("u.lock");
        std::fs::write(&lock, "").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let held = acquire(&mbox, &opts()).unwrap();
        drop(held);
    }

    /// The reproduced defect: a stale lock that cannot be removed (here a directory, which
    /// `unlink` refuses whoever runs it) made the agent spin with no deadline. Now it is a
    /// held lock: the attempts run out after about `attempts × delay`, idle.
    #[test]
    fn an_unremovable_stale_lock_ends_after_the_attempts_without_spinning() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("u");
        let lock = dir.path().join("u.lock");
        std::fs::create_dir(&lock).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(600);
        std::fs::File::open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let (start, cpu) = (Instant::now(), thread_cpu());
        let result = acquire(&mbox, &opts());
        let (wall, used) = (start.elapsed(), thread_cpu() - cpu);
        assert!(matches!(result, Err(LockError::Held { .. })), "{result:?}");
        // Three pauses between four attempts.
        assert!(wall >= Duration::from_millis(450), "{wall:?}");
        assert!(wall < Duration::from_secs(10), "{wall:?}");
        // Waiting, not spinning: the thread used a small part of the time it waited.
        assert!(used * 4 < wall, "cpu {used:?} of {wall:?}");
    }
}
