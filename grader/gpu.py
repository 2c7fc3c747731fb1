"""Several grading runs on one GPU: which GPU a run gets, how its sandbox names it, its memory share.

`dllab grade --gpus 0,1 --runs-per-gpu K` grades up to 2K submissions at once, and each run
sees one GPU only. The batch hands a submission to a worker with the GPU that has the fewest
runs in flight (`Slots`; inside a Dask worker process, `worker_slots`), and the sandbox binds
that GPU's device node alone (with the driver's control nodes, grader.sandbox.gpu_args) and
names it in CUDA_VISIBLE_DEVICES by its UUID, which means the same GPU whichever GPUs the
driver inside the sandbox enumerates (an index could name another one, or none).

Each run may use 1/K of its GPU's memory (`GpuShare`, made by `plan` on the machine that runs it):

* With NVIDIA MPS (a control daemon's pipe folder holding `control`: $CUDA_MPS_PIPE_DIRECTORY,
  else /tmp/nvidia-mps) the run is an MPS client whose CUDA_MPS_PINNED_DEVICE_MEM_LIMIT is its
  share, the pipe and log folders bound read-only at their own paths. That variable is the
  client's: code that edits its environment before CUDA starts, or starts a process with
  another one, could raise it. What it cannot raise is the control daemon's own limit,
  `set_default_device_pinned_mem_limit <dev> <value>` ("the default device pinned memory limit
  for each MPS client", for servers started after it; `set_device_pinned_mem_limit <PID> <dev>
  <value>` for a running server: NVIDIA's nvidia-cuda-mps-control documentation). The TA sets
  it when starting MPS; the run log says which of the two holds (`mps_default_limit`). The
  documentation found does not say whether a client's variable can go above the daemon's
  limit (for the thread percentage it says a client can only lower it).
  MPS is used only where it can work: it serves one uid at a time (a client of another uid
  waits until the running server's clients are done), so not when the grader runs as root
  (each run then has a uid of its own, grader.sandbox.allocate_uid); and MPS clients in
  containers are documented to need the daemon's IPC namespace and shared memory, which the
  sandbox's own hide. So before the first run on a GPU, each worker process starts one
  sandboxed client that must allocate below the limit and fail above it (`mps_check`); when it
  does not, the allocator's fraction below is used and the run log says why.
* Without MPS: start-up code (`STARTUP`) calls `torch.cuda.set_per_process_memory_fraction(1/K,
  0)` in the kernel before the first cell, only when the run has a GPU and torch is installed
  (nothing is imported otherwise). Student code could call it again with a larger fraction;
  the run log says so.

A run that exhausts its share gets CUDA's out-of-memory error in its own process: the grader
names it ("the run's GPU memory share (... MiB of GPU 1, 1/4) was exhausted",
grader.diagnose.gpu_memory_message) and ends that run alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

GPU_QUERY = ("--query-gpu=index,uuid,pci.bus_id,memory.total", "--format=csv,noheader,nounits")
"""nvidia-smi's arguments for every GPU's index, UUID, PCI bus id and memory (MiB)."""
PROC_GPUS = Path("/proc/driver/nvidia/gpus")
"""The driver's folder per GPU (by PCI bus id), whose `information` gives its device minor."""
MPS_PIPE = "/tmp/nvidia-mps"
"""The MPS control daemon's pipe folder when $CUDA_MPS_PIPE_DIRECTORY is not set."""
MPS_LOG = "/var/log/nvidia-mps"
"""Its log folder when $CUDA_MPS_LOG_DIRECTORY is not set."""
FRACTION_ENV = "DLLAB_GPU_MEMORY_FRACTION"
"""Set in a run's environment when the allocator's fraction caps it: the kernel's start-up code
and the verification evaluator read it."""

# ------------------------------------------------------------------ which GPU a run gets


class Slots:
    """The batch's GPUs and the runs each holds now. `take()` gives the one with the fewest (the
    first listed among equals), waiting while every GPU holds `per_gpu` (None: never); `give(g)`
    hands it back. Thread-safe: the threads of a Dask worker share one."""

    def __init__(self, gpus: Sequence[int], per_gpu: int | None = None) -> None:
        if not gpus:
            raise ValueError("no GPUs to share")
        self._load = {g: 0 for g in gpus}
        self._cap = per_gpu
        self._cond = threading.Condition()

    def take(self) -> int:
        with self._cond:
            while True:
                g = min(self._load, key=self._load.__getitem__)
                if self._cap is None or self._load[g] < self._cap:
                    self._load[g] += 1
                    return g
                self._cond.wait()

    def give(self, g: int) -> None:
        with self._cond:
            self._load[g] -= 1
            self._cond.notify()

    @contextlib.contextmanager
    def held(self) -> Iterator[int]:
        g = self.take()
        try:
            yield g
        finally:
            self.give(g)

    def load(self) -> dict[int, int]:
        """GPU -> runs in flight on it now."""
        with self._cond:
            return dict(self._load)


_WORKER_SLOTS: dict[tuple[tuple[int, ...], int], Slots] = {}
_WORKER_LOCK = threading.Lock()


def worker_slots(gpus: Sequence[int], per_gpu: int) -> Slots:
    """This process's allocator for `gpus` (one per process: a Dask worker's threads share it, so
    its `--resources GPU=N*K` tasks spread over its N GPUs, K at most on each)."""
    key = (tuple(gpus), per_gpu)
    with _WORKER_LOCK:
        if key not in _WORKER_SLOTS:
            _WORKER_SLOTS[key] = Slots(gpus, per_gpu)
        return _WORKER_SLOTS[key]


# -------------------------------------------------------------------- the host's GPUs


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as nvidia-smi lists it."""

    index: int
    """nvidia-smi's index: what `--gpus` names."""
    uuid: str
    bus_id: str
    """PCI bus id as nvidia-smi writes it (00000000:19:00.0)."""
    memory_mib: int | None
    """Total memory in MiB; None when nvidia-smi gave none."""
    minor: int | None = None
    """Its device node is /dev/nvidia<minor>; None when the driver did not say (then the index)."""


def parse_memory_total(text: str) -> int | None:
    """MiB from `nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i G`'s output
    (its first line; "[N/A]" and the like give None)."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return int(first) if first.isdigit() else None


def parse_gpu_query(text: str) -> dict[int, GpuInfo]:
    """GPU index -> GpuInfo from the output of `nvidia-smi` with GPU_QUERY; lines that are not four
    comma-separated fields starting with an index are skipped (an error message gives none)."""
    gpus = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not fields[0].isdigit():
            continue
        gpus[int(fields[0])] = GpuInfo(index=int(fields[0]), uuid=fields[1] if fields[1].startswith(("GPU-", "MIG-")) else "",
                                       bus_id=fields[2], memory_mib=parse_memory_total(fields[3]))
    return gpus


def device_minor(bus_id: str, root: Path = PROC_GPUS) -> int | None:
    """The GPU's /dev/nvidia<minor> from the driver's `information` file ("Device Minor: 0"), found
    by its bus id (nvidia-smi writes the domain with 8 digits, the driver's folder with 4)."""
    m = re.fullmatch(r"([0-9A-Fa-f]+):([0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])", bus_id.strip())
    if not m:
        return None
    try:
        text = (root / f"{int(m.group(1), 16):04x}:{m.group(2).lower()}" / "information").read_text()
    except OSError:
        return None
    found = re.search(r"^Device Minor:\s*(\d+)", text, re.M)
    return int(found.group(1)) if found else None


@functools.lru_cache(maxsize=1)
def host_gpus() -> tuple[tuple[GpuInfo, ...], str]:
    """This machine's GPUs (nvidia-smi asked once per process), and why there are none when so."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return (), "nvidia-smi is not installed"
    try:
        done = subprocess.run([exe, *GPU_QUERY], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return (), f"nvidia-smi failed ({exc})"
    gpus = parse_gpu_query(done.stdout)
    if not gpus:
        said = (done.stdout + done.stderr).strip().splitlines()
        return (), f"nvidia-smi listed no GPU ({said[-1][:200] if said else f'exit status {done.returncode}'})"
    return tuple(replace(g, minor=device_minor(g.bus_id)) for g in gpus.values()), ""


# -------------------------------------------------------------------------------- MPS


def mps_pipe(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The MPS control daemon's pipe folder, when one is running (its `control` is there)."""
    folder = Path(environ.get("CUDA_MPS_PIPE_DIRECTORY") or MPS_PIPE)
    return folder if (folder / "control").exists() else None


def mps_log(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("CUDA_MPS_LOG_DIRECTORY") or MPS_LOG)


def parse_mps_limit(text: str) -> int | None:
    """MiB from nvidia-cuda-mps-control's answer to `get_default_device_pinned_mem_limit`
    ("10G", "4096M", "900MB"); None for no limit ("0", "N/A", nothing)."""
    m = re.search(r"(\d+)\s*([GMK])", text.upper())
    if not m or int(m.group(1)) == 0:
        return None
    value, unit = int(m.group(1)), m.group(2)
    return {"G": value * 1024, "M": value, "K": value // 1024}[unit] or None


def mps_default_limit(index: int, pipe: Path) -> int | None:
    """The control daemon's default pinned-memory limit for GPU `index` (MiB), None when it sets
    none or cannot be asked (its device numbers are CUDA's as the daemon sees them: nvidia-smi's
    when it was started with CUDA_DEVICE_ORDER=PCI_BUS_ID)."""
    exe = shutil.which("nvidia-cuda-mps-control")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe], input=f"get_default_device_pinned_mem_limit {index}\n", capture_output=True,
                              text=True, timeout=10, check=False,
                              env={**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(pipe)})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_mps_limit(done.stdout) if done.returncode == 0 else None


_MPS_CHECK = """\
import torch

limit = {limit}  # MiB
small = torch.empty(16 << 20, dtype=torch.uint8, device="cuda")  # 16 MiB: an MPS client works
try:
    big = torch.empty((limit + 256) << 20, dtype=torch.uint8, device="cuda")
except RuntimeError as exc:  # torch's OutOfMemoryError is one
    print("capped" if "out of memory" in str(exc).lower() else "failed: " + str(exc)[:200])
else:
    print("not capped")
"""


def mps_check(share: GpuShare, *, timeout_s: float = 120.0) -> str | None:
    """None when a sandboxed MPS client of `share` (its environment and binds, one uid as every
    run's) allocates 16 MiB and is refused its share plus 256 MiB; else why MPS cannot cap runs."""
    from grader.execute import SandboxLimits, SandboxSpec
    from grader.verify.host import job_folder, run_job

    work, kdir = job_folder("dllab-mps-")
    try:
        (kdir / "check.py").write_text(_MPS_CHECK.format(limit=share.share_mib or 0))
        (kdir / "job.json").write_text("{}")
        out, err, code = run_job(kdir / "check.py", kdir / "job.json", work=work,
                                 spec=SandboxSpec(gpus=(share.node,), gpu=share), limits=SandboxLimits(),
                                 timeout_s=timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    said = out.decode(errors="replace").strip().splitlines()
    if said[-1:] == ["capped"]:
        return None
    if said[-1:] == ["not capped"]:
        return "a sandboxed MPS client was not held to CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
    if said and said[-1].startswith("failed: "):
        return f"a sandboxed MPS client's allocation over its limit {said[-1]}"
    tail = err.decode(errors="replace").strip().splitlines()
    return (f"a sandboxed MPS client could not use the GPU ({'timed out' if code == 'timeout' else tail[-1][:200] if tail else f'exit status {code}'}); "
            f"MPS clients need the daemon's IPC namespace and shared memory, which the sandbox keeps its own")


_MPS_CHECKED: dict[tuple[int, str, int], str | None] = {}
_MPS_LOCK = threading.Lock()


# ----------------------------------------------------------------- a run's share of its GPU


@dataclass(frozen=True)
class GpuShare:
    """One run's GPU: how the sandbox shows it and what share of its memory the run may use."""

    index: int
    """The GPU as `--gpus` names it (nvidia-smi's index)."""
    runs_per_gpu: int = 1
    """K: the runs that share it at most; the run's share is 1/K."""
    uuid: str = ""
    """Its UUID, which CUDA_VISIBLE_DEVICES names it by; empty when nvidia-smi did not say."""
    minor: int | None = None
    """Its device node /dev/nvidia<minor>; None: the index."""
    total_mib: int | None = None
    """Its memory (MiB); None when nvidia-smi did not say."""
    mps_pipe: str | None = None
    """The MPS pipe folder the run is a client of (its share is then MPS's limit); None: no MPS."""
    mps_log: str | None = None
    mps_daemon_mib: int | None = None
    """The control daemon's own default limit for this GPU (MiB), which the run cannot raise."""
    notes: tuple[str, ...] = ()
    """What the run log should say besides: why MPS is not used, what nvidia-smi did not tell."""

    @property
    def node(self) -> int:
        return self.index if self.minor is None else self.minor

    @property
    def share_mib(self) -> int | None:
        return None if self.total_mib is None else self.total_mib // self.runs_per_gpu

    @property
    def allocator_capped(self) -> bool:
        """The allocator's fraction caps the run (no MPS, and K > 1)."""
        return self.mps_pipe is None and self.runs_per_gpu > 1

    def env(self) -> dict[str, str]:
        """The run's GPU variables: its one GPU, and how its share is held."""
        env = {"CUDA_VISIBLE_DEVICES": self.uuid or str(self.index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        if self.mps_pipe is not None:
            env["CUDA_MPS_PIPE_DIRECTORY"] = self.mps_pipe
            env["CUDA_MPS_LOG_DIRECTORY"] = self.mps_log or MPS_LOG
            if self.share_mib:
                env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={self.share_mib}M"  # 0: the one GPU it sees
        elif self.allocator_capped:
            env[FRACTION_ENV] = repr(1.0 / self.runs_per_gpu)
        return env

    def words(self) -> str:
        """The share as the out-of-memory message names it: "35942 MiB of GPU 1, 1/4"."""
        part = "all of it" if self.runs_per_gpu == 1 else f"1/{self.runs_per_gpu}"
        return f"{self.share_mib} MiB of GPU {self.index}, {part}" if self.share_mib else f"{part} of GPU {self.index}"

    def log_lines(self) -> list[str]:
        """What the run log says about the run's GPU and how its memory share is held."""
        name = f"GPU {self.index}" + (f" ({self.uuid})" if self.uuid else "")
        lines = [f"{name} is this run's only GPU (/dev/nvidia{self.node} bound; --runs-per-gpu "
                 f"{self.runs_per_gpu}: at most {self.runs_per_gpu} run(s) share it)"]
        lines += list(self.notes)
        share = self.words()
        if self.mps_pipe is not None:
            if self.mps_daemon_mib and self.share_mib and self.mps_daemon_mib <= self.share_mib:
                held = (f"the MPS control daemon's default limit for this GPU, {self.mps_daemon_mib} MiB "
                        f"(set_default_device_pinned_mem_limit), holds whatever the run's code does")
            elif self.mps_daemon_mib:
                held = (f"code that changes its environment before CUDA starts could raise it up to the control "
                        f"daemon's default limit, {self.mps_daemon_mib} MiB (set_default_device_pinned_mem_limit)")
            else:
                held = ("the control daemon reported no default limit (set_default_device_pinned_mem_limit), so "
                        "code that changes its environment before CUDA starts could raise it")
            lines.append(f"GPU memory share: {share}, held by NVIDIA MPS ({self.mps_pipe}) through "
                         f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT; {held}")
        elif self.allocator_capped:
            lines.append(f"GPU memory share: {share}; no NVIDIA MPS caps it, so the caching allocator's fraction "
                         f"is set before the first cell (torch.cuda.set_per_process_memory_fraction"
                         f"({1.0 / self.runs_per_gpu:.4g}, 0)): student code could raise it by calling that again")
        else:
            lines.append(f"GPU memory: the whole GPU ({share}); one run per GPU")
        return lines


def plan(index: int, *, runs_per_gpu: int = 1, sandbox: str = "bwrap", root: bool | None = None) -> GpuShare:
    """The share of GPU `index` a run on this machine gets: its UUID, device node and memory from
    nvidia-smi, MPS when it can hold the cap (module docstring), else the allocator's fraction.
    `root`: the grader runs as root (each run its own uid); None asks the process."""
    gpus, why = host_gpus()
    info = next((g for g in gpus if g.index == index), None)
    notes: list[str] = []
    if info is None:
        notes.append(f"nvidia-smi did not describe GPU {index} ({why or 'not listed'}): it is named by its index "
                     f"and its memory share is not known")
    share = GpuShare(index=index, runs_per_gpu=runs_per_gpu, uuid=info.uuid if info else "",
                     minor=info.minor if info else None, total_mib=info.memory_mib if info else None)
    pipe = mps_pipe()
    if pipe is None or sandbox != "bwrap":
        return replace(share, notes=tuple(notes))
    if share.share_mib is None:
        notes.append(f"NVIDIA MPS is running ({pipe}) but not used: the GPU's memory is not known, so no limit can be set")
        return replace(share, notes=tuple(notes))
    if root if root is not None else os.geteuid() == 0:
        notes.append(f"NVIDIA MPS is running ({pipe}) but not used: it serves one uid at a time and each run has "
                     f"its own (the grader runs as root), so runs would wait for each other")
        return replace(share, notes=tuple(notes))
    with_mps = replace(share, mps_pipe=str(pipe), mps_log=str(mps_log()),
                       mps_daemon_mib=mps_default_limit(share.index, pipe))
    key = (index, str(pipe), runs_per_gpu)
    with _MPS_LOCK:
        if key not in _MPS_CHECKED:
            _MPS_CHECKED[key] = mps_check(with_mps)
        problem = _MPS_CHECKED[key]
    if problem is not None:
        notes.append(f"NVIDIA MPS is running ({pipe}) but not used: {problem}")
        return replace(share, notes=tuple(notes))
    return replace(with_mps, notes=tuple(notes))


STARTUP = '''\
def __dllab_gpu_share():
    # The run's share of its GPU's memory (grader.gpu): the caching allocator's fraction, set
    # before any student code. Nothing is imported for a run without a GPU or without torch.
    import importlib.util
    import os
    import sys

    fraction = os.environ.get("DLLAB_GPU_MEMORY_FRACTION")
    if not fraction or not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return
    try:
        if importlib.util.find_spec("torch") is None:
            return
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(float(fraction), 0)
    except Exception as exc:  # never the student's problem: the run goes on uncapped
        print("dllab startup: the GPU memory share was not set:", repr(exc), file=sys.__stderr__)


__dllab_gpu_share()
del __dllab_gpu_share
'''
"""Kernel start-up code (before the probe and the first cell) setting the allocator's fraction
from FRACTION_ENV; the pipeline adds it to runs whose share the allocator holds."""
