//! The directories an instance needs (spool, mailboxes, logs), created with owners and modes that
//! let each daemon's uid do its job and nothing more — what `postfix check` does for Postfix.
//!
//! Trusts the administrator's main.cf for *where* the directories are. Does not trust what already
//! exists there: an existing path must be a real directory (not a symlink), and as root an existing
//! directory owned by anyone other than root or its intended owner is refused, and so is an existing
//! ancestor that another user could change (owned by someone other than root, or writable by group
//! or others without the sticky bit), so that a directory pre-created by another user under a
//! shared location such as `/tmp` cannot make root chown or write somewhere it should not.
//! Existing directories are never re-owned or re-moded, only reported.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The queue's subdirectories, as ARCHITECTURE.md lists them, plus `pid` for the master's pid and
/// status files.
pub const QUEUE_SUBDIRS: [&str; 6] = [
    "incoming", "active", "deferred", "hold", "corrupt", "maildrop",
];

/// Holds `master.pid` and `master.status`.
pub const PID_SUBDIR: &str = "pid";

/// Mode of directories only root (the master) writes and everyone may traverse.
const MODE_ROOT_SHARED: u32 = 0o755;
/// Mode of directories private to one daemon uid.
const MODE_PRIVATE: u32 = 0o700;
/// Mode of `maildrop/`: its owner (pickup) reads and removes, its group may only create (the
/// set-gid `postdrop`), as Postfix's `maildrop` (Postfix adds the sticky bit; without a set-gid
/// program installed yet nothing but the owner writes here).
const MODE_MAILDROP: u32 = 0o730;
/// Mode of `mail_spool_directory` as root: root's, writable by no one else. `local`'s privileged
/// side makes a missing mailbox (0600, handed to the recipient) and its dot-lock there, so no user
/// can create a file in the spool before its owner's first message. (Debian's `/var/mail` is
/// 2775 root:mail for set-gid mail readers' dot-locks; Postern's readers lock with `fcntl`.)
const MODE_MAIL_SPOOL_SHARED: u32 = 0o755;
/// Mode used for missing ancestors (e.g. `/tmp/postern-dev`): traversable by the daemon uids.
const MODE_ANCESTOR: u32 = 0o755;

/// A numeric owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// One directory of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    pub path: PathBuf,
    /// Applied only when running as root; otherwise the directory belongs to the invoking user.
    pub owner: Owner,
    pub mode: u32,
}

/// The inputs of the layout, taken from main.cf.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub queue_directory: PathBuf,
    pub virtual_mailbox_base: Option<PathBuf>,
    pub mail_spool_directory: Option<PathBuf>,
    pub maillog_file: Option<PathBuf>,
    /// Owner of the queue subdirectories (the queue daemons' identity).
    pub queue_owner: Owner,
    /// Owner of the virtual mailbox base (the virtual delivery agent's identity).
    pub vmail_owner: Owner,
    /// Root gives directories their owners; anyone else owns what it creates.
    pub as_root: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: exists but is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path}: is a symbolic link; refusing to use it as a spool or mail directory")]
    Symlink { path: PathBuf },
    #[error("{path}: owned by uid {found}, expected root or uid {expected}; refusing to use it")]
    ForeignOwner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error(
        "{path}: {why}; another user could redirect what root creates below it, refusing to use it"
    )]
    UntrustedAncestor { path: PathBuf, why: String },
    #[error("{path}: must be an absolute path")]
    Relative { path: PathBuf },
}

/// The directories of an instance, parents before children.
pub fn plan(inputs: &Inputs) -> Vec<DirSpec> {
    let q = &inputs.queue_directory;
    let mut specs = vec![
        DirSpec {
            path: q.clone(),
            owner: Owner::ROOT,
            mode: MODE_ROOT_SHARED,
        },
        DirSpec {
            path: q.join(PID_SUBDIR),
            owner: Owner::ROOT,
            mode: MODE_ROOT_SHARED,
        },
    ];
    for sub in QUEUE_SUBDIRS {
        let mode = if sub == "maildrop" {
            MODE_MAILDROP
        } else {
            MODE_PRIVATE
        };
        specs.push(DirSpec {
            path: q.join(sub),
            owner: inputs.queue_owner,
            mode,
        });
    }
    if let Some(base) = &inputs.virtual_mailbox_base {
        specs.push(DirSpec {
            path: base.clone(),
            owner: inputs.vmail_owner,
            mode: MODE_PRIVATE,
        });
    }
    if let Some(dir) = &inputs.mail_spool_directory {
        let mode = if inputs.as_root {
            MODE_MAIL_SPOOL_SHARED
        } else {
            MODE_PRIVATE
        };
        specs.push(DirSpec {
            path: dir.clone(),
            owner: Owner::ROOT,
            mode,
        });
    }
    if let Some(dir) = inputs.maillog_file.as_deref().and_then(Path::parent) {
        specs.push(DirSpec {
            path: dir.to_path_buf(),
            owner: Owner::ROOT,
            mode: MODE_ROOT_SHARED,
        });
    }
    specs
}

/// What [`ensure`] did, for the administrator.
#[derive(Debug, Default)]
pub struct Outcome {
    pub created: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// Creates every missing directory of `specs` (and missing ancestors), with its mode and, when
/// `as_root`, its owner. Existing directories are checked, not changed.
pub fn ensure(specs: &[DirSpec], as_root: bool) -> Result<Outcome, LayoutError> {
    let mut outcome = Outcome::default();
    for spec in specs {
        let path = &spec.path;
        if !path.is_absolute() {
            return Err(LayoutError::Relative { path: path.clone() });
        }
        if as_root {
            check_ancestors(path)?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) => check_existing(spec, &meta, as_root, &mut outcome)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    create_ancestors(parent, &mut outcome)?;
                }
                create(spec, as_root)?;
                outcome.created.push(path.clone());
            }
            Err(source) => {
                return Err(LayoutError::Io {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    Ok(outcome)
}

fn check_existing(
    spec: &DirSpec,
    meta: &fs::Metadata,
    as_root: bool,
    outcome: &mut Outcome,
) -> Result<(), LayoutError> {
    let path = &spec.path;
    if meta.file_type().is_symlink() {
        return Err(LayoutError::Symlink { path: path.clone() });
    }
    if !meta.is_dir() {
        return Err(LayoutError::NotADirectory { path: path.clone() });
    }
    if as_root {
        if meta.uid() != 0 && meta.uid() != spec.owner.uid {
            return Err(LayoutError::ForeignOwner {
                path: path.clone(),
                found: meta.uid(),
                expected: spec.owner.uid,
            });
        }
        if meta.uid() != spec.owner.uid || meta.gid() != spec.owner.gid {
            outcome.warnings.push(format!(
                "{}: owned by {}:{}, expected {}:{}",
                path.display(),
                meta.uid(),
                meta.gid(),
                spec.owner.uid,
                spec.owner.gid
            ));
        }
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        outcome.warnings.push(format!(
            "{}: is world-writable (mode {:04o}), expected {:04o}",
            path.display(),
            mode,
            spec.mode
        ));
    }
    Ok(())
}

/// As root: every existing ancestor of `path` must be one only root can change.
fn check_ancestors(path: &Path) -> Result<(), LayoutError> {
    for ancestor in path.ancestors().skip(1) {
        let meta = match fs::metadata(ancestor) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(LayoutError::Io {
                    path: ancestor.to_path_buf(),
                    source,
                })
            }
        };
        if let Some(why) = untrusted_because(meta.uid(), meta.mode()) {
            return Err(LayoutError::UntrustedAncestor {
                path: ancestor.to_path_buf(),
                why,
            });
        }
    }
    Ok(())
}

/// Why a directory with this owner and mode could be changed by someone other than root.
fn untrusted_because(uid: u32, mode: u32) -> Option<String> {
    let sticky = mode & 0o1000 != 0;
    if uid != 0 {
        Some(format!("owned by uid {uid}"))
    } else if mode & 0o022 != 0 && !sticky {
        Some(format!(
            "writable by group or others (mode {:04o})",
            mode & 0o7777
        ))
    } else {
        None
    }
}

fn create_ancestors(dir: &Path, outcome: &mut Outcome) -> Result<(), LayoutError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        match fs::symlink_metadata(p) {
            Ok(meta) if meta.is_dir() || meta.file_type().is_symlink() && p.is_dir() => break,
            Ok(_) => {
                return Err(LayoutError::NotADirectory {
                    path: p.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p),
            Err(source) => {
                return Err(LayoutError::Io {
                    path: p.to_path_buf(),
                    source,
                })
            }
        }
        cur = p.parent();
    }
    for p in missing.into_iter().rev() {
        make_dir(p, MODE_ANCESTOR)?;
        outcome.created.push(p.to_path_buf());
    }
    Ok(())
}

fn create(spec: &DirSpec, as_root: bool) -> Result<(), LayoutError> {
    make_dir(&spec.path, spec.mode)?;
    if as_root {
        // The directory was just made by this process inside a parent it checked or made, so the
        // name still refers to it; lchown never follows a link planted in between.
        std::os::unix::fs::lchown(&spec.path, Some(spec.owner.uid), Some(spec.owner.gid)).map_err(
            |source| LayoutError::Io {
                path: spec.path.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

fn make_dir(path: &Path, mode: u32) -> Result<(), LayoutError> {
    let io_err = |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err)?;
    // The umask may have narrowed the mode given to mkdir.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err)
}

/// Ancestors of `path` that other users cannot traverse: a daemon running under its own uid cannot
/// reach anything below them.
pub fn untraversable_ancestors(path: &Path) -> Vec<(PathBuf, u32)> {
    path.ancestors()
        .skip(1)
        .filter_map(|p| {
            fs::metadata(p)
                .ok()
                .map(|m| (p.to_path_buf(), m.mode() & 0o7777))
        })
        .filter(|(_, mode)| mode & 0o001 == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("postern-layout-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn inputs(root: &Path) -> Inputs {
        Inputs {
            queue_directory: root.join("spool"),
            virtual_mailbox_base: Some(root.join("mail")),
            mail_spool_directory: Some(root.join("mailspool")),
            maillog_file: Some(root.join("log/postern.log")),
            queue_owner: Owner {
                uid: 61002,
                gid: 61002,
            },
            vmail_owner: Owner {
                uid: 61004,
                gid: 61004,
            },
            as_root: false,
        }
    }

    #[test]
    fn plan_lists_every_queue_directory_with_its_owner() {
        let specs = plan(&inputs(Path::new("/i")));
        let find = |p: &str| {
            specs
                .iter()
                .find(|s| s.path == Path::new(p))
                .unwrap()
                .clone()
        };
        assert_eq!(find("/i/spool").owner, Owner::ROOT);
        assert_eq!(find("/i/spool/pid").owner, Owner::ROOT);
        for sub in QUEUE_SUBDIRS {
            let s = find(&format!("/i/spool/{sub}"));
            assert_eq!(s.owner.uid, 61002, "{sub}");
        }
        assert_eq!(find("/i/spool/incoming").mode, 0o700);
        assert_eq!(find("/i/spool/maildrop").mode, 0o730);
        assert_eq!(find("/i/mail").owner.uid, 61004);
        assert_eq!(find("/i/log").owner, Owner::ROOT);
        assert_eq!(find("/i/mailspool").mode, 0o700);
        let shared = plan(&Inputs {
            as_root: true,
            ..inputs(Path::new("/i"))
        });
        let spool = shared
            .iter()
            .find(|s| s.path == Path::new("/i/mailspool"))
            .unwrap();
        assert_eq!(spool.mode, 0o755);
        // Parents come before their children.
        let spool = specs
            .iter()
            .position(|s| s.path == Path::new("/i/spool"))
            .unwrap();
        let incoming = specs
            .iter()
            .position(|s| s.path == Path::new("/i/spool/incoming"))
            .unwrap();
        assert!(spool < incoming);
    }

    #[test]
    fn ensure_creates_missing_ancestors_and_is_idempotent() {
        let root = scratch("ensure").join("deep/instance");
        let specs = plan(&inputs(&root));
        let first = ensure(&specs, false).unwrap();
        assert!(first.created.contains(&root));
        for spec in &specs {
            let meta = fs::metadata(&spec.path).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, spec.mode, "{}", spec.path.display());
        }
        let second = ensure(&specs, false).unwrap();
        assert!(second.created.is_empty());
        fs::remove_dir_all(root.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn ensure_refuses_a_symlink_and_a_file() {
        let root = scratch("symlink");
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("spool")).unwrap();
        let err = ensure(&plan(&inputs(&root)), false).unwrap_err();
        assert!(matches!(err, LayoutError::Symlink { .. }), "{err}");
        fs::remove_file(root.join("spool")).unwrap();
        fs::write(root.join("spool"), b"").unwrap();
        let err = ensure(&plan(&inputs(&root)), false).unwrap_err();
        assert!(matches!(err, LayoutError::NotADirectory { .. }), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn ensure_refuses_relative_paths() {
        let specs = vec![DirSpec {
            path: "spool".into(),
            owner: Owner::ROOT,
            mode: 0o700,
        }];
        assert!(matches!(
            ensure(&specs, false),
            Err(LayoutError::Relative { .. })
        ));
    }

    #[test]
    fn as_root_new_directories_get_their_owner_and_foreign_ones_are_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: ownership needs root");
            return;
        }
        let root = scratch("owners");
        let specs = plan(&Inputs {
            as_root: true,
            ..inputs(&root)
        });
        ensure(&specs, true).unwrap();
        assert_eq!(
            fs::metadata(root.join("spool/active")).unwrap().uid(),
            61002
        );
        assert_eq!(fs::metadata(root.join("mail")).unwrap().gid(), 61004);
        assert_eq!(fs::metadata(root.join("spool/pid")).unwrap().uid(), 0);
        assert_eq!(
            fs::metadata(root.join("mailspool")).unwrap().mode() & 0o7777,
            0o755
        );
        std::os::unix::fs::lchown(root.join("spool/hold"), Some(4242), None).unwrap();
        let err = ensure(&specs, true).unwrap_err();
        assert!(
            matches!(err, LayoutError::ForeignOwner { found: 4242, .. }),
            "{err}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_root_controlled_ancestors_are_trusted() {
        assert_eq!(untrusted_because(0, 0o40755), None);
        assert_eq!(untrusted_because(0, 0o41777), None);
        assert!(untrusted_because(1000, 0o40755)
            .unwrap()
            .contains("uid 1000"));
        assert!(untrusted_because(0, 0o40775).unwrap().contains("0775"));
        assert!(untrusted_because(0, 0o40757).is_some());
    }

    #[test]
    fn as_root_a_foreign_ancestor_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: ownership needs root");
            return;
        }
        let root = scratch("ancestor");
        let trap = root.join("trap");
        fs::create_dir_all(&trap).unwrap();
        std::os::unix::fs::lchown(&trap, Some(4242), None).unwrap();
        let err = ensure(
            &plan(&Inputs {
                as_root: true,
                ..inputs(&trap.join("i"))
            }),
            true,
        )
        .unwrap_err();
        assert!(
            matches!(err, LayoutError::UntrustedAncestor { .. }),
            "{err}"
        );
        assert!(!trap.join("i").exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn untraversable_ancestor_is_reported() {
        let root = scratch("traverse");
        let closed = root.join("closed");
        fs::create_dir_all(closed.join("instance")).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
        let found = untraversable_ancestors(&closed.join("instance"));
        assert!(
            found.iter().any(|(p, mode)| p == &closed && *mode == 0o700),
            "{found:?}"
        );
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o755)).unwrap();
        let found = untraversable_ancestors(&closed.join("instance"));
        assert!(!found.iter().any(|(p, _)| p == &closed));
        fs::remove_dir_all(&root).unwrap();
    }
}
