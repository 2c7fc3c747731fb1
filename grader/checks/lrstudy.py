"""The learning-rate study check: which runs the host confirms, which settings they make."""

from __future__ import annotations

from typing import Mapping

from grader.checks import params as P
from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, where
from grader.checks.runconfirm import _continued, _host_run_doubt, _run_unconfirmed
from grader.corroborate import figure_captured


COMPARABLE_STEPS = 0.25
"""Fraction (0..1) of the optimizer steps of the longest confirmed run from which a run counts
as a setting of the study: settings are compared after a comparable training budget, so a run
of a few batches (a copy of a trained model fine-tuned briefly at another rate) is not one.
Honest studies train every setting for the same epochs (ratio 1)."""


def _comparable(confirmed: list[tuple[Mapping, Mapping]]) -> tuple[list, list]:
    """(the confirmed runs that trained for a comparable budget, (ev, o, why) of the others):
    a run with fewer than COMPARABLE_STEPS of the longest confirmed run's optimizer steps (the
    probe's step counts: hints, but an honest loop's) is not a setting; the caller sends it to
    a TA when it would change the verdict."""
    longest = max((int(o.get("steps") or 0) for _, o in confirmed), default=0)
    keep, short = [], []
    for ev, o in confirmed:
        steps = int(o.get("steps") or 0)
        if steps < COMPARABLE_STEPS * longest:
            short.append((ev, o, f"it took {steps} optimizer step(s), under a quarter of the {longest} of the longest "
                                 f"run, so it is not a comparable setting (a model fine-tuned briefly, e.g. a copy of "
                                 f"a trained one?)"))
        else:
            keep.append((ev, o))
    return keep, short


def _settings(optimizers: list[Mapping], scheds: list[Mapping]) -> set[tuple]:
    """The distinct settings of confirmed runs `optimizers`: (initial rate, the decay schedules
    that stepped in that run)."""
    out = set()
    for o in optimizers:
        mine = tuple(sorted({str(s.get("type", "?")) for s in scheds
                             if (s.get("steps") or 0) > 0 and s.get("optimizer_ref") == o.get("ref")}))
        lr = float(o["lr"]) if isinstance(o.get("lr"), (int, float)) else o.get("ref")
        out.add((lr, mine))
    return out


def _reasons(doubts: list) -> str:
    """The distinct reasons of runs not counted, the first two, each with the rate it is about."""
    seen: dict[str, str] = {}
    for _, o, why in doubts:
        lr = f"{float(o['lr']):g}" if isinstance(o.get("lr"), (int, float)) else "?"
        seen.setdefault(why.split(" (")[0] if "step(s)" in why else why, f"lr {lr}: {why}")
    return "; ".join(list(seen.values())[:2])


@P.takes(P.LrStudy)
def lr_study(ctx: CheckContext, params: P.LrStudy) -> Outcome:
    """Several learning rates and/or decay schedules actually run and compared: LAB 1-3's
    study, the `lr_or_schedule` comparison of grader.checks.runcompare with `min_runs`
    settings, no factor to agree on, and LAB 1-3's own same-model rule (`RUN_SAME`
    agreement of predictions); `study` says how runs count."""
    return study(ctx, min_runs=params.min_runs, require_scheduler=params.require_scheduler,
                 require_plot=params.require_plot)


def study(ctx: CheckContext, *, min_runs: int, require_scheduler: bool, require_plot: bool) -> Outcome:
    """Several learning rates and/or decay schedules actually run and compared (`ctx.evidence`,
    the part's notebooks): at least `min_runs` settings, a stepped schedule when
    `require_scheduler`, a captured line chart when `require_plot`.

    Executed, the optimizers that took a step say which rates ran, but a run counts only when
    the host corroborates it: its records hold together (`_run_unconfirmed`: hints the student's
    code could write) and the host evaluated its model itself (`_host_run_doubt`: the teardown
    captured the model each optimizer trained, the evaluator predicted the test and hidden
    images with it, and it is above chance and unlike the other runs' models). A run at chance
    (diverged, or never trained), a copy of another run's model, or a run of a few steps beside
    a long one (`_comparable`) does not count; like a run the host could not capture, it goes
    to a TA when it would change the verdict, never a fail. A run whose optimizer started from
    the weights another run ended with continues that run (`_continued`): named, not counted.
    A setting is (initial rate, schedules stepped) of a confirmed run (`_settings`): min_runs
    of them are needed, so a schedule counts only beside another confirmed run. The comparing chart counts only when its image is in the output the host captured.
    Saved (nothing observed), the rates the outputs print stand for them (`lr_settings`, see
    `parsers.lrs`); when that falls short but the code, or a figure the grader could not read,
    suggests a study, a TA decides instead of a fail.
    """
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found.")
    ran = [(ev, o) for ev in ctx.evidence for o in ev.get("optimizers") or [] if (o.get("steps") or 0) > 0]
    saved = [ev for ev in ctx.evidence if ev.get("mode") == "saved" and isinstance(ev.get("lr_settings"), list)]
    if saved and not ran:
        return _saved_lr_study(ctx, saved, min_runs, require_scheduler=require_scheduler,
                               require_plot=require_plot)
    doubts, optimizers = [], []
    counted: dict[int, Mapping] = {}
    for ev, o in ran:
        why = _run_unconfirmed(ev, o) or _host_run_doubt(ev, o, counted)
        if why:
            doubts.append((ev, o, why))
            continue
        optimizers.append((ev, o))
        counted[o.get("ref")] = {**next(r for r in ev["verified_runs"] if r.get("optimizer") == o.get("ref")),
                                 "lr": o.get("lr")}
    optimizers, derived = _continued(optimizers, ran)
    optimizers, short = _comparable(optimizers)
    doubts += derived + short
    scheds = [s for ev in ctx.evidence for s in ev.get("schedulers") or []]
    settings = _settings([o for _, o in optimizers], scheds)
    confirmed = {o.get("ref") for _, o in optimizers}
    rates = sorted({float(o["lr"]) for _, o in optimizers if isinstance(o.get("lr"), (int, float))})
    claimed_rates = sorted({float(o["lr"]) for _, o, _ in doubts if isinstance(o.get("lr"), (int, float))} - set(rates))
    stepped = sorted({s.get("type", "?") for s in scheds if (s.get("steps") or 0) > 0
                      and s.get("optimizer_ref") in confirmed})
    claimed_scheds = sorted({s.get("type", "?") for s in scheds if (s.get("steps") or 0) > 0} - set(stepped))
    idle = sorted({s.get("type", "?") for s in scheds if not (s.get("steps") or 0)} - set(stepped) - set(claimed_scheds))
    # A setting is what one host-confirmed run trained with: its initial rate and the decay
    # schedule that stepped in it (the handout asks how the initial rate OR the decay method
    # was chosen). Two confirmed runs at one rate, one with StepLR and one without, are two
    # settings; one run with StepLR alone is one: a schedule is compared only with another run.
    runs = len(settings)
    lines = [(ev, f) for ev in ctx.evidence for f in ev.get("figures") or [] if f.get("kind") == "line"]
    compared = [where(ev, f.get("cell")) for ev, f in lines if figure_captured(f)]
    unseen = [where(ev, f.get("cell")) for ev, f in lines if not figure_captured(f)]
    needs = [("runs", runs >= min_runs)]
    if require_scheduler:
        needs.append(("scheduler", bool(stepped)))
    if require_plot:
        needs.append(("plot", bool(compared)))
    met = sum(ok for _, ok in needs)
    found = [f"{len(rates)} initial learning rate(s) trained ({', '.join(f'{r:g}' for r in rates)})" if rates
             else "no training run the grader could confirm" if doubts else "no optimizer that took a step"]
    if stepped:
        found.append(f"decay schedule(s) stepped: {', '.join(stepped)}")
    if optimizers:
        found.append(f"{runs} setting(s) compared in {len(optimizers)} run(s) the grader confirmed")
    # What is only claimed decides nothing; it goes to a TA when it would change the verdict.
    # a run that continued another (`derived`) is one run on the probe's own evidence against
    # the student's interest: named below, never a TA's question
    open_doubts = [o for _, o, _ in doubts if not any(o is d for _, d, _ in derived)]
    would = {"runs": len(_settings([o for _, o in optimizers] + open_doubts, scheds)) >= min_runs,
             "scheduler": bool(stepped or claimed_scheds), "plot": bool(compared or unseen)}
    if met < len(needs) and all(ok or would[name] for name, ok in needs) and (doubts or unseen):
        what = []
        if doubts:
            ev, o, _ = doubts[0]
            what.append(f"the grader could not confirm from the outputs it captured and the models it evaluated "
                        f"itself {len(doubts)} optimizer run(s) "
                        f"({', '.join(f'{r:g}' for r in claimed_rates) or 'rates as above'}"
                        f"{'; schedules ' + ', '.join(claimed_scheds) if claimed_scheds else ''}): {_reasons(doubts)} "
                        f"({where(ev, o.get('cell'))}); this is not a finding against your work")
        if unseen and not compared:
            what.append(f"a line chart is recorded in {', '.join(unseen[:3])} but the output the grader captured "
                        f"shows no image there")
        looked = tuple(dict.fromkeys([where(ev, o.get("cell")) for ev, o, _ in doubts] + unseen + compared))[:5]
        return Outcome("manual", 0.0, "; ".join(found) + ". " + "; ".join(what) + ". A TA will check which settings "
                                      "were trained and compared.", looked, flags=(UNCONFIRMED,))
    notes = []
    if idle:
        notes.append(f"The {', '.join(idle)} scheduler was created but never stepped, so its decay never "
                     f"happened: call scheduler.step() once per epoch.")
    if runs < min_runs:
        notes.append(f"Train at least {min_runs} settings (initial rates, or one rate with and without a decay "
                     f"schedule), each in a run of its own, to compare.")
    if require_plot and not compared:
        notes.append("No line chart compares the runs: plot accuracy or loss per epoch for each setting.")
    if doubts:  # they did not decide the verdict; say why they were not counted
        lrs = ", ".join(f"{float(o['lr']):g}" for _, o, _ in doubts if isinstance(o.get("lr"), (int, float)))
        notes.append(f"Not counted: {len(doubts)} run(s){f' (lr {lrs})' if lrs else ''}, e.g. {_reasons(doubts)}.")
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


def _saved_lr_study(ctx: CheckContext, saved: list[Mapping], min_runs: int, *, require_scheduler: bool,
                    require_plot: bool) -> Outcome:
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
    plot_ok = bool(charts) or not require_plot
    if len(printed) >= min_runs and plot_ok and not require_scheduler:
        return Outcome("pass", 1.0, f"{found}, compared in {chart}." + note, tuple(charts[:3]))
    if in_code or unsure or printed:
        code = (f"the code sets learning rate(s) {', '.join(f'{r:g}' for r in in_code)}" if in_code
                else "the code sets no learning rate the grader can read")
        looked = tuple(dict.fromkeys(charts + unsure))[:3]
        return Outcome("manual", 0.0, f"{found}; {code}; {chart}"
                       + (f" and {len(unsure)} figure(s) the grader could not read" if unsure else "")
                       + ". Nothing was run in saved mode, so a TA will check which settings were trained"
                       + (" and whether the schedule stepped" if require_scheduler else "")
                       + (f": see {', '.join(looked)}." if looked else "."), looked)
    return Outcome("fail", 0.0, "no learning-rate experiment was found: no learning rate is printed in the "
                                "outputs or set in the code, and no line chart compares runs." + note)
