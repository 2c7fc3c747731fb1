"""Generative labs: logged loss curves checked against what the optimizers stepped on, and
figures told apart by where their images came from.

Both read the evidence only. `logged_losses` reads the curves of grader.parsers.genlogs (printed:
`metrics.curves` `d_loss`, `g_loss`, `vae_loss`, `vae_epoch_loss`, `recon`, `kl`, and the
generic `train_loss` of grader.parsers.curves for a VAE's total; plotted: the probe's figure
`lines`) and the probe's `stepped` values of each optimizer (grader/probe/rec_genlog.py:
[loader pass, steps, mean, min, max, last] of the losses back-propagated before its steps, and
`stepped_sample`: some of those losses exactly).
`figure_origin` reads the probe's figure `origin` (role, capture_class, model_ref, why), found
by content digests of model outputs, never by captions; captions only say what a figure is
presented as.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from typing import Any, Mapping, Sequence

from grader.checks import params as P
from grader.checks.base import CheckContext, Outcome, where
from grader.parsers.genlogs import plotted_curves

NOT_STEPPED = "loss-not-stepped"
"""Flag: a printed loss lies far outside the values its optimizer stepped on, or most printed
values match none of the stepped losses the probe kept (nor their means)."""
MISLABELLED = "figure-origin"
"""Flag: a figure presented as one kind of picture shows another (reconstructions as samples)."""
INSIDE_SHARE = 0.8
"""Share (0..1) of a printed series' values that must lie within the stepped range (widened by
the tolerance) for it to count as what the optimizer stepped on."""

# series that stand for one logged quantity, printed first, then plotted
_WANTED = {
    "gan": (("D loss", ("d_loss", "d_loss (plotted)"), "discriminator"),
            ("G loss", ("g_loss", "g_loss (plotted)"), "generator")),
    "vae": (("loss", ("vae_loss", "vae_epoch_loss", "train_loss", "vae_loss (plotted)"), "vae"),),
}
_TERMS = (("reconstruction loss", ("recon", "recon (plotted)"), None),
          ("KL term", ("kl", "kl (plotted)"), None))
_OPT_NAME = {
    "discriminator": re.compile(r"disc|(?<![a-z])(?:net_?d|opt(?:im(?:izer)?)?_?d|d_?opt(?:im(?:izer)?)?|d)(?![a-z])"),
    "generator": re.compile(r"gen|(?<![a-z])(?:net_?g|opt(?:im(?:izer)?)?_?g|g_?opt(?:im(?:izer)?)?|g)(?![a-z])"),
}
_ROLES = {"discriminator": ("discriminator",), "generator": ("generator", "cgenerator"), "vae": ("vae",)}


def _curves(ev: Mapping[str, Any]) -> dict[str, list[list[float]]]:
    printed = dict((ev.get("metrics") or {}).get("curves") or {})
    return {**plotted_curves(ev.get("figures") or []), **printed}


def _points(curve: Any) -> list[tuple[float, float]]:
    out = []
    for p in curve if isinstance(curve, list) else []:
        if isinstance(p, (list, tuple)) and len(p) >= 2 and all(isinstance(v, (int, float)) for v in p[:2]) \
                and all(math.isfinite(v) for v in p[:2]):
            out.append((float(p[0]), float(p[1])))
    return out


def _find(curves: Mapping[str, Any], names: Sequence[str], min_points: int) -> tuple[str, list] | None:
    for name in names:
        pts = _points(curves.get(name))
        if len({x for x, _ in pts}) >= min_points:
            return name, pts
    return None


def _optimizer(ev: Mapping[str, Any], who: str) -> tuple[Mapping | None, str]:
    """The optimizer that trained `who` (discriminator, generator, vae) and how it was found."""
    opts = [o for o in ev.get("optimizers") or [] if isinstance(o, Mapping)]
    by_ref = {o.get("ref"): o for o in opts}
    for c in ((ev.get("generative") or {}).get("captures") or []):
        if isinstance(c, Mapping) and c.get("role") in _ROLES[who]:
            for ref in c.get("optimizer_refs") or []:
                if ref in by_ref:
                    return by_ref[ref], f"the optimizer of {c.get('name') or c.get('class') or who}"
    stepped = [o for o in opts if o.get("stepped")]
    if who in _OPT_NAME:
        rx = _OPT_NAME[who]
        named = [o for o in stepped if rx.search(" ".join(
            [*(o.get("names") or []), str(o.get("model") or ""), str(o.get("model_class") or "")]).lower())]
        if len(named) == 1:
            return named[0], f"optimizer {'/'.join(named[0].get('names') or []) or named[0].get('type')}"
        return None, f"the grader could not tell which optimizer trained the {who}"
    if stepped:
        best = max(stepped, key=lambda o: int(o.get("steps") or 0))
        return best, f"optimizer {'/'.join(best.get('names') or []) or best.get('type')}"
    return None, "no optimizer steps were recorded"


def _batch_size(ev: Mapping[str, Any]) -> int | None:
    sizes = [d.get("batch_size") for d in ev.get("dataloaders") or []
             if isinstance(d, Mapping) and isinstance(d.get("batch_size"), int) and d.get("split") != "test"]
    return max(sizes, key=sizes.count) if sizes else None


def compare_stepped(printed: Sequence[float], stepped: Sequence[Sequence[Any]], *, tolerance: float,
                    batch_size: int | None, sample: Mapping[str, Any] | None = None) -> tuple[bool, str] | None:
    """Whether printed loss values are what an optimizer stepped on ([serial, n, mean, min, max,
    last] entries), after the reduction that brings them closest (as printed: 1, x2, /2, per
    image vs per batch (batch_size), per pixel (784)); (consistent, numbers in words), or None
    when there is nothing to compare.

    With the probe's `sample` of exact stepped losses (rec_genlog: {"every", "pow2", "first",
    "values": [[serial, i, loss, sum up to step i], ...]}) a printed value counts as stepped when
    it equals, at its printed precision, a pass's last loss or, at a kept step i where i % w is 0
    or w - 1, its loss, the mean from the pass's start to it, or the mean of the w steps up to it,
    for the print intervals w of _WINDOWS within 1.5 x of the printed values' spacing (steps /
    printed values) and that spacing rounded (to 1, 5, 10; any kept step when there is none); or lies within MEAN_TOLERANCE of a pass's mean. When the sample can tell (at least MIN_PRINTED printed
    values, MIN_SAMPLE kept losses, kept at least as densely as the values were printed, and
    the printed values shifted by a few per cent match by chance at most CHANCE_SHARE), at
    least MATCHED_SHARE of them matched is consistent and more than UNMATCHED_SHARE unmatched
    is not. Otherwise consistent when INSIDE_SHARE of the printed values lie within [min, max]
    widened by `tolerance` x its span + 5 %."""
    rows = [e for e in stepped if isinstance(e, (list, tuple)) and len(e) >= 6
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in e[1:6]) and e[1] > 0]
    vals = [v for v in printed if math.isfinite(v)]
    if not rows or not vals:
        return None
    lo, hi = min(e[3] for e in rows), max(e[4] for e in rows)
    n = sum(int(e[1]) for e in rows)
    mean = sum(e[2] * e[1] for e in rows) / n
    med = statistics.median(vals)
    factors = [1.0, 2.0, 0.5, 784.0, 1 / 784.0]
    if batch_size:
        factors += [float(batch_size), 1 / batch_size, 784.0 * batch_size, 1 / (784.0 * batch_size)]
    f = 1.0
    if med and mean and (med > 0) == (mean > 0):
        f = min(factors, key=lambda k: (abs(math.log(abs(med) / k / abs(mean))), k != 1.0))
    scaled = [v / f for v in vals]
    slack = tolerance * (hi - lo) + 0.05 * max(abs(lo), abs(hi)) + 1e-9
    inside = sum(lo - slack <= v <= hi + slack for v in scaled) / len(scaled)
    consistent = inside >= INSIDE_SHARE
    matched = _matched(vals, rows, sample, f, n)
    if matched is not None:
        k, f = matched
        if k >= MATCHED_SHARE * len(vals):
            consistent = True
        elif len(vals) - k > UNMATCHED_SHARE * len(vals):
            consistent = False
    scale = "" if f == 1.0 else f" (compared as {_factor(f, batch_size)}: the scale closest to the stepped losses)"
    words = (f"{len(vals)} printed values, median {med:.4g}{scale}; the optimizer stepped on {n} losses "
             f"from {lo:.4g} to {hi:.4g}, mean {mean:.4g}; {100 * inside:.0f} % of the printed values lie in that range")
    if matched is not None:
        words += (f"; {matched[0]} of them equal a loss it stepped on, a mean of those over a pass or part "
                  f"of one (at the printed precision)")
    return consistent, words


MIN_PRINTED = 4
"""Printed values needed before a series is judged by which of them match stepped losses."""
MIN_SAMPLE = 8
"""Stepped losses the probe must have kept for that."""
MATCHED_SHARE = 0.5
"""Share (0..1) of printed values matching stepped losses that makes a series consistent."""
UNMATCHED_SHARE = 0.6
"""Share (0..1) of printed values matching no stepped loss over which a series is not."""
MEAN_TOLERANCE = 0.005
"""Relative difference allowed between a printed value and a pass's mean (a mean weighted by
batch sizes, or divided by the dataset's size, differs a little from the mean per step)."""
CHANCE_SHARE = 0.2
"""Share (0..1) of printed values, shifted by a few per cent, allowed to match stepped losses by
chance for the matching to count (else the sample cannot tell, and the range decides)."""
_SHIFTS = (-0.031, -0.017, 0.013, 0.027)
_WINDOWS = (5, 10, 16, 20, 25, 32, 50, 64, 100, 128, 200, 250, 256, 500, 512, 1000)
"""The usual print intervals (steps)."""


def _half_unit(v: float) -> float:
    """Half a unit in the last printed digit of `v` as parsed (0.8312 -> 0.00005)."""
    text = repr(float(v)).lower()
    mant, _, exp = text.partition("e")
    digits = len(mant.partition(".")[2].rstrip("0")) if "." in mant else 0
    return 0.5 * 10.0 ** (int(exp or 0) - digits)


def _matched(vals: Sequence[float], rows: Sequence[Sequence[Any]], sample: Mapping[str, Any] | None,
             f: float, n: int) -> tuple[int, float] | None:
    """(printed values that match a stepped loss, the reduction that matched most: 1 or `f`),
    or None when the sample cannot tell (see compare_stepped)."""
    if not isinstance(sample, Mapping):
        return None
    kept = [r for r in sample.get("values") or [] if isinstance(r, (list, tuple)) and len(r) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in r[1:4])]
    every = sample.get("every")
    if len(vals) < MIN_PRINTED or len(kept) < MIN_SAMPLE or not isinstance(every, int) \
            or every > n / len(vals):
        return None
    # print intervals near the spacing of the printed values: a value printed at i % 50 == 0 or
    # (i + 1) % 50 == 0 is step i's loss, or a mean since the pass began or over the last 50 steps
    spacing = n / len(vals)
    lengths = sorted({w for w in _WINDOWS if spacing / 1.5 <= w <= spacing * 1.5}
                     | {w for w in (round(spacing), 5 * round(spacing / 5), 10 * round(spacing / 10))
                        if 2 <= w <= _WINDOWS[-1]})
    by_step = {(r[0], int(r[1])): float(r[3]) for r in kept}
    exact = [float(e[5]) for e in rows]  # each pass's last loss (printed after its loop)
    for r in kept:
        i = int(r[1])
        if not lengths or any(i % w in (0, w - 1) for w in lengths):
            exact += [float(r[2]), float(r[3]) / (i + 1)]
        for w in lengths:
            before = by_step.get((r[0], i - w))
            if before is not None:
                exact.append((float(r[3]) - before) / w)
    exact.sort()
    means = sorted(float(e[2]) for e in rows)
    def count(k: float, shift: float = 0.0) -> int:
        found = 0
        for v in vals:
            x, tol = v / k * (1 + shift), _half_unit(v) / abs(k) + 1e-6 * abs(v / k)
            # shifted values are tried on the exact candidates only: a running mean lies near
            # its pass's mean by nature, not by chance
            found += _near(exact, x, tol) or (not shift and _near(means, x, tol + MEAN_TOLERANCE * abs(x)))
        return found

    best: tuple[int, float] | None = None
    for k in dict.fromkeys((1.0, f)):
        # values shifted off the printed ones match only by chance: when they often do, the
        # stepped losses are too dense for this precision to tell anything at this reduction
        chance = sum(count(k, d) for d in _SHIFTS) / (len(_SHIFTS) * len(vals))
        if chance > CHANCE_SHARE:
            continue
        c = count(k)
        if best is None or c > best[0]:
            best = (c, k)
    return best


def _near(ordered: Sequence[float], x: float, tol: float) -> bool:
    """Whether a value of the sorted `ordered` lies within `tol` of x."""
    i = bisect.bisect_left(ordered, x - tol)
    return i < len(ordered) and ordered[i] <= x + tol


def _factor(f: float, batch_size: int | None) -> str:
    names = {2.0: "twice each stepped loss", 0.5: "half of each stepped loss", 784.0: "a per-pixel sum",
             1 / 784.0: "a per-pixel mean"}
    if batch_size:
        names.update({float(batch_size): "a sum over the batch", 1 / batch_size: "a per-image value of a batch sum",
                      784.0 * batch_size: "a sum over batch and pixels",
                      1 / (784.0 * batch_size): "a per-pixel value of a batch sum"})
    return names.get(f, f"x{f:g}")


@P.takes(P.LoggedLosses)
def logged_losses(ctx: CheckContext, params: P.LoggedLosses) -> Outcome:
    """The losses of a GAN (D and G) or a VAE (loss; recon and KL when asked) logged as curves,
    and the printed ones consistent with what their optimizer stepped on."""
    model, terms, min_points = params.model, params.require_terms, params.min_points
    tolerance, credit = params.tolerance, params.not_stepped_credit
    wanted = list(_WANTED[model]) + (list(_TERMS) if model == "vae" and terms else [])
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found, so no logged losses either.")
    best: tuple[int, Mapping, list] | None = None
    for ev in ctx.evidence:
        curves = _curves(ev)
        found = [(label, _find(curves, names, min_points), who) for label, names, who in wanted]
        score = sum(f is not None for _, f, _ in found)
        if best is None or score > best[0]:
            best = (score, ev, found)
    assert best is not None
    score, ev, found = best
    missing = [label for label, f, _ in found if f is None]
    shown = [f"{label} ({len(f[1])} values " + (f"plotted, x {f[1][0][0]:.3g} to {f[1][-1][0]:.3g})" if "plotted" in f[0]
                                                 else f"printed, epochs {f[1][0][0]:.3g} to {f[1][-1][0]:.3g})")
             for label, f, _ in found if f is not None]
    if not shown:
        return Outcome("fail", 0.0, f"no {' or '.join(label for label, _, _ in wanted)} curve was found in what "
                                    f"the notebook printed or plotted: print or plot them each epoch.",
                       evidence=(where(ev),))
    problems, notes = [], []
    for label, f, who in found:
        if f is None or who is None or "plotted" in f[0]:
            continue
        opt, how = _optimizer(ev, who)
        result = compare_stepped([v for _, v in f[1]], opt.get("stepped") or [] if opt else [],
                                 tolerance=tolerance, batch_size=_batch_size(ev),
                                 sample=opt.get("stepped_sample") if opt else None)
        if result is None:
            notes.append(f"{label} not compared with the optimizer's steps ({how if opt is None else how + ': no stepped values recorded'})")
        elif not result[0]:
            problems.append(f"the printed {label} is not what {how} stepped on: {result[1]}")
    text = "found " + "; ".join(shown)
    if missing:
        return Outcome("partial", score / len(wanted), f"{text}; missing: {', '.join(missing)}."
                       + (" " + " ".join(p[0].upper() + p[1:] + "." for p in problems) if problems else ""),
                       evidence=(where(ev),), flags=(NOT_STEPPED,) if problems else ())
    if problems:
        return Outcome("partial", credit,
                       f"{text}. But " + "; ".join(problems) + ": a printed loss should be the one back-propagated.",
                       evidence=(where(ev),), flags=(NOT_STEPPED,))
    return Outcome("pass", 1.0, f"{text}." + (" (" + "; ".join(notes) + ".)" if notes else ""),
                   evidence=(where(ev),))


# ---------------------------------------------------------------- figures by origin

_PRESENTED = {
    "samples": re.compile(r"sampl|generat|fake|synth|random|noise", re.IGNORECASE),
    "reconstructions": re.compile(r"recon|original|input", re.IGNORECASE),
    "class-grid": re.compile(r"class|digit|label|condition|per[- ]?class|0-9", re.IGNORECASE),
    "latent": re.compile(r"latent|manifold|embedding|z[- ]space|scatter", re.IGNORECASE),
}
_WHAT = {"samples": "samples (a generator or decoder applied to noise)",
         "reconstructions": "reconstructions (a model applied to test images)",
         "class-grid": "a per-class grid (a conditional generator given the labels in order)",
         "latent": "the latent space (an encoder's means, or a decoder over a lattice of z)",
         "data": "data images", "unknown": "images of unknown origin"}


def _caption(fig: Mapping[str, Any]) -> str:
    return " ".join(str(fig.get(k) or "") for k in ("title", "saved_as", "suptitle"))


def _name(ev: Mapping[str, Any], fig: Mapping[str, Any]) -> str:
    label = fig.get("title") or fig.get("saved_as") or fig.get("png") or "a figure"
    return f"'{label}' ({where(ev, fig.get('cell'))})"


SURE_SHARE = 0.8
"""The share of a figure's images that must match its origin for a mislabel to be a finding."""


def _sure(origin: Mapping[str, Any]) -> bool:
    """Whether most of a figure's images matched its origin (no counts: an older record, as before)."""
    hits, images = origin.get("hits"), origin.get("images")
    if not isinstance(hits, int) or not isinstance(images, int) or images <= 0:
        return True
    return hits >= SURE_SHARE * images


@P.takes(P.FigureOrigin)
def figure_origin(ctx: CheckContext, params: P.FigureOrigin) -> Outcome:
    """A figure whose images came from where `want` says (samples, reconstructions, a class grid,
    the latent space), by the probe's content digests; a figure presented as `want` that shows
    something else fails with why; nothing the grader could place goes to a TA."""
    want = params.want
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found, so no figure either.")
    figs = [(ev, f) for ev in ctx.evidence for f in ev.get("figures") or [] if isinstance(f, Mapping)]
    placed = [(ev, f, f["origin"]) for ev, f in figs if isinstance(f.get("origin"), Mapping)]
    hits = [(ev, f, o) for ev, f, o in placed if o.get("role") == want]
    if hits:
        ev, f, o = hits[-1]
        return Outcome("pass", 1.0, f"{_name(ev, f)} shows {_WHAT[want]}: {o.get('why')}.",
                       evidence=tuple(where(e, g.get("cell")) for e, g, _ in hits[-3:]))
    unknown = [(ev, f) for ev, f, o in placed if o.get("role") == "unknown"]
    unplaced = [(ev, f) for ev, f in figs if "origin" not in f and f.get("kind") in ("image", "image-grid")]
    presented = [(ev, f, o) for ev, f, o in placed if o.get("role") not in (want, "unknown")
                 and _PRESENTED[want].search(_caption(f))]
    # a figure presented as `want` fails only when most of its images are surely of another origin;
    # a minority matched within the tolerance (blurry decodes one z at a time look like blurry
    # reconstructions) is a figure the grader could not place
    wrong = [(ev, f, o) for ev, f, o in presented if _sure(o)]
    unknown += [(ev, f) for ev, f, o in presented if not _sure(o)]
    mislabel = "; ".join(f"{_name(ev, f)} is presented as {want} but shows {_WHAT.get(o.get('role'), o.get('role'))}"
                         f" ({o.get('why')})" for ev, f, o in wrong[:3])
    if unknown or unplaced:
        look = (unknown + unplaced)[:6]
        return Outcome("manual", 0.0,
                       f"the grader could not tell where the images of {len(unknown) + len(unplaced)} figure(s) came "
                       f"from ({', '.join(_name(ev, f) for ev, f in look)}): a TA checks whether one shows "
                       f"{_WHAT[want]}." + (f" Note: {mislabel}." if mislabel else ""),
                       evidence=tuple(where(ev, f.get("cell")) for ev, f in look),
                       flags=(MISLABELLED,) if wrong else ())
    if wrong:
        kind = f"{wrong[0][2].get('role')} shown as {want}"
        return Outcome("fail", 0.0, f"{kind}: {mislabel}. A {want} figure must show {_WHAT[want]}.",
                       evidence=tuple(where(ev, f.get("cell")) for ev, f, _ in wrong[:3]), flags=(MISLABELLED,),
                       own_words=True)
    if placed:
        seen = "; ".join(f"{_name(ev, f)}: {_WHAT.get(o.get('role'), o.get('role'))}" for ev, f, o in placed[-4:])
        return Outcome("fail", 0.0, f"no figure shows {_WHAT[want]}; the image figures show: {seen}.",
                       evidence=tuple(where(ev, f.get("cell")) for ev, f, _ in placed[-4:]), own_words=True)
    observed = any((ev.get("probe") or {}).get("started") for ev in ctx.evidence) and \
        any(ev.get("generative") is not None for ev in ctx.evidence)
    if observed:
        return Outcome("fail", 0.0, f"no figure of {_WHAT[want]} was drawn or saved.",
                       evidence=tuple(where(ev) for ev in ctx.evidence[:1]))
    return Outcome("manual", 0.0, f"the grader did not see where the notebook's images came from (saved outputs, "
                                  f"or a run without the generative probe): a TA checks for {_WHAT[want]}.",
                   evidence=tuple(where(ev) for ev in ctx.evidence[:1]))
