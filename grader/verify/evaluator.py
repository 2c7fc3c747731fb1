"""The evaluator: runs sandboxed, in a fresh Python, on the captured model and label-free images.

These functions are sent as source (`evaluator_source()`): standard library, numpy, torch,
torchvision and PIL only, no grader imports. The sandbox mounts no dataset: its folder holds
`model.pt`, `job.json` and the images the host wrote (grader.verify.data), nothing labelled.

Its one result, a JSON line on the original stdout (whatever the model prints goes to
/dev/null), is the contract the host validates (grader.verify.host.check_result):

    {"ok": true,
     "predictions": [int, ...],      # argmax class index per input image, in input order
     "parameters": {name: {"numel": int, "min": float, "max": float, "mean": float,
                           "std": float, "quantiles": [257 floats]}},
     "facts": {"digest": str, "shapes": {...}, "ops": {...}, "ops_complete": bool} | {"error": "..."},
                                     # only when the job asks for them ("facts": true)
     "runs": [{"predictions": [int, ...], "facts": {...}} | {"error": "..."}, ...]}   # only when the job has runs

`parameters` describes the loaded module's `named_parameters()` (at most 256, in order):
`std` is the population std (correction 0), `quantiles` are the 0, 1/256, ..., 1 quantiles
(linear interpolation, as `torch.quantile`); every float is finite. A parameter holding a
non-finite value is `{"numel": int, "finite": false}` instead.

`facts` (`_eval_facts`) are the structure of the loaded model, measured here, not claimed by the
notebook: `digest` is the sha256 hex of its parameters, all of `named_parameters()` in order
(the state_dict's; per parameter its name, its shape and its values as contiguous float32
bytes), so two captures of one set of weights have one digest, however each was captured;
buffers (BatchNorm's running statistics) are not in it, so a copy that only ran forward passes
in training mode is still the same model; `shapes` maps each named parameter (at most 256, in order) to its dims; `ops` counts the
operators of its graph by short name (`linear`, `conv2d`, `relu`, `max_pool2d`, ...), the path a
traced model ran or every path of a scripted one, at most MAX_GRAPH_NODES nodes walked and
MAX_OP_NAMES names kept (`ops_complete` false when a cap was reached). What cannot be measured is
`{"error": "..."}`: the predictions never depend on it. On failure: `{"ok": false,
"error": "..."}`. No accuracy is computed here: the host, which alone holds the labels, does.
"""

from __future__ import annotations

import inspect
from typing import Any

MAX_PARAMETERS = 256
"""Most parameters described in `parameters`."""
QUANTILES = 257
"""Quantiles per parameter: 0, 1/256, ..., 1."""
MAX_GRAPH_NODES = 20000
"""Graph nodes walked at most when counting a model's operators (`_eval_ops`)."""
MAX_OP_NAMES = 64
"""Distinct operator names kept at most in `ops`, the first met."""
BATCH_CACHE_BYTES = 512 * 2**20
"""Most bytes of transformed input batches `_eval_predict` keeps to reuse for a job's further models."""


def _eval_build_transform(steps: list) -> Any:
    """torchvision transform from the validated steps (same family, same parameters)."""
    import torch
    from torchvision import transforms as v1
    from torchvision.transforms import InterpolationMode

    v2 = None
    if any(s["family"] == "v2" for s in steps):  # its import is slow: only when needed
        try:
            from torchvision.transforms import v2
        except ImportError:  # an old torchvision
            pass
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


def _eval_image(job: dict, folder: str, pixels: Any, i: int) -> Any:
    """Input image i as torchvision's own dataset gives it (CIFAR10, MNIST, the default loader)."""
    import os

    from PIL import Image

    if job["storage"] == "npy":
        return Image.fromarray(pixels[i])  # (28, 28) uint8 is mode L, as MNIST gives it
    with open(os.path.join(folder, "images", f"{i:06d}.jpg"), "rb") as fh:
        img = Image.open(fh)
        return img.convert("RGB")


def _eval_tensor_batch(job: dict, pixels: Any, start: int, stop: int, transform: Any) -> Any:
    """Inputs start..stop-1 as one tensor, when the steps are v1 ToTensor and at most a v1
    Normalize on images stored as one array: the same float32 arithmetic, element by element,
    as torchvision's ToTensor on each PIL image (uint8 HWC to CHW, divided by 255) then its own
    Normalize on the batch; else None (each image goes through PIL and the transform)."""
    import torch

    ops = [s["op"] for s in job["steps"]]
    if (job["storage"] != "npy" or pixels is None or str(pixels.dtype) != "uint8" or pixels.ndim not in (3, 4)
            or ops not in (["ToTensor"], ["ToTensor", "Normalize"])
            or any(s["family"] != "v1" for s in job["steps"])):
        return None
    xb = torch.from_numpy(pixels[start:stop].copy())
    if xb.dim() == 3:  # (N, H, W): mode L, one channel
        xb = xb.unsqueeze(-1)
    xb = xb.permute(0, 3, 1, 2).contiguous().to(dtype=torch.get_default_dtype()).div(255)
    if len(ops) == 2:
        xb = transform.transforms[1](xb)  # torchvision's Normalize: batches broadcast per channel
    return xb


def _eval_parameters(model: Any) -> dict:
    """The contract's `parameters`: stats of each named parameter, at most 256, in order."""
    import math

    import torch

    out = {}
    for name, p in list(model.named_parameters())[:256]:
        t = p.detach().to("cpu", torch.float64).flatten()  # on the CPU: 514 scalar reads follow
        n = int(t.numel())
        if n == 0 or not bool(torch.isfinite(t).all()):
            out[name] = {"numel": n, "finite": False}
            continue
        ordered = torch.sort(t).values
        qs = []
        for k in range(257):
            pos = k * (n - 1) / 256
            lo = math.floor(pos)
            hi = min(lo + 1, n - 1)
            qs.append(float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)))
        st = {"numel": n, "min": float(ordered[0]), "max": float(ordered[-1]),
              "mean": float(t.mean()), "std": float(t.std(correction=0)) if n > 1 else 0.0, "quantiles": qs}
        finite = all(math.isfinite(v) for v in [st["min"], st["max"], st["mean"], st["std"], *qs])
        out[name] = st if finite else {"numel": n, "finite": False}  # 1e300 squared overflows
    return out


def _eval_op_name(kind: str) -> str:
    """Short operator name: `aten::relu_` and `aten.relu.default` -> `relu`; another namespace
    is kept (`quantized.linear`); "" for the graph's bookkeeping (prim::Constant, ...)."""
    ns, _, rest = kind.replace("::", ".").partition(".")
    if not rest or ns == "prim":
        return ""
    op = rest.split(".")[0]
    if op.endswith("_") and not op.startswith("_"):
        op = op[:-1]  # in place: relu_, add_
    return op if ns == "aten" else ns + "." + op


def _eval_ops(model: Any, fmt: str, max_nodes: int = 20000, max_names: int = 64) -> tuple:
    """({short operator name: count}, complete) of the model's graph: the inlined TorchScript
    graph after folding its constant branches (F.relu's `inplace` test), nested blocks included
    (a loop's body counted once), or a torch.export program's call_function nodes. At most
    `max_nodes` nodes are walked (MAX_GRAPH_NODES) and `max_names` names kept, the first met
    (MAX_OP_NAMES); `complete` is False when either cap was reached."""
    import contextlib

    import torch

    counts: dict = {}
    walked = 0
    complete = True

    def count(name: str) -> None:
        nonlocal complete
        if not name:
            return
        if name in counts or len(counts) < max_names:
            counts[name] = counts.get(name, 0) + 1
        else:
            complete = False

    if fmt == "export":
        for node in model.graph.nodes:
            walked += 1
            if walked > max_nodes:
                return counts, False
            if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
                count(_eval_op_name(str(node.target)))
        return counts, complete
    graph = model.inlined_graph  # a copy: folding it leaves the model alone
    with contextlib.suppress(Exception):  # an older torch: both branches of F.relu are counted
        torch._C._jit_pass_constant_propagation_immutable_types(graph)
    stack = [graph.block()]
    while stack:
        for node in stack.pop().nodes():
            walked += 1
            if walked > max_nodes:
                return counts, False
            kind = node.kind()
            if kind == "aten::_convolution":  # what tracing records for nn.Conv2d: name it by its stride
                try:
                    stride = node.inputsAt(3).node()
                    dims = len(list(stride.inputs())) if stride.kind() == "prim::ListConstruct" else 0
                    transposed = node.inputsAt(6).toIValue() is True
                    kind = "aten::conv" + ("_transpose" if transposed else "") + (f"{dims}d" if dims else "")
                except Exception:  # noqa: BLE001 - an unexpected form: the plain name
                    kind = "aten::conv"
            count(_eval_op_name(kind))
            stack.extend(node.blocks())
    return counts, complete


def _eval_facts(model: Any, fmt: str) -> dict:
    """The contract's `facts` of one loaded model: digest, shapes, ops (see the module docstring)."""
    import hashlib

    import torch

    try:
        digest = hashlib.sha256()
        for name, t in model.named_parameters():
            t = t.detach().to("cpu", torch.float32).contiguous()
            digest.update(name.encode("utf-8", "replace") + b"\0" + repr(list(t.shape)).encode() + b"\0")
            digest.update(t.numpy())  # its buffer, not a copy
        shapes = {name: [int(d) for d in p.shape] for name, p in list(model.named_parameters())[:256]}
        ops, complete = _eval_ops(model, fmt)
        return {"digest": digest.hexdigest(), "shapes": shapes, "ops": ops, "ops_complete": complete}
    except Exception as exc:  # noqa: BLE001 - reported as data: the predictions stand
        return {"error": (type(exc).__name__ + ": " + str(exc))[:300]}


def _eval_device() -> Any:
    """CUDA when the sandbox shows a GPU (the run's own, with its memory share: grader.gpu sets
    DLLAB_GPU_MEMORY_FRACTION where the allocator holds it), else the CPU."""
    import os

    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    fraction = os.environ.get("DLLAB_GPU_MEMORY_FRACTION")
    if fraction:
        torch.cuda.set_per_process_memory_fraction(float(fraction), 0)
    return torch.device("cuda")


def _eval_predict(job: dict, folder: str, cache_bytes: int = 512 * 2**20) -> dict:
    """Load the model (the format the host found), predict every input image; the result dict.
    Then the same for each run model of `job["runs"]` (`{"file", "format"}`), on the same
    images: `runs` holds `{"predictions": [...], "facts": {...}}` or `{"error": "..."}` per run,
    in order; `facts` of the model of "model.pt" too (`_eval_facts`) when `job["facts"]`.
    Models run on the run's GPU when it had one (`_eval_device`); one that fails there (loading
    or predicting: a trace holding the CPU as a constant) is loaded and run again on the CPU, as
    on a grader without a GPU.

    The images are transformed in batches of 100 (PIL and torchvision: most of a small model's
    time); when the job has run models, each batch is transformed once and kept for the next
    model while the kept batches hold at most `cache_bytes` (BATCH_CACHE_BYTES), past which
    every model transforms its own again. Each model gets its own copy of a kept batch, since
    a model may change its input in place."""
    import os

    import numpy as np
    import torch

    transform = _eval_build_transform(job["steps"])
    pixels = np.load(os.path.join(folder, "images.npy"), allow_pickle=False) if job["storage"] == "npy" else None
    device = _eval_device()

    def load(name: str, fmt: str, dev: Any) -> Any:
        path = os.path.join(folder, name)
        if fmt == "export":
            return torch.export.load(path).module().to(dev)
        loaded = torch.jit.load(path, map_location=dev)
        loaded.eval()
        return loaded

    def run(name: str, fmt: str) -> tuple:
        """(the model, its predictions), on the GPU when there is one, else (or failing there) the CPU."""
        if device.type != "cpu":
            try:
                model = load(name, fmt, device)
                return model, predict(model, device)
            except Exception:  # noqa: BLE001 - tried again on the CPU, whose error stands
                torch.cuda.empty_cache()
        model = load(name, fmt, torch.device("cpu"))
        return model, predict(model, torch.device("cpu"))

    kept: list | None = [] if job.get("runs") else None  # transformed batches, in order, while they fit
    kept_bytes = 0

    def batches() -> Any:
        """Each batch of 100 inputs as the model takes them, a fresh tensor per model."""
        nonlocal kept, kept_bytes
        for k, start in enumerate(range(0, job["count"], 100)):
            if kept is not None and k < len(kept):
                yield kept[k].clone()
                continue
            stop = min(start + 100, job["count"])
            xb = _eval_tensor_batch(job, pixels, start, stop, transform)
            if xb is None:
                xb = torch.stack([transform(_eval_image(job, folder, pixels, i)) for i in range(start, stop)])
            if job["flatten_input"]:
                xb = xb.flatten(1)
            if kept is not None:
                kept_bytes += xb.element_size() * xb.nelement()
                if kept_bytes <= cache_bytes:
                    kept.append(xb)
                    xb = xb.clone()
                else:
                    kept = None  # over the budget: each model transforms its own, as without runs
            yield xb

    def predict(model: Any, dev: Any) -> list:
        chunk = None  # a model captured for one batch size gets that many, padded

        def scores(xb: Any) -> Any:
            out = model(xb.to(dev))
            for _ in range(3):
                if isinstance(out, (list, tuple)):
                    out = out[0]
                elif isinstance(out, dict):
                    out = out.get("logits", next(iter(out.values())))
            return out

        preds = []
        with torch.no_grad():
            for xb in batches():
                if chunk is None:
                    try:
                        pred = scores(xb).argmax(dim=1)
                    except Exception:  # noqa: BLE001 - a model captured for one batch size
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
                preds.extend(int(p) for p in pred.cpu().tolist())
        return preds

    model, predictions = run("model.pt", job["format"])
    result = {"ok": True, "predictions": predictions, "parameters": _eval_parameters(model)}
    if job.get("facts"):
        result["facts"] = _eval_facts(model, job["format"])
    runs = []
    for each in job.get("runs") or []:
        try:
            loaded, predictions = run(each["file"], each["format"])
            runs.append({"predictions": predictions, "facts": _eval_facts(loaded, each["format"])})
        except Exception as exc:  # noqa: BLE001 - reported per run
            runs.append({"error": (type(exc).__name__ + ": " + str(exc))[:300]})
    if runs:
        result["runs"] = runs
    return result


def _eval_main(job_path: str) -> None:
    """Run `_eval_predict`; print its result as one JSON line on the original stdout."""
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
        result = _eval_predict(job, os.path.dirname(job_path))
        text = json.dumps(result, allow_nan=False)
    except BaseException as exc:  # noqa: BLE001 - reported to the host as data
        tb = traceback.format_exc().strip().splitlines()
        text = json.dumps({"ok": False, "error": (type(exc).__name__ + ": " + str(exc))[:300], "where": tb[-3:]})
    out.write(text + "\n")
    out.flush()


def evaluator_source() -> str:
    """The evaluator script: the functions above and a main."""
    parts = [inspect.getsource(f) for f in (_eval_build_transform, _eval_image, _eval_tensor_batch, _eval_parameters,
                                            _eval_op_name, _eval_ops, _eval_facts, _eval_device, _eval_predict, _eval_main)]
    return "from typing import Any\n\n" + "\n\n".join(parts) + "\n\nimport sys\n_eval_main(sys.argv[1])\n"
