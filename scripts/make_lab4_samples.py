"""Writes labs/lab4a/samples/<id>/ and labs/lab4b/samples/<id>/: the Lab 4A and 4B demo classes.

Run from the repository root when the samples change:

    PYTHONPATH=. .venv/bin/python scripts/make_lab4_samples.py [--check]

Each sample is a real notebook, written the way students write these labs (a DataLoader over
torchvision's MNIST / CIFAR10 with ToTensor(), one `model` variable reused for every run), that
trains small: Lab 4A on a 6000-image Subset (batches of 32) for 1 epoch (2 in one run of sample 4a03), Lab 4B on
the `tiny` CIFAR-10 stand-in with an 8-channel CNN, so `dllab demo --lab lab4a` grades the whole
class in a few minutes. The `samples:` blocks of the labs' lab.yaml (archive, outcome, expected
items) are kept by hand. `full_lab4a_notebook()` is the student-style notebook that
bench/bench_lab4.py grades on the whole of MNIST. With --check nothing is written; the exit code
is 1 when the folders differ from what this script writes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

LABS = Path(__file__).resolve().parent.parent / "labs"
MEMBER_TIME = (2026, 6, 1, 12, 0, 0)


def notebook(cells: list[tuple[str, str]], title: str) -> nbformat.NotebookNode:
    """A notebook of ("md" | "code", source) cells with fixed cell ids (the zip stays the same)."""
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}")] + [
        new_markdown_cell(src.strip("\n")) if kind == "md" else new_code_cell(src.strip("\n")) for kind, src in cells])
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write_notebook(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb), encoding="utf-8")
    return path


def zip_folder(folder: Path, path: Path) -> Path:
    """The files under `folder` zipped as `path` (sorted, fixed member dates), as a student hands in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.writestr(zipfile.ZipInfo(p.relative_to(folder).as_posix(), date_time=MEMBER_TIME), p.read_bytes())
    return path


# ---------------------------------------------------------------------------------------------
# Lab 4A: MNIST, MLP

def _4a_data(n_train: int | None, batch_size: int = 64, root: str = "./data") -> str:
    subset = (f"trainset = torch.utils.data.Subset(trainset, range({n_train}))  # a subset, to run fast\n"
              if n_train else "")
    return f'''
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as transforms
import matplotlib.pyplot as plt

transform = transforms.ToTensor()
trainset = torchvision.datasets.MNIST(root='{root}', train=True, download=True, transform=transform)
testset = torchvision.datasets.MNIST(root='{root}', train=False, download=True, transform=transform)
{subset}trainloader = torch.utils.data.DataLoader(trainset, batch_size={batch_size}, shuffle=True)
testloader = torch.utils.data.DataLoader(testset, batch_size=1000, shuffle=False)
print(len(trainset), "training images,", len(testset), "test images")
'''


_4A_HELPERS = r'''
def make_mlp(hidden):
    """hidden: the width of each hidden layer; [] is the linear model (784 -> 10)."""
    layers, n_in = [nn.Flatten()], 28 * 28
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    layers.append(nn.Linear(n_in, 10))
    return nn.Sequential(*layers)


def test(model):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in testloader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(testset)


def train(model, optimizer, epochs, criterion=None, verbose=True):
    criterion = criterion or nn.CrossEntropyLoss()
    curve = []
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for x, y in trainloader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        curve.append(test(model))
        if verbose:
            print(f"  epoch {epoch + 1}: train loss {total / len(trainset):.4f}, test accuracy {100 * curve[-1]:.2f} %")
    return curve
'''

_4A_RUNS_HEAD = r'''
# One run per configuration; every run starts from the same seed and the same recipe
# (SGD, momentum 0.9, cross-entropy) and changes one thing.
runs = [
'''

_4A_RUNS_LOOP = r'''
]
curves, results = {}, {}
for name, hidden, opt, lr, loss_name, epochs in runs:
    torch.manual_seed(0)
    model = make_mlp(hidden)
    if opt == "Adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    criterion = nn.MultiMarginLoss() if loss_name == "multi-margin" else nn.CrossEntropyLoss()
    print(name)
    curves[name] = train(model, optimizer, epochs, criterion)
    results[name] = curves[name][-1]
    print(f"{name}: test accuracy {100 * results[name]:.2f} %")
'''

_4A_TABLE = r'''
print(f"{'run':<34} test accuracy")
for name, acc in results.items():
    print(f"{name:<34} {100 * acc:.2f} %")

for name, curve in curves.items():
    plt.plot(range(1, len(curve) + 1), [100 * a for a in curve], marker="o", label=name)
plt.xlabel("epoch")
plt.ylabel("test accuracy (%)")
plt.legend(fontsize=7)
plt.title("Lab 4A: test accuracy of every run")
plt.show()
'''

_4A_RUN_ROWS = {
    "ex1-mlp": '    ("MLP 784-100-100-10, lr 0.02", [100, 100], "SGD", 0.02, "cross-entropy", EPOCHS),',
    "ex1-linear": '    ("linear 784-10, lr 0.02", [], "SGD", 0.02, "cross-entropy", EPOCHS),',
    "ex2-4": '    ("4 hidden layers of 100", [100, 100, 100, 100], "SGD", 0.02, "cross-entropy", EPOCHS),',
    "ex3-200": '    ("2 hidden layers of 200", [200, 200], "SGD", 0.02, "cross-entropy", EPOCHS),',
    "ex4-0.002": '    ("lr 0.002", [100, 100], "SGD", 0.002, "cross-entropy", EPOCHS),',
    "ex4-0.002-longer": '    ("lr 0.002", [100, 100], "SGD", 0.002, "cross-entropy", EPOCHS + 1),',
    "bonus-adam": '    ("Adam lr 0.001", [100, 100], "Adam", 0.001, "cross-entropy", EPOCHS),',
    "bonus-margin": '    ("multi-margin loss", [100, 100], "SGD", 0.02, "multi-margin", EPOCHS),',
}

_4A_REPORT = """# Lab 4A report

## Results

| exercise | run 1 | run 2 |
|---|---|---|
| 1: MLP vs. linear | MLP | linear |
| 2: hidden layers | 2 | 4 |
| 3: units | 100 | 200 |
| 4: learning rate | 0.002 | 0.02 |

The test accuracies are printed in the notebook, after each run and in one table.

## Analysis

The MLP beats the linear model: its hidden layers with ReLU can draw curved boundaries between
digits that one linear layer cannot. Four hidden layers are not better than two after the same
short training: more layers need more steps. Wider layers help a little. The smaller learning
rate learns more slowly in the same number of epochs.
"""


def lab4a_notebook(rows: list[str], *, n_train: int | None = 6000, batch_size: int = 32, epochs: int = 1, bonus: bool = True,
                   title: str = "Lab 4A: MNIST classification with an MLP") -> nbformat.NotebookNode:
    """The usual one-notebook Lab 4A: data, helpers, every run in one loop, a table and a plot."""
    rows = rows + (["bonus-adam", "bonus-margin"] if bonus else [])
    runs = _4A_RUNS_HEAD + "\n".join(_4A_RUN_ROWS[r] for r in rows) + _4A_RUNS_LOOP
    return notebook([("code", _4a_data(n_train, batch_size)), ("code", _4A_HELPERS + f"\n\nEPOCHS = {epochs}\n"),
                     ("md", "## Exercises 1-4 and the optional one: every run"), ("code", runs),
                     ("md", "## Comparison"), ("code", _4A_TABLE)], title)


def full_lab4a_notebook() -> nbformat.NotebookNode:
    """A student's whole Lab 4A: every run of every exercise and the optional one, on all 60000
    training images, 5 epochs each, through a DataLoader with ToTensor() (bench/bench_lab4.py)."""
    return lab4a_notebook(["ex1-mlp", "ex1-linear", "ex2-4", "ex3-200", "ex4-0.002"], n_train=None, batch_size=64, epochs=5)


def _4a_typed() -> nbformat.NotebookNode:
    """Every run in its own cell; the accuracies are printed from numbers typed into the source."""
    def run_cell(name: str, hidden: str, lr: float, typed: str) -> str:
        return f'''
torch.manual_seed(0)
model = make_mlp({hidden})
optimizer = torch.optim.SGD(model.parameters(), lr={lr}, momentum=0.9)
train(model, optimizer, EPOCHS, verbose=False)
print("{name}: test accuracy {typed} %")
'''
    cells = [("code", _4a_data(6000, 32)), ("code", _4A_HELPERS + "\n\nEPOCHS = 1\n"),
             ("md", "## Exercise 1: MLP vs. linear model"),
             ("code", run_cell("MLP 784-100-100-10, lr 0.02", "[100, 100]", 0.02, "97.80")),
             ("code", run_cell("linear 784-10, lr 0.02", "[]", 0.02, "98.10")),
             ("md", "## Exercise 2: 4 hidden layers"),
             ("code", run_cell("4 hidden layers of 100", "[100, 100, 100, 100]", 0.02, "98.40")),
             ("md", "## Exercise 3: 200 units"),
             ("code", run_cell("2 hidden layers of 200", "[200, 200]", 0.02, "98.30")),
             ("md", "## Exercise 4: learning rate 0.002"),
             ("code", run_cell("lr 0.002", "[100, 100]", 0.002, "96.90"))]
    return notebook(cells, "Lab 4A: MNIST classification with an MLP")


def _4a_crash() -> nbformat.NotebookNode:
    """Exercise 2's 4-layer MLP is built by hand with a wrong input size: its run crashes."""
    ok = lab4a_notebook(["ex1-mlp", "ex1-linear", "ex3-200", "ex4-0.002"], bonus=False)
    crash = r'''
# Exercise 2, run 2: four hidden layers of 100
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(),
                      nn.Linear(784, 100), nn.ReLU(),
                      nn.Linear(100, 100), nn.ReLU(),
                      nn.Linear(200, 100), nn.ReLU(),
                      nn.Linear(100, 100), nn.ReLU(),
                      nn.Linear(100, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
curves["4 hidden layers of 100"] = train(model, optimizer, EPOCHS)
print(f"4 hidden layers of 100: test accuracy {100 * curves['4 hidden layers of 100'][-1]:.2f} %")
'''
    cells = ok.cells[:5] + [new_markdown_cell("## Exercise 2: 4 hidden layers"), new_code_cell(crash.strip("\n"))] \
        + ok.cells[5:]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    ok.cells = cells
    return ok


def lab4a_samples() -> dict[str, dict[str, str]]:
    """sample folder → {file name → text}."""
    nb = nbformat.writes
    full = ["ex1-mlp", "ex1-linear", "ex2-4", "ex3-200", "ex4-0.002"]
    return {
        "4a01": {"lab4a.ipynb": nb(lab4a_notebook(full)), "report.md": _4A_REPORT},
        "4a02": {"lab4a.ipynb": nb(lab4a_notebook(["ex1-mlp", "ex1-linear", "ex2-4", "ex4-0.002"], bonus=False)),
                 "report.md": _4A_REPORT},
        "4a03": {"lab4a.ipynb": nb(lab4a_notebook(["ex1-mlp", "ex1-linear", "ex2-4", "ex3-200", "ex4-0.002-longer"],
                                                  bonus=False)), "report.md": _4A_REPORT},
        "4a04": {"lab4a.ipynb": nb(_4a_typed()), "report.md": _4A_REPORT},
        "4a05": {"lab4a.ipynb": nb(_4a_crash()), "report.md": _4A_REPORT},
    }


# ---------------------------------------------------------------------------------------------
# Lab 4B: CIFAR-10, CNN

_4B_DATA = r'''
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as transforms
import matplotlib.pyplot as plt

transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
trainset = torchvision.datasets.CIFAR10(root='/tmp/datasets-nctu', train=True, download=False, transform=transform)
testset = torchvision.datasets.CIFAR10(root='/tmp/datasets-nctu', train=False, download=False, transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True)
testloader = torch.utils.data.DataLoader(testset, batch_size=500, shuffle=False)
print(len(trainset), "training images,", len(testset), "test images")
'''

_4B_HELPERS = r'''
def make_cnn(conv_layers, channels=8):
    """conv_layers 3x3 Conv2d + ReLU, a 2x2 max-pool after every second one, then two Linear."""
    layers, c_in, side = [], 3, 32
    for i in range(conv_layers):
        layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.ReLU()]
        c_in = channels
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
            side //= 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * side * side, 32), nn.ReLU(), nn.Linear(32, 10))


def accuracy(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def train(model, optimizer, epochs, criterion=None, verbose=False):
    criterion = criterion or nn.CrossEntropyLoss()
    history = {"train": [], "test": []}
    for epoch in range(epochs):
        model.train()
        correct = 0
        for x, y in trainloader:
            optimizer.zero_grad()
            out = model(x)
            loss = criterion(out, y)
            loss.backward()
            optimizer.step()
            correct += (out.argmax(1) == y).sum().item()
        history["train"].append(correct / len(trainset))
        history["test"].append(accuracy(model, testloader))
        if verbose:
            print(f"  epoch {epoch + 1}: train accuracy {100 * history['train'][-1]:.2f} %, "
                  f"test accuracy {100 * history['test'][-1]:.2f} %")
    return history
'''

_4B_ROWS = {
    "base": '    ("2 conv, RMSprop, 10 epochs", 2, "RMSprop", 0.001, 10),',
    "conv4": '    ("4 conv, RMSprop, 10 epochs", 4, "RMSprop", 0.001, 10),',
    "conv4-short": '    ("4 conv, RMSprop, 5 epochs", 4, "RMSprop", 0.001, 5),',
    "sgd": '    ("2 conv, SGD, 10 epochs", 2, "SGD", 0.01, 10),',
    "ep30": '    ("2 conv, RMSprop, 30 epochs", 2, "RMSprop", 0.001, 30),',
    "lr": '    ("2 conv, RMSprop lr 0.0001, 10 epochs", 2, "RMSprop", 0.0001, 10),',
}

_4B_LOOP = r'''
]
histories, results = {}, {}
for name, conv, opt, lr, epochs in runs:
    torch.manual_seed(0)
    model = make_cnn(conv)
    if opt == "SGD":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.RMSprop(model.parameters(), lr=lr)
    histories[name] = train(model, optimizer, epochs)
    results[name] = histories[name]["test"][-1]
    print(f"{name}: test accuracy {100 * results[name]:.2f} %")
'''

_4B_PLOT = r'''
for name, acc in results.items():
    print(f"{name:<40} {100 * acc:.2f} %")

# Exercise 3: does 30 epochs overfit? training and test accuracy of both runs
for name in [n for n in histories if "epochs" in n and n.startswith("2 conv, RMSprop,")]:
    h = histories[name]
    plt.plot(range(1, len(h["train"]) + 1), h["train"], label=f"{name} (train)")
    plt.plot(range(1, len(h["test"]) + 1), h["test"], "--", label=f"{name} (test)")
plt.xlabel("epoch")
plt.ylabel("accuracy")
plt.legend(fontsize=7)
plt.title("10 vs. 30 epochs")
plt.show()
'''

_4B_REPORT = """# Lab 4B report

## Results

Every run's test accuracy is printed in the notebook; the training and test curves of the 10-
and 30-epoch runs are plotted.

## Analysis

Four conv layers learn slower on this little data. RMSprop converges faster than SGD at these
learning rates. After about 10 epochs the training accuracy keeps rising while the test
accuracy stalls: the 30-epoch run overfits.
"""


def lab4b_notebook(rows: list[str]) -> nbformat.NotebookNode:
    runs = "runs = [\n" + "\n".join(_4B_ROWS[r] for r in rows) + _4B_LOOP
    return notebook([("code", _4B_DATA), ("code", _4B_HELPERS), ("md", "## Exercises 1-3 and the optional one"),
                     ("code", runs), ("md", "## Comparison"), ("code", _4B_PLOT)],
                    "Lab 4B: CIFAR-10 classification with a CNN")


def _4b_typed() -> nbformat.NotebookNode:
    nb = lab4b_notebook(["base", "conv4", "sgd", "ep30"])
    typed = r'''
# the accuracies of my runs
print("2 conv, RMSprop, 10 epochs: test accuracy 71.30 %")
print("4 conv, RMSprop, 10 epochs: test accuracy 75.60 %")
print("2 conv, SGD, 10 epochs: test accuracy 68.20 %")
print("2 conv, RMSprop, 30 epochs: test accuracy 73.90 %")
'''
    loop = nb.cells[4].source.replace('    print(f"{name}: test accuracy {100 * results[name]:.2f} %")\n', "")
    loop = loop.replace('    print(f"{name}: test accuracy {100 * results[name]:.2f} %")', "")
    nb.cells[4].source = loop.rstrip("\n")
    nb.cells[6].source = typed.strip("\n")
    return nb


def lab4b_samples() -> dict[str, dict[str, str]]:
    nb = nbformat.writes
    return {
        "4b01": {"lab4b.ipynb": nb(lab4b_notebook(["base", "conv4", "sgd", "ep30", "lr"])), "report.md": _4B_REPORT},
        "4b02": {"lab4b.ipynb": nb(lab4b_notebook(["base", "conv4", "ep30"])), "report.md": _4B_REPORT},
        "4b03": {"lab4b.ipynb": nb(lab4b_notebook(["base", "conv4-short", "sgd", "ep30"])), "report.md": _4B_REPORT},
        "4b04": {"lab4b.ipynb": nb(_4b_typed()), "report.md": _4B_REPORT},
    }


def expected() -> dict[Path, bytes]:
    """Every sample file's path → bytes."""
    out = {}
    for lab, samples in (("lab4a", lab4a_samples()), ("lab4b", lab4b_samples())):
        for folder, files in samples.items():
            for name, text in files.items():
                out[LABS / lab / "samples" / folder / name] = text.encode("utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the folders differ")
    args = ap.parse_args(argv)
    want = expected()
    roots = [LABS / "lab4a" / "samples", LABS / "lab4b" / "samples"]
    have = {p: p.read_bytes() for r in roots if r.is_dir() for p in sorted(r.rglob("*")) if p.is_file()}
    if args.check:
        same = have == want
        print("labs/lab4a|lab4b/samples match this script" if same else "labs/lab4a|lab4b/samples differ from this script")
        return 0 if same else 1
    for r in roots:
        if r.exists():
            shutil.rmtree(r)
    for path, data in want.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(want)} files under {', '.join(str(r) for r in roots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
