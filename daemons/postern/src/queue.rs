//! `postern queue list`: the messages in the queue, in the layout of Postfix's `mailq` /
//! `postqueue -p`, or one JSON object per message as `postqueue -j`.
//!
//! Trusts: the queue directory's location (from main.cf). Does not trust the queue files: each
//! is read through `protocol::queue::QueueFile` (bounded, validated); a damaged one is reported
//! on stderr with its queue and id, and the listing goes on.
//!
//! Decisions:
//! - Queues are listed in the order `incoming`, `active`, `deferred`, `hold` (`corrupt/` holds
//!   no mail, `maildrop/` has no queue files yet), each sorted by queue id, which is arrival
//!   order. Files without the owner-execute bit are being written and are skipped, as are names
//!   that are not queue ids; a file moved away between listing and reading is skipped too.
//! - The id column is widened from Postfix's 10 characters to the 22 of Postern's queue ids, and
//!   every column after it moves right by the same amount; the status mark follows the id as in
//!   Postfix (`*` active, `!` on hold).
//! - Arrival times are shown in UTC (`Thu Jun  7 14:30:23`), whatever the local time zone.
//! - The size is the message content's size; the total is the sum of those sizes, in whole
//!   Kbytes, rounded down as Postfix does.
//! - Only recipients without a final result are listed. A deferred recipient's last reason is
//!   shown in parentheses, right-aligned, on the line before it, and once for consecutive
//!   recipients with the same reason, as Postfix's `showq` prints its defer log.
//! - JSON: `queue_name`, `queue_id`, `arrival_time` (Unix seconds), `message_size`, `sender`
//!   (empty for the null sender, as `postqueue -j`), `recipients` with `address` and, when
//!   deferred, `delay_reason`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

use protocol::address::{ForwardPath, ReversePath};
use protocol::queue::{Outcome, QueueFile, QueueLimits};
use protocol::QueueId;

/// The queues listed, in order, with their status mark.
pub const QUEUES: [(&str, char); 4] = [
    ("incoming", ' '),
    ("active", '*'),
    ("deferred", ' '),
    ("hold", '!'),
];

/// Width of the id column: a queue id and its status mark.
const ID_WIDTH: usize = protocol::queue_id::QUEUE_ID_LEN + 1;
/// Where addresses start: id column, size, arrival time, each followed by a space.
const ADDRESS_COLUMN: usize = ID_WIDTH + 1 + 8 + 1 + 20 + 1;
/// Postfix right-aligns a reason at column 76 with 10-character ids.
const REASON_END: usize = 76 + (ID_WIDTH - 11);

/// The owner-execute bit marks a complete queue file.
const COMPLETE_BIT: u32 = 0o100;

/// One listed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub queue: &'static str,
    pub mark: char,
    pub id: QueueId,
    pub arrival_secs: u64,
    pub size: u64,
    /// The sender as printed in the text layout (`MAILER-DAEMON` for `<>`), and as in JSON.
    pub sender: String,
    pub sender_json: String,
    /// Pending recipients and, for a deferred one, its last reason.
    pub recipients: Vec<(String, Option<String>)>,
}

/// Reads every listed queue under `queue_directory`. Problems with single files go to `warn`.
pub fn scan(queue_directory: &Path, warn: &mut dyn FnMut(String)) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (queue, mark) in QUEUES {
        let dir = queue_directory.join(queue);
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warn(format!("{}: no such queue directory", dir.display()));
                continue;
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        };
        let mut ids = Vec::new();
        for entry in listing {
            let entry =
                entry.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
            let name = entry.file_name();
            match name.to_str().map(QueueId::parse) {
                Some(Ok(id)) => ids.push(id),
                _ => warn(format!(
                    "{queue}/{}: not a queue file name; ignored",
                    name.to_string_lossy()
                )),
            }
        }
        ids.sort();
        for id in ids {
            match read_entry(&dir, queue, mark, id) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(e) => warn(format!("{queue}/{id}: {e}")),
            }
        }
    }
    Ok(entries)
}

/// One queue file; `None` when it is incomplete or gone.
fn read_entry(
    dir: &Path,
    queue: &'static str,
    mark: char,
    id: QueueId,
) -> Result<Option<Entry>, String> {
    let file = match File::open(dir.join(id.to_string())) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.permissions().mode() & COMPLETE_BIT == 0 {
        return Ok(None);
    }
    let queue_file =
        QueueFile::read(&file, QueueLimits::default()).map_err(|e| format!("damaged: {e}"))?;
    let envelope = queue_file.envelope();
    let (sender, sender_json) = match &envelope.sender {
        ReversePath::Null => ("MAILER-DAEMON".to_owned(), String::new()),
        ReversePath::Mailbox(m) => (m.to_string(), m.to_string()),
    };
    let recipients = queue_file
        .pending()
        .filter_map(|i| {
            let recipient = envelope.recipients.get(i)?;
            let address = match &recipient.path {
                ForwardPath::Postmaster => "Postmaster".to_owned(),
                ForwardPath::Mailbox(m) => m.to_string(),
            };
            let reason = queue_file
                .result(i)
                .filter(|r| r.outcome == Outcome::Deferred)
                .map(|r| r.diagnostic.to_string());
            Some((address, reason))
        })
        .collect();
    let arrival_secs = envelope
        .arrival
        .to_system_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Some(Entry {
        queue,
        mark,
        id,
        arrival_secs,
        size: queue_file.content_len(),
        sender,
        sender_json,
        recipients,
    }))
}

/// The `mailq` layout.
pub fn write_text(entries: &[Entry], out: &mut dyn Write) -> io::Result<()> {
    if entries.is_empty() {
        return writeln!(out, "Mail queue is empty");
    }
    writeln!(
        out,
        "{:<ID_WIDTH$} {:>8} {:<20} -Sender/Recipient-------",
        "-Queue ID-", "--Size--", "----Arrival Time----"
    )?;
    let mut total = 0u64;
    for (n, e) in entries.iter().enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        total = total.saturating_add(e.size);
        writeln!(
            out,
            "{}{} {:>8} {:<20} {}",
            e.id,
            e.mark,
            e.size,
            arrival_text(e.arrival_secs),
            printable(&e.sender)
        )?;
        let mut last_reason: Option<&str> = None;
        for (address, reason) in &e.recipients {
            if let Some(reason) = reason.as_deref() {
                if last_reason != Some(reason) {
                    let reason = printable(reason);
                    let pad = REASON_END.saturating_sub(reason.chars().count() + 2);
                    writeln!(out, "{:pad$}({reason})", "")?;
                }
            }
            last_reason = reason.as_deref();
            writeln!(out, "{:ADDRESS_COLUMN$}{}", "", printable(address))?;
        }
    }
    let count = entries.len();
    writeln!(
        out,
        "\n-- {} Kbytes in {count} Request{}.",
        total / 1024,
        if count == 1 { "" } else { "s" }
    )
}

/// One JSON object per line, as `postqueue -j`.
pub fn write_json(entries: &[Entry], out: &mut dyn Write) -> io::Result<()> {
    for e in entries {
        let mut line = String::new();
        let _ = write!(
            line,
            "{{\"queue_name\": {}, \"queue_id\": {}, \"arrival_time\": {}, \"message_size\": {}, \"sender\": {}, \"recipients\": [",
            json_string(e.queue),
            json_string(&e.id.to_string()),
            e.arrival_secs,
            e.size,
            json_string(&e.sender_json)
        );
        for (n, (address, reason)) in e.recipients.iter().enumerate() {
            if n > 0 {
                line.push_str(", ");
            }
            let _ = write!(line, "{{\"address\": {}", json_string(address));
            if let Some(reason) = reason {
                let _ = write!(line, ", \"delay_reason\": {}", json_string(reason));
            }
            line.push('}');
        }
        line.push_str("]}");
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Control characters shown as `?`, as Postfix's `printable()` does, so a forged address
/// cannot move the cursor of the administrator's terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `secs` since the epoch as asctime's first 19 characters, in UTC: `Thu Jun  7 14:30:23`.
fn arrival_text(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    // Days since the epoch to a Gregorian month and day, over 400-year cycles (the year is not
    // shown, as in Postfix's listing).
    let z = days + 719_468;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_times_are_utc_asctime() {
        assert_eq!(arrival_text(0), "Thu Jan  1 00:00:00");
        // 2018-06-07 14:30:23 UTC
        assert_eq!(arrival_text(1_528_381_823), "Thu Jun  7 14:30:23");
        // 2024-02-29 23:59:59 UTC, a leap day
        assert_eq!(arrival_text(1_709_251_199), "Thu Feb 29 23:59:59");
        assert_eq!(arrival_text(1_709_251_199).len(), 19);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}é"),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }

    fn entry(mark: char, recipients: Vec<(&str, Option<&str>)>) -> Entry {
        Entry {
            queue: "deferred",
            mark,
            id: QueueId::parse("05F1E2D3C4B5A6000004D2").unwrap(),
            arrival_secs: 1_528_381_823,
            size: 2048,
            sender: "MAILER-DAEMON".to_owned(),
            sender_json: String::new(),
            recipients: recipients
                .into_iter()
                .map(|(a, r)| (a.to_owned(), r.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn the_text_layout_lines_up() {
        let e = entry(
            ' ',
            vec![
                ("a@example.test", Some("connect refused")),
                ("b@example.test", Some("connect refused")),
                ("c@example.test", None),
            ],
        );
        let mut out = Vec::new();
        write_text(
            &[e.clone(), entry('!', vec![("d@example.test", None)])],
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "-Queue ID-              --Size-- ----Arrival Time---- -Sender/Recipient-------"
        );
        assert_eq!(
            lines[1],
            "05F1E2D3C4B5A6000004D2      2048 Thu Jun  7 14:30:23  MAILER-DAEMON"
        );
        assert_eq!(lines[2].trim_start(), "(connect refused)");
        assert_eq!(lines[2].len(), REASON_END);
        let indent = " ".repeat(ADDRESS_COLUMN);
        assert_eq!(lines[3], format!("{indent}a@example.test"));
        assert_eq!(lines[4], format!("{indent}b@example.test"));
        assert_eq!(lines[5], format!("{indent}c@example.test"));
        assert_eq!(lines[6], "");
        assert!(lines[7].starts_with("05F1E2D3C4B5A6000004D2!     2048"));
        assert_eq!(lines[9], "");
        assert_eq!(lines[10], "-- 4 Kbytes in 2 Requests.");
        // The sender column of a message line is the address column.
        assert_eq!(lines[1].find("MAILER-DAEMON"), Some(ADDRESS_COLUMN));

        let mut out = Vec::new();
        write_text(&[], &mut out).unwrap();
        assert_eq!(out, b"Mail queue is empty\n");
    }
}
