"""Probe part: the residual and squeeze-and-excitation structure of each trained model (teardown).

Runs inside the kernel as `_dllab_probe_arch`; see recorder.py for the rules. Idle unless the
probe was installed with `architecture` (a rubric with a `residual_architecture` item). While the
notebook runs, a global forward pre-hook notes the per-sample input shape and dtype of each model
rec_torch recorded (the outermost module with parameters), once per model: one dict look-up per
module call.

`export(folder)` (teardown, recorder.export_architecture) reads, for each optimizer that stepped
(the newest MAX_MODELS), the model it trained (a CPU copy in eval mode: rec_runs._run_model):

- the blocks: the innermost modules of the notebook's own classes that hold at least two
  convolutions, one of them spatial (kernel > 1): a ResNet's BasicBlock or Bottleneck, not its
  SE module (1x1 convolutions or Linear only) nor its stages;
- each block's graph, from `torch.fx.symbolic_trace` of the block (`graph: fx`), else
  `torch.export` of it on an input of its recorded shape (`graph: export`, ATen ops), else only
  the order of its layers' calls (`graph: hooks`); `read_graph` finds in it
  - residual additions (add / iadd / torch.add of two tensors that fork from one node, the
    block's input): the shortcut is the side with fewer weighted layers, `identity` when it has
    none, `projection` {kernel, stride, bn} when it holds a convolution;
  - squeeze-and-excitation gates: a multiply of the features by a tensor computed from their
    global average (AdaptiveAvgPool2d(1), mean over H and W) through Linear or 1x1 convolutions:
    `gate` {pool, fc, activation, sigmoid, last_fc, position: branch|after-add|shortcut|no-add};
  - the parameters a functional test zeroes (`zero`: the last BatchNorm, else convolution, of
    the residual branch, or of the whole block without one) and forces (`force`: the gate's last
    FC weight and bias);
- its in_shape and out_shape (per sample) from one forward pass on random inputs of the model's
  recorded input shape, and the order the blocks ran in;
- depth (convolutions and Linear layers that ran, less projection shortcuts and gates) and the
  trainable parameter count.

Each block (at most MAX_BLOCKS per model, MAX_BYTES together) is captured for the host's
functional test (grader.verify.arch): `a<m>b<k>.pt` (the block), `-short.pt` (its projection
shortcut as a chain of its modules) and `-plain.pt` (the block with its gate's multiply removed,
by fx surgery), as TorchScript (script, else trace) or a torch.export program, each checked
against the block on another batch. `arch.json` lists them; everything here is a hint.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import warnings

HOOK_MODULES = ("torch.nn.modules.module",)
MAX_MODELS = 6
MAX_BLOCKS = 16
MAX_SECONDS = 60
MAX_BYTES = 16 * 2**20
MAX_SHAPES = 200
BATCH = 4
_SHORTCUT_WORDS = ("shortcut", "downsample", "skip", "proj", "identity", "residual")

_core = None
_on = False
_T = None
_shapes = {}  # model ref -> (per-sample input shape, dtype name)


def setup(core):
    global _core, _T
    _core = core
    _T = sys.modules[core.PROBE_NAME + "_torch"]


def configure(caps):
    global _on
    _on = bool(caps.get("architecture"))


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
    register = getattr(mm, "register_module_forward_pre_hook", None)
    if register is not None and not _T._hook_registered(getattr(mm, "_global_forward_pre_hooks", None), _pre):
        register(_pre)


def _pre(module, args):
    entry = _T._mods.get(id(module))
    if entry is None or entry[1] is None or entry[1].ref in _shapes or len(_shapes) >= MAX_SHAPES:
        return None
    x = args[0] if args else None
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) >= 2 and getattr(x, "is_floating_point", lambda: False)():
        _shapes[entry[1].ref] = (tuple(int(n) for n in shape[1:]), str(x.dtype).replace("torch.", ""))
    return None


# ---------------------------------------------------------------- reading a graph (pure: tests call these)


def _kind_of_module(m):
    """(op, facts) of a leaf module."""
    name = type(m).__name__
    if name in ("Conv2d", "Conv1d", "Conv3d", "LazyConv2d"):
        k, s = tuple(m.kernel_size), tuple(m.stride)
        return "conv", {"kernel": k[0] if len(set(k)) == 1 else list(k), "stride": s[0] if len(set(s)) == 1 else list(s),
                        "in": m.in_channels, "out": m.out_channels, "bias": m.bias is not None}
    if name in ("Linear", "LazyLinear"):
        return "linear", {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
    if name.startswith("BatchNorm") or name in ("GroupNorm", "LayerNorm", "InstanceNorm2d"):
        return "bn", {"bias": getattr(m, "bias", None) is not None}
    if name in ("Sigmoid", "Hardsigmoid"):
        return "sigmoid", {"fn": name}
    if name in ("ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Mish", "PReLU", "Tanh", "Hardswish", "Softmax"):
        return "act", {"fn": name}
    if name in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
        size = m.output_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        return ("gpool" if all(v == 1 for v in size) else "pool"), {"fn": name}
    if name in ("Flatten", "Unflatten", "Identity", "Dropout", "Dropout2d"):
        return "view", {"fn": name}
    return "other", {"fn": name}


_FUNCS = {"add": "add", "iadd": "add", "add_": "add", "mul": "mul", "imul": "mul", "mul_": "mul",
          "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "hardsigmoid": "sigmoid",
          "relu": "act", "relu_": "act", "relu6": "act", "leaky_relu": "act", "silu": "act", "gelu": "act",
          "tanh": "act", "softmax": "act", "view": "view", "reshape": "view", "flatten": "view",
          "unsqueeze": "view", "squeeze": "view", "expand_as": "view", "expand": "view", "contiguous": "view",
          "size": "meta", "dim": "meta", "getattr": "meta", "_assert": "meta", "sym_size": "meta",
          "conv2d": "conv", "convolution": "conv", "linear": "linear", "addmm": "linear", "batch_norm": "bn",
          "_native_batch_norm_legit_no_training": "bn", "dropout": "view", "clone": "view", "t": "meta",
          "permute": "view", "transpose": "view"}


def _op_name(node):
    t = node.target
    if node.op == "call_method":
        return str(t)
    name = getattr(t, "__name__", None) or str(t)
    # aten.add.Tensor -> "add"; aten.mean.dim -> "mean"
    overload = getattr(t, "_overloadpacket", None)
    if overload is not None:
        name = getattr(overload, "__name__", name)
    return name.split(".")[-1]


def _global_mean(node, name):
    if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_avg_pool2d"):
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        return all(v == 1 for v in size)
    if name == "mean":
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        return len(dims) >= 2 and set(dims) <= {2, 3, -1, -2}
    return False


class Graph:
    """One block's graph, classified: `ops[i]` = (op, facts, module name or None) per node."""

    def __init__(self, graph, modules=None, params=None):
        self.nodes = [n for n in graph.nodes]
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.modules = modules or {}
        self.params = params or {}  # export: placeholder name -> parameter FQN
        self.ops = []
        for n in self.nodes:
            self.ops.append(self._classify(n))
        self._anc = {}

    def _classify(self, n):
        if n.op == "placeholder":
            return ("param", {}, None) if n.name in self.params else ("input", {}, None)
        if n.op == "get_attr":
            return "param", {}, None
        if n.op == "output":
            return "output", {}, None
        if n.op == "call_module":
            m = self.modules.get(n.target)
            op, facts = _kind_of_module(m) if m is not None else ("other", {})
            return op, facts, str(n.target)
        name = _op_name(n)
        if name == "getitem":  # x[:, :, None, None] is a view; x.shape[1] and x.size()[0] are not
            src = n.args[0] if n.args and hasattr(n.args[0], "op") else None
            kind = self.ops[self.index[src]][0] if src is not None and self.index[src] < len(self.ops) else "meta"
            return ("meta" if kind in ("meta", "param", "input") and src.op != "placeholder" or src is None
                    else "view"), {}, None
        if _global_mean(n, name):
            return "gpool", {"fn": name}, None
        op = _FUNCS.get(name, "other")
        owner = self._owner(n)
        if op in ("conv", "linear", "bn"):
            facts = {}
            weight = n.args[1] if len(n.args) > 1 and op != "linear" else None
            if op == "linear":  # aten.linear(x, w, b) / addmm(b, x, w.t())
                weight = n.args[1] if name == "linear" else None
            shape = self._shape(weight)
            if op == "conv" and shape is not None and len(shape) == 4:
                stride = n.args[3] if len(n.args) > 3 else n.kwargs.get("stride", 1)
                stride = list(stride) if isinstance(stride, (tuple, list)) else [stride]
                facts = {"kernel": shape[2] if shape[2] == shape[3] else [shape[2], shape[3]],
                         "stride": stride[0] if len(set(stride)) == 1 else stride, "in": shape[1], "out": shape[0],
                         "bias": len(n.args) > 2 and n.args[2] is not None}
            return op, facts, owner
        if op == "act" and name in ("tanh", "softmax"):
            return op, {"fn": name}, None
        if op == "sigmoid":
            return op, {"fn": name}, None
        return op, {"fn": name} if op == "act" else {}, None

    def _owner(self, n):
        """A module name for an export node: the param placeholder's FQN less `.weight`."""
        for a in n.args[1:3]:
            if hasattr(a, "op") and a.name in self.params:
                return self.params[a.name].rsplit(".", 1)[0]
        stack = n.meta.get("nn_module_stack") if hasattr(n, "meta") else None
        if stack:
            path = list(stack.values())[-1]
            path = path[0] if isinstance(path, tuple) else path
            return str(path).replace("L['self'].", "").replace("L__self___", "") or None
        return None

    @staticmethod
    def _shape(node):
        val = getattr(node, "meta", {}).get("val") if node is not None and hasattr(node, "meta") else None
        return tuple(int(s) for s in val.shape) if val is not None and hasattr(val, "shape") else None

    def tensor_args(self, n):
        return [a for a in list(n.args)[:2] if hasattr(a, "op") and self.ops[self.index[a]][0] not in ("param", "meta")]

    def anc(self, n):
        """n and every node it is computed from (tensors only)."""
        got = self._anc.get(n)
        if got is not None:
            return got
        out, todo = {n}, [n]
        while todo:
            cur = todo.pop()
            for a in _flat_args(cur.args) + _flat_args(list(cur.kwargs.values())):
                if a not in out and self.ops[self.index[a]][0] != "param":
                    out.add(a)
                    todo.append(a)
        self._anc[n] = out
        return out


def _flat_args(args):
    out = []
    for a in args:
        if hasattr(a, "op") and hasattr(a, "target"):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += _flat_args(a)
    return out


def _weighted(g, nodes):
    return [n for n in sorted(nodes, key=g.index.get) if g.ops[g.index[n]][0] in ("conv", "linear")]


def _describe(g, n):
    op, facts, mod = g.ops[g.index[n]]
    return {"op": op, "module": mod, **{k: v for k, v in facts.items() if k != "fn"}}


def _gates(g):
    """Squeeze-and-excitation gates: a multiply of features f by a tensor from f's global mean."""
    out = []
    for n in g.nodes:
        if g.ops[g.index[n]][0] != "mul":
            continue
        args = g.tensor_args(n)
        if len(args) != 2:
            continue
        for gate, feats in ((args[0], args[1]), (args[1], args[0])):
            fa = g.anc(feats)
            pools = [p for p in g.anc(gate) if g.ops[g.index[p]][0] == "gpool" and p not in fa
                     and any(a in fa for a in _flat_args(p.args[:1]))]
            if not pools:
                continue
            pool = max(pools, key=g.index.get)
            chain = sorted([c for c in g.anc(gate) if c not in fa and g.index[c] >= g.index[pool]], key=g.index.get)
            fcs = [c for c in chain if g.ops[g.index[c]][0] in ("conv", "linear")]
            last = fcs[-1] if fcs else None
            after = [c for c in chain if last is not None and g.index[c] > g.index[last]]
            between = [c for c in chain if fcs and g.index[fcs[0]] < g.index[c] < g.index[last]]
            acts = [g.ops[g.index[c]][1].get("fn") for c in between if g.ops[g.index[c]][0] == "act"]
            sig = [c for c in after if g.ops[g.index[c]][0] == "sigmoid"]
            tail = [g.ops[g.index[c]][1].get("fn") or g.ops[g.index[c]][0] for c in after
                    if g.ops[g.index[c]][0] not in ("view", "meta")]
            fc_mods = [g.ops[g.index[c]][2] for c in fcs]
            last_facts = g.ops[g.index[last]][1] if last is not None else {}
            out.append({"node": n, "feats": feats, "chain": set(chain),
                        "gate": {"pool": g.ops[g.index[pool]][1].get("fn") or "mean",
                                 "fc": [_describe(g, c) for c in fcs][:4], "activation": acts[0] if acts else None,
                                 "sigmoid": bool(sig) and all(t in ("sigmoid", "Sigmoid", "hardsigmoid", "Hardsigmoid")
                                                              for t in tail),
                                 "after_fc": tail[:4], "last_fc": fc_mods[-1] if fc_mods else None,
                                 "hidden": g.ops[g.index[fcs[0]]][1].get("out") if fcs else None,
                                 "force": ({"weight": f"{fc_mods[-1]}.weight", "bias": f"{fc_mods[-1]}.bias"}
                                           if fc_mods and fc_mods[-1] and last_facts.get("bias") else None)}})
            break
    return out


def _adds(g, gate_nodes):
    """Residual additions: two tensors that fork from one node, the branch holding a weighted layer."""
    out = []
    for n in g.nodes:
        if g.ops[g.index[n]][0] != "add":
            continue
        args = g.tensor_args(n)
        if len(args) != 2:
            continue
        a, b = args
        common = g.anc(a) & g.anc(b)
        if not common:
            continue
        fork = max(common, key=g.index.get)
        sides = []
        for side in (a, b):
            path = {x for x in g.anc(side) if g.index[x] > g.index[fork]}
            sides.append((len(_weighted(g, path - gate_nodes)), len(path), side, path))
        sides.sort(key=lambda s: (s[0], s[1]))
        (_, _, short, spath), (nb, _, branch, bpath) = sides
        if nb == 0:
            continue
        convs = [c for c in _weighted(g, spath) if g.ops[g.index[c]][0] == "conv"]
        proj = None
        if convs:
            facts = g.ops[g.index[convs[0]]][1]
            proj = {"kernel": facts.get("kernel"), "stride": facts.get("stride"),
                    "bn": any(g.ops[g.index[x]][0] == "bn" for x in spath)}
        chain_ok = all(g.ops[g.index[x]][0] in ("conv", "bn", "view", "meta") and
                       (g.ops[g.index[x]][0] in ("view", "meta") or g.ops[g.index[x]][2]) for x in spath)
        short_mods = [g.ops[g.index[x]][2] for x in sorted(spath, key=g.index.get)
                      if g.ops[g.index[x]][0] in ("conv", "bn")]
        out.append({"node": n, "fork": fork, "branch": bpath, "short": spath,
                    "fork_is_input": g.ops[g.index[fork]][0] == "input",
                    "shortcut": "projection" if convs else "identity", "projection": proj,
                    "short_modules": short_mods if convs and chain_ok else None,
                    "branch_layers": nb})
    return out


def _zero_target(g, nodes, gate_nodes):
    """Parameter names that silence the path through `nodes`: the last BatchNorm after the last
    weighted layer, else that layer (its weight and bias)."""
    ordered = [n for n in sorted(nodes - gate_nodes, key=g.index.get) if g.ops[g.index[n]][0] in ("conv", "linear", "bn")]
    if not ordered:
        return None
    last = ordered[-1]
    op, facts, mod = g.ops[g.index[last]]
    if not mod:
        return None
    return [f"{mod}.weight"] + ([f"{mod}.bias"] if facts.get("bias", op == "bn") else [])


def read_graph(graph, modules=None, params=None):
    """What one block's graph holds (see the module docstring): a dict of plain data."""
    g = Graph(graph, modules, params)
    gates = _gates(g)
    gate_nodes = set().union(*[x["chain"] for x in gates]) if gates else set()
    adds = _adds(g, gate_nodes)
    res = next((a for a in adds if a["fork_is_input"]), adds[0] if adds else None)
    out = {"residual": res is not None, "adds": len(adds), "shortcut": res["shortcut"] if res else "none",
           "projection": res["projection"] if res else None, "fork": "input" if res and res["fork_is_input"] else (
               _describe(g, res["fork"])["op"] if res else None),
           "short_modules": res["short_modules"] if res else None,
           "layers": [_describe(g, n) for n in _weighted(g, set(g.nodes) - gate_nodes)][:12]}
    weighted_all = set(n for n in g.nodes if g.ops[g.index[n]][0] in ("conv", "linear", "bn"))
    out["zero"] = _zero_target(g, res["branch"] if res else weighted_all, gate_nodes)
    if gates:
        gt = gates[0]
        pos = "no-add"
        if res is not None:
            if gt["node"] in res["branch"]:
                pos = "branch"
            elif res["node"] in g.anc(gt["node"]):
                pos = "after-add"
            elif gt["node"] in res["short"]:
                pos = "shortcut"
        out["gate"] = {**gt["gate"], "position": pos}
        out["_gate_node"] = gt["node"]
        out["_gate_feats"] = gt["feats"]
    else:
        out["gate"] = None
    return out


# ---------------------------------------------------------------- the model's blocks


def _own(m):
    mod = type(m).__module__ or ""
    return not (mod.startswith("torch.") or mod.startswith("torchvision."))


def _convs(m, torch):
    return [c for c in m.modules() if isinstance(c, torch.nn.modules.conv._ConvNd)]


def candidate_blocks(model):
    """(name, module) of the innermost modules of the notebook's own classes (not the model
    itself) holding at least two convolutions, one of them spatial."""
    torch = sys.modules["torch"]

    def candidate(m):
        convs = _convs(m, torch)
        return _own(m) and len(convs) >= 2 and any(max(c.kernel_size) > 1 for c in convs)
    found = [(n, m) for n, m in model.named_modules() if n and candidate(m)]
    names = {n for n, _ in found}
    return [(n, m) for n, m in found if not any(o != n and o.startswith(n + ".") for o in names)]


def _trace_block(block, x, torch):
    """(graph reading, how, errors, fx GraphModule or None)."""
    errors = []
    try:
        gm = torch.fx.symbolic_trace(block)
        return read_graph(gm.graph, dict(gm.named_modules())), "fx", errors, gm
    except Exception as exc:  # noqa: BLE001 - data-dependent control flow: the next way
        errors.append("fx: " + _exc(exc))
    try:
        program = torch.export.export(block, (x,))
        sig = program.graph_signature
        params = dict(getattr(sig, "inputs_to_parameters", {}) or {})
        params.update(getattr(sig, "inputs_to_buffers", {}) or {})
        return read_graph(program.graph, {}, params), "export", errors, None
    except Exception as exc:  # noqa: BLE001
        errors.append("export: " + _exc(exc))
    return None, "hooks", errors, None


def _exc(exc):
    text = (type(exc).__name__ + ": " + str(exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _hooks_reading(block, calls, torch):
    """A block read from the order its layers ran in (no graph): which parameters to zero."""
    weighted = [(n, m) for n, m, _ in calls if isinstance(m, (torch.nn.modules.conv._ConvNd,
                                                               torch.nn.modules.batchnorm._BatchNorm))
                and not any(w in n.lower() for w in _SHORTCUT_WORDS)]
    zero = None
    if weighted:
        n, m = weighted[-1]
        zero = [f"{n}.weight"] + ([f"{n}.bias"] if getattr(m, "bias", None) is not None else [])
    return {"residual": None, "adds": None, "shortcut": None, "projection": None, "fork": None,
            "short_modules": None, "layers": [], "zero": zero, "gate": None}


def analyze(model, in_shape, dtype="float32"):
    """The architecture record of `model` (see the module docstring), without captures: (record,
    {block name: (block module, per-sample input shape, reading, fx GraphModule)})."""
    torch = sys.modules["torch"]
    rec = {"params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
           "input_shape": list(in_shape), "graph": None, "graph_errors": [], "blocks": [], "depth": None}
    blocks = candidate_blocks(model)
    names = {id(m): n for n, m in blocks}
    leaf_names = {id(m): n for n, m in model.named_modules() if not list(m.children())}
    seen, order, leaves = {}, [], []
    handles = []

    def pre(m, args):
        if id(m) in names and id(m) not in seen:
            x = args[0] if args else None
            seen[id(m)] = [tuple(x.shape[1:]) if hasattr(x, "shape") else None, None]
            order.append(id(m))

    def post(m, args, out):
        if id(m) in names and id(m) in seen and seen[id(m)][1] is None and hasattr(out, "shape"):
            seen[id(m)][1] = tuple(out.shape[1:])
        if id(m) in leaf_names:
            leaves.append((leaf_names[id(m)], m, tuple(out.shape[1:]) if hasattr(out, "shape") else None))
    for m in model.modules():
        if id(m) in names or id(m) in leaf_names:
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        x = torch.randn((BATCH,) + tuple(in_shape)).to(getattr(torch, dtype, torch.float32))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    out_blocks, kept = [], {}
    unseen = [n for n, m in blocks if id(m) not in seen]
    hows = set()
    skip_mods = set()
    for k, bid in enumerate(order[:MAX_BLOCKS]):
        name = names[bid]
        block = dict(blocks)[name]
        shape_in, shape_out = seen[bid]
        bx = torch.randn((2,) + tuple(shape_in))
        reading, how, errors, gm = _trace_block(block, bx, torch)
        if reading is None:
            calls = [(n[len(name) + 1:], m, s) for n, m, s in leaves if n.startswith(name + ".")]
            reading = _hooks_reading(block, calls, torch)
        hows.add(how)
        rec["graph_errors"] += [f"{name}: {e}" for e in errors][:4]
        shrinks = shape_in is not None and shape_out is not None and tuple(shape_in) != tuple(shape_out)
        gate = reading.get("gate")
        kind = "se" if gate else ("residual" if reading.get("residual") else ("plain" if how != "hooks" else None))
        entry = {"name": name, "class": type(block).__name__[:80], "index": k, "kind": kind,
                 "shortcut": reading.get("shortcut"), "projection": reading.get("projection"),
                 "in_shape": list(shape_in) if shape_in else None, "out_shape": list(shape_out) if shape_out else None,
                 "shrinks": shrinks, "gate": _public_gate(gate), "residual": reading.get("residual"),
                 "adds": reading.get("adds"), "fork": reading.get("fork"), "graph": how,
                 "layers": reading.get("layers"), "zero": reading.get("zero")}
        out_blocks.append(entry)
        kept[name] = (block, shape_in, reading, gm)
        for mod in reading.get("short_modules") or ():
            skip_mods.add(f"{name}.{mod}")
        if gate:
            for fc in gate.get("fc") or ():
                if fc.get("module"):
                    skip_mods.add(f"{name}.{fc['module']}")
        if reading.get("projection") and not reading.get("short_modules"):
            skip_mods.update(f"{name}.{n}" for n, _, _ in [(c[0][len(name) + 1:], 0, 0) for c in leaves
                             if c[0].startswith(name + ".")] if any(w in n.lower() for w in _SHORTCUT_WORDS))
    rec["blocks"] = out_blocks
    if len(order) > MAX_BLOCKS:
        rec["blocks_dropped"] = len(order) - MAX_BLOCKS
    if unseen:
        rec["unused_blocks"] = unseen[:8]
    rec["graph"] = "+".join(sorted(hows)) if hows else None
    weighted = {n for n, m, _ in leaves if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))}
    rec["depth"] = len(weighted - skip_mods)
    rec["adds_outside_blocks"] = None
    try:  # residual additions the model's own forward makes outside any block (a flat ResNet)
        gm = torch.fx.symbolic_trace(model)
        top = read_graph(gm.graph, dict(gm.named_modules()))
        rec["adds_outside_blocks"] = 0 if blocks else top["adds"]
        if not blocks:
            rec["model_graph"] = {k: top[k] for k in ("residual", "adds", "shortcut", "projection")}
    except Exception as exc:  # noqa: BLE001
        rec["graph_errors"].append("model: fx: " + _exc(exc))
    return rec, kept


def _public_gate(gate):
    if not gate:
        return None
    return {k: gate.get(k) for k in ("pool", "fc", "activation", "sigmoid", "after_fc", "last_fc", "hidden",
                                      "position", "force")}


# ---------------------------------------------------------------- captures for the host


def _plain_variant(gm, reading):
    """The block with its gate's multiply replaced by the features it scaled (fx surgery)."""
    dup = copy.deepcopy(gm)
    index = {n.name: n for n in dup.graph.nodes}
    mul, feats = index[reading["_gate_node"].name], index[reading["_gate_feats"].name]
    mul.replace_all_uses_with(feats)
    dup.graph.erase_node(mul)
    dup.graph.eliminate_dead_code()
    dup.recompile()
    return dup


def _save(module, shape, path, torch):
    """Capture `module` (input of per-sample `shape`) to `path`; returns the kind."""
    gen = torch.Generator().manual_seed(0)
    example = torch.randn((2,) + tuple(shape), generator=gen)
    check = torch.randn((5,) + tuple(shape), generator=gen)
    with torch.no_grad():
        want = module(check)
    errors = []
    for kind in ("script", "trace", "export"):
        try:
            if kind == "script":
                captured = torch.jit.script(module)
            elif kind == "trace":
                captured = torch.jit.trace(module, (example,), check_trace=False)
            else:
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
                captured = program.module()
            with torch.no_grad():
                got = captured(check)
            if not (hasattr(got, "shape") and got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)):
                raise ValueError("the capture computes something else than the block")
            if kind == "export":
                torch.export.save(program, path)
            else:
                torch.jit.save(captured, path)
            return kind
        except Exception as exc:  # noqa: BLE001 - the next way
            errors.append(kind + ": " + _exc(exc))
    raise ValueError("; ".join(errors)[:300])


def capture(folder, prefix, rec, kept, budget):
    """Capture each block of `rec` (and its shortcut and plain variant) into `folder`: sets each
    block's `files`, `format` or `capture_error`; returns the bytes written."""
    torch = sys.modules["torch"]
    written = 0
    for k, b in enumerate(rec["blocks"]):
        block, shape, reading, gm = kept[b["name"]]
        b["files"], b["format"] = {}, {}
        parts = [("block", lambda: block)]
        if reading.get("short_modules"):
            parts.append(("short", lambda: torch.nn.Sequential(*[block.get_submodule(n) for n in reading["short_modules"]])))
        if reading.get("gate") and gm is not None:
            parts.append(("plain", lambda: _plain_variant(gm, reading)))
        for part, make in parts:
            name = f"{prefix}b{k}" + ("" if part == "block" else "-" + part) + ".pt"
            path = os.path.join(folder, name)
            try:
                kind = _save(make().eval(), shape, path, torch)
                size = os.path.getsize(path)
                if written + size > budget:
                    os.remove(path)
                    raise ValueError(f"over the {budget >> 20} MiB the block captures may take")
                written += size
                b["files"][part], b["format"][part] = name, kind
            except Exception as exc:  # noqa: BLE001 - one block's capture must not cost the others
                b.setdefault("capture_error", {})[part] = _exc(exc)
                if part == "block":
                    break
    return written


# ---------------------------------------------------------------- the teardown


def export(folder):
    """Write `arch.json` and the block captures to `folder`; a one-line summary, or None when idle."""
    if not _on:
        return None
    X = sys.modules[_core.PROBE_NAME + "_export"]
    os.makedirs(folder, exist_ok=True)
    doc = {"version": 1, "models": []}
    try:
        with X._quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc, line = _export(folder, X)
    except Exception as exc:  # noqa: BLE001 - a bug here must not look like the student's
        line = "the architecture export code failed: " + X._exc_text(exc)
    with open(os.path.join(folder, "arch.json"), "w", encoding="utf-8") as fh:
        json.dump(clean(doc), fh, allow_nan=False)
    return line


def _export(folder, X):
    torch = sys.modules.get("torch")
    doc = {"version": 1, "models": []}
    if torch is None:
        return doc, "no model (torch never imported)"
    R = sys.modules[_core.PROBE_NAME + "_runs"]
    R._bind()
    stepped = [r for r in list(_T._aggregates) if r.kind == "optimizer" and r.steps > 0 and r.ref is not None]
    started, budget = time.monotonic(), MAX_BYTES
    said = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for m, rec in enumerate(stepped[-MAX_MODELS:]):
            entry = {"optimizer": rec.ref, "model": getattr(rec, "model", None)}
            try:
                if time.monotonic() - started > MAX_SECONDS:
                    raise X._Refusal(f"the {MAX_SECONDS} s the teardown gives the architecture had run out")
                shape = _shapes.get(getattr(rec, "model", None))
                if shape is None:
                    raise X._Refusal("the probe never saw the input its model takes")
                model = R._run_model(_T, rec)
                entry["class"] = type(model).__name__[:100]
                record, kept = analyze(model, shape[0], shape[1])
                entry.update(record)
                budget -= capture(folder, f"a{m}", entry, kept, budget)
            except X._Refusal as exc:
                entry["reason"] = str(exc)[:300]
            except Exception as exc:  # noqa: BLE001 - one model's reading must not cost the others
                entry["reason"] = "its architecture could not be read: " + X._exc_text(exc)
            doc["models"].append(entry)
            said.append(f"optimizer {rec.ref}: " + (entry.get("reason") or f"{len(entry.get('blocks') or [])} blocks"))
    return doc, ("architecture " + "; ".join(said))[:2000] if said else "no trained model"


def clean(value, depth=0):
    """`value` as JSON data (tuples as lists, non-finite floats as None)."""
    if isinstance(value, dict):
        return {str(k): clean(v, depth + 1) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple, set)):
        return [clean(v, depth + 1) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)[:200]
