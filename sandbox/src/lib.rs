//! Postern's privilege separation: ids, capabilities, `no_new_privs`,
//! landlock and seccomp for every daemon, the way the master starts
//! daemons, and the probes `postern check` runs.
//!
//! Trusts: the profiles (declared in code, reviewed) and the kernel. It
//! reads no bytes from other processes. This is the only Postern crate with
//! `unsafe` code, all of it in the private `sys` module.
//!
//! A daemon's `main` reads as the recipe:
//!
//! ```no_run
//! # fn main() -> Result<(), sandbox::Error> {
//! use sandbox::{syscalls, Identity, Profile};
//! let profile = Profile {
//!     identity: Some(Identity { uid: 61001, gid: 61001, groups: vec![] }),
//!     syscalls: syscalls::set(&[syscalls::BASE, syscalls::ACCEPT_TCP]),
//!     ..Profile::new("smtpd")
//! };
//! // INVARIANT: single-threaded, first request not yet read.
//! let report = sandbox::apply(&profile)?;
//! // ... send `report` to the master, then serve.
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]

mod apply;
mod child;
mod error;
mod filter;
pub mod probe;
mod profile;
mod report;
pub mod spawn;
#[allow(unsafe_code)]
mod sys;
pub mod syscalls;

pub use apply::{apply, LANDLOCK_ABI};
pub use child::{
    close_descriptors_except, confine_delivery, fork_delivery_child, fork_helper, Confinement,
};
pub use error::{Error, ProfileError};
pub use probe::{ProbeResult, ProbeTargets};
pub use profile::{
    Capability, Enforcement, FsAccess, FsRule, Identity, ParseEnforcementError, Profile, TcpPorts,
    Violation, PRIVILEGE_MAP_HEADER,
};
pub use report::{CapSets, LandlockStatus, Report, Shortfall, Step};
pub use spawn::{inherited_fd, spawn, Spawn, SpawnError};
pub use sys::ForkError;
pub use syscalls::Syscall;

/// Run every probe of [`probe::run`].
pub fn probe(targets: &ProbeTargets) -> Vec<ProbeResult> {
    probe::run(targets)
}
