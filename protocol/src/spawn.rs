//! The channel between the master and its spawner: the one process that starts daemons.
//!
//! The master confines itself once its listeners are bound (no `execve`, no `/etc`); before
//! that it forks the spawner, which keeps the master's original reach and does one thing: on a
//! [`ToSpawner::Start`] it execs `daemon_directory/COMMAND` for a role that `privileges`
//! declares, as a child of the master, with the descriptors that travel with the request.
//!
//! Trusts: nothing in either direction. The spawner treats the master as possibly compromised:
//! every field is bounded and free of NUL and control characters here, and the spawner checks
//! the command against the declared roles and builds the daemon's argv itself (its own
//! configuration directory, never one from the request).

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::codec::{InvalidValue, Message};
use crate::control::Detail;
use crate::service::ServiceName;

/// Longest master.cf service name or `-o` value passed on (`[::1]:2525` is 10 octets).
pub const MAX_FIELD: usize = 4096;
/// Most `-o name=value` overrides of one service.
pub const MAX_OVERRIDES: usize = 64;

pub type Field = BoundedString<MAX_FIELD>;

/// The master's request to its spawner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToSpawner {
    /// Start one process of `command`. Carries two descriptors, three with `listener`: the
    /// daemon's end of its control channel (fd 3), the pipe its stdout and stderr go to, and
    /// the listening socket of an inet service (fd 4).
    Start {
        command: ServiceName,
        service: Field,
        listener: bool,
        overrides: BoundedVec<(Field, Field), MAX_OVERRIDES>,
    },
}

/// The spawner's answer to one `Start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromSpawner {
    /// The program was executed; `pid` is a child of the master.
    Started { pid: u32 },
    /// Nothing was started, and why (the master logs it).
    Refused { reason: Detail },
}

/// Whether `s` can be an `execve` argument that a log line shows as it is.
fn plain(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

impl Message for ToSpawner {
    fn kind(&self) -> &'static str {
        match self {
            ToSpawner::Start { .. } => "Start",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            ToSpawner::Start { listener, .. } => 2 + usize::from(*listener),
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        let ToSpawner::Start {
            service, overrides, ..
        } = self;
        let names_ok = overrides.iter().all(|(name, _)| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
        let fields_ok = !service.is_empty()
            && plain(service)
            && overrides.iter().all(|(_, value)| plain(value));
        if names_ok && fields_ok {
            Ok(())
        } else {
            Err(InvalidValue::Spawn(
                "a service name, parameter name or value the spawner does not pass on",
            ))
        }
    }
}

impl Message for FromSpawner {
    fn kind(&self) -> &'static str {
        match self {
            FromSpawner::Started { .. } => "Started",
            FromSpawner::Refused { .. } => "Refused",
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            FromSpawner::Started { pid } if *pid <= 1 || *pid > i32::MAX as u32 => {
                Err(InvalidValue::Spawn("a pid that cannot be a daemon's"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn start(service: &str, overrides: Vec<(&str, &str)>) -> ToSpawner {
        ToSpawner::Start {
            command: ServiceName::try_from("smtpd".to_owned()).unwrap(),
            service: Field::try_from(service).unwrap(),
            listener: true,
            overrides: overrides
                .into_iter()
                .map(|(n, v)| (Field::try_from(n).unwrap(), Field::try_from(v).unwrap()))
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        }
    }

    #[test]
    fn a_start_round_trips_with_its_descriptor_count() {
        let msg = start(
            "127.0.0.1:2525",
            vec![("smtpd_banner", "$myhostname ESMTP")],
        );
        assert_eq!(msg.fd_count(), 3);
        let back: ToSpawner = decode(&encode(&msg).unwrap()).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn control_characters_and_odd_names_are_refused_on_decode() {
        for bad in [
            start("smtp\n", vec![]),
            start("", vec![]),
            start("smtp", vec![("Name", "x")]),
            start("smtp", vec![("name", "a\u{1b}[2J")]),
            start("smtp", vec![("", "x")]),
        ] {
            let bytes = postcard::to_allocvec(&bad).unwrap();
            assert!(decode::<ToSpawner>(&bytes).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_pid_of_init_or_beyond_the_kernel_range_is_refused() {
        for pid in [0, 1, u32::MAX] {
            let bytes = postcard::to_allocvec(&FromSpawner::Started { pid }).unwrap();
            assert!(decode::<FromSpawner>(&bytes).is_err(), "pid {pid}");
        }
        let ok = FromSpawner::Started { pid: 4242 };
        assert_eq!(decode::<FromSpawner>(&encode(&ok).unwrap()).unwrap(), ok);
    }
}
