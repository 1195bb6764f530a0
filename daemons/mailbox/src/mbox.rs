//! mbox delivery: the message is appended to one file under a `NAME.lock` dot-lock and an
//! `fcntl` write lock (Postfix's `mailbox_delivery_lock = fcntl, dotlock` on Linux).
//!
//! Decisions:
//! - Each message starts with `From SENDER  DATE` (`MAILER-DAEMON` for `<>`, the date in
//!   `asctime` form, UTC as every date the sandboxed daemons write), then `Return-Path:` and
//!   `Delivered-To:`; a line that starts with `From ` is written `>From `; the message ends
//!   with an empty line.
//! - The file is opened by `safe_open::open_append` (regular, one link, not replaced, owned
//!   by the mailbox owner when there is one); a refusal defers `4.2.0` and is logged.
//! - The dot-lock is taken here ([`DotLocking::Take`]), taken where the directory allows it
//!   ([`DotLocking::MayFail`], for file destinations, as Postfix's `MBOX_DOT_LOCK_MAY_FAIL`),
//!   or already held by the caller ([`DotLocking::Held`]: `local`'s privileged side locks a
//!   spool mailbox in a directory the recipient cannot write).
//! - The `fcntl` lock is tried without blocking, `attempts` times `delay` apart.
//! - A limit bounds the file: a message that would make it larger bounces `5.2.2`.
//! - Any write or fsync failure cuts the file back to its old size before the locks are
//!   released, so a reader never sees half a message.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

use crate::content::Content;
use crate::dotlock::{self, LockError};
use crate::safe_open;
use crate::{prepended, Envelope, LockOptions, Verdict};

/// Who takes the dot-lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotLocking {
    /// Take it; no lock, no delivery.
    Take,
    /// Take it if the directory lets this process create it; else go on with `fcntl`.
    MayFail,
    /// The caller holds it.
    Held,
}

/// What kind of file is written: a user's mailbox (owned by the user) or a file an alias or
/// `.forward` names (any owner, and a missing directory bounces as in Postfix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mailbox { owner: u32 },
    File,
}

/// How an mbox delivery is made.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub kind: Kind,
    /// The largest the file may grow, in octets; 0 means no limit.
    pub limit: u64,
    pub lock: LockOptions,
    pub dotlock: DotLocking,
    /// Whether a missing file is created (0600); `false` when the caller made it.
    pub create: bool,
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

fn fcntl_lock(file: &File, path: &Path, opts: &LockOptions) -> Result<(), Verdict> {
    let attempts = opts.attempts.max(1);
    for attempt in 1..=attempts {
        match write_lock(file) {
            Ok(()) => return Ok(()),
            Err(Errno::EAGAIN | Errno::EACCES) => {
                if attempt < attempts {
                    std::thread::sleep(opts.delay);
                }
            }
            Err(e) => {
                return Err(Verdict::from_io(
                    &format!("cannot lock mailbox {}", path.display()),
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
            path.display()
        ),
    ))
}

/// Appends `content` to the mbox file `path`.
pub fn deliver(path: &Path, env: &Envelope<'_>, content: &Content<'_>, opts: &Options) -> Verdict {
    let _dot = match opts.dotlock {
        DotLocking::Held => None,
        DotLocking::Take | DotLocking::MayFail => match dotlock::acquire(path, &opts.lock) {
            Ok(lock) => Some(lock),
            // Postfix's MBOX_DOT_LOCK_MAY_FAIL: a directory that takes no lock file is not
            // a reason to refuse the delivery; the fcntl lock still applies.
            Err(LockError::Io { lock, source }) if opts.dotlock == DotLocking::MayFail => {
                tracing::debug!(%lock, "no dot-lock: {source}");
                None
            }
            Err(e @ LockError::Held { .. }) => return Verdict::deferred(2, 0, e.to_string()),
            Err(LockError::Io { lock, source }) => {
                return Verdict::from_io(&format!("cannot create dot-lock {lock}"), &source)
            }
        },
    };
    let (owner, what) = match opts.kind {
        Kind::Mailbox { owner } => (Some(owner), "mailbox"),
        Kind::File => (None, "file"),
    };
    let file = match safe_open::open_append(path, owner, opts.create, what) {
        Ok(o) => o.file,
        Err(e) => return Verdict::refused(&e, opts.kind == Kind::File),
    };
    if let Err(v) = fcntl_lock(&file, path, &opts.lock) {
        return v;
    }
    let old_len = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Verdict::from_io(&format!("stat {what} {}", path.display()), &e),
    };
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
        Ok(None) => Verdict::delivered(format!("delivered to {what} {}", path.display())),
        Ok(Some(written)) => {
            cut_back(&file, old_len, path);
            Verdict::bounced(
                2,
                2,
                format!(
                    "cannot update mailbox {}: it would exceed the size limit ({} octets) by {} octets",
                    path.display(),
                    opts.limit,
                    old_len.saturating_add(written) - opts.limit
                ),
            )
        }
        Err(e) => {
            cut_back(&file, old_len, path);
            Verdict::from_io(&format!("cannot update {what} {}", path.display()), &e)
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

fn cut_back(file: &File, len: u64, path: &Path) {
    if let Err(e) = file.set_len(len).and_then(|()| file.sync_all()) {
        tracing::error!(
            mailbox = %path.display(),
            "cannot cut the mailbox back to {len} octets after a failed delivery: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{file_with, me};
    use protocol::queue::Outcome;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const TEXT: &[u8] = b"Subject: hi\r\n\r\nFrom the start\r\nbody";

    fn opts(limit: u64) -> Options {
        Options {
            kind: Kind::Mailbox { owner: me() },
            limit,
            lock: LockOptions {
                attempts: 2,
                delay: Duration::from_millis(10),
                stale_after: crate::STALE_LOCK_TIME,
            },
            dotlock: DotLocking::Take,
            create: true,
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
        let mbox = base.path().join("u");
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        for sender in ["a@example.org", ""] {
            let v = deliver(&mbox, &env(sender), &c, &opts(0));
            assert_eq!(v.outcome, Outcome::Delivered, "{v:?}");
        }
        let text = std::fs::read_to_string(&mbox).unwrap();
        assert!(text.starts_with("From a@example.org  "), "{text}");
        assert!(text.contains("\nFrom MAILER-DAEMON  "), "{text}");
        let first_end = text.find("\nFrom MAILER-DAEMON").unwrap() + 1;
        let first = &text[..first_end];
        let after_from = &first[first.find('\n').unwrap() + 1..];
        assert_eq!(
            after_from,
            "Return-Path: <a@example.org>\nDelivered-To: u@example.test\nSubject: hi\n\n>From the start\nbody\n\n"
        );
        let meta = std::fs::metadata(&mbox).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert!(!base.path().join("u.lock").exists());
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
    fn a_held_dot_lock_defers_and_is_left_alone() {
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
        assert!(base.path().join("u.lock").exists());
    }

    #[test]
    fn hard_links_symlinks_fifos_and_foreign_files_are_deferred_untouched() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = base.path().join("elsewhere");
        std::fs::write(&elsewhere, "").unwrap();
        std::fs::hard_link(&elsewhere, base.path().join("hard")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, base.path().join("sym")).unwrap();
        nix::unistd::mkfifo(
            &base.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        for (name, why) in [
            ("hard", "has 2 links"),
            ("sym", "is a symbolic link"),
            ("fifo", "is not a regular file"),
        ] {
            let v = deliver(&base.path().join(name), &env("a@example.org"), &c, &opts(0));
            assert_eq!(
                (v.outcome, v.status.to_string()),
                (Outcome::Deferred, "4.2.0".to_owned()),
                "{name}: {v:?}"
            );
            assert!(v.text.contains(why), "{name}: {v:?}");
        }
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"");
        let planted = base.path().join("planted");
        std::fs::write(&planted, "").unwrap();
        let mut foreign = opts(0);
        foreign.kind = Kind::Mailbox { owner: me() + 1 };
        let v = deliver(&planted, &env("a@example.org"), &c, &foreign);
        assert!(v.text.contains("is not owned by the recipient"), "{v:?}");
        assert_eq!(std::fs::read(&planted).unwrap(), b"");
    }

    #[test]
    fn a_file_in_a_missing_directory_bounces_as_postfix_does() {
        let base = tempfile::tempdir().unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let mut o = opts(0);
        o.kind = Kind::File;
        o.dotlock = DotLocking::MayFail;
        let path = base.path().join("missing/file");
        let v = deliver(&path, &env("a@example.org"), &c, &o);
        assert_eq!(v.status.to_string(), "5.2.0", "{v:?}");
        assert_eq!(
            v.text,
            format!(
                "cannot open file {}: No such file or directory",
                path.display()
            )
        );
    }
}
