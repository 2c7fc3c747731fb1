"""Several runs per GPU (grader.gpu), on a machine without one: the GPU-only parts are fakes.

Which GPU each run gets (a fake task recording what it was given and when it ran), nvidia-smi's
output in the format it prints (written by hand: this machine has no GPU), the environment and binds of a run with and without MPS
(a fake pipe folder), the kernel's start-up code, the out-of-memory message, the CLI's errors,
and bench/bench_gpu.py on a machine without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from grader import gpu, sandbox
from grader.batch import Progress, check_gpu_workers, default_workers, grade_on_gpu, run_local
from grader.errors import GraderError
from grader.execute import CellRecord, SandboxLimits, SandboxSpec, _limit_from_error, _sandbox_env
from grader.pipeline import GradeSettings
from grader.resources import resource_dir

ROOT = Path(__file__).resolve().parent.parent
RUBRIC = resource_dir("labs") / "lab1" / "rubric.yaml"

# `nvidia-smi --query-gpu=index,uuid,pci.bus_id,memory.total --format=csv,noheader,nounits`, as it
# prints them (fields joined by ", "); UUIDs and bus ids made up, no GPU here to record from
H200 = "0, GPU-5a1f0c3e-8d2b-4e6f-9a7c-1b3d5e7f9a0b, 00000000:19:00.0, 143771\n"
TWO_A100 = ("0, GPU-11111111-2222-3333-4444-555555555555, 00000000:07:00.0, 81920\n"
            "1, GPU-66666666-7777-8888-9999-000000000000, 00000000:0F:00.0, 81920\n")
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
             "that the latest NVIDIA driver is installed and running.\n")


@dataclass(frozen=True)
class FakeCandidate:
    student_id: str


def recording_task(candidate: FakeCandidate, settings: GradeSettings) -> dict:
    """Stands in for grade_submission: records the GPUs it was given and when it ran."""
    start = time.time()
    time.sleep(1.0)
    (settings.out / f"{candidate.student_id}.json").write_text(
        json.dumps({"gpus": list(settings.gpus), "start": start, "end": time.time()}))
    if candidate.student_id == "crash" and not (settings.out / "crashed").exists():
        (settings.out / "crashed").touch()
        os._exit(1)  # the worker process dies once: the pool breaks, the retry is one by one
    return {"flags": []}


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_each_run_gets_one_gpu_the_least_loaded_k_at_most(tmp_path: Path) -> None:
    settings = GradeSettings(rubric_path=RUBRIC, out=tmp_path, gpus=(0, 1), runs_per_gpu=2)
    todo = [FakeCandidate(f"s{i}") for i in range(8)]
    todo.insert(5, FakeCandidate("crash"))  # in the second wave: the pool breaks under 3 other runs
    workers = default_workers(settings.gpus, settings.runs_per_gpu)
    assert workers == 4
    progress = Progress(total=len(todo), durations=[])
    run_local(todo, settings, workers=workers, progress=progress, tick=lambda: None, task=recording_task)
    runs = [json.loads((tmp_path / f"{c.student_id}.json").read_text()) for c in todo]
    assert all(len(r["gpus"]) == 1 and r["gpus"][0] in (0, 1) for r in runs), "each run sees one GPU"
    spans = [(r["start"], r["end"]) for r in runs]
    assert _most_at_once(spans) == 4, "4 in flight at once"
    for g in (0, 1):
        assert _most_at_once([(r["start"], r["end"]) for r in runs if r["gpus"] == [g]]) <= 2
    assert progress.done == len(todo), "the broken pool's tasks and the retried one all finished"


def test_more_workers_than_places_on_the_gpus_is_refused(tmp_path: Path) -> None:
    settings = GradeSettings(rubric_path=RUBRIC, out=tmp_path, gpus=(0,), runs_per_gpu=2)
    check_gpu_workers(2, settings)
    with pytest.raises(GraderError, match="--workers 3 is more than the GPUs' 2 place"):
        check_gpu_workers(3, settings)
    check_gpu_workers(64, replace(settings, gpus=()))


def test_a_dask_workers_threads_share_its_gpus_k_at_most(tmp_path: Path, monkeypatch) -> None:
    """grade_on_gpu in N*K threads, as a worker started with --nthreads 4 --resources GPU=4 runs it."""
    from grader import batch

    seen: list[tuple[int, float, float]] = []
    lock = threading.Lock()

    def fake_grade(candidate: FakeCandidate, settings: GradeSettings) -> dict:
        start = time.time()
        time.sleep(0.2)
        with lock:
            seen.append((*settings.gpus, start, time.time()))
        return {"flags": []}

    monkeypatch.setattr(batch, "grade_submission", fake_grade)
    settings = GradeSettings(rubric_path=RUBRIC, out=tmp_path, gpus=(2, 5), runs_per_gpu=2)
    threads = [threading.Thread(target=grade_on_gpu, args=(FakeCandidate(str(i)), settings)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 12 and {g for g, _, _ in seen} == {2, 5}
    for g in (2, 5):
        assert _most_at_once([(s, e) for h, s, e in seen if h == g]) <= 2
    assert gpu.worker_slots((2, 5), 2).load() == {2: 0, 5: 0}, "every GPU handed back"


def test_slots_give_the_least_loaded_gpu_and_wait_at_the_cap() -> None:
    slots = gpu.Slots((0, 1), per_gpu=1)
    assert [slots.take(), slots.take()] == [0, 1]
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(slots.take()))
    waiter.start()
    time.sleep(0.1)
    assert not got, "both GPUs hold K runs: the next waits"
    slots.give(1)
    waiter.join(timeout=5)
    assert got == [1]


# ------------------------------------------------------------------------ nvidia-smi


def test_nvidia_smi_output_is_parsed() -> None:
    (h200,) = gpu.parse_gpu_query(H200).values()
    assert h200.index == 0 and h200.uuid.startswith("GPU-5a1f") and h200.memory_mib == 143771
    two = gpu.parse_gpu_query(TWO_A100)
    assert sorted(two) == [0, 1] and two[1].bus_id == "00000000:0F:00.0"
    assert gpu.parse_gpu_query(NO_DRIVER) == {}
    assert gpu.parse_gpu_query("0, GPU-1, 00000000:07:00.0, [N/A]\n")[0].memory_mib is None
    assert gpu.parse_memory_total("143771\n") == 143771
    assert gpu.parse_memory_total("[N/A]\n") is None and gpu.parse_memory_total("") is None


def test_the_device_node_is_the_drivers_minor_not_the_index(tmp_path: Path) -> None:
    folder = tmp_path / "0000:0f:00.0"
    folder.mkdir()
    (folder / "information").write_text("Model: \t\t NVIDIA A100\nBus Location: \t 0000:0f:00.0\n"
                                        "Device Minor: \t 3\nGPU Excluded:\t No\n")
    assert gpu.device_minor("00000000:0F:00.0", root=tmp_path) == 3
    assert gpu.device_minor("00000000:07:00.0", root=tmp_path) is None
    assert gpu.device_minor("junk", root=tmp_path) is None


def test_mps_limits_are_read() -> None:
    assert gpu.parse_mps_limit("10G\n") == 10240 and gpu.parse_mps_limit("4096M") == 4096
    assert gpu.parse_mps_limit("0") is None and gpu.parse_mps_limit("") is None


# ---------------------------------------------------------- the run's environment and binds


def _fake_host(monkeypatch, tmp_path: Path, *, mps: bool, check: str | None = None, daemon_mib: int | None = None):
    info = gpu.GpuInfo(index=1, uuid="GPU-66666666", bus_id="00000000:0F:00.0", memory_mib=81920, minor=3)
    monkeypatch.setattr(gpu, "host_gpus", lambda: ((info,), ""))
    pipe = tmp_path / "mps-pipe"
    pipe.mkdir(exist_ok=True)
    if mps:
        (pipe / "control").touch()
    (tmp_path / "mps-log").mkdir(exist_ok=True)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    monkeypatch.setenv("CUDA_MPS_LOG_DIRECTORY", str(tmp_path / "mps-log"))
    monkeypatch.setattr(gpu, "mps_check", lambda share: check)
    monkeypatch.setattr(gpu, "mps_default_limit", lambda index, pipe: daemon_mib)
    monkeypatch.setattr(gpu, "_MPS_CHECKED", {})
    return pipe


def _command(tmp_path: Path, spec: SandboxSpec) -> list[str]:
    for d in ("k", "sub"):
        (tmp_path / d).mkdir(exist_ok=True)
    return sandbox.build_command(["python"], run_dir=tmp_path, kernel_dir=tmp_path / "k", submission=tmp_path / "sub",
                                 mounts={}, limits=SandboxLimits(), env=_sandbox_env(spec), uid=None, gpus=spec.gpus)


def test_with_mps_the_run_is_a_client_capped_at_its_share(tmp_path: Path, monkeypatch) -> None:
    pipe = _fake_host(monkeypatch, tmp_path, mps=True, daemon_mib=20480)
    share = gpu.plan(1, runs_per_gpu=4, root=False)
    assert share.mps_pipe == str(pipe) and not share.allocator_capped and share.node == 3
    env = _sandbox_env(SandboxSpec(gpus=(share.node,), gpu=share))
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-66666666"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20480M" and env["CUDA_MPS_PIPE_DIRECTORY"] == str(pipe)
    assert gpu.FRACTION_ENV not in env
    cmd = _command(tmp_path, SandboxSpec(gpus=(share.node,), gpu=share))
    devs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--dev-bind-try"]
    assert "/dev/nvidia3" in devs and not {"/dev/nvidia0", "/dev/nvidia1"} & set(devs) and "/dev/nvidiactl" in devs
    binds = [(cmd[i + 1], cmd[i + 2], i) for i, a in enumerate(cmd) if a == "--ro-bind"]
    pipe_bind = [i for s, t, i in binds if s == t == str(pipe)]
    assert pipe_bind and pipe_bind[0] > cmd.index("/tmp"), "bound after the private /tmp, which would hide it"
    assert any(s == t == str(tmp_path / "mps-log") for s, t, _ in binds)
    lines = " ".join(share.log_lines())
    assert "20480 MiB of GPU 1, 1/4" in lines and "default limit for this GPU, 20480 MiB" in lines
    assert "could raise it" in " ".join(replace(share, mps_daemon_mib=None).log_lines())


def test_mps_that_cannot_serve_the_sandbox_falls_back_to_the_allocator(tmp_path: Path, monkeypatch) -> None:
    _fake_host(monkeypatch, tmp_path, mps=True, check="a sandboxed MPS client could not use the GPU (805)")
    share = gpu.plan(1, runs_per_gpu=4, root=False)
    assert share.mps_pipe is None and share.allocator_capped
    assert any("not used: a sandboxed MPS client could not use the GPU" in n for n in share.notes)
    _fake_host(monkeypatch, tmp_path, mps=True)
    as_root = gpu.plan(1, runs_per_gpu=4, root=True)
    assert as_root.mps_pipe is None and any("one uid at a time" in n for n in as_root.notes)


def test_without_mps_the_allocators_fraction_caps_the_run(tmp_path: Path, monkeypatch) -> None:
    _fake_host(monkeypatch, tmp_path, mps=False)
    share = gpu.plan(1, runs_per_gpu=4, root=False)
    env = _sandbox_env(SandboxSpec(gpus=(share.node,), gpu=share))
    assert env[gpu.FRACTION_ENV] == "0.25" and not any(k.startswith("CUDA_MPS") for k in env)
    assert str(tmp_path / "mps-pipe") not in _command(tmp_path, SandboxSpec(gpus=(share.node,), gpu=share))
    lines = " ".join(share.log_lines())
    assert "set_per_process_memory_fraction(0.25, 0)" in lines and "student code could raise it" in lines
    whole = gpu.plan(1, runs_per_gpu=1, root=False)
    assert not whole.allocator_capped and gpu.FRACTION_ENV not in whole.env()
    assert _sandbox_env(SandboxSpec())["CUDA_VISIBLE_DEVICES"] == "", "no GPU: none visible"


def test_an_unknown_gpu_is_named_by_its_index(monkeypatch) -> None:
    monkeypatch.setattr(gpu, "host_gpus", lambda: ((), "nvidia-smi is not installed"))
    monkeypatch.setattr(gpu, "mps_pipe", lambda environ=None: None)
    share = gpu.plan(2, runs_per_gpu=2)
    assert share.env()["CUDA_VISIBLE_DEVICES"] == "2" and share.node == 2 and share.share_mib is None
    assert share.words() == "1/2 of GPU 2" and "nvidia-smi is not installed" in share.notes[0]


def test_the_verification_sandbox_gets_the_runs_gpu(tmp_path: Path, monkeypatch) -> None:
    from grader import cgroups
    from grader.verify import host

    seen = {}

    def build(inner, **kw):
        seen.update(kw)
        return ["true"]

    monkeypatch.setattr(host.sandbox, "build_command", build)
    monkeypatch.setattr(host.sandbox, "is_root", lambda: False)
    monkeypatch.setattr(host, "_run_capped", lambda cmd, cwd, timeout_s: (b"", b"", 0))
    monkeypatch.setattr(cgroups, "for_run", lambda *a, **k: (None, "none here"))
    share = gpu.GpuShare(index=1, runs_per_gpu=4, uuid="GPU-6666", minor=3, total_mib=81920)
    spec = SandboxSpec(mounts={"/data": "/x"}, gpus=(3,), gpu=share)
    work, kdir = host.job_folder("dllab-test-")
    host.run_job(kdir / "evaluate.py", kdir / "job.json", work=work, spec=spec, limits=SandboxLimits(), timeout_s=5)
    assert seen["gpus"] == (3,) and seen["env"]["CUDA_VISIBLE_DEVICES"] == "GPU-6666"
    assert seen["env"][gpu.FRACTION_ENV] == "0.25" and seen["mounts"] == {}
    host.run_job(kdir / "evaluate.py", kdir / "job.json", work=work, spec=SandboxSpec(), limits=SandboxLimits(),
                 timeout_s=5)
    assert seen["gpus"] == () and seen["env"]["CUDA_VISIBLE_DEVICES"] == ""


# -------------------------------------------------------------------- the start-up code


def _startup_imports(env: dict[str, str]) -> list[str]:
    code = gpu.STARTUP + "import sys\nprint('torch' in sys.modules)\n"
    compile(code, "<startup>", "exec")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "DLLAB_"))}
    done = subprocess.run([sys.executable, "-c", code], env={**keep, **env}, capture_output=True, text=True,
                          timeout=120, check=True)
    return [done.stdout.strip(), done.stderr.strip()]


def test_startup_code_does_not_import_torch_without_a_gpu() -> None:
    assert _startup_imports({gpu.FRACTION_ENV: "0.25"}) == ["False", ""]
    assert _startup_imports({gpu.FRACTION_ENV: "0.25", "CUDA_VISIBLE_DEVICES": ""}) == ["False", ""]
    assert _startup_imports({"CUDA_VISIBLE_DEVICES": "GPU-1"}) == ["False", ""], "no share to set"
    # A GPU named but none there (this machine): torch is imported, finds none, sets nothing, says nothing.
    assert _startup_imports({gpu.FRACTION_ENV: "0.25", "CUDA_VISIBLE_DEVICES": "GPU-1"})[1] == ""


# ------------------------------------------------------------- out of memory, CLI, bench


def test_cuda_out_of_memory_names_the_runs_share_not_the_hosts_memory() -> None:
    limits = SandboxLimits(gpu_memory="20480 MiB of GPU 1, 1/4")
    oom = CellRecord(7, "error", 1.0, ename="OutOfMemoryError",
                     evalue="CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.25 GiB")
    assert _limit_from_error(oom, limits) == \
        "the run's GPU memory share (20480 MiB of GPU 1, 1/4) was exhausted (CUDA out of memory)"
    mps = CellRecord(7, "error", 1.0, ename="RuntimeError", evalue="CUDA error: out of memory")
    assert "GPU memory share" in _limit_from_error(mps, limits)
    host = CellRecord(7, "error", 1.0, ename="MemoryError", evalue="")
    assert "per process (rubric limits.memory)" in _limit_from_error(host, limits)


def test_cli_refuses_bad_runs_per_gpu(tmp_path: Path, capsys) -> None:
    from grader.cli import main

    base = ["grade", str(tmp_path), "--lab", "lab1", "--out", str(tmp_path / "out")]
    assert main([*base, "--gpus", "0", "--runs-per-gpu", "0"]) == 2
    assert "--runs-per-gpu 0: expected 1 or more" in capsys.readouterr().err
    assert main([*base, "--runs-per-gpu", "4"]) == 2
    assert "--runs-per-gpu needs --gpus" in capsys.readouterr().err
    assert main([*base, "--gpus", "0,0"]) == 2
    assert "distinct GPU indices" in capsys.readouterr().err


def test_runs_per_gpu_is_kept_with_the_graded_folder(tmp_path: Path) -> None:
    from grader import config

    settings = GradeSettings(rubric_path=RUBRIC, out=tmp_path, gpus=(0, 1), runs_per_gpu=8)
    config.save(settings)
    loaded = config.load(tmp_path)
    assert loaded.gpus == (0, 1) and loaded.runs_per_gpu == 8


def test_bench_gpu_without_a_gpu_says_so_and_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stdout


def test_a_run_that_ran_out_of_its_gpu_share_is_graded_again_with_a_smaller_k(tmp_path: Path) -> None:
    """A rerun with fewer runs per GPU gives each run a larger share: the students whose run
    stopped at 1/K of a GPU's memory, K above the new one, are graded again; the others stay."""
    import json as _json

    from grader.batch import gpu_share_ran_out
    from grader.diagnose import gpu_memory_message

    runs = tmp_path / "runs" / "0556001"
    (runs / "lab1-1.ipynb").mkdir(parents=True)
    reason = "cell 4 was stopped: " + gpu_memory_message("35942 MiB of GPU 1, 1/4")
    (runs / "lab1-1.ipynb" / "run.json").write_text(_json.dumps({"status": "killed", "reason": reason}))
    assert gpu_share_ran_out(runs, 2) and gpu_share_ran_out(runs, 1)
    assert not gpu_share_ran_out(runs, 4) and not gpu_share_ran_out(runs, 8)
    (runs / "lab1-1.ipynb" / "run.json").write_text(_json.dumps({"status": "ok", "reason": ""}))
    assert not gpu_share_ran_out(runs, 1)
    assert not gpu_share_ran_out(tmp_path / "runs" / "nobody", 1)


def test_a_local_batch_refuses_gpus_this_machine_does_not_have(tmp_path: Path, monkeypatch) -> None:
    """--gpus naming a GPU nvidia-smi does not list would let every run train on the CPU without
    a word: the batch refuses before grading, saying what the machine has."""
    import pytest as _pytest

    from grader import gpu
    from grader.batch import check_gpus_present
    from grader.errors import GraderError

    settings = GradeSettings(rubric_path=tmp_path / "r.yaml", out=tmp_path, gpus=(0, 2))
    check_gpus_present(GradeSettings(rubric_path=tmp_path / "r.yaml", out=tmp_path))  # no --gpus: nothing to check
    if not gpu.host_gpus()[0]:  # this machine, as it is (no GPU here: nvidia-smi missing or listing none)
        with _pytest.raises(GraderError, match=r"--gpus 0,2: this machine has no GPU 0, 2 \("):
            check_gpus_present(settings)
    one = gpu.GpuInfo(index=0, uuid="GPU-aaaa", bus_id="00000000:01:00.0", memory_mib=81559)
    monkeypatch.setattr(gpu, "host_gpus", lambda: ((one,), ""))
    with _pytest.raises(GraderError, match=r"no GPU 2 \(nvidia-smi lists GPU 0\)"):
        check_gpus_present(settings)
    check_gpus_present(GradeSettings(rubric_path=tmp_path / "r.yaml", out=tmp_path, gpus=(0,)))
