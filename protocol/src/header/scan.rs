//! The header section of a message as it streams through cleanup: which header fields the
//! client sent, where the section ends, and the `Message-ID:` and `Date:` fields cleanup adds
//! when the client sent none.
//!
//! Trusts: nothing in the content; it is the client's text, already unstuffed by smtpd. It is
//! never parsed beyond finding line ends and header field names, and it is copied to the queue
//! file unchanged except for what is added here.
//!
//! Decisions (Postfix's cleanup is the reference):
//! - A header field starts with a name of printable ASCII other than `:` followed by `:` (white
//!   space before the colon is accepted, RFC 5322's obsolete syntax, as Postfix's `is_header`
//!   does); a line starting with a space or tab continues the field before it. Names compare
//!   case-insensitively, and only the first line of a field names it, so a folded
//!   `Message-ID:` counts and a continuation line that happens to read `Date:` does not.
//! - The header section ends at the first empty line, at the first line that is neither a header
//!   field nor a continuation, or when it would grow past `header_size_limit` octets; in the last
//!   two cases the rest of the message is body, and an empty line is inserted before it so that
//!   the stored text is a valid RFC 5322 message.
//! - Missing fields are added at the end of the header section, `Message-ID:` then `Date:`, as
//!   Postfix's `cleanup_header_done_callback` adds them. Postfix 2.6 and later add them only for
//!   clients in `local_header_rewrite_clients` unless `always_add_missing_headers = yes`;
//!   Postern always adds them (it has no header rewriting yet, and a message without them is not
//!   valid RFC 5322).
//! - A final line without a line end gets a CRLF.
//!
//! Memory: complete header lines are written out as they arrive; only an incomplete line is
//! held, and it never grows past the header budget plus one content chunk.

/// The fields cleanup adds when missing, each a full line with its CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Additions {
    pub message_id: String,
    pub date: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Inside the header section; `in_field` when the previous line was a header field (so a
    /// line starting with white space continues it).
    Headers {
        in_field: bool,
    },
    Body,
}

/// Follows the header section of one message and passes the content on, with additions.
#[derive(Debug)]
pub struct HeaderScanner {
    limit: usize,
    header_octets: usize,
    partial: Vec<u8>,
    phase: Phase,
    has_message_id: bool,
    has_date: bool,
    additions: Additions,
    /// The last octet passed on, to end an unterminated last line.
    last: Option<u8>,
}

impl HeaderScanner {
    /// `limit` is `header_size_limit`.
    pub fn new(limit: usize, additions: Additions) -> HeaderScanner {
        HeaderScanner {
            limit,
            header_octets: 0,
            partial: Vec::new(),
            phase: Phase::Headers { in_field: false },
            has_message_id: false,
            has_date: false,
            additions,
            last: None,
        }
    }

    /// Takes the next piece of content and hands `out` what goes into the file, in order.
    pub fn feed<E>(
        &mut self,
        mut data: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Phase::Headers { .. } = self.phase {
            if data.is_empty() {
                return Ok(());
            }
            match data.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    let (line, rest) = data.split_at(at + 1);
                    data = rest;
                    if self.partial.is_empty() {
                        self.line(line, out)?;
                    } else {
                        let mut whole = std::mem::take(&mut self.partial);
                        whole.extend_from_slice(line);
                        self.line(&whole, out)?;
                    }
                }
                None => {
                    self.partial.extend_from_slice(data);
                    data = &[];
                    if self.header_octets + self.partial.len() > self.limit {
                        // An incomplete line that no longer fits: the header section ends
                        // before it.
                        let partial = std::mem::take(&mut self.partial);
                        self.end_headers(true, out)?;
                        self.pass(&partial, out)?;
                    }
                }
            }
        }
        if !data.is_empty() {
            self.pass(data, out)?;
        }
        Ok(())
    }

    /// The content is complete: ends an unterminated last line and adds what is missing to a
    /// message that is all header.
    pub fn finish<E>(&mut self, out: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(b"\r\n");
            self.line(&line, out)?;
        }
        match self.phase {
            Phase::Headers { .. } => self.end_headers(false, out),
            Phase::Body => {
                if self.last.is_some_and(|b| b != b'\n') {
                    self.pass(b"\r\n", out)?;
                }
                Ok(())
            }
        }
    }

    /// Whether the client's header section had these fields.
    #[cfg(test)]
    pub fn seen(&self) -> (bool, bool) {
        (self.has_message_id, self.has_date)
    }

    fn line<E>(
        &mut self,
        line: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Phase::Headers { in_field } = self.phase else {
            return self.pass(line, out);
        };
        if self.header_octets + line.len() > self.limit {
            self.end_headers(true, out)?;
            return self.pass(line, out);
        }
        if line == b"\r\n" || line == b"\n" {
            self.end_headers(false, out)?;
            return self.pass(line, out);
        }
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if continuation && in_field {
            self.header_octets += line.len();
            return self.pass(line, out);
        }
        match field_name(line) {
            Some(name) if !continuation => {
                if name.eq_ignore_ascii_case(b"Message-ID") {
                    self.has_message_id = true;
                } else if name.eq_ignore_ascii_case(b"Date") {
                    self.has_date = true;
                }
                self.header_octets += line.len();
                self.phase = Phase::Headers { in_field: true };
                self.pass(line, out)
            }
            _ => {
                self.end_headers(true, out)?;
                self.pass(line, out)
            }
        }
    }

    /// Adds the missing fields, then (when the body follows without one) the empty line.
    fn end_headers<E>(
        &mut self,
        separator: bool,
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.phase = Phase::Body;
        if !self.has_message_id {
            let field = std::mem::take(&mut self.additions.message_id);
            self.pass(field.as_bytes(), out)?;
        }
        if !self.has_date {
            let field = std::mem::take(&mut self.additions.date);
            self.pass(field.as_bytes(), out)?;
        }
        if separator {
            self.pass(b"\r\n", out)?;
        }
        Ok(())
    }

    fn pass<E>(
        &mut self,
        bytes: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(&b) = bytes.last() {
            self.last = Some(b);
            out(bytes)?;
        }
        Ok(())
    }
}

/// The name of the header field this line starts, if it starts one: one or more printable
/// ASCII characters other than `:`, optional white space, then `:`.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let end = line
        .iter()
        .position(|&b| !(33..=126).contains(&b) || b == b':')?;
    if end == 0 {
        return None;
    }
    let after = line[end..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map(|skip| line[end + skip]);
    (after == Some(b':')).then_some(&line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn additions() -> Additions {
        Additions {
            message_id: "Message-ID: <ID@mx.example.test>\r\n".to_owned(),
            date: "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n".to_owned(),
        }
    }

    /// Feeds `pieces` one after another and returns the output.
    fn run(limit: usize, pieces: &[&[u8]]) -> (String, (bool, bool)) {
        let mut scanner = HeaderScanner::new(limit, additions());
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| -> Result<(), ()> {
            out.extend_from_slice(b);
            Ok(())
        };
        for piece in pieces {
            scanner.feed(piece, &mut sink).unwrap();
        }
        scanner.finish(&mut sink).unwrap();
        (String::from_utf8(out).unwrap(), scanner.seen())
    }

    /// Every way of cutting `text` into two pieces gives the same output.
    fn same_for_every_split(limit: usize, text: &str) -> String {
        let (whole, _) = run(limit, &[text.as_bytes()]);
        for at in 0..=text.len() {
            let (a, b) = text.as_bytes().split_at(at);
            assert_eq!(run(limit, &[a, b]).0, whole, "split at {at}");
        }
        whole
    }

    #[test]
    fn added_at_the_end_of_the_header_section_when_missing() {
        let out = same_for_every_split(1000, "Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n");
        assert_eq!(
            out,
            "Subject: hi\r\nFrom: a@b\r\nMessage-ID: <ID@mx.example.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn present_fields_are_not_added_whatever_their_case_or_folding() {
        let text =
            "message-id:\r\n <x@y>\r\nDATE : Thu, 1 Jan 2026\r\n  00:00:00 +0000\r\n\r\nbody\r\n";
        let (out, seen) = run(1000, &[text.as_bytes()]);
        assert_eq!(out, text);
        assert_eq!(seen, (true, true));
        assert_eq!(same_for_every_split(1000, text), text);
    }

    #[test]
    fn a_continuation_line_is_not_a_field() {
        let text = "Subject: a\r\n Date: not a field\r\n\tMessage-ID: nor this\r\n\r\n";
        let (out, seen) = run(1000, &[text.as_bytes()]);
        assert_eq!(seen, (false, false));
        assert_eq!(
            out,
            "Subject: a\r\n Date: not a field\r\n\tMessage-ID: nor this\r\nMessage-ID: <ID@mx.example.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
        );
    }

    #[test]
    fn a_body_without_headers_gets_headers_and_a_separator() {
        let out = same_for_every_split(1000, "just text\r\nmore\r\n");
        assert_eq!(
            out,
            "Message-ID: <ID@mx.example.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\njust text\r\nmore\r\n"
        );
        // A first line that starts with white space cannot continue anything.
        let (out, _) = run(1000, &[b" indented\r\n"]);
        assert!(out.ends_with("\r\n\r\n indented\r\n"), "{out:?}");
    }

    #[test]
    fn a_missing_separator_is_inserted() {
        let out = same_for_every_split(1000, "Subject: x\r\nnot a header line\r\n");
        assert_eq!(
            out,
            "Subject: x\r\nMessage-ID: <ID@mx.example.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\nnot a header line\r\n"
        );
    }

    #[test]
    fn headers_only_and_empty_messages_are_valid() {
        let out = same_for_every_split(1000, "Subject: x\r\nDate: y");
        assert_eq!(
            out,
            "Subject: x\r\nDate: y\r\nMessage-ID: <ID@mx.example.test>\r\n"
        );
        let (out, _) = run(1000, &[]);
        assert_eq!(
            out,
            "Message-ID: <ID@mx.example.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        );
        // A body whose last line has no line end gets one.
        let (out, _) = run(1000, &[b"Date: y\r\nMessage-ID: z\r\n\r\nno end"]);
        assert_eq!(out, "Date: y\r\nMessage-ID: z\r\n\r\nno end\r\n");
    }

    #[test]
    fn beyond_the_limit_the_rest_is_body() {
        // Two fields fit in 30 octets; the third would not, so it and what follows are body,
        // and a Date: after the cut is body text, not a field.
        let text = "Subject: 0123456789\r\nX: y\r\nX-Long: abcdefgh\r\nDate: z\r\n\r\nb\r\n";
        let out = same_for_every_split(30, text);
        assert_eq!(
            out,
            "Subject: 0123456789\r\nX: y\r\nMessage-ID: <ID@mx.example.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\nX-Long: abcdefgh\r\nDate: z\r\n\r\nb\r\n"
        );
    }

    #[test]
    fn a_huge_header_section_is_cut_and_memory_stays_bounded() {
        let limit = 102_400;
        let mut scanner = HeaderScanner::new(limit, additions());
        let mut total = 0usize;
        let mut sink = |b: &[u8]| -> Result<(), ()> {
            total += b.len();
            Ok(())
        };
        // One header line of a megabyte, fed in 64 KiB pieces, never ending.
        let piece = vec![b'x'; 64 * 1024];
        scanner.feed(b"X-Huge: ", &mut sink).unwrap();
        for _ in 0..16 {
            scanner.feed(&piece, &mut sink).unwrap();
            assert!(scanner.partial.len() <= limit + piece.len());
        }
        scanner.feed(b"\r\nDate: x\r\n", &mut sink).unwrap();
        scanner.finish(&mut sink).unwrap();
        // The field went to the body, so both fields were added.
        assert_eq!(scanner.seen(), (false, false));
        assert!(scanner.partial.is_empty());

        // Message-ID in a huge but complete header section, after 100 000 octets of fields.
        let mut text = String::new();
        while text.len() < 100_000 {
            text.push_str("X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        text.push_str("Message-Id: <late@example.test>\r\n\r\nbody\r\n");
        let (out, seen) = run(limit, &[text.as_bytes()]);
        assert_eq!(seen, (true, false));
        assert!(out.contains("<late@example.test>\r\nDate: Thu"));
    }

    #[test]
    fn field_names() {
        assert_eq!(field_name(b"Subject: x"), Some(&b"Subject"[..]));
        assert_eq!(field_name(b"Date :x"), Some(&b"Date"[..]));
        assert_eq!(field_name(b"X-\xc3\xa9: x"), None);
        assert_eq!(field_name(b": x"), None);
        assert_eq!(field_name(b"no colon here\r\n"), None);
        assert_eq!(field_name(b"From x"), None);
        assert_eq!(field_name(b"Subject"), None);
    }
}
