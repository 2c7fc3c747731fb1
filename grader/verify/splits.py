"""The overfitting gap, measured: each run's model evaluated on its own training and validation files.

For a dataset the student splits themselves (cats-vs-dogs: only train/ is labelled, and every
notebook cuts it into training and validation with random_split, Subset, train_test_split over
the file list, its own Dataset over a list of paths, or class folders it copied files into), the
teardown writes `splits.json` (grader/probe/rec_runs.py `export_splits`): per run, the files it
trained on and those it was validated on, the validation pipeline's deterministic steps, the
student's own labels of a sample of items of both, its model's predictions on the validation
sample, and which captured model file is its model. All of it was written in the student's
process, so `read_splits` validates it strictly; then `verify_splits`, on the host:

1. maps each listed file, by name, onto the lab's own read-only copy of the dataset's labelled
   folder (`SplitVerifier.folder`); a name that is not one of its files is refused (counted, and
   said), a file read from a copy outside the dataset's folders is matched by its name (said);
2. takes at most MAX_PER_SPLIT files of each split, a uniform sample (by a hash of the name, so
   the runs that share most of a split share most of the sample) when there are more (said);
3. runs the evaluator (grader.verify.evaluator) in a fresh sandbox on copies of those images,
   renamed, shuffled, without labels, with each run's model (one evaluator run per distinct
   validation transform);
4. reads the class of each file from its name (`SplitVerifier.label_of`: the host alone holds
   the labels), maps the model's output index onto the class with the student's own labels of
   the sampled items (cat->0/dog->1 or the reverse), checks the model's predictions on the
   validation sample against the ones the notebook's model made, and computes train_accuracy,
   val_accuracy and gap = train_accuracy - val_accuracy (fractions 0..1).

`merge_runs` puts each run's numbers, or why there are none (`gap_reason`), into its entry of
`verified_runs`, from which grader.runrecords fills `Run.verified`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grader.datasets import registry
from grader.datasets._spec import SplitVerifier
from grader.verify.archive import model_format
from grader.verify.evaluator import evaluator_source
from grader.verify.runs import MAX_RUN_MODEL_BYTES
from grader.verify.spec import CAPTURES, NotVerified, is_int, is_str, regular, step, transform_text

MAX_SPLITS_BYTES = 16 << 20
"""splits.json's size cap (bytes): two lists of 25 000 names are about 0.7 MB."""
MAX_LIST = 100_000
"""Files of one listed split at most (rec_runs.MAX_SPLIT_FILES)."""
MAX_LISTS = 24
MAX_RUN_ENTRIES = 25
MAX_PER_SPLIT = 2000
"""Files of each split of a run evaluated at most: a uniform sample when the split holds more
(the accuracy is then known to about +-1 point at 90 %: 1.96 * sqrt(0.9 * 0.1 / 2000))."""
MIN_SAMPLE_AGREEMENT = 0.95
"""Share of the validation sample on which the captured model must predict what the notebook's
model predicted (grader.verify.host.MIN_AGREEMENT)."""
MAX_REFUSED = 0.5
"""Share of a split's files whose names are not the dataset's above which the split is not measured."""


# ---------------------------------------------------------------- reading splits.json


def _names_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= MAX_LIST and all(isinstance(n, str) and 0 < len(n) <= 255
                                                              and "/" not in n and "\0" not in n for n in v)


def _list_ok(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("dirs"), list) and len(v["dirs"]) <= 1000
            and all(isinstance(d, str) and len(d) <= 1000 and "\0" not in d for d in v["dirs"])
            and _names_list(v.get("names")) and isinstance(v.get("dir"), list) and len(v["dir"]) == len(v["names"])
            and all(is_int(i) and i < len(v["dirs"]) for i in v["dir"]))


def _run_entry(r: Any, n_lists: int) -> dict[str, Any]:
    """One run of splits.json validated: its fields, or `{optimizer, error}` (never raises)."""
    ref = r.get("optimizer") if isinstance(r, dict) and is_int(r.get("optimizer")) else None
    if isinstance(r, dict) and isinstance(r.get("error"), str):
        return {"optimizer": ref, "error": r["error"].strip()[:300] or "its split was not described"}
    bad = {"optimizer": ref, "error": "its entry in the split description is malformed"}
    if not isinstance(r, dict) or ref is None:
        return bad
    tr, sample, model, labels = r.get("transform"), r.get("sample"), r.get("model"), r.get("train_labels")
    ok = (is_int(r.get("train")) and r["train"] < n_lists and is_int(r.get("val")) and r["val"] < n_lists
          and isinstance(tr, dict) and isinstance(tr.get("steps"), list) and len(tr["steps"]) <= 50
          and all(isinstance(tr.get(k), list) and len(tr[k]) <= 20 and all(isinstance(u, str) for u in tr[k])
                  for k in ("random", "unknown"))
          and isinstance(r.get("flatten_input"), bool) and (r.get("outputs") is None or is_int(r["outputs"]))
          and isinstance(sample, dict) and _names_list(sample.get("keys")) and len(sample["keys"]) <= 256
          and isinstance(sample.get("preds"), list) and len(sample["preds"]) in (0, len(sample["keys"]))
          and all(is_int(p) for p in sample["preds"])
          and isinstance(sample.get("labels"), list) and len(sample["labels"]) == len(sample["keys"])
          and all(y is None or is_int(y) for y in sample["labels"])
          and isinstance(labels, list) and len(labels) <= 256
          and all(isinstance(p, list) and len(p) == 2 and _names_list([p[0]]) and (p[1] is None or is_int(p[1]))
                  for p in labels)
          and isinstance(r.get("cells", []), list) and all(is_int(c) for c in r.get("cells", []))
          and isinstance(model, dict) and is_str(model.get("class")) and model.get("capture") in CAPTURES
          and isinstance(model.get("file"), str) and _model_file_name(model["file"]) and is_int(model.get("bytes")))
    if not ok:
        return bad
    return {"optimizer": ref, "train": r["train"], "val": r["val"],
            "transform": {k: list(tr[k]) for k in ("steps", "random", "unknown")},
            "flatten_input": r["flatten_input"], "outputs": r.get("outputs"),
            "sample": {k: list(sample[k]) for k in ("keys", "preds", "labels")},
            "train_labels": [list(p) for p in labels], "cells": list(r.get("cells", []))[:50],
            "model": {k: model[k] for k in ("file", "class", "capture", "bytes")}}


def _model_file_name(name: str) -> bool:
    import re

    return re.fullmatch(r"(?:run|split)\d{1,2}\.pt", name) is not None


def validate_splits(data: Any) -> dict[str, Any]:
    """splits.json's content checked: `{lists: [{dirs, names, dir}], runs: [entry]}` where a run
    entry that is malformed or carries the probe's `error` is `{optimizer, error}`; raises
    NotVerified when the document as a whole is unusable (the probe's own error included)."""
    if not isinstance(data, dict) or data.get("version") != 1:
        raise NotVerified("the split description (splits.json) is malformed")
    if isinstance(data.get("error"), str):
        raise NotVerified((data["error"].strip().rstrip(".")[:300] or "the splits could not be described") + ".")
    lists, runs = data.get("lists"), data.get("runs")
    if not (isinstance(lists, list) and len(lists) <= MAX_LISTS and all(_list_ok(v) for v in lists)
            and isinstance(runs, list)):
        raise NotVerified("the split description (splits.json) is malformed")
    return {"lists": lists, "runs": [_run_entry(r, len(lists)) for r in runs[:MAX_RUN_ENTRIES]]}


def read_splits(path: Path) -> dict[str, Any]:
    """splits.json at `path`, validated (`validate_splits`); raises NotVerified with the reason."""
    try:
        regular(path, MAX_SPLITS_BYTES, "split description (splits.json)")
    except NotVerified as exc:
        if "missing" in str(exc):
            raise NotVerified("the training and validation splits were not described after the notebook ran "
                              "(the teardown did not finish, or the probe was not loaded)") from None
        raise
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise NotVerified("the split description (splits.json) is nested too deeply to be read") from None
    except (ValueError, UnicodeDecodeError):
        raise NotVerified("the split description (splits.json) is not valid JSON") from None
    return validate_splits(data)


# ---------------------------------------------------------------- mapping files onto the dataset


def sample_names(names: Sequence[str], k: int = MAX_PER_SPLIT) -> list[str]:
    """At most `k` of `names` (distinct), a uniform sample when there are more: those with the
    smallest sha256 of the name, so two runs that share most of a split share most of its sample."""
    distinct = list(dict.fromkeys(names))
    if len(distinct) <= k:
        return distinct
    return sorted(distinct, key=lambda n: hashlib.sha256(n.encode("utf-8", "replace")).digest())[:k]


def map_split(listed: Mapping[str, Any], *, present: frozenset[str], verifier: SplitVerifier,
              mounted: Callable[[str], bool]) -> dict[str, Any]:
    """One listed split (`{dirs, names, dir}`) mapped onto the dataset: `names` (those that are
    the dataset's files, distinct, in order), `refused` (names that are not), `copied` (files the
    notebook read from a folder for which `mounted(sandbox folder)` is False: not the lab's
    read-only copy of the labelled folder; matched here by name)."""
    names, refused, copied = [], 0, 0
    inside = [mounted(d) for d in listed["dirs"]]
    for name, d in zip(listed["names"], listed["dir"]):
        if verifier.label_of(name) is None or name not in present:
            refused += 1
            continue
        copied += not inside[d]
        names.append(name)
    return {"names": list(dict.fromkeys(names)), "refused": refused, "copied": copied}


def label_mapping(pairs: Sequence[tuple[int, int]], n_classes: int) -> list[int]:
    """Model output -> the dataset's class, from (the student's label, the file's class) pairs:
    the identity when every label is its file's class, else the one-to-one map they show for
    every class. Raises NotVerified when the labels are inconsistent or do not show every class."""
    seen: dict[int, int] = {}
    for label, cls in pairs:
        if seen.setdefault(label, cls) != cls:
            raise NotVerified(f"the notebook gives label {label} to images of two classes, so its labels cannot "
                              f"be matched with the file names")
    if not seen:
        raise NotVerified("the notebook's labels of its images could not be read, so its outputs cannot be "
                          "matched with classes")
    if all(label == c for label, c in seen.items()):
        return list(range(n_classes))
    if sorted(seen) == list(range(n_classes)) and sorted(seen.values()) == list(range(n_classes)):
        return [seen[label] for label in range(n_classes)]
    raise NotVerified("the notebook numbers the classes differently from the file names, and its sampled "
                      "images do not show the label of every class")


def _accuracy(names: Sequence[str], preds: Mapping[str, int], mapping: Sequence[int], verifier: SplitVerifier) -> float:
    right = sum(int(0 <= preds[n] < len(mapping) and mapping[preds[n]] == verifier.label_of(n)) for n in names)
    return round(right / len(names), 4)


# ---------------------------------------------------------------- the evaluation


def _predict(models: Sequence[tuple[Path, str]], files: Sequence[Path], *, steps: list[dict[str, Any]],
             flatten: bool, spec: Any, limits: Any, timeout_s: float) -> list[list[int] | str]:
    """Per model (`(path, format)`) its predicted output index of each of `files`, in order, or why
    there are none: one evaluator run in a fresh sandbox, on renamed copies in a random order."""
    from grader.verify.host import OutOfTime, _result_line, check_result, job_folder, run_job
    from grader.verify.runs import check_runs

    order = np.random.default_rng().permutation(len(files))
    work, kdir = job_folder("dllab-splits-")
    try:
        (kdir / "images").mkdir()
        os.chmod(kdir / "images", 0o755)
        for pos, i in enumerate(order):
            dst = kdir / "images" / f"{pos:06d}.jpg"
            shutil.copyfile(files[i], dst)  # a copy, never a link (grader.verify.data.write_inputs)
            os.chmod(dst, 0o644)
        names = ["model.pt"] + [f"run{k}.pt" for k in range(len(models) - 1)]
        for (path, _), name in zip(models, names):
            shutil.copyfile(path, kdir / name)
            os.chmod(kdir / name, 0o644)
        job = {"format": models[0][1], "steps": steps, "flatten_input": flatten, "storage": "files", "mode": "RGB",
               "count": len(files), "facts": False,
               "runs": [{"file": n, "format": f} for n, (_, f) in zip(names[1:], models[1:])]}
        (kdir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (kdir / "evaluate.py").write_text(evaluator_source(), encoding="utf-8")
        for name in ("job.json", "evaluate.py"):
            os.chmod(kdir / name, 0o644)
        stdout, stderr, code = run_job(kdir / "evaluate.py", kdir / "job.json", work=work, spec=spec, limits=limits,
                                       timeout_s=timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        if code == "timeout":
            raise OutOfTime(f"the time limit of {timeout_s:.0f} s given to the evaluation ran out before it finished")
        result = _result_line(stdout, stderr, code)
        got: list[list[int] | str] = [check_result(result, len(files))]
        got += check_runs(result, len(models) - 1, len(files))
    except NotVerified as exc:
        return [str(exc)] * len(models)

    def unshuffle(flat: list[int]) -> list[int]:
        out = [0] * len(files)
        for pos, i in enumerate(order):
            out[i] = flat[pos]
        return out
    return [unshuffle(g) if isinstance(g, list) else g for g in got]


def _plan_run(r: Mapping[str, Any], lists: Sequence[Mapping[str, Any]], *, present: frozenset[str],
              verifier: SplitVerifier, mounted: Callable[[str], bool], n_classes: int, folder: Path) -> dict[str, Any]:
    """What to evaluate for run `r`: its sampled training and validation names, label mapping,
    steps, model file and notes; raises NotVerified with the reason it cannot be measured."""
    if r.get("outputs") == 1:
        raise NotVerified("its model gives one score per image (a sigmoid output), and the grader measures "
                          "models that give one score per class")
    if r["transform"]["unknown"]:
        raise NotVerified("its validation transform uses steps the grader cannot rebuild ("
                          + "; ".join(u[:120] for u in r["transform"]["unknown"][:3]) + ")")
    steps = [step(s) for s in r["transform"]["steps"]]
    train, val = (map_split(lists[r[k]], present=present, verifier=verifier, mounted=mounted) for k in ("train", "val"))
    for what, got, listed in (("training", train, lists[r["train"]]), ("validation", val, lists[r["val"]])):
        total = len(listed["names"])
        if not got["names"] or got["refused"] > MAX_REFUSED * total:
            raise NotVerified(f"{got['refused']} of the {total} files of its {what} split are not files of the "
                              f"dataset's {verifier.folder}/ folder (renamed copies?), so the grader cannot read "
                              f"their classes")
    pairs = [(y, verifier.label_of(n)) for n, y in [*zip(r["sample"]["keys"], r["sample"]["labels"]),
                                                    *map(tuple, r["train_labels"])]
             if y is not None and verifier.label_of(n) is not None]
    mapping = label_mapping([(y, c) for y, c in pairs if c is not None], n_classes)
    notes = []
    for what, got in (("training", train), ("validation", val)):
        if len(got["names"]) > MAX_PER_SPLIT:
            notes.append(f"a uniform sample of {MAX_PER_SPLIT} of its {len(got['names'])} {what} files")
        if got["refused"]:
            notes.append(f"{got['refused']} {what} file(s) that are not the dataset's were refused")
        if got["copied"]:
            notes.append(f"{got['copied']} {what} file(s) were read from copies outside the dataset's folders "
                         f"(matched by name)")
    both = set(train["names"]) & set(val["names"])
    if both:
        notes.append(f"{len(both)} of its {len(val['names'])} validation files are also training files")
    if r["transform"]["random"]:
        notes.append("its validation pipeline draws at random (" + ", ".join(r["transform"]["random"][:4])
                     + "); evaluated without those steps")
    model = folder / r["model"]["file"]
    regular(model, MAX_RUN_MODEL_BYTES, "captured run model file")
    return {"train": sample_names(train["names"]), "val": sample_names(val["names"]),
            "train_files": len(train["names"]), "val_files": len(val["names"]), "overlap": len(both),
            "mapping": mapping, "steps": steps, "flatten": r["flatten_input"], "model": model,
            "format": model_format(model), "notes": notes, "sample": r["sample"]}


def _score(ref: int | None, p: Mapping[str, Any], preds: Mapping[str, int], verifier: SplitVerifier) -> dict[str, Any]:
    """The run's entry from the evaluator's predictions by file name (`_plan_run`'s plan `p`)."""
    compared = [(preds[k], q) for k, q in zip(p["sample"]["keys"], p["sample"]["preds"]) if k in preds]
    if not compared:
        return {"optimizer": ref, "gap_reason": "none of its sampled validation images could be found again, so "
                                                "the grader cannot tell that it read them as the notebook did"}
    same = sum(a == b for a, b in compared)
    if same < MIN_SAMPLE_AGREEMENT * len(compared):
        return {"optimizer": ref, "gap_reason": f"its captured model predicted differently from the notebook's "
                                                f"own on {len(compared) - same} of {len(compared)} sampled "
                                                f"validation images, so its capture or its validation transform "
                                                f"could not be reproduced faithfully"}
    train = _accuracy(p["train"], preds, p["mapping"], verifier)
    val = _accuracy(p["val"], preds, p["mapping"], verifier)
    entry = {"optimizer": ref, "train_accuracy": train, "train_n": len(p["train"]), "train_files": p["train_files"],
             "val_accuracy": val, "val_n": len(p["val"]), "val_files": p["val_files"],
             "gap": round(train - val, 4), "gap_transform": transform_text(p["steps"]),
             "gap_agreement": round(same / len(compared), 4)}
    if p["overlap"]:
        entry["val_overlap"] = p["overlap"]
    if p["notes"]:
        entry["gap_note"] = "; ".join(p["notes"])
    return entry


def verify_splits(*, run_dir: Path, probe_dir: Path, spec: Any, limits: Any, data: Mapping[str, str],
                  workdir: str = "", timeout_s: float) -> dict[str, Any]:
    """`{"runs": [entry per run]}`: each run's train_accuracy, train_n, val_accuracy, val_n and
    gap (fractions 0..1) measured on its own files, or `{optimizer, gap_reason}`; or `{"reason"}`
    when nothing could be measured. `data` maps the lab's dataset names to their host folders
    (the dataset's own folder); `workdir` is the notebook's folder in the submission, where it had
    them again as `./data` (a file read from anywhere else was a copy); `run_dir` holds the run's run.json, `probe_dir` what came out of the
    sandbox; `spec` and `limits` are the notebook's sandbox. Never raises for anything the
    submission did."""
    from grader.verify.host import _check_run

    started = time.monotonic()
    try:
        _check_run(run_dir)
        found = [(registry.get(n), Path(h)) for n, h in data.items()
                 if n in registry.names() and registry.get(n).split_verifier is not None]
        if not found:
            return {"reason": "the lab has no dataset the student splits into training and validation"}
        ds_spec, host = found[0]
        verifier = ds_spec.split_verifier
        assert verifier is not None
        if timeout_s < 1.0:
            raise NotVerified("no time was left to measure the runs on their training and validation files")
        doc = read_splits(probe_dir / "verify" / "splits.json")
        folder = host / verifier.folder
        present = frozenset(e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)) \
            if folder.is_dir() else frozenset()
        if not present:
            raise NotVerified(f"the {ds_spec.title} folder {verifier.folder}/ is not there for the grader to read")
        from grader import sandbox
        from grader.verify.plan import _host_path

        placed = sandbox.place_mounts(spec.mounts, workdir=workdir, submission=None).mounts

        def mounted(d: str) -> bool:  # a sandbox folder that is the lab's read-only labelled folder
            there = _host_path(d, placed)
            return there is not None and os.path.realpath(there) == os.path.realpath(folder)
        out: list[dict[str, Any]] = []
        plans: dict[int, dict[str, Any]] = {}
        for k, r in enumerate(doc["runs"]):
            if "error" in r:
                out.append({"optimizer": r["optimizer"], "gap_reason": r["error"]})
                continue
            try:
                plans[k] = _plan_run(r, doc["lists"], present=present, verifier=verifier, mounted=mounted,
                                     n_classes=len(ds_spec.classes), folder=probe_dir / "verify")
            except NotVerified as exc:
                out.append({"optimizer": r["optimizer"], "gap_reason": str(exc)})
                continue
            out.append({"optimizer": r["optimizer"]})
        groups: dict[str, list[int]] = {}
        for k, p in plans.items():
            groups.setdefault(json.dumps([p["steps"], p["flatten"]], sort_keys=True), []).append(k)
        for ks in groups.values():
            names = list(dict.fromkeys(n for k in ks for n in [*plans[k]["train"], *plans[k]["val"],
                                                                   *plans[k]["sample"]["keys"]] if n in present))
            left = timeout_s - (time.monotonic() - started)
            got = _predict([(plans[k]["model"], plans[k]["format"]) for k in ks], [folder / n for n in names],
                           steps=plans[ks[0]]["steps"], flatten=plans[ks[0]]["flatten"], spec=spec, limits=limits,
                           timeout_s=left) if left >= 1.0 else ["no time was left to evaluate it"] * len(ks)
            for k, g in zip(ks, got):
                ref = out[k]["optimizer"]
                out[k] = ({"optimizer": ref, "gap_reason": g} if isinstance(g, str)
                          else _score(ref, plans[k], dict(zip(names, g)), verifier))
        return {"runs": out, "seconds": round(time.monotonic() - started, 2)}
    except NotVerified as exc:
        return {"reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one notebook's measurement must not stop a batch
        return {"reason": f"the grader's measurement of the splits failed ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); please report this"}


GAP_KEYS = ("train_accuracy", "train_n", "train_files", "val_accuracy", "val_n", "val_files", "gap", "gap_transform",
            "gap_agreement", "val_overlap", "gap_note", "gap_reason")
"""The keys `verify_splits` adds to a run's `verified_runs` entry (and grader.runrecords to `Run.verified`)."""


def merge_runs(verified_runs: Sequence[Mapping[str, Any]], block: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`verified_runs` with each run's gap keys from `block` (`verify_splits`) in its entry (by
    optimizer ref; an entry added for a run the test evaluation did not list), and, when the
    block has only a `reason`, that reason as every run's `gap_reason`."""
    out = [dict(r) for r in verified_runs]
    by_ref = {r.get("optimizer"): r for r in out if r.get("optimizer") is not None}
    if "runs" not in block:
        why = str(block.get("reason") or "the runs were not measured on their training and validation files")
        for r in by_ref.values():
            r.setdefault("gap_reason", why)
        general = next((r for r in out if r.get("optimizer") is None), None)
        if general is None:
            out.append({"optimizer": None, "gap_reason": why})
        else:
            general.setdefault("gap_reason", why)
        return out
    for entry in block["runs"]:
        ref = entry.get("optimizer")
        target = by_ref.get(ref)
        if target is None:
            target = {"optimizer": ref}
            general = next((r for r in out if r.get("optimizer") is None and r.get("reason")), None)
            if general is not None:  # why the test evaluation has no entry for it either
                target["reason"] = general["reason"]
            out.append(target)
            if ref is not None:
                by_ref[ref] = target
        target.update({k: entry[k] for k in GAP_KEYS if k in entry})
    return out
