//! `postern map check TABLE...` and `postern newaliases`: read lookup tables the way the
//! daemons will and report every problem with its file and line, before a daemon refuses
//! to start or a recipient is deferred.
//!
//! Postern has no `.db` files (a `hash:` table is read from its text source, see
//! `policy::table`), so where Postfix's `postmap`/`postalias`/`newaliases` build a database,
//! these commands only check. Decisions:
//! - A table named in `alias_maps` or `alias_database` (or any table with `--aliases`) is an
//!   aliases(5) file, parsed as the local agent parses it (`policy::aliases`), together with
//!   each `:include:` file it names; other tables are postmap(5) text (`policy::table`).
//! - Errors (a table the daemons would refuse) make the exit status 1; duplicate alias
//!   names and a missing `postmaster` or `MAILER-DAEMON` alias are warnings, as postalias
//!   reports them.
//!
//! Trusts: nothing in the files; the parsers are bounded.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use conf::MainCf;
use policy::aliases::{self, Aliases, Target};
use policy::TableRef;

/// The largest alias or include file read, as the local agent's bound.
const MAX_FILE: u64 = 16 << 20;

/// What a check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// One line per table that is fine: its file and size.
    pub checked: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} octets", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

/// The tables `main.cf` says are alias files.
fn alias_elements(main: &MainCf) -> Vec<String> {
    ["alias_maps", "alias_database"]
        .into_iter()
        .filter_map(|name| main.get_list(name).ok())
        .flatten()
        .collect()
}

/// Checks each of `tables`.
pub fn check(main: &MainCf, tables: &[String], all_aliases: bool) -> Findings {
    let alias_tables = alias_elements(main);
    let mut f = Findings::default();
    for element in tables {
        if all_aliases || alias_tables.contains(element) {
            check_aliases(element, &mut f);
        } else {
            match TableRef::parse(element).and_then(|r| r.load(&mut |p: &Path| File::open(p))) {
                Ok(table) => f
                    .checked
                    .push(format!("{element}: {} entries", table.len())),
                Err(e) => f.errors.push(e.to_string()),
            }
        }
    }
    f
}

/// Checks every table of `alias_maps`.
pub fn newaliases(main: &MainCf) -> Result<Findings, conf::ConfError> {
    let tables = main.get_list("alias_maps")?;
    let mut f = check(main, &tables, true);
    if tables.is_empty() {
        f.warnings
            .push("alias_maps is empty: the local agent uses no aliases".to_owned());
    }
    Ok(f)
}

fn check_aliases(element: &str, f: &mut Findings) {
    let path = match aliases::alias_map_path(element) {
        Ok(p) => p,
        Err(e) => return f.errors.push(e),
    };
    let table = match read_bounded(&path)
        .and_then(|text| Aliases::parse(&text, &path).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => return f.errors.push(e),
    };
    f.warnings.extend(table.warnings().iter().cloned());
    for name in table.missing() {
        f.warnings
            .push(format!("{}: no alias for {name}", path.display()));
    }
    // Include files, each once, following nested includes.
    let mut seen = BTreeSet::new();
    let mut pending: Vec<PathBuf> = includes(table.iter().flat_map(|a| a.targets.iter()));
    while let Some(include) = pending.pop() {
        if !seen.insert(include.clone()) {
            continue;
        }
        match read_bounded(&include)
            .and_then(|text| aliases::parse_include(&text, &include).map_err(|e| e.to_string()))
        {
            Ok(targets) => pending.extend(includes(targets.iter())),
            Err(e) => f.errors.push(format!(":include: {e}")),
        }
    }
    f.checked.push(format!(
        "{element}: {} aliases{}",
        table.len(),
        match seen.len() {
            0 => String::new(),
            n => format!(", {n} include files"),
        }
    ));
}

fn includes<'a>(targets: impl Iterator<Item = &'a Target>) -> Vec<PathBuf> {
    targets
        .filter_map(|t| match t {
            Target::Include(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("postern-map-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn write(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn main_cf(text: &str) -> MainCf {
        let env = conf::Environment::with_hostname("mx.example.test").unwrap();
        MainCf::parse_with_env(text, Path::new("main.cf"), env).unwrap()
    }

    #[test]
    fn alias_files_are_checked_with_their_includes_and_named_errors() {
        let d = Dir::new("aliases");
        let list = d.write("list", "a@example.org\n\"broken\n");
        let aliases = d.write(
            "aliases",
            &format!("postmaster: root\nstaff: :include:{list}\nstaff: dup\n"),
        );
        let main = main_cf(&format!("alias_maps = hash:{aliases}\n"));
        let f = newaliases(&main).unwrap();
        assert_eq!(f.errors.len(), 1, "{f:?}");
        assert!(f.errors[0].contains(&format!("{list}, line 2")), "{f:?}");
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("line 3") && w.contains("duplicate")),
            "{f:?}"
        );
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("no alias for mailer-daemon")),
            "{f:?}"
        );
        assert_eq!(
            f.checked,
            [format!("hash:{aliases}: 2 aliases, 1 include files")]
        );

        // The same file named on the command line is recognised as an alias file.
        let f = check(&main, &[format!("hash:{aliases}")], false);
        assert_eq!(f.errors.len(), 1, "{f:?}");
    }

    #[test]
    fn postmap_tables_report_file_and_line() {
        let d = Dir::new("postmap");
        let good = d.write("good", "user@example.test example.test/user/\n");
        let bad = d.write("bad", "a x\na y\n");
        let main = main_cf("alias_maps =\n");
        let f = check(
            &main,
            &[
                format!("texthash:{good}"),
                format!("hash:{bad}"),
                "regexp:/x".to_owned(),
            ],
            false,
        );
        assert_eq!(f.checked, [format!("texthash:{good}: 1 entries")]);
        assert_eq!(f.errors.len(), 2, "{f:?}");
        assert!(f.errors[0].contains(&format!("{bad}, line 2")), "{f:?}");
        assert!(f.errors[1].contains("regexp"), "{f:?}");
        // An empty alias_maps is worth a warning, not an error.
        let f = newaliases(&main).unwrap();
        assert!(f.errors.is_empty() && f.warnings.len() == 1, "{f:?}");
    }
}
