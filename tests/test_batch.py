"""The local batch runner: a submission that kills its worker process is retried once."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from grader.batch import Progress, run_local
from grader.pipeline import GradeSettings
from grader.resources import resource_dir


@dataclass(frozen=True)
class FakeCandidate:
    student_id: str


def crashing_task(candidate: FakeCandidate, settings: GradeSettings) -> dict:
    """Stands in for grade_submission: kills its own process for student `crash`."""
    attempts = settings.out / f"{candidate.student_id}.attempts"
    with open(attempts, "a") as f:
        f.write("x")
    if candidate.student_id == "crash":
        os._exit(1)  # a crash of the worker process itself, not of a sandbox
    grade = {"student_id": candidate.student_id, "total": 1.0, "max": 100, "flags": []}
    (settings.out / "grades").mkdir(exist_ok=True)
    (settings.out / "grades" / f"{candidate.student_id}.json").write_text(json.dumps(grade))
    return grade


def test_worker_crash_is_retried_once_then_recorded(tmp_path: Path) -> None:
    settings = GradeSettings(rubric_path=resource_dir("labs") / "lab1" / "rubric.yaml", out=tmp_path)
    todo = [FakeCandidate("a"), FakeCandidate("crash"), FakeCandidate("b")]
    progress = Progress(total=3, durations=[])
    run_local(todo, settings, workers=2, progress=progress, tick=lambda: None, task=crashing_task)
    assert (tmp_path / "crash.attempts").read_text() == "xx", "tried exactly twice"
    crashed = json.loads((tmp_path / "grades" / "crash.json").read_text())
    assert "grader-crash" in crashed["flags"] and "died twice" in crashed["error"]
    statuses = {i["status"] for p in crashed["parts"] for i in p["items"]}
    assert statuses == {"error", "manual"} and crashed["total"] == 0
    for sid in ("a", "b"):
        assert json.loads((tmp_path / "grades" / f"{sid}.json").read_text())["total"] == 1.0
    assert progress.done == 3


def test_a_grade_made_by_other_grader_code_is_made_again_on_resume(tmp_path: Path, monkeypatch) -> None:
    """`make demo` twice across a grader upgrade kept the old grades: the done marker's key now
    holds the grader's code digest, as the run cache's keys do."""
    from grader import batch, pipeline

    settings = GradeSettings(rubric_path=resource_dir("labs") / "lab1" / "rubric.yaml", out=tmp_path)
    candidate = FakeCandidate("0556001")
    import grader.intake as intake

    monkeypatch.setattr(intake, "source_digest", lambda c: "abc")
    (tmp_path / "grades").mkdir()
    (tmp_path / "grades" / "0556001.json").write_text(json.dumps({"flags": []}))
    (tmp_path / "runs" / "0556001").mkdir(parents=True)
    marker = tmp_path / "runs" / "0556001" / "done.json"
    marker.write_text(json.dumps({"key": pipeline.settings_key(settings, "abc")}))
    assert batch.is_done(candidate, settings)
    monkeypatch.setattr(pipeline, "grader_digest", lambda: "other-code")
    assert not batch.is_done(candidate, settings)


def test_each_run_gets_the_cores_divided_by_the_workers(monkeypatch, tmp_path: Path) -> None:
    """Issue 20: a run's cgroup CPU quota is cores ÷ workers (locally), or cores ÷ the Dask
    worker's threads on the machine that runs it; outside a worker, settings stay as given."""
    import types

    import distributed

    from grader import batch

    monkeypatch.setattr(batch.os, "cpu_count", lambda: 8)
    assert [batch.cpu_share(w) for w in (1, 2, 3, 8, 100)] == [8.0, 4.0, 2.66, 1.0, 0.1]
    settings = GradeSettings(rubric_path=tmp_path / "r.yaml", out=tmp_path)
    assert batch.with_worker_share(settings) == settings  # not in a Dask worker
    worker = types.SimpleNamespace(state=types.SimpleNamespace(nthreads=4))
    monkeypatch.setattr(distributed, "get_worker", lambda: worker)
    shared = batch.with_worker_share(settings)
    assert (shared.cpu_threads, shared.cpu_share) == (2, 2.0)
    given = GradeSettings(rubric_path=tmp_path / "r.yaml", out=tmp_path, cpu_threads=1, cpu_share=0.5)
    assert batch.with_worker_share(given) == given
