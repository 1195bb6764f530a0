//! Composing a delivery status notification (RFC 3464): which recipients a notice reports,
//! who receives it, how much of the original it returns, and the text of the report itself.
//! Pure functions of the queue file's values, the settings and the time, so every case is
//! tested without processes.
//!
//! Trusts: nothing in the queue file beyond what `protocol` validated. Addresses, the ENVID,
//! ORCPT and diagnostic texts are the sender's or a remote server's words: they are validated
//! values (no control characters, bounded), and they are only ever written inside header
//! fields folded here, never as raw lines, so they cannot add fields or MIME parts. The
//! returned original is copied as it is, inside a MIME part whose boundary is checked not to
//! occur in it.
//!
//! Decisions (Postfix's bounce daemon is the reference):
//! - Selection: a failure report covers recipients whose `NOTIFY` has `FAILURE` or who gave no
//!   `NOTIFY`; a delay warning those with `DELAY` or none; a success report only those that
//!   asked for `SUCCESS`. A recipient whose latest result does not fit the notice (a failure
//!   report for a recipient the log shows delivered, or with no result at all) is left out
//!   and logged: the queue manager asked about something its own log contradicts.
//! - The report goes to the original sender. A failure report about mail from `<>` (a bounce
//!   that bounced) goes to `2bounce_notice_recipient` with the subject `Postmaster Copy:
//!   Undelivered Mail`, as Postfix's double bounce does; it is never sent to `<>`. If every
//!   reported recipient of such a message is itself a `2bounce_notice_recipient` (the double
//!   bounce bounced), the report is dropped: sending it again would loop, as Postfix discards
//!   triple bounces. Delay warnings and success reports about mail from `<>` are not sent.
//! - The report's own sender is `<>` and its `From:` is `MAILER-DAEMON@$myhostname (Mail
//!   Delivery System)`. cleanup adds `Message-ID:`.
//! - What is returned: a failure report returns the whole message as `message/rfc822` when it
//!   is at most `bounce_size_limit` octets and the sender did not ask for `RET=HDRS`;
//!   otherwise its header section as `text/rfc822-headers`. Delay warnings and success reports
//!   always return the headers only (RFC 3461 section 4.3 ties `RET` to failure reports, and
//!   Postfix returns headers with them). A `BODY=BINARYMIME` message is returned as headers
//!   only: its body may not survive an 8-bit transport, and Postern never converts it.
//! - SMTPUTF8 messages get the RFC 6533 forms: `message/global-delivery-status`,
//!   `message/global` or `message/global-headers`, and `utf-8;` addresses in raw UTF-8.
//!   Otherwise the report is 7-bit in its delivery-status part: a non-ASCII address is written
//!   as `utf-8;` with `\x{HEX}` escapes, and non-ASCII characters of a diagnostic become `?`.
//!   The returned original keeps its octets; its part (and the report) is then `8bit`.
//! - `Diagnostic-Code:` is `smtp;` when the diagnostic is an SMTP reply (it starts with a reply
//!   code) or quotes one (`host NAME[ADDR] said: 550 ...`, as Postern's smtp client words it,
//!   in which case `Remote-MTA: dns; NAME` is added and the `(in reply to ...)` tail dropped);
//!   every other diagnostic is a local explanation, `x-postern;`.
//! - Delay warnings carry `Will-Retry-Until:`: the arrival time plus
//!   `maximal_queue_lifetime`.

use std::fmt::Write as _;
use std::time::SystemTime;

use protocol::cleanup::{HeaderError, ReceivedHeader};
use protocol::delivery::NoticeKind;
use protocol::queue::{Envelope, MailFlags, Outcome, QueueFile, Recipient, Timestamp};
use protocol::smtp::{BodyType, EnhancedStatus, OriginalRecipient, Ret};
use protocol::{ForwardPath, QueueId, ReversePath};

use crate::config::Config;

/// RFC 2046 section 5.1.1: a boundary is at most 70 characters.
const MAX_BOUNDARY: usize = 70;

/// Header lines are folded before this many octets when there is a space to fold at
/// (RFC 5322 section 2.1.1 recommends 78).
const FOLD_AT: usize = 78;

/// RFC 5322 section 2.1.1: the hard limit of a line, without its CRLF.
const MAX_LINE: usize = 998;

/// A header section longer than this is cut at a line end when it is returned: a notice
/// about a message with megabytes of header fields does not need all of them, and the
/// report must stay under cleanup's `message_size_limit`.
pub const MAX_RETURNED_HEADERS: usize = 1 << 20;

/// One recipient a notice reports, with its latest result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub recipient: &'a Recipient,
    pub status: EnhancedStatus,
    pub diagnostic: &'a str,
    pub time: Timestamp,
}

/// Why a recipient the queue manager named is left out of a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("recipient {index} is not in the envelope ({count} recipients)")]
    NoSuchRecipient { index: u32, count: usize },
    #[error("recipient {index} has no result in the log")]
    NoResult { index: u32 },
    #[error("recipient {index}'s latest result is {outcome}, not what a {kind:?} notice reports")]
    WrongOutcome {
        index: u32,
        outcome: Outcome,
        kind: NoticeKind,
    },
}

/// Whether `recipient` asked for a notice of `kind` (an absent `NOTIFY` means failure and
/// delay, RFC 3461 section 4.1).
pub fn wants(kind: NoticeKind, recipient: &Recipient) -> bool {
    match (kind, recipient.notify) {
        (NoticeKind::Failure, None) | (NoticeKind::Delay, None) => true,
        (NoticeKind::Success, None) => false,
        (NoticeKind::Failure, Some(n)) => n.failure,
        (NoticeKind::Delay, Some(n)) => n.delay,
        (NoticeKind::Success, Some(n)) => n.success,
    }
}

/// The recipients of `file` among `indices` that a notice of `kind` reports, in the order
/// given, and those left out because the log contradicts the request.
pub fn select<'a>(
    kind: NoticeKind,
    file: &'a QueueFile,
    indices: &[u32],
) -> (Vec<Entry<'a>>, Vec<Skipped>) {
    let envelope = file.envelope();
    let expected = match kind {
        NoticeKind::Failure => Outcome::Bounced,
        NoticeKind::Delay => Outcome::Deferred,
        NoticeKind::Success => Outcome::Delivered,
    };
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for &index in indices {
        let Some(recipient) = envelope.recipients.get(index as usize) else {
            skipped.push(Skipped::NoSuchRecipient {
                index,
                count: envelope.recipients.len(),
            });
            continue;
        };
        if !wants(kind, recipient) {
            continue;
        }
        match file.result(index as usize) {
            None => skipped.push(Skipped::NoResult { index }),
            Some(r) if r.outcome != expected => skipped.push(Skipped::WrongOutcome {
                index,
                outcome: r.outcome,
                kind,
            }),
            Some(r) => entries.push(Entry {
                recipient,
                status: r.status,
                diagnostic: r.diagnostic.as_str(),
                time: r.time,
            }),
        }
    }
    (entries, skipped)
}

/// Who receives a report about `entries` of a message with `envelope`; `None` when no report
/// is sent (see the module header).
pub fn addressees(
    config: &Config,
    kind: NoticeKind,
    envelope: &Envelope,
    entries: &[Entry<'_>],
) -> Option<Vec<ForwardPath>> {
    match &envelope.sender {
        ReversePath::Mailbox(m) => Some(vec![ForwardPath::Mailbox(m.clone())]),
        ReversePath::Null if kind != NoticeKind::Failure => None,
        ReversePath::Null => {
            let is_postmaster = |path: &ForwardPath| {
                let text = path.to_string();
                config
                    .double_bounce_recipients
                    .iter()
                    .any(|p| p.to_string().eq_ignore_ascii_case(&text))
            };
            if entries.iter().all(|e| is_postmaster(&e.recipient.path)) {
                None
            } else {
                Some(config.double_bounce_recipients.clone())
            }
        }
    }
}

/// How much of the original a report returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Message,
    Headers,
}

/// What a notice of `kind` returns of a message with these flags and this length.
pub fn what_to_return(kind: NoticeKind, flags: &MailFlags, content_len: u64, limit: u64) -> Return {
    let full = kind == NoticeKind::Failure
        && flags.ret != Some(Ret::Hdrs)
        && flags.body != Some(BodyType::BinaryMime)
        && content_len <= limit;
    if full {
        Return::Message
    } else {
        Return::Headers
    }
}

/// The header section of `content`: every line before the first empty one, each with its
/// CRLF; all of it when there is no empty line.
pub fn header_section(content: &[u8]) -> &[u8] {
    if content.starts_with(b"\r\n") {
        return &[];
    }
    match find(content, b"\r\n\r\n") {
        Some(at) => &content[..at + 2],
        None => content,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A report ready for cleanup: its envelope, `Received:` header and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub recipients: Vec<ForwardPath>,
    pub flags: MailFlags,
    pub received: ReceivedHeader,
    pub text: Vec<u8>,
}

/// What a report is about.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    pub kind: NoticeKind,
    pub queue_id: QueueId,
    pub envelope: &'a Envelope,
    pub entries: Vec<Entry<'a>>,
    pub recipients: Vec<ForwardPath>,
}

/// Writes the report. `original` is what [`what_to_return`] chose: the whole content, or
/// its header section; `unique` makes the MIME boundary differ between reports composed in
/// the same microsecond.
pub fn compose(
    config: &Config,
    notice: &Notice<'_>,
    returned: Return,
    original: &[u8],
    now: SystemTime,
    unique: u64,
) -> Result<Report, HeaderError> {
    let envelope = notice.envelope;
    let global = envelope.flags.smtputf8;
    let host = config.myhostname.as_str();
    let date = daemon::date::rfc5322(now);
    let double = envelope.sender == ReversePath::Null;
    let boundary = boundary(notice.queue_id, now, unique, host, original);

    let mut human = String::new();
    human_text(config, notice, double, &mut human);
    let status = delivery_status(config, notice, global);

    let mut text = String::new();
    field(&mut text, "Date", &date);
    field(
        &mut text,
        "From",
        &format!("MAILER-DAEMON@{host} (Mail Delivery System)"),
    );
    let subject = match (notice.kind, double) {
        (NoticeKind::Failure, true) => "Postmaster Copy: Undelivered Mail",
        (NoticeKind::Failure, false) => "Undelivered Mail Returned to Sender",
        (NoticeKind::Delay, _) => "Delayed Mail (still being retried)",
        (NoticeKind::Success, _) => "Successful Mail Delivery Report",
    };
    field(&mut text, "Subject", subject);
    let to: Vec<String> = notice.recipients.iter().map(bare).collect();
    field(&mut text, "To", &to.join(", "));
    field(&mut text, "Auto-Submitted", "auto-replied");
    field(&mut text, "MIME-Version", "1.0");
    field(
        &mut text,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    let eight_bit = !human.is_ascii() || !status.is_ascii() || !original.is_ascii();
    field(
        &mut text,
        "Content-Transfer-Encoding",
        if eight_bit { "8bit" } else { "7bit" },
    );
    text.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    let _ = write!(text, "--{boundary}\r\n");
    field(&mut text, "Content-Description", "Notification");
    let charset = if human.is_ascii() {
        "us-ascii"
    } else {
        "utf-8"
    };
    field(
        &mut text,
        "Content-Type",
        &format!("text/plain; charset={charset}"),
    );
    if !human.is_ascii() {
        field(&mut text, "Content-Transfer-Encoding", "8bit");
    }
    text.push_str("\r\n");
    text.push_str(&human);

    let _ = write!(text, "\r\n--{boundary}\r\n");
    field(&mut text, "Content-Description", "Delivery report");
    let status_type = if global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    field(&mut text, "Content-Type", status_type);
    if !status.is_ascii() {
        field(&mut text, "Content-Transfer-Encoding", "8bit");
    }
    text.push_str("\r\n");
    text.push_str(&status);

    let _ = write!(text, "\r\n--{boundary}\r\n");
    let (description, content_type) = match (returned, notice.kind, global) {
        (Return::Message, _, false) => ("Undelivered Message", "message/rfc822"),
        (Return::Message, _, true) => ("Undelivered Message", "message/global"),
        (Return::Headers, kind, global) => (
            match kind {
                NoticeKind::Failure => "Undelivered Message Headers",
                NoticeKind::Delay => "Delayed Message Headers",
                NoticeKind::Success => "Delivered Message Headers",
            },
            if global {
                "message/global-headers"
            } else {
                "text/rfc822-headers"
            },
        ),
    };
    field(&mut text, "Content-Description", description);
    field(&mut text, "Content-Type", content_type);
    field(
        &mut text,
        "Content-Transfer-Encoding",
        if original.is_ascii() { "7bit" } else { "8bit" },
    );
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(original);
    if !original.is_empty() && !original.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let received = ReceivedHeader::new(&format!("Received: by {host} (Postern);\r\n\t{date}"))?;
    let flags = MailFlags {
        smtputf8: global,
        body: (!bytes.is_ascii()).then_some(BodyType::EightBitMime),
        ret: None,
        envid: None,
    };
    Ok(Report {
        recipients: notice.recipients.clone(),
        flags,
        received,
        text: bytes,
    })
}

/// The path without its angle brackets, as a `To:` field writes it.
fn bare(path: &ForwardPath) -> String {
    match path {
        ForwardPath::Postmaster => "postmaster".to_owned(),
        ForwardPath::Mailbox(m) => m.to_string(),
    }
}

/// A boundary that does not occur in `original`: the queue id, the time and a counter, as
/// Postfix's `QUEUEID.TIME/HOST`, cut to the length limit.
fn boundary(
    queue_id: QueueId,
    now: SystemTime,
    unique: u64,
    host: &str,
    original: &[u8],
) -> String {
    let micros = Timestamp::from_system_time(now).micros();
    let mut n = unique;
    loop {
        let mut b = format!("{queue_id}.{micros}.{n}/{host}");
        b.truncate(MAX_BOUNDARY);
        // Host names are ASCII, so the cut is at a character edge; a dot or hyphen at the end
        // is still a valid boundary character, but a space is not and cannot occur.
        if find(original, b.as_bytes()).is_none() {
            return b;
        }
        n = n.wrapping_add(1);
    }
}

fn human_text(config: &Config, notice: &Notice<'_>, double: bool, out: &mut String) {
    let host = config.myhostname.as_str();
    let _ = write!(out, "This is the mail system at host {host}.\r\n\r\n");
    let intro: &[&str] = match (notice.kind, double) {
        (NoticeKind::Failure, false) => &[
            "Your message could not be delivered to one or more of its recipients,",
            "and the mail system has stopped trying. Each recipient and the reason",
            "are listed below; the message itself is attached.",
            "",
            "If you need help, write to postmaster and include this report. You may",
            "remove the text of your own message from what you send.",
        ],
        (NoticeKind::Failure, true) => &[
            "A delivery status notification from this system could not be delivered",
            "to its recipients, listed below with the reason. The notification was",
            "sent with the null sender, so it cannot be returned again: it is",
            "attached here for the postmaster.",
        ],
        (NoticeKind::Delay, _) => &[
            "This is a warning only: you do not need to send your message again.",
            "",
            "The mail system has not yet been able to deliver your message to the",
            "recipients listed below. It keeps trying until the time shown in the",
            "report, and tells you again if it has to give up.",
        ],
        (NoticeKind::Success, _) => &[
            "Your message was delivered to the recipients listed below, as you",
            "asked. This report confirms the delivery; it does not tell whether",
            "anyone has read the message.",
        ],
    };
    for line in intro {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n                   The mail system\r\n\r\n");
    for e in &notice.entries {
        wrap(&format!("{}: {}", e.recipient.path, e.diagnostic), out);
    }
}

/// Writes `text` as lines of at most [`FOLD_AT`] octets where it has spaces to break at
/// (continuation lines indented), never longer than [`MAX_LINE`], each ended by CRLF.
fn wrap(text: &str, out: &mut String) {
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.len() + 1 + word.len() > FOLD_AT {
            out.push_str(&line);
            out.push_str("\r\n");
            line = "    ".to_owned();
        } else if !line.is_empty() {
            line.push(' ');
        }
        push_bounded(&mut line, word, out, "    ");
    }
    if !line.trim().is_empty() {
        out.push_str(&line);
        out.push_str("\r\n");
    }
}

/// Appends `word` to `line`, emitting full lines to `out` whenever `line` would pass
/// [`MAX_LINE`] (a word that long has no better place to break).
fn push_bounded(line: &mut String, word: &str, out: &mut String, indent: &str) {
    for ch in word.chars() {
        if line.len() + ch.len_utf8() > MAX_LINE {
            out.push_str(line);
            out.push_str("\r\n");
            *line = indent.to_owned();
        }
        line.push(ch);
    }
}

/// Writes `Name: value` folded at spaces (RFC 5322 section 2.2.3), CRLF-terminated.
fn field(out: &mut String, name: &str, value: &str) {
    let mut line = format!("{name}:");
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if line.len() > name.len() + 1 && line.len() + 1 + word.len() > FOLD_AT {
            out.push_str(&line);
            out.push_str("\r\n");
            line = "\t".to_owned();
        } else {
            line.push(' ');
        }
        push_bounded(&mut line, word, out, "\t");
    }
    out.push_str(&line);
    out.push_str("\r\n");
}

/// `text` with every non-ASCII character replaced by `?`, for 7-bit fields.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// `address` as RFC 6533's `utf-8-addr-xtext`: every character but the plain printable ASCII
/// ones (`+`, `=`, `\\` and space included) as `\x{HEX}`, so that it is 7-bit.
fn utf8_xtext(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    for ch in address.chars() {
        if ch.is_ascii_graphic() && !matches!(ch, '+' | '=' | '\\') {
            out.push(ch);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(ch));
        }
    }
    out
}

/// `type; address` for `Final-Recipient:` and `X-Postern-Sender:`.
fn typed_address(address: &str, global: bool) -> String {
    if address.is_ascii() {
        format!("rfc822; {address}")
    } else if global {
        format!("utf-8; {address}")
    } else {
        // RFC 6533 section 3: outside message/global-delivery-status a UTF-8 address is
        // written with \x{HEX} escapes.
        format!("utf-8; {}", utf8_xtext(address))
    }
}

/// `Original-Recipient:` from ORCPT: the type as the client gave it, then the address
/// (decoded from the parameter's xtext); a non-ASCII address in a 7-bit report becomes a
/// `utf-8` one with escapes.
fn original_recipient(orcpt: &OriginalRecipient, global: bool) -> String {
    let address = orcpt.address();
    let utf8_type = orcpt.addr_type() == OriginalRecipient::UTF8_TYPE;
    if global || (address.is_ascii() && !utf8_type) {
        format!("{};{address}", orcpt.addr_type())
    } else {
        format!("{};{}", OriginalRecipient::UTF8_TYPE, utf8_xtext(address))
    }
}

/// The path's address without brackets (`postmaster` for the bare `<Postmaster>`).
fn address_of(path: &ForwardPath) -> String {
    bare(path)
}

/// How a diagnostic goes into `Diagnostic-Code:`, and the remote host it quotes if any.
struct Diagnosis<'a> {
    kind: &'static str,
    text: &'a str,
    remote: Option<&'a str>,
}

fn is_reply(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 3
        && (b'2'..=b'5').contains(&b[0])
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && b.get(3).is_none_or(|c| *c == b' ' || *c == b'-')
}

fn diagnose(text: &str) -> Diagnosis<'_> {
    if is_reply(text) {
        return Diagnosis {
            kind: "smtp",
            text,
            remote: None,
        };
    }
    if let Some((who, said)) = text.split_once(" said: ") {
        if is_reply(said) {
            let said = said.rfind(" (in reply to ").map_or(said, |at| &said[..at]);
            let remote = who
                .strip_prefix("host ")
                .map(|h| h.split('[').next().unwrap_or(h))
                .filter(|h| !h.is_empty() && !h.contains(' '));
            return Diagnosis {
                kind: "smtp",
                text: said,
                remote,
            };
        }
    }
    Diagnosis {
        kind: "x-postern",
        text,
        remote: None,
    }
}

fn delivery_status(config: &Config, notice: &Notice<'_>, global: bool) -> String {
    let envelope = notice.envelope;
    let clean = |s: &str| if global { s.to_owned() } else { ascii(s) };
    let mut out = String::new();
    field(
        &mut out,
        "Reporting-MTA",
        &format!("dns; {}", config.myhostname),
    );
    field(&mut out, "X-Postern-Queue-ID", &notice.queue_id.to_string());
    if let ReversePath::Mailbox(m) = &envelope.sender {
        field(
            &mut out,
            "X-Postern-Sender",
            &typed_address(&m.to_string(), global),
        );
    }
    if let Some(envid) = &envelope.flags.envid {
        field(&mut out, "Original-Envelope-Id", envid.as_str());
    }
    field(
        &mut out,
        "Arrival-Date",
        &daemon::date::rfc5322(envelope.arrival.to_system_time()),
    );
    let action = match notice.kind {
        NoticeKind::Failure => "failed",
        NoticeKind::Delay => "delayed",
        NoticeKind::Success => "delivered",
    };
    let retry_until = envelope.arrival.to_system_time() + config.maximal_queue_lifetime;
    for e in &notice.entries {
        out.push_str("\r\n");
        field(
            &mut out,
            "Final-Recipient",
            &typed_address(&address_of(&e.recipient.path), global),
        );
        if let Some(orcpt) = &e.recipient.orcpt {
            field(
                &mut out,
                "Original-Recipient",
                &original_recipient(orcpt, global),
            );
        }
        field(&mut out, "Action", action);
        field(&mut out, "Status", &e.status.to_string());
        let d = diagnose(e.diagnostic);
        if let Some(remote) = d.remote {
            field(&mut out, "Remote-MTA", &format!("dns; {}", clean(remote)));
        }
        if !d.text.is_empty() {
            field(
                &mut out,
                "Diagnostic-Code",
                &format!("{}; {}", d.kind, clean(d.text)),
            );
        }
        field(
            &mut out,
            "Last-Attempt-Date",
            &daemon::date::rfc5322(e.time.to_system_time()),
        );
        if notice.kind == NoticeKind::Delay {
            field(
                &mut out,
                "Will-Retry-Until",
                &daemon::date::rfc5322(retry_until),
            );
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
