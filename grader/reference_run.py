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
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from grader import __version__
from grader.errors import GraderError


@dataclass(frozen=True)
class Part:
    """One reference solution of a lab."""

    id: str
    """Rubric part id, e.g. `lab1-1`."""
    title: str
    """What the part trains."""
    module: str
    """Import path of the self-contained reference file."""
    dataset: str
    """The dataset it needs (a name from grader.datasets.DATASETS)."""


LABS: dict[str, tuple[Part, ...]] = {
    "lab1": (
        Part("lab1-1", "LAB 1-1: handout CNN on CIFAR-10", "reference.lab1_1_cifar10", "cifar10"),
        Part("lab1-2", "LAB 1-2: CNN on Food-11, own normalization", "reference.lab1_2_food11", "food11"),
        Part("lab1-3", "LAB 1-3: learning rate and decay study", "reference.lab1_3_lr_study", "cifar10"),
    ),
}


def lab_parts(lab: str, only: Sequence[str] = ()) -> tuple[Part, ...]:
    key = lab.lower().replace("_", "").replace("-", "")
    if key not in LABS:
        raise GraderError(f"unknown lab {lab!r}: reference solutions exist for {', '.join(LABS)}")
    parts = LABS[key]
    if only:
        unknown = sorted(set(only) - {p.id for p in parts})
        if unknown:
            raise GraderError(f"unknown part {unknown[0]!r} of {key}: choose from {', '.join(p.id for p in parts)}")
        parts = tuple(p for p in parts if p.id in only)
    return parts


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


def summarize(part: Part, runs: list[dict], *, batch_size: int | None = None) -> dict:
    """Mean ± std over seeds of every number a check compares against, with the test-accuracy
    curve by epoch (from epoch 0, the untrained net) where the reference records one."""
    if part.id == "lab1-3":
        names = [r["name"] for r in runs[0]["runs"]]
        configs = []
        for i, name in enumerate(names):
            per_seed = [r["runs"][i] for r in runs]
            configs.append({"name": name, "lr": per_seed[0]["lr"], "schedule": per_seed[0]["schedule"],
                            "test_accuracy": _spread([c["test_accuracy"] for c in per_seed]),
                            "curve": curve([c.get("accuracy_by_epoch") or [] for c in per_seed], first_epoch=1,
                                           train_images=runs[0].get("train_images"), batch_size=batch_size)})
        best = max(configs, key=lambda c: c["test_accuracy"]["mean"] if c["test_accuracy"] else -1)
        return {"configs": configs, "best": best["name"]}
    classes = runs[0]["classes"]
    summary = {
        "test_accuracy": _spread([r["test_accuracy"] for r in runs]),
        "test_loss": _spread([r["test_loss"] for r in runs]),
        "per_class_accuracy": {c: _spread([r["per_class_accuracy"][c] for r in runs]) for c in classes},
        "normalization": runs[0]["normalization"],
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
        for h in [r["history"]] if "history" in r else [x["history"] for x in r["runs"]]:
            walls += h["wall_s"]
            cpus += h["cpu_s"]
    return {"wall_per_epoch_s": statistics.fmean(walls) if walls else None,
            "cpu_per_epoch_s": statistics.fmean(cpus) if cpus else None}


def run_reference(lab: str, *, data: dict[str, Path], device: str = "auto", epochs: int | None = None,
                  seeds: int = 1, only: Sequence[str] = (), threads: int | None = None,
                  log: Callable[[str], None] = lambda s: None) -> dict:
    """Trains every part of `lab` for `seeds` seeds; returns the expected-metrics document."""
    import importlib

    import torch
    import torchvision

    from grader.datasets import locate, manifest_digest, read_manifest, register_cifar10_checksums
    from reference.common import pick_device

    if seeds < 1:
        raise GraderError("--seeds must be at least 1")
    parts = lab_parts(lab, only)
    folders: dict[str, Path] = {}
    for part in parts:
        if part.dataset not in data:
            raise GraderError(f"{part.id} needs the {part.dataset} dataset: pass --data {part.dataset}=DIR "
                              f"(stand-ins: dllab data synth --out DIR)")
        folders[part.dataset] = locate(part.dataset, data[part.dataset])
    if "cifar10" in folders:
        register_cifar10_checksums(folders["cifar10"])
    try:
        dev = pick_device(device)
    except RuntimeError as e:
        raise GraderError(str(e)) from None
    if threads is None and dev.type == "cpu":
        # The handout's batches of 4 images are too small to split across threads: on this
        # 2-core machine one thread ran an epoch in 0.4 s where two took up to 2.7 s.
        threads = 1
    if threads:
        torch.set_num_threads(threads)

    started = time.perf_counter()
    doc: dict = {"schema": 1, "lab": lab_parts(lab)[0].id.split("-")[0], "parts": {}}
    for part in parts:
        module = importlib.import_module(part.module)
        root = folders[part.dataset].parent if part.dataset == "cifar10" else folders[part.dataset]
        kwargs: dict = {}
        if part.dataset == "food11":
            from grader.datasets import channel_stats
            s = channel_stats("food11", folders["food11"], progress=False)
            kwargs["stats"] = (s.mean, s.std)
        runs = []
        for seed in range(seeds):
            t0 = time.perf_counter()
            runs.append(module.train(root=root, device=dev, seed=seed, epochs=epochs, **kwargs))
            log(f"{part.id} seed {seed}: {_headline(runs[-1])} ({time.perf_counter() - t0:.1f} s)")
        doc["parts"][part.id] = {
            "title": part.title, "dataset": part.dataset, "hyp": dict(module.hyp),
            "epochs": epochs or module.hyp["epochs"],
            "summary": summarize(part, runs, batch_size=module.hyp.get("batch_size")),
            "timing": _epoch_seconds(runs),
            "runs": [_strip(r, keep_layers=(i == 0)) for i, r in enumerate(runs)],
        }
    doc["provenance"] = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
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
    if "best" in run:
        return f"best {run['best']} acc {run['best_accuracy']:.3f}"
    return f"test acc {run['test_accuracy']:.3f} loss {run['test_loss']:.3f}"


def _strip(run: dict, *, keep_layers: bool) -> dict:
    """A seed's run; the bulky per-layer histograms are kept for the first seed only."""
    drop = {"classes"} | (set() if keep_layers else {"layers"})
    return {k: v for k, v in run.items() if k not in drop}

