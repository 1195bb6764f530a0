//! Proptest strategies shared by the tests of several modules.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate::address::{AddressLiteral, Domain, Host, Mailbox, Path};
use crate::service::ServiceName;

const ASCII_LABEL: &str = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?";
const UTF8_LABEL: &str =
    "[a-zA-Z0-9äöüßéñ日本語]([a-zA-Z0-9äöüßéñ日本語-]{0,8}[a-zA-Z0-9äöüßéñ日本語])?";

pub(crate) fn ascii_domain() -> impl Strategy<Value = Domain> {
    prop::collection::vec(ASCII_LABEL, 1..=4)
        .prop_map(|labels| Domain::parse(&labels.join("."), false).unwrap())
}

pub(crate) fn utf8_domain() -> impl Strategy<Value = Domain> {
    prop::collection::vec(UTF8_LABEL, 1..=4)
        .prop_map(|labels| Domain::parse(&labels.join("."), true).unwrap())
}

pub(crate) fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        2 => utf8_domain().prop_map(Host::Domain),
        1 => any::<Ipv4Addr>().prop_map(|a| Host::Literal(AddressLiteral::Ipv4(a))),
        1 => any::<Ipv6Addr>().prop_map(|a| Host::Literal(AddressLiteral::Ipv6(a))),
    ]
}

/// Decoded local parts: Dot-strings, and printable text that needs quoting.
fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~ü-]{1,8}(\\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~ü-]{1,8}){0,3}",
        "[ -~äü]{0,20}",
    ]
}

pub(crate) fn mailbox() -> impl Strategy<Value = Mailbox> {
    (local_part(), host())
        .prop_map(|(local, host)| Mailbox::from_parts(&local, host, true).unwrap())
}

pub(crate) fn path() -> impl Strategy<Value = Path> {
    prop_oneof![
        1 => Just(Path::Null),
        1 => Just(Path::Postmaster),
        4 => mailbox().prop_map(Path::Mailbox),
    ]
}

pub(crate) fn service_name() -> impl Strategy<Value = ServiceName> {
    "[a-z0-9][a-z0-9._-]{0,31}".prop_map(|s| ServiceName::try_from(s).unwrap())
}
