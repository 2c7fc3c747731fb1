"""Rubric loading: the shipped LAB01 rubric, and every kind of mistake a TA can make."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from grader.errors import GraderError
from grader.checks import KINDS
from grader.checks.params import PerClassAccuracy
from grader.rubric import (RubricError, builtin_rubric, load_rubric, load_rubric_text, parse_duration, parse_size,
                           summarize)

VALID = textwrap.dedent("""\
    lab: demo
    title: Demo lab
    deadline: 2018-09-30T23:59:00+08:00
    late: {grace_minutes: 5, per_day_percent: 10, max_days: 3, after_max: zero}
    datasets:
      cifar10: {mount: [/tmp/datasets-nctu]}
    limits: {memory: 2GiB, cell_timeout: 90s, wall_timeout: 1h30m}
    total: 10
    parts:
      - id: p1
        title: Part one
        points: 10
        notebook: {dataset: cifar10, patterns: ["*1*"]}
        items:
          - id: per-class
            title: Per class
            check: per_class_accuracy
            params: {dataset: cifar10, classes: 10}
            points: 6
            feedback: {pass: good, partial: some, fail: none}
          - id: by-hand
            title: By hand
            check: manual
            hint: lr_study
            points: 4
    bonus:
      cap: 2
      items:
        - {id: extra, title: Extra, check: files_present, params: {patterns: ["*.pdf"]}, points: 3}
    """)


def problems(text: str, **kw) -> list[str]:
    with pytest.raises(RubricError) as info:
        load_rubric_text(text, name="r.yaml", **kw)
    assert str(info.value).startswith("r.yaml: ")
    return [str(p) for p in info.value.problems]


def edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


def test_valid_rubric_loads_into_typed_models():
    r = load_rubric_text(VALID)
    assert r.lab == "demo" and r.max_points == 10
    assert r.deadline == datetime(2018, 9, 30, 23, 59, tzinfo=timezone(timedelta(hours=8)))
    assert r.limits.memory == 2 * 1024**3 and r.limits.cell_timeout == 90 and r.limits.wall_timeout == 5400
    assert r.limits.processes == 256  # default
    assert r.submission.pattern == "dllab_{student_id}.zip"
    item = r.parts[0].items[0]
    assert item.params == PerClassAccuracy(dataset="cifar10", classes=10) and item.feedback.pass_ == "good"
    assert item.params.min_fraction == 1.0  # the default the check applies, now in the params model
    assert r.parts[0].items[1].hint.check == "lr_study"
    assert [i.id for _, i in r.all_items()] == ["per-class", "by-hand", "extra"]
    assert r.bonus.cap == 2
    with pytest.raises(Exception):
        r.lab = "other"  # frozen


def test_lab1_rubric_follows_the_handout():
    r = load_rubric(builtin_rubric("lab1"))
    assert [(p.id, p.points) for p in r.parts] == [("lab1-1", 60), ("lab1-2", 35), ("lab1-3", 5)]
    assert r.max_points == 100 and r.total == 100 and r.bonus.cap == 5
    assert r.deadline.isoformat() == "2018-09-30T23:59:00+08:00"
    weights = r.item("lab1-1-weights")
    assert weights.params.layers == ("conv1", "conv2", "fc1", "fc2", "fc3") and weights.params.require_bias
    # the handout's three asks carry most of LAB 1-1
    asks = sum(r.item(i).points for i in ("lab1-1-weights", "lab1-1-test-metrics", "lab1-1-per-class"))
    assert asks >= 45
    assert r.item("lab1-1-test-metrics").params.test_images == 10000
    assert r.item("lab1-2-model").params.num_outputs == 11
    assert r.item("lab1-3-justification").check == "manual"
    assert r.item("bonus-normalization").params.tolerance == 0.02
    assert set(r.datasets) == {"cifar10", "food11"}
    assert r.submission.pattern == "dllab_{student_id}.zip"
    text = summarize(r)
    assert "3 parts, 14 items, 100 points + bonus 5" in text and "lab1-1-per-class" in text


def test_builtin_rubric_unknown_lab_suggests():
    with pytest.raises(GraderError, match="did you mean `lab1`"):
        builtin_rubric("lab11")


def test_every_check_kind_validates_with_its_own_model():
    # the rubric's items carry their kind's params model, and a hint can name any scored kind
    r = load_rubric(builtin_rubric("lab1"))
    for _, item in r.all_items():
        assert type(item.params) is KINDS[item.check].params
    got = problems(edit("hint: lr_study", "hint: custom"))
    assert len(got) == 1 and got[0].startswith("parts[0].items[1].hint.check (line 24): unknown hint check kind `custom`")


def test_typo_in_key_names_path_and_suggests():
    got = problems(edit("        points: 6\n", "        poitns: 6\n"))
    assert any("parts[0].items[0].poitns (line 19): unknown key `poitns`; did you mean `points`?" in p for p in got)


def test_typo_in_nested_key_and_feedback_alias():
    got = problems(edit("{pass: good,", "{pas: good,"))
    assert got == ["parts[0].items[0].feedback.pas (line 20): unknown key `pas`; did you mean `pass`?"]
    got = problems(edit("late: {grace_minutes: 5", "late: {grace_minute: 5"))
    assert got == ["late.grace_minute (line 4): unknown key `grace_minute`; did you mean `grace_minutes`?"]


def test_unknown_check_kind_suggests_known_one():
    got = problems(edit("check: per_class_accuracy", "check: per_class_acuracy"))
    assert got == ["parts[0].items[0].check (line 17): unknown check kind `per_class_acuracy`; "
                   "did you mean `per_class_accuracy`?"]


def test_unknown_and_bad_params():
    got = problems(edit("{dataset: cifar10, classes: 10}", "{dataset: cifar10, clases: 10}"))
    assert got == ["parts[0].items[0].params.clases (line 18): unknown param `clases` for check "
                   "`per_class_accuracy`; did you mean `classes`?"]
    got = problems(edit("{dataset: cifar10, classes: 10}", "{dataset: cifar10, classes: ten}"))
    assert got == ["parts[0].items[0].params.classes (line 18): expected a whole number ≥ 2, got 'ten'"]


def test_accuracy_vs_reference_params():
    base = edit("check: per_class_accuracy\n        params: {dataset: cifar10, classes: 10}",
                "check: accuracy_vs_reference\n        params: {floor: 0.2, band: BAND, reference_part: p1}")
    assert load_rubric_text(base.replace("BAND", "reference")).parts[0].items[0].params.band == "reference"
    assert load_rubric_text(base.replace("BAND", "0.05")).parts[0].items[0].params.band == 0.05
    got = problems(base.replace("BAND", "wide"))
    assert got == ['parts[0].items[0].params.band (line 18): expected "reference" or a number between 0 and 1, '
                   "got 'wide'"]
    got = problems(base.replace("BAND", "0.05").replace("floor: 0.2", "floor: 20"))
    assert "params.floor" in got[0] and "between 0 and 1" in got[0]
    got = problems(base.replace("BAND", "0.05").replace("reference_part: p1", "reference_part: p2"))
    assert got[0].startswith("parts[0].items[0].params.reference_part (line 18): no part `p2`")
    # without reference_part the item compares with its own part's reference (the check's default)
    assert load_rubric_text(base.replace("BAND", "0.05").replace(", reference_part: p1", "")) \
        .parts[0].items[0].params.reference_part is None
    got = problems(base.replace("BAND", "0.05").replace(", dataset", ", datset").replace(
        "reference_part: p1", "reference_part: p1, datset: cifar10"))
    assert got == ["parts[0].items[0].params.datset (line 18): unknown param `datset` for check "
                   "`accuracy_vs_reference`; did you mean `dataset`?"]


def test_required_param_missing_and_kind_without_params():
    custom = edit("check: per_class_accuracy\n        params: {dataset: cifar10, classes: 10}",
                  "check: custom\n        params: {args: {n: 1}}")
    got = problems(custom, base_dir=Path("."))
    assert got == ["parts[0].items[0].params.function (line 18): check `custom` requires param `function`"]
    got = problems(edit("check: manual\n", "check: manual\n        params: {mesage: hi}\n"))
    assert got == ["parts[0].items[1].params.mesage (line 24): unknown param `mesage` for check `manual`; "
                   "did you mean `message`?"]
    got = problems(edit("{patterns: [\"*.pdf\"]}", "{patterns: [\"*.pdf\", \"\"]}"))
    assert got == ["bonus.items[0].params.patterns (line 29): expected a non-empty list of text, got ['*.pdf', '']"]


def test_choice_params_name_the_bad_entry():
    norm = edit("check: per_class_accuracy\n        params: {dataset: cifar10, classes: 10}",
                "check: normalization\n        params: {dataset: cifar10, reject: [half, imagenett]}")
    got = problems(norm)
    assert got == ["parts[0].items[0].params.reject[1] (line 18): unknown entry `imagenett`; did you mean `imagenet`?"]
    got = problems(norm.replace("reject: [half, imagenett]", "reject: [half], dataset: food11"))
    assert any("params.dataset" in p and "key `dataset` appears twice" in p for p in got)
    got = problems(norm.replace("{dataset: cifar10, reject", "{dataset: food11, reject").replace(", imagenett", ""))
    assert got[0].startswith("parts[0].items[0].params.dataset (line 18): dataset `food11` is not declared")
    metrics = edit("check: per_class_accuracy\n        params: {dataset: cifar10, classes: 10}",
                   "check: test_metrics\n        params: {require: [accuracy, los], test_images: 1.5}")
    got = problems(metrics)  # the first problem, in the order the kind declares its params
    assert got == ["parts[0].items[0].params.test_images (line 18): expected a whole number ≥ 1, got 1.5"]
    got = problems(metrics.replace("1.5", "500"))
    assert got == ["parts[0].items[0].params.require[1] (line 18): unknown entry `los`; did you mean `loss`?"]



@pytest.mark.parametrize("value", ["8 GB", "8GB", "eight", "-1", "8 gib"])
def test_bad_size_unit(value):
    got = problems(edit("memory: 2GiB", f"memory: {value}"))
    assert len(got) == 1 and got[0].startswith("limits.memory (line 7): expected a size such as 512MiB or 8GiB")
    if value == "8 GB":
        assert "did you mean `8GiB`?" in got[0]


def test_bad_duration_unit():
    got = problems(edit("cell_timeout: 90s", "cell_timeout: 90 min"))
    assert got == ["limits.cell_timeout (line 7): expected a duration such as 90s, 30m, 2h or 1h30m "
                   "(units s, m, h), got '90 min'"]


def test_units():
    assert parse_size("512MiB") == 512 * 1024**2 and parse_size(1000) == 1000 and parse_size("1.5 KiB") == 1536
    assert parse_duration("1h30m") == 5400 and parse_duration("2h") == 7200 and parse_duration(45) == 45


def test_negative_points():
    got = problems(edit("points: 6", "points: -6"))
    assert "parts[0].items[0].points (line 19): expected a number ≥ 0, got -6" in got


def test_points_not_summing_names_the_part():
    got = problems(edit("points: 6", "points: 5"))
    assert got == ["parts[0].points (line 12): the items of part `p1` add up to 9 but the part is worth 10"]


def test_total_mismatch():
    got = problems(edit("total: 10", "total: 100"))
    assert got == ["total (line 8): the parts add up to 10 but total is 100"]


def test_missing_required_key():
    got = problems(edit("        title: Per class\n", ""))
    assert got == ["parts[0].items[0].title (line 15): required key is missing"]
    got = problems(edit("lab: demo\n", ""))
    assert got == ["lab (line 1): required key is missing"]


def test_wrong_types():
    got = problems(edit("points: 6", 'points: "6"'))
    assert "parts[0].items[0].points (line 19): expected a number, got '6'" in got
    got = problems(edit("points: 6", "points: true"))
    assert "parts[0].items[0].points (line 19): expected a number, got True" in got
    got = problems(edit("patterns: [\"*1*\"]", "patterns: \"*1*\""))
    assert got == ["parts[0].notebook.patterns (line 13): expected a list, got '*1*'"]


def test_deadline_needs_timezone():
    got = problems(edit("2018-09-30T23:59:00+08:00", "2018-09-30T23:59:00"))
    assert got == ["deadline (line 3): the deadline needs a timezone offset, e.g. 2018-09-30T23:59:00+08:00"]
    got = problems(edit("2018-09-30T23:59:00+08:00", '"next monday"'))
    assert got[0].startswith("deadline (line 3): expected an ISO date-time")


def test_undeclared_dataset_suggests():
    got = problems(edit("{dataset: cifar10, patterns", "{dataset: cifar100, patterns"))
    assert got == ["parts[0].notebook.dataset (line 13): dataset `cifar100` is not declared under `datasets`; "
                   "did you mean `cifar10`?"]


def test_duplicate_ids_and_keys():
    got = problems(edit("id: by-hand", "id: per-class"))
    assert got == ["parts[0].items[1].id (line 21): item id `per-class` is already used in part `p1`"]
    got = problems(edit("total: 10\n", "total: 10\ntotal: 10\n"))
    assert got == ["total (line 9): key `total` appears twice"]


def test_hint_only_on_manual_items_and_not_manual_itself():
    got = problems(edit("        hint: lr_study\n", "        hint: manual\n"))
    assert got[0].startswith("parts[0].items[1].hint.check (line 24): unknown hint check kind `manual`")
    got = problems(edit("check: per_class_accuracy", "check: per_class_accuracy\n        hint: lr_study"))
    assert got == ["parts[0].items[0].hint (line 18): `hint` is only for items with `check: manual`"]


def test_bonus_cap_must_be_reachable():
    got = problems(edit("cap: 2", "cap: 4"))
    assert got == ["bonus.cap (line 27): cap 4 is more than the bonus items' 3 points"]


def test_submission_pattern_needs_student_id():
    got = problems(edit("title: Demo lab\n", "title: Demo lab\nsubmission: {pattern: 'dllab_{id}.zip'}\n"))
    assert got[0].startswith("submission.pattern (line 3): expected a file name with `{student_id}` once")


def test_several_problems_reported_together():
    text = edit("points: 6", "poitns: 6").replace("check: manual", "check: manul")
    with pytest.raises(RubricError) as info:
        load_rubric_text(text, name="r.yaml")
    assert str(info.value).startswith("r.yaml: 3 problems:\n")
    assert len(info.value.problems) == 3


def custom_rubric(function: str) -> str:
    return edit("check: manual\n        hint: lr_study",
                f"check: custom\n        params: {{function: \"{function}\"}}")


def test_custom_check_file_next_to_rubric(tmp_path: Path):
    (tmp_path / "rubric").mkdir()
    marker = tmp_path / "imported"
    (tmp_path / "rubric" / "checks_extra.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    path = tmp_path / "rubric" / "lab.yaml"
    path.write_text(custom_rubric("checks_extra.py:my_check"))
    r = load_rubric(path)
    assert r.custom_function(r.item("by-hand")) == ((tmp_path / "rubric" / "checks_extra.py").resolve(), "my_check")
    assert not marker.exists()  # validating never imports the file
    assert r.source == str(path)


def test_custom_check_file_outside_folder_or_missing(tmp_path: Path):
    (tmp_path / "rubric").mkdir()
    (tmp_path / "evil.py").write_text("")
    path = tmp_path / "rubric" / "lab.yaml"
    path.write_text(custom_rubric("../evil.py:f"))
    with pytest.raises(RubricError, match=r"params\.function \(line 24\): \.\./evil\.py is outside the rubric's folder"):
        load_rubric(path)
    path.write_text(custom_rubric("nothere.py:f"))
    with pytest.raises(RubricError, match="nothere.py does not exist"):
        load_rubric(path)
    path.write_text(custom_rubric("checks.py"))
    with pytest.raises(RubricError, match='expected a reference "file.py:function"'):
        load_rubric(path)


def test_not_yaml_or_not_a_mapping():
    assert problems("lab: [unclosed\n")[0].startswith("(top level) (line 2): not valid YAML")
    assert problems("- a\n- b\n") == ["(top level): expected a mapping with keys lab, title, parts, ..."]


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(GraderError, match="cannot read rubric"):
        load_rubric(tmp_path / "missing.yaml")


def test_a_class_count_the_registered_dataset_does_not_have_is_a_load_error():
    """T14 #6: `classes: 2` on a 10-class dataset passed validation and was an error for every student."""
    got = problems(edit("{dataset: cifar10, classes: 10}", "{dataset: cifar10, classes: 2}"))
    assert got == ["parts[0].items[0].params.classes (line 18): dataset `cifar10` has 10 classes, not 2: "
                   "fix `classes` or the dataset"]
    # same kind: no `dataset` on the item, so the part's notebook dataset is the one counted
    got = problems(edit("{dataset: cifar10, classes: 10}", "{classes: 11}"))
    assert got == ["parts[0].items[0].params.classes (line 18): dataset `cifar10` (the part's notebook dataset) "
                   "has 10 classes, not 11: fix `classes` or the dataset"]
    assert load_rubric_text(edit("{dataset: cifar10, classes: 10}", "{classes: 10}"), name="r.yaml")
    load_rubric(builtin_rubric("lab1"))  # LAB01's class counts are its datasets'


def test_a_lab_that_asks_for_no_report_file_raises_no_no_report_problem(tmp_path: Path) -> None:
    """`submission.report: false` (Lab 4A/4B: the notebook is the whole submission): the intake's
    `no-report` problem is dropped by the pipeline; the default keeps asking for one."""
    import zipfile

    from grader.intake import unpack
    from grader.intake.discover import discover
    from grader.rubric import load_rubric

    assert load_rubric(Path("labs/lab1/rubric.yaml")).submission.report is True
    assert load_rubric(Path("labs/lab4a/rubric.yaml"), base_dir=Path("labs/lab4a")).submission.report is False
    z = tmp_path / "in" / "dllab_0440001.zip"
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("lab4a.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    sub = unpack(discover([z])[0], tmp_path / "work")
    assert "no-report" in [p.code for p in sub.problems]
    from grader.pipeline import problems_for_lab

    lab4a = load_rubric(Path("labs/lab4a/rubric.yaml"), base_dir=Path("labs/lab4a"))
    assert "no-report" not in [p.code for p in problems_for_lab(sub.problems, lab4a)]
    assert "no-report" in [p.code for p in problems_for_lab(sub.problems, load_rubric(Path("labs/lab1/rubric.yaml")))]
