"""Whether a training run the probe recorded is one the host confirms (moved from lrstudy).

Shared by the learning-rate study (grader.checks.lrstudy) and the run comparison
(grader.checks.runcompare): the probe's records are hints the student's code could write,
so a run counts only when they hold together and the host's own evaluation of its model backs it.
"""

from __future__ import annotations

import math
from typing import Mapping


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
    stepped = [x for x in ev.get("optimizers") or [] if isinstance(x, Mapping) and (x.get("steps") or 0) > 0]
    if entry is None and not runs and len(stepped) < 2:
        # grader.probe.rec_runs captures run models only when two or more optimizers stepped
        return "it is the notebook's only training run, so there is no other run to compare it with"
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
