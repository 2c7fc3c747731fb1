"""The reference's accuracy at a student's training budget.

`dllab reference run` records the reference's test accuracy after every epoch (`summary.curve`:
mean ± std over seeds, from epoch 0, the untrained net, to its last). A student who trained
for 2 epochs is compared with the reference after 2 epochs, not with a reference trained for
ten: a short honest run is not a poor one. Budgets are counted in epochs (training images
seen / the training split's size), the same unit on both sides whatever the batch size; the
batches each side ran are named in the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from grader.checks.training import Budget, finite


@dataclass(frozen=True)
class Target:
    """What the reference reaches at the budget compared, and how it was chosen."""

    mean: float
    """The reference's test accuracy, mean over seeds, as a fraction 0..1."""
    std: float
    """Its standard deviation over seeds, as a fraction."""
    epochs: float | None
    """The reference's epochs the numbers are for (None: unknown)."""
    matched: bool
    """True when compared at the student's own budget (or the reference's whole run when the
    student trained at least as long); False when the student's budget is unknown, or the
    reference file has no curve and the student trained less than the reference."""
    text: str
    """What was compared, for the message: `after 2 epochs the reference reaches 21.0 ± 2.0 %`."""
    final_mean: float
    """The reference's final accuracy (mean over seeds), to scale the rubric's floor."""


def _epochs_text(e: float) -> str:
    return f"{e:.3g} epoch{'' if e == 1 else 's'}"


def _band(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f} %"


def _batches(reference: Mapping, epochs: float) -> int | None:
    """Batches the reference ran in `epochs`, from its batch size (`hyp`) and training split."""
    size = (reference.get("hyp") or {}).get("batch_size")
    images = next((r.get("train_images") for r in reference.get("runs") or [] if r.get("train_images")), None)
    if not (isinstance(size, int) and size > 0 and isinstance(images, int)):
        return None
    return round(epochs * math.ceil(images / size))


def _curve(summary: Mapping) -> list[tuple[float, float, float]]:
    """(epoch, mean, std) points of the recorded curve, in epoch order, finite ones only."""
    points = []
    for p in summary.get("curve") or []:
        acc = p.get("test_accuracy") or {}
        if finite(p.get("epoch")) and finite(acc.get("mean")):
            points.append((float(p["epoch"]), float(acc["mean"]), float(acc.get("std") or 0.0)))
    return sorted(points)


def _at(points: list[tuple[float, float, float]], epochs: float) -> tuple[float, float, float]:
    """The curve at `epochs`, linear between the recorded epochs; clamped to its ends."""
    if epochs <= points[0][0]:
        return points[0]
    for (e0, m0, s0), (e1, m1, s1) in zip(points, points[1:]):
        if e0 <= epochs <= e1:
            w = (epochs - e0) / (e1 - e0) if e1 > e0 else 1.0
            return epochs, m0 + w * (m1 - m0), s0 + w * (s1 - s0)
    return points[-1]


def reference_target(reference: Mapping | None, budget: Budget | None) -> Target | None:
    """The reference's accuracy to compare a student's with; None without a usable reference."""
    summary = (reference or {}).get("summary") or {}
    final = summary.get("test_accuracy") or {}
    if not finite(final.get("mean")):
        return None
    ref_epochs = (reference or {}).get("epochs") or ((reference or {}).get("hyp") or {}).get("epochs")
    ref_epochs = float(ref_epochs) if finite(ref_epochs) else None
    f_mean, f_std = float(final["mean"]), float(final.get("std") or 0.0)
    whole = f"the reference's {_band(f_mean, f_std)}" + (f" after its {_epochs_text(ref_epochs)}" if ref_epochs else "")
    if budget is None or budget.epochs is None:
        return Target(f_mean, f_std, ref_epochs, False, whole + " (the grader could not see how long you trained)",
                      f_mean)
    yours = f"you: {budget.batches_text()}"
    points = _curve(summary)
    if not points:
        if ref_epochs is not None and budget.epochs >= ref_epochs - 0.05:
            return Target(f_mean, f_std, ref_epochs, True, f"after {_epochs_text(ref_epochs)} ({yours}) "
                                                           f"the reference reaches {_band(f_mean, f_std)}", f_mean)
        return Target(f_mean, f_std, ref_epochs, False,
                      whole + f" (you: {budget.text()}; the reference file has no per-epoch curve, made by an "
                              f"older grader, so only its final result could be used)", f_mean)
    last = points[-1][0]
    if budget.epochs >= last:
        e, mean, std = points[-1]
        note = (f"you trained {_epochs_text(budget.epochs)}, at least as long as the reference's "
                f"{_epochs_text(last)}: after its last epoch")
        return Target(mean, std, e, True, f"{note} the reference reaches {_band(mean, std)}", f_mean)
    e, mean, std = _at(points, budget.epochs)
    ref_batches = _batches(reference or {}, e)
    theirs = f"; the reference: {ref_batches:,} batches of {(reference or {}).get('hyp', {}).get('batch_size')}" \
        if ref_batches is not None else ""
    return Target(mean, std, e, True, f"after {_epochs_text(e)} ({yours}{theirs}) the reference reaches "
                                      f"{_band(mean, std)}", f_mean)


def scaled_floor(floor: float, *, chance: float | None, target: Target) -> float:
    """The rubric's floor at the compared budget.

    The floor is set for a fully trained model; at a shorter budget it is lowered in
    proportion to how far above chance the reference itself has got by then, so a run
    compared at 2 epochs is not held to a bar the reference only clears after ten.
    """
    if chance is None or not target.matched or floor <= chance or target.final_mean <= chance:
        return floor
    progress = min(max((target.mean - chance) / (target.final_mean - chance), 0.0), 1.0)
    return chance + (floor - chance) * progress

