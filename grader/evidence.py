"""Read the probe's record of a run (host side) and turn it into evidence.json fields.

The events file and the PNGs come out of the sandbox, where student code could have
written anything to them, so every read is capped, files must be regular files (no links,
no FIFOs), every line is validated against the schema of its kind, and nothing is ever
unpickled. A bad line is a warning, never an exception. The same process that ran the
student's code wrote these events, so they say what the code did unless it forged them:
checks should treat them as strong hints, cross-checked by an independent evaluation.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# dataset_name is re-exported: cellflow names the datasets a cell's code mentions with it
from grader import jsondepth
from grader.dataset_id import DataMount, dataset_name, identify  # noqa: F401

MAX_EVENTS_BYTES = 20 * 2**20
MAX_EVENTS = 20000
MAX_PNG_BYTES = 8 * 2**20
_MAX_LINE = 256 * 1024
_STR_CAP = 4000
_LIST_CAP = 2000
MAX_INT = 2**53
"""Largest |integer| in a record (ids, counts, sizes): exact as a float, so the host's float
arithmetic on it never overflows nor rounds."""
MAX_NUM = 1e300
"""Largest |number| in a record: the host squares and sums them (means, spreads) in float64."""
PNG_NAME = re.compile(r"fig-\d{4,6}\.png")

# ---------------------------------------------------------------- schema
# A spec is "int", "count" (an int >= 0), "num" (finite), "str", "bool", "scalar" (any of those), ("opt", spec) (may be
# null), ("list", spec), ("map", spec) (free string keys), ("either", spec, spec) or a dict
# {key: spec} (known keys; every key may be absent).

_INT = ("opt", "int")
_NUM = ("opt", "num")
_STR = ("opt", "str")
_BOOL = ("opt", "bool")
_VALUE = ("opt", ("either", "scalar", ("list", ("opt", "scalar"))))
_NUMS = ("opt", ("list", ("opt", "num")))
_SUBJECT = {"param": "str", "model": _STR, "model_class": _STR, "model_ref": _INT,
            "match": "str", "grad": "bool"}
_HIST = {"source": "str", "bins": _INT, "n": "count", "min": _NUM, "max": _NUM, "mean": _NUM,
         "std": _NUM, "subjects": ("list", _SUBJECT), "counts": ("list", "count"),
         "edges": ("list", "num")}
_AXES = {"kind": "str", "title": _STR, "xlabel": _STR, "ylabel": _STR, "n_lines": "int",
         "n_images": "int", "hists": ("list", _HIST)}
_OUT_AT = ("opt", ("list", "count"))  # [start, end]: characters the cell had written to stdout
# generative labs (grader/probe/rec_genlog.py): where a figure's images came from, its lines
_ORIGIN = ("opt", {"role": "str", "capture_class": _STR, "model_ref": _INT, "why": _STR, "hits": "count",
                   "images": "count"})
_LINE = {"axes": "int", "label": _STR, "title": _STR, "ylabel": _STR, "n": "count",
         "x": ("list", ("opt", "num")), "y": ("list", ("opt", "num"))}
ORIGIN_ROLES = ("samples", "reconstructions", "class-grid", "latent", "data", "unknown")
_SESSION = {"model": _INT, "loader": _INT, "dataset": _INT, "split": _STR, "samples": "int",
            "batches": "int", "grad_enabled": "bool", "training": "bool",
            "loss": _STR, "loss_sum": _NUM, "loss_n": "count", "out_at": _OUT_AT,
            "augment": ("list", "str")}  # random transforms in its data's pipeline (rec_reg)
# rec_reg: snapshots (state_dict, torch.save) of a model taken before a load, with the split its
# newest evaluation pass read before each
_SELECTION = {"from": _INT, "snapshots": "count", "splits": ("map", "count"), "last": _STR, "cells": ("list", _INT),
              "steps_after": "count"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "probe-start": {"version": "int", "pid": "int", "python": "str", "caps": ("map", "int"),
                    "ipython": "bool"},
    "probe-error": {"where": "str", "error": "str", "of": _STR},
    "probe-limit": {"what": "str"},
    "figure": {"trigger": "str", "fig_kind": "str", "n_axes": "int", "axes": ("list", _AXES),
               "subjects": ("list", "str"), "suptitle": _STR, "saved_as": _STR, "png": _STR,
               "origin": _ORIGIN, "lines": ("list", _LINE)},
    "normalize": {"mean": _NUMS, "std": _NUMS, "cls": "str"},
    "dataset": {"class": "str", "module": "str", "via": "str", "root": _STR, "train": _BOOL,
                "split": _STR, "length": _INT, "num_classes": _INT,
                "classes": ("list", "str"), "parent": _INT, "transform": _STR,
                "children": ("list", "int"), "files": ("list", "str"), "md5": ("list", "str"),
                "dirs": ("list", "str")},
    "normalization": {"normalize": _INT, "dataset": _INT, "mean": _NUMS, "std": _NUMS,
                      "split": _STR},
    "dataloader": {"dataset": _INT, "batch_size": _INT, "shuffle": _BOOL, "sampler": _STR,
                   "num_workers": _INT, "drop_last": _BOOL},
    "model": {"class": "str", "module": "str", "repr": _STR, "params": "int",
              "trainable": "int", "last_linear_out": _INT, "layers": ("list", ("list", "str")),
              "dims": ("list", ("list", ("opt", "scalar"))), "via": "str", "shares": ("list", "int")},
    "optimizer": {"type": "str", "module": "str", "lr": _VALUE, "momentum": _VALUE,
                  "weight_decay": _VALUE, "betas": _NUMS, "nesterov": _VALUE,
                  "defaults": ("map", _VALUE), "param_groups": "int", "n_params": "int"},
    "optimizer-state": {"ref": _INT, "steps": "int", "lr_changes": ("list", ("list", _VALUE)),
                        "n_changes": "int", "model": _INT, "models": ("list", "int"),
                        "cells": ("list", _INT), "checksum_start": _NUMS, "checksum_now": _NUMS,
                        "lr_first": _VALUE, "out_at": _OUT_AT},
    # [loader pass, steps, mean, min, max, last] of the losses back-propagated before its steps
    # and a sample of the exact stepped losses: [loader pass, step i in it, loss, sum up to step i]
    "optimizer-stepped": {"ref": _INT, "stepped": ("list", ("list", ("opt", "num"))),
                          "sample": ("opt", {"every": "count", "pow2": "count", "first": "count",
                                             "values": ("list", ("list", ("opt", "num")))})},
    "scheduler": {"type": "str", "module": "str", "optimizer": _INT,
                  "params": ("map", _VALUE)},
    "scheduler-state": {"ref": _INT, "steps": "int", "last_lr": _NUMS},
    "evaluation": _SESSION,
    "training": _SESSION,
    "bind": {"ref": "int", "names": ("list", "str")},
    "weights-loaded": {"model": _INT, "source": "str", "selection": ("opt", _SELECTION)},
    # rec_reg: what regularized each optimizer's steps; a pretrained-weights download (or its failure)
    "reg-state": {"ref": _INT, "steps": "count", "weight_decay": ("list", _NUM),
                  "penalty": {k: "count" for k in ("analyzed", "found", "l1", "l2", "params")},
                  "dropout": ("list", ("list", ("opt", "scalar"))), "batchnorm": ("list", ("list", ("opt", "scalar")))},
    "pretrained": {"source": "str", "name": "str", "url": "str", "ok": "bool", "error": "str"},
}
_COMMON = {"id": "int", "t": "num", "cell": _INT, "kind": "str"}


class _Invalid(Exception):
    """One event does not match its schema."""


def _check(value: Any, spec: Any, where: str, unknown: Counter) -> Any:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise _Invalid(f"{where} is not an object")
        out = {}
        for key, item in value.items():
            if key in spec:
                out[key] = _check(item, spec[key], f"{where}.{key}", unknown)
            else:
                unknown[f"{where}.{str(key)[:40]}"] += 1
        return out
    if isinstance(spec, tuple):
        tag = spec[0]
        if tag == "opt":
            return None if value is None else _check(value, spec[1], where, unknown)
        if tag == "either":
            try:
                return _check(value, spec[1], where, unknown)
            except _Invalid:
                return _check(value, spec[2], where, unknown)
        if tag == "list":
            if not isinstance(value, list):
                raise _Invalid(f"{where} is not a list")
            return [_check(v, spec[1], f"{where}[]", unknown) for v in value[:_LIST_CAP]]
        if tag == "map":
            if not isinstance(value, dict):
                raise _Invalid(f"{where} is not an object")
            return {str(k)[:200]: _check(v, spec[1], f"{where}.*", unknown)
                    for k, v in list(value.items())[:200]}
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INT,
          "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT,
          "num": _finite,
          "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
          "scalar": lambda v: isinstance(v, (str, bool)) or _finite(v)}[spec]
    if not ok(value):
        raise _Invalid(f"{where} is not {spec}")
    return value[:_STR_CAP] if isinstance(value, str) else value


def _finite(v: Any) -> bool:
    """A JSON number the host may compute with: finite and within +-MAX_NUM (`1e400` parses
    to inf, a 400-digit integer overflows float())."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if isinstance(v, int):
        return abs(v) <= MAX_INT
    return math.isfinite(v) and abs(v) <= MAX_NUM


def _check_hists(event: dict[str, Any]) -> None:
    """A figure's recorded histograms must be bars: one more edge than counts, the edges
    strictly increasing (the schema already made them finite and the counts non-negative)."""
    for a in event.get("axes") or []:
        for h in a.get("hists") or []:
            counts, edges = h.get("counts"), h.get("edges")
            if counts is None and edges is None:
                continue
            if counts is None or edges is None or len(edges) != len(counts) + 1 \
                    or any(b <= a for a, b in zip(edges, edges[1:])):
                raise _Invalid("figure.axes[].hists[] has edges that do not bound its counts in increasing order")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def validate_event(obj: Any, unknown: Counter | None = None) -> dict[str, Any]:
    """The event with capped strings and unknown keys removed; raises ValueError if invalid."""
    unknown = Counter() if unknown is None else unknown
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    kind = obj.get("kind")
    if kind not in SCHEMAS:
        raise ValueError(f"unknown kind {str(kind)[:40]!r}")
    try:
        event = _check(obj, {**_COMMON, **SCHEMAS[kind]}, kind, unknown)
        if kind == "figure":
            _check_hists(event)
        return event
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


def _read_capped(path: Path, max_bytes: int) -> tuple[bytes, bool]:
    """Up to `max_bytes` of a regular file (never through a link, never blocking)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        return data[:max_bytes], len(data) > max_bytes
    finally:
        os.close(fd)


def read_events(path: Path, *, max_bytes: int = MAX_EVENTS_BYTES,
                max_events: int = MAX_EVENTS) -> tuple[list[dict[str, Any]], list[str]]:
    """The valid events in the probe's JSON-lines file, and warnings about the rest."""
    notes: Counter = Counter()
    unknown: Counter = Counter()
    try:
        data, truncated = _read_capped(Path(path), max_bytes)
    except OSError as exc:
        return [], [f"no readable events file: {exc.strerror or exc}"]
    lines = data.split(b"\n")
    if truncated:
        lines = lines[:-1]  # cut mid-line
        notes[f"events file larger than {max_bytes} bytes: the rest ignored"] += 1
    events: list[dict[str, Any]] = []
    malformed = 0
    for line in lines:
        if not line.strip():
            continue
        if len(events) >= max_events:
            notes[f"more than {max_events} events: the rest ignored"] += 1
            break
        try:
            if len(line) > _MAX_LINE:
                raise ValueError("line too long")
            obj = jsondepth.loads(line.decode("utf-8"), parse_constant=_reject_constant)  # TooDeep: malformed
        except (ValueError, RecursionError):
            malformed += 1
            continue
        try:
            events.append(validate_event(obj, unknown))
        except ValueError as exc:
            notes[f"event dropped: {exc}"] += 1
    if malformed:
        notes[f"{malformed} malformed line(s) ignored"] += 1
    for where, n in unknown.items():
        notes[f"unknown field {where} ignored"] += n
    warnings = [msg if n == 1 else f"{msg} ({n} times)" for msg, n in notes.most_common(50)]
    if len(notes) > 50:
        warnings.append(f"... and {len(notes) - 50} more kinds of warning")
    return events, warnings


def figure_file(figures_dir: Path, name: str | None, *,
                max_bytes: int = MAX_PNG_BYTES) -> Path | None:
    """The PNG the probe saved under `name`, if it is a plain, capped PNG file; else None."""
    if not name or not PNG_NAME.fullmatch(name):
        return None
    path = Path(figures_dir) / name
    try:
        head, _ = _read_capped(path, 8)
        size = path.lstat().st_size
    except OSError:
        return None
    return path if head == b"\x89PNG\r\n\x1a\n" and size <= max_bytes else None


# ---------------------------------------------------------------- summary


def _split_hint(names: Iterable[str]) -> str | None:
    for name in names:
        low = name.lower()
        for needle, split in (("test", "test"), ("val", "val"), ("train", "train")):
            if needle in low:
                return split
    return None


def summarize_events(events: list[dict[str, Any]], *, figures_dir: Path | None = None,
                     mounts: Sequence[DataMount] = ()) -> dict[str, Any]:
    """The evidence.json fields the probe supports, from validated events.

    Every dataset is named by what it reads (`grader.dataset_id.identify`, given the run's
    dataset `mounts`), and every loader, pass and Normalize that used it carries that name."""
    by_id = {e["id"]: e for e in events}
    names: dict[int, list[str]] = {}
    state: dict[int, dict[str, Any]] = {}
    stepped: dict[int, list[list[Any]]] = {}
    sampled: dict[int, dict[str, Any]] = {}
    reg: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["kind"] == "bind" and e.get("ref") is not None:
            names[e["ref"]] = e.get("names", [])
        elif e["kind"] in ("optimizer-state", "scheduler-state") and e.get("ref") is not None:
            state[e["ref"]] = e  # the latest wins
        elif e["kind"] == "reg-state" and e.get("ref") is not None:
            reg[e["ref"]] = {k: v for k, v in e.items() if k not in ("id", "t", "cell", "kind", "ref")}  # the latest wins
        elif e["kind"] == "optimizer-stepped" and e.get("ref") is not None:
            stepped[e["ref"]] = [r for r in e.get("stepped") or [] if _stepped_row(r)][:500]
            sample = e.get("sample")
            if isinstance(sample, dict) and all(isinstance(sample.get(k), int) and sample[k] >= 1
                                                for k in ("every", "pow2", "first")):
                sampled[e["ref"]] = {**{k: sample[k] for k in ("every", "pow2", "first")},
                                     "values": [r for r in sample.get("values") or [] if _sampled_row(r)]}

    def of(ref: Any, kind: str) -> dict[str, Any] | None:
        e = by_id.get(ref) if isinstance(ref, int) else None
        return e if e is not None and e["kind"] == kind else None

    known: dict[int, dict[str, Any]] = {}

    def ds_info(ref: Any, depth: int = 0) -> dict[str, Any]:
        e = of(ref, "dataset")
        if e is None:
            return {"dataset": None, "split": None}
        if e["id"] in known:
            return known[e["id"]]
        known[e["id"]] = {"dataset": None, "split": None}  # a cycle of wrappers ends here
        parent = ds_info(e.get("parent"), depth + 1) if e.get("parent") and depth < 4 else {}
        kids = [ds_info(c, depth + 1) for c in (e.get("children") or [])[:16]] if depth < 4 else []
        kid_splits = {k.get("split") for k in kids}
        split = (e.get("split") or _split_hint(names.get(e["id"], ()))
                 or parent.get("split") or (kid_splits.pop() if len(kid_splits) == 1 else None))
        name = identify(e, related=[parent.get("dataset"), *(k.get("dataset") for k in kids)],
                        mounts=mounts)
        known[e["id"]] = {"dataset": name, "split": split}
        return known[e["id"]]

    def loader_info(ref: Any) -> dict[str, Any]:
        e = of(ref, "dataloader")
        if e is None:
            return {"loader": None, "dataset": None, "split": None}
        info = dict(ds_info(e.get("dataset")))  # a copy: ds_info's answers are shared
        if info["split"] is None:
            info["split"] = _split_hint(names.get(e["id"], ()))
        return {"loader": names.get(e["id"]), **info}

    def model_name(ref: Any) -> dict[str, Any]:
        e = of(ref, "model")
        return {"model": (names.get(ref) or [None])[0], "model_class": e["class"] if e else None}

    out: dict[str, Any] = {key: [] for key in (
        "figures", "normalization", "datasets", "dataloaders", "models", "optimizers",
        "schedulers", "evaluations", "training", "weights_loaded")}
    applied: set[int] = set()
    fed = _fed_datasets(events, by_id)
    for e in events:
        kind, ref = e["kind"], e["id"]
        if kind == "figure":
            png = e.get("png")
            if figures_dir is not None and figure_file(figures_dir, png) is None:
                png = None
            axes = e.get("axes", [])
            titles = [a["title"] for a in axes if a.get("title")]
            title = e.get("suptitle") or (titles[0] if titles else None)
            out["figures"].append({"cell": e.get("cell"), "kind": e.get("fig_kind"),
                                   "subjects": e.get("subjects", []), "title": title, "png": png,
                                   "trigger": e.get("trigger"),
                                   "axes_kinds": [a.get("kind") for a in axes],
                                   "hists": _hists(axes), **_origin_keys(e)})
        elif kind == "normalization":
            applied.add(e.get("normalize"))
            out["normalization"].append({"mean": e.get("mean"), "std": e.get("std"),
                                         **ds_info(e.get("dataset")), "applied": True,
                                         "reached_model": e.get("dataset") in fed,
                                         "fed_cells": sorted(fed.get(e.get("dataset"), ()))[:50],
                                         "cell": e.get("cell")})
        elif kind == "dataset":
            out["datasets"].append({"ref": ref, "class": e.get("class"), "root": e.get("root"),
                                    "files": e.get("files", [])[:3],
                                    "length": e.get("length"),
                                    "num_classes": e.get("num_classes"),
                                    "classes": [str(c)[:80] for c in e.get("classes") or []][:1000],
                                    "names": names.get(ref, []), **ds_info(ref)})
        elif kind == "dataloader":
            out["dataloaders"].append({"ref": ref, "batch_size": e.get("batch_size"),
                                       "shuffle": e.get("shuffle"), **loader_info(ref),
                                       "names": names.get(ref, [])})
        elif kind == "model":
            out["models"].append({"ref": ref, "class": e.get("class"), "params": e.get("params"),
                                  "last_linear_out": e.get("last_linear_out"),
                                  "layers": e.get("layers", []), "names": names.get(ref, []),
                                  # [[leaf, type, in, out]]: a Linear's features, a Conv2d's channels
                                  **({"dims": e["dims"]} if "dims" in e else {}),
                                  "cell": e.get("cell"), "via": e.get("via"),
                                  "shares": e.get("shares", [])})
        elif kind == "optimizer":
            s = state.get(ref, {})
            out["optimizers"].append({
                "type": e.get("type"), "lr": e.get("lr"), "momentum": e.get("momentum"),
                "weight_decay": e.get("weight_decay"), "betas": e.get("betas"),
                "steps": s.get("steps", 0),
                "lr_changes": [c[:2] for c in s.get("lr_changes", []) if len(c) >= 2],
                "n_changes": s.get("n_changes", 0), **model_name(s.get("model")),
                # every model holding a parameter it stepped (probe refs): which model was trained
                "model_ref": s.get("model"),
                "model_refs": s.get("models", [s["model"]] if s.get("model") is not None else []),
                "names": names.get(ref, []), "cell": e.get("cell"), "ref": ref,
                "cells_stepped": [c for c in s.get("cells", []) if isinstance(c, int)],
                "weights_changed": _changed(s.get("checksum_start"), s.get("checksum_now")),
                # [sum, norm] of its weights when it was built and when last seen: a run whose
                # start is another run's end began from that run's trained model (checks.figures)
                "checksum_start": s.get("checksum_start"), "checksum_now": s.get("checksum_now"),
                # lr of its first step; [first step, last step] in characters of the stdout of
                # the cells it first and last stepped in (cells_stepped[0], cells_stepped[-1])
                **{k: s[k] for k in ("lr_first", "out_at") if s.get(k) is not None},
                **({"stepped": stepped[ref]} if ref in stepped else {}),
                # exact stepped losses (checks.genlogs tells a printed loss never stepped on)
                **({"stepped_sample": sampled[ref]} if ref in sampled else {}),
                # what regularized its steps (rec_reg; grader.regularizers reads it)
                **({"regularization": reg[ref]} if ref in reg else {})})
        elif kind == "scheduler":
            s = state.get(ref, {})
            opt = of(e.get("optimizer"), "optimizer")
            out["schedulers"].append({
                "type": e.get("type"), "params": e.get("params", {}), "steps": s.get("steps", 0),
                "last_lr": s.get("last_lr"), "optimizer": opt["type"] if opt else None,
                "optimizer_ref": e.get("optimizer"), "names": names.get(ref, []),
                "cell": e.get("cell")})
        elif kind in ("evaluation", "training"):
            entry = {"cell": e.get("cell"), **model_name(e.get("model")),
                     **loader_info(e.get("loader")), "samples": e.get("samples"),
                     "batches": e.get("batches"), "grad_enabled": e.get("grad_enabled"),
                     "training_mode": e.get("training"), "model_ref": e.get("model"),
                     "dataset_length": (of(e.get("dataset"), "dataset") or {}).get("length"),
                     # the loss it computed (rec_loss; loss_sum None: not finite, a diverged run)
                     # and where in its cell's stdout it ran
                     **{k: e[k] for k in ("loss", "loss_sum", "loss_n", "out_at", "augment") if k in e}}
            if kind == "training":
                out["training"].append(entry)
            # a pass over test data in train mode with grad (no eval(), no no_grad()) is
            # still the student's evaluation; its flags say how it was run
            if kind == "evaluation" or entry["split"] in ("test", "val"):
                out["evaluations"].append(entry)
        elif kind == "weights-loaded":
            out["weights_loaded"].append({"cell": e.get("cell"), "source": e.get("source"),
                                          **model_name(e.get("model")), "model_ref": e.get("model"),
                                          **({"selection": e["selection"]} if e.get("selection") else {})})
        elif kind == "pretrained":  # asked for a download of weights: `ok` False when it failed (offline)
            out["weights_loaded"].append({"cell": e.get("cell"), "source": "download", "via": e.get("source"),
                                          "name": e.get("name"), "url": e.get("url"), "ok": e.get("ok"),
                                          "error": e.get("error"), "model": None, "model_class": None,
                                          "model_ref": None})
    for e in events:
        if e["kind"] == "normalize" and e["id"] not in applied:
            out["normalization"].append({"mean": e.get("mean"), "std": e.get("std"),
                                         "dataset": None, "split": None, "applied": False,
                                         "cell": e.get("cell")})
    kinds = Counter(e["kind"] for e in events)
    out["probe"] = {"events": len(events), "errors": kinds["probe-error"],
                    "limit_hit": kinds["probe-limit"] > 0, "started": kinds["probe-start"] > 0}
    return out


def _stepped_row(r: Any) -> bool:
    """[serial, n, mean, min, max, last]: whole serial, n >= 1, min <= mean <= max (None: a
    value the probe could not write, not finite)."""
    if not (isinstance(r, list) and len(r) == 6 and isinstance(r[0], int) and isinstance(r[1], int) and r[1] >= 1):
        return False
    mean, lo, hi = r[2], r[3], r[4]
    if None in (mean, lo, hi):
        return True
    eps = 1e-6 * max(1.0, abs(lo), abs(hi))
    return lo - eps <= mean <= hi + eps


def _sampled_row(r: Any) -> bool:
    """[serial, i, loss, sum of the pass's losses up to step i]: whole serial and step i >= 0,
    the two values finite (None: not finite, left out)."""
    return isinstance(r, list) and len(r) == 4 and isinstance(r[0], int) and isinstance(r[1], int) \
        and r[1] >= 0 and r[2] is not None and r[3] is not None


def _origin_keys(e: dict[str, Any]) -> dict[str, Any]:
    """A figure's `origin` (an unknown role read as "unknown") and `lines`, when the probe gave them."""
    out: dict[str, Any] = {}
    origin = e.get("origin")
    if isinstance(origin, dict):
        role = origin.get("role") if origin.get("role") in ORIGIN_ROLES else "unknown"
        out["origin"] = {**origin, "role": role}
        if e.get("saved_as"):  # the file torchvision's save_image wrote, which names the figure
            out["saved_as"] = e["saved_as"]
    if e.get("lines"):
        out["lines"] = e["lines"][:32]
    return out


_HIST_KEYS = ("n", "min", "max", "mean", "std", "counts", "edges")


def _hists(axes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each histogram a figure draws: the parameters the probe says it shows (as figure
    `subjects` names them) and what it recorded of the data, for grader.corroborate."""
    found = []
    for a in axes:
        for h in a.get("hists") or []:
            labels = [s["param"] + (".grad" if s.get("grad") else "") for s in h.get("subjects") or []]
            found.append({"subjects": labels, **{k: h[k] for k in _HIST_KEYS if k in h}})
    return found[:64]


def _changed(start: Any, now: Any) -> bool | None:
    """Whether an optimizer's parameters changed ([sum, norm] at construction vs later), or None
    when the probe recorded no checksum (an older probe, or a forged event)."""
    if not (isinstance(start, list) and isinstance(now, list) and len(start) == len(now) == 2
            and all(isinstance(x, (int, float)) for x in start + now)):
        return None
    return any(abs(a - b) > 1e-12 * max(1.0, abs(a)) for a, b in zip(start, now))


def _fed_datasets(events: list[dict[str, Any]], by_id: dict[int, dict[str, Any]]) -> dict[int, set[int]]:
    """Dataset ref -> the cells (In[n]) where its samples reached a model's forward (a training
    or evaluation pass over a loader of it, or of a dataset wrapping it): the probe's hint that
    a transform on it was applied to data a model saw, and where the host looks for output."""
    fed: dict[int, set[int]] = {}
    for e in events:
        if e["kind"] not in ("training", "evaluation"):
            continue
        todo, seen = [e.get("dataset")], set()
        while todo and len(seen) < 100:
            ref = todo.pop()
            d = by_id.get(ref) if isinstance(ref, int) else None
            if d is None or d["kind"] != "dataset" or ref in seen:
                continue
            seen.add(ref)
            cells = fed.setdefault(ref, set())
            if isinstance(e.get("cell"), int) and len(cells) < 50:
                cells.add(e["cell"])
            todo += [d.get("parent"), *(d.get("children") or [])]
    return fed
