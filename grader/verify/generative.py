"""Measuring the generative models a notebook trained: evidence["generative"].

After the last cell the probe's teardown captures the generators, discriminators and VAEs the
notebook trained (grader/probe/rec_gen.py): `probe/verify/gen.json` and TorchScript or
torch.export files beside it, all written by code that shared the student's process. `measure`:

1. reads gen.json strictly (grader.verify.gen_json) and tells each file's format from its bytes
   (grader.verify.archive.model_format: no pickle is ever loaded);
2. reads the real test split of the instrument's dataset (its provenance's `data.name`: MNIST)
   itself from the lab's read-only dataset mount (a VAE's bound needs it) and writes its images
   alone, shuffled, into the measuring folder;
3. copies the grader's instrument there (grader.instruments: a classifier trained on real MNIST);
4. runs grader.verify.gen_eval in a fresh sandbox (the notebook's confinement and limits, no
   dataset mounts, no GPU), in the time the rubric's `generative.timeout` and the submission's
   budget leave; its one JSON line is validated (grader.verify.gen_json);
5. turns the numbers into measures with grader.genmeasures (`sample_measures`, `vae_measures`,
   usable in-process by reference solutions too) and returns the evidence block:

    {"instrument": {"name", "digest", "test_accuracy"}, "real": {"classifier_score", "coverage",
     "diversity", "n"}, "captures": [gen.json records without files/format],
     "measures": [{"capture", "role", "name", "n", "seed", "output_map", "classifier_score",
                   "coverage", "frechet_distance", "diversity", "diversity_ratio", "collapse",
                   "conditional", "vae", "facts", ["resize"], ["batchnorm"], ["samples_reason"],
                   ["vae_reason"], ["facts_reason"], ["reason"]}],  # one per generator, cgenerator, vae
     "structures": [{"capture", "role", "facts" | None, ["facts_reason"]}],   # discriminators
     "seconds": float, "reason": str | None}

A sample measure that could not be taken is None with `samples_reason` (a VAE without a decoder
gets its bound alone). A generator with BatchNorm is measured in eval mode (running statistics)
and, when that changes its images, in training mode too (batch statistics, as a notebook that
never called .eval() drew its samples): `batchnorm` says which mode the numbers are from, the
training mode's only when eval mode alone shows collapse and training mode does not; `reason` on a measure when nothing of it was measured, and on the block
when nothing at all was. Units: nats per image, fractions 0..1, pixel distances (0..28). Never
raises for anything a submission did.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grader import genmeasures as gm
from grader.execute import SandboxLimits, SandboxSpec
from grader.verify.archive import model_format
from grader.verify.gen_json import (
    MEASURED_ROLES,
    check_facts,
    check_samples,
    check_vae,
    entries,
    public,
    read_gen,
    result_line,
)
from grader.verify.gen_sandbox import source as gen_sandbox_source
from grader.verify.host import MAX_MODEL_BYTES, OutOfTime, _check_run, job_folder, run_job
from grader.verify.spec import NotVerified, regular

GEN_FORMAT = {"torchscript": "torchscript", "export": "export"}


def measure(*, run_dir: Path, probe_dir: Path, generative: Any, spec: SandboxSpec, limits: SandboxLimits,
            data: Mapping[str, str], timeout_s: float, instruments: Path | None = None) -> dict[str, Any]:
    """evidence["generative"] for one executed notebook (see the module docstring).

    `generative`: the rubric's grader.rubric.Generative (instrument, samples, seed); `data`: the
    registered dataset name -> host folder of the lab's mounts (the instrument's dataset is read
    for a VAE's bound);
    `timeout_s`: the sandbox's wall time (seconds; the block has `timed_out` when it ran out).
    `instruments`: the folder of the instrument files (default: grader/instruments).
    Never raises for anything the submission did."""
    started = time.monotonic()
    block: dict[str, Any] = {"instrument": None, "real": None, "captures": [], "measures": [], "structures": [],
                             "seconds": 0.0, "reason": None}
    try:
        _check_run(run_dir)
        records, dropped = read_gen(probe_dir / "verify" / "gen.json")
        for r in records:
            if r["role"] == "cgenerator" and r.get("n_classes") not in (None, 10) and "reason" not in r:
                r["reason"] = (f"its label takes {r['n_classes']} classes, not the 10 digits the grader's "
                               f"instrument tells apart")
            if "reason" not in r:
                _check_files(probe_dir / "verify", r)
        block["captures"] = [public(r) for r in records]
        if dropped:
            block["dropped"] = dropped
        block["measures"] = [_unmeasured(r, r["reason"]) for r in records
                             if r["role"] in MEASURED_ROLES and "reason" in r]
        todo = [r for r in records if "reason" not in r]
        if not any(r["role"] in MEASURED_ROLES for r in records):
            raise NotVerified("the notebook trained no generator or VAE the grader could capture")
        from grader.instruments import InstrumentError, load

        try:
            inst = load(generative.instrument, instruments)
        except InstrumentError as exc:
            raise NotVerified(f"the grader's instrument is not available: {exc}") from None
        real = _real(inst.provenance)
        block["instrument"] = {"name": inst.name, "digest": _sha256(inst.weights),
                               "test_accuracy": inst.provenance.get("test_accuracy")}
        block["real"] = {k: real[k] for k in ("classifier_score", "coverage", "diversity", "n")}
        images, no_images = _test_images(data, inst.provenance) if any(r["role"] == "vae" for r in todo) else (None, "")
        result = _sandbox(probe_dir / "verify", todo, inst.weights, images, n=generative.samples, seed=generative.seed, spec=spec,
                          limits=limits, timeout_s=timeout_s) if todo else {"captures": []}
        got = dict(zip([r["id"] for r in todo], entries(result, [r["id"] for r in todo])))
        measures, structures = [], []
        for r in records:
            if "reason" in r:
                continue
            if r["role"] == "discriminator":
                structures.append({"capture": r["id"], "role": r["role"], **_facts(got[r["id"]])})
            else:
                measures.append(_measure(r, got[r["id"]], real=real, n=generative.samples, seed=generative.seed,
                                         test_n=0 if images is None else len(images), no_images=no_images))
        order = {r["id"]: k for k, r in enumerate(records)}
        block["measures"] = sorted(block["measures"] + measures, key=lambda m: order[m["capture"]])
        block["structures"] = structures
    except NotVerified as exc:
        block["reason"] = str(exc)
        block["measures"] = [_unmeasured(r, r.get("reason") or str(exc)) for r in block["captures"]
                             if r.get("role") in MEASURED_ROLES]
        if isinstance(exc, OutOfTime):
            block["timed_out"] = True
    except Exception as exc:  # noqa: BLE001 - one notebook's measures must not stop a batch
        block["reason"] = (f"the grader's measurement of the generative models failed ({type(exc).__name__}: "
                           f"{str(exc)[:200]}); please report this")
        block["measures"] = [_unmeasured(r, block["reason"]) for r in block["captures"] if r.get("role") in MEASURED_ROLES]
    block["seconds"] = round(time.monotonic() - started, 2)
    return block


def measure_in_time(result: Any, rel: str, *, rubric: Any, limits: SandboxLimits, submission_end: float | None,
                    **kw: Any) -> tuple[dict[str, Any], dict[str, str] | None]:
    """`measure` for `result` (a grader.execute.RunResult), its sandbox given at most the rubric's
    `generative.timeout` and what is left of the run's wall time and of the submission's time
    (grader.runbudget.finish_window, as the evaluator's); with the run's note when that time cut
    it or left none. `kw`: measure's other arguments (run_dir, probe_dir, spec, data)."""
    from grader.runbudget import finish_window

    cap = float(rubric.generative.timeout)
    run_end = result.started_at + result.startup_s + limits.wall_timeout_s
    given, cut = finish_window(now=time.time(), cap_s=cap, run_end=run_end, submission_end=submission_end)
    block = measure(generative=rubric.generative, limits=limits, timeout_s=given, **kw)
    if not block.pop("timed_out", False):
        return block, None
    limit = {"submission-time": "what was left of the submission's time (rubric limits.submission_timeout)",
             "sandbox-limit": "what was left of the notebook's wall time (rubric limits.wall_timeout)"}.get(
        cut or "", f"the lab's limit for it (rubric generative.timeout, {cap:.0f} s)")
    fate = "ran past it and was stopped" if given >= 1.0 else "could not start"
    return block, {"code": cut or "sandbox-limit",
                   "message": f"For `{rel}`, measuring the generative models in a fresh sandbox was given "
                              f"{given:.0f} s, {limit}, and {fate}: they were not measured."}


def _unmeasured(record: Mapping[str, Any], reason: str) -> dict[str, Any]:
    return {"capture": record["id"], "role": record.get("role"), "name": record.get("name"), "reason": reason}


def _check_files(folder: Path, record: dict[str, Any]) -> None:
    """Each file of `record` a regular file of a loadable format (its bytes decide, not gen.json);
    a bad forward file sets the record's reason, a bad encode/decode file is dropped."""
    for key in list(record["files"]):
        path = folder / record["files"][key]
        try:
            regular(path, MAX_MODEL_BYTES, f"captured model file {record['files'][key]}")
            record["format"][key] = "export" if model_format(path) == "export" else "torchscript"
        except NotVerified as exc:
            if key == "forward":
                record["reason"] = f"{record['files'][key]}: {exc}"
                return
            del record["files"][key], record["format"][key]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _real(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The instrument provenance's `real` values (grader.instruments), checked: they are ours,
    but a hand-edited file must not crash a batch."""
    real = provenance.get("real")
    try:
        mean, cov = np.asarray(real["feature_mean"], dtype=np.float64), np.asarray(real["feature_cov"], dtype=np.float64)
        ok = (mean.ndim == 1 and cov.shape == (len(mean), len(mean)) and np.all(np.isfinite(mean))
              and np.all(np.isfinite(cov)) and all(math.isfinite(float(real[k])) for k in ("classifier_score", "diversity"))
              and isinstance(real["coverage"], dict) and int(real["n"]) > 1)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise NotVerified("the grader's instrument has no usable real-data statistics in its provenance; "
                          "please report this")
    return {**real, "feature_mean": mean, "feature_cov": cov}


def _test_images(data: Mapping[str, str], provenance: Mapping[str, Any]) -> tuple[np.ndarray | None, str]:
    """The images (N, 28, 28) uint8 of the test split of the dataset the instrument was trained on
    (its provenance's `data.name`, a registered dataset), read from the lab's mount; or None and
    why not (a sentence)."""
    from grader.datasets import locate, registry
    from grader.errors import DatasetError
    from grader.verify.data import read_split

    name = (provenance.get("data") or {}).get("name") if isinstance(provenance.get("data"), dict) else None
    if not isinstance(name, str) or name not in registry.names():
        return None, "the grader's instrument does not name the dataset it was trained on; please report this"
    title = registry.get(name).title
    host = data.get(name)
    if host is None:
        return None, f"the {title} test split is not mounted for this lab, so the VAE's test bound could not be recomputed"
    try:
        split = read_split(name, locate(name, Path(host)))
    except (NotVerified, DatasetError) as exc:
        return None, f"the {title} test split could not be read ({str(exc)[:200]}), so the VAE's test bound was not recomputed"
    if split.pixels is None or split.pixels.shape[1:] != (28, 28):
        return None, f"the {title} test split is not made of 28x28 gray images, so the VAE's test bound was not recomputed"
    return split.pixels, ""


def _sandbox(folder: Path, todo: Sequence[Mapping[str, Any]], instrument: Path, images: np.ndarray | None, *, n: int, seed: int,
             spec: SandboxSpec, limits: SandboxLimits, timeout_s: float) -> dict[str, Any]:
    """gen_eval's result for the captures `todo` (validated records whose files are in `folder`),
    run in a fresh sandbox."""
    if timeout_s < 1.0:
        raise OutOfTime("no time was left to measure the generative models")
    work, kdir = job_folder("dllab-gen-")
    try:
        names = ["job.json", "measure.py", "instrument.pt"]
        jobs = []
        for r in todo:
            for name in r["files"].values():
                # copies, never links: the folder is writable from inside
                shutil.copyfile(folder / name, kdir / name)
                names.append(name)
            jobs.append({k: r.get(k) for k in ("id", "role", "files", "format", "latent", "latent_shape", "label_input",
                                               "label_position", "n_classes", "image_shape", "output_range",
                                               "vae_outputs")})
        shutil.copyfile(instrument, kdir / "instrument.pt")
        if images is not None:
            shuffled = images[np.random.default_rng(secrets.randbits(64)).permutation(len(images))]
            np.save(kdir / "images.npy", np.ascontiguousarray(shuffled), allow_pickle=False)
            names.append("images.npy")
        job = {"captures": jobs, "instrument": "instrument.pt", "samples": n, "seed": seed}
        (kdir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (kdir / "measure.py").write_text(gen_sandbox_source(), encoding="utf-8")
        for name in names:
            os.chmod(kdir / name, 0o644)
        stdout, stderr, code = run_job(kdir / "measure.py", kdir / "job.json", work=work, spec=spec, limits=limits,
                                       timeout_s=timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if code == "timeout":
        raise OutOfTime(f"the time limit of {timeout_s:.0f} s given to measuring the generative models ran out "
                        f"before they were measured (rubric generative.timeout, or the submission's time left)")
    return result_line(stdout, stderr, code)


def _facts(entry: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {"facts": check_facts(entry.get("facts"))}
    except NotVerified as exc:
        return {"facts": None, "facts_reason": str(exc)}


def _measure(record: Mapping[str, Any], entry: Mapping[str, Any], *, real: Mapping[str, Any], n: int, seed: int,
             test_n: int, no_images: str = "") -> dict[str, Any]:
    """One capture's measure from its validated sandbox entry."""
    m: dict[str, Any] = {"capture": record["id"], "role": record["role"], "name": record.get("name"), "n": n,
                         "seed": seed, **dict.fromkeys(("output_map", "classifier_score", "coverage", "frechet_distance",
                                                        "diversity", "diversity_ratio", "collapse", "conditional"))}
    if isinstance(entry.get("error"), str):
        return {**_unmeasured(record, "the captured model could not be loaded: " + entry["error"][:300])}
    m.update(_facts(entry))
    label = record.get("label_input") if record["role"] == "cgenerator" else None

    def samples(s: Any) -> dict[str, Any]:
        if isinstance(s, dict) and isinstance(s.get("error"), str) and len(s) == 1:
            raise NotVerified("its samples could not be measured: " + s["error"][:300])
        return sample_measures(check_samples(s, n=n, n_classes=10, dim=len(real["feature_mean"])), real=real,
                               label_input=label, seed=seed)
    try:
        m.update(samples(entry.get("samples")))
    except NotVerified as exc:
        m["samples_reason"] = str(exc)
    if "samples_train" in entry:
        m["batchnorm"] = "eval: running statistics"
        with contextlib.suppress(NotVerified):
            train = samples(entry["samples_train"])
            if (m["collapse"] is None or m["collapse"]["flag"]) and not train["collapse"]["flag"]:
                # the student is not charged for the mode the grader chose: the notebook may have
                # drawn its own samples in training mode, as the DCGAN example does
                why = m["collapse"]["why"] if m["collapse"] else m.pop("samples_reason", "")
                m.update(train, batchnorm=f"train: batch statistics of 500 samples (in eval mode, with its running "
                                          f"statistics: {why})")
    m["vae"] = None
    if record["role"] == "vae":
        try:
            v = entry.get("vae")
            if test_n == 0:
                raise NotVerified(no_images or "no test images were read")
            if isinstance(v, dict) and isinstance(v.get("error"), str) and len(v) == 1:
                raise NotVerified("its test-set bound could not be computed: " + v["error"][:300])
            m["vae"] = vae_measures(check_vae(v, n=test_n))
        except NotVerified as exc:
            m["vae_reason"] = str(exc)
    if "samples_reason" in m and (record["role"] != "vae" or m["vae"] is None):
        m["reason"] = m.get("vae_reason") or m["samples_reason"]
    return m


def sample_measures(s: Mapping[str, Any], *, real: Mapping[str, Any], label_input: str | None = None,
                    seed: int = 0, n_classes: int = 10) -> dict[str, Any]:
    """The sample measures of grader.verify.gen_eval.measure_generator's dict `s`, against the
    instrument's real test split statistics `real` (provenance `real`: feature_mean (D,),
    feature_cov (D, D), diversity): classifier_score (1..n_classes), coverage
    (genmeasures.class_coverage), frechet_distance (squared feature units), diversity (mean
    pairwise pixel distance, 0..28) and diversity_ratio (to the real images'), collapse
    {flag, why} (genmeasures.mode_collapse) and, when `label_input`, conditional
    {accuracy, per_class, label_input, label_effect} against the labels asked (sample i asked
    i % n_classes; label_effect: gen_eval's, None when not measured).
    In-process too: a reference solution's numbers come from here. Raises ValueError."""
    predicted = np.asarray(s["predicted"], dtype=np.int64)
    coverage = gm.class_coverage(predicted, n_classes)
    fd = gm.frechet_distance(np.asarray(s["feature_mean"]), np.asarray(s["feature_cov"]),
                             np.asarray(real["feature_mean"]), np.asarray(real["feature_cov"]))
    ratio = float(s["diversity"]) / float(real["diversity"]) if float(real["diversity"]) > 0 else None
    flag, why = gm.mode_collapse(coverage, ratio)
    conditional = None
    if label_input:
        asked = np.arange(len(predicted)) % n_classes
        effect = s.get("label_effect")
        conditional = {**gm.conditional_accuracy(predicted, asked, n_classes), "label_input": label_input,
                       "label_effect": None if effect is None else float(effect)}
    return {"output_map": s["output_map"], "classifier_score": float(s["classifier_score"]), "coverage": coverage,
            "frechet_distance": fd, "diversity": float(s["diversity"]),
            "diversity_ratio": None if ratio is None else round(ratio, 4),
            "collapse": {"flag": flag, "why": why}, "conditional": conditional,
            **({"resize": s["resize"]} if s.get("resize") else {})}


def vae_measures(v: Mapping[str, Any]) -> dict[str, Any]:
    """The `vae` measure of grader.verify.gen_eval.measure_vae's dict `v` (nats per image):
    nelbo, recon, kl, kl_per_dim, active_units (posterior-mean variance above
    genmeasures.ACTIVE_UNIT_THRESHOLD, Burda et al. 2016), latent, n, posterior_collapse (the KL
    below genmeasures.KL_COLLAPSED_NATS), decoder_output, likelihood. In-process too."""
    return {"nelbo": float(v["nelbo"]), "recon": float(v["recon"]), "kl": float(v["kl"]),
            "kl_per_dim": [float(x) for x in v["kl_per_dim"]],
            "active_units": int(sum(1 for x in v["mu_var"] if x > gm.ACTIVE_UNIT_THRESHOLD)),
            "latent": int(v["latent"]), "n": int(v["n"]), "posterior_collapse": float(v["kl"]) < gm.KL_COLLAPSED_NATS,
            "decoder_output": v["decoder_output"], "likelihood": v.get("likelihood", "bernoulli")}


def reference_metrics(m: Mapping[str, Any]) -> dict[str, float | int]:
    """The expected-metrics names of one measure (a `measures` entry, or `sample_measures`'s
    dict with `vae` added for a VAE): classifier_score, coverage_classes, max_share,
    frechet_distance, conditional_accuracy (a cGAN), nelbo, kl, active_units (a VAE); those
    measured only."""
    out: dict[str, float | int] = {}
    if m.get("classifier_score") is not None:
        out.update(classifier_score=m["classifier_score"], coverage_classes=m["coverage"]["classes"],
                   max_share=m["coverage"]["max_share"], frechet_distance=m["frechet_distance"])
    if m.get("conditional"):
        out["conditional_accuracy"] = m["conditional"]["accuracy"]
    if m.get("vae"):
        out.update(nelbo=m["vae"]["nelbo"], kl=m["vae"]["kl"], active_units=m["vae"]["active_units"])
    return out
