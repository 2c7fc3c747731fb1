"""Lab 4B exercise 3 reference: 10 against 30 epochs (2 conv layers, RMSprop lr 0.001).

Two runs, each from the seed (the 10-epoch one is not read off the 30-epoch curve); each run's
`history` keeps the training accuracy and loss per epoch beside the test accuracy, the curves
that show whether 30 epochs overfit. `epochs` passed to train() does not change this exercise's
runs: the epochs are its factor. Evidence: labs/lab4b/lab.yaml and bench/lab4.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE}

RUNS = [("10 epochs", {"epochs": 10}), ("30 epochs", {"epochs": 30})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains both runs from `seed` on `data["cifar10"]`; returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=None)
