"""T1 #3, #7, #10: what the grading machine lacked, and the notes on a run, in the grade.

In-memory evidence through `grade_from_runs` (no kernel): items of a part whose notebook
failed for the grader's shortcoming go to the TA, the reason in the student's text, and the
grade's `problems` (grades.csv) names it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from grader.model import Submission, SubmittedFile
from grader.pipeline import GradeSettings, grade_from_runs
from grader.report.gradebook import write_gradebook
from grader.rubric import builtin_rubric, load_rubric

sys.path.insert(0, str(Path(__file__).parent))
from test_sources import broken, complete  # noqa: E402

RUBRIC = load_rubric(builtin_rubric("lab1"))


def _sub(tmp_path: Path, *paths: str) -> Submission:
    return Submission(student_id="0700007", source="x.zip", source_sha256=None, submitted_at=None,
                      submitted_at_source="unknown", work_dir=str(tmp_path),
                      files=tuple(SubmittedFile(p, "notebook", 1, "0" * 64) for p in paths), problems=())


def _lacking(path: str, code: str, subject: str, cell: int = 3) -> dict[str, Any]:
    ev = broken(path)
    ev["errors"] = [{"cell": cell, "index": cell, "ename": "RuntimeError", "evalue": "x"},
                    {"cell": cell + 1, "index": cell + 1, "ename": "NameError", "evalue": "name 'net' is not defined"}]
    ev["environment"] = [{"code": code, "cell": cell, "label": f"cell {cell}", "subject": subject,
                          "message": f"cell {cell} lacks {subject}: grade again (TA)."}]
    return ev


def _grade(tmp_path: Path, *evidence: dict[str, Any]) -> dict[str, Any]:
    sub = _sub(tmp_path, *(ev["path"] for ev in evidence))
    return grade_from_runs(RUBRIC, sub, list(evidence),
                           settings=GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path))


def _items(grade: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {it["id"]: it for p in grade["parts"] for it in p["items"]}


def test_a_needs_gpu_run_sends_its_failed_items_to_the_ta_not_to_zero(tmp_path: Path) -> None:
    g = _grade(tmp_path, _lacking("lab1-1.ipynb", "needs-gpu", "CUDA"), complete("lab1-2.ipynb"))
    items = _items(g)
    metrics = items["lab1-1-test-metrics"]
    assert metrics["status"] == "manual", metrics
    assert "needs a CUDA GPU" in metrics["message"] and "cell 3 of `lab1-1.ipynb`" in metrics["message"]
    assert "not counted against you" in metrics["message"]
    assert any(e.startswith("automatic check (fail)") for e in metrics["evidence"])  # the TA sees what it found
    assert {"needs-gpu", "manual-pending"} <= set(g["flags"]) and "notebook-error" not in g["flags"]
    # grades.csv's problems column carries the reason
    [row] = [p for p in g["problems"] if p["flag"] == "needs-gpu"]
    assert row["path"] == "lab1-1.ipynb" and "lacks CUDA" in row["message"]
    csv_path = write_gradebook([g], out_dir=tmp_path)[0]
    assert "needs-gpu: cell 3 lacks CUDA" in csv_path.read_text()


def test_only_the_part_whose_notebook_lacked_something_is_deferred(tmp_path: Path) -> None:
    g = _grade(tmp_path, complete("lab1-1.ipynb"), _lacking("lab1-2.ipynb", "missing-package", "cv2"))
    items = _items(g)
    assert items["lab1-1-test-metrics"]["status"] == "pass"
    deferred = [it for it in items.values() if it["id"].startswith("lab1-2") and it["status"] == "manual"
                and "imports cv2" in it["message"]]
    assert deferred, {k: v["status"] for k, v in items.items()}
    assert "missing-package" in g["flags"]


def test_a_students_own_bug_still_fails(tmp_path: Path) -> None:
    g = _grade(tmp_path, broken("lab1-1.ipynb"), complete("lab1-2.ipynb"))
    assert _items(g)["lab1-1-test-metrics"]["status"] == "fail"
    assert "notebook-error" in g["flags"] and not [p for p in g["problems"] if p["flag"] == "needs-gpu"]


def test_run_notes_are_flags_with_their_message(tmp_path: Path) -> None:
    ev = complete("lab1-1.ipynb")
    ev["notes"] = [{"code": "process-cap", "message": "the run reached its process limit of 64 for a moment"},
                   {"code": "files-not-placed", "message": "`data/x/` was replaced by the grader's copy"}]
    g = _grade(tmp_path, ev, complete("lab1-2.ipynb"))
    assert {"process-cap", "files-not-placed"} <= set(g["flags"])
    assert [p["flag"] for p in g["problems"]] == ["process-cap", "files-not-placed"]
    assert _items(g)["lab1-1-test-metrics"]["status"] == "pass"  # a note alone costs nothing


def test_the_ran_item_is_deferred_too(tmp_path: Path) -> None:
    g = _grade(tmp_path, _lacking("lab1-1.ipynb", "needs-gpu", "CUDA"), complete("lab1-2.ipynb"))
    ran = _items(g)["lab1-1-ran"]
    # no model of the run was tested by the grader, so its partial credit already waits for a TA
    # (issue 13 A, round 4), saying what it would earn; before: the deferral's "automatic check (partial)"
    assert ran["status"] == "manual" and ran["points"] == 0 and "partial from the outputs: 2.5 of 5 points" in ran["message"], ran


def test_a_module_missing_from_the_zip_is_flagged_and_not_deferred(tmp_path: Path) -> None:
    """rt1 #7: `from mynet import Net` with no mynet.py: the student's, items fail as they ran."""
    g = _grade(tmp_path, _lacking("lab1-1.ipynb", "missing-module", "mynet"), complete("lab1-2.ipynb"))
    assert _items(g)["lab1-1-test-metrics"]["status"] == "fail"
    assert {"missing-module", "notebook-error"} <= set(g["flags"])
    assert not [it for it in _items(g).values() if "not counted against you" in it["message"]]
    [row] = [p for p in g["problems"] if p["flag"] == "missing-module"]
    assert row["path"] == "lab1-1.ipynb" and "mynet" in row["message"]


def test_a_cell_failing_on_a_file_not_placed_sends_the_part_to_the_ta(tmp_path: Path) -> None:
    """rt1 #8 (lab1-1-ran 2.5/5): FileNotFoundError on data/Food-11/notes.txt, hidden by the mount."""
    g = _grade(tmp_path, _lacking("lab1-1.ipynb", "files-not-placed", "data/Food-11/notes.txt"),
               complete("lab1-2.ipynb"))
    metrics = _items(g)["lab1-1-test-metrics"]
    assert metrics["status"] == "manual" and "could not place" in metrics["message"]
    assert "data/Food-11/notes.txt" in metrics["message"] and "not counted against you" in metrics["message"]
    assert "files-not-placed" in g["flags"] and "notebook-error" not in g["flags"]


def test_a_download_without_network_sends_the_part_to_the_ta(tmp_path: Path) -> None:
    """rt1 #9: `!wget` then torch.load('weights.pth') -> needs-network, not notebook-error."""
    g = _grade(tmp_path, _lacking("lab1-1.ipynb", "needs-network", "network"), complete("lab1-2.ipynb"))
    metrics = _items(g)["lab1-1-test-metrics"]
    assert metrics["status"] == "manual" and "without a network" in metrics["message"]
    assert "needs-network" in g["flags"] and "notebook-error" not in g["flags"]
