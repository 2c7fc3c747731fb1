"""Check kinds of generative labs, judged by measurement: the host's numbers in
`evidence["generative"]` (grader.verify.generative, its units and the papers they come from in
grader.genmeasures), never the pictures a notebook drew or the numbers it printed.

`generated_samples` (classifier score, class coverage, Fréchet distance, mode collapse),
`conditional_generation` (how often G(z, y) is classified as y), `vae_bound` (the test negative
ELBO recomputed in nats per image, the KL term, active units, and the printed test loss beside
it) and `generative_architecture` (the handout's diagrams: DCGAN, cGAN, VAE) each judge one
captured model of the part's notebook, chosen by `pick`. Every number is shown with its unit and
the reference solution's beside it (ctx.reference, `reference_value`); a bar has an absolute
fallback when the lab has no reference. What the grader could not see (no capture, no
measurement, saved mode) goes to a TA (`manual`, with the reason), never to a `fail`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grader import genmeasures as gm
from grader.checks import params as P
from grader.checks.base import CheckContext, Outcome, fmt_pct, where
from grader.checks.training import finite

MODE_COLLAPSE = "mode-collapse"
"""Flag: the samples show mode collapse (genmeasures.mode_collapse)."""
LABEL_IGNORED = "label-ignored"
"""Flag: a conditional generator's samples are classified as the asked label about as often as chance."""
POSTERIOR_COLLAPSE = "posterior-collapse"
"""Flag: a VAE's KL term is about 0 or no latent unit is active: its decoder ignores z."""
MISMATCH = "mismatch"
"""Flag: the printed test loss is not what the grader measured (the family of grader.checks.metrics)."""
LABEL_WORDS = {"index": "as class indices", "onehot": "as one-hot vectors"}
"""How a capture's `label_input` reads in a message."""
SAMPLE_ROLES = ("generator", "cgenerator", "vae")
"""Roles (grader.probe.rec_gen) whose samples are measured."""


def reference_value(reference: Mapping | None, name: str) -> float | None:
    """A metric of the reference solution's part entry (the expected-metrics file): `summary[name]`
    (a number, or mean ± std over seeds), else the entry's own `name`, else the mean of its
    `runs[*][name]`; None when it has none (the check then uses its absolute fallback)."""
    ref = reference if isinstance(reference, Mapping) else {}
    summary = ref.get("summary") if isinstance(ref.get("summary"), Mapping) else {}
    for value in (summary.get(name), ref.get(name)):
        value = value.get("mean") if isinstance(value, Mapping) else value
        if finite(value):
            return float(value)
    runs = [r.get(name) for r in ref.get("runs") or [] if isinstance(r, Mapping) and finite(r.get(name))]
    return sum(runs) / len(runs) if runs else None


def _num(x: object) -> float | None:
    return float(x) if finite(x) else None  # type: ignore[arg-type]


def _tokens(op: object) -> set[str]:
    """An op's name as lower-case tokens without the in-place underscores: `aten::relu_` -> {aten, relu}."""
    return {t.strip("_") for t in re.split(r"[^a-z0-9_]+", str(op).lower()) if t.strip("_")}


_CONV = re.compile(r"(\w+_)?convolution|conv\dd|conv_transpose\dd|conv_tbc")


def _ops(facts: Mapping) -> set[str]:
    ops = facts.get("ops") if isinstance(facts.get("ops"), Mapping) else {}
    return {t for op, n in ops.items() if not (finite(n) and n <= 0) for t in _tokens(op)}


def _layers(facts: Mapping) -> list[tuple[str, Any]]:
    """(kind, stride) of each conv / conv_transpose layer the host read from the graph."""
    out = []
    for layer in facts.get("layers") or []:
        if isinstance(layer, (list, tuple)) and len(layer) >= 3 and isinstance(layer[0], str):
            out.append((layer[0], layer[2]))
    return out


def architecture_of(facts: object) -> str | None:
    """`conv` when a model's graph has conv or conv_transpose ops (or layers), `mlp` when its op
    list is complete and has none, None when the grader cannot tell."""
    if not isinstance(facts, Mapping):
        return None
    if _layers(facts) or any(_CONV.fullmatch(t) for t in _ops(facts)):
        return "conv"
    return "mlp" if facts.get("ops_complete") is True and _ops(facts) else None


@dataclass(frozen=True)
class Picked:
    """The captured model an item judges, with its notebook's generative evidence."""

    ev: Mapping
    gen: Mapping
    measure: Mapping
    """Its `measures[]` (or `structures[]`) entry."""
    capture: Mapping
    """Its capture record (what the probe saw: latent, label input, steps)."""
    note: str = ""
    """Why this one, when the choice was not plain (several, or an architecture unknown)."""

    @property
    def name(self) -> str:
        var = self.capture.get("name") or self.measure.get("name")
        cls = self.capture.get("class")
        what = f"`{var}`" if isinstance(var, str) else f"the {self.measure.get('role') or 'model'}"
        return f"{what} ({cls})" if isinstance(cls, str) else what

    @property
    def steps(self) -> int:
        s = self.capture.get("steps")
        return int(s) if isinstance(s, int) and not isinstance(s, bool) and s >= 0 else 0


def _gen(ev: Mapping) -> Mapping | None:
    g = ev.get("generative")
    return g if isinstance(g, Mapping) else None


def _capture(gen: Mapping, cid: object) -> tuple[int, Mapping]:
    """(position among the captures, newest first; the capture) of capture id `cid`."""
    for i, c in enumerate(gen.get("captures") or []):
        if isinstance(c, Mapping) and c.get("id") == cid:
            return i, c
    return len(gen.get("captures") or []), {}


def _entries(gen: Mapping, roles: Sequence[str]) -> list[tuple[Mapping, int, Mapping]]:
    """(entry, capture position, capture) of the measures and structures of `roles`."""
    out = []
    for key in ("measures", "structures"):
        for m in gen.get(key) or []:
            if isinstance(m, Mapping) and m.get("role") in roles:
                out.append((m, *_capture(gen, m.get("capture"))))
    return out


def _failed(gen: Mapping, roles: Sequence[str]) -> list[str]:
    return [f"{c.get('class') or c.get('role')}: {str(c['reason'])[:200]}" for c in gen.get("captures") or []
            if isinstance(c, Mapping) and c.get("role") in roles and c.get("reason")]


def _seen(gen: Mapping) -> str:
    roles = [f"{c.get('name') or c.get('class') or '?'} ({c.get('role')})" for c in gen.get("captures") or []
             if isinstance(c, Mapping)]
    return ", ".join(roles[:6]) or "none"


def _trained_nothing(ev: Mapping) -> bool:
    """Whether an executed notebook certainly trained no model: it ran to the end with the probe
    watching, the generative capture ran and found nothing, and no optimizer stepped (a grader
    that saw nothing is not "trained nothing": a probe that did not start, a crash, a capture
    that failed all say nothing)."""
    gen = _gen(ev)
    probe = ev.get("probe") if isinstance(ev.get("probe"), Mapping) else {}
    return (ev.get("mode") == "execute" and ev.get("status") == "ok" and bool(probe.get("started"))
            and gen is not None and not gen.get("captures") and not gen.get("measures")
            and not any(isinstance(o, Mapping) and (o.get("steps") or 0) > 0 for o in ev.get("optimizers") or []))


def pick(ctx: CheckContext, roles: Sequence[str], architecture: str, *, what: str,
         measured: bool = True) -> Picked | Outcome:
    """The captured model of `roles` and `architecture` (P.GenArchitecture) in the part's
    notebooks: several matching, the one with the most optimizer steps, then the newest; one
    whose architecture the grader cannot tell only when none is known to match. No notebook:
    `fail`; no capture, saved mode, or (with `measured`) not measured: `manual` with the reason."""
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook or script for {ctx.part_id} was found in the submission.")
    evs = list(ctx.evidence)
    if all(ev.get("mode") == "saved" for ev in evs):
        return Outcome("manual", 0.0, f"Saved mode: nothing was run, so the grader measured no {what}; a TA judges "
                                      f"it from the notebook's outputs.", tuple(where(ev) for ev in evs)[:3])
    sure, unsure, other, reasons = [], [], [], []
    for k, ev in enumerate(evs):
        gen = _gen(ev)
        if gen is None:
            reasons.append(f"{where(ev)}: no generative model was captured from its run (status {ev.get('status')})")
            continue
        if gen.get("reason") and not gen.get("measures"):
            reasons.append(f"{where(ev)}: {str(gen['reason'])[:300]}")
        reasons += [f"{where(ev)}: the capture of {r}" for r in _failed(gen, roles)]
        for m, pos, cap in _entries(gen, roles):
            arch = architecture_of(m.get("facts"))
            found = Picked(ev, gen, m, cap)
            key = (-found.steps, -k, pos)
            if architecture == "any" or arch == architecture:
                sure.append((key, found))
            elif arch is None:
                unsure.append((key, found))
            else:
                other.append(f"{found.name} ({arch})")
    chosen = sorted(sure, key=lambda x: x[0]) or sorted(unsure, key=lambda x: x[0])
    if not chosen and all(_trained_nothing(ev) for ev in evs):
        return Outcome("fail", 0.0, f"no model was trained in the part's notebook (it ran to the end, watched by "
                                    f"the grader, and no optimizer stepped), so there is no {what} to measure.",
                       tuple(where(ev) for ev in evs)[:3])
    if not chosen:
        shape = "" if architecture == "any" else f" {architecture}"
        seen = "; ".join(f"{where(ev)} captured {_seen(g)}" for ev in evs if (g := _gen(ev)) is not None)
        text = f"the grader found no{shape} {' or '.join(roles)} to measure in the part's notebook"
        text += f" ({'; '.join(reasons[:3])})" if reasons else f" ({seen or 'nothing was captured'})"
        if other:
            text += f"; of another architecture: {', '.join(other[:3])}"
        return Outcome("manual", 0.0, text[:1].upper() + text[1:] + ". This is not a finding against your work: a "
                                      "TA will judge it.", tuple(where(ev) for ev in evs)[:3], own_words=True)
    best = chosen[0][1]
    notes = []
    if len(chosen) > 1:
        notes.append(f"of {len(chosen)} matching models, the one trained most ({best.steps} optimizer steps), "
                     f"then the newest")
    if not sure:
        notes.append(f"the grader could not tell whether it is {architecture}")
    best = Picked(best.ev, best.gen, best.measure, best.capture, "; ".join(notes))
    if measured and best.measure.get("reason"):
        return Outcome("manual", 0.0, f"{best.name} in {where(best.ev)} was captured but not measured: "
                                      f"{str(best.measure['reason'])[:300]}. This is not a finding against your "
                                      f"work: a TA will judge it.", (where(best.ev),), own_words=True)
    return best


def _all(model: type[P.Params], params: Any) -> Any:
    """`params` as `model`, every param read once, up front (a check that returns early has still
    read them all)."""
    return model.model_validate({f: getattr(params, f) for f in model.model_fields})


def _higher(value: float, bar: float, partial_from: float, partial: float) -> float:
    return 1.0 if value >= bar else partial if value >= partial_from * bar else 0.0


def _verdict(fraction: float) -> str:
    return "pass" if fraction >= 1.0 - 1e-9 else "partial" if fraction > 0 else "fail"


def _about(p: Picked) -> str:
    """`netG` (Generator), 4 690 optimizer steps, [why this one]."""
    return f"{p.name} in {where(p.ev)}, {p.steps:,} optimizer steps" + (f" ({p.note})" if p.note else "")


def _sampling(m: Mapping) -> str:
    n, seed, how = m.get("n"), m.get("seed"), m.get("output_map")
    return (f"{n:,} samples" if isinstance(n, int) else "samples") + (f", seed {seed}" if seed is not None else "") \
        + (f", outputs mapped {str(how)[:60]}" if how else "")


def _real(gen: Mapping, key: str) -> Any:
    real = gen.get("real") if isinstance(gen.get("real"), Mapping) else {}
    return real.get(key)


def _coverage(m: Mapping) -> Mapping | None:
    c = m.get("coverage")
    if not isinstance(c, Mapping) or not isinstance(c.get("classes"), int) or not finite(c.get("max_share")):
        return None
    return c


def _collapse(m: Mapping, cov: Mapping) -> tuple[bool, str]:
    c = m.get("collapse")
    if isinstance(c, Mapping) and isinstance(c.get("flag"), bool):
        return c["flag"], str(c.get("why") or "")[:300]
    if isinstance(cov.get("shares"), list) and isinstance(cov.get("most"), int):
        return gm.mode_collapse(cov, _num(m.get("diversity_ratio")))
    return False, ""


@P.takes(P.GeneratedSamples)
def generated_samples(ctx: CheckContext, params: P.GeneratedSamples) -> Outcome:
    """The captured generator's samples (a VAE's: its decoder on noise) against the reference's:
    classifier score (1..classes), class coverage (digits appearing, each with at least
    genmeasures.PRESENT_SHARE of the samples) and Fréchet distance in the instrument's feature
    space. Each earns 1, `partial_credit` (past `partial_from` of its bar) or 0; the item earns
    their mean, at most `collapse_credit` on mode collapse (flag MODE_COLLAPSE)."""
    p = _all(P.GeneratedSamples, params)
    picked = pick(ctx, (p.role,), p.architecture, what=f"{p.role}'s samples")
    if isinstance(picked, Outcome):
        return picked
    m, gen = picked.measure, picked.gen
    score, fd, cov = _num(m.get("classifier_score")), _num(m.get("frechet_distance")), _coverage(m)
    if score is None or cov is None:
        why = str(m.get("samples_reason") or "the grader has no classifier score or class coverage of them")[:300]
        return Outcome("manual", 0.0, f"{_about(picked)}: its samples were not measured ({why.rstrip('.')}). This is "
                                      f"not a finding against your work: a TA will judge them.", (where(picked.ev),),
                       own_words=True)
    classes = len(cov["shares"]) if isinstance(cov.get("shares"), list) and cov["shares"] else 10
    parts: list[tuple[float | None, str]] = []

    ref = reference_value(ctx.reference, "classifier_score")
    bar = p.score_ratio * ref if ref else p.min_score
    real = _num(_real(gen, "classifier_score"))
    parts.append((_higher(score, bar, p.partial_from, p.partial_credit),
                  f"classifier score {score:.2f} of at most {classes} ({_ref(ref, '.2f')}full points from {bar:.2f}"
                  + (f"; real test images {real:.2f}" if real is not None else "") + ")"))

    ref_c = reference_value(ctx.reference, "coverage_classes")
    bar_c = min(classes, max(gm.COLLAPSE_MIN_CLASSES, round(ref_c) - p.coverage_slack) if ref_c else
                classes - p.coverage_slack)
    ref_share = reference_value(ctx.reference, "max_share")
    most = f" ({cov['most']})" if isinstance(cov.get("most"), int) else ""
    parts.append((_higher(cov["classes"], bar_c, p.partial_from, p.partial_credit),
                  f"{cov['classes']} of {classes} digits appear, each in at least {fmt_pct(gm.PRESENT_SHARE)} of the "
                  f"samples ({_ref(ref_c, '.0f')}full points from {bar_c}); the most frequent digit{most} is "
                  f"{fmt_pct(cov['max_share'])} of them"
                  + (f" (reference {fmt_pct(ref_share)})" if ref_share is not None else "")))

    ref_fd = reference_value(ctx.reference, "frechet_distance")
    bar_fd = p.frechet_ratio * ref_fd if ref_fd else p.max_frechet
    if fd is not None:
        credit = None if bar_fd is None else 1.0 if fd <= bar_fd else \
            p.partial_credit if fd * p.partial_from <= bar_fd else 0.0
        parts.append((credit, f"Fréchet distance {fd:.3g} in the grader's classifier features ({_ref(ref_fd, '.3g')}"
                              + (f"full points up to {bar_fd:.3g})" if bar_fd is not None else
                                 "shown, not graded: it has no scale without a reference)")))
    graded = [c for c, _ in parts if c is not None]
    fraction = sum(graded) / len(graded)
    collapsed, why = _collapse(m, cov)
    text = f"{_about(picked)}: " + "; ".join(t for _, t in parts)
    flags: tuple[str, ...] = ()
    if collapsed:
        fraction, flags = min(fraction, p.collapse_credit), (MODE_COLLAPSE,)
        text += f". Mode collapse: {why or 'the samples cover few digits'}"
    fraction = round(fraction, 4)
    return Outcome(_verdict(fraction), fraction, f"{text}. {_sampling(m)}.", (where(picked.ev),), flags)


def _ref(value: float | None, fmt: str) -> str:
    return f"reference {value:{fmt}}, " if value is not None else "no reference, "


@P.takes(P.ConditionalGeneration)
def conditional_generation(ctx: CheckContext, params: P.ConditionalGeneration) -> Outcome:
    """How often the conditional generator's G(z, y) is classified as y by the grader's
    classifier (a fraction 0..1; GAN-test, Shmelkov et al. 2018), against the reference's. At or
    below `ignored_below` the generator ignores its label: fail, flag LABEL_IGNORED."""
    p = _all(P.ConditionalGeneration, params)
    picked = pick(ctx, ("cgenerator",), p.architecture, what="conditional generator")
    if isinstance(picked, Outcome):
        return picked
    m, gen = picked.measure, picked.gen
    c = m.get("conditional") if isinstance(m.get("conditional"), Mapping) else {}
    acc = _num(c.get("accuracy"))
    if acc is None or not 0.0 <= acc <= 1.0:
        why = str(m.get("samples_reason") or "the grader could not tell how to feed it labels")[:300].rstrip(".")
        return Outcome("manual", 0.0, f"{_about(picked)}: its conditional accuracy was not measured ({why}). This is "
                                      f"not a finding against your work: a TA will judge it.", (where(picked.ev),),
                       own_words=True)
    per = [x if finite(x) else None for x in c.get("per_class") or []]
    classes = len(per) or 10
    ref = reference_value(ctx.reference, "conditional_accuracy")
    bar = p.accuracy_ratio * ref if ref else p.min_accuracy
    inst = gen.get("instrument") if isinstance(gen.get("instrument"), Mapping) else {}
    ceiling = _num(inst.get("test_accuracy"))
    text = (f"{_about(picked)}: G(z, y) is classified as the digit y asked for in {fmt_pct(acc)} of the samples "
            f"(chance {fmt_pct(1 / classes)}; {f'reference {fmt_pct(ref)}, ' if ref else 'no reference, '}"
            f"full points from {fmt_pct(bar)}"
            + (f"; the grader's classifier is {fmt_pct(ceiling)} right on real test images" if ceiling else "") + ")")
    known = [(i, x) for i, x in enumerate(per) if x is not None]
    if known:
        worst, best = min(known, key=lambda t: t[1]), max(known, key=lambda t: t[1])
        if worst[1] != best[1]:
            text += f"; per digit from {fmt_pct(worst[1])} (digit {worst[0]}) to {fmt_pct(best[1])} (digit {best[0]})"
    how = c.get("label_input") or picked.capture.get("label_input")
    text += f". Labels fed {LABEL_WORDS.get(str(how), str(how)[:40])}" if how else ""
    if acc <= p.ignored_below:
        effect = _num(c.get("label_effect"))
        if effect is not None and effect <= gm.LABEL_UNUSED:
            why = (f"changing the label with z fixed changes none of its outputs (mean pixel change {effect:.1g}): "
                   f"the label reaches the generator but is not used (multiplied away, or an embedding never "
                   f"applied); feed y into the generator's layers (e.g. an embedding concatenated with z)")
        elif effect is not None:
            why = (f"the label changes the images (mean pixel change {effect:.3f} with z fixed) but not into the "
                   f"digit asked for: trained too briefly for G to learn it, or D does not see the label")
        else:
            why = "feed y into the generator's layers (e.g. an embedding concatenated with z)"
        return Outcome("fail", 0.0, f"{text}. The generator ignores its label: {why}. {_sampling(m)}.",
                       (where(picked.ev),), (LABEL_IGNORED,))
    fraction = _higher(acc, bar, p.partial_from, p.partial_credit)
    return Outcome(_verdict(fraction), fraction, f"{text}. {_sampling(m)}.", (where(picked.ev),))
