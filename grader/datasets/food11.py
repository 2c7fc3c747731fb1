"""Food-11 as published: flat `Food-11/{training,validation,evaluation}/<class>_<n>.jpg`.

Students restructure it for ImageFolder (`food11_imagefolder` does it for the reference) or
read the files with their own dataset class; the file name carries the class index.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from grader.datasets._spec import DatasetSpec, TestSplit, Verifier
from grader.datasets._synth import _Files, _Style, jpeg_blocks
from grader.errors import DatasetError

CLASSES = ("Bread", "Dairy product", "Dessert", "Egg", "Fried food", "Meat",
           "Noodles/Pasta", "Rice", "Seafood", "Soup", "Vegetable/Fruit")
SPLITS = ("training", "validation", "evaluation")
FILE_NAME = re.compile(r"^(\d+)_\d+\.jpg$")
# Images per class (training, validation, evaluation) per size; "full" is REAL.
COUNTS = {"tiny": (16, 6, 6), "small": (60, 20, 20)}
# The real Food-11 per class 0..10 (training, validation, evaluation): 9866 / 3430 / 3347.
REAL = ((994, 362, 368), (429, 144, 148), (1500, 500, 500), (986, 327, 335), (848, 326, 287),
        (1325, 449, 432), (440, 147, 147), (280, 96, 96), (855, 347, 303), (1500, 500, 500),
        (709, 232, 231))
# Warm: each mean is > 0.05 away from ImageNet's, real CIFAR-10's, 0.5 and the other stand-ins'.
STYLE = _Style((0.95, 0.40, 0.22), 0.92, 0.6, 0.65, 0.85)


def counts(size: str) -> Sequence[tuple[int, ...]]:
    """Images per class (training, validation, evaluation) of the stand-in of `size`."""
    return REAL if size == "full" else (COUNTS[size],) * 11


def write(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    """The stand-in: JPEGs numbered per class from 0, as the originals."""
    per_class = counts(size)
    for s, split in enumerate(SPLITS):
        for c in range(11):
            for n in range(per_class[c][s]):
                files.jpeg(f"{split}/{c}_{n}.jpg", rng, c, 11, size, STYLE)
    return {split: sum(row[s] for row in per_class) for s, split in enumerate(SPLITS)}


def write_hidden(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    """A hidden evaluation split from the stand-in's distribution."""
    per_class = counts(size)
    for c in range(11):
        for k in range(per_class[c][2]):
            files.jpeg(f"evaluation/{c}_{k}.jpg", rng, c, 11, size, STYLE)
    return {"evaluation": sum(row[2] for row in per_class)}


def _is_dataset(folder: Path) -> bool:
    return (all((folder / s).is_dir() for s in SPLITS)
            and any(FILE_NAME.match(f.name) for f in (folder / "training").iterdir()))


def _train_pixels(folder: Path, max_side: int | None) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    paths = sorted(folder.glob("training/*.jpg"))
    return len(paths), jpeg_blocks(paths, max_side)


def read_test(folder: Path, *, max_bytes: int, max_images: int) -> TestSplit:
    """The labelled images of a Food-11 split folder (evaluation/, validation/), by file name."""
    try:
        names = sorted(n for n in os.listdir(folder) if FILE_NAME.match(n))[:max_images + 1]
    except OSError as exc:
        raise DatasetError(f"the Food-11 split {folder} cannot be listed ({exc.strerror or exc})") from None
    labels = tuple(int(FILE_NAME.match(n).group(1)) for n in names)  # type: ignore[union-attr]
    if not all(0 <= y < 11 for y in labels):
        raise DatasetError(f"the Food-11 split {folder} holds files of classes beyond the 11")
    return TestSplit(labels, tuple(names), None, tuple(folder / n for n in names))


def food11_imagefolder(src: Path, dst: Path) -> Path:
    """Restructure Food-11 for ImageFolder: dst/<split>/<00..10>/<class>_<n>.jpg; return dst.

    Two-digit class folders make ImageFolder's sorted class order the class index. Files are
    symlinked (copied where links fail); running it again changes nothing.
    """
    from grader.datasets.registry import locate

    src, dst = locate(SPEC.name, src), Path(dst)
    for split in SPLITS:
        # All 11 folders, always: an empty class then fails loudly in ImageFolder instead
        # of silently shifting every later class index down by one.
        for c in range(len(CLASSES)):
            (dst / split / f"{c:02d}").mkdir(parents=True, exist_ok=True)
        for file in sorted((src / split).iterdir()):
            m = FILE_NAME.match(file.name)
            if not m or int(m[1]) >= len(CLASSES):
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


_TEST_DIRS = {"evaluation": "evaluation", "test": "evaluation", "testing": "evaluation", "eval": "evaluation",
              "validation": "validation", "val": "validation", "valid": "validation"}

SPEC = DatasetSpec(
    name="food11", title="Food-11", folder="Food-11", format="food11-flat-jpeg", stream=1,
    classes=CLASSES, splits=SPLITS, test_balanced=False, channels=3,
    synth=write, total_images=lambda size: sum(map(sum, counts(size))), is_dataset=_is_dataset,
    missing_label="Food-11", expected="expected training/, validation/ and evaluation/ holding <class>_<n>.jpg",
    train_pixels=_train_pixels,
    aliases=(r"food-?11",), keyword=r"food",
    # Keyed by the normalized canonical name (grader.parsers.classes.norm). Only spellings seen
    # in real submissions or handouts; a synonym that is an ordinary English word would match prose.
    synonyms={"dairy product": ("dairy", "dairy products", "milk"), "dessert": ("sweets", "sweet"),
              "fried food": ("fried", "fries"),
              "noodles pasta": ("noodles", "noodle", "pasta", "noodles and pasta", "noodle pasta"),
              "seafood": ("sea food",),
              "vegetable fruit": ("vegetable", "vegetables", "fruit", "fruits", "veg",
                                  "vegetables fruits", "vegetable and fruit", "vegetables and fruits")},
    names_vote=True, index_votes=True, class_column="food", file_pattern=FILE_NAME,
    verifier=Verifier(read=read_test, storage="files", pil_mode="RGB", write_hidden=write_hidden,
                      is_hidden=lambda folder: (folder / "evaluation").is_dir(), hidden_subdir="evaluation",
                      split_dirs=_TEST_DIRS, split_names={"evaluation": "test", "validation": "val"}),
)
