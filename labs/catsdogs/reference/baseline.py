"""Cats vs. dogs, part `baseline`: a small CNN that overfits, with its train and validation curves.

Self-contained (airbench style): the recipe is `hyp`; `train` reads every `train/cat.<n>.jpg`
and `train/dog.<n>.jpg` as a notebook does (PIL, resized to `side` x `side`), holds out a
random `val_fraction` of them as the validation split (Kaggle's test1/ has no labels), and
trains the CNN on the rest. The whole split lives on the device as one uint8 tensor and batches
are index slices of it. Nothing here touches CUDA at import time.

`test_accuracy` is the VALIDATION accuracy: the only labelled held-out split a student has.
Measured on the `small` stand-in (2000 images; bench/catsdogs.md): the baseline reaches
~98 % training and ~69 % validation accuracy in 12-15 epochs, its validation loss rising after
epoch ~7: it overfits.
"""

from __future__ import annotations

import math
import random
import re
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

hyp: dict[str, Any] = {
    "side": 64,               # input images are resized to side x side pixels (bilinear)
    "val_fraction": 0.2,      # share of train/ held out for validation (a fraction 0..1)
    "split_seed": 0,          # the split is the same for every run and seed, as in one notebook
    "channels": 16,           # output channels of the first conv block; the 2nd and 3rd have 2x and 4x
    "hidden": 128,            # units of the hidden linear layer
    "lr": 1e-3,               # Adam's learning rate, per step
    "batch_size": 32,         # images per step
    "epochs": 15,             # passes over the training split
    "mean": (0.5, 0.5, 0.5),  # Normalize() per RGB channel, pixels in 0..1
    "std": (0.25, 0.25, 0.25),
    # Regularizers, all off in the baseline (part `regularization` turns them on one at a time):
    "augment": False,         # random flip, rotation ±15°, scale 0.85-1.15, shift ±10 % of the training batches
    "dropout": 0.0,           # Dropout probability before both linear layers (0: none)
    "weight_decay": 0.0,      # Adam's L2 weight decay, per step (0: none)
    "batchnorm": False,       # BatchNorm2d after every conv layer
    "patience": None,         # early stopping: epochs without a lower validation loss (None: never stop)
}
"""The recipe; units in the comments."""

CLASSES = ["cat", "dog"]
_NAME = re.compile(r"^(cat|dog)\.\d+\.jpg$")
_DATA: dict[tuple, tuple] = {}


class CNN(nn.Module):
    """3 x (3x3 Conv2d, [BatchNorm2d], ReLU, 2x2 max-pool), then [Dropout] Linear(., hidden) ReLU
    [Dropout] Linear(hidden, 2)."""

    def __init__(self, side: int, channels: int, hidden: int, dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in (channels, 2 * channels, 4 * channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), *([nn.BatchNorm2d(c)] if batchnorm else []),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * (side // 8) ** 2, hidden),
                                        nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load(folder: Path, cfg: Mapping[str, Any], device: torch.device) -> tuple:
    """(x_train, y_train, x_val, y_val) on `device`: uint8 NCHW images and int64 labels (cat 0,
    dog 1) of `folder`/train, split by `cfg["split_seed"]`. Raises FileNotFoundError when
    `folder` holds no train/cat.<n>.jpg."""
    key = (str(folder), cfg["side"], cfg["val_fraction"], cfg["split_seed"], str(device))
    if key not in _DATA:
        paths = sorted(p for p in (Path(folder) / "train").iterdir() if _NAME.match(p.name))
        if not paths:
            raise FileNotFoundError(f"{folder}/train holds no cat.<n>.jpg / dog.<n>.jpg")
        side = cfg["side"]
        x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((side, side), Image.BILINEAR)) for p in paths])
        y = torch.tensor([CLASSES.index(p.name.split(".")[0]) for p in paths])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg["split_seed"]))
        n_val = round(len(y) * cfg["val_fraction"])
        val, tr = order[:n_val], order[n_val:]
        _DATA.clear()
        _DATA[key] = tuple(t.to(device) for t in (x[tr], y[tr], x[val], y[val]))
    return _DATA[key]


def _inputs(x: torch.Tensor, cfg: Mapping[str, Any]) -> torch.Tensor:
    mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1)
    return (x.float().div(255.0) - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, rotation ±15°, scale 0.85-1.15 and shift ±10 % of each image of a
    float batch (edges repeated), as torchvision's RandomHorizontalFlip + RandomAffine do."""
    u = torch.rand(len(x), 5, generator=gen).to(x.device)
    angle = (u[:, 0] * 2 - 1) * math.radians(15)
    scale = 0.85 + 0.3 * u[:, 1]
    flip = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, (u[:, 3] * 2 - 1) * 0.2], 1),
                         torch.stack([sin * flip, cos, (u[:, 4] * 2 - 1) * 0.2], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Mapping[str, Any]) -> tuple[float, float]:
    """(accuracy as a fraction 0..1, mean cross-entropy per image) of the whole split, eval mode."""
    model.eval()
    logits = torch.cat([model(_inputs(x[i:i + 256], cfg)) for i in range(0, len(y), 256)]).float()
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def fit(cfg: Mapping[str, Any], *, folder: Path, device: torch.device, seed: int) -> dict:
    """Trains one configuration from `seed`. Returns test_accuracy (= val_accuracy), val_loss,
    train_accuracy, train_loss (eval mode, on the whole training split), gap (train - val
    accuracy, a fraction), stopped_epoch (early stopping's epoch of the kept weights, else None),
    accuracy_by_epoch (validation), history (train/val accuracy and loss per epoch from epoch 0,
    running_accuracy of the training batches, wall_s, cpu_s), params, train_images, test_images."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_tr, y_tr, x_val, y_val = load(folder, cfg, device)
    model = CNN(cfg["side"], cfg["channels"], cfg["hidden"], cfg["dropout"], cfg["batchnorm"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    history: dict[str, list] = {k: [] for k in ("train_accuracy", "train_loss", "val_accuracy", "val_loss",
                                                 "running_accuracy", "wall_s", "cpu_s")}

    def record() -> None:
        for split, (xs, ys) in (("train", (x_tr, y_tr)), ("val", (x_val, y_val))):
            acc, loss = evaluate(model, xs, ys, cfg)
            history[f"{split}_accuracy"].append(acc)
            history[f"{split}_loss"].append(loss)

    record()  # epoch 0: the untrained net
    best_loss, best_state, best_epoch = math.inf, None, None
    for epoch in range(1, cfg["epochs"] + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(y_tr), generator=gen).to(device)
        hits = 0
        for start in range(0, len(order), cfg["batch_size"]):
            idx = order[start:start + cfg["batch_size"]]
            xb = _inputs(x_tr[idx], cfg)
            if cfg["augment"]:
                xb = augment(xb, gen)
            logits = model(xb)
            loss = F.cross_entropy(logits, y_tr[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            hits += int((logits.argmax(1) == y_tr[idx]).sum())
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        history["running_accuracy"].append(hits / len(order))
        record()
        if cfg["patience"] is not None:  # early stopping on the VALIDATION loss, never a test split
            if history["val_loss"][-1] < best_loss:
                best_loss, best_epoch = history["val_loss"][-1], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= cfg["patience"]:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    train_acc, train_loss = evaluate(model, x_tr, y_tr, cfg)
    val_acc, val_loss = evaluate(model, x_val, y_val, cfg)
    history["test_accuracy"] = list(history["val_accuracy"])  # the reference's curve: validation
    return {"test_accuracy": val_acc, "test_loss": val_loss, "validation_accuracy": val_acc,
            "val_accuracy": val_acc, "val_loss": val_loss, "train_accuracy": train_acc, "train_loss": train_loss,
            "gap": train_acc - val_acc, "stopped_epoch": best_epoch, "accuracy_by_epoch": history["val_accuracy"][1:],
            "history": history, "params": sum(p.numel() for p in model.parameters()),
            "train_images": len(y_tr), "test_images": len(y_val), "classes": list(CLASSES),
            "normalization": {"mean": list(cfg["mean"]), "std": list(cfg["std"])}}


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the baseline from `seed` on `data["catsdogs"]` (the cats-vs-dogs folder holding
    train/); returns its validation accuracy as `test_accuracy`, train accuracy and the gap."""
    cfg = {**hyp, **({"epochs": epochs} if epochs else {})}
    return fit(cfg, folder=Path(data["catsdogs"]), device=torch.device(device), seed=seed)
