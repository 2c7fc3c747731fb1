"""A control group per run: the kernel's own caps on a run's processes, memory and CPU share.

rlimits count per user and per process: a fork bomb inside the sandbox holds its 256 processes
spinning until the cell timeout, and a busy loop takes a whole core from the runs beside it. A
cgroup caps the run's whole process tree: `pids.max` (forks beyond it fail, and `pids.events`
says the cap was hit, so the run can be killed at once), the memory limit, and a CPU quota (CFS
bandwidth: at most `cpu_share` cores, whatever the run does). Both hierarchies are supported:
cgroup v2 (one tree, `/sys/fs/cgroup` or `/sys/fs/cgroup/unified` with the controllers enabled)
and v1 (a tree per controller, as on this machine). A run's group is made beneath the grader's
own group in each hierarchy (so the host's accounting of the grader still holds), and removed
when the run ends, its processes killed first.

Where no hierarchy can be written (no root, no delegation), `create` returns None with the
reason, and the sandbox keeps its rlimits (and says so in the run log).
"""

from __future__ import annotations

import os
import shlex
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grader.execute import SandboxLimits

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
"""CFS bandwidth period (microseconds); the quota is cpu_share × this."""


@dataclass
class RunGroup:
    """One run's control group(s)."""

    version: int
    """1 or 2."""
    dirs: dict[str, Path] = field(default_factory=dict)
    """Controller -> the group's folder (v2: one folder under the key "unified")."""
    max_processes: int = 0
    memory_bytes: int = 0
    """The memory limit (bytes; 0: none)."""
    caps: list[str] = field(default_factory=list)
    """The caps set, in words (for the run log)."""

    def attach(self, pid: int) -> None:
        """Moves process `pid` (and the children it starts afterwards) into the group.
        Raises OSError when the kernel refuses."""
        for d in set(self.dirs.values()):
            (d / "cgroup.procs").write_text(f"{pid}\n")

    def set_cpu_weight(self, weight: float) -> bool:
        """The group's share of the CPU against its sibling groups when the CPU is busy, as a
        multiple of the default (1.0; v1 cpu.shares 1024, v2 cpu.weight 100); the lowest the
        kernel allows for a group that should run only on otherwise idle CPU (`weight` near 0).
        The CPU quota (at most `cpu_share` cores) holds either way. False when it could not be set."""
        try:
            if self.version == 1:
                (self.dirs["cpu"] / "cpu.shares").write_text(f"{max(2, int(1024 * weight))}\n")
            else:
                (self.dirs["unified"] / "cpu.weight").write_text(f"{max(1, min(10000, int(100 * weight)))}\n")
            return True
        except (OSError, KeyError):
            return False

    def prefix(self) -> list[str]:
        """A command prefix that moves itself into the group, then execs the rest: everything the
        command starts (bwrap, its namespace's init, the kernel) is in the group from the start."""
        files = " ".join(shlex.quote(str(d / "cgroup.procs")) for d in sorted(set(self.dirs.values())))
        script = f'for f in {files}; do echo $$ > "$f" || exit 111; done; exec "$@"'
        return ["/bin/sh", "-c", script, "dllab-cgroup"]

    def describe(self) -> str:
        """One line for the run log: which caps hold."""
        return f"cgroup v{self.version}: " + ", ".join(self.caps)

    def pids(self) -> list[int]:
        """The processes in the group now."""
        d = self._dir("pids")
        try:
            return [int(x) for x in (d / "cgroup.procs").read_text().split()] if d else []
        except (OSError, ValueError):
            return []

    def _dir(self, controller: str) -> Path | None:
        """The group's folder for `controller` (v2: the one folder)."""
        return self.dirs.get("unified") if self.version == 2 else self.dirs.get(controller)

    def _keyed(self, controller: str, name: str, key: str) -> int:
        """`key`'s value in the group's flat-keyed file `name` ("key value" lines); 0 when the
        file or the key is missing."""
        d = self._dir(controller)
        try:
            for line in (d / name).read_text().splitlines() if d else ():
                k, _, value = line.partition(" ")
                if k == key:
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def process_cap_hits(self) -> int:
        """How many forks the process cap refused so far (`pids.events` "max")."""
        return self._keyed("pids", "pids.events", "max")

    def oom_kills(self) -> int:
        """How many of the group's processes the kernel's out-of-memory killer ended because the
        group reached its memory limit (v1 `memory.oom_control`, v2 `memory.events` "oom_kill")."""
        return self._keyed("memory", "memory.events" if self.version == 2 else "memory.oom_control", "oom_kill")

    def memory_peak(self) -> int:
        """The most memory the group held at once (bytes; 0 when the kernel does not say):
        v1 `memory.max_usage_in_bytes`, v2 `memory.peak` (Linux ≥ 5.19)."""
        d = self._dir("memory")
        try:
            return int((d / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")).read_text()) if d else 0
        except (OSError, ValueError):
            return 0

    def cpu_seconds(self) -> float:
        """CPU time the group's processes used (seconds): v2 `cpu.stat` usage_usec, v1
        `cpuacct.usage` (nanoseconds)."""
        if self.version == 2:
            return self._keyed("cpu", "cpu.stat", "usage_usec") / 1e6
        d = self._dir("cpuacct")
        try:
            return int((d / "cpuacct.usage").read_text()) / 1e9 if d else 0.0
        except (OSError, ValueError):
            return 0.0

    def kill(self) -> None:
        """SIGKILLs every process in the group (v2: cgroup.kill), until none is left (≤ 2 s)."""
        unified = self.dirs.get("unified")
        if unified is not None and (unified / "cgroup.kill").exists():
            try:
                (unified / "cgroup.kill").write_text("1\n")
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            left = self.pids()
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        """Kills what is left and removes the group's folders (errors ignored: a folder the
        kernel still holds is removed by a later run's `sweep`)."""
        self.kill()
        for d in set(self.dirs.values()):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


SWEEP_AGE_S = 300.0
"""A left-over run group (its grader killed before it removed it) is removed by a later run once
it is this old and empty; a younger one may be another worker's, about to be joined."""


def sweep(parent: Path, *, now: float | None = None) -> int:
    """Removes the empty `dllab-*` groups under `parent` older than SWEEP_AGE_S (the kernel
    refuses to remove a group that still holds a process). Returns how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    try:
        children = [d for d in parent.iterdir() if d.name.startswith("dllab-") and d.is_dir()]
    except OSError:
        return 0
    for d in children:
        try:
            if now - d.stat().st_mtime > SWEEP_AGE_S and not (d / "cgroup.procs").read_text().strip():
                d.rmdir()
                removed += 1
        except OSError:
            continue
    return removed


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """Controller (or "unified") -> this process's group path, from /proc/self/cgroup's text."""
    out: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            out["unified"] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def available(root: Path = ROOT) -> tuple[int, str]:
    """(1 or 2, "") when run groups can be made here, else (0, why not). DLLAB_CGROUPS=0 in the
    grader's environment turns them off (the rlimits alone, as on a host without groups)."""
    if os.environ.get("DLLAB_CGROUPS", "").strip() == "0":
        return 0, "turned off by DLLAB_CGROUPS=0"
    try:
        own = _own_paths(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        return 0, f"/proc/self/cgroup cannot be read ({exc.strerror})"
    v1 = [c for c in ("pids", "memory", "cpu") if (root / c / "cgroup.procs").exists()]
    if len(v1) == 3:
        base = root / "pids" / own.get("pids", "/").lstrip("/")
        return (1, "") if os.access(base, os.W_OK) else (0, f"{base} is not writable (no root, no delegation)")
    for unified in (root, root / "unified"):
        controllers = unified / "cgroup.controllers"
        if controllers.exists():
            have = set(controllers.read_text().split())
            if {"pids", "memory", "cpu"} <= have:
                base = unified / own.get("unified", "/").lstrip("/")
                return (2, "") if os.access(base, os.W_OK) else (0, f"{base} is not writable")
            return 0, f"cgroup v2 at {unified} lacks controllers ({', '.join(sorted({'pids', 'memory', 'cpu'} - have))})"
    return 0, "no cgroup hierarchy with the pids, memory and cpu controllers is mounted"


def create(*, max_processes: int, memory_bytes: int | None, cpu_share: float | None, name: str = "",
           root: Path = ROOT) -> tuple[RunGroup | None, str]:
    """A new group with these caps: processes (pids.max), memory (bytes; None = none) and CPU
    (at most `cpu_share` cores, e.g. 1.0; None = no quota). Returns (group, "") or (None, why
    the kernel's groups cannot be used here)."""
    version, why = available(root)
    if not version:
        return None, why
    own = _own_paths(Path("/proc/self/cgroup").read_text())
    # the grader's pid: on a shared host, whose groups these are (`ls /sys/fs/cgroup/pids | grep dllab-`)
    leaf = f"dllab-{os.getpid()}-{name or 'run'}-{uuid.uuid4().hex[:8]}"
    group = RunGroup(version=version, max_processes=max_processes, memory_bytes=memory_bytes or 0)
    quota_us = max(1000, int(cpu_share * PERIOD_US)) if cpu_share else 0
    try:
        if version == 1:
            for c in ("pids", "memory", "cpu", "cpuacct"):
                if not (root / c).is_dir():
                    continue
                parent = root / c / own.get(c, "/").lstrip("/")
                sweep(parent)
                d = parent / leaf
                d.mkdir()
                group.dirs[c] = d
            (group.dirs["pids"] / "pids.max").write_text(f"{max_processes}\n")
            if memory_bytes:
                (group.dirs["memory"] / "memory.limit_in_bytes").write_text(f"{memory_bytes}\n")
            if quota_us:
                (group.dirs["cpu"] / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (group.dirs["cpu"] / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
        else:
            unified = root if (root / "cgroup.controllers").exists() else root / "unified"
            parent = unified / own.get("unified", "/").lstrip("/")
            try:  # the parent must hand the controllers down
                (parent / "cgroup.subtree_control").write_text("+pids +memory +cpu\n")
            except OSError:
                pass
            sweep(parent)
            d = parent / leaf
            d.mkdir()
            group.dirs["unified"] = d
            (d / "pids.max").write_text(f"{max_processes}\n")
            if memory_bytes:
                (d / "memory.max").write_text(f"{memory_bytes}\n")
            if quota_us:
                (d / "cpu.max").write_text(f"{quota_us} {PERIOD_US}\n")
    except OSError as exc:
        group.remove()
        return None, f"a run group could not be made ({exc.strerror or exc})"
    group.caps = [f"at most {max_processes} processes and threads"]
    if memory_bytes:
        group.caps.append(f"memory {memory_bytes >> 20} MiB")
    if cpu_share:
        group.caps.append(f"at most {cpu_share:g} CPU core(s)")
    return group, ""


def for_run(limits: "SandboxLimits", *, cpu_share: float | None, name: str = "") -> tuple[RunGroup | None, str]:
    """The group of one sandboxed run under `limits`: at most `limits.max_processes` processes
    and threads (bwrap's two processes included, so RLIMIT_NPROC, which does not count them, is
    never the one reached), memory for the kernel and everything it starts plus its two tmpfs
    (/tmp and /dev/shm are RAM charged to the group: `memory_bytes + max_work_bytes +
    max_shm_bytes`), and `cpu_share` cores. (None, why) where the host gives no groups."""
    memory = limits.memory_bytes + limits.max_work_bytes + limits.max_shm_bytes if limits.memory_bytes else None
    return create(max_processes=limits.max_processes, memory_bytes=memory, cpu_share=cpu_share, name=name)
