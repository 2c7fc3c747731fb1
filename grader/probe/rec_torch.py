"""Probe part: models, optimizers, schedulers, evaluations; the shared object registry.

Runs inside the kernel as `_dllab_probe_torch`; see recorder.py for the rules. The data
part (rec_data.py: datasets, Normalize, DataLoaders) records into the same registry.
Objects are remembered by weak reference only (`_by_id`), so the probe never keeps a
student's model or dataset alive; the two exceptions: the tensors (not the modules) of the
models the newest optimizers train (`_keep`, at most `max_runs` runs (install's cap, the
rubric's limits.captured_runs; 6 by default) and 64 MiB), from which the
teardown rebuilds each run's model for the host to evaluate (grader.verify.runs); and the model
and dataset of the newest evaluation over each test dataset (`_keep_evaluated`, at most 4
datasets, models up to 64 MiB each), which the teardown captures (rec_export.py). Per-step facts (optimizer steps and the lr each used,
scheduler steps, forward passes per loader pass) are aggregated in memory and written
when a cell ends and at exit, not one event per step.
"""

from __future__ import annotations

import copy
import functools
import numbers
import sys
import weakref

HOOK_MODULES = ("torch", "torch.nn.modules.module", "torch.optim", "torch.optim.optimizer",
                "torch.optim.lr_scheduler")

_core = None
generation = 0  # bumped when a model or optimizer appears; invalidates cached module walks
_by_id = {}  # id(obj) -> (weakref, _Rec): datasets, loaders, Normalize, models, optimizers...
_mods = {}  # id(module) -> (weakref, _Rec or None): every module the forward hook has seen
_aggregates = []  # optimizer and scheduler _Recs, kept after their objects are gone
_initializing = set()  # ids of objects inside a wrapped __init__
_stepping = set()  # ids of schedulers inside a wrapped step
_sessions = {}  # (model ref, loader pass, mode) -> evaluation/training counts
_last = [None]  # the session of the newest forward pass: rec_loss credits loss values to it
_restored = {}  # id(module) -> (weakref, True): modules rebuilt by copy.deepcopy or unpickling
active = {"loader": None, "iter": None, "serial": 0}  # the DataLoader being iterated (rec_data)
_MAX_CHANGES = 1000
_MAX_CELLS = 50
_MAX_CHECKSUM_PARAMS = 2000
_NAMED = ("dataset", "dataloader", "model", "optimizer", "scheduler")
# Runs whose model tensors are held for the teardown's per-run capture (rec_export.py): the
# newest _MAX_KEPT optimizers, at most _MAX_KEPT_BYTES of tensors together.
_MAX_KEPT = 6  # install's `max_runs` (the rubric's limits.captured_runs) sets it: configure()
_MAX_KEPT_BYTES = 64 * 2**20
_kept = []  # optimizer _Recs holding `kept`, oldest first
# The model and dataset of the newest evaluation over each test dataset (dataset ref -> (model,
# dataset), oldest first), held strongly for the teardown's captures: see _keep_evaluated.
_MAX_EVAL_KEPT = 4
_MAX_EVAL_KEPT_BYTES = 64 * 2**20
_evals_kept = {}
step_hooks = []  # called with the optimizer's _Rec after each step (rec_genlog credits the stepped loss)
session_hooks = []  # called with (session dict, loader _Rec or None) when a pass begins (rec_reg: its augmentation)
load_hooks = []  # called with (module, model _Rec or None) at a recorded load; extra event fields (rec_reg)


class _Rec:
    """What the probe keeps about one recorded object."""

    def __init__(self, ref, kind, **extra):
        self.ref = ref
        self.kind = kind
        self.steps = 0
        self.dirty = True
        self.__dict__.update(extra)


def setup(core):
    global _core
    _core = core


def configure(caps):
    """Takes install's caps: `max_runs` runs have their model's tensors held (_keep)."""
    global _MAX_KEPT
    _MAX_KEPT = max(1, int(caps.get("max_runs", _MAX_KEPT)))


# ---------------------------------------------------------------- object registry


def remember(table, obj, rec):
    key = id(obj)

    def gone(wr, key=key, table=table):
        entry = table.get(key)
        if entry is not None and entry[0] is wr:
            del table[key]

    try:
        table[key] = (weakref.ref(obj, gone), rec)
    except TypeError:  # not weak-referenceable: recorded once, not tracked
        pass


def lookup(obj, table=None):
    entry = (_by_id if table is None else table).get(id(obj))
    return entry[1] if entry is not None and entry[0]() is obj else None


def ref_of(obj):
    rec = lookup(obj)
    return rec.ref if rec is not None else None


def new(obj, kind, fields, **extra):
    rec = _Rec(_core.emit(kind, fields), kind, **extra)
    remember(_by_id, obj, rec)
    return rec


def tracked():
    for wr, rec in list(_by_id.values()):
        obj = wr()
        if obj is not None and rec.kind in _NAMED and rec.ref is not None:
            yield obj, rec.ref


# ---------------------------------------------------------------- patches


def wrap(cls, name, make):
    orig = cls.__dict__.get(name)
    if orig is None or getattr(orig, "_dllab_wrapped", False):
        return
    wrapper = functools.update_wrapper(make(orig), orig)
    wrapper._dllab_wrapped = True
    setattr(cls, name, wrapper)


def make_init(record):
    def make(orig):
        def __init__(self, *args, **kwargs):
            key = id(self)
            outer = key not in _initializing  # record once, after the outermost __init__
            if outer:
                _initializing.add(key)
            try:
                orig(self, *args, **kwargs)
            finally:
                if outer:
                    _initializing.discard(key)
            if outer:
                _core.guarded("init", record, self)
        return __init__
    return make


def _make_sched_step(orig):
    def step(self, *args, **kwargs):
        key = id(self)
        if key in _initializing or key in _stepping:  # the step __init__ makes; super().step()
            return orig(self, *args, **kwargs)
        _stepping.add(key)
        try:
            out = orig(self, *args, **kwargs)
        finally:
            _stepping.discard(key)
        _core.guarded("scheduler-step", _count_scheduler_step, self)
        return out
    return step


def _hook_registered(hooks, fn):
    return hooks is not None and any(h is fn for h in list(hooks.values()))


def patch():
    m = sys.modules
    mm = m.get("torch.nn.modules.module")
    register = getattr(mm, "register_module_forward_pre_hook", None)
    if register is not None and not _hook_registered(
            getattr(mm, "_global_forward_pre_hooks", None), _forward_pre):
        register(_forward_pre)
    om = m.get("torch.optim.optimizer")
    if getattr(om, "Optimizer", None) is not None:
        wrap(om.Optimizer, "__init__", make_init(_record_optimizer))
        register = getattr(om, "register_optimizer_step_post_hook", None)
        if register is not None and not _hook_registered(
                getattr(om, "_global_optimizer_post_hooks", None), _optimizer_step):
            register(_optimizer_step)
    if getattr(mm, "Module", None) is not None:
        wrap(mm.Module, "load_state_dict", _make_load_state_dict)
        wrap(mm.Module, "__setstate__", _make_setstate)
    torch = m.get("torch")
    if callable(getattr(torch, "load", None)):
        wrap(torch, "load", _make_torch_load)
    sm = m.get("torch.optim.lr_scheduler")
    base = getattr(sm, "LRScheduler", None)
    if base is not None:
        for obj in list(vars(sm).values()):
            if isinstance(obj, type) and obj.__module__ == sm.__name__ and (
                    issubclass(obj, base) or obj.__name__ == "ReduceLROnPlateau"):
                wrap(obj, "__init__", make_init(_record_scheduler))
                wrap(obj, "step", _make_sched_step)


# ---------------------------------------------------------------- value helpers


def floats(x, cap=64):
    if x is None:
        return None
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, numbers.Real):
        return [float(x)]
    out = []
    stack = list(x)[:cap] if isinstance(x, (list, tuple)) else []
    while stack and len(out) < cap:
        v = stack.pop(0)
        if isinstance(v, (list, tuple)):
            stack[:0] = list(v)
        elif isinstance(v, numbers.Real):
            out.append(float(v))
    return out


def _num(x):
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, numbers.Real):
        return float(x)
    if hasattr(x, "numel") and x.numel() == 1:
        return float(x)
    return None


# ---------------------------------------------------------------- models and evaluations


def _forward_pre(module, args):
    # Runs before every module call in the kernel: keep the seen-before path minimal.
    entry = _mods.get(id(module))
    if entry is not None and entry[0]() is module:
        rec = entry[1]
        if rec is None:
            return None
    else:
        rec = _core.guarded("model", _first_forward, module)
        if rec is None:
            return None
    try:
        _note_forward(rec, module, args)
    except Exception as exc:  # noqa: BLE001
        _core.probe_error("forward", exc)
    return None


def _first_forward(module):
    if next(module.parameters(), None) is None:  # a loss, an activation, a transform
        remember(_mods, module, None)
        return None
    return _record_model(module, "forward")


def _record_model(m, via):
    global generation
    rec = lookup(m, _mods)
    if rec is not None:
        return rec
    n_params = trainable = 0
    for p in m.parameters():
        n_params += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    last_linear, layers, dims = None, [], []
    nn = sys.modules.get("torch.nn")
    for name, sub in m.named_modules():
        if sub is m:
            continue
        if type(sub).__name__ == "Linear" and isinstance(getattr(sub, "out_features", None), int):
            last_linear = sub.out_features
        if not sub._modules and len(layers) < 200:
            layers.append([name, type(sub).__name__])
            dims.append([name, type(sub).__name__, *_in_out(sub, nn)])
        if lookup(sub, _mods) is None and id(sub) not in _mods:
            remember(_mods, sub, None)  # its calls happen inside this model's forward
    try:
        text = repr(m)[:4000]
    except Exception:  # noqa: BLE001 - a student __repr__ that raises
        text = None
    if via == "forward" and lookup(m, _restored) is not None:
        via = "copy"  # copy.deepcopy(trained) or an unpickled model: its weights came from elsewhere
    rec = new(m, "model", {"class": type(m).__name__, "module": type(m).__module__,
                            "repr": text, "params": n_params, "trainable": trainable,
                            "last_linear_out": last_linear, "layers": layers, "dims": dims,
                            "via": via, "shares": _sharing(m)})
    remember(_mods, m, rec)
    generation += 1
    return rec


def _in_out(sub, nn):
    """[in, out] of a leaf: a Linear's features, a Conv2d's channels (subclasses too); else
    [None, None]. The shapes as built: a lazy layer not yet run has none (0 is not a size)."""
    for cls, names in (("Linear", ("in_features", "out_features")),
                       ("Conv2d", ("in_channels", "out_channels"))):
        kind = getattr(nn, cls, None)
        if isinstance(kind, type) and isinstance(sub, kind):
            pair = [getattr(sub, n, None) for n in names]
            if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
                return pair
    return [None, None]


def _sharing(m, cap=50):
    """Refs of models recorded earlier that hold some of `m`'s parameters: a wrapper around a
    trained net (`nn.Sequential(net, nn.Softmax(1))`) is that net, trained, not a new model."""
    mine = {id(p) for p in m.parameters()}
    found = []
    for wr, rec in list(_mods.values()):
        other = wr()
        if rec is None or other is None or other is m or rec.ref is None:
            continue
        if any(id(p) in mine for p in other.parameters()):
            found.append(rec.ref)
            if len(found) >= cap:
                break
    return found


def _note_forward(rec, module, args):
    grad = sys.modules["torch"].is_grad_enabled()
    training = module.training
    mode = "training" if grad and training else "evaluation"
    loader = active["loader"]
    key = (rec.ref, active["serial"], mode)
    session = _sessions.get(key)
    at = _core.out_chars()
    if session is None:
        if len(_sessions) >= 500:
            _flush_sessions()
        session = _sessions[key] = {
            "mode": mode, "model": rec.ref, "loader": getattr(loader, "ref", None),
            "dataset": getattr(loader, "dataset", None), "split": getattr(loader, "split", None),
            "samples": 0, "batches": 0, "grad_enabled": grad, "training": training}
        if at is not None:
            session["out_at"] = [at, at]
        if mode == "evaluation" and loader is not None:
            _keep_evaluated(module, loader)
        for hook in session_hooks:
            hook(session, loader)
    elif at is not None and "out_at" in session:
        session["out_at"][1] = at
    _last[0] = session
    session["batches"] += 1
    shape = getattr(args[0], "shape", None) if args else None
    if shape:
        session["samples"] += int(shape[0])


def _keep_evaluated(module, loader):
    """Hold (strongly) the model of the newest evaluation over each test dataset and that dataset,
    so the teardown captures them (rec_export.py, rec_runs.export_more) after the notebook
    rebound `net` and `testset` for its next part (a whole lab in one notebook). The model is
    held as it is, so it is captured in its final state when trained further after the
    evaluation (the host's sample-prediction check then tells). Bounded: the newest
    _MAX_EVAL_KEPT datasets; a model over _MAX_EVAL_KEPT_BYTES of parameters and buffers is not
    held (its evaluation is captured only while the notebook keeps it alive)."""
    try:
        loader_wr, ds_wr = getattr(loader, "objs", (None, None))
        ds = ds_wr() if ds_wr is not None else None
        key = getattr(loader, "dataset", None)
        if ds is None or key is None or _split_named(loader, loader_wr, ds) != "test":
            return
        _evals_kept.pop(key, None)
        size = sum(t.numel() * t.element_size() for t in module.state_dict().values()
                   if hasattr(t, "element_size"))
        if size > _MAX_EVAL_KEPT_BYTES:
            return
        _evals_kept[key] = (module, ds)
        while len(_evals_kept) > _MAX_EVAL_KEPT:
            del _evals_kept[next(iter(_evals_kept))]  # the oldest dataset's evaluation
    except Exception as exc:  # noqa: BLE001
        _core.probe_error("evaluation-keep", exc)


def _split_named(loader, loader_wr, ds):
    """A loader's split: recorded from its dataset, else from the names it or its dataset is
    bound to (`testloader`), in the order of rec_export._split_of."""
    if getattr(loader, "split", None):
        return loader.split
    for obj in (loader_wr() if loader_wr is not None else None, ds):
        names = [n.lower() for n in _core.names_for(obj)] if obj is not None else []
        for needle in ("test", "val", "train"):
            if any(needle in n for n in names):
                return needle
    return None


def _flush_sessions():
    """Writes every open session (a training or evaluation pass of one model): its counts, the
    loss it computed (rec_loss) and where in the cell's stdout it started and ended (`out_at`:
    characters the cell had written, recorder.out_chars)."""
    sessions = list(_sessions.values())
    _sessions.clear()
    _last[0] = None
    for s in sessions:
        acc = s.pop("_lsum", None)
        if acc is not None:
            try:
                s["loss_sum"] = float(acc)  # the one GPU sync of the session's loss values
            except Exception as exc:  # noqa: BLE001 - a tensor from a transform that no longer exists
                _core.probe_error("loss-sum", exc)
        _core.emit(s.pop("mode"), s)


# ---------------------------------------------------------------- weights loaded from a file
# A model whose weights were loaded (a checkpoint, pretrained weights) may be evaluated
# without a single optimizer step in the notebook and still be trained: the checks must
# not call it untrained, so every successful load is recorded.

_MAX_LOADS = 100
_loads = [0]


def _make_load_state_dict(orig):
    def load_state_dict(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        _core.guarded("weights-loaded", _note_load, self, "load_state_dict")
        return out
    return load_state_dict


def _make_torch_load(orig):
    def load(*args, **kwargs):
        out = orig(*args, **kwargs)
        mm = sys.modules.get("torch.nn.modules.module")
        if isinstance(out, getattr(mm, "Module", ())):  # a whole pickled model
            _core.guarded("weights-loaded", _note_load, out, "torch.load")
        return out
    return load


def _make_setstate(orig):
    # copy.deepcopy and pickle rebuild a module through __setstate__: the copy of a trained
    # model is trained though no optimizer ever stepped it. Only marked here (weakly); the
    # model record made at its first forward says `via: copy`.
    def __setstate__(self, state):
        out = orig(self, state)
        _core.guarded("restored", remember, _restored, self, True)
        return out
    return __setstate__


def _note_load(module, source):
    if _loads[0] >= _MAX_LOADS:
        return
    _loads[0] += 1
    entry = _mods.get(id(module))
    if entry is not None and entry[0]() is module:
        rec = entry[1]  # None: a submodule of a recorded model
    elif next(module.parameters(), None) is not None:
        rec = _record_model(module, source)
    else:
        rec = None
    fields = {"model": rec.ref if rec is not None else None, "source": source}
    for hook in load_hooks:
        fields.update(hook(module, rec) or {})
    _core.emit("weights-loaded", fields)


# ---------------------------------------------------------------- optimizers and schedulers


def _simple(v):
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, str):
        return v[:200]
    if hasattr(v, "numel") and v.numel() == 1:
        return float(v)
    if isinstance(v, (list, tuple)) and len(v) <= 64:
        items = [_simple(x) for x in v]
        return items if all(x is not _simple for x in items) else _simple
    if isinstance(v, dict) and all(isinstance(k, numbers.Real) for k in v):
        return sorted(float(k) for k in list(v)[:64])  # MultiStepLR's milestones (a Counter)
    if callable(v):
        return "<" + str(getattr(v, "__qualname__", type(v).__name__))[:100] + ">"
    return _simple  # marker: not recordable


def _record_optimizer(opt):
    global generation
    if lookup(opt) is not None:
        return lookup(opt)
    d = dict(getattr(opt, "defaults", {}) or {})
    groups = opt.param_groups
    defaults = {k: s for k, s in ((k, _simple(v)) for k, v in d.items()) if s is not _simple}
    rec = new(opt, "optimizer", {
        "type": type(opt).__name__, "module": type(opt).__module__,
        "lr": _num(groups[0].get("lr")) if groups else _num(d.get("lr")),
        "momentum": _num(d.get("momentum")), "weight_decay": _num(d.get("weight_decay")),
        "betas": floats(d.get("betas")), "nesterov": defaults.get("nesterov"),
        "defaults": defaults, "param_groups": len(groups),
        "n_params": sum(len(g.get("params", ())) for g in groups)},
        last_lr=None, changes=[], n_changes=0, model=None, models=[], lr_now=None, linked=False,
        cells=[], start=_checksum(groups), now=None, opt=weakref.ref(opt), lr_first=None,
        out_first=None, out_last=None)
    _aggregates.append(rec)
    generation += 1
    return rec


def _optimizer_step(opt, args, kwargs):
    entry = _by_id.get(id(opt))
    rec = entry[1] if entry is not None and entry[0]() is opt else None
    if rec is None:
        rec = _core.guarded("optimizer", _record_optimizer, opt)
        if rec is None:
            return
    try:
        groups = opt.param_groups
        lr = float(groups[0]["lr"]) if len(groups) == 1 else [float(g["lr"]) for g in groups]
        rec.steps += 1
        rec.dirty = True
        at = _core.out_chars()  # the cell's stdout so far: its first step's in cells[0], its last's in cells[-1]
        if rec.steps == 1:
            rec.lr_first, rec.out_first = lr, at
        rec.out_last = at
        if not rec.steps & (rec.steps - 1):  # steps 1, 2, 4, 8...: the optimizer may be gone
            rec.now = _checksum(groups)      # by the time the cell ends (rebound in a loop)
        cell = _core.state().cell
        if (not rec.cells or rec.cells[-1] != cell) and len(rec.cells) < _MAX_CELLS:
            rec.cells.append(cell)  # where it stepped: the host looks for the run's output there
        if lr != rec.last_lr:
            rec.last_lr = lr
            rec.n_changes += 1
            point = [rec.steps, lr, _core.state().cell]
            if len(rec.changes) < _MAX_CHANGES:
                rec.changes.append(point)
            else:
                rec.changes[-1] = point  # keep the first ones and the latest
        if not rec.linked:
            rec.linked = True
            rec.models = _owners(groups)
            rec.model = rec.models[0] if rec.models else None
            _keep(rec, groups)
        for hook in step_hooks:
            hook(rec)
    except Exception as exc:  # noqa: BLE001
        _core.probe_error("optimizer-step", exc)


def _checksum(groups):
    """[sum, L2 norm] of every parameter the optimizer holds (float64), or None. Compared at
    construction and at each flush, it says whether the steps changed any weight: a hint the
    host weighs with what it captured itself (grader/corroborate.py)."""
    total = square = 0.0
    n = 0
    try:
        for g in groups:
            for p in list(g.get("params", ()))[:_MAX_CHECKSUM_PARAMS]:
                d = p.detach()
                if d.is_meta or not d.numel():
                    continue
                d = d.double()
                total += float(d.sum())
                square += float((d * d).sum())
                n += 1
    except Exception as exc:  # noqa: BLE001 - a lazy or odd parameter: no checksum, no crash
        _core.probe_error("checksum", exc)
        return None
    return [total, square ** 0.5] if n else None


def _owners(groups, cap=50):
    """Refs of every recorded model holding a parameter this optimizer steps (a net and the
    wrappers around it; two models trained by one optimizer)."""
    ids = {id(p) for g in groups for p in g.get("params", ())}
    found = []
    for wr, rec in list(_mods.values()):
        m = wr()
        if rec is not None and m is not None and any(id(p) in ids for p in m.parameters()):
            found.append(rec.ref)
            if len(found) >= cap:
                break
    return found


def _keep(rec, groups):
    """Hold the tensors (never the module) of the model this optimizer trains, and a copy of the
    module without them (_skeleton): the teardown rebuilds that model at the end of its run from
    them (rec_runs.py), even after the notebook dropped it (`model = Net()` per learning rate,
    `model = MLP(width)` per width in a loop). The tensors are the model's own, updated in
    place by training, so they hold the run's final weights. This is the one place the probe
    keeps a student's objects alive: bounded to the newest _MAX_KEPT runs and _MAX_KEPT_BYTES."""
    try:
        ids = {id(p) for g in groups for p in g.get("params", ())}
        best = None
        for wr, mrec in list(_mods.values()):
            m = wr()
            if mrec is None or m is None:
                continue
            own = {id(p) for p in m.parameters()}
            # the smallest model holding every parameter it steps (a fine-tuned head's whole
            # network), else the biggest one whose parameters it all steps
            key = (0, len(own)) if ids <= own else (1, -len(own)) if own and own <= ids else None
            if key is not None and (best is None or key < best[0]):
                best = (key, m)
        if best is None:
            rec.kept = None
            return
        m = best[1]
        state = m.state_dict(keep_vars=True)
        size = sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "element_size"))
        rec.kept = (type(m).__name__, state, weakref.ref(m), size, _skeleton(m, state))
        _kept.append(rec)
        while len(_kept) > _MAX_KEPT or sum(r.kept[3] for r in _kept) > _MAX_KEPT_BYTES:
            _kept.pop(0).kept = False  # released: the oldest run is not captured (said in spec.json)
    except Exception as exc:  # noqa: BLE001
        rec.kept = None
        _core.probe_error("optimizer-keep", exc)


def _skeleton(m, state):
    """A deep copy of `m` whose state tensors (parameters, persistent buffers) are empty ones on
    the meta device, so copying costs no memory for weights: the teardown assigns the kept tensors
    to it (rec_runs._run_model), which rebuilds a run's model of a shape no live model has any
    more. None when `m` cannot be copied (it holds a generator, a lock...)."""
    try:
        torch = sys.modules["torch"]
        memo = {}
        heavy = tuple(c for c in (getattr(torch.utils.data, "Dataset", None),
                                  getattr(torch.utils.data, "DataLoader", None),
                                  getattr(torch.optim, "Optimizer", None)) if isinstance(c, type))
        for sub in m.modules():  # a dataset, loader or optimizer the model holds: None in the copy
            for v in list(vars(sub).values()):
                if isinstance(v, heavy):
                    memo[id(v)] = None
        for t in state.values():
            if isinstance(t, torch.Tensor) and id(t) not in memo:
                empty = torch.empty(t.shape, dtype=t.dtype, device="meta")
                memo[id(t)] = (torch.nn.Parameter(empty, requires_grad=t.requires_grad)
                               if isinstance(t, torch.nn.Parameter) else empty)
        return copy.deepcopy(m, memo)
    except Exception:  # noqa: BLE001 - a module that cannot be copied: rebuilt from a live twin only
        return None


def _record_scheduler(s):
    if lookup(s) is not None:
        return lookup(s)
    params = {}
    for k, v in list(vars(s).items()):
        if not k.startswith("_") and k != "optimizer":
            value = _simple(v)
            if value is not _simple:
                params[k] = value
    opt = getattr(s, "optimizer", None)
    oref = (_record_optimizer(opt).ref if hasattr(opt, "param_groups") else None)
    rec = new(s, "scheduler", {"type": type(s).__name__, "module": type(s).__module__,
                                "optimizer": oref, "params": params}, last_lr=None)
    _aggregates.append(rec)
    return rec


def _count_scheduler_step(s):
    rec = _record_scheduler(s)
    rec.steps += 1
    rec.dirty = True
    rec.last_lr = floats(getattr(s, "_last_lr", None))


# ---------------------------------------------------------------- cell end, exit


def cell_end():
    return None


def at_exit():
    return None


def flush(reason):
    _flush_sessions()
    for rec in _aggregates:
        if not rec.dirty:
            continue
        rec.dirty = False
        if rec.kind == "optimizer":
            opt = rec.opt()
            if opt is not None and rec.steps:
                rec.now = _checksum(opt.param_groups)
            _core.emit("optimizer-state", {
                "ref": rec.ref, "steps": rec.steps, "lr_changes": rec.changes,
                "n_changes": rec.n_changes, "model": rec.model, "models": rec.models,
                "cells": rec.cells, "checksum_start": rec.start, "checksum_now": rec.now,
                "lr_first": rec.lr_first,
                "out_at": None if rec.out_first is None or rec.out_last is None
                else [rec.out_first, rec.out_last]})
        else:
            _core.emit("scheduler-state", {"ref": rec.ref, "steps": rec.steps,
                                           "last_lr": rec.last_lr})
