//! Every setting a session uses, read once from `main.cf` (with the service's `-o`
//! overrides) before the sandbox, so that a bad value stops the daemon at start-up with
//! a message naming the parameter instead of failing a client later.
//!
//! Trusts: `conf` to have validated each value's kind and `policy` to have parsed the
//! lists. Decisions:
//! - `smtpd_forbid_bare_newline = yes` is Postfix's synonym for `normalize`; `no`
//!   behaves as `normalize` in DATA, because Postern never lets a bare LF end the
//!   data, whatever the setting (Postfix 3.9's `no` still does; that is the smuggling
//!   hole this setting exists to close).
//! - `virtual_mailbox_domains` defaults to `$virtual_mailbox_maps` as in Postfix; a
//!   lookup table in that list stands for the domains the table names
//!   (`policy::DomainList::from_elements_with_tables`).
//! - `virtual_mailbox_maps` is read here, at start-up: the table files are
//!   world-readable and the sandbox gives smtpd no path at all, so a changed table is
//!   seen by the next smtpd process. A table that cannot be read stops the daemon.
//! - `local_recipient_maps` is read here too (`local_recipients`), but a table of it
//!   that cannot be read defers local recipients instead of stopping the daemon.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use conf::MainCf;

use crate::local_recipients::LocalRecipients;
use policy::{DomainList, DomainListError, Maps, Networks, NetworksError, TableError, Tables};

pub use protocol::smtp::data::BareNewline;

/// Why the settings cannot run an SMTP server.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("parameter {name}: {source}")]
    Conf {
        name: &'static str,
        #[source]
        source: conf::ConfError,
    },
    #[error("parameter {name}: {source}")]
    Domains {
        name: &'static str,
        #[source]
        source: DomainListError,
    },
    #[error("parameter mynetworks: {0}")]
    Networks(#[from] NetworksError),
    #[error("parameter {name}: {source}")]
    Table {
        name: &'static str,
        #[source]
        source: TableError,
    },
    #[error("parameter {name} = {value}: {why}")]
    Value {
        name: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The settings of one smtpd process.
#[derive(Debug, Clone)]
pub struct Config {
    pub myhostname: String,
    /// The greeting text after `220 `.
    pub banner: String,
    /// `mail_name`, in the Received: header's `by` clause.
    pub mail_name: String,
    /// `smtpd_timeout`: the longest wait for one read or write.
    pub timeout: Duration,
    pub hard_error_limit: u32,
    pub soft_error_limit: u32,
    pub error_sleep: Duration,
    pub junk_command_limit: u32,
    pub recipient_limit: usize,
    /// `message_size_limit`; 0 means no limit.
    pub message_size_limit: u64,
    /// `line_length_limit`: the longest command line.
    pub line_length_limit: usize,
    pub bare_newline: BareNewline,
    /// `smtpd_forbid_bare_newline_reject_code`: 4xx or 5xx.
    pub bare_newline_reject_code: u16,
    pub forbid_unauth_pipelining: bool,
    pub helo_required: bool,
    pub disable_vrfy: bool,
    pub smtputf8: bool,
    pub tables: Tables,
    /// `virtual_mailbox_maps`: a recipient of `virtual_mailbox_domains` not found here is
    /// rejected at RCPT. Empty disables the check (as in Postfix).
    pub virtual_mailbox_maps: Maps,
    /// `local_recipient_maps`: the users of `mydestination` accepted at RCPT.
    pub local_recipients: LocalRecipients,
}

fn get(s: &MainCf, name: &'static str) -> Result<String, ConfigError> {
    s.get(name)
        .map_err(|source| ConfigError::Conf { name, source })
}

fn count(s: &MainCf, name: &'static str) -> Result<u32, ConfigError> {
    let v = s
        .get_int(name)
        .map_err(|source| ConfigError::Conf { name, source })?;
    u32::try_from(v).map_err(|_| ConfigError::Value {
        name,
        value: v.to_string(),
        why: "must be between 0 and 4294967295",
    })
}

fn flag(s: &MainCf, name: &'static str) -> Result<bool, ConfigError> {
    s.get_bool(name)
        .map_err(|source| ConfigError::Conf { name, source })
}

fn time(s: &MainCf, name: &'static str) -> Result<Duration, ConfigError> {
    s.get_time(name)
        .map_err(|source| ConfigError::Conf { name, source })
}

fn domains(s: &MainCf, name: &'static str) -> Result<DomainList, ConfigError> {
    let list = s
        .get_list(name)
        .map_err(|source| ConfigError::Conf { name, source })?;
    DomainList::from_elements(list.iter().map(String::as_str))
        .map_err(|source| ConfigError::Domains { name, source })
}

/// A domain list whose `type:table` elements are read now.
fn domains_with_tables(s: &MainCf, name: &'static str) -> Result<DomainList, ConfigError> {
    let list = s
        .get_list(name)
        .map_err(|source| ConfigError::Conf { name, source })?;
    DomainList::from_elements_with_tables(list.iter().map(String::as_str), |p: &Path| File::open(p))
        .map_err(|source| ConfigError::Domains { name, source })
}

fn maps(s: &MainCf, name: &'static str) -> Result<Maps, ConfigError> {
    let list = s
        .get_list(name)
        .map_err(|source| ConfigError::Conf { name, source })?;
    Maps::load(list.iter().map(String::as_str), |p: &Path| File::open(p))
        .map_err(|source| ConfigError::Table { name, source })
}

impl Config {
    /// Reads every setting; the first bad one is the error.
    pub fn from_settings(s: &MainCf) -> Result<Config, ConfigError> {
        let bare_newline = match get(s, "smtpd_forbid_bare_newline")?.trim() {
            "normalize" | "yes" => BareNewline::Normalize,
            "reject" => BareNewline::Reject,
            "no" => BareNewline::No,
            other => {
                return Err(ConfigError::Value {
                    name: "smtpd_forbid_bare_newline",
                    value: other.to_owned(),
                    why: "must be normalize, yes, reject or no",
                })
            }
        };
        let bare_newline_reject_code = count(s, "smtpd_forbid_bare_newline_reject_code")?;
        let bare_newline_reject_code = match u16::try_from(bare_newline_reject_code) {
            Ok(code) if (400..600).contains(&code) => code,
            _ => {
                return Err(ConfigError::Value {
                    name: "smtpd_forbid_bare_newline_reject_code",
                    value: bare_newline_reject_code.to_string(),
                    why: "must be a 4xx or 5xx SMTP reply code",
                })
            }
        };
        let line_length_limit = count(s, "line_length_limit")? as usize;
        if line_length_limit < 512 {
            // RFC 5321 section 4.5.3.1.4: a server must accept 512-octet command lines.
            return Err(ConfigError::Value {
                name: "line_length_limit",
                value: line_length_limit.to_string(),
                why: "must be at least 512 (RFC 5321's command line length)",
            });
        }
        let mynetworks = s
            .get_list("mynetworks")
            .map_err(|source| ConfigError::Conf {
                name: "mynetworks",
                source,
            })?;
        let myhostname = get(s, "myhostname")?.trim().to_owned();
        Ok(Config {
            banner: get(s, "smtpd_banner")?.trim().to_owned(),
            mail_name: get(s, "mail_name")?.trim().to_owned(),
            timeout: time(s, "smtpd_timeout")?,
            hard_error_limit: count(s, "smtpd_hard_error_limit")?,
            soft_error_limit: count(s, "smtpd_soft_error_limit")?,
            error_sleep: time(s, "smtpd_error_sleep_time")?,
            junk_command_limit: count(s, "smtpd_junk_command_limit")?,
            recipient_limit: count(s, "smtpd_recipient_limit")? as usize,
            message_size_limit: s.get_size("message_size_limit").map_err(|source| {
                ConfigError::Conf {
                    name: "message_size_limit",
                    source,
                }
            })?,
            line_length_limit,
            bare_newline,
            bare_newline_reject_code,
            forbid_unauth_pipelining: flag(s, "smtpd_forbid_unauth_pipelining")?,
            helo_required: flag(s, "smtpd_helo_required")?,
            disable_vrfy: flag(s, "disable_vrfy_command")?,
            smtputf8: flag(s, "smtputf8_enable")?,
            tables: Tables {
                mydestination: domains(s, "mydestination")?,
                virtual_mailbox_domains: domains_with_tables(s, "virtual_mailbox_domains")?,
                relay_domains: domains(s, "relay_domains")?,
                mynetworks: Networks::from_elements(mynetworks.iter().map(String::as_str))?,
            },
            virtual_mailbox_maps: maps(s, "virtual_mailbox_maps")?,
            local_recipients: LocalRecipients::load(s).map_err(|source| ConfigError::Conf {
                name: "local_recipient_maps",
                source,
            })?,
            myhostname,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> MainCf {
        let env = conf::Environment::with_hostname("mx.example.test").unwrap();
        MainCf::parse_with_env(text, std::path::Path::new("main.cf"), env).unwrap()
    }

    #[test]
    fn defaults_are_postfix_defaults() {
        let c = Config::from_settings(&settings("")).unwrap();
        assert_eq!(c.myhostname, "mx.example.test");
        assert_eq!(c.banner, "mx.example.test ESMTP Postern");
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.hard_error_limit, 20);
        assert_eq!(c.recipient_limit, 1000);
        assert_eq!(c.message_size_limit, 10_240_000);
        assert_eq!(c.line_length_limit, 2048);
        assert_eq!(c.bare_newline, BareNewline::Normalize);
        assert!(c.forbid_unauth_pipelining);
        assert!(!c.helo_required && !c.disable_vrfy && c.smtputf8);
    }

    #[test]
    fn virtual_mailbox_domains_default_to_the_domains_of_the_maps() {
        let dir = std::env::temp_dir().join(format!("smtpd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let table = dir.join("vmailbox");
        std::fs::write(&table, "u@hosted.example hosted.example/u/\n").unwrap();
        let c = Config::from_settings(&settings(&format!(
            "virtual_mailbox_maps = texthash:{}\n",
            table.display()
        )));
        std::fs::remove_dir_all(&dir).unwrap();
        let c = c.unwrap();
        let domain = |d: &str| protocol::address::Domain::parse(d, false).unwrap();
        assert!(c
            .tables
            .virtual_mailbox_domains
            .matches(&domain("hosted.example")));
        assert!(!c
            .tables
            .virtual_mailbox_domains
            .matches(&domain("other.example")));
        assert_eq!(
            c.virtual_mailbox_maps.get("U@hosted.example"),
            Some("hosted.example/u/")
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let err = Config::from_settings(&settings("line_length_limit = 100\n")).unwrap_err();
        assert!(err.to_string().contains("line_length_limit"), "{err}");
        let err = Config::from_settings(&settings("virtual_mailbox_maps = hash:/nonexistent/x\n"))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("virtual_mailbox_domains") && text.contains("/nonexistent/x"),
            "{text}"
        );
        let err = Config::from_settings(&settings(
            "virtual_mailbox_domains = example.test\nvirtual_mailbox_maps = regexp:/x\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("virtual_mailbox_maps"), "{err}");
        let err = Config::from_settings(&settings("mynetworks = 10.0.0.0/33\n")).unwrap_err();
        assert!(err.to_string().contains("mynetworks"), "{err}");
    }
}
