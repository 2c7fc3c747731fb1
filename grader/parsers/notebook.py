"""Walk a notebook's outputs and choose the final metrics the student reported."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .classes import CLASS_SETS, dataset_of_classes, find_classes, known_set_of
from .curves import parse_curves
from .html import parse_html
from .printsites import CellCode, read_print_sites
from .records import CurvePoint, MetricMention, ParsedMetrics
from .text import parse_text

_MAX_OUTPUT = 5_000_000  # characters per output read; a runaway print loop is not evidence
# Words in a cell's code that name the dataset, when the outputs name no class.
_SOURCE_HINTS = (("food11", re.compile(r"food[-_ ]?11|food", re.IGNORECASE)),
                 ("cifar10", re.compile(r"cifar", re.IGNORECASE)),
                 ("mnist", re.compile(r"mnist", re.IGNORECASE)))


def _head_tail(text: str) -> str:
    """At most _MAX_OUTPUT characters: the start and the end of a longer text.

    A cell that printed a flood before its results prints the results last, so the end
    is kept as well as the start.
    """
    if len(text) <= _MAX_OUTPUT:
        return text
    half = _MAX_OUTPUT // 2
    return text[:half] + "\n" + text[-half:]


def _text(value: Any) -> str:
    """nbformat keeps multi-line strings either as str or as a list of lines."""
    if isinstance(value, list):
        value = "".join(v for v in value if isinstance(v, str))
    return _head_tail(value) if isinstance(value, str) else ""


def _outputs(nb: Any) -> Iterator[tuple[int, int, str, str]]:
    """(cell index, output index, source, text) for every output worth reading.

    Consecutive stream outputs of one name are joined first, so that a progress bar split
    across messages still collapses to its last '\\r' state.
    """
    for ci, cell in enumerate(nb.get("cells", []) or []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        pending: tuple[str, list[str]] | None = None
        oi = 0
        for out in cell.get("outputs", []) or []:
            if not isinstance(out, dict):
                continue
            otype = out.get("output_type")
            if otype == "stream":
                name = out.get("name") if out.get("name") in ("stdout", "stderr") else "stdout"
                if pending and pending[0] == name:
                    pending[1].append(_text(out.get("text")))
                    continue
                if pending:
                    yield ci, oi, pending[0], _head_tail("".join(pending[1]))
                    oi += 1
                pending = (name, [_text(out.get("text"))])
                continue
            if pending:
                yield ci, oi, pending[0], _head_tail("".join(pending[1]))
                oi += 1
                pending = None
            if otype in ("execute_result", "display_data"):
                data = out.get("data") or {}
                if not isinstance(data, dict):
                    continue
                html, plain = _text(data.get("text/html")), _text(data.get("text/plain"))
                if html:
                    yield ci, oi, "text/html", html
                if plain:
                    yield ci, oi, "text/plain", plain
                oi += 1
        if pending:
            yield ci, oi, pending[0], _head_tail("".join(pending[1]))


def _read(items: Sequence[tuple[int, int, str, str]],
          classes: Sequence[str] | None) -> list[tuple[int, int, MetricMention]]:
    found: list[tuple[int, int, MetricMention]] = []
    html_done: set[tuple[int, int]] = set()
    for ci, oi, source, text in items:
        try:
            if source == "text/html":
                got = parse_html(text, classes=classes, cell=ci)
                if got:
                    html_done.add((ci, oi))
            elif source == "text/plain" and (ci, oi) in html_done:
                continue  # the same DataFrame, already read from its HTML
            else:
                got = parse_text(text, classes=classes, cell=ci, source=source)
        except Exception:  # noqa: BLE001 - a bad output is skipped, never a crash of the run
            continue
        found.extend((ci, oi, m) for m in got)
    return found


_TRAIN_KIND = {"test_accuracy": "train_accuracy", "test_loss": "train_loss"}
_TEST_KIND = {v: k for k, v in _TRAIN_KIND.items()}
_DIGITS = re.compile(r"\d+")


def _by_code(nb: Mapping[str, Any], found: list[tuple[int, int, MetricMention]]) -> list[tuple[int, int, MetricMention]]:
    """Totals whose split the text leaves open, settled by the code that printed them.

    An unlabelled loss or accuracy printed by training code (inside a loop that steps an
    optimizer, or after it in a cell that evaluates nothing) is a training metric; one the
    text marked as training only by a counter ("Epoch 2" above it) but printed by evaluation
    code is a test metric. A split the text names is never changed.
    """
    if not any(m.kind in _TRAIN_KIND and m.split_hint is None or m.inferred for _, _, m in found):
        return found
    try:
        code: dict[int, CellCode] = read_print_sites([c for c in nb.get("cells") or []])
    except (RecursionError, MemoryError, ValueError):
        return found
    phases: dict[tuple[int, str], str | None] = {}
    out = []
    for ci, oi, m in found:
        unlabelled = m.kind in _TRAIN_KIND and m.split_hint is None
        if (unlabelled or (m.inferred and m.kind in _TEST_KIND)) and ci in code:
            key = (ci, _DIGITS.sub("0", m.raw))  # a flood of one line is one question
            if key not in phases:
                phases[key] = code[ci].phase_of(m.raw)
            phase = phases[key]
            if unlabelled and phase == "train":
                m = replace(m, kind=_TRAIN_KIND[m.kind], split_hint="train", inferred=True)  # type: ignore[arg-type]
            elif not unlabelled and phase == "eval":
                m = replace(m, kind=_TEST_KIND[m.kind], split_hint=None, inferred=False)  # type: ignore[arg-type]
        out.append((ci, oi, m))
    return out


def guess_dataset(nb: Any, mentions: Sequence[MetricMention]) -> str | None:
    """The dataset whose class names the outputs print, else the one the code names."""
    votes: Counter[str] = Counter()
    for key in {(known_set_of(m.class_name), m.class_name) for m in mentions
                if m.class_name and known_set_of(m.class_name)}:
        votes[key[0]] += 1  # type: ignore[index]
    if any(m.raw and re.search(r"\bdigit\b", m.raw, re.IGNORECASE) for m in mentions if m.class_name):
        votes["mnist"] += 3
    if votes:
        return votes.most_common(1)[0][0]
    source = "\n".join(_text(c.get("source")) for c in nb.get("cells", []) or [] if isinstance(c, dict))
    hits = {key: len(rx.findall(source)) for key, rx in _SOURCE_HINTS}
    if hits["cifar10"] or hits["mnist"] or hits["food11"]:
        return max(hits, key=lambda k: hits[k])
    ids = {int(m.class_name) for m in mentions if m.class_name and m.class_name.isdigit()}
    return "food11" if ids and max(ids) == 10 else None


def _final(mentions: Sequence[MetricMention], kind: str) -> float | None:
    """Last test-split mention, else last unlabelled one, else last validation one; never train."""
    val_kind = kind.replace("test_", "val_")
    for wanted_kind, wanted in ((kind, "test"), (kind, None), (val_kind, "val")):
        picked = [m for m in mentions if m.kind == wanted_kind and m.split_hint == wanted]
        if picked:
            return picked[-1].value
    return None


def _per_class(found: Sequence[tuple[int, int, MetricMention]],
               classes: Sequence[str] | None) -> dict[str, float]:
    """Last complete block of per-class mentions, else the largest (the later on a tie).

    A block is a run of class mentions in one output; it ends when a class repeats
    (per-class accuracy printed every epoch in one output makes many blocks).
    """
    usable = [(ci, oi, m) for ci, oi, m in found if m.kind == "class_accuracy" and m.split_hint in (None, "test")]
    if not usable:
        usable = [(ci, oi, m) for ci, oi, m in found if m.kind == "class_accuracy" and m.split_hint == "val"]
    blocks: list[dict[str, float]] = []
    where: tuple[int, int] | None = None
    for ci, oi, m in usable:
        if not blocks or where != (ci, oi) or m.class_name in blocks[-1]:
            blocks.append({})
        where = (ci, oi)
        blocks[-1][m.class_name] = m.value  # type: ignore[index]
    if not blocks:
        return {}
    if classes:
        complete = [b for b in blocks if len(b) >= len(classes)]
        if complete:
            return dict(complete[-1])
    best = max(len(b) for b in blocks)
    return dict([b for b in blocks if len(b) == best][-1])


_MAX_CLASSES = 1000  # an ImageNet-sized class list; more is not a class list


def class_list(dataset: str | None, classes: Sequence[str] | None = None) -> tuple[str | None, tuple[str, ...] | None]:
    """(dataset name, class list) to read a notebook with.

    A known dataset name gives its class list. Otherwise the classes the dataset object
    reported (`classes`, e.g. an ImageFolder's folder names) are used: as a known
    dataset's list when they are one up to spelling, else as they are. An unknown name
    with no usable classes gives no class list, never an error: the totals do not depend on it.
    """
    if dataset in CLASS_SETS:
        return dataset, CLASS_SETS[dataset]  # type: ignore[index]
    if isinstance(classes, (list, tuple)) and 0 < len(classes) <= _MAX_CLASSES \
            and all(isinstance(c, str) and 0 < len(c) <= 80 for c in classes):
        known = dataset_of_classes(classes)
        if known is not None:
            return known, CLASS_SETS[known]
        return dataset, tuple(classes)
    return dataset, None


def parse_notebook(nb: Mapping[str, Any], *, dataset: str | None = None,
                   classes: Sequence[str] | None = None) -> ParsedMetrics:
    """The metrics a notebook's outputs report, with every mention and curve point found.

    `dataset` ('cifar10', 'food11', 'mnist', 'catsdogs') fixes the class list; `classes`
    (what the run's dataset object reported) serves when the name is not a known one (see
    `class_list`). With neither, the dataset is guessed from the class names printed (then
    from the code). A name outside the known ones is kept and read with no class list
    (per-class accuracy keyed by the known names or indices printed). A malformed
    notebook yields empty metrics; nothing here raises on a student's notebook.
    """
    items = list(_outputs(nb)) if isinstance(nb, dict) else []
    dataset, classes = class_list(dataset, classes)
    if dataset is None and classes is None:
        # Only outputs that name a class can vote; skipping the rest keeps long logs cheap.
        named = [it for it in items if find_classes(it[3], None)]
        dataset = guess_dataset(nb if isinstance(nb, dict) else {}, [m for _, _, m in _read(named, None)])
        classes = CLASS_SETS.get(dataset) if dataset else None
    found = _by_code(nb, _read(items, classes)) if isinstance(nb, dict) else _read(items, classes)
    mentions = tuple(m for _, _, m in found)
    curves: list[CurvePoint] = []
    for ci, _, source, text in items:
        if source in ("stdout", "stderr", "text/plain"):
            curves.extend(parse_curves(text, cell=ci))
    return ParsedMetrics(
        test_accuracy=_final(mentions, "test_accuracy"),
        test_loss=_final(mentions, "test_loss"),
        per_class_accuracy=_per_class(found, classes),
        dataset_guess=dataset,
        mentions=mentions,
        curves=tuple(curves),
    )
