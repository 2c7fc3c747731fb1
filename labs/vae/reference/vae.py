"""VAE lab, part `vae`: the PyTorch example's VAE on MNIST (pytorch/examples vae/main.py;
Kingma & Welling, ICLR 2014), as the handout shows it.

Encoder 784 -> 400 (ReLU) -> mu, logvar (20 each); z = mu + eps * exp(logvar / 2), eps ~ N(0, I)
(the reparameterization); decoder 20 -> 400 (ReLU) -> 784, sigmoid (Bernoulli means).
Loss: binary cross-entropy summed over pixels and the batch + KL(q(z|x) || N(0, I)) (the
example's loss_function), Adam lr 1e-3, batches of 128, 10 epochs, real MNIST with ToTensor()
(pixels 0..1, not binarized). The example prints `====> Test set loss: ...` as the summed
loss over the test split divided by 10000: about 104-106 nats per image after 10 epochs.
The grader recomputes the bound on the test split itself (grader.verify.gen_eval) and measures
10 000 samples decode(z), z ~ N(0, I); labs/vae/lab.yaml has the numbers.
"""

from __future__ import annotations

import math
import random
import struct
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

hyp = {
    "hidden": 400,            # units of the encoder's and decoder's hidden layer
    "latent": 20,             # dimensions of z
    "optimizer": "Adam",
    "lr": 1e-3,               # per step
    "batch_size": 128,        # images per step
    "epochs": 10,             # passes over the 60000 training images
}


class VAE(nn.Module):
    def __init__(self, hidden: int = 400, latent: int = 20):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 784) in 0..1 -> mu, logvar (B, latent)."""
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent) -> Bernoulli means (B, 784) in 0..1."""
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def loss_function(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL) summed over the batch, nats: the example's BCE + KLD."""
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce, kld


def _idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(folder: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's training and test images from `folder` (the MNIST folder holding raw/), (N, 784)
    float in 0..1 (ToTensor's scaling), on `device`."""
    raw = Path(folder) / "raw"
    return tuple(torch.from_numpy(_idx(raw / f"{p}-images-idx3-ubyte").copy()).reshape(-1, 784).float().div_(255.0)
                 .to(device) for p in ("train", "t10k"))  # type: ignore[return-value]


@torch.no_grad()
def test_loss(model: VAE, x_test: torch.Tensor) -> dict:
    """The example's test loss: (reconstruction + KL) summed over the split / its size, nats per
    image, one z drawn per image; and its two terms."""
    model.eval()
    rec = kl = 0.0
    for i in range(0, len(x_test), 1000):
        recon, mu, logvar = model(x_test[i:i + 1000])
        b, k = loss_function(recon, x_test[i:i + 1000], mu, logvar)
        rec, kl = rec + b.item(), kl + k.item()
    n = len(x_test)
    return {"test_loss": (rec + kl) / n, "test_recon": rec / n, "test_kl": kl / n}


INSTRUMENT = "mnist-classifier"
"""The rubric's `generative.instrument`: the classifier the samples are measured with."""
SAMPLES = 10000
"""Samples measured (the rubric's `generative.samples`)."""


def measure(model: VAE, x_test: torch.Tensor, *, seed: int, n: int = SAMPLES) -> dict:
    """The grader's own measures of a trained VAE, by the code that measures a student's
    (grader.verify.gen_eval, grader.verify.generative): the negative ELBO on `x_test` (N, 784)
    in 0..1 and its KL term, nats per image, the active units, and `n` samples decode(z),
    z ~ N(0, I), through the instrument. Returns nelbo, recon, kl, active_units, latent,
    posterior_collapse, classifier_score, coverage_classes, max_share, frechet_distance,
    diversity_ratio, collapse. Raises grader.instruments.InstrumentError when the instrument is
    not trained."""
    from grader.instruments import load
    from grader.verify.gen_eval import measure_generator, measure_vae
    from grader.verify.generative import sample_measures, vae_measures

    instrument = load(INSTRUMENT)
    model = model.eval().to("cpu")
    with torch.no_grad():
        v = vae_measures(measure_vae(model.encode, model.decode, images=x_test.to("cpu").view(-1, 1, 28, 28),
                                     seed=seed, input_shape=[784]))
        s = measure_generator(lambda z, y: model.decode(z), instrument=str(instrument.weights), n=n, seed=seed,
                              latent_shape=(model.fc21.out_features,))
    m = sample_measures(s, real=instrument.provenance["real"])
    return {"nelbo": v["nelbo"], "recon": v["recon"], "kl": v["kl"], "active_units": v["active_units"],
            "latent": v["latent"], "posterior_collapse": v["posterior_collapse"],
            "classifier_score": m["classifier_score"], "coverage_classes": m["coverage"]["classes"],
            "max_share": m["coverage"]["max_share"], "frechet_distance": m["frechet_distance"],
            "diversity_ratio": m["diversity_ratio"], "collapse": m["collapse"], "samples": n,
            "instrument": {"name": INSTRUMENT, "test_accuracy": instrument.provenance.get("test_accuracy")}}


def fit(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None
        ) -> tuple[VAE, dict, torch.Tensor]:
    """The trained VAE, the history (per epoch: train loss, test loss and its terms, nats per
    image; wall and CPU seconds) and the test images."""
    device = torch.device(device)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, x_test = load(Path(data["mnist"]), device)
    model = VAE(hyp["hidden"], hyp["latent"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyp["lr"])
    history: dict[str, list] = {"train_loss": [], "test_loss": [], "test_recon": [], "test_kl": [],
                                "wall_s": [], "cpu_s": []}
    for _ in range(epochs or hyp["epochs"]):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), hyp["batch_size"]):
            x = x_train[order[start:start + hyp["batch_size"]]]
            optimizer.zero_grad(set_to_none=True)
            recon, mu, logvar = model(x)
            bce, kld = loss_function(recon, x, mu, logvar)
            loss = bce + kld
            loss.backward()
            optimizer.step()
            total += loss.item()
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        history["train_loss"].append(total / len(order))
        for key, value in test_loss(model, x_test).items():
            history[key].append(value)
        if not math.isfinite(total):
            break
    return model.eval(), history, x_test


def train(*, data: Mapping[str, Path], device: torch.device | str, seed: int, epochs: int | None = None) -> dict:
    """Trains the VAE from `seed` on `data["mnist"]`; returns the example's test loss (nats per
    image), the grader's recomputed bound on the test split (nelbo, kl, active_units) and its
    measures of 10 000 samples decode(z), z ~ N(0, I) (classifier_score, coverage_classes,
    max_share, frechet_distance), and the history."""
    model, history, x_test = fit(data=data, device=device, seed=seed, epochs=epochs)
    result = measure(model, x_test, seed=seed)
    result.update(test_loss=history["test_loss"][-1], history=history, train_images=60000,
                  params=sum(p.numel() for p in model.parameters()))
    return result
