//! `local`: the local delivery agent. The queue manager hands it recipients in `mydestination`
//! with the queue file's read-only descriptor; it expands aliases, include lists and `.forward`
//! files, and delivers each destination in a child process that becomes the recipient (or the
//! owner of the command or file), clears its capabilities, proves it cannot regain root, and
//! landlocks itself to that one mailbox before it writes.
//!
//! Trusts: the master for framing; the alias tables, include files and passwd file as the
//! administrator's. Does not trust: the queue manager's requests (decoded by `protocol`), the
//! message text (data only), users' `.forward` files and homes (read and written by children
//! running as those users). As in Postfix, the queue file never says "run a command": that
//! comes only from the alias table or the owner's own `.forward`.
//!
//! Runs as root with only CAP_SETUID and CAP_SETGID (the `local` profile in `privileges`);
//! unprivileged (`--dev`) every delivery keeps the invoking uid and is still landlocked.
//!
//! Decisions:
//! - Alias tables and `:include:` files are read at start-up, before the sandbox: a changed
//!   table is seen by the next `local` process (as `max_use`/`max_idle` replace them).
//! - Users are looked up at delivery time in `local_passwd_file` (the sandbox allows reading
//!   it), so a new account gets mail without a restart.
//! - `home_mailbox` (e.g. `Maildir/`) applies to users whose home lies beneath
//!   `local_home_base`; others, and every user when `home_mailbox` is empty, get the mbox
//!   `mail_spool_directory/USER`. `.forward` is read only beneath `local_home_base` too
//!   (Postfix's `forward_path` default `$home/.forward`, without the extension form).
//! - `Return-Path: <SENDER>` (`<>` for the null sender) and `Delivered-To: RECIPIENT`, in
//!   that order as Postfix, are prepended to each mailbox,
//!   file and command delivery; a message that already carries `Delivered-To: RECIPIENT`
//!   bounces with 5.4.6 "mail forwarding loop", as Postfix.
//! - Addresses outside `mydestination` reached through aliases, include lists or `.forward`
//!   are re-submitted through cleanup as one new message per recipient being expanded, with
//!   the original sender (or `owner-NAME`), as Postfix's local does (`forward`; the access
//!   matrix's `local -> cleanup` edge).
//! - A recipient's result is the worst of its parts: any deferral defers it (retried as a
//!   whole, so a mailbox copy may be written twice, as in Postfix), else any bounce bounces it.

#![forbid(unsafe_code)]

mod deliver;
mod forward;
mod resolve;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use daemon::cleanup_client::{CleanupLink, Connect};
use daemon::Daemon;
use policy::aliases::{self, Aliases, Target};
use policy::passwd::{self, Account, Passwd};
use policy::DomainList;
use protocol::delivery::{FromAgent, ToAgent};
use protocol::queue::{ContentReader, Diagnostic, Outcome};
use protocol::{Channel, EnhancedStatus};
use sandbox::Identity;

use deliver::{Job, Report, Sink};
use resolve::{Destination, Refusal};

/// Largest alias or include file read (they are held in memory).
const MAX_TABLE_FILE: u64 = 16 << 20;
/// Largest message text this agent reads into memory (it is in the queue file either way).
const MAX_CONTENT: u64 = 256 << 20;
/// Supplementary groups taken from the group file.
const MAX_GROUPS: usize = 16;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything a delivery needs, gathered before the sandbox.
struct Config {
    aliases: Vec<Aliases>,
    includes: HashMap<PathBuf, Vec<Target>>,
    mydestination: DomainList,
    home_mailbox: String,
    spool: PathBuf,
    home_base: PathBuf,
    passwd_file: PathBuf,
    group_file: PathBuf,
    allow_commands: HashSet<String>,
    allow_files: HashSet<String>,
    command_time_limit: Duration,
    hostname: String,
}

fn read_bounded(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)?;
    anyhow::ensure!(
        meta.len() <= MAX_TABLE_FILE,
        "{}: larger than {MAX_TABLE_FILE} octets",
        path.display()
    );
    Ok(std::fs::read_to_string(path)?)
}

fn flags(value: &str) -> HashSet<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Config {
    fn load(settings: &conf::MainCf) -> anyhow::Result<Config> {
        let mut tables = Vec::new();
        for element in settings.get_list("alias_maps")? {
            let path = aliases::alias_map_path(&element).map_err(anyhow::Error::msg)?;
            let text = read_bounded(&path)
                .map_err(|e| anyhow::anyhow!("alias_maps: {}: {e}", path.display()))?;
            let table = Aliases::parse(&text, &path)?;
            for w in table.warnings() {
                tracing::warn!("{w}");
            }
            tables.push(table);
        }
        // Include files, read now (recursively, each once), before the sandbox.
        let mut includes = HashMap::new();
        let mut pending: Vec<PathBuf> = tables
            .iter()
            .flat_map(|t| t.iter())
            .flat_map(|a| a.targets.iter())
            .filter_map(|t| match t {
                Target::Include(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        while let Some(path) = pending.pop() {
            if includes.contains_key(&path) {
                continue;
            }
            match read_bounded(&path) {
                Ok(text) => match aliases::parse_include(&text, &path) {
                    Ok(targets) => {
                        pending.extend(targets.iter().filter_map(|t| match t {
                            Target::Include(p) => Some(p.clone()),
                            _ => None,
                        }));
                        includes.insert(path, targets);
                    }
                    Err(e) => tracing::warn!("{e}; its recipients are deferred"),
                },
                Err(e) => tracing::warn!(
                    "cannot read :include:{}: {e}; its recipients are deferred",
                    path.display()
                ),
            }
        }
        let path = |name: &str| -> anyhow::Result<PathBuf> {
            Ok(PathBuf::from(settings.get(name)?.trim()))
        };
        Ok(Config {
            aliases: tables,
            includes,
            mydestination: DomainList::parse(&settings.get("mydestination")?)?,
            home_mailbox: settings.get("home_mailbox")?.trim().to_owned(),
            spool: path("mail_spool_directory")?,
            home_base: path("local_home_base")?,
            passwd_file: path("local_passwd_file")?,
            group_file: path("local_group_file")?,
            allow_commands: flags(&settings.get("allow_mail_to_commands")?),
            allow_files: flags(&settings.get("allow_mail_to_files")?),
            command_time_limit: settings.get_time("command_time_limit")?,
            hostname: settings.get("myhostname")?.trim().to_owned(),
        })
    }

    fn is_local_domain(&self, domain: &str) -> bool {
        protocol::Domain::parse(domain, true).is_ok_and(|d| self.mydestination.matches(&d))
    }

    fn under_home_base(&self, home: &Path) -> bool {
        home.is_absolute()
            && home.starts_with(&self.home_base)
            && home != self.home_base
            && !home
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    }
}

fn run() -> anyhow::Result<()> {
    let mut d = Daemon::init()?;
    let config = Config::load(d.settings())?;
    // INVARIANT: the sandbox is in force before the first request is read; alias tables and
    // include files were read above, outside it.
    d.enter_sandbox()?;
    let mut link = CleanupLink::new(forward::CLEANUP_TIMEOUT);
    let ended = d.serve_unix(|d, _from, channel| {
        let mut connect = || d.connect("cleanup").map_err(|e| e.to_string());
        serve(&config, &channel, &mut link, &mut connect)
    })?;
    tracing::debug!(?ended, "serve loop ended");
    Ok(())
}

/// Serves delivery requests on one channel until it closes.
fn serve(
    config: &Config,
    channel: &Channel,
    link: &mut CleanupLink,
    connect: &mut Connect<'_>,
) -> anyhow::Result<()> {
    loop {
        let received = match channel.recv::<ToAgent>() {
            Ok(r) => r,
            Err(protocol::ChannelError::PeerClosed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Some(fd) = received.fds.into_iter().next() else {
            anyhow::bail!("a Deliver request without its queue file descriptor");
        };
        let ToAgent::Deliver {
            queue_id,
            sender,
            flags,
            content_offset,
            content_len,
            recipients,
            ..
        } = received.msg;
        let file = File::from(fd);
        let content = match read_content(&file, content_offset, content_len) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(%queue_id, "cannot read the queue file: {e}");
                None
            }
        };
        let sender_text = sender
            .mailbox()
            .map_or_else(|| "MAILER-DAEMON".to_owned(), ToString::to_string);
        for r in recipients.iter() {
            let report = match &content {
                None => Report::new("4.3.0", "cannot read the queue file"),
                Some(content) => deliver_recipient(
                    config,
                    r.recipient.path.mailbox(),
                    &Message {
                        sender: &sender,
                        sender_text: &sender_text,
                        flags: &flags,
                        content,
                    },
                    &mut |fwd| forward::send(link, connect, fwd),
                ),
            };
            let (outcome, status) = outcome_of(&report.status);
            let text = deliver::clean(&report.text);
            let text: String = text.chars().take(400).collect();
            let diagnostic = Diagnostic::new(&text).unwrap_or_else(|_| {
                Diagnostic::new("delivery report unprintable")
                    .unwrap_or_else(|_| unreachable_diag())
            });
            tracing::info!(
                %queue_id,
                to = %r.recipient.path,
                status = %status,
                "{outcome}: {text}"
            );
            channel.send(
                &FromAgent::Result {
                    index: r.index,
                    outcome,
                    status,
                    diagnostic,
                },
                &[],
            )?;
        }
        channel.send(&FromAgent::Done, &[])?;
    }
}

fn unreachable_diag() -> Diagnostic {
    // A constant short printable text is always a valid diagnostic.
    Diagnostic::new("").unwrap_or_else(|_| unreachable_diag())
}

fn outcome_of(status: &str) -> (Outcome, EnhancedStatus) {
    let parsed: Option<EnhancedStatus> = status.parse().ok();
    match parsed {
        Some(s) if s.class() == 2 => (Outcome::Delivered, s),
        Some(s) if s.class() == 5 => (Outcome::Bounced, s),
        Some(s) if s.class() == 4 => (Outcome::Deferred, s),
        _ => (
            Outcome::Deferred,
            "4.3.0".parse().unwrap_or_else(|_| fallback_status()),
        ),
    }
}

fn fallback_status() -> EnhancedStatus {
    "4.0.0".parse().unwrap_or_else(|_| fallback_status())
}

/// Reads the message text: the queue file stores it in length-framed chunks, which
/// `protocol::queue::ContentReader` checks against the length the request names. `pread`
/// leaves the descriptor's offset alone (qmgr may share the open file description).
fn read_content(file: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    if len > MAX_CONTENT {
        return Err(std::io::Error::other(format!(
            "content of {len} octets is larger than {MAX_CONTENT}"
        )));
    }
    let reader = ContentReader::pread(file, offset, len);
    let mut buf = Vec::with_capacity(usize::try_from(len).map_err(std::io::Error::other)?);
    // One octet more than announced is read so that a longer text is noticed, not cut.
    reader.take(len + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("content is {} octets, the request says {len}", buf.len()),
        ));
    }
    Ok(buf)
}

/// Whether the header section already carries `Delivered-To: addr` (a forwarding loop).
fn has_delivered_to(content: &[u8], addr: &str) -> bool {
    let addr = addr.to_lowercase();
    protocol::header::delivered_to(content).contains(&addr)
}

/// The message being delivered, as the request and the queue file give it.
struct Message<'a> {
    sender: &'a protocol::ReversePath,
    /// The sender for the mbox `From ` line (`MAILER-DAEMON` for the null sender).
    sender_text: &'a str,
    flags: &'a protocol::queue::MailFlags,
    content: &'a [u8],
}

fn deliver_recipient(
    config: &Config,
    mailbox: Option<&protocol::Mailbox>,
    msg: &Message<'_>,
    send_on: &mut dyn FnMut(&forward::Forward<'_>) -> Report,
) -> Report {
    let (sender, sender_text, content) = (msg.sender, msg.sender_text, msg.content);
    let Some(mailbox) = mailbox else {
        return Report::new("5.1.3", "not a local recipient address");
    };
    let local = mailbox.local_part().to_lowercase();
    let domain = mailbox.domain().to_string().to_lowercase();
    let address = format!("{local}@{domain}");
    if has_delivered_to(content, &address) {
        return Report::new("5.4.6", format!("mail forwarding loop for {address}"));
    }
    let passwd = match std::fs::read_to_string(&config.passwd_file) {
        Ok(text) => Passwd::parse(&text),
        Err(e) => {
            return Report::new(
                "4.3.0",
                format!("cannot read {}: {e}", config.passwd_file.display()),
            )
        }
    };
    let mut read_forward = |user: &Account| -> Result<Option<Vec<Target>>, String> {
        let home = PathBuf::from(&user.home);
        if !config.under_home_base(&home) {
            return Ok(None);
        }
        let id = identity(config, user);
        match deliver::read_forward(&id, &home)? {
            None => Ok(None),
            Some(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                aliases::parse_include(&text, &home.join(".forward"))
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        }
    };
    let is_local = |d: &str| config.is_local_domain(d);
    let mut tables = resolve::Tables {
        aliases: &config.aliases,
        includes: &config.includes,
        passwd: &passwd,
        allow_commands: &config.allow_commands,
        allow_files: &config.allow_files,
        is_local_domain: &is_local,
        read_forward: &mut read_forward,
    };
    let expansion = match resolve::expand(&mut tables, &local, &domain) {
        Ok(e) => e,
        Err(refusal) => return refused(refusal),
    };
    // Postfix's order: Return-Path first, then Delivered-To, then the message's own fields.
    // The null sender is `Return-Path: <>` as in Postfix; `MAILER-DAEMON` is only for the
    // mbox `From ` line.
    let return_path = sender
        .mailbox()
        .map_or_else(String::new, ToString::to_string);
    let prepend = format!("Return-Path: <{return_path}>\r\nDelivered-To: {address}\r\n");
    let from_sender = if sender_text == "MAILER-DAEMON" {
        "MAILER-DAEMON".to_owned()
    } else {
        sender_text.to_owned()
    };
    let mut worst: Option<Report> = None;
    let mut delivered = Vec::new();
    for dest in &expansion.destinations {
        let report = deliver_one(
            config,
            dest,
            prepend.as_bytes(),
            content,
            &from_sender,
            &address,
            sender_text,
        );
        match report.status.as_bytes().first() {
            Some(b'2') => delivered.push(report.text),
            _ => {
                let replace = match &worst {
                    None => true,
                    // A temporary failure outranks a permanent one: the whole recipient is
                    // retried, as Postfix's local defers a recipient when any of its
                    // expansions defers.
                    Some(w) => w.status.starts_with('5') && report.status.starts_with('4'),
                };
                if replace {
                    worst = Some(report);
                }
            }
        }
    }
    if !expansion.forward.is_empty() {
        let report = forward_copies(config, &expansion, msg, &address, send_on);
        match report.status.as_bytes().first() {
            Some(b'2') => delivered.push(report.text),
            _ => {
                if worst.as_ref().is_none_or(|w| w.status.starts_with('5')) {
                    worst = Some(report);
                }
            }
        }
    }
    match worst {
        Some(w) => w,
        None => Report::new("2.0.0", delivered.join("; ")),
    }
}

/// Sends the message on to the addresses outside `mydestination` that `address` expanded
/// into: one new message through cleanup, from the original sender or the list owner.
fn forward_copies(
    config: &Config,
    expansion: &resolve::Expansion,
    msg: &Message<'_>,
    address: &str,
    send_on: &mut dyn FnMut(&forward::Forward<'_>) -> Report,
) -> Report {
    let mut recipients = Vec::new();
    for a in &expansion.forward {
        match protocol::ForwardPath::parse(&format!("<{a}>"), msg.flags.smtputf8) {
            Ok(p) => recipients.push(p),
            Err(e) => {
                return Report::new("5.1.3", format!("bad forwarding address {a:?}: {e}"));
            }
        }
    }
    let owner;
    let sender = match &expansion.owner {
        Some(o) => match protocol::ReversePath::parse(&format!("<{o}>"), msg.flags.smtputf8) {
            Ok(p) => {
                owner = p;
                &owner
            }
            Err(_) => msg.sender,
        },
        None => msg.sender,
    };
    send_on(&forward::Forward {
        sender,
        flags: msg.flags,
        recipients: &recipients,
        delivered_to: address,
        content: msg.content,
        hostname: &config.hostname,
    })
}

fn refused(refusal: Refusal) -> Report {
    match refusal {
        Refusal::UnknownUser(name) => Report::new("5.1.1", format!("unknown user: \"{name}\"")),
        Refusal::Root(name) => Report::new(
            "5.7.1",
            format!("mail for \"{name}\" (uid 0) must be redirected by an alias: root is never a delivery user"),
        ),
        Refusal::Restricted { what, source } => Report::new(
            "5.7.1",
            format!(
                "mail to {what} is restricted (allow_mail_to_{what} does not include {})",
                source.word()
            ),
        ),
        Refusal::Loop(why) => Report::new("5.4.6", format!("mail forwarding loop: {why}")),
        Refusal::Temporary(why) => Report::new("4.3.0", why),
        Refusal::NoDefaultPrivs => Report::new(
            "5.3.5",
            "no \"nobody\" account to run an alias command or file as",
        ),
    }
}

fn identity(config: &Config, user: &Account) -> Identity {
    let groups = std::fs::read_to_string(&config.group_file)
        .map(|text| passwd::groups_of(&text, &user.name, MAX_GROUPS))
        .unwrap_or_default()
        .into_iter()
        .filter(|g| *g != 0)
        .collect();
    Identity {
        uid: user.uid,
        gid: user.gid,
        groups,
    }
}

fn deliver_one(
    config: &Config,
    dest: &Destination,
    prepend: &[u8],
    content: &[u8],
    from_sender: &str,
    recipient: &str,
    sender_text: &str,
) -> Report {
    let (user, sink) = match dest {
        Destination::Mailbox(user) => {
            let home = PathBuf::from(&user.home);
            let sink = if !config.home_mailbox.is_empty()
                && config.under_home_base(&home)
                && !config.home_mailbox.starts_with('/')
                && !config.home_mailbox.contains("..")
            {
                let path = home.join(&config.home_mailbox);
                if config.home_mailbox.ends_with('/') {
                    Sink::Maildir(path)
                } else {
                    Sink::Mbox(path)
                }
            } else {
                Sink::Mbox(config.spool.join(&user.name))
            };
            (user, sink)
        }
        Destination::File { path, user } => (user, Sink::Mbox(path.clone())),
        Destination::Command { command, user } => {
            let env = vec![
                ("HOME".to_owned(), user.home.clone()),
                ("USER".to_owned(), user.name.clone()),
                ("LOGNAME".to_owned(), user.name.clone()),
                ("SHELL".to_owned(), user.shell.clone()),
                ("RECIPIENT".to_owned(), recipient.to_owned()),
                ("SENDER".to_owned(), sender_text.to_owned()),
                ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ];
            (
                user,
                Sink::Command {
                    command: command.clone(),
                    home: PathBuf::from(&user.home),
                    env,
                    limit: config.command_time_limit,
                },
            )
        }
    };
    if user.uid == 0 || user.gid == 0 {
        return Report::new("5.7.1", "root is never a delivery user");
    }
    let job = Job {
        identity: identity(config, user),
        rules: deliver::rules_for(&sink),
        sink,
        prepend,
        content,
        sender: from_sender,
        hostname: &config.hostname,
        deadline: config.command_time_limit + Duration::from_secs(30),
    };
    deliver::run(&job)
}
