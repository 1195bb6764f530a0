//! `local_recipient_maps`: which users of `mydestination` exist, so that RCPT can refuse
//! the others (`550 5.1.1 ... User unknown in local recipient table`) instead of accepting
//! mail the local agent would bounce.
//!
//! Trusts: the administrator's files (the passwd file, alias tables and lookup tables),
//! read once at start-up, before the sandbox (which gives smtpd no path at all): a new user
//! or alias is seen by the next smtpd process, as with `virtual_mailbox_maps`. Every file
//! is parsed by `policy` with its bounds.
//!
//! Decisions:
//! - Elements, as Postfix's default `proxy:unix:passwd.byname $alias_maps`:
//!   `unix:passwd.byname` (with or without `proxy:`) is the accounts of
//!   `local_passwd_file` (Postern reads the file, not NSS; see `policy::passwd`); an
//!   element that is also in `alias_maps` is an aliases(5) file, keyed by name; any other
//!   `type:table` is a postmap(5) table looked up as Postfix's `mail_addr_find`:
//!   `user@domain`, then `user`, then `@domain`.
//! - Keys are the recipient's local part in lower case (Postfix folds the recipient), with
//!   no address extension (Postern has no `recipient_delimiter` yet).
//! - An account with uid 0 is not a recipient by itself: Postern's local agent never
//!   delivers as root, so `root` is valid only through an alias (accepting it would mean a
//!   bounce later).
//! - `postmaster` is always accepted in a local domain (RFC 5321 section 4.5.1), whatever
//!   the tables say.
//! - An empty `local_recipient_maps` disables the check, as in Postfix.
//! - A table that cannot be read or parsed does not stop smtpd (the virtual domains and
//!   relaying still work): each local recipient then gets Postfix's
//!   `451 4.3.0 <addr>: Temporary lookup failure`, and the error is logged at start-up.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use conf::MainCf;
use policy::aliases::{self, Aliases};
use policy::passwd::Passwd;
use policy::{Table, TableRef};
use protocol::address::Mailbox;

/// The largest passwd or alias file read (the tables' own loader has its bound too).
const MAX_FILE: u64 = 16 << 20;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Known,
    Unknown,
    /// A table could not be read at start-up.
    Unavailable,
}

/// The valid local recipients, as the tables said at start-up.
#[derive(Debug, Clone, Default)]
pub struct LocalRecipients {
    /// False when `local_recipient_maps` is empty: every local recipient is accepted.
    enabled: bool,
    /// Names (lower case) that are accounts or aliases.
    names: HashSet<String>,
    /// Postmap tables, looked up by address.
    tables: Vec<Table>,
    /// Why the tables are unusable, if they are.
    failure: Option<String>,
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} octets", path.display()));
    }
    Ok(text)
}

impl LocalRecipients {
    /// Reads `local_recipient_maps` and what it names. Errors in a setting's syntax are
    /// the caller's to report; a file that cannot be used is kept as [`Self::failure`].
    pub fn load(s: &MainCf) -> Result<LocalRecipients, conf::ConfError> {
        let elements = s.get_list("local_recipient_maps")?;
        let alias_maps = s.get_list("alias_maps")?;
        let passwd_file = PathBuf::from(s.get("local_passwd_file")?.trim());
        let mut out = LocalRecipients {
            enabled: !elements.is_empty(),
            ..LocalRecipients::default()
        };
        for element in &elements {
            if let Err(why) = out.add(element, &alias_maps, &passwd_file) {
                out.failure = Some(format!("local_recipient_maps: {why}"));
                break;
            }
        }
        Ok(out)
    }

    fn add(&mut self, element: &str, alias_maps: &[String], passwd: &Path) -> Result<(), String> {
        let bare = element.strip_prefix("proxy:").unwrap_or(element);
        if bare == "unix:passwd.byname" {
            let db = Passwd::parse(&read_bounded(passwd)?);
            if db.truncated() {
                tracing::warn!(
                    "{}: more accounts than smtpd reads; the rest are unknown recipients",
                    passwd.display()
                );
            }
            self.names.extend(
                db.accounts()
                    .filter(|a| a.uid != 0)
                    .map(|a| a.name.to_lowercase()),
            );
        } else if alias_maps.iter().any(|a| a == element) {
            let path = aliases::alias_map_path(element)?;
            let table = Aliases::parse(&read_bounded(&path)?, &path).map_err(|e| e.to_string())?;
            self.names.extend(table.iter().map(|a| a.name.clone()));
        } else {
            let table = TableRef::parse(element)
                .and_then(|r| r.load(&mut |p: &Path| File::open(p)))
                .map_err(|e| e.to_string())?;
            self.tables.push(table);
        }
        Ok(())
    }

    /// Why the tables are unusable, for the start-up log.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether `mailbox` (a recipient in `mydestination`) may be accepted.
    pub fn lookup(&self, mailbox: &Mailbox) -> Lookup {
        let local = mailbox.local_part().to_lowercase();
        if !self.enabled || local == "postmaster" {
            return Lookup::Known;
        }
        if self.failure.is_some() {
            return Lookup::Unavailable;
        }
        if self.names.contains(&local) {
            return Lookup::Known;
        }
        let domain = mailbox.domain().to_string().to_lowercase();
        let keys = [format!("{local}@{domain}"), local, format!("@{domain}")];
        for key in &keys {
            if self.tables.iter().any(|t| t.get(key).is_some()) {
                return Lookup::Known;
            }
        }
        Lookup::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(PathBuf);

    impl Files {
        fn new(name: &str) -> Files {
            let dir = std::env::temp_dir()
                .join(format!("smtpd-local-rcpt-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }
        fn write(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(text: &str) -> LocalRecipients {
        let env = conf::Environment::with_hostname("mx.example.test").unwrap();
        let s = MainCf::parse_with_env(text, Path::new("main.cf"), env).unwrap();
        LocalRecipients::load(&s).unwrap()
    }

    fn mailbox(s: &str) -> Mailbox {
        Mailbox::parse(s, true).unwrap()
    }

    #[test]
    fn passwd_users_and_aliases_are_known_others_are_not() {
        let f = Files::new("known");
        let passwd = f.write(
            "passwd",
            "root:x:0:0:root:/root:/bin/sh\nAlice:x:1000:1000::/home/alice:/bin/sh\nbad line\n",
        );
        let aliases = f.write(
            "aliases",
            "postmaster: root\nsales: alice, bob@example.org\n",
        );
        let r = load(&format!(
            "local_passwd_file = {passwd}\nalias_maps = hash:{aliases}\n"
        ));
        assert_eq!(r.failure(), None);
        assert_eq!(r.lookup(&mailbox("alice@mx.example.test")), Lookup::Known);
        assert_eq!(r.lookup(&mailbox("ALICE@mx.example.test")), Lookup::Known);
        assert_eq!(r.lookup(&mailbox("Sales@localhost")), Lookup::Known);
        assert_eq!(
            r.lookup(&mailbox("nosuch@mx.example.test")),
            Lookup::Unknown
        );
        // root is an account, but never a delivery user: only an alias makes it valid.
        assert_eq!(r.lookup(&mailbox("root@mx.example.test")), Lookup::Unknown);
        // Nor is a name valid because a value of an alias names it.
        assert_eq!(r.lookup(&mailbox("bob@mx.example.test")), Lookup::Unknown);
    }

    #[test]
    fn postmap_tables_are_looked_up_by_address_then_user_then_domain() {
        let f = Files::new("postmap");
        let table = f.write(
            "rcpts",
            "full@mx.example.test ok\nbare ok\n@catchall.example ok\n",
        );
        let r = load(&format!("local_recipient_maps = texthash:{table}\n"));
        assert_eq!(r.lookup(&mailbox("full@mx.example.test")), Lookup::Known);
        assert_eq!(r.lookup(&mailbox("full@localhost")), Lookup::Unknown);
        assert_eq!(r.lookup(&mailbox("bare@localhost")), Lookup::Known);
        assert_eq!(r.lookup(&mailbox("anyone@catchall.example")), Lookup::Known);
        assert_eq!(r.lookup(&mailbox("nosuch@localhost")), Lookup::Unknown);
        // Nothing from the passwd file: it is not in this list.
        assert_eq!(r.lookup(&mailbox("root@localhost")), Lookup::Unknown);
    }

    #[test]
    fn an_empty_list_accepts_everyone_and_postmaster_is_always_accepted() {
        let r = load("local_recipient_maps =\n");
        assert_eq!(r.lookup(&mailbox("anyone@localhost")), Lookup::Known);

        let f = Files::new("postmaster");
        let passwd = f.write("passwd", "alice:x:1000:1000::/home/alice:/bin/sh\n");
        let r = load(&format!(
            "local_passwd_file = {passwd}\nlocal_recipient_maps = unix:passwd.byname\n"
        ));
        assert_eq!(r.lookup(&mailbox("PostMaster@localhost")), Lookup::Known);
        assert_eq!(r.lookup(&mailbox("alice@localhost")), Lookup::Known);
        // The `proxy:` form of Postfix's default is the same table.
        let r = load(&format!(
            "local_passwd_file = {passwd}\nlocal_recipient_maps = proxy:unix:passwd.byname\n"
        ));
        assert_eq!(r.lookup(&mailbox("alice@localhost")), Lookup::Known);
    }

    #[test]
    fn an_unreadable_or_bad_table_makes_lookups_temporary_failures() {
        let f = Files::new("bad");
        let r = load(&format!("alias_maps = hash:{}/missing\n", f.0.display()));
        let why = r.failure().unwrap();
        assert!(why.contains("missing"), "{why}");
        assert_eq!(r.lookup(&mailbox("anyone@localhost")), Lookup::Unavailable);

        let aliases = f.write("aliases", "ok: a\nbroken line without a colon\n");
        let r = load(&format!("alias_maps = hash:{aliases}\n"));
        let why = r.failure().unwrap();
        assert!(why.contains("line 2"), "{why}");
        // Postmaster still reaches someone.
        assert_eq!(r.lookup(&mailbox("postmaster@localhost")), Lookup::Known);
    }
}
