"""End to end: a notebook whose training never ran (an earlier cell raised) is graded in the
real sandbox, and its untrained model's numbers earn none of the metric items (issue 12 J3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grader.cli import main
from grader.samples import Sample, cells, lab1_1, notebook, write_archive

pytestmark = pytest.mark.kernel

# The handout's old `dataiter.next()` raises on PyTorch >= 1.13 before the optimizer is made;
# the training cell then stops at `optimizer.zero_grad()` with a NameError, before any forward
# pass. The test cells still run, on the freshly initialised net.
PEEK_THEN_OPTIMIZER = r'''
dataiter = iter(trainloader)
images, labels = dataiter.next()
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
'''


def _training_without_optimizer(epochs: int) -> str:
    body = cells.cifar_train(epochs)
    return body.replace("optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)\n", "")


@pytest.fixture(scope="module")
def graded(tiny_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from grader.datasets.standins import sandbox_readable

    sandbox_readable(tiny_datasets)
    untrained = notebook(cells.CIFAR_DATA, cells.LENET, PEEK_THEN_OPTIMIZER, _training_without_optimizer(1),
                         cells.CIFAR_TEST, cells.CIFAR_PER_CLASS, title="LAB 1-1: CIFAR-10 CNN")
    subs = tmp_path_factory.mktemp("subs")
    write_archive(Sample("0556101", "dllab_0556101.zip", "training never ran", {"lab1-1.ipynb": untrained}), subs)
    write_archive(Sample("0556102", "dllab_0556102.zip", "trained for one epoch",
                         {"lab1-1.ipynb": lab1_1(epochs=1)}), subs)
    out = tmp_path_factory.mktemp("out")
    code = main(["grade", str(subs), "--lab", "lab1", "--data", str(tiny_datasets), "--out", str(out),
                 "--workers", "1", "--no-pdf"])
    assert code == 0
    return out


def _items(out: Path, sid: str) -> dict[str, dict]:
    grade = json.loads((out / "grades" / f"{sid}.json").read_text())
    return {i["id"]: i for p in grade["parts"] for i in p["items"]}


def test_untrained_model_earns_no_metric_item(graded: Path) -> None:
    ev = json.loads((graded / "runs" / "0556101" / "lab1-1.ipynb" / "evidence.json").read_text())
    # what the checks judge from: the test cells did print numbers, of a net that never trained
    assert ev["metrics"]["test_accuracy"] is not None and len(ev["metrics"]["per_class_accuracy"]) == 10
    assert sum(o["steps"] for o in ev["optimizers"]) == 0 and not [t for t in ev["training"] if t["batches"]]
    items = _items(graded, "0556101")
    for item in ("lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-verified"):
        assert items[item]["status"] == "fail" and items[item]["points"] == 0, (item, items[item])
        assert items[item]["message"].startswith("the model was evaluated without training"), "not the rubric's " \
            "'No test loss or accuracy was reported', which would be false"
        assert "AttributeError" in items[item]["message"], "names the cell that raised"


def test_the_same_notebook_trained_earns_them(graded: Path) -> None:
    items = _items(graded, "0556102")
    for item in ("lab1-1-test-metrics", "lab1-1-per-class"):
        assert items[item]["status"] == "pass", (item, items[item]["message"])
    assert items["lab1-1-verified"]["status"] in ("pass", "manual"), items["lab1-1-verified"]["message"]
    ev = json.loads((graded / "runs" / "0556102" / "lab1-1.ipynb" / "evidence.json").read_text())
    from grader.checks.training import training_budget

    budget = training_budget(ev)
    assert budget is not None and budget.epochs == pytest.approx(1.0) and budget.batch_size == 4
