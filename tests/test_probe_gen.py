"""The probe's generative part (grader/probe/rec_gen.py, issue 16): the call signatures of the
models a notebook trains, their roles (generator, cgenerator, discriminator, vae) and their capture
in gen.json and TorchScript / torch.export files after the last cell.

The scenario runs as a small "student" script in a fresh interpreter (tests/test_probe.py's way),
trains each model a few steps, and saves what the live models compute on fixed inputs; the tests
load the captured files here, as the host's sandbox would, and compare. One kernel test runs a tiny
GAN notebook through the grader's sandboxed runner with the real teardown.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_probe import _run_script

from grader.verify.archive import model_format

_MODELS = """
import copy, json
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
torch.manual_seed(0)
probe, probe_gen = sys.modules["_dllab_probe"], sys.modules["_dllab_probe_gen"]
probe_gen.MAX_CAPTURES = 16  # all thirteen here; the cap is tried at the end
base = Path(sys.argv[1])
B, NZ = 16, 16
images = torch.rand(64, 1, 28, 28) * 2 - 1  # training "images" in -1..1
labels = torch.randint(0, 10, (64,))


def batches():
    for i in range(0, 64, B):
        yield images[i:i + B], labels[i:i + B]


def gan_steps(G, D, make_z, cond=None, flat=False):
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    for x, y in batches():
        x = x.view(len(x), -1) if flat else x
        extra = () if cond is None else (cond(y),)
        z = make_z(len(x))
        fake = G(z, *extra)
        optD.zero_grad()
        d_real, d_fake = D(x, *extra), D(fake.detach(), *extra)
        loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        loss_d.backward()
        optD.step()
        optG.zero_grad()
        d_out = D(fake, *extra)
        bce(d_out, torch.ones_like(d_out)).backward()
        optG.step()
    with torch.no_grad():  # the notebook's samples
        G(make_z(B), *extra)
    return optG, optD


# an MLP GAN on flat images, tanh output
netG = nn.Sequential(nn.Linear(NZ, 64), nn.ReLU(), nn.Linear(64, 784), nn.Tanh())
netD = nn.Sequential(nn.Linear(784, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1), nn.Sigmoid())
gan_steps(netG, netD, lambda n: torch.randn(n, NZ), flat=True)


class CondG(nn.Module):  # the label through nn.Embedding, images (B, 1, 28, 28)
    def __init__(self):
        super().__init__()
        self.label_emb = nn.Embedding(10, 10)
        self.net = nn.Sequential(nn.Linear(NZ + 10, 64), nn.ReLU(), nn.Linear(64, 784), nn.Tanh())

    def forward(self, z, labels):
        x = self.net(torch.cat([z, self.label_emb(labels)], 1))
        return x.view(x.size(0), 1, 28, 28)


class CondD(nn.Module):
    def __init__(self):
        super().__init__()
        self.label_emb = nn.Embedding(10, 10)
        self.net = nn.Sequential(nn.Linear(784 + 10, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1), nn.Sigmoid())

    def forward(self, x, labels):
        return self.net(torch.cat([x.view(x.size(0), -1), self.label_emb(labels)], 1))


cgan_G, cgan_D = CondG(), CondD()
gan_steps(cgan_G, cgan_D, lambda n: torch.randn(n, NZ), cond=lambda y: y)


class OneHotG(nn.Module):  # a one-hot label concatenated to z, flat images
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(NZ + 10, 64), nn.ReLU(), nn.Linear(64, 784), nn.Tanh())

    def forward(self, z, y):
        return self.net(torch.cat([z, y], 1))


class OneHotD(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784 + 10, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1), nn.Sigmoid())

    def forward(self, x, y):
        return self.net(torch.cat([x, y], 1))


onehot_G, onehot_D = OneHotG(), OneHotD()
gan_steps(onehot_G, onehot_D, lambda n: torch.randn(n, NZ), cond=lambda y: F.one_hot(y, 10).float(), flat=True)


class DCG(nn.Module):  # the PyTorch DCGAN example's: z as (B, NZ, 1, 1), transposed convolutions
    def __init__(self, ngpu=0):
        super().__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, 32, 7, 1, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
            nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
            nn.ConvTranspose2d(16, 1, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, input):
        if input.is_cuda and self.ngpu > 1:  # TorchScript cannot compile this: the capture is a trace
            return nn.parallel.data_parallel(self.main, input, range(self.ngpu))
        return self.main(input)


class DCD(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(16, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(32, 1, 7, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, input):
        return self.main(input).view(-1, 1).squeeze(1)


dc_G, dc_D = DCG(), DCD()
gan_steps(dc_G, dc_D, lambda n: torch.randn(n, NZ, 1, 1))


# a one-hot label concatenated to z before the generator: G(torch.cat([z, onehot], 1))
concat_G = nn.Sequential(nn.Linear(NZ + 10, 64), nn.ReLU(), nn.Linear(64, 784), nn.Tanh())
opt = torch.optim.Adam(concat_G.parameters(), lr=1e-3)
for x, y in batches():
    opt.zero_grad()
    (concat_G(torch.cat([torch.randn(len(x), NZ), F.one_hot(y, 10).float()], 1)) - x.view(len(x), -1)).pow(2).mean().backward()
    opt.step()


class VAE(nn.Module):  # the PyTorch example
    def __init__(self):
        super().__init__()
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


def vae_steps(model, flat=False):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, _ in batches():
        x = (x + 1) / 2
        x = x.view(-1, 784) if flat else x
        opt.zero_grad()
        out = model(x)
        recon, mu, logvar = (out[0], out[2], out[3]) if len(out) == 4 else out
        loss = F.binary_cross_entropy(recon.view(len(x), -1), x.view(len(x), -1), reduction="sum")
        (loss - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())).backward()
        opt.step()


vae = VAE()
vae_steps(vae, flat=True)  # fed flat images: its own encode takes them


class ConvVAE(nn.Module):  # encoder and `dec` submodules; the forward returns (recon, z, mu, logvar)
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 32))
        self.mu, self.logvar = nn.Linear(32, 4), nn.Linear(32, 4)
        self.dec = nn.Sequential(nn.Linear(4, 8 * 14 * 14), nn.Unflatten(1, (8, 14, 14)), nn.ReLU(),
                                 nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Sigmoid())  # a decoder by another name

    def forward(self, x):
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), z, mu, logvar


conv_vae = ConvVAE()
vae_steps(conv_vae)

classifier = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 784, 10))
opt = torch.optim.SGD(classifier.parameters(), lr=0.1)
for x, y in batches():
    opt.zero_grad()
    F.cross_entropy(classifier(x), y).backward()
    opt.step()
loop_outputs = []
for width in (32, 48):  # one name for both runs' generators: the first is gone at the end
    loopG = nn.Sequential(nn.Linear(NZ, width), nn.ReLU(), nn.Linear(width, 784), nn.Tanh())
    opt = torch.optim.SGD(loopG.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loopG(torch.randn(B, NZ)).pow(2).mean().backward()
        opt.step()
    with sys.modules["_dllab_probe_export"]._quiet(), torch.no_grad():
        loop_outputs.append(copy.deepcopy(loopG).eval()(torch.ones(2, NZ)))
autoencoder = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 784), nn.Sigmoid())
autoencoder(images[:4].view(4, -1))

# what the live models compute (CPU, eval mode) on fixed inputs, for the tests to compare with
torch.manual_seed(1)
z, zc = torch.randn(8, NZ), torch.randn(8, NZ, 1, 1)
y = torch.arange(8) % 10
x = (images[:8] + 1) / 2
cases = {"netG": (z,), "netD": (images[:8].view(8, -1),), "cgan_G": (z, y), "cgan_D": (images[:8], y),
         "onehot_G": (z, F.one_hot(y, 10).float()), "dc_G": (zc,), "dc_D": (images[:8],),
         "concat_G": (torch.cat([z, F.one_hot(y, 10).float()], 1),)}
expected = {}
with sys.modules["_dllab_probe_export"]._quiet():  # the probe does not see these calls
    for name, inputs in cases.items():
        with torch.no_grad():
            expected[name] = {"inputs": inputs, "outputs": (copy.deepcopy(globals()[name]).eval()(*inputs),)}
    for name, model in (("vae", vae), ("conv_vae", conv_vae)):
        live = copy.deepcopy(model).eval()
        xv = x.view(-1, 784) if name == "vae" else x
        with torch.no_grad():
            torch.manual_seed(5)
            forward = live(xv)
            mu, logvar = forward[-2:]
            zv = torch.randn(8, mu.shape[1])
            decode = live.decode(zv) if hasattr(live, "decode") else live.dec(zv)
        expected[name] = {"inputs": (xv,), "outputs": forward, "encode": (mu, logvar), "z": zv, "decode": decode}
del live
expected["loopG"] = loop_outputs
torch.save(expected, base / "expected.pt")

line = probe.export_generative(str(base / "verify"))
probe_gen.MAX_CAPTURES = 3
probe.export_generative(str(base / "capped"))
probe_gen.MAX_SECONDS = 0
probe.export_generative(str(base / "late"))
X = sys.modules["_dllab_probe_export"]
with X._quiet():  # torch.export, forced, as the teardown runs it
    kinds = [probe_gen._save(copy.deepcopy(m).eval(), tuple(t[:2] for t in inputs), inputs,
                             str(base / f"export-{n}.pt"), X, kinds=("export",))
             for n, m, inputs in (("dc_G", dc_G, (zc,)), ("vae", vae, (x.view(-1, 784),)))]
(base / "out.json").write_text(json.dumps({"line": line, "export_kinds": kinds}))
"""


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gen")
    run = _run_script(root, _MODELS, caps={"generative": 1})
    doc = json.loads((root / "verify" / "gen.json").read_text())
    out = json.loads((root / "out.json").read_text())
    return run, doc, out, torch.load(root / "expected.pt"), root


def _by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["captures"]}


def _load(path: Path, fmt: str):
    if fmt == "export":
        return torch.export.load(str(path)).module()
    return torch.jit.load(str(path), map_location="cpu")


def test_each_generative_model_gets_its_role_and_the_classifier_none(gen_run) -> None:
    run, doc, out, _, _ = gen_run
    roles = {c["name"]: c["role"] for c in doc["captures"] if c["name"]}
    assert roles == {"netG": "generator", "netD": "discriminator", "cgan_G": "cgenerator", "cgan_D": "discriminator",
                     "onehot_G": "cgenerator", "onehot_D": "discriminator", "dc_G": "generator", "dc_D": "discriminator",
                     "vae": "vae", "conv_vae": "vae", "loopG": "generator", "concat_G": "cgenerator"}
    assert doc["dropped"] == 0
    assert run.summary["probe"]["errors"] == 0
    assert out["line"].startswith("captured g0 ")
    assert set(doc) == {"version", "captures", "dropped"} and doc["version"] == 1



def test_the_captured_files_compute_what_the_live_models_computed(gen_run) -> None:
    _, doc, _, expected, root = gen_run
    caps = _by_name(doc)
    for name in ("netG", "netD", "cgan_G", "cgan_D", "onehot_G", "dc_G", "dc_D"):
        cap = caps[name]
        path = root / "verify" / cap["files"]["forward"]
        assert cap["files"] == {"forward": cap["id"] + ".pt"}
        assert cap["format"]["forward"] == ("trace" if name == "dc_G" else "script")
        assert model_format(path) == "torchscript"
        with torch.no_grad():
            got = _load(path, cap["format"]["forward"])(*expected[name]["inputs"])
        torch.testing.assert_close(got, expected[name]["outputs"][0], rtol=1e-5, atol=1e-6)


def test_a_label_concatenated_to_the_noise_makes_a_cgenerator_of_z_and_y(gen_run) -> None:
    """G(torch.cat([z, onehot], 1)): the capture takes (z, y) as a cGAN's does, and concatenates."""
    _, doc, _, expected, root = gen_run
    cap = _by_name(doc)["concat_G"]
    zy = expected["concat_G"]["inputs"][0]
    with torch.no_grad():
        got = _load(root / "verify" / cap["files"]["forward"], cap["format"]["forward"])(zy[:, :16], zy[:, 16:])
    torch.testing.assert_close(got, expected["concat_G"]["outputs"][0], rtol=1e-5, atol=1e-6)


def test_a_vae_is_captured_with_its_encode_and_decode(gen_run) -> None:
    _, doc, _, expected, root = gen_run
    caps = _by_name(doc)
    assert caps["vae"]["vae_outputs"] == ["recon", "mu", "logvar"]
    assert caps["conv_vae"]["vae_outputs"] == ["recon", "z", "mu", "logvar"]  # z told from mu by the seed
    for name, latent, shape in (("vae", 20, [784]), ("conv_vae", 4, [1, 28, 28])):
        cap, want = caps[name], expected[name]
        assert set(cap["files"]) == {"forward", "encode", "decode"}
        assert (cap["latent"], cap["latent_shape"], cap["image_shape"]) == (latent, [latent], shape)
        files = {part: root / "verify" / f for part, f in cap["files"].items()}
        assert all(model_format(p) == "torchscript" for p in files.values())
        with torch.no_grad():
            torch.manual_seed(5)  # the forward's sampling too: the capture keeps randn_like
            forward = _load(files["forward"], cap["format"]["forward"])(*want["inputs"])
            encode = _load(files["encode"], cap["format"]["encode"])(*want["inputs"])
            decode = _load(files["decode"], cap["format"]["decode"])(want["z"])
        torch.testing.assert_close(tuple(forward), tuple(want["outputs"]))
        torch.testing.assert_close(tuple(encode), tuple(want["encode"]))
        torch.testing.assert_close(decode, want["decode"])
        code = torch.jit.load(str(files["encode"])).code
        # the VAE's own encode; the other's encoder gives no (mu, logvar): its forward's are taken
        assert (".encode(" in code) == (name == "vae") and ("encoder" in code) is False, code
        assert 0 <= cap["output_range"][0] < cap["output_range"][1] <= 1  # sigmoid outputs
        assert cap["input_range"][0] >= 0 and cap["input_range"][1] <= 1


def test_signatures_label_inputs_ranges_and_steps(gen_run) -> None:
    run, doc, _, _, _ = gen_run
    caps = _by_name(doc)
    facts = {n: (c["latent"], c["latent_shape"], c["label_input"], c["label_position"], c["n_classes"], c["image_shape"])
             for n, c in caps.items() if c["name"] and c["role"] != "vae"}
    assert facts == {
        "netG": (16, [16], None, None, None, [784]), "netD": (None, None, None, None, None, [784]),
        "cgan_G": (16, [16], "index", 1, 10, [1, 28, 28]), "cgan_D": (None, None, "index", 1, 10, [1, 28, 28]),
        "onehot_G": (16, [16], "onehot", 1, 10, [784]), "onehot_D": (None, None, "onehot", 1, 10, [784]),
        "dc_G": (16, [16, 1, 1], None, None, None, [1, 28, 28]), "dc_D": (None, None, None, None, None, [1, 28, 28]),
        "loopG": (16, [16], None, None, None, [784]), "concat_G": (16, [16], "onehot", 1, 10, [784])}
    opts = [o for o in run.summary["optimizers"] if o["steps"]]
    for cap in doc["captures"]:
        mine = [o for o in opts if o["model_ref"] == cap["model_ref"]]
        assert cap["optimizer_refs"] == [o["ref"] for o in mine] and cap["steps"] == sum(o["steps"] for o in mine) > 0
    # four batches: D twice per batch and once more for G's loss; G once per batch and once for samples
    assert [(caps[n]["calls"], caps[n]["steps"]) for n in ("netD", "netG")] == [(12, 4), (5, 4)]
    for name in ("netG", "cgan_G", "onehot_G", "dc_G"):
        lo, hi = caps[name]["output_range"]
        assert -1 <= lo < -0.5 and 0.5 < hi <= 1, (name, lo, hi)  # tanh
        assert caps[name]["input_range"] is None
    assert caps["netD"]["input_range"][0] == pytest.approx(-1, abs=0.01)
    assert all(0 < v < 1 for v in caps["netD"]["output_range"])  # sigmoid scores


def test_a_generator_gone_at_the_end_is_rebuilt_from_the_tensors_the_probe_kept(gen_run) -> None:
    _, doc, _, expected, root = gen_run
    [gone] = [c for c in doc["captures"] if c["name"] is None]
    alive = _by_name(doc)["loopG"]
    assert (gone["class"], gone["role"], gone["image_shape"]) == ("Sequential", "generator", [784])
    for cap, want in ((gone, expected["loopG"][0]), (alive, expected["loopG"][1])):
        with torch.no_grad():
            got = _load(root / "verify" / cap["files"]["forward"], cap["format"]["forward"])(torch.ones(2, 16))
        torch.testing.assert_close(got, want)
    assert [c["name"] for c in doc["captures"][:2]] == ["loopG", None]  # newest trained first


def test_at_most_the_cap_newest_trained_first(gen_run) -> None:
    _, _, _, _, root = gen_run
    capped = json.loads((root / "capped" / "gen.json").read_text())
    assert [c["name"] for c in capped["captures"]] == ["loopG", None, "conv_vae"] and capped["dropped"] == 10
    assert [c["id"] for c in capped["captures"]] == ["g0", "g1", "g2"]
    assert sorted(p.name for p in (root / "capped").iterdir()) == [
        "g0.pt", "g1.pt", "g2-decode.pt", "g2-encode.pt", "g2.pt", "gen.json"]


def test_captures_stop_when_their_time_is_up(gen_run) -> None:
    _, _, _, _, root = gen_run
    late = json.loads((root / "late" / "gen.json").read_text())
    assert [c["reason"] for c in late["captures"]] == ["the 0 s the teardown gives the captures had run out"] * 3
    assert all(c["files"] == {} for c in late["captures"]) and len(list((root / "late").iterdir())) == 1


def test_torch_export_is_the_last_way_and_passes_the_archive_check(gen_run) -> None:
    _, _, out, expected, root = gen_run
    assert out["export_kinds"] == ["export", "export"]
    dc, vae = root / "export-dc_G.pt", root / "export-vae.pt"
    assert model_format(dc) == model_format(vae) == "export"
    with torch.no_grad():
        got = torch.export.load(str(dc)).module()(*expected["dc_G"]["inputs"])
        mu_logvar = torch.export.load(str(vae)).module()(*expected["vae"]["inputs"])[1:]
    torch.testing.assert_close(got, expected["dc_G"]["outputs"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tuple(mu_logvar), tuple(expected["vae"]["encode"]))


_IDLE = """
import torch, torch.nn as nn
probe, probe_gen = sys.modules["_dllab_probe"], sys.modules["_dllab_probe_gen"]
G = nn.Sequential(nn.Linear(8, 784), nn.Tanh())
opt = torch.optim.SGD(G.parameters(), lr=0.1)
for _ in range(2):
    opt.zero_grad()
    G(torch.randn(4, 8)).mean().backward()
    opt.step()
hooks = torch.nn.modules.module._global_forward_hooks.values()
assert not any(h is probe_gen._forward_post for h in hooks)
assert probe_gen._records == {}
assert probe.export_generative(sys.argv[1] + "/verify") is None
assert probe_gen.export(sys.argv[1] + "/verify") is None
"""


def test_without_generative_the_part_is_idle(tmp_path: Path) -> None:
    """LAB01 and the other labs: no hook, nothing recorded, nothing written at the teardown."""
    run = _run_script(tmp_path, _IDLE)
    assert run.kinds("probe-start")[0]["caps"]["generative"] == 0
    assert not (tmp_path / "verify").exists()
    assert run.summary["probe"]["errors"] == 0


_NOTEBOOK = """
import torch, torch.nn as nn
torch.manual_seed(0)
netG = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 784), nn.Tanh())
netD = nn.Sequential(nn.Linear(784, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1), nn.Sigmoid())
optG, optD = torch.optim.Adam(netG.parameters(), 2e-4), torch.optim.Adam(netD.parameters(), 2e-4)
bce, real = nn.BCELoss(), torch.rand(16, 784) * 2 - 1
for step in range(3):
    fake = netG(torch.randn(16, 8))
    optD.zero_grad()
    (bce(netD(real), torch.ones(16, 1)) + bce(netD(fake.detach()), torch.zeros(16, 1))).backward()
    optD.step()
    optG.zero_grad()
    bce(netD(fake), torch.ones(16, 1)).backward()
    optG.step()
    print(f"step {step} done")


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 32), nn.Linear(32, 2), nn.Linear(32, 2)
        self.fc3, self.fc4 = nn.Linear(2, 32), nn.Linear(32, 784)

    def encode(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return torch.sigmoid(self.fc4(torch.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)), mu, logvar


model = VAE()
opt = torch.optim.Adam(model.parameters(), 1e-3)
for step in range(2):
    opt.zero_grad()
    recon, mu, logvar = model(torch.rand(16, 1, 28, 28))
    (recon.sum() + (mu ** 2 + logvar.exp() - logvar).sum()).backward()
    opt.step()
"""


@pytest.mark.kernel
def test_the_sandbox_teardown_writes_gen_json_with_the_generator_and_the_vae(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny GAN and VAE notebook in the grader's sandboxed kernel, the probe installed with
    generative=1 and the grader's own teardown: gen.json, the generator's TorchScript and the VAE's
    encode/decode (wrappers scripted from source the probe registers) come out of the sandbox."""

    import nbformat

    from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec, run_notebook
    from grader.probe.recorder import bootstrap_source
    from grader.verify import teardown_source

    sub = tmp_path / "sub"
    sub.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_NOTEBOOK.strip())]), sub / "gan.ipynb")
    startup = (f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n"
               + bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig",
                                  generative=1))
    out = tmp_path / "out"
    result = run_notebook(sub / "gan.ipynb", submission_dir=sub, out_dir=out, spec=SandboxSpec(),
                          limits=SandboxLimits(cell_timeout_s=60, wall_timeout_s=120),
                          startup_code=startup, teardown_code=teardown_source())
    assert result.status == "ok", result.reason
    assert ("dllab teardown: captured g0 vae model (script, script, script); g1 discriminator netD (script); "
            "g2 generator netG (script)") in (out / "log.txt").read_text()
    doc = json.loads((out / "probe" / "verify" / "gen.json").read_text())
    vae, g = doc["captures"][0], doc["captures"][2]
    assert vae["files"] == {"forward": "g0.pt", "encode": "g0-encode.pt", "decode": "g0-decode.pt"}
    with torch.no_grad():  # the wrappers TorchScript compiled in the kernel, from the probe's own source text
        mu, logvar = _load(out / "probe" / "verify" / "g0-encode.pt", "script")(torch.rand(3, 1, 28, 28))
        assert mu.shape == logvar.shape == (3, 2)
        assert _load(out / "probe" / "verify" / "g0-decode.pt", "script")(mu).shape == (3, 784)
    assert (g["role"], g["name"], g["latent_shape"], g["image_shape"], g["steps"]) == ("generator", "netG", [8], [784], 3)
    path = out / "probe" / "verify" / g["files"]["forward"]
    assert model_format(path) == "torchscript"
    with torch.no_grad():
        assert _load(path, "script")(torch.zeros(5, 8)).shape == (5, 784)


# ---------------------------------------------------------------- classification by signature alone


def _model(args: list, out, rows: list | None = None):
    """A rec_gen record of one signature: args as (per-sample shape, dtype), out likewise, or
    ("tuple" | "dict", [...]) of them."""
    from grader.probe import rec_gen

    def desc(spec):
        shape, dtype = spec
        kind = "float" if dtype.is_floating_point else "int"
        return ("t", shape, kind, str(dtype))

    if isinstance(out[0], str):
        items = tuple((f"k{i}", desc(o)) if out[0] == "dict" else desc(o) for i, o in enumerate(out[1]))
        out_desc = (out[0], items)
    else:
        out_desc = desc(out)
    m = rec_gen._Model("M")
    m.calls = 1
    m.sigs["k"] = sig = rec_gen._Sig(tuple(desc(a) for a in args), out_desc, rows or [None] * len(args))
    sig.calls = 1
    return m


def test_roles_from_signatures_alone() -> None:
    from grader.probe.rec_gen import _classify, _onehot_block

    f, i = torch.float32, torch.int64

    def role(m):
        return (_classify(m) or {}).get("role")

    assert role(_model([((100,), f)], ((1, 28, 28), f))) == "generator"
    assert role(_model([((784,), f)], ((784,), f))) is None  # an autoencoder: its input is no smaller
    assert role(_model([((1, 28, 28), f)], ((10,), f))) is None  # a classifier
    assert role(_model([((1, 28, 28), f)], ((1,), f))) == "discriminator"  # kept only beside a generator
    assert role(_model([((1, 28, 28), f), ((), i)], ((), f))) == "discriminator"
    assert role(_model([((100,), f), ((), i)], ((784,), f))) == "cgenerator"
    assert role(_model([((100,), f), ((3,), f)], ((784,), f))) is None  # a second float input that is no label
    vae = _classify(_model([((784,), f)], ("dict", [((784,), f), ((8,), f), ((8,), f)])))
    assert (vae["role"], vae["latent"], vae["keys"], vae["ks"]) == ("vae", 8, ["k0", "k1", "k2"], [1, 2])
    assert role(_model([((784,), f)], ("tuple", [((784,), f), ((8,), f)]))) is None  # no log-variance
    z = torch.randn(4, 6)
    assert _onehot_block(torch.cat([z, torch.eye(4)[:, :4]], 1)) == (4, "end")
    assert _onehot_block(torch.cat([torch.eye(5)[:4], z], 1)) == (5, "start")
    assert _onehot_block(z) is None and _onehot_block(torch.eye(4)) is None  # all one-hot: no noise beside it
