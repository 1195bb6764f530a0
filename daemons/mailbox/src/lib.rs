//! The one mailbox writer of Postern's delivery agents: `virtual` (one fixed owner below
//! `virtual_mailbox_base`) and `local` (each delivery in a child that runs as the
//! recipient) both write Maildirs and mbox files through this crate, so the checks, the
//! locks and the file names are the same everywhere.
//!
//! Trusts: the caller for the path and the owner the mailbox must have (they come from
//! the agent's tables or the passwd database). Does not trust: anything on disk below
//! the place the caller names — a user controls their home and may have planted a
//! symlink, a hard link, a FIFO or a file of their own in the mail spool — nor the
//! message text (copied as data, read through `protocol::queue::ContentReader`).
//!
//! Modules: `content` (the message text read by `pread` from the queue file descriptor),
//! `safe_open` (Postfix's `safe_open`: open or create a mailbox file and prove it is the
//! recipient's own regular file), `dirs` (the directories on the way to a mailbox: no
//! symlinks, owned by the owner), `dotlock` (bounded dot-locking), `maildir` and `mbox`
//! (the two formats), `verdict` (a result and its DSN status).

#![forbid(unsafe_code)]

pub mod content;
pub mod dirs;
pub mod dotlock;
pub mod maildir;
pub mod mbox;
pub mod safe_open;
pub mod verdict;

pub use content::Content;
pub use verdict::Verdict;

use std::time::Duration;

/// Postfix's `deliver_lock_attempts`: how many times a locked mailbox is tried.
pub const LOCK_ATTEMPTS: u32 = 20;
/// Postfix's `deliver_lock_delay`: the pause between two lock attempts.
pub const LOCK_DELAY: Duration = Duration::from_secs(1);
/// Postfix's `stale_lock_time`: a dot-lock older than this was left by a dead process.
pub const STALE_LOCK_TIME: Duration = Duration::from_secs(500);

/// What goes on top of the message in every mailbox.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The sender as `Return-Path:` shows it, without brackets (empty for `<>`).
    pub sender: &'a str,
    pub recipient: &'a str,
}

/// The prepended header fields, LF-terminated, in Postfix's order.
pub fn prepended(env: &Envelope<'_>) -> String {
    format!(
        "Return-Path: <{}>\nDelivered-To: {}\n",
        env.sender, env.recipient
    )
}

/// How a mailbox is locked: Postfix's `deliver_lock_attempts` and `deliver_lock_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    pub attempts: u32,
    pub delay: Duration,
    pub stale_after: Duration,
}

impl Default for LockOptions {
    fn default() -> LockOptions {
        LockOptions {
            attempts: LOCK_ATTEMPTS,
            delay: LOCK_DELAY,
            stale_after: STALE_LOCK_TIME,
        }
    }
}

#[cfg(test)]
mod rerun;

#[cfg(test)]
pub(crate) mod testing {
    /// A file with junk octets, then `text` framed as a queue file frames content, then
    /// a trailer: the shape `Content` reads.
    pub(crate) use crate::content::tests::file_with;
    pub(crate) use crate::rerun::rerun_unprivileged;

    /// The uid tests deliver as: the process's own (a test cannot become anyone else
    /// without forking).
    pub fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }
}
