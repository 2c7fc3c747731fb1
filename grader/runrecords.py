"""One record per training run of a notebook (`evidence["runs"]`, grader.evidence_model.Run),
built on the host from what the probe recorded and what the host measured.

A run is an optimizer the notebook built (`optimizers[]`, one per optimizer object, so a
reused variable name or a loop over settings gives one run each), plus a model that trained
with no optimizer and crashed. Per run: the structure of its model (grader.runstructure), its
optimizer and learning rate, epochs (samples trained / training-set length) and batches, batch
size (its loader's), loss function, the curves and final metrics it printed (grader.runtext),
the host's evaluation of its captured model (`verified_runs`, joined by optimizer ref), a check
of the printed accuracy against it, and its status. Every value is a hint the student's process
reported except `verified` and a structure whose `source` is `host`; None means unknown.

Saved mode (nothing ran): one run per cell that printed a curve or a test accuracy (several
when its printed epoch counter restarts), from the printed lines only, status `not-run`.

`build_runs` is pure on the evidence dict; `notebook` (the executed notebook, or the saved one)
gives the cells' stdout to cut at the probe's offsets and the code a typed number is looked for
in. Without it the printed lines kept in `metrics.mentions` stand for the outputs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader import regularizers, runstructure, runtext
from grader.parsers.curves import downsample

__all__ = ["build_runs", "runs_for"]

MAX_RUNS = 64
"""Runs kept per notebook (the first that stepped)."""
MAX_CURVE_POINTS = 500
"""Points kept per curve of a run (min-max decimation, grader.parsers.curves.downsample)."""
_VERIFIED_KEYS = ("test_accuracy", "n", "hidden_accuracy", "hidden_n", "digest", "reason",
                  # the gap on the student's own split (grader.verify.splits.GAP_KEYS)
                  "train_accuracy", "train_n", "train_files", "val_accuracy", "val_n", "val_files", "gap",
                  "gap_transform", "gap_agreement", "val_overlap", "gap_note", "gap_reason")


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _recs(ev: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [r for r in ev.get(key) or [] if isinstance(r, Mapping)]


def _same_weights(a: object, b: object) -> bool:
    """Two [sum, L2 norm] checksums (the probe's) that are one set of weights."""
    return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b) == 2
            and all(_num(x) is not None for x in a + b)
            and all(abs(x - y) <= 1e-9 * max(1.0, abs(x)) for x, y in zip(a, b)))


def _span(rec: Mapping[str, Any]) -> tuple[int, int] | None:
    at = rec.get("out_at")
    if isinstance(at, list) and len(at) == 2 and all(_int(x) is not None for x in at):
        return at[0], at[1]
    return None


def _sessions(ev: Mapping[str, Any], o: Mapping[str, Any], refs: set[int]) -> list[Mapping[str, Any]]:
    """The training passes of optimizer `o`: of its models, in the cells it stepped in, inside
    its first..last step when both carry offsets."""
    stepped = {c for c in o.get("cells_stepped") or [] if _int(c) is not None}
    span = _span(o)
    out = []
    for t in _recs(ev, "training"):
        if t.get("model_ref") not in refs or (stepped and t.get("cell") not in stepped):
            continue
        ts = _span(t)
        if span and ts and len(stepped) == 1 and (ts[1] < span[0] or ts[0] > span[1]):
            continue
        out.append(t)
    return out


def _batch_size(ev: Mapping[str, Any], sessions: Sequence[Mapping[str, Any]]) -> int | None:
    """The batch size of the loader its passes drew from (a loader named as theirs, of their
    dataset; among several of one name, those whose size fits every pass: batches = ceil(samples
    / size)); without one, samples / batches when that divides. None when it cannot be told."""
    sizes: set[int] = set()
    for t in sessions:
        names = set(t.get("loader") or [])
        sizes |= {d["batch_size"] for d in _recs(ev, "dataloaders") if _int(d.get("batch_size"))
                  and names & set(d.get("loader") or d.get("names") or [])
                  and (not t.get("dataset") or d.get("dataset") in (None, t.get("dataset")))}
    passes = [(s, b) for t in sessions if (s := _int(t.get("samples"))) and (b := _int(t.get("batches")))]
    if len(sizes) > 1:
        sizes = {z for z in sizes if all(-(-s // z) == b for s, b in passes)}
    if len(sizes) == 1:
        return sizes.pop()
    samples, batches = sum(s for s, _ in passes), sum(b for _, b in passes)
    return samples // batches if not sizes and batches and samples % batches == 0 else None


def _training_facts(ev: Mapping[str, Any], sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """epochs, full_epochs, samples, train_dataset, batch_size, loss and the recorded loss curve."""
    samples = [_int(t.get("samples")) for t in sessions]
    lengths = [_int(t.get("dataset_length")) for t in sessions]
    total = sum(s or 0 for s in samples) if sessions and None not in samples else None
    known = sessions and all(n for n in lengths)
    epochs = round(sum((s or 0) / n for s, n in zip(samples, lengths) if n), 2) if known and total is not None else None
    full = sum(1 for s, n in zip(samples, lengths) if n and s is not None and s >= n) if known else None
    data = Counter(str(t["dataset"]) for t in sessions if t.get("dataset"))
    losses = Counter(str(t["loss"]) for t in sessions if t.get("loss"))
    curve, x, diverged = [], 0.0, False
    for t, s, n in zip(sessions, samples, lengths):
        x = x + s / n if s is not None and n else x + 1
        ls, ln = _num(t.get("loss_sum")), _int(t.get("loss_n"))
        if ls is not None and ln:
            curve.append([round(x, 3), ls / ln])
        diverged = diverged or bool(ln and "loss_sum" in t and ls is None)  # the probe's None: not finite
    return {"epochs": epochs, "full_epochs": full, "samples": total,
            "train_dataset": data.most_common(1)[0][0] if data else None,
            "batch_size": _batch_size(ev, sessions), "loss": losses.most_common(1)[0][0] if losses else None,
            "curve": curve, "diverged": diverged}


def _verified(ev: Mapping[str, Any], ref: int | None) -> dict[str, Any]:
    runs = _recs(ev, "verified_runs")
    entry = next((r for r in runs if ref is not None and r.get("optimizer") == ref), None)
    gap = next((str(r["gap_reason"]) for r in runs if r.get("optimizer") is None and r.get("gap_reason")), None)
    if entry is not None:
        return {**({"gap_reason": gap} if gap else {}),
                **{k: entry[k] for k in _VERIFIED_KEYS if entry.get(k) is not None}}
    general = next((str(r["reason"]) for r in runs if r.get("optimizer") is None and r.get("reason")), None)
    return {"reason": general or "its model was not captured for the grader's own evaluation",
            **({"gap_reason": gap} if gap else {})}


def _architecture(ev: Mapping[str, Any], ref: int | None) -> dict[str, Any]:
    from grader.verify.arch import for_run  # the record of its model (grader.verify.arch)

    return for_run(ev, ref)


def _order_key(o: Mapping[str, Any], pos: int) -> tuple:
    stepped = [c for c in o.get("cells_stepped") or [] if _int(c) is not None]
    first = min(stepped) if stepped else (_int(o.get("cell")) or 0)
    span = _span(o)
    return (first, span[0] if span else math.inf, pos)


def _run_of_optimizer(ev: Mapping[str, Any], o: Mapping[str, Any], models: Mapping[int, Mapping]) -> dict[str, Any]:
    refs = _refs(o)
    sessions = _sessions(ev, o, set(refs))
    facts = _training_facts(ev, sessions)
    ref = _int(o.get("ref"))
    verified = _verified(ev, ref)
    entry = next((r for r in _recs(ev, "verified_runs") if ref is not None and r.get("optimizer") == ref), {})
    model = models.get(refs[0]) if refs else None
    if isinstance(entry.get("shapes"), Mapping) and entry["shapes"]:
        structure = runstructure.from_host(entry["shapes"], entry.get("ops"))
    elif model is not None:
        structure = runstructure.from_probe(model)
    else:
        structure = {}
    changes = [c for c in o.get("lr_changes") or [] if isinstance(c, list)]
    lr = _num(o.get("lr_first")) or (_num(changes[0][1]) if changes and len(changes[0]) > 1 else None) or _num(o.get("lr"))
    scheds = sorted({str(s.get("type")) for s in _recs(ev, "schedulers")
                     if s.get("optimizer_ref") == ref and ref is not None and (_int(s.get("steps")) or 0) > 0})
    cells = {c for c in o.get("cells_stepped") or [] if _int(c) is not None} | {
        t["cell"] for t in sessions if _int(t.get("cell")) is not None}
    steps = _int(o.get("steps")) or 0
    run = {"optimizer_ref": ref, "model_refs": refs, "structure": structure,
           "optimizer": str(o["type"]) if o.get("type") else None, "lr": lr, "lr_changes": changes,
           "schedulers": scheds, "momentum": _num(o.get("momentum")), "weight_decay": _num(o.get("weight_decay")),
           "epochs": facts["epochs"], "full_epochs": facts["full_epochs"], "samples": facts["samples"],
           "batches": steps if steps else (sum(_int(t.get("batches")) or 0 for t in sessions) or None),
           "batch_size": facts["batch_size"], "train_dataset": facts["train_dataset"], "loss": facts["loss"],
           "metrics": {}, "curves": {"loss (recorded)": facts["curve"]} if facts["curve"] else {},
           "verified": verified, "notes": [], "architecture": _architecture(ev, ref),
           "_cells": cells, "_built": _int(o.get("cell")), "_steps": steps, "_o": o,
           "_model_class": (model or {}).get("class") or o.get("model_class")}
    if len(refs) > 1:
        run["notes"].append(f"one optimizer for {len(refs)} models")
    if facts["diverged"]:
        run["notes"].append("its recorded loss was not finite (the run diverged)")
    stepped = sorted(c for c in o.get("cells_stepped") or [] if _int(c) is not None)
    if len(stepped) > 1:
        run["notes"].append("stepped in several cells (" + ", ".join(f"In[{c}]" for c in stepped)
                            + "): its epochs add up")
    return run


def _with_checkpoints(ev: Mapping[str, Any], run: dict[str, Any]) -> list[dict[str, Any]]:
    """A run whose model was tested on the test split and then trained further in a later cell
    (10 epochs, test, 20 more) is two runs: the state that was tested (its own record, which the
    grader could not evaluate: only the end of a run is captured) and the continued one."""
    o = run["_o"]
    stepped = sorted(c for c in o.get("cells_stepped") or [] if _int(c) is not None)
    refs = set(run["model_refs"])
    tested = sorted({e["cell"] for e in _recs(ev, "evaluations") if e.get("model_ref") in refs
                     and e.get("split") in ("test", None) and _int(e.get("cell")) is not None})
    out = []
    for i, cell in enumerate(stepped[:-1]):
        at = [c for c in tested if cell <= c < stepped[i + 1]]
        if not at:
            continue
        part = {**o, "cells_stepped": stepped[:i + 1], "out_at": None, "ref": None, "steps": None}
        sessions = _sessions(ev, part, refs)
        facts = _training_facts(ev, sessions)
        early = {**run, "optimizer_ref": None, "notes": [f"its model as In[{cell}] left it, tested in In[{at[-1]}], then trained further"],
                 "epochs": facts["epochs"], "full_epochs": facts["full_epochs"], "samples": facts["samples"],
                 "batches": sum(_int(t.get("batches")) or 0 for t in sessions) or None, "metrics": {},
                 "curves": {"loss (recorded)": facts["curve"]} if facts["curve"] else {},
                 "verified": {"reason": "the grader evaluates the model a run ends with; this earlier state of it "
                                        "was tested only by the notebook"},
                 "_cells": set(stepped[:i + 1]) | {c for c in at}, "_steps": _int(o.get("steps")) or 0,
                 "_o": part, "_until": at[-1], "_left": cell}
        out.append(early)
    if out:
        run["notes"].append("trained further after a test: " + ", ".join(
            f"its model as In[{r['_left']}] left it (tested in In[{r['_until']}]) is a run of its own" for r in out))
        run["_cells"] = {c for c in run["_cells"] if c > out[-1]["_until"]} or run["_cells"]
    return [*out, run]


def _crashed_models(ev: Mapping[str, Any], owned: set[int], models: Mapping[int, Mapping]) -> list[dict[str, Any]]:
    """Models no optimizer trained that went through a training pass in a cell that failed."""
    failed = {e.get("cell") for e in _recs(ev, "errors")}
    out = []
    for ref, m in models.items():
        passes = [t for t in _recs(ev, "training") if t.get("model_ref") == ref and t.get("cell") in failed]
        if ref in owned or not passes:
            continue
        out.append({"optimizer_ref": None, "model_refs": [ref], "structure": runstructure.from_probe(m),
                    "optimizer": None, "metrics": {}, "curves": {}, "verified": {"reason": "no optimizer stepped"},
                    "notes": [], "_cells": {t["cell"] for t in passes}, "_built": _int(m.get("cell")), "_steps": 0,
                    "_o": {}, "_model_class": m.get("class")})
    return out


def _status(ev: Mapping[str, Any], runs: list[dict[str, Any]]) -> None:
    """status and error of each run: an error in a cell where it trained (or, never stepped, in
    the cell it was built in or a later one where its model was used) is its crash, unless
    another run came after it in that cell (the error ended the cell: it stopped the last run
    in it), or it finished a full pass and printed metrics or was evaluated after it (then the
    error came after its training: a note). Else not-trained when it never stepped or its steps
    changed no weight, else trained."""
    errors = {e.get("cell"): e for e in _recs(ev, "errors") if _int(e.get("cell")) is not None}

    def cells_of(run: Mapping[str, Any]) -> set[int]:
        return set(run["_cells"]) | ({run["_built"]} if run["_built"] is not None and not run["_steps"] else set())

    for k, run in enumerate(runs):
        cells = cells_of(run)
        later_in = {c for r in runs[k + 1:] for c in cells_of(r)}  # the error ended the cell: the last run in it
        hit = sorted(c for c in cells if c in errors and c not in later_in)
        o = run["_o"]
        if hit:
            e = errors[hit[0]]
            err = {"cell": hit[0], "ename": e.get("ename"), "evalue": str(e.get("evalue") or "")[:300]}
            done = run["_steps"] and run.get("full_epochs") and (run["metrics"] or run.get("_evaluated"))
            if not done:
                run["status"], run["error"] = "crashed", err
                continue
            run["notes"].append(f"an error followed its training in In[{hit[0]}] ({err['ename']}: "
                                f"{err['evalue'][:120]})")
        if not run["_steps"] or o.get("weights_changed") is False:
            run["status"] = "not-trained"
        else:
            run["status"] = "trained"


def _signature(run: Mapping[str, Any]) -> tuple:
    s = run.get("structure") or {}
    acts = s.get("activations")
    return (s.get("kind"), s.get("linear_layers"), tuple(s.get("hidden_widths") or ()),
            tuple(s.get("conv_channels") or ()), tuple(sorted(acts.items())) if isinstance(acts, dict) else None,
            run.get("optimizer"), run.get("lr"), tuple(run.get("schedulers") or ()), run.get("momentum"),
            run.get("weight_decay"), run.get("epochs"), run.get("batch_size"), run.get("loss"), run.get("train_dataset"))


def _relate(runs: list[dict[str, Any]], cells: runtext.Cells) -> None:
    """Notes and statuses between runs: continued training (its start weights are another run's
    end), superseded (the same configuration run again later by the same code: the later
    counts), repeats (the same configuration in another cell, or a loop)."""
    for run in runs:
        o = run["_o"]
        src = next((p for p in runs if p is not run and p["_o"].get("weights_changed") is True
                    and not _same_weights(p["_o"].get("checksum_start"), p["_o"].get("checksum_now"))
                    and _same_weights(o.get("checksum_start"), p["_o"].get("checksum_now"))), None)
        if src is not None:
            run["notes"].append(f"continued training of {src['name']} (it began from the weights {src['name']} "
                                f"ended with)")

    def code(run: Mapping[str, Any]) -> tuple:
        idx = [cells.index.get(c) for c in sorted(run["_cells"])]
        return tuple(cells.sources[i].strip() if i is not None and i < len(cells.sources) and cells.sources[i].strip()
                     else ("#", i) for i in idx)

    for k, late in enumerate(runs):
        if late.get("status") not in ("trained", "not-trained") or not late["_cells"]:
            continue
        for early in runs[:k]:
            if early.get("status") not in ("trained", "not-trained") or _signature(early) != _signature(late):
                continue
            if code(early) == code(late) and max(early["_cells"]) < min(late["_cells"]):
                early["status"] = "superseded"
                early["notes"].append(f"superseded by {late['name']}: the same configuration run again by the same "
                                      f"code later")
            elif not any(n.startswith("same configuration") for n in late["notes"]):
                late["notes"].append(f"same configuration as {early['name']}")


def _attribute_output(ev: Mapping[str, Any], runs: list[dict[str, Any]], cells: runtext.Cells) -> None:
    """Each run's printed curves and final metrics (grader.runtext), from the cells' stdout cut
    at the probe's offsets, else read by cell."""
    # a cell's stdout where the host has it (what the offsets count), else the metric lines the
    # evidence kept of it (a result or a table it displayed, or no notebook at hand)
    texts = {**cells.mention_text(ev), **cells.stdout}
    cut = {c.get("cell") for c in _recs(ev, "output_truncated_cells")}
    evals = _recs(ev, "evaluations")
    owners: dict[int, list[int]] = {}  # cell -> runs whose lines it may hold
    marks: dict[int, list[tuple[int, int, str]]] = {}
    on_test: dict[int, list[int]] = {}  # cell -> the run of each test-split evaluation, in order
    for k, run in enumerate(runs):
        span = _span(run["_o"])
        for c in run["_cells"]:
            owners.setdefault(c, []).append(k)
        # the offsets count the stdout of the cells it first and last stepped in
        stepped = [c for c in run["_o"].get("cells_stepped") or [] if _int(c) is not None]
        if span and stepped:
            marks.setdefault(stepped[0], []).append((span[0], k, "first"))
            marks.setdefault(stepped[-1], []).append((span[1], k, "last"))
    # evaluations of a run's model after it stepped, before the next run on that model stepped
    for e in evals:
        c = e.get("cell")
        if _int(c) is None:
            continue
        mine = [k for k, r in enumerate(runs) if e.get("model_ref") in r["model_refs"]
                and (min(r["_cells"]) if r["_cells"] else math.inf) <= c]
        if not mine:
            continue
        k = mine[-1]
        runs[k]["_evaluated"] = True
        runs[k].setdefault("_eval_cells", set()).add(c)
        if e.get("split") in ("test", None):
            on_test.setdefault(c, []).append(k)
        if k not in owners.setdefault(c, []):
            owners[c].append(k)
        if _span(e):
            marks.setdefault(c, []).append((_span(e)[0], k, "eval"))
    for c, ks in sorted(owners.items()):
        text = texts.get(c)
        if not text:
            continue
        ks = sorted(set(ks))
        exact = c in cells.stdout and c not in cut
        parts = runtext.split_cell(text, marks.get(c, [])) if exact and len(ks) > 1 else None
        shares = ({k: runtext.read_segment(t, c) for k, t in parts.items()} if parts is not None
                  else runtext.whole_cell(text, ks, c, on_test.get(c, ())))
        for k, seg in shares.items():
            run = runs[k]
            for series, pts in seg["curves"].items():
                run["curves"].setdefault(f"{series} (printed)", []).extend(pts)
            for kind, v in seg["metrics"].items():
                run["metrics"][kind] = v
                run.setdefault("_lines", {})[kind] = (seg["lines"].get(kind), c)
        if parts is not None:
            _results_after_the_loop(runs, ks, parts.get(ks[-1], ""), c)
    _summary_cells(runs, texts, owners)


def _results_after_the_loop(runs: list[dict[str, Any]], ks: Sequence[int], tail: str, cell: int) -> None:
    """A loop cell that trains runs silently and prints one test accuracy per run after the loop:
    those lines fall after the last run's last step, but they are every run's, in run order."""
    tests = runtext.test_accuracies(tail)
    if len(tests) != len(ks) or any("test_accuracy" in runs[k]["metrics"] for k in ks[:-1]):
        return
    for k, m in zip(ks, tests):
        runs[k]["metrics"]["test_accuracy"] = m.value
        runs[k].setdefault("_lines", {})["test_accuracy"] = (m.raw, cell)


def _summary_cells(runs: list[dict[str, Any]], texts: Mapping[int, str], owners: Mapping[int, Any]) -> None:
    """A cell after every run that neither trains nor evaluates and prints exactly one test
    accuracy per run still without one (results kept in variables, or typed in): those are the
    runs' own, in run order, so typed numbers are checked against their models too."""
    last = max((c for r in runs for c in r["_cells"]), default=None)
    for c, text in sorted(texts.items()):
        if last is None or c in owners or c <= last or not text:
            continue
        waiting = [k for k, r in enumerate(runs) if r["_cells"] and "test_accuracy" not in r["metrics"]]
        if not waiting:
            return
        tests = runtext.test_accuracies(text)
        if len(tests) != len(waiting):
            continue
        for k, m in zip(waiting, tests):
            runs[k]["metrics"]["test_accuracy"] = m.value
            runs[k].setdefault("_lines", {})["test_accuracy"] = (m.raw, c)


def _finish(run: dict[str, Any], k: int, cells: runtext.Cells) -> dict[str, Any]:
    line, cell = (run.get("_lines") or {}).get("test_accuracy", (None, None))
    check = runtext.printed_check(run["metrics"].get("test_accuracy"), line, run.get("verified") or {},
                                  cells.earlier_code(cell))
    out = {k2: v for k2, v in run.items() if not k2.startswith("_")}
    out["curves"] = {name: downsample(pts, MAX_CURVE_POINTS) for name, pts in (run.get("curves") or {}).items()}
    out["name"] = run.get("name") or f"run {k + 1}"
    out["cells"] = sorted(set(run["_cells"]) | run.get("_eval_cells", set()))
    out["printed_check"] = check
    out["label"] = runstructure.label(run.get("structure") or {}, run.get("optimizer"), run.get("lr"),
                                      run.get("epochs"), run.get("_model_class"))
    return out


def _refs(o: Mapping[str, Any]) -> list[int]:
    return [r for r in o.get("model_refs") or ([o["model_ref"]] if _int(o.get("model_ref")) else []) if _int(r)]


def _adopt(ev: Mapping[str, Any], opts: list[tuple[Mapping[str, Any], int]],
           models: Mapping[int, Mapping]) -> list[tuple[Mapping[str, Any], int]]:
    """An optimizer that never stepped knows no model (the probe learns its models at a step):
    it is given the model no optimizer owns that went through a training pass in the cell it
    was built in, or the first later one (a run that crashed in its first batch is one run)."""
    owned = {r for o, _ in opts for r in _refs(o)}
    out = []
    for o, i in opts:
        built = _int(o.get("cell"))
        if not _refs(o) and not o.get("steps") and built is not None:
            passes = sorted((t["cell"], t["model_ref"]) for t in _recs(ev, "training")
                            if _int(t.get("cell")) is not None and t["cell"] >= built
                            and t.get("model_ref") in models and t.get("model_ref") not in owned)
            if passes:
                owned.add(passes[0][1])
                o = {**o, "model_refs": [passes[0][1]]}
        out.append((o, i))
    return out


def build_runs(evidence: Mapping[str, Any], *, notebook: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The notebook's training runs as `Run` dumps (grader.evidence_model.Run), numbered in the
    order they first stepped. `notebook`: the executed notebook (or, saved mode, the stored one)
    as nbformat's dict, for the cells' stdout and code; optional. Never raises on odd records."""
    cells = runtext.Cells(evidence, notebook)
    if evidence.get("mode") == "saved":
        return [_finish(r, k, cells) for k, r in enumerate(runtext.saved_runs(evidence, cells)[:MAX_RUNS])]
    models = {m["ref"]: m for m in _recs(evidence, "models") if _int(m.get("ref")) is not None}
    opts = _adopt(evidence, [(o, i) for i, o in enumerate(_recs(evidence, "optimizers"))], models)
    runs = [r for o, _ in sorted(opts, key=lambda p: _order_key(p[0], p[1]))
            for r in _with_checkpoints(evidence, _run_of_optimizer(evidence, o, models))][:MAX_RUNS]
    owned = {r for run in runs for r in run["model_refs"]}
    runs += _crashed_models(evidence, owned, models)[:max(0, MAX_RUNS - len(runs))]
    for k, run in enumerate(runs):
        run["name"] = f"run {k + 1}"
    _attribute_output(evidence, runs, cells)
    _status(evidence, runs)
    _relate(runs, cells)
    regularizers.attach(evidence, runs, cells)  # Run.regularizers: what regularized each run's steps
    return [_finish(r, k, cells) for k, r in enumerate(runs)]


def runs_for(evidence: dict[str, Any], notebook_path: Path | None) -> list[dict[str, Any]]:
    """`build_runs` with the notebook at `notebook_path` read when it is there (the executed
    notebook of the run folder); an unreadable one is left out. Should building fail (a bug of
    ours on odd records), no runs, and a line in `evidence["warnings"]` saying why."""
    import json

    nb = None
    if notebook_path is not None and Path(notebook_path).is_file():
        try:
            nb = json.loads(Path(notebook_path).read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError, RecursionError):
            nb = None
    from grader.evidence_model import Run

    problem = None
    try:
        runs = build_runs(evidence, notebook=nb if isinstance(nb, dict) else None)
    except Exception as e:  # noqa: BLE001 - run records are for people and checks: never lose the grade
        runs, problem = [], f"{type(e).__name__}: {str(e)[:200]}"
    kept = []
    for run in runs:  # a record the schema refuses would make the whole evidence invalid
        try:
            Run.model_validate(run)
            kept.append(run)
        except ValueError as e:
            problem = f"{run.get('name')}: {str(e).splitlines()[0][:200]}"
    regularizers.annotate(evidence, kept)  # notes for a TA: pretrained weights, a model selected on the test split
    if problem:
        warnings = evidence.setdefault("warnings", [])
        if isinstance(warnings, list):
            warnings.append(f"run records could not be built in full: {problem}")
    return kept
