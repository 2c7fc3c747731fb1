"""Writes labs/vae/samples/<id>/ and labs/gan/samples/<id>/: the VAE and GAN labs' demo classes.

Run from the repository root when the samples change:

    PYTHONPATH=. .venv/bin/python scripts/make_gen_samples.py [--check]

Each sample is a real notebook, written the way students write these labs (the PyTorch VAE
example; the usual MNIST GAN, cGAN and DCGAN notebooks: a DataLoader over torchvision's MNIST,
D and G losses printed and plotted, figures drawn with matplotlib), that trains briefly on real
MNIST so that `dllab demo --lab vae|gan` grades the whole class in a few minutes: the VAE 3
epochs over the 60000 training images, the MLP GAN 2 epochs over a 30000-image Subset (a
BatchNorm in G's last hidden layer: digits sooner), the cGAN 2 epochs over the 60000 (its D also
taught that a real image with a wrong label is fake), the DCGAN 2 epochs over a 20000-image
Subset. Each still shows what it is built to show:

  vae  0160001  complete: the example's VAE, its printed losses, reconstructions, samples, a latent scatter
       0160002  the KL term left out of the loss: a decoder that draws nothing from the prior
       0160003  the "samples" figure is really reconstructions of test images
  gan  0163001  complete: gan.ipynb, cgan.ipynb, dcgan.ipynb
       0163002  a collapsed GAN: the generator's output ignores z (only gan.ipynb handed in)
       0163003  a cGAN whose generator ignores its label (only cgan.ipynb handed in)

The `samples:` blocks of the labs' lab.yaml (archive, outcome, expected items) are kept by hand.
With --check nothing is written; the exit code is 1 when the folders differ from what this
script writes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

LABS = Path(__file__).resolve().parent.parent / "labs"


def notebook(cells: list[tuple[str, str]], title: str) -> nbformat.NotebookNode:
    """A notebook of ("md" | "code", source) cells with fixed cell ids (the zip stays the same)."""
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}")] + [
        new_markdown_cell(src.strip("\n")) if kind == "md" else new_code_cell(src.strip("\n")) for kind, src in cells])
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


# ---------------------------------------------------------------------------------------------
# VAE: the PyTorch example (pytorch/examples vae/main.py), in notebook cells

_VAE_DATA = r'''
import torch
import torch.utils.data
from torch import nn, optim
from torch.nn import functional as F
from torchvision import datasets, transforms
from torchvision.utils import make_grid
import matplotlib.pyplot as plt

torch.manual_seed(1)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
batch_size = 128
epochs = 3          # the example trains 10; 3 to run fast
log_interval = 100

train_loader = torch.utils.data.DataLoader(
    datasets.MNIST('./data', train=True, download=True, transform=transforms.ToTensor()),
    batch_size=batch_size, shuffle=True)
test_loader = torch.utils.data.DataLoader(
    datasets.MNIST('./data', train=False, transform=transforms.ToTensor()),
    batch_size=batch_size, shuffle=False)
'''

_VAE_MODEL = r'''
class VAE(nn.Module):
    def __init__(self):
        super(VAE, self).__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


model = VAE().to(device)
optimizer = optim.Adam(model.parameters(), lr=1e-3)
'''

_VAE_LOSS = {
    "elbo": r'''
# Reconstruction + KL divergence losses summed over all elements and batch
def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')
    # see Appendix B from VAE paper: Kingma and Welling. Auto-Encoding Variational Bayes. ICLR, 2014
    # 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD
''',
    "no-kl": r'''
# Reconstruction loss summed over all elements and batch
def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')
    return BCE
''',
}

_VAE_TRAIN = r'''
train_losses, test_losses = [], []


def train(epoch):
    model.train()
    train_loss = 0
    for batch_idx, (data, _) in enumerate(train_loader):
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        if batch_idx % log_interval == 0:
            print('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader),
                loss.item() / len(data)))
    train_losses.append(train_loss / len(train_loader.dataset))
    print('====> Epoch: {} Average loss: {:.4f}'.format(epoch, train_losses[-1]))


def test(epoch):
    model.eval()
    test_loss = 0
    with torch.no_grad():
        for i, (data, _) in enumerate(test_loader):
            data = data.to(device)
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
    test_loss /= len(test_loader.dataset)
    test_losses.append(test_loss)
    print('====> Test set loss: {:.4f}'.format(test_loss))


for epoch in range(1, epochs + 1):
    train(epoch)
    test(epoch)
'''

_VAE_CURVE = r'''
plt.plot(range(1, epochs + 1), train_losses, marker='o', label='train loss')
plt.plot(range(1, epochs + 1), test_losses, marker='o', label='test loss')
plt.xlabel('epoch')
plt.ylabel('loss (nats per image)')
plt.legend()
plt.title('VAE loss: reconstruction + KL')
plt.show()
'''

_VAE_RECON = r'''
# Reconstructions: the first 8 test images (top) and the VAE's output for them (bottom)
model.eval()
with torch.no_grad():
    data, _ = next(iter(test_loader))
    data = data.to(device)
    recon_batch, mu, logvar = model(data)
    comparison = torch.cat([data[:8], recon_batch.view(-1, 1, 28, 28)[:8]])
plt.figure(figsize=(8, 2.4))
plt.imshow(make_grid(comparison.cpu(), nrow=8).permute(1, 2, 0))
plt.axis('off')
plt.title('Reconstructions')
plt.show()
'''

_VAE_SAMPLES = {
    "prior": r'''
# Samples: the decoder applied to z drawn from the prior N(0, I)
with torch.no_grad():
    sample = torch.randn(64, 20).to(device)
    sample = model.decode(sample).cpu()
plt.figure(figsize=(6, 6))
plt.imshow(make_grid(sample.view(64, 1, 28, 28), nrow=8).permute(1, 2, 0))
plt.axis('off')
plt.title('Samples from the prior')
plt.show()
''',
    # the cell a student writes when they mix up sampling and reconstructing: the pictures come
    # from test images passed through the whole VAE
    "recon": r'''
# Samples: 64 new digits generated by the VAE
with torch.no_grad():
    data, _ = next(iter(test_loader))
    sample, _, _ = model(data[:64].to(device))
    sample = sample.cpu()
plt.figure(figsize=(6, 6))
plt.imshow(make_grid(sample.view(64, 1, 28, 28), nrow=8).permute(1, 2, 0))
plt.axis('off')
plt.title('Samples from the prior')
plt.show()
''',
}

_VAE_LATENT = r'''
# The latent space: the encoder's means of 2000 test images, first two dimensions, by digit
model.eval()
mus, labels = [], []
with torch.no_grad():
    for data, y in test_loader:
        mu, logvar = model.encode(data.to(device).view(-1, 784))
        mus.append(mu.cpu())
        labels.append(y)
        if sum(len(m) for m in mus) >= 2000:
            break
mus, labels = torch.cat(mus), torch.cat(labels)
plt.figure(figsize=(6, 5))
plt.scatter(mus[:, 0], mus[:, 1], c=labels, cmap='tab10', s=4)
plt.colorbar(label='digit')
plt.xlabel('z[0]')
plt.ylabel('z[1]')
plt.title('Latent means of test images')
plt.show()
'''


def vae_notebook(*, loss: str = "elbo", samples: str = "prior", latent: bool = True) -> nbformat.NotebookNode:
    cells = [("md", "## Data"), ("code", _VAE_DATA), ("md", "## The model"), ("code", _VAE_MODEL),
             ("md", "## Loss, training and test"), ("code", _VAE_LOSS[loss]), ("code", _VAE_TRAIN),
             ("code", _VAE_CURVE), ("md", "## Reconstructions and samples"), ("code", _VAE_RECON),
             ("code", _VAE_SAMPLES[samples])]
    if latent:
        cells += [("md", "## Latent space"), ("code", _VAE_LATENT)]
    return notebook(cells, "VAE on MNIST")


def vae_samples() -> dict[str, dict[str, str]]:
    nb = nbformat.writes
    return {
        "v01": {"vae.ipynb": nb(vae_notebook())},
        "v02": {"vae.ipynb": nb(vae_notebook(loss="no-kl"))},
        "v03": {"vae.ipynb": nb(vae_notebook(samples="recon", latent=False))},
    }


# ---------------------------------------------------------------------------------------------
# GAN lab: an MLP GAN, a cGAN (one-hot label into G and D) and a DCGAN

def _gan_data(n_train: int) -> str:
    subset = (f"trainset = torch.utils.data.Subset(trainset, range(min({n_train}, len(trainset))))  # a subset, to run fast\n"
              if n_train < 60000 else "")
    return f'''
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as transforms
from torchvision.utils import make_grid
import matplotlib.pyplot as plt

torch.manual_seed(0)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
latent_dim = 100
batch_size = 64

transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
trainset = torchvision.datasets.MNIST(root='./data', train=True, download=True, transform=transform)
{subset}dataloader = torch.utils.data.DataLoader(trainset, batch_size=batch_size, shuffle=True, drop_last=True)
print(len(trainset), "training images")
'''


_GAN_MODELS = {
    "gan": r'''
class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
            nn.Linear(512, 784), nn.Tanh())

    def forward(self, z):
        return self.model(z).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, img):
        return self.model(img.view(img.size(0), -1))
''',
    # the generator starts from a learned vector and the noise never enters it: every z gives
    # the same image (the bug this sample is built to show)
    "gan-collapsed": r'''
class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.start = nn.Parameter(torch.randn(1, latent_dim))
        self.model = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
            nn.Linear(512, 784), nn.Tanh())

    def forward(self, z):
        h = self.start.expand(z.size(0), -1)
        return self.model(h).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, img):
        return self.model(img.view(img.size(0), -1))
''',
    "cgan": r'''
n_classes = 10


class Generator(nn.Module):
    """G(z, y): the noise and the one-hot label, concatenated."""
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(latent_dim + n_classes, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
            nn.Linear(512, 784), nn.Tanh())

    def forward(self, z, labels):
        return self.model(torch.cat([z, labels], dim=1)).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    """D(x, y): the image and the one-hot label, concatenated."""
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784 + n_classes, 512), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, img, labels):
        return self.model(torch.cat([img.view(img.size(0), -1), labels], dim=1))
''',
    # the label reaches D only: G takes it as an argument and never uses it
    "cgan-ignored": r'''
n_classes = 10


class Generator(nn.Module):
    """G(z, y)"""
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.LeakyReLU(0.2),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
            nn.Linear(512, 784), nn.Tanh())

    def forward(self, z, labels):
        return self.model(z).view(-1, 1, 28, 28)


class Discriminator(nn.Module):
    """D(x, y): the image and the one-hot label, concatenated."""
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(784 + n_classes, 512), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3),
            nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, img, labels):
        return self.model(torch.cat([img.view(img.size(0), -1), labels], dim=1))
''',
    "dcgan": r'''
class Generator(nn.Module):
    """z (B, 100, 1, 1) -> 64 x 7 x 7 -> 32 x 14 x 14 -> 1 x 28 x 28: transposed convolutions,
    BatchNorm and ReLU, tanh out."""
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 64, 7, 1, 0, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.ConvTranspose2d(32, 1, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    """1 x 28 x 28 -> 32 x 14 x 14 -> 64 x 7 x 7 -> 1: strided convolutions and LeakyReLU."""
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 1, 7, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, img):
        return self.main(img).view(-1, 1)


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find('BatchNorm') != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)
''',
}

_GAN_SETUP = r'''
netG = Generator().to(device)
netD = Discriminator().to(device)
{init}criterion = nn.BCELoss()
optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
'''

_GAN_LOOP = r'''
epochs = {epochs}
G_losses, D_losses = [], []
for epoch in range(epochs):
    for i, (real, labels) in enumerate(dataloader):
        real = real.to(device)
        b = real.size(0)
{cond}        ones = torch.ones(b, 1, device=device)
        zeros = torch.zeros(b, 1, device=device)
        z = torch.randn({zshape}, device=device)
        fake = netG(z{g_args})

        # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
        optimizerD.zero_grad()
{errD}        errD.backward()
        optimizerD.step()

        # (2) update G: maximize log(D(G(z)))
        optimizerG.zero_grad()
        errG = criterion(netD(fake{d_args}), ones)
        errG.backward()
        optimizerG.step()

        G_losses.append(errG.item())
        D_losses.append(errD.item())
        if i % 100 == 0:
            print(f"[Epoch {{epoch + 1}}/{{epochs}}] [Batch {{i}}/{{len(dataloader)}}] D loss: {{errD.item():.4f}} G loss: {{errG.item():.4f}}")
'''

_ERR_D = """        errD = criterion(netD(real), ones) + criterion(netD(fake.detach()), zeros)
"""
# the cGAN's D also sees real images with a wrong label as fake (the matching-aware D of Reed
# et al. 2016): it must read the label from the start, and G follows the label within the
# demo's two epochs (without it the label was still ignored after two epochs)
_ERR_D_COND = """        # a real image with a wrong label is fake too (matching-aware D, Reed et al. 2016): D must read the label
        wrong = F.one_hot((labels.to(device) + torch.randint(1, n_classes, (b,), device=device)) % n_classes, n_classes).float()
        errD = criterion(netD(real, onehot), ones) + 0.5 * criterion(netD(fake.detach(), onehot), zeros) \\
            + 0.5 * criterion(netD(real, wrong), zeros)
"""

_GAN_CURVE = r'''
plt.figure(figsize=(8, 4))
plt.plot(D_losses, label='D loss')
plt.plot(G_losses, label='G loss')
plt.xlabel('iteration')
plt.ylabel('loss')
plt.legend()
plt.title('Discriminator and generator losses')
plt.show()
'''

_GAN_SAMPLES = r'''
# 64 samples of the generator from fixed noise
netG.eval()
with torch.no_grad():
    fixed_noise = torch.randn({zshape64}, device=device)
    samples = netG(fixed_noise).cpu()
plt.figure(figsize=(6, 6))
plt.imshow(make_grid(samples, nrow=8, normalize=True, value_range=(-1, 1)).permute(1, 2, 0))
plt.axis('off')
plt.title('Generated digits')
plt.show()
'''

_CGAN_GRID = r'''
# One row per digit: G(z, y) for y = 0..9, ten z each
netG.eval()
with torch.no_grad():
    z = torch.randn(100, latent_dim, device=device)
    y = torch.arange(10, device=device).repeat_interleave(10)
    samples = netG(z, F.one_hot(y, n_classes).float()).cpu()
plt.figure(figsize=(6, 6))
plt.imshow(make_grid(samples, nrow=10, normalize=True, value_range=(-1, 1)).permute(1, 2, 0))
plt.axis('off')
plt.title('cGAN: one row per digit 0-9')
plt.show()
'''


def gan_notebook(kind: str) -> nbformat.NotebookNode:
    """`kind`: gan, gan-collapsed, cgan, cgan-ignored or dcgan."""
    conditional = kind.startswith("cgan")
    conv = kind == "dcgan"
    n_train, epochs = (20000, 2) if conv else (60000, 2) if conditional else (30000, 2)
    zshape = "b, latent_dim, 1, 1" if conv else "b, latent_dim"
    loop = _GAN_LOOP.format(
        epochs=epochs, zshape=zshape, errD=_ERR_D_COND if conditional else _ERR_D,
        cond="        onehot = F.one_hot(labels.to(device), n_classes).float()\n" if conditional else "",
        g_args=", onehot" if conditional else "", d_args=", onehot" if conditional else "")
    cells = [("md", "## Data"), ("code", _gan_data(n_train)), ("md", "## Generator and discriminator"),
             ("code", _GAN_MODELS[kind]),
             ("code", _GAN_SETUP.format(init="netG.apply(weights_init)\nnetD.apply(weights_init)\n" if conv else "")),
             ("md", "## Training"), ("code", loop), ("code", _GAN_CURVE), ("md", "## Samples")]
    if conditional:
        cells.append(("code", _CGAN_GRID))
    else:
        cells.append(("code", _GAN_SAMPLES.format(zshape64="64, latent_dim, 1, 1" if conv else "64, latent_dim")))
    title = {"gan": "GAN on MNIST", "cgan": "Conditional GAN on MNIST", "dcgan": "DCGAN on MNIST"}[kind.split("-")[0]]
    return notebook(cells, title)


def gan_samples() -> dict[str, dict[str, str]]:
    nb = nbformat.writes
    return {
        "g01": {"gan.ipynb": nb(gan_notebook("gan")), "cgan.ipynb": nb(gan_notebook("cgan")),
                "dcgan.ipynb": nb(gan_notebook("dcgan"))},
        "g02": {"gan.ipynb": nb(gan_notebook("gan-collapsed"))},
        "g03": {"cgan.ipynb": nb(gan_notebook("cgan-ignored"))},
    }


def expected() -> dict[Path, bytes]:
    """Every sample file's path → bytes."""
    out = {}
    for lab, samples in (("vae", vae_samples()), ("gan", gan_samples())):
        for folder, files in samples.items():
            for name, text in files.items():
                out[LABS / lab / "samples" / folder / name] = text.encode("utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the folders differ")
    args = ap.parse_args(argv)
    want = expected()
    roots = [LABS / "vae" / "samples", LABS / "gan" / "samples"]
    have = {p: p.read_bytes() for r in roots if r.is_dir() for p in sorted(r.rglob("*")) if p.is_file()}
    if args.check:
        same = have == want
        print("labs/vae|gan/samples match this script" if same else "labs/vae|gan/samples differ from this script")
        return 0 if same else 1
    for r in roots:
        if r.exists():
            shutil.rmtree(r)
    for path, data in want.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(want)} files under {', '.join(str(r) for r in roots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
