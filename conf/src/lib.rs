//! Postern's configuration: `main.cf` and `master.cf` in Postfix's syntax, with Postfix's
//! parameter names and defaults.
//!
//! Trusts: nothing in the files. They are written by the administrator, not by a peer, but
//! they are read by the privileged master, so reading is bounded (file size, expansion
//! depth and size), and every error names the file, line and column and, for a misspelt
//! name, the nearest known one. A parsed `MainCf` or `MasterCf` holds only validated
//! values.
//!
//! - `params`: the table of known parameters (name, default, kind, description);
//! - `main_cf`: `name = value`, `$name` expansion, typed getters, `postconf`-style output;
//! - `master_cf`: the eight service columns and `-o` overrides;
//! - `fuzz`: entry points for the fuzz targets.
//!
//! Decisions where Postfix is silent or Postern differs (each explained where it is made):
//! - an unknown `main.cf` name is an error with a suggestion, unless another setting uses it
//!   as `$name`; a `$name` that names nothing is an error (`main_cf`);
//! - `${name?text}` / `${name:text}` test the expanded value of `name` (`expand`);
//! - daemon identities and `setgid_group` may never be root (`value::Kind::User`);
//! - `master.cf` chroot `y` is accepted with a warning and ignored; private `y` on an inet
//!   service is an error; commands are bare names; `-o` names must be known (`master_cf`);
//! - `local_recipient_maps` defaults to `unix:passwd.byname $alias_maps` (Postern has no
//!   `proxymap`); directory defaults use `postern` where Postfix uses `postfix`.

#![forbid(unsafe_code)]

mod error;
mod expand;
pub mod fuzz;
mod main_cf;
mod master_cf;
mod params;
mod source;
mod suggest;
mod value;

pub use error::{ConfError, ConfWarning, Problem, MAX_QUOTED_CHARS};
pub use expand::{MAX_EXPANDED_BYTES, MAX_NESTING};
pub use main_cf::{Environment, MainCf};
pub use master_cf::{
    Endpoint, Host, MasterCf, Service, ServiceKind, Wakeup, MAX_COLUMN_NUMBER, MAX_NAME_LEN,
    PORT_NAMES,
};
pub use params::{param, params, DefaultValue, Param};
pub use source::MAX_FILE_BYTES;
pub use value::{Account, Group, Kind, TimeUnit, MAX_ACCOUNT_NAME, MAX_INT, MAX_SIZE};
