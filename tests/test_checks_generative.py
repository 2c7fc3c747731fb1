"""The generative check kinds (grader.checks.generative, genvae, genarch) on hand-written
`evidence["generative"]` dicts (the contract of grader.verify.generative): each outcome (pass,
partial, fail with the numbers and its flag, manual when the grader could not see), the choice
of the captured model, the reference's numbers and the absolute fallbacks, the printed VAE test
loss read at its scale. No kernel, no torch."""

from __future__ import annotations

from typing import Any

import pytest

from grader import genmeasures as gm
from grader.checks import run_check
from grader.checks.base import CheckContext
from grader.checks.generative import architecture_of, reference_value
from grader.checks.genvae import printed_vs_measured

MLP_G = {"ops": {"linear": 4, "leaky_relu": 3, "tanh": 1}, "ops_complete": True, "params": 1486352, "digest": "g",
         "layers": []}
DC_G = {"ops": {"conv_transpose2d": 4, "batch_norm": 3, "relu": 3, "tanh": 1}, "ops_complete": True,
        "params": 1066880, "digest": "dg",
        "layers": [["conv_transpose", [4, 4], [1, 1]], ["conv_transpose", [4, 4], [2, 2]],
                   ["conv_transpose", [4, 4], [2, 2]], ["conv_transpose", [4, 4], [2, 2]]]}
DC_D = {"ops": {"_convolution": 4, "batch_norm": 2, "leaky_relu": 3, "sigmoid": 1}, "ops_complete": True,
        "params": 663936, "digest": "dd",
        "layers": [["conv", [4, 4], [2, 2]]] * 3 + [["conv", [4, 4], [1, 1]]]}
VAE_OPS = {"ops": {"linear": 5, "relu": 2, "exp": 1, "mul": 2, "randn_like": 1, "add": 1, "sigmoid": 1},
           "ops_complete": True, "params": 652824, "digest": "v", "layers": []}
REAL = {"n": 10000, "accuracy": 0.992, "classifier_score": 9.86, "diversity": 10.2,
        "coverage": gm.class_coverage([i % 10 for i in range(10000)])}
REF = {"title": "GAN", "summary": {"classifier_score": {"mean": 9.0, "std": 0.1}, "coverage_classes": {"mean": 10.0},
                                   "max_share": {"mean": 0.12}, "frechet_distance": {"mean": 2.0, "std": 0.2},
                                   "conditional_accuracy": {"mean": 0.95}, "nelbo": {"mean": 104.5},
                                   "kl": {"mean": 25.0}, "active_units": {"mean": 19.0}}}


def capture(cid: str, role: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": cid, "role": role, "name": {"generator": "netG", "cgenerator": "cG",
                                                              "discriminator": "netD", "vae": "model"}[role],
                            "class": {"generator": "Generator", "cgenerator": "CGenerator",
                                      "discriminator": "Discriminator", "vae": "VAE"}[role],
                            "model_ref": int(cid[1:]), "optimizer_refs": [100 + int(cid[1:])], "latent": 100,
                            "latent_shape": [100], "label_input": None, "label_position": None, "n_classes": None,
                            "image_shape": [1, 28, 28], "output_range": [-1.0, 1.0], "input_range": None,
                            "vae_outputs": None, "calls": 500, "steps": 4690}
    base.update(kw)
    return base


def measure(cid: str, role: str, *, score: float = 8.9, shares: list[int] | None = None, fd: float = 2.4,
            diversity: float = 9.5, facts: dict | None = None, **kw: Any) -> dict[str, Any]:
    """A measures[] entry; `shares`: how many of 100 samples are each digit (default even)."""
    counts = shares or [10] * 10
    cov = gm.class_coverage([d for d, k in enumerate(counts) for _ in range(k)])
    ratio = diversity / REAL["diversity"]
    flag, why = gm.mode_collapse(cov, ratio)
    base: dict[str, Any] = {"capture": cid, "role": role, "name": None, "n": 10000, "seed": 0,
                            "output_map": "tanh range: (x + 1) / 2", "classifier_score": score, "coverage": cov,
                            "frechet_distance": fd, "diversity": diversity, "diversity_ratio": ratio,
                            "collapse": {"flag": flag, "why": why}, "conditional": None, "vae": None,
                            "facts": facts if facts is not None else dict(MLP_G)}
    base.update(kw)
    return base


def gen(measures: list[dict], captures: list[dict], structures: list[dict] | None = None, **kw: Any) -> dict:
    base = {"instrument": {"name": "mnist-classifier", "digest": "ab" * 32, "test_accuracy": 0.992}, "real": REAL,
            "captures": captures, "measures": measures, "structures": structures or [], "seconds": 21.0,
            "reason": None}
    base.update(kw)
    return base


def ev(generative: dict | None, *, path: str = "gan.ipynb", mode: str = "execute", **kw: Any) -> dict:
    base = {"path": path, "mode": mode, "status": "ok", "metrics": {}, "runs": [], "dataloaders": [],
            "generative": generative}
    base.update(kw)
    return base


def check(kind: str, evidence: list[dict], params: dict | None = None, reference: dict | None = REF) -> Any:
    ctx = CheckContext(student_id="s", part_id="gan", dataset="mnist", evidence=tuple(evidence),
                       all_evidence=tuple(evidence), reference=reference)
    return run_check(kind, ctx, params or {})


GOOD = ev(gen([measure("g0", "generator")], [capture("g0", "generator")]))


# --------------------------------------------------------------------------- generated_samples


def test_a_good_generator_passes_with_each_number_beside_the_references() -> None:
    out = check("generated_samples", [GOOD])
    assert out.status == "pass" and out.fraction == 1.0 and out.flags == ()
    for shown in ("`netG` (Generator)", "4,690 optimizer steps", "classifier score 8.90", "reference 9.00",
                  "full points from 7.65", "real test images 9.86", "10 of 10 digits", "Fréchet distance 2.4",
                  "full points up to 4", "10,000 samples", "tanh range"):
        assert shown in out.message, shown


def test_a_weaker_generator_earns_a_band_of_partial_credit_with_its_numbers() -> None:
    weak = ev(gen([measure("g0", "generator", score=6.1, fd=5.5)], [capture("g0", "generator")]))
    out = check("generated_samples", [weak])
    # score 6.1 < 7.65 but >= 0.6 * 7.65: half; coverage full; FD 5.5 > 4.0 but 5.5 * 0.6 <= 4.0: half
    assert out.status == "partial" and out.fraction == pytest.approx((0.5 + 1 + 0.5) / 3, abs=1e-4)
    assert "classifier score 6.10" in out.message and "Fréchet distance 5.5" in out.message


def test_a_collapsed_generator_fails_flagged_with_the_measured_numbers() -> None:
    collapsed = measure("g0", "generator", score=1.4, shares=[0, 87, 0, 0, 0, 0, 0, 13, 0, 0], fd=48.0,
                        diversity=1.1)
    out = check("generated_samples", [ev(gen([collapsed], [capture("g0", "generator")]))])
    assert out.status == "fail" and out.fraction == 0.0 and out.flags == ("mode-collapse",)
    for shown in ("classifier score 1.40", "2 of 10 digits", "the most frequent digit (1) is 87.0 %", "Mode collapse",
                  "digit 1 is 87% of the samples", "near-identical (pairwise distance 11% of real images')"):
        assert shown in out.message, shown


def test_collapse_credit_caps_what_an_otherwise_good_score_earns() -> None:
    one_digit = measure("g0", "generator", score=8.9, shares=[0, 60, 5, 5, 5, 5, 5, 5, 5, 5])
    out = check("generated_samples", [ev(gen([one_digit], [capture("g0", "generator")]))], {"collapse_credit": 0.25})
    assert out.status == "partial" and out.fraction == 0.25 and out.flags == ("mode-collapse",)


def test_without_a_reference_the_absolute_bars_judge_and_the_frechet_distance_is_only_shown() -> None:
    out = check("generated_samples", [GOOD], reference=None)
    assert out.status == "pass" and "no reference, full points from 7.50" in out.message
    assert "shown, not graded" in out.message and "full points from 9)" in out.message
    low = ev(gen([measure("g0", "generator", score=7.0, fd=900.0)], [capture("g0", "generator")]))
    assert check("generated_samples", [low], reference=None).fraction == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert check("generated_samples", [low], {"max_frechet": 50.0}, reference=None).fraction == pytest.approx(0.5)


def test_the_most_trained_model_of_the_asked_architecture_is_judged() -> None:
    captures = [capture("g2", "generator", steps=50), capture("g1", "generator", steps=9000, name="G_dc"),
                capture("g0", "generator", steps=4690)]
    measures = [measure("g2", "generator", score=2.0), measure("g1", "generator", score=8.8, facts=dict(DC_G)),
                measure("g0", "generator", score=3.0)]
    e = ev(gen(measures, captures))
    conv = check("generated_samples", [e], {"architecture": "conv"})
    assert conv.status == "pass" and "`G_dc`" in conv.message
    mlp = check("generated_samples", [e], {"architecture": "mlp"})
    assert "classifier score 3.00" in mlp.message and "of 2 matching models" in mlp.message  # 4690 > 50 steps
    newest = [capture("g1", "generator", steps=100), capture("g0", "generator", steps=100)]
    tie = ev(gen([measure("g0", "generator", score=3.0), measure("g1", "generator", score=8.0)], newest))
    assert "classifier score 8.00" in check("generated_samples", [tie]).message  # captures list newest first


@pytest.mark.parametrize("evidence, says", [
    ([ev(None)], "no generative model was captured"),
    ([ev(None, mode="saved")], "Saved mode"),
    ([ev(gen([], [], reason="the measuring sandbox timed out after 300 s"))], "timed out after 300 s"),
    ([ev(gen([measure("g0", "generator", reason="the generator raised RuntimeError on z of shape (500, 100)")],
             [capture("g0", "generator")]))], "captured but not measured: the generator raised"),
    ([ev(gen([], [capture("d0", "discriminator")],
             [{"capture": "d0", "role": "discriminator", "facts": DC_D}]))], "netD (discriminator)"),
    ([ev(gen([measure("g0", "generator", facts=dict(DC_G))], [capture("g0", "generator")]))], "another architecture"),
])
def test_what_the_grader_could_not_measure_goes_to_a_ta_never_to_a_fail(evidence: list, says: str) -> None:
    out = check("generated_samples", evidence, {"architecture": "mlp"})
    assert out.status == "manual" and out.fraction == 0.0 and says in out.message, out.message


NOTHING = gen([], [], reason="the notebook trained no generator or VAE the grader could capture")
WATCHED = {"probe": {"started": True}, "optimizers": []}


@pytest.mark.parametrize("evidence, status", [
    ([ev(NOTHING, **WATCHED)], "fail"),  # ran to the end, watched, nothing stepped: nothing was trained
    ([ev(NOTHING, **WATCHED), ev(NOTHING, path="gan2.ipynb", **WATCHED)], "fail"),
    # any doubt: a TA
    ([ev(NOTHING, probe={"started": True}, optimizers=[{"type": "Adam", "steps": 40}])], "manual"),  # trained something
    ([ev(NOTHING, probe={"started": False}, optimizers=[])], "manual"),  # the grader saw nothing
    ([ev(NOTHING, status="error", **WATCHED)], "manual"),  # stopped early
    ([ev(None, **WATCHED)], "manual"),  # no capture ran
])
def test_a_notebook_that_trained_nothing_fails_and_any_doubt_goes_to_a_ta(evidence: list, status: str) -> None:
    for kind in ("generated_samples", "conditional_generation"):
        out = check(kind, evidence)
        assert out.status == status, (kind, out.message)
    if status == "fail":
        assert "no model was trained" in out.message and "no optimizer stepped" in out.message


def test_no_notebook_for_the_part_is_a_fail() -> None:
    out = check("generated_samples", [])
    assert out.status == "fail" and "no notebook" in out.message


def test_a_vaes_samples_are_judged_from_its_entry() -> None:
    vae = measure("g0", "vae", score=7.9, facts=dict(VAE_OPS))
    out = check("generated_samples", [ev(gen([vae], [capture("g0", "vae", latent=20)]))], {"role": "vae"})
    assert out.status == "pass" and "`model` (VAE)" in out.message


# --------------------------------------------------------------------------- conditional_generation


def conditional(accuracy: float, per: list[float] | None = None, effect: float | None = None) -> dict:
    cg = measure("g0", "cgenerator", conditional={"accuracy": accuracy, "per_class": per or [accuracy] * 10,
                                                  "label_input": "index", "label_effect": effect})
    return ev(gen([cg], [capture("g0", "cgenerator", label_input="index", label_position=1, n_classes=10)]))


def test_a_conditional_generator_that_follows_its_label_passes() -> None:
    per = [0.99, 0.98, 0.9, 0.92, 0.95, 0.85, 0.96, 0.93, 0.9, 0.92]
    out = check("conditional_generation", [conditional(0.93, per)])
    assert out.status == "pass" and out.flags == ()
    for shown in ("93.0 %", "chance 10.0 %", "reference 95.0 %", "full points from 85.5 %", "99.2 % right",
                  "from 85.0 % (digit 5) to 99.0 % (digit 0)", "Labels fed as class indices"):
        assert shown in out.message, shown


def test_a_cgan_ignoring_its_label_fails_flagged_with_its_numbers() -> None:
    out = check("conditional_generation", [conditional(0.104)])
    assert out.status == "fail" and out.fraction == 0.0 and out.flags == ("label-ignored",)
    assert "10.4 %" in out.message and "chance 10.0 %" in out.message and "ignores its label" in out.message


@pytest.mark.parametrize("effect, says", [
    (0.0, "changes none of its outputs (mean pixel change 0): the label reaches the generator but is not used"),
    (0.083, "the label changes the images (mean pixel change 0.083 with z fixed) but not into the digit asked"),
    (None, "feed y into the generator's layers"),
])
def test_why_a_cgan_ignores_its_label_is_told_by_what_the_label_changes(effect: float | None, says: str) -> None:
    out = check("conditional_generation", [conditional(0.099, effect=effect)])
    assert out.status == "fail" and out.flags == ("label-ignored",) and says in out.message, out.message


def test_a_label_that_changes_no_output_is_not_fed_to_the_generator() -> None:
    """A label multiplied by 0, or an embedding never applied: G takes y, and G(z, y) == G(z, y')."""
    unused = cgan("index")
    unused["generative"]["measures"][0]["conditional"] = {"accuracy": 0.098, "per_class": [0.098] * 10,
                                                          "label_input": "onehot", "label_effect": 0.0}
    out = check("generative_architecture", [unused], {"expect": "cgan"})
    assert out.status == "partial" and out.fraction == 0.5, out.message
    assert "changes none of G's outputs" in out.message and "the label is not used" in out.message
    used = cgan("index")
    used["generative"]["measures"][0]["conditional"] = {"accuracy": 0.098, "per_class": [0.098] * 10,
                                                        "label_input": "onehot", "label_effect": 0.05}
    assert check("generative_architecture", [used], {"expect": "cgan"}).status == "pass"  # honest, undertrained


def test_a_partly_conditional_generator_earns_partial_credit() -> None:
    out = check("conditional_generation", [conditional(0.6)])
    assert out.status == "partial" and out.fraction == 0.5 and out.flags == ()
    assert check("conditional_generation", [conditional(0.3)]).status == "fail"  # below 0.6 * bar, above ignored


def test_without_a_conditional_measure_or_generator_it_goes_to_a_ta() -> None:
    unmeasured = ev(gen([measure("g0", "cgenerator")], [capture("g0", "cgenerator", label_input="onehot")]))
    assert check("conditional_generation", [unmeasured]).status == "manual"
    assert check("conditional_generation", [GOOD]).status == "manual"  # only an unconditional generator captured
    assert check("conditional_generation", [conditional(0.85)], reference=None).status == "pass"  # 0.8 fallback


# --------------------------------------------------------------------------- vae_bound


def vae_ev(*, nelbo: float = 106.0, recon: float = 80.5, kl: float = 25.5, active: int = 18,
           collapse: bool = False, printed: list[tuple[str, float]] | None = None, **kw: Any) -> dict:
    v = {"nelbo": nelbo, "recon": recon, "kl": kl, "kl_per_dim": [kl / 20] * 20, "active_units": active,
         "latent": 20, "n": 10000, "posterior_collapse": collapse, "decoder_output": "probabilities",
         "likelihood": "bernoulli"}
    mentions = [{"kind": "test_loss", "split": "test", "value": value, "class": None, "cell": 9 + i, "raw": raw}
                for i, (raw, value) in enumerate(printed or [])]
    cap = capture("g0", "vae", latent=20, latent_shape=[20], vae_outputs=["recon", "mu", "logvar"],
                  output_range=[0.0, 1.0], optimizer_refs=[7])
    return ev(gen([measure("g0", "vae", vae=v, facts=dict(VAE_OPS))], [cap]), path="vae.ipynb",
              metrics={"mentions": mentions}, runs=[{"name": "run 1", "optimizer_ref": 7, "batch_size": 128}], **kw)


def test_an_honest_vae_passes_and_its_printed_test_loss_agrees() -> None:
    out = check("vae_bound", [vae_ev(printed=[("====> Test set loss: 109.8812", 109.88),
                                              ("====> Test set loss: 105.2345", 105.2345)])])
    assert out.status == "pass" and out.flags == ()
    for shown in ("test negative ELBO 106.0 nats per image on 10,000 real test images", "reference 104.5",
                  "full points up to 114.5", "reconstruction 80.5 + KL 25.50", "reference KL 25.0",
                  "18 of 20 latent units active (reference 19)", "`====> Test set loss: 105.2345` (In[10])",
                  "`====> Test set loss: 105.2345` (In[10]), read as nats per image, is 105.2 nats per image: "
                  "consistent with the grader's 106.0"):
        assert shown in out.message, shown


@pytest.mark.parametrize("raw, value, scale", [
    ("test loss (sum of the last batch): 13568.0", 13568.0, "as a sum over a batch of 128"),
    ("Test loss: 0.1352", 0.1352, "as a mean per pixel (times 784)"),
    ("test loss over the split: 1060000.0", 1060000.0, "as a sum over the test split"),
])
def test_a_printed_loss_at_another_scale_is_read_at_that_scale(raw: str, value: float, scale: str) -> None:
    out = check("vae_bound", [vae_ev(printed=[(raw, value)])])
    assert out.status == "pass" and out.flags == () and f"read {scale}, is 10" in out.message and ": consistent" in out.message, out.message


def test_a_printed_loss_far_from_the_measured_bound_is_flagged_for_a_ta_without_costing_points() -> None:
    out = check("vae_bound", [vae_ev(printed=[("====> Test set loss: 150.0000", 150.0)])])
    assert out.status == "pass" and out.fraction == 1.0 and out.flags == ("mismatch",)
    assert "read as nats per image (the closest reading), is 150.0 nats per image" in out.message and "44.0 nats from the grader's 106.0" in out.message


def test_a_test_loss_printed_in_the_students_own_words_is_compared() -> None:
    e = vae_ev(nelbo=138.9, recon=110.0, kl=28.9)
    e["metrics"]["curves"] = {"vae_test_loss": [[1.0, 150.11], [2.0, 138.87]]}
    out = check("vae_bound", [e])
    assert "test loss 138.87, the last of 2 printed" in out.message and ": consistent" in out.message, out.message


def test_a_vae_without_sampling_is_told_why_its_printed_loss_is_below_the_bound() -> None:
    """z = mu: the notebook's loss has no sampling noise, the grader's bound samples with a
    log-variance that was never trained to."""
    e = vae_ev(nelbo=217.0, recon=190.0, kl=27.0, printed=[("====> Test set loss: 115.0000", 115.0)])
    e["generative"]["measures"][0]["facts"] = {**VAE_OPS, "ops": {"linear": 5, "relu": 2, "exp": 1, "sigmoid": 1}}
    out = check("vae_bound", [e])
    assert "mismatch" in out.flags and "your forward draws no random z" in out.message, out.message
    honest = check("vae_bound", [vae_ev(nelbo=217.0, recon=190.0, kl=27.0,
                                        printed=[("====> Test set loss: 115.0000", 115.0)])])
    assert "mismatch" in honest.flags and "draws no random z" not in honest.message


def test_posterior_collapse_fails_flagged() -> None:
    out = check("vae_bound", [vae_ev(nelbo=164.0, recon=163.99, kl=0.01, active=0, collapse=True)])
    assert out.status == "fail" and out.flags == ("posterior-collapse",)
    assert "KL term is 0.01 nats per image" in out.message and "0 latent units are active" in out.message


def test_a_looser_bound_earns_partial_credit_and_a_huge_kl_term_is_named() -> None:
    out = check("vae_bound", [vae_ev(nelbo=130.0, recon=40.0, kl=90.0)])
    assert out.status == "partial" and out.fraction == 0.5 and "3.6 times the reference's" in out.message
    assert check("vae_bound", [vae_ev(nelbo=150.0)]).status == "fail"  # past 114.5 + 30
    assert check("vae_bound", [vae_ev(nelbo=118.0)], reference=None).status == "pass"  # 120 nats fallback
    assert "No printed test loss" in check("vae_bound", [vae_ev()]).message


def test_a_vae_without_its_bound_goes_to_a_ta() -> None:
    unmeasured = ev(gen([measure("g0", "vae", facts=dict(VAE_OPS))], [capture("g0", "vae")]))
    assert check("vae_bound", [unmeasured]).status == "manual"
    why = "the real MNIST test split is not mounted for this lab, so the VAE's test bound could not be recomputed"
    unmounted = ev(gen([measure("g0", "vae", facts=dict(VAE_OPS), vae_reason=why)], [capture("g0", "vae")]))
    out = check("vae_bound", [unmounted])
    assert out.status == "manual" and "not mounted for this lab" in out.message
    assert check("generated_samples", [unmounted], {"role": "vae"}).status == "pass"  # its samples still count
    no_samples = vae_ev()
    no_samples["generative"]["measures"][0].update(classifier_score=None, coverage=None, samples_reason="its samples "
                                                   "could not be measured: RuntimeError: mat1 and mat2 shapes")
    out = check("generated_samples", [no_samples], {"role": "vae"})
    assert out.status == "manual" and "mat1 and mat2" in out.message
    assert check("vae_bound", [no_samples]).status == "pass"  # its bound still counts
    assert check("vae_bound", [vae_ev(mode="saved")]).status == "manual"


def test_printed_vs_measured_tries_each_batch_size() -> None:
    assert printed_vs_measured(64 * 105.0, 104.0, [64, 128], 10000) == ("per batch of 64", 105.0)
    assert printed_vs_measured(1050000.0, 105.0, [], 10000) == ("whole split", 105.0)


# --------------------------------------------------------------------------- generative_architecture


def dcgan(g_facts: dict = DC_G, d_facts: dict | None = DC_D) -> dict:
    captures = [capture("g0", "generator", latent_shape=[100, 1, 1])]
    structures = []
    if d_facts is not None:
        captures.append(capture("g1", "discriminator"))
        structures.append({"capture": "g1", "role": "discriminator", "facts": d_facts})
    return ev(gen([measure("g0", "generator", facts=dict(g_facts))], captures, structures))


def test_a_dcgan_with_the_handouts_layers_passes() -> None:
    out = check("generative_architecture", [dcgan()], {"expect": "dcgan", "latent": 100})
    assert out.status == "pass", out.message
    assert "transposed convolutions" in out.message and "strided convolutions" in out.message


def test_a_dcgan_without_transposed_convs_or_strides_loses_their_share() -> None:
    upsample_g = {**DC_G, "ops": {"upsample_nearest2d": 3, "_convolution": 4, "batch_norm": 3, "relu": 3},
                  "layers": [["conv", [3, 3], [1, 1]]] * 4}
    pooled_d = {**DC_D, "ops": {"_convolution": 3, "max_pool2d": 2, "relu": 3},
                "layers": [["conv", [3, 3], [1, 1]]] * 3}
    out = check("generative_architecture", [dcgan(upsample_g, pooled_d)], {"expect": "dcgan"})
    assert out.status == "partial" and out.fraction == pytest.approx(2 / 5)
    assert "missing: transposed convolutions" in out.message and "strides [1, 1], [1, 1], [1, 1]" in out.message
    assert "it downsamples by pooling (max_pool2d), which the DCGAN replaces with strides" in out.message


def test_an_unseen_discriminator_or_graph_goes_to_a_ta() -> None:
    assert check("generative_architecture", [dcgan(d_facts=None)], {"expect": "dcgan"}).status == "manual"
    partial_graph = {**DC_G, "ops": {"conv_transpose2d": 4}, "ops_complete": False}
    out = check("generative_architecture", [dcgan(partial_graph)], {"expect": "dcgan"})
    assert out.status == "manual" and "could not see BatchNorm" in out.message


def cgan(d_label: str | None, d_shape: list[int] | None = None) -> dict:
    captures = [capture("g0", "cgenerator", label_input="onehot", n_classes=10),
                capture("g1", "discriminator", label_input=d_label, image_shape=d_shape or [1, 28, 28])]
    return ev(gen([measure("g0", "cgenerator")], captures,
                  [{"capture": "g1", "role": "discriminator", "facts": dict(MLP_G)}]))


def test_a_cgan_feeds_its_label_to_both_networks() -> None:
    assert check("generative_architecture", [cgan("index")], {"expect": "cgan"}).status == "pass"
    two_inputs = cgan(None)
    two_inputs["generative"]["captures"][1]["label_position"] = 1
    out = check("generative_architecture", [two_inputs], {"expect": "cgan"})
    assert out.status == "pass" and "D takes it as a second input" in out.message
    out = check("generative_architecture", [cgan(None)], {"expect": "cgan"})
    assert out.status == "partial" and out.fraction == 0.5 and "each taking only the image" in out.message
    channels = check("generative_architecture", [cgan(None, [11, 28, 28])], {"expect": "cgan"})
    assert channels.status == "manual" and "11 channels" in channels.message
    assert check("generative_architecture", [GOOD], {"expect": "cgan"}).status == "manual"


def test_a_vae_samples_with_the_reparameterization() -> None:
    out = check("generative_architecture", [vae_ev()], {"expect": "vae", "latent": 20})
    assert out.status == "pass" and "latent size 20" in out.message
    deterministic = vae_ev()
    deterministic["generative"]["measures"][0]["facts"] = {**VAE_OPS, "ops": {"linear": 5, "relu": 2, "sigmoid": 1}}
    out = check("generative_architecture", [deterministic], {"expect": "vae", "latent": 2})
    assert out.status == "partial" and out.fraction == pytest.approx(1 / 4), out.message
    assert "z sampled in the forward" in out.message and "it is 20" in out.message


# --------------------------------------------------------------------------- helpers


def test_reference_values_are_read_from_the_summary_the_entry_or_its_runs() -> None:
    assert reference_value(REF, "nelbo") == 104.5
    assert reference_value({"nelbo": 99.0}, "nelbo") == 99.0
    assert reference_value({"runs": [{"kl": 20.0}, {"kl": 22.0}]}, "kl") == 21.0
    assert reference_value(None, "kl") is None and reference_value({"summary": {"kl": None}}, "kl") is None


def test_the_architecture_of_a_graph() -> None:
    assert architecture_of(DC_G) == "conv" and architecture_of(DC_D) == "conv" and architecture_of(MLP_G) == "mlp"
    assert architecture_of({**MLP_G, "ops_complete": False}) is None and architecture_of(None) is None
    assert architecture_of({"ops": {"convert_element_type": 1, "linear": 2}, "ops_complete": True}) == "mlp"


# --------------------------------------------------------------------------- the feedback's measures table


def _refs() -> dict:
    def part(**metrics: float) -> dict:
        return {"title": "x", "dataset": "mnist", "summary": {k: {"mean": v} for k, v in metrics.items()}}
    dcgan = {**part(classifier_score=9.4, frechet_distance=1.1),
             "runs": [{"role": "generator", "architecture": "conv"}]}
    return {"gan": part(classifier_score=9.0, frechet_distance=2.0, coverage_classes=10), "dcgan": dcgan,
            "cgan": part(classifier_score=9.2, conditional_accuracy=0.95),
            "vae": part(classifier_score=8.0, nelbo=104.5, kl=25.0, active_units=19)}


def test_the_feedback_shows_a_measures_table_per_model_beside_the_reference_and_the_real_data() -> None:
    from grader.report.extras import generative_view

    collapsed = measure("g1", "generator", score=1.4, shares=[0, 87, 0, 0, 0, 0, 0, 13, 0, 0], diversity=1.1,
                        facts=dict(DC_G))
    cg = measure("g2", "cgenerator", conditional={"accuracy": 0.104, "per_class": [0.1] * 10, "label_input": "index"})
    e = ev(gen([measure("g0", "generator"), collapsed, cg, {"capture": "g3", "role": "generator", "reason": "no z"}],
               [capture("g0", "generator"), capture("g1", "generator"), capture("g2", "cgenerator"),
                capture("g3", "generator")]))
    view = generative_view(e, _refs(), "gan")
    assert view is not None and [m["reference_part"] for m in view["models"]] == ["gan", "dcgan", "cgan", ""]
    plain = {r["measure"]: r for r in view["models"][0]["rows"]}
    assert plain["classifier score"]["student"] == "8.90" and plain["classifier score"]["reference"] == "9.00"
    assert plain["classifier score"]["real"] == "9.86" and plain["digits covered"]["real"] == "10"
    assert view["models"][0]["flags"] == []
    assert any("Mode collapse" in f for f in view["models"][1]["flags"])
    cond = {r["measure"]: r for r in view["models"][2]["rows"]}["conditional accuracy"]
    assert (cond["student"], cond["reference"], cond["real"]) == ("10.4 %", "95.0 %", "99.2 %")
    assert view["models"][2]["flags"] == [("Label ignored: only 10.4 % of the samples are the digit asked for "
                                           "(chance 10 %).")]
    assert view["models"][3]["rows"] == [] and view["models"][3]["reason"] == "no z"
    assert generative_view(ev(None), _refs()) is None


def test_a_vaes_table_holds_its_bound_its_printed_loss_and_posterior_collapse() -> None:
    from grader.report.extras import generative_view

    view = generative_view(vae_ev(printed=[("Test loss: 0.1352", 0.1352)]), _refs(), "vae")
    rows = {r["measure"]: r for r in view["models"][0]["rows"]}  # type: ignore[index]
    assert rows["test negative ELBO"]["student"] == "106.0" and rows["test negative ELBO"]["reference"] == "104.5"
    assert rows["printed test loss"]["student"] == "106.0" and "read as a mean per pixel" in rows["printed test loss"]["unit"]
    assert rows["active latent units"]["unit"] == "of 20" and rows["KL term"]["reference"] == "25.00"
    collapsed = generative_view(vae_ev(kl=0.01, active=0, collapse=True), _refs(), "vae")
    assert collapsed["models"][0]["flags"][0].startswith("Posterior collapse: KL term 0.01")  # type: ignore[index]


# A cGAN notebook's D and G runs as grader.runrecords writes them (the demo's 0163001).
GAN_RUNS = [{'batch_size': 64,
  'batches': 1874,
  'cells': [4],
  'curves': {'loss (recorded)': [[3.998, 0.7308687680304495], [7.996, 0.7036483911210979]]},
  'epochs': 8.0,
  'full_epochs': 2,
  'label': 'MLP 794-512-256-1 · Adam lr 0.0002 · 8 epochs',
  'loss': 'BCELoss',
  'lr': 0.0002,
  'lr_changes': [[1, 0.0002]],
  'metrics': {},
  'model_refs': [15],
  'momentum': None,
  'name': 'run 1',
  'notes': [],
  'optimizer': 'Adam',
  'optimizer_ref': 8,
  'printed_check': {},
  'samples': 479744,
  'schedulers': [],
  'status': 'trained',
  'structure': {'activations': {'leaky_relu': 2, 'sigmoid': 1},
                'conv_channels': [],
                'conv_layers': 0,
                'dims': '794-512-256-1',
                'hidden_widths': [512, 256],
                'kind': 'mlp',
                'linear_layers': 3,
                'params': 538625,
                'source': 'probe'},
  'train_dataset': 'mnist',
  'verified': {'reason': 'no run model was evaluated: no model was evaluated on a test split, and no test '
                         'split was loaded.'},
  'weight_decay': 0.0},
 {'batch_size': 64,
  'batches': 1874,
  'cells': [4, 6],
  'curves': {'train_loss (printed)': [[0.0, 1.3682],
                                      [0.0, 0.7022],
                                      [0.10672358591248667, 1.3798],
                                      [0.10672358591248667, 0.6994],
                                      [0.21344717182497333, 1.3784],
                                      [0.21344717182497333, 0.7593],
                                      [0.32017075773745995, 1.3392],
                                      [0.32017075773745995, 0.9896],
                                      [0.42689434364994666, 1.2817],
                                      [0.42689434364994666, 0.9374],
                                      [0.5336179295624333, 1.314],
                                      [0.5336179295624333, 0.8908],
                                      [0.6403415154749199, 1.3012],
                                      [0.6403415154749199, 1.2107],
                                      [0.7470651013874067, 1.3337],
                                      [0.7470651013874067, 1.2199],
                                      [0.8537886872998933, 1.2894],
                                      [0.8537886872998933, 1.1562],
                                      [0.96051227321238, 1.222],
                                      [0.96051227321238, 0.9525],
                                      [1.0, 1.3317],
                                      [1.0, 1.173],
                                      [1.1067235859124867, 1.1858],
                                      [1.1067235859124867, 0.8523],
                                      [1.2134471718249733, 1.1649],
                                      [1.2134471718249733, 1.0945],
                                      [1.32017075773746, 1.2041],
                                      [1.32017075773746, 0.6432],
                                      [1.4268943436499466, 1.2127],
                                      [1.4268943436499466, 1.0669],
                                      [1.5336179295624333, 1.1631],
                                      [1.5336179295624333, 0.9038],
                                      [1.64034151547492, 1.1934],
                                      [1.64034151547492, 1.2859],
                                      [1.7470651013874066, 1.3346],
                                      [1.7470651013874066, 0.4516],
                                      [1.8537886872998932, 1.2461],
                                      [1.8537886872998932, 0.6857],
                                      [1.9605122732123799, 1.2339],
                                      [1.9605122732123799, 1.0848]]},
  'epochs': 2.0,
  'full_epochs': 0,
  'label': 'MLP 110-256-512-784 · Adam lr 0.0002 · 2 epochs',
  'loss': None,
  'lr': 0.0002,
  'lr_changes': [[1, 0.0002]],
  'metrics': {'train_loss': 1.0848},
  'model_refs': [14],
  'momentum': None,
  'name': 'run 2',
  'notes': [],
  'optimizer': 'Adam',
  'optimizer_ref': 9,
  'printed_check': {},
  'samples': 119936,
  'schedulers': [],
  'status': 'trained',
  'structure': {'activations': {'leaky_relu': 2, 'tanh': 1},
                'conv_channels': [],
                'conv_layers': 0,
                'dims': '110-256-512-784',
                'hidden_widths': [256, 512],
                'kind': 'mlp',
                'linear_layers': 3,
                'params': 563216,
                'source': 'probe'},
  'train_dataset': 'mnist',
  'verified': {'reason': 'no run model was evaluated: no model was evaluated on a test split, and no test '
                         'split was loaded.'},
  'weight_decay': 0.0}]


def test_the_student_feedback_renders_the_measures_and_the_new_flags(tmp_path: Any) -> None:
    from grader.report.student import render_student

    cg = measure("g2", "cgenerator", conditional={"accuracy": 0.104, "per_class": [0.1] * 10, "label_input": "index"})
    e = ev(gen([cg], [capture("g2", "cgenerator")]))
    grade = {"student_id": "0556001", "lab": "gan", "total": 0, "max": 10, "flags": ["label-ignored"],
             "parts": [{"id": "cgan", "title": "cGAN", "points": 0, "max": 10, "items": []}]}
    html = render_student(grade, evidence=[e], reference={"parts": _refs()}, dataset_stats={}, problems=[],
                          out_dir=tmp_path, pdf=False).read_text()
    assert "Your generative models, measured by the grader" in html and "conditional accuracy" in html
    assert "Label ignored: only 10.4 %" in html and "ignores its label, by the grader" in html
    # the classifier check that a generator cannot take says nothing about it: not shown
    e["verified"] = {"reason": "the captured model computes something else than the model"}
    e["runs"] = GAN_RUNS
    html = render_student(grade, evidence=[e], reference={"parts": _refs()}, dataset_stats={}, problems=[],
                          out_dir=tmp_path, pdf=False).read_text()
    assert "Printed versus verified" not in html and "computes something else" not in html
    assert "Your training runs" not in html


def test_a_quick_self_check_skips_sample_measures_but_not_a_missing_notebook() -> None:
    """`dllab check --quick`: a measure on the stand-in is shown for information, not judged; an
    item failed because the part has no notebook fails there too."""
    from types import SimpleNamespace

    from grader.student import rows

    items = [{"id": "gan-samples", "title": "samples", "status": "fail", "points": 0, "max": 15,
              "message": "Mode collapse: digit 3 is 100% of the samples"},
             {"id": "cgan-conditional", "title": "conditional", "status": "fail", "points": 0, "max": 12,
              "message": "no notebook or script for cgan was found in the submission."}]
    result = SimpleNamespace(grade={"parts": [{"id": "gan", "items": items}]},
                             unjudged=frozenset({"gan-samples", "cgan-conditional"}), manual=frozenset())
    got = {r.title: r for r in rows(result)}  # type: ignore[arg-type]
    assert got["samples"].status == "skipped" and not got["samples"].required
    assert "for your information only: Mode collapse" in got["samples"].message
    assert "accuracy" not in got["samples"].message
    assert got["conditional"].status == "fail" and got["conditional"].required
