//! mbox delivery: the message is appended to one file, under both a `NAME.lock`
//! dot-lock and an `fcntl` write lock (what mail readers of this format expect, as
//! Postfix does with `mailbox_delivery_lock = fcntl, dotlock`).
//!
//! Trusts: the mailbox path (checked to stay below the base). Decisions:
//! - Each message starts with `From SENDER DATE` (`MAILER-DAEMON` for `<>`, the date in
//!   `asctime` form, UTC as every date the sandboxed daemons write), then
//!   `Return-Path:` and `Delivered-To:`; a body line that starts with `From ` is written
//!   `>From `; the message ends with an empty line.
//! - The mailbox must be a regular file with one link (Postfix's check against a
//!   planted hard link); it is created mode 0600 when missing, with missing parent
//!   directories mode 0700.
//! - `virtual_mailbox_limit` bounds the mailbox file: a message that would make it
//!   larger bounces `5.2.2` and the file is cut back to its old size.
//! - Any write or fsync failure cuts the file back to its old size before the lock
//!   is released, so a reader never sees half a message.
//! - A dot-lock older than `STALE_LOCK_TIME` is removed as left behind by a dead
//!   process; a lock held for `lock_attempts` tries defers the delivery `4.2.0`.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::config::STALE_LOCK_TIME;
use crate::content::Content;
use crate::maildir::{prepended, Envelope};
use crate::Verdict;

/// How the mailbox is locked and how big it may grow.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub limit: u64,
    pub lock_attempts: u32,
    pub lock_delay: Duration,
}

/// `From ` line date: `Mon Nov 30 13:34:55 2026` (`asctime`), from the RFC 5322 form.
pub fn asctime(t: SystemTime) -> String {
    // "Mon, 30 Nov 2026 13:34:55 +0000"
    let rfc = daemon::date::rfc5322(t);
    let parts: Vec<&str> = rfc.split_whitespace().collect();
    match parts.as_slice() {
        [day, date, month, year, time, _zone] => format!(
            "{} {} {:>2} {} {}",
            day.trim_end_matches(','),
            month,
            date,
            time,
            year
        ),
        _ => rfc,
    }
}

/// A held dot-lock; removed when dropped.
struct DotLock(PathBuf);

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(lock = %self.0.display(), "cannot remove dot-lock: {e}");
        }
    }
}

fn dot_lock(mailbox: &Path, opts: &Options) -> Result<DotLock, Verdict> {
    let mut name = mailbox.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    for attempt in 0..opts.lock_attempts.max(1) {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock)
        {
            Ok(_) => return Ok(DotLock(lock)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = std::fs::symlink_metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_LOCK_TIME);
                if stale {
                    tracing::warn!(lock = %lock.display(), "removing stale dot-lock");
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                if attempt + 1 < opts.lock_attempts {
                    std::thread::sleep(opts.lock_delay);
                }
            }
            Err(e) => {
                return Err(Verdict::from_io(
                    &format!("cannot create dot-lock {}", lock.display()),
                    &e,
                ))
            }
        }
    }
    Err(Verdict::deferred(
        2,
        0,
        format!(
            "cannot lock mailbox {} for exclusive access: {} exists",
            mailbox.display(),
            lock.display()
        ),
    ))
}

fn write_lock(file: &File) -> nix::Result<()> {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(file.as_fd(), FcntlArg::F_SETLK(&lock)).map(drop)
}

fn fcntl_lock(file: &File, mailbox: &Path, opts: &Options) -> Result<(), Verdict> {
    for attempt in 0..opts.lock_attempts.max(1) {
        match write_lock(file) {
            Ok(()) => return Ok(()),
            Err(Errno::EAGAIN | Errno::EACCES) => {
                if attempt + 1 < opts.lock_attempts {
                    std::thread::sleep(opts.lock_delay);
                }
            }
            Err(e) => {
                return Err(Verdict::from_io(
                    &format!("cannot lock mailbox {}", mailbox.display()),
                    &io::Error::from(e),
                ))
            }
        }
    }
    Err(Verdict::deferred(
        2,
        0,
        format!(
            "cannot lock mailbox {} for exclusive access: locked by another process",
            mailbox.display()
        ),
    ))
}

/// Appends `content` to the mbox file `mailbox`.
pub fn deliver(
    mailbox: &Path,
    env: &Envelope<'_>,
    content: &Content<'_>,
    opts: &Options,
) -> Verdict {
    if let Some(parent) = mailbox.parent() {
        if let Err(e) = DirBuilder::new().recursive(true).mode(0o700).create(parent) {
            return Verdict::from_io(&format!("create directory {}", parent.display()), &e);
        }
    }
    let _dot = match dot_lock(mailbox, opts) {
        Ok(lock) => lock,
        Err(v) => return v,
    };
    let file = match OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(mailbox)
    {
        Ok(f) => f,
        Err(e) => return Verdict::from_io(&format!("open mailbox {}", mailbox.display()), &e),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Verdict::from_io(&format!("stat mailbox {}", mailbox.display()), &e),
    };
    if !meta.file_type().is_file() || meta.file_type().is_fifo() || meta.nlink() != 1 {
        return Verdict::deferred(
            2,
            0,
            format!(
                "mailbox {} is not a regular file with one link",
                mailbox.display()
            ),
        );
    }
    if let Err(v) = fcntl_lock(&file, mailbox, opts) {
        return v;
    }
    let old_len = meta.len();
    let from = if env.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        env.sender
    };
    let from_line = format!("From {from}  {}\n", asctime(SystemTime::now()));
    let result = append(&file, &from_line, &prepended(env), content).and_then(|written| {
        if opts.limit > 0 && old_len.saturating_add(written) > opts.limit {
            return Ok(Some(written));
        }
        file.sync_all()?;
        Ok(None)
    });
    match result {
        Ok(None) => Verdict::delivered(format!("delivered to mailbox {}", mailbox.display())),
        Ok(Some(written)) => {
            cut_back(&file, old_len, mailbox);
            Verdict::bounced(
                2,
                2,
                format!(
                    "cannot update mailbox {}: it would exceed virtual_mailbox_limit ({} octets) by {} octets",
                    mailbox.display(),
                    opts.limit,
                    old_len.saturating_add(written) - opts.limit
                ),
            )
        }
        Err(e) => {
            cut_back(&file, old_len, mailbox);
            Verdict::from_io(&format!("cannot update mailbox {}", mailbox.display()), &e)
        }
    }
}

/// Writes one message; the octets written.
fn append(file: &File, from_line: &str, top: &str, content: &Content<'_>) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(crate::content::CHUNK, file);
    out.write_all(from_line.as_bytes())?;
    out.write_all(top.as_bytes())?;
    let mut written = (from_line.len() + top.len()) as u64;
    let mut last = LastByte {
        inner: &mut out,
        last: b'\n',
    };
    written += content.copy_lf(&mut last, true)?;
    // The message ends with a line end, then the empty line that separates messages.
    let tail: &[u8] = if last.last == b'\n' { b"\n" } else { b"\n\n" };
    out.write_all(tail)?;
    written += tail.len() as u64;
    out.flush()?;
    Ok(written)
}

/// A writer that remembers the last octet written through it.
struct LastByte<'a, W: Write> {
    inner: &'a mut W,
    last: u8,
}

impl<W: Write> Write for LastByte<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.last = buf[n - 1];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn cut_back(file: &File, len: u64, mailbox: &Path) {
    if let Err(e) = file.set_len(len).and_then(|()| file.sync_all()) {
        tracing::error!(
            mailbox = %mailbox.display(),
            "cannot cut the mailbox back to {len} octets after a failed delivery: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::file_with;
    use protocol::queue::Outcome;
    use std::os::unix::fs::PermissionsExt;

    const TEXT: &[u8] = b"Subject: hi\r\n\r\nFrom the start\r\nbody";

    fn opts(limit: u64) -> Options {
        Options {
            limit,
            lock_attempts: 2,
            lock_delay: Duration::from_millis(10),
        }
    }

    fn env(sender: &'static str) -> Envelope<'static> {
        Envelope {
            sender,
            recipient: "u@example.test",
        }
    }

    #[test]
    fn asctime_form() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(asctime(t), "Tue Nov 14 22:13:20 2023");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_000_000);
        assert_eq!(asctime(t), "Fri Nov  3 08:26:40 2023");
    }

    #[test]
    fn messages_are_appended_with_from_lines_and_quoting() {
        let base = tempfile::tempdir().unwrap();
        let mbox = base.path().join("example.test/u");
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        for sender in ["a@example.org", ""] {
            let v = deliver(&mbox, &env(sender), &c, &opts(0));
            assert_eq!(v.outcome, Outcome::Delivered, "{v:?}");
        }
        let text = std::fs::read_to_string(&mbox).unwrap();
        let messages: Vec<&str> = text.split_inclusive("\n\n").collect();
        assert!(text.starts_with("From a@example.org  "), "{text}");
        assert!(text.contains("\nFrom MAILER-DAEMON  "), "{text}");
        let first_end = text.find("\nFrom MAILER-DAEMON").unwrap() + 1;
        let first = &text[..first_end];
        let after_from = &first[first.find('\n').unwrap() + 1..];
        assert_eq!(
            after_from,
            "Return-Path: <a@example.org>\nDelivered-To: u@example.test\nSubject: hi\n\n>From the start\nbody\n\n"
        );
        assert!(messages.len() >= 2);
        let meta = std::fs::metadata(&mbox).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert!(!base.path().join("example.test/u.lock").exists());
    }

    #[test]
    fn the_limit_bounces_and_leaves_the_mailbox_as_it_was() {
        let base = tempfile::tempdir().unwrap();
        let mbox = base.path().join("u");
        std::fs::write(&mbox, "From x  Thu Jan  1 00:00:00 1970\n\nold\n\n").unwrap();
        let before = std::fs::read(&mbox).unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(
            &mbox,
            &env("a@example.org"),
            &c,
            &opts(before.len() as u64 + 50),
        );
        assert_eq!(
            (v.outcome, v.status.to_string()),
            (Outcome::Bounced, "5.2.2".to_owned()),
            "{v:?}"
        );
        assert_eq!(std::fs::read(&mbox).unwrap(), before);
        let v = deliver(&mbox, &env("a@example.org"), &c, &opts(1 << 20));
        assert_eq!(v.outcome, Outcome::Delivered, "{v:?}");
    }

    #[test]
    fn a_held_dot_lock_defers() {
        let base = tempfile::tempdir().unwrap();
        let mbox = base.path().join("u");
        std::fs::write(base.path().join("u.lock"), "").unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(&mbox, &env("a@example.org"), &c, &opts(0));
        assert_eq!(
            (v.outcome, v.status.to_string()),
            (Outcome::Deferred, "4.2.0".to_owned()),
            "{v:?}"
        );
        assert!(!mbox.exists());
        // The lock was someone else's: it is still there.
        assert!(base.path().join("u.lock").exists());
    }

    #[test]
    fn a_hard_linked_mailbox_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let mbox = base.path().join("u");
        std::fs::write(base.path().join("elsewhere"), "").unwrap();
        std::fs::hard_link(base.path().join("elsewhere"), &mbox).unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(&mbox, &env("a@example.org"), &c, &opts(0));
        assert_eq!(v.outcome, Outcome::Deferred, "{v:?}");
        assert_eq!(std::fs::read(base.path().join("elsewhere")).unwrap(), b"");
    }
}
