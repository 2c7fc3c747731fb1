"""Reading `spec.json`, the kernel's description of the captured model, strictly.

The file is written by code running in the student's process, so it is data to validate, never
to trust: a size cap, a nesting bound, a schema, and known transform steps only. Every failure
is a `NotVerified` whose message is the reason, one sentence for the TA.
"""

from __future__ import annotations

import json
import math
import re
import stat
from pathlib import Path
from typing import Any

MAX_SPEC_BYTES = 256 * 1024
"""spec.json's size cap (bytes)."""

OPS: dict[str, tuple[str, ...]] = {
    "ToTensor": (), "PILToTensor": (), "ToImage": (), "ToPureTensor": (),
    "ConvertImageDtype": ("dtype",), "ToDtype": ("dtype", "scale"),
    "Normalize": ("mean", "std"), "Resize": ("size", "interpolation", "max_size", "antialias"),
    "CenterCrop": ("size",), "Grayscale": ("num_output_channels",),
}
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
_DTYPES = ("float32", "float64", "float16", "bfloat16", "uint8")
CAPTURES = {"script": "torchscript", "trace": "torchscript", "export": "export"}
"""The capture the kernel claims -> the method named in evidence (the file itself decides how it
is loaded: grader.verify.archive)."""


class NotVerified(Exception):
    """Verification cannot be done; the message is the reason, one sentence for the TA."""


def regular(path: Path, cap: int, what: str) -> int:
    """The size (bytes) of `path`, a regular file (not a link) of at most `cap` bytes."""
    try:
        info = path.lstat()
    except OSError:
        raise NotVerified(f"the {what} is missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise NotVerified(f"the {what} is not a regular file")
    if info.st_size > cap:
        raise NotVerified(f"the {what} is too large ({info.st_size} bytes)")
    return info.st_size


def read_spec(path: Path, *, model_file: str = "model.pt") -> dict[str, Any]:
    """spec.json as written by the kernel (or a `more<k>.json` of another dataset's model, whose
    file is `model_file`), validated; raises NotVerified with the reason."""
    try:
        regular(path, MAX_SPEC_BYTES, "model description (spec.json)")
    except NotVerified:
        raise NotVerified("the model was not captured after the notebook ran (the teardown "
                          "did not finish, or the probe was not loaded)") from None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        # 20 000 nested brackets fit in 40 KB: a reason for the TA, not a grader crash.
        raise NotVerified("the model description (spec.json) is nested too deeply to be read") from None
    except (ValueError, UnicodeDecodeError):
        raise NotVerified("the model description (spec.json) is not valid JSON") from None
    return validate_spec(data, model_file=model_file)


def validate_spec(data: Any, *, model_file: str = "model.pt") -> dict[str, Any]:
    """The spec's fields, type-checked; raises NotVerified naming the first bad one."""
    _need(isinstance(data, dict), "spec")
    if "error" in data:
        _need(isinstance(data["error"], str), "error")
        text = data["error"].strip().rstrip(".")[:400] or "the model could not be captured"
        raise NotVerified(text + ".")
    _need(data.get("version") == 1, "version")
    model, ds, tr, sample = (data.get(k) for k in ("model", "dataset", "transform", "sample"))
    _need(isinstance(model, dict) and is_str(model.get("class")) and model.get("capture") in CAPTURES
          and model.get("file") == model_file and is_int(model.get("bytes"))
          and isinstance(model.get("flatten_input", False), bool)
          and model.get("evaluated_in_train_mode") in (None, True, False)
          and model.get("mode_sensitive") in (None, True, False), "model")
    _need(isinstance(ds, dict) and is_str(ds.get("class"))
          and (ds.get("root") is None or _path(ds["root"]))
          and (ds.get("files_dir") is None or _path(ds["files_dir"]))
          and ds.get("train") in (None, True, False) and is_int(ds.get("length"))
          and isinstance(ds.get("classes"), list) and len(ds["classes"]) <= 200
          and all(is_str(c) for c in ds["classes"])
          and ds.get("split") in (None, "train", "val", "test")
          and ds.get("default_loader") in (None, True, False)
          and isinstance(ds.get("subset", False), bool)
          and isinstance(ds.get("custom", False), bool), "dataset")
    _need(isinstance(tr, dict) and isinstance(tr.get("steps"), list) and len(tr["steps"]) <= 50
          and isinstance(tr.get("unknown"), list) and all(isinstance(u, str) for u in tr["unknown"])
          and isinstance(tr.get("repr", ""), str), "transform")
    if tr["unknown"]:
        shown = "; ".join(u[:120] for u in tr["unknown"][:3])
        raise NotVerified(f"the test transform uses steps the grader cannot rebuild ({shown})")
    steps = [step(s) for s in tr["steps"]]
    _need(isinstance(sample, dict) and isinstance(sample.get("keys"), list)
          and isinstance(sample.get("preds"), list) and len(sample["keys"]) == len(sample["preds"]) <= 256
          and all(isinstance(k, int) and not isinstance(k, bool) or is_str(k) for k in sample["keys"])
          and all(is_int(p) for p in sample["preds"])
          and (sample.get("labels") is None or isinstance(sample["labels"], list)
               and len(sample["labels"]) == len(sample["keys"])
               and all(y is None or is_int(y) for y in sample["labels"])), "sample")
    evaluation = data.get("evaluation") if isinstance(data.get("evaluation"), dict) else {}
    cell = evaluation.get("cell")
    return {"model": model, "dataset": ds, "steps": steps, "sample": sample,
            "cell": cell if is_int(cell) else None, "runs": runs_of(data.get("runs"), len(sample["preds"]))}


MAX_RUN_ENTRIES = 25
"""Entries of spec.json's `runs` read at most (the kernel captures at most 6 models)."""


def runs_of(runs: Any, n_sample: int) -> list[dict[str, Any]]:
    """spec.json's `runs` (grader/probe/rec_export.py `_export_runs`), each entry validated: a
    capture `{optimizer, class, capture, file, bytes, sample_preds}` or `{optimizer, error}`; a
    malformed entry becomes an error entry, so one bad entry costs only that run."""
    out: list[dict[str, Any]] = []
    for r in runs[:MAX_RUN_ENTRIES] if isinstance(runs, list) else []:
        ref = r.get("optimizer") if isinstance(r, dict) and is_int(r.get("optimizer")) else None
        if isinstance(r, dict) and isinstance(r.get("error"), str):
            out.append({"optimizer": ref, "error": r["error"].strip()[:300] or "not captured"})
        elif (isinstance(r, dict) and ref is not None and is_str(r.get("class"))
              and r.get("capture") in CAPTURES and isinstance(r.get("file"), str)
              and re.fullmatch(r"run\d{1,2}\.pt", r["file"]) and is_int(r.get("bytes"))
              and isinstance(r.get("sample_preds"), list) and len(r["sample_preds"]) == n_sample
              and all(is_int(p) for p in r["sample_preds"])):
            out.append({k: r[k] for k in ("optimizer", "class", "capture", "file", "bytes", "sample_preds")})
        else:
            out.append({"optimizer": ref, "error": "its entry in the model description is malformed"})
    return out


def _need(ok: bool, key: str) -> None:
    if not ok:
        raise NotVerified(f"the model description (spec.json) is malformed at `{key}`")


def is_str(v: Any) -> bool:
    """A short non-empty string (names, classes)."""
    return isinstance(v, str) and 0 < len(v) <= 200


def is_int(v: Any) -> bool:
    """A non-negative int (not a bool) below 2**40."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 40


def _path(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("/") and len(v) <= 1000 and "\0" not in v


def _nums(v: Any, *, positive: bool = False) -> bool:
    return (isinstance(v, list) and 1 <= len(v) <= 4 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        and (x > 0 or not positive) for x in v))


def _size(v: Any) -> bool:
    ok = lambda x: is_int(x) and 1 <= x <= 8192
    return ok(v) or (isinstance(v, list) and 1 <= len(v) <= 2 and all(ok(x) for x in v))


def step(s: Any) -> dict[str, Any]:
    """One transform step, checked against what the evaluator can rebuild."""
    if not isinstance(s, dict) or s.get("op") not in OPS or s.get("family") not in ("v1", "v2"):
        raise NotVerified(f"the test transform uses a step the grader cannot rebuild ({str(s)[:120]})")
    op = s["op"]
    extra = set(s) - {"op", "family", *OPS[op]}
    checks = {
        "Normalize": lambda: _nums(s.get("mean")) and _nums(s.get("std"), positive=True),
        "Resize": lambda: _size(s.get("size")) and s.get("interpolation") in (None, *_INTERPOLATIONS)
        and (s.get("max_size") is None or is_int(s["max_size"])) and s.get("antialias") in (None, True, False),
        "CenterCrop": lambda: _size(s.get("size")),
        "Grayscale": lambda: s.get("num_output_channels") in (1, 3),
        "ConvertImageDtype": lambda: s.get("dtype") in _DTYPES,
        "ToDtype": lambda: s.get("dtype") in _DTYPES and s.get("scale") in (True, False),
    }
    if extra or not checks.get(op, lambda: True)():
        raise NotVerified(f"the test transform's {op} step has parameters the grader cannot "
                          f"rebuild ({json.dumps(s)[:160]})")
    return {k: s.get(k) for k in ("op", "family", *OPS[op])}


def transform_text(steps: list[dict[str, Any]]) -> str:
    """The transform for a reader: `ToTensor() | Normalize(mean=[0.5, ...], std=[...])`."""
    parts = []
    for s in steps:
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in s.items() if k not in ("op", "family") and v is not None)
        parts.append(f"{'v2.' if s['family'] == 'v2' else ''}{s['op']}({args})")
    return " | ".join(parts) or "(none)"
