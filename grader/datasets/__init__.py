"""The datasets the grader knows: one spec per dataset (grader.datasets.<name>), one registry
(grader.datasets.registry), stand-ins in the real on-disk formats, and per-channel statistics.

The grader cannot download CIFAR-10, Food-11, MNIST or Kaggle's cats-vs-dogs, yet student
notebooks open them with the real loaders (torchvision's `CIFAR10` and `MNIST`, `ImageFolder`
after the usual Food-11 restructure, a glob over `cat.*.jpg`). `synth` writes generated
images in exactly those layouts (grader.datasets._synth says how they look).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader.datasets import registry
from grader.datasets._spec import (
    DatasetSpec,
    KnownStats,
    StartupHook,
    TestSplit,
    Verifier,
)
from grader.datasets._synth import (
    SIZES,
    _bar,
    _Files,
    _refuse_existing,
    _staged,
    _write_manifest,
    manifest_digest,
    read_manifest,
)
from grader.datasets.catsdogs import CLASSES as CATSDOGS_CLASSES
from grader.datasets.cifar10 import CLASSES as CIFAR10_CLASSES
from grader.datasets.cifar10 import register_cifar10_checksums
from grader.datasets.food11 import CLASSES as FOOD11_CLASSES
from grader.datasets.food11 import food11_imagefolder
from grader.datasets.mnist import CLASSES as MNIST_CLASSES
from grader.datasets.mnist import install_real_mnist, mnist_root
from grader.datasets.registry import get, guess_name, locate, names
from grader.errors import DatasetError

__all__ = [
    "CATSDOGS_CLASSES", "CIFAR10_CLASSES", "DATASETS", "FILE_NAMES", "FOOD11_CLASSES", "MNIST_CLASSES", "SIZES",
    "ChannelStats", "DatasetSpec", "KnownStats", "StartupHook", "TestSplit", "Verifier", "channel_stats",
    "food11_imagefolder", "get", "guess_name", "install_real_mnist", "locate", "manifest_digest", "mnist_root",
    "names", "read_manifest", "register_cifar10_checksums", "registry", "synth",
]

DATASETS = registry.names()
"""The registered datasets' names (grader.datasets.registry.SPECS)."""
FILE_NAMES = registry.file_patterns()
"""How each dataset names its image files, wherever a student copies or links them."""


def synth(out: Path, *, size: str = "small", seed: int = 0, names: Sequence[str] | None = None,
          progress: bool = False, overwrite: bool = False, hidden: bool = True) -> dict[str, Path]:
    """Write stand-in datasets under `out` in the real on-disk layouts; return name -> folder.

    `size` is "tiny" (tests: seconds), "small" (under a minute) or "full" (the real image
    counts). The same `seed` gives byte-identical files. An existing non-empty dataset
    folder is refused unless `overwrite`. With `hidden`, each verified dataset also gets a
    grader-only hidden test split under `out/dllab-hidden/` (grader.hidden_split), drawn from a
    secret: it differs on every synth, whatever `seed`. Raises DatasetError for an unknown
    size or dataset, or an existing folder.
    """
    if size not in SIZES:
        raise DatasetError(f"unknown dataset size {size!r}: expected one of {', '.join(SIZES)}")
    specs = [registry.get(n) for n in (DATASETS if names is None else names)]
    for spec in specs:
        _refuse_existing(Path(out) / spec.folder, overwrite)  # before writing anything
        if hidden and spec.verifier is not None:  # grader.hidden_split
            _refuse_existing(Path(out) / "dllab-hidden" / spec.folder, overwrite)
    result = {}
    with _bar(progress, sum(s.total_images(size) for s in specs), f"synth {size} datasets") as advance:
        for spec in specs:
            # One random stream per dataset: synthesizing one alone gives the same bytes.
            rng = np.random.default_rng([seed, spec.stream])
            with _staged(Path(out) / spec.folder, overwrite=overwrite) as tmp:
                files = _Files(tmp, advance)
                splits = registry.get(spec.name).synth(files, rng, size)
                _write_manifest(tmp, {"name": spec.name, "format": spec.format, "synthetic": True, "size": size,
                                      "seed": seed, "classes": list(spec.classes), "splits": splits,
                                      "files": files.entries})
            result[spec.name] = Path(out) / spec.folder
    if hidden:
        from grader.hidden_split import synth_hidden

        synth_hidden(Path(out), size=size, names=[s.name for s in specs], overwrite=overwrite)  # from a secret
    return result


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of a dataset's training split, pixel values in 0..1."""

    mean: tuple[float, ...]
    """One mean per channel: RGB, or a single value for a grey dataset."""
    std: tuple[float, ...]
    """Population std over every pixel of every image, as `transforms.Normalize` users compute it."""
    count: int
    """Number of images read."""
    split: str
    """The split described, named as the dataset names it ("train", "training")."""
    dataset: str
    """One of DATASETS."""


def channel_stats(name: str, path: Path, *, progress: bool = True, max_side: int | None = None) -> ChannelStats:
    """Per-channel mean and std over the training split, read one image (or batch) at a time.

    `max_side` shrinks larger JPEGs before counting: faster, and approximate. Raises
    DatasetError when the dataset is not there or its training split is empty.
    """
    spec = registry.get(name)
    folder = locate(spec.name, path)
    count, blocks = spec.train_pixels(folder, max_side)
    # Exact integer histograms of the 256 byte values: no float drift however many pixels.
    hist = np.zeros((spec.channels, 256), dtype=np.int64)
    with _bar(progress, count, f"{spec.name} channel stats") as advance:
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
                        split=spec.train_split, dataset=spec.name)
