//! Command-line parsing for `postern`.
//!
//! Trusts nothing about its input beyond it being the administrator's command line: every argument
//! is checked, anything unexpected is a [`UsageError`] (exit status 2) that says what was wrong.
//! Plain `std` only; the grammar is small enough not to need an argument-parsing crate.

use std::ffi::OsString;
use std::path::PathBuf;

/// The configuration directory used when `-c` is not given, as Postfix uses `/etc/postfix`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postern";

/// The SMTP port `postern init` listens on when `--port` is not given: the usual unprivileged
/// submission-test port, so a fresh instance starts without root and without clashing with port 25.
pub const DEFAULT_INIT_PORT: u16 = 2525;

/// The hidden subcommand that `postern check` runs in a child process to probe one role's sandbox.
pub const PROBE_SUBCOMMAND: &str = "__probe";

pub const USAGE: &str = "\
usage: postern [-c CONFIG_DIR] COMMAND [ARGS]

Commands:
  start [--foreground]   start the mail system (--foreground: stay attached, log to stderr)
  stop                   stop the mail system gracefully
  reload                 re-read main.cf and master.cf
  status                 say whether the mail system runs, and show its services
  check                  validate the configuration, print the privilege map, probe every sandbox
  init [--port N] [--force]
                         create a self-contained instance in CONFIG_DIR
  conf [-n] [NAME...]    print parameters of the effective main.cf (-n: only those set in the file)
  queue list [--json]    list the messages in the queue, as Postfix's mailq (--json: as postqueue -j)
  map check [--aliases] TABLE...
                         check lookup tables (type:name or a path) and report errors with file and
                         line; tables named in alias_maps or alias_database (or --aliases) are
                         read as aliases(5) files
  newaliases             check every table of alias_maps (Postern reads the text files themselves;
                         there is nothing to rebuild)
  help                   print this text

Options:
  -c CONFIG_DIR          the configuration directory (default /etc/postern)
";

/// What the administrator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Start {
        foreground: bool,
    },
    Stop,
    Reload,
    Status,
    Check,
    Init {
        port: u16,
        force: bool,
    },
    Conf {
        explicit_only: bool,
        names: Vec<String>,
    },
    /// List the queue (`--json`: one JSON object per message).
    QueueList {
        json: bool,
    },
    /// Check lookup tables; `aliases` reads every one as an aliases(5) file.
    MapCheck {
        aliases: bool,
        tables: Vec<String>,
    },
    /// Check the tables of `alias_maps`.
    Newaliases,
    Help,
    /// Internal: apply the sandbox of `role` in this process and report what the probes saw.
    Probe {
        role: String,
    },
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// As given (possibly relative); commands make it absolute where a child process needs it.
    pub config_dir: PathBuf,
    pub command: Command,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("missing command")]
    MissingCommand,
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("option `{0}` needs a value")]
    MissingValue(&'static str),
    #[error("option `-c` given twice")]
    DuplicateConfigDir,
    #[error("`{option}` is not an option of `{command}`")]
    UnknownOption {
        command: &'static str,
        option: String,
    },
    #[error("`{command}` takes no argument `{argument}`")]
    UnexpectedArgument {
        command: &'static str,
        argument: String,
    },
    #[error("invalid port `{0}`: expected a number from 1 to 65535")]
    InvalidPort(String),
    #[error("argument is not valid UTF-8: {0}")]
    NotUtf8(String),
    #[error("`{PROBE_SUBCOMMAND}` needs a role name")]
    MissingRole,
    #[error("`queue` needs a subcommand: list")]
    MissingQueueCommand,
    #[error("unknown queue subcommand `{0}` (known: list)")]
    UnknownQueueCommand(String),
    #[error("`map` needs a subcommand: check TABLE...")]
    MissingMapCommand,
    #[error("unknown map subcommand `{0}` (known: check)")]
    UnknownMapCommand(String),
    #[error("`map check` needs at least one table")]
    MissingTable,
}

/// Parses the arguments after the program name.
///
/// `-c DIR` (also `--config DIR`, `--config=DIR`, `-cDIR`) may appear before or after the command
/// name, once.
pub fn parse<I>(args: I) -> Result<Invocation, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| UsageError::NotUtf8(a.to_string_lossy().into_owned()))
        })
        .collect::<Result<_, _>>()?;
    let config_dir = take_config_dir(&mut args)?;

    let mut rest = args.into_iter();
    let Some(name) = rest.next() else {
        return Err(UsageError::MissingCommand);
    };
    let rest: Vec<String> = rest.collect();
    let command = match name.as_str() {
        "start" => {
            let mut foreground = false;
            for arg in rest {
                match arg.as_str() {
                    "--foreground" | "-f" => foreground = true,
                    _ => return Err(not_an_option("start", arg)),
                }
            }
            Command::Start { foreground }
        }
        "stop" => no_arguments("stop", rest, Command::Stop)?,
        "reload" => no_arguments("reload", rest, Command::Reload)?,
        "status" => no_arguments("status", rest, Command::Status)?,
        "check" => no_arguments("check", rest, Command::Check)?,
        "help" | "--help" | "-h" => no_arguments("help", rest, Command::Help)?,
        "init" => parse_init(rest)?,
        "queue" => parse_queue(rest)?,
        "map" => parse_map(rest)?,
        "newaliases" => no_arguments("newaliases", rest, Command::Newaliases)?,
        "conf" => {
            let mut explicit_only = false;
            let mut names = Vec::new();
            for arg in rest {
                if arg == "-n" {
                    explicit_only = true;
                } else if arg.starts_with('-') {
                    return Err(not_an_option("conf", arg));
                } else {
                    names.push(arg);
                }
            }
            Command::Conf {
                explicit_only,
                names,
            }
        }
        PROBE_SUBCOMMAND => {
            let mut rest = rest.into_iter();
            let role = rest.next().ok_or(UsageError::MissingRole)?;
            if let Some(extra) = rest.next() {
                return Err(unexpected(PROBE_SUBCOMMAND, extra));
            }
            Command::Probe { role }
        }
        _ => return Err(UsageError::UnknownCommand(name)),
    };
    Ok(Invocation {
        config_dir: config_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR)),
        command,
    })
}

fn unexpected(command: &'static str, argument: String) -> UsageError {
    UsageError::UnexpectedArgument { command, argument }
}

fn not_an_option(command: &'static str, arg: String) -> UsageError {
    if arg.starts_with('-') {
        UsageError::UnknownOption {
            command,
            option: arg,
        }
    } else {
        unexpected(command, arg)
    }
}

fn no_arguments(
    command: &'static str,
    rest: Vec<String>,
    value: Command,
) -> Result<Command, UsageError> {
    match rest.into_iter().next() {
        None => Ok(value),
        Some(arg) => Err(not_an_option(command, arg)),
    }
}

fn parse_init(rest: Vec<String>) -> Result<Command, UsageError> {
    let mut port = DEFAULT_INIT_PORT;
    let mut force = false;
    let mut rest = rest.into_iter();
    while let Some(arg) = rest.next() {
        if arg == "--force" {
            force = true;
        } else if arg == "--port" || arg == "-p" {
            let value = rest.next().ok_or(UsageError::MissingValue("--port"))?;
            port = parse_port(&value)?;
        } else if let Some(value) = arg.strip_prefix("--port=") {
            port = parse_port(value)?;
        } else {
            return Err(not_an_option("init", arg));
        }
    }
    Ok(Command::Init { port, force })
}

fn parse_map(rest: Vec<String>) -> Result<Command, UsageError> {
    let mut rest = rest.into_iter();
    let sub = rest.next().ok_or(UsageError::MissingMapCommand)?;
    if sub != "check" {
        return Err(UsageError::UnknownMapCommand(sub));
    }
    let mut aliases = false;
    let mut tables = Vec::new();
    for arg in rest {
        if arg == "--aliases" || arg == "-a" {
            aliases = true;
        } else if arg.starts_with('-') {
            return Err(not_an_option("map check", arg));
        } else {
            tables.push(arg);
        }
    }
    if tables.is_empty() {
        return Err(UsageError::MissingTable);
    }
    Ok(Command::MapCheck { aliases, tables })
}

fn parse_queue(rest: Vec<String>) -> Result<Command, UsageError> {
    let mut rest = rest.into_iter();
    let sub = rest.next().ok_or(UsageError::MissingQueueCommand)?;
    match sub.as_str() {
        "list" => {
            let mut json = false;
            for arg in rest {
                match arg.as_str() {
                    "--json" | "-j" => json = true,
                    _ => return Err(not_an_option("queue list", arg)),
                }
            }
            Ok(Command::QueueList { json })
        }
        _ => Err(UsageError::UnknownQueueCommand(sub)),
    }
}

fn parse_port(value: &str) -> Result<u16, UsageError> {
    match value.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(UsageError::InvalidPort(value.to_string())),
    }
}

/// Removes every form of the configuration-directory option from `args`, returning its value.
fn take_config_dir(args: &mut Vec<String>) -> Result<Option<PathBuf>, UsageError> {
    let mut found: Option<PathBuf> = None;
    let mut kept = Vec::with_capacity(args.len());
    let mut iter = std::mem::take(args).into_iter();
    while let Some(arg) = iter.next() {
        let value = if arg == "-c" || arg == "--config" {
            Some(iter.next().ok_or(UsageError::MissingValue("-c"))?)
        } else {
            arg.strip_prefix("--config=")
                .or_else(|| arg.strip_prefix("-c").filter(|v| !v.is_empty()))
                .map(str::to_string)
        };
        match value {
            Some(dir) if dir.is_empty() => return Err(UsageError::MissingValue("-c")),
            Some(_) if found.is_some() => return Err(UsageError::DuplicateConfigDir),
            Some(dir) => found = Some(PathBuf::from(dir)),
            None => kept.push(arg),
        }
    }
    *args = kept;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Invocation, UsageError> {
        parse(line.split_whitespace().map(OsString::from))
    }

    fn command(line: &str) -> Command {
        parse_str(line).unwrap().command
    }

    #[test]
    fn queue_list() {
        assert_eq!(command("queue list"), Command::QueueList { json: false });
        assert_eq!(
            command("map check hash:/etc/aliases --aliases /x"),
            Command::MapCheck {
                aliases: true,
                tables: vec!["hash:/etc/aliases".to_owned(), "/x".to_owned()]
            }
        );
        assert_eq!(parse_str("map").unwrap_err(), UsageError::MissingMapCommand);
        assert_eq!(
            parse_str("map check").unwrap_err(),
            UsageError::MissingTable
        );
        assert_eq!(
            parse_str("map query x").unwrap_err(),
            UsageError::UnknownMapCommand("query".to_owned())
        );
        assert_eq!(command("newaliases"), Command::Newaliases);
        assert!(parse_str("newaliases x").is_err());
        assert_eq!(
            command("queue list --json"),
            Command::QueueList { json: true }
        );
        assert_eq!(
            parse_str("queue").unwrap_err(),
            UsageError::MissingQueueCommand
        );
        assert_eq!(
            parse_str("queue flush").unwrap_err(),
            UsageError::UnknownQueueCommand("flush".to_owned())
        );
        assert!(matches!(
            parse_str("queue list --all").unwrap_err(),
            UsageError::UnknownOption { .. }
        ));
    }

    #[test]
    fn default_config_dir_is_etc_postern() {
        let inv = parse_str("status").unwrap();
        assert_eq!(inv.config_dir, PathBuf::from("/etc/postern"));
        assert_eq!(inv.command, Command::Status);
    }

    #[test]
    fn config_dir_before_or_after_the_command() {
        for line in [
            "-c /x start",
            "start -c /x",
            "-c/x start",
            "--config /x start",
            "--config=/x start",
        ] {
            let inv = parse_str(line).unwrap();
            assert_eq!(inv.config_dir, PathBuf::from("/x"), "{line}");
            assert_eq!(inv.command, Command::Start { foreground: false }, "{line}");
        }
    }

    #[test]
    fn config_dir_errors() {
        assert_eq!(parse_str("start -c"), Err(UsageError::MissingValue("-c")));
        assert_eq!(
            parse_str("-c /a -c /b start"),
            Err(UsageError::DuplicateConfigDir)
        );
        assert_eq!(
            parse_str("--config= start"),
            Err(UsageError::MissingValue("-c"))
        );
    }

    #[test]
    fn start_foreground() {
        assert_eq!(
            command("start --foreground"),
            Command::Start { foreground: true }
        );
        assert_eq!(
            parse_str("start --background"),
            Err(UsageError::UnknownOption {
                command: "start",
                option: "--background".into()
            })
        );
    }

    #[test]
    fn commands_without_arguments_refuse_extras() {
        assert_eq!(command("stop"), Command::Stop);
        assert_eq!(command("reload"), Command::Reload);
        assert_eq!(command("check"), Command::Check);
        assert_eq!(command("help"), Command::Help);
        assert_eq!(
            parse_str("stop now"),
            Err(UsageError::UnexpectedArgument {
                command: "stop",
                argument: "now".into()
            })
        );
        assert_eq!(
            parse_str("status -v"),
            Err(UsageError::UnknownOption {
                command: "status",
                option: "-v".into()
            })
        );
    }

    #[test]
    fn init_port_and_force() {
        assert_eq!(
            command("init"),
            Command::Init {
                port: 2525,
                force: false
            }
        );
        assert_eq!(
            command("init --port 2600"),
            Command::Init {
                port: 2600,
                force: false
            }
        );
        assert_eq!(
            command("init --port=2601 --force"),
            Command::Init {
                port: 2601,
                force: true
            }
        );
        assert_eq!(
            parse_str("init --port"),
            Err(UsageError::MissingValue("--port"))
        );
        for bad in ["0", "65536", "x", "-1"] {
            assert_eq!(
                parse_str(&format!("init --port {bad}")),
                Err(UsageError::InvalidPort(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn conf_names_and_explicit() {
        assert_eq!(
            command("conf"),
            Command::Conf {
                explicit_only: false,
                names: vec![]
            }
        );
        assert_eq!(
            command("conf -n"),
            Command::Conf {
                explicit_only: true,
                names: vec![]
            }
        );
        assert_eq!(
            command("conf mynetworks -n myhostname"),
            Command::Conf {
                explicit_only: true,
                names: vec!["mynetworks".into(), "myhostname".into()]
            }
        );
        assert_eq!(
            parse_str("conf -d"),
            Err(UsageError::UnknownOption {
                command: "conf",
                option: "-d".into()
            })
        );
    }

    #[test]
    fn missing_and_unknown_commands() {
        assert_eq!(parse_str(""), Err(UsageError::MissingCommand));
        assert_eq!(parse_str("-c /x"), Err(UsageError::MissingCommand));
        assert_eq!(
            parse_str("flush"),
            Err(UsageError::UnknownCommand("flush".into()))
        );
    }

    #[test]
    fn probe_needs_exactly_one_role() {
        assert_eq!(
            command("__probe smtpd -c /x"),
            Command::Probe {
                role: "smtpd".into()
            }
        );
        assert_eq!(parse_str("__probe"), Err(UsageError::MissingRole));
        assert!(parse_str("__probe smtpd qmgr").is_err());
    }

    #[test]
    fn non_utf8_argument_is_a_usage_error() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b's', 0xff]);
        assert!(matches!(parse([bad]), Err(UsageError::NotUtf8(_))));
    }
}
