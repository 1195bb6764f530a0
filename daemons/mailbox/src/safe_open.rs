//! Opening a mailbox file the way Postfix's `safe_open` does, so that a file another user
//! planted is never written: a user who can create `mailspool/alice` before alice's first
//! message (or a hard link or symlink to a file of their choice) must not receive alice's
//! mail.
//!
//! An existing file: `lstat` first (a symbolic link or anything but a regular file is
//! refused without opening it), then `open` with `O_NOFOLLOW|O_NONBLOCK` (a FIFO swapped in
//! after the `lstat` cannot block the open), then `fstat` of what was opened: a regular
//! file, exactly one link, the same device and inode as the `lstat` saw (not replaced in
//! between), and owned by the expected owner when there is one. A missing file is created
//! with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, and checked the same way.
//!
//! `O_NONBLOCK` stays set on the returned descriptor: on a regular file it changes nothing.
//! A refusal is a [`Refusal`], which the callers defer `4.2.0` and log as a warning.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why an existing or new file is not written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{what} {path} is a symbolic link")]
    Symlink { what: &'static str, path: String },
    #[error("{what} {path} is not a regular file")]
    NotRegular { what: &'static str, path: String },
    #[error("{what} {path} has {links} links")]
    Links {
        what: &'static str,
        path: String,
        links: u64,
    },
    #[error(
        "{what} {path} is not owned by the recipient (owner uid {found}, recipient uid {want})"
    )]
    Owner {
        what: &'static str,
        path: String,
        found: u32,
        want: u32,
    },
    #[error("{what} {path} was replaced while it was opened")]
    Replaced { what: &'static str, path: String },
    /// The system said no: the caller maps the errno to a status.
    #[error("cannot open {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl Refusal {
    /// The errno behind an [`Refusal::Io`].
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Refusal::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A file opened for appending, with what was learnt on the way.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    /// Whether this call created the file.
    pub created: bool,
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Checks an opened file against the `lstat` taken before the open (`None` for a file this
/// call created).
fn check_opened(
    file: &File,
    before: Option<&std::fs::Metadata>,
    owner: Option<u32>,
    what: &'static str,
    path: &Path,
) -> Result<(), Refusal> {
    let st = file.metadata().map_err(|source| Refusal::Io {
        what,
        path: shown(path),
        source,
    })?;
    if !st.file_type().is_file() {
        return Err(Refusal::NotRegular {
            what,
            path: shown(path),
        });
    }
    if st.nlink() != 1 {
        return Err(Refusal::Links {
            what,
            path: shown(path),
            links: st.nlink(),
        });
    }
    if let Some(before) = before {
        if (before.dev(), before.ino()) != (st.dev(), st.ino()) {
            return Err(Refusal::Replaced {
                what,
                path: shown(path),
            });
        }
    }
    if let Some(want) = owner {
        if st.uid() != want {
            return Err(Refusal::Owner {
                what,
                path: shown(path),
                found: st.uid(),
                want,
            });
        }
    }
    Ok(())
}

fn open_flags(options: &mut OpenOptions) -> &mut OpenOptions {
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
}

/// Opens `path` for appending: an existing file only if it passes every check, a missing one
/// created mode 0600 when `create` is set. `owner` is the uid the file must belong to
/// (`None`: any owner, as for a file destination of an alias). `what` names the file in
/// messages ("mailbox", "file").
pub fn open_append(
    path: &Path,
    owner: Option<u32>,
    create: bool,
    what: &'static str,
) -> Result<Opened, Refusal> {
    // Two rounds: a file created by someone else between our lstat and our O_EXCL create
    // is examined as an existing file.
    for _ in 0..2 {
        match std::fs::symlink_metadata(path) {
            Ok(before) => {
                if before.file_type().is_symlink() {
                    return Err(Refusal::Symlink {
                        what,
                        path: shown(path),
                    });
                }
                if !before.file_type().is_file() {
                    return Err(Refusal::NotRegular {
                        what,
                        path: shown(path),
                    });
                }
                let file = open_flags(OpenOptions::new().append(true))
                    .open(path)
                    .map_err(|source| Refusal::Io {
                        what,
                        path: shown(path),
                        source,
                    })?;
                check_opened(&file, Some(&before), owner, what, path)?;
                return Ok(Opened {
                    file,
                    created: false,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match open_flags(OpenOptions::new().append(true).create_new(true).mode(0o600))
                    .open(path)
                {
                    Ok(file) => {
                        check_opened(&file, None, owner, what, path)?;
                        return Ok(Opened {
                            file,
                            created: true,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(source) => {
                        return Err(Refusal::Io {
                            what,
                            path: shown(path),
                            source,
                        })
                    }
                }
            }
            Err(source) => {
                return Err(Refusal::Io {
                    what,
                    path: shown(path),
                    source,
                })
            }
        }
    }
    Err(Refusal::Replaced {
        what,
        path: shown(path),
    })
}

/// The privileged side of a spool mailbox: makes `path` when it is missing — created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` mode 0600 in a directory no user can write, then `fchown`ed
/// to the recipient before anything is written. An existing file is left alone (the
/// delivery child examines it as the recipient). Returns whether it created the file.
pub fn create_for(path: &Path, uid: u32, gid: u32) -> Result<bool, Refusal> {
    match open_flags(OpenOptions::new().write(true).create_new(true).mode(0o600)).open(path) {
        Ok(file) => {
            let io = |source| Refusal::Io {
                what: "mailbox",
                path: shown(path),
                source,
            };
            // Also when running unprivileged, where uid and gid are the process's own.
            nix::unistd::fchown(
                &file,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(|e| io(io::Error::from(e)))?;
            check_opened(&file, None, Some(uid), "mailbox", path)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Refusal::Io {
            what: "mailbox",
            path: shown(path),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::me;

    #[test]
    fn a_missing_file_is_created_0600_and_an_existing_own_file_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        let o = open_append(&path, Some(me()), true, "mailbox").unwrap();
        assert!(o.created);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let o = open_append(&path, Some(me()), true, "mailbox").unwrap();
        assert!(!o.created);
        let e = open_append(&dir.path().join("v"), Some(me()), false, "mailbox").unwrap_err();
        assert_eq!(
            e.io_error().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn symlinks_hard_links_fifos_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("sym")).unwrap();
        std::fs::hard_link(&target, dir.path().join("hard")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        for (name, want) in [
            ("sym", "is a symbolic link"),
            ("hard", "has 2 links"),
            ("fifo", "is not a regular file"),
            ("dir", "is not a regular file"),
        ] {
            let e = open_append(&dir.path().join(name), Some(me()), true, "mailbox").unwrap_err();
            assert!(e.to_string().contains(want), "{name}: {e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn a_file_of_another_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        std::fs::write(&path, "").unwrap();
        let e = open_append(&path, Some(me() + 1), true, "mailbox").unwrap_err();
        assert!(
            e.to_string().contains("is not owned by the recipient"),
            "{e}"
        );
        // No owner to check (a file destination): accepted.
        open_append(&path, None, true, "file").unwrap();
    }

    #[test]
    fn create_for_makes_a_missing_mailbox_and_leaves_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u");
        let gid = nix::unistd::getegid().as_raw();
        assert!(create_for(&path, me(), gid).unwrap());
        assert!(!create_for(&path, me(), gid).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }
}
