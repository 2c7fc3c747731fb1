"""The check-kind registry: every param a kind accepts is read by its check and no other is
read; the kind lists the pipeline uses are queries on KINDS; the two rubric fixes of issue 14
(test_metrics honours `test_images`, normalization honours `applied`)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from honest import food_verified

from grader.checks import KINDS, run_check
from grader.checks.base import CLASSES, CheckContext
from grader.checks.params import Params, expected
from grader.checks.registry import describe_kinds
from grader.evidence import summarize_events

ROOT = Path(__file__).resolve().parents[1]
CIFAR = CLASSES["cifar10"]
PROBE = {"events": 120, "errors": 0, "limit_hit": False, "started": True}
FOOD_STATS = {"mean": [0.55, 0.45, 0.34], "std": [0.23, 0.24, 0.24]}


class Recording:
    """Stands in for a kind's params model: hands out its values and notes every name read;
    a name the model does not declare is noted apart (and raises, as on the model)."""

    def __init__(self, model: Params) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "read", set())
        object.__setattr__(self, "rejected", set())

    def __getattr__(self, name: str) -> Any:
        if name in type(self._model).model_fields:
            self.read.add(name)
            return getattr(self._model, name)
        self.rejected.add(name)
        raise AttributeError(name)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_accepted_param_is_read_and_nothing_else(name: str, tmp_path: Path) -> None:
    kind = KINDS[name]
    rec = Recording(kind.params.model_validate(dict(kind.example)))
    ctx = CheckContext(student_id="s", part_id="p1", dataset="cifar10", rubric_dir=str(tmp_path))
    try:  # an empty submission: each check unpacks its params before it looks at anything
        kind.run(ctx, rec)
    except Exception:  # noqa: BLE001 - custom has no file here; what was read is what counts
        pass
    assert rec.rejected == set(), f"{name} reads params its schema rejects"
    assert rec.read == set(kind.params.model_fields), f"{name} accepts params it never reads"


def test_no_check_reads_params_as_a_dict() -> None:
    old = re.compile(r"\bparams\s*(\.get\(|\[)")
    sources = [*sorted((ROOT / "grader" / "checks").glob("*.py")), ROOT / "grader" / "grading.py",
               ROOT / "grader" / "sources.py", ROOT / "grader" / "rubric.py"]
    found = [f"{p.name}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1)
             if old.search(line)]
    assert found == []


def test_each_check_receives_its_kinds_model() -> None:
    for name, kind in KINDS.items():
        assert kind.run.params_model is kind.params, name  # type: ignore[attr-defined]
        assert kind.params.model_config.get("frozen") and kind.params.model_config.get("extra") == "forbid"
        assert set(kind.dataset_fields) | set(kind.part_fields) <= set(kind.params.model_fields)


def test_the_pipelines_kind_lists_are_the_ones_lab1_was_graded_with() -> None:
    from grader.grading import CORROBORATED, FILE_CHECKS
    from grader.sources import _NOT_SCORED
    from grader.student import quick_unjudged

    # overfitting_gap (issue 17) reads every notebook's runs, as run_comparison does
    assert FILE_CHECKS == {"report_sections", "files_present", "normalization", "custom", "run_comparison",
                           "overfitting_gap"}
    assert _NOT_SCORED == {"report_sections", "files_present", "normalization", "custom", "manual",
                           "ran_without_errors", "run_comparison", "overfitting_gap"}
    # the generative measures (issue 16) judge a generator trained on the real data, not on stand-ins;
    # a gap measured on stand-in data says nothing either (issue 17)
    assert quick_unjudged() == {"accuracy_vs_reference", "generated_samples", "conditional_generation", "vae_bound",
                                "overfitting_gap"}
    assert CORROBORATED == {"test_metrics", "per_class_accuracy", "model_architecture", "ran_without_errors"}
    assert [k for k, spec in KINDS.items() if spec.by_hand] == ["manual"]
    assert {k for k, spec in KINDS.items() if not spec.hint} == {"manual", "custom"}


def test_plain_params_are_validated_into_the_model_and_bad_ones_are_an_error() -> None:
    ctx = CheckContext(student_id="s", part_id="p1", dataset="cifar10")
    out = run_check("ran_without_errors", ctx, {"max_erors": 1})
    assert out.status == "error" and "max_erors" in out.message and "rubric" in out.message


def test_describe_kinds_lists_every_kind_and_param_as_yaml_comments() -> None:
    text = describe_kinds()
    lines = text.splitlines()
    assert lines and all(line.startswith("#") for line in lines)
    for name, kind in KINDS.items():
        assert f"# {name}: {kind.meaning}" in lines
        text = describe_kinds().split(f"# {name}: ", 1)[1].split("\n#\n", 1)[0]  # this kind's block
        for pname, field in kind.params.model_fields.items():
            assert f"#   {pname}: {expected(field)}, " in text and field.description in text
    text = describe_kinds()
    assert "#   test_images: a whole number ≥ 1, optional; " in text
    assert "#   floor: a number between 0 and 1, default 0; " in text
    assert "#   function: a reference \"file.py:function\" to a file next to the rubric, required; " in text
    # each example is YAML a TA can paste, and valid for its kind
    examples = [yaml.safe_load(m.group(1)) for m in re.finditer(r"e\.g\. params: (.*)", text)]
    assert len(examples) == sum(1 for k in KINDS.values() if k.example)
    for name, kind in KINDS.items():
        if kind.example:
            assert kind.params.model_validate(kind.example)

# ---------------------------------------------------------------- test_metrics honours test_images


def ev(**kw: Any) -> dict:
    base = {"path": "lab1-1.ipynb", "mode": "execute", "status": "ok", "figures": [], "normalization": [],
            "schedulers": [], "models": [], "errors": [], "weights_loaded": [], "probe": dict(PROBE),
            "output_truncated": False, "cells": {"total": 6},
            "metrics": {"dataset": "cifar10", "test_accuracy": 0.5, "test_loss": 1.4,
                        "per_class_accuracy": {c: 0.5 for c in CIFAR}},
            "optimizers": [{"type": "SGD", "lr": 0.001, "steps": 500, "model": "net", "cell": 3}],
            "training": [_pass(3, 2000, "train", length=2000)],
            "datasets": [{"class": "CIFAR10", "dataset": "cifar10", "split": "train", "length": 2000},
                         {"class": "CIFAR10", "dataset": "cifar10", "split": "test", "length": 2000}]}
    base.update(kw)
    return base


def _pass(cell: int, samples: int, split: str, *, length: int | None) -> dict:
    return {"cell": cell, "model": "net", "model_class": "Net", "model_ref": 7, "loader": ["loader"],
            "dataset": "cifar10", "split": split, "samples": samples, "batches": max(samples // 4, 1),
            "grad_enabled": split == "train", "training_mode": split == "train", "dataset_length": length}


def _metrics(e: dict, test_images: int | None = 10000, **ctx_kw: Any):
    ctx = CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10", evidence=(e,), all_evidence=(e,),
                       **ctx_kw)
    params = {"dataset": "cifar10", "require": ["loss", "accuracy"]}
    return run_check("test_metrics", ctx, params | ({"test_images": test_images} if test_images else {}))


def test_a_subset_of_four_test_images_no_longer_earns_full_points() -> None:
    """The issue's case: `Subset(testset, range(4))` evaluated in full looked like the whole split."""
    subset = ev(evaluations=[_pass(5, 4, "test", length=4)])
    out = _metrics(subset)
    assert out.status == "partial" and out.fraction == 0.5
    assert "evaluated on at most 4 of the 2,000 test images" in out.message
    # next(iter(testloader)): one batch of the whole split
    batch = ev(evaluations=[_pass(5, 4, "test", length=2000)])
    assert _metrics(batch).status == "partial"
    # without test_images the whole mounted split is the bar, so the subset is still caught
    assert _metrics(subset, test_images=None).status == "partial"


def test_the_bar_is_capped_at_the_mounted_test_split() -> None:
    """The demo's stand-ins hold 2000 (or 500) test images, not 10000: the whole of them passes."""
    whole = ev(evaluations=[_pass(5, 2000, "test", length=2000)])
    assert _metrics(whole).status == "pass"
    tiny = ev(evaluations=[_pass(5, 500, "test", length=500)],
              datasets=[{"class": "CIFAR10", "dataset": "cifar10", "split": "test", "length": 500}])
    assert _metrics(tiny).status == "pass"
    # the grader's own count of the mounted split wins over what the run shows (no test dataset seen)
    hidden = ev(evaluations=[_pass(5, 4, "test", length=4)], datasets=[])
    assert _metrics(hidden).status == "pass"  # nothing says the split is larger: the grader cannot tell
    out = _metrics(hidden, test_split_size=2000)
    assert out.status == "partial" and "4 of the 2,000 test images" in out.message


def test_a_lower_test_images_asks_for_that_many_only() -> None:
    """Case of the same kind: a rubric asking for 1000 of the 2000 images (a quick lab)."""
    some = ev(evaluations=[_pass(5, 1000, "test", length=1000)])
    assert _metrics(some, test_images=1000).status == "pass"
    few = ev(evaluations=[_pass(5, 100, "test", length=100)])
    out = _metrics(few, test_images=1000)
    assert out.status == "partial" and "100 of the 2,000 test images (the rubric asks for at least 1,000)" in out.message
    # the host's own evaluation says how large the mounted split is, when no dataset record does
    verified = {"dataset": "cifar10", "test_accuracy": 0.5, "test_images": 2000, "split": "test", "cell": 5,
                "per_class_accuracy": {c: 0.5 for c in CIFAR}}
    only_host = ev(evaluations=[_pass(5, 4, "test", length=4)], datasets=[], verified=verified)
    assert _metrics(only_host, test_images=None).status == "partial"

# ---------------------------------------------------------------- normalization honours `applied`


OWN = {"mean": [0.551, 0.449, 0.341], "std": [0.231, 0.24, 0.239]}


def _norm(*records: dict, verified: dict | None = None):
    e = ev(normalization=list(records), verified=verified or {"reason": "no model was captured"})
    ctx = CheckContext(student_id="s", part_id="bonus", dataset="food11", evidence=(e,), all_evidence=(e,),
                       dataset_stats={"food11": FOOD_STATS})
    return run_check("normalization", ctx, {"dataset": "food11", "tolerance": 0.02})


def test_an_unapplied_normalize_earns_no_bonus() -> None:
    """The issue's case: a Normalize with the right numbers that no dataset's transform held."""
    out = _norm(dict(OWN, dataset=None, applied=False, cell=4))
    assert out.status == "fail" and out.fraction == 0 and "never applied" in out.message
    # a record that does not say whether it was applied (older, or written by the student's code)
    out = _norm(dict(OWN, dataset="food11", cell=4))
    assert out.status == "fail" and "never applied" in out.message
    # an applied one with no host confirmation still goes to a TA, as before
    assert _norm(dict(OWN, dataset="food11", applied=True, cell=4)).status == "manual"


def test_an_honest_notebook_keeps_its_bonus() -> None:
    """What the probe writes for a Normalize in a dataset's transform is `applied: true`; with the
    host's evaluation confirming the transform it passes (the demo's 0556001 and 0556002)."""
    events = [{"kind": "normalize", "id": 1, "cell": 3, **OWN},
              {"kind": "dataset", "id": 2, "cell": 3, "class": "ImageFolder", "root": "/data/food11/training",
               "length": 660},
              {"kind": "normalization", "id": 3, "cell": 3, "normalize": 1, "dataset": 2, **OWN}]
    written = summarize_events(events)["normalization"]
    assert [n["applied"] for n in written] == [True]
    confirmed = food_verified(OWN["mean"], OWN["std"])
    assert _norm(*written, verified=confirmed).status == "pass"
    # the same Normalize, never put in a transform: only the `normalize` event
    unapplied = summarize_events(events[:2])["normalization"]
    assert [n["applied"] for n in unapplied] == [False]
    assert _norm(*unapplied).status == "fail"

# ---------------------------------------------------------------- params that were accepted or read, not both


def _ctx(*evidence: dict, **kw: Any) -> CheckContext:
    return CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10", evidence=evidence,
                        all_evidence=evidence, **kw)


def test_per_class_reads_classes_and_min_fraction() -> None:
    shown = ev(metrics={"per_class_accuracy": {c: 0.5 for c in CIFAR[:8]}})
    assert run_check("per_class_accuracy", _ctx(shown), {}).status == "partial"
    out = run_check("per_class_accuracy", _ctx(shown), {"min_fraction": 0.8})
    assert out.status == "pass" and "8 of 10" in out.message
    out = run_check("per_class_accuracy", _ctx(shown), {"classes": 11})
    assert out.status == "error" and "expects 11 classes but cifar10 has 10" in out.message


def test_model_architecture_reads_layers() -> None:
    model = {"class": "Net", "num_outputs": 10, "cell": 2, "layers": [["conv1", "Conv2d"], ["fc1", "Linear"]]}
    e = ev(models=[model])
    assert run_check("model_architecture", _ctx(e), {"layers": ["conv1"]}).status == "pass"
    out = run_check("model_architecture", _ctx(e), {"layers": ["conv1", "fc3"]})
    assert out.status == "partial" and "fc3" in out.message and "conv1" not in out.message.split("without")[1]
    assert run_check("model_architecture", _ctx(ev(models=[dict(model, layers=[])])),
                     {"layers": ["conv1"]}).status == "manual"


def test_report_sections_reads_min_words(tmp_path: Path) -> None:
    work = tmp_path / "work" / "s"
    work.mkdir(parents=True)
    (work / "report.md").write_text("# Results\nThe model reached 55 percent.\n# Analysis\nIt overfits.\n")
    files = ({"path": "report.md", "kind": "report", "bytes": 60},)
    params = {"sections": ["Results", "Analysis"]}
    assert run_check("report_sections", _ctx(files=files, work_dir=str(work)), params).status == "pass"
    out = run_check("report_sections", _ctx(files=files, work_dir=str(work)), params | {"min_words": 200})
    assert out.status == "partial" and "fewer than the 200 asked for" in out.message


def test_report_sections_default_to_the_labs_own(tmp_path: Path) -> None:
    # an item naming no sections asks for lab.yaml's report.sections (carried in the context),
    # and only without a lab for the historical four
    work = tmp_path / "work" / "s"
    work.mkdir(parents=True)
    (work / "report.md").write_text("# Method\nAn MLP.\n# Findings\nIt works.\n")
    files = ({"path": "report.md", "kind": "report", "bytes": 40},)
    own = _ctx(files=files, work_dir=str(work), report_sections=("Method", "Findings"))
    assert run_check("report_sections", own, {}).status == "pass"
    assert run_check("report_sections", own, {"sections": ["Method", "Results"]}).status != "pass"
    plain = run_check("report_sections", _ctx(files=files, work_dir=str(work)), {})
    assert plain.status != "pass" and "Experiment setup" in plain.message


def test_metrics_verified_reads_consistency_tolerance() -> None:
    # nothing measured; per-class numbers averaging 50 % beside a printed total of 58 %
    e = ev(metrics={"dataset": "cifar10", "test_accuracy": 0.58, "per_class_accuracy": {c: 0.5 for c in CIFAR}},
           verified={"reason": "no model was captured"})
    assert run_check("metrics_verified", _ctx(e), {}).status == "manual"  # within the default 0.1
    out = run_check("metrics_verified", _ctx(e), {"consistency_tolerance": 0.05})
    assert out.status == "fail" and "average 50.0 %" in out.message


def test_manual_reads_its_message() -> None:
    assert run_check("manual", _ctx(), {"message": "shown in class"}).message == "shown in class"
    assert run_check("manual", _ctx(), {}).message == "graded by a TA."


def _saved(line: str | None, **kw: Any) -> dict:
    """A saved-mode notebook whose final test accuracy was read from `line` (no probe, no host count)."""
    mentions = [{"kind": "test_accuracy", "split": "test", "value": 0.5, "class": None, "cell": 5, "raw": line}] \
        if line else []
    return ev(**({"mode": "saved", "probe": None, "training": [], "datasets": [], "evaluations": [],
                  "metrics": {"dataset": "cifar10", "test_accuracy": 0.5, "test_loss": 1.4, "mentions": mentions,
                              "per_class_accuracy": {c: 0.5 for c in CIFAR}}} | kw))


def test_saved_mode_takes_the_printed_image_count_as_coverage() -> None:
    """T14 #1: in saved mode the host counts nothing, so 'on the 100 test images' was a pass."""
    hundred = _saved("Accuracy of the network on the 100 test images: 50.00 %")
    out = _metrics(hundred, test_split_size=2000)
    assert out.status == "partial" and out.fraction == 0.5
    assert "evaluated on at most 100 of the 2,000 test images (the rubric asks for at least 2,000)" not in out.message
    assert "evaluated on at most 100 of the 2,000 test images: evaluate" in out.message
    # the split's size unknown: the rubric's test_images is the bar
    out = _metrics(hundred)
    assert out.status == "partial" and "at most 100 test images (the rubric asks for at least 10,000)" in out.message
    # the whole split printed passes; no count printed: the grader cannot tell, as before
    whole = _saved("Accuracy of the network on the 2000 test images: 50 %")
    assert _metrics(whole, test_split_size=2000).status == "pass"
    assert _metrics(_saved("Accuracy of the network on the 10000 test images: 50 %")).status == "pass"
    assert _metrics(_saved("Test accuracy: 50 %"), test_split_size=2000).status == "pass"
    assert _metrics(_saved(None), test_images=None).status == "pass"


def test_a_printed_tiny_evaluation_is_a_subset_even_with_no_bar() -> None:
    """Same kind: 'on the 4 test images' with no test_images and no known split size."""
    out = _metrics(_saved("Accuracy on the 4 test images: 50 %"), test_images=None)
    assert out.status == "partial" and "evaluated on at most 4 test images: evaluate" in out.message
    assert _metrics(_saved("Accuracy on the 100 test images: 50 %"), test_images=None).status == "pass"


def test_saved_mode_reads_part_of_and_correct_of_counts() -> None:
    """T14B N1-N3: '100 of 500 test images', '100/100 test images', '(74/100 correct)'."""
    for line in ("Accuracy on 100 of 500 test images: 74.00 %", "Accuracy on 100/100 test images: 74.00 %",
                 "Test accuracy: 74.00 % (74/100 correct)"):
        out = _metrics(_saved(line), test_split_size=500)
        assert out.status == "partial" and "at most 100 of the 500 test images" in out.message, (line, out)
    assert _metrics(_saved("Accuracy: 490/500 (98%)"), test_split_size=500).status == "pass"


def test_execute_mode_ignores_the_printed_count() -> None:
    """The host's count wins: a whole-split evaluation passes whatever the line says."""
    whole = _saved("Accuracy on the 4 test images: 50 %", mode="execute", probe=dict(PROBE),
                   evaluations=[_pass(5, 2000, "test", length=2000)])
    assert _metrics(whole).status == "pass"


def test_saved_per_class_accuracies_of_a_printed_tiny_evaluation_earn_half() -> None:
    """T14 #1: per-class accuracies over the 4 images of `on the 4 test images` earned 15/15."""
    def per_class(e: dict, **ctx_kw: Any):
        ctx = CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10", evidence=(e,), all_evidence=(e,),
                           **ctx_kw)
        return run_check("per_class_accuracy", ctx, {"dataset": "cifar10"})
    out = per_class(_saved("Accuracy of the network on the 4 test images: 50 %"))
    assert out.status == "partial" and out.fraction == 0.5
    assert "but the model was evaluated on at most 4 test images" in out.message
    assert per_class(_saved("Accuracy of the network on the 100 test images: 50 %"), test_split_size=2000).status \
        == "partial"
    assert per_class(_saved("Accuracy of the network on the 100 test images: 50 %")).status == "pass"  # no bar
    assert per_class(_saved("Test accuracy: 50 %")).status == "pass"
    # execute mode: the host's count and measurement decide, not the printed line
    executed = _saved("Accuracy on the 4 test images: 50 %", mode="execute", probe=dict(PROBE),
                      evaluations=[_pass(5, 4, "test", length=4)])
    assert per_class(executed).status == "pass"


def test_the_grader_counts_the_test_split_of_the_stand_ins_it_is_given(tiny_datasets: Path) -> None:
    """Saved mode on stand-in data: a run printing 'on the 500 test images' of a 500-image test
    split evaluated the whole split, so the bar is the mounted split, counted from its manifest
    (grader.pipeline feeds it to every check); a real dataset (no manifest) is left to the runs."""
    from grader.datasets import locate, read_manifest, registry
    from grader.pipeline import _test_split_size

    for spec in registry.SPECS:
        count = read_manifest(locate(spec.name, tiny_datasets))["splits"][spec.test_split]
        assert _test_split_size(spec.name, str(tiny_datasets)) == count > 0
    whole = _saved(f"Accuracy of the network on the {_test_split_size('mnist', str(tiny_datasets))} test images: 50 %")
    assert _metrics(whole, test_split_size=_test_split_size("mnist", str(tiny_datasets))).status == "pass"
    real = tiny_datasets.parent / "real-mnist"
    shutil.copytree(locate("mnist", tiny_datasets), real / "MNIST")
    (real / "MNIST" / "manifest.json").unlink()
    assert _test_split_size("mnist", str(real)) is None
    assert _test_split_size("mnist", str(tiny_datasets.parent / "nowhere")) is None
