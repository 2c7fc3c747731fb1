"""The regularization check: a regularizer in effect in a trained run, not just written.

It reads `Run.regularizers` of the part's notebooks (grader.regularizers: the probe's counts of
what happened between each optimizer's steps, and what the host read itself: the code the
notebook names, the operators of the run's captured model). A probe record is a hint the student's
code could forge, so a regularizer earns points only when the host corroborates it (the code
names it, or the captured graph has it); otherwise the item goes to a TA (UNCONFIRMED). A
regularizer written but shown not in effect (Dropout never run in training mode, weight decay
on an optimizer that never stepped, a penalty in none of the stepped losses) is a finding: it
is named, with its cell. When the probe could not tell, the item goes to a TA, never "not found".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from grader.checks import params as P
from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, where
from grader.regularizers import EVAL_STEPS_TOLERATED, cell_name

TEST_SELECTION = "test-selection"
"""Flag of an item whose model selection (early stopping, best checkpoint) used the test split."""


LABEL = {"weight_decay": "weight decay", "penalty": "an L1/L2 penalty", "dropout": "Dropout",
         "augmentation": "augmentation", "batchnorm": "BatchNorm", "early_stopping": "early stopping"}


@dataclass
class _Verdict:
    """One regularizer of one run: in effect (confirmed or not), not in effect (why), or unknown."""

    state: str  # "on", "off", "unknown", "test", "absent"
    text: str = ""
    confirmed: bool = True
    credit: float = 1.0
    from_code: bool = False
    """An `unknown` that only says the code names it: moot when another run shows it on or off."""


@dataclass
class _RunView:
    ev: Mapping
    run: Mapping
    name: str
    verdicts: dict[str, _Verdict] = field(default_factory=dict)


def _n(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"


def _a(word: str) -> str:
    return ("an " if str(word)[:1].upper() in "AEIOU" else "a ") + str(word)


def _steps(run: Mapping) -> str:
    n = _n(run.get("batches"))
    return f"{run.get('name')}'s {n} steps" if n else f"{run.get('name')}'s steps"


def _layers(run: Mapping, key: str, label: str, probe_saw: bool, written: bool, captured: list | None,
            ) -> _Verdict:
    d = (run.get("regularizers") or {}).get(key)
    confirmed = written or (captured is not None and key in captured)
    if isinstance(d, Mapping):
        names = ", ".join((d.get("modules") or d.get("declared") or [])[:3]) or label
        train, ev_grad, ev_all = _n(d.get("train")), _n(d.get("eval_grad")), _n(d.get("eval"))
        on_steps, off_steps = _n(d.get("steps_train")), _n(d.get("steps_eval"))
        cell = d.get("eval_cell")
        # model.eval() with no model.train() after it, else a call made in eval mode by its own
        # argument (F.dropout(x, p, training=False))
        left_on = (f"model.eval() was left on ({cell_name(cell)})" if isinstance(cell, int) else
                   "it was called in eval mode (model.eval() left on, or F.dropout(..., training=False))")
        # most steps in eval mode (after the first epoch's evaluation, say): not in effect
        if train > 0 and off_steps > EVAL_STEPS_TOLERATED * (on_steps + off_steps):
            return _Verdict("off", f"{label} in {names} ran in training mode in {on_steps} of {_steps(run)} and in "
                                   f"eval mode in {off_steps} ({ev_grad} calls with gradients): {left_on}")
        if train > 0:
            return _Verdict("on", f"{label} ({names}) ran {train} times in training mode during {_steps(run)}",
                            confirmed)
        if ev_grad > 0:
            return _Verdict("off", f"{label} in {names} ran 0 times in training mode during {_steps(run)}, "
                                   f"{ev_all} times in eval mode: {left_on}")
        if d.get("declared") and not ev_all and not _n(d.get("train_nograd")):
            return _Verdict("off", f"{label} {', '.join(d['declared'][:3])} is declared in the model but was never "
                                   f"called in its forward pass during {_steps(run)}")
        if _n(d.get("train_nograd")):
            return _Verdict("off", f"{label} in {names} ran in training mode only without gradients (never in a "
                                   f"training pass) during {_steps(run)}")
    if written and not probe_saw:
        return _Verdict("unknown", f"the code names {label} but the grader could not see whether it ran",
                        from_code=True)
    return _Verdict("absent")


def _judge(ev: Mapping, run: Mapping, reg: str, probe_saw: bool) -> _Verdict:
    R = run.get("regularizers") or {}
    written = set(R.get("written") or [])
    captured = R.get("captured") if isinstance(R.get("captured"), list) else None
    if reg == "weight_decay":
        wd = R.get("weight_decay")
        if isinstance(wd, (int, float)) and wd > 0:
            return _Verdict("on", f"{run.get('name')} stepped {_a(run.get('optimizer') or 'optimizer')} with weight "
                                  f"decay {_fmt(wd)}", "weight_decay" in written)
        lost = [u for u in R.get("unstepped") or [] if isinstance(u, Mapping)]
        if lost:
            u = lost[0]
            return _Verdict("off", f"optimizer {u.get('optimizer')}(weight_decay={_fmt(u.get('weight_decay'))}) built "
                                   f"in {cell_name(u.get('cell'))} never stepped; {run.get('name')} stepped "
                                   f"{_a(run.get('optimizer') or 'optimizer')} with weight_decay "
                                   f"{_fmt(wd) if wd is not None else 'unknown'}")
        return _Verdict("absent")
    if reg == "penalty":
        p = R.get("penalty")
        if isinstance(p, Mapping) and p.get("kind") and _n(p.get("steps")) > 0:
            return _Verdict("on", f"an {p['kind']} penalty on {_n(p.get('params'))} parameters was in the loss "
                                  f"{run.get('name')} stepped on ({_n(p.get('steps'))} of {_n(p.get('analyzed'))} steps "
                                  f"checked)", "penalty" in written)
        if isinstance(p, Mapping) and _n(p.get("analyzed")) and "penalty" in written:
            return _Verdict("off", f"a weight penalty is written in the code but was in none of the "
                                   f"{_n(p.get('analyzed'))} losses {run.get('name')} back-propagated that the grader "
                                   f"checked: computed but not added to the loss that stepped")
        if "penalty" in written and not isinstance(p, Mapping):
            return _Verdict("unknown", "the code writes a weight penalty but the grader could not see the loss "
                                       "that stepped", from_code=True)
        return _Verdict("absent")
    if reg in ("dropout", "batchnorm"):
        return _layers(run, reg, LABEL[reg], probe_saw, reg in written, captured)
    if reg == "augmentation":
        a = R.get("augmentation")
        if isinstance(a, Mapping) and a.get("train"):
            names = ", ".join(a["train"][:4])
            leaked = {s: v for s, v in (a.get("splits") or {}).items() if v}
            if leaked:
                said = "; ".join(f"the {s} data went through {', '.join(v[:4])}" for s, v in leaked.items())
                return _Verdict("on", f"{run.get('name')} trained on randomly transformed data ({names}), but it was "
                                      f"evaluated on augmented data too ({said}): a random_split of one dataset "
                                      f"shares its transform; give the validation/test data its own, without "
                                      f"random transforms", "augmentation" in written, credit=-1.0)
            return _Verdict("on", f"{run.get('name')} trained on randomly transformed data ({names}), evaluated on "
                                  f"data without them", "augmentation" in written)
        if "augmentation" in written:
            # transforms applied to batches in the loop (not in the dataset) are not seen: never a finding
            return _Verdict("unknown", f"the code names random transforms but the grader saw none in the pipeline "
                                       f"of the data {run.get('name')} trained on", from_code=True)
        return _Verdict("absent")
    s = R.get("selection")
    if isinstance(s, Mapping):
        how = "early stopping" if s.get("how") == "early-stopping" else "a best checkpoint"
        if s.get("split") == "val":
            return _Verdict("on", f"{run.get('name')} chose its model by {how} on the validation split "
                                  f"({cell_name(s.get('cell'))})", "early_stopping" in written or s.get("basis") == "code")
        if s.get("split") == "test":
            return _Verdict("test", f"{run.get('name')} chose its model by {how} on the test split "
                                    f"({cell_name(s.get('cell'))}): selection must use a validation split")
        return _Verdict("unknown", f"{run.get('name')} chose its model by {how}, on a split the grader could not name")
    if "early_stopping" in written:
        return _Verdict("unknown", "the code names early stopping or a best checkpoint but the grader could not "
                                   "tell what decided it", from_code=True)
    return _Verdict("absent")


def _views(evidence: Sequence[Mapping], require: Sequence[str]) -> list[_RunView]:
    several = sum(bool(ev.get("runs")) for ev in evidence) > 1
    out = []
    for ev in evidence:
        probe_saw = any(isinstance(o, Mapping) and "regularization" in o for o in ev.get("optimizers") or [])
        for run in ev.get("runs") or []:
            if not isinstance(run, Mapping) or run.get("status") != "trained":
                continue
            name = f"{where(ev)} {run.get('name')}" if several else str(run.get("name"))
            v = _RunView(ev, run, name)
            for reg in require:
                v.verdicts[reg] = _judge(ev, run, reg, probe_saw)
            out.append(v)
    for reg in require:  # the code's mention is accounted for by a run that showed it on or off
        if any(v.verdicts[reg].state in ("on", "off", "test") for v in out):
            for v in out:
                if v.verdicts[reg].from_code:
                    v.verdicts[reg] = _Verdict("absent")
    return out


def _credit(v: _Verdict, params: P.Regularization) -> float:
    return params.augmented_eval_credit if v.credit < 0 else v.credit


def _incomplete(evidence: Sequence[Mapping]) -> bool:
    """The probe's record may be missing something: errors, its event cap, or no part of ours ran."""
    for ev in evidence:
        probe = ev.get("probe") or {}
        if probe.get("errors") or probe.get("limit_hit") or not probe.get("started", True):
            return True
        if any(isinstance(o, Mapping) and _n(o.get("steps")) and "regularization" not in o
               for o in ev.get("optimizers") or []):
            return True
    return False


def _unstepped_only(evidence: Sequence[Mapping]) -> list[str]:
    return [f"optimizer {o.get('type')}(weight_decay={_fmt(o.get('weight_decay'))}) built in "
            f"{cell_name(o.get('cell'))} never stepped" for ev in evidence for o in ev.get("optimizers") or []
            if isinstance(o, Mapping) and not _n(o.get("steps")) and isinstance(o.get("weight_decay"), (int, float))
            and o["weight_decay"] > 0]


@P.takes(P.Regularization)
def regularization(ctx: CheckContext, params: P.Regularization) -> Outcome:
    """A regularizer of `params.require` in effect in `params.min_runs` trained runs (`each`: every
    one named in effect in some trained run). What was written but not in effect is named in the
    message (and fails the item when nothing else is in effect); a hint the host could not
    corroborate, or something the probe could not tell, sends the item to a TA."""
    # every param read once, up front (the helpers take the plain model)
    params = P.Regularization.model_validate({f: getattr(params, f) for f in P.Regularization.model_fields})
    evidence = list(ctx.evidence)
    if not evidence:
        return Outcome("fail", 0.0, "no notebook was found.")
    pointers = tuple(dict.fromkeys(where(ev) for ev in evidence))[:3]
    if all(ev.get("mode") == "saved" for ev in evidence):
        return Outcome("manual", 0.0, "Saved mode: nothing was run, so the grader cannot tell which regularizers "
                                      "were in effect; a TA will read the code.", pointers)
    require = list(dict.fromkeys(params.require))
    views = _views(evidence, require)
    if not views:
        lost = _unstepped_only(evidence)
        if any(_n(o.get("steps")) for ev in evidence for o in ev.get("optimizers") or [] if isinstance(o, Mapping)):
            return Outcome("manual", 0.0, "optimizers stepped but the grader built no trained run from them; a TA "
                                          "will check the regularizers.", pointers, (UNCONFIRMED,))
        return Outcome("fail", 0.0, "no run trained, so no regularizer was in effect"
                       + (f" ({'; '.join(lost[:2])})" if lost else "") + ".", pointers, own_words=True)
    found: list[str] = []  # in effect, confirmed
    doubts: list[str] = []  # in effect by the probe only, or not tellable
    offs: list[str] = []  # written, not in effect
    tests: list[str] = []
    run_credit: list[float] = []
    reg_credit: dict[str, float] = {r: 0.0 for r in require}
    for view in views:
        best = 0.0
        for reg, v in view.verdicts.items():
            if v.state == "on" and v.confirmed:
                c = _credit(v, params)
                best, reg_credit[reg] = max(best, c), max(reg_credit[reg], c)
                found.append(v.text)
            elif v.state == "on":
                doubts.append(v.text + " (by the probe's record only: the code does not name it and the captured "
                                       "model does not show it)")
            elif v.state == "unknown":
                doubts.append(v.text)
            elif v.state == "off":
                offs.append(v.text)
            elif v.state == "test":
                tests.append(v.text)
        run_credit.append(best)
    top = sorted(run_credit, reverse=True)[:params.min_runs]
    fraction = sum(top) / params.min_runs
    if params.each:
        fraction = min(fraction, sum(reg_credit.values()) / len(require))
    fraction = round(min(1.0, fraction), 4)
    flags = (TEST_SELECTION,) if tests else ()
    parts = []
    if found:
        parts.append("In effect: " + "; ".join(found[:6]))
    if offs:
        parts.append("Written but not in effect: " + "; ".join(offs[:4]))
    if tests:
        parts.append("; ".join(tests[:2]))
    if fraction < 1.0 and params.each:
        missing = [LABEL[r] for r, c in reg_credit.items() if c < 1.0]
        parts.append("not in effect in any trained run: " + ", ".join(missing))
    elif fraction < 1.0:
        n = sum(1 for c in run_credit if c > 0)
        parts.append(f"{n} trained run(s) with {' or '.join(LABEL[r] for r in require)} in effect, "
                     f"{params.min_runs} asked (runs: {', '.join(v.name for v in views[:6])})")
    message = ". ".join(parts) + "."
    if fraction >= 1.0:
        return Outcome("pass", 1.0, message, pointers, flags, own_words=True)
    if doubts or tests or _incomplete(evidence):
        why = "; ".join([*list(dict.fromkeys(doubts))[:3], *tests[:1]]) or "the probe's record of this notebook is incomplete"
        return Outcome("manual", fraction, f"{message} The grader could not settle the rest: {why}; this is not a "
                                           f"finding against your work. A TA will check the regularizers.",
                       pointers, (UNCONFIRMED, *flags), own_words=True)
    status = "partial" if fraction > 0 else "fail"
    if not found and not offs:
        message = (f"no {' or '.join(LABEL[r] for r in require)} was in effect in a trained run "
                   f"(runs: {', '.join(v.name for v in views[:6])}).")
    return Outcome(status, fraction, message, pointers, flags, own_words=True)
