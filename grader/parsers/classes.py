"""Class lists of the course's datasets and the many ways students spell a class.

Students print the tutorial's short names ('plane', 'car'), the torchvision names
('airplane', 'automobile'), folder names ('noodles_pasta'), or just an index
('class 3'). Everything is mapped to one canonical spelling per dataset so that the
grader can compare per-class accuracy with the reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from grader.datasets import registry

# Keyed by each dataset's registered name (grader.datasets.registry), in registry order.
CLASS_SETS: dict[str, tuple[str, ...]] = registry.class_sets()
# Sets whose names can vote when the dataset is guessed from printed names: not MNIST's
# digits, nor cats-vs-dogs' `cat`/`dog`, which are CIFAR-10 classes too (DatasetSpec.names_vote).
_VOTING = tuple(s.name for s in registry.SPECS if s.names_vote)

# Keyed by the normalized canonical name; each dataset's spec lists its own (DatasetSpec.synonyms).
_SYNONYMS: dict[str, tuple[str, ...]] = registry.synonyms()
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# "class 3", "class_3", "Class[3]", "digit 7", "label #2": an index into the class list.
ID_PREFIX = r"(?:class(?:es)?|label|category|cls|digit)"
ID_NAME = re.compile(rf"(?:{ID_PREFIX}|c|no|id|#)?\s*#?\s*(\d{{1,3}})")
_ID_IN_TEXT = re.compile(rf"(?<![A-Za-z]){ID_PREFIX}[\s_:#=\-]*\[?\s*(\d{{1,2}})(?![\d])(?!\.\d)\]?",
                         re.IGNORECASE)
_PAREN = re.compile(r"^(.*?)\s*[(\[](.*?)[)\]]\s*$")


def norm(name: str) -> str:
    """Lower-case, separators (space _ - / & ,) collapsed to one space, quotes dropped."""
    s = name.strip().strip("'\"`:;=,.").lower()
    s = re.sub(r"[\s_\-/&,+]+", " ", s)
    return s.strip()


@lru_cache(maxsize=32)
def _lookup(classes: tuple[str, ...]) -> dict[str, str]:
    """Every accepted key (normalized, and with spaces removed) -> canonical name."""
    table: dict[str, str] = {}
    for c in classes:
        key = norm(c)
        keys = {key, *_SYNONYMS.get(key, ())}
        if key.isdigit() and int(key) < len(_DIGIT_WORDS):
            keys.add(_DIGIT_WORDS[int(key)])
        for k in list(keys):
            keys.add(k.replace(" ", ""))
        for k in keys:
            table.setdefault(k, c)
    return table


def canonical_class(name: str, classes: Sequence[str]) -> str | None:
    """The canonical spelling in `classes` of a printed class name or index, or None."""
    classes = tuple(classes)
    if not classes or not isinstance(name, str) or len(name) > 80:
        return None
    table = _lookup(classes)
    n = norm(name)
    if not n:
        return None
    for cand in (n, n.replace(" ", "")):
        if cand in table:
            return table[cand]
        # Plurals: "planes", "dogs", "horses", "eggs".
        for suffix in ("es", "s"):
            if cand.endswith(suffix) and cand[: -len(suffix)] in table:
                return table[cand[: -len(suffix)]]
    m = ID_NAME.fullmatch(n)
    if m:
        idx = int(m.group(1))
        return classes[idx] if idx < len(classes) else None
    m = _PAREN.match(name.strip())  # "3 (cat)", "cat (3)", "class 6 [Noodles/Pasta]"
    if m:
        for part in (m.group(2), m.group(1)):
            if part and part.strip() != name.strip():
                found = canonical_class(part, classes)
                if found is not None:
                    return found
    return None


class ClassSpan(NamedTuple):
    """A class named (or numbered) in a line of text."""

    start: int
    end: int
    name: str  # canonical, or the bare index as a string when no class list is known
    by_id: bool


@lru_cache(maxsize=32)
def _name_regex(classes: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of every spelling, longest first, with flexible separators."""
    keys = {k for k in _lookup(classes) if not k.isdigit() and k not in _DIGIT_WORDS}
    if not keys:
        return None
    alts = []
    for k in sorted(keys, key=len, reverse=True):
        words = [re.escape(w) for w in k.split(" ")]
        alts.append(r"(?:\s*[/&_\-+]\s*|\s+(?:and\s+|or\s+)?)".join(words))
    return re.compile(r"(?<![A-Za-z])(?:" + "|".join(alts) + r")(?:e?s)?(?![A-Za-z])", re.IGNORECASE)


def all_named() -> tuple[str, ...]:
    # Datasets whose class names can be told apart in prose; MNIST's are only numbers.
    return tuple(c for key in _VOTING for c in CLASS_SETS[key])


def find_classes(line: str, classes: Sequence[str] | None) -> list[ClassSpan]:
    """Class names and 'class N'-style indices in `line`, left to right, overlaps merged.

    With `classes=None` names of every known dataset are recognised and an index stays
    the index ("3"), to be resolved once the dataset is known.
    """
    pool = tuple(classes) if classes is not None else all_named()
    spans: list[ClassSpan] = []
    rx = _name_regex(pool)
    if rx is not None:
        for m in rx.finditer(line):
            name = canonical_class(m.group(0), pool)
            if name is not None:
                spans.append(ClassSpan(m.start(), m.end(), name, False))
    for m in _ID_IN_TEXT.finditer(line):
        if classes is None:
            name: str | None = str(int(m.group(1)))
        else:
            idx = int(m.group(1))
            name = classes[idx] if idx < len(classes) else None
        if name is not None:
            spans.append(ClassSpan(m.start(), m.end(), name, True))
    spans.sort()
    merged: list[ClassSpan] = []
    for s in spans:
        if merged:
            prev = merged[-1]
            gap = line[prev.end:s.start]
            # "class 3 (cat)" / "cat (class 3)": one mention; the name beats the index.
            beside = prev.by_id != s.by_id and len(gap) <= 3 and not re.search(r"[\w.%]", gap)
            if s.start < prev.end or beside:
                if prev.by_id and not s.by_id:
                    merged[-1] = ClassSpan(prev.start, max(prev.end, s.end), s.name, False)
                else:
                    merged[-1] = ClassSpan(prev.start, max(prev.end, s.end), prev.name, prev.by_id)
                continue
        merged.append(s)
    return merged


def known_set_of(name: str) -> str | None:
    """Which dataset a canonical class name belongs to, for guessing (a registered name)."""
    for key in _VOTING:
        if name in CLASS_SETS[key]:
            return key
    return None


def dataset_of_classes(classes: Sequence[str]) -> str | None:
    """The known dataset whose class list `classes` is, up to spelling, else None.

    `classes` is what a dataset object reported about itself (an ImageFolder's folder
    names: `['cats', 'dogs']`, `['Bread', 'Dairy product', ...]`). Every class must map to
    a distinct class of the set and the counts must agree; a folder named by a number maps
    only to that same number (MNIST's '7'), never to the class at that index, since
    `00`..`10` say nothing about which dataset it is.
    """
    names = [c for c in classes if isinstance(c, str)]
    if not names or len(names) != len(classes):
        return None
    for key, known in CLASS_SETS.items():
        if len(known) != len(names):
            continue
        mapped = set()
        for c in names:
            canon = canonical_class(c, known)
            if canon is None or (norm(c).isdigit() and canon != norm(c)):
                break
            mapped.add(canon)
        else:
            if len(mapped) == len(known):
                return key
    return None
