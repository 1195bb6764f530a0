//! The `incoming/` queue directory as cleanup uses it: create a queue file under its final name,
//! hold its lock while writing, mark it complete and make it durable, or remove it; and at
//! start-up, sweep away the files of writers that died.
//!
//! Trusts: the directory (the master made it, owned by the queue user, mode 0700) and the kernel.
//! Does not trust the names or files found in it during the sweep: a name that is not a queue id
//! is left alone, a file is opened without following symbolic links and never read.
//!
//! The completeness rules (shared with qmgr): a file is created `O_EXCL` with mode 0600 and
//! stays locked (`flock(LOCK_EX)`) by its writer; the owner-execute bit (mode 0700), set after
//! the end marker, marks it complete, as in Postfix. A file without that bit whose lock can be
//! taken has a dead writer. A sweeper may take the lock between a writer's `open` and its
//! `flock`, so the writer checks after locking that the file still has a name (`st_nlink > 0`)
//! and otherwise starts again under a new id.
//!
//! The spare ([`Spool::create_spare`]): a file created, locked and then named durably (the
//! directory fsync'd) before any message needs it, so that a message written into it needs only
//! the file's own fsync before it is acknowledged. Until a message is written into it, a spare
//! is an empty incomplete file like any other being written: locked while its cleanup lives,
//! swept once it is dead, never listed or delivered. [`Spool::commit`] fsyncs the directory only
//! for a file whose name is not yet durable (one made without a spare).
//!
//! Queue ids are the creation times of their files (with the writer's pid and counter). A file
//! made as a spare gets its message later, so its id may precede the message's arrival (the
//! envelope's arrival time) by as long as the cleanup was idle; ids stay unique and sort by
//! creation, not by arrival.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use daemon::spool::FileState;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use protocol::QueueId;

/// Mode of a queue file being written.
pub const MODE_WRITING: u32 = 0o600;
/// Mode of a complete queue file: the owner-execute bit is the completeness mark.
pub const MODE_COMPLETE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot open the queue directory {path}: {source}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create queue file {id}: {source}")]
    Create {
        id: QueueId,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock queue file {id}: {source}")]
    Lock {
        id: QueueId,
        #[source]
        source: io::Error,
    },
    #[error("queue file {id} was removed by a sweep before it was locked")]
    Swept { id: QueueId },
    #[error("cannot {what} queue file {id}: {source}")]
    Commit {
        what: &'static str,
        id: QueueId,
        #[source]
        source: io::Error,
    },
    #[error("cannot fsync the queue directory {path}: {source}")]
    SyncDir {
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
}

impl SpoolError {
    /// Whether trying again under another queue id may succeed.
    pub fn retry_with_new_id(&self) -> bool {
        match self {
            SpoolError::Create { source, .. } => source.kind() == io::ErrorKind::AlreadyExists,
            SpoolError::Swept { .. } => true,
            _ => false,
        }
    }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The `incoming/` directory, held open for creating files relative to it and for fsyncing it.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    dir: File,
}

/// A queue file being written: locked, mode 0600. Clones share the descriptor and its lock,
/// which is released when the last clone is dropped, so the file stays locked while the
/// `QueueFileWriter` owns one clone and the message state another.
#[derive(Debug, Clone)]
pub struct NewFile {
    id: QueueId,
    file: Rc<Flock<File>>,
    /// Whether its directory entry is already durable (a spare): then a commit needs only the
    /// file's fsync.
    name_durable: bool,
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&**self.file).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&**self.file).flush()
    }
}

impl NewFile {
    pub fn id(&self) -> QueueId {
        self.id
    }
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Incomplete files of dead writers, removed.
    pub removed: Vec<String>,
    /// Incomplete files whose writer still holds the lock.
    pub in_progress: usize,
    /// Complete files (the queue manager's).
    pub complete: usize,
    /// Names that are not queue ids, and files that could not be examined.
    pub ignored: usize,
}

impl Spool {
    /// Opens `path` (the `incoming/` directory).
    pub fn open(path: &Path) -> Result<Spool, SpoolError> {
        let dir = File::open(path).map_err(|source| SpoolError::OpenDir {
            path: path.to_owned(),
            source,
        })?;
        Ok(Spool {
            path: path.to_owned(),
            dir,
        })
    }

    /// Creates and locks the queue file `id`.
    pub fn create(&self, id: QueueId) -> Result<NewFile, SpoolError> {
        let name = id.to_string();
        let fd: OwnedFd = nix::fcntl::openat(
            self.dir.as_fd(),
            name.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(MODE_WRITING),
        )
        .map_err(|e| SpoolError::Create {
            id,
            source: errno(e),
        })?;
        let file = match Flock::lock(File::from(fd), FlockArg::LockExclusive) {
            Ok(file) => file,
            Err((_, e)) => {
                self.remove(&name);
                return Err(SpoolError::Lock {
                    id,
                    source: errno(e),
                });
            }
        };
        let linked = file
            .metadata()
            .map_err(|source| SpoolError::Lock { id, source })?
            .nlink();
        if linked == 0 {
            return Err(SpoolError::Swept { id });
        }
        Ok(NewFile {
            id,
            file: Rc::new(file),
            name_durable: false,
        })
    }

    /// Creates and locks the queue file `id` as a spare: empty, mode 0600, its name made durable
    /// now (the directory fsync'd), so that committing it later needs only the file's fsync. On
    /// failure nothing is left.
    pub fn create_spare(&self, id: QueueId) -> Result<NewFile, SpoolError> {
        let mut file = self.create(id)?;
        if let Err(e) = self.sync_dir() {
            self.discard(file);
            return Err(e);
        }
        file.name_durable = true;
        Ok(file)
    }

    fn sync_dir(&self) -> Result<(), SpoolError> {
        self.dir.sync_all().map_err(|source| SpoolError::SyncDir {
            path: self.path.clone(),
            source,
        })
    }

    /// Marks `file` (its end marker written) complete and makes it and its name durable: the
    /// file's fsync, then the directory's unless the name already is (a spare).
    pub fn commit(&self, file: NewFile) -> Result<QueueId, SpoolError> {
        let id = file.id;
        let fail = |what| move |source| SpoolError::Commit { what, id, source };
        file.file
            .set_permissions(Permissions::from_mode(MODE_COMPLETE))
            .map_err(fail("mark complete"))?;
        file.file.sync_all().map_err(fail("fsync"))?;
        if !file.name_durable {
            self.sync_dir()?;
        }
        Ok(id)
    }

    /// Removes a file that will not be committed (its lock is released after the name is gone,
    /// when the last clone is dropped).
    pub fn discard(&self, file: NewFile) {
        self.remove(&file.id.to_string());
        drop(file);
    }

    fn remove(&self, name: &str) {
        if let Err(e) = nix::unistd::unlinkat(self.dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            tracing::error!(
                queue_id = name,
                "cannot remove queue file {}/{name}: {}",
                self.path.display(),
                errno(e)
            );
        }
    }

    /// Removes the incomplete files whose writer is gone.
    pub fn sweep(&self) -> Result<Sweep, SpoolError> {
        let list = |source| SpoolError::List {
            path: self.path.clone(),
            source,
        };
        let mut sweep = Sweep::default();
        for entry in std::fs::read_dir(&self.path).map_err(list)? {
            let entry = entry.map_err(list)?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| QueueId::parse(n).is_ok()) else {
                sweep.ignored += 1;
                continue;
            };
            match self.examine(name) {
                Ok(Examined::Removed) => sweep.removed.push(name.to_owned()),
                Ok(Examined::Locked) => sweep.in_progress += 1,
                Ok(Examined::Complete) => sweep.complete += 1,
                Ok(Examined::Gone) => {}
                Err(e) => {
                    tracing::warn!(
                        queue_id = name,
                        "cannot examine queue file {}/{name}: {e}",
                        self.path.display()
                    );
                    sweep.ignored += 1;
                }
            }
        }
        Ok(sweep)
    }

    fn examine(&self, name: &str) -> io::Result<Examined> {
        let dead = match daemon::spool::examine(self.dir.as_fd(), name)? {
            FileState::Complete => return Ok(Examined::Complete),
            FileState::Writing => return Ok(Examined::Locked),
            // Moved away by qmgr, or removed by its writer, since the listing.
            FileState::Gone => return Ok(Examined::Gone),
            FileState::NotAFile => return Err(io::Error::other("not a regular file")),
            FileState::Dead(lock) => lock,
        };
        nix::unistd::unlinkat(self.dir.as_fd(), name, UnlinkatFlags::NoRemoveDir).map_err(errno)?;
        drop(dead);
        tracing::warn!(
            queue_id = name,
            "removed incomplete queue file {}/{name} of a dead writer",
            self.path.display()
        );
        Ok(Examined::Removed)
    }
}

enum Examined {
    Removed,
    Locked,
    Complete,
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "postern-cleanup-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn id(seq: u32) -> QueueId {
        QueueId::new(SystemTime::now(), seq).unwrap()
    }

    #[test]
    fn create_is_exclusive_and_commit_sets_the_complete_bit() {
        let dir = temp_dir("create");
        let spool = Spool::open(&dir).unwrap();
        let first = id(1);
        let mut file = spool.create(first).unwrap();
        assert!(spool.create(first).unwrap_err().retry_with_new_id());
        file.write_all(b"x").unwrap();
        let path = dir.join(first.to_string());
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            MODE_WRITING
        );
        assert_eq!(spool.commit(file).unwrap(), first);
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            MODE_COMPLETE
        );
        let other = spool.create(id(2)).unwrap();
        let other_path = dir.join(other.id().to_string());
        spool.discard(other);
        assert!(!other_path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sweep_removes_only_incomplete_unlocked_files() {
        let dir = temp_dir("sweep");
        let spool = Spool::open(&dir).unwrap();
        // A dead writer's file: incomplete, nobody holds its lock.
        let dead = spool.create(id(10)).unwrap();
        let dead_name = dead.id().to_string();
        drop(dead);
        // A live writer's file: incomplete, locked (by this process, through another open
        // file description, which flock treats as another holder).
        let live = spool.create(id(11)).unwrap();
        let live_name = live.id().to_string();
        // A complete file.
        let done = spool.create(id(12)).unwrap();
        let done_name = done.id().to_string();
        spool.commit(done).unwrap();
        // Not a queue file name: left alone whatever it is.
        std::fs::write(dir.join("README"), "x").unwrap();

        let sweep = spool.sweep().unwrap();
        assert_eq!(sweep.removed, vec![dead_name.clone()]);
        assert_eq!(
            (sweep.in_progress, sweep.complete, sweep.ignored),
            (1, 1, 1)
        );
        assert!(!dir.join(&dead_name).exists());
        assert!(dir.join(&live_name).exists());
        assert!(dir.join(&done_name).exists());
        assert!(dir.join("README").exists());
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spare_is_a_live_writers_file_until_its_writer_dies() {
        let dir = temp_dir("spare");
        let spool = Spool::open(&dir).unwrap();
        let sweeper = Spool::open(&dir).unwrap();
        let spare = spool.create_spare(id(30)).unwrap();
        let name = spare.id().to_string();
        let meta = std::fs::metadata(dir.join(&name)).unwrap();
        assert_eq!((meta.len(), meta.mode() & 0o777), (0, MODE_WRITING));
        assert_eq!(sweeper.sweep().unwrap().in_progress, 1);
        // Its writer gone (the lock released with the last descriptor), the sweep removes it.
        drop(spare);
        assert_eq!(sweeper.sweep().unwrap().removed, vec![name]);
        // Committed, a spare is complete like any other file.
        let mut spare = spool.create_spare(id(31)).unwrap();
        spare.write_all(b"x").unwrap();
        let done = spool.commit(spare).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join(done.to_string()))
                .unwrap()
                .mode()
                & 0o777,
            MODE_COMPLETE
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_locked_file_is_kept_until_its_lock_is_released() {
        let dir = temp_dir("race");
        let spool = Spool::open(&dir).unwrap();
        let sweeper = Spool::open(&dir).unwrap();
        // A file created but not yet locked by `create` (the window a writer's nlink check
        // covers) is removed once nobody holds its lock.
        let name = id(20).to_string();
        let fd = nix::fcntl::openat(
            spool.dir.as_fd(),
            name.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
            Mode::from_bits_truncate(MODE_WRITING),
        )
        .unwrap();
        let held = Flock::lock(File::from(fd), FlockArg::LockExclusive).unwrap();
        assert_eq!(sweeper.sweep().unwrap().in_progress, 1);
        drop(held);
        let sweep = sweeper.sweep().unwrap();
        assert_eq!(sweep.removed, vec![name]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
