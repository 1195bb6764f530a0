//! The master's pid file, `$queue_directory/pid/master.pid`: it holds the master's pid and is
//! `flock`ed exclusively for the master's whole life, so "is a master running?" is answered by the
//! lock, never by guessing from a pid that may have been reused.
//!
//! Trusts: the file's content only for messages (the pid of the running master it names); the
//! lock is the truth.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Longest pid file content read back for a message; a pid has at most 7 digits on Linux.
const MAX_PID_TEXT: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("the mail system is already running: PID: {pid}")]
    Running { pid: String },
    #[error("cannot create directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot open pid file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot lock pid file {path}: {source}")]
    Lock { path: PathBuf, source: Errno },
    #[error("cannot write pid file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The locked pid file; dropping it releases the lock (the file stays; [`PidFile::remove`] at a
/// clean stop unlinks it first).
pub struct PidFile {
    path: PathBuf,
    file: Flock<File>,
}

/// The pid directory under the queue directory.
pub fn pid_dir(queue_directory: &Path) -> PathBuf {
    queue_directory.join("pid")
}

impl PidFile {
    /// Takes the lock and writes `pid`. Returns the stale pid the file held, if any, for the log.
    pub fn acquire(
        queue_directory: &Path,
        pid: u32,
    ) -> Result<(PidFile, Option<String>), PidFileError> {
        let dir = pid_dir(queue_directory);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|source| PidFileError::Dir {
                path: dir.clone(),
                source,
            })?;
        let path = dir.join("master.pid");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|source| PidFileError::Open {
                path: path.clone(),
                source,
            })?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(PidFileError::Running {
                    pid: read_pid(&mut file).unwrap_or_else(|| "unknown".to_owned()),
                })
            }
            Err((_, source)) => return Err(PidFileError::Lock { path, source }),
        };
        let stale = read_pid(&mut file);
        let write = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{pid}")?;
            f.sync_all()
        };
        write(&mut file).map_err(|source| PidFileError::Write {
            path: path.clone(),
            source,
        })?;
        Ok((PidFile { path, file }, stale))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unlinks the file while still holding the lock (so no second master can have taken it).
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// The pid a pid file names, if it holds one.
pub fn read_pid(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(MAX_PID_TEXT).read_to_string(&mut text).ok()?;
    let pid = text.trim();
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("postern-pid-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn second_acquire_refuses_with_the_running_pid() {
        let q = temp("second");
        let (first, stale) = PidFile::acquire(&q, 4242).unwrap();
        assert_eq!(stale, None);
        let err = PidFile::acquire(&q, 5555).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the mail system is already running: PID: 4242"
        );
        first.remove();
        assert!(!q.join("pid/master.pid").exists());
        fs::remove_dir_all(&q).unwrap();
    }

    #[test]
    fn stale_file_is_detected_and_replaced() {
        let q = temp("stale");
        fs::create_dir_all(q.join("pid")).unwrap();
        fs::write(q.join("pid/master.pid"), "999999\n").unwrap();
        let (pf, stale) = PidFile::acquire(&q, 77).unwrap();
        assert_eq!(stale.as_deref(), Some("999999"));
        assert_eq!(fs::read_to_string(pf.path()).unwrap(), "77\n");
        drop(pf);
        fs::remove_dir_all(&q).unwrap();
    }
}
