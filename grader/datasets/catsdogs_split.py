"""Cats-vs-dogs' split verifier: the labels of `train/{cat,dog}.<n>.jpg`, read from their names.

Kaggle's test1/ is unlabelled, so the only labelled images are train/'s, which every student
splits into training and validation themselves. The host measures each run's model on the files
the run trained on and on those it validated on (grader.verify.splits): this is how it reads the
class of a file, by its name alone (the host alone holds labels; nothing of the student's says
which file is a cat).
"""

from __future__ import annotations

import re

from grader.datasets._spec import SplitVerifier

_NAME = re.compile(r"^(cat|dog)\.\d{1,9}\.jpg$")
_CLASS = {"cat": 0, "dog": 1}  # grader.datasets.catsdogs.CLASSES order


def label_of(name: str) -> int | None:
    """0 for `cat.<n>.jpg`, 1 for `dog.<n>.jpg`, None for any other name (case as Kaggle's)."""
    m = _NAME.match(name) if isinstance(name, str) else None
    return _CLASS[m.group(1)] if m else None


SPLIT_VERIFIER = SplitVerifier(folder="train", label_of=label_of, pil_mode="RGB")
