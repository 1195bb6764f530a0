//! The DATA reader: turns the octets a client sends after `354` into the message text
//! as it is stored (CRLF line ends, dot-stuffing removed), and finds the end of the
//! data.
//!
//! Trusts: nothing. The reader is a state machine over octets, so it needs no line
//! buffer: a line of any length streams through, and memory is what the caller's
//! buffers hold.
//!
//! SECURITY (SMTP smuggling): the data ends only at `<CR><LF>.<CR><LF>`, that is a line
//! holding a single dot, ended by CRLF, whose previous line also ended by CRLF (or
//! which is the first line after the DATA command, when that ended by CRLF). A bare LF
//! or a bare CR is never part of an end-of-data sequence, in any mode:
//! - `normalize` (and Postfix's `no`): a bare LF ends a line and is stored as CRLF; a
//!   bare CR is kept as data;
//! - `reject`: a bare LF anywhere is [`Feed::BareLf`], and the session ends.
//!
//! A line holding a single dot that does not end the data (`\n.\n`, `\r\n.\n`, ...) is
//! stored as a line holding a single dot, not as an empty line: it shows the reader of
//! the message what the client sent, and the smtp client dot-stuffs it again when it
//! relays the message.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `after_crlf` when the previous line ended in CRLF.
    LineStart { after_crlf: bool },
    /// A line that started with a dot, nothing else yet.
    Dot { after_crlf: bool },
    /// A line that started with a dot and a CR.
    DotCr { after_crlf: bool },
    /// Inside a line.
    Text,
    /// Inside a line, after a CR whose meaning the next octet decides.
    TextCr,
}

/// What `smtpd_forbid_bare_newline` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewline {
    /// A bare LF ends a line and is stored as CRLF; it never ends the data.
    Normalize,
    /// A bare LF in a command line or in the content ends the session.
    Reject,
    /// Postfix's `no`: treated as [`BareNewline::Normalize`] (see smtpd's configuration).
    No,
}

/// What [`DotReader::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Every octet was used; the data goes on.
    More,
    /// The end-of-data line ended after `consumed` octets; the rest is the next command.
    End { consumed: usize },
    /// `reject` mode: a bare LF after `consumed` octets.
    BareLf { consumed: usize },
}

#[derive(Debug)]
pub struct DotReader {
    state: State,
    reject_bare_lf: bool,
}

impl DotReader {
    /// `after_crlf`: whether the DATA command line ended in CRLF, so that a dot line
    /// right after it ends an empty message.
    pub fn new(mode: BareNewline, after_crlf: bool) -> DotReader {
        DotReader {
            state: State::LineStart { after_crlf },
            reject_bare_lf: mode == BareNewline::Reject,
        }
    }

    /// Reads `input`, appending the stored form to `out` (at most twice the input).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Text {
                // Fast path: copy up to the next CR or LF.
                let run = input[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(input.len() - i);
                out.extend_from_slice(&input[i..i + run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            if b == b'\n' && self.reject_bare_lf && !self.cr_pending() {
                return Feed::BareLf { consumed: i };
            }
            if self.step(b, out) {
                return Feed::End { consumed: i };
            }
        }
        Feed::More
    }

    fn cr_pending(&self) -> bool {
        matches!(self.state, State::TextCr | State::DotCr { .. })
    }

    /// One octet; true at the end of the data.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        self.state = match (self.state, b) {
            (State::LineStart { after_crlf }, b'.') => State::Dot { after_crlf },
            (State::LineStart { .. }, b'\r') => State::TextCr,
            (State::LineStart { .. } | State::Text, b'\n') => {
                out.extend_from_slice(b"\r\n");
                State::LineStart { after_crlf: false }
            }
            (State::LineStart { .. } | State::Text, _) if b == b'\r' => State::TextCr,
            (State::LineStart { .. } | State::Text, _) => {
                out.push(b);
                State::Text
            }
            (State::Dot { after_crlf }, b'\r') => State::DotCr { after_crlf },
            (State::Dot { .. }, b'\n') => {
                // A dot line ended by a bare LF: never the end.
                out.extend_from_slice(b".\r\n");
                State::LineStart { after_crlf: false }
            }
            (State::Dot { .. }, _) => {
                // Dot-stuffing: the first dot of a line is dropped.
                out.push(b);
                State::Text
            }
            (State::DotCr { after_crlf: true }, b'\n') => return true,
            (State::DotCr { after_crlf: false }, b'\n') => {
                out.extend_from_slice(b".\r\n");
                State::LineStart { after_crlf: true }
            }
            (State::DotCr { .. }, _) => {
                // ".\r" then more text: the dot was stuffing, the CR is data.
                out.push(b'\r');
                self.state = State::Text;
                return self.step(b, out);
            }
            (State::TextCr, b'\n') => {
                out.extend_from_slice(b"\r\n");
                State::LineStart { after_crlf: true }
            }
            (State::TextCr, b'\r') => {
                out.push(b'\r');
                State::TextCr
            }
            (State::TextCr, _) => {
                out.push(b'\r');
                out.push(b);
                State::Text
            }
        };
        false
    }
}

/// BDAT content in `normalize` (and `no`) mode: a bare LF becomes CRLF; nothing else
/// changes. `last_cr` carries whether the previous chunk ended in CR across chunks.
pub fn normalize_bare_lf(input: &[u8], last_cr: &mut bool, out: &mut Vec<u8>) {
    for &b in input {
        if b == b'\n' && !*last_cr {
            out.push(b'\r');
        }
        out.push(b);
        *last_cr = b == b'\r';
    }
}

/// Whether `input` has a bare LF, given whether the octet before it was a CR.
pub fn has_bare_lf(input: &[u8], last_cr: bool) -> bool {
    let mut prev_cr = last_cr;
    for &b in input {
        if b == b'\n' && !prev_cr {
            return true;
        }
        prev_cr = b == b'\r';
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [BareNewline; 3] = [BareNewline::Normalize, BareNewline::No, BareNewline::Reject];

    /// Feeds `input` in pieces of `step` octets; the stored text and the result.
    fn run(mode: BareNewline, input: &[u8], step: usize) -> (Vec<u8>, Feed, usize) {
        let mut r = DotReader::new(mode, true);
        let mut out = Vec::new();
        let mut offset = 0;
        for piece in input.chunks(step) {
            match r.feed(piece, &mut out) {
                Feed::More => offset += piece.len(),
                Feed::End { consumed } => return (out, Feed::End { consumed }, offset + consumed),
                Feed::BareLf { consumed } => {
                    return (out, Feed::BareLf { consumed }, offset + consumed)
                }
            }
        }
        (out, Feed::More, offset)
    }

    fn each_split(mode: BareNewline, input: &[u8]) -> (Vec<u8>, Feed, usize) {
        let whole = run(mode, input, input.len().max(1));
        for step in 1..input.len().max(1) {
            let (out, feed, at) = run(mode, input, step);
            assert_eq!(out, whole.0, "step {step}");
            assert_eq!(
                std::mem::discriminant(&feed),
                std::mem::discriminant(&whole.1)
            );
            assert_eq!(at, whole.2, "step {step}");
        }
        whole
    }

    #[test]
    fn crlf_dot_crlf_ends_and_unstuffs() {
        for mode in MODES {
            let input = b"Subject: x\r\n\r\n..dot\r\n.\r\nMAIL FROM:<a@b>\r\n";
            let (out, feed, at) = each_split(mode, input);
            assert!(matches!(feed, Feed::End { .. }));
            assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\n");
            assert_eq!(&input[at..], b"MAIL FROM:<a@b>\r\n");
            // An empty message.
            let (out, feed, _) = each_split(mode, b".\r\n");
            assert!(matches!(feed, Feed::End { .. }) && out.is_empty());
        }
    }

    /// The smuggling variants: none of them ends the data, in any mode.
    #[test]
    fn smuggling_variants_never_end_the_data() {
        let variants: [(&[u8], &[u8]); 6] = [
            (b"\n.\n", b"a\r\n.\r\n"),
            (b"\n.\r\n", b"a\r\n.\r\n"),
            (b"\r.\r", b"a\r.\r"),
            (b"\r\n.\r", b"a\r\n\r"),
            (b"\r\n.\n", b"a\r\n.\r\n"),
            (b"\n.\r", b"a\r\n\r"),
        ];
        for (variant, stored) in variants {
            let mut input = b"a".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\n");
            for mode in [BareNewline::Normalize, BareNewline::No] {
                let (out, feed, _) = each_split(mode, &input);
                assert_eq!(feed, Feed::More, "{variant:?} {mode:?}");
                let mut expected = stored.to_vec();
                // After a dot line that is not the end, the smuggled command is text.
                expected.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\n");
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "{variant:?} {mode:?}"
                );
            }
            let (_, feed, _) = each_split(BareNewline::Reject, &input);
            let has_lf = variant.contains(&b'\n') && has_bare_lf(&input[..input.len() - 2], false);
            if has_lf {
                assert!(matches!(feed, Feed::BareLf { .. }), "{variant:?}");
            } else {
                assert_eq!(feed, Feed::More, "{variant:?}");
            }
        }
    }

    #[test]
    fn a_crlf_dot_crlf_after_a_smuggling_attempt_still_ends() {
        let input = b"a\n.\r\n.\r\nNOOP\r\n";
        let (out, feed, at) = each_split(BareNewline::Normalize, input);
        assert!(matches!(feed, Feed::End { .. }));
        assert_eq!(out, b"a\r\n.\r\n");
        assert_eq!(&input[at..], b"NOOP\r\n");
    }

    #[test]
    fn bare_cr_is_data_and_bare_lf_becomes_crlf() {
        let (out, feed, _) = each_split(BareNewline::Normalize, b"a\rb\nc\r\r\n.\r\n");
        assert!(matches!(feed, Feed::End { .. }));
        assert_eq!(out, b"a\rb\r\nc\r\r\n");
        let (_, feed, _) = each_split(BareNewline::Reject, b"a\rb\nc\r\n.\r\n");
        assert_eq!(feed, Feed::BareLf { consumed: 4 });
    }

    #[test]
    fn data_after_a_bare_lf_data_command_needs_a_crlf_first() {
        let mut r = DotReader::new(BareNewline::Normalize, false);
        let mut out = Vec::new();
        assert_eq!(r.feed(b".\r\n", &mut out), Feed::More);
        assert_eq!(r.feed(b".\r\n", &mut out), Feed::End { consumed: 3 });
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn long_lines_stream_through() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\r\n.\r\n");
        let (out, feed, _) = run(BareNewline::Normalize, &input, 4096);
        assert!(matches!(feed, Feed::End { .. }));
        assert_eq!(out.len(), 100_002);
    }

    #[test]
    fn bdat_normalization_spans_chunks() {
        let mut out = Vec::new();
        let mut last_cr = false;
        normalize_bare_lf(b"a\nb\r", &mut last_cr, &mut out);
        normalize_bare_lf(b"\nc\n", &mut last_cr, &mut out);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert!(has_bare_lf(b"\n", false));
        assert!(!has_bare_lf(b"\n", true));
        assert!(!has_bare_lf(b"a\r\nb\r", false));
    }
}
