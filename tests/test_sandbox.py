"""The sandbox command line, the limit helpers and the output caps, without a kernel."""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from grader import sandbox
from grader.errors import GraderError
from grader.execute import (
    CellRecord,
    MiB,
    SandboxLimits,
    _CappedClient,
    _limit_from_error,
    script_to_notebook,
)

LIMITS = SandboxLimits(memory_bytes=1 << 30, max_processes=64, max_work_bytes=32 * MiB,
                       max_output_bytes_per_cell=100, max_output_bytes_total=250, max_figures=2)


def _command(tmp_path: Path, *, uid: int | None, mounts: dict[str, str] | None = None,
             gpus: tuple[int, ...] = ()) -> list[str]:
    (tmp_path / "k").mkdir(exist_ok=True)
    (tmp_path / "sub").mkdir(exist_ok=True)
    return sandbox.build_command(
        ["python", "-m", "ipykernel_launcher"], run_dir=tmp_path, kernel_dir=tmp_path / "k",
        submission=tmp_path / "sub", mounts=mounts or {}, limits=LIMITS,
        env={"HOME": sandbox.HOME}, uid=uid, gpus=gpus)


def _pairs(cmd: list[str], flag: str) -> list[tuple[str, str]]:
    return [(cmd[i + 1], cmd[i + 2]) for i, a in enumerate(cmd) if a == flag]


def test_command_isolates_network_pids_and_environment(tmp_path: Path) -> None:
    cmd = _command(tmp_path, uid=1_990_001)
    for flag in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in cmd
    assert "--share-net" not in cmd
    assert cmd[0].endswith("prlimit") and "--nproc=64" in cmd and f"--data={1 << 30}" in cmd
    assert _tmpfs_sizes(cmd)["/tmp"] == 32 * MiB
    assert cmd[cmd.index("--chdir") + 1] == sandbox.CWD


def _tmpfs_sizes(cmd: list[str]) -> dict[str, int]:
    """tmpfs mount point -> its `--size` (bwrap: `--size N --perms M --tmpfs DEST`)."""
    sizes = {}
    for i, a in enumerate(cmd):
        if a == "--tmpfs" and "--size" in cmd[max(0, i - 4):i]:
            j = cmd.index("--size", max(0, i - 4))
            sizes[cmd[i + 1]] = int(cmd[j + 1])
    return sizes


def test_command_mounts_only_what_students_may_see(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cmd = _command(tmp_path, uid=1_990_001,
                   mounts={"/tmp/datasets-nctu": str(data), "data": str(data)})
    ro = _pairs(cmd, "--ro-bind")
    rw = _pairs(cmd, "--bind")
    sources = {s for s, _ in ro + rw}
    assert (str(data), "/tmp/datasets-nctu") in ro
    assert (str(data), f"{sandbox.CWD}/data") in ro
    assert rw == [(str(tmp_path / "k"), str(tmp_path / "k"))]  # the only writable host folder
    for forbidden in ("/", "/root", "/home", "/etc", "/var", "/run", "/work", "/work/main"):
        assert forbidden not in sources
    for root in sandbox.python_roots():
        assert (str(root), str(root)) in ro
    assert not any(s.startswith(os.path.expanduser("~") + "/") and not
                   any(s == str(r) for r in sandbox.python_roots()) for s in sources)


def test_root_drops_to_its_own_uid_and_users_get_a_namespace(tmp_path: Path) -> None:
    as_root = _command(tmp_path, uid=1_990_007)
    i = as_root.index("setpriv")
    assert "--reuid=1990007" in as_root[i:] and "--bounding-set=-all" in as_root[i:]
    assert "--unshare-user" not in as_root
    as_user = _command(tmp_path, uid=None)
    assert "setpriv" not in as_user and "--unshare-user" in as_user
    assert as_user[as_user.index("--uid") + 1] == str(sandbox.USERNS_UID) != "0"
    assert "student:x:1000:1000" in (tmp_path / "passwd").read_text()


def test_gpus_are_passed_through_one_by_one(tmp_path: Path) -> None:
    cmd = _command(tmp_path, uid=None, gpus=(1,))
    devs = [s for s, _ in _pairs(cmd, "--dev-bind-try")]
    assert "/dev/nvidia1" in devs and "/dev/nvidia0" not in devs and "/dev/nvidiactl" in devs
    assert not any("nvidia" in a for a in _command(tmp_path, uid=None))


def test_parents_of_mounts_stay_traversable(tmp_path: Path) -> None:
    cmd = _command(tmp_path, uid=1_990_001)
    dirs = [cmd[i + 3] for i, a in enumerate(cmd) if a == "--perms" and cmd[i + 2] == "--dir"]
    for root in sandbox.python_roots():
        for parent in root.parents:
            if str(parent) not in ("/", "/tmp"):  # /tmp is the sandbox's own tmpfs
                assert str(parent) in dirs


def test_check_bwrap_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    with pytest.raises(GraderError, match="apt-get install -y bubblewrap.*--sandbox none"):
        sandbox.check_bwrap()
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: shutil.which("false"))
    with pytest.raises(GraderError, match="cannot create namespaces"):
        sandbox.check_bwrap()


def test_check_mounts(tmp_path: Path) -> None:
    with pytest.raises(GraderError, match="does not exist"):
        sandbox.check_mounts({"/tmp/x": str(tmp_path / "missing")}, other_uid=False)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    sandbox.check_mounts({"/tmp/x": str(private)}, other_uid=False)
    with pytest.raises(GraderError, match="chmod -R o\\+rX"):
        sandbox.check_mounts({"/tmp/x": str(private)}, other_uid=True)


def test_a_dataset_root_given_whole_mounts_without_its_hidden_split(tmp_path: Path) -> None:
    # `data synth` leaves the grader's hidden test split (0700) in the dataset root: a root
    # mounted whole is still readable by the sandbox user, and the split is covered inside.
    from grader.hidden_split import HIDDEN_DIR

    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / HIDDEN_DIR).mkdir(mode=0o700)
    os.chmod(root, 0o755)
    sandbox.check_mounts({"/tmp/datasets-nctu": str(root)}, other_uid=True)
    (root / "other").mkdir(mode=0o700)
    with pytest.raises(GraderError, match="other has mode 700"):
        sandbox.check_mounts({"/tmp/datasets-nctu": str(root)}, other_uid=True)
    cmd = _command(tmp_path, uid=None, mounts={"/tmp/datasets-nctu": str(root)})
    bind = cmd.index(str(root))
    cover = cmd.index(f"/tmp/datasets-nctu/{HIDDEN_DIR}")
    assert cmd[cover - 1] == "--tmpfs" and cover > bind
    assert ("--remount-ro", f"/tmp/datasets-nctu/{HIDDEN_DIR}") in zip(cmd, cmd[1:])


def test_allocate_uid_gives_concurrent_runs_different_uids(tmp_path: Path) -> None:
    with sandbox.allocate_uid(tmp_path) as a, sandbox.allocate_uid(tmp_path) as b:
        assert a != b and a >= 1_990_000
    with sandbox.allocate_uid(tmp_path) as c:
        assert c == a  # released


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap"), reason="needs root to become nobody")
def test_normal_user_sandbox_contains_a_fork_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    """The normal-user path for real: bwrap run by `nobody`, with the system Python."""
    monkeypatch.setattr(sandbox, "python_roots", lambda: [])
    base = Path(tempfile.mkdtemp(prefix="dllab-test-"))
    try:
        base.chmod(0o755)
        for name in ("k", "sub"):
            (base / name).mkdir()
            os.chown(base / name, 65534, 65534)
        code = ("import os, socket\n"
                "n = 0\n"
                "try:\n    while True:\n"
                "        pid = os.fork()\n        if pid == 0:\n            import time; time.sleep(3); os._exit(0)\n"
                "        n += 1\nexcept OSError:\n    print('forks', n)\n"
                "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
                "except OSError as e:\n    print('net', e.errno)\n"
                "print('uid', os.getuid(), sorted(os.listdir('/')))\n")
        cmd = sandbox.build_command(
            ["/usr/bin/python3", "-c", code], run_dir=base, kernel_dir=base / "k",
            submission=base / "sub", mounts={}, limits=LIMITS, env={"PATH": "/usr/bin"},
            uid=None, bwrap=shutil.which("bwrap") or "bwrap")
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *cmd],
                              capture_output=True, text=True, timeout=60, cwd=base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if "setting up uid map" in done.stderr or "Operation not permitted" in done.stderr:
        pytest.skip(f"unprivileged user namespaces are off here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    forks = int(done.stdout.split("forks ")[1].split()[0])
    assert forks < LIMITS.max_processes
    assert "net 101" in done.stdout and "uid 1000" in done.stdout and "'root'" not in done.stdout


def test_script_splits_on_cell_markers() -> None:
    nb = script_to_notebook("import os\n# %%\nx = 1\n\n#%% [markdown]\n# # Title\n# text\n# %%\n"
                            "if __name__ == '__main__':\n    print(x)\n")
    assert [c.cell_type for c in nb.cells] == ["code", "code", "markdown", "code"]
    assert nb.cells[2].source == "# Title\ntext"
    assert nb.cells[3].source.startswith("if __name__")
    one = script_to_notebook("print(1)\nprint(2)\n")
    assert len(one.cells) == 1 and one.cells[0].source == "print(1)\nprint(2)"


@pytest.mark.parametrize(("ename", "evalue", "tb", "words"), [
    ("MemoryError", "", "", "memory limit"),
    ("RuntimeError", "DefaultCPUAllocator: can't allocate memory: you tried 9 GB", "", "memory limit"),
    ("OSError", "[Errno 28] No space left on device", "", "work folder quota"),
    ("OSError", "[Errno 27] File too large", "", "file size limit"),
    ("BlockingIOError", "[Errno 11] Resource temporarily unavailable", "os.fork()", "process limit"),
    ("ValueError", "a student bug", "", None),
])
def test_limit_from_error(ename: str, evalue: str, tb: str, words: str | None) -> None:
    found = _limit_from_error(CellRecord(0, "error", 1.0, ename, evalue, tb), LIMITS)
    assert (found is None) if words is None else (words in found)


def _client() -> tuple[_CappedClient, SimpleNamespace]:
    runner = SimpleNamespace(limits=LIMITS, figures_kept=0, figures_dropped=0, total_bytes=0,
                             truncated=False)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x") for _ in range(3)])
    client = _CappedClient(nb, runner=runner)  # type: ignore[arg-type]
    client.clear_before_next_output = False  # set by nbclient when a cell starts
    return client, runner


def _msg(msg_type: str, **content: object) -> dict:
    return {"msg_type": msg_type, "header": {"msg_type": msg_type}, "content": content,
            "parent_header": {"msg_id": "m"}, "metadata": {}}


def test_output_is_truncated_per_cell_and_in_total_with_a_marker() -> None:
    client, runner = _client()
    cell = client.nb.cells[0]
    for i in range(5):
        client.output(cell.outputs, _msg("stream", name="stdout", text=str(i) * 60), None, 0)
    kept = [o for o in cell.outputs if "[output truncated by dllab" not in o.text]
    assert sum(len(o.text) for o in kept) == 100 and runner.truncated
    marker = [o for o in cell.outputs if "[output truncated by dllab" in o.text]
    assert len(marker) == 1 and "200 characters omitted" in marker[0].text
    # head and tail: the first output's start and the last output's end survive
    assert kept[0].text.startswith("0") and kept[-1].text.endswith("4")
    for index in (1, 2):
        c = client.nb.cells[index]
        client.output(c.outputs, _msg("stream", name="stdout", text="z" * 100), None, index)
    assert runner.total_bytes == 250  # the notebook-wide cap
    err = _msg("error", ename="E", evalue="v" * 10_000, traceback=["t"] * 100)
    out = client.output(client.nb.cells[2].outputs, err, None, 2)
    assert out is not None and len(out.evalue) == 4000 and len(out.traceback) == 40  # errors are kept


def test_figures_over_the_limit_are_dropped_and_counted() -> None:
    client, runner = _client()
    cell = client.nb.cells[0]
    for _ in range(5):
        client.output(cell.outputs, _msg("display_data", data={"image/png": "iVBO", "text/plain": "<F>"},
                                         metadata={}), None, 0)
    assert (runner.figures_kept, runner.figures_dropped, len(cell.outputs)) == (2, 3, 2)
    client.add_markers(cell)
    assert "3 figure(s) dropped by dllab" in cell.outputs[-1].text


# ------------------------------------------------ issue 12: B (/dev/shm), E (working folder)


def test_each_run_gets_a_private_size_capped_writable_dev_shm(tmp_path: Path) -> None:
    cmd = _command(tmp_path, uid=1_990_001)
    assert _tmpfs_sizes(cmd)["/dev/shm"] == LIMITS.max_shm_bytes
    i = cmd.index("/dev/shm")
    assert cmd[i - 3:i] == ["--perms", "1777", "--tmpfs"]
    assert i > cmd.index("--dev"), "mounted over bwrap's own /dev, not hidden by it"


def test_the_submission_mount_is_reachable_by_the_sandbox_uid(tmp_path: Path) -> None:
    """As root, bwrap made /tmp/.dllab mode 0700: the copy found nothing to copy."""
    cmd = _command(tmp_path, uid=1_990_001)
    dirs = [cmd[i + 3] for i, a in enumerate(cmd) if a == "--perms" and cmd[i + 1] == "0755" and cmd[i + 2] == "--dir"]
    assert str(Path(sandbox.SUBMISSION_RO).parent) in dirs
    assert cmd.index(str(Path(sandbox.SUBMISSION_RO).parent)) < cmd.index(sandbox.SUBMISSION_RO)


def test_the_kernel_starts_in_its_notebooks_folder(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "sub").mkdir()
    odd = "part 1/it's $HOME"
    cmd = sandbox.build_command(["python", "-m", "ipykernel_launcher"], run_dir=tmp_path, kernel_dir=tmp_path / "k",
                                submission=tmp_path / "sub", mounts={}, limits=LIMITS, env={}, uid=None,
                                workdir=odd)
    script_at = len(cmd) - cmd[::-1].index("-c")  # the last: the seccomp opener may come first
    assert odd not in cmd[script_at], "the folder name is an argument, never spliced into the shell script"
    assert cmd[script_at + 1:script_at + 3] == ["sh", f"{sandbox.CWD}/{odd}"]
    assert cmd[-3:] == ["python", "-m", "ipykernel_launcher"]
    done = subprocess.run(["/bin/sh", "-c", cmd[script_at].replace(sandbox.SUBMISSION_RO, str(tmp_path / "sub"))
                           .replace(f"{sandbox.CWD}/;", f"{tmp_path / 'copy'}/;"), "sh", str(tmp_path),
                           "pwd"], capture_output=True, text=True)
    assert done.stdout.strip() == str(tmp_path)  # cd "$1"; shift; exec "$@"
    with pytest.raises(GraderError, match="outside the submission"):
        sandbox.build_command(["x"], run_dir=tmp_path, kernel_dir=tmp_path / "k", submission=tmp_path / "sub",
                              mounts={}, limits=LIMITS, env={}, uid=None, workdir="../../etc")


@pytest.mark.parametrize(("ename", "evalue", "tb", "words"), [
    ("RuntimeError", "Caught RuntimeError in DataLoader worker process 0. " + "x" * 2000
     + "RuntimeError: unable to allocate shared memory(shm) for file </torch_17_39_0>: No space left on device (28)",
     "", "shared memory limit"),
    ("RuntimeError", "DataLoader worker (pid 4567) is killed by signal: Bus error. It is possible that dataloader's "
     "workers are out of shared memory. Please try to raise your shared memory limit.", "", "shared memory limit"),
    ("OSError", "[Errno 28] No space left on device", "----> 1 open('/dev/shm/big', 'wb').write(b'x' * N)",
     "shared memory limit"),
    ("OSError", "[Errno 28] No space left on device", "----> 1 open('/tmp/work/torch_model.pt', 'wb')",
     "work folder quota"),
])
def test_shared_memory_limit_is_told_apart_from_the_work_quota(ename: str, evalue: str, tb: str, words: str) -> None:
    from grader.execute import _clip

    record = CellRecord(0, "error", 1.0, ename, _clip(evalue, 1000), tb)
    found = _limit_from_error(record, LIMITS)
    assert found is not None and words in found and "rubric limits." in found


def test_interactive_backends_are_noted_in_the_log() -> None:
    from grader.execute import _backend_notes

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("x"),
                                         nbformat.v4.new_code_cell("%matplotlib widget\nimport numpy"),
                                         nbformat.v4.new_code_cell("%matplotlib inline"),
                                         nbformat.v4.new_code_cell("import matplotlib\nmatplotlib.use('TkAgg')"),
                                         nbformat.v4.new_code_cell("matplotlib.use('Agg')\n%matplotlib")])
    notes = _backend_notes(nb)
    assert len(notes) == 3
    assert notes[0].startswith("cell 1 asks for %matplotlib widget") and "inline" in notes[0]
    assert "matplotlib.use('TkAgg')" in notes[1] and notes[2].startswith("cell 4 asks for %matplotlib,")


# ----------------------------------------------------- issue 12: M (the watchdog)


class _FakeProc:
    def __init__(self) -> None:
        self.pid = 4242
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


def _watch(monkeypatch: pytest.MonkeyPatch, tasks: list[int], *, deadline: float | None = None):
    import time as _time

    from grader import watchdog

    counts = iter(tasks)
    monkeypatch.setattr(watchdog.sandbox, "pid_namespace", lambda pid: "pid:[1]")
    monkeypatch.setattr(watchdog.sandbox, "count_tasks", lambda ns: next(counts, tasks[-1]))
    events: list[tuple[float, str, str]] = []
    proc = _FakeProc()
    t0 = _time.monotonic()
    dog = watchdog.Watchdog(process=lambda: proc, deadline=lambda: deadline, max_tasks=64, wall_timeout_s=9,
                            on_limit=lambda s, r: events.append((_time.monotonic() - t0, s, r)),
                            on_gone=lambda: events.append((_time.monotonic() - t0, "gone", "")),
                            interval_s=0.02)
    return dog, proc, events


def test_watchdog_kills_at_the_process_cap_within_two_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    dog, _, events = _watch(monkeypatch, [10, 30, 63, 20, 62, 63, 64])
    dog.start()
    dog.join(5)
    assert not dog.is_alive()
    assert [(s, "limits.processes" in r) for _, s, r in events] == [("killed", True)]
    assert dog.peak_tasks == 63  # a lone sample at the cap (63, then 20) was not enough
    assert dog.killed_at_cap is True  # rt1 #10: so the run is not also noted as a moment at the cap


def test_watchdog_reports_a_gone_sandbox_and_the_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    dog, proc, events = _watch(monkeypatch, [5])
    dog.start()
    proc.code = 139
    _time.sleep(0.2)
    dog.stop()
    dog.join(5)
    assert [s for _, s, _ in events] == ["gone"]  # once, however long it keeps watching
    late, _, events = _watch(monkeypatch, [5], deadline=_time.monotonic() - 1)
    late.start()
    late.join(5)
    assert [(s, "limits.wall_timeout" in r) for _, s, r in events] == [("timeout", True)]


class _FakeGroup:
    """A run group whose kernel counters follow a script: refused forks and OOM kills per sample."""

    def __init__(self, refused: list[int], ooms: list[int] | None = None) -> None:
        self.refused, self.ooms, self.memory_bytes = iter(refused), iter(ooms or []), 3 << 30
        self.last_refused, self.last_oom = 0, 0

    def process_cap_hits(self) -> int:
        self.last_refused = next(self.refused, self.last_refused)
        return self.last_refused

    def oom_kills(self) -> int:
        self.last_oom = next(self.ooms, self.last_oom)
        return self.last_oom


def test_watchdog_kills_when_the_groups_cap_keeps_refusing_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cgroup the kernel counts the forks its cap refused: a bomb keeps the count rising
    (killed after SAMPLES_AT_CAP rising samples), even while the tasks counted stay below the cap
    (a bomb whose processes die and are forked again)."""
    dog, _, events = _watch(monkeypatch, [20])
    dog.group = _FakeGroup([0, 0, 5, 40, 90])
    dog.start()
    dog.join(5)
    assert [(s, "process limit of 64" in r) for _, s, r in events] == [("killed", True)]
    assert dog.killed_at_cap is True and dog.cap_touched_s is not None


def test_watchdog_notes_a_cap_met_once_without_killing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that met the cap once (a DataLoader asking too many workers) got an error it can
    handle: the refused count rises once, then stays; the run goes on, the moment is noted."""
    import time as _time

    dog, _, events = _watch(monkeypatch, [20])
    dog.group = _FakeGroup([0, 3, 3, 3, 3, 3, 3, 3])
    dog.start()
    _time.sleep(0.4)
    dog.stop()
    dog.join(5)
    assert events == [] and dog.cap_touched_s is not None and not dog.killed_at_cap


def test_watchdog_names_the_groups_memory_limit_when_the_oom_killer_acts(monkeypatch: pytest.MonkeyPatch) -> None:
    dog, _, events = _watch(monkeypatch, [20])
    dog.group = _FakeGroup([0], ooms=[0, 0, 1])
    dog.start()
    dog.join(5)
    ((_, status, reason),) = events
    assert status == "killed" and "memory limit of 3 GiB" in reason and "out-of-memory killer" in reason
    assert not dog.killed_at_cap


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_dataset_mounts_resolve_in_the_notebooks_own_folder_too(tmp_path: Path) -> None:
    sub = _tree(tmp_path / "sub", {"part1/lab1-1.ipynb": "{}", "src/train.py": ""})
    mounts = {"data/cifar-10-batches-py": "/host/cifar", "/tmp/dataset-nctu/Food-11": "/host/food"}
    for workdir, expected in [("part1", "part1/data/cifar-10-batches-py"), ("src", "src/data/cifar-10-batches-py"),
                              ("a/b c", "a/b c/data/cifar-10-batches-py")]:
        placed = sandbox.place_mounts(mounts, workdir=workdir, submission=sub)
        assert placed.mounts == {"data/cifar-10-batches-py": "/host/cifar", expected: "/host/cifar",
                                 "/tmp/dataset-nctu/Food-11": "/host/food"}, workdir
        assert placed.hidden == () and placed.notes == ()
    root = sandbox.place_mounts(mounts, workdir="", submission=sub)
    assert root.mounts == mounts  # at the root, one mount only
    # a notebook that climbs out (`..`) never places a mount outside the working copy
    assert all(not k.startswith("..") for k in sandbox.place_mounts(mounts, workdir="..", submission=sub).mounts)


def test_the_submissions_own_data_files_are_kept_or_told(tmp_path: Path) -> None:
    sub = _tree(tmp_path / "sub", {"data/README.txt": "notes", "data/cifar-10-batches-py/mine.txt": "x",
                                   "part1/data": "a file named data", "part1/nb.ipynb": "{}"})
    mounts = {"data/cifar-10-batches-py": "/host/cifar"}
    placed = sandbox.place_mounts(mounts, workdir="part1", submission=sub)
    # data/README.txt sits beside the mount: not hidden, copied in as the student's own file
    assert placed.hidden == ("data/cifar-10-batches-py",)
    assert "data/cifar-10-batches-py/mine.txt" in placed.notes[0] and "replaced" in placed.notes[0]
    assert placed.files == ("data/cifar-10-batches-py/mine.txt",)  # rt1 #8: linked to a cell that reads it
    # a file where the dataset folder would go is kept, and the skipped mount is told
    assert "part1/data/cifar-10-batches-py" not in placed.mounts
    assert any("`part1/data` in your submission is a file" in n for n in placed.notes)


def test_folders_around_a_mount_in_the_working_copy_are_writable(tmp_path: Path) -> None:
    cmd = _command(tmp_path, uid=1_990_001, mounts={"data/cifar-10-batches-py": str(tmp_path),
                                                    "/tmp/dataset-nctu/Food-11": str(tmp_path)})
    modes = {cmd[i + 3]: cmd[i + 1] for i, a in enumerate(cmd) if a == "--perms" and cmd[i + 2] == "--dir"}
    assert modes[f"{sandbox.CWD}/data"] == "0777"  # the student's ./data: they write beside the dataset
    assert modes["/tmp/dataset-nctu"] == "0755"
    assert (str(tmp_path), f"{sandbox.CWD}/data/cifar-10-batches-py") in _pairs(cmd, "--ro-bind")


def _wall_runner(left_s: float, phase: str = "cells") -> tuple[SimpleNamespace, list]:
    from grader.driver import Runner

    killed: list = []
    fake = SimpleNamespace(phase=phase, limits=dataclasses.replace(LIMITS, wall_timeout_s=40),
                           cells_started=None if phase == "start" else 1.0, deadline=None,
                           _deadline_left=lambda: left_s, kill=lambda status, why: killed.append((status, why)))
    fake.wall_time_up = lambda: Runner.wall_time_up(fake)  # the real methods on a stand-in runner
    fake._time_limit = lambda: Runner._time_limit(fake)
    return fake, killed


def test_a_cell_timeout_cut_to_the_wall_time_ends_the_run_as_wall_time() -> None:
    """T1 #6: a cell given only what was left of the wall time, timing out, is the wall time
    (the run ends, worded as wall time), not a cell timeout after which the next cell runs."""
    import asyncio

    fake, killed = _wall_runner(0.3)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time; time.sleep(15)")])
    client = _CappedClient(nb, runner=fake)  # type: ignore[arg-type]
    assert asyncio.run(client._async_handle_timeout(1, nb.cells[0])) is None
    assert client.timed_out == {}, "not counted as the cell's own timeout"
    assert len(killed) == 1 and killed[0][0] == "timeout" and "wall time of 40 s" in killed[0][1]
    # With time left, or once the cells are over (teardown has no wall time), it is not the wall time.
    for left, phase in ((25.0, "cells"), (0.0, "teardown"), (0.0, "done")):
        fake, killed = _wall_runner(left, phase)
        assert fake.wall_time_up() is False and killed == []
    fake, killed = _wall_runner(-3.0, "start")  # past the start-up limit: its own reason, not the wall time
    assert fake.wall_time_up() is True and killed[0][0] == "not-run" and "start-up limit" in killed[0][1]


def _clock_runner(*, started_ago: float, cells_ago: float | None) -> SimpleNamespace:
    import time as _time

    from grader.driver import Runner

    now = _time.time()
    fake = SimpleNamespace(started=now - started_ago, cells_started=None if cells_ago is None else now - cells_ago,
                           limits=dataclasses.replace(LIMITS, wall_timeout_s=40, startup_timeout_s=120), deadline=None)
    fake._own_end = lambda: Runner._own_end(fake)  # the real methods on a stand-in runner
    fake._deadline_left = lambda: Runner._deadline_left(fake)
    return fake


def test_the_wall_time_starts_when_the_kernel_is_ready() -> None:
    """rt1 #6: an 18 s start-up on a loaded machine ate 18 of the notebook's 40 s."""
    slow_start = _clock_runner(started_ago=30.0, cells_ago=12.0)  # 18 s start-up, 12 s of cells
    assert 27.0 < slow_start._deadline_left() <= 28.0
    # before the cells, the start-up limit applies, not the wall time
    starting = _clock_runner(started_ago=50.0, cells_ago=None)
    assert 69.0 < starting._deadline_left() <= 70.0
    # the cells' own 40 s still end the run, however fast the start was
    assert _clock_runner(started_ago=41.0, cells_ago=40.5)._deadline_left() < 0


def test_the_watchdogs_deadline_is_worded_by_phase() -> None:
    from grader.driver import Runner

    for cells_started, status, words in ((None, "not-run", "not ready within 120 s"), (1.0, "timeout", "wall time of 40 s")):
        killed: list = []
        fake = SimpleNamespace(cells_started=cells_started, limits=dataclasses.replace(LIMITS, wall_timeout_s=40),
                               kill=lambda st, why: killed.append((st, why)), deadline=None)
        fake._time_limit = lambda: Runner._time_limit(fake)
        Runner._on_limit(fake, "timeout", "the notebook ran past its wall time")
        Runner._on_limit(fake, "killed", "the process limit")  # other limits pass through
        assert killed[0][0] == status and words in killed[0][1] and killed[1] == ("killed", "the process limit")


# ------------------------------------------ T1 #7: the process cap touched for a moment


def test_watchdog_remembers_a_moment_at_the_cap_without_killing(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    dog, _, events = _watch(monkeypatch, [10, 64, 20, 12])  # one sample at the cap: recursive spawning
    dog.start()
    _time.sleep(0.3)
    dog.stop()
    dog.join(5)
    assert events == [] and dog.peak_tasks == 64 and dog.cap_touched_s is not None
    calm, _, _ = _watch(monkeypatch, [10, 20, 30])
    calm.start()
    _time.sleep(0.2)
    calm.stop()
    calm.join(5)
    assert calm.cap_touched_s is None


SPANS = [(1, 100.0, 101.0), (2, 101.0, 104.0), (4, 104.0, 110.0)]  # (cell index, start, end) on boot time


def test_started_in_dates_a_moment_to_its_cell() -> None:
    from grader.watchdog import started_in

    assert [started_in(t, SPANS) for t in (99.0, 100.5, 101.0, 103.9, 108.0, 200.0)] == [None, 1, 2, 2, 4, 4]


def test_a_daemon_bomb_is_charged_to_the_cell_that_started_it() -> None:
    """T1 #7 (0200003): a bomb started with setsid in cell 2 fills the sandbox while cell 4
    runs; the oldest process of its session was left by cell 2."""
    from grader.watchdog import bomb_origin

    kernel = {"pid": 50, "nspid": 2, "sid": 40, "start_s": 99.0}
    daemon = [{"pid": 60 + i, "nspid": 10 + i, "sid": 60, "start_s": 102.0 if i == 0 else 105.0 + i / 10}
              for i in range(30)]
    worker = {"pid": 55, "nspid": 5, "sid": 40, "start_s": 100.2}  # a DataLoader worker of cell 1
    assert bomb_origin([kernel, worker, *daemon], SPANS) == 2
    # forked in the kernel's own session: the median start, not the one older helper
    own = [{"pid": 70 + i, "nspid": 20 + i, "sid": 40, "start_s": 105.0 + i / 10} for i in range(20)]
    assert bomb_origin([kernel, worker, *own], SPANS) == 4
    assert bomb_origin([worker, *own], SPANS) is None  # no kernel: cannot tell
    assert bomb_origin([kernel], SPANS) is None


def _noting_runner(monkeypatch: pytest.MonkeyPatch, *, touched: float | None, left: list[dict],
                   kill_status: tuple[str, str] | None = None, killed_at_cap: bool = False) -> list[dict[str, str]]:
    from grader import driver

    snapshots = iter(left if left and isinstance(left[0], list) else [left])
    last: list = []

    def snapshot(ns: str) -> list:
        nonlocal last
        last = next(snapshots, last)
        return last

    monkeypatch.setattr(driver.sandbox, "process_snapshot", snapshot)
    monkeypatch.setattr(driver, "LEFT_RECHECK_S", 0.0)
    notes: list[dict[str, str]] = []
    fake = SimpleNamespace(
        _watchdog=SimpleNamespace(cap_touched_s=touched, at_kill=[], pidns="pid:[1]", killed_at_cap=killed_at_cap),
        spec=SimpleNamespace(sandbox="bwrap"), kill_status=kill_status, limits=LIMITS, spans=SPANS,
        log=SimpleNamespace(write=lambda line: None),
        _label=lambda i: f"cell {i}", note=lambda code, message: notes.append({"code": code, "message": message}))
    driver.Runner._process_notes(fake)  # the real method on a stand-in runner
    return notes


def test_a_moment_at_the_cap_and_processes_left_running_are_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    [cap] = _noting_runner(monkeypatch, touched=102.5, left=[])
    assert cap["code"] == "process-cap" and "process limit of 64" in cap["message"] and "during cell 2" in cap["message"]
    assert "BlockingIOError" in cap["message"]
    kernel = {"pid": 50, "nspid": 2, "sid": 40, "start_s": 99.0}
    bomb = [{"pid": 60 + i, "nspid": 10 + i, "sid": 60, "start_s": 105.0 + i / 10} for i in range(12)]
    [left] = _noting_runner(monkeypatch, touched=None, left=[{"pid": 1, "nspid": 1, "sid": 1, "start_s": 98.0},
                                                             kernel, *bomb])
    assert left["code"] == "processes-left" and "cell 4 left 12 processes running" in left["message"]
    # rt1 #10: even one process left (subprocess.Popen(['sleep', '600'])) is noted, as a background job
    [one] = _noting_runner(monkeypatch, touched=None, left=[kernel, *bomb[:1]])
    assert one["code"] == "processes-left" and "left 1 process running" in one["message"]
    assert "background job" in one["message"] and "it was killed" in one["message"]
    [few] = _noting_runner(monkeypatch, touched=None, left=[kernel, *bomb[:3]])
    assert "left 3 processes running" in few["message"]
    # nor is a run the cap already killed noted (its own reason)
    assert _noting_runner(monkeypatch, touched=None, left=[kernel, *bomb], kill_status=("killed", "cap")) == []
    # T1 #7 (0210008): a setsid bomb the last cell started has 1 process when the cell returns,
    # more a moment later
    [growing] = _noting_runner(monkeypatch, touched=None, left=[[kernel, *bomb[:1]], [kernel, *bomb[:4]]])
    assert growing["code"] == "processes-left" and "left 4 processes running" in growing["message"]
    assert "more of them starting" in growing["message"]
    [steady] = _noting_runner(monkeypatch, touched=None, left=[[kernel, *bomb[:2]], [kernel, *bomb[:2]]])
    assert "left 2 processes running" in steady["message"] and "more of them starting" not in steady["message"]
    assert _noting_runner(monkeypatch, touched=None, left=[kernel]) == []  # the kernel alone is no leftover


def test_a_run_killed_at_the_cap_is_not_also_a_moment_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """rt1 #10 (1201002): killed by the cap, the snapshot at the kill empty: only sandbox-limit."""
    assert _noting_runner(monkeypatch, touched=102.5, left=[], kill_status=("killed", "the process limit"),
                          killed_at_cap=True) == []
    # killed for a cell's own fork error at the cap (1201003: os.fork() in a loop), not by the watchdog
    assert _noting_runner(monkeypatch, touched=102.5, left=[], kill_status=(
        "killed", "cell 1 was stopped: the process limit of 64 processes and threads (rubric limits.processes) "
                  "was reached; the 1 cell after it did not run")) == []
    # killed by another limit after touching the cap: the moment is still worth a note
    [cap] = _noting_runner(monkeypatch, touched=102.5, left=[], kill_status=("killed", "memory"))
    assert cap["code"] == "process-cap"


def test_torch_save_past_a_limit_is_named_by_what_the_sandbox_saw() -> None:
    """T1 #11: torch.save fails only with "unexpected pos" from C++; the file size limit
    (the kernel's SIGXFSZ mark) or a full work folder names the cause, a bare failure does not."""
    record = CellRecord(0, "error", 1.0, "RuntimeError",
                        "[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726", "torch.save(...)")
    assert _limit_from_error(record, LIMITS) is None  # nothing seen: the student's error as it is
    found = _limit_from_error(record, LIMITS, file_size_hit=True)
    assert found is not None and "file size limit of" in found and "(rubric limits.file_size)" in found
    found = _limit_from_error(record, LIMITS, work_full=True)
    assert found is not None and "work folder quota of 32 MiB" in found
    # a full work folder does not turn a DataLoader's shared-memory failure into the quota
    shm = CellRecord(0, "error", 1.0, "RuntimeError", "unable to allocate shared memory(shm) for file </torch_1>", "")
    assert "work folder" not in (_limit_from_error(shm, LIMITS, work_full=True) or "")
    assert _limit_from_error(CellRecord(0, "ok", 1.0), LIMITS, file_size_hit=True) is None


def test_startup_marks_file_size_hits_and_flushes_before_os_exit(tmp_path: Path) -> None:
    """The kernel's startup code, run in a plain child process (no sandbox): a write past
    RLIMIT_FSIZE leaves a mark; os._exit(0) does not lose what was printed."""
    import sys

    from grader.probe.startup import startup_source

    marker = tmp_path / "fsize-hits"
    code = startup_source(argv0="x.py", fsize_marker=str(marker)) + (
        "import resource, os\nresource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        f"try:\n    open({str(tmp_path / 'big')!r}, 'wb').write(b'x' * (2 << 20))\nexcept OSError as e:\n"
        "    print('caught', e.errno)\n"
        "print('result 42', end='')\nos._exit(0)\n")
    (tmp_path / "start.py").write_text(code)
    done = subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor",
                           str(tmp_path / "start.py")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "caught 27" in done.stdout and done.stdout.endswith("result 42")  # flushed before the exit
    assert marker.read_text() == "x"


# How a notebook reaches torchvision's CIFAR10 (issue 21): each import style must trigger the patch.
IMPORT_STYLES = {
    "package": "import torchvision\nCIFAR10 = torchvision.datasets.CIFAR10",
    "from": "from torchvision.datasets import CIFAR10",
    "alias": "import torchvision.datasets as D\nCIFAR10 = D.CIFAR10",
}


def test_startup_registers_cifar10_checksums_only_when_torchvision_is_imported(tmp_path: Path) -> None:
    """Issue 21: the kernel's startup code (the probe after it, as the grader runs them) reads
    the stand-in's manifest but imports no torchvision; whichever way the student's code then
    imports it, CIFAR10 has the stand-in's md5s and loads it, and the probe still patches
    torch and torchvision. The missing-manifest message stays in the startup output."""
    import json
    import sys

    from grader.datasets import get, read_manifest, synth
    from grader.probe.recorder import bootstrap_source
    from grader.probe.startup import startup_source

    data = tmp_path / "data"
    synth(data, size="tiny", seed=0, names=["cifar10"])
    md5 = {name: f["md5"] for name, f in read_manifest(data / "cifar-10-batches-py")["files"].items()}
    hook = get("cifar10").sandbox_startup
    procs = {}
    for style, imports in IMPORT_STYLES.items():
        run = tmp_path / style
        run.mkdir()
        code = (startup_source(argv0="x.py", hooks=[(hook, [str(tmp_path / "nothing"), str(data)])])
                + bootstrap_source(events_path=str(run / "events.jsonl"), figures_dir=str(run / "fig"))
                + "import sys\nprint('STUDENT', 'torchvision' in sys.modules)\n" + imports + "\n"
                + "import json, torch\n"
                f"print(json.dumps({{'train': CIFAR10.train_list, 'test': CIFAR10.test_list, 'meta': CIFAR10.meta,\n"
                f"    'length': len(CIFAR10({str(data)!r}, train=False, download=False)),\n"
                "    'probe': [getattr(c.__init__, '_dllab_wrapped', False) for c in (torch.utils.data.DataLoader, CIFAR10)]}))\n")
        (run / "start.py").write_text(code)
        procs[style] = subprocess.Popen([sys.executable, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor",
                                         str(run / "start.py")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, cwd=run)
    for style, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (style, err[-3000:])
        startup, _, student = out.partition("STUDENT ")
        assert startup.strip() == f"dllab startup: no synthetic CIFAR-10 manifest under {tmp_path / 'nothing'}", style
        seen, _, result = student.partition("\n")
        assert seen == "False", f"{style}: torchvision was imported before the student's code"
        got = json.loads(result.strip().splitlines()[-1])
        assert got["train"] == [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)], style
        assert got["test"] == [["test_batch", md5["test_batch"]]] and got["meta"]["md5"] == md5["batches.meta"], style
        assert got["length"] == 500 and got["probe"] == [True, True], (style, got)
        assert "dllab startup" not in err, (style, err[-3000:])


def test_after_import_runs_after_each_import_and_reload_chained_with_the_probes_finder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The startup code's post-import hook (its source runs in the kernel): after the first
    import and each reload, at once for a module already imported, beside the probe's own
    finder put first afterwards; a callback that raises breaks no import."""
    import importlib
    import sys

    from grader.probe import recorder
    from grader.probe.startup import _after_import

    namespace: dict = {}
    exec(inspect.getsource(_after_import), namespace)  # self-contained, as in the kernel
    after_import = namespace["_after_import"]
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("dllab_t21_a", "dllab_t21_b", "dllab_t21_bad"):
        (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
        monkeypatch.delitem(sys.modules, name, raising=False)
    calls: list = []
    after_import("dllab_t21_a", lambda m: calls.append((m.__name__, m.VALUE)))
    probe = recorder._Finder(frozenset({"dllab_t21_a"}))  # finds nothing: wraps the loader found
    sys.meta_path.insert(0, probe)
    import dllab_t21_a

    assert calls == [("dllab_t21_a", 1)]
    assert type(dllab_t21_a.__spec__.loader).__name__ not in ("Loader", "_Loader")  # the real one is back
    dllab_t21_a.VALUE = 2
    importlib.reload(dllab_t21_a)  # its code runs again: so does the hook
    assert calls == [("dllab_t21_a", 1), ("dllab_t21_a", 1)]
    import dllab_t21_b

    after_import("dllab_t21_b", lambda m: calls.append((m.__name__, m.VALUE)))  # already imported: at once
    assert calls[-1] == ("dllab_t21_b", 1)

    def fails(module: object) -> None:
        raise RuntimeError("a hook bug")

    after_import("dllab_t21_bad", fails)
    import dllab_t21_bad  # noqa: F401 - the import still works

    assert sys.modules["dllab_t21_bad"].VALUE == 1


def test_files_cp_could_not_copy_are_noted_with_their_paths(tmp_path: Path) -> None:
    """rt1 #8: files the work quota left out are linked, by path, to a cell that reads them."""
    from grader import driver

    (tmp_path / "k").mkdir()
    (tmp_path / "k" / driver.COPY_ERRORS).write_text(
        f"cp: cannot create regular file '{sandbox.CWD}/part1/big.npy': Disk quota exceeded\n"
        f"cp: error writing ‘{sandbox.CWD}/data/x.csv’: No space left on device\n")
    notes: list = []
    fake = SimpleNamespace(run_dir=tmp_path, note=lambda code, message, paths=(): notes.append((code, list(paths))))
    driver.Runner._copy_errors(fake)  # the real method on a stand-in runner
    assert notes == [("files-not-placed", ["part1/big.npy", "data/x.csv"])]


@pytest.mark.parametrize(("evalue", "tb", "words"), [
    # rt1 #11 (1301006): a 160 MB share_memory_() tensor, not a DataLoader
    ("unable to allocate shared memory(shm) for file </torch_2_969280885_0>: No space left on device (28)",
     "----> 3 t.share_memory_()\nFile torch/_tensor.py:846, in Tensor.share_memory_(self)", "by share_memory_()"),
    ("Caught RuntimeError in DataLoader worker process 0. RuntimeError: unable to allocate shared memory(shm) "
     "for file </torch_17_39_0>: No space left on device (28)", "", "by DataLoader workers"),
    ("unable to allocate shared memory(shm) for file </torch_3_1_0>: No space left on device (28)",
     "----> 2 q = mp.Queue(); q.put(big)\nFile multiprocessing/queues.py:94, in Queue.put", "by multiprocessing"),
    ("unable to allocate shared memory(shm) for file </torch_4_1_0>: No space left on device (28)", "",
     "by something using shared memory (DataLoader workers, share_memory_(), multiprocessing)"),
])
def test_the_shared_memory_limit_names_what_used_it(evalue: str, tb: str, words: str) -> None:
    found = _limit_from_error(CellRecord(1, "error", 1.0, "RuntimeError", evalue, tb), LIMITS)
    assert found is not None and found.startswith("the shared memory limit (/dev/shm") and words in found
    if "share_memory_" in tb:
        assert "DataLoader" not in found
