"""Checks on the numbers a notebook reports: test metrics, per-class accuracy, verification."""

from __future__ import annotations

from typing import Mapping

from grader.checks.base import CLASSES, CheckContext, Outcome, fmt_pct, where


def _metrics(ev: Mapping) -> Mapping:
    return ev.get("metrics") or {}


def _not_found(ctx: CheckContext) -> Outcome | None:
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook or script for {ctx.part_id} was found in the submission "
                                    f"(looked for one that trains on {ctx.dataset or 'the part dataset'}).")
    return None


def per_class_accuracy(ctx: CheckContext, params: Mapping) -> Outcome:
    """Accuracy shown for every class of the dataset."""
    if (miss := _not_found(ctx)) is not None:
        return miss
    dataset = params.get("dataset") or ctx.dataset or "cifar10"
    classes = CLASSES[dataset]
    best_ev, best = None, {}
    for ev in ctx.evidence:
        found = {c: v for c, v in (_metrics(ev).get("per_class_accuracy") or {}).items() if c in classes}
        if len(found) > len(best):
            best_ev, best = ev, found
    missing = [c for c in classes if c not in best]
    need = float(params.get("min_fraction", 1.0))
    share = len(best) / len(classes)
    if not best:
        return Outcome("fail", 0.0, f"no accuracy for each class was found: print the test accuracy of every "
                                    f"one of the {len(classes)} {dataset} classes (e.g. `Accuracy of plane : 54 %`).")
    pointer = (where(best_ev),) if best_ev else ()
    if share >= need and not missing:
        return Outcome("pass", 1.0, f"accuracy shown for all {len(classes)} classes.", pointer)
    return Outcome("partial", share, f"accuracy shown for {len(best)} of {len(classes)} classes; missing: "
                                     f"{', '.join(missing)}.", pointer)


def test_metrics(ctx: CheckContext, params: Mapping) -> Outcome:
    """Total test loss and accuracy shown."""
    if (miss := _not_found(ctx)) is not None:
        return miss
    want = tuple(params.get("require", ("accuracy", "loss")))
    shown: dict[str, tuple[float, Mapping]] = {}
    for ev in ctx.evidence:
        m = _metrics(ev)
        for key in want:
            if m.get(f"test_{key}") is not None:
                shown[key] = (m[f"test_{key}"], ev)
    missing = [k for k in want if k not in shown]
    pointers = tuple(sorted({where(ev) for _, ev in shown.values()}))
    parts = []
    if "accuracy" in shown:
        parts.append(f"test accuracy {fmt_pct(shown['accuracy'][0])}")
    if "loss" in shown:
        parts.append(f"test loss {shown['loss'][0]:.4g}")
    if not missing:
        return Outcome("pass", 1.0, f"{' and '.join(parts)} shown.", pointers)
    fix = " and ".join(f"the total test {k}" for k in missing)
    if shown:
        return Outcome("partial", len(shown) / len(want), f"{', '.join(parts)} shown, but not {fix}: "
                                                          f"print it after evaluating on the whole test split.", pointers)
    return Outcome("fail", 0.0, "no total test loss or accuracy was found: evaluate on the whole test split "
                                "and print both.")


def _accuracy(ctx: CheckContext) -> tuple[float | None, str, Mapping | None]:
    """The verified accuracy when there is one, else the printed one."""
    for ev in ctx.evidence:
        v = ev.get("verified") or {}
        if v.get("test_accuracy") is not None:
            return float(v["test_accuracy"]), "verified", ev
    for ev in ctx.evidence:
        if _metrics(ev).get("test_accuracy") is not None:
            return float(_metrics(ev)["test_accuracy"]), "printed", ev
    return None, "", None


def accuracy_vs_reference(ctx: CheckContext, params: Mapping) -> Outcome:
    """Test accuracy against an absolute floor and the reference's seed band."""
    if (miss := _not_found(ctx)) is not None:
        return miss
    acc, source, ev = _accuracy(ctx)
    if acc is None:
        return Outcome("fail", 0.0, "no test accuracy was found to compare with the reference.")
    floor = float(params.get("floor", 0.0))
    ref = ((ctx.reference or {}).get("summary") or {}).get("test_accuracy")
    band = params.get("band", "reference")
    if ref:
        # "reference": the reference's seed spread (2 std), never narrower than 5 points,
        # since a reference trained with few seeds understates its own spread.
        width = max(2 * ref["std"], 0.05) if band == "reference" else float(band)
        low = ref["mean"] - width
        target = f"the reference's {fmt_pct(ref['mean'])} (full points from {fmt_pct(low)})"
    else:
        low, target = floor, f"the floor of {fmt_pct(floor)} (no reference result was available)"
    pointer = (where(ev),) if ev else ()
    if acc >= max(low, floor):
        return Outcome("pass", 1.0, f"{source} test accuracy {fmt_pct(acc)} meets {target}.", pointer)
    if acc > floor:
        fraction = round((acc - floor) / (low - floor), 4)  # linear between the floor and the band
        return Outcome("partial", fraction,
                       f"{source} test accuracy {fmt_pct(acc)} is below {target}: train longer or check "
                       f"the learning rate and normalization.", pointer)
    return Outcome("fail", 0.0, f"{source} test accuracy {fmt_pct(acc)} is at or below the floor of "
                                f"{fmt_pct(floor)}.", pointer)


def metrics_verified(ctx: CheckContext, params: Mapping) -> Outcome:
    """Printed metrics agree with an independent evaluation of the trained model."""
    if (miss := _not_found(ctx)) is not None:
        return miss
    tol = float(params.get("tolerance", 0.02))
    checked, reasons = [], []
    for ev in ctx.evidence:
        v = ev.get("verified") or {}
        if v.get("test_accuracy") is None:
            reasons.append(f"{where(ev)}: {v.get('reason', 'no independent evaluation was made')}")
            continue
        printed = _metrics(ev)
        diffs = []
        if printed.get("test_accuracy") is not None and abs(printed["test_accuracy"] - v["test_accuracy"]) > tol:
            diffs.append(f"test accuracy printed {fmt_pct(printed['test_accuracy'])}, "
                         f"measured {fmt_pct(v['test_accuracy'])}")
        for cls, val in (printed.get("per_class_accuracy") or {}).items():
            got = (v.get("per_class_accuracy") or {}).get(cls)
            if got is not None and abs(val - got) > max(tol, 0.05):
                diffs.append(f"{cls} printed {fmt_pct(val)}, measured {fmt_pct(got)}")
        checked.append((ev, diffs))
    if not checked:
        inconsistent = _inconsistent(ctx, tol=float(params.get("consistency_tolerance", 0.1)))
        if inconsistent:
            ev, msg = inconsistent
            return Outcome("fail", 0.0, msg + " Print what your code computes.", (where(ev),), flags=("mismatch",))
        return Outcome("manual", 0.0, "the printed metrics could not be verified independently ("
                       + "; ".join(reasons) + "); a TA will compare them by hand.")
    bad = [(ev, d) for ev, d in checked if d]
    if bad:
        ev, diffs = bad[0]
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        return Outcome("fail", 0.0, f"printed numbers disagree with the model's measured ones: "
                       f"{'; '.join(diffs[:3])}{more}. Print what your code computes.",
                       (where(ev),), flags=("mismatch",))
    return Outcome("pass", 1.0, "printed metrics match an independent evaluation of the trained model.",
                   tuple(where(ev) for ev, _ in checked))


# Test splits whose classes are equally sized: there, the mean of the per-class accuracies
# must equal the total accuracy, which catches per-class numbers typed in by hand.
BALANCED_TEST = {"cifar10", "mnist"}


def _inconsistent(ctx: CheckContext, *, tol: float) -> tuple[Mapping, str] | None:
    for ev in ctx.evidence:
        m = _metrics(ev)
        per_class = m.get("per_class_accuracy") or {}
        total = m.get("test_accuracy")
        dataset = m.get("dataset") or ctx.dataset
        if dataset in BALANCED_TEST and total is not None and len(per_class) == len(CLASSES[dataset]):
            mean = sum(per_class.values()) / len(per_class)
            if abs(mean - total) > tol:
                return ev, (f"the per-class accuracies average {fmt_pct(mean)} but the total test accuracy is "
                            f"{fmt_pct(total)}; on {dataset}'s balanced test split they must agree.")
    return None
