"""Probe part: which regularizers were in effect while each optimizer stepped.

Runs inside the kernel as `_dllab_probe_reg`; see recorder.py for the rules. Counters only, no
per-call records; everything is credited to the optimizer that steps next (rec_torch's
`step_hooks`), so each fact belongs to the run whose steps it happened between:

- weight decay: the `weight_decay` of each param group of the optimizer that stepped, read at its
  steps 1, 2, 4, 8, ... (a value set on a group after construction counts);
- an L1/L2 penalty in the loss it stepped on: `Tensor.backward` / `torch.autograd.backward` are
  wrapped; on sampled calls (each new model or optimizer, the first _ANALYZED steps of the last
  optimizer that stepped, then every _EVERY-th) the root's autograd graph is walked (bounded):
  from the root through sums, means, products, additions and views only (never into a model's
  layers), a norm-like node (abs, pow 2, square, x * x, norm, linalg_vector_norm, sqrt of those)
  whose inputs lead, through views, flattening and cat/stack only, to parameters (AccumulateGrad
  leaves) is a penalty on them; parameters the stepping optimizer holds are counted. A penalty
  computed but not added to the back-propagated loss is not in its graph, so it never counts;
- Dropout (nn.Dropout*, AlphaDropout, FeatureAlphaDropout, F.dropout* and F.alpha_dropout) and
  BatchNorm (_BatchNorm, SyncBatchNorm) forward calls, counted as [training mode with gradients,
  training mode without, eval mode with gradients, eval mode without] per module, named by the
  recorded model holding it (`Net.fc_drop`), credited to the next optimizer that steps and owns
  that model; with the cell where that model's `.eval()` was last called (Module.train wrapped),
  and per module the steps whose window saw a training-mode call and those that saw only eval-mode
  calls with gradients (training passes in eval mode);
- random transforms (torchvision Random*, ColorJitter, AutoAugment, RandAugment,
  TrivialAugmentWide, AugMix, ElasticTransform, GaussianBlur with a sigma range, MixUp, CutMix;
  a student class named Random*) in the pipeline of the data each pass of a model read: rec_torch
  calls `session_hooks` when a pass begins, and the dataset behind its loader is walked then
  (Subset.dataset, ConcatDataset, attributes holding datasets or transforms; Compose,
  RandomApply, RandomChoice, nn.Sequential nesting), so a transform assigned after a
  random_split, shared by both subsets, is seen; the names go into the pass's record (`augment`);
- model selection: `Module.state_dict()` of a recorded model (and `torch.save` of one) is a
  snapshot, noted with the split evaluated since that model last trained (val before test before
  train when several were); a later load into a
  model of that class (rec_torch `load_hooks`) carries `selection`: how many snapshots, the split
  evaluated before each, and `steps_after` (optimizer steps between the last snapshot and the load:
  more than 0 means training went on and the load restored an earlier, selected state);
- pretrained weights: torchvision's `WeightsEnum.get_state_dict` (`weights=` / `pretrained=True`
  builders), `torch.hub.load_state_dict_from_url` and `torch.hub.load` are recorded after they
  return or raise (offline they raise), as `pretrained` events.

`flush` writes one `reg-state` event per optimizer credited since the last flush.
"""

from __future__ import annotations

import functools
import sys
import types
import weakref

HOOK_MODULES = ("torch", "torch.autograd", "torch.nn.modules.module", "torch.nn.modules.dropout",
                "torch.nn.modules.batchnorm", "torch.nn.functional", "torch.hub", "torchvision.models._api")

_core = None
_t = None  # rec_torch: registry, `_mods`, `step_hooks`, `session_hooks`, `load_hooks`, `active`

DROPOUT_CLASSES = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")
DROPOUT_FUNCTIONS = {"dropout": True, "dropout1d": True, "dropout2d": True, "dropout3d": True,
                     "alpha_dropout": False, "feature_alpha_dropout": False}
"""Functional dropouts and their `training` default."""
_RANDOM = frozenset({"ColorJitter", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix",
                     "ElasticTransform", "GaussianBlur", "MixUp", "CutMix", "ScaleJitter", "GaussianNoise"})
_NOT_RANDOM = frozenset({"RandomTransforms"})
_ANALYZED = 4  # backward passes analyzed per optimizer before sampling every _EVERY-th
_EVERY = 50
_MAX_TOP = 3000  # graph nodes walked from a root (sums, products, views)
_MAX_BELOW = 4000  # nodes walked below penalty nodes to the parameters
_MAX_MODULES = 32  # module names kept per optimizer and kind
_MAX_PENDING = 256
_MAX_AUG = 16
_MAX_SNAPS = 64
_MAX_PRETRAINED = 20
# autograd node names (trailing digits dropped) the walk from the root passes through
_COMBINE = frozenset({"AddBackward", "SubBackward", "RsubBackward", "MulBackward", "DivBackward", "SumBackward",
                      "MeanBackward", "NegBackward", "CloneBackward", "ToCopyBackward", "ViewBackward",
                      "ReshapeAliasBackward", "UnsafeViewBackward", "SqueezeBackward", "UnsqueezeBackward",
                      "StackBackward", "CatBackward", "SqrtBackward", "ExpandBackward", "AliasBackward",
                      "PowBackward", "LinalgVectorNormBackward", "NormBackward", "AbsBackward"})
# ... and those it passes through below a norm-like node, to the parameters
_THROUGH = frozenset({"ViewBackward", "ReshapeAliasBackward", "UnsafeViewBackward", "CatBackward", "StackBackward",
                      "ToCopyBackward", "CloneBackward", "TBackward", "PermuteBackward", "TransposeBackward",
                      "SqueezeBackward", "UnsqueezeBackward", "ExpandBackward", "AliasBackward", "SelectBackward",
                      "SliceBackward", "SumBackward", "MeanBackward", "AbsBackward", "PowBackward",
                      "LinalgVectorNormBackward", "NormBackward", "MulBackward", "SqrtBackward", "AddBackward"})

_slots = {}  # id(optimizer _Rec) -> _Slot
_last = [None]  # the _Slot of the optimizer that stepped last
_pending = {}  # id(module) -> _Mod (counts since they were last credited)
_pending_f = {}  # functional dropout name -> _Mod
_pen = [None]  # {"L1": set(param ids), "L2": set(...)} from the backward passes analyzed since the last step
_n_backward = [0]
_seen_gen = [None]
_in_backward = [0]
_in_module = [0]  # a Dropout module's forward calling F.dropout counts once
_in_train = [0]
_in_download = [0]
_mode_cells = {}  # id(module) -> (weakref, cell of its last .eval(), cell of its last .train())
_last_eval = {}  # model ref -> splits of its evaluation passes since it last trained
_snaps = {}  # model ref -> {"n", "splits", "cls", "cells"}
_aug = [None, None]  # (loader serial, names) of the pass inspected last
_n_pretrained = [0]
_steps_total = [0]  # optimizer steps so far (any optimizer): a load after more steps restores an earlier state
_order = [0]  # snapshots taken so far (the newest snapshot series of a class is the one a load restores)
_grad = [None]  # torch.is_grad_enabled


class _Slot:
    """What one optimizer's steps saw."""

    def __init__(self, rec):
        self.rec = rec
        self.dirty = True
        self.wd = None
        # name -> [cls, tg, tn, eg, en, eval cell, steps in training mode, steps in eval mode only]
        self.mods = {"dropout": {}, "batchnorm": {}}
        self.analyzed = self.found = self.l1 = self.l2 = self.params = 0
        self.ids = None  # ids of the parameters it holds
        self.n_ids = -1


class _Mod:
    """Forward-call counts of one Dropout/BatchNorm module (or functional dropout) since last credited."""

    __slots__ = ("wr", "kind", "cls", "counts", "owner", "name")

    def __init__(self, wr, kind, cls, name=None):
        self.wr = wr
        self.kind = kind
        self.cls = cls
        self.counts = [0, 0, 0, 0]
        self.owner = None  # (model ref, weakref to the model) once known; () when no recorded model holds it
        self.name = name


def setup(core):
    global _core, _t
    _core = core
    _t = sys.modules[core.PROBE_NAME + "_torch"]


def tracked():
    return ()


def cell_end():
    return None


def at_exit():
    return None


# ---------------------------------------------------------------- patches


def _wrap(owner, name, make):
    """rec_torch's `wrap` with a marker of this part's own: another part may have wrapped the same
    function (rec_genlog wraps backward), and each wraps it once."""
    orig = owner.__dict__.get(name)
    if orig is None or getattr(orig, "_dllab_reg", False):
        return
    wrapper = functools.update_wrapper(make(orig), orig)
    wrapper._dllab_reg = True
    setattr(owner, name, wrapper)


def _as_original(make):
    """A module-function wrapper whose globals are the original's (TorchScript compiles a call to
    it from the original's source and resolves names through the wrapper's globals: rec_loss)."""
    def outer(orig):
        call = make(orig)
        return types.FunctionType(call.__code__, orig.__globals__, call.__name__, None, call.__closure__)
    return outer


def patch():
    m = sys.modules
    torch = m.get("torch")
    if torch is None:
        return
    _grad[0] = getattr(torch, "is_grad_enabled", None)
    hooks = getattr(_t, "step_hooks", None)
    if hooks is not None and credit not in hooks:
        hooks.append(credit)
    hooks = getattr(_t, "session_hooks", None)
    if hooks is not None and _on_session not in hooks:
        hooks.append(_on_session)
    hooks = getattr(_t, "load_hooks", None)
    if hooks is not None and _on_load not in hooks:
        hooks.append(_on_load)
    if isinstance(getattr(torch, "Tensor", None), type):
        _wrap(torch.Tensor, "backward", _make_backward(lambda a, k: a[0] if a else None))
    ag = m.get("torch.autograd")
    if ag is not None and callable(ag.__dict__.get("backward")):
        _wrap(ag, "backward", _make_backward(lambda a, k: a[0] if a else k.get("tensors")))
    if callable(torch.__dict__.get("save")):
        _wrap(torch, "save", _make_save)
    dm = m.get("torch.nn.modules.dropout")
    for name in DROPOUT_CLASSES:
        cls = getattr(dm, name, None)
        if isinstance(cls, type) and "forward" in cls.__dict__:
            _wrap(cls, "forward", _as_original(_make_forward("dropout")))
    bm = m.get("torch.nn.modules.batchnorm")
    for name in ("_BatchNorm", "SyncBatchNorm"):
        cls = getattr(bm, name, None)
        if isinstance(cls, type) and "forward" in cls.__dict__:
            _wrap(cls, "forward", _as_original(_make_forward("batchnorm")))
    fm = m.get("torch.nn.functional")
    if fm is not None:
        for name, default in DROPOUT_FUNCTIONS.items():
            if callable(fm.__dict__.get(name)):
                _wrap(fm, name, _as_original(_make_functional(name, default)))
    mm = m.get("torch.nn.modules.module")
    if getattr(mm, "Module", None) is not None:
        _wrap(mm.Module, "train", _make_train)
        _wrap(mm.Module, "state_dict", _make_state_dict)
    hub = m.get("torch.hub")
    if hub is not None:
        for name in ("load_state_dict_from_url", "load"):
            if callable(hub.__dict__.get(name)):
                _wrap(hub, name, _make_download("hub", name))
    api = m.get("torchvision.models._api")
    weights = getattr(api, "WeightsEnum", None)
    if isinstance(weights, type) and "get_state_dict" in weights.__dict__:
        _wrap(weights, "get_state_dict", _make_download("torchvision", "get_state_dict"))


# ---------------------------------------------------------------- Dropout and BatchNorm calls


def _make_forward(kind):
    def make(orig):
        _dllab_count, _dllab_orig, _dllab_depth = _count, orig, _in_module

        def forward(self, *args, **kwargs):
            _dllab_depth[0] += 1
            try:
                out = _dllab_orig(self, *args, **kwargs)
            finally:
                _dllab_depth[0] -= 1
            if not (kind == "dropout" and getattr(self, "p", None) == 0):  # Dropout(p=0) drops nothing
                _dllab_count(kind, self, self.training)
            return out
        return forward
    return make


def _make_functional(name, default):
    def make(orig):
        _dllab_count_f, _dllab_orig, _dllab_depth = _count_f, orig, _in_module

        def call(*args, **kwargs):
            out = _dllab_orig(*args, **kwargs)
            if not _dllab_depth[0]:
                _dllab_count_f(name, args, kwargs, default)
            return out
        return call
    return make


def _mode_index(training):
    grad = _grad[0]
    with_grad = bool(grad()) if grad is not None else True
    return (0 if with_grad else 1) if training else (2 if with_grad else 3)


def _count(kind, module, training):
    try:
        entry = _pending.get(id(module))
        if entry is None or entry.wr() is not module:
            if len(_pending) >= _MAX_PENDING:
                _prune()
                if len(_pending) >= _MAX_PENDING:
                    return
            entry = _pending[id(module)] = _Mod(weakref.ref(module), kind, type(module).__name__)
        entry.counts[_mode_index(bool(training))] += 1
    except Exception as exc:  # noqa: BLE001 - never the student's problem
        _core.probe_error("reg-count", exc)


def _count_f(name, args, kwargs, default):
    try:
        training = kwargs.get("training", args[2] if len(args) > 2 else default)
        if kwargs.get("p", args[1] if len(args) > 1 else 0.5) == 0:  # F.dropout(x, 0.0) drops nothing
            return
        entry = _pending_f.get(name)
        if entry is None:
            entry = _pending_f[name] = _Mod(None, "dropout", "F." + name, name="F." + name)
            entry.owner = ()
        entry.counts[_mode_index(bool(training))] += 1
    except Exception as exc:  # noqa: BLE001
        _core.probe_error("reg-count", exc)


def _prune():
    for key, entry in list(_pending.items()):
        if entry.wr() is None:
            del _pending[key]


def _make_train(orig):
    def train(self, mode=True):
        _in_train[0] += 1
        try:
            out = orig(self, mode)
        finally:
            _in_train[0] -= 1
        if not _in_train[0]:  # the outermost call: the model the notebook switched, not its children
            _core.guarded("reg-mode", _note_mode, self, bool(mode))
        return out
    return train


def _note_mode(module, mode):
    cell = _core.state().cell
    entry = _mode_cells.get(id(module))
    if entry is None or entry[0]() is not module:
        if len(_mode_cells) >= 256:
            for key, e in list(_mode_cells.items()):
                if e[0]() is None:
                    del _mode_cells[key]
            if len(_mode_cells) >= 256:
                return
        entry = (weakref.ref(module), None, None)
    _mode_cells[id(module)] = (entry[0], entry[1] if mode else cell, cell if mode else entry[2])


def _owner(entry):
    """(model ref, weakref to it, qualified name) of the recorded model holding the module."""
    module = entry.wr() if entry.wr is not None else None
    if module is None:
        return ()
    best = None
    for wr, rec in list(_t._mods.values()):
        model = wr()
        if rec is None or model is None or rec.ref is None:
            continue
        for name, sub in model.named_modules():
            if sub is module:
                # the smallest recorded model holding it names it best (a wrapper around the net)
                size = sum(1 for _ in model.modules())
                if best is None or size < best[0]:
                    best = (size, rec.ref, wr, type(model).__name__ + ("." + name if name else ""))
                break
    if best is None:
        return ()
    entry.name = best[3][:120]
    return best[1], best[2]


# ---------------------------------------------------------------- backward: penalties in the stepped loss


def _make_backward(roots_of):
    def make(orig):
        def backward(*args, **kwargs):
            if _in_backward[0]:  # Tensor.backward calling torch.autograd.backward
                return orig(*args, **kwargs)
            _in_backward[0] += 1
            try:
                out = orig(*args, **kwargs)
            finally:
                _in_backward[0] -= 1
            _core.guarded("reg-backward", _note_backward, roots_of(args, kwargs))
            return out
        return backward
    return make


def _should_analyze():
    _n_backward[0] += 1
    gen = getattr(_t, "generation", None)
    if gen != _seen_gen[0]:
        _seen_gen[0] = gen
        return True
    last = _last[0]
    return last is None or last.analyzed < _ANALYZED or _n_backward[0] % _EVERY == 0


def _note_backward(roots):
    if roots is None or not _should_analyze():
        return
    if not isinstance(roots, (list, tuple)):
        roots = (roots,)
    found = _pen[0] if _pen[0] is not None else {"L1": set(), "L2": set()}
    for r in list(roots)[:4]:
        fn = getattr(r, "grad_fn", None)
        if fn is not None:
            _walk(fn, found)
    _pen[0] = found


def _base(fn):
    return type(fn).__name__.rstrip("0123456789")


def _kind(fn, base):
    """L1, L2 or None: what a norm-like autograd node computes of its input."""
    if base == "AbsBackward":
        return "L1"
    if base == "PowBackward":
        return "L2" if getattr(fn, "_saved_exponent", None) == 2 else None
    if base in ("LinalgVectorNormBackward", "NormBackward"):
        order = getattr(fn, "_saved_ord", getattr(fn, "_saved_p", 2))
        order = 2 if order is None else order
        return "L1" if order == 1 else "L2" if order == 2 else None
    if base == "MulBackward":
        nxt = fn.next_functions
        if len(nxt) == 2 and nxt[0][0] is not None and nxt[0][0] is nxt[1][0]:
            return "L2"  # x * x
    return None


def _walk(root, found):
    """Adds to `found` the parameters a penalty reaches: norm-like nodes met from `root` through
    combining nodes only, and the AccumulateGrad leaves below them through views only."""
    seen, stack, budget = set(), [root], _MAX_TOP
    below = [_MAX_BELOW]
    while stack and budget > 0:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        budget -= 1
        base = _base(fn)
        kind = _kind(fn, base)
        if kind is not None:
            leaves = _leaves(fn, below)
            if leaves:
                found[kind].update(leaves)
                continue
        if base in _COMBINE:
            stack.extend(f for f, _ in fn.next_functions)


def _leaves(fn, below):
    out, seen, stack = set(), set(), [f for f, _ in fn.next_functions]
    while stack and below[0] > 0:
        f = stack.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        below[0] -= 1
        var = getattr(f, "variable", None)
        if var is not None:
            out.add(id(var))
        elif _base(f) in _THROUGH:
            stack.extend(g for g, _ in f.next_functions)
    return out


# ---------------------------------------------------------------- crediting an optimizer's step


def credit(rec):
    """rec_torch's optimizer-step hook."""
    _core.guarded("reg-step", _credit, rec)


def _credit(rec):
    slot = _slots.get(id(rec))
    if slot is None or slot.rec is not rec:
        slot = _slots[id(rec)] = _Slot(rec)
    _last[0] = slot
    _steps_total[0] += 1
    slot.dirty = True
    opt = rec.opt() if callable(getattr(rec, "opt", None)) else None
    steps = getattr(rec, "steps", 0)
    if opt is not None and not steps & (steps - 1):  # steps 1, 2, 4, 8...
        slot.wd = [_wd(g) for g in list(opt.param_groups)[:16]]
    if _pending or _pending_f:
        _credit_modules(slot, rec)
    found, _pen[0] = _pen[0], None
    if found is not None and opt is not None:
        n = sum(len(g.get("params", ())) for g in opt.param_groups)
        if slot.ids is None or n != slot.n_ids:
            slot.ids = {id(p) for g in opt.param_groups for p in g.get("params", ())}
            slot.n_ids = n
        l1, l2 = found["L1"] & slot.ids, found["L2"] & slot.ids
        slot.analyzed += 1
        if l1 or l2:
            slot.found += 1
            slot.l1 += bool(l1)
            slot.l2 += bool(l2)
            slot.params = max(slot.params, len(l1 | l2))


def _wd(group):
    v = group.get("weight_decay", 0)
    try:
        return float(v or 0)
    except (TypeError, ValueError):
        return None


def _credit_modules(slot, rec):
    mine = set(getattr(rec, "models", None) or ())
    for entries in (_pending, _pending_f):
        for key, entry in list(entries.items()):
            if not any(entry.counts):
                continue
            if entry.owner is None:
                entry.owner = _owner(entry)
            if entry.owner and mine and entry.owner[0] not in mine:
                continue  # another model's module: credited when its own optimizer steps
            name = entry.name or entry.cls
            kept = slot.mods[entry.kind]
            row = kept.get(name)
            if row is None:
                if len(kept) >= _MAX_MODULES:
                    entry.counts = [0, 0, 0, 0]
                    continue
                row = kept[name] = [entry.cls, 0, 0, 0, 0, None, 0, 0]
            for i in range(4):
                row[i + 1] += entry.counts[i]
            # a step whose window saw a training-mode call stepped with it on; one that saw only
            # eval-mode calls with gradients was a training pass in eval mode (a validation pass
            # at an epoch's end shares a window with the next epoch's first training batch)
            if entry.counts[0]:
                row[6] += 1
            elif entry.counts[2]:
                row[7] += 1
            if entry.counts[2] and entry.owner:
                model = entry.owner[1]()
                mode = _mode_cells.get(id(model)) if model is not None else None
                if mode is not None and mode[0]() is model and mode[1] is not None:
                    row[5] = mode[1]
            entry.counts = [0, 0, 0, 0]
            if entry.wr is not None and entry.wr() is None:
                del entries[key]


# ---------------------------------------------------------------- passes: augmentation, evaluation splits


def _on_session(session, loader):
    _core.guarded("reg-session", _note_session, session, loader)


def _note_session(session, loader):
    if loader is None:
        return
    serial = _t.active.get("serial")
    objs = getattr(loader, "objs", None) or (None, None)
    ds = objs[1]() if len(objs) > 1 and objs[1] is not None else None
    if _aug[0] != serial:
        _aug[0], _aug[1] = serial, _augment_of(ds) if ds is not None else None
    if _aug[1] is not None:
        session["augment"] = list(_aug[1])
    ref = session.get("model")
    if ref is None:
        return
    if session.get("mode") == "training":
        _last_eval[ref] = set()
        return
    split = _pass_split(objs, ds) or session.get("split")
    if not session.get("grad_enabled") or split in ("val", "test"):  # not a training pass in eval mode
        seen = _last_eval.setdefault(ref, set())
        if len(seen) < 8:
            seen.add(split or "none")


def _pass_split(objs, ds):
    """The split a pass read, by the names its loader or dataset is bound to (`val_loader`): a
    student's own split of one folder (Kaggle's train/ holds both halves) is named only there."""
    dl = objs[0]() if objs and objs[0] is not None else None
    names = [n.lower() for obj in (dl, ds) if obj is not None for n in _core.names_for(obj)]
    return next((split for needle, split in (("test", "test"), ("val", "val"), ("train", "train"))
                 if any(needle in n for n in names)), None)


def _augment_of(ds):
    """Names of the random transforms in the pipeline of dataset `ds` (sorted, at most _MAX_AUG)."""
    found, seen, budget = set(), set(), [300]
    base = getattr(sys.modules.get("torch.utils.data.dataset"), "Dataset", None)

    def visit_t(t, depth):
        if t is None or depth > 8 or id(t) in seen or budget[0] <= 0 or isinstance(t, (str, bytes, int, float)):
            return
        seen.add(id(t))
        budget[0] -= 1
        if _is_random(t):
            found.add(type(t).__name__[:60])
        subs = getattr(t, "transforms", None)
        if isinstance(subs, (list, tuple)):
            for s in subs[:50]:
                visit_t(s, depth + 1)
        inner = getattr(t, "transform", None)
        if inner is not None and inner is not t:
            visit_t(inner, depth + 1)
        children = getattr(t, "_modules", None)
        if isinstance(children, dict):
            for s in list(children.values())[:50]:
                visit_t(s, depth + 1)

    def visit_ds(d, depth):
        if d is None or depth > 6 or id(d) in seen or budget[0] <= 0:
            return
        seen.add(id(d))
        budget[0] -= 1
        try:
            attrs = list(vars(d).items())[:60]
        except TypeError:
            attrs = []
        for key, value in attrs:
            values = value[:16] if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if base is not None and isinstance(v, base):
                    visit_ds(v, depth + 1)
                elif _is_transform(v) or key in ("transform", "transforms"):
                    visit_t(v, depth + 1)

    visit_ds(ds, 0)
    return sorted(found)[:_MAX_AUG]


def _is_transform(v):
    mod = getattr(type(v), "__module__", "") or ""
    return mod.startswith("torchvision.transforms") or type(v).__name__.startswith("Random") or (
        callable(v) and isinstance(getattr(v, "transforms", None), (list, tuple)))


def _is_random(t):
    cls = type(t)
    name, mod = cls.__name__, cls.__module__ or ""
    if name in _NOT_RANDOM:
        return False
    if not (name.startswith("Random") or (mod.startswith("torchvision.transforms") and name in _RANDOM)):
        return False
    p = getattr(t, "p", None)
    if isinstance(p, (int, float)) and not isinstance(p, bool) and p <= 0:
        return False  # never applied
    if name == "ColorJitter" and all(getattr(t, a, None) is None for a in ("brightness", "contrast", "saturation", "hue")):
        return False
    if name == "GaussianBlur":
        sigma = getattr(t, "sigma", None)
        if isinstance(sigma, (list, tuple)) and len(sigma) == 2 and sigma[0] == sigma[1]:
            return False
    return True


# ---------------------------------------------------------------- snapshots and model selection


def _from_probe():
    # the probe's own calls (rec_torch's _keep_evaluated, the teardown's captures) are no snapshot
    name = sys._getframe(2).f_globals.get("__name__", "")
    return name.startswith("_dllab_probe") or name.startswith("grader.probe.")


def _make_state_dict(orig):
    def state_dict(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        if not args and "destination" not in kwargs and not kwargs.get("keep_vars") and not _from_probe():
            entry = _t._mods.get(id(self))
            if entry is not None and entry[1] is not None and entry[0]() is self:
                _core.guarded("reg-snapshot", _note_snapshot, entry[1], type(self).__name__)
        return out
    return state_dict


def _make_save(orig):
    def save(obj, *args, **kwargs):
        out = orig(obj, *args, **kwargs)
        entry = _t._mods.get(id(obj))
        if entry is not None and not _from_probe() and entry[1] is not None and entry[0]() is obj:
            _core.guarded("reg-snapshot", _note_snapshot, entry[1], type(obj).__name__)
        return out
    return save


def _note_snapshot(rec, cls):
    if rec.ref is None:
        return
    snap = _snaps.get(rec.ref)
    if snap is None:
        if len(_snaps) >= _MAX_SNAPS:
            return
        snap = _snaps[rec.ref] = {"n": 0, "splits": {}, "cls": cls[:100], "cells": [], "order": 0}
    seen = _last_eval.get(rec.ref) or set()
    split = next((s for s in ("val", "test", "train") if s in seen), None)  # what a selection most likely read
    key = split or "none"
    snap["n"] += 1
    snap["splits"][key] = snap["splits"].get(key, 0) + 1
    snap["last"] = split
    snap["at"] = _steps_total[0]
    cell = _core.state().cell
    if cell is not None and cell not in snap["cells"] and len(snap["cells"]) < 20:
        snap["cells"].append(cell)
    _order[0] += 1
    snap["order"] = _order[0]


def _on_load(module, rec):
    """rec_torch's load hook: `selection` when snapshots of this model (or of one of its class)
    were taken before the load."""
    snap_ref = rec.ref if rec is not None and rec.ref in _snaps else None
    if snap_ref is None:
        cls = type(module).__name__
        same = [(s["order"], ref) for ref, s in _snaps.items() if s["cls"] == cls]
        snap_ref = max(same)[1] if same else None
    if snap_ref is None:
        return None
    s = _snaps[snap_ref]
    return {"selection": {"from": snap_ref, "snapshots": s["n"], "splits": dict(s["splits"]),
                          "last": s.get("last"), "cells": list(s["cells"]),
                          "steps_after": _steps_total[0] - s.get("at", 0)}}


# ---------------------------------------------------------------- pretrained weights


def _make_download(source, what):
    def make(orig):
        def call(*args, **kwargs):
            _in_download[0] += 1
            ok, error = False, None
            try:
                out = orig(*args, **kwargs)
                ok = True
                return out
            except BaseException as exc:
                error = exc
                raise
            finally:
                _in_download[0] -= 1
                if not _in_download[0]:
                    _core.guarded("pretrained", _note_pretrained, source, what, args, kwargs, ok, error)
        return call
    return make


def _note_pretrained(source, what, args, kwargs, ok, error):
    if _n_pretrained[0] >= _MAX_PRETRAINED:
        return
    _n_pretrained[0] += 1
    first = args[0] if args else None
    if source == "torchvision":  # WeightsEnum.get_state_dict(self): the enum member
        name, url = str(first)[:200], str(getattr(first, "url", "") or "")[:500]
    elif what == "load":  # torch.hub.load(repo, model, ...)
        name = ":".join(str(a)[:100] for a in args[:2])
        url = ""
    else:
        name, url = "", str(first if first is not None else kwargs.get("url", ""))[:500]
    _core.emit("pretrained", {"source": source, "name": name, "url": url, "ok": bool(ok),
                              "error": "" if error is None else _core._exc_text(error)})


# ---------------------------------------------------------------- flush


def flush(reason):
    for slot in list(_slots.values()):
        rec = slot.rec
        if not slot.dirty or rec.ref is None:
            continue
        slot.dirty = False
        fields = {"ref": rec.ref, "steps": getattr(rec, "steps", 0),
                  "penalty": {"analyzed": slot.analyzed, "found": slot.found, "l1": slot.l1, "l2": slot.l2,
                              "params": slot.params}}
        if slot.wd is not None:
            fields["weight_decay"] = slot.wd
        for kind, kept in slot.mods.items():
            if kept:
                fields[kind] = [[name, *row] for name, row in kept.items()]
        _core.emit("reg-state", fields)
