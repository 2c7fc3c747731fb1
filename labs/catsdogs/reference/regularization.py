"""Cats vs. dogs, part `regularization`: the baseline CNN against regularized copies of it.

Every run trains the same CNN (baseline.CNN) from the same seed on the same train/validation
split with the same recipe (baseline.hyp), changing one regularizer; each run's `factors` say
what it was trained with, and `gap` (train - validation accuracy, eval mode) is what each
regularized run is compared with the baseline on:
  - augmentation: random flip, rotation, scale and shift of the training batches only;
  - dropout: p 0.5 before both linear layers (active in train mode only);
  - weight decay: Adam's L2 weight decay 0.001 on the optimizer that steps;
  - batch norm: BatchNorm2d after every conv layer;
  - early stopping: the weights of the epoch with the lowest VALIDATION loss, patience 3.
`test_accuracy` is the validation accuracy (Kaggle's test1/ has no labels). Measured numbers:
bench/catsdogs.md and labs/catsdogs/lab.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .baseline import fit, hyp as BASE

hyp: dict[str, Any] = {
    **BASE,
    "dropout_p": 0.5,          # the dropout run's probability
    "l2": 1e-3,                # the weight-decay run's Adam weight_decay, per step
    "early_patience": 3,       # the early-stopping run's patience, epochs
}
"""The baseline's recipe (baseline.hyp, units there) and each regularized run's setting."""

RUNS: list[tuple[str, dict[str, Any]]] = [
    ("baseline", {}),
    ("augmentation", {"augment": True}),
    ("dropout", {"dropout": hyp["dropout_p"]}),
    ("weight decay", {"weight_decay": hyp["l2"]}),
    ("batch norm", {"batchnorm": True}),
    ("early stopping", {"patience": hyp["early_patience"]}),
]
"""(name, overrides of the baseline recipe) per run."""

_FACTORS = ("augment", "dropout", "weight_decay", "batchnorm", "patience", "epochs")


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains every run of RUNS from `seed` on `data["catsdogs"]`; returns the study: `runs`
    (name, factors, test_accuracy = validation accuracy, train_accuracy, gap, accuracy_by_epoch,
    history, ...), `best` (the run of highest validation accuracy) and `best_accuracy`."""
    device = torch.device(device)
    folder = Path(data["catsdogs"])
    runs = []
    for name, overrides in RUNS:
        cfg = {**BASE, **({"epochs": epochs} if epochs else {}), **overrides}
        result = fit(cfg, folder=folder, device=device, seed=seed)
        runs.append({"name": name, "factors": {k: cfg[k] for k in _FACTORS}, **result})
    best = max(runs, key=lambda r: r["test_accuracy"])
    return {"runs": runs, "best": best["name"], "best_accuracy": best["test_accuracy"],
            "classes": runs[0]["classes"], "train_images": runs[0]["train_images"]}
