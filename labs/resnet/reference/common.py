"""Training pieces shared by the ResNet / SE-ResNet references (CIFAR-10, a ResNet-8, CPU-sized).

The network is He et al.'s CIFAR ResNet (CVPR 2016, section 4.2) cut to one BasicBlock per stage:
a 3x3 stem of 16 channels, three stages of 16, 32 and 64 channels (the last two start with
stride 2 and a 1x1 stride-2 projection shortcut + BatchNorm, exactly where the map halves and
the channels double; identity shortcuts elsewhere), global average pooling and one Linear layer:
8 weighted layers on the main path. The SE variant (Hu et al., CVPR 2018) scales each block's
residual branch, before the addition, by sigmoid(FC(ReLU(FC(global average)))) with reduction
`se_reduction`. Both train with the same recipe (`BASE`) from the same seed; the whole split
lives on the device as one uint8 tensor and batches are index slices of it (ToTensor() then
Normalize per batch, the numbers of a DataLoader over torchvision.datasets.CIFAR10), with the
usual random crop (padding 4) and horizontal flip. Nothing here touches CUDA at import time.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from grader.datasets import register_cifar10_checksums

BASE = {
    "widths": (16, 32, 64),   # channels of the three stages; stages 2 and 3 halve the map (stride 2)
    "se": False,              # squeeze-and-excitation gate in every block
    "se_reduction": 4,        # SE hidden units = channels / this
    "optimizer": "SGD",       # momentum 0.9, Nesterov
    "lr": 0.05,               # peak learning rate per step, after a one-epoch linear warm-up
    "weight_decay": 5e-4,     # L2 coefficient in SGD (not on BatchNorm parameters)
    "batch_size": 64,         # images per step
    "epochs": 6,              # passes over the training split (cosine decay to 0 after the warm-up)
    "mean": (0.4914, 0.4822, 0.4465),  # Normalize() per RGB channel, pixels in 0..1 (CIFAR-10's)
    "std": (0.2470, 0.2435, 0.2616),
}
"""The recipe both parts share; the `se` part sets `se: True` and nothing else."""


class SE(nn.Module):
    """Squeeze (global average) and excitation (FC, ReLU, FC, sigmoid): a gate per channel."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.pool(x).flatten(1)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(w))))
        return x * w[:, :, None, None]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ SE) added to the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, se: bool, reduction: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.se = SE(c_out, reduction) if se else nn.Identity()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # the map shrinks: a 1x1 projection of the same stride
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The ResNet-8 of the module docstring (`se`: SE-ResNet-8)."""

    def __init__(self, widths: tuple[int, ...], se: bool, reduction: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, c_in = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(BasicBlock(c_in, w, 1 if i == 0 else 2, se, reduction))
            c_in = w
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


_DATA: dict[tuple[str, str], tuple] = {}


def load(folder: Path, device: torch.device) -> tuple:
    """CIFAR-10's splits from `folder` (cifar-10-batches-py) with torchvision's own loader:
    (x_train uint8 NCHW, y_train, x_test, y_test, classes) on `device`."""
    key = (str(folder), str(device))
    if key not in _DATA:
        root = Path(folder).parent
        register_cifar10_checksums(root)
        out = []
        for train in (True, False):
            ds = torchvision.datasets.CIFAR10(root=str(root), train=train, download=False)
            out += [torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous().to(device),
                    torch.as_tensor(ds.targets, dtype=torch.long, device=device)]
        _DATA.clear()
        _DATA[key] = (*out, list(ds.classes))
    return _DATA[key]


def _inputs(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(BASE["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(BASE["std"], device=x.device).view(1, 3, 1, 1)
    return (x.float().div(255.0) - mean) / std


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (padding 4, the same shift for the batch: cheap on a CPU) and per-image flip."""
    dx, dy = (int(v) for v in torch.randint(0, 9, (2,), generator=generator))
    padded = F.pad(x, (4, 4, 4, 4))
    x = padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
    flip = torch.rand(len(x), generator=generator).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Test loss (mean cross-entropy per image) and accuracy (a fraction) on the whole split."""
    model.eval()
    logits = torch.cat([model(_inputs(x[i:i + 500])) for i in range(0, len(y), 500)]).float()
    return {"test_loss": F.cross_entropy(logits, y).item(),
            "test_accuracy": (logits.argmax(1) == y).float().mean().item(), "test_images": len(y)}


def train_one(cfg: Mapping[str, Any], *, data: Mapping[str, Path], device: torch.device | str, seed: int,
              epochs: int | None) -> dict:
    """Trains `cfg` from `seed` on `data["cifar10"]`; returns test_accuracy, test_loss, test_images,
    history (train_loss, train_accuracy, test_accuracy, wall_s per epoch), params, depth, classes,
    train_images."""
    device = torch.device(device)
    epochs = epochs or cfg["epochs"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test, classes = load(Path(data["cifar10"]), device)
    model = ResNet(tuple(cfg["widths"]), cfg["se"], cfg["se_reduction"]).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": cfg["weight_decay"]},
                                 {"params": rest, "weight_decay": 0.0}], lr=cfg["lr"], momentum=0.9, nesterov=True)
    steps_per_epoch = -(-len(y_train) // cfg["batch_size"])
    total = epochs * steps_per_epoch

    def lr_at(step: int) -> float:  # one epoch of linear warm-up, then cosine to 0
        if step < steps_per_epoch:
            return (step + 1) / steps_per_epoch
        t = (step - steps_per_epoch) / max(1, total - steps_per_epoch)
        return 0.5 * (1 + np.cos(np.pi * t))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    history: dict[str, list] = {"train_loss": [], "train_accuracy": [], "test_accuracy": [], "wall_s": []}
    for _ in range(epochs):
        wall = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=generator).to(device)
        loss_sum, hits = 0.0, 0
        for start in range(0, len(order), cfg["batch_size"]):
            idx = order[start:start + cfg["batch_size"]]
            optimizer.zero_grad(set_to_none=True)
            logits = model(_inputs(_augment(x_train[idx], generator)))
            loss = F.cross_entropy(logits, y_train[idx])
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(idx)
            hits += int((logits.argmax(1) == y_train[idx]).sum())
        history["wall_s"].append(round(time.perf_counter() - wall, 3))
        history["train_loss"].append(loss_sum / len(order))
        history["train_accuracy"].append(hits / len(order))
        history["test_accuracy"].append(evaluate(model, x_test, y_test)["test_accuracy"])
    final = evaluate(model, x_test, y_test)
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                and not (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)) and not any(
                    m is s.fc1 or m is s.fc2 for s in model.modules() if isinstance(s, SE))]
    return {**final, "history": history, "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "depth": len(weighted), "classes": classes, "train_images": len(y_train)}
