//! What a queue file says about its message: the [`Envelope`] written once by
//! cleanup, and the [`ResultRecord`]s the queue manager appends after it.
//!
//! Trusts: nothing; both are decoded from a file that another process wrote, through
//! the validated types of this crate. Cross-field rules (the format version, at
//! least one recipient, an outcome that agrees with its status code) are checked
//! by `Message::validate` on encode and on decode.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

use crate::address::{Domain, ForwardPath, Host, ReversePath};
use crate::bounded::BoundedVec;
use crate::codec::{deserialize_validated, InvalidValue, Message};
use crate::smtp::{BodyType, EnhancedStatus, Envid, Notify, OriginalRecipient, Ret};

/// The envelope schema's version, checked on decode; raised whenever the
/// envelope changes shape.
pub const ENVELOPE_VERSION: u16 = 1;

/// Recipients one queue file may hold. `smtpd_recipient_limit` (default 1000) is
/// configurable, so the hard bound is far above any sane setting, while keeping
/// the envelope of a forged file within [`super::MAX_ENVELOPE_LEN`] (at most
/// about 800 octets per recipient).
pub const MAX_RECIPIENTS: usize = 100_000;

/// A diagnostic is one remote reply (at most 512 octets a line) or one local
/// explanation, with room for the name of the host that gave it.
pub const MAX_DIAGNOSTIC_LEN: usize = 1024;

/// Why a queue record is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("envelope version {got} is not the version this side reads ({supported})")]
    EnvelopeVersion { got: u16, supported: u16 },
    #[error("no recipients")]
    NoRecipients,
    #[error("result outcome {outcome} does not go with status {status}")]
    StatusMismatch {
        outcome: Outcome,
        status: EnhancedStatus,
    },
    #[error("result outcome {outcome} must {} a next retry time", if *.outcome == Outcome::Deferred { "have" } else { "not have" })]
    RetryMismatch { outcome: Outcome },
    #[error("diagnostic text is {len} octets, more than {MAX_DIAGNOSTIC_LEN}")]
    DiagnosticTooLong { len: usize },
    #[error("diagnostic text has a control character at octet {offset}")]
    DiagnosticControl { offset: usize },
}

/// A point in time, in microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(u64);

impl Timestamp {
    pub fn from_micros(micros: u64) -> Timestamp {
        Timestamp(micros)
    }

    /// Times before the epoch become the epoch; times past the year 586 000 are
    /// kept as the largest value.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let micros = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Timestamp(micros)
    }

    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    pub fn micros(&self) -> u64 {
        self.0
    }

    pub fn to_system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0)
    }
}

/// How the client submitted the message, as RFC 3848 names it for the
/// `Received:` header's `with` clause; `Local` for pickup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Smtp,
    Esmtp,
    Esmtps,
    Esmtpa,
    Esmtpsa,
    Local,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Esmtp => "ESMTP",
            Protocol::Esmtps => "ESMTPS",
            Protocol::Esmtpa => "ESMTPA",
            Protocol::Esmtpsa => "ESMTPSA",
            Protocol::Local => "local",
        }
    }
}

/// Who handed the message over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The client's verified host name; `None` is Postfix's `unknown`.
    pub name: Option<Domain>,
    /// `None` for local submission.
    pub address: Option<IpAddr>,
    /// The HELO or EHLO argument.
    pub helo: Option<Host>,
    pub protocol: Protocol,
}

/// The MAIL command's parameters that outlive the session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MailFlags {
    pub smtputf8: bool,
    pub body: Option<BodyType>,
    pub ret: Option<Ret>,
    pub envid: Option<Envid>,
}

/// One recipient with the DSN parameters of its RCPT command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub path: ForwardPath,
    pub notify: Option<Notify>,
    pub orcpt: Option<OriginalRecipient>,
}

/// The envelope of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`] when written.
    pub version: u16,
    pub arrival: Timestamp,
    pub sender: ReversePath,
    pub flags: MailFlags,
    pub client: ClientInfo,
    /// In RCPT order; a result record names a recipient by its index here.
    pub recipients: BoundedVec<Recipient, MAX_RECIPIENTS>,
}

impl Message for Envelope {
    fn kind(&self) -> &'static str {
        "Envelope"
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        if self.version != ENVELOPE_VERSION {
            return Err(RecordError::EnvelopeVersion {
                got: self.version,
                supported: ENVELOPE_VERSION,
            }
            .into());
        }
        if self.recipients.is_empty() {
            return Err(RecordError::NoRecipients.into());
        }
        Ok(())
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Delivered,
    /// Try again at the record's `next_retry`.
    Deferred,
    /// Returned to the sender (or, for `<>`, dropped); final.
    Bounced,
}

impl Outcome {
    /// Whether no further delivery attempt follows.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Deferred)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Delivered => "delivered",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
        })
    }
}

/// Why a delivery attempt ended as it did: printable text, at most
/// [`MAX_DIAGNOSTIC_LEN`] octets, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic(String);

impl Diagnostic {
    pub fn new(text: &str) -> Result<Diagnostic, RecordError> {
        if text.len() > MAX_DIAGNOSTIC_LEN {
            return Err(RecordError::DiagnosticTooLong { len: text.len() });
        }
        if let Some((offset, _)) = text.char_indices().find(|(_, ch)| ch.is_control()) {
            return Err(RecordError::DiagnosticControl { offset });
        }
        Ok(Diagnostic(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Diagnostic {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

deserialize_validated!(Diagnostic, String, |s| Diagnostic::new(&s));

/// One entry of a queue file's result log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// Index into the envelope's recipients.
    pub recipient: u32,
    pub outcome: Outcome,
    /// The DSN status: 2.x.x when delivered, 4.x.x when deferred, 4.x.x or 5.x.x
    /// when bounced (a message that expires bounces with its last 4.x.x status).
    pub status: EnhancedStatus,
    pub diagnostic: Diagnostic,
    pub time: Timestamp,
    /// Set exactly when the outcome is `Deferred`.
    pub next_retry: Option<Timestamp>,
}

impl Message for ResultRecord {
    fn kind(&self) -> &'static str {
        "ResultRecord"
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        let class_ok = match self.outcome {
            Outcome::Delivered => self.status.class() == 2,
            Outcome::Deferred => self.status.class() == 4,
            Outcome::Bounced => self.status.class() != 2,
        };
        if !class_ok {
            return Err(RecordError::StatusMismatch {
                outcome: self.outcome,
                status: self.status,
            }
            .into());
        }
        if self.next_retry.is_some() != (self.outcome == Outcome::Deferred) {
            return Err(RecordError::RetryMismatch {
                outcome: self.outcome,
            }
            .into());
        }
        Ok(())
    }
}
