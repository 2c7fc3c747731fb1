"""What each training run printed: its per-epoch curves and final metrics, cut from the cells'
stdout, and whether a printed accuracy looks typed rather than computed (grader.runrecords).

A cell that trains several runs (a loop over settings) prints all their lines into one output.
The probe stamps where each run's optimizer first and last stepped (`optimizers[].out_at`) and
where each evaluation began (`evaluations[].out_at`), in characters the cell had written to
stdout; the cell's stdout as the host captured it is cut there (`split_cell`): the lines from a
run's first step up to the next run's first step (or the next evaluation of another run) are
that run's, those after its last step are where its final metrics stand. When the offsets are
missing, or do not fit the captured text (an output cut to its cap, carriage returns collapsed),
the cell is read whole (`whole_cell`): one run in it gets everything, several get their curves
only when the printed epoch counter restarts once per run, and their test accuracies only when
the cell printed exactly one per evaluation the probe saw there (or one per run), in order.
Without the notebook the metric lines evidence kept (`metrics.mentions`) stand for the cells.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from grader.parsers import parse_curves, parse_text

FINAL_KINDS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "train_accuracy", "train_loss")
"""The printed totals a run's `metrics` may hold, each its last value printed."""
MAX_TEXT = 200_000
"""Characters of one cell's stdout read (a longer output's head is read)."""
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(s for s in src if isinstance(s, str)) if isinstance(src, list) else str(src or "")


class Cells:
    """The notebook's cells by In[n]: `index` (In[n] -> cell index, from the notebook, else the
    probe's records), `count` (the reverse), `sources` (code by index), `stdout` (In[n] -> what
    the host captured, execute mode only: saved mode's outputs identical to the handout's were
    dropped from the evidence, so its `metrics.mentions` stand for them)."""

    def __init__(self, ev: Mapping[str, Any], nb: Mapping[str, Any] | None) -> None:
        from grader.corroborate import cell_stdout
        from grader.sections import count_index

        self.index: dict[int, int] = {}
        for key in ("models", "optimizers", "training", "evaluations", "errors", "schedulers", "lr_settings",
                    "data_use", "stored_cells"):
            for r in ev.get(key) or []:
                if isinstance(r, Mapping) and _int(r.get("cell")) is not None and _int(r.get("index")) is not None:
                    self.index[r["cell"]] = r["index"]
        self.sources: list[str] = []
        self.stdout: dict[int, str] = {}
        cells = nb.get("cells") if isinstance(nb, Mapping) else None
        if isinstance(cells, list):
            self.sources = [_source(c) if isinstance(c, Mapping) and c.get("cell_type") == "code" else ""
                            for c in cells]
            self.index.update(count_index(nb))  # the notebook's own In[n] -> index wins
            if ev.get("mode") == "execute":  # saved: outputs identical to the handout's were dropped
                self.stdout = cell_stdout(nb)
        self.count = {i: n for n, i in self.index.items()}

    def earlier_code(self, count: int | None) -> list[str]:
        """The code of the cell In[count] and of the cells above it."""
        i = self.index.get(count) if count is not None else None
        return self.sources[:i + 1] if i is not None else []

    def mention_text(self, ev: Mapping[str, Any], *, by_index: bool = False) -> dict[int, str]:
        """In[n] (or the cell index, `by_index`) -> the printed metric lines the evidence kept of
        that cell (`metrics.mentions`, which name cells by index)."""
        out: dict[int, list[str]] = {}
        for m in (ev.get("metrics") or {}).get("mentions") or []:
            if not isinstance(m, Mapping) or _int(m.get("cell")) is None or not isinstance(m.get("raw"), str) \
                    or m.get("kind") == "class_accuracy":  # a class's line is neither a curve nor a total
                continue
            count = m["cell"] if by_index else self.count.get(m["cell"])
            if count is None:
                continue
            lines = out.setdefault(count, [])
            if not lines or lines[-1] != m["raw"]:
                lines.append(m["raw"])
        return {c: "\n".join(lines) + "\n" for c, lines in out.items()}


def read_segment(text: str, cell: int | None) -> dict[str, Any]:
    """The curves (series -> [[x, value], ...]) and final metrics ({kind: value}) printed in
    `text`, with the raw line of each final metric (`lines`: {kind: line}) and the cell (In[n])
    it came from (`cell`)."""
    curves: dict[str, list[list[float]]] = {}
    for p in parse_curves(text[:MAX_TEXT]):
        curves.setdefault(p.series, []).append([p.x, p.value])
    metrics: dict[str, float] = {}
    lines: dict[str, str] = {}
    for m in parse_text(text[:MAX_TEXT]):
        if m.kind in FINAL_KINDS and math.isfinite(m.value):
            metrics[m.kind], lines[m.kind] = m.value, m.raw
    return {"curves": curves, "metrics": metrics, "lines": lines, "cell": cell}


def test_accuracies(text: str) -> list[Any]:
    """The finite test accuracies printed in `text`, in order (grader.parsers metrics)."""
    return [m for m in parse_text(text[:MAX_TEXT]) if m.kind == "test_accuracy" and math.isfinite(m.value)]


def _line_starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]


def split_cell(text: str, marks: Sequence[tuple[int, int, str]]) -> dict[int, str] | None:
    """The text of each run in one cell's stdout, from `marks` (offset in characters, run
    number, `first` | `last` | `eval`): a line belongs to the run of the latest mark at or
    before its start; a run's lines after its `last` mark come after its training. None when an
    offset lies beyond the text (the offsets do not fit what was captured)."""
    if not marks or any(not isinstance(o, int) or o < 0 or o > len(text) for o, _, _ in marks):
        return None
    order = sorted(marks, key=lambda m: (m[0], m[2] != "last"))
    out: dict[int, list[str]] = {}
    starts = _line_starts(text)
    k = -1
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        while k + 1 < len(order) and order[k + 1][0] <= start:
            k += 1
        if k >= 0 and end > start:
            out.setdefault(order[k][1], []).append(text[start:end])
    return {run: "".join(parts) for run, parts in out.items()}


def restarts(points: list[list[float]]) -> list[list[list[float]]]:
    """A series cut where x stops increasing (a loop printed one curve per run)."""
    runs: list[list[list[float]]] = []
    for p in points:
        if not runs or p[0] <= runs[-1][-1][0]:
            runs.append([])
        runs[-1].append(p)
    return runs


def whole_cell(text: str, runs: Sequence[int], cell: int | None,
               evals: Sequence[int] = ()) -> dict[int, dict[str, Any]]:
    """Each run's share of a cell read whole (no usable offsets): all of it for one run. For
    several: a curve series whose epoch counter restarts once per run is split in order; the
    cell's printed test accuracies are the runs' when there is exactly one per evaluation the
    probe saw there (`evals`: the run of each evaluation of the cell, in the order they ran),
    else one per run, in order; the last of a run's is its final one."""
    seg = read_segment(text, cell)
    if len(runs) == 1:
        return {runs[0]: seg}
    out: dict[int, dict[str, Any]] = {r: {"curves": {}, "metrics": {}, "lines": {}, "cell": cell} for r in runs}
    for series, points in seg["curves"].items():
        parts = restarts(points)
        if len(parts) == len(runs):
            for r, part in zip(runs, parts):
                out[r]["curves"][series] = part
    tests = test_accuracies(text)
    owners = list(evals) if evals and len(tests) == len(evals) else (list(runs) if len(tests) == len(runs) else [])
    seen: dict[int, int] = {}
    for r, m in zip(owners, tests):
        seen[r] = seen.get(r, 0) + 1
        out[r]["metrics"]["test_accuracy"], out[r]["lines"]["test_accuracy"] = m.value, m.raw
        if len(owners) > len(runs) and "test_acc" not in out[r]["curves"]:
            out[r]["curves"].setdefault("test_acc#", []).append([float(seen[r]), m.value])
    for r in runs:  # one point per evaluation, numbered: a curve when there are two or more
        pts = out[r]["curves"].pop("test_acc#", [])
        if len(pts) >= 2:
            out[r]["curves"]["test_acc"] = pts
    return out


def saved_runs(ev: Mapping[str, Any], cells: Cells) -> list[dict[str, Any]]:
    """Saved mode: one run per cell that printed a curve or a test accuracy, several when its
    epoch counter restarts; the learning rate its cell printed (else set) when there is one per run."""
    lrs = {s.get("index"): (s.get("printed") or s.get("code") or [])
           for s in ev.get("lr_settings") or [] if isinstance(s, Mapping)}
    runs: list[dict[str, Any]] = []
    for c, text in sorted(cells.mention_text(ev, by_index=True).items()):  # by index, then In[n] when known
        seg = read_segment(text, c)
        n = max((len(restarts(p)) for p in seg["curves"].values()), default=1)
        if not seg["curves"] and "test_accuracy" not in seg["metrics"]:
            continue
        waiting = [r for r in runs if "test_accuracy" not in r["metrics"]]
        finals = test_accuracies(text)
        if not seg["curves"] and waiting and len(finals) <= len(waiting):
            # a cell that only evaluates: its accuracies are those of the runs above still without one
            for r, m in zip(waiting[len(waiting) - len(finals):], finals):
                if len(finals) == 1:  # one evaluation: its other totals (a test loss) are that run's too
                    r["metrics"].update(seg["metrics"])
                r["metrics"]["test_accuracy"], r["_lines"]["test_accuracy"] = m.value, (m.raw, c)
                r["_cells"].add(c)
            continue
        keys = list(range(len(runs), len(runs) + n))
        shares = whole_cell(text, keys, c)
        rates = lrs.get(c) or []
        for i, k in enumerate(keys):
            lr = _num(rates[i]) if len(rates) == n else (_num(rates[0]) if len(rates) == 1 else None)
            runs.append({"status": "not-run", "optimizer_ref": None, "model_refs": [], "lr": lr, "structure": {},
                         "metrics": shares[k]["metrics"],
                         "curves": {f"{s} (printed)": p for s, p in shares[k]["curves"].items()},
                         "verified": {"reason": "saved mode: nothing was run"}, "notes": [],
                         "_cells": {c}, "_lines": {kind: (line, c) for kind, line in shares[k]["lines"].items()}})
    for r in runs:
        r["_cells"] = {cells.count.get(i, i) for i in r["_cells"]}
        r["_lines"] = {k: (line, cells.count.get(i, i)) for k, (line, i) in r["_lines"].items()}
    return runs


def written_as(value: float, line: str) -> str | None:
    """The number in `line` that printed `value` (a fraction 0..1, printed as a fraction or a
    percentage), as written there (`98.10`), or None."""
    for m in _NUMBER.finditer(line or ""):
        try:
            x = float(m.group(0))
        except ValueError:
            continue
        decimals = len(m.group(0).split(".")[1]) if "." in m.group(0) else 0
        tol = 0.5 * 10 ** -decimals + 1e-9
        if abs(x - value) <= tol or abs(x - 100 * value) <= tol:
            return m.group(0)
    return None


def significant(token: str) -> int:
    """Significant digits of a number as written (`98.10` -> 4, `0.9` -> 1)."""
    return len(token.replace(".", "").lstrip("0"))


MIN_SIGNIFICANT = 3
"""Fewest significant digits a printed number needs before its presence in the code counts as
typed: `0.9` (a momentum) or `97` may stand in code for anything, `97.80` does not."""


def literal_in(token: str, sources: Sequence[str]) -> bool:
    """`token` (a number as printed) occurs as a number of its own in one of `sources`."""
    if significant(token) < MIN_SIGNIFICANT:
        return False
    rx = re.compile(r"(?<![\w.])" + re.escape(token) + r"(?![\w]|\.\d)")
    return any(rx.search(s or "") for s in sources)


def tolerance(verified: float, n: int) -> float:
    """How far (fraction 0..1) a printed accuracy may be from the host's measure on `n` test
    images before it is not what the model does: 0.01 + 2 standard errors."""
    p = min(max(verified, 0.0), 1.0)
    return 0.01 + 2.0 * math.sqrt(p * (1.0 - p) / max(n, 1))


def printed_check(printed: float | None, line: str | None, verified: Mapping[str, Any],
                  sources: Sequence[str]) -> dict[str, Any]:
    """The run's printed test accuracy against the host's measure of its model: printed,
    verified, delta (printed - verified), typed (bool: the number as printed is a literal in
    `sources`, the code of the printing cell and the cells before it, or it is further from the
    measure than `tolerance`), why (one line). {} when the run printed no test accuracy. A flag
    for a check and a TA, never a fail by itself."""
    if printed is None:
        return {}
    acc = verified.get("test_accuracy")
    n = verified.get("n")
    measured = isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc)
    token = written_as(printed, line or "")
    typed_src = token is not None and literal_in(token, sources)
    out: dict[str, Any] = {"printed": printed, "verified": acc if measured else None,
                           "delta": round(printed - acc, 6) if measured else None, "typed": typed_src}
    far = measured and isinstance(n, int) and n > 0 and abs(printed - acc) > tolerance(acc, n)
    if typed_src:
        out["why"] = f"the printed {token} is written in the notebook's code"
    if far:
        out["typed"] = True
        gap = (f"printed {100 * printed:.2f} % but the grader measures {100 * acc:.2f} % on {n} test images "
               f"(more than {100 * tolerance(acc, n):.1f} points apart)")
        out["why"] = f"{out['why']}; {gap}" if typed_src else gap
    if not out["typed"]:
        out["why"] = (f"printed {100 * printed:.2f} %, measured {100 * acc:.2f} % on {n} test images"
                      if measured else "the grader has no measure of this run's model to compare with")
    return out
