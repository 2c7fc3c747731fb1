"""Sections: the cells of one notebook that belong to one experiment, and the evidence of each.

A notebook may hold a whole lab (LAB 1-1 on CIFAR-10, then LAB 1-2 on Food-11, then LAB 1-3
back on CIFAR-10). `split` assigns its cells to sections, `view` cuts the notebook's evidence
down to some of its sections so that every check reads only that section's lines.

How cells are assigned (the same steps in both modes; only step 1's source differs):

1. Label the cells that trained or evaluated on a dataset: in execute mode the probe's
   training and evaluation sessions (the dataset each cell really read); in saved mode the
   static reading of the code (`grader.cellflow`: a dataset constructor, a path, or a
   variable bound to one), since nothing ran.
2. Labeled cells form sections in order. A cell joins the latest section on its dataset,
   unless a heading naming another part of the lab lies between them (`## LAB 1-3` after
   `## LAB 1-2`, whatever the models: helpers may hide them), or it works on models that
   section never used *and* something tells them apart: another dataset's section, a
   heading as prominent as the one that opened the section, or one of the two trying
   several learning rates or a schedule while the other does a single run (LAB 1-3's
   study right after LAB 1-1, no heading at all). So a second CIFAR-10 experiment is a
   section of its own, while `## Test` between training and testing the same model, or a
   fresh model retrained at the same rate, is not.
3. Every other code cell goes with the section(s) that read what it defines (the model's
   class, the data loaders: a setup cell shared by two sections belongs to both), else with
   the one dataset its code names, else with the section whose results it reads (a plot of
   `net`'s weights), else with the section before it. Headings go with what follows them.

A notebook with fewer than two sections gets `sections: []`: it is graded as a whole,
exactly as before sections existed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from grader.cellflow import CellFacts, model_names, part_named, read_cells
from grader.parsers.classes import CLASS_SETS

# evidence.json lists whose entries carry the cell they happened in.
CELL_KEYS = ("figures", "normalization", "models", "optimizers", "schedulers", "evaluations", "training",
             "stored_cells", "data_use")
RUN_STOPPED = ("killed", "timeout")

Parse = Callable[[Mapping[str, Any], "str | None"], dict]


@dataclass
class _Section:
    dataset: str
    labeled: list[int] = field(default_factory=list)
    models: set[tuple[str, int]] = field(default_factory=set)


def count_index(nb: Mapping[str, Any]) -> dict[int, int]:
    """In[n] -> cell index, for the numbers that appear on exactly one cell."""
    seen: Counter[int] = Counter()
    where: dict[int, int] = {}
    for i, cell in enumerate(nb.get("cells") or []):
        n = cell.get("execution_count") if isinstance(cell, Mapping) else None
        if isinstance(n, int) and not isinstance(n, bool):
            seen[n] += 1
            where[n] = i
    return {n: i for n, i in where.items() if seen[n] == 1}


def place_records(ev: dict[str, Any], nb: Mapping[str, Any]) -> None:
    """Gives each probe record (which knows its In[n]) the index of its cell, in place."""
    index = count_index(nb)
    for key in CELL_KEYS:
        for rec in ev.get(key) or []:
            if isinstance(rec, dict) and "index" not in rec:
                rec["index"] = index.get(rec.get("cell")) if isinstance(rec.get("cell"), int) else None


def probe_labels(ev: Mapping[str, Any]) -> dict[int, tuple[str, set[str]]]:
    """Cell index -> (dataset it trained/evaluated on most, model names it used), from the probe."""
    votes: dict[int, Counter[str]] = {}
    names: dict[int, set[str]] = {}
    for rec in [*(ev.get("training") or []), *(ev.get("evaluations") or [])]:
        i, ds = rec.get("index"), rec.get("dataset")
        if isinstance(i, int) and isinstance(ds, str) and ds:
            votes.setdefault(i, Counter())[ds] += int(rec.get("samples") or 0) or 1
            if rec.get("model"):
                names.setdefault(i, set()).add(str(rec["model"]))
    return {i: (c.most_common(1)[0][0], names.get(i, set())) for i, c in votes.items()}


def static_labels(facts: Sequence[CellFacts]) -> dict[int, tuple[str, set[str]]]:
    """Cell index -> (the one dataset its code reads, no names), for saved notebooks."""
    return {f.index: (next(iter(f.datasets)), set()) for f in facts if f.code and len(f.datasets) == 1}


def _opener_level(facts: Sequence[CellFacts], first: int) -> int:
    for f in reversed(facts[:first]):
        if f.heading:
            return f.heading[0]
    return 6


def _heading_between(facts: Sequence[CellFacts], lo: int, hi: int, level: int) -> bool:
    return any(f.heading and f.heading[0] <= level for f in facts[lo + 1:hi])


def _other_part_between(facts: Sequence[CellFacts], prev: _Section, i: int, new_models: bool) -> bool:
    """A heading naming another part of the lab lies between `prev`'s work and cell `i`: a
    new part begins, on whatever dataset and model (LAB 1-3 may reuse LAB 1-2's Food-11)."""
    # the part the cell sits under: `## LAB 1-1 test` after `## LAB 1-2 train` is LAB 1-1's again
    under = next((p for f in reversed(facts[prev.labeled[-1] + 1:i]) if f.heading and (p := part_named(f.heading[1]))),
                 None)
    if under is None:
        return False
    mine = next((p for f in reversed(facts[:prev.labeled[0]]) if f.heading and (p := part_named(f.heading[1]))),
                None)
    # With no part named before `prev`, a `## 1-1 results` may still be its own part's
    # heading: only new models say a new experiment begins.
    return under != mine if mine is not None else new_models


def probe_rates(ev: Mapping[str, Any]) -> dict[int, tuple[frozenset[float], bool]]:
    """Cell index -> (initial learning rates of the optimizers built there, whether a rate
    changed while training), from the probe's optimizer and scheduler records."""
    out: dict[int, tuple[frozenset[float], bool]] = {}
    for rec in ev.get("optimizers") or []:
        i, lr = rec.get("index"), rec.get("lr")
        if isinstance(i, int):
            rates, decay = out.get(i, (frozenset(), False))
            changed = len(rec.get("lr_changes") or []) > 1 or int(rec.get("n_changes") or 0) > 1
            out[i] = (rates | ({float(lr)} if isinstance(lr, (int, float)) and lr > 0 else set()), decay or changed)
    for rec in ev.get("schedulers") or []:
        if isinstance(i := rec.get("index"), int):
            out[i] = (out.get(i, (frozenset(), False))[0], True)
    return out


def _studies_rates(facts: Sequence[CellFacts], cells: Sequence[int], after: int,
                   rates: Mapping[int, tuple[frozenset[float], bool]]) -> bool:
    """Whether `cells` (with the setup cells after `after` they read) try several learning
    rates or a schedule: a learning-rate study, not a single training run."""
    seen: set[float] = set()
    decay = False
    for c in cells:
        for d in {c, *(d for d in facts[c].deps.values() if after < d <= c)}:
            r, dec = rates.get(d, (frozenset(), False))
            seen |= r | facts[d].rates
            decay |= dec or facts[d].decay
    return len(seen) >= 2 or decay


def _run_from(order: Sequence[int], i: int, ds: str, labels: Mapping[int, tuple[str, set[str]]],
              used: Mapping[int, set[tuple[str, int]]], before: set[tuple[str, int]]) -> list[int]:
    """The labeled cells from `i` on that stay on `ds` and off the models used `before`."""
    run = []
    for j in (j for j in order if j >= i):
        if labels[j][0] != ds or used[j] & before:
            break
        run.append(j)
    return run


def _group(facts: Sequence[CellFacts], labels: Mapping[int, tuple[str, set[str]]],
           rates: Mapping[int, tuple[frozenset[float], bool]] | None = None) -> list[_Section]:
    """Step 2: labeled cells into sections.

    Only cells that use a model decide where sections begin; a labeled cell that only
    loads data (`trainset = CIFAR10(...)`) is placed in step 3, with the section that reads
    what it defines. A dataset none of whose cells uses a model still gets its section.
    `rates` is cell index -> (learning rates, decay) the probe saw (the code's are in `facts`)."""
    rates = rates or {}
    models = model_names(facts)
    used = {i: {(n, facts[i].deps.get(n, i)) for n in (names | (set(facts[i].uses) & models))}
            for i, (_, names) in labels.items()}
    with_model = {labels[i][0] for i in labels if used[i]}
    order = sorted(i for i in labels if used[i] or labels[i][0] not in with_model)
    sections: list[_Section] = []
    latest: _Section | None = None
    for i in order:
        ds = labels[i][0]
        prev = next((s for s in reversed(sections) if s.dataset == ds), None)
        if prev is not None:
            new_models = bool(prev.models and used[i] and not prev.models & used[i])
            shared = bool(prev.models & used[i])
            # one of the two studies the learning rate and the other does not
            flips = _studies_rates(facts, _run_from(order, i, ds, labels, used, prev.models) or [i],
                                   prev.labeled[-1], rates) != \
                _studies_rates(facts, prev.labeled, prev.labeled[0] - 1, rates)
            if _other_part_between(facts, prev, i, new_models):
                # under another part's heading: a new part, unless the same model goes on
                # as before (a test misfiled under the next part's heading)
                if not shared or flips:
                    prev = None
            elif new_models and (latest is not prev or flips or _heading_between(
                    facts, prev.labeled[-1], i, _opener_level(facts, prev.labeled[0]))):
                # other models: a new experiment if another section, a heading as prominent
                # as the section's, or a learning-rate study (LAB 1-3's runs right after
                # LAB 1-1's, no heading) sets them apart
                prev = None
        if prev is None:
            prev = _Section(ds)
            sections.append(prev)
        prev.labeled.append(i)
        prev.models |= used[i]
        latest = prev
    return sections


def _assign(facts: Sequence[CellFacts], sections: list[_Section]) -> dict[int, set[int]]:
    """Step 3: cell index -> the sections (by position) it belongs to."""
    member: dict[int, set[int]] = {}
    labeled = {i: k for k, s in enumerate(sections) for i in s.labeled}
    for i, k in labeled.items():
        member[i] = {k}
    for k, s in enumerate(sections):  # producers: what the section's cells read was defined here
        stack = list(s.labeled)
        while stack:
            c = stack.pop()
            for d in set(facts[c].deps.values()):
                if d == c or d in labeled or k in member.get(d, set()):
                    continue
                if facts[d].datasets and s.dataset not in facts[d].datasets:
                    continue  # another dataset's setup cell is not this section's
                member.setdefault(d, set()).add(k)
                stack.append(d)
    for f in facts:
        if not f.code or f.index in member:
            continue
        k = _nearest_on(sections, f.index, next(iter(f.datasets))) if len(f.datasets) == 1 else None
        if k is None:
            k = _consumer_of(f, member)
        if k is None:
            k = _before(sections, f.index)
        member[f.index] = {k}
    for f in reversed(facts):  # headings and notes go with what follows them
        if not f.code:
            after = next((member[g.index] for g in facts[f.index + 1:] if g.index in member), None)
            member[f.index] = set(after) if after else {_before(sections, f.index)}
    return member


def _nearest_on(sections: Sequence[_Section], index: int, dataset: str) -> int | None:
    on = [k for k, s in enumerate(sections) if s.dataset == dataset]
    before = [k for k in on if sections[k].labeled[0] <= index]
    return (before[-1] if before else on[0]) if on else None


def _consumer_of(f: CellFacts, member: Mapping[int, set[int]]) -> int | None:
    """The section that defined the latest name this cell reads (a plot of its results)."""
    for d in sorted(set(f.deps.values()) - {f.index}, reverse=True):
        owners = member.get(d, set())
        if len(owners) == 1:
            return next(iter(owners))
    return None


def _before(sections: Sequence[_Section], index: int) -> int:
    starts = [(max((i for i in s.labeled if i <= index), default=-1), k) for k, s in enumerate(sections)]
    best = max(starts)
    return best[1] if best[0] >= 0 else min(range(len(sections)), key=lambda k: sections[k].labeled[0])


def _title(facts: Sequence[CellFacts], sections: Sequence[_Section], s: _Section) -> tuple[str | None, list[str]]:
    """The most prominent heading between the previous section's work and this one's, and all
    of them; with none there, the latest heading before it as title, and no headings of its own."""
    first = s.labeled[0]
    prev = max((i for t in sections for i in t.labeled if i < first), default=-1)
    window = [f.heading for f in facts[prev + 1:first] if f.heading]
    if not window:
        inherited = next((f.heading[1] for f in reversed(facts[:first]) if f.heading), None)
        return inherited, []
    top = min(window, key=lambda h: h[0])
    return top[1], [h[1] for h in window][:6]


def _status(cells: Sequence[int], cell_status: Mapping[int, tuple[str, str]], run_status: str,
            run_reason: str) -> tuple[str, str]:
    """A section's own run status: a crash in another section's cells is not this one's."""
    states = {i: cell_status[i] for i in cells if i in cell_status}
    kinds = [s for s, _ in states.values()]
    if kinds and all(s == "not-run" for s in kinds):
        return "not-run", "the run stopped before these cells ran" + (f" ({run_reason})" if run_reason else "")
    if "timeout" in kinds:
        return "timeout", run_reason
    stopped_here = any(s == "not-run" or ename == "DeadKernelError" for s, ename in states.values())
    if run_status in RUN_STOPPED and stopped_here:
        return run_status, run_reason
    if "error" in kinds:
        return "error", ""
    return "ok", ""


def split(nb: Mapping[str, Any], ev: Mapping[str, Any], *, parse: Parse,
          cell_status: Mapping[int, tuple[str, str]]) -> list[dict[str, Any]]:
    """evidence.json's `sections` for a notebook: [] unless it holds two or more experiments.

    `ev` is the notebook's evidence (its probe records already placed, see `place_records`;
    `mode` says whether the probe ran), `parse(notebook, dataset)` reads printed metrics
    (collect's), `cell_status` is cell index -> (status, error name) of each code cell run.
    """
    cells = list(nb.get("cells") or [])
    facts = read_cells(cells)
    probed = ev.get("mode") == "execute" and ev.get("probe") is not None
    labels = probe_labels(ev) if probed else static_labels(facts)
    from_probe = set(labels) if probed else set()
    if probed:
        labels.update(_unseen_labels(ev, facts, labels, cell_status))
    rates = probe_rates(ev) if probed else {}
    sections = _group(facts, labels, rates)
    if len(sections) < 2:
        return []
    member = _assign(facts, sections)
    counts = {i: c.get("execution_count") for i, c in enumerate(cells) if isinstance(c, Mapping)}
    out = []
    for k, s in enumerate(sections):
        mine = sorted(i for i, ks in member.items() if k in ks)
        sub = {**{key: v for key, v in nb.items() if key != "cells"},
               "cells": [c if i in set(mine) else {"cell_type": "markdown", "source": "", "metadata": {}}
                         for i, c in enumerate(cells)]}
        metrics = parse(sub, s.dataset if s.dataset in CLASS_SETS else None)
        dataset = s.dataset if s.dataset in CLASS_SETS else (metrics.get("dataset") or s.dataset)
        title, headings = _title(facts, sections, s)
        status, reason = _status([i for i in mine if facts[i].code], cell_status, str(ev.get("status")),
                                 str(ev.get("reason") or ""))
        out.append({"id": f"s{k + 1}", "dataset": dataset, "cells": mine, "span": [mine[0], mine[-1]],
                    "counts": sorted(n for i in mine if isinstance(n := counts.get(i), int)),
                    "trained": s.labeled, "models": sorted({n for n, _ in s.models}),
                    "title": title, "headings": headings, "basis": "probe" if from_probe & set(s.labeled) else "code",
                    "rate_study": _studies_rates(facts, s.labeled, s.labeled[0] - 1, rates),
                    "status": status, "reason": reason, "metrics": metrics})
    return out


def _unseen_labels(ev: Mapping[str, Any], facts: Sequence[CellFacts], labels: Mapping[int, tuple[str, set[str]]],
                   cell_status: Mapping[int, tuple[str, str]]) -> dict[int, tuple[str, set[str]]]:
    """Executed notebooks: labels read from the code for datasets the probe never saw trained or
    evaluated, only where the run could not show them: cells that raised or never ran (a part
    whose training crashed still has its section), or every cell when the probe recorded no
    data at all. A dataset the code names, or even builds and reads, in cells that ran without
    any of its batches reaching a model (a CIFAR-10 notebook restructuring Food-11's folders
    and opening one image, or computing its mean and std) was looked at, not trained on: no
    section. The run says what the notebook worked on, not its text."""
    seen = {ds for ds, _ in labels.values()}
    built = {d.get("dataset") for d in ev.get("datasets") or [] if isinstance(d, Mapping) and d.get("dataset")}
    stopped = {i for i, (status, _) in cell_status.items() if status in ("error", "timeout", "not-run")}
    nothing = not labels and not built
    return {i: lab for i, lab in static_labels(facts).items()
            if lab[0] not in seen and i not in labels and (nothing or i in stopped)}


def add_sections(ev: dict[str, Any], nb: Mapping[str, Any], *, parse: Parse,
                 cell_status: Mapping[int, tuple[str, str]]) -> None:
    """collect's hook: places the probe's records and adds `sections` to `ev`, in place.
    A fault here costs the split (the notebook is graded whole), never the evidence."""
    try:
        place_records(ev, nb)
        ev["sections"] = split(nb, ev, parse=parse, cell_status=cell_status)
    except Exception as exc:  # noqa: BLE001 - a grader bug must not lose the rest of the evidence
        ev["sections"] = []
        ev.setdefault("warnings", []).append(f"sections not split: {type(exc).__name__}: {exc}"[:300])


def verification_hint(ev: Mapping[str, Any]) -> str | None:
    """The dataset of the model the verifier will capture (the last one evaluated on a test
    split), for a notebook of several sections; the notebook's dataset otherwise."""
    if len(ev.get("sections") or []) < 2:
        return ev.get("dataset")
    tested = [e for e in ev.get("evaluations") or [] if e.get("split") == "test" and e.get("dataset")]
    return tested[-1]["dataset"] if tested else ev.get("dataset")


# ---------------------------------------------------------------- views for grading

_WORST = {"ok": 0, "error": 1, "timeout": 2, "killed": 3, "not-run": 4}


def merge_metrics(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One metrics block from several sections' (in notebook order): what was printed last
    wins, as when the notebook is read as a whole; per-class from the most complete block."""
    if len(parts) == 1:
        return dict(parts[0])
    out: dict[str, Any] = {"dataset": next((p.get("dataset") for p in parts if p.get("dataset")), None),
                           "test_accuracy": None, "test_loss": None, "per_class_accuracy": {},
                           "curves": {}, "mentions": []}
    for p in parts:
        for key in ("test_accuracy", "test_loss"):
            if p.get(key) is not None:
                out[key] = p[key]
        per_class = p.get("per_class_accuracy") or {}
        if per_class and len(per_class) >= len(out["per_class_accuracy"]):
            out["per_class_accuracy"] = dict(per_class)
        for series, points in (p.get("curves") or {}).items():
            out["curves"].setdefault(series, []).extend(points)
        out["mentions"].extend(p.get("mentions") or [])
    out["mentions"] = out["mentions"][-200:]
    errors = [p["parse_error"] for p in parts if p.get("parse_error")]
    if errors:
        out["parse_error"] = "; ".join(errors)
    return out


def _verified(ev: Mapping[str, Any], counts: set[int], dataset: str | None) -> dict[str, Any]:
    """The verified block of this view's model, else why there is none.

    The verifier captures the model tested last on the notebook's last tested dataset
    (`verified`) and the model tested last on each other test set (`verified_more`: another
    dataset, or a part's own `testset` of the same dataset; see grader/probe/rec_runs.py
    export_more); `cell` is the In[n] of that evaluation, and the block belongs to the section
    holding that cell."""
    more = [dict(b) for b in ev.get("verified_more") or [] if isinstance(b, Mapping)]
    for b in more:
        if isinstance(b.get("cell"), int) and b["cell"] in counts:
            return b
    v = dict(ev.get("verified") or {})
    cell = v.get("cell")
    if isinstance(cell, int):
        mine = cell in counts
    elif v.get("dataset"):
        on = [s for s in ev.get("sections") or [] if s.get("dataset") == v["dataset"]]
        mine = v["dataset"] == dataset and len(on) == 1
    else:
        return v  # a reason only, about no model in particular
    if mine:
        return v
    what = ", ".join(str(x) for x in (v.get("model"), v.get("dataset")) if x)
    where = f" in cell In[{cell}]" if isinstance(cell, int) else ""
    return {"reason": f"the grader evaluates again only the model tested last on each dataset; the one it "
                      f"captured{f' ({what}{where})' if what or where else ''} belongs to another "
                      f"section of this notebook, so this section's model was not verified",
            "elsewhere": True}


def view(ev: Mapping[str, Any], ids: Sequence[str]) -> Mapping[str, Any]:
    """`ev` as if the notebook held only the sections `ids`: every list cut to their cells,
    their own metrics, run status and verification. All sections (or none): `ev` itself."""
    chosen = [s for s in ev.get("sections") or [] if s.get("id") in set(ids)]
    if not chosen or len(chosen) == len(ev.get("sections") or []):
        return ev
    cells = {i for s in chosen for i in s.get("cells") or []}
    counts = {n for s in chosen for n in s.get("counts") or []}
    dataset = chosen[0].get("dataset")

    placed = {n for s in ev.get("sections") or [] for n in s.get("counts") or []}

    def inside(rec: Any) -> bool:
        if not isinstance(rec, Mapping):
            return False
        if isinstance(rec.get("index"), int):
            return rec["index"] in cells
        if isinstance(rec.get("cell"), int) and rec["cell"] in placed:
            return rec["cell"] in counts
        return True  # a record no cell can be found for is kept in every section, never lost

    out = dict(ev)
    for key in CELL_KEYS + ("errors",):
        if key in ev:  # a list the evidence lacks stays absent (saved evidence before `data_use`)
            out[key] = [r for r in ev.get(key) or [] if inside(r)]
    for key in ("datasets", "dataloaders"):
        out[key] = [r for r in ev.get(key) or [] if isinstance(r, Mapping) and r.get("dataset") in (dataset, None)]
    status = max((s.get("status") or "ok" for s in chosen), key=lambda s: _WORST.get(s, 0))
    out.update(
        dataset=dataset, metrics=merge_metrics([s.get("metrics") or {} for s in chosen]), status=status,
        reason="; ".join(dict.fromkeys(s["reason"] for s in chosen if s.get("reason"))),
        verified=_verified(ev, counts, dataset), verified_more=[],  # the other sections' blocks stay theirs
        section={"ids": [s["id"] for s in chosen], "title": chosen[0].get("title"), "dataset": dataset,
                 "span": [min(cells), max(cells)] if cells else None})
    return out
