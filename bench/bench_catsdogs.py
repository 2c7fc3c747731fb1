"""Does a small CNN overfit the cats-vs-dogs stand-in, and does augmentation narrow the gap?

    .venv/bin/python bench/bench_catsdogs.py [--size small] [--data DIR] [--seeds 3] [--epochs 15]
        [--configs baseline,augment,dropout,weight_decay,batchnorm] [--side 64] [--threads 1]
        [--out FILE.json] [--markdown FILE.md]

Trains as a course notebook does (Keras' "cats vs dogs with little data", the handout's
overfitting lesson): every `train/` image resized to `side` x `side` (bilinear), a random 80/20
train/validation split made from the seed, 3 conv+pool blocks (16/32/64 channels) and a
128-unit hidden layer, Adam lr 0.001, batches of 32, cross-entropy, CPU. Without --data the
stand-in of --size is synthesized (seed 0) into a temporary folder.

Configurations: `baseline`; `augment` (random horizontal flip, rotation ±15°, scale 0.85-1.15,
shift ±10 %, on the training batches only); `dropout` (p 0.5 before both linear layers);
`weight_decay` (Adam's L2 weight decay 0.001); `batchnorm` (BatchNorm2d after each conv).
After every epoch each run is evaluated (eval mode) on its whole training split and its
validation split; the gap is train accuracy - validation accuracy. Prints per epoch and final
mean ± std over seeds (accuracies as percentages), and the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

CONFIGS = {
    "baseline": {},
    "augment": {"augment": True},
    "dropout": {"dropout": 0.5},
    "weight_decay": {"weight_decay": 1e-3},
    "batchnorm": {"batchnorm": True},
    "augment+dropout": {"augment": True, "dropout": 0.5},
}
"""Overrides of the baseline recipe per configuration."""
NAME = re.compile(r"^(cat|dog)\.\d+\.jpg$")


def load(folder: Path, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 3, side, side) images and int64 labels (cat 0, dog 1) of `folder`/train."""
    paths = sorted(p for p in (folder / "train").iterdir() if NAME.match(p.name))
    xs = np.stack([np.asarray(Image.open(p).convert("RGB").resize((side, side), Image.BILINEAR)) for p in paths])
    ys = [0 if p.name.startswith("cat") else 1 for p in paths]
    return torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys)


class CNN(nn.Module):
    """3 x (3x3 conv, [BatchNorm], ReLU, 2x2 max-pool), then [Dropout] Linear(., 128) ReLU
    [Dropout] Linear(128, 2)."""

    def __init__(self, side: int, channels: int = 16, dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in (channels, 2 * channels, 4 * channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), *([nn.BatchNorm2d(c)] if batchnorm else []),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * (side // 8) ** 2, 128),
                                  nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _inputs(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - 0.5) / 0.25


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flip, rotation ±15°, scale 0.85-1.15 and shift ±10 % of a float batch (border padding)."""
    n = len(x)
    u = torch.rand(n, 5, generator=gen)
    angle = (u[:, 0] * 2 - 1) * math.radians(15)
    scale = 0.85 + 0.3 * u[:, 1]
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, (u[:, 3] * 2 - 1) * 0.2], 1),
                         torch.stack([sin * flip, cos, (u[:, 4] * 2 - 1) * 0.2], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy as a fraction, mean cross-entropy) in eval mode."""
    model.eval()
    logits = torch.cat([model(_inputs(x[i:i + 256])) for i in range(0, len(x), 256)])
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def run(x: torch.Tensor, y: torch.Tensor, cfg: dict, *, seed: int, epochs: int, side: int) -> dict:
    """One training run; per-epoch train/val accuracy and loss (eval mode), fractions."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1000 + seed))
    n_val = len(y) // 5
    val, tr = order[:n_val], order[n_val:]
    xt, yt, xv, yv = x[tr], y[tr], x[val], y[val]
    model = CNN(side, dropout=cfg.get("dropout", 0.0), batchnorm=cfg.get("batchnorm", False))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=cfg.get("weight_decay", 0.0))
    hist: dict[str, list[float]] = {k: [] for k in ("train_acc", "val_acc", "train_loss", "val_loss", "running_acc")}
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=gen)
        hits = 0
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            xb = _inputs(xt[idx])
            if cfg.get("augment"):
                xb = augment(xb, gen)
            logits = model(xb)
            loss = F.cross_entropy(logits, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hits += int((logits.argmax(1) == yt[idx]).sum())
        hist["running_acc"].append(hits / len(yt))
        for split, (xs, ys) in (("train", (xt, yt)), ("val", (xv, yv))):
            acc, loss_ = accuracy(model, xs, ys)
            hist[f"{split}_acc"].append(acc)
            hist[f"{split}_loss"].append(loss_)
    hist["seconds"] = [time.perf_counter() - t0]
    return hist


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--data", type=Path, help="a cats-vs-dogs folder (or a root holding cats-vs-dogs/)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--configs", default="baseline,augment,dropout,weight_decay,batchnorm")
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; torch {torch.__version__}, "
          f"{args.threads} thread(s)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            from grader.datasets import synth

            t0 = time.perf_counter()
            folder = synth(Path(tmp), size=args.size, seed=0, names=["catsdogs"])["catsdogs"]
            print(f"synth {args.size}: {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            folder = args.data / "cats-vs-dogs" if (args.data / "cats-vs-dogs").is_dir() else args.data
        x, y = load(folder, args.side)
    print(f"{len(y)} images ({int((y == 0).sum())} cats), split 80/20 per seed, {args.side} px", flush=True)
    results: dict[str, list[dict]] = {}
    for name in args.configs.split(","):
        results[name] = []
        for seed in range(args.seeds):
            h = run(x, y, CONFIGS[name], seed=seed, epochs=args.epochs, side=args.side)
            results[name].append(h)
            print(f"{name:16s} seed {seed}: train {100 * h['train_acc'][-1]:.1f} val {100 * h['val_acc'][-1]:.1f} "
                  f"best val {100 * max(h['val_acc']):.1f} ({h['seconds'][0]:.0f} s)", flush=True)
    lines = ["| configuration | train acc % | val acc % | gap (points) | best val % (epoch) | val loss min→end |",
             "|---|---|---|---|---|---|"]
    for name, hs in results.items():
        tr = [h["train_acc"][-1] for h in hs]
        va = [h["val_acc"][-1] for h in hs]
        gap = [a - b for a, b in zip(tr, va)]
        best = [max(h["val_acc"]) for h in hs]
        best_ep = [1 + int(np.argmax(h["val_acc"])) for h in hs]
        vl = f"{statistics.fmean(min(h['val_loss']) for h in hs):.2f}→{statistics.fmean(h['val_loss'][-1] for h in hs):.2f}"
        lines.append(f"| {name} | {_ms(tr)} | {_ms(va)} | {_ms(gap)} | {_ms(best)} ({'/'.join(map(str, best_ep))}) | {vl} |")
    lines += ["", "Per epoch (mean over seeds): train / val accuracy %, gap", ""]
    for name, hs in results.items():
        cells = []
        for e in range(args.epochs):
            t = statistics.fmean(h["train_acc"][e] for h in hs)
            v = statistics.fmean(h["val_acc"][e] for h in hs)
            cells.append(f"{e + 1}: {100 * t:.0f}/{100 * v:.0f} ({100 * (t - v):+.0f})")
        lines.append(f"- {name}: " + ", ".join(cells))
    text = "\n".join(lines)
    print(text)
    print(f"load after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}))
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
