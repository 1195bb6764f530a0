//! Lookup tables: Postfix's `type:name` references and the `postmap(5)` text format,
//! and the table search order of `virtual(5)`/`virtual(8)`.
//!
//! Trusts: nothing in a table's text; it is the administrator's file, but a mistake in
//! it must be an error that names the file and the line, never a line silently skipped
//! (a skipped line changes who receives mail). This module opens no file: the caller
//! passes an `open` function (or the text), so it stays pure and testable, and the
//! daemon decides when the file is read (at start-up, before its sandbox).
//!
//! Supported references: `texthash:/path`, `hash:/path` and a bare `/path` (which means
//! `texthash:`). Postern has no indexed `.db` files: `hash:` reads the text source file
//! that `postmap` would have compiled, so a changed file is seen by the next process
//! that starts. Other types (`regexp:`, `pcre:`, `cidr:`, `unix:`, `proxy:`, ...) are
//! refused, naming the element.
//!
//! Text format, as `postmap(5)`:
//! - a logical line starts with a non-blank character; a line that starts with white
//!   space continues the previous logical line (joined with one space);
//! - a line whose first non-blank character is `#` is a comment, and blank lines are
//!   ignored (neither ends a logical line's continuation);
//! - a logical line is `key` white space `value`; the key is folded to lower case
//!   (postmap's default without `-f`), the value is kept as written.
//!
//! Decisions where Postfix only warns: a line without a value, a duplicate key, text
//! that is not UTF-8, a continuation line before any entry, and a table larger than
//! [`MAX_TABLE_LEN`] are errors. Postfix warns and ignores the line (keeping the first
//! of duplicate keys).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use protocol::address::{Host, Mailbox};

/// The largest table read, in octets: far above any hand-written table, and a bound on
/// what a daemon holds in memory for a file it did not write.
pub const MAX_TABLE_LEN: u64 = 64 << 20;

/// The longest logical line (key, value and continuations), in octets. Postfix keeps
/// no such limit; 64 KiB is far above an alias list anyone writes by hand.
pub const MAX_LINE_LEN: usize = 64 << 10;

/// Why a table reference or a table cannot be used; each names the element or the
/// file and line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error(
        "lookup table {element:?}: table type {kind:?} is not supported (use texthash: or hash:)"
    )]
    UnsupportedType { element: String, kind: String },
    #[error("lookup table {element:?}: not a type:/absolute/path reference")]
    BadReference { element: String },
    #[error("{file}: {why}")]
    Read { file: String, why: String },
    #[error("{file}: larger than {MAX_TABLE_LEN} octets")]
    TooLarge { file: String },
    #[error("{file}, line {line}: {why}")]
    Syntax {
        file: String,
        line: usize,
        why: &'static str,
    },
    #[error("{file}, line {line}: duplicate key {key:?} (first on line {first})")]
    Duplicate {
        file: String,
        line: usize,
        first: usize,
        key: String,
    },
}

/// A reference to a table, as written in a parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// The element as written (`hash:/etc/postern/vmailbox`), for messages.
    pub element: String,
    /// The text file to read.
    pub path: PathBuf,
}

/// Whether a list element is a table reference (`type:name` or an absolute path) rather
/// than a plain value such as a domain name.
pub fn is_table_reference(element: &str) -> bool {
    element.starts_with('/')
        || element.split_once(':').is_some_and(|(kind, _)| {
            !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }) && !element.starts_with('[')
}

impl TableRef {
    /// Parses `texthash:/path`, `hash:/path` or `/path`.
    pub fn parse(element: &str) -> Result<TableRef, TableError> {
        let path = match element.split_once(':') {
            _ if element.starts_with('/') => element,
            Some(("texthash" | "hash", path)) => path,
            Some((kind, _)) if is_table_reference(element) => {
                return Err(TableError::UnsupportedType {
                    element: element.to_owned(),
                    kind: kind.to_owned(),
                })
            }
            _ => {
                return Err(TableError::BadReference {
                    element: element.to_owned(),
                })
            }
        };
        if !path.starts_with('/') {
            // A relative name would depend on the daemon's working directory.
            return Err(TableError::BadReference {
                element: element.to_owned(),
            });
        }
        Ok(TableRef {
            element: element.to_owned(),
            path: PathBuf::from(path),
        })
    }

    /// Reads the table through `open` (normally `std::fs::File::open`), at most
    /// [`MAX_TABLE_LEN`] octets.
    pub fn load<R: Read>(
        &self,
        open: &mut impl FnMut(&Path) -> io::Result<R>,
    ) -> Result<Table, TableError> {
        let file = self.path.display().to_string();
        let read_err = |e: io::Error| TableError::Read {
            file: file.clone(),
            why: e.to_string(),
        };
        let reader = open(&self.path).map_err(read_err)?;
        let mut bytes = Vec::new();
        reader
            .take(MAX_TABLE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_TABLE_LEN {
            return Err(TableError::TooLarge { file });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            TableError::Syntax {
                file: file.clone(),
                line,
                why: "not UTF-8 text",
            }
        })?;
        Table::parse(&file, &text)
    }
}

/// One table: keys (lower case) to values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    name: String,
    entries: HashMap<String, String>,
}

impl Table {
    /// Parses `text` in the `postmap(5)` format; `name` (the file) is used in errors.
    pub fn parse(name: &str, text: &str) -> Result<Table, TableError> {
        let mut entries: HashMap<String, String> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let syntax = |line, why| TableError::Syntax {
            file: name.to_owned(),
            line,
            why,
        };
        let mut finish = |start: usize, logical: &str| -> Result<(), TableError> {
            let logical = logical.trim_end();
            let (key, value) = match logical.split_once(|c: char| c.is_whitespace()) {
                Some((key, value)) if !value.trim().is_empty() => (key, value.trim()),
                _ => return Err(syntax(start, "expected format: key whitespace value")),
            };
            let key = key.to_lowercase();
            if let Some(first) = first_line.get(&key) {
                return Err(TableError::Duplicate {
                    file: name.to_owned(),
                    line: start,
                    first: *first,
                    key,
                });
            }
            first_line.insert(key.clone(), start);
            entries.insert(key, value.to_owned());
            Ok(())
        };
        // The logical line being gathered and the number of its first physical line.
        let mut current: Option<(usize, String)> = None;
        for (i, raw) in text.split('\n').enumerate() {
            let number = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if line.starts_with(|c: char| c.is_whitespace()) {
                let Some((_, logical)) = current.as_mut() else {
                    return Err(syntax(
                        number,
                        "continuation line without an entry before it",
                    ));
                };
                logical.push(' ');
                logical.push_str(trimmed.trim_end());
                if logical.len() > MAX_LINE_LEN {
                    return Err(syntax(number, "logical line longer than 65536 octets"));
                }
                continue;
            }
            if let Some((start, logical)) = current.take() {
                finish(start, &logical)?;
            }
            if line.len() > MAX_LINE_LEN {
                return Err(syntax(number, "logical line longer than 65536 octets"));
            }
            current = Some((number, line.to_owned()));
        }
        if let Some((start, logical)) = current.take() {
            finish(start, &logical)?;
        }
        Ok(Table {
            name: name.to_owned(),
            entries,
        })
    }

    /// The file the table was read from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `key`, compared case-insensitively.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(&key.to_lowercase()).map(String::as_str)
    }

    /// Every entry (key in lower case, value as written), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The domains the table names, lower case: each key without `@` that looks like a
    /// domain (Postfix's domain-list lookup: `example.com  anything`), and the domain of
    /// each `user@domain` and `@domain` key.
    pub fn domains(&self) -> BTreeSet<String> {
        self.entries
            .keys()
            .filter_map(|key| match key.rsplit_once('@') {
                Some((_, domain)) if !domain.is_empty() => Some(domain.to_owned()),
                Some(_) => None,
                None if key.contains('.') => Some(key.clone()),
                None => None,
            })
            .collect()
    }
}

/// A list of tables, as a `*_maps` parameter names them: a lookup asks each table in
/// turn and the first that has the key answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maps {
    tables: Vec<Table>,
}

impl Maps {
    /// Loads each table the elements name, in order, through `open` (normally
    /// `std::fs::File::open`).
    pub fn load<'a, R: Read>(
        elements: impl IntoIterator<Item = &'a str>,
        mut open: impl FnMut(&Path) -> io::Result<R>,
    ) -> Result<Maps, TableError> {
        let tables = elements
            .into_iter()
            .map(|e| TableRef::parse(e)?.load(&mut open))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Maps { tables })
    }

    /// Maps built from tables already parsed.
    pub fn from_tables(tables: Vec<Table>) -> Maps {
        Maps { tables }
    }

    /// Whether no table is configured (the parameter is empty).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The first table's value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.tables.iter().find_map(|t| t.get(key))
    }

    /// Looks up `address` in `virtual(8)`'s order: the full address (`user+ext@domain`),
    /// then the address without its extension (`user@domain`) when `delimiters` (the
    /// `recipient_delimiter` characters, empty for none) split one off, then the
    /// `@domain` catch-all. Each step asks every table before the next step starts, as
    /// Postfix's `mail_addr_find` does. An address literal has no catch-all.
    pub fn find_address(&self, address: &Mailbox, delimiters: &str) -> Option<&str> {
        let local = address.local_part();
        let domain = address.domain();
        let full = format!("{local}@{domain}");
        if let Some(v) = self.get(&full) {
            return Some(v);
        }
        if let Some(base) = strip_extension(local, delimiters) {
            if let Some(v) = self.get(&format!("{base}@{domain}")) {
                return Some(v);
            }
        }
        match domain {
            Host::Domain(d) => self.get(&format!("@{}", d.normalized())),
            Host::Literal(_) => None,
        }
    }
}

/// `user` of `user+ext` when one of `delimiters` occurs in `local` after its first
/// character (Postfix does not split a local part that starts with the delimiter, such
/// as `+owner`, or `owner-` lists' leading part).
pub fn strip_extension<'a>(local: &'a str, delimiters: &str) -> Option<&'a str> {
    if delimiters.is_empty() {
        return None;
    }
    local
        .char_indices()
        .skip(1)
        .find(|(_, c)| delimiters.contains(*c))
        .map(|(i, _)| &local[..i])
}

impl fmt::Display for Maps {
    /// The files, separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.tables.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&t.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        Table::parse("/etc/postern/vmailbox", text).unwrap()
    }

    fn mailbox(s: &str) -> Mailbox {
        Mailbox::parse(s, true).unwrap()
    }

    fn files(
        list: &'static [(&'static str, &'static str)],
    ) -> impl FnMut(&Path) -> io::Result<&'static [u8]> {
        move |path: &Path| {
            list.iter()
                .find(|(p, _)| Path::new(p) == path)
                .map(|(_, text)| text.as_bytes())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn references_as_postfix_writes_them() {
        for (element, path) in [
            ("texthash:/etc/postern/vmailbox", "/etc/postern/vmailbox"),
            ("hash:/etc/aliases", "/etc/aliases"),
            ("/srv/mail/vmailbox", "/srv/mail/vmailbox"),
        ] {
            let r = TableRef::parse(element).unwrap();
            assert_eq!(r.path, Path::new(path));
            assert_eq!(r.element, element);
        }
        for (element, unsupported) in [
            ("regexp:/etc/postern/re", true),
            ("unix:passwd.byname", true),
            ("proxy:hash:/x", true),
            ("hash:relative/path", false),
            ("vmailbox", false),
            ("", false),
        ] {
            let err = TableRef::parse(element).unwrap_err();
            assert_eq!(
                matches!(err, TableError::UnsupportedType { .. }),
                unsupported,
                "{element}: {err}"
            );
            assert!(err.to_string().contains(element), "{err}");
        }
        assert!(is_table_reference("hash:/x") && is_table_reference("/x"));
        assert!(!is_table_reference("example.com") && !is_table_reference("[::1]:25"));
    }

    #[test]
    fn the_postmap_text_format() {
        let t = table(
            "# a comment\n\
             \n\
             User@Example.COM   example.com/user/\r\n\
             other@example.com\texample.com/Other\n\
             \x20  # an indented comment\n\
             list@example.com  a,\n\
             \x20   b,\n\
             \tc\n\
             @catchall.example  catchall/\n",
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.get("user@example.com"), Some("example.com/user/"));
        assert_eq!(t.get("USER@EXAMPLE.COM"), Some("example.com/user/"));
        assert_eq!(t.get("other@example.com"), Some("example.com/Other"));
        assert_eq!(t.get("list@example.com"), Some("a, b, c"));
        assert_eq!(t.get("@catchall.example"), Some("catchall/"));
        assert_eq!(t.get("nobody@example.com"), None);
        assert!(table("").is_empty() && table("# only\n\n").is_empty());
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line) in [
            ("a@example.com x/\nnovalue\n", 2),
            ("a@example.com x/\nb@example.com   \n", 2),
            ("  leading continuation\n", 1),
            ("a@example.com x/\n# c\nA@EXAMPLE.COM y/\n", 3),
        ] {
            let err = Table::parse("/etc/postern/vmailbox", text).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("/etc/postern/vmailbox, line "), "{text}");
            assert!(text.contains(&format!("line {line}:")), "{text}");
        }
        let dup = Table::parse("t", "a@x.test 1\nA@X.TEST 2\n").unwrap_err();
        assert_eq!(
            dup,
            TableError::Duplicate {
                file: "t".into(),
                line: 2,
                first: 1,
                key: "a@x.test".into()
            }
        );
    }

    #[test]
    fn long_lines_and_large_tables_are_bounded() {
        let long = format!("k {}\n", "v".repeat(MAX_LINE_LEN));
        assert!(matches!(
            Table::parse("t", &long),
            Err(TableError::Syntax { line: 1, .. })
        ));
        let mut cont = String::from("k v\n");
        for _ in 0..(MAX_LINE_LEN / 100 + 1) {
            cont.push_str(&format!(" {}\n", "w".repeat(100)));
        }
        assert!(Table::parse("t", &cont).is_err());
        // An endless file stops at the bound.
        let r = TableRef::parse("/huge").unwrap();
        assert_eq!(
            r.load(&mut |_| Ok(io::repeat(b'a'))),
            Err(TableError::TooLarge {
                file: "/huge".into()
            })
        );
    }

    #[test]
    fn loading_names_the_file_on_failure() {
        let mut open = files(&[
            ("/t/good", "a@x.test a/\n"),
            ("/t/bin", "a@x.test \u{fffd}\n"),
        ]);
        let maps = Maps::load(["hash:/t/good"], &mut open).unwrap();
        assert_eq!(maps.get("A@X.test"), Some("a/"));
        assert_eq!(maps.to_string(), "/t/good");
        let err = Maps::load(["texthash:/t/missing"], &mut open).unwrap_err();
        assert!(matches!(&err, TableError::Read { file, .. } if file == "/t/missing"));
        let bad_utf8 = TableRef::parse("/b")
            .unwrap()
            .load(&mut |_| Ok(&b"a@x.test ok\nb@x.test \xff\n"[..]))
            .unwrap_err();
        assert!(
            matches!(bad_utf8, TableError::Syntax { line: 2, .. }),
            "{bad_utf8}"
        );
    }

    #[test]
    fn virtual_search_order() {
        let maps = Maps::from_tables(vec![
            table("user+box@example.com plus/\nuser@example.com user/\n@example.com catch/\n"),
            table("later@example.com later/\n@other.example other/\n"),
        ]);
        let find = |a: &str, d: &str| maps.find_address(&mailbox(a), d);
        assert_eq!(find("user@example.com", ""), Some("user/"));
        assert_eq!(find("USER@Example.Com", ""), Some("user/"));
        assert_eq!(find("user+box@example.com", "+"), Some("plus/"));
        assert_eq!(find("user+other@example.com", "+"), Some("user/"));
        // Without a delimiter, user+other is a user of its own: the catch-all takes it.
        assert_eq!(find("user+other@example.com", ""), Some("catch/"));
        // The full address in a later table wins over the first table's catch-all.
        assert_eq!(find("later@example.com", ""), Some("later/"));
        assert_eq!(find("x@other.example", ""), Some("other/"));
        assert_eq!(find("x@third.example", ""), None);
        assert_eq!(find("user@[192.0.2.1]", ""), None);
        assert_eq!(strip_extension("+owner", "+"), None);
        assert_eq!(strip_extension("a-b+c", "+-"), Some("a"));
    }

    #[test]
    fn domains_of_a_table() {
        let t = table("a@one.example x\n@Two.Example y\nthree.example z\nlocaluser w\n");
        let got: Vec<String> = t.domains().into_iter().collect();
        assert_eq!(got, ["one.example", "three.example", "two.example"]);
    }
}
