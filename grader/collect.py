"""Assemble evidence.json for one notebook: what ran, what the probe saw, what was printed.

Two modes. `execute`: the run's status and cells, the probe's events and the executed
notebook's outputs. `saved`: only the outputs already stored in the notebook. The schema
(grader.evidence_model) is applied when the evidence is written: both modes then have the same
keys, with `None` or empty for what a mode cannot know. What only the
probe can know (the optimizer actually stepped, the datasets built) is left unknown (`null`
or empty with `"probe": null`), never guessed; which parameters a stored histogram shows is
read from the notebook's code (`"attributed": "static"`), and a figure that cannot be read
for sure is marked `"uncertain"` for a TA.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import nbformat

from grader.cellflow import model_names, read_cells
from grader.corroborate import mark_run
from grader.evidence import DataMount, read_events, summarize_events
from grader.evidence_model import SCHEMA_VERSION
from grader.parsers import CLASS_SETS, parse_notebook
from grader.parsers import budget
from grader.parsers.curves import downsample
from grader.parsers.notebook import final_mention
from grader.parsers.lrs import code_lrs, printed_lrs
from grader.parsers.plotcode import CellPlots, analyze_cells
from grader.saved_images import check_svg, decode_image, looks_like_histogram
from grader.sections import add_sections
from grader.storedrun import stored_cells

SCHEMA = SCHEMA_VERSION
"""The evidence schema's version (grader.evidence_model validates it when it is written)."""
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


def _metrics(nb: nbformat.NotebookNode, dataset: str | None,
             classes: list[str] | None = None, *, cut: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The metrics the outputs report; the cells whose output was too long to read whole are
    added to `cut` (as `_truncated_cells` gives them)."""
    try:
        parsed = parse_notebook(nb, dataset=dataset, classes=classes)
    except Exception as e:  # noqa: BLE001 - a parser bug must not lose the rest of the evidence
        return {"dataset": dataset, "test_accuracy": None, "test_loss": None, "per_class_accuracy": {},
                "curves": {}, "parse_error": f"{type(e).__name__}: {e}"}
    if cut is not None:
        cut.extend({"cell": _exec_count(nb, index), "index": index, "omitted_chars": omitted, "kept_chars": None}
                   for index, omitted in parsed.truncated)
    curves: dict[str, list[list[float]]] = {}
    for p in parsed.curves:
        curves.setdefault(p.series, []).append([p.x, p.value])
    curves = {series: downsample(points) for series, points in curves.items()}
    mentions = [{"kind": m.kind, "split": m.split_hint, "value": m.value, "class": m.class_name,
                 "cell": m.cell, "raw": m.raw} for m in parsed.mentions][-200:]
    # Which split each total was labelled with: a validation line stands in for the test only
    # when nothing was labelled test or left unlabelled (checks.metrics says so).
    from_val = {key: m.raw for key in ("test_accuracy", "test_loss")
                if (m := final_mention(parsed.mentions, key)) is not None and m.split_hint == "val"}
    return {"dataset": parsed.dataset_guess, "test_accuracy": parsed.test_accuracy,
            "test_loss": parsed.test_loss, "per_class_accuracy": dict(parsed.per_class_accuracy),
            "curves": curves, "mentions": mentions, "from_validation": from_val, **_budget_hit(nb, parsed)}


def _budget_hit(nb: nbformat.NotebookNode, parsed: Any) -> dict[str, Any]:
    """`parse_budget` when the parser left lines unread (grader.parsers.budget), else nothing."""
    if not parsed.unread:
        return {}
    return {"parse_budget": {
        "lines_unread": sum(n for _, n in parsed.unread),
        "cells": [{"cell": _exec_count(nb, index), "index": index, "lines_unread": n} for index, n in parsed.unread],
        "limits": {"lines_per_cell": budget.CELL_LINES, "chars_per_cell": budget.CELL_CHARS,
                   "lines": budget.TOTAL_LINES, "chars": budget.TOTAL_CHARS}}}


def _classes_of(probe: Mapping[str, Any], dataset: str | None) -> list[str] | None:
    """The class list a dataset object of that name reported about itself (ImageFolder's `classes`)."""
    for d in probe.get("datasets") or []:
        if d.get("dataset") == dataset and d.get("classes"):
            return list(d["classes"])
    return None


def _truncated_cells(nb: nbformat.NotebookNode | None) -> list[dict[str, Any]]:
    """Cells whose output was cut to its cap while running (execute marks them in metadata)."""
    found = []
    for index, cell in enumerate(nb.cells if nb is not None else []):
        cut = (cell.get("metadata", {}).get("dllab") or {}).get("output_truncated")
        if isinstance(cut, dict):
            found.append({"cell": cell.get("execution_count"), "index": index,
                          "omitted_chars": cut.get("omitted_chars"), "kept_chars": cut.get("kept_chars")})
    return found


def _merge_cuts(kept: list[dict[str, Any]], parsed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells cut while running, then those the parser read only in part (one row per cell)."""
    seen = {c["index"] for c in kept}
    return kept + [c for c in parsed if c["index"] not in seen]


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
             "names": m.get("names", []), "cell": m.get("cell"), "layers": m.get("layers", []),
             **({"dims": m["dims"]} if m.get("dims") else {}),
             "ref": m.get("ref"), "via": m.get("via"), "shares": m.get("shares", [])}
            for m in probe.get("models") or []]


def from_run(run: Any, *, run_dir: Path, events_path: Path | None, figures_dir: Path | None,
             mounts: Sequence[DataMount] = ()) -> dict[str, Any]:
    """evidence.json of an executed notebook (`run` is an execute.RunResult); `mounts` are the
    registered datasets the run could read, by which its datasets are named."""
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
        probe = summarize_events(events, figures_dir=figures_dir, mounts=mounts)
    dataset = _trained_on(probe)
    cut: list[dict[str, Any]] = []  # cells the parser read only in part (its own budget)
    metrics = _metrics(nb, dataset, _classes_of(probe, dataset), cut=cut) if nb is not None else {"dataset": dataset}
    # The parser may recognise a dataset the probe could only name by its class (an
    # ImageFolder of Food-11 kept at a path without "food"): the known name is more useful.
    if dataset not in CLASS_SETS and metrics.get("dataset") in CLASS_SETS:
        dataset = metrics["dataset"]
    errors = [{"cell": _exec_count(nb, c.index), "index": c.index, "ename": c.ename or c.status,
               "evalue": c.evalue, "traceback": c.traceback, "source": _cell_source(nb, c.index)}
              for c in run.cells if c.status in ("error", "timeout")]
    figures = [dict(f, png=(f"figures/{f['png']}" if f.get("png") else None)) for f in probe.get("figures", [])]
    ev = {
        "schema_version": SCHEMA, "path": run.path, "mode": "execute", "status": run.status, "reason": run.reason,
        "duration_s": round(run.duration_s, 3), "startup_s": round(run.startup_s, 3),
        "dataset": dataset, "metrics": metrics, "figures": figures,
        "normalization": probe.get("normalization", []), "datasets": probe.get("datasets", []),
        "dataloaders": probe.get("dataloaders", []), "models": _models(probe),
        "optimizers": probe.get("optimizers", []), "schedulers": probe.get("schedulers", []),
        "evaluations": probe.get("evaluations", []), "training": probe.get("training", []),
        "weights_loaded": probe.get("weights_loaded", []),
        "errors": errors, "cells": {"total": len(run.cells),
                                    "by_status": dict(Counter(c.status for c in run.cells))},
        "figures_dropped": run.figures_dropped, "output_truncated": run.output_truncated or bool(cut),
        "output_truncated_cells": _merge_cuts(_truncated_cells(nb), cut),
        "probe": probe.get("probe"), "warnings": warnings[:50],
        "verified": {"reason": "the run was not verified"},
    }
    if nb is not None:
        mark_run(ev, nb)  # what the host captured of the cells the probe's records name
        add_sections(ev, nb, parse=_metrics, cell_status={c.index: (c.status, c.ename) for c in run.cells})
    return ev


def not_run(rel: str, reason: str) -> dict[str, Any]:
    """Evidence of a file that was not run, saying why."""
    return {"schema_version": SCHEMA, "path": rel, "mode": "saved", "status": "not-run", "reason": reason,
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


MAX_SAVED_FIGURES = 200
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
MAX_PIXEL_CHECKS = 60
"""Figures per notebook classified from their pixels (~0.1 s each); later ones stay unclassified."""


def _saved_figures(nb: nbformat.NotebookNode, fig_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The images stored in a notebook, validated and written to `fig_dir`, with what they show.

    Without the probe, a figure is attributed from the code of its cell and of the
    functions that cell calls (`parsers.plotcode`), then from its pixels when the code
    cannot tell (`saved_images.looks_like_histogram`). Subjects read from the code are
    marked `"attributed": "static"`; a figure the grader cannot read for sure is marked
    `"uncertain": true` so that a check leaves it to a TA instead of calling it missing.
    An SVG figure (`%config InlineBackend.figure_format = 'svg'`) is kept without pixels: what
    it shows is read from the code, else it is uncertain. A payload that is not a valid image
    is a figure marked `"unreadable"` (why, in words) and uncertain, plus a warning, never a
    crash: the student saved a figure there, so a check leaves it to a TA rather than calling
    it missing.
    """
    static = analyze_cells([(str(c.get("cell_type")), _source(c)) for c in nb.cells])
    figures: list[dict[str, Any]] = []
    problems: Counter[str] = Counter()
    over = 0
    pixel_checks = [MAX_PIXEL_CHECKS]
    for index, cell in enumerate(nb.cells):
        outputs = cell.get("outputs") if cell.get("cell_type") == "code" else None
        missing = _figure_without_image(cell, outputs)
        if missing is not None and len(figures) < MAX_SAVED_FIGURES:
            problems[f"cell {cell.get('execution_count') or index}: {missing}"] += 1
            figures.append({"cell": cell.get("execution_count"), "index": index, "title": None, "png": None,
                            "kind": None, "subjects": [], "attributed": None, "uncertain": True,
                            "unreadable": missing})
        for out in outputs if isinstance(outputs, list) else []:
            data = out.get("data") if isinstance(out, dict) and out.get("output_type") in (
                "display_data", "execute_result") else None
            mime = next((m for m in _IMAGE_TYPES if isinstance(data, dict) and m in data), None)
            if mime is None:
                continue
            if len(figures) >= MAX_SAVED_FIGURES:
                over += 1
                continue
            where = {"cell": cell.get("execution_count"), "index": index, "title": None}
            if mime == "image/svg+xml":
                png, problem = None, check_svg(data[mime])
            else:
                png, problem = decode_image(data[mime], mime)
            if problem is not None:
                problems[f"cell {cell.get('execution_count') or index}: an image output was skipped: {problem}"] += 1
                figures.append({**where, "png": None, "kind": None, "subjects": [], "attributed": None,
                                "uncertain": True, "unreadable": problem})
                continue
            if png is None:  # SVG: no pixels to keep or classify
                figures.append({**where, "png": None, "format": "svg",
                                **_what_it_shows(static.get(index), None, pixel_checks,
                                                 _LINE_PLOT.search(_source(cell)))})
                continue
            name = f"saved-{hashlib.sha256(png).hexdigest()[:12]}.png"
            fig_dir.mkdir(parents=True, exist_ok=True)
            (fig_dir / name).write_bytes(png)
            figures.append({**where, "png": f"figures/{name}",
                            **_what_it_shows(static.get(index), png, pixel_checks, _LINE_PLOT.search(_source(cell)))})
    warnings = [m if n == 1 else f"{m} ({n} times)" for m, n in problems.most_common(20)]
    if over:
        warnings.append(f"{over} image(s) over the limit of {MAX_SAVED_FIGURES} were not kept")
    return figures, warnings


# matplotlib's text for a figure (`<Figure size 1800x600 with 10 Axes>`), stored without its image
# when the notebook was saved with images stripped or the backend drew nothing inline.
_FIGURE_TEXT = re.compile(r"<(?:Figure|matplotlib\.figure\.Figure) size \d+(?:\.\d+)?x\d+(?:\.\d+)?(?: with \d+ Axes)?>")


def _figure_without_image(cell: Mapping[str, Any], outputs: object) -> str | None:
    """Why a cell shows a figure the grader has no image of, or None.

    Two cases a student meets: a code cell whose outputs hold matplotlib's `<Figure size ...>`
    text but no image (images stripped before saving), and a markdown cell holding a pasted
    image (`![hist.png](attachment:hist.png)`), which no code produced. Either way a figure
    exists that the grader cannot attribute, so checks leave it to a TA, never "not found".
    """
    if cell.get("cell_type") == "markdown":
        attachments = cell.get("attachments")
        if isinstance(attachments, dict) and any(
                isinstance(a, dict) and any(str(m).startswith("image/") for m in a) for a in attachments.values()):
            return "it is an image pasted into a markdown cell, which no code drew"
        return None
    if not isinstance(outputs, list):
        return None
    has_image, text = False, ""
    for out in outputs:
        data = out.get("data") if isinstance(out, dict) else None
        if isinstance(data, dict):
            has_image = has_image or any(m in data for m in _IMAGE_TYPES)
            plain = data.get("text/plain")
            text += "".join(plain) if isinstance(plain, list) else str(plain or "")
        elif isinstance(out, dict) and out.get("output_type") == "stream":
            body = out.get("text")
            text += "".join(body) if isinstance(body, list) else str(body or "")
    found = _FIGURE_TEXT.search(text)
    if has_image or found is None:
        return None
    return f"only matplotlib's text `{found.group(0)}` was saved, not the image"


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(s for s in src if isinstance(s, str)) if isinstance(src, list) else str(src)


# A cell that draws curves: `plt.plot(...)`, `ax.semilogy(...)`, `df.plot(...)`.
_LINE_PLOT = re.compile(r"\.(?:plot|semilogy|semilogx|loglog|errorbar)\s*\(")


def _what_it_shows(plots: CellPlots | None, png: bytes | None, pixel_checks: list[int],
                   lines: object = False) -> dict[str, Any]:
    """kind, subjects and how sure the grader is, for one stored figure of a cell.

    `png` is None for a figure without pixels (SVG): only the code can tell then.
    `pixel_checks` holds how many more figures may be classified from their pixels.
    `lines`: the cell's code draws curves, so a figure that is not a histogram is a line chart
    (kind 'line', as the probe calls one: the learning-rate study's comparison).
    """
    code_hist = plots is not None and plots.hist > 0
    sure = plots is not None and plots.certain
    if code_hist and not plots.other:  # type: ignore[union-attr]
        kind: str | None = "histogram"
    else:
        img = looks_like_histogram(png) if png is not None and pixel_checks[0] > 0 else None
        pixel_checks[0] -= png is not None
        kind = "histogram" if img else ("other" if img is False else None)
    if kind == "histogram":
        return {"kind": kind, "subjects": sorted(plots.subjects) if code_hist else [],  # type: ignore[union-attr]
                "attributed": "static" if code_hist else "image",
                "uncertain": not (sure and code_hist)}
    # Not a histogram, or the pixels cannot say: sure only when the code was read in full
    # (an imported helper or unreadable code may have drawn a histogram the pixels miss).
    if kind == "other":
        uncertain = not sure
    else:
        uncertain = not (sure and not code_hist)
    if lines and not code_hist and kind != "histogram" and (kind == "other" or png is None):
        kind = "line"
    return {"kind": kind, "subjects": [], "attributed": None, "uncertain": uncertain}


def _data_use(nb: nbformat.NotebookNode, stored: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cells whose code trains or evaluates a model on a dataset, read statically (saved
    mode runs nothing): a cell naming a dataset (or reading a loader bound to one) that also
    trains or uses a model. A cell that only copies, lists or opens a dataset's files is not
    one: naming a path is not training on it. One record per (cell, dataset)."""
    facts = read_cells(nb.cells)
    models = model_names(facts)
    trains = {c["index"] for c in stored if c.get("trains")}
    found = []
    for f in facts:
        if f.code and f.datasets and (f.models or f.uses & models or f.index in trains):
            count = nb.cells[f.index].get("execution_count")
            found += [{"index": f.index, "cell": count if isinstance(count, int) else None, "dataset": d}
                      for d in sorted(f.datasets)]
    return found


def _lr_settings(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """The learning rates each code cell prints and sets, since saved mode observes no optimizer."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        texts = [o.get("text") for o in cell.get("outputs") or [] if o.get("output_type") == "stream"]
        printed = printed_lrs(t for t in texts if isinstance(t, str))
        code = code_lrs([_source(cell)])
        if printed or code:
            found.append({"cell": cell.get("execution_count"), "index": index, "printed": printed, "code": code})
    return found


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
    # Student-controlled JSON: anything that is not a cell or an output is left out.
    nb.cells = [c if isinstance(c, dict) else nbformat.v4.new_raw_cell("") for c in nb.get("cells") or []]
    copied = 0
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            outputs = [o for o in cell.get("outputs") or [] if isinstance(o, dict)] \
                if isinstance(cell.get("outputs"), list) else []
            kept = [o for o in outputs if output_digest(o) not in handout] if handout else outputs
            copied += len(outputs) - len(kept)
            cell["outputs"] = kept
    errors = []
    for index, cell in enumerate(nb.cells):
        outputs = cell.get("outputs") if cell.get("cell_type") == "code" else None
        for out in outputs if isinstance(outputs, list) else []:
            if isinstance(out, dict) and out.get("output_type") == "error":
                errors.append({"cell": cell.get("execution_count"), "index": index,
                               "ename": str(out.get("ename", ""))[:200], "evalue": str(out.get("evalue", ""))[:500],
                               "traceback": "", "source": _cell_source(nb, index)})
    figures, warnings = _saved_figures(nb, run_dir / "figures")
    cut: list[dict[str, Any]] = []  # a stored output too long to read whole: its middle was not read
    metrics = _metrics(nb, None, cut=cut)
    lr_settings = _lr_settings(nb)
    reason = (f"{copied} output(s) identical to the handout's were not credited" if copied else "")
    ev = {
        "schema_version": SCHEMA, "path": rel, "mode": "saved", "status": "error" if errors else "ok",
        "reason": reason, "handout_outputs_ignored": copied, "dataset": metrics.get("dataset"), "metrics": metrics, "figures": figures,
        "normalization": [], "datasets": [], "dataloaders": [], "models": [], "optimizers": [],
        "schedulers": [], "evaluations": [], "training": [], "errors": errors, "probe": None,
        "warnings": warnings, "verified": {"reason": "saved mode: nothing was run"},
        "stored_cells": (stored := stored_cells(nb.cells)), "data_use": _data_use(nb, stored),
        "output_truncated": bool(cut), "output_truncated_cells": cut, "lr_settings": lr_settings,
    }
    add_sections(ev, nb, parse=_metrics, cell_status={e["index"]: ("error", e["ename"]) for e in errors})
    return ev
