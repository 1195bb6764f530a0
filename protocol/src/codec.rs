//! Strict postcard framing: `encode` and `decode` of whole messages.
//!
//! Trusts: postcard to read the bytes it is given and no more; the `Deserialize`
//! impls of this crate's validated types to refuse invalid values.
//!
//! Does not trust: the input. `decode` consumes the whole input (postcard's
//! `from_bytes` silently ignores trailing bytes, so it is not used), reports
//! truncation, over-long collections and invalid values as distinct typed errors,
//! and then runs the message's own cross-field checks (`Message::validate`).
//!
//! Postcard turns every error raised inside a `Deserialize` impl into one opaque
//! `SerdeDeCustom`. To keep the reason, this crate's impls record it in a
//! thread-local slot through [`reject_value`]/[`reject_length`] before failing,
//! and `decode` takes it back out. The slot is cleared before each decode, so a
//! stale reason can never be reported.

use std::cell::Cell;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::address::AddressError;
use crate::bounded::LengthError;
use crate::cleanup::HeaderError;
use crate::control::{DetailError, ReportError};
use crate::queue::RecordError;
use crate::queue_id::QueueIdError;
use crate::service::ServiceNameError;
use crate::smtp::{ParamError, StatusError};

/// A message that travels on a channel or is stored in a queue file.
pub trait Message: Serialize + DeserializeOwned {
    /// The variant's name, for log lines (`kind=Connected`).
    fn kind(&self) -> &'static str;

    /// How many file descriptors travel with this message; a datagram with any other
    /// number is refused and its descriptors closed.
    fn fd_count(&self) -> usize {
        0
    }

    /// Checks that need more than one field or the protocol version. Values of the
    /// field types are already valid by construction.
    fn validate(&self) -> Result<(), InvalidValue> {
        Ok(())
    }
}

/// A value that its type does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    QueueId(#[from] QueueIdError),
    #[error(transparent)]
    ServiceName(#[from] ServiceNameError),
    #[error(transparent)]
    SandboxReport(#[from] ReportError),
    #[error(transparent)]
    Detail(#[from] DetailError),
    #[error(transparent)]
    Parameter(#[from] ParamError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Delivery(crate::delivery::DeliveryError),
    #[error(transparent)]
    LocalChild(crate::local::ChildReportError),
    #[error("spawn request: {0}")]
    Spawn(&'static str),
    #[error(transparent)]
    Proxymap(crate::proxymap::LookupError),
    #[error("protocol version {got} is not the version this side speaks ({supported})")]
    UnknownVersion { got: u32, supported: u32 },
}

/// Why a byte string is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated: the input ended before the message did")]
    Truncated,
    #[error("{count} trailing bytes after the end of the message")]
    TrailingBytes { count: usize },
    #[error("collection over its bound: {0}")]
    OverBound(LengthError),
    #[error("invalid value: {0}")]
    Invalid(InvalidValue),
    #[error("value outside the message schema (unknown variant or tag)")]
    Schema,
    #[error("malformed encoding: {0}")]
    Malformed(postcard::Error),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("refusing to encode a {kind} message: {reason}")]
    Invalid {
        kind: &'static str,
        reason: InvalidValue,
    },
    #[error("encoding a {kind} message failed: {source}")]
    Serialize {
        kind: &'static str,
        source: postcard::Error,
    },
}

enum Rejection {
    OverBound(LengthError),
    Invalid(InvalidValue),
}

thread_local! {
    static REJECTION: Cell<Option<Rejection>> = const { Cell::new(None) };
}

/// Fails a `Deserialize` impl with a typed reason that `decode` will report.
pub(crate) fn reject_value<E: serde::de::Error>(why: impl Into<InvalidValue>) -> E {
    let why = why.into();
    let err = E::custom(&why);
    REJECTION.with(|slot| slot.set(Some(Rejection::Invalid(why))));
    err
}

/// Fails a `Deserialize` impl of a bounded collection that is over its bound.
pub(crate) fn reject_length<E: serde::de::Error>(why: LengthError) -> E {
    let err = E::custom(why);
    REJECTION.with(|slot| slot.set(Some(Rejection::OverBound(why))));
    err
}

/// Implements `Deserialize` for a validated type by deserializing its wire form and
/// passing it through the type's validating constructor, keeping the typed reason on
/// failure.
macro_rules! deserialize_validated {
    ($ty:ty, $wire:ty, $validate:expr) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let wire = <$wire as serde::Deserialize<'de>>::deserialize(d)?;
                let validate: fn($wire) -> Result<$ty, _> = $validate;
                validate(wire).map_err($crate::codec::reject_value)
            }
        }
    };
}
pub(crate) use deserialize_validated;

/// Encodes a message after checking it is one the receiving side would accept.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, EncodeError> {
    msg.validate().map_err(|reason| EncodeError::Invalid {
        kind: msg.kind(),
        reason,
    })?;
    postcard::to_allocvec(msg).map_err(|source| EncodeError::Serialize {
        kind: msg.kind(),
        source,
    })
}

/// Decodes exactly one message from `bytes`: all of them, validated.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    let msg: M = decode_value(bytes)?;
    msg.validate().map_err(DecodeError::Invalid)?;
    Ok(msg)
}

fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    REJECTION.with(|slot| slot.set(None));
    let result = postcard::take_from_bytes::<T>(bytes);
    let rejection = REJECTION.with(Cell::take);
    match result {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(DecodeError::TrailingBytes { count: rest.len() }),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
        Err(postcard::Error::SerdeDeCustom) => Err(match rejection {
            Some(Rejection::OverBound(e)) => DecodeError::OverBound(e),
            Some(Rejection::Invalid(e)) => DecodeError::Invalid(e),
            None => DecodeError::Schema,
        }),
        Err(e) => Err(DecodeError::Malformed(e)),
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::bounded::{BoundedBytes, BoundedString, BoundedVec};
    use crate::service::ServiceName;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Probe {
        Numbers(BoundedVec<u32, 4>),
        Units(BoundedVec<(), 4>),
        Bytes(BoundedBytes<8>),
        Text(BoundedString<8>),
        Service(ServiceName),
        Versioned(u32),
    }

    impl Message for Probe {
        fn kind(&self) -> &'static str {
            "Probe"
        }
        fn validate(&self) -> Result<(), InvalidValue> {
            match self {
                Probe::Versioned(v) if *v != 1 => Err(InvalidValue::UnknownVersion {
                    got: *v,
                    supported: 1,
                }),
                _ => Ok(()),
            }
        }
    }

    fn numbers(items: &[u32]) -> Probe {
        Probe::Numbers(BoundedVec::try_from(items.to_vec()).unwrap())
    }

    #[test]
    fn round_trip() {
        let msg = numbers(&[1, 2, 300]);
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode::<Probe>(&bytes).unwrap(), msg);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&numbers(&[1])).unwrap();
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode::<Probe>(&bytes),
            Err(DecodeError::TrailingBytes { count: 2 })
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode(&numbers(&[1, 70000, 3])).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                decode::<Probe>(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_collection_from_a_tiny_input_is_refused_by_its_length() {
        // Variant 0 (`Numbers`) or 1 (`Units`, whose elements take no input bytes), then a
        // length varint of 268_435_455 in four bytes.
        for variant in [0, 1] {
            let bytes = [variant, 0xff, 0xff, 0xff, 0x7f];
            assert_eq!(
                decode::<Probe>(&bytes),
                Err(DecodeError::OverBound(LengthError {
                    what: "list",
                    max: 4
                }))
            );
        }
        // A declared length within the bound but beyond the input is truncation.
        assert_eq!(decode::<Probe>(&[0, 4, 1, 2]), Err(DecodeError::Truncated));
    }

    #[test]
    fn declared_length_over_the_bound_is_refused_before_reading_elements() {
        // Five one-byte elements where four are allowed.
        let bytes = [0, 5, 1, 2, 3, 4, 5];
        assert!(matches!(
            decode::<Probe>(&bytes),
            Err(DecodeError::OverBound(_))
        ));
    }

    #[test]
    fn bytes_and_strings_over_their_bound_are_refused() {
        let mut bytes = vec![2, 9];
        bytes.extend_from_slice(&[b'a'; 9]);
        assert!(matches!(
            decode::<Probe>(&bytes),
            Err(DecodeError::OverBound(LengthError { max: 8, .. }))
        ));
        bytes[0] = 3;
        assert!(matches!(
            decode::<Probe>(&bytes),
            Err(DecodeError::OverBound(LengthError { max: 8, .. }))
        ));
    }

    #[test]
    fn invalid_values_keep_their_reason() {
        let bytes = postcard::to_allocvec(&(4u8, "Bad Name")).unwrap();
        assert!(matches!(
            decode::<Probe>(&bytes),
            Err(DecodeError::Invalid(InvalidValue::ServiceName(_)))
        ));
    }

    #[test]
    fn a_rejection_does_not_leak_into_the_next_decode() {
        let bad = postcard::to_allocvec(&(4u8, "Bad Name")).unwrap();
        assert!(decode::<Probe>(&bad).is_err());
        assert_eq!(decode::<Probe>(&[9]), Err(DecodeError::Schema));
    }

    #[test]
    fn unknown_variant_is_a_schema_error() {
        assert_eq!(decode::<Probe>(&[6]), Err(DecodeError::Schema));
    }

    #[test]
    fn bad_utf8_is_malformed() {
        assert_eq!(
            decode::<Probe>(&[3, 1, 0xff]),
            Err(DecodeError::Malformed(postcard::Error::DeserializeBadUtf8))
        );
    }

    #[test]
    fn validate_runs_on_decode_and_on_encode() {
        let bytes = postcard::to_allocvec(&Probe::Versioned(2)).unwrap();
        assert_eq!(
            decode::<Probe>(&bytes),
            Err(DecodeError::Invalid(InvalidValue::UnknownVersion {
                got: 2,
                supported: 1
            }))
        );
        assert!(matches!(
            encode(&Probe::Versioned(2)),
            Err(EncodeError::Invalid { kind: "Probe", .. })
        ));
    }
}
