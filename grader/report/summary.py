"""The class summary for the TAs: `summary.html` and `summary.pdf`."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader.fsutil import write_bytes_atomic, write_text_atomic
from grader.report import charts
from grader.report.pdf import html_to_pdf, stylesheet_text
from grader.report.text import RUN_STATUSES, STATUSES, clean, num, render_template, status_of
from grader.safename import safe_name



def render_summary(grades: list[dict], *, runs: dict[str, list[dict]], out_dir: Path, pdf: bool = True,
                   lateness: Mapping[str, Any] | None = None) -> Path:
    """Writes `out_dir/summary.html` and, with `pdf`, `summary.pdf` (returned; else the HTML).
    Student ids link to `feedback/<id>.pdf` (and `.html`), relative to `out_dir`. `lateness`
    is `lateness.class_view(...)`: the deadline in use, where the times came from, warnings."""
    context = summary_context(grades, runs=runs, pdf=pdf, lateness=lateness)
    out_dir = Path(out_dir)
    context["similarity"] = _similarity(out_dir)
    html_path = out_dir / "summary.html"
    write_text_atomic(html_path, render_template("summary.html.j2", context, inline_css=stylesheet_text()))
    if not pdf:
        return html_path
    write_bytes_atomic(out_dir / "summary.pdf", html_to_pdf(render_template("summary.html.j2", context, inline_css=None)))
    return out_dir / "summary.pdf"


def _similarity(out_dir: Path) -> dict[str, Any] | None:
    """What `dllab similarity` found (OUT/similarity.json), for the summary's link; None if not run."""
    import json

    try:
        data = json.loads((out_dir / "similarity.json").read_text(encoding="utf-8"))
        pairs = [p for p in data.get("pairs") or [] if p.get("flagged")]
        return {"flagged": len(pairs), "compared": int(data.get("pairs_compared") or 0),
                "pairs": [f"{clean(p.get('a'), 40)} · {clean(p.get('b'), 40)}" for p in pairs[:12]]}
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def summary_context(grades: Sequence[Mapping], *, runs: Mapping[str, Sequence[Mapping]], pdf: bool,
                    lateness: Mapping[str, Any] | None = None) -> dict[str, Any]:
    grades = sorted((g for g in grades if isinstance(g, Mapping)), key=lambda g: str(g.get("student_id")))
    part_cols = _part_columns(grades)
    totals = [t for t in (num(g.get("total")) for g in grades) if t is not None]
    maxima = [m for m in (num(g.get("max")) for g in grades) if m]
    maximum = statistics.mode(maxima) if maxima else 100.0
    students, attention = [], []
    for g in grades:
        sid = str(g.get("student_id"))
        evs = [e for e in runs.get(sid) or [] if isinstance(e, Mapping)]
        row = _student_row(g, evs, part_cols)
        students.append(row)
        reasons = attention_reasons(g, evs)
        if reasons:
            attention.append({**row, "reasons": reasons})
    all_runs = [e for sid in runs for e in runs[sid] or [] if isinstance(e, Mapping)]
    return {
        "lab": clean(grades[0].get("lab"), 60) if grades else "",
        "n": len(grades), "maximum": maximum, "pdf_links": pdf,
        "stats": _stats(totals),
        "histogram": charts.data_uri(charts.score_histogram(totals, max_points=maximum)) if totals else None,
        "part_columns": part_cols,
        "part_means": [{"title": c["title"], "max": c["max"],
                        "mean": _mean([r["parts"][i] for r in students if r["parts"][i] is not None])}
                       for i, c in enumerate(part_cols)],
        "items": _item_rates(grades),
        "run_counts": _run_counts(all_runs),
        "runtime": _runtime(runs),
        "students": students,
        "attention": attention,
        "flag_legend": _flag_legend(grades),
        "lateness": _lateness(lateness),
    }


MAX_CUT_CELLS = 5


def attention_reasons(grade: Mapping, evidence: Sequence[Mapping]) -> list[str]:
    """Why a TA should open this student's report; empty when nothing needs a look.
    Manual items carry the check's hint for the TA (the first evidence entry)."""
    # Late work is plain arithmetic; the other flags below are spelled out in detail.
    detailed = {"late", "manual-pending"} | ({"notebook-error", "sandbox-limit"} if evidence else set())
    if any(ev.get("output_truncated_cells") for ev in evidence):
        detailed.add("output-truncated")
    if any(isinstance(f, Mapping) and f.get("unreadable") for ev in evidence for f in ev.get("figures") or []):
        detailed.add("unreadable-figure")
    problems = [p for p in grade.get("problems") or [] if isinstance(p, Mapping)]
    detailed |= {p.get("flag") for p in problems}
    reasons = [clean(f, 60) for f in grade.get("flags") or [] if f not in detailed]
    # What went wrong at intake, in its own words: an encrypted zip is not "no notebook ran".
    reasons += [f"{clean(p.get('flag'), 40)}: {clean(p.get('message'), 300)}" for p in problems[:8]]
    if grade.get("error"):
        reasons.append("grader error: " + clean(grade.get("error"), 200))
    for ev in evidence:
        status = status_of(ev.get("status"), RUN_STATUSES, "not-run")
        if status != "ok":
            why = clean(ev.get("reason"), 120)
            reasons.append(f"{clean(ev.get('path'), 80)}: {status}" + (f" ({why})" if why else ""))
        for cut in (ev.get("output_truncated_cells") or [])[:MAX_CUT_CELLS]:
            if isinstance(cut, Mapping):  # output-truncated, said precisely
                reasons.append(f"{clean(ev.get('path'), 80)}: output of cell {clean(cut.get('cell'), 10)} "
                               f"truncated ({clean(cut.get('omitted_chars'), 12)} characters left out of its "
                               f"middle; its start and end were read)")
        broken = [f for f in ev.get("figures") or [] if isinstance(f, Mapping) and f.get("unreadable")]
        for f in broken[:MAX_CUT_CELLS]:  # unreadable-figure, said precisely
            cell = (f"cell {clean(f.get('cell'), 10)}" if f.get("cell") is not None
                    else f"the notebook's cell {clean((f.get('index') or 0) + 1 if isinstance(f.get('index'), int) else '?', 10)}")
            reasons.append(f"{clean(ev.get('path'), 80)}: the image in {cell} "
                           f"cannot be read ({clean(f.get('unreadable'), 120)}); open the notebook to see it")
    if not evidence:
        reasons.append("no notebook or script ran")
    for part in _parts(grade):
        for it in part.get("items") or []:
            if not isinstance(it, Mapping):
                continue
            if it.get("status") == "manual" and not it.get("overridden"):
                hint = next((clean(e, 200) for e in it.get("evidence") or []
                             if isinstance(e, str) and e.startswith("TA hint")), "")
                reasons.append(f"{clean(it.get('id'), 60)}: to grade by hand" + (f" — {hint}" if hint else ""))
            elif it.get("status") == "error":
                reasons.append(f"{clean(it.get('id'), 60)}: check error: {clean(it.get('message'), 160)}")
    return reasons


def _flag_legend(grades: Sequence[Mapping]) -> list[dict[str, str]]:
    """What each flag present in this class means, for the TA reading the table."""
    from grader.report.student import FLAG_TEXT

    seen = sorted({str(f) for g in grades for f in g.get("flags") or []})
    return [{"flag": clean(f, 40), "text": FLAG_TEXT.get(f, "")} for f in seen]


def _lateness(view: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not view:
        return None
    return {"deadline": clean(view.get("deadline"), 60), "where": clean(view.get("where"), 120),
            "policy": clean(view.get("policy"), 300),
            "sources": [{"text": clean(t, 120), "count": num(n)} for t, n in view.get("sources") or []],
            "warnings": [clean(w, 600) for w in view.get("warnings") or []]}


def _parts(grade: Mapping) -> list[Mapping]:
    parts = [p for p in grade.get("parts") or [] if isinstance(p, Mapping)]
    return parts + ([grade["bonus"]] if isinstance(grade.get("bonus"), Mapping) else [])


def _part_columns(grades: Sequence[Mapping]) -> list[dict[str, Any]]:
    cols: dict[str, dict[str, Any]] = {}
    for g in grades:
        for p in g.get("parts") or []:
            if isinstance(p, Mapping) and p.get("id") not in cols:
                cols[p.get("id")] = {"id": clean(p.get("id"), 40), "title": clean(p.get("title") or p.get("id"), 120),
                                     "max": num(p.get("max"))}
    return list(cols.values())


def _student_row(g: Mapping, evs: Sequence[Mapping], part_cols: Sequence[Mapping]) -> dict[str, Any]:
    sid = clean(g.get("student_id"), 100)
    points = {p.get("id"): num(p.get("points")) for p in g.get("parts") or [] if isinstance(p, Mapping)}
    statuses: dict[str, int] = {}
    for ev in evs:
        s = status_of(ev.get("status"), RUN_STATUSES, "not-run")
        statuses[s] = statuses.get(s, 0) + 1
    total, maximum = num(g.get("total")), num(g.get("max"))
    return {"id": sid, "link": safe_name(g.get("student_id")),
            "total": total, "max": maximum,
            "fraction": None if total is None or not maximum else max(0.0, min(1.0, total / maximum)),
            "parts": [points.get(c["id"]) for c in part_cols],
            "bonus": num((g.get("bonus") or {}).get("points")) if isinstance(g.get("bonus"), Mapping) else None,
            "late": num((g.get("late") or {}).get("penalty_points")) if isinstance(g.get("late"), Mapping) else None,
            "runs": [{"status": s, "count": n} for s, n in sorted(statuses.items())],
            "runtime": sum(num(ev.get("duration_s")) or 0 for ev in evs),
            "flags": [clean(f, 40) for f in g.get("flags") or []][:10]}


def _item_rates(grades: Sequence[Mapping]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for g in grades:
        for part in _parts(g):
            for it in part.get("items") or []:
                if not isinstance(it, Mapping):
                    continue
                row = rows.setdefault(str(it.get("id")), {
                    "id": clean(it.get("id"), 60), "title": clean(it.get("title"), 160),
                    "part": clean(part.get("id"), 40), "n": 0, "counts": dict.fromkeys(STATUSES, 0),
                    "points": 0.0, "max": 0.0})
                row["n"] += 1
                row["counts"][status_of(it.get("status"))] += 1
                row["points"] += num(it.get("points")) or 0
                row["max"] += num(it.get("max")) or 0
    out = []
    for row in rows.values():
        n = row["n"]
        out.append({**row, "pass_rate": row["counts"]["pass"] / n if n else None,
                    "mean_fraction": row["points"] / row["max"] if row["max"] else None,
                    "segments": [{"status": s, "count": c, "width": round(100 * c / n, 2)}
                                 for s, c in row["counts"].items() if c]})
    return out


def _run_counts(evs: Sequence[Mapping]) -> list[dict[str, Any]]:
    counts = dict.fromkeys(RUN_STATUSES, 0)
    for ev in evs:
        counts[status_of(ev.get("status"), RUN_STATUSES, "not-run")] += 1
    return [{"status": s, "count": c} for s, c in counts.items()]


def _runtime(runs: Mapping[str, Sequence[Mapping]]) -> dict[str, Any]:
    rows = [(num(ev.get("duration_s")), clean(sid, 100), clean(ev.get("path"), 80))
            for sid, evs in runs.items() for ev in evs or [] if isinstance(ev, Mapping)]
    rows = [r for r in rows if r[0] is not None]
    durations = sorted(r[0] for r in rows)
    if not durations:
        return {"n": 0}
    return {"n": len(durations), "total": sum(durations), "median": statistics.median(durations),
            "p90": durations[min(len(durations) - 1, int(0.9 * len(durations)))], "max": durations[-1],
            "slowest": [{"seconds": s, "student": sid, "path": p}
                        for s, sid, p in sorted(rows, key=lambda r: -r[0])[:5]]}


def _stats(totals: Sequence[float]) -> dict[str, Any]:
    if not totals:
        return {"n": 0}
    return {"n": len(totals), "mean": statistics.fmean(totals), "median": statistics.median(totals),
            "min": min(totals), "max": max(totals),
            "std": statistics.pstdev(totals) if len(totals) > 1 else 0.0}


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None
