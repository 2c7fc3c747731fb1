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
import re
import sys
import socket
import threading
from pathlib import Path
from typing import Any

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
                       max_work_bytes=64 * MiB, cell_timeout_s=30, wall_timeout_s=60,
                       max_output_bytes_per_cell=64 * 1024, max_figures=10)
# Only the notebook that is meant to time out gets a short cell limit: the others (2 GiB of page
# faults, 100 MiB of output, 1000 figures) must finish however slow the machine, not race 4 s.
TIMEOUT_LIMITS = dataclasses.replace(LIMITS, cell_timeout_s=4)
WALL_LIMITS = dataclasses.replace(TIMEOUT_LIMITS, wall_timeout_s=6)

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


# Runs whose checks read no clock and whose notebooks do not hog the CPUs: two at a time, as
# `dllab grade --workers 2` runs them (each in its own sandbox, uid and PID namespace). The fork
# bombs, every run a test times (a wall time, a cell timeout, a watchdog's kill, pip's failure)
# and big_output run alone in this process, so that no neighbour slows them: a host that reads
# big_output's 1 MiB lines late gets them as one message over 32 MiB (killed, not truncated).
def _run_two_at_a_time(calls: dict[str, tuple[Any, dict[str, Any]]]) -> dict[str, RunResult]:
    """name -> (run_notebook or run_script, its keyword arguments) => name -> its RunResult."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        futures = {name: pool.submit(fn, **kwargs) for name, (fn, kwargs) in calls.items()}
        return {name: f.result() for name, f in futures.items()}


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
    cells = {"normal": NORMAL, "normal_again": NORMAL, "probe": _probe_notebook(env), **HOSTILE}
    calls = {}
    for name, sources in cells.items():
        nb = _notebook(subs / name / "lab1.ipynb", *sources)
        limits = {"wall_time": WALL_LIMITS, "infinite_loop": TIMEOUT_LIMITS}.get(name, LIMITS)
        # The hostile notebooks read no dataset: without the CIFAR-10 mount their kernels
        # skip registering its checksums (a torchvision import, about 3 s each).
        calls[name] = {"nb_path": nb, "submission_dir": nb.parent, "out_dir": out / name, "limits": limits,
                       "spec": spec if name in ("normal", "probe", "normal_again") else SandboxSpec()}
    # The normal notebook first and last, each alone; the probe here (the secret is in this
    # process's environment, the server in this process); the hostile ones in between.
    alone = ("fork_bomb", "infinite_loop", "wall_time", "big_output")
    results = {}
    try:
        for name in ("normal", "probe"):
            results[name] = run_notebook(**calls[name])
        results.update(_run_two_at_a_time({name: (run_notebook, calls[name]) for name in HOSTILE
                                           if name not in alone}))
        for name in (*alone, "normal_again"):
            results[name] = run_notebook(**calls[name])
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
    ("os_exit", "error", "exit status 1", ["error", "not-run"]),  # an exit, not a kill (issue 12 D)
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
    assert wall.duration_s - wall.startup_s < WALL_LIMITS.wall_timeout_s + 5  # from when the kernel was ready
    # T1 #6: the cell cut short by the wall time ends the run; no cell runs after it, and it
    # is not reported as the cell time limit.
    stopped = next(i for i, s in enumerate(_statuses(wall)) if s != "ok")
    assert set(_statuses(wall)[stopped + 1:]) == {"not-run"}, _statuses(wall)
    assert "cell time limit" not in wall.reason and all("cell time limit" not in c.evalue for c in wall.cells)
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


# ============================================================================ issue 12
# B: DataLoader workers and /dev/shm; D: which cell ended the kernel, and how; E: the
# working folder; F: the grading environment; M: fork bombs stopped when they reach the cap.
# One notebook per case, each with a markdown cell first so a cell's list index differs from
# the number the student sees (the named bug of D reported "cell 6" for In [3]).

ISSUE_LIMITS = dataclasses.replace(LIMITS, max_processes=64, cell_timeout_s=60, wall_timeout_s=240,
                                   max_shm_bytes=64 * MiB)
_TRAIN = """import torch, torchvision, torchvision.transforms as T
transform = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
trainset = torchvision.datasets.CIFAR10(root='/tmp/dataset-nctu', train=True, download=False, transform=transform)
loader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True, num_workers={workers}, pin_memory=True)
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
seen = 0
for i, (x, y) in enumerate(loader):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    seen += len(y)
    if i == 49:
        break
print('trained', seen, 'workers', loader.num_workers, 'loss', float(loss) > 0)"""
_BOMB_TRY = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
# The threads wait before forking, so the cap is reached while a later, innocent cell runs:
# only a check from outside the cells can catch it then.
_BOMB_THREADS = ("import os, threading, time\ndef bomb():\n    time.sleep(2)\n    while True:\n        try:\n"
                 "            os.fork()\n        except OSError:\n            pass\nfor _ in range(4):\n"
                 "    threading.Thread(target=bomb, daemon=True).start()")

ISSUE_CASES: dict[str, tuple[str, ...]] = {
    # B
    "dataloader_2": (_TRAIN.format(workers=2),),
    "dataloader_4": (_TRAIN.format(workers=4),),
    "multiprocessing": ("import multiprocessing as mp\nq = mp.Queue()\nlock = mp.Lock()\n"
                        "with mp.Pool(3) as pool:\n    total = sum(pool.map(abs, range(-50, 50)))\n"
                        "q.put(total)\nprint('pool', q.get(timeout=10))",),
    "shm_full": ("import torch\nclass Big(torch.utils.data.Dataset):\n    def __len__(self):\n        return 32\n"
                 "    def __getitem__(self, i):\n        return torch.zeros(32 << 20, dtype=torch.uint8)\n"
                 "for batch in torch.utils.data.DataLoader(Big(), batch_size=2, num_workers=2):\n    pass",
                 "print('never')"),
    # D
    "exit_call": ("print('start')", "x = 1", "exit()", "print('never')"),
    "os_exit_0": ("print('start')", "import os\nprint('result 42')\nos._exit(0)", "print('never')"),
    "sys_exit_fail": ("import sys", "sys.exit(2)", "print('never')"),
    "quit_last": ("print('start')", "quit()"),
    "raise_system_exit_last": ("print('start')", "raise SystemExit"),
    "os_exit_last_after_a_bug": ("raise ValueError('a bug')", "import os\nos._exit(0)"),
    "segfault": ("print('start')", "import ctypes\nctypes.string_at(0)", "print('never')"),
    "abort": ("print('start')", "import os\nos.abort()", "print('never')"),
    "self_sigkill": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "print('never')"),
    # torch.save past the file size limit fails only with "unexpected pos" from C++ (T1 #11)
    "torch_save_big": ("import torch\ntorch.save(torch.zeros(32 << 20, dtype=torch.uint8), 'model.pt')",
                       "print('never')"),
    # F
    "packages": ("import tqdm, pandas, seaborn, sklearn, torchsummary\n"
                 "from tqdm import tqdm\nfrom tqdm.notebook import tqdm as tqdm_nb\n"
                 "print('packages', sum(1 for _ in tqdm(range(3))) + sum(1 for _ in tqdm_nb(range(2))))",
                 "%matplotlib widget\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
                 "%matplotlib notebook\nplt.figure()\nplt.hist([1, 2, 2, 3])\nplt.show()"),
    "cuda": ("import torch\nnet = torch.nn.Linear(2, 2).cuda()", "x = torch.ones(1, 2, device='cuda')",
             "print('cpu is fine')"),
    "pip": ("!pip install dllab-no-such-package", "import dllab_no_such_package", "print('after')"),
    # issue 20: four processes of 700 MiB each fit each one's RLIMIT_DATA (2 GiB) but not the
    # run's cgroup (2 GiB + its two tmpfs): the out-of-memory killer acts inside the run alone
    "memory_tree": ("print('start')", "import multiprocessing as mp, time\ndef hog(i):\n    x = bytearray(700 << 20)\n"
                    "    for j in range(0, len(x), 4096):\n        x[j] = 1\n    time.sleep(5)\n    return len(x)\n"
                    "with mp.Pool(4) as p:\n    print('held', sum(p.map(hog, range(4))) >> 20)", "print('after')"),
    # M
    "bomb_try": ("print('start')", _BOMB_TRY, "print('never')"),
    "bomb_threads": ("print('start')", _BOMB_THREADS, "import time\ntime.sleep(30)", "print('never')"),
    # nbclient, once it has interrupted a cell, waits a whole further timeout without checking
    # the kernel: a bomb started by the interrupt must still be stopped at once.
    "bomb_after_interrupt": ("print('start')", "import os, time\ntry:\n    time.sleep(120)\n"
                             "except KeyboardInterrupt:\n" + "\n".join("    " + line for line in _BOMB_TRY.splitlines()[1:]),
                             "print('never')"),
}
SHORT_TIMEOUT = {"bomb_after_interrupt": 10.0}
# Under the work quota (64 MiB), so that the file size limit is what the save reaches.
FILE_LIMIT = {"torch_save_big": 16 * MiB}


def _issue_notebook(path: Path, cells: tuple[str, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# LAB 1-1"),
                                         *(nbformat.v4.new_code_cell(c) for c in cells)])
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def issue12(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunResult]:
    _skip_without_bwrap()
    from grader.datasets import synth

    root = tmp_path_factory.mktemp("issue12")
    data = root / "datasets"
    synth(data, size="tiny", seed=0, names=["cifar10"])
    for d in (data, *data.iterdir()):
        d.chmod(0o755)
    spec = SandboxSpec(mounts={"/tmp/dataset-nctu": str(data)})
    nested_spec = SandboxSpec(mounts={"/tmp/dataset-nctu": str(data),
                                      "data/cifar-10-batches-py": str(data / "cifar-10-batches-py")})
    calls: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name, cells in ISSUE_CASES.items():
        nb = _issue_notebook(root / "subs" / name / "lab1-1.ipynb", cells)
        limits = dataclasses.replace(ISSUE_LIMITS, cell_timeout_s=SHORT_TIMEOUT.get(name, ISSUE_LIMITS.cell_timeout_s),
                                     max_file_bytes=FILE_LIMIT.get(name, ISSUE_LIMITS.max_file_bytes))
        # Only the cases that read CIFAR-10 mount it: registering its checksums at startup
        # imports torchvision, about 3 s a run.
        calls[name] = (run_notebook, {"nb_path": nb, "submission_dir": nb.parent, "out_dir": root / "out" / name,
                                      "spec": spec if "CIFAR10" in "".join(cells) else SandboxSpec(), "limits": limits})
    # E: a notebook and a script in folders of their own, beside the modules they import
    sub = root / "subs" / "nested"
    _issue_notebook(sub / "part1" / "lab1-1.ipynb", (
        "import os, sys\nprint('cwd', os.getcwd())",
        "import mynet\nprint('net', mynet.Net().k)",
        "print(open('notes.txt').read(), sorted(os.listdir('..')))",
        # T1 #1, #2: ./data is the dataset root in the notebook's own folder too, the student's
        # own files there are kept, and writing beside the (read-only) dataset works.
        "print('data', sorted(os.listdir('data')), open('data/mine.txt').read())\n"
        "os.makedirs('data/sorted/0', exist_ok=True)\nopen('data/model.pth', 'w').write('w')\nprint('wrote data')"))
    (sub / "part1" / "data").mkdir()
    (sub / "part1" / "data" / "mine.txt").write_text("my notes")
    (sub / "part1" / "mynet.py").write_text("class Net:\n    k = 42\n")
    (sub / "part1" / "notes.txt").write_text("next to the notebook")
    (sub / "report.pdf").write_bytes(b"%PDF-1.4\n")
    (sub / "scripts").mkdir()
    (sub / "scripts" / "helper.py").write_text("VALUE = 'helper'\n")
    (sub / "scripts" / "train.py").write_text("import os, helper\nprint('script', os.getcwd(), helper.VALUE)\n"
                                              "print('file', os.path.dirname(os.path.abspath(__file__)))\n"
                                              "print('sdata', sorted(os.listdir('data')))\n")
    calls["nested"] = (run_notebook, {"nb_path": sub / "part1" / "lab1-1.ipynb", "submission_dir": sub,
                                      "out_dir": root / "out" / "nested", "spec": nested_spec, "limits": ISSUE_LIMITS})
    calls["nested_script"] = (run_script, {"py_path": sub / "scripts" / "train.py", "submission_dir": sub,
                                           "out_dir": root / "out" / "nested_script", "spec": nested_spec,
                                           "limits": ISSUE_LIMITS})
    # the bombs (their kill is timed) and pip (its cell is timed) alone, the rest two at a time
    alone = ("bomb_try", "bomb_threads", "bomb_after_interrupt", "pip")
    results = _run_two_at_a_time({name: call for name, call in calls.items() if name not in alone})
    for name in alone:
        fn, kwargs = calls[name]
        results[name] = fn(**kwargs)
    return results


def _flags(r: RunResult) -> set[str]:
    """The grade flags the pipeline would set for this run alone."""
    from grader import collect
    from grader.diagnose import run_flags

    ev = collect.from_run(r, run_dir=Path(r.log_path).parent, events_path=None, figures_dir=None)
    ev["stop"], ev["environment"] = r.stop, list(r.environment)
    return run_flags(ev)


@pytest.mark.parametrize("name", ["dataloader_2", "dataloader_4"])
def test_dataloader_workers_train_on_the_cifar10_stand_in(issue12: dict[str, RunResult], name: str) -> None:
    r = issue12[name]
    assert r.status == "ok", r.reason
    workers = name.split("_")[1]
    assert f"trained 200 workers {workers} loss True" in "".join(_outputs(r))
    assert r.peak_processes > int(workers)  # the workers ran, and counted against the cap


def test_multiprocessing_semaphores_pools_and_queues_work(issue12: dict[str, RunResult]) -> None:
    r = issue12["multiprocessing"]
    assert r.status == "ok", r.reason
    assert "pool 2500" in "".join(_outputs(r))


def test_a_full_dev_shm_is_its_own_limit(issue12: dict[str, RunResult]) -> None:
    r = issue12["shm_full"]
    assert r.status == "killed" and "shared memory limit" in r.reason and "limits.shared_memory" in r.reason
    assert r.stop is not None and (r.stop["kind"], r.stop["label"]) == ("limit", "cell 1")
    assert _flags(r) == {"sandbox-limit"}


@pytest.mark.parametrize(("name", "label", "words"), [
    ("exit_call", "cell 3", "called exit()"),
    ("os_exit_0", "cell 2", "exit status 0"),
    ("sys_exit_fail", "cell 2", "status 2"),
])
def test_an_exit_names_the_cell_that_called_it(issue12: dict[str, RunResult], name: str, label: str,
                                               words: str) -> None:
    r = issue12[name]
    assert r.status == "error", (r.status, r.reason)
    assert r.reason.startswith(f"{label} ") and words in r.reason and "did not run" in r.reason
    assert r.stop is not None and r.stop["kind"] == "exit" and r.stop["label"] == label
    index = r.stop["cell"]
    assert [c.status for c in r.cells if c.index > index] == ["not-run"]
    assert next(c for c in r.cells if c.index == index).ename == "SystemExit"
    assert _flags(r) == {"kernel-exit"}, "not sandbox-limit, not notebook-error"
    assert "time or memory" not in r.reason
    if name == "os_exit_0":  # printed just before os._exit(0): not lost with the kernel (T1 #11)
        assert "result 42" in "".join(_outputs(r))


@pytest.mark.parametrize("name", ["quit_last", "raise_system_exit_last"])
def test_a_clean_exit_as_the_last_cell_is_a_normal_end(issue12: dict[str, RunResult], name: str) -> None:
    r = issue12[name]
    assert (r.status, r.reason, r.stop) == ("ok", "", None)
    assert [c.status for c in r.cells] == ["ok", "ok"]
    assert _flags(r) == set()


def test_a_clean_os_exit_at_the_end_keeps_the_earlier_error(issue12: dict[str, RunResult]) -> None:
    r = issue12["os_exit_last_after_a_bug"]
    assert r.status == "error" and r.reason.startswith("cell 1 raised ValueError"), r.reason
    assert r.stop is None and _statuses(r) == ["error", "ok"]
    assert _flags(r) == {"notebook-error"}


@pytest.mark.parametrize(("name", "signal_name", "label"), [
    ("segfault", "SIGSEGV", "cell 2"),
    ("abort", "SIGABRT", "cell 2"),
    ("self_sigkill", "SIGKILL", "cell 1"),
])
def test_a_crash_is_not_a_limit(issue12: dict[str, RunResult], name: str, signal_name: str, label: str) -> None:
    r = issue12[name]
    assert r.status == "killed" and signal_name in r.reason and r.reason.startswith("the kernel crashed with")
    assert f"during {label}" in r.reason
    assert r.stop is not None and r.stop["kind"] == "crash"
    assert _flags(r) == {"kernel-crash"}
    if signal_name == "SIGKILL":  # the cell's own os.kill, not the machine (T1 #11; was "out-of-memory killer")
        assert "sends SIGKILL itself" in r.reason and "out-of-memory" not in r.reason


def test_torch_save_past_the_file_size_limit_names_the_limit(issue12: dict[str, RunResult]) -> None:
    r = issue12["torch_save_big"]
    assert r.status == "killed" and "file size limit of 16 MiB" in r.reason and "limits.file_size" in r.reason, \
        r.reason
    assert _statuses(r) == ["error", "not-run"] and _flags(r) == {"sandbox-limit"}


def test_the_kernel_starts_in_the_notebooks_folder_with_every_file(issue12: dict[str, RunResult]) -> None:
    r = issue12["nested"]
    assert r.status == "ok", r.reason
    out = _outputs(r)
    assert f"cwd {sandbox.CWD}/part1" in out[1]
    assert "net 42" in out[2]
    assert "next to the notebook" in out[3] and "'report.pdf'" in out[3] and "'scripts'" in out[3]
    assert "data ['cifar-10-batches-py', 'mine.txt'] my notes" in out[4] and "wrote data" in out[4]
    script = issue12["nested_script"]
    assert script.status == "ok", script.reason
    assert f"script {sandbox.CWD}/scripts helper" in "".join(_outputs(script))
    assert f"file {sandbox.CWD}/scripts" in "".join(_outputs(script))  # __file__, as `python train.py` sets it
    assert "sdata ['cifar-10-batches-py']" in "".join(_outputs(script))


def test_common_packages_and_interactive_backends_just_work(issue12: dict[str, RunResult]) -> None:
    r = issue12["packages"]
    assert r.status == "ok", r.reason
    assert "packages 5" in "".join(_outputs(r))
    nb = nbformat.read(r.executed_notebook_path, as_version=4)
    for cell in nb.cells[2:4]:  # %matplotlib widget / notebook: inline PNGs, as graded
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
    log = Path(r.log_path).read_text()
    assert "cell 2 asks for %matplotlib widget" in log and "cell 3 asks for %matplotlib notebook" in log


def test_cuda_on_a_cpu_grader_is_flagged_needs_gpu(issue12: dict[str, RunResult]) -> None:
    r = issue12["cuda"]
    assert r.status == "error"
    assert [p["code"] for p in r.environment] == ["needs-gpu"] and r.environment[0]["label"] == "cell 1"
    assert r.reason.startswith("cell 1 uses CUDA") and "--gpus" in r.reason
    assert _flags(r) == {"needs-gpu"}


def test_pip_install_fails_fast_and_the_import_names_the_missing_package(issue12: dict[str, RunResult]) -> None:
    r = issue12["pip"]
    assert r.cells[0].status == "ok" and r.cells[0].duration_s < 30  # no retries against a dead network
    assert "No matching distribution" in _outputs(r)[1]
    (problem,) = r.environment
    assert (problem["code"], problem["subject"], problem["label"]) == ("missing-package", "dllab_no_such_package",
                                                                       "cell 2")
    assert "no network" in problem["message"] and r.reason == problem["message"]
    assert _flags(r) == {"missing-package"}
    assert "after" in _outputs(r)[3]


@pytest.mark.parametrize(("name", "label"), [("bomb_try", "cell 2"), ("bomb_threads", "cell 3")])
def test_a_fork_bomb_is_killed_when_it_reaches_the_cap(issue12: dict[str, RunResult], name: str,
                                                       label: str | None) -> None:
    r = issue12[name]
    assert r.status == "killed" and "process limit of 64" in r.reason, r.reason
    assert r.stop is not None and r.stop["kind"] == "limit"
    if label:
        assert r.stop["label"] == label
    # The cell timeout is 60 s: a kill after a few seconds came from the watchdog.
    assert r.duration_s - r.startup_s < 30, (r.duration_s, r.startup_s)
    assert r.peak_processes >= ISSUE_LIMITS.max_processes - 2
    assert _statuses(r)[-1] == "not-run"
    assert _flags(r) == {"sandbox-limit"}


def test_a_process_tree_past_the_runs_memory_is_killed_with_the_limit_named(issue12: dict[str, RunResult]) -> None:
    """Issue 20: the run's cgroup caps the memory of all its processes together; where the host
    gives no cgroup, each process's RLIMIT_DATA alone holds and the four hogs fit."""
    from grader import cgroups

    r = issue12["memory_tree"]
    if not cgroups.available()[0]:
        assert r.status == "ok" and "held 2800" in _outputs(r)[2]
        return
    assert r.status == "killed", (r.status, r.reason)
    assert "memory limit of 2.12 GiB" in r.reason and "out-of-memory killer" in r.reason, r.reason
    assert r.stop is not None and r.stop["label"] == "cell 2"
    assert _statuses(r)[-1] == "not-run"
    assert "cgroup v" in Path(r.log_path).read_text()


def test_a_kill_after_a_cell_timeout_ends_the_run_at_once(issue12: dict[str, RunResult]) -> None:
    r = issue12["bomb_after_interrupt"]
    assert r.status == "killed" and "process limit of 64" in r.reason, r.reason
    assert r.stop is not None and r.stop["label"] == "cell 2"
    # interrupted at 10 s, then the cap within a few seconds; not a further 10 s timeout or two
    assert r.duration_s - r.startup_s < 19, (r.duration_s, r.startup_s)


def test_no_issue12_sandbox_process_outlives_its_run(issue12: dict[str, RunResult]) -> None:
    uids = {int(m) for r in issue12.values()
            for m in re.findall(r"--reuid=(\d+)", Path(r.log_path).read_text())}
    left = [pid for pid in filter(str.isdigit, os.listdir("/proc")) if _uid_of(pid) in uids]
    assert left == []


def _uid_of(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_fork_bombs_beside_an_honest_submission_in_one_batch(tiny_datasets: Path, tmp_path: Path) -> None:
    """M, as the TA met it: `dllab grade` with two workers over a fork bomb, a threaded fork
    bomb and an honest notebook. Every student gets a grade, each bomb is killed within
    seconds of reaching the cap (not at the cell timeout), the command exits, and no sandbox
    process is left behind."""
    import subprocess
    import time
    import zipfile

    from grader.datasets.standins import sandbox_readable
    from grader.resources import resource_dir

    _skip_without_bwrap()
    sandbox_readable(tiny_datasets)
    rubric = tmp_path / "lab1.yaml"
    text = (resource_dir("labs") / "lab1" / "rubric.yaml").read_text()
    assert "processes: 256" in text and "cell_timeout: 30m" in text
    rubric.write_text(text.replace("processes: 256", "processes: 64").replace("cell_timeout: 30m", "cell_timeout: 60s"))
    subs = tmp_path / "subs"
    subs.mkdir()
    notebooks = {
        "0556101": ("import torchvision\nd = torchvision.datasets.CIFAR10('/tmp/dataset-nctu', train=False)\n"
                    "print('test images', len(d))", "print('Accuracy of the network on the 10000 test images: 10 %')"),
        "0556102": ("print('start')", "import os\nwhile True: os.fork()", "print('never')"),
        "0556103": ("print('start')", _BOMB_THREADS, "import time\ntime.sleep(50)", "print('never')"),
    }
    for sid, cells in notebooks.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# LAB 1-1"),
                                             *(nbformat.v4.new_code_cell(c) for c in cells)])
        with zipfile.ZipFile(subs / f"dllab_{sid}.zip", "w") as zf:
            zf.writestr("lab1-1.ipynb", nbformat.writes(nb))
    out = tmp_path / "out"
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(subs), "--rubric", str(rubric),
                           "--data", str(tiny_datasets), "--out", str(out), "--workers", "2", "--no-pdf"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    elapsed = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    grades = {sid: json.loads((out / "grades" / f"{sid}.json").read_text()) for sid in notebooks}
    assert "sandbox-limit" not in grades["0556101"]["flags"]
    honest = json.loads((out / "runs" / "0556101" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert honest["status"] == "ok", honest["reason"]
    for sid, label in (("0556102", "cell 2"), ("0556103", "cell 3")):
        assert "sandbox-limit" in grades[sid]["flags"], grades[sid]["flags"]
        ev = json.loads((out / "runs" / sid / "lab1-1.ipynb" / "evidence.json").read_text())
        assert ev["status"] == "killed" and "process limit of 64" in ev["reason"], ev["reason"]
        assert ev["duration_s"] - ev["startup_s"] < 30, "killed by the watchdog, not at the 60 s cell timeout"
        if label:
            assert ev["stop"]["label"] == label
    assert elapsed < 600
    uids = {int(m) for log in out.glob("runs/*/*/log.txt") for m in re.findall(r"--reuid=(\d+)", log.read_text())}
    assert uids  # a worker reuses its uid from one run to the next
    left = [pid for pid in filter(str.isdigit, os.listdir("/proc")) if _uid_of(pid) in uids]
    assert left == []


def test_a_nested_submission_through_the_pipeline(tiny_datasets: Path, tmp_path: Path) -> None:
    """E and F through `dllab grade`: the notebook in part1/ imports its module next to it,
    uses tqdm and `%matplotlib widget`; the module and utils.py are not run as scripts (and
    plan.json says why), a real script is; the probe still sees the histogram."""
    import zipfile

    from grader.cli import main
    from grader.datasets.standins import sandbox_readable

    _skip_without_bwrap()
    sandbox_readable(tiny_datasets)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# LAB 1-1"),
        nbformat.v4.new_code_cell("%matplotlib widget\nimport matplotlib.pyplot as plt\nfrom tqdm import tqdm\n"
                                  "import mynet\nnet = mynet.Net()"),
        nbformat.v4.new_code_cell("for _ in tqdm(range(2)):\n    pass\n"
                                  "plt.hist(net.conv1.weight.detach().flatten().numpy(), bins=20)\n"
                                  "plt.title('conv1 weights')\nplt.show()")])
    with zipfile.ZipFile(tmp_path / "dllab_0556201.zip", "w") as zf:
        zf.writestr("part1/lab1-1.ipynb", nbformat.writes(nb))
        zf.writestr("part1/mynet.py", "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                                      "        super().__init__()\n        self.conv1 = torch.nn.Conv2d(3, 6, 5)\n")
        zf.writestr("utils.py", "def accuracy(a, b):\n    return (a == b).float().mean()\nprint('helper')\n")
        zf.writestr("extra.py", "print('an extra experiment')\n")
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path), "--lab", "lab1", "--data", str(tiny_datasets), "--out", str(out),
                 "--workers", "1", "--no-pdf"]) == 0
    runs = out / "runs" / "0556201"
    plan = json.loads((runs / "plan.json").read_text())
    assert plan["run"] == ["part1/lab1-1.ipynb", "extra.py"]
    why = {p["path"]: p["reason"] for p in plan["not_run"]}
    assert set(why) == {"part1/mynet.py", "utils.py"} and "imported by part1/lab1-1.ipynb" in why["part1/mynet.py"]
    ev = json.loads((runs / "part1__lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["status"] == "ok", ev["reason"]
    hist = [f for f in ev["figures"] if f["kind"] == "histogram"]
    assert hist and any("conv1.weight" in s for f in hist for s in f.get("subjects") or []), ev["figures"]
    grade = json.loads((out / "grades" / "0556201.json").read_text())
    assert not {"notebook-error", "missing-package", "sandbox-limit"} & set(grade["flags"])
