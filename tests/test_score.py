"""Scoring arithmetic: partial credit, missing results, manual items, overrides, bonus, lateness."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from grader.errors import GraderError
from grader.rubric import builtin_rubric, load_rubric, load_rubric_text
from grader.score import CheckResult, Grade, Override, load_overrides, score

TW = timezone(timedelta(hours=8))
DEADLINE = datetime(2018, 9, 30, 23, 59, tzinfo=TW)

RUBRIC = load_rubric_text(textwrap.dedent("""\
    lab: demo
    title: Demo
    deadline: 2018-09-30T23:59:00+08:00
    late: {grace_minutes: 10, per_day_percent: 10, max_days: 3, after_max: zero}
    parts:
      - id: p1
        title: Part one
        points: 60
        items:
          - {id: a, title: A, check: ran_without_errors, points: 30}
          - {id: b, title: B, check: per_class_accuracy, points: 30}
      - id: p2
        title: Part two
        points: 40
        items:
          - {id: c, title: C, check: test_metrics, points: 10}
          - {id: d, title: D, check: manual, hint: lr_study, points: 30}
          - {id: info, title: Info, check: report_sections, params: {sections: [Results]}, points: 0}
    bonus:
      cap: 5
      items:
        - {id: e, title: E, check: normalization, params: {dataset: food11, tolerance: 0.02}, points: 5}
        - {id: f, title: F, check: files_present, params: {patterns: ["*.pdf"]}, points: 3}
    datasets: {food11: {mount: [/tmp/datasets-nctu/Food-11]}}
    """))
AUTO = ("a", "b", "c", "info", "e", "f")


def results(**fractions: float) -> dict[str, CheckResult]:
    """Every automatic item passed, except those given a fraction (0 = fail)."""
    out = {}
    for item_id in AUTO:
        f = fractions.get(item_id, 1.0)
        status = "pass" if f == 1 else "fail" if f == 0 else "partial"
        out[item_id] = CheckResult(item_id, status, f, f"{item_id} checked", (f"cell {len(out)}",))
    return out


def grade(res=None, *, at: datetime | None = DEADLINE, overrides=(), flags=(), rubric=RUBRIC) -> Grade:
    return score(rubric, results() if res is None else res, student_id="0756001", submitted_at=at,
                 submitted_at_source="lms", overrides=overrides, flags_in=flags)


def item(g: Grade, item_id: str):
    groups = list(g.parts) + ([g.bonus] if g.bonus else [])
    return next(i for p in groups for i in p.items if i.id == item_id)


def test_full_marks_except_pending_manual_item():
    g = grade()
    assert [p.points for p in g.parts] == [60, 10]
    assert g.bonus.points == 5 and g.bonus.max == 5          # 5 + 3 capped at 5
    assert g.total == 75 and g.max == 100
    assert g.flags == ("manual-pending",)
    d = item(g, "d")
    assert d.status == "manual" and d.points == 0 and d.message == "graded by hand; the TA has not entered points yet"
    assert g.late.minutes_late == 0 and g.late.penalty_points == 0 and g.late.source == "lms"


def test_full_marks_with_manual_override():
    g = grade(overrides=[Override("0756001", "d", 30, "clear sweep")])
    assert g.total == 105 and g.flags == ("override-applied",)
    d = item(g, "d")
    assert (d.status, d.points, d.overridden, d.comment) == ("pass", 30, True, "clear sweep")


def test_partial_credit_rounds_to_hundredths():
    g = grade(results(a=1 / 3, b=0.5, c=0))
    assert item(g, "a").points == 10.0 and item(g, "a").status == "partial"
    assert item(g, "b").points == 15 and item(g, "c").points == 0 and item(g, "c").status == "fail"
    g = grade(results(c=0.1235))
    assert item(g, "c").points == 1.24


def test_fail_and_error_results_earn_nothing_whatever_their_fraction():
    res = results()
    res["a"] = CheckResult("a", "error", 1.0, "kernel died")
    g = grade(res)
    assert item(g, "a").points == 0 and item(g, "a").status == "error" and item(g, "a").message == "kernel died"


def test_missing_results_are_errors_not_crashes():
    g = grade({})
    for item_id in AUTO:
        it = item(g, item_id)
        assert (it.status, it.points, it.message) == ("error", 0, "no result for this item")
    assert g.total == 0 and item(g, "d").status == "manual"


def test_manual_item_shows_hint_result_to_ta():
    res = results()
    res["d"] = CheckResult("d", "manual", 0.0, "hint: 3 learning rates tried, StepLR")
    assert item(grade(res), "d").message == "hint: 3 learning rates tried, StepLR"
    assert item(grade(res), "d").points == 0


def test_overrides_partial_zero_comment_only_and_other_students():
    g = grade(overrides=[Override("0756001", "d", 12.5, "ok"), Override("0756001", "a", 0, "copied"),
                         Override("0756001", "c", None, "nice plot"), Override("0999999", "b", 0, "")])
    assert (item(g, "d").status, item(g, "d").points) == ("partial", 12.5)
    assert (item(g, "a").status, item(g, "a").points, item(g, "a").overridden) == ("fail", 0, True)
    c = item(g, "c")
    assert (c.points, c.overridden, c.comment, c.status) == (10, False, "nice plot", "pass")
    assert item(g, "b").points == 30  # the other student's override does not apply
    assert g.total == 0 + 30 + 10 + 12.5 + 5


def test_override_reapplied_is_deterministic():
    ovr = [Override("0756001", "d", 20, "ok")]
    first = grade(overrides=ovr).to_json()
    assert grade(overrides=ovr).to_json() == first
    assert grade(overrides=ovr + [Override("0999999", "d", 1, "")]).to_json() == first


def test_bad_overrides_in_code_are_grader_errors():
    with pytest.raises(GraderError, match="did you mean `info`"):
        grade(overrides=[Override("0756001", "inof", 1, "")])
    with pytest.raises(GraderError, match="outside 0..30"):
        grade(overrides=[Override("0756001", "d", 31, "")])
    with pytest.raises(GraderError, match="two overrides"):
        grade(overrides=[Override("0756001", "d", 1, ""), Override("0756001", "d", 2, "")])


def test_bonus_cap_and_partial_bonus():
    assert grade().bonus.points == 5
    g = grade(results(e=0, f=1))
    assert g.bonus.points == 3 and g.bonus.max == 5


@pytest.mark.parametrize("late, minutes, days, penalty, total", [
    (timedelta(0), 0, 0, 0, 105),
    (timedelta(minutes=-600), 0, 0, 0, 105),              # early
    (timedelta(minutes=10), 10, 0, 0, 105),               # within grace
    (timedelta(minutes=10, seconds=1), 11, 1, 10, 95),    # just past grace: day 1
    (timedelta(hours=24), 1440, 1, 10, 95),
    (timedelta(hours=24, minutes=1), 1441, 2, 20, 85),
    (timedelta(days=3), 4320, 3, 30, 75),                 # max_days
    (timedelta(days=3, minutes=1), 4321, 4, 105, 0),      # beyond: after_max zero
])
def test_late_penalty(late, minutes, days, penalty, total):
    g = grade(at=DEADLINE + late, overrides=[Override("0756001", "d", 30, "")])
    assert (g.late.minutes_late, g.late.days_late, g.late.penalty_points, g.total) == (minutes, days, penalty, total)
    assert ("late" in g.flags) == (days > 0)


def test_late_penalty_never_below_zero_and_cap_policy():
    g = grade(results(a=0, b=0, c=0, e=0, f=0), at=DEADLINE + timedelta(days=2))
    assert g.late.penalty_points == 0 and g.total == 0
    capped = RUBRIC.model_copy(update={"late": RUBRIC.late.model_copy(update={"after_max": "cap"})})
    g = grade(at=DEADLINE + timedelta(days=30), rubric=capped)
    assert (g.late.days_late, g.late.penalty_points, g.total) == (30, 30, 45)
    earned = RUBRIC.model_copy(update={"late": RUBRIC.late.model_copy(update={"basis": "earned"})})
    g = grade(at=DEADLINE + timedelta(hours=1), rubric=earned)
    assert (g.late.penalty_points, g.total) == (7.5, 67.5)


def test_deadline_in_another_timezone_and_unknown_time():
    g = grade(at=datetime(2018, 9, 30, 16, 0, tzinfo=timezone.utc))  # 00:00 in Taiwan: 1 minute late
    assert g.late.minutes_late == 1 and g.late.days_late == 0     # within the 10 min grace
    g = grade(at=None)
    assert g.late.minutes_late == 0 and "time-unknown" in g.flags
    with pytest.raises(GraderError, match="no timezone"):
        grade(at=datetime(2018, 10, 1))


def test_flags_sorted_and_deduplicated():
    g = grade(at=DEADLINE + timedelta(days=1), flags=["sandbox-limit", "mismatch", "mismatch", "bad-name"])
    assert g.flags == ("bad-name", "late", "manual-pending", "mismatch", "sandbox-limit")


def test_json_bytes_deterministic_and_round_trip():
    res = results(a=0.5)
    g1 = grade(res, flags=["mismatch", "bad-name"])
    g2 = grade(dict(reversed(list(res.items()))), flags=["bad-name", "mismatch"])
    assert g1.to_json().encode() == g2.to_json().encode()
    text = g1.to_json()
    assert text.index('"bonus"') < text.index('"flags"') < text.index('"parts"')  # sorted keys
    assert Grade.from_json(text) == g1 and Grade.from_json(text).to_json() == text
    cr = res["a"]
    assert CheckResult.from_json(cr.to_json()) == cr


def test_check_result_validation():
    with pytest.raises(ValueError):
        CheckResult("a", "passed", 1.0)
    with pytest.raises(ValueError):
        CheckResult("a", "pass", 1.5)
    with pytest.raises(GraderError, match="filed under"):
        grade({"a": CheckResult("b", "pass", 1.0)})


def test_lab1_full_marks_is_105():
    r = load_rubric(builtin_rubric("lab1"))
    res = {i.id: CheckResult(i.id, "pass", 1.0) for _, i in r.all_items() if i.check != "manual"}
    g = score(r, res, student_id="0756001", submitted_at=datetime(2018, 9, 30, 20, 0, tzinfo=TW),
              submitted_at_source="lms", overrides=[Override("0756001", "lab1-3-justification", 3, "")])
    assert (g.total, g.max, [p.points for p in g.parts], g.bonus.points) == (105, 100, [60, 35, 5], 5)

# --------------------------------------------------------------------------- overrides files


def test_overrides_csv(tmp_path: Path):
    path = tmp_path / "overrides.csv"
    path.write_text("student_id,item_id,points,comment\n0756001,d,25,\"good, mostly\"\n0756002,c,,see me\n")
    assert load_overrides(path, rubric=RUBRIC) == [Override("0756001", "d", 25.0, "good, mostly"),
                                                   Override("0756002", "c", None, "see me")]


def test_overrides_yaml(tmp_path: Path):
    path = tmp_path / "overrides.yaml"
    path.write_text('- {student_id: "0756001", item_id: d, points: 25, comment: ok}\n'
                    '- student_id: "0756002"\n  item_id: e\n  points: 0\n')
    assert load_overrides(path, rubric=RUBRIC) == [Override("0756001", "d", 25.0, "ok"),
                                                   Override("0756002", "e", 0.0, "")]


@pytest.mark.parametrize("name, text, match", [
    ("o.csv", "student_id,item_id,points,comment\n1,a,1,\n2,inof,1,x\n", r"o\.csv:3: unknown item id `inof`; did you mean `info`\?"),
    ("o.yaml", "- {student_id: '1', item_id: a, points: 1}\n- {student_id: '2', item_id: dd, points: 1}\n",
     r"o\.yaml:2: unknown item id `dd`; did you mean `d`\?"),
    ("o.csv", "student_id,item,points,comment\n1,a,1,\n", r"o\.csv:1: unknown column `item`; did you mean `item_id`\?"),
    ("o.csv", "student_id,item_id,points\n1,a,31\n", r"o\.csv:2: points 31 outside 0\.\.30 for item `a`"),
    ("o.csv", "student_id,item_id,points\n1,a,lots\n", r"o\.csv:2: points must be a number or empty"),
    ("o.csv", "student_id,item_id,points\n1,a,1\n1,a,2\n", r"o\.csv:3: a second override for 1/a \(first on line 2\)"),
    ("o.yaml", "- {student_id: 0756001, item_id: a, points: 1}\n", r"o\.yaml:1: student_id must be text"),
    ("o.yaml", "- {student_id: '1', item_id: a, pionts: 1}\n", r"o\.yaml:1: unknown column `pionts`; did you mean `points`\?"),
    ("o.yaml", "student_id: '1'\n", r"o\.yaml: expected a list"),
])
def test_overrides_file_errors(tmp_path: Path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(GraderError, match=match):
        load_overrides(path, rubric=RUBRIC)
