"""Probe part: generators, discriminators and VAEs: their inputs and outputs, captured after the last cell.

Runs inside the kernel as `_dllab_probe_gen`; see recorder.py for the rules. Idle unless the
probe was installed with `generative` (the rubric's `generative:` section).
"""

from __future__ import annotations

HOOK_MODULES = ()

_core = None
_on = False


def setup(core):
    global _core
    _core = core


def configure(caps):
    global _on
    _on = bool(caps.get("generative"))


def tracked():
    return ()


def patch():
    return None


def flush(reason):
    return None


def cell_end():
    return None


def at_exit():
    return None


def export(folder):
    """Write `gen.json` and the captured models to `folder`; returns a one-line summary."""
    return "no generative model captured"
