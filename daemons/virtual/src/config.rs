//! The agent's settings and tables, read once at start-up, before the sandbox, so that
//! a bad value or an unreadable table stops the daemon with a message that names it.
//!
//! Trusts: `conf` for the kinds of values; `policy::table` for the table text. Decisions:
//! - `virtual_mailbox_base` must be an absolute path; a mailbox path from the table is
//!   relative to it, and one that is absolute, empty or has a `..` or `.` component is a
//!   configuration error for that recipient (deferred), never followed.
//! - There is no `recipient_delimiter` parameter yet (Postfix's default is empty), so
//!   `user+ext@domain` is looked up as written and then as `@domain`.
//! - Locking an mbox file: Postfix's `deliver_lock_attempts` (20) and
//!   `deliver_lock_delay` (1 s), and a dot-lock older than Postfix's `stale_lock_time`
//!   (500 s) is removed: `mailbox::LockOptions`, from main.cf.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use conf::MainCf;
use policy::{Maps, TableError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("parameter {name}: {source}")]
    Conf {
        name: &'static str,
        #[source]
        source: conf::ConfError,
    },
    #[error("parameter {name} = {value:?}: {why}")]
    Value {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("parameter virtual_mailbox_maps: {0}")]
    Table(#[from] TableError),
}

/// What the agent needs to deliver.
#[derive(Debug, Clone)]
pub struct Config {
    /// `virtual_mailbox_base`: every mailbox is below it.
    pub base: PathBuf,
    /// `virtual_mailbox_maps`.
    pub maps: Maps,
    /// `virtual_mailbox_limit`: the largest mailbox file (mbox) or message file
    /// (Maildir), in octets; 0 means no limit.
    pub mailbox_limit: u64,
    /// `myhostname`, in Maildir file names.
    pub hostname: String,
    pub lock: mailbox::LockOptions,
}

fn conf_err(name: &'static str) -> impl FnOnce(conf::ConfError) -> ConfigError {
    move |source| ConfigError::Conf { name, source }
}

impl Config {
    /// Reads the settings and every table of `virtual_mailbox_maps`; a table this uid
    /// cannot read is an error naming the file.
    pub fn from_settings(s: &MainCf) -> Result<Config, ConfigError> {
        let base = s
            .get("virtual_mailbox_base")
            .map_err(conf_err("virtual_mailbox_base"))?;
        let base = base.trim();
        if !base.starts_with('/') {
            return Err(ConfigError::Value {
                name: "virtual_mailbox_base",
                value: base.to_owned(),
                why: "must be an absolute path (the directory every virtual mailbox is below)",
            });
        }
        let maps = s
            .get_list("virtual_mailbox_maps")
            .map_err(conf_err("virtual_mailbox_maps"))?;
        let maps = Maps::load(maps.iter().map(String::as_str), |p: &Path| File::open(p))?;
        Ok(Config {
            base: PathBuf::from(base),
            maps,
            mailbox_limit: s
                .get_size("virtual_mailbox_limit")
                .map_err(conf_err("virtual_mailbox_limit"))?,
            hostname: s
                .get("myhostname")
                .map_err(conf_err("myhostname"))?
                .trim()
                .to_owned(),
            lock: lock_options(s)?,
        })
    }
}

/// Postfix's `deliver_lock_attempts`, `deliver_lock_delay` and `stale_lock_time`.
pub fn lock_options(s: &MainCf) -> Result<mailbox::LockOptions, ConfigError> {
    let attempts = s
        .get_int("deliver_lock_attempts")
        .map_err(conf_err("deliver_lock_attempts"))?;
    let attempts = u32::try_from(attempts).map_err(|_| ConfigError::Value {
        name: "deliver_lock_attempts",
        value: attempts.to_string(),
        why: "too large",
    })?;
    Ok(mailbox::LockOptions {
        attempts,
        delay: s
            .get_time("deliver_lock_delay")
            .map_err(conf_err("deliver_lock_delay"))?,
        stale_after: s
            .get_time("stale_lock_time")
            .map_err(conf_err("stale_lock_time"))?,
    })
}

/// Where a table value puts a mailbox: `Some((relative path, maildir))` when the value
/// is a usable relative path below the base (a trailing `/` means Maildir), `None` when
/// it would leave the base or is empty.
pub fn mailbox_path(value: &str) -> Option<(PathBuf, bool)> {
    let maildir = value.ends_with('/');
    let relative = Path::new(value);
    let mut normal = 0;
    for component in relative.components() {
        match component {
            Component::Normal(_) => normal += 1,
            _ => return None,
        }
    }
    // `a/./b` is normalised away by `components()`; refuse it anyway, so the path used
    // is the path written.
    if normal == 0 || value.split('/').any(|part| part == "." || part == "..") {
        return None;
    }
    Some((relative.to_path_buf(), maildir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn settings(text: &str) -> MainCf {
        let env = conf::Environment::with_hostname("mx.example.test").unwrap();
        MainCf::parse_with_env(text, Path::new("main.cf"), env).unwrap()
    }

    #[test]
    fn reads_the_table_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("vmailbox");
        let mut f = File::create(&table).unwrap();
        writeln!(f, "u@example.test example.test/u/").unwrap();
        let c = Config::from_settings(&settings(&format!(
            "virtual_mailbox_base = /srv/mail\nvirtual_mailbox_maps = texthash:{}\n",
            table.display()
        )))
        .unwrap();
        assert_eq!(c.maps.get("u@example.test"), Some("example.test/u/"));
        assert_eq!(c.mailbox_limit, 51_200_000);
        assert_eq!(c.hostname, "mx.example.test");
        let err = Config::from_settings(&settings(&format!(
            "virtual_mailbox_base = /srv/mail\nvirtual_mailbox_maps = hash:{}/missing\n",
            dir.path().display()
        )))
        .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        // Empty (Postfix's default) leaves the agent nowhere to deliver.
        let err = Config::from_settings(&settings("")).unwrap_err();
        assert!(err.to_string().contains("virtual_mailbox_base"), "{err}");
    }

    #[test]
    fn mailbox_paths_stay_below_the_base() {
        assert_eq!(
            mailbox_path("example.test/u/"),
            Some((PathBuf::from("example.test/u/"), true))
        );
        assert_eq!(
            mailbox_path("example.test/u"),
            Some((PathBuf::from("example.test/u"), false))
        );
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "/", "./x", "a/./b"] {
            assert_eq!(mailbox_path(bad), None, "{bad}");
        }
    }
}
