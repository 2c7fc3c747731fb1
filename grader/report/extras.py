"""The feedback's optional blocks for labs beyond classification: metrics printed by name
(ELBO, KL, D/G loss), the training runs of a notebook that trains several, and the generated
samples it drew. Each view is empty when the evidence has no such part, and the template
shows a block only when its view is not empty, so a LAB01 report does not change."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grader.report import charts
from grader.report.figures import THUMB_WIDTH, _thumbnail
from grader.report.text import clean, num

MAX_NAMED = 20
MAX_RUNS = 12
MAX_SAMPLES = 6
MAX_CURVE_POINTS = 400


def named_metrics(metrics: object) -> list[dict[str, Any]]:
    """`metrics.named` as rows {name, value}, in the notebook's order; [] when there are none."""
    named = metrics.get("named") if isinstance(metrics, Mapping) else None
    if not isinstance(named, Mapping):
        return []
    return [{"name": clean(k, 40), "value": num(v)} for k, v in list(named.items())[:MAX_NAMED]]


def runs_view(runs: object) -> dict[str, Any] | None:
    """The notebook's training runs: one row each (name, optimizer, lr, final metrics by
    name) and one chart of their curves; None when the evidence has no runs."""
    rows, series = [], {}
    for run in (runs if isinstance(runs, list) else [])[:MAX_RUNS]:
        if not isinstance(run, Mapping):
            continue
        name = clean(run.get("name"), 40)
        metrics = run.get("metrics") if isinstance(run.get("metrics"), Mapping) else {}
        rows.append({"name": name, "optimizer": clean(run.get("optimizer"), 40), "lr": num(run.get("lr")),
                     "metrics": [{"name": clean(k, 30), "value": num(v)} for k, v in list(metrics.items())[:8]]})
        curves = run.get("curves") if isinstance(run.get("curves"), Mapping) else {}
        for metric, points in list(curves.items())[:4]:
            pts = [(num(p[0]), num(p[1])) for p in (points if isinstance(points, list) else [])
                   if isinstance(p, (list, tuple)) and len(p) == 2]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if pts:
                stride = max(1, len(pts) // MAX_CURVE_POINTS)
                series[f"{name} · {clean(metric, 20)}"] = pts[::stride]
    if not rows:
        return None
    chart = charts.data_uri(charts.curves(series, xlabel="epoch (or step, as printed)", ylabel="value")) \
        if series else None
    return {"rows": rows, "chart": chart}


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
