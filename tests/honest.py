"""Honest in-memory evidence: both sides of a corroboration built from one real torch model.

The probe's side (a histogram's recorded data, an optimizer run the host saw output of) and
the host's side (`verified["parameters"]` as the independent evaluator reports them,
`grader.corroborate.param_summary`) come from the same parameters, so a check that accepts
them accepts what an honest run writes, and one that rejects a forgery rejects it for the
forgery alone.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from grader.corroborate import param_summary
from grader.probe.rec_figures import _bars

LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def handout_net(seed: int = 0) -> Any:
    """The LAB01 handout's CNN (conv1, conv2, fc1, fc2, fc3), its weights drawn with `seed`."""
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

    return Net()


def values(net: Any, name: str) -> np.ndarray:
    """One parameter's values as the student's `param.detach().cpu().numpy().flatten()` gives them."""
    return dict(net.named_parameters())[name].detach().cpu().numpy().flatten()


def hist_record(data: np.ndarray, subjects: list[str], *, bins: int = 50) -> dict[str, Any]:
    """What the probe records of one `plt.hist(data, bins)` (rec_figures._note_hist), as
    `grader.evidence` puts it into a figure's `hists`."""
    w = np.asarray(data, dtype=np.float64).reshape(-1)
    return {"subjects": subjects, "n": int(w.size), "min": float(w.min()), "max": float(w.max()),
            "mean": float(w.mean()), "std": float(w.std()), **_bars(np, w, bins)}


def histogram_figure(net: Any, names: Iterable[str], *, cell: int = 5, prefix: str = "net.",
                     images: int = 1) -> dict[str, Any]:
    """A probe figure of histograms of `names` (`conv1.weight`), shown in cell In[cell], with
    the host's capture of that cell (`images` images, looking like a histogram, a panel of
    them showing each record's bars: grader.corroborate.mark_run)."""
    names = list(names)
    return {"cell": cell, "kind": "histogram", "subjects": [prefix + n for n in names], "png": "figures/fig-0001.png",
            "hists": [hist_record(values(net, n), [prefix + n]) for n in names],
            "host": {"images": images, "histogram": True if images else None,
                     "matched": list(range(len(names))) if images else [], "panels": len(names) if images else None}}


def verified_block(net: Any, **extra: Any) -> dict[str, Any]:
    """A `verified` block whose model is `net`, with its parameters as the evaluator reports them."""
    return {"test_accuracy": 0.55, "per_class_accuracy": {}, "dataset": "cifar10", "cell": 5,
            "transform": "ToTensor() | Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])",
            "parameters": {n: param_summary(p.detach().cpu().numpy()) for n, p in net.named_parameters()}, **extra}


def run(lr: float, *, ref: int, model_ref: int, cell: int = 3, steps: int = 100) -> dict[str, Any]:
    """An optimizer the probe saw step `model_ref`, changing its weights, in a cell whose
    captured output printed the run's losses (collect's `host_output`)."""
    return {"type": "SGD", "lr": lr, "steps": steps, "ref": ref, "model_ref": model_ref, "model_refs": [model_ref],
            "cell": cell, "cells_stepped": [cell], "weights_changed": True, "host_output": True}


def runs_evidence(rates: Iterable[float], *, cell: int = 3) -> dict[str, Any]:
    """The `models`, `training` and `optimizers` of an honest learning-rate study: one model per rate."""
    rates = list(rates)
    models = [{"ref": 10 + k, "class": "Net", "num_outputs": 10, "cell": cell} for k in range(len(rates))]
    training = [{"model_ref": 10 + k, "batches": 50, "samples": 200, "cell": cell, "dataset": "cifar10",
                 "split": "train"} for k in range(len(rates))]
    return {"models": models, "training": training,
            "optimizers": [run(lr, ref=20 + k, model_ref=10 + k, cell=cell) for k, lr in enumerate(rates)],
            "verified_runs": verified_runs([20 + k for k in range(len(rates))])}


def verified_runs(refs: list[int], *, accuracy: float = 0.45, agreement: float = 0.3) -> list[dict[str, Any]]:
    """`verified_runs` (grader.verify.runs) of one trained model per optimizer ref, each predicting
    unlike the others (LeNet on stand-in CIFAR-10 at 0.01 and 0.001: 45 % and 36 %, 24 % agreement)."""
    return [{"optimizer": r, "model": "Net", "test_accuracy": accuracy, "n": 500, "hidden_accuracy": accuracy,
             "hidden_n": 500, "classes": 10, "predicted_classes": 9,
             "agreement": {str(o): agreement for o in refs if o != r}} for r in refs]


def line_figure(cell: int = 4, *, images: int = 1) -> dict[str, Any]:
    """A probe line chart shown in cell In[cell], with the host's capture of that cell."""
    return {"cell": cell, "kind": "line", "subjects": [], "host": {"images": images, "histogram": None}}


def food_verified(mean: list[float], std: list[float], **extra: Any) -> dict[str, Any]:
    """A `verified` block of a Food-11 model whose test transform normalizes with (mean, std)."""
    return {"test_accuracy": 0.4, "per_class_accuracy": {}, "dataset": "food11", "cell": 6,
            "transform": f"Resize(size=[32, 32]) | ToTensor() | Normalize(mean={list(mean)}, std={list(std)})",
            **extra}
