"""Checks on the numbers a notebook reports: test metrics, per-class accuracy, verification.

None of them passes on the absence of evidence: a number that is not a number (nan) is not
shown, a comparison with nothing printed is not an agreement, and the metrics of a model the
probe saw evaluated untrained are not a trained model's (grader.checks.training). Where the
grader itself lost the output (`output_truncated`) or cannot tell, the item goes to a TA.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from grader.checks import params as P
from grader.checks.base import CLASSES, UNCONFIRMED, CheckContext, Outcome, fmt_pct, where
from grader.checks.budget import reference_target, scaled_floor
from grader.checks.training import (CHANCE_TOLERANCE, chance_level, finite, test_coverage, training_budget,
                                    untrained_outcome)
from grader.corroborate import verified_blocks, verified_for
from grader.datasets import registry
from grader.parsers.values import image_count


def _metrics(ev: Mapping) -> Mapping:
    return ev.get("metrics") or {}


def _not_found(ctx: CheckContext) -> Outcome | None:
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook or script for {ctx.part_id} was found in the submission "
                                    f"(looked for one that trains on {ctx.dataset or 'the part dataset'}).")
    return None


def _fraction(x: object) -> bool:
    """An accuracy as printed: a finite fraction 0..1."""
    return finite(x) and 0.0 <= float(x) <= 1.0  # type: ignore[arg-type]


def _truncated(ctx: CheckContext) -> Mapping | None:
    """A notebook of the part whose printed output the grader cut (its end may be lost)."""
    return next((ev for ev in ctx.evidence if ev.get("output_truncated")), None)


def _lost(ctx: CheckContext, what: str) -> Outcome | None:
    """`manual` when `what` may be missing only because the grader cut the output."""
    ev = _truncated(ctx)
    if ev is None:
        return None
    return Outcome("manual", 0.0, f"{what} was not found, but {where(ev)} printed more than the grader keeps and "
                                  f"part of its output was cut, so a TA checks the full output.", (where(ev),))


def _untrained(ctx: CheckContext, dataset: str | None, *, measured_counts: bool = False) -> Outcome | None:
    """The outcome for a part whose metrics are an untrained model's; `measured_counts`: an
    independent measurement of the final (trained) model stands even when the printed numbers
    were taken before training."""
    verdict = untrained_outcome(ctx.evidence, dataset=dataset)
    if verdict is None:
        return None
    if measured_counts and verdict.kind == "before" and _accuracy(ctx)[1] in ("verified", "hidden"):
        return None
    return Outcome(verdict.status, 0.0, verdict.message, (verdict.pointer,), own_words=True)


def _per_class_shown(ctx: CheckContext, dataset: str | None, expected: int | None, need: float) -> Outcome:
    """Accuracy shown for at least `need` (a share 0..1) of the dataset's classes, before the
    host's measurement is compared; `expected`: the class count the rubric was written for."""
    if (miss := _not_found(ctx)) is not None:
        return miss
    dataset = dataset or ctx.dataset
    if dataset is None or dataset not in CLASSES:
        return Outcome("error", 0.0, f"the grader has no class list for {dataset!r}; a TA should set the "
                                     f"item's `dataset` to one of {', '.join(CLASSES)}.")
    if expected is not None and expected != len(CLASSES[dataset]):
        return Outcome("error", 0.0, f"the rubric expects {expected} classes but {dataset} has "
                                     f"{len(CLASSES[dataset])}; a TA should fix the item's `classes` or `dataset`.")
    if (gate := _untrained(ctx, dataset)) is not None:
        return gate
    classes = CLASSES[dataset]
    best_ev, best, not_numbers = None, {}, []
    for ev in ctx.evidence:
        printed = {c: v for c, v in (_metrics(ev).get("per_class_accuracy") or {}).items() if c in classes}
        found = {c: v for c, v in printed.items() if _fraction(v)}
        if len(found) > len(best):
            best_ev, best = ev, found
            not_numbers = [c for c, v in printed.items() if not _fraction(v)]
    missing = [c for c in classes if c not in best]
    share = len(best) / len(classes)
    if not best:
        return _lost(ctx, "the accuracy of each class") or Outcome(
            "fail", 0.0, f"no accuracy for each class was found: print the test accuracy of every one of the "
                         f"{len(classes)} {dataset} classes (e.g. `Accuracy of plane : 54 %`).")
    pointer = (where(best_ev),) if best_ev else ()
    if not missing:
        return Outcome("pass", 1.0, f"accuracy shown for all {len(classes)} classes.", pointer)
    if share >= need:
        return Outcome("pass", 1.0, f"accuracy shown for {len(best)} of {len(classes)} classes (the rubric asks "
                                    f"for {fmt_pct(need)} of them); not shown: {', '.join(missing)}.", pointer)
    if (lost := _lost(ctx, f"the accuracy of {len(missing)} of {len(classes)} classes")) is not None:
        return lost
    bad = f" ({', '.join(not_numbers)}: not a number)" if not_numbers else ""
    return Outcome("partial", share, f"accuracy shown for {len(best)} of {len(classes)} classes; missing: "
                                     f"{', '.join(missing)}{bad}.", pointer)


def _test_metrics_shown(ctx: CheckContext, dataset: str | None, test_images: int | None,
                        want: tuple[str, ...]) -> Outcome:
    """The totals `want` (accuracy, loss) shown as finite numbers (a nan is not a result), on
    at least `test_images` test images (capped at the mounted split), before the host's
    measurement is compared."""
    if (miss := _not_found(ctx)) is not None:
        return miss
    if (gate := _untrained(ctx, dataset or ctx.dataset)) is not None:
        return gate
    shown: dict[str, tuple[float, Mapping]] = {}
    odd: dict[str, object] = {}
    valid = {"accuracy": _fraction, "loss": lambda v: finite(v) and v >= 0}
    for ev in ctx.evidence:
        m = _metrics(ev)
        for key in want:
            value = m.get(f"test_{key}")
            if value is None:
                continue
            if valid[key](value):
                shown[key] = (float(value), ev)
            else:
                odd[key] = value
    # A total labelled validation (`val_loss 2.05`) is not the test split's: it stands in only
    # when no total of the test split was shown at all (a student who calls the test set
    # "validation"), and the message says so; beside a test accuracy it is not the test loss.
    val_only = {k: str(labelled[f"test_{k}"]) for k, (_, ev) in shown.items()
                if f"test_{k}" in (labelled := _metrics(ev).get("from_validation") or {})}
    val_note = ""
    if val_only and len(val_only) < len(shown):
        for k in val_only:
            del shown[k]
        val_note = "; the " + " and ".join(f"`{raw.strip()[:60]}`" for raw in val_only.values()) + \
            " printed is labelled validation, not test"
    elif val_only:
        val_note = " (printed as validation results: taken as the test split's, since no test result was labelled)"
    missing = [k for k in want if k not in shown]
    pointers = tuple(sorted({where(ev) for _, ev in shown.values()}))
    parts = []
    if "accuracy" in shown:
        parts.append(f"test accuracy {fmt_pct(shown['accuracy'][0])}")
    if "loss" in shown:
        parts.append(f"test loss {shown['loss'][0]:.4g}")
    if not missing:
        partial_split = _partial_split(ctx, dataset or ctx.dataset, test_images)
        if partial_split is not None:
            ev, coverage = partial_split
            return Outcome("partial", 0.5, f"{' and '.join(parts)} shown, but {_subset_text(*coverage)}.",
                           (where(ev),))
        return Outcome("pass", 1.0, f"{' and '.join(parts)} shown{val_note}.", pointers)
    if (lost := _lost(ctx, " and ".join(f"the total test {k}" for k in missing))) is not None and not odd:
        return lost
    fix = " and ".join(f"the total test {k}" for k in missing)
    nan = [f"the test {k} was printed as {v!r}, not a number" for k, v in odd.items() if not finite(v)]
    impossible = [f"the test {k} was read as {fmt_pct(float(v)) if k == 'accuracy' else v}, which is not possible"
                  for k, v in odd.items() if finite(v)]
    why = "".join(f" ({t})" for t in ["; ".join(nan) + ": training probably diverged; lower the learning rate"
                                      if nan else "", "; ".join(impossible)] if t) + (val_note if shown else "")
    if shown:
        return Outcome("partial", len(shown) / len(want), f"{', '.join(parts)} shown, but not {fix}{why}: "
                                                          f"print it after evaluating on the whole test split.", pointers)
    return Outcome("fail", 0.0, f"no total test loss or accuracy was found{why}: evaluate on the whole test "
                                "split and print both.")


TOTAL_TOLERANCE: float = P.MetricsVerified.model_fields["tolerance"].default
"""Largest |printed - measured| test accuracy (fraction 0..1) that still agrees; as metrics_verified's default."""
CLASS_TOLERANCE = 0.05
"""Largest |printed - measured| accuracy of one class (fraction 0..1) that still agrees."""


def printed_vs_measured(ev: Mapping, v: Mapping, *, total: bool = True, per_class: bool = True,
                        tol: float = TOTAL_TOLERANCE) -> tuple[list[str], int]:
    """The printed numbers of `ev` that the host's measurement `v` (a verified block) contradicts,
    one clause each, and how many were compared: the total test accuracy within `tol`, each
    class within max(tol, CLASS_TOLERANCE) (fractions 0..1)."""
    printed = _metrics(ev)
    diffs, compared = [], 0
    if total and _fraction(printed.get("test_accuracy")) and _fraction(v.get("test_accuracy")):
        compared += 1
        if abs(printed["test_accuracy"] - v["test_accuracy"]) > tol:
            diffs.append(f"test accuracy printed {fmt_pct(printed['test_accuracy'])}, "
                         f"measured {fmt_pct(v['test_accuracy'])}")
    if per_class:
        for cls, val in (printed.get("per_class_accuracy") or {}).items():
            got = (v.get("per_class_accuracy") or {}).get(cls)
            if _fraction(val) and _fraction(got):
                compared += 1
                if abs(val - got) > max(tol, CLASS_TOLERANCE):
                    diffs.append(f"{cls} printed {fmt_pct(val)}, measured {fmt_pct(got)}")
    return diffs, compared


def _contradicted(ctx: CheckContext, out: Outcome, *, total: bool, per_class: bool, points: str) -> Outcome:
    """`out` (a pass or partial for numbers shown), unless the host measured the model of the
    part's dataset in that notebook and its numbers contradict the printed ones: then the
    numbers shown are not the model's, and a TA decides (manual, flag `mismatch`); an honest
    cause exists (numbers printed of an earlier model), so it is not a fail. `points`: what was
    printed, as the message names it ("test accuracy"; a plural ending in s takes "disagree")."""
    if out.status not in ("pass", "partial"):
        return out
    for ev in ctx.evidence:
        v = _verified(ev, ctx.dataset)
        if not _fraction(v.get("test_accuracy")):
            continue
        diffs, _ = printed_vs_measured(ev, v, total=total, per_class=per_class)
        if diffs:
            more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
            verb = "disagree" if points.endswith("s") else "disagrees"
            return Outcome("manual", 0.0, f"the {points} printed {verb} with the grader's own measurement of the "
                                          f"model it captured in {where(ev)} ({'; '.join(diffs[:3])}{more}), so a "
                                          f"TA checks which model they belong to ({out.status} from the outputs: "
                                          f"{out.message.rstrip('.')}).", out.evidence or (where(ev),),
                           tuple(dict.fromkeys((*out.flags, "mismatch"))), own_words=True)
    return out


@P.takes(P.PerClassAccuracy)
def per_class_accuracy(ctx: CheckContext, params: P.PerClassAccuracy) -> Outcome:
    """Accuracy shown for every class of the dataset (or `min_fraction` of them); per-class
    numbers the host's measurement of the captured model contradicts go to a TA (`_contradicted`)."""
    dataset, classes, min_fraction = params.dataset, params.classes, params.min_fraction
    shown = _printed_subset(ctx, dataset or ctx.dataset, _per_class_shown(ctx, dataset, classes, min_fraction))
    return _contradicted(ctx, shown, total=False, per_class=True, points="per-class accuracies")


@P.takes(P.TestMetrics)
def test_metrics(ctx: CheckContext, params: P.TestMetrics) -> Outcome:
    """Total test loss and accuracy shown (finite numbers: a nan is not a result) for an
    evaluation of the whole test split, or `test_images` of it (one batch earns half); a test
    accuracy the host's measurement of the captured model contradicts goes to a TA."""
    dataset, test_images, require = params.dataset, params.test_images, params.require
    return _contradicted(ctx, _test_metrics_shown(ctx, dataset, test_images, tuple(require)), total=True,
                         per_class=False, points="test accuracy")


COVERED = 0.9
"""Share of the bar an evaluation must reach to count as the whole split (a last batch dropped
by `drop_last` is not a subset)."""


def split_size(ctx: CheckContext, dataset: str | None) -> int | None:
    """Images in the mounted test split of `dataset`: the grader's own count when it was told
    (`ctx.test_split_size`), else the most the host evaluated itself, or the run saw in a
    test-split dataset (a subset of it is never larger), else None."""
    if ctx.test_split_size:
        return ctx.test_split_size
    seen = [int(v["test_images"]) for ev in ctx.evidence for v in verified_blocks(ev)
            if isinstance(v.get("test_images"), int) and (dataset is None or v.get("dataset") in (dataset, None))]
    seen += [int(d["length"]) for ev in ctx.evidence for d in ev.get("datasets") or []
             if isinstance(d, Mapping) and d.get("split") == "test" and isinstance(d.get("length"), int)]
    return max(seen) if seen else None


TINY_EVALUATION = 4
"""Test images (a batch of 4, `Subset(testset, range(4))`) too few to be any dataset's whole test
split: a printed evaluation on at most this many is a subset even when the split's size is unknown."""


def printed_test_images(ev: Mapping) -> int | None:
    """Saved mode: the test images the notebook's final test total says it was measured on ('on
    the 100 test images: 74 %' -> 100), from the line the parser took the total from; None in
    execute mode (the host's count wins), or when that line names no count."""
    if ev.get("mode", "execute") == "execute":
        return None
    mentions = [m for m in _metrics(ev).get("mentions") or [] if isinstance(m, Mapping)]
    for key in ("test_accuracy", "test_loss"):  # as parsers.notebook.final_mention picks it
        for kind, split in ((key, "test"), (key, None), (key.replace("test_", "val_"), "val")):
            picked = [m for m in mentions if m.get("kind") == kind and m.get("split") == split]
            if picked:
                count = image_count(str(picked[-1].get("raw") or ""))
                if count:
                    return count
                break
    return None


def _partial_split(ctx: CheckContext, dataset: str | None,
                   test_images: int | None) -> tuple[Mapping, tuple[int, int | None, int | None]] | None:
    """A notebook whose every test evaluation covered under 90 % of the bar: min(test_images,
    the mounted test split) (a batch, a subset), while no other notebook of the part reached
    it; with (images evaluated, test split size, bar), the size or bar None when unknown.
    Where the host counted nothing (saved mode) the count the notebook printed stands in; a
    printed count of at most TINY_EVALUATION images is a subset whatever the split's size."""
    mounted = split_size(ctx, dataset)
    found = []
    for ev in ctx.evidence:
        coverage: tuple[int, int | None] | None = test_coverage(ev)
        if coverage is None and (printed := printed_test_images(ev)) is not None:
            coverage = (printed, mounted)
        if coverage is None:
            return None
        size = max(coverage[1] or 0, mounted or 0) or None
        bar = min(x for x in (test_images, size) if x) if test_images or size else None
        if bar is None and coverage[0] <= TINY_EVALUATION:
            found.append((ev, (coverage[0], size, bar)))
            continue
        if bar is None or coverage[0] >= COVERED * bar:
            return None
        found.append((ev, (coverage[0], size, bar)))
    return found[0] if found else None


def _subset_text(images: int, size: int | None, bar: int | None) -> str:
    """Why an evaluation of `images` test images is not the whole split (`_partial_split`'s)."""
    asked = "" if bar is None or (size is not None and bar >= size) else f" (the rubric asks for at least {bar:,})"
    of = f"{images:,} of the {size:,} test images" if size else f"{images:,} test images"
    return f"the model was evaluated on at most {of}{asked}: evaluate on the whole test split"


def _printed_subset(ctx: CheckContext, dataset: str | None, out: Outcome) -> Outcome:
    """Saved mode: per-class accuracies shown (`out`, a pass) by a notebook whose printed test
    line says it evaluated a subset (`_partial_split` with the mounted split as the bar, or at
    most TINY_EVALUATION images) earn half; execute mode is left to the host's measurement."""
    if out.status != "pass" or any(ev.get("mode", "execute") == "execute" for ev in ctx.evidence):
        return out
    split = _partial_split(ctx, dataset, None)
    if split is None:
        return out
    ev, coverage = split
    return Outcome("partial", 0.5, f"{out.message.rstrip('.')}, but {_subset_text(*coverage)}.",
                   out.evidence or (where(ev),))


def _hidden_gap(v: Mapping) -> bool:
    """A verified block whose visible accuracy is far above the hidden split's (grader.verify)."""
    return v.get("hidden_gap_flagged") is True and _fraction(v.get("hidden_accuracy")) \
        and _fraction(v.get("test_accuracy"))


def _gap_text(v: Mapping) -> str:
    return (f"your model scored {fmt_pct(v['test_accuracy'])} on the test split you had but "
            f"{fmt_pct(v['hidden_accuracy'])} on {v.get('hidden_n', 'the')} hidden test images of the same kind, "
            f"which it cannot have seen: it looks like it learned the test split itself")


def _verified(ev: Mapping, dataset: str | None) -> Mapping:
    """The host's evaluation of a model of `dataset` in `ev` (any, when the part names no
    dataset), else {}: a model tested on another dataset says nothing about this part's."""
    if dataset:
        return verified_for(ev, dataset) or {}
    return next(iter(verified_blocks(ev)), {})


def _why_unverified(ev: Mapping, dataset: str | None) -> str:
    """Why `ev` has no verified block for `dataset`, as a clause (no final period)."""
    others = sorted({str(v.get("dataset")) for v in verified_blocks(ev) if v.get("dataset")})
    if dataset and others:
        return f"the model the grader tested itself was evaluated on {', '.join(others)}, not {dataset}"
    return str((ev.get("verified") or {}).get("reason") or "no independent evaluation was made").rstrip(".")


def _accuracy(ctx: CheckContext) -> tuple[float | None, str, Mapping | None]:
    """The verified accuracy when there is one, else the printed one (finite fractions only).
    When the verified accuracy is far above the hidden split's, the hidden one ("hidden"): a
    model that memorized the visible test split is measured on images it never saw."""
    for ev in ctx.evidence:
        v = _verified(ev, ctx.dataset)
        if _fraction(v.get("test_accuracy")):
            if _hidden_gap(v):
                return float(v["hidden_accuracy"]), "hidden", ev
            return float(v["test_accuracy"]), "verified", ev
    for ev in ctx.evidence:
        if _fraction(_metrics(ev).get("test_accuracy")):
            return float(_metrics(ev)["test_accuracy"]), "printed", ev
    return None, "", None


@P.takes(P.AccuracyVsReference)
def accuracy_vs_reference(ctx: CheckContext, params: P.AccuracyVsReference) -> Outcome:
    """Test accuracy against the reference at the student's own training budget.

    With a reference: full points from the reference's mean minus its seed band at the epochs
    the student trained (grader.checks.budget), partial down to the rubric's floor scaled to
    that budget, which never rises above that band (`_bars`). Without a reference, or when the
    budget is unknown, an accuracy that does not clear the bar goes to a TA with the numbers
    instead of failing on a guess. Every message names the bars that were applied.
    `reference_part` picks another part's reference result (default: the item's own part).
    """
    floor, band, reference_part, dataset = params.floor, params.band, params.reference_part, params.dataset
    reference = ctx.references.get(reference_part) if reference_part is not None and ctx.references \
        else ctx.reference
    if (miss := _not_found(ctx)) is not None:
        return miss
    dataset = dataset or ctx.dataset
    if (gate := _untrained(ctx, dataset, measured_counts=True)) is not None:
        return gate
    outcome = _accuracy_outcome(ctx, reference, floor=floor, band=band, dataset=dataset)
    acc, source, ev = _accuracy(ctx)
    if source == "printed" and ev is not None and acc is not None and _executed(ev):
        return _unverified(ev, acc, outcome, ctx.dataset)
    if source == "hidden" and ev is not None:
        # Graded on the hidden split (what the model does on images it never saw), flagged for
        # the TA; full points for a model that may have learned the test split wait for a TA.
        text = f"{_gap_text(_verified(ev, ctx.dataset))}, so the hidden accuracy is the one graded: {outcome.message}"
        if outcome.status == "pass":
            return Outcome("manual", 0.0, text.rstrip(".") + "; full points wait for a TA, who checks that the "
                                                             "test split was not used for training.",
                           outcome.evidence, flags=(*outcome.flags, "hidden-gap"), own_words=True)
        return replace(outcome, message=text, flags=(*outcome.flags, "hidden-gap"), own_words=True)
    return outcome


def _executed(ev: Mapping) -> bool:
    """Whether the grader ran this notebook (execute mode), so it could have measured the
    model itself; in saved mode (nothing run) the printed numbers are all there is."""
    return ev.get("mode", "execute") != "saved"


def _unverified(ev: Mapping, printed: float, judged: Outcome, dataset: str | None) -> Outcome:
    """An accuracy item in execute mode whose only accuracy is the printed one: the grader ran
    the notebook but could not measure its model (the capture or the export failed, the model
    could not be captured, the teardown timed out). A printed number is whatever the code
    printed, so it earns nothing automatically, and nothing is failed either: a TA confirms it,
    with what it would earn (`judged`, the outcome on the printed number) in the message."""
    why = _why_unverified(ev, dataset)
    would = judged.message.rstrip(".")
    return Outcome("manual", 0.0, f"your printed test accuracy {fmt_pct(printed)} could not be verified ({why}), "
                                  f"so it earns no points automatically and a TA confirms it; judged on the "
                                  f"printed number: {would}.", judged.evidence or (where(ev),), flags=(UNCONFIRMED,),
                   own_words=True)


def _accuracy_outcome(ctx: CheckContext, reference: Mapping | None, *, floor: float, band: str | float,
                      dataset: str | None) -> Outcome:
    acc, source, ev = _accuracy(ctx)
    if acc is None:
        return _lost(ctx, "a test accuracy") or Outcome("fail", 0.0, "no test accuracy was found to compare "
                                                                      "with the reference.")
    pointer = (where(ev),) if ev else ()
    chance = chance_level(dataset)
    budget = training_budget(ev) if ev else None
    yours = f"{source} test accuracy {fmt_pct(acc)}"
    target = reference_target(reference, budget)
    if target is None:
        if acc >= floor:
            return Outcome("pass", 1.0, f"{yours} meets the floor of {fmt_pct(floor)} (no reference result was "
                                        f"available).", pointer)
        trained = f"you trained {budget.text()}; " if budget else ""
        odds = f"chance is {fmt_pct(chance)}; " if chance is not None else ""
        return Outcome("manual", 0.0, f"{yours} is below the rubric's floor of {fmt_pct(floor)} ({odds}{trained}"
                                      f"no reference result was available to tell a short run from a poor "
                                      f"one), so a TA decides.", pointer)
    # "reference": the reference's seed spread (2 std), never narrower than 5 points,
    # since a reference trained with few seeds understates its own spread.
    width = max(2 * target.std, 0.05) if band == "reference" else float(band)
    bars = _bars(target.mean - width, scaled_floor(floor, chance=chance, target=target), floor=floor)
    got = f"you reached {fmt_pct(acc)} ({source})"
    near = chance is not None and acc <= chance + CHANCE_TOLERANCE
    if target.matched and chance is not None and target.mean - chance < CHANCE_TOLERANCE and acc < floor and near:
        # The reference has not learned yet at this budget, and neither has this run: matching
        # it proves nothing.
        return Outcome("manual", 0.0, f"{target.text}, still near chance ({fmt_pct(chance)}): a run this "
                                      f"short cannot be judged against it; {got}, below the rubric's floor of "
                                      f"{fmt_pct(floor)}, and a TA decides.", pointer)
    if acc >= bars.full and near:
        # Within the reference's band only because that band reaches down to chance (few seeds,
        # one of them barely trained): no full points for a chance-level result, no fail either.
        return Outcome("manual", 0.0, f"{target.text}; {got}, within its band (full points from "
                                      f"{fmt_pct(bars.full)}) but near chance ({fmt_pct(chance)} for "
                                      f"{len(CLASSES[dataset or ''])} classes): the reference's own spread is too "
                                      f"wide to tell a trained run from an untrained one, so a TA decides.", pointer)
    if acc >= bars.full:
        return Outcome("pass", 1.0, f"{target.text}; {got}, full points from {fmt_pct(bars.full)}.", pointer)
    if not target.matched:
        return Outcome("manual", 0.0, f"{target.text}; {got}, below the full-points bar of {fmt_pct(bars.full)}, "
                                      f"but the grader could not compare it at your own training budget, so a TA "
                                      f"decides.", pointer)
    if acc > bars.zero:
        fraction = round((acc - bars.zero) / (bars.full - bars.zero), 4)  # linear between the two bars
        return Outcome("partial", fraction,
                       f"{target.text}; full points from {fmt_pct(bars.full)}, none at or below "
                       f"{fmt_pct(bars.zero)}{bars.why_zero}; {got}: train longer or check the learning rate and "
                       f"normalization.", pointer)
    return Outcome("fail", 0.0, f"{target.text}; {got}, at or below the bar of {fmt_pct(bars.zero)}{bars.why_zero}.",
                   pointer)


@dataclass(frozen=True)
class _Bars:
    """The accuracies (fractions 0..1) an accuracy item applies, and why, for its message."""

    full: float
    """Full points from here: the reference's lower band at the compared budget."""
    zero: float
    """No points at or below here: the rubric's floor scaled to the budget, never above `full`."""
    why_zero: str
    """Where `zero` comes from, for the message: ` (the rubric's floor)`."""


def _bars(low: float, floor_here: float, *, floor: float) -> _Bars:
    """Full points from the reference's own lower band `low`; none at or below the rubric's
    floor as scaled to the budget (`floor_here`), unless that floor is above the band: the
    rubric's floor is never stricter than the reference itself, so a student within the
    reference's seed spread is never failed (issue 12 L)."""
    if floor_here > low:
        return _Bars(low, low, f" (the reference's own lower band; the rubric's floor of {fmt_pct(floor)} is above "
                               f"it at this budget, so it was not applied)")
    scaled = f" (the rubric's {fmt_pct(floor)}, scaled to your training budget)" if floor_here < floor else \
        " (the rubric's floor)"
    return _Bars(low, floor_here, scaled)


def _printed_any(ev: Mapping) -> bool:
    m = _metrics(ev)
    return _fraction(m.get("test_accuracy")) or any(_fraction(v) for v in (m.get("per_class_accuracy") or {}).values())


def _nothing_printed(ctx: CheckContext, measured: float | None) -> Outcome:
    """No printed accuracy to compare: the grader's loss (truncated output) or the student's."""
    vs = f"the measured {fmt_pct(measured)}" if measured is not None else "an independent evaluation"
    ev = _truncated(ctx)
    if ev is not None:
        return Outcome("manual", 0.0, f"no printed test accuracy was found to compare with {vs}, but "
                                      f"{where(ev)} printed more than the grader keeps and part of its output was "
                                      f"cut, so a TA compares them.", (where(ev),))
    odd = next((m["test_accuracy"] for m in map(_metrics, ctx.evidence) if m.get("test_accuracy") is not None),
               None)
    what = (f"the printed test accuracy is {odd!r}, not a number, so there is nothing" if odd is not None
            else "no test accuracy was printed")
    return Outcome("fail", 0.0, f"{what} to compare with {vs}: print the total test accuracy your code "
                                f"computes.", tuple(where(e) for e in ctx.evidence), own_words=True)


@P.takes(P.MetricsVerified)
def metrics_verified(ctx: CheckContext, params: P.MetricsVerified) -> Outcome:
    """Printed metrics agree with an independent evaluation of the trained model.

    Passes only when at least one printed number (the total or a class) was compared and
    every compared number agrees (within `tolerance`; with nothing measured, per-class numbers
    that average away from the total beyond `consistency_tolerance` on a balanced split fail).
    """
    tol, consistency = params.tolerance, params.consistency_tolerance
    if (miss := _not_found(ctx)) is not None:
        return miss
    if (gate := _untrained(ctx, ctx.dataset)) is not None:
        return gate
    checked, reasons = [], []
    for ev in ctx.evidence:
        v = _verified(ev, ctx.dataset)
        if not _fraction(v.get("test_accuracy")):
            reasons.append(f"{where(ev)}: {_why_unverified(ev, ctx.dataset)}")
            continue
        diffs, compared = printed_vs_measured(ev, v, tol=tol)
        checked.append((ev, diffs, compared, v))
    printed_any = any(_printed_any(ev) for ev in ctx.evidence)
    if not checked:
        if not printed_any:
            return _nothing_printed(ctx, None)
        inconsistent = _inconsistent(ctx, tol=consistency)
        if inconsistent:
            ev, msg = inconsistent
            return Outcome("fail", 0.0, msg + " Print what your code computes.", (where(ev),), flags=("mismatch",))
        return Outcome("manual", 0.0, "the printed metrics could not be verified independently ("
                       + "; ".join(reasons) + "); a TA will compare them by hand.")
    bad = [(ev, d) for ev, d, _, _ in checked if d]
    if bad:
        ev, diffs = bad[0]
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        return Outcome("fail", 0.0, f"printed numbers disagree with the model's measured ones: "
                       f"{'; '.join(diffs[:3])}{more}. Print what your code computes.",
                       (where(ev),), flags=("mismatch",))
    gap = next((v for _, _, _, v in checked if _hidden_gap(v)), None)
    if gap is not None:
        return Outcome("manual", 0.0, f"the printed numbers match the measured ones, but {_gap_text(gap)}; "
                                      f"a TA checks whether the test split was used for training.",
                       tuple(where(ev) for ev, _, _, v in checked if v is gap),
                       flags=("hidden-gap",), own_words=True)
    n = sum(c for _, _, c, _ in checked)
    measured = float(checked[0][3]["test_accuracy"])
    if n == 0:
        if printed_any:
            return Outcome("manual", 0.0, f"numbers were printed, but none could be matched with the independent "
                                          f"evaluation (measured {fmt_pct(measured)}): the class names may "
                                          f"differ; a TA compares them.", tuple(where(ev) for ev, _, _, _ in checked))
        return _nothing_printed(ctx, measured)
    return Outcome("pass", 1.0, f"{n} printed number{'s' if n > 1 else ''} (measured test accuracy "
                                f"{fmt_pct(measured)}) match an independent evaluation of the trained model.",
                   tuple(where(ev) for ev, _, _, _ in checked))


# Test splits whose classes are equally sized: there, the mean of the per-class accuracies
# must equal the total accuracy, which catches per-class numbers typed in by hand.
BALANCED_TEST = {s.name for s in registry.SPECS if s.test_balanced}


def _inconsistent(ctx: CheckContext, *, tol: float) -> tuple[Mapping, str] | None:
    for ev in ctx.evidence:
        m = _metrics(ev)
        per_class = {c: v for c, v in (m.get("per_class_accuracy") or {}).items() if _fraction(v)}
        total = m.get("test_accuracy")
        dataset = m.get("dataset") or ctx.dataset
        if dataset in BALANCED_TEST and _fraction(total) and len(per_class) == len(CLASSES[dataset]):
            mean = sum(per_class.values()) / len(per_class)
            if abs(mean - total) > tol:
                return ev, (f"the per-class accuracies average {fmt_pct(mean)} but the total test accuracy is "
                            f"{fmt_pct(total)}; on {dataset}'s balanced test split they must agree.")
    return None
