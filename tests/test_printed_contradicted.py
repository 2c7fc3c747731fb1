"""Printed numbers that the host's own measurement contradicts earn no "shown" points (issue 13 A,
tester t4 finding 4): a model measured at 8 % that prints 63 % and per-class values of 40-75 %
had its test-metrics and per-class items pass; now they wait for a TA, flagged `mismatch`."""

from __future__ import annotations

from grader.checks import run_check
from grader.checks.base import CLASSES, CheckContext

CIFAR = CLASSES["cifar10"]


def ev(printed_total: float, printed_class: float, measured: float) -> dict:
    return {"path": "lab1-1.ipynb", "mode": "execute", "status": "ok", "figures": [], "models": [],
            "probe": {"started": True, "limit_hit": False},
            "optimizers": [{"type": "SGD", "steps": 250, "model": "net"}],
            "training": [{"cell": 4, "model": "net", "dataset": "cifar10", "split": "train", "samples": 1000,
                          "batches": 250, "dataset_length": 1000}],
            "metrics": {"dataset": "cifar10", "test_accuracy": printed_total, "test_loss": 1.05,
                        "per_class_accuracy": {c: printed_class for c in CIFAR}},
            "verified": {"dataset": "cifar10", "test_accuracy": measured,
                         "per_class_accuracy": {c: measured for c in CIFAR}}}


def ctx(e: dict) -> CheckContext:
    return CheckContext(student_id="1410001", part_id="lab1-1", dataset="cifar10", evidence=(e,), all_evidence=(e,))


def test_printed_numbers_far_from_the_measured_ones_wait_for_a_ta() -> None:
    e = ev(0.63, 0.60, 0.084)
    for check in ("test_metrics", "per_class_accuracy"):
        out = run_check(check, ctx(e), {})
        assert out.status == "manual" and out.fraction == 0 and "mismatch" in out.flags, (check, out.message)
        assert "measured 8.4 %" in out.message and "TA" in out.message
        # T14 #11: the verb agrees with what was printed
        verb = "accuracy printed disagrees with" if check == "test_metrics" else "accuracies printed disagree with"
        assert verb in out.message, out.message
    assert run_check("metrics_verified", ctx(e), {}).status == "fail"  # unchanged: the verification item fails


def test_only_the_faked_numbers_are_held_back() -> None:
    e = ev(0.55, 0.90, 0.55)  # the total is the model's, the per-class table was typed in
    assert run_check("test_metrics", ctx(e), {}).status == "pass"
    out = run_check("per_class_accuracy", ctx(e), {})
    assert out.status == "manual" and "airplane printed 90.0 %, measured 55.0 %" in out.message


def test_numbers_that_agree_or_cannot_be_compared_are_unchanged() -> None:
    assert run_check("per_class_accuracy", ctx(ev(0.55, 0.56, 0.55)), {}).status == "pass"  # within 5 points
    assert run_check("test_metrics", ctx(ev(0.551, 0.55, 0.55)), {}).status == "pass"
    e = ev(0.63, 0.60, 0.084)
    e["verified"] = {"dataset": "food11", "test_accuracy": 0.084}  # another dataset's model says nothing here
    assert run_check("test_metrics", ctx(e), {}).status == "pass"
    e["verified"] = {"reason": "the model could not be captured"}
    assert run_check("per_class_accuracy", ctx(e), {}).status == "pass"  # the gate (grading) handles this case
