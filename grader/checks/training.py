"""What the probe saw of training: was the evaluated model trained, and for how long.

The checks on printed metrics use this to refuse points for a model that was evaluated
untrained (training never ran because an earlier cell failed, ran only after the
evaluation, or ran on another model than the one evaluated), and to compare an accuracy
with the reference at the same training budget. Only the probe can fail a model as
untrained; when its record is incomplete (a limit hit, a run killed in the middle of a cell
before its counts were written) nothing here concludes anything. In saved mode the stored
notebook can still show that training did not run before the evaluation (its stored output
is an error, it was never run, or it ran after): then a TA looks (`manual`), never a fail on
a guess.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from grader.checks.base import CLASSES, fmt_pct, where
from grader.checks.stored import stored_untrained
from grader.corroborate import verified_for
from grader.diagnose import error_text

CHANCE_TOLERANCE = 0.07
"""How far above chance (1/classes, as a fraction) an accuracy still counts as "near chance".
An untrained net predicts mostly one class; on Food-11's unbalanced evaluation split that
scores anywhere from 3 % to 15 % (chance 9 %), so the band is wider than CIFAR-10 needs. A
CIFAR-10 LeNet after one epoch of the handout's training is near 50 %, far outside it."""

MIN_TRAIN_BATCHES = 10
"""Training-mode forward passes (batches) below which no training loop ran: a loop that
crashed in its first batch leaves one. A hand-written update loop without torch.optim (no
optimizer step is recorded then) feeds many more, so it is never called untrained."""

HELD_OUT = ("test", "val")


def finite(x: object) -> bool:
    """A real, finite number (not None, NaN, inf or a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def chance_level(dataset: str | None) -> float | None:
    """1 / number of classes of a known dataset, as a fraction; None when unknown."""
    n = len(CLASSES.get(dataset or "", ()))
    return 1.0 / n if n else None


def probe_complete(ev: Mapping) -> bool:
    """Whether the probe's record of this run can be trusted to be complete.

    False in saved mode, when the probe did not start, hit its event limit, or the run was
    stopped mid-cell (the counts of the cell it died in are written at the cell's end).
    """
    probe = ev.get("probe")
    return (ev.get("mode", "execute") == "execute" and isinstance(probe, Mapping)
            and bool(probe.get("started")) and not probe.get("limit_hit")
            and ev.get("status") not in ("timeout", "killed", "not-run"))


def _sessions(ev: Mapping) -> list[Mapping]:
    """Training passes over training data (a pass over test data in train mode is an evaluation)."""
    return [t for t in ev.get("training") or [] if t.get("split") not in HELD_OUT]


def _fed(ev: Mapping) -> list[Mapping]:
    """Passes over training data with gradients on: training-mode ones, and those of a loop that
    left the model in eval mode (a baseline `evaluate(net)` called `net.eval()` first)."""
    return [*_sessions(ev), *(e for e in ev.get("evaluations") or []
                              if e.get("grad_enabled") and e.get("split") not in HELD_OUT
                              and e.get("training_mode") is False)]


def _key(entry: Mapping) -> tuple:
    """Which model a session belongs to: its probe ref when recorded, else name and class."""
    ref = entry.get("model_ref")
    return ("ref", ref) if ref is not None else ("name", entry.get("model"), entry.get("model_class"))


def _test_evaluations(ev: Mapping) -> list[Mapping]:
    return [e for e in ev.get("evaluations") or [] if e.get("split") == "test"]


def stepped(o: Mapping) -> int:
    """An optimizer's steps, counted only when the probe also saw them change weights: a record
    without that (`weights_changed` not True: forged through the probe's emit, or steps that
    changed nothing) is no training. Evidence older than the checksum keeps its steps."""
    if "weights_changed" in o and o["weights_changed"] is not True:
        return 0
    return int(o.get("steps") or 0)


def _steps(ev: Mapping, model: str | None = None) -> int:
    opts = ev.get("optimizers") or []
    mine = [o for o in opts if model is not None and o.get("model") == model]
    return sum(stepped(o) for o in (mine or opts))


@dataclass(frozen=True)
class Budget:
    """How much training the probe saw the evaluated model get."""

    epochs: float | None
    """Passes over the training split: images fed in training mode / the split's size."""
    samples: int
    """Training images fed to the model in training mode (with repeats)."""
    batches: int
    """Training-mode forward passes (one per batch)."""
    passes: int
    """Loader passes (a `for ... in trainloader` loop each), usually one per epoch."""
    split_size: int | None
    """Images in the training split the epochs are counted in."""
    batch_size: int | None
    """The most common batch size (samples / batches of a pass), for the message."""
    steps: int
    """Optimizer steps taken (the model's own optimizers when the probe linked them)."""
    model: str | None
    """The model's variable name, if known."""

    def batches_text(self) -> str:
        """`2,500 batches of 4`, for messages."""
        return f"{self.batches:,} batches" + (f" of {self.batch_size}" if self.batch_size else "")

    def text(self) -> str:
        """`2 epochs (2,500 batches of 4)`, for messages."""
        ep = f"{self.epochs:.3g} epoch{'' if self.epochs == 1 else 's'}" if self.epochs is not None else "?"
        return f"{ep} ({self.batches_text()})"


def training_budget(ev: Mapping) -> Budget | None:
    """The evaluated model's training budget, or None when the probe cannot tell."""
    if not probe_complete(ev):
        return None
    sessions = _sessions(ev)
    if not sessions:
        return None
    groups: dict[tuple, list[Mapping]] = {}
    for s in sessions:
        groups.setdefault(_key(s), []).append(s)
    evaluated = [_key(e) for e in _test_evaluations(ev) if _key(e) in groups]
    chosen = groups[evaluated[-1]] if evaluated else max(
        groups.values(), key=lambda g: sum(int(s.get("samples") or 0) for s in g))
    samples = sum(int(s.get("samples") or 0) for s in chosen)
    batches = sum(int(s.get("batches") or 0) for s in chosen)
    largest = max(int(s.get("samples") or 0) for s in chosen)
    size = _split_size(ev, chosen, largest)
    sizes = Counter(round(int(s.get("samples") or 0) / int(s["batches"])) for s in chosen if s.get("batches"))
    model = chosen[-1].get("model")
    return Budget(epochs=round(samples / size, 3) if size else None, samples=samples, batches=batches,
                  passes=len(chosen), split_size=size or None,
                  batch_size=sizes.most_common(1)[0][0] if sizes else None,
                  steps=_steps(ev, model), model=model)


def _split_size(ev: Mapping, sessions: Sequence[Mapping], largest: int) -> int:
    """The size of the dataset the sessions iterated: recorded with them by newer probes, else
    the smallest training dataset of that name that holds the largest pass, else that pass."""
    recorded = [int(s["dataset_length"]) for s in sessions if isinstance(s.get("dataset_length"), int)
                and s["dataset_length"] > 0]
    if recorded:
        return Counter(recorded).most_common(1)[0][0]
    names = {s.get("dataset") for s in sessions}
    fits = [int(d["length"]) for d in ev.get("datasets") or []
            if isinstance(d.get("length"), int) and d["length"] >= largest > 0
            and d.get("dataset") in names and d.get("split") not in HELD_OUT]
    return min(fits) if fits else largest


def test_coverage(ev: Mapping) -> tuple[int, int] | None:
    """(most test images one model was evaluated on in one cell, the test split's size), or None
    when the probe cannot tell (saved mode, no recorded test pass, an older record)."""
    if not probe_complete(ev):
        return None
    seen: Counter = Counter()
    sizes = []
    for e in _test_evaluations(ev):
        if isinstance(e.get("dataset_length"), int) and e["dataset_length"] > 0:
            seen[(_key(e), e.get("cell"))] += int(e.get("samples") or 0)
            sizes.append(int(e["dataset_length"]))
    if not sizes:
        return None
    return max(seen.values()), max(sizes)


@dataclass(frozen=True)
class Untrained:
    """Why a model's metrics do not count as a trained model's."""

    status: Literal["fail", "manual"]
    """fail: the probe shows the model was not trained; manual: weights were loaded, or the stored
    notebook (saved mode) suggests it, and a TA decides."""
    kind: Literal["never", "loaded", "before", "other", "stored"]
    """never trained; loaded from a file, not trained here; evaluated only before training;
    another model than the trained one was evaluated; saved mode: the stored notebook shows the
    training cell failed, never ran, or ran after the evaluation."""
    message: str
    """One or two sentences for the student."""
    pointer: str
    """Where to look, e.g. `lab1-1.ipynb#cell 5`."""


def untrained(ev: Mapping, *, dataset: str | None, accuracy: float | None,
              printed: float | None, tolerance: float = CHANCE_TOLERANCE) -> Untrained | None:
    """A reason this notebook's test metrics are an untrained model's, or None.

    `accuracy` is the verified (else printed) test accuracy, `printed` the printed one, both
    fractions 0..1. Concludes only from a complete probe record and an accuracy near chance:
    - no optimizer step and no training loop ran at all: fail, naming the cell that raised;
    - the same, but weights were loaded from a file: manual (a checkpoint trained elsewhere is
      allowed; one at chance may be a preprocessing mismatch, so a TA looks);
    - training ran on one model, but every test evaluation was of another that neither shares
      its parameters nor received weights (a copy, a load): fail (`net2` trained, `net` tested);
    - training ran, but every test evaluation happened in cells before it, and the printed
      accuracy is at chance: fail (the numbers are the untrained model's).
    In saved mode, from the stored notebook (grader.checks.stored): manual at most.
    """
    chance = chance_level(dataset)
    if chance is None:
        return None
    near = chance + tolerance
    cut = f"chance level for {len(CLASSES[dataset or ''])} classes is {fmt_pct(chance)}"
    if ev.get("mode") == "saved":
        found = stored_untrained(ev, printed=printed, near=near, chance_text=cut)
        return Untrained("manual", "stored", found[0], found[1]) if found else None
    if not probe_complete(ev):
        return None
    fed = sum(int(t.get("batches") or 0) for t in _fed(ev))
    if _steps(ev) == 0 and fed < MIN_TRAIN_BATCHES and finite(accuracy) and accuracy <= near:
        loads = ev.get("weights_loaded") or []
        if loads:
            first = loads[0]
            return Untrained("manual", "loaded",
                             f"no training ran in this notebook and the weights were loaded from a file "
                             f"({first.get('source')}, cell {first.get('cell')}); the model scores "
                             f"{fmt_pct(accuracy)} and {cut}, so a TA checks the checkpoint and how it "
                             f"was evaluated.", where(ev, first.get("cell")))
        errors = ev.get("errors") or []
        why = (f" (cell {errors[0].get('cell')} raised "
               f"{error_text(errors[0].get('ename'), errors[0].get('evalue'), 100)})" if errors else "")
        fix = "Fix the error and run the notebook again from the top." if errors else \
            "Train the model before evaluating it."
        return Untrained("fail", "never",
                         f"the model was evaluated without training: no optimizer step ran{why}; its test "
                         f"accuracy {fmt_pct(accuracy)} is what an untrained model gets ({cut}). {fix}",
                         where(ev, errors[0].get("cell") if errors else None))
    other = _other_model(ev)
    if other is not None and finite(accuracy) and accuracy <= near:
        return Untrained("fail", "other", f"{other[0]}; its test accuracy {fmt_pct(accuracy)} is what an untrained "
                                          f"model gets ({cut}). Evaluate the model you trained.", other[1])
    train_cells = [t["cell"] for t in _sessions(ev) if isinstance(t.get("cell"), int) and t.get("batches")]
    test_cells = [e["cell"] for e in _test_evaluations(ev) if isinstance(e.get("cell"), int)]
    if (_steps(ev) > 0 and train_cells and test_cells and max(test_cells) < min(train_cells)
            and finite(printed) and printed <= near):
        return Untrained("fail", "before",
                         f"your printed test accuracy {fmt_pct(printed)} was measured in cell {max(test_cells)}, "
                         f"before training started in cell {min(train_cells)}, so it is the untrained model's "
                         f"({cut}): evaluate after training.", where(ev, max(test_cells)))
    return None


def trained_models(ev: Mapping) -> set[int] | None:
    """Probe refs of the models this run trained, and of every model sharing their parameters
    (a wrapper around a trained net, the net inside a trained wrapper); None when the record
    cannot say which model was trained (an older probe, an optimizer linked to no model).

    Trained: stepped by an optimizer, or fed MIN_TRAIN_BATCHES batches of training data with
    gradients on (a hand-written update loop; a loop that left the model in eval mode)."""
    trained: set[int] = set()
    for o in ev.get("optimizers") or []:
        if stepped(o) <= 0:
            continue
        linked = [r for r in o.get("model_refs") or [] if isinstance(r, int)]
        if not linked:  # an older record ("model_refs" absent) or a step on no recorded model
            return None
        trained.update(linked)
    fed: Counter = Counter()
    for t in _fed(ev):
        if not isinstance(t.get("model_ref"), int):
            return None
        fed[t["model_ref"]] += int(t.get("batches") or 0)
    trained.update(r for r, n in fed.items() if n >= MIN_TRAIN_BATCHES)
    models = [m for m in ev.get("models") or [] if isinstance(m.get("ref"), int)]
    if any("shares" not in m for m in models):
        return None  # an older record: which models share parameters is unknown
    pairs = [(m["ref"], s) for m in models for s in m.get("shares") or [] if isinstance(s, int)]
    grew = True
    while grew:
        grew = False
        for a, b in pairs:
            if (a in trained) != (b in trained):
                trained.update((a, b))
                grew = True
    return trained


def _restored(ev: Mapping) -> set[int]:
    """Refs of models whose weights came from a file or a copy (load_state_dict, torch.load,
    copy.deepcopy): trained elsewhere as far as the grader can tell."""
    refs = {w.get("model_ref") for w in ev.get("weights_loaded") or []}
    refs |= {m.get("ref") for m in ev.get("models") or [] if m.get("via") not in (None, "forward")}
    return {r for r in refs if isinstance(r, int)}


def _other_model(ev: Mapping) -> tuple[str, str] | None:
    """(what happened, pointer) when training ran but every test evaluation was of a model that
    was neither trained nor given trained weights (`net2` trained, `net` evaluated; `net`
    created again after training)."""
    tested = _test_evaluations(ev)
    if not tested or not all(isinstance(e.get("model_ref"), int) for e in tested):
        return None
    trained = trained_models(ev)
    if not trained or {e["model_ref"] for e in tested} & (trained | _restored(ev)):
        return None
    first = tested[0]
    name = first.get("model") or first.get("model_class") or "model"
    runs = [t for t in [*(ev.get("training") or []), *(ev.get("optimizers") or [])]
            if t.get("model_ref") in trained and t.get("model")]
    trained_name = runs[0]["model"] if runs else None
    at = f" (cell {runs[0].get('cell')})" if runs and runs[0].get("cell") is not None else ""
    if trained_name == name:
        how = f"training ran on an earlier `{name}`{at}, and the `{name}` evaluated is a new model made after it"
    elif trained_name:
        how = f"training ran on `{trained_name}`{at}, a different model"
    else:
        how = "training ran on a different model"
    return (f"the model evaluated on the test split (`{name}`, cell {first.get('cell')}) was never trained: "
            f"{how}, and no trained weights were copied or loaded into it", where(ev, first.get("cell")))


def untrained_outcome(evidence: Sequence[Mapping], *, dataset: str | None,
                      tolerance: float = CHANCE_TOLERANCE) -> Untrained | None:
    """The verdict for a part: only when every notebook that reports metrics is untrained."""
    found: list[Untrained] = []
    for ev in evidence:
        metrics = ev.get("metrics") or {}
        # the host's evaluation of a model of this part's dataset (another dataset's says nothing here)
        verified = ((verified_for(ev, dataset) if dataset else ev.get("verified")) or {}).get("test_accuracy")
        printed = metrics.get("test_accuracy") if finite(metrics.get("test_accuracy")) else None
        if printed is None:
            per_class = [v for v in (metrics.get("per_class_accuracy") or {}).values() if finite(v)]
            printed = sum(per_class) / len(per_class) if per_class else None
        accuracy = verified if finite(verified) else printed
        if accuracy is None and printed is None:
            continue  # this notebook reports nothing to judge
        verdict = untrained(ev, dataset=dataset, accuracy=accuracy, printed=printed, tolerance=tolerance)
        if verdict is None:
            return None
        found.append(verdict)
    if not found:
        return None
    return next((v for v in found if v.status == "manual"), found[0])
