"""The `residual_architecture` check kind: a ResNet or SE-ResNet as the model itself is built.

Reads each trained run's `architecture` (grader.verify.arch: the probe's graph reading of its
blocks, proved by the host's functional test). A block has a skip when zeroing its residual
branch left its input (or its projection shortcut's output) and none when that left a constant;
where the test did not run, the graph says so alone (and the message says it). An SE gate has
its sigmoid when forcing its last FC to a large bias made the block its plain self.

ResNet (He et al., CVPR 2016): blocks whose input is added to their output, a 1x1 projection
shortcut (stride 2 where the map halves) exactly where the feature map changes size or channels,
identity shortcuts elsewhere. SE (Hu et al., CVPR 2018): global average pooling -> FC -> ReLU ->
FC -> sigmoid -> channel-wise scaling of the residual branch, before the addition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grader.checks import params as P
from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, where


def _skip(block: Mapping[str, Any], functional: Mapping[str, Any]) -> tuple[bool | None, bool]:
    """(has a skip: True/False/None unknown, proved by the functional test)."""
    f = functional.get(str(block.get("name"))) or {}
    if f.get("skip") in ("identity", "projection"):
        return True, True
    if f.get("skip") == "none":
        return False, True
    if block.get("residual") is True:
        return True, False
    if block.get("kind") == "plain":
        return False, False
    return None, False


def _sigmoid(block: Mapping[str, Any], functional: Mapping[str, Any]) -> tuple[bool | None, bool]:
    f = functional.get(str(block.get("name"))) or {}
    if f.get("gate") in ("sigmoid", "no-sigmoid"):
        return f["gate"] == "sigmoid", True
    gate = block.get("gate") or {}
    return (gate.get("sigmoid") if isinstance(gate.get("sigmoid"), bool) else None), False


def _names(blocks: Sequence[Mapping[str, Any]], n: int = 6) -> str:
    names = [str(b.get("name")) for b in blocks]
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _how(arch: Mapping[str, Any], blocks: Sequence[Mapping[str, Any]], proved: bool) -> str:
    if proved:
        f = (arch.get("functional") or {}).get(str(blocks[0].get("name"))) or {}
        return f"confirmed by the grader's functional test: {f.get('how', '')}".rstrip(": ")
    why = arch.get("functional_reason") or ((arch.get("functional") or {}).get(str(blocks[0].get("name"))) or {}).get("how")
    return f"read from the model's graph ({arch.get('graph') or '?'}); the functional test did not run" + (
        f" ({why})" if why else "")


def _score(run: Mapping[str, Any], kind: str) -> tuple[int, int, int]:
    arch = run.get("architecture") or {}
    blocks = arch.get("blocks") or []
    fn = arch.get("functional") or {}
    skips = sum(1 for b in blocks if _skip(b, fn)[0])
    gates = sum(1 for b in blocks if b.get("gate"))
    return (gates if kind == "se" else 0, skips, len(blocks))


def _runs(ctx: CheckContext) -> list[tuple[Mapping, Mapping]]:
    out = []
    for ev in ctx.evidence:
        for r in ev.get("runs") or ():
            if isinstance(r, Mapping) and r.get("status") in ("trained", "superseded") and r.get("architecture"):
                out.append((ev, r))
    return out


def _shrink_kind(b: Mapping[str, Any]) -> str | None:
    """`spatial` (H, W change), `channels` (only C changes), `none`, or None unknown."""
    i, o = b.get("in_shape"), b.get("out_shape")
    if not (isinstance(i, list) and isinstance(o, list)) or len(i) != len(o):
        return None
    if i[1:] != o[1:]:
        return "spatial"
    return "channels" if i[:1] != o[:1] else "none"


def _projection_problems(blocks: Sequence[Mapping[str, Any]], fn: Mapping[str, Any]) -> list[str]:
    out = []
    for b in blocks:
        has, _ = _skip(b, fn)
        shrink = _shrink_kind(b)
        if not has or shrink is None:
            continue
        proj, name = b.get("projection") or {}, b.get("name")
        tested = (fn.get(str(name)) or {}).get("skip")
        short = tested if tested in ("identity", "projection") else b.get("shortcut")
        if shrink == "none" and short == "projection":
            out.append(f"{name} keeps its map ({_shape(b)}) but has a projection shortcut (an identity fits)")
        elif shrink != "none" and short != "projection":
            out.append(f"{name} changes its map ({_shape(b)}) without a projection shortcut")
        elif shrink != "none":
            want = 2 if shrink == "spatial" else 1
            if proj.get("kernel") not in (1, [1, 1]) or proj.get("stride") not in (want, [want, want]):
                out.append(f"{name}'s projection is a {proj.get('kernel')}x{proj.get('kernel')} convolution with "
                           f"stride {proj.get('stride')}, not 1x1 with stride {want} ({_shape(b)})")
    return out


def _shape(b: Mapping[str, Any]) -> str:
    def one(s: Any) -> str:
        return "x".join(map(str, s)) if isinstance(s, list) else "?"
    return f"{one(b.get('in_shape'))} -> {one(b.get('out_shape'))}"


def _summary(arch: Mapping[str, Any], blocks: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    if isinstance(arch.get("depth"), int):
        parts.append(f"depth {arch['depth']}")
    if isinstance(arch.get("params"), int):
        parts.append(f"{arch['params']:,} trainable parameters")
    kinds = []
    for b in blocks[:8]:
        proj = b.get("projection") or {}
        short = (f"projection {proj.get('kernel')}x{proj.get('kernel')}/{proj.get('stride')}"
                 if b.get("shortcut") == "projection" else b.get("shortcut") or "?")
        kinds.append(f"{b.get('name')} {b.get('kind') or '?'} ({short})")
    return (", ".join(parts) + "; " if parts else "") + f"{len(blocks)} blocks: " + "; ".join(kinds)


@P.takes(P.ResidualArchitecture)
def residual_architecture(ctx: CheckContext, params: P.ResidualArchitecture) -> Outcome:
    """See the module docstring; the run judged is the trained one that best shows `params.kind`."""
    p = params
    want, min_blocks, projection, proj_credit = p.kind, p.min_blocks, p.projection, p.projection_credit
    min_depth, max_depth, max_params, limits_credit = p.min_depth, p.max_depth, p.max_params, p.limits_credit
    se_position, se_every_block = p.se_position, p.se_every_block
    runs = _runs(ctx)
    if not runs:
        return Outcome("manual", 0.0, "The grader found no trained model whose architecture it read; a TA will look "
                                      "at the model.")
    ev, run = max(runs, key=lambda p: _score(p[1], want))
    arch, cells = run["architecture"], run.get("cells") or []
    at = (where(ev, cells[-1] if cells else None),)
    if arch.get("reason"):
        return Outcome("manual", 0.0, f"The grader could not read the model's architecture ({arch['reason']}); a TA "
                                      f"will look at it.", evidence=at)
    blocks = [b for b in arch.get("blocks") or [] if isinstance(b, Mapping)]
    fn = arch.get("functional") or {}
    cell = f" (In[{cells[-1]}])" if cells else ""
    if not blocks:
        adds = arch.get("adds_outside_blocks")
        if adds:
            return Outcome("manual", 0.0, f"{run.get('name')}{cell}: no block class was found, but the model's own "
                                          f"forward adds {adds} tensors; a TA will check its skip connections.",
                           evidence=at)
        if adds == 0:
            return Outcome("fail", 0.0, f"{run.get('name')}{cell}: no residual block: the model has no block of "
                                        f"convolutions and its forward adds no input to an output.", evidence=at,
                           own_words=True)
        return Outcome("manual", 0.0, f"{run.get('name')}{cell}: the grader found no block and could not read the "
                                      f"model's graph; a TA will look at it.", evidence=at)
    known = [(b, *_skip(b, fn)) for b in blocks]
    noskip = [b for b, has, _ in known if has is False]
    if noskip:
        proved = all(p for b, has, p in known if has is False)
        return Outcome("fail", 0.0, f"{run.get('name')}{cell}: {len(noskip)} of {len(blocks)} blocks have no skip "
                                    f"connection ({_names(noskip)}): {_how(arch, noskip, proved)}. A ResNet block adds "
                                    f"its input to its output.", evidence=at, own_words=True)
    if all(has is None for _, has, _ in known):
        return Outcome("manual", 0.0, f"{run.get('name')}{cell}: the grader could neither read the blocks' graphs nor "
                                      f"test them ({_names(blocks)}); a TA will look at them.", evidence=at)
    residual = [b for b, has, _ in known if has]
    proved = all(p for _, has, p in known if has)
    found = f"{run.get('name')}{cell}: {_summary(arch, blocks)}."
    problems: list[str] = []
    fraction = 1.0
    if len(residual) < min_blocks:
        problems.append(f"{len(residual)} residual blocks, fewer than the {min_blocks} asked for")
        fraction = min(fraction, len(residual) / min_blocks)
    if projection:
        wrong = _projection_problems(blocks, fn)
        if wrong:
            problems += wrong
            fraction = min(fraction, proj_credit)
    limits = []
    depth, count = arch.get("depth"), arch.get("params")
    if min_depth is not None and isinstance(depth, int) and depth < min_depth:
        limits.append(f"depth {depth} is under {min_depth}")
    if max_depth is not None and isinstance(depth, int) and depth > max_depth:
        limits.append(f"depth {depth} is over {max_depth}")
    if max_params is not None and isinstance(count, int) and count > max_params:
        limits.append(f"{count:,} trainable parameters, over {max_params:,}")
    if limits:
        problems += limits
        fraction = min(fraction, limits_credit)
    if want == "se":
        gated = [b for b in blocks if b.get("gate")]
        if not gated:
            return Outcome("fail", 0.0, f"{found} No SE block was found: no block scales its features by a gate "
                                        f"computed from their global average (pool -> FC -> ReLU -> FC -> sigmoid).",
                           evidence=at, own_words=True)
        sig = [(b, *_sigmoid(b, fn)) for b in gated]
        bad = [b for b, s, _ in sig if s is False]
        if bad:
            proved_gate = all(p for b, s, p in sig if s is False)
            how = (f"confirmed by the grader's functional test: {(fn.get(str(bad[0].get('name'))) or {}).get('how')}"
                   if proved_gate else f"read from the model's graph ({arch.get('graph')}): after its last FC comes "
                                       f"{', '.join((bad[0].get('gate') or {}).get('after_fc') or []) or 'nothing'}")
            return Outcome("fail", 0.0, f"{found} The SE gate of {_names(bad)} has no sigmoid, so it does not gate "
                                        f"the channels between 0 and 1: {how}.", evidence=at, own_words=True)
        misplaced = [b for b in gated if (b.get("gate") or {}).get("position") not in ("branch", None)]
        if misplaced and se_position == "branch":
            problems.append(f"the SE gate of {_names(misplaced)} sits "
                            f"{(misplaced[0].get('gate') or {}).get('position')}, not on the residual branch before "
                            f"the addition")
            fraction = min(fraction, proj_credit)
        if len(gated) < len(residual) and se_every_block:
            problems.append(f"only {len(gated)} of {len(residual)} residual blocks have an SE gate")
            fraction = min(fraction, proj_credit)
        proved = proved and all(p for _, _, p in sig)
    how = ("skips" + (" and gates" if want == "se" else "") + " confirmed by the grader's functional test"
           if proved else "read from the model's graph; the functional test did not confirm every block")
    flags = () if proved else (UNCONFIRMED,)
    if problems:
        return Outcome("partial", fraction, f"{found} {'; '.join(problems)[:600]} ({how}).", evidence=at, flags=flags,
                       own_words=True)
    return Outcome("pass", 1.0, f"{found} ({how}).", evidence=at, flags=flags, own_words=True)
