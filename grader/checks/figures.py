"""Checks on what was plotted and what was trained: weight histograms, learning-rate studies."""

from __future__ import annotations

import math
from typing import Mapping

from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, where
from grader.corroborate import figure_captured, find_parameter, histogram_disagrees, parameters_of


def _matches(subject: str, layer: str, kind: str) -> bool:
    """`net.conv1.weight` and `conv1.weight` both show layer `conv1`'s weight."""
    want = f"{layer}.{kind}"
    return subject == want or subject.endswith("." + want)


def _bars_unconfirmed(f: Mapping, index: int, subject: str) -> str | None:
    """Why the bars of record `f["hists"][index]` (of `subject`) are not confirmed by the image
    the host captured in its cell, or None when a panel of that image shows them
    (`figures[].host`, grader.corroborate.mark_run)."""
    host = f.get("host") or {}
    if not isinstance(host.get("matched"), list):  # evidence written before the bars were read
        return ("the grader's record of that run predates its comparison of the captured image's bars with the "
                "recorded data, so it cannot tell whether the image shows that data")
    if index in host["matched"]:
        return None
    if host.get("panels") is None:
        return ("the grader could not read the bars of the image it captured in that cell's output (too large, "
                "too many images, or not a PNG), so it cannot tell whether the image shows that data")
    if not host["panels"]:
        return ("the grader found no histogram panel it can read in the image it captured in that cell's output "
                "(it reads framed matplotlib/seaborn axes), so it cannot tell whether the image shows that data")
    return (f"the bars in the image the grader captured do not match the recorded data of {subject} (each recorded "
            f"histogram needs a panel of its own in that cell's image)")


def _uncorroborated(ev: Mapping, f: Mapping, subject: str) -> str | None:
    """Why the grader cannot confirm from what it checked itself that figure `f` of `ev` shows
    `subject`, or None when it can: the host captured an image in that cell, the recorded
    data is the captured model's parameter, and a panel of that image shows the recorded bars
    (grader.corroborate, grader.chartbars)."""
    if ev.get("mode") == "saved":
        # Nothing ran, so no probe record exists to forge: the host read the stored image and
        # the code itself (`"attributed": "static"`), which is what a TA grading saved
        # notebooks accepts; the message says so.
        return None if f.get("attributed") == "static" else "the saved notebook's code does not say what it shows"
    if not figure_captured(f):
        host = f.get("host") or {}
        if host.get("images") and host.get("histogram") is False:
            return "the image the grader captured in that cell's output is not a histogram"
        if host.get("images"):
            return ("the grader could not recognize a histogram in the image it captured in that cell's output "
                    "(only a PNG chart is read)")
        return "the notebook's output of that cell, as the grader captured it, shows no such image"
    params = parameters_of(ev.get("verified"))
    if params is None:
        reason = str((ev.get("verified") or {}).get("reason") or "").rstrip(".")
        return ("the trained model's parameters were not captured by the independent evaluation"
                + (f" ({reason})" if reason else "") + ", so the histogram's data could not be compared with them")
    why = "the record holds no data of that histogram"
    for index, h in enumerate(f.get("hists") or []):
        if subject not in (h.get("subjects") or []):
            continue
        stats = [find_parameter(params, s) for s in h.get("subjects") or []]
        if any(st is None for st in stats):
            why = (f"{subject} is not a parameter of the model the independent evaluation captured (a histogram of "
                   f"another model, or of the weights before training?)")
            continue
        found = histogram_disagrees(h, stats)  # type: ignore[arg-type]
        if found is not None:
            why = f"its data is not the trained model's {subject}: {found}"
            continue
        why = _bars_unconfirmed(f, index, subject)  # the picture, tied to the record the model backs
        if why is None:
            return None
    return why


def weight_histograms(ctx: CheckContext, params: Mapping) -> Outcome:
    """A distribution plot of each required layer's weights (and biases when asked).

    Figures come from the probe (execute mode) or, in saved mode, from the stored images
    attributed by reading the notebook's code (`"attributed": "static"`) and pixels. Executed,
    a layer counts as shown only when the host corroborates the probe's record: the image is
    in the cell's captured output and the histogram's data is the captured model's parameter
    (`_uncorroborated`). A layer that is only claimed (a record the host cannot confirm), like
    a figure the grader could not read for sure (`"uncertain"`, including a stored image that
    is corrupt, `"unreadable"`, or a captured histogram drawn from bars whose data the probe
    never saw), never counts as shown nor as missing: the confirmed layers earn their share
    (partial) and the rest goes to a TA with those figures and why (all of it when none is
    confirmed).
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
    shown: dict[tuple[str, str], tuple[Mapping, Mapping]] = {}
    claimed: dict[tuple[str, str], tuple[Mapping, Mapping, str]] = {}
    for ev, f, s in subjects:
        for l, k in need:
            if (l, k) in shown or not _matches(s, l, k):
                continue
            why = _uncorroborated(ev, f, s)
            if why is None:
                shown[(l, k)] = (ev, f)
                claimed.pop((l, k), None)
            else:
                claimed.setdefault((l, k), (ev, f, why))
    missing = [f"{l}.{k}" for l, k in need if (l, k) not in shown and (l, k) not in claimed]
    pointers = tuple(sorted({where(ev, f.get("cell")) for ev, f in shown.values()}))
    # Executed, a histogram drawn from bars (np.histogram + plt.bar) is one whose data the probe
    # never saw (only plt.hist and seaborn hand it their data): when the host captured it and its
    # pixels are a histogram, it may show the layers, so a TA looks rather than a fail (T4 1410004).
    drawn = [(ev, f) for ev, f in hists if ev.get("mode") != "saved" and not f.get("subjects")
             and not f.get("hists") and not f.get("uncertain") and figure_captured(f)]
    unsure += drawn
    unattributed = sum(1 for ev, f in hists if not f.get("subjects") and not f.get("uncertain")
                       and (ev, f) not in drawn)
    note = (f" {unattributed} histogram(s) show data that is not any layer's parameters (e.g. input pixels)."
            if unattributed else "")
    if any(f.get("attributed") == "static" for _, f in shown.values()):
        note += " (Saved mode: the layers were read from the notebook's code, not observed running.)"
    if claimed:
        looked = tuple(sorted({where(ev, f.get("cell")) for ev, f, _ in claimed.values()}))
        names = [f"{l}.{k}" for l, k in need if (l, k) in claimed]
        ev, f, why = next(iter(claimed.values()))
        unconfirmed = (f"histograms of {', '.join(names[:8])}{' and more' if len(names) > 8 else ''} are recorded, "
                       f"but the grader could not confirm them from what it checked itself: {why} "
                       f"({where(ev, f.get('cell'))}).")
        absent = f" Not found at all: {', '.join(missing)}." if missing else ""
        if shown:
            # The confirmed layers earn their share; a TA adds the share of the others.
            return Outcome("partial", len(shown) / len(need),
                           f"weight distributions confirmed for {len(shown)} of {len(need)} "
                           f"({', '.join(f'{l}.{k}' for l, k in need if (l, k) in shown)}); {unconfirmed} "
                           f"This is not a finding against your work: a TA will look at {', '.join(looked[:5])} "
                           f"and may add their share." + absent + note,
                           looked[:5] + pointers, flags=(UNCONFIRMED,))
        return Outcome("manual", 0.0, f"{unconfirmed[0].upper()}{unconfirmed[1:]} A TA will look at "
                                      f"{', '.join(looked[:5])}." + absent + note,
                       looked[:5] + pointers, flags=(UNCONFIRMED,))
    if (missing or not need) and unsure:
        looked = tuple(sorted({where(ev, f.get("cell")) for ev, f in unsure}))
        found = (f"weight distributions were found for {len(need) - len(missing)} of {len(need)} "
                 f"({', '.join(missing)} not found)" if need else "no histogram of a layer's weights was found")
        broken = [f for _, f in unsure if f.get("unreadable")]
        odd = len(unsure) - len(broken) - len(drawn)
        why = ([f"{len(broken)} stored image(s) cannot be read ({broken[0]['unreadable']})"] if broken else []) + \
            ([(f"{odd} figure(s) could not be read for sure (e.g. drawn by code the grader cannot follow)")]
             if odd > 0 else []) + \
            ([(f"{len(drawn)} histogram figure(s) the grader captured were drawn from bars (e.g. np.histogram "
               f"and plt.bar), so it did not see which data they count; this is not a finding against your "
               f"work")] if drawn else [])
        return Outcome("manual", 0.0, f"{found}, and {' and '.join(why)}: a TA will look at "
                                      f"{', '.join(looked[:5])}." + note, looked[:5] + pointers,
                       flags=(UNCONFIRMED,) if drawn else ())
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


def _run_unconfirmed(ev: Mapping, o: Mapping) -> str | None:
    """Why the grader cannot confirm that optimizer `o` (which the probe says stepped) was a
    real training run, or None: its model was recorded and trained, the probe saw its weights
    change (hints), and the host captured output of the cells it stepped in (a loss or
    accuracy line, or an image: grader.corroborate)."""
    refs = {r for r in o.get("model_refs") or [] if isinstance(r, int)}
    if not refs & {m.get("ref") for m in ev.get("models") or []}:
        return "no model the run recorded is trained by it"
    # its own passes: in a cell where it stepped (an emitted optimizer naming the real model
    # of another run, in a cell of its own, has none)
    stepped = {c for c in o.get("cells_stepped") or [] if isinstance(c, int)}
    passes = [t for t in ev.get("training") or [] if t.get("batches") and t.get("model_ref") in refs
              and (not stepped or not isinstance(t.get("cell"), int) or t["cell"] in stepped)]
    if not passes:
        return "no training pass of its model was recorded in the cells where it stepped"
    named = any(m.get("names") for m in ev.get("models") or [] if m.get("ref") in refs) \
        or any(t.get("model") for t in passes)
    if not named and not any(t.get("dataset") or t.get("loader") for t in passes):
        # what a real loop leaves: a model bound to a name, batches from a loader of a dataset
        return "its training recorded no dataset, no data loader and no named model"
    if o.get("weights_changed") is not True:
        return "no record shows its steps changed any weight"
    if not o.get("host_output"):
        return ("the grader found no loss or accuracy in the output it captured of the cells where it stepped, "
                "nor a chart drawn after them")
    return None


RUN_SAME = 0.98
"""Share (0..1) of the test and hidden images two run models put in the same class from which
they are one model, counted once: a copy, or one model trained on by several optimizers. Two
honest runs at different rates differ far more (LeNet, stand-in CIFAR-10: 8-24 % agreement)."""
RUN_Z = 3.0
"""z of a run model's accuracy over chance (1 / classes; test and hidden images together, a
one-sided binomial test) from which the host takes it as trained: at 1000 images of 10
classes that is 12.9 %; a model that never trained, or diverged, stays near 10 %."""


def _trained_z(entry: Mapping) -> float:
    """How far (in standard errors) a run model's accuracy is above chance (grader.verify.runs)."""
    n, hn = int(entry.get("n") or 0), int(entry.get("hidden_n") or 0)
    acc, hacc = float(entry.get("test_accuracy") or 0.0), float(entry.get("hidden_accuracy") or 0.0)
    total, k = n + hn, max(2, int(entry.get("classes") or 2))
    if total <= 0:
        return 0.0
    p, p0 = (acc * n + hacc * hn) / total, 1.0 / k
    return (p - p0) / math.sqrt(p0 * (1 - p0) / total)


def _host_run_doubt(ev: Mapping, o: Mapping, counted: Mapping[int, Mapping]) -> str | None:
    """Why the host's own evaluation does not back optimizer `o` as one more training run, or
    None: its model, captured at the end of its run (`verified_runs`, grader.verify.runs), was
    evaluated by the host, is above chance (`RUN_Z`) and predicts unlike every run already
    `counted` (ref -> its entry; `RUN_SAME`). Probe records alone never make a run count."""
    runs = [r for r in ev.get("verified_runs") or [] if isinstance(r, Mapping)]
    entry = next((r for r in runs if r.get("optimizer") == o.get("ref") and o.get("ref") is not None), None)
    if entry is None:
        general = next((str(r["reason"]) for r in runs if r.get("optimizer") is None and r.get("reason")), "")
        return ("the probe tracked no optimizer behind this record by the end of the notebook, so no model it "
                "trained could be captured and evaluated by the grader"
                + (f" ({general.rstrip('.')})" if general else ""))
    if not isinstance(entry.get("test_accuracy"), (int, float)):
        return (f"the model it trained could not be evaluated by the grader ("
                f"{str(entry.get('reason') or 'not captured').rstrip('.')})")
    if _trained_z(entry) < RUN_Z:
        return (f"the model it trained, evaluated by the grader, is at chance level ({100 * entry['test_accuracy']:.1f} % "
                f"on {entry.get('n')} test images of {entry.get('classes')} classes): it may have diverged or not "
                f"trained")
    for ref, other in counted.items():
        if float((entry.get("agreement") or {}).get(str(ref), 0.0)) >= RUN_SAME:
            return (f"the model it trained predicts the same classes as the model of another run (lr "
                    f"{other.get('lr', '?')}) on {100 * float(entry['agreement'][str(ref)]):.0f} % of the test images: "
                    f"one model, counted once")
    return None


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


def _same_weights(a: object, b: object) -> bool:
    """Two [sum, L2 norm] weight checksums (rec_torch._checksum) that are one set of weights."""
    return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b) == 2
            and all(isinstance(x, (int, float)) and math.isfinite(x) for x in a + b)
            and all(abs(x - y) <= 1e-9 * max(1.0, abs(x)) for x, y in zip(a, b)))


def _continued(confirmed: list[tuple[Mapping, Mapping]], ran: list[tuple[Mapping, Mapping]]) -> tuple[list, list]:
    """(the confirmed runs, (ev, o, why) of those that began from another run's trained model):
    the weights a run's optimizer was built on are the weights another optimizer that changed
    them ended with (the probe's checksums: hints, and a forged one only costs the student a
    run), e.g. `copy.deepcopy(trained)` fine-tuned at another rate. Copies of one untrained
    model, the fair way to compare rates, start where no run ended."""
    keep, cont = [], []
    for ev, o in confirmed:
        source = next((p for _, p in ran if p is not o and p.get("weights_changed") is True
                       and not _same_weights(p.get("checksum_start"), p.get("checksum_now"))
                       and _same_weights(o.get("checksum_start"), p.get("checksum_now"))), None)
        if source is None:
            keep.append((ev, o))
            continue
        lr = f"{float(source['lr']):g}" if isinstance(source.get("lr"), (int, float)) else "?"
        cont.append((ev, o, f"it began from the weights the run at lr {lr} ended with (a copy of that trained model "
                            f"trained on), so it continues that run rather than comparing a setting: counted once"))
    return keep, cont


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


def lr_study(ctx: CheckContext, params: Mapping) -> Outcome:
    """Several learning rates and/or decay schedules actually run and compared.

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
    min_runs = int(params.get("min_runs", 2))
    ran = [(ev, o) for ev in ctx.evidence for o in ev.get("optimizers") or [] if (o.get("steps") or 0) > 0]
    saved = [ev for ev in ctx.evidence if ev.get("mode") == "saved" and isinstance(ev.get("lr_settings"), list)]
    if saved and not ran:
        return _saved_lr_study(ctx, params, saved, min_runs)
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
    if params.get("require_scheduler", False):
        needs.append(("scheduler", bool(stepped)))
    if params.get("require_plot", True):
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
    if params.get("require_plot", True) and not compared:
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
