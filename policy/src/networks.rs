//! `mynetworks`: the clients trusted to relay to any destination.
//!
//! Trusts: the list to be the administrator's; checks every element and refuses
//! the whole list if one is wrong. Does not trust: the client address's family:
//! an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as a dual-stack socket reports
//! an IPv4 client) is matched as the IPv4 address it is.
//!
//! Elements, as Postfix writes them: `192.0.2.0/24`, `192.0.2.1` (one address),
//! `[2001:db8::]/32`, `[::1]` (IPv6 always in brackets, which Postfix requires so
//! that the colons are not read as a lookup table). A network with bits set
//! beyond its prefix is refused, as Postfix refuses it. An IPv6 network inside
//! `::ffff:0:0/96` (such as `[::ffff:127.0.0.0]/104`) is matched as the IPv4
//! network it maps. Host names, `.domain` patterns, `!negation`, `/file/name` and
//! `type:table` elements, which Postfix also allows here, are refused for now.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{list_elements, unsupported_form};

/// Why a `mynetworks` value is refused; each names the element at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworksError {
    #[error("network list element {element:?} is not an IPv4 address or network, nor a bracketed IPv6 one")]
    BadAddress { element: String },
    #[error("network list element {element:?}: IPv6 must be in brackets, as in {suggestion:?}")]
    Ipv6NeedsBrackets { element: String, suggestion: String },
    #[error(
        "network list element {element:?}: the prefix length must be a number from 0 to {max}"
    )]
    BadPrefix { element: String, max: u8 },
    #[error("network list element {element:?} has non-null host address bits; perhaps you meant {suggestion:?}")]
    HostBits { element: String, suggestion: String },
    #[error("network list element {element:?}: {what} are not supported")]
    Unsupported { element: String, what: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4 { addr: u32, prefix: u8 },
    V6 { addr: u128, prefix: u8 },
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// The IPv4 address an IPv4-mapped IPv6 address stands for.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Net::V4 { addr, prefix }, IpAddr::V4(ip)) => {
                (u32::from(ip) ^ addr) & mask32(prefix) == 0
            }
            (Net::V6 { addr, prefix }, IpAddr::V6(ip)) => {
                (u128::from(ip) ^ addr) & mask128(prefix) == 0
            }
            _ => false,
        }
    }

    fn parse(element: &str) -> Result<Net, NetworksError> {
        let (address, prefix) = match element.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (element, None),
        };
        let bad = || NetworksError::BadAddress {
            element: element.to_owned(),
        };
        let ip = if let Some(inner) = address.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad)?;
            IpAddr::V6(inner.parse::<Ipv6Addr>().map_err(|_| bad())?)
        } else if let Ok(v6) = address.parse::<Ipv6Addr>() {
            let suggestion = match prefix {
                Some(p) => format!("[{v6}]/{p}"),
                None => format!("[{v6}]"),
            };
            return Err(NetworksError::Ipv6NeedsBrackets {
                element: element.to_owned(),
                suggestion,
            });
        } else if let Some(what) = unsupported_form(element) {
            return Err(NetworksError::Unsupported {
                element: element.to_owned(),
                what,
            });
        } else {
            IpAddr::V4(address.parse::<Ipv4Addr>().map_err(|_| bad())?)
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u8>().ok())
                .flatten()
                .filter(|&len| !p.is_empty() && len <= max)
                .ok_or_else(|| NetworksError::BadPrefix {
                    element: element.to_owned(),
                    max,
                })?,
        };
        let net = match ip {
            IpAddr::V4(a) => Net::V4 {
                addr: u32::from(a),
                prefix,
            },
            IpAddr::V6(a) => Net::V6 {
                addr: u128::from(a),
                prefix,
            },
        };
        let network = net.network();
        if network != net {
            return Err(NetworksError::HostBits {
                element: element.to_owned(),
                suggestion: network.to_string(),
            });
        }
        Ok(net.unmapped())
    }

    /// The same prefix with the host bits cleared.
    fn network(&self) -> Net {
        match *self {
            Net::V4 { addr, prefix } => Net::V4 {
                addr: addr & mask32(prefix),
                prefix,
            },
            Net::V6 { addr, prefix } => Net::V6 {
                addr: addr & mask128(prefix),
                prefix,
            },
        }
    }

    /// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps.
    fn unmapped(self) -> Net {
        match self {
            Net::V6 { addr, prefix } if prefix >= 96 => {
                match Ipv6Addr::from(addr).to_ipv4_mapped() {
                    Some(v4) => Net::V4 {
                        addr: u32::from(v4),
                        prefix: prefix - 96,
                    },
                    None => self,
                }
            }
            other => other,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Net::V4 { addr, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(addr)),
            Net::V6 { addr, prefix } => write!(f, "[{}]/{prefix}", Ipv6Addr::from(addr)),
        }
    }
}

/// A parsed `mynetworks` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Networks {
    nets: Vec<Net>,
}

impl Networks {
    /// Parses a list value (elements separated by commas and/or white space).
    pub fn parse(list: &str) -> Result<Networks, NetworksError> {
        Networks::from_elements(list_elements(list))
    }

    /// Parses elements already split, as `conf`'s `get_list` returns them.
    pub fn from_elements<'a>(
        elements: impl IntoIterator<Item = &'a str>,
    ) -> Result<Networks, NetworksError> {
        let nets = elements
            .into_iter()
            .map(Net::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Networks { nets })
    }

    /// Whether `client` is in one of the networks.
    pub fn contains(&self, client: IpAddr) -> bool {
        let client = unmapped(client);
        self.nets.iter().any(|net| net.contains(client))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

impl fmt::Display for Networks {
    /// The networks in Postfix's notation, separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            net.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_and_bare_addresses() {
        let n =
            Networks::parse("127.0.0.0/8, 192.0.2.1\t[::1]/128 [2001:db8::]/32,[fe80::1]").unwrap();
        for yes in [
            "127.0.0.1",
            "127.255.255.255",
            "192.0.2.1",
            "::1",
            "2001:db8:ffff::7",
            "fe80::1",
        ] {
            assert!(n.contains(ip(yes)), "{yes}");
        }
        for no in [
            "128.0.0.1",
            "192.0.2.2",
            "::2",
            "2001:db9::1",
            "fe80::2",
            "10.0.0.1",
        ] {
            assert!(!n.contains(ip(no)), "{no}");
        }
        assert_eq!(
            n.to_string(),
            "127.0.0.0/8 192.0.2.1/32 [::1]/128 [2001:db8::]/32 [fe80::1]/128"
        );
    }

    #[test]
    fn zero_prefixes_match_their_whole_family() {
        let n = Networks::parse("0.0.0.0/0").unwrap();
        assert!(n.contains(ip("203.0.113.9")));
        assert!(!n.contains(ip("2001:db8::1")));
        let n = Networks::parse("[::]/0").unwrap();
        assert!(n.contains(ip("2001:db8::1")));
        assert!(!n.contains(ip("203.0.113.9")));
    }

    #[test]
    fn v4_mapped_addresses_are_matched_as_v4() {
        let n = Networks::parse("192.0.2.0/24").unwrap();
        assert!(n.contains(ip("::ffff:192.0.2.77")));
        assert!(!n.contains(ip("::ffff:198.51.100.1")));
        // Postfix's own default writes loopback this way.
        let n = Networks::parse("[::ffff:127.0.0.0]/104").unwrap();
        assert!(n.contains(ip("127.0.0.1")));
        assert!(n.contains(ip("::ffff:127.0.0.1")));
        assert!(!n.contains(ip("128.0.0.1")));
        assert_eq!(n.to_string(), "127.0.0.0/8");
        // A network wider than ::ffff:0:0/96 stays IPv6.
        let n = Networks::parse("[::]/64").unwrap();
        assert!(!n.contains(ip("127.0.0.1")));
    }

    #[test]
    fn empty_lists_match_nothing() {
        let n = Networks::parse(" , ").unwrap();
        assert!(n.is_empty());
        assert!(!n.contains(ip("127.0.0.1")));
    }

    #[test]
    fn errors_name_the_element() {
        let cases: Vec<(&str, NetworksError)> = vec![
            (
                "127.0.0.1/8",
                NetworksError::HostBits {
                    element: "127.0.0.1/8".into(),
                    suggestion: "127.0.0.0/8".into(),
                },
            ),
            (
                "[2001:db8::1]/32",
                NetworksError::HostBits {
                    element: "[2001:db8::1]/32".into(),
                    suggestion: "[2001:db8::]/32".into(),
                },
            ),
            (
                "::1/128",
                NetworksError::Ipv6NeedsBrackets {
                    element: "::1/128".into(),
                    suggestion: "[::1]/128".into(),
                },
            ),
            (
                "2001:db8::",
                NetworksError::Ipv6NeedsBrackets {
                    element: "2001:db8::".into(),
                    suggestion: "[2001:db8::]".into(),
                },
            ),
            (
                "10.0.0.0/33",
                NetworksError::BadPrefix {
                    element: "10.0.0.0/33".into(),
                    max: 32,
                },
            ),
            (
                "[::]/129",
                NetworksError::BadPrefix {
                    element: "[::]/129".into(),
                    max: 128,
                },
            ),
            (
                "10.0.0.0/",
                NetworksError::BadPrefix {
                    element: "10.0.0.0/".into(),
                    max: 32,
                },
            ),
            (
                "10.0.0.0/+8",
                NetworksError::BadPrefix {
                    element: "10.0.0.0/+8".into(),
                    max: 32,
                },
            ),
            (
                "10.0.0/8",
                NetworksError::BadAddress {
                    element: "10.0.0/8".into(),
                },
            ),
            (
                "010.0.0.1",
                NetworksError::BadAddress {
                    element: "010.0.0.1".into(),
                },
            ),
            (
                "[192.0.2.1]",
                NetworksError::BadAddress {
                    element: "[192.0.2.1]".into(),
                },
            ),
            (
                "[::1",
                NetworksError::BadAddress {
                    element: "[::1".into(),
                },
            ),
            (
                "mail.example.com",
                NetworksError::BadAddress {
                    element: "mail.example.com".into(),
                },
            ),
            (
                "hash:/etc/postern/networks",
                NetworksError::Unsupported {
                    element: "hash:/etc/postern/networks".into(),
                    what: "lookup tables (type:name)",
                },
            ),
            (
                "/etc/postern/networks",
                NetworksError::Unsupported {
                    element: "/etc/postern/networks".into(),
                    what: "file names",
                },
            ),
            (
                "!192.0.2.1",
                NetworksError::Unsupported {
                    element: "!192.0.2.1".into(),
                    what: "negated patterns (!pattern)",
                },
            ),
        ];
        for (element, error) in cases {
            let list = format!("127.0.0.0/8 {element} [::1]/128");
            let got = Networks::parse(&list).unwrap_err();
            assert_eq!(got, error, "{element}");
            assert!(got.to_string().contains(element), "{got}");
        }
    }

    #[test]
    fn from_elements_takes_conf_lists() {
        let items = ["10.0.0.0/8".to_owned(), "[::1]".to_owned()];
        let n = Networks::from_elements(items.iter().map(String::as_str)).unwrap();
        assert!(n.contains(ip("10.1.2.3")) && n.contains(ip("::1")));
    }

    proptest! {
        #[test]
        fn a_network_contains_exactly_its_prefix(addr in any::<u32>(), prefix in 0u8..=32, probe in any::<u32>()) {
            let network = addr & mask32(prefix);
            let n = Networks::parse(&format!("{}/{prefix}", Ipv4Addr::from(network))).unwrap();
            let inside = (probe ^ network) & mask32(prefix) == 0;
            prop_assert_eq!(n.contains(IpAddr::V4(Ipv4Addr::from(probe))), inside);
            prop_assert_eq!(n.contains(IpAddr::V6(Ipv4Addr::from(probe).to_ipv6_mapped())), inside);
            prop_assert!(n.contains(IpAddr::V4(Ipv4Addr::from(network))));
            prop_assert_eq!(Networks::parse(&n.to_string()).unwrap(), n);
        }

        #[test]
        fn v6_networks_contain_exactly_their_prefix(addr in any::<u128>(), prefix in 0u8..=128, probe in any::<u128>()) {
            let network = addr & mask128(prefix);
            let n = Networks::parse(&format!("[{}]/{prefix}", Ipv6Addr::from(network))).unwrap();
            let probe_ip = Ipv6Addr::from(probe);
            if probe_ip.to_ipv4_mapped().is_none() && Ipv6Addr::from(network).to_ipv4_mapped().is_none() {
                let inside = (probe ^ network) & mask128(prefix) == 0;
                prop_assert_eq!(n.contains(IpAddr::V6(probe_ip)), inside);
            }
            prop_assert_eq!(Networks::parse(&n.to_string()).unwrap(), n);
        }
    }
}
