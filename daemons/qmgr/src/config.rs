//! qmgr's settings from `main.cf` (with the service's `-o` overrides), read once at start-up,
//! and the transport decision (Postfix's trivial-rewrite, reduced to what Postern has).
//!
//! Trusts: the settings (the administrator's). The recipient addresses it classifies are
//! validated `protocol` types read from a queue file.
//!
//! The transport of a recipient: its domain in `virtual_mailbox_domains` → `virtual`; in
//! `mydestination` → `local`; anything else → `smtp` with the domain as next hop (the smtp
//! client applies `relayhost` itself). The bare `<Postmaster>` is `local` at `$myhostname`.
//! An address literal (`user@[192.0.2.1]`) has no domain to name as the request's next hop;
//! such recipients are deferred (4.3.5) until the smtp client can take literal next hops.
//! Per-transport limits are `TRANSPORT_destination_recipient_limit` and
//! `TRANSPORT_destination_concurrency_limit` where `main.cf` knows the name, else the
//! `default_` ones, as Postfix.

use std::time::Duration;

use conf::MainCf;
use policy::DomainList;
use protocol::address::Host;
use protocol::delivery::RECIPIENTS_PER_REQUEST;
use protocol::queue::Recipient;
use protocol::{Domain, ForwardPath};

use crate::backoff::Backoff;
use crate::schedule::Concurrency;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Conf(#[from] conf::ConfError),
    #[error("{name}: {problem}")]
    Value { name: &'static str, problem: String },
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A transport (master.cf service) and the next hop.
    Transport(&'static str, Domain),
    /// Cannot be routed now: defer with this status and text.
    Defer(&'static str, &'static str),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub queue_directory: std::path::PathBuf,
    pub backoff: Backoff,
    pub queue_run_delay: Duration,
    pub maximal_queue_lifetime: Duration,
    pub bounce_queue_lifetime: Duration,
    /// Zero: no delay warnings.
    pub delay_warning_time: Duration,
    pub active_limit: usize,
    pub initial_concurrency: usize,
    /// Requests in flight per transport (each holds one agent process).
    pub transport_cap: usize,
    myhostname: Domain,
    mydestination: DomainList,
    virtual_mailbox_domains: DomainList,
    recipient_limits: [(&'static str, usize); 3],
    concurrency_limits: [(&'static str, usize); 3],
}

fn int(s: &MainCf, name: &'static str) -> Result<usize, ConfigError> {
    let v = s.get_int(name)?;
    usize::try_from(v).map_err(|_| ConfigError::Value {
        name,
        problem: format!("{v} is out of range"),
    })
}

/// A per-transport parameter if `main.cf` knows it, else the default one.
fn per_transport(
    s: &MainCf,
    transport: &str,
    what: &str,
    default: &'static str,
) -> Result<usize, ConfigError> {
    let name = format!("{transport}_{what}");
    match s.get_int(&name) {
        Ok(v) => usize::try_from(v).map_err(|_| ConfigError::Value {
            name: default,
            problem: format!("{name} = {v} is out of range"),
        }),
        Err(_) => int(s, default),
    }
}

fn domains(s: &MainCf, name: &'static str) -> Result<DomainList, ConfigError> {
    DomainList::parse(&s.get(name)?).map_err(|e| ConfigError::Value {
        name,
        problem: e.to_string(),
    })
}

pub const TRANSPORTS: [&str; 3] = ["smtp", "virtual", "local"];

impl Config {
    pub fn from_settings(s: &MainCf) -> Result<Config, ConfigError> {
        let host = s.get("myhostname")?;
        let myhostname = Domain::parse(host.trim(), false).map_err(|e| ConfigError::Value {
            name: "myhostname",
            problem: e.to_string(),
        })?;
        let mut recipient_limits = [("", 0); 3];
        let mut concurrency_limits = [("", 0); 3];
        for (i, t) in TRANSPORTS.into_iter().enumerate() {
            let r = per_transport(
                s,
                t,
                "destination_recipient_limit",
                "default_destination_recipient_limit",
            )?;
            // A request carries at most RECIPIENTS_PER_REQUEST (one datagram).
            recipient_limits[i] = (t, r.clamp(1, RECIPIENTS_PER_REQUEST));
            let c = per_transport(
                s,
                t,
                "destination_concurrency_limit",
                "default_destination_concurrency_limit",
            )?;
            concurrency_limits[i] = (t, c);
        }
        Ok(Config {
            queue_directory: std::path::PathBuf::from(s.get("queue_directory")?.trim()),
            backoff: Backoff {
                minimal: s.get_time("minimal_backoff_time")?,
                maximal: s.get_time("maximal_backoff_time")?,
            },
            queue_run_delay: s.get_time("queue_run_delay")?,
            maximal_queue_lifetime: s.get_time("maximal_queue_lifetime")?,
            bounce_queue_lifetime: s.get_time("bounce_queue_lifetime")?,
            delay_warning_time: s.get_time("delay_warning_time")?,
            active_limit: int(s, "qmgr_message_active_limit")?.max(1),
            initial_concurrency: int(s, "initial_destination_concurrency")?.max(1),
            transport_cap: match int(s, "default_process_limit") {
                Ok(0) | Err(_) => usize::MAX,
                Ok(n) => n,
            },
            myhostname,
            mydestination: domains(s, "mydestination")?,
            virtual_mailbox_domains: domains(s, "virtual_mailbox_domains")?,
            recipient_limits,
            concurrency_limits,
        })
    }

    pub fn recipient_limit(&self, transport: &str) -> usize {
        self.recipient_limits
            .iter()
            .find(|(t, _)| *t == transport)
            .map_or(1, |(_, n)| *n)
    }

    pub fn concurrency(&self, transport: &str) -> Concurrency {
        Concurrency {
            initial: self.initial_concurrency,
            limit: self
                .concurrency_limits
                .iter()
                .find(|(t, _)| *t == transport)
                .map_or(1, |(_, n)| *n),
        }
    }

    /// Where a recipient goes (see the module header).
    pub fn route(&self, rcpt: &Recipient) -> Route {
        let mailbox = match &rcpt.path {
            ForwardPath::Postmaster => {
                return Route::Transport("local", self.myhostname.clone());
            }
            ForwardPath::Mailbox(m) => m,
        };
        let domain = match mailbox.domain() {
            Host::Domain(d) => d,
            Host::Literal(_) => {
                return Route::Defer(
                    "4.3.5",
                    "delivery to an address literal is not supported by this queue manager",
                )
            }
        };
        if self.virtual_mailbox_domains.matches(domain) {
            Route::Transport("virtual", domain.clone())
        } else if self.mydestination.matches(domain) {
            Route::Transport("local", domain.clone())
        } else {
            Route::Transport("smtp", domain.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut s = MainCf::defaults();
        s.set("myhostname", "mx.example.org").unwrap();
        s.set("mydestination", "$myhostname, localhost").unwrap();
        s.set("virtual_mailbox_domains", "v.example.test").unwrap();
        for (k, v) in extra {
            s.set(k, v).unwrap();
        }
        Config::from_settings(&s).unwrap()
    }

    fn rcpt(addr: &str) -> Recipient {
        Recipient {
            path: ForwardPath::parse(addr, false).unwrap(),
            notify: None,
            orcpt: None,
        }
    }

    #[test]
    fn recipients_are_routed_as_trivial_rewrite_would() {
        let c = config(&[]);
        let t = |a: &str| match c.route(&rcpt(a)) {
            Route::Transport(t, h) => format!("{t}:{}", h.as_str()),
            Route::Defer(s, _) => format!("defer {s}"),
        };
        assert_eq!(t("<u@v.example.test>"), "virtual:v.example.test");
        assert_eq!(t("<u@MX.example.org>"), "local:MX.example.org");
        assert_eq!(t("<Postmaster>"), "local:mx.example.org");
        assert_eq!(t("<u@elsewhere.test>"), "smtp:elsewhere.test");
        assert_eq!(t("<u@[192.0.2.1]>"), "defer 4.3.5");
    }

    #[test]
    fn limits_are_per_transport_with_postfix_defaults() {
        let c = config(&[]);
        assert_eq!(c.recipient_limit("local"), 1);
        assert_eq!(c.recipient_limit("virtual"), 50);
        assert_eq!(c.recipient_limit("smtp"), 50);
        assert_eq!(c.concurrency("smtp").limit, 20);
        assert_eq!(c.concurrency("smtp").initial, 5);
        assert_eq!(c.backoff.minimal, Duration::from_secs(300));
        assert_eq!(c.queue_run_delay, Duration::from_secs(300));
        let c = config(&[
            ("virtual_destination_recipient_limit", "2"),
            ("default_destination_recipient_limit", "500"),
            ("minimal_backoff_time", "2s"),
        ]);
        assert_eq!(c.recipient_limit("virtual"), 2);
        assert_eq!(c.recipient_limit("smtp"), RECIPIENTS_PER_REQUEST, "capped");
        assert_eq!(c.backoff.minimal, Duration::from_secs(2));
    }
}
