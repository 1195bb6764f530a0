//! The passwd(5) and group(5) file formats, for local recipients (`unix:passwd.byname`).
//!
//! Trusts: nothing in the text beyond its being the system's account database; lines that do
//! not parse are skipped and counted (as getpwent(3) skips them), never guessed at, and every
//! limit ([`MAX_ACCOUNTS`], [`MAX_LINE`]) is checked. Pure: the caller reads the files.
//!
//! Postern reads the files itself instead of calling getpwnam(3): the C library's NSS would
//! load modules and read files that no sandbox of a mail daemon should cover, and a daemon
//! must see the same database at start-up (smtpd) and later (local). Accounts from other NSS
//! sources (LDAP, systemd's dynamic users) are therefore not local recipients: list them in
//! an alias table.

use std::collections::HashMap;

/// Most accounts read from one file; a larger database is cut there (with a warning by the
/// caller) rather than held in memory unbounded.
pub const MAX_ACCOUNTS: usize = 200_000;
/// Longest line considered; longer lines are skipped.
pub const MAX_LINE: usize = 8192;

/// One passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// A parsed passwd file, looked up by name. Local parts are case-folded by the caller
/// before lookup (Postfix folds the recipient); names here are kept as written, and a
/// name with upper-case letters is found by its lower-case form too.
#[derive(Debug, Clone, Default)]
pub struct Passwd {
    by_name: HashMap<String, Account>,
    skipped: usize,
    truncated: bool,
}

impl Passwd {
    pub fn parse(text: &str) -> Passwd {
        let mut db = Passwd::default();
        for line in text.lines() {
            if db.by_name.len() >= MAX_ACCOUNTS {
                db.truncated = true;
                break;
            }
            match parse_account(line) {
                Some(account) => {
                    // getpwnam returns the first entry of a name.
                    db.by_name
                        .entry(account.name.to_lowercase())
                        .or_insert(account);
                }
                None if line.trim().is_empty() || line.starts_with('#') => {}
                None => db.skipped += 1,
            }
        }
        db
    }

    pub fn get(&self, name: &str) -> Option<&Account> {
        self.by_name.get(&name.to_lowercase())
    }

    /// Every account, in no particular order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Lines that were not passwd entries.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether [`MAX_ACCOUNTS`] cut the file short.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

fn parse_account(line: &str) -> Option<Account> {
    if line.len() > MAX_LINE {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 7 {
        return None;
    }
    let name = fields[0];
    // NIS compat entries (+, -) and names that cannot be a local part are not accounts.
    if name.is_empty()
        || name.starts_with(['+', '-'])
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b))
    {
        return None;
    }
    let uid = fields[2].parse().ok()?;
    let gid = fields[3].parse().ok()?;
    Some(Account {
        name: name.to_owned(),
        uid,
        gid,
        home: fields[5].to_owned(),
        shell: fields[6].to_owned(),
    })
}

/// The supplementary groups of `user` in a group(5) file: every group that lists the name
/// as a member, at most `limit` of them (the first ones in file order).
pub fn groups_of(group_text: &str, user: &str, limit: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for line in group_text.lines() {
        if out.len() >= limit {
            break;
        }
        if line.len() > MAX_LINE {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() != 4 {
            continue;
        }
        let Ok(gid) = fields[2].parse::<u32>() else {
            continue;
        };
        if fields[3].split(',').any(|m| m.trim() == user) && !out.contains(&gid) {
            out.push(gid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_bad_lines_are_skipped() {
        let db = Passwd::parse(
            "root:x:0:0:root:/root:/bin/bash\n\
             alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
             Bob:x:1001:100::/home/bob:/bin/sh\n\
             alice:x:2000:2000::/elsewhere:/bin/sh\n\
             +nis::::::\n\
             broken:x:notanumber:1::/:/bin/sh\n\
             short:x:1\n\
             \n",
        );
        assert_eq!(db.len(), 3);
        let alice = db.get("ALICE").unwrap();
        assert_eq!((alice.uid, alice.gid), (1000, 1000));
        assert_eq!(alice.home, "/home/alice");
        assert_eq!(db.get("bob").unwrap().name, "Bob");
        assert_eq!(db.skipped(), 3);
        assert!(db.get("+nis").is_none());
        assert!(!db.truncated());
    }

    #[test]
    fn supplementary_groups_are_found_by_membership() {
        let text = "mail:x:8:alice\nstaff:x:50:bob, alice\nusers:x:100:\nbad:x:z:alice\n";
        assert_eq!(groups_of(text, "alice", 16), vec![8, 50]);
        assert_eq!(groups_of(text, "alice", 1), vec![8]);
        assert!(groups_of(text, "carol", 16).is_empty());
    }
}
