"""`dllab rescore`: recompute every grade from stored runs; nothing is executed.

Also the end of every batch: the class summary and the gradebook are written from
`grades/*.json` and the stored evidence, so they always describe the folder as it is.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from grader.errors import GraderError
from grader.fsutil import write_json_atomic
from grader.model import Submission, record_from_json
from grader.pipeline import OVERRIDES_KEPT, GradeSettings, _render, grade_from_runs, kept_overrides
from grader.safename import safe_name

Log = Callable[[str], None]


def stored_evidence(out: Path, student_id: str) -> list[dict[str, Any]]:
    """The evidence of every run of `student_id` (the id itself, not its file name), validated
    (grader.evidence_model; a folder graded before schema 2 is upgraded). A file that does not
    validate is that notebook's not-run result saying why, flagged for a TA, never an error.
    Evidence stored without run records (a folder graded before them) gets them built from what
    it holds and the executed notebook beside it (grader.runrecords)."""
    from grader.evidence_model import stored_or_invalid
    from grader.runrecords import runs_for

    runs = out / "runs" / safe_name(student_id)
    found = []
    for p in sorted(runs.glob("*/evidence.json")):
        ev = stored_or_invalid(p)
        # A folder graded before run records (issue 15) has none: built from what it stored.
        if not ev.get("runs") and ev.get("status") != "not-run":
            ev["runs"] = runs_for(ev, p.parent / "executed.ipynb" if ev.get("mode") == "execute" else None)
        found.append(ev)
    return found


def _one(student_id: str, settings: GradeSettings, overrides_path: str | None) -> dict[str, Any]:
    from grader.rubric import load_rubric
    from grader.score import load_overrides

    rubric = load_rubric(settings.rubric_path, base_dir=settings.lab_dir)
    overrides = load_overrides(Path(overrides_path), rubric=rubric) if overrides_path else []
    sub = record_from_json(Submission, json.loads(
        (settings.out / "runs" / safe_name(student_id) / "submission.json").read_text()))
    evidence = stored_evidence(settings.out, student_id)
    grade = grade_from_runs(rubric, sub, evidence, settings=settings, overrides=overrides)
    _render(grade, sub, evidence, settings)
    write_json_atomic(settings.out / "grades" / f"{safe_name(student_id)}.json", grade)
    return grade


def rescore(out: Path, *, rubric: Path | None = None, overrides: Path | None = None, workers: int = 2,
            pdf: bool | None = None, log: Log = lambda s: None) -> list[dict[str, Any]]:
    """New grades for every student in OUT; a new rubric or overrides file is kept in OUT."""
    from grader import config
    from grader.rubric import load_rubric
    from grader.score import load_overrides

    settings = config.load(out, rubric=rubric, pdf=pdf)
    r = load_rubric(settings.rubric_path, base_dir=settings.lab_dir)  # fail on a bad rubric before touching anything
    if rubric is not None and settings.rubric_path != (out / "rubric.yaml").resolve():
        config.keep_rubric(out, settings.rubric_path)
        settings = config.load(out, pdf=pdf)
    if overrides is not None:
        load_overrides(overrides, rubric=r)  # validate before keeping it
        for name in OVERRIDES_KEPT:
            (out / name).unlink(missing_ok=True)
        suffix = ".csv" if overrides.suffix.lower() == ".csv" else ".yaml"
        shutil.copyfile(overrides, out / f"overrides{suffix}")
    kept = kept_overrides(out)
    if kept is not None:
        load_overrides(kept, rubric=r)
    # The ids themselves, from the records: a folder's name is only the id's file name.
    students = sorted(str(json.loads(p.read_text())["student_id"]) for p in (out / "runs").glob("*/submission.json"))
    if not students:
        raise GraderError(f"{out} holds no graded runs to rescore")
    log(f"rescoring {len(students)} student(s) with {settings.rubric_path.name}"
        + (f" and overrides from {kept.name}" if kept else ""))
    grades = rescore_students(students, settings, workers=workers)
    finish(out, grades, pdf=settings.pdf)
    return grades


def rescore_students(students: Sequence[str], settings: GradeSettings, *, workers: int = 1) -> list[dict[str, Any]]:
    """New grades (and feedback) for these students from their stored runs, with the overrides
    kept in OUT; nothing is executed."""
    kept = kept_overrides(settings.out)
    kept_s = str(kept) if kept else None
    if workers > 1 and len(students) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(_one, students, [settings] * len(students), [kept_s] * len(students)))
    return [_one(s, settings, kept_s) for s in students]


def finish(out: Path, grades: Sequence[dict[str, Any]], *, pdf: bool) -> None:
    """Class summary and gradebook from the grades and the stored evidence."""
    from grader.report import render_summary, write_gradebook

    runs = {g["student_id"]: stored_evidence(out, g["student_id"]) for g in grades}
    write_gradebook(list(grades), out_dir=out)
    render_summary(list(grades), runs=runs, out_dir=out, pdf=pdf, lateness=_lateness(out, grades))


def _lateness(out: Path, grades: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The deadline in use and what the batch's times say about it, for the class summary."""
    import datetime as dt

    from grader.config import load
    from grader.lateness import class_view
    from grader.rubric import load_rubric

    path = out / "rubric.yaml"
    if not path.is_file():
        return None
    lab_dir = load(out).lab_dir if (out / "settings.json").is_file() else None
    rubric = load_rubric(path, base_dir=lab_dir)
    return class_view(rubric.deadline, rubric.late, grades, now=dt.datetime.now(dt.timezone.utc),
                      where=f"the rubric kept in the output folder ({path.name})")
