"""Generative labs' logs: the printed/plotted loss parser (grader.parsers.genlogs), the checks
`logged_losses` and `figure_origin` (grader.checks.genlogs) on hand-written evidence, and the
probe part rec_genlog (stepped losses, figure origins) installed in a fresh interpreter like
tests/test_probe.py does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from grader.checks.base import CheckContext
from grader.evidence import summarize_events, validate_event
from grader.checks.genlogs import MISLABELLED, NOT_STEPPED, compare_stepped, figure_origin, logged_losses
from grader.parsers.genlogs import gen_curves, notebook_texts, parse_gen_curves, plotted_curves, series_of_label

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- parser

DCGAN = """\
[0/5][0/469]\tLoss_D: 1.3863\tLoss_G: 0.6931\tD(x): 0.5012\tD(G(z)): 0.4998 / 0.5000
[0/5][50/469]\tLoss_D: 0.2317\tLoss_G: 3.4567\tD(x): 0.9012\tD(G(z)): 0.1100 / 0.0400
[1/5][0/469]\tLoss_D: 0.5120\tLoss_G: 2.0100\tD(x): 0.8000\tD(G(z)): 0.2000 / 0.1500
"""
VAE = """\
Train Epoch: 1 [0/60000 (0%)]\tLoss: 543.219482
Train Epoch: 1 [1280/60000 (2%)]\tLoss: 301.552490
====> Epoch: 1 Average loss: 164.3007
====> Test set loss: 127.4123
Train Epoch: 2 [0/60000 (0%)]\tLoss: 120.114
====> Epoch: 2 Average loss: 121.5100
====> Test set loss: 115.9000
"""


def _series(text: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for p in parse_gen_curves(text):
        out.setdefault(p.series, []).append((round(p.x, 4), p.value))
    return out


def test_dcgan_example_lines_give_d_and_g_over_fractional_epochs() -> None:
    s = _series(DCGAN)
    assert s["d_loss"] == [(0.0, 1.3863), (round(50 / 469, 4), 0.2317), (1.0, 0.512)]
    assert [v for _, v in s["g_loss"]] == [0.6931, 3.4567, 2.01]
    assert set(s) == {"d_loss", "g_loss"}  # D(x) and D(G(z)) are not losses


@pytest.mark.parametrize("line,d,g", [
    ("Epoch 3/200, d_loss: 0.512, g_loss: 1.22", 0.512, 1.22),
    ("[Epoch 3/200] [Batch 100/938] [D loss: 0.553100] [G loss: 0.905]", 0.5531, 0.905),
    ("epoch 2 errD: 0.4 errG: 1.5e+00", 0.4, 1.5),
    ("Epoch 1 | Discriminator loss 0.7 | Generator loss 0.8", 0.7, 0.8),
    ("epoch 4 loss_D=0.25 loss_G=2.5", 0.25, 2.5),
])
def test_other_gan_spellings(line: str, d: float, g: float) -> None:
    s = _series(line)
    assert [v for _, v in s["d_loss"]] == [d] and [v for _, v in s["g_loss"]] == [g]


@pytest.mark.parametrize("lines, xs", [
    # the iteration in brackets after the epoch, without a step keyword (it read 1.0 for each)
    (["Epoch 0 [0/937] D loss: 1.24, G loss: 0.83", "Epoch 0 [400/937] D loss: 1.1, G loss: 0.9",
      "Epoch 1 [0/937] D loss: 1.0, G loss: 1.0"], [0.0, round(400 / 937, 4), 1.0]),
    # `[epoch][i/n]` (it counted the lines: "epochs 1 to 3")
    (["[0][200/937] Loss_D: 1.2 Loss_G: 0.8", "[0][600/937] Loss_D: 1.1 Loss_G: 0.9",
      "[1][200/937] Loss_D: 1.0 Loss_G: 1.0"], [round(200 / 937, 4), round(600 / 937, 4), round(1 + 200 / 937, 4)]),
    # an epoch's own total is not the iteration
    (["Epoch 1/5 D loss: 1.0 G loss: 2.0", "Epoch 2/5 D loss: 0.9 G loss: 2.1"], [1.0, 2.0]),
    (["Epoch [1/5] [200/469] d_loss: 1.0 g_loss: 2.0"], [round(200 / 469, 4)]),
])
def test_the_iteration_within_an_epoch_is_read_in_its_common_spellings(lines: list[str], xs: list[float]) -> None:
    s = _series("\n".join(lines))
    assert [x for x, _ in s["d_loss"]] == xs and [x for x, _ in s["g_loss"]] == xs


def test_a_vaes_loss_named_by_its_split_in_the_students_own_words() -> None:
    s = _series("epoch 1: train -ELBO 163.20  test -ELBO 150.11 (nats per image)\n"
                "epoch 2: train -ELBO 149.78  test -ELBO 138.87 (nats per image)\n"
                "Epoch 3 train loss 120.5 test loss 118.25\nTest set loss: 0.1352\n")
    assert s["vae_epoch_loss"] == [(1.0, 163.2), (2.0, 149.78), (3.0, 120.5)]
    assert [v for _, v in s["vae_test_loss"]] == [150.11, 138.87, 118.25, 0.1352]
    assert "d_loss" not in s and "recon" not in s
    assert _series("val loss 0.31 val accuracy 0.9") == {}  # a validation split is neither


def test_vae_example_lines_and_epochs_counted_from_one() -> None:
    s = _series(VAE)
    assert s["vae_loss"][0] == (0.0, 543.219482) and s["vae_loss"][1] == (round(1280 / 60000, 4), 301.55249)
    assert s["vae_epoch_loss"] == [(1.0, 164.3007), (2.0, 121.51)]
    assert s["vae_test_loss"] == [(1.0, 127.4123), (2.0, 115.9)]


def test_recon_and_kl_columns_with_their_total() -> None:
    s = _series("Epoch 1, loss: 120.5, recon: 100.1, KL: 20.4\nEpoch 2 | BCE 99.0 | KLD 21.0 | total 120.0\n")
    assert s["recon"] == [(1.0, 100.1), (2.0, 99.0)]
    assert s["kl"] == [(1.0, 20.4), (2.0, 21.0)]
    assert s["vae_loss"] == [(1.0, 120.5), (2.0, 120.0)]


def test_a_classifier_log_gives_no_generative_series() -> None:
    assert parse_gen_curves("[1,  2000] loss: 2.189\nEpoch 1: train loss 0.5, accuracy 81.2 %\n") == []


def test_notebook_stdout_is_read_per_cell() -> None:
    nb = {"cells": [{"cell_type": "markdown", "source": "Loss_D: 9"},
                    {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": DCGAN},
                                                      {"output_type": "stream", "name": "stderr", "text": "d_loss: 7"}]}]}
    curves = gen_curves(notebook_texts(nb))
    assert [v for _, v in curves["d_loss"]] == [1.3863, 0.2317, 0.512]


def test_plotted_lines_by_legend_label() -> None:
    assert series_of_label("D(x)") is None and series_of_label("Loss_D") == "d_loss"
    assert series_of_label("Generator") == "g_loss" and series_of_label("KL divergence") == "kl"
    figs = [{"lines": [{"label": "D", "x": [0, 1, 2], "y": [1.0, 0.8, 0.7]},
                       {"label": "G", "x": [0, 1, 2], "y": [0.7, 1.2, 1.9]},
                       {"label": "accuracy", "x": [0, 1], "y": [0.1, 0.2]},
                       {"label": None, "title": "Reconstruction loss", "x": [0, 1], "y": [3.0, 2.0]}]}]
    got = plotted_curves(figs)
    assert got == {"d_loss (plotted)": [[0.0, 1.0], [1.0, 0.8], [2.0, 0.7]],
                   "g_loss (plotted)": [[0.0, 0.7], [1.0, 1.2], [2.0, 1.9]],
                   "recon (plotted)": [[0.0, 3.0], [1.0, 2.0]]}


# ---------------------------------------------------------------- logged_losses on hand-written evidence


def _ctx(*evs: dict[str, Any]) -> CheckContext:
    return CheckContext(student_id="s", part_id="gan", dataset="mnist", evidence=list(evs))


def _gan_evidence(d_printed: list[float], g_printed: list[float]) -> dict[str, Any]:
    return {"path": "gan.ipynb", "mode": "execute", "probe": {"started": True},
            "metrics": {"curves": {"d_loss": [[i * 0.5, v] for i, v in enumerate(d_printed)],
                                   "g_loss": [[i * 0.5, v] for i, v in enumerate(g_printed)]}},
            "dataloaders": [{"batch_size": 64, "split": "train"}],
            "optimizers": [{"ref": 4, "names": ["optimizerG"], "steps": 200,
                            "stepped": [[1, 100, 1.9, 0.7, 3.5, 2.1], [3, 100, 2.4, 1.1, 4.0, 2.6]]},
                           {"ref": 5, "names": ["optimizerD"], "steps": 200,
                            "stepped": [[1, 100, 0.9, 0.3, 1.4, 0.5], [3, 100, 0.6, 0.2, 1.2, 0.4]]}],
            "generative": {"captures": [{"id": "g0", "role": "generator", "optimizer_refs": [4]},
                                        {"id": "d0", "role": "discriminator", "optimizer_refs": [5]}]}}


def test_gan_losses_printed_as_stepped_pass() -> None:
    out = logged_losses(_ctx(_gan_evidence([1.2, 0.8, 0.5, 0.4], [0.9, 2.0, 2.5, 3.1])), {"model": "gan"})
    assert out.status == "pass" and out.fraction == 1.0, out.message
    assert "D loss (4 values printed" in out.message


def test_a_printed_d_loss_that_was_never_stepped_is_flagged_with_numbers() -> None:
    ev = _gan_evidence([5.1, 6.2, 7.5, 8.0], [0.9, 2.0, 2.5, 3.1])
    ev["generative"] = None  # the optimizers found by their names instead
    out = logged_losses(_ctx(ev), {"model": "gan"})
    assert out.status == "partial" and out.fraction == 0.5 and NOT_STEPPED in out.flags
    assert "D loss" in out.message and "0.2 to 1.4" in out.message and "G loss is not" not in out.message


def test_a_missing_g_loss_is_partial_and_no_curve_fails() -> None:
    ev = _gan_evidence([1.2, 0.8], [])
    del ev["metrics"]["curves"]["g_loss"]
    out = logged_losses(_ctx(ev), {"model": "gan"})
    assert out.status == "partial" and out.fraction == 0.5 and "missing: G loss" in out.message
    ev["metrics"]["curves"] = {"train_loss": [[1, 0.3], [2, 0.2]]}
    assert logged_losses(_ctx(ev), {"model": "gan"}).status == "fail"


def test_plotted_curves_count_and_are_not_compared() -> None:
    ev = _gan_evidence([], [])
    ev["metrics"]["curves"] = {}
    ev["figures"] = [{"kind": "line", "lines": [{"label": "D loss", "x": [0, 1, 2], "y": [9.0, 9.0, 9.0]},
                                                {"label": "G loss", "x": [0, 1, 2], "y": [1.0, 2.0, 3.0]}]}]
    out = logged_losses(_ctx(ev), {"model": "gan"})
    assert out.status == "pass" and "plotted" in out.message


def test_vae_per_image_print_of_a_batch_sum_is_what_was_stepped() -> None:
    # the PyTorch example: loss summed over a batch of 128 is stepped; loss / len(data) printed
    ev = {"path": "vae.ipynb", "mode": "execute",
          "metrics": {"curves": {"vae_loss": [[0.0, 543.2], [0.5, 180.1], [1.0, 150.3]],
                                 "vae_epoch_loss": [[1.0, 164.3], [2.0, 121.5]], "kl": [[1.0, 20.0], [2.0, 24.0]]}},
          "dataloaders": [{"batch_size": 128, "split": "train"}, {"batch_size": 1000, "split": "test"}],
          "optimizers": [{"ref": 3, "names": ["optimizer"], "steps": 938,
                          "stepped": [[1, 469, 164.3 * 128, 140 * 128, 545 * 128, 120 * 128],
                                      [3, 469, 121.5 * 128, 110 * 128, 135 * 128, 118 * 128]]}]}
    out = logged_losses(_ctx(ev), {"model": "vae"})
    assert out.status == "pass", out.message
    out = logged_losses(_ctx(ev), {"model": "vae", "require_terms": True})
    assert out.status == "partial" and "reconstruction loss" in out.message and out.fraction == pytest.approx(2 / 3)


def test_compare_stepped_reads_a_per_image_value_of_a_batch_sum() -> None:
    ok, words = compare_stepped([160.0, 130.0], [[1, 10, 150 * 64, 120 * 64, 170 * 64, 125 * 64]],
                                tolerance=0.5, batch_size=64)
    assert ok and "per-image value of a batch sum" in words
    assert compare_stepped([1.0], [], tolerance=0.5, batch_size=None) is None


# ---------------------------------------------------------------- figure_origin on hand-written evidence


def _fig(title: str, role: str | None, cell: int = 5, **extra: Any) -> dict[str, Any]:
    f = {"kind": "image-grid", "title": title, "cell": cell, "png": "figures/fig-0001.png", **extra}
    if role is not None:
        f["origin"] = {"role": role, "capture_class": "VAE", "model_ref": 3, "why": f"16 of 16 plotted images are {role}"}
    return f


def _figs_ev(*figs: dict[str, Any]) -> dict[str, Any]:
    return {"path": "vae.ipynb", "mode": "execute", "probe": {"started": True}, "generative": {}, "figures": list(figs)}


def test_a_figure_whose_origin_is_wanted_passes() -> None:
    out = figure_origin(_ctx(_figs_ev(_fig("Generated digits", "samples"))), {"want": "samples"})
    assert out.status == "pass" and "16 of 16" in out.message


def test_reconstructions_presented_as_samples_fail_with_why() -> None:
    ev = _figs_ev(_fig("Samples from the VAE", "reconstructions"), _fig("recon", "reconstructions"))
    out = figure_origin(_ctx(ev), {"want": "samples"})
    assert out.status == "fail" and out.message.startswith("reconstructions shown as samples")
    assert MISLABELLED in out.flags
    assert figure_origin(_ctx(ev), {"want": "reconstructions"}).status == "pass"


@pytest.mark.parametrize("hits, images, status", [
    (16, 16, "fail"), (200, 225, "fail"),  # surely reconstructions
    (129, 225, "manual"),  # a minority of near matches: a manifold decoded one z at a time
    (None, None, "fail"),  # an older record without counts
])
def test_a_mislabel_is_a_finding_only_when_most_images_match(hits: int | None, images: int | None,
                                                              status: str) -> None:
    fig = _fig("latent manifold", "reconstructions")
    if hits is not None:
        fig["origin"].update(hits=hits, images=images)
    out = figure_origin(_ctx(_figs_ev(fig)), {"want": "latent"})
    assert out.status == status, out.message
    assert (MISLABELLED in out.flags) == (status == "fail")


def test_captions_never_decide_an_unknown_origin() -> None:
    ev = _figs_ev(_fig("Samples", "unknown"))
    out = figure_origin(_ctx(ev), {"want": "samples"})
    assert out.status == "manual" and "Samples" in out.message


def test_no_figure_fails_when_observed_and_goes_to_a_ta_in_saved_mode() -> None:
    assert figure_origin(_ctx(_figs_ev()), {"want": "latent"}).status == "fail"
    saved = {"path": "vae.ipynb", "mode": "saved", "probe": None, "generative": None,
             "figures": [{"kind": "image-grid", "title": "samples", "cell": 3}]}
    assert figure_origin(_ctx(saved), {"want": "samples"}).status == "manual"


def test_a_part_without_a_notebook_fails_its_figure_not_sent_to_a_ta() -> None:
    out = figure_origin(_ctx(), {"want": "class-grid"})
    assert out.status == "fail" and "no notebook for" in out.message and "no figure either" in out.message


# ---------------------------------------------------------------- the probe part, in a fresh interpreter

_HEADER = """\
import sys
sys.path.insert(0, {repo!r})
from grader.probe.recorder import install
install({events!r}, {figs!r}, **{caps!r})
del install
"""

_STUDENT = """
import torch, torch.nn as nn, torch.nn.functional as F
import torch.utils.data as tud
import matplotlib
import matplotlib.pyplot as plt
from torchvision.utils import make_grid, save_image
torch.manual_seed(0); torch.set_num_threads(1)
out = sys.argv[1]
train = tud.TensorDataset(torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,)))
loader = tud.DataLoader(train, batch_size=32, shuffle=True)

class G(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 784), nn.Tanh())
    def forward(self, z, y):
        return self.net(torch.cat([z, self.emb(y)], 1)).view(-1, 1, 28, 28)

class D(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    def forward(self, x):
        return self.net(x)

netG, netD = G(), D()
optimizerG = torch.optim.Adam(netG.parameters(), 2e-4)
optimizerD = torch.optim.Adam(netD.parameters(), 2e-4)
crit = nn.BCEWithLogitsLoss()
printed = {"D": [], "G": []}
for epoch in range(2):
    for i, (x, y) in enumerate(loader):
        b = x.size(0)
        x = x * 2 - 1
        optimizerD.zero_grad()
        errD_real = crit(netD(x), torch.ones(b, 1)); errD_real.backward()
        fake = netG(torch.randn(b, 16), y)
        errD_fake = crit(netD(fake.detach()), torch.zeros(b, 1)); errD_fake.backward()
        optimizerD.step()
        optimizerG.zero_grad()
        errG = crit(netD(fake), torch.ones(b, 1))
        torch.autograd.backward(errG)
        optimizerG.step()
        printed["D"].append((errD_real + errD_fake).item()); printed["G"].append(errG.item())
with torch.no_grad():
    samples = netG(torch.randn(64, 16), torch.randint(0, 10, (64,)))
    # a (B, 100) output is a 10 x 10 "image" too: the 242-pixel 8 x 8 grid of 28-pixel samples
    # below also cuts into 12-pixel cells, none of which matches anything
    nn.Sequential(nn.Linear(16, 100))(torch.randn(4, 16))
    grid_y = torch.arange(10).repeat_interleave(4)
    class_grid = netG(torch.randn(40, 16), grid_y)
plt.figure(); plt.imshow(make_grid(samples, normalize=True).permute(1, 2, 0).numpy()); plt.suptitle("gan samples")
plt.savefig(out + "/a.png"); plt.close()
fig, axs = plt.subplots(2, 2)
for k, ax in enumerate(axs.flat):
    ax.imshow(((class_grid[k] + 1) / 2).squeeze().detach().cpu().numpy(), cmap="gray")
fig.suptitle("per class"); fig.savefig(out + "/b.png"); plt.close(fig)
fixed = torch.randn(16, 16)
plt.figure(); plt.imshow(make_grid(netG(fixed, torch.randint(0, 10, (16,))).detach(), nrow=4)[0].numpy())
for _ in range(3):  # outputs kept by the probe are replaced before the figure is recorded
    netG(torch.randn(8, 16), torch.randint(0, 10, (8,)))
plt.suptitle("drawn early"); plt.savefig(out + "/late.png"); plt.close()
plt.figure(); plt.imshow(torch.rand(28, 28).numpy(), cmap="gray"); plt.suptitle("noise"); plt.savefig(out + "/c.png"); plt.close()
# MLP generators whose z (B, 100) and (B, 256) are as many numbers as a 10 x 10 or 16 x 16 image:
# still noise, so their outputs are samples, not reconstructions
for k in (100, 256):
    mlp = nn.Sequential(nn.Linear(k, 784), nn.Tanh())
    with torch.no_grad():
        drawn = mlp(torch.randn(64, k)).view(-1, 1, 28, 28)
    plt.figure(); plt.imshow(make_grid(drawn, nrow=8, normalize=True).permute(1, 2, 0).numpy())
    plt.suptitle(f"z{k}"); plt.savefig(out + f"/z{k}.png"); plt.close()
plt.figure(); plt.plot(printed["D"], label="D loss"); plt.plot(printed["G"], label="G loss"); plt.legend()
plt.suptitle("losses"); plt.savefig(out + "/d.png"); plt.close()

class VAE(nn.Module):  # the PyTorch example's, smaller
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 64); self.fc21 = nn.Linear(64, 2); self.fc22 = nn.Linear(64, 2)
        self.fc3 = nn.Linear(2, 64); self.fc4 = nn.Linear(64, 784)
    def encode(self, x):
        h = F.relu(self.fc1(x)); return self.fc21(h), self.fc22(h)
    def reparameterize(self, mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))
    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar
    def sample(self, n):
        return self.decode(torch.randn(n, 2)).view(n, 1, 28, 28)

vae = VAE(); opt = torch.optim.Adam(vae.parameters(), 1e-3)
test_loader = tud.DataLoader(tud.TensorDataset(torch.rand(64, 1, 28, 28), torch.zeros(64)), batch_size=32)
for x, _ in loader:
    opt.zero_grad(); r, mu, lv = vae(x)
    loss = F.binary_cross_entropy(r, x.view(-1, 784), reduction="sum") - 0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
    loss.backward(); opt.step()
vae.eval()
with torch.no_grad():
    for i, (x, _) in enumerate(test_loader):
        r, mu, lv = vae(x)
        if i == 0:
            save_image(torch.cat([x[:8], r.view(32, 1, 28, 28)[:8]]), out + "/reconstruction_1.png", nrow=8)
            save_image(r.view(32, 1, 28, 28)[:16], out + "/samples_1.png")  # reconstructions, called samples
    save_image(vae.decode(torch.randn(16, 2)).view(16, 1, 28, 28), out + "/sample_1.png")
    save_image(vae.sample(8), out + "/sample_2.png")
    # a 15 x 15 manifold of the 2-d latent: 225 decodes, each as close to a reconstruction as a
    # barely trained decoder makes them; kept whole, they are matched to the lattice exactly
    lattice = torch.stack(torch.meshgrid(torch.linspace(-2, 2, 15), torch.linspace(-2, 2, 15), indexing="ij"),
                          -1).view(-1, 2)
    save_image(vae.decode(lattice).view(225, 1, 28, 28), out + "/manifold.png", nrow=15)
    mus = torch.cat([vae.encode(x.view(-1, 784))[0] for x, _ in test_loader])
plt.figure(); plt.scatter(mus[:, 0].numpy(), mus[:, 1].numpy()); plt.suptitle("latent"); plt.savefig(out + "/e.png"); plt.close()
class SeqVAE(nn.Module):  # encoder / decoder submodules called directly from the notebook
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 40))
        self.decoder = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 784), nn.Sigmoid())
    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z).view(-1, 1, 28, 28), mu, logvar

svae = SeqVAE(); sopt = torch.optim.Adam(svae.parameters(), 1e-3)
for x, _ in loader:
    sopt.zero_grad(); r, mu, lv = svae(x)
    loss = F.binary_cross_entropy(r, x, reduction="sum") - 0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
    loss.backward(); sopt.step()
with torch.no_grad():
    drawn = svae.decoder(torch.randn(64, 20)).view(-1, 1, 28, 28)
    x = next(iter(test_loader))[0]
    rebuilt = svae.decoder(svae.encoder(x)[:, :20]).view(-1, 1, 28, 28)
save_image(drawn, out + "/seq_samples.png")
save_image(rebuilt, out + "/seq_recon.png")
lin = nn.Linear(4, 1); amp_opt = torch.optim.SGD(lin.parameters(), 0.01)
scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
printed["amp"] = []
for i in range(3):  # mixed precision backpropagates loss x 1024: the loss is what counts
    amp_opt.zero_grad(); loss = lin(torch.randn(8, 4)).pow(2).mean(); printed["amp"].append(loss.item())
    scaler.scale(loss).backward(); scaler.step(amp_opt); scaler.update()
# a discriminator stepped on BCE, its loss printed several ways (as `:.4f` would print it)
w_true = torch.randn(8)
xs = torch.randn(800, 8); ys = ((xs @ w_true + 0.5 * torch.randn(800)) > 0).float().unsqueeze(1)
bce_loader = tud.DataLoader(tud.TensorDataset(xs, ys), batch_size=4, shuffle=True)
netD2 = nn.Linear(8, 1); optD2 = torch.optim.SGD(netD2.parameters(), 0.05)
p4 = lambda v: float("%.4f" % v)
for key in ("batch", "running", "epoch", "mse", "again"):
    printed[key] = []
for epoch in range(4):
    running = total = 0.0
    for i, (xb, yb) in enumerate(bce_loader):
        optD2.zero_grad(); logits = netD2(xb)
        loss = F.binary_cross_entropy_with_logits(logits, yb); loss.backward(); optD2.step()
        running += loss.item(); total += loss.item()
        if i % 100 == 0:  # the current batch's value, the DCGAN example's way
            printed["batch"].append(p4(loss.item()))
            with torch.no_grad():  # the tester's notebook: an MSE recomputed, never stepped on
                printed["mse"].append(p4(F.mse_loss(torch.sigmoid(logits), yb).item()))
                # the same BCE recomputed after the step: close in range, not what was stepped on
                printed["again"].append(p4(F.binary_cross_entropy_with_logits(netD2(xb), yb).item()))
        if (i + 1) % 50 == 0:
            printed["running"].append(p4(running / 50)); running = 0.0
    printed["epoch"].append(p4(total / len(bce_loader)))
import json
json.dump(printed, open(out + "/printed.json", "w"))
"""


def _probe_run(root: Path, caps: dict[str, int]) -> list[dict[str, Any]]:
    root.mkdir(parents=True, exist_ok=True)
    script = root / "student.py"
    script.write_text(_HEADER.format(repo=str(REPO), events=str(root / "events.jsonl"), figs=str(root / "figs"),
                                     caps=caps) + textwrap.dedent(_STUDENT))
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=180,
                          env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    # raw lines: the host's schema (grader.evidence) learns `optimizer-stepped`, `origin`, `lines` from the lead
    return [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("genlog")
    return root, _probe_run(root, {"generative": 1})


def _figure(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in events if e["kind"] == "figure" and name in (e.get("suptitle"), e.get("saved_as"))]
    assert len(found) == 1, [(e.get("suptitle"), e.get("saved_as")) for e in events if e["kind"] == "figure"]
    return found[0]


def test_probe_records_without_errors(gen_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, events = gen_run
    assert [e for e in events if e["kind"] == "probe-error"] == []


def test_stepped_losses_of_a_two_optimizer_gan_loop(gen_run: tuple[Path, list[dict[str, Any]]]) -> None:
    root, events = gen_run
    printed = json.loads((root / "printed.json").read_text())
    names = {e["ref"]: e["names"] for e in events if e["kind"] == "bind"}
    stepped = {tuple(names.get(e["ref"], ())): e["stepped"] for e in events if e["kind"] == "optimizer-stepped"}
    d, g = stepped[("optimizerD",)], stepped[("optimizerG",)]
    assert [row[1] for row in d] == [4, 4] and [row[1] for row in g] == [4, 4]  # 2 passes x 4 batches
    for rows, values in ((d, printed["D"]), (g, printed["G"])):
        for k, row in enumerate(rows):  # errD_real + errD_fake (two backward calls) credited to D's step
            mine = values[4 * k:4 * k + 4]
            assert row[2] == pytest.approx(sum(mine) / 4, rel=1e-5)
            assert row[3] == pytest.approx(min(mine), rel=1e-5) and row[4] == pytest.approx(max(mine), rel=1e-5)
            assert row[5] == pytest.approx(mine[-1], rel=1e-5)
    assert d[0][0] < d[1][0]  # one entry per loader pass, in order
    (amp,) = stepped[("amp_opt",)]
    assert amp[1] == 3 and amp[2] == pytest.approx(sum(printed["amp"]) / 3, rel=1e-5)


def test_printed_losses_matched_with_the_stepped_sample(gen_run: tuple[Path, list[dict[str, Any]]]) -> None:
    """A loss printed as stepped (the current batch at i % 100 == 0, a running mean over 50 steps,
    the epoch's mean) matches the probe's sample of stepped losses; an MSE recomputed under
    no_grad (the tester's notebook) and the BCE recomputed after the step do not, though the
    latter lies within the stepped range."""
    root, events = gen_run
    printed = json.loads((root / "printed.json").read_text())
    evidence = summarize_events([validate_event(e) for e in events])
    (opt,) = [o for o in evidence["optimizers"] if o["names"] == ["optD2"]]
    sample = opt["stepped_sample"]
    assert sample["every"] == 5 and 8 < len(sample["values"]) <= 1800
    assert [r[1] for r in opt["stepped"]] == [200] * 4

    def judge(key: str) -> tuple[bool, str]:
        result = compare_stepped(printed[key], opt["stepped"], tolerance=0.5, batch_size=4, sample=sample)
        assert result is not None
        return result

    for honest in ("batch", "running", "epoch"):
        ok, words = judge(honest)
        assert ok, (honest, words)
        assert f"{len(printed[honest])} of them equal" in words, (honest, words)
    for never in ("mse", "again"):
        ok, words = judge(never)
        assert not ok, (never, words)
    ok, _ = compare_stepped(printed["again"], opt["stepped"], tolerance=0.5, batch_size=4)
    assert ok  # the range alone does not tell it


def test_figure_origins(gen_run: tuple[Path, list[dict[str, Any]]]) -> None:
    _, events = gen_run
    role = {name: _figure(events, name)["origin"]["role"] for name in (
        "gan samples", "per class", "drawn early", "noise", "latent", "reconstruction_1.png", "samples_1.png",
        "sample_1.png", "sample_2.png", "z100", "z256", "manifold.png")}
    assert role == {"gan samples": "samples", "per class": "class-grid", "drawn early": "samples", "noise": "unknown",
                    "z100": "samples", "z256": "samples", "manifold.png": "latent",
                    "latent": "latent", "reconstruction_1.png": "reconstructions",
                    "samples_1.png": "reconstructions", "sample_1.png": "samples", "sample_2.png": "samples"}
    assert _figure(events, "sample_1.png")["origin"]["capture_class"] == "VAE"
    manifold = _figure(events, "manifold.png")["origin"]
    assert manifold["images"] == 225 and manifold["hits"] >= 0.8 * 225  # each decode of the lattice, kept whole
    # submodules of a recorded model called from the notebook: the decoder on noise, on the means
    seq = _figure(events, "seq_samples.png")["origin"]
    assert seq["role"] == "samples" and seq["capture_class"] == "SeqVAE" and "SeqVAE.decoder" in seq["why"]
    assert _figure(events, "seq_recon.png")["origin"]["role"] == "reconstructions"
    assert "VAE.decode" in _figure(events, "sample_1.png")["origin"]["why"]
    saved = _figure(events, "samples_1.png")
    assert saved["trigger"] == "save_image" and saved["png"]


def test_probe_figures_and_steps_through_the_checks(gen_run: tuple[Path, list[dict[str, Any]]]) -> None:
    """The probe's raw records as the evidence would hold them: the mislabelled saved grid fails
    `figure_origin` for samples beside no true samples figure, the plotted losses pass."""
    _, events = gen_run
    lines = _figure(events, "losses")["lines"]
    assert [ln["label"] for ln in lines] == ["D loss", "G loss"] and lines[0]["n"] == 8
    figs = [{"kind": "image-grid", "title": e.get("suptitle"), "saved_as": e.get("saved_as"), "cell": None,
             "origin": e["origin"]} for e in events if e["kind"] == "figure" and "origin" in e]
    only_saved = [f for f in figs if f["saved_as"] == "samples_1.png"]
    out = figure_origin(_ctx(_figs_ev(*only_saved)), {"want": "samples"})
    assert out.status == "fail" and out.message.startswith("reconstructions shown as samples"), out.message
    assert figure_origin(_ctx(_figs_ev(*figs)), {"want": "class-grid"}).status == "pass"


def test_idle_without_the_generative_cap(tmp_path: Path) -> None:
    events = _probe_run(tmp_path, {})
    assert not [e for e in events if e["kind"] in ("optimizer-stepped", "probe-error")]
    assert not [e for e in events if e["kind"] == "figure" and ("origin" in e or "lines" in e)]
    assert not [e for e in events if e.get("trigger") == "save_image"]
