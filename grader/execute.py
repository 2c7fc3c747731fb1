"""Run one notebook or script in the sandbox, cell by cell, and record what happened.

Shape: nbclient runs here, in the grader's process; only the kernel runs inside bwrap.
The two talk over ZeroMQ `ipc` sockets in a folder of their own that is mounted into the
sandbox (the sandbox has no usable network). Keeping the driver outside means student code
can neither kill it, nor ptrace it, nor write into the results: everything that comes out of
the sandbox is a kernel message, which is size-capped as it arrives (outputs per cell and in
total, figures, and the largest message ZeroMQ will accept), and nothing is unpickled.
The driving itself (kernel start, cells, kills, shutdown) is grader/driver.py.

Statuses. A cell is `ok`, `error` (it raised; later cells still run), `timeout` (it ran past
the per-cell limit and was interrupted; later cells still run) or `not-run`. The run is `ok`,
`error` (some cell raised, or the code ended its own kernel early: `exit()`, `sys.exit()`,
`os._exit()`), `timeout` (a cell timed out, or the whole-notebook wall time ran out and
everything was killed), `killed` (a limit was hit or the kernel crashed; the whole process
tree was killed and later cells were not run) or `not-run` (nothing could start).
`RunResult.stop` says which cell stopped a run early and how (grader/diagnose.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import nbformat
import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat import NotebookNode
from nbformat.v4 import output_from_msg

from grader import capture, diagnose, harvest, hostbudget, jsondepth, sandbox
from grader.kernelmsg import (
    DROPPED,
    UndecodableMessage,
    bounded_deserialize,
    bounded_unpack,
)
from grader.probe.startup import GUI_BACKENDS

if TYPE_CHECKING:
    from grader.driver import Runner
    from grader.gpu import GpuShare

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
    max_notebook_bytes: int = 48 * MiB
    """executed.ipynb as written (serialized, sources included); the largest cells' outputs
    are replaced by a marker until it fits (grader.hostbudget)."""
    max_host_bytes: int = 160 * MiB
    """Everything one run leaves in its run folder on the host (executed notebook, evidence,
    figures, log, probe files); its cache copy holds the same files again at most."""
    gpu_memory: str = ""
    """The run's share of its GPU's memory in words ("35942 MiB of GPU 1, 1/4": grader.gpu), named
    when CUDA runs out of memory; empty for a run without a GPU."""


@dataclass(frozen=True)
class SandboxSpec:
    """Where a run's code may look: dataset mounts, GPUs and the isolation used."""

    mounts: dict[str, str] = field(default_factory=dict)
    """Sandbox path (absolute, or relative to the working copy) -> host folder, read-only."""
    gpus: tuple[int, ...] = ()
    """The GPU device nodes bound into the sandbox (/dev/nvidia<n>): the run's one GPU's
    (`gpu.node`); named in CUDA_VISIBLE_DEVICES by `gpu`, or by these numbers without it."""
    gpu: GpuShare | None = None
    """The run's GPU and its memory share (grader.gpu.plan: the batch gives each run one GPU)."""
    network: Literal[False] = False
    """Always False: there is no option to turn the network on."""
    sandbox: Literal["bwrap", "none"] = "bwrap"
    """`none` is only for a student checking their own work on their own machine."""
    cpu_share: float | None = None
    """At most this many CPU cores for the run (its cgroup's CFS quota; None: no quota), e.g.
    the host's cores / the batch's workers, so a busy loop cannot slow the runs beside it."""
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
    kernel_start_s: float | None = None
    """Seconds from launching the sandbox to its kernel answering (part of `startup_s`, the rest
    is the grader's start-up code and the probe); None when the kernel never answered."""
    peak_processes: int = 0
    """The most processes and threads the sandbox held at once (sampled every 0.5 s)."""
    peak_memory_bytes: int | None = None
    """The most memory the run's processes and tmpfs held at once (bytes, its cgroup's peak;
    page cache included); None where the run had no cgroup (not measured)."""
    cpu_s: float | None = None
    """CPU time of all the run's processes (seconds, from its cgroup); None without one."""
    notes: tuple[dict[str, Any], ...] = ()
    """What the TA should know that is no cell's error, `{"code", "message"}` each: files of
    the submission not placed, the process cap reached for a moment (grader.diagnose)."""
    teardown: dict[str, Any] | None = None
    """How the teardown went (grader.driver.Runner.teardown), None when it was not run."""
    deadline_hit: bool = False
    """The run was stopped at the `deadline` it was given (the end of the submission's time)."""


# In `startup_code`, replaced by the sandbox path of a writable folder from which the files
# grader.harvest.PROBE_FILES names are copied to `out_dir/probe` after the run.
PROBE_DIR_TOKEN = "@@DLLAB_PROBE_DIR@@"
TEARDOWN_TIMEOUT_S = 300.0
"""`teardown_code` gets at most this long, and no more than what is left of the notebook's wall
time and of the run's `deadline` plus grader.runbudget.FINISH_GRACE_S."""


class _LimitHit(Exception):
    """A limit ended the run; carries the run status and reason."""

    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason

    def __reduce__(self) -> tuple[type[_LimitHit], tuple[RunStatus, str]]:
        return _LimitHit, (self.status, self.reason)  # pickles whole (tests/test_pickling.py)


# ------------------------------------------------------------------ public entry points


def run_notebook(nb_path: Path, *, submission_dir: Path, out_dir: Path, spec: SandboxSpec,
                 limits: SandboxLimits, startup_code: str | None = None,
                 teardown_code: str | None = None, deadline: float | None = None) -> RunResult:
    """Run `nb_path` (inside `submission_dir`) in a fresh sandbox; write `executed.ipynb`,
    `log.txt` and `run.json` to `out_dir`. The submission folder is never modified.

    `startup_code` runs in the kernel after the built-in startup and before the first
    student cell, and is not recorded as a cell. `teardown_code` runs after the last
    student cell (also when cells raised or timed out, not when the run was killed), with
    at most what is left of the wall time and of `deadline` plus a grace (Runner._teardown),
    and is not recorded either; its failure changes nothing in the cells' result
    (`RunResult.teardown` says how it went). Both may contain PROBE_DIR_TOKEN. `deadline`: Unix
    time by which the run must end (the end of the submission's time), counting kernel start.
    """
    from grader.nbread import read_notebook

    started = time.time()
    rel = _relative(nb_path, submission_dir)
    try:
        nb = read_notebook(nb_path).nb  # lenient: what Jupyter would open runs (repairs are intake's warning)
    except Exception as exc:  # a corrupt notebook is the student's problem, not ours
        return _write_unrunnable(rel, out_dir, started, f"not a readable notebook: {exc}")
    return _run(nb, rel, submission_dir=submission_dir, out_dir=out_dir, spec=spec,
                limits=limits, startup_code=startup_code, teardown_code=teardown_code,
                started=started, deadline=deadline)


def run_script(py_path: Path, *, submission_dir: Path, out_dir: Path, spec: SandboxSpec,
               limits: SandboxLimits, startup_code: str | None = None,
               teardown_code: str | None = None, deadline: float | None = None) -> RunResult:
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
                started=started, deadline=deadline)


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
         teardown_code: str | None = None, deadline: float | None = None) -> RunResult:
    from grader.driver import Runner, run_bounded  # it imports this module's pieces

    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_outputs(nb)
    log = _Log(out_dir / "log.txt")
    for line in spec.gpu.log_lines() if spec.gpu is not None else ():
        log.write(line)  # the run's GPU and how its memory share is held (grader.gpu)
    # Host /tmp rather than out_dir: ipc socket paths must stay under ~100 characters.
    run_dir = Path(tempfile.mkdtemp(prefix="dllab-run-"))
    try:
        with contextlib.ExitStack() as stack:
            uid = None
            if spec.sandbox == "bwrap" and sandbox.is_root():
                uid = stack.enter_context(sandbox.allocate_uid())
            runner = Runner(nb, rel, run_dir=run_dir, submission_dir=submission_dir,
                            spec=spec, limits=limits, uid=uid, log=log, started=started, deadline=deadline)
            status, reason = run_bounded(runner, startup_code, teardown_code)
        ignored = harvest.copy_out(run_dir / "k" / "probe", out_dir / "probe")
        if ignored:
            log.write(f"the probe folder held files the grader does not expect; not copied: {', '.join(ignored)}")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    done = {r.index for r in runner.records}
    runner.records += [CellRecord(i, "not-run", 0.0) for i, c in enumerate(nb.cells)
                       if c.cell_type == "code" and c.source.strip() and i not in done]
    runner.records.sort(key=lambda r: r.index)
    environment = tuple(dataclasses.asdict(p) for p in diagnose.environment_problems(
        [dataclasses.asdict(r) for r in runner.records if r.status == "error"], nb.cells,
        submitted_modules=_submitted_modules(submission_dir), has_gpu=bool(spec.gpus),
        not_placed=[p for n in runner.notes if n["code"] == "files-not-placed" for p in n.get("paths", ())],
        workdir=str(PurePosixPath(rel).parent)))
    first_error = next((r for r in runner.records if r.status == "error"), None)
    if status == "error" and environment and first_error is not None \
            and environment[0]["cell"] == first_error.index:
        reason = environment[0]["message"]  # the cause the TA can act on, not its symptom
    executed = out_dir / "executed.ipynb"
    emptied = hostbudget.write_notebook(nb, executed, limits.max_notebook_bytes)
    runner.truncated = runner.truncated or bool(emptied)
    caps = []
    if emptied:
        caps.append(f"the outputs of {emptied} cell(s) removed to keep the executed notebook under "
                    f"{limits.max_notebook_bytes // MiB} MiB")
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
    result = RunResult(
        path=rel, status=status, reason=reason, cells=tuple(runner.records), started_at=started,
        duration_s=round(time.time() - started, 3), startup_s=round(runner.startup_s, 3),
        executed_notebook_path=str(executed), log_path=str(log.path),
        figures_kept=runner.figures_kept, figures_dropped=runner.figures_dropped,
        output_truncated=runner.truncated, stop=runner.stop, environment=environment,
        kernel_start_s=None if runner.kernel_start_s is None else round(runner.kernel_start_s, 3),
        peak_processes=runner.peak_processes, peak_memory_bytes=runner.peak_memory_bytes,
        cpu_s=None if runner.cpu_s is None else round(runner.cpu_s, 3), notes=tuple(runner.notes), teardown=runner.teardown,
        deadline_hit=runner.deadline_hit)
    log.write(f"run finished: {status} {reason}".rstrip())
    log.close()
    (out_dir / "run.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    return result


def _max_message(limits: SandboxLimits) -> int:
    return max(8 * limits.max_output_bytes_per_cell, 32 * MiB)


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
        # The run's one GPU by UUID, and how its memory share is held (grader.gpu.GpuShare.env);
        # an empty CUDA_VISIBLE_DEVICES shows no GPU.
        **(spec.gpu.env() if spec.gpu is not None else {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in spec.gpus)}),
        # Two runs each spinning two OpenMP threads on two cores run several times slower
        # than two single-threaded runs (measured on the reference: 2.7 vs 0.4 s per epoch).
        **({"OMP_NUM_THREADS": str(spec.cpu_threads), "MKL_NUM_THREADS": str(spec.cpu_threads)}
           if spec.cpu_threads > 0 else {}),
    }


_MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "out of memory")


def _limit_from_error(record: CellRecord, limits: SandboxLimits, *, file_size_hit: bool = False,
                      work_full: bool = False) -> str | None:
    """The limit a cell's error shows it hit, if any (the run is then ended), naming the
    rubric key that sets it. `file_size_hit`: the kernel was told (SIGXFSZ) during this cell
    that a write went past the file size limit; `work_full`: the work folder (/tmp) was found
    full after the cell failed. torch.save fails in both cases only with "unexpected pos"
    from inline_container.cc, which names no cause."""
    if record.status != "error":
        return None
    if file_size_hit:
        return f"the file size limit of {limits.max_file_bytes / MiB:.0f} MiB (rubric limits.file_size) was reached"
    text = f"{record.ename}: {record.evalue}".lower()
    if diagnose.gpu_out_of_memory(record.ename, record.evalue):  # before "out of memory": not the host's
        return diagnose.gpu_memory_message(limits.gpu_memory)
    if record.ename == "MemoryError" or any(w in text for w in _MEMORY_WORDS):
        return f"the memory limit of {limits.memory_bytes / GiB:.3g} GiB per process (rubric limits.memory) was reached"
    full = f"[errno {errno.ENOSPC}]" in text or "no space left on device" in text
    # A write to /dev/shm names no path in its error: the failing line of code does.
    shm = any(w in text for w in _SHM_WORDS) or "/dev/shm" in record.traceback[-1500:].lower()
    if work_full and not shm:
        full = True
    if shm and (full or "bus error" in text or "shared memory" in text):
        # DataLoader workers hand their batches over in /dev/shm, share_memory_() moves a
        # tensor there: a full one surfaces as ENOSPC on a torch_* file there, or as SIGBUS.
        user = _shm_user(record.evalue + "\n" + record.traceback)
        return (f"the shared memory limit (/dev/shm, {limits.max_shm_bytes / MiB:.0f} MiB, rubric "
                f"limits.shared_memory) was reached{user}")
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
_SHM_USERS = (("share_memory_", "by share_memory_(), which moves a tensor into shared memory"),
              ("dataloader", "by DataLoader workers passing batches"),
              ("multiprocessing", "by multiprocessing (a Pool, a Queue, shared tensors)"),
              ("/dev/shm", "by a file written to /dev/shm"))


def _shm_user(text: str) -> str:
    """What filled /dev/shm, as the failing cell's error and traceback show it ("by ..."), or the
    usual users of shared memory when it does not say."""
    text = text.lower()
    return next((f" {words}" for key, words in _SHM_USERS if key in text),
                " by something using shared memory (DataLoader workers, share_memory_(), multiprocessing)")


# ------------------------------------------------------------- kernel manager, client


class _SandboxKernelManager(AsyncKernelManager):
    """Starts the kernel with a fixed command (the sandbox) and interrupts it by message:
    a SIGINT sent to bwrap from outside would not reach the kernel in its own session."""

    launch_cmd: list[str] = []
    kernel_dir_owner: int | None = None
    client_context: zmq.asyncio.Context

    def client(self, **kwargs: Any) -> Any:
        self.session.unpack = bounded_unpack  # a trait: the client's clone of the session keeps it
        kc = super().client(context=self.client_context, **kwargs)
        kc.session.deserialize = bounded_deserialize(kc.session)  # a method: set on the clone
        return kc

    @property
    def kernel_spec(self) -> KernelSpec:  # type: ignore[override]
        return KernelSpec(argv=["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="Python 3 (dllab sandbox)", language="python",
                          interrupt_mode="message")

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        if self.kernel_dir_owner is not None:  # the sandbox uid reads it and makes sockets
            os.chown(self.connection_file, self.kernel_dir_owner, self.kernel_dir_owner)
        return list(self.launch_cmd)


MAX_DISPLAY_TARGETS = 50
"""Outputs one display_id keeps updatable; later displays of it stay as first shown."""
MAX_ERRORS_PER_CELL = 5
"""Error outputs kept per cell (IPython's showtraceback() can send any number)."""


class _CappedClient(NotebookClient):
    """nbclient with outputs, figures and timeouts handled the grader's way."""

    def __init__(self, nb: NotebookNode, *, runner: Runner, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self.runner = runner
        self.caps: dict[int, capture.CellCap] = {}
        self.cell_dropped: dict[int, int] = {}
        self.cell_figs_dropped: dict[int, int] = {}
        self.timed_out: dict[int, int] = {}
        self.replies: dict[int, dict[str, Any]] = {}
        self.kept_total = 0
        """Characters kept in the outputs of all cells (display updates included)."""
        self.errors_seen: dict[int, int] = {}
        self.id_cells: set[int] = set()
        """Cells holding an output with a display_id (whose indices a trim makes stale)."""
        self.dropped: set[int] = set()
        """Cells an output of which was refused (grader.kernelmsg) and noted."""

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> NotebookNode | None:
        refused = msg.get(DROPPED)
        if isinstance(refused, UndecodableMessage) and cell_index not in self.dropped:
            # its placeholder is kept like any output; the note is said once per cell (a loop of
            # deep displays of varying depth would otherwise flood the run's notes)
            self.dropped.add(cell_index)
            what = (f"an output nested {refused.depth} levels deep, more than the {jsondepth.MAX_DEPTH} the grader "
                    f"reads" if refused.depth is not None else f"an output the grader could not decode "
                                                               f"({refused.detail[:200]})")
            self.runner.note("output-dropped", f"{diagnose.cell_label(self.nb.cells, cell_index)} sent {what}; it "
                                               f"was dropped, a placeholder put in its place, and the run went on")
        out = super().output(outs, msg, display_id, cell_index)
        if out is None or not outs or outs[-1] is not out:
            return out
        r, lim = self.runner, self.runner.limits
        if display_id:
            self.id_cells.add(cell_index)
            self._limit_targets(display_id, cell_index)
        if out.output_type == "error":
            # An error is never cut from a cell (it says why the cell stopped), so their number
            # is: showtraceback() in a loop would otherwise keep every copy.
            self.errors_seen[cell_index] = self.errors_seen.get(cell_index, 0) + 1
            if self.errors_seen[cell_index] > MAX_ERRORS_PER_CELL:
                outs.pop()
                r.truncated = True
                return None
        if out.output_type in ("display_data", "execute_result") and _is_figure(out):
            if r.figures_kept >= lim.max_figures:
                outs.pop()
                if display_id:
                    self._forget_last(display_id, cell_index)
                r.figures_dropped += 1
                self.cell_figs_dropped[cell_index] = self.cell_figs_dropped.get(cell_index, 0) + 1
                return None
            r.figures_kept += 1
        if out.output_type == "error":
            out.evalue = out.evalue[:4000]
            out.traceback = [t[:4000] for t in out.traceback[-40:]]
        # Carriage returns collapsed and consecutive streams joined before anything is
        # counted; then the cell keeps its head and its tail (see grader.capture).
        cap = self.caps.get(cell_index)
        kept_before = cap.kept if cap is not None else 0
        if cap is None:
            room = max(0, min(lim.max_output_bytes_per_cell, lim.max_output_bytes_total - self.kept_total))
            cap = self.caps[cell_index] = capture.CellCap(budget=room, base=self.kept_total)
        elif len(outs) != cap.seen + 1:
            cap.resync(outs, out)  # a clear_output emptied the cell meanwhile
        prev = outs[-2] if len(outs) >= 2 else None
        if (out.output_type == "stream" and prev is not None and prev is not cap.marker
                and prev.get("output_type") == "stream" and prev.get("name") == out.name):
            before = len(prev.text)
            prev.text = capture.join_stream(prev.text, out.text)
            outs.pop()
            out, delta = prev, len(prev.text) - before
        else:
            if out.output_type == "stream":
                out.text = capture.collapse_cr(out.text)
            delta = capture.output_size(out)

        def on_cut() -> None:
            r.truncated = True
            self.clear_display_id_mapping(cell_index)  # indices into the cut list are stale

        omitted = cap.omitted
        cap.add(outs, out, delta, on_cut=on_cut)
        if cap.omitted != omitted and cell_index in self.id_cells:
            self.clear_display_id_mapping(cell_index)  # the tail was trimmed: indices moved
        self.kept_total += cap.kept - kept_before
        r.total_bytes = self.kept_total
        self.cell_dropped[cell_index] = cap.omitted
        return out

    def _limit_targets(self, display_id: str, cell_index: int) -> None:
        """Keeps at most MAX_DISPLAY_TARGETS outputs updatable per display_id: every display
        or update of an id rewrites all its outputs (nbclient), so 1000 displays of one id
        made one update cost 1000 copies, and n displays cost n² rewrites."""
        cells = self._display_id_map.get(display_id) or {}
        if sum(len(v) for v in cells.values()) > MAX_DISPLAY_TARGETS:
            self._forget_last(display_id, cell_index)

    def _forget_last(self, display_id: str, cell_index: int) -> None:
        indices = (self._display_id_map.get(display_id) or {}).get(cell_index)
        if indices:
            indices.pop()

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        """nbclient's display update, counted against the caps: each output the id names grows
        (or shrinks) by the difference, and an update that would take its cell over its
        budget or the notebook over its total is not applied there (the cell says so)."""
        cells = self._display_id_map.get(display_id)
        if not cells:
            return
        try:
            new = output_from_msg({**msg, "header": {**msg.get("header", {}), "msg_type": "display_data"}})
        except (ValueError, KeyError, TypeError):
            return
        lim, size, known = self.runner.limits, capture.output_size(new), {}
        for cell_index, indices in cells.items():
            cap = self.caps.get(cell_index)
            if cap is None or not 0 <= cell_index < len(self.nb.cells):
                continue
            cell = self.nb.cells[cell_index]
            for i in indices:
                if not 0 <= i < len(cell.outputs):
                    continue
                target = cell.outputs[i]
                key = (id(target.get("data")), id(target.get("metadata")))
                old = known[key] if key in known else known.setdefault(key, capture.output_size(target))
                delta = size - old
                if delta > 0 and (cap.kept + delta > cap.budget
                                  or self.kept_total + delta > lim.max_output_bytes_total):
                    self._update_dropped(cell, cap, size)
                    continue
                target["data"], target["metadata"] = new["data"], new["metadata"]
                cap.grow(target, delta)
                self.kept_total += delta
        self.runner.total_bytes = self.kept_total

    def _update_dropped(self, cell: NotebookNode, cap: capture.CellCap, size: int) -> None:
        self.runner.truncated = True
        cut = cell.metadata.setdefault("dllab", {}).setdefault(
            "output_truncated", {"omitted_chars": 0, "kept_chars": cap.kept, "budget_chars": cap.budget})
        cut["omitted_chars"] = cut.get("omitted_chars", 0) + size
        cut["kept_chars"] = cap.kept
        cut["updates_dropped"] = cut.get("updates_dropped", 0) + 1

    def add_markers(self, cell: NotebookNode) -> None:
        """Say in the notebook itself what was dropped from this cell (like limitoutput)."""
        idx = self.nb.cells.index(cell) if cell in self.nb.cells else -1
        notes = []
        if self.cell_dropped.get(idx):
            # The marker is in the output itself; the metadata tells the grader which cell.
            cap = self.caps[idx]
            cell.metadata.setdefault("dllab", {})["output_truncated"] = {
                "omitted_chars": cap.omitted, "kept_chars": cap.kept, "budget_chars": cap.budget}
        dropped = (cell.metadata.get("dllab") or {}).get("output_truncated", {}).get("updates_dropped")
        if dropped:
            notes.append(f"[{dropped} display update(s) not applied by dllab: they would have taken the "
                         f"outputs over the limit of {self.runner.limits.max_output_bytes_per_cell} characters "
                         f"per cell or {self.runner.limits.max_output_bytes_total} per notebook]")
        if self.errors_seen.get(idx, 0) > MAX_ERRORS_PER_CELL:
            notes.append(f"[{self.errors_seen[idx] - MAX_ERRORS_PER_CELL} more error output(s) dropped by dllab: "
                         f"{MAX_ERRORS_PER_CELL} are kept per cell]")
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
        if self.runner.wall_time_up():
            # The cell's timeout had been cut to what was left of the notebook's wall time:
            # that limit, not the cell's, was reached, and it ends the run (see Runner._cells).
            return None
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
