"""The registered datasets, and every question the core asks about datasets in general.

`SPECS` is an explicit tuple: a module defining a spec registers nothing by being imported.
A new dataset is one module beside these plus one entry here, with a `stream` no other spec
uses. Everything in the core that once named a dataset (class lists, synonyms, well-known
statistics, which datasets are verified, guessing a dataset from a path or a notebook) asks
the functions below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from grader.datasets import catsdogs, cifar10, food11, mnist
from grader.datasets._spec import DatasetSpec, KnownStats
from grader.datasets._synth import HINT
from grader.errors import DatasetError

SPECS: tuple[DatasetSpec, ...] = (cifar10.SPEC, food11.SPEC, mnist.SPEC, catsdogs.SPEC)
"""Every registered dataset, in the order lists of them are shown."""

OTHER_NAMES: Mapping[str, str] = {"cifar100": r"cifar-?100", "fashion-mnist": r"fashion-?mnist"}
"""Datasets a path or class may name that are not registered (no stand-in, no checks): name ->
regex as in `DatasetSpec.aliases`. Recognised so that they are not taken for a registered one."""
GENERATED_NAMES: Mapping[str, str] = {"fakedata": r"fakedata"}
"""torchvision datasets that generate their images instead of reading any."""

# Which name wins when a text names several. Food-11 first: a Food-11 notebook copied from the
# CIFAR-10 tutorial still says "cifar"; CIFAR-100 and Fashion-MNIST before the names they contain.
_GUESS_ORDER = ("food11", "cifar100", "cifar10", "fashion-mnist", "mnist", "catsdogs", "fakedata")

GENERIC_STATS: tuple[KnownStats, ...] = (
    KnownStats("imagenet", "ImageNet's", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "imagenet"),
    KnownStats("half", "the tutorial's 0.5", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "half"),
)
"""Well-known statistics of no registered dataset (ImageNet's, the tutorials' 0.5)."""

_BY_NAME: dict[str, DatasetSpec] = {s.name: s for s in SPECS}


def names() -> tuple[str, ...]:
    """The registered datasets' names, in registry order."""
    return tuple(_BY_NAME)


def get(name: str) -> DatasetSpec:
    """The spec of a registered dataset, by its name or a spelling of it (`cats-vs-dogs`).

    Raises DatasetError naming the registered ones."""
    spec = find(name)
    if spec is None:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(names())}")
    return spec


def _key(text: str) -> str:
    return re.sub(r"[\s_\-]", "", text.strip().lower())


def find(name: str) -> DatasetSpec | None:
    """The spec `name` spells (its name, folder or title, case, `-`, `_` and spaces ignored), else None."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    key = _key(name)
    return next((s for s in _BY_NAME.values() if key in {_key(s.name), _key(s.folder), _key(s.title)}), None)


def canonical(name: str) -> str | None:
    """The registered name `name` spells (`cats-vs-dogs` -> `catsdogs`), else None."""
    spec = find(name)
    return spec.name if spec is not None else None


@lru_cache(maxsize=1)
def _needles() -> tuple[tuple[re.Pattern[str], str], ...]:
    table = {s.name: "|".join(s.aliases) for s in SPECS if s.aliases}
    table.update(OTHER_NAMES)
    table.update(GENERATED_NAMES)
    ordered = [n for n in _GUESS_ORDER if n in table] + [n for n in table if n not in _GUESS_ORDER]
    return tuple((re.compile(table[n]), n) for n in ordered)


def guess_name(text: str) -> str | None:
    """The dataset a class name or path names (`CIFAR10`, `/tmp/work/Food-11_copy`), else None:
    a registered name, or one of OTHER_NAMES and GENERATED_NAMES."""
    text = text.lower().replace("_", "-").replace(" ", "-")[:4000]
    return next((name for needle, name in _needles() if needle.search(text)), None)


def known_names() -> frozenset[str]:
    """Every name `guess_name` can give."""
    return frozenset(n for _, n in _needles())


def by_priority() -> tuple[DatasetSpec, ...]:
    """The specs in the order a guess prefers them when the evidence ties (see _GUESS_ORDER)."""
    rank = {n: i for i, n in enumerate(_GUESS_ORDER)}
    return tuple(sorted(SPECS, key=lambda s: rank.get(s.name, len(rank))))


def class_sets() -> dict[str, tuple[str, ...]]:
    """Name -> canonical class names, in registry order."""
    return {s.name: s.classes for s in SPECS}


def synonyms() -> dict[str, tuple[str, ...]]:
    """Normalized canonical class name -> other spellings, over every dataset."""
    out: dict[str, tuple[str, ...]] = {}
    for s in SPECS:
        for key, more in s.synonyms.items():
            out[key] = out.get(key, ()) + tuple(more)
    return out


def known_stats() -> tuple[KnownStats, ...]:
    """Well-known statistics students copy: the generic ones, then each dataset's published ones."""
    return GENERIC_STATS + tuple(k for s in SPECS for k in s.known_stats)


def verified() -> tuple[DatasetSpec, ...]:
    """The datasets whose test split the independent evaluation rebuilds (they have a verifier)."""
    return tuple(s for s in SPECS if s.verifier is not None)


def verified_names() -> tuple[str, ...]:
    """Names of `verified()`."""
    return tuple(s.name for s in verified())


def file_patterns() -> dict[str, re.Pattern[str]]:
    """Name -> how its image files are named, for the datasets that have such a pattern."""
    return {s.name: s.file_pattern for s in SPECS if s.file_pattern is not None}


def folder_names() -> frozenset[str]:
    """Lower-case folder names that hold a dataset: each registered one's name, folder and title,
    and the other datasets' names (with and without `-`)."""
    out = {v.lower() for s in SPECS for v in (s.name, s.folder, s.title)}
    out |= {v for n in OTHER_NAMES for v in (n, n.replace("-", ""))}
    return frozenset(out)


def by_torchvision_class(cls: str) -> DatasetSpec | None:
    """The verified dataset torchvision's class `cls` (`CIFAR10`) reads, else None."""
    return next((s for s in verified() if s.verifier and s.verifier.torchvision_class == cls), None)


def read_as_files(hint: str | None) -> DatasetSpec | None:
    """The verified dataset read as image files (an ImageFolder or a notebook's own class) when
    the lab's dataset is `hint` (None: not known), else None."""
    files = [s for s in verified() if s.verifier and s.verifier.split_dirs]
    if hint is None:
        return files[0] if files else None
    return next((s for s in files if s.name == hint), None)


def startup_specs(host: Path) -> tuple[DatasetSpec, ...]:
    """The datasets with a sandbox startup hook that the mounted folder `host` holds."""
    return tuple(s for s in SPECS if s.sandbox_startup is not None and s.holds(Path(host)))


def locate(name: str, path: Path) -> Path:
    """The dataset's own folder, given a root holding it or that folder itself (or its inner
    folder: MNIST's raw/). A folder without a manifest (a real dataset) is accepted when its
    format files are there. Raises DatasetError saying what was expected."""
    spec = get(name)
    path = Path(path)
    inner = [path.parent] if spec.inner_dir and path.name == spec.inner_dir else []
    for folder in [path / spec.folder, path, *inner]:
        if folder.is_dir() and spec.is_dataset(folder):
            if spec.fixed_folder and folder.name != spec.folder:  # torchvision opens <root>/MNIST/raw
                raise DatasetError(f"{spec.title} files in {folder} must be in a folder named {spec.folder} "
                                   f"for torchvision")
            return folder
    raise DatasetError(f"no {spec.missing_label} in {path}: "
                       f"{spec.expected if path.is_dir() else 'the folder does not exist'}{HINT}")

