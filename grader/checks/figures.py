"""Checks on what was plotted and what was trained: weight histograms, learning-rate studies."""

from __future__ import annotations

from typing import Mapping

from grader.checks.base import CheckContext, Outcome, where


def _matches(subject: str, layer: str, kind: str) -> bool:
    """`net.conv1.weight` and `conv1.weight` both show layer `conv1`'s weight."""
    want = f"{layer}.{kind}"
    return subject == want or subject.endswith("." + want)


def weight_histograms(ctx: CheckContext, params: Mapping) -> Outcome:
    """A distribution plot of each required layer's weights (and biases when asked)."""
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found, so no weight histograms either.")
    layers = list(params.get("layers") or [])
    kinds = ["weight", "bias"] if params.get("require_bias") else ["weight"]
    hists = [(ev, f) for ev in ctx.evidence for f in ev.get("figures") or [] if f.get("kind") == "histogram"]
    subjects = [(ev, f, s) for ev, f in hists for s in f.get("subjects") or []]
    if not layers:  # "each layer": whatever layers the trained model has
        layers = sorted({s.rsplit(".", 2)[-2] for _, _, s in subjects if "." in s})
    need = [(l, k) for l in layers for k in kinds]
    shown = {(l, k): (ev, f) for ev, f, s in subjects for l, k in need if _matches(s, l, k)}
    missing = [f"{l}.{k}" for l, k in need if (l, k) not in shown]
    pointers = tuple(sorted({where(ev, f.get("cell")) for ev, f in shown.values()}))
    unattributed = sum(1 for _, f in hists if not f.get("subjects"))
    note = (f" {unattributed} histogram(s) show data that is not any layer's parameters (e.g. input pixels)."
            if unattributed else "")
    if not need:
        return Outcome("fail", 0.0, "no histogram of any layer's weights was found: plot "
                                    "`param.detach().cpu().numpy().flatten()` for each layer with plt.hist."
                       + note)
    if not missing:
        return Outcome("pass", 1.0, f"weight distributions shown for {', '.join(sorted({l for l, _ in need}))}.",
                       pointers)
    got = len(need) - len(missing)
    if got == 0:
        return Outcome("fail", 0.0, f"no histogram of the layers' weights was found (needed: "
                                    f"{', '.join(f'{l}.{k}' for l, k in need)})." + note)
    return Outcome("partial", got / len(need), f"weight distributions shown for {got} of {len(need)}; "
                                               f"missing {', '.join(missing)}." + note, pointers)


def lr_study(ctx: CheckContext, params: Mapping) -> Outcome:
    """Several learning rates and/or decay schedules actually run and compared."""
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found.")
    min_rates = int(params.get("min_rates", 2))
    min_schedules = int(params.get("min_schedules", 1))
    rates = sorted({float(o["lr"]) for ev in ctx.evidence for o in ev.get("optimizers") or []
                    if o.get("lr") is not None and (o.get("steps") or 0) > 0})
    stepped = sorted({s.get("type", "?") for ev in ctx.evidence for s in ev.get("schedulers") or []
                      if (s.get("steps") or 0) > 0})
    idle = sorted({s.get("type", "?") for ev in ctx.evidence for s in ev.get("schedulers") or []
                   if not (s.get("steps") or 0)} - set(stepped))
    compared = [where(ev, f.get("cell")) for ev in ctx.evidence for f in ev.get("figures") or []
                if f.get("kind") == "line"]
    tables = any(len((ev.get("metrics") or {}).get("curves") or {}) > 1 for ev in ctx.evidence)
    found = [f"{len(rates)} initial learning rate(s) ({', '.join(f'{r:g}' for r in rates)})" if rates
             else "no optimizer that took a step"]
    if stepped:
        found.append(f"decay schedule(s) stepped: {', '.join(stepped)}")
    idle_note = (f" The {', '.join(idle)} scheduler was created but never stepped, so its decay never "
                 f"happened: call scheduler.step() once per epoch." if idle else "")
    score = 0.0
    if len(rates) >= min_rates:
        score += 0.5
    if len(stepped) >= min_schedules:
        score += 0.25
    if compared or tables:
        score += 0.25
    compare_note = "" if (compared or tables) else " No plot or table compares the runs."
    message = "; ".join(found) + "." + idle_note + compare_note
    if score >= 1.0:
        return Outcome("pass", 1.0, message, tuple(compared[:3]))
    return Outcome("partial" if score > 0 else "fail", score, message, tuple(compared[:3]))
