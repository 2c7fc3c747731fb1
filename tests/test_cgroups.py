"""Run groups (grader.cgroups) on this host's own cgroup hierarchy: the process cap refuses forks
and says so, the CPU quota holds a busy loop to its share, and nothing is left behind. Skipped
where no hierarchy can be written (the sandbox then keeps its rlimits)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from grader import cgroups

VERSION, WHY = cgroups.available()
pytestmark = pytest.mark.skipif(not VERSION, reason=f"no writable cgroup hierarchy: {WHY}")


def _start_in(group: cgroups.RunGroup, code: str) -> subprocess.Popen:
    """A Python child that waits on stdin until it is in the group, then runs `code`."""
    proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.stdin.readline()\n{code}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    group.attach(proc.pid)
    proc.stdin.write("go\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]
    return proc


def test_the_process_cap_refuses_forks_and_is_counted() -> None:
    group, why = cgroups.create(max_processes=8, memory_bytes=None, cpu_share=None, name="test")
    assert group is not None, why
    try:
        proc = _start_in(group, """
import os, time
made, refused = 0, 0
for _ in range(30):
    try:
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
        made += 1
    except OSError:
        refused += 1
print(made, refused, flush=True)
""")
        out, _ = proc.communicate(timeout=30)
        made, refused = map(int, out.split())
        assert made <= 7 and refused >= 23
        assert group.process_cap_hits() >= refused
    finally:
        group.remove()
    assert not any(d.exists() for d in group.dirs.values())


def test_a_busy_loop_gets_its_cpu_share_and_no_more() -> None:
    group, why = cgroups.create(max_processes=16, memory_bytes=256 << 20, cpu_share=0.25, name="test")
    assert group is not None, why
    try:
        t0 = time.monotonic()
        proc = _start_in(group, "import time\nend = time.monotonic() + 2\nwhile time.monotonic() < end: pass\n")
        proc.wait(timeout=30)
        wall = time.monotonic() - t0
        used = group.cpu_seconds()
        assert 0 < used <= 0.25 * wall + 0.2, (used, wall)
    finally:
        group.remove()


def test_kill_leaves_no_process_of_the_group() -> None:
    group, why = cgroups.create(max_processes=32, memory_bytes=None, cpu_share=None, name="test")
    assert group is not None, why
    try:
        proc = _start_in(group, """
import os, time
for _ in range(5):
    if os.fork() == 0:
        os.setsid(); time.sleep(60); os._exit(0)
time.sleep(60)
""")
        deadline = time.monotonic() + 10
        while len(group.pids()) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group.pids()) == 6  # setsid() children stay in the group: a process group kill would miss them
        group.kill()
        assert group.pids() == []
        proc.wait(timeout=5)
    finally:
        group.remove()


def test_the_own_group_paths_are_read_for_v1_and_v2() -> None:
    text = "4:memory:/process_api/abc\n8:pids:/\n1:cpu,cpuacct:/x\n0::/user.slice\n"
    assert cgroups._own_paths(text) == {"memory": "/process_api/abc", "pids": "/", "cpu": "/x", "cpuacct": "/x",
                                        "unified": "/user.slice"}


def test_a_command_started_through_the_prefix_is_in_the_group_from_its_start() -> None:
    group, why = cgroups.create(max_processes=16, memory_bytes=None, cpu_share=0.5, name="test")
    assert group is not None, why
    try:
        out = subprocess.run([*group.prefix(), sys.executable, "-c", "print(open('/proc/self/cgroup').read())"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        leaf = next(iter(group.dirs.values())).name
        assert leaf in out
        assert "at most 0.5 CPU core(s)" in group.describe()
    finally:
        group.remove()


def test_the_memory_limit_ends_the_tree_and_is_counted() -> None:
    """Three children of 40 MiB each fit no 64 MiB group: the out-of-memory killer ends one,
    and the group says so (what the watchdog reads to name the memory limit)."""
    group, why = cgroups.create(max_processes=16, memory_bytes=64 << 20, cpu_share=None, name="test")
    assert group is not None, why
    try:
        proc = _start_in(group, """
import os, time
kids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        x = bytearray(40 << 20)
        for i in range(0, len(x), 4096):
            x[i] = 1
        time.sleep(30); os._exit(0)
    kids.append(pid)
time.sleep(3)
for k in kids:
    try:
        os.kill(k, 9)
    except OSError:
        pass
""")
        proc.communicate(timeout=30)
        assert group.oom_kills() >= 1
        assert 0 < group.memory_peak() <= 64 << 20
        assert group.memory_bytes == 64 << 20
    finally:
        group.remove()


def test_a_run_group_holds_the_kernel_tree_and_its_tmpfs() -> None:
    from grader.execute import GiB, SandboxLimits

    limits = SandboxLimits(memory_bytes=1 * GiB, max_processes=40, max_work_bytes=GiB // 2, max_shm_bytes=GiB // 4)
    group, why = cgroups.for_run(limits, cpu_share=0.5, name="test")
    assert group is not None, why
    try:
        assert group.memory_bytes == 1 * GiB + GiB // 2 + GiB // 4
        assert group.max_processes == 40
        assert group.describe() == "cgroup v%d: at most 40 processes and threads, memory 1792 MiB, at most 0.5 CPU core(s)" % VERSION
    finally:
        group.remove()


def test_a_left_over_group_is_swept_once_old_and_empty() -> None:
    """A grader killed before it removed its run's group leaves an empty folder: a later run
    removes it once SWEEP_AGE_S old; a young one (another worker's, about to be joined) and one
    holding a process stay."""
    old, _ = cgroups.create(max_processes=8, memory_bytes=None, cpu_share=None, name="test")
    busy, _ = cgroups.create(max_processes=8, memory_bytes=None, cpu_share=None, name="test")
    young, _ = cgroups.create(max_processes=8, memory_bytes=None, cpu_share=None, name="test")
    assert old is not None and busy is not None and young is not None
    proc = _start_in(busy, "import time; time.sleep(30)")
    try:
        parents = {d.parent for d in old.dirs.values()}
        for d in {*old.dirs.values(), *busy.dirs.values()}:
            os.utime(d, (time.time() - 2 * cgroups.SWEEP_AGE_S,) * 2)
        assert sum(cgroups.sweep(p, now=time.time()) for p in parents) == len(parents)
        assert not any(d.exists() for d in old.dirs.values())
        assert all(d.exists() for d in (*busy.dirs.values(), *young.dirs.values()))
    finally:
        proc.kill()
        proc.wait()
        for g in (old, busy, young):
            g.remove()
