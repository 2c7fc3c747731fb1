"""Check kinds on in-memory evidence: each defect gets the deduction and message it should."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.checks import run_check
from grader.checks.base import CLASSES, CheckContext
from honest import food_verified, handout_net, histogram_figure, line_figure, runs_evidence, verified_block

CIFAR = CLASSES["cifar10"]
FOOD_STATS = {"mean": [0.58, 0.45, 0.33], "std": [0.21, 0.2, 0.19]}


def ev(**kw) -> dict:
    base = {"path": "lab1-1.ipynb", "status": "ok", "metrics": {}, "figures": [], "normalization": [],
            "optimizers": [], "schedulers": [], "models": [], "errors": []}
    base.update(kw)
    return base


def ctx(*evidence: dict, dataset: str = "cifar10", files=(), work_dir=None, reference=None) -> CheckContext:
    return CheckContext(student_id="0556001", part_id="lab1-1", dataset=dataset, evidence=evidence,
                        all_evidence=evidence, files=files, work_dir=work_dir, reference=reference,
                        dataset_stats={"food11": FOOD_STATS})


def full_metrics(acc: float = 0.55) -> dict:
    return {"dataset": "cifar10", "test_accuracy": acc, "test_loss": 1.3,
            "per_class_accuracy": {c: acc for c in CIFAR}}


def test_per_class_all_some_none() -> None:
    assert run_check("per_class_accuracy", ctx(ev(metrics=full_metrics())), {}).status == "pass"
    some = {c: 0.5 for c in CIFAR[:7]}
    out = run_check("per_class_accuracy", ctx(ev(metrics={"per_class_accuracy": some})), {})
    assert out.status == "partial" and out.fraction == pytest.approx(0.7)
    assert "horse" in out.message and "truck" in out.message
    out = run_check("per_class_accuracy", ctx(ev(metrics={"test_accuracy": 0.5})), {})
    assert out.status == "fail" and out.fraction == 0


def test_no_notebook_for_part_is_a_clear_fail_not_a_crash() -> None:
    out = run_check("per_class_accuracy", ctx(), {})
    assert out.status == "fail" and "no notebook" in out.message


def test_test_metrics_partial_when_loss_missing() -> None:
    out = run_check("test_metrics", ctx(ev(metrics={"test_accuracy": 0.5})), {})
    assert out.status == "partial" and out.fraction == 0.5 and "loss" in out.message


def test_weight_histograms_of_layers_vs_inputs() -> None:
    net = handout_net()
    figs = [histogram_figure(net, [f"{l}.weight"]) for l in ("conv1", "conv2", "fc1")]
    params = {"layers": ["conv1", "conv2", "fc1", "fc2", "fc3"]}
    out = run_check("weight_histograms", ctx(ev(figures=figs, verified=verified_block(net))), params)
    assert out.status == "partial" and out.fraction == pytest.approx(0.6)
    assert "fc2.weight" in out.message
    inputs = [{"cell": 5, "kind": "histogram", "subjects": []}] * 3
    out = run_check("weight_histograms", ctx(ev(figures=inputs)), params)
    assert out.status == "fail" and "not any layer" in out.message


def test_normalization_own_vs_imagenet() -> None:
    own = ev(normalization=[{"mean": [0.581, 0.449, 0.331], "std": [0.21, 0.2, 0.19], "dataset": "food11"}],
             verified=food_verified([0.581, 0.449, 0.331], [0.21, 0.2, 0.19]))
    assert run_check("normalization", ctx(own, dataset="food11"), {"tolerance": 0.02}).status == "pass"
    imagenet = ev(normalization=[{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "dataset": "food11"}])
    out = run_check("normalization", ctx(imagenet, dataset="food11"), {})
    assert out.status == "fail" and "ImageNet" in out.message


def test_scheduler_never_stepped_is_named() -> None:
    e = ev(**runs_evidence((0.1, 0.01)), schedulers=[{"type": "StepLR", "steps": 0, "optimizer_ref": 20}],
           figures=[line_figure(3)])
    out = run_check("lr_study", ctx(e), {"min_runs": 2, "require_plot": True})
    assert out.status == "partial" and "never stepped" in out.message
    out = run_check("lr_study", ctx(e), {"min_runs": 2, "require_scheduler": True})
    assert out.status == "partial" and out.fraction < 1
    e["schedulers"] = [{"type": "StepLR", "steps": 3, "optimizer_ref": 20}]
    assert run_check("lr_study", ctx(e), {}).status == "pass"


def test_fabricated_per_class_caught_without_verification() -> None:
    m = full_metrics(0.25)
    m["per_class_accuracy"] = {c: 0.9 for c in CIFAR}
    out = run_check("metrics_verified", ctx(ev(metrics=m)), {})
    assert out.status == "fail" and "mismatch" in out.flags
    out = run_check("metrics_verified", ctx(ev(metrics=full_metrics())), {})
    assert out.status == "manual"


def test_verified_mismatch_flagged() -> None:
    e = ev(metrics=full_metrics(0.9), verified={"test_accuracy": 0.3, "per_class_accuracy": {}, "dataset": "cifar10"})
    out = run_check("metrics_verified", ctx(e), {})
    assert out.status == "fail" and "mismatch" in out.flags and "30.0 %" in out.message


def test_accuracy_against_reference_band() -> None:
    ref = {"epochs": 2, "summary": {"test_accuracy": {"mean": 0.6, "std": 0.01}}}
    # trained as long as the reference (2 passes over 2000 images, as the probe records them)
    probe = {"mode": "execute", "probe": {"started": True, "limit_hit": False},
             "optimizers": [{"type": "SGD", "steps": 1000, "model": "net"}],
             "training": [{"cell": 4, "model": "net", "dataset": "cifar10", "split": "train", "samples": 2000,
                           "batches": 500, "dataset_length": 2000}] * 2}
    # the accuracy judged is the measured one (issue 13 B: a printed one alone goes to a TA)
    def measured(acc: float, **kw) -> dict:
        return ev(metrics=full_metrics(acc), verified={"test_accuracy": acc, "dataset": "cifar10"}, **kw)

    assert run_check("accuracy_vs_reference", ctx(measured(0.58, **probe), reference=ref),
                     {"floor": 0.2}).status == "pass"
    out = run_check("accuracy_vs_reference", ctx(measured(0.35, **probe), reference=ref), {"floor": 0.2})
    assert out.status == "partial" and out.fraction == pytest.approx(0.15 / 0.35, abs=1e-4)
    assert run_check("accuracy_vs_reference", ctx(measured(0.1, **probe), reference=ref),
                     {"floor": 0.2}).status == "fail"
    # How long the student trained is unknown (no probe): below the band is not failed on a guess
    # (this case was `partial` before issue 12 L).
    out = run_check("accuracy_vs_reference", ctx(measured(0.35), reference=ref), {"floor": 0.2})
    assert out.status == "manual" and "could not see how long you trained" in out.message


def test_model_outputs_must_fit_dataset() -> None:
    e = ev(models=[{"class": "Net", "num_outputs": 10, "parameters": 62006, "cell": 2}])
    out = run_check("model_architecture", ctx(e, dataset="food11"), {"num_outputs": 11})
    assert out.status == "partial" and "11" in out.message
    e = ev(models=[{"class": "Net", "num_outputs": 11, "parameters": 62006, "cell": 2}])
    assert run_check("model_architecture", ctx(e, dataset="food11"), {}).status == "pass"


def test_report_sections_from_markdown(tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text("# R\n## Problems and solutions\n## Experiment setup\n## Results\n")
    files = [{"path": "report.md", "kind": "report", "bytes": 10}]
    out = run_check("report_sections", ctx(files=files, work_dir=str(tmp_path)), {})
    assert out.status == "partial" and out.fraction == 0.75 and "Analysis" in out.message
    assert run_check("report_sections", ctx(), {}).status == "fail"


def test_errors_and_limits_in_run_status() -> None:
    e = ev(errors=[{"cell": 7, "ename": "NameError", "evalue": "name 'dataiter' is not defined"}])
    out = run_check("ran_without_errors", ctx(e), {})
    assert out.status == "partial" and "cell 7" in out.message and "NameError" in out.message
    out = run_check("ran_without_errors", ctx(ev(status="killed", reason="memory limit 2 GiB")), {})
    assert out.status == "fail" and "memory" in out.message
    out = run_check("ran_without_errors", ctx(ev(errors=[{"cell": 3, "ename": "KeyboardInterrupt", "evalue": ""}])), {})
    assert "KeyboardInterrupt (the cell was interrupted" in out.message and "KeyboardInterrupt: " not in out.message


def test_a_check_that_raises_becomes_an_error_outcome(tmp_path: Path) -> None:
    (tmp_path / "extra.py").write_text("def boom(ctx, params):\n    raise ValueError('bad')\n")
    out = run_check("custom", ctx(), {"function": "extra.py:boom"}, rubric_dir=tmp_path)
    assert out.status == "error" and "ValueError" in out.message


def test_custom_check_from_file_next_to_rubric(tmp_path: Path) -> None:
    (tmp_path / "extra.py").write_text(
        "from grader.checks.base import Outcome\n"
        "def has_two(ctx, params):\n    return Outcome('pass' if len(ctx.evidence) >= params['n'] else 'fail', 1.0, 'ok')\n")
    out = run_check("custom", ctx(ev(), ev()), {"function": "extra.py:has_two", "args": {"n": 2}}, rubric_dir=tmp_path)
    assert out.status == "pass"


def test_copied_constants_rejected_even_when_close() -> None:
    stats = {"food11": {"mean": [0.486, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    e = ev(normalization=[{"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "dataset": "food11"}],
           verified=food_verified([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    c = CheckContext(student_id="x", part_id="bonus", dataset="food11", evidence=(e,), all_evidence=(e,),
                     dataset_stats=stats)
    assert run_check("normalization", c, {"dataset": "food11", "tolerance": 0.02}).status == "fail"
    assert run_check("normalization", c, {"dataset": "food11", "tolerance": 0.02, "reject": ["half"]}).status == "pass"


def test_check_sentence_after_the_rubric_lead_is_capitalised_but_names_keep_their_spelling() -> None:
    from grader.grading import _message
    from grader.rubric import builtin_rubric, load_rubric

    item = next(i for p in load_rubric(builtin_rubric("lab1")).parts for i in p.items if i.id == "lab1-1-ran")
    assert _message(item, "fail", "after 5 epochs it stopped.").endswith(" After 5 epochs it stopped.")
    assert _message(item, "fail", "lab1-1.ipynb#cell 3 raised ValueError.").endswith(" lab1-1.ipynb#cell 3 raised ValueError.")
    assert _message(item, "fail", "conv1.weight is missing.").endswith(" conv1.weight is missing.")


def test_a_rubric_text_without_final_punctuation_gets_a_full_stop_before_the_check_sentence() -> None:
    """T14 #11: `ok Model Net with 10 outputs`; LAB01's texts end with '.', and stay as they were."""
    from grader.grading import _message
    from grader.rubric import builtin_rubric, load_rubric

    lab1 = load_rubric(builtin_rubric("lab1"))
    item = next(i for p in lab1.parts for i in p.items if i.id == "lab1-1-ran")
    bare = item.model_copy(update={"feedback": item.feedback.model_copy(update={"pass_": "ok", "fail": "not yet"})})
    assert _message(bare, "pass", "model Net with 10 outputs.") == "ok. Model Net with 10 outputs."
    assert _message(bare, "fail", "conv1 is missing.") == "not yet. conv1 is missing."
    # same kind: a text that ends in a closing bracket or quote after its punctuation, or in '!'
    for text in ("Well done (see cell 3).", '"Good!"', "Great!", "Fix it:"):
        closed = item.model_copy(update={"feedback": item.feedback.model_copy(update={"pass_": text})})
        assert _message(closed, "pass", "model Net.") == f"{text} Model Net."
    assert _message(bare, "pass", "") == "ok"
    for part in lab1.parts:
        for it in part.items:
            for status in ("pass", "partial", "fail"):
                lead = {"pass": it.feedback.pass_, "partial": it.feedback.partial or it.feedback.fail,
                        "fail": it.feedback.fail}[status]
                if lead:
                    assert _message(it, status, "x y.") == f"{lead} X y."
