"""`dllab similarity` on a small LAB01 class written for it and graded in saved mode (no kernel):
a copy with renamed variables and reordered cells is paired, the same code with other outputs is
paired, a copied per-class table under different code is paired, two honest students from one
handout are not; flags reach the grades (not the student's PDF); earlier terms are compared."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.cli import main
from grader.samples import Sample, write_archive

HANDOUT = [
    """import torch
import torchvision
import torchvision.transforms as transforms
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
trainset = torchvision.datasets.CIFAR10(root='/tmp/dataset-nctu', train=True, download=False, transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True, num_workers=0)
testset = torchvision.datasets.CIFAR10(root='/tmp/dataset-nctu', train=False, download=False, transform=transform)
testloader = torch.utils.data.DataLoader(testset, batch_size=4, shuffle=False, num_workers=0)
classes = ('plane', 'car', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')""",
    """import torch.nn as nn
import torch.nn.functional as F
class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
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
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)
net = Net()""",
]

# Two honest students' own code for the same tasks, written differently.
ALICE = [
    """import torch.optim as optim
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
for epoch in range(2):
    running_loss = 0.0
    for i, data in enumerate(trainloader, 0):
        inputs, labels = data
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if i % 2000 == 1999:
            print('[%d, %5d] loss: %.3f' % (epoch + 1, i + 1, running_loss / 2000))
            running_loss = 0.0""",
    """class_correct = list(0. for i in range(10))
class_total = list(0. for i in range(10))
with torch.no_grad():
    for data in testloader:
        images, labels = data
        outputs = net(images)
        _, predicted = torch.max(outputs, 1)
        c = (predicted == labels).squeeze()
        for i in range(4):
            label = labels[i]
            class_correct[label] += c[i].item()
            class_total[label] += 1
for i in range(10):
    print('Accuracy of %5s : %2d %%' % (classes[i], 100 * class_correct[i] / class_total[i]))""",
    """import matplotlib.pyplot as plt
fig, axes = plt.subplots(2, 5, figsize=(18, 6))
for ax, (name, param) in zip(axes.flat, net.named_parameters()):
    ax.hist(param.detach().numpy().ravel(), bins=50)
    ax.set_title(name)
plt.tight_layout()
plt.show()""",
]

BOB = [
    """import torch.optim
loss_fn = torch.nn.CrossEntropyLoss()
opt = torch.optim.Adam(net.parameters(), lr=3e-4)
history = []
for ep in range(3):
    total, count = 0.0, 0
    for xb, yb in trainloader:
        opt.zero_grad()
        l = loss_fn(net(xb), yb)
        l.backward()
        opt.step()
        total += float(l) * len(yb)
        count += len(yb)
    history.append(total / count)
    print(f"epoch {ep}: mean train loss {total / count:.4f}")""",
    """import numpy as np
confusion = np.zeros((10, 10), dtype=int)
net.eval()
with torch.no_grad():
    for xb, yb in testloader:
        pred = net(xb).argmax(dim=1)
        for t, p in zip(yb.tolist(), pred.tolist()):
            confusion[t, p] += 1
per_class = confusion.diagonal() / confusion.sum(axis=1)
for name, acc in zip(classes, per_class):
    print(f"{name:>6s}: {acc:.2%}")
print("overall", confusion.trace() / confusion.sum())""",
    """import matplotlib.pyplot as plt
layers = [(n, p) for n, p in net.named_parameters() if n.endswith('weight')]
plt.figure(figsize=(15, 3))
for k, (n, p) in enumerate(layers):
    plt.subplot(1, len(layers), k + 1)
    plt.hist(p.detach().flatten().numpy(), bins=40, color='teal')
    plt.title(n)
plt.show()""",
]

# Carol: a third honest student (a different way again), who copied Alice's printed table.
CAROL = [
    """from torch import optim as o
crit = nn.CrossEntropyLoss()
sgd = o.SGD(net.parameters(), lr=0.01)
steps = 0
while steps < 5000:
    for batch_x, batch_y in trainloader:
        sgd.zero_grad(); out = crit(net(batch_x), batch_y); out.backward(); sgd.step(); steps += 1
        if steps % 1000 == 0: print('step', steps, 'loss', round(out.item(), 4))
        if steps >= 5000: break""",
    """hits = {c: 0 for c in classes}; seen = {c: 0 for c in classes}
for batch_x, batch_y in testloader:
    guess = net(batch_x).max(1).indices
    for truth, g in zip(batch_y, guess):
        seen[classes[truth]] += 1; hits[classes[truth]] += int(truth == g)
report = {c: hits[c] / max(1, seen[c]) for c in classes}
print(report)""",
]


def _rename(src: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        src = re.sub(rf"\b{re.escape(old)}\b", new, src)
    return src


def _table(numbers: list[float]) -> str:
    names = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    return "".join(f"Accuracy of {n:>5s} : {int(v):2d} %\n" for n, v in zip(names, numbers))


def _log(seed: int) -> str:
    import random

    r = random.Random(seed)
    return "".join(f"[{e}, {s:5d}] loss: {2.3 - 0.1 * e - 0.0001 * s + r.random() / 10:.3f}\n"
                   for e in (1, 2) for s in (2000, 4000, 6000, 8000, 10000, 12000))


def _notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_markdown_cell("# LAB 1-1")])
    for n, (src, out) in enumerate(cells, 1):
        c = new_code_cell(src, execution_count=n)
        if out:
            c.outputs = [new_output("stream", name="stdout", text=out)]
        nb.cells.append(c)
    return nb


def _class(folder: Path) -> Path:
    alice_table = _table([61, 72, 45, 38, 52, 49, 70, 66, 75, 69])
    students = {
        # honest, from the handout
        "0600001": [(HANDOUT[0], ""), (HANDOUT[1], ""), (ALICE[0], _log(1)), (ALICE[1], alice_table), (ALICE[2], "")],
        "0600002": [(HANDOUT[0], ""), (HANDOUT[1], ""), (BOB[0], "epoch 0: mean train loss 1.8231\n"),
                    (BOB[1], "plane: 60.10%\n car: 71.30%\n"), (BOB[2], "")],
        "0600003": [(HANDOUT[0], ""), (HANDOUT[1], ""), (CAROL[0], "step 1000 loss 2.1022\n"), (CAROL[1], "{}\n")],
        # Alice's notebook, variables renamed, comments changed, cells reordered; trained again
        "0600004": [(HANDOUT[0], ""), (HANDOUT[1], ""),
                    (_rename(ALICE[2], {"fig": "figure", "axes": "axs", "ax": "a", "name": "layer", "param": "w"}), ""),
                    (_rename(ALICE[0], {"criterion": "lossfn", "optimizer": "sgd", "running_loss": "acc_loss",
                                        "inputs": "x", "labels": "y", "outputs": "logits", "epoch": "ep",
                                        "data": "batch"}), _log(7)),
                    (_rename(ALICE[1], {"class_correct": "right", "class_total": "count", "predicted": "pred",
                                        "images": "imgs", "labels": "lbls", "label": "lbl"})
                     .replace("with torch.no_grad():", "# evaluate on the test split\nwith torch.no_grad():"),
                     _table([58, 70, 41, 40, 55, 44, 73, 61, 77, 70]))],
        # Bob's code exactly, run again: other numbers
        "0600005": [(HANDOUT[0], ""), (HANDOUT[1], ""), (BOB[0], "epoch 0: mean train loss 1.7944\n"),
                    (BOB[1], "plane: 58.20%\n car: 69.90%\n"), (BOB[2], "")],
        # own code, Alice's printed per-class table pasted as its output
        "0600006": [(HANDOUT[0], ""), (HANDOUT[1], ""),
                    ("trainer = Trainer(net, lr=0.005)\nfor k in range(4):\n    trainer.fit_one_epoch(trainloader)\n"
                     "    print(trainer.summary())", ""),
                    ("for i, c in enumerate(classes):\n    print('Accuracy of %5s : %2d %%' % (c, acc_of(c)))",
                     alice_table)],
    }
    subs = folder / "subs"
    subs.mkdir(parents=True)
    for sid, cells in students.items():
        write_archive(Sample(sid, f"dllab_{sid}.zip", "similarity fixture", {"lab1-1.ipynb": _notebook(cells)}), subs)
    out = folder / "out"
    assert main(["grade", str(subs), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf"]) == 0
    return out


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _class(tmp_path_factory.mktemp("sim"))


def _pairs(out: Path) -> dict[frozenset[str], dict]:
    data = json.loads((out / "similarity.json").read_text())
    return {frozenset((p["a"], p["b"])): p for p in data["pairs"]}


def test_renamed_and_reordered_copy_is_paired_by_its_code(graded: Path) -> None:
    p = _pairs(graded)[frozenset(("0600001", "0600004"))]
    assert p["flagged"] and p["code"]["score"] >= 0.8, p


def test_the_same_code_run_again_is_paired_by_its_code(graded: Path) -> None:
    p = _pairs(graded)[frozenset(("0600002", "0600005"))]
    assert p["flagged"] and p["code"]["score"] >= 0.8, p


def test_honest_students_from_one_handout_are_not_paired(graded: Path) -> None:
    pairs = _pairs(graded)
    for a, b in [("0600001", "0600002"), ("0600001", "0600003"), ("0600002", "0600003"), ("0600003", "0600005")]:
        p = pairs.get(frozenset((a, b)))
        assert p is None or not p["flagged"], p


def test_flags_reach_the_grades_and_the_gradebook_not_the_student(graded: Path) -> None:
    flags = json.loads((graded / "grades" / "0600004.json").read_text())["flags"]
    assert "similar-to:0600001" in flags
    assert "similar-to:0600004" in json.loads((graded / "grades" / "0600001.json").read_text())["flags"]
    assert not any(f.startswith("similar-to:") for f in json.loads((graded / "grades" / "0600003.json").read_text())["flags"])
    assert "similar-to:0600001" in (graded / "grades.csv").read_text()
    html = (graded / "feedback" / "0600004.html").read_text()
    assert "0600001" not in html and "similar-to" not in html


def test_a_flagged_pair_opens_side_by_side_with_the_matching_code_marked(graded: Path) -> None:
    page = (graded / "similarity.html").read_text()
    link = re.search(r'href="(similarity/0600001--0600004\.html)"', page)
    assert link, "the class page links the pair"
    pair = (graded / link.group(1)).read_text()
    assert pair.count("<mark>") >= 3 and "class_correct" in pair and "right" in pair  # both sides, renamed


def test_an_earlier_term_is_compared_without_being_regraded(graded: Path, tmp_path: Path) -> None:
    import shutil

    last_year = tmp_path / "2025"
    shutil.copytree(graded, last_year, symlinks=True)
    before = sorted(p.stat().st_mtime_ns for p in (last_year / "grades").glob("*.json"))
    this_year = tmp_path / "now"
    shutil.copytree(graded, this_year, symlinks=True)
    s = json.loads((this_year / "settings.json").read_text())
    (this_year / "settings.json").write_text(json.dumps(s).replace(str(graded), str(this_year)))
    assert main(["similarity", str(this_year), "--against", str(last_year)]) == 0
    flags = json.loads((this_year / "grades" / "0600003.json").read_text())["flags"]
    assert "similar-to:2025/0600003" in flags  # the same submission handed in again
    assert sorted(p.stat().st_mtime_ns for p in (last_year / "grades").glob("*.json")) == before


def test_a_copied_output_table_under_different_code_is_paired(graded: Path) -> None:
    pytest.importorskip("grader.similarity.outputs")
    p = _pairs(graded)[frozenset(("0600001", "0600006"))]
    assert p["flagged"] and p["outputs"]["score"] >= 1.0, p


def test_the_review_queues_the_flag_and_opens_the_pair(graded: Path) -> None:
    from starlette.testclient import TestClient

    from grader.review.app import Review

    review = Review(graded, token="t", render=False)
    c = TestClient(review.app())
    c.get("/?token=t")
    entry = next(e for e in review.queue() if e.key == "similar-to:0600001" and e.student_id == "0600004")
    page = c.get(entry.path).text
    link = re.search(r'id="pair" href="([^"]+)"', page)
    assert link and "side by side" in page
    pair = c.get(link.group(1))
    assert pair.status_code == 200 and "<mark>" in pair.text
    assert c.get("/similarity.html").status_code == 200
    assert c.get("/similarity/..%2Fsettings.json").status_code == 404


def _copy(graded: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(graded, to, symlinks=True)
    s = (to / "settings.json").read_text()
    (to / "settings.json").write_text(s.replace(str(graded), str(to)))
    return to


def test_scores_are_the_same_in_every_process(graded: Path, tmp_path: Path) -> None:
    import os
    import sys

    got = []
    for seed in ("1", "2"):
        out = _copy(graded, tmp_path / f"s{seed}")
        subprocess.run([sys.executable, "-m", "grader.cli", "similarity", str(out)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        got.append({(p["a"], p["b"]): p["code"] for p in json.loads((out / "similarity.json").read_text())["pairs"]})
    assert got[0] == got[1] and got[0]


def test_earlier_terms_are_kept_for_later_runs_and_named_apart(graded: Path, tmp_path: Path) -> None:
    from grader.errors import GraderError
    from grader.similarity.core import update

    now = _copy(graded, tmp_path / "now")
    a = _copy(graded, tmp_path / "y2024" / "graded")
    b = _copy(graded, tmp_path / "y2023" / "graded")
    result, _ = update(now, against=[a, b])
    terms = {p["b_term"] for p in result["pairs"] if p["b_term"]}
    assert terms == {"graded", "y2023-graded"} or terms == {"graded", "y2024-graded"}, terms
    again, _ = update(now)  # a later grade or similarity without --against compares with them again
    assert again["earlier"] == result["earlier"] > 0
    with pytest.raises(GraderError, match="is the folder being checked"):
        update(now, against=[now])
    with pytest.raises(GraderError, match="no such file"):
        update(now, handout=[tmp_path / "nope.ipynb"])


def test_a_small_class_without_a_handout_says_so_and_the_handout_fixes_it(tmp_path: Path) -> None:
    from grader.similarity.core import update

    subs = tmp_path / "subs"
    subs.mkdir()
    own = {"0600001": ALICE, "0600002": BOB}
    for sid, cells in own.items():
        nb = _notebook([(HANDOUT[0], ""), (HANDOUT[1], ""), *[(c, "") for c in cells]])
        write_archive(Sample(sid, f"dllab_{sid}.zip", "two honest", {"lab1-1.ipynb": nb}), subs)
    out = tmp_path / "out"
    assert main(["grade", str(subs), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf"]) == 0
    data = json.loads((out / "similarity.json").read_text())
    assert "no handout code is known" in data["warning"]
    handout = tmp_path / "handout.ipynb"
    nbformat.write(_notebook([(HANDOUT[0], ""), (HANDOUT[1], "")]), str(handout))
    result, _ = update(out, handout=[handout])
    assert not result["warning"] and not any(p["flagged"] for p in result["pairs"]), result["pairs"]


def test_a_copied_figure_is_shown_side_by_side() -> None:
    from grader.similarity.core import _figure_src

    assert _figure_src("../runs/0600001/", "lab1-1.ipynb#cell 3 · lab1-1.ipynb/figures/fig 1.png") == \
        "../runs/0600001/lab1-1.ipynb/figures/fig%201.png"
    assert _figure_src("../runs/x/", "lab1-1.ipynb#cell 3 · ../../settings.json") == ""
