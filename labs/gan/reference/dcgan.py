"""GAN lab, part `dcgan`: a DCGAN on MNIST (Radford et al., ICLR 2016), the handout's diagrams
scaled to 28 x 28 images.

G: z (100) -> FC to 64 x 7 x 7, BatchNorm, ReLU -> 5x5 transposed convolution, stride 2, to
32 x 14 x 14, BatchNorm, ReLU -> 5x5 transposed convolution, stride 2, to 1 x 28 x 28, tanh.
D: 5x5 convolution, stride 2, to 32 x 14 x 14, LeakyReLU(0.2) -> 5x5 convolution, stride 2, to
64 x 7 x 7, BatchNorm, LeakyReLU(0.2) -> FC to 1, sigmoid.
No pooling and no hidden fully connected layer (the DCGAN guidelines); the widths are small so
that a CPU trains it in minutes. Training as common.train_gan, the epochs in `hyp` (a DCGAN
draws digits after a pass or two over MNIST); labs/gan/lab.yaml has the measured numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .common import BASE, load_train, measure, seed_all, train_gan

hyp = {**BASE, "epochs": 5, "channels": 32, "kernel": 5}
"""common.BASE (units there); channels: G's last hidden and D's first feature maps (the other
has twice as many); kernel: the side of every (transposed) convolution, stride 2."""


class Generator(nn.Module):
    def __init__(self, latent: int = 100, ch: int = 32, k: int = 5):
        super().__init__()
        self.ch = ch
        self.fc = nn.Sequential(nn.Linear(latent, 2 * ch * 7 * 7, bias=False), nn.BatchNorm1d(2 * ch * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * ch, ch, k, stride=2, padding=k // 2, output_padding=1, bias=False),
            nn.BatchNorm2d(ch), nn.ReLU(),
            nn.ConvTranspose2d(ch, 1, k, stride=2, padding=k // 2, output_padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent) -> images (B, 1, 28, 28) in -1..1."""
        return self.net(self.fc(z).view(-1, 2 * self.ch, 7, 7))


class Discriminator(nn.Module):
    def __init__(self, ch: int = 32, k: int = 5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, ch, k, stride=2, padding=k // 2), nn.LeakyReLU(0.2),
            nn.Conv2d(ch, 2 * ch, k, stride=2, padding=k // 2, bias=False), nn.BatchNorm2d(2 * ch), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * ch * 7 * 7, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fit(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None
        ) -> tuple[Generator, dict]:
    device = torch.device(device)
    gen = seed_all(seed)
    x, y = load_train(Path(data["mnist"]), device)
    G = Generator(hyp["latent"], hyp["channels"], hyp["kernel"]).to(device)
    D = Discriminator(hyp["channels"], hyp["kernel"]).to(device)
    history = train_gan(G, D, hyp, x=x, y=y, device=device, generator=gen, epochs=epochs or hyp["epochs"],
                        noise=lambda n: torch.randn(n, hyp["latent"], device=device))
    return G.eval(), history


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the DCGAN from `seed` on `data["mnist"]`; returns the grader's measures of 10 000
    samples (those of gan.py) and the history."""
    G, history = fit(data=data, device=device, seed=seed, epochs=epochs)
    result = measure(lambda z, y: G(z), latent_shape=(hyp["latent"],), label_input=None, seed=seed)
    result.update(history=history, train_images=60000, params=sum(p.numel() for p in G.parameters()))
    return result
