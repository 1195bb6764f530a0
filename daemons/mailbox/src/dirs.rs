//! The directories on the way to a mailbox: below a base the caller trusts (a user's home,
//! `virtual_mailbox_base`), each directory must be a real directory — not a symbolic link —
//! owned by the mailbox's owner; a missing one is created mode 0700. So a Maildir cannot be
//! redirected into someone else's tree by a planted link.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Why a directory on the way is not used.
#[derive(Debug, thiserror::Error)]
pub enum DirRefusal {
    #[error("{0} is a symbolic link")]
    Symlink(String),
    #[error("{0} is not a directory")]
    NotDirectory(String),
    #[error(
        "directory {path} is not owned by the recipient (owner uid {found}, recipient uid {want})"
    )]
    Owner { path: String, found: u32, want: u32 },
    #[error("{0} is not a path below the mailbox base")]
    NotRelative(String),
    #[error("cannot create directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl DirRefusal {
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            DirRefusal::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn check(path: &Path, meta: &std::fs::Metadata, owner: u32) -> Result<(), DirRefusal> {
    if meta.file_type().is_symlink() {
        return Err(DirRefusal::Symlink(path.display().to_string()));
    }
    if !meta.is_dir() {
        return Err(DirRefusal::NotDirectory(path.display().to_string()));
    }
    if meta.uid() != owner {
        return Err(DirRefusal::Owner {
            path: path.display().to_string(),
            found: meta.uid(),
            want: owner,
        });
    }
    Ok(())
}

/// Makes sure every directory of `relative` below `base` exists, is a directory and is
/// `owner`'s, creating missing ones (mode 0700). Returns the full path.
pub fn ensure(base: &Path, relative: &Path, owner: u32) -> Result<PathBuf, DirRefusal> {
    let mut path = base.to_path_buf();
    for component in relative.components() {
        let Component::Normal(part) = component else {
            return Err(DirRefusal::NotRelative(relative.display().to_string()));
        };
        path.push(part);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(source) => {
                        return Err(DirRefusal::Io {
                            path: path.display().to_string(),
                            source,
                        })
                    }
                }
                std::fs::symlink_metadata(&path).map_err(|source| DirRefusal::Io {
                    path: path.display().to_string(),
                    source,
                })?
            }
            Err(source) => {
                return Err(DirRefusal::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        check(&path, &meta, owner)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::me;

    #[test]
    fn missing_directories_are_made_0700_and_links_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let made = ensure(base.path(), Path::new("a/b"), me()).unwrap();
        assert_eq!(made, base.path().join("a/b"));
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o7777, 0o700);
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), base.path().join("a/link")).unwrap();
        let e = ensure(base.path(), Path::new("a/link/new"), me()).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(!elsewhere.path().join("new").exists());
        std::fs::write(base.path().join("file"), "").unwrap();
        let e = ensure(base.path(), Path::new("file/x"), me()).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let e = ensure(base.path(), Path::new("a"), me() + 1).unwrap_err();
        assert!(e.to_string().contains("not owned by the recipient"), "{e}");
        let e = ensure(base.path(), Path::new("../x"), me()).unwrap_err();
        assert!(matches!(e, DirRefusal::NotRelative(_)), "{e}");
    }
}
