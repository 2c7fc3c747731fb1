"""Probe part: the losses optimizers stepped on, and where plotted images came from.

Runs inside the kernel as `_dllab_probe_genlog`; see recorder.py for the rules. Idle unless the
probe was installed with `generative` (the rubric's `generative:` section).

Stepped losses. `Tensor.backward` and `torch.autograd.backward` are wrapped: the detached value
of each scalar root is added to a pending sum (a tensor on its device: no GPU sync per step);
rec_torch's optimizer-step hook calls `credit`, which hands the pending sum to the optimizer
that stepped and resets it. Per optimizer and loader pass (rec_torch `active["serial"]`) the
credited values are aggregated; `flush` writes one `optimizer-stepped` event per optimizer that
stepped since the last flush: `{"ref", "stepped": [[serial, n, mean, min, max, last], ...]}`
(at most _MAX_STEPPED entries: the first ones and the latest), the one GPU sync of those values,
and a sample of the exact stepped values, `"sample": {"every", "pow2", "first", "values": [[serial,
i, loss, sum of the pass's losses up to step i], ...]}`: step i (0-based) of each pass is kept
when i < first or i % every or i % pow2 is 0 or the divisor less one (every 5, pow2 16, first 32
to begin with). Keeping one is appending two references to tensors already made (no copy, no
sync); over _SAMPLE_MAX values the sample is thinned (every 5 -> 10 -> 50 -> 100 ..., pow2 doubled,
first halved), so a printed loss can be told from one never back-propagated (checks.genlogs).

Figure origins. A global forward hook remembers, for each recorded model (rec_torch), the newest
image-shaped outputs (a view of at most _KEEP_IMAGES images, not a copy) and what went in: float
noise (B, k) / (B, k, 1, 1) -> `samples` (`class-grid` when a label argument lists classes in
order; `latent` when the noise is a lattice: a manifold); an image batch -> `reconstructions`
(the batch itself is kept as `data`, with the active loader's split). A VAE's (B, K) second
output (its means) is kept as `latent`. Methods named decode/sample/generate/encode of a model's
class are wrapped at its first forward and seen the same way when called outside a forward; so
are its direct submodules (`vae.decoder(z)`, `netG.main(z)`: named 'VAE.decoder'), noted at its
first forward (at most _MAX_CHILDREN in all), whose calls from the notebook are looked up by id
(one dict look-up per top-level module call; none inside a forward). An encoder's means decoded
as they are (`decoder(encoder(x)[:, :k])`: the decoder's input shares their memory) make
reconstructions of that image batch, not samples.
Nothing is digested while training: when a figure is recorded (rec_figures calls `figure_keys`)
or torchvision's `save_image` writes a file, the plotted arrays are compared with those outputs
by content (each image scaled to 0..1 by its own min and max, so `(x + 1) / 2`, `* 255`,
`make_grid(normalize=True)` and `.detach().cpu().numpy()` do not matter; 8-bit, mean absolute
difference under _MATCH_TOLERANCE). A grid is cut into tiles (make_grid's paddings). A scatter is
matched with the kept means column by column. Never decided from captions: nothing matched is
`unknown`.
"""

from __future__ import annotations

import collections
import os
import sys
import types
import weakref

HOOK_MODULES = ("torch", "torch.autograd", "torch.nn.modules.module", "torch.amp.grad_scaler",
                "torchvision", "torchvision.utils", "matplotlib.axes._axes")

_core = None
_t = None  # rec_torch: the object registry, `active`, `wrap`
_on = False

_pending = [None]  # sum of the backward roots since the previous optimizer step (a 0-d tensor)
_in_backward = [0]
_scaled = collections.OrderedDict()  # id(GradScaler.scale(loss)) -> (that tensor, loss): the loss counts
_stepped = {}  # id(optimizer _Rec) -> [rec, entries, dirty, sample]
_MAX_STEPPED = 500
_SAMPLE_MAX = 1800  # stepped losses kept per optimizer (evidence lists hold 2000)
_STRIDES = (5, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000)

_KEEP_IMAGES = 400  # a 20 x 20 manifold: views of outputs already made, digested only for a figure
_MAX_KEYS = 48  # (model ref, role) pairs whose outputs are kept
_kept = collections.OrderedDict()  # (model ref, role) -> {"first": entry, "last": deque(2)}
_depth = [0]  # recorded-model calls in progress: only the outermost one is an output
_MAX_CHILDREN = 256
_children = {}  # id(submodule) -> (weakref to it, weakref to its model, model _Rec, attribute name)
_parents = {}  # id(recorded model) -> True once its submodules are in _children
_open = []  # submodules called from the notebook whose call is in progress (the outermost first)
_encoded = [None]  # (means, image batch, split): the newest means an encoder gave for an image batch
_wrapped_classes = set()
_paddings = {2, 0}  # make_grid paddings seen
_seq = [0]
_METHODS = ("decode", "sample", "generate", "encode")
_MATCH_TOLERANCE = 3.0  # mean |difference| in 8-bit levels for two images to be the same
_ORDER = ("reconstructions", "class-grid", "samples", "latent", "data")


def setup(core):
    global _core, _t
    _core = core
    _t = sys.modules[core.PROBE_NAME + "_torch"]


def configure(caps):
    global _on
    _on = bool(caps.get("generative"))


def tracked():
    return ()


def cell_end():
    return None


def at_exit():
    return None


# ---------------------------------------------------------------- patches


def patch():
    if not _on:
        return
    m = sys.modules
    torch = m.get("torch")
    if isinstance(getattr(torch, "Tensor", None), type):
        _t.wrap(torch.Tensor, "backward", _make_backward(lambda a, k: a[0] if a else None))
    ag = m.get("torch.autograd")
    if ag is not None and callable(ag.__dict__.get("backward")):
        _t.wrap(ag, "backward", _make_backward(lambda a, k: a[0] if a else k.get("tensors")))
    gs = getattr(m.get("torch.amp.grad_scaler"), "GradScaler", None)
    if isinstance(gs, type):
        _t.wrap(gs, "scale", _make_scale)
    hooks = getattr(_t, "step_hooks", None)
    if hooks is not None and credit not in hooks:
        hooks.append(credit)
    mm = m.get("torch.nn.modules.module")
    pre = getattr(mm, "register_module_forward_pre_hook", None)
    post = getattr(mm, "register_module_forward_hook", None)
    if pre is not None and post is not None and not _t._hook_registered(
            getattr(mm, "_global_forward_hooks", None), _post):
        pre(_pre)
        post(_post, always_call=True)
    axes_mod = m.get("matplotlib.axes._axes")
    if getattr(axes_mod, "Axes", None) is not None:
        _t.wrap(axes_mod.Axes, "imshow", _make_imshow)
    tv = m.get("torchvision.utils")
    if tv is not None:
        if callable(tv.__dict__.get("make_grid")):
            _t.wrap(tv, "make_grid", _make_make_grid)
        if callable(tv.__dict__.get("save_image")):
            _t.wrap(tv, "save_image", _make_save_image)


def _busy():
    jit = getattr(sys.modules.get("torch"), "jit", None)
    compiler = getattr(sys.modules.get("torch"), "compiler", None)
    tracing = getattr(jit, "is_tracing", None)
    compiling = getattr(compiler, "is_compiling", None)
    return bool((tracing is not None and tracing()) or (compiling is not None and compiling()))


# ---------------------------------------------------------------- stepped losses


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
            _core.guarded("backward", _note_backward, roots_of(args, kwargs))
            return out
        return backward
    return make


def _make_scale(orig):
    def scale(self, outputs):
        out = orig(self, outputs)
        if out is not outputs and hasattr(out, "numel") and hasattr(outputs, "detach"):
            _core.guarded("grad-scaler", _note_scaled, out, outputs)
        return out
    return scale


def _note_scaled(out, loss):
    """Mixed precision backpropagates loss x scale: the loss itself is what the notebook stepped on."""
    _scaled[id(out)] = (out, loss.detach())
    while len(_scaled) > 4:
        _scaled.popitem(last=False)


def _note_backward(roots):
    if roots is None or _busy():
        return
    if not isinstance(roots, (list, tuple)):
        roots = (roots,)
    for r in roots[:16]:
        pair = _scaled.pop(id(r), None)
        if pair is not None and pair[0] is r:
            r = pair[1]
        if hasattr(r, "detach") and hasattr(r, "numel") and r.numel() == 1 and r.is_floating_point():
            v = r.detach().reshape(()).float()
            _pending[0] = v.clone() if _pending[0] is None else _pending[0] + v


def credit(rec):
    """rec_torch's optimizer-step hook: the pending backward sum goes to optimizer `rec`."""
    _core.guarded("stepped", _credit, rec)


def _credit(rec):
    value, _pending[0] = _pending[0], None
    if value is None:
        return
    slot = _stepped.get(id(rec))
    if slot is None or slot[0] is not rec:
        slot = _stepped[id(rec)] = [rec, [], True, {"every": _STRIDES[0], "pow2": 16, "first": 32, "kept": []}]
    entries, serial = slot[1], _t.active["serial"]
    cur = entries[-1] if entries else None
    if cur is None or cur[0] != serial:
        cur = [serial, 0, value, value, value, value]
        if len(entries) >= _MAX_STEPPED:
            entries[-1] = cur  # the first ones and the latest are kept
        else:
            entries.append(cur)
    else:
        torch = sys.modules["torch"]
        cur[2] = value + cur[2]
        cur[3] = torch.minimum(value, cur[3]) if hasattr(cur[3], "shape") else value.clamp(max=cur[3])
        cur[4] = torch.maximum(value, cur[4]) if hasattr(cur[4], "shape") else value.clamp(min=cur[4])
    sample, i = slot[3], cur[1]
    if _sampled(sample, i):  # references to tensors already made: no copy, no sync
        sample["kept"].append([serial, i, value, cur[2]])
        if len(sample["kept"]) > _SAMPLE_MAX:
            _thin(sample)
    cur[1] += 1
    cur[5] = value
    slot[2] = True


def _sampled(sample, i):
    """Whether the loss of step `i` (0-based) of a loader pass is kept: the first steps of each
    pass, then each step where i % every or i % pow2 is 0 or the divisor less one (prints at
    `i % 50 == 0` and `(i + 1) % 100 == 0` find theirs, and a window mean between two of them)."""
    m, q = sample["every"], sample["pow2"]
    return i < sample["first"] or i % m in (0, m - 1) or i % q in (0, q - 1)


def _thin(sample):
    """Over _SAMPLE_MAX values: the next stride (5, 10, 50, 100, ...), twice pow2, half the
    first steps; the kept values that no longer qualify are dropped."""
    while len(sample["kept"]) > _SAMPLE_MAX:
        k = _STRIDES.index(sample["every"])
        if k + 1 >= len(_STRIDES):
            del sample["kept"][_SAMPLE_MAX // 2:-_SAMPLE_MAX // 2]  # the first ones and the latest
            return
        sample["every"], sample["pow2"] = _STRIDES[k + 1], sample["pow2"] * 2
        sample["first"] = max(1, sample["first"] // 2)
        sample["kept"] = [e for e in sample["kept"] if _sampled(sample, e[1])]


def _floats(values):
    """Tensors among `values` as floats (float32 values written with 9 digits: exact), in one
    transfer when they can be stacked; None for what is not finite."""
    idx = [k for k, v in enumerate(values) if hasattr(v, "shape")]
    if idx:
        try:
            got = sys.modules["torch"].stack([values[k].reshape(()).float() for k in idx]).tolist()
        except Exception:  # noqa: BLE001 - tensors on several devices
            got = [float(values[k]) for k in idx]
        for k, v in zip(idx, got):
            values[k] = v
    return [float("%.9g" % v) if v is not None and v == v and abs(v) != float("inf") else None for v in values]


def flush(reason):
    for slot in list(_stepped.values()):
        rec, entries, dirty, sample = slot
        if not dirty or rec.ref is None:
            continue
        slot[2] = False
        out = []
        for e in entries:
            for i in (2, 3, 4, 5):
                e[i] = float(e[i])  # tensors to floats once: the sync of those values
            out.append([e[0], e[1], e[2] / e[1], e[3], e[4], e[5]])
        kept = sample["kept"]
        flat = _floats([v for e in kept for v in e[2:4]])
        for k, e in enumerate(kept):
            e[2], e[3] = flat[2 * k], flat[2 * k + 1]
        _core.emit("optimizer-stepped", {"ref": rec.ref, "stepped": out, "sample": {
            "every": sample["every"], "pow2": sample["pow2"], "first": sample["first"],
            "values": [list(e) for e in kept]}})


# ---------------------------------------------------------------- model outputs


def _recorded(module):
    entry = _t._mods.get(id(module))
    if entry is None or entry[1] is None or entry[0]() is not module:
        return None
    return entry[1]


def _pre(module, args):
    rec = _recorded(module)  # rec_torch's pre-hook ran first and recorded a new model
    if rec is not None:
        _depth[0] += 1
        if type(module) not in _wrapped_classes:
            _core.guarded("genlog-methods", _wrap_methods, type(module))
        if id(module) not in _parents:
            _core.guarded("genlog-children", _note_children, module, rec)
    elif not _depth[0] and _children:  # a recorded model's submodule called from the notebook
        child = _children.get(id(module))
        if child is not None and child[0]() is module:
            _open.append(module)
            _depth[0] += 1
    return None


def _post(module, args, out):
    if _open and _open[-1] is module:
        _open.pop()
        _depth[0] = max(0, _depth[0] - 1)
        child = _children.get(id(module))
        parent = child[1]() if child is not None else None
        if not _depth[0] and out is not None and parent is not None:
            _core.guarded("genlog-output", _note_call, parent, child[2], child[3], args, out)
        return None
    rec = _recorded(module)
    if rec is not None:
        _depth[0] = max(0, _depth[0] - 1)
        if not _depth[0] and out is not None:
            _core.guarded("genlog-output", _note_call, module, rec, "forward", args, out)
    return None


def _note_children(module, rec):
    """A recorded model's direct submodules (`vae.decoder`, `netG.main`): their calls from the
    notebook, outside any recorded forward, are that model's outputs too (at most _MAX_CHILDREN)."""
    _parents[id(module)] = True
    for name, sub in list(module.named_children())[:32]:
        if len(_children) >= _MAX_CHILDREN:
            break
        if _recorded(sub) is None:
            _children[id(sub)] = (weakref.ref(sub), weakref.ref(module), rec, name)


def _wrap_methods(cls):
    _wrapped_classes.add(cls)
    for klass in cls.__mro__:
        if klass.__module__.startswith("torch."):
            break
        for name in _METHODS:
            fn = klass.__dict__.get(name)
            if isinstance(fn, types.FunctionType) and not getattr(fn, "_dllab_wrapped", False):
                _t.wrap(klass, name, _make_method(name))


def _make_method(name):
    def make(orig):
        _dllab_method, _dllab_orig, _dllab_name = _method, orig, name

        def call(self, *args, **kwargs):
            return _dllab_method(_dllab_orig, _dllab_name, self, args, kwargs)
        # TorchScript compiles the original's source (inspect follows __wrapped__) with the
        # wrapper's closure and globals: the globals must be the original's (as rec_loss does)
        return types.FunctionType(call.__code__, orig.__globals__, call.__name__, None, call.__closure__)
    return make


def _method(orig, name, self, args, kwargs):
    if _depth[0]:  # inside the model's forward (or another method) it is part of that call
        return orig(self, *args, **kwargs)
    _depth[0] += 1  # the submodules it calls are part of it
    try:
        out = orig(self, *args, **kwargs)
    finally:
        _depth[0] = max(0, _depth[0] - 1)
    rec = _recorded(self)
    if rec is not None:
        _core.guarded("genlog-method", _note_call, self, rec, name, args, out)
    return out


def _tensors(out):
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [o for o in out[:8] if hasattr(o, "shape") and hasattr(o, "detach")]
    return [out] if hasattr(out, "shape") and hasattr(out, "detach") else []


def _side(shape):
    """The image side of a per-sample shape ((1, 28, 28), (3, 32, 32), (28, 28), (784,)), or None."""
    n = 1
    for d in shape:
        n *= int(d)
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[1] == shape[2] >= 8:
        return int(shape[1])
    if len(shape) == 2 and shape[0] == shape[1] >= 8:
        return int(shape[0])
    if len(shape) == 1:
        for c in (1, 3):
            s = int(round((n / c) ** 0.5))
            if s >= 8 and c * s * s == n:
                return s
    return None


def _is_image(x):
    return (hasattr(x, "shape") and len(x.shape) >= 2 and x.is_floating_point()
            and _side(tuple(x.shape[1:])) is not None)


def _is_image_batch(x):
    """Whether a model's float input is a batch of images rather than latent noise. A flat
    (B, k) input is noise when k makes a side under 16 (z of 64 or 100 is 8 x 8 or 10 x 10 in
    size only) or when over 5 % of its values lie below -1.05 (z ~ N(0, I) has 16 %; pixels in
    0..1 or -1..1 none, and MNIST normalized by its mean and std none)."""
    if not _is_image(x):
        return False
    if x.dim() != 2:
        return True
    if _side(tuple(x.shape[1:])) < 16:
        return False
    try:
        return float((x.detach() < -1.05).float().mean()) <= 0.05
    except Exception:
        return True


def _storage(t):
    """The address of a tensor's storage (a slice or chunk of it shares it), or None."""
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - an older torch, a tensor subclass without storage
        return None


def _note_call(module, rec, via, args, out):
    """One outermost call of a recorded model `module`: its forward, a method `via` (decode,
    encode, sample, generate) or a direct submodule `via` (decoder, main) called from the notebook."""
    if _busy():
        return
    outs = _tensors(out)
    x = args[0] if args else None
    if not outs:
        return
    if not hasattr(x, "shape") or not x.is_floating_point() or not len(x.shape):
        if via in ("sample", "generate") and _is_image(outs[0]):  # model.sample(64): noise drawn inside
            _keep(rec, module, via, "samples", outs[0], None, None, None)
        return
    batch = x.shape[0]
    encoding = via.startswith("enc")  # encode(), or a submodule encoder / enc
    if encoding or (not _is_image(outs[0]) and _is_image_batch(x)):
        # an encoder's means: (mu, logvar) from encode() or from an encoder module's forward
        if (encoding or len(outs) >= 2) and outs[0].dim() == 2 and outs[0].shape[0] == batch \
                and 2 <= outs[0].shape[1] <= 1024:
            split = getattr(_t.active["loader"], "split", None)
            _keep(rec, module, via, "latent", outs[0], None, None, split)
            if _is_image_batch(x):  # decoded as they are (a slice or chunk of them), they are reconstructions
                _encoded[0] = (outs[0].detach(), x, split)  # held: its memory is not reused meanwhile
        return
    imgs = outs[0]
    if not _is_image(imgs) or imgs.shape[0] != batch:
        return
    if _is_image_batch(x):
        split = getattr(_t.active["loader"], "split", None)
        _keep(rec, module, via, "reconstructions", imgs, None, None, split)
        _keep(rec, module, via, "data", x, None, None, split)
        for o in outs[1:2]:
            if o.dim() == 2 and o.shape[0] == batch and o.shape[1] <= 1024:
                _keep(rec, module, via, "latent", o, None, None, split)
        return
    if x.dim() == 2 or (x.dim() == 4 and x.shape[2] == x.shape[3] == 1):
        enc = _encoded[0]
        shared = enc is not None and enc[1].shape[0] == batch and _storage(enc[0]) is not None
        if shared and _storage(x) == _storage(enc[0]):
            # decoder(encoder(x)[:, :k]): the means of an image batch decoded, not noise
            _keep(rec, module, via, "reconstructions", imgs, None, None, enc[2])
            _keep(rec, module, via, "data", enc[1], None, None, enc[2])
            return
        labels = args[1] if len(args) > 1 and hasattr(args[1], "shape") and args[1].shape[:1] == (batch,) \
            else None
        _keep(rec, module, via, "samples", imgs, x, labels, None)


def _keep(rec, module, via, role, t, z, labels, split):
    key = (rec.ref, role)
    _seq[0] += 1
    name = type(module).__name__ + ("" if via == "forward" else "." + via)
    entry = {"role": role, "model_ref": rec.ref, "class": type(module).__name__, "name": name,
             "t": t.detach()[:_KEEP_IMAGES], "z": None if z is None else z.detach()[:_KEEP_IMAGES],
             "labels": None if labels is None else labels.detach()[:_KEEP_IMAGES],
             "split": split, "serial": _t.active["serial"], "seq": _seq[0], "q": None}
    slot = _kept.get(key)
    if slot is None:
        slot = _kept[key] = {"first": entry, "last": collections.deque(maxlen=2)}
        while len(_kept) > _MAX_KEYS:
            _kept.popitem(last=False)
    elif slot["first"]["serial"] != entry["serial"]:
        slot["first"] = entry  # the first output of each loader pass is kept beside the newest
    slot["last"].append(entry)


# ---------------------------------------------------------------- torchvision


def _make_make_grid(orig):
    def make_grid(*args, **kwargs):
        pad = kwargs.get("padding", args[2] if len(args) > 2 else 2)
        if isinstance(pad, int) and 0 <= pad <= 64 and len(_paddings) < 16:
            _paddings.add(pad)
        return orig(*args, **kwargs)
    return make_grid


def _make_save_image(orig):
    def save_image(*args, **kwargs):
        out = orig(*args, **kwargs)
        tensor = args[0] if args else kwargs.get("tensor")
        fp = args[1] if len(args) > 1 else kwargs.get("fp")
        _core.guarded("save-image", _note_saved, tensor, fp)
        return out
    return save_image


def _note_saved(tensor, fp):
    np = sys.modules["numpy"]
    parts = tensor if isinstance(tensor, (list, tuple)) else [tensor]
    images = []
    for p in parts[:256]:
        a = p.detach().float().cpu().numpy()
        if a.ndim == 4:
            images.extend(a[:, 0] if a.shape[1] in (1, 3, 4) else a[:, :, :, 0])
        elif a.ndim == 3:
            images.extend([a[0]] if a.shape[0] in (1, 3, 4) else list(a))
        elif a.ndim == 2:
            images.append(a)
    origin = _origin(np, [("image", im) for im in images[:_KEEP_IMAGES]])
    st = _core.state()
    name = os.fspath(fp) if isinstance(fp, (str, os.PathLike)) else None
    _core.emit("figure", {"trigger": "save_image", "fig_kind": "image-grid", "n_axes": 0, "axes": [],
                          "subjects": [], "suptitle": None,
                          "saved_as": os.path.basename(name) if name else None,
                          "png": _copy_png(st, name), "origin": origin})


def _copy_png(st, name):
    if name is None or st.n_figures >= st.caps["max_figures"] or not os.path.isfile(name):
        return None
    try:
        from PIL import Image
        with Image.open(name) as im:
            st.n_figures += 1
            out = "fig-%04d.png" % st.n_figures
            im.save(os.path.join(st.figures_dir, out), format="PNG")
            return out
    except Exception as exc:  # noqa: BLE001 - the record stays, without a picture
        _core.probe_error("save-image-png", exc)
        return None


# ---------------------------------------------------------------- figures


def _make_imshow(orig):
    def imshow(self, *args, **kwargs):
        im = orig(self, *args, **kwargs)
        if _kept:
            _core.guarded("imshow", _note_imshow, im)
        return im
    return imshow


def _note_imshow(im):
    # matched now: the outputs it shows may be replaced by later calls before the figure is recorded
    im._dllab_hits = _hits(sys.modules["numpy"], "image", im.get_array())


def figure_keys(fig):
    """Keys rec_figures adds to a figure record (generative only): `origin` when the figure
    shows images or a scatter, `lines` (each labelled line's points) when it draws lines."""
    if not _on:
        return {}
    try:  # called inside rec_figures' guarded recording: `guarded` would not run again
        return _figure_keys(fig)
    except Exception as exc:  # noqa: BLE001 - the figure is still recorded without them
        _core.probe_error("figure-origin", exc)
        return {}


def _figure_keys(fig):
    out = {}
    lines = _lines(fig)
    if lines:
        out["lines"] = lines
    plotted = []
    for ax in fig.axes[:48]:
        for im in ax.images[:64]:
            early = getattr(im, "_dllab_hits", None)  # matched when drawn, before later outputs replaced them
            plotted.append(("hits", early) if early is not None else ("image", im.get_array()))
        for c in ax.collections[:8]:
            if type(c).__name__ == "PathCollection":
                plotted.append(("scatter", c.get_offsets()))
    if plotted:
        out["origin"] = _origin(sys.modules["numpy"], plotted)
    return out


_LINE_VALUES = 2400  # x and y values of all of a figure's lines together: the event stays small


def _lines(fig):
    """Each line of the figure (at most 24): its legend label (None when it has none), axes title
    and y label, point count and up to an even share of _LINE_VALUES points, evenly spaced."""
    drawn = [(i, ax, line) for i, ax in enumerate(fig.axes[:16]) for line in ax.lines[:16]
             if len(line.get_xydata()) >= 2][:24]
    found = []
    for i, ax, line in drawn:
        label = str(line.get_label())
        xy = line.get_xydata()
        keep = max(2, _LINE_VALUES // (2 * len(drawn)))
        step = -(-len(xy) // keep)
        found.append({"axes": i, "label": None if label.startswith("_") else label[:100],
                      "title": (ax.get_title() or "")[:200] or None, "ylabel": (ax.get_ylabel() or "")[:200] or None,
                      "n": len(xy), "x": [float("%.6g" % v) for v in xy[::step, 0]],
                      "y": [float("%.6g" % v) for v in xy[::step, 1]]})
    return found


def _quantize(np, a):
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    lo, hi = a.min(axis=1, keepdims=True), a.max(axis=1, keepdims=True)
    span = hi - lo
    flat = span[:, 0] <= 1e-8
    q = np.round((a - lo) / np.where(span > 1e-8, span, 1.0) * 255.0)
    return q.astype(np.int16), flat


def _planes(np, t):
    """(n, side, side) float planes of a kept tensor (channel 0), or None."""
    a = t.float().cpu().numpy()
    n = a.shape[0]
    side = _side(a.shape[1:])
    if a.ndim == 4:
        return a[:, 0]
    if a.ndim == 3:
        return a
    return a.reshape(n, -1)[:, :side * side].reshape(n, side, side)


def _entries():
    seen = []
    for slot in list(_kept.values()):
        for e in [slot["first"], *slot["last"]]:
            if all(e is not s for s in seen):
                seen.append(e)
    return seen


def _prepare(np, e):
    if e["q"] is not None:
        return
    if e["role"] == "latent":
        e["q"] = (e["t"].float().cpu().numpy(),)
        return
    planes = _planes(np, e["t"])
    q, flat = _quantize(np, planes)
    e["q"] = (q, flat, planes.shape[1])
    e["role"] = _resolve(np, e)


def _resolve(np, e):
    """A samples entry told apart further: labels in order (class grid), a lattice of z (manifold)."""
    if e["role"] != "samples":
        return e["role"]
    if e["labels"] is not None:
        lab = e["labels"].cpu().numpy()
        lab = lab.argmax(axis=1) if lab.ndim == 2 else lab.reshape(-1)
        lab = [int(v) for v in lab]
        k = len(set(lab))
        if k >= 2 and (lab == sorted(lab) or all(lab[i] == lab[i % k] for i in range(len(lab)))):
            return "class-grid"
    if e["z"] is not None:
        z = e["z"].float().cpu().numpy().reshape(len(e["z"]), -1)
        n = len(z)
        if n >= 9 and z.shape[1] <= 3:
            counts = [len(set(z[:, j].tolist())) for j in range(z.shape[1])]
            if all(c < n for c in counts) and min(counts) <= n // 3:
                return "latent"
    return "samples"


def _hits(np, what, arr, entries=None):
    """One per image of a plotted array (each tile of a grid; a scatter counts one): the kept
    output it matches, as (role, class, name, model_ref, split), or None."""
    if entries is None:
        entries = _entries()
        for e in entries:
            _prepare(np, e)
    if what == "scatter":
        found = [_scatter_match(np, arr, entries)]
    else:  # the first way of cutting it into tiles whose tiles match something (else the first)
        found = None
        for tiles in _tilings(np, arr, entries):
            hits = [_image_match(np, tile, entries) for tile in tiles]
            if found is None or any(h is not None for h in hits):
                found = hits
            if any(h is not None for h in hits):
                break
        found = found or []
    return [None if e is None else (e["role"], e["class"], e["name"], e["model_ref"], e["split"]) for e in found]


def _origin(np, plotted):
    """A figure's `origin` from its plotted arrays: ("image" | "scatter", array) pairs, or
    ("hits", list) already matched when drawn (_make_imshow)."""
    entries = _entries()
    for e in entries:
        _prepare(np, e)
    found = []
    for what, arr in plotted:
        found += arr if what == "hits" else _hits(np, what, arr, entries)
    hits = collections.Counter(h[0] for h in found if h is not None)
    if not hits:
        return {"role": "unknown", "capture_class": None, "model_ref": None,
                "why": "none of its %d images matched an output of a model the notebook ran" % len(found)}
    role = max(hits, key=lambda r: (hits[r], -_ORDER.index(r)))
    if hits.get("reconstructions") and hits["reconstructions"] * 2 >= hits[role]:
        role = "reconstructions"  # a comparison grid: test images beside their reconstructions
    _, cls, name, ref, split = collections.Counter(h for h in found if h is not None and h[0] == role).most_common(1)[0][0]
    split = " of %s images" % split if split else ""
    what = {"reconstructions": "outputs of %s on an image batch" + split,
            "samples": "outputs of %s on float noise",
            "class-grid": "outputs of %s on noise with labels in order",
            "latent": "means or a latent lattice of %s",
            "data": "input images of %s" + split}[role] % name
    why = "%d of %d plotted images%s are %s" % (hits[role], len(found),
                                                 " and scatters" if any(w == "scatter" for w, _ in plotted) else "", what)
    others = ", ".join("%d %s" % (hits[r], r) for r in _ORDER if r != role and hits.get(r))
    return {"role": role, "capture_class": cls, "model_ref": ref, "why": why + ("; also " + others if others else ""),
            "hits": hits[role], "images": len(found)}


def _tilings(np, arr, entries):
    """The ways to cut one plotted array into images, most likely first: itself when it has a
    kept image's size, then a grid of each kept side and padding that divides it (a (B, 100)
    output makes 10 a side too: a 8 x 8 grid of 28-pixel digits, 242 pixels, also cuts into
    12-pixel cells), then itself."""
    a = np.ma.getdata(arr) if hasattr(np, "ma") else arr
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        a = a[:, :, 0] if a.shape[2] in (3, 4) else a[0] if a.shape[0] in (1, 3, 4) else a
    if a.ndim != 2 or a.size > 4_000_000:
        return []
    h, w = a.shape
    sides = sorted({e["q"][2] for e in entries if len(e["q"]) == 3}, reverse=True)  # images, not means
    if h == w and h in sides:
        return [[a]]
    out = []
    for side in sides:
        for pad in sorted(_paddings):
            cell = side + pad
            if (h - pad) % cell or (w - pad) % cell or h < cell:
                continue
            tiles = [a[pad + i * cell:pad + i * cell + side, pad + j * cell:pad + j * cell + side]
                     for i in range((h - pad) // cell) for j in range((w - pad) // cell)]
            tiles = [t for t in tiles if t.max() - t.min() > 1e-8][:_KEEP_IMAGES]  # empty slots left out
            if tiles:
                out.append(tiles)
    return out + [[a]]


def _image_match(np, tile, entries):
    if tile.max() - tile.min() <= 1e-8:
        return None
    q, _ = _quantize(np, tile.reshape(1, -1))
    best, score = None, _MATCH_TOLERANCE
    for e in entries:
        if len(e["q"]) != 3 or e["q"][2] ** 2 != tile.size:  # a manifold's decodes are images too
            continue
        eq, flat = e["q"][0], e["q"][1]
        d = np.abs(eq.reshape(len(eq), -1) - q).mean(axis=1)
        d[flat] = np.inf
        i = int(d.argmin()) if len(d) else -1
        if i >= 0 and d[i] < score:
            best, score = e, d[i]
    return best


def _scatter_match(np, offsets, entries):
    xy = np.asarray(np.ma.getdata(offsets), dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 2:
        return None
    for e in entries:
        if e["role"] != "latent" or len(e["q"]) != 1:  # the means an encoder gave
            continue
        mu = np.asarray(e["q"][0], dtype=np.float64)
        if mu.ndim != 2 or mu.shape[1] < 2:
            continue
        if all(_contains(np, xy[:, c], mu[:16, c]) for c in (0, 1)):
            return e
    return None


def _contains(np, haystack, needle):
    if len(needle) == 0 or len(haystack) < len(needle):
        return False
    for i in np.flatnonzero(np.isclose(haystack, needle[0], rtol=1e-6, atol=1e-9))[:32]:
        part = haystack[i:i + len(needle)]
        if len(part) == len(needle) and np.allclose(part, needle, rtol=1e-6, atol=1e-9):
            return True
    return False
