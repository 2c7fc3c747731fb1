"""`dllab reference run LAB --instrument`: train the instrument a lab's rubric names, export it,
write its provenance.

The instrument's training code is `grader/instruments/<name with - as _>.py`, a module with
`train(*, data, device, seed, epochs) -> dict` (the reference solutions' signature, whose result
also holds `module`: the trained TorchScript ScriptModule), `DATASETS` (the datasets `train`
reads), `MIN_TEST_ACCURACY` (a fraction) and `test_split(data) -> (images (N, 1, 28, 28) float
0..1, labels (N,) int64)`. The saved file is loaded back and measured on the real test split with
grader.genmeasures, so the provenance's `real` values are those of the file the sandbox loads:

    name, schema, description, architecture, parameters, feature_dim, weights_sha256, weights_bytes,
    data {name, folder, source, synthetic, md5 {IDX file: md5}, train_images, test_images},
    seed, epochs, optimizer, hyp, test_accuracy, test_loss, test_n, per_class_accuracy, history,
    seconds, device, threads, torch, python, grader, created_at, command, lab,
    real {n, accuracy, classifier_score, coverage (genmeasures.class_coverage), diversity
          (genmeasures.mean_pairwise_distance of the 0..1 pixels), diversity_pairs, diversity_seed,
          feature_dim, feature_mean [D], feature_cov [D][D]}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import io
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from grader import __version__
from grader.errors import GraderError
from grader.instruments import HERE, INSTRUMENTS, InstrumentError

SEED = 0
"""The one seed an instrument is trained with."""
DIVERSITY_PAIRS, DIVERSITY_SEED = 2000, 0
"""genmeasures.mean_pairwise_distance's defaults: the pairs a generator's diversity is also measured on."""


def instrument_module(name: str) -> ModuleType:
    """The training module of the registered instrument `name`. Raises InstrumentError for an
    unknown name or a module without the interface of the module docstring."""
    if name not in INSTRUMENTS:
        raise InstrumentError(f"unknown instrument {name!r}; known: {', '.join(sorted(INSTRUMENTS))}")
    from grader.reference_run import train_signature_problem

    module = importlib.import_module(f"grader.instruments.{name.replace('-', '_')}")
    problem = train_signature_problem(getattr(module, "train", None))
    missing = [a for a in ("DATASETS", "MIN_TEST_ACCURACY", "test_split") if not hasattr(module, a)]
    if problem or missing:
        raise InstrumentError(f"the instrument {name!r}'s module {module.__name__} "
                              + (problem or f"has no {', '.join(missing)}"))
    return module


def lab_instrument(lab: str | Path, labs_dirs: Sequence[Path] = ()) -> tuple[str, str]:
    """(lab id, instrument name) of `lab`'s rubric `generative.instrument`. Raises GraderError for
    a lab whose rubric has no `generative:` section, InstrumentError for an unknown instrument."""
    from grader.labs import find_lab
    from grader.rubric import load_rubric

    pkg = find_lab(lab, labs_dirs)
    rubric = load_rubric(pkg.rubric_path)
    if rubric.generative is None:
        raise GraderError(f"lab {pkg.id}: its rubric has no `generative:` section, so it uses no instrument "
                          f"(drop --instrument to train its reference solutions)")
    if rubric.generative.instrument not in INSTRUMENTS:
        raise InstrumentError(f"lab {pkg.id}: its rubric names the instrument {rubric.generative.instrument!r}; "
                              f"known: {', '.join(sorted(INSTRUMENTS))}")
    return pkg.id, rubric.generative.instrument


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _data_record(name: str, folder: Path) -> dict[str, Any]:
    from grader.datasets import read_manifest

    manifest = read_manifest(folder) or {}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    return {"name": name, "folder": str(folder), "source": manifest.get("source"),
            "synthetic": bool(manifest.get("synthetic", False)),
            "md5": {p.relative_to(folder).as_posix(): _md5(p) for p in files}}


def measure_real(weights: Path, images: Any, labels: Any, *, batch: int = 1000) -> dict[str, Any]:
    """The saved instrument `weights` on the real test split: `images` (N, 1, 28, 28) float 0..1,
    `labels` (N,) int64. Returns the provenance's `real` (module docstring). Raises InstrumentError
    when the file does not load or its outputs are not (N, 10) logits and (N, D <= 128) features."""
    import numpy as np
    import torch

    from grader import genmeasures as gm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is what the sandbox loads
            model = torch.jit.load(str(weights), map_location="cpu").eval()
        with torch.no_grad():
            logits = torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)])
            feats = torch.cat([model.features(images[i:i + batch]) for i in range(0, len(images), batch)])
    except (RuntimeError, AttributeError) as exc:
        raise InstrumentError(f"the saved instrument {weights} does not run: {exc}") from exc
    n = len(images)
    if tuple(logits.shape) != (n, 10) or feats.ndim != 2 or feats.shape[0] != n or not 1 <= feats.shape[1] <= 128:
        raise InstrumentError(f"the saved instrument gives logits {tuple(logits.shape)} and features "
                              f"{tuple(feats.shape)}; expected ({n}, 10) and ({n}, D <= 128)")
    probs = torch.softmax(logits.double(), 1).numpy()
    predicted = probs.argmax(1)
    mean, cov = gm.feature_stats(feats.double().numpy())
    return {"n": n, "accuracy": float((predicted == np.asarray(labels)).mean()),
            "classifier_score": gm.classifier_score(probs),
            "coverage": gm.class_coverage(predicted, 10),
            "diversity": gm.mean_pairwise_distance(images.reshape(n, -1).numpy(), pairs=DIVERSITY_PAIRS,
                                                   seed=DIVERSITY_SEED),
            "diversity_pairs": DIVERSITY_PAIRS, "diversity_seed": DIVERSITY_SEED,
            "feature_dim": int(feats.shape[1]), "feature_mean": [float(v) for v in mean],
            "feature_cov": [[float(v) for v in row] for row in cov]}


def run_instrument(lab: str | Path, *, data: Mapping[str, Path], out: Path | None = None, device: str = "cpu",
                   epochs: int | None = None, threads: int | None = None, min_accuracy: float | None = None,
                   labs_dirs: Sequence[Path] = (), command: str | None = None,
                   log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Trains the instrument `lab`'s rubric names (seed SEED), saves `<out>/<name>.pt` and
    `<out>/<name>.json` (default `out`: this package's folder) and returns the provenance.
    `threads` defaults to 1 on the CPU. Raises GraderError (InstrumentError) for a lab without
    `generative:`, an unknown instrument, a missing dataset, a test accuracy below `min_accuracy`
    (default the module's MIN_TEST_ACCURACY: nothing is written then), or a stand-in-trained
    instrument aimed at the package's own folder."""
    import torch
    import torchvision  # noqa: F401  (its version is part of the provenance through torch's)

    from grader.datasets import locate
    from grader.fsutil import write_bytes_atomic, write_json_atomic
    from grader.reference_run import pick_device, result_problems

    lab_id, name = lab_instrument(lab, labs_dirs)
    module = instrument_module(name)
    folders: dict[str, Path] = {}
    for ds in module.DATASETS:
        if ds not in data:
            raise GraderError(f"the instrument {name!r} is trained on {ds}: pass --data {ds}=DIR "
                              f"(the real one: dllab data mnist --out DIR)")
        folders[ds] = locate(ds, data[ds])
    records = {ds: _data_record(ds, folder) for ds, folder in folders.items()}
    synthetic = [ds for ds, r in records.items() if r["synthetic"]]
    target = Path(out) if out is not None else HERE
    if synthetic and target.resolve() == HERE.resolve():
        raise InstrumentError(f"{', '.join(synthetic)} in {', '.join(str(folders[d]) for d in synthetic)} is a "
                              f"stand-in: an instrument trained on it is not stored in the package (pass --out DIR)")
    floor = module.MIN_TEST_ACCURACY if min_accuracy is None else min_accuracy
    dev = pick_device(device)
    if threads is None and dev.type == "cpu":
        threads = 1
    if threads:
        torch.set_num_threads(threads)

    started = time.perf_counter()
    result = module.train(data=folders, device=dev, seed=SEED, epochs=epochs)
    scripted = result.pop("module", None) if isinstance(result, dict) else None
    problems = result_problems(result)
    if problems or not isinstance(scripted, torch.jit.ScriptModule):
        raise InstrumentError(f"the instrument {name!r}'s train() " + ("; ".join(problems) if problems else
                              "returned no `module` (the trained TorchScript ScriptModule)"))
    accuracy = float(result["test_accuracy"])
    log(f"{name}: test accuracy {accuracy:.4f} after {result.get('hyp', {}).get('epochs', epochs)} epoch(s), "
        f"{time.perf_counter() - started:.1f} s")
    if accuracy < floor:
        raise InstrumentError(f"the instrument {name!r} reached {accuracy:.4f} test accuracy, below the "
                              f"{floor:.4f} it needs: nothing was written")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, buf)
    weights = buf.getvalue()
    target.mkdir(parents=True, exist_ok=True)
    pt, meta = target / f"{name}.pt", target / f"{name}.json"
    tmp = target / f".{name}.measuring.pt"
    write_bytes_atomic(tmp, weights)
    try:
        images, labels = module.test_split(folders)
        real = measure_real(tmp, images, labels)
    finally:
        tmp.unlink(missing_ok=True)
    if abs(real["accuracy"] - accuracy) > 1e-3:
        raise InstrumentError(f"the saved instrument classifies {real['accuracy']:.4f} of the test split "
                              f"correctly where train() reported {accuracy:.4f}: nothing was written")
    seconds = round(time.perf_counter() - started, 2)
    doc = {
        "name": name, "schema": 1, "description": INSTRUMENTS[name],
        "architecture": getattr(module, "ARCHITECTURE", None),
        "parameters": result.get("parameters"), "feature_dim": real["feature_dim"],
        "input": "(N, 1, 28, 28) float, pixels 0..1; the module normalizes itself",
        "weights_sha256": hashlib.sha256(weights).hexdigest(), "weights_bytes": len(weights),
        "data": {**records[module.DATASETS[0]], "train_images": result.get("train_images"), "test_images": real["n"]},
        "seed": SEED, "epochs": (result.get("hyp") or {}).get("epochs", epochs), "optimizer": result.get("optimizer"),
        "hyp": result.get("hyp"), "test_accuracy": accuracy, "test_loss": result.get("test_loss"), "test_n": real["n"],
        "per_class_accuracy": result.get("per_class_accuracy"), "history": result.get("history"),
        "seconds": seconds, "train_seconds": round(float(result.get("seconds") or 0.0), 2),
        "device": dev.type, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "python": platform.python_version(), "grader": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or f"dllab reference run {lab} --instrument", "lab": lab_id,
        "real": real,
    }
    if len(records) > 1:
        doc["datasets"] = records
    write_bytes_atomic(pt, weights)
    write_json_atomic(meta, doc)
    for path in (pt, meta):
        path.chmod(0o644)  # read by whoever grades (the atomic write leaves 0600)
    log(f"{name}: wrote {pt} ({len(weights) / 1e6:.2f} MB) and {meta}")
    return doc
