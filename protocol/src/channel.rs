//! `Channel`: one end of an `AF_UNIX SOCK_SEQPACKET` socketpair carrying one
//! message per datagram, with file descriptors (`SCM_RIGHTS`) and the kernel-checked
//! identity of the sender (`SCM_CREDENTIALS`).
//!
//! Trusts: the kernel, for datagram boundaries, for the truncation flags and for
//! the credentials it attaches. Does not trust: the peer. A datagram larger than
//! [`MAX_DATAGRAM`], truncated control data, bytes that are not exactly one valid
//! message, or a number of fds other than the message kind carries are typed errors;
//! every fd that arrived with a refused datagram is closed before `recv` returns.
//! Received fds are close-on-exec, so they never leak into a program the master
//! starts.
//!
//! A zero-length read is the peer's end-of-file. The encoder never produces an empty
//! message, so a peer that sends an empty datagram is treated as having closed the
//! channel, which is where a broken peer ends anyway.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::codec::{decode, encode, DecodeError, EncodeError, Message};

/// The largest message: gossip is small, and larger content goes as a sequence of
/// `Chunk` messages, so a receiver never needs a bigger buffer.
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// Control space is reserved for at least this many fds per received datagram (the
/// alignment padding may admit two or three more). No message kind carries more than
/// one; the spare lets a peer that sends one too many be reported as a wrong fd
/// count naming the kind. Beyond the space, the kernel closes the fds that do not
/// fit and `recv` reports truncated control data. Either way, no fd is kept.
pub const MAX_FDS_PER_MESSAGE: usize = 2;

const RECV_CONTROL_LEN: usize =
    rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE), ScmCredentials(1));
const SEND_CONTROL_LEN: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// What the kernel says about the sender of a datagram (`SCM_CREDENTIALS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// A decoded message with what travelled with it.
#[derive(Debug)]
pub struct Received<M> {
    pub msg: M,
    /// Exactly `msg.fd_count()` descriptors, close-on-exec, in the order sent.
    pub fds: Vec<OwnedFd>,
    /// Present when this end has `SO_PASSCRED` enabled (as [`Channel::pair`] does).
    pub creds: Option<Credentials>,
}

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("creating a SOCK_SEQPACKET socketpair failed: {0}")]
    Socketpair(#[source] io::Error),
    #[error("fd is not an AF_UNIX SOCK_SEQPACKET socket")]
    NotSeqpacket,
    #[error("{what} on the channel socket failed: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("peer closed the channel")]
    PeerClosed,
    #[error("channel operation would block")]
    WouldBlock,
    #[error("sending on the channel failed: {0}")]
    Send(#[source] io::Error),
    #[error("receiving on the channel failed: {0}")]
    Recv(#[source] io::Error),
    #[error("received a datagram of {len} octets, more than {MAX_DATAGRAM}")]
    DatagramTooLarge { len: usize },
    #[error("received control data was truncated (too many fds or unexpected control messages)")]
    ControlTruncated,
    #[error("received datagram is not a valid message: {0}")]
    Decode(#[source] DecodeError),
    #[error(transparent)]
    Encode(EncodeError),
    #[error("a {kind} message is {len} octets, more than {MAX_DATAGRAM}")]
    Oversized { kind: &'static str, len: usize },
    #[error("a {kind} message carries {expected} fds, not {got}")]
    WrongFdCount {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
}

/// One end of a message channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// Makes a connected pair, close-on-exec, with `SO_PASSCRED` on both ends.
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| ChannelError::Socketpair(e.into()))?;
        let (a, b) = (Channel { fd: a }, Channel { fd: b });
        a.set_passcred(true)?;
        b.set_passcred(true)?;
        Ok((a, b))
    }

    /// Takes over an inherited fd (a daemon's fd 3) after checking that it is an
    /// `AF_UNIX SOCK_SEQPACKET` socket; anything else is closed and refused.
    /// Socket options are left as they are: call [`set_passcred`](Self::set_passcred)
    /// to receive credentials.
    pub fn from_fd(fd: OwnedFd) -> Result<Channel, ChannelError> {
        let socket_type = rustix::net::sockopt::socket_type(&fd);
        let domain = rustix::net::sockopt::socket_domain(&fd);
        match (socket_type, domain) {
            (Ok(SocketType::SEQPACKET), Ok(AddressFamily::UNIX)) => Ok(Channel { fd }),
            _ => Err(ChannelError::NotSeqpacket),
        }
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Switches `O_NONBLOCK` (with `fcntl`, the call seccomp allow-lists already
    /// need for descriptors); a blocked `send`/`recv` then fails with `WouldBlock`.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), ChannelError> {
        let setup = |source: Errno| ChannelError::Setup {
            what: "fcntl(O_NONBLOCK)",
            source: source.into(),
        };
        let flags = rustix::fs::fcntl_getfl(&self.fd).map_err(setup)?;
        let flags = if nonblocking {
            flags | OFlags::NONBLOCK
        } else {
            flags - OFlags::NONBLOCK
        };
        rustix::fs::fcntl_setfl(&self.fd, flags).map_err(setup)
    }

    /// With `SO_PASSCRED` on, every datagram this end receives carries the kernel's
    /// record of the sender's pid, uid and gid. It applies to datagrams sent after it
    /// is set.
    pub fn set_passcred(&self, on: bool) -> Result<(), ChannelError> {
        rustix::net::sockopt::set_socket_passcred(&self.fd, on).map_err(|e| ChannelError::Setup {
            what: "setsockopt(SO_PASSCRED)",
            source: e.into(),
        })
    }

    /// Sends `msg` as one datagram with `fds`, which must number `msg.fd_count()`.
    pub fn send<M: Message>(&self, msg: &M, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let bytes = encode(msg).map_err(ChannelError::Encode)?;
        if bytes.len() > MAX_DATAGRAM {
            return Err(ChannelError::Oversized {
                kind: msg.kind(),
                len: bytes.len(),
            });
        }
        let mut space = [MaybeUninit::uninit(); SEND_CONTROL_LEN];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds_fit = fds.is_empty() || control.push(SendAncillaryMessage::ScmRights(fds));
        if fds.len() != msg.fd_count() || !fds_fit {
            return Err(ChannelError::WrongFdCount {
                kind: msg.kind(),
                expected: msg.fd_count(),
                got: fds.len(),
            });
        }
        let iov = [IoSlice::new(&bytes)];
        loop {
            // MSG_NOSIGNAL: a closed peer is an error to report, not a SIGPIPE.
            match rustix::net::sendmsg(&self.fd, &iov, &mut control, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Err(ChannelError::WouldBlock),
                Err(Errno::PIPE | Errno::CONNRESET) => return Err(ChannelError::PeerClosed),
                Err(e) => return Err(ChannelError::Send(e.into())),
            }
        }
    }

    /// Receives one datagram and decodes it as `M`.
    pub fn recv<M: Message>(&self) -> Result<Received<M>, ChannelError> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut space = [MaybeUninit::uninit(); RECV_CONTROL_LEN];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            // MSG_TRUNC: report a datagram's real length, for the error.
            let flags = RecvFlags::CMSG_CLOEXEC | RecvFlags::TRUNC;
            match rustix::net::recvmsg(&self.fd, &mut iov, &mut control, flags) {
                Ok(r) => break r,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return Err(ChannelError::WouldBlock),
                Err(Errno::CONNRESET) => return Err(ChannelError::PeerClosed),
                Err(e) => return Err(ChannelError::Recv(e.into())),
            }
        };

        // Take ownership of every fd first, so that any early return closes them.
        let mut fds = Vec::new();
        let mut creds = None;
        for message in control.drain() {
            match message {
                RecvAncillaryMessage::ScmRights(received) => fds.extend(received),
                RecvAncillaryMessage::ScmCredentials(c) => {
                    creds = Some(Credentials {
                        pid: c.pid.as_raw_pid(),
                        uid: c.uid.as_raw(),
                        gid: c.gid.as_raw(),
                    })
                }
                _ => {}
            }
        }

        if received.flags.contains(ReturnFlags::CTRUNC) {
            return Err(ChannelError::ControlTruncated);
        }
        if received.flags.contains(ReturnFlags::TRUNC) || received.bytes > MAX_DATAGRAM {
            return Err(ChannelError::DatagramTooLarge {
                len: received.bytes,
            });
        }
        if received.bytes == 0 {
            return Err(ChannelError::PeerClosed);
        }
        let msg: M = decode(&buf[..received.bytes]).map_err(ChannelError::Decode)?;
        if fds.len() != msg.fd_count() {
            return Err(ChannelError::WrongFdCount {
                kind: msg.kind(),
                expected: msg.fd_count(),
                got: fds.len(),
            });
        }
        Ok(Received { msg, fds, creds })
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(channel: Channel) -> OwnedFd {
        channel.fd
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{Read, Write};

    use nix::fcntl::OFlag;
    use nix::unistd::{getgid, getuid, pipe2};

    use super::*;
    use crate::codec::InvalidValue;
    use crate::control::{FromMaster, ToMaster, PROTOCOL_VERSION};
    use crate::service::ServiceName;

    fn service(name: &str) -> ServiceName {
        ServiceName::try_from(name).unwrap()
    }

    fn pipe() -> (File, File) {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }

    /// Sends raw bytes and fds, bypassing every check of `Channel::send`.
    fn send_raw(channel: &Channel, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        }
        let n = rustix::net::sendmsg(
            channel.as_fd(),
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .unwrap();
        assert_eq!(n, bytes.len());
    }

    /// True when every write end of the pipe is closed: a read sees end-of-file
    /// instead of blocking.
    fn write_ends_closed(reader: &File) -> bool {
        rustix::fs::fcntl_setfl(reader, OFlags::NONBLOCK).unwrap();
        match (&*reader).read(&mut [0u8; 1]) {
            Ok(0) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            other => panic!("unexpected read result {other:?}"),
        }
    }

    #[test]
    fn a_message_round_trips_with_credentials() {
        let (daemon, master) = Channel::pair().unwrap();
        daemon
            .send(
                &ToMaster::Hello {
                    version: PROTOCOL_VERSION,
                },
                &[],
            )
            .unwrap();
        let got = master.recv::<ToMaster>().unwrap();
        assert_eq!(
            got.msg,
            ToMaster::Hello {
                version: PROTOCOL_VERSION
            }
        );
        assert!(got.fds.is_empty());
        let creds = got.creds.expect("SO_PASSCRED is on");
        assert_eq!(creds.pid, i32::try_from(std::process::id()).unwrap());
        assert_eq!(creds.uid, getuid().as_raw());
        assert_eq!(creds.gid, getgid().as_raw());
    }

    #[test]
    fn pair_is_close_on_exec() {
        let (a, b) = Channel::pair().unwrap();
        for end in [&a, &b] {
            let flags = rustix::io::fcntl_getfd(end.as_fd()).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
    }

    #[test]
    fn no_credentials_without_passcred() {
        let (a, b) = Channel::pair().unwrap();
        b.set_passcred(false).unwrap();
        a.send(&ToMaster::Idle, &[]).unwrap();
        assert!(b.recv::<ToMaster>().unwrap().creds.is_none());
    }

    #[test]
    fn passes_an_fd_that_works() {
        let (master, daemon) = Channel::pair().unwrap();
        let (mut reader, writer) = pipe();
        master
            .send(
                &FromMaster::Connected {
                    service: service("cleanup"),
                },
                &[writer.as_fd()],
            )
            .unwrap();
        drop(writer);
        let got = daemon.recv::<FromMaster>().unwrap();
        assert_eq!(got.fds.len(), 1);
        let mut received = File::from(got.fds.into_iter().next().unwrap());
        received.write_all(b"through the passed fd").unwrap();
        drop(received);
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the passed fd");
    }

    #[test]
    fn received_fds_are_close_on_exec() {
        let (master, daemon) = Channel::pair().unwrap();
        let (_reader, writer) = pipe();
        let plain = rustix::io::dup(&writer).unwrap();
        assert!(!rustix::io::fcntl_getfd(&plain)
            .unwrap()
            .contains(rustix::io::FdFlags::CLOEXEC));
        master
            .send(
                &FromMaster::Incoming {
                    from: service("smtpd"),
                },
                &[plain.as_fd()],
            )
            .unwrap();
        let got = daemon.recv::<FromMaster>().unwrap();
        let flags = rustix::io::fcntl_getfd(&got.fds[0]).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn an_fd_on_a_kind_that_carries_none_is_refused_and_closed() {
        let (daemon, master) = Channel::pair().unwrap();
        let (reader, writer) = pipe();
        let bytes = encode(&ToMaster::Busy).unwrap();
        send_raw(&daemon, &bytes, &[writer.as_fd()]);
        drop(writer);
        assert!(!write_ends_closed(&reader), "the datagram holds the fd");
        match master.recv::<ToMaster>() {
            Err(ChannelError::WrongFdCount {
                kind: "Busy",
                expected: 0,
                got: 1,
            }) => {}
            other => panic!("expected WrongFdCount, got {other:?}"),
        }
        assert!(write_ends_closed(&reader), "the refused fd was closed");
    }

    #[test]
    fn a_missing_fd_is_refused() {
        let (master, daemon) = Channel::pair().unwrap();
        let bytes = encode(&FromMaster::Connected {
            service: service("qmgr"),
        })
        .unwrap();
        send_raw(&master, &bytes, &[]);
        assert!(matches!(
            daemon.recv::<FromMaster>(),
            Err(ChannelError::WrongFdCount {
                kind: "Connected",
                expected: 1,
                got: 0
            })
        ));
    }

    #[test]
    fn one_fd_too_many_is_a_wrong_count_and_both_are_closed() {
        let (master, daemon) = Channel::pair().unwrap();
        let (reader, writer) = pipe();
        let bytes = encode(&FromMaster::Incoming {
            from: service("smtpd"),
        })
        .unwrap();
        send_raw(&master, &bytes, &[writer.as_fd(), writer.as_fd()]);
        drop(writer);
        let got = daemon.recv::<FromMaster>();
        assert!(
            matches!(
                got,
                Err(ChannelError::WrongFdCount {
                    kind: "Incoming",
                    expected: 1,
                    got: 2
                })
            ),
            "{got:?}"
        );
        assert!(write_ends_closed(&reader));
    }

    #[test]
    fn too_many_fds_are_refused_and_closed() {
        let (master, daemon) = Channel::pair().unwrap();
        let (reader, writer) = pipe();
        let bytes = encode(&FromMaster::Incoming {
            from: service("smtpd"),
        })
        .unwrap();
        let fds = [writer.as_fd(); 16];
        send_raw(&master, &bytes, &fds);
        drop(writer);
        let got = daemon.recv::<FromMaster>();
        assert!(
            matches!(got, Err(ChannelError::ControlTruncated)),
            "{got:?}"
        );
        assert!(write_ends_closed(&reader));
    }

    #[test]
    fn send_checks_the_fd_count() {
        let (a, _b) = Channel::pair().unwrap();
        let (_reader, writer) = pipe();
        assert!(matches!(
            a.send(&ToMaster::Idle, &[writer.as_fd()]),
            Err(ChannelError::WrongFdCount {
                kind: "Idle",
                expected: 0,
                got: 1
            })
        ));
        assert!(matches!(
            a.send(
                &FromMaster::Connected {
                    service: service("smtp")
                },
                &[]
            ),
            Err(ChannelError::WrongFdCount {
                kind: "Connected",
                expected: 1,
                got: 0
            })
        ));
    }

    #[test]
    fn an_oversized_datagram_is_reported_as_truncated() {
        let (a, b) = Channel::pair().unwrap();
        let big = vec![0u8; MAX_DATAGRAM + 1];
        rustix::net::send(a.as_fd(), &big, SendFlags::NOSIGNAL).unwrap();
        match b.recv::<ToMaster>() {
            Err(ChannelError::DatagramTooLarge { len }) => assert_eq!(len, MAX_DATAGRAM + 1),
            other => panic!("expected DatagramTooLarge, got {other:?}"),
        }
        // The channel stays in step: the next datagram is read whole.
        a.send(&ToMaster::Idle, &[]).unwrap();
        assert_eq!(b.recv::<ToMaster>().unwrap().msg, ToMaster::Idle);
    }

    #[test]
    fn a_datagram_of_exactly_the_maximum_is_read_whole() {
        let (a, b) = Channel::pair().unwrap();
        let mut bytes = encode(&ToMaster::Idle).unwrap();
        bytes.resize(MAX_DATAGRAM, 0);
        send_raw(&a, &bytes, &[]);
        assert!(matches!(
            b.recv::<ToMaster>(),
            Err(ChannelError::Decode(DecodeError::TrailingBytes { count })) if count == MAX_DATAGRAM - 1
        ));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors() {
        let (a, b) = Channel::pair().unwrap();
        send_raw(&a, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], &[]);
        assert!(matches!(b.recv::<ToMaster>(), Err(ChannelError::Decode(_))));
        let mut bytes = encode(&ToMaster::Busy).unwrap();
        bytes.push(0);
        send_raw(&a, &bytes, &[]);
        assert!(matches!(
            b.recv::<ToMaster>(),
            Err(ChannelError::Decode(DecodeError::TrailingBytes {
                count: 1
            }))
        ));
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let (a, b) = Channel::pair().unwrap();
        let bytes = postcard::to_allocvec(&ToMaster::Hello { version: 99 }).unwrap();
        send_raw(&a, &bytes, &[]);
        assert!(matches!(
            b.recv::<ToMaster>(),
            Err(ChannelError::Decode(DecodeError::Invalid(
                InvalidValue::UnknownVersion { got: 99, .. }
            )))
        ));
        assert!(matches!(
            a.send(&ToMaster::Hello { version: 99 }, &[]),
            Err(ChannelError::Encode(_))
        ));
    }

    #[test]
    fn eof_after_the_peer_closes() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&ToMaster::Busy, &[]).unwrap();
        drop(a);
        assert_eq!(b.recv::<ToMaster>().unwrap().msg, ToMaster::Busy);
        assert!(matches!(
            b.recv::<ToMaster>(),
            Err(ChannelError::PeerClosed)
        ));
        assert!(matches!(
            b.send(&ToMaster::Idle, &[]),
            Err(ChannelError::PeerClosed)
        ));
    }

    #[test]
    fn nonblocking_recv_on_an_empty_channel_would_block() {
        let (a, b) = Channel::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        assert!(matches!(
            b.recv::<ToMaster>(),
            Err(ChannelError::WouldBlock)
        ));
        a.send(&ToMaster::Idle, &[]).unwrap();
        assert_eq!(b.recv::<ToMaster>().unwrap().msg, ToMaster::Idle);
        b.set_nonblocking(false).unwrap();
        let flags = rustix::fs::fcntl_getfl(b.as_fd()).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK));
    }

    #[test]
    fn from_fd_accepts_only_seqpacket_sockets() {
        let (a, _b) = Channel::pair().unwrap();
        let a = Channel::from_fd(a.into_fd()).unwrap();
        a.send(&ToMaster::Idle, &[]).unwrap();

        let (reader, _writer) = pipe();
        assert!(matches!(
            Channel::from_fd(OwnedFd::from(reader)),
            Err(ChannelError::NotSeqpacket)
        ));
        let (s, _t) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        assert!(matches!(
            Channel::from_fd(s),
            Err(ChannelError::NotSeqpacket)
        ));
    }

    #[test]
    fn oversized_message_is_refused_on_send() {
        // No message of the control protocol can exceed the limit; a probe type can.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Big(Vec<u8>);
        impl Message for Big {
            fn kind(&self) -> &'static str {
                "Big"
            }
        }
        let (a, _b) = Channel::pair().unwrap();
        assert!(matches!(
            a.send(&Big(vec![0; MAX_DATAGRAM]), &[]),
            Err(ChannelError::Oversized { kind: "Big", .. })
        ));
    }
}
