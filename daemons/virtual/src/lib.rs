//! Postern's virtual delivery agent: delivers to mailboxes under `virtual_mailbox_base`
//! that all belong to one fixed uid (the agent's own, `vmail_user`), as Postfix's
//! `virtual(8)` with a single `virtual_uid_maps` owner.
//!
//! Trusts: its settings and the `virtual_mailbox_maps` tables, read at start-up before
//! the sandbox; nothing the queue manager sends (decoded by `protocol`) beyond what the
//! decoder proves; nothing in the message content (the header scan for the loop check
//! is bounded). Its landlock ruleset is the mailbox base alone; it has no network and
//! no path to the spool (the queue file arrives as a read-only descriptor).
//!
//! Modules: `config` (settings and tables), `agent` (one request: per recipient lookup,
//! loop check, delivery, result). The mailboxes are written by the `mailbox` crate, the
//! one writer the local agent uses too (checks, locks and file names alike).

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;

pub use agent::serve;
pub use config::{Config, ConfigError};
pub use mailbox::Verdict;
