//! The control channel between the master and each daemon (fd 3 of every daemon).
//!
//! Trusts: nothing in either direction. The master decodes `ToMaster` from a
//! process that may run an attacker's code; a daemon decodes `FromMaster` with the
//! same strictness, because one decoder is simpler to trust than two. Every field is
//! a validated type; the versions are checked by `Message::validate`; the fds that
//! travel with `Connected` and `Incoming` are counted by the channel.
//!
//! Version negotiation is the first exchange: a daemon sends `Hello`, the master
//! answers `Welcome`, both with [`PROTOCOL_VERSION`]. A different version is refused
//! on decode, so the two ends of a channel always run the same schema.
//!
//! Start-up is `Hello`, `Welcome`, `Ready`, `Go`: a daemon applies its sandbox, says
//! `Ready` with its report, and serves nothing (accepts no connection, reads no
//! channel) until the master has checked the report and `/proc/PID/status` against the
//! profile and answered `Go`. A master that finds a shortfall kills the process, which
//! therefore never gets `Go`; a daemon without `Go` within [`START_TIMEOUT`] exits.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::codec::{deserialize_validated, InvalidValue, Message};
use crate::service::ServiceName;

/// The control protocol's version; raised whenever a message changes shape.
/// 2: `FromMaster::Go`.
pub const PROTOCOL_VERSION: u32 = 2;

/// How long start-up may take, from the exec to `Go`: the master kills a process that
/// has not said `Ready` within it, and a daemon that said `Ready` exits if `Go` has not
/// come within it. Start-up is reading the configuration and applying the sandbox
/// (milliseconds); a process, or a master, still silent after this is hung or hostile.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon's message to the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToMaster {
    /// The first message a daemon sends.
    Hello { version: u32 },
    /// Sent once the sandbox is applied, before the first request is read; the daemon
    /// then waits for `Go`.
    Ready { report: SandboxReport },
    /// Serving a client or a request.
    Busy,
    /// Waiting for work.
    Idle,
    /// Asks for a channel to another service; answered by `Connected` or `Refused`.
    Connect { service: ServiceName },
    /// The daemon is about to exit, and why.
    Exit { reason: ExitReason },
}

/// The master's message to a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromMaster {
    /// The answer to `Hello`.
    Welcome { version: u32 },
    /// Carries one fd: this daemon's end of a new channel to `service`.
    Connected { service: ServiceName },
    /// `Connect` was refused.
    Refused {
        service: ServiceName,
        reason: RefusalReason,
    },
    /// Carries one fd: a new channel from a client of the service `from`.
    Incoming { from: ServiceName },
    /// Finish the current work, send `Exit`, and exit.
    Stop,
    /// The answer to `Ready`: the report and the kernel's view of the process match the
    /// profile; the daemon may now accept connections and read channels.
    Go,
}

fn check_version(version: u32) -> Result<(), InvalidValue> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(InvalidValue::UnknownVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        })
    }
}

impl Message for ToMaster {
    fn kind(&self) -> &'static str {
        match self {
            ToMaster::Hello { .. } => "Hello",
            ToMaster::Ready { .. } => "Ready",
            ToMaster::Busy => "Busy",
            ToMaster::Idle => "Idle",
            ToMaster::Connect { .. } => "Connect",
            ToMaster::Exit { .. } => "Exit",
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            ToMaster::Hello { version } => check_version(*version),
            _ => Ok(()),
        }
    }
}

impl Message for FromMaster {
    fn kind(&self) -> &'static str {
        match self {
            FromMaster::Welcome { .. } => "Welcome",
            FromMaster::Connected { .. } => "Connected",
            FromMaster::Refused { .. } => "Refused",
            FromMaster::Incoming { .. } => "Incoming",
            FromMaster::Stop => "Stop",
            FromMaster::Go => "Go",
        }
    }

    fn fd_count(&self) -> usize {
        match self {
            FromMaster::Connected { .. } | FromMaster::Incoming { .. } => 1,
            _ => 0,
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            FromMaster::Welcome { version } => check_version(*version),
            _ => Ok(()),
        }
    }
}

/// Why the master refused a `Connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// No such service in `master.cf`.
    UnknownService,
    /// The access matrix does not connect the asking service to this one.
    NotPermitted,
    /// The service is at its `process_limit` or throttled after crashes.
    Unavailable,
    /// The master is stopping.
    ShuttingDown,
}

/// Why a daemon exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// Served `max_use` requests.
    MaxUse,
    /// Idle for `max_idle` seconds.
    MaxIdle,
    /// The master sent `Stop`.
    Stopped,
    /// An error the daemon cannot recover from.
    Fatal { detail: Detail },
}

/// One log line's worth of text: the master logs a daemon's `Fatal` detail, and a
/// longer one would only serve to flood the log.
pub const MAX_DETAIL_LEN: usize = 256;

/// Why a string is not a `Detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetailError {
    #[error("detail text is {len} octets, more than {MAX_DETAIL_LEN}")]
    TooLong { len: usize },
    #[error("detail text has a control character at octet {offset}")]
    Control { offset: usize },
}

/// Short human-readable text from another process, safe to put in a log line: at
/// most [`MAX_DETAIL_LEN`] octets and no control characters (no line breaks, no
/// terminal escapes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Detail(String);

impl Detail {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `text` made into a detail: control characters become spaces, and it is cut (at a
    /// character boundary) to [`MAX_DETAIL_LEN`] octets.
    pub fn lossy(text: &str) -> Detail {
        let mut out = String::with_capacity(text.len().min(MAX_DETAIL_LEN));
        for ch in text.chars() {
            let ch = if ch.is_control() { ' ' } else { ch };
            if out.len() + ch.len_utf8() > MAX_DETAIL_LEN {
                break;
            }
            out.push(ch);
        }
        Detail(out)
    }

    fn check(s: &str) -> Result<(), DetailError> {
        if s.len() > MAX_DETAIL_LEN {
            return Err(DetailError::TooLong { len: s.len() });
        }
        match s.char_indices().find(|(_, ch)| ch.is_control()) {
            Some((offset, _)) => Err(DetailError::Control { offset }),
            None => Ok(()),
        }
    }
}

impl TryFrom<String> for Detail {
    type Error = DetailError;
    fn try_from(s: String) -> Result<Self, DetailError> {
        Self::check(&s)?;
        Ok(Detail(s))
    }
}

impl TryFrom<&str> for Detail {
    type Error = DetailError;
    fn try_from(s: &str) -> Result<Self, DetailError> {
        Self::check(s)?;
        Ok(Detail(s.to_owned()))
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Detail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

deserialize_validated!(Detail, String, Detail::try_from);

/// What a daemon's sandbox enforces, as the daemon read it back after applying it.
/// The master compares it with the service's profile; this type only guarantees
/// that the report is internally consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// Real, effective and saved uid (they are equal after the sandbox).
    pub uid: u32,
    /// Real, effective and saved gid.
    pub gid: u32,
    pub capabilities: Capabilities,
    pub no_new_privs: bool,
    pub landlock: LandlockReport,
    /// A seccomp filter is installed.
    pub seccomp: bool,
    /// Running as a non-root user: no uid change was attempted.
    pub dev_mode: bool,
}

/// Why a sandbox report is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("sandbox report: effective capabilities {extra:#x} are not permitted")]
    EffectiveNotPermitted { extra: u64 },
    #[error(
        "sandbox report: ambient capabilities {extra:#x} are not both permitted and inheritable"
    )]
    AmbientNotAllowed { extra: u64 },
    #[error("sandbox report: landlock is enforced but its ABI is 0")]
    LandlockWithoutAbi,
}

/// The five capability sets as bit masks (bit n = capability n), holding the
/// kernel's invariants: effective within permitted, ambient within permitted and
/// inheritable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
    bounding: u64,
}

#[derive(Deserialize)]
struct CapabilitiesWire {
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
    bounding: u64,
}

impl Capabilities {
    /// No capability in any set.
    pub const NONE: Capabilities = Capabilities {
        effective: 0,
        permitted: 0,
        inheritable: 0,
        ambient: 0,
        bounding: 0,
    };

    pub fn new(
        effective: u64,
        permitted: u64,
        inheritable: u64,
        ambient: u64,
        bounding: u64,
    ) -> Result<Capabilities, ReportError> {
        if effective & !permitted != 0 {
            return Err(ReportError::EffectiveNotPermitted {
                extra: effective & !permitted,
            });
        }
        let ambient_allowed = permitted & inheritable;
        if ambient & !ambient_allowed != 0 {
            return Err(ReportError::AmbientNotAllowed {
                extra: ambient & !ambient_allowed,
            });
        }
        Ok(Capabilities {
            effective,
            permitted,
            inheritable,
            ambient,
            bounding,
        })
    }

    pub fn effective(&self) -> u64 {
        self.effective
    }
    pub fn permitted(&self) -> u64 {
        self.permitted
    }
    pub fn inheritable(&self) -> u64 {
        self.inheritable
    }
    pub fn ambient(&self) -> u64 {
        self.ambient
    }
    pub fn bounding(&self) -> u64 {
        self.bounding
    }
}

deserialize_validated!(Capabilities, CapabilitiesWire, |w| Capabilities::new(
    w.effective,
    w.permitted,
    w.inheritable,
    w.ambient,
    w.bounding
));

/// Landlock's outcome, as the landlock crate reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LandlockStatus {
    NotEnforced,
    PartiallyEnforced,
    FullyEnforced,
}

/// The landlock ABI the kernel offers (0: none) and what was enforced with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LandlockReport {
    abi: u32,
    status: LandlockStatus,
}

#[derive(Deserialize)]
struct LandlockReportWire {
    abi: u32,
    status: LandlockStatus,
}

impl LandlockReport {
    pub fn new(abi: u32, status: LandlockStatus) -> Result<LandlockReport, ReportError> {
        if abi == 0 && status != LandlockStatus::NotEnforced {
            return Err(ReportError::LandlockWithoutAbi);
        }
        Ok(LandlockReport { abi, status })
    }

    pub fn abi(&self) -> u32 {
        self.abi
    }

    pub fn status(&self) -> LandlockStatus {
        self.status
    }
}

deserialize_validated!(LandlockReport, LandlockReportWire, |w| LandlockReport::new(
    w.abi, w.status
));

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{decode, encode, DecodeError};
    use crate::testing::service_name;

    fn capabilities() -> impl Strategy<Value = Capabilities> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(e, p, i, a, b)| Capabilities::new(e & p, p, i, a & p & i, b).unwrap())
    }

    fn landlock() -> impl Strategy<Value = LandlockReport> {
        (
            1..=10u32,
            prop_oneof![
                Just(LandlockStatus::NotEnforced),
                Just(LandlockStatus::PartiallyEnforced),
                Just(LandlockStatus::FullyEnforced),
            ],
        )
            .prop_map(|(abi, status)| LandlockReport::new(abi, status).unwrap())
    }

    fn report() -> impl Strategy<Value = SandboxReport> {
        (
            any::<u32>(),
            any::<u32>(),
            capabilities(),
            any::<bool>(),
            landlock(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(uid, gid, capabilities, no_new_privs, landlock, seccomp, dev_mode)| {
                    SandboxReport {
                        uid,
                        gid,
                        capabilities,
                        no_new_privs,
                        landlock,
                        seccomp,
                        dev_mode,
                    }
                },
            )
    }

    fn detail() -> impl Strategy<Value = Detail> {
        "[^\\p{Cc}]{0,40}".prop_map(|s| Detail::try_from(s).unwrap())
    }

    fn to_master() -> impl Strategy<Value = ToMaster> {
        prop_oneof![
            Just(ToMaster::Hello {
                version: PROTOCOL_VERSION
            }),
            report().prop_map(|report| ToMaster::Ready { report }),
            Just(ToMaster::Busy),
            Just(ToMaster::Idle),
            service_name().prop_map(|service| ToMaster::Connect { service }),
            prop_oneof![
                Just(ExitReason::MaxUse),
                Just(ExitReason::MaxIdle),
                Just(ExitReason::Stopped),
                detail().prop_map(|detail| ExitReason::Fatal { detail }),
            ]
            .prop_map(|reason| ToMaster::Exit { reason }),
        ]
    }

    fn from_master() -> impl Strategy<Value = FromMaster> {
        prop_oneof![
            Just(FromMaster::Welcome {
                version: PROTOCOL_VERSION
            }),
            service_name().prop_map(|service| FromMaster::Connected { service }),
            (
                service_name(),
                prop_oneof![
                    Just(RefusalReason::UnknownService),
                    Just(RefusalReason::NotPermitted),
                    Just(RefusalReason::Unavailable),
                    Just(RefusalReason::ShuttingDown),
                ]
            )
                .prop_map(|(service, reason)| FromMaster::Refused { service, reason }),
            service_name().prop_map(|from| FromMaster::Incoming { from }),
            Just(FromMaster::Stop),
            Just(FromMaster::Go),
        ]
    }

    proptest! {
        #[test]
        fn to_master_round_trips(msg in to_master()) {
            let bytes = encode(&msg).unwrap();
            prop_assert_eq!(decode::<ToMaster>(&bytes).unwrap(), msg);
        }

        #[test]
        fn from_master_round_trips(msg in from_master()) {
            let bytes = encode(&msg).unwrap();
            prop_assert_eq!(decode::<FromMaster>(&bytes).unwrap(), msg);
        }

        #[test]
        fn report_round_trips(report in report()) {
            let bytes = postcard::to_allocvec(&report).unwrap();
            prop_assert_eq!(postcard::from_bytes::<SandboxReport>(&bytes).unwrap(), report);
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        let hello = postcard::to_allocvec(&ToMaster::Hello { version: 1 }).unwrap();
        assert_eq!(
            decode::<ToMaster>(&hello),
            Err(DecodeError::Invalid(InvalidValue::UnknownVersion {
                got: 1,
                supported: PROTOCOL_VERSION
            }))
        );
        let welcome = postcard::to_allocvec(&FromMaster::Welcome { version: 0 }).unwrap();
        assert!(matches!(
            decode::<FromMaster>(&welcome),
            Err(DecodeError::Invalid(InvalidValue::UnknownVersion {
                got: 0,
                ..
            }))
        ));
    }

    #[test]
    fn fd_counts_and_kinds() {
        let svc = ServiceName::try_from("cleanup").unwrap();
        for (msg, kind, fds) in [
            (FromMaster::Welcome { version: 1 }, "Welcome", 0),
            (
                FromMaster::Connected {
                    service: svc.clone(),
                },
                "Connected",
                1,
            ),
            (
                FromMaster::Refused {
                    service: svc.clone(),
                    reason: RefusalReason::NotPermitted,
                },
                "Refused",
                0,
            ),
            (FromMaster::Incoming { from: svc.clone() }, "Incoming", 1),
            (FromMaster::Stop, "Stop", 0),
            (FromMaster::Go, "Go", 0),
        ] {
            assert_eq!((msg.kind(), msg.fd_count()), (kind, fds));
        }
        assert_eq!(ToMaster::Connect { service: svc }.fd_count(), 0);
        assert_eq!(ToMaster::Idle.kind(), "Idle");
    }

    #[test]
    fn go_is_one_byte_and_carries_nothing() {
        // `Go` is variant 5 of `FromMaster`; anything after it is a framing error.
        let bytes = encode(&FromMaster::Go).unwrap();
        assert_eq!(bytes, [5u8]);
        assert_eq!(decode::<FromMaster>(&bytes), Ok(FromMaster::Go));
        assert!(decode::<FromMaster>(&[5u8, 0]).is_err());
    }

    #[test]
    fn bad_service_name_is_refused() {
        // Variant 4 is `Connect`.
        let bytes = postcard::to_allocvec(&(4u8, "../../bin/sh")).unwrap();
        assert!(matches!(
            decode::<ToMaster>(&bytes),
            Err(DecodeError::Invalid(InvalidValue::ServiceName(_)))
        ));
    }

    #[test]
    fn inconsistent_reports_are_refused() {
        assert_eq!(
            Capabilities::new(0b11, 0b01, 0, 0, 0),
            Err(ReportError::EffectiveNotPermitted { extra: 0b10 })
        );
        assert_eq!(
            Capabilities::new(0, 0b11, 0b01, 0b11, 0),
            Err(ReportError::AmbientNotAllowed { extra: 0b10 })
        );
        assert_eq!(
            LandlockReport::new(0, LandlockStatus::FullyEnforced),
            Err(ReportError::LandlockWithoutAbi)
        );
        assert!(LandlockReport::new(0, LandlockStatus::NotEnforced).is_ok());

        // `Ready` (variant 1) with raw capability sets and landlock (abi, status).
        let ready = |effective: u64, permitted: u64, abi: u32| {
            let report = (0u32, 0u32, (effective, permitted, 0u64, 0u64, 0u64));
            let rest = (true, (abi, 2u8), true, false);
            decode::<ToMaster>(&postcard::to_allocvec(&(1u8, report, rest)).unwrap())
        };
        assert!(ready(1, 1, 7).is_ok());
        assert_eq!(
            ready(1, 0, 7),
            Err(DecodeError::Invalid(InvalidValue::SandboxReport(
                ReportError::EffectiveNotPermitted { extra: 1 }
            )))
        );
        assert_eq!(
            ready(1, 1, 0),
            Err(DecodeError::Invalid(InvalidValue::SandboxReport(
                ReportError::LandlockWithoutAbi
            )))
        );
    }

    #[test]
    fn detail_text_is_bounded_and_printable() {
        assert!(Detail::try_from("queue directory not writable: EACCES").is_ok());
        assert_eq!(
            Detail::try_from("a".repeat(MAX_DETAIL_LEN + 1)),
            Err(DetailError::TooLong {
                len: MAX_DETAIL_LEN + 1
            })
        );
        for s in ["line\nbreak", "esc\u{1b}[31m", "nul\0", "c1\u{9b}"] {
            assert!(
                matches!(Detail::try_from(s), Err(DetailError::Control { .. })),
                "{s:?}"
            );
        }
        // `Exit` (variant 5), `Fatal` (variant 3), then a detail with a line break.
        let bytes = postcard::to_allocvec(&(5u8, 3u8, "a\nforged log line")).unwrap();
        assert!(matches!(
            decode::<ToMaster>(&bytes),
            Err(DecodeError::Invalid(InvalidValue::Detail(_)))
        ));
    }
}
