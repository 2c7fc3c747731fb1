"""What regularized each training run (`Run.regularizers`), built on the host from the probe's
records (grader/probe/rec_reg.py), and the evidence notes a TA should see (pretrained weights
asked for, a model selected on the test split).

Every value here is a hint the student's process reported (the probe shares it); checks weigh
it with what the host reads itself (the captured model's graph, the code). Keys of
`Run.regularizers` (each present only when the grader could tell):

- `weight_decay`: the largest `weight_decay` of the stepping optimizer's param groups (read at
  its steps), else its constructor's;
- `penalty`: {kind: L1|L2|L1+L2|None, params, steps, analyzed}: of the `analyzed` backward passes
  the probe walked, `steps` had a norm of `params` of its parameters inside the stepped loss;
- `dropout`, `batchnorm`: {modules, train, train_nograd, eval, eval_grad, eval_cell, steps_train,
  steps_eval, by_module, declared}:
  forward calls between its steps in training mode with gradients (`train`), without, in eval
  mode (`eval`, of which `eval_grad` with gradients on: training passes in eval mode), the cell
  of the model's last `.eval()` before them; `steps_train` / `steps_eval`: its steps whose window
  saw a training-mode call / only eval-mode calls with gradients; `declared`: such layers of its
  model the probe saw;
- `augmentation`: {train, eval, splits}: random transforms in the pipeline of the data it trained
  on, of the data it was evaluated on (val/test), and per evaluated split;
- `selection`: {how: best-checkpoint|early-stopping, split: val|test|train|None, cell, snapshots,
  basis: probe|code};
- `unstepped`: [{optimizer, weight_decay, cell}]: optimizers built with weight decay that never
  stepped, tied to this run (same parameters when built, else the next run that trained);
- `written`: the regularizers the notebook's code names (read by the host from the cells, which
  the student's running code cannot change): weight_decay, penalty, dropout, batchnorm,
  augmentation, early_stopping;
- `captured`: dropout, batchnorm when the graph of this run's captured model (the host's
  evaluation, `verified_runs[].ops`) has such operators.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

__all__ = ["NOTE_CODES", "annotate", "attach", "cell_name"]

NOTE_CODES = ("pretrained-weights", "test-selection")
"""Codes of the evidence notes this module writes (grader.pipeline turns notes into the grade's flags)."""
_DROPOUT = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")
_BATCHNORM = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
              "LazyBatchNorm3d")
_WRITTEN = {
    "weight_decay": re.compile(r"weight_decay\s*=\s*(?!0(\.0*)?\s*[,)])|\bAdamW\b"),
    "penalty": re.compile(r"(\.(abs|pow|norm|square)\(|torch\.(norm|abs|square)\(|linalg\.(vector_)?norm\(|\*\*\s*2)"
                          r"[^\n]*(param|weight)|(param|weight)[^\n]*(\.(abs|pow|norm|square)\(|\*\*\s*2)", re.I),
    "dropout": re.compile(r"Dropout|\bdropout\d?d?\(", re.I),
    "batchnorm": re.compile(r"BatchNorm"),
    # in the dataset's transform, or on the batches in the training loop (flips, rolls, an `augment` helper)
    "augmentation": re.compile(r"\bRandom[A-Z]\w*\(|ColorJitter|AutoAugment|RandAugment|TrivialAugment|AugMix"
                               r"|\.flip\(|torch\.flip\(|\.roll\(|torch\.roll\(|(?i:\baugment)"),
    "early_stopping": re.compile(r"patience|early.?stop|best_(state|model|weights|acc|loss|val)", re.I),
}
"""What code naming each regularizer looks like (a hint the probe's record is what the student meant)."""
_CAPTURED = {"dropout": ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout"),
             "batchnorm": ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
                           "cudnn_batch_norm", "_batch_norm_impl_index")}
_STOP_WORDS = re.compile(r"patience|early|best|no_improve|stop", re.I)
_BREAK = re.compile(r"^\s*break\b", re.M)


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _recs(ev: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [r for r in ev.get(key) or [] if isinstance(r, Mapping)]


def cell_name(cell: object) -> str:
    """`In[7]`, or `a cell` when unknown."""
    return f"In[{cell}]" if _int(cell) is not None else "a cell"


def _modules(rows: object, declared: Sequence[str]) -> dict[str, Any] | None:
    """The dropout or batchnorm entry from the probe's rows [name, cls, tg, tn, eg, en, eval cell,
    steps in training mode, steps in eval mode only]."""
    good = [r for r in rows if isinstance(r, list) and len(r) == 9 and isinstance(r[0], str)
            and all(_int(x) is not None and x >= 0 for x in r[2:6] + r[7:9])] if isinstance(rows, list) else []
    if not good and not declared:
        return None
    eval_cells = [r[6] for r in good if r[4] and _int(r[6]) is not None]
    return {"modules": [r[0] for r in good][:16], "train": sum(r[2] for r in good),
            "train_nograd": sum(r[3] for r in good), "eval": sum(r[4] + r[5] for r in good),
            "eval_grad": sum(r[4] for r in good), "eval_cell": eval_cells[-1] if eval_cells else None,
            "steps_train": max((r[7] for r in good), default=0), "steps_eval": max((r[8] for r in good), default=0),
            "by_module": [{"name": r[0], "train": r[2], "eval": r[4] + r[5], "eval_grad": r[4]} for r in good][:8],
            "declared": list(declared)[:16]}


def _declared(ev: Mapping[str, Any], refs: set[int], kinds: Sequence[str]) -> list[str]:
    """`Class.name` of the layers of those kinds in the run's models (the probe's model records)."""
    out = []
    for m in _recs(ev, "models"):
        if m.get("ref") not in refs:
            continue
        for layer in m.get("layers") or []:
            if isinstance(layer, list) and len(layer) >= 2 and layer[1] in kinds:
                out.append(f"{m.get('class') or 'model'}.{layer[0]}")
    return list(dict.fromkeys(out))


def _passes(ev: Mapping[str, Any], refs: set[int]) -> list[Mapping[str, Any]]:
    """The training and evaluation passes of the run's models, each once (a pass over test data in
    training mode is in both lists)."""
    seen, out = set(), []
    for t in _recs(ev, "training") + _recs(ev, "evaluations"):
        if t.get("model_ref") not in refs:
            continue
        key = (t.get("cell"), t.get("model_ref"), t.get("split"), t.get("samples"), t.get("batches"),
               t.get("grad_enabled"), t.get("training_mode"), tuple(t.get("loader") or ()), tuple(t.get("out_at") or ()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _split(t: Mapping[str, Any]) -> str | None:
    """A pass's split: the name of its loader first (`val_loader`), since a student's own split of one
    folder (Kaggle's train/ holds both halves) makes every dataset's recorded split `train`."""
    for name in t.get("loader") or []:
        low = str(name).lower()
        for needle, split in (("test", "test"), ("val", "val"), ("train", "train")):
            if needle in low:
                return split
    return t.get("split") if isinstance(t.get("split"), str) else None


def _is_eval(t: Mapping[str, Any]) -> bool:
    return _split(t) in ("val", "test") or t.get("grad_enabled") is False


def _augmentation(passes: Sequence[Mapping[str, Any]], stepped: set[int], around: set[int]) -> dict[str, Any] | None:
    seen = [t for t in passes if isinstance(t.get("augment"), list)]
    if not seen:
        return None
    # cells unknown (a script run without IPython): every pass of its models
    train = sorted({str(a) for t in seen if not _is_eval(t) and (not stepped or t.get("cell") in stepped)
                    for a in t["augment"]})
    evals = [t for t in seen if _is_eval(t) and (not around or t.get("cell") in around)]
    splits: dict[str, list[str]] = {}
    for t in evals:
        split = str(_split(t) or "unknown")
        splits[split] = sorted(set(splits.get(split, [])) | {str(a) for a in t["augment"]})
    return {"train": train, "eval": sorted({a for v in splits.values() for a in v}), "splits": splits}


def _code_of(cells: Any, counts: set[int]) -> str:
    """The code of cells In[n] and of the functions they call that earlier cells define."""
    index, sources = getattr(cells, "index", {}) or {}, getattr(cells, "sources", []) or []
    own = [sources[i] for c in sorted(counts) if (i := index.get(c)) is not None and i < len(sources)]
    text = "\n".join(own)
    called = set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", text))
    for src in sources:
        for name in re.findall(r"^\s*def\s+([A-Za-z_]\w*)", src, re.M):
            if name in called and src not in own:
                own.append(src)
                break
    return "\n".join(own)[:200000]


def _selection(ev: Mapping[str, Any], run: Mapping[str, Any], refs: set[int], passes: Sequence[Mapping[str, Any]],
               stepped: set[int], cells: Any) -> dict[str, Any] | None:
    first = min(stepped) if stepped else None
    for w in _recs(ev, "weights_loaded"):
        sel = w.get("selection")
        if not isinstance(sel, Mapping) or w.get("model_ref") not in refs:
            continue
        if first is not None and _int(w.get("cell")) is not None and w["cell"] < first:
            continue
        n, after = _int(sel.get("snapshots")) or 0, _int(sel.get("steps_after")) or 0
        if n >= 2 or after > 0:
            splits = {str(k): v for k, v in (sel.get("splits") or {}).items() if _int(v)}
            known = Counter({k: v for k, v in splits.items() if k != "none"})
            split = sel.get("last") if isinstance(sel.get("last"), str) else (
                known.most_common(1)[0][0] if known else None)
            return {"how": "best-checkpoint", "split": split, "cell": w.get("cell"), "snapshots": n,
                    "basis": "probe"}
    code = _code_of(cells, stepped)
    if not (_BREAK.search(code) and _STOP_WORDS.search(code)):
        return None
    evals = {str(_split(t)) for t in passes if _is_eval(t) and t.get("cell") in stepped
             and _split(t) in ("val", "test", "train")}
    if not evals:
        return None
    split = next(s for s in ("val", "test", "train") if s in evals)  # what a stopping rule most likely read
    return {"how": "early-stopping", "split": split, "cell": max(stepped), "basis": "code"}


def written(cells: Any) -> list[str]:
    """The regularizers the notebook's code names (`_WRITTEN`), from `cells.sources`."""
    code = "\n".join(getattr(cells, "sources", None) or [])[:2_000_000]
    return [name for name, pattern in _WRITTEN.items() if pattern.search(code)]


def _captured(ev: Mapping[str, Any], ref: int | None) -> list[str] | None:
    """dropout/batchnorm found in the run's captured graph; None when the host has no graph of it."""
    entry = next((r for r in _recs(ev, "verified_runs") if ref is not None and r.get("optimizer") == ref), None)
    ops = entry.get("ops") if entry is not None else None
    if not isinstance(ops, Mapping) or not ops:
        return None
    names = {str(k).rsplit(".", 1)[-1] for k in ops}
    return [key for key, found in _CAPTURED.items() if names & set(found)]


def of_run(ev: Mapping[str, Any], run: Mapping[str, Any], cells: Any = None) -> dict[str, Any]:
    """`Run.regularizers` of one run of `build_runs` (its internal dict: `_o`, `_cells`,
    `_eval_cells`, `_steps`). Empty for a run that never stepped. Never raises on odd records."""
    o = run.get("_o") or {}
    steps = _int(run.get("_steps")) or 0
    if not steps or not isinstance(o, Mapping):
        return {}
    refs = {r for r in run.get("model_refs") or [] if _int(r) is not None}
    reg = o.get("regularization") if isinstance(o.get("regularization"), Mapping) else {}
    out: dict[str, Any] = {}
    wds = [w for w in (reg.get("weight_decay") or []) if _num(w) is not None] if isinstance(
        reg.get("weight_decay"), list) else []
    wd = max(wds) if wds else _num(o.get("weight_decay"))
    if wd is not None:
        out["weight_decay"] = wd
    pen = reg.get("penalty")
    if isinstance(pen, Mapping) and (_int(pen.get("analyzed")) or 0) > 0:
        l1, l2 = (_int(pen.get("l1")) or 0) > 0, (_int(pen.get("l2")) or 0) > 0
        out["penalty"] = {"kind": "L1+L2" if l1 and l2 else "L1" if l1 else "L2" if l2 else None,
                          "params": _int(pen.get("params")) or 0, "steps": _int(pen.get("found")) or 0,
                          "analyzed": _int(pen.get("analyzed")) or 0}
    if reg:  # the probe's part ran: layers it never saw called are reported as declared only
        for key, kinds in (("dropout", _DROPOUT), ("batchnorm", _BATCHNORM)):
            entry = _modules(reg.get(key), _declared(ev, refs, kinds))
            if entry is not None:
                out[key] = entry
    stepped = {c for c in o.get("cells_stepped") or [] if _int(c) is not None}
    around = set(run.get("_cells") or ()) | set(run.get("_eval_cells") or ())
    passes = _passes(ev, refs)
    aug = _augmentation(passes, stepped, around)
    if aug is not None:
        out["augmentation"] = aug
    sel = _selection(ev, run, refs, passes, stepped, cells)
    if sel is not None:
        out["selection"] = sel
    if getattr(cells, "sources", None):
        out["written"] = written(cells)
    captured = _captured(ev, _int(run.get("optimizer_ref")))
    if captured is not None:
        out["captured"] = captured
    return out


def _unstepped(ev: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in _recs(ev, "optimizers") if not (_int(o.get("steps")) or 0)
            and (_num(o.get("weight_decay")) or 0) > 0]


def attach(ev: Mapping[str, Any], runs: list[MutableMapping[str, Any]], cells: Any = None) -> None:
    """Sets `regularizers` on each run of `build_runs` (its internal dicts, before they are
    finished); an optimizer with weight decay that never stepped goes to the trained run built
    over the same parameters (the same checksum when built), else to the first run that trained
    from its cell on, else to the last run that trained."""
    for run in runs:
        try:
            run["regularizers"] = of_run(ev, run, cells)
        except Exception:  # noqa: BLE001 - odd records: this run's regularizers are unknown
            run["regularizers"] = {}
    trained = [r for r in runs if (_int(r.get("_steps")) or 0) > 0]
    _stopped_early(trained)
    for u in _unstepped(ev):
        built = _int(u.get("cell"))
        start = u.get("checksum_start")
        # models built under one seed start equal: among those, the first that trained from its cell on
        pool = [r for r in trained if start is not None and (r.get("_o") or {}).get("checksum_start") == start] or trained
        later = [r for r in pool if built is not None and min(r.get("_cells") or {math.inf}) >= built]
        target = (later or pool[-1:] or [None])[0]
        if target is None:
            continue
        target["regularizers"].setdefault("unstepped", []).append(
            {"optimizer": str(u.get("type") or "optimizer"), "weight_decay": _num(u.get("weight_decay")),
             "cell": built})


EVAL_STEPS_TOLERATED = 0.1
"""Share of a run's steps whose training pass may run a Dropout/BatchNorm layer in eval mode before
the layer counts as not in effect."""


def layer_in_effect(entry: object) -> bool:
    """Whether a `Run.regularizers` dropout/batchnorm entry shows the layer in effect: run in
    training mode, and in no more than EVAL_STEPS_TOLERATED of the run's steps only in eval mode
    (model.eval() left on after the first epoch's evaluation is not in effect)."""
    if not isinstance(entry, Mapping):
        return False
    train = _int(entry.get("train")) or 0
    on, off = _int(entry.get("steps_train")) or 0, _int(entry.get("steps_eval")) or 0
    return train > 0 and off <= EVAL_STEPS_TOLERATED * (on + off)


def _stopped_early(trained: Sequence[MutableMapping[str, Any]]) -> None:
    """Drops an early stopping read from the code alone (`basis: code`: a `break` near a patience
    or best-loss word in the cells that stepped or the functions they call) from a run that did
    not stop early: one shared `fit(..., patience=None)` function holds the rule for every run it
    trains, and only a run that trained fewer full epochs than the notebook's longest run stopped.
    With one run there is nothing to compare: the code's reading stays (said by its basis)."""
    epochs = [e for r in trained if (e := _num(r.get("epochs"))) is not None]
    if len(epochs) < 2:
        return
    longest = max(epochs)
    for r in trained:
        sel = (r.get("regularizers") or {}).get("selection")
        e = _num(r.get("epochs"))
        if isinstance(sel, Mapping) and sel.get("basis") == "code" and e is not None and e >= longest - 0.5:
            del r["regularizers"]["selection"]


def annotate(ev: MutableMapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> None:
    """Replaces the evidence notes of NOTE_CODES: a pretrained-weights download asked for (which
    fails offline), a run whose model was selected on the test split. Idempotent (rescore); never raises."""
    try:
        _annotate(ev, runs)
    except Exception:  # noqa: BLE001 - notes are for a TA: odd records leave the notes as they were
        pass


def _annotate(ev: MutableMapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> None:
    notes = [n for n in ev.get("notes") or [] if not (isinstance(n, Mapping) and n.get("code") in NOTE_CODES)]
    downloads = [w for w in _recs(ev, "weights_loaded") if w.get("source") == "download"]
    if downloads:
        said = "; ".join(f"{cell_name(w.get('cell'))}: {str(w.get('name') or w.get('url') or w.get('via'))[:120]}"
                         f"{'' if w.get('ok') else ' (it failed: the grader runs offline)'}" for w in downloads[:4])
        notes.append({"code": "pretrained-weights",
                      "message": f"pretrained weights were asked for, a download: {said}. A model built on them "
                                 f"was not trained from scratch; a TA decides whether that was allowed."[:600]})
    chosen = [(r, s) for r in runs if isinstance(s := (r.get("regularizers") or {}).get("selection"), Mapping)
              and s.get("split") == "test"]
    if chosen:
        said = "; ".join(f"{r.get('name')} ({s.get('how')}, {cell_name(s.get('cell'))})" for r, s in chosen[:4])
        notes.append({"code": "test-selection",
                      "message": f"a model was selected on the test split: {said}. Early stopping and checkpoint "
                                 f"choice must use a validation split; the test score is then optimistic."[:600]})
    ev["notes"] = notes
