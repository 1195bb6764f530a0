//! The queue file: one message, written once by cleanup, read by the queue
//! manager and (through a read-only descriptor) by delivery agents, with an
//! append-only log of delivery results after it.
//!
//! Trusts: nothing in a file it reads. Every length is checked against a bound
//! before it is used, the envelope goes through the validated types of this
//! crate, and a file is complete only if its end marker is present and agrees with
//! what precedes it. Anyone who can write the spool can forge a file; the checksum
//! only detects torn writes and corruption.
//!
//! Layout (all integers big-endian):
//!
//! | part | bytes |
//! |---|---|
//! | magic | `PSTRNQ` |
//! | format version | u16, [`FORMAT_VERSION`] |
//! | envelope length | u32, at most [`MAX_ENVELOPE_LEN`] |
//! | envelope | postcard [`Envelope`] |
//! | content | chunks, each a u32 length (1..=[`FILE_CHUNK_MAX`]) and that many octets, then a u32 zero |
//! | end marker | `QEND`, u64 content length, u32 CRC-32C of every byte before the CRC |
//! | result log | records, each a u16 length (1..=[`MAX_RESULT_RECORD_LEN`]), postcard [`ResultRecord`], u32 CRC-32C of the length and the record |
//!
//! The content is the message as RFC 5322 text with CRLF line ends, as cleanup
//! wrote it; its length is not known when writing starts, hence the chunks.
//!
//! A file that ends before its end marker is incomplete (cleanup died, or has not
//! finished) and is never delivered. After the end marker, the queue manager
//! appends one result record per delivery attempt, written before it acts on it
//! (so it survives the death of any process) and fsync'd before the file is
//! deferred or named in a notice (so a power loss can repeat a delivery, never
//! lose one). Reading the log stops at the first record that is short, has an impossible
//! length or a wrong CRC: that is the torn tail of an append interrupted by a crash,
//! and it is ignored. Appending first cuts such a tail off, so a bad record is
//! always the last thing in the file. A record whose CRC is right but whose content
//! is invalid was written that way, and makes the file unreadable.

mod crc32c;
mod envelope;

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

pub use crc32c::Crc32c;
pub use envelope::{
    ClientInfo, Diagnostic, Envelope, MailFlags, Outcome, Protocol, Recipient, RecordError,
    ResultRecord, Timestamp, ENVELOPE_VERSION, MAX_DIAGNOSTIC_LEN, MAX_RECIPIENTS,
};

use crate::codec::{decode, encode, DecodeError, EncodeError};

/// The first six octets of every queue file.
pub const MAGIC: [u8; 6] = *b"PSTRNQ";

/// The layout's version; raised whenever the framing changes.
pub const FORMAT_VERSION: u16 = 1;

/// The first four octets of the end marker.
pub const END_MAGIC: [u8; 4] = *b"QEND";

/// Content octets per chunk: large enough that a 10 MB message is ten chunks,
/// small enough that the writer's buffer costs cleanup little memory.
pub const FILE_CHUNK_MAX: usize = 1 << 20;

/// [`MAX_RECIPIENTS`] recipients of at most about 800 encoded octets each (a
/// 256-octet path, a 500-octet ORCPT), plus the rest of the envelope.
pub const MAX_ENVELOPE_LEN: usize = 80 << 20;

/// No message is this large (`message_size_limit` defaults to 10 240 000): the
/// bound keeps a forged length from sending a reader through terabytes.
pub const MAX_CONTENT_LEN: u64 = 4 << 30;

/// A result record is under 1100 octets (a [`MAX_DIAGNOSTIC_LEN`] diagnostic and a
/// few numbers); anything longer is damage.
pub const MAX_RESULT_RECORD_LEN: usize = 2048;

const HEADER_LEN: u64 = 8;
const END_MARKER_LEN: usize = 16;

/// Bounds a reader applies, each at most the hard limit of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_recipients: usize,
    pub max_envelope_len: usize,
    pub max_content_len: u64,
}

impl Default for QueueLimits {
    /// The hard limits of the format.
    fn default() -> Self {
        QueueLimits {
            max_recipients: MAX_RECIPIENTS,
            max_envelope_len: MAX_ENVELOPE_LEN,
            max_content_len: MAX_CONTENT_LEN,
        }
    }
}

impl QueueLimits {
    fn clamped(self) -> QueueLimits {
        QueueLimits {
            max_recipients: self.max_recipients.min(MAX_RECIPIENTS),
            max_envelope_len: self.max_envelope_len.min(MAX_ENVELOPE_LEN),
            max_content_len: self.max_content_len.min(MAX_CONTENT_LEN),
        }
    }
}

/// Why a queue file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum QueueFileError {
    #[error("queue file I/O error at the {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("queue file is incomplete: it ends inside the {what}")]
    Incomplete { what: &'static str },
    #[error("not a queue file: wrong magic number")]
    BadMagic,
    #[error(
        "queue file format version {got} is not the version this side reads ({FORMAT_VERSION})"
    )]
    UnsupportedVersion { got: u16 },
    #[error("queue file envelope is {len} octets, more than {max}")]
    EnvelopeTooLong { len: u64, max: usize },
    #[error("queue file envelope is invalid: {0}")]
    Envelope(DecodeError),
    #[error("queue file has {count} recipients, more than {max}")]
    TooManyRecipients { count: usize, max: usize },
    #[error(
        "queue file content chunk at offset {offset} is {len} octets, more than {FILE_CHUNK_MAX}"
    )]
    ChunkTooLong { offset: u64, len: u32 },
    #[error("queue file content is more than {max} octets")]
    ContentTooLong { max: u64 },
    #[error("queue file end marker at offset {offset} is malformed")]
    BadEndMarker { offset: u64 },
    #[error("queue file end marker records {recorded} content octets, its chunks hold {counted}")]
    ContentLength { recorded: u64, counted: u64 },
    #[error("queue file checksum mismatch: recorded {recorded:08x}, computed {computed:08x}")]
    Checksum { recorded: u32, computed: u32 },
    #[error("queue file result record at offset {offset} is invalid: {source}")]
    ResultRecord { offset: u64, source: DecodeError },
    #[error("queue file result record at offset {offset} names recipient {index} of {recipients}")]
    ResultRecipient {
        offset: u64,
        index: u32,
        recipients: usize,
    },
    #[error("queue file result record is {len} octets, more than {MAX_RESULT_RECORD_LEN}")]
    ResultTooLong { len: usize },
    #[error("cannot encode the queue file {what}: {source}")]
    Encode {
        what: &'static str,
        source: EncodeError,
    },
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> QueueFileError {
    move |source| QueueFileError::Io { what, source }
}

/// Writes a queue file to any `Write`: the envelope at [`begin`](Self::begin),
/// the content as it arrives, the end marker at [`finish`](Self::finish). The
/// caller makes the result durable (cleanup: fsync the file and its directory).
/// After an error the file is unusable and must be removed.
pub struct QueueFileWriter<W: Write> {
    out: W,
    crc: Crc32c,
    /// A u32 length slot, then up to [`FILE_CHUNK_MAX`] content octets.
    chunk: Vec<u8>,
    content_len: u64,
}

impl<W: Write> QueueFileWriter<W> {
    /// Writes the header and the envelope.
    pub fn begin(out: W, envelope: &Envelope) -> Result<QueueFileWriter<W>, QueueFileError> {
        let bytes = encode(envelope).map_err(|source| QueueFileError::Encode {
            what: "envelope",
            source,
        })?;
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&len| len as usize <= MAX_ENVELOPE_LEN)
            .ok_or(QueueFileError::EnvelopeTooLong {
                len: bytes.len() as u64,
                max: MAX_ENVELOPE_LEN,
            })?;
        let mut head = Vec::with_capacity(HEADER_LEN as usize + 4 + bytes.len());
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        head.extend_from_slice(&len.to_be_bytes());
        head.extend_from_slice(&bytes);
        let mut writer = QueueFileWriter {
            out,
            crc: Crc32c::new(),
            chunk: vec![0; 4],
            content_len: 0,
        };
        writer.emit(&head, "envelope")?;
        Ok(writer)
    }

    /// Appends content; data is written out in chunks of [`FILE_CHUNK_MAX`].
    pub fn write_content(&mut self, mut data: &[u8]) -> Result<(), QueueFileError> {
        let total = self.content_len.saturating_add(data.len() as u64);
        if total > MAX_CONTENT_LEN {
            return Err(QueueFileError::ContentTooLong {
                max: MAX_CONTENT_LEN,
            });
        }
        while !data.is_empty() {
            let room = FILE_CHUNK_MAX - (self.chunk.len() - 4);
            let (now, later) = data.split_at(room.min(data.len()));
            self.chunk.extend_from_slice(now);
            data = later;
            if self.chunk.len() - 4 == FILE_CHUNK_MAX {
                self.seal_chunk();
                let chunk = std::mem::replace(&mut self.chunk, vec![0; 4]);
                self.emit(&chunk, "content")?;
            }
        }
        self.content_len = total;
        Ok(())
    }

    /// Content octets written so far.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// Writes the last chunk, the terminator and the end marker, flushes, and
    /// returns the writer and the checksum.
    pub fn finish(mut self) -> Result<(W, u32), QueueFileError> {
        let mut tail = std::mem::take(&mut self.chunk);
        if tail.len() > 4 {
            let len = (tail.len() - 4) as u32;
            tail[..4].copy_from_slice(&len.to_be_bytes());
            tail.extend_from_slice(&0u32.to_be_bytes());
        }
        // An empty pending chunk's zero length slot is the terminator itself.
        tail.extend_from_slice(&END_MAGIC);
        tail.extend_from_slice(&self.content_len.to_be_bytes());
        self.crc.update(&tail);
        let checksum = self.crc.value();
        tail.extend_from_slice(&checksum.to_be_bytes());
        self.out.write_all(&tail).map_err(io_error("end marker"))?;
        self.out.flush().map_err(io_error("end marker"))?;
        Ok((self.out, checksum))
    }

    fn seal_chunk(&mut self) {
        let len = (self.chunk.len() - 4) as u32;
        self.chunk[..4].copy_from_slice(&len.to_be_bytes());
    }

    fn emit(&mut self, bytes: &[u8], what: &'static str) -> Result<(), QueueFileError> {
        self.crc.update(bytes);
        self.out.write_all(bytes).map_err(io_error(what))
    }
}

/// A reader that counts its position.
struct Input<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Input<R> {
    fn exact<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], QueueFileError> {
        let mut buf = [0u8; N];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => {
                self.pos += N as u64;
                Ok(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(QueueFileError::Incomplete { what })
            }
            Err(e) => Err(io_error(what)(e)),
        }
    }

    /// Fills `buf` as far as the input goes; returns how much was read.
    fn up_to(&mut self, buf: &mut [u8], what: &'static str) -> Result<usize, QueueFileError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(what)(e)),
            }
        }
        self.pos += filled as u64;
        Ok(filled)
    }

    /// Reads `len` octets into a vector that grows only as data arrives.
    fn vec(&mut self, len: u64, what: &'static str) -> Result<Vec<u8>, QueueFileError> {
        let mut out = Vec::new();
        (&mut self.inner)
            .take(len)
            .read_to_end(&mut out)
            .map_err(io_error(what))?;
        self.pos += out.len() as u64;
        if (out.len() as u64) < len {
            return Err(QueueFileError::Incomplete { what });
        }
        Ok(out)
    }
}

impl<R: Read + Seek> Input<BufReader<R>> {
    /// Skips `len` octets; running past the end shows at the next read.
    fn skip(&mut self, len: u32, what: &'static str) -> Result<(), QueueFileError> {
        self.inner
            .seek_relative(i64::from(len))
            .map_err(io_error(what))?;
        self.pos += u64::from(len);
        Ok(())
    }
}

fn check_header(header: [u8; HEADER_LEN as usize]) -> Result<(), QueueFileError> {
    if header[..6] != MAGIC {
        return Err(QueueFileError::BadMagic);
    }
    let version = u16::from_be_bytes([header[6], header[7]]);
    if version != FORMAT_VERSION {
        return Err(QueueFileError::UnsupportedVersion { got: version });
    }
    Ok(())
}

fn check_chunk_len(
    len: u32,
    offset: u64,
    counted: u64,
    max_content: u64,
) -> Result<u64, QueueFileError> {
    if len as usize > FILE_CHUNK_MAX {
        return Err(QueueFileError::ChunkTooLong { offset, len });
    }
    let counted = counted + u64::from(len);
    if counted > max_content {
        return Err(QueueFileError::ContentTooLong { max: max_content });
    }
    Ok(counted)
}

/// The end marker's content length and CRC, after checking its magic and length.
fn check_end_marker(
    marker: [u8; END_MARKER_LEN],
    offset: u64,
    counted: u64,
) -> Result<u32, QueueFileError> {
    if marker[..4] != END_MAGIC {
        return Err(QueueFileError::BadEndMarker { offset });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&marker[4..12]);
    let recorded = u64::from_be_bytes(len);
    if recorded != counted {
        return Err(QueueFileError::ContentLength { recorded, counted });
    }
    Ok(u32::from_be_bytes([
        marker[12], marker[13], marker[14], marker[15],
    ]))
}

/// Reads a file's framing in order: header and envelope, content chunks (skipped,
/// not read), end marker, result log.
struct Scanner<R> {
    input: Input<BufReader<R>>,
}

impl<R: Read + Seek> Scanner<R> {
    fn start(mut reader: R) -> Result<Scanner<R>, QueueFileError> {
        reader
            .seek(SeekFrom::Start(0))
            .map_err(io_error("header"))?;
        Ok(Scanner {
            input: Input {
                inner: BufReader::new(reader),
                pos: 0,
            },
        })
    }

    /// Checks the header; returns the envelope's octets if `keep`, else skips them.
    fn head(&mut self, limits: QueueLimits, keep: bool) -> Result<Vec<u8>, QueueFileError> {
        check_header(self.input.exact("header")?)?;
        let envelope_len = u32::from_be_bytes(self.input.exact("envelope length")?);
        if envelope_len as usize > limits.max_envelope_len {
            return Err(QueueFileError::EnvelopeTooLong {
                len: u64::from(envelope_len),
                max: limits.max_envelope_len,
            });
        }
        if keep {
            self.input.vec(u64::from(envelope_len), "envelope")
        } else {
            self.input.skip(envelope_len, "envelope")?;
            Ok(Vec::new())
        }
    }

    /// Walks the chunks and checks the end marker; returns the content's offset
    /// and length and the recorded checksum.
    fn content(&mut self, limits: QueueLimits) -> Result<(u64, u64, u32), QueueFileError> {
        let offset = self.input.pos;
        let mut counted = 0u64;
        loop {
            let at = self.input.pos;
            let len = u32::from_be_bytes(self.input.exact("content")?);
            if len == 0 {
                break;
            }
            counted = check_chunk_len(len, at, counted, limits.max_content_len)?;
            self.input.skip(len, "content")?;
        }
        let marker_offset = self.input.pos;
        let checksum = check_end_marker(self.input.exact("end marker")?, marker_offset, counted)?;
        Ok((offset, counted, checksum))
    }

    /// Hands each valid record to `on_record` with its offset; stops at the end
    /// or at a torn record. Returns the end of the last valid record, the number
    /// of records and the file's length.
    fn log(
        &mut self,
        mut on_record: impl FnMut(u64, &[u8]) -> Result<(), QueueFileError>,
    ) -> Result<(u64, u64, u64), QueueFileError> {
        let mut records = 0;
        let mut log_end = self.input.pos;
        loop {
            let mut len = [0u8; 2];
            if self.input.up_to(&mut len, "result log")? < len.len() {
                break;
            }
            let record_len = usize::from(u16::from_be_bytes(len));
            if record_len == 0 || record_len > MAX_RESULT_RECORD_LEN {
                break;
            }
            let mut body = vec![0u8; record_len + 4];
            if self.input.up_to(&mut body, "result log")? < body.len() {
                break;
            }
            let mut crc = Crc32c::new();
            crc.update(&len);
            crc.update(&body[..record_len]);
            if crc.value().to_be_bytes() != body[record_len..] {
                break;
            }
            on_record(log_end, &body[..record_len])?;
            records += 1;
            log_end = self.input.pos;
        }
        let file_len = self
            .input
            .inner
            .seek(SeekFrom::End(0))
            .map_err(io_error("result log"))?;
        Ok((log_end, records, file_len))
    }
}

/// A complete queue file's envelope, where its content is, and the latest
/// result for each recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFile {
    envelope: Envelope,
    content_offset: u64,
    content_len: u64,
    checksum: u32,
    log_end: u64,
    log_records: u64,
    torn_tail: u64,
    latest: Vec<Option<ResultRecord>>,
}

impl QueueFile {
    /// Reads the envelope and the result log and checks that the content is
    /// framed correctly and followed by the end marker, without reading the
    /// content itself (see [`verify`] for the checksum). Starts at offset 0
    /// whatever the reader's position.
    pub fn read<R: Read + Seek>(
        reader: R,
        limits: QueueLimits,
    ) -> Result<QueueFile, QueueFileError> {
        let limits = limits.clamped();
        let mut scanner = Scanner::start(reader)?;
        let envelope_bytes = scanner.head(limits, true)?;
        let envelope = decode::<Envelope>(&envelope_bytes).map_err(QueueFileError::Envelope)?;
        drop(envelope_bytes);
        let count = envelope.recipients.len();
        if count > limits.max_recipients {
            return Err(QueueFileError::TooManyRecipients {
                count,
                max: limits.max_recipients,
            });
        }
        let (content_offset, content_len, checksum) = scanner.content(limits)?;
        // Folded as read, so a long log costs no more memory than its recipients.
        let mut latest = vec![None; count];
        let (log_end, log_records, file_len) = scanner.log(|offset, bytes| {
            let record = decode::<ResultRecord>(bytes)
                .map_err(|source| QueueFileError::ResultRecord { offset, source })?;
            let slot = latest.get_mut(record.recipient as usize).ok_or(
                QueueFileError::ResultRecipient {
                    offset,
                    index: record.recipient,
                    recipients: count,
                },
            )?;
            *slot = Some(record);
            Ok(())
        })?;
        Ok(QueueFile {
            envelope,
            content_offset,
            content_len,
            checksum,
            log_end,
            log_records,
            torn_tail: file_len.saturating_sub(log_end),
            latest,
        })
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Offset of the first content chunk's length.
    pub fn content_offset(&self) -> u64 {
        self.content_offset
    }

    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// The checksum the end marker records.
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// The last result logged for recipient `index`.
    pub fn result(&self, index: usize) -> Option<&ResultRecord> {
        self.latest.get(index).and_then(Option::as_ref)
    }

    /// Recipients (by index) with no final outcome yet.
    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.latest
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.as_ref().is_some_and(|r| r.outcome.is_final()))
            .map(|(i, _)| i)
    }

    /// Valid result records in the log.
    pub fn log_records(&self) -> u64 {
        self.log_records
    }

    /// Octets after the last valid result record: a torn append, ignored.
    pub fn torn_tail(&self) -> u64 {
        self.torn_tail
    }

    /// A reader of the content, positioned at its start.
    pub fn content<R: Read + Seek>(
        &self,
        mut reader: R,
    ) -> Result<ContentReader<R>, QueueFileError> {
        reader
            .seek(SeekFrom::Start(self.content_offset))
            .map_err(io_error("content"))?;
        Ok(ContentReader {
            inner: reader,
            in_chunk: 0,
            read: 0,
            expected: self.content_len,
            done: false,
        })
    }

    /// Appends `record` to `file` (this queue file, opened for writing), cutting
    /// off a torn tail first. The record is written, not fsync'd: the caller
    /// fsyncs the file (`sync_data`) before anything that must not be repeated
    /// after a power loss.
    pub fn append(&mut self, file: &mut File, record: ResultRecord) -> Result<(), QueueFileError> {
        let index = record.recipient as usize;
        if index >= self.latest.len() {
            return Err(QueueFileError::ResultRecipient {
                offset: self.log_end,
                index: record.recipient,
                recipients: self.latest.len(),
            });
        }
        self.log_end = write_record(file, self.log_end, &record)?;
        self.log_records += 1;
        self.torn_tail = 0;
        self.latest[index] = Some(record);
        Ok(())
    }
}

/// Cuts the file at `log_end` and writes the record there (no fsync); returns
/// the new end of the log.
fn write_record(
    file: &mut File,
    log_end: u64,
    record: &ResultRecord,
) -> Result<u64, QueueFileError> {
    let bytes = encode(record).map_err(|source| QueueFileError::Encode {
        what: "result record",
        source,
    })?;
    if bytes.is_empty() || bytes.len() > MAX_RESULT_RECORD_LEN {
        return Err(QueueFileError::ResultTooLong { len: bytes.len() });
    }
    let len = (bytes.len() as u16).to_be_bytes();
    let mut framed = Vec::with_capacity(bytes.len() + 6);
    framed.extend_from_slice(&len);
    framed.extend_from_slice(&bytes);
    let crc = Crc32c::of(&framed);
    framed.extend_from_slice(&crc.to_be_bytes());

    let file_len = file.metadata().map_err(io_error("result log"))?.len();
    if file_len < log_end {
        // Shorter than when it was read: never extend it with zeros.
        return Err(QueueFileError::Incomplete { what: "result log" });
    }
    if file_len != log_end {
        file.set_len(log_end).map_err(io_error("result log"))?;
    }
    file.seek(SeekFrom::Start(log_end))
        .map_err(io_error("result log"))?;
    file.write_all(&framed).map_err(io_error("result log"))?;
    Ok(log_end + framed.len() as u64)
}

/// Appends a result record to a complete queue file, found by its framing alone
/// (the envelope is not decoded, so the recipient index is not checked: prefer
/// [`QueueFile::append`] when the file has been read). Cuts off a torn tail
/// first, and fsyncs before returning.
pub fn append_result(file: &mut File, record: &ResultRecord) -> Result<(), QueueFileError> {
    let limits = QueueLimits::default();
    let mut scanner = Scanner::start(&mut *file)?;
    scanner.head(limits, false)?;
    scanner.content(limits)?;
    let (log_end, _, _) = scanner.log(|_, _| Ok(()))?;
    drop(scanner);
    write_record(file, log_end, record)?;
    file.sync_data().map_err(io_error("result log"))
}

/// Reads a queue file from start to end marker and checks its checksum, holding
/// no more than a buffer of it in memory. Returns the checksum.
pub fn verify<R: Read>(reader: R) -> Result<u32, QueueFileError> {
    let mut input = Input {
        inner: reader,
        pos: 0,
    };
    let mut crc = Crc32c::new();
    let header = input.exact::<{ HEADER_LEN as usize }>("header")?;
    check_header(header)?;
    crc.update(&header);
    let envelope_len = input.exact::<4>("envelope length")?;
    crc.update(&envelope_len);
    let envelope_len = u32::from_be_bytes(envelope_len);
    if envelope_len as usize > MAX_ENVELOPE_LEN {
        return Err(QueueFileError::EnvelopeTooLong {
            len: u64::from(envelope_len),
            max: MAX_ENVELOPE_LEN,
        });
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut pass = |input: &mut Input<R>, crc: &mut Crc32c, len: u32, what: &'static str| {
        let mut left = len as usize;
        while left > 0 {
            let want = left.min(buf.len());
            if input.up_to(&mut buf[..want], what)? < want {
                return Err(QueueFileError::Incomplete { what });
            }
            crc.update(&buf[..want]);
            left -= want;
        }
        Ok(())
    };
    pass(&mut input, &mut crc, envelope_len, "envelope")?;
    let mut counted = 0u64;
    loop {
        let offset = input.pos;
        let len = input.exact::<4>("content")?;
        crc.update(&len);
        let len = u32::from_be_bytes(len);
        if len == 0 {
            break;
        }
        counted = check_chunk_len(len, offset, counted, MAX_CONTENT_LEN)?;
        pass(&mut input, &mut crc, len, "content")?;
    }
    let marker_offset = input.pos;
    let marker = input.exact::<END_MARKER_LEN>("end marker")?;
    let recorded = check_end_marker(marker, marker_offset, counted)?;
    crc.update(&marker[..12]);
    let computed = crc.value();
    if recorded != computed {
        return Err(QueueFileError::Checksum { recorded, computed });
    }
    Ok(computed)
}

/// Streams a queue file's content, chunk by chunk, checking each chunk's length
/// and the total against the end marker. Errors are `io::ErrorKind::InvalidData`
/// for bad framing and `UnexpectedEof` for a file that ends early.
pub struct ContentReader<R> {
    inner: R,
    in_chunk: u32,
    read: u64,
    expected: u64,
    done: bool,
}

impl<R> ContentReader<R> {
    /// A reader of content framed as in a queue file, whose first chunk length is
    /// `inner`'s next octets and whose total is `content_len`: what a delivery agent
    /// has (the file's descriptor, [`QueueFile::content_offset`] and
    /// [`QueueFile::content_len`] from its request) without reading the envelope.
    /// Framing is checked as for [`QueueFile::content`].
    pub fn starting_at(inner: R, content_len: u64) -> ContentReader<R> {
        ContentReader {
            inner,
            in_chunk: 0,
            read: 0,
            expected: content_len,
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The read size of [`ContentReader::pread`]: a typical message is a few system calls, and the
/// reader's memory is bounded whatever the message size.
pub const PREAD_BUFFER: usize = 64 << 10;

impl<'a> ContentReader<BufReader<FileAt<'a>>> {
    /// [`ContentReader::starting_at`] over `file` read with `pread` from `offset` (the
    /// [`QueueFile::content_offset`] a request names). The descriptor's own offset is never
    /// moved, as another process (the queue manager) may share the open file description.
    pub fn pread(file: &'a File, offset: u64, content_len: u64) -> Self {
        ContentReader::starting_at(
            BufReader::with_capacity(PREAD_BUFFER, FileAt { file, pos: offset }),
            content_len,
        )
    }
}

/// A `Read` over a file at a position of its own, by `pread`.
#[derive(Debug)]
pub struct FileAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> Read for ContentReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.done {
            return Ok(0);
        }
        while self.in_chunk == 0 {
            let mut len = [0u8; 4];
            self.inner.read_exact(&mut len)?;
            let len = u32::from_be_bytes(len);
            if len == 0 {
                if self.read != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "queue file content is shorter than its end marker says",
                    ));
                }
                self.done = true;
                return Ok(0);
            }
            if len as usize > FILE_CHUNK_MAX || self.read + u64::from(len) > self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "queue file content chunk is over its bound",
                ));
            }
            self.in_chunk = len;
        }
        let want = buf.len().min(self.in_chunk as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.in_chunk -= n as u32;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests;
