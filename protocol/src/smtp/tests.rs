use proptest::prelude::*;

use super::*;
use crate::address::{Mailbox, Path};
use crate::testing::{host, path};

fn parse(s: &str) -> Result<Command, CommandError> {
    Command::parse(s.as_bytes())
}

fn mailbox(s: &str) -> Mailbox {
    Mailbox::parse(s, true).unwrap()
}

fn reply_text(e: &CommandError) -> String {
    e.reply().to_string()
}

#[test]
fn simple_verbs_in_any_case() {
    assert_eq!(parse("DATA"), Ok(Command::Data));
    assert_eq!(parse("data"), Ok(Command::Data));
    assert_eq!(parse("RsEt"), Ok(Command::Rset));
    assert_eq!(parse("QUIT"), Ok(Command::Quit));
    assert_eq!(parse("NOOP"), Ok(Command::Noop));
    assert_eq!(parse("NOOP anything at all"), Ok(Command::Noop));
    assert_eq!(parse("STARTTLS"), Ok(Command::Starttls));
    assert_eq!(parse("HELP"), Ok(Command::Help(None)));
    assert_eq!(parse("help  MAIL "), Ok(Command::Help(Some("MAIL".into()))));
    assert_eq!(
        parse("VRFY  postmaster"),
        Ok(Command::Vrfy("postmaster".into()))
    );
    assert_eq!(
        parse("EXPN staff list"),
        Ok(Command::Expn("staff list".into()))
    );
    assert_eq!(
        parse("AUTH PLAIN AGZvbwBiYXI="),
        Ok(Command::Auth("PLAIN AGZvbwBiYXI=".into()))
    );
    assert_eq!(
        parse("XCLIENT NAME=x"),
        Ok(Command::Unknown("XCLIENT".into()))
    );
    assert_eq!(
        parse("etrn example.test").map(|c| c.verb().to_owned()),
        Ok("etrn".into())
    );
}

#[test]
fn white_space_at_the_ends_and_between_words_is_tolerated() {
    assert_eq!(parse("  DATA \t "), Ok(Command::Data));
    assert_eq!(
        parse("MAIL FROM:<a@example.test>   SIZE=10\tBODY=8BITMIME "),
        parse("MAIL FROM:<a@example.test> SIZE=10 BODY=8BITMIME")
    );
    assert_eq!(
        parse("BDAT  10   LAST"),
        Ok(Command::Bdat {
            size: 10,
            last: true
        })
    );
}

#[test]
fn helo_and_ehlo_take_one_host() {
    let host = Host::parse("client.example.test", false).unwrap();
    assert_eq!(
        parse("HELO client.example.test"),
        Ok(Command::Helo(host.clone()))
    );
    assert_eq!(parse("ehlo client.example.test"), Ok(Command::Ehlo(host)));
    assert!(matches!(
        parse("EHLO [192.0.2.1]"),
        Ok(Command::Ehlo(Host::Literal(_)))
    ));
    assert!(matches!(
        parse("EHLO [IPv6:2001:db8::1]"),
        Ok(Command::Ehlo(Host::Literal(_)))
    ));
    assert!(matches!(
        parse("EHLO bücher.example"),
        Ok(Command::Ehlo(Host::Domain(_)))
    ));
    assert_eq!(
        parse("EHLO"),
        Err(CommandError::HeloSyntax { verb: "EHLO" })
    );
    assert_eq!(
        parse("HELO a.example b.example"),
        Err(CommandError::HeloSyntax { verb: "HELO" })
    );
    let bad = parse("EHLO bad_name!").unwrap_err();
    assert!(matches!(&bad, CommandError::BadHeloHostname { name, .. } if name == "bad_name!"));
    assert_eq!(
        reply_text(&bad),
        "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name\r\n"
    );
    assert_eq!(
        reply_text(&CommandError::HeloSyntax { verb: "EHLO" }),
        "501 Syntax: EHLO hostname\r\n"
    );
}

#[test]
fn mail_with_every_parameter() {
    let cmd = parse(
        "mail from:<a@example.test> size=1000 body=8bitmime smtputf8 ret=hdrs envid=QQ+2B1 auth=<>",
    )
    .unwrap();
    let Command::Mail { from, params } = &cmd else {
        panic!("{cmd:?}");
    };
    assert_eq!(from, &ReversePath::Mailbox(mailbox("a@example.test")));
    assert_eq!(params.size, Some(1000));
    assert_eq!(params.body, Some(BodyType::EightBitMime));
    assert!(params.smtputf8);
    assert_eq!(params.ret, Some(Ret::Hdrs));
    assert_eq!(params.envid.as_ref().map(Envid::as_str), Some("QQ+1"));
    assert_eq!(
        cmd.to_string(),
        "MAIL FROM:<a@example.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1"
    );
    assert_eq!(
        parse("MAIL FROM:<>"),
        Ok(Command::Mail {
            from: ReversePath::Null,
            params: MailParams::default()
        })
    );
}

#[test]
fn space_after_the_colon_is_tolerated() {
    let expected = parse("MAIL FROM:<a@example.test>").unwrap();
    assert_eq!(parse("MAIL FROM: <a@example.test>"), Ok(expected.clone()));
    assert_eq!(parse("MAIL FROM:\t <a@example.test>"), Ok(expected));
    assert!(matches!(
        parse("RCPT TO: <b@example.test>"),
        Ok(Command::Rcpt { .. })
    ));
    // Not before the colon, and not inside the keyword.
    assert_eq!(
        parse("MAIL FROM :<a@example.test>"),
        Err(CommandError::MailSyntax)
    );
    assert_eq!(
        parse("MAIL FR OM:<a@example.test>"),
        Err(CommandError::MailSyntax)
    );
}

#[test]
fn mail_syntax_and_address_errors() {
    for line in [
        "MAIL",
        "MAIL FROM:",
        "MAIL TO:<a@example.test>",
        "MAIL <a@example.test>",
    ] {
        let e = parse(line).unwrap_err();
        assert_eq!(e, CommandError::MailSyntax, "{line}");
        assert_eq!(reply_text(&e), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    }
    for line in [
        "MAIL FROM:a@example.test>",
        "MAIL FROM:<a@example.test",
        "MAIL FROM:<a@example.test>SIZE=1",
        "MAIL FROM:<a@@example.test>",
        "MAIL FROM:<Postmaster>",
        "MAIL FROM:<a@example.test> (comment)",
    ] {
        let e = parse(line).unwrap_err();
        if line.ends_with("(comment)") {
            assert!(
                matches!(e, CommandError::UnsupportedParameter { .. }),
                "{line}"
            );
            continue;
        }
        assert!(matches!(e, CommandError::BadSender(_)), "{line}: {e:?}");
        assert_eq!(reply_text(&e), "501 5.1.7 Bad sender address syntax\r\n");
    }
}

#[test]
fn quoted_local_parts_may_hold_spaces_and_brackets() {
    let cmd = parse(r#"MAIL FROM:<"a > b"@example.test> SIZE=5"#).unwrap();
    let Command::Mail { from, params } = cmd else {
        panic!()
    };
    assert_eq!(from.mailbox().unwrap().local_part(), "a > b");
    assert_eq!(params.size, Some(5));
}

#[test]
fn utf8_paths_need_smtputf8_on_mail() {
    let e = parse("MAIL FROM:<jürgen@bücher.example>").unwrap_err();
    assert_eq!(e, CommandError::Smtputf8Required);
    assert_eq!(
        reply_text(&e),
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
    );
    let cmd = parse("MAIL FROM:<jürgen@bücher.example> SMTPUTF8").unwrap();
    assert!(cmd.needs_smtputf8());
    // RCPT parses; the session checks its transaction.
    let rcpt = parse("RCPT TO:<jürgen@bücher.example>").unwrap();
    assert!(rcpt.needs_smtputf8());
    assert!(!parse("RCPT TO:<a@example.test>").unwrap().needs_smtputf8());
}

#[test]
fn bad_address_is_reported_before_bad_parameter() {
    assert!(matches!(
        parse("MAIL FROM:<a@@x> FOO=1"),
        Err(CommandError::BadSender(_))
    ));
    assert!(matches!(
        parse("MAIL FROM:<ü@x> FOO=1"),
        Err(CommandError::UnsupportedParameter { .. })
    ));
}

#[test]
fn mail_parameter_errors() {
    let cases: &[(&str, CommandError, &str)] = &[
        (
            "SIZE=",
            CommandError::BadParameter { param: Param::Size },
            "501 5.5.4 Bad message size syntax",
        ),
        (
            "SIZE=-1",
            CommandError::BadParameter { param: Param::Size },
            "501 5.5.4 Bad message size syntax",
        ),
        (
            "SIZE=1 SIZE=2",
            CommandError::DuplicateParameter { param: Param::Size },
            "501 5.5.4 Bad message size syntax",
        ),
        (
            "SIZE=99999999999999999999",
            CommandError::SizeOverflow,
            "552 5.3.4 Message size exceeds file system imposed limit",
        ),
        (
            "RET=NONE",
            CommandError::BadParameter { param: Param::Ret },
            "501 5.5.4 Bad RET parameter syntax",
        ),
        (
            "RET=FULL RET=HDRS",
            CommandError::DuplicateParameter { param: Param::Ret },
            "501 5.5.4 Bad RET parameter syntax",
        ),
        (
            "ENVID=a=b",
            CommandError::BadParameter {
                param: Param::Envid,
            },
            "501 5.5.4 Bad ENVID parameter syntax",
        ),
        (
            "ENVID=",
            CommandError::BadParameter {
                param: Param::Envid,
            },
            "501 5.5.4 Bad ENVID parameter syntax",
        ),
        (
            "ENVID=+0A",
            CommandError::BadParameter {
                param: Param::Envid,
            },
            "501 5.5.4 Bad ENVID parameter syntax",
        ),
        (
            "ENVID=a ENVID=b",
            CommandError::DuplicateParameter {
                param: Param::Envid,
            },
            "501 5.5.4 Bad ENVID parameter syntax",
        ),
        (
            "AUTH=<> AUTH=<>",
            CommandError::DuplicateParameter { param: Param::Auth },
            "503 5.5.4 Error: multiple AUTH= options",
        ),
        (
            "BODY=7BIT BODY=7BIT",
            CommandError::DuplicateParameter { param: Param::Body },
            "501 5.5.4 Error: duplicate BODY parameter",
        ),
        (
            "SMTPUTF8 SMTPUTF8",
            CommandError::DuplicateParameter {
                param: Param::Smtputf8,
            },
            "501 5.5.4 Error: duplicate SMTPUTF8 parameter",
        ),
        (
            "BODY=8BIT",
            CommandError::UnsupportedParameter {
                param: "BODY=8BIT".into(),
            },
            "555 5.5.4 Unsupported option: BODY=8BIT",
        ),
        (
            "SMTPUTF8=yes",
            CommandError::UnsupportedParameter {
                param: "SMTPUTF8=yes".into(),
            },
            "555 5.5.4 Unsupported option: SMTPUTF8=yes",
        ),
        (
            "XVERP",
            CommandError::UnsupportedParameter {
                param: "XVERP".into(),
            },
            "555 5.5.4 Unsupported option: XVERP",
        ),
        (
            "AUTH=",
            CommandError::UnsupportedParameter {
                param: "AUTH=".into(),
            },
            "555 5.5.4 Unsupported option: AUTH=",
        ),
        (
            "NOTIFY=NEVER",
            CommandError::UnsupportedParameter {
                param: "NOTIFY=NEVER".into(),
            },
            "555 5.5.4 Unsupported option: NOTIFY=NEVER",
        ),
        (
            "size",
            CommandError::UnsupportedParameter {
                param: "size".into(),
            },
            "555 5.5.4 Unsupported option: size",
        ),
    ];
    for (params, error, reply) in cases {
        let line = format!("MAIL FROM:<a@example.test> {params}");
        let got = parse(&line).unwrap_err();
        assert_eq!(&got, error, "{line}");
        assert_eq!(reply_text(&got), format!("{reply}\r\n"), "{line}");
    }
}

#[test]
fn rcpt_with_dsn_parameters() {
    let cmd =
        parse("RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.test")
            .unwrap();
    let Command::Rcpt { to, params } = &cmd else {
        panic!()
    };
    assert_eq!(to, &ForwardPath::Mailbox(mailbox("b@example.test")));
    assert_eq!(
        params.notify,
        Some(Notify {
            success: true,
            failure: true,
            delay: false
        })
    );
    assert_eq!(params.orcpt.as_ref().unwrap().address(), "b+x@example.test");
    assert_eq!(
        cmd.to_string(),
        "RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.test"
    );
    assert_eq!(
        parse("RCPT TO:<postmaster>"),
        Ok(Command::Rcpt {
            to: ForwardPath::Postmaster,
            params: RcptParams::default()
        })
    );
}

#[test]
fn paths_without_brackets_are_taken_as_postfix_takes_them() {
    assert_eq!(
        parse("MAIL FROM:a@example.test SIZE=10").unwrap(),
        parse("MAIL FROM:<a@example.test> SIZE=10").unwrap()
    );
    assert_eq!(
        parse("RCPT TO: b@example.test NOTIFY=NEVER").unwrap(),
        parse("RCPT TO:<b@example.test> NOTIFY=NEVER").unwrap()
    );
    assert!(matches!(
        parse("MAIL FROM:a@example.test<x>").unwrap_err(),
        CommandError::BadSender(_)
    ));
}

#[test]
fn rcpt_errors() {
    for line in ["RCPT", "RCPT TO:", "RCPT FROM:<a@example.test>"] {
        let e = parse(line).unwrap_err();
        assert_eq!(e, CommandError::RcptSyntax, "{line}");
        assert_eq!(reply_text(&e), "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    }
    for line in ["RCPT TO:<>", "RCPT TO:b@example.test>", "RCPT TO:<b@>"] {
        let e = parse(line).unwrap_err();
        assert!(matches!(e, CommandError::BadRecipient(_)), "{line}");
        assert_eq!(reply_text(&e), "501 5.1.3 Bad recipient address syntax\r\n");
    }
    let cases: &[(&str, &str)] = &[
        (
            "NOTIFY=ALWAYS",
            "501 5.5.4 Error: Bad NOTIFY parameter syntax",
        ),
        (
            "NOTIFY=NEVER,DELAY",
            "501 5.5.4 Error: Bad NOTIFY parameter syntax",
        ),
        (
            "NOTIFY=DELAY NOTIFY=DELAY",
            "501 5.5.4 Error: Bad NOTIFY parameter syntax",
        ),
        (
            "ORCPT=b@example.test",
            "501 5.5.4 Error: Bad ORCPT parameter syntax",
        ),
        (
            "ORCPT=rfc822;a ORCPT=rfc822;b",
            "501 5.5.4 Error: Bad ORCPT parameter syntax",
        ),
        ("SIZE=10", "555 5.5.4 Unsupported option: SIZE=10"),
    ];
    for (params, reply) in cases {
        let line = format!("RCPT TO:<b@example.test> {params}");
        assert_eq!(
            reply_text(&parse(&line).unwrap_err()),
            format!("{reply}\r\n"),
            "{line}"
        );
    }
}

#[test]
fn bdat_count_and_last() {
    assert_eq!(
        parse("BDAT 0 LAST"),
        Ok(Command::Bdat {
            size: 0,
            last: true
        })
    );
    assert_eq!(
        parse("bdat 1000 last"),
        Ok(Command::Bdat {
            size: 1000,
            last: true
        })
    );
    assert_eq!(
        parse("BDAT 007"),
        Ok(Command::Bdat {
            size: 7,
            last: false
        })
    );
    for line in [
        "BDAT",
        "BDAT x",
        "BDAT -1",
        "BDAT +1",
        "BDAT 1 FIRST",
        "BDAT 1 LAST X",
        "BDAT 99999999999999999999",
    ] {
        let e = parse(line).unwrap_err();
        assert_eq!(e, CommandError::BdatSyntax, "{line}");
        assert!(e.ends_session());
        assert_eq!(reply_text(&e), "521 5.5.4 Syntax: BDAT count [LAST]\r\n");
    }
}

#[test]
fn argument_errors() {
    for (line, reply) in [
        ("DATA x", "501 5.5.4 Syntax: DATA"),
        ("RSET now", "501 5.5.4 Syntax: RSET"),
        ("QUIT please", "501 5.5.4 Syntax: QUIT"),
        ("STARTTLS x", "501 5.5.4 Syntax: STARTTLS"),
        ("VRFY", "501 5.5.4 Syntax: VRFY address"),
        ("EXPN ", "501 5.5.4 Syntax: EXPN mailing-list"),
        ("AUTH", "501 5.5.4 Syntax: AUTH mechanism"),
    ] {
        let e = parse(line).unwrap_err();
        assert!(!e.ends_session());
        assert_eq!(reply_text(&e), format!("{reply}\r\n"), "{line}");
    }
}

#[test]
fn line_level_errors() {
    assert_eq!(parse(""), Err(CommandError::Empty));
    assert_eq!(parse(" \t "), Err(CommandError::Empty));
    assert_eq!(
        reply_text(&CommandError::Empty),
        "500 5.5.2 Error: bad syntax\r\n"
    );
    assert_eq!(
        parse("NOOP\0"),
        Err(CommandError::ControlCharacter { offset: 4 })
    );
    assert_eq!(
        parse("DATA\r"),
        Err(CommandError::ControlCharacter { offset: 4 })
    );
    assert_eq!(
        parse("VRFY a\nb"),
        Err(CommandError::ControlCharacter { offset: 6 })
    );
    assert_eq!(
        parse("VRFY a\u{85}"),
        Err(CommandError::ControlCharacter { offset: 6 })
    );
    let e = Command::parse(b"VRFY \xff").unwrap_err();
    assert_eq!(e, CommandError::BadUtf8 { offset: 5 });
    assert_eq!(reply_text(&e), "500 5.5.2 Error: bad UTF-8 syntax\r\n");
    let long = format!("NOOP {}", "x".repeat(MAX_COMMAND_LINE));
    let e = parse(&long).unwrap_err();
    assert_eq!(e, CommandError::LineTooLong { len: long.len() });
    assert_eq!(reply_text(&e), "500 5.5.2 Error: line too long\r\n");
    assert!(parse(&long[..MAX_COMMAND_LINE]).is_ok());
}

#[test]
fn quoted_client_text_is_printable_and_short() {
    let line = format!("MAIL FROM:<a@example.test> X{}=é", "y".repeat(300));
    let CommandError::UnsupportedParameter { param } = parse(&line).unwrap_err() else {
        panic!()
    };
    assert_eq!(param.len(), reply::MAX_QUOTED_LEN);
    assert!(param.bytes().all(|b| (b' '..=b'~').contains(&b)));
    let e = parse("EHLO ü_ü").unwrap_err();
    assert!(reply_text(&e).starts_with("501 5.5.2 <?_?>:"));
}

#[test]
fn unknown_command_reply() {
    assert_eq!(
        Reply::unrecognized().to_string(),
        "502 5.5.2 Error: command not recognized\r\n"
    );
}

fn mail_params() -> impl Strategy<Value = MailParams> {
    (
        proptest::option::of(any::<u64>()),
        proptest::option::of(prop_oneof![
            Just(BodyType::SevenBit),
            Just(BodyType::EightBitMime),
            Just(BodyType::BinaryMime)
        ]),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)]),
        proptest::option::of("[ -~]{1,100}".prop_map(|s| Envid::new(&s).unwrap())),
    )
        .prop_map(|(size, body, smtputf8, ret, envid)| MailParams {
            size,
            body,
            smtputf8,
            ret,
            envid,
        })
}

fn rcpt_params() -> impl Strategy<Value = RcptParams> {
    (
        proptest::option::of((any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(success, failure, delay)| Notify {
                success,
                failure,
                delay,
            },
        )),
        proptest::option::of(
            ("(rfc822|utf-8|x400)", "[^\\p{Cc}]{1,60}")
                .prop_map(|(t, a)| OriginalRecipient::new(&t, &a).unwrap()),
        ),
    )
        .prop_map(|(notify, orcpt)| RcptParams { notify, orcpt })
}

const TEXT: &str = "[!-~]([ -~]{0,30}[!-~])?";

pub(crate) fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        host().prop_map(Command::Helo),
        host().prop_map(Command::Ehlo),
        (path(), mail_params()).prop_filter_map("reverse path", |(p, mut params)| {
            let from = ReversePath::try_from(p).ok()?;
            params.smtputf8 |= from.mailbox().is_some_and(|m| !m.is_ascii());
            Some(Command::Mail { from, params })
        }),
        (path(), rcpt_params()).prop_filter_map("forward path", |(p, params)| {
            Some(Command::Rcpt {
                to: ForwardPath::try_from(p).ok()?,
                params,
            })
        }),
        Just(Command::Data),
        (any::<u64>(), any::<bool>()).prop_map(|(size, last)| Command::Bdat { size, last }),
        Just(Command::Rset),
        Just(Command::Noop),
        Just(Command::Quit),
        TEXT.prop_map(Command::Vrfy),
        TEXT.prop_map(Command::Expn),
        proptest::option::of(TEXT).prop_map(Command::Help),
        Just(Command::Starttls),
        TEXT.prop_map(Command::Auth),
        "X[A-Z]{0,8}".prop_map(Command::Unknown),
    ]
}

proptest! {
    #[test]
    fn display_parses_back(cmd in command()) {
        let line = cmd.to_string();
        prop_assert_eq!(Command::parse(line.as_bytes()), Ok(cmd.clone()), "{}", line);
        prop_assert_eq!(cmd.verb().to_ascii_uppercase(), cmd.verb().to_owned());
    }

    #[test]
    fn errors_have_valid_replies(line in "[ -~]{0,60}") {
        if let Err(e) = Command::parse(line.as_bytes()) {
            let r = e.reply();
            prop_assert!(r.is_error());
            let enhanced = r.enhanced().map(|s| (s.class(), s.subject(), s.detail()));
            prop_assert_eq!(Reply::new(r.code(), enhanced, r.lines().to_vec()), Ok(r));
        }
    }
}

#[test]
fn display_of_paths_is_the_path_display() {
    let p = Path::Mailbox(mailbox("\"a b\"@example.test"));
    let from = ReversePath::try_from(p).unwrap();
    let cmd = Command::Mail {
        from,
        params: MailParams::default(),
    };
    assert_eq!(cmd.to_string(), "MAIL FROM:<\"a b\"@example.test>");
}
