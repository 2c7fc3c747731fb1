"""LAB 1-1 reference: the handout's CNN on CIFAR-10.

Model: conv 3→6 5x5, maxpool 2, conv 6→16 5x5, maxpool 2, fc 400→120→84→10 (the PyTorch
CIFAR-10 tutorial net the handout's example notebook uses). Optimizer: SGD lr 0.001,
momentum 0.9, batch size 4, inputs ToTensor() then Normalize((0.5,)*3, (0.5,)*3), as in that
notebook. Reports what the lab asks students to show: test loss and accuracy over the whole
test split, accuracy for each of the 10 classes, and the weight/bias distribution of every layer;
also the test accuracy before training and after every epoch (`history["test_accuracy"]`), which
a student's shorter run is compared with at the same number of epochs.

Evidence: `dllab reference run lab1` (this folder's lab.yaml names this file) writes these numbers with their provenance (device,
torch version, seeds, epochs, dataset manifest digest, seconds per epoch) and mean ± std over
seeds; nothing here is typed in by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torchvision

from grader.datasets import register_cifar10_checksums

from .common import DeviceData, LeNet, evaluate, fit, layer_stats, seed_everything

hyp = {
    "epochs": 2,             # passes over the training split (the tutorial's count)
    "batch_size": 4,         # images per SGD step (the tutorial's)
    "lr": 0.001,             # SGD learning rate, per step
    "momentum": 0.9,         # SGD momentum
    "mean": (0.5, 0.5, 0.5),  # Normalize() mean per RGB channel, pixel values in 0..1
    "std": (0.5, 0.5, 0.5),   # Normalize() std per RGB channel
    "amp": True,             # bf16 autocast, used on CUDA only
}


def load(root: Path, device: torch.device) -> tuple[DeviceData, DeviceData, list[str]]:
    """Reads the python-pickle batches with torchvision's own CIFAR10 loader (which md5-checks
    them: a stand-in's own checksums are registered first; the real CIFAR-10 is left as is)."""
    register_cifar10_checksums(root)
    train = torchvision.datasets.CIFAR10(root=str(root), train=True, download=False)
    test = torchvision.datasets.CIFAR10(root=str(root), train=False, download=False)
    kw = dict(mean=hyp["mean"], std=hyp["std"], device=device)
    return (DeviceData.from_numpy(train.data, train.targets, **kw),
            DeviceData.from_numpy(test.data, test.targets, **kw), list(train.classes))


def train(*, data: Mapping[str, Path], device: torch.device, seed: int, epochs: int | None = None) -> dict:
    """Trains the handout CNN once; returns test metrics, per-layer stats and timings.
    `data["cifar10"]` is the `cifar-10-batches-py` folder (torchvision's root is its parent)."""
    generator = seed_everything(seed)
    train_data, test_data, classes = load(Path(data["cifar10"]).parent, device)
    model = LeNet(num_classes=len(classes)).to(device)
    history = fit(
        model, train_data, epochs=epochs or hyp["epochs"], batch_size=hyp["batch_size"],
        make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=hyp["lr"], momentum=hyp["momentum"]),
        generator=generator, amp=hyp["amp"],
        test_accuracy=lambda: evaluate(model, test_data, classes)["test_accuracy"])
    metrics = evaluate(model, test_data, classes)
    return {**metrics, "classes": classes, "train_images": len(train_data), "history": history,
            "layers": layer_stats(model), "normalization": {"mean": list(hyp["mean"]), "std": list(hyp["std"])}}
