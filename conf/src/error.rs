//! Errors and warnings about configuration files.
//!
//! Trusts: nothing; this module only formats. Values quoted back to the administrator are
//! shortened (`MAX_QUOTED_CHARS`) so a huge or hostile value cannot flood a log line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// How many characters of an offending value an error message quotes; the rest is elided,
/// so a megabyte-long value makes a readable message.
pub const MAX_QUOTED_CHARS: usize = 80;

/// A configuration error: which file, where in it, and what is wrong.
///
/// Displayed as `FILE:LINE:COLUMN: message` when the problem has a place in a file,
/// `FILE: message` when it concerns the whole file (or a default value), and just the
/// message when no file is involved (a name asked for by a program, a `set` override).
/// Lines and columns count from 1; columns count characters, not bytes.
#[derive(Debug)]
pub struct ConfError {
    file: Option<PathBuf>,
    line: usize,
    column: usize,
    problem: Box<Problem>,
}

impl ConfError {
    pub(crate) fn at(file: &Path, line: usize, column: usize, problem: Problem) -> Self {
        Self {
            file: Some(file.to_path_buf()),
            line,
            column,
            problem: Box::new(problem),
        }
    }

    pub(crate) fn in_file(file: &Path, problem: Problem) -> Self {
        Self {
            file: Some(file.to_path_buf()),
            line: 0,
            column: 0,
            problem: Box::new(problem),
        }
    }

    pub(crate) fn bare(problem: Problem) -> Self {
        Self {
            file: None,
            line: 0,
            column: 0,
            problem: Box::new(problem),
        }
    }

    /// The file the problem is in, if it is in one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The line (from 1), or 0 when the problem has no single line.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column in characters (from 1), or 0 when the problem has no single line.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) if self.line > 0 => write!(
                f,
                "{}:{}:{}: {}",
                file.display(),
                self.line,
                self.column,
                self.problem
            ),
            Some(file) => write!(f, "{}: {}", file.display(), self.problem),
            None => write!(f, "{}", self.problem),
        }
    }
}

impl std::error::Error for ConfError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.problem.as_ref() {
            Problem::Io { source } => Some(source),
            _ => None,
        }
    }
}

/// A warning: the file is accepted, but something in it does not do what a Postfix
/// administrator might expect. Displayed as `FILE:LINE:COLUMN: warning: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfWarning {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// What is wrong, without the place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    // --- reading the file ---
    #[error("cannot read the file: {source}")]
    Io { source: io::Error },
    #[error("the file is larger than {limit} bytes; is this really a configuration file?")]
    TooLarge { limit: u64 },
    #[error("the file is not valid UTF-8 (configuration files are UTF-8 text)")]
    NotUtf8,
    #[error("control character U+{:04X} is not allowed in a configuration line", u32::from(*.0))]
    ControlCharacter(char),
    #[error("this line starts with white space, which continues a previous line, but there is none; start a new setting in column 1")]
    OrphanContinuation,

    // --- main.cf structure and names ---
    #[error("expected `=` after the parameter name `{}`", quote(.name))]
    MissingEquals { name: String },
    #[error("missing parameter name before `=`")]
    MissingName,
    #[error("`{}` is not allowed in a parameter name (names are letters, digits and `_`)", .0)]
    BadNameCharacter(char),
    #[error("unknown parameter `{}`{}", quote(.name), unknown_hint(*.suggestion))]
    UnknownParameter {
        name: String,
        suggestion: Option<&'static str>,
    },

    // --- `$` expansion ---
    #[error("`$` must be followed by a parameter name, `{{name}}` or `(name)`; write `$$` for a literal `$`")]
    DanglingDollar,
    #[error("missing parameter name after `${}`", .open)]
    EmptyReference { open: char },
    #[error("unexpected `{}` in `${}...{}`: expected `{}`, `?text{}` or `:text{}`", .found, .open, .close, .close, .close, .close)]
    UnexpectedInReference {
        found: char,
        open: char,
        close: char,
    },
    #[error("`${}` is never closed with `{}`", .open, .close)]
    Unclosed { open: char, close: char },
    #[error("`${}` in the value of `{}` names no known or defined parameter{}", quote(.name), quote(.owner), did_you_mean(*.suggestion))]
    UndefinedReference {
        name: String,
        owner: String,
        suggestion: Option<&'static str>,
    },
    #[error("expansion loop: {}", chain(.0))]
    ExpansionLoop(Vec<String>),
    #[error("expanding `{}` nests parameters and `${{...}}` forms more than {limit} levels deep", quote(.name))]
    NestingTooDeep { name: String, limit: usize },
    #[error("the value of `{}` expands to more than {limit} bytes", quote(.name))]
    ExpansionTooLong { name: String, limit: usize },

    // --- values ---
    #[error("bad value `{}` for `{}`{}: expected {expected}{}", quote(.value), .name, expanded_note(.expanded_from.as_deref()), did_you_mean(*.suggestion))]
    BadValue {
        name: String,
        value: String,
        expected: String,
        expanded_from: Option<String>,
        suggestion: Option<&'static str>,
    },
    #[error("`{}` is {} parameter, not {}", .name, .kind, .wanted)]
    WrongKind {
        name: String,
        kind: &'static str,
        wanted: &'static str,
    },

    // --- master.cf ---
    #[error("expected 8 columns (service, type, private, unpriv, chroot, wakeup, maxproc, command), found {found}")]
    ColumnCount { found: usize },
    #[error("unknown service type `{}`: expected inet, unix, unix-dgram, fifo or pass{}", quote(.found), did_you_mean(*.suggestion))]
    ServiceType {
        found: String,
        suggestion: Option<&'static str>,
    },
    #[error("`{}` in the {column} column: expected `y`, `n` or `-`", quote(.found))]
    Flag { column: &'static str, found: String },
    #[error("inet services cannot be private: write `n` or `-` in the private column")]
    PrivateInet,
    #[error("`{}` in the wakeup column: expected `-` or seconds from 0 to {max}, optionally followed by `?`", quote(.found))]
    Wakeup { found: String, max: u32 },
    #[error("`{}` in the maxproc column: expected `-` (the default process limit) or a number from 0 (no limit) to {max}", quote(.found))]
    Maxproc { found: String, max: u32 },
    #[error("bad service name `{}`: {reason}", quote(.name))]
    ServiceName { name: String, reason: &'static str },
    #[error("bad inet service `{}`: {reason}", quote(.name))]
    InetService { name: String, reason: String },
    #[error("service `{}` of type {kind} is already defined on line {first_line}", quote(.name))]
    DuplicateService {
        name: String,
        kind: &'static str,
        first_line: usize,
    },
    #[error("bad command `{}`: a command is a program name in daemon_directory (letters, digits, `.`, `_`, `-`)", quote(.0))]
    Command(String),
    #[error("`-o` must be followed by `name=value` or `{{ name = value }}`")]
    OverrideMissing,
    #[error("`{}` after `-o` is not `name=value`", quote(.0))]
    OverrideSyntax(String),
    #[error("`{{` is never closed with `}}`")]
    UnclosedBrace,
    #[error("`}}` without a matching `{{`")]
    UnmatchedBrace,
    #[error("text after the closing `}}` of a `{{ ... }}` argument")]
    TextAfterBrace,
}

fn chain(names: &[String]) -> String {
    let parts: Vec<String> = names.iter().map(|n| format!("`${}`", quote(n))).collect();
    parts.join(" -> ")
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

fn unknown_hint(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => " (a name Postern does not know is accepted only when another setting uses it as `$name`)".to_string(),
    }
}

fn expanded_note(raw: Option<&str>) -> String {
    raw.map_or_else(String::new, |r| format!(" (expanded from `{}`)", quote(r)))
}

/// `text`, cut to `MAX_QUOTED_CHARS` characters with an ellipsis.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_place() {
        let e = ConfError::at(
            Path::new("/etc/postern/main.cf"),
            3,
            1,
            Problem::UnknownParameter {
                name: "mynetwork".into(),
                suggestion: Some("mynetworks"),
            },
        );
        assert_eq!(
            e.to_string(),
            "/etc/postern/main.cf:3:1: unknown parameter `mynetwork`; did you mean `mynetworks`?"
        );
        let e = ConfError::in_file(Path::new("main.cf"), Problem::NotUtf8);
        assert!(e
            .to_string()
            .starts_with("main.cf: the file is not valid UTF-8"));
        let e = ConfError::bare(Problem::MissingName);
        assert_eq!(e.to_string(), "missing parameter name before `=`");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(1000);
        let q = quote(&long);
        assert_eq!(q.len(), MAX_QUOTED_CHARS + 3);
        assert!(q.ends_with("..."));
        assert_eq!(quote("é".repeat(5).as_str()), "ééééé");
    }

    #[test]
    fn loop_chain_names_every_step() {
        let p = Problem::ExpansionLoop(vec!["a".into(), "b".into(), "a".into()]);
        assert_eq!(p.to_string(), "expansion loop: `$a` -> `$b` -> `$a`");
    }
}
