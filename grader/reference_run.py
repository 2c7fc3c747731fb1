"""`dllab reference run`: train the reference solutions and write expected metrics.

The expected-metrics file is what tolerance bands are set from, so it carries its own
provenance (device, versions, seeds, epochs, dataset digests, time per epoch) and reports
every metric as mean ± std over seeds rather than a single lucky run. `summary.curve` holds the
test accuracy after every epoch (from epoch 0), so a student's shorter run is compared with the
reference at the same budget; files written before it existed have no curve, and the
accuracy check then falls back to the final summary and says so.
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
import platform
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from grader import __version__
from grader.errors import GraderError

if TYPE_CHECKING:
    import torch

TRAIN_PARAMS = ("data", "device", "seed", "epochs")
"""The keyword-only parameters of every reference file's `train`."""


def pick_device(name: str = "auto") -> "torch.device":
    """`auto` is CUDA when a GPU is visible, else the CPU. Raises GraderError for `cuda`
    without a visible GPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GraderError("--device cuda was asked for but no CUDA device is visible")
    return torch.device(name)


def train_signature_problem(train: object) -> str | None:
    """Why `train` is not a reference's `train(*, data, device, seed, epochs) -> dict`, or None."""
    if not callable(train):
        return "has no function train(*, data, device, seed, epochs)"
    try:
        params = inspect.signature(train).parameters
    except (TypeError, ValueError):
        return "train's signature cannot be read"
    missing = [n for n in TRAIN_PARAMS if n not in params]
    if missing:
        return f"train has no parameter {', '.join(missing)} (expected train(*, data, device, seed, epochs))"
    positional = [n for n in TRAIN_PARAMS if params[n].kind is not inspect.Parameter.KEYWORD_ONLY]
    if positional:
        return f"train's {', '.join(positional)} must be keyword-only (put `*,` first)"
    extra = [n for n, p in params.items() if n not in TRAIN_PARAMS and p.default is inspect.Parameter.empty
             and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
    if extra:
        return f"train's parameter {', '.join(extra)} has no default: the grader passes only {', '.join(TRAIN_PARAMS)}"
    return None


def _spread(values: Sequence[float | None]) -> dict | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def curve(per_seed: Sequence[Sequence[float | None]], *, first_epoch: int = 0, train_images: int | None = None,
          batch_size: int | None = None) -> list[dict]:
    """Test accuracy by epoch, mean ± std over seeds: `[{"epoch", "samples", "batches",
    "test_accuracy": {"mean", "std", ...}}]`. `per_seed[s][i]` is seed s's accuracy after
    `first_epoch + i` epochs (a fraction); a seed that stopped early (diverged) just has fewer.
    `samples` and `batches` are the training images and steps that many epochs take."""
    points = []
    for i in range(max((len(c) for c in per_seed), default=0)):
        spread = _spread([c[i] for c in per_seed if i < len(c)])
        if spread is None:
            continue
        epoch = first_epoch + i
        point: dict = {"epoch": epoch, "test_accuracy": spread}
        if train_images:
            point["samples"] = epoch * train_images
            if batch_size:
                point["batches"] = epoch * math.ceil(train_images / batch_size)
        points.append(point)
    return points


def summarize(runs: list[dict], *, batch_size: int | None = None) -> dict:
    """Mean ± std over seeds of every number a check compares against, with the test-accuracy
    curve by epoch (from epoch 0, the untrained net) where the reference records one. A study
    (a result with `runs`: one entry per configuration) is summarized per configuration, with
    the best one named."""
    if "runs" in runs[0]:
        names = [r["name"] for r in runs[0]["runs"]]
        configs = []
        for i, name in enumerate(names):
            per_seed = [r["runs"][i] for r in runs]
            configs.append({"name": name, "lr": per_seed[0].get("lr"), "schedule": per_seed[0].get("schedule"),
                            "test_accuracy": _spread([c.get("test_accuracy") for c in per_seed]),
                            "curve": curve([c.get("accuracy_by_epoch") or [] for c in per_seed], first_epoch=1,
                                           train_images=runs[0].get("train_images"), batch_size=batch_size)})
        best = max(configs, key=lambda c: c["test_accuracy"]["mean"] if c["test_accuracy"] else -1)
        return {"configs": configs, "best": best["name"]}
    classes = runs[0].get("classes") or list(runs[0].get("per_class_accuracy") or {})
    summary = {
        "test_accuracy": _spread([r.get("test_accuracy") for r in runs]),
        "test_loss": _spread([r.get("test_loss") for r in runs]),
        "per_class_accuracy": {c: _spread([(r.get("per_class_accuracy") or {}).get(c) for r in runs])
                               for c in classes},
        "normalization": runs[0].get("normalization"),
    }
    if "validation_accuracy" in runs[0]:
        summary["validation_accuracy"] = _spread([r["validation_accuracy"] for r in runs])
    if all("test_accuracy" in r.get("history", {}) for r in runs):
        summary["curve"] = curve([r["history"]["test_accuracy"] for r in runs],
                                 train_images=runs[0].get("train_images"), batch_size=batch_size)
    return summary


def _epoch_seconds(runs: list[dict]) -> dict:
    walls, cpus = [], []
    for r in runs:
        for h in [r.get("history") or {}] if "runs" not in r else [x.get("history") or {} for x in r["runs"]]:
            walls += h.get("wall_s") or []
            cpus += h.get("cpu_s") or []
    return {"wall_per_epoch_s": statistics.fmean(walls) if walls else None,
            "cpu_per_epoch_s": statistics.fmean(cpus) if cpus else None}


def run_reference(lab: str | Path, *, data: Mapping[str, Path], device: str = "auto", epochs: int | None = None,
                  seeds: int = 1, only: Sequence[str] = (), threads: int | None = None,
                  labs_dirs: Sequence[Path] = (), log: Callable[[str], None] = lambda s: None) -> dict:
    """Trains every reference of `lab` (an id or a lab folder; grader.labs.find_lab) for `seeds`
    seeds; returns the expected-metrics document. `data` maps a dataset name to its folder or a
    root holding it. Raises GraderError (LabError for the lab) for a missing dataset, an unknown
    part or a reference that does not import."""
    import torch
    import torchvision

    from grader.datasets import locate, manifest_digest, read_manifest
    from grader.labs import find_lab, import_reference, references_for

    if seeds < 1:
        raise GraderError("--seeds must be at least 1")
    pkg = find_lab(lab, labs_dirs)
    parts = references_for(pkg, only)
    if not parts:
        raise GraderError(f"lab {pkg.id} has no reference solutions (lab.yaml lists none under references:)")
    folders: dict[str, Path] = {}
    for part_id, ref in parts:
        for name in ref.datasets:
            if name not in data:
                raise GraderError(f"{part_id} needs the {name} dataset: pass --data {name}=DIR "
                                  f"(stand-ins: dllab data synth --out DIR)")
            folders.setdefault(name, locate(name, data[name]))
    modules = {part_id: import_reference(pkg, part_id) for part_id, _ in parts}
    for part_id, module in modules.items():
        problem = train_signature_problem(getattr(module, "train", None))
        if problem:
            raise GraderError(f"lab {pkg.id}: reference {pkg.reference_path(part_id)} {problem}")
    dev = pick_device(device)
    if threads is None and dev.type == "cpu":
        # The handout's batches of 4 images are too small to split across threads: on this
        # 2-core machine one thread ran an epoch in 0.4 s where two took up to 2.7 s.
        threads = 1
    if threads:
        torch.set_num_threads(threads)

    started = time.perf_counter()
    doc: dict = {"schema": 1, "lab": pkg.id, "parts": {}}
    for part_id, ref in parts:
        module = modules[part_id]
        given = {name: folders[name] for name in ref.datasets}
        hyp = dict(getattr(module, "hyp", {}) or {})
        runs = []
        for seed in range(seeds):
            t0 = time.perf_counter()
            runs.append(module.train(data=given, device=dev, seed=seed, epochs=epochs))
            log(f"{part_id} seed {seed}: {_headline(runs[-1])} ({time.perf_counter() - t0:.1f} s)")
        entry: dict = {"title": ref.title or part_id, "dataset": ref.datasets[0]}
        if len(ref.datasets) > 1:
            entry["datasets"] = list(ref.datasets)
        doc["parts"][part_id] = {
            **entry, "hyp": hyp,
            "epochs": epochs or hyp.get("epochs"),
            "summary": summarize(runs, batch_size=hyp.get("batch_size")),
            "timing": _epoch_seconds(runs),
            "runs": [_strip(r, keep_layers=(i == 0)) for i, r in enumerate(runs)],
        }
    doc["provenance"] = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lab_dir": str(pkg.dir),
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "grader": __version__,
        "seeds": list(range(seeds)), "epochs_override": epochs,
        "datasets": {name: {"folder": str(folder), "digest": manifest_digest(folder),
                            "synthetic": bool((read_manifest(folder) or {}).get("synthetic", False))}
                     for name, folder in folders.items()},
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return doc


def _headline(run: dict) -> str:
    if "best" in run and "best_accuracy" in run:
        return f"best {run['best']} acc {run['best_accuracy']:.3f}"
    shown = [f"{name} {run[key]:.3f}" for key, name in (("test_accuracy", "test acc"), ("test_loss", "loss"))
             if isinstance(run.get(key), (int, float))]
    return " ".join(shown) or "done"


def _strip(run: dict, *, keep_layers: bool) -> dict:
    """A seed's run; the bulky per-layer histograms are kept for the first seed only."""
    drop = {"classes"} | (set() if keep_layers else {"layers"})
    return {k: v for k, v in run.items() if k not in drop}

