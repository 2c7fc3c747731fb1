"""Kaggle's cats-vs-dogs: `cats-vs-dogs/train/{cat,dog}.<n>.jpg` and unlabelled `test1/<n>.jpg`.

Its test split has no labels, so the grader never verifies it independently: students split
train/ into training and validation themselves. The stand-in (grader.datasets._pets) is built
so that a small CNN overfits it at a course notebook's size: `small` holds 1000 images per
class, the 2000 of Keras' "cats vs dogs with little data" that the overfitting lessons train
on (bench/catsdogs.md: ~98 % training against ~69 % validation accuracy); `tiny` stays small
for the test suite and the self-check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from grader.datasets import _pets
from grader.datasets._spec import DatasetSpec
from grader.datasets._synth import _JPEG_SIDES, _Files, jpeg_blocks
from grader.datasets.catsdogs_split import SPLIT_VERIFIER

CLASSES = ("cat", "dog")
# Images (per class in train/, unlabelled in test1/) per size.
COUNTS = {"tiny": (100, 20), "small": (1000, 100), "full": (12500, 12500)}
FILE_NAME = re.compile(r"^(?:cat|dog)\.\d+\.jpg$")


def write(files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    """The stand-in: labelled train/ JPEGs and an unlabelled test1/."""
    per_class, n_test = COUNTS[size]
    for c, animal in enumerate(CLASSES):
        for n in range(per_class):  # Kaggle numbers train/ from 0 and test1/ from 1
            _put(files, f"train/{animal}.{n}.jpg", rng, c, size)
    for n in range(1, n_test + 1):
        _put(files, f"test1/{n}.jpg", rng, int(rng.integers(2)), size)
    return {"train": 2 * per_class, "test1": n_test}


def _put(files: _Files, rel: str, rng: np.random.Generator, label: int, size: str) -> None:
    h, w = rng.integers(_JPEG_SIDES[size][0], _JPEG_SIDES[size][1] + 1, 2)
    files.put(rel, _pets.jpeg(rng, label, int(h), int(w)))


def _is_dataset(folder: Path) -> bool:
    return all(next((folder / "train").glob(f"{a}.*.jpg"), None) for a in CLASSES)


def _train_pixels(folder: Path, max_side: int | None) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    paths = sorted(folder.glob("train/*.jpg"))
    return len(paths), jpeg_blocks(paths, max_side)


SPEC = DatasetSpec(
    name="catsdogs", title="cats-vs-dogs", folder="cats-vs-dogs", format="catsdogs-kaggle-jpeg", stream=3,
    classes=CLASSES, splits=("train", "test1"), test_balanced=False, channels=3,
    synth=write, total_images=lambda size: 2 * COUNTS[size][0] + COUNTS[size][1], is_dataset=_is_dataset,
    missing_label="cats-vs-dogs", expected="expected train/ holding cat.<n>.jpg and dog.<n>.jpg", train_pixels=_train_pixels,
    # "cats-vs-dogs", "dogs_and_cats", "catsndogs": the names courses and Kaggle give it.
    aliases=(r"cats?-?(?:vs|and|n)?-?dogs?|dogs?-?(?:vs|and|n)?-?cats?",),
    file_pattern=FILE_NAME,
    split_verifier=SPLIT_VERIFIER,  # the overfitting gap on the student's own split: catsdogs_split.py
)
