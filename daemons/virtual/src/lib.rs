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
//! Modules: `config` (settings and tables), `content` (the message text read from the
//! queue file descriptor with `pread`), `maildir` and `mbox` (the two mailbox formats),
//! `agent` (one request: per recipient lookup, loop check, delivery, result).

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod content;
pub mod maildir;
pub mod mbox;
mod outcome;
#[cfg(test)]
mod testing;

pub use agent::serve;
pub use config::{Config, ConfigError};
pub use outcome::Verdict;
