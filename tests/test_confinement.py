"""What the sandbox refuses and hides beyond its namespaces (grader/seccomp.py, grader/hidden.py),
what comes out of it (grader/harvest.py), and the run cache's key on what a run can read.

One kernel test runs a single notebook carrying every attack of these kinds at once, in the
real sandbox; the rest are unit tests of the mechanisms, without a kernel.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grader import harvest, hidden, sandbox, seccomp
from grader.errors import GraderError
from grader.execute import (
    PROBE_DIR_TOKEN,
    GiB,
    MiB,
    SandboxLimits,
    SandboxSpec,
    run_notebook,
)

# ---------------------------------------------------------------- seccomp (no kernel)

_SYSCALLS = r'''
import ctypes, errno, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(*args):
    r = libc.syscall(*[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
NR = {"unshare": 272, "clone3": 435, "keyctl": 250, "io_uring_setup": 425, "userfaultfd": 323,
      "personality": 135, "bpf": 321, "ptrace": 101, "add_key": 248}
out = {
    "unshare_user": call(NR["unshare"], 0x10000000),
    "unshare_net": call(NR["unshare"], 0x40000000),
    "unshare_files": call(NR["unshare"], 0x400),  # no namespace flag: allowed
    "clone3": call(NR["clone3"], 0, 0),
    "keyctl": call(NR["keyctl"], 0, -3, 0),
    "add_key": call(NR["add_key"], 0, 0, 0, 0, 0),
    "io_uring": call(NR["io_uring_setup"], 1, 0),
    "userfaultfd": call(NR["userfaultfd"], 0),
    "bpf": call(NR["bpf"], 0, 0, 0),
    "ptrace": call(NR["ptrace"], 0, 0, 0, 0),
    "no_aslr": call(NR["personality"], 0x0040000),
    "exec_all": call(NR["personality"], 0xF0400000),
    "query": call(NR["personality"], 0xFFFFFFFF),
}
t = threading.Thread(target=lambda: None); t.start(); t.join()
pid = os.fork()
if pid == 0:
    os._exit(7)
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out["subprocess"] = subprocess.run(["true"]).returncode
print(out)
'''


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="x86_64 syscall numbers")
def test_the_filter_denies_namespaces_and_kernel_surface_and_keeps_fork_and_threads(tmp_path: Path) -> None:
    """The compiled program, loaded by bwrap as the sandbox loads it: EPERM for what is denied,
    ENOSYS for clone3 (so threads fall back to clone), and fork, threads, subprocess work."""
    if seccomp.program() is None:
        pytest.skip(f"no seccomp filter here: {seccomp.unavailable_reason()}")
    try:
        sandbox.check_bwrap()
    except GraderError as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    cmd = [*sandbox._seccomp_prefix(tmp_path), sandbox.bwrap_path(), "--ro-bind", "/", "/", "--proc", "/proc",
           "--dev", "/dev", "--unshare-pid", "--seccomp", str(sandbox.SECCOMP_FD), sys.executable, "-c", _SYSCALLS]
    if not sandbox.is_root():
        cmd.insert(cmd.index("--ro-bind"), "--unshare-user")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    got = eval(done.stdout.strip().splitlines()[-1])  # a dict literal printed by the child
    for name in ("unshare_user", "unshare_net", "keyctl", "add_key", "io_uring", "userfaultfd", "bpf",
                 "ptrace", "no_aslr", "exec_all"):
        assert got[name] == "EPERM", (name, got)
    assert got["clone3"] == "ENOSYS"
    assert got["unshare_files"] == "ok" and got["query"] == "ok"
    assert got["fork"] == 7 and got["subprocess"] == 0


def test_every_sandbox_command_loads_the_filter(tmp_path: Path) -> None:
    if seccomp.program() is None:
        pytest.skip(f"no seccomp filter here: {seccomp.unavailable_reason()}")
    (tmp_path / "k").mkdir()
    (tmp_path / "sub").mkdir()
    cmd = sandbox.build_command(["python"], run_dir=tmp_path, kernel_dir=tmp_path / "k", submission=tmp_path / "sub",
                                mounts={}, limits=SandboxLimits(), env={}, uid=1_990_001)
    bwrap = next(i for i, a in enumerate(cmd) if a.endswith("bwrap"))
    assert cmd[:bwrap][-4:] == ["/bin/sh", "-c", f'exec "$@" {sandbox.SECCOMP_FD}<"$0"', str(tmp_path / "seccomp.bpf")]
    assert cmd[bwrap + 1:bwrap + 3] == ["--seccomp", str(sandbox.SECCOMP_FD)]
    assert (tmp_path / "seccomp.bpf").read_bytes() == seccomp.program()


def test_without_libseccomp_the_grader_warns_once_and_runs_with_bwrap_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seccomp._build.cache_clear()
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # `import pyseccomp` raises ImportError
    monkeypatch.setattr(sandbox, "_warned", False)
    try:
        assert seccomp.program() is None and "pyseccomp" in (seccomp.unavailable_reason() or "")
        (tmp_path / "k").mkdir()
        (tmp_path / "sub").mkdir()
        cmd = sandbox.build_command(["python"], run_dir=tmp_path, kernel_dir=tmp_path / "k",
                                    submission=tmp_path / "sub", mounts={}, limits=SandboxLimits(), env={}, uid=None)
        assert "--seccomp" not in cmd and not (tmp_path / "seccomp.bpf").exists()
        assert cmd[0].endswith("prlimit") and cmd[cmd.index("--") + 1].endswith("bwrap")
        if shutil.which("bwrap"):
            said: list[str] = []
            for _ in range(2):
                try:
                    sandbox.check_bwrap(log=said.append)
                except GraderError as exc:  # pragma: no cover - depends on the host
                    pytest.skip(f"bubblewrap unusable here: {exc}")
            assert len(said) == 1 and said[0].startswith("WARNING: no seccomp filter")
    finally:
        seccomp._build.cache_clear()


# ---------------------------------------------------------------- hiding the grader (no kernel)


def test_the_installed_grader_is_found_even_when_imported_from_a_checkout() -> None:
    """The bug: `grader` imported from the checkout (editable install, PYTHONPATH) made the
    copy in site-packages, with the rubrics in grader/_data, invisible to the old check."""
    found = hidden.installation()
    import grader

    here = Path(os.path.realpath(grader.__file__)).parent
    assert here in found.folders and here.parent in found.folders  # the package and its checkout
    try:
        dist = importlib.metadata.distribution(hidden.DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the grader is not installed here")
    for entry in dist.files or []:
        path = Path(os.path.realpath(str(dist.locate_file(entry))))
        assert path in found.files or any(d in path.parents for d in found.folders), path


def test_hiding_covers_what_each_mount_shows_and_keeps_what_python_needs(tmp_path: Path) -> None:
    shown = tmp_path / "shown"  # mounted whole at its own path, as /usr is
    venv = shown / "checkout" / ".venv"
    site = venv / "lib" / "site-packages"
    found = hidden.Installation(
        folders=(site / "grader", site / "dllab_grader-0.1.0.dist-info", shown / "checkout",
                 tmp_path / "elsewhere" / "grader"),
        files=(site / "_editable.pth", venv / "bin" / "dllab"))
    # the venv is a mount of its own inside the checkout; a dataset folder is the checkout
    args = hidden.hide_args([(str(shown), str(shown)), (str(venv), str(venv)),
                             (str(shown / "checkout"), "/tmp/datasets-nctu")],
                            empty_file="/E", found=found)
    ops = [tuple(args[i:i + 3]) if args[i] == "--ro-bind" else tuple(args[i:i + 2])
           for i in range(len(args)) if args[i] in ("--ro-bind", "--tmpfs")]
    assert ("--tmpfs", str(shown / "checkout")) in ops
    assert ("--tmpfs", "/tmp/datasets-nctu") in ops
    assert ("--tmpfs", str(site / "grader")) in ops and ("--tmpfs", str(site / "dllab_grader-0.1.0.dist-info")) in ops
    assert ("--ro-bind", "/E", str(venv / "bin" / "dllab")) in ops and ("--ro-bind", "/E", str(site / "_editable.pth")) in ops
    assert not any("elsewhere" in a for a in args)  # no mount shows it
    # the venv lies inside the hidden checkout: it is mounted again over the tmpfs, then the
    # grader's files in it are hidden
    assert ("--ro-bind", str(venv), str(venv)) in ops
    order = [op[-1] for op in ops]
    assert order.index(str(shown / "checkout")) < order.index(str(venv)) < order.index(str(site / "grader"))
    # what the dataset mount shows of the venv lies inside its hidden folder already: nothing more
    assert not any(a.startswith("/tmp/datasets-nctu/") for a in args)


def test_every_sandbox_command_hides_the_installation(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "sub").mkdir()
    cmd = sandbox.build_command(["python"], run_dir=tmp_path, kernel_dir=tmp_path / "k", submission=tmp_path / "sub",
                                mounts={}, limits=SandboxLimits(), env={}, uid=1_990_001)
    roots = sandbox.python_roots()
    tmpfs = {cmd[i + 1] for i, a in enumerate(cmd) if a == "--tmpfs"}
    for folder in hidden.installation().folders:
        if any(r in folder.parents for r in roots):
            assert str(folder) in tmpfs
    assert (tmp_path / "empty").read_bytes() == b""


# ---------------------------------------------------------------- copy-out (no kernel)


def test_only_the_files_the_grader_expects_leave_the_probe_folder(tmp_path: Path) -> None:
    src, dest = tmp_path / "probe", tmp_path / "out"
    for rel, data in {"events.jsonl": b"{}\n", "fig/fig-0001.png": b"\x89PNG\r\n\x1a\nx", "verify/spec.json": b"{}",
                      "verify/model.pt": b"m" * 100, "dropped.html": b"<script>", "fig/evil.html": b"<b>",
                      "verify/extra.py": b"import os", "mine/notes.txt": b"x", "fig/fig-1.png": b"short name"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "fig" / "fig-0002.png").symlink_to("/etc/hostname")
    (src / "fig" / "fig-0003.png").mkdir()
    os.mkfifo(src / "fig" / "fig-0004.png")
    ignored = harvest.copy_out(src, dest)
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert copied == ["events.jsonl", "fig/fig-0001.png", "verify/model.pt", "verify/spec.json"]
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert set(ignored) == {"dropped.html", "fig/evil.html", "verify/extra.py", "mine", "fig/fig-1.png",
                            "fig/fig-0002.png", "fig/fig-0003.png", "fig/fig-0004.png"}


def test_under_the_byte_cap_events_and_the_model_come_before_figures(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "probe", tmp_path / "out"
    (src / "fig").mkdir(parents=True)
    (src / "verify").mkdir()
    (src / "events.jsonl").write_bytes(b"e" * 10)
    (src / "verify" / "model.pt").write_bytes(b"m" * 60)
    for n in range(5):
        (src / "fig" / f"fig-{n:04d}.png").write_bytes(b"p" * 20)
    monkeypatch.setattr(harvest, "MAX_BYTES", 100)
    harvest.copy_out(src, dest)
    assert (dest / "events.jsonl").is_file() and (dest / "verify" / "model.pt").is_file()
    assert len(list((dest / "fig").iterdir())) == 1


# ---------------------------------------------------------------- one notebook, every attack (kernel)


_GENERIC = ("WHEEL", "INSTALLER", "REQUESTED")
"""dist-info files every package built the same way has, word for word."""


def _known_grader_files() -> dict[str, list[str]]:
    """"name:size" -> sha256s of every file of the grader's installation worth finding (64 bytes
    or more; of a checkout, the files git tracks: its venv and outputs are not the grader)."""
    known: dict[str, list[str]] = {}
    found = hidden.installation()
    paths: list[Path] = list(found.files)
    for folder in found.folders:
        tracked = subprocess.run(["git", "-C", str(folder), "ls-files", "-z"], capture_output=True, check=False) \
            if (folder / ".git").exists() else None
        if tracked is not None and tracked.returncode == 0:  # a checkout: its files, not its outputs or venv
            paths += [folder / rel for rel in tracked.stdout.decode().split("\0") if rel]
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "venv", "__pycache__")]
            paths += [Path(dirpath, n) for n in filenames]
    for path in paths:
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size < 64 or path.name in _GENERIC:
                continue
            known.setdefault(f"{path.name}:{path.stat().st_size}", []).append(
                hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError:
            continue
    return known


_WALK = r'''
import hashlib, json, os, time
known = json.loads(open("known.json").read())
leaks, walked, seen_torch, started = [], 0, False, time.monotonic()
for dirpath, dirnames, filenames in os.walk("/"):
    if dirpath in ("/proc", "/sys", "/dev"):
        dirnames[:] = []
        continue
    if any(n.startswith("dllab_grader") or n == "grader" for n in dirnames):
        for n in dirnames:
            p = os.path.join(dirpath, n)
            if (n.startswith("dllab_grader") or n == "grader") and os.listdir(p):
                leaks.append(p + "/")
    for name in filenames:
        walked += 1
        path = os.path.join(dirpath, name)
        seen_torch = seen_torch or path.endswith("/torch/__init__.py")
        try:
            size = os.lstat(path).st_size
            if f"{name}:{size}" in known and hashlib.sha256(open(path, "rb").read()).hexdigest() in known[f"{name}:{size}"]:
                leaks.append(path)
        except OSError:
            pass
import importlib, importlib.metadata
try:  # an empty dist-info folder may still be found by name: what matters is what it holds
    if importlib.metadata.distribution("dllab-grader").read_text("METADATA"):
        leaks.append("dllab-grader METADATA")
except importlib.metadata.PackageNotFoundError:
    pass
for module in ("grader.cli", "grader.rubric", "grader.probe.recorder"):
    try:
        importlib.import_module(module)
        leaks.append("import " + module)
    except ImportError:
        pass
print(json.dumps({"leaks": leaks, "walked": walked, "torch": seen_torch, "s": round(time.monotonic() - started, 1)}))
'''

_ESCAPES = r'''
import ctypes, errno, json, multiprocessing, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def err(r):
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
out = {}
done = subprocess.run(["unshare", "-r", "id", "-u"], capture_output=True, text=True)
out["unshare -r"] = "ok" if done.returncode == 0 else done.stderr.strip()
try:
    if hasattr(os, "unshare"):  # Python 3.12
        os.unshare(os.CLONE_NEWUSER)
    elif libc.unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    out["os.unshare(CLONE_NEWUSER)"] = "ok"
except OSError as exc:
    out["os.unshare(CLONE_NEWUSER)"] = errno.errorcode[exc.errno]
os.makedirs("/tmp/work/m", exist_ok=True)
out["mount tmpfs"] = err(libc.mount(b"none", b"/tmp/work/m", b"tmpfs", 0, None))
out["unshare -rm mount"] = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "none", "/tmp/work/m"],
                                          capture_output=True, text=True).returncode
out["keyctl"] = err(libc.syscall(250, 0, ctypes.c_long(-3), 0))
out["personality(ADDR_NO_RANDOMIZE)"] = err(libc.personality(0x0040000))
t = threading.Thread(target=lambda: None); t.start(); t.join()
with multiprocessing.Pool(2) as pool:
    out["pool"] = sum(pool.map(abs, range(-20, 20)))
out["subprocess"] = subprocess.run(["true"]).returncode
print(json.dumps(out))
'''

_DROP = r'''
import os, sys
probe = os.path.dirname(sys.modules["_dllab_probe"]._state.events_path)
for rel in ("dropped.html", "fig/evil.html", "verify/extra.py", "mine/notes.txt"):
    os.makedirs(os.path.dirname(os.path.join(probe, rel)), exist_ok=True)
    open(os.path.join(probe, rel), "w").write("<script>alert(1)</script>")
os.symlink("/etc/passwd", os.path.join(probe, "fig", "fig-0001.png"))
print("dropped", sorted(os.listdir(probe)))
'''


def test_a_notebook_reads_its_own_files_cannot_escape_and_finds_nothing_of_the_grader(tmp_path: Path) -> None:
    """H, I and J for real, in one notebook in the real sandbox (as root: a uid of its own).

    H: it imports its own helper module and reads its own CSV, next to it in `part1/`.
    I: `unshare -r`, os.unshare(CLONE_NEWUSER), a mount (direct and inside `unshare -rm`),
       keyctl and personality fail, while threads, a 2-worker Pool and subprocess work;
       the files it drops into the probe folder do not reach the output folder.
    J: a walk of every readable path finds no file of the grader's installation (the rubrics,
       templates, reference code, modules, its checkout), by name and content, except the copy
       of the rubric the submission itself carries (the walk's positive control).
    """
    try:
        sandbox.check_bwrap()
    except GraderError as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    from grader.probe.recorder import bootstrap_source
    from grader.rubric import builtin_rubric

    sub = tmp_path / "sub"
    (sub / "part1").mkdir(parents=True)
    (sub / "part1" / "helper.py").write_text("VALUE = 'from my helper'\n")
    (sub / "part1" / "scores.csv").write_text("epoch,acc\n1,0.5\n2,0.75\n")
    (sub / "part1" / "known.json").write_text(json.dumps(_known_grader_files()))
    rubric = builtin_rubric("lab1")
    shutil.copyfile(rubric, sub / rubric.name)  # a copy the walk must find (it finds by name and content)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        ("import helper, csv\nprint('helper', helper.VALUE)\n"
         "print('csv', list(csv.DictReader(open('scores.csv'))))"),
        _ESCAPES, _DROP, _WALK)])
    nbformat.write(nb, sub / "part1" / "lab1-1.ipynb")
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig"))
    out = tmp_path / "out"
    limits = SandboxLimits(memory_bytes=4 * GiB, max_processes=128, max_work_bytes=256 * MiB,
                           cell_timeout_s=60, wall_timeout_s=180)
    r = run_notebook(sub / "part1" / "lab1-1.ipynb", submission_dir=sub, out_dir=out, spec=SandboxSpec(),
                     limits=limits, startup_code=startup)
    assert r.status == "ok", r.reason
    assert not r.notes, r.notes  # every file was placed
    cells = nbformat.read(r.executed_notebook_path, as_version=4).cells
    text = ["".join(o.get("text", "") for o in c.outputs) for c in cells]
    # H
    assert "helper from my helper" in text[0] and "'acc': '0.75'" in text[0]
    # I
    escapes = json.loads(text[1].strip().splitlines()[-1])
    assert "Operation not permitted" in escapes["unshare -r"]
    assert escapes["os.unshare(CLONE_NEWUSER)"] == "EPERM"
    assert escapes["mount tmpfs"] == "EPERM" and escapes["unshare -rm mount"] != 0
    if seccomp.program() is not None:  # what only the filter refuses
        assert escapes["keyctl"] == "EPERM" and escapes["personality(ADDR_NO_RANDOMIZE)"] == "EPERM"
    assert escapes["pool"] == sum(abs(x) for x in range(-20, 20)) and escapes["subprocess"] == 0
    assert "dropped" in text[2]
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() or p.is_symlink())
    assert left == ["executed.ipynb", "log.txt", "probe/events.jsonl", "run.json"], left
    assert "dropped.html" in Path(r.log_path).read_text()  # named in the log, not copied
    # J
    walk = json.loads(text[3].strip().splitlines()[-1])
    assert walk["torch"] and walk["walked"] > 1000, walk  # it did reach the Python installation
    own = (f"{sandbox.CWD}/{rubric.name}", f"{sandbox.SUBMISSION_RO}/{rubric.name}")
    assert [p for p in walk["leaks"] if p not in own] == [], walk["leaks"]
    assert f"{sandbox.CWD}/{rubric.name}" in walk["leaks"], "the walk finds a file of the grader where it is"
