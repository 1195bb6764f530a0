//! The completeness rule of a queue file in `incoming/`, shared by its writer's sweep (cleanup)
//! and the queue manager: a file with the owner-execute bit ([`COMPLETE_BIT`]) is complete; an
//! incomplete file whose `flock` a live writer holds is being written; an incomplete file whose
//! lock can be taken belongs to a dead writer.
//!
//! Trusts: the file system's metadata and locks, nothing in the file (its content is `protocol`'s
//! to read).

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

/// The owner-execute bit: set by cleanup once the end marker is written, as Postfix marks a
/// complete queue file.
pub const COMPLETE_BIT: u32 = 0o100;

/// What a queue file in `incoming/` is.
#[derive(Debug)]
pub enum FileState {
    /// Complete: may be delivered.
    Complete,
    /// Incomplete and locked: its writer is alive.
    Writing,
    /// Incomplete and unlocked: its writer died. The lock is held until this is dropped, so the
    /// caller may remove the file under it.
    Dead(Flock<File>),
    /// Gone since it was listed (moved or removed).
    Gone,
    /// Not a regular file.
    NotAFile,
}

/// Examines `name` in the directory `dir` without blocking: the mode first (a complete file needs
/// no lock), then a non-blocking exclusive `flock`, then the mode again under the lock (a writer
/// marks its file complete before it lets go) and the link count (a file removed meanwhile).
pub fn examine(dir: BorrowedFd<'_>, name: &str) -> io::Result<FileState> {
    let fd = match nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(FileState::Gone),
        Err(e) => return Err(io::Error::from(e)),
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(FileState::NotAFile);
    }
    if meta.permissions().mode() & COMPLETE_BIT != 0 {
        return Ok(FileState::Complete);
    }
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(file) => file,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(FileState::Writing),
        Err((_, e)) => return Err(io::Error::from(e)),
    };
    let meta = file.metadata()?;
    if meta.permissions().mode() & COMPLETE_BIT != 0 {
        return Ok(FileState::Complete);
    }
    if meta.nlink() == 0 {
        return Ok(FileState::Gone);
    }
    Ok(FileState::Dead(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsFd;

    #[test]
    fn each_state_of_an_incoming_file() {
        let dir = std::env::temp_dir().join(format!("postern-spool-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let handle = File::open(&dir).unwrap();
        let at = handle.as_fd();

        fs::write(dir.join("complete"), b"x").unwrap();
        fs::set_permissions(dir.join("complete"), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            examine(at, "complete").unwrap(),
            FileState::Complete
        ));

        fs::write(dir.join("dead"), b"x").unwrap();
        fs::set_permissions(dir.join("dead"), fs::Permissions::from_mode(0o600)).unwrap();
        let dead = examine(at, "dead").unwrap();
        assert!(matches!(dead, FileState::Dead(_)));
        // While one examiner holds the dead writer's lock, another sees a writer at work.
        assert!(matches!(examine(at, "dead").unwrap(), FileState::Writing));
        drop(dead);

        let writer = Flock::lock(
            File::open(dir.join("dead")).unwrap(),
            FlockArg::LockExclusive,
        )
        .unwrap();
        assert!(matches!(examine(at, "dead").unwrap(), FileState::Writing));
        drop(writer);

        assert!(matches!(examine(at, "missing").unwrap(), FileState::Gone));
        fs::create_dir(dir.join("sub")).unwrap();
        assert!(matches!(examine(at, "sub").unwrap(), FileState::NotAFile));
        fs::remove_dir_all(&dir).unwrap();
    }
}
