"""The overfitting gap check: a baseline whose gap is shown and measured, regularized runs compared
with it, and the student's claims ("dropout reduced overfitting") held against the measurement.

It reads the run records of every notebook (`evidence["runs"]`, grader.evidence_model.Run). A
run's gap is known two ways: from its curves (`curve_gap`: training minus validation accuracy as
the notebook printed them per epoch, at the last epoch both were printed, and the largest over
epochs) and from the host's own evaluation of its captured model on its own training and
validation files (`Run.verified` train_accuracy, val_accuracy, gap: grader.verify.splits). What
the two disagree on beyond `tolerance`, and a claim the measurement contradicts, go to a TA
with both numbers: never silently accepted, never failed on the grader's word alone.

Regularizers in effect come from `Run.regularizers` (grader/regularizers.py, when present), else
from the run's recorded factors (an optimizer's weight decay, Dropout/BatchNorm layers in its
model's record: declared, not shown to have run).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from grader.checks import params as P
from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, fmt_pct, where
from grader.regularizers import layer_in_effect

MISMATCH = "gap-mismatch"
"""Flag: a run's gap from its printed curves is far (beyond `tolerance`) from the gap the host measured."""
CONTRADICTED = "claim-contradicted"
"""Flag: the student's text says a regularizer reduced overfitting; the measured gaps say otherwise."""

REGULARIZERS = ("weight_decay", "l1", "l2", "dropout", "batchnorm", "augmentation", "early_stopping")
"""Regularizer names, in the order messages list them."""
_SHOW = {"weight_decay": "weight decay", "l1": "an L1 penalty", "l2": "an L2 penalty", "dropout": "dropout",
         "batchnorm": "batch normalization", "augmentation": "data augmentation", "early_stopping": "early stopping"}
_WORDS: Mapping[str, re.Pattern[str]] = {
    "dropout": re.compile(r"drop[\s-]?out", re.I),
    "weight_decay": re.compile(r"weight[\s_-]?decay|\bl2\b|ridge", re.I),
    "l1": re.compile(r"\bl1\b|lasso", re.I),
    "augmentation": re.compile(r"augment", re.I),
    "batchnorm": re.compile(r"batch[\s_-]?norm|\bbn\b", re.I),
    "early_stopping": re.compile(r"early[\s_-]?stop", re.I),
}
_REDUCED = re.compile(r"\b(?:reduc\w*|decreas\w*|lower\w*|narrow\w*|shrink\w*|shrunk|smaller|less|mitigat\w*|"
                      r"prevent\w*|alleviat\w*|fight\w*|combat\w*|curb\w*|helps?|helped|closes?|closed)\b", re.I)
_OVERFIT = re.compile(r"over-?fit\w*|\bgap\b|generaliz\w*|generalis\w*", re.I)
_NEGATED = re.compile(r"\b(?:not|no|didn'?t|doesn'?t|did not|does not|never|hardly|barely|without)\b", re.I)
MAX_CLAIM_CHARS = 200_000
"""Text of a notebook's markdown read for claims at most (characters)."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# ---------------------------------------------------------------- gaps from curves


def _series(curves: Mapping[str, Any], split: str, kind: str) -> tuple[str, list[tuple[float, float]]] | None:
    """The printed series of `split` (train, val; test stands for val when a notebook names its
    validation split so) and `kind` (acc, loss): (its name, [(x, value)])."""
    names = [f"{split}_{kind} (printed)"] + ([f"test_{kind} (printed)"] if split == "val" else [])
    for name in names:
        pts = curves.get(name)
        if isinstance(pts, list):
            got = [(float(p[0]), float(p[1])) for p in pts if isinstance(p, (list, tuple)) and len(p) == 2
                   and _num(p[0]) is not None and _num(p[1]) is not None]
            if got:
                return name, got
    return None


def curve_gap(curves: Mapping[str, Any]) -> dict[str, Any] | None:
    """The gap the run's printed curves show, or None without a training and a validation curve
    of one kind: `{kind: accuracy|loss, last, max, at, series, points}`. Accuracy: training minus
    validation accuracy (fractions 0..1; a curve printed in percent is scaled), at the last epoch
    both were printed (`at`) and the largest over those epochs; loss: validation minus training.
    `points`: [(epoch, training, validation)] at the epochs both were printed."""
    for kind, sign in (("acc", 1.0), ("loss", -1.0)):
        tr, va = _series(curves, "train", kind), _series(curves, "val", kind)
        if tr is None or va is None:
            continue
        scale = 0.01 if kind == "acc" and max(v for _, v in tr[1] + va[1]) > 1.5 else 1.0
        t_at = {round(x, 3): v * scale for x, v in tr[1]}
        v_at = {round(x, 3): v * scale for x, v in va[1]}
        common = sorted(set(t_at) & set(v_at))
        points = [(x, t_at[x], v_at[x]) for x in common] or [  # printed at different points: the last of each
            (max(t_at), tr[1][-1][1] * scale, va[1][-1][1] * scale)]
        gaps = [sign * (t - v) for _, t, v in points]
        return {"kind": "accuracy" if kind == "acc" else "loss", "last": round(gaps[-1], 4),
                "max": round(max(gaps), 4), "at": points[-1][0], "series": va[0], "points": points}
    return None


# ---------------------------------------------------------------- regularizers in effect


def in_effect(run: Mapping[str, Any], ev: Mapping[str, Any]) -> tuple[frozenset[str], bool]:
    """(the regularizers in effect while the run trained, whether that is shown by `Run.regularizers`
    (True) or only read from its factors: its optimizer's weight decay and the layers its model's
    record declares (False))."""
    reg = run.get("regularizers")
    found: set[str] = set()
    if isinstance(reg, Mapping) and reg:
        if (_num(reg.get("weight_decay")) or 0) > 0:
            found.add("weight_decay")
        pen = reg.get("penalty")
        if isinstance(pen, Mapping) and pen:
            kind = str(pen.get("kind") or "")
            found |= {"l1"} if kind == "L1" else {"l2"} if kind == "L2" else {"l1", "l2"} if "L1" in kind else set()
        for name in ("dropout", "batchnorm"):
            mode = reg.get(name)
            if layer_in_effect(mode):  # run in training mode, not left in eval mode after the first epoch
                found.add(name)
        aug = reg.get("augmentation")
        if isinstance(aug, Mapping) and aug.get("train"):
            found.add("augmentation")
        sel = reg.get("selection")
        # stopping early, or keeping the best epoch's weights, decided on a split other than the test split
        if isinstance(sel, Mapping) and sel.get("how") in ("early-stopping", "best-checkpoint") \
                and sel.get("split") != "test":
            found.add("early_stopping")
        return frozenset(found), True
    if (_num(run.get("weight_decay")) or 0) > 0:
        found.add("weight_decay")
    refs = set(run.get("model_refs") or [])
    for m in ev.get("models") or []:
        if isinstance(m, Mapping) and m.get("ref") in refs:
            classes = {str(layer[1]) for layer in m.get("layers") or [] if isinstance(layer, list) and len(layer) > 1}
            found |= {"dropout"} if any(c.startswith("Dropout") for c in classes) else set()
            found |= {"batchnorm"} if any(c.startswith("BatchNorm") for c in classes) else set()
    return frozenset(found), False


def _named(regs: Sequence[str] | frozenset[str]) -> str:
    return ", ".join(_SHOW[r] for r in REGULARIZERS if r in regs) or "no regularizer"


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class _Run:
    ev: Mapping[str, Any]
    run: Mapping[str, Any]
    regs: frozenset[str]
    shown_regs: bool
    curve: dict[str, Any] | None
    order: int

    @property
    def name(self) -> str:
        return str(self.run.get("name") or "run ?")

    @property
    def verified(self) -> Mapping[str, Any]:
        v = self.run.get("verified")
        return v if isinstance(v, Mapping) else {}

    @property
    def gap(self) -> float | None:
        return _num(self.verified.get("gap"))

    def measured(self) -> str:
        v = self.verified
        return (f"{fmt_pct(_num(v.get('train_accuracy')))} training vs {fmt_pct(_num(v.get('val_accuracy')))} "
                f"validation accuracy on {v.get('train_n')} and {v.get('val_n')} of its own images: gap "
                f"{fmt_pct(self.gap)}")

    def why_unmeasured(self) -> str:
        return str(self.verified.get("gap_reason") or self.verified.get("reason")
                   or "its model was not captured").rstrip(".")

    def pointer(self) -> str:
        cells = [c for c in self.run.get("cells") or [] if isinstance(c, int)]
        return where(self.ev, cells[0] if cells else None)


def collect(evidence: Sequence[Mapping[str, Any]]) -> list[_Run]:
    """The trained runs of every notebook, oldest first."""
    out: list[_Run] = []
    for ev in evidence:
        for run in ev.get("runs") or []:
            if isinstance(run, Mapping) and run.get("status") == "trained":
                regs, shown = in_effect(run, ev)
                curves = run.get("curves") if isinstance(run.get("curves"), Mapping) else {}
                out.append(_Run(ev, run, regs, shown, curve_gap(curves), len(out)))
    return out


def baseline_of(runs: Sequence[_Run]) -> _Run | None:
    """The baseline: the first run with no regularizer in effect, else the one with the fewest."""
    return min(runs, key=lambda r: (len(r.regs), r.order), default=None)


RANDOM_IN_TRAINING = frozenset({"dropout", "augmentation"})
"""Regularizers that make a printed training accuracy (measured while training, in training mode
or on augmented images) differ from the trained model's on its clean training images."""


def _agreement(r: _Run, tolerance: float) -> str | None:
    """Why run `r`'s printed curves and the host's measurement disagree beyond `tolerance`, or
    None: its printed validation accuracy against the measured one (the same files and transform).
    The epoch compared is the last printed, or for early stopping the one closest to the measurement
    (its model may be a kept best epoch)."""
    c, v = r.curve, r.verified
    val = _num(v.get("val_accuracy"))
    if c is None or c["kind"] != "accuracy" or r.gap is None or val is None:
        return None
    points = c["points"]
    x, t, pv = min(points, key=lambda p: abs(p[2] - val)) if "early_stopping" in r.regs else points[-1]
    if abs(pv - val) > tolerance:
        aug = (r.run.get("regularizers") or {}).get("augmentation")
        augmented = aug.get("eval") if isinstance(aug, Mapping) else None
        why = (f" (its validation images went through {', '.join(map(str, augmented[:3]))}; the grader measures "
               f"them without random transforms)" if augmented else "")
        return (f"{r.name} printed a validation accuracy of {fmt_pct(pv)} at epoch {x:g}, but its model measures "
                f"{fmt_pct(val)} on {v.get('val_n')} of its validation images{why}")
    # The printed training accuracy is not compared: most notebooks print the running accuracy of
    # the epoch's batches, taken in training mode while the weights still change, which lags what the
    # trained model measures on its clean training images (by 5-10 points on an honest baseline that
    # still learns fast); both gaps are shown beside each other instead.
    return None


def _curve_text(r: _Run) -> str:
    c = r.curve
    if c is None:
        return "no training and validation curves printed"
    if c["kind"] == "loss":
        return f"printed losses show a gap of {c['last']:.3f} (validation minus training) at epoch {c['at']:g}"
    return f"printed curves show a gap of {fmt_pct(c['last'])} at epoch {c['at']:g} (largest {fmt_pct(c['max'])})"


# ---------------------------------------------------------------- claims in the student's text


def _notebook_text(ctx: CheckContext, ev: Mapping[str, Any]) -> str:
    """The markdown of the notebook `ev` was run from (bounded), '' when it cannot be read."""
    if not ctx.work_dir or not isinstance(ev.get("path"), str):
        return ""
    from grader.nbread import UnreadableNotebook, read_notebook

    path = Path(ctx.work_dir) / ev["path"]
    try:
        if not path.is_file() or path.stat().st_size > 50 << 20:
            return ""
        nb = read_notebook(path).nb
    except (UnreadableNotebook, OSError, ValueError, RecursionError):
        return ""
    text = "\n\n".join(str(c.get("source") or "") for c in nb.get("cells") or [] if c.get("cell_type") == "markdown")
    return text[:MAX_CLAIM_CHARS]


def claims(text: str) -> list[tuple[str, str]]:
    """(regularizer, the sentence) for each sentence saying a regularizer reduced overfitting or
    the gap ("dropout reduced overfitting", "with augmentation the gap is smaller"); a negated one
    ("weight decay did not help the gap") is not a claim of a reduction."""
    out: list[tuple[str, str]] = []
    for sentence in re.split(r"(?<=[.!?。])\s+|\n\s*\n|\n\s*[-*] ", text):
        s = re.sub(r"^(?:[-*>#]+\s*|\d+[.)]\s+)+", "", " ".join(sentence.split()))  # a bullet, a heading
        if len(s) > 600 or not _OVERFIT.search(s) or not _REDUCED.search(s) or _NEGATED.search(s):
            continue
        for reg, pat in _WORDS.items():
            if pat.search(s):
                out.append((reg, s[:200]))
    return out


def _judge_claims(found: Sequence[tuple[str, str]], base: _Run, others: Sequence[_Run], margin: float
                  ) -> tuple[list[str], list[str], list[str]]:
    """(contradicted, confirmed, unmeasured) sentences for the claims `found`, each against the
    measured gaps of the runs with that regularizer and the baseline's."""
    bad, good, open_ = [], [], []
    for reg, sentence in dict.fromkeys(found):
        runs = [r for r in others if reg in r.regs or (reg == "l2" and "weight_decay" in r.regs)
                or (reg == "weight_decay" and "l2" in r.regs)]
        measured = [r for r in runs if r.gap is not None]
        if base.gap is None or not measured:
            open_.append(f"\"{sentence}\" (no measured gap of {'a run with ' + _SHOW[reg] if not measured else base.name})")
            continue
        best = min(measured, key=lambda r: r.gap)  # type: ignore[arg-type, return-value]
        said = f"{base.name} {fmt_pct(base.gap)} vs {best.name} ({_SHOW[reg]}) {fmt_pct(best.gap)}"
        # "reduced" needs a reduction that shows at the precision printed (half a point), or `margin`
        if best.gap >= base.gap - max(margin, 0.005):  # type: ignore[operator]
            bad.append(f"\"{sentence}\", but the measured gaps are {said}")
        else:
            good.append(f"\"{sentence[:80]}\" ({said})")
    return bad, good, open_


# ---------------------------------------------------------------- the check


@P.takes(P.OverfittingGap)
def overfitting_gap(ctx: CheckContext, params: P.OverfittingGap) -> Outcome:
    """`role: baseline`: a run with no regularizer (or the fewest) whose gap is shown (printed
    training and validation curves) and measured by the host; full points when both agree
    within `tolerance`, `not_shown_credit` without curves, a TA with both numbers when they
    disagree or nothing was measured. `role: regularized`: at least `min_runs` other runs, each
    with a regularizer the baseline lacks, measured and compared with the baseline; and the
    notebook's claims that a regularizer reduced overfitting held against the measured gaps (a
    contradicted claim goes to a TA with both numbers, flagged CONTRADICTED). Reads every notebook."""
    # every param read once, up front (the helpers take the plain model)
    params = P.OverfittingGap.model_validate({f: getattr(params, f) for f in P.OverfittingGap.model_fields})
    evidence = list(ctx.all_evidence or ctx.evidence)
    if not evidence:
        return Outcome("fail", 0.0, "no notebook was found.")
    if all(ev.get("mode") == "saved" for ev in evidence):
        return Outcome("manual", 0.0, "Saved mode: nothing was run, so the grader cannot measure any gap; a TA will "
                                      "read the curves.", tuple(where(ev) for ev in evidence)[:3])
    runs = collect(evidence)
    base = baseline_of(runs)
    if base is None:
        return Outcome("fail", 0.0, "no trained run was found, so no gap between training and validation accuracy "
                                    "can be shown.", tuple(where(ev) for ev in evidence)[:3], own_words=True)
    if params.role == "baseline":
        return _baseline(base, params)
    return _regularized(ctx, base, [r for r in runs if r is not base], params)


def _baseline(base: _Run, p: P.OverfittingGap) -> Outcome:
    label = f"{base.name} ({_named(base.regs)})"
    shown = base.curve is not None
    text = f"baseline {label}: {_curve_text(base)}"
    if base.gap is None:
        return Outcome("manual", 0.0, f"{text}; the grader could not measure its gap itself ({base.why_unmeasured()}); "
                                      f"this is not a finding against your work. A TA will check it.",
                       (base.pointer(),), flags=(UNCONFIRMED,), own_words=True)
    text += f"; measured: {base.measured()}"
    off = _agreement(base, p.tolerance)
    if off:
        return Outcome("manual", 0.0, f"{off}. A TA will compare them.", (base.pointer(),), flags=(MISMATCH,),
                       own_words=True)
    note = f" ({base.verified['gap_note']})" if base.verified.get("gap_note") else ""
    if not shown:
        return Outcome("partial", p.not_shown_credit, f"{text}{note}; print or plot the training and validation "
                                                      f"accuracy of each epoch to show the gap.",
                       (base.pointer(),), own_words=True)
    return Outcome("pass", 1.0, f"{text}{note}.", (base.pointer(),), own_words=True)


def _regularized(ctx: CheckContext, base: _Run, others: list[_Run], p: P.OverfittingGap) -> Outcome:
    candidates = [r for r in others if r.regs - base.regs]
    measured = [r for r in candidates if r.gap is not None]
    parts, flags = [], []
    head = f"baseline {base.name} ({_named(base.regs)}): " + (
        f"gap {fmt_pct(base.gap)}" if base.gap is not None else f"gap not measured ({base.why_unmeasured()})")
    for r in candidates[:6]:
        added = _named(r.regs - base.regs)
        if r.gap is None:
            parts.append(f"{r.name} (+{added}): gap not measured ({r.why_unmeasured()})")
        elif base.gap is not None:
            parts.append(f"{r.name} (+{added}): gap {fmt_pct(r.gap)}, {fmt_pct(abs(r.gap - base.gap))} "
                         f"{'smaller' if r.gap < base.gap else 'larger'} than the baseline's")
        else:
            parts.append(f"{r.name} (+{added}): gap {fmt_pct(r.gap)}")
    mismatches = [m for r in [base, *measured] if (m := _agreement(r, p.tolerance))]
    if mismatches:
        flags.append(MISMATCH)
    found = [c for ev in {id(e): e for e in [base.ev, *(r.ev for r in others)]}.values()
             for c in claims(_notebook_text(ctx, ev))]
    bad, good, open_ = _judge_claims(found, base, candidates, p.claim_margin)
    if bad:
        flags.append(CONTRADICTED)
    pointers = tuple(dict.fromkeys(r.pointer() for r in [base, *candidates]))[:4]
    declared = [r.name for r in candidates if not r.shown_regs]
    text = "; ".join([head, *parts]) or head
    if declared:
        text += (f"; the regularizers of {', '.join(declared[:4])} are read from what their models and optimizers "
                 f"declare, not from what ran")
    if good:
        text += "; your claim(s) match the measurement: " + "; ".join(good[:2])
    counted = len(measured) if base.gap is not None else 0
    fraction = min(1.0, counted / p.min_runs)
    if bad or mismatches:
        said = "; ".join([*bad[:2], *mismatches[:2]])
        return Outcome("manual", round(fraction, 4), f"{text}. {said}. A TA will decide.", pointers,
                       flags=tuple(flags), own_words=True)
    if len(candidates) >= p.min_runs and counted < p.min_runs or (candidates and base.gap is None):
        return Outcome("manual", 0.0, f"{text}. The grader could not measure every gap; this is not a finding "
                                      f"against your work. A TA will check the runs.", pointers,
                       flags=(UNCONFIRMED,), own_words=True)
    if open_:
        text += "; claims the grader could not hold against a measurement: " + "; ".join(open_[:2])
    if counted >= p.min_runs:
        return Outcome("pass", 1.0, text + ".", pointers, own_words=True)
    missing = p.min_runs - counted
    return Outcome("partial" if counted else "fail", round(fraction, 4),
                   f"{text}; {missing} more run(s) with a regularizer the baseline lacks, trained on the same split, "
                   f"are needed ({p.min_runs} asked).", pointers, own_words=True)
