//! Domain lists: `mydestination`, `virtual_mailbox_domains`, `relay_domains`.
//!
//! Trusts: the list to be the administrator's; every element must be a valid
//! domain name or a `.parent` pattern, else the whole list is refused.
//!
//! Matching is Postfix's with `compatibility_level = 2` or later (the default
//! since Postfix 3.0), where `parent_domain_matches_subdomains` is empty:
//! `example.com` matches that domain only, and `.example.com` matches every
//! subdomain of it (`a.example.com`, `a.b.example.com`) but not `example.com`
//! itself. The older behaviour, in which `example.com` in `relay_domains` also
//! matched its subdomains, is available as [`DomainList::parse_parent_matches_subdomains`].
//!
//! Names are compared case-insensitively in ASCII. A U-label and its A-label
//! (`bücher.example`, `xn--bcher-kva.example`) are different names here: list
//! both if both may arrive. `/file/name` and `!negation` elements, which Postfix
//! also allows, are refused for now; `type:table` elements are refused by
//! [`DomainList::parse`] and accepted by [`DomainList::from_elements_with_tables`],
//! which reads them (see [`crate::table`]).
//!
//! A table element matches a domain that is a key of the table (Postfix's rule:
//! `example.com  anything`) and also the domain of every `user@domain` or
//! `@domain` key. The second half is Postern's: it makes Postfix's default
//! `virtual_mailbox_domains = $virtual_mailbox_maps` mean "the domains that have
//! mailboxes in the table", where Postfix would match none unless the table also
//! lists each domain as a key of its own.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use protocol::address::{AddressError, Domain, Host};

use crate::table::{is_table_reference, TableError, TableRef};
use crate::{list_elements, unsupported_form};

/// Why a domain list is refused; each names the element at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainListError {
    #[error("domain list element {element:?} is not a domain name: {reason}")]
    BadDomain {
        element: String,
        reason: AddressError,
    },
    #[error("domain list element {element:?}: {what} are not supported")]
    Unsupported { element: String, what: &'static str },
    #[error("domain list: {0}")]
    Table(#[from] TableError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Matches the name itself and, when the list says so, its subdomains.
    Name(Domain),
    /// `.parent`: matches every subdomain of `parent`, not `parent` itself.
    Subdomains(Domain),
    /// A lookup table's domains (see the module header), lower case.
    Table {
        element: String,
        domains: BTreeSet<String>,
    },
}

/// A parsed domain list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainList {
    patterns: Vec<Pattern>,
    parent_matches_subdomains: bool,
}

impl DomainList {
    /// Parses a list value (elements separated by commas and/or white space).
    pub fn parse(list: &str) -> Result<DomainList, DomainListError> {
        DomainList::from_elements(list_elements(list))
    }

    /// Parses a list in which `example.com` also matches its subdomains, as
    /// Postfix's `parent_domain_matches_subdomains` made `relay_domains` behave
    /// before `compatibility_level = 2`.
    pub fn parse_parent_matches_subdomains(list: &str) -> Result<DomainList, DomainListError> {
        let mut parsed = DomainList::parse(list)?;
        parsed.parent_matches_subdomains = true;
        Ok(parsed)
    }

    /// Parses elements already split, as `conf`'s `get_list` returns them.
    pub fn from_elements<'a>(
        elements: impl IntoIterator<Item = &'a str>,
    ) -> Result<DomainList, DomainListError> {
        let patterns = elements
            .into_iter()
            .map(parse_pattern)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DomainList {
            patterns,
            parent_matches_subdomains: false,
        })
    }

    /// Parses elements in which a lookup table (`texthash:/path`, `hash:/path`) stands
    /// for the domains it names; each table is read through `open` (normally
    /// `std::fs::File::open`). A bare `/file/name` is, in a Postfix domain list, a file
    /// of patterns rather than a table, and stays refused.
    pub fn from_elements_with_tables<'a, R: Read>(
        elements: impl IntoIterator<Item = &'a str>,
        mut open: impl FnMut(&Path) -> io::Result<R>,
    ) -> Result<DomainList, DomainListError> {
        let mut patterns = Vec::new();
        for element in elements {
            if is_table_reference(element) && !element.starts_with('/') {
                let table = TableRef::parse(element)?.load(&mut open)?;
                patterns.push(Pattern::Table {
                    element: element.to_owned(),
                    domains: table.domains(),
                });
            } else {
                patterns.push(parse_pattern(element)?);
            }
        }
        Ok(DomainList {
            patterns,
            parent_matches_subdomains: false,
        })
    }

    /// Whether `domain` matches one of the patterns.
    pub fn matches(&self, domain: &Domain) -> bool {
        let name = domain.normalized();
        self.patterns.iter().any(|pattern| match pattern {
            Pattern::Name(d) => {
                name == d.normalized()
                    || (self.parent_matches_subdomains && is_subdomain(name, d.normalized()))
            }
            Pattern::Subdomains(parent) => is_subdomain(name, parent.normalized()),
            Pattern::Table { domains, .. } => domains.contains(name),
        })
    }

    /// Whether the host part of an address matches: address literals never do.
    pub fn matches_host(&self, host: &Host) -> bool {
        host.domain().is_some_and(|d| self.matches(d))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// `name` is a proper subdomain of `parent` (both normalized).
fn is_subdomain(name: &str, parent: &str) -> bool {
    name.len() > parent.len() + 1
        && name.ends_with(parent)
        && name.as_bytes()[name.len() - parent.len() - 1] == b'.'
}

fn parse_pattern(element: &str) -> Result<Pattern, DomainListError> {
    if let Some(what) = unsupported_form(element) {
        return Err(DomainListError::Unsupported {
            element: element.to_owned(),
            what,
        });
    }
    if element.starts_with('[') {
        return Err(DomainListError::Unsupported {
            element: element.to_owned(),
            what: "address literals",
        });
    }
    let (name, pattern): (&str, fn(Domain) -> Pattern) = match element.strip_prefix('.') {
        Some(parent) => (parent, Pattern::Subdomains),
        None => (element, Pattern::Name),
    };
    Domain::parse(name, true)
        .map(pattern)
        .map_err(|reason| DomainListError::BadDomain {
            element: element.to_owned(),
            reason,
        })
}

impl fmt::Display for DomainList {
    /// The patterns as written, separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pattern) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match pattern {
                Pattern::Name(d) => write!(f, "{d}")?,
                Pattern::Subdomains(d) => write!(f, ".{d}")?,
                Pattern::Table { element, .. } => f.write_str(element)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(s: &str) -> Domain {
        Domain::parse(s, true).unwrap()
    }

    #[test]
    fn exact_names_match_only_themselves_in_any_case() {
        let list = DomainList::parse("example.com, localhost\tMail.Example.Org").unwrap();
        for yes in [
            "example.com",
            "EXAMPLE.com",
            "localhost",
            "mail.example.org",
        ] {
            assert!(list.matches(&domain(yes)), "{yes}");
        }
        for no in [
            "sub.example.com",
            "example.co",
            "xexample.com",
            "example.org",
            "com",
        ] {
            assert!(!list.matches(&domain(no)), "{no}");
        }
    }

    #[test]
    fn dot_patterns_match_subdomains_only() {
        let list = DomainList::parse(".example.com").unwrap();
        for yes in ["a.example.com", "a.b.example.com", "A.EXAMPLE.COM"] {
            assert!(list.matches(&domain(yes)), "{yes}");
        }
        for no in ["example.com", "aexample.com", "example.com.evil.test"] {
            assert!(!list.matches(&domain(no)), "{no}");
        }
        let both = DomainList::parse("example.com .example.com").unwrap();
        assert!(both.matches(&domain("example.com")) && both.matches(&domain("x.example.com")));
    }

    #[test]
    fn parent_matches_subdomains_when_asked() {
        let list = DomainList::parse_parent_matches_subdomains("example.com").unwrap();
        assert!(list.matches(&domain("example.com")));
        assert!(list.matches(&domain("a.b.example.com")));
        assert!(!list.matches(&domain("badexample.com")));
        assert!(!DomainList::parse("example.com")
            .unwrap()
            .matches(&domain("a.example.com")));
    }

    #[test]
    fn literals_never_match() {
        let list = DomainList::parse("example.com").unwrap();
        assert!(list.matches_host(&Host::parse("example.com", false).unwrap()));
        assert!(!list.matches_host(&Host::parse("[192.0.2.1]", false).unwrap()));
    }

    #[test]
    fn u_labels_are_names_like_any_other() {
        let list = DomainList::parse("bücher.example").unwrap();
        assert!(list.matches(&domain("bücher.example")));
        assert!(!list.matches(&domain("xn--bcher-kva.example")));
    }

    #[test]
    fn errors_name_the_element() {
        for (element, unsupported) in [
            ("hash:/etc/postern/relay_domains", true),
            ("/etc/postern/domains", true),
            ("!example.net", true),
            ("[192.0.2.1]", true),
            ("exa_mple.com", false),
            ("..example.com", false),
            ("-bad.example", false),
            ("example.com.", false),
        ] {
            let list = format!("good.example {element}");
            let got = DomainList::parse(&list).unwrap_err();
            match &got {
                DomainListError::Unsupported { element: e, .. } => {
                    assert!(unsupported, "{element}");
                    assert_eq!(e, element);
                }
                DomainListError::BadDomain { element: e, .. } => {
                    assert!(!unsupported, "{element}");
                    assert_eq!(e, element);
                }
                DomainListError::Table(e) => panic!("{e}"),
            }
            assert!(got.to_string().contains(element), "{got}");
        }
    }

    #[test]
    fn tables_stand_for_their_domains() {
        let open = |path: &Path| -> io::Result<&'static [u8]> {
            match path.to_str() {
                Some("/etc/vmailbox") => {
                    Ok(b"u@Hosted.Example h/u/\n@catchall.example c/\nlisted.example x\n")
                }
                _ => Err(io::Error::from(io::ErrorKind::NotFound)),
            }
        };
        let list = DomainList::from_elements_with_tables(
            ["plain.example", "texthash:/etc/vmailbox"],
            open,
        )
        .unwrap();
        for yes in [
            "plain.example",
            "hosted.example",
            "catchall.example",
            "listed.example",
        ] {
            assert!(list.matches(&domain(yes)), "{yes}");
        }
        for no in ["sub.hosted.example", "example", "other.example"] {
            assert!(!list.matches(&domain(no)), "{no}");
        }
        assert_eq!(list.to_string(), "plain.example texthash:/etc/vmailbox");
        let err = DomainList::from_elements_with_tables(["hash:/missing"], open).unwrap_err();
        assert!(err.to_string().contains("/missing"), "{err}");
        let err = DomainList::from_elements_with_tables(["regexp:/x"], open).unwrap_err();
        assert!(matches!(
            err,
            DomainListError::Table(TableError::UnsupportedType { .. })
        ));
        // The plain parser still refuses tables.
        assert!(DomainList::parse("hash:/etc/vmailbox").is_err());
    }

    #[test]
    fn empty_and_display() {
        assert!(DomainList::parse("").unwrap().is_empty());
        let list = DomainList::parse("a.example,.b.example").unwrap();
        assert_eq!(list.to_string(), "a.example .b.example");
        assert_eq!(DomainList::parse(&list.to_string()).unwrap(), list);
    }
}
