//! One log line per event, in the Postfix manner: `warning: text key=value ...`.
//!
//! A daemon writes these lines to its stderr, which is a pipe to the master; the master prefixes
//! each line with `postern/SERVICE[PID]: ` and sends it to the configured log. The master uses the
//! same format for its own events. Trusts: nothing here reads outside input; values are written
//! with control characters escaped so that one event stays one line.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats an event as `[severity: ]message key=value ...` on one line.
#[derive(Clone, Copy, Debug, Default)]
pub struct LineFormat;

/// The Postfix severity word for a level; informational lines carry none.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error: ",
        Level::WARN => "warning: ",
        Level::INFO => "",
        Level::DEBUG | Level::TRACE => "debug: ",
    }
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            push_escaped(&mut self.message, value);
        } else {
            let _ = write!(self.rest, " {}=", field.name());
            if value.is_empty() || value.contains([' ', '"', '=']) {
                self.rest.push('"');
                push_escaped(&mut self.rest, &value.replace('"', "\\\""));
                self.rest.push('"');
            } else {
                push_escaped(&mut self.rest, value);
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            push_escaped(&mut self.message, &format!("{value:?}"));
        } else {
            let _ = write!(self.rest, " {}=", field.name());
            push_escaped(&mut self.rest, &format!("{value:?}"));
        }
    }
}

/// Appends `text` with every control character written as `\xNN`, so that a value cannot start a
/// new log line or move a terminal's cursor.
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

/// Renders one event as a line without its trailing newline.
pub fn render(level: &Level, event: &Event<'_>) -> String {
    let mut fields = Fields {
        message: String::new(),
        rest: String::new(),
    };
    event.record(&mut fields);
    let mut line = String::from(severity(level));
    line.push_str(&fields.message);
    if line.is_empty() || line.ends_with(' ') {
        line.push_str(fields.rest.trim_start());
    } else {
        line.push_str(&fields.rest);
    }
    line
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", render(event.metadata().level(), event))
    }
}

/// Sends this process's events to stderr, one line each, at `info` and above.
pub fn init_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(Level::INFO)
        .event_format(LineFormat)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(f: impl FnOnce()) -> String {
        let sink = Capture::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(LineFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn warning_with_fields_is_one_line() {
        let out = capture(|| tracing::warn!(service = "smtpd", pid = 12, "service throttled"));
        assert_eq!(out, "warning: service throttled service=smtpd pid=12\n");
    }

    #[test]
    fn info_has_no_severity_word_and_values_are_escaped() {
        let out = capture(|| tracing::info!(reason = "a b\nc", "exit"));
        assert_eq!(out, "exit reason=\"a b\\x0ac\"\n");
    }

    #[test]
    fn newline_in_message_cannot_start_a_line() {
        let out = capture(|| tracing::error!("first\nsecond"));
        assert_eq!(out, "error: first\\x0asecond\n");
        assert_eq!(out.lines().count(), 1);
    }
}
