"""Code run in the student's kernel before the first student cell (not recorded as a cell).

`startup_source` returns Python source text: nothing from the grader is importable inside
the sandbox. It sets `sys.argv` (so `argparse` sees no arguments), keeps output messages
small, maps interactive matplotlib backends (`%matplotlib widget`, `notebook`, `qt`,
`matplotlib.use('TkAgg')`) to the inline one, makes `os._exit()` flush what was printed,
marks writes that hit the file size limit, and runs what each mounted dataset needs set up
first (its spec's `sandbox_startup`: the checksums of a CIFAR-10 stand-in, so that torchvision's
own loader accepts it), by running the source of that self-contained function.
The evidence probe (grader/probe/recorder.py) runs after it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
{function_source}
for __dllab_root in {roots!r}:
    try:
        if not {function}(__dllab_root):
            print("dllab startup: {missing}", __dllab_root)
    except Exception as __dllab_exc:
        print("dllab startup: {doing}", __dllab_root, "failed:",
              repr(__dllab_exc))
del {function}, __dllab_root
'''


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
    for hook, roots in hooks:
        if hook is None or not roots:
            continue
        source += _HOOK_TEMPLATE.format(
            function_source=inspect.getsource(hook.function),
            function=hook.function.__name__,
            roots=list(roots),
            missing=hook.missing,
            doing=hook.doing,
        )
    return source
