//! Postern's SMTP server: one client session at a time per process, with blocking I/O,
//! handing each message to cleanup over the process's one cleanup channel.
//!
//! Trusts: the master for the listener and channels it hands over; nothing a client
//! sends; cleanup's answers only as `protocol` decodes them. After start-up the process
//! has no filesystem access at all (its sandbox profile lists no paths): the accepted
//! connection and the cleanup and proxymap channels are its only ways in and out.
//!
//! Layout, one module per phase: `config` (every setting, read before the sandbox),
//! `conn` (the connection, the command-line reader, pipelined replies), `session`
//! (state and command loop), `ehlo`, `mail`, `rcpt`, `data` (with `protocol::smtp::data`, the DATA reader),
//! `bdat`, `simple` (RSET, VRFY, HELP), `received` (the Received: header),
//! `local_recipients` (`local_recipient_maps`: tables read before the sandbox, accounts
//! asked of proxymap at each RCPT). The hand-over
//! to cleanup is the runtime's `daemon::cleanup_client`, with `smtpd_timeout` as its
//! limit; any failure of it (a broken or closed channel, no progress in time) is a
//! temporary failure, `451 4.3.0 Error: queue file write error`.

#![forbid(unsafe_code)]

mod bdat;
pub mod config;
pub mod conn;
mod data;
mod ehlo;
pub mod local_recipients;
mod mail;
mod rcpt;
pub mod received;
pub mod session;
mod simple;

#[cfg(test)]
mod tests;

pub use config::{BareNewline, Config, ConfigError};
pub use daemon::cleanup_client::{CleanupLink, Connect};
pub use session::run;
