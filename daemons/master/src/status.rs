//! `$queue_directory/pid/master.status`: a small text table of the services, rewritten (atomically,
//! by rename) when it changes, at most once a second, for `postern status`.
//!
//! Format: a header line, then one line per service with white-space separated columns
//! `service type processes busy limit throttled-until`; `limit` is `-` for unlimited and
//! `throttled-until` is `-` or the UTC time the throttle ends (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
//! Trusts: nothing read; it only writes what the master knows.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::log::iso8601;

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub service: String,
    pub kind: &'static str,
    pub processes: usize,
    pub busy: usize,
    /// 0 = unlimited.
    pub limit: u32,
    pub throttled_until: Option<SystemTime>,
}

pub const HEADER: &str = "service type processes busy limit throttled-until";

pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in rows {
        let limit = if r.limit == 0 {
            "-".to_owned()
        } else {
            r.limit.to_string()
        };
        let until = r.throttled_until.map_or_else(|| "-".to_owned(), iso8601);
        let _ = writeln!(
            out,
            "{} {} {} {} {} {}",
            r.service, r.kind, r.processes, r.busy, limit, until
        );
    }
    out
}

/// Replaces the status file by rename so a reader never sees half a table.
pub fn write(dir: &Path, text: &str) -> io::Result<()> {
    let tmp = dir.join("master.status.tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, dir.join("master.status"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn table_rows() {
        let rows = [
            Row {
                service: "127.0.0.1:2525".into(),
                kind: "inet",
                processes: 2,
                busy: 1,
                limit: 10,
                throttled_until: None,
            },
            Row {
                service: "cleanup".into(),
                kind: "unix",
                processes: 0,
                busy: 0,
                limit: 0,
                throttled_until: Some(UNIX_EPOCH + Duration::from_secs(60)),
            },
        ];
        assert_eq!(
            render(&rows),
            "service type processes busy limit throttled-until\n\
             127.0.0.1:2525 inet 2 1 10 -\n\
             cleanup unix 0 0 - 1970-01-01T00:01:00.000Z\n"
        );
    }
}
