"""The evidence probe (grader/probe/recorder.py + parts) and its host-side reader.

Each probe scenario is a small "student" script run once in a fresh interpreter (module
fixture), so pytest's own torch and matplotlib are never patched; the tests then read its
events with `grader.evidence`. One test runs a real Jupyter kernel with the probe loaded
from source text, the way the sandbox loads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from grader.evidence import figure_file, read_events, summarize_events, validate_event

REPO = Path(__file__).resolve().parents[1]

_HEADER = """\
import sys
sys.path.insert(0, {repo!r})
from grader.probe.recorder import install
install({events!r}, {figs!r}, **{caps!r})
del install
"""


class Run:
    """A scenario's outputs: validated events, warnings, the summary, the folders."""

    def __init__(self, root: Path):
        self.root = root
        self.events, self.warnings = read_events(root / "events.jsonl")
        self.summary = summarize_events(self.events, figures_dir=root / "figs")

    def kinds(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind]

    def figure(self, suptitle: str) -> dict:
        found = [e for e in self.kinds("figure") if e.get("suptitle") == suptitle]
        assert len(found) == 1, (suptitle, [e.get("suptitle") for e in self.kinds("figure")])
        return found[0]


def _run_script(root: Path, body: str, caps: dict | None = None) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    script = root / "student.py"
    script.write_text(_HEADER.format(repo=str(REPO), events=str(root / "events.jsonl"),
                                     figs=str(root / "figs"), caps=caps or {})
                      + textwrap.dedent(body))
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script), str(root)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return Run(root)


# ---------------------------------------------------------------- histograms and figures

_NET = """
import torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0)
class Net(nn.Module):  # the LAB01 handout's network
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)
    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
"""

_FIGURES = """
lazy = sorted(m for m in ("torch", "torchvision", "matplotlib", "numpy") if m in sys.modules)
assert not lazy, lazy
import numpy as np
import matplotlib.pyplot as plt
""" + _NET + """
net = Net()
net(torch.randn(2, 3, 32, 32))
out = sys.argv[1]

plt.figure(); plt.suptitle("conv1-flatten")
n, bins, patches = plt.hist(net.conv1.weight.detach().numpy().flatten(), bins=30)
assert n.sum() == 6 * 3 * 5 * 5 and len(bins) == 31  # the student's results are untouched
plt.title("conv1 weights"); plt.savefig(out + "/mine.png")

plt.figure(); plt.suptitle("fc2-bias-tensor"); plt.hist(net.fc2.bias.detach()); plt.show()
plt.figure(); plt.suptitle("random-84"); plt.hist(np.random.randn(84)); plt.show()
plt.figure(); plt.suptitle("fc1-transposed"); plt.hist(net.fc1.weight.detach().t().numpy().ravel().tolist())
plt.figure(); plt.suptitle("all-params")
plt.hist(torch.cat([p.detach().view(-1) for p in net.parameters()]).numpy(), bins=50)

fig, axes = plt.subplots(2, 3); fig.suptitle("grid")
for ax, (name, p) in zip(axes.flat, net.named_parameters()):
    ax.hist(p.detach().cpu().numpy().reshape(-1), bins=20); ax.set_title(name)
fig.savefig(out + "/grid.png")

plt.figure(); plt.suptitle("loss-curve"); plt.plot([2.3, 1.9, 1.5, 1.2]); plt.xlabel("epoch")
fig, axes = plt.subplots(2, 2); fig.suptitle("images")
for ax in axes.flat:
    ax.imshow(np.random.rand(8, 8, 3)); ax.axis("off")
plt.figure(); plt.suptitle("confusion"); plt.imshow(np.random.rand(10, 10)); plt.colorbar()

try:
    import pandas as pd
except ImportError:
    pass
else:
    plt.figure(); plt.suptitle("pandas")
    pd.Series(net.conv2.weight.detach().numpy().ravel()).hist(ax=plt.gca())

# A probe bug must not reach student code: break two internals, then keep working.
import _dllab_probe, _dllab_probe_figures, _dllab_probe_torch
_dllab_probe_figures._attribute = lambda *args: 1 / 0
_dllab_probe_torch._note_forward = lambda *args: 1 / 0
plt.figure(); plt.suptitle("after-bug")
n, _, _ = plt.hist([1.0, 2.0, 2.0], bins=2)
assert list(n) == [1.0, 2.0]
assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
_dllab_probe.emit("figure", {"unserializable": object()})
print("done")
"""


@pytest.fixture(scope="module")
def figures_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run_script(tmp_path_factory.mktemp("figures"), _FIGURES)


def _params(fig: dict) -> list[list[tuple[str, str]]]:
    return [[(s["param"], s["match"]) for h in a["hists"] for s in h["subjects"]]
            for a in fig["axes"]]


def test_install_imports_nothing_heavy_and_records_cleanly(figures_run: Run) -> None:
    assert figures_run.warnings == []
    assert figures_run.kinds("probe-start")[0]["ipython"] is False


def test_histogram_of_flattened_numpy_copy_is_conv1_weight(figures_run: Run) -> None:
    fig = figures_run.figure("conv1-flatten")
    assert fig["fig_kind"] == "histogram" and fig["subjects"] == ["conv1.weight"]
    subject = fig["axes"][0]["hists"][0]["subjects"][0]
    assert subject == {"param": "conv1.weight", "model": "net", "model_class": "Net",
                       "model_ref": subject["model_ref"], "match": "values", "grad": False}
    assert fig["axes"][0]["title"] == "conv1 weights" and fig["saved_as"] == "mine.png"
    assert figure_file(figures_run.root / "figs", fig["png"]) is not None


def test_histogram_of_a_tensor_sharing_storage_is_fc2_bias(figures_run: Run) -> None:
    fig = figures_run.figure("fc2-bias-tensor")
    assert _params(fig) == [[("fc2.bias", "identity")]]


def test_histogram_of_random_data_is_unknown_even_with_a_matching_size(figures_run: Run) -> None:
    fig = figures_run.figure("random-84")  # fc2.bias also has 84 values
    assert fig["fig_kind"] == "histogram" and fig["subjects"] == ["unknown"]
    assert fig["axes"][0]["hists"][0]["n"] == 84


def test_reordered_values_and_concatenations_are_recognised(figures_run: Run) -> None:
    assert _params(figures_run.figure("fc1-transposed")) == [[("fc1.weight", "sorted")]]
    fig = figures_run.figure("all-params")
    assert fig["subjects"] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                               "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                               "fc3.weight", "fc3.bias"]


def test_each_histogram_of_a_subplot_grid_is_attributed(figures_run: Run) -> None:
    fig = figures_run.figure("grid")
    expected = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                "fc1.bias"]
    assert [a["title"] for a in fig["axes"]] == expected
    assert [[p for p, _ in axes] for axes in _params(fig)] == [[name] for name in expected]
    assert fig["fig_kind"] == "histogram" and fig["n_axes"] == 6


def test_figure_kinds(figures_run: Run) -> None:
    assert figures_run.figure("loss-curve")["fig_kind"] == "line"
    assert figures_run.figure("images")["fig_kind"] == "image-grid"
    assert figures_run.figure("confusion")["fig_kind"] == "heatmap"
    # unshown figures are recorded at exit, shown ones only once
    triggers = Counter(e["trigger"] for e in figures_run.kinds("figure"))
    assert triggers["show"] == 2 and triggers["savefig"] == 2 and triggers["exit"] >= 5
    for entry in figures_run.summary["figures"]:
        assert entry["png"] and (figures_run.root / "figs" / entry["png"]).is_file()


def test_pandas_histogram_goes_through_axes_hist(figures_run: Run) -> None:
    pytest.importorskip("pandas")
    assert figures_run.figure("pandas")["subjects"] == ["conv2.weight"]


def test_probe_errors_never_reach_student_code(figures_run: Run) -> None:
    # the script asserted the student-visible results; here: the errors were recorded
    fig = figures_run.figure("after-bug")
    assert fig["fig_kind"] == "histogram" and fig["subjects"] == ["unknown"]
    where = Counter(e["where"] for e in figures_run.kinds("probe-error"))
    assert where["hist"] == 1 and where["forward"] == 1 and where["serialize"] == 1
    assert figures_run.summary["probe"]["errors"] == 3


# ---------------------------------------------------------------- data, optimizers, schedulers

_TRAINING = """
from pathlib import Path
import torch, torch.nn as nn, torchvision, torchvision.transforms as T
from PIL import Image
torch.manual_seed(0)
root = Path(sys.argv[1]) / "Food-11"
for split in ("training", "evaluation"):
    for c in range(3):
        (root / split / str(c)).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 60 * c, 99)).save(root / split / str(c) / f"{c}_{i}.jpg")
norm = T.Normalize([0.55, 0.45, 0.35], [0.25, 0.24, 0.26])
food_train = torchvision.datasets.ImageFolder(str(root / "training"),
                                              transform=T.Compose([T.ToTensor(), norm]))
food_test = torchvision.datasets.ImageFolder(
    str(root / "evaluation"), transform=T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]))
plain = torchvision.datasets.FakeData(8, (3, 8, 8), 10, transform=T.ToTensor())
train_part, val_part = torch.utils.data.random_split(food_train, [8, 4])
trainloader = torch.utils.data.DataLoader(train_part, batch_size=4, shuffle=True)
valloader = torch.utils.data.DataLoader(val_part, batch_size=4)
testloader = torch.utils.data.DataLoader(food_test, batch_size=4)

model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 11))
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
for epoch in range(3):
    model.train()
    for x, y in trainloader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    scheduler.step()
model.eval()
with torch.no_grad():
    for x, y in valloader:
        model(x)
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in testloader)

adam = torch.optim.Adam(model.parameters(), lr=1e-3)
forgotten = torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=10)  # never stepped
sgd = torch.optim.SGD(model.parameters(), lr=0.5)
plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(sgd, factor=0.5, patience=0)
for val_loss in (1.0, 2.0, 3.0):
    sgd.step()
    plateau.step(val_loss)

# Food-11's statistics over a loader of its own: its batches reach no model (the bonus's work,
# not training); the shape check after the loop ran out is no batch of any dataset
stats = torch.utils.data.DataLoader(food_train, batch_size=6)
pixel_mean = sum(x.mean((0, 2, 3)) for x, _ in stats) / len(stats)
model(torch.zeros(2, 3, 8, 8))
"""


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run_script(tmp_path_factory.mktemp("training"), _TRAINING)


def test_normalize_is_recorded_with_its_dataset_and_split(training_run: Run) -> None:
    norms = training_run.summary["normalization"]
    assert {"mean": [0.55, 0.45, 0.35], "std": [0.25, 0.24, 0.26], "dataset": "food11",
            "split": "train", "applied": True, "reached_model": True} in [_without(n, "cell", "fed_cells")
                                                                          for n in norms]
    assert [(n["dataset"], n["split"], n["mean"]) for n in norms if n["split"] == "test"] == [
        ("food11", "test", [0.5, 0.5, 0.5])]


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_datasets_and_loaders(training_run: Run) -> None:
    datasets = {tuple(d["names"]): d for d in training_run.summary["datasets"]}
    assert datasets[("food_train",)]["length"] == 12 and datasets[("food_train",)]["num_classes"] == 3
    assert datasets[("food_train",)]["split"] == "train" and datasets[("food_test",)]["split"] == "test"
    assert datasets[("val_part",)]["split"] == "val"  # a random_split part: named by its variable
    assert datasets[("plain",)]["dataset"] == "fakedata"
    loaders = {tuple(d["names"]): d for d in training_run.summary["dataloaders"]}
    assert loaders[("trainloader",)]["shuffle"] is True and loaders[("trainloader",)]["batch_size"] == 4
    assert (loaders[("testloader",)]["dataset"], loaders[("testloader",)]["split"]) == ("food11", "test")


def test_model_and_evaluations(training_run: Run) -> None:
    [model] = training_run.summary["models"]
    assert (model["class"], model["params"], model["last_linear_out"], model["names"]) == (
        "Sequential", 3 * 8 * 8 * 11 + 11, 11, ["model"])
    evals = [(e["model"], e["loader"], e["split"], e["samples"])
             for e in training_run.summary["evaluations"]]
    assert evals == [("model", ["valloader"], "val", 4), ("model", ["testloader"], "test", 12),
                     ("model", None, None, 2)]
    assert [t["samples"] for t in training_run.summary["training"]] == [8, 8, 8]


def test_a_loader_whose_batches_reach_no_model_is_not_trained_or_evaluated_on(training_run: Run) -> None:
    """Issue 13 I: the loader iterated last stays "the data" only until it runs out, so a
    forward pass after a statistics loop over Food-11 (`stats`) is no evaluation on Food-11."""
    sessions = [*training_run.summary["training"], *training_run.summary["evaluations"]]
    assert not any("stats" in (e["loader"] or []) for e in sessions)
    [after] = [e for e in sessions if e["samples"] == 2]
    assert after["dataset"] is None and after["split"] is None


def test_optimizer_lr_in_effect_follows_the_stepped_scheduler(training_run: Run) -> None:
    opts = {o["names"][0]: o for o in training_run.summary["optimizers"]}
    sgd = opts["optimizer"]
    assert (sgd["type"], sgd["lr"], sgd["momentum"], sgd["weight_decay"]) == ("SGD", 0.1, 0.9, 5e-4)
    assert sgd["steps"] == 6 and sgd["model"] == "model"
    assert [step for step, _ in sgd["lr_changes"]] == [1, 3, 5]
    assert [lr for _, lr in sgd["lr_changes"]] == pytest.approx([0.1, 0.01, 0.001])
    assert opts["adam"]["steps"] == 0 and opts["adam"]["betas"] == [0.9, 0.999]
    assert opts["sgd"]["lr_changes"] == [[1, 0.5], [3, 0.25]]
    # the hint the host weighs before an optimizer's run counts (grader.corroborate)
    assert sgd["weights_changed"] is True and opts["sgd"]["weights_changed"] is True
    assert opts["adam"]["weights_changed"] is None  # never stepped: nothing to compare


def test_schedulers_count_their_steps_and_unstepped_ones_show_zero(training_run: Run) -> None:
    scheds = {s["names"][0]: s for s in training_run.summary["schedulers"]}
    assert scheds["scheduler"]["type"] == "StepLR" and scheds["scheduler"]["steps"] == 3
    assert scheds["scheduler"]["params"]["step_size"] == 1
    assert scheds["scheduler"]["params"]["gamma"] == 0.1
    assert scheds["forgotten"]["steps"] == 0 and scheds["forgotten"]["params"]["T_max"] == 10
    assert scheds["plateau"]["type"] == "ReduceLROnPlateau" and scheds["plateau"]["steps"] == 3
    assert scheds["plateau"]["params"]["factor"] == 0.5 and scheds["plateau"]["optimizer"] == "SGD"


def test_training_passes_carry_their_dataset_size_and_model(training_run: Run) -> None:
    """What the budget of an evaluated model is computed from (grader.checks.training)."""
    from grader.checks.training import training_budget

    training = training_run.summary["training"]
    assert [t["dataset_length"] for t in training] == [8, 8, 8]  # the random_split part, not all 12
    [model] = training_run.summary["models"]
    assert {t["model_ref"] for t in training} == {model["ref"]}
    ev = {"mode": "execute", "status": "ok", "probe": training_run.summary["probe"], **training_run.summary}
    budget = training_budget(ev)
    assert budget is not None and (budget.epochs, budget.batches, budget.batch_size) == (3.0, 6, 4)
    assert budget.steps == 6 + 3  # the later `sgd` steps the same parameters


# How students read Food-11 besides ImageFolder over the mount (finding #4 of tester 2): each
# dataset must be named food11 by the files it reads, whatever its class or path says.
_OWN_DATASETS = """
import glob, os
from pathlib import Path
import torch, torch.nn as nn, torchvision, torchvision.transforms as T
from PIL import Image
torch.manual_seed(0)
base = Path(sys.argv[1])
src = base / "mnt" / "Food-11"  # the registered dataset's folder
for split in ("training", "validation", "evaluation"):
    (src / split).mkdir(parents=True)
    for c in range(11):
        Image.new("RGB", (8, 8), (20 * c, 40, 99)).save(src / split / f"{c}_0.jpg")
tf = T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])

class FoodDataset(torch.utils.data.Dataset):  # globs the mount; no root, no classes
    def __init__(self, root, split, transform=None):
        self.files = sorted(glob.glob(os.path.join(root, split, "*.jpg")))
        self.labels = [int(os.path.basename(f).split("_")[0]) for f in self.files]
        self.transform = transform
    def __len__(self):
        return len(self.files)
    def __getitem__(self, i):
        return self.transform(Image.open(self.files[i]).convert("RGB")), self.labels[i]

own_test = FoodDataset(str(src), "evaluation", tf)

dst = base / "work" / "data_0556001"  # a linked copy, class folders numbered: nothing says food
for split in ("training", "validation"):
    for f in (src / split).glob("*.jpg"):
        (dst / split / ("%02d" % int(f.name.split("_")[0]))).mkdir(parents=True, exist_ok=True)
        (dst / split / ("%02d" % int(f.name.split("_")[0])) / f.name).symlink_to(f)
linked = torchvision.datasets.ImageFolder(str(dst / "training"), transform=tf)
linked_val = torchvision.datasets.ImageFolder(str(dst / "validation"), transform=tf)
both = torch.utils.data.ConcatDataset([linked, linked_val])

class Wrapped(torch.utils.data.Dataset):  # a wrapper holding a Subset of the copy, not `.dataset`
    def __init__(self, inner):
        self.inner = inner
    def __len__(self):
        return len(self.inner)
    def __getitem__(self, i):
        return self.inner[i]

wrapped = Wrapped(torch.utils.data.Subset(linked, list(range(5))))
trainloader = torch.utils.data.DataLoader(both, batch_size=11, shuffle=True)
extraloader = torch.utils.data.DataLoader(wrapped, batch_size=5)
testloader = torch.utils.data.DataLoader(own_test, batch_size=11)
model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 11))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for loader in (trainloader, extraloader):
    for x, y in loader:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
model.eval()
with torch.no_grad():
    for x, y in testloader:
        model(x)
print("export:", sys.modules["_dllab_probe"].export_for_verification(str(base / "verify")))
"""


_SECTIONS = """
import json, weakref
from pathlib import Path
import torch, torch.nn as nn, torchvision, torchvision.transforms as T
from PIL import Image
probe_torch = sys.modules["_dllab_probe_torch"]
torch.manual_seed(0)
base = Path(sys.argv[1])
for name, classes in (("a", 3), ("b", 4)):
    for c in range(classes):
        (base / name / "evaluation" / str(c)).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 60 * c, 99)).save(base / name / "evaluation" / str(c) / f"{c}_{i}.jpg")

def section(name, classes, width):
    # one part of a whole lab in one notebook: its own `testset`, `testloader` and `net`
    global testset, testloader, net
    testset = torchvision.datasets.ImageFolder(str(base / name / "evaluation"), transform=T.ToTensor())
    testloader = torch.utils.data.DataLoader(testset, batch_size=4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.Linear(width, classes)).eval()
    with torch.no_grad():
        for x, y in testloader:
            net(x)
    return weakref.ref(net), weakref.ref(testset)

first = section("a", 3, 5)
second = section("b", 4, 6)
trainloader = torch.utils.data.DataLoader(torchvision.datasets.FakeData(8, (3, 8, 8), 4, transform=T.ToTensor()), batch_size=4)
with torch.no_grad():
    for x, y in trainloader:  # an evaluation over a training split keeps nothing
        nn.Linear(3 * 8 * 8, 4)(x.flatten(1))
huge = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
probe_torch._MAX_EVAL_KEPT_BYTES = 2000  # `huge` (3 KiB) is over it: not held
huge_ref = weakref.ref(huge)
with torch.no_grad():
    for x, y in testloader:
        huge(x)
del huge
probe_torch._MAX_EVAL_KEPT_BYTES = 2**20
third = section("a", 3, 7)  # LAB 1-3 on LAB 1-1's dataset again, new objects: the primary
alive = [r() is not None for pair in (first, second) for r in pair]
print("export:", sys.modules["_dllab_probe"].export_for_verification(str(base / "verify")))
json.dump({"alive": alive, "huge": huge_ref() is not None, "kept": len(probe_torch._evals_kept)},
          open(base / "kept.json", "w"))
"""


def test_each_test_sets_last_model_is_kept_and_captured_after_rebinding(tmp_path: Path) -> None:
    """Issue 13 A, tester t4 #1: a whole lab in one notebook rebinds `net` and `testset` per part;
    the probe holds the model and test set of each test set's newest evaluation (not of a training
    split's, not a model over its size cap), so the teardown still captures each part's model:
    the primary (the last one) and one `more<k>` per other test set, another dataset first."""
    run = _run_script(tmp_path, _SECTIONS)
    kept = json.loads((tmp_path / "kept.json").read_text())
    # the test set of `second` had `huge` evaluated on it last, which is not held: `second`'s pair is released
    assert kept == {"alive": [True, True, False, False], "huge": False, "kept": 2}, kept
    spec = json.loads((tmp_path / "verify" / "spec.json").read_text())
    assert spec["model"]["class"] == "Sequential" and spec["dataset"]["root"].endswith("a/evaluation")
    [more] = [json.loads(p.read_text()) for p in sorted((tmp_path / "verify").glob("more*.json"))]
    assert more["dataset"]["root"].endswith("a/evaluation") and "error" not in more, more
    firsts = [e["cell"] for e in run.kinds("evaluation") if e["samples"] == 9]
    assert more["evaluation"]["samples"] == 9 and more["model"]["bytes"] > 0 and len(firsts) == 2


def test_datasets_are_named_by_the_files_they_read(tmp_path: Path) -> None:
    from grader.dataset_id import DataMount

    run = _run_script(tmp_path, _OWN_DATASETS)
    mount = DataMount("food11", str(tmp_path / "mnt" / "Food-11"), str(tmp_path / "mnt" / "Food-11"))
    summary = summarize_events(run.events, mounts=(mount,))
    named = sorted((d["class"], d["dataset"], d["split"]) for d in summary["datasets"])
    assert named == [("ConcatDataset", "food11", None), ("FoodDataset", "food11", "test"),
                     ("ImageFolder", "food11", "train"), ("ImageFolder", "food11", "val"),
                     ("Subset", "food11", "train"), ("Wrapped", "food11", "train")], named
    [own] = [d for d in summary["datasets"] if d["class"] == "FoodDataset"]
    assert all(f.startswith(mount.inside + "/evaluation/") for f in own["files"])
    assert {(t["dataset"], t["split"]) for t in summary["training"]} == {("food11", "train")}
    assert [(e["dataset"], e["split"], e["samples"]) for e in summary["evaluations"]] == [("food11", "test", 11)]
    assert {n["dataset"] for n in summary["normalization"]} == {"food11"}
    # without the mounts (a run outside the sandbox) the links, resolved, still lead to Food-11
    bare = {d["class"]: d["dataset"] for d in summarize_events(run.events)["datasets"]}
    assert bare["ImageFolder"] == "food11" and bare["Wrapped"] == "food11"
    # the model evaluated on the notebook's own class is exported for verification with the
    # labels that class gave each sampled file: the verifier re-reads Food-11's evaluation split
    from grader.verify import plan, validate_spec

    spec = validate_spec(json.loads((tmp_path / "verify" / "spec.json").read_text()))
    assert (spec["dataset"]["class"], spec["dataset"]["custom"]) == ("FoodDataset", True)
    keys, labels = spec["sample"]["keys"], spec["sample"]["labels"]
    assert sorted(keys) == sorted(f"{c}_0.jpg" for c in range(11)) and labels == [int(k.split("_")[0]) for k in keys]
    job = plan(spec, mounts={mount.inside: mount.host}, dataset_hint="food11")
    assert (job["kind"], job["split"], job["mapping"]) == ("food11", "test", list(range(11)))


_LOADING = """
import os
import torch, torch.nn as nn
torch.manual_seed(0)
out = sys.argv[1]
trained = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
torch.save(trained.state_dict(), out + "/weights.pt")
torch.save(trained, out + "/whole.pt")

fresh = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
result = fresh.load_state_dict(torch.load(out + "/weights.pt"))
assert not result.missing_keys  # the original's return value comes back
whole = torch.load(out + "/whole.pt", weights_only=False)
assert isinstance(whole, nn.Module)

wrong = nn.Sequential(nn.Linear(5, 2))
try:
    wrong.load_state_dict(torch.load(out + "/weights.pt"))
except RuntimeError as exc:  # the student's own error, untouched; nothing was loaded
    assert "Missing key" in str(exc) or "Unexpected key" in str(exc)
else:
    raise AssertionError("a mismatched state dict loaded")
try:
    torch.load(out + "/missing.pt")
except FileNotFoundError:
    pass
with torch.no_grad():
    fresh(torch.randn(2, 3, 2, 2))
"""


@pytest.fixture(scope="module")
def loading_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    # one interpreter for both scenarios on where a model's weights came from
    return _run_script(tmp_path_factory.mktemp("loading"), _LOADING + _WHICH_MODEL)


def test_loaded_weights_are_recorded_only_when_the_load_succeeds(loading_run: Run) -> None:
    run = loading_run
    loads = [(w["source"], w["model"], w["model_class"]) for w in run.summary["weights_loaded"]]
    assert loads[:2] == [("load_state_dict", "fresh", "Sequential"), ("torch.load", "whole", "Sequential")]
    assert loads[2:] == [("load_state_dict", "loaded", "Sequential")]  # _WHICH_MODEL's
    assert run.summary["probe"]["errors"] == 0
    # the loaded model is the one later run forward: one model record, not two
    assert [m["names"] for m in run.summary["models"]].count(["fresh"]) == 1


_WHICH_MODEL = """
import copy
import torch, torch.nn as nn, torchvision, torchvision.transforms as T
torch.manual_seed(0)
trainset = torchvision.datasets.FakeData(48, (3, 4, 4), 3, transform=T.ToTensor())
testset = torchvision.datasets.FakeData(12, (3, 4, 4), 3, transform=T.ToTensor())
trainloader = torch.utils.data.DataLoader(trainset, batch_size=4)
testloader = torch.utils.data.DataLoader(testset, batch_size=4)

def Net():
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 3))

def fit(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in trainloader:  # 12 batches
        opt.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); opt.step()

def test(model):
    with torch.no_grad():
        for x, y in testloader:
            model(x)

net, net2 = Net(), Net()
fit(net2)
test(net)                                   # never trained: another model than net2
best = copy.deepcopy(net2); test(best)      # a copy of the trained one
loaded = Net(); loaded.load_state_dict(net2.state_dict()); test(loaded)
tied = Net(); tied[1] = net2[1]; test(tied)  # holds net2's layer: shares its parameters
inner = Net(); test(inner)                  # tested first, then trained inside a wrapper
outer = nn.Sequential(inner, nn.Identity()); fit(outer)
"""


def test_the_probe_records_which_model_was_trained_and_where_weights_came_from(loading_run: Run) -> None:
    """What grader.checks.training tells a trained model from an untrained one by (issue 12 J3)."""
    from grader.checks.training import trained_models, untrained

    run = loading_run
    assert run.summary["probe"]["errors"] == 0
    ref = {m["names"][0]: m["ref"] for m in run.summary["models"] if m["names"]}
    models = {m["ref"]: m for m in run.summary["models"]}
    assert models[ref["best"]]["via"] == "copy" and models[ref["loaded"]]["via"] == "load_state_dict"
    assert models[ref["net"]]["via"] == "forward" and models[ref["net"]]["shares"] == []
    assert models[ref["tied"]]["shares"] == [ref["net2"]] and models[ref["outer"]]["shares"] == [ref["inner"]]
    stepped = [o for o in run.summary["optimizers"] if o["steps"]]
    assert [o["model_refs"] for o in stepped] == [[ref["net2"]], [ref["inner"], ref["outer"]]]
    assert [w["model_ref"] for w in run.summary["weights_loaded"]][-1] == ref["loaded"]
    ev = {"mode": "execute", "status": "ok", "errors": [], **run.summary,
          "models": [{**m, "cell": None} for m in run.summary["models"]]}
    assert trained_models(ev) == {ref["net2"], ref["tied"], ref["inner"], ref["outer"]}
    tested = {name: [e for e in ev["evaluations"] if e["model_ref"] == ref[name] and e["split"] == "test"]
              for name in ("net", "best", "loaded", "tied", "inner")}
    assert all(len(t) == 1 for t in tested.values()), tested

    def verdict(name: str):
        return untrained(dict(ev, evaluations=tested[name]), dataset="cifar10", accuracy=0.1, printed=0.1)

    found = verdict("net")
    assert found is not None and (found.status, found.kind) == ("fail", "other")
    assert "`net`" in found.message and "`net2`" in found.message
    for name in ("best", "loaded", "tied", "inner"):
        assert verdict(name) is None, name


# ---------------------------------------------------------------- hostile namespaces, caps

_RESET = """
import importlib
import matplotlib.pyplot as plt
plt.figure(); plt.suptitle("before"); plt.plot([1, 2, 4]); plt.savefig(sys.argv[1] + "/a.png")
globals().clear()  # what %reset -f does to the user namespace
import importlib, sys
import matplotlib.pyplot as plt
plt = importlib.reload(plt)
import torch
import torch.optim.lr_scheduler as lr_scheduler
lr_scheduler = importlib.reload(lr_scheduler)
layer = torch.nn.Linear(3, 2)
opt = torch.optim.SGD(layer.parameters(), lr=1.0)
decay = lr_scheduler.ExponentialLR(opt, gamma=0.5)
for _ in range(2):
    opt.zero_grad(); layer(torch.randn(4, 3)).sum().backward(); opt.step(); decay.step()
plt.figure(); plt.suptitle("after"); plt.hist(layer.weight.detach().numpy().ravel()); plt.show()
"""


def test_namespace_clearing_and_reloads_do_not_stop_the_probe(tmp_path: Path) -> None:
    run = _run_script(tmp_path, _RESET)
    assert run.figure("before")["fig_kind"] == "line"
    after = run.figure("after")
    assert after["trigger"] == "show" and after["subjects"] == ["weight"]
    [sched] = run.summary["schedulers"]
    assert (sched["type"], sched["steps"], sched["last_lr"]) == ("ExponentialLR", 2, [0.25])
    assert run.summary["optimizers"][0]["lr_changes"] == [[1, 1.0], [2, 0.5]]
    assert run.summary["probe"]["errors"] == 0


_CAPS = """
import io
import matplotlib.pyplot as plt
plt.figure(); plt.suptitle("x" * 1500); plt.plot([1, 2, 3]); plt.savefig(io.BytesIO())
for i in range(15):
    plt.figure(); plt.plot([i, i + 1, i + 3]); plt.savefig(io.BytesIO())
"""


def test_event_count_size_and_figure_caps(tmp_path: Path) -> None:
    run = _run_script(tmp_path, _CAPS, caps={"max_events": 12, "max_figures": 2,
                                              "max_event_bytes": 1000})
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 12 and json.loads(lines[-1])["kind"] == "probe-limit"
    assert run.kinds("probe-error")[0]["where"] == "event-too-large"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["fig-0001.png", "fig-0002.png"]
    assert run.summary["probe"]["limit_hit"] is True


# ---------------------------------------------------------------- host-side reading


def _write_lines(path: Path, *lines: object) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_read_events_drops_bad_lines_with_warnings_and_never_raises(tmp_path: Path) -> None:
    good = {"id": 1, "t": 0.1, "cell": 3, "kind": "bind", "ref": 2, "names": ["net"]}
    path = _write_lines(
        tmp_path / "e.jsonl", good, "{not json", "[1, 2]", '{"id": 1, "t": NaN, "kind": "bind"}',
        {**good, "kind": "rootkit"}, {**good, "names": "net"}, {**good, "extra": 1},
        {**good, "names": ["x" * 10000]}, "{" * 100000 + "}" * 100000)
    events, warnings = read_events(path)
    assert len(events) == 3 and "extra" not in events[1] and len(events[2]["names"][0]) == 4000
    text = "\n".join(warnings)
    assert "3 malformed line(s)" in text and "not an object" in text
    assert "unknown kind 'rootkit'" in text
    assert "bind.names is not a list" in text and "unknown field bind.extra" in text


def test_read_events_caps_bytes_and_count(tmp_path: Path) -> None:
    line = {"id": 1, "t": 0.0, "cell": None, "kind": "probe-limit", "what": "x"}
    path = _write_lines(tmp_path / "e.jsonl", *[line] * 100)
    events, warnings = read_events(path, max_bytes=1000)
    assert 0 < len(events) < 20 and any("larger than 1000 bytes" in w for w in warnings)
    events, warnings = read_events(path, max_events=10)
    assert len(events) == 10 and any("more than 10 events" in w for w in warnings)


def test_read_events_refuses_links_and_fifos(tmp_path: Path) -> None:
    secret = _write_lines(tmp_path / "secret.jsonl", {"id": 1, "t": 0, "kind": "probe-limit",
                                                      "what": "x"})
    (tmp_path / "link.jsonl").symlink_to(secret)
    events, warnings = read_events(tmp_path / "link.jsonl")
    assert events == [] and warnings and "no readable events file" in warnings[0]
    os.mkfifo(tmp_path / "fifo")
    assert read_events(tmp_path / "fifo")[0] == []
    assert read_events(tmp_path / "missing.jsonl")[0] == []
    (tmp_path / "fig-0001.png").write_bytes(b"not a png")
    assert figure_file(tmp_path, "fig-0001.png") is None
    assert figure_file(tmp_path, "../secret.jsonl") is None


def test_summary_ties_names_splits_and_test_passes_together() -> None:
    def ev(i: int, kind: str, **fields: object) -> dict:
        return validate_event({"id": i, "t": 0.0, "cell": 4, "kind": kind, **fields})

    events = [
        ev(1, "dataset", **{"class": "CIFAR10", "module": "torchvision.datasets.cifar",
                            "via": "init", "root": "/tmp/dataset-nctu", "train": False,
                            "split": "test", "length": 10000, "num_classes": 10}),
        ev(2, "dataloader", dataset=1, batch_size=4, shuffle=False),
        ev(3, "model", **{"class": "Net", "module": "__main__", "params": 62006,
                          "trainable": 62006, "via": "forward"}),
        ev(4, "training", model=3, loader=2, dataset=1, split="test", samples=10000,
           batches=2500, grad_enabled=True, training=True),
        ev(5, "scheduler", type="StepLR", module="torch.optim.lr_scheduler", optimizer=None,
           params={"step_size": 30, "gamma": 0.1}),
        ev(6, "bind", ref=3, names=["net"]),
    ]
    summary = summarize_events(events)
    [evaluation] = summary["evaluations"]  # no eval(), no no_grad(): still over the test set
    assert (evaluation["model"], evaluation["dataset"], evaluation["split"],
            evaluation["training_mode"]) == ("net", "cifar10", "test", True)
    assert summary["training"][0]["split"] == "test"  # visible to a "trained on test" check
    assert summary["schedulers"][0]["steps"] == 0


def test_validate_event_rejects_wrong_types() -> None:
    with pytest.raises(ValueError, match="steps is not int"):
        validate_event({"id": 1, "t": 0, "kind": "optimizer-state", "steps": True})
    assert validate_event({"id": 1, "t": 0, "kind": "scheduler", "params": {"m": [1, 2]}})


# ---------------------------------------------------------------- a real kernel

_KERNEL_CELLS = [
    """
import torch, torch.nn as nn, torch.nn.functional as F, torchvision
import torchvision.transforms as transforms
import matplotlib.pyplot as plt
torch.manual_seed(0)
transform = transforms.Compose([transforms.ToTensor(),
                                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
trainset = torchvision.datasets.FakeData(64, (3, 32, 32), 10, transform=transform)
testset = torchvision.datasets.FakeData(32, (3, 32, 32), 10, transform=transform, random_offset=7)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=16, shuffle=True)
testloader = torch.utils.data.DataLoader(testset, batch_size=16)
""" + _NET,
    """
net = Net()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
for epoch in range(1):
    for inputs, labels in trainloader:
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
    scheduler.step()
""",
    """
for name, param in net.named_parameters():
    if "weight" in name:
        plt.hist(param.detach().numpy().flatten(), bins=30)
        plt.title(name)
        plt.show()
""",
    """
correct = total = 0
net.eval()
with torch.no_grad():
    for images, labels in testloader:
        predicted = net(images).argmax(1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
print(f"Accuracy of the network on the test images: {100 * correct / total:.1f} %")
""",
    """
%reset -f
import matplotlib.pyplot as plt
plt.plot([0.9, 0.5, 0.3, 0.2])
""",
]


@pytest.mark.kernel
def test_real_kernel_records_training_figures_and_evaluation(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    from grader.probe.recorder import bootstrap_source

    events, figs = tmp_path / "events.jsonl", tmp_path / "figs"
    boot = bootstrap_source(events_path=str(events), figures_dir=str(figs), max_figures=50)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c)
                                         for c in [boot, *_KERNEL_CELLS]])
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    counts = {i: c.execution_count for i, c in enumerate(nb.cells)}
    run_events, warnings = read_events(events)
    assert warnings == []
    summary = summarize_events(run_events, figures_dir=figs)

    hists = [f for f in summary["figures"] if f["cell"] == counts[3]]
    assert [(f["kind"], f["subjects"], f["title"]) for f in hists] == [
        ("histogram", [name], name) for name in
        ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight")]
    assert all(figure_file(figs, f["png"]) for f in hists)
    [curve] = [f for f in summary["figures"] if f["cell"] == counts[5]]
    assert (curve["kind"], curve["trigger"]) == ("line", "cell-end")  # before inline closed it

    [evaluation] = summary["evaluations"]
    assert (evaluation["cell"], evaluation["model"], evaluation["loader"], evaluation["split"],
            evaluation["samples"]) == (counts[4], "net", ["testloader"], "test", 32)
    [opt] = summary["optimizers"]
    assert (opt["steps"], opt["lr_changes"], opt["model"]) == (4, [[1, 0.001]], "net")
    assert summary["schedulers"][0]["steps"] == 1
    assert summary["normalization"][0]["mean"] == [0.5, 0.5, 0.5]
    assert summary["probe"]["errors"] == 0
