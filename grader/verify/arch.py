"""Architecture of each trained model: the probe's graph reading, proved by a functional test.

After the last cell the probe's teardown reads each trained model's blocks from their graphs and
captures each block (grader/probe/rec_arch.py): `probe/verify/arch.json` and `a<m>b<k>[-short|
-plain].pt` beside it, all written by code that shared the student's process (hints). `measure`:

1. reads arch.json strictly (size cap, bounded, the fields the verdicts depend on typed and
   checked; display fields cut to size), and tells each file's format from its bytes
   (grader.verify.archive.model_format: no pickle is ever loaded);
2. runs grader.verify.arch_eval in a fresh sandbox (run_job: the notebook's confinement and
   limits, no dataset, no GPU) in the time given: each block with its residual branch zeroed and
   its SE gate forced to 1;
3. turns what came back into a verdict per block (`functional`): `skip` identity (zeroed, the
   block gives x, or relu(x)), projection (it gives its shortcut's output), none (it gives a
   constant: nothing bypasses the zeroed branch) or unclear; `gate` sigmoid (forced, the block is
   its plain variant) or no-sigmoid; `how`: one line saying what was run.

The result is evidence["architecture"]: one record per captured model, joined to its run by
optimizer ref (grader.runrecords): `{optimizer, class, params, depth, graph, graph_errors,
input_shape, blocks, functional {block name: {...}}, functional_reason, reason}`. Never raises
for anything a submission did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader.execute import SandboxLimits, SandboxSpec
from grader.verify.arch_eval import source as job_source
from grader.verify.archive import model_format
from grader.verify.host import OutOfTime, _check_run, _result_line, job_folder, run_job
from grader.verify.spec import NotVerified, regular

MAX_JSON_BYTES = 2 << 20
MAX_MODELS = 6
MAX_BLOCKS = 16
MAX_BLOCK_BYTES = 64 << 20
ARCH_TIMEOUT_S = 120.0
"""The functional test's wall time at most (sandbox start, loading torch, every block)."""
_FILE = re.compile(r"a\d{1,2}b\d{1,2}(-short|-plain)?\.pt")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,199}")
KINDS = ("residual", "plain", "se")
SHORTCUTS = ("identity", "projection", "none")
POSITIONS = ("branch", "after-add", "shortcut", "no-add")


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -2**40 < v < 2**40 else None


def _text(v: Any, n: int = 200) -> str | None:
    return v[:n] if isinstance(v, str) else None


def _shape(v: Any) -> list[int] | None:
    if isinstance(v, list) and 0 < len(v) <= 4 and all(_int(d) is not None and d > 0 for d in v):
        return list(v)
    return None


def _size(v: Any) -> int | list[int] | None:
    if _int(v) is not None:
        return v
    return list(v) if isinstance(v, list) and 0 < len(v) <= 3 and all(_int(d) is not None for d in v) else None


def _plain(v: Any, depth: int = 0) -> Any:
    """Display data, bounded: strings cut, lists and dicts capped, nothing deeper than 4."""
    if depth > 4:
        return None
    if v is None or isinstance(v, bool) or _int(v) is not None:
        return v
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else None
    if isinstance(v, str):
        return v[:200]
    if isinstance(v, list):
        return [_plain(x, depth + 1) for x in v[:16]]
    if isinstance(v, dict):
        return {str(k)[:60]: _plain(x, depth + 1) for k, x in list(v.items())[:24]}
    return None


def _params(v: Any) -> list[str] | None:
    if isinstance(v, list) and 0 < len(v) <= 4 and all(isinstance(p, str) and _PARAM.fullmatch(p) for p in v):
        return list(v)
    return None


def _gate(v: Any) -> dict[str, Any] | None:
    if not isinstance(v, dict):
        return None
    force = v.get("force")
    force = ({"weight": force["weight"], "bias": force["bias"]} if isinstance(force, dict)
             and all(isinstance(force.get(k), str) and _PARAM.fullmatch(force[k]) for k in ("weight", "bias")) else None)
    fc = [{k: _plain(f.get(k)) for k in ("op", "module", "kernel", "stride", "in", "out", "bias")}
          for f in (v.get("fc") if isinstance(v.get("fc"), list) else [])[:4] if isinstance(f, dict)]
    return {"pool": _text(v.get("pool"), 60), "fc": fc, "activation": _text(v.get("activation"), 60),
            "sigmoid": v.get("sigmoid") is True, "after_fc": [t[:40] for t in (v.get("after_fc") or [])[:4]
                                                              if isinstance(t, str)]
            if isinstance(v.get("after_fc"), list) else [],
            "last_fc": _text(v.get("last_fc")), "hidden": _int(v.get("hidden")),
            "position": v.get("position") if v.get("position") in POSITIONS else None, "force": force}


def _block(v: Any, k: int) -> dict[str, Any]:
    """One block of arch.json, validated (a malformed one keeps its name and a reason)."""
    if not isinstance(v, dict) or not isinstance(v.get("name"), str):
        return {"name": f"block {k}", "reason": "the probe's record of this block is malformed"}
    proj = v.get("projection")
    proj = ({"kernel": _size(proj.get("kernel")), "stride": _size(proj.get("stride")), "bn": proj.get("bn") is True}
            if isinstance(proj, dict) else None)
    files = v.get("files") if isinstance(v.get("files"), dict) else {}
    fmt = v.get("format") if isinstance(v.get("format"), dict) else {}
    files = {p: f for p, f in files.items() if p in ("block", "short", "plain") and isinstance(f, str)
             and _FILE.fullmatch(f) and fmt.get(p) in ("script", "trace", "export")}
    out = {"name": v["name"][:200], "class": _text(v.get("class"), 80), "index": _int(v.get("index")),
           "kind": v.get("kind") if v.get("kind") in KINDS else None,
           "shortcut": v.get("shortcut") if v.get("shortcut") in SHORTCUTS else None,
           "projection": proj, "in_shape": _shape(v.get("in_shape")), "out_shape": _shape(v.get("out_shape")),
           "shrinks": v.get("shrinks") if isinstance(v.get("shrinks"), bool) else None,
           "gate": _gate(v.get("gate")), "residual": v.get("residual") if isinstance(v.get("residual"), bool) else None,
           "adds": _int(v.get("adds")), "fork": _text(v.get("fork"), 40), "graph": _text(v.get("graph"), 20),
           "layers": _plain(v.get("layers")) if isinstance(v.get("layers"), list) else [],
           "zero": _params(v.get("zero")), "files": files}
    if isinstance(v.get("capture_error"), dict):
        out["capture_error"] = {str(p)[:10]: str(e)[:300] for p, e in list(v["capture_error"].items())[:3]}
    return out


def read_arch(path: Path) -> list[dict[str, Any]]:
    """arch.json's model records, validated; raises NotVerified."""
    size = regular(path, MAX_JSON_BYTES, "architecture record (arch.json)")
    try:
        doc = json.loads(path.read_bytes()[:size])
    except (ValueError, RecursionError):
        raise NotVerified("the architecture record (arch.json) is not JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("models"), list):
        raise NotVerified("the architecture record (arch.json) is malformed")
    out = []
    for m in doc["models"][:MAX_MODELS]:
        if not isinstance(m, dict):
            continue
        rec: dict[str, Any] = {"optimizer": _int(m.get("optimizer")), "class": _text(m.get("class"), 100)}
        if isinstance(m.get("reason"), str):
            rec["reason"] = m["reason"][:300]
            out.append(rec)
            continue
        rec.update({"params": _int(m.get("params")), "depth": _int(m.get("depth")), "graph": _text(m.get("graph"), 40),
                    "graph_errors": [e[:300] for e in (m.get("graph_errors") or [])[:6] if isinstance(e, str)]
                    if isinstance(m.get("graph_errors"), list) else [],
                    "input_shape": _shape(m.get("input_shape")),
                    "adds_outside_blocks": _int(m.get("adds_outside_blocks")),
                    "blocks": [_block(b, k) for k, b in enumerate((m.get("blocks") or [])[:MAX_BLOCKS])]
                    if isinstance(m.get("blocks"), list) else []})
        if isinstance(m.get("model_graph"), dict):
            rec["model_graph"] = _plain(m["model_graph"])
        out.append(rec)
    return out


def measure(*, run_dir: Path, probe_dir: Path, spec: SandboxSpec, limits: SandboxLimits,
            timeout_s: float = ARCH_TIMEOUT_S) -> list[dict[str, Any]] | dict[str, Any]:
    """evidence["architecture"] for one executed notebook: the model records (module docstring),
    or `{"reason": ...}` when there are none. `timeout_s`: the sandbox's wall time (seconds)."""
    started = time.monotonic()
    try:
        _check_run(run_dir)
        folder = probe_dir / "verify"
        if not (folder / "arch.json").exists():
            raise NotVerified("the grader's teardown wrote no architecture record")
        models = read_arch(folder / "arch.json")
        todo = []
        for m, rec in enumerate(models):
            for b in rec.get("blocks") or ():
                spec_b = _job_block(folder, m, b)
                if spec_b is not None:
                    todo.append((rec, b, spec_b))
        results: dict[str, Any] = {}
        why = None
        if todo:
            try:
                results = _sandbox(folder, [t[2] for t in todo], spec=spec, limits=limits,
                                   timeout_s=timeout_s - (time.monotonic() - started))
            except NotVerified as exc:
                why = str(exc)
        for rec in models:
            if "reason" in rec:
                continue
            rec["functional"] = {}
            if why:
                rec["functional_reason"] = why
        for rec, b, s in todo:
            rec["functional"][b["name"]] = verdict(b, results.get(s["id"]) if not why else None)
        for rec in models:
            for b in rec.get("blocks") or ():
                if "reason" not in rec and b["name"] not in rec["functional"]:
                    rec["functional"][b["name"]] = {"skip": None, "gate": None,
                                                    "how": b.get("untested") or "not tested"}
                b.pop("untested", None)
        return models
    except NotVerified as exc:
        return {"reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one notebook's test must not stop a batch
        return {"reason": f"the grader's architecture test failed ({type(exc).__name__}: {str(exc)[:200]}); "
                          f"please report this"}


def _job_block(folder: Path, m: int, b: dict[str, Any]) -> dict[str, Any] | None:
    """The job entry of block `b` of model `m`, its files checked; None (and b["untested"]) when
    it cannot be tested."""
    files = b.get("files") or {}
    if "block" not in files:
        err = (b.get("capture_error") or {}).get("block")
        b["untested"] = "the block could not be captured" + (f" ({err})" if err else "")
        return None
    if not b.get("in_shape"):
        b["untested"] = "the block's input shape is unknown"
        return None
    fmt = {}
    for part, name in files.items():
        if not name.startswith(f"a{m}b"):
            continue
        try:
            regular(folder / name, MAX_BLOCK_BYTES, f"captured block file {name}")
            fmt[part] = model_format(folder / name)
        except NotVerified as exc:
            if part == "block":
                b["untested"] = str(exc)
                return None
    if "block" not in fmt:
        b["untested"] = "the block's file does not belong to its model"
        return None
    return {"id": files["block"][:-3], "files": {p: files[p] for p in fmt}, "format": fmt, "in_shape": b["in_shape"],
            "zero": b.get("zero") or [], "force": (b.get("gate") or {}).get("force") if "plain" in fmt else None}


def _sandbox(folder: Path, blocks: Sequence[Mapping[str, Any]], *, spec: SandboxSpec, limits: SandboxLimits,
             timeout_s: float) -> dict[str, Any]:
    """arch_eval's entry per block id, run in a fresh sandbox."""
    if timeout_s < 1.0:
        raise OutOfTime("no time was left for the functional test of the blocks")
    work, kdir = job_folder("dllab-arch-")
    try:
        names = ["job.json", "test.py"]
        for b in blocks:
            for name in b["files"].values():
                shutil.copyfile(folder / name, kdir / name)  # copies, never links
                names.append(name)
        (kdir / "job.json").write_text(json.dumps({"blocks": list(blocks), "seed": 0}), encoding="utf-8")
        (kdir / "test.py").write_text(job_source(), encoding="utf-8")
        for name in names:
            os.chmod(kdir / name, 0o644)
        stdout, stderr, code = run_job(kdir / "test.py", kdir / "job.json", work=work, spec=spec, limits=limits,
                                       timeout_s=timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if code == "timeout":
        raise OutOfTime(f"the functional test of the blocks ran past the {timeout_s:.0f} s it was given")
    result = _result_line(stdout, stderr, code)
    got = result.get("blocks")
    if not isinstance(got, list):
        raise NotVerified("the functional test's result is malformed")
    return {e["id"]: e for e in got[:len(blocks)] if isinstance(e, dict) and isinstance(e.get("id"), str)}


def _bool(d: Any, key: str) -> bool | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, bool) else None


def verdict(block: Mapping[str, Any], entry: Any) -> dict[str, Any]:
    """What the functional test showed of `block` (its sandbox `entry`, or None when not run):
    {skip: identity|projection|none|unclear|None, gate: sigmoid|no-sigmoid|unclear|None, how}."""
    out: dict[str, Any] = {"skip": None, "gate": None, "how": "not run"}
    if not isinstance(entry, dict):
        return out
    if isinstance(entry.get("error"), str):
        out["how"] = "the test could not run the block: " + entry["error"][:200]
        return out
    zero, zeroed = entry.get("zero"), ", ".join(block.get("zero") or []) or "nothing"
    if isinstance(zero, dict) and isinstance(zero.get("error"), str):
        out["how"] = f"zeroing {zeroed}: {zero['error'][:160]}"
    elif isinstance(zero, dict):
        if _bool(zero, "changed") is False:
            out["skip"], why = "unclear", "did not change its output (not on its path)"
        elif _bool(zero, "identity"):
            out["skip"], why = "identity", "made it give its input (relu(x) = x for x >= 0)"
        elif _bool(zero, "shortcut"):
            out["skip"], why = "projection", "made it give its projection shortcut's output"
        elif _bool(zero, "constant"):
            out["skip"], why = "none", "made it give a constant whatever its input: nothing bypasses them"
        else:
            out["skip"], why = "unclear", "gave neither its input, its shortcut's output nor a constant"
        out["how"] = f"zeroing {zeroed} {why}"
        if isinstance(zero.get("err"), (int, float)):
            out["err"] = zero["err"]
    force = entry.get("force")
    if isinstance(force, dict) and not isinstance(force.get("error"), str):
        gate = block.get("gate") or {}
        w = (gate.get("force") or {}).get("weight", "?")
        if _bool(force, "equals_plain"):
            out["gate"] = "sigmoid"
            out["how"] += f"; forcing the gate to 1 ({w} = 0, its bias 30) made it the block without the gate"
        else:
            out["gate"] = "no-sigmoid"
            scale = force.get("scale")
            out["how"] += (f"; forcing the gate ({w} = 0, its bias 30) did not make it the block without the gate"
                           + (f" (it scaled the features by {scale:g}, where a sigmoid gives 1)"
                              if isinstance(scale, (int, float)) else ""))
    elif isinstance(force, dict):
        out["how"] += "; the gate could not be forced: " + str(force["error"])[:160]
    return out


def for_run(ev: Mapping[str, Any], ref: int | None) -> dict[str, Any]:
    """Run.architecture of the run whose optimizer is `ref`: the record of its model, or {} when
    the lab does not read architectures, or {"reason"} when it could not be read."""
    arch = ev.get("architecture")
    if arch is None:
        return {}
    if isinstance(arch, Mapping):
        return {"reason": str(arch.get("reason") or "the architecture was not read")[:300]}
    if not isinstance(arch, list):
        return {}
    rec = next((r for r in arch if isinstance(r, Mapping) and ref is not None and r.get("optimizer") == ref), None)
    if rec is None:
        return {"reason": "its model's architecture was not captured (the grader reads the newest runs only)"}
    return {k: v for k, v in rec.items() if k not in ("optimizer",)}


def reads_architecture(rubric: Any) -> bool:
    """Whether a lab's rubric has an item of kind `residual_architecture` (in a part or its bonus):
    then the probe reads architectures and the host tests them."""
    parts = list(getattr(rubric, "parts", ()) or ())
    bonus = getattr(rubric, "bonus", None)
    if bonus is not None:
        parts.append(bonus)
    kind = "residual_architecture"
    return any(getattr(i, "check", None) == kind or getattr(getattr(i, "hint", None), "check", None) == kind
               for p in parts for i in getattr(p, "items", ()) or ())


def measure_in_time(result: Any, rel: str, *, limits: SandboxLimits, submission_end: float | None,
                    **kw: Any) -> tuple[list[dict[str, Any]] | dict[str, Any], dict[str, str] | None]:
    """`measure` for `result` (a grader.execute.RunResult), its sandbox given at most ARCH_TIMEOUT_S
    and what is left of the run's and the submission's time (grader.runbudget.finish_window); with
    the run's note when that time cut it. `kw`: measure's run_dir, probe_dir, spec."""
    from grader.runbudget import finish_window

    run_end = result.started_at + result.startup_s + limits.wall_timeout_s
    given, cut = finish_window(now=time.time(), cap_s=ARCH_TIMEOUT_S, run_end=run_end, submission_end=submission_end)
    out = measure(limits=limits, timeout_s=given, **kw)
    timed_out = any(isinstance(r, dict) and "ran past" in str(r.get("functional_reason", "")) or
                    "no time was left" in str(r.get("functional_reason", "")) for r in (out if isinstance(out, list) else []))
    if not timed_out or cut is None:
        return out, None
    return out, {"code": cut, "message": f"For `{rel}`, the functional test of the model's blocks was given "
                                         f"{given:.0f} s, what was left of the time, and did not finish: the "
                                         f"architecture is read from the graph alone."}
