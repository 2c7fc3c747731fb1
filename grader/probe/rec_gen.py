"""Probe part: generators, discriminators and VAEs: their inputs and outputs, captured after the last cell.

Runs inside the kernel as `_dllab_probe_gen`; see recorder.py for the rules. Idle unless the
probe was installed with `generative` (the rubric's `generative:` section): then nothing is
hooked and `export` writes nothing.

While the notebook runs, a global forward hook sees every call of a model rec_torch recorded
(the outermost module with parameters, at its first forward: its submodules' calls are not
looked at). Per model (by its rec_torch ref; no reference to the model itself) it counts the
calls and keeps, per call signature (positional tensor inputs: per-sample shape and dtype; the
output's structure: a tensor, a tuple/list or a dict of tensors, per-sample shapes), at most
MAX_SIGNATURES of them: the running min/max of each tensor input and output (detached 0-dim
tensors on the model's device, no GPU sync per call; over a signature's first RANGE_EVERY_CALL
calls, then every RANGE_STRIDE-th) and a CPU copy of the first SAMPLE_ROWS rows of each input at
the signature's first call (the notebook's own inputs, for tracing and the checks).

`export(folder)` (teardown, recorder.export_generative) classifies each model by its most-used
signature (COMMON16 "Classification"):
- generator: one float noise input (B, k) or (B, k, 1, 1) -> an image (B, C, H, W), (B, H, W)
  or a flat (B, n*n) / (B, 3*n*n), bigger than the noise;
- cgenerator: the same with one more input, the label: integer (B,) or (B, 1) -> "index", float
  (B, n) rows that are one-hot -> "onehot"; or one input whose first rows end (or start) with n
  one-hot columns (`G(torch.cat([z, onehot], 1))`): captured behind a wrapper taking (z, y);
- discriminator: an image batch (plus an optional label) -> one value per sample ((B,), (B, 1)),
  and only when the notebook has a generator whose images have as many values;
- vae: an image batch -> a tuple/list/dict holding the reconstruction (as many values as the
  input) and at least two (B, K) tensors: the first two that do not change with the random
  seed (in eval mode) are mu and log-variance, in that order; another (B, K) one is z.
Not recognized (no capture): a VAE whose forward returns the reconstruction alone, an encoder
and a decoder trained as two top-level models (the decoder alone is then a generator), a label
fed by keyword. Each model is captured on a CPU deep copy in eval mode (rec_export._cpu_copy;
a model gone by the end, from the tensors rec_torch kept for its run: rec_runs._run_model) as
TorchScript (`torch.jit.script`, else `torch.jit.trace` on inputs of the notebook's own shapes,
check_trace=False) or else as a `torch.export` program with a dynamic batch, each checked
against the copy on a bigger batch (outputs that change with the seed, a VAE's sample, in shape
only). Every file takes inputs of the notebook's per-sample shapes: the generator's z of
`latent_shape` (and the label at `label_position`), a discriminator's or VAE's images of
`image_shape`. A VAE also gets `encode` (x -> (mu, logvar), x of `image_shape`) from its
`encode` method, its `encoder` submodule or else its forward's mu and logvar, whichever gives
the forward's mu and logvar; and `decode` ((B, K) z -> image) from its `decode` method or
`decoder` submodule, else the first direct submodule that maps z to an image (`self.dec`),
checked by shape. `gen.json` (COMMON16's contract) lists at most
MAX_CAPTURES models, newest trained first (`dropped`: how many more); generators and VAEs are
written before discriminators, within what may still leave the sandbox (grader.harvest's 64 MiB
less what the probe folder holds, at most MAX_BYTES); a capture that failed has a `reason` and no files.
"""

from __future__ import annotations

import json
import linecache
import math
import os
import sys
import time
import types
import warnings

HOOK_MODULES = ("torch.nn.modules.module",)
MAX_MODELS = 200  # models whose calls are recorded
MAX_SIGNATURES = 8  # distinct call signatures per model
MAX_ARGS = 8  # positional inputs looked at
SAMPLE_ROWS = 4
MAX_SAMPLE_VALUES = 1 << 18  # per sample: bigger inputs keep no copy
RANGE_EVERY_CALL = 64  # a signature's first calls update the ranges; later ones, every RANGE_STRIDE-th
RANGE_STRIDE = 8
MAX_CAPTURES = 8
EXAMPLE_BATCH, CHECK_BATCH = 2, 8
MAX_SECONDS = 120  # the captures together: the teardown has 300 s for everything (grader.execute)
MAX_BYTES = 32 * 2**20  # the captures together, within what leaves the sandbox (grader.harvest: 64 MiB in all)
HARVEST_BYTES = 64 * 2**20
_GENERATIVE = ("generator", "cgenerator", "vae")

_core = None
_on = False
_T = None  # rec_torch: the model registry
_records = {}  # model ref -> _Model


class _Model:
    __slots__ = ("calls", "cls", "sigs")

    def __init__(self, cls):
        self.cls = cls  # its class name
        self.calls = 0
        self.sigs = {}  # signature key -> _Sig


class _Sig:
    __slots__ = ("args", "calls", "hi", "lo", "out", "ranges", "rows")

    def __init__(self, args, out, rows):
        self.calls = 0
        self.args, self.out, self.rows = args, out, rows
        self.lo, self.hi = {}, {}  # slot ("a0", "o1") -> 0-dim float tensor
        self.ranges = True


def setup(core):
    global _core, _T
    _core = core
    _T = sys.modules[core.PROBE_NAME + "_torch"]


def configure(caps):
    global _on
    _on = bool(caps.get("generative"))


def tracked():
    return ()


def flush(reason):
    return None


def cell_end():
    return None


def at_exit():
    return None


def patch():
    if not _on:
        return
    mm = sys.modules.get("torch.nn.modules.module")
    register = getattr(mm, "register_module_forward_hook", None)
    if register is not None and not _T._hook_registered(getattr(mm, "_global_forward_hooks", None), _forward_post):
        register(_forward_post)


# ---------------------------------------------------------------- while the notebook runs


def _forward_post(module, args, output):
    # Runs after every module call: submodules and parameterless modules leave at once.
    entry = _T._mods.get(id(module))
    if entry is None or entry[1] is None or entry[0]() is not module:
        return None
    _core.guarded("gen-forward", _note, entry[1].ref, module, args, output)
    return None


def _note(ref, module, args, output):
    torch = sys.modules["torch"]
    if ref is None or torch.jit.is_tracing() or _compiling(torch):
        return
    m = _records.get(ref)
    if m is None:
        if len(_records) >= MAX_MODELS:
            return
        m = _records[ref] = _Model(type(module).__name__[:100])
    m.calls += 1
    args = args[:MAX_ARGS]
    T = torch.Tensor
    key = (tuple(_key(a, T) for a in args), _out_key(output, T))  # cheap: no string, no copy
    s = m.sigs.get(key)
    if s is None:
        if len(m.sigs) >= MAX_SIGNATURES:
            return
        s = m.sigs[key] = _Sig(tuple(_desc(a, torch) for a in args), _out_desc(output, torch),
                               [_rows(a, torch) for a in args])
    s.calls += 1
    if s.ranges and (s.calls <= RANGE_EVERY_CALL or s.calls % RANGE_STRIDE == 0):
        try:
            for i, a in enumerate(args):
                _range(s, f"a{i}", a, torch)
            for slot, t in _out_tensors(output, torch):
                _range(s, slot, t, torch)
        except Exception:  # noqa: BLE001 - an odd tensor (meta, sparse): no ranges for this signature
            s.ranges = False


def _compiling(torch):
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def _key(x, T):
    return (x.ndim, x.shape[1:], x.dtype) if isinstance(x, T) else type(x)


def _out_key(out, T):
    if isinstance(out, (tuple, list)):
        return (type(out),) + tuple(_key(v, T) for v in out[:MAX_ARGS + 1])
    if isinstance(out, dict):
        return (dict,) + tuple((k, _key(v, T)) for k, v in list(out.items())[:MAX_ARGS + 1])
    return _key(out, T)


def _desc(x, torch):
    """("t", per-sample shape (None: a 0-dim tensor), "float"|"int"|"bool"|"complex", dtype name)
    for a tensor, ("o", type name) for anything else."""
    if isinstance(x, torch.Tensor):
        kind = "float" if x.is_floating_point() else "bool" if x.dtype == torch.bool else (
            "complex" if x.is_complex() else "int")
        return ("t", tuple(int(n) for n in x.shape[1:]) if x.dim() else None, kind, str(x.dtype))
    return ("o", type(x).__name__[:40])


def _out_desc(out, torch):
    if isinstance(out, (tuple, list)) and len(out) <= MAX_ARGS:
        return ("tuple", tuple(_desc(v, torch) for v in out))
    if isinstance(out, dict) and len(out) <= MAX_ARGS and all(isinstance(k, str) for k in out):
        return ("dict", tuple((k[:50], _desc(v, torch)) for k, v in out.items()))
    return _desc(out, torch)


def _out_tensors(out, torch):
    """(slot, tensor) of an output: "o0" for a tensor, "o<i>" for a tuple's or a dict's i-th item."""
    items = list(out.values()) if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out]
    return [(f"o{i}", t) for i, t in enumerate(items[:MAX_ARGS]) if isinstance(t, torch.Tensor)]


def _rows(x, torch):
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.is_complex() or x.device.type == "meta":
        return None
    per = math.prod(x.shape[1:])
    if per > MAX_SAMPLE_VALUES:
        return None
    return x.detach()[:SAMPLE_ROWS].to("cpu", copy=True)


def _range(s, slot, x, torch):
    if not isinstance(x, torch.Tensor) or not x.numel() or x.dtype == torch.bool or x.is_complex():
        return
    lo, hi = torch.aminmax(x.detach())
    lo, hi = lo.float(), hi.float()
    old = s.lo.get(slot)
    if old is None:
        s.lo[slot], s.hi[slot] = lo, hi
        return
    if old.device != lo.device:
        lo, hi = lo.to(old.device), hi.to(old.device)
    s.lo[slot], s.hi[slot] = torch.fmin(old, lo), torch.fmax(s.hi[slot], hi)  # fmin: a NaN batch is skipped


# ---------------------------------------------------------------- classification


def _numel(shape):
    return math.prod(shape) if shape is not None else 0


def _square(n):
    return n > 0 and math.isqrt(n) ** 2 == n


def _image(shape):
    if shape is None:
        return False
    if len(shape) == 3:
        return 1 <= shape[0] <= 4 and shape[1] >= 8 and shape[2] >= 8
    if len(shape) == 2:
        return shape[0] >= 8 and shape[1] >= 8
    return len(shape) == 1 and shape[0] >= 64 and (_square(shape[0]) or (shape[0] % 3 == 0 and _square(shape[0] // 3)))


def _noise(d):
    return d[0] == "t" and d[2] == "float" and d[1] is not None and (
        len(d[1]) == 1 or (len(d[1]) == 3 and d[1][1] == d[1][2] == 1))


def _span(s, slot):
    lo, hi = s.lo.get(slot), s.hi.get(slot)
    try:
        pair = [float(lo), float(hi)]
    except Exception:  # noqa: BLE001 - no range recorded
        return None
    return pair if all(math.isfinite(v) for v in pair) else None


def _label(s, i):
    """"index", "onehot" or None: how positional input `i` of signature `s` would hold a label."""
    d = s.args[i]
    if d[0] != "t" or d[1] is None:
        return None
    if d[2] == "int" and d[1] in ((), (1,)):
        return "index"
    if d[2] in ("int", "float") and len(d[1]) == 1 and 2 <= d[1][0] <= 1000:
        rows = s.rows[i]
        if rows is not None and len(rows) and bool(((rows == 0) | (rows == 1)).all()) and bool((rows.sum(1) == 1).all()):
            return "onehot"
    return None


def _onehot_block(rows):
    """(n, "end" | "start") when the first rows a generator got end (or start) with n columns
    that are one-hot and the others are not all 0/1: a label concatenated to the noise; else None."""
    if rows is None or rows.dim() != 2 or not len(rows):
        return None
    k = rows.shape[1]
    binary = (rows == 0) | (rows == 1)
    for where in ("end", "start"):
        best = None
        for n in range(2, min(k - 1, 1000) + 1):
            cols = slice(k - n, k) if where == "end" else slice(0, n)
            if not bool(binary[:, cols].all()):
                break
            if bool((rows[:, cols].sum(1) == 1).all()):
                best = n
        rest = binary[:, :k - best] if best and where == "end" else binary[:, best:] if best else None
        if rest is not None and not bool(rest.all()):
            return best, where
    return None


def _classify(m):
    """The role of a model from its most-used signature: a dict of gen.json fields (and the
    signature, `sig`), or None. Discriminators are kept only when a generator matches (export)."""
    s = max(m.sigs.values(), key=lambda v: v.calls)
    if any(d[0] != "t" for d in s.args) or not s.args:
        return None
    out = s.out
    if out[0] == "t" and _image(out[1]):
        zs = [i for i, d in enumerate(s.args) if _noise(d) and _numel(d[1]) < _numel(out[1]) and _label(s, i) is None]
        labels = [(i, _label(s, i)) for i in range(len(s.args)) if i not in zs and _label(s, i)]
        if len(zs) == 1 and len(s.args) == 1 + len(labels) and len(labels) <= 1:
            z = s.args[zs[0]][1]
            info = {"role": "cgenerator" if labels else "generator", "latent": _numel(z), "latent_shape": list(z),
                    "image_shape": list(out[1]), "output_range": _span(s, "o0"), "sig": s, "z": zs[0]}
            if labels:
                info.update(label_position=labels[0][0], label_input=labels[0][1])
            elif len(z) == 1 and _onehot_block(s.rows[zs[0]]):  # G(torch.cat([z, onehot], 1))
                n, where = _onehot_block(s.rows[zs[0]])
                info.update(role="cgenerator", latent=z[0] - n, latent_shape=[z[0] - n], label_input="onehot",
                            label_position=1, concat=where, n_classes=n)
            return info
    if not (s.args[0][2] == "float" and _image(s.args[0][1])):
        return None
    image = s.args[0][1]
    if out[0] == "t" and out[1] is not None and _numel(out[1]) == 1 and len(s.args) <= 2:
        info = {"role": "discriminator", "image_shape": list(image), "input_range": _span(s, "a0"),
                "output_range": _span(s, "o0"), "sig": s}
        if len(s.args) == 2:
            kind = _label(s, 1)
            if kind is None:
                return None
            info.update(label_position=1, label_input=kind)
        return info
    if out[0] in ("tuple", "dict") and len(s.args) == 1:
        items = [v[1] if out[0] == "dict" else v for v in out[1]]
        recon = [i for i, d in enumerate(items) if d[0] == "t" and _numel(d[1]) == _numel(image)]
        ks = [i for i, d in enumerate(items) if d[0] == "t" and d[2] == "float" and d[1] is not None
              and len(d[1]) == 1 and d[1][0] < _numel(image)]
        if recon and len(ks) >= 2 and len({items[i][1] for i in ks}) == 1:
            return {"role": "vae", "image_shape": list(image), "input_range": _span(s, "a0"),
                    "output_range": _span(s, f"o{recon[0]}"), "latent": items[ks[0]][1][0],
                    "latent_shape": list(items[ks[0]][1]), "sig": s, "recon": recon[0], "ks": ks,
                    "keys": [v[0] for v in out[1]] if out[0] == "dict" else None}
    return None


# ---------------------------------------------------------------- the teardown


def export(folder):
    """Write `gen.json` and the captured models (`g<k>.pt`, `g<k>-encode.pt`, `g<k>-decode.pt`) to
    `folder`; returns a one-line summary, or None when the part is idle (not `generative`)."""
    if not _on:
        return None
    X = sys.modules[_core.PROBE_NAME + "_export"]
    os.makedirs(folder, exist_ok=True)
    doc = {"version": 1, "captures": [], "dropped": 0}
    try:
        with X._quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc, line = _export(folder, X)
    except Exception as exc:  # noqa: BLE001 - a bug here must not look like the student's
        line = "the generative export code failed: " + X._exc_text(exc)
    with open(os.path.join(folder, "gen.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, allow_nan=False)
    return line


def _optimizers():
    """model ref -> (optimizer refs that stepped its parameters, their steps together)."""
    found = {}
    for rec in list(_T._aggregates):
        if rec.kind != "optimizer" or rec.ref is None or not rec.steps:
            continue
        for ref in getattr(rec, "models", None) or ():
            refs, steps = found.get(ref, ([], 0))
            found[ref] = (refs + [rec.ref], steps + rec.steps)
    return found


def _export(folder, X):
    torch = sys.modules.get("torch")
    doc = {"version": 1, "captures": [], "dropped": 0}
    if torch is None or not _records:
        return doc, "no generative model captured (no model was called)"
    objs = X._live_objects()
    opts = _optimizers()
    found = []
    for ref, m in list(_records.items()):
        info = _classify(m) if m.sigs else None
        if info is not None:
            info.update(ref=ref, calls=m.calls, cls=m.cls)
            found.append(info)
    images = {_numel(i["image_shape"]) for i in found if i["role"] in ("generator", "cgenerator")}
    found = [i for i in found if i["role"] != "discriminator" or _numel(i["image_shape"]) in images]
    # newest trained first: by the newest optimizer that stepped it, then the newest model
    found.sort(key=lambda i: (max(opts.get(i["ref"], ([-1], 0))[0]), i["ref"]), reverse=True)
    doc["dropped"] = max(0, len(found) - MAX_CAPTURES)
    found = found[:MAX_CAPTURES]
    budget, started = _budget(folder), time.monotonic()
    entries = {}
    with torch.random.fork_rng(devices=[]):
        # generators and VAEs before discriminators, for the bytes
        for k, info in sorted(enumerate(found), key=lambda p: (p[1]["role"] not in _GENERATIVE, p[0])):
            entry = entries[k] = _entry(f"g{k}", info, opts, objs, X)
            if time.monotonic() - started > MAX_SECONDS:
                entry["reason"] = f"the {MAX_SECONDS} s the teardown gives the captures had run out"
            else:
                budget -= _capture_model(folder, entry, info, objs, budget, X)
    doc["captures"] = [entries[k] for k in range(len(found))]
    said = [f"{e['id']} {e['role']} {e['name'] or e['class']} ({e.get('reason') or ', '.join(e['format'].values())})"
            for e in doc["captures"]]
    return doc, ("captured " + "; ".join(said))[:2000] if said else "no generative model captured"


def _budget(folder):
    """Bytes the captures may take: MAX_BYTES, less when the probe folder is already full."""
    st = _core.state()
    root = os.path.dirname(getattr(st, "events_path", "") or folder)
    used = 0
    for base, _, files in os.walk(root):
        for f in files[:5000]:
            try:
                used += os.lstat(os.path.join(base, f)).st_size
            except OSError:
                pass
    return max(0, min(MAX_BYTES, HARVEST_BYTES - used - 4 * 2**20))


def _entry(cid, info, opts, objs, X):
    ref = info["ref"]
    live = objs.get(ref)
    refs, steps = opts.get(ref, ([], 0))
    entry = {"id": cid, "role": info["role"], "name": None, "class": info["cls"], "model_ref": ref,
             "optimizer_refs": sorted(refs)[:50], "files": {}, "format": {},
             "latent": info.get("latent"), "latent_shape": info.get("latent_shape"),
             "label_input": info.get("label_input"), "label_position": info.get("label_position"),
             "n_classes": None, "image_shape": info.get("image_shape"), "output_range": info.get("output_range"),
             "input_range": info.get("input_range"), "vae_outputs": None, "calls": info["calls"], "steps": steps}
    if live is not None:
        names = [n for n in _core.names_for(live) if n.isascii() and n.isidentifier() and len(n) <= 100]
        entry["name"] = names[0] if names else None
    if info["role"] == "vae":
        names = {info["recon"]: "recon"}
        names.update(zip(info["ks"], ("mu", "logvar")))
        items = info["sig"].out[1]
        entry["vae_outputs"] = [names.get(i, "z" if i in info["ks"] else "other") for i in range(len(items))]
    return entry


def _model_copy(ref, objs, X):
    """(a CPU copy of model `ref` in eval mode, undo): the live model's, else the one rec_runs
    rebuilds from the tensors rec_torch kept for its optimizer."""
    live = objs.get(ref)
    if live is not None:
        return X._cpu_copy(live)
    R = sys.modules[_core.PROBE_NAME + "_runs"]
    R._bind()
    for rec in list(_T._aggregates):
        if rec.kind == "optimizer" and getattr(rec, "model", None) == ref and getattr(rec, "kept", None):
            return R._run_model(_T, rec), lambda: None
    raise X._Refusal("the model was no longer alive at the end of the notebook, and the probe had not kept "
                     "its weights (it keeps those of the newest runs only)")


def _capture_model(folder, entry, info, objs, budget, X):
    """Capture one model's files into `folder` (entry's files, format, n_classes, vae_outputs;
    or its reason); returns the bytes written."""
    written, names = 0, []
    try:
        dup, undo = _model_copy(info["ref"], objs, X)
    except X._Refusal as exc:
        entry["reason"] = str(exc)[:300]
        return 0
    except Exception as exc:  # noqa: BLE001 - a model that cannot be copied
        entry["reason"] = "the model could not be copied for capture: " + X._exc_text(exc)
        return 0
    try:
        if entry["label_input"]:
            entry["n_classes"] = _n_classes(info, dup)
        check = _inputs(info, entry, CHECK_BATCH, 1)
        model = dup
        if info.get("concat"):
            pair = "[z, y]" if info["concat"] == "end" else "[y, z]"
            model = _wrap(f"return self.model(torch.cat({pair}, 1))", dup, "z, y")
        parts = [("forward", model, _inputs(info, entry, EXAMPLE_BATCH, 0), check)]
        if info["role"] == "vae":
            parts += _vae_parts(dup, info, entry, check[0])
        for part, module, example, batch in parts:
            name = entry["id"] + ("" if part == "forward" else "-" + part) + ".pt"
            path = os.path.join(folder, name)
            try:
                kind = _save(module, example, batch, path, X)
            except X._Refusal:
                if part == "forward":
                    raise
                continue
            names.append(path)
            size = os.path.getsize(path)
            if written + size > budget:
                raise X._Refusal(f"its files would not fit in what may leave the sandbox ({budget / 2**20:.0f} MiB left)")
            written += size
            entry["files"][part], entry["format"][part] = name, kind
    except Exception as exc:  # noqa: BLE001 - one capture's failure must not cost the others
        for path in names:
            if os.path.exists(path):
                os.remove(path)
        entry["files"], entry["format"], written = {}, {}, 0
        entry["reason"] = (str(exc) if isinstance(exc, X._Refusal) else
                           "the capture code failed: " + X._exc_text(exc))[:300]
    finally:
        undo()
    return written


def _n_classes(info, model):
    torch = sys.modules["torch"]
    if info.get("concat"):
        return info["n_classes"]
    d = info["sig"].args[info["label_position"]]
    if info["label_input"] == "onehot":
        return d[1][0]
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    if len(embeddings) == 1:
        return int(embeddings[0].num_embeddings)
    top = _span(info["sig"], f"a{info['label_position']}")
    return int(top[1]) + 1 if top and 1 <= top[1] < 100000 else None


def _inputs(info, entry, n, seed):
    """Inputs of the notebook's own shapes and dtypes for `n` samples: fresh noise for z, labels
    0, 1, 2... (index or one-hot), the notebook's own first rows repeated for anything else."""
    torch = sys.modules["torch"]
    gen = torch.Generator().manual_seed(seed)
    s, out = info["sig"], []
    if info.get("concat"):  # the wrapper's (z, y), concatenated as the notebook did
        dtype = getattr(torch, s.args[0][3].replace("torch.", ""))
        y = torch.nn.functional.one_hot(torch.arange(n) % info["n_classes"], info["n_classes"])
        return torch.randn((n, info["latent"]), generator=gen).to(dtype), y.to(dtype)
    for i, d in enumerate(s.args):
        shape, dtype = d[1], getattr(torch, d[3].replace("torch.", ""))
        if i == info.get("z"):
            out.append(torch.randn((n,) + shape, generator=gen).to(dtype))
        elif i == info.get("label_position"):
            y = torch.arange(n) % (entry["n_classes"] or 2)
            if info["label_input"] == "onehot":
                y = torch.nn.functional.one_hot(y, shape[0])
            out.append(y.reshape((n,) + shape).to(dtype))
        elif s.rows[i] is not None and len(s.rows[i]):
            rows = s.rows[i]
            out.append(rows.repeat((-(-n // len(rows)),) + (1,) * (rows.dim() - 1))[:n])
        else:
            raise _refusal(f"its input {i} was not kept (too big)")
    return tuple(out)


def _refusal(text):
    return sys.modules[_core.PROBE_NAME + "_export"]._Refusal(text)


def _call(module, inputs, seed):
    torch = sys.modules["torch"]
    torch.manual_seed(seed)
    with torch.no_grad():
        return module(*inputs)


def _flat(out):
    torch = sys.modules["torch"]
    items = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (tuple, list)) else [out]
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise _refusal("its output is not a tensor or a tuple of tensors")
    return items


def _save(module, example, check, path, X, kinds=("script", "trace", "export")):
    """Save `module` to `path` the first of `kinds` that computes what it computes on `check` (a
    bigger batch than the `example` a trace or export sees): its outputs that do not change with
    the random seed must match, the others only in shape; returns the kind."""
    torch = sys.modules["torch"]
    want = [_flat(_call(module, check, seed)) for seed in (0, 1)]
    strict = {i for i, (a, b) in enumerate(zip(*want)) if a.shape == b.shape and torch.equal(a, b)}
    errors = []
    for kind in kinds:
        try:
            program = None
            if kind == "script":
                captured = torch.jit.script(module)
            elif kind == "trace":
                captured = torch.jit.trace(module, example, check_trace=False, strict=False)
            else:
                from torch.export import Dim, export as torch_export

                batch = Dim("batch", min=1, max=4096)
                program = torch_export(module, example, dynamic_shapes=tuple({0: batch} for _ in example))
                captured = program.module()
            got = _flat(_call(captured, check, 0))
            if len(got) != len(want[0]) or any(g.shape != w.shape or (i in strict and not torch.allclose(
                    g.float(), w.float(), rtol=1e-3, atol=1e-4)) for i, (g, w) in enumerate(zip(got, want[0]))):
                raise ValueError("the captured model computes something else than the model")
            if program is not None:
                torch.export.save(program, path)
            else:
                torch.jit.save(captured, path)
            return kind
        except Exception as exc:  # noqa: BLE001 - try the next way
            errors.append(kind + ": " + X._exc_text(exc))
    raise X._Refusal("it could not be captured (" + "; ".join(errors)[:400] + ")")


# ---------------------------------------------------------------- a VAE's encode and decode

_WRAP = '''\
import torch


class Wrapped(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, {args}):
        {body}
'''
_wrapped = {}  # (body, args) -> class


def _wrap(body, model, args="x"):
    """`model` behind a module whose forward(`args`) is `body`, defined from source that
    linecache holds, so that TorchScript can read it as it reads the notebook's cells."""
    cls = _wrapped.get((body, args))
    if cls is None:
        name = f"_dllab_probe_gen_wrap{len(_wrapped)}"
        src = _WRAP.format(body=body, args=args)
        file = "<" + name + ">"
        linecache.cache[file] = (len(src), None, src.splitlines(True), file)
        mod = types.ModuleType(name)
        mod.__file__ = file
        sys.modules[name] = mod
        exec(compile(src, file, "exec"), mod.__dict__)
        cls = _wrapped[(body, args)] = mod.Wrapped
    return cls(model)


def _vae_parts(dup, info, entry, x):
    """[(part, module, example, check)] for `encode` and `decode`; sets mu/logvar by what the
    forward's outputs do with the seed (entry's vae_outputs)."""
    torch = sys.modules["torch"]
    outs = [_flat(_call(dup, (x,), seed)) for seed in (0, 1)]
    det = [i for i in info["ks"] if torch.equal(outs[0][i], outs[1][i])]
    det = [i for i in det if not any(torch.equal(outs[0][i], outs[0][j]) for j in det if j < i)]  # z == mu in eval
    mu, logvar = det[:2] if len(det) >= 2 else info["ks"][:2]
    names = {info["recon"]: "recon", mu: "mu", logvar: "logvar"}
    entry["vae_outputs"] = [names.get(i, "z" if i in info["ks"] else "other") for i in range(len(outs[0]))]
    pick = (lambda i: f"out[{info['keys'][i]!r}]") if info["keys"] else (lambda i: f"out[{i}]")
    encoders = [("encode", "return self.model.encode(x)"), ("encoder", "return self.model.encoder(x)"),
                (None, f"out = self.model(x)\n        return {pick(mu)}, {pick(logvar)}")]
    decoders = [("decode", "return self.model.decode(x)"), ("decoder", "return self.model.decoder(x)")]
    # else any direct submodule that takes z and gives an image (`self.dec`, `self.generator`),
    # checked by shape below like the named ones
    decoders += [(name, f"return self.model.{name}(x)") for name, _ in list(dup.named_children())[:32]
                 if name.isidentifier() and name not in ("decode", "decoder", "encode", "encoder")]
    parts = []
    for attr, body in encoders:
        if attr is not None and not callable(getattr(dup, attr, None)):
            continue
        module = _wrap(body, dup)
        try:
            got = _flat(_call(module, (x,), 0))
        except Exception:  # noqa: BLE001 - it is no encoder of (mu, logvar): the next way
            continue
        if len(got) == 2 and all(g.shape == outs[0][i].shape and (i not in det or torch.allclose(g, outs[0][i]))
                                 for g, i in zip(got, (mu, logvar))):
            parts.append(("encode", module, (x[:EXAMPLE_BATCH],), (x,)))
            break
    gen = torch.Generator().manual_seed(2)
    z = torch.randn((CHECK_BATCH, info["latent"]), generator=gen).to(outs[0][mu].dtype)
    for attr, body in decoders:
        if not callable(getattr(dup, attr, None)):
            continue
        module = _wrap(body, dup)
        try:
            got = _call(module, (z,), 0)
        except Exception:  # noqa: BLE001 - it does not take z: the next way
            continue
        if isinstance(got, torch.Tensor) and got.dim() and got.shape[0] == len(z) and \
                got[0].numel() == _numel(info["image_shape"]):
            parts.append(("decode", module, (z[:EXAMPLE_BATCH],), (z,)))
            break
    return parts
