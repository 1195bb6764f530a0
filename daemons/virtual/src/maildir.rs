//! Maildir delivery (the format of <https://cr.yp.to/proto/maildir.html>): the message
//! is written to `tmp/NAME`, fsync'd, renamed to `new/NAME`, and `new/` is fsync'd, so
//! a reader never sees a partial file and a delivery reported done survives a crash.
//!
//! Trusts: the mailbox path (checked by `config::mailbox_path` to stay below the base;
//! landlock keeps the process below the base whatever it is asked). Decisions:
//! - `NAME` is `SECONDS.M<usec>P<pid>Q<n>.<host>`: the spec's time, microseconds and
//!   pid, with a per-process delivery counter so two deliveries in one microsecond
//!   differ; `/` and `:` in the host name are written `\057` and `\072` as the spec asks.
//!   The optional `,S=<size>` is not added.
//! - Missing `tmp/`, `new/`, `cur/` and parent directories are created mode 0700; the
//!   message file is created mode 0600 with `O_EXCL|O_NOFOLLOW`.
//! - The mailbox starts with `Return-Path: <sender>` and `Delivered-To: <recipient>`,
//!   in Postfix's order; Postfix's `X-Original-To:` is not added (Postern does not
//!   rewrite recipients, so it would repeat `Delivered-To:`).
//! - `virtual_mailbox_limit` bounds the message file (Postfix applies it as a file size
//!   limit, `EFBIG`): a larger message bounces `5.2.2`.
//! - Any failure removes the file from `tmp/`.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::content::Content;
use crate::Verdict;

static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// What goes on top of the message.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The sender as `Return-Path:` shows it, without brackets (empty for `<>`).
    pub sender: &'a str,
    pub recipient: &'a str,
}

/// The prepended header fields, LF-terminated.
pub fn prepended(env: &Envelope<'_>) -> String {
    format!(
        "Return-Path: <{}>\nDelivered-To: {}\n",
        env.sender, env.recipient
    )
}

/// A unique Maildir file name.
pub fn unique_name(hostname: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        host
    )
}

fn make_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Delivers `content` into the Maildir at `dir`.
pub fn deliver(
    dir: &Path,
    env: &Envelope<'_>,
    content: &Content<'_>,
    limit: u64,
    hostname: &str,
) -> Verdict {
    let top = prepended(env);
    // LF line ends make the file at most the content plus the prepended fields.
    if limit > 0 && content.len().saturating_add(top.len() as u64) > limit {
        return Verdict::bounced(
            2,
            2,
            format!(
                "cannot create maildir file in {}: message larger than virtual_mailbox_limit ({limit} octets)",
                dir.display()
            ),
        );
    }
    for sub in ["tmp", "new", "cur"] {
        let path = dir.join(sub);
        if let Err(e) = make_dir(&path) {
            return Verdict::from_io(&format!("create maildir {}", path.display()), &e);
        }
    }
    let name = unique_name(hostname);
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
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
    match write_and_sync(file, &top, content) {
        Ok(()) => {}
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Verdict::from_io(&format!("write maildir file {}", tmp.display()), &e);
        }
    }
    if let Err(e) = std::fs::rename(&tmp, &new) {
        let _ = std::fs::remove_file(&tmp);
        return Verdict::from_io(
            &format!("rename maildir file {} to {}", tmp.display(), new.display()),
            &e,
        );
    }
    // The new name is durable only once the directory that holds it is.
    if let Err(e) = File::open(dir.join("new")).and_then(|d| d.sync_all()) {
        // The file is in new/ and may be read; leaving it there and deferring could
        // deliver twice, removing it could lose a message a reader already saw. Postfix
        // does not fsync the directory at all; report success and log the failure.
        tracing::warn!(
            mailbox = %dir.display(),
            "fsync of new/ failed after delivery: {e}"
        );
    }
    Verdict::delivered(format!("delivered to maildir {}", dir.display()))
}

fn write_and_sync(file: File, top: &str, content: &Content<'_>) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(crate::content::CHUNK, file);
    out.write_all(top.as_bytes())?;
    content.copy_lf(&mut out, false)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::file_with;
    use std::os::unix::fs::PermissionsExt;

    const TEXT: &[u8] = b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n";

    fn env() -> Envelope<'static> {
        Envelope {
            sender: "a@example.org",
            recipient: "u@example.test",
        }
    }

    #[test]
    fn a_message_lands_in_new_with_its_header_fields() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("example.test/u");
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(&dir, &env(), &c, 0, "mx.example.test");
        assert_eq!(v.outcome, protocol::queue::Outcome::Delivered, "{v:?}");
        assert_eq!(v.status.to_string(), "2.0.0");
        let files: Vec<_> = std::fs::read_dir(dir.join("new")).unwrap().collect();
        assert_eq!(files.len(), 1);
        let path = files[0].as_ref().unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.ends_with(".mx.example.test"), "{name}");
        assert!(
            name.contains(&format!("P{}Q", std::process::id())),
            "{name}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "Return-Path: <a@example.org>\nDelivered-To: u@example.test\nReceived: from x\nSubject: hi\n\nbody\n"
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        for sub in ["tmp", "new", "cur"] {
            let m = std::fs::metadata(dir.join(sub)).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o700, "{sub}");
        }
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn names_are_unique_and_safe() {
        let a = unique_name("h/o:st");
        let b = unique_name("h/o:st");
        assert_ne!(a, b);
        assert!(a.ends_with(".h\\057o\\072st"), "{a}");
    }

    #[test]
    fn the_limit_bounces() {
        let base = tempfile::tempdir().unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(&base.path().join("u"), &env(), &c, 40, "h");
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
        make_dir(&dir.join("tmp")).unwrap();
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o500)).unwrap();
        let (f, off) = file_with(TEXT);
        let c = Content::new(&f, off, TEXT.len() as u64);
        let v = deliver(&dir, &env(), &c, 0, "h");
        assert_eq!(v.outcome, protocol::queue::Outcome::Deferred, "{v:?}");
        assert_eq!(v.status.to_string(), "4.2.0");
        assert!(v.text.contains("Permission denied"), "{}", v.text);
        std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let v = deliver(&dir, &env(), &c, 0, "h");
        assert_eq!(v.outcome, protocol::queue::Outcome::Delivered, "{v:?}");
    }
}
