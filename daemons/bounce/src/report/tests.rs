use std::time::{Duration, UNIX_EPOCH};

use protocol::queue::{MailFlags, Outcome, QueueFile, QueueLimits};
use protocol::smtp::{BodyType, Envid, Ret};

use super::*;
use crate::testing::*;

const REJECTED: &str = "host mx.example.net[192.0.2.25] said: 550 5.1.1 <nobody@example.net>: \
                        Recipient address rejected: User unknown (in reply to RCPT TO command)";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_001_000)
}

/// Reads the file, selects, and composes as the service does (without the I/O error paths).
fn report_for(
    config: &Config,
    kind: NoticeKind,
    envelope: &protocol::queue::Envelope,
    content: &[u8],
    results: &[Result_],
    indices: &[u32],
) -> Option<(Report, Return)> {
    let mut f = queue_file(envelope, content, results);
    let qf = QueueFile::read(&mut f.file, QueueLimits::default()).unwrap();
    let (entries, _) = select(kind, &qf, indices);
    if entries.is_empty() {
        return None;
    }
    let to = addressees(config, kind, qf.envelope(), &entries)?;
    let returned = what_to_return(
        kind,
        &qf.envelope().flags,
        qf.content_len(),
        config.bounce_size_limit,
    );
    let original = match returned {
        Return::Message => content.to_vec(),
        Return::Headers => header_section(content).to_vec(),
    };
    let notice = Notice {
        kind,
        queue_id: queue_id(),
        envelope: qf.envelope(),
        entries,
        recipients: to,
    };
    Some((
        compose(config, &notice, returned, &original, now(), 1).unwrap(),
        returned,
    ))
}

fn failure(flags: MailFlags, recipients: Vec<Recipient>, results: &[Result_]) -> Parsed {
    let env = envelope("sender@example.org", flags, recipients);
    let indices: Vec<u32> = (0..env.recipients.len() as u32).collect();
    let (r, _) = report_for(
        &config(),
        NoticeKind::Failure,
        &env,
        MESSAGE,
        results,
        &indices,
    )
    .expect("a report");
    parse(&r.text)
}

#[test]
fn a_failure_report_has_the_three_parts_and_the_whole_message() {
    let env = envelope(
        "sender@example.org",
        no_flags(),
        vec![rcpt("nobody@example.net", None, None)],
    );
    let (report, returned) = report_for(
        &config(),
        NoticeKind::Failure,
        &env,
        MESSAGE,
        &[(0, Outcome::Bounced, "5.1.1", REJECTED)],
        &[0],
    )
    .unwrap();
    assert_eq!(returned, Return::Message);
    assert_eq!(
        report.recipients,
        vec![ForwardPath::parse("<sender@example.org>", false).unwrap()]
    );
    assert!(!report.flags.smtputf8);
    assert_eq!(report.flags.body, None, "an ASCII report is 7-bit");
    assert!(report
        .received
        .as_str()
        .starts_with("Received: by mx.example.test (Postern);\r\n\t"));

    let p = parse(&report.text);
    assert_eq!(
        p.header("From"),
        Some("MAILER-DAEMON@mx.example.test (Mail Delivery System)")
    );
    assert_eq!(
        p.header("Subject"),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(p.header("To"), Some("sender@example.org"));
    assert_eq!(p.header("Auto-Submitted"), Some("auto-replied"));
    assert_eq!(p.header("MIME-Version"), Some("1.0"));
    assert_eq!(p.header("Date"), Some("Tue, 14 Nov 2023 22:30:00 +0000"));
    assert!(p
        .header("Content-Type")
        .unwrap()
        .starts_with("multipart/report; report-type=delivery-status; boundary="));
    assert_eq!(p.parts.len(), 3);

    let human = p.parts[0].text();
    assert_eq!(
        p.parts[0].header("Content-Type"),
        Some("text/plain; charset=us-ascii")
    );
    assert!(human.starts_with("This is the mail system at host mx.example.test.\r\n"));
    assert!(human.contains("<nobody@example.net>: host mx.example.net[192.0.2.25] said: 550"));

    assert_eq!(
        p.parts[1].header("Content-Type"),
        Some("message/delivery-status")
    );
    let blocks = p.parts[1].blocks();
    assert_eq!(blocks.len(), 2);
    let msg = &blocks[0];
    assert_eq!(lookup(msg, "Reporting-MTA"), Some("dns; mx.example.test"));
    assert_eq!(
        lookup(msg, "X-Postern-Queue-ID"),
        Some("0005F1A2B3C4D5E6000001")
    );
    assert_eq!(
        lookup(msg, "X-Postern-Sender"),
        Some("rfc822; sender@example.org")
    );
    assert_eq!(
        lookup(msg, "Arrival-Date"),
        Some("Tue, 14 Nov 2023 22:13:20 +0000")
    );
    assert_eq!(lookup(msg, "Original-Envelope-Id"), None);
    let r = &blocks[1];
    assert_eq!(
        lookup(r, "Final-Recipient"),
        Some("rfc822; nobody@example.net")
    );
    assert_eq!(lookup(r, "Original-Recipient"), None);
    assert_eq!(lookup(r, "Action"), Some("failed"));
    assert_eq!(lookup(r, "Status"), Some("5.1.1"));
    assert_eq!(lookup(r, "Remote-MTA"), Some("dns; mx.example.net"));
    assert_eq!(
        lookup(r, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown")
    );
    assert_eq!(
        lookup(r, "Last-Attempt-Date"),
        Some("Tue, 14 Nov 2023 22:23:20 +0000")
    );
    assert_eq!(lookup(r, "Will-Retry-Until"), None);

    assert_eq!(p.parts[2].header("Content-Type"), Some("message/rfc822"));
    assert_eq!(
        p.parts[2].header("Content-Description"),
        Some("Undelivered Message")
    );
    assert_eq!(p.parts[2].body, MESSAGE);
}

#[test]
fn ret_hdrs_and_the_size_limit_return_headers_only() {
    let flags = MailFlags {
        ret: Some(Ret::Hdrs),
        ..no_flags()
    };
    let results = [(0, Outcome::Bounced, "5.1.1", "unknown user")];
    let p = failure(flags, vec![rcpt("u@example.test", None, None)], &results);
    let headers = header_section(MESSAGE);
    assert!(headers.ends_with(b"Message-ID: <m1@example.org>\r\n"));
    assert_eq!(
        p.parts[2].header("Content-Type"),
        Some("text/rfc822-headers")
    );
    assert_eq!(
        p.parts[2].header("Content-Description"),
        Some("Undelivered Message Headers")
    );
    assert_eq!(p.parts[2].body, headers);

    // RET=FULL, but larger than bounce_size_limit.
    let mut small = config();
    small.bounce_size_limit = 100;
    let env = envelope(
        "sender@example.org",
        MailFlags {
            ret: Some(Ret::Full),
            ..no_flags()
        },
        vec![rcpt("u@example.test", None, None)],
    );
    let (r, returned) =
        report_for(&small, NoticeKind::Failure, &env, MESSAGE, &results, &[0]).unwrap();
    assert_eq!(returned, Return::Headers);
    assert_eq!(
        parse(&r.text).parts[2].header("Content-Type"),
        Some("text/rfc822-headers")
    );
    // The limit itself still returns the message.
    small.bounce_size_limit = MESSAGE.len() as u64;
    let (_, returned) =
        report_for(&small, NoticeKind::Failure, &env, MESSAGE, &results, &[0]).unwrap();
    assert_eq!(returned, Return::Message);

    // BINARYMIME is never returned whole.
    let binary = MailFlags {
        body: Some(BodyType::BinaryMime),
        ..no_flags()
    };
    assert_eq!(
        what_to_return(NoticeKind::Failure, &binary, 10, 50_000),
        Return::Headers
    );
}

#[test]
fn notify_decides_who_is_reported_for_each_kind() {
    let recipients = vec![
        rcpt("absent@example.test", None, None),
        rcpt("never@example.test", Some("NEVER"), None),
        rcpt("failure@example.test", Some("FAILURE"), None),
        rcpt("delay@example.test", Some("DELAY"), None),
        rcpt("success@example.test", Some("SUCCESS"), None),
        rcpt("all@example.test", Some("SUCCESS,FAILURE,DELAY"), None),
    ];
    let env = envelope("sender@example.org", no_flags(), recipients);
    let all: Vec<u32> = (0..6).collect();
    for (kind, outcome, status, expected) in [
        (
            NoticeKind::Failure,
            Outcome::Bounced,
            "5.0.0",
            &["absent", "failure", "all"][..],
        ),
        (
            NoticeKind::Delay,
            Outcome::Deferred,
            "4.4.1",
            &["absent", "delay", "all"][..],
        ),
        (
            NoticeKind::Success,
            Outcome::Delivered,
            "2.0.0",
            &["success", "all"][..],
        ),
    ] {
        let results: Vec<Result_> = all.iter().map(|&i| (i, outcome, status, "x")).collect();
        let f = queue_file(&env, MESSAGE, &results);
        let qf = QueueFile::read(&f.file, QueueLimits::default()).unwrap();
        let (entries, skipped) = select(kind, &qf, &all);
        assert!(skipped.is_empty());
        let names: Vec<String> = entries
            .iter()
            .map(|e| e.recipient.path.mailbox().unwrap().local_part().to_owned())
            .collect();
        assert_eq!(names, expected, "{kind:?}");
    }

    // Only NEVER: no report at all.
    let env = envelope(
        "sender@example.org",
        no_flags(),
        vec![rcpt("never@example.test", Some("NEVER"), None)],
    );
    assert!(report_for(
        &config(),
        NoticeKind::Failure,
        &env,
        MESSAGE,
        &[(0, Outcome::Bounced, "5.0.0", "x")],
        &[0]
    )
    .is_none());
}

#[test]
fn results_that_contradict_the_notice_are_left_out() {
    let env = envelope(
        "sender@example.org",
        no_flags(),
        vec![
            rcpt("a@example.test", None, None),
            rcpt("b@example.test", None, None),
            rcpt("c@example.test", None, None),
        ],
    );
    let f = queue_file(
        &env,
        MESSAGE,
        &[
            (0, Outcome::Deferred, "4.4.1", "timeout"),
            (0, Outcome::Bounced, "4.4.7", "message expired"),
            (1, Outcome::Delivered, "2.0.0", "delivered"),
        ],
    );
    let qf = QueueFile::read(&f.file, QueueLimits::default()).unwrap();
    let (entries, skipped) = select(NoticeKind::Failure, &qf, &[0, 1, 2, 9]);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status.to_string(), "4.4.7");
    assert_eq!(entries[0].diagnostic, "message expired");
    assert_eq!(
        skipped,
        vec![
            Skipped::WrongOutcome {
                index: 1,
                outcome: Outcome::Delivered,
                kind: NoticeKind::Failure
            },
            Skipped::NoResult { index: 2 },
            Skipped::NoSuchRecipient { index: 9, count: 3 },
        ]
    );
}

#[test]
fn envid_and_orcpt_are_quoted_back() {
    let flags = MailFlags {
        envid: Some(Envid::new("QQ314159 batch 7").unwrap()),
        ..no_flags()
    };
    let p = failure(
        flags,
        vec![
            rcpt(
                "u@example.test",
                Some("FAILURE"),
                Some("rfc822;Orig+2BUser@example.test"),
            ),
            rcpt(
                "v@example.test",
                None,
                Some("utf-8;j\\x{00F6}rg@example.test"),
            ),
        ],
        &[
            (0, Outcome::Bounced, "5.2.2", "550 5.2.2 mailbox full"),
            (1, Outcome::Bounced, "5.0.0", "mail forwarding loop"),
        ],
    );
    let blocks = p.parts[1].blocks();
    assert_eq!(blocks.len(), 3);
    assert_eq!(
        lookup(&blocks[0], "Original-Envelope-Id"),
        Some("QQ314159 batch 7")
    );
    assert_eq!(
        lookup(&blocks[1], "Original-Recipient"),
        Some("rfc822;Orig+User@example.test")
    );
    assert_eq!(
        lookup(&blocks[1], "Diagnostic-Code"),
        Some("smtp; 550 5.2.2 mailbox full")
    );
    assert_eq!(lookup(&blocks[1], "Remote-MTA"), None);
    // Not an SMTPUTF8 message: the utf-8 ORCPT keeps its escapes, and the report is 7-bit.
    assert_eq!(
        lookup(&blocks[2], "Original-Recipient"),
        Some("utf-8;j\\x{F6}rg@example.test")
    );
    assert_eq!(
        lookup(&blocks[2], "Diagnostic-Code"),
        Some("x-postern; mail forwarding loop")
    );
    assert!(p.parts[1].body.is_ascii());
}

#[test]
fn a_delay_warning_says_until_when_and_returns_headers() {
    let env = envelope(
        "sender@example.org",
        no_flags(),
        vec![rcpt("slow@example.net", None, None)],
    );
    let (r, returned) = report_for(
        &config(),
        NoticeKind::Delay,
        &env,
        MESSAGE,
        &[(
            0,
            Outcome::Deferred,
            "4.4.1",
            "connect to mx.example.net[192.0.2.25]:25: Connection timed out",
        )],
        &[0],
    )
    .unwrap();
    assert_eq!(returned, Return::Headers);
    let p = parse(&r.text);
    assert_eq!(
        p.header("Subject"),
        Some("Delayed Mail (still being retried)")
    );
    assert!(p.parts[0].text().contains("warning only"));
    let blocks = p.parts[1].blocks();
    assert_eq!(lookup(&blocks[1], "Action"), Some("delayed"));
    assert_eq!(lookup(&blocks[1], "Status"), Some("4.4.1"));
    assert_eq!(
        lookup(&blocks[1], "Diagnostic-Code"),
        Some("x-postern; connect to mx.example.net[192.0.2.25]:25: Connection timed out")
    );
    // Arrival (22:13:20 on the 14th) plus the default five days.
    assert_eq!(
        lookup(&blocks[1], "Will-Retry-Until"),
        Some("Sun, 19 Nov 2023 22:13:20 +0000")
    );
    assert_eq!(
        p.parts[2].header("Content-Type"),
        Some("text/rfc822-headers")
    );
    assert_eq!(
        p.parts[2].header("Content-Description"),
        Some("Delayed Message Headers")
    );
}

#[test]
fn a_success_report_only_for_those_who_asked() {
    let env = envelope(
        "sender@example.org",
        no_flags(),
        vec![
            rcpt("asked@example.test", Some("SUCCESS"), None),
            rcpt("quiet@example.test", None, None),
        ],
    );
    let (r, _) = report_for(
        &config(),
        NoticeKind::Success,
        &env,
        MESSAGE,
        &[
            (0, Outcome::Delivered, "2.0.0", "delivered to maildir"),
            (1, Outcome::Delivered, "2.0.0", "delivered to maildir"),
        ],
        &[0, 1],
    )
    .unwrap();
    let p = parse(&r.text);
    assert_eq!(p.header("Subject"), Some("Successful Mail Delivery Report"));
    let blocks = p.parts[1].blocks();
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        lookup(&blocks[1], "Final-Recipient"),
        Some("rfc822; asked@example.test")
    );
    assert_eq!(lookup(&blocks[1], "Action"), Some("delivered"));
    assert_eq!(lookup(&blocks[1], "Status"), Some("2.0.0"));
    assert_eq!(
        p.parts[2].header("Content-Description"),
        Some("Delivered Message Headers")
    );
}

#[test]
fn a_bounce_that_bounces_goes_to_the_postmaster_once() {
    let bounced = [(0, Outcome::Bounced, "5.1.1", "550 5.1.1 no such user")];
    let env = envelope("", no_flags(), vec![rcpt("gone@example.net", None, None)]);
    let (r, _) = report_for(
        &config(),
        NoticeKind::Failure,
        &env,
        MESSAGE,
        &bounced,
        &[0],
    )
    .unwrap();
    assert_eq!(
        r.recipients,
        vec![ForwardPath::parse("<postmaster@mx.example.test>", false).unwrap()]
    );
    let p = parse(&r.text);
    assert_eq!(p.header("To"), Some("postmaster@mx.example.test"));
    assert_eq!(
        p.header("Subject"),
        Some("Postmaster Copy: Undelivered Mail")
    );
    assert_eq!(lookup(&p.parts[1].blocks()[0], "X-Postern-Sender"), None);

    // No delay warning or success report for mail from <>.
    let deferred = [(0, Outcome::Deferred, "4.4.1", "timeout")];
    assert!(report_for(&config(), NoticeKind::Delay, &env, MESSAGE, &deferred, &[0]).is_none());

    // The double bounce itself bounced: dropped.
    let env = envelope(
        "",
        no_flags(),
        vec![rcpt("Postmaster@MX.example.test", None, None)],
    );
    assert!(report_for(
        &config(),
        NoticeKind::Failure,
        &env,
        MESSAGE,
        &bounced,
        &[0]
    )
    .is_none());
}

#[test]
fn smtputf8_messages_get_the_global_forms() {
    let flags = MailFlags {
        smtputf8: true,
        body: Some(BodyType::EightBitMime),
        ..no_flags()
    };
    let env = envelope(
        "jörg@example.org",
        flags,
        vec![rcpt(
            "josé@exämple.test",
            None,
            Some("utf-8;jos\\x{E9}@ex\\x{E4}mple.test"),
        )],
    );
    let content = "Subject: Grüße\r\nFrom: jörg@example.org\r\n\r\nHallo.\r\n".as_bytes();
    let (r, _) = report_for(
        &config(),
        NoticeKind::Failure,
        &env,
        content,
        &[(0, Outcome::Bounced, "5.1.1", "550 5.1.1 unbekannt: josé")],
        &[0],
    )
    .unwrap();
    assert!(r.flags.smtputf8);
    assert_eq!(r.flags.body, Some(BodyType::EightBitMime));
    assert_eq!(
        r.recipients,
        vec![ForwardPath::parse("<jörg@example.org>", true).unwrap()]
    );
    let p = parse(&r.text);
    assert_eq!(p.header("Content-Transfer-Encoding"), Some("8bit"));
    assert_eq!(
        p.parts[1].header("Content-Type"),
        Some("message/global-delivery-status")
    );
    let blocks = p.parts[1].blocks();
    assert_eq!(
        lookup(&blocks[0], "X-Postern-Sender"),
        Some("utf-8; jörg@example.org")
    );
    assert_eq!(
        lookup(&blocks[1], "Final-Recipient"),
        Some("utf-8; josé@exämple.test")
    );
    assert_eq!(
        lookup(&blocks[1], "Original-Recipient"),
        Some("utf-8;josé@exämple.test")
    );
    assert_eq!(
        lookup(&blocks[1], "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 unbekannt: josé")
    );
    assert_eq!(
        p.parts[0].header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(p.parts[2].header("Content-Type"), Some("message/global"));
    assert_eq!(p.parts[2].header("Content-Transfer-Encoding"), Some("8bit"));
}

#[test]
fn a_non_ascii_diagnostic_stays_7bit_outside_smtputf8() {
    let p = failure(
        no_flags(),
        vec![rcpt("u@example.test", None, None)],
        &[(0, Outcome::Bounced, "5.0.0", "Postfach voll – später")],
    );
    assert_eq!(
        lookup(&p.parts[1].blocks()[1], "Diagnostic-Code"),
        Some("x-postern; Postfach voll ? sp?ter")
    );
    assert!(p.parts[1].body.is_ascii());
}

#[test]
fn long_diagnostics_are_folded_and_never_overlong() {
    let spaced = format!("550 5.7.1 {}", "word ".repeat(200));
    let solid = format!("550 5.7.1 {}", "x".repeat(1010));
    for diag in [spaced.as_str(), solid.as_str()] {
        let diagnostic: &'static str = Box::leak(diag.trim().to_owned().into_boxed_str());
        let p = failure(
            no_flags(),
            vec![rcpt("u@example.test", None, None)],
            &[(0, Outcome::Bounced, "5.7.1", diagnostic)],
        );
        let got = lookup(&p.parts[1].blocks()[1], "Diagnostic-Code")
            .unwrap()
            .replace(' ', "");
        assert_eq!(got, format!("smtp;{}", diagnostic.replace(' ', "")));
        if diag == spaced {
            for line in p.parts[1].text().split("\r\n") {
                assert!(line.len() <= 78, "{line:?}");
            }
        }
    }
}

#[test]
fn the_boundary_never_occurs_in_the_returned_message() {
    let now = now();
    let micros = Timestamp::from_system_time(now).micros();
    let trap = format!(
        "Subject: x\r\n\r\n--{}.{micros}.1/mx.example.test\r\n",
        queue_id()
    );
    let b = boundary(queue_id(), now, 1, "mx.example.test", trap.as_bytes());
    assert_eq!(b, format!("{}.{micros}.2/mx.example.test", queue_id()));
    let long = "a".repeat(60) + ".example.test";
    assert_eq!(boundary(queue_id(), now, 1, &long, b"").len(), MAX_BOUNDARY);
}

#[test]
fn header_sections() {
    assert_eq!(
        header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
        b"A: 1\r\nB: 2\r\n"
    );
    assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
    assert_eq!(header_section(b"\r\nbody\r\n"), b"");
}

/// Python's `email` package reads the report as a `multipart/report` with the right
/// `Status:` (the whole-system delivery test checks the same on a bounced message; here on a
/// report from a real queue file).
#[test]
fn python_email_parses_the_report() {
    let env = envelope(
        "sender@example.org",
        MailFlags {
            envid: Some(Envid::new("env-1").unwrap()),
            ..no_flags()
        },
        vec![
            rcpt(
                "nobody@example.net",
                None,
                Some("rfc822;nobody@example.net"),
            ),
            rcpt("late@example.net", None, None),
        ],
    );
    let (r, _) = report_for(
        &config(),
        NoticeKind::Failure,
        &env,
        MESSAGE,
        &[
            (0, Outcome::Bounced, "5.1.1", REJECTED),
            (
                1,
                Outcome::Bounced,
                "4.4.7",
                "message expired after 5 days in the queue",
            ),
        ],
        &[0, 1],
    )
    .unwrap();
    let lines = python_summary(&r.text);
    assert_eq!(
        lines,
        [
            "type multipart/report",
            "report-type delivery-status",
            "subject Undelivered Mail Returned to Sender",
            "defects 0",
            "part text/plain",
            "part message/delivery-status",
            "part message/rfc822",
            "reporting-mta dns; mx.example.test",
            "envid env-1",
            "recipient rfc822; nobody@example.net failed 5.1.1",
            "recipient rfc822; late@example.net failed 4.4.7",
            "returned-subject quarterly figures",
        ]
    );
}

/// What Python's `email` sees in a report, one fact a line.
pub(crate) fn python_summary(report: &[u8]) -> Vec<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const SCRIPT: &str = r#"
import sys, email
from email import policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.compat32)
print("type", msg.get_content_type())
print("report-type", msg.get_param("report-type"))
print("subject", msg["Subject"])
print("defects", len(msg.defects) + sum(len(p.defects) for p in msg.walk()))
parts = msg.get_payload()
for p in parts:
    print("part", p.get_content_type())
blocks = parts[1].get_payload()
print("reporting-mta", blocks[0]["Reporting-MTA"])
if blocks[0]["Original-Envelope-Id"]:
    print("envid", blocks[0]["Original-Envelope-Id"])
for b in blocks[1:]:
    print("recipient", b["Final-Recipient"], b["Action"], b["Status"])
if parts[2].get_content_type() == "message/rfc822":
    print("returned-subject", parts[2].get_payload()[0]["Subject"])
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(report).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
