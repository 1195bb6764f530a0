//! The client connection: a bounded input buffer, the command-line reader, and the
//! reply buffer that implements pipelining.
//!
//! Trusts: nothing the client sends. Memory per connection is bounded whatever it
//! sends: input is read into a fixed buffer of [`INPUT_BUFFER`] octets, and a command
//! line keeps at most `line_length_limit` octets, the rest of a longer line being
//! discarded as it arrives.
//!
//! Every read waits at most `smtpd_timeout` (with `poll`, so the sandbox needs no
//! socket option for it); every write is bounded by the same time through the socket's
//! send timeout. Replies are buffered and written only when the next read would block,
//! so a pipelining client gets a group of replies in one write (RFC 2920 section 3.2).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use daemon::poll_timeout;
use nix::poll::{PollFd, PollFlags};
use protocol::Reply;

/// Octets read from the client at a time: enough for a pipelined group of commands
/// or a good piece of message text, small enough to keep sessions cheap.
pub const INPUT_BUFFER: usize = 16 * 1024;

/// Why the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("timeout")]
    Timeout,
    #[error("lost connection")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One command line as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Without its line end; at most `limit` octets (longer lines are cut).
    pub text: Vec<u8>,
    /// The line ended in a LF without a CR before it.
    pub bare_lf: bool,
    /// The line was longer than `limit`; what is in `text` is its start.
    pub too_long: bool,
}

pub struct Conn {
    stream: TcpStream,
    input: Box<[u8]>,
    start: usize,
    end: usize,
    output: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    pub fn new(stream: TcpStream, timeout: Duration) -> Result<Conn, ConnError> {
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            stream,
            input: vec![0; INPUT_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            output: Vec::new(),
            timeout,
        })
    }

    /// Queues a reply; it is written before the next read that would block.
    pub fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// Writes every queued reply.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.output);
        self.output.clear();
        match result {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ConnError::Timeout)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Err(ConnError::Closed)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `wait` for the socket to become readable (or closed).
    fn readable_within(&self, wait: Duration) -> Result<bool, ConnError> {
        let deadline = Instant::now() + wait;
        loop {
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            let left = deadline.saturating_duration_since(Instant::now());
            match nix::poll::poll(&mut fds, poll_timeout(left)) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ConnError::Io(e.into())),
            }
        }
    }

    /// Whether the client has sent more than what was consumed so far: octets in the
    /// buffer, or octets waiting in the socket.
    pub fn input_pending(&self) -> Result<bool, ConnError> {
        Ok(self.start < self.end || self.readable_within(Duration::ZERO)?)
    }

    /// The unconsumed input, at most the first `max` octets of it, as text for a log
    /// line.
    pub fn pending_text(&self, max: usize) -> String {
        let end = self.end.min(self.start + max);
        String::from_utf8_lossy(&self.input[self.start..end]).into_owned()
    }

    /// Reads more input into the (empty) buffer. Queued replies are written first when
    /// nothing is waiting to be read: that is the moment a client expects them.
    fn fill(&mut self) -> Result<(), ConnError> {
        debug_assert!(self.start == self.end);
        self.start = 0;
        self.end = 0;
        if !self.output.is_empty() && !self.readable_within(Duration::ZERO)? {
            self.flush()?;
        }
        if !self.readable_within(self.timeout)? {
            return Err(ConnError::Timeout);
        }
        loop {
            match self.stream.read(&mut self.input) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => {
                    self.end = n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(ConnError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The buffered input, reading more first if there is none.
    pub fn buffered(&mut self) -> Result<&[u8], ConnError> {
        if self.start == self.end {
            self.fill()?;
        }
        Ok(&self.input[self.start..self.end])
    }

    /// Marks `n` octets of [`Conn::buffered`] as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Reads one line ending in LF, keeping at most `limit` octets of it.
    pub fn read_line(&mut self, limit: usize) -> Result<Line, ConnError> {
        let mut text = Vec::new();
        let mut too_long = false;
        let mut last_cr = false;
        loop {
            let data = self.buffered()?;
            let (piece, done) = match data.iter().position(|&b| b == b'\n') {
                Some(at) => (&data[..at], true),
                None => (data, false),
            };
            if let Some(&last) = piece.last() {
                last_cr = last == b'\r';
            }
            // One octet more than the limit is kept, for a CR before the LF.
            let room = (limit + 1).saturating_sub(text.len());
            if piece.len() > room {
                too_long = true;
            }
            text.extend_from_slice(&piece[..piece.len().min(room)]);
            let used = piece.len() + usize::from(done);
            self.consume(used);
            if done {
                let bare_lf = !last_cr;
                if last_cr && !too_long {
                    text.pop();
                }
                if text.len() > limit {
                    too_long = true;
                }
                text.truncate(limit);
                return Ok(Line {
                    text,
                    bare_lf,
                    too_long,
                });
            }
        }
    }

    /// Reads and discards `n` octets (a BDAT chunk that is refused).
    pub fn skip(&mut self, mut n: u64) -> Result<(), ConnError> {
        while n > 0 {
            let have = self.buffered()?.len();
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(have);
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Ends the session: writes what is queued (best effort) and shuts the socket.
    pub fn close(&mut self) {
        let _ = self.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn pair(timeout: Duration) -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Conn::new(server, timeout).unwrap(), client)
    }

    #[test]
    fn lines_end_in_crlf_or_bare_lf() {
        let (mut conn, mut client) = pair(Duration::from_secs(5));
        client.write_all(b"EHLO a\r\nNOOP\nx\r\r\n").unwrap();
        let l = conn.read_line(100).unwrap();
        assert_eq!(
            (l.text.as_slice(), l.bare_lf, l.too_long),
            (&b"EHLO a"[..], false, false)
        );
        let l = conn.read_line(100).unwrap();
        assert_eq!((l.text.as_slice(), l.bare_lf), (&b"NOOP"[..], true));
        let l = conn.read_line(100).unwrap();
        assert_eq!((l.text.as_slice(), l.bare_lf), (&b"x\r"[..], false));
    }

    #[test]
    fn a_long_line_is_cut_and_its_rest_discarded() {
        let (mut conn, mut client) = pair(Duration::from_secs(5));
        let long = vec![b'a'; 3 * INPUT_BUFFER];
        let writer = std::thread::spawn(move || {
            client.write_all(&long).unwrap();
            client.write_all(b"\r\nQUIT\r\n").unwrap();
            client
        });
        let l = conn.read_line(2048).unwrap();
        assert!(l.too_long);
        assert_eq!(l.text.len(), 2048);
        assert_eq!(conn.read_line(2048).unwrap().text, b"QUIT");
        drop(writer.join().unwrap());
        // A line of exactly the limit, with its CR, is not too long.
        let (mut conn, mut client) = pair(Duration::from_secs(5));
        client.write_all(&[b'b'; 10]).unwrap();
        client.write_all(b"\r\n").unwrap();
        let l = conn.read_line(10).unwrap();
        assert!(!l.too_long && l.text.len() == 10);
    }

    #[test]
    fn a_silent_client_times_out_and_a_gone_one_is_closed() {
        let (mut conn, client) = pair(Duration::from_millis(100));
        assert!(matches!(conn.read_line(100), Err(ConnError::Timeout)));
        drop(client);
        assert!(matches!(conn.read_line(100), Err(ConnError::Closed)));
    }
}
