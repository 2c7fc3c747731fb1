"""Issue 13 B (fix round, finding 2): blocking verification must not make the printed number
the measurement.

A notebook that keeps the grader from measuring its model (the probe's export disabled, a
forward that cannot be captured, a teardown that never ends, an export that raises) used to be
judged on the accuracy it printed, and earned the accuracy item automatically on 95 % printed
against 37.9 % real. In execute mode an accuracy the grader could not verify now goes to a TA
(manual, 0 points until confirmed, never a fail); in saved mode, where nothing runs by design,
printed numbers are judged as before.

The `verified` blocks here come from the real `verify_run` on the probe folder each route
leaves behind (no sandbox is needed: each fails before the evaluator starts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grader.checks import run_check
from grader.checks.base import UNCONFIRMED, CheckContext
from grader.verify import verify_run

REF = {"epochs": 1, "summary": {"test_accuracy": {"mean": 0.5, "std": 0.01}}}
PARAMS = {"floor": 0.2, "band": "reference"}
PROBE = {"started": True, "limit_hit": False}
TRAINED = {"optimizers": [{"type": "SGD", "lr": 0.01, "steps": 500, "model": "net", "cell": 3}],
           "training": [{"cell": 4, "model": "net", "dataset": "cifar10", "split": "train", "samples": 2000,
                         "batches": 500, "dataset_length": 2000}]}


def _verified_after(tmp_path: Path, route: str) -> dict[str, Any]:
    """The `verified` block `verify_run` writes for a run that left `route`'s probe folder."""
    run_dir = tmp_path / route
    folder = run_dir / "probe" / "verify"
    folder.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "ok"}))
    errors = {  # what grader.probe.rec_export.export writes when it cannot export the model
        "not capturable": "the model could not be captured: its forward converts tensors to numpy, which "
                          "neither torch.export nor TorchScript can follow",
        "export raised": "the export code failed: RecursionError: maximum recursion depth exceeded",
    }
    if route in errors:
        (folder / "spec.json").write_text(json.dumps({"version": 1, "error": errors[route]}))
    # "export skipped" (export_for_verification replaced by student code) and "teardown timed
    # out" (the teardown killed before it wrote anything) both leave no spec.json at all
    return verify_run(run_dir=run_dir, probe_dir=run_dir / "probe", spec=None, limits=None,  # type: ignore[arg-type]
                      dataset_hint="cifar10")


def _ev(printed: float, verified: dict[str, Any], mode: str = "execute") -> dict[str, Any]:
    return {"path": "lab1-1.ipynb", "mode": mode, "status": "ok", "probe": PROBE if mode == "execute" else None,
            "metrics": {"dataset": "cifar10", "test_accuracy": printed}, "verified": verified, "errors": [],
            **(TRAINED if mode == "execute" else {})}


def _check(ev: dict[str, Any], kind: str = "accuracy_vs_reference", reference: dict | None = REF):
    ctx = CheckContext(student_id="0130002", part_id="lab1-1", dataset="cifar10", evidence=(ev,),
                       all_evidence=(ev,), reference=reference)
    return run_check(kind, ctx, PARAMS if kind == "accuracy_vs_reference" else {})  # each kind takes its own params


@pytest.mark.parametrize("route", ["export skipped", "teardown timed out", "not capturable", "export raised"])
def test_an_accuracy_the_grader_could_not_verify_goes_to_a_ta(tmp_path: Path, route: str) -> None:
    verified = _verified_after(tmp_path, route)
    assert "test_accuracy" not in verified and verified["reason"], verified
    out = _check(_ev(0.95, verified))  # printed 95 %, far above the reference's band
    assert (out.status, out.fraction) == ("manual", 0.0), out.message
    assert out.message.startswith("your printed test accuracy 95.0 % could not be verified (")
    assert verified["reason"].rstrip(".") in out.message and "a TA confirms it" in out.message
    assert "full points from 45.0 %" in out.message  # what the printed number would earn, for the TA
    assert out.flags == (UNCONFIRMED,) and out.evidence == ("lab1-1.ipynb",)
    # the item waits for a TA and is never failed for what the grader could not do
    low = _check(_ev(0.05, verified))
    assert (low.status, low.fraction) == ("manual", 0.0) and "5.0 %" in low.message
    none = _check(_ev(0.95, verified), reference=None)  # no reference: judged on the floor alone
    assert (none.status, none.fraction) == ("manual", 0.0) and "meets the floor of 20.0 %" in none.message


def test_the_metrics_item_never_passes_on_an_unverified_accuracy_either(tmp_path: Path) -> None:
    out = _check(_ev(0.95, _verified_after(tmp_path, "export skipped")), kind="metrics_verified")
    assert out.status == "manual" and out.fraction == 0.0 and "teardown did not finish" in out.message


def test_a_verified_accuracy_is_judged_as_measured_whatever_was_printed() -> None:
    out = _check(_ev(0.95, {"test_accuracy": 0.379, "per_class_accuracy": {}, "dataset": "cifar10"}))
    assert out.status == "partial" and out.fraction < 1 and "37.9 % (verified)" in out.message and UNCONFIRMED not in out.flags
    out = _check(_ev(0.2, {"test_accuracy": 0.52, "per_class_accuracy": {}, "dataset": "cifar10"}))
    assert out.status == "pass" and "52.0 % (verified)" in out.message


def test_saved_mode_still_judges_the_printed_number() -> None:
    """Nothing runs in saved mode, so there is nothing to verify: the printed number is judged
    as it always was (a course that grades saved notebooks chose that)."""
    saved = _ev(0.95, {"reason": "saved mode: nothing was run"}, mode="saved")
    out = _check(saved, reference=None)
    assert (out.status, out.fraction) == ("pass", 1.0) and "printed test accuracy 95.0 %" in out.message
    assert UNCONFIRMED not in out.flags
    low = _check(_ev(0.1, {"reason": "saved mode: nothing was run"}, mode="saved"), reference=None)
    assert low.status == "manual" and "below the rubric's floor" in low.message


def test_nothing_printed_and_nothing_measured_is_still_no_accuracy(tmp_path: Path) -> None:
    ev = dict(_ev(0.95, _verified_after(tmp_path, "teardown timed out")), metrics={"dataset": "cifar10"})
    out = _check(ev)
    assert out.status == "fail" and "no test accuracy was found" in out.message
