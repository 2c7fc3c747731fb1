"""Issue 13 A, round 4 (tester t3, T13_3 #1 and #2): in execute mode a part's printed numbers and
the probe's records (which the student's own process writes) earn nothing by themselves. An item
that credits them (test metrics, per-class accuracy, the model, "ran without errors") passes only
beside the host's own evaluation of a model of the part's dataset from the serving notebook
(`grader.corroborate.verified_for`); otherwise a TA checks it, flagged, never a fail. In-memory
evidence through `grader.grading.run_checks` with the LAB01 rubric; the real run is
tests/test_pipeline.py::test_printed_and_forged_parts_wait_for_a_ta."""

from __future__ import annotations

import math
from typing import Any

import pytest

from grader.checks import run_check
from grader.checks.base import UNCONFIRMED, CheckContext
from grader.corroborate import verified_for
from grader.datasets import CIFAR10_CLASSES, FOOD11_CLASSES
from grader.grading import run_checks
from grader.rubric import builtin_rubric, load_rubric

RUBRIC = load_rubric(builtin_rubric("lab1"))
NO_MODEL = "no model was evaluated on a test split, and no trained model was left at the end of the notebook."
GATED_11 = ("lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-ran")
GATED_12 = ("lab1-2-test-metrics", "lab1-2-model", "lab1-2-ran")


def printed_only(path: str = "lab1-1.ipynb", **kw: Any) -> dict[str, Any]:
    """T13_3 #1 (1400008): one cell of print()s: the handout's test line, a test loss and ten
    per-class lines; no data, no model, no training. The run is fine, the probe saw nothing."""
    ev = {"path": path, "mode": "execute", "status": "ok", "reason": "", "dataset": "cifar10",
          "metrics": {"dataset": "cifar10", "test_accuracy": 0.61, "test_loss": 1.1,
                      "per_class_accuracy": {c: 0.6 for c in CIFAR10_CLASSES}},
          "figures": [], "errors": [], "models": [], "optimizers": [], "schedulers": [], "normalization": [],
          "datasets": [], "dataloaders": [], "sections": [], "training": [], "evaluations": [],
          "cells": {"total": 1}, "probe": {"started": True, "events": 2, "errors": 0},
          "verified": {"reason": NO_MODEL}}
    ev.update(kw)
    return ev


def session(cell: int, dataset: str, split: str, samples: int) -> dict[str, Any]:
    return {"cell": cell, "index": cell, "dataset": dataset, "split": split, "samples": samples, "model": "net"}


def block(dataset: str, acc: float, cell: int) -> dict[str, Any]:
    """The evaluator's block (grader.verify.host) of a model tested on `dataset`."""
    classes = CIFAR10_CLASSES if dataset == "cifar10" else FOOD11_CLASSES
    return {"test_accuracy": acc, "per_class_accuracy": {c: acc for c in classes}, "test_images": 500,
            "model": "Net", "dataset": dataset, "split": "test", "cell": cell}


def forged_food(path: str = "lab1-2.ipynb", **kw: Any) -> dict[str, Any]:
    """T13_3 #2 (1400004): a notebook named for LAB 1-2 whose one cell emits Food-11 dataset,
    model (11 outputs), training and evaluation records and prints a test line."""
    ev = printed_only(path, dataset="food11", metrics={"dataset": "food11", "test_accuracy": 0.55, "test_loss": 1.2},
                      models=[{"ref": 3, "class": "Net", "num_outputs": 11, "parameters": 62006, "cell": 1}],
                      training=[session(1, "food11", "train", 9866)], evaluations=[session(1, "food11", "test", 3347)])
    ev.update(kw)
    return ev


def grade(*evidence: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    results, flags = run_checks(RUBRIC, student_id="1400008", evidence=evidence, files=[], work_dir=None,
                                reference=None, dataset_stats={})
    return results, flags


def assert_to_ta(results: dict[str, Any], ids: tuple[str, ...], *needles: str) -> None:
    for item in ids:
        r = results[item]
        assert (r.status, r.fraction) == ("manual", 0.0), (item, r)
        assert "not a finding against you" in r.message and all(n in r.message for n in needles), (item, r.message)


# ---------------------------------------------------------------- T13_3 #1: printed text alone


@pytest.mark.parametrize("records", [False, True], ids=["prints only", "with forged records"])
def test_printed_metrics_without_a_model_go_to_a_ta(records: bool) -> None:
    """A print-only lab1-1.ipynb earned test-metrics 16, per-class 16 and ran 5 (37/60); with
    forged CIFAR-10 records (1400007) the same. Now each waits for a TA, saying what it would earn
    and why the grader could not confirm it."""
    ev = printed_only()
    if records:
        ev.update(models=[{"ref": 3, "class": "Net", "num_outputs": 10, "parameters": 62006, "cell": 1}],
                  training=[session(1, "cifar10", "train", 50000)], evaluations=[session(1, "cifar10", "test", 10000)])
    results, flags = grade(ev)
    assert_to_ta(results, GATED_11, "no model of cifar10 was captured and tested by the grader in `lab1-1.ipynb`",
                 "no model was evaluated on a test split")
    assert "pass from the outputs: 16 of 16 points" in results["lab1-1-test-metrics"].message
    assert UNCONFIRMED in flags
    assert sum(r.fraction * next(i.points for p in RUBRIC.parts for i in p.items if i.id == k)
               for k, r in results.items() if k.startswith("lab1-1")) == 0


def test_a_failure_stays_a_failure_and_saved_mode_is_unchanged() -> None:
    """Only a pass or partial needs corroboration: what is missing is still missing. Saved mode
    (nothing run, nothing to verify) judges the stored outputs as before."""
    results, _ = grade(printed_only(metrics={"dataset": "cifar10", "test_accuracy": 0.61, "test_loss": 1.1}))
    assert results["lab1-1-per-class"].status == "fail"
    assert results["lab1-1-test-metrics"].status == "manual"
    results, flags = grade(printed_only(mode="saved", probe=None, verified={"reason": "saved mode: nothing was run"}))
    assert all(results[i].status == "pass" for i in ("lab1-1-test-metrics", "lab1-1-per-class")), results
    assert UNCONFIRMED not in flags


def test_a_model_the_grader_could_not_capture_goes_to_a_ta_with_the_reason() -> None:
    """An honest run whose model the grader could not capture (its forward leaves torch): the
    printed metrics are not failed; they wait for a TA, and the message names the grader's reason."""
    why = "the model could not be captured: its forward converts tensors to numpy"
    ev = printed_only(models=[{"ref": 3, "class": "Net", "num_outputs": 10, "cell": 2}],
                      training=[session(3, "cifar10", "train", 50000)], evaluations=[session(4, "cifar10", "test", 10000)],
                      verified={"reason": why + "."})
    results, _ = grade(ev)
    assert_to_ta(results, GATED_11, why)
    assert results["lab1-1-verified"].status == "manual"


# ---------------------------------------------------------------- T13_3 #2: named for the part, forged records


def test_a_notebook_named_for_lab1_2_with_forged_food_records_goes_to_a_ta() -> None:
    """1400004: lab1-2.ipynb of one forging cell earned test-metrics 12, model 10, ran 2."""
    results, flags = grade(forged_food())
    assert_to_ta(results, GATED_12, "no model of food11 was captured and tested by the grader in `lab1-2.ipynb`")
    assert "Net with 11 outputs" in results["lab1-2-model"].message  # what the records said, for the TA
    assert results["lab1-2-accuracy"].status == "manual" and results["lab1-2-verified"].status == "manual"
    assert UNCONFIRMED in flags


def test_forged_food_records_beside_a_verified_cifar_model_go_to_a_ta() -> None:
    """1400006: lab1-2.ipynb trains and tests a real CIFAR-10 LeNet (verified by the host) and
    forges Food-11 records: LAB 1-1 is credited from the CIFAR-10 model, LAB 1-2 is not, and its
    accuracy is not judged on the CIFAR-10 model's."""
    ev = forged_food(training=[session(3, "cifar10", "train", 50000), session(5, "food11", "train", 9866)],
                     evaluations=[session(4, "cifar10", "test", 10000), session(5, "food11", "test", 3347)],
                     metrics={"dataset": "food11", "test_accuracy": 0.55, "test_loss": 1.2},
                     verified=block("cifar10", 0.286, 4))
    results, _ = grade(ev)
    assert_to_ta(results, GATED_12, "the model the grader tested itself was evaluated on cifar10")
    acc = results["lab1-2-accuracy"]
    assert acc.status == "manual" and "55.0 %" in acc.message and "evaluated on cifar10" in acc.message, acc
    assert results["lab1-1-ran"].status == "pass"


def test_a_notebook_verified_on_two_datasets_serves_both_parts() -> None:
    """One notebook (no sections) that trained and tested a CIFAR-10 and a Food-11 model, both
    evaluated by the host (`verified_more`, one block per further dataset): both parts pass; the
    same notebook with only CIFAR-10's block sends LAB 1-2 to a TA."""
    both = forged_food("lab1.ipynb", models=[{"ref": 3, "class": "Net", "num_outputs": 10, "cell": 2},
                                             {"ref": 4, "class": "Net", "num_outputs": 11, "cell": 6}],
                       training=[session(3, "cifar10", "train", 50000), session(7, "food11", "train", 9866)],
                       evaluations=[session(4, "cifar10", "test", 10000), session(8, "food11", "test", 3347)],
                       metrics={"dataset": "food11", "test_accuracy": 0.4, "test_loss": 1.7,
                                "per_class_accuracy": {c: 0.4 for c in FOOD11_CLASSES}},
                       verified=block("cifar10", 0.5, 4), verified_more=[block("food11", 0.4, 8)])
    results, flags = grade(both)
    for item in ("lab1-2-test-metrics", "lab1-2-model", "lab1-2-ran", "lab1-2-verified", "lab1-1-ran"):
        assert results[item].status == "pass", (item, results[item])
    assert UNCONFIRMED not in flags
    results, _ = grade(dict(both, verified_more=[]))
    assert_to_ta(results, GATED_12, "evaluated on cifar10")


def test_verified_for_reads_both_blocks_and_only_measured_ones() -> None:
    cifar, food = block("cifar10", 0.5, 4), block("food11", 0.4, 8)
    assert verified_for({"verified": cifar}, "cifar10") is cifar
    assert verified_for({"verified": cifar}, "food11") is None
    assert verified_for({"verified": cifar, "verified_more": [food]}, "food11") is food
    assert verified_for({"verified": {"reason": "x"}, "verified_more": None}, "cifar10") is None
    for bad in (math.nan, None, True, "0.5"):
        assert verified_for({"verified": dict(cifar, test_accuracy=bad)}, "cifar10") is None, bad
    assert verified_for({"verified": cifar}, None) is None and verified_for({}, "cifar10") is None


def test_normalization_passes_only_through_a_verified_transform_of_its_dataset() -> None:
    """The records-only path (a Normalize whose data reached a model in cells that printed a loss)
    is the student's process's own writing: a TA; a verified Food-11 transform holding it passes,
    also from `verified_more`."""
    mean, std = [0.554, 0.450, 0.346], [0.231, 0.241, 0.242]
    fed = {"mean": mean, "std": std, "dataset": "food11", "applied": True, "cell": 5, "reached_model": True,
           "fed_cells": [5], "host_output": True}
    stats = {"food11": {"mean": mean, "std": std}}

    def check(ev: dict[str, Any]):
        ctx = CheckContext(student_id="s", part_id="bonus", dataset="food11", evidence=(ev,), all_evidence=(ev,),
                           dataset_stats=stats)
        return run_check("normalization", ctx, {"dataset": "food11", "tolerance": 0.02})

    out = check(forged_food(normalization=[fed], verified=block("cifar10", 0.5, 4)))
    assert out.status == "manual" and out.flags == (UNCONFIRMED,) and "evaluated on cifar10" in out.message, out
    transform = f"ToTensor() | Normalize(mean={mean}, std={std})"
    more = forged_food(normalization=[fed], verified=block("cifar10", 0.5, 4),
                       verified_more=[dict(block("food11", 0.4, 8), transform=transform)])
    assert check(more).status == "pass"
