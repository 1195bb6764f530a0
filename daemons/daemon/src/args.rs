//! The command line the master gives every daemon, in the form Postfix's master uses:
//! `COMMAND -c CONFIG_DIR -n SERVICE_NAME -t TYPE [-o name=value]...`.
//!
//! Both sides use this module: the master builds the argv with [`Args::to_argv`] and the daemon
//! parses it with [`Args::parse`]. Trusts: the argv comes from the master, but it is still checked
//! strictly (unknown options, missing or repeated ones are errors) so a mistake is reported, not
//! guessed around. The `-o` values are validated later against the parameter table by `conf`.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// Longest service name accepted: master.cf names are `[host:]port` or short words; a bracketed
/// IPv6 host with a port fits well within this.
pub const MAX_SERVICE_NAME: usize = 128;

/// Most `-o` overrides one service may carry; master.cf lines have a handful.
pub const MAX_OVERRIDES: usize = 64;

/// How the service receives work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Accepts TCP connections on the listener at fd 4.
    Inet,
    /// Receives channels from the master on its control channel.
    Unix,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Inet => "inet",
            Transport::Unix => "unix",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("command line: missing program name")]
    NoProgram,
    #[error("command line: option {0} needs a value")]
    MissingValue(String),
    #[error("command line: unknown option {0:?}")]
    Unknown(String),
    #[error("command line: option {0} given twice")]
    Repeated(&'static str),
    #[error("command line: required option {0} missing")]
    Required(&'static str),
    #[error("command line: argument is not UTF-8: {0:?}")]
    NotUtf8(OsString),
    #[error("command line: bad service name {0:?}")]
    ServiceName(String),
    #[error("command line: unknown service type {0:?} (expected inet or unix)")]
    Transport(String),
    #[error("command line: -o {0:?} is not name=value")]
    Override(String),
    #[error("command line: more than {MAX_OVERRIDES} -o options")]
    TooManyOverrides,
}

/// The parsed command line of a daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// argv\[0\]'s file name: the command of the master.cf line, which names the role.
    pub program: String,
    pub config_dir: PathBuf,
    pub service: String,
    pub transport: Transport,
    pub overrides: Vec<(String, String)>,
}

impl Args {
    /// Parses a full argv (program name first).
    pub fn parse<I, S>(argv: I) -> Result<Args, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut argv = argv.into_iter().map(|a| {
            let a: OsString = a.into();
            a.into_string().map_err(ArgsError::NotUtf8)
        });
        let program = argv.next().ok_or(ArgsError::NoProgram)??;
        let program = program
            .rsplit('/')
            .next()
            .filter(|p| !p.is_empty())
            .ok_or(ArgsError::NoProgram)?
            .to_owned();
        let mut config_dir = None;
        let mut service = None;
        let mut transport = None;
        let mut overrides = Vec::new();
        while let Some(opt) = argv.next() {
            let opt = opt?;
            let mut value = || -> Result<String, ArgsError> {
                argv.next()
                    .ok_or_else(|| ArgsError::MissingValue(opt.clone()))?
            };
            match opt.as_str() {
                "-c" => set_once(&mut config_dir, "-c", PathBuf::from(value()?))?,
                "-n" => {
                    let name = value()?;
                    if name.is_empty()
                        || name.len() > MAX_SERVICE_NAME
                        || name.chars().any(|c| c.is_control() || c.is_whitespace())
                    {
                        return Err(ArgsError::ServiceName(name));
                    }
                    set_once(&mut service, "-n", name)?;
                }
                "-t" => {
                    let t = match value()?.as_str() {
                        "inet" => Transport::Inet,
                        "unix" => Transport::Unix,
                        other => return Err(ArgsError::Transport(other.to_owned())),
                    };
                    set_once(&mut transport, "-t", t)?;
                }
                "-o" => {
                    let pair = value()?;
                    let (name, val) = pair
                        .split_once('=')
                        .map(|(n, v)| (n.trim(), v.trim()))
                        .filter(|(n, _)| !n.is_empty())
                        .ok_or_else(|| ArgsError::Override(pair.clone()))?;
                    if overrides.len() >= MAX_OVERRIDES {
                        return Err(ArgsError::TooManyOverrides);
                    }
                    overrides.push((name.to_owned(), val.to_owned()));
                }
                _ => return Err(ArgsError::Unknown(opt)),
            }
        }
        Ok(Args {
            program,
            config_dir: config_dir.ok_or(ArgsError::Required("-c"))?,
            service: service.ok_or(ArgsError::Required("-n"))?,
            transport: transport.ok_or(ArgsError::Required("-t"))?,
            overrides,
        })
    }

    /// The argv the master passes (program name first), the inverse of [`Args::parse`].
    pub fn to_argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            self.program.clone().into(),
            "-c".into(),
            self.config_dir.clone().into_os_string(),
            "-n".into(),
            self.service.clone().into(),
            "-t".into(),
            self.transport.as_str().into(),
        ];
        for (name, value) in &self.overrides {
            argv.push("-o".into());
            argv.push(format!("{name}={value}").into());
        }
        argv
    }
}

fn set_once<T>(slot: &mut Option<T>, opt: &'static str, value: T) -> Result<(), ArgsError> {
    if slot.is_some() {
        return Err(ArgsError::Repeated(opt));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, ArgsError> {
        Args::parse(s.split(' '))
    }

    #[test]
    fn full_command_line() {
        let a = parse("/usr/libexec/postern/smtpd -c /etc/postern -n 127.0.0.1:25 -t inet -o smtpd_timeout=30s -o max_use=5").unwrap();
        assert_eq!(a.program, "smtpd");
        assert_eq!(a.config_dir, PathBuf::from("/etc/postern"));
        assert_eq!(a.service, "127.0.0.1:25");
        assert_eq!(a.transport, Transport::Inet);
        assert_eq!(
            a.overrides,
            vec![
                ("smtpd_timeout".to_owned(), "30s".to_owned()),
                ("max_use".to_owned(), "5".to_owned())
            ]
        );
        assert_eq!(Args::parse(a.to_argv()).unwrap(), a);
    }

    #[test]
    fn order_does_not_matter() {
        let a = parse("cleanup -t unix -n cleanup -c /c").unwrap();
        assert_eq!(a.transport, Transport::Unix);
        assert!(a.overrides.is_empty());
    }

    #[test]
    fn rejections() {
        assert_eq!(parse("x -c /c -n s"), Err(ArgsError::Required("-t")));
        assert_eq!(parse("x -n s -t unix"), Err(ArgsError::Required("-c")));
        assert_eq!(parse("x -c /c -t unix"), Err(ArgsError::Required("-n")));
        assert_eq!(
            parse("x -c /c -n s -t fifo"),
            Err(ArgsError::Transport("fifo".into()))
        );
        assert_eq!(
            parse("x -c /c -n s -t unix -c /d"),
            Err(ArgsError::Repeated("-c"))
        );
        assert_eq!(
            parse("x -c /c -n s -t unix -v"),
            Err(ArgsError::Unknown("-v".into()))
        );
        assert_eq!(
            parse("x -c /c -n s -t unix -o"),
            Err(ArgsError::MissingValue("-o".into()))
        );
        assert_eq!(
            parse("x -c /c -n s -t unix -o novalue"),
            Err(ArgsError::Override("novalue".into()))
        );
        assert_eq!(
            parse("x -c /c -n s -t unix -o =v"),
            Err(ArgsError::Override("=v".into()))
        );
        let long = "a".repeat(MAX_SERVICE_NAME + 1);
        assert!(matches!(
            parse(&format!("x -c /c -t unix -n {long}")),
            Err(ArgsError::ServiceName(_))
        ));
        let many = " -o a=b".repeat(MAX_OVERRIDES + 1);
        assert_eq!(
            parse(&format!("x -c /c -n s -t unix{many}")),
            Err(ArgsError::TooManyOverrides)
        );
        assert_eq!(Args::parse(Vec::<String>::new()), Err(ArgsError::NoProgram));
    }
}
