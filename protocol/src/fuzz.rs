//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test.
//!
//! Each takes arbitrary bytes, never panics on them, and for whatever decodes checks
//! that it comes back unchanged: encode→decode for messages, Display→parse for
//! addresses and SMTP commands, write→read for queue files. A panic here is a bug
//! in this crate, which is what a fuzzer looks for.

use std::io::{Cursor, Read};

use crate::address::{parse_path, Host, Mailbox};
use crate::cleanup::{FromCleanup, ToCleanup, ToQmgr};
use crate::codec::{decode, encode, Message};
use crate::control::{FromMaster, ToMaster};
use crate::delivery::{FromAgent, FromBounce, ToAgent, ToBounce};
use crate::header::{delivered_to, Additions, HeaderScanner};
use crate::queue::{verify, QueueFile, QueueFileWriter, QueueLimits};
use crate::smtp::data::{BareNewline, DotReader, Feed};
use crate::smtp::{Command, Reply};

fn message_round_trip<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(msg) = decode::<M>(data) else {
        return;
    };
    let bytes = match encode(&msg) {
        Ok(bytes) => bytes,
        Err(e) => panic!("decoded {msg:?} does not encode: {e}"),
    };
    match decode::<M>(&bytes) {
        Ok(again) => assert_eq!(again, msg, "encode→decode changed the message"),
        Err(e) => panic!("re-encoded {msg:?} does not decode: {e}"),
    }
}

/// Tries `parse` with and without SMTPUTF8: what parses without it must parse the
/// same with it, be ASCII, and each result must survive Display→parse.
fn address_round_trip<T: PartialEq + std::fmt::Debug + std::fmt::Display>(
    data: &[u8],
    parse: impl Fn(&str, bool) -> Result<T, crate::address::AddressError>,
    is_ascii: impl Fn(&T) -> bool,
) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ascii = parse(text, false).ok();
    let utf8 = parse(text, true).ok();
    if let Some(value) = &ascii {
        assert!(
            is_ascii(value),
            "{value:?} parsed without SMTPUTF8 is not ASCII"
        );
        assert_eq!(utf8.as_ref(), Some(value), "SMTPUTF8 changed the result");
    }
    for (value, flag) in [(ascii, false), (utf8, true)] {
        if let Some(value) = value {
            let shown = value.to_string();
            match parse(&shown, flag) {
                Ok(again) => {
                    assert_eq!(again, value, "Display→parse changed {shown:?}");
                    assert_eq!(again.to_string(), shown, "Display is not stable");
                }
                Err(e) => panic!("{shown:?}, the display of {value:?}, does not parse: {e}"),
            }
        }
    }
}

/// Decodes a `ToMaster` datagram.
pub fn to_master(data: &[u8]) {
    message_round_trip::<ToMaster>(data);
}

/// Decodes a `FromMaster` datagram.
pub fn from_master(data: &[u8]) {
    message_round_trip::<FromMaster>(data);
}

/// Parses `local-part@domain`.
pub fn mailbox(data: &[u8]) {
    address_round_trip(data, Mailbox::parse, Mailbox::is_ascii);
}

/// Parses what may follow an `@`: a domain or an address literal.
pub fn domain(data: &[u8]) {
    address_round_trip(data, Host::parse, Host::is_ascii);
}

/// Parses `<...>` as MAIL FROM and RCPT TO carry it.
pub fn path(data: &[u8]) {
    address_round_trip(data, parse_path, |p| match p {
        crate::address::Path::Mailbox(m) => m.is_ascii(),
        _ => true,
    });
}

/// Decodes a `ToCleanup` datagram.
pub fn to_cleanup(data: &[u8]) {
    message_round_trip::<ToCleanup>(data);
}

/// Decodes a `FromCleanup` datagram.
pub fn from_cleanup(data: &[u8]) {
    message_round_trip::<FromCleanup>(data);
}

/// Decodes a `ToQmgr` datagram.
pub fn to_qmgr(data: &[u8]) {
    message_round_trip::<ToQmgr>(data);
}

/// Decodes a `ToAgent` datagram (a delivery request, as an agent reads it).
pub fn to_agent(data: &[u8]) {
    message_round_trip::<ToAgent>(data);
}

/// Decodes a `FromAgent` datagram (a delivery result, as the queue manager reads it).
pub fn from_agent(data: &[u8]) {
    message_round_trip::<FromAgent>(data);
}

/// Decodes a `ToBounce` datagram (a notice request, as the bounce daemon reads it).
pub fn to_bounce(data: &[u8]) {
    message_round_trip::<ToBounce>(data);
}

/// Decodes a `FromBounce` datagram (the bounce daemon's answer).
pub fn from_bounce(data: &[u8]) {
    message_round_trip::<FromBounce>(data);
}

/// Parses an SMTP command line: what parses must come back unchanged through
/// `Display`, and every error must have a valid reply.
pub fn smtp_command(data: &[u8]) {
    match Command::parse(data) {
        Ok(cmd) => {
            let line = cmd.to_string();
            match Command::parse(line.as_bytes()) {
                Ok(again) => assert_eq!(again, cmd, "Display→parse changed {line:?}"),
                Err(e) => panic!("{line:?}, the display of {cmd:?}, does not parse: {e}"),
            }
        }
        Err(e) => {
            let reply = e.reply();
            let enhanced = reply
                .enhanced()
                .map(|s| (s.class(), s.subject(), s.detail()));
            assert_eq!(
                Reply::new(reply.code(), enhanced, reply.lines().to_vec()).as_ref(),
                Ok(&reply),
                "the reply to {e:?} is not a valid reply"
            );
        }
    }
}

/// Reads a queue file. What reads must have a readable content of the length
/// its end marker records, and writing its envelope and content again must give
/// a file that reads back the same and passes `verify`.
pub fn queue_file(data: &[u8]) {
    let _ = verify(Cursor::new(data));
    let Ok(qf) = QueueFile::read(Cursor::new(data), QueueLimits::default()) else {
        return;
    };
    let mut content = Vec::new();
    let read = match qf.content(Cursor::new(data)) {
        Ok(mut reader) => reader.read_to_end(&mut content).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = read {
        panic!("a file that reads has unreadable content: {e}");
    }
    assert_eq!(content.len() as u64, qf.content_len());
    let mut writer = match QueueFileWriter::begin(Vec::new(), qf.envelope()) {
        Ok(w) => w,
        Err(e) => panic!("a decoded envelope does not encode: {e}"),
    };
    if let Err(e) = writer.write_content(&content) {
        panic!("content that was read cannot be written: {e}");
    }
    let (copy, checksum) = match writer.finish() {
        Ok(done) => done,
        Err(e) => panic!("finishing a copy failed: {e}"),
    };
    match QueueFile::read(Cursor::new(&copy), QueueLimits::default()) {
        Ok(again) => {
            assert_eq!(
                again.envelope(),
                qf.envelope(),
                "rewrite changed the envelope"
            );
            assert_eq!(again.content_len(), qf.content_len());
        }
        Err(e) => panic!("a rewritten queue file does not read: {e}"),
    }
    match verify(Cursor::new(&copy)) {
        Ok(sum) => assert_eq!(sum, checksum),
        Err(e) => panic!("a rewritten queue file does not verify: {e}"),
    }
}

/// What one [`DotReader`] run over a whole input gave: the stored text, how it ended, and
/// after how many octets of the input.
#[derive(Debug, PartialEq, Eq)]
struct DataRun {
    stored: Vec<u8>,
    end: DataEnd,
    consumed: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataEnd {
    More,
    End,
    BareLf,
}

/// Feeds `input` to a fresh reader in pieces of `piece` octets.
fn read_data(mode: BareNewline, after_crlf: bool, input: &[u8], piece: usize) -> DataRun {
    let mut reader = DotReader::new(mode, after_crlf);
    let mut stored = Vec::new();
    let mut offset = 0;
    for chunk in input.chunks(piece.max(1)) {
        let (end, used) = match reader.feed(chunk, &mut stored) {
            Feed::More => (DataEnd::More, chunk.len()),
            Feed::End { consumed } => (DataEnd::End, consumed),
            Feed::BareLf { consumed } => (DataEnd::BareLf, consumed),
        };
        assert!(
            used <= chunk.len(),
            "{end:?} after {used} of {} octets",
            chunk.len()
        );
        offset += used;
        if end != DataEnd::More {
            return DataRun {
                stored,
                end,
                consumed: offset,
            };
        }
    }
    DataRun {
        stored,
        end: DataEnd::More,
        consumed: offset,
    }
}

/// RFC 5321 dot-stuffing of stored text (CRLF lines), as a client sends it after `354`.
fn dot_stuff(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let mut line_start = true;
    for (i, &b) in text.iter().enumerate() {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n' && i > 0 && text[i - 1] == b'\r';
    }
    out
}

/// The SMTP DATA reader. The first octet chooses the mode (`% 3`), whether the DATA command
/// ended in CRLF (bit 2) and the size of the pieces the rest is fed in (bits 3–7, plus one);
/// the rest is what the client sent after `354`. Checks:
/// - the result does not depend on how the input is cut into pieces;
/// - the stored text never holds a bare LF (every LF follows a CR), and is at most twice as
///   long as what was read;
/// - the data ends only after `CRLF . CRLF` in the input (or `. CRLF` right after a DATA
///   command that ended in CRLF), the anti-smuggling rule, and then the stored text is empty
///   or ends in CRLF;
/// - in `reject` mode, the reader stops exactly at the input's first bare LF, and not
///   otherwise;
/// - stored text that ended comes back unchanged when dot-stuffed again and read by a fresh
///   reader, which stops right after the new end-of-data line.
pub fn smtp_data(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let mode =
        [BareNewline::Normalize, BareNewline::No, BareNewline::Reject][usize::from(control % 3)];
    let after_crlf = control & 0x04 != 0;
    let piece = usize::from(control >> 3) + 1;
    let whole = read_data(mode, after_crlf, input, input.len());
    let pieces = read_data(mode, after_crlf, input, piece);
    assert_eq!(pieces, whole, "fed in pieces of {piece} the reader differs");
    let read = &input[..whole.consumed];
    if whole.end == DataEnd::More {
        assert_eq!(
            whole.consumed,
            input.len(),
            "More, but not every octet was read"
        );
    }
    for (i, &b) in whole.stored.iter().enumerate() {
        assert!(
            b != b'\n' || (i > 0 && whole.stored[i - 1] == b'\r'),
            "a bare LF at {i} of the stored text {:?}",
            String::from_utf8_lossy(&whole.stored)
        );
    }
    assert!(
        whole.stored.len() <= 2 * whole.consumed,
        "stored text more than doubled"
    );
    let bare_lf_at =
        (0..input.len()).find(|&i| input[i] == b'\n' && (i == 0 || input[i - 1] != b'\r'));
    match (mode, whole.end) {
        (BareNewline::Reject, DataEnd::BareLf) => {
            assert_eq!(
                Some(whole.consumed - 1),
                bare_lf_at,
                "BareLf, but not at the first bare LF"
            );
        }
        (BareNewline::Reject, _) => assert!(
            bare_lf_at.is_none_or(|at| at >= whole.consumed),
            "a bare LF at {bare_lf_at:?} was read in reject mode"
        ),
        (_, DataEnd::BareLf) => panic!("BareLf in {mode:?} mode"),
        _ => {}
    }
    if whole.end != DataEnd::End {
        return;
    }
    let ends_properly = read.ends_with(b"\r\n.\r\n") || (after_crlf && read == b".\r\n");
    assert!(
        ends_properly,
        "the data ended after {:?}, not after CRLF . CRLF",
        String::from_utf8_lossy(read)
    );
    assert!(
        whole.stored.is_empty() || whole.stored.ends_with(b"\r\n"),
        "ended data does not end in CRLF"
    );
    let mut again = dot_stuff(&whole.stored);
    again.extend_from_slice(b".\r\n");
    let sent = again.len();
    again.extend_from_slice(b"QUIT\r\n");
    let replay = read_data(BareNewline::Normalize, true, &again, again.len());
    assert_eq!(
        (replay.end, replay.consumed),
        (DataEnd::End, sent),
        "the dot-stuffed stored text does not end where it should"
    );
    assert_eq!(
        replay.stored, whole.stored,
        "dot-stuffing did not round-trip"
    );
}

/// The `Message-ID:` cleanup's header scanner adds in the fuzz target.
const ADDED_MESSAGE_ID: &[u8] = b"Message-ID: <added@fuzz.postern.invalid>\r\n";
/// The `Date:` cleanup's header scanner adds in the fuzz target.
const ADDED_DATE: &[u8] = b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n";

fn scan_headers(limit: usize, content: &[u8], piece: usize) -> Vec<u8> {
    let mut scanner = HeaderScanner::new(
        limit,
        Additions {
            message_id: String::from_utf8_lossy(ADDED_MESSAGE_ID).into_owned(),
            date: String::from_utf8_lossy(ADDED_DATE).into_owned(),
        },
    );
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| -> Result<(), std::convert::Infallible> {
        out.extend_from_slice(b);
        Ok(())
    };
    for chunk in content.chunks(piece.max(1)) {
        let Ok(()) = scanner.feed(chunk, &mut sink);
    }
    let Ok(()) = scanner.finish(&mut sink);
    out
}

/// Whether the line starts a header field named `name` (case-insensitive), white space
/// allowed before the colon.
fn names_field(line: &[u8], name: &[u8]) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line[name.len()..]
            .iter()
            .find(|&&b| b != b' ' && b != b'\t')
            == Some(&b':')
}

/// Cleanup's header scanner, then the delivery agents' `Delivered-To:` reader over what it
/// stored. The first octet sets `header_size_limit` (times 8), the second the size of the
/// pieces the content is fed in (plus one); the rest is the content. Checks:
/// - the stored text does not depend on how the content is cut into pieces;
/// - it is the content (a CRLF added to an unterminated last line) with one insertion at a
///   line start, no later than `header_size_limit` octets: `Message-ID:`, `Date:` (each only if
///   the header section before the insertion has no field of that name, and then always), and
///   an empty line when the body follows without one. Nothing after the header end is touched;
/// - [`delivered_to`] never reads past the header section's end: text appended after the
///   first empty line changes nothing, and every value is trimmed and in lower case.
pub fn header(data: &[u8]) {
    let [limit, piece, content @ ..] = data else {
        return;
    };
    let limit = usize::from(*limit) * 8;
    let piece = usize::from(*piece) + 1;
    let stored = scan_headers(limit, content, content.len());
    assert_eq!(
        scan_headers(limit, content, piece),
        stored,
        "fed in pieces of {piece} the scanner differs"
    );
    let mut terminated = content.to_vec();
    if terminated.last().is_some_and(|&b| b != b'\n') {
        terminated.extend_from_slice(b"\r\n");
    }
    let added = stored
        .len()
        .checked_sub(terminated.len())
        .unwrap_or_else(|| panic!("the scanner dropped octets"));
    let same_prefix = stored
        .iter()
        .zip(&terminated)
        .take_while(|(a, b)| a == b)
        .count();
    let same_suffix = stored
        .iter()
        .rev()
        .zip(terminated.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    // The insertion point: the content is stored[..at] and stored[at + added..]. When nothing
    // was added, the header section ends at the first empty line or with the content; else at
    // the first line start where the insertion fits (a later fit repeats the insertion's own
    // text, which is header lines after the end of the section).
    let first_empty_line = || {
        let mut offset = 0;
        for line in terminated.split_inclusive(|&b| b == b'\n') {
            if line == b"\r\n" || line == b"\n" {
                return offset;
            }
            offset += line.len();
        }
        offset
    };
    let mut candidates = if added == 0 {
        let end = first_empty_line();
        end..=end
    } else {
        terminated.len().saturating_sub(same_suffix)..=same_prefix.min(terminated.len())
    };
    let at = candidates
        .find(|&at| {
            let insertion = &stored[at..at + added];
            let rest = insertion
                .strip_prefix(ADDED_MESSAGE_ID)
                .unwrap_or(insertion);
            let rest = rest.strip_prefix(ADDED_DATE).unwrap_or(rest);
            (at == 0 || terminated[at - 1] == b'\n') && (rest.is_empty() || rest == b"\r\n")
        })
        .unwrap_or_else(|| {
            panic!(
                "{:?} is not {:?} with the header additions inserted at a line start",
                String::from_utf8_lossy(&stored),
                String::from_utf8_lossy(&terminated)
            )
        });
    assert!(
        at <= limit,
        "a header section of {at} octets, limit {limit}"
    );
    let insertion = &stored[at..at + added];
    let section = &terminated[..at];
    let lines = || section.split_inclusive(|&b| b == b'\n');
    for (name, addition) in [
        (&b"Message-ID"[..], ADDED_MESSAGE_ID),
        (&b"Date"[..], ADDED_DATE),
    ] {
        let present = lines().any(|line| names_field(line, name));
        let was_added = insertion.windows(addition.len()).any(|w| w == addition);
        assert_ne!(
            present,
            was_added,
            "{} present {present}, added {was_added}: {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(section)
        );
    }

    let found = delivered_to(&stored);
    for value in &found {
        assert_eq!(
            value,
            &value.trim().to_lowercase(),
            "Delivered-To value not normalised"
        );
    }
    let end = if stored.starts_with(b"\r\n") {
        Some(2)
    } else {
        stored
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
    };
    if let Some(end) = end {
        let mut more = stored[..end].to_vec();
        more.extend_from_slice(b"Delivered-To: after-the-end@example.test\r\n");
        assert_eq!(
            delivered_to(&more),
            found,
            "delivered_to read past the header end"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PROTOCOL_VERSION;
    use crate::service::ServiceName;

    #[test]
    fn entry_points_accept_valid_and_invalid_input() {
        let hello = encode(&ToMaster::Hello {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        let connected = encode(&FromMaster::Connected {
            service: ServiceName::try_from("cleanup").unwrap(),
        })
        .unwrap();
        let inputs: [&[u8]; 12] = [
            &hello,
            &connected,
            b"",
            b"\xff\xff\xff\xff\x7f",
            b"user@example.test",
            b"\"a\\\"b\"@EXAMPLE.test",
            "jürgen@bücher.example".as_bytes(),
            b"<@relay.example:user@[IPv6:2001:db8::1]>",
            b"<Postmaster>",
            b"<>",
            b"[192.0.2.1]",
            b"\xc3\x28@x",
        ];
        for data in inputs {
            to_master(data);
            from_master(data);
            mailbox(data);
            domain(data);
            path(data);
        }
    }

    /// Fragments that address parsers treat specially, so that random sequences of them
    /// reach deep into the grammar.
    const ADDRESS_TOKENS: [&str; 22] = [
        "user",
        "@",
        ".",
        "\"",
        "\\",
        "<",
        ">",
        "[",
        "]",
        "IPv6:",
        "::1",
        "192.0.2.1",
        ":",
        ",",
        "example",
        "ü",
        " ",
        "-",
        "Postmaster",
        "\u{3002}",
        "\r\n",
        "a",
    ];

    /// Fragments of message content: line ends, dots, folding, the fields the scanners
    /// look for.
    const CONTENT_TOKENS: [&str; 16] = [
        "\r\n",
        "\n",
        "\r",
        ".",
        ".\r\n",
        "\r\n.\r\n",
        " ",
        "\t",
        ":",
        "Subject: x",
        "Message-ID: <m@x>",
        "date :",
        "Delivered-To: A@Example.test",
        "body",
        "\u{e9}",
        "\u{fffd}",
    ];

    /// Fragments of command lines, so that random sequences of them reach the
    /// parameter parsers.
    const SMTP_TOKENS: [&str; 24] = [
        "MAIL FROM:",
        "RCPT TO:",
        "<a@example.test>",
        "<>",
        "<jürgen@x>",
        " ",
        "\t",
        "SIZE=",
        "10",
        "BODY=8BITMIME",
        "SMTPUTF8",
        "RET=HDRS",
        "ENVID=",
        "+2B",
        "NOTIFY=",
        "SUCCESS,DELAY",
        "ORCPT=",
        "rfc822;",
        "utf-8;",
        "\\x{FC}",
        "BDAT ",
        "LAST",
        "EHLO ",
        "=",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48)) {
            to_master(&data);
            from_master(&data);
            mailbox(&data);
            domain(&data);
            path(&data);
            to_cleanup(&data);
            from_cleanup(&data);
            to_qmgr(&data);
            to_agent(&data);
            from_agent(&data);
            to_bounce(&data);
            from_bounce(&data);
            smtp_command(&data);
            queue_file(&data);
            smtp_data(&data);
            header(&data);
        }

        #[test]
        fn data_and_header_shaped_text_never_panics(
            control in proptest::prelude::any::<[u8; 2]>(),
            tokens in proptest::collection::vec(proptest::sample::select(&CONTENT_TOKENS[..]), 0..16)
        ) {
            let mut data = control.to_vec();
            data.extend_from_slice(tokens.concat().as_bytes());
            smtp_data(&data[1..]);
            header(&data);
        }

        #[test]
        fn smtp_shaped_text_never_panics(
            tokens in proptest::collection::vec(proptest::sample::select(&SMTP_TOKENS[..]), 0..10)
        ) {
            smtp_command(tokens.concat().as_bytes());
        }

        #[test]
        fn address_shaped_text_never_panics(
            tokens in proptest::collection::vec(proptest::sample::select(&ADDRESS_TOKENS[..]), 0..12)
        ) {
            let text = tokens.concat();
            mailbox(text.as_bytes());
            domain(text.as_bytes());
            path(text.as_bytes());
        }
    }

    proptest::proptest! {
        /// Valid paths with one fragment inserted or one character removed: inputs
        /// next to the grammar's edges.
        #[test]
        fn near_valid_paths_never_panic(
            p in crate::testing::path(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            token in proptest::sample::select(&ADDRESS_TOKENS[..]),
            insert in proptest::prelude::any::<bool>(),
        ) {
            let text = p.to_string();
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let i = boundaries[at.index(boundaries.len())];
            let mut mutated = text.clone();
            if insert {
                mutated.insert_str(i, token);
            } else {
                mutated.remove(i);
            }
            for data in [text.as_bytes(), mutated.as_bytes()] {
                path(data);
                if let Some(inner) = data.strip_prefix(b"<").and_then(|d| d.strip_suffix(b">")) {
                    mailbox(inner);
                    if let Some(at) = inner.iter().rposition(|&b| b == b'@') {
                        domain(&inner[at + 1..]);
                    }
                }
            }
        }
    }

    #[test]
    fn intake_entry_points_accept_valid_and_invalid_input() {
        let begin = encode(&ToCleanup::End).unwrap();
        let queued = encode(&FromCleanup::Queued {
            id: crate::queue_id::QueueId::new(std::time::SystemTime::now(), 1).unwrap(),
        })
        .unwrap();
        let inputs: [&[u8]; 10] = [
            &begin,
            &queued,
            &[0],
            b"",
            b"\xff\xff\xff\xff\x7f",
            b"MAIL FROM:<a@example.test> SIZE=10 SMTPUTF8",
            "RCPT TO:<jürgen@bücher.example> NOTIFY=NEVER ORCPT=utf-8;j\\x{FC}rgen@x".as_bytes(),
            b"BDAT 10 LAST",
            b"EHLO [IPv6:::1]",
            b"VRFY \x00",
        ];
        for data in inputs {
            to_cleanup(data);
            from_cleanup(data);
            to_qmgr(data);
            smtp_command(data);
            queue_file(data);
        }
    }

    /// Valid delivery-channel messages of every kind, as the seeds of their targets hold.
    fn delivery_messages() -> Vec<Vec<u8>> {
        use crate::delivery::{DeliveryRecipient, NoticeKind};
        use crate::queue::{Diagnostic, MailFlags, Outcome, Recipient, Timestamp};
        use crate::queue_id::QueueId;
        use crate::{Domain, ForwardPath, ReversePath};
        let id = QueueId::parse("0005F1A2B3C4D5E6000001").unwrap();
        let recipient = |index, path: &str| DeliveryRecipient {
            index,
            recipient: Recipient {
                path: ForwardPath::parse(path, true).unwrap(),
                notify: None,
                orcpt: None,
            },
        };
        let deliver = ToAgent::Deliver {
            queue_id: id,
            nexthop: Domain::parse("example.test", false).unwrap(),
            sender: ReversePath::parse("<a@example.org>", false).unwrap(),
            flags: MailFlags::default(),
            arrival: Timestamp::from_micros(1_700_000_000_000_000),
            content_offset: 412,
            content_len: 2048,
            recipients: vec![
                recipient(0, "<user@example.test>"),
                recipient(3, "<jürgen@example.test>"),
            ]
            .try_into()
            .unwrap(),
        };
        let result = FromAgent::Result {
            index: 3,
            outcome: Outcome::Bounced,
            status: "5.1.1".parse().unwrap(),
            diagnostic: Diagnostic::new("550 5.1.1 unknown user").unwrap(),
        };
        let notify = ToBounce::Notify {
            queue_id: id,
            kind: NoticeKind::Failure,
            recipients: vec![0, 3, 9].try_into().unwrap(),
        };
        let failed = FromBounce::Failed {
            temporary: true,
            detail: crate::control::Detail::try_from("cleanup unavailable").unwrap(),
        };
        vec![
            encode(&deliver).unwrap(),
            encode(&result).unwrap(),
            encode(&FromAgent::Done).unwrap(),
            encode(&notify).unwrap(),
            encode(&FromBounce::Sent { id: Some(id) }).unwrap(),
            encode(&FromBounce::Sent { id: None }).unwrap(),
            encode(&failed).unwrap(),
        ]
    }

    #[test]
    fn delivery_entry_points_accept_valid_and_damaged_messages() {
        let messages = delivery_messages();
        for message in &messages {
            let mut inputs = vec![message.clone(), Vec::new(), vec![0xff; 8]];
            for cut in 0..message.len() {
                inputs.push(message[..cut].to_vec());
            }
            for i in 0..message.len() {
                let mut damaged = message.clone();
                damaged[i] ^= 0x01;
                inputs.push(damaged);
            }
            for data in &inputs {
                to_agent(data);
                from_agent(data);
                to_bounce(data);
                from_bounce(data);
            }
        }
        // Each valid message decodes as its own kind.
        assert!(decode::<ToAgent>(&messages[0]).is_ok());
        assert!(decode::<FromAgent>(&messages[1]).is_ok());
        assert!(decode::<ToBounce>(&messages[3]).is_ok());
        assert!(decode::<FromBounce>(&messages[6]).is_ok());
    }

    #[test]
    fn queue_file_entry_point_takes_whole_and_damaged_files() {
        use crate::queue::tests::sample_file;
        let file = sample_file();
        queue_file(&file);
        for cut in (0..file.len()).step_by(7) {
            queue_file(&file[..cut]);
        }
        for i in (0..file.len()).step_by(5) {
            let mut damaged = file.clone();
            damaged[i] ^= 0x41;
            queue_file(&damaged);
        }
    }

    #[test]
    fn data_and_header_entry_points_take_their_seeds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus");
        for (target, entry) in [("smtp_data", smtp_data as fn(&[u8])), ("header", header)] {
            let seeds = std::fs::read_dir(format!("{dir}/{target}")).unwrap();
            let mut count = 0;
            for seed in seeds {
                entry(&std::fs::read(seed.unwrap().path()).unwrap());
                count += 1;
            }
            assert!(count >= 4, "{target}: {count} seeds");
        }
    }

    #[test]
    fn the_helpers_of_the_data_and_header_checks() {
        // Dot-stuffing, piecewise reading and field names as the targets' checks use them.
        let stuffed = dot_stuff(b"a\r\n.b\r\n");
        assert_eq!(stuffed, b"a\r\n..b\r\n");
        let run = read_data(BareNewline::Normalize, true, b"x\r\n.\r\nQUIT\r\n", 3);
        assert_eq!((run.end, run.consumed), (DataEnd::End, 6));
        assert!(names_field(b"message-id :x", b"Message-ID"));
        assert!(!names_field(b"Message-IDs: x", b"Message-ID"));
        assert!(!names_field(b" Date: x", b"Date"));
    }

    #[test]
    fn the_round_trip_check_can_fail() {
        // A parser whose display is not re-parseable must trip the check.
        let broken = std::panic::catch_unwind(|| {
            address_round_trip(
                b"x",
                |s, _| Ok::<_, crate::address::AddressError>(format!("{s}!")),
                |_| true,
            )
        });
        assert!(broken.is_err());
    }
}
