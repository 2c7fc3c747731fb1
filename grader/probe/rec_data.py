"""Probe part: datasets (class, root, split, size), Normalize and where it is applied,
DataLoaders and which one is being iterated.

Runs inside the kernel as `_dllab_probe_data`; see recorder.py for the rules. Records go
into the registry of the torch part (rec_torch.py), which also reads `active` to tie a
model's forward passes to the loader they came from.
"""

from __future__ import annotations

import numbers
import os
import re
import sys

HOOK_MODULES = ("torch", "torch.utils.data", "torch.utils.data.dataloader", "torchvision",
                "torchvision.datasets", "torchvision.transforms",
                "torchvision.transforms.transforms", "torchvision.transforms.v2",
                "torchvision.transforms.v2._misc")

_core = None
_t = None  # the torch part: registry and wrapping helpers
_pairs = set()  # (dataset ref, Normalize ref) already reported
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val",
           "validation": "val", "test": "test", "testing": "test", "eval": "test",
           "evaluation": "test"}


def setup(core):
    global _core, _t
    _core = core
    _t = sys.modules[core.PROBE_NAME + "_torch"]


def tracked():
    return ()  # the torch part reports everything in the shared registry


def flush(reason):
    return None


def cell_end():
    return None


def at_exit():
    return None


def patch():
    m = sys.modules
    dm = m.get("torch.utils.data.dataloader")
    if getattr(dm, "DataLoader", None) is not None:
        _t.wrap(dm.DataLoader, "__init__", _t.make_init(_record_loader))
        _t.wrap(dm.DataLoader, "__iter__", _make_iter)
    for name in ("torchvision.transforms.transforms", "torchvision.transforms.v2._misc"):
        norm = getattr(m.get(name), "Normalize", None)
        if isinstance(norm, type):
            _t.wrap(norm, "__init__", _t.make_init(_record_normalize))
    tvd = m.get("torchvision.datasets")
    dataset_cls = getattr(m.get("torch.utils.data.dataset"), "Dataset", None)
    if tvd is not None and dataset_cls is not None:
        for obj in list(vars(tvd).values()):
            if (isinstance(obj, type) and issubclass(obj, dataset_cls)
                    and obj.__module__.startswith("torchvision.")):
                _t.wrap(obj, "__init__", _t.make_init(lambda ds: _record_dataset(ds, "init")))


def _make_iter(orig):
    def __iter__(self):
        it = orig(self)
        _core.guarded("loader-iter", _note_iter, self)
        return it
    return __iter__


# ---------------------------------------------------------------- datasets and Normalize


def _split(train, split, root):
    if isinstance(train, bool):
        return "train" if train else "test"
    if isinstance(split, str):
        return _SPLITS.get(split.lower(), split.lower()[:20])
    for part in reversed(re.split(r"[\\/]+", root or "")):
        if part.lower() in _SPLITS:
            return _SPLITS[part.lower()]
    return None


def _record_normalize(norm):
    if _t.lookup(norm) is None:
        cls = type(norm)
        _t.new(norm, "normalize", {"mean": _t.floats(getattr(norm, "mean", None)),
                                   "std": _t.floats(getattr(norm, "std", None)),
                                   "cls": cls.__module__ + "." + cls.__name__})
    return _t.lookup(norm)


def _record_dataset(ds, via):
    rec = _t.lookup(ds)
    if rec is not None:
        return rec
    root = getattr(ds, "root", None)
    root = os.fspath(root) if isinstance(root, (str, os.PathLike)) else None
    train = getattr(ds, "train", None)
    fields = {"class": type(ds).__name__, "module": type(ds).__module__, "via": via,
              "root": root, "train": train if isinstance(train, bool) else None,
              "split": _split(train, getattr(ds, "split", None), root)}
    try:
        fields["length"] = len(ds)
    except Exception:  # noqa: BLE001 - an unsized or broken dataset
        fields["length"] = None
    classes = getattr(ds, "classes", None)
    if isinstance(classes, (list, tuple)):
        fields["num_classes"] = len(classes)
        fields["classes"] = [str(c)[:64] for c in classes[:100]]
    elif isinstance(getattr(ds, "num_classes", None), int):
        fields["num_classes"] = ds.num_classes
    parent = getattr(ds, "dataset", None)
    if parent is not None and parent is not ds and hasattr(parent, "__getitem__"):
        prec = _record_dataset(parent, via)
        fields["parent"] = prec.ref  # a Subset's split is left to its name (random_split)
    transform = getattr(ds, "transform", None)
    fields["transform"] = repr(transform)[:1000] if transform is not None else None
    rec = _t.new(ds, "dataset", fields, split=fields["split"])
    _scan_normalization(ds, rec)
    return rec


def _normalizers(t, depth=0):
    if t is None or depth > 6 or isinstance(t, (str, bytes, numbers.Number)):
        return
    cls = type(t)
    if cls.__name__ == "Normalize" and cls.__module__.startswith("torchvision.transforms"):
        yield t
        return
    subs = getattr(t, "transforms", None)
    if isinstance(subs, (list, tuple)):
        for sub in subs[:100]:
            yield from _normalizers(sub, depth + 1)
    inner = getattr(t, "transform", None)  # StandardTransform, student wrappers
    if inner is not None and inner is not t:
        yield from _normalizers(inner, depth + 1)
    children = getattr(t, "_modules", None)  # nn.Sequential of transforms
    if isinstance(children, dict):
        for sub in list(children.values())[:100]:
            yield from _normalizers(sub, depth + 1)


def _scan_normalization(ds, drec):
    found = list(_normalizers(getattr(ds, "transform", None)))
    found += list(_normalizers(getattr(ds, "transforms", None)))
    for norm in found:
        nrec = _record_normalize(norm)
        if nrec is None or (drec.ref, nrec.ref) in _pairs:
            continue
        _pairs.add((drec.ref, nrec.ref))
        _core.emit("normalization", {"normalize": nrec.ref, "dataset": drec.ref,
                                     "mean": _t.floats(getattr(norm, "mean", None)),
                                     "std": _t.floats(getattr(norm, "std", None)),
                                     "split": drec.split})


def _record_loader(dl):
    ds = getattr(dl, "dataset", None)
    drec = _record_dataset(ds, "dataloader")
    chain = ds
    for _ in range(4):  # a transform set after construction, or on a Subset's parent
        if chain is None:
            break
        crec = _t.lookup(chain)
        if crec is not None:
            _scan_normalization(chain, crec)
        chain = getattr(chain, "dataset", None)
    sampler = type(getattr(dl, "sampler", None)).__name__
    return _t.new(dl, "dataloader", {
        "dataset": drec.ref, "batch_size": getattr(dl, "batch_size", None),
        "shuffle": sampler == "RandomSampler", "sampler": sampler,
        "num_workers": getattr(dl, "num_workers", None),
        "drop_last": getattr(dl, "drop_last", None)}, dataset=drec.ref, split=drec.split)


def _note_iter(dl):
    rec = _t.lookup(dl) or _record_loader(dl)
    _t.active["loader"] = rec
    _t.active["serial"] += 1
