"""Measuring captured generative models (grader.verify.gen_eval, .gen_json, .generative).

Everything here is written by the test: a fake instrument whose predictions can be reasoned
about (it classifies an image by its mean brightness, ten bands of 0.1), tiny TorchScript
generators (one spreading its samples evenly over the bands, a collapsed one, a conditional one
that follows its label and one that ignores it, a DCGAN-shaped one), and VAEs whose KL term is
known in closed form. No real instrument, no training, no kernel.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from grader import genmeasures as gm
from grader.execute import SandboxLimits, SandboxSpec
from grader.rubric import Generative
from grader.verify import gen_eval, gen_sandbox
from grader.verify.gen_json import capture_record, read_gen
from grader.verify.generative import (
    measure,
    reference_metrics,
    sample_measures,
    vae_measures,
)
from grader.verify.spec import NotVerified

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
LN2 = math.log(2)


class BrightnessInstrument(nn.Module):
    """Class = the band of 0.1 the mean pixel falls in; features: mean, std, top-half and left-half means."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        centers = torch.arange(10, dtype=torch.float32) / 10 + 0.05
        return -((m[:, None] - centers[None]) ** 2) * 5000

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)), x[:, :, :14].mean(dim=(1, 2, 3)),
                            x[:, :, :, :14].mean(dim=(1, 2, 3))], 1)


class OnePassInstrument(BrightnessInstrument):
    """The same instrument with `classify`: logits and features in one pass."""

    @torch.jit.export
    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(x), self.features(x) * 1.0


def _phi(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


class Even(nn.Module):
    """tanh-range images of one brightness Phi(z0): uniform over 0..1, so over the ten bands."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        v = _phi(z[:, 0]) * 2 - 1
        return (v[:, None] * self.scale).expand(z.shape[0], 784)


class Collapsed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(8, 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.w(z) * 0 - 0.4)


class FollowsLabel(nn.Module):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = (y.to(torch.float32) + 0.5) / 10 + 0.0 * z[:, 0]
        return v[:, None, None, None].expand(z.shape[0], 1, 28, 28)


class FollowsOneHot(nn.Module):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = (y.argmax(dim=1).to(torch.float32) + 0.5) / 10 + 0.0 * z[:, 0]
        return v[:, None, None, None].expand(z.shape[0], 1, 28, 28)


class IgnoresLabel(nn.Module):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _phi(z[:, 0])[:, None, None, None].expand(z.shape[0], 1, 28, 28)


class Endless(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z[:, :1]
        for _ in range(1 << 40):
            x = x * 1.0
        return x.expand(z.shape[0], 784)


class BatchStats(nn.Module):
    """Even over the bands on batch statistics (training mode); its running mean, far off, makes
    every eval-mode sample black."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1, affine=False)
        self.bn.running_mean.fill_(50.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _phi(self.bn(z[:, :1])[:, 0])[:, None].expand(z.shape[0], 784)


class DCGen(nn.Module):
    """DCGAN-shaped: (B, 8, 1, 1) -> 7x7 -> 14x14 -> 28x28 with transposed convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.ConvTranspose2d(8, 4, 7, 1, 0), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.ConvTranspose2d(4, 2, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(2, 1, 4, 2, 1),
                                  nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Disc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 7, 1, 0), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1)


class KnownVAE(nn.Module):
    """q(z|x) = N([1, 0], diag(1, 1/4)) for every x: KL = 0.5 + 0.5 (1/4 - 1 - ln 1/4) nats;
    the decoder gives every pixel 1/2 (or logit -1): NLL = 784 ln 2 (or the logit's) nats."""

    def __init__(self, logits: bool = False) -> None:
        super().__init__()
        self.logits = logits
        self.fc = nn.Linear(784, 2)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(x.view(-1, 784)) * 0
        return h + torch.tensor([1.0, 0.0]), h + torch.tensor([0.0, math.log(0.25)])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        base = torch.full((z.shape[0], 784), -1.0 if self.logits else 0.5)
        return base + 0 * z.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(mu), mu, logvar


KNOWN_KL = 0.5 + 0.5 * (0.25 - 1 - math.log(0.25))


class _Method(nn.Module):
    def __init__(self, vae: nn.Module, which: str) -> None:
        super().__init__()
        self.vae, self.which = vae, which

    def forward(self, x: torch.Tensor) -> Any:
        return self.vae.encode(x) if self.which == "encode" else self.vae.decode(x)


def _script(m: nn.Module) -> torch.jit.ScriptModule:
    return torch.jit.script(m.eval())


@pytest.fixture(scope="module")
def instrument(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The fake instrument's folder (mnist-classifier.pt/.json) and its provenance; `real` is the
    even generator's statistics at another seed (a stand-in for real images)."""
    folder = tmp_path_factory.mktemp("instruments")
    inst = _script(BrightnessInstrument())
    inst.save(str(folder / "mnist-classifier.pt"))
    g = _script(Even())
    s = gen_eval.measure_generator(lambda z, y: g(z), instrument=inst, n=2000, seed=7, latent_shape=[8])
    real = {"n": 2000, "accuracy": 1.0, "classifier_score": s["classifier_score"],
            "coverage": gm.class_coverage(s["predicted"]), "diversity": s["diversity"],
            "feature_dim": 4, "feature_mean": s["feature_mean"], "feature_cov": s["feature_cov"]}
    prov = {"name": "mnist-classifier", "test_accuracy": 0.995, "real": real, "data": {"name": "mnist"}}
    (folder / "mnist-classifier.json").write_text(json.dumps(prov), encoding="utf-8")
    for p in (folder, *folder.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return folder, prov


# ---------------------------------------------------------------- in process (reference solutions)


def test_an_even_generator_covers_every_digit_and_scores_near_ten(instrument: tuple[Path, dict]) -> None:
    folder, prov = instrument
    g = _script(Even())
    s = gen_eval.measure_generator(lambda z, y: g(z), instrument=str(folder / "mnist-classifier.pt"), n=2000,
                                   seed=0, latent_shape=[8])
    assert s["output_map"] == "tanh range: (x + 1) / 2" and s["resize"] is None and s["n"] == 2000
    m = sample_measures(s, real=prov["real"])
    assert m["coverage"]["classes"] == 10 and m["coverage"]["max_share"] < 0.14
    assert m["classifier_score"] > 8.0 and not m["collapse"]["flag"] and m["conditional"] is None
    assert m["frechet_distance"] < 0.01 and 0.9 < m["diversity_ratio"] < 1.1
    assert reference_metrics(m) == {"classifier_score": m["classifier_score"], "coverage_classes": 10,
                                    "max_share": m["coverage"]["max_share"], "frechet_distance": m["frechet_distance"]}
    # the same formulas as grader.genmeasures: one code for students and references
    assert s["classifier_score"] == pytest.approx(gm.classifier_score(np.eye(10)[s["predicted"]] * 0.98 + 0.002),
                                                  rel=0.2)
    probs = np.random.default_rng(0).dirichlet(np.ones(10), 300)
    assert gen_eval._gen_classifier_score(probs) == pytest.approx(gm.classifier_score(probs), rel=1e-12)
    imgs = np.random.default_rng(1).random((50, 784))
    assert gen_eval._gen_pairwise(imgs, 2000, 3) == pytest.approx(gm.mean_pairwise_distance(imgs, seed=3), rel=1e-12)


def test_the_numbers_depend_on_the_seed_not_on_the_batch(instrument: tuple[Path, dict]) -> None:
    folder, _ = instrument
    g = _script(Even())
    inst = torch.jit.load(str(folder / "mnist-classifier.pt"))
    a, b, c = (gen_eval.measure_generator(lambda z, y: g(z), instrument=inst, n=1500, seed=seed, latent_shape=[8],
                                          batch=batch) for seed, batch in ((0, 500), (0, 128), (1, 500)))
    assert a["predicted"] == b["predicted"] and a["classifier_score"] == pytest.approx(b["classifier_score"])
    assert a["predicted"] != c["predicted"]
    one_pass = _script(OnePassInstrument())
    d = gen_eval.measure_generator(lambda z, y: g(z), instrument=one_pass, n=1500, seed=0, latent_shape=[8])
    assert d["predicted"] == a["predicted"] and np.allclose(d["feature_cov"], a["feature_cov"])


def test_a_collapsed_generator_is_flagged(instrument: tuple[Path, dict]) -> None:
    folder, prov = instrument
    g = _script(Collapsed())
    s = gen_eval.measure_generator(lambda z, y: g(z), instrument=str(folder / "mnist-classifier.pt"), n=1000,
                                   seed=0, latent_shape=[8])
    m = sample_measures(s, real=prov["real"])
    assert m["coverage"]["classes"] == 1 and m["coverage"]["max_share"] == 1.0 and m["coverage"]["most"] == 3
    assert m["classifier_score"] == pytest.approx(1.0, abs=1e-3) and m["diversity"] == 0.0
    assert m["collapse"]["flag"] and "digit 3 is 100%" in m["collapse"]["why"] and "near-identical" in m["collapse"]["why"]
    assert m["frechet_distance"] > 0.05


@pytest.mark.parametrize(("model", "label_input", "accuracy"), [
    (FollowsLabel, "index", (1.0, 1.0)), (FollowsOneHot, "onehot", (1.0, 1.0)), (IgnoresLabel, "index", (0.06, 0.14))])
def test_conditional_accuracy_follows_the_label_or_not(instrument: tuple[Path, dict], model: type, label_input: str,
                                                       accuracy: tuple[float, float]) -> None:
    folder, prov = instrument
    g = _script(model())
    s = gen_eval.measure_generator(lambda z, y: g(z, y), instrument=str(folder / "mnist-classifier.pt"), n=2000,
                                   seed=0, latent_shape=[8], label_input=label_input)
    assert s["asked"] == [i % 10 for i in range(2000)]
    m = sample_measures(s, real=prov["real"], label_input=label_input)
    assert accuracy[0] <= m["conditional"]["accuracy"] <= accuracy[1]
    assert m["conditional"]["label_input"] == label_input and len(m["conditional"]["per_class"]) == 10
    assert m["coverage"]["classes"] == 10  # ignoring the label is not collapse: it is caught by the accuracy


def test_outputs_are_mapped_to_pixels_by_their_range() -> None:
    x = torch.linspace(0, 1, 784).repeat(4, 1)
    assert gen_eval._gen_output_map(x) == "0..1: as is"
    assert gen_eval._gen_output_map(x * 2 - 1) == "tanh range: (x + 1) / 2"
    assert gen_eval._gen_output_map(x * 12 - 6) == "logits: sigmoid"
    # a tanh generator whose samples stayed bright: the notebook's own outputs reached -1
    assert gen_eval._gen_output_map(x * 0.5 + 0.5, hint=[-0.98, 0.99]) == "tanh range: (x + 1) / 2"
    images, resize = gen_eval._gen_as_images(torch.zeros(3, 3, 64, 64))
    assert tuple(images.shape) == (3, 1, 28, 28) and resize == "64x64 resized to 28x28 (bilinear)"
    with pytest.raises(ValueError, match="not a square image"):
        gen_eval._gen_as_images(torch.zeros(2, 99))


@pytest.mark.parametrize("logits", [False, True])
def test_a_vae_bound_is_recomputed_in_nats_per_image(logits: bool) -> None:
    vae = _script(KnownVAE(logits))
    images = (np.random.default_rng(0).random((300, 28, 28)) * 255).astype(np.uint8)
    v = gen_eval.measure_vae(vae.encode, vae.decode, images=images, batch=128)
    assert v["kl"] == pytest.approx(KNOWN_KL, rel=1e-6)
    assert v["kl_per_dim"] == pytest.approx([0.5, KNOWN_KL - 0.5], rel=1e-6)
    if logits:  # every pixel p = sigmoid(-1): the NLL depends on the image
        x = images.reshape(300, -1) / 255.0
        p = 1 / (1 + math.e)
        assert v["decoder_output"] == "logits"
        assert v["recon"] == pytest.approx(float(-(x * math.log(p) + (1 - x) * math.log(1 - p)).sum(1).mean()), rel=1e-6)
    else:
        assert v["decoder_output"] == "probabilities" and v["recon"] == pytest.approx(784 * LN2, rel=1e-6)
    m = vae_measures(v)
    assert m["nelbo"] == pytest.approx(m["recon"] + KNOWN_KL) and m["active_units"] == 0 and m["latent"] == 2
    assert not m["posterior_collapse"] and m["n"] == 300
    # the forward alone (no encode/decode captured) gives the same bound here: its recon is decode(mu)
    assert gen_eval.measure_vae(None, None, images=images, forward=vae)["nelbo"] == pytest.approx(v["nelbo"])


def test_conv_layers_are_read_from_scripted_traced_and_exported_graphs() -> None:
    want = [["conv_transpose", [7, 7], [1, 1]], ["conv_transpose", [4, 4], [2, 2]], ["conv_transpose", [4, 4], [2, 2]]]
    g = DCGen().eval()
    z = torch.randn(2, 8, 1, 1)
    assert gen_sandbox._gen_conv_layers(torch.jit.script(g), "torchscript") == want
    assert gen_sandbox._gen_conv_layers(torch.jit.trace(g, z, check_trace=False), "torchscript") == want
    assert gen_sandbox._gen_conv_layers(torch.export.export(g, (z,)).module(), "export") == want
    d = torch.jit.script(Disc().eval())
    assert gen_sandbox._gen_conv_layers(d, "torchscript") == [["conv", [4, 4], [2, 2]], ["conv", [7, 7], [1, 1]]]


def test_the_sandbox_script_is_self_contained() -> None:
    import ast

    text = gen_sandbox.source()
    tree = ast.parse(text)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"typing", "os", "json", "math", "traceback", "hashlib", "contextlib", "numpy", "torch", "sys", "warnings"}
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {c for c in called if c.startswith(("_gen", "_eval", "measure_"))} <= defined


# ---------------------------------------------------------------- gen.json, strictly


def _entry(cid: str = "g0", **kw: Any) -> dict[str, Any]:
    e = {"id": cid, "role": "generator", "name": "netG", "class": "Generator", "model_ref": 0, "optimizer_refs": [1],
         "files": {"forward": f"{cid}.pt"}, "format": {"forward": "script"}, "latent": 8, "latent_shape": [8],
         "label_input": None, "label_position": None, "n_classes": None, "image_shape": [784],
         "output_range": [-1.0, 1.0], "input_range": None, "vae_outputs": None, "calls": 3, "steps": 10}
    e.update(kw)
    return e


@pytest.mark.parametrize(("change", "key"), [
    ({"role": "painter"}, "role"), ({"files": {"forward": "../../etc/passwd"}}, "files"),
    ({"files": {"forward": "g1.pt"}}, "files"), ({"latent_shape": [8, -1]}, "latent_shape"),
    ({"output_range": [float("nan"), 1.0]}, "output_range"), ({"output_range": [2.0, 1.0]}, "output_range"),
    ({"name": "os.system('x'); y"}, "name"), ({"role": "cgenerator"}, "label_input"),
    ({"vae_outputs": ["recon", "mu", "mu"]}, "vae_outputs"), ({"format": {"forward": "pickle"}}, "files"),
    ({"calls": True}, "calls"), ({"latent_shape": [100000]}, "latent_shape")])
def test_a_malformed_capture_entry_costs_that_capture_only(change: dict, key: str) -> None:
    record = capture_record(_entry(**change), set())
    assert record["reason"] == f"its entry in gen.json is malformed at `{key}`" and "files" not in record


def test_gen_json_ids_files_and_failed_captures(tmp_path: Path) -> None:
    path = tmp_path / "gen.json"
    entries = [_entry(), _entry(), _entry("G0"), {"id": "g3", "role": "vae", "class": "VAE", "reason": "not scriptable"},
               *[_entry(f"g{k}") for k in range(4, 12)]]
    path.write_text(json.dumps({"version": 1, "captures": entries, "dropped": 2}), encoding="utf-8")
    records, dropped = read_gen(path)
    assert len(records) == 8 and dropped == 2 + 4
    assert records[0]["files"] == {"forward": "g0.pt"} and records[0]["format"] == {"forward": "script"}
    assert "no valid, unique id" in records[1]["reason"] and "no valid, unique id" in records[2]["reason"]
    assert records[3]["reason"] == "not captured: not scriptable" and records[3]["role"] == "vae"
    for bad, why in (("[" * 100000, "nested too deeply"), ("{", "not valid JSON"),
                     (json.dumps({"version": 2, "captures": []}), "malformed at `version`")):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(NotVerified, match=why):
            read_gen(path)
    with pytest.raises(NotVerified, match="no generative model was captured"):
        read_gen(tmp_path / "missing.json")


# ---------------------------------------------------------------- the host, with the sandbox


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from grader.datasets import locate, synth

    data = tmp_path_factory.mktemp("gen-data")
    synth(data, size="tiny", seed=0, names=["mnist"])
    return locate("mnist", data)


def _probe(tmp_path: Path, models: dict[str, tuple[torch.jit.ScriptModule | bytes, dict[str, Any]]]) -> Path:
    """probe/verify/gen.json and the files of `models` (id -> (module or raw bytes, entry))."""
    verify = tmp_path / "probe" / "verify"
    verify.mkdir(parents=True)
    captures = []
    for model, entry in models.values():
        for key, name in entry.get("files", {}).items():
            m = model if key == "forward" else model[key]  # type: ignore[index]
            if isinstance(m, dict):
                m = m["forward"]
            if isinstance(m, bytes):
                (verify / name).write_bytes(m)
            else:
                m.save(str(verify / name))
        captures.append(entry)
    (verify / "gen.json").write_text(json.dumps({"version": 1, "captures": captures, "dropped": 0}), encoding="utf-8")
    return tmp_path / "probe"


def _measure(tmp_path: Path, probe: Path, instrument: tuple[Path, dict], *, sandbox: str = "none",
             data: dict[str, str] | None = None, samples: int = 1000, timeout: float = 120.0) -> dict[str, Any]:
    return measure(run_dir=tmp_path, probe_dir=probe, generative=Generative(instrument="mnist-classifier", samples=samples, seed=0), data=data or {},
                   spec=SandboxSpec(sandbox=sandbox), limits=SandboxLimits(), timeout_s=timeout,  # type: ignore[arg-type]
                   instruments=instrument[0])


def test_a_submissions_generators_vae_and_discriminator_are_measured(tmp_path: Path, instrument: tuple[Path, dict],
                                                                     mnist: Path) -> None:
    vae = KnownVAE()
    models = {
        "g0": (_script(Collapsed()), _entry("g0")),
        "g1": (_script(IgnoresLabel()), _entry("g1", role="cgenerator", label_input="index", label_position=1,
                                               n_classes=10)),
        "g2": ({"forward": _script(vae), "encode": _script(_Method(vae, "encode")),  # type: ignore[dict-item]
                "decode": _script(_Method(vae, "decode"))},
               _entry("g2", role="vae", latent=2, latent_shape=[2], image_shape=[1, 28, 28],
                      vae_outputs=["recon", "mu", "logvar"], output_range=[0.5, 0.5],
                      files={"forward": "g2.pt", "encode": "g2-encode.pt", "decode": "g2-decode.pt"},
                      format={"forward": "script", "encode": "script", "decode": "script"})),
        "g3": (_script(Disc()), _entry("g3", role="discriminator", latent=None, latent_shape=None)),
        "g4": (torch.jit.trace(DCGen().eval(), torch.randn(2, 8, 1, 1), check_trace=False),
               _entry("g4", latent_shape=[8, 1, 1], format={"forward": "trace"})),
    }
    block = _measure(tmp_path, _probe(tmp_path, models), instrument, data={"mnist": str(mnist)})
    assert block["reason"] is None, block
    assert block["instrument"]["name"] == "mnist-classifier" and len(block["instrument"]["digest"]) == 64
    assert block["instrument"]["test_accuracy"] == 0.995 and set(block["real"]) == {"classifier_score", "coverage",
                                                                                      "diversity", "n"}
    assert [c["id"] for c in block["captures"]] == ["g0", "g1", "g2", "g3", "g4"]
    assert all("files" not in c and "format" not in c for c in block["captures"])
    g0, g1, g2, g4 = block["measures"]
    assert [m["capture"] for m in block["measures"]] == ["g0", "g1", "g2", "g4"]
    assert g0["collapse"]["flag"] and g0["coverage"]["classes"] == 1 and g0["n"] == 1000 and g0["seed"] == 0
    assert g0["facts"]["params"] == 8 * 784 + 784 and g0["facts"]["ops"].get("linear") == 1
    assert g1["conditional"]["accuracy"] < 0.2 and not g1["collapse"]["flag"]
    assert g1["conditional"]["label_effect"] == 0.0 and g0["conditional"] is None  # the label changes nothing
    assert g2["vae"]["kl"] == pytest.approx(KNOWN_KL) and g2["vae"]["recon"] == pytest.approx(784 * LN2)
    assert reference_metrics(g2)["kl"] == pytest.approx(KNOWN_KL) and reference_metrics(g2)["active_units"] == 0
    assert reference_metrics(g1)["conditional_accuracy"] == g1["conditional"]["accuracy"]
    assert g2["vae"]["n"] > 0 and g2["vae"]["active_units"] == 0 and g2["vae"]["decoder_output"] == "probabilities"
    assert g2["collapse"]["flag"] and g2["output_map"] == "0..1: as is"  # its decoder draws one grey image
    assert g4["facts"]["layers"] == [["conv_transpose", [7, 7], [1, 1]], ["conv_transpose", [4, 4], [2, 2]],
                                     ["conv_transpose", [4, 4], [2, 2]]]
    assert g4["output_map"] == "tanh range: (x + 1) / 2" and "reason" not in g4
    (d,) = block["structures"]
    assert d["capture"] == "g3" and d["facts"]["layers"] == [["conv", [4, 4], [2, 2]], ["conv", [7, 7], [1, 1]]]
    json.dumps(block, allow_nan=False)


def test_what_cannot_be_measured_gets_a_reason_never_an_exception(tmp_path: Path, instrument: tuple[Path, dict]) -> None:
    pickled = tmp_path / "pickled.pt"
    torch.save(Collapsed(), pickled)
    models = {"g0": (pickled.read_bytes(), _entry("g0")),
              "g1": (_script(Even()), _entry("g1")),
              "g2": (_script(KnownVAE()), _entry("g2", role="vae", latent=2, latent_shape=[2], image_shape=[784],
                                                 vae_outputs=["recon", "mu", "logvar"]))}
    (tmp_path / "a").mkdir()
    block = _measure(tmp_path / "a", _probe(tmp_path / "a", models), instrument)  # no MNIST mounted
    g0, g1, g2 = block["measures"]
    assert "pickled model (torch.save)" in g0["reason"] and "g0.pt" in g0["reason"]
    assert "reason" not in g1 and g1["coverage"]["classes"] == 10
    assert g2["vae_reason"].startswith("the MNIST test split is not mounted") and "no decode method" in g2["samples_reason"] and "reason" in g2
    # a malformed gen.json: a reason for the whole block
    (tmp_path / "b" / "probe" / "verify").mkdir(parents=True)
    (tmp_path / "b" / "probe" / "verify" / "gen.json").write_text("{not json", encoding="utf-8")
    block = _measure(tmp_path / "b", tmp_path / "b" / "probe", instrument)
    assert "not valid JSON" in block["reason"] and block["measures"] == []
    # a run that was killed: nothing captured is trusted
    (tmp_path / "a" / "run.json").write_text(json.dumps({"status": "killed"}), encoding="utf-8")
    block = _measure(tmp_path / "a", tmp_path / "a" / "probe", instrument)
    assert "killed" in block["reason"] and block["measures"] == [] and block["captures"] == []
    # no instrument trained yet
    block = measure(run_dir=tmp_path / "b", probe_dir=_probe(tmp_path / "c", {"g1": models["g1"]}),
                    generative=Generative(instrument="mnist-classifier", samples=100), data={}, spec=SandboxSpec(sandbox="none"),
                    limits=SandboxLimits(), timeout_s=60, instruments=tmp_path)
    assert "instrument is not available" in block["reason"] and "reason" in block["measures"][0]


def test_a_forged_result_line_is_not_trusted(tmp_path: Path, instrument: tuple[Path, dict]) -> None:
    from grader.verify.gen_json import check_samples, result_line

    with pytest.raises(NotVerified, match="more than one result line"):
        result_line(b'{"ok": true, "captures": []}\n{"ok": true, "captures": []}\n', b"", 0)
    good = {"n": 3, "n_classes": 10, "output_map": "0..1: as is", "output_range": [0.0, 1.0], "resize": None,
            "classifier_score": 2.0, "predicted": [1, 2, 3], "feature_mean": [0.0, 1.0],
            "feature_cov": [[1.0, 0.0], [0.0, 1.0]], "diversity": 3.0}
    assert check_samples(good, n=3, n_classes=10, dim=2)["predicted"] == [1, 2, 3]
    for key, bad in (("classifier_score", 11.0), ("predicted", [1, 2, 10]), ("predicted", [1, 2]),
                     ("feature_cov", [[1.0, 0.0]]), ("diversity", 29.0), ("output_map", "whatever")):
        with pytest.raises(NotVerified, match=f"`{key}`"):
            check_samples({**good, key: bad}, n=3, n_classes=10, dim=2)


def test_the_measuring_sandbox_is_confined_and_timed(tmp_path: Path, instrument: tuple[Path, dict]) -> None:
    from grader import sandbox

    try:
        sandbox.check_bwrap()
    except Exception as exc:  # noqa: BLE001 - pragma: no cover, depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    models = {"g0": (_script(Even()), _entry("g0")),
              "g1": (_script(FollowsLabel()), _entry("g1", role="cgenerator", label_input="index", label_position=1,
                                                     output_range=[0.05, 0.95]))}
    probe = _probe(tmp_path, models)
    for p in (tmp_path, probe, probe / "verify", *(probe / "verify").iterdir()):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    block = _measure(tmp_path, probe, instrument, sandbox="bwrap", samples=500)
    assert block["reason"] is None, block
    assert block["measures"][0]["coverage"]["classes"] == 10 and block["measures"][1]["conditional"]["accuracy"] == 1.0
    block = _measure(tmp_path, probe, instrument, sandbox="bwrap", samples=500, timeout=0.5)
    assert "no time was left" in block["reason"] and block.get("timed_out") is True


def test_a_generator_that_never_returns_is_stopped_at_the_time_given(tmp_path: Path, instrument: tuple[Path, dict]) -> None:
    import types

    from grader.verify.generative import measure_in_time

    probe = _probe(tmp_path, {"g0": (_script(Endless()), _entry("g0"))})
    rubric = types.SimpleNamespace(generative=Generative(instrument="mnist-classifier", samples=100, timeout=3.0), limits=None)
    result = types.SimpleNamespace(started_at=time.time(), startup_s=1.0)
    started = time.monotonic()
    block, note = measure_in_time(result, "lab.ipynb", rubric=rubric, limits=SandboxLimits(), submission_end=None,
                                  run_dir=tmp_path, probe_dir=probe, spec=SandboxSpec(sandbox="none"), data={},
                                  instruments=instrument[0])
    assert time.monotonic() - started < 30 and "timed_out" not in block
    assert "time limit of 3 s" in block["reason"] and "rubric generative.timeout" in block["reason"]
    assert block["measures"][0]["reason"] == block["reason"]
    assert note is not None and note["code"] == "sandbox-limit" and "ran past it" in note["message"]
    # the submission's time already spent: nothing starts
    block, note = measure_in_time(result, "lab.ipynb", rubric=rubric, limits=SandboxLimits(),
                                  submission_end=time.time() - 120, run_dir=tmp_path, probe_dir=probe,
                                  spec=SandboxSpec(sandbox="none"), data={}, instruments=instrument[0])
    assert "no time was left" in block["reason"] and note is not None and note["code"] == "submission-time"
    assert "could not start" in note["message"]


def test_a_batchnorm_generator_is_not_called_collapsed_for_the_mode_the_grader_chose(
        tmp_path: Path, instrument: tuple[Path, dict]) -> None:
    traced = torch.jit.trace(BatchStats().eval(), torch.randn(4, 8), check_trace=False)
    models = {"g0": (_script(BatchStats()), _entry("g0", output_range=[0.0, 1.0])),
              "g1": (traced, _entry("g1", output_range=[0.0, 1.0], format={"forward": "trace"}))}
    block = _measure(tmp_path, _probe(tmp_path, models), instrument, samples=1000)
    g0, g1 = block["measures"]
    assert g0["batchnorm"].startswith("train: batch statistics of 500 samples (in eval mode, with its running "
                                      "statistics: digit 0 is 100% of the samples")
    assert not g0["collapse"]["flag"] and g0["coverage"]["classes"] == 10
    # a traced graph keeps the mode it was traced in: eval mode only, and what it shows
    assert "batchnorm" not in g1 and g1["collapse"]["flag"] and g1["coverage"]["most"] == 0


def test_the_pipeline_measures_generative_models_only_for_a_lab_that_asks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instrument: tuple[Path, dict], mnist: Path) -> None:
    """pipeline._execute with the sandboxed run replaced by a stand-in that leaves what the probe's
    teardown writes (gen.json and a generator): evidence["generative"] for a rubric with
    `generative:`, None for one without; the captured files are removed after."""
    import dataclasses

    import nbformat

    from grader import execute, instruments
    from grader.execute import RunResult
    from grader.pipeline import GradeSettings, _execute
    from grader.rubric import load_rubric

    def fake_run(path, *, submission_dir, out_dir, spec, limits, startup_code, teardown_code, deadline):
        out_dir.mkdir(parents=True, exist_ok=True)
        _probe(out_dir, {"g0": (_script(Collapsed()), _entry("g0"))})
        result = RunResult(path="gan.ipynb", status="ok", reason="", cells=(), started_at=time.time() - 40,
                           duration_s=40.0, startup_s=5.0, executed_notebook_path="", log_path="",
                           figures_kept=0, figures_dropped=0, output_truncated=False,
                           teardown={"status": "ok", "seconds": 1.0})
        (out_dir / "run.json").write_text(json.dumps(dataclasses.asdict(result)))
        return result

    monkeypatch.setattr(execute, "run_notebook", fake_run)
    monkeypatch.setattr(instruments, "HERE", instrument[0])
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "gan.ipynb")
    plain = load_rubric(Path(__file__).parent / "labs" / "mnist_mlp" / "rubric.yaml")
    lab = plain.model_copy(update={"generative": Generative(instrument="mnist-classifier", samples=500)})
    settings = GradeSettings(rubric_path=Path("rubric.yaml"), out=tmp_path, sandbox="none",
                             data={"mnist": str(mnist)})
    ev = _execute(tmp_path / "gan.ipynb", "gan.ipynb", submission_dir=tmp_path, run_dir=tmp_path / "run",
                  settings=settings, rubric=lab)
    gen = ev["generative"]
    assert gen["reason"] is None and gen["instrument"]["name"] == "mnist-classifier"
    (m,) = gen["measures"]
    assert m["capture"] == "g0" and m["n"] == 500 and m["collapse"]["flag"]
    assert not (tmp_path / "run" / "probe" / "verify").exists()
    ev = _execute(tmp_path / "gan.ipynb", "gan.ipynb", submission_dir=tmp_path, run_dir=tmp_path / "run2",
                  settings=settings, rubric=plain)
    assert ev["generative"] is None


def test_a_cached_run_answers_only_for_the_same_generative_settings_and_instrument(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instrument: tuple[Path, dict]) -> None:
    import shutil

    import nbformat

    from grader import instruments
    from grader.pipeline import GradeSettings, run_cache_key
    from grader.rubric import load_rubric

    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "gan.ipynb")
    plain = load_rubric(Path(__file__).parent / "labs" / "mnist_mlp" / "rubric.yaml")
    settings = GradeSettings(rubric_path=Path("rubric.yaml"), out=tmp_path)
    other = tmp_path / "instruments"
    shutil.copytree(instrument[0], other)
    monkeypatch.setattr(instruments, "HERE", other)

    def key(rubric: Any) -> str:
        return run_cache_key(tmp_path / "gan.ipynb", "gan.ipynb", settings, rubric, inputs="x")
    lab = plain.model_copy(update={"generative": Generative(instrument="mnist-classifier", samples=500)})
    first = key(lab)
    assert first == key(lab) and first != key(plain)
    assert key(plain.model_copy(update={"generative": Generative(instrument="mnist-classifier", samples=1000)})) != first
    (other / "mnist-classifier.pt").write_bytes(b"retrained")
    assert key(lab) != first
