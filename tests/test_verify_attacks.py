"""Attacks on the independent evaluation (issue 13 B and C), and the evaluator's contracts.

B: the model file is written by student code, so nothing in it may run outside the evaluator's
sandbox (a torch.export archive with pickled weights is refused before anything loads it), and
nothing the evaluated model prints, reads or returns can set an accuracy: the evaluator sees no
label and returns predictions only; the host scores them.
C: a model that memorized the visible test split scores ~100 % on it and chance on the
grader-only hidden split: flagged (`hidden-gap`), graded on the hidden split, never full marks.

One kernel test runs a real memorizing notebook through the sandbox, the teardown and the
evaluator, then feeds forged model files to the same evaluator; the rest is unit-level.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
import torch

from grader import sandbox
from grader.checks.base import CheckContext
from grader.checks.metrics import accuracy_vs_reference, metrics_verified
from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec, run_notebook
from grader.hidden_split import check_hidden, default_folder, resolve_hidden
from grader.probe.recorder import bootstrap_source
from grader.verify import (
    NotVerified,
    check_result,
    gap_test,
    hidden_block,
    read_spec,
    teardown_source,
    valid_parameters,
    verify_run,
)
from grader.verify.archive import model_format
from grader.verify.data import Split, read_split, write_inputs
from grader.verify.evaluator import _eval_predict
from grader.verify.host import _result_line

CIFAR_MOUNT = "/tmp/dataset-nctu/cifar-10-batches-py"


class Tiny(torch.nn.Module):
    """An honest little model, scriptable and exportable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 30 * 30, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv1(x)).flatten(1))


class Forger(torch.nn.Module):
    """Prints the evaluator's result line, in the old format and the new, and predicts class 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print('{"ok": true, "n": 500, "per_class": [[50, 50]], "same": 0, "compared": 0}')
        print('{"ok": true, "predictions": [], "parameters": {}}')
        out = torch.zeros(x.shape[0], 10)
        out[:, 3] = 1.0
        return out


class LabelReader(torch.nn.Module):
    """Reads the labels from the CIFAR-10 test batch where the notebook had it mounted."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = torch.from_file("/tmp/dataset-nctu/cifar-10-batches-py/test_batch", size=4096, dtype=torch.uint8)
        return torch.zeros(x.shape[0], 10) + raw[:10].float()


class HashMemorizer(torch.nn.Module):
    """C, another kind: keyed on a hash of each visible test image (its pixel sum)."""

    def __init__(self, sums: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("sums", sums)
        self.register_buffer("labels", labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = x.flatten(1).sum(1)
        idx = (key[:, None] - self.sums[None, :]).abs().argmin(1)
        return torch.nn.functional.one_hot(self.labels[idx], 10).float()


# ---------------------------------------------------------------- B: the model file


def _export_archive(path: Path) -> None:
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(2, 3, 32, 32),)), str(path))


class _Payload:
    """Unpickling this runs code: what the issue's crafted model.pt did in the evaluator."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        code = (f"open({str(self.marker)!r}, 'w').write('ran'); import os\n"
                "for fd in range(3, 12):\n"
                "    try: os.write(fd, b'{\"ok\": true, \"n\": 500, \"per_class\": [[475, 500]], \"same\": 0, "
                "\"compared\": 0}\\n')\n"
                "    except OSError: pass\n")
        return (exec, (code,))


def _rewrite(src: Path, dst: Path, change: Any) -> None:
    """Copy a zip, letting `change(name, data)` return new bytes (or None to drop the entry)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)


def _pickled_export(tmp_path: Path, marker: Path) -> Path:
    """The issue's attack: a torch.export archive whose weight_0 is `use_pickle` and runs code."""
    honest, crafted = tmp_path / "honest.pt", tmp_path / "crafted.pt"
    _export_archive(honest)

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            doc = json.loads(data)
            doc["config"]["conv1.weight"]["use_pickle"] = True
            return json.dumps(doc).encode()
        if name.endswith("data/weights/weight_0"):
            buf = io.BytesIO()
            torch.save(_Payload(marker), buf)
            return buf.getvalue()
        return data

    _rewrite(honest, crafted, change)
    return crafted


def test_model_files_that_could_run_code_are_refused_before_loading(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = _pickled_export(tmp_path, marker)
    with pytest.raises(NotVerified, match="pickled \\(use_pickle\\)"):
        model_format(crafted)
    assert not marker.exists()
    _export_archive(tmp_path / "e.pt")
    torch.jit.save(torch.jit.script(Tiny()), str(tmp_path / "s.pt"))
    assert (model_format(tmp_path / "e.pt"), model_format(tmp_path / "s.pt")) == ("export", "torchscript")
    # same kind: a torch.save pickle, native AOTInductor code, a graph calling torch.os.system,
    # a shape expression sympy would eval, sample inputs naming os.system
    torch.save(Tiny(), tmp_path / "pickled.pt")
    with pytest.raises(NotVerified, match="pickled model"):
        model_format(tmp_path / "pickled.pt")
    cases = {
        "aoti": lambda n, d: d,  # plus a shared library, below
        "target": lambda n, d: d.replace(b"torch.ops.aten.conv2d.default", b"torch.os.system")
        if n.endswith("models/model.json") else d,
        "sample": lambda n, d: _evil_sample() if n.endswith("sample_inputs/model.pt") else d,
    }
    for label, change in cases.items():
        _rewrite(tmp_path / "e.pt", tmp_path / f"{label}.pt", change)
    with zipfile.ZipFile(tmp_path / "aoti.pt", "a") as zf:
        zf.writestr("e/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(NotVerified, match="aotinductor"):
        model_format(tmp_path / "aoti.pt")
    with pytest.raises(NotVerified, match="torch.os.system"):
        model_format(tmp_path / "target.pt")
    with pytest.raises(NotVerified, match="posix system|os system"):
        model_format(tmp_path / "sample.pt")


def _evil_sample() -> bytes:
    buf = io.BytesIO()
    torch.save(_Shell(), buf)
    return buf.getvalue()


class _Shell:
    def __reduce__(self) -> tuple[Any, ...]:
        import os
        return (os.system, ("true",))


def test_the_evaluators_result_is_predictions_validated_once(tmp_path: Path) -> None:
    ok = {"ok": True, "predictions": [1, 2], "parameters": {}}
    assert check_result(ok, 2) == [1, 2]
    with pytest.raises(NotVerified, match="one predicted class"):
        check_result(dict(ok, predictions=[1, 2, 3]), 2)
    with pytest.raises(NotVerified, match="one predicted class"):
        check_result(dict(ok, predictions=[1, -1]), 2)
    line = json.dumps(ok).encode()
    assert _result_line(line + b"\n", b"", 0) == ok
    with pytest.raises(NotVerified, match="more than one result line"):
        _result_line(line + b"\n" + line + b"\n", b"", 0)


# ---------------------------------------------------------------- A: the parameters contract


def test_parameter_statistics_follow_the_contract(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tiny().eval()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "model.pt"))
    pixels = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    inputs = write_inputs(tmp_path, [Split("cifar10", (0,) * 7, tuple(range(7)), pixels=pixels)])
    job = {"format": "torchscript", "steps": [{"op": "ToTensor", "family": "v1"}], "flatten_input": False,
           "storage": inputs.storage, "mode": inputs.mode, "count": 7}
    result = json.loads(json.dumps(_eval_predict(job, str(tmp_path)), allow_nan=False))
    preds = check_result(result, 7)
    from torchvision.transforms.functional import to_tensor

    want = model(torch.stack([to_tensor(pixels[i]) for _, i in inputs.order])).argmax(1).tolist()
    assert preds == want
    params = result["parameters"]
    assert list(params) == ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias"] and valid_parameters(params)
    w = model.conv1.weight.detach().double().flatten()
    st = params["conv1.weight"]
    assert st["numel"] == 108 and st["min"] == w.min().item() and st["max"] == w.max().item()
    assert st["std"] == pytest.approx(w.std(correction=0).item()) and st["mean"] == pytest.approx(w.mean().item())
    q = torch.quantile(w, torch.linspace(0, 1, 257, dtype=torch.float64))
    assert st["quantiles"] == pytest.approx(q.tolist())
    # a non-finite parameter gets no statistics; a malformed block is refused
    with torch.no_grad():
        model.fc.bias[0] = float("nan")
    from grader.verify.evaluator import _eval_parameters

    assert _eval_parameters(model)["fc.bias"] == {"numel": 10, "finite": False}
    huge = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        huge.weight.fill_(1e300)
        huge.weight[0, 0] = -1e300
    assert _eval_parameters(huge)["weight"] == {"numel": 4, "finite": False}  # its std overflows
    bad = dict(params, **{"conv1.weight": dict(st, quantiles=st["quantiles"][::-1])})
    assert not valid_parameters(bad)
    assert not valid_parameters({"w": dict(st, std=float("nan"))})
    assert not valid_parameters({f"p{i}": {"numel": 1, "finite": False} for i in range(257)})


# ---------------------------------------------------------------- C: the hidden split


def test_the_gap_criterion_needs_both_size_and_significance() -> None:
    assert gap_test((500, 500), (52, 500))[1] > 20                 # the memorizer
    assert hidden_block(_split(500), [0] * 500, _split(500), [0] * 500, list(range(10)), reason=None)[
        "hidden_gap_flagged"] is False                            # same on both
    flagged = hidden_block(_split(500), list(_split(500).labels), _split(500), [0] * 500, list(range(10)), reason=None)
    assert flagged["hidden_gap_flagged"] is True and flagged["hidden_accuracy"] == 0.1 and flagged["hidden_n"] == 500
    few = hidden_block(_split(10), _noisy(_split(10), 0.6), _split(10), _noisy(_split(10), 0.4), list(range(10)),
                       reason=None)
    assert few["hidden_gap"] == 0.2 and few["hidden_gap_flagged"] is False  # 20 points, but of 10 images
    honest = hidden_block(_split(500), _noisy(_split(500), 0.62), _split(500), _noisy(_split(500), 0.58),
                          list(range(10)), reason=None)
    assert honest["hidden_gap_flagged"] is False                  # 4 points of sampling noise
    assert hidden_block(_split(5), [0] * 5, None, None, list(range(10)), reason="none given") == {
        "hidden_reason": "none given"}


def _split(n: int) -> Split:
    return Split("cifar10", tuple(i % 10 for i in range(n)), tuple(range(n)))


def _noisy(split: Split, accuracy: float) -> list[int]:
    right = int(accuracy * len(split))
    return [y if i < right else (y + 1) % 10 for i, y in enumerate(split.labels)]


def test_a_flagged_gap_is_graded_on_the_hidden_split_and_sent_to_a_ta() -> None:
    verified = {"test_accuracy": 1.0, "per_class_accuracy": {}, "hidden_accuracy": 0.1, "hidden_n": 500,
                "hidden_gap_flagged": True, "dataset": "cifar10"}
    ev = {"path": "lab.ipynb", "status": "ok", "verified": verified, "metrics": {"test_accuracy": 1.0}}
    ctx = CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10", evidence=[ev])
    acc = accuracy_vs_reference(ctx, {"floor": 0.4})
    assert acc.status in ("fail", "manual") and acc.fraction == 0.0 and "hidden-gap" in acc.flags
    # on the hidden split it would pass: full points wait for a TA
    high = dict(ev, verified=dict(verified, hidden_accuracy=0.8))
    held = accuracy_vs_reference(CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10",
                                              evidence=[high]), {"floor": 0.4})
    assert (held.status, held.fraction, held.flags) == ("manual", 0.0, ("hidden-gap",)) and "80.0 %" in held.message
    assert "10.0 %" in acc.message and "hidden" in acc.message
    check = metrics_verified(ctx, {})
    assert (check.status, check.flags) == ("manual", ("hidden-gap",))
    unflagged = dict(ev, verified=dict(verified, hidden_gap_flagged=False, hidden_accuracy=0.98))
    ok = accuracy_vs_reference(CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10",
                                            evidence=[unflagged]), {"floor": 0.4})
    assert ok.status == "pass" and "hidden-gap" not in ok.flags


def test_synth_writes_a_hidden_split_that_grade_finds_and_students_never_see(tmp_path: Path) -> None:
    from grader.datasets import synth

    synth(tmp_path / "a", size="tiny", seed=0, names=["cifar10"])
    synth(tmp_path / "b", size="tiny", seed=0, names=["cifar10"], hidden=False)
    visible = tmp_path / "a" / "cifar-10-batches-py"
    # the visible files are what they were before hidden splits existed
    assert (visible / "test_batch").read_bytes() == (tmp_path / "b" / "cifar-10-batches-py" / "test_batch").read_bytes()
    hidden = resolve_hidden({"cifar10": str(visible)}, {})
    assert hidden == {"cifar10": str(default_folder(visible).resolve())}
    shown, held = read_split("cifar10", visible), read_split("cifar10", Path(hidden["cifar10"]))
    assert len(held) == len(shown) == 500 and sorted(set(held.labels)) == list(range(10))
    assert not np.array_equal(held.pixels, shown.pixels)
    from grader.errors import DatasetError

    with pytest.raises(DatasetError, match="sandbox mounts"):
        check_hidden([str(visible / "sub")], [str(visible)])
    with pytest.raises(DatasetError, match="sandbox mounts"):  # the visible split named as the hidden one
        resolve_hidden({"cifar10": str(visible)}, {"cifar10": visible})
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="no hidden cifar10"):
        resolve_hidden({"cifar10": str(visible)}, {"cifar10": tmp_path / "nothing"})


def test_a_deeply_nested_spec_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "probe" / "verify" / "spec.json"
    path.parent.mkdir(parents=True)
    path.write_text("[" * 20000 + "]" * 20000)
    with pytest.raises(NotVerified, match="nested too deeply"):
        read_spec(path)
    got = verify_run(run_dir=tmp_path, probe_dir=tmp_path / "probe", spec=SandboxSpec(), limits=SandboxLimits(),
                     dataset_hint="cifar10")
    assert set(got) == {"reason"} and "nested too deeply" in got["reason"]


# ---------------------------------------------------------------- end to end (kernel + sandbox)


MEMORIZER = r'''
import torch, torchvision, torch.nn as nn
import torchvision.transforms as transforms
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
testset = torchvision.datasets.CIFAR10(root='/tmp/dataset-nctu', train=False, download=False, transform=transform)
testloader = torch.utils.data.DataLoader(testset, batch_size=100, shuffle=False)
images = torch.cat([x for x, _ in testloader]).flatten(1)
labels = torch.cat([y for _, y in testloader])

class Nearest(nn.Module):
    def __init__(self, keys, values):
        super().__init__()
        self.register_buffer("keys", keys)
        self.register_buffer("values", values)
        self.scale = nn.Parameter(torch.ones(1))  # a model has parameters

    def forward(self, x):
        idx = torch.cdist(x.flatten(1), self.keys).argmin(1)
        return nn.functional.one_hot(self.values[idx], 10).float() * self.scale

net = Nearest(images, labels)
correct = total = 0
with torch.no_grad():
    for x, y in testloader:
        correct += (net(x).argmax(1) == y).sum().item()
        total += y.numel()
print('Accuracy of the network on the %d test images: %.2f %%' % (total, 100 * correct / total))
'''


@pytest.fixture(scope="module")
def cifar_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny stand-in CIFAR-10 with its hidden split, readable by the sandbox's uid."""
    from grader.datasets import synth

    data = tmp_path_factory.mktemp("attack-data")
    synth(data, size="tiny", seed=0, names=["cifar10"])
    for d in (data, *data.iterdir(), *(data / "dllab-hidden").iterdir()):  # pytest and synth make 0700 folders
        d.chmod(0o755)
        for f in d.iterdir():
            f.chmod(f.stat().st_mode | 0o444)
    return data / "cifar-10-batches-py"


@pytest.fixture(scope="module")
def cifar(cifar_data: Path) -> Path:
    try:
        sandbox.check_bwrap()
    except Exception as exc:  # noqa: BLE001 # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    return cifar_data


def test_a_model_keyed_on_an_image_hash_is_flagged(tmp_path: Path, cifar_data: Path) -> None:
    # C, another kind: the evaluator's own prediction code on the host (the sandbox run is the
    # kernel test's), scored by the host against the visible and the hidden split
    visible, held = read_split("cifar10", cifar_data), read_split("cifar10", default_folder(cifar_data))
    norm = [{"op": "ToTensor", "family": "v1"},
            {"op": "Normalize", "family": "v1", "mean": [0.5] * 3, "std": [0.5] * 3}]
    sums = torch.stack([(torch.from_numpy(visible.pixels[i]).permute(2, 0, 1).float() / 255 - 0.5).div(0.5).sum()
                        for i in range(len(visible))])
    torch.jit.save(torch.jit.script(HashMemorizer(sums, torch.tensor(visible.labels))), str(tmp_path / "model.pt"))
    inputs = write_inputs(tmp_path, [visible, held])
    job = {"format": "torchscript", "steps": norm, "flatten_input": False, "storage": inputs.storage,
           "mode": inputs.mode, "count": len(inputs.order)}
    preds = check_result(_eval_predict(job, str(tmp_path)), len(inputs.order))
    back: list[list[int]] = [[0] * len(visible), [0] * len(held)]
    for pos, (s, i) in enumerate(inputs.order):
        back[s][i] = preds[pos]
    block = hidden_block(visible, back[0], held, back[1], list(range(10)), reason=None)
    seen = sum(p == y for p, y in zip(back[0], visible.labels)) / len(visible)
    assert seen > 0.9 and block["hidden_gap_flagged"] is True, (seen, block)
    print("hash memorizer: visible", seen, "hidden", block["hidden_accuracy"])


def _forged(run: Path, name: str, model: Path) -> Path:
    """A copy of the run's probe folder whose model.pt is `model`, and no sampled predictions to
    cross-check (a forger writes spec.json too)."""
    probe = run / name
    shutil.copytree(run / "probe" / "verify", probe / "verify")
    spec = json.loads((probe / "verify" / "spec.json").read_text())
    spec["sample"] = {"keys": [], "preds": [], "labels": []}
    (probe / "verify" / "spec.json").write_text(json.dumps(spec))
    shutil.copyfile(model, probe / "verify" / "model.pt")
    return probe


@pytest.mark.kernel
def test_memorized_or_forged_models_never_set_the_measured_accuracy(tmp_path: Path, cifar: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(MEMORIZER.strip())]), sub / "lab.ipynb")
    spec = SandboxSpec(mounts={CIFAR_MOUNT: str(cifar)})
    limits = SandboxLimits(cell_timeout_s=120, wall_timeout_s=300)
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig"))
    out = tmp_path / "out"
    result = run_notebook(sub / "lab.ipynb", submission_dir=sub, out_dir=out, spec=spec, limits=limits,
                          startup_code=startup, teardown_code=teardown_source())
    assert result.status == "ok", result.reason
    hidden = {"cifar10": str(default_folder(cifar))}
    visible = read_split("cifar10", cifar)

    def verify(probe: Path) -> dict[str, Any]:
        return verify_run(run_dir=out, probe_dir=probe, spec=spec, limits=limits, dataset_hint="cifar10",
                          hidden=hidden)

    # C: the nearest-stored-image memorizer, captured by the real teardown
    memorized = verify(out / "probe")
    assert "reason" not in memorized, memorized
    assert memorized["test_accuracy"] == 1.0 and memorized["sample_agreement"] == 1.0, memorized
    # On these stand-ins the nearest stored image is often of the right class (a 1-NN classifier), so
    # the hidden accuracy is above chance, yet far below the visible 100 %: flagged.
    assert memorized["hidden_accuracy"] <= 0.9 and memorized["hidden_gap_flagged"] is True, memorized
    ev = {"path": "lab.ipynb", "status": "ok", "verified": memorized, "metrics": {"test_accuracy": 1.0}}
    ctx = CheckContext(student_id="s", part_id="lab1-1", dataset="cifar10", evidence=[ev])
    graded = accuracy_vs_reference(ctx, {"floor": 0.4})
    assert graded.status != "pass" and graded.fraction < 1.0 and "hidden-gap" in graded.flags
    print("memorizer: visible", memorized["test_accuracy"], "hidden", memorized["hidden_accuracy"])

    # B: the pickled export never runs, on the host or in the evaluator
    marker = tmp_path / "ran"
    refused = verify(_forged(out, "pickled", _pickled_export(tmp_path, marker)))
    assert set(refused) == {"reason", "cell"} and "use_pickle" in refused["reason"] and not marker.exists()

    # B, other kinds, evaluated side by side (two sandboxes, as a batch runs them)
    torch.jit.save(torch.jit.script(Forger()), str(tmp_path / "forger.pt"))
    torch.jit.save(torch.jit.script(LabelReader()), str(tmp_path / "reader.pt"))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        forged, reader = pool.map(verify, [_forged(out, "forger", tmp_path / "forger.pt"),
                                           _forged(out, "reader", tmp_path / "reader.pt")])
    # a model printing result lines is scored on what it predicts (class 3)
    assert forged["test_accuracy"] == round(visible.labels.count(3) / len(visible), 4), forged
    assert forged["hidden_accuracy"] < 0.2
    # the labels are nowhere the evaluated model can read them: no dataset is mounted there
    assert "test_accuracy" not in reader and "evaluator failed" in reader["reason"], reader


def test_grade_finds_the_hidden_split_and_refuses_one_students_would_see(tmp_path: Path, cifar_data: Path) -> None:
    from grader.cli import main
    from grader.samples import lab1_samples, write_archive

    sample = next(s for s in lab1_samples(epochs=1) if s.student_id == "0556002")
    zips = tmp_path / "subs"
    write_archive(sample, zips)
    # `--data NAME=DIR` as before: the dllab-hidden sibling is found and kept in settings.json
    base = ["grade", str(zips), "--lab", "lab1", "--mode", "saved", "--no-pdf", "--data", f"cifar10={cifar_data}"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["hidden"] == {"cifar10": str(default_folder(cifar_data).resolve())}
    # a hidden split inside a mounted dataset folder is a configuration error, before any grading
    inside = cifar_data / "held-back"
    shutil.copytree(default_folder(cifar_data), inside)
    try:
        assert main([*base, "--hidden", f"cifar10={inside}", "--out", str(tmp_path / "b")]) == 2
    finally:
        shutil.rmtree(inside)
    assert not (tmp_path / "b" / "grades.csv").exists()
