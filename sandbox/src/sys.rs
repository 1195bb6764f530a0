//! The only module of Postern with `unsafe` code: raw system calls that have
//! no safe wrapper in `nix`, the fork/exec of [`crate::spawn()`], and taking ownership of the
//! descriptors a daemon inherits ([`crate::inherited_fd`]).
//!
//! Trusts: its callers inside this crate for the values passed (they are
//! prepared and validated in safe code). Everything between `fork` and
//! `execve` is async-signal-safe: no allocation, no locks, only system calls
//! on memory prepared before the fork.

use std::ffi::{c_char, CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Drop capability `index` from the calling thread's bounding set (needs
/// CAP_SETPCAP in the effective set).
pub(crate) fn capbset_drop(index: u32) -> io::Result<()> {
    // SAFETY: prctl(PR_CAPBSET_DROP) takes integer arguments only and touches
    // no memory of this process.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAPBSET_DROP,
            libc::c_ulong::from(index),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Call `clone3` with no argument struct. The kernel rejects the size before
/// it could create anything (EINVAL), so the only interesting answers are
/// ENOSYS (our filter) or EPERM (a filter without the fallback).
pub(crate) fn clone3_errno() -> io::Error {
    // SAFETY: a NULL pointer with size 0 is rejected by the kernel before any
    // memory is read; no process is created.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::size_t,
        )
    };
    if rc < 0 {
        io::Error::last_os_error()
    } else {
        io::Error::other(format!("clone3 returned {rc}"))
    }
}

/// Call `openat2` on "/" with no `open_how` struct: the kernel rejects the
/// size (EINVAL) unless a filter answers first.
pub(crate) fn openat2_errno() -> io::Error {
    let root = c"/";
    // SAFETY: `root` is a valid NUL-terminated string; a NULL `how` with size
    // 0 is rejected by the kernel before any memory is read.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            root.as_ptr(),
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::size_t,
        )
    };
    if rc >= 0 {
        if let Ok(fd) = RawFd::try_from(rc) {
            // SAFETY: the kernel just returned this descriptor to us.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        return io::Error::other("openat2 opened /");
    }
    io::Error::last_os_error()
}

/// Ask the kernel to execute `path` with an argv pointer it can only reject
/// (EFAULT), so a sandbox that lets `execve` through is reported instead of
/// replacing this process. Seccomp answers at syscall entry; since Linux 6.8
/// the kernel opens the file (where landlock checks EXECUTE) before it reads
/// argv, while older kernels answer EFAULT before landlock is asked.
pub(crate) fn execve_errno(path: &CStr) -> io::Error {
    // The highest page of the address space is never user memory.
    let bad_argv = usize::MAX & !0xfff;
    let envp: [*const c_char; 1] = [std::ptr::null()];
    // SAFETY: `path` and `envp` are valid; `bad_argv` is not dereferenced by
    // this process, the kernel fails its copy with EFAULT.
    let rc = unsafe {
        libc::execve(
            path.as_ptr(),
            bad_argv as *const *const c_char,
            envp.as_ptr(),
        )
    };
    if rc < 0 {
        io::Error::last_os_error()
    } else {
        io::Error::other("execve returned without error")
    }
}

/// Everything the child needs, prepared before the fork so that the child
/// allocates nothing.
pub(crate) struct ForkExec {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Placed at fd 3, 4, ... in this order.
    pub fds: Vec<RawFd>,
    /// Placed at fd 0.
    pub stdin: RawFd,
    /// Placed at fds 1 and 2.
    pub output: RawFd,
    /// Create the child as a sibling of the caller (`clone(CLONE_PARENT)`): its parent, whose
    /// death kills it and who reaps it, is the caller's parent.
    pub sibling: bool,
}

use crate::spawn::MAX_CHILD_FDS;

/// fork, place descriptors, arm the parent-death signal, exec. Returns the
/// child's pid once `execve` succeeded, or the child's `execve` error.
pub(crate) fn fork_exec(plan: &ForkExec) -> io::Result<libc::pid_t> {
    if plan.fds.len() > MAX_CHILD_FDS {
        return Err(io::Error::from_raw_os_error(libc::EMFILE));
    }
    let argv: Vec<*const c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const c_char> = plan
        .envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let parent = if plan.sibling {
        nix::unistd::getppid().as_raw()
    } else {
        nix::unistd::getpid().as_raw()
    };

    // Block every signal across the fork so that none of the parent's
    // handlers runs in the child before the child resets them.
    // SAFETY: sigset_t is plain data that sigfillset/sigemptyset initialise.
    let (mut all, mut saved) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        (all, saved)
    };
    // SAFETY: both pointers refer to live sigset_t values.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let pid = if plan.sibling {
        // SAFETY: `clone` without CLONE_VM and with a NULL stack is `fork` with another parent:
        // the child runs on a copy of this stack. No other thread exists to hold a lock
        // (`spawn` checks), and the child branch below only makes async-signal-safe calls on
        // memory prepared above.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        libc::pid_t::try_from(rc).unwrap_or(-1)
    } else {
        // SAFETY: fork has no memory-safety preconditions; the child branch below
        // only makes async-signal-safe calls on memory prepared above.
        unsafe { libc::fork() }
    };
    if pid == 0 {
        // SAFETY: in the child of a fork; see `child_after_fork`.
        unsafe {
            child_after_fork(
                plan,
                &argv,
                &envp,
                report_write.as_raw_fd(),
                parent,
                &mut all,
            )
        }
    }
    let fork_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    drop(report_write);
    if pid < 0 {
        return Err(fork_error);
    }
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        match nix::unistd::read(&report_read, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // The child failed before or at execve and exits; reap it (a sibling is reaped by the
    // parent both share).
    if !plan.sibling {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    }
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

/// # Safety
///
/// Must only be called in the child right after `fork`. Makes only
/// async-signal-safe system calls and never returns.
unsafe fn child_after_fork(
    plan: &ForkExec,
    argv: &[*const c_char],
    envp: &[*const c_char],
    report: RawFd,
    parent: libc::pid_t,
    scratch: &mut libc::sigset_t,
) -> ! {
    let fail = |report: RawFd| -> ! {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        let bytes = errno.to_ne_bytes();
        // SAFETY: writes 4 bytes from a live array; then exits without
        // running atexit handlers or destructors of the parent's state.
        unsafe {
            libc::write(report, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        }
    };
    // SAFETY (whole block): every call is async-signal-safe (dup, dup2,
    // fcntl, prctl, getppid, sigaction, sigprocmask, close_range, execve)
    // and works on descriptors and memory prepared before the fork.
    unsafe {
        // INVARIANT: the death signal is armed before the parent check, so a
        // parent dying after the check kills us, and one that died before it
        // is noticed (we would have been reparented).
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(report);
        }
        if libc::getppid() != parent {
            libc::_exit(127);
        }

        // Move every descriptor we place, and the report pipe, above the
        // target range first, so that placing one cannot overwrite another.
        let first_free = 3 + plan.fds.len() as RawFd;
        let report = libc::fcntl(report, libc::F_DUPFD_CLOEXEC, first_free);
        if report < 0 {
            libc::_exit(127);
        }
        let stdin = libc::fcntl(plan.stdin, libc::F_DUPFD_CLOEXEC, first_free);
        let output = libc::fcntl(plan.output, libc::F_DUPFD_CLOEXEC, first_free);
        if stdin < 0 || output < 0 {
            fail(report);
        }
        let mut moved = [-1 as RawFd; MAX_CHILD_FDS];
        for (slot, fd) in moved.iter_mut().zip(plan.fds.iter()) {
            *slot = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first_free);
            if *slot < 0 {
                fail(report);
            }
        }
        // dup2 leaves the new descriptors without FD_CLOEXEC.
        if libc::dup2(stdin, 0) < 0 || libc::dup2(output, 1) < 0 || libc::dup2(output, 2) < 0 {
            fail(report);
        }
        for (target, fd) in (3..).zip(moved.iter().take(plan.fds.len())) {
            if libc::dup2(*fd, target) < 0 {
                fail(report);
            }
        }
        // Every other descriptor closes at exec; the report pipe stays open
        // until then so that an execve failure can still be told.
        if libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        ) != 0
        {
            fail(report);
        }

        // Signal dispositions and mask as a fresh process would have them.
        // The raw call, because glibc's sigaction refuses the two signals it
        // reserves for itself; an all-zero kernel sigaction is SIG_DFL with
        // no flags on every architecture.
        let default = [0u64; 4];
        for signal in 1..=libc::SIGRTMAX() {
            // SIGKILL and SIGSTOP answer EINVAL; nothing else can fail.
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal as libc::c_long,
                default.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8 as libc::size_t,
            );
        }
        libc::sigemptyset(scratch);
        if libc::sigprocmask(libc::SIG_SETMASK, scratch, std::ptr::null_mut()) != 0 {
            fail(report);
        }

        libc::execve(plan.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(report)
    }
}

/// Bit n set: descriptor n was taken over by [`claim_inherited`].
static CLAIMED_FDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Takes ownership of descriptor `fd` that the parent placed for this process (a daemon's fd 3
/// and 4), once per descriptor, and marks it close-on-exec.
pub(crate) fn claim_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    use std::sync::atomic::Ordering;
    if !(3..64).contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not one a parent places (3 to 63)"),
        ));
    }
    let bit = 1u64 << fd;
    if CLAIMED_FDS.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("descriptor {fd} was already taken over"),
        ));
    }
    // SAFETY: fcntl(F_GETFD) on any integer only reads the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        CLAIMED_FDS.fetch_and(!bit, Ordering::SeqCst);
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; sets a flag on a descriptor that is open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        CLAIMED_FDS.fetch_and(!bit, Ordering::SeqCst);
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (F_GETFD succeeded). It is >= 3, so not one of std's stdio handles,
    // and it was inherited across execve, so nothing in this process opened it; CLAIMED_FDS
    // makes this the only OwnedFd ever created for it here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fork` for a process that is single-threaded by construction: a daemon whose
/// [`crate::apply`] refused to run with a second thread and which starts none (the `local`
/// agent's delivery children). The child may then use any async-signal-unsafe function,
/// which is sound only because no other thread could have held a lock at the fork.
///
/// The invariant is checked, not assumed: the C library's `__libc_single_threaded` is true
/// only while the process has never created a thread (it is not set back when threads end,
/// so the check errs on the side of refusing). A process that ever had a second thread gets
/// [`ForkError::Threaded`] and no child.
pub(crate) fn fork_single_threaded() -> Result<nix::unistd::ForkResult, ForkError> {
    if !single_threaded() {
        return Err(ForkError::Threaded);
    }
    // SAFETY: the process has never had a second thread (checked above), so the child
    // inherits no lock held by another thread and may allocate and run arbitrary code.
    unsafe { nix::unistd::fork() }.map_err(ForkError::Fork)
}

/// Whether this process has never created a thread (glibc 2.32 and later maintain the flag).
pub(crate) fn single_threaded() -> bool {
    extern "C" {
        static __libc_single_threaded: std::ffi::c_char;
    }
    // SAFETY: a `char` the C library exports and writes only when a thread is created (by
    // this thread: every other thread would have been created by some thread first); a
    // volatile read of one byte cannot tear.
    unsafe { std::ptr::read_volatile(std::ptr::addr_of!(__libc_single_threaded)) != 0 }
}

/// Closes the descriptors `first..=last` with one `close_range(2)` (flags 0). Closing a
/// descriptor that is not open is not an error for this call.
pub(crate) fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    let (Ok(first), Ok(last)) = (libc::c_uint::try_from(first), libc::c_uint::try_from(last))
    else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: close_range takes integers only; closing descriptors touches no memory of this
    // process (a descriptor an `OwnedFd` still names would be closed under it: the caller keeps
    // those out of the range).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Why [`crate::fork_delivery_child`] made no child.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error("refused to fork: this process has had more than one thread, so a child could inherit a lock another thread held")]
    Threaded,
    #[error("fork: {0}")]
    Fork(nix::errno::Errno),
}
