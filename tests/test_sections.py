"""Sections of one notebook (several experiments in one file) and the per-part view of its
evidence, on in-memory notebooks and evidence: no kernel."""

from __future__ import annotations

import warnings
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output

from grader.cellflow import heading_of, keyword_dataset, read_cells
from grader.collect import _metrics
from grader.datasets import CIFAR10_CLASSES, FOOD11_CLASSES
from grader.samples import cells, lab1_1, lab1_2, lab1_3, notebook
from grader.sections import add_sections, merge_metrics, verification_hint, view

warnings.filterwarnings("ignore", message=".*cell id.*")

CIFAR_TEST_OUT = "Test loss: 1.6000\nAccuracy of the network on the 500 test images: 41.00 %\n"
CIFAR_CLASS_OUT = "".join(f"Accuracy of {c:>5s} : {30 + i} %\n" for i, c in
                          enumerate(("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")))
FOOD_TEST_OUT = "Test loss: 2.1000, Test accuracy: 23.00 %\n" + "".join(
    f"Accuracy of {c} : {5 + i}/50\n" for i, c in enumerate(FOOD11_CLASSES))
LR_OUT = "".join(f"lr {lr:g} epoch {e} test acc {10 + 5 * e:.2f} %\n" for lr in (0.1, 0.01) for e in (1, 2))


def combined(*nbs: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebooks' cells one after the other, as students write DL_LAB1_<id>.ipynb."""
    nb = nbs[0]
    for other in nbs[1:]:
        nb.cells += other.cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    return nb


def executed(nb: nbformat.NotebookNode, outputs: dict[str, str]) -> nbformat.NotebookNode:
    """Numbers the code cells In[1], In[2], ... and gives the cells whose source contains a
    key its printed text (the first such cell from `start`, in order of the keys)."""
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            n += 1
            cell.execution_count = n
    start = 0
    for needle, text in outputs.items():
        k = next(i for i, c in enumerate(nb.cells) if i >= start and c.cell_type == "code" and needle in c.source)
        nb.cells[k].outputs = [new_output("stream", name="stdout", text=text)]
        start = k + 1
    return nb


def lab1_all() -> nbformat.NotebookNode:
    return executed(combined(lab1_1(epochs=1), lab1_2(epochs=1), lab1_3(epochs=1)),
                    {"Accuracy of the network": CIFAR_TEST_OUT, "class_correct[label]": CIFAR_CLASS_OUT,
                     "Test accuracy: %.2f": FOOD_TEST_OUT, "results[lr] = accs": LR_OUT})


def saved_ev(nb: nbformat.NotebookNode) -> dict[str, Any]:
    ev: dict[str, Any] = {"path": "DL_LAB1_0556001.ipynb", "mode": "saved", "status": "ok", "reason": "",
                          "probe": None, "errors": [], "figures": [], "verified": {"reason": "saved mode"}}
    add_sections(ev, nb, parse=_metrics, cell_status={})
    return ev


def index_of(nb: nbformat.NotebookNode, needle: str, start: int = 0) -> int:
    return next(i for i, c in enumerate(nb.cells) if i >= start and needle in c.source)


# ---------------------------------------------------------------- static reading


def test_cellflow_binds_through_loops_magics_and_bad_syntax() -> None:
    facts = read_cells([
        new_markdown_cell("## LAB 1-2: Food-11\nsome text"),
        new_code_cell("%matplotlib inline\nsrc = '/tmp/datasets-nctu/Food-11'\n!ls {src}"),
        new_code_cell("for path in glob.glob(src + '/*.jpg'):\n    label = path.split('_')[0]"),
        new_code_cell("def evaluate(model):\n    return sum(1 for _ in testloader)\n"),
        new_code_cell("testloader = DataLoader(CIFAR10('/data', train=False))\nnet = Net()\n"
                      "opt = SGD(net.parameters(), lr=0.1)"),
        new_code_cell("acc = evaluate(net)"),
        new_code_cell("this is not python (\nx = testloader"),
    ])
    assert facts[0].heading == (2, "LAB 1-2: Food-11") and not facts[0].code
    assert facts[1].datasets == {"food11"} and "src" in facts[1].defines  # the magic lines are dropped
    assert facts[2].datasets == {"food11"}  # `path` is bound from src inside the loop before `label` reads it
    assert facts[4].datasets == {"cifar10"} and "net" in facts[4].models
    # calling evaluate() reads its free name testloader, bound to CIFAR-10 in cell 4
    assert facts[5].deps["testloader"] == 4 and facts[5].datasets == {"cifar10"}
    assert facts[6].datasets == {"cifar10"} and "x" in facts[6].defines  # read coarsely, not skipped


def test_keywords_and_headings() -> None:
    assert keyword_dataset("CIFAR10") == "cifar10"
    assert keyword_dataset("/tmp/datasets-nctu/Food-11/training") == "food11"
    assert keyword_dataset("food_train_loader") == "food11"
    assert keyword_dataset("trainloader") is None
    assert heading_of("<h2>Lab 1-3</h2>") == (2, "Lab 1-3")
    assert heading_of("plain text\n# not first") is None


# ---------------------------------------------------------------- splitting


def test_combined_notebook_splits_into_its_three_parts_in_saved_mode() -> None:
    nb = lab1_all()
    ev = saved_ev(nb)
    secs = ev["sections"]
    assert [s["dataset"] for s in secs] == ["cifar10", "food11", "cifar10"]
    food_title, lr_title = index_of(nb, "# LAB 1-2"), index_of(nb, "# LAB 1-3")
    assert secs[0]["span"] == [0, food_title - 1]
    assert secs[1]["span"] == [food_title, lr_title - 1] and secs[2]["span"] == [lr_title, len(nb.cells) - 1]
    assert [s["title"] for s in secs] == ["LAB 1-1: CIFAR-10 CNN", "LAB 1-2: Food-11", "LAB 1-3: learning rate and decay"]
    one, food = secs[0]["metrics"], secs[1]["metrics"]
    # LAB 1-1's numbers come from its own cells only, read with CIFAR-10's classes
    assert one["test_accuracy"] == pytest.approx(0.41) and one["test_loss"] == pytest.approx(1.6)
    assert set(one["per_class_accuracy"]) == set(CIFAR10_CLASSES)
    assert food["test_accuracy"] == pytest.approx(0.23) and set(food["per_class_accuracy"]) == set(FOOD11_CLASSES)
    assert secs[2]["metrics"]["test_accuracy"] == pytest.approx(0.20)
    assert all(s["basis"] == "code" and s["status"] == "ok" for s in secs)


def test_single_dataset_notebook_is_not_split() -> None:
    nb = executed(lab1_1(epochs=1), {"Accuracy of the network": CIFAR_TEST_OUT})
    assert saved_ev(nb)["sections"] == []
    # a sub-heading between training and testing the same model is not a new experiment
    nb.cells.insert(index_of(nb, "Accuracy of the network"), new_markdown_cell("# Test"))
    assert saved_ev(nb)["sections"] == []


def test_second_cifar_experiment_after_a_heading_is_its_own_section() -> None:
    nb = executed(combined(lab1_1(epochs=1), lab1_3(epochs=1)),
                  {"Accuracy of the network": CIFAR_TEST_OUT, "results[lr] = accs": LR_OUT})
    secs = saved_ev(nb)["sections"]
    assert [s["dataset"] for s in secs] == ["cifar10", "cifar10"]
    assert secs[0]["models"] == ["net"] and secs[1]["models"] == ["model"]
    assert secs[0]["metrics"]["test_accuracy"] == pytest.approx(0.41)
    assert secs[1]["span"][0] == index_of(nb, "# LAB 1-3")


def defined_first() -> nbformat.NotebookNode:
    """Both datasets and both models set up first, then trained and tested in turn."""
    food_data = cells.FOOD_DATA.replace("trainset", "food_trainset").replace("testset", "food_testset") \
        .replace("trainloader", "food_trainloader").replace("testloader", "food_testloader") \
        .replace("classes = [", "food_classes = [")
    train = cells.cifar_train(1)
    return notebook(
        cells.CIFAR_DATA, cells.FOOD_RESTRUCTURE, cells.FOOD_OWN_STATS, food_data,
        cells.LENET.replace("net = Net()", "net = Net()\nfood_net = Net(num_classes=11)"),
        train,
        train.replace("net.", "food_net.").replace("net(", "food_net(").replace("trainloader", "food_trainloader"),
        cells.CIFAR_TEST,
        cells.FOOD_TEST.replace("net(", "food_net(").replace("testloader", "food_testloader")
        .replace("classes[i]", "food_classes[i]"),
        cells.CIFAR_PER_CLASS, cells.WEIGHT_HISTS, title="LAB 1: everything")


def test_everything_defined_first_then_trained_and_tested_in_turn() -> None:
    nb = executed(defined_first(), {"Accuracy of the network": CIFAR_TEST_OUT, "Test accuracy: %.2f": FOOD_TEST_OUT,
                                    "class_correct[label]": CIFAR_CLASS_OUT})
    secs = saved_ev(nb)["sections"]
    assert [s["dataset"] for s in secs] == ["cifar10", "food11"]
    cifar, food = (set(s["cells"]) for s in secs)
    model_cell = index_of(nb, "food_net = Net")
    assert model_cell in cifar and model_cell in food  # a setup cell both read is in both
    assert {index_of(nb, "Food-11_0556001"), index_of(nb, "food_trainset =")} <= food - cifar
    assert index_of(nb, "plt.subplots") in cifar - food  # net's histograms go with net's section
    assert index_of(nb, "food_testloader:") in food and index_of(nb, "class_correct[label]") in cifar
    assert secs[0]["metrics"]["test_accuracy"] == pytest.approx(0.41)
    assert secs[1]["metrics"]["test_accuracy"] == pytest.approx(0.23)


def execute_ev(nb: nbformat.NotebookNode, sessions: list[tuple[str, str, str, int]],
               cell_status: dict[int, tuple[str, str]] | None = None, status: str = "ok") -> dict[str, Any]:
    """Evidence as the probe reports it: (kind, source needle, dataset, samples) per session."""
    ev: dict[str, Any] = {"path": "DL_LAB1_0556001.ipynb", "mode": "execute", "status": status, "reason": "",
                          "probe": {"events": 10}, "errors": [], "figures": [], "training": [], "evaluations": [],
                          "models": [], "optimizers": [], "verified": {}}
    for kind, needle, dataset, samples in sessions:
        cell = nb.cells[index_of(nb, needle)].execution_count
        ev["training" if kind == "train" else "evaluations"].append(
            {"cell": cell, "dataset": dataset, "split": "train" if kind == "train" else "test",
             "samples": samples, "model": "model" if "results" in needle else "net"})
    add_sections(ev, nb, parse=_metrics, cell_status=cell_status or {})
    return ev


def test_execute_mode_splits_by_what_the_probe_saw() -> None:
    nb = lab1_all()
    sessions = [("train", "print every 100", "cifar10", 5000), ("eval", "Accuracy of the network", "cifar10", 500),
                ("train", "for inputs, labels in trainloader:\n        optimizer", "food11", 990),
                ("eval", "Test accuracy: %.2f", "food11", 330), ("train", "results = {}", "cifar10", 15000)]
    ev = execute_ev(nb, sessions)
    secs = ev["sections"]
    assert [s["dataset"] for s in secs] == ["cifar10", "food11", "cifar10"]
    assert all(s["basis"] == "probe" for s in secs)
    # the data-loading cells the probe saw nothing in still go with the section that reads them
    assert index_of(nb, "Food-11_0556001") in secs[1]["cells"] and index_of(nb, "trainset = torchvision") in secs[0]["cells"]
    # the verifier captures the model tested last: Food-11's here, CIFAR-10's without the food test
    assert verification_hint(ev) == "food11"
    assert verification_hint(dict(ev, evaluations=ev["evaluations"][:1])) == "cifar10"
    assert verification_hint(dict(ev, sections=[], dataset="cifar10")) == "cifar10"


def test_a_crash_in_one_section_is_that_sections_status() -> None:
    nb = lab1_all()
    food_test = index_of(nb, "Test accuracy: %.2f")
    lr = index_of(nb, "results = {}")
    status = {i: ("ok", "") for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    status[food_test] = ("error", "DeadKernelError")
    status.update({i: ("not-run", "") for i in status if i > food_test})
    ev = execute_ev(nb, [("train", "print every 100", "cifar10", 5000),
                         ("train", "for inputs, labels in trainloader:\n        optimizer", "food11", 990),
                         ("train", "results = {}", "cifar10", 15000)],
                    cell_status=status, status="killed")
    by_ds = [(s["dataset"], s["status"]) for s in ev["sections"]]
    assert by_ds == [("cifar10", "ok"), ("food11", "killed"), ("cifar10", "not-run")]
    assert lr in ev["sections"][2]["cells"]


# ---------------------------------------------------------------- the view


def _ev_with_sections() -> dict[str, Any]:
    cifar = {"dataset": "cifar10", "test_accuracy": 0.41, "per_class_accuracy": {"cat": 0.3}}
    food = {"dataset": "food11", "test_accuracy": 0.23, "per_class_accuracy": {"Bread": 0.2}}
    return {
        "path": "DL_LAB1.ipynb", "status": "error", "dataset": "cifar10",
        "metrics": {"dataset": "cifar10", "test_accuracy": 0.23, "per_class_accuracy": {"cat": 0.3}},
        "sections": [
            {"id": "s1", "dataset": "cifar10", "cells": [0, 1, 2, 3], "span": [0, 3], "counts": [1, 2, 3],
             "title": "LAB 1-1", "status": "ok", "reason": "", "metrics": cifar},
            {"id": "s2", "dataset": "food11", "cells": [4, 5, 6], "span": [4, 6], "counts": [4, 5, 6],
             "title": "LAB 1-2", "status": "error", "reason": "", "metrics": food}],
        "figures": [{"cell": 3, "index": 3, "kind": "histogram"}, {"cell": 6, "index": 6, "kind": "line"},
                    {"cell": None, "kind": "other"}],
        "models": [{"cell": 2, "index": 2, "num_outputs": 10}, {"cell": 5, "index": 5, "num_outputs": 11}],
        "optimizers": [{"cell": 3, "lr": 0.001}, {"cell": 5, "lr": 0.01}],  # placed by In[n] only
        "errors": [{"cell": 6, "index": 6, "ename": "KeyError"}],
        "datasets": [{"dataset": "cifar10"}, {"dataset": "food11"}],
        "verified": {"test_accuracy": 0.22, "dataset": "food11", "model": "Net", "cell": 6},
    }


def test_view_cuts_every_list_to_the_sections_cells() -> None:
    ev = _ev_with_sections()
    one, food = view(ev, ["s1"]), view(ev, ["s2"])
    assert one["metrics"]["test_accuracy"] == 0.41 and food["metrics"]["test_accuracy"] == 0.23
    assert [f["kind"] for f in one["figures"]] == ["histogram", "other"]  # the unplaceable figure is kept
    assert [m["num_outputs"] for m in food["models"]] == [11]
    assert [o["lr"] for o in one["optimizers"]] == [0.001]
    assert one["errors"] == [] and one["status"] == "ok" and food["status"] == "error"
    assert one["datasets"] == [{"dataset": "cifar10"}]
    assert one["section"] == {"ids": ["s1"], "title": "LAB 1-1", "dataset": "cifar10", "span": [0, 3]}
    assert view(ev, ["s1", "s2"]) is ev and view(ev, []) is ev  # all or nothing: the whole notebook
    assert view({**ev, "sections": []}, ["s1"]) == {**ev, "sections": []}


def test_verification_is_credited_only_to_the_section_whose_model_it_was() -> None:
    ev = _ev_with_sections()
    assert view(ev, ["s2"])["verified"]["test_accuracy"] == 0.22
    other = view(ev, ["s1"])["verified"]
    assert "test_accuracy" not in other and other["elsewhere"] and "another section" in other["reason"]
    # without the cell (an older verifier), the dataset decides when it is unambiguous
    ev["verified"].pop("cell")
    assert view(ev, ["s2"])["verified"]["test_accuracy"] == 0.22
    assert "test_accuracy" not in view(ev, ["s1"])["verified"]
    # a reason about no model in particular stays as it is
    ev["verified"] = {"reason": "the run was killed"}
    assert view(ev, ["s1"])["verified"] == {"reason": "the run was killed"}


def test_merged_metrics_take_what_was_printed_last() -> None:
    a = {"dataset": "cifar10", "test_accuracy": 0.4, "test_loss": 1.5, "per_class_accuracy": {"cat": 0.3, "dog": 0.2},
         "curves": {"loss": [[1, 2.0]]}, "mentions": [{"kind": "test_accuracy"}]}
    b = {"dataset": "cifar10", "test_accuracy": 0.5, "test_loss": None, "per_class_accuracy": {"cat": 0.6},
         "curves": {"loss": [[2, 1.0]]}, "mentions": []}
    m = merge_metrics([a, b])
    assert m["test_accuracy"] == 0.5 and m["test_loss"] == 1.5
    assert m["per_class_accuracy"] == {"cat": 0.3, "dog": 0.2}
    assert m["curves"] == {"loss": [[1, 2.0], [2, 1.0]]}
    assert merge_metrics([a]) == a


def test_a_splitting_fault_costs_the_split_not_the_evidence() -> None:
    ev: dict[str, Any] = {"mode": "saved", "status": "ok", "figures": [{"cell": "x"}]}

    def broken(nb: Any, dataset: Any) -> dict:
        raise RuntimeError("parser bug")

    add_sections(ev, lab1_all(), parse=broken, cell_status={})
    assert ev["sections"] == [] and "parser bug" in ev["warnings"][0] and ev["figures"]


def test_a_part_whose_training_crashed_still_has_its_section() -> None:
    # The probe saw LAB 1-1 and LAB 1-3 train; LAB 1-2's training cell raised before any batch.
    nb = lab1_all()
    food_train = index_of(nb, "for inputs, labels in trainloader:\n        optimizer")
    status = {i: ("ok", "") for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    status[food_train] = ("error", "RuntimeError")
    ev = execute_ev(nb, [("train", "print every 100", "cifar10", 5000), ("train", "results = {}", "cifar10", 15000)],
                    cell_status=status, status="error")
    assert [(s["dataset"], s["status"], s["basis"]) for s in ev["sections"]] == [
        ("cifar10", "ok", "probe"), ("food11", "error", "code"), ("cifar10", "ok", "probe")]
    assert food_train in ev["sections"][1]["cells"]


def test_what_a_cell_prints_plots_or_saves_names_no_dataset() -> None:
    # A Food-11 notebook built from the CIFAR-10 tutorial keeps its words and file names.
    facts = read_cells([
        new_code_cell("print('Finished CIFAR-10 training')\nplt.title('cifar10 loss', label='cifar')"),
        new_code_cell("torch.save(net.state_dict(), './cifar_net.pth')"),
        new_code_cell("print('{} on cifar'.format(acc))\nroot = '/data/cifar-10-batches-py'"),
    ])
    assert [f.datasets for f in facts] == [frozenset(), frozenset(), {"cifar10"}]


def test_a_food_notebook_copied_from_the_cifar_tutorial_is_one_section() -> None:
    nb = lab1_2(epochs=1)
    nb.cells.append(new_code_cell("PATH = './cifar_net.pth'\ntorch.save(net.state_dict(), PATH)\n"
                                  "print('Finished CIFAR training of', net)"))
    assert saved_ev(executed(nb, {"Test accuracy: %.2f": FOOD_TEST_OUT}))["sections"] == []


# ---------------------------------------------------------------- one dataset, several experiments, no headings


def unheaded(*nbs: nbformat.NotebookNode, extra: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """The notebooks' code cells (no markdown at all) and then `extra` cells."""
    nb = combined(*nbs)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"] + [new_code_cell(s.strip("\n")) for s in extra]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    return nb


def lab1_without_headings() -> nbformat.NotebookNode:
    """T2 #1 (0000503): Food-11 trained and tested, LAB 1-1 on CIFAR-10, then the learning-rate
    study on CIFAR-10 right after it, in one notebook without a single heading."""
    nb = unheaded(lab1_2(epochs=1), lab1_1(epochs=1), extra=(cells.lr_study(1, step_scheduler=True), cells.LR_PLOT))
    return executed(nb, {"Test accuracy: %.2f": FOOD_TEST_OUT, "Accuracy of the network": CIFAR_TEST_OUT,
                         "class_correct[label]": CIFAR_CLASS_OUT, "results[lr] = accs": LR_OUT})


LAB1_SESSIONS = [("train", "for inputs, labels in trainloader:\n        optimizer", "food11", 990),
                 ("eval", "Test accuracy: %.2f", "food11", 330), ("train", "print every 100", "cifar10", 5000),
                 ("eval", "Accuracy of the network", "cifar10", 500), ("eval", "class_correct[label]", "cifar10", 500),
                 ("train", "results = {}", "cifar10", 15000)]


@pytest.mark.parametrize("mode", ["saved", "execute"])
def test_a_learning_rate_study_right_after_lab1_1_is_its_own_section(mode: str) -> None:
    nb = lab1_without_headings()
    ev = saved_ev(nb) if mode == "saved" else execute_ev(nb, LAB1_SESSIONS)
    secs = ev["sections"]
    assert [(s["dataset"], s["models"], s["rate_study"]) for s in secs] == [
        ("food11", ["net"], False), ("cifar10", ["net"], False), ("cifar10", ["model"], True)]
    assert index_of(nb, "class_correct[label]") in secs[1]["cells"] and index_of(nb, "plt.subplots") in secs[1]["cells"]
    assert index_of(nb, "results = {}") in secs[2]["cells"] and index_of(nb, "for lr, accs in results") in secs[2]["cells"]
    # LAB 1-1's numbers are net's, not the study's last epoch (20 %)
    assert secs[1]["metrics"]["test_accuracy"] == pytest.approx(0.41)
    assert set(secs[1]["metrics"]["per_class_accuracy"]) == set(CIFAR10_CLASSES)


def test_learning_rates_tried_in_separate_cells_after_lab1_1_are_their_own_section() -> None:
    # one cell per rate, each with its own model, no loop and no scheduler
    runs = tuple(cells.cifar_train(1).replace("net", name).replace("lr=0.001", f"lr={lr}")
                 for name, lr in (("net_a", 0.1), ("net_b", 0.01)))
    nb = unheaded(lab1_2(epochs=1), lab1_1(epochs=1),
                  extra=tuple(f"{name} = Net()" for name in ("net_a", "net_b")) + runs)
    secs = saved_ev(executed(nb, {"Test accuracy: %.2f": FOOD_TEST_OUT, "Accuracy of the network": CIFAR_TEST_OUT}))[
        "sections"]
    assert [(s["dataset"], s["models"]) for s in secs] == [
        ("food11", ["net"]), ("cifar10", ["net"]), ("cifar10", ["net_a", "net_b"])]
    assert secs[1]["metrics"]["test_accuracy"] == pytest.approx(0.41)


def test_training_a_fresh_model_again_at_the_same_rate_is_not_a_new_experiment() -> None:
    # net2 retrained and tested in place of net: one experiment, as before
    retrain = cells.cifar_train(1).replace("net", "net2")
    nb = unheaded(lab1_2(epochs=1), lab1_1(epochs=1), extra=("net2 = Net()", retrain,
                                                             cells.CIFAR_TEST.replace("net(", "net2(")))
    secs = saved_ev(nb)["sections"]
    assert [(s["dataset"], s["models"]) for s in secs] == [("food11", ["net"]), ("cifar10", ["net", "net2"])]


# ---------------------------------------------------------------- headings naming a part


HELPERS = r'''
def train_model(model, loader, epochs, lr):
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for ep in range(epochs):
        for x, y in loader:
            opt.zero_grad(); criterion(model(x), y).backward(); opt.step()

def test_model(model, loader, class_names):
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item(); total += y.size(0)
    print('Test loss: %.4f, Test accuracy: %.2f %%' % (1.0, 100 * correct / total))
'''
FOOD_LR_OUT = "".join(f"lr {lr:g}: Test loss: 2.3976, Test accuracy: 9.09 %\n" for lr in (0.05, 0.01, 0.001))


def lab1_with_shared_helpers() -> nbformat.NotebookNode:
    """T2 #2 (0000502/0000512): helpers shared by every part at the top, `## LAB 1-1/1-2/1-3`,
    and LAB 1-3 trying three rates on Food-11 through the same helpers."""
    md = new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[
        md("# DL LAB 1"), new_code_cell(cells.LENET + HELPERS),
        md("## LAB 1-1"), new_code_cell(cells.CIFAR_DATA),
        new_code_cell("net = Net()\ntrain_model(net, trainloader, 1, 0.001)"),
        new_code_cell("test_model(net, testloader, classes)"),
        md("## LAB 1-2"), *(new_code_cell(c) for c in (cells.FOOD_RESTRUCTURE, cells.FOOD_OWN_STATS, cells.FOOD_DATA)),
        new_code_cell("food_net = Net(num_classes=11)\ntrain_model(food_net, trainloader, 2, 0.01)"),
        new_code_cell("test_model(food_net, testloader, classes)"),
        md("## LAB 1-3"),
        new_code_cell("for lr in [0.05, 0.01, 0.001]:\n    m = Net(num_classes=11)\n"
                      "    train_model(m, trainloader, 2, lr)\n    test_model(m, testloader, classes)")])
    return executed(nb, {"test_model(net,": CIFAR_TEST_OUT, "test_model(food_net,": FOOD_TEST_OUT,
                         "for lr in": FOOD_LR_OUT})


def test_a_heading_naming_another_part_starts_a_section_on_the_same_dataset() -> None:
    # In saved mode nothing shows that the helpers train different models: the heading must.
    nb = lab1_with_shared_helpers()
    secs = saved_ev(nb)["sections"]
    assert [(s["dataset"], s["title"]) for s in secs] == [
        ("cifar10", "DL LAB 1"), ("food11", "LAB 1-2"), ("food11", "LAB 1-3")]
    assert index_of(nb, "for lr in") in secs[2]["cells"] and index_of(nb, "for lr in") not in secs[1]["cells"]
    assert secs[1]["metrics"]["test_accuracy"] == pytest.approx(0.23)


def test_a_part_heading_splits_even_when_the_same_model_goes_on_training() -> None:
    # `### Lab 1.3` (less prominent, dotted) over food_net trained on with a schedule
    nb = lab1_with_shared_helpers()
    nb.cells[-1] = new_code_cell("opt = optim.SGD(food_net.parameters(), lr=0.01)\n"
                                 "sched = optim.lr_scheduler.StepLR(opt, step_size=1)\n"
                                 "for ep in range(2):\n    train_model(food_net, trainloader, 1, sched.get_last_lr()[0])\n"
                                 "    sched.step()")
    nb.cells[-2] = new_markdown_cell("### Lab 1.3 - learning-rate decay")
    secs = saved_ev(nb)["sections"]
    assert [(s["dataset"], s["title"]) for s in secs][1:] == [
        ("food11", "LAB 1-2"), ("food11", "Lab 1.3 - learning-rate decay")]
    # a sub-heading that names no part does not split the same model's work
    nb.cells[-2] = new_markdown_cell("### Decay")
    assert [s["title"] for s in saved_ev(nb)["sections"]] == ["DL LAB 1", "LAB 1-2"]


def test_the_same_model_back_under_its_parts_heading_or_misfiled_stays_in_its_section() -> None:
    # both parts trained, then both tested, each step under a heading naming its part; the
    # CIFAR-10 per-class cell sits under `## LAB 1-2 test` but works on LAB 1-1's net
    nb = defined_first()
    for needle, title in (("Accuracy of the network", "## LAB 1-1 test"), ("food_testloader:", "## LAB 1-2 test"),
                          ("for i, data in enumerate(food_trainloader", "## LAB 1-2 train"),
                          ("for i, data in enumerate(trainloader", "## LAB 1-1 train")):
        nb.cells.insert(index_of(nb, needle), new_markdown_cell(title))
    nb = executed(nb, {"Accuracy of the network": CIFAR_TEST_OUT, "Test accuracy: %.2f": FOOD_TEST_OUT,
                       "class_correct[label]": CIFAR_CLASS_OUT})
    secs = saved_ev(nb)["sections"]
    assert [s["dataset"] for s in secs] == ["cifar10", "food11"]
    assert {index_of(nb, "Accuracy of the network"), index_of(nb, "class_correct[label]")} <= set(secs[0]["cells"])
    assert secs[0]["metrics"]["test_accuracy"] == pytest.approx(0.41)
    assert set(secs[0]["metrics"]["per_class_accuracy"]) == set(CIFAR10_CLASSES)
