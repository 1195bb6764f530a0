//! `$queue_directory/pid/master.reload`: the outcome of the master's last reload, for
//! `postern reload`, which sends SIGHUP and waits for the file to name a later generation.
//!
//! Format (replaced by rename, so a reader never sees half of it):
//!
//! ```text
//! master PID generation N
//! error TEXT        (zero or more: what the reload could not do)
//! ```
//!
//! The master writes generation 0 at start-up and generation N once the N-th reload has settled:
//! its files were read (or refused), its listeners bound (or not), every running process was
//! told to finish and exit, and each resident service has a new process that got `Go` or has
//! failed to start one (or [`SETTLE_LIMIT`] passed). A reload with no `error` line succeeded.
//!
//! Trusts: nothing read; it only writes what the master knows. Error texts are made one line
//! each here.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

/// How long a reload waits for its resident services' new processes. Their old processes first
/// finish what they have in flight (qmgr its deliveries), then a new one starts and applies its
/// sandbox (`START_TIMEOUT`); past this the reload reports the services still without one.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// The file's name in the pid directory.
pub const FILE_NAME: &str = "master.reload";

/// The outcome of one reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub errors: Vec<String>,
}

impl Outcome {
    /// Records one failure; line breaks in `text` become spaces.
    pub fn error(&mut self, text: impl AsRef<str>) {
        let line: String = text
            .as_ref()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.errors.push(line);
    }
}

/// The file's text for `generation` of master `pid`.
pub fn render(pid: u32, generation: u64, outcome: &Outcome) -> String {
    let mut out = format!("master {pid} generation {generation}\n");
    for e in &outcome.errors {
        let _ = writeln!(out, "error {e}");
    }
    out
}

/// Replaces the file in `dir` by rename.
pub fn write(dir: &Path, text: &str) -> io::Result<()> {
    let tmp = dir.join("master.reload.tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, dir.join(FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_error_and_no_line_breaks_inside() {
        let mut o = Outcome::default();
        o.error("service x/inet: cannot listen on 127.0.0.1:25: Address in use");
        o.error("two\nlines");
        assert_eq!(
            render(7, 3, &o),
            "master 7 generation 3\n\
             error service x/inet: cannot listen on 127.0.0.1:25: Address in use\n\
             error two lines\n"
        );
        assert_eq!(render(7, 0, &Outcome::default()), "master 7 generation 0\n");
    }
}
