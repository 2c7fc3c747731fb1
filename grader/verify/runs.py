"""One model per training run, evaluated by the host: the `verified_runs` of evidence.json.

The teardown (grader/probe/rec_export.py `_export_runs`) captures, for each optimizer that
stepped, the model it trained as it was at the end of its run, next to the primary capture
(`run<k>.pt`, described in spec.json's `runs`). The evaluator predicts every test image with each
of them, on the same images as the primary model, in a second sandboxed run after the primary's
in the time left (grader.verify.host `_evaluate_runs`: they never cost the primary verification);
here the host scores them with the labels it alone holds. The evaluator also measures each run
model's structure (grader.verify.evaluator `_eval_facts`): the parameters' digest, which tells
two runs that are one model apart exactly, the parameter shapes and the operators of its graph;
`check_facts` validates them and `runs_block` puts them in the run's entry. A learning-rate study counts a run only
when its model is in this list, trained (above chance) and unlike the other runs' models
(grader.checks.figures.lr_study); the probe's records of the run are hints only.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader.parsers.classes import CLASS_SETS
from grader.verify.archive import model_format
from grader.verify.data import Split
from grader.verify.spec import NotVerified, is_int, regular

MAX_RUN_MODEL_BYTES = 512 << 20
"""One run model's file size at most (bytes); the kernel keeps 128 MiB of them together."""
MIN_SAMPLE_AGREEMENT = 0.95
"""As the primary capture's cross-check (grader.verify.host.MIN_AGREEMENT)."""
MAX_SHAPES = 256
"""Parameters in `shapes` at most (grader.verify.evaluator.MAX_PARAMETERS)."""
MAX_OPS = 64
"""Operator names in `ops` at most (grader.verify.evaluator.MAX_OP_NAMES)."""
_DIGEST = re.compile(r"[0-9a-f]{64}")
_OP = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,79}")


def run_files(folder: Path, runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """spec.json's validated `runs` (grader.verify.spec.runs_of), each with the host `path` and
    `format` of its model file, or a `reason` why it cannot be evaluated."""
    out: list[dict[str, Any]] = []
    for r in runs:
        entry: dict[str, Any] = {"optimizer": r.get("optimizer")}
        if "error" in r:
            entry["reason"] = str(r["error"])
            out.append(entry)
            continue
        entry.update({"class": r["class"], "sample_preds": r["sample_preds"]})
        try:
            path = folder / r["file"]
            regular(path, MAX_RUN_MODEL_BYTES, "captured run model file")
            entry.update(path=path, format=model_format(path))
        except NotVerified as exc:
            entry["reason"] = str(exc)
        out.append(entry)
    return out


def check_runs(result: Mapping[str, Any], n_runs: int, count: int) -> list[list[int] | str]:
    """The evaluator's `runs` (grader.verify.evaluator): per run its predictions (one int per
    input image) or why there are none; a malformed entry is a reason, not an error."""
    if not n_runs:
        return []
    runs = result.get("runs")
    if not (isinstance(runs, list) and len(runs) == n_runs):
        return ["the evaluator's result holds no predictions of the run models"] * n_runs
    out: list[list[int] | str] = []
    for r in runs:
        preds = r.get("predictions") if isinstance(r, dict) else None
        if isinstance(preds, list) and len(preds) == count and all(is_int(p) for p in preds):
            out.append(preds)
        elif isinstance(r, dict) and isinstance(r.get("error"), str):
            out.append("the evaluator could not run its model (" + r["error"][:200] + ")")
        else:
            out.append("the evaluator's result for its model is malformed")
    return out


def check_facts(facts: Any) -> dict[str, Any] | str:
    """One model's `facts` from the evaluator (grader.verify.evaluator `_eval_facts`), validated:
    `{digest, shapes, ops, ops_complete}`, or why there are none (the evaluator's error, or a
    malformed block: none of it is kept then)."""
    if isinstance(facts, dict) and set(facts) == {"error"} and isinstance(facts["error"], str):
        return "the evaluator could not measure its structure (" + facts["error"][:200] + ")"
    if not (isinstance(facts, dict) and set(facts) == {"digest", "shapes", "ops", "ops_complete"}):
        return "the evaluator's structure of its model is malformed"
    shapes, ops = facts["shapes"], facts["ops"]
    ok = (isinstance(facts["digest"], str) and _DIGEST.fullmatch(facts["digest"]) is not None
          and isinstance(shapes, dict) and len(shapes) <= MAX_SHAPES
          and all(isinstance(k, str) and 0 < len(k) <= 300 and isinstance(v, list) and len(v) <= 8
                  and all(is_int(d) for d in v) for k, v in shapes.items())
          and isinstance(ops, dict) and len(ops) <= MAX_OPS
          and all(isinstance(k, str) and _OP.fullmatch(k) is not None and is_int(v) and v > 0 for k, v in ops.items())
          and isinstance(facts["ops_complete"], bool))
    if not ok:
        return "the evaluator's structure of its model is malformed"
    return {"digest": facts["digest"], "shapes": {k: list(v) for k, v in shapes.items()}, "ops": dict(ops),
            "ops_complete": facts["ops_complete"]}


def run_facts(result: Mapping[str, Any], n_runs: int) -> list[dict[str, Any] | str]:
    """`check_facts` of the evaluator result's primary model, then of each of its `n_runs` run
    models (in the order of `runs`): the structure of every model the evaluator ran, in order."""
    runs = result.get("runs")
    runs = runs if isinstance(runs, list) and len(runs) == n_runs else [None] * n_runs
    return [check_facts(result.get("facts"))] + [
        check_facts(r.get("facts")) if isinstance(r, dict) and "predictions" in r
        else "the evaluator did not run its model" for r in runs]


def _accuracy(split: Split, preds: Sequence[int], mapping: Sequence[int]) -> float:
    right = sum(int(0 <= p < len(mapping) and mapping[p] == y) for p, y in zip(preds, split.labels))
    return round(right / len(split), 4)


def runs_block(runs: Sequence[Mapping[str, Any]], run_preds: Sequence[list[list[int]] | str],
               job: Mapping[str, Any], visible: Split, held: Split | None,
               facts: Sequence[Mapping[str, Any] | str] = ()) -> list[dict[str, Any]]:
    """`verified_runs`: per captured run `{optimizer, model, test_accuracy, n, hidden_accuracy,
    hidden_n, classes, predicted_classes, agreement, digest, shapes, ops, ops_complete}`
    (accuracies are fractions 0..1 the host computed; `agreement` maps each other evaluated
    run's optimizer ref, as a string, to the fraction 0..1 of test and hidden images both models
    put in the same class; `digest`, `shapes`, `ops` are its model's structure as the evaluator
    measured it, `check_facts`: absent, and `facts_reason` said, when it could not), or
    `{optimizer, reason}` when its model could not be captured or evaluated. `facts` go with
    `run_preds`, one per evaluated run (those with a `path`)."""
    out: list[dict[str, Any]] = []
    flat: dict[int, list[int]] = {}
    index = {k: i for i, k in enumerate(visible.keys)}
    preds_of = iter(run_preds)
    facts_of = iter(facts)
    for r in runs:
        entry: dict[str, Any] = {"optimizer": r.get("optimizer")}
        if "path" not in r:
            entry["reason"] = r.get("reason") or "its model was not captured"
            out.append(entry)
            continue
        got = next(preds_of, "the evaluator returned nothing for its model")
        measured = next(facts_of, "the evaluator measured no structure of its model")
        if isinstance(got, str):
            entry["reason"] = got
            out.append(entry)
            continue
        pairs = [(got[0][index[k]], p) for k, p in zip(job["sample_keys"], r["sample_preds"]) if k in index]
        if pairs and sum(a == b for a, b in pairs) < MIN_SAMPLE_AGREEMENT * len(pairs):
            entry["reason"] = ("its captured model predicted differently from the notebook's own on the sampled test "
                               "images, so its capture could not be reproduced faithfully")
            out.append(entry)
            continue
        entry.update({"model": r["class"], "test_accuracy": _accuracy(visible, got[0], job["mapping"]),
                      "n": len(visible), "classes": len(CLASS_SETS[job["kind"]]),
                      "predicted_classes": len(set(got[0]))})
        if held is not None and len(got) > 1:
            entry.update(hidden_accuracy=_accuracy(held, got[1], job["mapping"]), hidden_n=len(held))
        if isinstance(measured, Mapping):
            entry.update(measured)
        else:
            entry["facts_reason"] = measured
        flat[len(out)] = [p for split in got for p in split]
        out.append(entry)
    for a, b in itertools.combinations(sorted(flat), 2):
        same = sum(x == y for x, y in zip(flat[a], flat[b])) / max(1, len(flat[a]))
        out[a].setdefault("agreement", {})[str(out[b]["optimizer"])] = round(same, 4)
        out[b].setdefault("agreement", {})[str(out[a]["optimizer"])] = round(same, 4)
    for i in flat:
        out[i].setdefault("agreement", {})
    return out
