//! Postern's wire formats: every decoder of bytes that come from another process.
//!
//! Trusts: nothing it is handed. Every byte read from a channel, a queue file or an SMTP
//! client is gossip until a function of this crate has turned it into a validated type.
//! Every type with a meaning beyond its bits (`Domain`, `Mailbox`, `QueueId`,
//! `ServiceName`, the bounded collections) has private fields and fallible
//! constructors, and its serde `Deserialize` goes through the same constructor, so
//! no invalid value can exist, whether built in code or decoded from a peer.
//!
//! Does not trust: the peer's lengths (every collection is bounded in its type and
//! checked before anything is allocated), its framing (one datagram is exactly one
//! message, nothing left over), or its file descriptors (accepted only where the
//! message kind carries them, closed otherwise).

#![forbid(unsafe_code)]

pub mod address;
pub mod bounded;
pub mod channel;
pub mod cleanup;
pub mod codec;
pub mod control;
pub mod delivery;
pub mod fuzz;
pub mod header;
pub mod local;
pub mod proxymap;
pub mod queue;
pub mod queue_id;
pub mod service;
pub mod smtp;
pub mod spawn;

#[cfg(test)]
mod testing;

pub use address::{
    parse_path, AddressError, AddressLiteral, Domain, ForwardPath, Host, Mailbox, Path, ReversePath,
};
pub use bounded::{BoundedBytes, BoundedString, BoundedVec, LengthError};
pub use channel::{Channel, ChannelError, Credentials, Received, MAX_DATAGRAM};
pub use cleanup::{FromCleanup, ToCleanup, ToQmgr};
pub use codec::{decode, encode, DecodeError, EncodeError, InvalidValue, Message};
pub use control::{FromMaster, SandboxReport, ToMaster, PROTOCOL_VERSION};
pub use queue::{Envelope, QueueFile, QueueFileError, QueueFileWriter, QueueLimits, ResultRecord};
pub use queue_id::{QueueId, QueueIdError};
pub use service::{ServiceName, ServiceNameError};
pub use smtp::{Command, CommandError, EnhancedStatus, Reply};
