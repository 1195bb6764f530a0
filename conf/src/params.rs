//! The table of every `main.cf` parameter Postern knows: Postfix's name, Postfix's default
//! (the raw text, with its `$name` references), the kind of value, and what it is for.
//!
//! Trusts: itself. The table is code; its consistency (every default valid for its kind,
//! every `$name` in a default known, no duplicates) is checked by the tests below, which
//! lets `MainCf::defaults` build without a fallible path.

use crate::value::{Kind, TimeUnit, MAX_INT};

/// Where a parameter's default comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Raw text, expanded like any value (it may refer to other parameters).
    Raw(&'static str),
    /// The host name from the environment; if it has no dot, `.$mydomain` is appended
    /// (Postfix's rule for `myhostname`).
    HostName,
    /// `$myhostname` minus its first label, or `localdomain` when it has only one
    /// (Postfix's rule for `mydomain`).
    DomainOfHostName,
}

/// One known parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub default: DefaultValue,
    pub kind: Kind,
    pub description: &'static str,
}

// Short names for kinds, to keep the table readable. Lists and text are checked only as
// text here; the daemon that uses them interprets their items.
const LIST: Kind = Kind::List;
const TEXT: Kind = Kind::String;
const PATH: Kind = Kind::Path;
const HOST: Kind = Kind::Hostname;
const USER: Kind = Kind::User;
const SIZE: Kind = Kind::Size;

const fn int(min: i64) -> Kind {
    Kind::Int { min, max: MAX_INT }
}

const fn secs(min_seconds: u64) -> Kind {
    Kind::Time {
        unit: TimeUnit::Seconds,
        min_seconds,
    }
}

const fn days() -> Kind {
    Kind::Time {
        unit: TimeUnit::Days,
        min_seconds: 0,
    }
}

const DELIVERY_FLAGS: &[&str] = &["alias", "forward", "include"];
const NOTIFY_CLASSES: &[&str] = &[
    "bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software",
];

const fn p(
    name: &'static str,
    default: &'static str,
    kind: Kind,
    description: &'static str,
) -> Param {
    Param {
        name,
        default: DefaultValue::Raw(default),
        kind,
        description,
    }
}

/// Every parameter Postern knows, grouped by topic.
pub static PARAMS: &[Param] = &[
    // --- identity of this mail system ---
    Param {
        name: "myhostname",
        default: DefaultValue::HostName,
        kind: HOST,
        description: "The fully-qualified host name of this mail system.",
    },
    Param {
        name: "mydomain",
        default: DefaultValue::DomainOfHostName,
        kind: HOST,
        description: "The domain this mail system is in; the default for many address settings.",
    },
    p("myorigin", "$myhostname", HOST, "The domain appended to locally posted mail that has an unqualified sender."),
    p("mydestination", "$myhostname, localhost.$mydomain, localhost", LIST, "Domains delivered on this machine by the local delivery agent."),
    p("mynetworks", "127.0.0.0/8 [::1]/128", LIST, "Client networks trusted to relay through this system (default: loopback only)."),
    p("inet_interfaces", "all", LIST, "Network addresses the SMTP server listens on."),
    p("inet_protocols", "all", Kind::Flags(&["all", "ipv4", "ipv6"]), "Internet protocols to use: ipv4, ipv6 or all."),
    p("relay_domains", "", LIST, "Remote domains this system accepts mail for and relays (empty as in Postfix 3.0 and later)."),
    p("relayhost", "", TEXT, "The next-hop for non-local mail; empty means deliver directly by MX lookup."),
    p("mail_name", "Postern", TEXT, "The mail system name shown in the SMTP greeting and in bounces."),
    // --- limits on messages ---
    p("message_size_limit", "10240000", SIZE, "The largest message accepted, in bytes; 0 means no limit."),
    p("line_length_limit", "2048", int(1), "Longer lines of a message are split into pieces of this length."),
    // --- directories ---
    p("queue_directory", "/var/spool/postern", PATH, "The root of the mail queue."),
    p("config_directory", "/etc/postern", PATH, "Where main.cf and master.cf live."),
    p("daemon_directory", "/usr/libexec/postern", PATH, "Where the daemon programs named in master.cf live."),
    p("command_directory", "/usr/sbin", PATH, "Where the administrative commands live."),
    p("data_directory", "/var/lib/postern", PATH, "Where Postern keeps its own non-queue data."),
    // --- process management ---
    p("default_process_limit", "100", int(1), "The default maximal number of processes of one service (master.cf maxproc `-`)."),
    p("max_use", "100", int(1), "Requests a daemon process serves before it exits."),
    p("max_idle", "100s", secs(1), "How long a daemon process waits for a request before it exits."),
    p("master_stop_timeout", "30s", secs(1), "How long the master waits for its children to exit when it stops."),
    p("service_throttle_time", "60s", secs(1), "The longest back-off before the master starts a process of a service whose processes keep failing."),
    p("sandbox_enforcement", "required", Kind::Enum(&["required", "best_effort"]), "Whether a daemon whose sandbox falls short of its profile is refused (required) or only logged (best_effort)."),
    // --- daemon identities ---
    p("smtpd_user", "postern-smtpd", USER, "The identity the SMTP server runs as (user name, or uid[:gid] without a passwd entry)."),
    p("queue_user", "postern-queue", USER, "The identity cleanup, qmgr and pickup run as."),
    p("smtp_user", "postern-smtp", USER, "The identity the SMTP client runs as."),
    p("vmail_user", "postern-vmail", USER, "The identity the virtual delivery agent runs as; it owns the virtual mailboxes."),
    p("bounce_user", "postern-bounce", USER, "The identity the bounce daemon runs as."),
    p("proxymap_user", "postern-proxymap", USER, "The identity the proxymap lookup service runs as; never root, so that it cannot read /etc/shadow beside the passwd file."),
    p("setgid_group", "postern-drop", Kind::Group, "The group postdrop runs as to write into the maildrop directory."),
    // --- SMTP server ---
    p("smtpd_banner", "$myhostname ESMTP $mail_name", TEXT, "The text after the 220 code in the SMTP greeting."),
    p("smtpd_timeout", "300s", secs(1), "How long the SMTP server waits for a client to send a request or take a response."),
    p("smtpd_hard_error_limit", "20", int(1), "Errors after which the SMTP server disconnects the client."),
    p("smtpd_soft_error_limit", "10", int(0), "Errors after which the SMTP server delays each response to the client."),
    p("smtpd_error_sleep_time", "1s", secs(0), "The delay per response once the soft error limit is reached."),
    p("smtpd_recipient_limit", "1000", int(1), "Recipients the SMTP server accepts per message."),
    p("smtpd_forbid_bare_newline", "normalize", Kind::Enum(&["normalize", "reject", "no", "yes"]), "What to do with a bare LF in SMTP input: normalize (or yes) accepts it as CRLF where safe, reject refuses it, no allows it."),
    p("smtpd_junk_command_limit", "100", int(1), "NOOP, VRFY, ETRN and RSET commands a client may send before each further one counts as an error."),
    p("smtpd_forbid_unauth_pipelining", "yes", Kind::Bool, "Disconnect a client that sends commands before the server's reply where pipelining is not allowed (before the greeting, after HELO, or without EHLO)."),
    p("smtpd_helo_required", "no", Kind::Bool, "Whether a client must send HELO or EHLO before MAIL."),
    p("disable_vrfy_command", "no", Kind::Bool, "Whether VRFY is refused with 502 instead of answered with 252."),
    p("smtputf8_enable", "yes", Kind::Bool, "Whether the SMTP server offers SMTPUTF8."),
    p("header_size_limit", "102400", int(1), "Octets of the message header section cleanup keeps as headers; the rest of an oversized header goes into the body."),
    p("smtpd_forbid_bare_newline_reject_code", "521", int(400), "The reply code when smtpd_forbid_bare_newline = reject refuses a bare LF and disconnects (Postfix's default is 550; 521 says the server closes the session)."),
    p("smtpd_tls_cert_file", "", PATH, "The SMTP server's PEM certificate chain; empty means no TLS."),
    p("smtpd_tls_key_file", "$smtpd_tls_cert_file", PATH, "The SMTP server's PEM private key."),
    p("smtpd_tls_security_level", "", Kind::Enum(&["", "none", "may", "encrypt"]), "SMTP server TLS: none, may (offer STARTTLS) or encrypt (require it); empty means none."),
    // --- SMTP client ---
    p("smtp_connect_timeout", "30s", secs(1), "How long the SMTP client waits for a TCP connection to complete."),
    p("smtp_destination_concurrency_limit", "$default_destination_concurrency_limit", int(0), "Parallel deliveries to one destination by the SMTP client; 0 means no limit."),
    // --- virtual delivery ---
    p("virtual_mailbox_domains", "$virtual_mailbox_maps", LIST, "Domains whose recipients have mailboxes under virtual_mailbox_base."),
    p("virtual_mailbox_maps", "", LIST, "Lookup tables from a recipient address to its mailbox path under virtual_mailbox_base."),
    p("virtual_mailbox_base", "", PATH, "The directory all virtual mailbox paths are relative to."),
    p("virtual_mailbox_limit", "51200000", SIZE, "The largest mailbox file the virtual agent appends to, in bytes; 0 means no limit."),
    p("virtual_uid_maps", "", LIST, "Lookup tables from a recipient to the uid its mailbox is owned by."),
    p("virtual_gid_maps", "", LIST, "Lookup tables from a recipient to the gid its mailbox is owned by."),
    p("virtual_minimum_uid", "100", int(1), "The smallest uid virtual_uid_maps may name."),
    p("virtual_destination_recipient_limit", "$default_destination_recipient_limit", int(1), "Recipients per delivery by the virtual agent."),
    // --- local delivery ---
    p("alias_maps", "hash:/etc/aliases", LIST, "Alias tables the local delivery agent consults."),
    p("alias_database", "hash:/etc/aliases", LIST, "Alias tables that newaliases rebuilds."),
    p("home_mailbox", "", TEXT, "A mailbox path relative to the recipient's home; empty means mail_spool_directory."),
    p("mail_spool_directory", "/var/mail", PATH, "Where per-user mailbox files live when home_mailbox is empty."),
    p("allow_mail_to_commands", "alias, forward", Kind::Flags(DELIVERY_FLAGS), "Where a `|command` destination is allowed: alias, forward, include."),
    p("allow_mail_to_files", "alias, forward", Kind::Flags(DELIVERY_FLAGS), "Where a `/file` destination is allowed: alias, forward, include."),
    p("local_recipient_maps", "unix:passwd.byname $alias_maps", LIST, "Tables of valid local recipients; mail to others in mydestination is rejected. Empty disables the check."),
    p("local_destination_recipient_limit", "1", int(1), "Recipients per delivery by the local agent."),
    p("command_time_limit", "1000s", secs(1), "The longest a `|command` delivery may run before it is killed and the delivery deferred."),
    p("local_home_base", "/home", PATH, "Postern: the directory local users' homes lie beneath; the local agent's sandbox covers it, so a home outside it gets no home_mailbox delivery and no .forward."),
    p("local_passwd_file", "/etc/passwd", PATH, "Postern: the passwd(5) file local users are looked up in (unix:passwd.byname)."),
    p("local_group_file", "/etc/group", PATH, "Postern: the group(5) file a local user's supplementary groups are read from."),
    p("deliver_lock_attempts", "20", int(1), "How many times the local and virtual agents try to lock a mailbox before the delivery is deferred."),
    p("deliver_lock_delay", "1s", secs(1), "The pause between two attempts to lock a mailbox."),
    p("stale_lock_time", "500s", secs(1), "A dot-lock file older than this was left by a dead process and is removed."),
    // --- queue manager ---
    p("minimal_backoff_time", "300s", secs(1), "The shortest time a deferred message waits before the next attempt."),
    p("maximal_backoff_time", "4000s", secs(1), "The longest time a deferred message waits before the next attempt."),
    p("queue_run_delay", "300s", secs(1), "How often the deferred queue is scanned."),
    p("maximal_queue_lifetime", "5d", days(), "How long a message stays queued before it is returned as undeliverable."),
    p("bounce_queue_lifetime", "5d", days(), "How long a bounce message stays queued before it is given up."),
    p("delay_warning_time", "0h", Kind::Time { unit: TimeUnit::Hours, min_seconds: 0 }, "When to tell the sender a message is delayed; 0 means never."),
    p("qmgr_message_active_limit", "20000", int(1), "Messages in the active queue at once."),
    p("initial_destination_concurrency", "5", int(1), "Parallel deliveries to a destination at first (slow start)."),
    p("default_destination_concurrency_limit", "20", int(0), "The most parallel deliveries to one destination; 0 means no limit."),
    p("default_destination_recipient_limit", "50", int(1), "The most recipients per delivery."),
    // --- logging and notices ---
    p("maillog_file", "", PATH, "A file to log to instead of syslog; empty means syslog."),
    p("syslog_name", "postern", TEXT, "The prefix of every log line."),
    p("notify_classes", "resource, software", Kind::Flags(NOTIFY_CLASSES), "Problems the postmaster is told about."),
    p("bounce_notice_recipient", "postmaster", TEXT, "Who gets a copy of bounces when notify_classes has bounce."),
    p("2bounce_notice_recipient", "postmaster", TEXT, "Who gets undeliverable bounces (double bounces)."),
    p("bounce_size_limit", "50000", SIZE, "The most of the original message a delivery status notification returns, in bytes; beyond it only the headers are returned."),
];

/// The known parameter called `name`.
pub fn param(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name == name)
}

/// Every known parameter.
pub fn params() -> &'static [Param] {
    PARAMS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for p in PARAMS {
            assert!(seen.insert(p.name), "duplicate {}", p.name);
            assert!(
                p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{}",
                p.name
            );
            assert!(!p.description.is_empty() && !p.description.contains('\n'));
        }
    }

    #[test]
    fn raw_defaults_parse_and_refer_only_to_known_names() {
        for p in PARAMS {
            if let DefaultValue::Raw(raw) = p.default {
                let pieces = expand::parse(raw).unwrap_or_else(|e| panic!("{}: {e:?}", p.name));
                for r in expand::references(&pieces) {
                    assert!(param(r.name).is_some(), "{} refers to {}", p.name, r.name);
                }
                if !raw.contains('$') {
                    assert!(p.kind.accepts(raw), "{} default {raw:?}", p.name);
                }
            }
        }
    }

    #[test]
    fn required_parameters_are_present() {
        for name in [
            "myhostname",
            "mydomain",
            "myorigin",
            "mydestination",
            "mynetworks",
            "inet_interfaces",
            "inet_protocols",
            "relay_domains",
            "relayhost",
            "message_size_limit",
            "line_length_limit",
            "queue_directory",
            "config_directory",
            "daemon_directory",
            "command_directory",
            "data_directory",
            "default_process_limit",
            "max_use",
            "max_idle",
            "smtpd_banner",
            "mail_name",
            "smtpd_timeout",
            "smtpd_hard_error_limit",
            "smtpd_soft_error_limit",
            "smtpd_error_sleep_time",
            "smtpd_recipient_limit",
            "smtpd_forbid_bare_newline",
            "smtpd_tls_cert_file",
            "smtpd_tls_key_file",
            "smtpd_tls_security_level",
            "virtual_mailbox_domains",
            "virtual_mailbox_maps",
            "virtual_mailbox_base",
            "virtual_mailbox_limit",
            "virtual_uid_maps",
            "virtual_gid_maps",
            "virtual_minimum_uid",
            "alias_maps",
            "alias_database",
            "home_mailbox",
            "mail_spool_directory",
            "allow_mail_to_commands",
            "allow_mail_to_files",
            "local_recipient_maps",
            "minimal_backoff_time",
            "maximal_backoff_time",
            "queue_run_delay",
            "maximal_queue_lifetime",
            "bounce_queue_lifetime",
            "delay_warning_time",
            "qmgr_message_active_limit",
            "initial_destination_concurrency",
            "default_destination_concurrency_limit",
            "default_destination_recipient_limit",
            "smtp_destination_concurrency_limit",
            "local_destination_recipient_limit",
            "virtual_destination_recipient_limit",
            "smtp_connect_timeout",
            "maillog_file",
            "syslog_name",
            "notify_classes",
            "bounce_notice_recipient",
            "2bounce_notice_recipient",
            "bounce_size_limit",
            "setgid_group",
            "sandbox_enforcement",
            "smtpd_user",
            "queue_user",
            "smtp_user",
            "vmail_user",
            "bounce_user",
            "proxymap_user",
            "master_stop_timeout",
        ] {
            assert!(param(name).is_some(), "{name} missing");
        }
    }
}
