//! `postern init`: writes a self-contained instance — `main.cf`, `master.cf`, `vmailbox`, `aliases` and the
//! directories — into one directory, so it can be started, used and removed without touching the
//! rest of the host.
//!
//! Trusts the administrator's command line (the directory and port). Does not trust what is already
//! in the directory: existing `main.cf`/`master.cf` are never overwritten without `--force`, and the
//! directory path must be one that main.cf can carry verbatim (no white space, `,` or `$`, which
//! main.cf would split or expand).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::layout::{self, Owner};

/// First numeric uid/gid of the daemon identities `init` writes when run as root. Outside the ranges
/// that Debian's `adduser` hands out (100–999 system, 1000–59999 users), so no passwd entry is
/// needed and none is likely to collide.
pub const ROOT_IDENTITY_BASE: u32 = 61000;

/// The daemon identity parameters of main.cf, each with its offset from [`ROOT_IDENTITY_BASE`] and
/// the daemons that run under it.
pub const IDENTITIES: [(&str, u32, &str); 6] = [
    ("smtpd_user", 1, "smtpd"),
    ("queue_user", 2, "cleanup, qmgr, pickup"),
    ("smtp_user", 3, "smtp"),
    ("vmail_user", 4, "virtual"),
    ("bounce_user", 5, "bounce"),
    ("proxymap_user", 6, "proxymap"),
];

/// The services `init` writes into master.cf, as Postfix 3 writes them: service name, type,
/// private, unpriv, chroot, wakeup, maxproc, command. The inet listener's name is filled in from
/// the port.
const UNIX_SERVICES: [[&str; 7]; 8] = [
    ["pickup", "n", "-", "n", "60", "1", "pickup"],
    ["cleanup", "n", "-", "n", "-", "0", "cleanup"],
    ["qmgr", "n", "-", "n", "300", "1", "qmgr"],
    ["bounce", "-", "-", "n", "-", "0", "bounce"],
    ["smtp", "-", "-", "n", "-", "-", "smtp"],
    ["virtual", "-", "n", "n", "-", "-", "virtual"],
    ["local", "-", "n", "n", "-", "-", "local"],
    ["proxymap", "-", "-", "n", "-", "-", "proxymap"],
];

/// The single virtual mailbox of a fresh instance.
pub const VMAILBOX: &str = "\
# Virtual mailboxes: address, then the mailbox path relative to virtual_mailbox_base
# (a trailing / means Maildir).
user@example.test  example.test/user/
";

/// The aliases of a fresh instance: mail for the administrator goes to its one mailbox (Postern never
/// delivers as root, so `root` needs an alias, as the postmaster does by RFC 5321).
pub const ALIASES: &str = "\
# Aliases of this instance, in aliases(5) format; `postern -c DIR newaliases` checks them.
postmaster: user@example.test
root: user@example.test
MAILER-DAEMON: postmaster
";

/// Everything that decides the content of the files.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute path of the instance directory.
    pub dir: PathBuf,
    pub port: u16,
    /// Absolute path of the directory holding `postern-master` and the daemons.
    pub daemon_directory: PathBuf,
    /// The uid:gid of each identity parameter, in the order of [`IDENTITIES`].
    pub identities: [Owner; 6],
    /// Whether the identities are the root layout's distinct uids or the invoking user's.
    pub as_root: bool,
}

impl Settings {
    /// Settings for `dir`; identities distinct per role as root, the invoking user's otherwise.
    pub fn new(dir: PathBuf, port: u16, daemon_directory: PathBuf) -> Settings {
        let as_root = nix::unistd::geteuid().is_root();
        let identities = if as_root {
            IDENTITIES.map(|(_, offset, _)| Owner {
                uid: ROOT_IDENTITY_BASE + offset,
                gid: ROOT_IDENTITY_BASE + offset,
            })
        } else {
            let me = Owner {
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
            };
            [me; 6]
        };
        Settings {
            dir,
            port,
            daemon_directory,
            identities,
            as_root,
        }
    }

    fn identity(&self, parameter: &str) -> Owner {
        IDENTITIES
            .iter()
            .position(|(name, _, _)| *name == parameter)
            .map(|i| self.identities[i])
            .unwrap_or(Owner::ROOT)
    }

    pub fn queue_directory(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn layout_inputs(&self) -> layout::Inputs {
        layout::Inputs {
            queue_directory: self.queue_directory(),
            virtual_mailbox_base: Some(self.dir.join("mail")),
            mail_spool_directory: Some(self.dir.join("mailspool")),
            maillog_file: Some(self.dir.join("log/postern.log")),
            queue_owner: self.identity("queue_user"),
            vmail_owner: self.identity("vmail_user"),
            as_root: self.as_root,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{path}: cannot be written into main.cf verbatim (it contains white space, ',', '$' or a control character); choose another directory")]
    UnsafePath { path: PathBuf },
    #[error("{path}: already exists; use --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
}

/// Whether `path` can be written as a main.cf value and read back unchanged, also inside a list
/// value such as `virtual_mailbox_maps`.
pub fn path_is_main_cf_safe(path: &Path) -> bool {
    match path.to_str() {
        Some(s) => !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '$'),
        None => false,
    }
}

pub fn main_cf(s: &Settings) -> String {
    let dir = s.dir.display();
    let mut out = format!(
        "\
# main.cf of a self-contained Postern instance, written by `postern init`.
# Syntax and parameter names are Postfix's. `postern -c {dir} conf` prints every
# parameter with its effective value, `postern -c {dir} conf -n` only those set here.

# Where things live: every path is inside {dir}.
queue_directory = {dir}/spool
virtual_mailbox_base = {dir}/mail
mail_spool_directory = {dir}/mailspool
maillog_file = {dir}/log/postern.log
daemon_directory = {daemon_directory}

# Who this system is. It listens and relays for the loopback networks only.
myhostname = localhost.localdomain
inet_interfaces = 127.0.0.1
mynetworks = 127.0.0.0/8 [::1]/128

# One virtual domain with one mailbox, listed in {dir}/vmailbox.
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:{dir}/vmailbox

# Local aliases (postmaster and root go to the virtual mailbox), listed in {dir}/aliases.
alias_maps = hash:{dir}/aliases
alias_database = hash:{dir}/aliases

",
        daemon_directory = s.daemon_directory.display(),
    );
    if s.as_root {
        out.push_str(
            "\
# Daemon identities: numeric uid:gid, one per role, no passwd entries needed. The spool
# and mail directories are owned accordingly.
",
        );
    } else {
        out.push_str(
            "\
# Daemon identities. Started by a non-root user every daemon runs under that user's uid
# (still in its own process, with its own landlock ruleset and seccomp filter); these lines
# name that user, so the instance behaves the same if root starts it.
",
        );
    }
    // A `#` after a value would be part of the value (as in Postfix): comments get their own line.
    for ((name, _, daemons), owner) in IDENTITIES.iter().zip(s.identities) {
        let _ = writeln!(out, "# {daemons}\n{name} = {}:{}", owner.uid, owner.gid);
    }
    out
}

/// master.cf for the instance. `installed(command)` says whether the program exists in
/// `daemon_directory`; a service whose program does not is written commented out, with a note, so
/// that a fresh instance starts before every daemon is built.
pub fn master_cf(s: &Settings, installed: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::from(
        "\
#
# master.cf of a Postern instance, written by `postern init`.
# Postfix's layout: one service per line; a line starting with white space continues
# the previous one; \"-\" means the default. A service that is not listed here never runs.
#
# A service whose program is missing from daemon_directory is commented out below
# with a note: build or install the program, then remove the leading \"#\".
#
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
",
    );
    let listener = format!("127.0.0.1:{}", s.port);
    let rows = std::iter::once((
        listener.as_str(),
        "inet",
        ["n", "-", "n", "-", "-", "smtpd"],
    ))
    .chain(
        UNIX_SERVICES
            .iter()
            .map(|r| (r[0], "unix", [r[1], r[2], r[3], r[4], r[5], r[6]])),
    );
    for (name, kind, [private, unpriv, chroot, wakeup, maxproc, command]) in rows {
        let line = format!(
            "{name:<9} {kind:<5} {private:<7} {unpriv:<7} {chroot:<7} {wakeup:<7} {maxproc:<7} {command}"
        );
        if installed(command) {
            let _ = writeln!(out, "{line}");
        } else {
            let path = s.daemon_directory.join(command);
            let _ = writeln!(out, "# not installed: {}", path.display());
            let _ = writeln!(out, "#{line}");
        }
    }
    out
}

/// What [`run`] did.
#[derive(Debug)]
pub struct Report {
    pub written: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// Writes the instance. `s.dir` must be absolute.
pub fn run(s: &Settings, force: bool) -> Result<Report, InitError> {
    for path in [&s.dir, &s.daemon_directory] {
        if !path.is_absolute() || !path_is_main_cf_safe(path) {
            return Err(InitError::UnsafePath { path: path.clone() });
        }
    }
    let main_path = s.dir.join("main.cf");
    let master_path = s.dir.join("master.cf");
    let vmailbox_path = s.dir.join("vmailbox");
    let aliases_path = s.dir.join("aliases");
    if !force {
        for path in [&main_path, &master_path] {
            if fs::symlink_metadata(path).is_ok() {
                return Err(InitError::Exists { path: path.clone() });
            }
        }
    }
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    fs::create_dir_all(&s.dir).map_err(io_err(&s.dir))?;

    let installed = |command: &str| s.daemon_directory.join(command).is_file();
    let mut written = Vec::new();
    for (path, text) in [
        (&main_path, main_cf(s)),
        (&master_path, master_cf(s, &installed)),
    ] {
        write_file(path, &text).map_err(io_err(path))?;
        written.push(path.clone());
    }
    for (path, text) in [(vmailbox_path, VMAILBOX), (aliases_path, ALIASES)] {
        if force || fs::symlink_metadata(&path).is_err() {
            write_file(&path, text).map_err(io_err(&path))?;
            written.push(path);
        }
    }

    let outcome = layout::ensure(&layout::plan(&s.layout_inputs()), s.as_root)?;
    let mut warnings = outcome.warnings;
    if s.as_root {
        for (path, mode) in layout::untraversable_ancestors(&s.dir.join("spool")) {
            warnings.push(format!(
                "{}: mode {mode:04o} keeps the daemon uids from reaching {}; make it searchable (chmod o+x) before starting",
                path.display(),
                s.dir.display()
            ));
        }
    }
    Ok(Report { written, warnings })
}

/// Replaces `path` with `text`, never following a symlink planted at that name.
fn write_file(path: &Path, text: &str) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => fs::remove_file(path)?,
        _ => {}
    }
    let tmp = path.with_extension("postern-init.tmp");
    let _ = fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(as_root: bool) -> Settings {
        let identities = if as_root {
            IDENTITIES.map(|(_, o, _)| Owner {
                uid: 61000 + o,
                gid: 61000 + o,
            })
        } else {
            [Owner {
                uid: 1000,
                gid: 1000,
            }; 6]
        };
        Settings {
            dir: "/srv/inst".into(),
            port: 2600,
            daemon_directory: "/opt/postern/bin".into(),
            identities,
            as_root,
        }
    }

    #[test]
    fn main_cf_puts_every_path_inside_the_instance() {
        let text = main_cf(&settings(true));
        for line in [
            "queue_directory = /srv/inst/spool",
            "virtual_mailbox_base = /srv/inst/mail",
            "mail_spool_directory = /srv/inst/mailspool",
            "maillog_file = /srv/inst/log/postern.log",
            "daemon_directory = /opt/postern/bin",
            "virtual_mailbox_maps = texthash:/srv/inst/vmailbox",
            "mynetworks = 127.0.0.0/8 [::1]/128",
            "inet_interfaces = 127.0.0.1",
            "virtual_mailbox_domains = example.test",
            "myhostname = localhost.localdomain",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn root_identities_are_distinct_numeric_ids() {
        let text = main_cf(&settings(true));
        let ids: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("_user = "))
            .map(|l| l.split_whitespace().nth(2).unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "61001:61001",
                "61002:61002",
                "61003:61003",
                "61004:61004",
                "61005:61005",
                "61006:61006"
            ]
        );
    }

    #[test]
    fn non_root_identities_are_the_invoking_user() {
        let text = main_cf(&settings(false));
        assert!(text.contains("smtpd_user = 1000:1000"));
        assert!(text.contains("bounce_user = 1000:1000"));
        assert!(!text.contains("61001"));
    }

    #[test]
    fn master_cf_writes_installed_services_and_comments_out_the_rest() {
        let text = master_cf(&settings(true), &|cmd| cmd == "smtpd" || cmd == "cleanup");
        let active: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(active.len(), 2, "{text}");
        let smtpd: Vec<&str> = active[0].split_whitespace().collect();
        assert_eq!(
            smtpd,
            ["127.0.0.1:2600", "inet", "n", "-", "n", "-", "-", "smtpd"]
        );
        assert!(active[1].starts_with("cleanup "));
        assert!(text.contains("# not installed: /opt/postern/bin/qmgr\n#qmgr "));
        assert!(text.contains("# not installed: /opt/postern/bin/local\n#local "));
    }

    #[test]
    fn generated_files_parse_back_with_conf() {
        let s = settings(true);
        let main = conf::MainCf::parse(&main_cf(&s), Path::new("/srv/inst/main.cf")).unwrap();
        assert_eq!(main.get("queue_directory").unwrap(), "/srv/inst/spool");
        assert_eq!(
            main.get("mail_spool_directory").unwrap(),
            "/srv/inst/mailspool"
        );
        assert_eq!(main.get("smtpd_user").unwrap(), "61001:61001");
        assert_eq!(main.get("bounce_user").unwrap(), "61005:61005");
        assert_eq!(
            main.get("virtual_mailbox_maps").unwrap(),
            "texthash:/srv/inst/vmailbox"
        );
        assert_eq!(main.get("alias_maps").unwrap(), "hash:/srv/inst/aliases");
        let explicit: Vec<&str> = main.iter_explicit().map(|(name, _)| name).collect();
        assert_eq!(explicit.len(), 18, "{explicit:?}");

        let all = |_: &str| true;
        let master =
            conf::MasterCf::parse(&master_cf(&s, &all), Path::new("/srv/inst/master.cf")).unwrap();
        let services: Vec<(&str, &str)> = master
            .services()
            .iter()
            .map(|svc| (svc.name.as_str(), svc.command.as_str()))
            .collect();
        assert_eq!(
            services,
            [
                ("127.0.0.1:2600", "smtpd"),
                ("pickup", "pickup"),
                ("cleanup", "cleanup"),
                ("qmgr", "qmgr"),
                ("bounce", "bounce"),
                ("smtp", "smtp"),
                ("virtual", "virtual"),
                ("local", "local"),
                ("proxymap", "proxymap"),
            ]
        );
        let none = |_: &str| false;
        let empty =
            conf::MasterCf::parse(&master_cf(&s, &none), Path::new("/srv/inst/master.cf")).unwrap();
        assert!(empty.services().is_empty());
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(path_is_main_cf_safe(Path::new("/srv/inst-1/a.b")));
        for bad in [
            "/srv/my inst",
            "/srv/a,b",
            "/srv/$HOME",
            "/srv/a\tb",
            "/srv/a\nb",
        ] {
            assert!(!path_is_main_cf_safe(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn run_refuses_to_overwrite_without_force() {
        let dir = std::env::temp_dir().join(format!("postern-init-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = settings(nix::unistd::geteuid().is_root());
        s.dir = dir.clone();
        s.identities = Settings::new(dir.clone(), 2600, "/x".into()).identities;
        s.daemon_directory = dir.join("bin");
        let report = run(&s, false).unwrap();
        assert_eq!(report.written.len(), 4);
        assert_eq!(fs::read_to_string(dir.join("aliases")).unwrap(), ALIASES);
        assert!(dir.join("spool/incoming").is_dir());
        assert!(dir.join("mail").is_dir());
        assert!(dir.join("log").is_dir());
        fs::write(dir.join("vmailbox"), "kept@example.test x/\n").unwrap();
        let err = run(&s, false).unwrap_err();
        assert!(matches!(err, InitError::Exists { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("main.cf: already exists; use --force"),
            "{err}"
        );
        let report = run(&s, true).unwrap();
        assert_eq!(report.written.len(), 4);
        assert_eq!(fs::read_to_string(dir.join("vmailbox")).unwrap(), VMAILBOX);
        fs::remove_dir_all(&dir).unwrap();
    }
}
