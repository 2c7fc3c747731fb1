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

GENERATIVE_METRICS: dict[str, tuple[str, float | None, float | None]] = {
    "classifier_score": ("the instrument's classifier score of 10 000 samples (1..10)", 1.0, 10.0),
    "coverage_classes": ("how many digits appear among the samples (0..10)", 0, 10),
    "max_share": ("the most frequent digit's share of the samples (a fraction 0..1)", 0.0, 1.0),
    "frechet_distance": ("the Fréchet distance to the real test split in the instrument's features (>= 0)", 0.0, None),
    "conditional_accuracy": ("how often G(z, y) is classified as y (a fraction 0..1)", 0.0, 1.0),
    "nelbo": ("the negative ELBO on the real test split (nats per image, >= 0)", 0.0, None),
    "kl": ("the KL term on the real test split (nats per image, >= 0)", 0.0, None),
    "active_units": ("active latent units (a count >= 0)", 0, None),
}
"""A generative part's metrics (grader.genmeasures, measured with the lab's instrument by
grader.verify.gen_eval): name -> (what it is, least, greatest). A result carrying any of them
needs no `test_accuracy`; `summarize` gives each one's mean ± std over seeds."""


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


def train_return_problem(train: object) -> str | None:
    """What can be seen of `train`'s result without running it (its source): a `train` that
    returns no value, or returns a dict literal without `test_accuracy` (nor a study's `runs`).
    None when nothing is seen wrong or the source cannot be read."""
    import ast
    import textwrap

    try:
        source, first = inspect.getsourcelines(train)  # type: ignore[arg-type]
        tree = ast.parse(textwrap.dedent("".join(source)))
    except (OSError, TypeError, SyntaxError):
        return None
    func = tree.body[0] if tree.body and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) else None
    if func is None:
        return None
    returns = [n for n in ast.walk(func) if isinstance(n, ast.Return)
               and not any(n in ast.walk(f) for f in ast.walk(func)
                           if f is not func and isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))]
    valued = [n for n in returns if n.value is not None and not (isinstance(n.value, ast.Constant) and n.value.value is None)]
    if not valued:
        return "train returns nothing: it must return a dict with `test_accuracy` (a fraction 0..1)"
    for node in valued:
        if isinstance(node.value, ast.Dict) and None not in node.value.keys:  # no `**spread`
            keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            if len(keys) == len(node.value.keys) and not keys & {"test_accuracy", "runs", *GENERATIVE_METRICS}:
                return (f"train returns a dict without `test_accuracy` (line {node.lineno + first - 1}: keys "
                        f"{', '.join(sorted(map(str, keys))) or 'none'}); expected the test accuracy as a fraction 0..1")
    return None


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fraction(v: object, *, nan: bool = False) -> bool:
    """A number in 0..1 (NaN too when `nan`: a diverged study run)."""
    return _number(v) and (0.0 <= float(v) <= 1.0 or (nan and math.isnan(v)))  # type: ignore[arg-type]


def _fractions(v: object) -> bool:
    return isinstance(v, (list, tuple)) and all(x is None or _fraction(x, nan=True) for x in v)


def _factors(v: object) -> bool:
    """A study run's `factors`: {name: number, string, bool or None}."""
    return isinstance(v, dict) and all(isinstance(k, str) and (x is None or isinstance(x, (str, int, float)))
                                       for k, x in v.items())


def result_problems(result: object) -> list[str]:
    """Why `result` is not what a reference's `train` returns, one line per key: a dict with
    `test_accuracy` (a fraction 0..1, not a percentage) and, when present, `test_loss` (a number
    >= 0), `validation_accuracy` (a fraction), `per_class_accuracy` ({class: fraction or
    None}), `classes` (a list), `train_images` (an int), `history` ({name: list}, its
    `test_accuracy` fractions by epoch); or a study: `runs` (a list of {name, test_accuracy,
    ..., and optionally `factors`: {factor: value} it was trained with, e.g. {"depth": 4, "lr":
    0.02}), `best` (a run's name), `best_accuracy` (a fraction). Empty when it is."""
    if not isinstance(result, dict):
        return [(f"train() returned {type(result).__name__}, expected a dict such as "
                 f"{{'test_accuracy': 0.62, 'test_loss': 1.1, ...}}")]
    out: list[str] = []
    if "runs" in result:
        runs = result["runs"]
        if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
            return ["`runs` must be a non-empty list of dicts (one per configuration of a study)"]
        for i, run in enumerate(runs):
            if not isinstance(run.get("name"), str):
                out.append(f"`runs[{i}].name` must be a string (the configuration's name)")
            if not _fraction(run.get("test_accuracy"), nan=True):
                out.append(f"`runs[{i}].test_accuracy` is {run.get('test_accuracy')!r}, expected a fraction 0..1")
            if "accuracy_by_epoch" in run and not _fractions(run["accuracy_by_epoch"]):
                out.append(f"`runs[{i}].accuracy_by_epoch` must be a list of fractions 0..1")
            if "factors" in run and not _factors(run["factors"]):
                out.append(f"`runs[{i}].factors` must map factor names to a number, a string or None "
                           f"(e.g. {{'depth': 2, 'lr': 0.02}})")
        if result.get("best") not in {r.get("name") for r in runs}:
            out.append(f"`best` is {result.get('best')!r}, expected the name of one of `runs`")
        if "best_accuracy" in result and not _fraction(result["best_accuracy"], nan=True):
            out.append(f"`best_accuracy` is {result['best_accuracy']!r}, expected a fraction 0..1")
    elif "test_accuracy" not in result and not set(result) & set(GENERATIVE_METRICS):
        out.append(f"train() returned no `test_accuracy` (keys: {', '.join(map(str, result)) or 'none'}); "
                   f"expected the final test accuracy as a fraction 0..1")
    elif "test_accuracy" in result and not _fraction(result["test_accuracy"]):
        out.append(f"`test_accuracy` is {result['test_accuracy']!r}, expected a fraction 0..1 "
                   f"(accuracies are fractions, not percentages)")
    if "test_loss" in result and result["test_loss"] is not None and not (
            _number(result["test_loss"]) and (result["test_loss"] >= 0 or math.isnan(result["test_loss"]))):
        out.append(f"`test_loss` is {result['test_loss']!r}, expected a number >= 0")
    if "validation_accuracy" in result and not _fraction(result["validation_accuracy"]):
        out.append(f"`validation_accuracy` is {result['validation_accuracy']!r}, expected a fraction 0..1")
    pca = result.get("per_class_accuracy")
    if pca is not None and not (isinstance(pca, dict) and all(v is None or _fraction(v) for v in pca.values())):
        out.append("`per_class_accuracy` must map each class name to a fraction 0..1 (or None: not in the test set)")
    if "classes" in result and not isinstance(result["classes"], (list, tuple)):
        out.append(f"`classes` is {type(result['classes']).__name__}, expected a list of class names")
    if "train_images" in result and not (isinstance(result["train_images"], int) and result["train_images"] >= 0):
        out.append(f"`train_images` is {result['train_images']!r}, expected a count of images")
    out += _generative_problems(result)
    history = result.get("history")
    if history is not None:
        if not isinstance(history, dict):
            out.append(f"`history` is {type(history).__name__}, expected a dict of per-epoch lists")
        elif "test_accuracy" in history and not _fractions(history["test_accuracy"]):
            out.append("`history.test_accuracy` must be a list of fractions 0..1 (after 0, 1, ... epochs)")
    return out


def _generative_problems(result: dict) -> list[str]:
    """Why a generative metric of `result` is not a finite number in its range (GENERATIVE_METRICS);
    None is allowed (not measured: e.g. no conditional accuracy for an unconditional GAN)."""
    out = []
    for name, (what, low, high) in GENERATIVE_METRICS.items():
        v = result.get(name)
        if v is None:
            continue
        whole = isinstance(low, int) and not isinstance(low, float)
        ok = (isinstance(v, int) and not isinstance(v, bool)) if whole else (_number(v) and math.isfinite(v))
        slack = 0 if whole else 1e-6  # exp(a mean KL of 0) may round below 1
        if not ok or (low is not None and v < low - slack) or (high is not None and v > high + slack):
            out.append(f"`{name}` is {v!r}, expected {what}")
    return out


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
            config = {"name": name, "lr": per_seed[0].get("lr"), "schedule": per_seed[0].get("schedule"),
                      "test_accuracy": _spread([c.get("test_accuracy") for c in per_seed]),
                      "curve": curve([c.get("accuracy_by_epoch") or [] for c in per_seed], first_epoch=1,
                                     train_images=runs[0].get("train_images"), batch_size=batch_size)}
            if isinstance(per_seed[0].get("factors"), dict):
                # what the configuration was trained with: a comparison's runs are read against these
                config["factors"] = dict(per_seed[0]["factors"])
                if config["lr"] is None:
                    config["lr"] = config["factors"].get("lr")
            configs.append(config)
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
    for name in GENERATIVE_METRICS:
        if any(r.get(name) is not None for r in runs):
            summary[name] = _spread([r.get(name) for r in runs])
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
    part, a reference that does not import or a `train` result that is not as result_problems says."""
    import torch
    import torchvision

    from grader.datasets import locate, manifest_digest, read_manifest
    from grader.labs import LabError, find_lab, import_reference, references_for

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
            result = module.train(data=given, device=dev, seed=seed, epochs=epochs)
            problems = result_problems(result)
            if problems:
                raise LabError(f"lab {pkg.id}: reference {pkg.reference_path(part_id)} (part {part_id}, seed {seed}): "
                               + "; ".join(problems))
            runs.append(result)
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
    shown = [f"{name} {run[key]:.3f}" for key, name in (("test_accuracy", "test acc"), ("test_loss", "loss"),
                                                         *((m, m.replace("_", " ")) for m in GENERATIVE_METRICS))
             if isinstance(run.get(key), (int, float))]
    return " ".join(shown) or "done"


def _strip(run: dict, *, keep_layers: bool) -> dict:
    """A seed's run; the bulky per-layer histograms are kept for the first seed only."""
    drop = {"classes"} | (set() if keep_layers else {"layers"})
    return {k: v for k, v in run.items() if k not in drop}

