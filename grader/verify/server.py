"""A warm evaluator for one submission: one sandboxed Python imports torch and torchvision once,
then forks a fresh child for each verification job of that submission (issue 21).

Each verification job (grader.verify.host.run_job: the primary model, the run models, the
splits, the architecture, the generative measures) was a fresh `python -I -B script job` in a
fresh sandbox, and importing torch and torchvision took 3-5 s of each ~7 s job on a 2-core
machine: LAB01's sample spent 29 s in four of them. Here the submission's jobs share one sandbox
started on its first job (`session`, opened by grader.pipeline for each submission). The server
imports the libraries, then for each job forks a child, which runs the script as `python script
job` would, with its stdout and stderr on the server's; the server waits for it, kills whatever
the child left behind, and writes an end marker carrying a per-job random token and the exit
code on both streams. The host keeps each job's output up to the marker (capped like a fresh
run's), gives each job its own time limit, and kills the whole sandbox when one runs out or the
server dies; the next job starts a new one.

What it shares: jobs of one submission only, in the sandbox and under the caps of the run that
trained the models (grader.sandbox, grader.cgroups); every job a forked child with fresh Python
state. A model that took over its child could leave a process behind in the sandbox (the server
kills every other process in its PID namespace after each job) or write a forged marker: at
worst it garbles its own student's later verification, which fails as unverified, as a forged
result line in a fresh sandbox would. Nothing labelled is ever in the sandbox.

`DLLAB_WARM_EVALUATOR=0` turns it off: each job then runs in a fresh sandbox, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PRELOAD = ("numpy", "PIL.Image", "torch", "torchvision", "torchvision.transforms")
"""Modules the server imports before its first job (each one that fails is left to the job)."""
END = b"\n\x00dllab-evaluator-end "
"""Starts the server's end-of-job line on stdout and stderr: END, the job's token, the exit code."""

Start = Callable[[Path, Path, Path], "tuple[list[str], contextlib.ExitStack, Any]"]
"""start(run_dir, kernel_dir, submission) -> (the server's command, what to clean up after it,
its cgroup or None): how a server starts (grader.verify.host)."""
WARMING_WEIGHT = 0.0
"""The CPU weight (grader.cgroups.RunGroup.set_cpu_weight) of a server started ahead of its
first job (`Session.prestart`): the lowest, so that it imports on CPU the runs leave idle."""

_CURRENT: contextvars.ContextVar["Session | None"] = contextvars.ContextVar("dllab_evaluator", default=None)


def _serve(sweep: bool) -> None:
    """The server's main loop (its source is the server script: stdlib and the PRELOAD modules).

    Reads one JSON request per line on stdin, {"script", "job", "token"}; forks a child that
    runs `script` with `sys.argv = [script, job]` as `__main__` (exit code as `python script`
    gives it: 0, SystemExit's code, 1 for an exception, with its traceback on stderr, minus the
    signal for a killed one); waits for it; kills its process group, and with `sweep` every
    other process of the sandbox's PID namespace but 1 and the server; then writes END, the
    token and the code on stderr and stdout. Ends at EOF on stdin.
    """
    import json
    import os
    import signal
    import sys

    for line in sys.stdin:
        request = json.loads(line)
        token = request["token"]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setpgid(0, 0)
                sys.stdin.close()
                os.close(0)
                os.open(os.devnull, os.O_RDONLY)  # fd 0 again, as a fresh run's /dev/null
                sys.argv = [request["script"], request["job"]]
                import runpy

                runpy.run_path(request["script"], run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, int) and exc.code is not None:
                    print(exc.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - reported as python would
                import traceback

                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:  # noqa: BLE001
                        pass
                os._exit(code & 0xFF)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        if sweep:
            for name in os.listdir("/proc"):
                if name.isdigit() and int(name) not in (1, os.getpid()):
                    try:
                        os.kill(int(name), signal.SIGKILL)
                    except OSError:
                        pass
        tail = b"\n\x00dllab-evaluator-end " + token.encode() + b" " + str(code).encode() + b"\n"
        os.write(2, tail)
        os.write(1, tail)


def server_source() -> str:
    """The server script: the PRELOAD imports (each failure left to the jobs), then `_serve`."""
    imports = "".join(f"try:\n    import {m}\nexcept Exception:\n    pass\n" for m in PRELOAD)
    return (imports + "\n\n" + inspect.getsource(_serve)
            + "\n\nimport sys\n_serve(sweep=sys.argv[1:] == ['--sweep'])\n")


class _Stream:
    """One of the server's output streams, read by a thread: each job's bytes up to its marker."""

    def __init__(self, raw: Any, cap: int, changed: threading.Condition) -> None:
        self.buf = bytearray()
        self.eof = False
        self.cap = cap
        self._changed = changed
        self._thread = threading.Thread(target=self._read, args=(raw,), daemon=True)
        self._thread.start()

    def _read(self, raw: Any) -> None:
        with contextlib.suppress(Exception):
            for chunk in iter(lambda: raw.read1(65536), b""):
                with self._changed:
                    self.buf += chunk
                    if len(self.buf) > 2 * self.cap + 4096:  # keep the head and a tail for the marker
                        del self.buf[self.cap:len(self.buf) - 4096]
                    self._changed.notify_all()
        with self._changed:
            self.eof = True
            self._changed.notify_all()

    def marker(self, token: str) -> tuple[int, int, int] | None:
        """(where the job's marker starts, where its line ends, the exit code), once the whole
        line is in. Call with the condition held."""
        mark = END + token.encode() + b" "
        at = self.buf.find(mark)
        end = self.buf.find(b"\n", at + len(mark)) if at >= 0 else -1
        if end < 0:
            return None
        code = bytes(self.buf[at + len(mark):end])
        return at, end, int(code) if code.lstrip(b"-").isdigit() and len(code) < 12 else 1

    def take(self, at: int, end: int) -> bytes:
        """The job's output before its marker (at most `cap` bytes); consumes up to the line's end."""
        out = bytes(self.buf[:min(at, self.cap)])
        del self.buf[:end + 1]
        return out


class Server:
    """One running server: its process, its streams, the cleanups of its sandbox."""

    def __init__(self, cmd: list[str], *, cwd: str, cap: int, cleanup: contextlib.ExitStack, group: Any = None) -> None:
        self._cleanup = cleanup
        self.group = group
        """Its grader.cgroups.RunGroup, or None."""
        self.warming = False
        """Started ahead of its first job at the lowest CPU weight (`Session.prestart`)."""
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._changed = threading.Condition()
        self._out = _Stream(self.proc.stdout, cap, self._changed)
        self._err = _Stream(self.proc.stderr, cap, self._changed)

    def run(self, script: Path, job: Path, *, timeout_s: float) -> tuple[bytes, bytes, int | str] | None:
        """(stdout, stderr, exit code or "timeout") of one job, or None when the server died
        before the job ended (its output so far is then lost with it: run the job afresh)."""
        token = secrets.token_hex(16)
        request = json.dumps({"script": str(script), "job": str(job), "token": token}) + "\n"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                out, err = self._out.marker(token), self._err.marker(token)
                if out is not None and err is not None:
                    return self._out.take(*out[:2]), self._err.take(*err[:2]), out[2]
                if self._out.eof or self._err.eof or self.proc.poll() is not None:
                    return None  # (a child it left may hold its pipes open: its exit says it)
                left = deadline - time.monotonic()
                if left <= 0:
                    return b"", b"", "timeout"
                self._changed.wait(timeout=min(left, 0.5))

    def close(self) -> None:
        """Kills the server and its sandbox, removes its group and folders."""
        from grader import sandbox

        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        sandbox.kill_group(self.proc.pid)
        sandbox.kill_session(self.proc.pid)  # without a sandbox: the job's child, in a group of its own
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._cleanup.close()


class Session:
    """The warm evaluators of one submission, by the sandbox settings of the jobs they serve."""

    def __init__(self) -> None:
        sweep_folders(Path(tempfile.gettempdir()))
        # the grader's pid in the name: a later grader removes what a killed one left (sweep_folders)
        self.root = Path(tempfile.mkdtemp(prefix=f"dllab-evaluator-{os.getpid()}-"))
        self.jobs = self.root / "k"
        self.jobs.mkdir()
        (self.root / "sub").mkdir()
        for p in (self.root, self.jobs, self.root / "sub"):
            os.chmod(p, 0o755)  # readable, not writable, by the sandbox uid
        self.servers: dict[Any, Server] = {}
        self.started = 0
        """Servers started in all (a restarted one counts again)."""

    def _start(self, key: Any, start: Start, *, warming: bool = False) -> Server | None:
        """A new server for `key`; with `warming`, at the lowest CPU weight, and None (nothing
        started) where it has no cgroup to hold it back."""
        cmd, cleanup, group = start(self.root, self.jobs, self.root / "sub")
        if warming and (group is None or not group.set_cpu_weight(WARMING_WEIGHT)):
            cleanup.close()
            return None
        from grader.verify.host import MAX_STDOUT_BYTES

        server = self.servers[key] = Server(cmd, cwd=str(self.root), cap=MAX_STDOUT_BYTES, cleanup=cleanup, group=group)
        server.warming = warming
        self.started += 1
        return server

    def _live(self, key: Any) -> Server | None:
        """The running server for `key`, or None (one that died is closed and forgotten)."""
        server = self.servers.get(key)
        if server is not None and server.proc.poll() is not None:
            server.close()
            del self.servers[key]
            server = None
        return server

    def prestart(self, key: Any, start: Start) -> bool:
        """Starts the server for `key` ahead of its first job, at the lowest CPU weight, so that
        its imports use only CPU that the runs leave idle; its first job gives it the normal
        weight back. False (nothing started) when it is running already or has no cgroup to
        hold it back: it then starts with its first job, as without this."""
        return self._live(key) is None and self._start(key, start, warming=True) is not None

    def run(self, key: Any, start: Start, script: Path, job: Path, *,
            timeout_s: float) -> tuple[bytes, bytes, int | str] | None:
        """One job on the server for `key`, started with `start` when there is none; None when
        the server died first."""
        t0 = time.monotonic()
        server = self._live(key) or self._start(key, start)
        assert server is not None
        if server.warming:
            server.group.set_cpu_weight(1.0)
            server.warming = False
        result = server.run(script, job, timeout_s=max(0.0, timeout_s - (time.monotonic() - t0)))
        if result is None or result[2] == "timeout":
            server.close()
            del self.servers[key]
        return result

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def sweep_folders(parent: Path) -> int:
    """Removes the `dllab-evaluator-<pid>-*` folders under `parent` whose grader process is gone
    (killed before its session closed); returns how many. A folder of a live pid is left alone."""
    removed = 0
    for folder in parent.glob("dllab-evaluator-*-*"):
        pid = folder.name.removeprefix("dllab-evaluator-").split("-", 1)[0]
        if not pid.isdigit() or not folder.is_dir() or folder.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's): not ours to remove
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def enabled() -> bool:
    """Whether grading uses warm evaluators (`DLLAB_WARM_EVALUATOR`, on unless "0")."""
    return os.environ.get("DLLAB_WARM_EVALUATOR", "1") != "0"


@contextlib.contextmanager
def session() -> Iterator[Session | None]:
    """Makes a fresh Session the current one for the block (one submission's grading); its
    servers are killed and its folders removed at the end. None (nothing shared) when turned off."""
    if not enabled():
        yield None
        return
    current = Session()
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)
        current.close()


def current() -> Session | None:
    """The block's Session, if any (grader.verify.host.job_folder and run_job use it)."""
    return _CURRENT.get()
