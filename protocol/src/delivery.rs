//! The channels between the queue manager and the programs it hands mail to: a
//! delivery agent (`virtual`, `local`, `smtp`) gets [`ToAgent`] and answers with
//! [`FromAgent`]; the bounce daemon gets [`ToBounce`] and answers with
//! [`FromBounce`].
//!
//! Trusts: nothing in either direction. An agent decodes what a queue manager that
//! may run an attacker's code sent; the queue manager decodes each agent's answer
//! with the same care (an agent that reports on a recipient it was not given is a
//! protocol error the queue manager detects: the indices here are only checked for
//! uniqueness within one message).
//!
//! A delivery request carries the queue file as a read-only descriptor (the agent
//! never sees the spool), where its content starts and how long it is, and the
//! envelope fields the agent needs, so the agent does not have to trust or parse the
//! envelope in the file. The agent answers with one [`FromAgent::Result`] per
//! recipient, in any order, then [`FromAgent::Done`]; a recipient without a result
//! when `Done` arrives (or when the channel closes) is deferred by the queue manager.
//!
//! A notice request names the queue file (descriptor attached) and which recipients
//! to report; the bounce daemon reads their results from the file's own result log,
//! which the queue manager has written and fsync'd before asking.

use serde::{Deserialize, Serialize};

use crate::address::{Domain, ReversePath};
use crate::bounded::BoundedVec;
use crate::codec::{InvalidValue, Message};
use crate::control::Detail;
use crate::queue::{Diagnostic, MailFlags, Outcome, Recipient, Timestamp};
use crate::queue_id::QueueId;
use crate::smtp::EnhancedStatus;

/// Recipients per delivery request: Postfix's `default_destination_recipient_limit`
/// is 50, and 50 recipients of at most about 800 encoded octets each fit in one
/// datagram. A larger `*_destination_recipient_limit` is capped here.
pub const RECIPIENTS_PER_REQUEST: usize = 50;

/// Recipients per notice: indices are at most five octets each, so 8192 of them fit
/// in a datagram. A message with more bounced recipients gets more than one notice.
pub const RECIPIENTS_PER_NOTICE: usize = 8192;

/// Why a delivery or notice message is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("a request names no recipient")]
    NoRecipients,
    #[error("recipient index {index} appears twice in one request")]
    DuplicateIndex { index: u32 },
    #[error("status {status} does not fit the outcome {outcome}")]
    StatusMismatch {
        outcome: Outcome,
        status: EnhancedStatus,
    },
}

impl From<DeliveryError> for InvalidValue {
    fn from(e: DeliveryError) -> InvalidValue {
        InvalidValue::Delivery(e)
    }
}

fn unique(indices: impl Iterator<Item = u32>) -> Result<(), DeliveryError> {
    let mut seen: Vec<u32> = indices.collect();
    seen.sort_unstable();
    match seen.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(DeliveryError::DuplicateIndex { index: w[0] }),
        None => Ok(()),
    }
}

/// One recipient of a delivery request: its index in the queue file's envelope
/// (results name it by that) and the recipient with its DSN fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecipient {
    pub index: u32,
    pub recipient: Recipient,
}

/// From the queue manager to a delivery agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToAgent {
    /// Deliver the content of the queue file whose read-only descriptor travels
    /// with this message to `recipients`.
    Deliver {
        queue_id: QueueId,
        /// The domain the recipients share (the next hop for `smtp`).
        nexthop: Domain,
        sender: ReversePath,
        flags: MailFlags,
        arrival: Timestamp,
        /// Where the message text starts in the file, and its length.
        content_offset: u64,
        content_len: u64,
        recipients: BoundedVec<DeliveryRecipient, RECIPIENTS_PER_REQUEST>,
    },
}

impl Message for ToAgent {
    fn kind(&self) -> &'static str {
        "Deliver"
    }

    fn fd_count(&self) -> usize {
        1
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        let ToAgent::Deliver { recipients, .. } = self;
        if recipients.is_empty() {
            return Err(DeliveryError::NoRecipients.into());
        }
        unique(recipients.iter().map(|r| r.index))?;
        Ok(())
    }
}

/// From a delivery agent to the queue manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromAgent {
    /// What happened to the recipient with this envelope index. `Delivered` comes
    /// with a 2.x.x status, `Deferred` with 4.x.x, `Bounced` with 5.x.x.
    Result {
        index: u32,
        outcome: Outcome,
        status: EnhancedStatus,
        diagnostic: Diagnostic,
    },
    /// The request is finished; recipients without a result are deferred.
    Done,
}

impl Message for FromAgent {
    fn kind(&self) -> &'static str {
        match self {
            FromAgent::Result { .. } => "Result",
            FromAgent::Done => "Done",
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        if let FromAgent::Result {
            outcome, status, ..
        } = self
        {
            let class = match outcome {
                Outcome::Delivered => 2,
                Outcome::Deferred => 4,
                Outcome::Bounced => 5,
            };
            if status.class() != class {
                return Err(DeliveryError::StatusMismatch {
                    outcome: *outcome,
                    status: *status,
                }
                .into());
            }
        }
        Ok(())
    }
}

/// What a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoticeKind {
    /// Non-delivery: the recipients bounced (or their message expired).
    Failure,
    /// Still trying: a `delay_warning_time` warning.
    Delay,
    /// Delivered, for recipients that asked with `NOTIFY=SUCCESS`.
    Success,
}

/// From the queue manager to the bounce daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToBounce {
    /// Send the sender of the queue file (descriptor attached) a notice about these
    /// recipients (envelope indices), whose latest results are in the file's log.
    Notify {
        queue_id: QueueId,
        kind: NoticeKind,
        recipients: BoundedVec<u32, RECIPIENTS_PER_NOTICE>,
    },
}

impl Message for ToBounce {
    fn kind(&self) -> &'static str {
        "Notify"
    }

    fn fd_count(&self) -> usize {
        1
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        let ToBounce::Notify { recipients, .. } = self;
        if recipients.is_empty() {
            return Err(DeliveryError::NoRecipients.into());
        }
        unique(recipients.iter().copied())?;
        Ok(())
    }
}

/// From the bounce daemon to the queue manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromBounce {
    /// The notice is queued under `id`, or needed no message (`None`: every
    /// recipient said `NOTIFY=NEVER`, or a double bounce is discarded by policy).
    Sent { id: Option<QueueId> },
    /// Not sent; `temporary` failures are retried by the queue manager.
    Failed { temporary: bool, detail: Detail },
}

impl Message for FromBounce {
    fn kind(&self) -> &'static str {
        match self {
            FromBounce::Sent { .. } => "Sent",
            FromBounce::Failed { .. } => "Failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode, DecodeError};
    use crate::queue::Timestamp;
    use crate::ForwardPath;

    fn recipient(index: u32) -> DeliveryRecipient {
        DeliveryRecipient {
            index,
            recipient: Recipient {
                path: ForwardPath::parse("<user@example.test>", false).unwrap(),
                notify: None,
                orcpt: None,
            },
        }
    }

    fn request(indices: &[u32]) -> ToAgent {
        ToAgent::Deliver {
            queue_id: QueueId::parse("0005F1A2B3C4D5E6000001").unwrap(),
            nexthop: Domain::parse("example.test", false).unwrap(),
            sender: ReversePath::parse("<a@example.org>", false).unwrap(),
            flags: MailFlags::default(),
            arrival: Timestamp::from_micros(1),
            content_offset: 100,
            content_len: 2000,
            recipients: indices
                .iter()
                .map(|i| recipient(*i))
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        }
    }

    #[test]
    fn a_request_round_trips_and_carries_one_fd() {
        let msg = request(&[0, 3, 7]);
        assert_eq!(msg.fd_count(), 1);
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode::<ToAgent>(&bytes).unwrap(), msg);
    }

    #[test]
    fn duplicate_or_missing_recipients_are_refused() {
        for bad in [request(&[]), request(&[1, 2, 1])] {
            assert!(encode(&bad).is_err());
        }
    }

    #[test]
    fn a_result_status_must_fit_its_outcome() {
        let result = |outcome, status: &str| FromAgent::Result {
            index: 0,
            outcome,
            status: status.parse().unwrap(),
            diagnostic: Diagnostic::new("text").unwrap(),
        };
        for (outcome, status, ok) in [
            (Outcome::Delivered, "2.0.0", true),
            (Outcome::Deferred, "4.2.0", true),
            (Outcome::Bounced, "5.1.1", true),
            (Outcome::Delivered, "4.0.0", false),
            (Outcome::Deferred, "5.0.0", false),
            (Outcome::Bounced, "4.4.7", false),
        ] {
            let msg = result(outcome, status);
            match encode(&msg) {
                Ok(bytes) => {
                    assert!(ok, "{outcome} {status} encoded");
                    assert_eq!(decode::<FromAgent>(&bytes).unwrap(), msg);
                }
                Err(_) => assert!(!ok, "{outcome} {status} refused"),
            }
        }
    }

    #[test]
    fn a_forged_result_is_refused_on_decode() {
        // Encode a valid Result, then flip its outcome tag to Delivered while the
        // status stays 5.x.x: decoding must refuse it.
        let good = FromAgent::Result {
            index: 4,
            outcome: Outcome::Bounced,
            status: "5.1.1".parse().unwrap(),
            diagnostic: Diagnostic::new("unknown user").unwrap(),
        };
        let mut bytes = encode(&good).unwrap();
        // Layout: variant tag 0, index varint 4, outcome tag (Bounced = 2).
        assert_eq!(&bytes[..3], &[0, 4, 2]);
        bytes[2] = 0;
        assert!(matches!(
            decode::<FromAgent>(&bytes),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn notices_round_trip_and_refuse_duplicates() {
        let msg = ToBounce::Notify {
            queue_id: QueueId::parse("0005F1A2B3C4D5E6000001").unwrap(),
            kind: NoticeKind::Failure,
            recipients: vec![0, 2].try_into().unwrap(),
        };
        assert_eq!(msg.fd_count(), 1);
        assert_eq!(decode::<ToBounce>(&encode(&msg).unwrap()).unwrap(), msg);
        let dup = ToBounce::Notify {
            queue_id: QueueId::parse("0005F1A2B3C4D5E6000001").unwrap(),
            kind: NoticeKind::Delay,
            recipients: vec![5, 5].try_into().unwrap(),
        };
        assert!(encode(&dup).is_err());
        for answer in [
            FromBounce::Sent { id: None },
            FromBounce::Sent {
                id: Some(QueueId::parse("0005F1A2B3C4D5E6000002").unwrap()),
            },
        ] {
            assert_eq!(
                decode::<FromBounce>(&encode(&answer).unwrap()).unwrap(),
                answer
            );
        }
    }
}
