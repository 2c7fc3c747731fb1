"""What the host checks itself before a probe record may earn points.

The probe runs in the student's own process, so student code can append lines to its events
file or call its `emit`: every record is a hint. An item earns points only when something
the host captured or computed agrees with it:

- a figure: the executed notebook, as the host's kernel client captured it, shows an image in
  the cell the figure event names (a PNG written into the probe's folder is not enough); for
  a histogram, a PNG there whose pixels the host classifies as a histogram (a JPEG, an SVG or
  an image it cannot classify goes to a TA), and a panel of that cell's PNGs whose bars, read
  from the pixels (grader.chartbars), are the recorded bars: each record needs a panel of its
  own, so one picture of anything cannot stand for the records of every layer;
- a histogram of a parameter: its recorded size, range, mean, spread and bars agree with that
  parameter of the model the independent evaluator captured (`verified["parameters"]`, one
  `param_summary` per parameter), in at least MIN_BARS bars;
- a training run: the cell where its optimizer stepped printed or drew something the host
  captured (a loss or accuracy line, an image), or a later cell showed a line chart as a PNG
  (a silent loop whose stored losses are plotted afterwards);
- a Normalize: the test transform the evaluator reproduced the student's predictions with
  holds it (`verified["transform"]`), or the probe saw its data reach a model in cells whose
  captured output shows that model's loss or accuracy.

`mark_run` writes what the host saw into the evidence (`figures[].host`,
`optimizers[].host_output`); the checks compare, so a rescore needs no notebook.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grader.chartbars import assign, png_pixels, profile_agrees, read_panels
from grader.saved_images import looks_like_histogram
from grader.sections import count_index

QUANTILES = 257
"""Quantiles per parameter in `verified["parameters"]`: 0, 1/256, ..., 1."""
MAX_TV = 0.1
"""Largest total-variation distance (0..1) between a histogram's recorded bars and the bars
rebuilt from the parameter's quantiles, once both are merged into at most COARSE_BARS bars
(plus 2 / numel: a small tensor's values sit near the rebuilt ones, not on them). The
quantiles place each value within 1/256 of the mass; the size, range, mean and spread are
compared exactly before, so this catches data of the right summary but another shape."""
COARSE_BARS = 16
MIN_BARS = 5
"""Fewest bars, and non-empty bars, a recorded histogram needs to be compared as a
distribution: fewer say nothing beyond the size, range, mean and spread compared before
(a one-bar record `counts=[n]` agrees with any parameter). A tensor of n < 20 values needs
only ceil(n / 4) bars, at least 2, and as many non-empty (`min_bars`): 6 biases in plt.hist's
10 bars may leave bars empty, bins='auto' draws 4 bars of them, and 5 of conv2's 16 biases
with one bar empty."""
MAX_PSEUDO = 4096
STAT_TOLERANCE = 1e-3
"""Largest |recorded - computed| of min, max, mean and std, as a fraction of the parameter's
range: both sides compute in float64 from the same float32 values."""
MAX_PNGS_KEPT = 16
"""Captured PNGs kept per cell for classification (a histogram may follow other images)."""
MAX_PIXEL_CHECKS = 60
"""Captured images per run classified from their pixels (~0.1 s each), a bound on host work:
the cells of histogram figures that name a parameter come first, and a cell stops at its
first histogram, so an honest run (one figure per layer or one grid) stays far below it."""
MAX_BAR_READS = 40
"""Captured PNGs per run whose histogram bars are read from the pixels (0.02-0.1 s for a figure
at 100 dpi, ~1 s at the 16-M-pixel cap; grader.chartbars), the cells of histogram figures that
name a parameter first: an honest run shows one figure per layer (10) or one grid."""
MAX_BAR_PIXELS = 32_000_000
"""Pixels per run (as the PNGs' headers declare them) whose bars are read, ~0.1 s per M on an
idle core: ten 300-dpi figures of one layer each (2 M each), or 30 grids at 100 dpi (1 M)."""
MAX_PANELS = 32
"""Panels per cell compared with its records (a grid of 10 layers has 10)."""
MAX_BAR_RECORDS = 64
"""Recorded histograms per run compared with panels (~1 ms per pair): an honest run records one
per parameter (10), a forging one thousands; the rest are not matched."""
_METRIC_LINE = re.compile(r"(?i)(loss|acc|accuracy|error|err|score|top-?1)\b[^\n]{0,80}?\d"
                          r"|\d[^\n]{0,80}?\b(loss|acc|accuracy)")


def param_summary(values: Any) -> dict[str, Any]:
    """The contract of `verified["parameters"][name]`, from one parameter's values:
    `{numel, min, max, mean, std, quantiles}` (float64; `quantiles` the QUANTILES evenly
    spaced ones, numpy's linear method) or `{"finite": False}` when any value is NaN or inf."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if not a.size or not np.isfinite(a).all():
        return {"finite": False}
    return {"numel": int(a.size), "min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()),
            "std": float(a.std()), "quantiles": [float(q) for q in np.quantile(a, np.linspace(0, 1, QUANTILES))]}


# ---------------------------------------------------------------- what the host captured


def _text(value: Any) -> str:
    return "".join(v for v in value if isinstance(v, str)) if isinstance(value, list) else str(value or "")


def _png(value: Any) -> bytes | None:
    try:
        return base64.b64decode(_text(value), validate=False)
    except (binascii.Error, ValueError):
        return None


def cell_outputs(nb: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """In[n] -> what the host captured of that cell: `{"images": int, "pngs": [bytes], "text": str}`
    (text capped at 200 000 characters, at most MAX_PNGS_KEPT PNGs kept)."""
    cells = nb.get("cells") or []
    out: dict[int, dict[str, Any]] = {}
    for count, index in count_index(nb).items():
        images, pngs, texts = 0, [], []
        for o in cells[index].get("outputs") or []:
            if not isinstance(o, Mapping):
                continue
            data = o.get("data") if isinstance(o.get("data"), Mapping) else {}
            if o.get("output_type") == "stream":
                texts.append(_text(o.get("text")))
            elif o.get("output_type") in ("display_data", "execute_result"):
                if any(m in data for m in ("image/png", "image/jpeg", "image/svg+xml")):
                    images += 1
                    if "image/png" in data and len(pngs) < MAX_PNGS_KEPT:
                        png = _png(data["image/png"])
                        if png:
                            pngs.append(png)
                texts.append(_text(data.get("text/plain")))
        out[count] = {"images": images, "pngs": pngs, "text": "\n".join(texts)[:200_000]}
    return out


def cell_stdout(nb: Mapping[str, Any]) -> dict[int, str]:
    """In[n] -> the cell's stdout as the host captured it: its `stdout` stream outputs joined in
    order (stderr, displays and results left out), which is what the probe's `out_at` offsets
    count (grader.runtext cuts it there). Cells whose In[n] is on more than one cell are left out."""
    cells = nb.get("cells") or []
    out: dict[int, str] = {}
    for count, index in count_index(nb).items():
        outputs = cells[index].get("outputs") if isinstance(cells[index], Mapping) else None
        text = "".join(_text(o.get("text")) for o in outputs if isinstance(o, Mapping)
                       and o.get("output_type") == "stream" and o.get("name", "stdout") == "stdout") \
            if isinstance(outputs, list) else ""
        if text:
            out[count] = text
    return out


def _match_bars(figures: list[dict[str, Any]], captured: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """id(figure) -> {"matched": [indices of its `hists` whose bars a panel of its cell shows],
    "panels": panels read in that cell, or None when its PNGs could not be read (unreadable,
    or MAX_BAR_READS / MAX_BAR_PIXELS spent)}. The records of all histogram figures of one cell share that
    cell's panels, one panel per record (grader.chartbars.assign): a record of several
    parameters (a histogram of their concatenation) is one record."""
    by_cell: dict[int, list[dict[str, Any]]] = {}
    for f in figures:
        if f.get("kind") == "histogram" and isinstance(f.get("cell"), int) and f["cell"] in captured:
            by_cell.setdefault(f["cell"], []).append(f)
    out: dict[int, dict[str, Any]] = {}
    budget, pixels, compared = MAX_BAR_READS, MAX_BAR_PIXELS, MAX_BAR_RECORDS
    # cells whose figures name a parameter first: they are what the items need
    for cell in sorted(by_cell, key=lambda c: not any(f.get("subjects") for f in by_cell[c])):
        records = [(f, i, h) for f in by_cell[cell] for i, h in enumerate(f.get("hists") or [])
                   if isinstance(h, Mapping) and h.get("subjects")][:max(compared, 0)]
        compared -= len(records)
        panels: list[Any] = []
        # every image of the cell read: else a record without a panel may be in one not read
        complete = bool(records) and len(captured[cell]["pngs"]) == captured[cell]["images"]
        for png in captured[cell]["pngs"] if records else []:
            size = png_pixels(png) or 0
            if budget <= 0 or size > pixels:
                complete = False
                break
            budget, pixels = budget - 1, pixels - size
            got = read_panels(png)
            complete = complete and got is not None
            panels.extend(got or [])
        complete = complete and len(panels) <= MAX_PANELS
        fits = [[k for k, p in enumerate(panels[:MAX_PANELS])
                 if profile_agrees(p, h.get("counts") or [], h.get("edges") or [])] for _, _, h in records]
        for f in by_cell[cell]:
            out[id(f)] = {"matched": [], "panels": len(panels) if complete else None}
        for (f, i, _), panel in zip(records, assign(fits)):
            if panel is not None:
                out[id(f)]["matched"].append(i)
    return out


def mark_run(ev: dict[str, Any], nb: Mapping[str, Any]) -> None:
    """Adds to an executed notebook's evidence, in place, what the host captured of the cells
    its probe records name: `figures[].host = {"images": n, "histogram": bool|None, "matched":
    [i], "panels": n|None}` (images the cell showed; whether one looks like a histogram, None
    when the pixels cannot tell; for a histogram figure, the indices of its `hists` whose bars a
    panel of that cell's PNGs shows, and how many histogram panels were read there, None when
    none could be read: `_match_bars`),
    `optimizers[].host_output` (a cell it stepped in printed a metric line or showed an image,
    or a later cell showed a line chart as a PNG: `host_chart`, its In[n])
    and `normalization[].host_output` (the same, of a cell where its data reached a model)."""
    captured = cell_outputs(nb)
    figures = [f for f in ev.get("figures") or [] if isinstance(f, dict)]
    # The cells whose histogram figures name a parameter are what the items need: classified
    # first; a cell's verdict is True at its first PNG that looks like a histogram, False when
    # every image it showed is a PNG that does not, None when that is not known (a JPEG or
    # SVG, or the run's budget of pixel checks spent): only True corroborates.
    wanted = sorted({f["cell"] for f in figures if f.get("kind") == "histogram" and isinstance(f.get("cell"), int)
                     and f["cell"] in captured}, key=lambda c: not any(
        f.get("cell") == c and f.get("subjects") for f in figures))
    looked: dict[int, bool | None] = {}
    budget = MAX_PIXEL_CHECKS
    for cell in wanted:
        seen, verdicts = captured[cell], []
        for png in seen["pngs"]:
            if budget <= 0:
                break
            budget -= 1
            verdicts.append(looks_like_histogram(png))
            if verdicts[-1] is True:
                break
        looked[cell] = True if True in verdicts else (
            False if verdicts and all(v is False for v in verdicts) and len(verdicts) == seen["images"] else None)
    bars = _match_bars(figures, captured)
    for f in figures:
        seen = captured.get(f.get("cell")) if isinstance(f.get("cell"), int) else None
        histogram = looked.get(f["cell"]) if seen and f.get("kind") == "histogram" else None
        f["host"] = {"images": seen["images"] if seen else 0, "histogram": histogram,
                     **(bars.get(id(f)) or ({"matched": [], "panels": None} if f.get("kind") == "histogram" else {}))}
    # Cells where the host captured a line chart as a PNG: a training loop that prints nothing
    # and stores its losses, plotted in a later cell, shows its run there.
    charts = sorted({f["cell"] for f in figures if f.get("kind") == "line" and isinstance(f.get("cell"), int)
                     and (captured.get(f["cell"]) or {}).get("pngs")})
    for key, cells in (("optimizers", "cells_stepped"), ("normalization", "fed_cells")):
        for rec in ev.get(key) or []:
            stepped = [c for c in rec.get(cells) or [] if isinstance(c, int)]
            shown = [captured.get(c) for c in stepped]
            rec["host_output"] = any(s and (s["images"] or _METRIC_LINE.search(s["text"])) for s in shown)
            if key == "optimizers" and not rec["host_output"] and stepped:
                later = [c for c in charts if c > max(stepped)]
                if later:
                    rec["host_output"], rec["host_chart"] = True, later[0]


# ---------------------------------------------------------------- comparisons


def figure_captured(f: Mapping[str, Any]) -> bool:
    """The host saw an image in the cell the figure event names (and, for a histogram, a PNG
    there that its pixels say is a histogram, or whose bars are a record's). Evidence from
    before this check: False."""
    host = f.get("host")
    if not isinstance(host, Mapping):
        return False
    if f.get("kind") == "histogram":  # a PNG the host's pixels call a histogram; a JPEG, SVG or unsure one is not
        return bool(host.get("images")) and (host.get("histogram") is True or bool(host.get("matched")))
    return bool(host.get("images"))


def parameters_of(verified: Any) -> Mapping[str, Any] | None:
    """`verified["parameters"]` when the independent evaluator reported the captured model's
    parameters, else None."""
    params = verified.get("parameters") if isinstance(verified, Mapping) else None
    return params if isinstance(params, Mapping) and params else None


def find_parameter(params: Mapping[str, Any], subject: str) -> Mapping[str, Any] | None:
    """The captured model's parameter a histogram subject (`conv1.weight`) names: the same name,
    or one of the two inside a wrapper (`net.conv1.weight`, `0.conv1.weight`) when unique."""
    if isinstance(params.get(subject), Mapping):
        return params[subject]
    near = [v for k, v in params.items() if isinstance(v, Mapping)
            and (k.endswith("." + subject) or subject.endswith("." + k))]
    return near[0] if len(near) == 1 else None


def _rebuilt_bars(stats: Mapping[str, Any], edges: np.ndarray) -> np.ndarray:
    """The parameter's counts in `edges`, from its quantiles: the quantile function sampled at
    min(numel, MAX_PSEUDO) even steps (a small tensor's own values, nearly), each standing
    for numel / that many values."""
    q = np.maximum.accumulate(np.asarray(stats["quantiles"], dtype=np.float64))
    numel = int(stats["numel"])
    m = max(2, min(numel, MAX_PSEUDO))
    values = np.interp(np.linspace(0.0, 1.0, m), np.linspace(0.0, 1.0, len(q)), q)
    return np.histogram(values, bins=edges)[0] * (numel / m)


def _coarse(counts: np.ndarray) -> np.ndarray:
    size = max(1, math.ceil(len(counts) / COARSE_BARS))
    return np.add.reduceat(counts, np.arange(0, len(counts), size))


def min_bars(numel: int) -> int:
    """Fewest bars, and non-empty bars, a histogram of `numel` values needs (MIN_BARS, fewer for
    a small tensor, never under 2)."""
    return max(2, min(MIN_BARS, math.ceil(numel / 4)))


def histogram_disagrees(hist: Mapping[str, Any], stats: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a histogram's recorded data is not the parameter(s) `stats` describe (several: a
    histogram of their concatenation), or None when it agrees in size, range, mean, spread and
    the shape of its bars. A reason is one clause for the TA."""
    if not stats or any(s.get("finite") is False for s in stats):
        return "the captured model's parameter is not finite"
    try:
        sizes = np.array([int(s["numel"]) for s in stats], dtype=np.float64)
        lo, hi = min(float(s["min"]) for s in stats), max(float(s["max"]) for s in stats)
        mean = float(np.dot(sizes, [float(s["mean"]) for s in stats]) / sizes.sum())
        second = float(np.dot(sizes, [float(s["std"]) ** 2 + float(s["mean"]) ** 2 for s in stats]) / sizes.sum())
        std = math.sqrt(max(second - mean * mean, 0.0))
        quantiles_ok = all(len(s["quantiles"]) >= 2 for s in stats)
    except (KeyError, TypeError, ValueError):
        return "the evaluator's description of the parameter is incomplete"
    n = hist.get("n")
    if n != int(sizes.sum()):
        return f"it holds {n} values and the parameter {int(sizes.sum())}"
    tol = STAT_TOLERANCE * max(hi - lo, 1e-12) + 1e-9
    for key, want in (("min", lo), ("max", hi), ("mean", mean), ("std", std)):
        got = hist.get(key)
        if not isinstance(got, (int, float)) or abs(float(got) - want) > tol:
            return f"its {key} is {got!r} and the parameter's {want:.6g}"
    counts, edges = hist.get("counts"), hist.get("edges")
    if not (isinstance(counts, list) and isinstance(edges, list) and counts and len(edges) == len(counts) + 1
            and quantiles_ok):
        return "the record holds no bars to compare"
    try:  # grader.evidence bounds a record's numbers; evidence.json from before it did not
        got_bars = np.asarray(counts, dtype=np.float64)
        e = np.asarray(edges, dtype=np.float64)
    except (OverflowError, TypeError, ValueError):
        return "its bars are not numbers the grader can compare"
    if not (np.isfinite(got_bars).all() and np.isfinite(e).all()) or np.any(got_bars < 0):
        return "its bars are not finite non-negative counts"
    if got_bars.sum() <= 0 or np.any(np.diff(e) <= 0):
        return "its bars are empty or out of order"
    filled = int(np.count_nonzero(got_bars))
    need = min_bars(int(sizes.sum()))
    if len(got_bars) < need or filled < need:
        return (f"its {len(got_bars)} bar(s), {filled} of them non-empty, are too few to show a distribution "
                f"of {int(sizes.sum())} values (at least {need} are needed)")
    want_bars = sum(_rebuilt_bars(s, e) for s in stats)
    if want_bars.sum() <= 0:
        return "none of the parameter's values fall inside its bars"
    a, b = _coarse(got_bars), _coarse(np.asarray(want_bars))
    tv = 0.5 * float(np.abs(a / a.sum() - b / b.sum()).sum())
    if tv > MAX_TV + 2.0 / sizes.sum():  # a small tensor: two values across a bar's edge
        return f"its bars differ from the parameter's distribution (total variation {tv:.2f})"
    return None


# ---------------------------------------------------------------- the verified test transform

_NORMALIZE = re.compile(r"Normalize\(mean=(\[[^\]]*\]), std=(\[[^\]]*\])")


def verified_normalizers(verified: Any) -> list[tuple[list[float], list[float]]] | None:
    """(mean, std) of each Normalize in the test transform the evaluator reproduced the
    student's predictions with, or None when the run was not verified. Reads the structured
    `steps` when present, else the `transform` text (`grader.verify.transform_text`)."""
    if not isinstance(verified, Mapping) or not isinstance(verified.get("transform"), str) \
            or not isinstance(verified.get("test_accuracy"), (int, float)):
        return None
    steps = verified.get("steps")
    found = []
    if isinstance(steps, list):
        for s in steps:
            if isinstance(s, Mapping) and s.get("op") == "Normalize":
                found.append((s.get("mean"), s.get("std")))
    else:
        for m in _NORMALIZE.finditer(verified["transform"]):
            try:
                found.append((json.loads(m.group(1)), json.loads(m.group(2))))
            except ValueError:
                continue
    return [(list(map(float, a)), list(map(float, b))) for a, b in found
            if isinstance(a, list) and isinstance(b, list)
            and all(isinstance(x, (int, float)) for x in a + b)]


# ---------------------------------------------------------------- the verified block of a dataset


def verified_blocks(ev: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every verified block of an evidence dict (or a section view of one) that holds a measured
    test accuracy: `ev["verified"]` (the model of the notebook's last test evaluation), then
    `ev["verified_more"]` (one per other dataset a model was tested on), absent ones skipped."""
    more = ev.get("verified_more")
    found = []
    for v in [ev.get("verified"), *(more if isinstance(more, list) else [])]:
        acc = v.get("test_accuracy") if isinstance(v, Mapping) else None
        if isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc):
            found.append(v)
    return found


def verified_for(ev: Mapping[str, Any], dataset: str | None) -> Mapping[str, Any] | None:
    """The verified block of `ev` for `dataset`: the host's own evaluation of a model of that
    dataset (`dataset` equal, a measured `test_accuracy`), from `ev["verified"]` or
    `ev["verified_more"]`; None when the grader tested no model of `dataset` there."""
    if not dataset:
        return None
    return next((v for v in verified_blocks(ev) if v.get("dataset") == dataset), None)
