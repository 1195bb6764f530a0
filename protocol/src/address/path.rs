//! `Path` (RFC 5321 section 4.1.2): `<mailbox>`, with an optional source route
//! (`<@relay1,@relay2:user@example.test>`) that is checked and then dropped, as
//! section 4.1.1.3 directs; `<>` (the null reverse-path); and `<Postmaster>`, the
//! only recipient that may lack a domain (section 4.1.1.3).
//!
//! Trusts: nothing. The 256-octet limit applies to the path as received, route
//! and brackets included.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{AddressError, Domain, Mailbox};

/// RFC 5321 section 4.5.3.1.3: the longest reverse- or forward-path, punctuation
/// included.
pub const MAX_PATH_LEN: usize = 256;

/// Any of the three path forms; MAIL and RCPT narrow it to [`ReversePath`] and
/// [`ForwardPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Path {
    /// `<>`
    Null,
    /// `<Postmaster>` (any case), without a domain.
    Postmaster,
    Mailbox(Mailbox),
}

/// Parses `<...>` as sent in MAIL FROM or RCPT TO; `utf8` when SMTPUTF8 is in effect.
pub fn parse_path(s: &str, utf8: bool) -> Result<Path, AddressError> {
    if s.len() > MAX_PATH_LEN {
        return Err(AddressError::PathTooLong { len: s.len() });
    }
    let inner = s
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .ok_or(AddressError::PathBrackets)?;
    if inner.is_empty() {
        return Ok(Path::Null);
    }
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok(Path::Postmaster);
    }
    let mailbox = if inner.starts_with('@') {
        skip_source_route(inner, utf8)?
    } else {
        inner
    };
    Mailbox::parse(mailbox, utf8).map(Path::Mailbox)
}

/// Checks `@domain,@domain:` and returns what follows the colon.
fn skip_source_route(s: &str, utf8: bool) -> Result<&str, AddressError> {
    let (route, rest) = s.split_once(':').ok_or(AddressError::BadSourceRoute)?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::BadSourceRoute)?;
        Domain::parse(domain, utf8).map_err(|_| AddressError::BadSourceRoute)?;
    }
    Ok(rest)
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Null => f.write_str("<>"),
            Path::Postmaster => f.write_str("<Postmaster>"),
            Path::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// The MAIL FROM path: a mailbox or the null path of bounces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

impl ReversePath {
    pub fn parse(s: &str, utf8: bool) -> Result<ReversePath, AddressError> {
        parse_path(s, utf8)?.try_into()
    }

    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }
}

impl TryFrom<Path> for ReversePath {
    type Error = AddressError;
    fn try_from(path: Path) -> Result<Self, AddressError> {
        match path {
            Path::Null => Ok(ReversePath::Null),
            Path::Mailbox(m) => Ok(ReversePath::Mailbox(m)),
            Path::Postmaster => Err(AddressError::PostmasterNotAllowed),
        }
    }
}

impl From<ReversePath> for Path {
    fn from(path: ReversePath) -> Path {
        match path {
            ReversePath::Null => Path::Null,
            ReversePath::Mailbox(m) => Path::Mailbox(m),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// The RCPT TO path: a mailbox or the bare `<Postmaster>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ForwardPath {
    Postmaster,
    Mailbox(Mailbox),
}

impl ForwardPath {
    pub fn parse(s: &str, utf8: bool) -> Result<ForwardPath, AddressError> {
        parse_path(s, utf8)?.try_into()
    }

    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(m) => Some(m),
        }
    }
}

impl TryFrom<Path> for ForwardPath {
    type Error = AddressError;
    fn try_from(path: Path) -> Result<Self, AddressError> {
        match path {
            Path::Postmaster => Ok(ForwardPath::Postmaster),
            Path::Mailbox(m) => Ok(ForwardPath::Mailbox(m)),
            Path::Null => Err(AddressError::NullPathNotAllowed),
        }
    }
}

impl From<ForwardPath> for Path {
    fn from(path: ForwardPath) -> Path {
        match path {
            ForwardPath::Postmaster => Path::Postmaster,
            ForwardPath::Mailbox(m) => Path::Mailbox(m),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<Postmaster>"),
            ForwardPath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::path;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse_path("<>", false), Ok(Path::Null));
        assert_eq!(parse_path("<Postmaster>", false), Ok(Path::Postmaster));
        assert_eq!(parse_path("<pOSTMASTER>", false), Ok(Path::Postmaster));
        let Ok(Path::Mailbox(m)) = parse_path("<user@example.test>", false) else {
            panic!("not a mailbox path");
        };
        assert_eq!(m.local_part(), "user");
        assert!(matches!(
            parse_path("<\"quoted string\"@example.test>", false),
            Ok(Path::Mailbox(_))
        ));
        assert!(matches!(
            parse_path("<user@[IPv6:2001:db8::1]>", false),
            Ok(Path::Mailbox(_))
        ));
    }

    #[test]
    fn drops_a_valid_source_route() {
        let routed = parse_path("<@relay1.example,@relay2.example:user@example.test>", false);
        assert_eq!(routed, parse_path("<user@example.test>", false));
        assert_eq!(routed.unwrap().to_string(), "<user@example.test>");
    }

    #[test]
    fn refuses_a_malformed_source_route() {
        for s in [
            "<@relay.example user@example.test>",
            "<@relay.example,user@example.test>",
            "<@:user@example.test>",
            "<@relay.example,:user@example.test>",
            "<@relay_1.example:user@example.test>",
            "<@[192.0.2.1]:user@example.test>",
            "<@relay.example,relay2.example:user@example.test>",
        ] {
            assert_eq!(
                parse_path(s, false),
                Err(AddressError::BadSourceRoute),
                "{s}"
            );
        }
        // A route does not make a bare Postmaster valid.
        assert_eq!(
            parse_path("<@relay.example:Postmaster>", false),
            Err(AddressError::MissingAt)
        );
    }

    #[test]
    fn refuses_missing_brackets() {
        for s in [
            "user@example.test",
            "<user@example.test",
            "user@example.test>",
            "<",
            "",
            " <>",
            "<> ",
        ] {
            assert_eq!(
                parse_path(s, false),
                Err(AddressError::PathBrackets),
                "{s:?}"
            );
        }
        assert!(matches!(
            parse_path("<<user@example.test>>", false),
            Err(AddressError::LocalPartChar { offset: 0, ch: '<' })
        ));
    }

    #[test]
    fn refuses_a_path_over_256_octets() {
        let route = format!("@{}.{}:", "r".repeat(63), "s".repeat(60));
        let mailbox = format!("{}@example.test", "a".repeat(64));
        let ok = format!("<{route}{mailbox}>");
        let padded = format!(
            "<{}{route}{mailbox}>",
            "@x,".repeat((MAX_PATH_LEN - ok.len()) / 3)
        );
        assert!(padded.len() <= MAX_PATH_LEN);
        assert!(parse_path(&padded, false).is_ok());
        let long = format!("<@y,{}", &padded[1..]);
        assert!(long.len() > MAX_PATH_LEN);
        assert_eq!(
            parse_path(&long, false),
            Err(AddressError::PathTooLong { len: long.len() })
        );
    }

    #[test]
    fn non_ascii_only_with_smtputf8() {
        assert!(matches!(
            parse_path("<jürgen@example.test>", false),
            Err(AddressError::NonAscii { .. })
        ));
        assert!(parse_path("<jürgen@example.test>", true).is_ok());
        assert_eq!(
            parse_path("<@bücher.example:user@example.test>", false),
            Err(AddressError::BadSourceRoute)
        );
    }

    #[test]
    fn mail_and_rcpt_narrow_the_path() {
        assert_eq!(ReversePath::parse("<>", false), Ok(ReversePath::Null));
        assert_eq!(
            ReversePath::parse("<Postmaster>", false),
            Err(AddressError::PostmasterNotAllowed)
        );
        assert_eq!(
            ForwardPath::parse("<postmaster>", false),
            Ok(ForwardPath::Postmaster)
        );
        assert_eq!(
            ForwardPath::parse("<>", false),
            Err(AddressError::NullPathNotAllowed)
        );
        let rcpt = ForwardPath::parse("<Postmaster@example.test>", false).unwrap();
        assert_eq!(rcpt.mailbox().unwrap().local_part(), "Postmaster");
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(p in path()) {
            prop_assert_eq!(parse_path(&p.to_string(), true).unwrap(), p.clone());
            let bytes = postcard::to_allocvec(&p).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Path>(&bytes).unwrap(), p);
        }

        #[test]
        fn narrowed_paths_round_trip(p in path()) {
            if let Ok(rev) = ReversePath::try_from(p.clone()) {
                prop_assert_eq!(ReversePath::parse(&rev.to_string(), true).unwrap(), rev.clone());
                prop_assert_eq!(Path::from(rev), p.clone());
            }
            if let Ok(fwd) = ForwardPath::try_from(p.clone()) {
                prop_assert_eq!(ForwardPath::parse(&fwd.to_string(), true).unwrap(), fwd.clone());
                prop_assert_eq!(Path::from(fwd), p);
            }
        }
    }
}
