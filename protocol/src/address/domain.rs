//! `Domain` (RFC 5321 section 4.1.2, U-labels per RFC 6531), address literals
//! (section 4.1.3) and `Host`, the part of a mailbox after the `@`.
//!
//! Trusts: std's IPv4 and IPv6 parsers for the inside of an address literal.
//! Does not trust: anything else about the input; see the module above for the
//! character rules.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize, Serializer};

use super::{allowed_non_ascii, first_non_ascii, AddressError};
use crate::codec::deserialize_validated;

/// RFC 5321 section 4.5.3.1.2: the longest domain name SMTP must handle.
pub const MAX_DOMAIN_LEN: usize = 255;

/// RFC 1035 section 2.3.4: the longest label DNS can carry.
pub const MAX_LABEL_LEN: usize = 63;

/// Characters that IDNA maps to `.`; inside a label they would make a name that
/// displays with more labels than it has.
const IDNA_DOTS: [char; 3] = ['\u{3002}', '\u{FF0E}', '\u{FF61}'];

/// A domain name: dot-separated labels of letters, digits and inner hyphens, or
/// U-labels when SMTPUTF8 is in effect. Compares case-insensitively for ASCII.
#[derive(Clone)]
pub struct Domain {
    /// As received, for display.
    text: String,
    /// ASCII-lowercased, for comparison.
    normalized: String,
}

impl Domain {
    /// Parses `s` as an RFC 5321 `Domain`; `utf8` allows U-labels (SMTPUTF8).
    pub fn parse(s: &str, utf8: bool) -> Result<Domain, AddressError> {
        if s.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        if s.len() > MAX_DOMAIN_LEN {
            return Err(AddressError::DomainTooLong { len: s.len() });
        }
        if !utf8 {
            if let Some(offset) = first_non_ascii(s) {
                return Err(AddressError::NonAscii {
                    what: "domain",
                    offset,
                });
            }
        }
        let mut offset = 0;
        for (label, text) in s.split('.').enumerate() {
            check_label(text, label, offset)?;
            offset += text.len() + 1;
        }
        Ok(Domain {
            text: s.to_owned(),
            normalized: s.to_ascii_lowercase(),
        })
    }

    /// The name as it was received.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The name with ASCII letters lowercased: the form that comparisons use.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// Whether the name is all ASCII (usable without SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        self.text.is_ascii()
    }
}

fn check_label(text: &str, label: usize, offset: usize) -> Result<(), AddressError> {
    if text.is_empty() {
        return Err(AddressError::EmptyLabel { label });
    }
    if text.len() > MAX_LABEL_LEN {
        return Err(AddressError::LabelTooLong {
            label,
            len: text.len(),
        });
    }
    for (i, ch) in text.char_indices() {
        let allowed = ch.is_ascii_alphanumeric()
            || ch == '-'
            || (allowed_non_ascii(ch) && !IDNA_DOTS.contains(&ch));
        if !allowed {
            return Err(AddressError::DomainChar {
                offset: offset + i,
                ch,
            });
        }
    }
    if text.starts_with('-') || text.ends_with('-') {
        return Err(AddressError::LabelHyphen { label });
    }
    Ok(())
}

impl PartialEq for Domain {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for Domain {}

impl Hash for Domain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalized.hash(state);
    }
}

impl PartialOrd for Domain {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Domain {
    fn cmp(&self, other: &Self) -> Ordering {
        self.normalized.cmp(&other.normalized)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Domain").field(&self.text).finish()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

// A peer's domain was accepted under the SMTPUTF8 rules of its own session, so the
// wire form allows U-labels; every other rule applies.
deserialize_validated!(Domain, String, |s| Domain::parse(&s, true));

/// An RFC 5321 address literal: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AddressLiteral {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl AddressLiteral {
    /// The `IPv6:` tag; ABNF strings are case-insensitive.
    const IPV6_TAG: &'static str = "IPv6:";

    /// Parses `[IPv4]` or `[IPv6:IPv6]` with std's address parsers; refuses the
    /// general `[tag:content]` form.
    pub fn parse(s: &str) -> Result<AddressLiteral, AddressError> {
        let inner = s
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .ok_or(AddressError::LiteralBrackets)?;
        let tag_len = Self::IPV6_TAG.len();
        if inner.len() >= tag_len
            && inner.is_char_boundary(tag_len)
            && inner[..tag_len].eq_ignore_ascii_case(Self::IPV6_TAG)
        {
            return inner[tag_len..]
                .parse()
                .map(AddressLiteral::Ipv6)
                .map_err(|_| AddressError::BadIpv6Literal);
        }
        if inner.contains(':') {
            return Err(AddressError::GeneralLiteral);
        }
        inner
            .parse()
            .map(AddressLiteral::Ipv4)
            .map_err(|_| AddressError::BadIpv4Literal)
    }

    pub fn ip(&self) -> IpAddr {
        match *self {
            AddressLiteral::Ipv4(a) => IpAddr::V4(a),
            AddressLiteral::Ipv6(a) => IpAddr::V6(a),
        }
    }
}

impl fmt::Display for AddressLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressLiteral::Ipv4(a) => write!(f, "[{a}]"),
            AddressLiteral::Ipv6(a) => write!(f, "[{}{a}]", Self::IPV6_TAG),
        }
    }
}

/// What follows the `@` of a mailbox: a domain or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Host {
    Domain(Domain),
    Literal(AddressLiteral),
}

impl Host {
    /// Parses a domain, or an address literal if `s` starts with `[`.
    pub fn parse(s: &str, utf8: bool) -> Result<Host, AddressError> {
        if s.starts_with('[') {
            AddressLiteral::parse(s).map(Host::Literal)
        } else {
            Domain::parse(s, utf8).map(Host::Domain)
        }
    }

    pub fn domain(&self) -> Option<&Domain> {
        match self {
            Host::Domain(d) => Some(d),
            Host::Literal(_) => None,
        }
    }

    pub fn is_ascii(&self) -> bool {
        match self {
            Host::Domain(d) => d.is_ascii(),
            Host::Literal(_) => true,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => d.fmt(f),
            Host::Literal(l) => l.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::{ascii_domain, host, utf8_domain};

    fn err(s: &str, utf8: bool) -> AddressError {
        Domain::parse(s, utf8).unwrap_err()
    }

    #[test]
    fn accepts_rfc5321_domains() {
        for s in [
            "example.test",
            "a-b.c-d.example",
            "xn--bcher-kva.example",
            "localhost",
            "123.example",
            "a",
        ] {
            assert!(Domain::parse(s, false).is_ok(), "{s}");
        }
    }

    #[test]
    fn compares_ascii_case_insensitively_and_keeps_the_original() {
        let upper = Domain::parse("EXAMPLE.test", false).unwrap();
        let lower = Domain::parse("example.TEST", false).unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.to_string(), "EXAMPLE.test");
        assert_eq!(upper.normalized(), "example.test");
        let set: HashSet<_> = [upper, lower].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_ne!(
            Domain::parse("example.test", false).unwrap(),
            Domain::parse("example.tes", false).unwrap()
        );
    }

    #[test]
    fn refuses_empty_domain() {
        assert_eq!(err("", false), AddressError::EmptyDomain);
    }

    #[test]
    fn refuses_empty_labels() {
        assert_eq!(
            err(".example", false),
            AddressError::EmptyLabel { label: 0 }
        );
        assert_eq!(
            err("a..example", false),
            AddressError::EmptyLabel { label: 1 }
        );
        assert_eq!(err("a.b.", false), AddressError::EmptyLabel { label: 2 });
    }

    #[test]
    fn refuses_a_label_over_63_octets() {
        let ok = format!("{}.example", "a".repeat(63));
        assert!(Domain::parse(&ok, false).is_ok());
        let long = format!("{}.example", "a".repeat(64));
        assert_eq!(
            err(&long, false),
            AddressError::LabelTooLong { label: 0, len: 64 }
        );
    }

    #[test]
    fn refuses_a_domain_over_255_octets() {
        let label = "a".repeat(63);
        // 4 * 63 + 3 dots = 255.
        let ok = [label.as_str(); 4].join(".");
        assert_eq!(ok.len(), 255);
        assert!(Domain::parse(&ok, false).is_ok());
        let long = format!("b{ok}");
        assert_eq!(err(&long, false), AddressError::DomainTooLong { len: 256 });
    }

    #[test]
    fn refuses_hyphens_at_label_ends() {
        assert_eq!(
            err("-a.example", false),
            AddressError::LabelHyphen { label: 0 }
        );
        assert_eq!(
            err("a.example-", false),
            AddressError::LabelHyphen { label: 1 }
        );
    }

    #[test]
    fn refuses_bad_characters() {
        assert_eq!(
            err("exa_mple.test", false),
            AddressError::DomainChar { offset: 3, ch: '_' }
        );
        for s in ["a b", "a\0b", "a\r\nb", "a@b", "a>b", "[1.2.3.4"] {
            assert!(
                matches!(err(s, false), AddressError::DomainChar { .. }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn u_labels_only_with_smtputf8() {
        assert_eq!(
            err("bücher.example", false),
            AddressError::NonAscii {
                what: "domain",
                offset: 1
            }
        );
        let d = Domain::parse("Bücher.example", true).unwrap();
        assert!(!d.is_ascii());
        assert_eq!(d.normalized(), "bücher.example");
    }

    #[test]
    fn refuses_non_ascii_controls_spaces_and_dots() {
        for s in [
            "a\u{85}b.example",
            "a\u{a0}b.example",
            "a\u{2028}b.example",
            "a\u{3002}b",
            "a\u{ff0e}b",
        ] {
            assert!(
                matches!(err(s, true), AddressError::DomainChar { .. }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn accepts_address_literals() {
        assert_eq!(
            AddressLiteral::parse("[192.0.2.1]").unwrap(),
            AddressLiteral::Ipv4(Ipv4Addr::new(192, 0, 2, 1))
        );
        let v6 = AddressLiteral::parse("[IPv6:2001:db8::1]").unwrap();
        assert_eq!(v6.to_string(), "[IPv6:2001:db8::1]");
        assert_eq!(
            AddressLiteral::parse("[ipv6:::1]").unwrap().to_string(),
            "[IPv6:::1]"
        );
        assert!(AddressLiteral::parse("[IPv6:::ffff:192.0.2.1]").is_ok());
    }

    #[test]
    fn refuses_bad_literals() {
        use AddressError::*;
        for (s, e) in [
            ("192.0.2.1", LiteralBrackets),
            ("[192.0.2.1", LiteralBrackets),
            ("[256.0.0.1]", BadIpv4Literal),
            ("[192.0.2]", BadIpv4Literal),
            ("[]", BadIpv4Literal),
            ("[ 192.0.2.1]", BadIpv4Literal),
            ("[IPv6:2001:db8::g]", BadIpv6Literal),
            ("[IPv6:192.0.2.1]", BadIpv6Literal),
            ("[2001:db8::1]", GeneralLiteral),
            ("[x-tag:content]", GeneralLiteral),
        ] {
            assert_eq!(AddressLiteral::parse(s), Err(e), "{s}");
        }
    }

    #[test]
    fn host_dispatches_on_the_bracket() {
        assert!(matches!(
            Host::parse("[192.0.2.1]", false),
            Ok(Host::Literal(_))
        ));
        assert!(matches!(
            Host::parse("example.test", false),
            Ok(Host::Domain(_))
        ));
        assert!(Host::parse("[example.test]", false).is_err());
    }

    proptest! {
        #[test]
        fn domain_display_parse_round_trip(d in utf8_domain()) {
            let again = Domain::parse(&d.to_string(), true).unwrap();
            prop_assert_eq!(again.as_str(), d.as_str());
        }

        #[test]
        fn ascii_domain_parses_without_smtputf8(d in ascii_domain()) {
            prop_assert_eq!(Domain::parse(d.as_str(), false).unwrap(), d);
        }

        #[test]
        fn host_round_trips(h in host()) {
            prop_assert_eq!(Host::parse(&h.to_string(), true).unwrap(), h.clone());
            let bytes = postcard::to_allocvec(&h).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Host>(&bytes).unwrap(), h);
        }
    }
}
