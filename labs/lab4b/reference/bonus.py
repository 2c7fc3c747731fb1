"""Lab 4B optional exercise reference: another loss (MultiMarginLoss) and another learning rate
(RMSprop lr 0.0001) against the baseline (RMSprop lr 0.001, cross-entropy).

Same recipe as exercise 1 otherwise (common.BASE: 2 conv layers, 10 epochs). Evidence:
labs/lab4b/lab.yaml and bench/lab4.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE, "low_lr": 0.0001}   # the other learning rate, per step

RUNS = [("RMSprop lr 0.001, cross-entropy", {}),
        ("RMSprop lr 0.0001, cross-entropy", {"lr": hyp["low_lr"]}),
        ("RMSprop lr 0.001, multi-margin loss", {"loss": "MultiMarginLoss"})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the three runs from `seed` on `data["cifar10"]`; returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
