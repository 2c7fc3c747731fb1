"""The bubblewrap sandbox: the command line that confines one student kernel, and its limits.

What the sandboxed process sees (everything else of the host is absent):

* `/usr` (and the `/bin`, `/lib*` links), a few files of `/etc`, and the Python installation
  (the venv and the interpreter it was made from), all read-only;
* a private `/tmp`: a tmpfs whose size is the work-folder quota, holding `/tmp/work`
  (writable) with the working copy of the whole submission at `/tmp/work/submission`, and
  `/tmp/home` ($HOME); the process starts in the folder of the notebook or script it runs,
  inside that copy, as Jupyter and `python path/to/script.py` from its folder do;
* a private `/dev/shm`: a tmpfs of its own size limit (`SandboxLimits.max_shm_bytes`, the
  rubric's `limits.shared_memory`), writable, where multiprocessing's semaphores and
  DataLoader workers' batches live;
* the lab's datasets, read-only, at the paths the handouts name (relative paths are taken
  inside the working copy, e.g. `data` for code that calls `download=True`);
* the kernel's connection file and ZeroMQ `ipc` sockets, in a folder of its own;
* its own PID, network (only `lo`), IPC, UTS and cgroup namespaces; no network at all;
* a seccomp filter (grader/seccomp.py) refusing new namespaces, mounts, the keyring,
  io_uring, BPF, ptrace and the like with EPERM;
* nothing of the grader's own installation (grader/hidden.py): the mounts that would show
  its package, rubrics, templates or checkout have them covered.

When the grader runs as root, bwrap runs privileged (no user namespace) and the kernel is
started through `setpriv` as a uid of its own with every capability dropped, so it is a
real unprivileged host uid: root-owned files stay unreadable to it and RLIMIT_NPROC counts
only its own processes. As a normal user, bwrap makes a user namespace (RLIMIT_NPROC is then
counted per namespace on Linux >= 5.14).

Only the standard library is imported here, and nothing from the rest of the grader
except `errors`, `hidden` and `seccomp` (the same), so the module stays easy to audit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader import hidden, seccomp
from grader.errors import GraderError

HIDDEN_SPLIT_DIR = "dllab-hidden"
"""grader.hidden_split.HIDDEN_DIR (not imported: that module pulls in the dataset generators)."""

if TYPE_CHECKING:
    from grader.execute import SandboxLimits

WORK_DIR = "/tmp/work"
"""Writable inside the sandbox; the handout tells students to restructure Food-11 here."""
CWD = "/tmp/work/submission"
"""The working copy of the submission: the notebook's current directory."""
HOME = "/tmp/home"
SUBMISSION_RO = "/tmp/.dllab/submission"
"""Read-only view of the staged submission, copied to `CWD` before the kernel starts."""

INSTALL_HINT = (
    "bubblewrap (bwrap) is not installed or cannot create namespaces here: install it "
    "(`apt-get install -y bubblewrap`, `dnf install bubblewrap`), and where unprivileged user "
    "namespaces are disabled run the grader as root or enable them "
    "(`sysctl kernel.unprivileged_userns_clone=1`); "
    "on your own machine only, `--sandbox none` runs notebooks without isolation"
)
NONE_WARNING = (
    "WARNING: --sandbox none: student code runs with your own permissions, network and files. "
    "Use this only to check your own submission on your own machine."
)

# /etc is not mounted whole: only what the dynamic linker, fonts and timezone need.
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts",
              "localtime", "timezone", "mime.types", "nsswitch.conf", "host.conf")
USERNS_UID = 1000
"""The uid seen inside a user namespace (normal-user mode); never 0, so bwrap drops all caps."""
_UID_BASE = 1_990_000
"""Sandbox uids (root mode) are taken from here up; none of them is a real account."""
_UID_SLOTS = 4096


def bwrap_path() -> str | None:
    """The bwrap executable, or None when it is not installed."""
    return shutil.which("bwrap")


def is_root() -> bool:
    return os.geteuid() == 0


_warned = False


def check_bwrap(*, log: Callable[[str], None] | None = None) -> None:
    """Raise GraderError with install advice unless bwrap can really create a sandbox here,
    with the seccomp filter loaded. Without a filter (no libseccomp) the sandbox still runs:
    `log` (default: stderr) gets a warning, once per process."""
    global _warned
    exe = bwrap_path()
    if exe is None:
        raise GraderError(INSTALL_HINT)
    probe = [exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
             "--proc", "/proc", "--dev", "/dev"]
    if not is_root():
        probe.insert(1, "--unshare-user")
    _run_probe(probe + ["true"], INSTALL_HINT)
    warning = seccomp.warning()
    if warning is not None:
        if not _warned:
            (log or (lambda msg: print(msg, file=sys.stderr, flush=True)))(warning)
            _warned = True
        return
    with tempfile.TemporaryDirectory(prefix="dllab-seccomp-") as tmp:
        _run_probe([*_seccomp_prefix(Path(tmp)), *probe, "--seccomp", str(SECCOMP_FD), "true"],
                   "bwrap could not load the grader's seccomp filter: install a bubblewrap that "
                   "supports --seccomp (0.1.3 or later, `apt-get install -y bubblewrap`)")


def _run_probe(cmd: list[str], hint: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraderError(f"{hint} ({exc})") from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise GraderError(f"{hint} (bwrap said: {detail[-1] if detail else done.returncode})")


def python_roots() -> list[Path]:
    """The folders holding this Python: the venv and the installation it was made from."""
    roots: list[Path] = []
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              str(Path(os.path.realpath(sys.executable)).parent.parent)):
        path = Path(os.path.realpath(p))
        if path == Path("/") or any(path == r or r in path.parents for r in roots):
            continue
        roots = [r for r in roots if path not in r.parents] + [path]
    # Under /usr the system mount already has it.
    return [r for r in roots if not (r == Path("/usr") or Path("/usr") in r.parents)]


@contextlib.contextmanager
def allocate_uid(lock_dir: Path | None = None) -> Iterator[int]:
    """A host uid no other concurrent run is using (root mode), held by an flock until exit.

    Each run gets its own uid so RLIMIT_NPROC, which the kernel counts per uid, is a per-run
    limit: one student's fork bomb cannot stop another run from starting processes.
    """
    lock_dir = lock_dir or Path(tempfile.gettempdir()) / "dllab-uids"
    lock_dir.mkdir(mode=0o700, exist_ok=True)
    start = os.getpid() % _UID_SLOTS
    for k in range(_UID_SLOTS):
        uid = _UID_BASE + (start + k) % _UID_SLOTS
        fd = os.open(lock_dir / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if _uid_has_processes(uid):
            # The last run with this uid is still being torn down (a killed fork bomb takes a
            # moment to reap); its processes would count against the next run's RLIMIT_NPROC.
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)
        return
    raise GraderError(f"no free sandbox uid in {lock_dir} (too many concurrent runs?)")


def _uid_has_processes(uid: int) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    return True
            except OSError:
                continue
    return False


def rlimit_prefix(limits: SandboxLimits) -> list[str]:
    """`prlimit ... --` setting the per-process limits that every sandboxed process inherits.

    Memory is RLIMIT_DATA (private writable memory) rather than RLIMIT_AS: CUDA reserves
    tens of GB of address space it never touches, which RLIMIT_AS would refuse, while those
    reservations are PROT_NONE and do not count against RLIMIT_DATA. It is a per-process
    limit; a cgroup would cap the whole tree (left for hosts that delegate one).
    """
    args = ["prlimit", f"--nproc={limits.max_processes}", f"--fsize={limits.max_file_bytes}",
            "--core=0", f"--nofile={limits.max_open_files}"]
    if limits.memory_bytes:
        args.append(f"--data={limits.memory_bytes}")
    exe = shutil.which("prlimit")
    if exe is None:
        raise GraderError("prlimit (util-linux) is needed to set the sandbox limits: apt-get install -y util-linux")
    return [exe, *args[1:], "--"]


def gpu_args(gpus: Sequence[int]) -> list[str]:
    """Device nodes for the given NVIDIA GPUs, /dev/nvidia<n> for each n of `gpus` and no other
    (a run's one GPU, grader.gpu), and the driver's control nodes; nothing without GPUs."""
    if not gpus:
        return []
    args: list[str] = []
    for n in gpus:
        args += ["--dev-bind-try", f"/dev/nvidia{n}", f"/dev/nvidia{n}"]
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps"):
        args += ["--dev-bind-try", f"/dev/{name}", f"/dev/{name}"]
    # The CUDA runtime reads PCI topology from sysfs.
    args += ["--ro-bind-try", "/sys", "/sys"]
    return args


def mps_args(env: Mapping[str, str]) -> list[str]:
    """The NVIDIA MPS pipe and log folders the run's environment names (grader.gpu), read-only at
    their own paths: a client connects to the daemon's sockets and pipes, which needs no write
    access to the mount. After the private /tmp, which would hide /tmp/nvidia-mps."""
    args: list[str] = []
    for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        folder = env.get(key)
        if folder and os.path.isabs(folder) and Path(folder).is_dir():
            args += _traversable_parents(Path(folder), skip=("/", "/tmp"))
            args += ["--ro-bind", folder, folder]
    return args


_SYSTEM_TOPS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
SECCOMP_FD = 3
"""The descriptor bwrap reads the seccomp program from (opened by `_seccomp_prefix`)."""


def _system_binds() -> list[str]:
    """The system folders mounted whole: /usr, and the top-level ones that are not links."""
    return ["/usr", *(f"/{t}" for t in _SYSTEM_TOPS if Path(f"/{t}").is_dir() and not Path(f"/{t}").is_symlink())]


def _seccomp_prefix(run_dir: Path) -> list[str]:
    """A shell that opens the compiled seccomp filter as SECCOMP_FD for bwrap (`--seccomp`)
    and replaces itself with it: the kernel launcher gives a child no other descriptors.
    Nothing when there is no filter (grader.seccomp: libseccomp is missing; warned once)."""
    program = seccomp.program()
    if program is None:
        return []
    path = run_dir / "seccomp.bpf"
    path.write_bytes(program)
    return ["/bin/sh", "-c", f'exec "$@" {SECCOMP_FD}<"$0"', str(path)]


def passwd_text(uid: int) -> tuple[str, str]:
    """/etc/passwd and /etc/group for the sandbox: getpass/torch look the uid up."""
    passwd = f"root:x:0:0::/root:/bin/sh\nstudent:x:{uid}:{uid}::{HOME}:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    group = f"root:x:0:\nstudent:x:{uid}:\nnogroup:x:65534:\n"
    return passwd, group


def build_command(
    inner: Sequence[str],
    *,
    run_dir: Path,
    kernel_dir: Path,
    submission: Path,
    mounts: Mapping[str, str],
    limits: SandboxLimits,
    env: Mapping[str, str],
    uid: int | None,
    gpus: Sequence[int] = (),
    bwrap: str = "bwrap",
    workdir: str = "",
    copy_errors: str | None = None,
) -> list[str]:
    """The full command line: prlimit, bwrap and the mounts, then (as root) setpriv, then `inner`.

    `run_dir` is a host folder for this run's generated files (passwd, group, hosts);
    `kernel_dir` holds the connection file and sockets and is mounted at the same path;
    `submission` is the staged copy, mounted read-only and copied to `CWD` by the sandbox
    user before `inner` starts. `uid` is the host uid to drop to (root mode) or None to
    use a user namespace. `mounts` maps sandbox paths (absolute, or relative to `CWD`) to
    host folders, all read-only. `workdir` is the folder, relative to the submission, that
    `inner` starts in (the notebook's own folder); empty for the submission's root.
    `copy_errors`, a file in `kernel_dir`, receives what could not be copied into `CWD`.
    """
    sandbox_uid = uid if uid is not None else USERNS_UID
    passwd, group = passwd_text(sandbox_uid)
    (run_dir / "passwd").write_text(passwd)
    (run_dir / "group").write_text(group)
    (run_dir / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")

    cmd = [*rlimit_prefix(limits), *_seccomp_prefix(run_dir), bwrap]
    if seccomp.program() is not None:
        cmd += ["--seccomp", str(SECCOMP_FD)]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--hostname", "sandbox", "--clearenv"]
    if uid is None:
        cmd += ["--unshare-user", "--disable-userns", "--uid", str(USERNS_UID), "--gid", str(USERNS_UID)]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for top in _SYSTEM_TOPS:
        p = Path("/") / top
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), str(p)]
    cmd += ["--perms", "0755", "--dir", "/etc"]
    for name in _ETC_FILES:
        cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts"):
        cmd += ["--ro-bind", str(run_dir / name), f"/etc/{name}"]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    # bwrap's /dev/shm is a root-owned folder on the /dev tmpfs, so multiprocessing.SemLock
    # (DataLoader(num_workers=N), Pool, Queue) fails with PermissionError: each run gets a
    # writable tmpfs of its own, size-capped like /tmp.
    cmd += ["--size", str(limits.max_shm_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]
    cmd += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    cmd += gpu_args(gpus)
    cmd += ["--size", str(limits.max_work_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    cmd += mps_args(env)
    cmd += ["--perms", "1777", "--dir", WORK_DIR, "--perms", "0777", "--dir", CWD,
            "--perms", "0777", "--dir", HOME]
    # After the private /tmp: a checkout (and its venv) under /tmp would be hidden by it.
    roots = python_roots()
    for root in roots:
        cmd += _traversable_parents(root, skip=("/", "/tmp"))
        cmd += ["--ro-bind", str(root), str(root)]
    # The mount point's parent is made by bwrap as root, mode 0700: the sandbox uid could
    # not read the submission to copy it, and the kernel would start in an empty folder.
    cmd += _traversable_parents(Path(SUBMISSION_RO), skip=("/", "/tmp"))
    cmd += ["--ro-bind", str(submission), SUBMISSION_RO]
    cmd += _traversable_parents(kernel_dir, skip=("/", "/tmp"))
    cmd += ["--bind", str(kernel_dir), str(kernel_dir)]
    for inside, host in sorted(mounts.items()):
        target = inside if inside.startswith("/") else os.path.normpath(f"{CWD}/{inside}")
        # Inside the working copy the folders around a mount (`data/` around `data/Food-11`)
        # are the student's own: writable, and the copy below fills them with their files.
        mode = "0777" if target.startswith(CWD + "/") else "0755"
        cmd += _traversable_parents(Path(target), skip=("/", "/tmp", WORK_DIR, CWD), mode=mode)
        cmd += ["--ro-bind", str(host), target]
        # A dataset root given whole holds the grader's hidden test split (grader.hidden_split):
        # mode 0700 already, and not even its name is shown.
        if (Path(host) / HIDDEN_SPLIT_DIR).is_dir():
            cmd += ["--tmpfs", f"{target}/{HIDDEN_SPLIT_DIR}", "--remount-ro", f"{target}/{HIDDEN_SPLIT_DIR}"]
    # Last, over every read-only mount that shows it: nothing of the grader's installation
    # (rubrics, templates, reference code, its checkout) is visible to student code.
    (run_dir / "empty").write_bytes(b"")
    os.chmod(run_dir / "empty", 0o644)
    binds = [(str(r), str(r)) for r in roots] + [(d, d) for d in _system_binds()]
    binds += [(str(host), inside if inside.startswith("/") else os.path.normpath(f"{CWD}/{inside}"))
              for inside, host in mounts.items()]
    cmd += hidden.hide_args(binds, empty_file=str(run_dir / "empty"))
    cmd += ["--chdir", CWD, "--"]
    if uid is not None:
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    # The copy runs as the sandbox user, inside the size-capped /tmp, so it counts against
    # the quota and cannot write anywhere else. A file that cannot be copied (the quota is
    # full) is skipped rather than fatal; cp's complaints go to `copy_errors` (a path the
    # host reads afterwards: see `place_mounts` for the files a mount would hide) or to the
    # run's log. The working folder is passed as an argument, never spliced into the
    # script: student folder names may hold quotes or `$`.
    start = os.path.normpath(f"{CWD}/{workdir}") if workdir else CWD
    if not (start == CWD or start.startswith(CWD + "/")):
        raise GraderError(f"working folder {workdir!r} is outside the submission")
    errors = f" 2>{shlex.quote(copy_errors)}" if copy_errors else ""
    copy = f"cp -R {SUBMISSION_RO}/. {CWD}/{errors}; cd \"$1\" || exit 111; shift; exec \"$@\""
    return cmd + ["/bin/sh", "-c", copy, "sh", start, *inner]


def check_mounts(mounts: Mapping[str, str], *, other_uid: bool) -> None:
    """Raise GraderError for a dataset folder that is missing, or (when the sandbox runs as
    a uid of its own) that other users cannot read: the notebook would fail confusingly."""
    for inside, host in mounts.items():
        path = Path(host)
        if not path.is_dir():
            raise GraderError(f"dataset folder {host} (for {inside}) does not exist")
        if not other_uid:
            continue
        # the hidden test split is the grader's alone: unreadable on purpose, and hidden inside
        for p in [path, *[c for c in list(path.iterdir())[:50] if c.name != HIDDEN_SPLIT_DIR]]:
            need = 0o005 if p.is_dir() else 0o004
            if not p.is_symlink() and (p.stat().st_mode & need) != need:
                raise GraderError(f"dataset folder {host} is not readable by the sandbox user "
                                  f"({p} has mode {p.stat().st_mode & 0o777:o}): chmod -R o+rX {host}")


def _traversable_parents(path: Path, *, skip: Sequence[str], mode: str = "0755") -> list[str]:
    """`--dir` for each parent of a mount point, mode 0755: bwrap would otherwise copy the
    host's mode (e.g. /root's 0700) and the sandbox uid could not reach the mount."""
    args: list[str] = []
    for parent in reversed(Path(path).parents):
        if str(parent) not in skip:
            args += ["--perms", mode, "--dir", str(parent)]
    return args


@dataclass(frozen=True)
class Placement:
    """Where a run's dataset mounts go, and what of the submission they displace."""

    mounts: dict[str, str]
    """Sandbox path (absolute, or relative to the working copy's root) -> host folder."""
    hidden: tuple[str, ...]
    """Folders of the submission a mount lies over (relative paths): the mount wins, since
    the grader's copy of the dataset is complete, and their files are not copied."""
    notes: tuple[str, ...]
    """One sentence per displaced file or skipped mount, for the student and the TA."""
    files: tuple[str, ...] = ()
    """The submission's files in `hidden` (relative to its root): not placed, so code that
    reads one fails for the grader's reason (grader.diagnose.environment_problems)."""


MAX_LISTED = 3


def place_mounts(mounts: Mapping[str, str], *, workdir: str, submission: Path | None) -> Placement:
    """Resolve relative mounts (`data/cifar-10-batches-py`, torchvision's `root='./data'`)
    in the working copy's root and again in `workdir`, the folder the run starts in, so that
    `./data` means the same wherever a notebook lies; absolute ones are kept as they are.

    Only the dataset's own folder is mounted, inside a `data/` that stays the student's:
    their other files there are copied in and they can write beside the dataset. Where the
    submission (`submission`, the staged copy) has files at a mount's place, the mount wins
    and `Placement.hidden` lists them; where it has a *file* on the mount's path (a file
    named `data`), that mount is skipped and the file kept. Each case is a note: a file of
    the submission is never dropped silently. With `submission` None only the places are
    computed (grader.verify: where a run's `./data` was).
    """
    placed: dict[str, str] = {}
    hidden: list[str] = []
    notes: list[str] = []
    not_placed: list[str] = []
    bases = [""] + ([workdir] if workdir not in ("", ".") else [])
    for inside, host in sorted(mounts.items()):
        if inside.startswith("/"):
            placed[inside] = host
            continue
        for base in bases:
            rel = posixpath.normpath(posixpath.join(base, inside))
            if rel in placed or rel == "." or rel.startswith("../"):
                continue
            parts = rel.split("/")
            blocker = None if submission is None else next(
                ("/".join(parts[:i]) for i in range(1, len(parts) + 1)
                 if _is_file(submission / "/".join(parts[:i]))), None)
            if blocker is not None:
                notes.append(f"`{blocker}` in your submission is a file where the grader puts the dataset "
                             f"folder `{rel}`: the file was kept, so that dataset is not at ./{inside} "
                             f"for code started in `{base or '.'}`")
                continue
            files = [] if submission is None else _files_under(submission / rel)
            if files:
                hidden.append(rel)
                not_placed += [f"{rel}/{f}" for f in files]
                shown = ", ".join(f"`{rel}/{f}`" for f in files[:MAX_LISTED])
                more = f" and {len(files) - MAX_LISTED} more" if len(files) > MAX_LISTED else ""
                notes.append(f"`{rel}/` in your submission ({shown}{more}) was replaced by the grader's own "
                             f"copy of that dataset, mounted read-only at the same path")
            placed[rel] = host
    return Placement(placed, tuple(hidden), tuple(notes), tuple(not_placed))


def _is_file(path: Path) -> bool:
    return path.is_symlink() or (path.exists() and not path.is_dir())


def _files_under(folder: Path, limit: int = 1000) -> list[str]:
    """Files (not folders) below `folder`, relative to it, sorted; at most `limit` are looked at."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [os.path.relpath(os.path.join(dirpath, n), folder) for n in sorted(filenames)]
        if len(found) >= limit:
            break
    return found


def stage_submission(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` without following links and make it readable by the sandbox uid."""
    shutil.copytree(src, dest, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o644)


def pid_namespace(bwrap_pid: int) -> str | None:
    """The PID namespace of the sandbox started by bwrap `bwrap_pid` (its first child's)."""
    try:
        children = Path(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children").read_text().split()
        return os.readlink(f"/proc/{children[0]}/ns/pid") if children else None
    except OSError:
        return None


def count_tasks(namespace: str) -> int:
    """Processes and threads in a PID namespace: what RLIMIT_NPROC counts for the sandbox."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") == namespace:
                total += len(os.listdir(f"/proc/{name}/task"))
        except OSError:
            continue
    return total


def boot_time_s() -> float:
    """Seconds since boot on the clock `process_snapshot`'s start times use."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_snapshot(namespace: str, *, limit: int = 5000) -> list[dict[str, float | int]]:
    """The processes of a sandbox's PID namespace (threads not listed): each with `pid`
    (the host's), `nspid` (inside the sandbox: 1 is bwrap's init, 2 the kernel), `sid` (its
    session, as the host numbers it) and `start_s` (started this many seconds after boot)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: list[dict[str, float | int]] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or len(found) >= limit:
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != namespace:
                continue
            fields = stat_fields(int(name))
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")), "0")
        # stat_fields: state ppid pgrp session ...; starttime is field 22 of stat.
        found.append({"pid": int(name), "nspid": int(nspid), "sid": int(fields[3]),
                      "start_s": int(fields[19]) / ticks})
    return found


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command's name (which may hold spaces and
    parentheses): state, ppid, pgrp, session, ... Raises OSError when the process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (a process started in a session of its own, and
    what it started that did not leave it, process groups of their own included)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if int(stat_fields(int(name))[3]) == sid:
                os.kill(int(name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (bwrap). bwrap's PID-1 child has
    PR_SET_PDEATHSIG, so the whole PID namespace, every student process in it, dies too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def namespace_pids(namespace: str) -> list[int]:
    """Every process whose PID namespace is `namespace` (as `pid_namespace` gives it)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == namespace:
                    pids.append(int(name))
            except OSError:
                continue
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        return stat_fields(pid)[:1] == ["Z"]
    except OSError:
        return True  # gone meanwhile


def kill_namespace(namespace: str, *, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every process left in a sandbox's PID namespace until none is left or
    `timeout_s` seconds have passed; returns the pids still there (normally none).

    Killing bwrap normally takes the whole namespace down with it (its init dies and the
    kernel kills the rest); this is the check that it did, and the cleanup when it did not.
    Processes are found by namespace, so nothing outside this one sandbox is touched.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        # A zombie is already dead: only its parent (outside the sandbox once bwrap is gone,
        # often the host's init, which reaps at its own pace) can remove it; waiting for
        # that cost every run about 1.5 s.
        left = [pid for pid in namespace_pids(namespace) if not _is_zombie(pid)]
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
