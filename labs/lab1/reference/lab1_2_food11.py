"""LAB 1-2 reference: the LAB 1-1 CNN adapted to Food-11's 11 classes.

Food-11 ships flat (`training/<class>_<n>.jpg`); like every student, this first restructures
it into one folder per class so torchvision's ImageFolder reads it, then resizes to 32x32 so
the handout CNN fits unchanged except for its 11-way last layer. Inputs are normalized with
Food-11's own training-split mean and std (the bonus item), computed here, not typed in.
Reports test loss, accuracy and per-class accuracy on the `evaluation` split, validation
accuracy, the model used and the mean/std applied, and the test accuracy before training and
after every epoch (`history["test_accuracy"]`), which a student's shorter run is compared with.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torchvision
from torchvision import transforms

from grader.datasets import FOOD11_CLASSES, channel_stats, food11_imagefolder
from .common import DeviceData, LeNet, evaluate, fit, layer_stats, seed_everything

hyp = {
    "epochs": 10,        # passes over the training split
    "batch_size": 32,    # images per SGD step
    "lr": 0.01,          # SGD learning rate, per step
    "momentum": 0.9,     # SGD momentum
    "image_size": 32,    # Resize((32, 32)) so the 400-feature conv stack is unchanged
    "amp": True,         # bf16 autocast, used on CUDA only
}


def decode(folder: Path) -> tuple[np.ndarray, list[int], list[str]]:
    """Every image of an ImageFolder split, resized, as N×H×W×3 uint8."""
    size = hyp["image_size"]
    ds = torchvision.datasets.ImageFolder(str(folder), transform=transforms.Resize((size, size)))
    images = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img, _ in ds])
    return images, list(ds.targets), list(ds.classes)


@functools.lru_cache(maxsize=4)
def _training_stats(root: Path, mtime_ns: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Food-11's training-split mean and std per channel, once per folder (and its time) for
    all seeds of a run: the same numbers a student's `dllab data stats food11` prints."""
    s = channel_stats("food11", root, progress=False)
    return tuple(s.mean), tuple(s.std)


def train(*, data: Mapping[str, Path], device: torch.device, seed: int, epochs: int | None = None) -> dict:
    """Trains once on Food-11 (`data["food11"]` is the `Food-11` folder)."""
    root = Path(data["food11"])
    generator = seed_everything(seed)
    mean, std = _training_stats(root.resolve(), root.stat().st_mtime_ns)
    with tempfile.TemporaryDirectory(prefix="food11-imagefolder-") as tmp:
        tree = food11_imagefolder(root, Path(tmp))
        splits = {name: decode(tree / name) for name in ("training", "validation", "evaluation")}
    folders = splits["training"][2]
    classes = [FOOD11_CLASSES[int(c)] for c in folders]
    kw = dict(mean=mean, std=std, device=device)
    sets = {name: DeviceData.from_numpy(x, y, **kw) for name, (x, y, _) in splits.items()}
    model = LeNet(num_classes=len(classes)).to(device)

    def validate(epoch: int, loss: float) -> float:
        return evaluate(model, sets["validation"], classes)["test_accuracy"]

    history = fit(
        model, sets["training"], epochs=epochs or hyp["epochs"], batch_size=hyp["batch_size"],
        make_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=hyp["lr"], momentum=hyp["momentum"]),
        generator=generator, amp=hyp["amp"], on_epoch=validate,
        test_accuracy=lambda: evaluate(model, sets["evaluation"], classes)["test_accuracy"])
    metrics = evaluate(model, sets["evaluation"], classes)
    return {**metrics, "classes": classes, "train_images": len(sets["training"]),
            "validation_accuracy": history["val_metric"][-1], "history": history,
            "model": {"class": "LeNet", "num_classes": len(classes),
                      "parameters": sum(p.numel() for p in model.parameters()), "repr": repr(model)},
            "layers": layer_stats(model),
            "normalization": {"mean": list(mean), "std": list(std), "dataset": "food11", "split": "training"}}
