//! `ServiceName`: the name of a `master.cf` service as it travels between processes
//! (`Connect { service }`, log prefixes).
//!
//! Trusts: nothing. The character set keeps a name safe in a log line, a file name
//! and a process title: lowercase letters, digits, `.`, `_` and `-`, starting with a
//! letter or digit (so never `.`, `..` or an option-like `-x`).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::codec::deserialize_validated;

/// Longer than any Postfix service name in use, short enough for a log prefix.
pub const MAX_SERVICE_NAME_LEN: usize = 32;

/// Why a string is not a service name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    #[error("service name is empty")]
    Empty,
    #[error("service name is {len} octets, more than {MAX_SERVICE_NAME_LEN}")]
    TooLong { len: usize },
    #[error("service name must start with a lowercase letter or digit")]
    BadFirst,
    #[error("character {ch:?} at octet {offset} is not allowed in a service name")]
    BadChar { offset: usize, ch: char },
}

/// A `master.cf` service name: `[a-z0-9][a-z0-9._-]*`, at most 32 octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check(s: &str) -> Result<(), ServiceNameError> {
        let first = s.chars().next().ok_or(ServiceNameError::Empty)?;
        if s.len() > MAX_SERVICE_NAME_LEN {
            return Err(ServiceNameError::TooLong { len: s.len() });
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(ServiceNameError::BadFirst);
        }
        match s.char_indices().find(|&(_, ch)| {
            !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'))
        }) {
            Some((offset, ch)) => Err(ServiceNameError::BadChar { offset, ch }),
            None => Ok(()),
        }
    }
}

impl TryFrom<String> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(s: String) -> Result<Self, ServiceNameError> {
        Self::check(&s)?;
        Ok(ServiceName(s))
    }
}

impl TryFrom<&str> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(s: &str) -> Result<Self, ServiceNameError> {
        Self::check(s)?;
        Ok(ServiceName(s.to_owned()))
    }
}

impl FromStr for ServiceName {
    type Err = ServiceNameError;
    fn from_str(s: &str) -> Result<Self, ServiceNameError> {
        ServiceName::try_from(s)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ServiceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

deserialize_validated!(ServiceName, String, ServiceName::try_from);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::service_name;

    #[test]
    fn accepts_master_cf_names() {
        for s in [
            "smtpd",
            "cleanup",
            "qmgr",
            "smtp-amavis",
            "relay.2",
            "127_x",
            "a",
        ] {
            assert_eq!(ServiceName::try_from(s).unwrap().as_str(), s);
        }
        assert!(ServiceName::try_from("a".repeat(32)).is_ok());
    }

    #[test]
    fn refuses_bad_names() {
        use ServiceNameError::*;
        for (s, e) in [
            ("", Empty),
            ("-x", BadFirst),
            (".", BadFirst),
            ("_a", BadFirst),
            ("Smtpd", BadFirst),
            ("smtpD", BadChar { offset: 4, ch: 'D' }),
            ("smtp d", BadChar { offset: 4, ch: ' ' }),
            ("a/b", BadChar { offset: 1, ch: '/' }),
            (
                "a\nb",
                BadChar {
                    offset: 1,
                    ch: '\n',
                },
            ),
            (
                "aé",
                BadChar {
                    offset: 1, ch: 'é'
                },
            ),
        ] {
            assert_eq!(ServiceName::try_from(s), Err(e), "{s:?}");
        }
        assert_eq!(
            ServiceName::try_from("a".repeat(33)),
            Err(TooLong { len: 33 })
        );
    }

    #[test]
    fn decoding_validates() {
        let bytes = postcard::to_allocvec("../etc").unwrap();
        assert!(postcard::from_bytes::<ServiceName>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(name in service_name()) {
            let bytes = postcard::to_allocvec(&name).unwrap();
            prop_assert_eq!(postcard::from_bytes::<ServiceName>(&bytes).unwrap(), name.clone());
            prop_assert_eq!(name.as_str().parse::<ServiceName>().unwrap(), name);
        }
    }
}
