//! Local accounts, looked up by name for one recipient's expansion: the account (uid, gid,
//! home, shell) and its supplementary groups, remembered for the rest of that recipient so one
//! expansion sees one answer per name.
//!
//! Where the answers come from is [`Source`]; a lookup that cannot be answered now is a
//! temporary failure (the recipient is deferred), never "unknown user".

use std::collections::HashMap;

use policy::passwd::Account;
use sandbox::Identity;

/// Supplementary groups kept per account.
pub const MAX_GROUPS: usize = 16;

/// An account and its supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub account: Account,
    pub groups: Vec<u32>,
}

/// Answers account lookups.
pub trait Source {
    /// `Ok(None)`: no such account; `Err`: cannot tell now.
    fn user(&mut self, name: &str) -> Result<Option<User>, String>;
}

/// The accounts one recipient's expansion has looked up.
pub struct Users<'a> {
    source: &'a mut dyn Source,
    seen: HashMap<String, Option<User>>,
}

impl<'a> Users<'a> {
    pub fn new(source: &'a mut dyn Source) -> Users<'a> {
        Users {
            source,
            seen: HashMap::new(),
        }
    }

    pub fn lookup(&mut self, name: &str) -> Result<Option<Account>, String> {
        if let Some(known) = self.seen.get(name) {
            return Ok(known.as_ref().map(|u| u.account.clone()));
        }
        let found = self.source.user(name)?;
        let account = found.as_ref().map(|u| u.account.clone());
        self.seen.insert(name.to_owned(), found);
        Ok(account)
    }

    /// The delivery identity of an account this expansion looked up: its uid, gid and
    /// supplementary groups (group 0 never).
    pub fn identity(&self, account: &Account) -> Identity {
        let groups = self
            .seen
            .get(&account.name)
            .and_then(Option::as_ref)
            .map(|u| u.groups.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|g| *g != 0)
            .take(MAX_GROUPS)
            .collect();
        Identity {
            uid: account.uid,
            gid: account.gid,
            groups,
        }
    }
}
