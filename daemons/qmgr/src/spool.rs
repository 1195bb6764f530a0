//! The queue directories as qmgr uses them: list, move (a rename), remove, open, mark a deferred file's next retry time in its mtime, and the start-up recovery.
//!
//! Trusts: the spool root and its subdirectories (the master made them, owned by the queue user,
//! mode 0700) and the kernel. Does not trust the names or files found in them: a name that is
//! not a queue id is left alone and never opened, files are opened without following symbolic
//! links, and anything that is not a regular file is skipped. What a file contains is read by
//! `protocol::queue` (the caller's business).
//!
//! Rules shared with cleanup (see its `spool` module): a file in `incoming/` is complete when it
//! has the owner-execute bit (mode 0700). One without it is being written while its writer holds
//! `flock(LOCK_EX)`; if the lock can be taken, the writer is dead and the file is removed at
//! start-up. Decisions of this module:
//! - A deferred file's mtime is its next retry time (Postfix's trick: the deferred scan needs
//!   only `stat`). The mtime is set before the file is renamed into `deferred/`, so a file found
//!   there always carries its retry time.
//! - The group-execute bit (mode 0710) marks a message whose sender has been sent a delay
//!   warning, so `delay_warning_time` warns once even across restarts (Postfix records this in
//!   the queue file; Postern's result log has no record kind for it).
//! - A removal is not followed by a directory fsync: a removal lost in a crash brings back a
//!   file whose recipients all have final results, which only repeats its notices.
//! - Nor is a move between queues (as Postfix's qmgr): a rename is atomic, and a move lost in
//!   a power loss leaves the file in `incoming/`, `active/` or `deferred/`, each of which the
//!   next start takes up again. A move costs a rename, not two directory fsyncs per message.

use std::fs::{File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::os::fd::AsFd;

use daemon::spool::FileState;
use protocol::QueueId;

/// The group-execute bit: a delay warning was sent for this message.
pub const WARNED_BIT: u32 = 0o010;

/// The queues qmgr works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    Incoming,
    Active,
    Deferred,
    Corrupt,
}

impl Queue {
    pub const ALL: [Queue; 4] = [
        Queue::Incoming,
        Queue::Active,
        Queue::Deferred,
        Queue::Corrupt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Queue::Incoming => "incoming",
            Queue::Active => "active",
            Queue::Deferred => "deferred",
            Queue::Corrupt => "corrupt",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the queue directory {path}: {source}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the queue directory {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move queue file {id} from {from} to {to}: {source}")]
    Move {
        id: QueueId,
        from: &'static str,
        to: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot fsync the queue directory {queue}: {source}")]
    SyncDir {
        queue: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot {what} queue file {queue}/{id}: {source}")]
    File {
        what: &'static str,
        queue: &'static str,
        id: QueueId,
        #[source]
        source: io::Error,
    },
}

/// What [`Spool::examine_incoming`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Complete: may be moved to `active/`.
    Complete,
    /// Incomplete and locked: its writer is alive.
    Writing,
    /// Incomplete and unlocked: its writer died; removed (only when asked to sweep).
    Removed,
    /// Incomplete and unlocked, left in place (not sweeping).
    Dead,
    /// Gone since the listing, or not a regular file.
    Gone,
}

/// What the start-up recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Files moved from `active/` back to `incoming/`.
    pub returned: usize,
    /// Incomplete files of dead writers removed from `incoming/`.
    pub removed: usize,
}

/// The spool, with each queue directory held open for fsyncs.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    dirs: Vec<File>,
}

impl Spool {
    /// Opens the queue directories under `root` (`queue_directory`).
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        let mut dirs = Vec::new();
        for q in Queue::ALL {
            let path = root.join(q.name());
            let dir = File::open(&path).map_err(|source| SpoolError::OpenDir { path, source })?;
            dirs.push(dir);
        }
        Ok(Spool {
            root: root.to_owned(),
            dirs,
        })
    }

    pub fn path(&self, queue: Queue, id: QueueId) -> PathBuf {
        self.root.join(queue.name()).join(id.to_string())
    }

    fn sync_dir(&self, queue: Queue) -> Result<(), SpoolError> {
        self.dirs[queue.index()]
            .sync_all()
            .map_err(|source| SpoolError::SyncDir {
                queue: queue.name(),
                source,
            })
    }

    /// The queue ids in `queue`, oldest first; other names are ignored.
    pub fn list(&self, queue: Queue) -> Result<Vec<QueueId>, SpoolError> {
        let path = self.root.join(queue.name());
        let err = |source| SpoolError::List {
            path: path.clone(),
            source,
        };
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(err)? {
            let entry = entry.map_err(err)?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| QueueId::parse(n).ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The mtime of a file in `queue` (for `deferred/`: its next retry time); `None` when it is
    /// gone or not a regular file.
    pub fn mtime(&self, queue: Queue, id: QueueId) -> Option<SystemTime> {
        let meta = std::fs::symlink_metadata(self.path(queue, id)).ok()?;
        if !meta.is_file() {
            return None;
        }
        meta.modified().ok()
    }

    /// Renames `id` from one queue to another (not fsync'd: see the module's decisions).
    pub fn move_file(&self, id: QueueId, from: Queue, to: Queue) -> Result<(), SpoolError> {
        std::fs::rename(self.path(from, id), self.path(to, id)).map_err(|source| SpoolError::Move {
            id,
            from: from.name(),
            to: to.name(),
            source,
        })
    }

    /// Removes `id` from `queue`.
    pub fn remove(&self, queue: Queue, id: QueueId) -> Result<(), SpoolError> {
        std::fs::remove_file(self.path(queue, id)).map_err(|source| SpoolError::File {
            what: "remove",
            queue: queue.name(),
            id,
            source,
        })
    }

    /// Opens a queue file for reading and appending results, and separately read-only (the
    /// descriptor delivery agents and bounce get).
    pub fn open_file(&self, queue: Queue, id: QueueId) -> Result<(File, File), SpoolError> {
        let err = |what| {
            move |source| SpoolError::File {
                what,
                queue: queue.name(),
                id,
                source,
            }
        };
        let path = self.path(queue, id);
        let rw = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc_flags::NOFOLLOW)
            .open(&path)
            .map_err(err("open"))?;
        if !rw.metadata().map_err(err("examine"))?.is_file() {
            return Err(err("open")(io::Error::other("not a regular file")));
        }
        let ro = OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::NOFOLLOW)
            .open(&path)
            .map_err(err("open"))?;
        Ok((rw, ro))
    }

    /// Whether a file in `incoming/` is complete; with `sweep`, removes it if its writer died.
    pub fn examine_incoming(&self, id: QueueId, sweep: bool) -> Result<Incoming, SpoolError> {
        let err = |what| {
            move |source| SpoolError::File {
                what,
                queue: "incoming",
                id,
                source,
            }
        };
        let dir = self.dirs[Queue::Incoming.index()].as_fd();
        let dead = match daemon::spool::examine(dir, &id.to_string()).map_err(err("examine"))? {
            FileState::Complete => return Ok(Incoming::Complete),
            FileState::Writing => return Ok(Incoming::Writing),
            FileState::Gone | FileState::NotAFile => return Ok(Incoming::Gone),
            FileState::Dead(lock) => lock,
        };
        if !sweep {
            return Ok(Incoming::Dead);
        }
        std::fs::remove_file(self.path(Queue::Incoming, id)).map_err(err("remove"))?;
        drop(dead);
        Ok(Incoming::Removed)
    }

    /// Start-up recovery: `active/` goes back to `incoming/` (the previous qmgr's in-memory
    /// state is lost; the result logs keep what was done), and incomplete files of dead writers
    /// are removed from `incoming/`.
    pub fn recover(&self) -> Result<Recovery, SpoolError> {
        let mut r = Recovery::default();
        for id in self.list(Queue::Active)? {
            std::fs::rename(self.path(Queue::Active, id), self.path(Queue::Incoming, id)).map_err(
                |source| SpoolError::Move {
                    id,
                    from: "active",
                    to: "incoming",
                    source,
                },
            )?;
            r.returned += 1;
        }
        if r.returned > 0 {
            self.sync_dir(Queue::Incoming)?;
            self.sync_dir(Queue::Active)?;
        }
        for id in self.list(Queue::Incoming)? {
            match self.examine_incoming(id, true) {
                Ok(Incoming::Removed) => {
                    tracing::warn!(
                        queue_id = %id,
                        "removed incomplete queue file incoming/{id} of a dead writer"
                    );
                    r.removed += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(queue_id = %id, "{e}"),
            }
        }
        Ok(r)
    }
}

/// Sets a queue file's mtime (and atime) to its next retry time and makes it durable.
pub fn set_retry_time(file: &File, when: SystemTime) -> io::Result<()> {
    file.set_times(FileTimes::new().set_accessed(when).set_modified(when))?;
    file.sync_all()
}

/// Whether a delay warning was sent for this file.
pub fn warned(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.permissions().mode() & WARNED_BIT != 0)
}

/// Marks a file as warned (see the module header).
pub fn mark_warned(file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    file.set_permissions(std::fs::Permissions::from_mode(mode | WARNED_BIT))?;
    file.sync_all()
}

/// Open flags std does not name.
mod libc_flags {
    pub const NOFOLLOW: i32 = nix::libc::O_NOFOLLOW;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use nix::fcntl::{Flock, FlockArg};

    pub struct TempSpool {
        pub root: PathBuf,
    }

    impl TempSpool {
        pub fn new(name: &str) -> TempSpool {
            let root = std::env::temp_dir().join(format!(
                "qmgr-spool-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&root);
            for q in Queue::ALL {
                std::fs::create_dir_all(root.join(q.name())).unwrap();
            }
            TempSpool { root }
        }
    }

    impl Drop for TempSpool {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn id(n: u32) -> QueueId {
        QueueId::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            n,
        )
        .unwrap()
    }

    fn put(root: &Path, q: Queue, id: QueueId, mode: u32) -> File {
        let path = root.join(q.name()).join(id.to_string());
        let mut f = File::create(&path).unwrap();
        f.write_all(b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn moves_are_renames_and_listing_skips_foreign_names() {
        let t = TempSpool::new("move");
        let spool = Spool::open(&t.root).unwrap();
        put(&t.root, Queue::Incoming, id(2), 0o700);
        put(&t.root, Queue::Incoming, id(1), 0o700);
        std::fs::write(t.root.join("incoming/not-an-id"), b"").unwrap();
        assert_eq!(spool.list(Queue::Incoming).unwrap(), vec![id(1), id(2)]);
        spool
            .move_file(id(1), Queue::Incoming, Queue::Active)
            .unwrap();
        assert_eq!(spool.list(Queue::Active).unwrap(), vec![id(1)]);
        assert!(matches!(
            spool.move_file(id(9), Queue::Incoming, Queue::Active),
            Err(SpoolError::Move { .. })
        ));
        spool.remove(Queue::Active, id(1)).unwrap();
        assert!(spool.list(Queue::Active).unwrap().is_empty());
    }

    #[test]
    fn the_retry_time_is_the_mtime_and_the_warning_a_mode_bit() {
        let t = TempSpool::new("retry");
        let spool = Spool::open(&t.root).unwrap();
        put(&t.root, Queue::Active, id(1), 0o700);
        let (rw, _ro) = spool.open_file(Queue::Active, id(1)).unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        set_retry_time(&rw, when).unwrap();
        spool
            .move_file(id(1), Queue::Active, Queue::Deferred)
            .unwrap();
        assert_eq!(spool.mtime(Queue::Deferred, id(1)), Some(when));
        assert!(!warned(&rw).unwrap());
        mark_warned(&rw).unwrap();
        assert!(warned(&rw).unwrap());
        let mode = std::fs::metadata(spool.path(Queue::Deferred, id(1)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o710, "still complete, now warned");
    }

    #[test]
    fn recovery_returns_active_files_and_removes_dead_writers_only() {
        let t = TempSpool::new("recover");
        let spool = Spool::open(&t.root).unwrap();
        put(&t.root, Queue::Active, id(1), 0o700);
        put(&t.root, Queue::Incoming, id(2), 0o700);
        // A dead writer's file: incomplete, unlocked.
        drop(put(&t.root, Queue::Incoming, id(3), 0o600));
        // A live writer's file: incomplete, locked by a descriptor held here.
        let live = put(&t.root, Queue::Incoming, id(4), 0o600);
        let _lock = Flock::lock(live, FlockArg::LockExclusive).unwrap();
        let r = spool.recover().unwrap();
        assert_eq!(
            r,
            Recovery {
                returned: 1,
                removed: 1
            }
        );
        assert_eq!(
            spool.list(Queue::Incoming).unwrap(),
            vec![id(1), id(2), id(4)]
        );
        assert!(spool.list(Queue::Active).unwrap().is_empty());
        assert_eq!(
            spool.examine_incoming(id(4), true).unwrap(),
            Incoming::Writing
        );
        assert_eq!(
            spool.examine_incoming(id(2), true).unwrap(),
            Incoming::Complete
        );
        assert_eq!(spool.examine_incoming(id(3), true).unwrap(), Incoming::Gone);
    }
}
