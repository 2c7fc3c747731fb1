"""CIFAR-10 in torchvision's python-pickle layout: `cifar-10-batches-py/data_batch_1..5`,
`test_batch`, `batches.meta`. torchvision md5-checks these files even with download=False, so a
stand-in's checksums are registered in the kernel when the student's code imports torchvision
(`SPEC.sandbox_startup`), and on the host by `register_cifar10_checksums`."""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import numpy as np

from grader.datasets._spec import (
    DatasetSpec,
    KnownStats,
    StartupHook,
    TestSplit,
    Verifier,
)
from grader.datasets._synth import (
    _balanced,
    _Files,
    _py2_pickle,
    _render,
    _Style,
    read_capped,
)
from grader.errors import DatasetError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # batches.meta label_names
# Images (train, test) per size.
COUNTS = {"tiny": (1000, 500), "small": (10000, 2000), "full": (50000, 10000)}
# Cool: each mean is > 0.05 away from ImageNet's, real CIFAR-10's, 0.5 and the other stand-ins'
# in some channel (tests/test_datasets.py checks).
STYLE = _Style((0.16, 0.36, 0.72), 0.0, 1.0, 0.9, 0.95)
_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _batch_pixels(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    pixels = np.concatenate([_render(rng, labels[i:i + 1000], 10, 32, 32, STYLE)
                             for i in range(0, len(labels), 1000)])
    # Rows of 3072 bytes: 1024 red, then green, then blue, each plane row-major.
    return pixels.transpose(0, 3, 1, 2).reshape(len(labels), 3072)


def write(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    """The stand-in: five training batches and one test batch, balanced classes."""
    n_train, n_test = COUNTS[size]
    per_batch = n_train // 5
    train = _balanced(rng, n_train, 10)  # balanced overall but not per batch, like the real ones
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", train[(i - 1) * per_batch:i * per_batch])
               for i in range(1, 6)] + [("test_batch", "testing batch 1 of 1", _balanced(rng, n_test, 10))]
    for file_name, batch_label, labels in batches:
        data = _batch_pixels(rng, labels)
        names = [f"{CLASSES[c]}_s_{i:06d}.png" for i, c in enumerate(labels.tolist())]
        batch = {"batch_label": batch_label, "labels": labels.tolist(), "data": data, "filenames": names}
        files.put(file_name, _py2_pickle(batch), images=len(labels))
    meta = {"num_cases_per_batch": per_batch, "label_names": list(CLASSES), "num_vis": 3072}
    files.put("batches.meta", _py2_pickle(meta), images=0)
    return {"train": n_train, "test": n_test}


def write_hidden(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    """A hidden test batch (+ batches.meta) from the stand-in's distribution."""
    n = COUNTS[size][1]
    labels = _balanced(rng, n, 10)
    batch = {"batch_label": "hidden testing batch 1 of 1", "labels": labels.tolist(),
             "data": _batch_pixels(rng, labels),
             "filenames": [f"{CLASSES[c]}_h_{i:06d}.png" for i, c in enumerate(labels.tolist())]}
    files.put("test_batch", _py2_pickle(batch), images=n)
    files.put("batches.meta", _py2_pickle({"num_cases_per_batch": n, "label_names": list(CLASSES),
                                           "num_vis": 3072}), images=0)
    return {"test": n}


def _is_dataset(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _FILES)


def _train_pixels(folder: Path, max_side: int | None) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    from grader.datasets._synth import read_manifest

    def batches() -> Iterator[tuple[int, np.ndarray]]:
        for i in range(1, 6):  # one batch (30 MB in the real set) at a time
            with open(folder / f"data_batch_{i}", "rb") as f:
                data = pickle.load(f, encoding="latin1")["data"]
            yield len(data), data.reshape(-1, 3, 1024).transpose(1, 0, 2).reshape(3, -1)

    return (read_manifest(folder) or {"splits": {"train": 50000}})["splits"]["train"], batches()


class _BatchUnpickler(pickle.Unpickler):
    """A CIFAR-10 python batch holds dicts, lists, strings and one uint8 array: nothing else
    is built, even from the lab's own (trusted) dataset folder."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {("numpy.core.multiarray", "_reconstruct"),
                                                ("numpy._core.multiarray", "_reconstruct"),
                                                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def read_test(folder: Path, *, max_bytes: int, max_images: int) -> TestSplit:
    """The labelled test batch in CIFAR-10's own folder; DatasetError when it cannot be read."""
    raw = read_capped(folder / "test_batch", "CIFAR-10 test batch", max_bytes)
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = tuple(int(y) for y in batch["labels"])
    except Exception as exc:  # noqa: BLE001 - a broken dataset file, said as such
        raise DatasetError(f"the CIFAR-10 test batch in {folder} cannot be read ({type(exc).__name__})") from None
    if len(labels) != len(data) or not all(0 <= y < 10 for y in labels):
        raise DatasetError(f"the CIFAR-10 test batch in {folder} has labels that do not match its images")
    return TestSplit(labels, tuple(range(len(labels))), np.ascontiguousarray(data), ())


def register_cifar10_checksums(folder: "str | os.PathLike[str]") -> bool:
    """Make torchvision's CIFAR10 accept a synthetic stand-in; return whether it patched.

    CIFAR10 md5-checks its files even with download=False, so the stand-in's md5s (from its
    manifest) replace the published ones in this process, after which a real CIFAR-10 would
    fail the check. Imports torchvision at once; the sandboxed kernel runs the same two steps
    lazily instead (SPEC.sandbox_startup: `_cifar10_md5s` at start, `_patch_cifar10` when the
    student's code imports torchvision).
    """
    md5s = _cifar10_md5s(os.fspath(folder))
    if md5s is None:
        return False
    import torchvision.datasets.cifar

    _patch_cifar10(torchvision.datasets.cifar, md5s)
    return True


def _cifar10_md5s(folder: "str") -> "dict | None":
    """The stand-in's md5s from the manifest in `folder` (the batches' folder or a root holding
    it), as `_patch_cifar10` sets them; None for a real dataset (no synthetic manifest).
    Self-contained and the standard library only: its source runs at every start of a sandboxed
    kernel that has CIFAR-10 mounted, before the student's code, which may never use it."""
    import json
    import os

    if not os.path.isfile(os.path.join(folder, "manifest.json")):
        folder = os.path.join(folder, "cifar-10-batches-py")  # given the root instead (CIFAR10.base_folder)
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("synthetic") is not True:
            return None
        files = manifest["files"]
        return {"train_list": [[f"data_batch_{i}", str(files[f"data_batch_{i}"]["md5"])] for i in range(1, 6)],
                "test_list": [["test_batch", str(files["test_batch"]["md5"])]],
                "meta_md5": str(files["batches.meta"]["md5"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _patch_cifar10(cifar: "ModuleType", md5s: "dict") -> None:
    """Give torchvision's CIFAR10 (in its module `torchvision.datasets.cifar`, which may be
    imported while its package still is) the md5s `_cifar10_md5s` read. Self-contained: its
    source runs in the kernel when the student's code imports torchvision."""
    cls = cifar.CIFAR10
    cls.train_list, cls.test_list = md5s["train_list"], md5s["test_list"]
    cls.meta = {**cls.meta, "md5": md5s["meta_md5"]}


SPEC = DatasetSpec(
    name="cifar10", title="CIFAR-10", folder="cifar-10-batches-py", format="cifar10-python-pickle",
    stream=0, classes=CLASSES, splits=("train", "test"), test_balanced=True, channels=3,
    synth=write, total_images=lambda size: sum(COUNTS[size]), is_dataset=_is_dataset,
    missing_label="CIFAR-10 python batches", expected="expected data_batch_1..5, test_batch and batches.meta", train_pixels=_train_pixels,
    aliases=(r"cifar",), keyword=r"cifar",
    # Only spellings seen in real submissions or handouts (the tutorial's 'plane', 'car').
    synonyms={"airplane": ("plane", "aeroplane", "air plane", "airplanes"),
              "automobile": ("car", "auto", "automobiles"), "ship": ("boat",)},
    names_vote=True,
    known_stats=(KnownStats("cifar10", "CIFAR-10's", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar10"),
                 KnownStats("cifar10-alt", "CIFAR-10's (the common 0.2023 variant)", (0.4914, 0.4822, 0.4465),
                            (0.2023, 0.1994, 0.2010), "cifar10")),
    sandbox_startup=StartupHook(read=_cifar10_md5s, apply=_patch_cifar10, module="torchvision.datasets.cifar",
                                missing="no synthetic CIFAR-10 manifest under",
                                doing="registering CIFAR-10 checksums for"),
    verifier=Verifier(read=read_test, storage="npy", pil_mode="RGB", write_hidden=write_hidden,
                      is_hidden=lambda folder: (folder / "test_batch").is_file(), torchvision_class="CIFAR10"),
)
