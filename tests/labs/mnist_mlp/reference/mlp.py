"""MNIST MLP reference: 784-128-10, ReLU, SGD with momentum, on the first 2000 training images.

The recipe a student of this lab is asked for: inputs ToTensor() then Normalize with the
training split's own mean and std, one epoch over a 2000-image Subset of the training split in
batches of 64, then the test loss and accuracy over the whole test split and the accuracy of
each digit. The test accuracy is also recorded before training and after every epoch
(`history["test_accuracy"]`), so a student's shorter run is compared at the same budget.

Evidence: `dllab reference run tests/labs/mnist_mlp` writes these numbers with their provenance
(device, torch version, seeds, epochs, dataset digest, seconds per epoch); nothing is typed in.
Self-contained: torch and torchvision only, nothing touches CUDA at import time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import torch
import torchvision
from torch import nn
import torch.nn.functional as F

hyp = {
    "epochs": 1,            # passes over the training subset
    "train_images": 2000,   # first images of the training split used for training
    "batch_size": 64,       # images per SGD step
    "lr": 0.05,             # SGD learning rate, per step
    "momentum": 0.9,        # SGD momentum
    "hidden": 128,          # units of the hidden layer
}


class MLP(nn.Module):
    def __init__(self, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def _split(root: Path, *, train: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as float images in 0..1 (N×1×28×28) and int64 labels, on the device."""
    ds = torchvision.datasets.MNIST(root=str(root), train=train, download=False)
    return ds.data.unsqueeze(1).float().div(255.0).to(device), ds.targets.long().to(device)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: list[str]) -> dict:
    """Test loss (mean cross-entropy per image), accuracy and per-class accuracy, as fractions."""
    model.eval()
    logits = torch.cat([model(x[i:i + 1000]) for i in range(0, len(y), 1000)])
    hit = logits.argmax(1) == y
    seen = torch.bincount(y, minlength=len(classes))
    correct = torch.bincount(y[hit], minlength=len(classes))
    return {"test_loss": F.cross_entropy(logits, y).item(), "test_accuracy": hit.float().mean().item(),
            "test_images": len(y),
            "per_class_accuracy": {c: (int(correct[i]) / int(seen[i]) if seen[i] else None)
                                   for i, c in enumerate(classes)}}


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the MLP once on `data["mnist"]` (the MNIST folder); returns the test metrics."""
    device = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    root = Path(data["mnist"]).parent  # torchvision opens <root>/MNIST/raw
    x_train, y_train = _split(root, train=True, device=device)
    x_test, y_test = _split(root, train=False, device=device)
    n = min(hyp["train_images"], len(y_train))
    x_train, y_train = x_train[:n], y_train[:n]
    mean, std = x_train.mean().item(), x_train.std().item()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    classes = [str(d) for d in range(10)]
    model = MLP(hyp["hidden"], len(classes)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=hyp["lr"], momentum=hyp["momentum"])
    history: dict[str, list] = {"train_loss": [], "wall_s": [], "cpu_s": [],
                                "test_accuracy": [evaluate(model, x_test, y_test, classes)["test_accuracy"]]}
    for _ in range(epochs or hyp["epochs"]):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for start in range(0, n, hyp["batch_size"]):
            idx = order[start:start + hyp["batch_size"]]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        history["train_loss"].append(total / n)
        history["test_accuracy"].append(evaluate(model, x_test, y_test, classes)["test_accuracy"])
    return {**evaluate(model, x_test, y_test, classes), "classes": classes, "train_images": n,
            "history": history, "normalization": {"mean": [mean], "std": [std]}}
