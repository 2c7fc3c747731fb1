"""What the grader knows about one dataset: `DatasetSpec`, and the records it is made of.

A spec is data plus a few functions (how to write a stand-in, how to recognise the folder, how
to read its pixels and its test split); the core asks the registry (grader.datasets.registry)
instead of naming a dataset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal, NamedTuple

import numpy as np

from grader.datasets._synth import _Files


class KnownStats(NamedTuple):
    """A well-known (mean, std) pair students copy instead of computing their own."""

    key: str
    """The rubric's name for it (`normalization`'s `reject:`): imagenet, half, cifar10, ..."""
    label: str
    """How feedback names it: "ImageNet's", "the tutorial's 0.5"."""
    mean: tuple[float, ...]
    """Per channel, pixel values in 0..1."""
    std: tuple[float, ...]
    """Per channel, pixel values in 0..1."""
    family: str
    """The key that rejects it too (a published variant of the same statistics), else `key`."""


class TestSplit(NamedTuple):
    """A labelled test split as a spec's verifier reads it (grader.verify.data wraps it)."""

    labels: tuple[int, ...]
    """The canonical class index of each image."""
    keys: tuple[int | str, ...]
    """Each image's key as the kernel's sample names it: its index, or its file name."""
    pixels: np.ndarray | None
    """uint8 images stacked, or None when stored as files."""
    files: tuple[Path, ...]
    """The image files, or empty."""


@dataclass(frozen=True)
class StartupHook:
    """What the sandboxed kernel sets up for each mounted copy of the dataset, in two steps, so
    that starting a kernel imports nothing the notebook may never use.

    At kernel start, before the first cell, `read` runs on each mounted copy (the standard
    library only: no torchvision, whose import alone takes seconds). What each call returns is
    given to `apply` together with the module named `module`, once the student's code imports
    it (a `sys.meta_path` post-import hook: every import and reload of it), or at once when it
    is already imported. `read` and `apply` must each be self-contained (one top-level function,
    imports inside it, string annotations): their *source* is injected (grader.probe.startup).
    """

    read: Callable[[str], object]
    """Called with the mounted folder (or a root holding it): what `apply` needs, or None when
    there is nothing to do (`missing` is then printed)."""
    apply: Callable[[ModuleType, object], None]
    """Called with the imported `module` and a non-None result of `read`, once per mounted copy,
    in mount order; it must not import `module` (which may still be half-initialised: its
    package's `__init__` is running)."""
    module: str
    """The module whose import runs `apply` ("torchvision.datasets.cifar")."""
    missing: str
    """Printed in the kernel's start-up output when `read` returns None."""
    doing: str
    """What it does, for the message printed when `read` raises (in the start-up output) or
    `apply` does (on the kernel's own stderr, the run's log.txt: never in a cell's output)."""


@dataclass(frozen=True)
class Verifier:
    """How the independent evaluation rebuilds the test split (grader.verify)."""

    read: Callable[..., TestSplit]
    """read(folder, *, max_bytes, max_images): the labelled split in `folder` (the dataset's own
    folder, or its split folder when `split_dirs` is set). Raises DatasetError with the reason."""
    storage: Literal["npy", "files"]
    """How the evaluator gets the images: one images.npy, or copies of the image files."""
    pil_mode: str
    """The PIL mode torchvision's own dataset gives these images: RGB, or L."""
    write_hidden: Callable[[_Files, np.random.Generator, str], dict[str, int]]
    """Writes a grader-only hidden test split (grader.hidden_split) laid out like the dataset."""
    is_hidden: Callable[[Path], bool]
    """Whether a folder holds a hidden split in that layout."""
    hidden_subdir: str = ""
    """The folder under a hidden split that `read` takes ("" for the split itself)."""
    torchvision_class: str | None = None
    """torchvision's class for the dataset, whose `root` holds the dataset's folder."""
    split_dirs: Mapping[str, str] = field(default_factory=dict)
    """For a dataset read as image files (ImageFolder, a notebook's own class): folder names a
    student gives a held-out split ("test", "val") -> this dataset's split folder."""
    split_names: Mapping[str, str] = field(default_factory=dict)
    """This dataset's held-out split folders -> the evidence's name of the split (test, val)."""


@dataclass(frozen=True)
class SplitVerifier:
    """How the independent evaluation reads the files of a split the student made themselves of
    this dataset's labelled folder (cats-vs-dogs' train/, split into training and validation by
    the notebook): grader.verify.splits."""

    folder: str
    """The labelled folder inside the dataset's own folder (`train`)."""
    label_of: Callable[[str], int | None]
    """The canonical class index of a file name (`dog.12.jpg` -> 1), None for a name that is not
    one of its files."""
    pil_mode: str = "RGB"
    """The PIL mode torchvision's default loader gives these images."""


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset. `name` is the one spelling used in rubrics, evidence and grades."""

    name: str
    """The rubric's and evidence's name: cifar10, food11, mnist, catsdogs."""
    title: str
    """As people write it: CIFAR-10, Food-11."""
    folder: str
    """Its folder under a data root (`DIR/<folder>`), as the course lays it out."""
    format: str
    """The manifest's `format`."""
    stream: int
    """The stand-in's random stream, `[seed, stream]`: FIXED per dataset, so that synthesizing
    one dataset alone, or after a new one is registered, gives the same bytes."""
    classes: tuple[str, ...]
    """Canonical class names in label order, as the dataset's own metadata spells them."""
    splits: tuple[str, ...]
    """The splits in its folder, training first, as the dataset names them."""
    test_balanced: bool
    """Whether every class has as many test images: then the mean of the per-class accuracies is
    the total accuracy."""
    channels: int
    """1 (grey) or 3 (RGB)."""
    synth: Callable[[_Files, np.random.Generator, str], dict[str, int]]
    """Writes the stand-in at a size (tiny, small, full); returns images per split."""
    total_images: Callable[[str], int]
    """Images the stand-in of a size holds (for the progress bar)."""
    is_dataset: Callable[[Path], bool]
    """Whether a folder is this dataset's own folder (its format files are there)."""
    expected: str
    """What `locate` says it looked for."""
    missing_label: str
    """How `locate` names it when it is not there ("CIFAR-10 python batches")."""
    train_pixels: Callable[[Path, int | None], tuple[int, Iterator[tuple[int, np.ndarray]]]]
    """(images, iterator of (images, uint8 (channels, pixels)) blocks) of its training split."""
    inner_dir: str = ""
    """The subfolder holding its files (MNIST's raw/): given that subfolder, its parent is meant."""
    fixed_folder: bool = False
    """Whether its folder must carry its own name (`folder`): torchvision opens `<root>/MNIST/raw`."""
    aliases: tuple[str, ...] = ()
    """Regexes that name it in lower-case text with `-` for spaces and underscores
    (`food-?11`), for guessing a dataset from a path or a class name."""
    keyword: str | None = None
    """A looser regex (case-insensitive) for a notebook's code, where a word names it (`food`)."""
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Normalized canonical class name -> other spellings seen in submissions and handouts."""
    names_vote: bool = False
    """Whether its class names, printed, say which dataset it is (not digits, not cat/dog)."""
    index_votes: bool = False
    """Whether printed class indices up to its class count alone name it (no other dataset has
    that many classes)."""
    class_word: str | None = None
    """A word a printed class carries that names this dataset (`digit 7`)."""
    class_column: str | None = None
    """A table column headed by this word lists its classes (`food`)."""
    file_pattern: re.Pattern[str] | None = None
    """How its image files are named wherever a student copies them; group 1, if any, is the
    class index."""
    known_stats: tuple[KnownStats, ...] = ()
    """Its published statistics, which students copy."""
    sandbox_startup: StartupHook | None = None
    """What the sandboxed kernel must run first when the dataset is mounted."""
    verifier: Verifier | None = None
    """How the independent evaluation rebuilds its test split; None: never verified."""
    split_verifier: SplitVerifier | None = None
    """How the host reads a training/validation split the student made of its labelled folder
    (the overfitting gap, grader.verify.splits); None: no such split is measured."""
    install_real: Callable[[Path], Path] | None = None
    """Copies the real dataset from an installed package into a data root, replacing a copy
    there, and returns its folder; raises DatasetError when the package is missing. None: only
    the stand-in exists offline."""

    @property
    def train_split(self) -> str:
        """The training split's name ("train", "training")."""
        return self.splits[0]

    @property
    def test_split(self) -> str:
        """The split a test evaluation reads: the one the verifier names `test`, else the last."""
        names = self.verifier.split_names if self.verifier else {}
        return next((s for s, n in names.items() if n == "test"), self.splits[-1])

    def holds(self, folder: Path) -> bool:
        """Whether `folder` is this dataset's folder by name, or a root holding it."""
        return folder.name == self.folder or (folder / self.folder).is_dir()
