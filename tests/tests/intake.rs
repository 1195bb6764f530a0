//! Whole-system tests of mail intake: a running instance (master, smtpd, cleanup) spoken to by
//! clients nobody on the project wrote — lettre, Python's smtplib, curl and swaks — and, where the
//! exact bytes are the point (pipelining, BDAT, bad input, SMTP smuggling), by a raw socket.
//!
//! After every `250 2.0.0 Ok: queued as ID` the test finds that queue file, checks that it is
//! complete (owner-execute bit) and that `protocol::queue::verify` passes, and compares its
//! envelope (sender, recipients with their DSN fields, client) and its content (`Received:` first,
//! then exactly the octets sent) with what the client sent. The messages carry their own `Date:`
//! and `Message-ID:`, so cleanup adds nothing to them.
//!
//! Each test has its own instance (they run in parallel threads, and an instance starts in tens
//! of milliseconds); tests of one setting that need several sessions share one instance.
//! They pass as root and as an unprivileged user. They need the programs built
//! (`cargo build --workspace --bins`) and `python3`, `curl` and `swaks` (scripts/setup.sh).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::message::Mailbox as LettreMailbox;
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use postern_tests::instance::{has_binary, read_queued, wait_until, Instance, QueuedMessage};
use protocol::smtp::BodyType;
use protocol::QueueId;

/// The EHLO name every client uses.
const HELO: &str = "client.example.org";
/// `myhostname` of an instance made by `postern init`.
const MYHOSTNAME: &str = "localhost.localdomain";
/// How long a client waits for a reply before the test fails (generous: the machine is shared).
const REPLY_WAIT: Duration = Duration::from_secs(30);
/// How long a refused message's file may take to disappear (cleanup unlinks it after `Abort`,
/// which has no answer).
const QUEUE_SETTLE: Duration = Duration::from_secs(10);

/// An instance with smtpd and cleanup enabled and qmgr left out, so that every accepted message
/// stays in `incoming/` where the tests read it; fails with the build command if smtpd or cleanup
/// is missing. Every address of `example.test` is a known recipient (a catch-all in `vmailbox`):
/// these tests are about intake, not about which users exist.
fn intake(name: &str, settings: &[(&str, &str)]) -> Instance {
    for program in ["smtpd", "cleanup"] {
        assert!(
            has_binary(program),
            "the {program} program is not built: cargo build --workspace --bins"
        );
    }
    // Errors are answered at once: the error-limit tests must not wait for the soft limit's sleep.
    let mut all = vec![("smtpd_error_sleep_time", "0s")];
    all.extend_from_slice(settings);
    let inst = Instance::init(name, &all);
    inst.leave_out(&["qmgr"]);
    inst.append("vmailbox", "@example.test  example.test/catchall/\n");
    inst.started()
}

// ---------------------------------------------------------------------------------------------
// A raw SMTP client: the bytes on the wire are exactly the test's.

#[derive(Debug, Clone)]
struct Reply {
    code: u16,
    /// The reply's lines without CRLF, codes included.
    lines: Vec<String>,
}

impl Reply {
    fn first(&self) -> &str {
        &self.lines[0]
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }

    fn starts(&self, prefix: &str) -> bool {
        self.first().starts_with(prefix)
    }
}

struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

/// How a session ended when the test read past its last reply.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    Reset,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to smtpd");
        stream.set_read_timeout(Some(REPLY_WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Connected, greeted, and past EHLO (which must offer `PIPELINING`).
    fn ehlo(port: u16) -> Client {
        let mut c = Client::connect(port);
        let greeting = c.reply();
        assert!(greeting.starts("220 "), "greeting: {}", greeting.text());
        let ehlo = c.cmd(&format!("EHLO {HELO}"));
        assert_eq!(ehlo.code, 250, "EHLO: {}", ehlo.text());
        c
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .expect("write to smtpd");
    }

    fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n"));
        self.reply()
    }

    fn reply(&mut self) -> Reply {
        match self.try_reply() {
            Ok(r) => r,
            Err(e) => panic!("no reply from smtpd: {e}"),
        }
    }

    fn try_reply(&mut self) -> Result<Reply, String> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            match self.reader.read_until(b'\n', &mut raw) {
                Ok(0) => return Err(format!("connection closed after {lines:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("{e} after {lines:?}")),
            }
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let last = line.as_bytes().get(3) != Some(&b'-');
            let Some(code) = code else {
                return Err(format!("not a reply line: {line:?}"));
            };
            lines.push(line);
            if last {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Every reply until the server ends the session, and how it ended.
    fn rest(&mut self) -> (Vec<Reply>, End) {
        let mut replies = Vec::new();
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return (replies, End::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return (replies, End::Reset),
                Err(e) => panic!("reading after {replies:?}: {e}"),
            }
            match self.try_reply() {
                Ok(r) => replies.push(r),
                Err(e) => panic!("a broken reply after {replies:?}: {e}"),
            }
        }
    }

    /// Reads what remains; the session must end without any further reply.
    fn expect_end(&mut self) {
        let (replies, _) = self.rest();
        assert!(replies.is_empty(), "replies after the end: {replies:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// What a queue file must hold.

struct Rcpt<'a> {
    address: &'a str,
    /// `NOTIFY=` as it reads back (`SUCCESS,FAILURE`).
    notify: Option<&'a str>,
    /// `ORCPT=` in its wire form (`rfc822;orig@example.test`).
    orcpt: Option<&'a str>,
}

fn rcpt(address: &str) -> Rcpt<'_> {
    Rcpt {
        address,
        notify: None,
        orcpt: None,
    }
}

struct Expect<'a> {
    helo: &'a str,
    client: &'a str,
    /// The reverse path without brackets; empty for `<>`.
    sender: &'a str,
    rcpts: Vec<Rcpt<'a>>,
    /// The message octets as stored: CRLF line ends, dot-stuffing removed, no Received:.
    body: &'a [u8],
}

fn expect<'a>(sender: &'a str, rcpts: &[&'a str], body: &'a [u8]) -> Expect<'a> {
    Expect {
        helo: HELO,
        client: "127.0.0.1",
        sender,
        rcpts: rcpts.iter().map(|a| rcpt(a)).collect(),
        body,
    }
}

/// The queue id of a `250 2.0.0 Ok: queued as ID` reply text.
fn queue_id(reply: &str) -> String {
    let id: String = reply
        .split_once("queued as ")
        .unwrap_or_else(|| panic!("not a queued reply: {reply:?}"))
        .1
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert!(
        QueueId::parse(&id).is_ok(),
        "{id:?} is not a queue id (in {reply:?})"
    );
    id
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() > 600 {
        let mut cut = 600;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{:?}... ({} octets)", &text[..cut], bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// Splits stored content into its first header field (with its CRLF) and the rest.
fn split_first_field(content: &[u8]) -> (&[u8], &[u8]) {
    let mut at = 0;
    while let Some(i) = content[at..].windows(2).position(|w| w == b"\r\n") {
        let end = at + i + 2;
        if !matches!(content.get(end), Some(b' ' | b'\t')) {
            return content.split_at(end);
        }
        at = end;
    }
    (content, &[])
}

/// Finds the queue file named by a `queued as` reply and checks it against `want`.
fn check_queued(inst: &Instance, reply: &str, want: &Expect) -> QueuedMessage {
    let id = queue_id(reply);
    let path = inst.find_queue_file(&id).unwrap_or_else(|| {
        panic!(
            "{reply:?}: no queue file {id} in {:?}\n--- log\n{}",
            inst.queue_files(),
            inst.log()
        )
    });
    let queued = read_queued(&path).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    let env = queued.file.envelope();
    let sender = if want.sender.is_empty() {
        "<>".to_owned()
    } else {
        format!("<{}>", want.sender)
    };
    assert_eq!(env.sender.to_string(), sender, "{id}: sender");
    let got: Vec<String> = env.recipients.iter().map(|r| r.path.to_string()).collect();
    let wanted: Vec<String> = want
        .rcpts
        .iter()
        .map(|r| format!("<{}>", r.address))
        .collect();
    assert_eq!(got, wanted, "{id}: recipients");
    for (r, w) in env.recipients.iter().zip(&want.rcpts) {
        assert_eq!(
            r.notify.map(|n| n.to_string()).as_deref(),
            w.notify,
            "{id}: NOTIFY of {}",
            w.address
        );
        assert_eq!(
            r.orcpt.as_ref().map(|o| o.to_string()).as_deref(),
            w.orcpt,
            "{id}: ORCPT of {}",
            w.address
        );
    }
    assert_eq!(
        env.client.address.map(|a| a.to_string()).as_deref(),
        Some(want.client),
        "{id}: client address"
    );
    assert_eq!(
        env.client.helo.as_ref().map(|h| h.to_string()).as_deref(),
        Some(want.helo),
        "{id}: client HELO"
    );
    let (received, rest) = split_first_field(&queued.content);
    let received = String::from_utf8_lossy(received);
    assert!(
        received.starts_with(&format!("Received: from {} (", want.helo))
            && received.contains(&format!("by {MYHOSTNAME} (Postern)")),
        "{id}: the content does not start with Postern's Received: header:\n{}",
        excerpt(&queued.content)
    );
    // As Postfix: the `for` clause only when the message has exactly one recipient.
    match want.rcpts.as_slice() {
        [only] => assert!(
            received.contains(&format!("for <{}>;", only.address)),
            "{id}: Received: names its one recipient: {received:?}"
        ),
        _ => assert!(
            !received.contains("for <"),
            "{id}: Received: names no recipient of several: {received:?}"
        ),
    }
    assert!(
        rest == want.body,
        "{id}: stored content after Received: differs from what was sent\n--- stored\n{}\n--- sent\n{}",
        excerpt(rest),
        excerpt(want.body)
    );
    queued
}

/// Waits until the mail queues hold exactly the files of `ids` (refused messages' files are
/// unlinked by cleanup after smtpd's `Abort`, which has no answer to wait for).
fn assert_queue_holds(inst: &Instance, ids: &[String]) {
    let mut want: Vec<String> = ids.to_vec();
    want.sort();
    let names = || -> Vec<String> {
        let mut names: Vec<String> = inst
            .queue_files()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    };
    let settled = wait_until(QUEUE_SETTLE, || names() == want);
    assert!(
        settled,
        "the queue holds {:?}, expected {want:?}\n--- log\n{}",
        names(),
        inst.log()
    );
}

/// A message with its own Date: and Message-ID:, CRLF line ends.
fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    let mut m = String::new();
    let tag: String = subject
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    write!(
        m,
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{tag}@client.example.org>\r\n\r\n"
    )
    .unwrap();
    for line in body.lines() {
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// RFC 5321 dot-stuffing of a CRLF text, with the end-of-data line.
fn dot_stuffed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Outside clients.

/// One `smtp_session.py` step's result: step, code, reply text.
#[derive(Debug)]
struct Step {
    step: String,
    code: u16,
    text: String,
}

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/smtp_session.py")
}

/// Runs a smtplib session (see tests/python/smtp_session.py for the step language).
fn smtplib(port: u16, source: Option<&str>, steps: &str) -> Vec<Step> {
    let mut cmd = Command::new("python3");
    cmd.arg(python_script())
        .arg(port.to_string())
        .arg(HELO)
        .args(source)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("run python3 (scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(steps.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "smtp_session.py failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let step = parts.next().unwrap_or("").to_owned();
            let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let text = parts.next().unwrap_or("").to_owned();
            Step { step, code, text }
        })
        .collect()
}

/// The steps of a smtplib run, each asserted to have the given code; returns the texts.
fn expect_steps(steps: &[Step], codes: &[(&str, u16)]) -> Vec<String> {
    let shown: Vec<String> = steps
        .iter()
        .map(|s| format!("{} {} {}", s.step, s.code, s.text))
        .collect();
    assert_eq!(
        steps.len(),
        codes.len(),
        "smtplib steps:\n{}",
        shown.join("\n")
    );
    for (s, (step, code)) in steps.iter().zip(codes) {
        assert!(
            s.step == *step && s.code == *code,
            "expected {step} {code}; smtplib steps:\n{}",
            shown.join("\n")
        );
    }
    steps
        .iter()
        .map(|s| format!("{} {}", s.code, s.text))
        .collect()
}

fn write_file(inst: &Instance, name: &str, bytes: &[u8]) -> PathBuf {
    let path = inst.dir().join(name);
    fs::write(&path, bytes).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Simple mail, one test per client.

#[test]
fn lettre_sends_a_message() {
    let inst = intake("lettre", &[]);
    let email = Message::builder()
        .from(
            "Sender <sender@example.org>"
                .parse::<LettreMailbox>()
                .unwrap(),
        )
        .to("User <user@example.test>".parse::<LettreMailbox>().unwrap())
        .subject("from lettre")
        .message_id(Some("<lettre-1@client.example.org>".to_owned()))
        .header(ContentType::TEXT_PLAIN)
        .body(String::from(
            "Hello from lettre.\n.a line that starts with a dot\n",
        ))
        .unwrap();
    let transport = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(inst.port())
        .hello_name(ClientId::Domain(HELO.to_owned()))
        .timeout(Some(REPLY_WAIT))
        .build();
    let response = transport.send(&email).expect("lettre send");
    assert_eq!(response.code().to_string(), "250");
    let reply = response.message().collect::<Vec<_>>().join(" ");
    // lettre always ends the data with CRLF . CRLF, after a message that already ends with a
    // line end: the stored text has one empty line more than `formatted()`.
    let mut sent = email.formatted();
    sent.extend_from_slice(b"\r\n");
    let queued = check_queued(
        &inst,
        &reply,
        &expect("sender@example.org", &["user@example.test"], &sent),
    );
    assert_queue_holds(&inst, &[queue_id(&reply)]);
    assert!(queued.mode & 0o100 != 0);
}

#[test]
fn smtplib_sends_several_messages_on_one_connection() {
    let inst = intake("smtplib", &[]);
    let bodies: Vec<Vec<u8>> = (1..=3)
        .map(|i| {
            message(
                "sender@example.org",
                "user@example.test",
                &format!("smtplib {i}"),
                &format!("Message {i} of one session.\n.dot line {i}\n..two dots\n"),
            )
        })
        .collect();
    let mut steps = String::from("ehlo\n");
    for (i, body) in bodies.iter().enumerate() {
        let path = write_file(&inst, &format!("m{i}.eml"), body);
        writeln!(
            steps,
            "mail sender@example.org\nrcpt user{i}@example.test\ndata {}",
            path.display()
        )
        .unwrap();
    }
    steps.push_str("quit\n");
    let result = smtplib(inst.port(), None, &steps);
    let mut codes = vec![("connect", 220), ("ehlo", 250)];
    for _ in &bodies {
        codes.extend([("mail", 250), ("rcpt", 250), ("data", 250)]);
    }
    codes.push(("quit", 221));
    let texts = expect_steps(&result, &codes);
    let mut ids = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let reply = &texts[4 + 3 * i];
        let to = format!("user{i}@example.test");
        check_queued(&inst, reply, &expect("sender@example.org", &[&to], body));
        ids.push(queue_id(reply));
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct queue ids: {ids:?}");
    assert_queue_holds(&inst, &ids);
}

#[test]
fn curl_sends_a_message() {
    let inst = intake("curl", &[]);
    let body = message(
        "sender@example.org",
        "user@example.test",
        "from curl",
        "Hello from curl.\n.leading dot\n",
    );
    let path = write_file(&inst, "curl.eml", &body);
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "60", "--url"])
        .arg(format!("smtp://127.0.0.1:{}/{HELO}", inst.port()))
        .args(["--mail-from", "sender@example.org"])
        .args(["--mail-rcpt", "user@example.test"])
        .arg("-T")
        .arg(&path)
        .output()
        .expect("run curl (scripts/setup.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed:\n{stderr}");
    let reply = stderr
        .lines()
        .find(|l| l.contains("queued as"))
        .unwrap_or_else(|| panic!("no queued reply in curl's transcript:\n{stderr}"));
    check_queued(
        &inst,
        reply,
        &expect("sender@example.org", &["user@example.test"], &body),
    );
    assert_queue_holds(&inst, &[queue_id(reply)]);
}

#[test]
fn swaks_pipelines_a_transaction_with_several_recipients() {
    let inst = intake("swaks", &[]);
    // swaks sends the file's lines with CRLF ends and adds CRLF . CRLF after the last one, so
    // the file has no line end of its own after its last line.
    let lf_body = "From: <sender@example.org>\nTo: <u1@example.test>\nSubject: from swaks\n\
                   Date: Mon, 01 Jan 2024 00:00:00 +0000\nMessage-ID: <swaks-1@client.example.org>\n\n\
                   Hello from swaks.\n.a dot line\nlast line";
    let path = write_file(&inst, "swaks.eml", lf_body.as_bytes());
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &inst.port().to_string()])
        .args(["--from", "sender@example.org"])
        .args(["--to", "u1@example.test,u2@example.test,u3@example.test"])
        .args(["--helo", HELO, "--pipeline", "--timeout", "60"])
        .arg("--data")
        .arg(format!("@{}", path.display()))
        .output()
        .expect("run swaks (scripts/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // swaks shows `-> ` for what it sent and `<- ` for replies; pipelined commands go in one
    // group, their replies come back together.
    assert!(
        stdout.contains("PIPELINING"),
        "EHLO offers PIPELINING:\n{stdout}"
    );
    let reply = stdout
        .lines()
        .find(|l| l.contains("queued as"))
        .unwrap_or_else(|| panic!("no queued reply in swaks's transcript:\n{stdout}"));
    let body = format!("{}\r\n", lf_body.replace('\n', "\r\n"));
    check_queued(
        &inst,
        reply,
        &expect(
            "sender@example.org",
            &["u1@example.test", "u2@example.test", "u3@example.test"],
            body.as_bytes(),
        ),
    );
    assert_queue_holds(&inst, &[queue_id(reply)]);
}

// ---------------------------------------------------------------------------------------------
// Pipelining, BDAT, 8-bit, SMTPUTF8, DSN: the exact bytes.

#[test]
fn pipelined_commands_and_messages_get_their_replies_in_order() {
    let inst = intake("pipelining", &[]);
    let mut c = Client::ehlo(inst.port());
    c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<u1@example.test>\r\n\
         RCPT TO:<u2@example.test>\r\nDATA\r\n",
    );
    for want in ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354 "] {
        let r = c.reply();
        assert!(r.starts(want), "expected {want}, got {}", r.text());
    }
    let first = message("a@example.org", "u1@example.test", "pipelined 1", "one\n");
    let second = message("b@example.org", "u3@example.test", "pipelined 2", "two\n");
    // The end of data may be followed by the next transaction's commands (RFC 2920).
    let mut burst = dot_stuffed(&first);
    burst.extend_from_slice(b"MAIL FROM:<b@example.org>\r\nRCPT TO:<u3@example.test>\r\nDATA\r\n");
    c.send(&burst);
    let queued1 = c.reply();
    assert!(
        queued1.starts("250 2.0.0 Ok: queued as "),
        "{}",
        queued1.text()
    );
    for want in ["250 2.1.0", "250 2.1.5", "354 "] {
        let r = c.reply();
        assert!(r.starts(want), "expected {want}, got {}", r.text());
    }
    let mut burst = dot_stuffed(&second);
    burst.extend_from_slice(b"QUIT\r\n");
    c.send(&burst);
    let queued2 = c.reply();
    assert!(
        queued2.starts("250 2.0.0 Ok: queued as "),
        "{}",
        queued2.text()
    );
    assert!(c.reply().starts("221 2.0.0"));
    c.expect_end();
    check_queued(
        &inst,
        queued1.first(),
        &expect(
            "a@example.org",
            &["u1@example.test", "u2@example.test"],
            &first,
        ),
    );
    check_queued(
        &inst,
        queued2.first(),
        &expect("b@example.org", &["u3@example.test"], &second),
    );
    assert_queue_holds(
        &inst,
        &[queue_id(queued1.first()), queue_id(queued2.first())],
    );
}

#[test]
fn bdat_chunks_are_queued_without_unstuffing() {
    let inst = intake("bdat", &[]);
    let mut c = Client::connect(inst.port());
    assert!(c.reply().starts("220 "));
    let ehlo = c.cmd(&format!("EHLO {HELO}"));
    assert!(
        ehlo.lines.iter().any(|l| l.ends_with("CHUNKING")),
        "EHLO offers CHUNKING: {}",
        ehlo.text()
    );
    let whole = message(
        "a@example.org",
        "user@example.test",
        "bdat",
        "First chunk's body.\n.a dot line stays as sent in BDAT\n..two dots too\nthe end\n",
    );
    let (one, two) = whole.split_at(whole.len() / 2);
    // MAIL, RCPT and the first BDAT with its chunk in one write: BDAT is pipelinable.
    let mut burst = format!(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<user@example.test>\r\nBDAT {}\r\n",
        one.len()
    )
    .into_bytes();
    burst.extend_from_slice(one);
    c.send(&burst);
    assert!(c.reply().starts("250 2.1.0"));
    assert!(c.reply().starts("250 2.1.5"));
    let r = c.reply();
    assert_eq!(
        r.first(),
        format!("250 2.0.0 Ok: {} bytes", one.len()),
        "first chunk"
    );
    let mut last = format!("BDAT {} LAST\r\n", two.len()).into_bytes();
    last.extend_from_slice(two);
    c.send(&last);
    let queued = c.reply();
    assert!(
        queued.starts("250 2.0.0 Ok: queued as "),
        "{}",
        queued.text()
    );
    check_queued(
        &inst,
        queued.first(),
        &expect("a@example.org", &["user@example.test"], &whole),
    );
    assert!(c.cmd("QUIT").starts("221"));
    assert_queue_holds(&inst, &[queue_id(queued.first())]);
}

#[test]
fn an_eight_bit_body_with_8bitmime_is_stored_octet_for_octet() {
    let inst = intake("8bit", &[]);
    let mut body = message("a@example.org", "user@example.test", "8bit", "");
    body.extend_from_slice("Grüße, ça va? 日本語\r\n".as_bytes());
    body.extend_from_slice(b"latin-1 \xe9t\xe9 \xff\xfe raw octets\r\n");
    let path = write_file(&inst, "8bit.eml", &body);
    let steps = format!(
        "ehlo\nmail a@example.org BODY=8BITMIME\nrcpt user@example.test\ndata {}\nquit\n",
        path.display()
    );
    let texts = expect_steps(
        &smtplib(inst.port(), None, &steps),
        &[
            ("connect", 220),
            ("ehlo", 250),
            ("mail", 250),
            ("rcpt", 250),
            ("data", 250),
            ("quit", 221),
        ],
    );
    assert!(texts[1].contains("8BITMIME"), "EHLO: {}", texts[1]);
    let queued = check_queued(
        &inst,
        &texts[4],
        &expect("a@example.org", &["user@example.test"], &body),
    );
    assert_eq!(
        queued.file.envelope().flags.body,
        Some(BodyType::EightBitMime)
    );
}

#[test]
fn an_smtputf8_address_is_queued_with_its_flag() {
    let inst = intake("smtputf8", &[]);
    let sender = "jöran@exämple.org";
    let recipient = "üser@example.test";
    let body = message("a@example.org", "user@example.test", "utf8", "Hallo.\n");
    let path = write_file(&inst, "utf8.eml", &body);
    let steps = format!(
        "ehlo\nmail {sender} SMTPUTF8\nrcpt {recipient}\ndata {}\nquit\n",
        path.display()
    );
    let texts = expect_steps(
        &smtplib(inst.port(), None, &steps),
        &[
            ("connect", 220),
            ("ehlo", 250),
            ("mail", 250),
            ("rcpt", 250),
            ("data", 250),
            ("quit", 221),
        ],
    );
    assert!(texts[1].contains("SMTPUTF8"), "EHLO: {}", texts[1]);
    let queued = check_queued(&inst, &texts[4], &expect(sender, &[recipient], &body));
    assert!(queued.file.envelope().flags.smtputf8, "the SMTPUTF8 flag");
    let (received, _) = split_first_field(&queued.content);
    assert!(
        String::from_utf8_lossy(received).contains("with UTF8SMTP"),
        "Received: names the protocol as Postfix does: {}",
        String::from_utf8_lossy(received)
    );
    // The same address without SMTPUTF8 on MAIL is refused (smtplib cannot send it: raw bytes).
    let mut c = Client::ehlo(inst.port());
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts("250"));
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{recipient}>")).first(),
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
    );
    assert!(c.cmd("QUIT").starts("221"));
    assert_queue_holds(&inst, &[queue_id(&texts[4])]);
}

#[test]
fn dsn_parameters_reach_the_queue_file() {
    let inst = intake("dsn", &[]);
    let body = message("a@example.org", "user@example.test", "dsn", "DSN test.\n");
    let path = write_file(&inst, "dsn.eml", &body);
    let steps = format!(
        "ehlo\nmail a@example.org RET=HDRS ENVID=QQ314159\n\
         rcpt u1@example.test NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bone@example.test\n\
         rcpt u2@example.test NOTIFY=NEVER\n\
         rcpt u3@example.test\n\
         data {}\nquit\n",
        path.display()
    );
    let texts = expect_steps(
        &smtplib(inst.port(), None, &steps),
        &[
            ("connect", 220),
            ("ehlo", 250),
            ("mail", 250),
            ("rcpt", 250),
            ("rcpt", 250),
            ("rcpt", 250),
            ("data", 250),
            ("quit", 221),
        ],
    );
    assert!(texts[1].contains("DSN"), "EHLO: {}", texts[1]);
    let want = Expect {
        rcpts: vec![
            Rcpt {
                address: "u1@example.test",
                notify: Some("SUCCESS,FAILURE"),
                orcpt: Some("rfc822;orig+2Bone@example.test"),
            },
            Rcpt {
                address: "u2@example.test",
                notify: Some("NEVER"),
                orcpt: None,
            },
            rcpt("u3@example.test"),
        ],
        ..expect("a@example.org", &[], &body)
    };
    let queued = check_queued(&inst, &texts[6], &want);
    let flags = &queued.file.envelope().flags;
    assert_eq!(flags.ret.map(|r| r.as_str()), Some("HDRS"));
    assert_eq!(flags.envid.as_ref().map(|e| e.as_str()), Some("QQ314159"));
}

// ---------------------------------------------------------------------------------------------
// Size limits and bad input.

#[test]
fn a_20_mb_message_is_refused_with_and_without_a_size_declaration() {
    let inst = intake("size", &[]);
    let mut big = message("a@example.org", "user@example.test", "big", "");
    let line = format!("{}\r\n", "x".repeat(998));
    while big.len() < 20 << 20 {
        big.extend_from_slice(line.as_bytes());
    }
    let big_path = write_file(&inst, "big.eml", &big);
    let small = message("a@example.org", "user@example.test", "small", "fits\n");
    let small_path = write_file(&inst, "small.eml", &small);
    let steps = format!(
        "ehlo\nmail a@example.org SIZE={}\n\
         mail a@example.org\nrcpt user@example.test\ndata {}\n\
         mail a@example.org\nrcpt user@example.test\ndata {}\nquit\n",
        big.len(),
        big_path.display(),
        small_path.display()
    );
    let texts = expect_steps(
        &smtplib(inst.port(), None, &steps),
        &[
            ("connect", 220),
            ("ehlo", 250),
            ("mail", 552),
            ("mail", 250),
            ("rcpt", 250),
            ("data", 552),
            ("mail", 250),
            ("rcpt", 250),
            ("data", 250),
            ("quit", 221),
        ],
    );
    assert!(texts[1].contains("SIZE 10240000"), "EHLO: {}", texts[1]);
    assert_eq!(texts[2], "552 5.3.4 Message size exceeds fixed limit");
    assert_eq!(texts[5], "552 5.3.4 Error: message file too big");
    check_queued(
        &inst,
        &texts[8],
        &expect("a@example.org", &["user@example.test"], &small),
    );
    assert_queue_holds(&inst, &[queue_id(&texts[8])]);
}

#[test]
fn an_over_long_command_line_is_refused_and_the_session_goes_on() {
    let inst = intake("longline", &[]);
    let mut c = Client::ehlo(inst.port());
    let r = c.cmd(&format!("MAIL FROM:<{}@example.org>", "x".repeat(100_000)));
    assert_eq!(r.first(), "500 5.5.2 Error: line too long");
    // Exactly one reply for the whole line: the next command gets its own.
    let r = c.cmd("NOOP");
    assert!(r.starts("250 2.0.0"), "{}", r.text());
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts("250 2.1.0"));
    assert!(c.cmd("QUIT").starts("221"));
    assert_queue_holds(&inst, &[]);
}

#[test]
fn a_huge_data_text_line_is_accepted_whole() {
    let inst = intake("hugeline", &[]);
    let mut c = Client::ehlo(inst.port());
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts("250"));
    assert!(c.cmd("RCPT TO:<user@example.test>").starts("250"));
    assert!(c.cmd("DATA").starts("354"));
    let mut body = message("a@example.org", "user@example.test", "huge line", "");
    let huge: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    body.extend_from_slice(&huge);
    body.extend_from_slice(b"\r\nafter the long line\r\n");
    c.send(dot_stuffed(&body));
    let r = c.reply();
    assert!(r.starts("250 2.0.0 Ok: queued as "), "{}", r.text());
    check_queued(
        &inst,
        r.first(),
        &expect("a@example.org", &["user@example.test"], &body),
    );
}

#[test]
fn unknown_commands_up_to_the_hard_error_limit_end_the_session() {
    let inst = intake("errors", &[("smtpd_hard_error_limit", "5")]);
    let mut c = Client::ehlo(inst.port());
    for i in 1..=5 {
        let r = c.cmd(&format!("XYZZY{i}"));
        assert_eq!(r.first(), "502 5.5.2 Error: command not recognized", "{i}");
    }
    // As Postfix: once the count reaches the limit, 421 without waiting for another command.
    let r = c.reply();
    assert_eq!(
        r.first(),
        format!("421 4.7.0 {MYHOSTNAME} Error: too many errors")
    );
    c.expect_end();
}

#[test]
fn commands_out_of_sequence_get_503() {
    let inst = intake("sequence", &[]);
    let mut c = Client::ehlo(inst.port());
    assert_eq!(
        c.cmd("RCPT TO:<user@example.test>").first(),
        "503 5.5.1 Error: need MAIL command"
    );
    assert_eq!(c.cmd("DATA").first(), "503 5.5.1 Error: need RCPT command");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts("250 2.1.0"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>").first(),
        "503 5.5.1 Error: nested MAIL command"
    );
    // Inside a transaction without recipients Postfix words it differently.
    assert_eq!(
        c.cmd("DATA").first(),
        "554 5.5.1 Error: no valid recipients"
    );
    assert!(c.cmd("RCPT TO:<user@example.test>").starts("250 2.1.5"));
    assert!(c.cmd("QUIT").starts("221"));
    assert_queue_holds(&inst, &[]);
}

#[test]
fn smtpd_timeout_ends_an_idle_session_and_a_stalled_data() {
    let inst = intake("timeout", &[("smtpd_timeout", "2s")]);
    let timeout_reply = format!("421 4.4.2 {MYHOSTNAME} Error: timeout exceeded");
    let mut idle = Client::ehlo(inst.port());
    let started = Instant::now();
    let r = idle.reply();
    assert_eq!(r.first(), timeout_reply);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the timeout came after {:?}",
        started.elapsed()
    );
    idle.expect_end();

    let mut stalled = Client::ehlo(inst.port());
    assert!(stalled.cmd("MAIL FROM:<a@example.org>").starts("250"));
    assert!(stalled.cmd("RCPT TO:<user@example.test>").starts("250"));
    assert!(stalled.cmd("DATA").starts("354"));
    stalled.send(b"Subject: never finished\r\n\r\nhalf a message\r\n");
    assert_eq!(stalled.reply().first(), timeout_reply);
    stalled.expect_end();
    assert_queue_holds(&inst, &[]);
}

#[test]
fn smtpd_recipient_limit_caps_the_recipients_of_a_message() {
    let inst = intake("rcptlimit", &[("smtpd_recipient_limit", "3")]);
    let mut c = Client::ehlo(inst.port());
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts("250"));
    for i in 1..=3 {
        let r = c.cmd(&format!("RCPT TO:<u{i}@example.test>"));
        assert!(r.starts("250 2.1.5"), "{i}: {}", r.text());
    }
    for i in 4..=5 {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<u{i}@example.test>")).first(),
            "452 4.5.3 Error: too many recipients"
        );
    }
    assert!(c.cmd("DATA").starts("354"));
    let body = message("a@example.org", "u1@example.test", "limit", "three only\n");
    c.send(dot_stuffed(&body));
    let r = c.reply();
    assert!(r.starts("250 2.0.0 Ok: queued as "), "{}", r.text());
    check_queued(
        &inst,
        r.first(),
        &expect(
            "a@example.org",
            &["u1@example.test", "u2@example.test", "u3@example.test"],
            &body,
        ),
    );
}

/// No reply in `replies` says a command after the violation was accepted.
fn assert_disconnected_without(replies: &[Reply], refused: &str) {
    assert!(
        !replies.iter().any(|r| r.code == 250 || r.code == 354),
        "{refused}: a command after the violation was accepted: {replies:?}"
    );
    if let Some(last) = replies.last() {
        assert!(last.code >= 500, "{refused}: last reply {}", last.text());
    }
}

#[test]
fn early_talkers_and_unauthorized_pipelining_are_disconnected() {
    let inst = intake("unauthpipe", &[]);

    // Before the greeting.
    let mut c = Client::connect(inst.port());
    c.send(format!("EHLO {HELO}\r\nMAIL FROM:<a@example.org>\r\n"));
    let (replies, _) = c.rest();
    let after_greeting: Vec<Reply> = replies
        .iter()
        .filter(|r| !r.starts("220"))
        .cloned()
        .collect();
    assert_disconnected_without(&after_greeting, "talking before the greeting");

    // After HELO, where PIPELINING was never offered.
    let mut c = Client::connect(inst.port());
    assert!(c.reply().starts("220"));
    assert!(c.cmd(&format!("HELO {HELO}")).starts("250"));
    c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n");
    let (replies, _) = c.rest();
    assert!(
        !replies.iter().any(|r| r.code == 354),
        "DATA accepted after pipelining without EHLO: {replies:?}"
    );
    assert!(
        replies.last().is_some_and(|r| r.code >= 500),
        "pipelining without EHLO: {replies:?}"
    );

    // Message text sent with DATA, before its 354.
    let mut c = Client::ehlo(inst.port());
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts("250"));
    assert!(c.cmd("RCPT TO:<user@example.test>").starts("250"));
    c.send("DATA\r\nSubject: too early\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let (replies, _) = c.rest();
    assert!(
        !replies.iter().any(|r| r.starts("250 2.0.0 Ok: queued")),
        "content sent before 354 was queued: {replies:?}"
    );
    assert!(
        replies.last().is_some_and(|r| r.code >= 500),
        "content before 354: {replies:?}"
    );
    assert_queue_holds(&inst, &[]);
    assert!(
        inst.wait_log("improper command pipelining", REPLY_WAIT),
        "the violation is logged as Postfix logs it:\n{}",
        inst.log()
    );
}

// ---------------------------------------------------------------------------------------------
// SMTP smuggling: a bare CR or LF is never part of an end of data.

/// The false ends of data of the smuggling papers; each is followed by a second transaction.
const SMUGGLING: [(&str, &[u8]); 6] = [
    ("LF.LF", b"\n.\n"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CR.CR", b"\r.\r"),
    ("CRLF.CR", b"\r\n.\r"),
    ("CRLF.LF", b"\r\n.\n"),
    ("LF.CR", b"\n.\r"),
];

/// Sends a message with a smuggled second transaction after `false_end`, then the real end of
/// data and QUIT in the same write; returns the replies that followed `354`.
fn smuggle(port: u16, false_end: &[u8]) -> (Vec<Reply>, Vec<u8>) {
    let mut c = Client::ehlo(port);
    c.send("MAIL FROM:<honest@example.org>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n");
    assert!(c.reply().starts("250"));
    assert!(c.reply().starts("250"));
    assert!(c.reply().starts("354"));
    let mut data = message("honest@example.org", "user@example.test", "first", "");
    data.extend_from_slice(b"honest body");
    data.extend_from_slice(false_end);
    data.extend_from_slice(
        b"MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n\
          From: <ceo@example.test>\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\nQUIT\r\n",
    );
    c.send(&data);
    (c.rest().0, data)
}

fn smuggling_in_mode(mode: &str) {
    let inst = intake(
        &format!("smuggle-{mode}"),
        &[("smtpd_forbid_bare_newline", mode)],
    );
    let mut queued_ids = Vec::new();
    for (name, false_end) in SMUGGLING {
        let (replies, _) = smuggle(inst.port(), false_end);
        let what = format!("{mode} {name}: replies {replies:?}");
        // A false end of data shows as replies to the smuggled MAIL/RCPT/DATA.
        assert!(
            !replies.iter().any(|r| r.code == 354 || r.starts("250 2.1")),
            "{what}: the smuggled commands were read as commands"
        );
        let queued: Vec<&Reply> = replies
            .iter()
            .filter(|r| r.starts("250 2.0.0 Ok: queued as"))
            .collect();
        assert!(queued.len() <= 1, "{what}: more than one message queued");
        let has_bare_lf = false_end
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || false_end[i - 1] != b'\r'));
        let rejected = mode == "reject" && has_bare_lf;
        if rejected {
            assert!(
                queued.is_empty()
                    && replies
                        .first()
                        .is_some_and(|r| r.code >= 500 && r.first().contains("bare <LF> received")),
                "{what}: reject mode refuses a bare LF"
            );
            continue;
        }
        assert_eq!(queued.len(), 1, "{what}: the one real message is queued");
        assert!(
            replies.get(1).is_some_and(|r| r.starts("221")),
            "{what}: QUIT after the message"
        );
        let id = queue_id(queued[0].first());
        let path = inst.find_queue_file(&id).expect("the queued file");
        let q = read_queued(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let env = q.file.envelope();
        assert_eq!(env.sender.to_string(), "<honest@example.org>", "{what}");
        let rcpts: Vec<String> = env.recipients.iter().map(|r| r.path.to_string()).collect();
        assert_eq!(rcpts, ["<user@example.test>"], "{what}");
        let content = String::from_utf8_lossy(&q.content);
        assert!(
            content.contains("smuggler@evil.example") && content.contains("smuggled body"),
            "{what}: the smuggled text is part of the one message:\n{content:?}"
        );
        if mode == "normalize" {
            let bare_lf = q
                .content
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || q.content[i - 1] != b'\r'));
            assert!(
                !bare_lf,
                "{what}: normalize stores no bare LF:\n{content:?}"
            );
        }
        queued_ids.push(id);
    }
    assert_queue_holds(&inst, &queued_ids);
    let files = inst.queue_files();
    for path in files {
        let q = read_queued(&path).unwrap();
        assert_ne!(
            q.file.envelope().sender.to_string(),
            "<smuggler@evil.example>",
            "{mode}: a smuggled message was queued"
        );
    }
}

#[test]
fn smuggling_is_refused_with_bare_newline_normalize() {
    smuggling_in_mode("normalize");
}

#[test]
fn smuggling_is_refused_with_bare_newline_reject() {
    smuggling_in_mode("reject");
}

#[test]
fn smuggling_is_refused_with_bare_newline_no() {
    smuggling_in_mode("no");
}

// ---------------------------------------------------------------------------------------------
// Relay control and address syntax.

#[test]
fn relaying_is_refused_outside_mynetworks_and_local_mail_accepted() {
    let inst = intake("relay", &[("mynetworks", "127.0.0.1/32")]);
    let body = message("a@example.org", "user@example.test", "relay", "hi\n");
    let path = write_file(&inst, "relay.eml", &body);
    let steps = format!(
        "ehlo\nmail a@example.org\nrcpt other@elsewhere.example\nrcpt user@example.test\n\
         data {}\nquit\n",
        path.display()
    );
    let texts = expect_steps(
        &smtplib(inst.port(), Some("127.0.0.2"), &steps),
        &[
            ("connect", 220),
            ("ehlo", 250),
            ("mail", 250),
            ("rcpt", 554),
            ("rcpt", 250),
            ("data", 250),
            ("quit", 221),
        ],
    );
    assert_eq!(
        texts[3],
        "554 5.7.1 <other@elsewhere.example>: Relay access denied"
    );
    let remote = Expect {
        client: "127.0.0.2",
        ..expect("a@example.org", &["user@example.test"], &body)
    };
    let id_remote = queue_id(&texts[5]);
    check_queued(&inst, &texts[5], &remote);

    // The same recipient from inside mynetworks is relayed.
    let steps = format!(
        "ehlo\nmail a@example.org\nrcpt other@elsewhere.example\ndata {}\nquit\n",
        path.display()
    );
    let texts = expect_steps(
        &smtplib(inst.port(), Some("127.0.0.1"), &steps),
        &[
            ("connect", 220),
            ("ehlo", 250),
            ("mail", 250),
            ("rcpt", 250),
            ("data", 250),
            ("quit", 221),
        ],
    );
    check_queued(
        &inst,
        &texts[4],
        &expect("a@example.org", &["other@elsewhere.example"], &body),
    );
    assert_queue_holds(&inst, &[id_remote, queue_id(&texts[4])]);
}

#[test]
fn bad_addresses_get_501() {
    let inst = intake("badaddr", &[]);
    let mut c = Client::ehlo(inst.port());
    assert_eq!(
        c.cmd("MAIL FROM:<a@@example.org>").first(),
        "501 5.1.7 Bad sender address syntax"
    );
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts("250"));
    assert_eq!(
        c.cmd("RCPT TO:<b@>").first(),
        "501 5.1.3 Bad recipient address syntax"
    );
    assert_eq!(
        c.cmd("RCPT TO:<>").first(),
        "501 5.1.3 Bad recipient address syntax"
    );
    assert!(c.cmd("QUIT").starts("221"));
    assert_queue_holds(&inst, &[]);
}

#[test]
fn harness_leaves_out_the_services_it_is_told_to() {
    let inst = intake("harness-without", &[]);
    let master_cf = std::fs::read_to_string(inst.dir().join("master.cf")).expect("read master.cf");
    assert!(
        master_cf.lines().any(|l| l.starts_with("#qmgr ")),
        "{master_cf}"
    );
    assert!(
        !master_cf.lines().any(|l| l.starts_with("qmgr ")),
        "{master_cf}"
    );
    assert!(inst.postern(&["status"]).status.success());
}

#[test]
fn harness_starts_configures_and_stops_an_instance() {
    let mut inst = Instance::start("harness", &[("smtpd_timeout", "7s")]);
    let conf = inst.postern(&["conf", "smtpd_timeout"]);
    assert_eq!(
        String::from_utf8_lossy(&conf.stdout).trim(),
        "smtpd_timeout = 7s"
    );
    assert!(inst.postern(&["status"]).status.success());
    assert!(inst.queue_files().is_empty());
    let dir = inst.dir().to_path_buf();
    let master_cf = std::fs::read_to_string(dir.join("master.cf")).expect("read master.cf");
    assert!(
        master_cf.lines().any(|l| l.starts_with("cleanup ")),
        "{master_cf}"
    );
    assert!(inst.stop().status.success());
    assert!(!inst.postern(&["status"]).status.success());
    drop(inst);
    assert!(!dir.exists());
}
