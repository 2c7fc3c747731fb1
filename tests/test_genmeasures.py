"""grader.genmeasures: the generative measures on arrays whose answer is known by hand."""

import math

import numpy as np
import pytest

from grader import genmeasures as gm


def test_classifier_score_bounds():
    certain_even = np.eye(10)[np.arange(1000) % 10]
    assert gm.classifier_score(certain_even) == pytest.approx(10.0, rel=1e-6)
    one_class = np.eye(10)[np.zeros(1000, dtype=int)]
    assert gm.classifier_score(one_class) == pytest.approx(1.0, rel=1e-6)
    uniform = np.full((100, 10), 0.1)
    assert gm.classifier_score(uniform) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError):
        gm.classifier_score(np.full((5, 10), 0.2))


def test_coverage_and_collapse():
    pred = np.r_[np.zeros(900, int), np.arange(100) % 10]
    cov = gm.class_coverage(pred)
    assert cov["most"] == 0 and cov["max_share"] == pytest.approx(0.91)
    assert cov["classes"] == 10  # 1 % each: present
    flag, why = gm.mode_collapse(cov, 1.0)
    assert flag and "digit 0 is 91%" in why
    even = gm.class_coverage(np.arange(1000) % 10)
    assert gm.mode_collapse(even, 0.9) == (False, "")
    assert gm.mode_collapse(even, 0.05)[0]


def test_conditional_accuracy():
    asked = np.arange(1000) % 10
    assert gm.conditional_accuracy(asked, asked)["accuracy"] == 1.0
    ignored = gm.conditional_accuracy(np.full(1000, 3), asked)
    assert ignored["accuracy"] == pytest.approx(0.1)
    assert ignored["per_class"][3] == 1.0 and ignored["per_class"][4] == 0.0


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 5))
    mu, cov = gm.feature_stats(a)
    assert gm.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-6)
    # shifted by 2 in every dim: ||d||^2 = 5 * 4
    assert gm.frechet_distance(mu, cov, mu + 2, cov) == pytest.approx(20.0, rel=1e-6)
    # N(0, I) vs N(0, 4I) in 5 dims: 5 * (1 + 4 - 2 * 2) = 5
    assert gm.frechet_distance(np.zeros(5), np.eye(5), np.zeros(5), 4 * np.eye(5)) == pytest.approx(5.0)


def test_vae_terms():
    kl = gm.gaussian_kl(np.zeros((3, 4)), np.zeros((3, 4)))
    assert np.allclose(kl, 0)
    assert gm.gaussian_kl(np.ones((1, 1)), np.zeros((1, 1)))[0, 0] == pytest.approx(0.5)
    x = np.array([[1.0, 0.0]])
    assert gm.bernoulli_nll(x, np.array([[0.5, 0.5]]))[0] == pytest.approx(2 * math.log(2))
    mu = np.c_[np.linspace(-1, 1, 100), np.zeros(100)]
    assert gm.active_units(mu) == 1


def test_match_printed_loss():
    assert gm.match_printed_loss(105.0, 104.0) == ("per image", 105.0)
    name, value = gm.match_printed_loss(104.0 / 784, 104.0)
    assert name == "per pixel" and value == pytest.approx(104.0)
    name, value = gm.match_printed_loss(128 * 103.0, 104.0, batch_size=128)
    assert name == "per batch" and value == pytest.approx(103.0)
    with pytest.raises(ValueError):
        gm.match_printed_loss(float("nan"), 104.0)


def test_mean_pairwise_distance_identical_images():
    same = np.tile(np.linspace(0, 1, 784), (50, 1))
    assert gm.mean_pairwise_distance(same) == 0.0
    rng = np.random.default_rng(1)
    assert gm.mean_pairwise_distance(rng.random((50, 784))) > 5
