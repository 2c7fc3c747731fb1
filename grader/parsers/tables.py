"""Tables of per-class accuracy: sklearn's classification_report, pandas DataFrames
(text and HTML), markdown and hand-aligned tables.

A table is a header row of column names and rows of cells. The same rules serve text
(cells split on whitespace or '|') and HTML (cells from <th>/<td>).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from grader.datasets import registry

from .classes import ID_NAME, all_named, norm, canonical_class
from .values import Reading, Split, is_number_cell, mask_line, metric_tokens, read_cell

HitKind = Literal["test_accuracy", "class_accuracy"]

# Column headers that name the class column; a dataset may add its own word (Food-11's "food").
_CLASS_COLUMN = re.compile(r"(?:class(?:es)?|class ?name|names?|labels?|categor(?:y|ies)|digits?|"
                           r"targets?|" + "".join(re.escape(s.class_column) + "|" for s in registry.SPECS
                                                 if s.class_column) + r"category name)")
_CORRECT = re.compile(r"(?:n ?)?(?:correct|hits|right)(?: ?count| ?pred(?:iction)?s?)?")
_TOTAL = re.compile(r"(?:n|num|number|count|total|support|samples|n ?samples|n ?images|images)")
_OVERALL = {"overall", "total", "all", "overall accuracy", "total accuracy"}
_AVERAGES = {"macro avg", "weighted avg", "micro avg", "avg total", "samples avg", "mean", "average"}
_SPLIT_RANK = {"test": 0, None: 1, "val": 2, "train": 3}


@dataclass(frozen=True)
class Header:
    """What a header row says about the columns below it."""

    cells: tuple[str, ...]
    class_col: int | None
    """Column holding the class name, when one is named 'class'/'name'/'label'."""
    acc_col: int | None
    """Column read as accuracy: an accuracy column (test > unlabelled > val > train), else recall."""
    acc_pct: bool
    """The accuracy column's header says the values are percents."""
    acc_split: Split | None
    correct_col: int | None
    total_col: int | None
    report: bool
    """Looks like sklearn's classification_report (precision and recall columns)."""
    wide: tuple[tuple[int, str], ...]
    """(column, class) when the columns are the classes (a transposed DataFrame)."""
    wide_total_col: int | None
    """An 'accuracy' column among class columns (DataFrame of classification_report(output_dict=True))."""


@dataclass(frozen=True)
class RowHit:
    """One accuracy read from a table row."""

    kind: HitKind
    class_name: str | None
    reading: Reading
    split: Split | None


def resolve_name(cell: str, classes: Sequence[str] | None) -> str | None:
    """A class from a cell; without a class list, any known name or a bare index."""
    if classes is not None:
        return canonical_class(cell, classes)
    found = canonical_class(cell, all_named())
    if found is None and ID_NAME.fullmatch(norm(cell)):
        found = str(int(ID_NAME.fullmatch(norm(cell)).group(1)))  # type: ignore[union-attr]
    return found


def make_header(cells: Sequence[str], classes: Sequence[str] | None) -> Header | None:
    """A Header when `cells` look like the column names of an accuracy table."""
    if not cells or len(cells) > 40:
        return None
    if any(re.search(r"\d", re.sub(r"f1|top-?1|@1", "", c, flags=re.IGNORECASE)) for c in cells):
        return None  # column names carry no numbers ('f1-score' and 'top-1' aside)
    low = [norm(c) for c in cells]
    if any(re.fullmatch(r"epochs?|steps?|iter\w*|batch\w*|time|lr|learning rate", c) for c in low):
        return None  # a training log table; its integer rows are epochs, not class ids
    class_col = next((i for i, c in enumerate(low) if _CLASS_COLUMN.fullmatch(c)), None)
    accs: list[tuple[int, int, Split | None]] = []
    for i, c in enumerate(cells):
        for t in metric_tokens(mask_line(c)):
            if t.kind == "acc":
                accs.append((_SPLIT_RANK[t.split], i, t.split))
    acc_col, acc_split = (min(accs)[1], min(accs)[2]) if accs else (None, None)
    report = "precision" in low and "recall" in low
    if acc_col is None and "recall" in low:
        acc_col = low.index("recall")
    correct_col = next((i for i, c in enumerate(low) if _CORRECT.fullmatch(c)), None)
    total_col = next((i for i, c in enumerate(low) if _TOTAL.fullmatch(c)), None)
    wide: list[tuple[int, str]] = []
    for i, c in enumerate(cells):
        name = canonical_class(c, classes) if classes is not None else canonical_class(c, all_named())
        if name is not None and not c.strip().isdigit():
            wide.append((i, name))
    wide_total = next((i for i, c in enumerate(low) if c == "accuracy"), None) if len(wide) >= 3 else None
    if len(wide) < 3:
        wide = []
    if acc_col is None and not wide and (correct_col is None or total_col is None):
        return None
    acc_pct = acc_col is not None and bool(re.search(r"%|percent", cells[acc_col], re.IGNORECASE))
    return Header(tuple(cells), class_col, acc_col, acc_pct, acc_split, correct_col, total_col,
                  report, tuple(wide), wide_total)


def _first_value(cells: Sequence[str]) -> Reading | None:
    for c in cells:
        r = read_cell(c)
        if r is not None:
            return r
    return None


def _reading(h: Header, aligned: Sequence[str]) -> Reading | None:
    if h.acc_col is not None:
        r = read_cell(aligned[h.acc_col])
        if r is not None and h.acc_pct and r.unit == "bare":
            r = Reading(r.value, "pct")
        return r
    if h.correct_col is not None and h.total_col is not None:
        a, b = read_cell(aligned[h.correct_col]), read_cell(aligned[h.total_col])
        if a and b and b.value > 0 and 0 <= a.value <= b.value:
            return Reading(a.value / b.value, "count")
    return None


def row_hits(h: Header, cells: Sequence[str], classes: Sequence[str] | None) -> list[RowHit] | None:
    """Accuracies in one row under `h`; [] for a row that fits but holds none; None if it does not fit."""
    n_h, n_r = len(h.cells), len(cells)
    label: str | None
    if n_r == n_h + 1:  # text DataFrame: the index has no header
        label, aligned = cells[0], list(cells[1:])
    elif n_r == n_h:
        aligned = list(cells)
        label = cells[0] if not h.cells[0].strip() or (h.class_col is None and not h.wide) else None
    elif h.report and n_r >= 2 and norm(cells[0]) == "accuracy":
        r = _first_value(cells[1:])  # the report's accuracy row: "accuracy  0.55  10000"
        return [RowHit("test_accuracy", None, r, None)] if r else []
    else:
        return None
    if h.wide:
        lab = norm(label or "")
        if lab and not (lab.isdigit() or re.fullmatch(r"acc\w*|recall|test\w*|accuracy", lab)):
            return []  # a precision or support row of a transposed report
        hits = [RowHit("class_accuracy", name, r, None) for col, name in h.wide
                if col < len(aligned) and (r := read_cell(aligned[col])) is not None]
        if h.wide_total_col is not None and (r := read_cell(aligned[h.wide_total_col])):
            hits.append(RowHit("test_accuracy", None, r, None))
        return hits
    name_cell = aligned[h.class_col] if h.class_col is not None else label
    if name_cell is None:
        return None
    key = norm(name_cell)
    reading = _reading(h, aligned)
    if key == "accuracy" and h.report:
        r = _first_value(aligned)
        return [RowHit("test_accuracy", None, r, None)] if r else []
    if key in _OVERALL:
        return [RowHit("test_accuracy", None, reading, h.acc_split)] if reading else []
    if key in _AVERAGES:
        return []
    name = resolve_name(name_cell, classes)
    if name is None or reading is None:
        return [] if any(is_number_cell(c) for c in aligned) else None
    return [RowHit("class_accuracy", name, reading, h.acc_split)]


def grid_hits(rows: Sequence[Sequence[str]],
              classes: Sequence[str] | None) -> tuple[list[tuple[RowHit, str]], bool]:
    """Hits of an HTML table (rows of cell texts) with their row's text; False when no header."""
    header: Header | None = None
    hits: list[tuple[RowHit, str]] = []
    for row in rows:
        cells = [c.strip() for c in row]
        if header is None:
            header = make_header(cells, classes)
            continue
        if not any(is_number_cell(c) for c in cells):
            continue  # pandas' second header row (the index name)
        got = row_hits(header, cells, classes)
        hits.extend((h, " | ".join(cells)) for h in got or [])
    return hits, header is not None
