"""Issue 13 G3: a submission's runs are capped by the rubric, in number and in total time.

The attack (12 extra `.py` files ran 13 sandboxes one after another) is graded for real by
`grade_submission` in saved mode (no kernel) under a rubric with a small cap; the time budget is
driven through the same loop with a clock that jumps; the ordering, the rubric keys and their
strict validation are unit-tested.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import intake_fixtures as fx
import pytest

from grader.intake import discover
from grader.pipeline import GradeSettings, grade_submission
from grader.rubric import builtin_rubric, load_rubric, load_rubric_text
from grader.runbudget import order_runs

LOG = "Accuracy of the network on the 10000 test images: 54 %\nTest loss: 1.2870\n"
LAB1 = builtin_rubric("lab1").read_text()


def with_limit(line: str) -> str:
    """The shipped LAB01 rubric's text with one `limits` line (`key: value`) set or added."""
    key = line.split(":")[0]
    text, n = re.subn(rf"(?m)^  {key}:.*$", f"  {line}", LAB1)
    return text if n else LAB1.replace("  figures: 200 ", f"  {line}\n  figures: 200 ", 1)


def rubric_with(tmp_path: Path, line: str) -> Path:
    text = with_limit(line)
    assert text != LAB1
    path = tmp_path / "lab1.yaml"
    path.write_text(text)
    return path


def script(i: int) -> bytes:
    return f"import time\nprint('extra program {i}')\ntime.sleep(0)\n".encode()


def thirteen_runs(folder: Path) -> Path:
    """The attack: the lab's notebooks among 12 extra programs, named to sort before them."""
    members = [(f"a_extra_{i:02d}.py", script(i)) for i in range(12)]
    members += [("Copy of lab1-1.ipynb", fx.clean_notebook(LOG)), ("lab1-2.ipynb", fx.clean_notebook(LOG)),
                ("lab1-1.ipynb", fx.clean_notebook(LOG)), ("report.pdf", fx.PDF)]
    return fx.write_zip(folder / "dllab_0556001.zip", members)


def grade(tmp_path: Path, rubric: Path) -> tuple[dict, Path]:
    out = tmp_path / "out"
    settings = GradeSettings(rubric_path=rubric, out=out, mode="saved", pdf=False)
    [c] = discover([tmp_path / "in"], exclude=[out])
    return grade_submission(c, settings), out / "runs" / "0556001"


def test_twelve_extra_scripts_are_listed_not_run_beyond_the_cap(tmp_path: Path) -> None:
    thirteen_runs(tmp_path / "in")
    g, runs = grade(tmp_path, rubric_with(tmp_path, "runs_per_submission: 3"))
    plan = json.loads((runs / "plan.json").read_text())
    assert plan["run"] == ["lab1-1.ipynb", "lab1-2.ipynb", "Copy of lab1-1.ipynb"], "the lab's notebooks first"
    capped = [n for n in plan["not_run"] if "runs per submission" in n["reason"]]
    assert sorted(n["path"] for n in capped) == [f"a_extra_{i:02d}.py" for i in range(12)]
    evidence = {json.loads(p.read_text())["path"]: json.loads(p.read_text()) for p in runs.glob("*/evidence.json")}
    assert evidence["lab1-1.ipynb"]["status"] == "ok" and evidence["lab1-1.ipynb"]["metrics"]["test_accuracy"] == 0.54
    for i in range(12):
        ev = evidence[f"a_extra_{i:02d}.py"]
        assert ev["status"] == "not-run" and ev["mode"] == "saved"
        assert "more than the 3 the lab runs per submission (rubric limits.runs_per_submission)" in ev["reason"]
        assert [n["code"] for n in ev["notes"]] == ["runs-capped"]
    assert "runs-capped" in g["flags"]
    rows = [p for p in g["problems"] if p["flag"] == "runs-capped"]
    assert len(rows) == 12 and "a_extra_00.py" in rows[0]["message"]
    items = {i["id"]: i for p in g["parts"] for i in p["items"]}
    assert items["lab1-1-test-metrics"]["status"] == "pass", items["lab1-1-test-metrics"]["message"]


def test_within_the_default_cap_nothing_is_capped(tmp_path: Path) -> None:
    fx.write_zip(tmp_path / "in" / "dllab_0556001.zip", [("lab1-1.ipynb", fx.clean_notebook(LOG)),
                                                         ("train.py", script(0)), ("report.pdf", fx.PDF)])
    g, runs = grade(tmp_path, builtin_rubric("lab1"))
    assert "runs-capped" not in g["flags"] and "submission-time" not in g["flags"]
    assert json.loads((runs / "plan.json").read_text())["run"] == ["lab1-1.ipynb", "train.py"]


def test_when_the_submissions_time_is_spent_later_runs_are_not_started(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reading of the clock moves it 100 s on: the first run starts with 50 s of the 150 s
    left, the next find none left and are not started, each saying so."""
    from grader import pipeline

    class Clock:
        t = 0.0

        def monotonic(self) -> float:
            now, self.t = self.t, self.t + 100.0
            return now

    monkeypatch.setattr(pipeline, "time", Clock())
    thirteen_runs(tmp_path / "in")
    g, runs = grade(tmp_path, rubric_with(tmp_path, "submission_timeout: 150s"))
    evidence = {json.loads(p.read_text())["path"]: json.loads(p.read_text()) for p in runs.glob("*/evidence.json")}
    assert evidence["lab1-1.ipynb"]["status"] == "ok"
    late = [ev for path, ev in evidence.items() if path != "lab1-1.ipynb"]
    assert all(ev["status"] == "not-run" for ev in late)
    timed = [ev for ev in late if [n["code"] for n in ev["notes"]] == ["submission-time"]]
    assert len(timed) == 8 - 1, "within the default cap of 8, the runs after the first are not started"
    assert len(late) - len(timed) == 15 - 8, "the files over the cap are capped, as ever"
    for ev in timed:
        assert "runs had used all of their 2m30s together (rubric limits.submission_timeout)" in ev["reason"]
    assert {"submission-time", "runs-capped"} <= set(g["flags"])


def test_a_run_gets_only_the_time_left_and_says_so_when_it_runs_out(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The run loop hands each run what is left of the submission's time (a stand-in for the
    sandboxed run records it); a run stopped at that shortened wall time carries a note."""
    from grader import pipeline

    given: list[float | None] = []

    def fake_run(path, rel, *, wall_s=None, **kw):
        given.append(wall_s)
        return {"path": rel, "mode": "execute", "status": "timeout", "reason": "wall time", "metrics": {},
                "figures": [], "errors": [], "notes": []}

    monkeypatch.setattr(pipeline, "run_one", fake_run)
    fx.write_zip(tmp_path / "in" / "dllab_0556001.zip", [("lab1-1.ipynb", fx.clean_notebook(LOG)), ("report.pdf", fx.PDF)])
    g, runs = grade(tmp_path, rubric_with(tmp_path, "submission_timeout: 90s"))
    assert len(given) == 1 and 80 < given[0] <= 90
    ev = json.loads((runs / "lab1-1.ipynb" / "evidence.json").read_text())
    [note] = ev["notes"]
    assert note["code"] == "submission-time" and "was given only the" in note["message"]
    assert "submission-time" in g["flags"]


# --------------------------------------------------------------------------- ordering and rubric keys


def test_order_runs_gives_each_part_its_notebook_before_any_second_choice() -> None:
    rubric = load_rubric(builtin_rubric("lab1"))
    paths = ["a.py", "zz.ipynb", "Copy of lab1-1.ipynb", "old/lab1-1.ipynb", ".ipynb_checkpoints/lab1-2-checkpoint.ipynb",
             "lab1-3 draft.ipynb", "lab1-1.ipynb", "lab1-2.ipynb", "lab1-3.ipynb", "b.py", "normalize.ipynb"]
    order = order_runs(paths, rubric)
    assert order[:3] == ["lab1-1.ipynb", "lab1-2.ipynb", "lab1-3.ipynb"], order
    assert order[-3:] == ["a.py", "b.py", ".ipynb_checkpoints/lab1-2-checkpoint.ipynb"], order
    assert order.index("zz.ipynb") > order.index("lab1-3 draft.ipynb")
    assert sorted(order) == sorted(paths)


def test_budget_keys_load_with_defaults_and_units() -> None:
    r = load_rubric(builtin_rubric("lab1"))
    assert (r.limits.runs_per_submission, r.limits.submission_timeout) == (8, 6 * 3600)
    r = load_rubric_text(with_limit("runs_per_submission: 2").replace("submission_timeout: 6h", "submission_timeout: 1h30m"))
    assert (r.limits.runs_per_submission, r.limits.submission_timeout) == (2, 5400)


@pytest.mark.parametrize(("line", "words"), [
    ("runs_per_submision: 3", "unknown key `runs_per_submision`; did you mean `runs_per_submission`?"),
    ("submission_timout: 1h", "unknown key `submission_timout`; did you mean `submission_timeout`?"),
    ("runs_per_submission: 0", "limits.runs_per_submission"),
    ("runs_per_submission: \"3\"", "limits.runs_per_submission"),
    ("submission_timeout: 90 min", "expected a duration such as 90s"),
])
def test_budget_keys_are_validated_strictly(line: str, words: str) -> None:
    from grader.rubric import RubricError

    with pytest.raises(RubricError) as info:
        load_rubric_text(with_limit(line), name="r.yaml")
    assert any(words in str(p) for p in info.value.problems), [str(p) for p in info.value.problems]
