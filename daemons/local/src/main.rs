//! `local`: the local delivery agent. The queue manager hands it recipients in `mydestination`
//! with the queue file's read-only descriptor; it expands aliases, include lists and `.forward`
//! files, and delivers each destination in a child process that becomes the recipient (or the
//! owner of the command or file), clears its capabilities, proves it cannot regain root, and
//! landlocks itself to that one mailbox before it writes.
//!
//! Trusts: the master for framing; the alias tables and include files as the administrator's.
//! Does not trust: the queue manager's requests (decoded by `protocol`), the message text, the
//! accounts database (a local user controls fields of it), users' `.forward` files and homes.
//! The privileged parent reads none of those bytes: the message is read (loop check, mailbox
//! copy, forwarded copy) by children that run as the recipient or as `nobody`, a `.forward` is
//! read and parsed by a child running as its owner, and each child reports back through a typed
//! message that `protocol` decodes (`protocol::local`). As in Postfix, the queue file never says
//! "run a command": that comes only from the alias table or the owner's own `.forward`.
//!
//! Runs as root with only CAP_SETUID, CAP_SETGID and CAP_CHOWN (the `local` profile in
//! `privileges`), and may not `execve`: `|command` deliveries run in the command launcher
//! (`launcher`, profile `local-command`), forked before this process entered its sandbox.
//! Unprivileged (`--dev`) every delivery keeps the invoking uid and is still landlocked.
//!
//! Decisions:
//! - Alias tables and `:include:` files are read at start-up, before the sandbox: a changed
//!   table is seen by the next `local` process (as `max_use`/`max_idle` replace them).
//! - Users and their supplementary groups are looked up at delivery time through the
//!   `proxymap` service (the access matrix's `local -> proxymap` edge), which reads
//!   `local_passwd_file` and `local_group_file`; this process reads neither, so its sandbox
//!   gives it no rule on them, and a user added while Postern runs (the files replaced by
//!   rename) gets mail without a restart. A lookup that gets no answer (proxymap cannot read
//!   a file, is not in master.cf or does not answer) defers that recipient alone with
//!   `4.3.0`, never "unknown user".
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
//! - Mailbox locking follows main.cf's `deliver_lock_attempts`, `deliver_lock_delay` and
//!   `stale_lock_time`, as the virtual agent.

#![forbid(unsafe_code)]

use local::{deliver, forward, launcher, resolve, users};

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use daemon::cleanup_client::{CleanupLink, Connect};
use daemon::proxymap_client::{self, LookupError, ProxymapLink, LOOKUP_TIMEOUT};
use daemon::Daemon;
use mailbox::{Content, Envelope, LockOptions};
use policy::aliases::{self, Aliases, Target};
use policy::passwd::Account;
use policy::DomainList;
use protocol::delivery::{FromAgent, ToAgent};
use protocol::proxymap::{FromProxymap, Table};
use protocol::queue::{Diagnostic, Outcome};
use protocol::{Channel, EnhancedStatus};

use deliver::{Job, Report, Sink};
use resolve::{Destination, Refusal};
use users::Users;

/// Largest alias or include file read (they are held in memory).
const MAX_TABLE_FILE: u64 = 16 << 20;

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
    allow_commands: HashSet<String>,
    allow_files: HashSet<String>,
    command_time_limit: Duration,
    hostname: String,
    lock: LockOptions,
    /// Runs `|command` deliveries; `None` when `allow_mail_to_commands` is empty.
    launcher: Option<launcher::Launcher>,
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
            allow_commands: flags(&settings.get("allow_mail_to_commands")?),
            allow_files: flags(&settings.get("allow_mail_to_files")?),
            command_time_limit: settings.get_time("command_time_limit")?,
            hostname: settings.get("myhostname")?.trim().to_owned(),
            lock: LockOptions {
                attempts: u32::try_from(settings.get_int("deliver_lock_attempts")?)?,
                delay: settings.get_time("deliver_lock_delay")?,
                stale_after: settings.get_time("stale_lock_time")?,
            },
            launcher: None,
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
    let mut config = Config::load(d.settings())?;
    // The launcher first: once this process is sandboxed, nothing it forks may exec.
    config.launcher = if config.allow_commands.is_empty() {
        None
    } else {
        let profile =
            privileges::profile("local-command", d.settings(), privileges::RunAs::current())?;
        Some(launcher::Launcher::start(&profile)?)
    };
    // INVARIANT: the sandbox is in force before the first request is read; alias tables and
    // include files were read above, outside it.
    d.enter_sandbox()?;
    let mut link = CleanupLink::new(forward::CLEANUP_TIMEOUT);
    let mut proxymap = ProxymapLink::new(LOOKUP_TIMEOUT);
    let ended = d.serve_unix(|d, _from, channel| {
        // Both channels are asked of the master through the one control channel.
        let d = std::cell::RefCell::new(d);
        let mut connect = || d.borrow_mut().connect("cleanup").map_err(|e| e.to_string());
        let mut to_proxymap = || {
            d.borrow_mut()
                .connect(proxymap_client::SERVICE)
                .map_err(|e| e.to_string())
        };
        let mut accounts = Proxymap {
            link: &mut proxymap,
            connect: &mut to_proxymap,
        };
        serve(&config, &channel, &mut link, &mut connect, &mut accounts)
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
    accounts: &mut dyn users::Source,
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
        let content = Content::new(&file, content_offset, content_len);
        for r in recipients.iter() {
            let report = deliver_recipient(
                config,
                &mut *accounts,
                r.recipient.path.mailbox(),
                &Message {
                    sender: &sender,
                    flags: &flags,
                    content: &content,
                },
                &mut |fwd| forward::send(link, connect, fwd),
            );
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
        if config
            .launcher
            .as_ref()
            .is_some_and(launcher::Launcher::is_broken)
        {
            anyhow::bail!("the command launcher stopped answering; a new local process takes over");
        }
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

/// The message being delivered, as the request and the queue file give it.
struct Message<'a> {
    sender: &'a protocol::ReversePath,
    flags: &'a protocol::queue::MailFlags,
    /// The text in the queue file: read only by delivery children.
    content: &'a Content<'a>,
}

fn deliver_recipient(
    config: &Config,
    source: &mut dyn users::Source,
    mailbox: Option<&protocol::Mailbox>,
    msg: &Message<'_>,
    send_on: &mut dyn FnMut(&forward::Forward<'_>) -> Report,
) -> Report {
    let Some(mailbox) = mailbox else {
        return Report::new("5.1.3", "not a local recipient address");
    };
    let local = mailbox.local_part().to_lowercase();
    let domain = mailbox.domain().to_string().to_lowercase();
    let address = format!("{local}@{domain}");
    let users = std::cell::RefCell::new(Users::new(source));
    let mut lookup = |name: &str| users.borrow_mut().lookup(name);
    let mut read_forward = |user: &Account| -> Result<Option<Vec<Target>>, String> {
        let home = PathBuf::from(&user.home);
        if !config.under_home_base(&home) {
            return Ok(None);
        }
        let id = users.borrow().identity(user);
        Ok(deliver::read_forward(&id, &home)?
            .map(|entries| entries.into_iter().map(deliver::target_of).collect()))
    };
    let is_local = |d: &str| config.is_local_domain(d);
    let expansion = {
        let mut tables = resolve::Tables {
            aliases: &config.aliases,
            includes: &config.includes,
            users: &mut lookup,
            allow_commands: &config.allow_commands,
            allow_files: &config.allow_files,
            is_local_domain: &is_local,
            read_forward: &mut read_forward,
        };
        resolve::expand(&mut tables, &local, &domain)
    };
    let expansion = match expansion {
        Ok(e) => e,
        Err(refusal) => return refused(refusal),
    };
    let users = users.into_inner();
    // The null sender is `Return-Path: <>` as in Postfix (`MAILER-DAEMON` only on the mbox
    // `From ` line, which the mailbox writer makes).
    let return_path = msg
        .sender
        .mailbox()
        .map_or_else(String::new, ToString::to_string);
    let envelope = Envelope {
        sender: &return_path,
        recipient: &address,
    };
    let mut worst: Option<Report> = None;
    let mut delivered = Vec::new();
    for dest in &expansion.destinations {
        let report = deliver_one(config, &users, dest, &envelope, msg.content);
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
        let report = forward_copies(config, users, &expansion, msg, &address, send_on);
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
    mut users: Users<'_>,
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
    // The child that carries the text runs as `nobody` (Postfix's `default_privs`).
    let carrier = match users.lookup("nobody") {
        Ok(Some(nobody)) if nobody.uid != 0 && nobody.gid != 0 => users.identity(&nobody),
        Ok(_) => return refused(Refusal::NoDefaultPrivs),
        Err(e) => return Report::new("4.3.0", e),
    };
    send_on(&forward::Forward {
        sender,
        flags: msg.flags,
        recipients: &recipients,
        delivered_to: address,
        content: msg.content,
        hostname: &config.hostname,
        carrier: &carrier,
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

fn deliver_one(
    config: &Config,
    users: &Users<'_>,
    dest: &Destination,
    envelope: &Envelope<'_>,
    content: &Content<'_>,
) -> Report {
    let (user, sink) = match dest {
        Destination::Mailbox(user) => {
            let home = PathBuf::from(&user.home);
            let sink = if !config.home_mailbox.is_empty()
                && config.under_home_base(&home)
                && !config.home_mailbox.starts_with('/')
                && !config
                    .home_mailbox
                    .split('/')
                    .any(|p| p == ".." || p == ".")
            {
                let relative = PathBuf::from(config.home_mailbox.trim_end_matches('/'));
                if config.home_mailbox.ends_with('/') {
                    Sink::Maildir { home, relative }
                } else {
                    Sink::HomeMbox { home, relative }
                }
            } else {
                Sink::SpoolMbox(config.spool.join(&user.name))
            };
            (user, sink)
        }
        Destination::File { path, user } => {
            if path.as_path() != Path::new("/dev/null") && !path.parent().is_some_and(Path::is_dir)
            {
                // Postfix's status for a file it cannot open: no sandbox is needed to say so.
                return Report::new(
                    "5.2.0",
                    format!(
                        "cannot open file {}: No such file or directory",
                        path.display()
                    ),
                );
            }
            (user, Sink::File(path.clone()))
        }
        Destination::Command { command, user } => {
            let env = vec![
                ("HOME".to_owned(), user.home.clone()),
                ("USER".to_owned(), user.name.clone()),
                ("LOGNAME".to_owned(), user.name.clone()),
                ("SHELL".to_owned(), user.shell.clone()),
                ("RECIPIENT".to_owned(), envelope.recipient.to_owned()),
                (
                    "SENDER".to_owned(),
                    if envelope.sender.is_empty() {
                        "MAILER-DAEMON".to_owned()
                    } else {
                        envelope.sender.to_owned()
                    },
                ),
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
        identity: users.identity(user),
        rules: deliver::rules_for(&sink),
        sink,
        envelope: *envelope,
        content,
        hostname: &config.hostname,
        lock: config.lock,
        deadline: config.command_time_limit + Duration::from_secs(30),
        launcher: config.launcher.as_ref(),
    };
    deliver::run(&job)
}

/// Account and group lookups through the `proxymap` service, one round trip each over the
/// process's kept channel.
struct Proxymap<'a, 'c> {
    link: &'a mut ProxymapLink,
    connect: &'a mut Connect<'c>,
}

impl Proxymap<'_, '_> {
    fn ask(&mut self, table: Table, key: &str) -> Result<Option<FromProxymap>, String> {
        match self.link.lookup(self.connect, table, key) {
            Ok(answer) => Ok(Some(answer)),
            // A name that cannot be a key (a '/', a ':') is no account.
            Err(LookupError::Key(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl users::Source for Proxymap<'_, '_> {
    fn user(&mut self, name: &str) -> Result<Option<users::User>, String> {
        let account = match self.ask(Table::Passwd, name)? {
            None | Some(FromProxymap::NotFound) => return Ok(None),
            Some(FromProxymap::Account(a)) => Account {
                name: a.name.into_string(),
                uid: a.uid,
                gid: a.gid,
                home: a.home.into_string(),
                shell: a.shell.into_string(),
            },
            Some(FromProxymap::TempFail(why)) => return Err(format!("proxymap: {why}")),
            Some(other) => {
                return Err(format!(
                    "proxymap answered a Passwd lookup with {}",
                    protocol::Message::kind(&other)
                ))
            }
        };
        let groups = match self.ask(Table::GroupsOf, &account.name)? {
            None | Some(FromProxymap::NotFound) => Vec::new(),
            Some(FromProxymap::Groups(gids)) => gids.into_vec(),
            Some(FromProxymap::TempFail(why)) => return Err(format!("proxymap: {why}")),
            Some(other) => {
                return Err(format!(
                    "proxymap answered a GroupsOf lookup with {}",
                    protocol::Message::kind(&other)
                ))
            }
        };
        Ok(Some(users::User { account, groups }))
    }
}
