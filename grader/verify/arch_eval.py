"""The functional test of residual and SE blocks, run in a fresh sandbox (grader.verify.arch).

Self-contained: `source()` is this module's job code as text, written next to the captured
blocks and run as `python -I -B test.py job.json` by grader.verify.host.run_job; `test_blocks`
is the same function in-process (tests). The job (job.json) lists blocks:

    {"blocks": [{"id": "a0b1", "files": {"block": "a0b1.pt", "short": ..., "plain": ...},
                 "format": {"block": "torchscript"|"export", ...}, "in_shape": [C, H, W],
                 "zero": ["bn2.weight", "bn2.bias"], "force": {"weight": ..., "bias": ...}}],
     "seed": 0}

For each block, on random inputs of its in_shape (x >= 0 and x of both signs):
- zero: the named parameters set to 0 (the residual branch silenced): `changed` (the output moved),
  `constant` (the output no longer depends on x: no skip around them), `identity` (the output is
  x, or relu(x) for any x: an identity skip), `shortcut` (the output is the projection shortcut's
  output, or its relu); `err` the smallest relative error of those;
- force: the gate's last FC weight 0 and bias GATE_BIAS, so that a sigmoid gives 1 (`equals_plain`:
  the block then computes what its plain variant, the gate's multiply removed, computes; a gate
  without sigmoid scales by GATE_BIAS and does not); `scale`: the median ratio block/plain.
Prints one JSON line: {"ok": true, "blocks": [{"id", "zero": {...} | {"error"}, "force": ... }]}.
Nothing here sees a label or a dataset.
"""

from __future__ import annotations

import inspect

GATE_BIAS = 30.0
"""The forced gate's pre-activation: sigmoid(30) = 1 - 9e-14."""
TOL = 1e-3
"""Relative error (to the output's scale) under which two outputs are the same."""


def _job_load(path, fmt):
    import torch

    if fmt == "export":
        return torch.export.load(path).module()
    m = torch.jit.load(path, map_location="cpu")
    m.eval()
    return m


def _job_params(module):
    return dict(module.named_parameters())


def _job_rel(a, b):
    import torch

    if a.shape != b.shape:
        return float("inf")
    scale = max(float(b.abs().max()), 1e-6)
    return float((a - b).abs().max()) / scale if torch.isfinite(a).all() else float("inf")


def _job_zero(block, short, names, xs):
    import torch

    params = _job_params(block)
    missing = [n for n in names if n not in params]
    if missing or not names:
        return {"error": "no parameter named " + ", ".join(missing or ["(none)"])}
    with torch.no_grad():
        before = [block(x) for x in xs]
        saved = {n: params[n].detach().clone() for n in names}
        try:
            for n in names:
                params[n].zero_()
            after = [block(x) for x in xs]
        finally:
            for n, v in saved.items():
                params[n].copy_(v)
        pos, mixed = xs
        out = {"changed": max(_job_rel(a, b) for a, b in zip(after, before)) > TOL}
        spread = float((after[0] - after[0][:1]).abs().max()) if after[0].dim() else 0.0
        scale = max(float(before[0].abs().max()), 1e-6)
        out["constant"] = spread / scale <= TOL and after[0].shape == after[1].shape and \
            float((after[0][:1] - after[1][:1]).abs().max()) / scale <= TOL
        errs = {"identity": min(_job_rel(after[0], pos), _job_rel(after[1], torch.relu(mixed)),
                                 _job_rel(after[1], mixed) if after[1].shape == mixed.shape else float("inf"))}
        out["identity"] = errs["identity"] <= TOL
        if short is not None:
            s = [short(x) for x in xs]
            errs["shortcut"] = min(max(_job_rel(a, b) for a, b in zip(after, s)),
                                   max(_job_rel(a, torch.relu(b)) for a, b in zip(after, s)))
            out["shortcut"] = errs["shortcut"] <= TOL
        else:
            out["shortcut"] = None
        finite = [e for e in errs.values() if e != float("inf")]
        out["err"] = round(min(finite), 6) if finite else None
    return out


def _job_force(block, plain, force, xs):
    import torch

    params = _job_params(block)
    w, b = force.get("weight"), force.get("bias")
    if w not in params or b not in params:
        return {"error": "no parameter named " + ", ".join(n for n in (w, b) if n not in params)}
    with torch.no_grad():
        saved = {n: params[n].detach().clone() for n in (w, b)}
        try:
            params[w].zero_()
            params[b].fill_(GATE_BIAS)
            forced = [block(x) for x in xs]
        finally:
            for n, v in saved.items():
                params[n].copy_(v)
        want = [plain(x) for x in xs]
        err = max(_job_rel(a, c) for a, c in zip(forced, want))
        ratio = None
        if forced[1].shape == want[1].shape:
            mask = want[1].abs() > 1e-3
            if bool(mask.any()):
                ratio = float((forced[1][mask] / want[1][mask]).median())
    return {"equals_plain": err <= TOL, "err": round(err, 6) if err != float("inf") else None,
            "scale": None if ratio is None or ratio != ratio or abs(ratio) == float("inf") else round(ratio, 4)}


def test_blocks(job, folder):
    """The result dict for `job` (see the module docstring), the captured files in `folder`."""
    import os

    import torch

    torch.manual_seed(int(job.get("seed", 0)))
    out = []
    for spec in job.get("blocks", [])[:64]:
        entry = {"id": spec.get("id")}
        try:
            files, fmt = spec["files"], spec["format"]
            block = _job_load(os.path.join(folder, files["block"]), fmt["block"])
            shape = tuple(int(n) for n in spec["in_shape"])
            mixed = torch.randn((6,) + shape)
            xs = (torch.rand((6,) + shape) * 2.0, mixed)
            short = _job_load(os.path.join(folder, files["short"]), fmt["short"]) if files.get("short") else None
            entry["zero"] = _job_zero(block, short, list(spec.get("zero") or []), xs)
            if spec.get("force") and files.get("plain"):
                plain = _job_load(os.path.join(folder, files["plain"]), fmt["plain"])
                entry["force"] = _job_force(block, plain, spec["force"], xs)
        except Exception as exc:  # noqa: BLE001 - one block's failure is its own result
            entry["error"] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0][:300]
        out.append(entry)
    return {"ok": True, "blocks": out}


def _job_main():
    import json
    import os
    import sys

    import torch

    torch.set_num_threads(1)
    path = sys.argv[1]
    try:
        with open(path, encoding="utf-8") as fh:
            job = json.load(fh)
        result = test_blocks(job, os.path.dirname(os.path.abspath(path)))
    except Exception as exc:  # noqa: BLE001
        result = {"ok": False, "error": (type(exc).__name__ + ": " + str(exc))[:300]}
    sys.stdout.write(json.dumps(result, allow_nan=False) + "\n")


def source() -> str:
    """The job script's source: this module's functions and a call of `_job_main`."""
    parts = [f"GATE_BIAS = {GATE_BIAS!r}\nTOL = {TOL!r}\n"]
    for fn in (_job_load, _job_params, _job_rel, _job_zero, _job_force, test_blocks, _job_main):
        parts.append(inspect.getsource(fn))
    return "\n\n".join(parts) + "\n\nif __name__ == '__main__':\n    _job_main()\n"
