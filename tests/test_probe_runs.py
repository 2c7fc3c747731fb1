"""What each training run did, as the probe records it (issue 15): the loss a training session
computed and the sum of its values, where in the cell's stdout a session and an optimizer's steps
fall (`out_at`), the lr of an optimizer's first step, the in/out sizes of a model's layers, and
one captured model per run up to the rubric's `limits.captured_runs`.

The scenarios run as small "student" scripts in a fresh interpreter (tests/test_probe.py's way);
the stdout offsets are checked against the grader's own stream handling without a kernel, and one
kernel test runs a tiny MNIST notebook through the grader's sandboxed runner.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import nbformat
import pytest

from grader.capture import collapse_cr, join_stream
from grader.probe.recorder import _OutCount
from test_probe import _run_script

# ---------------------------------------------------------------- stdout offsets


def test_output_count_is_the_length_of_what_the_grader_keeps() -> None:
    """The count after each write is the length of the cell's stdout as execute's client stores it
    (messages joined, carriage-return overwrites applied), so its offsets cut that text."""
    rng = random.Random(0)
    pieces = ["epoch 1", "\r", "\n", "batch 3/10", "\rbatch 4/10", "loss 0.25\n", "\r\n", "ab\rc",
              "x\r\ry", "done\r", "", "\n\n", "é", "\rover\n"]
    for _ in range(200):
        count, written, stored = _OutCount(), "", ""
        for _ in range(rng.randrange(1, 12)):
            text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 4)))
            count.add(text)
            written += text
            stored = join_stream(stored, text) if stored else collapse_cr(text)
            assert count.n == len(collapse_cr(written)) == len(stored), repr(written)


def test_output_count_offsets_cut_each_epoch_line_out_of_a_progress_bar() -> None:
    count, stored, marks = _OutCount(), "", []
    for epoch in range(3):
        for batch in range(4):
            text = f"\rbatch {batch}/4"
            count.add(text)
            stored = join_stream(stored, text) if stored else collapse_cr(text)
        marks.append(count.n)
        text = f"\repoch {epoch} loss {1.0 / (epoch + 1):.3f}\n"
        count.add(text)
        stored = join_stream(stored, text)
    lines = stored.splitlines()
    assert lines == [f"epoch {e} loss {1.0 / (e + 1):.3f}" for e in range(3)]
    # the line an epoch's last batch was on is the line it printed its result on
    assert [stored[:m].count("\n") for m in marks] == [0, 1, 2]


# ---------------------------------------------------------------- losses, dims, lr, captured runs

_RUNS = """
import json
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
probe_torch, probe_runs = sys.modules["_dllab_probe_torch"], sys.modules["_dllab_probe_runs"]
torch.manual_seed(0)
base = Path(sys.argv[1])
data = torch.utils.data.TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
trainloader = torch.utils.data.DataLoader(data, batch_size=16)


class Smoothed(nn.CrossEntropyLoss):  # a student's loss class: named by its own class
    pass


def make(width):
    if width is None:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 64, width), nn.ReLU(), nn.Linear(width, 10))


cross_entropy = nn.CrossEntropyLoss()
sums = []
for width, kind, lr in ((None, "module", 0.1), (32, "functional", 0.05), (16, "subclass", 0.02)):
    model = make(width)  # one name for every run's model, shapes differ
    model.data = data  # a dataset the model holds is not copied with it
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    smoothed = Smoothed(label_smoothing=0.1)
    for epoch in range(2):
        total = 0.0
        for x, y in trainloader:
            optimizer.zero_grad()
            out = model(x)
            if kind == "module":
                loss = cross_entropy(out, y)
                total += loss.item()
            elif kind == "functional":  # a penalty term after the loss: not summed in
                nll = F.nll_loss(F.log_softmax(out, 1), y)
                loss = nll + 0.01 * F.mse_loss(out, torch.zeros_like(out))
                total += nll.item()
            else:
                loss = smoothed(out, y)
                total += loss.item()
            loss.backward()
            optimizer.step()
        sums.append(total)
        scheduler.step()
with torch.no_grad():  # an unreduced loss in an evaluation: its mean per batch
    sums.append(sum(F.cross_entropy(model(x), y, reduction="none").mean().item() for x, y in trainloader))


class WithLoss(nn.Module):  # TorchScript still compiles code calling the wrapped losses
    def __init__(self):
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, out, y):
        return F.cross_entropy(out, y) + self.ce(out, y)


scripted = torch.jit.script(WithLoss())(torch.zeros(2, 3), torch.tensor([0, 1])).item()
folder = base / "verify"
folder.mkdir()
x = next(iter(trainloader))[0]
with sys.modules["_dllab_probe_export"]._quiet():  # as the teardown calls it
    runs = probe_runs.export_runs(str(folder), x, x)
json.dump({"sums": sums, "scripted": scripted, "kept": probe_torch._MAX_KEPT, "max_runs": probe_runs.MAX_RUNS, "runs": runs,
           "preds": model.eval()(x).argmax(1).tolist()}, open(base / "out.json", "w"))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs")
    run = _run_script(root, _RUNS, caps={"max_runs": 2})
    return run, json.loads((root / "out.json").read_text())


def test_each_session_records_its_loss_and_the_sum_of_its_values(runs) -> None:
    run, out = runs
    training = run.summary["training"]
    assert [t["loss"] for t in training] == ["CrossEntropyLoss"] * 2 + ["nll_loss"] * 2 + ["Smoothed"] * 2
    assert [t["loss_n"] for t in training] == [4] * 6
    assert [t["loss_sum"] for t in training] == pytest.approx(out["sums"][:6], rel=1e-5)
    [evaluation] = [e for e in run.summary["evaluations"] if e.get("loss")]
    assert (evaluation["loss"], evaluation["loss_n"]) == ("cross_entropy", 4)
    assert evaluation["loss_sum"] == pytest.approx(out["sums"][6], rel=1e-5)
    assert all("out_at" not in t for t in training)  # no kernel: stdout is not counted
    assert out["scripted"] == pytest.approx(2 * math.log(3))
    assert run.summary["probe"]["errors"] == 0


def test_models_carry_their_layer_sizes_and_optimizers_their_first_lr(runs) -> None:
    run, _ = runs
    models = run.summary["models"]
    assert models[0]["dims"] == [["0", "Flatten", None, None], ["1", "Linear", 64, 10]]
    assert models[1]["dims"] == [["0", "Conv2d", 1, 4], ["1", "ReLU", None, None], ["2", "Flatten", None, None],
                                 ["3", "Linear", 256, 32], ["4", "ReLU", None, None], ["5", "Linear", 32, 10]]
    opts = [o for o in run.summary["optimizers"] if o["steps"]]
    assert [o["lr_first"] for o in opts] == [0.1, 0.05, 0.02]
    assert [o["lr_changes"][-1][1] for o in opts] == pytest.approx([0.05, 0.025, 0.01])
    assert [o["model_ref"] for o in opts] == [m["ref"] for m in models[:3]]


def test_captured_runs_follow_the_cap_and_rebuild_models_no_longer_alive(runs) -> None:
    _, out = runs
    assert out["kept"] == out["max_runs"] == 2
    first, second, third = out["runs"]
    assert "released" in first["error"]
    # the 32-wide run's model was dropped when `model` was rebound, and no live model has its
    # shapes: it is rebuilt from the copy made without weights
    assert second["file"] == "run1.pt" and second["class"] == "Sequential", second
    assert third["sample_preds"] == out["preds"]


def test_the_rubric_limit_of_captured_runs_reaches_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grader import execute
    from grader.pipeline import GradeSettings, _execute
    from grader.rubric import load_rubric

    class Started(Exception):
        pass

    def run_notebook(path: Path, *, startup_code: str, **kw: object) -> None:
        raise Started(startup_code)

    monkeypatch.setattr(execute, "run_notebook", run_notebook)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "mlp.ipynb")
    rubric = load_rubric(Path(__file__).parent / "labs" / "mnist_mlp" / "rubric.yaml")
    settings = GradeSettings(rubric_path=Path("rubric.yaml"), out=tmp_path)
    for cap in (None, 9):
        lab = rubric if cap is None else rubric.model_copy(
            update={"limits": rubric.limits.model_copy(update={"captured_runs": cap})})
        with pytest.raises(Started) as started:
            _execute(tmp_path / "mlp.ipynb", "mlp.ipynb", submission_dir=tmp_path, run_dir=tmp_path / "run",
                     settings=settings, rubric=lab)
        assert f"'max_runs': {cap or 6}" in str(started.value)  # LAB01 keeps 6


# ---------------------------------------------------------------- a real notebook

_DATA = """
import torch, torchvision, torchvision.transforms as T
import torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
transform = T.Compose([T.ToTensor(), T.Normalize((0.13,), (0.31,))])
trainset = torchvision.datasets.MNIST(root='/tmp/datasets-nctu', train=True, download=False, transform=transform)
testset = torchvision.datasets.MNIST(root='/tmp/datasets-nctu', train=False, download=False, transform=transform)
trainloader = DataLoader(Subset(trainset, range(256)), batch_size=64, shuffle=True)
testloader = DataLoader(testset, batch_size=500)


def mlp(widths):
    layers, d = [nn.Flatten()], 784
    for w in widths:
        layers += [nn.Linear(d, w), nn.ReLU()]
        d = w
    return nn.Sequential(*layers, nn.Linear(d, 10))


def train(model, optimizer, loss_fn, epochs):
    for epoch in range(epochs):
        total, n = 0.0, 0
        for i, (x, y) in enumerate(trainloader):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total, n = total + loss.item(), n + 1
            print(f"\\rbatch {i + 1}/4", end="")
        print(f"\\repoch {epoch + 1} loss {total / n:.6f}")


def test(model):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in testloader:
            correct += (model(x).argmax(1) == y).sum().item()
    print(f"accuracy {100 * correct / len(testset):.2f} %")
"""

_LOOP = """
for name, widths, loss_fn in (("linear", [], nn.CrossEntropyLoss()), ("mlp", [32], F.cross_entropy),
                              ("deep", [32, 32], nn.CrossEntropyLoss())):
    torch.manual_seed(0)
    model = mlp(widths)  # one name for every run's model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    print(f"run {name}")
    train(model, optimizer, loss_fn, 2)
    test(model)
"""

_AGAIN = """
model = mlp([16])
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
train(model, optimizer, lambda out, y: F.nll_loss(F.log_softmax(out, 1), y), 1)
test(model)
"""


@pytest.mark.kernel
def test_a_notebook_of_runs_in_a_loop_and_a_rerun_cell_is_recorded_run_by_run(tmp_path: Path, tiny_datasets: Path) -> None:
    """Issue 15: three runs built in a loop under one name (a module loss, a functional one),
    each printing a progress bar and a line per epoch, then a cell run twice. Each run is one
    optimizer with its own captured model; each epoch's session carries its loss and the offsets
    that cut its printed line out of the cell's stdout as the grader stored it."""
    from grader.evidence import read_events, summarize_events
    from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec, run_notebook
    from grader.probe.recorder import bootstrap_source
    from grader.verify import teardown_source

    sub = tmp_path / "sub"
    sub.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s.strip("\n")) for s in (_DATA, _LOOP, _AGAIN, _AGAIN)])
    nbformat.write(nb, sub / "lab4a.ipynb")
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig"))
    out = tmp_path / "out"
    result = run_notebook(sub / "lab4a.ipynb", submission_dir=sub, out_dir=out,
                          spec=SandboxSpec(mounts={"/tmp/datasets-nctu/MNIST": str(tiny_datasets / "MNIST")}),
                          limits=SandboxLimits(cell_timeout_s=120, wall_timeout_s=300),
                          startup_code=startup, teardown_code=teardown_source())
    assert result.status == "ok", result.reason
    events, warnings = read_events(out / "probe" / "events.jsonl")
    summary = summarize_events(events)
    assert warnings == [] and summary["probe"]["errors"] == 0
    executed = nbformat.read(out / "executed.ipynb", as_version=4)
    count = [c.execution_count for c in executed.cells]
    stdout = {count[i]: "".join(o.text for o in executed.cells[i].outputs
                                if o.output_type == "stream" and o.name == "stdout") for i in range(4)}
    assert "\r" not in stdout[count[1]] and stdout[count[1]].count("epoch") == 6

    training = summary["training"]
    assert [(t["cell"], t["loss"], t["loss_n"]) for t in training] == (
        [(count[1], "CrossEntropyLoss", 4)] * 2 + [(count[1], "cross_entropy", 4)] * 2
        + [(count[1], "CrossEntropyLoss", 4)] * 2 + [(count[2], "nll_loss", 4), (count[3], "nll_loss", 4)])
    for t in training:  # each epoch's session ends on the line that printed that epoch's mean loss
        text = stdout[t["cell"]]
        start, end = t["out_at"]
        line = text[text.rfind("\n", 0, end) + 1:].split("\n")[0]
        assert line.startswith("epoch "), (line, t)
        assert float(line.split()[-1]) == pytest.approx(t["loss_sum"] / t["loss_n"], abs=2e-6)
        assert (start == 0 or text[start - 1] == "\n") and start <= end  # it began on a fresh line

    opts = [o for o in summary["optimizers"] if o["steps"]]
    assert len(opts) == 5 and [o["lr_first"] for o in opts] == [0.05] * 3 + [0.01] * 2
    assert [o["cells_stepped"] for o in opts] == [[count[1]]] * 3 + [[count[2]], [count[3]]]
    for o, name in zip(opts[:3], ("linear", "mlp", "deep")):  # the run's steps lie between its header and its result
        text = stdout[count[1]]
        first, last = o["out_at"]
        assert text[:first].endswith(f"run {name}\n")
        assert text[last:].split("\n")[1].startswith("accuracy")
    dims = {m["ref"]: m["dims"] for m in summary["models"]}
    assert dims[opts[2]["model_ref"]] == [["0", "Flatten", None, None], ["1", "Linear", 784, 32], ["2", "ReLU", None, None],
                                           ["3", "Linear", 32, 32], ["4", "ReLU", None, None], ["5", "Linear", 32, 10]]
    spec = json.loads((out / "probe" / "verify" / "spec.json").read_text())
    assert [r.get("file") for r in spec["runs"]] == [f"run{k}.pt" for k in range(5)], spec["runs"]
    assert [r["optimizer"] for r in spec["runs"]] == [o["ref"] for o in opts]
