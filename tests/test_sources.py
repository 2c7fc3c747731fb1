"""Which notebook each part is graded on (one per part, by a stated rule) and a notebook that
holds the whole lab graded part by part, on in-memory evidence with the LAB01 rubric."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell

from grader.collect import _metrics
from grader.datasets import CIFAR10_CLASSES
from grader.grading import choose_sources, run_checks
from grader.model import Submission, SubmittedFile
from grader.pipeline import GradeSettings, grade_from_runs
from grader.rubric import builtin_rubric, load_rubric
from grader.samples import lab1_1, lab1_2, lab1_3
from grader.sources import RULE, marks, to_json

sys.path.insert(0, str(Path(__file__).parent))
from test_sections import (
    CIFAR_CLASS_OUT,
    CIFAR_TEST_OUT,
    FOOD_TEST_OUT,
    LAB1_SESSIONS,
    LR_OUT,
    combined,
    execute_ev,
    executed,
    index_of,
    lab1_with_shared_helpers,
    lab1_without_headings,
    saved_ev,
)

from honest import handout_net, histogram_figure, line_figure, runs_evidence, verified_block  # noqa: E402

RUBRIC = load_rubric(builtin_rubric("lab1"))
LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def complete(path: str, acc: float = 0.55) -> dict[str, Any]:
    """Evidence of a LAB 1-1 notebook that did everything."""
    net = handout_net()  # the histograms' data and the verified parameters come from one real model
    hists = [dict(histogram_figure(net, [f"{l}.{k}" for l in LAYERS for k in ("weight", "bias")], cell=7), index=8)]
    return {"path": path, "mode": "execute", "status": "ok", "reason": "", "dataset": "cifar10",
            "metrics": {"dataset": "cifar10", "test_accuracy": acc, "test_loss": 1.3,
                        "per_class_accuracy": {c: acc for c in CIFAR10_CLASSES}},
            "figures": hists, "errors": [], "models": [{"class": "Net", "num_outputs": 10, "cell": 2}],
            "optimizers": [{"type": "SGD", "lr": 0.001, "steps": 100}], "schedulers": [], "normalization": [],
            "training": [session(5, "cifar10", "train", 50000)], "evaluations": [session(6, "cifar10", "test", 10000)],
            "verified": verified_block(net, test_accuracy=acc, per_class_accuracy={c: acc for c in CIFAR10_CLASSES})}


def session(index: int, dataset: str, split: str, samples: int, model: str = "net") -> dict[str, Any]:
    """A probe training (split `train`) or evaluation session in cell `index` (In[index])."""
    return {"cell": index, "index": index, "dataset": dataset, "split": split, "samples": samples, "model": model}


def broken(path: str, status: str = "error") -> dict[str, Any]:
    """A draft that stopped early: an error in cell 3 (after a short training) and nothing to show."""
    return {"path": path, "mode": "execute", "status": status, "reason": "", "dataset": "cifar10",
            "metrics": {"dataset": "cifar10"}, "figures": [], "models": [], "optimizers": [], "schedulers": [],
            "normalization": [], "errors": [{"cell": 3, "index": 3, "ename": "NameError",
                                             "evalue": "name 'dataiter' is not defined"}], "training": [session(2, "cifar10", "train", 2000)],
            "verified": {"reason": "no model was evaluated"}}


def grade(*evidence: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(items by id, sources by part) of a grade over this evidence."""
    results, flags = run_checks(RUBRIC, student_id="0556001", evidence=evidence, files=[], work_dir=None,
                                reference=None, dataset_stats={})
    sources = to_json(choose_sources(RUBRIC, student_id="0556001", evidence=evidence, files=[], work_dir=None,
                                     reference=None, dataset_stats={}))
    return {k: r for k, r in results.items()} | {"_flags": flags}, sources


# ---------------------------------------------------------------- G: one notebook per part


def test_names_marked_as_copies() -> None:
    assert marks("Copy of lab1-1.ipynb") == ("copy",)
    assert marks("lab1-1 (1).ipynb") == ("(1)",)
    assert marks("lab1-1-checkpoint.ipynb") == ("checkpoint",)
    assert marks("old/lab1-1.ipynb") == ("old",) and marks("lab1-1_backup.ipynb") == ("backup",)
    assert marks("lab1-1 - 副本.ipynb") == ("副本",)
    assert marks("lab1-1.ipynb") == () and marks("bold_cifar.ipynb") == () and marks("lab1-1_final.ipynb") == ()


@pytest.mark.parametrize("order", [1, -1])
def test_a_broken_copy_of_beside_the_notebook_is_not_graded(order: int) -> None:
    items, sources = grade(*[complete("lab1-1.ipynb"), broken("Copy of lab1-1.ipynb")][::order])
    assert items["lab1-1-ran"].status == "pass"  # the draft's error is not mixed in
    assert items["lab1-1-test-metrics"].status == "pass" and items["lab1-1-weights"].status == "pass"
    src = sources["lab1-1"]
    assert src["notebook"] == "lab1-1.ipynb"
    [ig] = src["ignored"]
    assert ig["notebook"] == "Copy of lab1-1.ipynb"
    assert "marks it as a copy (`copy`)" in ig["reason"] and "Note" not in ig["reason"]
    assert "It stopped with NameError in cell 3; that does not count against this part." in ig["reason"]
    assert "ignored-notebook" in items["_flags"]


def test_an_ignored_draft_raises_no_run_flag(tmp_path: Path) -> None:
    sub = Submission(student_id="0556001", source="x.zip", source_sha256=None, submitted_at=None,
                     submitted_at_source="unknown", work_dir=str(tmp_path),
                     files=(SubmittedFile("lab1-1.ipynb", "notebook", 1, "0" * 64),
                            SubmittedFile("Copy of lab1-1.ipynb", "notebook", 1, "0" * 64)), problems=())
    g = grade_from_runs(RUBRIC, sub, [complete("lab1-1.ipynb"), broken("Copy of lab1-1.ipynb", "killed")],
                        settings=GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path))
    assert "ignored-notebook" in g["flags"]
    assert "notebook-error" not in g["flags"] and "sandbox-limit" not in g["flags"]
    assert g["sources"]["lab1-1"]["ignored"][0]["notebook"] == "Copy of lab1-1.ipynb"


def test_a_newer_browser_duplicate_loses_to_the_plain_name() -> None:
    # `lab1-1 (1).ipynb` is what a browser names a second download; the rule does not trust
    # its (student-set) time: the plain name is graded and the TA is told about the other.
    items, sources = grade(complete("lab1-1.ipynb", acc=0.50), complete("lab1-1 (1).ipynb", acc=0.60))
    assert sources["lab1-1"]["notebook"] == "lab1-1.ipynb"
    assert "50.0 %" in items["lab1-1-test-metrics"].message
    [ig] = sources["lab1-1"]["ignored"]
    assert "(1)" in ig["reason"] and "Note" not in ig["reason"]  # equally complete: nothing to point out


def test_when_the_plain_name_is_the_broken_one_it_is_graded_and_the_complete_copy_is_pointed_out() -> None:
    items, sources = grade(broken("lab1-1.ipynb"), complete("lab1-1 - Copy.ipynb"))
    assert sources["lab1-1"]["notebook"] == "lab1-1.ipynb"
    assert items["lab1-1-test-metrics"].status == "fail"
    # its half credit for running partly waits for a TA: the grader tested no model of it (issue 13 A)
    ran = items["lab1-1-ran"]
    assert ran.status == "manual" and ran.fraction == 0 and "partial from the outputs: 2.5 of 5 points" in ran.message, ran
    [ig] = sources["lab1-1"]["ignored"]
    assert "Note: `lab1-1 - Copy.ipynb` ran without errors and its results would earn 55 of 55 points against 0" \
        in ig["reason"]
    assert "ask the TA" in ig["reason"] and "ignored-notebook" in items["_flags"]
    assert "better-copy-ignored" in items["_flags"]


@pytest.mark.parametrize("copy", ["lab1-1 (1).ipynb", "lab1-1-Copy1.ipynb", "Copy of lab1-1.ipynb"])
def test_a_complete_copy_losing_to_a_broken_plain_name_reaches_grades_csv_and_moodle(tmp_path: Path, copy: str) -> None:
    """Tester 1's 8 (0800001, 0800005): 2.5/100 by the rule, but grades.csv, the class summary
    and Moodle showed only `ignored-notebook`, as for a harmless draft; the lost points are said."""
    from grader.report.gradebook import moodle_feedback, write_gradebook
    from grader.report.summary import attention_reasons

    sub = Submission(student_id="0556001", source="x.zip", source_sha256=None, submitted_at=None,
                     submitted_at_source="unknown", work_dir=str(tmp_path),
                     files=(SubmittedFile("lab1-1.ipynb", "notebook", 1, "0" * 64),
                            SubmittedFile(copy, "notebook", 1, "0" * 64)), problems=())
    g = grade_from_runs(RUBRIC, sub, [broken("lab1-1.ipynb"), complete(copy)],
                        settings=GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path))
    assert {"better-copy-ignored", "ignored-notebook"} <= set(g["flags"])
    [p] = [p for p in g["problems"] if p["flag"] == "better-copy-ignored"]
    assert p["path"] == copy and "would earn 55 of 55 points against 0" in p["message"]
    write_gradebook([g], out_dir=tmp_path)
    row = (tmp_path / "grades.csv").read_text(encoding="utf-8").splitlines()[1]
    assert "better-copy-ignored: `" + copy in row and "ask the TA to grade it instead" in row
    assert "would earn 55 of 55 points" in moodle_feedback(g)
    assert any(r.startswith("better-copy-ignored: ") for r in attention_reasons(g, []))


def test_a_copy_no_better_than_the_graded_one_raises_no_better_copy_flag(tmp_path: Path) -> None:
    for evidence in ([complete("lab1-1.ipynb"), broken("lab1-1 (1).ipynb")],
                     [complete("lab1-1.ipynb", acc=0.50), complete("lab1-1 (1).ipynb", acc=0.60)]):
        items, _ = grade(*evidence)
        assert "ignored-notebook" in items["_flags"] and "better-copy-ignored" not in items["_flags"]


def test_a_candidate_graded_for_another_part_is_not_counted_as_passed_over() -> None:
    """Tester 1's 8 (0800010): `_v2` graded for LAB 1-1 "preferred over 1 other candidate(s)"
    while `ignored` was empty, `_v1` being graded for LAB 1-3: the sentence now says so."""
    from grader.sources import Candidate, Source, settle

    v1, v2, old = (Candidate(complete(p), complete(p), (), 0, ()) for p in
                   ("lab1-1_v1.ipynb", "lab1-1_v2.ipynb", "old/lab1-1.ipynb"))
    basis = "`lab1-1_v2.ipynb` is graded for this part: its name matches `*1-1*`"
    a = Source("lab1-1", "LAB 1-1", v2, basis + "; it was preferred over 2 other candidate(s).",
               ((v1, "v1 lost"), (old, "old lost")), basis)
    b = Source("lab1-3", "LAB 1-3", v1, "`lab1-1_v1.ipynb` is graded for this part.", (), "")
    one, _ = settle([a, b])
    assert [c.path for c, _ in one.ignored] == ["old/lab1-1.ipynb"]
    assert one.why == basis + "; it was preferred over 1 other candidate(s) (`lab1-1_v1.ipynb` is graded for LAB 1-3)."
    [alone] = settle([Source("lab1-1", "LAB 1-1", v2, a.why, ((v1, "v1 lost"),), basis), b])[:1]
    assert alone.ignored == () and alone.why == basis + " (`lab1-1_v1.ipynb` is graded for LAB 1-3)."
    assert "preferred over" not in alone.why


def test_among_equal_names_the_run_without_errors_wins() -> None:
    # both show their results; the first stopped with an error after printing them
    items, sources = grade(dict(broken("part1/lab1-1.ipynb"), metrics=complete("x")["metrics"]),
                           complete("lab1-1-v2.ipynb"))
    assert sources["lab1-1"]["notebook"] == "lab1-1-v2.ipynb"
    [ig] = sources["lab1-1"]["ignored"]
    assert "`lab1-1-v2.ipynb` ran without errors and `part1/lab1-1.ipynb` stopped with NameError in cell 3" \
        in ig["reason"]
    assert items["lab1-1-ran"].status == "pass"


def test_a_stub_that_ran_clean_loses_to_a_run_that_shows_the_work() -> None:
    stub = dict(broken("lab1-1.ipynb"), status="ok", errors=[])
    work = dict(complete("lab1-1-final.ipynb"), status="error",
                errors=[{"cell": 12, "index": 14, "ename": "KeyboardInterrupt", "evalue": ""}])
    _, sources = grade(stub, work, study("lab1-3.ipynb"))
    assert sources["lab1-1"]["notebook"] == "lab1-1-final.ipynb"
    assert "shows nothing for this part's items" in sources["lab1-1"]["ignored"][0]["reason"]


def test_checkpoint_copies_are_never_candidates() -> None:
    items, sources = grade(complete(".ipynb_checkpoints/lab1-1-checkpoint.ipynb"))
    assert sources["lab1-1"]["notebook"] is None and items["lab1-1-test-metrics"].status == "fail"
    assert "ignored-notebook" not in items["_flags"]


def test_intake_drops_checkpoint_folders(tmp_path: Path) -> None:
    from grader.intake import intake
    from intake_fixtures import notebook_bytes, write_zip

    write_zip(tmp_path / "in" / "dllab_0556001.zip", [("lab1-1.ipynb", notebook_bytes()),
                                                      (".ipynb_checkpoints/lab1-1-checkpoint.ipynb", notebook_bytes())])
    [sub] = intake([tmp_path / "in"], tmp_path / "work")
    assert [f.path for f in sub.notebooks] == ["lab1-1.ipynb"] and sub.junk_skipped == 1


def study(path: str) -> dict[str, Any]:
    """A learning-rate study: two rates trained, compared in a line chart."""
    runs = runs_evidence((0.1, 0.01), cell=4)
    return dict(broken(path), status="ok", errors=[], optimizers=runs["optimizers"], models=runs["models"],
                verified_runs=runs["verified_runs"],
                probe={"started": True, "events": 40},
                training=[dict(session(4, "cifar10", "train", 12500), model_ref=t["model_ref"], batches=t["batches"])
                          for t in runs["training"]],
                figures=[dict(line_figure(4), index=4)])


def test_unnamed_notebooks_are_chosen_by_what_they_show_for_each_part() -> None:
    items, sources = grade(complete("train.ipynb"), study("experiments.ipynb"))
    assert sources["lab1-1"]["notebook"] == "train.ipynb"
    assert sources["lab1-3"]["notebook"] == "experiments.ipynb"
    # each is graded for some part, so neither was left out
    assert sources["lab1-1"]["ignored"] == [] and "ignored-notebook" not in items["_flags"]
    assert items["lab1-3-experiments"].status == "pass"


def test_the_rule_is_stated_in_the_rubric_and_the_feedback() -> None:
    text = builtin_rubric("lab1").read_text()
    assert "Copy of" in text and "most complete run" in text
    assert "`Copy of`" in RULE and "most complete run" in RULE


# ---------------------------------------------------------------- O: one notebook, every part


def whole_lab(**titles: str) -> dict[str, Any]:
    nb = combined(lab1_1(epochs=1), lab1_2(epochs=1), lab1_3(epochs=1))
    for old, new in titles.items():
        k = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and old in c.source)
        nb.cells[k] = new_markdown_cell(new)
    nb = executed(nb, {"Accuracy of the network": CIFAR_TEST_OUT, "class_correct[label]": CIFAR_CLASS_OUT,
                       "Test accuracy: %.2f": FOOD_TEST_OUT, "results[lr] = accs": LR_OUT})
    ev = saved_ev(nb)
    ev["path"] = "DL_LAB1_0556001.ipynb"
    ev["_nb"] = nbformat.writes(nb)
    return ev


def test_one_notebook_for_the_whole_lab_serves_every_part_on_its_own_lines() -> None:
    ev = whole_lab()
    items, sources = grade(ev)
    assert {p: s["sections"] for p, s in sources.items()} == {
        "lab1-1": ["s1"], "lab1-2": ["s2"], "lab1-3": ["s3"], "bonus": ["s2"]}
    assert items["lab1-2-test-metrics"].status == "pass" and "23.0 %" in items["lab1-2-test-metrics"].message
    assert items["lab1-2-accuracy"].status == "pass"
    assert "41.0 %" in items["lab1-1-test-metrics"].message
    assert items["lab1-1-per-class"].status == "pass"
    assert sources["lab1-2"]["section_title"] == "LAB 1-2: Food-11" and sources["lab1-2"]["span"] == ev["sections"][1]["span"]
    # read as a whole with one class list, the notebook mixes the parts (the old fault)
    whole = _metrics(nbformat.read(io.StringIO(ev["_nb"]), as_version=4), None)
    assert whole["dataset"] == "food11" and whole["test_accuracy"] != pytest.approx(0.41)


def test_only_the_section_whose_model_was_verified_is_credited_with_it() -> None:
    ev = whole_lab()
    lr_cell = max(ev["sections"][2]["counts"])
    ev["verified"] = {"test_accuracy": 0.18, "per_class_accuracy": {c: 0.18 for c in CIFAR10_CLASSES},
                      "dataset": "cifar10", "model": "Net", "cell": lr_cell}
    items, _ = grade(ev)
    for item in ("lab1-1-verified", "lab1-2-verified"):
        assert items[item].status == "manual" and "another section" in items[item].message
    assert "mismatch" not in items["_flags"]
    # the same verification on LAB 1-1's own evaluation is checked against LAB 1-1's numbers
    ev["verified"]["cell"] = ev["sections"][0]["counts"][-2]
    items, _ = grade(ev)
    assert items["lab1-1-verified"].status == "fail" and "41.0 %" in items["lab1-1-verified"].message


def test_parts_take_untitled_sections_in_order() -> None:
    ev = whole_lab(**{"LAB 1-1": "# Part A", "LAB 1-2": "# Part B", "LAB 1-3": "# Part C"})
    _, sources = grade(ev)
    assert [sources[p]["sections"] for p in ("lab1-1", "lab1-2", "lab1-3")] == [["s1"], ["s2"], ["s3"]]


def test_a_heading_naming_the_part_beats_the_order() -> None:
    # LAB 1-3 written first, LAB 1-1 after it, both on CIFAR-10
    nb = combined(lab1_3(epochs=1), lab1_1(epochs=1))
    nb = executed(nb, {"results[lr] = accs": LR_OUT, "Accuracy of the network": CIFAR_TEST_OUT})
    items, sources = grade(dict(saved_ev(nb), path="DL_LAB1_0556001.ipynb"))
    assert sources["lab1-1"]["section_title"] == "LAB 1-1: CIFAR-10 CNN"
    assert sources["lab1-3"]["section_title"] == "LAB 1-3: learning rate and decay"
    assert "41.0 %" in items["lab1-1-test-metrics"].message


def test_a_single_dataset_notebook_is_graded_whole_as_before() -> None:
    ev = complete("lab1-1.ipynb")
    ev["sections"] = []
    items, sources = grade(ev)
    assert sources["lab1-1"]["sections"] == [] and sources["lab1-3"]["notebook"] == "lab1-1.ipynb"
    assert items["lab1-1-test-metrics"].status == "pass"


def test_a_copy_of_the_whole_lab_notebook_is_ignored_for_every_part() -> None:
    ev = whole_lab()
    copy = dict(whole_lab(), path="Copy of DL_LAB1_0556001.ipynb", status="error",
                errors=[{"cell": 1, "index": 1, "ename": "FileNotFoundError"}])
    items, sources = grade(copy, ev)
    assert {s["notebook"] for s in sources.values()} == {"DL_LAB1_0556001.ipynb"}
    assert all(s["ignored"][0]["notebook"] == "Copy of DL_LAB1_0556001.ipynb" for s in sources.values())
    assert "ignored-notebook" in items["_flags"]


def test_a_notebook_named_for_the_part_beats_the_whole_lab_notebook() -> None:
    food = {"path": "lab1-2.ipynb", "status": "ok", "dataset": "food11", "errors": [], "sections": [],
            "metrics": {"dataset": "food11", "test_accuracy": 0.31, "test_loss": 1.9}}
    items, sources = grade(whole_lab(), food)
    assert sources["lab1-2"]["notebook"] == "lab1-2.ipynb" and "31.0 %" in items["lab1-2-test-metrics"].message
    assert sources["lab1-1"]["sections"] == ["s1"]  # the whole-lab notebook still serves the others
    assert "ignored-notebook" not in items["_flags"]


def test_lab1_1_followed_by_its_learning_rate_study_is_graded_on_its_own_model_without_mismatch() -> None:
    # T2 #1 (0000503): no headings; the verifier re-evaluated the study's last model, which
    # scores other per-class numbers than the ones LAB 1-1's net printed
    nb = lab1_without_headings()
    ev = execute_ev(nb, LAB1_SESSIONS)
    study = nb.cells[index_of(nb, "results = {}")].execution_count
    ev["verified"] = {"test_accuracy": 0.2, "per_class_accuracy": {c: 0.58 if c == "airplane" else 0.1
                                                                   for c in CIFAR10_CLASSES},
                      "dataset": "cifar10", "model": "Net", "cell": study}
    items, sources = grade(ev)
    assert {p: s["sections"] for p, s in sources.items()} == {
        "lab1-1": ["s2"], "lab1-2": ["s1"], "lab1-3": ["s3"], "bonus": ["s1"]}
    assert "41.0 %" in items["lab1-1-test-metrics"].message
    assert items["lab1-1-verified"].status == "manual" and "another section" in items["lab1-1-verified"].message
    assert "mismatch" not in items["_flags"]


def test_a_lab1_3_heading_over_a_food_study_serves_lab1_3_not_lab1_2() -> None:
    # T2 #2 (0000502/0000512): a heading naming a part beats the part's dataset
    ev = dict(saved_ev(lab1_with_shared_helpers()), path="DL_LAB1_0556001.ipynb")
    items, sources = grade(ev)
    assert {p: (s["sections"], s["dataset"]) for p, s in sources.items()} == {
        "lab1-1": (["s1"], "cifar10"), "lab1-2": (["s2"], "food11"), "lab1-3": (["s3"], "food11"),
        "bonus": (["s2"], "food11")}
    assert "23.0 %" in items["lab1-2-test-metrics"].message


def test_a_part_named_only_by_a_heading_on_another_dataset_still_leaves_untitled_sections_alone() -> None:
    # the same, as the probe reports it, with LAB 1-1's heading naming no part: the untitled
    # CIFAR-10 section is LAB 1-1's alone, LAB 1-3 keeps the section its heading names
    ev = _section_ev(("cifar10", "Train a CNN", ["Train a CNN"]), ("food11", "LAB 1-2", ["LAB 1-2"]),
                     ("food11", "LAB 1-3: tuning on Food-11", ["LAB 1-3: tuning on Food-11"]))
    _, sources = grade(ev)
    assert [sources[p]["sections"] for p in ("lab1-1", "lab1-2", "lab1-3")] == [["s1"], ["s2"], ["s3"]]
    # a section with no heading of its own is not named by the one it sits under across datasets
    ev["sections"][2].update(title="LAB 1-2", headings=[])
    _, sources = grade(ev)
    assert sources["lab1-2"]["sections"] == ["s2", "s3"] and sources["lab1-3"]["sections"] == ["s1"]


def _section_ev(*specs: tuple[str, str, list[str]]) -> dict[str, Any]:
    """Evidence of a notebook whose sections are (dataset, title, own headings), three cells each."""
    sections = [{"id": f"s{k + 1}", "dataset": ds, "cells": [3 * k, 3 * k + 1, 3 * k + 2],
                 "span": [3 * k, 3 * k + 2], "counts": [3 * k + 1, 3 * k + 2], "title": title, "headings": heads,
                 "status": "ok", "reason": "", "metrics": {"dataset": ds, "test_accuracy": 0.3 + 0.1 * k}}
                for k, (ds, title, heads) in enumerate(specs)]
    return {"path": "DL_LAB1_0556001.ipynb", "mode": "execute", "status": "ok", "reason": "", "dataset": "cifar10",
            "metrics": {"dataset": "cifar10"}, "errors": [], "figures": [], "models": [], "optimizers": [],
            "schedulers": [], "normalization": [], "verified": {"reason": "none"}, "sections": sections}


# ---------------------------------------------------------------- a candidate by dataset must work on it
# RT1 #1 (1601005, 1601008, 1602001, 1602002): a lab1-1 notebook that trains on CIFAR-10 (or on
# nothing) but copies, lists or opens Food-11's files was read as "food11" from its text and
# graded for LAB 1-2 on LAB 1-1's CIFAR lines.

CIFAR_LINES = {"dataset": "food11", "test_accuracy": 0.45, "test_loss": 1.2345, "per_class_accuracy": {},
               "mentions": [{"cell": 2, "kind": "test_accuracy", "split": "test", "value": 0.45, "class": None,
                             "raw": "Accuracy of the network on the 10000 test images: 45.00 %"}]}


def touches_food(path: str = "lab1-1.ipynb", *, training: list[dict[str, Any]] | None = None,
                 evaluations: list[dict[str, Any]] | None = None, status: str = "ok",
                 errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An executed notebook whose text names Food-11 (so the parser guessed food11) and whose
    probe saw only the sessions given."""
    return {"path": path, "mode": "execute", "status": status, "reason": "", "dataset": "food11",
            "metrics": dict(CIFAR_LINES), "figures": [], "errors": errors or [], "models": [], "optimizers": [],
            "schedulers": [], "normalization": [], "datasets": [], "dataloaders": [], "sections": [],
            "training": training or [], "evaluations": evaluations or [],
            "probe": {"started": True, "events": 1, "errors": 0}, "verified": {"reason": "no model was evaluated"}}


@pytest.mark.parametrize("ev", [
    # 1601005: shutil.copytree('./data/Food-11', ...) beside training on CIFAR-10
    touches_food(training=[session(4, "cifar10", "train", 50000)], evaluations=[session(5, "cifar10", "test", 10000)]),
    # 1601008: only Path('data/Food-11').exists(), in code/
    touches_food("code/lab1-1.ipynb"),
    # 1602002: glob('./data/Food-11/**/*.jpg') and one image opened, CIFAR-10 evaluated
    touches_food(evaluations=[session(5, "cifar10", "test", 10000)]),
    # 1602001: a copytree of a missing Food-11 folder that raised
    touches_food(status="error", errors=[{"cell": 1, "index": 1, "ename": "FileNotFoundError",
                                          "evalue": "[Errno 2] No such file or directory: './data/Food-11'"}]),
], ids=["copytree", "path-exists", "glob-open", "copytree-raised"])
def test_a_notebook_that_only_touches_food11_files_does_not_serve_lab1_2(ev: dict[str, Any]) -> None:
    items, sources = grade(ev)
    assert sources["lab1-1"]["notebook"] == ev["path"]
    assert sources["lab1-2"]["notebook"] is None  # not found, not graded on LAB 1-1's lines
    assert items["lab1-2-test-metrics"].status == "fail" and "45.0 %" not in items["lab1-2-test-metrics"].message
    assert all(r.status != "pass" for k, r in items.items() if k.startswith("lab1-2-"))


def test_an_unnamed_notebook_that_trains_on_food11_still_serves_lab1_2() -> None:
    # the control: the same text-guessed notebook whose probe saw Food-11 training is LAB 1-2's
    food = touches_food("train.ipynb", training=[session(4, "food11", "train", 9866)],
                        evaluations=[session(5, "food11", "test", 3347)])
    _, sources = grade(complete("lab1-1.ipynb"), food)
    assert sources["lab1-2"]["notebook"] == "train.ipynb"
    assert "trains or evaluates on food11" in sources["lab1-2"]["why"]


def test_a_run_whose_probe_never_started_is_still_taken_by_its_dataset() -> None:
    # the probe saw nothing because it did not start, not because nothing trained: the part is
    # not lost for the grader's failure (the guess from the outputs stands, as before)
    ev = dict(touches_food("train.ipynb"), dataset="cifar10", metrics=dict(CIFAR_LINES, dataset="cifar10"))
    _, sources = grade(ev)
    assert sources["lab1-1"]["notebook"] is None and sources["lab1-3"]["notebook"] is None
    for probe in ({"started": False, "events": 0, "errors": 0}, None):
        ev["probe"] = probe
        _, sources = grade(ev)
        assert sources["lab1-1"]["notebook"] == "train.ipynb"


def test_a_saved_cifar_notebook_copying_food11_serves_no_food11_part(tmp_path: Path) -> None:
    # saved mode: nothing ran, so what the code trains or evaluates on decides (collect's
    # `data_use`); a cell copying Food-11 names it but trains nothing
    from nbformat.v4 import new_code_cell

    from grader.collect import from_saved

    def saved(name: str, nb: nbformat.NotebookNode) -> dict[str, Any]:
        path = tmp_path / name
        nbformat.write(nb, str(path))
        return from_saved(path, name, run_dir=tmp_path / f"run-{name}")

    cifar = executed(lab1_1(epochs=1), {"Accuracy of the network": CIFAR_TEST_OUT})
    cifar.cells.insert(1, new_code_cell("import shutil\nshutil.copytree('./data/Food-11', './data/Food-11-copy')"))
    ev = saved("lab1-1.ipynb", cifar)
    assert {u["dataset"] for u in ev["data_use"]} == {"cifar10"}
    _, sources = grade(ev)
    assert sources["lab1-1"]["notebook"] == "lab1-1.ipynb" and sources["lab1-2"]["notebook"] is None
    # the copy at the end of a whole-lab notebook makes a Food-11 section of its own (saved
    # mode cuts sections by the datasets code names); it trains nothing, so serves no part
    cifar.cells.append(cifar.cells.pop(1))
    whole = saved("DL_LAB1_0556001.ipynb", cifar)
    assert [s["dataset"] for s in whole["sections"]] == ["cifar10", "food11"]
    _, sources = grade(whole)
    assert sources["lab1-2"]["notebook"] is None and sources["lab1-1"]["sections"] == ["s1"]
    # the control: a saved Food-11 notebook under a name matching no part is LAB 1-2's by its code
    food = saved("homework.ipynb", executed(lab1_2(epochs=1), {"Test accuracy: %.2f": FOOD_TEST_OUT}))
    assert "food11" in {u["dataset"] for u in food["data_use"]}
    _, sources = grade(ev, food)
    assert sources["lab1-2"]["notebook"] == "homework.ipynb"


def test_a_notebook_recognised_as_no_part_is_named_where_a_part_finds_nothing() -> None:
    # RT1 1401001: `實驗一/作業一.ipynb` ran, matches no part by name and trained on nothing; the
    # items said "no notebook or script for lab1-1 was found"
    ev = touches_food("實驗一/作業一.ipynb")
    items, sources = grade(ev)
    assert all(s["notebook"] is None for s in sources.values())
    msg = items["lab1-1-test-metrics"].message
    assert "`實驗一/作業一.ipynb` (the grader saw it train or evaluate on no dataset)" in msg
    assert "no notebook was recognised as lab1-1" in msg and "`*1-1*`" in msg and "rename it" in msg
    assert items["lab1-1-test-metrics"].status == "fail" and items["lab1-1-weights"].message == msg
    # one that trained on another part's dataset says so; a notebook graded for some part is
    # not named for the others
    food = touches_food("作業二.ipynb", training=[session(4, "food11", "train", 9866)])
    items, sources = grade(ev, food)
    assert sources["lab1-2"]["notebook"] == "作業二.ipynb"
    msg = items["lab1-1-test-metrics"].message
    assert "作業一" in msg and "作業二" not in msg
    items, _ = grade(complete("lab1-1.ipynb"))  # nothing left over: the check's own words stand
    assert "recognised" not in items["lab1-2-test-metrics"].message


def test_a_saved_notebook_printing_food11_per_class_accuracy_serves_lab1_2(tmp_path: Path) -> None:
    # saved mode, data read in a way the static reading cannot name (a root from the
    # environment, the student's own class): the stored per-class accuracy over Food-11's
    # classes is an evaluation on Food-11; a notebook naming Food-11 without it is not
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from grader.collect import from_saved
    from grader.datasets import FOOD11_CLASSES

    printed = "".join(f"Accuracy of {c:>10s} : {30 + i} %\n" for i, c in enumerate(FOOD11_CLASSES))
    cells = [new_code_cell("import os\nroot = os.environ.get('DATA', '.')\nloader = DataLoader(MyImages(root))",
                           execution_count=1),
             new_code_cell("net = Net()\nopt = SGD(net.parameters(), lr=0.01)\nfor x, y in loader:\n"
                           "    crit(net(x), y).backward()", execution_count=2),
             new_code_cell("evaluate(net)", execution_count=3,
                           outputs=[new_output("stream", name="stdout", text=printed + "Test accuracy: 35.00 %\n")])]
    nbformat.write(new_notebook(cells=cells), str(tmp_path / "hw.ipynb"))
    ev = from_saved(tmp_path / "hw.ipynb", "hw.ipynb", run_dir=tmp_path / "run")
    assert ev["data_use"] == []  # the code names no dataset
    _, sources = grade(ev)
    assert sources["lab1-2"]["notebook"] == "hw.ipynb"
    cells[2].outputs = [new_output("stream", name="stdout", text="Test accuracy: 35.00 %\n")]
    cells.insert(0, new_code_cell("print(os.listdir('./data/Food-11'))", execution_count=0))
    nbformat.write(new_notebook(cells=cells), str(tmp_path / "hw.ipynb"))
    ev = from_saved(tmp_path / "hw.ipynb", "hw.ipynb", run_dir=tmp_path / "run2")
    assert ev["dataset"] == "food11"  # guessed from the code's text, as in RT1 #1
    _, sources = grade(ev)
    assert sources["lab1-2"]["notebook"] is None


# ---------------------------------------------------------------- I: parts attributed from what the run did


def _lab1_3_naming_food(tag: str = "lr-study.ipynb") -> dict[str, Any]:
    """A LAB 1-3 study on CIFAR-10 (named so that no part's patterns match it) with one cell
    that names Food-11's folder and runs fine: executed, the probe saw only CIFAR-10 work."""
    from nbformat.v4 import new_code_cell

    nb = lab1_3(epochs=1)
    nb.cells.append(new_code_cell("import os\nfood = '/tmp/datasets-nctu/Food-11/training'\n"
                                  "print(len(os.listdir(food)), 'Food-11 images for next time')"))
    nb = executed(nb, {"lr %g": LR_OUT})
    status = {i: ("ok", "") for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    ev = execute_ev(nb, [("train", "results = {}", "cifar10", 15000)], cell_status=status)
    return dict(ev, path=tag)


def test_a_notebook_is_not_taken_for_a_part_its_run_never_worked_on() -> None:
    """Issue 13 I: a CIFAR-10 learning-rate notebook whose text names Food-11 earned LAB 1-2's
    `ran` item through a Food-11 "section" read from its code."""
    ev = _lab1_3_naming_food()
    assert [s["dataset"] for s in ev["sections"]] == []  # one experiment: the run's
    items, sources = grade(ev)
    assert sources["lab1-2"]["notebook"] is None and sources["bonus"]["notebook"] is None
    assert all(items[i].fraction == 0 for i in items if i.startswith("lab1-2"))


def test_text_is_read_only_when_the_run_gave_nothing_and_credits_nothing_then() -> None:
    """The probe never started (the run gave nothing): the notebook is still taken for the part
    its outputs and code name, but nothing the run would have had to show is credited from that
    reading; the items go to a TA instead."""
    nb = executed(lab1_2(epochs=1), {"Test accuracy: %.2f": FOOD_TEST_OUT})
    status = {i: ("ok", "") for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    food = dict(execute_ev(nb, [], cell_status=status), path="experiment.ipynb", dataset="food11",
                metrics=_metrics(nb, None), probe=None)
    items, sources = grade(food)
    assert sources["lab1-2"]["notebook"] == "experiment.ipynb"
    for item in ("lab1-2-test-metrics", "lab1-2-ran"):
        assert items[item].status == "manual" and items[item].fraction == 0, items[item]
        assert "from its text" in items[item].message
    assert "part-from-text" in items["_flags"]
    # the probe started and saw no Food-11 work: not taken at all (issue 12), never by its text
    _, sources = grade(dict(food, probe={"started": True, "events": 3}))
    assert sources["lab1-2"]["notebook"] is None
    # named for the part, the same notebook is the student's own choice: taken, but with no model
    # of Food-11 tested by the grader its items wait for a TA too (issue 13 A, T13_3 #2)
    items, sources = grade(dict(food, path="lab1-2.ipynb"))
    assert sources["lab1-2"]["notebook"] == "lab1-2.ipynb" and "part-from-text" not in items["_flags"]
    assert items["lab1-2-ran"].status == "manual" and "unconfirmed-evidence" in items["_flags"]


def test_the_verified_dataset_says_what_a_run_worked_on() -> None:
    """A custom dataset the probe could not name: the independent evaluation of the trained
    model on Food-11's test split says the notebook worked on Food-11 (the host's own finding)."""
    food = touches_food("train.ipynb", training=[session(4, "MyFoodData", "train", 9866)])
    items, sources = grade(food)  # nothing else says which data it was: a TA's (was: not taken at all)
    assert sources["lab1-2"]["notebook"] == "train.ipynb" and "part-from-text" in items["_flags"]
    food["verified"] = {"test_accuracy": 0.4, "per_class_accuracy": {}, "dataset": "food11", "cell": 5}
    items, sources = grade(food)
    assert sources["lab1-2"]["notebook"] == "train.ipynb" and "part-from-text" not in items["_flags"]


# ---------------------------------------------------------------- I (round 2): looked at is not trained on

_FOOD_PEEK = ("import os, shutil, torchvision\nroot = '/tmp/datasets-nctu/Food-11'\n"
              "for split in ('training', 'validation', 'evaluation'):\n"
              "    for f in os.listdir(os.path.join(root, split)):\n"
              "        os.makedirs(f'/tmp/work/Food-11/{split}/{f.split(\"_\")[0]}', exist_ok=True)\n"
              "peek = torchvision.datasets.ImageFolder('/tmp/work/Food-11/training')\n"
              "print('Food-11 training images:', len(peek), 'e.g.', peek[0][0].size)")
_FOOD_STATS = ("import torch, torchvision\nimport torchvision.transforms as T\n"
               "raw = torchvision.datasets.ImageFolder('/tmp/datasets-nctu/Food-11/training', T.ToTensor())\n"
               "loader = torch.utils.data.DataLoader(raw, batch_size=64)\n"
               "n = 0; mean = torch.zeros(3)\nfor x, _ in loader:\n    mean += x.mean((2, 3)).sum(0); n += len(x)\n"
               "print('Food-11 mean', mean / n)")


def _cifar_after(code: str) -> dict[str, Any]:
    """An executed LAB 1-1 CIFAR-10 notebook (named for no part) whose first cell works with
    Food-11's files (`code`): the probe built an ImageFolder of Food-11 whose images reached
    no model; every model it saw trained and was tested on CIFAR-10."""
    from nbformat.v4 import new_code_cell

    from grader.sections import add_sections

    nb = lab1_1(epochs=1)
    nb.cells.insert(0, new_code_cell(code))
    nb = executed(nb, {"Accuracy of the network": CIFAR_TEST_OUT})
    status = {i: ("ok", "") for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    ev = execute_ev(nb, [("train", "print every 100", "cifar10", 5000), ("eval", "Accuracy of the network", "cifar10", 500)],
                    cell_status=status)
    ev.update(path="experiments.ipynb", probe={"started": True, "events": 40, "errors": 0}, sections=[],
              datasets=[{"ref": 2, "class": "ImageFolder", "dataset": "food11", "split": "train", "length": 9866,
                         "num_classes": 11, "classes": [f"{k:02d}" for k in range(11)],
                         "files": ["/tmp/datasets-nctu/Food-11/training/0_0.jpg"], "names": ["peek"]},
                        {"ref": 5, "class": "CIFAR10", "dataset": "cifar10", "split": "train", "length": 50000,
                         "names": ["trainset"]}])
    add_sections(ev, nb, parse=_metrics, cell_status=status)
    return ev


@pytest.mark.parametrize("code", [_FOOD_PEEK, _FOOD_STATS], ids=["peek", "normalization-stats"])
def test_a_dataset_only_looked_at_is_not_a_part_the_run_trained(code: str) -> None:
    """Issue 13 I (T13_1 #6, 0556701): restructuring Food-11's folders and reading one image
    through ImageFolder, then training only on CIFAR-10, earned LAB 1-2's `ran` item through a
    Food-11 section cut from cells that built the dataset; computing Food-11's mean and std
    over its training set (the bonus's work) feeds no model either."""
    ev = _cifar_after(code)
    assert ev["sections"] == []  # one experiment, the one the run did: CIFAR-10
    items, sources = grade(ev)
    assert sources["lab1-1"]["notebook"] == "experiments.ipynb"
    assert sources["lab1-2"]["notebook"] is None and sources["bonus"]["notebook"] is None
    assert all(r.fraction == 0 for k, r in items.items() if k.startswith(("lab1-2", "bonus")))
    assert "part-from-text" not in items["_flags"]


def _cached_arrays(outputs: int, per_class: dict[str, float], path: str = "experiments.ipynb",
                   classes: list[str] | None = None) -> dict[str, Any]:
    """An executed notebook that trained and tested a model with `outputs` outputs on
    TensorDatasets (arrays it cached from image files): the probe names the data only
    `tensordataset`; the independent evaluation cannot rebuild it."""
    return {"path": path, "mode": "execute", "status": "ok", "reason": "", "dataset": "tensordataset",
            "metrics": {"dataset": "tensordataset", "test_accuracy": 0.3636, "test_loss": 1.609,
                        "per_class_accuracy": per_class},
            "figures": [], "errors": [], "models": [{"ref": 11, "class": "Net", "names": ["net"], "num_outputs": outputs}],
            "optimizers": [{"type": "SGD", "lr": 0.01, "steps": 55}], "schedulers": [], "normalization": [],
            "datasets": [{"ref": 2, "class": "TensorDataset", "dataset": "tensordataset", "classes": classes or [],
                          "length": 176, "names": ["tr"]}], "dataloaders": [], "sections": [],
            "training": [dict(session(4, "tensordataset", "train", 880), model_ref=11)],
            "evaluations": [dict(session(5, "tensordataset", "test", 66), model_ref=11)],
            "probe": {"started": True, "events": 30, "errors": 0},
            "verified": {"reason": "the test data is a TensorDataset, which the grader cannot rebuild."}}


def test_data_the_probe_cannot_name_is_told_by_the_model_and_its_classes() -> None:
    """Issue 13 I (T13_1 #6, 0556702): a Food-11 model trained and tested from arrays cached
    from Food-11's JPEGs got 0/35 "(it trained or evaluated on tensordataset, not food11)".
    Its 11-output model and its Food-11 per-class accuracy say which data it was."""
    from grader.datasets import FOOD11_CLASSES

    food = _cached_arrays(11, {c: 0.3 for c in FOOD11_CLASSES})
    items, sources = grade(food)
    assert sources["lab1-2"]["notebook"] == "experiments.ipynb"
    assert "part-from-text" not in items["_flags"]
    # taken for LAB 1-2; the grader could not rebuild the data to test the model itself, so what
    # the outputs show waits for a TA (issue 13 A: was pass), naming why
    for item in ("lab1-2-ran", "lab1-2-test-metrics"):
        assert items[item].status == "manual" and "TensorDataset" in items[item].message, items[item]
    assert "unconfirmed-evidence" in items["_flags"]
    assert sources["lab1-1"]["notebook"] is None  # an 11-class model is no CIFAR-10 one
    # same kind: a CIFAR-10 model trained through a Dataset class of the student's own that
    # wraps numpy arrays (10 outputs: CIFAR-10 or MNIST; its CIFAR-10 classes decide)
    cifar = _cached_arrays(10, {c: 0.4 for c in CIFAR10_CLASSES}, classes=list(CIFAR10_CLASSES))
    cifar["training"][0]["dataset"] = cifar["evaluations"][0]["dataset"] = cifar["datasets"][0]["dataset"] = "npcifar"
    items, sources = grade(cifar)
    assert sources["lab1-1"]["notebook"] == "experiments.ipynb" and sources["lab1-2"]["notebook"] is None
    assert "part-from-text" not in items["_flags"]


def test_data_nothing_names_goes_to_a_ta_not_to_a_fail() -> None:
    """When neither the model nor the outputs say which dataset the unnamed data was (no
    classes printed, a model without a final Linear), or they disagree, the part is not
    failed for "not food11": the notebook is taken and its items wait for a TA."""
    for ev in (_cached_arrays(11, {}), dict(_cached_arrays(11, {}), models=[])):
        ev["models"] = [dict(m, num_outputs=None) for m in ev["models"]]
        items, sources = grade(ev)
        assert sources["lab1-2"]["notebook"] == "experiments.ipynb"
        assert items["lab1-2-ran"].status == "manual" and "could not name (`tensordataset`)" in items["lab1-2-ran"].message
        assert "part-from-text" in items["_flags"]
    # clues that disagree (an 11-output model, CIFAR-10's classes printed): the TA's too
    items, sources = grade(_cached_arrays(11, {c: 0.4 for c in CIFAR10_CLASSES}))
    assert sources["lab1-2"]["notebook"] == "experiments.ipynb" and items["lab1-2-ran"].status == "manual"


# ---------------------------------------------------------------- T13_2 #1: parts from forged records


def _cifar_with_forged_food(path: str = "extra.ipynb") -> dict[str, Any]:
    """A notebook that trained and was tested (by the host) on CIFAR-10 only, whose last cell
    emitted Food-11 training and evaluation records and a Net with 11 outputs (T13_2 #1)."""
    ev = touches_food(path, training=[session(4, "cifar10", "train", 50000), session(9, "food11", "train", 9866)],
                      evaluations=[session(5, "cifar10", "test", 10000), session(9, "food11", "test", 3347)])
    ev["models"] = [{"ref": 1, "class": "Net", "num_outputs": 10, "parameters": 62006, "cell": 3},
                    {"ref": 2, "class": "Net", "num_outputs": 11, "parameters": 62006, "cell": 9}]
    ev["verified"] = dict(verified_block(handout_net()), model="Net", dataset="cifar10", cell=5)
    return ev


def test_a_part_taken_only_from_forged_records_goes_to_a_ta() -> None:
    """Only the probe's records say Food-11, while the host tested the notebook's model on
    CIFAR-10: the notebook is taken for LAB 1-2, but no item passes; each is a TA's, flagged."""
    items, sources = grade(_cifar_with_forged_food())
    assert sources["lab1-2"]["notebook"] == "extra.ipynb"
    lab12 = {k: v for k, v in items.items() if k.startswith("lab1-2")}
    assert lab12 and all(r.fraction == 0 and r.status != "pass" for r in lab12.values()), lab12
    assert any(r.status == "manual" and "could not confirm" in r.message for r in lab12.values())
    assert "unconfirmed-evidence" in items["_flags"]
    # the host's own evaluation on Food-11 confirms the records: graded as before
    honest = _cifar_with_forged_food()
    honest["verified"] = dict(honest["verified"], dataset="food11")
    items, _ = grade(honest)
    assert items["lab1-2-ran"].status == "pass", items["lab1-2-ran"]


def test_a_model_record_other_than_the_verified_model_does_not_pass_the_architecture() -> None:
    """T13_2 #1's "Model Net with 11 outputs": a record alone, while the model the host
    evaluated in that notebook is another (another class, or another parameter count)."""
    from grader.checks import run_check
    from grader.checks.base import CheckContext

    ev = dict(_cifar_with_forged_food("lab1-2.ipynb"), dataset="food11")
    ev["models"] = [ev["models"][1]]

    def check(e: dict[str, Any], dataset: str = "food11"):
        context = CheckContext(student_id="0556001", part_id="lab1-2", dataset=dataset, evidence=(e,),
                               all_evidence=(e,), dataset_stats={})
        return run_check("model_architecture", context, {})

    out = check(ev)  # 62,006 parameters as the verified Net, but 11 outputs where it has 10
    assert out.status == "manual" and out.fraction == 0 and out.flags == ("unconfirmed-evidence",), out
    out = check(dict(ev, verified=dict(ev["verified"], model="ResNet")))
    assert out.status == "manual" and "ResNet" in out.message, out
    out = check(dict(ev, models=[dict(ev["models"][0], parameters=70000)]))  # another size
    assert out.status == "manual" and "62,006 parameters" in out.message, out
    # the record is the verified model (same class, size and outputs): it passes
    out = check(dict(ev, models=[dict(ev["models"][0], num_outputs=10)], dataset="cifar10"), dataset="cifar10")
    assert out.status == "pass", out
    # nothing verified: the record is all there is, as before
    assert check(dict(ev, verified={"reason": "no model was evaluated"})).status == "pass"


# ---------------------------------------------------------------- parts whose notebooks are not shared

GAN_RUBRIC = load_rubric(Path(__file__).resolve().parent.parent / "labs" / "gan" / "rubric.yaml")


def gan_ev(path: str) -> dict[str, Any]:
    """An executed GAN-lab notebook that trained on MNIST (the probe's session)."""
    return {"path": path, "mode": "execute", "status": "ok", "reason": "", "dataset": "mnist", "errors": [],
            "sections": [], "metrics": {}, "figures": [], "models": [], "optimizers": [], "schedulers": [],
            "normalization": [], "training": [session(3, "mnist", "train", 60000)], "evaluations": []}


def gan_sources(*paths: str) -> dict[str, Any]:
    evidence = [gan_ev(p) for p in paths]
    return to_json(choose_sources(GAN_RUBRIC, student_id="0163001", evidence=evidence, files=[], work_dir=None,
                                  reference=None, dataset_stats={}))


@pytest.mark.parametrize("paths, expected", [
    # each model its notebook
    (("gan.ipynb", "cgan.ipynb", "dcgan.ipynb"), {"gan": "gan.ipynb", "cgan": "cgan.ipynb", "dcgan": "dcgan.ipynb"}),
    # one handed in alone serves its own part only: not the others by their catch-all `*gan*`,
    # nor by the dataset all three parts share
    (("cgan.ipynb",), {"gan": None, "cgan": "cgan.ipynb", "dcgan": None}),
    (("gan.ipynb",), {"gan": "gan.ipynb", "cgan": None, "dcgan": None}),
    (("DCGAN_mnist.ipynb",), {"gan": None, "cgan": None, "dcgan": "DCGAN_mnist.ipynb"}),
    # names only a catch-all matches are no part's better claim: each part may take them
    (("lab_gans.ipynb", "conditional.ipynb"), {"gan": "lab_gans.ipynb", "cgan": "conditional.ipynb",
                                               "dcgan": "lab_gans.ipynb"}),
    # a notebook no pattern names is still found by its dataset
    (("hw5.ipynb",), {"gan": "hw5.ipynb", "cgan": "hw5.ipynb", "dcgan": "hw5.ipynb"}),
])
def test_a_part_whose_notebook_is_not_shared_takes_no_notebook_named_for_another_part(
        paths: tuple[str, ...], expected: dict[str, str | None]) -> None:
    sources = gan_sources(*paths)
    assert {part: s["notebook"] for part, s in sources.items()} == expected


def test_lab1_parts_still_share_a_notebook_by_default() -> None:
    """LAB 1-3's study in the LAB 1-1 notebook (the default `shared: true`)."""
    assert all(p.notebook is None or p.notebook.shared for p in RUBRIC.parts)
    _, sources = grade(dict(complete("lab1-1.ipynb"), sections=[]))
    assert sources["lab1-3"]["notebook"] == "lab1-1.ipynb"
