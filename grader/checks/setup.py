"""Checks on how training was set up and how the run went."""

from __future__ import annotations

from typing import Mapping

from grader.checks import params as P
from grader.datasets import registry
from grader.checks.base import CLASSES, KNOWN_NAMES, KNOWN_STATS, UNCONFIRMED, CheckContext, Outcome, where
from grader.corroborate import parameters_of, verified_blocks, verified_for, verified_normalizers
from grader.diagnose import error_text


def _saw_nothing(evidence) -> bool:
    """Every notebook's probe record is missing (saved mode, or the probe never started):
    an empty list there means "not seen", not "not done"."""
    return all(not isinstance(ev.get("probe"), Mapping) or not ev["probe"].get("started", True)
               for ev in evidence) and any("probe" in ev for ev in evidence)


def _outputs_wanted(ctx: CheckContext, num_outputs: int | None, dataset: str | None) -> int | None:
    """The class count the model's last layer must have: the rubric's, else the dataset's,
    else what the probe saw the training dataset declare."""
    if num_outputs:
        return num_outputs
    if dataset in CLASSES:
        return len(CLASSES[dataset])
    counts = {d.get("num_classes") for ev in ctx.evidence for d in ev.get("datasets") or []
              if isinstance(d.get("num_classes"), int) and d.get("split") not in ("test", "val")}
    return counts.pop() if len(counts) == 1 else None


@P.takes(P.ModelArchitecture)
def model_architecture(ctx: CheckContext, params: P.ModelArchitecture) -> Outcome:
    """The model is shown and fits the dataset (its output size equals the class count), and
    has the rubric's `layers` when it names some."""
    num_outputs, layers, dataset = params.num_outputs, params.layers, params.dataset
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found, so no model either.")
    dataset = dataset or ctx.dataset
    want = _outputs_wanted(ctx, num_outputs, dataset)
    models = [(ev, m) for ev in ctx.evidence for m in ev.get("models") or []]
    if not models:
        if _saw_nothing(ctx.evidence):
            return Outcome("manual", 0.0, "the grader did not see the notebook's code run (saved mode, or its "
                                          "recorder did not start), so it cannot see the model; a TA checks it.",
                           tuple(where(ev) for ev in ctx.evidence))
        return Outcome("fail", 0.0, "no trained model was recorded: define an nn.Module and train it in the notebook.")
    if want is None:
        ev, m = models[-1]
        return Outcome("manual", 0.0, f"model {m.get('class', '?')} with {m.get('num_outputs')} outputs was "
                                      f"recorded, but the grader does not know {dataset or 'the dataset'}'s class "
                                      f"count; a TA checks that it fits.", (where(ev, m.get("cell")),))
    fits = [(ev, m) for ev, m in models if m.get("num_outputs") == want]
    others = [(ev, m, why) for ev, m in fits if (why := _other_than_verified(ev, m, dataset))]
    if fits and len(others) == len(fits):
        # every fitting model is only a record (which the student's code can write), and the
        # model the host evaluated itself in that notebook is another one
        ev, m, why = others[-1]
        return Outcome("manual", 0.0, f"a model {m.get('class', '?')} with {m.get('num_outputs')} outputs was "
                                      f"recorded, but {why}, so the grader could not confirm it from what it "
                                      f"checked itself; a TA will check the model.", (where(ev, m.get("cell")),),
                       flags=(UNCONFIRMED,))
    if fits:
        ev, m = fits[-1]
        params_n = m.get("parameters")
        size = f", {params_n:,} parameters" if isinstance(params_n, int) else ""
        found = f"model {m.get('class', '?')} with {m.get('num_outputs')} outputs{size}"
        return _with_layers(ev, m, tuple(layers or ()), dataset, found)
    ev, m = models[-1]
    if not isinstance(m.get("num_outputs"), int):
        # No nn.Linear at the end (a conv head, a LazyLinear, a functional layer): the
        # recorder cannot read the output size, which says nothing about the model.
        return Outcome("manual", 0.0, f"model {m.get('class', '?')} was recorded, but the grader could not read "
                                      f"its output size (no final nn.Linear); a TA checks it has {want} outputs.",
                       (where(ev, m.get("cell")),))
    return Outcome("partial", 0.5, f"model {m.get('class', '?')} has {m.get('num_outputs')} outputs but "
                                   f"{dataset} has {want} classes: change the last layer to {want} outputs.",
                   (where(ev, m.get("cell")),))


def _layer_names(ev: Mapping, m: Mapping, dataset: str | None) -> set[str] | None:
    """Layer names of the model the host captured in `ev` (its parameters' names without the
    last part), else of the probe's record `m`, or None when neither says."""
    v = (verified_for(ev, dataset) if dataset else None) or next(iter(verified_blocks(ev)), {})
    # the record's layers are [name, type] pairs of its leaf modules
    names = list(parameters_of(v) or {}) or [str(n[0]) for n in m.get("layers") or []
                                              if isinstance(n, (list, tuple)) and n and isinstance(n[0], str)]
    return {n.rsplit(".", 1)[0] if n.endswith((".weight", ".bias")) else n for n in names} or None


def _with_layers(ev: Mapping, m: Mapping, layers: tuple[str, ...], dataset: str | None, found: str) -> Outcome:
    """A fitting model `m`: a pass, unless the rubric names `layers` it lacks (`conv1` matches
    `conv1` and `net.conv1`)."""
    pointer = (where(ev, m.get("cell")),)
    if not layers:
        return Outcome("pass", 1.0, f"{found}.", pointer)
    names = _layer_names(ev, m, dataset)
    if names is None:
        return Outcome("manual", 0.0, f"{found}, but the grader could not see its layers to look for "
                                      f"{', '.join(layers)}; a TA checks them.", pointer)
    missing = [l for l in layers if not any(n == l or n.endswith("." + l) for n in names)]
    if not missing:
        return Outcome("pass", 1.0, f"{found}, with layers {', '.join(layers)}.", pointer)
    return Outcome("partial", 0.5, f"{found}, but without the layer(s) {', '.join(missing)} the handout asks "
                                   f"for.", pointer)


def _other_than_verified(ev: Mapping, m: Mapping, dataset: str | None) -> str | None:
    """Why model record `m` is not the model the independent evaluation captured in `ev` (its
    class, or its parameter count against the captured parameters' sizes), or None when it
    may be, or nothing was verified. Compared with the model tested on `dataset` when there is
    one, else with the one tested on another dataset (an 11-output record is not that model)."""
    v = (verified_for(ev, dataset) if dataset else None) or next(iter(verified_blocks(ev)), {})
    if not isinstance(v.get("model"), str):
        return None
    if m.get("class") != v["model"]:
        return f"the model the grader evaluated itself in {where(ev)} is a {v['model']}"
    captured = parameters_of(v)
    sizes = [p.get("numel") if isinstance(p, Mapping) else None for p in (captured or {}).values()]
    total = sum(sizes) if sizes and all(isinstance(n, int) for n in sizes) else None  # a NaN one has no size
    if total and isinstance(m.get("parameters"), int) and m["parameters"] != total:
        return (f"the {v['model']} the grader evaluated itself in {where(ev)} has {total:,} parameters, "
                f"not {m['parameters']:,}")
    names = list(captured or {})
    if len(names) >= 2 and names[-1].endswith(".bias") and names[-2] == names[-1][:-5] + ".weight":
        # a final nn.Linear: its bias holds one value per output, its weight in x out
        out_n, w_n = sizes[-1], sizes[-2]
        if isinstance(out_n, int) and isinstance(w_n, int) and out_n and w_n > out_n and w_n % out_n == 0 \
                and isinstance(m.get("num_outputs"), int) and m["num_outputs"] != out_n:
            return f"the {v['model']} the grader evaluated itself in {where(ev)} has {out_n} outputs"
    return None


def _close(a, b, tol: float) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))


@P.takes(P.Normalization)
def normalization(ctx: CheckContext, params: P.Normalization) -> Outcome:
    """Inputs normalized with the dataset's own training mean/std, within a tolerance.

    Only what reached a model counts: a Normalize in the test transform the independent
    evaluator reproduced the student's predictions of a `dataset` model with
    (`grader.corroborate.verified_for`). The probe's records are hints the student's code could
    have written, also that their data reached a model in cells whose captured output shows a
    loss (`reached_model`, `host_output`: the student's process can load real data through such a
    transform and print a line): with the right numbers but no verified transform, a TA decides;
    with copied constants they still say what was used. A Normalize the probe did not see in
    any dataset's transform (`applied` false, or a record that does not say) was never used, so
    it earns nothing, whatever its numbers.
    """
    dataset, tol, reject = params.dataset or ctx.dataset, params.tolerance, set(params.reject)
    stats = ctx.dataset_stats.get(dataset)
    if stats is None:
        return Outcome("error", 0.0, f"the grader has no statistics for {dataset}; the TA should run "
                                     f"`dllab data stats {dataset} DIR`.")
    mean, std = stats["mean"], stats["std"]
    rejected = {k.label for k in registry.known_stats() if k.key in reject or k.family in reject}

    def own(n: Mapping) -> bool:  # copied constants earn nothing, even when close
        return _known(n) not in rejected and _close(n["mean"], mean, tol) and _close(n["std"], std, tol)

    # the host's evaluation of a model of `dataset` in each notebook, and the Normalizes of its test transform
    checked = [(ev, v, found) for ev in ctx.all_evidence if (v := verified_for(ev, dataset)) is not None
               and (found := verified_normalizers(v)) is not None]
    confirmed = [(ev, v, {"mean": m, "std": s}) for ev, v, found in checked for m, s in found]
    for ev, v, n in confirmed:
        if own(n):
            return Outcome("pass", 1.0, f"normalized with {dataset}'s own mean and std ({_vec(n['mean'])}, "
                                        f"{_vec(n['std'])}), in the test transform the independent evaluation "
                                        f"reproduced your predictions with.", (where(ev, v.get("cell")),))
    used = [(ev, n) for ev in ctx.all_evidence for n in ev.get("normalization") or []
            if n.get("dataset") in (dataset, None) and n.get("mean") and n.get("std")]

    def verified_here(ev: Mapping) -> list | None:  # the Normalizes of this notebook's own verified test transform
        v = verified_for(ev, dataset)
        return verified_normalizers(v) if v is not None else None

    # A Normalize no dataset's transform held was never used (a record without `applied` is
    # taken as such: the probe writes it for every Normalize it saw).
    unapplied = [(ev, n) for ev, n in used if n.get("applied") is not True]
    used = [(ev, n) for ev, n in used if n.get("applied") is True]
    # A notebook whose verified test transform normalizes with other constants says what its
    # model saw: its probe records of a Normalize (a separate loader, or forged) earn nothing;
    # without a verified transform, records of its own statistics go to a TA.
    claimed = [(ev, n) for ev, n in used if own(n) and not verified_here(ev)]
    if claimed:
        ev, n = claimed[0]
        how = "seen in a dataset's transform" + (" feeding a model" if n.get("reached_model") else "")
        if checked:
            _, cv, _ = next(((e, v, f) for e, v, f in checked if e is ev), checked[0])
            why = (f"the test transform the independent evaluation reproduced your predictions with "
                   f"({cv.get('transform')}) does not include it")
        else:
            others = sorted({str(v.get("dataset")) for e in ctx.all_evidence for v in verified_blocks(e)
                             if v.get("dataset")})
            reasons = [str((e.get("verified") or {}).get("reason") or "").rstrip(".") for e in ctx.all_evidence]
            reason = (f"the models the grader tested itself were evaluated on {', '.join(others)}" if others
                      else next((r for r in reasons if r), ""))
            why = (f"no independent evaluation of a {dataset} model confirmed the transform"
                   + (f" ({reason})" if reason else ""))
        return Outcome("manual", 0.0, f"a Normalize with {dataset}'s own mean and std ({_vec(n['mean'])}, "
                                      f"{_vec(n['std'])}) was {how}, but the grader could not confirm it was "
                                      f"applied to the data a model saw: {why}. A TA checks it.",
                       (where(ev, n.get("cell")),), flags=(UNCONFIRMED,))
    if confirmed or used:
        ev, n = ([(e, c) for e, _, c in confirmed] or used)[-1]
        known = _known(n)
        what = f"{known} statistics" if known else f"mean {_vec(n.get('mean', ()))}, std {_vec(n.get('std', ()))}"
        return Outcome("fail", 0.0, f"normalized with {what}, not {dataset}'s own training statistics "
                                    f"(mean {_vec(mean)}, std {_vec(std)}).", (where(ev, n.get("cell")),))
    if unapplied:
        ev, n = unapplied[-1]
        known = _known(n)
        what = f"{known} statistics" if known else f"mean {_vec(n.get('mean', ()))}, std {_vec(n.get('std', ()))}"
        return Outcome("fail", 0.0, f"a Normalize with {what} was created but never applied: no dataset's "
                                    f"transform held it, so no image was normalized. Put it in the transform "
                                    f"of the {dataset} datasets you train and test on.", (where(ev, n.get("cell")),))
    if _saw_nothing(ctx.all_evidence):
        return Outcome("manual", 0.0, f"the grader did not see the notebook's code run (saved mode, or its "
                                      f"recorder did not start), so it cannot tell how {dataset} was "
                                      f"normalized; a TA checks it.", tuple(where(ev) for ev in ctx.all_evidence))
    return Outcome("fail", 0.0, f"no transforms.Normalize was applied to {dataset}: compute the training "
                                f"split's mean and std and normalize with them.")


def _known(n: Mapping) -> str | None:
    """The name of a well-known constant pair that `n` copies, if any."""
    return next((name for name, (m, s) in KNOWN_STATS.items()
                 if _close(n.get("mean", ()), m, 0.002) and _close(n.get("std", ()), s, 0.002)), None)


def _vec(xs) -> str:
    return "(" + ", ".join(f"{float(x):.3f}" for x in xs) + ")"


@P.takes(P.RanWithoutErrors)
def ran_without_errors(ctx: CheckContext, params: P.RanWithoutErrors) -> Outcome:
    """Every notebook of the part ran to the end with at most `max_errors` exceptions."""
    max_errors = params.max_errors
    if not ctx.evidence:
        return Outcome("fail", 0.0, f"no notebook for {ctx.part_id} was found.")
    problems = []
    for ev in ctx.evidence:
        status = ev.get("status", "not-run")
        if status == "ok" and (ev.get("cells") or {}).get("total") == 0:
            problems.append((ev, f"{where(ev)} has no code cells, so nothing ran", 0.0))
            continue
        errors = ev.get("errors") or []
        if status in ("timeout", "killed"):
            problems.append((ev, f"{where(ev)} was stopped ({status}: {ev.get('reason', 'a limit was hit')})", 0.0))
        elif len(errors) > max_errors:
            e = errors[0]
            problems.append((ev, f"{where(ev, e.get('cell'))} raised {error_text(e.get('ename'), e.get('evalue'))}"
                                 + (f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""), 0.5))
        elif status == "not-run":
            problems.append((ev, f"{where(ev)} was not run", 0.0))
    skipped = [(ev, text) for ev in ctx.evidence if (text := _skipped_training(ev))]
    if not problems and skipped:
        return Outcome("manual", 0.0, "; ".join(text for _, text in skipped) + ": the stored outputs are not one "
                                      "run from the top, and the grader ran nothing (saved mode), so a TA checks.",
                       tuple(where(ev) for ev, _ in skipped))
    if not problems:
        return Outcome("pass", 1.0, "ran from top to bottom without errors.")
    fraction = min(p[2] for p in problems)
    return Outcome("partial" if fraction else "fail", fraction, "; ".join(p[1] for p in problems) + ".",
                   tuple(where(ev) for ev, _, _ in problems))


@P.takes(P.Manual)
def manual(ctx: CheckContext, params: P.Manual) -> Outcome:
    """Graded by a TA; the rubric's hint (if any) is shown to them alongside."""
    message = params.message
    return Outcome("manual", 0.0, message or "graded by a TA.")


def _skipped_training(ev: Mapping) -> str | None:
    """Saved mode: a cell whose code trains was never run (no In[ ] number, no output) although
    a later cell was; the stored notebook then never ran as a whole (grader.storedrun)."""
    if ev.get("mode") != "saved":
        return None
    cells = [c for c in ev.get("stored_cells") or [] if isinstance(c, Mapping) and isinstance(c.get("index"), int)]
    last_run = max((c["index"] for c in cells if isinstance(c.get("cell"), int)), default=-1)
    skipped = [c["index"] + 1 for c in cells if c.get("trains") and c.get("cell") is None and not c.get("outputs")
               and c["index"] < last_run]
    if not skipped:
        return None
    which = ", ".join(str(i) for i in skipped)
    return f"in {where(ev)} the training cell{'s' if len(skipped) > 1 else ''} (cell {which} of the notebook) " \
           f"never ran, while later cells did"

