"""The overfitting gap measured two ways (issue 17, item 3).

Unit level: splits.json validated run by run, files mapped onto the dataset by name (others
refused), the student's own class numbering read from their labels, the capped uniform sample,
the host's scores and merge into `verified_runs` and `Run.verified`, the gap from printed curves,
and the `overfitting_gap` check on in-memory run records (baseline shown and measured, regularized
runs compared with it, a curve gap far from the measured one and a contradicted claim sent to a
TA with both numbers). One kernel test runs a notebook that random_splits cats-vs-dogs in the
sandbox and checks each run's measured gap against a fresh evaluation the notebook printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from grader.checks.base import CheckContext
from grader.checks.overfit import claims, curve_gap, in_effect, overfitting_gap
from grader.datasets import registry
from grader.runrecords import _verified
from grader.verify.spec import NotVerified
from grader.verify.splits import (
    MAX_PER_SPLIT,
    _score,
    label_mapping,
    map_split,
    merge_runs,
    sample_names,
    validate_splits,
)

VERIFIER = registry.get("catsdogs").split_verifier
assert VERIFIER is not None


def _entry(**kw: Any) -> dict[str, Any]:
    keys = ["cat.1.jpg", "dog.1.jpg"]
    return {"optimizer": 7, "train": 0, "val": 1,
            "transform": {"steps": [{"op": "ToTensor", "family": "v1"}], "random": [], "unknown": []},
            "flatten_input": False, "outputs": 2, "sample": {"keys": keys, "preds": [1, 0], "labels": [1, 0]},
            "train_labels": [["cat.2.jpg", 1]], "cells": [4],
            "model": {"file": "split0.pt", "class": "Net", "capture": "script", "bytes": 10}, **kw}


def _lists() -> list[dict[str, Any]]:
    return [{"dirs": ["/tmp/datasets-nctu/cats-vs-dogs/train"], "names": ["cat.2.jpg", "dog.2.jpg"], "dir": [0, 0]},
            {"dirs": ["/tmp/datasets-nctu/cats-vs-dogs/train"], "names": ["cat.1.jpg", "dog.1.jpg"], "dir": [0, 0]}]


# ---------------------------------------------------------------- the host side


def test_split_description_is_validated_run_by_run() -> None:
    doc = {"version": 1, "lists": _lists(),
           "runs": [_entry(), _entry(optimizer=8, model={"file": "../model.pt", "class": "N", "capture": "script",
                                                          "bytes": 1}),
                    _entry(optimizer=9, val=5), {"optimizer": 10, "error": "its training dataset was gone"}, "x"]}
    got = validate_splits(doc)
    assert got["runs"][0]["model"]["file"] == "split0.pt" and got["runs"][0]["sample"]["preds"] == [1, 0]
    assert [r.get("error", "") for r in got["runs"][1:3]] == ["its entry in the split description is malformed"] * 2
    assert got["runs"][3] == {"optimizer": 10, "error": "its training dataset was gone"}
    assert got["runs"][4]["optimizer"] is None
    bad_list = {"version": 1, "lists": [{"dirs": ["/d"], "names": ["../../etc/passwd"], "dir": [0]}], "runs": []}
    for doc in ({"version": 1, "error": "the notebook never imported torch"}, bad_list, {"version": 2}):
        with pytest.raises(NotVerified):
            validate_splits(doc)


def test_files_map_by_name_onto_the_dataset_and_others_are_refused() -> None:
    listed = {"dirs": ["/tmp/datasets-nctu/cats-vs-dogs/train", "/tmp/work/data/train/cat"],
              "names": ["cat.1.jpg", "cat.2.jpg", "kitten.jpg", "cat.999.jpg", "cat.1.jpg"], "dir": [0, 1, 1, 0, 0]}
    got = map_split(listed, present=frozenset({"cat.1.jpg", "cat.2.jpg", "kitten.jpg"}), verifier=VERIFIER,
                    mounted=lambda d: d.startswith("/tmp/datasets-nctu/"))
    # kitten.jpg is no cats-vs-dogs name, cat.999.jpg is not in the folder: both refused; cat.2 was a copy
    assert got == {"names": ["cat.1.jpg", "cat.2.jpg"], "refused": 2, "copied": 1}


def test_label_mapping_reads_the_students_own_numbering() -> None:
    assert label_mapping([(0, 0), (1, 1), (1, 1)], 2) == [0, 1]
    assert label_mapping([(1, 0), (0, 1)], 2) == [1, 0]  # cat -> 1, dog -> 0
    assert label_mapping([(0, 0)], 2) == [0, 1]  # every label its class: the identity
    with pytest.raises(NotVerified, match="two classes"):
        label_mapping([(0, 0), (0, 1)], 2)
    with pytest.raises(NotVerified, match="every class"):
        label_mapping([(1, 0)], 2)


def test_the_sample_is_capped_uniform_and_shared_by_runs_of_one_split() -> None:
    names = [f"{a}.{n}.jpg" for a in ("cat", "dog") for n in range(3000)]
    first = sample_names(names)
    assert len(first) == MAX_PER_SPLIT and len(set(first)) == MAX_PER_SPLIT
    assert 0.4 < sum(n.startswith("cat") for n in first) / MAX_PER_SPLIT < 0.6
    other = sample_names(names[100:])  # another run's split, most files shared
    assert len(set(first) & set(other)) > 0.9 * MAX_PER_SPLIT
    assert sample_names(names[:10]) == names[:10]


def _plan(train: list[str], val: list[str]) -> dict[str, Any]:
    return {"train": train, "val": val, "train_files": len(train), "val_files": len(val), "overlap": 0,
            "mapping": [1, 0], "steps": [{"op": "ToTensor", "family": "v1"}], "notes": ["a note"],
            "sample": {"keys": val[:2], "preds": [0, 1]}}


def test_scores_are_computed_with_the_students_numbering_and_an_unfaithful_capture_is_refused() -> None:
    train = [f"cat.{n}.jpg" for n in range(5)] + [f"dog.{n}.jpg" for n in range(5)]
    val = ["dog.10.jpg", "cat.10.jpg", "cat.11.jpg", "dog.11.jpg"]
    # output 1 means cat for this student: the training files all right, the validation half
    preds = {**{n: 1 if n.startswith("cat") else 0 for n in train}, "dog.10.jpg": 0, "cat.10.jpg": 1,
             "cat.11.jpg": 0, "dog.11.jpg": 1}
    got = _score(7, _plan(train, val), preds, VERIFIER)
    assert (got["train_accuracy"], got["val_accuracy"], got["gap"], got["train_n"], got["val_n"]) == (1.0, 0.5, 0.5, 10, 4)
    assert got["gap_note"] == "a note" and got["gap_agreement"] == 1.0
    plan = _plan(train, val)
    plan["sample"] = {"keys": val[:2], "preds": [1, 0]}  # the notebook's model predicted otherwise
    assert "predicted differently" in _score(7, plan, preds, VERIFIER)["gap_reason"]


def test_gap_keys_reach_the_run_entries_and_run_verified() -> None:
    runs = [{"optimizer": 3, "test_accuracy": 0.5, "n": 10}, {"optimizer": None, "reason": "no test split"}]
    block = {"runs": [{"optimizer": 3, "train_accuracy": 0.99, "train_n": 150, "val_accuracy": 0.7, "val_n": 50,
                       "gap": 0.29}, {"optimizer": 5, "gap_reason": "its training dataset was gone"}]}
    merged = merge_runs(runs, block)
    ev = {"verified_runs": merged}
    assert _verified(ev, 3) == {"test_accuracy": 0.5, "n": 10, "train_accuracy": 0.99, "train_n": 150,
                                "val_accuracy": 0.7, "val_n": 50, "gap": 0.29}
    assert _verified(ev, 5) == {"reason": "no test split", "gap_reason": "its training dataset was gone"}
    failed = {"verified_runs": merge_runs(runs, {"reason": "splits.json is malformed"})}
    assert _verified(failed, 3)["gap_reason"] == "splits.json is malformed"
    assert _verified(failed, 9)["gap_reason"] == "splits.json is malformed"


def test_only_a_lab_with_a_dataset_the_student_splits_gets_the_split_capture() -> None:
    from grader.pipeline import _split_datasets

    class Lab:
        datasets = {"catsdogs": None, "cifar10": None}

    assert _split_datasets(Lab, {"catsdogs": "/d/cats-vs-dogs", "cifar10": "/d/cifar"}) == {"catsdogs": "/d/cats-vs-dogs"}
    assert _split_datasets(Lab, {"cifar10": "/d/cifar"}) == {}


# ---------------------------------------------------------------- curves, regularizers, claims


def test_the_curve_gap_is_read_from_printed_training_and_validation_curves() -> None:
    curves = {"train_acc (printed)": [[1, 0.7], [2, 0.9], [3, 0.99]], "val_acc (printed)": [[1, 0.65], [2, 0.7],
                                                                                             [3, 0.68]]}
    got = curve_gap(curves)
    assert {k: got[k] for k in ("kind", "last", "max", "at", "series")} == {
        "kind": "accuracy", "last": 0.31, "max": 0.31, "at": 3.0, "series": "val_acc (printed)"}
    assert got["points"][-1] == (3.0, 0.99, 0.68)
    percent = {"train_acc (printed)": [[1, 90.0]], "test_acc (printed)": [[1, 70.0]]}  # validation named test
    assert curve_gap(percent)["last"] == pytest.approx(0.2)
    losses = {"train_loss (printed)": [[1, 0.2]], "val_loss (printed)": [[1, 0.5]]}
    assert curve_gap(losses)["kind"] == "loss" and curve_gap(losses)["last"] == pytest.approx(0.3)
    assert curve_gap({"train_acc (printed)": [[1, 0.9]]}) is None


def test_regularizers_come_from_the_run_record_else_from_what_was_declared() -> None:
    ran = {"regularizers": {"dropout": {"modules": 1, "train": 40, "eval": 4}, "weight_decay": 0.0,
                            "augmentation": {"train": ["RandomHorizontalFlip"], "eval": []}}}
    assert in_effect(ran, {}) == (frozenset({"dropout", "augmentation"}), True)
    declared = {"weight_decay": 1e-4, "model_refs": [2]}
    ev = {"models": [{"ref": 2, "layers": [["0", "Conv2d"], ["3", "Dropout"]]}]}
    assert in_effect(declared, ev) == (frozenset({"weight_decay", "dropout"}), False)


def test_claims_of_a_reduction_are_found_and_negated_ones_are_not() -> None:
    text = ("## Analysis\nDropout reduced overfitting: the gap shrank. Weight decay did not help the gap.\n\n"
            "- With data augmentation the generalization gap is smaller.\nBatchNorm made training faster.")
    assert [r for r, _ in claims(text)] == ["dropout", "augmentation"]
    assert claims("- Weight decay reduced overfitting slightly.") == [("weight_decay",
                                                                      "Weight decay reduced overfitting slightly.")]


# ---------------------------------------------------------------- the check on run records


DROPOUT = {"dropout": {"modules": 1, "train": 12, "eval": 2}}
AUGMENT = {"augmentation": {"train": ["RandomHorizontalFlip"], "eval": []}}


def _run(name: str, gap: float | None, *, regs: dict[str, Any] | None = None, curve: tuple[float, float] | None,
         order: int = 1, **verified: Any) -> dict[str, Any]:
    v = ({"train_accuracy": 0.99, "val_accuracy": round(0.99 - gap, 4), "gap": gap, "train_n": 150, "val_n": 50}
         if gap is not None else {"gap_reason": "its model could not be captured"})
    curves = {"train_acc (printed)": [[1, 0.8], [2, curve[0]]], "val_acc (printed)": [[1, 0.7], [2, curve[1]]]} \
        if curve else {}
    return {"name": name, "status": "trained", "cells": [order + 3], "regularizers": regs or {"weight_decay": 0.0},
            "curves": curves, "verified": {**v, **verified}}


def _ctx(runs: list[dict[str, Any]], work: Path | None = None, markdown: str = "") -> CheckContext:
    ev = {"path": "catsdogs.ipynb", "mode": "execute", "runs": runs}
    if work is not None:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown)])
        nbformat.write(nb, work / "catsdogs.ipynb")
    return CheckContext(student_id="s", part_id="regularization", dataset="catsdogs", evidence=[ev],
                        all_evidence=[ev], work_dir=str(work) if work else None)


def test_a_baseline_gap_shown_and_measured_passes_and_a_far_curve_gap_goes_to_a_ta() -> None:
    ok = overfitting_gap(_ctx([_run("run 1", 0.3, curve=(0.99, 0.70))]), {"role": "baseline"})
    assert ok.status == "pass" and "gap 30.0 %" in ok.message, ok.message
    far = overfitting_gap(_ctx([_run("run 1", 0.3, curve=(0.99, 0.95))]), {"role": "baseline"})
    assert far.status == "manual" and "gap-mismatch" in far.flags
    assert "printed a validation accuracy of 95.0 % at epoch 2, but its model measures 69.0 %" in far.message
    # the printed training accuracy (a running accuracy in training mode) is shown, not compared
    gap = overfitting_gap(_ctx([_run("run 1", 0.3, curve=(0.80, 0.69))]), {"role": "baseline"})
    assert gap.status == "pass" and "gap of 11.0 %" in gap.message and "gap 30.0 %" in gap.message, gap.message
    drop = overfitting_gap(_ctx([_run("run 1", 0.3, curve=(0.80, 0.69), regs=DROPOUT)]), {"role": "baseline"})
    assert drop.status == "pass", drop.message
    unshown = overfitting_gap(_ctx([_run("run 1", 0.3, curve=None)]), {"role": "baseline"})
    assert unshown.status == "partial" and unshown.fraction == 0.5
    unmeasured = overfitting_gap(_ctx([_run("run 1", None, curve=(0.99, 0.7))]), {"role": "baseline"})
    assert unmeasured.status == "manual" and "could not be captured" in unmeasured.message


def test_regularized_runs_are_each_compared_with_the_baseline() -> None:
    base = _run("run 1", 0.30, curve=(0.99, 0.69))
    drop = _run("run 2", 0.12, regs=DROPOUT, curve=(0.95, 0.87), order=2)
    aug = _run("run 3", 0.05, regs=AUGMENT, curve=(0.90, 0.94), order=3)
    both = overfitting_gap(_ctx([base, drop, aug]), {"role": "regularized", "min_runs": 2})
    assert both.status == "pass", both.message
    assert "run 2 (+dropout): gap 12.0 %, 18.0 % smaller than the baseline's" in both.message, both.message
    one = overfitting_gap(_ctx([base, drop]), {"role": "regularized", "min_runs": 2})
    assert one.status == "partial" and one.fraction == 0.5 and "1 more run" in one.message
    lost = overfitting_gap(_ctx([base, drop, _run("run 3", None, regs=AUGMENT, curve=None, order=3)]),
                           {"role": "regularized"})
    assert lost.status == "manual" and "could not be captured" in lost.message


def test_a_claim_the_measurement_contradicts_goes_to_a_ta_with_both_numbers(tmp_path: Path) -> None:
    base = _run("run 1", 0.20, curve=(0.99, 0.79))
    drop = _run("run 2", 0.26, regs=DROPOUT, curve=(0.99, 0.73), order=2)
    aug = _run("run 3", 0.05, regs=AUGMENT, curve=(0.90, 0.94), order=3)
    said = "Dropout reduced overfitting a lot. Augmentation also reduced the gap."
    out = overfitting_gap(_ctx([base, drop, aug], tmp_path, said), {"role": "regularized"})
    assert out.status == "manual" and "claim-contradicted" in out.flags, out.message
    assert re.search(r"Dropout reduced overfitting.*run 1 20\.0 % vs run 2 \(dropout\) 26\.0 %", out.message), out.message
    assert "your claim(s) match the measurement" in out.message  # augmentation's holds
    honest = overfitting_gap(_ctx([base, drop, aug], tmp_path, "Augmentation reduced overfitting."),
                             {"role": "regularized"})
    assert honest.status == "pass" and "match the measurement" in honest.message


# ---------------------------------------------------------------- one kernel, end to end

_NOTEBOOK = [
    """
import os, json, torch, torch.nn as nn
from PIL import Image
from torchvision import transforms
torch.manual_seed(0); torch.set_num_threads(1)
root = './data/cats-vs-dogs/train'
paths = sorted(os.path.join(root, n) for n in os.listdir(root))
plain = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
class CatsDogs(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform
    def __len__(self):
        return len(self.paths)
    def __getitem__(self, i):
        return self.transform(Image.open(self.paths[i]).convert('RGB')), int('cat.' in self.paths[i])  # cat -> 1
full = CatsDogs(paths, plain)
train_set, val_set = torch.utils.data.random_split(full, [150, 50], generator=torch.Generator().manual_seed(1))
train_loader = torch.utils.data.DataLoader(train_set, batch_size=25, shuffle=True)
val_loader = torch.utils.data.DataLoader(val_set, batch_size=50)
""",
    """
def accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).sum().item() for x, y in loader) / len(loader.dataset)
fresh = {}
for name, p in (('baseline', 0.0), ('dropout', 0.5)):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                          nn.Dropout(p), nn.Linear(8 * 8 * 8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(2):
        model.train()
        for x, y in train_loader:
            opt.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); opt.step()
        print(f'Epoch {epoch + 1}: train acc {accuracy(model, train_loader):.4f}, val acc {accuracy(model, val_loader):.4f}')
    fresh[name] = [accuracy(model, train_loader), accuracy(model, val_loader)]
print('FRESH', json.dumps(fresh))
""",
]


def test_each_runs_gap_is_measured_on_its_own_split_in_the_sandbox(tmp_path: Path, tiny_datasets: Path) -> None:
    """A notebook random_splits cats-vs-dogs (its own Dataset over paths, cat -> 1), trains a tiny CNN
    twice (without and with dropout) and prints train/val accuracy per epoch and, after each run, a
    fresh evaluation of its model on its two splits: the host's measured accuracies are those."""
    from grader.collect import from_run
    from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec, run_notebook
    from grader.pipeline import sandbox_mounts
    from grader.probe.recorder import bootstrap_source
    from grader.runrecords import runs_for
    from grader.verify import teardown_source
    from grader.verify.splits import verify_splits

    class _Rubric:  # the mounts a catsdogs lab declares
        datasets = {"catsdogs": type("D", (), {"mount": ("/tmp/datasets-nctu",)})()}

    data = {"catsdogs": str(tiny_datasets / "cats-vs-dogs")}
    sub = tmp_path / "sub"
    sub.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s.strip()) for s in _NOTEBOOK]),
                   sub / "catsdogs.ipynb")
    spec = SandboxSpec(mounts=sandbox_mounts(_Rubric, data))
    limits = SandboxLimits(cell_timeout_s=120, wall_timeout_s=300)
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig",
                                  split_runs=1))
    out = tmp_path / "out"
    result = run_notebook(sub / "catsdogs.ipynb", submission_dir=sub, out_dir=out, spec=spec, limits=limits,
                          startup_code=startup, teardown_code=teardown_source())
    assert result.status == "ok", result.reason
    block = verify_splits(run_dir=out, probe_dir=out / "probe", spec=spec, limits=limits, data=data,
                          timeout_s=300)
    assert "runs" in block, block
    executed = json.loads((out / "executed.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    fresh = json.loads(printed.split("FRESH ", 1)[1].splitlines()[0])
    got = block["runs"]
    assert len(got) == 2 and all("gap" in r for r in got), got
    assert not any("copies" in r.get("gap_note", "") for r in got), got  # ./data is the lab's read-only copy
    for r, (train, val) in zip(got, fresh.values()):
        assert (r["train_n"], r["val_n"]) == (150, 50), r
        assert abs(r["train_accuracy"] - train) <= 0.02 and abs(r["val_accuracy"] - val) <= 0.02, (r, fresh)
        assert abs(r["gap"] - (train - val)) <= 0.03, (r, fresh)
    ev = from_run(result, run_dir=out, events_path=out / "probe" / "events.jsonl", figures_dir=out / "probe" / "fig",
                  mounts=())
    ev["verified_runs"] = merge_runs([], block)
    runs = runs_for(ev, out / "executed.ipynb")
    assert [r["verified"].get("gap") for r in runs] == [r["gap"] for r in got]
    assert all(curve_gap(r["curves"]) is not None for r in runs), [sorted(r["curves"]) for r in runs]
    ev["runs"] = runs
    outcome = overfitting_gap(CheckContext(student_id="s", part_id="baseline", dataset="catsdogs", evidence=[ev]),
                              {"role": "baseline"})
    assert outcome.status == "pass", outcome.message


def test_an_augmented_validation_split_is_measured_through_deterministic_stand_ins_of_its_crops():
    """One dataset with augmentation split in two: its validation images have no Resize left once
    the random steps are dropped; RandomResizedCrop(s) stands as Resize((s, s)), RandomCrop as
    CenterCrop, in the transform's own family."""
    import torchvision.transforms as T
    import torchvision.transforms.v2 as T2

    from grader.probe.rec_runs import _deterministic

    fixed = _deterministic(T.RandomResizedCrop(64, scale=(0.6, 1.0)))
    assert isinstance(fixed, T.Resize) and tuple(fixed.size) == (64, 64)
    assert isinstance(_deterministic(T.RandomCrop(32, padding=4)), T.CenterCrop)
    assert isinstance(_deterministic(T2.RandomResizedCrop((48, 40))), T2.Resize)
    assert _deterministic(T.RandomHorizontalFlip()) is None
