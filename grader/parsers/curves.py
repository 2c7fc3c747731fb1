"""Training curves from progress lines: per-epoch or per-iteration loss, accuracy, lr."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from .classes import find_classes
from .records import CurvePoint
from .text import EPOCH_HEADER, clean_lines, scan_metrics
from .values import mask_line

_BRACKET = re.compile(r"^\s*\[\s*(\d+)\s*,\s*(\d+)\s*\]")  # the tutorial's "[1,  2000] loss: 2.189"
_EPOCH_OF = re.compile(r"^\s*\[\s*(\d+)\s*/\s*\d+\s*\]")  # "[3/10] loss: 1.2"
# "Epoch 3", "epoch3", "ep: 3", and "7 epoch, training accuracy: ..." (the number first).
_EPOCH = re.compile(r"(?<![A-Za-z])(?:epoch|ep)[\s_]*(?:[:#=\[(]\s*)?(\d+)(?:\s*/\s*(\d+))?(?![\d.])"
                    r"|(?<!after )(?<!in )(?<!for )(?<!of )\b(\d+)\s*(?:st|nd|rd|th)?\s*epoch\b(?!s)",
                    re.IGNORECASE)
_STEP = re.compile(r"(?<![A-Za-z])(?:step|iter(?:ation)?s?|batch|it)[\s_]*(?:[:#=\[(]\s*)?(\d+)(?:\s*/\s*(\d+))?",
                   re.IGNORECASE)


@dataclass(frozen=True)
class _Raw:
    series: str
    value: float
    epoch: int | None
    step: int | None
    steps_per_epoch: int | None
    order: int


def _series(kind: str, split: str | None) -> str:
    if kind == "lr":
        return "lr"
    return f"{split or 'train'}_{kind}"


def parse_curves(text: str, *, cell: int | None = None) -> list[CurvePoint]:
    """Curve points in printed text, in reading order.

    x is the epoch when the line gives one (fractional, epoch-1 + iteration/iterations,
    when it also gives the iteration), else the step, else a per-series line count --
    lines without any numbering count only when the series repeats.
    """
    if not isinstance(text, str) or not text:
        return []
    raws: list[_Raw] = []
    pending_epoch: int | None = None
    for order, line in enumerate(clean_lines(text)):
        try:
            if not line.strip():
                continue
            header = EPOCH_HEADER.match(line)
            if header:
                pending_epoch = _epoch_number(_EPOCH.search(line))
                continue
            masked = mask_line(line)
            if find_classes(line, None):
                pending_epoch = None
                continue  # per-class lines are not curves
            hits = scan_metrics(line, masked)
            if not hits:
                continue
            epoch = step = per = None
            b = _BRACKET.match(masked)
            if b:
                epoch, step = int(b.group(1)), int(b.group(2))
            else:
                e = _EPOCH.search(masked) or _EPOCH_OF.match(masked)
                s = _STEP.search(masked)
                if e:
                    epoch = _epoch_number(e)
                elif pending_epoch is not None:
                    epoch = pending_epoch
                if s:
                    step = int(s.group(1))
                    per = int(s.group(2)) if s.group(2) else None
            pending_epoch = None
            for h in hits:
                kind = h.token.kind
                v = h.reading.accuracy() if kind == "acc" else h.reading.loss()
                if v is None:
                    continue
                raws.append(_Raw(_series(kind, h.split), v, epoch, step, per, order))
        except Exception:  # noqa: BLE001 - one hostile line must not cost the rest of the evidence
            continue
    return _place(raws, cell)


def _epoch_number(m: re.Match[str] | None) -> int | None:
    """The epoch of an `_EPOCH` or `_EPOCH_OF` match (its first non-empty number group)."""
    if m is None:
        return None
    got = next((g for i, g in enumerate(m.groups()) if g is not None and i != 1), None)
    return int(got) if got is not None else None


def _place(raws: list[_Raw], cell: int | None) -> list[CurvePoint]:
    max_step: dict[str, int] = defaultdict(int)
    zero_based = any(r.epoch == 0 for r in raws)
    for r in raws:
        if r.epoch is not None and r.step is not None:
            max_step[r.series] = max(max_step[r.series], r.step)
    unnumbered: dict[str, int] = defaultdict(int)
    for r in raws:
        if r.epoch is None and r.step is None:
            unnumbered[r.series] += 1
    counters: dict[str, int] = defaultdict(int)
    out: list[CurvePoint] = []
    for r in raws:
        if r.epoch is not None and r.step is not None:
            per = r.steps_per_epoch or max_step[r.series] or 1
            x = r.epoch + (0 if zero_based else -1) + r.step / per
        elif r.epoch is not None:
            x = float(r.epoch)
        elif r.step is not None:
            x = float(r.step)
        else:
            if unnumbered[r.series] < 2:
                continue  # one unnumbered line is a final result, not a curve
            counters[r.series] += 1
            x = float(counters[r.series])
        out.append(CurvePoint(r.series, x, r.value, cell))
    return out


MAX_POINTS = 2000
"""Points kept per curve series in evidence.json (`downsample`)."""


def downsample(points: list[list[float]], max_points: int = MAX_POINTS) -> list[list[float]]:
    """At most `max_points` of a series' [x, y] points, its shape kept, by min-max decimation.

    The series is split into runs where x stops increasing (a learning-rate study prints one
    run per setting, and the report draws each run apart); each run gets a share of the
    points in proportion to its length (at least its first and last), is cut into buckets of
    consecutive points, and each bucket keeps its lowest and highest y in their order. The
    first and last point of every run are kept, so are its minimum and maximum (the best
    epoch). Series within the limit are returned unchanged. More runs than max_points // 4
    are decimated as one sequence.
    """
    if len(points) <= max_points:
        return points
    runs: list[list[list[float]]] = []
    for p in points:
        if not runs or p[0] <= runs[-1][-1][0]:
            runs.append([])
        runs[-1].append(p)
    if len(runs) > max_points // 4:
        runs = [points]
    out: list[list[float]] = []
    room = max_points - 2 * len(runs)  # each run's first and last point are always kept
    for run in runs:
        extra = room * len(run) // len(points)
        out.extend(_minmax(run, 2 + extra))
    return out


def _minmax(run: list[list[float]], keep: int) -> list[list[float]]:
    """`run` cut to about `keep` points: first, last, and each bucket's min and max y."""
    if len(run) <= keep:
        return run
    inner = run[1:-1]
    buckets = max(1, (keep - 2) // 2)
    size = len(inner) / buckets
    picked: list[list[float]] = [run[0]]
    for b in range(buckets):
        chunk = inner[int(b * size):int((b + 1) * size)]
        if not chunk:
            continue
        lo = min(range(len(chunk)), key=lambda i: chunk[i][1])
        hi = max(range(len(chunk)), key=lambda i: chunk[i][1])
        picked.extend(chunk[i] for i in sorted({lo, hi}))
    picked.append(run[-1])
    return picked
