"""Lab 4B exercise 2 reference: RMSprop (lr 0.001) against SGD (lr 0.01, momentum 0.9).

Same recipe as exercise 1 (common.BASE: 2 conv layers, 10 epochs); only the optimizer (and the
learning rate each is used with) changes. Evidence: labs/lab4b/lab.yaml and bench/lab4.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE}

RUNS = [("RMSprop", {"optimizer": "RMSprop"}), ("SGD", {"optimizer": "SGD"})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains both runs from `seed` on `data["cifar10"]`; returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
