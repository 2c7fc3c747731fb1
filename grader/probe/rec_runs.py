"""Probe part: the teardown's further captures, next to the primary model (rec_export.py).

Runs inside the kernel as `_dllab_probe_runs`; see recorder.py for the rules. Like rec_export it
patches nothing and records nothing while the notebook runs: `export_runs` and `export_more` are
called by rec_export's `export` after the primary capture, with the probe's hooks kept quiet.

- `export_runs`: for each optimizer that stepped, the model it trained as it was at the end of
  its run (rebuilt from the tensors rec_torch's `_keep` held), as `run<k>.pt`; described in
  spec.json's `runs` (evaluated by the host: grader.verify.runs);
- `export_more`: for each other dataset the notebook evaluated a model on a test split, the model
  of its last evaluation there, captured like the primary one (`more<k>.pt`, `more<k>.json`).
"""

from __future__ import annotations

import copy
import json
import os
import sys

HOOK_MODULES = ()
_core = None
X = None  # rec_export, set by setup


def setup(core):
    global _core
    _core = core


def _bind():
    global X
    X = sys.modules[_core.PROBE_NAME + "_export"]


def tracked():
    return ()


def patch():
    return None


def flush(reason):
    return None


def cell_end():
    return None


def at_exit():
    return None


MAX_MORE = 3
"""Other datasets whose last evaluated model is captured at most (`more<k>.json`, `more<k>.pt`)."""


def _ds_key(ds):
    """Which dataset `ds` reads (its class and folder), under Subsets and wrappers."""
    try:
        ds = X._base_dataset(ds)[0]
    except X._Refusal:
        pass
    root = getattr(ds, "root", None)
    return type(ds).__name__, os.fspath(root) if isinstance(root, (str, os.PathLike)) else None


def export_more(folder, events, objs, primary):
    """For each OTHER test dataset the notebook evaluated a model on (a notebook of several parts:
    CIFAR-10, then Food-11, then CIFAR-10 again with a new `testset`), the model of its last
    evaluation there, captured like the primary one: `more<k>.pt` and its spec `more<k>.json`
    (or an `error`). Other datasets (class and folder) come first, then other dataset objects of
    the primary's dataset (a section that loaded its own test set), newest first; at most
    MAX_MORE. The models and datasets the notebook rebound since are still there when
    rec_torch's `_keep_evaluated` held them."""
    _bind()
    seen, keys = {id(primary)}, {_ds_key(primary)}
    picks = []
    for e in reversed(events):
        if e.get("kind") != "evaluation" or X._split_of(e, objs) != "test":
            continue
        model, ds = objs.get(e.get("model")), objs.get(e.get("dataset"))
        if model is None or ds is None or id(ds) in seen:
            continue
        seen.add(id(ds))
        fresh = _ds_key(ds) not in keys
        keys.add(_ds_key(ds))
        picks.append((not fresh, len(picks), (model, ds, e)))
    picks = [p[2] for p in sorted(picks)]
    for k, (model, ds, e) in enumerate(picks[:MAX_MORE]):
        spec = {"version": X.SPEC_VERSION}
        try:
            spec.update(X._export_model(folder, f"more{k}.pt", model, ds, e)[0])
        except X._Refusal as exc:
            spec = {"version": X.SPEC_VERSION, "error": str(exc)[:500], "evaluation": {"cell": e.get("cell")}}
        except Exception as exc:  # noqa: BLE001 - one capture's bug must not cost the others
            spec = {"version": X.SPEC_VERSION, "error": "the export code failed: " + X._exc_text(exc)}
        with open(os.path.join(folder, f"more{k}.json"), "w", encoding="utf-8") as fh:
            json.dump(spec, fh, allow_nan=False)



# ---------------------------------------------------------------- one model per training run

MAX_RUNS = 6
"""Run models captured at most (the newest optimizers that stepped): install's `max_runs`, the
rubric's limits.captured_runs (configure)."""


MAX_RUN_ENTRIES = 24
"""Stepped optimizers described at most (the newest), so that with the note on older ones the list
stays within what the host reads (grader.verify.spec.MAX_RUN_ENTRIES, 25)."""
MAX_RUN_BYTES = 32 * 2**20
"""Bytes of run captures at most, together (the copy out of the sandbox keeps 64 MiB in all:
grader.harvest)."""


def configure(caps):
    global MAX_RUNS
    MAX_RUNS = max(1, int(caps.get("max_runs", MAX_RUNS)))


def export_runs(folder, batch, example):
    """Capture, for each optimizer that stepped, its model at the end of its run (from the
    tensors rec_torch kept), to `run<k>.pt`; returns spec.json's `runs`: one entry per stepped
    optimizer, `{optimizer, class, capture, file, bytes, sample_preds}` (its predictions on the
    primary capture's sample) or `{optimizer, error}`; none when fewer than two optimizers
    stepped. The host evaluates them on the primary's test split (grader.verify.runs)."""
    _bind()
    t = sys.modules[_core.PROBE_NAME + "_torch"]
    stepped = [r for r in list(t._aggregates) if r.kind == "optimizer" and r.steps > 0 and r.ref is not None]
    if len(stepped) < 2:  # one run compares nothing (and the primary capture has its model): no second evaluation
        return []
    out, total = [], 0
    window = min(4 * MAX_RUNS, MAX_RUN_ENTRIES)
    for rec in stepped[-window:]:
        entry = {"optimizer": rec.ref}
        try:
            if len([e for e in out if "file" in e]) >= MAX_RUNS:
                raise X._Refusal(f"more than {MAX_RUNS} runs; only the newest ones are captured")
            dup = _run_model(t, rec)
            with sys.modules["torch"].no_grad():
                want = X._first_tensor(dup(batch))
            name = f"run{len(out)}.pt"
            path = os.path.join(folder, name)
            capture, _ = X._capture(dup, example, batch, want, path)
            size = os.path.getsize(path)
            if total + size > MAX_RUN_BYTES:
                os.remove(path)
                raise X._Refusal(f"the run captures would exceed {MAX_RUN_BYTES >> 20} MiB together")
            total += size
            entry.update({"class": rec.kept[0][:100], "capture": capture, "file": name, "bytes": size,
                          "sample_preds": want.argmax(dim=1).tolist()})
        except X._Refusal as exc:
            entry["error"] = str(exc)[:300]
        except Exception as exc:  # noqa: BLE001 - one run's capture must not stop the others
            entry["error"] = "its model could not be captured: " + X._exc_text(exc)
        out.append(entry)
    if len(stepped) > window:
        out.insert(0, {"optimizer": None, "error": f"{len(stepped) - window} older runs were not captured"})
    return out


def _run_model(t, rec):
    """The model optimizer `rec` trained, at the end of its run, as a CPU copy in eval mode:
    the model itself when still alive, else the copy of it rec_torch made without weights (its
    skeleton) holding the kept tensors, else a copy of a live model of the same class and shapes
    holding them."""
    kept = getattr(rec, "kept", None)
    if kept is False:
        raise X._Refusal("its model's tensors were released (the probe keeps only the newest runs)")
    if not kept:
        raise X._Refusal("the probe found no model holding the parameters this optimizer steps")
    cls, state, wr, _, skeleton = kept
    live = wr()
    if live is not None:
        while type(live).__name__ in X._WRAPPERS and hasattr(live, "module"):
            live = live.module
        try:
            dup = copy.deepcopy(live)
        except Exception:  # noqa: BLE001 - a module holding something uncopyable
            raise X._Refusal("its model could not be copied") from None
        return dup.to(sys.modules["torch"].device("cpu")).eval()
    cpu = sys.modules["torch"].device("cpu")
    if skeleton is not None:
        try:
            skeleton.load_state_dict({k: v.detach().to(cpu).clone() for k, v in state.items()}, assign=True)
            return skeleton.to(cpu).eval()
        except Exception:  # noqa: BLE001 - a module whose state_dict does not round-trip: the twin below
            pass
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    for obj in X._live_objects().values():
        if type(obj).__name__ != cls or not hasattr(obj, "state_dict"):
            continue
        own = obj.state_dict()
        if {k: tuple(v.shape) for k, v in own.items() if hasattr(v, "shape")} != shapes:
            continue
        dup = copy.deepcopy(obj)  # never load another run's weights into a live model
        dup.load_state_dict({k: v.detach() for k, v in state.items()})
        return dup.to(sys.modules["torch"].device("cpu")).eval()
    raise X._Refusal(f"its model is gone and no live {cls} of the same shapes was left to rebuild it from")
