//! Queue files and settings for the unit tests: real files written with `QueueFileWriter` and
//! result records appended as the queue manager appends them.

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::bounded::BoundedVec;
use protocol::queue::{
    self, ClientInfo, Diagnostic, Envelope, MailFlags, Outcome, Protocol, QueueFileWriter,
    Recipient, ResultRecord, Timestamp, ENVELOPE_VERSION,
};
use protocol::smtp::{Notify, OriginalRecipient};
use protocol::{ForwardPath, QueueId, ReversePath};

use crate::config::Config;

pub const ARRIVAL: u64 = 1_700_000_000_000_000;
pub const ATTEMPT: u64 = 1_700_000_600_000_000;

pub fn config() -> Config {
    let text = "myhostname = mx.example.test\nmydomain = example.test\n";
    let settings = conf::MainCf::parse(text, std::path::Path::new("main.cf")).unwrap();
    Config::from_settings(&settings).unwrap()
}

pub fn queue_id() -> QueueId {
    QueueId::parse("0005F1A2B3C4D5E6000001").unwrap()
}

pub fn rcpt(address: &str, notify: Option<&str>, orcpt: Option<&str>) -> Recipient {
    Recipient {
        path: ForwardPath::parse(&format!("<{address}>"), true).unwrap(),
        notify: notify.map(|n| Notify::parse(n).unwrap()),
        orcpt: orcpt.map(|o| OriginalRecipient::parse(o).unwrap()),
    }
}

pub fn envelope(sender: &str, flags: MailFlags, recipients: Vec<Recipient>) -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        arrival: Timestamp::from_micros(ARRIVAL),
        sender: ReversePath::parse(&format!("<{sender}>"), true).unwrap(),
        flags,
        client: ClientInfo {
            name: None,
            address: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
            helo: None,
            protocol: Protocol::Esmtp,
        },
        recipients: BoundedVec::try_from(recipients).unwrap(),
    }
}

pub const MESSAGE: &[u8] = b"Received: from client.example.org\r\n\
\tby mx.example.test (Postern) with ESMTP id X\r\n\
From: Sender <sender@example.org>\r\n\
To: user@example.test\r\n\
Subject: quarterly figures\r\n\
Message-ID: <m1@example.org>\r\n\
\r\n\
The body of the message.\r\n\
Second line.\r\n";

/// A result: (recipient index, outcome, status, diagnostic).
pub type Result_ = (u32, Outcome, &'static str, &'static str);

/// A temporary file that is removed when dropped.
pub struct TempFile {
    pub path: PathBuf,
    pub file: File,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a complete queue file with `content` and appends `results`.
pub fn queue_file(envelope: &Envelope, content: &[u8], results: &[Result_]) -> TempFile {
    let path = std::env::temp_dir().join(format!(
        "postern-bounce-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let mut w = QueueFileWriter::begin(file.try_clone().unwrap(), envelope).unwrap();
    w.write_content(content).unwrap();
    w.finish().unwrap();
    let mut appender = file.try_clone().unwrap();
    for (index, outcome, status, diagnostic) in results {
        let record = ResultRecord {
            recipient: *index,
            outcome: *outcome,
            status: status.parse().unwrap(),
            diagnostic: Diagnostic::new(diagnostic).unwrap(),
            time: Timestamp::from_micros(ATTEMPT),
            next_retry: (*outcome == Outcome::Deferred)
                .then_some(Timestamp::from_micros(ATTEMPT + 300_000_000)),
        };
        queue::append_result(&mut appender, &record).unwrap();
    }
    TempFile { path, file }
}

/// A minimal MIME reading of a report, enough to check what the tests expect.
pub struct Parsed {
    pub headers: Vec<(String, String)>,
    pub parts: Vec<Part>,
}

pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Parsed {
    pub fn header(&self, name: &str) -> Option<&str> {
        lookup(&self.headers, name)
    }
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        lookup(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    /// The blocks of a delivery-status body, each a list of unfolded fields.
    pub fn blocks(&self) -> Vec<Vec<(String, String)>> {
        self.text()
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .map(|b| unfold(b.as_bytes()))
            .collect()
    }
}

pub fn lookup<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Header fields, unfolded.
pub fn unfold(section: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8(section.to_vec()).unwrap();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            let last = fields.last_mut().expect("continuation after a field");
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':').expect("a header field");
            fields.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

fn split_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    let at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header section");
    (&bytes[..at + 2], &bytes[at + 4..])
}

pub fn parse(report: &[u8]) -> Parsed {
    for (i, b) in report.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && report[i - 1] == b'\r', "bare LF at {i}");
        }
    }
    for line in report.split(|b| *b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
    let (head, body) = split_head(report);
    let headers = unfold(head);
    let ct = lookup(&headers, "Content-Type").unwrap().to_owned();
    let boundary = ct
        .split("boundary=\"")
        .nth(1)
        .and_then(|b| b.split('"').next())
        .unwrap()
        .to_owned();
    let delimiter = format!("\r\n--{boundary}");
    let text = body;
    let mut pieces = Vec::new();
    let mut rest: &[u8] = text;
    // The preamble ends at the first delimiter (which may start the body without CRLF).
    let first = format!("--{boundary}\r\n");
    let start = rest
        .windows(first.len())
        .position(|w| w == first.as_bytes())
        .unwrap();
    rest = &rest[start + first.len()..];
    loop {
        let at = rest
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_bytes())
            .expect("a closing delimiter");
        pieces.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").unwrap();
    }
    let parts = pieces
        .into_iter()
        .map(|p| {
            let (h, b) = split_head(p);
            Part {
                headers: unfold(h),
                body: b.to_vec(),
            }
        })
        .collect();
    Parsed { headers, parts }
}

pub fn no_flags() -> MailFlags {
    MailFlags::default()
}
