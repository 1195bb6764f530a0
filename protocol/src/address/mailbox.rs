//! `Mailbox` (RFC 5321 section 4.1.2): `local-part@domain` or
//! `local-part@[address-literal]`, with a Dot-string or Quoted-string local part.
//!
//! Trusts: nothing. The local part is kept decoded (quotes and quoted-pairs removed)
//! and is case-sensitive, as the RFC says; `Display` re-quotes it when it is not a
//! Dot-string, so `Mailbox::parse(&m.to_string(), ..)` gives `m` back.

use std::fmt::{self, Write as _};

use serde::{Serialize, Serializer};

use super::path::MAX_PATH_LEN;
use super::{allowed_non_ascii, first_non_ascii, AddressError, Host};
use crate::codec::deserialize_validated;

/// RFC 5321 section 4.5.3.1.1: the longest local part SMTP must handle.
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// A mailbox must fit in a path, which adds the two angle brackets.
pub const MAX_MAILBOX_LEN: usize = MAX_PATH_LEN - 2;

/// An RFC 5321 mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mailbox {
    /// Decoded: without surrounding quotes or quoted-pair backslashes.
    local: String,
    host: Host,
}

impl Mailbox {
    /// Parses `local-part@domain` (no angle brackets); `utf8` allows SMTPUTF8
    /// characters in the local part and U-labels in the domain.
    pub fn parse(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
        if s.len() > MAX_MAILBOX_LEN {
            return Err(AddressError::MailboxTooLong { len: s.len() });
        }
        if !utf8 {
            if let Some(offset) = first_non_ascii(s) {
                return Err(AddressError::NonAscii {
                    what: "mailbox",
                    offset,
                });
            }
        }
        let (local, raw_len) = if s.starts_with('"') {
            parse_quoted(s)?
        } else {
            parse_dot_string(s)?
        };
        if raw_len > MAX_LOCAL_PART_LEN {
            return Err(AddressError::LocalPartTooLong { len: raw_len });
        }
        let host = s[raw_len..]
            .strip_prefix('@')
            .ok_or(AddressError::MissingAt)?;
        let host = Host::parse(host, utf8)?;
        Ok(Mailbox { local, host })
    }

    /// Builds a mailbox from a decoded local part (any printable text; it is quoted
    /// on display when needed) and a host.
    pub fn from_parts(local_part: &str, host: Host, utf8: bool) -> Result<Mailbox, AddressError> {
        if !utf8 {
            if let Some(offset) = first_non_ascii(local_part) {
                return Err(AddressError::NonAscii {
                    what: "local part",
                    offset,
                });
            }
        }
        if let Some((offset, ch)) = local_part
            .char_indices()
            .find(|&(_, ch)| !(is_printable_ascii(ch) || allowed_non_ascii(ch)))
        {
            return Err(AddressError::LocalPartChar { offset, ch });
        }
        let local_len = encoded_len(local_part);
        if local_len > MAX_LOCAL_PART_LEN {
            return Err(AddressError::LocalPartTooLong { len: local_len });
        }
        let len = local_len + 1 + host.to_string().len();
        if len > MAX_MAILBOX_LEN {
            return Err(AddressError::MailboxTooLong { len });
        }
        Ok(Mailbox {
            local: local_part.to_owned(),
            host,
        })
    }

    /// The local part, decoded (no quotes, no quoted-pair backslashes).
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// What follows the `@`.
    pub fn domain(&self) -> &Host {
        &self.host
    }

    /// Whether the mailbox is all ASCII (usable without SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.host.is_ascii()
    }
}

/// `atext` of RFC 5322, plus non-ASCII under SMTPUTF8 (RFC 6531).
fn is_atext(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(ch) || allowed_non_ascii(ch)
}

fn is_printable_ascii(ch: char) -> bool {
    (' '..='~').contains(&ch)
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// Octets of the local part as `Display` writes it.
fn encoded_len(local: &str) -> usize {
    if is_dot_string(local) {
        local.len()
    } else {
        2 + local.len() + local.matches(['"', '\\']).count()
    }
}

/// Reads a Dot-string at the start of `s`; returns it and its length.
fn parse_dot_string(s: &str) -> Result<(String, usize), AddressError> {
    let end = match s
        .char_indices()
        .find(|&(_, ch)| !(is_atext(ch) || ch == '.'))
    {
        None => s.len(),
        Some((i, '@')) => i,
        Some((offset, ch)) => return Err(AddressError::LocalPartChar { offset, ch }),
    };
    let raw = &s[..end];
    if raw.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    let mut offset = 0;
    for atom in raw.split('.') {
        if atom.is_empty() {
            return Err(AddressError::LocalPartDot { offset });
        }
        offset += atom.len() + 1;
    }
    Ok((raw.to_owned(), end))
}

/// Reads a Quoted-string at the start of `s` (which starts with `"`); returns the
/// decoded content and the length including both quotes.
fn parse_quoted(s: &str) -> Result<(String, usize), AddressError> {
    let mut local = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, ch)) = chars.next() {
        match ch {
            '"' => return Ok((local, i + 1)),
            '\\' => match chars.next() {
                Some((_, escaped)) if is_printable_ascii(escaped) => local.push(escaped),
                Some((offset, ch)) => return Err(AddressError::LocalPartChar { offset, ch }),
                None => return Err(AddressError::UnterminatedQuote),
            },
            ch if is_printable_ascii(ch) || allowed_non_ascii(ch) => local.push(ch),
            ch => return Err(AddressError::LocalPartChar { offset: i, ch }),
        }
    }
    Err(AddressError::UnterminatedQuote)
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local) {
            f.write_str(&self.local)?;
        } else {
            f.write_char('"')?;
            for ch in self.local.chars() {
                if ch == '"' || ch == '\\' {
                    f.write_char('\\')?;
                }
                f.write_char(ch)?;
            }
            f.write_char('"')?;
        }
        write!(f, "@{}", self.host)
    }
}

impl Serialize for Mailbox {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

// As for `Domain`: SMTPUTF8 was decided in the session that accepted the address.
deserialize_validated!(Mailbox, String, |s| Mailbox::parse(&s, true));

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::mailbox;

    fn err(s: &str, utf8: bool) -> AddressError {
        Mailbox::parse(s, utf8).unwrap_err()
    }

    #[test]
    fn parses_dot_strings() {
        let m = Mailbox::parse("first.last@Sub.Example.org", false).unwrap();
        assert_eq!(m.local_part(), "first.last");
        assert_eq!(m.domain().to_string(), "Sub.Example.org");
        assert_eq!(m.to_string(), "first.last@Sub.Example.org");
        assert!(Mailbox::parse("!#$%&'*+-/=?^_`{|}~@example.test", false).is_ok());
    }

    #[test]
    fn parses_quoted_strings_and_requotes_only_when_needed() {
        let m = Mailbox::parse(r#""a\"b\\c"@example.test"#, false).unwrap();
        assert_eq!(m.local_part(), r#"a"b\c"#);
        assert_eq!(m.to_string(), r#""a\"b\\c"@example.test"#);

        let m = Mailbox::parse(r#""quoted local"@example.test"#, false).unwrap();
        assert_eq!(m.local_part(), "quoted local");
        assert_eq!(m.to_string(), r#""quoted local"@example.test"#);

        let m = Mailbox::parse(r#""plain"@example.test"#, false).unwrap();
        assert_eq!(m.to_string(), "plain@example.test");
        assert_eq!(m, Mailbox::parse("plain@example.test", false).unwrap());

        let m = Mailbox::parse(r#""\p\l\a\i\n"@example.test"#, false).unwrap();
        assert_eq!(m.local_part(), "plain");

        let m = Mailbox::parse(r#""a..b"@example.test"#, false).unwrap();
        assert_eq!(m.to_string(), r#""a..b"@example.test"#);

        let m = Mailbox::parse(r#"""@example.test"#, false).unwrap();
        assert_eq!(m.local_part(), "");
        assert_eq!(m.to_string(), r#"""@example.test"#);
    }

    #[test]
    fn parses_literals_and_compares_domains_case_insensitively() {
        assert!(Mailbox::parse("user@[192.0.2.1]", false).is_ok());
        assert!(Mailbox::parse("user@[IPv6:2001:db8::1]", false).is_ok());
        assert_eq!(
            Mailbox::parse("user@EXAMPLE.test", false).unwrap(),
            Mailbox::parse("user@example.test", false).unwrap()
        );
        assert_ne!(
            Mailbox::parse("User@example.test", false).unwrap(),
            Mailbox::parse("user@example.test", false).unwrap()
        );
    }

    #[test]
    fn refuses_a_missing_or_empty_local_part() {
        assert_eq!(err("@example.test", false), AddressError::EmptyLocalPart);
        assert_eq!(err("", false), AddressError::EmptyLocalPart);
        assert_eq!(err("postmaster", false), AddressError::MissingAt);
        assert_eq!(err(r#""a"b@example.test"#, false), AddressError::MissingAt);
    }

    #[test]
    fn refuses_a_missing_domain() {
        assert_eq!(err("user@", false), AddressError::EmptyDomain);
        assert!(matches!(
            err("user@exa_mple.test", false),
            AddressError::DomainChar { .. }
        ));
        assert!(matches!(
            err("user@-bad-.example", false),
            AddressError::LabelHyphen { .. }
        ));
        assert!(matches!(
            err("a@b@c", false),
            AddressError::DomainChar { .. }
        ));
    }

    #[test]
    fn refuses_empty_atoms() {
        assert_eq!(
            err("a..b@example.test", false),
            AddressError::LocalPartDot { offset: 2 }
        );
        assert_eq!(
            err(".a@example.test", false),
            AddressError::LocalPartDot { offset: 0 }
        );
        assert_eq!(
            err("a.@example.test", false),
            AddressError::LocalPartDot { offset: 2 }
        );
    }

    #[test]
    fn refuses_bad_local_part_characters() {
        for s in [
            "a b@example.test",
            "a\"b@example.test",
            "<a@example.test",
            "a,b@x",
            "a\0b@x",
        ] {
            assert!(
                matches!(err(s, false), AddressError::LocalPartChar { .. }),
                "{s:?}"
            );
        }
        // Quoted strings allow neither controls nor quoted-pairs of controls.
        for s in ["\"a\rb\"@x", "\"a\\\rb\"@x", "\"a\tb\"@x"] {
            assert!(
                matches!(err(s, false), AddressError::LocalPartChar { .. }),
                "{s:?}"
            );
        }
        assert!(matches!(
            err("\"a\u{85}\"@x", true),
            AddressError::LocalPartChar { .. }
        ));
        assert!(matches!(
            err("a\u{2028}@x", true),
            AddressError::LocalPartChar { .. }
        ));
    }

    #[test]
    fn refuses_unterminated_quotes() {
        assert_eq!(
            err("\"abc@example.test", false),
            AddressError::UnterminatedQuote
        );
        assert_eq!(err("\"abc\\", false), AddressError::UnterminatedQuote);
    }

    #[test]
    fn refuses_a_local_part_over_64_octets() {
        let ok = format!("{}@example.test", "a".repeat(64));
        assert!(Mailbox::parse(&ok, false).is_ok());
        let long = format!("{}@example.test", "a".repeat(65));
        assert_eq!(
            err(&long, false),
            AddressError::LocalPartTooLong { len: 65 }
        );
        // The limit counts the quoted form as received.
        let quoted = format!("\"{}\"@example.test", "a".repeat(63));
        assert_eq!(
            err(&quoted, false),
            AddressError::LocalPartTooLong { len: 65 }
        );
    }

    #[test]
    fn refuses_a_mailbox_over_254_octets() {
        let domain = format!(
            "{}.{}.{}.{}",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63),
            "e".repeat(50)
        );
        let ok = format!(
            "{}@{domain}",
            "a".repeat(MAX_MAILBOX_LEN - 1 - domain.len())
        );
        assert_eq!(ok.len(), MAX_MAILBOX_LEN);
        assert!(Mailbox::parse(&ok, false).is_ok());
        let long = format!("a{ok}");
        assert_eq!(err(&long, false), AddressError::MailboxTooLong { len: 255 });
    }

    #[test]
    fn smtputf8_local_parts_only_with_the_flag() {
        assert_eq!(
            err("jürgen@example.test", false),
            AddressError::NonAscii {
                what: "mailbox",
                offset: 1
            }
        );
        let m = Mailbox::parse("jürgen@bücher.example", true).unwrap();
        assert_eq!(m.local_part(), "jürgen");
        assert!(!m.is_ascii());
        assert!(Mailbox::parse("\"j ü\"@example.test", true).is_ok());
        // A quoted-pair is ASCII only, even under SMTPUTF8.
        assert!(matches!(
            err("\"\\ü\"@example.test", true),
            AddressError::LocalPartChar { .. }
        ));
    }

    #[test]
    fn from_parts_quotes_and_checks() {
        let host = Host::parse("example.test", false).unwrap();
        let m = Mailbox::from_parts("a b", host.clone(), false).unwrap();
        assert_eq!(m.to_string(), "\"a b\"@example.test");
        assert_eq!(Mailbox::parse(&m.to_string(), false).unwrap(), m);
        assert!(matches!(
            Mailbox::from_parts("a\nb", host.clone(), false),
            Err(AddressError::LocalPartChar { offset: 1, .. })
        ));
        assert!(matches!(
            Mailbox::from_parts("ü", host.clone(), false),
            Err(AddressError::NonAscii { .. })
        ));
        // 63 octets plus the two quotes that the space requires.
        let spaced = format!("{} ", "a".repeat(62));
        assert_eq!(
            Mailbox::from_parts(&spaced, host, false),
            Err(AddressError::LocalPartTooLong { len: 65 })
        );
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(m in mailbox()) {
            let text = m.to_string();
            let again = Mailbox::parse(&text, true).unwrap();
            prop_assert_eq!(again.local_part(), m.local_part());
            prop_assert_eq!(&again, &m);
            prop_assert_eq!(again.to_string(), text);
        }

        #[test]
        fn postcard_round_trip(m in mailbox()) {
            let bytes = postcard::to_allocvec(&m).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Mailbox>(&bytes).unwrap(), m);
        }
    }
}
