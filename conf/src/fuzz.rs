//! Entry points for the fuzz targets and the corpus replay test.
//!
//! Trusts: nothing; the input is arbitrary bytes. Non-UTF-8 input is skipped (the loaders
//! reject it before parsing). For whatever parses, the entry points check the invariants a
//! caller relies on, and panic (a finding) if one fails:
//! - the rendering (`Display`) parses again, to the same settings or services;
//! - every typed getter succeeds on every known parameter of its kind (parsing validated
//!   every value);
//! - applying `master.cf` overrides to a `MainCf` returns, never panics.

use std::path::Path;

use crate::main_cf::{Environment, MainCf};
use crate::master_cf::MasterCf;
use crate::params::PARAMS;
use crate::value::Kind;

/// A fixed host name, so a finding reproduces on any machine.
const FUZZ_HOSTNAME: &str = "fuzz.example.test";

fn environment() -> Option<Environment> {
    Environment::with_hostname(FUZZ_HOSTNAME).ok()
}

/// Parses `data` as `main.cf`; checks the round trip and the typed getters.
pub fn main_cf(data: &[u8]) {
    let (Ok(text), Some(env)) = (std::str::from_utf8(data), environment()) else {
        return;
    };
    let file = Path::new("fuzz/main.cf");
    let Ok(cf) = MainCf::parse_with_env(text, file, env.clone()) else {
        return;
    };
    let rendered = cf.to_string();
    let again = match MainCf::parse_with_env(&rendered, file, env) {
        Ok(again) => again,
        Err(e) => panic!("the rendering of a valid main.cf does not parse: {e}\n{rendered}"),
    };
    assert!(
        cf.iter_explicit().eq(again.iter_explicit()),
        "explicit settings differ after a round trip:\n{rendered}"
    );
    assert!(
        cf.iter_all().eq(again.iter_all()),
        "values differ after a round trip:\n{rendered}"
    );
    for (name, _) in cf.iter_explicit() {
        assert_eq!(cf.raw(name), again.raw(name), "raw `{name}` differs");
    }
    for p in PARAMS {
        let ok = match p.kind {
            Kind::Bool => cf.get_bool(p.name).is_ok(),
            Kind::Int { .. } => cf.get_int(p.name).is_ok(),
            Kind::Time { .. } => cf.get_time(p.name).is_ok(),
            Kind::Size => cf.get_size(p.name).is_ok(),
            Kind::User => cf.get_user(p.name).is_ok(),
            Kind::Group => cf.get_group(p.name).is_ok(),
            _ => cf.get_list(p.name).is_ok() && cf.format_line(p.name).is_ok(),
        };
        assert!(ok, "getter for `{}` fails on a parsed main.cf", p.name);
    }
}

/// Parses `data` as `master.cf`; checks the round trip and applies the overrides.
pub fn master_cf(data: &[u8]) {
    let (Ok(text), Some(env)) = (std::str::from_utf8(data), environment()) else {
        return;
    };
    let file = Path::new("fuzz/master.cf");
    let Ok(cf) = MasterCf::parse(text, file) else {
        return;
    };
    let rendered = cf.to_string();
    let again = match MasterCf::parse(&rendered, file) {
        Ok(again) => again,
        Err(e) => panic!("the rendering of a valid master.cf does not parse: {e}\n{rendered}"),
    };
    assert!(
        cf.same_as(&again),
        "services differ after a round trip:\n{rendered}"
    );
    let main = MainCf::defaults_with_env(env);
    for service in cf.services() {
        if let Ok(settings) = service.settings(&main) {
            for (name, value) in &service.overrides {
                // A later override of the same name wins.
                let last = service.overrides.iter().rev().find(|(n, _)| n == name);
                if last.is_some_and(|(_, v)| v == value) {
                    assert_eq!(settings.raw(name), Some(value.as_str()));
                }
            }
        }
        let _ = service.process_limit(&main);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_odd_inputs_do_not_panic() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"myhostname = mail.example.test\nmydestination = $myhostname,\n  localhost\n",
            b"myorigin = $mydestination\nmydestination = $myorigin\n",
            b"message_size_limit = ${mydomain?1000:2000}\n  continued\n#c\nmax_idle = 3w\n",
            b"a = $b$b\nb = $c$c\nc = $a\nmynetworks = $a\n",
            b"x = {\nsmtpd_banner = $x ${x?{}} $$\n",
            b"smtp inet n - n - - smtpd -o { smtpd_banner = a {b} c } -v { -o } x\n",
            b"smtp inet n - n - - smtpd\n  -o smtpd_timeout=60s\n",
            b"a unix - - y 1? 0 pipe {} { #c } -- -o\n",
        ];
        for input in inputs {
            main_cf(input);
            master_cf(input);
        }
    }

    #[test]
    fn the_seed_corpora_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (dir, run) in [("main_cf", main_cf as fn(&[u8])), ("master_cf", master_cf)] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(data) = std::fs::read(entry.path()) {
                    run(&data);
                }
            }
        }
    }
}
