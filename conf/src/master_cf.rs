//! `master.cf`: which services run, in Postfix's eight columns.
//!
//! `service type private unpriv chroot wakeup maxproc command [args]`, one service per
//! logical line (continuation lines start with white space; `#` comments at line start).
//! `-` in a column means its default: private `y` (but `n` for inet, which cannot be
//! private), unpriv `y`, chroot `n`, wakeup `0` (never), maxproc `$default_process_limit`.
//!
//! Decisions where Postfix differs or is silent:
//! - chroot `y` is accepted, so a Postfix `master.cf` parses, but Postern never chroots
//!   (each daemon is confined by its own uid, landlock and seccomp); it yields a warning.
//! - an inet service with `y` in the private column is an error (Postfix cannot honour
//!   it either).
//! - the command is a bare program name looked up in `daemon_directory`; paths are
//!   rejected, so `master.cf` cannot make the master run an arbitrary program.
//! - inet ports are numbers or one of a few well-known names (`PORT_NAMES`); Postern does
//!   not read `/etc/services`.
//! - `-o name=value` (or `-oname=value`, or `-o { name = value }` for values with spaces)
//!   is recognised among the leading options of the command, as getopt would: after the
//!   first argument that is not an option, `-o` is an ordinary argument (for example in a
//!   `pipe` command's `argv=`). The name must be a known `main.cf` parameter; a value
//!   without `$` is checked by kind at once, one with `$` when it is applied to a `MainCf`
//!   (`Service::settings`, `MasterCf::check`).
//! - any argument may be written `{ text with spaces }` (Postfix 3.0 syntax).
//!
//! Trusts: nothing in the text (see `source` for the line rules and bounds).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfError, ConfWarning, Problem};
use crate::expand;
use crate::main_cf::{suggest_known, MainCf, Place};
use crate::params::param;
use crate::source::{is_blank, logical_lines, read_file, trim_blank, Logical};
use crate::suggest::nearest;
use crate::value::{is_hostname, MAX_INT};

/// The longest service or command name: it becomes part of a socket or program path, and
/// real names are a dozen characters.
pub const MAX_NAME_LEN: usize = 64;

/// The largest wakeup interval and process limit, in line with `main.cf` integers.
pub const MAX_COLUMN_NUMBER: u32 = MAX_INT as u32;

/// Service port names accepted without `/etc/services`.
pub const PORT_NAMES: &[(&str, u16)] = &[
    ("smtp", 25),
    ("submission", 587),
    ("submissions", 465),
    ("smtps", 465),
    ("lmtp", 24),
];

const SERVICE_TYPES: &[&str] = &["inet", "unix", "unix-dgram", "fifo", "pass"];

/// The transport of a service (master.cf's type column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Inet,
    Unix,
    UnixDgram,
    Fifo,
    Pass,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inet => "inet",
            Self::Unix => "unix",
            Self::UnixDgram => "unix-dgram",
            Self::Fifo => "fifo",
            Self::Pass => "pass",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "inet" => Self::Inet,
            "unix" => Self::Unix,
            "unix-dgram" => Self::UnixDgram,
            "fifo" => Self::Fifo,
            "pass" => Self::Pass,
            _ => return None,
        })
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host part of an inet service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Where an inet service listens: `[host:]port`; without a host, on `inet_interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Option<Host>,
    pub port: u16,
}

/// The wakeup column: every `seconds` the master pokes the service (0 = never); with
/// `?`, only while the service is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wakeup {
    pub seconds: u32,
    pub only_if_used: bool,
}

/// Where an override was written, for errors found when it is applied.
#[derive(Debug, Clone)]
struct OverridePlace {
    value: Place,
}

/// One line of `master.cf`.
#[derive(Debug, Clone)]
pub struct Service {
    /// As written; for inet, `[host:]port`.
    pub name: String,
    pub kind: ServiceKind,
    /// For inet services, the parsed name.
    pub endpoint: Option<Endpoint>,
    pub private: bool,
    pub unpriv: bool,
    /// As written; Postern never chroots (see the module notes).
    pub chroot: bool,
    pub wakeup: Wakeup,
    /// `None`: `$default_process_limit`; `Some(0)`: no limit.
    pub maxproc: Option<u32>,
    pub command: String,
    /// The command's arguments other than `-o` overrides, in order.
    pub args: Vec<String>,
    /// `-o name=value`, in order (a later one for the same name wins).
    pub overrides: Vec<(String, String)>,
    /// The line the service starts on.
    pub line: usize,
    /// How many of `args` are leading options (before the first non-option argument).
    option_args: usize,
    places: Vec<OverridePlace>,
}

impl Service {
    /// `main` with this service's `-o` overrides applied and checked.
    pub fn settings(&self, main: &MainCf) -> Result<MainCf, ConfError> {
        let mut cf = main.clone();
        for ((name, value), place) in self.overrides.iter().zip(&self.places) {
            cf.set_at(name, value, Some(place.value.clone()))?;
        }
        Ok(cf)
    }

    /// The process limit: maxproc, or `default_process_limit` (with this service's
    /// overrides) for `-`; 0 means no limit.
    pub fn process_limit(&self, main: &MainCf) -> Result<u32, ConfError> {
        match self.maxproc {
            Some(n) => Ok(n),
            None => {
                let n = self.settings(main)?.get_int("default_process_limit")?;
                // The parameter's range (1..=MAX_INT) fits a u32.
                Ok(u32::try_from(n).unwrap_or(MAX_COLUMN_NUMBER))
            }
        }
    }

    /// The same service apart from where it was written.
    fn same_as(&self, other: &Self) -> bool {
        self.name == other.name
            && self.kind == other.kind
            && self.endpoint == other.endpoint
            && self.private == other.private
            && self.unpriv == other.unpriv
            && self.chroot == other.chroot
            && self.wakeup == other.wakeup
            && self.maxproc == other.maxproc
            && self.command == other.command
            && self.args == other.args
            && self.overrides == other.overrides
            && self.option_args == other.option_args
    }
}

/// A parsed `master.cf`.
#[derive(Debug, Clone)]
pub struct MasterCf {
    file: PathBuf,
    services: Vec<Service>,
    warnings: Vec<ConfWarning>,
}

impl MasterCf {
    /// Parses `text` as the `master.cf` at `file` (the name is used in errors).
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfError> {
        let lines = logical_lines(text, file)?;
        let shared: Arc<Path> = Arc::from(file);
        let mut cf = Self {
            file: file.to_path_buf(),
            services: Vec::new(),
            warnings: Vec::new(),
        };
        let mut seen: HashMap<(String, ServiceKind), usize> = HashMap::new();
        for line in &lines {
            let service = parse_service(line, &shared, &mut cf.warnings)?;
            let key = (service.name.clone(), service.kind);
            if let Some(&first_line) = seen.get(&key) {
                return Err(ConfError::at(
                    file,
                    service.line,
                    1,
                    Problem::DuplicateService {
                        name: service.name,
                        kind: service.kind.as_str(),
                        first_line,
                    },
                ));
            }
            seen.insert(key, service.line);
            cf.services.push(service);
        }
        Ok(cf)
    }

    /// Reads and parses the `master.cf` at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        let text = read_file(path)?;
        Self::parse(&text, path)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The service `name` of type `kind`.
    pub fn service(&self, name: &str, kind: ServiceKind) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name && s.kind == kind)
    }

    /// Things accepted but not done as a Postfix administrator might expect.
    pub fn warnings(&self) -> &[ConfWarning] {
        &self.warnings
    }

    /// Applies every service's overrides to `main`, so errors that depend on `main.cf`
    /// (a `$name` in an override) show up at start-up rather than at first use.
    pub fn check(&self, main: &MainCf) -> Result<(), ConfError> {
        for service in &self.services {
            service.settings(main)?;
        }
        Ok(())
    }

    /// Whether `other` lists the same services with the same settings.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.services.len() == other.services.len()
            && self
                .services
                .iter()
                .zip(&other.services)
                .all(|(a, b)| a.same_as(b))
    }
}

/// One token of a logical line.
#[derive(Debug)]
struct Token<'a> {
    /// As written, braces included.
    raw: &'a str,
    /// The text: for `{ ... }`, the inside without surrounding blanks.
    text: &'a str,
    /// Byte offset of `raw` and of `text` in the line.
    start: usize,
    text_start: usize,
    braced: bool,
}

/// Splits a line into blank-separated tokens; `{ ... }` (with nested braces) is one token.
fn tokens(line: &str) -> Result<Vec<Token<'_>>, (usize, Problem)> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        while bytes.get(pos).is_some_and(|&b| b == b' ' || b == b'\t') {
            pos += 1;
        }
        if pos >= bytes.len() {
            return Ok(out);
        }
        let start = pos;
        let mut level = 0usize;
        let mut close = None;
        while let Some(&b) = bytes.get(pos) {
            match b {
                b' ' | b'\t' if level == 0 => break,
                b'{' => level += 1,
                b'}' if level == 0 => return Err((pos, Problem::UnmatchedBrace)),
                b'}' => {
                    level -= 1;
                    if level == 0 && bytes[start] == b'{' && close.is_none() {
                        close = Some(pos);
                    }
                }
                _ => {}
            }
            pos += 1;
        }
        if level > 0 {
            return Err((start, Problem::UnclosedBrace));
        }
        let raw = &line[start..pos];
        let token = match close {
            Some(c) if c + 1 != pos => return Err((c + 1, Problem::TextAfterBrace)),
            Some(c) => {
                let inside = &line[start + 1..c];
                let text = trim_blank(inside);
                let lead = inside.len() - inside.trim_start_matches(is_blank).len();
                Token {
                    raw,
                    text,
                    start,
                    text_start: start + 1 + lead,
                    braced: true,
                }
            }
            None => Token {
                raw,
                text: raw,
                start,
                text_start: start,
                braced: false,
            },
        };
        out.push(token);
    }
}

fn parse_service(
    line: &Logical,
    file: &Arc<Path>,
    warnings: &mut Vec<ConfWarning>,
) -> Result<Service, ConfError> {
    let fail = |offset: usize, problem| {
        let (l, c) = line.position(offset);
        ConfError::at(file, l, c, problem)
    };
    let toks = tokens(&line.text).map_err(|(offset, p)| fail(offset, p))?;
    if toks.len() < 8 {
        return Err(fail(
            line.text.len(),
            Problem::ColumnCount { found: toks.len() },
        ));
    }
    let (name_tok, type_tok) = (&toks[0], &toks[1]);
    let kind = ServiceKind::parse(type_tok.raw).ok_or_else(|| {
        fail(
            type_tok.start,
            Problem::ServiceType {
                found: type_tok.raw.to_string(),
                suggestion: nearest(type_tok.raw, SERVICE_TYPES.iter().copied()),
            },
        )
    })?;
    let endpoint = match kind {
        ServiceKind::Inet => Some(parse_endpoint(name_tok.raw).map_err(|reason| {
            fail(
                name_tok.start,
                Problem::InetService {
                    name: name_tok.raw.to_string(),
                    reason,
                },
            )
        })?),
        _ => {
            check_plain_name(name_tok.raw).map_err(|reason| {
                fail(
                    name_tok.start,
                    Problem::ServiceName {
                        name: name_tok.raw.to_string(),
                        reason,
                    },
                )
            })?;
            None
        }
    };
    let flag = |tok: &Token<'_>, column: &'static str| match tok.raw {
        "y" => Ok(Some(true)),
        "n" => Ok(Some(false)),
        "-" => Ok(None),
        other => Err(fail(
            tok.start,
            Problem::Flag {
                column,
                found: other.to_string(),
            },
        )),
    };
    let private = match (flag(&toks[2], "private")?, kind) {
        (Some(true), ServiceKind::Inet) => return Err(fail(toks[2].start, Problem::PrivateInet)),
        (Some(p), _) => p,
        (None, ServiceKind::Inet) => false,
        (None, _) => true,
    };
    let unpriv = flag(&toks[3], "unpriv")?.unwrap_or(true);
    let chroot = flag(&toks[4], "chroot")?.unwrap_or(false);
    if chroot {
        let (l, c) = line.position(toks[4].start);
        warnings.push(ConfWarning {
            file: file.to_path_buf(),
            line: l,
            column: c,
            message: format!(
                "service `{}`: Postern never chroots (each daemon is confined by its own uid, \
                 landlock and seccomp); chroot `y` is ignored",
                crate::error::quote(name_tok.raw)
            ),
        });
    }
    let wakeup = parse_wakeup(toks[5].raw).ok_or_else(|| {
        fail(
            toks[5].start,
            Problem::Wakeup {
                found: toks[5].raw.to_string(),
                max: MAX_COLUMN_NUMBER,
            },
        )
    })?;
    let maxproc = match toks[6].raw {
        "-" => None,
        text => Some(parse_column_number(text).ok_or_else(|| {
            fail(
                toks[6].start,
                Problem::Maxproc {
                    found: text.to_string(),
                    max: MAX_COLUMN_NUMBER,
                },
            )
        })?),
    };
    let command_tok = &toks[7];
    if command_tok.braced || check_plain_name(command_tok.raw).is_err() {
        return Err(fail(
            command_tok.start,
            Problem::Command(command_tok.raw.to_string()),
        ));
    }

    let mut args = Vec::new();
    let mut overrides = Vec::new();
    let mut places = Vec::new();
    let mut option_args = 0;
    let mut options = true;
    let mut rest = toks[8..].iter();
    while let Some(tok) = rest.next() {
        if options && !tok.braced && tok.raw.starts_with("-o") {
            let (text, text_start, braced) = if tok.raw == "-o" {
                let value = rest
                    .next()
                    .ok_or_else(|| fail(tok.start, Problem::OverrideMissing))?;
                (value.text, value.text_start, value.braced)
            } else {
                (&tok.raw[2..], tok.start + 2, false)
            };
            let (name, value, place) = parse_override(line, file, text, text_start, braced)
                .map_err(|(offset, p)| fail(offset, p))?;
            overrides.push((name, value));
            places.push(place);
            continue;
        }
        if options
            && !tok.braced
            && tok.raw.starts_with('-')
            && tok.raw.len() > 1
            && tok.raw != "--"
        {
            option_args += 1;
        } else {
            options = false;
        }
        args.push(tok.text.to_string());
    }
    Ok(Service {
        name: name_tok.raw.to_string(),
        kind,
        endpoint,
        private,
        unpriv,
        chroot,
        wakeup,
        maxproc,
        command: command_tok.raw.to_string(),
        args,
        overrides,
        line: line.position(0).0,
        option_args,
        places,
    })
}

/// `name=value` (or, braced, `name = value`) starting at byte `start` of the line.
fn parse_override(
    line: &Logical,
    file: &Arc<Path>,
    text: &str,
    start: usize,
    braced: bool,
) -> Result<(String, String, OverridePlace), (usize, Problem)> {
    let Some((raw_name, raw_value)) = text.split_once('=') else {
        return Err((start, Problem::OverrideSyntax(text.to_string())));
    };
    let name = if braced {
        trim_blank(raw_name)
    } else {
        raw_name
    };
    if name.is_empty() {
        return Err((start, Problem::MissingName));
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err((start + i, Problem::BadNameCharacter(c)));
    }
    let Some(p) = param(name) else {
        return Err((
            start,
            Problem::UnknownParameter {
                name: name.to_string(),
                suggestion: suggest_known(name),
            },
        ));
    };
    let value = trim_blank(raw_value);
    let lead = raw_value.len() - raw_value.trim_start_matches(is_blank).len();
    let value_start = start + raw_name.len() + 1 + lead;
    if value.contains('$') {
        expand::parse(value).map_err(|e| (value_start + e.at, e.problem))?;
    } else if !p.kind.accepts(value) {
        return Err((
            value_start,
            Problem::BadValue {
                name: name.to_string(),
                value: value.to_string(),
                expected: p.kind.expected(),
                expanded_from: None,
                suggestion: p.kind.suggestion(value),
            },
        ));
    }
    let place = OverridePlace {
        value: Place {
            file: Arc::clone(file),
            span: line.span.tail(&line.text, value_start),
        },
    };
    Ok((name.to_string(), value.to_string(), place))
}

/// A name that becomes a file name: letters, digits, `.`, `_`, `-`; not `.` or `..` or
/// starting with `.`.
fn check_plain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("a name has 1 to 64 characters");
    }
    if name.starts_with('.') {
        return Err("a name must not start with `.`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("a name has only letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

fn parse_column_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&n| n <= MAX_COLUMN_NUMBER)
}

fn parse_wakeup(text: &str) -> Option<Wakeup> {
    if text == "-" {
        return Some(Wakeup::default());
    }
    let (digits, only_if_used) = match text.strip_suffix('?') {
        Some(d) => (d, true),
        None => (text, false),
    };
    Some(Wakeup {
        seconds: parse_column_number(digits)?,
        only_if_used,
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        return match text.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("port `{text}` is not from 1 to 65535")),
            Ok(port) => Ok(port),
        };
    }
    PORT_NAMES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|&(_, port)| port)
        .ok_or_else(|| {
            let names: Vec<&str> = PORT_NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "port `{}` is neither a number nor one of {}",
                crate::error::quote(text),
                names.join(", ")
            )
        })
}

/// `[host:]port`, with IPv6 addresses in brackets: `[::1]:25`.
fn parse_endpoint(name: &str) -> Result<Endpoint, String> {
    if let Some(inner) = name.strip_prefix('[') {
        let Some((addr, port)) = inner.split_once("]:") else {
            return Err("expected `[address]:port`".to_string());
        };
        let ip = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("`{}` is not an IP address", crate::error::quote(addr)))?;
        return Ok(Endpoint {
            host: Some(Host::Ip(ip)),
            port: parse_port(port)?,
        });
    }
    let Some((host, port)) = name.rsplit_once(':') else {
        return Ok(Endpoint {
            host: None,
            port: parse_port(name)?,
        });
    };
    let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
        Host::Ip(IpAddr::V4(ip))
    } else if host.contains(':') {
        return Err("write an IPv6 address in brackets, as `[::1]:25`".to_string());
    } else if is_hostname(host) {
        Host::Name(host.to_string())
    } else {
        return Err(format!(
            "`{}` is neither an IP address nor a host name",
            crate::error::quote(host)
        ));
    };
    Ok(Endpoint {
        host: Some(host),
        port: parse_port(port)?,
    })
}

/// Whether `text` reads back as one plain token with the same text.
fn plain(text: &str) -> bool {
    let mut level = 0i64;
    for b in text.bytes() {
        match b {
            b' ' | b'\t' => return false,
            b'{' => level += 1,
            b'}' => {
                level -= 1;
                if level < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    !text.is_empty() && level == 0 && !text.starts_with('{')
}

fn braced(text: &str) -> String {
    if text.is_empty() {
        "{}".to_string()
    } else {
        format!("{{ {text} }}")
    }
}

/// The service as a `master.cf` entry that parses back to the same service: the columns
/// aligned as `postconf -M` does, each override on a continuation line, and the
/// non-option arguments on a last one.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |b: bool| if b { "y" } else { "n" };
        let wakeup = format!(
            "{}{}",
            self.wakeup.seconds,
            if self.wakeup.only_if_used { "?" } else { "" }
        );
        let maxproc = self
            .maxproc
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        write!(
            f,
            "{:<10} {:<5} {:<7} {:<7} {:<7} {:<7} {:<7} {}",
            self.name,
            self.kind.as_str(),
            yn(self.private),
            yn(self.unpriv),
            yn(self.chroot),
            wakeup,
            maxproc,
            self.command
        )?;
        let split = self.option_args.min(self.args.len());
        let (options, rest) = self.args.split_at(split);
        for option in options {
            write!(f, " {option}")?;
        }
        for (name, value) in &self.overrides {
            let pair = format!("{name}={value}");
            if plain(&pair) {
                write!(f, "\n  -o {pair}")?;
            } else {
                write!(f, "\n  -o {{ {name} = {value} }}")?;
            }
        }
        for (i, arg) in rest.iter().enumerate() {
            let ends_options = i == 0 && arg != "--";
            let risky = ends_options && (arg.starts_with('-') || arg.starts_with('#'));
            let text = if plain(arg) && !risky {
                arg.clone()
            } else {
                braced(arg)
            };
            let sep = if i == 0 { "\n  " } else { " " };
            write!(f, "{sep}{text}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MasterCf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for service in &self.services {
            writeln!(f, "{service}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::main_cf::Environment;
    use std::time::Duration;

    fn parse(text: &str) -> Result<MasterCf, ConfError> {
        MasterCf::parse(text, Path::new("/etc/postern/master.cf"))
    }

    fn ok(text: &str) -> MasterCf {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> ConfError {
        match parse(text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => e,
        }
    }

    fn main() -> MainCf {
        MainCf::defaults_with_env(Environment::with_hostname("mail.example.test").unwrap())
    }

    #[test]
    fn dash_means_the_default_in_every_column() {
        let cf = ok("smtp unix - - - - - smtp\nsmtp inet - - - - - smtpd\n");
        let s = &cf.services()[0];
        assert_eq!(s.name, "smtp");
        assert_eq!(s.kind, ServiceKind::Unix);
        assert!(s.private);
        assert!(s.unpriv);
        assert!(!s.chroot);
        assert_eq!(
            s.wakeup,
            Wakeup {
                seconds: 0,
                only_if_used: false
            }
        );
        assert_eq!(s.maxproc, None);
        assert_eq!(s.command, "smtp");
        assert!(s.args.is_empty() && s.overrides.is_empty());
        assert_eq!(s.endpoint, None);
        assert_eq!(s.process_limit(&main()).unwrap(), 100);
        let inet = &cf.services()[1];
        assert!(!inet.private, "inet services are never private");
        assert_eq!(inet.line, 2);
        assert!(cf.warnings().is_empty());
    }

    #[test]
    fn explicit_columns() {
        let cf = ok("qmgr unix n n n 300? 0 qmgr\npickup unix y - n 60 1 pickup\n");
        let q = &cf.services()[0];
        assert!(!q.private && !q.unpriv && !q.chroot);
        assert_eq!(
            q.wakeup,
            Wakeup {
                seconds: 300,
                only_if_used: true
            }
        );
        assert_eq!(q.maxproc, Some(0));
        assert_eq!(q.process_limit(&main()).unwrap(), 0);
        let p = &cf.services()[1];
        assert_eq!(p.wakeup.seconds, 60);
        assert_eq!(p.maxproc, Some(1));
    }

    #[test]
    fn chroot_y_is_accepted_with_a_warning() {
        let cf = ok("cleanup unix n - y - 0 cleanup\n");
        assert!(cf.services()[0].chroot);
        let w = &cf.warnings()[0];
        assert_eq!((w.line, w.column), (1, 18));
        assert!(w.to_string().starts_with(
            "/etc/postern/master.cf:1:18: warning: service `cleanup`: Postern never chroots"
        ));
    }

    #[test]
    fn continuation_lines_and_comments() {
        let cf = ok(concat!(
            "# service type private unpriv chroot wakeup maxproc command\n",
            "submission inet n - n - - smtpd\n",
            "  -o smtpd_timeout=60s\n",
            "# between\n",
            "\t-o { smtpd_banner = $myhostname submission ready }\n",
            "cleanup unix n - n - 0 cleanup\n",
        ));
        assert_eq!(cf.services().len(), 2);
        let s = &cf.services()[0];
        assert_eq!(
            s.overrides,
            vec![
                ("smtpd_timeout".to_string(), "60s".to_string()),
                (
                    "smtpd_banner".to_string(),
                    "$myhostname submission ready".to_string()
                ),
            ]
        );
        assert_eq!(
            s.endpoint,
            Some(Endpoint {
                host: None,
                port: 587
            })
        );
        let settings = s.settings(&main()).unwrap();
        assert_eq!(
            settings.get_time("smtpd_timeout").unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            settings.get("smtpd_banner").unwrap(),
            "mail.example.test submission ready"
        );
        assert_eq!(
            main().get_time("smtpd_timeout").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(cf.services()[1].line, 6);
    }

    #[test]
    fn unknown_override_suggests_with_position() {
        let e = err("smtp inet n - n - - smtpd\n  -o mynetwork=127.0.0.1\n");
        assert_eq!(
            e.to_string(),
            "/etc/postern/master.cf:2:6: unknown parameter `mynetwork`; did you mean `mynetworks`?"
        );
        let e = err("smtp inet n - n - - smtpd -o { smtpd_timout = 5s }\n");
        assert_eq!((e.line(), e.column()), (1, 32));
    }

    #[test]
    fn bad_override_values() {
        let e = err("smtp inet n - n - - smtpd -o smtpd_timeout=soon\n");
        assert_eq!((e.line(), e.column()), (1, 44));
        assert!(e
            .to_string()
            .contains("bad value `soon` for `smtpd_timeout`"));
        let e = err("smtp inet n - n - - smtpd -o smtpd_timeout\n");
        assert!(matches!(e.problem(), Problem::OverrideSyntax(_)));
        let e = err("smtp inet n - n - - smtpd -o\n");
        assert!(matches!(e.problem(), Problem::OverrideMissing));
        let e = err("smtp inet n - n - - smtpd -o smtpd_banner=$(x\n");
        assert!(matches!(e.problem(), Problem::Unclosed { .. }));
        // A `$name` is checked against main.cf when the overrides are applied.
        let cf = ok("smtp inet n - n - - smtpd\n  -o smtpd_timeout=$mail_name\n");
        let e = cf.services()[0].settings(&main()).unwrap_err();
        assert_eq!((e.line(), e.column()), (2, 20));
        assert!(
            e.to_string().contains("(expanded from `$mail_name`)"),
            "{e}"
        );
        assert!(cf.check(&main()).is_err());
        let cf = ok("smtp inet n - n - - smtpd -o smtpd_banner=${nothing}\n");
        let e = cf.check(&main()).unwrap_err();
        assert!(
            matches!(e.problem(), Problem::UndefinedReference { .. }),
            "{e}"
        );
        assert_eq!(e.column(), 43);
    }

    #[test]
    fn option_forms_and_getopt_order() {
        let cf = ok(
            "x unix - n n - - pipe -v -osmtpd_timeout=10s flags=R user=nobody argv=/bin/p -o a=b\n",
        );
        let s = &cf.services()[0];
        assert_eq!(
            s.overrides,
            vec![("smtpd_timeout".to_string(), "10s".to_string())]
        );
        assert_eq!(
            s.args,
            vec!["-v", "flags=R", "user=nobody", "argv=/bin/p", "-o", "a=b"]
        );
        let cf = ok("x unix - n n - - pipe -- -o a=b\n");
        assert_eq!(cf.services()[0].args, vec!["--", "-o", "a=b"]);
        assert!(cf.services()[0].overrides.is_empty());
    }

    #[test]
    fn braced_arguments() {
        let cf = ok("x unix - n n - - pipe flags=R { argv=/bin/p -x {y} }\n");
        assert_eq!(cf.services()[0].args, vec!["flags=R", "argv=/bin/p -x {y}"]);
        assert!(matches!(
            err("x unix - n n - - pipe { a\n").problem(),
            Problem::UnclosedBrace
        ));
        assert!(matches!(
            err("x unix - n n - - pipe a}\n").problem(),
            Problem::UnmatchedBrace
        ));
        assert!(matches!(
            err("x unix - n n - - pipe {a}b\n").problem(),
            Problem::TextAfterBrace
        ));
    }

    #[test]
    fn column_errors_point_at_the_column() {
        let e = err("smtp inet n - n - - smtpd\nsmtp bogus n - n - - smtpd\n");
        assert_eq!(
            e.to_string(),
            "/etc/postern/master.cf:2:6: unknown service type `bogus`: expected inet, unix, \
             unix-dgram, fifo or pass"
        );
        let e = err("smtp uinx n - n - - smtpd\n");
        assert!(e.to_string().ends_with("did you mean `unix`?"));
        let e = err("smtp unix x - n - - smtpd\n");
        assert_eq!((e.line(), e.column()), (1, 11));
        assert!(matches!(
            e.problem(),
            Problem::Flag {
                column: "private",
                ..
            }
        ));
        let e = err("smtp inet y - n - - smtpd\n");
        assert!(matches!(e.problem(), Problem::PrivateInet));
        let e = err("smtp unix - - n soon - smtp\n");
        assert!(matches!(e.problem(), Problem::Wakeup { .. }));
        let e = err("smtp unix - - n - -1 smtp\n");
        assert!(matches!(e.problem(), Problem::Maxproc { .. }));
        let e = err("smtp unix - - n - - /bin/sh\n");
        assert!(matches!(e.problem(), Problem::Command(_)));
        let e = err("smtp unix - - n - -\n");
        assert!(matches!(e.problem(), Problem::ColumnCount { found: 7 }));
        let e = err("../x unix - - n - - smtp\n");
        assert!(matches!(e.problem(), Problem::ServiceName { .. }));
    }

    #[test]
    fn inet_names() {
        let ep = |text: &str| {
            ok(&format!("{text} inet n - n - - smtpd\n")).services()[0]
                .endpoint
                .clone()
                .unwrap()
        };
        assert_eq!(
            ep("25"),
            Endpoint {
                host: None,
                port: 25
            }
        );
        assert_eq!(
            ep("smtp"),
            Endpoint {
                host: None,
                port: 25
            }
        );
        assert_eq!(
            ep("127.0.0.1:2525"),
            Endpoint {
                host: Some(Host::Ip("127.0.0.1".parse().unwrap())),
                port: 2525
            }
        );
        assert_eq!(
            ep("[::1]:submission"),
            Endpoint {
                host: Some(Host::Ip("::1".parse().unwrap())),
                port: 587
            }
        );
        assert_eq!(
            ep("mx.example.test:smtps"),
            Endpoint {
                host: Some(Host::Name("mx.example.test".into())),
                port: 465
            }
        );
        for bad in [
            "0",
            "65536",
            "smtpx",
            "::1:25",
            "[::1]",
            "[nope]:25",
            "bad_host:25",
            ":25",
            "1.2.3.4:",
        ] {
            let e = err(&format!("{bad} inet n - n - - smtpd\n"));
            assert!(
                matches!(e.problem(), Problem::InetService { .. }),
                "{bad}: {e}"
            );
            assert_eq!(e.column(), 1);
        }
    }

    #[test]
    fn duplicate_service_is_an_error() {
        let e =
            err("smtp inet n - n - 2 smtpd\nsmtp unix - - n - - smtp\nsmtp inet n - n - 2 smtpd\n");
        assert_eq!(
            e.to_string(),
            "/etc/postern/master.cf:3:1: service `smtp` of type inet is already defined on line 1"
        );
    }

    #[test]
    fn a_realistic_postfix_style_master_cf() {
        let text = r#"
#
# Postern master process configuration.
#
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
smtp      inet  n       -       y       -       -       smtpd
#smtp      inet  n       -       y       -       1       postscreen
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postern/submission
  -o smtpd_tls_security_level=encrypt
  -o { smtpd_banner = $myhostname submission service }
127.0.0.1:10025 inet n  -       n       -       10      smtpd
  -o mynetworks=127.0.0.0/8
  -o smtpd_recipient_limit=5000
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=${multi_name?$multi_name/}postern/$service_name
virtual   unix  -       n       n       -       -       virtual
local     unix  -       n       n       -       -       local
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
"#;
        let cf = ok(text);
        assert_eq!(cf.services().len(), 16);
        let names: Vec<_> = cf
            .services()
            .iter()
            .map(|s| format!("{}/{}", s.name, s.kind))
            .collect();
        assert_eq!(names[0], "smtp/inet");
        assert_eq!(names[9], "smtp/unix");
        let sub = cf.service("submission", ServiceKind::Inet).unwrap();
        assert_eq!(sub.overrides.len(), 3);
        let settings = sub.settings(&main()).unwrap();
        assert_eq!(settings.get("smtpd_tls_security_level").unwrap(), "encrypt");
        assert_eq!(settings.get("syslog_name").unwrap(), "postern/submission");
        assert_eq!(
            settings.get("smtpd_banner").unwrap(),
            "mail.example.test submission service"
        );
        let internal = cf.service("127.0.0.1:10025", ServiceKind::Inet).unwrap();
        assert_eq!(internal.maxproc, Some(10));
        assert_eq!(
            internal
                .settings(&main())
                .unwrap()
                .get_int("smtpd_recipient_limit")
                .unwrap(),
            5000
        );
        let qmgr = cf.service("qmgr", ServiceKind::Unix).unwrap();
        assert_eq!((qmgr.wakeup.seconds, qmgr.maxproc), (300, Some(1)));
        let pipe = cf.service("maildrop", ServiceKind::Unix).unwrap();
        assert_eq!(
            pipe.args,
            vec![
                "flags=DRXhu",
                "user=vmail",
                "argv=/usr/bin/maildrop",
                "-d",
                "${recipient}"
            ]
        );
        // One chroot warning per `y`.
        assert_eq!(cf.warnings().len(), 11);
        // `relay` refers to names main.cf does not define: found when checked against it.
        let e = cf.check(&main()).unwrap_err();
        assert!(e.to_string().contains("`$multi_name`"), "{e}");
        assert_eq!(e.line(), 26);
        // The rendering parses back to the same services.
        let again = ok(&cf.to_string());
        assert!(again.same_as(&cf), "{cf}");
    }

    #[test]
    fn rendering_round_trips_tricky_arguments() {
        let cf = ok(concat!(
            "x unix - n n 5? 7 pipe -v { -o } -o a=b { } { #x } {-v}\n",
            "y unix - n n - - pipe -o { smtpd_banner = a  b } { -v }\n",
            "z unix - n n - - pipe -o smtpd_banner= --\n",
        ));
        let again = ok(&cf.to_string());
        assert!(again.same_as(&cf), "{cf}");
        assert_eq!(
            cf.services()[0].args,
            vec!["-v", "-o", "-o", "a=b", "", "#x", "-v"]
        );
        assert_eq!(cf.services()[1].overrides[0].1, "a  b");
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("conf-master-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.cf");
        std::fs::write(&path, "smtp inet n - n - - smtpd\n").unwrap();
        let cf = MasterCf::load(&path).unwrap();
        assert_eq!(cf.file(), path.as_path());
        assert_eq!(cf.services().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
