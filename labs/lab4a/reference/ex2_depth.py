"""Lab 4A exercise 2 reference: 2 against 4 hidden layers of 100 units (ReLU).

Same recipe as exercise 1 (common.BASE: SGD lr 0.02 momentum 0.9, batches of 64, cross-entropy,
5 epochs, real MNIST); only the number of hidden layers changes. Evidence: labs/lab4a/lab.yaml
and bench/lab4.md (mean ± std over 3 seeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE}

RUNS = [("2 hidden layers of 100", {"depth": 2}), ("4 hidden layers of 100", {"depth": 4})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains both runs from `seed` on `data["mnist"]`; returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
