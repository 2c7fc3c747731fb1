"""The seccomp filter bubblewrap loads into every sandbox: system calls a notebook never needs.

bwrap already gives the sandbox its own namespaces and (as root) a uid without capabilities,
so most of these calls would fail anyway. The filter is the second wall, for what needs no
capability: new user namespaces (`unshare -r`, from which mounts and the rest become
possible), the kernel keyring (not namespaced: shared with the host), io_uring, BPF,
perf events, userfaultfd, ptrace of the sandbox's own processes, personality flags that turn
off address randomisation, and the mount, module and kexec families.

Every denied call fails with EPERM (the process is never killed), so code that only probes
for a feature carries on. `clone3` fails with ENOSYS instead: its flags sit in a struct the
filter cannot read, and ENOSYS is what makes glibc and Python fall back to `clone`, whose
flags it can: threads, `fork`, `subprocess` and DataLoader workers keep working, and only a
clone with namespace flags is refused. A system call of another architecture (a 32-bit
`int 0x80` from a 64-bit process, which would bypass the table) fails with ENOSYS too.

The program is built with libseccomp (through `pyseccomp`, a ctypes binding of the system's
libseccomp2) and handed to bwrap as a compiled BPF file (`bwrap --seccomp FD`). Where
libseccomp or the kernel's seccomp support is missing, `program()` is None and
`unavailable_reason()` says why: the grader warns once and goes on with bwrap alone.
"""

from __future__ import annotations

import errno
import functools
import tempfile
from pathlib import Path
from typing import Any

DENIED: tuple[str, ...] = (
    # namespaces: entering one (setns); unshare and clone are refused by flag below
    "setns",
    # mounts, old and new API, and changing root
    "mount", "umount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr",
    # the kernel keyring is not namespaced: it is shared with the host and other runs
    "keyctl", "add_key", "request_key",
    # kernel attack surface no training code uses
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register",
    # reading or steering other processes, even the sandbox's own
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # kernel modules, kexec and whole-machine switches
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "vhangup", "iopl", "ioperm",
    "uselib", "nfsservctl", "_sysctl", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "sethostname", "setdomainname",
)
"""Always EPERM."""

NAMESPACE_FLAGS: dict[str, int] = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
"""`clone` and `unshare` with any of these fail with EPERM; without them they work."""
CLONE_NEWTIME = 0x00000080
"""Only `unshare` takes it: in `clone`'s flags these bits are the exit signal."""

PERSONALITY_FLAGS: dict[str, int] = {
    "ADDR_NO_RANDOMIZE": 0x0040000, "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000,
    "READ_IMPLIES_EXEC": 0x0400000, "ADDR_LIMIT_32BIT": 0x0800000, "ADDR_LIMIT_3GB": 0x8000000,
}
"""`personality()` setting any of these fails with EPERM; the query 0xffffffff still answers."""
_PERSONALITY_QUERY = 0xFFFFFFFF


@functools.lru_cache(maxsize=1)
def _build() -> tuple[bytes | None, str | None]:
    """(BPF program, None) or (None, why there is none); built once per process."""
    if not Path("/proc/self/status").is_file() or "Seccomp:" not in Path("/proc/self/status").read_text():
        return None, "this kernel has no seccomp support"
    try:
        import pyseccomp as sc
    except ImportError:
        return None, "the Python package pyseccomp is not installed (pip install pyseccomp)"
    except (OSError, RuntimeError) as exc:  # pyseccomp raises RuntimeError when libseccomp2 is absent
        return None, f"libseccomp could not be loaded ({exc}; apt-get install -y libseccomp2)"
    try:
        return _compile(sc), None
    except (OSError, ValueError) as exc:
        return None, f"libseccomp could not build the filter ({exc})"


def _compile(sc: Any) -> bytes:
    """The filter as BPF bytes; `sc` is the pyseccomp module."""
    deny = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.ERRNO(errno.ENOSYS))
    arch = sc.system_arch()
    for name in DENIED:
        if _known(sc, arch, name):
            f.add_rule(deny, name)
    # s390 passes clone's stack first and its flags second; every other architecture flags first.
    clone_flags = 1 if arch in (sc.Arch.S390, sc.Arch.S390X) else 0
    for flag in NAMESPACE_FLAGS.values():
        f.add_rule(deny, "clone", sc.Arg(clone_flags, sc.MASKED_EQ, flag, flag))
    for flag in (*NAMESPACE_FLAGS.values(), CLONE_NEWTIME):
        f.add_rule(deny, "unshare", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    if _known(sc, arch, "clone3"):
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # libseccomp compares an argument once per rule: "flag set and not the query" is written as
    # "flag set and bit b clear", one rule per other bit b (the query is the value with all set).
    for flag in PERSONALITY_FLAGS.values():
        for b in range(32):
            if 1 << b != flag:
                f.add_rule(deny, "personality", sc.Arg(0, sc.MASKED_EQ, flag | 1 << b, flag))
    f.add_rule(deny, "personality", sc.Arg(0, sc.GT, _PERSONALITY_QUERY))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def _known(sc: Any, arch: int, name: str) -> bool:
    """Whether this architecture (and this libseccomp) has the system call at all."""
    try:
        return sc.resolve_syscall(arch, name) >= 0
    except (OSError, ValueError):
        return False


def program() -> bytes | None:
    """The compiled BPF program (bytes, native architecture), or None when it cannot be built."""
    return _build()[0]


def unavailable_reason() -> str | None:
    """Why there is no filter, in one sentence fragment; None when there is one."""
    return _build()[1]


def warning() -> str | None:
    """The one-line warning for the TA when sandboxes run without the filter, else None."""
    reason = unavailable_reason()
    if reason is None:
        return None
    return (f"WARNING: no seccomp filter for the sandbox: {reason}. Student code still runs in "
            f"bubblewrap, but can create user namespaces and use io_uring, the keyring and BPF.")
