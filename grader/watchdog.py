"""A thread that watches one sandboxed run from outside: its process count, its wall time
and whether its sandbox is still alive, every WATCH_INTERVAL_S seconds.

Why a thread: the limits must be acted on when they are reached, whatever the kernel and
the event loop driving it are doing. A fork bomb that sits at RLIMIT_NPROC keeps every
process spinning and may never let the kernel answer, and nbclient, after interrupting a
cell that timed out, waits a whole further cell timeout without checking that the kernel
is alive. Checking only at the end of a cell therefore stopped such a run after one or two
cell timeouts (an hour with the lab's rubric) instead of a second.

Only the standard library and `sandbox` are used, like sandbox.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from grader import sandbox

if TYPE_CHECKING:
    from grader.cgroups import RunGroup

WATCH_INTERVAL_S = 0.5
"""How often the process count, the deadline and the sandbox's liveness are sampled."""
PROCESS_SLACK = 2
"""The cap counts at most this many fewer tasks than RLIMIT_NPROC: bwrap's init is root's."""
SAMPLES_AT_CAP = 2
"""Consecutive samples at the cap before the run is killed (about a second): a fork bomb
stays there, a program that only touched it once got an error it can handle."""


def wall_time_reason(wall_timeout_s: float) -> str:
    """The reason of a run stopped at its wall time (`wall_timeout_s` seconds)."""
    return (f"the notebook ran past its wall time of {wall_timeout_s:g} s (rubric limits.wall_timeout, "
            f"counted from when its kernel was ready)")


def startup_time_reason(startup_timeout_s: float) -> str:
    """The reason of a run whose kernel was not ready within `startup_timeout_s` seconds."""
    return (f"the kernel and the grader's start-up code were not ready within {startup_timeout_s:g} s "
            f"(the grader's start-up limit, before the notebook's wall time): the grading machine "
            f"was probably overloaded, so the notebook did not run")


def process_cap_reason(max_processes: int) -> str:
    """The reason of a run killed at its process cap of `max_processes` processes and threads."""
    return (f"the process limit of {max_processes} processes and threads (rubric limits.processes) was "
            f"reached (a fork bomb, or too many DataLoader workers or threads)")


def group_memory_reason(memory_bytes: int) -> str:
    """The reason of a run whose cgroup reached its memory limit of `memory_bytes` (the
    kernel's out-of-memory killer ended one of its processes)."""
    return (f"the run's memory limit of {memory_bytes / (1 << 30):.3g} GiB was reached (rubric limits.memory for "
            f"the kernel and every process it starts, plus what it keeps in /tmp and /dev/shm, "
            f"limits.work_disk and limits.shared_memory): the kernel's out-of-memory killer ended one "
            f"of its processes")


class Watchdog(threading.Thread):
    """Calls `on_limit(status, reason)` when the run reaches its process cap or its deadline,
    and `on_gone()` when the sandbox process has exited; stops at `stop()`.

    `process` returns the sandbox's Popen (None until it is started); `deadline` returns the
    monotonic time after which the run is over its wall time, or None while no wall time
    applies (the teardown has its own clock); `max_tasks` is RLIMIT_NPROC, or 0 when the
    count cannot be taken (`--sandbox none`: no PID namespace of its own). `group` is the run's
    cgroup (grader.cgroups.RunGroup) when it has one: the kernel then says itself how many
    forks its process cap refused and whether its memory limit made the out-of-memory killer act.
    """

    def __init__(self, *, process: Callable[[], object | None], deadline: Callable[[], float | None],
                 max_tasks: int, wall_timeout_s: float, on_limit: Callable[[str, str], None],
                 on_gone: Callable[[], None], interval_s: float = WATCH_INTERVAL_S,
                 group: RunGroup | None = None) -> None:
        super().__init__(name="dllab-watchdog", daemon=True)
        self._process, self._deadline, self.max_tasks = process, deadline, max_tasks
        self.group = group
        self.wall_timeout_s, self.on_limit, self.on_gone = wall_timeout_s, on_limit, on_gone
        self.interval_s = interval_s
        self._stop_event = threading.Event()
        self.pidns: str | None = None
        self.peak_tasks = 0
        """The most processes and threads seen at once in the sandbox."""
        self.cap_touched_s: float | None = None
        """When a sample first found the sandbox at its process cap (sandbox.boot_time_s)."""
        self.at_kill: list[dict[str, float | int]] = []
        """The sandbox's processes when the cap killed it (sandbox.process_snapshot)."""
        self.killed_at_cap = False
        """Whether this watchdog killed the run at its process cap (at_kill may be empty)."""

    def stop(self) -> None:
        self._stop_event.set()

    def _group_limit(self, refused: list[int]) -> tuple[bool, str] | None:
        """From the run's cgroup: (True, reason) when the out-of-memory killer acted; (False,
        reason) when its process cap refused forks in SAMPLES_AT_CAP samples in a row (a bomb
        keeps forking; a program that met the cap once got an error it can handle). `refused`
        holds the refused-fork count of the previous samples."""
        group = self.group
        if group is None:
            return None
        if group.oom_kills():
            return True, group_memory_reason(group.memory_bytes)
        hits = group.process_cap_hits()
        if hits and self.cap_touched_s is None:
            self.cap_touched_s = sandbox.boot_time_s()
        refused.append(hits)
        del refused[:-(SAMPLES_AT_CAP + 1)]
        rising = len(refused) > SAMPLES_AT_CAP and all(b > a for a, b in zip(refused, refused[1:]))
        return (False, process_cap_reason(self.max_tasks)) if rising else None

    def run(self) -> None:
        at_cap = 0
        refused: list[int] = []
        gone_reported = False
        while not self._stop_event.wait(self.interval_s):
            deadline = self._deadline()
            if deadline is not None and time.monotonic() > deadline:
                self.on_limit("timeout", wall_time_reason(self.wall_timeout_s))
                return
            proc = self._process()
            if proc is None:
                continue
            if proc.poll() is not None:  # type: ignore[attr-defined]
                if not gone_reported:
                    gone_reported = True
                    self.on_gone()
                continue
            if self.max_tasks <= 0:
                continue
            hit = self._group_limit(refused)
            if hit is not None:
                memory, reason = hit
                if not memory:
                    self._snapshot_at_cap()
                self.on_limit("killed", reason)
                return
            if self.pidns is None:
                self.pidns = sandbox.pid_namespace(proc.pid)  # type: ignore[attr-defined]
                if self.pidns is None:
                    continue
            tasks = sandbox.count_tasks(self.pidns)
            self.peak_tasks = max(self.peak_tasks, tasks)
            full = tasks >= self.max_tasks - PROCESS_SLACK
            at_cap = at_cap + 1 if full else 0
            if full and self.cap_touched_s is None:
                self.cap_touched_s = sandbox.boot_time_s()
            if at_cap >= SAMPLES_AT_CAP:
                self._snapshot_at_cap()
                self.on_limit("killed", process_cap_reason(self.max_tasks))
                return

    def _snapshot_at_cap(self) -> None:
        """The sandbox's processes as the cap kills it (which cell started them)."""
        if self.pidns is None and self._process() is not None:
            self.pidns = sandbox.pid_namespace(self._process().pid)  # type: ignore[union-attr]
        self.at_kill = sandbox.process_snapshot(self.pidns) if self.pidns is not None else []
        self.killed_at_cap = True


def started_in(start_s: float, spans: Sequence[tuple[int, float, float | None]]) -> int | None:
    """The cell (index) that was running at `start_s` (sandbox.boot_time_s); between two
    cells, the one before. `spans` are (index, start, end or None while running), in order."""
    before = [index for index, t0, _ in spans if t0 <= start_s]
    return before[-1] if before else None


def bomb_origin(procs: Sequence[Mapping[str, float | int]],
                spans: Sequence[tuple[int, float, float | None]]) -> int | None:
    """The cell that started the processes filling a sandbox, from `procs`
    (sandbox.process_snapshot) and the cells' time spans; None when it cannot be told.

    The kernel is the sandbox's process 2 (bwrap's init is 1). Processes that left the
    kernel's session (`os.setsid()`: a daemon) are grouped by session, and the biggest group
    is dated by its oldest member, the one the daemonizing cell left behind: a bomb that
    waits before forking is still charged to the cell that launched it. Processes forked in
    the kernel's own session are dated by the median of their start times, so one older
    helper (a DataLoader worker) does not move the date.
    """
    kernel = next((p for p in procs if p.get("nspid") == 2), None)
    if kernel is None:
        return None
    own = [p for p in procs if p.get("nspid") not in (1, 2)]
    if not own:
        return None
    groups: dict[object, list[Mapping[str, float | int]]] = {}
    for p in own:
        groups.setdefault(p.get("sid"), []).append(p)
    sid, group = max(groups.items(), key=lambda kv: len(kv[1]))
    starts = sorted(float(p["start_s"]) for p in group)
    when = starts[0] if sid != kernel.get("sid") else starts[len(starts) // 2]
    return started_in(when, spans)
