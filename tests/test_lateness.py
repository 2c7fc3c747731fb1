"""A deadline from another term, copy times, clocks in the future, no times at all: said, never silent (issue 12 N)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import intake_fixtures as fx
from grader.batch import lateness_warnings
from grader.intake import discover
from grader.lateness import When, batch_warnings, class_view, span
from grader.model import Submission
from grader.pipeline import GradeSettings, grade_from_runs
from grader.rubric import LatePolicy, builtin_rubric, load_rubric

TW = dt.timezone(dt.timedelta(hours=8))
EXAMPLE_DEADLINE = dt.datetime(2018, 9, 30, 23, 59, tzinfo=TW)  # rubrics/lab1.yaml's
NOW = dt.datetime(2026, 10, 5, 12, 0, tzinfo=dt.timezone.utc)
POLICY = LatePolicy()  # 10 % a day, 7 days at most, then 0


def when(days_after: float, source: str = "file-mtime", base: dt.datetime = EXAMPLE_DEADLINE) -> When:
    return When(base + dt.timedelta(days=days_after), source)


def test_this_terms_zips_against_the_example_deadline() -> None:
    times = [when(8 * 365.25 + i * 0.1) for i in range(30)]
    [msg] = batch_warnings(EXAMPLE_DEADLINE, POLICY, times, now=NOW)
    assert msg.startswith("every submission is about 8 years past the deadline in the rubric (2018-09-30 23:59 +08:00)")
    assert "more than the 7 days" in msg and "0 points" in msg
    assert "set this term's deadline" in msg and "--submitted-at" in msg


def test_a_plausible_batch_says_nothing() -> None:
    deadline = NOW - dt.timedelta(days=2)
    times = [when(-1.5 + i * 0.05, base=deadline) for i in range(30)] + [when(1.5, base=deadline)]
    assert batch_warnings(deadline, POLICY, times, now=NOW) == []


def test_a_few_very_late_students_are_not_a_wrong_deadline() -> None:
    deadline = NOW - dt.timedelta(days=30)
    times = [when(-1 - i * 0.01, base=deadline) for i in range(9)] + [when(20, base=deadline)]
    assert batch_warnings(deadline, POLICY, times, now=NOW) == []


def test_most_past_max_days_names_the_count() -> None:
    deadline = NOW - dt.timedelta(days=40)
    times = [when(30 + i, base=deadline) for i in range(7)] + [when(-1, base=deadline)] * 3
    [msg] = batch_warnings(deadline, POLICY, times, now=NOW)
    assert msg.startswith("7 of 10 submissions are about 33 days past the deadline")


def test_far_more_than_a_term_late_is_said_even_when_late_work_is_capped_not_zeroed() -> None:
    generous = LatePolicy(max_days=400, after_max="cap")
    times = [when(2 * 365 + i) for i in range(5)]
    [msg] = batch_warnings(EXAMPLE_DEADLINE, generous, times, now=NOW)
    assert "about 2 years past the deadline" in msg and "loses" in msg


def test_future_times_unknown_times_and_copy_times() -> None:
    deadline = NOW - dt.timedelta(days=1)
    future = [When(NOW + dt.timedelta(days=400), "file-mtime")]
    unknown = [When(None, "unknown")] * 2
    msgs = batch_warnings(deadline, POLICY, [when(-0.5, base=deadline)] * 3 + future + unknown, now=NOW)
    assert any(m.startswith("1 submission time(s) are later than now") and "time-in-future" in m for m in msgs)
    assert any(m.startswith("2 submission(s) have no known time") and "time-unknown" in m for m in msgs)
    copied = [When(NOW - dt.timedelta(seconds=s), "file-mtime") for s in range(5)]
    [msg] = batch_warnings(NOW + dt.timedelta(days=3), POLICY, copied, now=NOW)
    assert msg.startswith("all 5 archive times lie within 4 s of each other") and "copied" in msg
    lms = [When(t.at, "lms-archive-entry") for t in copied]
    assert batch_warnings(NOW + dt.timedelta(days=3), POLICY, lms, now=NOW) == [], "an LMS time is an upload time"


def test_no_deadline_no_warning() -> None:
    assert batch_warnings(None, POLICY, [when(3000)], now=NOW) == []


def test_span_reads_naturally() -> None:
    assert [span(s) for s in (8 * 365.25 * 86400, 70 * 86400, 12 * 86400, 5 * 3600, 90)] == \
        ["about 8 years", "about 2 months", "about 12 days", "about 5 hours", "about 2 minute(s)"]


# --------------------------------------------------------------------------- wired into the batch and the grade


def test_batch_warns_from_the_archives_and_the_submitted_at_csv_silences_it(tmp_path: Path) -> None:
    rubric = load_rubric(builtin_rubric("lab1"))
    inc = tmp_path / "in"
    for i, sid in enumerate(("0556001", "0556002", "0556003")):
        fx.good_zip(inc, sid, mtime=NOW.timestamp() - 86400 * (10 + i))
    candidates = discover([inc])
    s = GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path / "out")
    [msg] = lateness_warnings(candidates, rubric, s, now=NOW)
    assert msg.startswith("every submission is about 8 years past the deadline")
    fixed = GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path / "out",
                          submitted_at={sid: "2018-09-29T12:00:00+08:00" for sid in ("0556001", "0556002", "0556003")})
    assert lateness_warnings(candidates, rubric, fixed, now=NOW) == []


def _submission(sid: str, at: str | None, source: str = "file-mtime") -> Submission:
    return Submission(student_id=sid, source=f"dllab_{sid}.zip", source_sha256=None, submitted_at=at,
                      submitted_at_source=source if at else "unknown", work_dir="/nonexistent", files=(), problems=())


def test_grades_flag_future_unknown_and_past_max_days(tmp_path: Path) -> None:
    rubric = load_rubric(builtin_rubric("lab1"))
    s = GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path)
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).isoformat()
    g = grade_from_runs(rubric, _submission("0556070", future), [], settings=s)
    assert "time-in-future" in g["flags"] and g["late"]["days_late"] == 0 and g["late"]["penalty_points"] == 0
    assert "in the future: not used" in g["late"]["source"] and g["submitted_at"] == future
    g = grade_from_runs(rubric, _submission("0556071", None), [], settings=s)
    assert "time-unknown" in g["flags"] and g["submitted_at"] is None
    g = grade_from_runs(rubric, _submission("0556072", "2026-09-01T00:00:00+08:00"), [], settings=s)
    assert {"late", "past-max-days"} <= set(g["flags"]) and g["submitted_at_source"] == "file-mtime"
    g = grade_from_runs(rubric, _submission("0556073", "2018-10-01T10:00:00+08:00"), [], settings=s)
    assert "late" in g["flags"] and "past-max-days" not in g["flags"]


def test_class_summary_shows_the_deadline_its_source_and_the_warning(tmp_path: Path) -> None:
    from grader.report.summary import render_summary

    rubric = load_rubric(builtin_rubric("lab1"))
    s = GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path)
    grades = [grade_from_runs(rubric, _submission(f"05560{80 + i}", f"2026-10-0{1 + i}T09:00:00+08:00"), [],
                              settings=s) for i in range(3)]
    grades.append(grade_from_runs(rubric, _submission("0556090", None), [], settings=s))
    view = class_view(rubric.deadline, rubric.late, grades, now=NOW, where="rubrics/lab1.yaml")
    render_summary(grades, runs={}, out_dir=tmp_path, pdf=False, lateness=view)
    html = (tmp_path / "summary.html").read_text()
    block = html[html.index("Deadline and submission times"):html.index("Needs a TA")]
    assert "2018-09-30 23:59 +08:00" in block and "rubrics/lab1.yaml" in block
    assert "the archive file&#39;s modification time (3)" in block and "unknown (no time recorded) (1)" in block
    assert "3 of 4 submissions are about 8 years past the deadline" in block
    assert "1 submission(s) have no known time" in block
    assert "past-max-days" in html[html.index("What the flags mean"):]


def test_grade_command_says_it_before_grading(tmp_path: Path, capsys, monkeypatch) -> None:
    """`dllab grade` prints the warning on stderr before any submission is graded."""
    import grader.batch as batch
    from grader.cli import main

    inc = tmp_path / "in"
    fx.good_zip(inc, "0556001")
    before_grading: list[str] = []
    monkeypatch.setattr(batch, "run_local", lambda todo, settings, **kw: before_grading.append(capsys.readouterr().err))
    code = main(["grade", str(inc), "--lab", "lab1", "--mode", "saved", "--out", str(tmp_path / "out"), "--no-pdf"])
    assert code == 0 and len(before_grading) == 1
    assert "warning: every submission is about" in before_grading[0]
    assert "years past the deadline in the rubric (2018-09-30 23:59 +08:00)" in before_grading[0]
