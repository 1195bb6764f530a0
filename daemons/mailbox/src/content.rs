//! The message text, read from the queue file's descriptor with `pread` from the offset
//! the queue manager named (the descriptor's own offset is never moved, since qmgr may
//! share it), through `protocol::queue::ContentReader`, which checks the file's chunk
//! framing against the length in the request.
//!
//! Trusts: nothing in the text. The content is stored with CRLF line ends (as SMTP
//! carries it); mailboxes get LF line ends, as Postfix writes them. A file shorter than
//! the request says, or badly framed, is an error (the queue file is damaged or the
//! request is wrong) that defers delivery.

use std::fs::File;
use std::io::{self, Read};

use protocol::queue::ContentReader;

/// The read size: large enough that a typical message is a few system calls, small
/// enough to bound the agent's memory whatever the message size.
pub const CHUNK: usize = 64 << 10;

/// The most header text scanned for `Delivered-To:`: Postfix's `header_size_limit`
/// applies per field; a header section longer than this is not searched further.
pub const HEADER_SCAN_LIMIT: u64 = 1 << 20;

/// The message text in a queue file.
#[derive(Debug)]
pub struct Content<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
}

impl<'a> Content<'a> {
    pub fn new(file: &'a File, offset: u64, len: u64) -> Content<'a> {
        Content { file, offset, len }
    }

    /// The queue file's descriptor (a delivery child keeps it open across `fork`).
    pub fn file(&self) -> &File {
        self.file
    }

    /// Where the text starts in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `each` with consecutive pieces of the text, up to about `limit` octets,
    /// until it returns `false`.
    pub fn chunks(
        &self,
        limit: u64,
        mut each: impl FnMut(&[u8]) -> io::Result<bool>,
    ) -> io::Result<()> {
        let mut reader = ContentReader::pread(self.file, self.offset, self.len);
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        while done < limit {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io::Error::new(e.kind(), QueueReadError(e))),
            };
            done += n as u64;
            if !each(&buf[..n])? {
                break;
            }
        }
        Ok(())
    }

    /// Copies the text to `out` with CRLF turned into LF and, when `quote_from` (mbox),
    /// each line that starts with `From ` written as `>From `. Returns the octets
    /// written.
    pub fn copy_lf(&self, out: &mut impl io::Write, quote_from: bool) -> io::Result<u64> {
        let mut written = 0u64;
        let mut pending_cr = false;
        let mut at_line_start = true;
        // Octets at the start of a line that may still turn out to be "From ".
        let mut held: Vec<u8> = Vec::new();
        let mut outbuf: Vec<u8> = Vec::with_capacity(CHUNK + 64);
        self.chunks(u64::MAX, |chunk| {
            for &b in chunk {
                if pending_cr {
                    pending_cr = false;
                    if b != b'\n' {
                        push(
                            &mut outbuf,
                            &mut held,
                            &mut at_line_start,
                            quote_from,
                            b'\r',
                        );
                    }
                }
                if b == b'\r' {
                    pending_cr = true;
                    continue;
                }
                push(&mut outbuf, &mut held, &mut at_line_start, quote_from, b);
            }
            written += outbuf.len() as u64;
            out.write_all(&outbuf)?;
            outbuf.clear();
            Ok(true)
        })?;
        if pending_cr {
            push(
                &mut outbuf,
                &mut held,
                &mut at_line_start,
                quote_from,
                b'\r',
            );
        }
        outbuf.extend_from_slice(&held);
        written += outbuf.len() as u64;
        out.write_all(&outbuf)?;
        Ok(written)
    }

    /// The values of the `Delivered-To:` fields of the header, lower case and trimmed
    /// (unfolded), scanning at most [`HEADER_SCAN_LIMIT`] octets.
    pub fn delivered_to(&self) -> io::Result<Vec<String>> {
        let mut header = Vec::new();
        self.chunks(HEADER_SCAN_LIMIT, |chunk| {
            header.extend_from_slice(chunk);
            // Stop once the blank line that ends the header section is in.
            Ok(find_header_end(&header).is_none())
        })?;
        let end = find_header_end(&header).unwrap_or(header.len());
        Ok(protocol::header::delivered_to(&header[..end]))
    }
}

/// A failure to read the queue file (as opposed to writing the mailbox): the
/// delivery is deferred `4.3.0`, whatever the errno.
#[derive(Debug, thiserror::Error)]
#[error("queue file read error: {0}")]
pub struct QueueReadError(io::Error);

/// Whether `e` came from reading the queue file.
pub fn is_queue_read_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<QueueReadError>())
}

/// Appends `b`, quoting a line that starts with `From ` as `>From ` when asked.
fn push(out: &mut Vec<u8>, held: &mut Vec<u8>, at_line_start: &mut bool, quote: bool, b: u8) {
    const FROM: &[u8] = b"From ";
    if quote && *at_line_start {
        held.push(b);
        if FROM.starts_with(held) {
            if held.len() == FROM.len() {
                out.push(b'>');
                out.append(held);
                *at_line_start = false;
            }
            return;
        }
        *at_line_start = b == b'\n';
        out.append(held);
        return;
    }
    out.push(b);
    *at_line_start = b == b'\n';
}

/// The offset of the empty line that ends the header section (CRLF CRLF), if present;
/// a message that starts with an empty line has an empty header.
fn find_header_end(text: &[u8]) -> Option<usize> {
    if text.starts_with(b"\r\n") {
        return Some(0);
    }
    text.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write as _;

    /// A file with junk octets, then `text` framed as a queue file frames content (in
    /// chunks of at most `FILE_CHUNK_MAX`, here smaller ones too, then a zero length),
    /// then a trailer, so offsets and framing are exercised.
    pub(crate) fn file_with(text: &[u8]) -> (File, u64) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789envelope").unwrap();
        for piece in text.chunks(100_000) {
            f.write_all(&(piece.len() as u32).to_be_bytes()).unwrap();
            f.write_all(piece).unwrap();
        }
        f.write_all(&0u32.to_be_bytes()).unwrap();
        f.write_all(b"QEND-trailer").unwrap();
        (f, 18)
    }

    fn copy(text: &[u8], quote: bool) -> Vec<u8> {
        let (f, off) = file_with(text);
        let c = Content::new(&f, off, text.len() as u64);
        let mut out = Vec::new();
        let n = c.copy_lf(&mut out, quote).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    #[test]
    fn crlf_becomes_lf_and_nothing_outside_the_range_is_read() {
        assert_eq!(
            copy(b"A: b\r\n\r\nbody\r\nx\ry\r\n", false),
            b"A: b\n\nbody\nx\ry\n"
        );
        assert_eq!(copy(b"ends with cr\r", false), b"ends with cr\r");
    }

    #[test]
    fn from_lines_are_quoted_for_mbox() {
        let text =
            b"Subject: x\r\n\r\nFrom me\r\nFrom\r\n>From you\r\nFro\r\nnot From here\r\nFrom ";
        assert_eq!(
            copy(text, true),
            b"Subject: x\n\n>From me\nFrom\n>From you\nFro\nnot From here\n>From ".to_vec()
        );
        assert_eq!(copy(b"From x\r\n", false), b"From x\n");
        assert_eq!(copy(b"Fr", true), b"Fr");
    }

    #[test]
    fn a_large_message_crosses_chunks() {
        let mut text = Vec::new();
        while text.len() < 3 * CHUNK {
            text.extend_from_slice(b"From a line that is long enough to cross boundaries\r\n");
        }
        let out = copy(&text, true);
        let expected = String::from_utf8(text)
            .unwrap()
            .replace("\r\n", "\n")
            .replace("From a", ">From a");
        assert_eq!(out, expected.into_bytes());
    }

    #[test]
    fn short_files_are_errors() {
        let (f, off) = file_with(b"short");
        let c = Content::new(&f, off, 1 << 20);
        let err = c.copy_lf(&mut Vec::new(), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let c = Content::new(&f, off + 1, 5);
        assert!(c.copy_lf(&mut Vec::new(), false).is_err(), "bad framing");
    }

    #[test]
    fn delivered_to_fields_of_the_header_only() {
        let text = b"Received: x\r\nDelivered-To: A@Example.Test\r\ndelivered-to :\r\n  folded@example.test\r\n\r\nDelivered-To: body@example.test\r\n";
        let (f, off) = file_with(text);
        let c = Content::new(&f, off, text.len() as u64);
        assert_eq!(
            c.delivered_to().unwrap(),
            ["a@example.test", "folded@example.test"]
        );
        let text = b"\r\nDelivered-To: a@example.test\r\n";
        let (f, off) = file_with(text);
        assert!(Content::new(&f, off, text.len() as u64)
            .delivered_to()
            .unwrap()
            .is_empty());
    }
}
