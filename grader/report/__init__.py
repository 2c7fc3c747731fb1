"""Feedback reports: a PDF (and HTML) per student, the class summary and the gradebook.

The Python here only gathers data (and draws charts); every bit of layout is in the jinja2
templates under `templates/`. Everything a student wrote (file names, messages quoting their
output, cell sources, tracebacks) is autoescaped. One weasyprint font configuration and one
stylesheet are built per process and reused, since they dominate the cost of a small PDF.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from grader.fsutil import write_bytes_atomic, write_text_atomic
from grader.report import charts
from grader.resources import resource_dir

THUMB_WIDTH = 360
MAX_THUMBS = 12
MAX_TRACE_LINES = 30


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda x: "–" if x is None else f"{100 * float(x):.1f} %"
    env.filters["num"] = lambda x, d=2: "–" if x is None else f"{float(x):.{d}f}".rstrip("0").rstrip(".")
    env.filters["vec"] = lambda xs: "–" if not xs else "(" + ", ".join(f"{float(x):.3f}" for x in xs) + ")"
    return env


@functools.lru_cache(maxsize=1)
def _weasy() -> tuple[Any, Any]:
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    fonts = FontConfiguration()
    css = CSS(filename=str(resource_dir("templates") / "style.css"), font_config=fonts)
    return fonts, css


def _pdf(html: str, path: Path) -> None:
    from weasyprint import HTML

    fonts, css = _weasy()
    write_bytes_atomic(path, HTML(string=html, base_url=str(path.parent)).write_pdf(stylesheets=[css],
                                                                                  font_config=fonts))


def _thumb(png: Path) -> str | None:
    """A small copy of a student's figure as a data URI; None when it is not a readable PNG."""
    try:
        from PIL import Image

        with Image.open(png) as im:
            im.thumbnail((THUMB_WIDTH, THUMB_WIDTH))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG", optimize=False)
    except Exception:  # noqa: BLE001 - a broken figure is left out, not fatal
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _clip(text: str | None, lines: int = MAX_TRACE_LINES) -> str:
    rows = (text or "").splitlines()
    return "\n".join(rows[:lines]) + (f"\n… {len(rows) - lines} more lines truncated" if len(rows) > lines else "")


def _ref_part(reference: Mapping | None, dataset: str | None) -> Mapping | None:
    for part in ((reference or {}).get("parts") or {}).values():
        if part.get("dataset") == dataset and "test_accuracy" in (part.get("summary") or {}):
            return part
    return None


def _notebook_view(ev: Mapping, reference: Mapping | None, stats: Mapping) -> dict:
    metrics = ev.get("metrics") or {}
    dataset = ev.get("dataset") or metrics.get("dataset")
    ref = _ref_part(reference, dataset)
    ref_summary = (ref or {}).get("summary") or {}
    per_class = metrics.get("per_class_accuracy") or {}
    classes = list((ref_summary.get("per_class_accuracy") or {}).keys()) or list(per_class)
    run_dir = Path(ev.get("run_dir") or ".")
    thumbs = []
    for f in (ev.get("figures") or []):
        if len(thumbs) >= MAX_THUMBS or not f.get("png"):
            continue
        if f.get("kind") in ("histogram", "line") or f.get("subjects"):
            uri = _thumb(run_dir / f["png"])
            if uri:
                thumbs.append({"uri": uri, "kind": f.get("kind") or "figure", "cell": f.get("cell"),
                               "caption": ", ".join(f.get("subjects") or []) or (f.get("title") or "")})
    verified = ev.get("verified") or {}
    return {
        "path": ev.get("path"), "status": ev.get("status"), "reason": ev.get("reason") or "",
        "duration_s": ev.get("duration_s"), "dataset": dataset, "mode": ev.get("mode"),
        "test_accuracy": metrics.get("test_accuracy"), "test_loss": metrics.get("test_loss"),
        "ref_accuracy": ref_summary.get("test_accuracy"), "ref_loss": ref_summary.get("test_loss"),
        "per_class": [{"name": c, "you": per_class.get(c), "ref": ((ref_summary.get("per_class_accuracy") or {})
                                                                  .get(c) or {}).get("mean")} for c in classes],
        "per_class_chart": charts.per_class_bars(classes, per_class, ref_summary.get("per_class_accuracy"))
        if per_class else None,
        "curves_chart": charts.curves(metrics.get("curves") or {}),
        "thumbs": thumbs,
        "normalization": [{"mean": n.get("mean"), "std": n.get("std"), "dataset": n.get("dataset"),
                           "split": n.get("split"), "expected": stats.get(n.get("dataset"))}
                          for n in ev.get("normalization") or []][:6],
        "optimizers": (ev.get("optimizers") or [])[:8], "schedulers": (ev.get("schedulers") or [])[:8],
        "verified": verified, "errors": [dict(e, source=_clip(e.get("source")), traceback=_clip(e.get("traceback")))
                                         for e in (ev.get("errors") or [])[:5]],
    }


def render_student(grade: dict, *, evidence: list[dict], reference: dict | None, dataset_stats: dict,
                   problems: list[dict], out_dir: Path, name: str | None = None, pdf: bool = True) -> Path:
    """Writes `feedback/<id>.html` (and `.pdf`); returns the PDF path, or the HTML without PDF."""
    sid = grade["student_id"]
    parts = list(grade.get("parts") or []) + ([grade["bonus"]] if grade.get("bonus") else [])
    html = _env().get_template("student.html.j2").render(
        grade=grade, parts=parts, name=name, problems=problems,
        notebooks=[_notebook_view(ev, reference, dataset_stats) for ev in evidence],
        comments=[(p["id"], i) for p in parts for i in p.get("items", []) if i.get("comment")],
        provenance=(reference or {}).get("provenance"))
    folder = out_dir / "feedback"
    write_text_atomic(folder / f"{sid}.html", html)
    if not pdf:
        return folder / f"{sid}.html"
    _pdf(html, folder / f"{sid}.pdf")
    return folder / f"{sid}.pdf"


def _attention(grade: Mapping) -> list[str]:
    reasons = [f for f in grade.get("flags") or [] if f != "late"]
    if grade.get("error"):
        reasons.append("grader error")
    return reasons


def render_summary(grades: list[dict], *, runs: dict[str, list[dict]], out_dir: Path, pdf: bool = True) -> Path:
    """Writes `summary.html` (and `summary.pdf`): distribution, pass rates, run statuses, who to look at."""
    grades = sorted(grades, key=lambda g: g["student_id"])
    items: dict[str, dict] = {}
    for g in grades:
        for part in list(g.get("parts") or []) + ([g["bonus"]] if g.get("bonus") else []):
            for it in part.get("items", []):
                row = items.setdefault(it["id"], {"id": it["id"], "title": it.get("title", ""), "part": part["id"],
                                                  "counts": {}, "n": 0})
                row["counts"][it["status"]] = row["counts"].get(it["status"], 0) + 1
                row["n"] += 1
    statuses: dict[str, int] = {}
    runtime = 0.0
    for evs in runs.values():
        for ev in evs:
            statuses[ev.get("status", "not-run")] = statuses.get(ev.get("status", "not-run"), 0) + 1
            runtime += float(ev.get("duration_s") or 0)
    maximum = grades[0]["max"] if grades else 100
    totals = [g["total"] for g in grades]
    html = _env().get_template("summary.html.j2").render(
        grades=grades, items=list(items.values()), statuses=statuses, runtime_s=runtime,
        histogram=charts.score_histogram(totals, maximum) if grades else None,
        mean=sum(totals) / len(totals) if totals else None, maximum=maximum,
        attention=[(g, _attention(g)) for g in grades if _attention(g)],
        lab=grades[0]["lab"] if grades else "", pdf=pdf)
    write_text_atomic(out_dir / "summary.html", html)
    if pdf:
        _pdf(html, out_dir / "summary.pdf")
    return out_dir / ("summary.pdf" if pdf else "summary.html")


def write_gradebook(grades: list[dict], *, out_dir: Path) -> list[Path]:
    """`grades.csv` (one row per student) and `moodle_grades.csv` for Moodle's grade import.

    In Moodle: Grades → Import → CSV file, upload `moodle_grades.csv`, then map
    "ID number" to the user's *ID number* field, "Grade" to the assignment's grade item and
    "Feedback" to its feedback. `feedback_file` names each student's PDF in `feedback/`.
    """
    grades = sorted(grades, key=lambda g: g["student_id"])
    part_ids = [p["id"] for p in (grades[0].get("parts") or [])] if grades else []
    rows = [["student_id", "total", "max", *part_ids, "bonus", "late_penalty", "flags"]]
    for g in grades:
        points = {p["id"]: p["points"] for p in g.get("parts") or []}
        rows.append([g["student_id"], _n(g["total"]), _n(g["max"]), *[_n(points.get(pid, 0)) for pid in part_ids],
                     _n((g.get("bonus") or {}).get("points", 0)), _n((g.get("late") or {}).get("penalty_points", 0)),
                     " ".join(g.get("flags") or [])])
    moodle = [["ID number", "Grade", "Feedback", "feedback_file"]]
    for g in grades:
        late = (g.get("late") or {}).get("days_late") or 0
        note = f"{_n(g['total'])}/{_n(g['max'])}" + (f", {late} day(s) late" if late else "") + \
            "; see the attached feedback PDF"
        moodle.append([g["student_id"], _n(g["total"]), note, f"feedback/{g['student_id']}.pdf"])
    paths = []
    for name, table in (("grades.csv", rows), ("moodle_grades.csv", moodle)):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(table)
        write_text_atomic(out_dir / name, buf.getvalue())
        paths.append(out_dir / name)
    return paths


def _n(x: Any) -> str:
    return f"{float(x):.2f}".rstrip("0").rstrip(".") if isinstance(x, (int, float)) else str(x)
