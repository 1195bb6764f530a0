//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test: the
//! lookup-table, aliases and passwd/group parsers.
//!
//! Trusts: nothing; the input is arbitrary bytes. Text that is not UTF-8 is skipped (the
//! callers refuse it before parsing). Each entry point must return on every input, and for
//! whatever parses it checks what the daemons rely on, panicking (a finding) if it fails:
//! - every entry is found again by its own name (lookups fold case the same way parsing
//!   does);
//! - a canonical rendering of what parsed (one entry per line, values quoted where the
//!   format quotes) parses again to the same entries;
//! - limits hold (entry, target and name counts; group lists never exceed the limit
//!   asked for, and a smaller limit gives a prefix of a larger one).

use std::path::Path;

use protocol::address::Mailbox;

use crate::aliases::{self, Aliases, MAX_ENTRIES, MAX_TARGETS};
use crate::passwd::{self, Account, Passwd, MAX_ACCOUNTS};
use crate::table::{is_table_reference, Maps, Table, TableRef};

/// The renderings below grow a line by at most this factor (quotes and backslashes); the
/// round trip is checked only for inputs whose rendering stays within the line limits.
const RENDER_GROWTH: usize = 4;

/// Parses `data` as a `postmap(5)` text table, and its first line as a table reference.
pub fn table(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = text.lines().next().unwrap_or("");
    if let Ok(r) = TableRef::parse(first) {
        assert!(r.path.is_absolute(), "{first:?} names a relative path");
        assert!(
            is_table_reference(first),
            "{first:?} parses but is no reference"
        );
    }
    let name = "/fuzz/table";
    let Ok(t) = Table::parse(name, text) else {
        return;
    };
    let mut rendered = String::new();
    for (key, value) in t.iter() {
        assert!(!key.is_empty() && !value.is_empty(), "empty key or value");
        assert!(
            !key.contains(char::is_whitespace) && !key.starts_with('#'),
            "key {key:?} cannot be written back"
        );
        assert_eq!(value, value.trim(), "value {value:?} is not trimmed");
        assert!(!value.contains('\n'), "value {value:?} spans lines");
        assert_eq!(
            t.get(key),
            Some(value),
            "key {key:?} is not found by itself"
        );
        rendered.push_str(key);
        rendered.push(' ');
        rendered.push_str(value);
        rendered.push('\n');
    }
    if text.len() <= crate::table::MAX_LINE_LEN / RENDER_GROWTH {
        match Table::parse(name, &rendered) {
            Ok(again) => assert_eq!(again, t, "rendering changed the table:\n{rendered}"),
            Err(e) => panic!("the rendering of a valid table does not parse: {e}\n{rendered}"),
        }
    }
    for domain in t.domains() {
        assert!(!domain.is_empty(), "an empty domain");
    }
    // A key that is an address as virtual(8) spells it is found by an exact lookup first,
    // whatever the extension delimiters.
    let maps = Maps::from_tables(vec![t.clone()]);
    for (key, value) in t.iter() {
        let Ok(mailbox) = Mailbox::parse(key, true) else {
            continue;
        };
        if format!("{}@{}", mailbox.local_part(), mailbox.domain()) != key {
            continue;
        }
        for delimiters in ["", "+", "+-"] {
            assert_eq!(
                maps.find_address(&mailbox, delimiters),
                Some(value),
                "{key:?} with delimiters {delimiters:?}"
            );
        }
    }
}

/// `s` in double quotes, with the backslash escapes the aliases format removes again.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Parses `data` as an aliases(5) file and as an `:include:` file, and its first line as
/// an `alias_maps` element.
pub fn aliases(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = text.lines().next().unwrap_or("");
    if let Ok(path) = aliases::alias_map_path(first) {
        assert!(path.is_absolute(), "{first:?} names a relative path");
    }
    let file = Path::new("/fuzz/aliases");
    let small = text.len() <= aliases::MAX_LINE / RENDER_GROWTH;
    if let Ok(targets) = aliases::parse_include(text, file) {
        assert!(targets.len() <= MAX_TARGETS, "too many include targets");
        let rendered: String = targets
            .iter()
            .map(|t| quote(&t.to_string()) + "\n")
            .collect();
        if small {
            match aliases::parse_include(&rendered, file) {
                Ok(again) => assert_eq!(again, targets, "rendering changed:\n{rendered}"),
                Err(e) => {
                    panic!("the rendering of an include file does not parse: {e}\n{rendered}")
                }
            }
        }
    }
    let Ok(parsed) = Aliases::parse(text, file) else {
        return;
    };
    assert!(parsed.len() <= MAX_ENTRIES, "too many entries");
    assert_eq!(parsed.len(), parsed.iter().count(), "entries are lost");
    let mut rendered = String::new();
    for alias in parsed.iter() {
        assert!(!alias.name.is_empty(), "an empty name");
        assert_eq!(alias.name, alias.name.to_lowercase(), "a name not folded");
        assert!(
            !alias.targets.is_empty() && alias.targets.len() <= MAX_TARGETS,
            "{} targets",
            alias.targets.len()
        );
        assert_eq!(
            parsed.get(&alias.name),
            Some(alias),
            "{:?} is not found by its name",
            alias.name
        );
        let values: Vec<String> = alias
            .targets
            .iter()
            .map(|t| quote(&t.to_string()))
            .collect();
        rendered.push_str(&format!("{}: {}\n", quote(&alias.name), values.join(", ")));
    }
    if !small {
        return;
    }
    let again = match Aliases::parse(&rendered, file) {
        Ok(again) => again,
        Err(e) => panic!("the rendering of a valid aliases file does not parse: {e}\n{rendered}"),
    };
    assert!(again.warnings().is_empty(), "the rendering has duplicates");
    let entries = |a: &Aliases| -> Vec<(String, Vec<aliases::Target>)> {
        a.iter()
            .map(|e| (e.name.clone(), e.targets.clone()))
            .collect()
    };
    assert_eq!(
        entries(&again),
        entries(&parsed),
        "rendering changed the entries:\n{rendered}"
    );
    assert_eq!(again.missing(), parsed.missing());
}

/// Parses `data` as a passwd(5) file, and as a group(5) file for each account it names.
pub fn passwd(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let db = Passwd::parse(text);
    assert!(db.len() <= MAX_ACCOUNTS, "too many accounts");
    assert!(
        db.len() + db.skipped() <= text.lines().count(),
        "more entries than lines"
    );
    let mut accounts: Vec<&Account> = db.accounts().collect();
    accounts.sort_by(|a, b| a.name.cmp(&b.name));
    // CRLF endings: a field that ends in a carriage return keeps it through `lines`.
    let mut rendered = String::new();
    for a in &accounts {
        assert_eq!(
            db.get(&a.name),
            Some(*a),
            "{:?} is not found by its name",
            a.name
        );
        rendered.push_str(&format!(
            "{}::{}:{}::{}:{}\r\n",
            a.name, a.uid, a.gid, a.home, a.shell
        ));
    }
    let again = Passwd::parse(&rendered);
    assert_eq!(
        again.skipped(),
        0,
        "the rendering has bad lines:\n{rendered}"
    );
    assert_eq!(
        again.len(),
        db.len(),
        "the rendering lost accounts:\n{rendered}"
    );
    for a in &accounts {
        assert_eq!(
            again.get(&a.name),
            Some(*a),
            "rendering changed {:?}",
            a.name
        );
    }
    let mut users: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).take(8).collect();
    users.push("root");
    for user in users {
        let all = passwd::groups_of(text, user, 64);
        assert!(all.len() <= 64, "more groups than the limit");
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "a group twice for {user:?}");
        for limit in 0..all.len().min(4) {
            assert_eq!(
                passwd::groups_of(text, user, limit),
                all[..limit],
                "a limit of {limit} is not a prefix"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_take_valid_and_invalid_files() {
        let inputs: [&[u8]; 10] = [
            b"hash:/etc/postern/vmailbox\nuser@example.test  example.test/user/\n@example.test catch/\n",
            b"# c\nlist@x.test a,\n  b\n\nKey VALUE\r\n",
            b"  orphan continuation\n",
            b"postmaster: root\nStaff: alice, \\bob, \"|/bin/filter -a, -b\", /var/log/copy\n",
            b"list: :include:/etc/mail/list\n\"odd: name\": <alice@example.org>\n",
            b"a: \"unbalanced\n",
            b"root:x:0:0:root:/root:/bin/sh\nalice::1000:100::/home/alice:/bin/sh\r\n",
            b"mail:x:8:alice,root\nstaff:x:50:root, alice\nbad:x:z:root\n",
            b"\xff\xfe",
            b"",
        ];
        for data in inputs {
            table(data);
            aliases(data);
            passwd(data);
        }
    }

    #[test]
    fn the_round_trip_checks_can_fail() {
        // A rendering that loses a value must trip the check.
        let broken = std::panic::catch_unwind(|| {
            let t = Table::parse("t", "k v\n").unwrap();
            let again = Table::parse("t", "k w\n").unwrap();
            assert_eq!(again, t);
        });
        assert!(broken.is_err());
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    /// Fragments the three grammars treat specially.
    const TOKENS: [&str; 20] = [
        "a",
        "B",
        ":",
        ",",
        "\"",
        "\\",
        "|",
        "/",
        "#",
        " ",
        "\t",
        "\n",
        "\r\n",
        "@",
        "<",
        ">",
        ":include:",
        "x.test",
        "0",
        "Ü",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn token_soup_never_panics(
            tokens in proptest::collection::vec(proptest::sample::select(&TOKENS[..]), 0..24)
        ) {
            let text = tokens.concat();
            table(text.as_bytes());
            aliases(text.as_bytes());
            passwd(text.as_bytes());
        }
    }
}
