"""Issue 13 G3: every piece of work done for a submission draws from its one time budget.

The attack (the tester's b6.py): a model that loops forever when the grader captures it after
the last cell (the teardown, 300 s on its own clock) and an independent evaluation of up to 600 s
more, both outside limits.submission_timeout; ordinary runs also overran the time left by their
kernel start. Here the windows are unit-tested (`finish_window` with given clocks, the Runner's
teardown with a fake kernel client, the pipeline's evaluator step with a fake evaluator), a real
`grade_submission` runs with a stand-in for the sandboxed run whose teardown ran out of time, and
one sandboxed kernel checks the deadline and the teardown's cut for real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import intake_fixtures as fx
import nbformat
import pytest

from grader import runbudget
from grader.execute import (
    TEARDOWN_TIMEOUT_S,
    RunResult,
    SandboxLimits,
    SandboxSpec,
    _Log,
)
from grader.rubric import builtin_rubric, load_rubric
from grader.runbudget import FINISH_GRACE_S, finish_cut, finish_window
from grader.verify.host import VERIFY_TIMEOUT_S

LOG = "Accuracy of the network on the 10000 test images: 54 %\nTest loss: 1.2870\n"


# --------------------------------------------------------------------------- the window


@pytest.mark.parametrize(("run_end", "submission_end", "window", "cut"), [
    (None, None, 300.0, None),                                   # nothing left to cut: the step's own cap
    (10_000.0, 20_000.0, 300.0, None),                           # hours left
    (1_010.0, 1_100.0, 10.0 + FINISH_GRACE_S, "sandbox-limit"),  # 10 s of the wall time left
    (1_100.0, 1_010.0, 10.0 + FINISH_GRACE_S, "submission-time"),
    (1_010.0, 1_010.0, 10.0 + FINISH_GRACE_S, "submission-time"),  # the submission's time set the wall time
    (1_000.0 - FINISH_GRACE_S - 5, None, 0.0, "sandbox-limit"),   # spent, grace too: must not start
])
def test_a_step_after_the_cells_gets_at_most_what_is_left_plus_the_grace(run_end, submission_end, window, cut) -> None:
    assert finish_window(now=1_000.0, cap_s=300.0, run_end=run_end, submission_end=submission_end) == (window, cut)


def test_the_cut_note_names_the_step_the_limit_and_the_key() -> None:
    note = finish_cut("lab1-2.ipynb", "teardown", cut="submission-time", given_s=63.2, limit_s=60)
    assert note["code"] == "submission-time"
    assert "capture of the trained model in the kernel after the last cell (the teardown)" in note["message"]
    assert "only the 63 s left of the submission's 1m for all runs (rubric limits.submission_timeout" in note["message"]
    assert note["message"].endswith("ran past it and was stopped: the model was not verified.")
    note = finish_cut("a.ipynb", "evaluation", cut=None, given_s=600, limit_s=600, started=True)
    assert note["code"] == "sandbox-limit" and "grader's limit of 10m" in note["message"]
    assert "could not start" in finish_cut("a.ipynb", "evaluation", cut="sandbox-limit", given_s=0, limit_s=120,
                                           started=False)["message"]


# --------------------------------------------------------------------------- the teardown


class _Kernel:
    """The kernel client the teardown talks to: it never answers (the model loops forever)."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    async def execute_interactive(self, code, *, timeout, **kw):
        self.timeouts.append(timeout)
        raise TimeoutError("Timeout waiting for output")


def _runner(tmp_path: Path, *, wall_s: float, used_s: float, deadline_in_s: float | None):
    from grader.driver import Runner

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("net = SlowNet()")])
    now = time.time()
    runner = Runner(nb, "lab1-2.ipynb", run_dir=tmp_path, submission_dir=tmp_path, spec=SandboxSpec(),
                    limits=SandboxLimits(wall_timeout_s=wall_s), uid=None, log=_Log(tmp_path / "log.txt"),
                    started=now - used_s - 5, deadline=None if deadline_in_s is None else now + deadline_in_s)
    runner.cells_started = now - used_s
    return runner


@pytest.mark.parametrize(("wall_s", "used_s", "deadline_in_s", "given", "cut"), [
    (120.0, 20.0, 40.0, 40.0 + FINISH_GRACE_S, "submission-time"),  # the tester's r4: 60 s for the submission
    (120.0, 100.0, 3600.0, 20.0 + FINISH_GRACE_S, "sandbox-limit"),
    (4 * 3600.0, 0.0, None, TEARDOWN_TIMEOUT_S, None),
])
def test_the_teardown_gets_at_most_what_is_left_of_the_wall_time_and_the_submission(
        tmp_path: Path, wall_s: float, used_s: float, deadline_in_s: float | None, given: float, cut) -> None:
    runner = _runner(tmp_path, wall_s=wall_s, used_s=used_s, deadline_in_s=deadline_in_s)
    kernel = _Kernel()
    asyncio.run(runner._teardown(SimpleNamespace(kc=kernel), "probe.export_for_verification()"))
    [timeout] = kernel.timeouts
    assert given - 1.0 <= timeout <= given
    assert runner.teardown["status"] == "timeout" and runner.teardown["cut"] == cut
    assert "teardown code did not finish" in (tmp_path / "log.txt").read_text()


def test_a_kill_at_the_submissions_deadline_says_so(tmp_path: Path) -> None:
    early = _runner(tmp_path, wall_s=7200.0, used_s=10.0, deadline_in_s=3.0)
    assert 2.0 < early._deadline_left() <= 3.0, "the submission's end comes before the wall time's"
    early.cells_started = None  # and before the start-up limit's: the kernel start counts too
    assert 2.0 < early._deadline_left() <= 3.0
    runner = _runner(tmp_path, wall_s=7200.0, used_s=10.0, deadline_in_s=-1.0)
    assert runner._deadline_left() < 0
    status, reason = runner._time_limit()
    assert status == "timeout" and runner.deadline_hit
    assert "the submission's time for all of its runs (rubric limits.submission_timeout) ran out" in reason
    runner.cells_started = None  # before the kernel was ready, the start-up limit would not be the reason
    assert runner._time_limit()[0] == "not-run" and "before the kernel was ready" in runner._time_limit()[1]


# --------------------------------------------------------------------------- the evaluator


def _verify_step(monkeypatch: pytest.MonkeyPatch, *, submission_in_s: float, answer: dict):

    seen: dict = {}

    def fake_verify_run(*, limits, timeout_s, **kw):
        seen["timeout_s"] = timeout_s
        return dict(answer)

    rubric = load_rubric(builtin_rubric("lab1"))
    now = time.time()
    result = SimpleNamespace(started_at=now - 30, startup_s=5.0, teardown={"status": "ok"})
    verified, note = runbudget.verify_in_time(result, "lab1-2.ipynb", rubric=rubric, limits=SandboxLimits(),
                                      submission_end=now + submission_in_s, verify_run=fake_verify_run)
    return verified, note, seen


def test_the_evaluator_gets_at_most_what_is_left_and_a_time_out_is_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    verified, note, seen = _verify_step(monkeypatch, submission_in_s=10.0, answer={
        "reason": "the time limit of 70 s given to the independent evaluation ran out", "timed_out": True})
    assert 10.0 + FINISH_GRACE_S - 1 <= seen["timeout_s"] <= 10.0 + FINISH_GRACE_S < VERIFY_TIMEOUT_S
    assert verified == {"reason": "the time limit of 70 s given to the independent evaluation ran out"}
    assert note is not None and note["code"] == "submission-time" and "independent evaluation" in note["message"]
    verified, note, seen = _verify_step(monkeypatch, submission_in_s=10.0, answer={"test_accuracy": 0.5})
    assert verified == {"test_accuracy": 0.5} and note is None


def test_no_evaluation_starts_when_no_time_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    verified, note, seen = _verify_step(monkeypatch, submission_in_s=-FINISH_GRACE_S - 5, answer={})
    assert seen == {}
    assert verified["reason"].startswith("the time limit left no time for the independent evaluation")
    assert note is not None and note["code"] == "submission-time" and "could not start" in note["message"]


def test_a_teardown_that_ran_out_of_time_is_not_verified(tmp_path: Path) -> None:
    from grader.verify import verify_run

    (tmp_path / "run.json").write_text(json.dumps({"status": "ok", "teardown": {"status": "timeout"}}))
    # a half-written capture is there: it is not read
    (tmp_path / "probe" / "verify").mkdir(parents=True)
    (tmp_path / "probe" / "verify" / "spec.json").write_text("{}")
    got = verify_run(run_dir=tmp_path, probe_dir=tmp_path / "probe", spec=SandboxSpec(), limits=SandboxLimits(),
                     dataset_hint="food11")
    assert got["reason"].startswith("the time limit ran out while the grader captured the trained model")


# --------------------------------------------------------------------------- a whole submission


def test_b6_a_model_looping_at_its_capture_costs_its_verification_within_the_submissions_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`grade_submission` in execute mode, the sandboxed run replaced by a stand-in that records
    the deadline it was given and reports the teardown cut at it (what Runner._teardown records, see
    above). The grade carries `submission-time` with a note naming the teardown, the model is not
    verified ("the time limit ..."), and the run was told to end within the submission's time."""
    from grader import execute, pipeline
    from grader.intake import discover

    given: dict = {}

    def fake_run(path, *, submission_dir, out_dir, spec, limits, startup_code, teardown_code, deadline):
        given.update(deadline=deadline, wall=limits.wall_timeout_s, now=time.time())
        out_dir.mkdir(parents=True, exist_ok=True)
        result = RunResult(path="lab1-2.ipynb", status="ok", reason="", cells=(), started_at=time.time() - 40,
                           duration_s=40.0, startup_s=5.0, executed_notebook_path="", log_path="",
                           figures_kept=0, figures_dropped=0, output_truncated=False,
                           teardown={"status": "timeout", "seconds": 63.0, "given_s": 63.0, "cut": "submission-time"})
        (out_dir / "run.json").write_text(json.dumps(dataclasses.asdict(result)))
        return result

    monkeypatch.setattr(execute, "run_notebook", fake_run)
    fx.write_zip(tmp_path / "in" / "dllab_0556401.zip", [("lab1-2.ipynb", fx.clean_notebook(LOG)), ("report.pdf", fx.PDF)])
    rubric = tmp_path / "r.yaml"
    rubric.write_text(builtin_rubric("lab1").read_text().replace("submission_timeout: 6h", "submission_timeout: 60s"))
    assert "submission_timeout: 60s" in rubric.read_text()
    out = tmp_path / "out"
    [c] = discover([tmp_path / "in"], exclude=[out])
    g = pipeline.grade_submission(c, pipeline.GradeSettings(rubric_path=rubric, out=out, mode="execute", pdf=False))
    assert given["now"] < given["deadline"] <= given["now"] + 60 and given["wall"] <= 60
    ev = json.loads((out / "runs" / "0556401" / "lab1-2.ipynb" / "evidence.json").read_text())
    [note] = ev["notes"]  # the evaluation had nothing to evaluate: no second note
    assert "teardown" in note["message"]
    assert note["code"] == "submission-time" and "limits.submission_timeout" in note["message"]
    assert ev["verified"]["reason"].startswith("the time limit ran out while the grader captured the trained model")
    assert "submission-time" in g["flags"]
    assert any(p["flag"] == "submission-time" and "teardown" in p["message"] for p in g["problems"])
    # what was cut by this submission's time left is not kept for another grading
    assert not any((out / "cache").glob("*/evidence.json"))


def test_a_teardown_at_its_own_limit_is_a_sandbox_limit_flag() -> None:
    from grader.diagnose import run_flags

    note = finish_cut("a.ipynb", "teardown", cut=None, given_s=300, limit_s=TEARDOWN_TIMEOUT_S)
    assert run_flags({"status": "ok", "notes": [note]}) == {"sandbox-limit"}
    assert runbudget.budget_problems([{"path": "a.ipynb", "notes": [note]}]) == []


# --------------------------------------------------------------------------- for real


@pytest.mark.kernel
def test_a_sandboxed_run_ends_at_the_submissions_deadline_and_its_teardown_within_the_grace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One kernel: the notebook ends in time, the teardown loops forever (as b6's model does when
    captured) and is stopped at what was left of the submission's time plus the grace."""
    from grader import sandbox
    from grader.execute import GiB, MiB, run_notebook

    try:
        sandbox.check_bwrap()
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    monkeypatch.setattr(runbudget, "FINISH_GRACE_S", 2.0)
    nb_path = tmp_path / "sub" / "lab.ipynb"
    nb_path.parent.mkdir(parents=True)
    nb_path.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('trained')")])))
    limits = SandboxLimits(memory_bytes=2 * GiB, max_processes=128, max_file_bytes=64 * MiB,
                           max_work_bytes=64 * MiB, cell_timeout_s=60, wall_timeout_s=60)
    t0 = time.time()
    r = run_notebook(nb_path, submission_dir=nb_path.parent, out_dir=tmp_path / "out", spec=SandboxSpec(),
                     limits=limits, teardown_code="while True:\n    pass\n", deadline=t0 + 8.0)
    took = time.time() - t0
    assert r.status == "ok", r.reason
    assert r.teardown is not None and r.teardown["status"] == "timeout" and r.teardown["cut"] == "submission-time"
    assert r.teardown["given_s"] <= 10.0
    assert took < 8.0 + 2.0 + 8.0, f"{took:.1f} s: the deadline plus the grace plus a bounded shutdown"
    assert json.loads((tmp_path / "out" / "run.json").read_text())["teardown"]["status"] == "timeout"
