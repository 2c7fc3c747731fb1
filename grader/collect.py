"""Assemble evidence.json for one notebook: what ran, what the probe saw, what was printed.

Two modes. `execute`: the run's status and cells, the probe's events and the executed
notebook's outputs. `saved`: only the outputs already stored in the notebook; what only the
probe can know (which parameter a histogram shows, the optimizer actually stepped) is left
unknown (`null` or empty with `"probe": null`), never guessed.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import nbformat

from grader.evidence import read_events, summarize_events
from grader.parsers import parse_notebook

SCHEMA = 1
MAX_SOURCE_LINES = 40


def _cell_source(nb: nbformat.NotebookNode | None, index: int | None) -> str:
    if nb is None or index is None or not 0 <= index < len(nb.cells):
        return ""
    lines = str(nb.cells[index].get("source", "")).splitlines()
    more = len(lines) - MAX_SOURCE_LINES
    return "\n".join(lines[:MAX_SOURCE_LINES]) + (f"\n… {more} more lines" if more > 0 else "")


def _exec_count(nb: nbformat.NotebookNode | None, index: int | None) -> int | None:
    if nb is None or index is None or not 0 <= index < len(nb.cells):
        return None
    return nb.cells[index].get("execution_count")


def _metrics(nb: nbformat.NotebookNode, dataset: str | None) -> dict[str, Any]:
    try:
        parsed = parse_notebook(nb, dataset=dataset)
    except Exception as e:  # noqa: BLE001 - a parser bug must not lose the rest of the evidence
        return {"dataset": dataset, "test_accuracy": None, "test_loss": None, "per_class_accuracy": {},
                "curves": {}, "parse_error": f"{type(e).__name__}: {e}"}
    curves: dict[str, list[list[float]]] = {}
    for p in parsed.curves:
        curves.setdefault(p.series, []).append([p.x, p.value])
    mentions = [{"kind": m.kind, "value": m.value, "class": m.class_name, "cell": m.cell, "raw": m.raw}
                for m in parsed.mentions][-200:]
    return {"dataset": parsed.dataset_guess, "test_accuracy": parsed.test_accuracy,
            "test_loss": parsed.test_loss, "per_class_accuracy": dict(parsed.per_class_accuracy),
            "curves": curves, "mentions": mentions}


def _trained_on(probe: Mapping[str, Any]) -> str | None:
    """The dataset the most training samples came from, else the one most datasets were built of."""
    counts: Counter[str] = Counter()
    for t in probe.get("training") or []:
        if t.get("dataset") and t.get("split") not in ("test", "val"):
            counts[t["dataset"]] += int(t.get("samples") or 0) or 1
    if not counts:
        for d in probe.get("datasets") or []:
            if d.get("dataset"):
                counts[d["dataset"]] += 1
    return counts.most_common(1)[0][0] if counts else None


def _models(probe: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"class": m.get("class"), "num_outputs": m.get("last_linear_out"), "parameters": m.get("params"),
             "names": m.get("names", []), "cell": m.get("cell"), "layers": m.get("layers", [])}
            for m in probe.get("models") or []]


def from_run(run: Any, *, run_dir: Path, events_path: Path | None, figures_dir: Path | None) -> dict[str, Any]:
    """evidence.json of an executed notebook (`run` is an execute.RunResult)."""
    nb = None
    executed = Path(run.executed_notebook_path) if run.executed_notebook_path else None
    if executed and executed.is_file():
        try:
            nb = nbformat.read(executed, as_version=4)
        except Exception:  # noqa: BLE001 - our own file; unreadable means the run died writing it
            nb = None
    probe: dict[str, Any] = {}
    warnings: list[str] = []
    if events_path is not None and events_path.is_file():
        events, warnings = read_events(events_path)
        probe = summarize_events(events, figures_dir=figures_dir)
    dataset = _trained_on(probe)
    metrics = _metrics(nb, dataset) if nb is not None else {"dataset": dataset}
    dataset = dataset or metrics.get("dataset")
    errors = [{"cell": _exec_count(nb, c.index), "index": c.index, "ename": c.ename or c.status,
               "evalue": c.evalue, "traceback": c.traceback, "source": _cell_source(nb, c.index)}
              for c in run.cells if c.status in ("error", "timeout")]
    figures = [dict(f, png=(f"figures/{f['png']}" if f.get("png") else None)) for f in probe.get("figures", [])]
    return {
        "schema": SCHEMA, "path": run.path, "mode": "execute", "status": run.status, "reason": run.reason,
        "duration_s": round(run.duration_s, 3), "startup_s": round(run.startup_s, 3),
        "dataset": dataset, "metrics": metrics, "figures": figures,
        "normalization": probe.get("normalization", []), "datasets": probe.get("datasets", []),
        "dataloaders": probe.get("dataloaders", []), "models": _models(probe),
        "optimizers": probe.get("optimizers", []), "schedulers": probe.get("schedulers", []),
        "evaluations": probe.get("evaluations", []), "training": probe.get("training", []),
        "errors": errors, "cells": {"total": len(run.cells),
                                    "by_status": dict(Counter(c.status for c in run.cells))},
        "figures_dropped": run.figures_dropped, "output_truncated": run.output_truncated,
        "probe": probe.get("probe"), "warnings": warnings[:50],
        "verified": {"reason": "the run was not verified"},
    }


def not_run(rel: str, reason: str) -> dict[str, Any]:
    """Evidence of a file that was not run, saying why."""
    return {"schema": SCHEMA, "path": rel, "mode": "saved", "status": "not-run", "reason": reason,
            "metrics": {}, "figures": [], "errors": [], "probe": None, "verified": {"reason": reason}}


def output_digest(out: Mapping[str, Any]) -> str | None:
    """A digest of what an output shows (text or image), ignoring counters and metadata."""
    kind = out.get("output_type")
    if kind == "stream":
        body = str(out.get("text", ""))
    elif kind in ("display_data", "execute_result"):
        data = out.get("data") or {}
        body = "".join(str(data.get(k, "")) for k in ("image/png", "text/plain", "text/html"))
    else:
        return None
    body = body.strip()
    return hashlib.sha256(body.encode()).hexdigest() if body else None


def handout_digests(paths: list[Path]) -> frozenset[str]:
    """Digests of every output stored in the handout notebooks (the TA's own training log)."""
    found: set[str] = set()
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
                d = output_digest(out)
                if d:
                    found.add(d)
    return frozenset(found)


def from_saved(nb_path: Path, rel: str, *, run_dir: Path, handout: frozenset[str] = frozenset()) -> dict[str, Any]:
    """evidence.json from the outputs stored in a notebook, without running anything.

    Outputs identical to the handout's (the TA's own training log shipped with it) are
    dropped first: they say what the TA's run did, not the student's.
    """
    from grader.nbread import read_notebook

    try:
        nb = read_notebook(nb_path).nb  # lenient, as intake: repairs are reported there
    except Exception as e:  # noqa: BLE001
        return not_run(rel, f"not a readable notebook: {e}")
    copied = 0
    for cell in nb.cells:
        if cell.get("cell_type") == "code" and handout:
            kept = [o for o in cell.get("outputs", []) if output_digest(o) not in handout]
            copied += len(cell.get("outputs", [])) - len(kept)
            cell["outputs"] = kept
    figures, errors = [], []
    fig_dir = run_dir / "figures"
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append({"cell": cell.get("execution_count"), "index": index, "ename": out.get("ename", ""),
                               "evalue": str(out.get("evalue", ""))[:500], "traceback": "",
                               "source": _cell_source(nb, index)})
            png = (out.get("data") or {}).get("image/png") if out.get("output_type") in (
                "display_data", "execute_result") else None
            if png and len(figures) < 200:
                data = base64.b64decode(png if isinstance(png, str) else "".join(png))
                name = f"saved-{hashlib.sha256(data).hexdigest()[:12]}.png"
                fig_dir.mkdir(parents=True, exist_ok=True)
                (fig_dir / name).write_bytes(data)
                # Without the probe the plot's data is unknown: kind and subjects are not guessed.
                figures.append({"cell": cell.get("execution_count"), "kind": None, "subjects": [],
                                "title": None, "png": f"figures/{name}"})
    metrics = _metrics(nb, None)
    reason = (f"{copied} output(s) identical to the handout's were not credited" if copied else "")
    return {
        "schema": SCHEMA, "path": rel, "mode": "saved", "status": "error" if errors else "ok",
        "reason": reason, "handout_outputs_ignored": copied, "dataset": metrics.get("dataset"), "metrics": metrics, "figures": figures,
        "normalization": [], "datasets": [], "dataloaders": [], "models": [], "optimizers": [],
        "schedulers": [], "evaluations": [], "training": [], "errors": errors, "probe": None,
        "verified": {"reason": "saved mode: nothing was run"},
    }
