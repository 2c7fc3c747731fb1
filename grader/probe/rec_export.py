"""Probe part: captures the trained model for an independent evaluation (teardown only).

Runs inside the kernel as `_dllab_probe_export`; see recorder.py for the rules. It patches
nothing and records nothing while the notebook runs: `export(folder)` is called once, by the
grader's teardown code after the last student cell (`recorder.export_for_verification`).
It picks the model of the last evaluation over a test split (else the last model trained),
and the dataset that evaluation read, then writes to `folder`:

- `model.pt`: the model on the CPU in eval mode, as TorchScript (`torch.jit.script`, else
  `torch.jit.trace` on a batch of the test data) or else as a `torch.export` program;
- `spec.json`: the dataset (class, root, split, classes), the test transform as data (known
  steps with their parameters; anything else is listed as unknown), and the student model's
  own predictions on the first test images, for the host's cross-check.

The student's model is never changed: the work is done on a deep copy (or, when a model
cannot be copied, on the model itself with its train/eval flags restored). The probe's own
hooks are kept quiet meanwhile, so the teardown adds no evaluation or model events.
"""

from __future__ import annotations

import contextlib
import copy
import json
import numbers
import os
import re
import sys
import warnings

HOOK_MODULES = ()
SPEC_VERSION = 1
SAMPLE_SIZE = 64
EXAMPLE_BATCH = 2
_MAX_EVENTS_READ = 32 * 2**20

_core = None
# Transforms rebuilt by the evaluator: class name -> the attributes it needs.
_KNOWN_STEPS = {
    "ToTensor": (), "PILToTensor": (), "ToImage": (), "ToPureTensor": (),
    "ConvertImageDtype": ("dtype",), "ToDtype": ("dtype", "scale"),
    "Normalize": ("mean", "std"), "Resize": ("size", "interpolation", "max_size", "antialias"),
    "CenterCrop": ("size",), "Grayscale": ("num_output_channels",),
}
_WRAPPERS = ("DataParallel", "DistributedDataParallel")
_MODE_LAYERS = re.compile(r"BatchNorm|Dropout|InstanceNorm")  # train() and eval() differ


def setup(core):
    global _core
    _core = core


def tracked():
    return ()


def patch():
    return None


def flush(reason):
    return None


def cell_end():
    return None


def at_exit():
    return None


# ---------------------------------------------------------------- entry point


def export(folder):
    """Write `model.pt` and `spec.json` to `folder`; returns a one-line summary."""
    os.makedirs(folder, exist_ok=True)
    spec = {"version": SPEC_VERSION}
    try:
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec.update(_export(folder))
    except _Refusal as exc:
        spec = {"version": SPEC_VERSION, "error": str(exc)[:500]}
    except Exception as exc:  # noqa: BLE001 - a bug here must not look like the student's
        spec = {"version": SPEC_VERSION, "error": "the export code failed: " + _exc_text(exc)}
    with open(os.path.join(folder, "spec.json"), "w", encoding="utf-8") as fh:
        json.dump(spec, fh, allow_nan=False)
    said = spec.get("error") or "exported " + spec["model"]["class"] + " via " + spec["model"]["capture"]
    runs = sys.modules.get(_core.PROBE_NAME + "_runs")
    if runs is not None and getattr(runs, "SPLIT_RUNS", 0):  # a dataset the student splits: splits.json
        with _quiet(), warnings.catch_warnings():  # never fails: it writes its own error
            warnings.simplefilter("ignore")
            said += "; " + runs.export_splits(folder, spec.get("runs") or [])
    return said


class _Refusal(Exception):
    """The model cannot be exported; the message is the reason, for the TA."""


@contextlib.contextmanager
def _quiet():
    """No probe events from our own forward passes, copies and traces."""
    t = sys.modules.get(_core.PROBE_NAME + "_torch")
    tls = getattr(_core, "_tls", None)
    old_busy = getattr(tls, "busy", False)
    old_note = getattr(t, "_note_forward", None)
    if tls is not None:
        tls.busy = True  # `guarded` steps (first forward of a new module) do nothing
    if old_note is not None:
        t._note_forward = lambda *a: None
    try:
        yield
    finally:
        if old_note is not None:
            t._note_forward = old_note
        if tls is not None:
            tls.busy = old_busy


def _exc_text(exc):
    text = (type(exc).__name__ + ": " + str(exc)).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# ---------------------------------------------------------------- choosing model and dataset


def _events():
    st = _core.state()
    path = getattr(st, "events_path", None)
    out = []
    if not path or not os.path.isfile(path):
        return out
    with open(path, "rb") as fh:
        data = fh.read(_MAX_EVENTS_READ)
    for line in data.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and ev.get("kind") in ("evaluation", "training"):
            out.append(ev)
    return out


def _live_objects():
    """Probe ref -> the live object (models, datasets, loaders)."""
    t = sys.modules[_core.PROBE_NAME + "_torch"]
    objs = {}
    for table in (t._by_id, t._mods):
        for wr, rec in list(table.values()):
            obj = wr()
            if obj is not None and rec is not None and rec.ref is not None:
                objs.setdefault(rec.ref, obj)
    return objs


def _choose(events, objs):
    """(model, dataset, evaluation event or None), the best candidates still alive."""
    evals = [e for e in events if e.get("kind") == "evaluation" and _split_of(e, objs) == "test"
             and objs.get(e.get("model")) is not None]

    def whole(e):  # a pass over most of its dataset, not a peek at one batch
        ds = objs.get(e.get("dataset"))
        try:
            return ds is not None and e.get("samples", 0) >= 0.5 * len(ds)
        except Exception:  # noqa: BLE001 - an unsized dataset
            return False

    pick = next((e for e in reversed(evals) if whole(e)), evals[-1] if evals else None)
    if pick is not None:
        ds = objs.get(pick.get("dataset"))
        return objs[pick["model"]], ds if ds is not None else _test_dataset(objs), pick
    trained = [e for e in events if e.get("kind") == "training" and objs.get(e.get("model")) is not None]
    if not trained:
        raise _Refusal("no model was evaluated on a test split, and no trained model was left "
                       "at the end of the notebook")
    return objs[trained[-1]["model"]], _test_dataset(objs), None


def _split_of(e, objs):
    """An evaluation's split: as recorded, else from the names its loader or dataset is bound
    to (`testloader`), as the host reads them."""
    if e.get("split"):
        return e["split"]
    for ref in (e.get("loader"), e.get("dataset")):
        split = _name_split(objs.get(ref))
        if split:
            return split
    return None


def _name_split(obj):
    if obj is None:
        return None
    names = [n.lower() for n in _core.names_for(obj)]
    for needle in ("test", "val", "train"):  # the order of grader.evidence._split_hint
        if any(needle in n for n in names):
            return needle
    return None


def _test_dataset(objs):
    t = sys.modules[_core.PROBE_NAME + "_torch"]
    best = None
    for wr, rec in list(t._by_id.values()):
        obj = wr()
        if obj is None or rec.kind != "dataset":
            continue
        split = getattr(rec, "split", None) or _name_split(obj)
        if split == "test" and (best is None or rec.ref > best[0]):
            best = (rec.ref, obj)
    if best is None:
        raise _Refusal("no model was evaluated on a test split, and no test split was loaded")
    return best[1]


def _files_of(ds):
    """(the list of files a student's own dataset reads, entry -> path), one file per item, or None."""
    data = sys.modules.get(_core.PROBE_NAME + "_data")
    found = data.file_list(ds, getattr(ds, "root", None)) if data is not None else None
    try:
        if found is None or len(found[1]) != len(ds):
            return None
    except Exception:  # noqa: BLE001 - an unsized dataset
        return None
    return found[1], found[2]


def _base_dataset(ds):
    """The dataset under Subsets and wrappers (`.dataset`) that reads the data: a torchvision
    dataset, or a student's own class holding one file per item; and whether it was wrapped."""
    wrapped = False
    first = type(ds).__name__
    for _ in range(6):
        cls = type(ds)
        if cls.__module__.startswith("torchvision.datasets") or _files_of(ds) is not None:
            return ds, wrapped
        inner = getattr(ds, "dataset", None)
        if inner is None or inner is ds:
            break
        ds, wrapped = inner, True
    raise _Refusal("the test data is a " + first + " (a class of the notebook's own that holds no "
                   "list of image files, one per item), which the grader cannot rebuild")


# ---------------------------------------------------------------- describing the dataset


def _describe_dataset(ds):
    cls = type(ds).__name__
    root = getattr(ds, "root", None)
    root = os.path.abspath(os.fspath(root)) if isinstance(root, (str, os.PathLike)) else None
    classes = getattr(ds, "classes", None)
    custom = not type(ds).__module__.startswith("torchvision.datasets")
    out = {"class": cls, "root": root, "train": getattr(ds, "train", None)
           if isinstance(getattr(ds, "train", None), bool) else None,
           "length": len(ds), "classes": [str(c)[:64] for c in classes[:200]]
           if isinstance(classes, (list, tuple)) else [],
           "files_dir": None, "default_loader": None, "custom": custom}
    if cls in ("ImageFolder", "DatasetFolder"):
        loader = getattr(ds, "loader", None)
        folder_mod = sys.modules.get("torchvision.datasets.folder")
        out["default_loader"] = loader is getattr(folder_mod, "default_loader", object())
        dirs = {os.path.dirname(os.path.realpath(path)) for path, _ in list(ds.samples)[:100000]}
        out["files_dir"] = dirs.pop() if len(dirs) == 1 else None
    elif custom:
        seq, resolve = _files_of(ds)
        dirs = {os.path.dirname(os.path.realpath(resolve(e))) for e in list(seq)[:100000]}
        out["files_dir"] = dirs.pop() if len(dirs) == 1 else None
    return out


def _sample_indices(ds, n):
    """Which items the host's cross-check compares: the first `n`, or for a student's own
    dataset `n` spread over all of it, so that its labels are seen for every class."""
    total = len(ds)
    if type(ds).__module__.startswith("torchvision.datasets") or total <= n:
        return list(range(n))
    return sorted({k * total // n for k in range(n)})


def _sample_key(ds, i, files):
    if files is not None:  # a student's own dataset: (its list of files, entry -> path)
        return os.path.basename(files[1](files[0][i]))
    samples = getattr(ds, "samples", None)
    if isinstance(samples, list):
        return os.path.basename(samples[i][0])
    return i


# ---------------------------------------------------------------- the transform as data


def _steps(t, out, unknown, depth=0):
    if t is None:
        return
    cls = type(t)
    name = cls.__name__
    mod = cls.__module__
    if depth > 6:
        unknown.append(repr(t)[:200])
        return
    if name == "Compose" and mod.startswith("torchvision.transforms"):
        for sub in list(t.transforms)[:50]:
            _steps(sub, out, unknown, depth + 1)
        return
    if name not in _KNOWN_STEPS or not mod.startswith("torchvision.transforms"):
        unknown.append(repr(t)[:200])
        return
    step = {"op": name, "family": "v2" if ".v2" in mod else "v1"}
    for attr in _KNOWN_STEPS[name]:
        step[attr] = _plain(getattr(t, attr, None))
    out.append(step)


def _plain(v):
    """A transform parameter as JSON data (dtypes and InterpolationMode by name)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v][:16]
    value = getattr(v, "value", None)  # InterpolationMode
    if isinstance(value, str):
        return value
    if type(v).__name__ == "dtype":
        return str(v).replace("torch.", "")
    if isinstance(v, dict):  # v2.ToDtype may map input types to dtypes
        return "unsupported"
    return "unsupported"


def _describe_transform(ds):
    steps, unknown = [], []
    _steps(getattr(ds, "transform", None), steps, unknown)
    if getattr(ds, "target_transform", None) is not None:
        unknown.append("target_transform=" + repr(ds.target_transform)[:200])
    if any("unsupported" in json.dumps(s) for s in steps):
        unknown.append("a parameter of " + ", ".join(s["op"] for s in steps))
    tensor_ops = ("ToTensor", "PILToTensor", "ToImage")
    if not unknown and not any(s["op"] in tensor_ops for s in steps):
        unknown.append("no step turns the image into a tensor")
    try:
        text = repr(getattr(ds, "transform", None))[:1000]
    except Exception:  # noqa: BLE001 - a student transform's __repr__
        text = "?"
    return {"steps": steps, "unknown": unknown, "repr": text}


# ---------------------------------------------------------------- capturing the model


def _cpu_copy(model):
    """(a CPU copy in eval mode, undo) — undo restores the original when no copy was made."""
    torch = sys.modules["torch"]
    while type(model).__name__ in _WRAPPERS and hasattr(model, "module"):
        model = model.module
    try:
        dup = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - a module holding something uncopyable
        dup = None
    if dup is not None:
        return dup.to(torch.device("cpu")).eval(), lambda: None
    flags = [(m, m.training) for m in model.modules()]
    devices = {p.device for p in model.parameters()}
    if any(d.type != "cpu" for d in devices):
        raise _Refusal("the model could not be copied to the CPU for export")

    def undo():
        for m, training in flags:
            m.training = training
    return model.eval(), undo


def _first_tensor(out):
    torch = sys.modules["torch"]
    for _ in range(3):
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, (list, tuple)) and out:
            out = out[0]
        elif isinstance(out, dict) and out:
            out = out.get("logits", next(iter(out.values())))
        else:
            break
    raise _Refusal("the model's output is not a tensor of class scores")


def _capture(model, example, check, want, path):
    """Save `model` to `path`; returns (capture kind, errors of the ways that failed).

    A capture must give `want` (the model's scores) on `check`, a bigger batch than the
    `example` a trace sees, so a trace that baked in a batch size or a constant fails."""
    torch = sys.modules["torch"]
    errors = []
    for kind in ("script", "trace"):
        try:
            if kind == "script":
                captured = torch.jit.script(model)
            else:
                captured = torch.jit.trace(model, (example,), check_trace=False)
            _same(captured, check, want)
            torch.jit.save(captured, path)
            return kind, errors
        except Exception as exc:  # noqa: BLE001 - try the next way
            errors.append(kind + ": " + _exc_text(exc))
    try:
        from torch.export import Dim, export as torch_export, save

        batch = Dim("batch", min=1, max=4096)
        try:
            program = torch_export(model, (example,), dynamic_shapes=({0: batch},))
            _same(program.module(), check, want)
        except Exception as exc:  # noqa: BLE001 - a batch-size-specialized model
            errors.append("export (dynamic batch): " + _exc_text(exc))
            program = torch_export(model, (example,))  # the evaluator pads to this batch size
            _same(program.module(), example, want[:example.shape[0]])
        save(program, path)
        return "export", errors
    except Exception as exc:  # noqa: BLE001
        errors.append("export: " + _exc_text(exc))
    raise _Refusal("the model could not be exported (" + "; ".join(errors)[:400] + ")")


def _same(captured, check, want):
    torch = sys.modules["torch"]
    with torch.no_grad():
        got = _first_tensor(captured(check))
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4):
        raise ValueError("the captured model computes something else than the model")


def _export(folder):
    torch = sys.modules.get("torch")
    if torch is None:
        raise _Refusal("the notebook never imported torch")
    objs = _live_objects()
    events = _events()
    model, ds, ev = _choose(events, objs)
    spec, batch, example = _export_model(folder, "model.pt", model, ds, ev)
    extra = sys.modules[_core.PROBE_NAME + "_runs"]  # rec_runs.py: the other models captured
    spec["runs"] = extra.export_runs(folder, batch, example)
    extra.export_more(folder, events, objs, ds)
    return spec


def _export_model(folder, file_name, model, ds, ev):
    """Capture `model` (evaluated by event `ev` on `ds`) to `file_name`: (its spec, the sample
    batch, the example batch a trace sees)."""
    torch = sys.modules["torch"]
    base, wrapped = _base_dataset(ds)
    dataset = _describe_dataset(base)
    dataset["subset"] = wrapped
    dataset["split"] = getattr(_t_rec(base), "split", None)
    transform = _describe_transform(base)
    n = min(SAMPLE_SIZE, len(base))
    if n == 0:
        raise _Refusal("the test split is empty")
    picks = _sample_indices(base, n)
    files = _files_of(base) if dataset["custom"] else None
    dup, undo = _cpu_copy(model)
    try:
        items = [base[i] for i in picks]
        xs = [item[0] for item in items]
        if not all(isinstance(x, torch.Tensor) for x in xs):
            raise _Refusal("the test dataset does not give tensors (no ToTensor in its transform?)")
        batch = torch.stack(xs).to(torch.device("cpu"))
        flatten = False
        with torch.no_grad():
            try:
                out = dup(batch)
            except Exception as exc:  # noqa: BLE001 - an MLP fed `images.view(-1, 784)`
                try:
                    out = dup(batch.flatten(1))
                except Exception:  # noqa: BLE001
                    raise _Refusal("the model fails on the test images as the dataset gives "
                                   "them (" + _exc_text(exc) + ")") from None
                flatten = True
                batch = batch.flatten(1)
            want = _first_tensor(out)
            preds = want.argmax(dim=1).tolist()
        example = batch[:EXAMPLE_BATCH]
        path = os.path.join(folder, file_name)
        capture, errors = _capture(dup, example, batch, want, path)
    finally:
        undo()
    return {
        "model": {"class": type(model).__name__[:100], "capture": capture, "file": file_name,
                  "bytes": os.path.getsize(path), "errors": errors[:5],
                  "input_shape": list(example.shape[1:]), "flatten_input": flatten,
                  "evaluated_in_train_mode": ev.get("training") if ev else None,
                  "mode_sensitive": any(_MODE_LAYERS.search(type(m).__name__) is not None
                                        for m in model.modules())},
        "dataset": dataset, "transform": transform,
        "sample": {"keys": [_sample_key(base, i, files) for i in picks], "preds": preds,
                   "labels": [_label(item) for item in items]},
        "evaluation": {"samples": ev.get("samples") if ev else None,
                       "cell": ev.get("cell") if ev else None},
    }, batch, example


def _label(item):
    """The label the dataset gave an item, as an int (None when it is not one)."""
    try:
        y = item[1]
        y = y.item() if hasattr(y, "item") else y
        return int(y) if isinstance(y, numbers.Integral) and not isinstance(y, bool) else None
    except Exception:  # noqa: BLE001 - an item without a label
        return None


def _t_rec(obj):
    t = sys.modules[_core.PROBE_NAME + "_torch"]
    return t.lookup(obj)
