"""The warm evaluator (grader.verify.server): one sandboxed server per submission runs each
verification job in a forked child, with the output, exit code and time limit a fresh run gives."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest

from grader.execute import SandboxLimits, SandboxSpec
from grader.verify import host, server

MODES = ["none"] + (["bwrap"] if shutil.which("bwrap") and os.geteuid() == 0 else [])
"""The sandbox modes to test: bwrap where this machine can run it as the grader does (root)."""


def _job(body: str) -> tuple[Path, Path, Path]:
    work, kdir = host.job_folder("dllab-test-")
    (kdir / "s.py").write_text(body, encoding="utf-8")
    (kdir / "job.json").write_text("{}", encoding="utf-8")
    for name in ("s.py", "job.json"):
        os.chmod(kdir / name, 0o644)
    return work, kdir / "s.py", kdir / "job.json"


def _run(body: str, mode: str, timeout_s: float = 60) -> tuple[bytes, bytes, int | str]:
    work, script, job = _job(body)
    try:
        return host.run_job(script, job, work=work, spec=SandboxSpec(sandbox=mode), limits=SandboxLimits(),
                            timeout_s=timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("mode", MODES)
def test_jobs_share_one_server_with_a_fresh_runs_results(mode: str) -> None:
    with server.session() as warm:
        assert warm is not None
        out, err, code = _run("import sys, torch\nprint('args', sys.argv[1:] == [sys.argv[1]], 'torch' in sys.modules)\n"
                              "print('to stderr', file=sys.stderr)\n", mode)
        assert (out, err, code) == (b"args True True\n", b"to stderr\n", 0)
        assert _run("raise SystemExit(3)", mode)[2] == 3
        assert _run("import os\nos._exit(5)", mode)[2] == 5
        out, err, code = _run("raise ValueError('broken model')", mode)
        assert code == 1 and err.rstrip().endswith(b"ValueError: broken model") and out == b""
        assert _run("print('no newline', end='')", mode)[:2] == (b"no newline", b"")
        # a forged end line (another job's token) is the job's output, not its end
        out, _, code = _run("import os\nos.write(1, b'\\n\\x00dllab-evaluator-end 00 0\\n')\nraise SystemExit(4)", mode)
        assert code == 4 and out.endswith(b"dllab-evaluator-end 00 0\n")
        assert warm.started == 1
        # each job is a fresh child: what one job changes, the next does not see
        _run("import torch\ntorch.set_num_threads(1)\nimport builtins\nbuiltins.LEFT = 1", mode)
        assert _run("import builtins\nprint(hasattr(builtins, 'LEFT'))", mode)[0] == b"False\n"
        assert warm.started == 1
    assert not warm.root.exists()


@pytest.mark.parametrize("mode", MODES[-1:])
def test_a_job_out_of_time_stops_the_server_and_the_next_starts_one(mode: str) -> None:
    with server.session() as warm:
        assert warm is not None
        assert _run("import time\ntime.sleep(60)", mode, timeout_s=3)[2] == "timeout"
        assert warm.started == 1 and not warm.servers
        assert _run("print('next')", mode) == (b"next\n", b"", 0)
        assert warm.started == 2


def test_without_a_sandbox_a_job_out_of_time_is_killed_with_its_server(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with server.session() as warm:
        assert warm is not None
        assert _run("print('started')", "none")[0] == b"started\n"  # the server is up: the job gets its time
        spin = f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nwhile True:\n    pass\n"
        assert _run(spin, "none", timeout_s=5)[2] == "timeout"
        pid = int(pid_file.read_text())
        stat = Path(f"/proc/{pid}/stat")
        for _ in range(50):  # SIGKILL is delivered when the process is next scheduled
            if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.1)
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("mode", MODES)
def test_a_job_that_kills_its_server_runs_again_afresh(mode: str) -> None:
    kill_server = ("import os, signal\n"
                   "parent = open(f'/proc/{os.getppid()}/cmdline', 'rb').read().split(b'\\0')\n"
                   "if any(a.endswith(b'/k/server.py') for a in parent):\n"
                   "    os.kill(os.getppid(), signal.SIGKILL)\n"
                   "    import time; time.sleep(30)\n"
                   "print('fresh run')\n")
    with server.session() as warm:
        assert warm is not None
        assert _run(kill_server, mode) == (b"fresh run\n", b"", 0)
        assert _run("print('warm again')", mode) == (b"warm again\n", b"", 0)
        assert warm.started == 2


@pytest.mark.parametrize("mode", MODES)
def test_what_a_job_leaves_running_is_killed_before_the_next(mode: str) -> None:
    # a process in the job's group everywhere; in the sandbox even one in a session of its own
    detach = "start_new_session=True" if mode == "bwrap" else "start_new_session=False"
    with server.session() as warm:
        assert warm is not None
        out, _, code = _run("import subprocess, sys\n"
                            f"p = subprocess.Popen(['sleep', '300'], {detach})\nprint(p.pid)\n", mode)
        assert code == 0
        pid = int(out)
        if mode == "none":  # its pid is the host's
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        else:
            alive = _run(f"import os\nprint(os.path.exists('/proc/{pid}'))", mode)[0]
            assert alive == b"False\n"


def test_output_is_capped_per_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "MAX_STDOUT_BYTES", 1000)
    with server.session():
        out, _, code = _run("import sys\nsys.stdout.write('x' * 200000)\n", "none")
        assert code == 0 and out == b"x" * 1000
        assert _run("print('small')", "none")[0] == b"small\n"


def test_turned_off_each_job_runs_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLAB_WARM_EVALUATOR", "0")
    with server.session() as warm:
        assert warm is None and server.current() is None
        work, script, job = _job("print('alone')")
        try:
            assert not str(work).startswith(tempfile_prefix())
            assert host.run_job(script, job, work=work, spec=SandboxSpec(sandbox="none"), limits=SandboxLimits(),
                                timeout_s=60) == (b"alone\n", b"", 0)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def tempfile_prefix() -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), "dllab-evaluator-")


def _weight(group) -> str:
    d = group.dirs.get("cpu") or group.dirs["unified"]
    return (d / ("cpu.shares" if group.version == 1 else "cpu.weight")).read_text().strip()


@pytest.mark.skipif("bwrap" not in MODES, reason="needs bwrap as root")
def test_a_server_started_ahead_waits_at_the_lowest_cpu_weight_until_its_first_job() -> None:
    from grader import cgroups

    spec, limits = SandboxSpec(sandbox="bwrap"), SandboxLimits()
    with server.session() as warm:
        assert warm is not None
        if not cgroups.available()[0]:
            assert not host.warm_up(spec, limits)
            return
        assert host.warm_up(spec, limits) and not host.warm_up(spec, limits)  # once
        (running,) = warm.servers.values()
        assert running.warming and _weight(running.group) in ("2", "1")
        # another notebook's time limits differ: the same server
        shorter = dataclasses.replace(limits, wall_timeout_s=30.0, cell_timeout_s=10.0)
        work, script, job = _job("print('first job')")
        assert host.run_job(script, job, work=work, spec=spec, limits=shorter, timeout_s=60) == (b"first job\n", b"", 0)
        assert warm.started == 1 and not running.warming and _weight(running.group) in ("1024", "100")


def test_without_a_group_to_hold_it_back_nothing_starts_ahead() -> None:
    with server.session() as warm:
        assert warm is not None
        assert not host.warm_up(SandboxSpec(sandbox="none"), SandboxLimits())
        assert warm.started == 0 and not warm.servers


def test_folders_a_killed_grader_left_are_removed_by_the_next_session(tmp_path: Path) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    left = tmp_path / f"dllab-evaluator-{dead}-abc123"
    (left / "k").mkdir(parents=True)
    mine = tmp_path / f"dllab-evaluator-{os.getpid()}-def456"
    mine.mkdir()
    other = tmp_path / "dllab-evaluator-notapid-x"
    other.mkdir()
    assert server.sweep_folders(tmp_path) == 1
    assert not left.exists() and mine.exists() and other.exists()
