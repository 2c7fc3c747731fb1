"""LAB 1-3 reference: a learning-rate and decay-schedule study on the LAB 1-1 setup.

Several initial learning rates with a constant rate, then the middle rate under four decay
schedules (step, exponential, cosine, plateau), each trained from the same seed on CIFAR-10
with the handout CNN and evaluated on the test split. The lab asks students to show how they
chose the initial rate or the decay method; this gives the accuracies such a study should see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .common import LeNet, evaluate, fit, seed_everything
from .lab1_1_cifar10 import hyp as lab1_1_hyp, load

hyp = {
    "epochs": 4,                          # passes per configuration (decay needs a few epochs)
    "batch_size": 4,                      # images per SGD step, as in LAB 1-1
    "momentum": 0.9,                      # SGD momentum, as in LAB 1-1
    "initial_lrs": (0.1, 0.01, 0.001),    # constant-rate runs, per step
    "decay_lr": 0.01,                     # initial rate the decay schedules start from
    "step": {"step_size": 1, "gamma": 0.5},     # StepLR: halve every epoch
    "exponential": {"gamma": 0.7},              # ExponentialLR: ×0.7 per epoch
    "plateau": {"factor": 0.5, "patience": 0},  # ReduceLROnPlateau on test accuracy
}


def configs(epochs: int) -> list[dict]:
    """The study's runs: (name, initial lr, schedule factory)."""
    runs = [{"name": f"constant lr={lr:g}", "lr": lr, "schedule": "constant", "make": None}
            for lr in hyp["initial_lrs"]]
    lr = hyp["decay_lr"]
    sched = torch.optim.lr_scheduler
    runs += [
        {"name": f"step lr={lr:g}", "lr": lr, "schedule": "step",
         "make": lambda o: sched.StepLR(o, **hyp["step"])},
        {"name": f"exponential lr={lr:g}", "lr": lr, "schedule": "exponential",
         "make": lambda o: sched.ExponentialLR(o, **hyp["exponential"])},
        {"name": f"cosine lr={lr:g}", "lr": lr, "schedule": "cosine",
         "make": lambda o: sched.CosineAnnealingLR(o, T_max=epochs)},
        {"name": f"plateau lr={lr:g}", "lr": lr, "schedule": "plateau",
         "make": lambda o: sched.ReduceLROnPlateau(o, mode="max", **hyp["plateau"])},
    ]
    return runs


def train(*, data: Mapping[str, Path], device: torch.device, seed: int, epochs: int | None = None) -> dict:
    """Runs every configuration once from `seed`; returns each one's accuracy and the best
    (`runs`: one entry per configuration). `data["cifar10"]` is the `cifar-10-batches-py` folder."""
    epochs = epochs or hyp["epochs"]
    train_data, test_data, classes = load(Path(data["cifar10"]).parent, device)
    results = []
    for cfg in configs(epochs):
        generator = seed_everything(seed)
        model = LeNet(num_classes=len(classes)).to(device)
        history = fit(
            model, train_data, epochs=epochs, batch_size=hyp["batch_size"],
            make_optimizer=lambda m, lr=cfg["lr"]: torch.optim.SGD(m.parameters(), lr=lr, momentum=hyp["momentum"]),
            make_scheduler=cfg["make"], generator=generator, amp=lab1_1_hyp["amp"],
            on_epoch=lambda e, loss, m=model: evaluate(m, test_data, classes)["test_accuracy"])
        final = evaluate(model, test_data, classes)
        results.append({"name": cfg["name"], "lr": cfg["lr"], "schedule": cfg["schedule"],
                        "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
                        "accuracy_by_epoch": history["val_metric"], "lr_by_epoch": history["lr"],
                        "history": history})
    best = max(results, key=lambda r: r["test_accuracy"] if r["test_accuracy"] == r["test_accuracy"] else -1)
    return {"runs": results, "best": best["name"], "best_accuracy": best["test_accuracy"],
            "classes": classes, "train_images": len(train_data)}
