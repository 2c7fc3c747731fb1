"""GAN lab, part `cgan`: a conditional GAN on MNIST (Mirza & Osindero, 2014), the label fed to
both networks as a one-hot vector, as the handout's diagram shows.

G: [z (100), one-hot y (10)] -> 256 -> 512 (BatchNorm) -> 784, LeakyReLU(0.2) between, tanh out.
D: [x (784), one-hot y (10)] -> 512 -> 256 -> 1, LeakyReLU(0.2) and dropout 0.3 between,
sigmoid out. (The handout's maxout layers are replaced by LeakyReLU + dropout, as most MNIST
cGAN code does; the label's path is the handout's.) Training as common.train_gan with a
matching-aware D (Reed et al. 2016: a real image with a wrong label is fake too), the epochs in
`hyp`. Measured by the grader's instrument: 10 000 samples, 1 000 per asked digit, and the
conditional accuracy (how often G(z, y) is classified as y); labs/gan/lab.yaml has the numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .common import BASE, load_train, measure, seed_all, train_gan

hyp = {**BASE, "epochs": 20, "hidden_g": (256, 512), "hidden_d": (512, 256), "dropout_d": 0.3, "classes": 10,
       "matching_aware": True}
"""common.BASE (units there); hidden widths; D's dropout probability; label classes; whether D
also learns that a real image with a wrong label is fake (common.train_gan)."""


class Generator(nn.Module):
    def __init__(self, latent: int = 100, classes: int = 10, hidden: tuple[int, ...] = (256, 512)):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = latent + classes
        for i, h in enumerate(hidden):
            # BatchNorm in the last hidden layer: digits within an epoch or two, not ten
            norm = [nn.BatchNorm1d(h)] if i == len(hidden) - 1 else []
            layers += [nn.Linear(n_in, h), *norm, nn.LeakyReLU(0.2)]
            n_in = h
        self.net = nn.Sequential(*layers, nn.Linear(n_in, 784), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B, latent), y (B, classes) one-hot -> images (B, 1, 28, 28) in -1..1."""
        return self.net(torch.cat([z, y], dim=1)).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self, classes: int = 10, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = 784 + classes
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            n_in = h
        self.net = nn.Sequential(*layers, nn.Linear(n_in, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x.view(-1, 784), y], dim=1))


def fit(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None
        ) -> tuple[Generator, dict]:
    device = torch.device(device)
    gen = seed_all(seed)
    x, y = load_train(Path(data["mnist"]), device)
    G = Generator(hyp["latent"], hyp["classes"], hyp["hidden_g"]).to(device)
    D = Discriminator(hyp["classes"], hyp["hidden_d"], hyp["dropout_d"]).to(device)
    history = train_gan(G, D, hyp, x=x, y=y, device=device, generator=gen, epochs=epochs or hyp["epochs"],
                        noise=lambda n: torch.randn(n, hyp["latent"], device=device), conditional=True,
                        matching_aware=hyp["matching_aware"])
    return G.eval(), history


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the cGAN from `seed` on `data["mnist"]`; returns the grader's measures (those of
    gan.py and conditional_accuracy, a fraction 0..1) and the history."""
    G, history = fit(data=data, device=device, seed=seed, epochs=epochs)
    result = measure(lambda z, y: G(z, y), latent_shape=(hyp["latent"],), label_input="onehot", seed=seed)
    result.update(history=history, train_images=60000, params=sum(p.numel() for p in G.parameters()))
    return result
