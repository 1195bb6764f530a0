//! What the bounce daemon takes from `main.cf`, read once at start-up.
//!
//! Trusts: the configuration, which is the administrator's; values are still checked here (a
//! `myhostname` that is not a domain would put arbitrary text into every report's header), so
//! that a bad setting stops the daemon at start-up instead of producing broken mail.
//!
//! Decisions:
//! - `2bounce_notice_recipient` is a list, as in Postfix; an item without `@` is qualified with
//!   `@$myorigin`, as Postfix's address rewriting appends `$myorigin` to an unqualified address.

use std::time::Duration;

use conf::MainCf;
use protocol::{Domain, ForwardPath};

/// Why the settings cannot run the bounce daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Conf(#[from] conf::ConfError),
    #[error("{name} = {value:?} is not a domain name")]
    NotADomain { name: &'static str, value: String },
    #[error("2bounce_notice_recipient item {value:?} is not an address")]
    BadRecipient { value: String },
    #[error("2bounce_notice_recipient is empty: double bounces would have nowhere to go")]
    NoRecipient,
}

/// The settings a report is composed with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Names this system in the report (`Reporting-MTA`, `From:`, `Received:`).
    pub myhostname: Domain,
    /// The most of the original message a failure report returns in full.
    pub bounce_size_limit: u64,
    /// How long the queue manager keeps trying: a delay warning says until when.
    pub maximal_queue_lifetime: Duration,
    /// Where a failure report about a message from `<>` goes.
    pub double_bounce_recipients: Vec<ForwardPath>,
}

impl Config {
    pub fn from_settings(settings: &MainCf) -> Result<Config, ConfigError> {
        let domain = |name: &'static str| -> Result<Domain, ConfigError> {
            let value = settings.get(name)?;
            Domain::parse(value.trim(), false).map_err(|_| ConfigError::NotADomain {
                name,
                value: value.clone(),
            })
        };
        let myhostname = domain("myhostname")?;
        let myorigin = domain("myorigin")?;
        let mut double_bounce_recipients = Vec::new();
        for item in settings.get_list("2bounce_notice_recipient")? {
            let qualified = if item.contains('@') {
                item.clone()
            } else {
                format!("{item}@{myorigin}")
            };
            let path = ForwardPath::parse(&format!("<{qualified}>"), true)
                .map_err(|_| ConfigError::BadRecipient { value: item })?;
            double_bounce_recipients.push(path);
        }
        if double_bounce_recipients.is_empty() {
            return Err(ConfigError::NoRecipient);
        }
        Ok(Config {
            myhostname,
            bounce_size_limit: settings.get_size("bounce_size_limit")?,
            maximal_queue_lifetime: settings.get_time("maximal_queue_lifetime")?,
            double_bounce_recipients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> MainCf {
        let base = "myhostname = mx.example.test\nmydomain = example.test\n";
        MainCf::parse(&format!("{base}{text}"), std::path::Path::new("main.cf")).unwrap()
    }

    #[test]
    fn defaults_qualify_postmaster_with_myorigin() {
        let c = Config::from_settings(&settings("")).unwrap();
        assert_eq!(c.myhostname.as_str(), "mx.example.test");
        assert_eq!(c.bounce_size_limit, 50_000);
        assert_eq!(c.maximal_queue_lifetime, Duration::from_secs(5 * 86_400));
        assert_eq!(
            c.double_bounce_recipients,
            vec![ForwardPath::parse("<postmaster@mx.example.test>", false).unwrap()]
        );
    }

    #[test]
    fn lists_and_qualified_items_are_kept() {
        let c = Config::from_settings(&settings(
            "myorigin = example.test\n2bounce_notice_recipient = admin, ops@example.org\n",
        ))
        .unwrap();
        let got: Vec<String> = c
            .double_bounce_recipients
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["<admin@example.test>", "<ops@example.org>"]);
    }

    #[test]
    fn bad_values_stop_the_daemon() {
        assert!(Config::from_settings(&settings("2bounce_notice_recipient = a b@@c\n")).is_err());
        assert!(matches!(
            Config::from_settings(&settings("2bounce_notice_recipient =\n")),
            Err(ConfigError::NoRecipient)
        ));
    }
}
