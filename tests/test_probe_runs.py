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
folder = base / "verify"
folder.mkdir()
x = next(iter(trainloader))[0]
with sys.modules["_dllab_probe_export"]._quiet():  # as the teardown calls it
    runs = probe_runs.export_runs(str(folder), x, x)
json.dump({"sums": sums, "kept": probe_torch._MAX_KEPT, "max_runs": probe_runs.MAX_RUNS, "runs": runs,
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
