"""Checks on what was plotted: weight histograms (the learning-rate study is in grader.checks.lrstudy)."""

from __future__ import annotations

from typing import Mapping

from grader.checks import params as P
from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, where
from grader.checks.lrstudy import lr_study  # noqa: F401 - its old home, kept importable
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
    captured = parameters_of(ev.get("verified"))
    if captured is None:
        reason = str((ev.get("verified") or {}).get("reason") or "").rstrip(".")
        return ("the trained model's parameters were not captured by the independent evaluation"
                + (f" ({reason})" if reason else "") + ", so the histogram's data could not be compared with them")
    why = "the record holds no data of that histogram"
    for index, h in enumerate(f.get("hists") or []):
        if subject not in (h.get("subjects") or []):
            continue
        stats = [find_parameter(captured, s) for s in h.get("subjects") or []]
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


@P.takes(P.WeightHistograms)
def weight_histograms(ctx: CheckContext, params: P.WeightHistograms) -> Outcome:
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
    layers, require_bias = list(params.layers or ()), params.require_bias
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found, so no weight histograms either.")
    kinds = ["weight", "bias"] if require_bias else ["weight"]
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
