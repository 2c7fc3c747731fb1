"""The `vae_bound` check kind: a VAE's test negative ELBO recomputed by the grader on the real
test split (grader.verify.generative; units nats per image), its KL term and active units, and
the test loss the notebook printed beside it, rescaled by genmeasures.match_printed_loss (a
per-batch sum and a per-pixel mean become comparable)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from grader import genmeasures as gm
from grader.checks import params as P
from grader.checks.base import CheckContext, Outcome, where
from grader.checks.generative import (MISMATCH, POSTERIOR_COLLAPSE, _about, _all, _num, _ops, _ref, _verdict, pick,
                                      reference_value)
from grader.checks.training import finite


def printed_test_loss(ev: Mapping) -> tuple[float, str, int | None] | None:
    """The last test loss the notebook printed, (value, the line, cell), from its metric lines
    (`====> Test set loss: 105.2345`), else its test_loss or a named test loss / ELBO, else the
    printed test-loss series (`test -ELBO 138.9`); None when it printed none (or only a
    non-positive one)."""
    metrics = ev.get("metrics") if isinstance(ev.get("metrics"), Mapping) else {}
    lines = [x for x in metrics.get("mentions") or [] if isinstance(x, Mapping) and x.get("kind") == "test_loss"
             and finite(x.get("value")) and x["value"] > 0]
    if lines:
        last = lines[-1]
        return float(last["value"]), str(last.get("raw") or "")[:160], last.get("cell") if isinstance(
            last.get("cell"), int) else None
    if finite(metrics.get("test_loss")) and metrics["test_loss"] > 0:
        return float(metrics["test_loss"]), f"test loss {metrics['test_loss']:g}", None
    named = metrics.get("named") if isinstance(metrics.get("named"), Mapping) else {}
    for key, value in reversed(list(named.items())):
        if re.search(r"test.*(loss|elbo)|(loss|elbo).*test", str(key).lower()) and finite(value) and value > 0:
            return float(value), f"{key} {value:g}", None
    # the generative lines' own reading (grader.parsers.genlogs): `test -ELBO 138.9`, `test loss ..`
    curves = metrics.get("curves") if isinstance(metrics.get("curves"), Mapping) else {}
    points = [p for p in curves.get("vae_test_loss") or [] if isinstance(p, (list, tuple)) and len(p) >= 2
              and finite(p[1]) and p[1] > 0]
    if points:
        return float(points[-1][1]), f"test loss {points[-1][1]:g}, the last of {len(points)} printed", None
    return None


def batch_sizes(ev: Mapping, capture: Mapping) -> list[int]:
    """Batch sizes a per-batch printed loss may have used: the VAE's training run's and the
    test loaders'."""
    refs = set(capture.get("optimizer_refs") or [])
    sizes = [r.get("batch_size") for r in ev.get("runs") or [] if isinstance(r, Mapping)
             and r.get("optimizer_ref") in refs]
    sizes += [d.get("batch_size") for d in ev.get("dataloaders") or [] if isinstance(d, Mapping)
              and d.get("split") == "test"]
    return sorted({s for s in sizes if isinstance(s, int) and not isinstance(s, bool) and s > 0})


# How a printed loss was read (genmeasures.printed_loss_scales' names), as the message says it.
_READINGS = {"per image": "read as nats per image", "per pixel": "read as a mean per pixel (times 784)",
             "whole split": "read as a sum over the test split"}


def reading(scale: str) -> str:
    """printed_vs_measured's scale as the message says it ("per batch of 128": a batch's sum)."""
    if scale.startswith("per batch of "):
        return f"read as a sum over a batch of {scale.removeprefix('per batch of ')}"
    return _READINGS.get(scale, f"read {scale}")


def printed_vs_measured(printed: float, nelbo: float, batch_sizes: Sequence[int],
                        n_images: int | None) -> tuple[str, float]:
    """genmeasures.match_printed_loss over each known batch size: (scale guessed, the printed
    value in nats per image under it), the scale that brings it closest to `nelbo`."""
    best = None
    for size in list(batch_sizes) or [None]:
        scale, value = gm.match_printed_loss(printed, nelbo, batch_size=size, n_images=n_images)
        gap = abs(math.log(value / nelbo))
        if best is None or gap < best[0]:
            best = (gap, f"{scale} of {size}" if scale == "per batch" else scale, value)
    assert best is not None
    return best[1], best[2]


def _samples_no_z(measure: Mapping) -> bool:
    """Whether the VAE's whole graph was read and holds no random op (z = mu, no sampling)."""
    facts = measure.get("facts") if isinstance(measure.get("facts"), Mapping) else {}
    ops = _ops(facts)
    return facts.get("ops_complete") is True and bool(ops) and not any(
        t.startswith(("randn", "normal", "rand", "bernoulli", "multinomial")) for t in ops)


@P.takes(P.VaeBound)
def vae_bound(ctx: CheckContext, params: P.VaeBound) -> Outcome:
    """The captured VAE's test negative ELBO, recomputed by the grader on the real test split
    in nats per image (Kingma & Welling 2014, a Bernoulli decoder), against the reference's:
    full points up to `nelbo_margin` above it, `partial_credit` within `partial_margin` more. The
    KL term and active units are shown; posterior collapse (KL at most
    genmeasures.KL_COLLAPSED_NATS, or no active unit) earns at most `collapse_credit` (flag
    POSTERIOR_COLLAPSE). The notebook's printed test loss, rescaled (per pixel, per batch, per
    split), is compared: off by more than `printed_tolerance` nats it is flagged MISMATCH for a
    TA, with both numbers; points do not change."""
    p = _all(P.VaeBound, params)
    picked = pick(ctx, ("vae",), p.architecture, what="VAE")
    if isinstance(picked, Outcome):
        return picked
    v = picked.measure.get("vae") if isinstance(picked.measure.get("vae"), Mapping) else {}
    nelbo, recon, kl = _num(v.get("nelbo")), _num(v.get("recon")), _num(v.get("kl"))
    if nelbo is None or nelbo <= 0 or kl is None:
        why = str(picked.measure.get("vae_reason") or "the grader could not run its encoder and decoder")[:300]
        return Outcome("manual", 0.0, f"{_about(picked)}: its test bound was not measured ({why.rstrip('.')}). This "
                                      f"is not a finding against your work: a TA will judge it.", (where(picked.ev),),
                       own_words=True)
    n = v.get("n") if isinstance(v.get("n"), int) else None
    ref = reference_value(ctx.reference, "nelbo")
    bar = ref + p.nelbo_margin if ref is not None else p.max_nelbo
    fraction = 1.0 if nelbo <= bar else p.partial_credit if nelbo <= bar + p.partial_margin else 0.0
    text = (f"{_about(picked)}: test negative ELBO {nelbo:.1f} nats per image on "
            f"{f'{n:,} ' if n else 'the '}real test images ({_ref(ref, '.1f')}full points up to {bar:.1f})"
            + (f" = reconstruction {recon:.1f} + KL {kl:.2f}" if recon is not None else f"; KL {kl:.2f}"))
    ref_kl = reference_value(ctx.reference, "kl")
    text += f" (reference KL {ref_kl:.1f})" if ref_kl is not None else ""
    au, latent = v.get("active_units"), v.get("latent") or picked.capture.get("latent")
    ref_au = reference_value(ctx.reference, "active_units")
    if isinstance(au, int):
        text += f"; {au}" + (f" of {latent}" if isinstance(latent, int) else "") + " latent units active" + \
            (f" (reference {ref_au:.0f})" if ref_au is not None else "")
    flags: list[str] = []
    if v.get("posterior_collapse") is True or kl <= gm.KL_COLLAPSED_NATS or au == 0:
        fraction = min(fraction, p.collapse_credit)
        flags.append(POSTERIOR_COLLAPSE)
        text += (f". Posterior collapse: the KL term is {kl:.2f} nats per image and "
                 f"{au if isinstance(au, int) else 'no'} latent units are active, so the decoder ignores z")
    elif ref_kl and kl > 3 * ref_kl:
        text += f". The KL term is {kl / ref_kl:.1f} times the reference's: is it in your training loss"
    shown = printed_test_loss(picked.ev)
    if shown is None:
        text += ". No printed test loss was found to compare with"
    else:
        value, line, cell = shown
        scale, per_image = printed_vs_measured(value, nelbo, batch_sizes(picked.ev, picked.capture),
                                               n or ctx.test_split_size)
        said = f"`{line}`" + (f" (In[{cell}])" if cell is not None else "")
        how = reading(scale)
        if abs(per_image - nelbo) <= p.printed_tolerance:
            text += (f". Your printed {said}, {how}, is {per_image:.1f} nats per image: consistent with the "
                     f"grader's {nelbo:.1f} (within {p.printed_tolerance:g})")
        else:
            flags.append(MISMATCH)
            text += (f". Your printed {said}, {how} (the closest reading), is {per_image:.1f} nats per image, "
                     f"{abs(per_image - nelbo):.1f} nats from the grader's {nelbo:.1f}: a TA will look at it")
            if _samples_no_z(picked.measure) and per_image < nelbo:
                text += (" (your forward draws no random z: a loss computed with z = mu is not the bound the "
                         "grader computes with z = mu + eps * sigma, and the log-variance was never trained to "
                         "sample with)")
    fraction = round(fraction, 4)
    return Outcome(_verdict(fraction), fraction, text + ".", (where(picked.ev),), tuple(flags))
