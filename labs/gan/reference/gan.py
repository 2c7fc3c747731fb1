"""GAN lab, part `gan`: an MLP GAN on MNIST (Goodfellow et al., NeurIPS 2014).

G: z (100) -> 256 -> 512 (BatchNorm) -> 784, LeakyReLU(0.2) between, tanh out (images in -1..1).
D: 784 -> 512 -> 256 -> 1, LeakyReLU(0.2) between, sigmoid out (the probability "real").
Real MNIST (60000 training images, ToTensor() then Normalize(0.5, 0.5)), Adam lr 2e-4 betas
(0.5, 0.999), batches of 128, BCE with the non-saturating G loss (common.train_gan), the epochs
in `hyp`. Measured by the grader's instrument on 10 000 samples (labs/gan/lab.yaml has the
numbers, bench/generative-references.md the times).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .common import BASE, load_train, measure, seed_all, train_gan

hyp = {**BASE, "epochs": 20, "hidden_g": (256, 512), "hidden_d": (512, 256)}
"""common.BASE (units there); hidden layer widths of G and D."""


class Generator(nn.Module):
    def __init__(self, latent: int = 100, hidden: tuple[int, ...] = (256, 512)):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = latent
        for i, h in enumerate(hidden):
            # BatchNorm in the last hidden layer: digits within an epoch or two, not ten
            norm = [nn.BatchNorm1d(h)] if i == len(hidden) - 1 else []
            layers += [nn.Linear(n_in, h), *norm, nn.LeakyReLU(0.2)]
            n_in = h
        self.net = nn.Sequential(*layers, nn.Linear(n_in, 784), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self, hidden: tuple[int, ...] = (512, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = 784
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.LeakyReLU(0.2)]
            n_in = h
        self.net = nn.Sequential(*layers, nn.Linear(n_in, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 784))


def fit(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None
        ) -> tuple[Generator, dict]:
    """The trained generator and the training history (common.train_gan)."""
    device = torch.device(device)
    gen = seed_all(seed)
    x, y = load_train(Path(data["mnist"]), device)
    G = Generator(hyp["latent"], hyp["hidden_g"]).to(device)
    D = Discriminator(hyp["hidden_d"]).to(device)
    history = train_gan(G, D, hyp, x=x, y=y, device=device, generator=gen, epochs=epochs or hyp["epochs"],
                        noise=lambda n: torch.randn(n, hyp["latent"], device=device))
    return G.eval(), history


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the GAN from `seed` on `data["mnist"]`; returns the grader's measures of 10 000
    samples (classifier_score, coverage_classes, max_share, frechet_distance) and the history."""
    G, history = fit(data=data, device=device, seed=seed, epochs=epochs)
    result = measure(lambda z, y: G(z), latent_shape=(hyp["latent"],), label_input=None, seed=seed)
    result.update(history=history, train_images=60000, params=sum(p.numel() for p in G.parameters()))
    return result
