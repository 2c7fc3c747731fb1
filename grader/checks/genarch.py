"""The `generative_architecture` check kind: the handout's diagrams, read from the graphs the
grader captured (grader.verify.generative `facts`: op counts, conv layers with kernel and
stride) and from what the probe saw each model take (grader.probe.rec_gen capture records).

DCGAN (Radford et al., ICLR 2016): a generator of transposed convolutions with BatchNorm and
ReLU, a discriminator of strided convolutions with LeakyReLU. cGAN (Mirza & Osindero 2014): the
label fed to both networks. VAE (Kingma & Welling 2014): an encoder giving mu and logvar and a
forward that samples z = mu + exp(logvar / 2) * eps. Each requirement is found, missing, or
unknown (the grader could not see it: a capture failed, an op list is incomplete); a missing one
costs its share, an unknown one sends the item to a TA rather than to a fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grader import genmeasures as gm
from grader.checks import params as P
from grader.checks.base import CheckContext, Outcome, where
from grader.checks.generative import LABEL_WORDS, Picked, _all, _entries, _failed, _gen, _layers, _ops, _verdict, pick
from grader.checks.training import finite


@dataclass(frozen=True)
class Need:
    """One requirement of the diagram: found (True), missing (False) or unknown (None)."""

    what: str
    found: bool | None
    detail: str = ""


def _facts(p: Picked) -> Mapping:
    f = p.measure.get("facts")
    return f if isinstance(f, Mapping) else {}


def _has(p: Picked, what: str, test: Any) -> Need:
    """Whether an op whose token passes `test` is in the model's graph: missing only when the
    grader read the whole op list."""
    facts = _facts(p)
    if any(test(t) for t in _ops(facts)):
        return Need(what, True)
    complete = facts.get("ops_complete") is True and bool(_ops(facts))
    return Need(what, False if complete else None, "" if complete else _unread(p))


def _unread(p: Picked) -> str:
    why = p.measure.get("facts_reason")
    return f"the grader could not read its graph: {str(why)[:160]}" if why else \
        "the grader could not read its whole graph"


def _strided(layer_stride: object) -> bool:
    strides = layer_stride if isinstance(layer_stride, (list, tuple)) else [layer_stride]
    return bool(strides) and all(finite(s) and s >= 2 for s in strides)


def _stride_conv(p: Picked) -> Need:
    facts, what = _facts(p), "strided convolutions (stride 2) in the discriminator"
    convs = [s for kind, s in _layers(facts) if kind == "conv"]
    if any(_strided(s) for s in convs):
        return Need(what, True)
    if isinstance(facts.get("layers"), list) and facts.get("ops_complete") is True:
        pooled = sorted(t for t in _ops(facts) if "pool" in t)
        return Need(what, False, (f"its convolutions have strides {', '.join(map(str, convs))}" if convs
                                  else "it has no convolution")
                    + (f"; it downsamples by pooling ({', '.join(pooled)}), which the DCGAN replaces with strides"
                       if pooled else ""))
    return Need(what, None, _unread(p))


def _model(ctx: CheckContext, roles: Sequence[str], architecture: str, what: str) -> Picked | Outcome:
    """The model of `roles`, of `architecture` when there is one, else of any (its own
    architecture is then judged), unless a capture of those roles failed: then a TA decides."""
    found = pick(ctx, roles, architecture, what=what, measured=False)
    if isinstance(found, Picked) or architecture == "any":
        return found
    anyone = pick(ctx, roles, "any", what=what, measured=False)
    failed = [r for ev in ctx.evidence if (g := _gen(ev)) is not None for r in _failed(g, roles)]
    return found if failed or not isinstance(anyone, Picked) else anyone


def _conv_transpose(p: Picked) -> Need:
    if any(kind == "conv_transpose" for kind, _ in _layers(_facts(p))):
        return Need("transposed convolutions in the generator", True)
    return _has(p, "transposed convolutions in the generator", lambda t: re.fullmatch(r"conv_transpose\dd", t))


def _dcgan(ctx: CheckContext) -> tuple[list[Need], list[Picked], Outcome | None]:
    g = _model(ctx, ("generator",), "conv", "DCGAN generator")
    if isinstance(g, Outcome):
        return [], [], g
    needs = [_conv_transpose(g),
             _has(g, "BatchNorm in the generator", lambda t: "batch_norm" in t or "batchnorm" in t),
             _has(g, "ReLU in the generator", lambda t: t == "relu")]
    d = _model(ctx, ("discriminator",), "conv", "DCGAN discriminator")
    if isinstance(d, Outcome):
        return needs + [Need("the discriminator", None, "no discriminator was captured")], [g], None
    needs += [_stride_conv(d), _has(d, "LeakyReLU in the discriminator", lambda t: t.startswith("leaky_relu"))]
    return needs, [g, d], None


def _cgan(ctx: CheckContext) -> tuple[list[Need], list[Picked], Outcome | None]:
    g = pick(ctx, ("cgenerator",), "any", what="conditional generator", measured=False)
    if isinstance(g, Outcome):
        return [], [], g
    how = LABEL_WORDS.get(str(g.capture.get("label_input")), "as an input")
    cond = g.measure.get("conditional") if isinstance(g.measure.get("conditional"), Mapping) else {}
    effect = cond.get("label_effect")
    if finite(effect) and effect <= gm.LABEL_UNUSED:
        # measured: G(z, y) == G(z, y') for every z tried, so the label input leads nowhere
        needs = [Need("the label fed to the generator", False,
                      f"G takes it {how}, but changing it with z fixed changes none of G's outputs (mean pixel "
                      f"change {effect:.1g}): the label is not used")]
    else:
        needs = [Need("the label fed to the generator", True, f"G takes it {how}")]
    seen: list[Picked] = [g]
    ds = [(m, cap) for ev in ctx.evidence if (gen := _gen(ev)) is not None
          for m, _, cap in _entries(gen, ("discriminator",))]
    # a label input the probe recognised, or a second positional input it saw (D(x, y))
    conditional = [cap for _, cap in ds if cap.get("label_input") or isinstance(cap.get("label_position"), int)]
    failed = [r for ev in ctx.evidence if (gen := _gen(ev)) is not None for r in _failed(gen, ("discriminator",))]
    dropped = any(isinstance(gen.get("dropped"), int) and gen["dropped"] > 0
                  for ev in ctx.evidence if (gen := _gen(ev)) is not None)
    channels = [cap for _, cap in ds if isinstance(cap.get("image_shape"), list) and len(cap["image_shape"]) == 3
                and finite(cap["image_shape"][0]) and cap["image_shape"][0] > 1]
    what = "the label fed to the discriminator"
    if conditional:
        how = LABEL_WORDS.get(str(conditional[0].get("label_input")), "as a second input")
        needs.append(Need(what, True, f"D takes it {how}"))
    elif not ds or failed or dropped:
        needs.append(Need(what, None, "no discriminator was captured" if not ds and not failed else
                          "a discriminator's capture failed or was dropped"))
    elif channels:
        needs.append(Need(what, None, f"a discriminator's input has {channels[0]['image_shape'][0]} channels: "
                                      f"the label may be concatenated as channels"))
    else:
        needs.append(Need(what, False, f"{len(ds)} discriminator(s) captured, each taking only the image"))
    return needs, seen, None


def _vae(ctx: CheckContext) -> tuple[list[Need], list[Picked], Outcome | None]:
    v = pick(ctx, ("vae",), "any", what="VAE", measured=False)
    if isinstance(v, Outcome):
        return [], [], v
    outputs = v.capture.get("vae_outputs")
    what = "an encoder giving mu and logvar"
    if isinstance(outputs, list):
        needs = [Need(what, "mu" in outputs and "logvar" in outputs,
                      f"the forward returns {', '.join(map(str, outputs))}")]
    else:
        needs = [Need(what, None, "the grader could not tell what the forward returns")]
    needs += [_has(v, "z sampled in the forward (randn or normal)",
                   lambda t: t.startswith(("randn", "normal")) or t in ("rand", "rand_like")),
              _has(v, "the standard deviation from logvar (exp)", lambda t: t == "exp")]
    return needs, [v], None


def _latent(p: Picked) -> int | None:
    for value in (p.capture.get("latent"), (p.measure.get("vae") or {}).get("latent")
                  if isinstance(p.measure.get("vae"), Mapping) else None):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@P.takes(P.GenerativeArchitecture)
def generative_architecture(ctx: CheckContext, params: P.GenerativeArchitecture) -> Outcome:
    """The diagram `expect` asks for (P.GenerativeArchitecture), read from the captured models'
    graphs. Earns the share of its requirements found; a requirement the grader could not see
    sends the item to a TA (with what it found and what is missing). `latent`, when given, is
    one more requirement: the generator's z (a VAE's K) has that size."""
    p = _all(P.GenerativeArchitecture, params)
    needs, models, early = {"dcgan": _dcgan, "cgan": _cgan, "vae": _vae}[p.expect](ctx)
    if early is not None:
        return early
    size = _latent(models[0])
    if p.latent is not None:
        needs.append(Need(f"a latent size of {p.latent}", None if size is None else size == p.latent,
                          f"it is {size}" if size is not None else "the grader could not read it"))
    names = "; ".join(f"{m.name} in {where(m.ev)}" for m in models)
    found = [n for n in needs if n.found]
    missing = [n for n in needs if n.found is False]
    unknown = [n for n in needs if n.found is None]
    fraction = round(len(found) / len(needs), 4)

    def listed(ns: list[Need]) -> str:
        return "; ".join(n.what + (f" ({n.detail})" if n.detail else "") for n in ns)

    text = f"{names}" + (f", latent size {size}" if size is not None else "") + \
        (f": found {listed(found)}" if found else ": none of the diagram's parts found")
    pointers = tuple(dict.fromkeys(where(m.ev) for m in models))
    if unknown:
        return Outcome("manual", 0.0, f"{text}; the grader could not see {listed(unknown)}"
                                      + (f"; missing: {listed(missing)}" if missing else "")
                                      + ". This is not a finding against your work: a TA will judge it.",
                       pointers, own_words=True)
    if missing:
        text += f"; missing: {listed(missing)}"
    return Outcome(_verdict(fraction), fraction, text + ".", pointers)
