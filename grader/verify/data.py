"""The test splits, read by the host, and the label-free input the evaluator is given.

The host alone holds the labels: it reads the lab's read-only test split (and the grader-only
hidden split, grader.hidden_split) itself, then writes the images, without labels and in a
random order that mixes both splits, into the evaluator's folder: one `images.npy` (uint8,
CIFAR-10 `(N, 32, 32, 3)`, MNIST `(N, 28, 28)`) or, for Food-11, JPEG files renamed
`000000.jpg`, ... (their real names carry the class). The evaluator returns one predicted
class per image; the host puts them back in order and scores them.
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from grader.datasets import FILE_NAMES
from grader.verify.spec import NotVerified

MAX_BATCH_BYTES = 512 << 20
"""Largest CIFAR-10 test batch or MNIST IDX file the host reads (bytes)."""
MAX_IMAGES = 200_000
"""Most images one split may hold."""


@dataclass(frozen=True)
class Split:
    """One labelled test split as the host read it."""

    kind: str
    """cifar10, mnist or food11."""
    labels: tuple[int, ...]
    """The canonical class index of each image."""
    keys: tuple[int | str, ...]
    """Each image's key as the kernel's sample names it: its index, or a Food-11 file name."""
    pixels: np.ndarray | None = None
    """uint8 images (CIFAR-10 and MNIST), or None."""
    files: tuple[Path, ...] = ()
    """The JPEG files (Food-11), or empty."""

    def __len__(self) -> int:
        return len(self.labels)


class _BatchUnpickler(pickle.Unpickler):
    """A CIFAR-10 python batch holds dicts, lists, strings and one uint8 array: nothing else
    is built, even from the lab's own (trusted) dataset folder."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _capped(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_BATCH_BYTES:
            raise NotVerified(f"the {what} {path} is too large to read")
        return path.read_bytes()
    except OSError as exc:
        raise NotVerified(f"the {what} cannot be read ({exc.strerror or exc})") from None


def _cifar10(folder: Path) -> Split:
    raw = _capped(folder / "test_batch", "CIFAR-10 test batch")
    try:
        import io

        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = tuple(int(y) for y in batch["labels"])
    except Exception as exc:  # noqa: BLE001 - a broken dataset file, said as such
        raise NotVerified(f"the CIFAR-10 test batch in {folder} cannot be read ({type(exc).__name__})") from None
    if len(labels) != len(data) or not all(0 <= y < 10 for y in labels):
        raise NotVerified(f"the CIFAR-10 test batch in {folder} has labels that do not match its images")
    return Split("cifar10", labels, tuple(range(len(labels))), pixels=np.ascontiguousarray(data))


def _idx(path: Path, ndim: int) -> np.ndarray:
    raw = _capped(path, "MNIST file")
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 8, ndim]):
        raise NotVerified(f"{path.name} is not an MNIST IDX file of {ndim} dimension(s)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise NotVerified(f"{path.name} is truncated")
    return body.reshape(dims)


def _mnist(folder: Path) -> Split:
    images = _idx(folder / "raw" / "t10k-images-idx3-ubyte", 3)
    labels = tuple(int(y) for y in _idx(folder / "raw" / "t10k-labels-idx1-ubyte", 1))
    if len(labels) != len(images) or images.shape[1:] != (28, 28) or not all(0 <= y < 10 for y in labels):
        raise NotVerified(f"the MNIST test files in {folder} do not match each other")
    return Split("mnist", labels, tuple(range(len(labels))), pixels=np.ascontiguousarray(images))


def _food11(folder: Path) -> Split:
    pattern = FILE_NAMES["food11"]
    try:
        names = sorted(n for n in os.listdir(folder) if pattern.match(n))[:MAX_IMAGES + 1]
    except OSError as exc:
        raise NotVerified(f"the Food-11 split {folder} cannot be listed ({exc.strerror or exc})") from None
    labels = tuple(int(pattern.match(n).group(1)) for n in names)  # type: ignore[union-attr]
    if not all(0 <= y < 11 for y in labels):
        raise NotVerified(f"the Food-11 split {folder} holds files of classes beyond the 11")
    return Split("food11", labels, tuple(names), files=tuple(folder / n for n in names))


def read_split(kind: str, folder: Path) -> Split:
    """The labelled test split of `kind` in `folder`: CIFAR-10's or MNIST's own folder, or a
    Food-11 split folder (evaluation/, validation/). Raises NotVerified with the reason."""
    split = {"cifar10": _cifar10, "mnist": _mnist, "food11": _food11}[kind](Path(folder))
    if not 0 < len(split) <= MAX_IMAGES:
        raise NotVerified(f"the {kind} split in {folder} holds {len(split)} images")
    return split


@dataclass(frozen=True)
class Inputs:
    """What the evaluator was given: the order of the images, and how they are stored."""

    order: tuple[tuple[int, int], ...]
    """Position in the evaluator's input -> (split number, image index in that split)."""
    storage: str
    """`npy` (images.npy) or `files` (images/NNNNNN.jpg)."""
    mode: str
    """The PIL mode torchvision's own dataset gives these images: RGB, or L for MNIST."""


def write_inputs(folder: Path, splits: list[Split]) -> Inputs:
    """Write the images of `splits` into `folder`, shuffled together and without labels."""
    order = [(s, i) for s, split in enumerate(splits) for i in range(len(split))]
    # A fresh order every time: a model cannot tell from the position which split, or which
    # image of the visible split, it is looking at.
    rng = np.random.default_rng(secrets.randbits(64))
    order = [order[k] for k in rng.permutation(len(order))]
    kind = splits[0].kind
    if kind == "food11":
        images = folder / "images"
        images.mkdir()
        os.chmod(images, 0o755)
        for pos, (s, i) in enumerate(order):
            src, dst = splits[s].files[i], images / f"{pos:06d}.jpg"
            # A copy, never a link: the evaluator's folder is writable from inside, and a model
            # can write through a file it maps (`torch.from_file(..., shared=True)`).
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o644)
        return Inputs(tuple(order), "files", "RGB")
    stacked = np.stack([splits[s].pixels[i] for s, i in order])  # type: ignore[index]
    np.save(folder / "images.npy", stacked, allow_pickle=False)
    os.chmod(folder / "images.npy", 0o644)
    return Inputs(tuple(order), "npy", "L" if kind == "mnist" else "RGB")
