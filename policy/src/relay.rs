//! Relay control: which class a recipient falls in, and whether a client may send
//! to it at all.
//!
//! Trusts: the recipient to be a validated mailbox and the client address to be
//! the connection's peer (smtpd's, never a client's claim). Decides, in this
//! order, as Postfix's `permit_mynetworks, reject_unauth_destination` with the
//! address classes of its ADDRESS_CLASS_README:
//! 1. an address literal (`user@[192.0.2.1]`) is never local here; it may be
//!    relayed by a client in `mynetworks` and is refused for anyone else (Postfix
//!    would deliver it locally when it names one of `inet_interfaces`; Postern
//!    does not know its interfaces in this decision);
//! 2. a domain in `mydestination` is `Local`;
//! 3. a domain in `virtual_mailbox_domains` is `Virtual`;
//! 4. a domain in `relay_domains` is `Relay`, whoever the client;
//! 5. any other domain is `Relay` for a client in `mynetworks`,
//! 6. and `RelayDenied` for everyone else (`554 5.7.1 <addr>: Relay access denied`).
//!
//! The bare `<Postmaster>` recipient has no domain and is not a [`Mailbox`]: the
//! session treats it as `postmaster@$myhostname`, which is local.

use std::net::IpAddr;

use protocol::address::{Host, Mailbox};

use crate::{DomainList, Networks};

/// The address class of a recipient, for this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientClass {
    /// Delivered by `local` (`mydestination`).
    Local,
    /// Delivered by `virtual` (`virtual_mailbox_domains`).
    Virtual,
    /// Sent on by the smtp client.
    Relay,
    /// Refused: neither ours nor a client allowed to relay.
    RelayDenied,
}

/// The lists the decision uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tables {
    pub mydestination: DomainList,
    pub virtual_mailbox_domains: DomainList,
    pub relay_domains: DomainList,
    pub mynetworks: Networks,
}

/// Classifies `rcpt` for a message from `client`.
pub fn classify(rcpt: &Mailbox, client: IpAddr, tables: &Tables) -> RecipientClass {
    let trusted = || tables.mynetworks.contains(client);
    let domain = match rcpt.domain() {
        Host::Domain(d) => d,
        Host::Literal(_) if trusted() => return RecipientClass::Relay,
        Host::Literal(_) => return RecipientClass::RelayDenied,
    };
    if tables.mydestination.matches(domain) {
        RecipientClass::Local
    } else if tables.virtual_mailbox_domains.matches(domain) {
        RecipientClass::Virtual
    } else if tables.relay_domains.matches(domain) || trusted() {
        RecipientClass::Relay
    } else {
        RecipientClass::RelayDenied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        Tables {
            mydestination: DomainList::parse("mx.example.test, localhost.example.test, localhost")
                .unwrap(),
            virtual_mailbox_domains: DomainList::parse("hosted.example, .hosted.example").unwrap(),
            relay_domains: DomainList::parse("backup.example .relayed.example").unwrap(),
            mynetworks: Networks::parse("127.0.0.0/8 [::1]/128 192.0.2.0/24").unwrap(),
        }
    }

    fn rcpt(s: &str) -> Mailbox {
        Mailbox::parse(s, true).unwrap()
    }

    const OUTSIDE: &str = "203.0.113.5";
    const INSIDE: &str = "192.0.2.10";

    fn class(addr: &str, client: &str) -> RecipientClass {
        classify(&rcpt(addr), client.parse().unwrap(), &tables())
    }

    #[test]
    fn mydestination_is_local_for_anyone() {
        assert_eq!(
            class("root@mx.example.test", OUTSIDE),
            RecipientClass::Local
        );
        assert_eq!(class("root@LOCALHOST", INSIDE), RecipientClass::Local);
        assert_eq!(
            class("root@sub.mx.example.test", OUTSIDE),
            RecipientClass::RelayDenied
        );
    }

    #[test]
    fn virtual_mailbox_domains_are_virtual_for_anyone() {
        assert_eq!(class("a@hosted.example", OUTSIDE), RecipientClass::Virtual);
        assert_eq!(
            class("a@eu.hosted.example", OUTSIDE),
            RecipientClass::Virtual
        );
        assert_eq!(class("a@hosted.example", INSIDE), RecipientClass::Virtual);
    }

    #[test]
    fn relay_domains_are_relayed_for_anyone() {
        assert_eq!(class("a@backup.example", OUTSIDE), RecipientClass::Relay);
        assert_eq!(class("a@x.relayed.example", OUTSIDE), RecipientClass::Relay);
        assert_eq!(
            class("a@relayed.example", OUTSIDE),
            RecipientClass::RelayDenied
        );
        assert_eq!(
            class("a@sub.backup.example", OUTSIDE),
            RecipientClass::RelayDenied
        );
    }

    #[test]
    fn mynetworks_may_relay_anywhere() {
        assert_eq!(class("a@elsewhere.example", INSIDE), RecipientClass::Relay);
        assert_eq!(
            class("a@elsewhere.example", "127.0.0.1"),
            RecipientClass::Relay
        );
        assert_eq!(class("a@elsewhere.example", "::1"), RecipientClass::Relay);
        assert_eq!(
            class("a@elsewhere.example", "::ffff:192.0.2.99"),
            RecipientClass::Relay
        );
    }

    #[test]
    fn everyone_else_is_denied() {
        assert_eq!(
            class("a@elsewhere.example", OUTSIDE),
            RecipientClass::RelayDenied
        );
        assert_eq!(
            class("a@elsewhere.example", "2001:db8::1"),
            RecipientClass::RelayDenied
        );
        assert_eq!(
            class("a@elsewhere.example", "::ffff:203.0.113.5"),
            RecipientClass::RelayDenied
        );
    }

    #[test]
    fn address_literals_only_from_mynetworks() {
        assert_eq!(class("a@[198.51.100.1]", INSIDE), RecipientClass::Relay);
        assert_eq!(class("a@[IPv6:2001:db8::1]", "::1"), RecipientClass::Relay);
        assert_eq!(
            class("a@[198.51.100.1]", OUTSIDE),
            RecipientClass::RelayDenied
        );
        // Not even a literal of a trusted network is local or open to outsiders.
        assert_eq!(class("a@[192.0.2.1]", OUTSIDE), RecipientClass::RelayDenied);
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let mut t = tables();
        t.virtual_mailbox_domains = DomainList::parse("mx.example.test").unwrap();
        t.relay_domains = DomainList::parse("mx.example.test hosted.example").unwrap();
        t.mydestination = DomainList::parse("mx.example.test").unwrap();
        let client: IpAddr = OUTSIDE.parse().unwrap();
        assert_eq!(
            classify(&rcpt("a@mx.example.test"), client, &t),
            RecipientClass::Local
        );
        t.virtual_mailbox_domains = DomainList::parse("hosted.example").unwrap();
        assert_eq!(
            classify(&rcpt("a@hosted.example"), client, &t),
            RecipientClass::Virtual
        );
    }

    #[test]
    fn empty_tables_deny_everything() {
        let t = Tables::default();
        assert_eq!(
            classify(&rcpt("a@example.test"), "127.0.0.1".parse().unwrap(), &t),
            RecipientClass::RelayDenied
        );
    }
}
