"""What the host measures on each run model (issue 15 B): digest, parameter shapes, graph ops.

No kernel: tiny models written by the test as TorchScript (scripted, traced) and torch.export
files, measured by the evaluator's own functions, validated by the host (grader.verify.runs),
and once end to end: MNIST run models through `verify_run`'s evaluator subprocess (no sandbox),
scored on the tiny MNIST stand-in with its ten digit classes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader.execute import SandboxLimits, SandboxSpec
from grader.hidden_split import resolve_hidden
from grader.verify import verify_run
from grader.verify.data import Split, write_inputs
from grader.verify.evaluator import (
    MAX_GRAPH_NODES,
    MAX_OP_NAMES,
    _eval_facts,
    _eval_op_name,
    _eval_ops,
    _eval_predict,
    evaluator_source,
)
from grader.verify.runs import check_facts, run_facts, runs_block


class MLP(nn.Module):
    """784-32-16-10, two hidden layers, F.relu in forward (no ReLU module to see)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(784, 32), nn.Linear(32, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Linear(nn.Module):
    """A linear model: one layer, no activation."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class CNN(nn.Module):
    """Two convolutions, each ReLU (a module and a function) then max pooling, a dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3)
        self.act, self.pool, self.drop = nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.c1(x)))
        x = self.pool(F.relu(self.c2(x)))
        return self.fc(self.drop(x.flatten(1)))


X = torch.zeros(2, 1, 28, 28)


def _save(model: nn.Module, how: str, path: Path) -> Path:
    model.eval()
    if how == "export":
        torch.export.save(torch.export.export(model, (X,)), str(path))
    else:
        torch.jit.save(torch.jit.script(model) if how == "script" else torch.jit.trace(model, X), str(path))
    return path


def _load(path: Path, how: str) -> Any:
    return torch.export.load(str(path)).module() if how == "export" else torch.jit.load(str(path))


def _facts(model: nn.Module, how: str, tmp_path: Path) -> dict[str, Any]:
    fmt = "export" if how == "export" else "torchscript"
    path = _save(model, how, tmp_path / f"{type(model).__name__}-{how}.pt")
    got = check_facts(json.loads(json.dumps(_eval_facts(_load(path, fmt), fmt))))
    assert isinstance(got, dict), got
    return got


HOWS = ("script", "trace", "export")


@pytest.mark.parametrize("how", HOWS)
def test_ops_and_shapes_tell_an_mlp_a_linear_model_and_a_cnn_apart(tmp_path: Path, how: str) -> None:
    torch.manual_seed(0)
    mlp, lin, cnn = (_facts(m, how, tmp_path) for m in (MLP(), Linear(), CNN()))
    # F.relu in forward() is in the graph, as often as it ran
    assert (mlp["ops"]["linear"], mlp["ops"]["relu"]) == (3, 2) and "conv2d" not in mlp["ops"], mlp["ops"]
    assert mlp["shapes"] == {"fc1.weight": [32, 784], "fc1.bias": [32], "fc2.weight": [16, 32], "fc2.bias": [16],
                             "out.weight": [10, 16], "out.bias": [10]}
    assert lin["ops"]["linear"] == 1 and not {"relu", "sigmoid", "tanh", "conv2d"} & set(lin["ops"]), lin["ops"]
    assert lin["shapes"] == {"fc.weight": [10, 784], "fc.bias": [10]}
    # nn.ReLU and F.relu alike; tracing's aten::_convolution is named conv2d by its stride
    assert {k: cnn["ops"].get(k) for k in ("conv2d", "relu", "max_pool2d", "dropout", "linear")} == {
        "conv2d": 2, "relu": 2, "max_pool2d": 2, "dropout": 1, "linear": 1}, cnn["ops"]
    assert cnn["shapes"]["c2.weight"] == [8, 4, 3, 3] and list(cnn["shapes"])[:2] == ["c1.weight", "c1.bias"]
    # the graph's bookkeeping is not an operator
    assert not any(k.startswith(("prim", "Constant", "GetAttr")) for k in cnn["ops"])
    assert all(f["ops_complete"] for f in (mlp, lin, cnn))


def test_one_set_of_weights_has_one_digest_and_one_changed_weight_another(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP()
    digests = {how: _facts(model, how, tmp_path)["digest"] for how in HOWS}
    assert len(set(digests.values())) == 1, digests  # however it was captured
    twin = MLP()
    twin.load_state_dict(model.state_dict())  # another object, the same weights: one model
    assert _facts(twin, "script", tmp_path)["digest"] == digests["script"]
    with torch.no_grad():
        twin.fc2.weight[3, 7] += 1e-3
    assert _facts(twin, "script", tmp_path)["digest"] != digests["script"]
    torch.manual_seed(0)
    assert _facts(MLP(), "trace", tmp_path)["digest"] == digests["trace"]  # the same seed, the same init
    # the parameters, not the buffers: a copy whose BatchNorm statistics moved in forward passes
    # at lr 0 is the same model; one parameter changed is another
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    before = _facts(bn, "script", tmp_path)["digest"]
    bn.train()(torch.randn(4, 1, 28, 28))
    assert _facts(bn, "trace", tmp_path)["digest"] == before
    with torch.no_grad():
        bn[1].weight[0] = 2.0
    assert _facts(bn, "export", tmp_path)["digest"] != before


@pytest.mark.parametrize("how", ("script", "export"))
def test_the_graph_walk_is_bounded(tmp_path: Path, how: str) -> None:
    fmt = "export" if how == "export" else "torchscript"
    model = _load(_save(CNN(), how, tmp_path / "cnn.pt"), fmt)
    full, complete = _eval_ops(model, fmt)
    assert complete and full["conv2d"] == 2
    few, complete = _eval_ops(model, fmt, max_nodes=4)
    assert not complete and sum(few.values()) < sum(full.values())
    two, complete = _eval_ops(model, fmt, max_names=2)
    assert not complete and len(two) == 2 and all(two[k] == full[k] for k in two)
    # the evaluator's source is sent alone: its caps are written in it, and are these
    import inspect

    defaults = inspect.signature(_eval_ops).parameters
    assert (defaults["max_nodes"].default, defaults["max_names"].default) == (MAX_GRAPH_NODES, MAX_OP_NAMES)


def test_the_evaluator_measures_only_when_asked(tmp_path: Path) -> None:
    torch.manual_seed(0)
    for name in ("model.pt", "run0.pt"):
        _save(Linear(), "script", tmp_path / name)
    pixels = np.zeros((3, 28, 28), dtype=np.uint8)
    inputs = write_inputs(tmp_path, [Split("mnist", (0, 1, 2), (0, 1, 2), pixels=pixels)])
    job = {"format": "torchscript", "steps": [{"op": "ToTensor", "family": "v1"}], "flatten_input": False,
           "storage": inputs.storage, "mode": inputs.mode, "count": 3}
    assert "facts" not in _eval_predict(job, str(tmp_path))  # the primary verification: predictions only
    result = _eval_predict(dict(job, facts=True, runs=[{"file": "run0.pt", "format": "torchscript"}]), str(tmp_path))
    primary, run = run_facts(result, 1)
    assert isinstance(primary, dict) and isinstance(run, dict) and primary["digest"] != run["digest"]
    assert run["shapes"] == {"fc.weight": [10, 784], "fc.bias": [10]}


class InPlace(nn.Module):
    """A linear model that overwrites its input before using it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(-1.0).add_(3.0)
        return self.fc(x.flatten(1))


def _digits_job(folder: Path, models: list[nn.Module], *, flatten: bool = False, count: int = 250) -> dict[str, Any]:
    """A job on `count` random 28x28 images (batches of 100, the last one short): the first of
    `models` as model.pt, the others as its run models, all scripted."""
    folder.mkdir()
    for k, model in enumerate(models):
        _save(model, "script", folder / ("model.pt" if k == 0 else f"run{k - 1}.pt"))
    pixels = np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    inputs = write_inputs(folder, [Split("mnist", tuple(i % 10 for i in range(count)), tuple(range(count)),
                                         pixels=pixels)])
    return {"format": "torchscript", "flatten_input": flatten, "storage": inputs.storage, "mode": inputs.mode,
            "count": count, "facts": True,
            "steps": [{"op": "ToTensor", "family": "v1"},
                      {"op": "Normalize", "family": "v1", "mean": [0.1307], "std": [0.3081]}],
            "runs": [{"file": f"run{k}.pt", "format": "torchscript"} for k in range(len(models) - 1)]}


@pytest.mark.parametrize("flatten", (False, True))
def test_a_jobs_models_share_one_transform_of_each_batch_with_the_same_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flatten: bool) -> None:
    """Issue 21: the images are transformed once for all of a job's models, as long as they fit
    the budget; predictions, parameters and facts are those of each model transforming its own."""
    import inspect

    from grader.verify import evaluator

    torch.manual_seed(0)
    models = [MLP(), Linear(), MLP()] if flatten else [CNN(), MLP(), Linear()]
    job = _digits_job(tmp_path / "job", models, flatten=flatten)
    images, batch = evaluator._eval_image, evaluator._eval_tensor_batch
    calls = []
    monkeypatch.setattr(evaluator, "_eval_image", lambda *a: calls.append(a[-1]) or images(*a))

    def batched(job: dict, pixels: Any, start: int, stop: int, transform: Any) -> Any:
        xb = batch(job, pixels, start, stop, transform)
        if xb is not None:  # transformed as one tensor (_eval_tensor_batch), all the same
            calls.extend(range(start, stop))
        return xb
    monkeypatch.setattr(evaluator, "_eval_tensor_batch", batched)
    results, transformed = [], []
    one_batch = 100 * (784 if flatten else 28 * 28) * 4  # float32: the first batch fits, the second not
    for budget in (evaluator.BATCH_CACHE_BYTES, 0, one_batch):
        calls.clear()
        results.append(_eval_predict(job, str(tmp_path / "job"), cache_bytes=budget))
        transformed.append(len(calls))
    assert results[0] == results[1] == results[2]
    assert len(results[0]["runs"]) == 2 and all("predictions" in r for r in results[0]["runs"]), results[0]["runs"]
    assert transformed == [250, 750, 750]
    assert inspect.signature(_eval_predict).parameters["cache_bytes"].default == evaluator.BATCH_CACHE_BYTES
    calls.clear()
    alone = _eval_predict(dict(job, runs=[]), str(tmp_path / "job"))  # one model: nothing kept
    assert alone["predictions"] == results[0]["predictions"] and len(calls) == 250


def test_a_model_that_changes_its_input_in_place_changes_no_other_models_predictions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    inplace, linear = InPlace(), Linear()
    job = _digits_job(tmp_path / "job", [inplace, linear, inplace, linear])
    result = _eval_predict(job, str(tmp_path / "job"))
    # each model transforming its own images, as before issue 21 (write_inputs shuffles the
    # images of each folder it writes: the same folder, to compare predictions)
    expected = _eval_predict(job, str(tmp_path / "job"), cache_bytes=0)
    assert result == expected
    first, again, second = (r["predictions"] for r in result["runs"])
    assert first == second != again == result["predictions"]


def test_op_names_are_short() -> None:
    assert [_eval_op_name(k) for k in ("aten::relu_", "aten.linear.default", "aten::conv2d", "prim::Constant",
                                       "aten.flatten.using_ints", "quantized::linear", "aten::__getitem__")] == [
        "relu", "linear", "conv2d", "", "flatten", "quantized.linear", "__getitem__"]
    assert "_eval_facts" in evaluator_source() and "_eval_ops" in evaluator_source()


def test_malformed_or_failed_facts_are_a_reason_not_data() -> None:
    good = {"digest": "a" * 64, "shapes": {"fc.weight": [10, 784]}, "ops": {"linear": 1}, "ops_complete": True}
    assert check_facts(good) == good
    for bad in (dict(good, digest="A" * 64), dict(good, shapes={"w": [-1]}), dict(good, ops={"linear": 0}),
                dict(good, ops={"x" * 81: 1}), dict(good, ops={f"op{i}": 1 for i in range(65)}),
                dict(good, ops_complete=1), dict(good, extra=1), None):
        assert check_facts(bad) == "the evaluator's structure of its model is malformed", bad
    assert check_facts({"error": "RuntimeError: x"}) == "the evaluator could not measure its structure (RuntimeError: x)"
    result = {"facts": good, "runs": [{"predictions": [1], "facts": good}, {"error": "boom"}]}
    assert run_facts(result, 2) == [good, good, "the evaluator did not run its model"]
    assert run_facts({"facts": good}, 1) == [good, "the evaluator did not run its model"]


def test_runs_block_puts_each_runs_structure_in_its_entry() -> None:
    split = Split("mnist", tuple(i % 10 for i in range(50)), tuple(range(50)))
    job = {"sample_keys": [], "mapping": list(range(10)), "kind": "mnist"}
    preds = [[list(split.labels)], [list(split.labels)]]
    facts = {"digest": "b" * 64, "shapes": {"fc.weight": [10, 784]}, "ops": {"linear": 1}, "ops_complete": True}
    runs = [{"optimizer": 3, "class": "Net", "sample_preds": [], "path": Path("a"), "format": "torchscript"},
            {"optimizer": 5, "class": "Net", "sample_preds": [], "path": Path("b"), "format": "torchscript"},
            {"optimizer": 7, "reason": "not captured"}]
    out = runs_block(runs, preds, job, split, None, [facts, "the evaluator could not measure its structure (x)"])
    assert out[0]["digest"] == "b" * 64 and out[0]["ops"] == {"linear": 1} and out[0]["classes"] == 10
    assert "digest" not in out[1] and out[1]["facts_reason"].startswith("the evaluator could not measure")
    assert out[2] == {"optimizer": 7, "reason": "not captured"}


def test_mnist_run_models_are_evaluated_and_measured_by_the_host(tmp_path: Path, tiny_datasets: Path) -> None:
    """End to end but for the kernel: spec.json and three run models (the same weights scripted
    and traced, then one weight changed) as the teardown writes them, evaluated in the
    evaluator's own process on MNIST's test split read by the host."""
    torch.manual_seed(0)
    model = MLP()
    verify = tmp_path / "probe" / "verify"
    verify.mkdir(parents=True)
    _save(model, "script", verify / "model.pt")
    shutil.copyfile(verify / "model.pt", verify / "run0.pt")
    _save(model, "trace", verify / "run1.pt")
    with torch.no_grad():
        model.fc1.weight[0, 0] += 0.5
    _save(model, "export", verify / "run2.pt")
    runs = [{"optimizer": 10 + k, "class": "MLP", "capture": how, "file": f"run{k}.pt",
             "bytes": (verify / f"run{k}.pt").stat().st_size, "sample_preds": []}
            for k, how in enumerate(("script", "trace", "export"))]
    spec = {"version": 1,
            "model": {"class": "MLP", "capture": "script", "file": "model.pt", "bytes": 1, "errors": [],
                      "input_shape": [1, 28, 28], "flatten_input": False},
            "dataset": {"class": "MNIST", "root": "/tmp/dataset-nctu", "train": False, "length": 100,
                        "classes": [str(d) for d in range(10)], "subset": False},
            "transform": {"steps": [{"op": "ToTensor", "family": "v1"},
                                    {"op": "Normalize", "family": "v1", "mean": [0.1307], "std": [0.3081]}],
                          "unknown": []},
            "sample": {"keys": [], "preds": []}, "runs": runs + [{"optimizer": 20, "error": "not captured"}]}
    (verify / "spec.json").write_text(json.dumps(spec))
    mounts = {"/tmp/dataset-nctu/MNIST": str(tiny_datasets / "MNIST")}
    hidden = resolve_hidden({"mnist": mounts["/tmp/dataset-nctu/MNIST"]}, {})
    block = verify_run(run_dir=tmp_path, probe_dir=tmp_path / "probe", spec=SandboxSpec(mounts=mounts, sandbox="none"),
                       limits=SandboxLimits(), dataset_hint="mnist", hidden=hidden)
    assert "reason" not in block, block
    assert (block["dataset"], block["split"]) == ("mnist", "test") and len(block["per_class_accuracy"]) <= 10
    assert block["hidden_n"] > 0, block
    got = block["runs"]
    assert [r["optimizer"] for r in got] == [10, 11, 12, 20] and got[3] == {"optimizer": 20, "reason": "not captured"}
    first, traced, changed = got[:3]
    assert all(r["classes"] == 10 and r["n"] == block["test_images"] and r["hidden_n"] == block["hidden_n"]
               for r in got[:3]), got
    assert first["test_accuracy"] == traced["test_accuracy"] == block["test_accuracy"]
    assert first["hidden_accuracy"] == block["hidden_accuracy"]
    assert first["digest"] == traced["digest"] != changed["digest"]
    assert first["agreement"]["11"] == 1.0
    assert first["shapes"]["fc1.weight"] == [32, 784] and changed["shapes"] == first["shapes"]
    for r in got[:3]:
        assert (r["ops"]["linear"], r["ops"]["relu"]) == (3, 2), r["ops"]


@pytest.mark.parametrize("shape", [(7, 32, 32, 3), (7, 28, 28)])
@pytest.mark.parametrize("normalize", [False, True])
def test_a_batch_of_stored_images_is_transformed_as_torchvision_transforms_each_image(shape, normalize) -> None:
    from grader.verify.evaluator import _eval_build_transform, _eval_image, _eval_tensor_batch

    pixels = np.random.default_rng(3).integers(0, 256, size=shape, dtype=np.uint8)
    channels = 3 if len(shape) == 4 else 1
    steps = [{"op": "ToTensor", "family": "v1"}] + (
        [{"op": "Normalize", "family": "v1", "mean": [0.4914, 0.4822, 0.4465][:channels],
          "std": [0.247, 0.2435, 0.2616][:channels]}] if normalize else [])
    job = {"steps": steps, "storage": "npy"}
    transform = _eval_build_transform(steps)
    each = torch.stack([transform(_eval_image(job, "", pixels, i)) for i in range(1, 6)])
    batch = _eval_tensor_batch(job, pixels, 1, 6, transform)
    assert batch.dtype == each.dtype and torch.equal(batch, each)  # bit for bit


def test_other_transform_steps_go_through_pil_image_by_image() -> None:
    from grader.verify.evaluator import _eval_build_transform, _eval_tensor_batch

    pixels = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    for steps in ([{"op": "Resize", "family": "v1", "size": [16, 16]}, {"op": "ToTensor", "family": "v1"}],
                  [{"op": "ToImage", "family": "v2"}, {"op": "ToDtype", "family": "v2", "dtype": "float32", "scale": True}],
                  [{"op": "Normalize", "family": "v1", "mean": [0.5] * 3, "std": [0.5] * 3}]):
        job = {"steps": steps, "storage": "npy"}
        assert _eval_tensor_batch(job, pixels, 0, 4, _eval_build_transform(steps)) is None
    steps = [{"op": "ToTensor", "family": "v1"}]
    assert _eval_tensor_batch({"steps": steps, "storage": "files"}, None, 0, 4, _eval_build_transform(steps)) is None
