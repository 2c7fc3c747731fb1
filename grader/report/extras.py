"""The feedback's optional blocks for labs beyond classification: metrics printed by name
(ELBO, KL, D/G loss), the training runs of a notebook that trains several, the generated
samples it drew, and the grader's own measures of its generative models. Each view is empty
when the evidence has no such part, and the template
shows a block only when its view is not empty, so a LAB01 report does not change."""

from __future__ import annotations

import re

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grader.checks import params as P
from grader.checks.generative import architecture_of, reference_value
from grader.checks.genvae import batch_sizes, printed_test_loss, printed_vs_measured, reading
from grader.genmeasures import KL_COLLAPSED_NATS, PRESENT_SHARE
from grader.report import charts
from grader.report.figures import THUMB_WIDTH, _thumbnail
from grader.report.text import clean, num

MAX_NAMED = 20
MAX_RUNS = 16
MAX_SAMPLES = 6
MAX_CURVE_POINTS = 400


def named_metrics(metrics: object) -> list[dict[str, Any]]:
    """`metrics.named` as rows {name, value}, in the notebook's order; [] when there are none."""
    named = metrics.get("named") if isinstance(metrics, Mapping) else None
    if not isinstance(named, Mapping):
        return []
    return [{"name": clean(k, 40), "value": num(v)} for k, v in list(named.items())[:MAX_NAMED]]


FACTORS = ("model_kind", "depth", "width", "conv_layers", "optimizer", "lr", "epochs", "loss", "batch_size")
"""The run factors a comparison can name (grader.checks.params.Factor), in the table's order."""
FACTOR_WORDS = {"model_kind": "model", "depth": "hidden layers", "width": "units", "conv_layers": "conv layers",
                "optimizer": "optimizer", "lr": "lr", "epochs": "epochs", "loss": "loss", "batch_size": "batch"}
_FOLLOWS = {"model_kind": ("depth", "width", "conv_layers"), "conv_layers": ("depth", "width"), "optimizer": ("lr",)}
"""Factors that change with another (a linear model has no hidden layers; each optimizer keeps
its own learning rate): a study that changes both compares the first."""
MISMATCH = 0.01
"""|printed − measured| test accuracy (a fraction) above which a printed number is flagged."""


def run_factors(run: Mapping) -> dict[str, Any]:
    """What a run record (grader.evidence_model.Run) says about each factor; a factor it does not
    know is left out. depth = hidden layers of an MLP (0 for a linear model); width = its units
    per hidden layer (one number when all are equal, else the list); epochs = full passes (the
    fraction of one when none finished: a run that crashed in its first epoch)."""
    s = run.get("structure") if isinstance(run.get("structure"), Mapping) else {}
    out: dict[str, Any] = {}
    kind = s.get("kind")
    if isinstance(kind, str):
        out["model_kind"] = kind
    widths = [w for w in s.get("hidden_widths") or [] if isinstance(w, int)] \
        if isinstance(s.get("hidden_widths"), list) else None
    if kind == "linear":
        out["depth"] = 0
    elif kind == "mlp" and widths is not None:
        out["depth"] = len(widths)
    elif kind == "mlp" and isinstance(s.get("linear_layers"), int):
        out["depth"] = s["linear_layers"] - 1
    if kind == "mlp" and widths:
        out["width"] = widths[0] if len(set(widths)) == 1 else widths
    if isinstance(s.get("conv_layers"), int) and (kind == "cnn" or s["conv_layers"]):
        out["conv_layers"] = s["conv_layers"]
    for key in ("optimizer", "lr", "loss", "batch_size"):
        if run.get(key) is not None:
            out[key] = run[key]
    epochs = run.get("full_epochs") if run.get("full_epochs") else run.get("epochs")  # a crash in epoch 1: 0.01
    if epochs is not None:
        out["epochs"] = epochs
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-6 * max(abs(float(a)), abs(float(b)), 1e-12)
    return str(a).strip().lower() == str(b).strip().lower()


def exercises(ref_parts: Mapping) -> list[tuple[str, str, list[Any]]]:
    """(part id, factor, values) of each reference part that is a comparison: a study whose
    configurations (`summary.configs[].factors`, grader.reference_run) differ in one factor
    (and in what follows from it, `_FOLLOWS`)."""
    out = []
    for pid, part in (ref_parts or {}).items():
        summary = part.get("summary") if isinstance(part, Mapping) else None
        configs = summary.get("configs") if isinstance(summary, Mapping) else None
        factors = [c.get("factors") for c in configs or [] if isinstance(c, Mapping)]
        if len(factors) < 2 or not all(isinstance(f, Mapping) for f in factors):
            continue
        differ = [k for k in FACTORS if len({repr(f.get(k)) for f in factors}) > 1]
        follows = {x for k in differ for x in _FOLLOWS.get(k, ())}
        named = [k for k in differ if k not in follows]
        if len(named) == 1:
            out.append((str(pid), named[0], [f.get(named[0]) for f in factors]))
    return out


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "-".join(str(v) for v in value)
    return clean(value, 30)


def _flags(run: Mapping) -> list[str]:
    """typed (the printed number is a literal in the source, or far from the model), mismatch
    (printed and measured differ by more than MISMATCH), crashed, superseded, not trained."""
    check = run.get("printed_check") if isinstance(run.get("printed_check"), Mapping) else {}
    flags = []
    status = run.get("status")
    if status == "crashed":
        flags.append("crashed")
    elif status == "superseded":
        flags.append("superseded")
    elif status == "not-trained":
        flags.append("not trained")
    if check.get("typed"):
        flags.append("typed")
    else:
        delta = num(check.get("delta"))
        if delta is None and num(check.get("printed")) is not None and num(check.get("verified")) is not None:
            delta = num(check.get("printed")) - num(check.get("verified"))  # type: ignore[operator]
        if delta is not None and abs(delta) > MISMATCH:
            flags.append("mismatch")
    return flags


def runs_view(runs: object, ref_parts: Mapping | None = None) -> dict[str, Any] | None:
    """The notebook's training runs for the feedback: one row each (run, what it was trained
    with as `factor = value`, the exercises whose compared values it has, our measured test
    accuracy, the accuracy it printed, flags: typed / mismatch / crashed / superseded / not
    trained) and charts of their curves labelled by run (accuracies apart from losses). Accuracies
    are fractions 0..1. None when the evidence has no runs, or only one numbered run (`run 1`)
    in a lab whose reference compares none."""
    rows, acc_series, other_series = [], {}, {}
    known = exercises(ref_parts or {})
    for run in (runs if isinstance(runs, list) else [])[:MAX_RUNS]:
        if not isinstance(run, Mapping):
            continue
        name = clean(run.get("name"), 40)
        factors = run_factors(run)
        verified = run.get("verified") if isinstance(run.get("verified"), Mapping) else {}
        metrics = run.get("metrics") if isinstance(run.get("metrics"), Mapping) else {}
        check = run.get("printed_check") if isinstance(run.get("printed_check"), Mapping) else {}
        printed = num(check.get("printed")) if num(check.get("printed")) is not None else num(metrics.get("test_accuracy"))
        tags = [f"{pid}: {FACTOR_WORDS.get(f, f)} = {_shown(factors[f])}" for pid, f, values in known
                if f in factors and any(_same(factors[f], v) for v in values)]
        error = run.get("error") if isinstance(run.get("error"), Mapping) else {}
        rows.append({
            "name": name, "label": clean(run.get("label"), 120),
            "setup": [f"{FACTOR_WORDS[k]} = {_shown(v)}" for k, v in factors.items() if k in FACTOR_WORDS],
            "exercises": tags,
            "ours": num(verified.get("test_accuracy")), "ours_n": num(verified.get("n")),
            "ours_why": clean(verified.get("reason"), 120) if verified.get("test_accuracy") is None else "",
            "printed": printed, "flags": _flags(run),
            "error": (f"{clean(error.get('ename'), 60)}: {clean(error.get('evalue'), 160)}"
                      + (f" (In[{int(num(error.get('cell')) or 0)}])" if num(error.get("cell")) is not None else "")
                      ) if error else "",
            # kept for the template's older columns
            "optimizer": clean(run.get("optimizer"), 40), "lr": num(run.get("lr")),
            "metrics": [{"name": clean(k, 30), "value": num(v)} for k, v in list(metrics.items())[:8]],
        })
        curves = run.get("curves") if isinstance(run.get("curves"), Mapping) else {}
        kept = [(m, pts) for m, pts in list(curves.items())[:4] if isinstance(pts, list)]
        for metric, points in kept:
            pts = [(num(p[0]), num(p[1])) for p in points if isinstance(p, (list, tuple)) and len(p) == 2]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if pts:
                stride = max(1, len(pts) // MAX_CURVE_POINTS)
                accuracy = "acc" in str(metric).lower()
                target = acc_series if accuracy else other_series
                # the run's name alone when it has one curve on that chart (short legends)
                alone = sum(("acc" in str(m).lower()) == accuracy for m, _ in kept) == 1
                target[name if alone else f"{name} · {clean(metric, 24)}"] = pts[::stride]
    if not rows or (len(rows) < 2 and not known and re.fullmatch(r"run \d+", rows[0]["name"] or "")):
        # the one numbered run of a lab that compares none (LAB 1-1): the report's own blocks
        # say it all (a named run, a GAN's `dcgan`, still shows)
        return None
    charts_ = []
    for series, ylabel in ((acc_series, "accuracy"), (other_series, "loss")):
        if series:
            charts_.append(charts.data_uri(charts.curves(series, xlabel="epoch (or step, as printed)", ylabel=ylabel)))
    return {"rows": rows, "charts": charts_, "chart": charts_[0] if charts_ else None,
            "exercises": [{"part": pid, "factor": FACTOR_WORDS.get(f, f), "compared": [_shown(v) for v in vals]}
                          for pid, f, vals in known]}


def sample_figures(ev: Mapping) -> list[dict[str, Any]]:
    """The generated-sample figures (kind `samples`) as thumbnails {uri, cell, title, run};
    [] when there are none or none can be read."""
    run_dir = Path(str(ev["run_dir"])) if ev.get("run_dir") else None
    shown = []
    for f in ev.get("figures") or []:
        if not (isinstance(f, Mapping) and f.get("kind") == "samples") or run_dir is None:
            continue
        uri = _thumbnail(run_dir, f.get("png"), width=THUMB_WIDTH)
        if uri is not None:
            shown.append({"uri": uri, "cell": num(f.get("cell")), "title": clean(f.get("title"), 120),
                          "run": clean(f.get("run"), 40)})
        if len(shown) >= MAX_SAMPLES:
            break
    return shown


# --------------------------------------------------------------------------- generative measures

MAX_GEN = 8
"""Captured models listed (the probe keeps at most 8)."""
LABEL_IGNORED_AT: float = P.ConditionalGeneration.model_fields["ignored_below"].default
"""Conditional accuracy (a fraction) at or below which the table says the label is ignored:
conditional_generation's default bar."""
_METRIC_OF_ROLE = {"generator": "classifier_score", "cgenerator": "conditional_accuracy", "vae": "nelbo"}


def _fmt(value: object, how: str) -> str:
    """A measured number as the table shows it: `pct` a fraction as 93.0 %, `int`, or digits."""
    x = num(value)
    if x is None:
        return "–"
    if how == "pct":
        return f"{100 * x:.1f} %"
    if how == "int":
        return f"{x:,.0f}"
    return f"{x:.{how}f}"


def _declares(part: Mapping, key: str) -> object:
    """What a reference part's runs say of themselves (`role`, `architecture`), when they do."""
    runs = part.get("runs") if isinstance(part.get("runs"), list) else []
    return next((r.get(key) for r in runs if isinstance(r, Mapping) and r.get(key) is not None), None)


def generative_reference(measure: Mapping, ref_parts: Mapping,
                         own_part: str | None = None) -> tuple[str | None, Mapping]:
    """The reference part a captured model is compared with: among the parts that have its
    role's metric (a conditional generator's `conditional_accuracy`, a VAE's `nelbo`, a plain
    generator's `classifier_score` with neither) and, where the reference's
    runs declare a `role` / `architecture`, the ones that match it (those declaring its
    architecture first); the only one left, else the notebook's own part among them; (None, {})
    when that does not decide."""
    role = str(measure.get("role"))
    metric = _METRIC_OF_ROLE.get(role)
    if metric is None:
        return None, {}
    arch = architecture_of(measure.get("facts"))
    found = {}
    for pid, part in (ref_parts or {}).items():
        if not isinstance(part, Mapping) or reference_value(part, metric) is None:
            continue
        if role == "generator" and any(reference_value(part, k) is not None for k in ("conditional_accuracy", "nelbo")):
            continue
        if _declares(part, "role") not in (None, role) or \
                (arch and _declares(part, "architecture") not in (None, arch)):
            continue
        found[str(pid)] = part
    declared = {pid: part for pid, part in found.items() if arch and _declares(part, "architecture") == arch}
    found = declared or found  # a part that says it is this architecture before one that says nothing
    if len(found) == 1:
        return next(iter(found.items()))
    if own_part in found:
        return own_part, found[own_part]
    return None, {}


def _sample_rows(m: Mapping, ref: Mapping, real: Mapping, inst: Mapping) -> list[dict[str, Any]]:
    cov = m.get("coverage") if isinstance(m.get("coverage"), Mapping) else {}
    real_cov = real.get("coverage") if isinstance(real.get("coverage"), Mapping) else {}
    shares = cov.get("shares") if isinstance(cov.get("shares"), list) else []
    classes = len(shares) or 10
    most = f" (digit {cov['most']})" if isinstance(cov.get("most"), int) else ""
    rows = [("classifier score", f"exp of mean KL, 1 to {classes}", _fmt(m.get("classifier_score"), "2"),
             _fmt(reference_value(ref, "classifier_score"), "2"), _fmt(real.get("classifier_score"), "2")),
            ("digits covered", f"of {classes}, each ≥ {100 * PRESENT_SHARE:.0f} % of samples",
             _fmt(cov.get("classes"), "int"), _fmt(reference_value(ref, "coverage_classes"), "int"),
             _fmt(real_cov.get("classes"), "int")),
            ("most frequent digit", "share of samples", _fmt(cov.get("max_share"), "pct") + most,
             _fmt(reference_value(ref, "max_share"), "pct"), _fmt(real_cov.get("max_share"), "pct")),
            ("Fréchet distance", "classifier features, squared", _fmt(m.get("frechet_distance"), "2"),
             _fmt(reference_value(ref, "frechet_distance"), "2"), "0 (itself)"),
            ("diversity", "mean pairwise distance, pixels 0..1", _fmt(m.get("diversity"), "2"), "–",
             _fmt(real.get("diversity"), "2"))]
    c = m.get("conditional") if isinstance(m.get("conditional"), Mapping) else None
    if c is not None:
        rows.append(("conditional accuracy", "classified as the digit asked (real data: the classifier's accuracy)",
                     _fmt(c.get("accuracy"), "pct"), _fmt(reference_value(ref, "conditional_accuracy"), "pct"),
                     _fmt(inst.get("test_accuracy"), "pct")))
    return [{"measure": a, "unit": b, "student": s, "reference": r, "real": x} for a, b, s, r, x in rows]


def _printed_row(ev: Mapping, cap: Mapping, v: Mapping) -> tuple[str, str, str, str] | None:
    """The test loss the notebook printed, in nats per image at the scale that fits the measured
    bound (grader.checks.genvae), as a row; None when it printed none."""
    shown, nelbo = printed_test_loss(ev), num(v.get("nelbo"))
    if shown is None or nelbo is None or nelbo <= 0:
        return None
    n = v.get("n") if isinstance(v.get("n"), int) else None
    scale, per_image = printed_vs_measured(shown[0], nelbo, batch_sizes(ev, cap), n)
    return ("printed test loss", f"nats per image: your {shown[0]:g} {reading(scale)}", _fmt(per_image, "1"), "–")


def _vae_rows(v: Mapping, ref: Mapping) -> list[dict[str, Any]]:
    latent = v.get("latent") if isinstance(v.get("latent"), int) else None
    rows = [("test negative ELBO", "nats per image", _fmt(v.get("nelbo"), "1"),
             _fmt(reference_value(ref, "nelbo"), "1")),
            ("reconstruction term", "nats per image", _fmt(v.get("recon"), "1"),
             _fmt(reference_value(ref, "recon"), "1")),
            ("KL term", "nats per image", _fmt(v.get("kl"), "2"), _fmt(reference_value(ref, "kl"), "2")),
            ("active latent units", f"of {latent}" if latent else "latent dimensions",
             _fmt(v.get("active_units"), "int"),
             _fmt(reference_value(ref, "active_units"), "int"))]
    return [{"measure": a, "unit": b, "student": s, "reference": r, "real": "–"} for a, b, s, r in rows]


def _gen_flags(m: Mapping) -> list[str]:
    """mode collapse, label ignored, posterior collapse: one sentence each, with the numbers."""
    out = []
    col = m.get("collapse") if isinstance(m.get("collapse"), Mapping) else {}
    if col.get("flag") is True:
        out.append(f"Mode collapse: {clean(col.get('why'), 300) or 'the samples cover few digits'}.")
    c = m.get("conditional") if isinstance(m.get("conditional"), Mapping) else {}
    acc = num(c.get("accuracy"))
    if acc is not None and acc <= LABEL_IGNORED_AT:
        out.append(f"Label ignored: only {100 * acc:.1f} % of the samples are the digit asked for (chance 10 %).")
    v = m.get("vae") if isinstance(m.get("vae"), Mapping) else {}
    kl = num(v.get("kl"))
    if v.get("posterior_collapse") is True or (kl is not None and kl <= KL_COLLAPSED_NATS) \
            or v.get("active_units") == 0:
        out.append(f"Posterior collapse: KL term {_fmt(kl, '2')} nats per image, "
                   f"{_fmt(v.get('active_units'), 'int')} active latent units: the decoder ignores z.")
    return out


def generative_view(ev: Mapping, ref_parts: Mapping | None = None,
                    own_part: str | None = None) -> dict[str, Any] | None:
    """The grader's measures of a notebook's captured generative models (`ev["generative"]`,
    grader.verify.generative) for the feedback: per measured model a table (measure, unit, the
    student's value, the reference's, the real test data's; a VAE's printed test loss beside its
    bound) and its flags (mode collapse, label ignored, posterior collapse); a model not measured
    shows why. None when nothing was captured."""
    gen = ev.get("generative")
    if not isinstance(gen, Mapping):
        return None
    real = gen.get("real") if isinstance(gen.get("real"), Mapping) else {}
    inst = gen.get("instrument") if isinstance(gen.get("instrument"), Mapping) else {}
    captures = {c.get("id"): c for c in gen.get("captures") or [] if isinstance(c, Mapping)}
    models = []
    for m in (gen.get("measures") or [])[:MAX_GEN]:
        if not isinstance(m, Mapping):
            continue
        cap = captures.get(m.get("capture")) or {}
        name, cls = cap.get("name") or m.get("name"), cap.get("class")
        part, ref = generative_reference(m, ref_parts or {}, own_part)
        sub = [clean(m.get("role"), 20), architecture_of(m.get("facts")) or ""]
        if isinstance(cap.get("steps"), int):
            sub.append(f"{cap['steps']:,} optimizer steps")
        if isinstance(cap.get("latent"), int):
            sub.append(f"latent {cap['latent']}")
        if isinstance(m.get("n"), int) and num(m.get("classifier_score")) is not None:
            sub.append(f"{m['n']:,} samples, seed {clean(m.get('seed'), 12)}")
        if m.get("output_map"):
            sub.append(f"outputs {clean(m.get('output_map'), 60)}")
        rows = []
        if num(m.get("classifier_score")) is not None:
            rows += _sample_rows(m, ref, real, inst)
        if isinstance(m.get("vae"), Mapping):
            printed = _printed_row(ev, cap, m["vae"])
            rows = _vae_rows(m["vae"], ref) + rows
            if printed is not None:
                rows.insert(1, {"measure": printed[0], "unit": printed[1], "student": printed[2],
                                "reference": printed[3], "real": "–"})
        models.append({"title": (f"{clean(name, 40)} ({clean(cls, 40)})" if name and cls else clean(name or cls, 40))
                       or clean(m.get("capture"), 8),
                       "sub": " · ".join(s for s in sub if s),
                       "reference_part": clean(part, 40) if part and rows else "",
                       "rows": rows, "flags": _gen_flags(m),
                       "reason": clean(m.get("reason"), 300) if not rows else "",
                       "notes": [clean(m.get(k), 300) for k in ("samples_reason", "vae_reason") if m.get(k) and rows]})
    if not models and not gen.get("reason"):
        return None
    return {"models": models, "reason": clean(gen.get("reason"), 300) if not models else "",
            "instrument": clean(inst.get("name"), 40), "instrument_accuracy": num(inst.get("test_accuracy")),
            "real_n": _fmt(real.get("n"), "int") if num(real.get("n")) else "", "seconds": num(gen.get("seconds"))}
