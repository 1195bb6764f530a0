//! Listening addresses of inet services and the sockets the master binds for them.
//!
//! A master.cf inet service name is `[host:]port`, as in Postfix: `25`, `smtp`, `127.0.0.1:2525`,
//! `[::1]:25`. Without a host the address comes from `inet_interfaces` (`all`, `loopback-only`, or
//! one address). Trusts: the configuration (written by the administrator), which is still checked
//! so that a mistake is reported with the service's name. The master keeps CAP_NET_BIND_SERVICE
//! after start-up so that a reload can bind a new privileged port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("inet service {service}: bad port {port:?}")]
    Port { service: String, port: String },
    #[error("inet service {service}: host {host:?} is not an IP address (name it by address)")]
    Host { service: String, host: String },
    #[error("inet_interfaces = {value}: expected all, loopback-only or one IP address")]
    Interfaces { value: String },
}

/// Well-known port names Postfix's master.cf uses without a services database.
const PORT_NAMES: &[(&str, u16)] = &[
    ("smtp", 25),
    ("submission", 587),
    ("submissions", 465),
    ("smtps", 465),
];

fn parse_port(service: &str, port: &str) -> Result<u16, AddrError> {
    if let Some((_, n)) = PORT_NAMES.iter().find(|(name, _)| *name == port) {
        return Ok(*n);
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(AddrError::Port {
            service: service.to_owned(),
            port: port.to_owned(),
        }),
    }
}

fn parse_host(service: &str, host: &str) -> Result<IpAddr, AddrError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare == "*" {
        return Ok(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    bare.parse::<IpAddr>().map_err(|_| AddrError::Host {
        service: service.to_owned(),
        host: host.to_owned(),
    })
}

/// The address `inet_interfaces` gives a service that names no host.
pub fn interface_address(inet_interfaces: &str, ipv6: bool) -> Result<IpAddr, AddrError> {
    let value = inet_interfaces.trim();
    match value {
        "" | "all" => Ok(if ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }),
        "loopback-only" | "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        _ => value
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| AddrError::Interfaces {
                value: value.to_owned(),
            }),
    }
}

/// The socket address of an inet service.
pub fn service_address(service: &str, default_host: IpAddr) -> Result<SocketAddr, AddrError> {
    let (host, port) = match service.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => (Some(host), port),
        Some((_, port)) => (None, port),
        None => (None, service),
    };
    let port = parse_port(service, port)?;
    let ip = match host {
        Some(h) => parse_host(service, h)?,
        None => default_host,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Binds a listener the service's processes will share. It is non-blocking: the master only polls
/// it, and a child whose `accept` lost the race to a sibling gets `EAGAIN` instead of hanging.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = match TcpListener::bind(addr) {
        Err(e)
            if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                && e.raw_os_error() == Some(libc_eafnosupport()) =>
        {
            TcpListener::bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                addr.port(),
            ))?
        }
        other => other?,
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `EAFNOSUPPORT`: a host without IPv6 falls back to IPv4 for `all`.
fn libc_eafnosupport() -> i32 {
    nix::errno::Errno::EAFNOSUPPORT as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    #[test]
    fn service_names() {
        assert_eq!(
            service_address("2525", ANY4).unwrap(),
            "0.0.0.0:2525".parse().unwrap()
        );
        assert_eq!(
            service_address("smtp", ANY4).unwrap(),
            "0.0.0.0:25".parse().unwrap()
        );
        assert_eq!(
            service_address("127.0.0.1:2525", ANY4).unwrap(),
            "127.0.0.1:2525".parse().unwrap()
        );
        assert_eq!(
            service_address("[::1]:25", ANY4).unwrap(),
            "[::1]:25".parse().unwrap()
        );
        assert_eq!(
            service_address(":587", ANY4).unwrap(),
            "0.0.0.0:587".parse().unwrap()
        );
        assert!(matches!(
            service_address("0", ANY4),
            Err(AddrError::Port { .. })
        ));
        assert!(matches!(
            service_address("70000", ANY4),
            Err(AddrError::Port { .. })
        ));
        assert!(matches!(
            service_address("+25", ANY4),
            Err(AddrError::Port { .. })
        ));
        assert!(matches!(
            service_address("mail.example.org:25", ANY4),
            Err(AddrError::Host { .. })
        ));
    }

    #[test]
    fn interfaces() {
        assert_eq!(interface_address("all", false).unwrap(), ANY4);
        assert_eq!(
            interface_address("all", true).unwrap(),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
        assert_eq!(
            interface_address("loopback-only", true).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            interface_address("192.0.2.1", true).unwrap(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert!(interface_address("eth0, lo", true).is_err());
    }

    #[test]
    fn bound_listener_is_nonblocking() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
