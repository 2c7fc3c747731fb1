"""The measuring sandbox's job runner: grader.verify.gen_eval's functions on the captured models.

`source()` is the script the host (grader.verify.generative) writes into a fresh sandbox: the
measuring functions of grader.verify.gen_eval, grader.verify.evaluator's operator count and
digest (`_eval_facts`), and the functions below (standard library, numpy and torch only).

Contract (`_gen_main(job.json)`): the folder holds `job.json` ({"captures": [validated gen.json
records with "files" and "format" ("torchscript" | "export", as the host found them)],
"instrument": "instrument.pt", "samples": int, "seed": int}), `instrument.pt`, `images.npy`
(uint8 (N, 28, 28), the real test split without labels; only when a VAE is measured) and the
capture files the job names. One JSON line on the original stdout (whatever the models print
goes to /dev/null):
    {"ok": true, "captures": [{"id": "g0", "samples": {...measure_generator's dict...} | {"error": str},
                               "samples_train": {...} | {"error": str} (a generator with BatchNorm
                                   whose training mode draws other images: its samples drawn in
                                   training mode, on the statistics of each batch of 500),
                               "vae": {...measure_vae's dict...} | {"error": str} (VAE only),
                               "facts": {"digest", "ops", "ops_complete", "params", "layers"} | {"error": str}}
                              | {"id": "g0", "error": str} (its files did not load)]}
or {"ok": false, "error": str}. `layers`: [[kind, [kernel dims], [stride dims]], ...] of the
convolution ("conv") and transposed convolution ("conv_transpose") operators in graph order, at
most MAX_LAYERS; a stride that is not a graph constant is [0].
"""

from __future__ import annotations

import inspect
from typing import Any

from grader.verify import gen_eval
from grader.verify.evaluator import _eval_facts, _eval_op_name, _eval_ops
from grader.verify.gen_eval import (
    _gen_apply_map,
    _gen_as_images,
    _gen_classifier_score,
    _gen_classify,
    _gen_first_tensor,
    _gen_load,
    _gen_output_map,
    _gen_pairwise,
    measure_generator,
    measure_vae,
)

MAX_LAYERS = 64
"""Conv layers listed at most in the facts."""

def _gen_conv_layers(model: Any, fmt: str, max_layers: int = 64) -> list:
    """[[kind, kernel, stride], ...] of the model's convolutions in graph order: kind "conv" or
    "conv_transpose", kernel the weight's spatial dims, stride read from the graph's constants."""
    layers: list = []
    if fmt == "export":
        for node in model.graph.nodes:
            name = str(node.target) if node.op == "call_function" else ""
            if "conv" not in name or len(layers) >= max_layers:
                continue
            args = list(node.args)
            weight = args[1].meta.get("val") if len(args) > 1 and hasattr(args[1], "meta") else None
            if weight is None:
                continue
            transposed = "transpose" in name or (".convolution" in name and len(args) > 6 and args[6] is True)
            stride = args[3] if len(args) > 3 else [1] * (len(weight.shape) - 2)  # the default left out
            stride = [stride] * (len(weight.shape) - 2) if isinstance(stride, int) else stride
            layers.append(["conv_transpose" if transposed else "conv", [int(d) for d in weight.shape[2:]],
                           [int(s) for s in stride]])
        return layers
    modules = dict(model.named_modules())
    convs = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::conv_transpose1d", "aten::conv_transpose2d",
             "aten::conv_transpose3d", "aten::_convolution", "aten::convolution"}
    graph = model.inlined_graph
    stack = [graph.block()]
    order = []
    while stack:
        for node in stack.pop().nodes():
            if node.kind() in convs:
                order.append(node)
            stack.extend(node.blocks())
    for node in order[:max_layers]:
        kind = node.kind()
        transposed = "transpose" in kind
        if kind in ("aten::_convolution", "aten::convolution"):
            transposed = node.inputsAt(6).toIValue() is True
        path = []
        value = node.inputsAt(1)
        while value.node().kind() == "prim::GetAttr":
            path.append(value.node().s("name"))
            value = value.node().inputsAt(0)
        owner = modules.get(".".join(reversed(path[1:])))
        weight = getattr(owner, path[0], None) if owner is not None and path else None
        if weight is None:
            continue
        value = node.inputsAt(3)
        stride = value.toIValue()
        if stride is None and value.node().kind() in ("prim::ListConstruct", "prim::TupleConstruct"):
            stride = [v.toIValue() for v in value.node().inputs()]
        if not (isinstance(stride, (list, tuple)) and stride and all(isinstance(s, int) for s in stride)):
            stride = [0]  # not a constant: unknown
        stride = [int(s) for s in stride]
        layers.append(["conv_transpose" if transposed else "conv", [int(d) for d in weight.shape[2:]], stride])
    return layers


def _gen_train_differs(net: Any, generate: Any, cap: dict) -> bool:
    """Whether the model draws other images in training mode (BatchNorm on batch statistics)
    than in eval mode: False for a traced or exported graph, whose mode was fixed when captured."""
    import torch

    try:
        with torch.no_grad():
            z = torch.randn((64, *[int(d) for d in cap["latent_shape"]]), generator=torch.Generator().manual_seed(1))
            y = None
            if cap.get("label_input") == "index":
                y = torch.arange(64) % (cap.get("n_classes") or 10)
            elif cap.get("label_input") == "onehot":
                y = torch.nn.functional.one_hot(torch.arange(64) % (cap.get("n_classes") or 10),
                                                cap.get("n_classes") or 10).to(torch.float32)
            a = _gen_first_tensor(generate(z, y))
            net.train()
            b = _gen_first_tensor(generate(z, y))
        return not torch.equal(a, b)
    except Exception:  # noqa: BLE001 - then eval mode alone
        return False
    finally:
        net.eval()


def _gen_facts(model: Any, fmt: str) -> dict:
    """digest, ops, ops_complete (grader.verify.evaluator's `_eval_facts`), params, layers."""
    facts = _eval_facts(model, fmt)
    if "error" in facts:
        return facts
    facts.pop("shapes", None)
    try:
        facts["params"] = int(sum(p.numel() for p in model.parameters()))
        facts["layers"] = _gen_conv_layers(model, fmt)
    except Exception as exc:  # noqa: BLE001 - reported as data
        return {"error": (type(exc).__name__ + ": " + str(exc))[:300]}
    return facts


def _gen_run(job: dict, folder: str) -> dict:
    """Measure every capture of the job; one entry per capture, errors as data."""
    import os

    import numpy as np
    import torch

    def load(name: str, fmt: str) -> Any:
        path = os.path.join(folder, name)
        if fmt == "export":
            return torch.export.load(path).module()
        loaded = torch.jit.load(path, map_location="cpu")
        loaded.eval()
        return loaded

    def error(exc: BaseException) -> dict:
        return {"error": (type(exc).__name__ + ": " + str(exc))[:300]}

    instrument = load(job["instrument"], "torchscript")
    images = None
    out = []
    for cap in job["captures"]:
        entry: dict = {"id": cap["id"]}
        try:
            models = {k: load(v, cap["format"][k]) for k, v in cap["files"].items()}
        except Exception as exc:  # noqa: BLE001 - this capture alone
            entry["error"] = error(exc)["error"]
            out.append(entry)
            continue
        entry["facts"] = _gen_facts(models["forward"], cap["format"]["forward"])
        role = cap["role"]
        if role in ("generator", "cgenerator"):
            net = models["forward"]
            pos = 1 if cap.get("label_position") is None else cap["label_position"]

            def generate(z: Any, y: Any, net: Any = net, pos: int = pos) -> Any:
                args = [z]
                if y is not None:
                    args.insert(min(pos, 1), y)
                return net(*args)

            def sample(generate: Any = generate, cap: dict = cap, role: str = role) -> dict:
                try:
                    return measure_generator(
                        generate, instrument=instrument, n=job["samples"], seed=job["seed"],
                        latent_shape=cap["latent_shape"],
                        label_input=cap.get("label_input") if role == "cgenerator" else None,
                        n_classes=cap.get("n_classes") or 10, output_range=cap.get("output_range"))
                except Exception as exc:  # noqa: BLE001
                    return error(exc)
            entry["samples"] = sample()
            if "batch_norm" in (entry["facts"].get("ops") or {}) and _gen_train_differs(net, generate, cap):
                # a notebook that drew its samples in training mode saw batch statistics
                net.train()
                try:
                    entry["samples_train"] = sample()
                finally:
                    net.eval()
        elif role == "vae":
            if images is None and os.path.exists(os.path.join(folder, "images.npy")):
                images = np.load(os.path.join(folder, "images.npy"), allow_pickle=False)
            fwd = models["forward"]
            order = cap.get("vae_outputs") or ["recon", "mu", "logvar"]

            def forward(x: Any, fwd: Any = fwd, order: list = order) -> Any:
                res = fwd(x)  # vae_outputs names its outputs by position, a dict's values too
                items = list(res.values()) if isinstance(res, dict) else list(res)
                return tuple(items[order.index(k)] for k in ("recon", "mu", "logvar"))
            enc, dec = models.get("encode"), models.get("decode")
            shape = cap.get("image_shape")
            try:
                if images is None:
                    raise ValueError("no test images were given")
                entry["vae"] = measure_vae(enc, dec, images=images, seed=job["seed"],
                                           forward=forward if enc is None or dec is None else None,
                                           input_shape=shape if enc is None or dec is None else None)
            except Exception as exc:  # noqa: BLE001
                entry["vae"] = error(exc)
            if dec is not None:
                try:
                    entry["samples"] = measure_generator(
                        lambda z, y, dec=dec: dec(z), instrument=instrument, n=job["samples"], seed=job["seed"],
                        latent_shape=cap["latent_shape"] or [cap["latent"]], output_range=cap.get("output_range"))
                except Exception as exc:  # noqa: BLE001
                    entry["samples"] = error(exc)
            else:
                entry["samples"] = {"error": "the VAE has no decode method or decoder module the grader could capture"}
        out.append(entry)
    return {"ok": True, "captures": out}


def _gen_main(job_path: str) -> None:
    """Run `_gen_run`; print its result as one JSON line on the original stdout."""
    import json
    import os
    import traceback

    out = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # whatever the models print goes nowhere
    try:
        import torch

        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        with open(job_path, encoding="utf-8") as fh:
            job = json.load(fh)
        text = json.dumps(_gen_run(job, os.path.dirname(job_path)), allow_nan=False)
    except BaseException as exc:  # noqa: BLE001 - reported to the host as data
        tb = traceback.format_exc().strip().splitlines()
        text = json.dumps({"ok": False, "error": (type(exc).__name__ + ": " + str(exc))[:300], "where": tb[-3:]})
    out.write(text + "\n")
    out.flush()


def source() -> str:
    """The sandbox's script: grader.verify.gen_eval's functions, grader.verify.evaluator's facts,
    the functions above and a main."""
    funcs = (_eval_op_name, _eval_ops, _eval_facts, _gen_first_tensor, _gen_as_images, _gen_output_map,
             _gen_apply_map, _gen_classifier_score, _gen_classify, _gen_pairwise, _gen_load, measure_generator, measure_vae,
             _gen_conv_layers, _gen_train_differs, _gen_facts, _gen_run, _gen_main)
    consts = "".join(f"{k} = {getattr(gen_eval, k)!r}\n" for k in ("Z_CHUNK", "DIVERSITY_PAIRS", "IMAGE_SIDE", "LABEL_EFFECT_SAMPLES"))
    consts += f"MAX_LAYERS = {MAX_LAYERS!r}\n"
    body = "\n\n".join(inspect.getsource(f) for f in funcs)
    return "from typing import Any\n\n" + consts + "\n" + body + "\n\nimport sys\n_gen_main(sys.argv[1])\n"
