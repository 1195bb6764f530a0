//! One SMTP session: its state, the command loop, and the rules that apply to every
//! command (error and junk counting, pipelining, bare newlines, time limits). Each verb
//! is handled in its own module (`ehlo`, `mail`, `rcpt`, `data`, `bdat`, `simple`).
//!
//! Trusts: nothing the client sends (every line goes through `Command::parse`), the
//! peer address the kernel reported for the connection, and the settings in [`Config`].
//!
//! Postfix's behaviour is the reference; decisions:
//! - every 4xx or 5xx reply counts as an error (Postfix counts each failed command);
//!   at `smtpd_hard_error_limit` errors the session ends with
//!   `421 4.7.0 $myhostname Error: too many errors`; from `smtpd_soft_error_limit`
//!   errors on, each reply waits `smtpd_error_sleep_time` first;
//! - HELO, EHLO, NOOP, VRFY and RSET are junk commands: past
//!   `smtpd_junk_command_limit` of them each counts as an error; the count restarts
//!   after each queued message;
//! - pipelining (RFC 2920): after EHLO, a client may send commands without waiting,
//!   except after HELO, EHLO, DATA, NOOP, VRFY, EXPN, STARTTLS and AUTH, which must be
//!   the last of a group; before EHLO (no greeting seen, or HELO only) it must wait for
//!   every reply. Input pending at such a point is improper pipelining: it is logged
//!   and, with `smtpd_forbid_unauth_pipelining = yes`, answered with
//!   `554 5.5.0 Error: SMTP protocol synchronization`, and the session ends. BDAT is
//!   exempt: its chunk follows it by definition, and RFC 3030 lets commands follow the
//!   chunk;
//! - `smtpd_forbid_bare_newline = reject`: a command line ending in a bare LF gets
//!   `521 5.5.2 $myhostname Error: bare <LF> received` and the session ends (the code is
//!   `smtpd_forbid_bare_newline_reject_code`: 521 here, where Postfix's default is 550, because
//!   521 tells the client the server closes the session, which it does);
//! - `CONNECT`, `GET`, `POST` and any verb with a colon (an HTTP header line) are not
//!   SMTP: `521 5.7.0 Error: I can break rules, too. Goodbye.`, and the session ends
//!   (Postfix's `smtpd_forbidden_commands`);
//! - EXPN is not offered (`502 5.5.2 Error: command not recognized`, as Postfix
//!   answers it when it is disabled); STARTTLS and AUTH get `502 5.5.1 Error: command
//!   not implemented`; ETRN is an unknown command;
//! - recipients in `mydestination` and `virtual_mailbox_domains` are validated at RCPT
//!   (see `rcpt`); local accounts are asked of proxymap there, each time.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::SystemTime;

use protocol::address::{Host, ReversePath};
use protocol::cleanup::ToCleanup;
use protocol::queue::{ClientInfo, MailFlags, Protocol, Recipient};
use protocol::{Command, Reply};

use crate::config::{BareNewline, Config};
use crate::conn::{Conn, ConnError};
use crate::local_recipients::Accounts;
use crate::received::{address_text, Received};
use daemon::cleanup_client::{CleanupLink, Connect};

/// Whether the session goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// A BDAT transaction in progress.
#[derive(Debug, Default)]
pub(crate) struct Bdat {
    /// Octets stored so far (after bare LF normalisation).
    pub size: u64,
    /// Whether the last octet of the previous chunk was a CR.
    pub last_cr: bool,
    /// Once a chunk failed, every further chunk is read, discarded and answered with
    /// this reply, until `BDAT LAST` or RSET.
    pub error: Option<Reply>,
}

/// MAIL was accepted.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub sender: ReversePath,
    pub flags: MailFlags,
    pub recipients: Vec<Recipient>,
    pub bdat: Option<Bdat>,
}

pub(crate) struct Session<'a, 'c> {
    pub config: &'a Config,
    pub conn: Conn,
    pub client_ip: IpAddr,
    /// `unknown[IP]`, as Postfix names a client in its log.
    pub client: String,
    pub helo: Option<Host>,
    pub esmtp: bool,
    pub txn: Option<Transaction>,
    /// cleanup has a `Begin` for the message in progress.
    pub handed: bool,
    pub errors: u32,
    pub junk: u32,
    /// Per verb, in first-use order: (verb, accepted, sent), for the disconnect line.
    pub counts: Vec<(String, u32, u32)>,
    pub last_verb: String,
    pub link: &'a mut CleanupLink,
    pub connect: &'a mut Connect<'c>,
    /// Local accounts, asked at RCPT (proxymap in the daemon).
    pub accounts: &'a mut dyn Accounts,
}

/// Serves one SMTP connection to its end.
pub fn run(
    stream: TcpStream,
    peer: SocketAddr,
    config: &Config,
    link: &mut CleanupLink,
    connect: &mut Connect<'_>,
    accounts: &mut dyn Accounts,
) -> Result<(), ConnError> {
    let client_ip = peer.ip().to_canonical();
    let client = format!("unknown[{}]", address_text(client_ip));
    tracing::info!(client = %client, "connect");
    let conn = Conn::new(stream, config.timeout)?;
    let mut s = Session {
        config,
        conn,
        client_ip,
        client,
        helo: None,
        esmtp: false,
        txn: None,
        handed: false,
        errors: 0,
        junk: 0,
        counts: Vec::new(),
        last_verb: "CONNECT".to_owned(),
        link,
        connect,
        accounts,
    };
    let result = s.serve();
    if s.handed {
        s.link.abort();
        s.handed = false;
    }
    let outcome = match &result {
        Ok(()) => None,
        Err(ConnError::Timeout) => {
            s.conn.reply(&Reply::timeout(&s.config.myhostname));
            Some("timeout")
        }
        Err(ConnError::Closed) => Some("lost connection"),
        Err(ConnError::Io(_)) => Some("I/O error"),
    };
    if let Some(what) = outcome {
        tracing::info!(client = %s.client, after = %s.last_verb, "{what}");
    }
    s.conn.close();
    // Postfix's summary: `disconnect from unknown[ADDR] ehlo=1 mail=1 ... commands=N`.
    tracing::info!(
        errors = s.errors,
        "disconnect from {} {}",
        s.client,
        s.command_counts()
    );
    match result {
        Err(ConnError::Io(e)) => Err(ConnError::Io(e)),
        _ => Ok(()),
    }
}

/// Commands after which a client must wait for the reply (RFC 2920 section 3.1, with
/// HELO, STARTTLS and AUTH).
fn ends_group(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Helo(_)
            | Command::Ehlo(_)
            | Command::Data
            | Command::Noop
            | Command::Vrfy(_)
            | Command::Expn(_)
            | Command::Starttls
            | Command::Auth(_)
    )
}

/// Verbs that only a web client sends (Postfix's `smtpd_forbidden_commands`).
fn forbidden(verb: &str) -> bool {
    ["CONNECT", "GET", "POST"]
        .iter()
        .any(|v| v.eq_ignore_ascii_case(verb))
        || verb.contains(':')
}

impl Session<'_, '_> {
    /// Queues a reply; an error reply counts toward the error limits.
    pub fn reply(&mut self, reply: Reply) {
        if self.config.soft_error_limit > 0
            && self.errors >= self.config.soft_error_limit
            && !self.config.error_sleep.is_zero()
        {
            std::thread::sleep(self.config.error_sleep);
        }
        if reply.is_error() {
            self.errors += 1;
            tracing::info!(
                client = %self.client,
                command = %self.last_verb,
                reply = %reply.to_string().trim_end(),
                "reject"
            );
        }
        self.conn.reply(&reply);
    }

    /// A junk command (HELO, EHLO, NOOP, VRFY, RSET): past the limit, it is an error.
    fn junk_command(&mut self) {
        self.junk += 1;
        if self.junk > self.config.junk_command_limit {
            self.errors += 1;
        }
    }

    fn serve(&mut self) -> Result<(), ConnError> {
        // A client that talks before the greeting has not waited for it.
        let pregreet = self.conn.input_pending()?;
        self.conn.reply(&Reply::greeting(&self.config.banner));
        if pregreet {
            self.improper_pipelining("CONNECT");
            if self.config.forbid_unauth_pipelining {
                // Postfix answers the first command, after the greeting.
                self.conn.read_line(self.config.line_length_limit)?;
                self.conn.reply(&Reply::protocol_synchronization());
                return Ok(());
            }
        }
        loop {
            if self.errors >= self.config.hard_error_limit {
                tracing::info!(client = %self.client, errors = self.errors, "too many errors");
                self.conn
                    .reply(&Reply::too_many_errors(&self.config.myhostname));
                return Ok(());
            }
            let line = self.conn.read_line(self.config.line_length_limit)?;
            let errors_before = self.errors;
            if line.bare_lf && self.config.bare_newline == BareNewline::Reject {
                tracing::info!(client = %self.client, "bare <LF> received");
                self.conn.reply(&Reply::bare_newline(
                    self.config.bare_newline_reject_code,
                    &self.config.myhostname,
                ));
                return Ok(());
            }
            if line.too_long {
                self.last_verb = "unknown".to_owned();
                self.reply(Reply::line_too_long());
                continue;
            }
            let parsed = Command::parse(&line.text);
            self.last_verb = match &parsed {
                Ok(cmd) => protocol::smtp::printable(&cmd.verb().to_ascii_uppercase()),
                Err(_) => "unknown".to_owned(),
            };
            let must_wait = match &parsed {
                Ok(Command::Quit | Command::Bdat { .. }) => false,
                Ok(cmd) => ends_group(cmd) || !self.esmtp,
                Err(_) => !self.esmtp,
            };
            if must_wait && self.conn.input_pending()? {
                let after = self.last_verb.clone();
                self.improper_pipelining(&after);
                if self.config.forbid_unauth_pipelining {
                    self.conn.reply(&Reply::protocol_synchronization());
                    return Ok(());
                }
            }
            let flow = match parsed {
                Err(e) => {
                    let ends = e.ends_session();
                    self.reply(e.reply());
                    if ends {
                        Flow::Close
                    } else {
                        Flow::Continue
                    }
                }
                Ok(cmd) => self.command(cmd, !line.bare_lf)?,
            };
            self.count(self.errors == errors_before);
            if flow == Flow::Close {
                return Ok(());
            }
        }
    }

    /// Counts the command just handled under its verb (`unknown` for lines that are
    /// not a command).
    pub(crate) fn count(&mut self, accepted: bool) {
        let verb = if self.last_verb.len() <= 16
            && self.last_verb.bytes().all(|b| b.is_ascii_alphabetic())
        {
            self.last_verb.to_ascii_lowercase()
        } else {
            "unknown".to_owned()
        };
        let slot = match self.counts.iter().position(|(v, _, _)| *v == verb) {
            Some(at) => at,
            None => {
                self.counts.push((verb, 0, 0));
                self.counts.len() - 1
            }
        };
        let (_, ok, sent) = &mut self.counts[slot];
        *ok += u32::from(accepted);
        *sent += 1;
    }

    /// Postfix's disconnect summary: `ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6`
    /// (`accepted/sent` where some were refused).
    pub fn command_counts(&self) -> String {
        let pair = |ok: u32, sent: u32| {
            if ok == sent {
                sent.to_string()
            } else {
                format!("{ok}/{sent}")
            }
        };
        let mut text = String::new();
        let (mut ok_all, mut sent_all) = (0, 0);
        for (verb, ok, sent) in &self.counts {
            text.push_str(&format!("{verb}={} ", pair(*ok, *sent)));
            ok_all += ok;
            sent_all += sent;
        }
        text.push_str(&format!("commands={}", pair(ok_all, sent_all)));
        text
    }

    fn improper_pipelining(&mut self, after: &str) {
        tracing::info!(
            client = %self.client,
            after = %after,
            input = %protocol::smtp::printable(&self.conn.pending_text(100)),
            "improper command pipelining"
        );
    }

    /// `crlf`: the command line ended in CRLF (DATA needs it to find an empty message).
    fn command(&mut self, cmd: Command, crlf: bool) -> Result<Flow, ConnError> {
        if matches!(
            cmd,
            Command::Helo(_) | Command::Ehlo(_) | Command::Noop | Command::Vrfy(_) | Command::Rset
        ) {
            self.junk_command();
        }
        match cmd {
            Command::Helo(host) => self.helo(host, false),
            Command::Ehlo(host) => self.helo(host, true),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => return self.data(crlf),
            Command::Bdat { size, last } => return self.bdat(size, last),
            Command::Rset => self.rset(),
            Command::Noop => self.reply(Reply::ok()),
            Command::Quit => {
                self.reply(Reply::bye());
                return Ok(Flow::Close);
            }
            Command::Vrfy(arg) => self.vrfy(&arg),
            Command::Help(_) => self.help(),
            Command::Expn(_) => self.reply(Reply::unrecognized()),
            Command::Starttls | Command::Auth(_) => self.reply(Reply::not_implemented()),
            Command::Unknown(verb) => {
                if forbidden(&verb) {
                    self.reply(Reply::forbidden_command());
                    return Ok(Flow::Close);
                }
                self.reply(Reply::unrecognized());
            }
        }
        Ok(Flow::Continue)
    }

    /// The protocol name of the Received: header and the queue file.
    fn protocol(&self, smtputf8: bool) -> (Protocol, &'static str) {
        match (self.esmtp, smtputf8) {
            (false, _) => (Protocol::Smtp, "SMTP"),
            (true, false) => (Protocol::Esmtp, "ESMTP"),
            (true, true) => (Protocol::Esmtp, "UTF8SMTP"),
        }
    }

    /// Opens the message at cleanup (DATA, or the first BDAT). The reply is the one
    /// to give when it fails.
    pub fn begin_message(&mut self) -> Result<(), Reply> {
        let Some(txn) = &self.txn else {
            return Err(Reply::need_rcpt());
        };
        let (protocol, protocol_name) = self.protocol(txn.flags.smtputf8);
        let single = match txn.recipients.as_slice() {
            [one] => Some(&one.path),
            _ => None,
        };
        let received = Received {
            helo: self.helo.as_ref(),
            client: self.client_ip,
            myhostname: &self.config.myhostname,
            mail_name: &self.config.mail_name,
            protocol: protocol_name,
            single_recipient: single,
            time: SystemTime::now(),
        }
        .header();
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(client = %self.client, "Received: header: {e}");
                return Err(Reply::queue_write_error());
            }
        };
        let begin = ToCleanup::Begin {
            sender: txn.sender.clone(),
            flags: txn.flags.clone(),
            client: ClientInfo {
                name: None,
                address: Some(self.client_ip),
                helo: self.helo.clone(),
                protocol,
            },
            received,
        };
        match self.link.begin(&mut *self.connect, begin, &txn.recipients) {
            Ok(()) => {
                self.handed = true;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(client = %self.client, "{e}");
                Err(Reply::queue_write_error())
            }
        }
    }

    /// Ends the message at cleanup and gives the client cleanup's answer.
    pub fn end_message(&mut self, size: u64) {
        self.handed = false;
        let Some(txn) = self.txn.take() else {
            return;
        };
        let answer = self.link.end();
        let reply = match answer {
            Ok(protocol::FromCleanup::Queued { id }) => {
                tracing::info!(
                    queue_id = %id,
                    client = %self.client,
                    from = %txn.sender,
                    nrcpt = txn.recipients.len(),
                    size,
                    "queued"
                );
                self.junk = 0;
                Reply::queued(id)
            }
            Ok(protocol::FromCleanup::Failed { temporary, detail }) => {
                tracing::warn!(
                    client = %self.client,
                    temporary,
                    detail = %detail.as_str(),
                    "cleanup refused the message"
                );
                if temporary {
                    Reply::queue_write_error()
                } else {
                    Reply::message_file_too_big()
                }
            }
            Err(e) => {
                tracing::warn!(client = %self.client, "{e}");
                Reply::queue_write_error()
            }
        };
        self.reply(reply);
    }

    /// Discards the message at cleanup, if it has one.
    pub fn abort_message(&mut self) {
        if self.handed {
            self.link.abort();
            self.handed = false;
        }
    }
}
