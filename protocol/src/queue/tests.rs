use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;
use crate::address::{Domain, ForwardPath, Host, Mailbox, ReversePath};
use crate::bounded::BoundedVec;
use crate::codec::Message;
use crate::smtp::{BodyType, EnhancedStatus, Envid, Notify, OriginalRecipient, Ret};

fn recipient(i: usize) -> Recipient {
    Recipient {
        path: ForwardPath::Mailbox(
            Mailbox::parse(&format!("user{i}@example.test"), false).unwrap(),
        ),
        notify: (i % 2 == 0).then_some(Notify {
            failure: true,
            delay: true,
            ..Notify::NEVER
        }),
        orcpt: (i % 3 == 0)
            .then(|| OriginalRecipient::new("rfc822", &format!("orig{i}@example.test")).unwrap()),
    }
}

fn envelope(recipients: usize) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        arrival: Timestamp::from_micros(1_700_000_000_000_000),
        sender: ReversePath::Mailbox(Mailbox::parse("sender@example.org", false).unwrap()),
        flags: MailFlags {
            smtputf8: false,
            body: Some(BodyType::EightBitMime),
            ret: Some(Ret::Hdrs),
            envid: Some(Envid::new("QQ314159").unwrap()),
        },
        client: ClientInfo {
            name: Some(Domain::parse("client.example.org", false).unwrap()),
            address: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            helo: Some(Host::parse("client.example.org", false).unwrap()),
            protocol: Protocol::Esmtp,
        },
        recipients: BoundedVec::try_from((0..recipients).map(recipient).collect::<Vec<_>>())
            .unwrap(),
    }
}

fn content(len: usize) -> Vec<u8> {
    let line = b"Subject: test\r\n\r\nThe quick brown fox jumps over the lazy dog.\r\n";
    line.iter().copied().cycle().take(len).collect()
}

/// Writes a queue file with `content` given to the writer in pieces of `piece`.
fn write(envelope: &Envelope, content: &[u8], piece: usize) -> (Vec<u8>, u32) {
    let mut w = QueueFileWriter::begin(Vec::new(), envelope).unwrap();
    for part in content.chunks(piece.max(1)) {
        w.write_content(part).unwrap();
    }
    assert_eq!(w.content_len(), content.len() as u64);
    w.finish().unwrap()
}

fn read(bytes: &[u8]) -> Result<QueueFile, QueueFileError> {
    QueueFile::read(Cursor::new(bytes), QueueLimits::default())
}

fn read_content(qf: &QueueFile, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    qf.content(Cursor::new(bytes))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn result(recipient: u32, outcome: Outcome, status: &str, micros: u64) -> ResultRecord {
    ResultRecord {
        recipient,
        outcome,
        status: status.parse().unwrap(),
        diagnostic: Diagnostic::new("host mx.example.test said: 250 ok").unwrap(),
        time: Timestamp::from_micros(micros),
        next_retry: (outcome == Outcome::Deferred).then(|| Timestamp::from_micros(micros + 300)),
    }
}

/// A file under the system's temporary directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn with(bytes: &[u8]) -> (TempFile, File) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "postern-queue-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        (TempFile(path), file)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn round_trip_small_and_multi_chunk() {
    let env = envelope(5);
    for (len, piece) in [
        (0, 1),
        (1, 1),
        (1000, 7),
        (FILE_CHUNK_MAX, 4096),
        (FILE_CHUNK_MAX + 1, FILE_CHUNK_MAX + 1),
        (2 * FILE_CHUNK_MAX + 12345, 65536),
    ] {
        let body = content(len);
        let (bytes, checksum) = write(&env, &body, piece);
        let qf = read(&bytes).unwrap();
        assert_eq!(qf.envelope(), &env);
        assert_eq!(qf.content_len(), len as u64);
        assert_eq!(qf.checksum(), checksum);
        assert_eq!(qf.log_records(), 0);
        assert_eq!(qf.torn_tail(), 0);
        assert_eq!(qf.pending().count(), 5);
        assert_eq!(read_content(&qf, &bytes), body, "len {len}");
        assert_eq!(verify(Cursor::new(&bytes)).unwrap(), checksum);
    }
}

#[test]
fn chunking_does_not_depend_on_how_content_is_handed_over() {
    let env = envelope(1);
    let body = content(FILE_CHUNK_MAX + 99);
    let (a, _) = write(&env, &body, 1000);
    let (b, _) = write(&env, &body, body.len());
    assert_eq!(a, b);
}

#[test]
fn reading_starts_at_offset_zero() {
    let (bytes, _) = write(&envelope(1), b"x\r\n", 10);
    let mut cursor = Cursor::new(bytes.clone());
    cursor.set_position(17);
    assert!(QueueFile::read(&mut cursor, QueueLimits::default()).is_ok());
}

#[test]
fn every_truncation_point_is_incomplete() {
    let (bytes, _) = write(&envelope(3), &content(300), 64);
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        assert!(
            matches!(read(part), Err(QueueFileError::Incomplete { .. })),
            "read cut at {cut}: {:?}",
            read(part)
        );
        assert!(
            matches!(
                verify(Cursor::new(part)),
                Err(QueueFileError::Incomplete { .. })
            ),
            "verify cut at {cut}"
        );
    }
    assert!(read(&bytes).is_ok());
}

#[test]
fn truncation_around_chunk_boundaries_of_a_large_file_is_incomplete() {
    let (bytes, _) = write(&envelope(1), &content(2 * FILE_CHUNK_MAX + 10), 65536);
    let first_chunk = read(&bytes).unwrap().content_offset() as usize;
    let second_chunk = first_chunk + 4 + FILE_CHUNK_MAX;
    for cut in [
        first_chunk,
        first_chunk + 3,
        second_chunk - 1,
        second_chunk + 2,
        bytes.len() - 1,
    ] {
        assert!(
            matches!(read(&bytes[..cut]), Err(QueueFileError::Incomplete { .. })),
            "{cut}"
        );
        assert!(matches!(
            verify(Cursor::new(&bytes[..cut])),
            Err(QueueFileError::Incomplete { .. })
        ));
    }
}

#[test]
fn a_flipped_bit_anywhere_before_the_log_is_detected() {
    let (bytes, _) = write(&envelope(2), &content(200), 50);
    let qf = read(&bytes).unwrap();
    let content_start = qf.content_offset() as usize + 4;
    let envelope_start = 12;
    for i in 0..bytes.len() {
        for bit in [0, 7] {
            let mut damaged = bytes.clone();
            damaged[i] ^= 1 << bit;
            let got = verify(Cursor::new(&damaged));
            assert!(got.is_err(), "flip at {i} bit {bit} went unnoticed");
            let in_envelope = (envelope_start..qf.content_offset() as usize).contains(&i);
            let in_content = (content_start..content_start + 50).contains(&i);
            if in_envelope || in_content {
                assert!(
                    matches!(got, Err(QueueFileError::Checksum { .. })),
                    "at {i}"
                );
            }
        }
    }
}

#[test]
fn structural_damage_is_named() {
    let (bytes, _) = write(&envelope(1), &content(100), 100);
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(read(&bad), Err(QueueFileError::BadMagic)));
    assert!(matches!(
        verify(Cursor::new(&bad)),
        Err(QueueFileError::BadMagic)
    ));
    let mut bad = bytes.clone();
    bad[7] = 2;
    assert!(matches!(
        read(&bad),
        Err(QueueFileError::UnsupportedVersion { got: 2 })
    ));

    let qf = read(&bytes).unwrap();
    let chunk = qf.content_offset() as usize;
    let mut bad = bytes.clone();
    bad[chunk..chunk + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        read(&bad),
        Err(QueueFileError::ChunkTooLong { len: u32::MAX, .. })
    ));
    assert!(matches!(
        verify(Cursor::new(&bad)),
        Err(QueueFileError::ChunkTooLong { .. })
    ));

    let marker = chunk + 4 + 100 + 4;
    let mut bad = bytes.clone();
    bad[marker] = b'X';
    assert!(
        matches!(read(&bad), Err(QueueFileError::BadEndMarker { offset }) if offset == marker as u64)
    );
    let mut bad = bytes.clone();
    bad[marker + 11] ^= 1;
    assert!(matches!(
        read(&bad),
        Err(QueueFileError::ContentLength { counted: 100, .. })
    ));
}

#[test]
fn bounds_are_refused() {
    let (bytes, _) = write(&envelope(3), &content(5000), 5000);
    let limits = |max_recipients, max_envelope_len, max_content_len| QueueLimits {
        max_recipients,
        max_envelope_len,
        max_content_len,
    };
    assert!(matches!(
        QueueFile::read(
            Cursor::new(&bytes),
            limits(2, MAX_ENVELOPE_LEN, MAX_CONTENT_LEN)
        ),
        Err(QueueFileError::TooManyRecipients { count: 3, max: 2 })
    ));
    assert!(matches!(
        QueueFile::read(Cursor::new(&bytes), limits(3, 10, MAX_CONTENT_LEN)),
        Err(QueueFileError::EnvelopeTooLong { max: 10, .. })
    ));
    assert!(matches!(
        QueueFile::read(Cursor::new(&bytes), limits(3, MAX_ENVELOPE_LEN, 4999)),
        Err(QueueFileError::ContentTooLong { max: 4999 })
    ));
    assert!(QueueFile::read(Cursor::new(&bytes), limits(3, MAX_ENVELOPE_LEN, 5000)).is_ok());
    // Limits above the format's are lowered to it.
    assert_eq!(
        limits(usize::MAX, usize::MAX, u64::MAX).clamped(),
        QueueLimits::default()
    );

    // A declared envelope length beyond the format's bound, from a tiny file.
    let mut forged = bytes[..8].to_vec();
    forged.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        read(&forged),
        Err(QueueFileError::EnvelopeTooLong { .. })
    ));
    assert!(matches!(
        verify(Cursor::new(&forged)),
        Err(QueueFileError::EnvelopeTooLong { .. })
    ));
}

#[test]
fn invalid_envelopes_are_refused_on_write_and_read() {
    let mut env = envelope(1);
    env.recipients = BoundedVec::new();
    assert!(matches!(
        QueueFileWriter::begin(Vec::new(), &env),
        Err(QueueFileError::Encode {
            what: "envelope",
            ..
        })
    ));
    let mut env = envelope(1);
    env.version = 9;
    assert!(QueueFileWriter::begin(Vec::new(), &env).is_err());

    // The same envelopes framed by hand are refused by the reader.
    let raw = postcard::to_allocvec(&env).unwrap();
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&raw);
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&END_MAGIC);
    bytes.extend_from_slice(&0u64.to_be_bytes());
    bytes.extend_from_slice(&Crc32c::of(&bytes).to_be_bytes());
    assert!(verify(Cursor::new(&bytes)).is_ok());
    assert!(matches!(
        read(&bytes),
        Err(QueueFileError::Envelope(
            crate::codec::DecodeError::Invalid(crate::codec::InvalidValue::Record(
                RecordError::EnvelopeVersion { got: 9, .. }
            ))
        ))
    ));
}

#[test]
fn results_are_appended_and_the_last_one_wins() {
    let (bytes, _) = write(&envelope(3), &content(100), 100);
    let (tmp, mut file) = TempFile::with(&bytes);
    let mut qf = QueueFile::read(&mut file, QueueLimits::default()).unwrap();
    qf.append(&mut file, result(0, Outcome::Deferred, "4.4.1", 10))
        .unwrap();
    qf.append(&mut file, result(1, Outcome::Bounced, "5.1.1", 11))
        .unwrap();
    append_result(&mut file, &result(0, Outcome::Delivered, "2.0.0", 12)).unwrap();

    let again = QueueFile::read(&mut file, QueueLimits::default()).unwrap();
    assert_eq!(again.log_records(), 3);
    assert_eq!(again.torn_tail(), 0);
    assert_eq!(again.result(0).unwrap().outcome, Outcome::Delivered);
    assert_eq!(
        again.result(1).unwrap().status,
        "5.1.1".parse::<EnhancedStatus>().unwrap()
    );
    assert!(again.result(2).is_none());
    assert_eq!(again.pending().collect::<Vec<_>>(), vec![2]);
    // The content and its checksum are untouched by the log.
    let all = tmp.bytes();
    assert_eq!(verify(Cursor::new(&all)).unwrap(), qf.checksum());
    assert_eq!(read_content(&again, &all), content(100));

    assert!(matches!(
        qf.append(&mut file, result(3, Outcome::Delivered, "2.0.0", 13)),
        Err(QueueFileError::ResultRecipient {
            index: 3,
            recipients: 3,
            ..
        })
    ));
}

#[test]
fn a_torn_last_record_is_ignored_and_cut_off_by_the_next_append() {
    let (bytes, _) = write(&envelope(2), &content(10), 10);
    let (tmp, mut file) = TempFile::with(&bytes);
    append_result(&mut file, &result(0, Outcome::Deferred, "4.4.1", 1)).unwrap();
    let one = tmp.bytes();
    append_result(&mut file, &result(1, Outcome::Delivered, "2.0.0", 2)).unwrap();
    let two = tmp.bytes();
    for cut in one.len()..two.len() {
        let qf = read(&two[..cut]).unwrap();
        assert_eq!(qf.log_records(), 1, "cut at {cut}");
        assert_eq!(qf.torn_tail(), (cut - one.len()) as u64);
        assert!(qf.result(1).is_none());
    }
    // A damaged CRC or zeros after the log are a torn tail too.
    let mut damaged = two.clone();
    *damaged.last_mut().unwrap() ^= 1;
    assert_eq!(read(&damaged).unwrap().log_records(), 1);
    let mut zeros = two.clone();
    zeros.extend_from_slice(&[0; 40]);
    assert_eq!(read(&zeros).unwrap().torn_tail(), 40);

    // Appending after a torn tail replaces it.
    let (tmp, mut file) = TempFile::with(&two[..two.len() - 3]);
    let mut qf = QueueFile::read(&mut file, QueueLimits::default()).unwrap();
    assert_eq!(qf.torn_tail(), two.len() as u64 - 3 - one.len() as u64);
    qf.append(&mut file, result(1, Outcome::Bounced, "5.0.0", 3))
        .unwrap();
    assert_eq!(qf.torn_tail(), 0);
    let healed = QueueFile::read(&mut file, QueueLimits::default()).unwrap();
    assert_eq!(healed.log_records(), 2);
    assert_eq!(healed.torn_tail(), 0);
    assert_eq!(healed.result(1).unwrap().outcome, Outcome::Bounced);
    assert_eq!(healed, qf);
    drop(tmp);

    // A tail longer than the new record is cut off, not left after it.
    let mut long_tail = two.clone();
    long_tail.extend_from_slice(&[0xAB; 300]);
    let (tmp, mut file) = TempFile::with(&long_tail);
    append_result(&mut file, &result(0, Outcome::Delivered, "2.0.0", 4)).unwrap();
    let healed = QueueFile::read(&mut file, QueueLimits::default()).unwrap();
    assert_eq!(healed.log_records(), 3);
    assert_eq!(healed.torn_tail(), 0);
    assert!(tmp.bytes().len() < long_tail.len());
}

#[test]
fn a_file_that_shrank_since_it_was_read_is_not_extended() {
    let (bytes, _) = write(&envelope(1), &content(10), 10);
    let (tmp, mut file) = TempFile::with(&bytes);
    let mut qf = QueueFile::read(&mut file, QueueLimits::default()).unwrap();
    file.set_len(bytes.len() as u64 - 1).unwrap();
    assert!(matches!(
        qf.append(&mut file, result(0, Outcome::Delivered, "2.0.0", 1)),
        Err(QueueFileError::Incomplete { what: "result log" })
    ));
    assert_eq!(tmp.bytes().len(), bytes.len() - 1);
}

#[test]
fn a_well_framed_but_invalid_record_is_an_error() {
    let (mut bytes, _) = write(&envelope(2), &content(10), 10);
    let log = bytes.len() as u64;
    let push = |bytes: &mut Vec<u8>, payload: &[u8]| {
        let mut framed = (payload.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(payload);
        let crc = Crc32c::of(&framed);
        framed.extend_from_slice(&crc.to_be_bytes());
        bytes.extend_from_slice(&framed);
    };
    let mut out_of_range = bytes.clone();
    push(
        &mut out_of_range,
        &postcard::to_allocvec(&result(7, Outcome::Delivered, "2.0.0", 1)).unwrap(),
    );
    assert!(matches!(
        read(&out_of_range),
        Err(QueueFileError::ResultRecipient { index: 7, recipients: 2, offset }) if offset == log
    ));
    let mut mismatch = result(0, Outcome::Delivered, "2.0.0", 1);
    mismatch.status = "5.1.1".parse().unwrap();
    push(&mut bytes, &postcard::to_allocvec(&mismatch).unwrap());
    assert!(
        matches!(read(&bytes), Err(QueueFileError::ResultRecord { offset, .. }) if offset == log)
    );
}

#[test]
fn result_records_check_their_fields() {
    let ok = result(0, Outcome::Deferred, "4.4.1", 1);
    assert!(ok.validate().is_ok());
    let mut r = ok.clone();
    r.next_retry = None;
    assert!(matches!(
        r.validate(),
        Err(crate::codec::InvalidValue::Record(
            RecordError::RetryMismatch { .. }
        ))
    ));
    let mut r = result(0, Outcome::Delivered, "2.0.0", 1);
    r.next_retry = Some(Timestamp::from_micros(5));
    assert!(r.validate().is_err());
    for (outcome, status, valid) in [
        (Outcome::Delivered, "4.0.0", false),
        (Outcome::Deferred, "5.0.0", false),
        (Outcome::Deferred, "2.0.0", false),
        (Outcome::Bounced, "2.0.0", false),
        (Outcome::Bounced, "4.4.7", true),
        (Outcome::Bounced, "5.1.1", true),
    ] {
        assert_eq!(
            result(0, outcome, status, 1).validate().is_ok(),
            valid,
            "{outcome} {status}"
        );
    }
    assert!(Diagnostic::new(&"d".repeat(MAX_DIAGNOSTIC_LEN)).is_ok());
    assert_eq!(
        Diagnostic::new(&"d".repeat(MAX_DIAGNOSTIC_LEN + 1)),
        Err(RecordError::DiagnosticTooLong {
            len: MAX_DIAGNOSTIC_LEN + 1
        })
    );
    assert_eq!(
        Diagnostic::new("a\nb"),
        Err(RecordError::DiagnosticControl { offset: 1 })
    );
}

#[test]
fn worst_case_records_fit_their_bounds() {
    let longest_mailbox = format!(
        "{}@{}.{}.{}.{}",
        "l".repeat(64),
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(40),
        "d".repeat(20)
    );
    let mailbox = Mailbox::parse(&longest_mailbox, false).unwrap();
    assert_eq!(longest_mailbox.len(), crate::address::MAX_MAILBOX_LEN);
    let worst = Recipient {
        path: ForwardPath::Mailbox(mailbox),
        notify: Some(Notify {
            success: true,
            failure: true,
            delay: true,
        }),
        orcpt: Some(
            OriginalRecipient::new(
                &"t".repeat(crate::smtp::params::MAX_ADDR_TYPE_LEN),
                &"o".repeat(crate::smtp::params::MAX_ORCPT_LEN),
            )
            .unwrap(),
        ),
    };
    let per_recipient = postcard::to_allocvec(&worst).unwrap().len();
    let mut env = envelope(1);
    env.recipients = BoundedVec::try_from(vec![worst]).unwrap();
    let rest = postcard::to_allocvec(&env).unwrap().len() - per_recipient + 4;
    assert!(
        per_recipient * MAX_RECIPIENTS + rest <= MAX_ENVELOPE_LEN,
        "{per_recipient} octets per recipient"
    );
    assert!(
        per_recipient > 790,
        "the worst case is meant to be the largest: {per_recipient}"
    );

    let record = ResultRecord {
        recipient: u32::MAX,
        diagnostic: Diagnostic::new(&"d".repeat(MAX_DIAGNOSTIC_LEN)).unwrap(),
        time: Timestamp::from_micros(u64::MAX),
        ..result(0, Outcome::Deferred, "4.999.999", u64::MAX - 300)
    };
    assert!(postcard::to_allocvec(&record).unwrap().len() <= MAX_RESULT_RECORD_LEN);
}

#[test]
fn content_reader_refuses_bad_framing() {
    let (bytes, _) = write(&envelope(1), &content(100), 100);
    let qf = read(&bytes).unwrap();
    let chunk = qf.content_offset() as usize;
    // A chunk longer than the end marker allows.
    let mut bad = bytes.clone();
    bad[chunk..chunk + 4].copy_from_slice(&101u32.to_be_bytes());
    let err = qf
        .content(Cursor::new(&bad))
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    // A file cut inside the content.
    let err = qf
        .content(Cursor::new(&bytes[..chunk + 50]))
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn content_by_pread_leaves_the_descriptors_offset_alone() {
    let text = content(3 * PREAD_BUFFER + 7);
    let (bytes, _) = write(&envelope(2), &text, 50_000);
    let qf = read(&bytes).unwrap();
    // A file that is gone from its directory once open, as nothing else needs its name.
    let path = std::env::temp_dir().join(format!("postern-pread-{}", std::process::id()));
    let mut file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.write_all(&bytes).unwrap();
    file.seek(SeekFrom::Start(3)).unwrap();
    let mut out = Vec::new();
    ContentReader::pread(&file, qf.content_offset(), qf.content_len())
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, text);
    assert_eq!(file.stream_position().unwrap(), 3);
    // The wrong offset is a framing error, not other octets.
    let err = ContentReader::pread(&file, qf.content_offset() + 1, qf.content_len())
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn timestamps_convert() {
    let t = Timestamp::from_system_time(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_234_567),
    );
    assert_eq!(t.micros(), 1_234_567);
    assert_eq!(
        Timestamp::from_micros(t.micros()).to_system_time(),
        t.to_system_time()
    );
    assert_eq!(
        Timestamp::from_system_time(std::time::UNIX_EPOCH - std::time::Duration::from_secs(1))
            .micros(),
        0
    );
    assert!(Timestamp::now() > t);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_content_round_trips(
        body in proptest::collection::vec(any::<u8>(), 0..5000),
        piece in 1usize..700,
        recipients in 1usize..20,
    ) {
        let env = envelope(recipients);
        let (bytes, checksum) = write(&env, &body, piece);
        let qf = read(&bytes).unwrap();
        prop_assert_eq!(qf.envelope(), &env);
        prop_assert_eq!(read_content(&qf, &bytes), body);
        prop_assert_eq!(verify(Cursor::new(&bytes)).unwrap(), checksum);
    }
}

/// A valid file for the fuzz entry point's tests: content and one result record.
pub(crate) fn sample_file() -> Vec<u8> {
    let (mut bytes, _) = write(&envelope(2), &content(300), 100);
    let record = crate::codec::encode(&result(1, Outcome::Deferred, "4.4.1", 5)).unwrap();
    let mut framed = (record.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&record);
    let crc = Crc32c::of(&framed);
    framed.extend_from_slice(&crc.to_be_bytes());
    bytes.extend_from_slice(&framed);
    assert_eq!(read(&bytes).unwrap().log_records(), 1);
    bytes
}
