"""Lab 4B exercise 1 reference: 2 against 4 Conv2d layers (3x3, ReLU, max-pool after each pair).

Both runs: RMSprop lr 0.001, batches of 64, cross-entropy, 10 epochs, Normalize((0.5,)*3,
(0.5,)*3), the same seed. Evidence (`dllab reference run lab4b --data cifar10=DIR --seeds 3`,
on the `small` CIFAR-10 stand-in, CPU): labs/lab4b/lab.yaml and bench/lab4.md, mean ± std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE}
"""The shared recipe (common.BASE): units there."""

RUNS = [("2 conv layers", {"conv_layers": 2}), ("4 conv layers", {"conv_layers": 4})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains both runs from `seed` on `data["cifar10"]` (cifar-10-batches-py); returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
