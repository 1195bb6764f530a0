//! The master's view of its configuration: `main.cf` and `master.cf` turned into the table of
//! services it runs, each with its program, limits, listening address and the sandbox profile its
//! processes must report.
//!
//! Trusts: the configuration directory (root's, written by the administrator). It is still
//! checked whole before anything changes: a reload that fails to load leaves the running table
//! as it was. Nothing here reads bytes from another process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conf::{MainCf, MasterCf};
use privileges::RunAs;
use sandbox::Profile;

use crate::listen;
use crate::pool::Kind;

/// One runnable service.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// The master.cf service name (`127.0.0.1:2525`, `cleanup`).
    pub name: String,
    pub kind: Kind,
    /// The command: which daemon this is, and so which profile applies.
    pub role: String,
    pub program: PathBuf,
    pub overrides: Vec<(String, String)>,
    /// 0 = unlimited.
    pub process_limit: u32,
    pub address: Option<SocketAddr>,
    /// master.cf's wakeup column, in seconds (0 = never). A unix service with a wakeup is
    /// resident: the master starts one process at start-up and again whenever none runs.
    pub wakeup: u32,
    /// What the service's processes must have in force once they say `Ready`.
    pub profile: Profile,
}

impl ServiceSpec {
    /// How a service is named in logs: `name/type`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.name, self.kind.as_str())
    }
}

/// Everything the master runs by.
#[derive(Clone, Debug)]
pub struct Config {
    pub config_dir: PathBuf,
    /// Where the programs are; the spawner keeps the one of start-up (a change needs a restart).
    pub daemon_directory: PathBuf,
    /// What the master confines itself to (`privileges::master_profile`), applied once at
    /// start-up; a reload cannot widen it.
    pub master_profile: Profile,
    pub services: Vec<ServiceSpec>,
    pub queue_directory: PathBuf,
    pub stop_timeout: Duration,
    pub throttle_time: Duration,
    pub syslog_name: String,
    /// Empty: syslog.
    pub maillog_file: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Conf(#[from] conf::ConfError),
    #[error("{file}:{line}: service {service}: {problem}")]
    Service {
        file: PathBuf,
        line: usize,
        service: String,
        problem: String,
    },
    #[error("parameter {name}: {problem}")]
    Param { name: &'static str, problem: String },
}

fn service_error(file: &Path, line: usize, service: &str, problem: impl ToString) -> ConfigError {
    ConfigError::Service {
        file: file.to_owned(),
        line,
        service: service.to_owned(),
        problem: problem.to_string(),
    }
}

/// Reads both files and builds the service table.
pub fn load(config_dir: &Path, run_as: RunAs) -> Result<Config, ConfigError> {
    let main_path = config_dir.join("main.cf");
    let master_path = config_dir.join("master.cf");
    let main = MainCf::load(&main_path)?;
    let master = MasterCf::load(&master_path)?;
    build(config_dir, &main, &master, &master_path, run_as)
}

fn get(main: &MainCf, name: &'static str) -> Result<String, ConfigError> {
    main.get(name).map_err(ConfigError::Conf)
}

/// Builds the table from parsed files (separate from `load` for tests).
pub fn build(
    config_dir: &Path,
    main: &MainCf,
    master: &MasterCf,
    master_path: &Path,
    run_as: RunAs,
) -> Result<Config, ConfigError> {
    let daemon_directory = PathBuf::from(get(main, "daemon_directory")?.trim());
    let queue_directory = PathBuf::from(get(main, "queue_directory")?.trim());
    for (name, path) in [
        ("daemon_directory", &daemon_directory),
        ("queue_directory", &queue_directory),
    ] {
        if !path.is_absolute() {
            return Err(ConfigError::Param {
                name,
                problem: format!("{} is not an absolute path", path.display()),
            });
        }
    }
    let interfaces = get(main, "inet_interfaces")?;
    let protocols = get(main, "inet_protocols")?;
    let ipv6 = protocols.contains("all") || protocols.contains("ipv6");
    let default_host =
        listen::interface_address(&interfaces, ipv6).map_err(|e| ConfigError::Param {
            name: "inet_interfaces",
            problem: e.to_string(),
        })?;
    let mut services = Vec::new();
    for svc in master.services() {
        let line = svc.line;
        let kind = match svc.kind {
            conf::ServiceKind::Inet => Kind::Inet,
            conf::ServiceKind::Unix => Kind::Unix,
            other => {
                return Err(service_error(
                    master_path,
                    line,
                    &svc.name,
                    format!("type {other} is not supported by Postern (use inet or unix)"),
                ))
            }
        };
        if !svc.args.is_empty() {
            return Err(service_error(
                master_path,
                line,
                &svc.name,
                format!(
                    "arguments {:?}: only -o name=value options are passed to daemons",
                    svc.args
                ),
            ));
        }
        if svc.command.is_empty() || svc.command.contains('/') || svc.command.starts_with('.') {
            return Err(service_error(
                master_path,
                line,
                &svc.name,
                format!(
                    "command {:?} must be a program name in daemon_directory",
                    svc.command
                ),
            ));
        }
        let settings = svc.settings(main)?;
        let profile = privileges::profile(&svc.command, &settings, run_as)
            .map_err(|e| service_error(master_path, line, &svc.name, e))?;
        let process_limit = svc.process_limit(main)?;
        let address = match kind {
            Kind::Inet => Some(
                listen::service_address(&svc.name, default_host)
                    .map_err(|e| service_error(master_path, line, &svc.name, e))?,
            ),
            Kind::Unix => None,
        };
        services.push(ServiceSpec {
            name: svc.name.clone(),
            kind,
            role: svc.command.clone(),
            program: privileges::program_path(&daemon_directory, &svc.command),
            overrides: svc.overrides.clone(),
            process_limit,
            address,
            wakeup: svc.wakeup.seconds,
            profile,
        });
    }
    let throttle_time = main.get_time("service_throttle_time")?;
    let master_profile =
        privileges::master_profile(main, config_dir, run_as).map_err(|e| ConfigError::Param {
            name: "master",
            problem: e.to_string(),
        })?;
    Ok(Config {
        config_dir: config_dir.to_owned(),
        daemon_directory,
        master_profile,
        services,
        queue_directory,
        stop_timeout: main.get_time("master_stop_timeout")?,
        throttle_time,
        syslog_name: get(main, "syslog_name")?.trim().to_owned(),
        maillog_file: get(main, "maillog_file")?.trim().to_owned(),
    })
}
