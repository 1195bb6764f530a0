//! Account lookups through the `proxymap` service, as smtpd (a local recipient at `RCPT`) and
//! `local` (a recipient's account and groups) make them: one channel for the life of the
//! process, opened at the first lookup; one request and one answer per lookup (a round trip of
//! the order of 120 µs).
//!
//! Trusts: nothing proxymap sends; its answer is decoded by `protocol` into a [`FromProxymap`].
//! A broken or closed channel, or no answer within the link's timeout, is a [`LookupError`]
//! that each caller maps to a temporary failure (never "unknown user"). A lookup is
//! idempotent, so a channel found broken (its proxymap process ended since the last lookup)
//! is replaced once and the question asked again.

use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use protocol::proxymap::{FromProxymap, Key, Table, ToProxymap};
use protocol::{Channel, ChannelError};

use crate::cleanup_client::Connect;
use crate::poll_timeout;

/// The master.cf service name clients ask the master for.
pub const SERVICE: &str = "proxymap";

/// How long proxymap may take to answer (a stat, at most a re-read of a bounded file).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a lookup got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no channel to proxymap: {0}")]
    Connect(String),
    #[error("proxymap channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("proxymap channel: no answer within {0:?}")]
    Timeout(Duration),
    #[error("proxymap channel: {0}")]
    Poll(nix::Error),
    #[error("not a name that can be looked up: {0}")]
    Key(protocol::InvalidValue),
}

/// The process's link to proxymap.
pub struct ProxymapLink {
    channel: Option<Channel>,
    timeout: Duration,
}

impl ProxymapLink {
    pub fn new(timeout: Duration) -> ProxymapLink {
        ProxymapLink {
            channel: None,
            timeout,
        }
    }

    /// Looks `key` up in `table`: proxymap's answer, or why there is none.
    pub fn lookup(
        &mut self,
        connect: &mut Connect<'_>,
        table: Table,
        key: &str,
    ) -> Result<FromProxymap, LookupError> {
        let key = Key::new(key).map_err(LookupError::Key)?;
        let request = ToProxymap::Lookup { table, key };
        let reused = self.channel.is_some();
        match self.ask(connect, &request) {
            Ok(answer) => Ok(answer),
            Err(_) if reused => {
                // The kept channel may belong to a proxymap process that has ended.
                self.channel = None;
                self.ask(connect, &request)
            }
            Err(e) => Err(e),
        }
    }

    fn ask(
        &mut self,
        connect: &mut Connect<'_>,
        request: &ToProxymap,
    ) -> Result<FromProxymap, LookupError> {
        if self.channel.is_none() {
            self.channel = Some(connect().map_err(LookupError::Connect)?);
        }
        let result = self.round_trip(request);
        if result.is_err() {
            self.channel = None;
        }
        result
    }

    fn round_trip(&self, request: &ToProxymap) -> Result<FromProxymap, LookupError> {
        let channel = self
            .channel
            .as_ref()
            .ok_or(LookupError::Channel(ChannelError::PeerClosed))?;
        channel.send(request, &[])?;
        loop {
            let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, poll_timeout(self.timeout)) {
                Ok(0) => return Err(LookupError::Timeout(self.timeout)),
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(LookupError::Poll(e)),
            }
        }
        Ok(channel.recv::<FromProxymap>()?.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_and_a_dead_channel_is_replaced_once() {
        let (first, server1) = Channel::pair().unwrap();
        let (second, server2) = Channel::pair().unwrap();
        let mut channels = vec![second, first].into_iter().rev();
        let mut connect = || channels.next().ok_or_else(|| "refused".to_owned());
        let mut link = ProxymapLink::new(Duration::from_secs(5));
        let answer = std::thread::spawn(move || {
            let got = server1.recv::<ToProxymap>().unwrap().msg;
            server1.send(&FromProxymap::NotFound, &[]).unwrap();
            got
        });
        let reply = link.lookup(&mut connect, Table::Passwd, "alice").unwrap();
        assert_eq!(reply, FromProxymap::NotFound);
        let ToProxymap::Lookup { table, key } = answer.join().unwrap();
        assert_eq!((table, key.as_str()), (Table::Passwd, "alice"));
        // server1 is gone now: the next lookup goes to a new channel.
        let answer = std::thread::spawn(move || {
            server2.recv::<ToProxymap>().unwrap();
            server2
                .send(&FromProxymap::Groups(vec![8].try_into().unwrap()), &[])
                .unwrap();
        });
        let reply = link.lookup(&mut connect, Table::GroupsOf, "bob").unwrap();
        assert_eq!(reply, FromProxymap::Groups(vec![8].try_into().unwrap()));
        answer.join().unwrap();
        // No channel left to get: an error, not an answer.
        assert!(matches!(
            link.lookup(&mut connect, Table::Passwd, "carol"),
            Err(LookupError::Connect(_))
        ));
        assert!(matches!(
            link.lookup(&mut connect, Table::Passwd, "../etc/shadow"),
            Err(LookupError::Key(_))
        ));
    }
}
