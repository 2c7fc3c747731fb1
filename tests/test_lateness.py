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
EXAMPLE_DEADLINE = dt.datetime(2018, 9, 30, 23, 59, tzinfo=TW)  # labs/lab1/rubric.yaml's
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
    assert "time-unknown" not in g["flags"], "the time is known to be wrong, not unknown (tester 1's 12)"
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


# --------------------------------------------------------------------------- the warning's advice works (tester 1's 4, 5)


def _grade_cli(inc: Path, out: Path, *extra: str) -> dict[str, dict]:
    import json

    from grader.cli import main

    assert main(["grade", str(inc), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf",
                 "--workers", "1", *extra]) == 0
    return {p.stem: json.loads(p.read_text()) for p in (out / "grades").glob("*.json")}


def _csv(path: Path, rows: dict[str, str]) -> Path:
    path.write_text("student_id,submitted_at\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    return path


def test_submitted_at_given_to_an_already_graded_folder_is_applied(tmp_path: Path, capsys) -> None:
    """Tester 1's 4a: `grade --submitted-at` after a first grade printed "2 already graded, 0 to
    grade" and kept the file-time lateness. The stored runs are scored again with the CSV's
    times (nothing is run again), a plain rerun keeps them, and a new CSV replaces them."""
    inc, out = tmp_path / "in", tmp_path / "out"
    for sid in ("0556001", "0556002"):
        fx.good_zip(inc, sid, mtime=NOW.timestamp())  # copied today: years after the 2018 deadline
    first = _grade_cli(inc, out)
    assert all("late" in g["flags"] for g in first.values())
    runs_before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/evidence.json")}
    on_time = _csv(tmp_path / "lms.csv", {"0556001": "2018-09-29T12:00:00+08:00", "0556002": "2018-10-01T12:00:00+08:00"})
    capsys.readouterr()
    second = _grade_cli(inc, out, "--submitted-at", str(on_time))
    err = capsys.readouterr().err
    assert "2 already graded student(s) have a new submission time" in err
    assert "late" not in second["0556001"]["flags"] and second["0556001"]["submitted_at_source"] == "submitted-at-csv"
    assert second["0556002"]["late"]["days_late"] == 1 and "late" in second["0556002"]["flags"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/evidence.json")} == runs_before, "nothing ran again"
    import csv

    row = next(r for r in csv.DictReader((out / "grades.csv").open()) if r["student_id"] == "0556001")
    assert "late" not in row["flags"].split(";") and row["late_penalty"] == "0", row
    third = _grade_cli(inc, out)  # resuming without the CSV keeps its times
    assert "the --submitted-at times given before (2 student(s)) are kept" in capsys.readouterr().err
    assert third["0556001"]["submitted_at_source"] == "submitted-at-csv"
    late = _csv(tmp_path / "late.csv", {"0556001": "2018-10-02T12:00:00+08:00", "0556002": "2018-10-01T12:00:00+08:00"})
    fourth = _grade_cli(inc, out, "--submitted-at", str(late))
    assert fourth["0556001"]["late"]["days_late"] == 2 and fourth["0556002"] == third["0556002"]


def test_submitted_at_rows_are_matched_ignoring_leading_zeros_and_the_rest_reported() -> None:
    """Tester 1's 5: Excel wrote 110001 for 0110001; such rows match by number, a row naming
    nobody and a student without a row are both said."""
    from grader.config import match_submitted_at

    times = {"110001": "2026-11-20T10:00:00+08:00", "0110002": "2026-11-20T11:00:00+08:00",
             "999999": "2026-11-20T12:00:00+08:00"}
    out, warnings = match_submitted_at(times, ["0110001", "0110002", "0110003"])
    assert out["0110001"] == times["110001"] and out["0110002"] == times["0110002"] and "110001" not in out
    assert any("110001 -> 0110001" in w and "leading zeros" in w for w in warnings)
    assert any(w.startswith("1 --submitted-at row(s) match no submission") and "999999" in w for w in warnings)
    assert any(w.startswith("1 submission(s) have no row in --submitted-at") and "0110003" in w for w in warnings)
    # ambiguous by number (00123 and 0123 both in the batch): not guessed
    out, warnings = match_submitted_at({"123": "2026-11-20T10:00:00+08:00"}, ["00123", "0123"])
    assert "00123" not in out and "0123" not in out and any("match no submission" in w for w in warnings)
    assert match_submitted_at({"0123": "2026-11-20T10:00:00+08:00"}, ["0123"]) == (
        {"0123": "2026-11-20T10:00:00+08:00"}, [])


def test_submitted_at_without_leading_zeros_reaches_the_grade(tmp_path: Path, capsys) -> None:
    inc, out = tmp_path / "in", tmp_path / "out"
    fx.good_zip(inc, "0110001", mtime=NOW.timestamp())
    fx.good_zip(inc, "0110002", mtime=NOW.timestamp())
    csv_path = _csv(tmp_path / "n1.csv", {"110001": "2018-09-29T12:00:00+08:00", "110002": "2018-09-29T12:00:00+08:00",
                                          "110009": "2018-09-29T12:00:00+08:00"})
    grades = _grade_cli(inc, out, "--submitted-at", str(csv_path))
    err = capsys.readouterr().err
    assert "match no submission in this batch" in err and "110009" in err and "matched by number" in err
    assert all(g["submitted_at_source"] == "submitted-at-csv" and "late" not in g["flags"] for g in grades.values())


def test_an_lms_download_all_zip_is_graded_as_its_students(tmp_path: Path, capsys) -> None:
    """Tester 1's 4b: the download-all zip, given itself or in the folder given, is the class's
    submissions (with Moodle's upload times), not one `unknown-...` student; a rerun reuses the
    extraction and grades nothing again."""
    inc = tmp_path / "in"
    inc.mkdir()
    fx.moodle_bundle(inc, {"0556001": ("陳偉", "111"), "0556002": ("Lin Mei", "222")},
                     uploaded=(2018, 9, 29, 12, 0, 0))
    grades = _grade_cli(inc, tmp_path / "out")
    assert sorted(grades) == ["0556001", "0556002"]
    assert all(g["submitted_at_source"] == "lms-archive-entry" and "late" not in g["flags"] for g in grades.values())
    assert "download of all submissions" in capsys.readouterr().err
    again = _grade_cli(inc, tmp_path / "out")
    assert "2 already graded, 0 to grade" in capsys.readouterr().err and again == grades
    direct = _grade_cli(next(inc.glob("*.zip")), tmp_path / "out2")
    assert sorted(direct) == ["0556001", "0556002"]


def test_two_archives_copied_together_are_said_to_be_copy_times() -> None:
    """Tester 1's 12 (sN3): two freshly copied zips were each charged 2 days late, no warning."""
    deadline = NOW - dt.timedelta(days=2)
    two = [When(NOW - dt.timedelta(seconds=s), "file-mtime") for s in (0, 0.004)]
    [msg] = batch_warnings(deadline, POLICY, two, now=NOW)
    assert msg.startswith("all 2 archive times lie within 0 s of each other") and "copied" in msg
    apart = [When(NOW - dt.timedelta(hours=h), "file-mtime") for h in (1, 30)]
    assert batch_warnings(deadline, POLICY, apart, now=NOW) == []
    assert batch_warnings(deadline, POLICY, two[:1], now=NOW) == [], "one time alone cannot tell"


def test_rescore_with_a_new_rubric_on_a_copied_folder_uses_the_new_rubric(tmp_path: Path) -> None:
    """Tester 1's 12 (oN6r): settings.json held the original folder's absolute rubric path, so
    `rescore COPY --rubric new.yaml` scored with the original's rubric while the summary showed
    the new deadline. The copy's grades follow the new rubric; the original is left alone."""
    import json
    import shutil

    from grader.cli import main

    inc, first = tmp_path / "in", tmp_path / "out"
    fx.good_zip(inc, "0556001", mtime=dt.datetime(2018, 10, 2, 12, tzinfo=dt.timezone.utc).timestamp())
    assert _grade_cli(inc, first)["0556001"]["late"]["days_late"] == 2
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    text = Path(builtin_rubric("lab1")).read_text(encoding="utf-8")
    new = tmp_path / "new.yaml"
    new.write_text(text.replace("deadline: 2018-09-30T23:59:00+08:00", "deadline: 2018-10-05T23:59:00+08:00"),
                   encoding="utf-8")
    assert main(["rescore", str(copy), "--rubric", str(new), "--no-pdf", "--workers", "1"]) == 0
    assert json.loads((copy / "grades" / "0556001.json").read_text())["late"]["days_late"] == 0
    assert main(["rescore", str(copy), "--no-pdf", "--workers", "1"]) == 0  # and it stays the copy's rubric
    assert json.loads((copy / "grades" / "0556001.json").read_text())["late"]["days_late"] == 0
    assert "2018-10-05" in (copy / "rubric.yaml").read_text() and "2018-10-05" not in (first / "rubric.yaml").read_text()
    assert json.loads((first / "grades" / "0556001.json").read_text())["late"]["days_late"] == 2


def test_submitted_at_ids_written_as_decimal_numbers_are_matched() -> None:
    """Re-tester's 11: Excel wrote `150001.0` for 0150001; it was only warned about."""
    from grader.config import match_submitted_at

    at = "2026-11-20T10:00:00+08:00"
    out, warnings = match_submitted_at({"150001.0": at, "0150002.00": at, "150003": at},
                                       ["0150001", "0150002", "0150003"])
    assert out == {"0150001": at, "0150002": at, "0150003": at}
    assert len(warnings) == 1 and "150001.0 -> 0150001" in warnings[0] and "decimal number" in warnings[0]
    # a number that is not an id with a zero fraction is not read as one
    out, warnings = match_submitted_at({"150001.5": at}, ["0150001"])
    assert "0150001" not in out and any("match no submission" in w for w in warnings)


def test_a_new_csv_keeps_earlier_times_of_students_it_does_not_list(tmp_path: Path) -> None:
    """Re-tester's 11: a second CSV listing one student dropped the earlier rows of the others,
    who fell back to file times while the log said they had a new time."""
    from grader.config import merge_submitted_at, prepare, read_submitted_at

    times, kept = merge_submitted_at({"0150001": "2026-11-24T10:00:00+08:00", "0150002": "2026-11-24T10:00:00+08:00"},
                                     {"150001.0": "2026-11-20T10:00:00+08:00"})
    assert times == {"0150002": "2026-11-24T10:00:00+08:00", "150001.0": "2026-11-20T10:00:00+08:00"}
    assert kept == ["0150002"]
    # through prepare, as `grade --submitted-at` on a graded folder does
    out = tmp_path / "out"
    first = _csv(tmp_path / "a.csv", {"0150001": "2026-11-24T10:00:00+08:00", "0150002": "2026-11-24T10:00:00+08:00"})
    said: list[str] = []

    def again(csv: Path):
        return prepare(lab="lab1", rubric=None, out=out, data_args={}, reference=None, mode="saved",
                       sandbox="none", pdf=False, submitted_at=csv, log=said.append)

    again(first)
    second = again(_csv(tmp_path / "b.csv", {"0150003": "2026-11-20T10:00:00+08:00"}))
    assert second.submitted_at == {**read_submitted_at(first), "0150003": "2026-11-20T10:00:00+08:00"}
    assert any("b.csv lists 1 student id(s)" in s and "2 student(s) it does not list are kept: 0150001, 0150002" in s
               for s in said), said


def test_moodle_bundle_times_are_read_in_the_deadline_zone_when_grading(tmp_path: Path, capsys) -> None:
    """Re-tester's 3: an upload stamped 23:30 in the bundle (29 min before the 23:59+08:00
    deadline) was read as UTC and charged a day late; a 00:10 upload is 11 minutes late."""
    import io
    import zipfile

    inc, out = tmp_path / "in", tmp_path / "out"
    inc.mkdir()
    with zipfile.ZipFile(inc / "LAB01-Lab 1-1234567.zip", "w") as zf:  # lab1's deadline: 2018-09-30T23:59+08:00
        for sid, pid, when in (("0556001", "111", (2018, 9, 30, 23, 30, 0)), ("0556002", "222", (2018, 10, 1, 0, 10, 0))):
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as z:
                for name, data in fx.good_members():
                    z.writestr(name, data)
            zf.writestr(zipfile.ZipInfo(f"Student {pid}_{pid}_assignsubmission_file_/dllab_{sid}.zip", when),
                        inner.getvalue())
    grades = _grade_cli(inc, out)
    assert sorted(grades) == ["0556001", "0556002"]
    on_time, late = grades["0556001"], grades["0556002"]
    assert on_time["submitted_at_source"] == "lms-archive-entry" and "late" not in on_time["flags"]
    assert dt.datetime.fromisoformat(on_time["submitted_at"]) == dt.datetime(
        2018, 9, 30, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert late["late"]["days_late"] == 1 and "late" in late["flags"]
    assert "archive times (upload times, stored without a time zone) are read in the deadline's time zone (+08:00)" \
        in capsys.readouterr().err


def test_the_summary_says_bundle_times_are_read_in_the_deadline_zone() -> None:
    from grader.lateness import sources

    assert sources([When(NOW, "lms-archive-entry")]) == [
        ("the LMS download's upload time (archive times, read in the deadline's time zone)", 1)]
