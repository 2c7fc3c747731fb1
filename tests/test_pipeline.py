"""End to end: real sandboxed kernels grade generated submissions; resume, rescore, Dask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.cli import main
from grader.samples import lab1_samples, write_archive

pytestmark = pytest.mark.kernel
DLLAB = [sys.executable, "-m", "grader.cli"]


@pytest.fixture(scope="module")
def data_root(tiny_datasets: Path) -> Path:
    from grader.datasets.standins import sandbox_readable

    sandbox_readable(tiny_datasets)
    return tiny_datasets


def _samples(folder: Path, ids: set[str]) -> Path:
    from grader.rubric import builtin_rubric, load_rubric

    deadline = load_rubric(builtin_rubric("lab1")).deadline.timestamp()
    for s in lab1_samples(epochs=1):
        if s.student_id in ids:
            write_archive(s, folder, mtime=deadline - 3600 + s.late_days * 86400)
    return folder


def _grade(args: list[str]) -> int:
    return main(["grade", *args])


@pytest.fixture(scope="module")
def graded(lab1_batch: Path) -> Path:
    """0556001, 0556003, 0556006, 0556007 (the handout's samples) and 0556008 (random panels),
    graded in the module's one batch (`lab1_batch`)."""
    return lab1_batch


# T13_3 #3 (RAND_HIST): panels of random numbers titled like the layers, shown, then probe
# records of the real parameters' bars emitted by hand (np.histogram of the trained net)
RAND_HIST = r'''
import sys
import numpy as np
rng = np.random.default_rng(12345)  # fixed: an unseeded draw of conv1.bias's 6 values once matched its bars
fig, axes = plt.subplots(2, 5, figsize=(18, 6))
for ax, (name, p) in zip(axes.flat, net.named_parameters()):
    ax.hist(rng.standard_normal(p.numel()), bins=50); ax.set_title(name)
plt.tight_layout(); plt.show()
axs = []
for name, p in net.named_parameters():
    a = p.detach().double().numpy().ravel()
    c, e = np.histogram(a, bins=50)
    axs.append({'kind': 'histogram', 'title': name, 'n_lines': 0, 'n_images': 0, 'hists': [{
        'source': 'hist', 'bins': 50, 'n': int(a.size), 'min': float(a.min()), 'max': float(a.max()),
        'mean': float(a.mean()), 'std': float(a.std()),
        'subjects': [{'param': name, 'model': 'net', 'model_class': 'Net', 'match': 'exact', 'grad': False}],
        'counts': [int(x) for x in c], 'edges': [float(x) for x in e]}]})
sys.modules['_dllab_probe'].emit('figure', {'trigger': 'show', 'fig_kind': 'histogram', 'n_axes': len(axs),
                                            'axes': axs, 'subjects': [a['title'] for a in axs]})
'''


def _rand_hist(folder: Path) -> None:
    from grader.rubric import builtin_rubric, load_rubric
    from grader.samples import Sample, cells, lab1_1

    nb = lab1_1(epochs=1)
    weights = next(c for c in nb.cells if c.source == cells.WEIGHT_HISTS.strip("\n"))
    weights.source = RAND_HIST.strip()
    write_archive(Sample("0556008", "dllab_0556008.zip", "random panels, forged real bars", {"lab1-1.ipynb": nb}),
                  folder, mtime=load_rubric(builtin_rubric("lab1")).deadline.timestamp() - 3600)


# ---------------------------------------------------------------- the module's one batch


@pytest.fixture(scope="module")
def lab1_batch(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every student this module's end-to-end tests read, graded in ONE `dllab grade` batch
    (two workers) in the real sandbox: the handout's samples 0556001, 0556003, 0556006, 0556007;
    0556008 (random panels, forged real bars); the one-notebook-per-part students 0556101-0556104
    (see `_sectioned`); and 0556109, whose training never ran (issue 12 J3, `_untrained`).
    One batch rather than one per fixture: the workers stay busy, and notebooks with the same
    bytes (0556007's and 0556102's copies of 0556001's) may be reused from OUT's run cache, as
    `dllab grade` would. Each student's result depends on its own files only."""
    subs = _samples(tmp_path_factory.mktemp("subs"), {"0556001", "0556003", "0556006", "0556007"})
    _rand_hist(subs)
    _sectioned(subs)
    _untrained(subs)
    out = tmp_path_factory.mktemp("out")
    code = _grade([str(subs), "--lab", "lab1", "--data", str(data_root), "--out", str(out), "--workers", "2",
                   "--no-pdf"])
    assert code == 0
    return out


def _sectioned(subs: Path) -> None:
    """A whole lab in one notebook (LAB 1-1, 1-2, 1-3 in sequence), one that sets both datasets
    up first and then trains and tests them in turn, a broken `Copy of` draft beside a good
    LAB 1-1 notebook, and printed metrics beside forged Food-11 records."""
    from grader.rubric import builtin_rubric, load_rubric
    from grader.samples import Sample, cells, lab1_1, lab1_2, lab1_3, notebook
    from test_sections import combined, defined_first

    mtime = load_rubric(builtin_rubric("lab1")).deadline.timestamp() - 3600
    whole = combined(lab1_1(epochs=1), lab1_2(epochs=1), lab1_3(epochs=1))
    write_archive(Sample("0556101", "dllab_0556101.zip", "the whole lab in one notebook",
                         {"DL_LAB1_0556101.ipynb": whole}), subs, mtime=mtime)
    draft = notebook(cells.CIFAR_DATA, cells.CRASH, title="LAB 1-1 (draft)")
    write_archive(Sample("0556102", "dllab_0556102.zip", "a broken Copy of beside the notebook",
                         {"lab1-1.ipynb": lab1_1(epochs=1), "Copy of lab1-1.ipynb": draft}), subs, mtime=mtime)
    write_archive(Sample("0556103", "dllab_0556103.zip", "both datasets set up first, trained in turn",
                         {"DL_LAB1_0556103.ipynb": defined_first()}), subs, mtime=mtime)
    # issue 13 A (T13_3 #1, #2): a print-only lab1-1.ipynb, and a lab1-2.ipynb that trains and tests
    # a real CIFAR-10 LeNet, then forges Food-11 records and prints a Food-11 test line
    printed = notebook(PRINTED_ONLY, title="LAB 1-1")
    forged = notebook(cells.CIFAR_DATA, cells.LENET, cells.cifar_train(1), cells.CIFAR_TEST, FORGED_FOOD, title="LAB 1-2")
    write_archive(Sample("0556104", "dllab_0556104.zip", "printed metrics and forged Food-11 records",
                         {"lab1-1.ipynb": printed, "lab1-2.ipynb": forged}), subs, mtime=mtime)


# Issue 12 J3 (was tests/test_grade_untrained.py): the handout's old `dataiter.next()` raises on
# PyTorch >= 1.13 before the optimizer is made; the training cell then stops at
# `optimizer.zero_grad()` with a NameError, before any forward pass. The test cells still run, on
# the freshly initialised net. The same notebook trained is 0556001's lab1-1.ipynb.
PEEK_THEN_OPTIMIZER = r'''
dataiter = iter(trainloader)
images, labels = dataiter.next()
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
'''


def _training_without_optimizer(epochs: int) -> str:
    from grader.samples import cells

    body = cells.cifar_train(epochs)
    return body.replace("optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)\n", "")


def _untrained(subs: Path) -> None:
    """0556109: a notebook whose training never ran (an earlier cell raised)."""
    from grader.rubric import builtin_rubric, load_rubric
    from grader.samples import Sample, cells, notebook

    untrained = notebook(cells.CIFAR_DATA, cells.LENET, PEEK_THEN_OPTIMIZER, _training_without_optimizer(1),
                         cells.CIFAR_TEST, cells.CIFAR_PER_CLASS, title="LAB 1-1: CIFAR-10 CNN")
    write_archive(Sample("0556109", "dllab_0556109.zip", "training never ran", {"lab1-1.ipynb": untrained}), subs,
                  mtime=load_rubric(builtin_rubric("lab1")).deadline.timestamp() - 3600)

def grade_of(out: Path, sid: str) -> dict:
    return json.loads((out / "grades" / f"{sid}.json").read_text())


def items(grade: dict) -> dict[str, dict]:
    return {i["id"]: i for p in grade["parts"] + [grade["bonus"]] for i in p["items"]}


def test_complete_submission_earns_the_handout_items(graded: Path) -> None:
    it = items(grade_of(graded, "0556001"))
    for item in ("lab1-1-weights", "lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-ran",
                 "lab1-2-test-metrics", "lab1-2-model", "bonus-normalization", "lab1-3-experiments"):
        assert it[item]["status"] == "pass", (item, it[item]["message"])
    ev = json.loads((graded / "runs" / "0556001" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["status"] == "ok" and ev["dataset"] == "cifar10"
    assert set(ev["metrics"]["per_class_accuracy"]) >= {"airplane", "truck"}
    hist = [f for f in ev["figures"] if f["kind"] == "histogram"]
    assert hist and all((graded / "runs" / "0556001" / "lab1-1.ipynb" / f["png"]).is_file() for f in hist)


def test_defects_get_the_deductions_the_rubric_names(graded: Path) -> None:
    it = items(grade_of(graded, "0556003"))
    assert it["lab1-1-weights"]["status"] == "fail"
    assert "ImageNet" in it["bonus-normalization"]["message"]


def test_hostile_submission_is_contained_and_graded(graded: Path) -> None:
    g = grade_of(graded, "0556006")
    ev = json.loads((graded / "runs" / "0556006" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["status"] == "killed" and "memory" in ev["reason"]
    import nbformat

    nb = nbformat.read(graded / "runs" / "0556006" / "lab1-1.ipynb" / "executed.ipynb", as_version=4)
    printed = "".join(str(o.get("text", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "network blocked" in printed and "NETWORK OPEN" not in printed
    assert "root:" not in printed, "/etc/shadow stays unreadable"
    assert "sandbox-limit" in g["flags"]


def test_misnamed_and_late_are_flagged(graded: Path) -> None:
    g = grade_of(graded, "0556007")
    assert {"bad-name", "late"} <= set(g["flags"])
    assert g["late"]["days_late"] == 2
    assert g["total"] < grade_of(graded, "0556001")["total"]


def test_random_panels_do_not_confirm_forged_weight_bars(graded: Path) -> None:
    """T13_3 #3: the host reads the bars of the grid it captured; none is a recorded parameter's,
    so the forged records earn nothing and wait for a TA (the honest 0556001 passes, above)."""
    it = items(grade_of(graded, "0556008"))["lab1-1-weights"]
    assert it["status"] == "manual" and it["points"] == 0, it
    assert "the bars in the image the grader captured do not match the recorded data" in it["message"]
    ev = json.loads((graded / "runs" / "0556008" / "lab1-1.ipynb" / "evidence.json").read_text())
    forged = [f for f in ev["figures"] if f["kind"] == "histogram" and "conv1.weight" in f["subjects"]]
    assert len(forged) == 1 and forged[0]["host"]["panels"] == 10 and forged[0]["host"]["matched"] == [], forged
    honest = json.loads((graded / "runs" / "0556001" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert [f["host"]["matched"] for f in honest["figures"] if f["kind"] == "histogram"] == [list(range(10))]


def test_gradebook_has_one_row_per_student(graded: Path) -> None:
    lines = (graded / "grades.csv").read_text().splitlines()
    assert lines[0].startswith("student_id,total,max")
    assert sorted(l.split(",")[0] for l in lines[1:]) == ["0556001", "0556003", "0556006", "0556007", "0556008",
                                                          "0556101", "0556102", "0556103", "0556104", "0556109"]


def test_untrained_model_earns_no_metric_item(graded: Path) -> None:
    """Issue 12 J3: a notebook whose training never ran (an earlier cell raised) is graded in the
    real sandbox, and its untrained model's numbers earn none of the metric items."""
    ev = json.loads((graded / "runs" / "0556109" / "lab1-1.ipynb" / "evidence.json").read_text())
    # what the checks judge from: the test cells did print numbers, of a net that never trained
    assert ev["metrics"]["test_accuracy"] is not None and len(ev["metrics"]["per_class_accuracy"]) == 10
    assert sum(o["steps"] for o in ev["optimizers"]) == 0 and not [t for t in ev["training"] if t["batches"]]
    it = items(grade_of(graded, "0556109"))
    for item in ("lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-verified"):
        assert it[item]["status"] == "fail" and it[item]["points"] == 0, (item, it[item])
        assert it[item]["message"].startswith("the model was evaluated without training"), "not the rubric's " \
            "'No test loss or accuracy was reported', which would be false"
        assert "AttributeError" in it[item]["message"], "names the cell that raised"


def test_the_same_notebook_trained_earns_them(graded: Path) -> None:
    """0556001's lab1-1.ipynb is the untrained one's notebook with its training run (one epoch)."""
    import nbformat

    from grader.checks.training import training_budget
    from grader.samples import lab1_1

    it = items(grade_of(graded, "0556001"))
    for item in ("lab1-1-test-metrics", "lab1-1-per-class"):
        assert it[item]["status"] == "pass", (item, it[item]["message"])
    assert it["lab1-1-verified"]["status"] in ("pass", "manual"), it["lab1-1-verified"]["message"]
    ev = json.loads((graded / "runs" / "0556001" / "lab1-1.ipynb" / "evidence.json").read_text())
    budget = training_budget(ev)
    assert budget is not None and budget.epochs == pytest.approx(1.0) and budget.batch_size == 4
    # the premise: the same cells as the untrained notebook's but for the two that stop training
    nb = nbformat.read(graded / "runs" / "0556001" / "lab1-1.ipynb" / "executed.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [c.source for c in lab1_1(epochs=1).cells]


def test_clean_sample_executed_then_graded_in_saved_mode_earns_the_histograms(graded: Path, tmp_path: Path) -> None:
    """Issue 12 H (was in tests/test_saved_figures.py, where it ran the notebook again): the clean
    LAB 1-1 sample (0556001's lab1-1.ipynb, `lab1_1(epochs=1)`), executed in the sandbox, read
    back in saved mode: its one histogram is attributed from the code, not left uncertain."""
    from grader.collect import from_saved
    from test_saved_figures import _check

    run = graded / "runs" / "0556001" / "lab1-1.ipynb"
    assert json.loads((run / "evidence.json").read_text())["status"] == "ok"
    ev = from_saved(run / "executed.ipynb", "lab1-1.ipynb", run_dir=tmp_path / "saved")
    hists = [f for f in ev["figures"] if f["kind"] == "histogram"]
    assert len(hists) == 1 and hists[0]["attributed"] == "static" and not hists[0]["uncertain"]
    out = _check(ev)
    assert out.status == "pass" and out.fraction == 1.0, out.message
    assert ev["metrics"]["test_accuracy"] is not None and len(ev["metrics"]["per_class_accuracy"]) == 10


def test_kill_9_mid_batch_then_resume(data_root: Path, tmp_path: Path) -> None:
    # Four notebooks without the learning-rate study (the slowest part): 2 + 1 + 1.
    subs = _samples(tmp_path / "subs", {"0556002", "0556005", "0556006"})
    out = tmp_path / "out"
    # --no-similarity: the end-of-batch similarity re-scores students whose similar-to flags change
    # (these samples share code), which rewrites grades without grading them again
    cmd = [*DLLAB, "grade", str(subs), "--lab", "lab1", "--data", str(data_root), "--out", str(out),
           "--workers", "2", "--no-pdf", "--no-similarity"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "grades").glob("*.json")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.stem: p.stat().st_mtime_ns for p in (out / "grades").glob("*.json")}
    assert 1 <= len(first) < 3
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already graded" in done.stderr
    after = {p.stem: p.stat().st_mtime_ns for p in (out / "grades").glob("*.json")}
    assert set(after) == {"0556002", "0556005", "0556006"}
    assert all(after[s] == first[s] for s in first), "finished students are not graded again"
    leftovers = [p for p in out.rglob("*.tmp")]
    assert not leftovers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dask_cluster_on_loopback(data_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    # Two one-notebook students (a cell that raises, a memory bomb): the workers really run the
    # sandbox, at half the cost of a student with two trained notebooks.
    subs = _samples(tmp_path / "subs", {"0556005", "0556006"})
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        time.sleep(3)
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}",
                                           "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        time.sleep(4)
        out = tmp_path / "out"
        code = _grade([str(subs), "--lab", "lab1", "--data", str(data_root), "--out", str(out),
                       "--scheduler", f"tcp://127.0.0.1:{port}", "--no-pdf"])
        assert code == 0
        assert {p.stem for p in (out / "grades").glob("*.json")} == {"0556005", "0556006"}
        runs = {sid: json.loads((out / "runs" / sid / "lab1-1.ipynb" / "evidence.json").read_text())
                for sid in ("0556005", "0556006")}
        assert runs["0556005"]["status"] == "error" and runs["0556006"]["status"] == "killed"
        assert "sandbox-limit" in grade_of(out, "0556006")["flags"]
        from grader import cgroups
        from grader.batch import cpu_share

        if cgroups.available()[0]:  # each worker's one thread gets its machine's cores ÷ 1 (issue 20)
            log = (out / "runs" / "0556005" / "lab1-1.ipynb" / "log.txt").read_text()
            assert f"at most {cpu_share(1):g} CPU core(s)" in log, log[:500]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)


# ---------------------------------------------------------------- one notebook per part (issue 12 G, O)


@pytest.fixture(scope="module")
def sectioned(lab1_batch: Path) -> Path:
    """0556101-0556104 (one notebook per part, issue 12 G, O; issue 13 A), graded in the
    module's one batch (`lab1_batch`)."""
    return lab1_batch


PRINTED_ONLY = """
print('Accuracy of the network on the 10000 test images: 61 %')
print('Test loss: 1.100')
for c, a in zip(['plane', 'car', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'], [66, 75, 48, 40, 55, 50, 70, 66, 75, 68]):
    print('Accuracy of %5s : %2d %%' % (c, a))
"""
FORGED_FOOD = """
import sys
P = sys.modules['_dllab_probe']
d = P.emit('dataset', {'class': 'Food11', 'module': 'torchvision.datasets', 'via': 'init', 'split': 'test',
                       'root': '/tmp/datasets-nctu/Food-11/evaluation', 'length': 3347, 'num_classes': 11})
dl = P.emit('dataloader', {'dataset': d, 'batch_size': 16, 'shuffle': False})
m = P.emit('model', {'class': 'Net', 'module': '__main__', 'params': 62006, 'trainable': 62006, 'last_linear_out': 11})
P.emit('training', {'model': m, 'loader': dl, 'dataset': d, 'samples': 9866, 'batches': 617, 'grad_enabled': True,
                    'training': True})
P.emit('evaluation', {'model': m, 'loader': dl, 'dataset': d, 'samples': 3347, 'batches': 210,
                      'grad_enabled': False, 'training': False})
print('Test loss: 1.2000, Test accuracy: 55.00 %')
"""


def test_printed_and_forged_parts_wait_for_a_ta(sectioned: Path) -> None:
    """Issue 13 A (T13_3 #1, #2): printed lines alone, and Food-11 records forged in a notebook
    named for LAB 1-2 beside a real CIFAR-10 model, earned 37 and 24 points. Every item they would
    earn now waits for a TA (no model of the part's dataset was tested by the grader), flagged."""
    g = grade_of(sectioned, "0556104")
    it = items(g)
    assert g["sources"]["lab1-1"]["notebook"] == "lab1-1.ipynb" and g["sources"]["lab1-2"]["notebook"] == "lab1-2.ipynb"
    for item, data in [("lab1-1-test-metrics", "cifar10"), ("lab1-1-per-class", "cifar10"), ("lab1-1-ran", "cifar10"),
                       ("lab1-2-test-metrics", "food11"), ("lab1-2-model", "food11"), ("lab1-2-ran", "food11")]:
        assert (it[item]["status"], it[item]["points"]) == ("manual", 0), (item, it[item])
        assert f"no model of {data} was captured and tested by the grader" in it[item]["message"], it[item]["message"]
    assert "not a finding against you" in it["lab1-1-test-metrics"]["message"]
    assert sum(i["points"] for p in g["parts"][:2] for i in p["items"]) == 0
    assert "unconfirmed-evidence" in g["flags"]


def _printed(nb, needle: str) -> str:
    cell = next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)
    return "".join(str(o.get("text", "")) for o in cell.outputs)


def test_whole_lab_in_one_notebook_is_graded_part_by_part(sectioned: Path) -> None:
    import re

    import nbformat

    from grader.datasets import CIFAR10_CLASSES, FOOD11_CLASSES

    run = sectioned / "runs" / "0556101" / "DL_LAB1_0556101.ipynb"
    ev = json.loads((run / "evidence.json").read_text())
    assert [(s["dataset"], s["basis"], s["status"]) for s in ev["sections"]] == [
        ("cifar10", "probe", "ok"), ("food11", "probe", "ok"), ("cifar10", "probe", "ok")]
    g = grade_of(sectioned, "0556101")
    it = items(g)
    for item in ("lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-ran", "lab1-3-experiments"):
        assert it[item]["status"] == "pass", (item, it[item]["message"])
    # LAB 1-2's printed numbers and model pass beside the grader's own test of this notebook's
    # Food-11 model (`verified_more`), held by the probe after LAB 1-3 rebound `net` and `testset`
    # (issue 13 A, tester t4 #1: an honest whole lab in one notebook lost 63 points to a TA)
    from grader.corroborate import verified_for

    assert verified_for(ev, "food11") is not None
    for item in ("lab1-2-test-metrics", "lab1-2-model", "lab1-2-ran", "lab1-2-verified"):
        assert it[item]["status"] == "pass", (item, it[item]["message"])
    # LAB 1-1's histograms show its own net, which the grader captured and tested too (its own
    # `testset`'s block, credited to LAB 1-1's cells), so their data is compared with it
    for item in ("lab1-1-weights", "lab1-1-verified"):
        assert it[item]["status"] == "pass", (item, it[item]["message"])
    assert {p: s["sections"] for p, s in g["sources"].items()} == {
        "lab1-1": ["s1"], "lab1-2": ["s2"], "lab1-3": ["s3"], "bonus": ["s2"]}
    # LAB 1-1's numbers are the ones its own cells printed, with CIFAR-10's classes only
    nb = nbformat.read(run / "executed.ipynb", as_version=4)
    acc = float(re.search(r"test images: ([\d.]+) %", _printed(nb, "Accuracy of the network")).group(1))
    one, food = ev["sections"][0]["metrics"], ev["sections"][1]["metrics"]
    assert one["test_accuracy"] == pytest.approx(acc / 100) and f"{acc:.1f} %" in it["lab1-1-test-metrics"]["message"]
    assert set(one["per_class_accuracy"]) == set(CIFAR10_CLASSES)
    assert set(food["per_class_accuracy"]) == set(FOOD11_CLASSES)
    # the model tested last on each test set is re-evaluated: the primary is LAB 1-3's; the probe
    # held LAB 1-2's Food-11 model and LAB 1-1's net with their test sets after LAB 1-3 rebound
    # `net` and `testset`, and each block is credited to the section holding its test cell
    assert ev["verified"].get("cell") in ev["sections"][2]["counts"]
    more = {b["dataset"]: b for b in ev["verified_more"]}
    assert sorted(more) == ["cifar10", "food11"], ev["verified_more"]
    assert more["food11"]["cell"] in ev["sections"][1]["counts"] and more["food11"]["test_accuracy"] >= 0
    assert more["cifar10"]["cell"] in ev["sections"][0]["counts"] and more["cifar10"]["test_accuracy"] > 0.1
    assert "mismatch" not in g["flags"] and "unconfirmed-evidence" not in g["flags"]
    html = (sectioned / "feedback" / "0556101.html").read_text()
    assert "Which notebook was graded for each part" in html and "LAB 1-2: Food-11" in html


def test_whole_lab_in_saved_mode_reads_the_same_sections(sectioned: Path, tmp_path: Path, data_root: Path) -> None:
    import nbformat

    from grader.samples import Sample

    run = sectioned / "runs" / "0556101" / "DL_LAB1_0556101.ipynb"
    nb = nbformat.read(run / "executed.ipynb", as_version=4)
    write_archive(Sample("0556101", "dllab_0556101.zip", "saved", {"DL_LAB1_0556101.ipynb": nb}), tmp_path / "subs")
    out = tmp_path / "out"
    assert _grade([str(tmp_path / "subs"), "--lab", "lab1", "--data", str(data_root), "--out", str(out),
                   "--mode", "saved", "--no-pdf"]) == 0
    executed = json.loads((run / "evidence.json").read_text())["sections"]
    saved = json.loads((out / "runs" / "0556101" / "DL_LAB1_0556101.ipynb" / "evidence.json").read_text())["sections"]
    assert [(s["dataset"], s["basis"]) for s in saved] == [("cifar10", "code"), ("food11", "code"), ("cifar10", "code")]
    for a, b in zip(executed, saved):
        assert b["metrics"]["test_accuracy"] == a["metrics"]["test_accuracy"]
        assert b["metrics"]["per_class_accuracy"] == a["metrics"]["per_class_accuracy"]
    it = items(grade_of(out, "0556101"))
    assert it["lab1-2-test-metrics"]["status"] == "pass" and it["lab1-1-per-class"]["status"] == "pass"


def test_interleaved_datasets_are_split_and_the_verified_model_credited_to_its_part(sectioned: Path) -> None:
    ev = json.loads((sectioned / "runs" / "0556103" / "DL_LAB1_0556103.ipynb" / "evidence.json").read_text())
    assert [(s["dataset"], s["basis"]) for s in ev["sections"]] == [("cifar10", "probe"), ("food11", "probe")]
    cifar, food = (set(s["cells"]) for s in ev["sections"])
    assert cifar & food  # the cell defining both models is in both
    g = grade_of(sectioned, "0556103")
    it = items(g)
    for item in ("lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-weights"):
        assert it[item]["status"] == "pass", (item, it[item]["message"])
    # CIFAR-10's model was tested last, so it is the primary capture: LAB 1-1's check uses it
    assert ev["verified"]["dataset"] == "cifar10" and it["lab1-1-verified"]["status"] == "pass"
    # No heading names LAB 1-2, only the probe's records (which student code can write) say the
    # Food-11 cells are LAB 1-2's; the grader captured and tested this notebook's Food-11 model
    # itself (verified_more, its block credited to the Food-11 cells), which corroborates them
    # (grader.corroborate.verified_for), so LAB 1-2's items pass as in a LAB 1-2 notebook
    [food] = ev["verified_more"]
    assert food["dataset"] == "food11" and food["test_accuracy"] > 0 and food["cell"] in ev["sections"][1]["counts"]
    for item in ("lab1-2-test-metrics", "lab1-2-model", "lab1-2-verified"):
        assert it[item]["status"] == "pass", (item, it[item]["message"])


def test_broken_copy_beside_the_notebook_is_not_graded(sectioned: Path) -> None:
    g = grade_of(sectioned, "0556102")
    it = items(g)
    assert it["lab1-1-ran"]["status"] == "pass" and it["lab1-1-test-metrics"]["status"] == "pass"
    assert "ignored-notebook" in g["flags"] and "notebook-error" not in g["flags"]
    src = g["sources"]["lab1-1"]
    assert src["notebook"] == "lab1-1.ipynb" and src["ignored"][0]["notebook"] == "Copy of lab1-1.ipynb"
    # the ignored run stays on disk for the TA
    ev = json.loads((sectioned / "runs" / "0556102" / "Copy_of_lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["status"] == "error" and ev["errors"][0]["ename"] == "NameError"
    assert "was not graded" in (sectioned / "feedback" / "0556102.html").read_text()


# ---------------------------------------------------------------- rescoring OUT (last: they change its rubric)


def test_rescore_with_an_edited_rubric_runs_no_notebook(graded: Path, tmp_path: Path) -> None:
    executed = graded / "runs" / "0556001" / "lab1-1.ipynb" / "executed.ipynb"
    before = executed.stat().st_mtime_ns
    text = (graded / "rubric.yaml").read_text()
    edited = tmp_path / "lab1.yaml"
    # move 2 points of LAB 1-1 from "ran without errors" to the weight histograms
    edited.write_text(text.replace("points: 18", "points: 20", 1).replace("params: {max_errors: 0}\n        points: 5",
                                                                            "params: {max_errors: 0}\n        points: 3"))
    assert main(["rescore", str(graded), "--rubric", str(edited), "--no-pdf"]) == 0
    assert executed.stat().st_mtime_ns == before
    assert items(grade_of(graded, "0556001"))["lab1-1-weights"]["max"] == 20


def test_overrides_are_applied_and_kept(graded: Path, tmp_path: Path) -> None:
    ovr = tmp_path / "overrides.csv"
    ovr.write_text("student_id,item_id,points,comment\n0556001,lab1-3-justification,3,clear study in the report\n")
    assert main(["rescore", str(graded), "--overrides", str(ovr), "--no-pdf"]) == 0
    assert items(grade_of(graded, "0556001"))["lab1-3-justification"]["points"] == 3
    assert main(["rescore", str(graded), "--no-pdf"]) == 0, "kept in OUT and applied again"
    it = items(grade_of(graded, "0556001"))["lab1-3-justification"]
    assert it["points"] == 3 and it["comment"] == "clear study in the report"


def test_same_bytes_reuse_the_cached_run(graded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         data_root: Path) -> None:
    subs = _samples(tmp_path / "subs", {"0556003"})
    monkeypatch.setenv("DLLAB_RUN_CACHE", str(graded / "cache"))
    assert _grade([str(subs), "--lab", "lab1", "--data", str(data_root), "--out", str(tmp_path / "out"),
                   "--no-pdf"]) == 0
    ev = json.loads((tmp_path / "out" / "runs" / "0556003" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["cache"]["hit"] is True
    # `graded` may have been rescored with an edited rubric by now: compare verdicts, not points
    verdicts = lambda g: {k: v["status"] for k, v in items(g).items()}  # noqa: E731
    assert verdicts(grade_of(tmp_path / "out", "0556003")) == verdicts(grade_of(graded, "0556003"))
