"""Lab 4A exercise 1 reference: the 784-100-100-10 MLP (ReLU) against a linear model (784-10).

Both runs: real MNIST (60000 training images, ToTensor() scaling, no normalization), SGD lr 0.02
momentum 0.9, batches of 64, cross-entropy, 5 epochs, the same seed. Evidence (`dllab reference
run lab4a --data mnist=DIR --seeds 3`, CPU, torch 2.14; measured numbers in
labs/lab4a/lab.yaml and bench/lab4.md): MLP 97.35 ± 0.16 %, linear 92.22 ± 0.05 % test
accuracy (seeds 0-2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE}
"""The shared recipe (common.BASE): units there."""

RUNS = [("MLP 784-100-100-10", {}), ("linear 784-10", {"model_kind": "linear"})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains both runs from `seed` on `data["mnist"]` (the MNIST folder); returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
