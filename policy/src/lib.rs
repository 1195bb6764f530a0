//! Postern's policy decisions: pure functions of configuration and validated
//! values, with no I/O, so that every rule can be tested on its own and every
//! daemon that needs a decision makes the same one.
//!
//! Trusts: the configuration values it is given (already read and expanded by
//! `conf`) to be what the administrator wrote, and the addresses it is given to
//! be validated by `protocol`. Does not trust: the configuration to be free of
//! mistakes; every list element that is not understood is an error naming it,
//! never silently skipped, because a skipped `mynetworks` entry or relay domain
//! changes who may relay.

#![forbid(unsafe_code)]

pub mod aliases;
pub mod domains;
pub mod fuzz;
pub mod networks;
pub mod passwd;
pub mod relay;
pub mod table;

pub use domains::{DomainList, DomainListError};
pub use networks::{Networks, NetworksError};
pub use relay::{classify, RecipientClass, Tables};
pub use table::{Maps, Table, TableError, TableRef};

/// Splits a list value as Postfix does: elements separated by commas and/or
/// white space.
fn list_elements(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
}

/// Names an element kind that Postfix allows in lists and Postern does not
/// support yet, if `element` is one.
fn unsupported_form(element: &str) -> Option<&'static str> {
    if element.starts_with('!') {
        Some("negated patterns (!pattern)")
    } else if element.starts_with('/') {
        Some("file names")
    } else if element.split_once(':').is_some_and(|(kind, _)| {
        !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }) && !element.starts_with('[')
    {
        Some("lookup tables (type:name)")
    } else {
        None
    }
}
