//! Sessions driven end to end: a real TCP client against [`crate::run`] on a loopback
//! connection, with a cleanup channel from `Channel::pair()` answered by a thread that
//! records what it was sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use conf::MainCf;
use protocol::control::Detail;
use protocol::{Channel, FromCleanup, QueueId, ToCleanup};

use crate::{CleanupLink, Config};

/// How the fake cleanup answers `End`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Queue,
    FailTemporary,
    FailPermanent,
    /// Never answers.
    Hang,
    /// Closes the channel at `End`.
    Close,
    /// Queues one message, then closes the channel (a cleanup process that ended).
    QueueOnce,
}

const BASE: &str = "myhostname = mx.example.test\n\
    mynetworks = 192.0.2.0/24\n\
    virtual_mailbox_domains = hosted.example\n\
    relay_domains = relay.example\n\
    smtpd_error_sleep_time = 0\n\
    local_recipient_maps =\n";

fn config(extra: &str) -> Config {
    let env = conf::Environment::with_hostname("mx.example.test").unwrap();
    let text = format!("{BASE}{extra}");
    let settings = MainCf::parse_with_env(&text, std::path::Path::new("main.cf"), env).unwrap();
    Config::from_settings(&settings).unwrap()
}

/// Account lookups answered by proxymap's own lookup code (`proxymap::Maps`) in this
/// process, from the settings' `local_passwd_file`, read as proxymap reads it.
struct InProcess(proxymap::Maps);

impl InProcess {
    fn from_settings(extra: &str) -> InProcess {
        let env = conf::Environment::with_hostname("mx.example.test").unwrap();
        let text = format!("{BASE}{extra}");
        let s = MainCf::parse_with_env(&text, std::path::Path::new("main.cf"), env).unwrap();
        let path = |name: &str| std::path::PathBuf::from(s.get(name).unwrap().trim());
        InProcess(proxymap::Maps::new(
            &path("local_passwd_file"),
            &path("local_group_file"),
        ))
    }
}

impl crate::local_recipients::Accounts for InProcess {
    fn uid_of(&mut self, name: &str) -> Result<Option<u32>, String> {
        crate::local_recipients::uid_in(self.0.lookup(protocol::proxymap::Table::Passwd, name))
    }
}

fn fake_cleanup(channel: Channel, answer: Answer, log: mpsc::Sender<ToCleanup>) {
    let mut seq = 0u32;
    loop {
        let msg = match channel.recv::<ToCleanup>() {
            Ok(r) => r.msg,
            Err(_) => return,
        };
        let end = msg == ToCleanup::End;
        if log.send(msg).is_err() {
            return;
        }
        if !end {
            continue;
        }
        let reply = match answer {
            Answer::Queue | Answer::QueueOnce => {
                seq += 1;
                FromCleanup::Queued {
                    id: QueueId::new(SystemTime::now(), seq).unwrap(),
                }
            }
            Answer::FailTemporary => FromCleanup::Failed {
                temporary: true,
                detail: Detail::try_from("disk full".to_owned()).unwrap(),
            },
            Answer::FailPermanent => FromCleanup::Failed {
                temporary: false,
                detail: Detail::try_from("too big".to_owned()).unwrap(),
            },
            Answer::Hang => {
                // Wait for the session to give up and close its end.
                while channel.recv::<ToCleanup>().is_ok() {}
                return;
            }
            Answer::Close => return,
        };
        if channel.send(&reply, &[]).is_err() || answer == Answer::QueueOnce {
            return;
        }
    }
}

struct Harness {
    client: TcpStream,
    server: Option<JoinHandle<()>>,
    cleanup: Vec<JoinHandle<()>>,
    log: mpsc::Receiver<ToCleanup>,
    /// Bytes read but not yet returned as replies.
    pending: Vec<u8>,
}

impl Harness {
    fn start(extra: &str, answer: Answer) -> Harness {
        Harness::start_with(extra, &[answer], None)
    }

    /// `answers`: one cleanup channel per entry (the session asks for another after a
    /// failure). `before_accept`: bytes the client sends before the server accepts.
    fn start_with(extra: &str, answers: &[Answer], before_accept: Option<&[u8]>) -> Harness {
        let cfg = config(extra);
        let mut accounts = InProcess::from_settings(extra);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        if let Some(early) = before_accept {
            client.write_all(early).unwrap();
        }
        let (tx, log) = mpsc::channel();
        let mut ours = Vec::new();
        let mut cleanup = Vec::new();
        for &answer in answers {
            let (a, b) = Channel::pair().unwrap();
            ours.push(a);
            let tx = tx.clone();
            cleanup.push(std::thread::spawn(move || fake_cleanup(b, answer, tx)));
        }
        let server = std::thread::spawn(move || {
            let (stream, peer) = listener.accept().unwrap();
            let mut link = CleanupLink::new(cfg.timeout);
            let mut channels = ours.into_iter();
            let mut connect = || channels.next().ok_or_else(|| "refused".to_owned());
            crate::run(stream, peer, &cfg, &mut link, &mut connect, &mut accounts).unwrap();
        });
        Harness {
            client,
            server: Some(server),
            cleanup,
            log,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).unwrap();
    }

    /// Reads until one complete reply is buffered; returns it (all its lines).
    fn reply(&mut self) -> String {
        loop {
            if let Some(end) = complete_reply(&self.pending) {
                let reply: Vec<u8> = self.pending.drain(..end).collect();
                return String::from_utf8(reply).unwrap();
            }
            let mut buf = [0u8; 65536];
            let n = self.client.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "connection closed; had {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Sends a command line and returns the reply.
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn expect(&mut self, line: &str, start: &str) -> String {
        let r = self.cmd(line);
        assert!(
            r.starts_with(start),
            "{line:?} got {r:?}, expected {start:?}"
        );
        r
    }

    fn greeting(&mut self) {
        let r = self.reply();
        assert_eq!(r, "220 mx.example.test ESMTP Postern\r\n");
    }

    fn ehlo(&mut self) -> String {
        self.greeting();
        self.expect("EHLO client.example.test", "250-mx.example.test")
    }

    /// The server closed the connection (after everything it sent was read).
    fn closed(&mut self) -> bool {
        assert!(self.pending.is_empty(), "unread: {:?}", self.pending);
        let mut buf = [0u8; 1024];
        matches!(self.client.read(&mut buf), Ok(0) | Err(_))
    }

    /// Every message cleanup was sent, once the session has ended.
    fn finish(mut self) -> Vec<ToCleanup> {
        let _ = self.client.shutdown(std::net::Shutdown::Write);
        if let Some(server) = self.server.take() {
            server.join().unwrap();
        }
        for c in self.cleanup.drain(..) {
            c.join().unwrap();
        }
        self.log.try_iter().collect()
    }
}

/// The length of the first complete reply in `buf`, if there is one.
fn complete_reply(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl + 1];
        start += nl + 1;
        if line.len() >= 4 && line[3] == b' ' {
            return Some(start);
        }
    }
    None
}

fn content(log: &[ToCleanup]) -> Vec<u8> {
    log.iter()
        .filter_map(|m| match m {
            ToCleanup::Content(c) => Some(c.as_bytes().to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn kinds(log: &[ToCleanup]) -> Vec<&'static str> {
    log.iter()
        .map(|m| protocol::Message::kind(m))
        .filter(|k| *k != "Content")
        .collect()
}

fn transaction(h: &mut Harness, rcpts: &[&str]) {
    h.expect("MAIL FROM:<sender@example.org>", "250 2.1.0 Ok");
    for r in rcpts {
        h.expect(&format!("RCPT TO:<{r}>"), "250 2.1.5 Ok");
    }
}

#[test]
fn a_message_goes_to_cleanup_and_is_queued() {
    let mut h = Harness::start("", Answer::Queue);
    let ehlo = h.ehlo();
    assert_eq!(
        ehlo,
        "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    );
    h.expect(
        "MAIL FROM:<sender@example.org> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=abc+2Bd",
        "250 2.1.0 Ok",
    );
    h.expect(
        "RCPT TO:<user@hosted.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user@hosted.example",
        "250 2.1.5 Ok",
    );
    h.expect("DATA", "354 End data with <CR><LF>.<CR><LF>");
    h.send(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n");
    let queued = h.reply();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    h.expect("QUIT", "221 2.0.0 Bye");
    assert!(h.closed());
    let log = h.finish();
    assert_eq!(kinds(&log), ["Begin", "Recipients", "End"]);
    assert_eq!(
        content(&log),
        b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
    );
    let ToCleanup::Begin {
        sender,
        flags,
        client,
        received,
    } = &log[0]
    else {
        panic!("{:?}", log[0]);
    };
    assert_eq!(sender.to_string(), "<sender@example.org>");
    assert_eq!(flags.ret, Some(protocol::smtp::Ret::Hdrs));
    assert_eq!(flags.envid.as_ref().unwrap().as_str(), "abc+d");
    assert_eq!(flags.body, Some(protocol::smtp::BodyType::EightBitMime));
    assert_eq!(client.address, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(client.name, None);
    assert_eq!(client.protocol, protocol::queue::Protocol::Esmtp);
    let text = received.as_str();
    assert!(
        text.starts_with(
            "Received: from client.example.test (unknown [127.0.0.1])\r\n\
             \tby mx.example.test (Postern) with ESMTP\r\n\tfor <user@hosted.example>; "
        ),
        "{text}"
    );
    let ToCleanup::Recipients(list) = &log[1] else {
        panic!("{:?}", log[1]);
    };
    let r = &list.as_slice()[0];
    assert_eq!(r.path.to_string(), "<user@hosted.example>");
    assert!(r.notify.is_some_and(|n| n.success && n.failure && !n.delay));
    assert_eq!(r.orcpt.as_ref().unwrap().address(), "user@hosted.example");
}

#[test]
fn helo_sessions_are_smtp_and_two_messages_share_the_channel() {
    let mut h = Harness::start("", Answer::Queue);
    h.greeting();
    assert_eq!(h.cmd("HELO client.example.test"), "250 mx.example.test\r\n");
    for _ in 0..2 {
        transaction(&mut h, &["a@mx.example.test", "b@mx.example.test"]);
        h.expect("DATA", "354");
        h.send(b"x\r\n.\r\n");
        assert!(h.reply().starts_with("250 2.0.0 Ok: queued as "));
    }
    h.expect("QUIT", "221");
    let log = h.finish();
    assert_eq!(
        kinds(&log),
        ["Begin", "Recipients", "End", "Begin", "Recipients", "End"]
    );
    let ToCleanup::Begin { received, .. } = &log[0] else {
        panic!()
    };
    // Two recipients: no `for` clause, the date after a `;`.
    assert!(
        received
            .as_str()
            .contains("\tby mx.example.test (Postern) with SMTP;\r\n\t"),
        "{received}"
    );
}

#[test]
fn simple_commands_answer_as_postfix() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    h.expect("NOOP", "250 2.0.0 Ok");
    h.expect("RSET", "250 2.0.0 Ok");
    h.expect(
        "VRFY <someone@example.test>",
        "252 2.0.0 <someone@example.test>",
    );
    h.expect("HELP", "214 2.0.0 Commands: HELO EHLO");
    h.expect("EXPN list", "502 5.5.2 Error: command not recognized");
    h.expect(
        "ETRN example.test",
        "502 5.5.2 Error: command not recognized",
    );
    h.expect("STARTTLS", "502 5.5.1 Error: command not implemented");
    h.expect("DATA extra", "501 5.5.4 Syntax: DATA");
    h.expect("EHLO", "501 Syntax: EHLO hostname");
    h.expect("QUIT", "221 2.0.0 Bye");
    h.finish();

    let mut h = Harness::start("disable_vrfy_command = yes\n", Answer::Queue);
    let ehlo = h.ehlo();
    assert!(!ehlo.contains("VRFY"));
    h.expect("VRFY someone", "502 5.5.1 VRFY command is disabled");
    h.finish();
}

#[test]
fn commands_out_of_sequence_are_refused() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    h.expect(
        "RCPT TO:<a@mx.example.test>",
        "503 5.5.1 Error: need MAIL command",
    );
    h.expect("DATA", "503 5.5.1 Error: need RCPT command");
    h.expect("MAIL FROM:<>", "250 2.1.0 Ok");
    h.expect("MAIL FROM:<>", "503 5.5.1 Error: nested MAIL command");
    h.expect("DATA", "554 5.5.1 Error: no valid recipients");
    h.expect("RSET", "250");
    transaction(&mut h, &["a@mx.example.test"]);
    h.expect(
        "EHLO again.example",
        "503 5.5.1 Error: MAIL transaction in progress",
    );
    h.finish();

    let mut h = Harness::start("smtpd_helo_required = yes\n", Answer::Queue);
    h.greeting();
    h.expect("MAIL FROM:<>", "503 5.5.1 Error: send HELO/EHLO first");
    h.expect("HELO c.example", "250");
    h.expect("MAIL FROM:<>", "250");
    h.finish();
}

#[test]
fn relay_control_and_address_syntax() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    h.expect(
        "MAIL FROM:<bad address@x>",
        "501 5.1.7 Bad sender address syntax",
    );
    h.expect("MAIL FROM:<s@example.org>", "250");
    h.expect("RCPT TO:<local@mx.example.test>", "250 2.1.5");
    h.expect("RCPT TO:<Postmaster>", "250 2.1.5");
    h.expect("RCPT TO:<u@hosted.example>", "250 2.1.5");
    h.expect("RCPT TO:<u@relay.example>", "250 2.1.5");
    assert_eq!(
        h.cmd("RCPT TO:<u@elsewhere.example>"),
        "554 5.7.1 <u@elsewhere.example>: Relay access denied\r\n"
    );
    h.expect("RCPT TO:<u@[192.0.2.1]>", "554 5.7.1");
    h.expect(
        "RCPT TO:<no at sign>",
        "501 5.1.3 Bad recipient address syntax",
    );
    h.finish();

    // A client in mynetworks may relay.
    let mut h = Harness::start("mynetworks = 127.0.0.0/8\n", Answer::Queue);
    h.ehlo();
    h.expect("MAIL FROM:<s@example.org>", "250");
    h.expect("RCPT TO:<u@elsewhere.example>", "250 2.1.5");
    h.finish();
}

#[test]
fn unknown_virtual_users_are_rejected_at_rcpt() {
    let dir = std::env::temp_dir().join(format!("smtpd-vmailbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let table = dir.join("vmailbox");
    std::fs::write(
        &table,
        "user@hosted.example hosted.example/user/\n@catchall.example c/\n",
    )
    .unwrap();
    let extra = format!(
        "virtual_mailbox_domains = hosted.example, texthash:{t}\nvirtual_mailbox_maps = texthash:{t}\n",
        t = table.display()
    );
    let mut h = Harness::start(&extra, Answer::Queue);
    std::fs::remove_dir_all(&dir).unwrap();
    h.ehlo();
    h.expect("MAIL FROM:<s@example.org>", "250");
    h.expect("RCPT TO:<User@Hosted.Example>", "250 2.1.5");
    assert_eq!(
        h.cmd("RCPT TO:<unknown@hosted.example>"),
        "550 5.1.1 <unknown@hosted.example>: Recipient address rejected: User unknown in virtual mailbox table\r\n"
    );
    // A catch-all accepts every user of its domain, which the table makes virtual.
    h.expect("RCPT TO:<anyone@catchall.example>", "250 2.1.5");
    // Other classes are not looked up in the virtual table.
    h.expect("RCPT TO:<local@mx.example.test>", "250 2.1.5");
    h.expect("RCPT TO:<u@relay.example>", "250 2.1.5");
    h.finish();
}

#[test]
fn unknown_local_users_are_rejected_at_rcpt() {
    let dir = std::env::temp_dir().join(format!("smtpd-local-rcpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwd = dir.join("passwd");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    let aliases = dir.join("aliases");
    std::fs::write(
        &aliases,
        "postmaster: root\nroot: alice\nsales: alice, bob\n",
    )
    .unwrap();
    // Postfix's default list, with this test's files.
    let extra = format!(
        "local_passwd_file = {}\nalias_maps = hash:{}\n\
         local_recipient_maps = proxy:unix:passwd.byname $alias_maps\n",
        passwd.display(),
        aliases.display()
    );
    let mut h = Harness::start(&extra, Answer::Queue);
    h.ehlo();
    h.expect("MAIL FROM:<s@example.org>", "250");
    h.expect("RCPT TO:<Alice@mx.example.test>", "250 2.1.5");
    h.expect("RCPT TO:<sales@localhost>", "250 2.1.5");
    h.expect("RCPT TO:<root@mx.example.test>", "250 2.1.5");
    h.expect("RCPT TO:<Postmaster>", "250 2.1.5");
    assert_eq!(
        h.cmd("RCPT TO:<nosuch@mx.example.test>"),
        "550 5.1.1 <nosuch@mx.example.test>: Recipient address rejected: User unknown in local recipient table\r\n"
    );
    // bob is only a value of an alias, not a name.
    h.expect("RCPT TO:<bob@mx.example.test>", "550 5.1.1");
    // Other classes are not looked up in the local tables.
    h.expect("RCPT TO:<nosuch@hosted.example>", "250 2.1.5");
    h.expect("RCPT TO:<nosuch@relay.example>", "250 2.1.5");
    // Accounts are looked up at each RCPT: a user added by replacing the file (as useradd
    // does, by rename) is a recipient at once.
    h.expect("RCPT TO:<carol@mx.example.test>", "550 5.1.1");
    let new = dir.join("passwd+");
    std::fs::write(
        &new,
        "alice:x:1000:1000::/home/alice:/bin/sh\ncarol:x:1001:1001::/home/carol:/bin/sh\n",
    )
    .unwrap();
    std::fs::rename(&new, &passwd).unwrap();
    h.expect("RCPT TO:<carol@mx.example.test>", "250 2.1.5");
    // A file that cannot be read is a temporary failure, never "unknown user"; aliases
    // still answer.
    std::fs::remove_file(&passwd).unwrap();
    assert_eq!(
        h.cmd("RCPT TO:<alice@mx.example.test>"),
        "451 4.3.0 <alice@mx.example.test>: Temporary lookup failure\r\n"
    );
    h.expect("RCPT TO:<sales@localhost>", "250 2.1.5");
    std::fs::remove_dir_all(&dir).unwrap();
    h.expect("DATA", "354");
    h.send(b"Subject: x\r\n\r\nx\r\n.\r\n");
    assert!(h.reply().starts_with("250 2.0.0 Ok: queued"));
    let log = h.finish();
    let rcpts: Vec<String> = log
        .iter()
        .filter_map(|m| match m {
            ToCleanup::Recipients(r) => Some(
                r.as_slice()
                    .iter()
                    .map(|r| r.path.to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(rcpts.len(), 8, "{rcpts:?}");
    assert!(
        !rcpts
            .iter()
            .any(|r| r.contains("nosuch@mx") || r.contains("bob@")),
        "{rcpts:?}"
    );
}

#[test]
fn a_local_recipient_table_that_cannot_be_read_defers_local_recipients_only() {
    let extra = "alias_maps = hash:/nonexistent/postern-aliases\n\
                 local_recipient_maps = $alias_maps\n";
    let mut h = Harness::start(extra, Answer::Queue);
    h.ehlo();
    h.expect("MAIL FROM:<s@example.org>", "250");
    assert_eq!(
        h.cmd("RCPT TO:<alice@mx.example.test>"),
        "451 4.3.0 <alice@mx.example.test>: Temporary lookup failure\r\n"
    );
    h.expect("RCPT TO:<u@hosted.example>", "250 2.1.5");
    h.finish();
}

#[test]
fn smtputf8_addresses_need_smtputf8() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    h.expect("MAIL FROM:<s@example.org>", "250");
    h.expect(
        "RCPT TO:<jos\u{e9}@mx.example.test>",
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
    );
    h.expect("RSET", "250");
    h.expect("MAIL FROM:<s\u{e9}@example.org>", "553 5.6.7");
    h.expect("MAIL FROM:<s\u{e9}@example.org> SMTPUTF8", "250");
    h.expect("RCPT TO:<jos\u{e9}@mx.example.test>", "250");
    h.expect("DATA", "354");
    h.send(b".\r\n");
    assert!(h.reply().starts_with("250 2.0.0 Ok: queued"));
    let log = h.finish();
    let ToCleanup::Begin {
        flags, received, ..
    } = &log[0]
    else {
        panic!()
    };
    assert!(flags.smtputf8);
    assert!(
        received.as_str().contains(" with UTF8SMTP\r\n"),
        "{received}"
    );

    let mut h = Harness::start("smtputf8_enable = no\n", Answer::Queue);
    assert!(!h.ehlo().contains("SMTPUTF8"));
    h.expect(
        "MAIL FROM:<s@example.org> SMTPUTF8",
        "555 5.5.4 Unsupported option: SMTPUTF8",
    );
    h.finish();
}

#[test]
fn size_limits_at_mail_and_in_data() {
    let mut h = Harness::start("message_size_limit = 1000\n", Answer::Queue);
    assert!(h.ehlo().contains("250-SIZE 1000\r\n"));
    h.expect(
        "MAIL FROM:<s@example.org> SIZE=1001",
        "552 5.3.4 Message size exceeds fixed limit",
    );
    transaction(&mut h, &["a@mx.example.test"]);
    h.expect("DATA", "354");
    let mut big = Vec::new();
    for _ in 0..50 {
        big.extend_from_slice(&[b'x'; 70]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b".\r\n");
    h.send(&big);
    assert_eq!(h.reply(), "552 5.3.4 Error: message file too big\r\n");
    // The session goes on, outside any transaction.
    h.expect(
        "RCPT TO:<a@mx.example.test>",
        "503 5.5.1 Error: need MAIL command",
    );
    h.expect("NOOP", "250");
    let log = h.finish();
    assert_eq!(kinds(&log), ["Begin", "Recipients", "Abort"]);
}

#[test]
fn long_command_lines_are_refused_and_discarded() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    let mut line = b"NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 100_000));
    line.extend_from_slice(b"\r\n");
    h.send(&line);
    assert_eq!(h.reply(), "500 5.5.2 Error: line too long\r\n");
    h.expect("NOOP", "250 2.0.0 Ok");
    h.finish();
}

#[test]
fn the_hard_error_limit_ends_the_session() {
    let mut h = Harness::start("smtpd_hard_error_limit = 3\n", Answer::Queue);
    h.ehlo();
    h.expect("BOGUS", "502 5.5.2 Error: command not recognized");
    h.expect("RCPT TO:<a@b.example>", "503");
    h.send(b"MAIL FROM:x\r\n");
    assert_eq!(h.reply(), "501 5.1.7 Bad sender address syntax\r\n");
    assert_eq!(
        h.reply(),
        "421 4.7.0 mx.example.test Error: too many errors\r\n"
    );
    assert!(h.closed());
    h.finish();
}

#[test]
fn junk_commands_past_the_limit_count_as_errors() {
    let mut h = Harness::start(
        "smtpd_junk_command_limit = 2\nsmtpd_hard_error_limit = 2\n",
        Answer::Queue,
    );
    h.ehlo(); // junk 1
    h.expect("NOOP", "250"); // junk 2
    h.expect("NOOP", "250"); // junk 3: error 1
    h.expect("NOOP", "250"); // error 2
    assert!(h.reply().starts_with("421 4.7.0"));
    h.finish();
}

#[test]
fn a_silent_client_times_out() {
    let mut h = Harness::start("smtpd_timeout = 1s\n", Answer::Queue);
    h.ehlo();
    assert_eq!(
        h.reply(),
        "421 4.4.2 mx.example.test Error: timeout exceeded\r\n"
    );
    assert!(h.closed());
    h.finish();

    // In the middle of DATA the message is discarded at cleanup.
    let mut h = Harness::start("smtpd_timeout = 1s\n", Answer::Queue);
    h.ehlo();
    transaction(&mut h, &["a@mx.example.test"]);
    h.expect("DATA", "354");
    h.send(b"partial line");
    assert!(h.reply().starts_with("421 4.4.2"));
    let log = h.finish();
    assert_eq!(kinds(&log), ["Begin", "Recipients", "Abort"]);
}

#[test]
fn the_recipient_limit() {
    let mut h = Harness::start("smtpd_recipient_limit = 2\n", Answer::Queue);
    h.ehlo();
    transaction(&mut h, &["a@mx.example.test", "b@mx.example.test"]);
    h.expect(
        "RCPT TO:<c@mx.example.test>",
        "452 4.5.3 Error: too many recipients",
    );
    h.finish();
}

#[test]
fn many_recipients_go_in_groups() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    let mut group = b"MAIL FROM:<s@example.org>\r\n".to_vec();
    for i in 0..150 {
        group.extend_from_slice(format!("RCPT TO:<u{i}@mx.example.test>\r\n").as_bytes());
    }
    group.extend_from_slice(b"DATA\r\n");
    h.send(&group);
    for _ in 0..151 {
        assert!(h.reply().starts_with("250"));
    }
    assert!(h.reply().starts_with("354"));
    h.send(b".\r\n");
    assert!(h.reply().starts_with("250 2.0.0 Ok: queued"));
    let log = h.finish();
    let sizes: Vec<usize> = log
        .iter()
        .filter_map(|m| match m {
            ToCleanup::Recipients(l) => Some(l.as_slice().len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [64, 64, 22]);
}

#[test]
fn pipelined_replies_come_in_one_write_and_in_order() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    h.send(
        b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@mx.example.test>\r\n\
          RCPT TO:<x@elsewhere.example>\r\nRCPT TO:<b@mx.example.test>\r\nDATA\r\n",
    );
    let mut buf = [0u8; 4096];
    let n = h.client.read(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
         554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n250 2.1.5 Ok\r\n\
         354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    // The data, the end and the next commands in one write.
    h.send(b"hello\r\n.\r\nMAIL FROM:<>\r\nQUIT\r\n");
    assert!(h.reply().starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(h.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(h.reply(), "221 2.0.0 Bye\r\n");
    let log = h.finish();
    assert_eq!(content(&log), b"hello\r\n");
}

#[test]
fn unauthorized_pipelining_is_disconnected() {
    // Talking before the greeting.
    let mut h = Harness::start_with("", &[Answer::Queue], Some(b"EHLO early.example\r\n"));
    h.greeting();
    assert_eq!(
        h.reply(),
        "554 5.5.0 Error: SMTP protocol synchronization\r\n"
    );
    assert!(h.closed());
    h.finish();

    // Commands after EHLO in the same write.
    let mut h = Harness::start("", Answer::Queue);
    h.greeting();
    h.send(b"EHLO c.example\r\nMAIL FROM:<>\r\n");
    assert_eq!(
        h.reply(),
        "554 5.5.0 Error: SMTP protocol synchronization\r\n"
    );
    assert!(h.closed());
    h.finish();

    // Pipelining after HELO (PIPELINING was never offered).
    let mut h = Harness::start("", Answer::Queue);
    h.greeting();
    h.expect("HELO c.example", "250");
    h.send(b"MAIL FROM:<>\r\nRCPT TO:<a@mx.example.test>\r\n");
    assert!(h.reply().starts_with("554 5.5.0"));
    h.finish();

    // The message text sent with DATA, before the 354.
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    transaction(&mut h, &["a@mx.example.test"]);
    h.send(b"DATA\r\nSubject: early\r\n.\r\n");
    assert!(h.reply().starts_with("554 5.5.0"));
    assert!(h.closed());
    let log = h.finish();
    assert!(kinds(&log).is_empty(), "{log:?}");

    // Allowed when smtpd_forbid_unauth_pipelining = no.
    let mut h = Harness::start("smtpd_forbid_unauth_pipelining = no\n", Answer::Queue);
    h.greeting();
    h.send(b"HELO c.example\r\nMAIL FROM:<>\r\n");
    assert!(h.reply().starts_with("250 mx.example.test"));
    assert!(h.reply().starts_with("250 2.1.0"));
    h.finish();
}

/// One smuggling attempt through a whole session: the smuggled transaction is text of
/// the first message, and only one message is queued.
fn smuggle(mode: &str, variant: &[u8]) -> (Vec<String>, Vec<ToCleanup>) {
    let mut h = Harness::start(
        &format!("smtpd_forbid_bare_newline = {mode}\n"),
        Answer::Queue,
    );
    h.ehlo();
    transaction(&mut h, &["a@mx.example.test"]);
    h.expect("DATA", "354");
    let mut data = b"Subject: one".to_vec();
    data.extend_from_slice(variant);
    data.extend_from_slice(
        b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<b@mx.example.test>\r\nDATA\r\n\
          Subject: smuggled\r\n\r\n.\r\nQUIT\r\n",
    );
    h.send(&data);
    let mut replies = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match h.client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => h.pending.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = complete_reply(&h.pending) {
            let r: Vec<u8> = h.pending.drain(..end).collect();
            replies.push(String::from_utf8(r).unwrap());
        }
    }
    (replies, h.finish())
}

#[test]
fn smuggling_variants_in_each_mode() {
    let variants: [&[u8]; 6] = [
        b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r\n.\n", b"\n.\r",
    ];
    for variant in variants {
        for mode in ["normalize", "yes", "no"] {
            let (replies, log) = smuggle(mode, variant);
            assert_eq!(replies.len(), 2, "{variant:?} {mode}: {replies:?}");
            assert!(replies[0].starts_with("250 2.0.0 Ok: queued as "));
            assert_eq!(replies[1], "221 2.0.0 Bye\r\n");
            assert_eq!(kinds(&log), ["Begin", "Recipients", "End"], "{variant:?}");
            let text = String::from_utf8(content(&log)).unwrap();
            assert!(
                text.contains("MAIL FROM:<evil@example.org>\r\n"),
                "{variant:?} {mode}: {text:?}"
            );
            // Every line end that reaches the queue is CRLF.
            assert!(!dot_has_bare_lf(text.as_bytes()), "{text:?}");
        }
        let (replies, log) = smuggle("reject", variant);
        if variant.contains(&b'\n') && protocol::smtp::data::has_bare_lf(variant, false) {
            assert_eq!(
                replies,
                ["521 5.5.2 mx.example.test Error: bare <LF> received\r\n"],
                "{variant:?}"
            );
            assert_eq!(kinds(&log), ["Begin", "Recipients", "Abort"]);
        } else {
            assert!(
                replies[0].starts_with("250 2.0.0 Ok: queued"),
                "{replies:?}"
            );
            assert_eq!(kinds(&log), ["Begin", "Recipients", "End"]);
        }
    }
}

fn dot_has_bare_lf(text: &[u8]) -> bool {
    protocol::smtp::data::has_bare_lf(text, false)
}

#[test]
fn bare_lf_command_lines() {
    let mut h = Harness::start("", Answer::Queue);
    h.greeting();
    h.send(b"HELO c.example\n");
    assert!(h.reply().starts_with("250 mx.example.test"));
    h.finish();

    let mut h = Harness::start("smtpd_forbid_bare_newline = reject\n", Answer::Queue);
    h.greeting();
    h.send(b"HELO c.example\n");
    assert_eq!(
        h.reply(),
        "521 5.5.2 mx.example.test Error: bare <LF> received\r\n"
    );
    assert!(h.closed());
    h.finish();
}

#[test]
fn bdat_chunks_are_counted_and_queued() {
    let mut h = Harness::start("", Answer::Queue);
    h.ehlo();
    transaction(&mut h, &["a@mx.example.test"]);
    h.send(b"BDAT 12\r\nSubject: a\r\n");
    assert_eq!(h.reply(), "250 2.0.0 Ok: 12 bytes\r\n");
    // A bare LF is stored as CRLF; a dot line means nothing in BDAT; pipelined QUIT.
    h.send(b"BDAT 7 LAST\r\n\nx\n.\r\nyQUIT\r\n");
    assert!(h.reply().starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(h.reply(), "221 2.0.0 Bye\r\n");
    let log = h.finish();
    assert_eq!(kinds(&log), ["Begin", "Recipients", "End"]);
    assert_eq!(content(&log), b"Subject: a\r\n\r\nx\r\n.\r\ny");
}

#[test]
fn bdat_errors_skip_the_chunk() {
    let mut h = Harness::start("message_size_limit = 100\n", Answer::Queue);
    h.ehlo();
    // No transaction: the chunk (which looks like a command) is read and dropped.
    h.send(b"BDAT 6\r\nQUIT\r\n");
    assert_eq!(h.reply(), "503 5.5.1 Error: need RCPT command\r\n");
    h.expect("MAIL FROM:<>", "250");
    h.send(b"BDAT 0 LAST\r\n");
    assert_eq!(h.reply(), "554 5.5.1 Error: no valid recipients\r\n");
    h.expect("RCPT TO:<a@mx.example.test>", "250");
    h.send(b"BDAT 3\r\nabc");
    assert!(h.reply().starts_with("250 2.0.0 Ok: 3 bytes"));
    h.expect("DATA", "503 5.5.1 Error: DATA after BDAT");
    h.expect(
        "RCPT TO:<b@mx.example.test>",
        "503 5.5.1 Error: RCPT after BDAT",
    );
    h.expect("MAIL FROM:<>", "503 5.5.1 Error: MAIL after BDAT");
    let big = vec![b'x'; 200];
    h.send(b"BDAT 200\r\n");
    h.send(&big);
    assert_eq!(h.reply(), "552 5.3.4 Chunk exceeds message size limit\r\n");
    h.send(b"BDAT 2 LAST\r\nok");
    assert_eq!(h.reply(), "552 5.3.4 Chunk exceeds message size limit\r\n");
    // The transaction is over.
    h.expect(
        "RCPT TO:<a@mx.example.test>",
        "503 5.5.1 Error: need MAIL command",
    );
    // RSET ends a BDAT transaction.
    transaction(&mut h, &["a@mx.example.test"]);
    h.send(b"BDAT 1\r\nz");
    assert!(h.reply().starts_with("250 2.0.0 Ok: 1 bytes"));
    h.expect("RSET", "250");
    h.expect("MAIL FROM:<>", "250");
    h.send(b"BDAT 3 LAST\r\nabc");
    assert_eq!(h.reply(), "554 5.5.1 Error: no valid recipients\r\n");
    // A malformed BDAT cannot be followed.
    h.send(b"BDAT many\r\n");
    assert_eq!(h.reply(), "521 5.5.4 Syntax: BDAT count [LAST]\r\n");
    let log = h.finish();
    assert_eq!(
        kinds(&log),
        [
            "Begin",
            "Recipients",
            "Abort",
            "Begin",
            "Recipients",
            "Abort"
        ]
    );
}

#[test]
fn cleanup_failures_are_temporary_or_permanent() {
    for (answer, reply) in [
        (
            Answer::FailTemporary,
            "451 4.3.0 Error: queue file write error\r\n",
        ),
        (
            Answer::FailPermanent,
            "552 5.3.4 Error: message file too big\r\n",
        ),
        (Answer::Close, "451 4.3.0 Error: queue file write error\r\n"),
    ] {
        let mut h = Harness::start("", answer);
        h.ehlo();
        transaction(&mut h, &["a@mx.example.test"]);
        h.expect("DATA", "354");
        h.send(b"x\r\n.\r\n");
        assert_eq!(h.reply(), reply, "{answer:?}");
        h.expect("QUIT", "221");
        h.finish();
    }

    // No answer within smtpd_timeout.
    let mut h = Harness::start("smtpd_timeout = 1s\n", Answer::Hang);
    h.ehlo();
    transaction(&mut h, &["a@mx.example.test"]);
    h.expect("DATA", "354");
    h.send(b"x\r\n.\r\n");
    assert_eq!(h.reply(), "451 4.3.0 Error: queue file write error\r\n");
    h.finish();
}

#[test]
fn a_broken_channel_is_replaced_and_a_refused_one_is_451() {
    let mut h = Harness::start_with("", &[Answer::Close, Answer::Queue], None);
    h.ehlo();
    for expected in ["451 4.3.0", "250 2.0.0 Ok: queued as "] {
        transaction(&mut h, &["a@mx.example.test"]);
        h.expect("DATA", "354");
        h.send(b"x\r\n.\r\n");
        let r = h.reply();
        assert!(r.starts_with(expected), "{r}");
    }
    h.finish();

    // A channel whose cleanup went away between messages is replaced without a 451.
    let mut h = Harness::start_with("", &[Answer::QueueOnce, Answer::Queue], None);
    h.ehlo();
    for round in 0..2 {
        transaction(&mut h, &["a@mx.example.test"]);
        h.expect("DATA", "354");
        h.send(b"x\r\n.\r\n");
        let r = h.reply();
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
        if round == 0 {
            // The first cleanup has closed its end before the next message starts.
            h.cleanup.remove(0).join().unwrap();
        }
    }
    h.finish();

    // No channel at all (the master refuses): DATA gets 451 before any 354.
    let mut h = Harness::start_with("", &[], None);
    h.ehlo();
    transaction(&mut h, &["a@mx.example.test"]);
    h.expect("DATA", "451 4.3.0 Error: queue file write error");
    h.expect(
        "RCPT TO:<a@mx.example.test>",
        "503 5.5.1 Error: need MAIL command",
    );
    h.finish();
}

#[test]
fn the_disconnect_summary_counts_commands_as_postfix() {
    let cfg = config("");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (stream, peer) = listener.accept().unwrap();
    let mut link = CleanupLink::new(cfg.timeout);
    let mut connect = || Err("refused".to_owned());
    let conn = crate::conn::Conn::new(stream, cfg.timeout).unwrap();
    let mut s = crate::session::Session {
        config: &cfg,
        conn,
        client_ip: peer.ip(),
        client: "unknown[127.0.0.1]".to_owned(),
        helo: None,
        esmtp: false,
        txn: None,
        handed: false,
        errors: 0,
        junk: 0,
        counts: Vec::new(),
        last_verb: String::new(),
        link: &mut link,
        connect: &mut connect,
        accounts: &mut InProcess::from_settings(""),
    };
    for (verb, ok) in [
        ("EHLO", true),
        ("RCPT", false),
        ("RCPT", true),
        ("x:y", false),
    ] {
        s.last_verb = verb.to_owned();
        s.count(ok);
    }
    assert_eq!(
        s.command_counts(),
        "ehlo=1 rcpt=1/2 unknown=0/1 commands=2/4"
    );
}

#[test]
fn web_clients_are_sent_away() {
    let mut h = Harness::start("smtpd_forbid_unauth_pipelining = no\n", Answer::Queue);
    h.greeting();
    h.send(b"GET / HTTP/1.0\r\n");
    assert_eq!(
        h.reply(),
        "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n"
    );
    assert!(h.closed());
    h.finish();
}
