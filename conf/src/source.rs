//! Reading a configuration file into logical lines, the way Postfix's `readlline` does.
//!
//! Trusts: nothing in the text. The file is written by the administrator, but it is read
//! by the privileged master, so it is bounded in size (`MAX_FILE_BYTES`), must be UTF-8,
//! and may not contain control characters other than tab outside comments.
//!
//! Rules (shared by `main.cf` and `master.cf`):
//! - blank lines, white-space-only lines, and lines whose first non-blank character is `#`
//!   are ignored, wherever they are (so a comment may sit between a line and its
//!   continuation, as in Postfix);
//! - a line that starts with a space or a tab continues the previous logical line; the
//!   continuation is appended as written, so its leading white space separates it;
//! - trailing spaces, tabs and a `\r` before the newline are dropped.
//!
//! Every logical line keeps a map from byte offsets in its text back to the physical line
//! and column, so errors anywhere in a joined value point at the right place.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{ConfError, Problem};

/// The largest configuration file read. A hand-written `main.cf` or `master.cf` is a few
/// KiB; the bound keeps a mistaken path (a log file, `/dev/zero`) from exhausting memory
/// in the master.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Blank for the purposes of the syntax: Postfix's white space is the ASCII space and tab.
pub(crate) fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

pub(crate) fn trim_blank(s: &str) -> &str {
    s.trim_matches(is_blank)
}

/// Reads a configuration file: at most `MAX_FILE_BYTES`, valid UTF-8.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfError> {
    let io = |source| ConfError::in_file(path, Problem::Io { source });
    let file = File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfError::in_file(
            path,
            Problem::TooLarge {
                limit: MAX_FILE_BYTES,
            },
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // INVARIANT: `good` is the valid prefix, so this cannot fail.
        let prefix = std::str::from_utf8(good).unwrap_or("");
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfError::at(path, line, column, Problem::NotUtf8)
    })
}

/// Where one byte of a logical line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// Byte offset in the logical text where this physical piece starts.
    start: usize,
    line: usize,
    /// Column (in characters, from 1) of the byte at `start`.
    column: usize,
}

/// Maps byte offsets of a text assembled from physical lines back to line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    segments: Vec<Segment>,
}

impl Span {
    /// A span for text that sits on one line from `column` on.
    pub(crate) fn single(line: usize, column: usize) -> Self {
        Self {
            segments: vec![Segment {
                start: 0,
                line,
                column,
            }],
        }
    }

    /// The (line, column) of byte `offset` of `text`, the text this span describes.
    pub(crate) fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.start <= offset)
            .or(self.segments.first());
        match seg {
            Some(s) => {
                let chars = text
                    .get(s.start..offset)
                    .map_or(0, |piece| piece.chars().count());
                (s.line, s.column + chars)
            }
            None => (0, 0),
        }
    }

    /// The span of `text[start..]`, given that this span describes `text`.
    pub(crate) fn tail(&self, text: &str, start: usize) -> Self {
        let (line, column) = self.position(text, start);
        let mut segments = vec![Segment {
            start: 0,
            line,
            column,
        }];
        segments.extend(
            self.segments
                .iter()
                .filter(|s| s.start > start)
                .map(|s| Segment {
                    start: s.start - start,
                    ..*s
                }),
        );
        Self { segments }
    }
}

/// One logical line: its text (physical lines joined) and where each part came from.
#[derive(Debug, Clone)]
pub(crate) struct Logical {
    pub text: String,
    pub span: Span,
}

impl Logical {
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        self.span.position(&self.text, offset)
    }
}

/// Splits `text`, the contents of `file`, into logical lines.
pub(crate) fn logical_lines(text: &str, file: &Path) -> Result<Vec<Logical>, ConfError> {
    let mut out: Vec<Logical> = Vec::new();
    let mut current: Option<Logical> = None;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let physical = raw.strip_suffix('\r').unwrap_or(raw);
        let content = physical.trim_end_matches(is_blank);
        let first = content.trim_start_matches(is_blank);
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        if let Some((col, c)) = content
            .chars()
            .enumerate()
            .find(|&(_, c)| c.is_control() && c != '\t')
        {
            return Err(ConfError::at(
                file,
                number,
                col + 1,
                Problem::ControlCharacter(c),
            ));
        }
        if content.starts_with(is_blank) {
            let Some(logical) = current.as_mut() else {
                return Err(ConfError::at(file, number, 1, Problem::OrphanContinuation));
            };
            logical.span.segments.push(Segment {
                start: logical.text.len(),
                line: number,
                column: 1,
            });
            logical.text.push_str(content);
        } else {
            out.extend(current.take());
            current = Some(Logical {
                text: content.to_string(),
                span: Span::single(number, 1),
            });
        }
    }
    out.extend(current);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(input: &str) -> Vec<String> {
        logical_lines(input, Path::new("t"))
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect()
    }

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        assert_eq!(
            texts("# c\n\n   \n\t# indented comment\na = b\n"),
            vec!["a = b"]
        );
    }

    #[test]
    fn continuation_joins_and_skips_comments_between() {
        assert_eq!(
            texts("a = x,\n    y\n# note\n\tz\nb = c"),
            vec!["a = x,    y\tz", "b = c"]
        );
    }

    #[test]
    fn crlf_and_trailing_blanks_are_dropped() {
        assert_eq!(texts("a = b  \r\nc = d\t\r\n"), vec!["a = b", "c = d"]);
    }

    #[test]
    fn continuation_without_a_line_is_an_error() {
        let e = logical_lines("# only a comment\n  x = y\n", Path::new("t")).unwrap_err();
        assert_eq!((e.line(), e.column()), (2, 1));
        assert!(matches!(e.problem(), Problem::OrphanContinuation));
    }

    #[test]
    fn control_characters_are_rejected_with_position() {
        let e = logical_lines("a = b\nc = d\u{7}e\n", Path::new("t")).unwrap_err();
        assert_eq!((e.line(), e.column()), (2, 6));
        assert!(matches!(e.problem(), Problem::ControlCharacter('\u{7}')));
        // In a comment they are harmless.
        assert!(logical_lines("# bell \u{7}\n", Path::new("t")).is_ok());
    }

    #[test]
    fn positions_map_back_through_continuations() {
        let lines = logical_lines("a = éx,\n   y\n", Path::new("t")).unwrap();
        let l = &lines[0];
        let y = l.text.find('y').unwrap();
        assert_eq!(l.position(y), (2, 4));
        let x = l.text.find('x').unwrap();
        assert_eq!(l.position(x), (1, 6));
        let tail = l.span.tail(&l.text, 4);
        let value = &l.text[4..];
        assert_eq!(tail.position(value, 0), (1, 5));
        assert_eq!(tail.position(value, value.find('y').unwrap()), (2, 4));
    }

    #[test]
    fn read_file_reports_bad_utf8_position_and_size() {
        let dir = std::env::temp_dir().join(format!("conf-source-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.cf");
        std::fs::write(&bad, b"a = b\nc = \xff\n").unwrap();
        let e = read_file(&bad).unwrap_err();
        assert_eq!((e.line(), e.column()), (2, 5));
        let big = dir.join("big.cf");
        std::fs::write(&big, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        assert!(matches!(
            read_file(&big).unwrap_err().problem(),
            Problem::TooLarge { .. }
        ));
        let missing = read_file(&dir.join("missing.cf")).unwrap_err();
        assert!(missing
            .to_string()
            .contains("missing.cf: cannot read the file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
