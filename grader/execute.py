"""Run one notebook or script in the sandbox, cell by cell, and record what happened.

Shape: nbclient runs here, in the grader's process; only the kernel runs inside bwrap.
The two talk over ZeroMQ `ipc` sockets in a folder of their own that is mounted into the
sandbox (the sandbox has no usable network). Keeping the driver outside means student code
can neither kill it, nor ptrace it, nor write into the results: everything that comes out of
the sandbox is a kernel message, which is size-capped as it arrives (outputs per cell and in
total, figures, and the largest message ZeroMQ will accept), and nothing is unpickled.

Statuses. A cell is `ok`, `error` (it raised; later cells still run), `timeout` (it ran past
the per-cell limit and was interrupted; later cells still run) or `not-run`. The run is `ok`,
`error` (some cell raised), `timeout` (a cell timed out, or the whole-notebook wall time ran
out and everything was killed), `killed` (a limit was hit or the kernel died; the whole
process tree was killed and later cells were not run) or `not-run` (nothing could start).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import nbformat
import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from grader import diagnose, sandbox
from grader.probe.startup import GUI_BACKENDS, startup_source
from grader.watchdog import Watchdog

GiB = 1 << 30
MiB = 1 << 20

CellStatus = Literal["ok", "error", "timeout", "not-run"]
RunStatus = Literal["ok", "error", "timeout", "killed", "not-run"]


@dataclass(frozen=True)
class SandboxLimits:
    """Hard limits for one run; each has a default a TA can change per lab in the rubric."""

    memory_bytes: int = 8 * GiB
    """Private writable memory per process (RLIMIT_DATA); 0 for none."""
    max_processes: int = 1024
    """Processes and threads of the sandbox uid (RLIMIT_NPROC)."""
    max_file_bytes: int = 4 * GiB
    """Largest file any sandboxed process may write (RLIMIT_FSIZE)."""
    max_work_bytes: int = 4 * GiB
    """Size of the private /tmp (tmpfs, so RAM) holding /tmp/work and the submission copy."""
    max_shm_bytes: int = 2 * GiB
    """Size of the private /dev/shm (tmpfs, so RAM): multiprocessing semaphores and the
    batches DataLoader workers hand to the kernel (a few batches per worker)."""
    max_open_files: int = 4096
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    cell_timeout_s: float = 1800.0
    """One cell; on expiry it is interrupted, marked `timeout`, and the next cell runs."""
    wall_timeout_s: float = 4 * 3600.0
    """The whole notebook including kernel start; on expiry everything is killed."""
    startup_timeout_s: float = 120.0
    """Kernel start until it answers."""
    max_output_bytes_per_cell: int = 1 * MiB
    """Outputs kept per cell; the rest is dropped behind a visible marker."""
    max_output_bytes_total: int = 32 * MiB
    """Outputs kept for the whole notebook."""
    max_figures: int = 200
    """Images (png/jpeg/svg outputs) kept for the whole notebook."""


@dataclass(frozen=True)
class SandboxSpec:
    """Where a run's code may look: dataset mounts, GPUs and the isolation used."""

    mounts: dict[str, str] = field(default_factory=dict)
    """Sandbox path (absolute, or relative to the working copy) -> host folder, read-only."""
    gpus: tuple[int, ...] = ()
    """Host GPU indices passed through (the scheduler gives each concurrent run its own)."""
    network: Literal[False] = False
    """Always False: there is no option to turn the network on."""
    sandbox: Literal["bwrap", "none"] = "bwrap"
    """`none` is only for a student checking their own work on their own machine."""
    cpu_threads: int = 0
    """Threads torch/OpenMP may use (0: all cores); concurrent runs share the cores this way."""


@dataclass(frozen=True)
class CellRecord:
    """What happened to one code cell."""

    index: int
    """Position in the notebook's cell list (markdown cells count)."""
    status: CellStatus
    duration_s: float
    ename: str = ""
    evalue: str = ""
    traceback: str = ""
    """The end of the traceback, ANSI colours stripped."""


@dataclass(frozen=True)
class RunResult:
    """The outcome of running one notebook or script."""

    path: str
    """The notebook or script, relative to the submission."""
    status: RunStatus
    reason: str
    """Why the run is not `ok`, in one sentence for the TA; empty when ok."""
    cells: tuple[CellRecord, ...]
    started_at: float
    """Unix time the run started."""
    duration_s: float
    startup_s: float
    """From the start of the run until the first student cell could run (the fixed cost:
    copying, sandbox, kernel start, startup code)."""
    executed_notebook_path: str
    log_path: str
    figures_kept: int
    figures_dropped: int
    output_truncated: bool
    stop: dict[str, Any] | None = None
    """How the run stopped before its last cell, if it did: `kind` (exit, crash, limit; see
    grader.diagnose), `cell` (index), `label` ("cell 3", as the student numbers it), `reason`."""
    environment: tuple[dict[str, Any], ...] = ()
    """What the grading machine lacked (a package, a GPU), as grader.diagnose.Problem dicts."""
    peak_processes: int = 0
    """The most processes and threads the sandbox held at once (sampled every 0.5 s)."""


# In `startup_code`, replaced by the sandbox path of a writable folder whose contents (regular
# files only, size-capped) are copied to `out_dir/probe` after the run.
PROBE_DIR_TOKEN = "@@DLLAB_PROBE_DIR@@"
HARVEST_MAX_BYTES = 64 * MiB
TEARDOWN_TIMEOUT_S = 300.0
"""`teardown_code` gets this long, on its own clock: the notebook's wall time does not apply."""
KILL_GRACE_S = 10.0
"""After a kill or the kernel's death, how long the cell being awaited gets to wind down."""
SHUTDOWN_TIMEOUT_S = 15.0
"""nbclient's kernel shutdown; the sandbox is killed and reaped afterwards in any case."""
REAP_TIMEOUT_S = 10.0
"""Waiting for the killed sandbox (bwrap) and every process in its PID namespace to go."""
ABANDON_GRACE_S = 60.0
"""Past its whole budget the run is killed; if its driver still has not returned this long
after, the run's result is written without it (its thread is left behind, blocked)."""
HARVEST_MAX_FILES = 2000


def _harvest(src: Path, dest: Path) -> None:
    """Copies what the probe left: regular files, two levels deep at most, within caps."""
    import stat as st

    total = files = 0
    if not src.is_dir() or src.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        depth = len(Path(dirpath).relative_to(src).parts)
        if depth >= 2:
            dirnames[:] = []
        for name in sorted(filenames):
            path = Path(dirpath, name)
            info = path.lstat()
            if not st.S_ISREG(info.st_mode) or files >= HARVEST_MAX_FILES:
                continue
            if total + info.st_size > HARVEST_MAX_BYTES:
                continue
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            total += info.st_size
            files += 1


class _LimitHit(Exception):
    """A limit ended the run; carries the run status and reason."""

    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


# ------------------------------------------------------------------ public entry points


def run_notebook(nb_path: Path, *, submission_dir: Path, out_dir: Path, spec: SandboxSpec,
                 limits: SandboxLimits, startup_code: str | None = None,
                 teardown_code: str | None = None) -> RunResult:
    """Run `nb_path` (inside `submission_dir`) in a fresh sandbox; write `executed.ipynb`,
    `log.txt` and `run.json` to `out_dir`. The submission folder is never modified.

    `startup_code` runs in the kernel after the built-in startup and before the first
    student cell, and is not recorded as a cell. `teardown_code` runs after the last
    student cell (also when cells raised or timed out, not when the run was killed), with
    its own timeout of TEARDOWN_TIMEOUT_S, and is not recorded either; its failure changes
    nothing in the result. Both may contain PROBE_DIR_TOKEN.
    """
    started = time.time()
    rel = _relative(nb_path, submission_dir)
    try:
        nb = nbformat.read(nb_path, as_version=4)
    except Exception as exc:  # a corrupt notebook is the student's problem, not ours
        return _write_unrunnable(rel, out_dir, started, f"not a readable notebook: {exc}")
    return _run(nb, rel, submission_dir=submission_dir, out_dir=out_dir, spec=spec,
                limits=limits, startup_code=startup_code, teardown_code=teardown_code,
                started=started)


def run_script(py_path: Path, *, submission_dir: Path, out_dir: Path, spec: SandboxSpec,
               limits: SandboxLimits, startup_code: str | None = None,
               teardown_code: str | None = None) -> RunResult:
    """Like `run_notebook` for a `.py` file: split into cells on `# %%` markers (else one
    cell); it runs as `__main__` with `sys.argv == [script name]`."""
    started = time.time()
    rel = _relative(py_path, submission_dir)
    try:
        text = py_path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return _write_unrunnable(rel, out_dir, started, f"cannot read the script: {exc}")
    return _run(script_to_notebook(text), rel, submission_dir=submission_dir, out_dir=out_dir,
                spec=spec, limits=limits, startup_code=startup_code, teardown_code=teardown_code,
                started=started)


_CELL_MARK = re.compile(r"^#\s*%%(.*)$")


def script_to_notebook(text: str) -> NotebookNode:
    """A notebook from a script: one cell per `# %%` marker (`# %% [markdown]` makes a
    markdown cell from the commented lines), or the whole script as one cell."""
    chunks: list[tuple[str, list[str]]] = []
    kind, lines = "code", []
    for line in text.splitlines():
        m = _CELL_MARK.match(line)
        if m:
            chunks.append((kind, lines))
            kind = "markdown" if "[markdown]" in m.group(1) else "code"
            lines = []
        else:
            lines.append(line)
    chunks.append((kind, lines))
    cells = []
    for kind, lines in chunks:
        source = "\n".join(lines).strip("\n")
        if not source.strip():
            continue
        if kind == "markdown":
            md = "\n".join(re.sub(r"^# ?", "", ln) for ln in source.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(md))
        else:
            cells.append(nbformat.v4.new_code_cell(source))
    return nbformat.v4.new_notebook(cells=cells)


# ------------------------------------------------------------------------ the run


def _run(nb: NotebookNode, rel: str, *, submission_dir: Path, out_dir: Path, spec: SandboxSpec,
         limits: SandboxLimits, startup_code: str | None, started: float,
         teardown_code: str | None = None) -> RunResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(nb)
    log = _Log(out_dir / "log.txt")
    # Host /tmp rather than out_dir: ipc socket paths must stay under ~100 characters.
    run_dir = Path(tempfile.mkdtemp(prefix="dllab-run-"))
    try:
        with contextlib.ExitStack() as stack:
            uid = None
            if spec.sandbox == "bwrap" and sandbox.is_root():
                uid = stack.enter_context(sandbox.allocate_uid())
            runner = _Runner(nb, rel, run_dir=run_dir, submission_dir=submission_dir,
                             spec=spec, limits=limits, uid=uid, log=log, started=started)
            status, reason = _run_bounded(runner, startup_code, teardown_code)
        _harvest(run_dir / "k" / "probe", out_dir / "probe")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    done = {r.index for r in runner.records}
    runner.records += [CellRecord(i, "not-run", 0.0) for i, c in enumerate(nb.cells)
                       if c.cell_type == "code" and c.source.strip() and i not in done]
    runner.records.sort(key=lambda r: r.index)
    environment = tuple(dataclasses.asdict(p) for p in diagnose.environment_problems(
        [dataclasses.asdict(r) for r in runner.records if r.status == "error"], nb.cells,
        submitted_modules=_submitted_modules(submission_dir), has_gpu=bool(spec.gpus)))
    first_error = next((r for r in runner.records if r.status == "error"), None)
    if status == "error" and environment and first_error is not None \
            and environment[0]["cell"] == first_error.index:
        reason = environment[0]["message"]  # the cause the TA can act on, not its symptom
    caps = []
    if runner.truncated:
        caps.append(f"outputs truncated to {limits.max_output_bytes_per_cell} bytes per cell")
    if runner.figures_dropped:
        caps.append(f"{runner.figures_dropped} figures dropped over the limit of {limits.max_figures}")
    if caps and "output message" not in reason:
        reason = "; ".join([reason, *caps] if reason else caps)
    if spec.sandbox == "none":
        log.write(sandbox.NONE_WARNING)
    for note in _backend_notes(nb):
        log.write(note)
    executed = out_dir / "executed.ipynb"
    nbformat.write(nb, executed)
    result = RunResult(
        path=rel, status=status, reason=reason, cells=tuple(runner.records), started_at=started,
        duration_s=round(time.time() - started, 3), startup_s=round(runner.startup_s, 3),
        executed_notebook_path=str(executed), log_path=str(log.path),
        figures_kept=runner.figures_kept, figures_dropped=runner.figures_dropped,
        output_truncated=runner.truncated, stop=runner.stop, environment=environment,
        peak_processes=runner.peak_processes)
    log.write(f"run finished: {status} {reason}".rstrip())
    log.close()
    (out_dir / "run.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    return result


class _Runner:
    """Starts the sandboxed kernel and drives it cell by cell; holds the run's state.

    Three threads touch a run: the event loop (nbclient, in `_run_bounded`'s thread), the
    watchdog (limits and liveness, from outside) and the log drain. Every kill goes through
    `kill`, which also wakes the event loop: whatever it was awaiting is cancelled at once,
    so a kill always ends in a result, and every wait after it is bounded.
    """

    def __init__(self, nb: NotebookNode, rel: str, *, run_dir: Path, submission_dir: Path,
                 spec: SandboxSpec, limits: SandboxLimits, uid: int | None, log: _Log,
                 started: float) -> None:
        self.nb, self.rel, self.run_dir, self.spec, self.limits = nb, rel, run_dir, spec, limits
        self.uid, self.log, self.started = uid, log, started
        self.submission_dir = submission_dir
        self.records: list[CellRecord] = []
        self.startup_s = 0.0
        self.figures_kept = self.figures_dropped = 0
        self.total_bytes = 0
        self.truncated = False
        self.kill_status: tuple[RunStatus, str] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop: dict[str, Any] | None = None
        self.outcome: tuple[RunStatus, str] | None = None
        self.phase = "start"
        """start, cells, teardown or done: the wall time applies to the first two only."""
        self.peak_processes = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._watchdog: Watchdog | None = None
        self._drain: threading.Thread | None = None
        self._numbers = diagnose.cell_numbers(nb.cells)

    # -- kill paths shared by the watchdog thread, the event loop and `_run_bounded`

    def kill(self, status: RunStatus, reason: str) -> None:
        """Kill the sandbox for a limit (`reason` names it) and wake the event loop."""
        with self._lock:
            if self.kill_status is None:
                self.kill_status = (status, reason)
                self.log.write(f"killing the sandbox: {reason}")
            if self.proc is not None:
                sandbox.kill_group(self.proc.pid)
        self.wake()

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

    def _deadline_left(self) -> float:
        return self.started + self.limits.wall_timeout_s - time.time()

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
        if self.spec.sandbox == "none":
            for inside, host in self.spec.mounts.items():
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
            mounts=self.spec.mounts, limits=self.limits, env=env, uid=self.uid,
            gpus=self.spec.gpus, bwrap=sandbox.bwrap_path() or "bwrap", workdir=workdir)
        return cmd, str(self.run_dir)

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
            wall_timeout_s=self.limits.wall_timeout_s, on_limit=self.kill, on_gone=self._on_gone)
        self._watchdog.start()
        drive = asyncio.ensure_future(self._drive(client, km, cwd, startup_code, teardown_code))
        woken = asyncio.ensure_future(self._wake.wait())
        outcome: tuple[RunStatus, str] | None = None
        try:
            await asyncio.wait({drive, woken}, return_when=asyncio.FIRST_COMPLETED)
            if not drive.done():  # a kill or the kernel's death: stop awaiting the kernel
                drive.cancel()
                await asyncio.wait({drive}, timeout=KILL_GRACE_S)
            if drive.done() and not drive.cancelled():
                if drive.exception() is not None:
                    self.log.write(f"the run's driver failed: {_one_line(drive.exception())}")  # type: ignore[arg-type]
                else:
                    outcome = drive.result()
        finally:
            woken.cancel()
            self.phase = "done"
            self._watchdog.stop()
            self.peak_processes = self._watchdog.peak_tasks
            await self._shutdown(client, km)
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
        except Exception as exc:
            return self.kill_status or ("not-run", f"the kernel did not start: {_one_line(exc)}")
        try:
            await self._startup(client, startup_code)
        except Exception as exc:
            return self.kill_status or ("not-run", f"the startup code failed: {_one_line(exc)}")
        self.startup_s = time.time() - self.started
        self.phase = "cells"
        self.outcome = await self._cells(client)
        if teardown_code and self.kill_status is None and self.outcome[0] != "killed" \
                and self.proc.poll() is None:
            self.phase = "teardown"  # its own clock, not the notebook's wall time
            await self._teardown(client, teardown_code)
        return self.outcome

    async def _shutdown(self, client: _CappedClient, km: _SandboxKernelManager) -> None:
        """Shut the kernel down, then kill and reap the sandbox, every step bounded."""
        try:
            await asyncio.wait_for(client._async_cleanup_kernel(), SHUTDOWN_TIMEOUT_S)
        except (Exception, asyncio.CancelledError) as exc:  # the sandbox is killed below anyway
            self.log.write(f"kernel shutdown did not finish: {_one_line(exc)}")
        self.reap()
        km.client_context.destroy(linger=0)

    def _lost_kernel(self) -> tuple[RunStatus, str]:
        """The outcome when the driver was cancelled before any cell result (kernel start)."""
        code = self.proc.poll() if self.proc is not None else None
        return "not-run", (f"the kernel did not start: the sandbox exited with status {code} (see log.txt)"
                           if code is not None else "the kernel did not start in time")

    async def _startup(self, client: _CappedClient, startup_code: str | None) -> None:
        cifar = [inside if inside.startswith("/") else f"{sandbox.CWD}/{inside}"
                 for inside, host in self.spec.mounts.items() if _is_cifar(Path(host))]
        if self.spec.sandbox == "none":
            cifar = [host for host in self.spec.mounts.values() if _is_cifar(Path(host))]
        script = None
        if self.rel.lower().endswith(".py"):
            base = str(self.run_dir / "submission") if self.spec.sandbox == "none" else sandbox.CWD
            script = f"{base}/{self.rel}"
        codes = [startup_source(argv0=PurePosixPath(self.rel).name, cifar_roots=cifar, script_path=script)]
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
        """Run the teardown code; whatever happens to it is only logged."""
        t0 = time.monotonic()
        try:
            reply = await client.kc.execute_interactive(
                code, store_history=False, timeout=TEARDOWN_TIMEOUT_S,
                output_hook=self.log.kernel_output, allow_stdin=False)
        except Exception as exc:  # a timeout, a dead kernel: the run's result stands
            self.log.write(f"teardown code did not finish: {_one_line(exc)}")
            return
        if reply["content"].get("status") != "ok":
            self.log.write(f"teardown code failed: {reply['content'].get('ename')}: "
                           f"{reply['content'].get('evalue')}")
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
            client.timeout = max(1, int(min(self.limits.cell_timeout_s, self._deadline_left())))
            t0 = time.monotonic()
            # Whether the kernel was still there when this cell was sent: if not, what ended
            # it ran in the previous cell (a thread it started, an older ipykernel's exit()).
            # The kernel's own "busy" message cannot tell: os._exit() loses it.
            alive = self.proc is None or self.proc.poll() is None
            try:
                await client.async_execute_cell(cell, index)
            except (DeadKernelError, asyncio.CancelledError, RuntimeError):
                stopped = self._kernel_gone(client, cell, index, time.monotonic() - t0, sent=alive)
                continue
            finally:
                client.add_markers(cell)
            record = client.record(cell, index, time.monotonic() - t0)
            limit = _limit_from_error(record, self.limits)
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
                status, reason = "error", f"{self._label(index)} raised {record.ename}: {record.evalue}"[:300]
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
        reason = f"stopped after {label}: {what}{rest}"
        self.stop = {"kind": "limit", "cell": last, "label": label, "reason": reason}
        return status, reason

    def _kernel_gone(self, client: _CappedClient, cell: NotebookNode, index: int,
                     duration: float, *, sent: bool) -> tuple[RunStatus, str]:
        """The kernel died or was killed while `cell` was awaited: record which cell ended it.
        `sent`: the kernel was alive when this cell was sent to it."""
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
        if self.kill_status is not None:
            status, what = self.kill_status
            ending = diagnose.Ending("limit", what, "SandboxLimit")
        else:
            code = None
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self.proc.wait(timeout=5)
            ending = diagnose.process_ending(code)
            if ending.clean and not self._after(at):  # os._exit(0) as the very last thing
                self.log.write(f"{self._label(at)} {ending.what} as its last cell")
                self.records.append(CellRecord(at, "ok", round(duration, 3)))
                return "ok", ""
            status = "error" if ending.kind == "exit" else "killed"
        why = self._stopped(ending.kind, at, ending.what)
        self.records.append(CellRecord(at, "timeout" if timed_out else "error", round(duration, 3),
                                       ending.ename, why))
        return status, why


def _max_message(limits: SandboxLimits) -> int:
    return max(8 * limits.max_output_bytes_per_cell, 32 * MiB)


def _is_cifar(host: Path) -> bool:
    return host.name == "cifar-10-batches-py" or (host / "cifar-10-batches-py").is_dir()


def _sandbox_env(spec: SandboxSpec) -> dict[str, str]:
    """The kernel's whole environment: nothing of the grader's (tokens, paths) leaks in."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": sandbox.HOME, "USER": "student", "LOGNAME": "student",
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
        "MPLCONFIGDIR": f"{sandbox.HOME}/.config/matplotlib",
        "XDG_CACHE_HOME": f"{sandbox.HOME}/.cache", "TORCH_HOME": f"{sandbox.HOME}/.cache/torch",
        "PYTHONDONTWRITEBYTECODE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        # No network: `!pip install x` fails at once with "no matching distribution" instead
        # of retrying a dead connection, and an installed package is "already satisfied".
        "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
        # glibc's per-thread arenas inflate private memory and so RLIMIT_DATA use.
        "MALLOC_ARENA_MAX": "4",
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in spec.gpus),
        # Two runs each spinning two OpenMP threads on two cores run several times slower
        # than two single-threaded runs (measured on the reference: 2.7 vs 0.4 s per epoch).
        **({"OMP_NUM_THREADS": str(spec.cpu_threads), "MKL_NUM_THREADS": str(spec.cpu_threads)}
           if spec.cpu_threads > 0 else {}),
    }


_MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory")


def _limit_from_error(record: CellRecord, limits: SandboxLimits) -> str | None:
    """The limit a cell's error shows it hit, if any (the run is then ended), naming the
    rubric key that sets it."""
    if record.status != "error":
        return None
    text = f"{record.ename}: {record.evalue}".lower()
    if record.ename == "MemoryError" or any(w in text for w in _MEMORY_WORDS):
        return f"the memory limit of {limits.memory_bytes / GiB:.3g} GiB per process (rubric limits.memory) was reached"
    full = f"[errno {errno.ENOSPC}]" in text or "no space left on device" in text
    # A write to /dev/shm names no path in its error: the failing line of code does.
    shm = any(w in text for w in _SHM_WORDS) or "/dev/shm" in record.traceback[-1500:].lower()
    if shm and (full or "bus error" in text or "shared memory" in text):
        # DataLoader workers hand their batches over in /dev/shm: a full one surfaces as
        # ENOSPC on a torch_* file there, or as a worker killed by SIGBUS.
        return (f"the shared memory limit (/dev/shm, {limits.max_shm_bytes / MiB:.0f} MiB, rubric "
                f"limits.shared_memory) was reached by DataLoader workers or multiprocessing")
    if full:
        return (f"the work folder quota of {limits.max_work_bytes / MiB:.0f} MiB in /tmp "
                f"(rubric limits.work_disk) was reached")
    if f"[errno {errno.EFBIG}]" in text or "file too large" in text:
        return f"the file size limit of {limits.max_file_bytes / MiB:.0f} MiB (rubric limits.file_size) was reached"
    if (f"[errno {errno.EAGAIN}]" in text and "fork" in record.traceback.lower()) \
            or "can't start new thread" in text:
        return (f"the process limit of {limits.max_processes} processes and threads "
                f"(rubric limits.processes) was reached")
    return None


_SHM_WORDS = ("/dev/shm", "</torch_", "shared memory", "(shm)")


# ------------------------------------------------------------- kernel manager, client


class _SandboxKernelManager(AsyncKernelManager):
    """Starts the kernel with a fixed command (the sandbox) and interrupts it by message:
    a SIGINT sent to bwrap from outside would not reach the kernel in its own session."""

    launch_cmd: list[str] = []
    kernel_dir_owner: int | None = None
    client_context: zmq.asyncio.Context

    def client(self, **kwargs: Any) -> Any:
        return super().client(context=self.client_context, **kwargs)

    @property
    def kernel_spec(self) -> KernelSpec:  # type: ignore[override]
        return KernelSpec(argv=["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="Python 3 (dllab sandbox)", language="python",
                          interrupt_mode="message")

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        if self.kernel_dir_owner is not None:  # the sandbox uid reads it and makes sockets
            os.chown(self.connection_file, self.kernel_dir_owner, self.kernel_dir_owner)
        return list(self.launch_cmd)


class _CappedClient(NotebookClient):
    """nbclient with outputs, figures and timeouts handled the grader's way."""

    def __init__(self, nb: NotebookNode, *, runner: _Runner, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self.runner = runner
        self.cell_bytes: dict[int, int] = {}
        self.cell_dropped: dict[int, int] = {}
        self.cell_figs_dropped: dict[int, int] = {}
        self.timed_out: dict[int, int] = {}
        self.replies: dict[int, dict[str, Any]] = {}

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> NotebookNode | None:
        out = super().output(outs, msg, display_id, cell_index)
        if out is None or not outs or outs[-1] is not out:
            return out
        r, lim = self.runner, self.runner.limits
        if out.output_type in ("display_data", "execute_result") and _is_figure(out):
            if r.figures_kept >= lim.max_figures:
                outs.pop()
                r.figures_dropped += 1
                self.cell_figs_dropped[cell_index] = self.cell_figs_dropped.get(cell_index, 0) + 1
                return None
            r.figures_kept += 1
        if out.output_type == "error":
            out.evalue = out.evalue[:4000]
            out.traceback = [t[:4000] for t in out.traceback[-40:]]
        size = _output_size(out)
        used = self.cell_bytes.get(cell_index, 0)
        room = max(0, min(lim.max_output_bytes_per_cell - used, lim.max_output_bytes_total - r.total_bytes))
        if size > room:
            r.truncated = True
            if out.output_type == "stream" and room > 0:
                out.text = out.text[:room]
                kept = room
            elif out.output_type == "error":
                kept = size  # always keep the error itself (already clipped above)
            else:
                outs.pop()
                kept = 0
            self.cell_dropped[cell_index] = self.cell_dropped.get(cell_index, 0) + size - kept
            size = kept
        self.cell_bytes[cell_index] = used + size
        r.total_bytes += size
        return out

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        data = msg.get("content", {}).get("data", {})
        if sum(len(str(v)) for v in data.values()) <= self.runner.limits.max_output_bytes_per_cell:
            super()._update_display_id(display_id, msg)

    def add_markers(self, cell: NotebookNode) -> None:
        """Say in the notebook itself what was dropped from this cell (like limitoutput)."""
        idx = self.nb.cells.index(cell) if cell in self.nb.cells else -1
        notes = []
        if self.cell_dropped.get(idx):
            notes.append(f"[output truncated by dllab: {self.cell_dropped[idx]} bytes omitted]")
        if self.cell_figs_dropped.get(idx):
            notes.append(f"[{self.cell_figs_dropped[idx]} figure(s) dropped by dllab: "
                         f"limit of {self.runner.limits.max_figures} figures per notebook]")
        if idx in self.timed_out:
            notes.append(f"[cell interrupted by dllab: ran past {self.runner.limits.cell_timeout_s:g} s]")
        if notes:
            cell.outputs.append(nbformat.v4.new_output("stream", name="stderr",
                                                       text="\n".join(notes) + "\n"))

    async def _check_raise_for_error(self, cell: NotebookNode, cell_index: int,
                                     exec_reply: dict[str, Any] | None) -> None:
        if exec_reply is not None:
            self.replies[cell_index] = exec_reply.get("content", {})
        await super()._check_raise_for_error(cell, cell_index, exec_reply)

    def record(self, cell: NotebookNode, index: int, duration: float) -> CellRecord:
        """The cell's record, from its execute_reply (the outputs may have been capped)."""
        reply = self.replies.get(index, {})
        err = next((o for o in cell.outputs if o.output_type == "error"), None)
        failed = reply.get("status") == "error" or err is not None
        status: CellStatus = "timeout" if index in self.timed_out else ("error" if failed else "ok")
        if not failed:
            return CellRecord(index, status, round(duration, 3))
        src = reply if reply.get("status") == "error" else err
        tb = _ANSI.sub("", "\n".join(str(t)[:4000] for t in list(src.get("traceback", []))[-40:]))
        return CellRecord(index, status, round(duration, 3), str(src.get("ename", ""))[:200],
                          _clip(_ANSI.sub("", str(src.get("evalue", ""))), 1000), tb[-3000:])

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None) -> None | dict[str, Any]:
        idx = self.nb.cells.index(cell) if cell is not None and cell in self.nb.cells else -1
        self.timed_out[idx] = self.timed_out.get(idx, 0) + 1
        if self.timed_out[idx] > 1:  # the interrupt did not stop it within another timeout
            self.runner.kill("timeout", f"the cell time limit of {self.runner.limits.cell_timeout_s:g} s "
                                        f"(rubric limits.cell_timeout) was reached and the cell ignored the "
                                        f"interrupt")
            return None
        return await super()._async_handle_timeout(timeout, cell)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, keeping the head and the tail: an error re-raised from a
    DataLoader worker carries the worker's traceback, whose cause is at its end."""
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]} … {text[-half:]}"
_FIGURE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")


def _is_figure(out: NotebookNode) -> bool:
    return any(k in out.get("data", {}) for k in _FIGURE_TYPES)


def _output_size(out: NotebookNode) -> int:
    if out.output_type == "stream":
        return len(out.text)
    if out.output_type == "error":
        return len(out.evalue) + sum(len(t) for t in out.traceback)
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in out.get("data", {}).values())


# ------------------------------------------------------------------------ helpers


class _Log:
    """log.txt for one run; kernel stdout/stderr is kept up to a cap and counted after."""

    CAP = 1 * MiB

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = path.open("w", encoding="utf-8", errors="replace")
        self._written = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._f.closed:
                return
            if self._written + len(text) > self.CAP:
                self._dropped += len(text)
                return
            self._written += len(text) + 1
            self._f.write(text + "\n")
            self._f.flush()

    def drain(self, stream: Any) -> None:
        """Read the kernel's own stdout/stderr (C-level prints, crashes) until it closes."""
        with contextlib.suppress(Exception):
            for chunk in iter(lambda: stream.read1(65536), b""):
                self.write(chunk.decode("utf-8", "replace").rstrip("\n"))

    def kernel_output(self, msg: dict[str, Any]) -> None:
        content = msg.get("content", {})
        if msg.get("msg_type") == "stream":
            self.write(str(content.get("text", ""))[:10000])
        elif msg.get("msg_type") == "error":
            self.write(f"{content.get('ename')}: {content.get('evalue')}"[:10000])

    def close(self) -> None:
        with self._lock:
            if self._dropped:
                self._f.write(f"[log truncated by dllab: {self._dropped} bytes omitted]\n")
            self._f.close()


def _clear_outputs(nb: NotebookNode) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return path.name


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _write_unrunnable(rel: str, out_dir: Path, started: float, reason: str) -> RunResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "log.txt"
    log.write_text(reason + "\n")
    result = RunResult(path=rel, status="not-run", reason=reason, cells=(), started_at=started,
                       duration_s=round(time.time() - started, 3), startup_s=0.0,
                       executed_notebook_path="", log_path=str(log), figures_kept=0,
                       figures_dropped=0, output_truncated=False)
    (out_dir / "run.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    return result


def _run_bounded(runner: _Runner, startup_code: str | None,
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

    budget = (runner.limits.startup_timeout_s + runner.limits.wall_timeout_s + TEARDOWN_TIMEOUT_S
              + KILL_GRACE_S + SHUTDOWN_TIMEOUT_S + 2 * REAP_TIMEOUT_S)
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


_BACKEND = re.compile(r"^\s*%matplotlib(?:\s+(?P<magic>[\w:/.]+))?\s*$"
                      r"|matplotlib\.use\(\s*['\"](?P<use>[^'\"]+)['\"]", re.MULTILINE)


def _backend_notes(nb: NotebookNode) -> list[str]:
    """Log lines for the interactive matplotlib backends the startup code mapped to inline."""
    notes = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for m in _BACKEND.finditer(cell.source):
            name = m.group("magic") or m.group("use") or ""
            if not name.startswith("-") and (name.lower() in GUI_BACKENDS or name.startswith("module://ipympl")
                                             or (not name and m.group(0).lstrip().startswith("%"))):
                asked = f"%matplotlib {name}".strip() if m.group(0).lstrip().startswith("%") else f"matplotlib.use({name!r})"
                notes.append(f"{diagnose.cell_label(nb.cells, index)} asks for {asked}, an interactive backend "
                             f"the grader has no display for: its figures were shown inline instead")
    return notes


def _submitted_modules(root: Path) -> list[str]:
    """Module names the submission's own files provide (a .py file's stem, a package folder)."""
    names: set[str] = set()
    for path in root.rglob("*.py"):
        names.add(path.stem)
        if path.name == "__init__.py":
            names.add(path.parent.name)
    return sorted(names)
