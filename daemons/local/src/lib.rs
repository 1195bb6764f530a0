//! The parts of the `local` delivery agent (the program is `main.rs`): the resolver of aliases
//! and `.forward`, the delivery children, forwarding through cleanup, account lookups, and the
//! command launcher. A library so that the delivery children can be tested from a
//! single-threaded program (`tests/children.rs`): `sandbox::fork_delivery_child` refuses a
//! process that ever had a second thread, as every libtest harness has.

#![forbid(unsafe_code)]

pub mod deliver;
pub mod forward;
pub mod launcher;
pub mod resolve;
pub mod users;
