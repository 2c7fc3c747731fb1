"""Saved mode: the stored notebook shows a model evaluated without training (issue 12 J3).

No kernel: each notebook is built in memory with the outputs a real run stores (the cells of
grader.samples, the test output of the tester's 0000604), read by collect.from_saved as in
`dllab grade --mode saved`, and graded with the lab's own rubric.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from grader.collect import from_saved
from grader.grading import run_checks
from grader.rubric import builtin_rubric, load_rubric
from grader.samples import cells, notebook
from grader.storedrun import stored_cells

STEPP = cells.cifar_train(1).replace("optimizer.step()", "optimizer.stepp()")
# The whole CIFAR-10 test split, as a student's real run prints it: in saved mode the printed count
# is the evaluation's coverage, and the rubric asks for 10000 (a stand-in's 500 would be a subset).
TEST_OUT = "Test loss: {loss:.4f}\nAccuracy of the network on the 10000 test images: {acc:.2f} %\n"
PER_CLASS_OUT = "".join(f"Accuracy of {c:>5s} : {v:2d} %\n" for c, v in zip(
    ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), (0, 0, 0, 0, 0, 0, 96, 0, 0, 0)))
METRIC_ITEMS = ("lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-verified")


def _stream(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def _stored(training: str, *, train_count: int | None, train_outputs: list, acc: float = 9.6,
            test_counts: tuple[int, int] = (4, 5)) -> nbformat.NotebookNode:
    """lab1-1 as saved after a run: data (In[1]), model (In[2]), training, test, per-class."""
    nb = notebook(cells.CIFAR_DATA, cells.LENET, training, cells.CIFAR_TEST, cells.CIFAR_PER_CLASS,
                  title="LAB 1-1: CIFAR-10 CNN")
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c, n, outs in zip(code, (1, 2, train_count, *test_counts),
                          ([_stream("1000 500\n")], [_stream("Net(...)\n")], train_outputs,
                           [_stream(TEST_OUT.format(loss=2.304, acc=acc))], [_stream(PER_CLASS_OUT)])):
        c.execution_count, c.outputs = n, outs
    return nb


def _error(ename: str, evalue: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])


def _grade(nb: nbformat.NotebookNode, tmp_path: Path) -> tuple[dict, dict]:
    path = tmp_path / "lab1-1.ipynb"
    nbformat.write(nb, path)
    ev = from_saved(path, "lab1-1.ipynb", run_dir=tmp_path / "run")
    results, _ = run_checks(load_rubric(builtin_rubric("lab1")), student_id="s", evidence=[ev], files=[],
                            work_dir=None, reference=None, dataset_stats={})
    return ev, results


def test_the_training_cells_stored_error_sends_the_chance_numbers_to_a_ta(tmp_path: Path) -> None:
    """0000604 of issue 12's tester: the training cell stored AttributeError, the test cells
    then printed 9.6 %: no full credit, and no fail on a guess either."""
    nb = _stored(STEPP, train_count=3, train_outputs=[_error("AttributeError", "'SGD' object has no attribute 'stepp'")])
    ev, results = _grade(nb, tmp_path)
    assert [c["trains"] for c in ev["stored_cells"]] == [False, False, True, False, False]
    for item in METRIC_ITEMS:
        out = results[item]
        assert out.status == "manual" and out.fraction == 0, (item, out.message)
        assert "the training cell In[3] stored an error (AttributeError)" in out.message, out.message
        assert "9.6 %" in out.message and "a TA checks" in out.message


def test_a_training_cell_never_run_while_the_test_cell_was(tmp_path: Path) -> None:
    """0000605: the training cell (4th, after the title) has no output and no In[ ] number; the test cells ran."""
    nb = _stored(cells.cifar_train(1), train_count=None, train_outputs=[])
    _, results = _grade(nb, tmp_path)
    for item in METRIC_ITEMS:
        assert results[item].status == "manual", (item, results[item].message)
        assert "was never run: it has no output and no In[ ] number, while the test cell In[5] was" \
            in results[item].message
    # nor is it "ran from top to bottom without errors"
    ran = results["lab1-1-ran"]
    assert ran.status == "manual" and "the training cell (cell 4 of the notebook) never ran" in ran.message, ran.message


def test_a_cell_that_does_not_train_left_unrun_is_no_reason_for_a_ta() -> None:
    """An optional cell (a `!pip install`, a sample-image preview) skipped by the student: the
    run from the top still holds as far as training goes."""
    from grader.checks import run_check
    from grader.checks.base import CheckContext

    cells_ = [{"index": 1, "cell": 1, "outputs": 1, "error": None, "trains": False},
              {"index": 2, "cell": None, "outputs": 0, "error": None, "trains": False},
              {"index": 3, "cell": 2, "outputs": 1, "error": None, "trains": True},
              {"index": 4, "cell": None, "outputs": 0, "error": None, "trains": True}]  # the last: nothing after it
    ev = {"path": "lab1-1.ipynb", "mode": "saved", "status": "ok", "errors": [], "cells": {"total": 4},
          "stored_cells": cells_}
    ctx = CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10", evidence=(ev,))
    assert run_check("ran_without_errors", ctx, {}).status == "pass"
    cells_[3]["index"], cells_[2]["index"] = 3, 4  # the unrun training cell now before one that ran
    assert run_check("ran_without_errors", ctx, {}).status == "manual"


def test_training_run_only_after_the_test_cell(tmp_path: Path) -> None:
    nb = _stored(cells.cifar_train(1), train_count=9, train_outputs=[_stream("Finished Training\n")])
    _, results = _grade(nb, tmp_path)
    out = results["lab1-1-test-metrics"]
    assert out.status == "manual" and "the training cell In[9] ran after the test cell In[5]" in out.message


@pytest.mark.parametrize("case", ["trained in order", "well above chance", "test cell never numbered"])
def test_an_honest_stored_run_keeps_its_points(tmp_path: Path, case: str) -> None:
    nb = {"trained in order": lambda: _stored(cells.cifar_train(1), train_count=3,
                                              train_outputs=[_stream("[1,  2000] loss: 2.210\nFinished Training\n")]),
          # the training cell stored an error (an interrupt, a typo after the loop), but the model
          # scores far above chance: it was trained, whatever the stored output says
          "well above chance": lambda: _stored(STEPP, train_count=3, acc=54.0,
                                               train_outputs=[_error("KeyboardInterrupt", "")]),
          # counts stripped by an export tool: "never run" cannot be told from "not numbered"
          "test cell never numbered": lambda: _stored(cells.cifar_train(1), train_count=None, train_outputs=[],
                                                      test_counts=(None, None)),  # type: ignore[arg-type]
          }[case]()
    _, results = _grade(nb, tmp_path)
    for item in ("lab1-1-test-metrics", "lab1-1-per-class"):
        assert results[item].status == "pass", (case, item, results[item].message)
    expect_ran = "partial" if case == "well above chance" else "pass"  # its stored error costs half
    assert results["lab1-1-ran"].status == expect_ran, (case, results["lab1-1-ran"].message)


def test_which_cells_train_is_read_from_the_code_and_the_functions_it_calls() -> None:
    def code(source: str, n: int | None = 1) -> dict:
        return {"cell_type": "code", "source": source, "execution_count": n, "outputs": []}

    nb_cells = [
        code("def step(model, x, y):\n    loss = crit(model(x), y)\n    loss.backward()\n    opt.step()"),
        code("def fit(model, loader):\n    for x, y in loader:\n        step(model, x, y)"),  # defines only
        {"cell_type": "markdown", "source": "## Training"},
        code("%%time\nfit(net, trainloader)"),  # a magic, then a call that trains through two functions
        code("for x, y in loader:\n    crit(net(x), y).backward(); opt.step()"),
        code("print(net)  # no training here\nnet.train()"),
        code("for x, y in loader:\n  loss.backward(\n    # does not parse"),  # read with the fallback
        code("class Trainer:\n    def run(self):\n        self.loss.backward()"),  # a class only defines
        code("fit = None\nfit2 = lambda: 0"),
    ]
    found = {c["index"]: c["trains"] for c in stored_cells(nb_cells)}
    assert found == {0: False, 1: False, 3: True, 4: True, 5: False, 6: True, 7: False, 8: False}
    stored = stored_cells([{"cell_type": "code", "source": "x", "execution_count": None,
                            "outputs": [{"output_type": "error", "ename": "NameError"}, "junk"]}])
    assert stored == [{"index": 0, "cell": None, "outputs": 1, "error": "NameError", "trains": False,
                       "makes": [], "loads": False, "names": ["x"]}]


def _remade(between: str, *, acc: float = 9.8) -> nbformat.NotebookNode:
    """lab1-1 saved after a run in order, with one more cell between training and the test."""
    nb = _stored(cells.cifar_train(1), train_count=3, acc=acc,
                 train_outputs=[_stream("[1,  2000] loss: 2.210\nFinished Training\n")], test_counts=(5, 6))
    code = [c for c in nb.cells if c.cell_type == "code"]
    extra = nbformat.v4.new_code_cell(between, execution_count=4, outputs=[_stream("Net(...)\n")])
    nb.cells.insert(nb.cells.index(code[3]), extra)
    return nb


@pytest.mark.parametrize("between", [
    "net = Net()",  # re-test rt2's 0001212: the model made again after training, then tested
    "net = Net()\nnet.eval()",  # the same, with a harmless call after it
])
def test_a_model_made_anew_after_training_sends_the_chance_numbers_to_a_ta(tmp_path: Path, between: str) -> None:
    _, results = _grade(_remade(between), tmp_path)
    for item in METRIC_ITEMS:
        assert results[item].status == "manual", (item, results[item].message)
    assert "made anew by In[4], after the training cell In[3]" in results["lab1-1-test-metrics"].message


@pytest.mark.parametrize(("between", "acc"), [
    ("net = Net()\nnet.load_state_dict(torch.load('cifar_net.pth'))", 9.8),  # weights loaded back: TA not needed
    ("net2 = Net()", 9.8),  # another model made, not the one tested
    ("net = Net()", 54.0),  # far above chance: whatever the order says, it was trained
])
def test_a_model_made_again_but_loaded_or_not_tested_keeps_its_verdict(tmp_path: Path, between: str,
                                                                        acc: float) -> None:
    _, results = _grade(_remade(between, acc=acc), tmp_path)
    assert results["lab1-1-test-metrics"].status == "pass", results["lab1-1-test-metrics"].message
