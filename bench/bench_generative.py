"""The measurements of one generative submission, timed: samples through the instrument, the VAE bound.

    .venv/bin/python bench/bench_generative.py --data /work/data/real [--mode both|sandbox|inprocess]
        [--threads 2] [--samples 10000] [--sandbox bwrap|none]

What one submission costs the grader after its notebook ran (issue 16, "Speed"): for each captured
generator, `--samples` samples drawn and fed to the instrument (grader/instruments/mnist-classifier.pt:
classifier score, predicted classes, feature mean and covariance, diversity), then the host's
measures (coverage, Fréchet distance against the instrument's real test statistics, mode collapse,
conditional accuracy); for a VAE, the negative ELBO on the 10 000 real test images and its samples.
The models are untrained (random weights, seed 0: the cost does not depend on them), TorchScript as the
probe captures them, shaped like the labs' references: an MLP GAN generator 100-256-512-784 (tanh),
a cGAN generator taking an index label, an MNIST DCGAN generator (linear to 128x7x7, two transposed
convolutions with BatchNorm and ReLU, tanh) and the PyTorch example's VAE 784-400-20.

Two code paths, both timed by default:
- `sandbox`: what grading a submission runs, grader.verify.generative.measure: the captures written
  as the probe's teardown writes them (probe/verify/gen.json and TorchScript files), read strictly,
  measured in a fresh sandbox (bubblewrap when usable, else `--sandbox none`: the same job runner
  in a plain subprocess), the result validated and turned into the evidence block. CPU seconds
  count the sandbox's processes too (children waited for: os.times).
- `inprocess`: the functions that sandbox runs, grader.verify.gen_eval.measure_generator /
  measure_vae, called here (as a reference solution does), then the host's sample_measures /
  vae_measures; one line per model, so the cost of each is seen.
Prints one line per step (wall and CPU seconds) and the load average before and after;
bench/generative.md holds a run's numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

from grader.instruments import load
from grader.verify import gen_eval

warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notes


class MlpG(nn.Module):
    def __init__(self, nz: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(nz, 256), nn.LeakyReLU(0.2),
                                 nn.Linear(256, 512), nn.LeakyReLU(0.2), nn.Linear(512, 784), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class CondG(nn.Module):
    def __init__(self, nz: int = 100) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 10)
        self.net = nn.Sequential(nn.Linear(nz + 10, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512),
                                 nn.LeakyReLU(0.2), nn.Linear(512, 784), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.emb(y)], 1))


class DcG(nn.Module):
    def __init__(self, nz: int = 100) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(nz, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
                                nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, 128, 7, 7))


class Method(nn.Module):
    """A VAE's encode or decode as a module of its own: the probe's `encode`/`decode` files."""

    def __init__(self, vae: nn.Module, which: str) -> None:
        super().__init__()
        self.vae, self.which = vae, which

    def forward(self, x: torch.Tensor) -> Any:
        return self.vae.encode(x) if self.which == "encode" else self.vae.decode(x)


class Vae(nn.Module):
    """The PyTorch example's VAE (784-400-20), Bernoulli decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc1(x.reshape(-1, 784)))
        return self.fc21(h), self.fc22(h)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc4(torch.relu(self.fc3(z))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)), mu, logvar


def _scripted(cls: Callable[[], nn.Module]) -> torch.jit.ScriptModule:
    """A fresh `cls()` with seed-0 weights, scripted in eval mode: the same model every run."""
    torch.manual_seed(0)
    return torch.jit.script(cls().eval())


def _cpu() -> float:
    """CPU seconds of this process and of its children waited for (the sandbox's processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(what: str, fn: Callable[[], Any], rows: list) -> Any:
    t0, c0 = time.perf_counter(), _cpu()
    out = fn()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    rows.append((what, wall, cpu))
    print(f"{what:58s} {wall:7.2f} s wall {cpu:7.2f} s cpu", flush=True)
    return out


GENERATORS = (("g0", "MLP GAN generator 100-256-512-784", MlpG, None),
              ("g1", "cGAN generator (index label)", CondG, "index"),
              ("g2", "DCGAN generator (convT 128-64-1, 28x28)", DcG, None))


def _entry(cid: str, role: str, cls: str, **kw: Any) -> dict:
    """A gen.json capture record as the probe writes it (COMMON16 contract)."""
    e = {"id": cid, "role": role, "name": f"net{cid}", "class": cls, "model_ref": None, "optimizer_refs": [],
         "files": {"forward": f"{cid}.pt"}, "format": {"forward": "script"}, "latent": 100, "latent_shape": [100],
         "label_input": None, "label_position": None, "n_classes": None, "image_shape": [784],
         "output_range": [-1.0, 1.0], "input_range": None, "vae_outputs": None, "calls": 10, "steps": 10}
    e.update(kw)
    return e


def _probe(folder: Path, which: str) -> Path:
    """probe/verify/gen.json with the three generators (`which` = gan) or the VAE (`vae`)."""
    import json

    verify = folder / "probe" / "verify"
    verify.mkdir(parents=True)
    captures = []
    if which == "gan":
        for cid, _, cls, label in GENERATORS:
            _scripted(cls).save(str(verify / f"{cid}.pt"))
            captures.append(_entry(cid, "cgenerator" if label else "generator", cls.__name__,
                                   **({"label_input": label, "label_position": 1, "n_classes": 10} if label else {}),
                                   **({"image_shape": [1, 28, 28]} if cls is DcG else {})))
    else:
        torch.manual_seed(0)
        vae = Vae().eval()
        torch.jit.script(vae).save(str(verify / "v0.pt"))
        torch.jit.script(Method(vae, "encode").eval()).save(str(verify / "v0-encode.pt"))
        torch.jit.script(Method(vae, "decode").eval()).save(str(verify / "v0-decode.pt"))
        captures.append(_entry("v0", "vae", "VAE", latent=20, latent_shape=[20], output_range=[0.0, 1.0],
                               input_range=[0.0, 1.0], vae_outputs=["recon", "mu", "logvar"],
                               files={"forward": "v0.pt", "encode": "v0-encode.pt", "decode": "v0-decode.pt"},
                               format={"forward": "script", "encode": "script", "decode": "script"}))
    (verify / "gen.json").write_text(json.dumps({"version": 1, "captures": captures, "dropped": 0}), encoding="utf-8")
    for p in (folder, folder / "probe", verify, *verify.iterdir()):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return folder / "probe"


def bench_sandbox(args: argparse.Namespace, rows: list) -> None:
    """grader.verify.generative.measure on one GAN-lab submission (3 generators) and one VAE-lab one."""
    import tempfile

    from grader.execute import SandboxLimits, SandboxSpec
    from grader.rubric import Generative
    from grader.verify.generative import measure

    mode = args.sandbox
    if mode == "bwrap":
        from grader import sandbox

        try:
            sandbox.check_bwrap()
        except Exception as exc:  # noqa: BLE001 - the host decides
            print(f"bubblewrap unusable here ({exc}): --sandbox none")
            mode = "none"
    for which, what in (("gan", "GAN lab: MLP GAN + cGAN + DCGAN generators"),
                        ("vae", "VAE lab: the VAE's test bound + its samples")):
        with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
            probe = _probe(Path(tmp), which)
            block = _timed(f"sandbox ({mode}): {what}, {args.samples} samples each",
                           lambda tmp=tmp, probe=probe: measure(run_dir=Path(tmp), probe_dir=probe,
                                           generative=Generative(instrument="mnist-classifier", samples=args.samples, seed=0),
                                           spec=SandboxSpec(sandbox=mode), limits=SandboxLimits(),  # type: ignore[arg-type]
                                           data={"mnist": str(args.data)}, timeout_s=600.0), rows)
        if block["reason"]:
            print(f"    not measured: {block['reason']}")
        for m in block["measures"]:
            vae = m.get("vae") or {}
            print(f"    {m['capture']} {m['role']}: classifier score {m.get('classifier_score')}, "
                  f"frechet {m.get('frechet_distance')}, nelbo {vae.get('nelbo')} "
                  f"{m.get('reason') or m.get('samples_reason') or ''}")
        print(f"    block seconds {block['seconds']}")


def bench_inprocess(args: argparse.Namespace, rows: list) -> None:
    """gen_eval's functions called here, one model at a time, with the host's measures."""
    from grader.instruments.mnist_classifier import split
    from grader.verify.generative import sample_measures, vae_measures

    inst = _timed("load the instrument (TorchScript)", lambda: load("mnist-classifier"), rows)
    model = _timed("  torch.jit.load", lambda: torch.jit.load(str(inst.weights)).eval(), rows)
    real = inst.provenance["real"]
    n = args.samples

    def gen(g: torch.jit.ScriptModule, shape: list[int], label: str | None = None) -> dict:
        call = (lambda z, y: g(z)) if label is None else (lambda z, y: g(z, y))
        with torch.no_grad():
            return gen_eval.measure_generator(call, instrument=model, n=n, seed=0, latent_shape=shape,
                                              label_input=label, n_classes=10)

    for _, name, cls, label in GENERATORS:
        g = _scripted(cls)
        s = _timed(f"{name}: {n} samples -> instrument", lambda g=g, label=label: gen(g, [100], label), rows)
        m = _timed("  host measures (coverage, Fréchet, collapse)",
                   lambda s=s, label=label: sample_measures(s, real=real, label_input=label), rows)
        print(f"    classifier score {m['classifier_score']:.2f}, frechet {m['frechet_distance']:.1f}")

    images = _timed("read the real test split (10000 images)", lambda: split(args.data, "test")[0], rows)
    vae = _scripted(Vae)
    with torch.no_grad():
        v = _timed("VAE 784-400-20: negative ELBO on the 10000 test images",
                   lambda: gen_eval.measure_vae(vae.encode, vae.decode, images=images, seed=0), rows)
        _timed(f"VAE: {n} decoder samples -> instrument",
               lambda: gen_eval.measure_generator(lambda z, y: vae.decode(z), instrument=model, n=n, seed=0,
                                                  latent_shape=[20]), rows)
    v = vae_measures(v)
    print(f"    nelbo {v['nelbo']:.1f} nats per image (untrained), kl {v['kl']:.2f}, active units {v['active_units']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/data/real"), help="a root holding MNIST/raw (real)")
    ap.add_argument("--mode", choices=("both", "sandbox", "inprocess"), default="both")
    ap.add_argument("--sandbox", choices=("bwrap", "none"), default="bwrap",
                    help="the measuring sandbox (none: a plain subprocess, the same job runner)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in-process (the sandbox sets its own)")
    ap.add_argument("--samples", type=int, default=10000)
    args = ap.parse_args(argv)
    from grader.datasets import locate

    args.data = locate("mnist", args.data)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) in-process, {os.cpu_count()} cores, "
          f"load before {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for mode, fn in (("sandbox", bench_sandbox), ("inprocess", bench_inprocess)):
        if args.mode in (mode, "both"):
            rows: list = []
            fn(args, rows)
            total = sum(w for what, w, _ in rows if not what.startswith("  torch.jit"))
            cpu = sum(c for what, _, c in rows if not what.startswith("  torch.jit"))
            print(f"{mode + ' total':58s} {total:7.2f} s wall {cpu:7.2f} s cpu")
    print(f"load after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
