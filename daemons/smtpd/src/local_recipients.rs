//! `local_recipient_maps`: which users of `mydestination` exist, so that RCPT can refuse
//! the others (`550 5.1.1 ... User unknown in local recipient table`) instead of accepting
//! mail the local agent would bounce.
//!
//! Trusts: the administrator's files (alias tables and lookup tables), read once at
//! start-up, before the sandbox (which gives smtpd no path at all): a new alias is seen by
//! the next smtpd process, as with `virtual_mailbox_maps`. Every file is parsed by `policy`
//! with its bounds. Accounts are not read here: `unix:passwd.byname` is asked of the
//! `proxymap` service at each `RCPT` (as Postfix's default `proxy:unix:passwd.byname`), so
//! a user added while Postern runs is a recipient at once; its answer comes decoded by
//! `protocol`.
//!
//! Decisions:
//! - Elements, as Postfix's default `proxy:unix:passwd.byname $alias_maps`:
//!   `unix:passwd.byname` (with or without `proxy:`) is the accounts of
//!   `local_passwd_file`, looked up through proxymap (which reads the file, not NSS; see
//!   `policy::passwd`); an
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
//!   So does a recipient whose account lookup fails (proxymap cannot read the file, is not
//!   in master.cf, or does not answer): never `550` for an account that may exist.
//! - Aliases and postmap tables are consulted first; the account lookup (one channel round
//!   trip) only for a name they do not list.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use conf::MainCf;
use daemon::cleanup_client::Connect;
use daemon::proxymap_client::{LookupError, ProxymapLink};
use policy::aliases::{self, Aliases};
use policy::{Table, TableRef};
use protocol::address::Mailbox;
use protocol::proxymap::{FromProxymap, Table as ProxymapTable};

/// The largest alias file read (the tables' own loader has its bound too).
const MAX_FILE: u64 = 16 << 20;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Known,
    Unknown,
    /// A table could not be read at start-up, or an account lookup failed now.
    Unavailable,
}

/// What the accounts database says of one name (lower case): its uid, none, or why it cannot
/// tell now.
pub trait Accounts {
    fn uid_of(&mut self, name: &str) -> Result<Option<u32>, String>;
}

/// The uid in proxymap's answer to a `Passwd` lookup.
pub fn uid_in(answer: FromProxymap) -> Result<Option<u32>, String> {
    match answer {
        FromProxymap::Account(a) => Ok(Some(a.uid)),
        FromProxymap::NotFound => Ok(None),
        FromProxymap::TempFail(why) => Err(format!("proxymap: {why}")),
        other => Err(format!(
            "proxymap answered a Passwd lookup with {}",
            protocol::Message::kind(&other)
        )),
    }
}

/// The accounts as the `proxymap` service answers for them, one round trip per lookup over
/// the process's kept channel.
pub struct Proxymap<'a, 'c> {
    pub link: &'a mut ProxymapLink,
    pub connect: &'a mut Connect<'c>,
}

impl Accounts for Proxymap<'_, '_> {
    fn uid_of(&mut self, name: &str) -> Result<Option<u32>, String> {
        match self.link.lookup(self.connect, ProxymapTable::Passwd, name) {
            Ok(answer) => uid_in(answer),
            // A name that cannot be a key (a '/', a ':') is no account.
            Err(LookupError::Key(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The valid local recipients, as the tables said at start-up.
#[derive(Debug, Clone, Default)]
pub struct LocalRecipients {
    /// False when `local_recipient_maps` is empty: every local recipient is accepted.
    enabled: bool,
    /// Whether `unix:passwd.byname` is an element: accounts are recipients.
    accounts: bool,
    /// Names (lower case) that are aliases.
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
        let mut out = LocalRecipients {
            enabled: !elements.is_empty(),
            ..LocalRecipients::default()
        };
        for element in &elements {
            if let Err(why) = out.add(element, &alias_maps) {
                out.failure = Some(format!("local_recipient_maps: {why}"));
                break;
            }
        }
        Ok(out)
    }

    fn add(&mut self, element: &str, alias_maps: &[String]) -> Result<(), String> {
        let bare = element.strip_prefix("proxy:").unwrap_or(element);
        if bare == "unix:passwd.byname" {
            self.accounts = true;
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

    /// Whether accounts are looked up (`unix:passwd.byname` is an element).
    pub fn uses_accounts(&self) -> bool {
        self.enabled && self.accounts
    }

    /// Whether `mailbox` (a recipient in `mydestination`) may be accepted; `accounts` is
    /// asked only for a name no table lists.
    pub fn lookup(&self, mailbox: &Mailbox, accounts: &mut dyn Accounts) -> Lookup {
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
        if self.accounts {
            let [_, local, _] = &keys;
            match accounts.uid_of(local) {
                // uid 0 is never a delivery identity (see the decisions above).
                Ok(Some(uid)) if uid != 0 => return Lookup::Known,
                Ok(_) => {}
                Err(why) => {
                    tracing::warn!(recipient = %mailbox, "account lookup failed: {why}");
                    return Lookup::Unavailable;
                }
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

    /// The accounts of a passwd text, as proxymap would answer; `None` fails every lookup.
    struct Db(Option<policy::passwd::Passwd>, usize);

    impl Accounts for Db {
        fn uid_of(&mut self, name: &str) -> Result<Option<u32>, String> {
            self.1 += 1;
            match &self.0 {
                Some(db) => Ok(db.get(name).map(|a| a.uid)),
                None => Err("proxymap: cannot read /etc/passwd".into()),
            }
        }
    }

    fn db(text: &str) -> Db {
        Db(Some(policy::passwd::Passwd::parse(text)), 0)
    }

    #[test]
    fn passwd_users_and_aliases_are_known_others_are_not() {
        let f = Files::new("known");
        let mut a =
            db("root:x:0:0:root:/root:/bin/sh\nAlice:x:1000:1000::/home/alice:/bin/sh\nbad line\n");
        let aliases = f.write(
            "aliases",
            "postmaster: root\nsales: alice, bob@example.org\n",
        );
        let r = load(&format!("alias_maps = hash:{aliases}\n"));
        assert_eq!(r.failure(), None);
        assert!(r.uses_accounts());
        assert_eq!(
            r.lookup(&mailbox("alice@mx.example.test"), &mut a),
            Lookup::Known
        );
        assert_eq!(
            r.lookup(&mailbox("ALICE@mx.example.test"), &mut a),
            Lookup::Known
        );
        assert_eq!(a.1, 2);
        // An alias is found without asking for an account.
        assert_eq!(r.lookup(&mailbox("Sales@localhost"), &mut a), Lookup::Known);
        assert_eq!(a.1, 2);
        assert_eq!(
            r.lookup(&mailbox("nosuch@mx.example.test"), &mut a),
            Lookup::Unknown
        );
        // root is an account, but never a delivery user: only an alias makes it valid.
        assert_eq!(
            r.lookup(&mailbox("root@mx.example.test"), &mut a),
            Lookup::Unknown
        );
        // Nor is a name valid because a value of an alias names it.
        assert_eq!(
            r.lookup(&mailbox("bob@mx.example.test"), &mut a),
            Lookup::Unknown
        );
        // An account lookup that fails is a temporary failure, never "unknown".
        let mut broken = Db(None, 0);
        assert_eq!(
            r.lookup(&mailbox("alice@mx.example.test"), &mut broken),
            Lookup::Unavailable
        );
        assert_eq!(
            r.lookup(&mailbox("sales@localhost"), &mut broken),
            Lookup::Known
        );
    }

    #[test]
    fn postmap_tables_are_looked_up_by_address_then_user_then_domain() {
        let f = Files::new("postmap");
        let table = f.write(
            "rcpts",
            "full@mx.example.test ok\nbare ok\n@catchall.example ok\n",
        );
        let r = load(&format!("local_recipient_maps = texthash:{table}\n"));
        let mut a = db("nosuch:x:1000:1000::/home/n:/bin/sh\n");
        assert_eq!(
            r.lookup(&mailbox("full@mx.example.test"), &mut a),
            Lookup::Known
        );
        assert_eq!(
            r.lookup(&mailbox("full@localhost"), &mut a),
            Lookup::Unknown
        );
        assert_eq!(r.lookup(&mailbox("bare@localhost"), &mut a), Lookup::Known);
        assert_eq!(
            r.lookup(&mailbox("anyone@catchall.example"), &mut a),
            Lookup::Known
        );
        // Nothing from the accounts: they are not in this list.
        assert!(!r.uses_accounts());
        assert_eq!(
            r.lookup(&mailbox("nosuch@localhost"), &mut a),
            Lookup::Unknown
        );
        assert_eq!(a.1, 0);
    }

    #[test]
    fn an_empty_list_accepts_everyone_and_postmaster_is_always_accepted() {
        let mut a = db("alice:x:1000:1000::/home/alice:/bin/sh\n");
        let r = load("local_recipient_maps =\n");
        assert!(!r.uses_accounts());
        assert_eq!(
            r.lookup(&mailbox("anyone@localhost"), &mut a),
            Lookup::Known
        );

        let r = load("local_recipient_maps = unix:passwd.byname\n");
        assert_eq!(
            r.lookup(&mailbox("PostMaster@localhost"), &mut a),
            Lookup::Known
        );
        assert_eq!(r.lookup(&mailbox("alice@localhost"), &mut a), Lookup::Known);
        // The `proxy:` form of Postfix's default is the same table.
        let r = load("local_recipient_maps = proxy:unix:passwd.byname\n");
        assert_eq!(r.lookup(&mailbox("alice@localhost"), &mut a), Lookup::Known);
        assert_eq!(r.lookup(&mailbox("bob@localhost"), &mut a), Lookup::Unknown);
    }

    #[test]
    fn an_unreadable_or_bad_table_makes_lookups_temporary_failures() {
        let f = Files::new("bad");
        let r = load(&format!("alias_maps = hash:{}/missing\n", f.0.display()));
        let why = r.failure().unwrap();
        assert!(why.contains("missing"), "{why}");
        let mut a = db("");
        assert_eq!(
            r.lookup(&mailbox("anyone@localhost"), &mut a),
            Lookup::Unavailable
        );

        let aliases = f.write("aliases", "ok: a\nbroken line without a colon\n");
        let r = load(&format!("alias_maps = hash:{aliases}\n"));
        let why = r.failure().unwrap();
        assert!(why.contains("line 2"), "{why}");
        // Postmaster still reaches someone.
        assert_eq!(
            r.lookup(&mailbox("postmaster@localhost"), &mut a),
            Lookup::Known
        );
    }
}
