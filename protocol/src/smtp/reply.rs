//! SMTP replies (RFC 5321 section 4.2) with enhanced status codes (RFC 2034,
//! RFC 3463), and the replies Postern sends, worded as Postfix words them.
//!
//! Trusts: nothing put into a reply. A reply is built only through constructors
//! that refuse line breaks and other control characters, so text that came from a
//! client or a peer (and passed through [`printable`]) cannot end a reply early or
//! forge a second one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::deserialize_validated;
use crate::queue_id::QueueId;

/// RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
pub const MAX_REPLY_LINE: usize = 512;

/// Client text quoted in a reply (an unknown parameter, a bad HELO name) is cut
/// to this many characters: enough to recognise it, short enough that the line
/// stays under [`MAX_REPLY_LINE`].
pub const MAX_QUOTED_LEN: usize = 100;

/// Why a reply or a status code cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("enhanced status class {class} is not 2, 4 or 5")]
    Class { class: u8 },
    #[error("enhanced status subject or detail {value} is more than 999")]
    Number { value: u16 },
    #[error("enhanced status code is not of the form class.subject.detail")]
    Syntax,
    #[error("reply code {code} is not in 200..=599")]
    Code { code: u16 },
    #[error("reply code {code} and enhanced status class {class} disagree")]
    ClassMismatch { code: u16, class: u8 },
    #[error("reply has no lines")]
    NoLines,
    #[error("reply line {line} has a control character at octet {offset}")]
    Control { line: usize, offset: usize },
    #[error(
        "reply line {line} is {len} octets, more than {MAX_REPLY_LINE} with its code and CRLF"
    )]
    LineTooLong { line: usize, len: usize },
}

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

#[derive(Deserialize)]
struct EnhancedStatusWire {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    pub fn new(class: u8, subject: u16, detail: u16) -> Result<EnhancedStatus, StatusError> {
        if !matches!(class, 2 | 4 | 5) {
            return Err(StatusError::Class { class });
        }
        for value in [subject, detail] {
            if value > 999 {
                return Err(StatusError::Number { value });
            }
        }
        Ok(EnhancedStatus {
            class,
            subject,
            detail,
        })
    }

    pub fn class(&self) -> u8 {
        self.class
    }
    pub fn subject(&self) -> u16 {
        self.subject
    }
    pub fn detail(&self) -> u16 {
        self.detail
    }

    /// For the constant table of this module, whose codes are known good.
    const fn known(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedStatus {
    type Err = StatusError;
    fn from_str(s: &str) -> Result<EnhancedStatus, StatusError> {
        let mut parts = s.split('.');
        let mut next = |max_digits: usize| {
            parts
                .next()
                .filter(|p| {
                    !p.is_empty() && p.len() <= max_digits && p.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or(StatusError::Syntax)
        };
        let class = next(1)?;
        let subject = next(3)?;
        let detail = next(3)?;
        if parts.next().is_some() {
            return Err(StatusError::Syntax);
        }
        let class = u8::try_from(class).map_err(|_| StatusError::Syntax)?;
        EnhancedStatus::new(class, subject, detail)
    }
}

deserialize_validated!(EnhancedStatus, EnhancedStatusWire, |w| {
    EnhancedStatus::new(w.class, w.subject, w.detail)
});

/// One SMTP reply: a code, an optional enhanced status code written at the start
/// of every line, and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl Reply {
    /// Builds a reply, checking the code, that the enhanced class matches the
    /// code's first digit, and that every line is free of control characters and
    /// fits in [`MAX_REPLY_LINE`].
    pub fn new(
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        lines: Vec<String>,
    ) -> Result<Reply, StatusError> {
        if !(200..=599).contains(&code) {
            return Err(StatusError::Code { code });
        }
        let enhanced = enhanced
            .map(|(class, subject, detail)| EnhancedStatus::new(class, subject, detail))
            .transpose()?;
        if let Some(status) = enhanced {
            if u16::from(status.class) != code / 100 {
                return Err(StatusError::ClassMismatch {
                    code,
                    class: status.class,
                });
            }
        }
        if lines.is_empty() {
            return Err(StatusError::NoLines);
        }
        // "250-" + "x.yyy.zzz " + text + CRLF
        let overhead = 4 + enhanced.map_or(0, |s| s.to_string().len() + 1) + 2;
        for (line, text) in lines.iter().enumerate() {
            if let Some((offset, _)) = text.char_indices().find(|(_, ch)| ch.is_control()) {
                return Err(StatusError::Control { line, offset });
            }
            if overhead + text.len() > MAX_REPLY_LINE {
                return Err(StatusError::LineTooLong {
                    line,
                    len: overhead + text.len(),
                });
            }
        }
        Ok(Reply {
            code,
            enhanced,
            lines,
        })
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> Option<EnhancedStatus> {
        self.enhanced
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 4xx or 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form, `250-...` lines and a last `250 ...` line, each with
    /// CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.to_string().as_bytes());
    }

    /// A reply whose parts are constants of this module, or client text that has
    /// passed through [`printable`] and a fixed-length format.
    pub(crate) fn fixed(code: u16, enhanced: Option<EnhancedStatus>, text: String) -> Reply {
        debug_assert!(Reply::new(
            code,
            enhanced.map(|s| (s.class, s.subject, s.detail)),
            vec![text.clone()]
        )
        .is_ok());
        Reply {
            code,
            enhanced,
            lines: vec![text],
        }
    }

    pub(crate) fn status(code: u16, class: u8, subject: u16, detail: u16, text: &str) -> Reply {
        Reply::fixed(
            code,
            Some(EnhancedStatus::known(class, subject, detail)),
            text.to_owned(),
        )
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, text) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write!(f, "{}{sep}", self.code)?;
            if let Some(status) = self.enhanced {
                write!(f, "{status} ")?;
            }
            write!(f, "{text}\r\n")?;
        }
        Ok(())
    }
}

/// Client text made safe to quote in a reply or a log line: every character that
/// is not printable ASCII becomes `?`, and the result is cut to
/// [`MAX_QUOTED_LEN`] characters.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(MAX_QUOTED_LEN)
        .map(|ch| if (' '..='~').contains(&ch) { ch } else { '?' })
        .collect()
}

/// The replies of an SMTP session, as Postfix's smtpd words them, so that clients
/// and administrators see what they know. Host names passed in are configuration
/// (`myhostname`); addresses are validated values whose text is printable.
impl Reply {
    /// `220 <banner>`: the greeting; `banner` is `$myhostname ESMTP ...`.
    pub fn greeting(banner: &str) -> Reply {
        Reply::fixed(220, None, printable(banner))
    }
    /// `250 <myhostname>`: the answer to HELO.
    pub fn helo(myhostname: &str) -> Reply {
        Reply::fixed(250, None, printable(myhostname))
    }
    /// `250-<myhostname>` and one `250` line per keyword: the answer to EHLO.
    pub fn ehlo(myhostname: &str, keywords: &[&str]) -> Reply {
        let mut lines = vec![printable(myhostname)];
        lines.extend(keywords.iter().map(|k| printable(k)));
        Reply {
            code: 250,
            enhanced: None,
            lines,
        }
    }
    /// `250 2.0.0 Ok` (NOOP, RSET).
    pub fn ok() -> Reply {
        Reply::status(250, 2, 0, 0, "Ok")
    }
    /// `250 2.1.0 Ok` (MAIL accepted).
    pub fn sender_ok() -> Reply {
        Reply::status(250, 2, 1, 0, "Ok")
    }
    /// `250 2.1.5 Ok` (RCPT accepted).
    pub fn recipient_ok() -> Reply {
        Reply::status(250, 2, 1, 5, "Ok")
    }
    /// `250 2.0.0 Ok: <n> bytes` (a BDAT chunk other than the last).
    pub fn chunk_ok(bytes: u64) -> Reply {
        Reply::status(250, 2, 0, 0, &format!("Ok: {bytes} bytes"))
    }
    /// `250 2.0.0 Ok: queued as <id>`: the message is durable.
    pub fn queued(id: QueueId) -> Reply {
        Reply::status(250, 2, 0, 0, &format!("Ok: queued as {id}"))
    }
    /// `354 End data with <CR><LF>.<CR><LF>`.
    pub fn start_data() -> Reply {
        Reply::fixed(354, None, "End data with <CR><LF>.<CR><LF>".to_owned())
    }
    /// `221 2.0.0 Bye`.
    pub fn bye() -> Reply {
        Reply::status(221, 2, 0, 0, "Bye")
    }
    /// `214 2.0.0 Commands: ...`: HELP, which Postfix does not offer.
    pub fn help(commands: &[&str]) -> Reply {
        let list: Vec<String> = commands.iter().map(|c| printable(c)).collect();
        Reply::status(214, 2, 0, 0, &format!("Commands: {}", list.join(" ")))
    }
    /// `252 2.0.0 <address>`: VRFY enabled, the address not verified further.
    pub fn vrfy_unverified(address: &str) -> Reply {
        Reply::status(252, 2, 0, 0, &printable(address))
    }
    /// `502 5.5.1 VRFY command is disabled`.
    pub fn vrfy_disabled() -> Reply {
        Reply::status(502, 5, 5, 1, "VRFY command is disabled")
    }
    /// `502 5.5.1 Error: command not implemented` (STARTTLS, AUTH without support).
    pub fn not_implemented() -> Reply {
        Reply::status(502, 5, 5, 1, "Error: command not implemented")
    }
    /// `502 5.5.2 Error: command not recognized`.
    pub fn unrecognized() -> Reply {
        Reply::status(502, 5, 5, 2, "Error: command not recognized")
    }
    /// `500 5.5.2 Error: line too long`: a command line over `line_length_limit`.
    pub fn line_too_long() -> Reply {
        Reply::status(500, 5, 5, 2, "Error: line too long")
    }
    /// `503 5.5.1 Error: send HELO/EHLO first`.
    pub fn send_helo_first() -> Reply {
        Reply::status(503, 5, 5, 1, "Error: send HELO/EHLO first")
    }
    /// `503 5.5.1 Error: nested MAIL command`.
    pub fn nested_mail() -> Reply {
        Reply::status(503, 5, 5, 1, "Error: nested MAIL command")
    }
    /// `503 5.5.1 Error: need MAIL command`.
    pub fn need_mail() -> Reply {
        Reply::status(503, 5, 5, 1, "Error: need MAIL command")
    }
    /// `503 5.5.1 Error: need RCPT command`.
    pub fn need_rcpt() -> Reply {
        Reply::status(503, 5, 5, 1, "Error: need RCPT command")
    }
    /// `554 5.5.1 Error: no valid recipients`: DATA after every RCPT was refused.
    pub fn no_valid_recipients() -> Reply {
        Reply::status(554, 5, 5, 1, "Error: no valid recipients")
    }
    /// `503 5.5.1 Error: MAIL after BDAT`, `RCPT after BDAT`, `DATA after BDAT`.
    pub fn after_bdat(verb: &str) -> Reply {
        Reply::status(
            503,
            5,
            5,
            1,
            &format!("Error: {} after BDAT", printable(verb)),
        )
    }
    /// `452 4.5.3 Error: too many recipients` (`smtpd_recipient_limit`).
    pub fn too_many_recipients() -> Reply {
        Reply::status(452, 4, 5, 3, "Error: too many recipients")
    }
    /// `552 5.3.4 Message size exceeds fixed limit` (`message_size_limit`, at MAIL
    /// SIZE= or when the content grows past it).
    pub fn message_too_big() -> Reply {
        Reply::status(552, 5, 3, 4, "Message size exceeds fixed limit")
    }
    /// `552 5.3.4 Chunk exceeds message size limit` (BDAT).
    pub fn chunk_too_big() -> Reply {
        Reply::status(552, 5, 3, 4, "Chunk exceeds message size limit")
    }
    /// `553 5.6.7 Must declare SMTPUTF8 to send unicode address`.
    pub fn smtputf8_required() -> Reply {
        Reply::status(
            553,
            5,
            6,
            7,
            "Must declare SMTPUTF8 to send unicode address",
        )
    }
    /// `554 5.7.1 <address>: Relay access denied`.
    pub fn relay_denied(address: &str) -> Reply {
        Reply::status(
            554,
            5,
            7,
            1,
            &format!("<{}>: Relay access denied", printable(address)),
        )
    }
    /// `421 4.7.0 <myhostname> Error: too many errors` (`smtpd_hard_error_limit`).
    pub fn too_many_errors(myhostname: &str) -> Reply {
        Reply::status(
            421,
            4,
            7,
            0,
            &format!("{} Error: too many errors", printable(myhostname)),
        )
    }
    /// `421 4.4.2 <myhostname> Error: timeout exceeded`.
    pub fn timeout(myhostname: &str) -> Reply {
        Reply::status(
            421,
            4,
            4,
            2,
            &format!("{} Error: timeout exceeded", printable(myhostname)),
        )
    }
    /// `421 4.3.2 <myhostname> Service shutting down, closing transmission channel`.
    pub fn shutting_down(myhostname: &str) -> Reply {
        Reply::status(
            421,
            4,
            3,
            2,
            &format!(
                "{} Service shutting down, closing transmission channel",
                printable(myhostname)
            ),
        )
    }
    /// `451 4.3.0 Error: queue file write error`: cleanup failed temporarily.
    pub fn queue_write_error() -> Reply {
        Reply::status(451, 4, 3, 0, "Error: queue file write error")
    }
    /// `521 5.7.0 Error: I can break rules, too. Goodbye.`: a command that is
    /// never SMTP (`CONNECT`, `GET`, `POST`), after which the session ends.
    pub fn forbidden_command() -> Reply {
        Reply::status(521, 5, 7, 0, "Error: I can break rules, too. Goodbye.")
    }
    /// `552 5.3.4 Error: message file too big`: the content grew past
    /// `message_size_limit` during DATA or BDAT (read to its end first), or cleanup
    /// refused it for good.
    pub fn message_file_too_big() -> Reply {
        Reply::status(552, 5, 3, 4, "Error: message file too big")
    }
    /// `554 5.5.0 Error: SMTP protocol synchronization`: a client sent commands
    /// where it must wait for a reply (`smtpd_forbid_unauth_pipelining`); the
    /// session ends.
    pub fn protocol_synchronization() -> Reply {
        Reply::status(554, 5, 5, 0, "Error: SMTP protocol synchronization")
    }
    /// `521 5.5.2 <myhostname> Error: bare <LF> received`
    /// (`smtpd_forbid_bare_newline = reject`); the session ends. `code` is
    /// `smtpd_forbid_bare_newline_reject_code`, a 4xx or 5xx code (the enhanced
    /// code's class follows it); anything else is answered as 521.
    pub fn bare_newline(code: u16, myhostname: &str) -> Reply {
        let code = if (400..600).contains(&code) {
            code
        } else {
            521
        };
        Reply::status(
            code,
            (code / 100) as u8,
            5,
            2,
            &format!("{} Error: bare <LF> received", printable(myhostname)),
        )
    }
    /// `503 5.5.1 Error: MAIL transaction in progress`: HELO or EHLO between MAIL
    /// and the end of the message.
    pub fn transaction_in_progress() -> Reply {
        Reply::status(503, 5, 5, 1, "Error: MAIL transaction in progress")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line_forms() {
        assert_eq!(Reply::ok().to_string(), "250 2.0.0 Ok\r\n");
        assert_eq!(
            Reply::ehlo("mx.example.test", &["PIPELINING", "SIZE 10240000"]).to_string(),
            "250-mx.example.test\r\n250-PIPELINING\r\n250 SIZE 10240000\r\n"
        );
        let r = Reply::new(550, Some((5, 1, 1)), vec!["first".into(), "second".into()]).unwrap();
        assert_eq!(r.to_string(), "550-5.1.1 first\r\n550 5.1.1 second\r\n");
        let mut out = b"x".to_vec();
        r.write_to(&mut out);
        assert_eq!(&out[1..], r.to_string().as_bytes());
        assert!(r.is_error());
        assert!(!Reply::ok().is_error());
    }

    #[test]
    fn new_refuses_bad_replies() {
        assert_eq!(
            Reply::new(199, None, vec!["x".into()]),
            Err(StatusError::Code { code: 199 })
        );
        assert_eq!(
            Reply::new(250, Some((5, 0, 0)), vec!["x".into()]),
            Err(StatusError::ClassMismatch {
                code: 250,
                class: 5
            })
        );
        assert_eq!(
            Reply::new(250, Some((3, 0, 0)), vec!["x".into()]),
            Err(StatusError::Class { class: 3 })
        );
        assert_eq!(
            Reply::new(250, Some((2, 1000, 0)), vec!["x".into()]),
            Err(StatusError::Number { value: 1000 })
        );
        assert_eq!(Reply::new(250, None, vec![]), Err(StatusError::NoLines));
        assert_eq!(
            Reply::new(250, None, vec!["ok".into(), "a\r\n250 forged".into()]),
            Err(StatusError::Control { line: 1, offset: 1 })
        );
        let max = "x".repeat(MAX_REPLY_LINE - 4 - 6 - 2);
        assert!(Reply::new(250, Some((2, 0, 0)), vec![max.clone()]).is_ok());
        assert_eq!(
            Reply::new(250, Some((2, 0, 0)), vec![format!("{max}x")]),
            Err(StatusError::LineTooLong { line: 0, len: 513 })
        );
    }

    #[test]
    fn client_text_is_made_printable_and_short() {
        assert_eq!(printable("a\r\nb\u{e9}"), "a??b?");
        assert_eq!(printable(&"x".repeat(500)).len(), MAX_QUOTED_LEN);
        assert_eq!(
            Reply::relay_denied("u@x\r\n250 ok").to_string(),
            "554 5.7.1 <u@x??250 ok>: Relay access denied\r\n"
        );
    }

    #[test]
    fn enhanced_status_parses_and_checks() {
        let s: EnhancedStatus = "5.1.1".parse().unwrap();
        assert_eq!((s.class(), s.subject(), s.detail()), (5, 1, 1));
        assert_eq!(s.to_string(), "5.1.1");
        assert_eq!(
            "4.999.999".parse::<EnhancedStatus>().unwrap().subject(),
            999
        );
        for bad in [
            "", "5.1", "5.1.1.1", "55.1.1", "5.1000.1", "5..1", "5.1.x", "+5.1.1",
        ] {
            assert_eq!(
                bad.parse::<EnhancedStatus>(),
                Err(StatusError::Syntax),
                "{bad}"
            );
        }
        assert_eq!(
            "3.1.1".parse::<EnhancedStatus>(),
            Err(StatusError::Class { class: 3 })
        );
        let bytes = postcard::to_allocvec(&(7u8, 1u16, 1u16)).unwrap();
        assert!(postcard::from_bytes::<EnhancedStatus>(&bytes).is_err());
    }

    #[test]
    fn every_constructor_builds_a_valid_reply() {
        let id = QueueId::new(std::time::SystemTime::now(), 7).unwrap();
        for r in [
            Reply::greeting("mx.example.test ESMTP Postern"),
            Reply::helo("mx.example.test"),
            Reply::ehlo("mx.example.test", &["8BITMIME"]),
            Reply::ok(),
            Reply::sender_ok(),
            Reply::recipient_ok(),
            Reply::chunk_ok(1024),
            Reply::queued(id),
            Reply::start_data(),
            Reply::bye(),
            Reply::help(&["HELO", "EHLO"]),
            Reply::vrfy_unverified("user@example.test"),
            Reply::vrfy_disabled(),
            Reply::not_implemented(),
            Reply::unrecognized(),
            Reply::line_too_long(),
            Reply::send_helo_first(),
            Reply::nested_mail(),
            Reply::need_mail(),
            Reply::need_rcpt(),
            Reply::no_valid_recipients(),
            Reply::after_bdat("MAIL"),
            Reply::too_many_recipients(),
            Reply::message_too_big(),
            Reply::chunk_too_big(),
            Reply::smtputf8_required(),
            Reply::relay_denied(&"a".repeat(400)),
            Reply::too_many_errors(&"h".repeat(300)),
            Reply::timeout("mx.example.test"),
            Reply::shutting_down("mx.example.test"),
            Reply::queue_write_error(),
            Reply::forbidden_command(),
            Reply::message_file_too_big(),
            Reply::protocol_synchronization(),
            Reply::bare_newline(521, &"h".repeat(300)),
            Reply::transaction_in_progress(),
        ] {
            let enhanced = r.enhanced().map(|s| (s.class(), s.subject(), s.detail()));
            assert_eq!(
                Reply::new(r.code(), enhanced, r.lines().to_vec()).as_ref(),
                Ok(&r),
                "{r}"
            );
        }
        assert_eq!(
            Reply::queued(id).to_string(),
            format!("250 2.0.0 Ok: queued as {id}\r\n")
        );
    }
}
