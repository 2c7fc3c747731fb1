"""Which registered dataset a dataset object reads, judged by what it reads, not its class name.

Students read Food-11 through ImageFolder over a restructured copy, a `FoodDataset(Dataset)`
globbing the mount, a ConcatDataset of training and validation, a Subset, or a class that
wraps any of these; each has a class name and often a path that say nothing. The probe
records for every dataset a few files it holds (symlinks resolved), their md5, the folders
its attributes name, its class list and the datasets it wraps (grader/probe/rec_data.py).
`identify` turns that record into the course's one name for the dataset ("food11"), trying
the strongest evidence first:

1. a torchvision dataset class that names its data (CIFAR10, MNIST, FakeData, ...);
2. a file or folder inside one of the run's dataset mounts (`DataMount`);
3. a file whose md5 is in a mounted stand-in's manifest (a copy under /tmp/work);
4. the datasets it wraps, when they are known;
5. a dataset's name in its class name, root or file paths (`/tmp/work/Food-11_copy`);
6. file names in a dataset's own pattern (`3_120.jpg`), when the class list does not
   contradict it;
7. a class list that is a known dataset's (folders `00_Bread`..`10_Vegetable-Fruit`);

else the class name, lowered, as before. Everything here reads evidence only; nothing runs.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from grader.datasets import read_manifest, registry
from grader.errors import DatasetError
from grader.parsers.classes import CLASS_SETS, canonical_class, dataset_of_classes

KNOWN = registry.known_names()
"""Names `identify` gives from evidence (grader.datasets.registry.guess_name); any other name
is a class name, lowered."""
_INDEXED_CLASS = re.compile(r"^\d{1,3}[\s_.\-]+(.+)$")  # "00_Bread", "6-Noodles-Pasta"


@dataclass(frozen=True)
class DataMount:
    """One registered dataset as a run sees it."""

    name: str
    """The course's name of the dataset: food11, cifar10, ..."""
    inside: str
    """Its folder inside the sandbox, absolute (`/tmp/datasets-nctu/Food-11`)."""
    host: str
    """The same folder on the host (a run without a sandbox reads it there)."""


def dataset_name(cls: str | None, root: str | None) -> str | None:
    """The course's name for a dataset from its class name and a path (else the class, lowered)."""
    return _needle(f"{cls or ''} {root or ''}") or (cls.lower() if cls else None)


_needle = registry.guess_name


def identify(rec: Mapping[str, Any], *, related: Sequence[str | None] = (),
             mounts: Sequence[DataMount] = ()) -> str | None:
    """The course's name of the dataset a probe `dataset` event describes.

    `related` are the names already found for the datasets it wraps (its parent and
    children); `mounts` are the run's registered datasets. See the module docstring for
    the order in which evidence counts.
    """
    cls = rec.get("class") if isinstance(rec.get("class"), str) else None
    module = rec.get("module") if isinstance(rec.get("module"), str) else ""
    if cls and module.startswith("torchvision.datasets") and (own := _needle(cls)):
        return own
    files = [f for f in rec.get("files") or [] if isinstance(f, str)]
    dirs = [d for d in rec.get("dirs") or [] if isinstance(d, str)]
    root = rec.get("root") if isinstance(rec.get("root"), str) else None
    for path in files + dirs + ([root] if root else []):
        if (mount := _mount_holding(path, mounts)) is not None:
            return mount.name
    for md5 in rec.get("md5") or []:
        if isinstance(md5, str) and (name := _md5_index(tuple((m.name, m.host) for m in mounts)).get(md5)):
            return name
    known = Counter(r for r in related if r in KNOWN)
    if known:
        return known.most_common(1)[0][0]
    if found := _needle(" ".join([cls or "", root or "", *files, *dirs])):
        return found
    classes = [c for c in rec.get("classes") or [] if isinstance(c, str)]
    by_files = _by_file_names(files, classes)
    if by_files:
        return by_files
    if classes and (by_classes := _by_classes(classes)):
        return by_classes
    return next((r for r in related if r), None) or (cls.lower() if cls else None)


def _mount_holding(path: str, mounts: Sequence[DataMount]) -> DataMount | None:
    p = PurePosixPath(os.path.normpath(path))
    for m in mounts:
        for top in (m.inside, m.host):
            t = PurePosixPath(os.path.normpath(top))
            if p == t or t in p.parents:
                return m
    return None


@functools.lru_cache(maxsize=16)
def _md5_index(mounts: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """md5 -> dataset name over the files listed in the mounted folders' manifests (stand-ins;
    a real dataset has no manifest, and its copies are known by name and classes instead)."""
    index: dict[str, str] = {}
    for name, host in mounts:
        try:
            manifest = read_manifest(Path(host)) or {}
        except DatasetError:
            continue
        files = manifest.get("files")
        if isinstance(files, Mapping):
            for entry in files.values():
                if isinstance(entry, Mapping) and isinstance(entry.get("md5"), str):
                    index.setdefault(entry["md5"], name)
    return index


def _by_file_names(files: Sequence[str], classes: Sequence[str]) -> str | None:
    """The dataset whose file-name pattern every sampled file follows (a class index in the
    name within its class count), unless the dataset's class list says otherwise."""
    if not files:
        return None
    for name, pattern in registry.file_patterns().items():
        matches = [pattern.match(PurePosixPath(f).name) for f in files]
        if not all(matches):
            continue
        # A pattern's group 1 is the class index (Food-11's `<class>_<n>.jpg`): within the count.
        if pattern.groups and any(int(m.group(1)) >= len(CLASS_SETS[name]) for m in matches if m):
            continue
        if classes and len(classes) != len(CLASS_SETS[name]):
            continue  # 3 folders of Food-11 images: a student's own subset, not Food-11
        if classes and _by_classes(classes) not in (None, name):
            continue
        return name
    return None


def _by_classes(classes: Sequence[str]) -> str | None:
    """The dataset whose class list `classes` is, also when each folder is prefixed by its
    index (`00_Bread`); a list of bare numbers names no dataset by itself."""
    found = dataset_of_classes(classes)
    if found is not None:
        return found
    parts = [_INDEXED_CLASS.match(c) for c in classes]
    if all(parts):
        return dataset_of_classes([m.group(1) for m in parts if m])
    return None


def class_index(name: str, classes: Sequence[str]) -> int | None:
    """Index in `classes` of a class folder's name: by number (`00`..`10`), by the class it
    spells (`Bread`, `noodles_pasta`), or by the name after its number (`06_Noodles-Pasta`)."""
    if name.isdigit():
        return int(name) if int(name) < len(classes) else None
    canon = canonical_class(name, classes)
    if canon is None and (m := _INDEXED_CLASS.match(name)):
        canon = canonical_class(m.group(1), classes)
    return list(classes).index(canon) if canon is not None else None
