//! The aliases(5) format: `/etc/aliases` and the files `:include:` names.
//!
//! Trusts: nothing in the text. An alias file is written by the administrator, but an
//! `:include:` file may belong to anyone the administrator named, so every limit is
//! checked ([`MAX_LINE`], [`MAX_ENTRIES`], [`MAX_TARGETS`], [`MAX_NAME`]) and every error
//! names the file and line. Pure: the caller reads the file and hands its text here.
//!
//! The format, as Postfix's `postalias(1)` reads it:
//! - `name: value, value, ...`; the name ends at the first `:` outside double quotes and
//!   may be quoted (`"a b": x`); names are case-insensitive (kept in lower case).
//! - A line that starts with white space continues the previous one; a line whose first
//!   non-blank character is `#` is a comment, and so is an empty or blank line. A
//!   comment line does not end a continued entry (Postfix's `readlline` drops comments
//!   before it joins lines).
//! - Values are separated by commas outside double quotes; quotes are removed, so
//!   `"|cmd a, b"` is one command. A value is a command (`|...`), a file (`/...`), an
//!   include (`:include:/path`, the prefix case-insensitive), or an address (`user` or
//!   `user@domain`); `\user` is an address that is not looked up as an alias again.
//! - A duplicate name keeps its first entry and is reported as a warning (postalias's
//!   "duplicate entry").
//! - `owner-NAME` is an ordinary entry; the local agent gives it its meaning (errors for
//!   the list NAME go to it). Postfix wants a `postmaster` alias: [`Aliases::missing`]
//!   names the usual ones that are absent, for `postern map check` to warn about.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Longest logical line (an entry with its continuation lines), in octets: a large
/// mailing-list alias fits; anything longer is a mistake or an attack on memory.
pub const MAX_LINE: usize = 64 * 1024;
/// Most entries in one alias file.
pub const MAX_ENTRIES: usize = 100_000;
/// Most values of one entry (or of one include file).
pub const MAX_TARGETS: usize = 1_000;
/// Longest alias name, in octets (after quotes are removed). RFC 5321 allows 64 for a
/// local part; Postfix allows longer keys, which could never match an SMTP recipient.
pub const MAX_NAME: usize = 256;

/// Where an alias maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A local name or `user@domain`. `escaped` is the `\user` form: deliver to the
    /// user's mailbox without looking the name up as an alias again.
    Address { address: String, escaped: bool },
    /// `|command`: the text after the bar, run by `/bin/sh -c`.
    Command(String),
    /// `/file`: append to this file (mbox format).
    File(PathBuf),
    /// `:include:/path`: the addresses listed in that file.
    Include(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Address {
                address,
                escaped: false,
            } => f.write_str(address),
            Target::Address {
                address,
                escaped: true,
            } => write!(f, "\\{address}"),
            Target::Command(cmd) => write!(f, "|{cmd}"),
            Target::File(path) => write!(f, "{}", path.display()),
            Target::Include(path) => write!(f, ":include:{}", path.display()),
        }
    }
}

/// Why a line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasErrorKind {
    #[error("line longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("more than {MAX_TARGETS} values")]
    TooManyTargets,
    #[error("a continuation line without an entry before it")]
    OrphanContinuation,
    #[error("no ':' after the name")]
    MissingColon,
    #[error("empty alias name")]
    EmptyName,
    #[error("alias name longer than {MAX_NAME} octets")]
    NameTooLong,
    #[error("unbalanced double quote")]
    UnbalancedQuote,
    #[error("no value after the name")]
    NoValues,
    #[error("a NUL or control character in the text")]
    ControlCharacter,
    #[error("{0:?}: :include: needs an absolute path")]
    RelativeInclude(String),
    #[error("empty command after '|'")]
    EmptyCommand,
    #[error("{0:?}: not an address")]
    BadAddress(String),
}

/// A refused alias file: the file, the line (1-based, the first line of the entry) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}, line {line}: {kind}", file.display())]
pub struct AliasError {
    pub file: PathBuf,
    pub line: usize,
    pub kind: AliasErrorKind,
}

/// One entry of an alias file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The name in lower case.
    pub name: String,
    pub targets: Vec<Target>,
    /// The line the entry starts on, for messages.
    pub line: usize,
}

/// A parsed alias file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    entries: HashMap<String, Alias>,
    order: Vec<String>,
    warnings: Vec<String>,
}

impl Aliases {
    /// Parses the text of an alias file; `file` is used in messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Aliases, AliasError> {
        let mut aliases = Aliases::default();
        for (line, logical) in logical_lines(text, file)? {
            let err = |kind| AliasError {
                file: file.to_path_buf(),
                line,
                kind,
            };
            if aliases.order.len() >= MAX_ENTRIES {
                return Err(err(AliasErrorKind::TooManyEntries));
            }
            let (name, rest) = split_name(&logical).map_err(err)?;
            let targets = parse_targets(rest).map_err(err)?;
            if targets.is_empty() {
                return Err(err(AliasErrorKind::NoValues));
            }
            if let Some(first) = aliases.entries.get(&name) {
                aliases.warnings.push(format!(
                    "{}, line {line}: duplicate entry {name:?} ignored (first on line {})",
                    file.display(),
                    first.line
                ));
                continue;
            }
            aliases.order.push(name.clone());
            aliases.entries.insert(
                name.clone(),
                Alias {
                    name,
                    targets,
                    line,
                },
            );
        }
        Ok(aliases)
    }

    /// The entry for `name` (compared in lower case, as Postfix folds the local part).
    pub fn get(&self, name: &str) -> Option<&Alias> {
        self.entries.get(&name.to_lowercase())
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Alias> {
        self.order.iter().filter_map(|n| self.entries.get(n))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Duplicate entries that were ignored, one message each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The aliases RFC 5321 and Postfix's documentation expect that this file lacks
    /// (`postmaster`; `MAILER-DAEMON`, which bounces of bounces may reach).
    pub fn missing(&self) -> Vec<&'static str> {
        ["postmaster", "mailer-daemon"]
            .into_iter()
            .filter(|n| !self.entries.contains_key(*n))
            .collect()
    }
}

/// Parses the text of an `:include:` file: values separated by commas or lines, with the
/// same quoting, comments and limits as an alias entry (Postfix reads it the same way).
pub fn parse_include(text: &str, file: &Path) -> Result<Vec<Target>, AliasError> {
    let mut out = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        let err = |kind| AliasError {
            file: file.to_path_buf(),
            line,
            kind,
        };
        check_line(raw).map_err(err)?;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let targets = parse_targets(trimmed).map_err(err)?;
        if out.len() + targets.len() > MAX_TARGETS {
            return Err(err(AliasErrorKind::TooManyTargets));
        }
        out.extend(targets);
    }
    Ok(out)
}

/// Which lookup table an `alias_maps` element names: `hash:/path`, `texthash:/path`, or
/// a bare absolute path (read as `texthash:`). Postern keeps no `.db` files: a `hash:`
/// table is read from its text source, as `texthash:` is. Other types are refused.
pub fn alias_map_path(element: &str) -> Result<PathBuf, String> {
    let path = match element.split_once(':') {
        Some(("hash" | "texthash", path)) => path,
        Some((kind, _)) if !element.starts_with('/') => {
            return Err(format!(
                "{element}: table type {kind:?} is not supported for aliases (hash, texthash)"
            ))
        }
        _ => element,
    };
    let path = PathBuf::from(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("{element}: the table needs an absolute path"))
    }
}

fn check_line(raw: &str) -> Result<(), AliasErrorKind> {
    if raw.len() > MAX_LINE {
        return Err(AliasErrorKind::LineTooLong);
    }
    if raw
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\r')
    {
        return Err(AliasErrorKind::ControlCharacter);
    }
    Ok(())
}

/// Joins continuation lines; yields (first line number, logical line).
fn logical_lines(text: &str, file: &Path) -> Result<Vec<(usize, String)>, AliasError> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        let err = |kind| AliasError {
            file: file.to_path_buf(),
            line,
            kind,
        };
        check_line(raw).map_err(err)?;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let Some((first, current)) = out.last_mut() else {
                return Err(err(AliasErrorKind::OrphanContinuation));
            };
            if current.len() + 1 + trimmed.len() > MAX_LINE {
                return Err(AliasError {
                    file: file.to_path_buf(),
                    line: *first,
                    kind: AliasErrorKind::LineTooLong,
                });
            }
            current.push(' ');
            current.push_str(trimmed);
        } else {
            out.push((line, trimmed.to_owned()));
        }
    }
    Ok(out)
}

/// Splits `name: rest` at the first colon outside quotes; the name unquoted, lower case.
fn split_name(logical: &str) -> Result<(String, &str), AliasErrorKind> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in logical.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ':' if !quoted => {
                let name = unquote(logical[..i].trim());
                if name.is_empty() {
                    return Err(AliasErrorKind::EmptyName);
                }
                if name.len() > MAX_NAME {
                    return Err(AliasErrorKind::NameTooLong);
                }
                return Ok((name.to_lowercase(), &logical[i + 1..]));
            }
            _ => {}
        }
    }
    if quoted {
        Err(AliasErrorKind::UnbalancedQuote)
    } else {
        Err(AliasErrorKind::MissingColon)
    }
}

/// Removes double quotes and the backslashes that escape characters inside them.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => out.push(c),
        }
    }
    out
}

/// Splits a value list at commas outside quotes and classifies each value.
fn parse_targets(rest: &str) -> Result<Vec<Target>, AliasErrorKind> {
    let mut values = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                values.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(AliasErrorKind::UnbalancedQuote);
    }
    values.push(&rest[start..]);
    let mut out = Vec::new();
    for value in values {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if out.len() >= MAX_TARGETS {
            return Err(AliasErrorKind::TooManyTargets);
        }
        out.push(classify(value)?);
    }
    Ok(out)
}

fn classify(raw: &str) -> Result<Target, AliasErrorKind> {
    let value = unquote(raw);
    let value = value.trim();
    if let Some(cmd) = value.strip_prefix('|') {
        let cmd = cmd.trim();
        if cmd.is_empty() {
            return Err(AliasErrorKind::EmptyCommand);
        }
        return Ok(Target::Command(cmd.to_owned()));
    }
    if value
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case(":include:"))
    {
        let path = value[9..].trim();
        if !path.starts_with('/') {
            return Err(AliasErrorKind::RelativeInclude(value.to_owned()));
        }
        return Ok(Target::Include(PathBuf::from(path)));
    }
    if value.starts_with('/') {
        return Ok(Target::File(PathBuf::from(value)));
    }
    let (address, escaped) = match value.strip_prefix('\\') {
        Some(rest) => (rest, true),
        None => (value, false),
    };
    // Angle brackets come off only as a pair, once; any other '<' or '>' makes the value
    // no address (stripping them one at a time let `>>` become the address `>`, which
    // no longer reads back as itself).
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    if address.is_empty()
        || address.contains(['<', '>'])
        || address.len() > 256
        || address.chars().any(char::is_whitespace)
        || address.starts_with('@')
        || address.ends_with('@')
        || address.matches('@').count() > 1
        // `<|cmd>`, `</file>`, `<:include:/f>` and `<\user>` are not addresses: written
        // back without the brackets they would read as a command, a file, an include or
        // an escaped name.
        || (!escaped && reads_as_other_kind(address))
    {
        return Err(AliasErrorKind::BadAddress(value.to_owned()));
    }
    Ok(Target::Address {
        address: address.to_owned(),
        escaped,
    })
}

/// Whether `value` would be classified as a command, a file, an include or an escaped
/// address.
fn reads_as_other_kind(value: &str) -> bool {
    value.starts_with(['|', '/', '\\'])
        || value
            .get(..9)
            .is_some_and(|p| p.eq_ignore_ascii_case(":include:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Aliases, AliasError> {
        Aliases::parse(text, Path::new("/etc/aliases"))
    }

    fn addr(a: &str) -> Target {
        Target::Address {
            address: a.to_owned(),
            escaped: false,
        }
    }

    #[test]
    fn the_usual_forms_parse() {
        let a = parse(
            "# comment\n\
             postmaster: root\n\
             Staff: alice, bob@example.org,\n\
             \tcarol\n\
             \n\
             log: /var/log/mail.copy\n\
             prog: \"|/usr/bin/filter -a, -b\", |/bin/true\n\
             list: :include:/etc/mail/list, \\alice\n\
             \"odd name\": alice\n\
             owner-staff: alice\n",
        )
        .unwrap();
        assert_eq!(a.len(), 7);
        assert_eq!(
            a.get("STAFF").unwrap().targets,
            vec![addr("alice"), addr("bob@example.org"), addr("carol")]
        );
        assert_eq!(a.get("staff").unwrap().line, 3);
        assert_eq!(
            a.get("log").unwrap().targets,
            vec![Target::File("/var/log/mail.copy".into())]
        );
        assert_eq!(
            a.get("prog").unwrap().targets,
            vec![
                Target::Command("/usr/bin/filter -a, -b".into()),
                Target::Command("/bin/true".into())
            ]
        );
        assert_eq!(
            a.get("list").unwrap().targets,
            vec![
                Target::Include("/etc/mail/list".into()),
                Target::Address {
                    address: "alice".into(),
                    escaped: true
                }
            ]
        );
        assert_eq!(a.get("odd name").unwrap().targets, vec![addr("alice")]);
        assert_eq!(a.missing(), vec!["mailer-daemon"]);
        let names: Vec<&str> = a.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names[..3], ["postmaster", "staff", "log"]);
    }

    #[test]
    fn a_comment_inside_a_continued_entry_does_not_end_it() {
        let a = parse("team: a,\n# note\n  b\n").unwrap();
        assert_eq!(a.get("team").unwrap().targets, vec![addr("a"), addr("b")]);
    }

    #[test]
    fn duplicates_keep_the_first_and_warn() {
        let a = parse("x: a\nX: b\n").unwrap();
        assert_eq!(a.get("x").unwrap().targets, vec![addr("a")]);
        assert_eq!(a.warnings().len(), 1);
        assert!(a.warnings()[0].contains("line 2"));
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line, kind) in [
            ("a: b,\n  c\nnocolon\n", 3, AliasErrorKind::MissingColon),
            ("  orphan\n", 1, AliasErrorKind::OrphanContinuation),
            (": x\n", 1, AliasErrorKind::EmptyName),
            ("a:\n", 1, AliasErrorKind::NoValues),
            ("a: \"b\n", 1, AliasErrorKind::UnbalancedQuote),
            ("\"a: b\n", 1, AliasErrorKind::UnbalancedQuote),
            ("a: |\n", 1, AliasErrorKind::EmptyCommand),
            (
                "a: :include:rel\n",
                1,
                AliasErrorKind::RelativeInclude(":include:rel".into()),
            ),
            ("a: b c\n", 1, AliasErrorKind::BadAddress("b c".into())),
            ("a: @x\n", 1, AliasErrorKind::BadAddress("@x".into())),
            ("a: >>\n", 1, AliasErrorKind::BadAddress(">>".into())),
            ("a: <<b>>\n", 1, AliasErrorKind::BadAddress("<<b>>".into())),
            ("a: <b\n", 1, AliasErrorKind::BadAddress("<b".into())),
            (
                "a: <|cmd>\n",
                1,
                AliasErrorKind::BadAddress("<|cmd>".into()),
            ),
            ("a: </f>\n", 1, AliasErrorKind::BadAddress("</f>".into())),
            ("a: <\\b>\n", 1, AliasErrorKind::BadAddress("<\\b>".into())),
            (
                "a: <:Include:/l>\n",
                1,
                AliasErrorKind::BadAddress("<:Include:/l>".into()),
            ),
            ("a: b\0\n", 1, AliasErrorKind::ControlCharacter),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, &e.kind), (line, &kind), "{text:?}");
            assert!(e.to_string().starts_with("/etc/aliases, line "), "{e}");
        }
    }

    #[test]
    fn limits_hold() {
        let long = format!("a: {}\n", "b".repeat(MAX_LINE));
        assert_eq!(parse(&long).unwrap_err().kind, AliasErrorKind::LineTooLong);
        let mut grown = String::from("a: b\n");
        for _ in 0..(MAX_LINE / 1000 + 1) {
            grown.push_str(&format!("  {},\n", "c".repeat(998)));
        }
        assert_eq!(parse(&grown).unwrap_err().kind, AliasErrorKind::LineTooLong);
        let many = format!(
            "a: {}\n",
            (0..=MAX_TARGETS)
                .map(|i| format!("u{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(
            parse(&many).unwrap_err().kind,
            AliasErrorKind::TooManyTargets
        );
        let name = format!("{}: b\n", "n".repeat(MAX_NAME + 1));
        assert_eq!(parse(&name).unwrap_err().kind, AliasErrorKind::NameTooLong);
    }

    #[test]
    fn include_files_list_values() {
        let t = parse_include(
            "# members\nalice, bob\n\n\"|/bin/cat\"\n/tmp/x\n",
            Path::new("/l"),
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                addr("alice"),
                addr("bob"),
                Target::Command("/bin/cat".into()),
                Target::File("/tmp/x".into())
            ]
        );
        assert_eq!(parse_include("a b\n", Path::new("/l")).unwrap_err().line, 1);
    }

    #[test]
    fn map_names() {
        assert_eq!(
            alias_map_path("hash:/etc/aliases").unwrap(),
            PathBuf::from("/etc/aliases")
        );
        assert_eq!(alias_map_path("texthash:/x").unwrap(), PathBuf::from("/x"));
        assert_eq!(alias_map_path("/x").unwrap(), PathBuf::from("/x"));
        assert!(alias_map_path("ldap:/x").is_err());
        assert!(alias_map_path("hash:rel").is_err());
    }

    #[test]
    fn targets_display_as_written() {
        for v in ["alice", "\\alice", "|/bin/true", "/tmp/f", ":include:/l"] {
            let t = classify(v).unwrap();
            assert_eq!(t.to_string(), v);
        }
    }
}
