//! What a delivery attempt comes to, and how a system error maps to a DSN status
//! (Postfix's `mbox_dsn` rule: a full file system is `4.3.0`, an over-quota or
//! too-large mailbox `5.2.2`, anything else `4.2.0`), except that a failure to read
//! the queue file is `4.3.0` whatever its errno.

use std::io;

use protocol::queue::{Diagnostic, Outcome, MAX_DIAGNOSTIC_LEN};
use protocol::EnhancedStatus;

/// One recipient's result, before it is sent to the queue manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub status: EnhancedStatus,
    pub text: String,
}

fn status(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
    // INVARIANT: every caller passes literals of this module (classes 2, 4, 5; numbers
    // below 1000), never outside data.
    EnhancedStatus::new(class, subject, detail).expect("a literal status is valid")
}

impl Verdict {
    pub fn delivered(text: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Delivered,
            status: status(2, 0, 0),
            text: text.into(),
        }
    }

    pub fn deferred(subject: u16, detail: u16, text: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Deferred,
            status: status(4, subject, detail),
            text: text.into(),
        }
    }

    pub fn bounced(subject: u16, detail: u16, text: impl Into<String>) -> Verdict {
        Verdict {
            outcome: Outcome::Bounced,
            status: status(5, subject, detail),
            text: text.into(),
        }
    }

    /// A system error while delivering: `what` says what was being done, the error
    /// text carries the errno.
    pub fn from_io(what: &str, e: &io::Error) -> Verdict {
        let text = format!("{what}: {}", describe(e));
        if crate::content::is_queue_read_error(e) {
            return Verdict::deferred(3, 0, text);
        }
        match e.raw_os_error() {
            Some(libc::ENOSPC) => Verdict::deferred(3, 0, text),
            Some(libc::EDQUOT) | Some(libc::EFBIG) => Verdict::bounced(2, 2, text),
            _ => Verdict::deferred(2, 0, text),
        }
    }

    /// A mailbox or file that `safe_open` would not write: deferred `4.2.0` and logged as
    /// a warning (someone may have planted it), or for a system error, the errno's status.
    /// For a file destination (`file`), a missing directory or another error that is not
    /// temporary bounces `5.2.0`, Postfix's status for `cannot open file`.
    pub fn refused(e: &crate::safe_open::Refusal, file: bool) -> Verdict {
        use crate::safe_open::Refusal;
        match e {
            Refusal::Io { what, path, source } => {
                let v = Verdict::from_io(&format!("cannot open {what} {path}"), source);
                if file && v.status.class() == 4 && v.status.subject() == 2 && !temporary(source) {
                    return Verdict::bounced(2, 0, v.text);
                }
                v
            }
            refusal => {
                tracing::warn!("{refusal}");
                Verdict::deferred(2, 0, refusal.to_string())
            }
        }
    }

    /// A directory on the way to a mailbox that is not used (see `dirs`).
    pub fn refused_dir(e: &crate::dirs::DirRefusal) -> Verdict {
        match e {
            crate::dirs::DirRefusal::Io { path, source } => {
                Verdict::from_io(&format!("cannot create directory {path}"), source)
            }
            refusal => {
                tracing::warn!("{refusal}");
                Verdict::deferred(2, 0, refusal.to_string())
            }
        }
    }

    /// The text as a queue-file diagnostic: control characters (from a table value or
    /// an error message) become `?`, and it is cut to the record's limit.
    pub fn diagnostic(&self) -> Diagnostic {
        let mut text: String = self
            .text
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        if text.len() > MAX_DIAGNOSTIC_LEN {
            let mut cut = MAX_DIAGNOSTIC_LEN;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        // Cleaned and cut above, so it is a valid diagnostic; the fallback is a literal.
        Diagnostic::new(&text).unwrap_or_else(|_| {
            Diagnostic::new("delivery status text unavailable").expect("a literal diagnostic")
        })
    }
}

/// An errno as the C library words it (`No such file or directory`), without Rust's
/// `(os error N)` suffix; other errors as they display.
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => e.to_string(),
    }
}

/// Errors that go away by themselves (Postfix's `mbox_dsn`: `EAGAIN`, `ESTALE`, a full
/// file system).
fn temporary(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ESTALE | libc::ENOSPC | libc::EINTR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classes() {
        let v = Verdict::from_io("x", &io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            (v.outcome, v.status.to_string()),
            (Outcome::Deferred, "4.2.0".into())
        );
        assert!(v.text.contains("Permission denied"), "{}", v.text);
        let v = Verdict::from_io("x", &io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(
            (v.outcome, v.status.to_string()),
            (Outcome::Deferred, "4.3.0".into())
        );
        let v = Verdict::from_io("x", &io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(
            (v.outcome, v.status.to_string()),
            (Outcome::Bounced, "5.2.2".into())
        );
    }

    #[test]
    fn diagnostics_are_cleaned_and_bounded() {
        let v = Verdict::deferred(2, 0, format!("a\nb{}", "é".repeat(2000)));
        let d = v.diagnostic();
        assert!(d.as_str().starts_with("a?b"));
        assert!(d.as_str().len() <= MAX_DIAGNOSTIC_LEN);
    }
}
