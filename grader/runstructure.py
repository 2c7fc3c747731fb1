"""A run model's structure as it executed, and the one-line label of a run (grader.runrecords).

From the host when the evaluator captured the run's model (`verified_runs[].shapes`: parameter
name -> dims in state_dict order; `ops`: op name -> count in the captured graph), else from the
probe's model record (`dims`: [leaf name, type, in, out] in registration order; `layers`;
`parameters`). The host's is what ran; the probe's is what the student's process reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

ACTIVATIONS = ("relu", "leaky_relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "mish", "sigmoid", "tanh",
               "hardtanh", "softplus", "prelu", "hardswish", "hardsigmoid", "logsigmoid", "softsign")
"""Hidden-layer activations, by op name (a module's class lowered: ReLU -> relu)."""
_MODULE_ACT = {a.replace("_", ""): a for a in ACTIVATIONS}
_BUFFERS = re.compile(r"(^|\.)(running_mean|running_var|num_batches_tracked)$")
_NOT_LINEAR = re.compile(r"(?i)embed|weight_[ih]h|lstm|gru|rnn|norm|bn\d*\.|attn|in_proj")


def op_name(raw: str) -> str:
    """`aten::relu_` / `torch.ops.aten.relu.default` / `F.relu` -> `relu`."""
    name = str(raw).rsplit("::", 1)[-1]
    name = re.sub(r"\.(default|Tensor|Scalar|int|input)$", "", name)
    name = name.rsplit(".", 1)[-1].lower()
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def _kind(linear: int, conv: int) -> str:
    if conv:
        return "cnn"
    if linear == 1:
        return "linear"
    return "mlp" if linear >= 2 else "other"


def from_host(shapes: Mapping[str, Any], ops: Mapping[str, Any] | None) -> dict[str, Any]:
    """Structure of a captured model from its parameter shapes and graph ops."""
    linear_dims: list[tuple[int, int]] = []
    conv_out: list[int] = []
    conv_in: int | None = None
    params = 0
    for name, dims in shapes.items():
        if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims) or _BUFFERS.search(name):
            continue
        params += math.prod(dims) if dims else 1
        if not name.endswith("weight"):
            continue
        if len(dims) == 2 and not _NOT_LINEAR.search(name):
            linear_dims.append((dims[1], dims[0]))
        elif len(dims) in (3, 4, 5):
            conv_in = dims[1] if conv_in is None else conv_in
            conv_out.append(dims[0])
    counts = {op_name(k): int(v) for k, v in (ops or {}).items() if isinstance(v, (int, float))}
    acts: dict[str, int] = {}
    for k, v in counts.items():
        if k in ACTIVATIONS and v > 0:
            acts[k] = acts.get(k, 0) + v
    out: dict[str, Any] = {
        "kind": _kind(len(linear_dims), len(conv_out)), "linear_layers": len(linear_dims),
        "hidden_widths": [o for _, o in linear_dims[:-1]], "conv_layers": len(conv_out),
        "conv_channels": conv_out, "activations": acts if ops else None, "params": params, "source": "host",
        "dims": _dims_text(linear_dims, conv_in, conv_out)}
    return out


def from_probe(model: Mapping[str, Any]) -> dict[str, Any]:
    """Structure of a model from the probe's record of it (`dims`, else `layers`). Activations
    from modules only (a functional `F.relu` in forward() is invisible to it): None when none."""
    dims = [d for d in model.get("dims") or [] if isinstance(d, list) and len(d) == 4]
    layers = [d for d in model.get("layers") or [] if isinstance(d, list) and len(d) >= 2]
    types = [str(d[1]) for d in dims] if dims else [str(layer[1]) for layer in layers]
    linear_dims = [(d[2], d[3]) for d in dims if d[1] == "Linear" and isinstance(d[2], int) and isinstance(d[3], int)]
    convs = [d for d in dims if re.fullmatch(r"Conv[123]d", str(d[1]))]
    n_linear = sum(t == "Linear" for t in types)
    n_conv = sum(bool(re.fullmatch(r"Conv[123]d", t)) for t in types)
    acts: dict[str, int] = {}
    for t in types:
        a = _MODULE_ACT.get(t.lower())
        if a:
            acts[a] = acts.get(a, 0) + 1
    complete = len(linear_dims) == n_linear
    params = model.get("parameters", model.get("params"))
    return {
        "kind": _kind(n_linear, n_conv) if types else None, "linear_layers": n_linear if types else None,
        "hidden_widths": [o for _, o in linear_dims[:-1]] if dims and complete else None,
        "conv_layers": n_conv if types else None,
        "conv_channels": [d[3] for d in convs] if dims and all(isinstance(d[3], int) for d in convs) else None,
        "activations": acts or None, "params": params if isinstance(params, int) else None, "source": "probe",
        "dims": _dims_text(linear_dims, convs[0][2] if convs and isinstance(convs[0][2], int) else None,
                           [d[3] for d in convs if isinstance(d[3], int)]) if dims and complete else None}


def _dims_text(linear: list[tuple[int, int]], conv_in: int | None, conv_out: list[int]) -> str | None:
    """`784-100-100-10`, or `conv 3-6-16 · fc 400-120-84-10` for a CNN."""
    fc = "-".join(str(x) for x in [linear[0][0], *(o for _, o in linear)]) if linear else ""
    if conv_out:
        conv = "-".join(str(x) for x in ([conv_in] if conv_in is not None else []) + conv_out)
        return f"conv {conv}" + (f" · fc {fc}" if fc else "")
    return fc or None


def label(structure: Mapping[str, Any], optimizer: str | None, lr: float | None, epochs: float | None,
          model_class: str | None = None) -> str:
    """`MLP 784-100-100-10 · SGD lr 0.002 · 5 epochs`; unknown parts are left out."""
    kind = structure.get("kind")
    name = {"mlp": "MLP", "linear": "Linear", "cnn": "CNN"}.get(str(kind), model_class or "model")
    head = f"{name} {structure['dims']}" if structure.get("dims") else name
    opt = " ".join(x for x in (optimizer or "", f"lr {lr:g}" if isinstance(lr, (int, float)) else "") if x)
    ep = None
    if isinstance(epochs, (int, float)):
        ep = f"{epochs:g} epoch" + ("" if epochs == 1 else "s")
    return " · ".join(x for x in (head, opt, ep) if x)
