"""Training pieces shared by the Lab 4A reference solutions (MNIST, MLP vs linear model).

The whole split lives on the device as one float tensor (ToTensor(): pixels / 255, flattened to
784) and batches are index slices of it: the same numbers as a DataLoader over
torchvision.datasets.MNIST with ToTensor(), ten times faster on a CPU. Every exercise trains its
runs from the same seed with the same recipe (`BASE`), changing only the exercise's factor, and
the run the exercises share (the 784-100-100-10 MLP, SGD lr 0.02) is trained once per seed and
reused (`_CACHE`). Nothing here touches CUDA at import time.
"""

from __future__ import annotations

import math
import random
import struct
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

BASE = {
    "model_kind": "mlp",      # "mlp" (hidden layers + ReLU) or "linear" (784 -> 10, one Linear)
    "depth": 2,               # hidden layers of the MLP
    "width": 100,             # units per hidden layer
    "optimizer": "SGD",       # torch.optim class name
    "lr": 0.02,               # learning rate, per step
    "momentum": 0.9,          # SGD momentum (unused by other optimizers)
    "loss": "CrossEntropyLoss",
    "batch_size": 64,         # images per step
    "epochs": 5,              # passes over the 60000 training images
}
"""The recipe every run starts from; an exercise's runs override one factor of it."""

CLASSES = [str(d) for d in range(10)]
_CACHE: dict[tuple, dict] = {}


def _idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST's train and test splits from `folder` (the MNIST folder holding raw/): images as
    float N×784 in 0..1 (ToTensor's scaling), labels int64, on `device`."""
    raw = Path(folder) / "raw"

    def split(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(_idx(raw / f"{prefix}-images-idx3-ubyte").copy()).reshape(-1, 784)
        y = torch.from_numpy(_idx(raw / f"{prefix}-labels-idx1-ubyte").astype(np.int64))
        return x.float().div_(255.0).to(device), y.to(device)

    return (*split("train"), *split("t10k"))


def build(cfg: Mapping[str, Any]) -> nn.Module:
    """The run's model: `linear` is one Linear(784, 10); `mlp` is `depth` hidden Linear layers of
    `width` units, each followed by ReLU, then Linear(width, 10)."""
    if cfg["model_kind"] == "linear":
        return nn.Sequential(nn.Linear(784, 10))
    layers: list[nn.Module] = []
    width_in = 784
    for _ in range(cfg["depth"]):
        layers += [nn.Linear(width_in, cfg["width"]), nn.ReLU()]
        width_in = cfg["width"]
    return nn.Sequential(*layers, nn.Linear(width_in, 10))


def _optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "SGD":
        return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    return getattr(torch.optim, cfg["optimizer"])(model.parameters(), lr=cfg["lr"])


def _loss(cfg: Mapping[str, Any], logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if cfg["loss"] == "CrossEntropyLoss":
        return F.cross_entropy(logits, y)
    if cfg["loss"] == "MultiMarginLoss":
        return F.multi_margin_loss(logits, y)
    if cfg["loss"] == "MSELoss":  # on softmax probabilities against one-hot targets
        return F.mse_loss(logits.softmax(1), F.one_hot(y, 10).float())
    raise ValueError(f"unknown loss {cfg['loss']!r}")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Test loss (mean cross-entropy per image) and accuracy (a fraction) on the whole split."""
    model.eval()
    logits = torch.cat([model(x[i:i + 2000]) for i in range(0, len(y), 2000)]).float()
    return {"test_loss": F.cross_entropy(logits, y).item(),
            "test_accuracy": (logits.argmax(1) == y).float().mean().item(), "test_images": len(y)}


def run(name: str, cfg: Mapping[str, Any], *, folder: Path, device: torch.device, seed: int) -> dict:
    """Trains one configuration from `seed`; returns {name, factors, test_accuracy, test_loss,
    accuracy_by_epoch (after each epoch, fractions), history (train_loss, wall_s, cpu_s)}.
    A configuration already trained in this process (same factors, seed, data, device) is reused."""
    key = (tuple(sorted(cfg.items())), seed, str(folder), str(device))
    if key not in _CACHE:
        _CACHE[key] = _train(cfg, folder=folder, device=device, seed=seed)
    done = _CACHE[key]
    factors = {k: cfg[k] for k in ("model_kind", "depth", "width", "optimizer", "lr", "loss", "epochs")}
    if cfg["model_kind"] == "linear":
        factors.update(depth=0, width=None)
    return {"name": name, "factors": factors, **done}


def _train(cfg: Mapping[str, Any], *, folder: Path, device: torch.device, seed: int) -> dict:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = _data(folder, device)
    model = build(cfg).to(device)
    optimizer = _optimizer(cfg, model)
    history: dict[str, list] = {"train_loss": [], "wall_s": [], "cpu_s": []}
    by_epoch = []
    for _ in range(cfg["epochs"]):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(y_train), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), cfg["batch_size"]):
            idx = order[start:start + cfg["batch_size"]]
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(cfg, model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        history["train_loss"].append(total / len(order))
        by_epoch.append(evaluate(model, x_test, y_test)["test_accuracy"])
        if not math.isfinite(total):
            break  # a diverged run stays in the study as diverged
    final = evaluate(model, x_test, y_test)
    return {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
            "accuracy_by_epoch": by_epoch, "history": history,
            "params": sum(p.numel() for p in model.parameters())}


_DATA: dict[tuple[str, str], tuple] = {}


def _data(folder: Path, device: torch.device) -> tuple:
    key = (str(folder), str(device))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load(folder, device)
    return _DATA[key]


def study(runs: list[tuple[str, Mapping[str, Any]]], *, data: Mapping[str, Path], device: torch.device | str,
          seed: int, epochs: int | None) -> dict:
    """Trains each (name, overrides of BASE) run; returns the study result reference_run reads:
    {runs: [...], best, best_accuracy, classes, train_images}. `epochs` overrides BASE's for
    every run that does not set its own (an exercise on epochs keeps its values)."""
    device = torch.device(device)
    folder = Path(data["mnist"])
    results = []
    for name, overrides in runs:
        cfg = {**BASE, **({"epochs": epochs} if epochs else {}), **overrides}
        results.append(run(name, cfg, folder=folder, device=device, seed=seed))
    best = max(results, key=lambda r: r["test_accuracy"] if r["test_accuracy"] == r["test_accuracy"] else -1)
    return {"runs": results, "best": best["name"], "best_accuracy": best["test_accuracy"],
            "classes": CLASSES, "train_images": len(_data(folder, device)[1])}
