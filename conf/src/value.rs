//! Parameter kinds and the parsing of expanded values into typed values.
//!
//! Trusts: nothing in the value text. Every number is checked for overflow and range,
//! every name for its character set, so a value that passes `Kind::check` converts to
//! its typed form without surprises.

use std::time::Duration;

/// The largest integer or time (in seconds) a parameter may hold: Postfix keeps these in
/// a C `int`, and a value beyond it is a mistake rather than a wish.
pub const MAX_INT: i64 = i32::MAX as i64;

/// The largest size in bytes: Postfix keeps sizes in an `off_t`.
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// The longest user or group name accepted (the Linux `useradd` limit).
pub const MAX_ACCOUNT_NAME: usize = 32;

/// The unit a time value without a unit letter counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl TimeUnit {
    fn from_letter(c: char) -> Option<Self> {
        Some(match c {
            's' => Self::Seconds,
            'm' => Self::Minutes,
            'h' => Self::Hours,
            'd' => Self::Days,
            'w' => Self::Weeks,
            _ => return None,
        })
    }

    /// Seconds in one unit.
    pub fn seconds(self) -> u64 {
        match self {
            Self::Seconds => 1,
            Self::Minutes => 60,
            Self::Hours => 3600,
            Self::Days => 86_400,
            Self::Weeks => 604_800,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Self::Seconds => 's',
            Self::Minutes => 'm',
            Self::Hours => 'h',
            Self::Days => 'd',
            Self::Weeks => 'w',
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Seconds => "seconds",
            Self::Minutes => "minutes",
            Self::Hours => "hours",
            Self::Days => "days",
            Self::Weeks => "weeks",
        }
    }
}

/// What a parameter's expanded value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    String,
    /// `yes` or `no` (any case), as Postfix.
    Bool,
    /// A decimal integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A whole number with an optional unit letter `s`, `m`, `h`, `d` or `w` (Postfix
    /// allows one unit, lower case); without a letter it counts in `unit`. At least
    /// `min_seconds`, at most `MAX_INT` seconds.
    Time { unit: TimeUnit, min_seconds: u64 },
    /// A byte count, plain decimal without unit suffixes (as Postfix).
    Size,
    /// Items separated by commas and/or white space.
    List,
    /// One of the given words (exactly; the empty string only if listed).
    Enum(&'static [&'static str]),
    /// A list whose every item is one of the given words.
    Flags(&'static [&'static str]),
    /// Empty, or an absolute path.
    Path,
    /// A domain name: dot-separated labels of letters, digits and inner hyphens.
    Hostname,
    /// A daemon identity: a user name, or a numeric `uid` or `uid:gid` that needs no
    /// passwd entry. Never root (name `root`, uid 0 or gid 0).
    User,
    /// A group name or a numeric gid. Never root.
    Group,
}

impl Kind {
    /// A short noun for messages: "`x` is a time parameter, not an integer".
    pub fn noun(self) -> &'static str {
        match self {
            Self::String => "a text",
            Self::Bool => "a yes/no",
            Self::Int { .. } => "an integer",
            Self::Time { .. } => "a time",
            Self::Size => "a size",
            Self::List => "a list",
            Self::Enum(_) => "an enumeration",
            Self::Flags(_) => "a flag list",
            Self::Path => "a path",
            Self::Hostname => "a domain name",
            Self::User => "a user",
            Self::Group => "a group",
        }
    }

    /// What a valid value looks like, for error messages.
    pub fn expected(self) -> String {
        match self {
            Self::String | Self::List => "text".to_string(),
            Self::Bool => "`yes` or `no`".to_string(),
            Self::Int { min, max } => format!("a whole number from {min} to {max}"),
            Self::Time { unit, min_seconds } => format!(
                "a time from {min_seconds}s to {MAX_INT}s: a whole number with an optional unit \
                 s (seconds), m (minutes), h (hours), d (days) or w (weeks); without a unit it \
                 counts {}",
                unit.plural()
            ),
            Self::Size => {
                format!("a size in bytes from 0 to {MAX_SIZE}, a plain whole number without units")
            }
            Self::Enum(words) => format!("one of {}", word_list(words)),
            Self::Flags(words) => format!("a list of {}", word_list(words)),
            Self::Path => "an absolute path (starting with `/`) or nothing".to_string(),
            Self::Hostname => {
                "a domain name (dot-separated labels of letters, digits and `-`)".to_string()
            }
            Self::User => format!(
                "a user name (up to {MAX_ACCOUNT_NAME} letters, digits, `_`, `.`, `-`) or a \
                 numeric uid or uid:gid; not root"
            ),
            Self::Group => format!(
                "a group name (up to {MAX_ACCOUNT_NAME} letters, digits, `_`, `.`, `-`) or a \
                 numeric gid; not root"
            ),
        }
    }

    /// Whether `value` (already expanded) is valid for this kind.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            Self::String | Self::List => true,
            Self::Bool => parse_bool(value).is_some(),
            Self::Int { min, max } => parse_int(value, min, max).is_some(),
            Self::Time { unit, min_seconds } => parse_time(value, unit, min_seconds).is_some(),
            Self::Size => parse_size(value).is_some(),
            Self::Enum(words) => words.contains(&value),
            Self::Flags(words) => split_list(value).iter().all(|w| words.contains(w)),
            Self::Path => value.is_empty() || value.starts_with('/'),
            Self::Hostname => is_hostname(value),
            Self::User => parse_user(value).is_some(),
            Self::Group => parse_group(value).is_some(),
        }
    }

    /// For an enumeration or flag list, the known word nearest to a bad `value`.
    pub(crate) fn suggestion(self, value: &str) -> Option<&'static str> {
        match self {
            Self::Enum(words) => crate::suggest::nearest(value, words.iter().copied()),
            Self::Flags(words) => split_list(value)
                .into_iter()
                .find(|w| !words.contains(w))
                .and_then(|bad| crate::suggest::nearest(bad, words.iter().copied())),
            _ => None,
        }
    }
}

fn word_list(words: &[&str]) -> String {
    let shown: Vec<String> = words
        .iter()
        .map(|w| {
            if w.is_empty() {
                "nothing".to_string()
            } else {
                format!("`{w}`")
            }
        })
        .collect();
    shown.join(", ")
}

/// A decimal number of ASCII digits only (no sign, no blanks), checked for overflow.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if s.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

pub fn parse_int(s: &str, min: i64, max: i64) -> Option<i64> {
    let n = i64::try_from(parse_digits(s)?).ok()?;
    (min..=max).contains(&n).then_some(n)
}

pub fn parse_time(s: &str, unit: TimeUnit, min_seconds: u64) -> Option<Duration> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], TimeUnit::from_letter(c)?),
        _ => (s, unit),
    };
    let seconds = parse_digits(digits)?.checked_mul(unit.seconds())?;
    let max = u64::try_from(MAX_INT).ok()?;
    (min_seconds..=max)
        .contains(&seconds)
        .then_some(Duration::from_secs(seconds))
}

pub fn parse_size(s: &str) -> Option<u64> {
    parse_digits(s).filter(|&n| n <= MAX_SIZE)
}

/// Splits a Postfix list: items separated by commas and/or white space.
pub fn split_list(s: &str) -> Vec<&str> {
    s.split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|item| !item.is_empty())
        .collect()
}

/// DNS host name syntax (RFC 1123 labels), at most 253 octets, no trailing dot.
pub fn is_hostname(s: &str) -> bool {
    const MAX_NAME: usize = 253;
    const MAX_LABEL: usize = 63;
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Who a daemon runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A user name, looked up in the passwd database when the daemon starts.
    Name(String),
    /// A numeric identity that needs no passwd entry; without a gid, the group is the
    /// same number as the uid.
    Ids { uid: u32, gid: Option<u32> },
}

/// A group, for `setgid_group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    Name(String),
    Gid(u32),
}

/// A uid or gid: never 0 (root), never `u32::MAX` (which the set*id calls read as
/// "leave unchanged").
fn parse_id(s: &str) -> Option<u32> {
    let n = u32::try_from(parse_digits(s)?).ok()?;
    (n != 0 && n != u32::MAX).then_some(n)
}

fn is_account_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && s.len() <= MAX_ACCOUNT_NAME
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s != "root"
}

pub fn parse_user(s: &str) -> Option<Account> {
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        let (uid, gid) = match s.split_once(':') {
            Some((u, g)) => (parse_id(u)?, Some(parse_id(g)?)),
            None => (parse_id(s)?, None),
        };
        Some(Account::Ids { uid, gid })
    } else {
        is_account_name(s).then(|| Account::Name(s.to_string()))
    }
}

pub fn parse_group(s: &str) -> Option<Group> {
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        parse_id(s).map(Group::Gid)
    } else {
        is_account_name(s).then(|| Group::Name(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_are_yes_or_no_in_any_case() {
        assert_eq!(parse_bool("yes"), Some(true));
        assert_eq!(parse_bool("NO"), Some(false));
        for bad in ["true", "1", "y", "", " yes"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn integers_are_plain_digits_in_range() {
        assert_eq!(parse_int("20", 1, MAX_INT), Some(20));
        assert_eq!(parse_int("007", 0, MAX_INT), Some(7));
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "0x10",
            "2147483648",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_int(bad, 0, MAX_INT), None, "{bad:?}");
        }
        assert_eq!(parse_int("0", 1, 10), None);
    }

    #[test]
    fn times_use_postfix_units_and_a_default_unit() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(parse_time("300s", TimeUnit::Seconds, 0), s(300));
        assert_eq!(parse_time("300", TimeUnit::Seconds, 0), s(300));
        assert_eq!(parse_time("5m", TimeUnit::Seconds, 0), s(300));
        assert_eq!(parse_time("2h", TimeUnit::Seconds, 0), s(7200));
        assert_eq!(parse_time("5d", TimeUnit::Seconds, 0), s(432_000));
        assert_eq!(parse_time("5", TimeUnit::Days, 0), s(432_000));
        assert_eq!(parse_time("1w", TimeUnit::Seconds, 0), s(604_800));
        assert_eq!(parse_time("0h", TimeUnit::Hours, 0), s(0));
        for bad in ["", "s", "5x", "5S", "1h30m", "-5s", "5 s", "4000w", "1.5h"] {
            assert_eq!(parse_time(bad, TimeUnit::Seconds, 0), None, "{bad:?}");
        }
        assert_eq!(parse_time("0s", TimeUnit::Seconds, 1), None);
    }

    #[test]
    fn sizes_are_plain_byte_counts() {
        assert_eq!(parse_size("10240000"), Some(10_240_000));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["10M", "10k", "-1", "", "9223372036854775808"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lists_split_on_commas_and_white_space() {
        assert_eq!(
            split_list(" a, b  c,,d\te ,"),
            vec!["a", "b", "c", "d", "e"]
        );
        assert!(split_list(" , ").is_empty());
    }

    #[test]
    fn enumerations_and_flags() {
        let e = Kind::Enum(&["normalize", "reject", "no", "yes"]);
        assert!(e.accepts("reject"));
        assert!(!e.accepts("Reject"));
        assert!(!e.accepts(""));
        assert_eq!(e.suggestion("rejet"), Some("reject"));
        let f = Kind::Flags(&["alias", "forward", "include"]);
        assert!(f.accepts("alias, forward"));
        assert!(f.accepts(""));
        assert!(!f.accepts("alias, fwd, include"));
        assert_eq!(f.suggestion("alias forwrd"), Some("forward"));
    }

    #[test]
    fn host_names() {
        for good in ["mail.example.test", "localhost", "a-b.c9", "x"] {
            assert!(is_hostname(good), "{good}");
        }
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "a.b.",
            "é.test",
            &"a".repeat(64),
        ] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn users_are_names_or_numbers_never_root() {
        assert_eq!(
            parse_user("postern-smtpd"),
            Some(Account::Name("postern-smtpd".into()))
        );
        assert_eq!(
            parse_user("60001"),
            Some(Account::Ids {
                uid: 60001,
                gid: None
            })
        );
        assert_eq!(
            parse_user("60001:60010"),
            Some(Account::Ids {
                uid: 60001,
                gid: Some(60010)
            })
        );
        for bad in [
            "root",
            "0",
            "0:5",
            "5:0",
            "4294967295",
            "1:",
            ":1",
            "1:2:3",
            "-x",
            "a b",
            "",
            "4294967296",
        ] {
            assert_eq!(parse_user(bad), None, "{bad:?}");
        }
        assert_eq!(parse_user(&"u".repeat(33)), None);
        assert_eq!(
            parse_group("postern-drop"),
            Some(Group::Name("postern-drop".into()))
        );
        assert_eq!(parse_group("120"), Some(Group::Gid(120)));
        assert_eq!(parse_group("0"), None);
        assert_eq!(parse_group("root"), None);
    }

    #[test]
    fn paths_are_absolute_or_empty() {
        assert!(Kind::Path.accepts(""));
        assert!(Kind::Path.accepts("/var/spool/postern"));
        assert!(!Kind::Path.accepts("var/spool"));
    }
}
