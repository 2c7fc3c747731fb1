"""Probe part: matplotlib figures (PNG + kind) and what each histogram was drawn from.

Runs inside the kernel as `_dllab_probe_figures`; see recorder.py for the rules.
A histogram's data is captured where it enters matplotlib (`Axes.hist`, which pyplot,
pandas `.hist()` and seaborn's `distplot` all reach; seaborn's `histplot`/`displot` draw
bars themselves, so those are wrapped too) and matched against the parameters of the live
`nn.Module`s: first by shared storage, then by equal values (in order, then sorted, which
survives reshape/transpose/flatten), then as a concatenation of consecutive parameters.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
import weakref

HOOK_MODULES = ("matplotlib.pyplot", "matplotlib.figure", "matplotlib.axes",
                "matplotlib.axes._axes", "seaborn", "seaborn.distributions")

_core = None
_hists = weakref.WeakKeyDictionary()  # Axes -> [hist info dicts]
_recorded = weakref.WeakKeyDictionary()  # Figure -> (cell, signature) when last recorded
_roots_cache = {"key": None, "refs": [], "built": -1e9}
_MAX_SIZE = 8_000_000  # larger histogram inputs are counted, not copied or matched
_MAX_AXES = 48
_MAX_BARS = 128  # a bins='auto' histogram of a trained layer draws ~100
_GRAY = ("gray", "grey", "Greys", "gray_r", "binary", "bone", "Greys_r", "binary_r")


def setup(core):
    global _core
    _core = core


def tracked():
    return ()


def flush(reason):
    return None


# ---------------------------------------------------------------- patches


def _mark(wrapper, orig):
    functools.update_wrapper(wrapper, orig)
    wrapper._dllab_wrapped = True
    return wrapper


def _wrap_attr(owner, name, make):
    # a class's own attribute only: wrapping an inherited one would wrap it twice
    orig = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if orig is None or getattr(orig, "_dllab_wrapped", False):
        return
    setattr(owner, name, _mark(make(orig), orig))


def patch():
    mods = sys.modules
    axes_mod = mods.get("matplotlib.axes._axes")
    if getattr(axes_mod, "Axes", None) is not None:
        _wrap_attr(axes_mod.Axes, "hist", _make_hist)
    fig_mod = mods.get("matplotlib.figure")
    if getattr(fig_mod, "Figure", None) is not None:
        _wrap_attr(fig_mod.Figure, "savefig", _make_savefig)
    pyplot = mods.get("matplotlib.pyplot")
    if pyplot is not None and callable(getattr(pyplot, "show", None)):
        _wrap_attr(pyplot, "show", _make_show)
    for name in ("seaborn.distributions", "seaborn"):
        sns = mods.get(name)
        for fn in ("histplot", "displot"):
            if sns is not None and callable(getattr(sns, fn, None)):
                _wrap_attr(sns, fn, _make_seaborn)


def _make_hist(orig):
    def hist(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        x = args[0] if args else kwargs.get("x")
        bins = args[1] if len(args) > 1 else kwargs.get("bins")
        drawn = out[1] if isinstance(out, tuple) and len(out) == 3 else None  # (n, bins, patches)
        _core.guarded("hist", _note_hist, self, x, kwargs.get("data"), bins, "hist", drawn)
        return out
    return hist


def _make_seaborn(orig):
    def plot(*args, **kwargs):
        out = orig(*args, **kwargs)
        _core.guarded("seaborn", _note_seaborn, out, args, kwargs)
        return out
    return plot


def _make_savefig(orig):
    def savefig(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        fname = args[0] if args else kwargs.get("fname")
        _core.guarded("savefig", _record_figure, self, "savefig", fname)
        return out
    return savefig


def _make_show(orig):
    def show(*args, **kwargs):
        _core.guarded("show", _record_open, "show")  # before: the inline backend closes them
        return orig(*args, **kwargs)
    return show


def cell_end():
    _record_open("cell-end")


def at_exit():
    _record_open("exit")


# ---------------------------------------------------------------- histogram data


def _note_seaborn(out, args, kwargs):
    data = kwargs.get("data", args[0] if args else None)
    x = kwargs.get("x")
    if x is None:
        x = kwargs.get("y")
    if isinstance(x, str) and data is not None:
        x = data[x]
    elif x is None:
        x = data
    ax = getattr(out, "ax", out)  # displot returns a FacetGrid
    if x is not None and ax is not None:
        _note_hist(ax, x, None, kwargs.get("bins"), "seaborn")


def _note_hist(ax, x, data, bins, source, drawn=None):
    if isinstance(x, str) and data is not None:
        x = data[x]
    info = {"source": source, "bins": bins if isinstance(bins, int) else None, "n": 0,
            "subjects": []}
    _hists.setdefault(ax, []).append(info)  # first: the axes is a histogram whatever follows
    size = _size(x)
    if size is not None and size > _MAX_SIZE:  # e.g. every pixel of a dataset: no copies
        info["n"] = size
        return
    np = sys.modules["numpy"]
    whole = _flat(np, x)
    if whole is not None and whole.size:
        finite = whole[np.isfinite(whole)]
        info["n"] = int(whole.size)
        if finite.size:
            info.update(min=float(finite.min()), max=float(finite.max()),
                        mean=float(finite.mean()), std=float(finite.std()))
            info.update(_bars(np, finite, bins, drawn))
        info["subjects"] = _attribute(np, x, whole)


def _bars(np, finite, bins, drawn=None):
    """The histogram's counts and edges, so the host can compare them with the parameter it
    names and with the bars it reads from the captured image (hints it corroborates, see
    grader/corroborate.py): the bars drawn (`drawn`, the edges plt.hist returned; else the
    edges numpy gives `bins`, as seaborn's default 'auto' does), counted from the data. At
    most _MAX_BARS bars: a finer histogram is recounted coarser, which keeps the event small
    (the host then cannot match it with the image, and a TA looks)."""
    counts = edges = None
    try:
        if drawn is not None:
            edges = np.asarray(drawn, dtype=np.float64).reshape(-1)
        elif isinstance(bins, str) or bins is None:
            edges = np.histogram_bin_edges(finite, bins=bins or "auto")
        if edges is not None and 2 <= len(edges) <= _MAX_BARS + 1 and np.isfinite(edges).all() \
                and (np.diff(edges) > 0).all():
            counts, edges = np.histogram(finite, bins=edges)
    except Exception:  # noqa: BLE001 - odd bins: recounted below
        counts = None
    if counts is None:
        n = bins if isinstance(bins, int) and not isinstance(bins, bool) and bins >= 1 else 50
        counts, edges = np.histogram(finite, bins=min(n, _MAX_BARS))
    return {"counts": [int(c) for c in counts], "edges": [float("%.9g" % e) for e in edges]}


def _size(x):
    try:
        if hasattr(x, "numel"):
            return int(x.numel())
        return x.size if isinstance(getattr(x, "size", None), int) else None
    except Exception:  # noqa: BLE001
        return None


def _flat(np, x):
    try:
        if hasattr(x, "detach"):
            x = x.detach().cpu()
        return np.asarray(x, dtype=np.float64).reshape(-1)
    except Exception:  # noqa: BLE001 - ragged lists, odd objects: treated part by part
        return None


def _data_ptr(x):
    try:
        if hasattr(x, "data_ptr"):
            return x.data_ptr()
        iface = getattr(x, "__array_interface__", None)
        return iface["data"][0] if iface else None
    except Exception:  # noqa: BLE001
        return None


def _attribute(np, x, whole):
    """Subjects for the values of one `hist` call (one per dataset for a list of datasets)."""
    for fresh in (False, True):
        roots = _live_roots(fresh)
        if not roots:
            return []
        subjects = _match(np, x, whole, roots)
        if not subjects and isinstance(x, (list, tuple)) and 1 < len(x) <= 64:
            for part in x:
                flat = _flat(np, part)
                if flat is not None and flat.size:
                    subjects.extend(_match(np, part, flat, roots))
        if subjects:
            return subjects[:64]
    return []


def _live_roots(fresh):
    """Top-level `nn.Module`s with parameters, named ones first; cached per cell."""
    torch = sys.modules.get("torch")
    module_cls = getattr(getattr(torch, "nn", None), "Module", None)
    if module_cls is None:
        return []
    tpart = sys.modules.get(_core.PROBE_NAME + "_torch")
    key = (_core.state().cell, getattr(tpart, "generation", 0))
    recent = time.monotonic() - _roots_cache["built"] < 2.0  # a walk costs ~40 ms with torch
    if _roots_cache["key"] == key and (not fresh or recent):
        if fresh:
            return []
        roots = [r() for r in _roots_cache["refs"]]
        return [r for r in roots if r is not None]
    # type(o), not isinstance: some objects warn or compute when asked for __class__
    mods = [o for o in gc.get_objects() if issubclass(type(o), module_cls)]
    child_ids = set()
    for m in mods:
        child_ids.update(id(c) for c in getattr(m, "_modules", {}).values() if c is not None)
    roots = [m for m in mods if id(m) not in child_ids and _has_values(m)]
    roots.sort(key=lambda m: not _core.names_for(m))
    _roots_cache.update(key=key, refs=[weakref.ref(m) for m in roots], built=time.monotonic())
    return roots


def _has_values(m):
    """Whether `m` has parameters holding values: not a module on the meta device (rec_torch's
    weightless copies of the models runs train, a model built on meta), whose values no figure shows."""
    p = next(m.parameters(), None)
    return p is not None and not getattr(p, "is_meta", False)


def _subject(root, pname, match, grad):
    tpart = sys.modules.get(_core.PROBE_NAME + "_torch")
    names = _core.names_for(root)
    return {"param": pname, "model": names[0] if names else None,
            "model_class": type(root).__name__, "model_ref": tpart.ref_of(root) if tpart else None,
            "match": match, "grad": grad}


def _as_np(np, t):
    return t.detach().reshape(-1).to("cpu").double().numpy()


def _same(np, a, vals, sorted_vals):
    if a.min() != vals.min() or a.max() != vals.max():
        return None
    if np.array_equal(a, vals):
        return "values"
    if np.array_equal(np.sort(a), sorted_vals()):
        return "sorted"
    return None


def _match(np, x, vals, roots):
    n = vals.size
    ptr = _data_ptr(x)
    if not n or not np.isfinite(vals).all():
        return []
    cache = {}

    def sorted_vals():
        if "s" not in cache:
            cache["s"] = np.sort(vals)
        return cache["s"]

    same_storage, same_values = [], []
    for root in roots:
        params = list(root.named_parameters())
        for pname, p in params:
            for t, grad in ((p, False), (p.grad, True)):
                if t is None or t.numel() != n:
                    continue
                if ptr is not None and t.device.type == "cpu" and t.data_ptr() == ptr:
                    same_storage.append(_subject(root, pname, "identity", grad))
                elif not same_storage:
                    how = _same(np, _as_np(np, t), vals, sorted_vals)
                    if how:
                        same_values.append(_subject(root, pname, how, grad))
    if same_storage or same_values:
        return same_storage or same_values[:8]
    for root in roots:
        found = _match_concat(np, root, vals, sorted_vals)
        if found:
            return found
    return []


def _match_concat(np, root, vals, sorted_vals):
    """Consecutive parameters (all, weights only, or biases only) whose values together
    are the histogram's values, e.g. `torch.cat([p.flatten() for p in net.parameters()])`."""
    n = vals.size
    params = list(root.named_parameters())
    checks = 0
    for keep in (lambda name: True, lambda name: name.endswith("weight"),
                 lambda name: name.endswith("bias")):
        seq = [(name, p) for name, p in params if keep(name)]
        for i in range(len(seq)):
            total = 0
            for j in range(i, len(seq)):
                total += seq[j][1].numel()
                if total > n:
                    break
                if total == n and j > i:
                    checks += 1
                    if checks > 20:
                        return []
                    a = np.concatenate([_as_np(np, p) for _, p in seq[i:j + 1]])
                    if np.array_equal(np.sort(a), sorted_vals()):
                        return [_subject(root, name, "concat", False) for name, _ in seq[i:j + 1]]
    return []


# ---------------------------------------------------------------- figures


def _record_open(trigger):
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return
    for manager in list(helpers.Gcf.get_all_fig_managers()):
        fig = getattr(getattr(manager, "canvas", None), "figure", None)
        if fig is not None:
            _record_figure_safe(fig, trigger)


def _record_figure_safe(fig, trigger):
    try:
        _record_figure(fig, trigger, None)
    except Exception as exc:  # noqa: BLE001 - one bad figure must not hide the others
        _core.probe_error(trigger, exc)


def _signature(fig):
    sig = [len(fig.texts), len(fig.axes)]
    for ax in fig.axes[:_MAX_AXES]:
        sig.append((len(ax.get_children()), len(ax.lines), len(ax.patches), len(ax.images),
                    len(ax.collections), len(_hists.get(ax, ())), ax.get_title()))
    return tuple(sig)


def _record_figure(fig, trigger, fname):
    st = _core.state()
    sig = _signature(fig)
    prev = _recorded.get(fig)
    # show/savefig: once per cell while unchanged; cell end/exit: only if changed since
    if prev is not None and prev[1] == sig and (prev[0] == st.cell
                                                or trigger in ("cell-end", "exit")):
        return
    _recorded[fig] = (st.cell, sig)
    axes = [a for a in (_axes_info(ax) for ax in fig.axes[:_MAX_AXES]) if a["kind"] != "colorbar"]
    subjects = []
    for a in axes:
        for h in a.get("hists", ()):
            labels = [s["param"] + (".grad" if s["grad"] else "")
                      for s in h["subjects"]] or ["unknown"]
            subjects.extend(lbl for lbl in labels if lbl not in subjects)
    suptitle = getattr(fig, "_suptitle", None)
    event = {"trigger": trigger, "fig_kind": _figure_kind([a["kind"] for a in axes]),
             "n_axes": len(fig.axes), "axes": axes, "subjects": subjects,
             "suptitle": suptitle.get_text() if suptitle is not None else None,
             "saved_as": os.path.basename(os.fspath(fname))
             if isinstance(fname, (str, os.PathLike)) else None,
             "png": _save_png(fig, st)}
    genlog = sys.modules.get(_core.PROBE_NAME + "_genlog")  # generative labs: `origin`, `lines`
    if genlog is not None:
        event.update(genlog.figure_keys(fig))
    _core.emit("figure", event)


def _save_png(fig, st):
    if st.n_figures >= st.caps["max_figures"]:
        return None
    st.n_figures += 1
    name = "fig-%04d.png" % st.n_figures
    save = type(fig).savefig
    save = getattr(save, "__wrapped__", save) if getattr(save, "_dllab_wrapped", False) else save
    try:
        save(fig, os.path.join(st.figures_dir, name), dpi=72, format="png")
    except Exception as exc:  # noqa: BLE001 - the figure is still described without a picture
        _core.probe_error("png", exc)
        return None
    return name


def _axes_info(ax):
    if getattr(ax, "_colorbar", None) is not None:
        return {"kind": "colorbar"}
    hists = _hists.get(ax, [])
    info = {"title": ax.get_title() or ax.get_title("left") or None,
            "xlabel": ax.get_xlabel() or None, "ylabel": ax.get_ylabel() or None,
            "n_lines": len(ax.lines), "n_images": len(ax.images), "hists": hists[:8]}
    info["kind"] = "histogram" if hists else _kind_without_hist(ax)
    return info


def _kind_without_hist(ax):
    names = {type(c).__name__ for c in ax.collections}
    if "QuadMesh" in names:
        return "heatmap"
    if ax.images:
        im = ax.images[-1]
        shape = getattr(im.get_array(), "shape", ())
        cmap = getattr(getattr(im, "cmap", None), "name", "")
        if len(shape) == 2 and (im.colorbar is not None or len(ax.texts) >= 4
                                or (max(shape) <= 20 and cmap not in _GRAY)):
            return "heatmap"
        return "image"
    # A curve has 3+ points; several 2-point series (two epochs per run) compare runs too.
    sizes = [len(line.get_xydata()) for line in ax.lines]
    if any(n > 2 for n in sizes) or sum(n == 2 for n in sizes) >= 2:
        return "line"
    for container in getattr(ax, "containers", ()):
        if type(container).__name__ == "BarContainer" and len(container.patches) >= 2:
            return "histogram" if _adjacent(container.patches) else "bar"
    if "PathCollection" in names:
        return "scatter"
    return "other" if (ax.lines or ax.patches or ax.collections or ax.texts) else "empty"


def _adjacent(bars):
    """Bars that touch side by side: a histogram drawn with `bar` (seaborn, np.histogram)."""
    xs = sorted((b.get_x(), b.get_x() + b.get_width()) for b in bars)
    return all(abs(right - nxt) <= 1e-9 * max(1.0, abs(nxt))
               for (_, right), (nxt, _) in zip(xs, xs[1:]))


def _figure_kind(kinds):
    kinds = [k for k in kinds if k != "empty"]
    if not kinds:
        return "other"
    images = kinds.count("image")
    if images >= 2 and images * 2 >= len(kinds):
        return "image-grid"
    grouped = [k if k in ("histogram", "line", "heatmap", "image") else "other" for k in kinds]
    order = ("histogram", "line", "heatmap", "image", "other")
    return max(order, key=lambda k: (grouped.count(k), -order.index(k)))
