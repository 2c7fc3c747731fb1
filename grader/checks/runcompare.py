"""The run comparison check: two runs that differ in one factor and agree on the others.

It reads the run records of every notebook (`evidence["runs"]`, grader.evidence_model.Run,
built on the host by grader.runrecords). A run's signature is what it did as it executed
(`_signature`); an unknown value (None) is never a difference, only named. The credit of the
best pair is multiplied down for each thing it lacks (`_credit`); the direction of the result
(which run did better) is never graded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Mapping, Sequence

from grader.checks import params as P
from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, fmt_pct, where
from grader.checks.lrstudy import study
from grader.checks.runconfirm import RUN_Z, _run_unconfirmed, _trained_z
from grader.corroborate import figure_captured

TYPED = "mismatch"
"""Flag of a run whose printed number was typed or disagrees with the grader's evaluation of
its model (`printed_check.typed`): the family of printed-but-unverified numbers."""

COMPARED = ("model_kind", "depth", "width", "conv_layers", "activation", "optimizer", "lr", "schedule",
            "epochs", "batch_size", "loss", "train_dataset")
"""Every factor of a signature, in the order messages name them."""

DERIVED: Mapping[str, frozenset[str]] = {
    "model_kind": frozenset({"depth", "width", "activation", "conv_layers"}),
    "conv_layers": frozenset({"width", "depth"}),  # the FC head follows the conv stack
    "lr_or_schedule": frozenset({"lr", "schedule"}),
    "se": frozenset({"width", "depth", "activation", "conv_layers"}),  # the gate's FCs and sigmoid
}
"""Factors a change of the named one changes by itself: never compared for it (depth/width
change the parameter count, epochs the budget, lr its changes: none of those is compared)."""

ANY = ("optimizer", "loss", "lr")
"""What `factor: any` may differ in."""


@dataclass(frozen=True)
class _Run:
    """One run record of one notebook, with its signature."""

    ev: Mapping
    run: Mapping
    sig: Mapping[str, Any]
    order: int
    """Position among all runs read (notebook order, then run order): larger is newer."""
    qualified: bool = False
    """The submission has runs in several notebooks: names say whose (`lab4a-ex1.ipynb run 2`)."""

    @property
    def name(self) -> str:
        own = str(self.run.get("name") or "run ?")
        return f"{where(self.ev)} {own}" if self.qualified else own

    @property
    def verified(self) -> float | None:
        acc = (self.run.get("verified") or {}).get("test_accuracy")
        return float(acc) if isinstance(acc, (int, float)) and math.isfinite(acc) else None


def _signature(run: Mapping) -> dict[str, Any]:
    """factor -> value of a run record; None where the record does not say."""
    s = run.get("structure") or {}
    kind = s.get("kind") if isinstance(s.get("kind"), str) else None
    widths = s.get("hidden_widths")
    if isinstance(widths, list) and all(isinstance(w, int) for w in widths):
        depth, width = len(widths), tuple(sorted(set(widths))) or None
    else:
        layers = s.get("linear_layers")
        depth = layers - 1 if isinstance(layers, int) and layers >= 1 and kind in ("linear", "mlp") else None
        width = None
    if kind == "linear":
        depth, width = 0, None
    acts = s.get("activations")
    lr = run.get("lr")
    scheds = run.get("schedulers")
    return {
        "model_kind": kind, "depth": depth, "width": width,
        "conv_layers": s.get("conv_layers") if isinstance(s.get("conv_layers"), int)
        else 0 if kind in ("linear", "mlp") else None,
        "activation": tuple(sorted(acts)) if isinstance(acts, Mapping) and acts else None,
        "optimizer": run.get("optimizer") or None,
        "lr": float(f"{float(lr):.6g}") if isinstance(lr, (int, float)) and math.isfinite(lr) else None,
        "schedule": tuple(sorted(map(str, scheds))) if isinstance(scheds, list) else None,
        "epochs": run.get("full_epochs") if isinstance(run.get("full_epochs"), int) else None,
        "batch_size": run.get("batch_size") if isinstance(run.get("batch_size"), int) else None,
        "loss": run.get("loss") or None,
        "train_dataset": run.get("train_dataset") or None,
        "se": _se(run.get("architecture")),
    }


def _se(arch: Any) -> str | None:
    """`SE-ResNet` when a block of the run's model has an SE gate, `ResNet` when its blocks have
    none (grader.verify.arch), None when its architecture was not read."""
    if not isinstance(arch, Mapping) or not isinstance(arch.get("blocks"), list) or not arch["blocks"]:
        return None
    return "SE-ResNet" if any(isinstance(b, Mapping) and b.get("gate") for b in arch["blocks"]) else "ResNet"


def show(factor: str, value: Any) -> str:
    """A factor's value as a message says it: `4 hidden layers`, `lr 0.002`, `SGD`."""
    if value is None:
        return f"{factor} unknown"
    if isinstance(value, float) and value.is_integer() and factor != "lr":
        value = int(value)  # a rubric's `values: [2, 4]` are read as numbers
    if factor == "depth":
        return f"{value} hidden layer{'s' if value != 1 else ''}"
    if factor == "width":
        return "/".join(map(str, value)) + " hidden units" if isinstance(value, tuple) else f"{value} hidden units"
    if factor == "conv_layers":
        return f"{value} conv layer{'s' if value != 1 else ''}"
    if factor == "epochs":
        return f"{value} epoch{'s' if value != 1 else ''}"
    if factor == "lr":
        return f"lr {value:g}"
    if factor == "batch_size":
        return f"batch size {value}"
    if factor in ("activation", "schedule"):
        return f"{factor} {'+'.join(value) or 'none'}"
    if factor == "model_kind":
        return {"linear": "linear model", "mlp": "MLP", "cnn": "CNN"}.get(str(value), str(value))
    return str(value)


def _same(factor: str, a: Any, b: Any) -> bool:
    """Whether two known values of `factor` are one value (rates to 6 digits, names any case)."""
    if factor == "lr" and isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    if factor == "width" and not isinstance(a, tuple):
        a = (a,)
    if factor == "width" and not isinstance(b, tuple):
        b = (b,)
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return bool(a == b)


def _differs(factor: str, a: _Run, b: _Run) -> bool:
    x, y = a.sig.get(factor), b.sig.get(factor)
    return x is not None and y is not None and not _same(factor, x, y)


def _at_values(factor: str, values: Sequence[Any] | None, a: _Run, b: _Run) -> bool:
    """Whether the pair's two values are the handout's two (any order); True without `values`."""
    if not values:
        return True
    x, y = a.sig.get(factor), b.sig.get(factor)
    return any(_same(factor, x, v) and _same(factor, y, w) for v, w in combinations(values, 2)) or \
        any(_same(factor, y, v) and _same(factor, x, w) for v, w in combinations(values, 2))


def _agree_on(params: P.RunComparison, factor: str) -> tuple[str, ...]:
    """The factors the pair must share: the rubric's, or every compared one but `factor` and
    what it changes by itself."""
    if params.agree_on is not None:
        named = [f for g in params.agree_on for f in (DERIVED["lr_or_schedule"] if g == "lr_or_schedule"
                                                     else ANY if g == "any" else (g,))]
        return tuple(f for f in dict.fromkeys(named) if f != factor)
    return tuple(f for f in COMPARED if f != factor and f not in DERIVED.get(factor, ()))


def _evaluated(r: _Run) -> bool:
    """The student evaluated the run on the test split: a printed test metric attributed to it,
    or an evaluation pass over test data of one of its models."""
    metrics = r.run.get("metrics") or {}
    if any(isinstance(metrics.get(k), (int, float)) for k in ("test_accuracy", "test_loss")):
        return True
    refs = set(r.run.get("model_refs") or [])
    return any(e.get("model_ref") in refs and e.get("split") == "test" for e in r.ev.get("evaluations") or []
               if isinstance(e, Mapping))


def _shown(how: str, a: _Run, b: _Run) -> tuple[bool, tuple[str, ...]]:
    """(the pair is compared as `how` asks, pointers): a captured line chart (not of one line)
    in a cell run after both runs' cells (In[n] of both notebooks' runs, when they are one
    notebook), or both runs' printed test accuracies."""
    if how == "none":
        return True, ()
    charts: list[str] = []
    for ev in {id(a.ev): a.ev, id(b.ev): b.ev}.values():
        last = max([c for r in (a, b) if r.ev is ev for c in r.run.get("cells") or [] if isinstance(c, int)],
                   default=0)
        charts += [where(ev, f.get("cell")) for f in ev.get("figures") or []
                   if f.get("kind") == "line" and figure_captured(f) and _lines(f) != 1
                   and (not isinstance(f.get("cell"), int) or f["cell"] >= last)]
    numbers = all(isinstance((r.run.get("metrics") or {}).get("test_accuracy"), (int, float)) for r in (a, b))
    ok = bool(charts) if how == "plot" else numbers if how == "numbers" else bool(charts) or numbers
    return ok, tuple(charts[:2])


def _lines(figure: Mapping) -> int | None:
    """Lines drawn in a line chart (`n_lines`, the probe's count over its axes), None when the
    evidence does not say: then it is not held against the student."""
    n = figure.get("n_lines")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _label(r: _Run, factor: str) -> str:
    return f"{r.name} ({show(factor, r.sig.get(factor))})"


def _accuracies(a: _Run, b: _Run) -> str:
    if a.verified is None and b.verified is None:
        return "neither model could be evaluated by the grader"
    return f"{fmt_pct(a.verified)} vs {fmt_pct(b.verified)} test accuracy by the grader's evaluation"


@dataclass(frozen=True)
class _Pair:
    a: _Run
    b: _Run
    factor: str
    extra: tuple[str, ...]
    values_ok: bool
    evaluated: bool
    shown: bool
    charts: tuple[str, ...]
    unknown: tuple[str, ...]

    def credit(self, p: P.RunComparison) -> float:
        c = 1.0
        c *= p.extra_factor_credit if self.extra else 1.0
        c *= 1.0 if self.values_ok else p.off_values_credit
        c *= 1.0 if self.shown else p.not_shown_credit
        c *= 1.0 if self.evaluated else p.not_evaluated_credit
        return c


KIND_OF_FACTOR = {"depth": "mlp", "width": "mlp", "conv_layers": "cnn"}
"""The model kind a structural factor is compared within: hidden layers and units of MLPs,
conv layers of CNNs (a linear model is not an MLP with 0 hidden layers for exercise 2)."""


def _of_kind(factor: str, r: _Run) -> bool:
    """Whether run `r` can stand for `factor`'s comparison: its kind is the factor's, or unknown."""
    want, kind = KIND_OF_FACTOR.get(factor), r.sig.get("model_kind")
    return want is None or kind in (None, "other", want)


def _differences(a: _Run, b: _Run) -> int:
    """How many signature factors (derived ones included) two runs differ in."""
    return sum(_differs(f, a, b) for f in a.sig)


def _pairs(runs: list[_Run], p: P.RunComparison) -> list[_Pair]:
    """Every pair of runs (distinct models, of the factor's model kind) that differs in the
    factor (for `any`, in one of optimizer/loss/lr), best first: fewest extra differences,
    handout values, both evaluated, then within one notebook, then the closest pair (fewest
    differences of any kind, nearest in run order), then the earliest (exercises come in the
    handout's order)."""
    out = []
    for a, b in combinations(runs, 2):
        if not (_of_kind(p.factor, a) and _of_kind(p.factor, b)):
            continue
        da, db = (a.run.get("verified") or {}).get("digest"), (b.run.get("verified") or {}).get("digest")
        if da and da == db:
            continue  # one model counted once
        for factor in (ANY if p.factor == "any" else (p.factor,)):
            if not _differs(factor, a, b):
                continue
            agree = _agree_on(p, factor)
            extra = tuple(f for f in agree if _differs(f, a, b))
            unknown = tuple(f"{f} of {r.name}" for f in agree for r in (a, b) if r.sig.get(f) is None)
            shown, charts = _shown(p.shown, a, b)
            out.append(_Pair(a, b, factor, extra, _at_values(factor, p.values, a, b),
                             _evaluated(a) and _evaluated(b), shown, charts, unknown))
            break
    out.sort(key=lambda q: (len(q.extra), not q.values_ok, not q.evaluated, -q.credit(p), q.a.ev is not q.b.ev,
                            _differences(q.a, q.b), abs(q.a.order - q.b.order), min(q.a.order, q.b.order)))
    return out


def _doubt(r: _Run) -> str | None:
    """Why the host does not back a trained run record, or None (lrstudy's rule for the
    probe's optimizer record, and the host's own evaluation of the run's model)."""
    o = next((x for x in r.ev.get("optimizers") or [] if isinstance(x, Mapping)
              and x.get("ref") is not None and x.get("ref") == r.run.get("optimizer_ref")), None)
    v = r.run.get("verified") or {}
    host = None
    if r.verified is None:
        host = f"its model could not be evaluated by the grader ({str(v.get('reason') or 'not captured').rstrip('.')})"
    else:
        # chance level needs the class count, which the host's run entry holds
        entry = next((e for e in r.ev.get("verified_runs") or [] if isinstance(e, Mapping)
                      and e.get("optimizer") is not None and e.get("optimizer") == r.run.get("optimizer_ref")), {})
        classes = v.get("classes") or entry.get("classes")
        if v.get("n") and isinstance(classes, int) and _trained_z({**v, "classes": classes}) < RUN_Z:
            host = f"its model is at chance level by the grader's evaluation ({fmt_pct(r.verified)})"
    # a run that printed nothing while it trained (results printed later, or only plotted) is
    # backed by the host's own evaluation of its model above chance: lrstudy's output rule is
    # for runs the host could not evaluate
    backed = host is None and v.get("n")
    why = _run_unconfirmed(r.ev, {**o, "host_output": o.get("host_output") or bool(backed)}) if o is not None else None
    return why or host


def _collect(evidence: Sequence[Mapping]) -> tuple[list[_Run], list[_Run], list[_Run]]:
    """(trained, crashed, read from outputs only) runs of every notebook, oldest first."""
    trained, crashed, printed, k = [], [], [], 0
    several = sum(any(isinstance(r, Mapping) for r in ev.get("runs") or []) for ev in evidence) > 1
    for ev in evidence:
        for run in ev.get("runs") or []:
            if not isinstance(run, Mapping):
                continue
            k += 1
            r = _Run(ev, run, _signature(run), k, several)
            {"trained": trained, "crashed": crashed, "not-run": printed}.get(str(run.get("status")), []).append(r)
    return trained, crashed, printed


def _summary(runs: Sequence[_Run], factor: str) -> str:
    groups: dict[str, list[str]] = {}
    for r in runs:
        groups.setdefault(show(factor, r.sig.get(factor)), []).append(r.name)
    return "; ".join(f"{v} ({', '.join(names)})" for v, names in groups.items()) or "none"


def _missing(runs: list[_Run], crashed: list[_Run], p: P.RunComparison) -> Outcome:
    """No pair: name the run that is missing, and any crash that would have been it."""
    factor = p.factor if p.factor != "any" else "optimizer, loss or lr"
    runs = [r for r in runs if _of_kind(p.factor, r)]
    crashed = sorted(crashed, key=lambda r: not _of_kind(p.factor, r))
    have = [r.sig.get(p.factor) for r in runs] if p.factor != "any" else []
    lacking = [v for v in (p.values or ()) if not any(x is not None and _same(p.factor, x, v) for x in have)]
    if lacking:
        first = f"no run with {show(p.factor, lacking[0])}"
    else:
        first = f"no two runs that differ in {factor} (distinct models, both trained)"
    text = f"{first}; runs found: {_summary(runs, p.factor if p.factor != 'any' else 'optimizer')}"
    for r in crashed[:2]:
        e = r.run.get("error") or {}
        text += (f". {_label(r, p.factor if p.factor != 'any' else 'optimizer')} crashed"
                 f"{' in In[' + str(e['cell']) + ']' if e.get('cell') is not None else ''}"
                 f"{': ' + str(e.get('ename')) if e.get('ename') else ''}"
                 f"{': ' + str(e.get('evalue'))[:160] if e.get('evalue') else ''}, so it counts as not trained")
    return Outcome("fail", 0.0, text + ".", tuple(dict.fromkeys(where(r.ev) for r in [*runs, *crashed]))[:3],
                   own_words=True)


def _pct(value: Any) -> str | None:
    """A fraction 0..1 as `97.5 %`, None when it is not a number."""
    return fmt_pct(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _typed(runs: Sequence[_Run], most: int = 2) -> list[str]:
    """One sentence per run whose printed number was typed or is far from its model's (C's
    `printed_check.typed`), the first `most` of them and how many more."""
    out = []
    typed = [r for r in runs if (r.run.get("printed_check") or {}).get("typed")]
    for r in typed[:most]:
        pc = r.run.get("printed_check") or {}
        out.append(f"{r.name}'s printed {_pct(pc.get('printed')) or 'number'} is not what its model measures "
                   f"({pc.get('why') or 'typed, not computed'})")
    if len(typed) > most:
        out.append(f"{len(typed) - most} more run(s) printed numbers their models do not give (see the runs table)")
    return out


def _judge(pairs: list[_Pair], runs: list[_Run], p: P.RunComparison) -> tuple[float, str, tuple[str, ...]]:
    """(fraction, message, pointers) of the best pair."""
    q = pairs[0]
    distinct = len({show(q.factor, r.sig.get(q.factor)) for r in runs
                    if r.sig.get(q.factor) is not None and _of_kind(q.factor, r)})
    fraction = q.credit(p) * min(1.0, distinct / p.min_settings)
    text = [f"{_label(q.a, q.factor)} vs {_label(q.b, q.factor)}: {_accuracies(q.a, q.b)}"]
    if q.extra:
        text.append("the two runs also differ in " + ", ".join(
            f"{f} ({show(f, q.a.sig.get(f))} vs {show(f, q.b.sig.get(f))})" for f in q.extra)
            + f": change only the {q.factor}")
    if not q.values_ok:
        text.append(f"the handout compares {' and '.join(show(q.factor, v) for v in p.values or ())}")
    if not q.evaluated:
        text.append("a run of the pair was never evaluated on the test split")
    if not q.shown:
        text.append({"plot": "no chart with both runs follows them",
                     "numbers": "the two runs' test accuracies are not both printed"}.get(
            p.shown, "the comparison is not shown (a chart with both runs, or both test accuracies printed)"))
    if distinct < p.min_settings:
        text.append(f"{distinct} distinct {q.factor} value(s) trained, {p.min_settings} asked")
    if q.unknown:
        text.append("unknown, not counted as a difference: " + ", ".join(q.unknown[:4]))
    return round(fraction, 4), "; ".join(text) + ".", tuple(dict.fromkeys([*_pointers(q.a, q.b), *q.charts]))


def _pointers(*runs: _Run) -> tuple[str, ...]:
    """Where each run first stepped: `notebook.ipynb#cell 7`."""
    return tuple(dict.fromkeys(where(r.ev, next(iter(r.run.get("cells") or []), None)) for r in runs))


def _saved(printed: list[_Run], evidence: Sequence[Mapping], factor: str) -> Outcome:
    """Saved mode: the runs read from the outputs, for a TA."""
    said = [(r, _pct((r.run.get("metrics") or {}).get("test_accuracy"))) for r in printed[:8]]
    listed = "; ".join(f"{r.name} ({r.run.get('label') or show(factor, r.sig.get(factor))}"
                       f"{', printed ' + acc if acc else ''})" for r, acc in said)
    return Outcome("manual", 0.0, f"Saved mode: nothing was run, so the grader cannot tell what each run did; "
                                  f"printed runs: {listed or 'none the grader could read'}. A TA will compare them.",
                   tuple(dict.fromkeys(where(ev) for ev in evidence))[:3])


@P.takes(P.RunComparison)
def run_comparison(ctx: CheckContext, params: P.RunComparison) -> Outcome:
    """Two runs that differ in `params.factor` and agree on the others, both trained and
    evaluated, and compared in a chart or in printed numbers.

    Reads `evidence["runs"]` of every notebook (submission scope). A pair credits
    extra_factor_credit when it also differs in a factor it should share (named),
    off_values_credit off the handout's values, not_shown_credit when not compared,
    not_evaluated_credit when a run was never evaluated on the test split; these multiply.
    Runs whose models have one parameter digest are one model. A run the host does not back
    (`_doubt`) decides nothing: when it would change the verdict the item goes to a TA
    (`manual`, flagged UNCONFIRMED). `lr_or_schedule` is LAB 1-3's learning-rate study
    (grader.checks.lrstudy). Saved mode (runs read from outputs) goes to a TA with the runs.
    """
    # every param read once, up front (the helpers take the plain model)
    params = P.RunComparison.model_validate({f: getattr(params, f) for f in P.RunComparison.model_fields})
    if params.factor == "lr_or_schedule":
        return study(ctx, min_runs=params.min_settings, require_scheduler=params.require_scheduler,
                     require_plot=params.shown == "plot")
    evidence = list(ctx.all_evidence or ctx.evidence)
    if not evidence:
        return Outcome("fail", 0.0, "no notebook was found.")
    trained, crashed, printed = _collect(evidence)
    if not trained and not crashed:
        if printed or any(ev.get("mode") == "saved" for ev in evidence):
            return _saved(printed, evidence, params.factor if params.factor != "any" else "optimizer")
        if any((o.get("steps") or 0) > 0 for ev in evidence for o in ev.get("optimizers") or []):
            return Outcome("manual", 0.0, "optimizers stepped but the grader built no run records from them; a TA "
                                          "will compare the runs.", tuple(where(ev) for ev in evidence)[:3],
                           flags=(UNCONFIRMED,))
    doubts = {r.order: why for r in trained if (why := _doubt(r))}
    confirmed = [r for r in trained if r.order not in doubts]
    flags = (TYPED,) if _typed(trained) else ()
    typed = "; ".join(_typed(trained))
    mine = _pairs(confirmed, params)
    claimed = _pairs(trained, params) if doubts else []
    best = round(mine[0].credit(params), 4) if mine else 0.0
    if claimed and round(claimed[0].credit(params), 4) > best:
        q = claimed[0]
        why = "; ".join(f"{r.name}: {doubts[r.order]}" for r in (q.a, q.b) if r.order in doubts)
        return Outcome("manual", 0.0, f"{_label(q.a, q.factor)} vs {_label(q.b, q.factor)} would make the pair, but "
                                      f"the grader could not confirm {why}; this is not a finding against your work. "
                                      f"A TA will check the runs." + (f" {typed}." if typed else ""),
                       _pointers(q.a, q.b), flags=(UNCONFIRMED, *flags), own_words=True)
    if not mine:
        out = _missing(confirmed, crashed, params)
        blind = [r.name for r in confirmed if params.factor != "any" and _of_kind(params.factor, r)
                 and r.sig.get(params.factor) is None]
        if blind:  # the grader could not read the factor of some run: no "not found" it cannot back
            return Outcome("manual", 0.0, f"{out.message} The grader could not tell the {params.factor} of "
                                          f"{', '.join(blind[:4])}; this is not a finding against your work. A TA "
                                          f"will check the runs.", out.evidence, (UNCONFIRMED, *flags), own_words=True)
        return Outcome(out.status, 0.0, out.message + (f" {typed}." if typed else ""), out.evidence, flags,
                       own_words=True)
    fraction, message, pointers = _judge(mine, confirmed, params)
    pair_typed = "; ".join(_typed([mine[0].a, mine[0].b]))
    if pair_typed:  # the flag stands for every run; the sentence names the pair's
        message += f" {pair_typed}."
    status = "pass" if fraction >= 1.0 else "partial" if fraction > 0 else "fail"
    return Outcome(status, fraction, message, pointers, flags, own_words=True)
