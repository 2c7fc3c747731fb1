"""Regularizers in effect (issue 17): Run.regularizers built on the host from in-memory probe
records (grader.regularizers), the `regularization` check's outcomes, the probe part rec_reg run
in a fresh interpreter on a tiny model, and one notebook in the real sandbox with the two named
faults (Dropout left in eval mode; weight decay on an optimizer that never stepped)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from grader.checks import run_check
from grader.checks.base import UNCONFIRMED, CheckContext
from grader.evidence import read_events, summarize_events
from grader.regularizers import annotate, attach
from grader.runrecords import build_runs

REPO = Path(__file__).resolve().parents[1]
PROBE = {"events": 100, "errors": 0, "limit_hit": False, "started": True}


def _ctx(*evidence: dict[str, Any]) -> CheckContext:
    return CheckContext(student_id="s", part_id="regularization", dataset="catsdogs", evidence=evidence,
                        all_evidence=evidence)


class _Cells:
    """Stands in for runtext.Cells: In[n] -> index and the code of each cell."""

    def __init__(self, sources: dict[int, str]) -> None:
        self.index = {n: i for i, n in enumerate(sorted(sources))}
        self.sources = [sources[n] for n in sorted(sources)]


def _run(name: str, reg: dict[str, Any], *, optimizer: str = "Adam", batches: int = 300) -> dict[str, Any]:
    return {"name": name, "status": "trained", "optimizer": optimizer, "batches": batches, "regularizers": reg,
            "cells": [7]}


def _ev(*runs: dict[str, Any], mode: str = "execute") -> dict[str, Any]:
    return {"path": "catsdogs.ipynb", "mode": mode, "runs": list(runs), "probe": PROBE,
            "optimizers": [{"type": "Adam", "steps": 300, "regularization": {}}]}


# ---------------------------------------------------------------- host: Run.regularizers


def _internal_run(o: dict[str, Any], refs: list[int], cells: set[int], eval_cells: set[int] = frozenset()) -> dict:
    return {"_o": o, "_steps": o.get("steps", 0), "model_refs": refs, "_cells": set(cells),
            "_eval_cells": set(eval_cells), "optimizer_ref": o.get("ref"), "name": "run 1"}


def test_run_regularizers_are_built_from_the_probes_records_and_tied_to_the_run() -> None:
    reg = {"steps": 300, "weight_decay": [0.0, 5e-4],
           "penalty": {"analyzed": 6, "found": 6, "l1": 0, "l2": 6, "params": 4},
           "dropout": [["Net.fc_drop", "Dropout", 0, 0, 300, 40, 7, 0, 300]],
           "batchnorm": [["Net.bn", "BatchNorm2d", 300, 0, 0, 40, None, 300, 0]]}
    o = {"ref": 10, "type": "SGD", "steps": 300, "weight_decay": 0.0, "cells_stepped": [8], "cell": 6,
         "checksum_start": [1.0, 2.0], "regularization": reg}
    lost = {"ref": 9, "type": "Adam", "steps": 0, "weight_decay": 1e-4, "cell": 5, "checksum_start": [1.0, 2.0]}
    aug = ["RandomHorizontalFlip", "RandomResizedCrop"]
    ev = {"mode": "execute", "optimizers": [lost, o],
          "models": [{"ref": 3, "class": "Net", "layers": [["conv", "Conv2d"], ["fc_drop", "Dropout"], ["bn", "BatchNorm2d"]]}],
          "training": [{"cell": 8, "model_ref": 3, "split": "train", "grad_enabled": True, "training_mode": True,
                        "augment": aug}],
          "evaluations": [{"cell": 8, "model_ref": 3, "split": "val", "grad_enabled": False, "augment": aug},
                          {"cell": 9, "model_ref": 3, "split": "test", "grad_enabled": False, "augment": []},
                          {"cell": 9, "model_ref": 4, "split": "val", "grad_enabled": False, "augment": ["RandomCrop"]}],
          "weights_loaded": [{"cell": 9, "model_ref": 3, "source": "load_state_dict",
                              "selection": {"snapshots": 1, "splits": {"test": 1}, "last": "test", "steps_after": 40}}],
          "verified_runs": [{"optimizer": 10, "ops": {"conv2d": 1, "dropout": 1, "batch_norm": 1}}]}
    run = _internal_run(o, [3], {8}, {9})
    attach(ev, [run], _Cells({5: "opt = Adam(net.parameters(), weight_decay=1e-4)", 8: "train()"}))
    r = run["regularizers"]
    assert r["weight_decay"] == 5e-4  # the largest group's, read at its steps, not the constructor's 0
    assert r["penalty"] == {"kind": "L2", "params": 4, "steps": 6, "analyzed": 6}
    assert (r["dropout"]["train"], r["dropout"]["eval"], r["dropout"]["eval_grad"], r["dropout"]["eval_cell"]) == (0, 340, 300, 7)
    assert (r["dropout"]["steps_train"], r["dropout"]["steps_eval"]) == (0, 300)
    assert r["batchnorm"]["train"] == 300 and r["batchnorm"]["declared"] == ["Net.bn"]
    # the other model's augmented validation is not this run's
    assert r["augmentation"] == {"train": aug, "eval": aug, "splits": {"val": aug, "test": []}}
    assert r["selection"] == {"how": "best-checkpoint", "split": "test", "cell": 9, "snapshots": 1, "basis": "probe"}
    assert r["unstepped"] == [{"optimizer": "Adam", "weight_decay": 1e-4, "cell": 5}]
    assert r["captured"] == ["dropout", "batchnorm"] and "weight_decay" in r["written"]


def test_a_run_that_never_stepped_has_no_regularizers_and_a_snapshot_without_later_steps_is_no_selection() -> None:
    o = {"ref": 1, "steps": 10, "cells_stepped": [3], "regularization": {"steps": 10}}
    ev = {"optimizers": [o], "weights_loaded": [{"cell": 4, "model_ref": 2, "selection": {"snapshots": 1, "last": "test",
                                                                                           "steps_after": 0}}]}
    run, idle = _internal_run(o, [2], {3}), _internal_run({"ref": 5, "steps": 0}, [], set())
    attach(ev, [run, idle])
    assert "selection" not in run["regularizers"] and idle["regularizers"] == {}


def test_early_stopping_read_from_the_code_takes_the_split_evaluated_in_the_loop() -> None:
    o = {"ref": 1, "steps": 50, "cells_stepped": [4], "regularization": {"steps": 50}}
    ev = {"optimizers": [o], "evaluations": [{"cell": 4, "model_ref": 2, "split": "test", "grad_enabled": False}]}
    run = _internal_run(o, [2], {4})
    code = "for epoch in range(50):\n    fit()\n    if bad > patience:\n        break\n"
    attach(ev, [run], _Cells({4: code}))
    assert run["regularizers"]["selection"]["how"] == "early-stopping"
    assert run["regularizers"]["selection"]["split"] == "test"
    # Kaggle's layout: both halves of the student's split read train/, so only the loader's name says val
    ev["evaluations"] = [{"cell": 4, "model_ref": 2, "split": "train", "loader": ["val_loader"], "grad_enabled": False}]
    attach(ev, [run], _Cells({4: code}))
    assert run["regularizers"]["selection"]["split"] == "val"


def test_notes_flag_pretrained_downloads_and_test_selection_once() -> None:
    ev = {"notes": [{"code": "sandbox-limit", "message": "x"}],
          "weights_loaded": [{"cell": 3, "source": "download", "name": "ResNet18_Weights.IMAGENET1K_V1", "ok": False}]}
    runs = [{"name": "run 2", "regularizers": {"selection": {"how": "best-checkpoint", "split": "test", "cell": 9}}}]
    annotate(ev, runs)
    annotate(ev, runs)  # rescore: replaced, not doubled
    codes = [n["code"] for n in ev["notes"]]
    assert codes == ["sandbox-limit", "pretrained-weights", "test-selection"]
    assert "In[3]: ResNet18_Weights.IMAGENET1K_V1 (it failed" in ev["notes"][1]["message"]
    assert "run 2 (best-checkpoint, In[9])" in ev["notes"][2]["message"]


# ---------------------------------------------------------------- the check


def test_dropout_left_in_eval_mode_fails_with_the_layer_the_counts_and_the_cell() -> None:
    reg = {"dropout": {"modules": ["Net.fc_drop"], "train": 0, "eval": 300, "eval_grad": 300, "eval_cell": 7},
           "written": ["dropout"]}
    out = run_check("regularization", _ctx(_ev(_run("run 2", reg))), {"require": ["dropout"]})
    assert out.status == "fail" and out.fraction == 0.0
    assert ("Dropout in Net.fc_drop ran 0 times in training mode during run 2's 300 steps, 300 times in eval mode: "
            "model.eval() was left on (In[7])") in out.message


def test_dropout_in_training_mode_only_until_the_first_evaluation_is_not_in_effect() -> None:
    # evaluate() calls model.eval() after epoch 1 and the loop never calls model.train() again
    reg = {"dropout": {"modules": ["SmallCNN.classifier.3"], "train": 2, "eval": 27, "eval_grad": 18, "eval_cell": 6,
                       "steps_train": 2, "steps_eval": 18}, "written": ["dropout"]}
    out = run_check("regularization", _ctx(_ev(_run("run 3", reg, batches=20))), {"require": ["dropout"]})
    assert out.status == "fail"
    assert ("Dropout in SmallCNN.classifier.3 ran in training mode in 2 of run 3's 20 steps and in eval mode in 18 "
            "(18 calls with gradients): model.eval() was left on (In[6])") in out.message
    # a validation pass run with gradients in eval mode at each epoch's end does not count against it
    reg["dropout"].update(train=20, steps_train=20, steps_eval=0)
    assert run_check("regularization", _ctx(_ev(_run("run 3", reg, batches=20))), {"require": ["dropout"]}).status == "pass"


def test_weight_decay_on_an_optimizer_that_never_stepped_fails_naming_both() -> None:
    reg = {"weight_decay": 0.0, "unstepped": [{"optimizer": "Adam", "weight_decay": 1e-4, "cell": 5}],
           "written": ["weight_decay"]}
    out = run_check("regularization", _ctx(_ev(_run("run 2", reg))), {"require": ["weight_decay"]})
    assert out.status == "fail"
    assert ("optimizer Adam(weight_decay=0.0001) built in In[5] never stepped; run 2 stepped an Adam with "
            "weight_decay 0") in out.message


def test_in_effect_and_corroborated_passes_and_a_finding_of_another_run_is_still_named() -> None:
    good = _run("run 3", {"dropout": {"modules": ["Net.drop"], "train": 900, "eval": 40, "eval_grad": 0},
                          "captured": ["dropout"]})
    bad = _run("run 2", {"weight_decay": 0.0, "unstepped": [{"optimizer": "SGD", "weight_decay": 0.01, "cell": 4}]},
               optimizer="SGD")
    out = run_check("regularization", _ctx(_ev(bad, good)), {})
    assert out.status == "pass" and out.fraction == 1.0
    assert "Dropout (Net.drop) ran 900 times in training mode during run 3's 300 steps" in out.message
    assert "optimizer SGD(weight_decay=0.01) built in In[4] never stepped" in out.message


def test_a_probe_record_nothing_the_host_read_backs_goes_to_a_ta() -> None:
    reg = {"weight_decay": 1e-3, "written": []}  # no code naming it, no captured graph to show it
    out = run_check("regularization", _ctx(_ev(_run("run 1", reg))), {"require": ["weight_decay"]})
    assert out.status == "manual" and UNCONFIRMED in out.flags


def test_augmented_validation_earns_its_share_and_test_selection_goes_to_a_ta() -> None:
    aug = {"train": ["RandomHorizontalFlip"], "eval": ["RandomHorizontalFlip"], "splits": {"val": ["RandomHorizontalFlip"]}}
    out = run_check("regularization", _ctx(_ev(_run("run 1", {"augmentation": aug, "written": ["augmentation"]}))),
                    {"require": ["augmentation"], "augmented_eval_credit": 0.5})
    assert out.status == "partial" and out.fraction == 0.5
    assert "the val data went through RandomHorizontalFlip" in out.message
    sel = {"selection": {"how": "early-stopping", "split": "test", "cell": 9, "basis": "code"}, "written": ["early_stopping"]}
    out = run_check("regularization", _ctx(_ev(_run("run 1", sel))), {"require": ["early_stopping"]})
    assert out.status == "manual" and "test-selection" in out.flags and "on the test split (In[9])" in out.message


def test_fewer_regularized_runs_than_asked_is_partial_and_nothing_at_all_fails() -> None:
    on = _run("run 2", {"batchnorm": {"modules": ["Net.bn"], "train": 30, "eval": 0, "eval_grad": 0},
                        "written": ["batchnorm"]})
    plain = _run("run 1", {"written": ["batchnorm"]})
    out = run_check("regularization", _ctx(_ev(plain, on)), {"min_runs": 2})
    assert out.status == "partial" and out.fraction == 0.5
    out = run_check("regularization", _ctx(_ev(plain)), {"require": ["dropout", "weight_decay"]})
    assert out.status == "fail" and "no Dropout or weight decay was in effect" in out.message
    saved = run_check("regularization", _ctx(_ev(plain, mode="saved")), {})
    assert saved.status == "manual"


# ---------------------------------------------------------------- the probe part, in-process on a tiny model

_HEADER = """\
import sys
sys.path.insert(0, {repo!r})
from grader.probe.recorder import install
install({events!r}, {figs!r})
del install
"""

_STUDENT = """
import copy
import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, random_split
import torchvision, torchvision.transforms as T
torch.manual_seed(0); torch.set_num_threads(1)

class Images(Dataset):
    def __init__(self, n, transform=None):
        self.x, self.y, self.transform = torch.rand(n, 3, 8, 8), torch.randint(0, 2, (n,)), transform
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        x = self.x[i]
        return (self.transform(x) if self.transform else x), self.y[i]

full = Images(48, T.Compose([T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.2)], p=0.5)]))
train_set, val_set = random_split(full, [32, 16])  # the validation half shares the augmentation
train_loader, val_loader = DataLoader(train_set, batch_size=8), DataLoader(val_set, batch_size=8)
test_loader = DataLoader(Images(16), batch_size=8)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.fc_drop, self.fc = nn.Dropout(0.5), nn.Linear(4 * 36, 2)
    def forward(self, x):
        x = F.dropout(F.relu(self.bn(self.conv(x))).flatten(1), 0.1, self.training)
        return self.fc(self.fc_drop(x))

def evaluate(model, loader):
    model.eval()
    with torch.no_grad():
        return sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)

net1 = Net()  # run 1: eval() left on
idle = torch.optim.Adam(net1.parameters(), weight_decay=1e-4)
opt1 = torch.optim.SGD(net1.parameters(), lr=0.1)
net1.eval()
for x, y in train_loader:
    opt1.zero_grad(); F.cross_entropy(net1(x), y).backward(); opt1.step()

net2 = Net()  # run 2: an L2 penalty, weight decay, the best state chosen on the test split
opt2 = torch.optim.SGD(net2.parameters(), lr=0.1, weight_decay=5e-4)
best = None
for epoch in range(2):
    net2.train()
    for x, y in train_loader:
        opt2.zero_grad()
        loss = F.cross_entropy(net2(x), y) + 1e-3 * sum(p.pow(2).sum() for p in net2.parameters())
        loss.backward(); opt2.step()
    evaluate(net2, test_loader)
    if best is None:
        best = copy.deepcopy(net2.state_dict())
net2.load_state_dict(best)
evaluate(net2, val_loader)

net3 = Net(); opt3 = torch.optim.Adam(net3.parameters())  # run 3: an L1 term computed, never added
for x, y in train_loader:
    opt3.zero_grad(); loss = F.cross_entropy(net3(x), y)
    total = loss + 1e-4 * sum(p.abs().sum() for p in net3.parameters())
    loss.backward(); opt3.step()

import torchvision.models._api as api
def offline(*a, **k):
    raise OSError("no network")
api.load_state_dict_from_url = offline
try:
    torchvision.models.resnet18(weights="IMAGENET1K_V1")
except OSError as e:
    assert str(e) == "no network"  # the student's exception passes through untouched
else:
    raise SystemExit("the download did not fail")
"""


@pytest.fixture(scope="module")
def reg_events(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("reg")
    script = root / "student.py"
    script.write_text(_HEADER.format(repo=str(REPO), events=str(root / "events.jsonl"), figs=str(root / "figs"))
                      + textwrap.dedent(_STUDENT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    events, warnings = read_events(root / "events.jsonl")
    assert warnings == []
    return events


def test_the_probe_counts_what_regularized_each_optimizers_steps(reg_events: list[dict[str, Any]]) -> None:
    assert not [e for e in reg_events if e["kind"] == "probe-error"]
    opts = [e for e in reg_events if e["kind"] == "optimizer"]
    refs = [e["id"] for e in opts if e["type"] != "Adam" or e["weight_decay"] == 0]  # the three runs' optimizers
    state = {e["ref"]: e for e in reg_events if e["kind"] == "reg-state"}
    r1, r2, r3 = (state[r] for r in refs)
    drop1 = {row[0]: row[2:6] for row in r1["dropout"]}
    assert drop1 == {"Net.fc_drop": [0, 0, 4, 0], "F.dropout": [0, 0, 4, 0]}  # 4 steps, all in eval mode with grad
    assert [row[7:9] for row in r1["dropout"]] == [[0, 4], [0, 4]]  # steps with a training-mode call, eval-mode only
    assert [row[0] for row in r1["batchnorm"]] == ["Net.bn"] and r1["weight_decay"] == [0.0]
    assert r2["weight_decay"] == [5e-4] and {row[0]: row[2] for row in r2["dropout"]}["Net.fc_drop"] == 8
    assert r2["penalty"]["found"] == r2["penalty"]["analyzed"] > 0 and r2["penalty"]["l2"] > 0
    assert r2["penalty"]["params"] == 6  # every weight and bias of Net
    assert r3["penalty"]["analyzed"] > 0 and r3["penalty"]["found"] == 0  # computed but not back-propagated


def test_the_probe_ties_augmentation_selection_and_downloads_to_what_ran(reg_events: list[dict[str, Any]]) -> None:
    summary = summarize_events(reg_events)
    val = [t for t in summary["evaluations"] if t["split"] == "val"]
    test = [t for t in summary["evaluations"] if t["split"] == "test"]
    assert val and all(t["augment"] == ["ColorJitter", "RandomApply", "RandomHorizontalFlip"] for t in val)
    assert test and all(t["augment"] == [] for t in test)
    [load] = [w for w in summary["weights_loaded"] if w.get("selection")]
    assert load["selection"]["last"] == "test" and load["selection"]["steps_after"] == 4
    [dl] = [w for w in summary["weights_loaded"] if w["source"] == "download"]
    assert (dl["name"], dl["ok"], dl["error"]) == ("ResNet18_Weights.IMAGENET1K_V1", False, "OSError: no network")


# ---------------------------------------------------------------- one notebook in the real sandbox

_CELLS = [
    """import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0); torch.set_num_threads(1)
from torch.utils.data import DataLoader, TensorDataset
train_loader = DataLoader(TensorDataset(torch.randn(64, 10), torch.randint(0, 2, (64,))), batch_size=16)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc_drop, self.fc2 = nn.Linear(10, 16), nn.Dropout(0.5), nn.Linear(16, 2)
    def forward(self, x):
        return self.fc2(self.fc_drop(F.relu(self.fc1(x))))
model = Net()""",
    "optimizer_wd = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)",
    "model.eval()",
    """optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(3):
    for x, y in train_loader:
        optimizer.zero_grad(); F.cross_entropy(model(x), y).backward(); optimizer.step()
    print(f"epoch {epoch + 1} done")""",
]


@pytest.mark.kernel
def test_a_notebook_with_dropout_left_in_eval_mode_and_weight_decay_never_stepped(tmp_path: Path) -> None:
    import nbformat

    from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec, run_notebook
    from grader.probe.recorder import bootstrap_source

    sub = tmp_path / "sub"
    sub.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in _CELLS]), sub / "reg.ipynb")
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig"))
    out = tmp_path / "out"
    result = run_notebook(sub / "reg.ipynb", submission_dir=sub, out_dir=out, spec=SandboxSpec(mounts={}),
                          limits=SandboxLimits(cell_timeout_s=60, wall_timeout_s=120), startup_code=startup)
    assert result.status == "ok", result.reason
    events, warnings = read_events(out / "probe" / "events.jsonl")
    assert warnings == []
    ev = {**summarize_events(events), "path": "reg.ipynb", "mode": "execute", "notes": []}
    nb = nbformat.read(out / "executed.ipynb", as_version=4)
    ev["runs"] = build_runs(ev, notebook=nb)
    [run] = [r for r in ev["runs"] if r["status"] == "trained"]
    reg = run["regularizers"]
    assert (reg["dropout"]["train"], reg["dropout"]["eval_grad"], reg["dropout"]["eval_cell"]) == (0, 12, 3)
    assert reg["unstepped"] == [{"optimizer": "Adam", "weight_decay": 1e-4, "cell": 2}]
    out_d = run_check("regularization", _ctx(ev), {"require": ["dropout"]})
    assert out_d.status == "fail" and "model.eval() was left on (In[3])" in out_d.message
    out_w = run_check("regularization", _ctx(ev), {"require": ["weight_decay"]})
    assert out_w.status == "fail" and "optimizer Adam(weight_decay=0.0001) built in In[2] never stepped; " \
                                      f"{run['name']} stepped an Adam with weight_decay 0" in out_w.message


def test_early_stopping_read_from_a_shared_fit_function_counts_only_for_the_run_that_stopped():
    """One `fit(..., patience=None)` holds the stopping rule for every run it trains: the code
    alone names early stopping for all of them; only the run that trained fewer epochs stopped."""
    from grader.regularizers import _stopped_early

    def run(epochs):
        return {"epochs": epochs, "_steps": 10,
                "regularizers": {"selection": {"how": "early-stopping", "split": "val", "basis": "code"}}}

    runs = [run(12.0), run(12.0), run(7.0)]
    _stopped_early(runs)
    assert ["selection" in r["regularizers"] for r in runs] == [False, False, True]
    probe = [run(12.0), run(12.0)]
    probe[0]["regularizers"]["selection"]["basis"] = "probe"  # a best checkpoint loaded back: seen, kept
    _stopped_early(probe)
    assert ["selection" in r["regularizers"] for r in probe] == [True, False]
    alone = [run(12.0)]
    _stopped_early(alone)  # nothing to compare with: the code's reading stays
    assert "selection" in alone[0]["regularizers"]


def test_dropout_left_in_eval_mode_after_the_first_epoch_is_no_regularizer_of_the_gap_comparison():
    from grader.checks.overfit import in_effect

    left_on = {"regularizers": {"dropout": {"train": 50, "steps_train": 50, "steps_eval": 550, "eval_grad": 550}}}
    on = {"regularizers": {"dropout": {"train": 600, "steps_train": 600, "steps_eval": 0}}}
    assert "dropout" not in in_effect(left_on, {})[0]
    assert "dropout" in in_effect(on, {})[0]


def test_a_best_checkpoint_kept_on_the_validation_split_is_early_stopping_in_the_gap_comparison():
    from grader.checks.overfit import in_effect

    def run(split):
        return {"regularizers": {"selection": {"how": "best-checkpoint", "split": split, "basis": "probe"}}}

    assert "early_stopping" in in_effect(run("val"), {})[0]
    assert "early_stopping" not in in_effect(run("test"), {})[0]
