"""The VAE and GAN lab packages (issue 16), without a kernel: the packages load, their rubrics
have a `generative:` block and an item of the right kind for each thing the issue asks to be
graded, the references import, take the reference signature and build the handouts' networks,
a reference trained one epoch on the tiny stand-in is measured by the grader's own code, the
part patterns pick each sample notebook for its own part, and the samples match their generator.

Grading the samples (`dllab lab validate labs/vae --samples`) runs real kernels on the MNIST stand-in:
the `slow` test at the end (and the lead's demo runs)."""

from __future__ import annotations

import fnmatch
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grader.checks.registry import KINDS
from grader.labs import find_lab, import_reference
from grader.reference_run import train_return_problem, train_signature_problem

REPO = Path(__file__).resolve().parent.parent
PARTS = {"vae": ["vae"], "gan": ["gan", "cgan", "dcgan"]}
# what the issue asks to be graded (Deliver 3-6), as the kinds that grade it, per part
KINDS_WANTED = {
    "vae": {"vae": {"generated_samples", "vae_bound", "generative_architecture", "logged_losses", "figure_origin"}},
    "gan": {"gan": {"generated_samples", "logged_losses", "figure_origin"},
            "cgan": {"generated_samples", "conditional_generation", "generative_architecture", "logged_losses",
                     "figure_origin"},
            "dcgan": {"generated_samples", "generative_architecture", "logged_losses", "figure_origin"}},
}


def _rubric(lab: str) -> dict:
    return yaml.safe_load((REPO / "labs" / lab / "rubric.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("lab", sorted(PARTS))
def test_manifest_lists_the_handouts_parts_and_samples(lab: str) -> None:
    pkg = find_lab(str(REPO / "labs" / lab))
    assert pkg.id == lab and list(pkg.manifest.references) == PARTS[lab]
    assert pkg.manifest.demo.datasets == ("mnist",) and set(pkg.manifest.demo.reference.parts) == set(PARTS[lab])
    assert len(pkg.manifest.samples) == 3
    for sample in pkg.manifest.samples:
        assert (pkg.dir / sample.folder).is_dir(), sample.folder
        assert sample.archive == f"dllab_{sample.student_id}.zip" and sample.expect.items


@pytest.mark.parametrize("lab", sorted(PARTS))
def test_rubric_grades_each_deliver_item_by_measurement(lab: str) -> None:
    doc = _rubric(lab)
    assert doc["lab"] == lab and [p["id"] for p in doc["parts"]] == PARTS[lab]
    assert {i["check"] for p in doc["parts"] for i in p["items"]} <= set(KINDS)
    assert doc["generative"]["instrument"] == "mnist-classifier" and doc["generative"]["samples"] == 10000
    assert doc["submission"]["report"] is False, "neither handout asks for a written report"
    assert sum(p["points"] for p in doc["parts"]) == doc["total"] == 100
    for part in doc["parts"]:
        assert sum(i["points"] for i in part["items"]) == part["points"], part["id"]
        assert {i["check"] for i in part["items"]} == KINDS_WANTED[lab][part["id"]], part["id"]
        for item in part["items"]:
            assert set(item["feedback"]) >= {"pass", "fail"}, item["id"]
    ids = [i["id"] for p in doc["parts"] for i in p["items"]] + [i["id"] for i in (doc.get("bonus") or {}).get("items", [])]
    assert len(ids) == len(set(ids))


def test_rubrics_ask_for_the_handouts_models() -> None:
    items = {i["id"]: i for lab in PARTS for p in _rubric(lab)["parts"] for i in p["items"]}
    assert items["vae-architecture"]["params"] == {"expect": "vae", "latent": 20}
    assert items["cgan-architecture"]["params"] == {"expect": "cgan"}
    assert items["dcgan-architecture"]["params"] == {"expect": "dcgan"}
    assert items["gan-samples"]["params"] == {"role": "generator", "architecture": "mlp"}
    assert items["dcgan-samples"]["params"] == {"role": "generator", "architecture": "conv"}
    assert items["cgan-samples"]["params"]["role"] == "cgenerator" and items["vae-samples"]["params"]["role"] == "vae"
    wants = {i["id"]: i["params"]["want"] for i in items.values() if i["check"] == "figure_origin"}
    assert wants == {"vae-reconstructions": "reconstructions", "vae-samples-figure": "samples", "gan-figure": "samples",
                     "cgan-grid": "class-grid", "dcgan-figure": "samples"}
    assert _rubric("vae")["bonus"]["items"][0]["params"] == {"want": "latent"}


@pytest.mark.parametrize("lab", sorted(PARTS))
def test_lab_validates(lab: str) -> None:
    from grader.lab_validate import validate_lab

    _, problems = validate_lab(REPO / "labs" / lab)
    assert problems == []


def test_part_patterns_pick_each_sample_notebook_for_its_own_part() -> None:
    """One notebook per model: the earliest pattern a name matches wins (grader.sources), so
    gan.ipynb serves `gan`, cgan.ipynb `cgan` and dcgan.ipynb `dcgan` (`*cgan*` alone would
    take dcgan.ipynb too)."""
    parts = {p["id"]: p["notebook"]["patterns"] for p in _rubric("gan")["parts"]}

    def first(name: str, part: str) -> int | None:
        return next((k for k, p in enumerate(parts[part]) if fnmatch.fnmatch(name, p.lower())), None)

    names = ["gan.ipynb", "cgan.ipynb", "dcgan.ipynb"]
    for part, mine in zip(["gan", "cgan", "dcgan"], names):
        ranks = {n: first(n, part) for n in names}
        assert ranks[mine] == 0 and all(r is None or r > 0 for n, r in ranks.items() if n != mine), (part, ranks)
    assert first("lab_dcgan.ipynb", "cgan") == len(parts["cgan"]) - 1  # only the catch-all `*gan*`


@pytest.mark.parametrize("lab", sorted(PARTS))
def test_references_import_and_take_the_reference_signature(lab: str) -> None:
    pkg = find_lab(str(REPO / "labs" / lab))
    for part in PARTS[lab]:
        module = import_reference(pkg, part, fresh=True)
        assert train_signature_problem(module.train) is None
        assert train_return_problem(module.train) is None
        assert isinstance(module.hyp, dict) and module.hyp["epochs"] >= 1


def test_references_build_the_handouts_networks() -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    vae = import_reference(find_lab(str(REPO / "labs" / "vae")), "vae", fresh=True)
    model = vae.VAE()
    assert [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)] == [
        (784, 400), (400, 20), (400, 20), (20, 400), (400, 784)]
    recon, mu, logvar = model(torch.rand(4, 1, 28, 28))
    assert recon.shape == (4, 784) and mu.shape == logvar.shape == (4, 20) and 0 <= recon.min() <= recon.max() <= 1

    pkg = find_lab(str(REPO / "labs" / "gan"))
    gan, cgan, dcgan = (import_reference(pkg, p, fresh=True) for p in PARTS["gan"])
    z, onehot = torch.randn(4, 100), torch.eye(10)[:4]
    for G in (gan.Generator(), dcgan.Generator()):
        out = G.eval()(z)
        assert out.shape == (4, 1, 28, 28) and out.abs().max() <= 1
    assert cgan.Generator().eval()(z, onehot).shape == (4, 1, 28, 28)
    assert cgan.Discriminator().eval()(torch.rand(4, 1, 28, 28), onehot).shape == (4, 1)
    G, D = dcgan.Generator(), dcgan.Discriminator()
    g_kinds = {type(m) for m in G.modules()}
    assert {nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.Tanh} <= g_kinds and nn.Conv2d not in g_kinds
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.stride == (2, 2) for c in convs) and any(isinstance(m, nn.LeakyReLU) for m in D.modules())
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in D.modules())


def test_a_reference_is_measured_by_the_graders_code(tiny_datasets: Path) -> None:
    """The cGAN trained one epoch on the tiny stand-in, measured on 500 samples with the
    instrument: the reference metric names, each in its range (the numbers of an untrained-ish
    generator, so nothing is asserted of their size)."""
    from grader.instruments import InstrumentError, load

    try:
        load("mnist-classifier")
    except InstrumentError as exc:
        pytest.skip(str(exc))
    cgan = import_reference(find_lab(str(REPO / "labs" / "gan")), "cgan", fresh=True)
    G, history = cgan.fit(data={"mnist": tiny_datasets / "MNIST"}, device="cpu", seed=0, epochs=1)
    assert len(history["loss_d"]) == 1 and math.isfinite(history["loss_d"][0] + history["loss_g"][0])
    m = cgan.measure(lambda z, y: G(z, y), latent_shape=(100,), label_input="onehot", seed=0, n=500)
    assert 1 <= m["classifier_score"] <= 10 and 0 <= m["coverage_classes"] <= 10 and 0 < m["max_share"] <= 1
    assert m["frechet_distance"] >= 0 and 0 <= m["conditional_accuracy"] <= 1 and len(m["conditional_per_class"]) == 10


def test_samples_match_their_generator() -> None:
    out = subprocess.run([sys.executable, "scripts/make_gen_samples.py", "--check"], cwd=REPO,
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.parametrize("lab", sorted(PARTS))
def test_samples_get_their_stated_outcomes(lab: str, tmp_path: Path) -> None:
    """`dllab lab validate labs/<lab> --samples` (minutes: real kernels; MNIST stand-ins)."""
    from grader.cli import main

    assert main(["lab", "validate", str(REPO / "labs" / lab), "--samples", "--out", str(tmp_path), "--no-pdf"]) == 0
