"""Measuring generative models: runs sandboxed on the captured models, and in-process for references.

The functions here use the standard library, numpy and torch only (no grader imports): the host
sends them as source to a fresh sandbox (grader.verify.gen_sandbox, like grader.verify.evaluator), and
a reference solution imports them, so a student's numbers and the reference's come from one code.

In-process API (a reference solution's `train()`, `dllab reference run`):

- `measure_generator(generate, *, instrument, n, seed, latent_shape, label_input=None,
  n_classes=10, batch=500, output_range=None) -> dict`
  `generate(z, y)` returns a batch of images for noise `z` (B, *latent_shape), z ~ N(0, I) drawn
  with a `torch.Generator` seeded by `seed`, in chunks of Z_CHUNK samples (so the numbers do not
  depend on `batch`); `y` is None for an unconditional generator, else the labels 0..n_classes-1
  in turn (sample i asks for i % n_classes) as int64 (B,) (`label_input="index"`) or float
  one-hot (B, n_classes) (`"onehot"`). The outputs are mapped to pixels 0..1 (`output_map`, by
  the range of the first batch: 0..1 as is, tanh's -1..1 as (x + 1) / 2, logits by a sigmoid),
  made (B, 1, 28, 28) (a flat 784, (B, 28, 28), three channels averaged, another size resized
  bilinearly) and fed to `instrument` (TorchScript, or its path: `forward(x) -> logits (B, C)`,
  `features(x) -> (B, D)`, or both in one pass from `classify(x) -> (logits, features)` when the
  instrument has it). Returns
      {"n": int, "seed": int, "output_map": str, "output_range": [min, max] (raw outputs),
       "resize": str | None, "classifier_score": float (1..C, genmeasures.classifier_score),
       "predicted": [n ints] (argmax class per sample, in sample order),
       "asked": [n ints] | None (the labels asked for), "n_classes": int,
       "feature_mean": [D floats], "feature_cov": [D lists of D floats] (unbiased),
       "label_effect": float | None (conditional only: the mean absolute change of a 0..1 pixel
       when LABEL_EFFECT_SAMPLES z are drawn with two different labels; 0: the label is not used),
       "diversity": float (genmeasures.mean_pairwise_distance of the 0..1 samples, seed `seed`)}.
- `measure_vae(encode, decode, *, images, batch=500, seed=0, forward=None, input_shape=None) -> dict`
  The negative ELBO (Kingma & Welling 2014, eq. 10) in nats per image on `images` ((N, 1, 28, 28)
  floats 0..1, or (N, 28, 28) uint8), one z ~ q(z|x) per image (eps from a Generator seeded by
  `seed`), a Bernoulli decoder as in the PyTorch VAE example (binary cross-entropy summed over
  the 784 pixels; a decoder whose outputs leave 0..1 outputs logits: a sigmoid first) and the
  Gaussian KL in closed form. `encode(x) -> (mu, logvar)`, `decode(z) -> recon`; or, when the
  model has no such methods, `forward(x) -> (recon, mu, logvar)` (its own sampling, seeded by
  torch.manual_seed(seed)). `input_shape`: the per-image shape the encoder takes ([784] or
  [1, 28, 28]; None: tried in that order [1, 28, 28], then [784]). Returns
      {"n": int, "nelbo": float, "recon": float, "kl": float (nats per image),
       "kl_per_dim": [K floats] (nats per image), "mu_var": [K floats] (variance over the images of
       each posterior mean: active units are those above genmeasures.ACTIVE_UNIT_THRESHOLD),
       "latent": K, "decoder_output": "probabilities" | "logits", "likelihood": "bernoulli"}.

Both raise ValueError (or the model's own error) when the model cannot be run as described.
The tensors given to the model are on the CPU; the model is called as given (put it in eval
mode first, as the sandbox does after loading). A reference solution, for example:

    inst = grader.instruments.load("mnist-classifier")
    s = measure_generator(lambda z, y: netG(z.to(dev)).cpu(), instrument=str(inst.weights),
                          n=10000, seed=0, latent_shape=[100])
    m = grader.verify.generative.sample_measures(s, real=inst.provenance["real"])
    metrics = grader.verify.generative.reference_metrics(m)   # classifier_score, coverage_classes, ...
The host side, grader.verify.generative, turns these into the evidence's measures with
grader.genmeasures (`sample_measures`, `vae_measures`; usable in-process too).

The sandbox's job runner, which calls these functions on the captured models, is
grader.verify.gen_sandbox; `gen_sandbox.source()` sends both to the sandbox.
"""

from __future__ import annotations

from typing import Any

Z_CHUNK = 1000
LABEL_EFFECT_SAMPLES = 200
"""z vectors drawn each with two different labels to see whether the label changes the images."""
"""Latent noise is drawn this many samples at a time, whatever the model's batch size."""
DIVERSITY_PAIRS = 2000
"""Pairs of samples whose mean distance is the diversity (genmeasures.mean_pairwise_distance)."""
IMAGE_SIDE = 28
"""The instrument's input images are (N, 1, IMAGE_SIDE, IMAGE_SIDE)."""


def _gen_first_tensor(out: Any) -> Any:
    """The first tensor of a model's output (a tuple's, a dict's)."""
    for _ in range(3):
        if isinstance(out, (list, tuple)) and out:
            out = out[0]
        elif isinstance(out, dict) and out:
            out = next(iter(out.values()))
    return out


def _gen_as_images(x: Any) -> tuple:
    """(B, 1, 28, 28) float images from a generator's output, and what resizing was done (or None)."""
    import math

    import torch
    import torch.nn.functional as F

    x = _gen_first_tensor(x)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("the model's output is not a float tensor")
    x = x.detach().to("cpu", torch.float32)
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise ValueError(f"the model's output of shape {list(x.shape)} is not a square image")
        x = x.reshape(x.shape[0], 1, side, side)
    elif x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"the model's output of shape {list(x.shape)} is not a batch of gray or RGB images")
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    resize = None
    if tuple(x.shape[2:]) != (IMAGE_SIDE, IMAGE_SIDE):
        resize = f"{x.shape[2]}x{x.shape[3]} resized to {IMAGE_SIDE}x{IMAGE_SIDE} (bilinear)"
        x = F.interpolate(x, size=(IMAGE_SIDE, IMAGE_SIDE), mode="bilinear", align_corners=False, antialias=True)
    return x, resize


def _gen_output_map(x: Any, hint: Any = None) -> str:
    """How raw outputs become pixels 0..1, from their range (the 0.1 and 99.9 percentiles of the
    first batch, so a stray value does not decide; `hint`, the [min, max] of the notebook's own
    outputs, tells a tanh generator whose samples stayed above 0)."""
    import numpy as np

    flat = x.flatten().numpy()
    if flat.size > 1_000_000:
        flat = flat[:: flat.size // 1_000_000 + 1]
    lo, hi = (float(v) for v in np.percentile(flat, [0.1, 99.9]))
    tanh_hint = hint is not None and len(hint) == 2 and -1.05 <= float(hint[0]) < -0.05 and float(hint[1]) <= 1.05
    if lo >= -1e-4 and hi <= 1 + 1e-4 and float(flat.min()) >= -1e-4 and not tanh_hint:
        return "0..1: as is"
    if lo >= -1.0001 and hi <= 1.0001 and float(flat.min()) >= -1.0001 and float(flat.max()) <= 1.0001:
        return "tanh range: (x + 1) / 2"
    if lo >= -0.05 and hi <= 1.05 and not tanh_hint:
        return "about 0..1 (no sigmoid): clipped to 0..1"
    if lo >= -1.1 and hi <= 1.1:
        return "about -1..1 (no tanh): (x + 1) / 2, clipped to 0..1"
    return "logits: sigmoid"


def _gen_apply_map(x: Any, how: str) -> Any:
    import torch

    if how.startswith("logits"):
        return torch.sigmoid(x)
    if "(x + 1) / 2" in how:
        x = (x + 1) / 2
    return x.clamp(0.0, 1.0)


def _gen_classifier_score(probs: Any) -> float:
    """exp(E_x KL(p(y|x) || p(y))): grader.genmeasures.classifier_score's formula, numpy float64."""
    import math

    import numpy as np

    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    marginal = p.mean(axis=0)
    kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
    return float(math.exp(float(kl.mean())))


def _gen_pairwise(images: Any, pairs: int, seed: int) -> float:
    """grader.genmeasures.mean_pairwise_distance's pairs and distance, on (N, ...) images."""
    import numpy as np

    x = np.asarray(images).reshape(images.shape[0], -1)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, x.shape[0], pairs)
    j = (i + rng.integers(1, x.shape[0], pairs)) % x.shape[0]
    return float(np.linalg.norm(x[i].astype(np.float64) - x[j].astype(np.float64), axis=1).mean())


def _gen_load(path: Any) -> Any:
    import warnings

    import torch

    if isinstance(path, str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice, not the student's
            model = torch.jit.load(path, map_location="cpu")
        model.eval()
        return model
    return path


def _gen_classify(inst: Any, x: Any) -> tuple:
    """(logits (B, C), features (B, D)) of the instrument on images `x`: its `classify(x)` when
    it has one (one pass), else `forward(x)` and `features(x)`."""
    if hasattr(inst, "classify"):
        logits, features = inst.classify(x)
        return logits, features
    return inst(x), inst.features(x)


def measure_generator(generate: Any, *, instrument: Any, n: int, seed: int, latent_shape: Any,
                      label_input: Any = None, n_classes: int = 10, batch: int = 500,
                      output_range: Any = None) -> dict:
    """See the module docstring."""
    import numpy as np
    import torch

    if n < 2 or batch < 1 or not latent_shape:
        raise ValueError("need n >= 2 samples, batch >= 1 and a latent shape")
    if label_input not in (None, "index", "onehot"):
        raise ValueError(f"unknown label input {label_input!r}")
    inst = _gen_load(instrument)
    gen = torch.Generator().manual_seed(int(seed))
    asked = (torch.arange(n) % n_classes) if label_input else None
    how = resize = None
    lo, hi = float("inf"), float("-inf")
    images = np.empty((n, IMAGE_SIDE * IMAGE_SIDE), dtype=np.float32)
    probs, feats = [], []
    with torch.no_grad():
        for start in range(0, n, Z_CHUNK):
            size = min(Z_CHUNK, n - start)
            z_chunk = torch.randn((size, *[int(d) for d in latent_shape]), generator=gen)
            for s in range(0, size, batch):
                z = z_chunk[s:s + batch]
                y = None
                if asked is not None:
                    y = asked[start + s:start + s + len(z)]
                    if label_input == "onehot":
                        y = torch.nn.functional.one_hot(y, n_classes).to(torch.float32)
                x, resize = _gen_as_images(generate(z, y))
                if x.shape[0] != len(z):
                    raise ValueError(f"the model returned {x.shape[0]} images for {len(z)} noise vectors")
                if not bool(torch.isfinite(x).all()):
                    raise ValueError("the model's output holds a non-finite value")
                lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
                if how is None:
                    how = _gen_output_map(x, output_range)
                x = _gen_apply_map(x, how)
                images[start + s:start + s + len(z)] = x.reshape(len(z), -1).numpy()
                logits, features = _gen_classify(inst, x)
                probs.append(torch.softmax(logits.to(torch.float64), dim=1).numpy())
                feats.append(features.to(torch.float64).numpy())
    p = np.concatenate(probs)
    f = np.concatenate(feats)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(f))):
        raise ValueError("the instrument gave a non-finite value on these samples")
    cov = np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])
    label_effect = None
    if asked is not None:  # the same z with another label: does the label change the images at all?
        with torch.no_grad():
            z = torch.randn((min(LABEL_EFFECT_SAMPLES, n), *[int(d) for d in latent_shape]),
                            generator=torch.Generator().manual_seed(int(seed) + 1))
            ya = torch.arange(len(z)) % n_classes
            yb = (ya + 1 + torch.arange(len(z)) % (n_classes - 1)) % n_classes  # never ya
            xs = []
            for y in (ya, yb):
                y = torch.nn.functional.one_hot(y, n_classes).to(torch.float32) if label_input == "onehot" else y
                xs.append(_gen_apply_map(_gen_as_images(generate(z, y))[0], how))
            label_effect = float((xs[0] - xs[1]).abs().mean())
    return {"n": int(n), "seed": int(seed), "output_map": how, "output_range": [lo, hi], "resize": resize,
            "label_effect": label_effect,
            "classifier_score": _gen_classifier_score(p), "predicted": [int(c) for c in p.argmax(axis=1)],
            "asked": [int(c) for c in asked] if asked is not None else None, "n_classes": int(p.shape[1]),
            "feature_mean": [float(v) for v in f.mean(axis=0)], "feature_cov": cov.tolist(),
            "diversity": _gen_pairwise(images, DIVERSITY_PAIRS, int(seed))}


def measure_vae(encode: Any, decode: Any, *, images: Any, batch: int = 500, seed: int = 0, forward: Any = None,
                input_shape: Any = None) -> dict:
    """See the module docstring."""
    import numpy as np
    import torch

    x_all = torch.as_tensor(np.asarray(images))
    if x_all.dtype == torch.uint8:
        x_all = x_all.to(torch.float32) / 255.0
    x_all = x_all.to(torch.float32).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    n = x_all.shape[0]
    if n < 2:
        raise ValueError("need at least two test images")
    if forward is None and (encode is None or decode is None):
        raise ValueError("need encode and decode, or forward")
    torch.manual_seed(int(seed))  # a forward that samples inside uses the global generator
    gen = torch.Generator().manual_seed(int(seed))
    shapes = [list(input_shape)] if input_shape else [[1, IMAGE_SIDE, IMAGE_SIDE], [IMAGE_SIDE * IMAGE_SIDE]]
    recon_sum = 0.0
    kl_sum = None
    mus = []
    decoder_output = None
    with torch.no_grad():
        for start in range(0, n, batch):
            xb = x_all[start:start + batch]
            errors = []
            for shape in list(shapes):
                try:
                    xin = xb.reshape(len(xb), *shape)
                    if forward is not None:
                        out = forward(xin)
                        if not isinstance(out, (list, tuple)) or len(out) < 3:
                            raise ValueError("the VAE's forward does not return (recon, mu, logvar)")
                        recon, mu, logvar = out[0], out[1], out[2]
                    else:
                        enc = encode(xin)
                        if not isinstance(enc, (list, tuple)) or len(enc) < 2:
                            raise ValueError("the VAE's encode does not return (mu, logvar)")
                        mu, logvar = enc[0], enc[1]
                        eps = torch.randn(mu.shape, generator=gen)
                        recon = decode(mu + torch.exp(0.5 * logvar) * eps)
                    shapes[:] = [shape]  # the first shape that worked, from now on
                    break
                except Exception as exc:  # noqa: BLE001 - the next input shape, then the error
                    errors.append(exc)
            else:
                raise errors[-1]
            recon = _gen_first_tensor(recon).to(torch.float64).reshape(len(xb), -1)
            mu, logvar = mu.to(torch.float64).reshape(len(xb), -1), logvar.to(torch.float64).reshape(len(xb), -1)
            if recon.shape[1] != IMAGE_SIDE * IMAGE_SIDE or mu.shape != logvar.shape:
                raise ValueError(f"the VAE returned a reconstruction of {recon.shape[1]} pixels and a posterior "
                                 f"of shapes {list(mu.shape)}, {list(logvar.shape)}")
            if not all(bool(torch.isfinite(t).all()) for t in (recon, mu, logvar)):
                raise ValueError("the VAE's output holds a non-finite value")
            if decoder_output is None:
                decoder_output = "probabilities" if float(recon.min()) >= 0 and float(recon.max()) <= 1 else "logits"
            p = torch.sigmoid(recon) if decoder_output == "logits" else recon
            p = p.clamp(1e-7, 1 - 1e-7)
            target = xb.reshape(len(xb), -1).to(torch.float64)
            recon_sum += float(-(target * torch.log(p) + (1 - target) * torch.log(1 - p)).sum())
            kl = -0.5 * (1 + logvar - mu ** 2 - torch.exp(logvar.clamp(max=80)))
            kl_sum = kl.sum(dim=0) if kl_sum is None else kl_sum + kl.sum(dim=0)
            mus.append(mu.numpy())
    m = np.concatenate(mus)
    kl_per_dim = (kl_sum / n).numpy()
    recon_mean = recon_sum / n
    kl_mean = float(kl_per_dim.sum())
    return {"n": int(n), "nelbo": recon_mean + kl_mean, "recon": recon_mean, "kl": kl_mean,
            "kl_per_dim": [float(v) for v in kl_per_dim], "mu_var": [float(v) for v in m.var(axis=0)],
            "latent": int(m.shape[1]), "decoder_output": decoder_output, "likelihood": "bernoulli",
            "input_shape": shapes[0]}
