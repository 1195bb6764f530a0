//! The bounce daemon's library: delivery status notifications (RFC 3464) about the recipients
//! the queue manager names, composed from the queue file and injected through cleanup.
//!
//! Trusts: the master (control channel, the channels it hands over) for framing only; the
//! queue manager's requests are decoded by `protocol`, and the queue file they point to is read
//! through `protocol::queue` and verified. Runs as `bounce_user`, with no filesystem access
//! and no network: it reads only the descriptor it is handed and talks only to cleanup.

#![forbid(unsafe_code)]

pub mod config;
pub mod inject;
pub mod report;
pub mod service;

#[cfg(test)]
mod testing;

pub use config::Config;
pub use service::Bounce;
