//! Helpers shared by the whole-system tests.

#![forbid(unsafe_code)]

pub mod harness;
pub mod instance;
pub mod probe;
pub mod rng;
