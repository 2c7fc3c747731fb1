"""The review's decision store: one record per decision, conflicts refused, OUT/overrides.yaml made
from the records and read back by `rescore`'s own loader."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from grader.errors import GraderError
from grader.review.store import Conflict, Decision, DecisionStore

ITEMS = {"just": 3.0, "acc": 16.0, "info": 0.0}


def _store(tmp_path: Path) -> DecisionStore:
    return DecisionStore(tmp_path, max_points=ITEMS)


def _overrides(out: Path) -> list:
    from grader.score import load_overrides

    class R:
        def all_items(self):
            from grader.review.store import _Item
            return [(None, _Item(k, v)) for k, v in ITEMS.items()]

    return load_overrides(out / "overrides.yaml", rubric=R())  # type: ignore[arg-type]


def test_a_decision_is_a_record_and_a_row_of_overrides_yaml(tmp_path: Path) -> None:
    s = _store(tmp_path)
    d = s.decide(kind="item", student_id="0556001", key="just", action="set", points="2.5", comment=" fine ",
                 who="ta1", base=None)
    assert isinstance(d, Decision) and d.points == 2.5 and d.comment == "fine" and d.who == "ta1"
    files = list((tmp_path / "review" / "decisions").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["who"] == "ta1"
    rows = _overrides(tmp_path)
    assert [(o.student_id, o.item_id, o.points, o.comment) for o in rows] == [("0556001", "just", 2.5, "fine")]


def test_a_later_decision_replaces_the_row_and_keeps_the_history(tmp_path: Path) -> None:
    s = _store(tmp_path)
    a = s.decide(kind="item", student_id="7", key="just", action="set", points=1, who="a", base=None)
    assert isinstance(a, Decision)
    b = s.decide(kind="item", student_id="7", key="just", action="set", points=3, comment="after regrade", who="b",
                 base=a.id)
    assert isinstance(b, Decision) and b.base == a.id
    assert [h.points for h in s.history("item", "7", "just")] == [1.0, 3.0]
    assert [(o.points, o.comment) for o in _overrides(tmp_path)] == [(3.0, "after regrade")]


def test_a_save_over_a_decision_it_did_not_see_is_a_conflict_and_writes_nothing(tmp_path: Path) -> None:
    s = _store(tmp_path)
    first = s.decide(kind="item", student_id="7", key="just", action="set", points=2, who="ta1", base=None)
    second = s.decide(kind="item", student_id="7", key="just", action="set", points=0, who="ta2", base=None)
    assert isinstance(second, Conflict) and second.current == first
    assert len(s.records()) == 1 and _overrides(tmp_path)[0].points == 2.0
    # the second TA saw it and saves over it on purpose
    third = s.decide(kind="item", student_id="7", key="just", action="set", points=0, who="ta2", base=first.id)
    assert isinstance(third, Decision) and _overrides(tmp_path)[0].points == 0.0


def test_threads_saving_one_item_at_once_save_exactly_one(tmp_path: Path) -> None:
    s = _store(tmp_path)
    results: list = []
    go = threading.Barrier(8)

    def save(i: int) -> None:
        go.wait()
        results.append(DecisionStore(tmp_path, max_points=ITEMS).decide(
            kind="item", student_id="9", key="acc", action="set", points=i, who=f"ta{i}", base=None))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = [r for r in results if isinstance(r, Decision)]
    assert len(saved) == 1 and sum(isinstance(r, Conflict) for r in results) == 7
    assert len(s.records()) == 1 and _overrides(tmp_path)[0].points == saved[0].points


def _save_in_process(out: str, i: int) -> str:
    r = DecisionStore(Path(out), max_points=ITEMS).decide(kind="item", student_id=f"s{i}", key="just",
                                                          action="set", points=1, who=f"p{i}", base=None)
    return type(r).__name__


def test_processes_saving_different_items_lose_none(tmp_path: Path) -> None:
    _store(tmp_path)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        got = pool.starmap(_save_in_process, [(str(tmp_path), i) for i in range(12)])
    assert got == ["Decision"] * 12
    assert sorted(o.student_id for o in _overrides(tmp_path)) == sorted(f"s{i}" for i in range(12))


@pytest.mark.parametrize("points, why", [("x", "must be a number"), (3.5, "outside 0..3"), (-1, "outside"),
                                         (float("nan"), "outside"), (True, "must be a number"),
                                         (None, "give the points")])
def test_points_a_rubric_would_refuse_are_refused(tmp_path: Path, points: object, why: str) -> None:
    with pytest.raises(GraderError, match=why):
        _store(tmp_path).decide(kind="item", student_id="1", key="just", action="set", points=points, who="t",
                                base=None)
    assert not (tmp_path / "overrides.yaml").exists()


def test_unknown_item_action_or_a_long_comment_is_refused(tmp_path: Path) -> None:
    s = _store(tmp_path)
    with pytest.raises(GraderError, match="unknown rubric item `jsut`"):
        s.decide(kind="item", student_id="1", key="jsut", action="set", points=1, who="t", base=None)
    with pytest.raises(GraderError, match="one of reviewed, clear"):
        s.decide(kind="flag", student_id="1", key="late", action="set", points=1, who="t", base=None)
    with pytest.raises(GraderError, match="at most"):
        s.decide(kind="item", student_id="1", key="just", action="set", points=1, comment="x" * 5000, who="t",
                 base=None)


def test_keep_clear_and_flags(tmp_path: Path) -> None:
    s = _store(tmp_path)
    k = s.decide(kind="item", student_id="1", key="acc", action="keep", who="t", base=None)
    assert isinstance(k, Decision) and _overrides(tmp_path) == []  # the check's points stand: nothing to override
    k2 = s.decide(kind="item", student_id="1", key="acc", action="keep", comment="looked fine", who="t", base=k.id)
    assert [(o.points, o.comment) for o in _overrides(tmp_path)] == [(None, "looked fine")]
    s.decide(kind="item", student_id="1", key="acc", action="clear", who="t", base=k2.id)  # type: ignore[union-attr]
    assert _overrides(tmp_path) == []
    f = s.decide(kind="flag", student_id="1", key="late", action="reviewed", comment="extension granted", who="t",
                 base=None)
    assert isinstance(f, Decision) and _overrides(tmp_path) == []  # a flag's note is not an override
    assert s.latest()[("flag", "1", "late")].comment == "extension granted"


def test_an_overrides_file_already_there_is_taken_in(tmp_path: Path) -> None:
    (tmp_path / "overrides.csv").write_text("student_id,item_id,points,comment\n0556001,just,2,from the csv\n"
                                            "0556002,acc,,note only\n")
    s = _store(tmp_path)
    assert not (tmp_path / "overrides.csv").exists()  # rescore would read the csv before the yaml
    got = {(r.student_id, r.key): r for r in s.records()}
    assert got[("0556001", "just")].who == "the file overrides.csv" and got[("0556001", "just")].points == 2.0
    assert got[("0556002", "acc")].action == "keep"
    assert [(o.student_id, o.points, o.comment) for o in _overrides(tmp_path)] == [
        ("0556001", 2.0, "from the csv"), ("0556002", None, "note only")]
    # opening it again takes nothing in twice
    assert len(_store(tmp_path).records()) == 2


def test_an_overrides_yaml_edited_by_hand_is_taken_in_and_not_overwritten(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.decide(kind="item", student_id="1", key="just", action="set", points=1, who="t", base=None)
    text = (tmp_path / "overrides.yaml").read_text().replace("points: 1.0", "points: 2.0")
    (tmp_path / "overrides.yaml").write_text(text + "- {student_id: '2', item_id: acc, points: 10, comment: ''}\n")
    s.decide(kind="item", student_id="3", key="just", action="set", points=3, who="t", base=None)
    rows = {(o.student_id, o.item_id): o.points for o in _overrides(tmp_path)}
    assert rows == {("1", "just"): 2.0, ("2", "acc"): 10.0, ("3", "just"): 3.0}
    assert s.latest()[("item", "1", "just")].who == "the file overrides.yaml"


def test_a_bad_overrides_file_is_a_clear_error_and_stays(tmp_path: Path) -> None:
    (tmp_path / "overrides.yaml").write_text("- {student_id: '1', item_id: jsut, points: 1}\n")
    with pytest.raises(GraderError, match="cannot be taken into the review.*jsut.*did you mean `just`"):
        _store(tmp_path)
    assert "jsut" in (tmp_path / "overrides.yaml").read_text()


def test_a_torn_or_foreign_file_among_the_records_is_skipped(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.decide(kind="item", student_id="1", key="just", action="set", points=1, who="t", base=None)
    (s.folder / "00000000000000000001-broken.json").write_text('{"id": "x", "kind"')
    (s.folder / "00000000000000000002-other.json").write_text('{"hello": 1}')
    assert [r.points for r in s.records()] == [1.0]


@pytest.mark.parametrize("text", ["0_9", "1e3", "0x2", "inf", "-0", "1,5", "2 5", "+1"])
def test_points_text_a_ta_did_not_mean_as_a_number_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(GraderError, match="a number like 2 or 2.5"):
        _store(tmp_path).decide(kind="item", student_id="1", key="acc", action="set", points=text, who="t",
                                base=None)


def test_a_row_taken_out_of_overrides_yaml_by_hand_withdraws_the_decision(tmp_path: Path) -> None:
    s = _store(tmp_path)
    for sid in ("1", "2"):
        s.decide(kind="item", student_id=sid, key="just", action="set", points=2, who="t", base=None)
    rows = [r for r in __import__("yaml").safe_load((tmp_path / "overrides.yaml").read_text()) if r["student_id"] != "2"]
    (tmp_path / "overrides.yaml").write_text(__import__("yaml").safe_dump(rows))
    assert s.refresh() == {"2"}
    assert s.latest()[("item", "2", "just")].action == "clear"
    assert [o.student_id for o in _overrides(tmp_path)] == ["1"]
    assert s.refresh() == set()  # nothing changed since


def test_the_check_outcome_before_a_decision_is_kept_with_it(tmp_path: Path) -> None:
    d = _store(tmp_path).decide(kind="item", student_id="1", key="acc", action="set", points=3, who="t", base=None,
                                status_before="manual", points_before=0.0)
    assert isinstance(d, Decision) and (d.status_before, d.points_before) == ("manual", 0.0)
    assert _store(tmp_path).records()[0].status_before == "manual"
