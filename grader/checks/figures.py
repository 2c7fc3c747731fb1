"""Checks on what was plotted and what was trained: weight histograms, learning-rate studies."""

from __future__ import annotations

from typing import Mapping

from grader.checks.base import CheckContext, Outcome, where


def _matches(subject: str, layer: str, kind: str) -> bool:
    """`net.conv1.weight` and `conv1.weight` both show layer `conv1`'s weight."""
    want = f"{layer}.{kind}"
    return subject == want or subject.endswith("." + want)


def weight_histograms(ctx: CheckContext, params: Mapping) -> Outcome:
    """A distribution plot of each required layer's weights (and biases when asked).

    Figures come from the probe (execute mode) or, in saved mode, from the stored images
    attributed by reading the notebook's code (`"attributed": "static"`) and pixels. A
    figure the grader could not read for sure (`"uncertain"`, including a stored image that is
    corrupt, `"unreadable"`) never counts as missing: when layers are missing and such figures
    exist, the item goes to a TA with those figures.
    """
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found, so no weight histograms either.")
    layers = list(params.get("layers") or [])
    kinds = ["weight", "bias"] if params.get("require_bias") else ["weight"]
    hists = [(ev, f) for ev in ctx.evidence for f in ev.get("figures") or [] if f.get("kind") == "histogram"]
    subjects = [(ev, f, s) for ev, f in hists for s in f.get("subjects") or []]
    unsure = [(ev, f) for ev in ctx.evidence for f in ev.get("figures") or [] if f.get("uncertain")]
    if not layers:  # "each layer": whatever layers the trained model has
        layers = sorted({s.rsplit(".", 2)[-2] for _, _, s in subjects if "." in s})
    need = [(l, k) for l in layers for k in kinds]
    shown = {(l, k): (ev, f) for ev, f, s in subjects for l, k in need if _matches(s, l, k)}
    missing = [f"{l}.{k}" for l, k in need if (l, k) not in shown]
    pointers = tuple(sorted({where(ev, f.get("cell")) for ev, f in shown.values()}))
    unattributed = sum(1 for _, f in hists if not f.get("subjects") and not f.get("uncertain"))
    note = (f" {unattributed} histogram(s) show data that is not any layer's parameters (e.g. input pixels)."
            if unattributed else "")
    if any(f.get("attributed") == "static" for _, f in shown.values()):
        note += " (Saved mode: the layers were read from the notebook's code, not observed running.)"
    if (missing or not need) and unsure:
        looked = tuple(sorted({where(ev, f.get("cell")) for ev, f in unsure}))
        found = (f"weight distributions were found for {len(need) - len(missing)} of {len(need)} "
                 f"({', '.join(missing)} not found)" if need else "no histogram of a layer's weights was found")
        broken = [f for _, f in unsure if f.get("unreadable")]
        why = ([f"{len(broken)} stored image(s) cannot be read ({broken[0]['unreadable']})"] if broken else []) + \
            ([(f"{len(unsure) - len(broken)} figure(s) could not be read for sure (e.g. drawn by code the "
               f"grader cannot follow)")] if len(unsure) > len(broken) else [])
        return Outcome("manual", 0.0, f"{found}, and {' and '.join(why)}: a TA will look at "
                                      f"{', '.join(looked[:5])}." + note, looked[:5] + pointers)
    if not need:
        return Outcome("fail", 0.0, "no histogram of any layer's weights was found: plot "
                                    "`param.detach().cpu().numpy().flatten()` for each layer with plt.hist."
                       + note)
    if not missing:
        return Outcome("pass", 1.0, f"weight distributions shown for {', '.join(sorted({l for l, _ in need}))}."
                       + note, pointers)
    got = len(need) - len(missing)
    if got == 0:
        return Outcome("fail", 0.0, f"no histogram of the layers' weights was found (needed: "
                                    f"{', '.join(f'{l}.{k}' for l, k in need)})." + note)
    return Outcome("partial", got / len(need), f"weight distributions shown for {got} of {len(need)}; "
                                               f"missing {', '.join(missing)}." + note, pointers)


def lr_study(ctx: CheckContext, params: Mapping) -> Outcome:
    """Several learning rates and/or decay schedules actually run and compared.

    Executed, the optimizers that took a step say which rates ran. Saved (nothing observed),
    the rates the outputs print stand for them (`lr_settings`, see `parsers.lrs`); when that
    falls short but the code, or a figure the grader could not read, suggests a study, a TA
    decides instead of a fail.
    """
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found.")
    min_runs = int(params.get("min_runs", 2))
    optimizers = [o for ev in ctx.evidence for o in ev.get("optimizers") or [] if (o.get("steps") or 0) > 0]
    rates = sorted({float(o["lr"]) for o in optimizers if o.get("lr") is not None})
    saved = [ev for ev in ctx.evidence if ev.get("mode") == "saved" and isinstance(ev.get("lr_settings"), list)]
    if saved and not optimizers:
        return _saved_lr_study(ctx, params, saved, min_runs)
    scheds = [s for ev in ctx.evidence for s in ev.get("schedulers") or []]
    stepped = sorted({s.get("type", "?") for s in scheds if (s.get("steps") or 0) > 0})
    idle = sorted({s.get("type", "?") for s in scheds if not (s.get("steps") or 0)} - set(stepped))
    # A setting is an initial rate or a decay schedule that really ran; either counts (the
    # handout asks how the initial rate OR the decay method was chosen).
    runs = len(rates) + len(stepped)
    compared = [where(ev, f.get("cell")) for ev in ctx.evidence for f in ev.get("figures") or []
                if f.get("kind") == "line"]
    needs = [("runs", runs >= min_runs)]
    if params.get("require_scheduler", False):
        needs.append(("scheduler", bool(stepped)))
    if params.get("require_plot", True):
        needs.append(("plot", bool(compared)))
    met = sum(ok for _, ok in needs)
    found = [f"{len(rates)} initial learning rate(s) trained ({', '.join(f'{r:g}' for r in rates)})" if rates
             else "no optimizer that took a step"]
    if stepped:
        found.append(f"decay schedule(s) stepped: {', '.join(stepped)}")
    notes = []
    if idle:
        notes.append(f"The {', '.join(idle)} scheduler was created but never stepped, so its decay never "
                     f"happened: call scheduler.step() once per epoch.")
    if runs < min_runs:
        notes.append(f"Train at least {min_runs} settings (initial rates or schedules) to compare.")
    if params.get("require_plot", True) and not compared:
        notes.append("No line chart compares the runs: plot accuracy or loss per epoch for each setting.")
    message = "; ".join(found) + ". " + " ".join(notes)
    if met == len(needs) and not idle:
        return Outcome("pass", 1.0, message.strip(), tuple(compared[:3]))
    fraction = met / len(needs) * (0.75 if idle and met == len(needs) else 1.0)
    return Outcome("partial" if fraction > 0 else "fail", round(fraction, 4), message.strip(), tuple(compared[:3]))


def _in_section(ev: Mapping, records: list) -> list[Mapping]:
    """The per-cell records inside the section(s) `ev` is a view of (all of them for a whole notebook)."""
    ok = [r for r in records if isinstance(r, Mapping)]
    section = ev.get("section") if isinstance(ev.get("section"), Mapping) else None
    if section is None:
        return ok
    ids = set(section.get("ids") or [])
    cells = {i for s in ev.get("sections") or [] if isinstance(s, Mapping) and s.get("id") in ids
             for i in s.get("cells") or []}
    return [r for r in ok if not isinstance(r.get("index"), int) or r["index"] in cells]


def _saved_lr_study(ctx: CheckContext, params: Mapping, saved: list[Mapping], min_runs: int) -> Outcome:
    """lr_study in saved mode: the printed learning rates and the stored line charts."""
    cells = [c for ev in saved for c in _in_section(ev, ev["lr_settings"])]
    printed = sorted({float(v) for c in cells for v in c.get("printed") or []})
    in_code = sorted({float(v) for c in cells for v in c.get("code") or []})
    charts = [where(ev, f.get("cell")) for ev in ctx.evidence for f in ev.get("figures") or []
              if f.get("kind") == "line"]
    unsure = [where(ev, f.get("cell")) for ev in ctx.evidence for f in ev.get("figures") or []
              if f.get("uncertain") and f.get("kind") != "line"]
    rates = ", ".join(f"{r:g}" for r in printed)
    found = (f"{len(printed)} learning rate(s) printed by the runs ({rates})" if printed
             else "no learning rate printed in the outputs")
    chart = f"{len(charts)} line chart(s)" if charts else "no line chart"
    note = " (Saved mode: read from the stored outputs, not observed running.)"
    plot_ok = bool(charts) or not params.get("require_plot", True)
    if len(printed) >= min_runs and plot_ok and not params.get("require_scheduler", False):
        return Outcome("pass", 1.0, f"{found}, compared in {chart}." + note, tuple(charts[:3]))
    if in_code or unsure or printed:
        code = (f"the code sets learning rate(s) {', '.join(f'{r:g}' for r in in_code)}" if in_code
                else "the code sets no learning rate the grader can read")
        looked = tuple(dict.fromkeys(charts + unsure))[:3]
        return Outcome("manual", 0.0, f"{found}; {code}; {chart}"
                       + (f" and {len(unsure)} figure(s) the grader could not read" if unsure else "")
                       + ". Nothing was run in saved mode, so a TA will check which settings were trained"
                       + (" and whether the schedule stepped" if params.get("require_scheduler", False) else "")
                       + (f": see {', '.join(looked)}." if looked else "."), looked)
    return Outcome("fail", 0.0, "no learning-rate experiment was found: no learning rate is printed in the "
                                "outputs or set in the code, and no line chart compares runs." + note)
