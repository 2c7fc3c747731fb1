"""Lab 4A exercise 3 reference: 2 hidden layers of 100 against 2 of 200 units (ReLU).

Same recipe as exercise 1 (common.BASE); only the units per hidden layer change. Evidence:
labs/lab4a/lab.yaml and bench/lab4.md (mean ± std over 3 seeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE}

RUNS = [("100 units per layer", {"width": 100}), ("200 units per layer", {"width": 200})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains both runs from `seed` on `data["mnist"]`; returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
