//! Maildir delivery (<https://cr.yp.to/proto/maildir.html>): the message is written to
//! `tmp/`, fsync'd, renamed into `new/`, and `new/` is fsync'd, so a reader never sees a
//! partial file and a delivery reported done survives a crash.
//!
//! Decisions:
//! - Names as Postfix forms them: `tmp/SECONDS.PPID_QCOUNT.HOST` while written, then
//!   `new/SECONDS.VDEVIINODEMMICROSECONDS.HOST` (device and inode of the written file in
//!   hexadecimal), unique on the host without a shared counter. `/` and `:` in the host
//!   name are written `\057` and `\072` as the Maildir spec asks.
//! - The Maildir and its `tmp/`, `new/`, `cur/` are checked on the way (`dirs::ensure`:
//!   directories, not symlinks, owned by the mailbox owner), missing ones made 0700; the
//!   message file is created 0600 with `O_EXCL|O_NOFOLLOW`.
//! - A limit (`virtual_mailbox_limit`) bounds the message file: larger bounces `5.2.2`.
//! - A failure removes the file from `tmp/`. A failed fsync of `new/` after the rename is
//!   logged and the delivery reported done: the file is in `new/` and may already have been
//!   read, so deferring could deliver twice (Postfix does not fsync the directory at all).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::content::Content;
use crate::{dirs, prepended, Envelope, Verdict};

static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// How a Maildir delivery is made.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The largest message file, in octets; 0 means no limit.
    pub limit: u64,
    /// `myhostname`, in file names.
    pub hostname: &'a str,
    /// The uid every directory on the way must belong to.
    pub owner: u32,
}

fn host_part(hostname: &str) -> String {
    hostname.replace('/', "\\057").replace(':', "\\072")
}

/// The name a message has while it is written.
pub fn tmp_name(now: std::time::Duration, hostname: &str) -> String {
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.P{}_Q{}.{}",
        now.as_secs(),
        std::process::id(),
        n,
        host_part(hostname)
    )
}

/// The name a delivered message has in `new/`: Postfix's `SECONDS.VdevIinoMusec.HOST`.
pub fn new_name(now: std::time::Duration, dev: u64, ino: u64, hostname: &str) -> String {
    format!(
        "{}.V{:x}I{:x}M{}.{}",
        now.as_secs(),
        dev,
        ino,
        now.subsec_micros(),
        host_part(hostname)
    )
}

/// Delivers `content` into the Maildir `relative` below `base` (the recipient's home, or
/// `virtual_mailbox_base`).
pub fn deliver(
    base: &Path,
    relative: &Path,
    env: &Envelope<'_>,
    content: &Content<'_>,
    opts: &Options<'_>,
) -> Verdict {
    let top = prepended(env);
    let shown = base.join(relative);
    // LF line ends make the file at most the content plus the prepended fields.
    if opts.limit > 0 && content.len().saturating_add(top.len() as u64) > opts.limit {
        return Verdict::bounced(
            2,
            2,
            format!(
                "cannot create maildir file in {}: message larger than virtual_mailbox_limit ({} octets)",
                shown.display(),
                opts.limit
            ),
        );
    }
    let dir = match dirs::ensure(base, relative, opts.owner) {
        Ok(d) => d,
        Err(e) => return Verdict::refused_dir(&e),
    };
    for sub in ["tmp", "new", "cur"] {
        if let Err(e) = dirs::ensure(&dir, Path::new(sub), opts.owner) {
            return Verdict::refused_dir(&e);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let tmp = dir.join("tmp").join(tmp_name(now, opts.hostname));
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
    {
        Ok(f) => f,
        Err(e) => return Verdict::from_io(&format!("create maildir file {}", tmp.display()), &e),
    };
    let written = write_and_sync(file, &top, content);
    let (dev, ino) = match written {
        Ok(ids) => ids,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Verdict::from_io(&format!("write maildir file {}", tmp.display()), &e);
        }
    };
    let new = dir.join("new").join(new_name(now, dev, ino, opts.hostname));
    if let Err(e) = std::fs::rename(&tmp, &new) {
        let _ = std::fs::remove_file(&tmp);
        return Verdict::from_io(
            &format!("rename maildir file {} to {}", tmp.display(), new.display()),
            &e,
        );
    }
    if let Err(e) = File::open(dir.join("new")).and_then(|d| d.sync_all()) {
        tracing::warn!(mailbox = %dir.display(), "fsync of new/ failed after delivery: {e}");
    }
    Verdict::delivered(format!("delivered to maildir {}", dir.display()))
}

/// Writes and fsyncs the file; its device and inode.
fn write_and_sync(file: File, top: &str, content: &Content<'_>) -> io::Result<(u64, u64)> {
    let mut out = BufWriter::with_capacity(crate::content::CHUNK, file);
    out.write_all(top.as_bytes())?;
    content.copy_lf(&mut out, false)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{file_with, me};
    use std::os::unix::fs::PermissionsExt;

    const TEXT: &[u8] = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n";

    fn env() -> Envelope<'static> {
        Envelope {
            sender: "a@example.org",
            recipient: "u@example.test",
        }
    }

    fn opts(limit: u64) -> Options<'static> {
        Options {
            limit,
            hostname: "mx.example.test",
            owner: me(),
        }
    }

    #[test]
    fn a_message_lands_in_new_under_postfix_s_name_with_its_header_fields() {
        let base = tempfile::tempdir().unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let rel = Path::new("example.test/u");
        let v = deliver(base.path(), rel, &env(), &c, &opts(0));
        assert_eq!(v.outcome, protocol::queue::Outcome::Delivered, "{v:?}");
        let dir = base.path().join(rel);
        let files: Vec<_> = std::fs::read_dir(dir.join("new")).unwrap().collect();
        assert_eq!(files.len(), 1);
        let path = files[0].as_ref().unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let meta = std::fs::metadata(&path).unwrap();
        let (secs, rest) = name.split_once('.').unwrap();
        assert!(secs.bytes().all(|b| b.is_ascii_digit()), "{name}");
        assert!(
            rest.starts_with(&format!("V{:x}I{:x}M", meta.dev(), meta.ino())),
            "{name}"
        );
        assert!(name.ends_with(".mx.example.test"), "{name}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "Return-Path: <a@example.org>\nDelivered-To: u@example.test\nReceived: from x\nSubject: hi\n\nbody\n"
        );
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        for sub in ["", "tmp", "new", "cur"] {
            let m = std::fs::metadata(dir.join(sub)).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o700, "{sub}");
        }
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn host_names_are_escaped() {
        let now = std::time::Duration::from_secs(5);
        assert!(tmp_name(now, "h/o:st").ends_with(".h\\057o\\072st"));
        assert_eq!(new_name(now, 0x801, 0x2a, "h"), "5.V801I2aM0.h");
    }

    #[test]
    fn the_limit_bounces() {
        let base = tempfile::tempdir().unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(base.path(), Path::new("u"), &env(), &c, &opts(40));
        assert_eq!(v.status.to_string(), "5.2.2", "{v:?}");
        assert!(!base.path().join("u").exists());
    }

    #[test]
    fn an_unwritable_mailbox_defers_and_a_later_attempt_delivers() {
        // Root passes permission checks: run this test as nobody in a child instead.
        if crate::testing::rerun_unprivileged(
            "maildir::tests::an_unwritable_mailbox_defers_and_a_later_attempt_delivers",
        ) {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("u");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o500)).unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(base.path(), Path::new("u"), &env(), &c, &opts(0));
        assert_eq!(v.outcome, protocol::queue::Outcome::Deferred, "{v:?}");
        assert_eq!(v.status.to_string(), "4.2.0");
        assert!(v.text.contains("Permission denied"), "{}", v.text);
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let v = deliver(base.path(), Path::new("u"), &env(), &c, &opts(0));
        assert_eq!(v.outcome, protocol::queue::Outcome::Delivered, "{v:?}");
    }

    #[test]
    fn a_symlinked_maildir_or_new_is_refused_and_nothing_is_written_there() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        std::os::unix::fs::symlink(elsewhere.path(), base.path().join("Maildir")).unwrap();
        let v = deliver(base.path(), Path::new("Maildir"), &env(), &c, &opts(0));
        assert_eq!(v.status.to_string(), "4.2.0", "{v:?}");
        assert!(v.text.contains("is a symbolic link"), "{v:?}");
        std::fs::create_dir_all(base.path().join("M2/tmp")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), base.path().join("M2/new")).unwrap();
        let v = deliver(base.path(), Path::new("M2"), &env(), &c, &opts(0));
        assert_eq!(v.status.to_string(), "4.2.0", "{v:?}");
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
