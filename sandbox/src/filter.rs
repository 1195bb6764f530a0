//! Turning a profile's allow-list into the two seccomp-BPF programs that
//! [`crate::apply`] installs.
//!
//! Trusts: the profile (already validated). Pure: builds programs, installs
//! nothing.
//!
//! Two filters, because seccompiler gives one filter one match action:
//!
//! 1. the *fallback* filter answers `clone3` and `openat2` with `ENOSYS` and
//!    allows everything else. glibc then falls back to `clone` and `openat`,
//!    whose flags a classic BPF filter can check (`clone3` and `openat2` take
//!    their flags in a struct in memory, which seccomp cannot read);
//! 2. the *allow-list* filter allows the profile's syscalls (with their
//!    argument checks) and answers everything else with the profile's
//!    violation action. It also allows `clone3` and `openat2`, leaving them
//!    to the fallback filter.
//!
//! The kernel runs every installed filter on each syscall and takes the
//! action of highest precedence (KILL_PROCESS > ... > ERRNO > ... > ALLOW);
//! between equal actions the most recently installed filter wins. For
//! `clone3`/`openat2` the filters say ERRNO(ENOSYS) and ALLOW, so the result
//! is ENOSYS whatever the order and whatever the violation action: had the
//! allow-list left them to its default, `KillProcess` would outrank ENOSYS
//! and an `Errno` allow-list installed last would answer EPERM, and glibc
//! would not fall back. The fallback filter is installed first so that the
//! allow-list's own `seccomp()` call passes it, and so that `clone3` is never
//! allowed by the allow-list alone: if the fallback filter cannot be
//! installed, the allow-list is not installed either.
//!
//! Both programs start with seccompiler's architecture check (a syscall made
//! through another ABI, such as i386 `int 0x80`, kills the process). x32
//! calls on x86_64 carry bit 30 in their number, match no entry and get the
//! violation action.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::ProfileError;
use crate::profile::Violation;
use crate::syscalls::{ArgCmp, Syscall};

/// Syscalls answered with `ENOSYS` so that libc uses their older, checkable
/// siblings (`clone`, `openat`).
pub(crate) const ALWAYS_ENOSYS: [i64; 2] = [libc::SYS_clone3, libc::SYS_openat2];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the sandbox's seccomp filters are written for x86_64 and aarch64 only");

pub(crate) struct Programs {
    /// Install first.
    pub fallback: BpfProgram,
    /// Install second.
    pub allow_list: BpfProgram,
}

fn violation_action(on_violation: Violation) -> SeccompAction {
    match on_violation {
        Violation::Errno => SeccompAction::Errno(libc::EPERM as u32),
        Violation::KillProcess => SeccompAction::KillProcess,
    }
}

fn filter_error(e: seccompiler::BackendError) -> ProfileError {
    ProfileError::Filter(e.to_string())
}

pub(crate) fn build(
    syscalls: &[Syscall],
    on_violation: Violation,
) -> Result<Programs, ProfileError> {
    let fallback: BTreeMap<i64, Vec<SeccompRule>> =
        ALWAYS_ENOSYS.iter().map(|nr| (*nr, Vec::new())).collect();
    let fallback = SeccompFilter::new(
        fallback,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        ARCH,
    )
    .and_then(BpfProgram::try_from)
    .map_err(filter_error)?;

    // One syscall may come from several groups: `merge` combines them, and
    // refuses a combination that would widen an entry by accident.
    let merged =
        crate::syscalls::merge(syscalls).map_err(|e| ProfileError::Filter(e.to_string()))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for syscall in merged {
        let mut alternatives = Vec::new();
        for all in syscall.allow_if.iter().flatten() {
            let conditions = all
                .iter()
                .map(|check| {
                    let (op, value) = match check.cmp {
                        ArgCmp::Eq(value) => (SeccompCmpOp::Eq, value),
                        ArgCmp::MaskedEq { mask, value } => (SeccompCmpOp::MaskedEq(mask), value),
                    };
                    SeccompCondition::new(check.index, SeccompCmpArgLen::Qword, op, value)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(filter_error)?;
            alternatives.push(SeccompRule::new(conditions).map_err(filter_error)?);
        }
        rules.insert(syscall.nr, alternatives);
    }
    for nr in ALWAYS_ENOSYS {
        rules.insert(nr, Vec::new());
    }
    let allow_list = SeccompFilter::new(
        rules,
        violation_action(on_violation),
        SeccompAction::Allow,
        ARCH,
    )
    .and_then(BpfProgram::try_from)
    .map_err(filter_error)?;
    Ok(Programs {
        fallback,
        allow_list,
    })
}

#[cfg(test)]
mod tests {
    //! The programs are run through a small classic-BPF interpreter that
    //! evaluates them the way the kernel does, including how it combines
    //! stacked filters.
    use super::*;
    use crate::syscalls::{self, ArgCheck};
    use seccompiler::sock_filter;

    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;
    const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

    struct Call {
        nr: i64,
        arch: u32,
        args: [u64; 6],
    }

    fn call(nr: i64, args: &[u64]) -> Call {
        let mut all = [0u64; 6];
        all[..args.len()].copy_from_slice(args);
        Call {
            nr,
            arch: AUDIT_ARCH,
            args: all,
        }
    }

    fn load(call: &Call, offset: u32) -> u32 {
        match offset {
            0 => call.nr as u32,
            4 => call.arch,
            16..=63 => {
                let arg = call.args[((offset - 16) / 8) as usize];
                if (offset - 16) % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            other => panic!("load from offset {other}"),
        }
    }

    fn run(program: &[sock_filter], call: &Call) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = &program[pc];
            pc += 1;
            match ins.code {
                0x20 => acc = load(call, ins.k),
                0x54 => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 | 0x25 | 0x35 => {
                    let taken = match ins.code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        _ => acc >= ins.k,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                0x06 => return ins.k,
                other => panic!("unexpected BPF opcode {other:#x}"),
            }
        }
    }

    /// The kernel's rule: newest filter first, lowest signed action wins,
    /// ties keep the first seen.
    fn run_stacked(installed: &[&BpfProgram], call: &Call) -> u32 {
        let mut result = RET_ALLOW;
        for program in installed.iter().rev() {
            let ret = run(program, call);
            if ((ret & 0xffff_0000) as i32) < ((result & 0xffff_0000) as i32) {
                result = ret;
            }
        }
        result
    }

    fn programs(list: &[Syscall], on_violation: Violation) -> Programs {
        build(list, on_violation).expect("filter builds")
    }

    fn verdict(p: &Programs, call: &Call) -> u32 {
        run_stacked(&[&p.fallback, &p.allow_list], call)
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    #[test]
    fn allowed_calls_pass_and_others_get_eperm() {
        let p = programs(syscalls::BASE, Violation::Errno);
        assert_eq!(verdict(&p, &call(libc::SYS_read, &[0, 0, 0])), RET_ALLOW);
        assert_eq!(verdict(&p, &call(libc::SYS_exit_group, &[0])), RET_ALLOW);
        for denied in [
            libc::SYS_socket,
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_openat,
            libc::SYS_setresuid,
            libc::SYS_clone,
        ] {
            assert_eq!(verdict(&p, &call(denied, &[])), EPERM, "syscall {denied}");
        }
    }

    #[test]
    fn kill_mode_kills_for_the_same_calls() {
        let p = programs(syscalls::BASE, Violation::KillProcess);
        assert_eq!(verdict(&p, &call(libc::SYS_read, &[])), RET_ALLOW);
        assert_eq!(verdict(&p, &call(libc::SYS_socket, &[])), RET_KILL_PROCESS);
    }

    #[test]
    fn clone3_and_openat2_get_enosys_in_both_modes() {
        for mode in [Violation::Errno, Violation::KillProcess] {
            let p = programs(syscalls::BASE, mode);
            assert_eq!(verdict(&p, &call(libc::SYS_clone3, &[])), ENOSYS);
            assert_eq!(verdict(&p, &call(libc::SYS_openat2, &[])), ENOSYS);
        }
    }

    #[test]
    fn installing_in_the_other_order_would_also_give_enosys() {
        let p = programs(syscalls::BASE, Violation::Errno);
        let c = call(libc::SYS_clone3, &[]);
        assert_eq!(run_stacked(&[&p.allow_list, &p.fallback], &c), ENOSYS);
    }

    #[test]
    fn an_allow_list_that_left_clone3_to_its_default_would_break_the_fallback() {
        // The reason clone3 is allowed in the allow-list: with EPERM as its
        // default and the allow-list installed last, the tie goes to EPERM.
        let rules: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_exit_group, Vec::new())].into();
        let naive: BpfProgram = SeccompFilter::new(
            rules,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            ARCH,
        )
        .and_then(BpfProgram::try_from)
        .unwrap();
        let p = programs(syscalls::BASE, Violation::Errno);
        let c = call(libc::SYS_clone3, &[]);
        assert_eq!(run_stacked(&[&p.fallback, &naive], &c), EPERM);
        assert_eq!(run_stacked(&[&naive, &p.fallback], &c), ENOSYS);
    }

    #[test]
    fn other_architectures_are_killed() {
        let p = programs(syscalls::BASE, Violation::Errno);
        let mut c = call(libc::SYS_read, &[]);
        c.arch = AUDIT_ARCH_I386;
        assert_eq!(verdict(&p, &c), RET_KILL_PROCESS);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_numbers_match_nothing() {
        let p = programs(syscalls::BASE, Violation::Errno);
        assert_eq!(verdict(&p, &call(libc::SYS_read | 0x4000_0000, &[])), EPERM);
    }

    #[test]
    fn thread_clone_flags_are_checked() {
        let list = syscalls::set(&[syscalls::BASE, syscalls::THREADS]);
        let p = programs(&list, Violation::Errno);
        let thread = call(libc::SYS_clone, &[syscalls::THREAD_CLONE_FLAGS]);
        assert_eq!(verdict(&p, &thread), RET_ALLOW);
        let fork = call(libc::SYS_clone, &[syscalls::FORK_CLONE_FLAGS]);
        assert_eq!(verdict(&p, &fork), EPERM);
        let userns = syscalls::THREAD_CLONE_FLAGS | libc::CLONE_NEWUSER as u64;
        assert_eq!(verdict(&p, &call(libc::SYS_clone, &[userns])), EPERM);
        // The upper half counts too.
        let high = syscalls::THREAD_CLONE_FLAGS | 1 << 40;
        assert_eq!(verdict(&p, &call(libc::SYS_clone, &[high])), EPERM);
    }

    #[test]
    fn groups_with_the_same_syscall_are_alternatives() {
        let list = syscalls::set(&[syscalls::BASE, syscalls::THREADS, syscalls::FORK_WAIT]);
        let p = programs(&list, Violation::Errno);
        for flags in [syscalls::THREAD_CLONE_FLAGS, syscalls::FORK_CLONE_FLAGS] {
            assert_eq!(verdict(&p, &call(libc::SYS_clone, &[flags])), RET_ALLOW);
        }
        assert_eq!(verdict(&p, &call(libc::SYS_clone, &[0])), EPERM);
    }

    fn jit_mmap() -> Syscall {
        Syscall::new("SYS_mmap", libc::SYS_mmap, "JIT, for this test only")
    }

    fn build_error(list: &[Syscall]) -> String {
        match build(list, Violation::Errno) {
            Err(ProfileError::Filter(message)) => message,
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("the merge was not refused"),
        }
    }

    #[test]
    fn an_unconditional_entry_beside_a_checked_one_is_refused_in_either_order() {
        let mut after = syscalls::BASE.to_vec();
        after.push(jit_mmap());
        let mut before = vec![jit_mmap()];
        before.extend_from_slice(syscalls::BASE);
        for list in [after, before] {
            let message = build_error(&list);
            assert!(message.starts_with("mmap: "), "{message}");
            assert!(message.contains("\"JIT, for this test only\""), "{message}");
            assert!(
                message.contains("\"the allocator; never executable memory\""),
                "{message}"
            );
        }
    }

    #[test]
    fn base_and_exec_start_widen_only_as_declared() {
        let list = syscalls::set(&[syscalls::BASE, syscalls::EXEC_START]);
        let p = programs(&list, Violation::Errno);
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        assert_eq!(
            verdict(&p, &call(libc::SYS_mmap, &[0, 4096, rx])),
            RET_ALLOW
        );
        assert_eq!(
            verdict(&p, &call(libc::SYS_mprotect, &[0, 4096, rx])),
            RET_ALLOW
        );
        // Without the declaration, the same groups are refused.
        let undeclared: Vec<Syscall> = list
            .iter()
            .map(|entry| Syscall {
                widens: None,
                ..*entry
            })
            .collect();
        assert!(build_error(&undeclared).starts_with("mmap: "));
    }

    #[test]
    fn a_declared_widening_allows_any_arguments() {
        let mut list = syscalls::BASE.to_vec();
        list.push(jit_mmap().widening("this test maps code"));
        let p = programs(&list, Violation::Errno);
        let exec = call(libc::SYS_mmap, &[0, 4096, libc::PROT_EXEC as u64]);
        assert_eq!(verdict(&p, &exec), RET_ALLOW);
    }

    #[test]
    fn checks_that_drop_another_entrys_mask_condition_are_refused() {
        static PRIVATE: &[&[ArgCheck]] = &[&[ArgCheck::none_of(3, libc::MAP_SHARED as u64)]];
        let mut list = syscalls::BASE.to_vec();
        list.push(Syscall::new("SYS_mmap", libc::SYS_mmap, "private only").when(PRIVATE));
        assert!(build_error(&list).contains("\"private only\""));

        // Checks that keep the condition (and whose own conditions the other
        // entry keeps) are alternatives.
        static ANONYMOUS: &[&[ArgCheck]] = &[&[
            ArgCheck::none_of(2, libc::PROT_EXEC as u64),
            ArgCheck::eq(3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64),
        ]];
        let mut list = syscalls::BASE.to_vec();
        list.push(Syscall::new("SYS_mmap", libc::SYS_mmap, "anonymous").when(ANONYMOUS));
        let p = programs(&list, Violation::Errno);
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        assert_eq!(verdict(&p, &call(libc::SYS_mmap, &[0, 4096, rx])), EPERM);

        // A narrower entry beside a wider one is refused too: the wider one
        // lifts its condition (here: never writable).
        static READ_ONLY: &[&[ArgCheck]] = &[&[ArgCheck::none_of(
            2,
            (libc::PROT_EXEC | libc::PROT_WRITE) as u64,
        )]];
        let mut list = syscalls::BASE.to_vec();
        list.push(Syscall::new("SYS_mmap", libc::SYS_mmap, "read-only").when(READ_ONLY));
        assert!(
            build_error(&list).contains("refuses") && build_error(&list).contains("\"read-only\"")
        );

        // So are exact values that satisfy it.
        static EXACT: &[&[ArgCheck]] = &[&[ArgCheck::eq(2, libc::PROT_READ as u64)]];
        let mut list = syscalls::BASE.to_vec();
        list.push(Syscall::new("SYS_mmap", libc::SYS_mmap, "exact").when(EXACT));
        assert!(build(&list, Violation::Errno).is_ok());
        static EXACT_EXEC: &[&[ArgCheck]] = &[&[ArgCheck::eq(2, libc::PROT_EXEC as u64)]];
        let mut list = syscalls::BASE.to_vec();
        list.push(Syscall::new("SYS_mmap", libc::SYS_mmap, "exact exec").when(EXACT_EXEC));
        assert!(build_error(&list).contains("\"exact exec\""));
    }

    #[test]
    fn the_same_permission_twice_is_no_widening() {
        // Both unconditional (execve, openat in SPAWN and EXEC_START).
        let list = syscalls::set(&[syscalls::BASE, syscalls::SPAWN, syscalls::EXEC_START]);
        assert!(build(&list, Violation::Errno).is_ok());
        // FILES_READ's openat has checks that SPAWN's would lift.
        let list = syscalls::set(&[syscalls::BASE, syscalls::SPAWN, syscalls::FILES_READ]);
        assert!(build_error(&list).starts_with("openat: "));
    }

    #[test]
    fn executable_memory_is_refused_by_base() {
        let p = programs(syscalls::BASE, Violation::Errno);
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        assert_eq!(
            verdict(&p, &call(libc::SYS_mmap, &[0, 4096, rw])),
            RET_ALLOW
        );
        assert_eq!(verdict(&p, &call(libc::SYS_mmap, &[0, 4096, rx])), EPERM);
        assert_eq!(
            verdict(&p, &call(libc::SYS_mprotect, &[0, 4096, rx])),
            EPERM
        );
        assert_eq!(
            verdict(&p, &call(libc::SYS_mprotect, &[0, 4096, 0])),
            RET_ALLOW
        );
    }

    #[test]
    fn socket_families_are_checked() {
        let list = syscalls::set(&[syscalls::BASE, syscalls::CONNECT_TCP]);
        let p = programs(&list, Violation::Errno);
        let stream = (libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64;
        let inet = libc::AF_INET as u64;
        let inet6 = libc::AF_INET6 as u64;
        let unix = libc::AF_UNIX as u64;
        assert_eq!(
            verdict(&p, &call(libc::SYS_socket, &[inet, stream])),
            RET_ALLOW
        );
        assert_eq!(
            verdict(&p, &call(libc::SYS_socket, &[inet6, stream])),
            RET_ALLOW
        );
        assert_eq!(verdict(&p, &call(libc::SYS_socket, &[unix, stream])), EPERM);
        let dgram = libc::SOCK_DGRAM as u64;
        assert_eq!(verdict(&p, &call(libc::SYS_socket, &[inet, dgram])), EPERM);
        let raw = libc::SOCK_RAW as u64;
        assert_eq!(verdict(&p, &call(libc::SYS_socket, &[inet, raw])), EPERM);
    }

    #[test]
    fn read_only_open_refuses_write_flags() {
        let list = syscalls::set(&[syscalls::BASE, syscalls::FILES_READ]);
        let p = programs(&list, Violation::Errno);
        let at = |flags: i32| call(libc::SYS_openat, &[0, 0, flags as u64]);
        assert_eq!(
            verdict(&p, &at(libc::O_RDONLY | libc::O_CLOEXEC)),
            RET_ALLOW
        );
        assert_eq!(
            verdict(&p, &at(libc::O_RDONLY | libc::O_DIRECTORY)),
            RET_ALLOW
        );
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_CREAT, libc::O_TRUNC] {
            assert_eq!(verdict(&p, &at(flags)), EPERM, "flags {flags:#x}");
        }
    }

    #[test]
    fn fcntl_commands_are_checked() {
        let p = programs(syscalls::BASE, Violation::Errno);
        let f = |cmd: i32| call(libc::SYS_fcntl, &[3, cmd as u64]);
        assert_eq!(verdict(&p, &f(libc::F_DUPFD_CLOEXEC)), RET_ALLOW);
        assert_eq!(verdict(&p, &f(libc::F_SETFL)), RET_ALLOW);
        assert_eq!(verdict(&p, &f(libc::F_SETOWN)), EPERM);
        assert_eq!(verdict(&p, &f(libc::F_SETLK)), EPERM);
    }

    #[test]
    fn empty_argument_alternative_is_a_profile_error() {
        static EMPTY: &[&[ArgCheck]] = &[&[]];
        let mut list = syscalls::BASE.to_vec();
        list.push(Syscall::new("SYS_getuid", libc::SYS_getuid, "x").when(EMPTY));
        assert!(matches!(
            build(&list, Violation::Errno),
            Err(ProfileError::Filter(_))
        ));
    }
}
