"""Code run in the student's kernel before the first student cell (not recorded as a cell).

`startup_source` returns Python source text: nothing from the grader is importable inside
the sandbox. It sets `sys.argv` (so `argparse` sees no arguments), keeps output messages
small, maps interactive matplotlib backends (`%matplotlib widget`, `notebook`, `qt`,
`matplotlib.use('TkAgg')`) to the inline one, makes `os._exit()` flush what was printed,
marks writes that hit the file size limit, and sets up what each mounted dataset needs (its
spec's `sandbox_startup`: the checksums of a CIFAR-10 stand-in, so that torchvision's own loader
accepts it) from the source of that spec's two self-contained functions: `read` at once (the
standard library only), `apply` when the student's code imports the module it patches
(`_after_import`), so that a notebook that never imports torchvision never pays for its import.
The evidence probe (grader/probe/recorder.py) runs after it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from grader.datasets import StartupHook

_TEMPLATE = '''\
import sys as __dllab_sys
__dllab_sys.argv = [{argv0!r}]
del __dllab_sys


def __dllab_flush_often():
    # ipykernel sends stdout every 0.2 s however much piled up; a fast print loop can then
    # send one message bigger than the grader accepts. Flushing once a MiB is pending keeps
    # messages small and slows the printer down instead. (Patched where `write` calls it:
    # IPython re-wraps `write` itself around every cell.)
    from ipykernel.iostream import OutStream
    schedule = OutStream._schedule_flush

    def schedule_or_flush(self):
        buffers = getattr(self, "_buffers", None)
        try:
            pending = sum(b.tell() for b in buffers.values()) if buffers else 0
        except Exception:
            pending = 0
        if pending > {flush_bytes}:
            self.flush()
        else:
            schedule(self)

    OutStream._schedule_flush = schedule_or_flush


__dllab_flush_often()
del __dllab_flush_often


def __dllab_inline_figures():
    # Interactive matplotlib backends need a browser widget (ipympl, nbagg) or a display (Qt,
    # Tk) that the grader has not: `%matplotlib widget` fails, `notebook` draws no PNG, and
    # `matplotlib.use('TkAgg')` raises. Figures are graded from inline PNGs, so those
    # requests get the inline backend; non-interactive ones (agg, pdf, svg) are kept. Nothing
    # is printed into the student's cells: the host logs the mapping (execute._backend_notes).
    import functools
    import sys

    ip = get_ipython()
    inline = "module://matplotlib_inline.backend_inline"
    gui = {gui!r}

    def interactive(name):
        return name.lower() in gui or name.startswith("module://ipympl")

    try:
        # IPython registers %matplotlib lazily: the entry would resolve to this wrapper.
        from IPython.core.magics.pylab import PylabMagics
        original = PylabMagics(shell=ip).matplotlib
    except Exception:
        original = None
    if original is not None:
        def matplotlib(line=""):
            words = line.split()
            if any(w in ("-l", "--list") for w in words):
                return original(line)
            names = [i for i, w in enumerate(words) if not w.startswith("-")]
            if not names:  # a bare %matplotlib picks a GUI backend
                words.append("inline")
            elif interactive(words[names[0]]):
                words[names[0]] = "inline"
            return original(" ".join(words))
        matplotlib.__doc__ = getattr(original, "__doc__", None)
        ip.register_magic_function(matplotlib, "line", "matplotlib")

    def patch_use():
        mpl = sys.modules.get("matplotlib")
        use = getattr(mpl, "use", None)
        if use is None or getattr(use, "_dllab_inline", False):
            return

        @functools.wraps(use)
        def use_inline(backend, *args, **kwargs):
            if isinstance(backend, str) and interactive(backend):
                backend = inline
            return use(backend, *args, **kwargs)
        use_inline._dllab_inline = True
        mpl.use = use_inline

    def before_cell(info=None):
        try:
            # A cell that names matplotlib may call matplotlib.use() right after importing
            # it: import it first (the probe's import hook still sees it) to patch `use`.
            if "matplotlib" not in sys.modules and "matplotlib" in str(getattr(info, "raw_cell", "")):
                import matplotlib  # noqa: F401
            patch_use()
        except Exception as exc:  # never the student's problem
            print("dllab startup: matplotlib backend patch failed:", repr(exc), file=sys.__stderr__)

    ip.events.register("pre_run_cell", before_cell)


__dllab_inline_figures()
del __dllab_inline_figures


def __dllab_exits(fsize_marker):
    import os
    import signal
    import sys
    import time

    kernel = os.getpid()
    original = os._exit

    def _exit(status):
        # `python script.py` shows what it printed before os._exit(); the kernel sends its
        # output every 0.2 s, so without this the last prints are lost with the process.
        # Only the kernel itself: a forked child (a multiprocessing worker) exits as before.
        if os.getpid() == kernel:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            time.sleep(0.2)  # ZeroMQ sends from its own thread: let the message leave
        original(status)

    _exit.__doc__ = original.__doc__
    os._exit = _exit
    if fsize_marker:
        # A write past RLIMIT_FSIZE fails with EFBIG, which torch.save reports only as
        # "unexpected pos" from inline_container.cc; the signal the kernel sends with it
        # leaves a mark the grader reads, so the failure is named as the file size limit.
        def on_xfsz(signum, frame):
            try:
                with open(fsize_marker, "a") as f:
                    f.write("x")
            except OSError:
                pass

        signal.signal(signal.SIGXFSZ, on_xfsz)


__dllab_exits({fsize_marker!r})
del __dllab_exits
'''

GUI_BACKENDS = (
    # %matplotlib GUI loop names
    "qt", "qt4", "qt5", "qt6", "tk", "gtk", "gtk3", "gtk4", "wx", "osx", "auto",
    # backends that need a display or a browser widget (matplotlib's interactive ones)
    "widget", "ipympl", "notebook", "nbagg", "webagg", "macosx", "qtagg", "qtcairo", "qt5agg",
    "qt5cairo", "tkagg", "tkcairo", "gtk3agg", "gtk3cairo", "gtk4agg", "gtk4cairo", "wxagg", "wxcairo",
)
"""Lower-case names mapped to the inline backend in the kernel."""

_HOOK_TEMPLATE = '''\
{read_source}
{apply_source}
def __dllab_hook(roots):
    import sys

    found = []
    for root in roots:
        try:
            value = {read}(root)
        except Exception as exc:
            print("dllab startup: {doing}", root, "failed:", repr(exc))
            continue
        if value is None:
            print("dllab startup: {missing}", root)
        else:
            found.append((root, value))

    def apply_all(module, apply={apply}):
        for root, value in found:
            try:
                apply(module, value)
            except Exception as exc:  # in the student's import: the kernel's log, not the cell's output
                print("dllab startup: {doing}", root, "failed:", repr(exc), file=sys.__stderr__)

    if found:
        __dllab_after_import({module!r}, apply_all)


__dllab_hook({roots!r})
del {read}, {apply}, __dllab_hook
'''


def _after_import(name: "str", callback: "Callable[[ModuleType], None]") -> None:
    """Call `callback(module)` after each import (and reload) of the module `name` from now on,
    and at once when it is already imported. Self-contained: its source runs in the kernel.

    A `sys.meta_path` finder that finds nothing itself, as the probe's (grader.probe.recorder
    `_Finder`), with which it chains: the probe installs its own first in the list afterwards,
    and each asks the other finders but itself, so each wraps the loader the other returns and
    both hooks run after the module's code. What the callback raises is printed on the kernel's
    own stderr (the run's log.txt): the student's import goes on.
    """
    import sys
    import threading

    finding = threading.local()  # this thread is asking the other finders for `name`

    class Loader:
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
            run(module)

        def __getattr__(self, attr):
            return getattr(self.loader, attr)

    class Finder:
        def find_spec(self, fullname, path=None, target=None):
            if fullname != name or getattr(finding, "busy", False):
                return None
            finding.busy = True
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
                    spec.loader = Loader(spec.loader)
                return spec
            except Exception:  # the import system asks the finders again itself
                return None
            finally:
                finding.busy = False

    def run(module):
        try:
            callback(module)
        except Exception as exc:  # never the student's error
            print("dllab startup: after importing", name, "failed:", repr(exc), file=sys.__stderr__)

    sys.meta_path.insert(0, Finder())
    if sys.modules.get(name) is not None:
        run(sys.modules[name])


def startup_source(*, argv0: str, hooks: Sequence[tuple[StartupHook | None, Sequence[str]]] = (),
                   script_path: str | None = None, fsize_marker: str | None = None) -> str:
    """Source to run first in the kernel.

    `argv0` becomes `sys.argv[0]` (the only element); `hooks` are the mounted datasets' startup
    hooks (grader.datasets.DatasetSpec.sandbox_startup: a CIFAR-10 stand-in's checksums, which
    torchvision must accept), each with the sandbox paths of its mounted copies;
    `script_path`, for a `.py` run as cells, becomes `__file__`, as `python script.py` sets it
    (`os.path.dirname(__file__)` is a common way to find files next to the script);
    `fsize_marker`, a writable file's path, grows by a byte each time a write hits the file
    size limit (SIGXFSZ). `os._exit()` in the kernel flushes what was printed first.
    """
    source = _TEMPLATE.format(argv0=argv0, flush_bytes=1 << 20, gui=sorted(GUI_BACKENDS),
                              fsize_marker=fsize_marker)
    if script_path is not None:
        source += f"__file__ = {script_path!r}\n"
    return source + hooks_source(hooks)


def hooks_source(hooks: Sequence[tuple[StartupHook | None, Sequence[str]]]) -> str:
    """The part of `startup_source` that sets up the mounted datasets (`hooks`, as there): each
    hook's `read` of each copy at once, its `apply` on the student's import of its module.
    Empty when no hook has a copy. Also what a bare Jupyter run needs to read the stand-ins
    (bench/bench_profile.py puts it in IPython's start-up folder)."""
    source = ""
    used = [(hook, roots) for hook, roots in hooks if hook is not None and roots]
    if used:
        source += inspect.getsource(_after_import).replace("def _after_import(", "def __dllab_after_import(", 1)
    for hook, roots in used:
        source += _HOOK_TEMPLATE.format(
            read_source=inspect.getsource(hook.read),
            read=hook.read.__name__,
            apply_source=inspect.getsource(hook.apply),
            apply=hook.apply.__name__,
            module=hook.module,
            roots=list(roots),
            missing=hook.missing,
            doing=hook.doing,
        )
    if used:
        source += "del __dllab_after_import\n"
    return source
