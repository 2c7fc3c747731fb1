"""Walk a notebook's outputs and choose the final metrics the student reported."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from grader.datasets import registry

from . import budget
from .classes import CLASS_SETS, dataset_of_classes, find_classes, known_set_of
from .curves import parse_curves
from .html import parse_html
from .printsites import CellCode, read_print_sites
from .records import CurvePoint, MetricMention, ParsedMetrics
from .text import parse_text

# Characters read per output once its floods are thinned: the 1 MiB a running cell keeps in
# execute mode (`execute.Limits.max_output_bytes_per_cell`), so a saved notebook costs no more.
_MAX_OUTPUT = 1 << 20
# Words in a cell's code that name the dataset, when the outputs name no class.
_SOURCE_HINTS = tuple((s.name, re.compile(s.keyword, re.IGNORECASE)) for s in registry.by_priority() if s.keyword)
# A word a printed class carries that names its dataset ("digit 7"): it outvotes class names.
_CLASS_WORDS = tuple((s.name, re.compile(rf"\b{re.escape(s.class_word)}\b", re.IGNORECASE))
                     for s in registry.SPECS if s.class_word)


_MAX_RAW = 64 << 20  # characters of one output thinned (a few seconds); beyond, only head and tail
_RUN_MAX = 1200  # consecutive lines of one form kept whole; a longer run is a flood
_RUN_EDGE = 400  # lines kept at each end of a flood (its first and its latest results)
_RUN_SAMPLE = 400  # lines kept evenly spaced from a flood's middle (a curve keeps its shape)
# Class names and their one-word spellings (the registry's synonyms: "plane", "pasta"):
# "image 7: predicted ship, truth cat" is one form whatever the classes.
_CLASS_WORD = re.compile(r"(?<![A-Za-z])(?:" + "|".join(sorted(
    {w for names in CLASS_SETS.values() for n in names for w in re.split(r"[^A-Za-z]+", n) if len(w) > 2}
    | {w for more in registry.synonyms().values() for w in more if re.fullmatch(r"[A-Za-z]{3,}", w)},
    key=len, reverse=True)) + r")(?![A-Za-z])", re.IGNORECASE)


def _form(line: str) -> str:
    """A line's form: its text with numbers (and their padding, "%6d") and class names blanked.
    The first 400 characters decide it: a form is a line's shape, not its whole text."""
    return _CLASS_WORD.sub("_", budget.blank_numbers(line[:400]))


def squeeze_floods(text: str) -> str:
    """`text` with each flood of like lines thinned out; every other line is kept.

    Lines of one form (the same text once numbers and class names are blanked: "image 12:
    predicted cat, truth dog")
    repeated more than _RUN_MAX times in a row keep their first and last _RUN_EDGE lines and
    _RUN_SAMPLE lines evenly spaced between. A per-image log of 100 000 lines then costs what
    1 200 lines cost, and the different lines printed in its middle (per-class results) are
    all still read: only repetitions of one form are thinned, never a line of another form.
    """
    if text.count("\n") <= _RUN_MAX:
        return text
    lines = text.split("\n")
    out: list[str] = []
    start, shape = 0, None
    for i in range(len(lines) + 1):
        cur = _form(lines[i]) if i < len(lines) else None
        if cur == shape and cur is not None:
            continue
        run = lines[start:i]
        if len(run) > _RUN_MAX:
            middle = run[_RUN_EDGE:-_RUN_EDGE]
            step = len(middle) / _RUN_SAMPLE
            run = run[:_RUN_EDGE] + [middle[int(k * step)] for k in range(_RUN_SAMPLE)] + run[-_RUN_EDGE:]
        out.extend(run)
        start, shape = i, cur
    return "\n".join(out)


def _head_tail(text: str, cut: list[int] | None = None) -> str:
    """At most _MAX_OUTPUT characters: the start and the end of a longer text (floods thinned first).

    A cell that printed a flood before its results prints the results last, so the end
    is kept as well as the start. The characters left out are added to `cut[0]`.
    """
    if len(text) > _MAX_RAW:  # bound the work on a runaway output before thinning it
        if cut is not None:
            cut[0] += len(text) - _MAX_RAW
        text = text[:_MAX_RAW // 2] + "\n" + text[-(_MAX_RAW // 2):]
    text = squeeze_floods(text)
    if len(text) <= _MAX_OUTPUT:
        return text
    half = _MAX_OUTPUT // 2
    if cut is not None:
        cut[0] += len(text) - 2 * half
    return text[:half] + "\n" + text[-half:]


def _text(value: Any) -> str:
    """nbformat keeps multi-line strings either as str or as a list of lines."""
    if isinstance(value, list):
        value = "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _outputs(nb: Any) -> Iterator[tuple[int, int, str, str]]:
    """(cell index, output index, source, text) for every output worth reading, as stored.

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
                    yield ci, oi, pending[0], "".join(pending[1])
                    oi += 1
                pending = (name, [_text(out.get("text"))])
                continue
            if pending:
                yield ci, oi, pending[0], "".join(pending[1])
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
            yield ci, oi, pending[0], "".join(pending[1])


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
    for name, word in _CLASS_WORDS:
        if any(m.raw and word.search(m.raw) for m in mentions if m.class_name):
            votes[name] += 3
    if votes:
        return votes.most_common(1)[0][0]
    source = "\n".join(_text(c.get("source")) for c in nb.get("cells", []) or [] if isinstance(c, dict))
    hits = {key: len(rx.findall(source)) for key, rx in _SOURCE_HINTS}
    if any(hits.values()):
        return max(hits, key=lambda k: hits[k])
    ids = {int(m.class_name) for m in mentions if m.class_name and m.class_name.isdigit()}
    # Printed indices up to 10 can only be Food-11's classes (DatasetSpec.index_votes).
    return next((s.name for s in registry.SPECS if s.index_votes and ids and max(ids) == len(s.classes) - 1), None)


def _final(mentions: Sequence[MetricMention], kind: str) -> float | None:
    """Last test-split mention, else last unlabelled one, else last validation one; never train."""
    found = final_mention(mentions, kind)
    return found.value if found is not None else None


def final_mention(mentions: Sequence[MetricMention], kind: str) -> MetricMention | None:
    """The mention `_final` takes for `kind` ('test_accuracy', 'test_loss'): its `split_hint`
    says whether it was labelled test, left unlabelled (None) or labelled validation."""
    val_kind = kind.replace("test_", "val_")
    for wanted_kind, wanted in ((kind, "test"), (kind, None), (val_kind, "val")):
        picked = [m for m in mentions if m.kind == wanted_kind and m.split_hint == wanted]
        if picked:
            return picked[-1]
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
    cuts: dict[int, int] = {}
    items = _readable(list(_outputs(nb)) if isinstance(nb, dict) else [], cuts)
    items, unread = _within_budget(items, cuts)
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
        truncated=tuple(sorted(cuts.items())),
        unread=tuple(sorted(unread.items())),
    )


def _readable(items: list[tuple[int, int, str, str]], cuts: dict[int, int]) -> list[tuple[int, int, str, str]]:
    """Each output as `_head_tail` reads it, within each cell's share of `budget.RAW_CHARS`
    (the text any stage reads at all); characters left out are added to `cuts` by cell."""
    cells: dict[int, list[int]] = {}
    for k, (ci, *_rest) in enumerate(items):
        cells.setdefault(ci, []).append(k)
    order = list(cells)
    sizes = [min(len(it[3]), _MAX_RAW) for it in items]
    out = []
    shares = dict(zip(order, budget.share([sum(sizes[k] for k in cells[c]) for c in order], budget.RAW_CHARS)))
    room = {c: dict(zip(cells[c], budget.share([sizes[k] for k in cells[c]], shares[c]))) for c in order}
    for k, (ci, oi, source, text) in enumerate(items):
        cut = [0]
        limit = room[ci][k]
        if len(text) > limit:
            cut[0] += len(text) - limit
            text = text[:limit // 2] + "\n" + text[len(text) - limit // 2:] if limit > 1 else ""
        text = _head_tail(text, cut)
        if cut[0]:
            cuts[ci] = cuts.get(ci, 0) + cut[0]
        if text:
            out.append((ci, oi, source, text))
    return out


def _within_budget(items: list[tuple[int, int, str, str]],
                   cuts: dict[int, int]) -> tuple[list[tuple[int, int, str, str]], dict[int, int]]:
    """`items` thinned to the parse budget (`parsers.budget`): each cell's share of the
    notebook's lines and characters, then each output's share of its cell's. Returns the
    items and the lines left unread per cell; characters left out are added to `cuts`."""
    cells: dict[int, list[int]] = {}
    for k, (ci, *_rest) in enumerate(items):
        cells.setdefault(ci, []).append(k)
    lines = [it[3].count("\n") + 1 for it in items]
    chars = [len(it[3]) for it in items]
    order = list(cells)
    line_share = budget.share([min(budget.CELL_LINES, sum(lines[k] for k in cells[c])) for c in order],
                              budget.TOTAL_LINES)
    char_share = budget.share([min(budget.CELL_CHARS, sum(chars[k] for k in cells[c])) for c in order],
                              budget.TOTAL_CHARS)
    out = list(items)
    unread: dict[int, int] = {}
    for c, max_lines, max_chars in zip(order, line_share, char_share):
        ks = cells[c]
        for k, nl, nc in zip(ks, budget.share([lines[k] for k in ks], max_lines),
                             budget.share([chars[k] for k in ks], max_chars)):
            got = budget.thin(items[k][3], nl, nc, form=_form)
            if got.lines_skipped or got.chars_skipped:
                out[k] = (*items[k][:3], got.text)
                unread[c] = unread.get(c, 0) + got.lines_skipped
                cuts[c] = cuts.get(c, 0) + got.chars_skipped
    return out, unread
