//! `postern conf [-n] [NAME...]`: the effective main.cf as `postconf` prints it — every known
//! parameter with its expanded value, sorted; with `-n` only those set in main.cf; with names only
//! those, in the order given. Names set in main.cf but unknown to Postern (user-defined, used only
//! to be expanded elsewhere) are printed by `-n` and by name, as `postconf` does.
//!
//! Trusts the administrator's main.cf as parsed by `conf`; a name that `conf` does not know is a
//! warning on stderr and makes the exit status 1, as with `postconf`.

use conf::MainCf;

/// What to print on stdout and stderr, and the exit status.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

pub fn render(main: &MainCf, explicit_only: bool, names: &[String]) -> Output {
    let mut out = Output::default();
    let listed: Vec<String> = if names.is_empty() {
        if explicit_only {
            main.iter_explicit()
                .map(|(name, _)| name.to_string())
                .collect()
        } else {
            main.iter_all().map(|(name, _)| name.to_string()).collect()
        }
    } else {
        names.to_vec()
    };
    for name in &listed {
        if !names.is_empty() {
            if conf::param(name).is_none() && !main.is_explicit(name) {
                out.stderr
                    .push_str(&format!("postern: warning: {name}: unknown parameter\n"));
                out.status = 1;
                continue;
            }
            if explicit_only && !main.is_explicit(name) {
                continue;
            }
        }
        match main.format_line(name) {
            Ok(line) => {
                out.stdout.push_str(&line);
                out.stdout.push('\n');
            }
            Err(e) => {
                out.stderr
                    .push_str(&format!("postern: warning: {name}: {e}\n"));
                out.status = 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn main_cf(text: &str) -> MainCf {
        MainCf::parse(text, Path::new("/i/main.cf")).unwrap()
    }

    #[test]
    fn explicit_only_prints_what_the_file_sets_sorted_and_expanded() {
        let m = main_cf("myhostname = mx.example.org\nmyorigin = $myhostname\nalias_maps =\n");
        let out = render(&m, true, &[]);
        assert_eq!(
            out.stdout,
            "alias_maps =\nmyhostname = mx.example.org\nmyorigin = mx.example.org\n"
        );
        assert_eq!(out.status, 0);
        assert!(out.stderr.is_empty());
    }

    #[test]
    fn all_parameters_include_defaults() {
        let out = render(&main_cf("myhostname = mx.example.org\n"), false, &[]);
        assert!(
            out.stdout
                .lines()
                .any(|l| l == "message_size_limit = 10240000"),
            "{}",
            out.stdout
        );
        assert!(out
            .stdout
            .lines()
            .any(|l| l == "myhostname = mx.example.org"));
        let names: Vec<&str> = out
            .stdout
            .lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn named_parameters_in_order_and_unknown_ones_warned() {
        let m = main_cf("myhostname = mx.example.org\n");
        let names = ["mydomain", "bogus", "myhostname"].map(String::from);
        let out = render(&m, false, &names);
        assert_eq!(
            out.stdout,
            "mydomain = example.org\nmyhostname = mx.example.org\n"
        );
        assert_eq!(out.stderr, "postern: warning: bogus: unknown parameter\n");
        assert_eq!(out.status, 1);

        let out = render(&m, true, &["mydomain".into(), "myhostname".into()]);
        assert_eq!(out.stdout, "myhostname = mx.example.org\n");
        assert_eq!(out.status, 0);
    }
}
