//! The `proxymap` service's lookups: the accounts of `local_passwd_file` by name, and the
//! supplementary groups of a name in `local_group_file`, as Postfix's `proxymap(8)` answers
//! `unix:passwd.byname` for smtpd and local.
//!
//! Trusts: the files as the system's account database, parsed by `policy::passwd` with its
//! bounds (a local user controls fields of it through `chfn`, so an entry whose fields cannot
//! travel as a valid `protocol::proxymap::Account` is not answered); the keys only as
//! `protocol` validated them.
//!
//! Decisions:
//! - Each lookup `stat`s the file; it is read again only when its (device, inode, size,
//!   modification time) differs from the copy in memory, so a file replaced by rename
//!   (`useradd`, `vipw`) or changed in place is seen at the next lookup, and an unchanged one
//!   costs one `stat`. The stamp kept is the one of the descriptor that was read (`fstat`),
//!   so a change during the read is seen at the next lookup.
//! - A file that cannot be read (missing, unreadable, larger than [`MAX_FILE`]) is a
//!   temporary failure with the reason, never "not found"; the copy in memory is dropped, so
//!   an answer never comes from a file that is no longer there.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use policy::passwd::{self, Passwd};
use protocol::bounded::BoundedVec;
use protocol::proxymap::{Account, FromProxymap, Table, MAX_GROUPS, MAX_REASON};

/// Largest passwd or group file read (held in memory).
pub const MAX_FILE: u64 = 16 << 20;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// One file and its parsed copy.
struct Cached<T> {
    path: PathBuf,
    parse: fn(String) -> T,
    copy: Option<(Stamp, T)>,
    /// Times the file was read, for tests and the log.
    reads: u64,
}

impl<T> Cached<T> {
    fn new(path: PathBuf, parse: fn(String) -> T) -> Cached<T> {
        Cached {
            path,
            parse,
            copy: None,
            reads: 0,
        }
    }

    fn current(&mut self) -> Result<&T, String> {
        let result = self.refresh();
        if let Err(why) = result {
            self.copy = None;
            return Err(why);
        }
        match &self.copy {
            Some((_, value)) => Ok(value),
            None => Err(format!("{}: not read", self.path.display())),
        }
    }

    fn refresh(&mut self) -> Result<(), String> {
        let path = &self.path;
        let why = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let now = Stamp::of(&std::fs::metadata(path).map_err(why)?);
        if self.copy.as_ref().is_some_and(|(stamp, _)| *stamp == now) {
            return Ok(());
        }
        let file = File::open(path).map_err(why)?;
        let stamp = Stamp::of(&file.metadata().map_err(why)?);
        let mut text = String::new();
        file.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(why)?;
        if text.len() as u64 > MAX_FILE {
            return Err(format!(
                "cannot read {}: larger than {MAX_FILE} octets",
                path.display()
            ));
        }
        self.reads += 1;
        tracing::debug!(file = %path.display(), "read");
        self.copy = Some((stamp, (self.parse)(text)));
        Ok(())
    }
}

fn parse_passwd(text: String) -> Passwd {
    Passwd::parse(&text)
}

fn keep_text(text: String) -> String {
    text
}

/// The two tables proxymap answers from.
pub struct Maps {
    passwd: Cached<Passwd>,
    group: Cached<String>,
}

fn temp_fail(why: &str) -> FromProxymap {
    let text: String = why
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON / 4)
        .collect();
    FromProxymap::TempFail(text.as_str().try_into().unwrap_or_default())
}

impl Maps {
    pub fn new(passwd_file: &Path, group_file: &Path) -> Maps {
        Maps {
            passwd: Cached::new(passwd_file.to_path_buf(), parse_passwd),
            group: Cached::new(group_file.to_path_buf(), keep_text),
        }
    }

    /// Reads of each file so far (passwd, group).
    pub fn reads(&self) -> (u64, u64) {
        (self.passwd.reads, self.group.reads)
    }

    /// The answer to one lookup.
    pub fn lookup(&mut self, table: Table, key: &str) -> FromProxymap {
        match table {
            Table::Passwd => {
                let db = match self.passwd.current() {
                    Ok(db) => db,
                    Err(why) => return temp_fail(&why),
                };
                if db.truncated() {
                    tracing::warn!(
                        "local_passwd_file: more accounts than proxymap reads; the rest are unknown"
                    );
                }
                let Some(a) = db.get(key) else {
                    return FromProxymap::NotFound;
                };
                let account = (|| {
                    Some(Account {
                        name: a.name.as_str().try_into().ok()?,
                        uid: a.uid,
                        gid: a.gid,
                        home: a.home.as_str().try_into().ok()?,
                        shell: a.shell.as_str().try_into().ok()?,
                    })
                })();
                let answer = account.map(FromProxymap::Account);
                match answer {
                    Some(answer) if protocol::encode(&answer).is_ok() => answer,
                    _ => {
                        tracing::warn!(
                            "local_passwd_file: the entry of {key:?} has fields no account may have (a relative home, a control character); not answered"
                        );
                        FromProxymap::NotFound
                    }
                }
            }
            Table::GroupsOf => {
                let text = match self.group.current() {
                    Ok(text) => text,
                    Err(why) => return temp_fail(&why),
                };
                let gids = passwd::groups_of(text, key, MAX_GROUPS);
                // groups_of stops at MAX_GROUPS, the list's bound.
                FromProxymap::Groups(BoundedVec::try_from(gids).unwrap_or_default())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("proxymap-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn uid_of(answer: FromProxymap) -> Option<u32> {
        match answer {
            FromProxymap::Account(a) => Some(a.uid),
            _ => None,
        }
    }

    #[test]
    fn a_file_replaced_by_rename_is_read_again_and_an_unchanged_one_is_not() {
        let d = dir("rename");
        let (passwd, group) = (d.0.join("passwd"), d.0.join("group"));
        fs::write(&passwd, "alice:x:1000:1000::/home/alice:/bin/sh\n").unwrap();
        fs::write(&group, "mail:x:8:alice\n").unwrap();
        let mut maps = Maps::new(&passwd, &group);
        assert_eq!(uid_of(maps.lookup(Table::Passwd, "alice")), Some(1000));
        assert_eq!(maps.lookup(Table::Passwd, "bob"), FromProxymap::NotFound);
        assert_eq!(maps.reads(), (1, 0));
        let new = d.0.join("passwd+");
        fs::write(
            &new,
            "alice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n",
        )
        .unwrap();
        fs::rename(&new, &passwd).unwrap();
        assert_eq!(uid_of(maps.lookup(Table::Passwd, "bob")), Some(1001));
        assert_eq!(uid_of(maps.lookup(Table::Passwd, "alice")), Some(1000));
        assert_eq!(maps.reads(), (2, 0));
        assert_eq!(
            maps.lookup(Table::GroupsOf, "alice"),
            FromProxymap::Groups(vec![8].try_into().unwrap())
        );
        assert_eq!(
            maps.lookup(Table::GroupsOf, "bob"),
            FromProxymap::Groups(BoundedVec::new())
        );
        assert_eq!(maps.reads(), (2, 1));
    }

    #[test]
    fn an_unreadable_file_is_a_temporary_failure_not_an_unknown_user() {
        let d = dir("missing");
        let (passwd, group) = (d.0.join("passwd"), d.0.join("group"));
        fs::write(&passwd, "alice:x:1000:1000::/home/alice:/bin/sh\n").unwrap();
        let mut maps = Maps::new(&passwd, &group);
        assert!(uid_of(maps.lookup(Table::Passwd, "alice")).is_some());
        fs::remove_file(&passwd).unwrap();
        for (table, key) in [(Table::Passwd, "alice"), (Table::GroupsOf, "alice")] {
            match maps.lookup(table, key) {
                FromProxymap::TempFail(why) => assert!(why.contains("cannot read"), "{why}"),
                other => panic!("{table:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_entry_that_cannot_travel_is_not_answered() {
        let d = dir("fields");
        let (passwd, group) = (d.0.join("passwd"), d.0.join("group"));
        fs::write(&passwd, "rel:x:1000:1000::home/rel:/bin/sh\n").unwrap();
        let mut maps = Maps::new(&passwd, &group);
        assert_eq!(maps.lookup(Table::Passwd, "rel"), FromProxymap::NotFound);
    }
}
