"""Probe part: the loss function each training session computed, and the sum of its values.

Runs inside the kernel as `_dllab_probe_loss`; see recorder.py for the rules. Two ways a notebook
computes a loss are seen:
- a loss module (an instance of a `torch.nn.modules.loss._Loss` subclass: `nn.CrossEntropyLoss()`,
  `nn.MSELoss()`, a student class deriving from one of them): each such class of torch that defines
  `forward` has it wrapped; the name recorded is the instance's class (`CrossEntropyLoss`, or the
  student's subclass);
- a loss function of `torch.nn.functional` (LOSS_FUNCTIONS: `F.cross_entropy`, `F.nll_loss`, ...),
  wrapped in that module; the name recorded is the function's (`cross_entropy`).
A loss computed inside another one (CrossEntropyLoss.forward calls F.cross_entropy) counts once,
as the outer one. Each call is credited to the session of the newest model forward pass (rec_torch's
`_last`: the model, the loader pass and the mode whose output the loss is most likely computed on).
A session keeps the first loss name it saw as its `loss`; calls of that loss add their value (a
detached tensor, averaged when unreduced) to `_lsum` on its device and count in `loss_n`, so no
batch waits for the GPU; rec_torch's `_flush_sessions` turns `_lsum` into the float `loss_sum`
once, when the session is written. A student loss class that is no `_Loss` (an `nn.Module` of its
own) is seen only through the functions of `torch.nn.functional` it calls.
"""

from __future__ import annotations

import numbers
import sys
import types

HOOK_MODULES = ("torch", "torch.nn.functional", "torch.nn.modules.loss")

LOSS_FUNCTIONS = (
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div", "poisson_nll_loss",
    "gaussian_nll_loss", "soft_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss",
    "multilabel_margin_loss", "hinge_embedding_loss", "cosine_embedding_loss",
    "margin_ranking_loss", "triplet_margin_loss", "ctc_loss")
"""The functions of torch.nn.functional recorded as losses."""

_core = None
_t = None  # the torch part: `wrap` and the newest session (`_last`)
_depth = [0]  # loss calls in progress (a module loss calling its functional one counts once)


def setup(core):
    global _core, _t
    _core = core
    _t = sys.modules[core.PROBE_NAME + "_torch"]


def tracked():
    return ()


def flush(reason):
    return None


def cell_end():
    return None


def at_exit():
    return None


def patch():
    fm = sys.modules.get("torch.nn.functional")
    if fm is not None:
        for name in LOSS_FUNCTIONS:
            if callable(fm.__dict__.get(name)):
                _t.wrap(fm, name, _make_call(lambda orig, args: orig.__name__))
    lm = sys.modules.get("torch.nn.modules.loss")
    base = getattr(lm, "_Loss", None)
    if base is None:
        return
    for obj in list(vars(lm).values()):
        if (isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == lm.__name__
                and "forward" in obj.__dict__):
            _t.wrap(obj, "forward", _make_call(lambda orig, args: type(args[0]).__name__))


def _make_call(name_of):
    def make(orig):
        _dllab_call, _dllab_orig, _dllab_name_of = _call, orig, name_of

        def call(*args, **kwargs):
            return _dllab_call(_dllab_orig, _dllab_name_of, args, kwargs)
        # TorchScript compiles a call to the wrapper from the original's source (inspect follows
        # __wrapped__) and resolves its names through the wrapper's closure and globals: the
        # globals must be the original's (F.cross_entropy needs has_torch_function_variadic)
        return types.FunctionType(call.__code__, orig.__globals__, call.__name__, None, call.__closure__)
    return make


def _call(orig, name_of, args, kwargs):
    if _depth[0] or _compiling():  # torch.compile tracing the loss: its values are fake tensors
        return orig(*args, **kwargs)
    _depth[0] += 1
    try:
        out = orig(*args, **kwargs)
    finally:
        _depth[0] -= 1
    _core.guarded("loss", _note_loss, name_of(orig, args), out)
    return out


def _compiling():
    compiler = getattr(sys.modules.get("torch"), "compiler", None)
    check = getattr(compiler, "is_compiling", None)
    return bool(check()) if check is not None else False


def _note_loss(name, out):
    session = _t._last[0]
    if session is None:
        return
    if session.get("loss") is None:
        session["loss"] = str(name)[:100]
    elif session["loss"] != name:  # a second loss term (a penalty): its values are not summed in
        return
    if hasattr(out, "detach") and hasattr(out, "numel"):
        value = out.detach()  # unreduced (reduction='none'): its mean; else a copy, never an alias
        value = value.float().mean() if value.numel() != 1 else value.reshape(()).float().clone()
    elif isinstance(out, numbers.Real) and not isinstance(out, bool):
        value = float(out)
    else:
        return
    acc = session.get("_lsum")
    session["_lsum"] = value if acc is None else acc + value
    session["loss_n"] = session.get("loss_n", 0) + 1
