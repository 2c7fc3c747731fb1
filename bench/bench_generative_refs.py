"""The VAE and GAN labs' references on real MNIST: training time and the grader's measures.

    .venv/bin/python bench/bench_generative_refs.py --mnist DIR [--parts vae gan cgan dcgan]
        [--epochs N] [--seed 0] [--cache DIR] [--out FILE]

Trains each part's reference (labs/vae/reference/vae.py, labs/gan/reference/{gan,cgan,dcgan}.py:
their `fit`, 1 CPU thread) on the real MNIST at DIR (`dllab data mnist`), then measures the
trained model with the grader's own code (the references' `measure`: grader.verify.gen_eval
through the mnist-classifier instrument, 10 000 samples; the VAE's bound on the test split).
Prints one line per part: training seconds (wall and CPU), measuring seconds, the measures and
the load average before and after (the machine is shared: a time is only as good as its load).
`--cache DIR` keeps each trained model's state_dict (`<part>-e<epochs>-s<seed>.pt`) and measures
a cached one without training again (the numbers of a model measured later with a new
instrument). `--out` writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAB_OF = {"vae": "vae", "gan": "gan", "cgan": "gan", "dcgan": "gan"}
SHOWN = ("nelbo", "kl", "active_units", "test_loss", "classifier_score", "coverage_classes", "max_share",
         "frechet_distance", "conditional_accuracy", "diversity_ratio")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_part(part: str, *, mnist: Path, epochs: int | None, seed: int, cache: Path | None) -> dict:
    """Trains (or loads from `cache`) and measures one part; returns its numbers and seconds."""
    import torch

    from grader.labs import find_lab, import_reference

    module = import_reference(find_lab(str(REPO / "labs" / LAB_OF[part])), part)
    epochs = epochs or module.hyp["epochs"]
    data = {"mnist": mnist}
    cached = cache / f"{part}-e{epochs}-s{seed}.pt" if cache else None
    out: dict = {"part": part, "epochs": epochs, "seed": seed, "load_before": _load()}
    wall, cpu = time.perf_counter(), time.process_time()
    history = None
    if cached is not None and cached.is_file():
        model = _built(module, part)
        model.load_state_dict(torch.load(cached, weights_only=True))
        model.eval()
        out["trained"] = f"loaded from {cached}"
    else:
        fitted = module.fit(data=data, device="cpu", seed=seed, epochs=epochs)
        model, history = fitted[0], fitted[1]
        out["train_wall_s"] = round(time.perf_counter() - wall, 1)
        out["train_cpu_s"] = round(time.process_time() - cpu, 1)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), cached)
    t0 = time.perf_counter()
    if part == "vae":
        _, x_test = module.load(mnist, torch.device("cpu"))
        measures = module.measure(model, x_test, seed=seed)
        measures["test_loss"] = module.test_loss(model, x_test)["test_loss"]
    else:
        conditional = part == "cgan"
        measures = module.measure((lambda z, y: model(z, y)) if conditional else (lambda z, y: model(z)),
                                  latent_shape=(module.hyp["latent"],),
                                  label_input="onehot" if conditional else None, seed=seed)
    out["measure_s"] = round(time.perf_counter() - t0, 1)
    out["measures"] = {k: measures[k] for k in SHOWN if k in measures}
    out["collapse"] = measures.get("collapse")
    if history:
        out["history"] = history
    out["load_after"] = _load()
    return out


def _built(module, part: str):
    h = module.hyp
    if part == "vae":
        return module.VAE(h["hidden"], h["latent"])
    if part == "gan":
        return module.Generator(h["latent"], h["hidden_g"])
    if part == "cgan":
        return module.Generator(h["latent"], h["classes"], h["hidden_g"])
    return module.Generator(h["latent"], h["channels"], h["kernel"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", type=Path, required=True, help="the real MNIST folder (holding raw/)")
    ap.add_argument("--parts", nargs="+", default=list(LAB_OF), choices=list(LAB_OF))
    ap.add_argument("--epochs", type=int, default=None, help="override every part's epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = []
    for part in args.parts:
        r = bench_part(part, mnist=args.mnist, epochs=args.epochs, seed=args.seed, cache=args.cache)
        results.append(r)
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["measures"].items())
        print(f"{part:6} {r['epochs']:>2} epochs  train {r.get('train_wall_s', '-')} s wall / {r.get('train_cpu_s', '-')} s CPU"
              f"  measure {r['measure_s']} s  {shown}  collapse {r['collapse']}  load {r['load_before']} -> {r['load_after']}",
              flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
