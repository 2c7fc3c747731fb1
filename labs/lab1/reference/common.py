"""Training pieces shared by the LAB01 reference solutions.

The data lives on the device as one uint8 tensor and batches are index slices of it:
on a GPU this removes the DataLoader from the hot path (airbench's trick), on the CPU
it costs nothing. Nothing here touches CUDA at import time.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def seed_everything(seed: int) -> torch.Generator:
    """Seeds python, numpy and torch; returns a generator for shuffling batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class LeNet(nn.Module):
    """The handout's CNN (the PyTorch CIFAR-10 tutorial net), with a settable class count."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


@dataclass
class DeviceData:
    """A whole split as uint8 NCHW images and int64 labels, already on the device."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: Sequence[int], *, mean: Sequence[float],
                   std: Sequence[float], device: torch.device) -> "DeviceData":
        """`images` is N×H×W×C uint8, as the CIFAR pickles and decoded JPEGs are."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return cls(images=x.to(device), labels=torch.as_tensor(labels, dtype=torch.long, device=device),
                   mean=torch.tensor(mean, device=device).view(1, -1, 1, 1),
                   std=torch.tensor(std, device=device).view(1, -1, 1, 1))

    def __len__(self) -> int:
        return self.labels.numel()

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ToTensor() then Normalize(mean, std), done on the device for a batch of indices."""
        x = self.images[index].float().div_(255.0)
        return (x - self.mean) / self.std, self.labels[index]

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        order = (torch.randperm(len(self), generator=generator) if generator is not None
                 else torch.arange(len(self)))
        order = order.to(self.labels.device)
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])


def train_epoch(model: nn.Module, data: DeviceData, optimizer: torch.optim.Optimizer, *,
                batch_size: int, generator: torch.Generator, amp: bool) -> float:
    """One pass over `data`; returns the mean training loss per sample."""
    model.train()
    device_type = data.labels.device.type
    total, count = 0.0, 0
    for x, y in data.batches(batch_size, generator):
        optimizer.zero_grad(set_to_none=True)
        # bf16 autocast only on CUDA: on the CPU it is slower and changes nothing we report.
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp and device_type == "cuda"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * y.numel()
        count += y.numel()
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, data: DeviceData, classes: Sequence[str], *,
             batch_size: int = 1000) -> dict:
    """Test loss (mean cross-entropy per image), accuracy and per-class accuracy, as fractions."""
    model.eval()
    n_cls = len(classes)
    correct = torch.zeros(n_cls, dtype=torch.long, device=data.labels.device)
    seen = torch.zeros(n_cls, dtype=torch.long, device=data.labels.device)
    loss_sum = 0.0
    for x, y in data.batches(batch_size):
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        hit = logits.argmax(1) == y
        seen += torch.bincount(y, minlength=n_cls)
        correct += torch.bincount(y[hit], minlength=n_cls)
    n = int(seen.sum())
    return {
        "test_loss": loss_sum / max(n, 1),
        "test_accuracy": int(correct.sum()) / max(n, 1),
        "test_images": n,
        "per_class_accuracy": {c: (int(correct[i]) / int(seen[i]) if seen[i] else None)
                               for i, c in enumerate(classes)},
    }


def layer_stats(model: nn.Module, *, bins: int = 30) -> dict:
    """Per-parameter statistics and a histogram: what "weight distribution of each layer" shows."""
    out = {}
    for name, p in model.named_parameters():
        v = p.detach().float().cpu().flatten()
        lo, hi = float(v.min()), float(v.max())
        counts = torch.histc(v, bins=bins, min=lo, max=hi if hi > lo else lo + 1e-6)
        out[name] = {"shape": list(p.shape), "numel": v.numel(), "mean": float(v.mean()),
                     "std": float(v.std()) if v.numel() > 1 else 0.0, "min": lo, "max": hi,
                     "histogram": {"counts": [int(c) for c in counts], "range": [lo, hi]}}
    return out


def fit(model: nn.Module, train: DeviceData, *, epochs: int, batch_size: int,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        make_scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
        generator: torch.Generator, amp: bool,
        on_epoch: Callable[[int, float], float | None] | None = None,
        test_accuracy: Callable[[], float] | None = None) -> dict:
    """Trains for `epochs`; returns the per-epoch loss, lr in effect, and seconds per epoch.

    `on_epoch(epoch, train_loss)` may return a validation metric, which a ReduceLROnPlateau
    scheduler then steps on. `test_accuracy()`, when given, is recorded before training and
    after every epoch (`history["test_accuracy"]`, fractions, index = epochs trained): the
    curve a student's shorter run is compared against. It is not timed with the epoch.
    """
    optimizer = make_optimizer(model)
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    history = {"train_loss": [], "lr": [], "val_metric": [], "wall_s": [], "cpu_s": []}
    if test_accuracy is not None:
        history["test_accuracy"] = [test_accuracy()]
    for epoch in range(epochs):
        history["lr"].append(optimizer.param_groups[0]["lr"])
        wall, cpu = time.perf_counter(), time.process_time()
        if train.labels.device.type == "cuda":
            torch.cuda.synchronize()
        loss = train_epoch(model, train, optimizer, batch_size=batch_size, generator=generator, amp=amp)
        if train.labels.device.type == "cuda":
            torch.cuda.synchronize()
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        history["train_loss"].append(loss)
        metric = on_epoch(epoch, loss) if on_epoch else None
        history["val_metric"].append(metric)
        if test_accuracy is not None:
            history["test_accuracy"].append(test_accuracy())
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(metric if metric is not None else loss)
        elif scheduler is not None:
            scheduler.step()
        if not math.isfinite(loss):
            break  # a diverged run (too high a learning rate) stays in the study as diverged
    return history
