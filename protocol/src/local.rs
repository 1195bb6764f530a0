//! What a `local` delivery child tells the agent's privileged parent, through the pipe the
//! parent made for it: the child runs as the recipient (or as `nobody` for an alias's command
//! or file), reads the message and the user's `.forward` — bytes a remote client or a local
//! user controls — and answers with one of these, so that the uid-0 parent reads no such byte
//! itself, only this decoded message.
//!
//! Trusts: nothing. A child runs the recipient's identity and may have been subverted by what
//! it read (a hostile `.forward`), so every string is bounded and checked here: no NUL or
//! control characters, file and include paths absolute, commands non-empty.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::codec::{InvalidValue, Message};
use crate::queue::Diagnostic;
use crate::smtp::EnhancedStatus;

/// Entries of one `.forward` (Postfix reads a `.forward` as an include file; 1000 entries is
/// far beyond any real one, and the file itself is read to at most 64 KiB).
pub const MAX_FORWARD_ENTRIES: usize = 1000;
/// One entry: an address (at most 256 octets as a path) or a command line or a path.
pub const MAX_ENTRY_LEN: usize = 4096;
/// The largest report a child may send (its whole pipe output is read up to this).
pub const MAX_REPORT: usize = 256 << 10;

type Text = BoundedString<MAX_ENTRY_LEN>;

/// One destination a `.forward` names, as `policy::aliases` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardEntry {
    /// A local name or `user@domain`; `escaped` for `\user`.
    Address { address: Text, escaped: bool },
    /// `|command`: the text after the bar.
    Command(Text),
    /// `/file`: an absolute path.
    File(Text),
    /// `:include:/path`.
    Include(Text),
}

/// Why a child's report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildReportError {
    #[error("a forward entry has a control character")]
    Control,
    #[error("a forward entry is empty")]
    Empty,
    #[error("a file or include path in a forward entry is not absolute")]
    Relative,
    #[error("a result's status does not fit a delivery result")]
    Status,
}

impl From<ChildReportError> for InvalidValue {
    fn from(e: ChildReportError) -> InvalidValue {
        InvalidValue::LocalChild(e)
    }
}

/// From a delivery child to the `local` agent's parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromDeliveryChild {
    /// The delivery's result: a 2.x.x, 4.x.x or 5.x.x status and its text.
    Result {
        status: EnhancedStatus,
        diagnostic: Diagnostic,
    },
    /// The user's `.forward`, parsed by the child that read it.
    Forward(BoundedVec<ForwardEntry, MAX_FORWARD_ENTRIES>),
    /// The user has no `.forward`.
    NoForward,
}

impl ForwardEntry {
    fn check(&self) -> Result<(), ChildReportError> {
        let (text, path) = match self {
            ForwardEntry::Address { address, .. } => (address, false),
            ForwardEntry::Command(c) => (c, false),
            ForwardEntry::File(p) | ForwardEntry::Include(p) => (p, true),
        };
        if text.is_empty() {
            return Err(ChildReportError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(ChildReportError::Control);
        }
        if path && !text.starts_with('/') {
            return Err(ChildReportError::Relative);
        }
        Ok(())
    }
}

impl Message for FromDeliveryChild {
    fn kind(&self) -> &'static str {
        match self {
            FromDeliveryChild::Result { .. } => "Result",
            FromDeliveryChild::Forward(_) => "Forward",
            FromDeliveryChild::NoForward => "NoForward",
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            FromDeliveryChild::Result { status, .. } => {
                if matches!(status.class(), 2 | 4 | 5) {
                    Ok(())
                } else {
                    Err(ChildReportError::Status.into())
                }
            }
            FromDeliveryChild::Forward(entries) => {
                for e in entries.iter() {
                    e.check()?;
                }
                Ok(())
            }
            FromDeliveryChild::NoForward => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn text(s: &str) -> Text {
        Text::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn reports_round_trip_and_bad_entries_are_refused() {
        let fwd = FromDeliveryChild::Forward(
            vec![
                ForwardEntry::Address {
                    address: text("bob@example.org"),
                    escaped: false,
                },
                ForwardEntry::Command(text("procmail")),
                ForwardEntry::File(text("/home/u/archive")),
            ]
            .try_into()
            .unwrap(),
        );
        let bytes = encode(&fwd).unwrap();
        assert_eq!(decode::<FromDeliveryChild>(&bytes).unwrap(), fwd);
        for bad in [
            ForwardEntry::File(text("relative/file")),
            ForwardEntry::Command(text("")),
            ForwardEntry::Address {
                address: text("a\nb"),
                escaped: false,
            },
        ] {
            let msg = FromDeliveryChild::Forward(vec![bad].try_into().unwrap());
            assert!(encode(&msg).is_err(), "{msg:?}");
            let raw = postcard::to_allocvec(&msg).unwrap();
            assert!(decode::<FromDeliveryChild>(&raw).is_err(), "{msg:?}");
        }
        let raw = encode(&FromDeliveryChild::NoForward).unwrap();
        assert!(decode::<FromDeliveryChild>(&[raw.as_slice(), b"x"].concat()).is_err());
    }
}
