"""Datasets named by what they read (grader/dataset_id.py), and every consumer using that name:
the probe's summary, sections, the normalization check and the verifier's hint. In-memory
probe records and evidence only; tests/test_probe.py runs the probe's side for real."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import nbformat
from nbformat.v4 import new_code_cell

from grader.checks import run_check
from grader.checks.base import CheckContext
from grader.checks.training import training_budget
from grader.collect import from_run
from grader.dataset_id import DataMount, class_index, identify
from grader.datasets import FOOD11_CLASSES
from grader.evidence import summarize_events, validate_event
from grader.sections import verification_hint

FOOD = "/tmp/datasets-nctu/Food-11"
MOUNTS = (DataMount("cifar10", "/tmp/datasets-nctu/cifar-10-batches-py", "/srv/data/cifar-10-batches-py"),
          DataMount("food11", FOOD, "/srv/data/Food-11"))
IMAGEFOLDER = {"class": "ImageFolder", "module": "torchvision.datasets.folder"}
NUMBERED = [f"{i:02d}" for i in range(11)]
NAMED = [f"{i:02d}_{c.replace('/', '-')}" for i, c in enumerate(FOOD11_CLASSES)]


def food_files(split: str, base: str = FOOD) -> list[str]:
    return [f"{base}/{split}/0_0.jpg", f"{base}/{split}/5_2.jpg", f"{base}/{split}/10_9.jpg"]


# ---------------------------------------------------------------- identify, one record


def test_custom_dataset_class_globbing_the_mount_is_food11() -> None:
    # 0000311: FoodDataset(Dataset) over /tmp/datasets-nctu/Food-11/<split>/*.jpg, no `root`
    rec = {"class": "FoodDataset", "module": "__main__", "files": food_files("training")}
    assert identify(rec, mounts=MOUNTS) == "food11"
    assert identify({"class": "FoodDataset", "module": "__main__"}, mounts=MOUNTS) == "fooddataset"


def test_imagefolder_over_a_linked_copy_without_food_in_its_path_is_food11() -> None:
    # 0000313: ImageFolder over /tmp/work/data_0556001 whose files link into the mount
    rec = {**IMAGEFOLDER, "root": "/tmp/work/data_0556001/training", "classes": NAMED,
           "files": food_files("training")}  # the probe resolves the links
    assert identify(rec, mounts=MOUNTS) == "food11"
    # the same copy, links not resolved (or a real copy): Food-11's file names and class list
    rec["files"] = food_files("training", "/tmp/work/data_0556001/training/00_Bread")
    assert identify(rec, mounts=()) == "food11"
    assert identify({**rec, "files": []}, mounts=()) == "food11"  # `00_Bread`..`10_Vegetable-Fruit`


def test_concat_of_training_and_validation_takes_its_parts_name() -> None:
    # 0000306: ConcatDataset([trainset, valset]) names nothing itself
    rec = {"class": "ConcatDataset", "module": "torch.utils.data.dataset", "children": [1, 2]}
    assert identify(rec, related=["food11", "food11"], mounts=MOUNTS) == "food11"
    assert identify(rec, related=[None, None], mounts=MOUNTS) == "concatdataset"


def test_a_renamed_copy_of_the_stand_in_is_known_by_its_bytes(tmp_path: Path) -> None:
    # Same kind, own case: files copied (not linked) to /tmp/work/mine/<n>/img<k>.png, classes
    # numbered: nothing but their md5 (in the mounted stand-in's manifest) says Food-11.
    host = tmp_path / "Food-11"
    host.mkdir()
    data = b"\xff\xd8 a stand-in jpeg"
    (host / "manifest.json").write_text(json.dumps({"name": "food11", "files": {
        "training/0_0.jpg": {"bytes": len(data), "md5": hashlib.md5(data).hexdigest()}}}))
    mounts = (DataMount("food11", FOOD, str(host)),)
    rec = {**IMAGEFOLDER, "root": "/tmp/work/mine/train", "classes": [str(i) for i in range(11)],
           "files": ["/tmp/work/mine/train/0/img0.png"], "md5": [hashlib.md5(data).hexdigest()]}
    assert identify(rec, mounts=mounts) == "food11"
    assert identify({**rec, "md5": ["0" * 32]}, mounts=mounts) == "imagefolder"


def test_other_data_is_not_taken_for_food11() -> None:
    cats = {**IMAGEFOLDER, "root": "/work/data/pets", "classes": ["cat", "dog"],
            "files": ["/work/data/pets/cat/cat.1.jpg", "/work/data/pets/dog/dog.7.jpg"]}
    assert identify(cats, mounts=MOUNTS) == "catsdogs"
    # three Food-11 class folders copied to make a small exercise: Food-11's images, not Food-11
    three = {**IMAGEFOLDER, "root": "/tmp/work/small", "classes": ["0", "1", "2"],
             "files": ["/tmp/work/small/0/0_1.jpg", "/tmp/work/small/2/2_5.jpg"]}
    assert identify(three, mounts=()) == "imagefolder"
    # a torchvision class names its own data, wherever its root is
    cifar = {"class": "CIFAR10", "module": "torchvision.datasets.cifar", "root": FOOD}
    assert identify(cifar, mounts=MOUNTS) == "cifar10"
    # a sibling of a mount is not inside it
    assert identify({**IMAGEFOLDER, "root": "/tmp/datasets-nctu/pets"}, mounts=MOUNTS) == "imagefolder"


def test_class_index_reads_numbers_names_and_numbered_names() -> None:
    assert [class_index(c, FOOD11_CLASSES) for c in ("03", "Egg", "06_Noodles-Pasta", "12", "Pizza")] == [
        3, 3, 6, None, None]


# ---------------------------------------------------------------- the summary and its consumers


def _events(*specs: tuple) -> list[dict]:
    return [validate_event({"id": i, "t": 0.0, "cell": cell, "kind": kind, **fields})
            for i, (cell, kind, fields) in enumerate(specs, start=1)]


def _concat_run() -> list[dict]:
    """0000306's record: ImageFolders over a linked copy, training on ConcatDataset([train, val]),
    the test split evaluated, Normalize with Food-11's own statistics on every split."""
    copy = "/tmp/work/d0556001"  # no "food" in the copy's path
    split = {"training": "train", "validation": "val", "evaluation": "test"}
    specs: list[tuple] = [(2, "normalize", {"mean": [0.59, 0.49, 0.31], "std": [0.24, 0.18, 0.13],
                                            "cls": "Normalize"})]
    for folder in ("training", "evaluation", "validation"):
        specs.append((2 if folder != "validation" else 4, "dataset",
                      {**IMAGEFOLDER, "via": "init", "root": f"{copy}/{folder}", "split": split[folder],
                       "length": 66, "classes": NUMBERED, "files": food_files(folder)}))
    specs += [
        (4, "dataset", {"class": "ConcatDataset", "module": "torch.utils.data.dataset", "via": "loader",
                        "length": 242, "children": [2, 4]}),                                  # id 5
        (4, "dataloader", {"dataset": 5, "batch_size": 16, "shuffle": True}),                 # id 6
        (2, "dataloader", {"dataset": 3, "batch_size": 16, "shuffle": False}),                # id 7
        (3, "model", {"class": "Net", "module": "__main__", "params": 62091, "trainable": 62091,
                      "via": "forward", "last_linear_out": 11}),                              # id 8
        (5, "training", {"model": 8, "loader": 6, "dataset": 5, "samples": 242, "batches": 16,
                         "grad_enabled": True, "training": True}),
        (5, "training", {"model": 8, "loader": 6, "dataset": 5, "samples": 242, "batches": 16,
                         "grad_enabled": True, "training": True}),
        (6, "evaluation", {"model": 8, "loader": 7, "dataset": 3, "samples": 66, "batches": 5,
                           "grad_enabled": False, "training": False}),
        (2, "normalization", {"normalize": 1, "dataset": 2, "split": "train",
                              "mean": [0.59, 0.49, 0.31], "std": [0.24, 0.18, 0.13]}),
        (4, "bind", {"ref": 6, "names": ["trainloader"]}),
        (2, "bind", {"ref": 7, "names": ["testloader"]}),
        (3, "bind", {"ref": 8, "names": ["net"]}),
        (1, "probe-start", {"version": 1, "pid": 1, "python": "3", "caps": {}, "ipython": True}),
    ]
    return _events(*specs)


def _notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    sources = [
        "src = '/tmp/datasets-nctu/Food-11'\ndst = '/tmp/work/d0556001'",
        ("trainset = torchvision.datasets.ImageFolder(dst + '/training', transform=transform)\n"
         "testset = torchvision.datasets.ImageFolder(dst + '/evaluation', transform=transform)\n"
         "testloader = torch.utils.data.DataLoader(testset, batch_size=16)"),
        "net = Net(num_classes=11)\ncriterion = nn.CrossEntropyLoss()",
        ("valset = torchvision.datasets.ImageFolder(dst + '/validation', transform=transform)\n"
         "trainloader = torch.utils.data.DataLoader(ConcatDataset([trainset, valset]), batch_size=16)"),
        ("optimizer = optim.SGD(net.parameters(), lr=0.01)\nfor epoch in range(2):\n"
         "    for x, y in trainloader:\n        optimizer.zero_grad(); criterion(net(x), y).backward(); optimizer.step()"),
        ("net.eval()\nwith torch.no_grad():\n    for x, y in testloader:\n        net(x)\n"
         "print('Test loss: 2.29, Test accuracy: 18.2 %')"),
    ]
    for n, src in enumerate(sources, start=1):
        nb.cells.append(new_code_cell(src, execution_count=n))
    # what the host captured of the training and test cells: printed metrics corroborate the
    # probe's records (grader.corroborate)
    nb.cells[-2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="epoch 2 loss: 2.301\n")]
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                   text="Test loss: 2.29, Test accuracy: 18.2 %\n")]
    return nb


def _evidence(events: list[dict], tmp_path: Path, *, mounts=MOUNTS) -> dict:
    """collect.from_run's evidence.json for the run these events and `_notebook` describe."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    nb = _notebook()
    nbformat.write(nb, tmp_path / "executed.ipynb")
    cells = [SimpleNamespace(index=i, status="ok", ename=None, evalue=None, traceback=None)
             for i in range(len(nb.cells))]
    run = SimpleNamespace(path="lab1-2.ipynb", status="ok", reason="", duration_s=1.0, startup_s=0.1,
                          cells=cells, executed_notebook_path=str(tmp_path / "executed.ipynb"),
                          figures_dropped=0, output_truncated=False)
    return from_run(run, run_dir=tmp_path, events_path=tmp_path / "probe" / "events.jsonl",
                    figures_dir=None, mounts=mounts)


def test_every_record_of_a_concat_run_is_named_food11() -> None:
    summary = summarize_events(_concat_run(), mounts=MOUNTS)
    assert {d["class"]: d["dataset"] for d in summary["datasets"]} == {
        "ImageFolder": "food11", "ConcatDataset": "food11"}
    assert [(d["dataset"], d["split"]) for d in summary["dataloaders"]] == [("food11", "train"), ("food11", "test")]
    assert {(t["dataset"], t["split"]) for t in summary["training"]} == {("food11", "train")}
    assert [(e["dataset"], e["split"]) for e in summary["evaluations"]] == [("food11", "test")]
    assert [n["dataset"] for n in summary["normalization"]] == ["food11"]


def test_consumers_grade_a_concat_run_as_one_food11_experiment(tmp_path: Path) -> None:
    ev = _evidence(_concat_run(), tmp_path)
    assert (ev["dataset"], ev["metrics"]["dataset"]) == ("food11", "food11")
    assert ev["sections"] == []  # one experiment: graded whole, its model and training included
    assert verification_hint(ev) == "food11"
    assert training_budget(ev).epochs == 2  # 2 x 242 images over the 242 of the concatenation
    stats = {"food11": {"mean": [0.59, 0.49, 0.31], "std": [0.24, 0.18, 0.13]}}
    context = CheckContext(student_id="0556001", part_id="lab1-2", dataset="food11", evidence=(ev,),
                           all_evidence=(ev,), dataset_stats=stats)
    # its Normalize is food11's own, seen feeding the model; with no verified test transform
    # (none was captured here) a record alone goes to a TA (issue 13 A: records can be forged)
    norm = run_check("normalization", context, {})
    assert norm.status == "manual" and "food11's own mean and std" in norm.message
    out = run_check("model_architecture", context, {})
    assert out.status == "pass" and "11 outputs" in out.message


def test_without_the_mounts_a_class_named_dataset_splits_the_notebook(tmp_path: Path) -> None:
    # The consumers above really read the name: with nothing to identify the copy by (no mount,
    # numbered folders, a path without "food"), the training cells are another experiment.
    events = _concat_run()
    for e in events:
        e.pop("files", None)
    ev = _evidence(events, tmp_path, mounts=())
    assert {d["dataset"] for d in ev["datasets"]} == {"imagefolder"}
    # The copying cell only names Food-11: a dataset the run never trained or tested on is no
    # section of its own (issue 13 I), so the notebook is one experiment on the unnamed copy
    assert ev["sections"] == [] and ev["dataset"] == "imagefolder"
    context = CheckContext(student_id="0556001", part_id="lab1-2", dataset="food11", evidence=(ev,),
                           all_evidence=(ev,), dataset_stats={"food11": {"mean": [0.59, 0.49, 0.31],
                                                                         "std": [0.24, 0.18, 0.13]}})
    assert run_check("normalization", context, {}).status == "fail"


def test_a_dataset_shared_by_two_loaders_gets_each_loaders_split() -> None:
    # The summary caches each dataset's name; a loader's split from its own variable name must
    # not leak into the dataset's record or another loader's.
    events = _events(
        (1, "dataset", {**IMAGEFOLDER, "via": "init", "root": "/tmp/work/x", "files": food_files("training")}),
        (1, "dataloader", {"dataset": 1, "batch_size": 4, "shuffle": True}),
        (1, "dataloader", {"dataset": 1, "batch_size": 4, "shuffle": False}),
        (1, "bind", {"ref": 2, "names": ["trainloader"]}),
        (1, "bind", {"ref": 3, "names": ["testloader"]}),
    )
    summary = summarize_events(events, mounts=MOUNTS)
    assert [(d["dataset"], d["split"]) for d in summary["dataloaders"]] == [("food11", "train"), ("food11", "test")]
    assert summary["datasets"][0]["split"] is None


def test_a_runs_mounts_name_each_registered_folder_with_absolute_sandbox_paths() -> None:
    from grader.pipeline import dataset_mounts, sandbox_mounts
    from grader.rubric import load_rubric
    from grader.sandbox import CWD

    rubric = load_rubric(Path(__file__).resolve().parents[1] / "labs" / "lab1" / "rubric.yaml")
    data = {"cifar10": "/srv/d/cifar-10-batches-py", "food11": "/srv/d/Food-11"}
    mounts = dataset_mounts(rubric, data)
    assert {(m.name, m.inside) for m in mounts if m.name == "food11"} == {
        ("food11", FOOD), ("food11", f"{CWD}/data/Food-11")}
    assert all(m.inside.startswith("/") and m.host == data[m.name] for m in mounts)
    # the sandbox's own table is the same list (relative `data/...` stays relative there)
    assert sandbox_mounts(rubric, data) == {
        (m.inside if not m.inside.startswith(CWD + "/") else m.inside[len(CWD) + 1:]): m.host for m in mounts}
