"""One model per training run, and one per other dataset, evaluated by the host (issue 13 A, finding 4).

Unit level: spec.json's `runs` validated, the evaluator's per-run result checked, the host's
`verified_runs` (accuracies, agreement, reasons), the learning-rate study counting only runs
whose models the host evaluated (trained, distinct), and a notebook's sections each taking the
verified block of their own evaluation cell. The kernel side is in test_verify.py
(`test_each_training_run_is_captured_and_forged_runs_are_not`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.checks import run_check
from grader.checks.base import CheckContext
from grader.sections import view
from grader.verify.data import Split
from grader.verify.runs import check_runs, run_files, runs_block
from grader.verify.spec import runs_of
from honest import line_figure, runs_evidence, verified_runs


def _split(n: int) -> Split:
    return Split("cifar10", tuple(i % 10 for i in range(n)), tuple(range(n)))


def _noisy(split: Split, accuracy: float, shift: int = 1) -> list[int]:
    right = int(accuracy * len(split))
    return [y if i < right else (y + shift) % 10 for i, y in enumerate(split.labels)]


def test_spec_runs_are_validated_entry_by_entry() -> None:
    good = {"optimizer": 13, "class": "Net", "capture": "script", "file": "run0.pt", "bytes": 9, "sample_preds": [1, 2]}
    got = runs_of([good, {"optimizer": 16, "error": "gone"}, dict(good, file="../model.pt"), "x"], 2)
    assert got[0] == good and got[1] == {"optimizer": 16, "error": "gone"}
    assert "malformed" in got[2]["error"] and got[3] == {"optimizer": None, "error": got[3]["error"]}
    assert runs_of(None, 2) == [] and len(runs_of([good] * 100, 2)) == 25


def test_run_files_refuse_missing_or_unknown_files(tmp_path: Path) -> None:
    spec = [{"optimizer": 1, "class": "Net", "capture": "script", "file": "run0.pt", "bytes": 4, "sample_preds": []},
            {"optimizer": 2, "class": "Net", "capture": "script", "file": "run1.pt", "bytes": 4, "sample_preds": []},
            {"optimizer": 3, "error": "its model's tensors were released"}]
    (tmp_path / "run1.pt").write_bytes(b"\x80\x04pickle")  # a pickle is never loaded
    got = run_files(tmp_path, spec)
    assert "missing" in got[0]["reason"] and "path" not in got[1] and got[1]["reason"]
    assert got[2] == {"optimizer": 3, "reason": "its model's tensors were released"}


def test_evaluator_run_results_are_checked() -> None:
    assert check_runs({"runs": [{"predictions": [1, 2]}, {"error": "boom"}, {"predictions": [1]}]}, 3, 2) == [
        [1, 2], "the evaluator could not run its model (boom)", "the evaluator's result for its model is malformed"]
    assert check_runs({}, 2, 2) == ["the evaluator's result holds no predictions of the run models"] * 2
    assert check_runs({}, 0, 2) == []


def test_runs_block_scores_each_run_and_how_alike_they_predict() -> None:
    visible, held = _split(200), _split(100)
    job = {"sample_keys": [0, 1, 2], "mapping": list(range(10)), "kind": "cifar10"}
    a = [_noisy(visible, 0.5), _noisy(held, 0.5)]
    b = [_noisy(visible, 0.3, shift=2), _noisy(held, 0.3, shift=2)]
    runs = [{"optimizer": 13, "class": "Net", "sample_preds": a[0][:3], "path": Path("x"), "format": "torchscript"},
            {"optimizer": 16, "class": "Net", "sample_preds": b[0][:3], "path": Path("y"), "format": "torchscript"},
            {"optimizer": 19, "class": "Net", "sample_preds": a[0][:3], "path": Path("z"), "format": "torchscript"},
            {"optimizer": 22, "class": "Net", "sample_preds": [9, 9, 9], "path": Path("w"), "format": "torchscript"},
            {"optimizer": 25, "reason": "the captured run model file is missing"}]
    out = runs_block(runs, [a, b, a, a], job, visible, held)
    assert [r["optimizer"] for r in out] == [13, 16, 19, 22, 25]
    assert (out[0]["test_accuracy"], out[0]["hidden_accuracy"], out[0]["n"], out[0]["hidden_n"]) == (0.5, 0.5, 200, 100)
    assert out[1]["test_accuracy"] == 0.3 and out[0]["classes"] == 10
    assert out[0]["agreement"] == {"16": pytest.approx(0.3 + 0.0, abs=0.01), "19": 1.0}
    assert out[2]["agreement"]["13"] == 1.0  # a copy: the same predictions
    assert "predicted differently" in out[3]["reason"] and "test_accuracy" not in out[3]
    assert out[4] == {"optimizer": 25, "reason": "the captured run model file is missing"}
    assert runs_block(runs[:1], ["the evaluator could not run its model (x)"], job, visible, None)[0]["reason"] \
        == "the evaluator could not run its model (x)"


def _ev(**kw) -> dict:
    base = {"path": "lab1-3.ipynb", "mode": "execute", "status": "ok", "metrics": {}, "figures": [line_figure()],
            "normalization": [], "optimizers": [], "schedulers": [], "models": [], "training": [], "errors": [],
            "probe": {"started": True, "events": 50}}
    base.update(kw)
    return base


def _study(**kw) -> str:
    ctx = CheckContext(student_id="0556001", part_id="lab1-3", dataset="cifar10", evidence=[_ev(**kw)])
    return run_check("lr_study", ctx, {})


def test_lr_study_counts_only_runs_whose_models_the_host_evaluated() -> None:
    study = runs_evidence((0.1, 0.01))
    assert _study(**study).status == "pass"
    # finding 4 (1400003, 1300003): records of optimizers no model was captured for
    forged = dict(study, verified_runs=[])
    out = _study(**forged)
    assert out.status == "manual" and out.fraction == 0 and out.flags == ("unconfirmed-evidence",)
    assert "tracked no optimizer behind this record" in out.message
    # one real run, one record of an optimizer that never existed
    out = _study(**dict(study, verified_runs=study["verified_runs"][:1]))
    assert out.status == "manual" and "1 initial learning rate(s) trained (0.1)" in out.message
    # no capture at all (the primary failed): the reason is named, a TA decides
    out = _study(**dict(study, verified_runs=[{"optimizer": None, "reason": "no run model was evaluated: x"}]))
    assert out.status == "manual" and "no run model was evaluated: x" in out.message


def test_lr_study_counts_one_model_once_and_a_model_at_chance_not_at_all() -> None:
    study = runs_evidence((0.1, 0.01))
    copy = dict(study, verified_runs=verified_runs([20, 21], agreement=0.99))
    out = _study(**copy)
    assert out.status == "manual" and "one model, counted once" in out.message
    chance = verified_runs([20, 21])
    chance[0].update(test_accuracy=0.1, hidden_accuracy=0.11, predicted_classes=1)
    out = _study(**dict(study, verified_runs=chance))
    assert out.status == "manual" and "at chance level (10.0 % on 500 test images of 10 classes)" in out.message
    # an honest study where one rate diverged: the two others still make it, the third is named
    three = runs_evidence((0.1, 0.01, 0.001))
    three["verified_runs"][0].update(test_accuracy=0.1, hidden_accuracy=0.1)
    out = _study(**three)
    assert out.status == "pass" and "2 initial learning rate(s) trained (0.001, 0.01)" in out.message
    assert "Not counted: 1 run(s) (lr 0.1)" in out.message


def test_each_section_takes_the_verified_block_of_its_own_evaluation() -> None:
    sections = [{"id": "s1", "dataset": "cifar10", "cells": [0, 1, 2], "counts": [1, 2]},
                {"id": "s2", "dataset": "food11", "cells": [3, 4], "counts": [3, 4]}]
    cifar = {"test_accuracy": 0.4, "dataset": "cifar10", "cell": 2}
    food = {"test_accuracy": 0.3, "dataset": "food11", "cell": 4}
    ev = {"sections": sections, "verified": cifar, "verified_more": [food], "metrics": {}}
    one, two = view(ev, ["s1"]), view(ev, ["s2"])
    assert one["verified"] == cifar and two["verified"] == food
    assert one["verified_more"] == [] and two["verified_more"] == []
    lost = dict(ev, verified_more=[{"reason": "the evaluator crashed", "cell": 4}])
    assert view(lost, ["s2"])["verified"] == {"reason": "the evaluator crashed", "cell": 4}
    alone = dict(ev, verified_more=[])
    assert view(alone, ["s2"])["verified"]["elsewhere"] is True


def test_lr_study_needs_two_confirmed_runs_and_a_schedule_is_a_setting_of_one() -> None:
    # T4 finding 3 (1410007): one confirmed run at 0.1 whose StepLR stepped, two at chance: one
    # setting, not two; the runs at chance could make it two, so a TA decides, never a fail
    three = runs_evidence((0.1, 0.01, 0.001))
    for r in three["verified_runs"][1:]:
        r.update(test_accuracy=0.1, hidden_accuracy=0.1)
    steplr = [{"type": "StepLR", "steps": 5, "optimizer_ref": 20}]
    out = _study(**three, schedulers=steplr)
    assert out.status == "manual" and out.flags == ("unconfirmed-evidence",)
    assert "1 setting(s) compared in 1 run(s)" in out.message and "at chance level" in out.message
    # the same with no other run at all: one run with StepLR is one setting (partial: the chart)
    one = runs_evidence((0.1,))
    out = _study(**one, schedulers=steplr)
    assert out.status == "partial" and "Train at least 2 settings" in out.message
    # two confirmed runs at ONE rate, one with StepLR and one without: two settings
    same = runs_evidence((0.1, 0.1))
    assert _study(**same).status == "partial"
    assert _study(**same, schedulers=steplr).status == "pass"
    # the honest sample (lab1_3): 0.1 / 0.01 / 0.001 each with StepLR, 0.1 diverged: pass
    sample = runs_evidence((0.1, 0.01, 0.001))
    sample["verified_runs"][0].update(test_accuracy=0.1, hidden_accuracy=0.1)
    scheds = [{"type": "StepLR", "steps": 10, "optimizer_ref": 20 + k} for k in range(3)]
    out = _study(**sample, schedulers=scheds)
    assert out.status == "pass" and "2 setting(s) compared in 2 run(s)" in out.message


def test_lr_study_runs_of_a_few_steps_are_not_settings() -> None:
    # T4 finding 2 (1430001): one run of 250 steps, two copies of its trained model fine-tuned for
    # 5 steps at other rates (agreement 0.40 / 0.46 < RUN_SAME): not comparable settings
    study = runs_evidence((0.01, 0.05, 0.003))
    for o, steps in zip(study["optimizers"], (250, 5, 5)):
        o["steps"] = steps
    out = _study(**study)
    assert out.status == "manual" and out.flags == ("unconfirmed-evidence",)
    assert "it took 5 optimizer step(s), under a quarter of the 250" in out.message
    # an honest study whose runs trained a comparable budget (one epoch fewer) still passes
    for o, steps in zip(study["optimizers"], (250, 200, 120)):
        o["steps"] = steps
    assert _study(**study).status == "pass"
    # the short runs cannot change the verdict (two long ones already make it): named, not a TA's
    study = runs_evidence((0.01, 0.05, 0.003))
    for o, steps in zip(study["optimizers"], (250, 250, 5)):
        o["steps"] = steps
    out = _study(**study)
    assert out.status == "pass" and "Not counted: 1 run(s) (lr 0.003)" in out.message


def test_lr_study_counts_a_run_begun_from_another_runs_trained_model_once() -> None:
    # T4 finding 2: copy.deepcopy(trained) fine-tuned at other rates; the probe's checksum of the
    # weights each optimizer was built on is the trained run's last checksum
    study = runs_evidence((0.01, 0.05, 0.003))
    trained, init = [12.5, 40.0], [3.0, 30.0]
    for k, o in enumerate(study["optimizers"]):
        o.update(checksum_start=init if k == 0 else trained, checksum_now=trained if k == 0 else [12.5 + k, 40.0])
    out = _study(**study)  # one run and its chart: half the item, and the message says why
    assert out.status == "partial" and out.fraction == 0.5 and not out.flags
    assert "Not counted: 2 run(s) (lr 0.05, 0.003)" in out.message
    assert "began from the weights the run at lr 0.01 ended with" in out.message
    # the fair way: one untrained model copied for each rate: every run starts where none ended
    for k, o in enumerate(study["optimizers"]):
        o.update(checksum_start=init, checksum_now=[20.0 + k, 41.0])
    assert _study(**study).status == "pass"
