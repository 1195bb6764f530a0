//! The master's log: its own events and every line its children write to stderr, each written as
//! one line `postern/PROGRAM[PID]: text` to stderr (foreground), a file (`maillog_file`) or syslog.
//!
//! Trusts: nothing a child writes. A child's output is cut into lines of at most [`MAX_LOG_LINE`]
//! bytes, decoded lossily, and its control characters escaped, so a child can neither forge a line
//! under another name (every line carries the prefix the master chose from its own table) nor make
//! the master hold unbounded memory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use daemon::log::push_escaped;

/// Longest log line kept whole; a longer one is cut. Postfix's own limit is similar (2048), and a
/// child must not make the master buffer without bound.
pub const MAX_LOG_LINE: usize = 2048;

/// The syslog socket of the host (journald and classic syslog daemons both listen there).
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// syslog facility `mail` (2), shifted as RFC 3164 wants.
const FACILITY_MAIL: u8 = 2 << 3;

/// Where log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(PathBuf),
    Syslog,
}

enum Sink {
    Stderr,
    File(File),
    Syslog(UnixDatagram),
}

/// Writes prefixed lines to the chosen target. Shared (behind a mutex) by the master's tracing
/// subscriber and its reading of children's output.
pub struct Logger {
    name: String,
    sink: Sink,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log file {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("cannot reach syslog at {SYSLOG_SOCKET}: {0}")]
    Syslog(io::Error),
}

impl Logger {
    /// `name` is `syslog_name` (`postern` by default), the first part of every prefix.
    pub fn open(target: &Target, name: &str) -> Result<Logger, LogError> {
        let sink = match target {
            Target::Stderr => Sink::Stderr,
            Target::File(path) => Sink::File(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(|source| LogError::File {
                        path: path.clone(),
                        source,
                    })?,
            ),
            Target::Syslog => {
                let sock = UnixDatagram::unbound().map_err(LogError::Syslog)?;
                sock.connect(Path::new(SYSLOG_SOCKET))
                    .map_err(LogError::Syslog)?;
                Sink::Syslog(sock)
            }
        };
        Ok(Logger {
            name: name.to_owned(),
            sink,
        })
    }

    /// Writes one already-escaped line of `program`'s process `pid`. Failures to log are ignored:
    /// the master must not stop serving mail because its log is full.
    pub fn line(&mut self, program: &str, pid: u32, text: &str) {
        let body = format!("{}/{}[{}]: {}", self.name, program, pid, text);
        let _ = match &mut self.sink {
            Sink::Stderr => writeln!(io::stderr().lock(), "{body}"),
            Sink::File(f) => writeln!(f, "{} {body}", iso8601(SystemTime::now())),
            Sink::Syslog(sock) => {
                let pri = FACILITY_MAIL + severity_of(text);
                sock.send(format!("<{pri}>{body}").as_bytes()).map(|_| ())
            }
        };
    }
}

/// The syslog severity of a line from its Postfix-style severity word.
fn severity_of(text: &str) -> u8 {
    if text.starts_with("panic:") || text.starts_with("fatal:") {
        2
    } else if text.starts_with("error:") {
        3
    } else if text.starts_with("warning:") {
        4
    } else if text.starts_with("debug:") {
        7
    } else {
        6
    }
}

/// UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (no time zone database is needed to write it).
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A shared handle on the logger.
pub type SharedLogger = Arc<Mutex<Logger>>;

/// `io::Write` for the master's tracing subscriber: collects one formatted event and writes it as
/// the master's own line(s) when dropped.
pub struct MasterWriter {
    logger: SharedLogger,
    pid: u32,
    buf: Vec<u8>,
}

impl MasterWriter {
    pub fn new(logger: SharedLogger, pid: u32) -> MasterWriter {
        MasterWriter {
            logger,
            pid,
            buf: Vec::new(),
        }
    }
}

impl Write for MasterWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for MasterWriter {
    fn drop(&mut self) {
        let mut lines = LineBuffer::default();
        let mut out = lines.push(&self.buf);
        out.extend(lines.finish());
        let mut logger = self.logger.lock().unwrap_or_else(PoisonError::into_inner);
        for line in out {
            logger.line("master", self.pid, &line);
        }
    }
}

/// Cuts a child's output into escaped lines.
#[derive(Default, Debug)]
pub struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Adds bytes read from the child; returns the complete lines they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(self.take());
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LOG_LINE {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    /// The unterminated rest, at end of output.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let raw = std::mem::take(&mut self.partial);
        let text = String::from_utf8_lossy(&raw);
        let mut line = String::with_capacity(text.len());
        push_escaped(&mut line, text.trim_end_matches('\r'));
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_escaped_and_bounded() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"par").is_empty());
        assert_eq!(
            b.push(b"tial\nnext\x1b[2J\r\n"),
            vec!["partial", "next\\x1b[2J"]
        );
        let long = vec![b'x'; MAX_LOG_LINE * 2 + 5];
        let lines = b.push(&long);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LOG_LINE));
        assert_eq!(b.finish().as_deref(), Some("xxxxx"));
        assert_eq!(b.finish(), None);
        assert_eq!(b.push(b"\xff\n"), vec!["\u{fffd}"]);
    }

    #[test]
    fn file_target_gets_prefixed_timestamped_lines() {
        let dir = std::env::temp_dir().join(format!("postern-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("maillog");
        let mut logger = Logger::open(&Target::File(path.clone()), "postern").unwrap();
        logger.line("smtpd", 42, "warning: hello");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(" postern/smtpd[42]: warning: hello\n"),
            "{text:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn severity_words() {
        assert_eq!(severity_of("warning: x"), 4);
        assert_eq!(severity_of("error: x"), 3);
        assert_eq!(severity_of("fatal: x"), 2);
        assert_eq!(severity_of("x"), 6);
    }

    #[test]
    fn civil_time() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_709_251_199_250);
        assert_eq!(iso8601(t), "2024-02-29T23:59:59.250Z");
    }
}
