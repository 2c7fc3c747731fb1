"""The evidence probe: records what the student's code really did, from inside the kernel.

Loaded before the first student cell. Inside the sandbox nothing from the grader is
importable, so the host sends `bootstrap_source(...)` as text: it builds the modules
`_dllab_probe` (this file), `_dllab_probe_figures` (rec_figures.py), `_dllab_probe_torch`
(rec_torch.py), `_dllab_probe_loss` (rec_loss.py), `_dllab_probe_data` (rec_data.py),
`_dllab_probe_reg` (rec_reg.py: regularizers in effect), `_dllab_probe_export` and `_dllab_probe_runs` (rec_export.py, rec_runs.py, used only by
`export_for_verification` after the last cell), `_dllab_probe_gen`, `_dllab_probe_genlog` and
`_dllab_probe_arch` (rec_gen.py, rec_genlog.py, rec_arch.py: idle unless their cap is set) from their source and calls `install`. Tests may instead import `grader.probe.recorder` and call `install` directly.

Rules every patch here follows:
- the original is called first (or for `show`, right after recording) with the same
  arguments; its return value and exceptions pass through untouched;
- recording runs under `guarded()`: a probe bug becomes a `probe-error` event, never an
  exception in student code;
- nothing is imported eagerly: torch, torchvision and matplotlib are patched by a
  `sys.meta_path` post-import hook when (and each time) the student imports or reloads them;
- all state lives in modules registered in `sys.modules` under private names, so `%reset -f`,
  `globals().clear()` and `importlib.reload(...)` of the patched libraries leave it alone.

Output: one JSON object per line in `events_path` (see `grader.evidence` for the schema)
and PNG renderings of figures in `figures_dir`.
"""

from __future__ import annotations

import atexit
import importlib
import json
import math
import numbers
import os
import sys
import threading
import time

PROBE_NAME = "_dllab_probe"
VERSION = 1
_PARTS = (("figures", "rec_figures"), ("torch", "rec_torch"), ("loss", "rec_loss"),
          ("data", "rec_data"), ("export", "rec_export"), ("runs", "rec_runs"),
          ("gen", "rec_gen"), ("genlog", "rec_genlog"), ("arch", "rec_arch"), ("reg", "rec_reg"))
_MAX_PROBE_ERRORS = 50
_STR_CAP = 2000
_LIST_CAP = 2000

_state = None  # the single _State once installed
_tls = threading.local()  # .busy: the probe is recording on this thread (no re-entry)


class _State:
    """Everything the probe remembers; one instance, held by this module."""

    def __init__(self, events_path, figures_dir, caps, parts):
        self.events_path = events_path
        self.figures_dir = figures_dir
        self.caps = caps
        self.parts = parts
        self.pid = os.getpid()
        self.t0 = time.monotonic()
        self.lock = threading.RLock()
        self.fd = None
        self.next_id = 1
        self.n_events = 0
        self.n_bytes = 0
        self.n_errors = 0
        self.limit_hit = False
        self.n_figures = 0
        self.cell = None  # In[n] of the running cell
        self.guess = None  # IPython's execution_count when the cell started
        self.cell_offset = 0
        self.ip = None
        self.finder = None
        self.bound = {}  # ref -> tuple of user-namespace names last reported
        self.out = None  # the running cell's _OutCount (None: its stdout is not counted)


# ---------------------------------------------------------------- events


def emit(kind, fields=None):
    """Append one event; returns its id (used as a reference by later events) or None."""
    st = _state
    if st is None or os.getpid() != st.pid:  # never write from forked DataLoader workers
        return None
    with st.lock:
        if st.limit_hit:
            return None
        eid = st.next_id
        event = {"id": eid, "t": round(time.monotonic() - st.t0, 3), "cell": st.cell, "kind": kind}
        if fields:
            event.update(fields)
        try:
            line = json.dumps(_clean(event, 0), allow_nan=False, separators=(",", ":"))
        except Exception as exc:  # noqa: BLE001 - an unserializable event must not escape
            line = _error_line(eid, st, "serialize", exc, kind)
        if len(line) > st.caps["max_event_bytes"]:  # json.dumps escapes to ASCII: chars == bytes
            line = _error_line(eid, st, "event-too-large", None, kind)
        data = (line + "\n").encode("utf-8", "replace")
        caps = st.caps
        over_count = st.n_events + 1 >= caps["max_events"]
        if over_count or st.n_bytes + len(data) + 512 > caps["max_total_bytes"]:
            st.limit_hit = True  # the last line says why the record stops here
            data = (json.dumps({"id": eid, "t": event["t"], "cell": st.cell, "kind": "probe-limit",
                                "what": "events" if over_count else "bytes"}) + "\n").encode()
        _write(st, data)
        st.next_id += 1
        st.n_events += 1
        st.n_bytes += len(data)
        return None if st.limit_hit else eid


def _error_line(eid, st, where, exc, kind):
    return json.dumps({"id": eid, "t": round(time.monotonic() - st.t0, 3), "cell": st.cell,
                       "kind": "probe-error", "where": where, "of": kind,
                       "error": "" if exc is None else _exc_text(exc)})


def _write(st, data):
    for _attempt in range(2):
        try:
            if st.fd is None:
                st.fd = os.open(st.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(st.fd, data)
            return
        except OSError:
            st.fd = None  # closed behind our back (os.closerange) or disk full: retry once


def _exc_text(exc):
    return (type(exc).__name__ + ": " + str(exc))[:500]


def _clean(value, depth):
    """A JSON-safe copy: capped strings and lists, non-finite floats as None."""
    if depth > 8:
        raise ValueError("event nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value[:_STR_CAP]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k)[:200]: _clean(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value[:_LIST_CAP]]
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy/torch scalars
        return _clean(value.item(), depth + 1)
    raise TypeError("cannot record a " + type(value).__name__)


def guarded(where, fn, *args):
    """Run a recording step; never raises, never re-enters the probe on the same thread."""
    if getattr(_tls, "busy", False) or _state is None:
        return None
    _tls.busy = True
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - a probe bug must not reach student code
        probe_error(where, exc)
        return None
    finally:
        _tls.busy = False


def probe_error(where, exc):
    st = _state
    if st is None:
        return
    st.n_errors += 1
    if st.n_errors <= _MAX_PROBE_ERRORS:
        try:
            emit("probe-error", {"where": str(where), "error": _exc_text(exc)})
        except Exception:  # noqa: BLE001
            pass


def state():
    return _state


# ---------------------------------------------------------------- names in the user namespace


def user_ns():
    st = _state
    ip = st.ip if st is not None else None
    if ip is not None:
        return ip.user_ns
    main = sys.modules.get("__main__")
    return getattr(main, "__dict__", {})


def names_for(obj):
    """User-namespace variable names bound to `obj` (private names skipped)."""
    try:
        return [k for k, v in list(user_ns().items())
                if v is obj and isinstance(k, str) and not k.startswith("_")][:8]
    except Exception:  # noqa: BLE001 - a hostile namespace
        return []


def _bind_names():
    tracked = {}
    for part in _state.parts:
        for obj, ref in part.tracked():
            tracked[id(obj)] = ref
    if not tracked:
        return
    found = {}
    for k, v in list(user_ns().items()):
        if isinstance(k, str) and not k.startswith("_"):
            ref = tracked.get(id(v))
            if ref is not None:
                found.setdefault(ref, []).append(k)
    for ref, names in found.items():
        names = tuple(sorted(names)[:8])
        if _state.bound.get(ref) != names:
            _state.bound[ref] = names
            emit("bind", {"ref": ref, "names": list(names)})


# ---------------------------------------------------------------- what the cell printed


class _OutCount:
    """Characters the running cell has written to stdout, as the grader keeps them: consecutive
    stdout outputs joined and each line's carriage-return overwrites applied
    (grader.capture.collapse_cr, grader.execute's client). Equal to the characters written when
    nothing printed a '\r'. Offsets into the concatenated text of the cell's stdout outputs, as
    long as the cell's output was not cut (`metadata.dllab.output_truncated`)."""

    __slots__ = ("done", "line", "cr0", "cr1", "n")

    def __init__(self):
        self.done = 0  # kept characters of the finished lines, their '\n' included
        self.line = 0  # raw characters of the line being written
        self.cr0 = self.cr1 = -1  # the last two '\r' of that line (indices), or -1
        self.n = 0

    def add(self, text):
        parts = text.split("\n")
        for i, part in enumerate(parts):
            j1 = part.rfind("\r")
            if j1 >= 0:
                j0 = part.rfind("\r", 0, j1)
                self.cr0, self.cr1 = (self.line + j0 if j0 >= 0 else self.cr1), self.line + j1
            self.line += len(part)
            if i < len(parts) - 1:  # a '\n' ends the line
                self.done += self._kept() + 1
                self.line, self.cr0, self.cr1 = 0, -1, -1
        self.n = self.done + self._kept()

    def _kept(self):
        # what collapse_cr keeps of the line: all after its last '\r' that has something after it
        cut = self.cr1 if self.cr1 < self.line - 1 else self.cr0
        return self.line - cut - 1


def out_chars():
    """Characters the running cell has written to the notebook's stdout so far (_OutCount), or
    None when not counted (no IPython kernel, stdout replaced by the student)."""
    st = _state
    out = st.out if st is not None else None
    return out.n if out is not None else None


def _count_stdout():
    """A new count for the cell about to run: wraps the `write` of the kernel's stdout stream
    (an instance attribute, as IPython's own per-cell capture does: IPython puts back at the end
    of the cell what `write` was at its start, so the wrapper is made again for each cell; a
    stale one left by a cell IPython did not wrap passes through and is unwrapped here)."""
    st = _state
    st.out = None
    stream = sys.stdout
    if st.ip is None or type(stream).__name__ != "OutStream":
        return
    current = stream.write
    base = getattr(current, "_dllab_base", current)
    count = _OutCount()

    def write(string, *args, **kwargs):
        out = base(string, *args, **kwargs)
        if st.out is count and isinstance(string, str) and os.getpid() == st.pid:
            try:
                count.add(string)
            except Exception:  # noqa: BLE001 - never the student's problem
                pass
        return out

    write._dllab_base = base
    stream.write = write
    st.out = count


# ---------------------------------------------------------------- flushing and IPython events


def flush(reason):
    """Write aggregated state (optimizer steps, evaluations, names); idempotent."""
    if _state is None:
        return
    for part in _state.parts:
        guarded("flush-" + reason, part.flush, reason)
    guarded("bind", _bind_names)


def _ipython():
    mod = sys.modules.get("IPython")
    get = getattr(mod, "get_ipython", None)
    try:
        return get() if get is not None else None
    except Exception:  # noqa: BLE001
        return None


def _cell_number(ip):
    """The In[n] of the running cell. IPython 9 increments `execution_count` before running
    a cell, older ones after: read the number IPython itself is about to report from
    `run_cell_async`'s `result`, else correct `execution_count` by what post_run_cell saw."""
    frame = sys._getframe(1)
    for _ in range(60):
        if frame is None:
            break
        if frame.f_code.co_name == "run_cell_async":
            count = getattr(frame.f_locals.get("result"), "execution_count", None)
            if isinstance(count, int):
                return count
            break
        frame = frame.f_back
    count = getattr(ip, "execution_count", None)
    return count - _state.cell_offset if isinstance(count, int) else None


def _on_pre_run_cell(info=None):
    st = _state
    if st is None:
        return
    try:
        st.cell = _cell_number(st.ip)
        st.guess = getattr(st.ip, "execution_count", None)
    except Exception as exc:  # noqa: BLE001
        probe_error("pre-run-cell", exc)
    guarded("pre-run-cell", _keep_hooks_first)
    guarded("stdout-count", _count_stdout)


def _keep_hooks_first():
    # Our post_execute hook must see figures before the inline backend's flush closes them.
    cbs = _state.ip.events.callbacks.get("post_execute")
    if cbs is not None and cbs and cbs[0] is not _on_post_execute and _on_post_execute in cbs:
        cbs.remove(_on_post_execute)
        cbs.insert(0, _on_post_execute)
    if _state.finder not in sys.meta_path:
        sys.meta_path.insert(0, _state.finder)
    apply_patches()


def _on_post_execute():
    if _state is not None:
        for part in _state.parts:
            guarded("cell-end", part.cell_end)


def _on_post_run_cell(result=None):
    count = getattr(result, "execution_count", None)
    if _state is not None and isinstance(count, int):
        _state.cell = count
        if isinstance(_state.guess, int):
            _state.cell_offset = _state.guess - count
    flush("cell")


def _on_exit():
    if _state is None or os.getpid() != _state.pid:
        return
    for part in _state.parts:
        guarded("exit", part.at_exit)
    flush("exit")


def export_for_verification(folder=None):
    """Teardown entry (see rec_export.py): capture the trained model and the test split's
    description in `folder` (default: `verify/` next to the events); returns a summary line.
    Never raises."""
    if _state is None or os.getpid() != _state.pid:
        return "the probe is not installed"
    try:
        flush("verify")
        part = sys.modules[PROBE_NAME + "_export"]
        folder = folder or os.path.join(os.path.dirname(_state.events_path), "verify")
        return part.export(folder)
    except Exception as exc:  # noqa: BLE001 - the run's result must not depend on this
        return "export failed: " + _exc_text(exc)


def export_architecture(folder=None):
    """Teardown entry (see rec_arch.py): read each trained model's blocks and capture them in
    `folder` (default: `verify/` next to the events) as `arch.json` and `a<m>b<k>.pt`; returns a
    summary line, or None (nothing done) unless installed with `architecture`. Never raises."""
    if _state is None or os.getpid() != _state.pid or not _state.caps.get("architecture"):
        return None
    try:
        flush("verify")
        part = sys.modules[PROBE_NAME + "_arch"]
        folder = folder or os.path.join(os.path.dirname(_state.events_path), "verify")
        return part.export(folder)
    except Exception as exc:  # noqa: BLE001 - the run's result must not depend on this
        return "architecture export failed: " + _exc_text(exc)


def export_generative(folder=None):
    """Teardown entry (see rec_gen.py): capture the generators, discriminators and VAEs the
    notebook trained, in `folder` (default: `verify/` next to the events) as `gen.json` and
    `g<k>.pt` (`g<k>-encode.pt`, `g<k>-decode.pt`); returns a summary line, or None (nothing done) unless installed with
    `generative`. Never raises."""
    if _state is None or os.getpid() != _state.pid or not _state.caps.get("generative"):
        return None
    try:
        flush("verify")
        part = sys.modules[PROBE_NAME + "_gen"]
        folder = folder or os.path.join(os.path.dirname(_state.events_path), "verify")
        return part.export(folder)
    except Exception as exc:  # noqa: BLE001 - the run's result must not depend on this
        return "generative export failed: " + _exc_text(exc)


# ---------------------------------------------------------------- post-import hooks


class _Finder:
    """A meta-path finder that finds nothing itself: it lets the other finders find the
    spec of a module we patch and wraps its loader so the patches run after every
    import *and* every `importlib.reload` of that module."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names or fullname in _pending():
            return None
        _pending().add(fullname)
        try:
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _Loader(spec.loader)
            return spec
        except Exception:  # noqa: BLE001 - the import system asks the finders again itself
            return None
        finally:
            _pending().discard(fullname)


def _pending():
    s = getattr(_tls, "finding", None)
    if s is None:
        s = _tls.finding = set()
    return s


class _Loader:
    """Delegates to the real loader; puts it back on the module before running it."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        self.loader.exec_module(module)
        apply_patches()

    def __getattr__(self, name):
        return getattr(self.loader, name)


def apply_patches():
    """Patch every library already imported; idempotent and cheap, safe to call often."""
    if _state is None:
        return
    for part in _state.parts:
        try:  # not `guarded`: an import made while the probe records must still be patched
            part.patch()
        except Exception as exc:  # noqa: BLE001
            probe_error("patch", exc)
    # atexit runs handlers last-registered-first: stay ahead of pyplot's Gcf.destroy_all
    atexit.unregister(_on_exit)
    atexit.register(_on_exit)


# ---------------------------------------------------------------- install


def _load_parts():
    parts = []
    for short, filename in _PARTS:
        name = PROBE_NAME + "_" + short
        mod = sys.modules.get(name)
        if mod is None:
            if not __package__:
                raise ImportError("probe part " + name + " was not loaded")
            mod = importlib.import_module(__package__ + "." + filename)
            sys.modules[name] = mod
        parts.append(mod)
    return parts


def install(events_path: str, figures_dir: str, *, max_events: int = 20000,
            max_figures: int = 200, max_event_bytes: int = 64 * 1024,
            max_total_bytes: int = 16 * 2**20, max_runs: int = 6, generative: int = 0,
            architecture: int = 0, split_runs: int = 0) -> None:
    """Start recording to `events_path` (JSON lines) and `figures_dir` (PNGs).

    `max_runs`: training runs (optimizers that stepped, the newest) whose models the teardown
    captures for the host (the rubric's limits.captured_runs). `generative`: 1 when the lab
    measures generative models (the rubric's `generative:`): rec_gen and rec_genlog record and
    the teardown captures generators and VAEs; 0 leaves both parts idle. `architecture`: 1 when
    the lab reads residual/SE architectures (a `residual_architecture` item): rec_arch notes each
    model's input shape and the teardown reads and captures its blocks. `split_runs`: 1 when
    the lab's dataset is one the student splits into training and validation themselves
    (cats-vs-dogs): the teardown describes each run's two splits (rec_runs.export_splits). A
    second call in the same process does nothing.
    """
    global _state
    current = sys.modules.get(PROBE_NAME)
    if current is not None and getattr(current, "_state", None) is not None:
        return
    me = sys.modules.get(__name__)
    if me is None or vars(me) is not globals():  # e.g. exec'd into the user namespace
        raise ImportError("load the probe with bootstrap_source() or import it as a module")
    sys.modules[PROBE_NAME] = me
    events_path = os.path.abspath(os.fspath(events_path))
    figures_dir = os.path.abspath(os.fspath(figures_dir))
    os.makedirs(figures_dir, exist_ok=True)
    caps = {"max_events": int(max_events), "max_figures": int(max_figures),
            "max_event_bytes": int(max_event_bytes), "max_total_bytes": int(max_total_bytes),
            "max_runs": max(1, int(max_runs)), "generative": 1 if generative else 0,
            "architecture": 1 if architecture else 0, "split_runs": 1 if split_runs else 0}
    parts = _load_parts()
    st = _State(events_path, figures_dir, caps, parts)
    names = set()
    for part in parts:
        part.setup(me)
        if hasattr(part, "configure"):
            part.configure(caps)
        names.update(part.HOOK_MODULES)
    st.finder = _Finder(frozenset(names))
    st.ip = _ipython()
    _state = st
    st.cell = _cell_number(st.ip) if st.ip is not None else None
    emit("probe-start", {"version": VERSION, "pid": st.pid,
                         "python": sys.version.split()[0], "caps": caps,
                         "ipython": st.ip is not None})
    sys.meta_path.insert(0, st.finder)
    apply_patches()  # libraries imported before us (e.g. by the sandbox's startup code)
    if st.ip is not None:
        st.ip.events.register("pre_run_cell", _on_pre_run_cell)
        st.ip.events.register("post_run_cell", _on_post_run_cell)
        st.ip.events.callbacks["post_execute"].insert(0, _on_post_execute)


_BOOT = '''\
def __dllab_probe_boot():
    import sys, types
    if "_dllab_probe" not in sys.modules:
        for name, src in {sources!r}:
            mod = types.ModuleType(name)
            mod.__file__ = "<" + name + ">"
            sys.modules[name] = mod
            exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    sys.modules["_dllab_probe"].install({events_path!r}, {figures_dir!r}, **{caps!r})
__dllab_probe_boot()
del __dllab_probe_boot
'''


def bootstrap_source(*, events_path: str, figures_dir: str, **caps: int) -> str:
    """Host side: Python source that builds the probe in a kernel and installs it.

    `caps` are `install`'s keyword limits. The parts come before the core, which is
    registered last so that a half-built probe is never mistaken for an installed one.
    """
    unknown = set(caps) - {"max_events", "max_figures", "max_event_bytes", "max_total_bytes", "max_runs",
                           "generative", "architecture", "split_runs"}
    if unknown:
        raise TypeError("unknown probe caps: " + ", ".join(sorted(unknown)))
    here = os.path.dirname(os.path.abspath(__file__))
    sources = []
    for short, filename in _PARTS:
        with open(os.path.join(here, filename + ".py"), encoding="utf-8") as fh:
            sources.append((PROBE_NAME + "_" + short, fh.read()))
    with open(os.path.abspath(__file__), encoding="utf-8") as fh:
        sources.append((PROBE_NAME, fh.read()))
    return _BOOT.format(sources=sources, events_path=str(events_path),
                        figures_dir=str(figures_dir), caps=dict(caps))
