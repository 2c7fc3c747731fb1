"""Training pieces shared by the Lab 4B reference solutions (CIFAR-10, a small CNN).

The whole split lives on the device as one uint8 tensor and batches are index slices of it
(ToTensor() then Normalize((0.5,)*3, (0.5,)*3) done per batch), the same numbers as a DataLoader
over torchvision.datasets.CIFAR10. Every exercise trains its runs from the same seed with the
same recipe (`BASE`), changing only the exercise's factor; a configuration two exercises share
(2 conv layers, RMSprop, 10 epochs) is trained once per seed and reused (`_CACHE`). Nothing here
touches CUDA at import time.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torchvision
from torch import nn
import torch.nn.functional as F

from grader.datasets import register_cifar10_checksums

BASE = {
    "conv_layers": 2,         # Conv2d layers (3x3, padding 1, ReLU); a 2x2 max-pool after each pair
    "channels": 8,            # output channels of the first pair of conv layers; the second pair has twice
    "optimizer": "RMSprop",   # torch.optim class name
    "lr": 0.001,              # learning rate, per step (RMSprop's usual; SGD uses `sgd_lr`)
    "sgd_lr": 0.01,           # SGD's learning rate, per step, with momentum 0.9
    "loss": "CrossEntropyLoss",
    "batch_size": 64,         # images per step
    "epochs": 10,             # passes over the training split
    "mean": (0.5, 0.5, 0.5),  # Normalize() per RGB channel, pixels in 0..1
    "std": (0.5, 0.5, 0.5),
}
"""The recipe every run starts from; an exercise's runs override one factor of it."""

_CACHE: dict[tuple, dict] = {}
_DATA: dict[tuple[str, str], tuple] = {}


class CNN(nn.Module):
    """`conv_layers` (2 or 4) 3x3 Conv2d + ReLU, a 2x2 max-pool after every second one (after
    the first when there is one conv layer), then Linear(·, 128) + ReLU + Linear(128, 10)."""

    def __init__(self, conv_layers: int, channels: int, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = 3, 32
        for i in range(conv_layers):
            c_out = channels * (2 if i >= 2 else 1)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if i % 2 == 1 or conv_layers == 1:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, 128), nn.ReLU(),
                                        nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load(folder: Path, device: torch.device) -> tuple:
    """CIFAR-10's train and test splits from `folder` (the cifar-10-batches-py folder) with
    torchvision's own loader: (x_train uint8 NCHW, y_train, x_test, y_test, classes) on `device`."""
    root = Path(folder).parent
    register_cifar10_checksums(root)
    out = []
    for train in (True, False):
        ds = torchvision.datasets.CIFAR10(root=str(root), train=train, download=False)
        out += [torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous().to(device),
                torch.as_tensor(ds.targets, dtype=torch.long, device=device)]
    return (*out, list(ds.classes))


def _data(folder: Path, device: torch.device) -> tuple:
    key = (str(folder), str(device))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load(folder, device)
    return _DATA[key]


def _inputs(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(BASE["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(BASE["std"], device=x.device).view(1, 3, 1, 1)
    return (x.float().div(255.0) - mean) / std


def _optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "SGD":
        return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9)
    return getattr(torch.optim, cfg["optimizer"])(model.parameters(), lr=cfg["lr"])


def _loss(cfg: Mapping[str, Any], logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if cfg["loss"] == "CrossEntropyLoss":
        return F.cross_entropy(logits, y)
    if cfg["loss"] == "MultiMarginLoss":
        return F.multi_margin_loss(logits, y)
    raise ValueError(f"unknown loss {cfg['loss']!r}")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Test loss (mean cross-entropy per image) and accuracy (a fraction) on the whole split."""
    model.eval()
    logits = torch.cat([model(_inputs(x[i:i + 500])) for i in range(0, len(y), 500)]).float()
    return {"test_loss": F.cross_entropy(logits, y).item(),
            "test_accuracy": (logits.argmax(1) == y).float().mean().item(), "test_images": len(y)}


def _train(cfg: Mapping[str, Any], *, folder: Path, device: torch.device, seed: int) -> dict:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test, _ = _data(folder, device)
    model = CNN(cfg["conv_layers"], cfg["channels"]).to(device)
    optimizer = _optimizer(cfg, model)
    history: dict[str, list] = {"train_loss": [], "train_accuracy": [], "wall_s": [], "cpu_s": []}
    by_epoch = []
    for _ in range(cfg["epochs"]):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(y_train), generator=generator).to(device)
        total, hits = 0.0, 0
        for start in range(0, len(order), cfg["batch_size"]):
            idx = order[start:start + cfg["batch_size"]]
            optimizer.zero_grad(set_to_none=True)
            logits = model(_inputs(x_train[idx]))
            loss = _loss(cfg, logits, y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            hits += int((logits.argmax(1) == y_train[idx]).sum())
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        history["train_loss"].append(total / len(order))
        history["train_accuracy"].append(hits / len(order))
        by_epoch.append(evaluate(model, x_test, y_test)["test_accuracy"])
        if not math.isfinite(total):
            break
    final = evaluate(model, x_test, y_test)
    return {"test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
            "accuracy_by_epoch": by_epoch, "history": history,
            "params": sum(p.numel() for p in model.parameters())}


def run(name: str, cfg: Mapping[str, Any], *, folder: Path, device: torch.device, seed: int) -> dict:
    """Trains one configuration from `seed`; returns {name, factors, test_accuracy, test_loss,
    accuracy_by_epoch, history (train_loss, train_accuracy, wall_s, cpu_s), params}. A
    configuration already trained in this process (same factors, seed, data, device) is reused."""
    key = (tuple(sorted(cfg.items())), seed, str(folder), str(device))
    if key not in _CACHE:
        _CACHE[key] = _train(cfg, folder=folder, device=device, seed=seed)
    factors = {k: cfg[k] for k in ("conv_layers", "optimizer", "lr", "loss", "epochs")}
    return {"name": name, "factors": factors, **_CACHE[key]}


def study(runs: list[tuple[str, Mapping[str, Any]]], *, data: Mapping[str, Path], device: torch.device | str,
          seed: int, epochs: int | None) -> dict:
    """Trains each (name, overrides of BASE) run; returns {runs, best, best_accuracy, classes,
    train_images}. `epochs` overrides BASE's for the runs that do not set their own."""
    device = torch.device(device)
    folder = Path(data["cifar10"])
    results = []
    for name, overrides in runs:
        cfg = {**BASE, **({"epochs": epochs} if epochs else {}), **overrides}
        if cfg["optimizer"] == "SGD" and "lr" not in overrides:
            cfg["lr"] = cfg["sgd_lr"]
        results.append(run(name, cfg, folder=folder, device=device, seed=seed))
    best = max(results, key=lambda r: r["test_accuracy"] if r["test_accuracy"] == r["test_accuracy"] else -1)
    data_ = _data(folder, device)
    return {"runs": results, "best": best["name"], "best_accuracy": best["test_accuracy"],
            "classes": data_[4], "train_images": len(data_[1])}
