"""Lab 4A optional exercise reference: another optimizer (Adam, lr 0.001) and another loss
(MultiMarginLoss) against the baseline (SGD lr 0.02 momentum 0.9, cross-entropy).

Same recipe as exercise 1 otherwise (common.BASE: the 784-100-100-10 MLP, 5 epochs, real
MNIST). Evidence: labs/lab4a/lab.yaml and bench/lab4.md (mean ± std over 3 seeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import BASE, study

hyp = {**BASE, "adam_lr": 0.001}   # Adam's learning rate, per step (torch's default)

RUNS = [("SGD, cross-entropy", {}),
        ("Adam, cross-entropy", {"optimizer": "Adam", "lr": hyp["adam_lr"]}),
        ("SGD, multi-margin loss", {"loss": "MultiMarginLoss"})]


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the three runs from `seed` on `data["mnist"]`; returns the study."""
    return study(RUNS, data=data, device=device, seed=seed, epochs=epochs)
