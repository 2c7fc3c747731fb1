"""The per-student feedback: gathers the grade and the evidence into plain data for
`templates/student.html.j2`, then writes `feedback/<id>.html` and `feedback/<id>.pdf`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader.fsutil import write_bytes_atomic, write_text_atomic
from grader.intake.problems import FLAG_TEXT as INTAKE_FLAG_TEXT
from grader.report import charts
from grader.report.extras import generative_view, named_metrics, runs_view, sample_figures
from grader.report.figures import figures_view
from grader.report.pdf import html_to_pdf, stylesheet_text
from grader.safename import safe_name
from grader.sources import RULE
from grader.report.text import (
    RUN_STATUSES, clean, clip_lines, num, render_template, status_of,
)

MAX_CLASSES = 60
MAX_ERRORS = 5
MAX_ROWS = 8
MAX_NOTEBOOKS = 12
MAX_SERIES = 12
MAX_POINTS = 400

# Student-facing wording of the grade's flags; unknown flags are shown as they are.
FLAG_TEXT = {
    "late": "submitted after the deadline",
    "mismatch": "printed metrics differ from the grader's own evaluation",
    "hidden-gap": ("the model scored far higher on the test split than on hidden test images of the same kind "
                   "(a two-proportion test): it may have learned the test split; accuracy was graded on the "
                   "hidden images and a TA checks"),
    "manual-pending": "some items wait for a TA",
    "sandbox-limit": ("a notebook hit a time or memory limit (or the grader's capture or evaluation of its model "
                      "ran out of time)"),
    "notebook-error": "a notebook stopped with an error",
    "output-truncated": "a cell printed more than the grader keeps; the middle of its output was left out",
    "unreadable-figure": ("a figure in a notebook cannot be read (a corrupt image, only `<Figure ...>` text "
                          "saved, or an image pasted into a markdown cell); a TA will look at it"),
    "bad-name": "the zip is not named dllab_<student id>.zip",
    "duplicate": "more than one submission was found",
    "override-applied": "a TA adjusted points",
    "grader-crash": "the grader failed on this submission; a TA will look at it",
    "ignored-notebook": "a notebook that could serve a part was not graded (see which notebook was graded)",
    "better-copy-ignored": "a more complete copy of a notebook (`(1)`, `Copy of`) was not graded because its "
                           "name marks it as a copy; a TA decides whether to grade it instead",
    "time-unknown": "the submission time is unknown, so no late penalty was applied",
    "time-in-future": "the submission time is later than the grading time (a wrong clock), so it was not used",
    "past-max-days": "submitted later than late work is accepted",
    "kernel-exit": "a notebook ended itself (exit(), sys.exit(), os._exit()) before its last cell",
    "kernel-crash": "a notebook's kernel crashed (for example a segmentation fault)",
    "missing-package": "a module your code imports is not installed on the grader; a TA will look at it",
    "missing-module": "your code imports a module of your own that is not in the zip (a .py file is probably "
                      "missing), so the cells that need it failed",
    "needs-gpu": "your code needs a GPU the grader did not have; a TA will grade it again on one",
    "needs-mps": "your code uses Apple's MPS device, which the grader does not have; a TA will look at it",
    "colab-only": "your code imports google.colab, which exists only on Colab; a TA will look at it",
    "needs-network": "your code downloads from the internet, which the grader cannot; a TA will look at it",
    "files-not-placed": "some files of your submission were not placed where your code runs (see the message)",
    "process-cap": "your code reached the process limit for a moment; processes or threads it started then failed",
    "processes-left": "your code left processes running after its last cell; they were stopped",
    "output-dropped": ("a cell displayed an output nested deeper than the grader reads (JSON); it was replaced "
                       "by a placeholder and the rest of the notebook ran"),
    "runs-capped": "the submission has more notebooks and scripts than the lab runs per submission; the ones "
                   "over the limit were not run (those the lab's parts name ran first)",
    "submission-time": "the submission's runs used up the total time the lab allows one submission; later runs "
                       "were not started, or were stopped at the time left (the grader's capture and evaluation "
                       "of a trained model included, which then could not be verified)",
    "unconfirmed-evidence": ("the grader could not confirm from what it checked itself (the printed output and "
                             "images, the trained model, the test transform) a figure, a training run, a "
                             "normalization, a model, the dataset of a part, or a printed test accuracy; a TA "
                             "will check it, and this is no finding against the work"),
    "part-from-text": ("a notebook was taken for a part from its text only, because its run recorded no work on the "
                       "part's dataset (or trained on data the grader could not name); its items wait for a TA"),
    "host-budget": ("a notebook's run wrote more than the grader keeps on disk per notebook; its largest files "
                    "(figures first) were not kept, and items that needed them wait for a TA"),
    "mode-collapse": ("a generator's samples show mode collapse (one digit dominates, few digits appear, or the "
                      "samples are near-identical), by the grader's own measurement of the captured generator"),
    "label-ignored": ("a conditional generator's samples are the digit asked for about as often as chance: it "
                      "ignores its label, by the grader's own measurement"),
    "posterior-collapse": ("a VAE's KL term is about zero or no latent unit is active: its decoder ignores z, by the "
                           "grader's own measurement on the test split"),
    "invalid-evidence": ("the grader could not use what it recorded of a notebook (its evidence file did not "
                         "match the grader's schema); the notebook counts as not run until a TA looks at it"),
    **INTAKE_FLAG_TEXT,
}


def render_student(grade: dict, *, evidence: list[dict], reference: dict | None, dataset_stats: dict,
                   problems: list[dict], out_dir: Path, name: str | None = None, pdf: bool = True) -> Path:
    """Writes `out_dir/feedback/<id>.html` and, with `pdf`, `<id>.pdf`; returns the PDF's
    path (the HTML's without `pdf`). Both stand alone: images are embedded as data: URIs."""
    sid = safe_name(grade.get("student_id"))  # never the id itself: it came from a file name
    context = student_context(grade, evidence=evidence, reference=reference, dataset_stats=dataset_stats,
                              problems=problems, name=name)
    folder = Path(out_dir) / "feedback"
    html_path = folder / f"{sid}.html"
    write_text_atomic(html_path, render_template("student.html.j2", context, inline_css=stylesheet_text()))
    if not pdf:
        return html_path
    pdf_path = folder / f"{sid}.pdf"
    write_bytes_atomic(pdf_path, html_to_pdf(render_template("student.html.j2", context, inline_css=None)))
    return pdf_path


def student_context(grade: Mapping, *, evidence: Sequence[Mapping], reference: Mapping | None,
                    dataset_stats: Mapping, problems: Sequence[Mapping], name: str | None) -> dict[str, Any]:
    """Everything the template shows, as plain data (cleaned, capped, numbers or None)."""
    parts = [part_view(p) for p in grade.get("parts") or [] if isinstance(p, Mapping)]
    bonus = part_view(grade["bonus"]) if isinstance(grade.get("bonus"), Mapping) else None
    late = grade.get("late") if isinstance(grade.get("late"), Mapping) else {}
    items = [it for p in parts + ([bonus] if bonus else []) for it in p["items"]]
    counts = {s: sum(1 for it in items if it["status"] == s) for s in ("pass", "partial", "fail", "error", "manual")}
    earned = sum(p["points"] or 0 for p in parts) + ((bonus or {}).get("points") or 0)
    ref_parts = (reference or {}).get("parts") if isinstance((reference or {}).get("parts"), Mapping) else {}
    return {
        "student": {"id": clean(grade.get("student_id"), 100), "name": clean(name, 100) if name else "",
                    "lab": clean(grade.get("lab"), 60)},
        "total": num(grade.get("total")), "max": num(grade.get("max")),
        "fraction": _fraction(grade.get("total"), grade.get("max")),
        "percent": (num(grade.get("total")) or 0) / num(grade.get("max")) if num(grade.get("max")) else None,
        "earned": earned,
        "parts": parts, "bonus": bonus, "item_counts": counts,
        "late": {"minutes": num(late.get("minutes_late")) or 0, "days": num(late.get("days_late")) or 0,
                 "penalty": num(late.get("penalty_points")) or 0, "source": clean(late.get("source"), 60)},
        # similar-to:<id> is for the TA alone: it names another student, and it is no finding by itself
        "flags": [{"code": clean(f, 60), "text": FLAG_TEXT.get(str(f), "")} for f in grade.get("flags") or []
                  if not str(f).startswith("similar-to:")][:20],
        "grader_error": clean(grade.get("error"), 500),
        "comments": [{"part": p["title"], "item": it["title"], "comment": it["comment"]}
                     for p in parts + ([bonus] if bonus else []) for it in p["items"] if it["comment"]],
        "problems": [{"code": clean(p.get("code"), 60), "message": clean(p.get("message"), 600),
                      "path": clean(p.get("path"), 300)} for p in problems[:20] if isinstance(p, Mapping)],
        "notebooks": [notebook_view(ev, ref_parts or {}, dataset_stats or {})
                      for ev in evidence[:MAX_NOTEBOOKS] if isinstance(ev, Mapping)],
        "sources": _sources(grade.get("sources")),
        "source_rule": RULE,
        "provenance": _provenance((reference or {}).get("provenance")),
    }


def _cells(span: object) -> str:
    """`cells 8–14`: a section's first and last cell, counted from 1 as they appear in the notebook."""
    ends = [num(x) for x in span] if isinstance(span, list) and len(span) == 2 else []
    return f"cells {int(ends[0]) + 1}–{int(ends[1]) + 1}" if len(ends) == 2 and None not in ends else ""


def _sources(sources: object) -> list[dict[str, Any]]:
    """Which notebook (and cells) each part was graded on, and the candidates left out."""
    rows = []
    for pid, s in (sources.items() if isinstance(sources, Mapping) else ()):
        if not isinstance(s, Mapping):
            continue
        span = s.get("span") if isinstance(s.get("span"), list) and len(s["span"]) == 2 else None
        rows.append({"part": clean(s.get("title") or pid, 200), "notebook": clean(s.get("notebook"), 200),
                     "cells": _cells(span),
                     "section": clean(s.get("section_title"), 200), "why": clean(s.get("why"), 600),
                     "ignored": [clean(ig.get("reason"), 800) for ig in s.get("ignored") or []
                                 if isinstance(ig, Mapping)][:MAX_ROWS]})
    return rows


def part_view(part: Mapping) -> dict[str, Any]:
    items = []
    for it in part.get("items") or []:
        if not isinstance(it, Mapping):
            continue
        # `evidence` is left out on purpose: for a manual item it holds the TA's hint.
        items.append({
            "id": clean(it.get("id"), 80), "title": clean(it.get("title") or it.get("id"), 200),
            "status": status_of(it.get("status")), "points": num(it.get("points")), "max": num(it.get("max")),
            "message": clean(it.get("message"), 1500), "overridden": bool(it.get("overridden")),
            "comment": clean(it.get("comment"), 1000),
        })
    return {"id": clean(part.get("id"), 80), "title": clean(part.get("title") or part.get("id"), 200),
            "points": num(part.get("points")), "max": num(part.get("max")),
            "fraction": _fraction(part.get("points"), part.get("max")), "items": items}


# --------------------------------------------------------------------------- one notebook


def notebook_view(ev: Mapping, ref_parts: Mapping, stats: Mapping) -> dict[str, Any]:
    metrics = ev.get("metrics") if isinstance(ev.get("metrics"), Mapping) else {}
    dataset = metrics.get("dataset") or ev.get("dataset")
    part_id, ref = _reference_part(ev, dataset, ref_parts)
    summary = ref.get("summary") if isinstance(ref.get("summary"), Mapping) else {}
    if "test_accuracy" not in summary:
        # e.g. the LR study's part holds only its configurations: compare the metrics with
        # the part trained on the same dataset.
        other = _reference_part({}, dataset, ref_parts)[1].get("summary")
        measured = {**(other if isinstance(other, Mapping) else {}), **summary}
    else:
        measured = summary
    verified = ev.get("verified") if isinstance(ev.get("verified"), Mapping) else {}
    optimizers = [o for o in ev.get("optimizers") or [] if isinstance(o, Mapping)]
    section = ev.get("section") if isinstance(ev.get("section"), Mapping) else {}
    span = section.get("span") if isinstance(section.get("span"), list) else []
    view = {
        "path": clean(ev.get("path"), 200), "mode": clean(ev.get("mode"), 20),
        "section": {"title": clean(section.get("title"), 200), "cells": _cells(span)} if section else None,
        "graded_for": [clean(t, 200) for t in ev.get("graded_for") or []][:MAX_ROWS],
        "not_graded": [clean(r, 600) for r in ev.get("not_graded") or []][:MAX_ROWS],
        "status": status_of(ev.get("status"), RUN_STATUSES, "not-run"),
        "reason": clean(ev.get("reason"), 500), "duration_s": num(ev.get("duration_s")),
        "dataset": clean(dataset, 40),
        "part": {"id": clean(part_id, 40), "title": clean(ref.get("title"), 200)} if part_id else None,
        "accuracy": _gauge(metrics.get("test_accuracy"), measured.get("test_accuracy"), axis_max=1.0),
        "loss": _gauge(metrics.get("test_loss"), measured.get("test_loss"), axis_max=None),
        "per_class": _per_class(metrics.get("per_class_accuracy"), measured.get("per_class_accuracy"),
                                verified.get("per_class_accuracy")),
        # a generative lab's models are measured by the table of their own (generative_view): a
        # classifier's test accuracy that could not be checked, and the classifier runs' table
        # (test accuracy per run; a GAN's D and G are two "runs"), say nothing about them
        "integrity": None if _measured_generative(ev) and "test_accuracy" not in verified
        else _integrity(metrics, verified),
        "figures": figures_view(ev),
        "normalization": _normalization(ev.get("normalization"), stats),
        "models": [{"cls": clean(m.get("class"), 80), "outputs": num(m.get("num_outputs")),
                    "parameters": num(m.get("parameters"))}
                   for m in (ev.get("models") or [])[:MAX_ROWS] if isinstance(m, Mapping)],
        "optimizers": _optimizers(optimizers, ev.get("schedulers")),
        "curves": _curves(metrics.get("curves"), optimizers, study=bool(summary.get("configs"))),
        "reference_configs": _configs(summary),
        # optional parts (grader.evidence_model), shown only when the evidence has them
        "named_metrics": named_metrics(metrics), "runs": None if _measured_generative(ev) else runs_view(ev.get("runs"), ref_parts), "samples": sample_figures(ev),
        "generative": generative_view(ev, ref_parts, part_id),
        **_errors(ev.get("errors")),
    }
    if view["runs"] and view["runs"]["exercises"]:
        # a lab comparing runs by exercise (Lab 4A/4B) charts each run's curves under its name;
        # the notebook's printed curves drawn as one series would mix the runs
        view["curves"] = None
    return view


def _reference_part(ev: Mapping, dataset: object, ref_parts: Mapping) -> tuple[str | None, Mapping]:
    """The reference part a notebook is compared with: named by the evidence, else by the
    file name (lab1-3.ipynb), else the first part on the same dataset with accuracies."""
    if isinstance(ev.get("part"), str) and isinstance(ref_parts.get(ev["part"]), Mapping):
        return ev["part"], ref_parts[ev["part"]]
    stem = re.sub(r"[^a-z0-9]+", "-", Path(str(ev.get("path") or "")).stem.lower())
    for pid, part in ref_parts.items():
        if isinstance(part, Mapping) and re.sub(r"[^a-z0-9]+", "-", str(pid).lower()) in stem:
            return pid, part
    for pid, part in ref_parts.items():
        summary = part.get("summary") if isinstance(part, Mapping) else None
        if part.get("dataset") == dataset and isinstance(summary, Mapping) and "test_accuracy" in summary:
            return pid, part
    return None, {}


def _gauge(value: object, ref: object, *, axis_max: float | None) -> dict[str, Any] | None:
    """A value on an axis with the reference band: positions are percentages of the axis."""
    value = num(value)
    ref = ref if isinstance(ref, Mapping) else {}
    mean, std = num(ref.get("mean")), num(ref.get("std"))
    lo, hi = num(ref.get("min")), num(ref.get("max"))
    if value is None and mean is None:
        return None
    if lo is None or hi is None:
        lo, hi = (mean - 2 * (std or 0), mean + 2 * (std or 0)) if mean is not None else (None, None)
        band_label = "mean ± 2 std"
    else:
        band_label = "range of the reference runs"
    if axis_max is None:
        top = max(x for x in (value, hi, mean, 1e-9) if x is not None)
        axis_max = _nice_ceiling(top * 1.2)

    def pos(x: float | None) -> float | None:
        return None if x is None else round(100 * min(max(x / axis_max, 0.0), 1.0), 2)

    return {"value": value, "mean": mean, "std": std, "lo": lo, "hi": hi, "n": num(ref.get("n")),
            "axis_max": axis_max, "value_pos": pos(value), "mean_pos": pos(mean), "lo_pos": pos(lo),
            "hi_pos": pos(hi), "band_label": band_label}


def _nice_ceiling(x: float) -> float:
    step = 10 ** (len(str(int(x))) - 1) if x >= 1 else 0.1
    for mult in (1, 2, 2.5, 5, 10):
        if step * mult >= x:
            return step * mult
    return x


def _per_class(student: object, ref: object, verified: object) -> dict[str, Any] | None:
    student = student if isinstance(student, Mapping) else {}
    ref = ref if isinstance(ref, Mapping) else {}
    verified = verified if isinstance(verified, Mapping) else {}
    if not student:
        return None
    names = list(ref) + [c for c in student if c not in ref]
    rows = []
    for c in names[:MAX_CLASSES]:
        r = ref.get(c) if isinstance(ref.get(c), Mapping) else {}
        you, mean, std = num(student.get(c)), num(r.get("mean")), num(r.get("std"))
        diff = you - mean if you is not None and mean is not None else None
        rows.append({"name": clean(c, 40), "student": you, "ref_mean": mean, "ref_std": std, "diff": diff,
                     "verified": num(verified.get(c)),
                     "low": diff is not None and diff < -max(2 * (std or 0), 0.05)})
    return {"rows": rows, "has_ref": any(r["ref_mean"] is not None for r in rows),
            "has_verified": any(r["verified"] is not None for r in rows),
            "more": max(0, len(names) - MAX_CLASSES),
            "chart": charts.data_uri(charts.per_class_bars(rows)) if len(rows) <= 30 else None}


def _measured_generative(ev: Mapping) -> bool:
    """Whether the grader measured generative models of this notebook (evidence["generative"])."""
    gen = ev.get("generative")
    return isinstance(gen, Mapping) and bool(gen.get("measures"))


def _integrity(metrics: Mapping, verified: Mapping) -> dict[str, Any] | None:
    """What the student printed against the grader's own evaluation of their model."""
    if not verified:
        return None
    if "test_accuracy" not in verified and "per_class_accuracy" not in verified:
        return {"reason": clean(verified.get("reason") or "no independent evaluation was possible", 400)}
    printed, measured = num(metrics.get("test_accuracy")), num(verified.get("test_accuracy"))
    diff = printed - measured if printed is not None and measured is not None else None
    worst = None
    pc_p, pc_v = metrics.get("per_class_accuracy"), verified.get("per_class_accuracy")
    if isinstance(pc_p, Mapping) and isinstance(pc_v, Mapping):
        gaps = [(abs(num(pc_p[c]) - num(pc_v[c])), c) for c in pc_p
                if c in pc_v and num(pc_p[c]) is not None and num(pc_v[c]) is not None]
        gap, cls = max(gaps, default=(0.0, ""))
        if gap > 0:
            worst = {"cls": clean(cls, 40), "gap": gap}
    return {"reason": "", "printed": printed, "measured": measured, "diff": diff,
            "differs": diff is not None and abs(diff) > 0.01, "worst_class": worst,
            "images": num(verified.get("test_images")), "transform": clean(verified.get("transform"), 300),
            "agreement": num(verified.get("sample_agreement")),
            # the grader-only hidden split (grader.verify): its accuracy, and whether the gap was flagged
            "hidden": num(verified.get("hidden_accuracy")), "hidden_images": num(verified.get("hidden_n")),
            "hidden_gap": verified.get("hidden_gap_flagged") is True}


def _normalization(calls: object, stats: Mapping) -> list[dict[str, Any]]:
    rows = []
    for n in (calls if isinstance(calls, list) else [])[:MAX_ROWS]:
        if not isinstance(n, Mapping):
            continue
        own = stats.get(n.get("dataset")) if isinstance(stats.get(n.get("dataset")), Mapping) else {}
        mean, std = _vector(n.get("mean")), _vector(n.get("std"))
        want_mean, want_std = _vector(own.get("mean")), _vector(own.get("std"))
        gaps = [abs(a - b) for a, b in zip(mean + std, want_mean + want_std)] \
            if len(mean) == len(want_mean) and len(std) == len(want_std) else []
        rows.append({"dataset": clean(n.get("dataset"), 40), "split": clean(n.get("split"), 20),
                     "cell": num(n.get("cell")), "mean": mean, "std": std,
                     "own_mean": want_mean, "own_std": want_std, "max_gap": max(gaps) if gaps else None})
    return rows


def _vector(values: object) -> list[float]:
    if not isinstance(values, (list, tuple)):
        return []
    out = [num(v) for v in values[:8]]
    return [v for v in out if v is not None]


def _optimizers(optimizers: list[Mapping], schedulers: object) -> list[dict[str, Any]]:
    scheds = [s for s in (schedulers if isinstance(schedulers, list) else []) if isinstance(s, Mapping)]
    rows = []
    for o in optimizers[:MAX_ROWS]:
        mine = [s for s in scheds if o.get("ref") is not None and s.get("optimizer_ref") == o.get("ref")]
        rows.append({"type": clean(o.get("type"), 40), "lr": num(o.get("lr")), "momentum": num(o.get("momentum")),
                     "weight_decay": num(o.get("weight_decay")), "steps": num(o.get("steps")),
                     "schedulers": [_scheduler(s) for s in mine[:3]]})
    linked = {id(s) for o in optimizers for s in scheds if o.get("ref") is not None
              and s.get("optimizer_ref") == o.get("ref")}
    for s in scheds:
        if id(s) not in linked and len(rows) < MAX_ROWS:
            rows.append({"type": "", "lr": None, "momentum": None, "weight_decay": None, "steps": None,
                         "schedulers": [_scheduler(s)]})
    return rows


def _scheduler(s: Mapping) -> dict[str, Any]:
    params = s.get("params") if isinstance(s.get("params"), Mapping) else {}
    shown = ", ".join(f"{clean(k, 30)}={clean(v, 30)}" for k, v in list(params.items())[:6]
                      if k not in ("base_lrs", "last_epoch", "verbose"))
    return {"type": clean(s.get("type"), 40), "params": shown, "steps": num(s.get("steps"))}


def _curves(curves: object, optimizers: list[Mapping], *, study: bool) -> dict[str, Any] | None:
    """The printed training curves. A series whose x restarts (epoch 1, 2, 1, 2, ...) is one
    run per restart; when the runs match the notebook's optimizers they are named by lr."""
    if not isinstance(curves, Mapping) or not curves:
        return None
    lrs = [num(o.get("lr")) for o in optimizers]
    series: dict[str, list[tuple[float, float]]] = {}
    for name, points in list(curves.items())[:MAX_SERIES]:
        pts = [(num(p[0]), num(p[1])) for p in (points if isinstance(points, list) else [])
               if isinstance(p, (list, tuple)) and len(p) == 2]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        runs: list[list[tuple[float, float]]] = []
        for x, y in pts:
            if not runs or x <= runs[-1][-1][0]:
                runs.append([])
            runs[-1].append((x, y))
        by_lr = len(runs) > 1 and len(runs) == len(lrs) and None not in lrs
        for k, run in enumerate(runs[:MAX_SERIES]):
            stride = max(1, len(run) // MAX_POINTS)
            label = clean(name, 40) if len(runs) == 1 else \
                f"{clean(name, 30)} · lr {lrs[k]:g}" if by_lr else f"{clean(name, 30)} · run {k + 1}"
            series[label] = run[::stride]
    if not series:
        return None
    distinct_lrs = {lr for lr in lrs if lr is not None}
    is_study = study or len(distinct_lrs) > 1
    return {"study": is_study, "series": len(series),
            "chart": charts.data_uri(charts.curves(series, xlabel="epoch (or step, as printed)",
                                                   ylabel=", ".join(clean(n, 20) for n in list(curves)[:3])))}


def _configs(summary: Mapping) -> list[dict[str, Any]]:
    best = summary.get("best")
    rows = []
    for c in (summary.get("configs") or [])[:MAX_ROWS * 2]:
        if not isinstance(c, Mapping):
            continue
        acc = c.get("test_accuracy") if isinstance(c.get("test_accuracy"), Mapping) else {}
        rows.append({"name": clean(c.get("name"), 60), "lr": num(c.get("lr")), "schedule": clean(c.get("schedule"), 80),
                     "mean": num(acc.get("mean")), "std": num(acc.get("std")),
                     "best": best is not None and c.get("name") == best})
    return rows


def _errors(errors: object) -> dict[str, Any]:
    errors = [e for e in (errors if isinstance(errors, list) else []) if isinstance(e, Mapping)]
    out = []
    for e in errors[:MAX_ERRORS]:
        source, source_more = clip_lines(e.get("source"), lines=40)
        trace, trace_more = clip_lines(e.get("traceback"), lines=25, keep="tail")
        out.append({"cell": num(e.get("cell")), "ename": clean(e.get("ename"), 80), "evalue": clean(e.get("evalue"), 500),
                    "source": source, "source_more": source_more, "traceback": trace, "traceback_more": trace_more})
    return {"errors": out, "errors_more": max(0, len(errors) - MAX_ERRORS)}


def _provenance(prov: object) -> dict[str, Any] | None:
    if not isinstance(prov, Mapping):
        return None
    datasets = prov.get("datasets") if isinstance(prov.get("datasets"), Mapping) else {}
    seeds = prov.get("seeds") if isinstance(prov.get("seeds"), list) else []
    return {"device": clean(prov.get("device"), 40), "device_name": clean(prov.get("device_name"), 80),
            "torch": clean(prov.get("torch"), 40), "seeds": ", ".join(clean(s, 12) for s in seeds[:10]),
            "epochs": clean(prov.get("epochs_override"), 20),
            "stand_in": [clean(k, 40) for k, d in datasets.items() if isinstance(d, Mapping) and d.get("synthetic")]}


def _fraction(points: object, maximum: object) -> float | None:
    p, m = num(points), num(maximum)
    return None if p is None or not m else max(0.0, min(1.0, p / m))
