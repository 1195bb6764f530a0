//! The message the test service's roles exchange over a brokered channel.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probe {
    Ping { pid: u32 },
    Pong { pid: u32 },
}

impl protocol::Message for Probe {
    fn kind(&self) -> &'static str {
        match self {
            Probe::Ping { .. } => "Ping",
            Probe::Pong { .. } => "Pong",
        }
    }
}
