"""Independent verification (grader/verify/ + grader/probe/rec_export.py).

Logic without kernels: the spec.json validator, the transform as data and its rebuild, the
reasons given when verification cannot be done, and capture refusing a model it cannot
export. End to end (kernel): a real LeNet notebook through the sandbox with the probe and the
teardown, then a fresh sandboxed evaluation that must agree with what the notebook printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from PIL import Image

from grader import sandbox
from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec, run_notebook
from grader.probe import rec_export
from grader.probe.recorder import bootstrap_source
from grader.samples import cells
from grader.verify import (_block, _eval_build_transform, _step, plan, teardown_source, transform_text,
                           validate_spec, verify_run, _NotVerified)
from grader.verify.data import Split

CIFAR_MOUNT = "/tmp/dataset-nctu/cifar-10-batches-py"


def _spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": 1,
        "model": {"class": "Net", "capture": "script", "file": "model.pt", "bytes": 1000,
                  "errors": [], "input_shape": [3, 32, 32], "flatten_input": False,
                  "evaluated_in_train_mode": False, "mode_sensitive": False},
        "dataset": {"class": "CIFAR10", "root": "/tmp/dataset-nctu", "train": False, "length": 500,
                    "classes": ["airplane"], "files_dir": None, "default_loader": None,
                    "subset": False, "split": "test"},
        "transform": {"steps": [{"op": "ToTensor", "family": "v1"},
                                {"op": "Normalize", "family": "v1", "mean": [0.5] * 3, "std": [0.5] * 3}],
                      "unknown": [], "repr": "Compose(...)"},
        "sample": {"keys": [0, 1], "preds": [3, 4]},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            spec[section][field] = value
        else:
            spec[section] = value
    return spec


def _reason(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(_NotVerified) as info:
        fn(*args, **kw)
    return str(info.value)


# ---------------------------------------------------------------- no kernel


def test_validator_accepts_a_good_spec_and_names_the_bad_key() -> None:
    ok = validate_spec(_spec())
    assert [s["op"] for s in ok["steps"]] == ["ToTensor", "Normalize"]
    assert "`model`" in _reason(validate_spec, _spec(model__capture="pickle"))
    assert "`dataset`" in _reason(validate_spec, _spec(dataset__root="relative/path"))
    assert "`sample`" in _reason(validate_spec, _spec(sample={"keys": [0], "preds": [1, 2]}))
    assert "`version`" in _reason(validate_spec, _spec(version=2))
    assert "malformed" in _reason(validate_spec, [1, 2])
    # The kernel's own refusal comes back as the reason, one sentence.
    assert _reason(validate_spec, {"version": 1, "error": "no model was evaluated on a test split"}) \
        == "no model was evaluated on a test split."


def test_unknown_or_odd_transform_steps_are_refused_with_a_reason() -> None:
    unknown = _spec(transform={"steps": [], "unknown": ["Lambda()"], "repr": ""})
    assert "cannot rebuild (Lambda())" in _reason(validate_spec, unknown)
    assert "cannot rebuild" in _reason(_step, {"op": "RandomCrop", "family": "v1", "size": 32})
    assert "Normalize" in _reason(_step, {"op": "Normalize", "family": "v1", "mean": [0.5], "std": [0.0]})
    assert "Resize" in _reason(_step, {"op": "Resize", "family": "v1", "size": [32], "interpolation": "magic"})
    assert "Resize" in _reason(_step, {"op": "Resize", "family": "v1", "size": 32, "evil": "x"})


def _round_trip(transform: Any) -> Any:
    class Holder:
        target_transform = None

    holder = Holder()
    holder.transform = transform
    described = rec_export._describe_transform(holder)
    assert described["unknown"] == []
    steps = validate_spec(_spec(transform=described))["steps"]
    return steps, _eval_build_transform(steps)


def test_transform_is_recorded_as_data_and_rebuilt_identically() -> None:
    from torchvision import transforms as T
    from torchvision.transforms import v2

    img = Image.fromarray((torch.rand(40, 52, 3) * 255).to(torch.uint8).numpy())
    originals = [
        T.Compose([T.Resize((32, 32)), T.CenterCrop(28), T.ToTensor(),
                   T.Normalize((0.59, 0.46, 0.34), (0.2, 0.14, 0.135))]),
        T.Compose([T.Grayscale(1), T.Resize(30, interpolation=T.InterpolationMode.NEAREST),
                   T.ToTensor(), T.Normalize((0.1307,), (0.3081,))]),
        v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)]),
    ]
    for original in originals:
        steps, rebuilt = _round_trip(original)
        assert torch.equal(original(img), rebuilt(img)), transform_text(steps)
    assert transform_text(_round_trip(originals[0])[0]).startswith("Resize(size=[32, 32]")


def test_random_or_custom_test_transforms_are_unknown() -> None:
    from torchvision import transforms as T

    class Holder:
        transform = T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Lambda(lambda x: x * 2)])
        target_transform = None

    unknown = rec_export._describe_transform(Holder())["unknown"]
    assert len(unknown) == 2 and "RandomHorizontalFlip" in unknown[0] and "Lambda" in unknown[1]
    Holder.transform = None
    assert rec_export._describe_transform(Holder())["unknown"] == ["no step turns the image into a tensor"]


@pytest.mark.filterwarnings("ignore")
def test_capture_refuses_a_model_it_cannot_reproduce(tmp_path: Path) -> None:
    class Numpy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(12, 3)

        def forward(self, x, *extra):  # *extra: not scriptable; numpy: neither traceable nor exportable
            return torch.from_numpy(self.fc(x.flatten(1)).detach().numpy() * 2)

    model = Numpy().eval()
    x = torch.randn(8, 3, 2, 2)
    with pytest.raises(rec_export._Refusal, match="could not be exported"):
        rec_export._capture(model, x[:2], x, model(x), str(tmp_path / "model.pt"))
    assert not (tmp_path / "model.pt").exists()


def test_reasons_when_there_is_nothing_to_verify(tmp_path: Path) -> None:
    limits, spec = SandboxLimits(), SandboxSpec()
    probe = tmp_path / "probe"
    (probe / "verify").mkdir(parents=True)
    (tmp_path / "run.json").write_text(json.dumps({"status": "killed"}))
    assert verify_run(run_dir=tmp_path, probe_dir=probe, spec=spec, limits=limits,
                      dataset_hint="cifar10") == {"reason": "the run was killed, so the trained model could not be captured"}
    (tmp_path / "run.json").write_text(json.dumps({"status": "error"}))
    assert "not captured" in verify_run(run_dir=tmp_path, probe_dir=probe, spec=spec, limits=limits,
                                        dataset_hint="cifar10")["reason"]
    (probe / "verify" / "spec.json").write_text(json.dumps(_spec()))
    assert "did not come out of the sandbox" in verify_run(
        run_dir=tmp_path, probe_dir=probe, spec=spec, limits=limits, dataset_hint="cifar10")["reason"]
    (probe / "verify" / "model.pt").symlink_to("/etc/passwd")
    assert "not a regular file" in verify_run(
        run_dir=tmp_path, probe_dir=probe, spec=spec, limits=limits, dataset_hint="cifar10")["reason"]


def test_only_the_labs_read_only_data_is_used(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    mounts = {CIFAR_MOUNT: str(tmp_path / "cifar-10-batches-py")}
    job = plan(validate_spec(_spec()), mounts=mounts, dataset_hint="cifar10")
    # the host reads the split itself, from the lab's own folder (never from the sandbox)
    assert (job["kind"], job["root"], job["split"]) == ("cifar10", str(tmp_path / "cifar-10-batches-py"), "test")
    copied = validate_spec(_spec(dataset__root="/tmp/work/mycifar"))
    assert "not one of the lab's read-only dataset folders" in _reason(plan, copied, mounts=mounts,
                                                                         dataset_hint="cifar10")
    train = validate_spec(_spec(dataset__train=True))
    assert "training split" in _reason(plan, train, mounts=mounts, dataset_hint="cifar10")


def test_food11_imagefolder_maps_class_folders_onto_canonical_classes(tmp_path: Path) -> None:
    food = tmp_path / "Food-11"
    for split in ("training", "validation", "evaluation"):
        (food / split).mkdir(parents=True)
    mounts = {"/tmp/datasets-nctu/Food-11": str(food)}
    names = ["Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat", "Noodles-Pasta",
             "Rice", "Seafood", "Soup", "Vegetable-Fruit"]
    folder = validate_spec(_spec(dataset={
        "class": "ImageFolder", "root": "/tmp/work/food/evaluation", "train": None, "length": 66,
        "classes": sorted(names), "files_dir": "/tmp/datasets-nctu/Food-11/evaluation",
        "default_loader": True, "subset": False, "split": "test"}))
    job = plan(folder, mounts=mounts, dataset_hint="food11")
    assert job["root"] == str(food / "evaluation") and job["split"] == "test"
    assert [names[i] for i in job["mapping"]] == sorted(names)
    digits = validate_spec(_spec(dataset=dict(folder["dataset"], classes=[f"{i:02d}" for i in range(11)])))
    assert plan(digits, mounts=mounts, dataset_hint="food11")["mapping"] == list(range(11))
    short = validate_spec(_spec(dataset=dict(folder["dataset"], classes=["00", "01"])))
    assert "one to one" in _reason(plan, short, mounts=mounts, dataset_hint="food11")


def _own_food(tmp_path: Path, keys: list, labels: list) -> tuple[dict, dict[str, str]]:
    food = tmp_path / "Food-11"
    for split in ("training", "validation", "evaluation"):
        (food / split).mkdir(parents=True)
    spec = validate_spec(_spec(
        dataset={"class": "FoodDataset", "root": None, "train": None, "length": 66, "classes": [],
                 "files_dir": "/tmp/datasets-nctu/Food-11/evaluation", "default_loader": None,
                 "subset": False, "split": "test", "custom": True},
        sample={"keys": keys, "preds": [0] * len(keys), "labels": labels}))
    return spec, {"/tmp/datasets-nctu/Food-11": str(food)}


def test_a_notebooks_own_food11_dataset_class_is_verified_by_its_labels(tmp_path: Path) -> None:
    # 0000311: FoodDataset(Dataset) globbing Food-11/evaluation/*.jpg, label = the file's prefix
    keys = [f"{c}_{k}.jpg" for c in range(11) for k in (0, 3)]
    spec, mounts = _own_food(tmp_path, keys, [int(k.split("_")[0]) for k in keys])
    job = plan(spec, mounts=mounts, dataset_hint="food11")
    assert (job["kind"], job["root"], job["split"]) == ("food11", str(tmp_path / "Food-11" / "evaluation"), "test")
    assert job["mapping"] == list(range(11)) and job["require_sample"] is True
    files = [f"{c}_{k}.jpg" for c in range(11) for k in range(6)]
    split = Split("food11", tuple(int(f.split("_")[0]) for f in files), tuple(files))
    preds = list(split.labels)
    other = validate_spec(dict(_spec(), dataset=spec["dataset"], sample={"keys": ["99_0.jpg"], "preds": [0]}))
    job_other = dict(job, sample_keys=["99_0.jpg"], sample_preds=[0])
    assert "found again" in _reason(_block, other, job_other, split, preds, seconds=1.0)  # nothing cross-checked
    job = dict(job, sample_preds=[int(k.split("_")[0]) for k in keys])  # the notebook's model was right too
    block = _block(spec, job, split, preds, seconds=1.0)
    assert (block["dataset"], block["test_accuracy"], block["sample_agreement"]) == ("food11", 1.0, 1.0)
    # its own numbering (label 10 - class): read from the labels it gave the sampled files
    spec, _ = _own_food(tmp_path / "b", keys, [10 - int(k.split("_")[0]) for k in keys])
    assert plan(spec, mounts=mounts, dataset_hint="food11")["mapping"] == [10 - c for c in range(11)]
    # two classes under one label, or labels for a few classes only: no guessing
    spec, _ = _own_food(tmp_path / "c", keys, [0] * len(keys))
    assert "two Food-11 classes" in _reason(plan, spec, mounts=mounts, dataset_hint="food11")
    spec, _ = _own_food(tmp_path / "d", ["3_0.jpg", "4_0.jpg"], [4, 3])
    assert "every class" in _reason(plan, spec, mounts=mounts, dataset_hint="food11")
    # over another lab's data the reason names the class and what the grader rebuilds
    spec, _ = _own_food(tmp_path / "e", keys, [0] * len(keys))
    assert "notebook's own FoodDataset class" in _reason(plan, spec, mounts=mounts, dataset_hint="catsdogs")


def test_an_unrebuildable_test_set_is_named_with_its_dataset(tmp_path: Path) -> None:
    spec = validate_spec(_spec(dataset__class="ImageFolder", dataset__root="/work/data/pets"))
    reason = _reason(plan, spec, mounts={}, dataset_hint="catsdogs")
    assert reason.startswith("the test data is an ImageFolder of catsdogs") and "Food-11" in reason


# ---------------------------------------------------------------- end to end (kernel + sandbox)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        sandbox.check_bwrap()
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    from grader.datasets import synth

    data = tmp_path_factory.mktemp("verify-data")
    synth(data, size="tiny", seed=0, names=["cifar10"])
    for d in (data, *data.iterdir()):  # pytest and synth make 0700 folders
        d.chmod(0o755)
        for f in d.iterdir():
            f.chmod(f.stat().st_mode | 0o444)
    return data / "cifar-10-batches-py"


def _run(tmp_path: Path, cifar: Path, *sources: str) -> tuple[Path, SandboxSpec, SandboxLimits, str]:
    sub = tmp_path / "sub"
    sub.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s.strip("\n")) for s in sources])
    nbformat.write(nb, sub / "lab.ipynb")
    spec = SandboxSpec(mounts={CIFAR_MOUNT: str(cifar)})
    limits = SandboxLimits(cell_timeout_s=120, wall_timeout_s=300)
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig"))
    out = tmp_path / "out"
    result = run_notebook(sub / "lab.ipynb", submission_dir=sub, out_dir=out, spec=spec, limits=limits,
                          startup_code=startup, teardown_code=teardown_source())
    executed = nbformat.read(out / "executed.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert result.status in ("ok", "error"), result.reason
    return out, spec, limits, text


@pytest.mark.kernel
def test_verified_accuracy_matches_the_honest_total_and_exposes_typed_per_class(tmp_path: Path,
                                                                                 cifar: Path) -> None:
    from grader.checks.base import CheckContext
    from grader.checks.metrics import metrics_verified
    from grader.parsers import parse_notebook

    out, spec, limits, text = _run(tmp_path, cifar, cells.CIFAR_DATA, cells.LENET, cells.cifar_train(1),
                                   cells.CIFAR_TEST, cells.FAKE_PER_CLASS)
    hidden = {"cifar10": str(cifar.parent / "dllab-hidden" / "cifar-10-batches-py")}
    verified = verify_run(run_dir=out, probe_dir=out / "probe", spec=spec, limits=limits, dataset_hint="cifar10",
                          hidden=hidden)
    assert "reason" not in verified, verified
    printed = float(re.search(r"test images: ([\d.]+) %", text).group(1)) / 100
    assert abs(verified["test_accuracy"] - printed) <= 0.005
    assert len(verified["per_class_accuracy"]) == 10 and verified["test_images"] == 500
    # An honest model scores the same on the hidden split of the same distribution: no flag.
    assert verified["hidden_n"] == 500 and verified["hidden_gap_flagged"] is False, verified
    assert abs(verified["hidden_accuracy"] - verified["test_accuracy"]) < 0.1
    stats = verified["parameters"]["conv1.weight"]
    assert stats["numel"] == 6 * 3 * 5 * 5 and len(stats["quantiles"]) == 257
    assert (verified["dataset"], verified["split"], verified["method"]) == ("cifar10", "test", "torchscript")
    assert verified["sample_agreement"] == 1.0
    # The teardown left no trace in the probe's record of the notebook.
    events = [json.loads(line) for line in (out / "probe" / "events.jsonl").read_text().splitlines()]
    assert sum(e["kind"] == "model" for e in events) == 1
    assert sum(e["kind"] == "evaluation" for e in events) == 1

    parsed = parse_notebook(nbformat.read(out / "executed.ipynb", as_version=4), dataset="cifar10")
    ev = {"path": "lab.ipynb", "verified": verified,
          "metrics": {"test_accuracy": parsed.test_accuracy, "per_class_accuracy": dict(parsed.per_class_accuracy)}}
    ctx = CheckContext(student_id="s", part_id="1-1", dataset="cifar10", evidence=[ev])
    outcome = metrics_verified(ctx, {})
    assert outcome.status == "fail" and "mismatch" in outcome.flags
    honest = dict(ev, metrics={"test_accuracy": parsed.test_accuracy, "per_class_accuracy": {}})
    assert metrics_verified(CheckContext(student_id="s", part_id="1-1", dataset="cifar10",
                                         evidence=[honest]), {}).status == "pass"


@pytest.mark.kernel
def test_a_model_that_cannot_be_exported_gives_a_reason(tmp_path: Path, cifar: Path) -> None:
    model = r'''
import torch.nn as nn

class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x, *extra):
        return torch.from_numpy(self.fc(x.flatten(1)).detach().numpy())

net = Odd()
with torch.no_grad():
    correct = sum((net(x).argmax(1) == y).sum().item() for x, y in testloader)
print('accuracy %.2f %%' % (100 * correct / len(testset)))
'''
    # The last cell raises: the teardown still runs.
    out, spec, limits, _ = _run(tmp_path, cifar, cells.CIFAR_DATA, model, "raise ValueError('late')")
    verified = verify_run(run_dir=out, probe_dir=out / "probe", spec=spec, limits=limits, dataset_hint="cifar10")
    assert set(verified) == {"reason"}
    assert verified["reason"].startswith("the model could not be exported (script: ")
    assert "teardown took" in (out / "log.txt").read_text()


def test_cifar_read_from_the_notebooks_own_data_folder_is_the_labs(tmp_path: Path) -> None:
    # 1601001: notebook in hw/lab1/code/, CIFAR10(root='./data') -> the grader's mount placed there
    (tmp_path / "cifar-10-batches-py").mkdir()
    mounts = {"data/cifar-10-batches-py": str(tmp_path / "cifar-10-batches-py"),
              CIFAR_MOUNT: str(tmp_path / "cifar-10-batches-py")}
    spec = validate_spec(_spec(dataset__root="/tmp/work/submission/hw/lab1/code/data"))
    job = plan(spec, mounts=mounts, dataset_hint="cifar10", workdir="hw/lab1/code")
    # the host reads the lab's own folder, wherever the run had it
    assert (job["kind"], job["split"], job["root"]) == ("cifar10", "test", str(tmp_path / "cifar-10-batches-py"))
    # 0610003: part1/
    spec = validate_spec(_spec(dataset__root="/tmp/work/submission/part1/data"))
    assert plan(spec, mounts=mounts, dataset_hint="cifar10", workdir="part1")["root"] == \
        str(tmp_path / "cifar-10-batches-py")
    # another notebook's folder is not where this run had the dataset
    assert "not one of the lab's read-only dataset folders" in _reason(
        plan, spec, mounts=mounts, dataset_hint="cifar10", workdir="hw/lab1/code")


def test_food11_read_from_the_notebooks_own_data_folder_is_the_labs(tmp_path: Path) -> None:
    food = tmp_path / "Food-11"
    for split in ("training", "validation", "evaluation"):
        (food / split).mkdir(parents=True)
    names = ["Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat", "Noodles-Pasta",
             "Rice", "Seafood", "Soup", "Vegetable-Fruit"]
    folder = validate_spec(_spec(dataset={
        "class": "ImageFolder", "root": "/tmp/work/submission/part1/data/Food-11/evaluation", "train": None,
        "length": 66, "classes": sorted(names), "files_dir": "/tmp/work/submission/part1/data/Food-11/evaluation",
        "default_loader": True, "subset": False, "split": "test"}))
    job = plan(folder, mounts={"data/Food-11": str(food)}, dataset_hint="food11", workdir="part1")
    assert job["root"] == str(food / "evaluation") and job["split"] == "test"


_STUDY = r'''
import copy
# fewer, bigger batches than the handout's: each step costs the probe's hooks, whatever its size
trainloader = torch.utils.data.DataLoader(trainset, batch_size=20, shuffle=True, num_workers=0)
testloader = torch.utils.data.DataLoader(testset, batch_size=100, shuffle=False, num_workers=0)
for lr in [0.05, 0.01]:
    torch.manual_seed(0)
    model = Net()  # each rate's model is dropped by the next: the probe keeps its tensors
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for i, (inputs, labels) in enumerate(trainloader):
        if i == 40:
            break
        optimizer.zero_grad()
        criterion(model(inputs), labels).backward()
        optimizer.step()
    print('lr %g epoch 1 loss: %.3f' % (lr, criterion(model(inputs), labels).item()))
# the same kind of forgery: a copy of the last run "trained" by a third optimizer that changes nothing
twin = copy.deepcopy(model)
copier = optim.SGD(twin.parameters(), lr=0.0)
copier.zero_grad(); criterion(twin(inputs), labels).backward(); copier.step()
print('lr 0.1 epoch 1 loss: 1.034')
'''

_FORGED_RUN = r'''
import sys
P = sys.modules['_dllab_probe']
# finding 4 (1300003): an optimizer record naming the real model, which never existed
m = [r.ref for wr, r in list(sys.modules['_dllab_probe_torch']._by_id.values()) if wr() is model][0]
o = P.emit('optimizer', {'type': 'SGD', 'module': 'torch.optim.sgd', 'lr': 0.5, 'param_groups': 1, 'n_params': 10})
P.emit('optimizer-state', {'ref': o, 'steps': 250, 'model': m, 'models': [m], 'cells': [P._state.cell],
                           'checksum_start': [2.84, 8.85], 'checksum_now': [3.5, 9.1]})
print('lr 0.5 epoch 1 loss: 1.234')
with torch.no_grad():
    correct = sum((model(x).argmax(1) == y).sum().item() for x, y in testloader)
print('Accuracy of the network on the 500 test images: %.2f %%' % (100 * correct / len(testset)))
'''


@pytest.mark.kernel
def test_each_training_run_is_captured_and_forged_runs_are_not(tmp_path: Path, cifar: Path) -> None:
    """Finding 4 of tester t3: each optimizer that stepped has its model captured at the end of its
    run and evaluated by the host; a copy predicts like its original; a recorded optimizer that
    never existed has no model, so the learning-rate study counts the two real runs only."""
    from grader.checks.base import CheckContext
    from grader.checks.figures import lr_study
    from grader.collect import from_run
    from grader.dataset_id import DataMount

    sub = tmp_path / "sub"
    sub.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s.strip("\n")) for s in (
        cells.CIFAR_DATA, cells.LENET, _STUDY, _FORGED_RUN, cells.LR_PLOT.replace("results.items()", "[]"))])
    nbformat.write(nb, sub / "lab1-3.ipynb")
    spec = SandboxSpec(mounts={CIFAR_MOUNT: str(cifar)})
    limits = SandboxLimits(cell_timeout_s=120, wall_timeout_s=300)
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig"))
    out = tmp_path / "out"
    result = run_notebook(sub / "lab1-3.ipynb", submission_dir=sub, out_dir=out, spec=spec, limits=limits,
                          startup_code=startup, teardown_code=teardown_source())
    assert result.status == "ok", result.reason
    hidden = {"cifar10": str(cifar.parent / "dllab-hidden" / "cifar-10-batches-py")}
    verified = verify_run(run_dir=out, probe_dir=out / "probe", spec=spec, limits=limits, dataset_hint="cifar10",
                          hidden=hidden)
    assert "reason" not in verified, verified
    runs = verified.pop("runs")
    assert len(runs) == 3 and all("test_accuracy" in r for r in runs), runs  # the forged optimizer has none
    first, last, twin = runs
    assert last["test_accuracy"] == verified["test_accuracy"]  # the last run's model is the one tested
    assert twin["agreement"][str(last["optimizer"])] == 1.0 and first["agreement"][str(last["optimizer"])] < 0.98
    ev = from_run(result, run_dir=out, events_path=out / "probe" / "events.jsonl", figures_dir=out / "probe" / "fig",
                  mounts=(DataMount(name="cifar10", inside="/tmp/dataset-nctu", host=str(cifar.parent)),))
    ev.update(verified=verified, verified_runs=runs)
    assert sorted(o["lr"] for o in ev["optimizers"] if o.get("steps")) == [0.0, 0.01, 0.05, 0.5]
    outcome = lr_study(CheckContext(student_id="s", part_id="lab1-3", dataset="cifar10", evidence=[ev]),
                       {"min_runs": 2, "require_plot": False})
    assert outcome.status == "pass", outcome.message
    assert "2 initial learning rate(s) trained (0.01, 0.05)" in outcome.message, outcome.message
    assert "Not counted: 2 run(s) (lr 0, 0.5)" in outcome.message, outcome.message
