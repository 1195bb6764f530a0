//! One Postern instance as the `postern` command sees it: a configuration directory with `main.cf`
//! and `master.cf`, parsed by `conf`, and the paths derived from them.
//!
//! Trusts the configuration directory (the administrator's), but reports every problem in it with
//! the file and line instead of acting on a guess.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conf::{MainCf, MasterCf};

use crate::layout::{self, Owner};

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Conf(#[from] conf::ConfError),
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error("parameter {name} = {value}: must be an absolute path")]
    Relative { name: &'static str, value: String },
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
}

/// What `stop`, `status` and `reload` need of an instance whose `main.cf` may have an error: an
/// administrator must be able to stop the system to fix it.
pub struct ControlView {
    pub queue_directory: PathBuf,
    pub stop_timeout: Duration,
    /// The first error in main.cf (file, line, column), if it has one.
    pub error: Option<conf::ConfError>,
}

/// Logical lines of main.cf dropped, at most, while reading around its errors.
const MAX_SKIPPED_ERRORS: usize = 32;

/// Reads main.cf for `stop`, `status` and `reload`. A file with errors is read without the
/// logical lines that have them (a line and its continuation lines), one at a time, so that
/// `queue_directory` is still found where it is set correctly; when the file cannot be read at
/// all, or it is itself the line in error, the default applies.
pub fn control_view(config_dir: &Path) -> Result<ControlView, InstanceError> {
    let config_dir = std::fs::canonicalize(config_dir).map_err(|source| InstanceError::Dir {
        path: config_dir.to_path_buf(),
        source,
    })?;
    let path = config_dir.join("main.cf");
    let (main, error) = match MainCf::load(&path) {
        Ok(main) => (main, None),
        Err(first) => {
            let mut main = MainCf::defaults();
            if let Ok(text) = std::fs::read_to_string(&path) {
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                let mut line = first.line();
                for _ in 0..MAX_SKIPPED_ERRORS {
                    if line == 0 || line > lines.len() {
                        break;
                    }
                    blank_logical_line(&mut lines, line - 1);
                    match MainCf::parse(&lines.join("\n"), &path) {
                        Ok(m) => {
                            main = m;
                            break;
                        }
                        Err(e) => line = e.line(),
                    }
                }
            }
            (main, Some(first))
        }
    };
    let value = main.get("queue_directory")?;
    let queue_directory = PathBuf::from(value.trim());
    if !queue_directory.is_absolute() {
        return Err(InstanceError::Relative {
            name: "queue_directory",
            value,
        });
    }
    let stop_timeout = main
        .get_time("master_stop_timeout")
        .or_else(|_| MainCf::defaults().get_time("master_stop_timeout"))?;
    Ok(ControlView {
        queue_directory,
        stop_timeout,
        error,
    })
}

/// Empties the logical line that physical line `index` (0-based) belongs to.
fn blank_logical_line(lines: &mut [String], index: usize) {
    let continues = |l: &str| l.starts_with([' ', '\t']) && !l.trim().is_empty();
    let mut start = index;
    while start > 0 && continues(&lines[start]) {
        start -= 1;
    }
    let mut end = index + 1;
    while end < lines.len() && continues(&lines[end]) {
        end += 1;
    }
    for l in &mut lines[start..end] {
        l.clear();
    }
}

pub struct Instance {
    config_dir: PathBuf,
    main: MainCf,
    master: MasterCf,
}

impl Instance {
    /// Loads both files of `config_dir`. The directory is made absolute, as the master and the
    /// probe children are given it.
    pub fn load(config_dir: &Path) -> Result<Instance, InstanceError> {
        let config_dir =
            std::fs::canonicalize(config_dir).map_err(|source| InstanceError::Dir {
                path: config_dir.to_path_buf(),
                source,
            })?;
        let main = MainCf::load(&config_dir.join("main.cf"))?;
        let master = MasterCf::load(&config_dir.join("master.cf"))?;
        Ok(Instance {
            config_dir,
            main,
            master,
        })
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    pub fn main_cf_path(&self) -> PathBuf {
        self.config_dir.join("main.cf")
    }

    pub fn master_cf_path(&self) -> PathBuf {
        self.config_dir.join("master.cf")
    }

    pub fn main(&self) -> &MainCf {
        &self.main
    }

    fn absolute(&self, name: &'static str) -> Result<PathBuf, InstanceError> {
        let value = self.main.get(name)?;
        let path = PathBuf::from(value.trim());
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(InstanceError::Relative { name, value })
        }
    }

    fn optional_absolute(&self, name: &'static str) -> Result<Option<PathBuf>, InstanceError> {
        if self.main.get(name)?.trim().is_empty() {
            Ok(None)
        } else {
            self.absolute(name).map(Some)
        }
    }

    pub fn queue_directory(&self) -> Result<PathBuf, InstanceError> {
        self.absolute("queue_directory")
    }

    pub fn daemon_directory(&self) -> Result<PathBuf, InstanceError> {
        self.absolute("daemon_directory")
    }

    /// The settings a role's processes run with: main.cf plus the `-o` overrides of the first
    /// master.cf service running that command, or plain main.cf when none does.
    pub fn settings_for_role(&self, role: &str) -> Result<MainCf, InstanceError> {
        match self.master.services().iter().find(|s| s.command == role) {
            Some(service) => Ok(service.settings(&self.main)?),
            None => Ok(self.main.clone()),
        }
    }

    /// Role (command) → the master.cf services that run it.
    pub fn roles_in_master_cf(&self) -> BTreeMap<String, Vec<String>> {
        let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.master.services() {
            roles
                .entry(s.command.clone())
                .or_default()
                .push(s.name.clone());
        }
        roles
    }

    /// What would keep the master from starting a master.cf service: a command without declared
    /// privileges, or a program missing from `daemon_directory`. Each names master.cf and the line.
    pub fn service_problems(&self) -> Vec<String> {
        let file = self.master_cf_path();
        let daemon_directory = self.daemon_directory();
        let mut problems = Vec::new();
        for s in self.master.services() {
            let at = format!("{}:{}: service {}", file.display(), s.line, s.name);
            if !privileges::ROLES.contains(&s.command.as_str()) {
                problems.push(format!(
                    "{at}: no privileges are declared for the command {:?} (known: {})",
                    s.command,
                    privileges::ROLES.join(", ")
                ));
                continue;
            }
            match &daemon_directory {
                Ok(dir) => {
                    let program = privileges::program_path(dir, &s.command);
                    if !program.is_file() {
                        problems.push(format!(
                            "{at}: program {} is not installed; the master will refuse to start",
                            program.display()
                        ));
                    } else if let Err(e) =
                        privileges::check_program(&program, privileges::RunAs::current())
                    {
                        problems.push(format!("{at}: {e}"));
                    }
                }
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        problems
    }

    /// The directory layout of this instance, owned as the daemons' identities need.
    pub fn layout_inputs(
        &self,
        run_as: privileges::RunAs,
    ) -> Result<layout::Inputs, InstanceError> {
        let owner = |name: &'static str| -> Result<Owner, InstanceError> {
            Ok(match run_as {
                privileges::RunAs::Root => {
                    let id = privileges::account(&self.main, name)?;
                    Owner {
                        uid: id.uid,
                        gid: id.gid,
                    }
                }
                privileges::RunAs::Unprivileged => Owner {
                    uid: nix::unistd::geteuid().as_raw(),
                    gid: nix::unistd::getegid().as_raw(),
                },
            })
        };
        Ok(layout::Inputs {
            queue_directory: self.queue_directory()?,
            virtual_mailbox_base: self.optional_absolute("virtual_mailbox_base")?,
            mail_spool_directory: self.optional_absolute("mail_spool_directory")?,
            maillog_file: self.optional_absolute("maillog_file")?,
            queue_owner: owner("queue_user")?,
            vmail_owner: owner("vmail_user")?,
            as_root: run_as == privileges::RunAs::Root,
        })
    }

    /// Creates missing directories (as `postfix check` does); returns warnings about existing ones.
    pub fn ensure_layout(&self, run_as: privileges::RunAs) -> Result<Vec<String>, InstanceError> {
        let inputs = self.layout_inputs(run_as)?;
        let outcome = layout::ensure(&layout::plan(&inputs), inputs.as_root)?;
        let mut warnings = outcome.warnings;
        if inputs.as_root {
            let reached = [
                Some(&inputs.queue_directory),
                inputs.virtual_mailbox_base.as_ref(),
            ];
            for dir in reached.into_iter().flatten() {
                for (path, mode) in layout::untraversable_ancestors(dir) {
                    warnings.push(format!(
                        "{}: mode {mode:04o} keeps the daemon uids from reaching {}",
                        path.display(),
                        dir.display()
                    ));
                }
            }
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, main_cf: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("postern-instance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.cf"), main_cf).unwrap();
        dir
    }

    #[test]
    fn control_view_reads_around_errors_and_names_the_first() {
        let dir = scratch(
            "broken",
            "queue_directory = /srv/q\n\
             no_such_name = 1\n  continued\n\
             master_stop_timeout = 7s\n\
             $undefined_thing = x\n",
        );
        let view = control_view(&dir).unwrap();
        assert_eq!(view.queue_directory, PathBuf::from("/srv/q"));
        assert_eq!(view.stop_timeout, Duration::from_secs(7));
        let e = view.error.expect("the error is reported");
        // The parser reports a syntax error (line 5) before an unknown name (line 2); both lines
        // are read around.
        assert_eq!(e.line(), 5, "{e}");
        assert!(e.to_string().contains("main.cf:5:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broken_queue_directory_line_falls_back_to_the_default() {
        let dir = scratch("default", "queue_directory = $nothing_here\n");
        let view = control_view(&dir).unwrap();
        assert_eq!(view.queue_directory, PathBuf::from("/var/spool/postern"));
        assert!(view.error.is_some());
        let good = scratch("good", "queue_directory = /srv/q\n");
        let view = control_view(&good).unwrap();
        assert!(view.error.is_none());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&good);
    }
}
