"""Code run in the student's kernel before the first student cell (not recorded as a cell).

`startup_source` returns Python source text: nothing from the grader is importable inside
the sandbox. For now it sets `sys.argv` (so `argparse` sees no arguments) and registers the
checksums of a CIFAR-10 stand-in so torchvision's own loader accepts it, by running the
source of `grader.datasets.register_cifar10_checksums` (written to be self-contained for
exactly this). A later issue adds the evidence probe.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

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
'''

_CIFAR_TEMPLATE = '''\
{function_source}
for __dllab_root in {cifar_roots!r}:
    try:
        if not register_cifar10_checksums(__dllab_root):
            print("dllab startup: no synthetic CIFAR-10 manifest under", __dllab_root)
    except Exception as __dllab_exc:
        print("dllab startup: registering CIFAR-10 checksums for", __dllab_root, "failed:",
              repr(__dllab_exc))
del register_cifar10_checksums, __dllab_root
'''


def startup_source(*, argv0: str, cifar_roots: Sequence[str] = ()) -> str:
    """Source to run first in the kernel.

    `argv0` becomes `sys.argv[0]` (the only element); `cifar_roots` are the sandbox paths of
    mounted CIFAR-10 stand-ins whose manifest checksums torchvision must accept.
    """
    source = _TEMPLATE.format(argv0=argv0, flush_bytes=1 << 20)
    if cifar_roots:
        from grader.datasets import register_cifar10_checksums

        source += _CIFAR_TEMPLATE.format(
            function_source=inspect.getsource(register_cifar10_checksums),
            cifar_roots=list(cifar_roots),
        )
    return source
