"""labs/lab1/samples: the demo class as files, equal to what grader.samples generates; zipped
as the demo zips them; each sample's expected outcome compared with a grade. No kernel."""

from __future__ import annotations

import os

import pytest

from grader.lab_samples import compare, write_sample
from grader.labs import Expect, Sample, find_lab, load_lab
from grader.samples import lab1_samples, write_archive

DEADLINE = 1538323140.0  # 2018-09-30T23:59:00+08:00, lab1's rubric deadline


@pytest.fixture(scope="module")
def lab1():
    return find_lab("lab1")


def test_lab1_samples_zip_to_the_bytes_grader_samples_writes(lab1, tmp_path):
    """The folders under labs/lab1/samples, zipped, are byte for byte the archives (names, mtimes)
    that grader.samples.write_archive writes: the demo's class and the e2e tests' generator agree."""
    generated = {s.student_id: s for s in lab1_samples(epochs=1)}
    listed = {s.student_id: s for s in lab1.manifest.samples}
    assert list(listed) == list(generated)
    on_disk = sorted(p.name for p in (lab1.dir / "samples").iterdir())
    assert on_disk == sorted(generated), "a sample folder no sample lists, or a listed one missing"
    for sid, gen in generated.items():
        sample = listed[sid]
        assert (sample.archive, sample.outcome, sample.late_days) == (gen.archive, gen.outcome, gen.late_days)
        mtime = DEADLINE - 3600 + gen.late_days * 86400
        want = write_archive(gen, tmp_path / "generated", mtime=mtime)
        got = write_sample(lab1, sample, tmp_path / "folders", deadline_epoch=DEADLINE)
        assert got.name == want.name
        assert got.read_bytes() == want.read_bytes(), f"{sid}: labs/lab1/samples/{sid} differs from grader.samples " \
                                                       f"(regenerate with scripts/make_lab1_samples.py)"
        assert os.stat(got).st_mtime == os.stat(want).st_mtime


def test_lab1_samples_expect_the_baseline_totals(lab1):
    """The demo's grades before labs became data (issue 14's baseline)."""
    assert [(s.student_id, s.expect.total) for s in lab1.manifest.samples] == [
        ("0556001", 102), ("0556002", 84), ("0556003", 79), ("0556004", 40.5), ("0556005", 57.5),
        ("0556006", 0), ("0556007", 82)]
    late = {s.student_id: s.late_days for s in lab1.manifest.samples if s.late_days}
    assert late == {"0556007": 2.0}


def _grade(total, statuses, flags=()):
    items = [{"id": i, "status": s, "points": 1} for i, s in statuses.items()]
    return {"total": total, "parts": [{"id": "p", "items": items[:-1]}],
            "bonus": {"id": "bonus", "items": items[-1:]}, "flags": list(flags)}


def test_compare_names_each_way_a_grade_differs_from_the_expected_outcome():
    s = Sample(student_id="1", archive="dllab_1.zip", folder="samples/1",
               expect=Expect(total=50, items={"a": "pass", "b": "partial", "bonus-x": "fail"}, flags=("late",)))
    assert compare(s, _grade(50, {"a": "pass", "b": "partial", "bonus-x": "fail"}, ["late"])).differences == ()
    diffs = compare(s, _grade(49, {"a": "fail", "b": "partial", "bonus-x": "fail"})).differences
    assert len(diffs) == 3 and "total 49, expected 50" in diffs[0] and "item a" in diffs[1] and "late" in diffs[2]
    diffs = compare(s, _grade(50, {"b": "partial", "bonus-x": "pass"}, ["late"])).differences
    assert len(diffs) == 2 and "item a" in diffs[0] and "item bonus-x" in diffs[1]
    assert compare(s, None).differences and compare(s, None).total is None
    assert compare(Sample(student_id="2", archive="x.zip", folder="s"), _grade(3, {"a": "fail"})).differences == ()


def test_a_sample_whose_folder_is_missing_is_a_lab_error(tmp_path):
    from grader.labs import LabError

    (tmp_path / "lab.yaml").write_text("id: x\ntitle: X\nsamples:\n  - {student_id: '1', archive: a.zip, folder: samples/1}\n")
    pkg = load_lab(tmp_path)
    with pytest.raises(LabError, match="samples/1"):
        write_sample(pkg, pkg.manifest.samples[0], tmp_path / "out", deadline_epoch=None)


def test_samples_are_graded_at_their_stated_times_when_the_deadline_is_ahead(tmp_path):
    """This term's deadline (after now): a late sample is dated after now, yet it is graded at
    its stated time (the --submitted-at way): late, charged, not flagged time-in-future; one on
    time is neither late nor flagged (tester 14's finding 2)."""
    import datetime as dt

    from grader import config
    from grader.lab_samples import sample_time, write_times_csv
    from grader.lateness import When, batch_warnings
    from grader.model import Submission
    from grader.pipeline import GradeSettings, grade_from_runs
    from grader.rubric import builtin_rubric, load_rubric

    deadline = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)).replace(microsecond=0)
    rubric = load_rubric(builtin_rubric("lab1")).model_copy(update={"deadline": deadline})
    late = Sample(student_id="1100001", archive="dllab_1100001.zip", folder="s/1", late_days=2)
    on_time = Sample(student_id="1100002", archive="dllab_1100002.zip", folder="s/2")
    csv = write_times_csv([late, on_time], deadline, tmp_path / "t.csv")
    times = config.read_submitted_at(csv)
    assert dt.datetime.fromisoformat(times["1100001"]) == sample_time(late, deadline) > deadline
    settings = GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path, submitted_at=times)
    grades = {}
    for sid in times:
        sub = Submission(student_id=sid, source=f"dllab_{sid}.zip", source_sha256=None, submitted_at=None,
                         submitted_at_source="unknown", work_dir="/nonexistent", files=(), problems=())
        grades[sid] = grade_from_runs(rubric, sub, [], settings=settings)
    g = grades["1100001"]
    assert "late" in g["flags"] and "time-in-future" not in g["flags"]
    assert g["late"]["days_late"] > 0 and g["submitted_at_source"] == "submitted-at-csv"
    assert not {"late", "time-in-future"} & set(grades["1100002"]["flags"])
    stated = [When(dt.datetime.fromisoformat(t), "submitted-at-csv") for t in times.values()]
    assert not any("later than now" in m for m in batch_warnings(deadline, rubric.late, stated,
                                                                  now=dt.datetime.now(dt.timezone.utc)))
    # A recorded clock (the zip's time) after now is still a wrong clock: flagged, not charged.
    sub = Submission(student_id="1100003", source="dllab_1100003.zip", source_sha256=None,
                     submitted_at=sample_time(late, deadline).isoformat(), submitted_at_source="file-mtime",
                     work_dir="/nonexistent", files=(), problems=())
    g = grade_from_runs(rubric, sub, [], settings=settings)
    assert "time-in-future" in g["flags"] and "late" not in g["flags"]
    assert write_times_csv([late], None, tmp_path / "none.csv") is None
