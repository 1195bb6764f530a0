//! The SMTP server side of RFC 5321 with the extensions Postern offers: command
//! lines parsed into [`Command`]s (this module), their parameters ([`params`]) and
//! the replies ([`reply`]).
//!
//! Trusts: nothing. A command line is whatever a remote client sent, without its
//! CRLF; [`Command::parse`] either returns a validated command or a
//! [`CommandError`] that knows its reply. Errors keep client text only after
//! [`printable`] has made it safe to quote.
//!
//! Tolerated beyond the RFC grammar, as Postfix tolerates it:
//! - verbs, `FROM:`/`TO:`, parameter keywords and keyword values in any case;
//! - white space (spaces or tabs) after the colon of `MAIL FROM:` and `RCPT TO:`;
//! - runs of white space between arguments, and white space at the start and end
//!   of the line;
//! - `NOOP` with an argument, which RFC 5321 allows and Postfix refuses;
//! - a path without angle brackets (`MAIL FROM:user@example.com`), as Postfix
//!   accepts it without `strict_rfc821_envelopes`: the first word is the address.
//!
//! Refused although Postfix accepts it (without `strict_rfc821_envelopes`): RFC
//! 822 comments and phrases around a path, and more than one word after HELO or EHLO. Refused
//! anywhere in a line: control characters other than tab, and bytes that are not
//! UTF-8.

pub mod data;
pub mod params;
pub mod reply;

use std::fmt;

use crate::address::{AddressError, ForwardPath, Host, ReversePath};
pub use params::{
    BodyType, Envid, MailParams, Notify, OriginalRecipient, ParamError, RcptParams, Ret,
};
pub use reply::{printable, EnhancedStatus, Reply, StatusError};

/// The longest command line this parser looks at, without its CRLF. Postfix's
/// `line_length_limit` defaults to 2048, and the longest valid command (a RCPT
/// with a 256-octet path, an ORCPT of 500 characters in xtext and NOTIFY) stays
/// well below it; smtpd refuses longer lines before they get here.
pub const MAX_COMMAND_LINE: usize = 2048;

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(Host),
    Ehlo(Host),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
        params: RcptParams,
    },
    Data,
    /// RFC 3030: a chunk of `size` octets follows the command line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    /// The argument as sent (printable, no control characters).
    Vrfy(String),
    Expn(String),
    Help(Option<String>),
    Starttls,
    /// Recognized so that it gets a proper reply; the mechanism and initial
    /// response are not parsed.
    Auth(String),
    /// A verb this server does not know, kept for logging.
    Unknown(String),
}

/// Which ESMTP parameter an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Size,
    Body,
    Smtputf8,
    Ret,
    Envid,
    Auth,
    Notify,
    Orcpt,
}

impl Param {
    pub fn keyword(&self) -> &'static str {
        match self {
            Param::Size => "SIZE",
            Param::Body => "BODY",
            Param::Smtputf8 => "SMTPUTF8",
            Param::Ret => "RET",
            Param::Envid => "ENVID",
            Param::Auth => "AUTH",
            Param::Notify => "NOTIFY",
            Param::Orcpt => "ORCPT",
        }
    }
}

/// Why a command line is not a valid command. [`CommandError::reply`] gives the
/// reply Postfix sends for the same mistake:
///
/// | error | reply |
/// |---|---|
/// | `LineTooLong` | `500 5.5.2 Error: line too long` |
/// | `Empty`, `ControlCharacter` | `500 5.5.2 Error: bad syntax` |
/// | `BadUtf8` | `500 5.5.2 Error: bad UTF-8 syntax` |
/// | `HeloSyntax` | `501 Syntax: HELO hostname` / `501 Syntax: EHLO hostname` (no enhanced code: RFC 2034 exempts HELO and EHLO) |
/// | `BadHeloHostname` | `501 5.5.2 <name>: Helo command rejected: Invalid name` |
/// | `MailSyntax` | `501 5.5.4 Syntax: MAIL FROM:<address>` |
/// | `RcptSyntax` | `501 5.5.4 Syntax: RCPT TO:<address>` |
/// | `BadSender` | `501 5.1.7 Bad sender address syntax` |
/// | `BadRecipient` | `501 5.1.3 Bad recipient address syntax` |
/// | `Smtputf8Required` | `553 5.6.7 Must declare SMTPUTF8 to send unicode address` |
/// | `BadParameter`/`DuplicateParameter` SIZE | `501 5.5.4 Bad message size syntax` |
/// | `SizeOverflow` | `552 5.3.4 Message size exceeds file system imposed limit` |
/// | `BadParameter`/`DuplicateParameter` RET | `501 5.5.4 Bad RET parameter syntax` |
/// | `BadParameter`/`DuplicateParameter` ENVID | `501 5.5.4 Bad ENVID parameter syntax` |
/// | `BadParameter`/`DuplicateParameter` NOTIFY | `501 5.5.4 Error: Bad NOTIFY parameter syntax` |
/// | `BadParameter`/`DuplicateParameter` ORCPT | `501 5.5.4 Error: Bad ORCPT parameter syntax` |
/// | `DuplicateParameter` AUTH | `503 5.5.4 Error: multiple AUTH= options` |
/// | `DuplicateParameter` BODY, SMTPUTF8 | `501 5.5.4 Error: duplicate BODY parameter` (Postfix lets the last one win; Postern refuses) |
/// | `UnsupportedParameter` | `555 5.5.4 Unsupported option: <param>` |
/// | `NoArguments` | `501 5.5.4 Syntax: DATA` (or `RSET`, `QUIT`, `STARTTLS`) |
/// | `MissingArgument` | `501 5.5.4 Syntax: VRFY address` (or `EXPN mailing-list`, `AUTH mechanism`) |
/// | `BdatSyntax` | `521 5.5.4 Syntax: BDAT count [LAST]`, and the session ends: the chunk's length is unknown, so the stream cannot be followed |
///
/// A verb that is not known at all is no error but [`Command::Unknown`], answered
/// with [`Reply::unrecognized`] (`502 5.5.2 Error: command not recognized`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command line is {len} octets, more than {MAX_COMMAND_LINE}")]
    LineTooLong { len: usize },
    #[error("command line is empty")]
    Empty,
    #[error("command line has a control character at octet {offset}")]
    ControlCharacter { offset: usize },
    #[error("command line is not UTF-8 (octet {offset})")]
    BadUtf8 { offset: usize },
    #[error("{verb} needs exactly one host name")]
    HeloSyntax { verb: &'static str },
    #[error("HELO/EHLO name {name:?} is not a domain or address literal: {reason}")]
    BadHeloHostname { name: String, reason: AddressError },
    #[error("MAIL is not followed by FROM:<address>")]
    MailSyntax,
    #[error("RCPT is not followed by TO:<address>")]
    RcptSyntax,
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    #[error("non-ASCII address without SMTPUTF8")]
    Smtputf8Required,
    #[error("{} parameter has a bad value", .param.keyword())]
    BadParameter { param: Param },
    #[error("{} parameter given twice", .param.keyword())]
    DuplicateParameter { param: Param },
    #[error("SIZE parameter does not fit in 64 bits")]
    SizeOverflow,
    #[error("unsupported parameter {param:?}")]
    UnsupportedParameter { param: String },
    #[error("{verb} takes no argument")]
    NoArguments { verb: &'static str },
    #[error("{verb} needs an argument")]
    MissingArgument { verb: &'static str },
    #[error("BDAT is not followed by a chunk size and an optional LAST")]
    BdatSyntax,
}

impl CommandError {
    /// The reply to send for this error (see the table on [`CommandError`]).
    pub fn reply(&self) -> Reply {
        let (code, (class, subject, detail), text) = match self {
            CommandError::LineTooLong { .. } => return Reply::line_too_long(),
            CommandError::Empty | CommandError::ControlCharacter { .. } => {
                (500, (5, 5, 2), "Error: bad syntax".to_owned())
            }
            CommandError::BadUtf8 { .. } => (500, (5, 5, 2), "Error: bad UTF-8 syntax".to_owned()),
            CommandError::HeloSyntax { verb } => {
                return Reply::fixed(501, None, format!("Syntax: {verb} hostname"))
            }
            CommandError::BadHeloHostname { name, .. } => (
                501,
                (5, 5, 2),
                format!("<{name}>: Helo command rejected: Invalid name"),
            ),
            CommandError::MailSyntax => (501, (5, 5, 4), "Syntax: MAIL FROM:<address>".to_owned()),
            CommandError::RcptSyntax => (501, (5, 5, 4), "Syntax: RCPT TO:<address>".to_owned()),
            CommandError::BadSender(_) => (501, (5, 1, 7), "Bad sender address syntax".to_owned()),
            CommandError::BadRecipient(_) => {
                (501, (5, 1, 3), "Bad recipient address syntax".to_owned())
            }
            CommandError::Smtputf8Required => return Reply::smtputf8_required(),
            CommandError::BadParameter { param } | CommandError::DuplicateParameter { param } => {
                let duplicate = matches!(self, CommandError::DuplicateParameter { .. });
                match param {
                    Param::Size => (501, (5, 5, 4), "Bad message size syntax".to_owned()),
                    Param::Ret => (501, (5, 5, 4), "Bad RET parameter syntax".to_owned()),
                    Param::Envid => (501, (5, 5, 4), "Bad ENVID parameter syntax".to_owned()),
                    Param::Notify => (
                        501,
                        (5, 5, 4),
                        "Error: Bad NOTIFY parameter syntax".to_owned(),
                    ),
                    Param::Orcpt => (
                        501,
                        (5, 5, 4),
                        "Error: Bad ORCPT parameter syntax".to_owned(),
                    ),
                    Param::Auth if duplicate => {
                        (503, (5, 5, 4), "Error: multiple AUTH= options".to_owned())
                    }
                    Param::Auth | Param::Body | Param::Smtputf8 if duplicate => (
                        501,
                        (5, 5, 4),
                        format!("Error: duplicate {} parameter", param.keyword()),
                    ),
                    Param::Auth | Param::Body | Param::Smtputf8 => (
                        501,
                        (5, 5, 4),
                        format!("Bad {} parameter syntax", param.keyword()),
                    ),
                }
            }
            CommandError::SizeOverflow => (
                552,
                (5, 3, 4),
                "Message size exceeds file system imposed limit".to_owned(),
            ),
            CommandError::UnsupportedParameter { param } => {
                (555, (5, 5, 4), format!("Unsupported option: {param}"))
            }
            CommandError::NoArguments { verb } => (501, (5, 5, 4), format!("Syntax: {verb}")),
            CommandError::MissingArgument { verb } => {
                let what = match *verb {
                    "VRFY" => "address",
                    "EXPN" => "mailing-list",
                    _ => "mechanism",
                };
                (501, (5, 5, 4), format!("Syntax: {verb} {what}"))
            }
            CommandError::BdatSyntax => (521, (5, 5, 4), "Syntax: BDAT count [LAST]".to_owned()),
        };
        Reply::status(code, class, subject, detail, &text)
    }

    /// Whether the session must end after the reply: only a malformed BDAT, whose
    /// chunk cannot be skipped.
    pub fn ends_session(&self) -> bool {
        matches!(self, CommandError::BdatSyntax)
    }
}

fn is_space(ch: char) -> bool {
    ch == ' ' || ch == '\t'
}

impl Command {
    /// Parses one command line, without its CRLF.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.len() > MAX_COMMAND_LINE {
            return Err(CommandError::LineTooLong { len: line.len() });
        }
        let line = std::str::from_utf8(line).map_err(|e| CommandError::BadUtf8 {
            offset: e.valid_up_to(),
        })?;
        if let Some((offset, _)) = line
            .char_indices()
            .find(|&(_, ch)| ch.is_control() && ch != '\t')
        {
            return Err(CommandError::ControlCharacter { offset });
        }
        let line = line.trim_matches(is_space);
        if line.is_empty() {
            return Err(CommandError::Empty);
        }
        let (verb, rest) = match line.find(is_space) {
            Some(at) => (&line[..at], line[at..].trim_start_matches(is_space)),
            None => (line, ""),
        };
        let upper = verb.to_ascii_uppercase();
        match upper.as_str() {
            "HELO" => parse_helo(rest, "HELO").map(Command::Helo),
            "EHLO" => parse_helo(rest, "EHLO").map(Command::Ehlo),
            "MAIL" => parse_mail(rest),
            "RCPT" => parse_rcpt(rest),
            "DATA" => no_arguments(rest, "DATA", Command::Data),
            "BDAT" => parse_bdat(rest),
            "RSET" => no_arguments(rest, "RSET", Command::Rset),
            "NOOP" => Ok(Command::Noop),
            "QUIT" => no_arguments(rest, "QUIT", Command::Quit),
            "STARTTLS" => no_arguments(rest, "STARTTLS", Command::Starttls),
            "VRFY" => argument(rest, "VRFY").map(Command::Vrfy),
            "EXPN" => argument(rest, "EXPN").map(Command::Expn),
            "AUTH" => argument(rest, "AUTH").map(Command::Auth),
            "HELP" => Ok(Command::Help((!rest.is_empty()).then(|| rest.to_owned()))),
            _ => Ok(Command::Unknown(verb.to_owned())),
        }
    }

    /// The verb, in upper case, for log lines and state checks.
    pub fn verb(&self) -> &str {
        match self {
            Command::Helo(_) => "HELO",
            Command::Ehlo(_) => "EHLO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::Help(_) => "HELP",
            Command::Starttls => "STARTTLS",
            Command::Auth(_) => "AUTH",
            Command::Unknown(verb) => verb,
        }
    }

    /// Whether the command carries a non-ASCII address, which is allowed only in
    /// a transaction whose MAIL had SMTPUTF8. A MAIL command checks this for its
    /// own path while parsing; a RCPT path must be checked by the session, which
    /// knows the transaction, and refused with [`Reply::smtputf8_required`].
    pub fn needs_smtputf8(&self) -> bool {
        match self {
            Command::Mail { from, .. } => from.mailbox().is_some_and(|m| !m.is_ascii()),
            Command::Rcpt { to, .. } => to.mailbox().is_some_and(|m| !m.is_ascii()),
            _ => false,
        }
    }
}

fn no_arguments(rest: &str, verb: &'static str, command: Command) -> Result<Command, CommandError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::NoArguments { verb })
    }
}

fn argument(rest: &str, verb: &'static str) -> Result<String, CommandError> {
    if rest.is_empty() {
        Err(CommandError::MissingArgument { verb })
    } else {
        Ok(rest.to_owned())
    }
}

fn parse_helo(rest: &str, verb: &'static str) -> Result<Host, CommandError> {
    if rest.is_empty() || rest.contains(is_space) {
        return Err(CommandError::HeloSyntax { verb });
    }
    // RFC 6531 extends `sub-domain` with U-labels everywhere, EHLO included.
    Host::parse(rest, true).map_err(|reason| CommandError::BadHeloHostname {
        name: printable(rest),
        reason,
    })
}

fn parse_bdat(rest: &str) -> Result<Command, CommandError> {
    let mut words = rest.split(is_space).filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(CommandError::BdatSyntax)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::BdatSyntax),
    };
    if words.next().is_some() {
        return Err(CommandError::BdatSyntax);
    }
    Ok(Command::Bdat { size, last })
}

/// Splits `KEYWORD:<path> params` into the path (brackets included, or a bare
/// address without them) and the parameter text, or `None` when the keyword is
/// missing.
fn split_path<'a>(rest: &'a str, keyword: &str) -> Option<Result<(&'a str, &'a str), ()>> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest[keyword.len()..].trim_start_matches(is_space);
    if after.is_empty() {
        return None;
    }
    if !after.starts_with('<') {
        // Postfix without `strict_rfc821_envelopes`: a bare address is the first
        // word; the caller puts it in brackets. Brackets inside it are an error.
        let end = after.find(is_space).unwrap_or(after.len());
        let (path, params) = after.split_at(end);
        if path.contains(['<', '>']) {
            return Some(Err(()));
        }
        return Some(Ok((path, params)));
    }
    // The path ends at the first '>' outside a quoted string.
    let mut quoted = false;
    let mut escaped = false;
    for (i, ch) in after.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let (path, params) = after.split_at(i + 1);
                if !params.is_empty() && !params.starts_with(is_space) {
                    return Some(Err(()));
                }
                return Some(Ok((path, params)));
            }
            _ => {}
        }
    }
    Some(Err(()))
}

/// Splits parameter text into `(keyword, value)` pairs.
fn esmtp_params(text: &str) -> impl Iterator<Item = (&str, Option<&str>, &str)> {
    text.split(is_space)
        .filter(|w| !w.is_empty())
        .map(|word| match word.split_once('=') {
            Some((keyword, value)) => (keyword, Some(value), word),
            None => (word, None, word),
        })
}

fn unsupported(word: &str) -> CommandError {
    CommandError::UnsupportedParameter {
        param: printable(word),
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, param: Param) -> Result<(), CommandError> {
    if slot.is_some() {
        return Err(CommandError::DuplicateParameter { param });
    }
    *slot = Some(value);
    Ok(())
}

fn parse_mail_params(text: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    let mut smtputf8 = None;
    let mut auth = None;
    for (keyword, value, word) in esmtp_params(text) {
        let upper = keyword.to_ascii_uppercase();
        match (upper.as_str(), value) {
            ("SIZE", Some(v)) => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CommandError::BadParameter { param: Param::Size });
                }
                let size = v.parse::<u64>().map_err(|_| CommandError::SizeOverflow)?;
                set_once(&mut params.size, size, Param::Size)?;
            }
            ("BODY", Some(v)) => {
                let body = BodyType::parse(v).ok_or_else(|| unsupported(word))?;
                set_once(&mut params.body, body, Param::Body)?;
            }
            ("SMTPUTF8", None) => set_once(&mut smtputf8, (), Param::Smtputf8)?,
            ("RET", Some(v)) => {
                let ret = Ret::parse(v).ok_or(CommandError::BadParameter { param: Param::Ret })?;
                set_once(&mut params.ret, ret, Param::Ret)?;
            }
            ("ENVID", Some(v)) => {
                let envid = Envid::from_xtext(v).map_err(|_| CommandError::BadParameter {
                    param: Param::Envid,
                })?;
                set_once(&mut params.envid, envid, Param::Envid)?;
            }
            ("AUTH", Some(v)) if !v.is_empty() => set_once(&mut auth, (), Param::Auth)?,
            _ => return Err(unsupported(word)),
        }
    }
    params.smtputf8 = smtputf8.is_some();
    Ok(params)
}

fn parse_rcpt_params(text: &str) -> Result<RcptParams, CommandError> {
    let mut params = RcptParams::default();
    for (keyword, value, word) in esmtp_params(text) {
        let upper = keyword.to_ascii_uppercase();
        match (upper.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                let notify = Notify::parse(v).map_err(|_| CommandError::BadParameter {
                    param: Param::Notify,
                })?;
                set_once(&mut params.notify, notify, Param::Notify)?;
            }
            ("ORCPT", Some(v)) => {
                let orcpt =
                    OriginalRecipient::parse(v).map_err(|_| CommandError::BadParameter {
                        param: Param::Orcpt,
                    })?;
                set_once(&mut params.orcpt, orcpt, Param::Orcpt)?;
            }
            _ => return Err(unsupported(word)),
        }
    }
    Ok(params)
}

fn address_error(e: AddressError, wrap: fn(AddressError) -> CommandError) -> CommandError {
    match e {
        AddressError::NonAscii { .. } => CommandError::Smtputf8Required,
        e => wrap(e),
    }
}

/// A path as `split_path` found it, in angle brackets.
fn bracketed(path: &str) -> std::borrow::Cow<'_, str> {
    if path.starts_with('<') {
        path.into()
    } else {
        format!("<{path}>").into()
    }
}

fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    let (path, text) = match split_path(rest, "FROM:") {
        None => return Err(CommandError::MailSyntax),
        Some(Err(())) => return Err(CommandError::BadSender(AddressError::PathBrackets)),
        Some(Ok(split)) => split,
    };
    let path = bracketed(path);
    // Whether the path may be UTF-8 depends on this command's own SMTPUTF8
    // parameter. As in Postfix, a bad address is reported before a bad parameter.
    let params = parse_mail_params(text);
    let utf8 = params.as_ref().map_or(true, |p| p.smtputf8);
    let from =
        ReversePath::parse(&path, utf8).map_err(|e| address_error(e, CommandError::BadSender))?;
    Ok(Command::Mail {
        from,
        params: params?,
    })
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let (path, text) = match split_path(rest, "TO:") {
        None => return Err(CommandError::RcptSyntax),
        Some(Err(())) => return Err(CommandError::BadRecipient(AddressError::PathBrackets)),
        Some(Ok(split)) => split,
    };
    let path = bracketed(path);
    let to = ForwardPath::parse(&path, true)
        .map_err(|e| address_error(e, CommandError::BadRecipient))?;
    Ok(Command::Rcpt {
        to,
        params: parse_rcpt_params(text)?,
    })
}

impl fmt::Display for Command {
    /// The canonical command line, without CRLF; it parses back to the same command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Helo(host) => write!(f, "HELO {host}"),
            Command::Ehlo(host) => write!(f, "EHLO {host}"),
            Command::Mail { from, params } => write!(f, "MAIL FROM:{from}{params}"),
            Command::Rcpt { to, params } => write!(f, "RCPT TO:{to}{params}"),
            Command::Bdat { size, last: true } => write!(f, "BDAT {size} LAST"),
            Command::Bdat { size, last: false } => write!(f, "BDAT {size}"),
            Command::Vrfy(arg) | Command::Expn(arg) | Command::Auth(arg) => {
                write!(f, "{} {arg}", self.verb())
            }
            Command::Help(Some(arg)) => write!(f, "HELP {arg}"),
            _ => f.write_str(self.verb()),
        }
    }
}

#[cfg(test)]
mod tests;
