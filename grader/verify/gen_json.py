"""Reading the probe's `gen.json` and the measuring sandbox's result, strictly.

Both come from code that shared a process with student code (the kernel's teardown, the
captured models), so they are data to validate, never to trust: a size cap, a nesting bound, a
schema, file names derived from validated ids only, and every number finite, in range and
capped in count. A malformed capture entry costs only that capture (its `reason` says why);
a malformed file or result as a whole is a `NotVerified` whose message is the reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader.verify.spec import NotVerified, is_int, is_str, regular

MAX_GEN_JSON_BYTES = 256 * 1024
"""gen.json's size cap (bytes)."""
MAX_CAPTURES = 8
"""Captures read at most (the probe writes at most 8, newest trained first)."""
ROLES = ("generator", "cgenerator", "discriminator", "vae")
MEASURED_ROLES = ("generator", "cgenerator", "vae")
"""Roles whose samples (and, for a VAE, test-set bound) are measured; a discriminator's structure only."""
FILE_SUFFIX = {"forward": "", "encode": "-encode", "decode": "-decode"}
"""A capture's files: `<id><suffix>.pt`."""
FORMATS = ("script", "trace", "export")
VAE_OUTPUTS = ("recon", "mu", "logvar")
MAX_LATENT = 4096
"""Largest latent size (elements per sample) measured."""
MAX_CLASSES = 1000
MAX_FEATURES = 256
"""Largest instrument feature dimension read back."""
MAX_KINDS = 64
"""Distinct operator names and conv layers read back at most (grader.verify.evaluator caps)."""
OUTPUT_MAPS = ("0..1: as is", "tanh range: (x + 1) / 2", "about 0..1 (no sigmoid): clipped to 0..1",
               "about -1..1 (no tanh): (x + 1) / 2, clipped to 0..1", "logits: sigmoid")
"""How grader.verify.gen_eval maps a generator's outputs to pixels 0..1."""
_ID = re.compile(r"^[a-z][0-9]{1,2}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]'\"]{0,99}$")


def read_gen(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(validated capture records, how many more the probe dropped) from gen.json; raises
    NotVerified when the file is missing, too large, not JSON or not a gen.json at all. Each
    record holds the contract's keys (grader/verify/gen_eval.py, COMMON contract) with
    `files`/`format` only for the files named by its id, and `reason` when it cannot be measured."""
    try:
        regular(path, MAX_GEN_JSON_BYTES, "generative models' description (gen.json)")
    except NotVerified as exc:
        if "missing" in str(exc):
            raise NotVerified("no generative model was captured after the notebook ran (the teardown "
                              "did not finish, or the probe was not loaded)") from None
        raise
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise NotVerified("the generative models' description (gen.json) is nested too deeply to be read") from None
    except (ValueError, UnicodeDecodeError):
        raise NotVerified("the generative models' description (gen.json) is not valid JSON") from None
    if not (isinstance(data, dict) and data.get("version") == 1 and isinstance(data.get("captures"), list)):
        raise NotVerified("the generative models' description (gen.json) is malformed at `version` or `captures`")
    dropped = data.get("dropped", 0)
    dropped = dropped if is_int(dropped) else 0
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for k, entry in enumerate(data["captures"]):
        if k >= MAX_CAPTURES:
            dropped += 1
            continue
        record = capture_record(entry, seen)
        seen.add(record["id"])
        records.append(record)
    return records, dropped


def _bad(key: str) -> NotVerified:
    return NotVerified(f"its entry in gen.json is malformed at `{key}`")


def _ints(v: Any, lo: int, hi: int, n_max: int = 4) -> bool:
    return (isinstance(v, list) and 1 <= len(v) <= n_max
            and all(isinstance(d, int) and not isinstance(d, bool) and lo <= d <= hi for d in v))


def _range(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 2 and all(_num(x) for x in v) and v[0] <= v[1]
            and all(abs(x) < 1e30 for x in v))


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def capture_record(entry: Any, seen: set[str]) -> dict[str, Any]:
    """One gen.json capture validated (see `read_gen`); a malformed entry becomes
    `{"id", "role", "reason"}` (id and role when readable)."""
    cid = entry.get("id") if isinstance(entry, dict) else None
    if not (isinstance(cid, str) and _ID.match(cid) and cid not in seen):
        cid = f"x{len(seen)}"  # a name of ours: nothing is read by it
        return {"id": cid, "role": None, "reason": "its entry in gen.json has no valid, unique id"}
    role = entry.get("role") if entry.get("role") in ROLES else None
    try:
        return _record(entry, cid)
    except NotVerified as exc:
        return {"id": cid, "role": role, "reason": str(exc)}


def _record(e: dict[str, Any], cid: str) -> dict[str, Any]:
    checks: dict[str, bool] = {
        "role": e.get("role") in ROLES,
        "name": e.get("name") is None or (isinstance(e["name"], str) and bool(_NAME.match(e["name"]))),
        "class": is_str(e.get("class")),
        "model_ref": e.get("model_ref") is None or is_int(e["model_ref"]),
        "optimizer_refs": isinstance(e.get("optimizer_refs", []), list) and len(e.get("optimizer_refs", [])) <= 50
        and all(is_int(r) for r in e.get("optimizer_refs", [])),
        "latent": e.get("latent") is None or (is_int(e["latent"]) and 1 <= e["latent"] <= MAX_LATENT),
        "latent_shape": e.get("latent_shape") is None or (_ints(e["latent_shape"], 1, MAX_LATENT)
                                                           and math.prod(e["latent_shape"]) <= MAX_LATENT),
        "label_input": e.get("label_input") in (None, "index", "onehot"),
        "label_position": e.get("label_position") is None or (is_int(e["label_position"]) and e["label_position"] <= 1),
        "n_classes": e.get("n_classes") is None or (is_int(e["n_classes"]) and 2 <= e["n_classes"] <= MAX_CLASSES),
        "image_shape": e.get("image_shape") is None or _ints(e["image_shape"], 1, 8192),
        "output_range": e.get("output_range") is None or _range(e["output_range"]),
        "input_range": e.get("input_range") is None or _range(e["input_range"]),
        "vae_outputs": e.get("vae_outputs") is None or (
            isinstance(e["vae_outputs"], list) and 3 <= len(e["vae_outputs"]) <= 6
            and all(is_str(o) and len(o) <= 40 for o in e["vae_outputs"])
            and all(e["vae_outputs"].count(o) == 1 for o in VAE_OUTPUTS)),
        "calls": is_int(e.get("calls", 0)), "steps": is_int(e.get("steps", 0)),
        "reason": e.get("reason") is None or isinstance(e["reason"], str),
    }
    for key, ok in checks.items():
        if not ok:
            raise _bad(key)
    record: dict[str, Any] = {"id": cid, "role": e["role"], "name": e.get("name"), "class": e["class"],
                              "model_ref": e.get("model_ref"), "optimizer_refs": list(e.get("optimizer_refs", [])),
                              **{k: e.get(k) for k in ("latent", "latent_shape", "label_input", "label_position",
                                                       "n_classes", "image_shape", "output_range", "input_range",
                                                       "vae_outputs")},
                              "calls": e.get("calls", 0), "steps": e.get("steps", 0)}
    if isinstance(e.get("reason"), str):
        record["reason"] = "not captured: " + (e["reason"].strip()[:300] or "no reason given")
        return record
    files, fmt = e.get("files"), e.get("format")
    if not (isinstance(files, dict) and isinstance(fmt, dict) and "forward" in files and set(files) <= set(FILE_SUFFIX)
            and all(files[k] == f"{cid}{FILE_SUFFIX[k]}.pt" and fmt.get(k) in FORMATS for k in files)):
        raise _bad("files")
    role = e["role"]
    if role == "cgenerator" and e.get("label_input") is None:
        raise _bad("label_input")
    if role in ("generator", "cgenerator") and e.get("latent_shape") is None:
        raise _bad("latent_shape")
    if role == "vae" and "decode" in files and e.get("latent_shape") is None and e.get("latent") is None:
        raise _bad("latent")
    record["files"], record["format"] = dict(files), {k: fmt[k] for k in files}
    return record


def public(record: Mapping[str, Any]) -> dict[str, Any]:
    """A capture record as the evidence shows it: without `files`/`format`."""
    return {k: v for k, v in record.items() if k not in ("files", "format")}


# ---------------------------------------------------------------- the sandbox's result


def _floats(v: Any, n: int | None = None, lo: float = -1e30, hi: float = 1e30, n_max: int = MAX_FEATURES) -> bool:
    return (isinstance(v, list) and (len(v) == n if n is not None else 1 <= len(v) <= n_max)
            and all(_num(x) and lo <= x <= hi for x in v))


def check_samples(s: Any, *, n: int, n_classes: int, dim: int) -> dict[str, Any]:
    """measure_generator's dict from the sandbox (grader.verify.gen_eval), validated: n predicted
    classes, a score in 1..n_classes, a (dim,) mean and (dim, dim) covariance, a diversity in
    0..28 (pixels 0..1 of 784 pixels), a label effect in 0..1 or None. Raises NotVerified naming
    the first bad key."""
    def need(ok: bool, key: str) -> None:
        if not ok:
            raise NotVerified(f"the measuring sandbox's sample measures are malformed at `{key}`")
    need(isinstance(s, dict), "samples")
    need(s.get("n") == n and s.get("n_classes") == n_classes, "n")
    need(s.get("output_map") in OUTPUT_MAPS, "output_map")
    need(_range(s.get("output_range")), "output_range")
    need(s.get("resize") is None or (isinstance(s["resize"], str) and len(s["resize"]) <= 100), "resize")
    need(_num(s.get("classifier_score")) and 1 - 1e-6 <= s["classifier_score"] <= n_classes + 1e-6, "classifier_score")
    p = s.get("predicted")
    need(isinstance(p, list) and len(p) == n and all(is_int(c) and c < n_classes for c in p), "predicted")
    need(_floats(s.get("feature_mean"), dim), "feature_mean")
    cov = s.get("feature_cov")
    need(isinstance(cov, list) and len(cov) == dim and all(_floats(row, dim) for row in cov), "feature_cov")
    need(_num(s.get("diversity")) and 0 <= s["diversity"] <= 28.0 + 1e-6, "diversity")
    effect = s.get("label_effect")
    need(effect is None or (_num(effect) and 0 <= effect <= 1 + 1e-6), "label_effect")
    return {k: s.get(k) for k in ("n", "output_map", "output_range", "resize", "classifier_score", "predicted",
                                  "feature_mean", "feature_cov", "diversity", "label_effect")}


def check_vae(v: Any, *, n: int) -> dict[str, Any]:
    """measure_vae's dict from the sandbox, validated: nats per image finite and >= 0 (a
    Bernoulli NLL of 784 pixels is at most 784 * 16.2 nats with probabilities clipped at 1e-7),
    K per-dimension terms. Raises NotVerified naming the first bad key."""
    def need(ok: bool, key: str) -> None:
        if not ok:
            raise NotVerified(f"the measuring sandbox's VAE measures are malformed at `{key}`")
    need(isinstance(v, dict), "vae")
    need(v.get("n") == n, "n")
    k = v.get("latent")
    need(is_int(k) and 1 <= k <= MAX_LATENT, "latent")
    need(_num(v.get("recon")) and 0 <= v["recon"] <= 784 * 17, "recon")
    need(_num(v.get("kl")) and -1e-6 <= v["kl"] < 1e12, "kl")
    need(_num(v.get("nelbo")) and abs(v["nelbo"] - v["recon"] - v["kl"]) <= 1e-6 * max(1.0, v["nelbo"]), "nelbo")
    need(_floats(v.get("kl_per_dim"), k, -1e-6, 1e12), "kl_per_dim")
    need(_floats(v.get("mu_var"), k, 0.0, 1e30), "mu_var")
    need(v.get("decoder_output") in ("probabilities", "logits") and v.get("likelihood") == "bernoulli", "decoder_output")
    return {key: v[key] for key in ("n", "nelbo", "recon", "kl", "kl_per_dim", "mu_var", "latent", "decoder_output",
                                    "likelihood")}


def check_facts(f: Any) -> dict[str, Any]:
    """A capture's measured structure (gen_eval `_gen_facts`), validated; raises NotVerified."""
    def need(ok: bool, key: str) -> None:
        if not ok:
            raise NotVerified(f"the measuring sandbox's model facts are malformed at `{key}`")
    need(isinstance(f, dict), "facts")
    if isinstance(f.get("error"), str):
        raise NotVerified("the model's structure could not be read: " + f["error"][:200])
    need(isinstance(f.get("digest"), str) and re.fullmatch(r"[0-9a-f]{64}", f["digest"]) is not None, "digest")
    ops = f.get("ops")
    need(isinstance(ops, dict) and len(ops) <= MAX_KINDS
         and all(is_str(k) and len(k) <= 80 and is_int(c) for k, c in ops.items()), "ops")
    need(isinstance(f.get("ops_complete"), bool), "ops_complete")
    need(is_int(f.get("params")), "params")
    layers = f.get("layers")
    need(isinstance(layers, list) and len(layers) <= MAX_KINDS and all(
        isinstance(x, list) and len(x) == 3 and x[0] in ("conv", "conv_transpose")
        and _ints(x[1], 1, 1024, 3) and _ints(x[2], 1, 1024, 3) for x in layers), "layers")
    return {"ops": dict(ops), "ops_complete": f["ops_complete"], "params": f["params"], "digest": f["digest"],
            "layers": [[x[0], list(x[1]), list(x[2])] for x in layers]}


def result_line(stdout: bytes, stderr: bytes, code: int | str) -> dict[str, Any]:
    """The sandbox's one `ok` result line; raises NotVerified (none, several, or `ok` false)."""
    results = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict) and "ok" in value:
            results.append(value)
    if len(results) > 1:  # only the measuring script writes there: a second line is forged
        raise NotVerified("the measuring sandbox's output holds more than one result line, so none of them is trusted")
    if not results:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        raise NotVerified(f"the measuring sandbox crashed without a result ({tail[0][:200]})")
    if results[0].get("ok") is not True:
        raise NotVerified(f"the measuring sandbox failed: {str(results[0].get('error'))[:300]}")
    return results[0]


def entries(result: Mapping[str, Any], ids: Sequence[str]) -> list[dict[str, Any]]:
    """The result's per-capture entries, one per id of the job, in order; raises NotVerified."""
    caps = result.get("captures")
    if not (isinstance(caps, list) and [c.get("id") if isinstance(c, dict) else None for c in caps] == list(ids)):
        raise NotVerified("the measuring sandbox's result does not hold one entry per capture")
    return caps
