//! The channels into and out of cleanup: smtpd, pickup and bounce hand a message
//! over ([`ToCleanup`]) and learn its fate ([`FromCleanup`]); cleanup tells the
//! queue manager that new mail is waiting ([`ToQmgr`]).
//!
//! Trusts: nothing in either direction. cleanup decodes what an smtpd that may run
//! an attacker's code sent; smtpd decodes cleanup's answer with the same care.
//! Every field is a validated type; collections and byte strings are bounded so
//! that every message fits in one datagram of [`MAX_DATAGRAM`] octets.
//!
//! A message is handed over as `Begin`, one or more `Recipients` (a thousand
//! recipients do not fit in one datagram), `Content` chunks, then `End`, which
//! cleanup answers with `Queued` once the queue file is durable, or `Failed`.
//! `Abort` discards the message at any point. The order is the sender's and
//! cleanup's state machine to enforce; each message here is valid on its own.
//!
//! [`MAX_DATAGRAM`]: crate::channel::MAX_DATAGRAM

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use crate::address::ReversePath;
use crate::bounded::{BoundedBytes, BoundedVec};
use crate::codec::{deserialize_validated, InvalidValue, Message};
use crate::control::Detail;
use crate::queue::{ClientInfo, MailFlags, Recipient, RecordError};
use crate::queue_id::QueueId;

/// Content octets per `Content` message: a datagram is at most 64 KiB, and the
/// message's own framing (a variant tag and a length) takes a few octets of it.
pub const CHUNK_MAX: usize = 64 * 1024 - 256;

/// Recipients per `Recipients` message: a recipient takes at most about 800
/// encoded octets (a 256-octet path, a 500-octet ORCPT), and 64 of them fit in
/// one datagram.
pub const RECIPIENTS_PER_MESSAGE: usize = 64;

/// A Received: header of a few folded lines: Postfix's, with TLS details, is
/// under 600 octets.
pub const MAX_RECEIVED_LEN: usize = 4096;

/// RFC 5322 section 2.1.1: a header line is at most 998 octets.
pub const MAX_HEADER_LINE: usize = 998;

/// Why a string is not a `Received:` header field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header field is {len} octets, more than {MAX_RECEIVED_LEN}")]
    TooLong { len: usize },
    #[error("header field does not start with \"Received:\"")]
    NotReceived,
    #[error("header line {line} is {len} octets, more than {MAX_HEADER_LINE}")]
    LineTooLong { line: usize, len: usize },
    #[error("header continuation line {line} does not start with a space or tab, or is blank")]
    BadFolding { line: usize },
    #[error(
        "header field has a control character (or a CR or LF outside a fold) at octet {offset}"
    )]
    Control { offset: usize },
}

/// The `Received:` header field smtpd prepared, without its final CRLF: lines
/// joined by CRLF, each continuation line starting with a space or a tab, no other
/// control characters than tab.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceivedHeader(String);

impl ReceivedHeader {
    const NAME: &'static str = "Received:";

    pub fn new(field: &str) -> Result<ReceivedHeader, HeaderError> {
        if field.len() > MAX_RECEIVED_LEN {
            return Err(HeaderError::TooLong { len: field.len() });
        }
        let starts = field
            .get(..Self::NAME.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(Self::NAME));
        if !starts {
            return Err(HeaderError::NotReceived);
        }
        let mut offset = 0;
        for (line, text) in field.split("\r\n").enumerate() {
            if text.len() > MAX_HEADER_LINE {
                return Err(HeaderError::LineTooLong {
                    line,
                    len: text.len(),
                });
            }
            if line > 0
                && (!text.starts_with([' ', '\t']) || text.trim_matches([' ', '\t']).is_empty())
            {
                return Err(HeaderError::BadFolding { line });
            }
            if let Some((at, _)) = text
                .char_indices()
                .find(|&(_, ch)| ch.is_control() && ch != '\t')
            {
                return Err(HeaderError::Control {
                    offset: offset + at,
                });
            }
            offset += text.len() + 2;
        }
        Ok(ReceivedHeader(field.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReceivedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ReceivedHeader {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

deserialize_validated!(ReceivedHeader, String, |s| ReceivedHeader::new(&s));

/// From smtpd, pickup or bounce to cleanup.
// One message at a time is alive in a process; boxing `Begin` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCleanup {
    /// Starts a message.
    Begin {
        sender: ReversePath,
        flags: MailFlags,
        client: ClientInfo,
        /// Prepended to the content.
        received: ReceivedHeader,
    },
    /// More recipients, in RCPT order; never empty.
    Recipients(BoundedVec<Recipient, RECIPIENTS_PER_MESSAGE>),
    /// The next piece of the message text (RFC 5322, CRLF line ends, dot-stuffing
    /// removed).
    Content(BoundedBytes<CHUNK_MAX>),
    /// The content is complete: make the message durable and answer.
    End,
    /// Discard the message.
    Abort,
}

impl Message for ToCleanup {
    fn kind(&self) -> &'static str {
        match self {
            ToCleanup::Begin { .. } => "Begin",
            ToCleanup::Recipients(_) => "Recipients",
            ToCleanup::Content(_) => "Content",
            ToCleanup::End => "End",
            ToCleanup::Abort => "Abort",
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            ToCleanup::Recipients(list) if list.is_empty() => Err(RecordError::NoRecipients.into()),
            _ => Ok(()),
        }
    }
}

/// cleanup's answer to `End`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromCleanup {
    /// The queue file and its directory entry are on disk.
    Queued { id: QueueId },
    /// Not queued; `temporary` failures (disk full, I/O error) are worth a retry
    /// (smtpd answers 4xx), others are not (5xx: the message is too large).
    Failed { temporary: bool, detail: Detail },
}

impl Message for FromCleanup {
    fn kind(&self) -> &'static str {
        match self {
            FromCleanup::Queued { .. } => "Queued",
            FromCleanup::Failed { .. } => "Failed",
        }
    }
}

/// From cleanup to the queue manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToQmgr {
    /// A new message is in `incoming/`.
    Wake,
}

impl Message for ToQmgr {
    fn kind(&self) -> &'static str {
        "Wake"
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::address::{ForwardPath, Host, Mailbox};
    use crate::channel::MAX_DATAGRAM;
    use crate::codec::{decode, encode, DecodeError};
    use crate::queue::Protocol;
    use crate::smtp::params::{MAX_ADDR_TYPE_LEN, MAX_ORCPT_LEN};
    use crate::smtp::{BodyType, Envid, Notify, OriginalRecipient, Ret};
    use crate::testing::{ascii_domain, host, path};

    fn received() -> impl Strategy<Value = ReceivedHeader> {
        (
            "[ -~]{0,60}",
            proptest::collection::vec("[ \t][!-~][ -~]{0,40}", 0..4),
        )
            .prop_map(|(first, folds)| {
                let mut text = format!("Received: {first}");
                for fold in folds {
                    text.push_str("\r\n");
                    text.push_str(&fold);
                }
                ReceivedHeader::new(&text).unwrap()
            })
    }

    fn flags() -> impl Strategy<Value = MailFlags> {
        (
            any::<bool>(),
            proptest::option::of(prop_oneof![
                Just(BodyType::SevenBit),
                Just(BodyType::EightBitMime),
                Just(BodyType::BinaryMime)
            ]),
            proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]),
            proptest::option::of("[ -~]{1,100}".prop_map(|s| Envid::new(&s).unwrap())),
        )
            .prop_map(|(smtputf8, body, ret, envid)| MailFlags {
                smtputf8,
                body,
                ret,
                envid,
            })
    }

    fn client() -> impl Strategy<Value = ClientInfo> {
        (
            proptest::option::of(ascii_domain()),
            proptest::option::of(any::<IpAddr>()),
            proptest::option::of(host()),
            prop_oneof![
                Just(Protocol::Smtp),
                Just(Protocol::Esmtp),
                Just(Protocol::Esmtps),
                Just(Protocol::Esmtpa),
                Just(Protocol::Esmtpsa),
                Just(Protocol::Local),
            ],
        )
            .prop_map(|(name, address, helo, protocol)| ClientInfo {
                name,
                address,
                helo,
                protocol,
            })
    }

    pub(crate) fn recipient() -> impl Strategy<Value = Recipient> {
        (
            path().prop_filter_map("forward path", |p| ForwardPath::try_from(p).ok()),
            proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
                |(success, failure, delay)| Notify {
                    success,
                    failure,
                    delay,
                },
            )),
            proptest::option::of(
                ("(rfc822|utf-8)", "[^\\p{Cc}]{1,40}")
                    .prop_map(|(t, a)| OriginalRecipient::new(&t, &a).unwrap()),
            ),
        )
            .prop_map(|(path, notify, orcpt)| Recipient {
                path,
                notify,
                orcpt,
            })
    }

    fn to_cleanup() -> impl Strategy<Value = ToCleanup> {
        prop_oneof![
            (
                path().prop_filter_map("reverse path", |p| ReversePath::try_from(p).ok()),
                flags(),
                client(),
                received()
            )
                .prop_map(|(sender, flags, client, received)| ToCleanup::Begin {
                    sender,
                    flags,
                    client,
                    received
                }),
            proptest::collection::vec(recipient(), 1..=RECIPIENTS_PER_MESSAGE)
                .prop_map(|v| ToCleanup::Recipients(BoundedVec::try_from(v).unwrap())),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|v| ToCleanup::Content(BoundedBytes::try_from(v).unwrap())),
            Just(ToCleanup::End),
            Just(ToCleanup::Abort),
        ]
    }

    fn from_cleanup() -> impl Strategy<Value = FromCleanup> {
        prop_oneof![
            (any::<u32>(), 0u64..1 << 50).prop_map(|(seq, micros)| FromCleanup::Queued {
                id: QueueId::new(
                    std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros),
                    seq
                )
                .unwrap()
            }),
            (any::<bool>(), "[^\\p{Cc}]{0,60}").prop_map(|(temporary, d)| FromCleanup::Failed {
                temporary,
                detail: Detail::try_from(d).unwrap()
            }),
        ]
    }

    proptest! {
        #[test]
        fn to_cleanup_round_trips(msg in to_cleanup()) {
            let bytes = encode(&msg).unwrap();
            prop_assert!(bytes.len() <= MAX_DATAGRAM);
            prop_assert_eq!(decode::<ToCleanup>(&bytes).unwrap(), msg);
        }

        #[test]
        fn from_cleanup_round_trips(msg in from_cleanup()) {
            let bytes = encode(&msg).unwrap();
            prop_assert_eq!(decode::<FromCleanup>(&bytes).unwrap(), msg);
        }
    }

    #[test]
    fn to_qmgr_round_trips() {
        let bytes = encode(&ToQmgr::Wake).unwrap();
        assert_eq!(bytes, [0]);
        assert_eq!(decode::<ToQmgr>(&bytes), Ok(ToQmgr::Wake));
        assert_eq!(decode::<ToQmgr>(&[1]), Err(DecodeError::Schema));
        assert_eq!(
            decode::<ToQmgr>(&[0, 0]),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    fn worst_recipient() -> Recipient {
        let mailbox = format!(
            "{}@{}.{}.{}.{}",
            "l".repeat(64),
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(40),
            "d".repeat(20)
        );
        Recipient {
            path: ForwardPath::Mailbox(Mailbox::parse(&mailbox, false).unwrap()),
            notify: Some(Notify {
                success: true,
                failure: true,
                delay: true,
            }),
            orcpt: Some(
                OriginalRecipient::new(&"t".repeat(MAX_ADDR_TYPE_LEN), &"o".repeat(MAX_ORCPT_LEN))
                    .unwrap(),
            ),
        }
    }

    fn largest_received() -> ReceivedHeader {
        let mut text = format!("Received: {}", "x".repeat(MAX_HEADER_LINE - 10));
        while text.len() < MAX_RECEIVED_LEN {
            let room = MAX_RECEIVED_LEN - text.len();
            if room < 4 {
                break;
            }
            text.push_str("\r\n\t");
            text.push_str(&"y".repeat((room - 3).min(MAX_HEADER_LINE - 1)));
        }
        assert!(text.len() > MAX_RECEIVED_LEN - 4);
        ReceivedHeader::new(&text).unwrap()
    }

    #[test]
    fn the_largest_messages_fit_in_a_datagram() {
        let full = ToCleanup::Recipients(
            BoundedVec::try_from(vec![worst_recipient(); RECIPIENTS_PER_MESSAGE]).unwrap(),
        );
        assert!(encode(&full).unwrap().len() <= MAX_DATAGRAM);
        let chunk = ToCleanup::Content(BoundedBytes::try_from(vec![0xff; CHUNK_MAX]).unwrap());
        assert!(encode(&chunk).unwrap().len() <= MAX_DATAGRAM);

        let long_name = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        let host = Host::parse(&long_name, false).unwrap();
        let begin = ToCleanup::Begin {
            sender: ReversePath::Mailbox(worst_recipient().path.mailbox().unwrap().clone()),
            flags: MailFlags {
                smtputf8: true,
                body: Some(BodyType::BinaryMime),
                ret: Some(Ret::Full),
                envid: Some(Envid::new(&"e".repeat(100)).unwrap()),
            },
            client: ClientInfo {
                name: host.domain().cloned(),
                address: Some("2001:db8::1".parse().unwrap()),
                helo: Some(host),
                protocol: Protocol::Esmtpsa,
            },
            received: largest_received(),
        };
        assert!(encode(&begin).unwrap().len() <= MAX_DATAGRAM);
    }

    #[test]
    fn empty_recipient_lists_are_refused() {
        let empty = ToCleanup::Recipients(BoundedVec::new());
        assert!(encode(&empty).is_err());
        // Variant 1 with a zero-length list.
        assert_eq!(
            decode::<ToCleanup>(&[1, 0]),
            Err(DecodeError::Invalid(InvalidValue::Record(
                RecordError::NoRecipients
            )))
        );
    }

    #[test]
    fn oversized_lists_and_chunks_are_refused_by_their_length() {
        // `Recipients` declaring one more than allowed, from a tiny input.
        let bytes = [1, RECIPIENTS_PER_MESSAGE as u8 + 1];
        assert!(matches!(
            decode::<ToCleanup>(&bytes),
            Err(DecodeError::OverBound(_))
        ));
        let mut bytes = vec![2];
        bytes.extend_from_slice(&postcard::to_allocvec(&vec![0u8; CHUNK_MAX + 1]).unwrap());
        assert!(matches!(
            decode::<ToCleanup>(&bytes),
            Err(DecodeError::OverBound(_))
        ));
    }

    #[test]
    fn received_headers_are_checked() {
        assert!(ReceivedHeader::new("Received: from a (b [192.0.2.1])\r\n\tby mx.example.test with ESMTP id X;\r\n\tSat, 28 Nov 2026 12:00:00 +0000").is_ok());
        assert!(ReceivedHeader::new("received: by x").is_ok());
        assert!(ReceivedHeader::new("Received: von München").is_ok());
        assert_eq!(
            ReceivedHeader::new("X-Header: y"),
            Err(HeaderError::NotReceived)
        );
        assert_eq!(ReceivedHeader::new("Recv"), Err(HeaderError::NotReceived));
        assert_eq!(
            ReceivedHeader::new("Received: a\r\nX-Injected: yes"),
            Err(HeaderError::BadFolding { line: 1 })
        );
        assert_eq!(
            ReceivedHeader::new("Received: a\r\n"),
            Err(HeaderError::BadFolding { line: 1 })
        );
        assert_eq!(
            ReceivedHeader::new("Received: a\r\n \t"),
            Err(HeaderError::BadFolding { line: 1 })
        );
        assert_eq!(
            ReceivedHeader::new("Received: a\nX-Injected: yes"),
            Err(HeaderError::Control { offset: 11 })
        );
        assert_eq!(
            ReceivedHeader::new("Received: a\r\n b\rc"),
            Err(HeaderError::Control { offset: 15 })
        );
        assert_eq!(
            ReceivedHeader::new(&format!("Received: {}", "x".repeat(MAX_HEADER_LINE))),
            Err(HeaderError::LineTooLong {
                line: 0,
                len: MAX_HEADER_LINE + 10
            })
        );
        assert_eq!(
            ReceivedHeader::new(&format!("Received: {}", "x".repeat(MAX_RECEIVED_LEN))),
            Err(HeaderError::TooLong {
                len: MAX_RECEIVED_LEN + 10
            })
        );
        // `Begin` (variant 0) with a forged header is refused on decode.
        let begin = ToCleanup::Begin {
            sender: ReversePath::Null,
            flags: MailFlags::default(),
            client: ClientInfo {
                name: None,
                address: None,
                helo: None,
                protocol: Protocol::Local,
            },
            received: ReceivedHeader::new("Received: x").unwrap(),
        };
        let mut bytes = encode(&begin).unwrap();
        let at = bytes.len() - 1;
        bytes[at] = b'\n';
        assert!(matches!(
            decode::<ToCleanup>(&bytes),
            Err(DecodeError::Invalid(InvalidValue::Header(_)))
        ));
    }

    #[test]
    fn kinds() {
        assert_eq!(ToCleanup::End.kind(), "End");
        assert_eq!(ToCleanup::Abort.kind(), "Abort");
        assert_eq!(
            ToCleanup::Content(BoundedBytes::default()).kind(),
            "Content"
        );
        assert_eq!(
            FromCleanup::Failed {
                temporary: true,
                detail: Detail::try_from("disk full").unwrap()
            }
            .kind(),
            "Failed"
        );
        assert_eq!(ToQmgr::Wake.kind(), "Wake");
        assert_eq!(ToCleanup::End.fd_count(), 0);
    }
}
