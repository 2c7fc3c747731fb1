"""Training pieces shared by the GAN lab's reference solutions (MNIST: GAN, cGAN, DCGAN).

The whole training split lives on the device as one float tensor scaled to -1..1
(ToTensor() then Normalize((0.5,), (0.5,)), what a tanh generator draws) and batches are
index slices of it: the same numbers as a DataLoader over torchvision's MNIST, several times
faster on a CPU. Every network is trained with the recipe of Radford et al. (ICLR 2016) that the
DCGAN example uses: Adam lr 2e-4, betas (0.5, 0.999), binary cross-entropy on D's
probability, the generator's non-saturating loss (-log D(G(z))), one D step then one G step per
batch. Nothing here touches CUDA at import time.

The measures are the grader's own: `measure(...)` draws samples with the grader's in-process
functions (grader.verify.gen_eval) through its instrument (grader.instruments, the MNIST
classifier), so a student's numbers and the reference's come from the same code.
"""

from __future__ import annotations

import math
import random
import struct
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

BASE = {
    "latent": 100,            # size of z, drawn from N(0, I)
    "optimizer": "Adam",
    "lr": 2e-4,               # both networks, per step
    "betas": (0.5, 0.999),    # Adam's, as in DCGAN (Radford et al. 2016)
    "batch_size": 128,        # real images per step
    "epochs": 10,             # passes over the 60000 training images
}
"""The recipe every reference starts from; a part's `hyp` overrides some of it."""

CLASSES = [str(d) for d in range(10)]
INSTRUMENT = "mnist-classifier"
"""The rubric's `generative.instrument`: the classifier the samples are measured with."""
SAMPLES = 10000
"""Samples measured (the rubric's `generative.samples`)."""


def _idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_train(folder: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's training split from `folder` (the MNIST folder holding raw/): images (N, 1, 28, 28)
    float in -1..1, labels (N,) int64, on `device`."""
    raw = Path(folder) / "raw"
    x = torch.from_numpy(_idx(raw / "train-images-idx3-ubyte").copy()).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(_idx(raw / "train-labels-idx1-ubyte").astype(np.int64))
    return x.float().div_(127.5).sub_(1.0).to(device), y.to(device)


def seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def adam(hyp: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=hyp["lr"], betas=tuple(hyp["betas"]))


def train_gan(G: nn.Module, D: nn.Module, hyp: Mapping[str, Any], *, x: torch.Tensor, y: torch.Tensor,
              device: torch.device, generator: torch.Generator, epochs: int,
              noise: Callable[[int], torch.Tensor], conditional: bool = False, matching_aware: bool = False) -> dict:
    """Trains G and D for `epochs` passes over `x` (N, 1, 28, 28) in -1..1; labels `y` are fed to
    both networks as one-hot vectors when `conditional`. `matching_aware` (conditional only): D
    also learns that a real image with a wrong label is fake, its loss
    BCE(D(x, y), 1) + (BCE(D(G(z, y), y), 0) + BCE(D(x, y'), 0)) / 2 with y' != y (the
    matching-aware discriminator of Reed et al., ICML 2016): D must read the label from the
    first steps, so G follows its label within an epoch or two instead of ignoring it for
    many. `noise(n)` draws n latent vectors on `device`. Returns the history: mean D and G
    losses per epoch (nats, BCE per image), mean D(x) and D(G(z)) per epoch (probabilities),
    wall and CPU seconds per epoch."""
    opt_d, opt_g = adam(hyp, D), adam(hyp, G)
    history: dict[str, list] = {"loss_d": [], "loss_g": [], "d_real": [], "d_fake": [], "wall_s": [], "cpu_s": []}
    bs = hyp["batch_size"]
    for _ in range(epochs):
        wall, cpu = time.perf_counter(), time.process_time()
        G.train()
        D.train()
        order = torch.randperm(len(x), generator=generator).to(device)
        sums = np.zeros(4)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            real = x[idx]
            n = len(idx)
            cond = (F.one_hot(y[idx], 10).float(),) if conditional else ()
            ones, zeros = torch.ones(n, 1, device=device), torch.zeros(n, 1, device=device)
            fake = G(noise(n), *cond)
            # D: real -> 1, fake -> 0
            opt_d.zero_grad(set_to_none=True)
            d_real = D(real, *cond)
            d_fake = D(fake.detach(), *cond)
            if conditional and matching_aware:
                shift = torch.randint(1, 10, (n,), generator=generator).to(device)
                wrong = F.one_hot((y[idx] + shift) % 10, 10).float()
                loss_d = F.binary_cross_entropy(d_real, ones) + 0.5 * (
                    F.binary_cross_entropy(d_fake, zeros) + F.binary_cross_entropy(D(real, wrong), zeros))
            else:
                loss_d = F.binary_cross_entropy(d_real, ones) + F.binary_cross_entropy(d_fake, zeros)
            loss_d.backward()
            opt_d.step()
            # G: the non-saturating loss, fake -> 1
            opt_g.zero_grad(set_to_none=True)
            loss_g = F.binary_cross_entropy(D(fake, *cond), ones)
            loss_g.backward()
            opt_g.step()
            sums += np.array([loss_d.item(), loss_g.item(), d_real.mean().item(), d_fake.mean().item()]) * n
        means = sums / len(order)
        for key, value in zip(("loss_d", "loss_g", "d_real", "d_fake"), means):
            history[key].append(float(value))
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        if not math.isfinite(float(means[0] + means[1])):
            break
    return history


def measure(generate: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], *, latent_shape: tuple[int, ...],
            label_input: str | None, seed: int, n: int = SAMPLES) -> dict:
    """The grader's own sample measures of a trained generator: `generate(z, y_or_None)` ->
    images, z (B, *latent_shape) ~ N(0, I), y the labels asked for (`label_input` "onehot" or
    "index"; None: unconditional). Draws `n` samples with grader.verify.gen_eval.measure_generator
    through the instrument and turns them into measures with grader.verify.generative.sample_measures,
    as the grader does for a student's generator. Returns the reference metric names:
    classifier_score (1..10), coverage_classes (digits with at least genmeasures.PRESENT_SHARE of
    the samples), max_share (a fraction), frechet_distance (squared feature units),
    diversity_ratio, collapse, and conditional_accuracy (a fraction) when `label_input`.
    Raises grader.instruments.InstrumentError when the instrument is not trained."""
    from grader.instruments import load
    from grader.verify.gen_eval import measure_generator
    from grader.verify.generative import sample_measures

    instrument = load(INSTRUMENT)
    with torch.no_grad():
        s = measure_generator(generate, instrument=str(instrument.weights), n=n, seed=seed,
                              latent_shape=tuple(latent_shape), label_input=label_input)
    m = sample_measures(s, real=instrument.provenance["real"], label_input=label_input)
    out = {"classifier_score": m["classifier_score"], "coverage_classes": m["coverage"]["classes"],
           "max_share": m["coverage"]["max_share"], "frechet_distance": m["frechet_distance"],
           "diversity_ratio": m["diversity_ratio"], "collapse": m["collapse"], "samples": n,
           "instrument": {"name": INSTRUMENT, "test_accuracy": instrument.provenance.get("test_accuracy")}}
    if m["conditional"] is not None:
        out["conditional_accuracy"] = m["conditional"]["accuracy"]
        out["conditional_per_class"] = m["conditional"]["per_class"]
    return out
