//! The start-up handshake from the master's side of the control channel: the test starts the real
//! `smtpd` itself, the way the master does (`sandbox::spawn`: control channel at fd 3, a listener
//! the test bound at fd 4, the configuration of a `postern init` instance), and plays the master:
//! `Welcome`, then reads `Ready`, then decides. A daemon that said `Ready` accepts no connection
//! until it is given `Go`, and one whose master closes the channel instead exits without ever
//! accepting: the connection is still waiting in the listener's queue, where the test takes it.
//! They pass as root (the daemon changes to its uid) and unprivileged (`--dev`).

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use postern_tests::instance::{binary, Instance};
use protocol::control::{FromMaster, ToMaster, PROTOCOL_VERSION};
use protocol::Channel;

/// How long the test waits for the daemon's next control message.
const ANSWER: Duration = Duration::from_secs(10);

/// How long a client waits for a greeting that must not come.
const SILENCE: Duration = Duration::from_millis(500);

/// One `smtpd` started by the test, which holds the master's end of its control channel.
struct Daemon {
    pid: Pid,
    control: Option<Channel>,
    stderr: PathBuf,
    reaped: bool,
}

impl Daemon {
    fn start(inst: &Instance, listener: &TcpListener) -> Daemon {
        let (ours, theirs) = Channel::pair().expect("socketpair");
        let stderr = inst.dir().join("smtpd.stderr");
        let log = File::create(&stderr).expect("create the daemon's stderr file");
        let argv = daemon::Args {
            program: "smtpd".to_owned(),
            config_dir: inst.dir().to_path_buf(),
            service: "smtp".to_owned(),
            transport: daemon::Transport::Inet,
            overrides: Vec::new(),
        }
        .to_argv();
        let program = binary("smtpd");
        let mut plan = sandbox::Spawn::new(&program, theirs.as_fd());
        plan.arg0 = argv.first().cloned();
        plan.args = argv.into_iter().skip(1).collect();
        plan.extra_fds = vec![listener.as_fd()];
        plan.output = Some(log.as_fd());
        let pid = sandbox::spawn(&plan).expect("spawn smtpd");
        Daemon {
            pid,
            control: Some(ours),
            stderr,
            reaped: false,
        }
    }

    fn control(&self) -> &Channel {
        self.control.as_ref().expect("the control channel is open")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next control message within `wait`, or `None`.
    fn next(&self, wait: Duration) -> Option<ToMaster> {
        let mut fds = [PollFd::new(self.control().as_fd(), PollFlags::POLLIN)];
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let ready = nix::poll::poll(&mut fds, PollTimeout::try_from(ms).unwrap()).unwrap();
        if ready == 0 {
            return None;
        }
        Some(self.control().recv::<ToMaster>().unwrap().msg)
    }

    fn expect(&self, what: &str) -> ToMaster {
        self.next(ANSWER)
            .unwrap_or_else(|| panic!("no {what} within {ANSWER:?}\n{}", self.stderr()))
    }

    fn send(&self, msg: &FromMaster) {
        self.control().send(msg, &[]).unwrap();
    }

    /// Hello, Welcome, Ready: the daemon is sandboxed and waits for the master's verdict.
    fn to_ready(&self) {
        assert_eq!(
            self.expect("Hello"),
            ToMaster::Hello {
                version: PROTOCOL_VERSION
            }
        );
        self.send(&FromMaster::Welcome {
            version: PROTOCOL_VERSION,
        });
        match self.expect("Ready") {
            ToMaster::Ready { report } => {
                assert!(report.seccomp && report.no_new_privs, "{report:?}");
            }
            other => panic!("{other:?} instead of Ready\n{}", self.stderr()),
        }
    }

    fn wait_exit(&mut self) -> WaitStatus {
        let status = waitpid(self.pid, None).unwrap();
        self.reaped = true;
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
        if std::thread::panicking() {
            eprintln!("smtpd stderr:\n{}", self.stderr());
        }
    }
}

fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")
}

/// Connects and shows that no byte comes within [`SILENCE`]: the connection waits in the
/// listener's queue, not accepted.
fn connect_unanswered(listener: &TcpListener) -> TcpStream {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(SILENCE)).unwrap();
    let mut byte = [0u8; 1];
    match (&client).read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the daemon answered before Go: {other:?}"),
    }
    client
}

#[test]
fn a_daemon_serves_nothing_until_the_master_says_go() {
    let inst = Instance::init("handshake-go", &[]);
    let listener = loopback_listener();
    let mut d = Daemon::start(&inst, &listener);
    d.to_ready();
    let client = connect_unanswered(&listener);
    assert_eq!(d.next(Duration::ZERO), None, "nothing said before Go");

    d.send(&FromMaster::Go);
    client.set_read_timeout(Some(ANSWER)).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    assert_eq!(d.expect("Busy"), ToMaster::Busy);
    (&client).write_all(b"QUIT\r\n").unwrap();
    let mut bye = String::new();
    reader.read_line(&mut bye).unwrap();
    assert!(bye.starts_with("221 "), "{bye:?}");
    assert_eq!(d.expect("Idle"), ToMaster::Idle);

    d.send(&FromMaster::Stop);
    assert_eq!(
        d.wait_exit(),
        WaitStatus::Exited(d.pid, 0),
        "{}",
        d.stderr()
    );
}

#[test]
fn a_daemon_whose_master_closes_the_channel_after_ready_exits_without_serving() {
    let inst = Instance::init("handshake-refused", &[]);
    let listener = loopback_listener();
    let mut d = Daemon::start(&inst, &listener);
    d.to_ready();
    let client = connect_unanswered(&listener);
    // The master's refusal: it closes the channel (and kills the process; here it only closes, so
    // what the daemon does by itself is seen).
    d.control = None;
    match d.wait_exit() {
        WaitStatus::Exited(_, code) => assert_ne!(code, 0, "{}", d.stderr()),
        other => panic!("{other:?}\n{}", d.stderr()),
    }
    assert!(d.stderr().contains("peer closed"), "{}", d.stderr());
    // The daemon never accepted: the connection is still queued on the listener.
    listener.set_nonblocking(true).unwrap();
    let (accepted, peer) = listener
        .accept()
        .expect("the client's connection is still waiting");
    assert_eq!(peer, client.local_addr().unwrap());
    drop(accepted);
}
