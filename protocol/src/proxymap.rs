//! The `proxymap` edge: smtpd (a local recipient at `RCPT`) and `local` (a recipient's account
//! and groups) ask the read-only lookup service for one entry of the accounts database, and it
//! answers from `local_passwd_file` / `local_group_file`, read at the time of the question.
//!
//! Trusts: nothing, in either direction. A client may have been subverted by a remote SMTP
//! client, so a key is a bounded, non-empty name without `:`, `/`, NUL or any control
//! character (it cannot address another file or another field); an answer comes from a
//! process that parses files a local user controls fields of (`chfn`), so every string of it
//! is bounded, free of control characters and `:`, and a home is absolute.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::codec::{deserialize_validated, InvalidValue, Message};

/// Longest key (a local part is at most 64 octets by RFC 5321; a passwd name is shorter).
pub const MAX_KEY: usize = 256;
/// Longest home or shell path in an answer.
pub const MAX_PATH: usize = 4096;
/// Longest temporary-failure reason.
pub const MAX_REASON: usize = 512;
/// Supplementary groups in an answer (as `local`'s `users::MAX_GROUPS` keeps; more are cut
/// by the server, first ones in file order).
pub const MAX_GROUPS: usize = 64;

/// Why a lookup message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("a lookup key is empty")]
    EmptyKey,
    #[error("a lookup key has a ':', '/', NUL or control character")]
    BadKey,
    #[error("an account field has a ':' or control character")]
    BadField,
    #[error("an account's home is not an absolute path")]
    RelativeHome,
}

impl From<LookupError> for InvalidValue {
    fn from(e: LookupError) -> InvalidValue {
        InvalidValue::Proxymap(e)
    }
}

/// A name to look up: non-empty, at most [`MAX_KEY`] octets, no `:`, `/`, NUL or control
/// character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Key(BoundedString<MAX_KEY>);

impl Key {
    pub fn new(name: &str) -> Result<Key, InvalidValue> {
        if name.is_empty() {
            return Err(LookupError::EmptyKey.into());
        }
        if name.chars().any(|c| c == ':' || c == '/' || c.is_control()) {
            return Err(LookupError::BadKey.into());
        }
        let text = BoundedString::try_from(name).map_err(|_| LookupError::BadKey)?;
        Ok(Key(text))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

deserialize_validated!(Key, BoundedString<MAX_KEY>, |s| Key::new(s.as_str()));

/// Which database a lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Table {
    /// `local_passwd_file`, by user name (Postfix's `unix:passwd.byname`).
    Passwd,
    /// `local_group_file`: the groups that list the key (a user name) as a member.
    GroupsOf,
}

/// From a client (smtpd, local) to proxymap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToProxymap {
    Lookup { table: Table, key: Key },
}

type Field = BoundedString<MAX_KEY>;
type PathText = BoundedString<MAX_PATH>;

/// One passwd entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: Field,
    pub uid: u32,
    pub gid: u32,
    pub home: PathText,
    pub shell: PathText,
}

/// From proxymap to its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromProxymap {
    /// The account of a `Passwd` lookup.
    Account(Account),
    /// The supplementary groups of a `GroupsOf` lookup (possibly none).
    Groups(BoundedVec<u32, MAX_GROUPS>),
    /// No such entry: the file was read and does not have it.
    NotFound,
    /// The file could not be read now; never "not found".
    TempFail(BoundedString<MAX_REASON>),
}

fn clean(text: &str) -> bool {
    !text.chars().any(|c| c == ':' || c.is_control())
}

impl Message for ToProxymap {
    fn kind(&self) -> &'static str {
        match self {
            ToProxymap::Lookup { .. } => "Lookup",
        }
    }
}

impl Message for FromProxymap {
    fn kind(&self) -> &'static str {
        match self {
            FromProxymap::Account(_) => "Account",
            FromProxymap::Groups(_) => "Groups",
            FromProxymap::NotFound => "NotFound",
            FromProxymap::TempFail(_) => "TempFail",
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            FromProxymap::Account(a) => {
                // The name is a key the client could have asked for.
                Key::new(a.name.as_str())?;
                if !clean(&a.home) || !clean(&a.shell) {
                    return Err(LookupError::BadField.into());
                }
                if !a.home.starts_with('/') {
                    return Err(LookupError::RelativeHome.into());
                }
                Ok(())
            }
            FromProxymap::TempFail(why) if why.chars().any(char::is_control) => {
                Err(LookupError::BadField.into())
            }
            FromProxymap::Groups(_) | FromProxymap::NotFound | FromProxymap::TempFail(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode, DecodeError};

    fn account(name: &str, home: &str) -> FromProxymap {
        FromProxymap::Account(Account {
            name: name.try_into().unwrap(),
            uid: 1000,
            gid: 1000,
            home: home.try_into().unwrap(),
            shell: "/bin/sh".try_into().unwrap(),
        })
    }

    #[test]
    fn lookups_and_answers_round_trip() {
        let q = ToProxymap::Lookup {
            table: Table::Passwd,
            key: Key::new("alice").unwrap(),
        };
        assert_eq!(decode::<ToProxymap>(&encode(&q).unwrap()).unwrap(), q);
        for a in [
            account("alice", "/home/alice"),
            FromProxymap::Groups(vec![8, 50].try_into().unwrap()),
            FromProxymap::NotFound,
            FromProxymap::TempFail("cannot read /etc/passwd".try_into().unwrap()),
        ] {
            assert_eq!(decode::<FromProxymap>(&encode(&a).unwrap()).unwrap(), a);
        }
    }

    #[test]
    fn bad_keys_and_bad_answers_are_refused_on_both_sides() {
        for bad in [
            "",
            "a:b",
            "../etc/shadow",
            "a\0b",
            "a\nb",
            &"x".repeat(MAX_KEY + 1),
        ] {
            assert!(Key::new(bad).is_err(), "{bad:?}");
            // A peer that skips the constructor is refused by the decoder.
            let raw = postcard::to_allocvec(&(0u8, 0u8, bad)).unwrap();
            assert!(decode::<ToProxymap>(&raw).is_err(), "{bad:?}");
        }
        for bad in [
            account("alice", "relative/home"),
            account("alice", "/home/a:b"),
            account("al:ice", "/home/alice"),
            account("alice", "/home/a\nb"),
        ] {
            assert!(encode(&bad).is_err(), "{bad:?}");
            let raw = postcard::to_allocvec(&bad).unwrap();
            assert!(
                matches!(decode::<FromProxymap>(&raw), Err(DecodeError::Invalid(_))),
                "{bad:?}"
            );
        }
        let too_many: Vec<u32> = (0..=MAX_GROUPS as u32).collect();
        let raw = postcard::to_allocvec(&(1u8, too_many)).unwrap();
        assert!(matches!(
            decode::<FromProxymap>(&raw),
            Err(DecodeError::OverBound(_))
        ));
    }
}
