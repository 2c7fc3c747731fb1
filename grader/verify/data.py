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
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.datasets import registry
from grader.errors import DatasetError
from grader.verify.spec import NotVerified

MAX_BATCH_BYTES = 512 << 20
"""Largest CIFAR-10 test batch or MNIST IDX file the host reads (bytes)."""
MAX_IMAGES = 200_000
"""Most images one split may hold."""


@dataclass(frozen=True)
class Split:
    """One labelled test split as the host read it."""

    kind: str
    """The dataset's registered name (grader.datasets.registry.verified_names())."""
    labels: tuple[int, ...]
    """The canonical class index of each image."""
    keys: tuple[int | str, ...]
    """Each image's key as the kernel's sample names it: its index, or a Food-11 file name."""
    pixels: np.ndarray | None = None
    """uint8 images (a dataset stored as arrays), or None."""
    files: tuple[Path, ...] = ()
    """The image files (a dataset read as files), or empty."""

    def __len__(self) -> int:
        return len(self.labels)


def read_split(kind: str, folder: Path) -> Split:
    """The labelled test split of dataset `kind` in `folder`, read by its spec's verifier
    (grader.datasets): the dataset's own folder, or its split folder for a dataset read as
    files (Food-11's evaluation/, validation/). Raises NotVerified with the reason."""
    spec = registry.get(kind)
    if spec.verifier is None:
        raise NotVerified(f"the grader does not rebuild {spec.title}'s test split")
    try:
        read = spec.verifier.read(Path(folder), max_bytes=MAX_BATCH_BYTES, max_images=MAX_IMAGES)
    except DatasetError as exc:
        raise NotVerified(str(exc)) from None
    split = Split(spec.name, read.labels, read.keys, pixels=read.pixels, files=read.files)
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
    verifier = registry.get(splits[0].kind).verifier
    assert verifier is not None, "read_split made these splits"
    if verifier.storage == "files":
        images = folder / "images"
        images.mkdir()
        os.chmod(images, 0o755)
        for pos, (s, i) in enumerate(order):
            src, dst = splits[s].files[i], images / f"{pos:06d}.jpg"
            # A copy, never a link: the evaluator's folder is writable from inside, and a model
            # can write through a file it maps (`torch.from_file(..., shared=True)`).
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o644)
        return Inputs(tuple(order), "files", verifier.pil_mode)
    stacked = np.stack([splits[s].pixels[i] for s, i in order])  # type: ignore[index]
    np.save(folder / "images.npy", stacked, allow_pickle=False)
    os.chmod(folder / "images.npy", 0o644)
    return Inputs(tuple(order), "npy", verifier.pil_mode)
