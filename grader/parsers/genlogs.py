"""Loss curves of generative models from printed progress lines and plotted line figures.

Series (names as they appear in evidence `metrics.curves`, each [[x, value], ...], x in epochs
done, fractional within an epoch when the line gives the iteration):
- `d_loss`, `g_loss`: a GAN's discriminator and generator losses, as the PyTorch DCGAN example
  prints them (`[0/5][50/469]\\tLoss_D: 1.23\\tLoss_G: 2.34\\tD(x): ...`) and in the usual other
  spellings (`d_loss: .., g_loss: ..`, `errD`/`errG`, `[D loss: ..] [G loss: ..]`,
  `Discriminator loss`, `loss_D`);
- `vae_loss`: the PyTorch VAE example's `Train Epoch: 1 [1280/60000 (2%)]\\tLoss: 543.2` (its
  per-batch loss divided by the batch size), or the total of a line that also prints recon/KL;
- `vae_epoch_loss`: `====> Epoch: 1 Average loss: 164.3`; `vae_test_loss`: `====> Test set loss: 127.4`;
  and in a student's own words a loss named by its split (`epoch 2: train -ELBO 149.8 test -ELBO
  138.9`, `train loss .. test loss ..`: `vae_epoch_loss`, or `vae_loss` within an epoch, and
  `vae_test_loss`);
- `recon`, `kl`: reconstruction and KL columns (`recon: ..`, `BCE: ..`, `KLD: ..`, `KL loss ..`).
Values as printed (the scale the notebook chose). Plotted lines (the probe's figure records,
`lines`: label, x, y) give the same series, named `<series> (plotted)`, by their legend label
(else their axes' title or y label); a line whose label names none of them is left out.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

from . import budget
from .curves import downsample
from .records import CurvePoint
from .text import clean_lines

_NUM = r"(?:tensor\(\s*)?([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_SEP = r"\s*(?:[:=]\s*|\s)\s*\[?\s*"
_D_KEY = r"(?:Loss_?D|loss_?D|D_?loss|d_?loss|D[ -]loss|errD|err_D|loss_d|Discriminator[ _]loss|disc_loss)"
_G_KEY = r"(?:Loss_?G|loss_?G|G_?loss|g_?loss|G[ -]loss|errG|err_G|loss_g|Generator[ _]loss|gen_loss)"
_GAN = [("d_loss", re.compile(r"(?<![A-Za-z0-9])" + _D_KEY + r"(?![A-Za-z0-9(])" + _SEP + _NUM)),
        ("g_loss", re.compile(r"(?<![A-Za-z0-9])" + _G_KEY + r"(?![A-Za-z0-9(])" + _SEP + _NUM))]
_RECON = re.compile(r"(?<![A-Za-z0-9])(?:recon(?:struction)?(?:[ _]?loss)?|rec_loss|BCE|MSE|bce|mse)"
                    r"(?![A-Za-z0-9(])" + _SEP + _NUM, re.IGNORECASE)
_KL = re.compile(r"(?<![A-Za-z0-9])(?:KLD|KL(?:[ _]?(?:loss|div(?:ergence)?|term))?)(?![A-Za-z0-9(])"
                 + _SEP + _NUM, re.IGNORECASE)
_TOTAL = re.compile(r"(?<![A-Za-z0-9])(?:total(?:[ _]?loss)?|(?:neg[ _-]?)?elbo|loss)(?![A-Za-z0-9(])" + _SEP + _NUM,
                    re.IGNORECASE)
_VAE_TRAIN = re.compile(r"Train Epoch:\s*(\d+)\s*\[\s*(\d+)\s*/\s*(\d+)[^\]]*\]\s*Loss:\s*" + _NUM)
_VAE_EPOCH = re.compile(r"=+>\s*Epoch:\s*(\d+)\s*Average loss:\s*" + _NUM)
_VAE_TEST = re.compile(r"=+>\s*Test set loss:\s*" + _NUM)
# A VAE's loss by split in a student's own words: `train loss 150.2`, `test -ELBO 138.9`,
# `Test set loss: 0.1352`, `train_nll=...`.
_SPLIT_LOSS = re.compile(r"(?<![A-Za-z])(train(?:ing)?|test)[ _]*(?:set[ _]*)?"
                         r"(?:-\s*elbo|neg(?:ative)?[ _-]?elbo|elbo|loss|nll)(?![A-Za-z(])\s*[:=]?\s*" + _NUM,
                         re.IGNORECASE)
_ACCURACY = re.compile(r"acc(?:uracy)?(?![a-z])", re.IGNORECASE)
_PAIR = re.compile(r"\[\s*(?:Epoch\s*)?(\d+)\s*/\s*(\d+)\s*\]\s*\[\s*(?:Batch\s*)?(\d+)\s*/\s*(\d+)\s*\]",
                   re.IGNORECASE)
_PAIR_BARE = re.compile(r"\[\s*(\d+)\s*\]\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]")  # [0][200/937]
_FRACTION = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]")  # Epoch 0 [200/937]: the iteration after the epoch
_EPOCH = re.compile(r"(?<![A-Za-z])(?:epoch|ep)[\s_]*(?:[:#=\[(]\s*)?(\d+)(?:\s*/\s*(\d+))?", re.IGNORECASE)
_STEP = re.compile(r"(?<![A-Za-z])(?:step|iter(?:ation)?s?|batch|it)[\s_]*(?:[:#=\[(]\s*)?(\d+)\s*/\s*(\d+)",
                   re.IGNORECASE)
_SERIES = ("d_loss", "g_loss", "vae_loss", "vae_epoch_loss", "vae_test_loss", "recon", "kl")


def _value(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if v == v and abs(v) != float("inf") else None


def _position(line: str) -> tuple[int | None, float | None]:
    """(epoch as printed, fraction of it done) a progress line gives, else (None, None)."""
    m = _PAIR.search(line)
    if m and int(m.group(4)) > 0:
        return int(m.group(1)), int(m.group(3)) / int(m.group(4))
    m = _PAIR_BARE.search(line)
    if m and int(m.group(3)) > 0:
        return int(m.group(1)), int(m.group(2)) / int(m.group(3))
    e = _EPOCH.search(line)
    s = _STEP.search(line)
    frac = int(s.group(1)) / int(s.group(2)) if s and int(s.group(2)) > 0 else None
    if frac is None and e is not None:  # `Epoch 0 [200/937]`: a bracketed pair after the epoch
        f = next((f for f in _FRACTION.finditer(line, e.end())
                  if 0 <= int(f.group(1)) <= int(f.group(2)) and int(f.group(2)) > 0), None)
        frac = int(f.group(1)) / int(f.group(2)) if f else None
    return (int(e.group(1)) if e else None), frac


def parse_gen_curves(text: str, *, cell: int | None = None) -> list[CurvePoint]:
    """Points of the series above in printed text, in reading order (x: epochs done)."""
    if not isinstance(text, str) or not text:
        return []
    raws: list[tuple[str, float, int | None, float | None]] = []
    last_epoch: int | None = None
    for line in clean_lines(text):
        if not line.strip():
            continue
        m = _VAE_TRAIN.search(line)
        if m and int(m.group(3)) > 0 and (v := _value(m.group(4))) is not None:
            last_epoch = int(m.group(1))
            raws.append(("vae_loss", v, last_epoch, int(m.group(2)) / int(m.group(3))))
            continue
        m = _VAE_EPOCH.search(line)
        if m and (v := _value(m.group(2))) is not None:
            last_epoch = int(m.group(1))
            raws.append(("vae_epoch_loss", v, last_epoch, None))
            continue
        m = _VAE_TEST.search(line)
        if m and (v := _value(m.group(1))) is not None:
            raws.append(("vae_test_loss", v, last_epoch, None))
            continue
        epoch, frac = _position(line)
        found = []
        for series, rx in _GAN:
            m = rx.search(line)
            if m and (v := _value(m.group(1))) is not None:
                found.append((series, v))
        if not found:
            spans = []
            for series, rx in (("recon", _RECON), ("kl", _KL)):
                m = rx.search(line)
                if m and (v := _value(m.group(1))) is not None:
                    found.append((series, v))
                    spans.append(m.span())
            if found:
                total = next((t for t in _TOTAL.finditer(line)
                              if not any(a <= t.start() < b for a, b in spans)), None)
                if total is not None and (v := _value(total.group(1))) is not None:
                    found.append(("vae_loss", v))
            elif not _ACCURACY.search(line):  # a VAE's loss named by its split (a classifier's line has its accuracy)
                for m in _SPLIT_LOSS.finditer(line):
                    if (v := _value(m.group(2))) is None:
                        continue
                    if m.group(1).lower().startswith("test"):
                        found.append(("vae_test_loss", v))
                    else:
                        found.append(("vae_loss" if frac is not None else "vae_epoch_loss", v))
        raws += [(s, v, epoch, frac) for s, v in found]
        if epoch is not None:
            last_epoch = epoch
    zero_based = {r[0] for r in raws if r[2] == 0}  # series whose epochs count from 0
    out: list[CurvePoint] = []
    counters: dict[str, int] = {}
    for series, v, epoch, frac in raws:
        if epoch is None:
            counters[series] = counters.get(series, 0) + 1
            x = float(counters[series])
        elif frac is None:  # printed once an epoch ends: the epochs done
            x = float(epoch + 1 if series in zero_based else epoch)
        else:
            x = (epoch if series in zero_based else epoch - 1) + frac
        out.append(CurvePoint(series, x, v, cell))
    return out


def gen_curves(texts: Iterable[tuple[int | None, str]]) -> dict[str, list[list[float]]]:
    """Series -> [[x, value], ...] (downsampled, curves.downsample) over (cell, printed text) pairs."""
    curves: dict[str, list[list[float]]] = {}
    for cell, text in texts:
        for p in parse_gen_curves(text, cell=cell):
            curves.setdefault(p.series, []).append([p.x, p.value])
    return {k: downsample(v) for k, v in curves.items()}


def notebook_texts(nb: Mapping[str, Any]) -> list[tuple[int | None, str]]:
    """(cell index, its stdout joined) of every code cell of a notebook (nbformat dict); a cell's
    text is cut to its first and last budget.CELL_CHARS / 2 characters, the whole to
    budget.TOTAL_CHARS (the newest cells kept), as the notebook parser's budget reads."""
    found = []
    half = budget.CELL_CHARS // 2
    for index, cell in enumerate(nb.get("cells") or []):
        if cell.get("cell_type") != "code":
            continue
        text = "".join(str(o.get("text", "")) if isinstance(o.get("text"), str) else "".join(o.get("text") or [])
                       for o in cell.get("outputs") or [] if o.get("output_type") == "stream"
                       and o.get("name") == "stdout")
        if len(text) > 2 * half:
            text = text[:half] + "\n" + text[-half:]
        if text:
            found.append((index, text))
    total, kept = 0, []
    for index, text in reversed(found):
        total += len(text)
        if total > budget.TOTAL_CHARS:
            break
        kept.append((index, text))
    return kept[::-1]


_LABELS = (("d_loss", re.compile(r"(?<![a-z])(?:d|disc|discriminator|errd|netd)(?![a-z(])|d[_ ]?loss|loss[_ ]?d(?![a-z])"
                                 r"|discriminator", re.IGNORECASE)),
           ("g_loss", re.compile(r"(?<![a-z])(?:g|gen|generator|errg|netg)(?![a-z(])|g[_ ]?loss|loss[_ ]?g(?![a-z])"
                                 r"|generator", re.IGNORECASE)),
           ("recon", re.compile(r"recon|bce|mse|reconstruction", re.IGNORECASE)),
           ("kl", re.compile(r"(?<![a-z])(?:kl|kld)(?![a-z])|kl[_ ]?(?:loss|div)", re.IGNORECASE)),
           ("vae_test_loss", re.compile(r"test", re.IGNORECASE)),
           ("vae_loss", re.compile(r"(?<![a-z])(?:loss|elbo|train(?:ing)?(?: loss)?|total)(?![a-z])", re.IGNORECASE)))


def series_of_label(label: str | None) -> str | None:
    """The series a legend label (or axes title) names: `D loss` -> d_loss, `KL` -> kl; else None."""
    if not label:
        return None
    for series, rx in _LABELS:
        if rx.search(label):
            return series
    return None


def plotted_curves(figures: Sequence[Mapping[str, Any]]) -> dict[str, list[list[float]]]:
    """`<series> (plotted)` -> [[x, y], ...] from the probe's figure records' `lines` (the newest
    figure drawing a series wins)."""
    out: dict[str, list[list[float]]] = {}
    for fig in figures:
        lines = fig.get("lines") if isinstance(fig, Mapping) else None
        for line in lines if isinstance(lines, list) else []:
            if not isinstance(line, Mapping):
                continue
            series = series_of_label(line.get("label")) or (
                None if line.get("label") else series_of_label(line.get("ylabel")) or series_of_label(line.get("title")))
            xs, ys = line.get("x"), line.get("y")
            if series is None or not isinstance(xs, list) or not isinstance(ys, list):
                continue
            pts = [[float(x), float(y)] for x, y in zip(xs, ys)
                   if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y == y]
            if len(pts) >= 2:
                out[series + " (plotted)"] = downsample(pts)
    return out


def all_series() -> tuple[str, ...]:
    """The printed series names this parser gives."""
    return _SERIES
