"""Independent verification: the trained model, evaluated again where the student's code never ran.

After the last student cell, the teardown code (`teardown_source()`, run by execute in the
student's kernel) captures the model the notebook evaluated on its test split as TorchScript
or a `torch.export` program, and describes the test split and its transform as data
(grader/probe/rec_export.py). `verify_run` then, on the host:

1. reads `probe/verify/spec.json` strictly (size cap, schema, known transform steps only);
2. maps the test split onto the lab's read-only dataset mounts: data the student's code could
   have changed (anything under /tmp/work) is never used;
3. starts a fresh sandbox (same bwrap confinement, mounts and limits as the notebook, no GPU)
   running a small self-contained evaluator: it loads the model (`torch.jit.load` /
   `torch.export.load` of an untrusted file happens only in there), rebuilds the dataset and
   transform with torchvision, and writes one JSON line of counts;
4. reads that line (size-capped, never unpickled) and returns the `verified` block of
   evidence.json: test accuracy and per-class accuracy under the dataset's canonical class
   names, or a one-sentence reason why there is none.

The evaluator also recomputes the student model's own predictions on the first test images
(recorded in the kernel): when they disagree, the capture or the transform was not
reproduced faithfully and no numbers are reported, so a student is never flagged for a
mismatch the grader caused.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from grader import sandbox
from grader.dataset_id import class_index
from grader.datasets import FILE_NAMES
from grader.errors import GraderError
from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec
from grader.parsers.classes import CLASS_SETS

VERIFY_TIMEOUT_S = 600.0
"""The evaluator's wall time (sandbox start, loading, the whole test split)."""
MAX_SPEC_BYTES = 256 * 1024
MAX_MODEL_BYTES = 2 << 30
MAX_STDOUT_BYTES = 1 << 20
MIN_AGREEMENT = 0.95
"""Share of the sampled test images on which the captured model must predict what the
student's own model predicted in the kernel."""

_OPS: dict[str, tuple[str, ...]] = {
    "ToTensor": (), "PILToTensor": (), "ToImage": (), "ToPureTensor": (),
    "ConvertImageDtype": ("dtype",), "ToDtype": ("dtype", "scale"),
    "Normalize": ("mean", "std"), "Resize": ("size", "interpolation", "max_size", "antialias"),
    "CenterCrop": ("size",), "Grayscale": ("num_output_channels",),
}
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
_DTYPES = ("float32", "float64", "float16", "bfloat16", "uint8")
_TEST_DIRS = {"evaluation": "evaluation", "test": "evaluation", "testing": "evaluation",
              "eval": "evaluation", "validation": "validation", "val": "validation",
              "valid": "validation"}
_CAPTURES = {"script": "torchscript", "trace": "torchscript", "export": "export"}


class _NotVerified(Exception):
    """Verification cannot be done; the message is the reason, one sentence for the TA."""


# ---------------------------------------------------------------- API for the pipeline


def teardown_source() -> str:
    """Code for `run_notebook(teardown_code=...)`: captures the model for `verify_run`."""
    return (
        "def __dllab_verify():\n"
        "    import sys\n"
        "    probe = sys.modules.get('_dllab_probe')\n"
        "    if probe is None or not hasattr(probe, 'export_for_verification'):\n"
        "        print('dllab teardown: the probe is not loaded')\n"
        "        return\n"
        f"    print('dllab teardown:', probe.export_for_verification({PROBE_DIR_TOKEN + '/verify'!r}))\n"
        "__dllab_verify()\n"
        "del __dllab_verify\n"
    )


def verify_run(*, run_dir: Path, probe_dir: Path, spec: SandboxSpec, limits: SandboxLimits,
               dataset_hint: str | None, timeout_s: float = VERIFY_TIMEOUT_S,
               workdir: str = "") -> dict[str, Any]:
    """The `verified` block of evidence.json for one executed notebook.

    `run_dir` holds the run's `run.json`; `probe_dir` is what execute harvested from the
    sandbox (`run_dir/probe`); `spec` and `limits` are the ones the notebook ran with.
    `dataset_hint` ("cifar10", "food11", "mnist") names the lab's dataset when the test data
    alone does not (an ImageFolder). `workdir` is the notebook's folder in the submission,
    where the run had its own `./data` (grader.sandbox.place_mounts). Never raises for
    anything the submission did.
    """
    started = time.monotonic()
    job_spec: dict[str, Any] = {}
    try:
        _check_run(run_dir)
        job_spec = read_spec(probe_dir / "verify" / "spec.json")
        model = _model_file(probe_dir / "verify", job_spec)
        job = plan(job_spec, mounts=spec.mounts, dataset_hint=dataset_hint,
                   host_paths=spec.sandbox == "none", workdir=workdir)
        counts = _evaluate(job, model, spec=spec, limits=limits,
                           timeout_s=min(timeout_s, limits.wall_timeout_s))
        return _block(job_spec, job, counts, seconds=time.monotonic() - started)
    except _NotVerified as exc:
        # the cell says which model the reason is about, once the capture is known
        return {"reason": str(exc), **({"cell": job_spec["cell"]} if job_spec.get("cell") is not None else {})}
    except Exception as exc:  # noqa: BLE001 - one notebook's verification must not stop a batch
        return {"reason": f"the grader's verification failed ({type(exc).__name__}: {str(exc)[:200]}); "
                          f"please report this"}


# ---------------------------------------------------------------- reading what the kernel wrote


def _check_run(run_dir: Path) -> None:
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    status = run.get("status") if isinstance(run, dict) else None
    if status == "killed":
        raise _NotVerified("the run was killed, so the trained model could not be captured")
    if status == "not-run":
        raise _NotVerified("the notebook did not run, so there is no trained model to evaluate")


def _regular(path: Path, cap: int, what: str) -> int:
    try:
        info = path.lstat()
    except OSError:
        raise _NotVerified(f"the {what} is missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise _NotVerified(f"the {what} is not a regular file")
    if info.st_size > cap:
        raise _NotVerified(f"the {what} is too large ({info.st_size} bytes)")
    return info.st_size


def read_spec(path: Path) -> dict[str, Any]:
    """spec.json as written by the kernel, validated; raises _NotVerified with the reason."""
    try:
        _regular(path, MAX_SPEC_BYTES, "model description (spec.json)")
    except _NotVerified:
        raise _NotVerified("the model was not captured after the notebook ran (the teardown "
                           "did not finish, or the probe was not loaded)") from None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise _NotVerified("the model description (spec.json) is not valid JSON") from None
    return validate_spec(data)


def validate_spec(data: Any) -> dict[str, Any]:
    """The spec's fields, type-checked; raises _NotVerified naming the first bad one."""
    _need(isinstance(data, dict), "spec")
    if "error" in data:
        _need(isinstance(data["error"], str), "error")
        text = data["error"].strip().rstrip(".")[:400] or "the model could not be captured"
        raise _NotVerified(text + ".")
    _need(data.get("version") == 1, "version")
    model, ds, tr, sample = (data.get(k) for k in ("model", "dataset", "transform", "sample"))
    _need(isinstance(model, dict) and _str(model.get("class")) and model.get("capture") in _CAPTURES
          and model.get("file") == "model.pt" and _int(model.get("bytes"))
          and isinstance(model.get("flatten_input", False), bool)
          and model.get("evaluated_in_train_mode") in (None, True, False)
          and model.get("mode_sensitive") in (None, True, False), "model")
    _need(isinstance(ds, dict) and _str(ds.get("class"))
          and (ds.get("root") is None or _path(ds["root"]))
          and (ds.get("files_dir") is None or _path(ds["files_dir"]))
          and ds.get("train") in (None, True, False) and _int(ds.get("length"))
          and isinstance(ds.get("classes"), list) and len(ds["classes"]) <= 200
          and all(_str(c) for c in ds["classes"])
          and ds.get("split") in (None, "train", "val", "test")
          and ds.get("default_loader") in (None, True, False)
          and isinstance(ds.get("subset", False), bool)
          and isinstance(ds.get("custom", False), bool), "dataset")
    _need(isinstance(tr, dict) and isinstance(tr.get("steps"), list) and len(tr["steps"]) <= 50
          and isinstance(tr.get("unknown"), list) and all(isinstance(u, str) for u in tr["unknown"])
          and isinstance(tr.get("repr", ""), str), "transform")
    if tr["unknown"]:
        shown = "; ".join(u[:120] for u in tr["unknown"][:3])
        raise _NotVerified(f"the test transform uses steps the grader cannot rebuild ({shown})")
    steps = [_step(s) for s in tr["steps"]]
    _need(isinstance(sample, dict) and isinstance(sample.get("keys"), list)
          and isinstance(sample.get("preds"), list) and len(sample["keys"]) == len(sample["preds"]) <= 256
          and all(isinstance(k, int) and not isinstance(k, bool) or _str(k) for k in sample["keys"])
          and all(_int(p) for p in sample["preds"])
          and (sample.get("labels") is None or isinstance(sample["labels"], list)
               and len(sample["labels"]) == len(sample["keys"])
               and all(y is None or _int(y) for y in sample["labels"])), "sample")
    evaluation = data.get("evaluation") if isinstance(data.get("evaluation"), dict) else {}
    cell = evaluation.get("cell")
    return {"model": model, "dataset": ds, "steps": steps, "sample": sample,
            "cell": cell if _int(cell) else None}


def _need(ok: bool, key: str) -> None:
    if not ok:
        raise _NotVerified(f"the model description (spec.json) is malformed at `{key}`")


def _str(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 200


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 40


def _path(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("/") and len(v) <= 1000 and "\0" not in v


def _nums(v: Any, *, positive: bool = False) -> bool:
    return (isinstance(v, list) and 1 <= len(v) <= 4 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        and (x > 0 or not positive) for x in v))


def _size(v: Any) -> bool:
    ok = lambda x: _int(x) and 1 <= x <= 8192  # noqa: E731
    return ok(v) or (isinstance(v, list) and 1 <= len(v) <= 2 and all(ok(x) for x in v))


def _step(s: Any) -> dict[str, Any]:
    """One transform step, checked against what the evaluator can rebuild."""
    if not isinstance(s, dict) or s.get("op") not in _OPS or s.get("family") not in ("v1", "v2"):
        raise _NotVerified(f"the test transform uses a step the grader cannot rebuild ({str(s)[:120]})")
    op = s["op"]
    extra = set(s) - {"op", "family", *_OPS[op]}
    checks = {
        "Normalize": lambda: _nums(s.get("mean")) and _nums(s.get("std"), positive=True),
        "Resize": lambda: _size(s.get("size")) and s.get("interpolation") in (None, *_INTERPOLATIONS)
        and (s.get("max_size") is None or _int(s["max_size"])) and s.get("antialias") in (None, True, False),
        "CenterCrop": lambda: _size(s.get("size")),
        "Grayscale": lambda: s.get("num_output_channels") in (1, 3),
        "ConvertImageDtype": lambda: s.get("dtype") in _DTYPES,
        "ToDtype": lambda: s.get("dtype") in _DTYPES and s.get("scale") in (True, False),
    }
    if extra or not checks.get(op, lambda: True)():
        raise _NotVerified(f"the test transform's {op} step has parameters the grader cannot "
                           f"rebuild ({json.dumps(s)[:160]})")
    return {k: s.get(k) for k in ("op", "family", *_OPS[op])}


def transform_text(steps: list[dict[str, Any]]) -> str:
    """The transform for a reader: `ToTensor() | Normalize(mean=[0.5, ...], std=[...])`."""
    parts = []
    for s in steps:
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in s.items() if k not in ("op", "family") and v is not None)
        parts.append(f"{'v2.' if s['family'] == 'v2' else ''}{s['op']}({args})")
    return " | ".join(parts) or "(none)"


def _model_file(folder: Path, job_spec: Mapping[str, Any]) -> Path:
    path = folder / "model.pt"
    if not os.path.lexists(path):
        size = job_spec["model"]["bytes"]
        raise _NotVerified(f"the captured model ({size / 2**20:.0f} MiB) did not come out of the "
                           f"sandbox (over the copy limit?)")
    _regular(path, MAX_MODEL_BYTES, "captured model file")
    return path


# ---------------------------------------------------------------- the test split on the mounts


def _mount_of(path: str, mounts: Mapping[str, str]) -> tuple[str, str] | None:
    """(sandbox mount point, host folder) of the read-only mount holding `path`, if any."""
    p = PurePosixPath(os.path.normpath(path))
    best = None
    for inside, host in mounts.items():
        target = PurePosixPath(inside if inside.startswith("/") else os.path.normpath(f"{sandbox.CWD}/{inside}"))
        if (p == target or target in p.parents) and (best is None or len(str(target)) > len(best[0])):
            best = (str(target), host)
    return best


def _host_path(path: str, mounts: Mapping[str, str]) -> Path | None:
    found = _mount_of(path, mounts)
    if found is None:
        return None
    rest = PurePosixPath(os.path.normpath(path)).relative_to(found[0])
    return Path(found[1]) / rest


def _evaluator_path(path: str, placed: Mapping[str, str], mounts: Mapping[str, str]) -> str:
    """`path`, under one of the run's placed mounts, as the evaluator's sandbox sees it: the
    evaluator mounts each dataset once, at its place in `mounts`, not in the notebook's folder."""
    inside, host = _mount_of(path, placed)  # type: ignore[misc] - the caller found it there
    rest = PurePosixPath(os.path.normpath(path)).relative_to(inside)
    base = next((k for k, h in sorted(mounts.items()) if h == host), inside)
    target = base if base.startswith("/") else os.path.normpath(f"{sandbox.CWD}/{base}")
    return os.path.normpath(str(PurePosixPath(target) / rest))


def plan(job_spec: Mapping[str, Any], *, mounts: Mapping[str, str], dataset_hint: str | None,
         host_paths: bool = False, workdir: str = "") -> dict[str, Any]:
    """The evaluator's job: which dataset, where (sandbox paths, or host paths when the run
    had no sandbox), the transform, the class mapping and the sample to cross-check.
    `mounts` are the lab's; `workdir` is the notebook's folder, where the run had them again
    as its `./data` (grader.sandbox.place_mounts): data read there is the lab's too."""
    placed = sandbox.place_mounts(mounts, workdir=workdir, submission=None).mounts
    ds = job_spec["dataset"]
    cls = ds["class"]
    job: dict[str, Any] = {"steps": job_spec["steps"], "capture": job_spec["model"]["capture"],
                           "flatten_input": bool(job_spec["model"].get("flatten_input")),
                           "sample_keys": job_spec["sample"]["keys"],
                           "sample_preds": job_spec["sample"]["preds"]}
    if cls in ("CIFAR10", "MNIST"):
        name = cls.lower()
        folder = {"CIFAR10": "cifar-10-batches-py", "MNIST": "MNIST"}[cls]
        if ds["train"] is not False:
            raise _NotVerified(f"the model was evaluated on {cls}'s training split, not its test split")
        if ds["root"] is None:
            raise _NotVerified(f"the {cls} test split has no root folder the grader can find")
        where = f"{ds['root'].rstrip('/')}/{folder}"
        host = _host_path(where, placed)
        if host is None or not host.is_dir():
            raise _NotVerified(f"the test data was read from {where}, which is not one of the lab's "
                               f"read-only dataset folders")
        root = str(host.parent) if host_paths else str(PurePosixPath(_evaluator_path(where, placed, mounts)).parent)
        job.update(kind=name, root=root, split="test", mapping=list(range(len(CLASS_SETS[name]))))
    elif (cls == "ImageFolder" or ds.get("custom")) and dataset_hint in (None, "food11"):
        job.update(_food11(ds, placed, host_paths=host_paths, sample=job_spec["sample"]))
        if not host_paths:
            job["root"] = _evaluator_path(job["root"], placed, mounts)
    elif ds.get("custom"):
        raise _NotVerified(f"the test data is read by the notebook's own {cls} class"
                           + (f" from {ds['files_dir']}" if ds.get("files_dir") else "")
                           + (f" ({dataset_hint})" if dataset_hint else "")
                           + "; the grader rebuilds only CIFAR-10, MNIST and Food-11 test splits")
    else:
        article = "an" if cls[:1].upper() in "AEIOU" else "a"
        raise _NotVerified(f"the test data is {article} {cls}"
                           + (f" of {dataset_hint}" if dataset_hint else "")
                           + "; the grader rebuilds only CIFAR-10, MNIST and Food-11 test splits")
    if ds.get("subset"):
        job["note"] = "the notebook evaluated a subset; the whole test split was used"
    return job


def _food11(ds: Mapping[str, Any], mounts: Mapping[str, str], *, host_paths: bool,
            sample: Mapping[str, Any]) -> dict[str, Any]:
    """The job for Food-11's evaluation (or validation) split, read from its read-only mount,
    for an ImageFolder or a notebook's own dataset class over its image files."""
    custom = bool(ds.get("custom"))
    if ds.get("default_loader") is False:
        raise _NotVerified("the test ImageFolder uses its own image loader, which the grader cannot rebuild")
    split = next((_TEST_DIRS[PurePosixPath(p).name.lower()] for p in (ds.get("files_dir"), ds.get("root"))
                  if p and PurePosixPath(p).name.lower() in _TEST_DIRS), None)
    if split is None:
        what = f"the notebook's own {ds['class']} class" if custom else "the evaluated ImageFolder"
        where = ds.get("files_dir") or ds.get("root") or "several folders"
        raise _NotVerified(f"{what} reads {where}, which is not Food-11's evaluation or validation split")
    food = [(inside, host) for inside, host in mounts.items() if (Path(host) / split).is_dir()
            and (Path(host) / "training").is_dir()]
    if ds.get("files_dir"):  # prefer the mount the images really came from
        food.sort(key=lambda m: _mount_of(ds["files_dir"], {m[0]: m[1]}) is None)
    if not food:
        raise _NotVerified("Food-11 is not mounted, so the test split cannot be read independently")
    inside, host = food[0]
    target = inside if inside.startswith("/") else os.path.normpath(f"{sandbox.CWD}/{inside}")
    classes = CLASS_SETS["food11"]
    if custom:  # its labels are whatever its __getitem__ returns: read them, not its names
        mapping = _label_mapping(sample, ds["class"], len(classes))
    else:
        mapping = []
        for name in ds["classes"]:
            index = class_index(name, classes)
            if index is None:
                raise _NotVerified(f"the test dataset's class {name!r} is not a Food-11 class")
            mapping.append(index)
    if len(mapping) != len(classes) or sorted(mapping) != list(range(len(classes))):
        raise _NotVerified(f"the test dataset has {len(mapping)} classes that do not map one to one "
                           f"onto Food-11's {len(classes)}")
    job = {"kind": "food11", "root": str(Path(host) / split) if host_paths else f"{target}/{split}",
           "split": "test" if split == "evaluation" else "val", "mapping": mapping}
    if custom:  # nothing but the cross-check shows that its images were read as the evaluator reads them
        job["require_sample"] = True
    return job


def _label_mapping(sample: Mapping[str, Any], cls: str, n_classes: int) -> list[int]:
    """Model output -> Food-11 class, from the labels a notebook's own dataset gave the sampled
    files (`<class>_<n>.jpg`): the identity when every label is its file's class, else the
    one-to-one map the labels show for all classes."""
    pairs: dict[int, int] = {}
    for key, label in zip(sample["keys"], sample.get("labels") or []):
        m = FILE_NAMES["food11"].match(key) if isinstance(key, str) else None
        if m is None or label is None:
            continue
        if pairs.setdefault(label, int(m.group(1))) != int(m.group(1)):
            raise _NotVerified(f"the notebook's own {cls} class gives label {label} to images of two "
                               f"Food-11 classes, so its labels cannot be matched with Food-11's")
    if not pairs:
        raise _NotVerified(f"the labels of the notebook's own {cls} class could not be matched with "
                           f"Food-11's file names")
    if all(label == c for label, c in pairs.items()):
        return list(range(n_classes))
    if sorted(pairs) == list(range(n_classes)) and sorted(pairs.values()) == list(range(n_classes)):
        return [pairs[label] for label in range(n_classes)]
    raise _NotVerified(f"the notebook's own {cls} class numbers Food-11's classes differently, and the "
                       f"sampled test images do not show the label of every class")


# ---------------------------------------------------------------- the evaluator (runs sandboxed)
# These functions are sent as source to a fresh Python in the sandbox: standard library,
# torch, torchvision and PIL only, no grader imports.


def _eval_build_transform(steps: list) -> Any:
    """torchvision transform from the validated steps (same family, same parameters)."""
    import torch
    from torchvision import transforms as v1
    from torchvision.transforms import InterpolationMode

    try:
        from torchvision.transforms import v2
    except ImportError:  # an old torchvision
        v2 = None
    ops = []
    for s in steps:
        fam = v2 if s["family"] == "v2" and v2 is not None else v1
        op = s["op"]
        if op in ("ToTensor", "PILToTensor", "ToImage", "ToPureTensor"):
            ops.append(getattr(fam, op)())
        elif op == "Normalize":
            ops.append(fam.Normalize(s["mean"], s["std"]))
        elif op == "Resize":
            kw = {"max_size": s.get("max_size")}
            if s.get("interpolation"):
                kw["interpolation"] = InterpolationMode(s["interpolation"])
            if s.get("antialias") is not None:
                kw["antialias"] = s["antialias"]
            ops.append(fam.Resize(s["size"], **kw))
        elif op == "CenterCrop":
            ops.append(fam.CenterCrop(s["size"]))
        elif op == "Grayscale":
            ops.append(fam.Grayscale(num_output_channels=s["num_output_channels"]))
        elif op == "ConvertImageDtype":
            ops.append(fam.ConvertImageDtype(getattr(torch, s["dtype"])))
        elif op == "ToDtype":
            ops.append(fam.ToDtype(getattr(torch, s["dtype"]), scale=s["scale"]))
        else:
            raise ValueError("unknown transform step " + op)
    return v1.Compose(ops)


def _eval_dataset(job: dict, transform: Any) -> tuple:
    """(dataset of (x, label), the key of item i as the kernel's sample names it)."""
    import os
    import re

    import torchvision

    if job["kind"] == "cifar10":
        register_cifar10_checksums(job["root"])  # noqa: F821 - sent along as source
        ds = torchvision.datasets.CIFAR10(job["root"], train=False, download=False, transform=transform)
        return ds, list(range(len(ds)))
    if job["kind"] == "mnist":
        ds = torchvision.datasets.MNIST(job["root"], train=False, download=False, transform=transform)
        return ds, list(range(len(ds)))
    from torchvision.datasets.folder import default_loader

    pattern = re.compile(r"^(\d+)_\d+\.jpg$")
    files = sorted(n for n in os.listdir(job["root"]) if pattern.match(n))

    class Food:
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            img = default_loader(os.path.join(job["root"], files[i]))
            return transform(img), int(pattern.match(files[i]).group(1))

    return Food(), files


def _eval_main(job_path: str) -> None:
    """Evaluate the captured model; print one JSON line of counts on the original stdout."""
    import json
    import os
    import traceback

    out = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # whatever the model prints goes nowhere
    try:
        import torch

        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        with open(job_path, encoding="utf-8") as fh:
            job = json.load(fh)
        transform = _eval_build_transform(job["steps"])
        ds, keys = _eval_dataset(job, transform)
        model_path = os.path.join(os.path.dirname(job_path), "model.pt")
        if job["capture"] == "export":
            model = torch.export.load(model_path).module()
        else:
            model = torch.jit.load(model_path, map_location="cpu")
            model.eval()
        loader = torch.utils.data.DataLoader(ds, batch_size=100, shuffle=False, num_workers=0)
        mapping = job["mapping"]
        n_classes = len(mapping)
        per_class = [[0, 0] for _ in range(n_classes)]
        raw = []
        chunk = None  # a model captured for one batch size gets that many, padded

        def scores(xb):
            out = model(xb)
            for _ in range(3):
                if isinstance(out, (list, tuple)):
                    out = out[0]
                elif isinstance(out, dict):
                    out = out.get("logits", next(iter(out.values())))
            return out

        with torch.no_grad():
            for xb, yb in loader:
                if job["flatten_input"]:
                    xb = xb.flatten(1)
                if chunk is None:
                    try:
                        pred = scores(xb).argmax(dim=1)
                    except Exception:
                        chunk = 2
                if chunk is not None:
                    parts = []
                    for i in range(0, len(xb), chunk):
                        part = xb[i:i + chunk]
                        pad = chunk - len(part)
                        if pad:
                            part = torch.cat([part, part[-1:].expand(pad, *part.shape[1:])])
                        parts.append(scores(part).argmax(dim=1)[:chunk - pad])
                    pred = torch.cat(parts)
                for p, y in zip(pred.tolist(), yb.tolist()):
                    raw.append(p)
                    per_class[y][1] += 1
                    per_class[y][0] += int(0 <= p < n_classes and mapping[p] == y)
        index = {k: i for i, k in enumerate(keys)}
        same = compared = 0
        for k, p in zip(job["sample_keys"], job["sample_preds"]):
            i = index.get(k)
            if i is not None:
                compared += 1
                same += int(raw[i] == p)
        result = {"ok": True, "n": len(raw), "per_class": per_class, "same": same, "compared": compared}
    except BaseException as exc:  # noqa: BLE001 - reported to the host as data
        tb = traceback.format_exc().strip().splitlines()
        result = {"ok": False, "error": (type(exc).__name__ + ": " + str(exc))[:300], "where": tb[-3:]}
    out.write(json.dumps(result) + "\n")
    out.flush()


def evaluator_source() -> str:
    """The evaluator script: the functions above, CIFAR-10 stand-in checksums, and a main."""
    from grader.datasets import register_cifar10_checksums

    parts = [inspect.getsource(f) for f in (register_cifar10_checksums, _eval_build_transform,
                                            _eval_dataset, _eval_main)]
    return "from typing import Any\n\n" + "\n\n".join(parts) + "\n\nimport sys\n_eval_main(sys.argv[1])\n"


# ---------------------------------------------------------------- running it


def _evaluate(job: dict[str, Any], model: Path, *, spec: SandboxSpec, limits: SandboxLimits,
              timeout_s: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dllab-verify-"))
    try:
        kdir = work / "k"
        kdir.mkdir()
        (work / "sub").mkdir()
        shutil.copyfile(model, kdir / "model.pt")
        (kdir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (kdir / "evaluate.py").write_text(evaluator_source(), encoding="utf-8")
        for p in (work, kdir, work / "sub"):
            os.chmod(p, 0o755)  # readable, not writable, by the sandbox uid
        for p in kdir.iterdir():
            os.chmod(p, 0o644)
        inner = [sys.executable, "-I", "-B", str(kdir / "evaluate.py"), str(kdir / "job.json")]
        with contextlib.ExitStack() as stack:
            if spec.sandbox == "none":
                cmd = [*sandbox.rlimit_prefix(limits), *inner]
            else:
                uid = stack.enter_context(sandbox.allocate_uid()) if sandbox.is_root() else None
                try:
                    sandbox.check_mounts(spec.mounts, other_uid=uid is not None)
                except GraderError as exc:
                    raise _NotVerified(f"the lab's datasets cannot be mounted for the evaluation ({exc})") from None
                from grader.execute import _sandbox_env

                cmd = sandbox.build_command(
                    inner, run_dir=work, kernel_dir=kdir, submission=work / "sub", mounts=spec.mounts,
                    limits=limits, env=_sandbox_env(SandboxSpec()), uid=uid, gpus=(),
                    bwrap=sandbox.bwrap_path() or "bwrap")
            stdout, stderr, code = _run_capped(cmd, cwd=str(work), timeout_s=timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if code == "timeout":
        raise _NotVerified(f"the independent evaluation ran past its time limit of {timeout_s:g} s")
    result = None
    for line in stdout.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict) and "ok" in value:
                result = value
    if result is None:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        raise _NotVerified(f"the evaluator crashed without a result ({tail[0][:200]})")
    if result.get("ok") is not True:
        raise _NotVerified(f"the evaluator failed: {str(result.get('error'))[:300]}")
    return _check_counts(result, len(job["mapping"]))


def _run_capped(cmd: list[str], *, cwd: str, timeout_s: float) -> tuple[bytes, bytes, int | str]:
    """Run `cmd` in its own process group; keep at most MAX_STDOUT_BYTES of each stream."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    kept: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}

    def drain(stream: Any, buf: bytearray) -> None:
        with contextlib.suppress(Exception):
            for chunk in iter(lambda: stream.read1(65536), b""):
                if len(buf) < MAX_STDOUT_BYTES:
                    buf += chunk[:MAX_STDOUT_BYTES - len(buf)]

    threads = [threading.Thread(target=drain, args=(proc.stdout, kept[1]), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, kept[2]), daemon=True)]
    for t in threads:
        t.start()
    try:
        code: int | str = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = "timeout"
    finally:
        sandbox.kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    for t in threads:
        t.join(timeout=5)
    return bytes(kept[1]), bytes(kept[2]), code


def _check_counts(result: Mapping[str, Any], n_classes: int) -> dict[str, Any]:
    per_class = result.get("per_class")
    ok = (_int(result.get("n")) and _int(result.get("same")) and _int(result.get("compared"))
          and isinstance(per_class, list) and len(per_class) == n_classes
          and all(isinstance(pc, list) and len(pc) == 2 and _int(pc[0]) and _int(pc[1]) and pc[0] <= pc[1]
                  for pc in per_class)
          and sum(pc[1] for pc in per_class) == result["n"] and result["same"] <= result["compared"])
    if not ok or result["n"] == 0:
        raise _NotVerified("the evaluator's result is malformed or counts no test images")
    return dict(result)


def _block(job_spec: Mapping[str, Any], job: Mapping[str, Any], counts: Mapping[str, Any], *,
           seconds: float) -> dict[str, Any]:
    compared, same = counts["compared"], counts["same"]
    if job.get("require_sample") and not compared:
        raise _NotVerified("none of the sampled test images could be found again, so the grader cannot "
                           "tell that it read them as the notebook's own dataset class does")
    if compared and same < MIN_AGREEMENT * compared:
        raise _NotVerified(f"the captured model predicted differently from the notebook's own model on "
                           f"{compared - same} of {compared} sampled test images, so its capture or the "
                           f"test transform could not be reproduced faithfully")
    classes = CLASS_SETS[job["kind"]]
    per_class = {classes[i]: round(c / t, 4) for i, (c, t) in enumerate(counts["per_class"]) if t}
    block: dict[str, Any] = {
        "test_accuracy": round(sum(c for c, _ in counts["per_class"]) / counts["n"], 4),
        "per_class_accuracy": per_class, "test_images": counts["n"],
        "model": job_spec["model"]["class"], "method": _CAPTURES[job_spec["model"]["capture"]],
        "capture": job_spec["model"]["capture"], "transform": transform_text(job["steps"]),
        "dataset": job["kind"], "split": job["split"],
        "sample_agreement": round(same / compared, 4) if compared else None,
        "seconds": round(seconds, 2),
        # In[n] of the evaluation whose model this is: a notebook of several sections credits
        # the verification only to the section holding that cell (grader/sections.py).
        "cell": job_spec.get("cell")}
    notes = [job["note"]] if job.get("note") else []
    model = job_spec["model"]
    if model.get("evaluated_in_train_mode") is True and model.get("mode_sensitive") is True:
        notes.append("the notebook evaluated the model in training mode (no model.eval()); "
                     "it was verified in eval mode, so small differences are expected")
    if notes:
        block["note"] = "; ".join(notes)
    return block
