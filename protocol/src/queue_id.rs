//! `QueueId`: the name of a message in the queue and on every log line of its life.
//!
//! Trusts: nothing; a queue id read from a peer, a file name or a command line is
//! parsed strictly. The text form is 22 uppercase hexadecimal digits: 14 for the
//! creation time in microseconds since the Unix epoch, then 8 for a sequence number
//! chosen by the creator. Fixed width makes text order equal time order, and the
//! alphabet makes it safe as a file name on any file system, case-insensitive ones
//! included (only one spelling is accepted).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::codec::deserialize_validated;

const TIME_DIGITS: usize = 14;
const SEQ_DIGITS: usize = 8;

/// Length of a queue id's text form.
pub const QUEUE_ID_LEN: usize = TIME_DIGITS + SEQ_DIGITS;

/// The largest time the 14 digits hold: 2^56 - 1 microseconds, in the year 4253.
const MAX_MICROS: u64 = (1 << (4 * TIME_DIGITS)) - 1;

/// Why a queue id cannot be made or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueIdError {
    #[error("queue id is {len} octets, not {QUEUE_ID_LEN}")]
    Length { len: usize },
    #[error("character {ch:?} at octet {offset} of a queue id is not an uppercase hex digit")]
    BadChar { offset: usize, ch: char },
    #[error("queue id time is before 1970")]
    BeforeEpoch,
    #[error("queue id time is beyond what 14 hex digits of microseconds hold")]
    TooLate,
}

/// A unique, time-sortable, file-name-safe message id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    // Field order makes the derived `Ord` the order of the text form.
    micros: u64,
    seq: u32,
}

impl QueueId {
    /// Makes the id of a message created at `now`.
    ///
    /// Ids are unique as long as no two creators pass the same `seq` within one
    /// microsecond: a creator should combine its pid and a counter (for example
    /// `pid << 10 | counter & 0x3ff`; Linux pids fit in 22 bits). The spool still
    /// creates queue files exclusively, so a collision is an error, never an overwrite.
    pub fn new(now: SystemTime, seq: u32) -> Result<QueueId, QueueIdError> {
        let since = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| QueueIdError::BeforeEpoch)?;
        let micros = u64::try_from(since.as_micros()).map_err(|_| QueueIdError::TooLate)?;
        if micros > MAX_MICROS {
            return Err(QueueIdError::TooLate);
        }
        Ok(QueueId { micros, seq })
    }

    /// Parses the 22-digit text form.
    pub fn parse(s: &str) -> Result<QueueId, QueueIdError> {
        if s.len() != QUEUE_ID_LEN {
            return Err(QueueIdError::Length { len: s.len() });
        }
        if let Some((offset, ch)) = s
            .char_indices()
            .find(|&(_, ch)| !matches!(ch, '0'..='9' | 'A'..='F'))
        {
            return Err(QueueIdError::BadChar { offset, ch });
        }
        // 22 hex digits are 88 bits: the time in the upper 56, the sequence in the lower 32.
        let value = s
            .bytes()
            .fold(0u128, |acc, b| (acc << 4) | u128::from(hex_digit(b)));
        Ok(QueueId {
            micros: (value >> 32) as u64,
            seq: value as u32,
        })
    }

    /// When the message was created.
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.micros)
    }

    pub fn seq(&self) -> u32 {
        self.seq
    }
}

/// The value of an uppercase hex digit (already checked).
fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        _ => b - b'A' + 10,
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:0tw$X}{:0sw$X}",
            self.micros,
            self.seq,
            tw = TIME_DIGITS,
            sw = SEQ_DIGITS
        )
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

impl FromStr for QueueId {
    type Err = QueueIdError;
    fn from_str(s: &str) -> Result<Self, QueueIdError> {
        QueueId::parse(s)
    }
}

impl Serialize for QueueId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

deserialize_validated!(QueueId, String, |s| QueueId::parse(&s));

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    #[test]
    fn text_form_is_fixed_width_uppercase_hex() {
        let id = QueueId::new(at(1_700_000_000, 123_456), 0xABC).unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), QUEUE_ID_LEN);
        assert_eq!(
            text,
            format!("{:014X}{:08X}", 1_700_000_000_123_456u64, 0xABC)
        );
        assert_eq!(QueueId::parse(&text), Ok(id));
        assert_eq!(id.created(), at(1_700_000_000, 123_456));
        assert_eq!(id.seq(), 0xABC);
    }

    #[test]
    fn sorts_by_time_then_sequence() {
        let ids = [
            QueueId::new(at(5, 999_999), u32::MAX).unwrap(),
            QueueId::new(at(6, 0), 0).unwrap(),
            QueueId::new(at(6, 0), 1).unwrap(),
            QueueId::new(at(1_700_000_000, 1), 0).unwrap(),
        ];
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string());
        }
    }

    #[test]
    fn refuses_times_it_cannot_hold() {
        assert_eq!(
            QueueId::new(UNIX_EPOCH - Duration::from_secs(1), 0),
            Err(QueueIdError::BeforeEpoch)
        );
        let last = UNIX_EPOCH + Duration::from_micros(MAX_MICROS);
        assert!(QueueId::new(last, 0).is_ok());
        assert_eq!(
            QueueId::new(last + Duration::from_micros(1), 0),
            Err(QueueIdError::TooLate)
        );
    }

    #[test]
    fn refuses_bad_text() {
        let good = "0006064E8C5A3E4000000ABC";
        assert_eq!(QueueId::parse(good), Err(QueueIdError::Length { len: 24 }));
        assert_eq!(QueueId::parse(""), Err(QueueIdError::Length { len: 0 }));
        for (s, offset, ch) in [
            ("00060E8C5A3E4000000abc", 19, 'a'),
            ("00060E8C5A3E40+0000ABC", 14, '+'),
            ("../../../../etc/passwd", 0, '.'),
            ("00060E8C5A3E4000000AB\n", 21, '\n'),
        ] {
            assert_eq!(
                QueueId::parse(s),
                Err(QueueIdError::BadChar { offset, ch }),
                "{s:?}"
            );
        }
        // 22 octets but not 22 characters.
        assert!(matches!(
            QueueId::parse("00060E8C5A3E4000000Aé"),
            Err(QueueIdError::BadChar { offset: 20, .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(micros in 0..=MAX_MICROS, seq in any::<u32>()) {
            let id = QueueId::new(UNIX_EPOCH + Duration::from_micros(micros), seq).unwrap();
            let text = id.to_string();
            prop_assert_eq!(text.len(), QUEUE_ID_LEN);
            prop_assert_eq!(QueueId::parse(&text).unwrap(), id);
            let bytes = postcard::to_allocvec(&id).unwrap();
            prop_assert_eq!(postcard::from_bytes::<QueueId>(&bytes).unwrap(), id);
        }

        #[test]
        fn text_order_is_id_order(a in 0..=MAX_MICROS, b in 0..=MAX_MICROS, sa in any::<u32>(), sb in any::<u32>()) {
            let a = QueueId::new(UNIX_EPOCH + Duration::from_micros(a), sa).unwrap();
            let b = QueueId::new(UNIX_EPOCH + Duration::from_micros(b), sb).unwrap();
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }
    }
}
