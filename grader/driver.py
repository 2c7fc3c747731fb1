"""Drives one sandboxed kernel: starts it, runs the cells, and stops it whatever happens.

`execute.run_notebook`/`run_script` prepare a run and write its result; this module is the
part that talks to the kernel (nbclient, in the grader's process) while a watchdog thread
watches the sandbox from outside (grader/watchdog.py). Its one promise: every run ends in a
result, in bounded time, with no process of its sandbox left behind. A limit, the kernel's
death or its own exit stops the run at once (the cell being awaited is cancelled), and every
later wait (shutdown, reaping, the driver's own thread) has a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path, PurePosixPath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from grader import diagnose, sandbox
from grader.datasets.registry import get, startup_specs
from grader.execute import (
    PROBE_DIR_TOKEN,
    TEARDOWN_TIMEOUT_S,
    CellRecord,
    MiB,
    RunStatus,
    SandboxLimits,
    SandboxSpec,
    UndecodableMessage,
    _CappedClient,
    _limit_from_error,
    _Log,
    _max_message,
    _one_line,
    _sandbox_env,
    _SandboxKernelManager,
)
from grader.probe.startup import startup_source
from grader.watchdog import (Watchdog, bomb_origin, group_memory_reason, started_in, startup_time_reason,
                             wall_time_reason)

if TYPE_CHECKING:
    from grader.cgroups import RunGroup

KILL_GRACE_S = 10.0
"""After a kill or the kernel's death, how long the cell being awaited gets to wind down."""
SHUTDOWN_TIMEOUT_S = 15.0
"""nbclient's kernel shutdown; the sandbox is killed and reaped afterwards in any case."""
REAP_TIMEOUT_S = 10.0
"""Waiting for the killed sandbox (bwrap) and every process in its PID namespace to go."""
LEFT_RUNNING_MIN = 8
"""Fewer processes left after the last cell are looked at again (a bomb only starting) and
worded as a background job; this many or more as a fork bomb or background jobs."""
LEFT_RECHECK_S = 0.5
"""With fewer left, they are counted again this much later: a growing number is reported too."""
FSIZE_MARK = "fsize-hits"
"""In the kernel's folder: grows by a byte each time the kernel is told a write hit RLIMIT_FSIZE."""
WORK_FULL_BYTES = 2 << 20
"""A work folder with less than this free after a failed cell was full: that was the cause."""
COPY_ERRORS = "copy-errors.txt"
"""In the kernel's folder: what the sandbox's copy of the submission could not place."""
ABANDON_GRACE_S = 60.0
"""Past its whole budget the run is killed; if its driver still has not returned this long
after, the run's result is written without it (its thread is left behind, blocked)."""


class Runner:
    """Starts the sandboxed kernel and drives it cell by cell; holds the run's state.

    Three threads touch a run: the event loop (nbclient, in `run_bounded`'s thread), the
    watchdog (limits and liveness, from outside) and the log drain. Every kill goes through
    `kill`, which also wakes the event loop: whatever it was awaiting is cancelled at once,
    so a kill always ends in a result, and every wait after it is bounded.
    """

    def __init__(self, nb: NotebookNode, rel: str, *, run_dir: Path, submission_dir: Path,
                 spec: SandboxSpec, limits: SandboxLimits, uid: int | None, log: _Log,
                 started: float, deadline: float | None = None) -> None:
        self.nb, self.rel, self.run_dir, self.spec, self.limits = nb, rel, run_dir, spec, limits
        self.uid, self.log, self.started = uid, log, started
        self.deadline = deadline
        """Unix time by which the run must end whatever its own limits say: the end of the
        submission's time (grader.runbudget); kernel start, cells and teardown all count."""
        self.deadline_hit = False
        """The run was stopped at `deadline`, not at a limit of its own."""
        self.teardown: dict[str, Any] | None = None
        """How the teardown went: `status` (ok, error, timeout, failed, not-run), `seconds`,
        `given_s` (the time it was given) and `cut` (the limit that cut that below
        TEARDOWN_TIMEOUT_S: grader.runbudget.finish_window), or None when it was not run."""
        self.submission_dir = submission_dir
        self.records: list[CellRecord] = []
        self.startup_s = 0.0
        self.cells_started: float | None = None
        """When the first cell could be sent (time.time()): the notebook's wall time starts
        there; the kernel's start-up before it has its own limit (limits.startup_timeout_s)."""
        self.figures_kept = self.figures_dropped = 0
        self.total_bytes = 0
        self.truncated = False
        self.kill_status: tuple[RunStatus, str] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.group: RunGroup | None = None  # the run's cgroup, made with the command
        self.stop: dict[str, Any] | None = None
        self.outcome: tuple[RunStatus, str] | None = None
        self.phase = "start"
        """start, cells, teardown or done: the start-up limit applies to the first, the wall
        time to the second."""
        self.peak_processes = 0
        self.kernel_start_s: float | None = None  # from launch to the kernel answering (None: it never did)
        self.peak_memory_bytes: int | None = None  # the run's cgroup's peak (None without one)
        self.cpu_s: float | None = None  # CPU time of the run's whole tree, from its cgroup (None without one)
        self.notes: list[dict[str, Any]] = []
        """What the TA should know that is no cell's error: `{"code", "message"}` each
        (grader.diagnose.NOTE_FLAGS): files not placed, the process cap touched."""
        self.spans: list[tuple[int, float, float | None]] = []
        """(cell index, start, end) of each cell sent, on sandbox.boot_time_s's clock."""
        self.mounts: dict[str, str] = dict(spec.mounts)
        """The dataset mounts as placed for this run (grader.sandbox.place_mounts)."""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._watchdog: Watchdog | None = None
        self._drain: threading.Thread | None = None
        self._numbers = diagnose.cell_numbers(nb.cells)

    # -- kill paths shared by the watchdog thread, the event loop and `run_bounded`

    def kill(self, status: RunStatus, reason: str) -> None:
        """Kill the sandbox for a limit (`reason` names it) and wake the event loop."""
        with self._lock:
            if self.kill_status is None:
                self.kill_status = (status, reason)
                self.log.write(f"killing the sandbox: {reason}")
            if self.proc is not None:
                sandbox.kill_group(self.proc.pid)
        self.wake()

    def note(self, code: str, message: str, paths: Sequence[str] = ()) -> None:
        """Record something the TA should know about the run (once per message); `paths`,
        relative to the submission, are the files it is about (files not placed)."""
        entry: dict[str, Any] = {"code": code, "message": message, **({"paths": list(paths)} if paths else {})}
        if entry not in self.notes:
            self.notes.append(entry)
            self.log.write(f"note ({code}): {message}")

    def wake(self) -> None:
        """Make the event loop stop awaiting the kernel (thread-safe)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(event.set)

    def _on_gone(self) -> None:
        # The kernel's process ended on its own (exit, crash): nbclient would notice within a
        # second, except after interrupting a timed-out cell, when it waits another timeout.
        if self.phase != "done":
            self.log.write(f"the sandbox exited (status {self.proc.returncode if self.proc else '?'})")
            self.wake()

    def _wall_deadline(self) -> float | None:
        if self.phase not in ("start", "cells"):
            return None
        return time.monotonic() + self._deadline_left()

    def _own_end(self) -> float:
        """Unix time the run's own limit ends: the start-up limit until the kernel is ready,
        then the wall time, counted from there (a slow start on a loaded machine is not
        charged to the notebook)."""
        if self.cells_started is None:
            return self.started + self.limits.startup_timeout_s
        return self.cells_started + self.limits.wall_timeout_s

    def _deadline_left(self) -> float:
        """Seconds left of the run's own limit (`_own_end`) and of the submission's (`deadline`)."""
        end = self._own_end() if self.deadline is None else min(self._own_end(), self.deadline)
        return end - time.time()

    def _time_limit(self) -> tuple[RunStatus, str]:
        """The status and reason of a run stopped by `_deadline_left`."""
        status: RunStatus = "not-run" if self.cells_started is None else "timeout"
        if self.deadline is not None and self.deadline <= self._own_end():
            self.deadline_hit = True
            when = "before the kernel was ready" if self.cells_started is None else "while the notebook ran"
            return status, (f"the submission's time for all of its runs (rubric limits.submission_timeout) ran "
                            f"out {when}")
        if self.cells_started is None:
            return status, startup_time_reason(self.limits.startup_timeout_s)
        return status, wall_time_reason(self.limits.wall_timeout_s)

    def _on_limit(self, status: RunStatus, reason: str) -> None:
        # the watchdog words every deadline as the wall time; before the cells it is start-up's
        self.kill(*(self._time_limit() if status == "timeout" else (status, reason)))

    def reap(self) -> None:
        """Kill the sandbox and wait, bounded, until it and everything in its PID namespace
        is gone (reaped, so no zombie is left); what is still there is logged."""
        if self.proc is None:
            return
        sandbox.kill_group(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=REAP_TIMEOUT_S)
        if self.proc.returncode is None:
            self.log.write(f"the sandbox (pid {self.proc.pid}) did not exit within {REAP_TIMEOUT_S:g} s of SIGKILL")
        pidns = self._watchdog.pidns if self._watchdog is not None else None
        if pidns is not None:
            left = sandbox.kill_namespace(pidns, timeout_s=REAP_TIMEOUT_S)
            if left:
                self.log.write(f"{len(left)} sandbox processes were still alive after the run: {left[:20]}")
        if self._drain is not None:
            self._drain.join(timeout=5)
        if self.group is not None:
            self.peak_memory_bytes = self.group.memory_peak()
            self.cpu_s = self.group.cpu_seconds()
            self.group.remove()  # whatever escaped the namespace kill (none should), then the folders

    # -- the command

    def _command(self, conn_file: str) -> tuple[list[str], str]:
        """The launch command and the host folder it starts in."""
        kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", conn_file,
                  "--HistoryManager.hist_file=:memory:"]
        staged = self.run_dir / "submission"
        sandbox.stage_submission(self.submission_dir, staged)
        # Jupyter starts a kernel in its notebook's folder: imports of the student's own
        # modules next to it, and relative data paths, resolve from there.
        workdir = str(PurePosixPath(self.rel).parent)
        workdir = "" if workdir == "." else workdir
        # `./data` is the dataset root wherever the notebook lies; what the mounts displace
        # of the submission is told, never dropped silently.
        placement = sandbox.place_mounts(self.spec.mounts, workdir=workdir, submission=staged)
        for rel in placement.hidden:
            shutil.rmtree(staged / rel, ignore_errors=True)
        for i, note in enumerate(placement.notes):  # the files, once, with the first note
            self.note("files-not-placed", note, paths=placement.files if i == 0 else ())
        self.mounts = placement.mounts
        if self.spec.sandbox == "none":
            for inside, host in placement.mounts.items():
                if not inside.startswith("/") and not (staged / inside).exists():
                    (staged / inside).parent.mkdir(parents=True, exist_ok=True)
                    (staged / inside).symlink_to(host)
            # A student's own machine (macOS has no prlimit): limits are best effort there.
            prefix = sandbox.rlimit_prefix(self.limits) if shutil.which("prlimit") else []
            if not prefix:
                self.log.write("prlimit is not available: memory, process and file limits are not set")
            return [*prefix, *kernel], str(staged / workdir)
        sandbox.check_mounts(self.spec.mounts, other_uid=self.uid is not None)
        kernel_dir = Path(conn_file).parent
        env = _sandbox_env(self.spec)
        cmd = sandbox.build_command(
            kernel, run_dir=self.run_dir, kernel_dir=kernel_dir, submission=staged,
            mounts=placement.mounts, limits=self.limits, env=env, uid=self.uid,
            gpus=self.spec.gpus, bwrap=sandbox.bwrap_path() or "bwrap", workdir=workdir,
            copy_errors=str(kernel_dir / COPY_ERRORS))
        return [*self._group_prefix(), *cmd], str(self.run_dir)

    def _group_prefix(self) -> list[str]:
        """The run's cgroup (grader.cgroups): the kernel's caps on the whole process tree; where
        the host has none to give, the rlimits alone, said in the run log."""
        from grader import cgroups

        self.group, why = cgroups.for_run(self.limits, cpu_share=self.spec.cpu_share,
                                          name=self.run_dir.name.removeprefix("dllab-"))
        if self.group is None:
            self.log.write(f"no cgroup for this run ({why}): the per-process rlimits alone cap it")
            return []
        self.log.write(self.group.describe())
        return self.group.prefix()

    async def run(self, startup_code: str | None,
                  teardown_code: str | None = None) -> tuple[RunStatus, str]:
        kernel_dir = self.run_dir / "k"
        kernel_dir.mkdir(mode=0o700)
        if self.uid is not None:
            os.chown(kernel_dir, self.uid, self.uid)
        # The one folder the sandbox writes that the grader reads afterwards (the probe's
        # events and figures); `_harvest` copies it out with caps, then it is deleted.
        probe_dir = kernel_dir / "probe"
        probe_dir.mkdir(mode=0o700)
        if self.uid is not None:
            os.chown(probe_dir, self.uid, self.uid)
        if startup_code:
            startup_code = startup_code.replace(PROBE_DIR_TOKEN, str(probe_dir))
        if teardown_code:
            teardown_code = teardown_code.replace(PROBE_DIR_TOKEN, str(probe_dir))
        conn_file = str(kernel_dir / "kernel.json")
        try:
            cmd, cwd = self._command(conn_file)
        except OSError as exc:  # e.g. a file in the submission that cannot be copied
            return "not-run", f"could not stage the submission: {_one_line(exc)}"
        self.log.write("command: " + " ".join(cmd))
        km = _SandboxKernelManager(transport="ipc", ip=str(kernel_dir / "s"),
                                   connection_file=conn_file)
        km.launch_cmd = cmd
        km.kernel_dir_owner = self.uid
        # The biggest single message the driver accepts from the kernel: ZeroMQ drops a
        # bigger one with its connection instead of filling the grader's memory (the run is
        # then ended, see _cells; the kernel's own stdout flushes every MiB, see startup).
        km.client_context = zmq.asyncio.Context()
        km.client_context.setsockopt(zmq.MAXMSGSIZE, _max_message(self.limits))
        client = _CappedClient(self.nb, km=km, runner=self, kernel_name="python3",
                               timeout=int(self.limits.cell_timeout_s), allow_errors=True,
                               record_timing=True, interrupt_on_timeout=True,
                               startup_timeout=int(self.limits.startup_timeout_s),
                               shutdown_kernel="immediate", iopub_timeout=10)
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._watchdog = Watchdog(
            process=lambda: self.proc, deadline=self._wall_deadline,
            max_tasks=self.limits.max_processes if self.spec.sandbox == "bwrap" else 0,
            wall_timeout_s=self.limits.wall_timeout_s, on_limit=self._on_limit, on_gone=self._on_gone,
            group=self.group)
        self._watchdog.start()
        drive = asyncio.ensure_future(self._drive(client, km, cwd, startup_code, teardown_code))
        woken = asyncio.ensure_future(self._wake.wait())
        outcome: tuple[RunStatus, str] | None = None
        failure: BaseException | None = None
        try:
            await asyncio.wait({drive, woken}, return_when=asyncio.FIRST_COMPLETED)
            if not drive.done():  # a kill or the kernel's death: stop awaiting the kernel
                drive.cancel()
                await asyncio.wait({drive}, timeout=KILL_GRACE_S)
            if drive.done() and not drive.cancelled():
                failure = drive.exception()
                outcome = None if failure is not None else drive.result()
        finally:
            woken.cancel()
            self.phase = "done"
            self._watchdog.stop()
            self.peak_processes = self._watchdog.peak_tasks
            self._process_notes()
            await self._shutdown(client, km)
        if failure is not None:  # a grader bug, not the student's: the batch records it as such
            self.log.write(f"the run's driver failed: {_one_line(failure)}")
            raise failure
        outcome = outcome or self.outcome
        if self.kill_status is not None and (outcome is None or outcome[0] not in ("killed", "timeout")):
            # Killed before any cell result, or after the cells (in the teardown): the limit
            # stands, since the student's processes reached it.
            outcome = self._killed_after() if self.records else self.kill_status
        return outcome or self._lost_kernel()

    async def _drive(self, client: _CappedClient, km: _SandboxKernelManager, cwd: str,
                     startup_code: str | None, teardown_code: str | None) -> tuple[RunStatus, str]:
        try:
            await client.async_start_new_kernel(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
            self.proc = km.provisioner.process  # type: ignore[union-attr]
            if self.kill_status is not None:  # the watchdog fired during the launch
                self.kill(*self.kill_status)
            self._drain = threading.Thread(target=self.log.drain, args=(self.proc.stdout,),
                                           name="dllab-log", daemon=True)
            self._drain.start()
            await client.async_start_new_kernel_client()
            self.kernel_start_s = time.time() - self.started
            self._copy_errors()
        except Exception as exc:
            self.wall_time_up()
            return self.kill_status or ("not-run", f"the kernel did not start: {_one_line(exc)}")
        try:
            await self._startup(client, startup_code)
        except Exception as exc:
            self.wall_time_up()
            return self.kill_status or ("not-run", f"the startup code failed: {_one_line(exc)}")
        self.cells_started = time.time()
        self.startup_s = self.cells_started - self.started
        self.phase = "cells"
        self.outcome = await self._cells(client)
        if teardown_code and self.kill_status is None and self.outcome[0] != "killed" \
                and self.proc.poll() is None:
            self.phase = "teardown"  # bounded by its own timeout (_teardown), not the watchdog
            await self._teardown(client, teardown_code)
        return self.outcome

    def _fsize_hits(self) -> int:
        """How often the kernel has been told a write hit the file size limit (startup code)."""
        try:
            return (self.run_dir / "k" / FSIZE_MARK).stat().st_size
        except OSError:
            return 0

    def _work_full(self) -> bool:
        """Whether the sandbox's work folder (its size-capped /tmp) has under WORK_FULL_BYTES
        free, seen through the kernel's root from the host (/proc/PID/root/tmp)."""
        pidns = self._watchdog.pidns if self._watchdog is not None else None
        if pidns is None or self.spec.sandbox != "bwrap":
            return False
        kernel = next((p for p in sandbox.process_snapshot(pidns) if p["nspid"] == 2), None)
        try:
            st = os.statvfs(f"/proc/{kernel['pid']}/root/tmp") if kernel is not None else None
        except OSError:
            return False
        return st is not None and st.f_bavail * st.f_frsize < WORK_FULL_BYTES

    def _process_notes(self) -> None:
        """Notes on the run's processes the TA should see although nothing was killed for
        them: the process cap reached for a moment (whatever tried to start then failed),
        and processes still running after the last cell, even one (the end of the run kills
        them, so no cell reports them)."""
        dog = self._watchdog
        if dog is None or self.spec.sandbox != "bwrap":
            return
        # killed at the cap, by the watchdog or for a cell's fork error (_limit_from_error):
        # `sandbox-limit` says so, not "for a moment, without stopping"
        capped = self.kill_status is not None and (dog.killed_at_cap or bool(dog.at_kill)
                                                   or "(rubric limits.processes)" in self.kill_status[1])
        if dog.cap_touched_s is not None and not capped:
            at = started_in(dog.cap_touched_s, self.spans)
            during = f" during {self._label(at)}" if at is not None else ""
            self.note("process-cap", f"the run reached its process limit of {self.limits.max_processes} processes "
                                     f"and threads (rubric limits.processes) for a moment{during}: processes or "
                                     f"threads started then failed (BlockingIOError: [Errno 11] Resource temporarily "
                                     f"unavailable), and results that depended on them may be missing")
        if self.kill_status is not None or dog.pidns is None:
            return
        left = sandbox.process_snapshot(dog.pidns)
        own = [p for p in left if p["nspid"] not in (1, 2)]
        growing = False
        if 0 < len(own) < LEFT_RUNNING_MIN:
            # A bomb the last cell started has only begun when that cell returns: look again.
            time.sleep(LEFT_RECHECK_S)
            later = sandbox.process_snapshot(dog.pidns)
            more = [p for p in later if p["nspid"] not in (1, 2)]
            growing = len(more) > len(own)
            left, own = later, more
        if own:
            self.log.write(f"{len(own)} processes of the code were still running after the last cell")
        if own:
            at = bomb_origin(left, self.spans)
            who = self._label(at) if at is not None else "the code"
            still = ", more of them starting" if growing else ""
            many = len(own) >= LEFT_RUNNING_MIN or growing
            what = "a fork bomb, or background jobs" if many else \
                "a background job: subprocess.Popen, a DataLoader iterator's workers, a server"
            self.note("processes-left", f"{who} left {len(own)} process{'es' if len(own) > 1 else ''} running after "
                                        f"the notebook's last cell{still} ({what}); "
                                        f"{'they were' if len(own) > 1 else 'it was'} killed when the run ended")

    def _copy_errors(self) -> None:
        """Files the sandbox could not copy into the working folder (read once the kernel
        answers, so the copy is over and no student code has run yet)."""
        path = self.run_dir / "k" / COPY_ERRORS
        with contextlib.suppress(OSError):
            with path.open("rb") as f:
                lines = [ln.strip() for ln in f.read(4000).decode("utf-8", "replace").splitlines() if ln.strip()]
            if lines:
                shown = "; ".join(ln.replace(sandbox.CWD + "/", "") for ln in lines[:3])
                more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
                paths = [m.group(1)[len(sandbox.CWD) + 1:] for ln in lines
                         for m in re.finditer(rf"['\"‘’]({re.escape(sandbox.CWD)}/[^'\"‘’]+)['\"‘’]", ln)]
                self.note("files-not-placed", f"some files of your submission could not be copied into the "
                                              f"folder your code runs in: {shown}{more}", paths=paths)

    async def _shutdown(self, client: _CappedClient, km: _SandboxKernelManager) -> None:
        """Shut the kernel down, then kill and reap the sandbox, every step bounded."""
        try:
            await asyncio.wait_for(client._async_cleanup_kernel(), SHUTDOWN_TIMEOUT_S)
        except (Exception, asyncio.CancelledError) as exc:  # the sandbox is killed below anyway
            self.log.write(f"kernel shutdown did not finish: {_one_line(exc)}")
        self.reap()
        km.client_context.destroy(linger=0)

    def wall_time_up(self) -> bool:
        """Kill for the wall time if it is over, and say whether it was: a wait bounded by the
        deadline (the startup code's, a cell's) may end a moment before the watchdog's next
        sample sees it."""
        if self.phase in ("start", "cells") and self._deadline_left() <= 0.5:
            self.kill(*self._time_limit())
            return True
        return False

    def _lost_kernel(self) -> tuple[RunStatus, str]:
        """The outcome when the driver was cancelled before any cell result (kernel start)."""
        code = self.proc.poll() if self.proc is not None else None
        return "not-run", (f"the kernel did not start: the sandbox exited with status {code} (see log.txt)"
                           if code is not None else "the kernel did not start in time")

    async def _startup(self, client: _CappedClient, startup_code: str | None) -> None:
        # What each mounted dataset needs run first (DatasetSpec.sandbox_startup: CIFAR-10's
        # checksums), once per folder: what it sets up holds for the whole process.
        seen: dict[str, dict[str, str]] = {}
        for inside, host in self.mounts.items():
            path = inside if inside.startswith("/") else f"{sandbox.CWD}/{inside}"
            for ds in startup_specs(Path(host)):
                seen.setdefault(ds.name, {}).setdefault(host, path)
        # Without a sandbox the kernel reads the host's folders.
        hooks = [(get(name).sandbox_startup, list(paths) if self.spec.sandbox == "none" else list(paths.values()))
                 for name, paths in seen.items()]
        script = None
        if self.rel.lower().endswith(".py"):
            base = str(self.run_dir / "submission") if self.spec.sandbox == "none" else sandbox.CWD
            script = f"{base}/{self.rel}"
        codes = [startup_source(argv0=PurePosixPath(self.rel).name, hooks=hooks, script_path=script,
                                fsize_marker=str(self.run_dir / "k" / FSIZE_MARK))]
        if startup_code:
            codes.append(startup_code)
        for code in codes:
            reply = await client.kc.execute_interactive(
                code, store_history=False,
                timeout=max(1.0, min(self.limits.startup_timeout_s, self._deadline_left())),
                output_hook=self.log.kernel_output, allow_stdin=False)
            if reply["content"].get("status") != "ok":
                self.log.write(f"startup code failed: {reply['content'].get('ename')}: "
                               f"{reply['content'].get('evalue')}")

    async def _teardown(self, client: _CappedClient, code: str) -> None:
        """Run the teardown code for at most what is left of the run's wall time and of the
        submission's, plus grader.runbudget.FINISH_GRACE_S, and never over TEARDOWN_TIMEOUT_S
        (`finish_window`). What happens to it is logged and kept in `self.teardown` (the
        pipeline notes a time-out, and verification then reports none); the cells' result stands."""
        from grader.runbudget import finish_window

        assert self.cells_started is not None
        given, cut = finish_window(now=time.time(), cap_s=TEARDOWN_TIMEOUT_S,
                                   run_end=self.cells_started + self.limits.wall_timeout_s,
                                   submission_end=self.deadline)
        self.teardown = {"status": "not-run", "seconds": 0.0, "given_s": round(given, 3), "cut": cut}
        if given < 1.0:
            self.log.write("teardown code not run: no time was left for it")
            return
        t0 = time.monotonic()
        try:
            reply = await client.kc.execute_interactive(
                code, store_history=False, timeout=given,
                output_hook=self.log.kernel_output, allow_stdin=False)
        except Exception as exc:  # a timeout, a dead kernel: the run's result stands
            timed_out = isinstance(exc, TimeoutError)
            self.teardown.update(status="timeout" if timed_out else "failed",
                                 seconds=round(time.monotonic() - t0, 3))
            self.log.write(f"teardown code did not finish: {_one_line(exc)}"
                           + (f" (it was given {given:.0f} s)" if timed_out else ""))
            return
        ok = reply["content"].get("status") == "ok"
        if not ok:
            self.log.write(f"teardown code failed: {reply['content'].get('ename')}: "
                           f"{reply['content'].get('evalue')}")
        self.teardown.update(status="ok" if ok else "error", seconds=round(time.monotonic() - t0, 3))
        self.log.write(f"teardown took {time.monotonic() - t0:.1f} s")

    # -- the cells

    def _label(self, index: int) -> str:
        return diagnose.cell_label(self.nb.cells, index)

    def _after(self, index: int) -> int:
        """Code cells after `index` that will not run."""
        return sum(1 for i in self._numbers if i > index)

    def _stopped(self, kind: str, index: int, what: str) -> str:
        """Record that the run stopped at cell `index`; returns the reason for the TA."""
        label = self._label(index)
        n = self._after(index)
        rest = f"; the {n} cell{'s' if n != 1 else ''} after it did not run" if n else ""
        if kind == "exit":
            reason = f"{label} {what}{rest}"
        elif kind == "crash":
            reason = f"the kernel {what} during {label}{rest}"
        else:
            reason = f"{label} was stopped: {what}{rest}"
        self.stop = {"kind": kind, "cell": index, "label": label, "reason": reason}
        return reason

    async def _cells(self, client: _CappedClient) -> tuple[RunStatus, str]:
        status: RunStatus = "ok"
        reason = ""
        stopped: tuple[RunStatus, str] | None = None
        for index, cell in enumerate(self.nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if stopped is not None or self.kill_status is not None:
                self.records.append(CellRecord(index, "not-run", 0.0))
                continue
            # Rounded up: a cell cut short by what is left of the wall time must end at the
            # wall time, which ends the run, not a moment before it as a "cell timeout".
            client.timeout = max(1, math.ceil(min(self.limits.cell_timeout_s, self._deadline_left())))
            t0 = time.monotonic()
            # Whether the kernel was still there when this cell was sent: if not, what ended
            # it ran in the previous cell (a thread it started, an older ipykernel's exit()).
            # The kernel's own "busy" message cannot tell: os._exit() loses it.
            alive = self.proc is None or self.proc.poll() is None
            self.spans.append((index, sandbox.boot_time_s(), None))
            fsize_hits = self._fsize_hits()
            try:
                await client.async_execute_cell(cell, index)
            except UndecodableMessage as exc:
                # The kernel lives; the grader refused what it sent (execute.bounded_unpack): the
                # rest of this cell's output is lost, so the run ends here, saying why.
                record = client.record(cell, index, time.monotonic() - t0)
                stopped = ("killed", self._stopped("limit", index, f"the kernel sent a message the grader could "
                                                                   f"not decode ({exc.detail})"))
                self.kill(*stopped)
                self.records.append(dataclasses.replace(record, status="error", ename="UndecodableMessage",
                                                        evalue=stopped[1]))
                continue
            except (DeadKernelError, asyncio.CancelledError, RuntimeError):
                # None: a clean os._exit(0) in the last cell, and no cell is left to run
                stopped = self._kernel_gone(client, cell, index, time.monotonic() - t0, sent=alive)
                continue
            finally:
                client.add_markers(cell)
                self.spans[-1] = (index, self.spans[-1][1], sandbox.boot_time_s())
            record = client.record(cell, index, time.monotonic() - t0)
            limit = _limit_from_error(record, self.limits, file_size_hit=self._fsize_hits() > fsize_hits,
                                      work_full=record.status == "error" and self._work_full())
            ending = diagnose.exit_request(client.replies.get(index, {}))
            if "iopub.status.idle" not in cell.metadata.get("execution", {}):
                # The reply came but the output stream never finished: the kernel sent a
                # message over MAXMSGSIZE and ZeroMQ dropped the connection.
                self.truncated = True
                why = self._stopped("limit", index, f"an output message over "
                                    f"{_max_message(self.limits) // MiB} MiB was sent; later output "
                                    f"cannot be recorded")
                stopped = ("killed", why)
                self.kill(*stopped)
            elif limit is not None:
                stopped = ("killed", self._stopped("limit", index, limit))
                self.kill(*stopped)
            elif ending is not None and (not ending.clean or self._after(index)):
                # The code asked to stop here: the cells after it are not run, as they would
                # not be in Jupyter's "Run All" or `python script.py`; the kernel lives on, so
                # the teardown still captures what was trained.
                why = self._stopped("exit", index, ending.what)
                record = dataclasses.replace(record, status="error", ename="SystemExit", evalue=why)
                stopped = ("error", why)
            elif ending is not None:  # a clean exit in the last cell: a normal end
                self.log.write(f"{self._label(index)} {ending.what} as its last cell")
                record = dataclasses.replace(record, status="ok", ename="", evalue="", traceback="")
            elif record.status == "timeout" and status != "timeout":
                status, reason = "timeout", (f"{self._label(index)} ran past the cell time limit of "
                                             f"{self.limits.cell_timeout_s:g} s (rubric limits.cell_timeout) "
                                             f"and was interrupted")
            elif record.status == "error" and status == "ok":
                status, reason = "error", f"{self._label(index)} raised {diagnose.error_text(record.ename, record.evalue, 250)}"[:300]
            self.records.append(record)
        if stopped is not None:
            return stopped
        if self.kill_status is not None:  # killed between two cells
            return self._killed_after()
        return status, reason

    def _killed_after(self) -> tuple[RunStatus, str]:
        """The outcome of a kill that came when no cell was running (between two cells, in
        the teardown): the stop is placed after the last cell that ran."""
        assert self.kill_status is not None
        status, what = self.kill_status
        last = max((r.index for r in self.records if r.status != "not-run"), default=None)
        if last is None:
            return status, what
        label = self._label(last)
        n = self._after(last)
        rest = f"; the {n} cell{'s' if n != 1 else ''} after it did not run" if n else ""
        origin = bomb_origin(self._watchdog.at_kill, self.spans) if self._watchdog is not None else None
        if origin is not None and origin != last:
            what += f"; the processes were started by {self._label(origin)}, which left them running"
        reason = f"stopped after {label}: {what}{rest}"
        self.stop = {"kind": "limit", "cell": last, "label": label, "reason": reason}
        if origin is not None and origin != last:
            self.stop["origin"] = {"cell": origin, "label": self._label(origin)}
        return status, reason

    def _kernel_gone(self, client: _CappedClient, cell: NotebookNode, index: int,
                     duration: float, *, sent: bool) -> tuple[RunStatus, str] | None:
        """The kernel died or was killed while `cell` was awaited: record which cell ended it.
        `sent`: the kernel was alive when this cell was sent to it. None when that was a
        clean exit in the last cell: the run ended normally."""
        previous = next((r for r in reversed(self.records) if r.status != "not-run"), None)
        at = index
        if not sent and previous is not None and self.kill_status is None:
            at = previous.index
            self.records.remove(previous)
            self.records.append(CellRecord(index, "not-run", 0.0))
            duration = previous.duration_s
        elif cell.get("execution_count") is None:
            cell.execution_count = self._numbers.get(index)  # it ran: show the number it had
        timed_out = at in client.timed_out
        origin = None
        if self.kill_status is None and self.group is not None and self.group.oom_kills():
            with self._lock:  # the out-of-memory killer ended the kernel, before the watchdog saw it
                if self.kill_status is None:
                    self.kill_status = ("killed", group_memory_reason(self.group.memory_bytes))
                    self.log.write(f"killing the sandbox: {self.kill_status[1]}")
        if self.kill_status is not None:
            status, what = self.kill_status
            origin = bomb_origin(self._watchdog.at_kill, self.spans) if self._watchdog is not None else None
            if origin is not None and origin != at:
                # A daemon started earlier filled the sandbox while this cell ran.
                what += f"; the processes were started by {self._label(origin)}, which left them running"
            ending = diagnose.Ending("limit", what, "SandboxLimit")
        else:
            code = None
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self.proc.wait(timeout=5)
            ending = diagnose.process_ending(code, cell_source=str(self.nb.cells[at].get("source", "")))
            if ending.clean and not self._after(at):  # os._exit(0) as the very last thing
                self.log.write(f"{self._label(at)} {ending.what} as its last cell")
                self.records.append(CellRecord(at, "ok", round(duration, 3)))
                return None
            status = "error" if ending.kind == "exit" else "killed"
        why = self._stopped(ending.kind, at, ending.what)
        if origin is not None and origin != at and self.stop is not None:
            self.stop["origin"] = {"cell": origin, "label": self._label(origin)}
        self.records.append(CellRecord(at, "timeout" if timed_out else "error", round(duration, 3),
                                       ending.ename, why))
        return status, why


def run_bounded(runner: Runner, startup_code: str | None,
                teardown_code: str | None) -> tuple[RunStatus, str]:
    """Run `runner.run` on an event loop of its own thread and wait for it, bounded.

    A thread also when the caller has a loop running (Jupyter, dask). The wait is the run's
    whole budget (kernel start, wall time, teardown, shutdown); past it the sandbox is
    killed, and if the driver still does not return (a library call blocked for good), the
    result is built without it, so a worker never waits forever on one student.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(runner.run(startup_code, teardown_code))
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    from grader.runbudget import FINISH_GRACE_S

    after = KILL_GRACE_S + SHUTDOWN_TIMEOUT_S + 2 * REAP_TIMEOUT_S
    budget = runner.limits.startup_timeout_s + runner.limits.wall_timeout_s + TEARDOWN_TIMEOUT_S + after
    if runner.deadline is not None:  # the teardown ends by FINISH_GRACE_S after it (Runner._teardown)
        budget = max(1.0, min(budget, runner.deadline - time.time() + FINISH_GRACE_S + after))
    t = threading.Thread(target=target, name="dllab-run", daemon=True)
    t.start()
    t.join(budget)
    if t.is_alive():
        runner.kill("timeout", f"the run went past its whole time budget of {budget:g} s")
        t.join(ABANDON_GRACE_S)
    if t.is_alive():
        runner.log.write("the run's driver did not return after the sandbox was killed; it was abandoned")
        runner.reap()
        assert runner.kill_status is not None
        return runner.kill_status
    if "error" in box:
        raise box["error"]
    return box["value"]
