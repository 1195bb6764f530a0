//! The `Received:` header field smtpd prepares for each message, in Postfix's form:
//!
//! ```text
//! Received: from HELO (unknown [IP])
//!         by MYHOSTNAME (Postern) with ESMTP
//!         for <RCPT>; DATE
//! ```
//!
//! Trusts: the HELO name and recipient, which are validated `protocol` values; the
//! result is checked again by [`ReceivedHeader::new`]. Decisions:
//! - smtpd has no sockets of its own and cannot resolve the client's address, so the
//!   client name is always `unknown` (Postfix's word for an address without a verified
//!   name); a client that sent no HELO is `from unknown`.
//! - the queue id does not exist yet when smtpd writes this header (cleanup makes it
//!   when the message is complete), so the `id` clause that Postfix writes is left out.
//! - the `for` clause is written only for a message with exactly one recipient, as
//!   Postfix does; otherwise the date follows the `with` clause after a `;`.
//! - the protocol is `SMTP` after HELO, `ESMTP` after EHLO, and `UTF8SMTP` for a
//!   message with `MAIL ... SMTPUTF8` (RFC 6531 section 3.7.3); the client info of the
//!   queue file keeps `ESMTP` for the latter, which its protocol field cannot say.
//! - IPv6 addresses are written `[IPv6:...]`, IPv4-mapped addresses as IPv4.
//! - dates are in UTC (`daemon::date`), as the sandbox has no time zone files.

use std::net::IpAddr;
use std::time::SystemTime;

use protocol::address::{ForwardPath, Host};
use protocol::cleanup::{HeaderError, ReceivedHeader};

/// The address as Postfix writes it in brackets.
pub fn address_text(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPv6:{v6}"),
    }
}

pub struct Received<'a> {
    pub helo: Option<&'a Host>,
    pub client: IpAddr,
    pub myhostname: &'a str,
    pub mail_name: &'a str,
    pub protocol: &'a str,
    /// The one recipient, when there is exactly one.
    pub single_recipient: Option<&'a ForwardPath>,
    pub time: SystemTime,
}

impl Received<'_> {
    pub fn header(&self) -> Result<ReceivedHeader, HeaderError> {
        let helo = self
            .helo
            .map_or_else(|| "unknown".to_owned(), |h| h.to_string());
        let date = daemon::date::rfc5322(self.time);
        let mut text = format!(
            "Received: from {helo} (unknown [{}])\r\n\tby {} ({}) with {}",
            address_text(self.client),
            self.myhostname,
            self.mail_name,
            self.protocol
        );
        match self.single_recipient {
            Some(rcpt) => text.push_str(&format!("\r\n\tfor {rcpt}; {date}")),
            None => text.push_str(&format!(";\r\n\t{date}")),
        }
        ReceivedHeader::new(&text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn postfix_form_with_and_without_for() {
        let helo = Host::parse("client.example.test", false).unwrap();
        let rcpt = ForwardPath::parse("<u@example.test>", false).unwrap();
        let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut r = Received {
            helo: Some(&helo),
            client: "192.0.2.7".parse().unwrap(),
            myhostname: "mx.example.test",
            mail_name: "Postern",
            protocol: "ESMTP",
            single_recipient: Some(&rcpt),
            time,
        };
        assert_eq!(
            r.header().unwrap().as_str(),
            "Received: from client.example.test (unknown [192.0.2.7])\r\n\
             \tby mx.example.test (Postern) with ESMTP\r\n\
             \tfor <u@example.test>; Tue, 14 Nov 2023 22:13:20 +0000"
        );
        r.single_recipient = None;
        r.helo = None;
        r.client = "::ffff:192.0.2.8".parse().unwrap();
        assert_eq!(
            r.header().unwrap().as_str(),
            "Received: from unknown (unknown [192.0.2.8])\r\n\
             \tby mx.example.test (Postern) with ESMTP;\r\n\
             \tTue, 14 Nov 2023 22:13:20 +0000"
        );
        r.client = "2001:db8::1".parse().unwrap();
        assert!(r.header().unwrap().as_str().contains("[IPv6:2001:db8::1]"));
    }
}
