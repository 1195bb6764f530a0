//! `main.cf`: Postfix's `name = value` syntax, Postfix's names and defaults.
//!
//! Trusts: nothing in the text (see `source` for the line rules and bounds, `expand` for
//! `$name`). Every explicit value and every default is expanded and checked against its
//! parameter's kind when the file is parsed and again after each `set`, so a `MainCf`
//! that exists holds only valid values and its typed getters do not fail on a known
//! parameter of the right kind.
//!
//! Names Postern does not know: Postfix accepts any name and warns about the unused ones.
//! Postern rejects an unknown name with the nearest known name as a suggestion, unless
//! another setting in the same file uses it as `$name` (a helper variable, as in
//! `my_relays = 192.0.2.0/24` with `mynetworks = 127.0.0.0/8 $my_relays`): a typo of a
//! real parameter is never referred to, so it is still caught. A `$name` that refers to
//! nothing known or defined is an error too (Postfix would silently expand it to nothing).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConfError, Problem};
use crate::expand::{self, domain_of, Expander, Lookup, Source};
use crate::params::{param, DefaultValue, Param, PARAMS};
use crate::source::{is_blank, logical_lines, read_file, trim_blank, Logical, Span};
use crate::suggest::nearest;
use crate::value::{
    is_hostname, parse_bool, parse_group, parse_int, parse_size, parse_time, parse_user,
    split_list, Account, Group, Kind,
};

/// The host name used when the system's is unavailable or not a valid host name.
const FALLBACK_HOSTNAME: &str = "localhost";

/// The file name a `MainCf` built from defaults alone reports.
const DEFAULTS_FILE: &str = "main.cf";

/// What the defaults depend on outside the file: the host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    hostname: String,
}

impl Environment {
    /// The running system: gethostname(2), or `localhost` if that fails or is not a valid
    /// host name.
    pub fn from_system() -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|n| n.into_string().ok())
            .filter(|n| is_hostname(n))
            .unwrap_or_else(|| FALLBACK_HOSTNAME.to_string());
        Self { hostname }
    }

    /// A fixed host name (tests, tools that configure another machine).
    pub fn with_hostname(hostname: &str) -> Result<Self, ConfError> {
        if is_hostname(hostname) {
            Ok(Self {
                hostname: hostname.to_string(),
            })
        } else {
            Err(ConfError::bare(Problem::BadValue {
                name: "the host name".to_string(),
                value: hostname.to_string(),
                expected: Kind::Hostname.expected(),
                expanded_from: None,
                suggestion: None,
            }))
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }
}

/// Where an explicit value was written: its file and a map of its characters.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub file: Arc<Path>,
    pub span: Span,
}

#[derive(Debug, Clone)]
struct Setting {
    raw: String,
    place: Option<Place>,
    /// Definition order: file order, then `set` calls.
    seq: u64,
}

/// A parsed and validated `main.cf`.
#[derive(Debug, Clone)]
pub struct MainCf {
    file: PathBuf,
    env: Environment,
    settings: BTreeMap<String, Setting>,
    /// The expanded value of every known parameter and every explicit setting.
    values: BTreeMap<String, String>,
    next_seq: u64,
}

impl MainCf {
    fn empty(file: &Path, env: Environment) -> Self {
        Self {
            file: file.to_path_buf(),
            env,
            settings: BTreeMap::new(),
            values: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Every parameter at its default, for this system's host name.
    pub fn defaults() -> Self {
        Self::defaults_with_env(Environment::from_system())
    }

    /// Every parameter at its default, for the given environment.
    pub fn defaults_with_env(env: Environment) -> Self {
        let mut cf = Self::empty(Path::new(DEFAULTS_FILE), env);
        // INVARIANT: the defaults are valid for every valid host name (`Environment` only
        // holds valid ones); the parameter table's tests check every default.
        if let Err(e) = cf.rebuild() {
            panic!("the built-in defaults are inconsistent: {e}");
        }
        cf
    }

    /// Parses `text` as the `main.cf` at `file` (the name is used in errors).
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfError> {
        Self::parse_with_env(text, file, Environment::from_system())
    }

    /// Reads and parses the `main.cf` at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        Self::load_with_env(path, Environment::from_system())
    }

    pub fn load_with_env(path: &Path, env: Environment) -> Result<Self, ConfError> {
        let text = read_file(path)?;
        Self::parse_with_env(&text, path, env)
    }

    pub fn parse_with_env(text: &str, file: &Path, env: Environment) -> Result<Self, ConfError> {
        let lines = logical_lines(text, file)?;
        let shared: Arc<Path> = Arc::from(file);
        let mut cf = Self::empty(file, env);
        let mut definitions = Vec::with_capacity(lines.len());
        for line in &lines {
            let (name, value_start) = split_assignment(line).map_err(|(offset, p)| {
                let (l, c) = line.position(offset);
                ConfError::at(file, l, c, p)
            })?;
            let place = Place {
                file: Arc::clone(&shared),
                span: line.span.tail(&line.text, value_start),
            };
            definitions.push((name.clone(), line.position(0)));
            cf.insert(name, line.text[value_start..].to_string(), Some(place));
        }
        cf.check_names(&definitions)?;
        cf.rebuild()?;
        Ok(cf)
    }

    fn insert(&mut self, name: String, raw: String, place: Option<Place>) -> Option<Setting> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.settings.insert(name, Setting { raw, place, seq })
    }

    /// Explicit names in definition order.
    fn explicit_in_order(&self) -> Vec<String> {
        let mut named: Vec<(&String, u64)> =
            self.settings.iter().map(|(n, s)| (n, s.seq)).collect();
        named.sort_by_key(|&(_, seq)| seq);
        named.into_iter().map(|(n, _)| n.clone()).collect()
    }

    /// An error in the value of `owner` at byte `at` (or its start).
    fn locate(&self, owner: &str, at: Option<usize>, problem: Problem) -> ConfError {
        match self.settings.get(owner) {
            Some(Setting {
                raw,
                place: Some(place),
                ..
            }) => {
                let (line, col) = place.span.position(raw, at.unwrap_or(0));
                ConfError::at(&place.file, line, col, problem)
            }
            Some(_) => ConfError::bare(problem),
            None => ConfError::in_file(&self.file, problem),
        }
    }

    /// Rejects names that are neither known nor used by another setting.
    fn check_names(&self, definitions: &[(String, (usize, usize))]) -> Result<(), ConfError> {
        let mut used = HashSet::new();
        for name in self.explicit_in_order() {
            let raw = &self.settings[&name].raw;
            let pieces =
                expand::parse(raw).map_err(|e| self.locate(&name, Some(e.at), e.problem))?;
            for r in expand::references(&pieces) {
                if r.name != name {
                    used.insert(r.name.to_string());
                }
            }
        }
        for (name, (line, col)) in definitions {
            if param(name).is_none() && !used.contains(name) {
                return Err(ConfError::at(
                    &self.file,
                    *line,
                    *col,
                    Problem::UnknownParameter {
                        name: name.clone(),
                        suggestion: suggest_known(name),
                    },
                ));
            }
        }
        Ok(())
    }

    /// Checks every explicit value's syntax and references, then expands and checks every
    /// value; on success replaces `values`, on failure leaves them as they were.
    fn rebuild(&mut self) -> Result<(), ConfError> {
        let order = self.explicit_in_order();
        for name in &order {
            let raw = &self.settings[name].raw;
            let pieces =
                expand::parse(raw).map_err(|e| self.locate(name, Some(e.at), e.problem))?;
            for r in expand::references(&pieces) {
                if param(r.name).is_none() && !self.settings.contains_key(r.name) {
                    return Err(self.locate(
                        name,
                        Some(r.at),
                        Problem::UndefinedReference {
                            name: r.name.to_string(),
                            owner: name.clone(),
                            suggestion: suggest_known(r.name),
                        },
                    ));
                }
            }
        }
        let defaults = PARAMS
            .iter()
            .map(|p| p.name)
            .filter(|n| !self.settings.contains_key(*n))
            .map(str::to_string);
        let all: Vec<String> = order.into_iter().chain(defaults).collect();
        let mut values = BTreeMap::new();
        let mut expander = Expander::new(&*self);
        for name in all {
            let value = expander
                .value(&name)
                .map_err(|e| self.locate(&e.owner, e.at, e.problem))?;
            if let Some(p) = param(&name) {
                if !p.kind.accepts(&value) {
                    let raw = self.raw_or_default(p);
                    return Err(self.locate(
                        &name,
                        None,
                        Problem::BadValue {
                            name: name.clone(),
                            expanded_from: (raw != value).then_some(raw),
                            expected: p.kind.expected(),
                            suggestion: p.kind.suggestion(&value),
                            value,
                        },
                    ));
                }
            }
            values.insert(name, value);
        }
        self.values = values;
        Ok(())
    }

    /// The unexpanded text of a known parameter: as written, or its default.
    fn raw_or_default(&self, p: &Param) -> String {
        if let Some(s) = self.settings.get(p.name) {
            return s.raw.clone();
        }
        match self.source(p.name) {
            Source::Raw(t) => t.to_string(),
            Source::Owned(t) | Source::Literal(t) => t,
            Source::DomainOf(of) => format!("(derived from ${of})"),
            Source::Undefined => String::new(),
        }
    }

    /// Sets `name` to `value`, as `-o name=value` does: the name must be known (or already
    /// defined in the file), and every value is checked again. On error nothing changes.
    /// Blanks around `value` are dropped.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfError> {
        self.set_at(name, value, None)
    }

    pub(crate) fn set_at(
        &mut self,
        name: &str,
        value: &str,
        place: Option<Place>,
    ) -> Result<(), ConfError> {
        let fail = |offset: usize, problem| match &place {
            Some(p) => {
                let (line, col) = p.span.position(value, offset);
                ConfError::at(&p.file, line, col, problem)
            }
            None => ConfError::bare(problem),
        };
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(fail(0, Problem::BadNameCharacter(c)));
        }
        if name.is_empty() {
            return Err(fail(0, Problem::MissingName));
        }
        if param(name).is_none() && !self.settings.contains_key(name) {
            return Err(fail(
                0,
                Problem::UnknownParameter {
                    name: name.to_string(),
                    suggestion: suggest_known(name),
                },
            ));
        }
        if let Some((offset, c)) = value
            .char_indices()
            .find(|&(_, c)| c.is_control() && c != '\t')
        {
            return Err(fail(offset, Problem::ControlCharacter(c)));
        }
        let leading = value.len() - value.trim_start_matches(is_blank).len();
        let place = place.map(|p| Place {
            span: p.span.tail(value, leading),
            file: p.file,
        });
        let previous = self.insert(name.to_string(), trim_blank(value).to_string(), place);
        if let Err(e) = self.rebuild() {
            match previous {
                Some(old) => self.settings.insert(name.to_string(), old),
                None => self.settings.remove(name),
            };
            return Err(e);
        }
        Ok(())
    }

    /// The file this configuration came from (`main.cf` for defaults alone).
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The expanded value of a known parameter or of a name defined in the file.
    pub fn get(&self, name: &str) -> Result<String, ConfError> {
        self.value(name).map(str::to_string)
    }

    fn value(&self, name: &str) -> Result<&str, ConfError> {
        self.values.get(name).map(String::as_str).ok_or_else(|| {
            ConfError::bare(Problem::UnknownParameter {
                name: name.to_string(),
                suggestion: suggest_known(name),
            })
        })
    }

    /// The value of `name` with its parameter, which must be of a kind `fits` accepts.
    fn typed(
        &self,
        name: &str,
        wanted: &'static str,
        fits: impl Fn(Kind) -> bool,
    ) -> Result<(&'static Param, &str), ConfError> {
        let value = self.value(name)?;
        let wrong = |kind: &'static str| {
            ConfError::bare(Problem::WrongKind {
                name: name.to_string(),
                kind,
                wanted,
            })
        };
        match param(name) {
            Some(p) if fits(p.kind) => Ok((p, value)),
            Some(p) => Err(wrong(p.kind.noun())),
            None => Err(wrong("a user-defined text")),
        }
    }

    fn bad(p: &Param, value: &str) -> ConfError {
        ConfError::bare(Problem::BadValue {
            name: p.name.to_string(),
            value: value.to_string(),
            expected: p.kind.expected(),
            expanded_from: None,
            suggestion: None,
        })
    }

    pub fn get_bool(&self, name: &str) -> Result<bool, ConfError> {
        let (p, v) = self.typed(name, "a yes/no", |k| k == Kind::Bool)?;
        parse_bool(v).ok_or_else(|| Self::bad(p, v))
    }

    pub fn get_int(&self, name: &str) -> Result<i64, ConfError> {
        let (p, v) = self.typed(name, "an integer", |k| matches!(k, Kind::Int { .. }))?;
        match p.kind {
            Kind::Int { min, max } => parse_int(v, min, max),
            _ => None,
        }
        .ok_or_else(|| Self::bad(p, v))
    }

    pub fn get_time(&self, name: &str) -> Result<Duration, ConfError> {
        let (p, v) = self.typed(name, "a time", |k| matches!(k, Kind::Time { .. }))?;
        match p.kind {
            Kind::Time { unit, min_seconds } => parse_time(v, unit, min_seconds),
            _ => None,
        }
        .ok_or_else(|| Self::bad(p, v))
    }

    pub fn get_size(&self, name: &str) -> Result<u64, ConfError> {
        let (p, v) = self.typed(name, "a size", |k| k == Kind::Size)?;
        parse_size(v).ok_or_else(|| Self::bad(p, v))
    }

    /// The value split as a Postfix list (commas and/or white space). Any parameter,
    /// known or defined, can be read as a list.
    pub fn get_list(&self, name: &str) -> Result<Vec<String>, ConfError> {
        let v = self.value(name)?;
        Ok(split_list(v).into_iter().map(str::to_string).collect())
    }

    /// A daemon identity (`smtpd_user`, `queue_user`, ...).
    pub fn get_user(&self, name: &str) -> Result<Account, ConfError> {
        let (p, v) = self.typed(name, "a user", |k| k == Kind::User)?;
        parse_user(v).ok_or_else(|| Self::bad(p, v))
    }

    /// A group (`setgid_group`).
    pub fn get_group(&self, name: &str) -> Result<Group, ConfError> {
        let (p, v) = self.typed(name, "a group", |k| k == Kind::Group)?;
        parse_group(v).ok_or_else(|| Self::bad(p, v))
    }

    /// The text of `name` as written in the file (or set), before expansion.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(|s| s.raw.as_str())
    }

    /// Whether `name` is set in the file (or by `set`).
    pub fn is_explicit(&self, name: &str) -> bool {
        self.settings.contains_key(name)
    }

    /// Every known parameter with its expanded value, sorted by name (`postern conf`).
    pub fn iter_all(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.values
            .iter()
            .filter(|(n, _)| param(n).is_some())
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Every name set in the file (or by `set`), known or user-defined, with its expanded
    /// value, sorted by name (`postern conf -n`).
    pub fn iter_explicit(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.settings
            .keys()
            .filter_map(|n| self.values.get(n).map(|v| (n.as_str(), v.as_str())))
    }

    /// `name = value` with the expanded value, as `postconf` prints it (`name =` when empty).
    pub fn format_line(&self, name: &str) -> Result<String, ConfError> {
        Ok(format_pair(name, self.value(name)?))
    }
}

impl Lookup for MainCf {
    fn source(&self, name: &str) -> Source<'_> {
        if let Some(s) = self.settings.get(name) {
            return Source::Raw(&s.raw);
        }
        let host = &self.env.hostname;
        match param(name).map(|p| p.default) {
            None => Source::Undefined,
            Some(DefaultValue::Raw(text)) => Source::Raw(text),
            Some(DefaultValue::HostName) if host.contains('.') => Source::Raw(host),
            Some(DefaultValue::HostName) => Source::Owned(format!("{host}.$mydomain")),
            Some(DefaultValue::DomainOfHostName) if self.settings.contains_key("myhostname") => {
                Source::DomainOf("myhostname")
            }
            Some(DefaultValue::DomainOfHostName) => Source::Literal(domain_of(host)),
        }
    }
}

/// The explicit settings, one `name = raw value` line each, sorted by name: a `main.cf`
/// that parses back to the same configuration (`postconf -n` without expansion).
impl fmt::Display for MainCf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, s) in &self.settings {
            writeln!(f, "{}", format_pair(name, &s.raw))?;
        }
        Ok(())
    }
}

fn format_pair(name: &str, value: &str) -> String {
    if value.is_empty() {
        format!("{name} =")
    } else {
        format!("{name} = {value}")
    }
}

pub(crate) fn suggest_known(name: &str) -> Option<&'static str> {
    nearest(name, PARAMS.iter().map(|p| p.name))
}

/// Splits `name = value`: the name and the byte offset where the value starts. Errors
/// carry the byte offset of the offending character.
fn split_assignment(line: &Logical) -> Result<(String, usize), (usize, Problem)> {
    let text = line.text.as_str();
    let name_end = text
        .find(|c: char| is_blank(c) || c == '=')
        .unwrap_or(text.len());
    let name = &text[..name_end];
    if name.is_empty() {
        return Err((0, Problem::MissingName));
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err((i, Problem::BadNameCharacter(c)));
    }
    let after_name = text[name_end..].trim_start_matches(is_blank);
    let eq = text.len() - after_name.len();
    let Some(after_eq) = after_name.strip_prefix('=') else {
        return Err((
            eq,
            Problem::MissingEquals {
                name: name.to_string(),
            },
        ));
    };
    let value = after_eq.trim_start_matches(is_blank);
    Ok((name.to_string(), text.len() - value.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment::with_hostname("mail.example.test").unwrap()
    }

    fn parse(text: &str) -> Result<MainCf, ConfError> {
        MainCf::parse_with_env(text, Path::new("/etc/postern/main.cf"), env())
    }

    fn ok(text: &str) -> MainCf {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> ConfError {
        match parse(text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => e,
        }
    }

    fn at(e: &ConfError) -> (usize, usize) {
        (e.line(), e.column())
    }

    // --- syntax ---

    #[test]
    fn assignment_forms() {
        let cf = ok("mail_name=A\nsyslog_name =B\nrelayhost= [relay.example]:587 \nsmtpd_banner\t=\t x  y \n");
        assert_eq!(cf.get("mail_name").unwrap(), "A");
        assert_eq!(cf.get("syslog_name").unwrap(), "B");
        assert_eq!(cf.get("relayhost").unwrap(), "[relay.example]:587");
        assert_eq!(cf.get("smtpd_banner").unwrap(), "x  y");
    }

    #[test]
    fn continuation_lines_join_the_value() {
        let cf = ok("mydestination = $myhostname,\n    localhost.$mydomain,\n\tlocalhost\n");
        assert_eq!(
            cf.get_list("mydestination").unwrap(),
            vec!["mail.example.test", "localhost.example.test", "localhost"]
        );
    }

    #[test]
    fn comments_only_at_line_start_and_hash_in_value_is_data() {
        let cf = ok("# a comment\n   # an indented comment\nsmtpd_banner = $myhostname #1 ESMTP\n");
        assert_eq!(
            cf.get("smtpd_banner").unwrap(),
            "mail.example.test #1 ESMTP"
        );
        // A comment between a line and its continuation does not end the line.
        let cf = ok("mynetworks = 10.0.0.0/8\n# comment\n  192.0.2.0/24\n");
        assert_eq!(
            cf.get_list("mynetworks").unwrap(),
            vec!["10.0.0.0/8", "192.0.2.0/24"]
        );
    }

    #[test]
    fn later_definition_overrides_earlier() {
        let cf = ok("message_size_limit = abc\nmessage_size_limit = 5000\n");
        assert_eq!(cf.get_size("message_size_limit").unwrap(), 5000);
        assert_eq!(cf.raw("message_size_limit"), Some("5000"));
    }

    #[test]
    fn structural_errors_have_positions() {
        let e = err("relayhost = x\nmynetworks 127.0.0.1\n");
        assert_eq!(at(&e), (2, 12));
        assert!(matches!(e.problem(), Problem::MissingEquals { .. }));
        let e = err("= x\n");
        assert_eq!(at(&e), (1, 1));
        assert!(matches!(e.problem(), Problem::MissingName));
        let e = err("my-var = x\n");
        assert_eq!(at(&e), (1, 3));
        assert!(matches!(e.problem(), Problem::BadNameCharacter('-')));
        let e = err("  relayhost = x\n");
        assert!(matches!(e.problem(), Problem::OrphanContinuation));
        assert_eq!(
            e.to_string(),
            "/etc/postern/main.cf:1:1: this line starts with white space, which continues a \
             previous line, but there is none; start a new setting in column 1"
        );
    }

    // --- names ---

    #[test]
    fn unknown_name_suggests_the_nearest_with_line_and_column() {
        let e = err("# comment\nmyhostname = mx.example.test\nmynetwork = 127.0.0.0/8\n");
        assert_eq!(
            e.to_string(),
            "/etc/postern/main.cf:3:1: unknown parameter `mynetwork`; did you mean `mynetworks`?"
        );
        let e = err("completely_unrelated_thing = 1\n");
        assert!(matches!(
            e.problem(),
            Problem::UnknownParameter {
                suggestion: None,
                ..
            }
        ));
    }

    #[test]
    fn user_defined_names_are_accepted_when_used() {
        let cf = ok("my_relays = 192.0.2.0/24\nmynetworks = 127.0.0.0/8 $my_relays\n");
        assert_eq!(
            cf.get_list("mynetworks").unwrap(),
            vec!["127.0.0.0/8", "192.0.2.0/24"]
        );
        assert_eq!(cf.get("my_relays").unwrap(), "192.0.2.0/24");
        assert!(cf.iter_explicit().any(|(n, _)| n == "my_relays"));
        assert!(cf.iter_all().all(|(n, _)| n != "my_relays"));
        // Used only by an overridden definition: not used.
        let e = err("x = 1\nmynetworks = $x\nmynetworks = 127.0.0.1\n");
        assert_eq!(at(&e), (1, 1));
        // Used only by itself: not used.
        let e = err("x = $x\n");
        assert!(matches!(e.problem(), Problem::UnknownParameter { .. }));
    }

    #[test]
    fn undefined_reference_is_an_error_at_its_column() {
        let e = err("mydestination = $myhostname, $myhostnme\n");
        assert_eq!(at(&e), (1, 30));
        assert_eq!(
            e.to_string(),
            "/etc/postern/main.cf:1:30: `$myhostnme` in the value of `mydestination` names no \
             known or defined parameter; did you mean `myhostname`?"
        );
        // Also in an untaken branch, and on a continuation line.
        let e = err("relayhost =\nsmtpd_banner = x\n  ${relayhost?$nope}\n");
        assert_eq!(at(&e), (3, 15));
    }

    // --- expansion ---

    #[test]
    fn every_expansion_form() {
        let cf = ok(concat!(
            "mail_name = Mail\n",
            "smtpd_banner = $myhostname ${mail_name} $(mail_name) $$5\n",
            "relayhost =\n",
            "syslog_name = a${relayhost?-relayed}${relayhost:-direct}\n",
            "bounce_notice_recipient = ${mail_name?postmaster@$mydomain}\n",
        ));
        assert_eq!(
            cf.get("smtpd_banner").unwrap(),
            "mail.example.test Mail Mail $5"
        );
        assert_eq!(cf.get("syslog_name").unwrap(), "a-direct");
        assert_eq!(
            cf.get("bounce_notice_recipient").unwrap(),
            "postmaster@example.test"
        );
        assert_eq!(
            cf.raw("smtpd_banner"),
            Some("$myhostname ${mail_name} $(mail_name) $$5")
        );
    }

    #[test]
    fn an_expansion_loop_is_an_error_naming_the_chain() {
        let e = err("myorigin = $mydestination\nmydestination = localhost, $myorigin\n");
        assert_eq!(
            e.to_string(),
            "/etc/postern/main.cf:2:28: expansion loop: `$myorigin` -> `$mydestination` -> \
             `$myorigin`"
        );
        // A loop through a default: mydomain's default derives from myhostname.
        let e = err("myhostname = mx.$mydomain\n");
        assert!(matches!(e.problem(), Problem::ExpansionLoop(_)), "{e}");
    }

    #[test]
    fn expansion_syntax_errors_point_into_the_value() {
        let e = err("smtpd_banner = hello ${mail_name\n");
        assert_eq!(at(&e), (1, 22));
        assert!(matches!(e.problem(), Problem::Unclosed { .. }));
        let e = err("smtpd_banner = costs 5$\n");
        assert_eq!(at(&e), (1, 23));
    }

    // --- values by kind ---

    #[test]
    fn bad_values_per_kind_name_file_line_and_column() {
        let cases = [
            (
                "message_size_limit = 10MB",
                "message_size_limit",
                "a size in bytes",
            ),
            (
                "smtpd_recipient_limit = many",
                "smtpd_recipient_limit",
                "a whole number",
            ),
            (
                "smtpd_recipient_limit = 0",
                "smtpd_recipient_limit",
                "from 1 to",
            ),
            ("smtpd_timeout = 5x", "smtpd_timeout", "a time"),
            ("smtpd_timeout = 1h30m", "smtpd_timeout", "a time"),
            (
                "smtpd_forbid_bare_newline = rejet",
                "smtpd_forbid_bare_newline",
                "did you mean `reject`?",
            ),
            (
                "sandbox_enforcement = off",
                "sandbox_enforcement",
                "`required`, `best_effort`",
            ),
            (
                "queue_directory = var/spool",
                "queue_directory",
                "absolute path",
            ),
            (
                "myhostname = mail_server.example",
                "myhostname",
                "domain name",
            ),
            ("smtpd_user = root", "smtpd_user", "not root"),
            ("queue_user = 0:0", "queue_user", "not root"),
            ("setgid_group = 0", "setgid_group", "not root"),
            (
                "notify_classes = resource, sofware",
                "notify_classes",
                "did you mean `software`?",
            ),
        ];
        for (line, name, fragment) in cases {
            let e = err(&format!("relayhost =\n{line}\n"));
            let column = line.find('=').unwrap() + 3;
            assert_eq!(at(&e), (2, column), "{line}");
            let text = e.to_string();
            assert!(text.contains(&format!("for `{name}`")), "{text}");
            assert!(text.contains(fragment), "{text}");
        }
    }

    #[test]
    fn booleans_are_checked_by_kind() {
        // No yes/no parameter is in the table yet; the kind is checked directly.
        assert!(Kind::Bool.accepts("yes"));
        assert!(!Kind::Bool.accepts("on"));
    }

    #[test]
    fn bad_value_after_expansion_mentions_the_raw_text() {
        let e = err("my_limit = ten\nsmtpd_recipient_limit = $my_limit\n");
        assert_eq!(at(&e), (2, 25));
        assert!(e.to_string().contains("(expanded from `$my_limit`)"), "{e}");
    }

    #[test]
    fn times_use_postfix_units_and_the_parameters_default_unit() {
        let cf = ok("maximal_queue_lifetime = 2\nbounce_queue_lifetime = 12h\nmax_idle = 3w\nsmtpd_timeout = 5m\ndelay_warning_time = 4\n");
        assert_eq!(
            cf.get_time("maximal_queue_lifetime").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(
            cf.get_time("bounce_queue_lifetime").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(
            cf.get_time("max_idle").unwrap(),
            Duration::from_secs(3 * 604_800)
        );
        assert_eq!(
            cf.get_time("smtpd_timeout").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            cf.get_time("delay_warning_time").unwrap(),
            Duration::from_secs(4 * 3600)
        );
    }

    // --- defaults ---

    #[test]
    fn defaults_of_the_documented_parameters() {
        let cf = MainCf::defaults_with_env(env());
        let s = |n| cf.get(n).unwrap();
        let t = |n| cf.get_time(n).unwrap().as_secs();
        let i = |n| cf.get_int(n).unwrap();
        assert_eq!(s("myhostname"), "mail.example.test");
        assert_eq!(s("mydomain"), "example.test");
        assert_eq!(s("myorigin"), "mail.example.test");
        assert_eq!(
            s("mydestination"),
            "mail.example.test, localhost.example.test, localhost"
        );
        assert_eq!(s("mynetworks"), "127.0.0.0/8 [::1]/128");
        assert_eq!(s("relay_domains"), "");
        assert_eq!(s("relayhost"), "");
        assert_eq!(cf.get_size("message_size_limit").unwrap(), 10_240_000);
        assert_eq!(i("line_length_limit"), 2048);
        assert_eq!(s("queue_directory"), "/var/spool/postern");
        assert_eq!(i("default_process_limit"), 100);
        assert_eq!(i("max_use"), 100);
        assert_eq!(t("max_idle"), 100);
        assert_eq!(s("smtpd_banner"), "mail.example.test ESMTP Postern");
        assert_eq!(s("mail_name"), "Postern");
        assert_eq!(t("smtpd_timeout"), 300);
        assert_eq!(i("smtpd_hard_error_limit"), 20);
        assert_eq!(i("smtpd_soft_error_limit"), 10);
        assert_eq!(i("smtpd_recipient_limit"), 1000);
        assert_eq!(s("smtpd_forbid_bare_newline"), "normalize");
        assert_eq!(t("minimal_backoff_time"), 300);
        assert_eq!(t("maximal_backoff_time"), 4000);
        assert_eq!(t("queue_run_delay"), 300);
        assert_eq!(t("maximal_queue_lifetime"), 5 * 86_400);
        assert_eq!(t("bounce_queue_lifetime"), 5 * 86_400);
        assert_eq!(t("delay_warning_time"), 0);
        assert_eq!(i("qmgr_message_active_limit"), 20_000);
        assert_eq!(i("initial_destination_concurrency"), 5);
        assert_eq!(i("default_destination_concurrency_limit"), 20);
        assert_eq!(i("default_destination_recipient_limit"), 50);
        assert_eq!(i("smtp_destination_concurrency_limit"), 20);
        assert_eq!(i("virtual_destination_recipient_limit"), 50);
        assert_eq!(
            cf.get_group("setgid_group").unwrap(),
            Group::Name("postern-drop".into())
        );
        assert_eq!(s("sandbox_enforcement"), "required");
        for (name, user) in [
            ("smtpd_user", "postern-smtpd"),
            ("queue_user", "postern-queue"),
            ("smtp_user", "postern-smtp"),
            ("vmail_user", "postern-vmail"),
            ("bounce_user", "postern-bounce"),
        ] {
            assert_eq!(cf.get_user(name).unwrap(), Account::Name(user.into()));
        }
        assert_eq!(t("master_stop_timeout"), 30);
        assert_eq!(cf.raw("mydestination"), None);
        assert_eq!(cf.iter_explicit().count(), 0);
        assert_eq!(cf.iter_all().count(), PARAMS.len());
    }

    #[test]
    fn host_name_defaults_follow_postfix() {
        let short = MainCf::defaults_with_env(Environment::with_hostname("box").unwrap());
        assert_eq!(short.get("myhostname").unwrap(), "box.localdomain");
        assert_eq!(short.get("mydomain").unwrap(), "localdomain");
        let cf = MainCf::parse_with_env(
            "mydomain = example.org\n",
            Path::new("m"),
            Environment::with_hostname("box").unwrap(),
        )
        .unwrap();
        assert_eq!(cf.get("myhostname").unwrap(), "box.example.org");
        let cf = ok("myhostname = mx1.corp.example\n");
        assert_eq!(cf.get("mydomain").unwrap(), "corp.example");
        assert_eq!(cf.get("myorigin").unwrap(), "mx1.corp.example");
        assert!(Environment::with_hostname("not a host").is_err());
        let system = Environment::from_system();
        assert!(is_hostname(system.hostname()));
        assert!(MainCf::defaults().get("myhostname").is_ok());
    }

    #[test]
    fn a_default_that_refers_to_an_explicit_value_follows_it() {
        let cf = ok(
            "default_destination_recipient_limit = 7\nsmtpd_tls_cert_file = /etc/ssl/mail.pem\n",
        );
        assert_eq!(
            cf.get_int("virtual_destination_recipient_limit").unwrap(),
            7
        );
        assert_eq!(cf.get("smtpd_tls_key_file").unwrap(), "/etc/ssl/mail.pem");
    }

    // --- API ---

    #[test]
    fn typed_getters_check_the_kind() {
        let cf = MainCf::defaults_with_env(env());
        let e = cf.get_int("max_idle").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`max_idle` is a time parameter, not an integer"
        );
        assert!(cf.get_time("mail_name").is_err());
        assert!(cf.get_size("max_use").is_err());
        assert!(cf.get_bool("mail_name").is_err());
        let e = cf.get("mynetwork").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown parameter `mynetwork`; did you mean `mynetworks`?"
        );
        assert_eq!(
            cf.get_list("allow_mail_to_commands").unwrap(),
            vec!["alias", "forward"]
        );
    }

    #[test]
    fn set_validates_like_the_file() {
        let mut cf = ok("relayhost = [a.example]\n");
        cf.set("smtpd_timeout", " 60s ").unwrap();
        assert_eq!(
            cf.get_time("smtpd_timeout").unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(cf.raw("smtpd_timeout"), Some("60s"));
        let e = cf.set("smtpd_timeout", "soon").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad value `soon` for `smtpd_timeout`"),
            "{e}"
        );
        assert_eq!(
            cf.get_time("smtpd_timeout").unwrap(),
            Duration::from_secs(60)
        );
        let e = cf.set("smtpd_timeot", "60s").unwrap_err();
        assert!(e.to_string().contains("did you mean `smtpd_timeout`?"));
        assert!(cf.set("relayhost", "a\nb").is_err());
        // A change propagates to the values that refer to it.
        cf.set("myhostname", "other.example.net").unwrap();
        assert_eq!(cf.get("mydomain").unwrap(), "example.net");
        assert_eq!(
            cf.get("smtpd_banner").unwrap(),
            "other.example.net ESMTP Postern"
        );
        // A rejected set leaves no trace.
        assert!(cf.set("mail_name", "$nothing_here").is_err());
        assert_eq!(cf.raw("mail_name"), None);
    }

    #[test]
    fn display_and_format_line_as_postconf() {
        let cf = ok("relayhost =\nsmtpd_banner = $myhostname  ready\nmynetworks = 127.0.0.0/8,\n  10.0.0.0/8\n");
        assert_eq!(
            cf.to_string(),
            "mynetworks = 127.0.0.0/8,  10.0.0.0/8\nrelayhost =\nsmtpd_banner = $myhostname  ready\n"
        );
        assert_eq!(cf.format_line("relayhost").unwrap(), "relayhost =");
        assert_eq!(
            cf.format_line("smtpd_banner").unwrap(),
            "smtpd_banner = mail.example.test  ready"
        );
        let again = parse(&cf.to_string()).unwrap();
        assert!(again.iter_all().eq(cf.iter_all()));
        let names: Vec<_> = cf.iter_all().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = std::env::temp_dir().join(format!("conf-main-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("main.cf");
        std::fs::write(&path, "mynetworks = 10.0.0.0/8\nmax_use = x\n").unwrap();
        let e = MainCf::load_with_env(&path, env()).unwrap_err();
        assert_eq!(e.file(), Some(path.as_path()));
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2:11: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, "mynetworks = 10.0.0.0/8\n").unwrap();
        let cf = MainCf::load_with_env(&path, env()).unwrap();
        assert_eq!(cf.file(), path.as_path());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
