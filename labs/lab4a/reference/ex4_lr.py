"""Lab 4A exercise 4 reference: learning rate 0.002 against 0.02 (SGD, momentum 0.9).

Same recipe as exercise 1 (common.BASE: the 784-100-100-10 MLP); only the learning rate changes.
Evidence: labs/lab4a/lab.yaml and bench/lab4.md (mean ± std over 3 seeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE}

RUNS = [("lr 0.002", {"lr": 0.002}), ("lr 0.02", {"lr": 0.02})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains both runs from `seed` on `data["mnist"]`; returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
