"""Measures of a generative model's samples and of a VAE's test-set bound (pure numpy).

No FID here: Inception weights do not exist on an offline grading machine. The published
offline substitute is a classifier trained on real MNIST (the grader's instrument,
grader.instruments): its class probabilities give the classifier score (TF-GAN's
`mnist_score`, the Inception Score of Salimans et al., NeurIPS 2016, with an MNIST
classifier), class coverage and conditional accuracy (GAN-test, Shmelkov et al., ECCV 2018;
Classification Accuracy Score, Ravuri & Vinyals, NeurIPS 2019), and its penultimate layer the
features of a Fréchet distance (TF-GAN's `mnist_frechet_distance`, after Heusel et al., NeurIPS
2017). The VAE bound is Kingma & Welling (ICLR 2014), eq. 10, with a Bernoulli decoder as in the
PyTorch VAE example; active units are Burda et al. (ICLR 2016), section 5.2.

Everything takes arrays already computed (the sandboxed evaluator computes probabilities,
features and per-image terms: grader.verify.generative); units are nats, fractions 0..1,
counts. Functions raise ValueError for arrays of the wrong shape or non-finite values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PRESENT_SHARE = 0.01
"""A class "appears" among the samples when at least this share (fraction) of them is
classified as it: a tenth of a uniform share over 10 classes. A few misclassified blurs give
every digit a handful of samples, so "at least one" would count them all."""
COLLAPSE_MAX_SHARE = 0.5
"""One class taking at least this share of the samples is mode collapse (a uniform share is 0.1)."""
COLLAPSE_MIN_CLASSES = 4
"""Fewer classes than this appearing is mode collapse."""
COLLAPSE_DIVERSITY = 0.25
"""Samples whose mean pairwise distance is below this fraction of the real test images' are
near-identical: mode collapse (a collapsed generator draws one image whatever z is)."""
ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent dimension is active when the variance over test images of its posterior mean is
above this (Burda et al., 2016)."""
KL_COLLAPSED_NATS = 0.1
"""A VAE whose mean KL term is below this (nats per image) encodes nothing: posterior collapse."""
PIXELS = 784
"""Pixels of an MNIST image (28 x 28): what a per-pixel mean loss was divided by."""
_EPS = 1e-12


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} holds a non-finite value")
    return a


def _probs(probs: Any) -> np.ndarray:
    p = _finite(np.asarray(probs, dtype=np.float64), "probabilities")
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"expected probabilities of shape (N, C), got {p.shape}")
    if np.any(p < -1e-6) or np.any(np.abs(p.sum(axis=1) - 1) > 1e-3):
        raise ValueError("each row of probabilities must be a distribution (non-negative, summing to 1)")
    return np.clip(p, 0.0, 1.0)


def classifier_score(probs: Any) -> float:
    """exp(E_x KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the samples.

    `probs`: (N, C) class probabilities of N samples. 1.0 (every sample the same distribution)
    up to C (each sample certain of one class, classes used evenly); real MNIST test images
    score about 9.9 with a 99 % classifier. Salimans et al. 2016; TF-GAN `mnist_score`."""
    p = _probs(probs)
    marginal = p.mean(axis=0)
    kl = (p * (np.log(p + _EPS) - np.log(marginal + _EPS))).sum(axis=1)
    return float(math.exp(float(kl.mean())))


def class_shares(predicted: Sequence[int] | np.ndarray, n_classes: int = 10) -> np.ndarray:
    """(n_classes,) fraction of the samples classified as each class (argmax of p(y|x))."""
    y = np.asarray(predicted, dtype=np.int64).ravel()
    if y.size == 0 or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"expected class indices in 0..{n_classes - 1}")
    return np.bincount(y, minlength=n_classes) / y.size


def class_coverage(predicted: Sequence[int] | np.ndarray, n_classes: int = 10) -> dict[str, Any]:
    """How the samples spread over the classes: `classes` (how many appear, each with at least
    PRESENT_SHARE of the samples), `max_share` and `min_share` (fractions 0..1), `most` and
    `least` (class indices), `shares` (n_classes fractions)."""
    s = class_shares(predicted, n_classes)
    return {"classes": int((s >= PRESENT_SHARE).sum()), "max_share": float(s.max()), "min_share": float(s.min()),
            "most": int(s.argmax()), "least": int(s.argmin()), "shares": [float(v) for v in s]}


def conditional_accuracy(predicted: Sequence[int] | np.ndarray, asked: Sequence[int] | np.ndarray,
                         n_classes: int = 10) -> dict[str, Any]:
    """How often G(z, y) is classified as y: `accuracy` (fraction 0..1) over all samples and
    `per_class` (n_classes fractions, None for a class never asked for). `predicted`, `asked`:
    (N,) class indices. A generator that ignores its label scores about 1/n_classes."""
    p = np.asarray(predicted, dtype=np.int64).ravel()
    a = np.asarray(asked, dtype=np.int64).ravel()
    if p.shape != a.shape or p.size == 0:
        raise ValueError("predicted and asked labels must be two non-empty arrays of one length")
    per = [float((p[a == c] == c).mean()) if np.any(a == c) else None for c in range(n_classes)]
    return {"accuracy": float((p == a).mean()), "per_class": per}


def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (unbiased, rows are samples) of (N, D) features, N >= 2."""
    f = _finite(np.asarray(features, dtype=np.float64), "features")
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"expected features of shape (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2): the Fréchet distance between two
    Gaussians fitted to features (Heusel et al. 2017; TF-GAN `mnist_frechet_distance`). Units: the
    squared units of the features (the instrument's penultimate activations); 0 for identical
    statistics. Computed with symmetric eigendecompositions, so it is real and >= 0."""
    m1, m2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    c1, c2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise ValueError("expected two means of shape (D,) and two covariances of shape (D, D)")
    for a, what in ((m1, "mean"), (m2, "mean"), (c1, "covariance"), (c2, "covariance")):
        _finite(a, what)
    s1 = _sqrt_psd(c1)
    middle = np.linalg.eigvalsh(s1 @ c2 @ s1)
    tr_sqrt = float(np.sqrt(np.clip(middle, 0, None)).sum())
    value = float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt)
    return max(value, 0.0)


def mean_pairwise_distance(images: Any, *, pairs: int = 2000, seed: int = 0) -> float:
    """Mean Euclidean distance between `pairs` random pairs of distinct rows of (N, D) images
    (pixels 0..1), N >= 2; fixed `seed`, so the same images give the same number."""
    x = _finite(np.asarray(images, dtype=np.float64), "images")
    x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError("expected at least two images")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, x.shape[0], pairs)
    j = (i + rng.integers(1, x.shape[0], pairs)) % x.shape[0]
    return float(np.linalg.norm(x[i] - x[j], axis=1).mean())


LABEL_UNUSED = 1e-6
"""A conditional generator whose 0..1 pixels change by at most this much on average when only
the label changes (gen_eval's `label_effect`) does not use its label."""


def mode_collapse(coverage: dict[str, Any], diversity_ratio: float | None) -> tuple[bool, str]:
    """Whether samples show mode collapse, and why in one line: one class with at least
    COLLAPSE_MAX_SHARE of them, fewer than COLLAPSE_MIN_CLASSES classes appearing, or a mean
    pairwise distance below COLLAPSE_DIVERSITY of the real images' (`diversity_ratio`, None when
    not measured). `coverage`: class_coverage's result."""
    why = []
    if coverage["max_share"] >= COLLAPSE_MAX_SHARE:
        why.append(f"digit {coverage['most']} is {coverage['max_share']:.0%} of the samples")
    if coverage["classes"] < COLLAPSE_MIN_CLASSES:
        why.append(f"only {coverage['classes']} of {len(coverage['shares'])} digits appear")
    if diversity_ratio is not None and diversity_ratio < COLLAPSE_DIVERSITY:
        why.append(f"samples are near-identical (pairwise distance {diversity_ratio:.0%} of real images')")
    return bool(why), "; ".join(why)


def gaussian_kl(mu: Any, logvar: Any) -> np.ndarray:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image and latent dimension, (N, K) nats:
    -0.5 (1 + logvar - mu^2 - exp(logvar)) (Kingma & Welling 2014, appendix B)."""
    m = _finite(np.asarray(mu, dtype=np.float64), "mu")
    lv = _finite(np.asarray(logvar, dtype=np.float64), "logvar")
    if m.shape != lv.shape or m.ndim != 2:
        raise ValueError("expected mu and logvar of one shape (N, K)")
    return -0.5 * (1 + lv - m**2 - np.exp(np.clip(lv, None, 80)))


def bernoulli_nll(images: Any, probs: Any) -> np.ndarray:
    """-log p(x|z) under independent Bernoulli pixels, per image (N,) nats: the summed binary
    cross-entropy of the PyTorch VAE example. `images`, `probs`: (N, D) in 0..1 (probs clipped to
    [1e-7, 1 - 1e-7], as torch's binary_cross_entropy clamps its log at -100)."""
    x = _finite(np.asarray(images, dtype=np.float64), "images")
    p = np.clip(_finite(np.asarray(probs, dtype=np.float64), "decoder output"), 1e-7, 1 - 1e-7)
    x, p = x.reshape(x.shape[0], -1), p.reshape(p.shape[0], -1)
    if x.shape != p.shape:
        raise ValueError(f"images {x.shape} and decoder output {p.shape} differ in shape")
    return -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=1)


def active_units(mu: Any, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Latent dimensions whose posterior mean varies over the test images: Var_x(E[z|x]) > threshold
    (Burda et al. 2016). `mu`: (N, K) posterior means of N test images."""
    m = _finite(np.asarray(mu, dtype=np.float64), "mu")
    if m.ndim != 2 or m.shape[0] < 2:
        raise ValueError("expected posterior means of shape (N >= 2, K)")
    return int((m.var(axis=0) > threshold).sum())


def printed_loss_scales(batch_size: int | None, n_images: int | None = None) -> dict[str, float]:
    """The ways a notebook commonly reports a VAE's loss, as the factor that turns nats per image
    into what it printed: `per image` 1, `per pixel` 1/784, `per batch` batch_size (a summed loss
    of one batch), `whole split` n_images (the sum over the split). Only the ones whose size is
    known are listed."""
    scales = {"per image": 1.0, "per pixel": 1.0 / PIXELS}
    if batch_size:
        scales["per batch"] = float(batch_size)
    if n_images:
        scales["whole split"] = float(n_images)
    return scales


def match_printed_loss(printed: float, nelbo: float, *, batch_size: int | None = None,
                       n_images: int | None = None) -> tuple[str, float]:
    """Which of printed_loss_scales makes `printed` closest to `nelbo` (nats per image, measured),
    and the printed value in nats per image under it: (scale name, printed / factor). Closest is
    by ratio (|log(printed / factor / nelbo)|), so 105 vs 104 and 0.134 per pixel vs 104 compare
    alike. Raises ValueError when either is not a positive finite number."""
    if not (math.isfinite(printed) and math.isfinite(nelbo)) or printed <= 0 or nelbo <= 0:
        raise ValueError("a printed loss and a measured bound must be positive finite numbers")
    scales = printed_loss_scales(batch_size, n_images)
    name = min(scales, key=lambda k: abs(math.log(printed / scales[k] / nelbo)))
    return name, printed / scales[name]
