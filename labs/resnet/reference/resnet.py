"""ResNet practice reference (part `resnet`): a ResNet-8 on CIFAR-10 with 1x1 stride-2 projection shortcuts.

common.BASE's recipe (SGD Nesterov lr 0.05 with warm-up and cosine decay, weight decay 5e-4,
batches of 64, random crop and flip, 6 epochs), common.ResNet without SE: depth 8, 78,042
trainable parameters. Evidence (train() on seeds 0, 1, 2, as `dllab reference run resnet --seeds 3` runs it, `tiny` CIFAR-10
stand-in: 1000 training, 500 test images; CPU, torch 2.14.1, 1 thread), seeds 0, 1, 2:
test accuracy 77.7 ± 1.9 % (79.2, 78.4, 75.6), 4.2 s per epoch on a shared machine (labs/resnet/lab.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, train_one

hyp = {**BASE}
"""The recipe (common.BASE): units there."""


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the ResNet-8 from `seed` on `data["cifar10"]` (cifar-10-batches-py); returns its metrics."""
    return train_one(hyp, data=data, device=device, seed=seed, epochs=epochs)
