"""Probe part: datasets (class, root, split, size, what files they read), Normalize and
where it is applied, DataLoaders and which one is being iterated.

A dataset is named on the host by what it reads, not by its class: so each record carries
a few of the image files it holds (ImageFolder's `samples`, or any attribute that is a path
or a list of paths, symlinks resolved), their md5 (a copy under /tmp/work is still known by
its bytes), and the records of the datasets it wraps (a Subset's `dataset`, a
ConcatDataset's `datasets`, a student class holding an ImageFolder).

Runs inside the kernel as `_dllab_probe_data`; see recorder.py for the rules. Records go
into the registry of the torch part (rec_torch.py), which also reads `active` to tie a
model's forward passes to the loader they came from: the one iterated most recently, until
its iterator runs out (a dataset whose batches only fed a statistic is not trained on).
"""

from __future__ import annotations

import hashlib
import numbers
import os
import re
import sys
import weakref

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
_MAX_FILES = 3  # sampled files per dataset: the first, the middle and the last
_MAX_HASH_BYTES = 8 * 2**20  # a larger "image" is not hashed
_MAX_ATTRS = 60  # instance attributes looked at for paths and wrapped datasets
_MAX_CHILDREN = 16


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
        if getattr(dm, "_BaseDataLoaderIter", None) is not None:
            _t.wrap(dm._BaseDataLoaderIter, "__next__", _make_next)
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
        _core.guarded("loader-iter", _note_iter, self, it)
        return it
    return __iter__


def _make_next(orig):
    def __next__(self):
        try:
            return orig(self)
        except StopIteration:
            _core.guarded("loader-end", _note_end, self)
            raise
    return __next__


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


def _record_dataset(ds, via, depth=0):
    rec = _t.lookup(ds)
    if rec is not None or depth > 6:
        return rec
    root = getattr(ds, "root", None)
    root = os.fspath(root) if isinstance(root, (str, os.PathLike)) else None
    train = getattr(ds, "train", None)
    named = getattr(ds, "split", None)
    if not isinstance(named, str):  # a student class's `self.mode = 'test'`, never 'RGB'
        mode = getattr(ds, "mode", None)
        named = mode if isinstance(mode, str) and mode.lower() in _SPLITS else None
    fields = {"class": type(ds).__name__, "module": type(ds).__module__, "via": via,
              "root": root, "train": train if isinstance(train, bool) else None,
              "split": _split(train, named, root)}
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
        prec = _record_dataset(parent, via, depth + 1)
        if prec is not None:
            fields["parent"] = prec.ref  # a Subset's split is left to its name (random_split)
    kids = []
    for child in _wrapped(ds, parent):
        crec = _record_dataset(child, via, depth + 1)
        if crec is not None and all(crec is not k for k in kids):
            kids.append(crec)
    if kids:
        fields["children"] = [k.ref for k in kids]
    given, dirs = _sample_files(ds, root)
    if given:
        fields["files"] = [os.path.realpath(f) for f in given]
        fields["md5"] = [_md5(f) for f in fields["files"]]
    if dirs:
        fields["dirs"] = [os.path.realpath(d) for d in dirs]
    if fields["split"] is None and "parent" not in fields:
        # A custom dataset that keeps only its file list: the split is the folder it reads
        # (a Subset's files are its parent's, so a Subset's split is left to its name);
        # a ConcatDataset's is the one its parts share.
        splits = [_split(None, None, os.path.dirname(f)) for f in given + fields.get("files", [])]
        common = {getattr(k, "split", None) for k in kids}
        fields["split"] = next((sp for sp in splits if sp), None) or (
            common.pop() if len(common) == 1 else None)
    transform = getattr(ds, "transform", None)
    fields["transform"] = repr(transform)[:1000] if transform is not None else None
    rec = _t.new(ds, "dataset", fields, split=fields["split"])
    _scan_normalization(ds, rec)
    return rec


def _attrs(ds):
    try:
        return list(vars(ds).items())[:_MAX_ATTRS]
    except TypeError:  # __slots__, or a hostile __dict__
        return []


def _wrapped(ds, parent):
    """Datasets `ds` reads from besides its `.dataset`: ConcatDataset's `datasets`, and a
    student wrapper's attributes that are datasets."""
    base = getattr(sys.modules.get("torch.utils.data.dataset"), "Dataset", None)
    if base is None:
        return []
    found = []
    for key, value in _attrs(ds):
        values = value[:_MAX_CHILDREN] if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, base) and v is not ds and v is not parent and all(v is not f for f in found):
                found.append(v)
    return found[:_MAX_CHILDREN]


def _as_path(item):
    """A path from one entry of a list: a path, or the first element of (path, label)."""
    if isinstance(item, (list, tuple)) and item:
        item = item[0]
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    return item if isinstance(item, str) and 0 < len(item) < 4096 else None


def _sample_files(ds, root):
    """(a few files the dataset reads, the folders its attributes name)."""
    found = file_list(ds, root)
    if found is None:
        return [], _dirs(ds, root)
    _, seq, resolve, dirs = found
    n = len(seq)
    return [resolve(seq[i]) for i in sorted({0, n // 2, n - 1})][:_MAX_FILES], dirs


def _dirs(ds, root):
    dirs = []
    for _, value in _attrs(ds):
        path = _as_path(value) if isinstance(value, (str, os.PathLike)) else None
        if path and os.path.isdir(path) and path not in dirs:
            dirs.append(path)
    if root and os.path.isdir(root) and root not in dirs:
        dirs.append(root)
    return dirs[:4]


def file_list(ds, root=None):
    """(attribute name, the list of files `ds` reads, entry -> absolute path, the folders its
    attributes name), or None: ImageFolder's `samples`/`imgs` first, else any attribute that
    is a file or a list of files (or of (file, label) pairs; bare names are looked up in the
    folders it names). Checked on the first, middle and last entries only."""
    dirs = _dirs(ds, root)

    def resolve_in(entry):
        p = _as_path(entry)
        if p is None:
            return None
        if os.path.isfile(p):
            return os.path.abspath(p)
        return next((os.path.abspath(os.path.join(d, p)) for d in dirs
                     if os.path.isfile(os.path.join(d, p))), None)

    def resolve(entry):
        return resolve_in(entry) or _as_path(entry)

    candidates = []
    for key, value in _attrs(ds):
        if isinstance(value, (str, os.PathLike)):
            value = [value]
        elif not (isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray"):
            continue
        try:
            n = len(value)
            picks = [value[i] for i in sorted({0, n // 2, n - 1})] if n else []
        except Exception:  # noqa: BLE001 - a multi-dimensional array, a lazy sequence
            picks = []
        if picks and all(_as_path(e) for e in picks):
            candidates.append((key, value, picks))
    order = ("samples", "imgs")  # ImageFolder's own list first
    candidates.sort(key=lambda c: order.index(c[0]) if c[0] in order else len(order))
    for key, value, picks in candidates:
        if all(resolve_in(e) for e in picks):
            return key, value, resolve, dirs
    return None


def _md5(path):
    try:
        if os.path.getsize(path) > _MAX_HASH_BYTES:
            return ""
        with open(path, "rb") as fh:
            return hashlib.md5(fh.read(), usedforsecurity=False).hexdigest()
    except (OSError, ValueError, TypeError):
        return ""


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
        "drop_last": getattr(dl, "drop_last", None)}, dataset=drec.ref, split=drec.split,
        objs=_weak(dl, ds))


def _weak(*objs):
    """Weak references to `objs` (None for one that takes none): rec_torch's `_keep_evaluated`
    reaches a loader's dataset and names through them without keeping either alive."""
    out = []
    for obj in objs:
        try:
            out.append(weakref.ref(obj))
        except TypeError:
            out.append(None)
    return tuple(out)


def _note_iter(dl, it):
    rec = _t.lookup(dl) or _record_loader(dl)
    _t.active["loader"] = rec
    _t.active["iter"] = id(it)  # not the iterator itself: holding it would keep its workers alive
    _t.active["serial"] += 1


def _note_end(it):
    """The loader being iterated ran out: forward passes after it (a smoke test on random
    input after computing Food-11's mean and std) are no batch of its dataset reaching a model."""
    if _t.active.get("iter") == id(it):
        _t.active.update(loader=None, iter=None)
        _t.active["serial"] += 1
