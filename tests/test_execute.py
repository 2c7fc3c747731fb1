"""Sandboxed execution end to end: real kernels in the real bwrap sandbox.

One batch (module fixture) grades a normal submission, then one hostile submission per
threat, then the normal one again, the way `dllab grade` would; each test then checks one
result. Limits are small so the whole batch takes well under a minute.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import sys
import socket
import threading
from pathlib import Path

import nbformat
import pytest

from grader import sandbox
from grader.execute import (
    GiB,
    MiB,
    RunResult,
    SandboxLimits,
    SandboxSpec,
    run_notebook,
    run_script,
    script_to_notebook,
)

pytestmark = pytest.mark.kernel

LIMITS = SandboxLimits(memory_bytes=2 * GiB, max_processes=128, max_file_bytes=64 * MiB,
                       max_work_bytes=64 * MiB, cell_timeout_s=4, wall_timeout_s=40,
                       max_output_bytes_per_cell=64 * 1024, max_figures=10)
WALL_LIMITS = dataclasses.replace(LIMITS, wall_timeout_s=6)

# A 1x1 PNG: 1000 of them are "1000 figures" to the grader without 30 s of matplotlib.
_PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5d0a9e30000000049454e44ae426082"
)).decode()


def _skip_without_bwrap() -> None:
    try:
        sandbox.check_bwrap()
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")


def _notebook(path: Path, *cells: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    # Stale outputs a student left in: they must be cleared, not graded.
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="STALE\n")]
    nbformat.write(nb, path)
    return path


NORMAL = (
    "import torch, torchvision\n"
    "from torchvision.datasets import CIFAR10\n"
    "a = CIFAR10('/tmp/dataset-nctu', train=False, download=False)\n"
    "b = CIFAR10('./data', train=True, download=True)\n"
    "print('cifar', len(a), len(b))",
    "torch.manual_seed(0)\n"
    "m = torch.nn.Linear(4, 2)\n"
    "print('out', round(float(m(torch.ones(1, 4)).sum()), 6))",
    "import os\nprint(sorted(os.listdir('/tmp/datasets-nctu')))\n"
    "os.makedirs('/tmp/work/food11', exist_ok=True)\n"
    "open('/tmp/work/food11/x.txt', 'w').write('ok')\n"
    "open('written.txt', 'w').write('in the work copy')\nprint('wrote')",
    "raise ValueError('a student bug')",
    "print('after the error')",
)

HOSTILE = {
    "fork_bomb": ("import os\nwhile True:\n    os.fork()", "print('never')"),
    "memory_bomb": ("x = []\nwhile True:\n    x.append(bytearray(64 * 1024 * 1024))", "print('never')"),
    "infinite_loop": ("while True:\n    pass", "print('after the interrupted cell')",
                      "import time\nwhile True:\n    try:\n        time.sleep(60)\n"
                      "    except KeyboardInterrupt:\n        pass",
                      "print('never')"),
    "wall_time": tuple("import time; time.sleep(3)" for _ in range(20)),
    "big_output": ("for i in range(100):\n    print('x' * (1 << 20))", "print('after')"),
    "many_figures": ("from IPython.display import Image, display\nimport base64\n"
                     f"png = base64.b64decode('{_PNG}')\n"
                     "for i in range(1000):\n    display(Image(data=png))", "print('after')"),
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
                    "os.kill(-1, signal.SIGKILL)", "os.kill(1, signal.SIGKILL)", "print('alive')"),
    "os_exit": ("import os\nos._exit(1)", "print('never')"),
    "segfault": ("import ctypes\nctypes.string_at(0)", "print('never')"),
    "disk_fill": ("with open('/tmp/work/fill', 'wb') as f:\n    while True:\n"
                  "        f.write(b'x' * (1 << 20))", "print('never')"),
    "huge_message": ("print('x' * (64 << 20))", "print('never')"),
    "big_file": ("with open('/tmp/work/one', 'wb') as f:\n    f.seek(128 << 20)\n    f.write(b'x')",
                 "print('never')"),
}


def _probe_notebook(env: dict[str, str]) -> tuple[str, ...]:
    """Cells that each try one way out and print BLOCKED or LEAKED."""
    def attempt(name: str, body: str) -> str:
        body = "\n".join("    " + line for line in body.splitlines())
        return (f"try:\n{body}\n    print('LEAKED {name}')\n"
                f"except Exception as exc:\n    print('BLOCKED {name}', type(exc).__name__)")
    return (
        "import os, socket",
        attempt("outside", "socket.create_connection(('1.1.1.1', 53), timeout=3)"),
        attempt("dns", "socket.getaddrinfo('example.com', 80)"),
        attempt("loopback", f"socket.create_connection(('127.0.0.1', {env['port']}), timeout=3)"),
        attempt("sibling", f"open({env['sibling']!r}).read()"),
        attempt("rubric", f"open({env['rubric']!r}).read()"),
        attempt("reference", f"open({env['reference']!r}).read()"),
        attempt("out_dir", f"os.listdir({env['out_dir']!r})"),
        attempt("original", f"open({env['original']!r}, 'w').write('x')"),
        # /root exists only as the path to the Python install (here under pyenv).
        attempt("root_home", "assert set(os.listdir('/root')) - {'.pyenv'}"),
        attempt("bashrc", "open('/root/.bashrc').read()"),
        attempt("home", "os.listdir('/home')"),
        attempt("etc_shadow", "open('/etc/shadow').read()"),
        attempt("write_usr", "open('/usr/evil', 'w')"),
        attempt("write_dataset", "open('/tmp/datasets-nctu/evil', 'w')"),
        attempt("write_python", f"open({env['python']!r} + '/evil', 'w')"),
        attempt("env", "assert os.environ['DLLAB_TEST_SECRET'], 'visible'"),
        attempt("docker", "socket.socket(socket.AF_UNIX).connect('/var/run/docker.sock')"),
        "print('uid', os.getuid(), 'pid', os.getpid(), 'cwd', os.getcwd())",
    )


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunResult]:
    _skip_without_bwrap()
    from grader.datasets import synth

    root = tmp_path_factory.mktemp("batch")
    data = root / "datasets"
    synth(data, size="tiny", seed=0, names=["cifar10"])
    for d in (data, *data.iterdir()):  # pytest and synth make 0700 folders
        d.chmod(0o755)
    subs = root / "submissions"
    rubric = root / "rubrics" / "lab01.yaml"
    rubric.parent.mkdir()
    rubric.write_text("secret: rubric\n")
    reference = root / "reference" / "expected.json"
    reference.parent.mkdir()
    reference.write_text('{"test_accuracy": 0.7}\n')
    out = root / "out"

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()

    os.environ["DLLAB_TEST_SECRET"] = "hunter2"
    env = {"port": str(server.getsockname()[1]), "sibling": str(subs / "normal" / "lab1.ipynb"),
           "rubric": str(rubric), "reference": str(reference), "out_dir": str(out),
           "original": str(subs / "probe" / "lab1.ipynb"),
           "python": str(sandbox.python_roots()[0])}
    spec = SandboxSpec(mounts={"/tmp/datasets-nctu": str(data), "/tmp/dataset-nctu": str(data),
                               "data": str(data)})
    order = ["normal", "probe", *HOSTILE, "normal_again"]
    cells = {"normal": NORMAL, "normal_again": NORMAL, "probe": _probe_notebook(env), **HOSTILE}
    results = {}
    try:
        for name in order:
            nb = _notebook(subs / name / "lab1.ipynb", *cells[name])
            limits = WALL_LIMITS if name == "wall_time" else LIMITS
            results[name] = run_notebook(nb, submission_dir=nb.parent, out_dir=out / name,
                                         spec=spec, limits=limits)
    finally:
        del os.environ["DLLAB_TEST_SECRET"]
        server.close()
    results["_accepted"] = accepted  # type: ignore[assignment]
    results["_subs"] = subs  # type: ignore[assignment]
    return results


def _outputs(result: RunResult) -> list[str]:
    nb = nbformat.read(result.executed_notebook_path, as_version=4)
    return ["".join(o.get("text", "") for o in c.get("outputs", []) if o.output_type == "stream")
            for c in nb.cells]


def _statuses(result: RunResult) -> list[str]:
    return [c.status for c in result.cells]


def test_normal_submission_runs_and_continues_past_an_error(batch: dict[str, RunResult]) -> None:
    r = batch["normal"]
    assert _statuses(r) == ["ok", "ok", "ok", "error", "ok"], r
    assert r.status == "error" and "ValueError" in r.reason
    out = _outputs(r)
    assert "cifar 500 1000" in out[0] and "STALE" not in out[0]
    assert "after the error" in out[4]
    assert r.cells[3].ename == "ValueError" and "a student bug" in r.cells[3].traceback
    assert "\x1b[" not in r.cells[3].traceback
    assert 0 < r.startup_s < r.duration_s
    assert json.loads(Path(r.log_path).with_name("run.json").read_text())["status"] == "error"
    # The original submission is untouched: the write went to the sandbox's copy.
    assert not (batch["_subs"] / "normal" / "written.txt").exists()  # type: ignore[operator]


def test_normal_submission_after_hostile_ones_gets_the_same_result(batch: dict[str, RunResult]) -> None:
    first, again = batch["normal"], batch["normal_again"]
    assert (again.status, again.reason) == (first.status, first.reason)
    assert _statuses(again) == _statuses(first)
    assert _outputs(again) == _outputs(first)


def test_every_way_out_is_blocked(batch: dict[str, RunResult]) -> None:
    r = batch["probe"]
    text = "".join(_outputs(r))
    assert "LEAKED" not in text, text
    for name in ("outside", "dns", "loopback", "sibling", "rubric", "reference", "out_dir",
                 "original", "root_home", "bashrc", "home", "etc_shadow", "write_usr", "write_dataset",
                 "write_python", "env", "docker"):
        assert f"BLOCKED {name}" in text, name
    assert r.status == "ok", r.reason
    assert batch["_accepted"] == []  # the host's loopback server never saw a connection
    uid, pid = (int(w) for w in text.split("uid ")[1].split()[:3:2])
    assert uid >= 1_990_000 if sandbox.is_root() else uid == sandbox.USERNS_UID
    assert pid < 10  # its own PID namespace


@pytest.mark.parametrize(("name", "status", "words", "cells"), [
    ("fork_bomb", "killed", "process limit", None),
    ("memory_bomb", "killed", "memory limit", ["error", "not-run"]),
    ("infinite_loop", "timeout", "ignored the interrupt", ["timeout", "ok", "timeout", "not-run"]),
    ("wall_time", "timeout", "wall time", None),
    ("big_output", "ok", "truncated", ["ok", "ok"]),
    ("many_figures", "ok", "990 figures dropped", ["ok", "ok"]),
    ("kill_parent", "error", "", None),
    ("os_exit", "killed", "exit status 1", ["error", "not-run"]),
    ("segfault", "killed", "SIGSEGV", ["error", "not-run"]),
    ("disk_fill", "killed", "work folder quota", ["error", "not-run"]),
    ("big_file", "killed", "file size limit", ["error", "not-run"]),
    ("huge_message", "killed", "output message over 32 MiB", ["ok", "not-run"]),
])
def test_hostile_submission_is_contained(batch: dict[str, RunResult], name: str, status: str,
                                         words: str, cells: list[str] | None) -> None:
    r = batch[name]
    assert r.status in status.split("|"), (r.status, r.reason, r.cells)
    assert r.reason and any(w in r.reason for w in words.split("|")), r.reason
    if cells is not None:
        assert _statuses(r) == cells
    assert Path(r.executed_notebook_path).stat().st_size < 2 * MiB


def test_specific_containment_details(batch: dict[str, RunResult]) -> None:
    assert "after the interrupted cell" in _outputs(batch["infinite_loop"])[1]
    wall = batch["wall_time"]
    assert wall.duration_s < WALL_LIMITS.wall_timeout_s + 5
    assert _statuses(wall)[-1] == "not-run"
    big = _outputs(batch["big_output"])
    assert len(big[0]) < 70 * 1024 and "[output truncated by dllab:" in big[0]
    assert batch["big_output"].output_truncated
    figs = batch["many_figures"]
    assert (figs.figures_kept, figs.figures_dropped) == (10, 990)
    assert "figure(s) dropped by dllab" in _outputs(figs)[0]
    killer = batch["kill_parent"]
    assert "alive" in _outputs(killer)[3]


def _descendants(root: int) -> set[str]:
    """Pids descended from `root`: other test sessions' sandboxes on the machine don't count."""
    parent: dict[str, str] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parent[pid] = stat.rsplit(")", 1)[1].split()[1]
    found, frontier = set(), {str(root)}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def test_no_sandbox_process_outlives_its_run(batch: dict[str, RunResult]) -> None:
    leftovers = []
    for pid in _descendants(os.getpid()):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if uid >= 1_990_000 or b"dllab-run-" in cmd:
            leftovers.append((pid, uid, cmd[:80]))
    assert leftovers == []


def test_script_runs_as_main_without_arguments(tmp_path: Path) -> None:
    _skip_without_bwrap()
    script = tmp_path / "sub" / "train.py"
    script.parent.mkdir()
    script.write_text(
        "import argparse, sys\n"
        "# %%\n"
        "p = argparse.ArgumentParser(); p.add_argument('--lr', type=float, default=0.1)\n"
        "args = p.parse_args()\n"
        "# %% [markdown]\n"
        "# Some notes\n"
        "# %%\n"
        "if __name__ == '__main__':\n"
        "    print('main ran', args.lr, sys.argv)\n"
    )
    r = run_script(script, submission_dir=script.parent, out_dir=tmp_path / "out",
                   spec=SandboxSpec(), limits=LIMITS)
    assert r.status == "ok", r.reason
    assert "main ran 0.1 ['train.py']" in "".join(_outputs(r))
    assert [c.index for c in r.cells] == [0, 1, 3]


def test_user_namespace_mode_isolates_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line a normal (non-root) user gets: bwrap makes a user namespace."""
    _skip_without_bwrap()
    monkeypatch.setattr(sandbox, "is_root", lambda: False)
    nb = _notebook(tmp_path / "sub" / "lab.ipynb",
                   "import os, socket\nprint('uid', os.getuid())",
                   "socket.create_connection(('1.1.1.1', 53), timeout=3)",
                   "print(sorted(os.listdir('/')))")
    r = run_notebook(nb, submission_dir=nb.parent, out_dir=tmp_path / "out", spec=SandboxSpec(),
                     limits=LIMITS)
    out = _outputs(r)
    assert f"uid {sandbox.USERNS_UID}" in out[0]
    assert r.cells[1].status == "error" and "unreachable" in r.cells[1].evalue
    top = repr(Path(sys.executable).parts[1])  # the venv's top folder is visible, read-only
    assert "home" not in out[2] and top in out[2]


def test_sandbox_none_runs_in_a_copy_with_limits(tmp_path: Path) -> None:
    """`--sandbox none` (a student's own machine): no isolation, but a copy and the limits."""
    data = tmp_path / "datasets"
    data.mkdir()
    (data / "hello.txt").write_text("hi")
    nb = _notebook(tmp_path / "sub" / "lab.ipynb",
                   "import os, resource\nprint(open('data/hello.txt').read(), "
                   "resource.getrlimit(resource.RLIMIT_NPROC)[0])\nopen('new.txt', 'w')")
    r = run_notebook(nb, submission_dir=nb.parent, out_dir=tmp_path / "out",
                     spec=SandboxSpec(mounts={"data": str(data)}, sandbox="none"), limits=LIMITS)
    assert r.status == "ok", r.reason
    assert f"hi {LIMITS.max_processes}" in _outputs(r)[0]
    assert not (nb.parent / "new.txt").exists()
    assert "--sandbox none" in Path(r.log_path).read_text()


def test_unreadable_notebook_is_a_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    r = run_notebook(bad, submission_dir=tmp_path, out_dir=tmp_path / "out", spec=SandboxSpec(),
                     limits=LIMITS)
    assert r.status == "not-run" and "not a readable notebook" in r.reason


def test_script_to_notebook_is_importable_without_kernel() -> None:
    assert len(script_to_notebook("print(1)\n").cells) == 1
