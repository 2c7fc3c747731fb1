"""What a TA sees beside one decision of the review queue: the evidence of one grade item or flag.

Everything comes from the graded folder OUT and only from it: each path is resolved and must lie
inside OUT (a figure path a forged evidence.json names, `../../x.png`, is dropped; a submission
whose work folder lies outside OUT is said, not read). Everything read came, at some point, from
a student, so everything is bounded (figures, cells, characters, report sections) and returned as
plain text: the template (`templates/review/_evidence.html.j2`) escapes it.

Most relevant first: the figures and cells the item's evidence pointers name (`lab1-1.ipynb#cell 4`,
where 4 is the cell's `In[4]`), the failing cell of a notebook that stopped, the report's sections
the rubric names, the printed numbers beside the grader's own measurement of the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import yaml

from grader import yamlsafe
from grader.checks.params import DEFAULT_SECTIONS
from grader.intake.problems import FLAG_TEXT as INTAKE_FLAG_TEXT
from grader.outread import inside as _inside
from grader.outread import read_json as _read_json
from grader.outread import work_folder
from grader.report.text import clean, clip_lines, fmt_pct, num
from grader.safename import safe_name

MAX_FIGURES = 12
MAX_CELLS = 6
MAX_OUTPUT_CHARS = 4000
"""Characters kept per cell output (and per traceback, its tail)."""
MAX_OUTPUTS = 4
"""Outputs kept per cell."""
MAX_SOURCE_LINES = 60
MAX_SECTIONS = 3
MAX_SECTION_CHARS = 3000
MAX_REPORT_FILES = 2
MAX_NUMBERS = 30
MAX_MATCHED = 12
"""Printed lines the grader read from one cell, kept per cell."""
MAX_RUN_FOLDERS = 40
MAX_LOG_LINES = 30
MAX_JSON_BYTES = 32 << 20
"""Largest evidence.json or submission.json read (bytes)."""
MAX_NOTEBOOK_BYTES = 64 << 20
"""Largest executed.ipynb read (bytes)."""
MAX_RUBRIC_BYTES = 1 << 20
TOTAL_TOLERANCE = 0.02
"""|printed - measured| test accuracy that still agrees (metrics_verified's default)."""
CLASS_TOLERANCE = 0.05
"""The same for one class (grader.checks.metrics.CLASS_TOLERANCE)."""

_PNG = b"\x89PNG\r\n\x1a\n"
_POINTER = re.compile(r"(?P<file>[^#]+?)(?:#cell (?P<cell>\d+))?")
_FAILED = ("error", "timeout", "killed")
# Which evidence relates to which flag (grader.report.student.FLAG_TEXT names them all).
_NUMBER_FLAGS = {"mismatch", "hidden-gap", "gap-mismatch", "unconfirmed-evidence"}
_CELL_FLAGS = {"notebook-error", "kernel-exit", "kernel-crash", "missing-package", "missing-module", "needs-gpu",
               "needs-mps", "colab-only", "needs-network", "files-not-placed", "process-cap", "output-truncated",
               "output-dropped", "sandbox-limit", "submission-time"}
_RUN_FLAGS = {"sandbox-limit", "submission-time", "runs-capped", "processes-left", "process-cap", "kernel-exit",
              "kernel-crash", "host-budget", "invalid-evidence", "grader-crash"}
_TIME_FLAGS = {"late", "time-unknown", "time-in-future", "past-max-days"}
_SUBMISSION_FLAGS = {"bad-name", "duplicate", "id-conflict", *INTAKE_FLAG_TEXT}


def entry_evidence(out: Path, grade: dict, *, item_id: str | None = None, flag: str | None = None) -> dict:
    """The evidence of one review entry: grade item `item_id` or flag `flag` (exactly one) of
    `grade` (OUT/grades/<id>.json loaded), as JSON-able data for `_evidence.html.j2`.

    Reads only files under `out`; accuracies are fractions 0..1. Always returns every key (see
    EMPTY); what could not be read is said in `notes`. Raises ValueError unless exactly one of
    `item_id`/`flag` is given, KeyError when the grade has no item `item_id`."""
    if (item_id is None) == (flag is None):
        raise ValueError("give exactly one of item_id and flag")
    st = _Student(Path(out), grade)
    ev: dict[str, Any] = {**{k: (list(v) if isinstance(v, list) else v) for k, v in EMPTY.items()},
                          "student_id": clean(grade.get("student_id"), 200), "notes": st.notes}
    if item_id is not None:
        part, item = _find_item(grade, item_id)
        ev["subject"] = {"kind": "item", "id": clean(item_id, 120), "title": clean(item.get("title"), 300),
                         "text": clean(item.get("message"), 2000)}
        report_first = _for_item(st, ev, part, item)
    else:
        from grader.report.student import FLAG_TEXT

        ev["subject"] = {"kind": "flag", "id": clean(flag, 120), "title": clean(flag, 120),
                         "text": clean(FLAG_TEXT.get(str(flag), ""), 2000)}
        _for_flag(st, ev, str(flag))
        report_first = False
    order = ["cells", "numbers", "report", "runs", "late", "submission"]
    if any(n["mismatch"] for n in ev["numbers"]) or flag in _NUMBER_FLAGS:
        order.remove("numbers")
        order.insert(0, "numbers")
    if report_first:
        order.remove("report")
        order.insert(0, "report")
    ev["order"] = order
    return ev


EMPTY: dict[str, Any] = {
    "student_id": "", "subject": None, "pointers": [], "figures": [], "figures_from": "", "figures_more": 0,
    "cells": [], "cells_more": 0, "report": [], "report_files": [], "numbers": [], "runs": [], "late": None,
    "submission": None, "notes": [], "order": [],
}
"""Every key entry_evidence returns, with its value when there is nothing to show."""


class _Run:
    """One notebook's (or script's) run folder: OUT/runs/<student>/<folder>/."""

    def __init__(self, folder: str, path: Path, ev: dict) -> None:
        self.folder, self.dir, self.ev = folder, path, ev
        self.name = clean(ev.get("path") or folder, 200)
        self.base = PurePosixPath(self.name).name
        self._nb: dict | None | bool = False

    def notebook(self, notes: list[str], work: Path | None = None) -> dict | None:
        """executed.ipynb as JSON (in saved mode, where nothing ran, the student's own notebook
        under `work`, the submission's files in OUT), None (said once in `notes`) when missing or
        unreadable."""
        if self._nb is False:
            nb = _read_json(self.dir / "executed.ipynb", MAX_NOTEBOOK_BYTES)
            saved = self.ev.get("mode") == "saved" and work is not None
            own = _inside(work, work / self.name) if saved else None  # type: ignore[operator]
            if nb is None and own is not None:
                nb = _read_json(own, MAX_NOTEBOOK_BYTES)
            if nb is None:
                notes.append(f"{self.name}: the notebook as the student saved it (graded in saved mode) could not be "
                             "read, so its cells cannot be shown." if saved else
                             f"{self.name}: its executed notebook (executed.ipynb) is missing or could not be "
                             "read, so its cells cannot be shown.")
            self._nb = nb
        return self._nb if isinstance(self._nb, dict) else None


class _Student:
    def __init__(self, out: Path, grade: Mapping) -> None:
        self.out = out.resolve()
        self.grade = grade
        self.notes: list[str] = []
        self.root = self.out / "runs" / safe_name(grade.get("student_id"))
        self.runs: list[_Run] = []
        self.submission: dict = {}
        root = _inside(self.out, self.root)
        if root is None or not root.is_dir():
            self.notes.append("No run folder of this student was found under OUT/runs.")
            self.root_ok = False
            return
        self.root, self.root_ok = root, True
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if len(folders) > MAX_RUN_FOLDERS:
            self.notes.append(f"Only the first {MAX_RUN_FOLDERS} of {len(folders)} run folders were read.")
        for p in folders[:MAX_RUN_FOLDERS]:
            d = _inside(root, p)
            ev = _read_json(d / "evidence.json", MAX_JSON_BYTES) if d else None
            if isinstance(ev, dict):
                self.runs.append(_Run(p.name, d, ev))  # type: ignore[arg-type]
        sub = _read_json(root / "submission.json", MAX_JSON_BYTES)
        self.submission = sub if isinstance(sub, dict) else {}

    def work(self) -> tuple[Path | None, bool]:
        """grader.outread.work_folder of this submission."""
        return work_folder(self.out, self.submission, self.grade.get("student_id"))

    def run_named(self, name: str) -> _Run | None:
        """The run of notebook `name` (a path in the submission, or its file name as pointers give it)."""
        return next((r for r in self.runs if r.name == name), None) or \
            next((r for r in self.runs if r.base == PurePosixPath(name).name), None)

    def part_runs(self, part_id: str) -> list[_Run]:
        src = (self.grade.get("sources") or {}).get(part_id) if isinstance(self.grade.get("sources"), Mapping) else None
        nb = src.get("notebook") if isinstance(src, Mapping) else None
        run = self.run_named(str(nb)) if nb else None
        return [run] if run else []


def _find_item(grade: Mapping, item_id: str) -> tuple[dict, dict]:
    parts = [p for p in (grade.get("parts") or []) if isinstance(p, dict)]
    if isinstance(grade.get("bonus"), dict):
        parts.append(grade["bonus"])
    for part in parts:
        for item in part.get("items") or []:
            if isinstance(item, dict) and item.get("id") == item_id:
                return part, item
    raise KeyError(f"the grade of {grade.get('student_id')!r} has no item {item_id!r}")


# --- an item ---------------------------------------------------------------------------------


def _for_item(st: _Student, ev: dict, part: Mapping, item: Mapping) -> bool:
    """Fills `ev` for the item; True when its report is what the TA reads first."""
    pointers = [p for p in (item.get("evidence") or []) if isinstance(p, str)][:20]
    ev["pointers"] = [clean(p, 600) for p in pointers]
    cited_cells: list[tuple[_Run, int]] = []
    cited_runs: list[_Run] = []
    cited_reports: list[str] = []
    report_paths = {str(f.get("path")) for f in _report_files(st)}
    for p in pointers:
        m = _POINTER.fullmatch(p.strip())
        if p.startswith("TA hint") or not m:
            continue
        run = st.run_named(m["file"])
        if run is not None:
            cited_runs.append(run)
            if m["cell"]:
                cited_cells.append((run, int(m["cell"])))
        elif m["file"] in report_paths:
            cited_reports.append(m["file"])
    relevant = list(dict.fromkeys([*cited_runs, *st.part_runs(str(part.get("id")))]))
    _figures(st, ev, cited_cells, cited_runs, relevant)
    cells = [_cell(st, run, n, "cited") for run, n in cited_cells]
    cells += _failed_cells(st, relevant)
    _keep_cells(ev, cells)
    ev["numbers"] = _numbers(relevant)
    ev["runs"] = _runs(st, [r for r in relevant if r.ev.get("status") != "ok"], logs=True)
    sections = _item_sections(st, str(item.get("id")))
    if sections is not None or cited_reports or item.get("status") == "manual":
        _report(st, ev, sections or [], prefer=cited_reports)
    return bool(ev["report"]) and (sections is not None or bool(cited_reports))


def _item_sections(st: _Student, item_id: str) -> list[str] | None:
    """The report sections the rubric's item (or its TA hint) asks for: None when it names no
    report_sections check, the lab's (settings.json) sections when the check names none."""
    rubric = _read_yaml(st.out / "rubric.yaml")
    parts = list(rubric.get("parts") or []) if isinstance(rubric, dict) else []
    if isinstance(rubric, dict) and isinstance(rubric.get("bonus"), dict):
        parts.append(rubric["bonus"])
    for part in parts:
        for it in (part.get("items") or []) if isinstance(part, dict) else []:
            if not isinstance(it, dict) or it.get("id") != item_id:
                continue
            for how in (it, it.get("hint")):
                if isinstance(how, dict) and how.get("check") == "report_sections":
                    params = how.get("params") if isinstance(how.get("params"), dict) else {}
                    named = params.get("sections")
                    if isinstance(named, list) and named:
                        return [clean(s, 120) for s in named[:10]]
                    return _lab_sections(st)
    return None


def _lab_sections(st: _Student) -> list[str]:
    """The lab's report sections (OUT/settings.json), the handout's when it names none."""
    settings = _read_json(st.out / "settings.json", MAX_JSON_BYTES)
    lab = settings.get("report_sections") if isinstance(settings, dict) else None
    named = [clean(s, 120) for s in lab[:10] if isinstance(s, str)] if isinstance(lab, list) else []
    return named or list(DEFAULT_SECTIONS)


def _read_yaml(path: Path) -> Any:
    try:
        if not path.is_file() or path.stat().st_size > MAX_RUBRIC_BYTES:
            return None
        return yamlsafe.load(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, yaml.YAMLError):
        return None


# --- a flag ----------------------------------------------------------------------------------


def _for_flag(st: _Student, ev: dict, flag: str) -> None:
    if flag in _NUMBER_FLAGS:
        ev["numbers"] = _numbers(st.runs)
    if flag in _CELL_FLAGS:
        _keep_cells(ev, _failed_cells(st, st.runs, truncated=flag == "output-truncated"))
    if flag in _RUN_FLAGS:
        ev["runs"] = _runs(st, [r for r in st.runs if r.ev.get("status") != "ok" or r.ev.get("notes")], logs=True)
    if flag in _TIME_FLAGS:
        late = st.grade.get("late") if isinstance(st.grade.get("late"), Mapping) else {}
        ev["late"] = {"days_late": num(late.get("days_late")), "minutes_late": num(late.get("minutes_late")),
                      "penalty_points": num(late.get("penalty_points")), "source": clean(late.get("source"), 80),
                      "submitted_at": clean(st.grade.get("submitted_at") or st.submission.get("submitted_at"), 80),
                      "submitted_at_source": clean(st.grade.get("submitted_at_source")
                                                   or st.submission.get("submitted_at_source"), 80)}
    if flag in ("unreadable-figure", "unconfirmed-evidence"):
        _figures(st, ev, [], [], [])
    sub = st.submission
    problems = [p for p in (sub.get("problems") or st.grade.get("problems") or []) if isinstance(p, Mapping)]
    mine = [p for p in problems if flag in (p.get("flag"), p.get("code"))]
    if mine or flag in _SUBMISSION_FLAGS:
        ev["submission"] = {
            "problems": [{"code": clean(p.get("code"), 60), "message": clean(p.get("message"), 1000),
                          "path": clean(p.get("path"), 300)} for p in (mine or problems)[:10]],
            # the uploaded file's name only: where it lay is outside OUT
            "source_name": clean(PurePosixPath(str(sub.get("source") or "")).name, 300),
            "claimed_id": clean(sub.get("claimed_id"), 200),
            "duplicates": [clean(PurePosixPath(str(d)).name, 300) for d in (sub.get("duplicates") or [])[:10]],
            "stripped_prefix": clean(sub.get("stripped_prefix"), 300),
            "lms_participant_id": clean(sub.get("lms_participant_id"), 100),
        }


# --- figures ---------------------------------------------------------------------------------


def _figures(st: _Student, ev: dict, cells: list[tuple[_Run, int]], runs: list[_Run], part: list[_Run]) -> None:
    """The cited cells' figures, else the cited notebooks', else the part's, else all of the student's."""
    wanted = {(r.folder, n) for r, n in cells}
    tiers = [("cited cells", [(r, f) for r in dict.fromkeys(r for r, _ in cells) for f in _figs(r)
                              if (r.folder, _int(f.get("cell"))) in wanted]),
             ("cited notebooks", [(r, f) for r in runs for f in _figs(r)]),
             ("part's notebook", [(r, f) for r in part for f in _figs(r)]),
             ("student's notebooks", [(r, f) for r in st.runs for f in _figs(r)])]
    for label, found in tiers:
        shown = [x for x in (_figure(st, r, f) for r, f in found) if x is not None]
        if shown:
            ev["figures"], ev["figures_more"], ev["figures_from"] = shown[:MAX_FIGURES], \
                max(0, len(shown) - MAX_FIGURES), label
            return


def _figs(run: _Run) -> list[Mapping]:
    figs = run.ev.get("figures")
    return [f for f in figs if isinstance(f, Mapping)][:200] if isinstance(figs, list) else []


def _figure(st: _Student, run: _Run, fig: Mapping) -> dict | None:
    """The figure as the template shows it, or None unless its PNG lies inside the run's folder."""
    png = fig.get("png")
    if not isinstance(png, str) or not png or "\x00" in png:
        return None
    path = _inside(run.dir, run.dir / png)
    if path is None or path.suffix.lower() != ".png" or not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG:
                return None
    except OSError:
        return None
    rel = path.relative_to(st.root).as_posix()
    return {"notebook": run.name, "cell": _int(fig.get("cell")), "kind": clean(fig.get("kind") or "other", 20),
            "title": clean(fig.get("title"), 120),
            "subjects": [clean(s, 60) for s in (fig.get("subjects") or [])[:12] if isinstance(s, str)],
            "path": rel, "url_path": "/".join(quote(seg, safe="") for seg in rel.split("/"))}


def _int(value: object) -> int | None:
    x = num(value)
    return int(x) if x is not None else None


# --- cells -----------------------------------------------------------------------------------


def _keep_cells(ev: dict, cells: list[dict]) -> None:
    merged: dict[tuple[str, int | None, str], dict] = {}
    for c in cells:
        key = (c["notebook"], c["cell"], "" if c["cell"] is not None else c["why"])
        if key in merged:
            old = merged[key]
            old["error"] = old["error"] or c["error"]
            old["why"] = old["why"] if old["why"] == "cited" else c["why"]
        else:
            merged[key] = c
    kept = list(merged.values())
    ev["cells"], ev["cells_more"] = kept[:MAX_CELLS], max(0, len(kept) - MAX_CELLS)


def _code_cell(nb: dict | None, *, count: int | None = None, index: int | None = None) -> Mapping | None:
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        return None
    if index is not None:
        c = cells[index] if 0 <= index < len(cells) else None
        return c if isinstance(c, Mapping) else None
    return next((c for c in cells if isinstance(c, Mapping) and c.get("cell_type") == "code"
                 and c.get("execution_count") == count), None)


def _text(value: object) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value[:10_000])
    return "" if value is None else str(value)


def _clip(text: str) -> tuple[str, int]:
    """At most MAX_OUTPUT_CHARS characters of cleaned text, and how many were left out."""
    text = clean(text, 400_000)
    return (text, 0) if len(text) <= MAX_OUTPUT_CHARS else (text[:MAX_OUTPUT_CHARS], len(text) - MAX_OUTPUT_CHARS)


def _cell(st: _Student, run: _Run, count: int | None, why: str, *, index: int | None = None,
          error: Mapping | None = None, reason: str = "") -> dict:
    nb = run.notebook(st.notes, st.work()[0])
    cell = _code_cell(nb, count=count, index=index) if nb is not None else None
    source = _text(cell.get("source")) if cell is not None else (str(error.get("source") or "") if error else "")
    src, src_more = clip_lines(source, lines=MAX_SOURCE_LINES, width=300)
    outputs, err = [], None
    for o in ((cell.get("outputs") or []) if cell is not None else [])[:50]:
        if not isinstance(o, Mapping):
            continue
        kind = o.get("output_type")
        if kind == "error":
            err = err or {"ename": o.get("ename"), "evalue": o.get("evalue"), "traceback": _tb(o.get("traceback"))}
            continue
        if kind == "stream":
            text = _text(o.get("text"))
        elif kind in ("execute_result", "display_data"):
            data = o.get("data") if isinstance(o.get("data"), Mapping) else {}
            text = _text(data.get("text/plain")) if "text/plain" in data else ""
            if not text and "image/png" in data:
                text = "[an image]"
        else:
            continue
        if text and len(outputs) < MAX_OUTPUTS:
            shown, more = _clip(text)
            outputs.append({"kind": clean(o.get("name") or kind, 20), "text": shown, "more": more})
    if error is not None:  # the evidence's record: it holds the traceback even where the notebook does not
        err = {"ename": error.get("ename"), "evalue": error.get("evalue"),
               "traceback": _tb(error.get("traceback")) or (err or {}).get("traceback", "")}
    if err is not None:
        trace, _ = clip_lines(err["traceback"], lines=40, width=300, keep="tail")
        err = {"ename": clean(err["ename"], 80), "evalue": clean(err["evalue"], 500),
               "traceback": trace[-MAX_OUTPUT_CHARS:]}
    mentions = (run.ev.get("metrics") or {}).get("mentions") if isinstance(run.ev.get("metrics"), Mapping) else None
    matched = [clean(m.get("raw"), 300) for m in (mentions if isinstance(mentions, list) else [])
               if isinstance(m, Mapping) and count is not None and m.get("cell") == count][:MAX_MATCHED]
    note = ""
    if nb is None:
        note = "the executed notebook is missing or unreadable"
    elif cell is None:
        note = f"no cell In[{count}] was found in the executed notebook" if count is not None else ""
    return {"notebook": run.name, "cell": count, "why": why, "source": src, "source_more": src_more,
            "outputs": outputs, "matched": matched, "error": err, "reason": clean(reason, 500), "note": note}


def _tb(value: object) -> str:
    return clean(_text(value) if not isinstance(value, list) else "\n".join(str(v) for v in value[:500]), 200_000)


def _failed_cells(st: _Student, runs: list[_Run], *, truncated: bool = False) -> list[dict]:
    """The failing cell (with its traceback) of each run that stopped or raised; with
    `truncated`, the cells whose output was cut."""
    out = []
    for run in runs:
        e = run.ev
        errors = [x for x in (e.get("errors") or []) if isinstance(x, Mapping)] if isinstance(e.get("errors"), list) else []
        for x in errors[:3]:
            out.append(_cell(st, run, _int(x.get("cell")), "error", index=_int(x.get("index")), error=x))
        stop = e.get("stop") if isinstance(e.get("stop"), Mapping) else None
        if e.get("status") in _FAILED and stop and _int(stop.get("cell")) is not None:
            out.append(_cell(st, run, _int(stop.get("cell")), "stopped", reason=str(stop.get("reason") or "")))
        if truncated:
            for x in (e.get("output_truncated_cells") or [])[:3]:
                if isinstance(x, Mapping):
                    out.append(_cell(st, run, _int(x.get("cell")), "output cut", index=_int(x.get("index"))))
    return out


# --- runs, numbers ---------------------------------------------------------------------------


def _runs(st: _Student, runs: list[_Run], *, logs: bool) -> list[dict]:
    out = []
    for run in runs[:10]:
        e = run.ev
        tail, more = "", 0
        if logs and e.get("status") != "ok":
            log = _inside(run.dir, run.dir / "log.txt")
            try:
                if log is not None and log.is_file():
                    with open(log, "rb") as f:
                        f.seek(max(0, log.stat().st_size - 64 * 1024))
                        tail, more = clip_lines(f.read().decode("utf-8", "replace"), lines=MAX_LOG_LINES,
                                                width=300, keep="tail")
            except OSError:
                pass
        notes = [clean(n.get("message"), 500) for n in (e.get("notes") or [])[:5] if isinstance(n, Mapping)]
        out.append({"notebook": run.name, "status": clean(e.get("status"), 20), "reason": clean(e.get("reason"), 1000),
                    "notes": [n for n in notes if n], "log_tail": tail[-MAX_OUTPUT_CHARS:], "log_more": more})
    return out


def _row(nb: str, run: str, what: str, printed: object, verified: object, tol: float, why: str = "") -> dict:
    p, v = num(printed), num(verified)
    delta = None if p is None or v is None else p - v
    return {"notebook": nb, "run": run, "what": what, "printed": p, "verified": v, "delta": delta,
            "mismatch": delta is not None and abs(delta) > tol, "why": why,
            "printed_text": fmt_pct(p, 2), "verified_text": fmt_pct(v, 2),
            "delta_text": "–" if delta is None else f"{100 * delta:+.2f} pt"}


def _numbers(runs: list[_Run]) -> list[dict]:
    """Printed vs measured accuracies per notebook and run, the disagreeing ones first."""
    rows: list[dict] = []
    for run in runs:
        e = run.ev
        m = e.get("metrics") if isinstance(e.get("metrics"), Mapping) else {}
        v = e.get("verified") if isinstance(e.get("verified"), Mapping) else {}
        if num(m.get("test_accuracy")) is not None or num(v.get("test_accuracy")) is not None:
            rows.append(_row(run.name, "", "test accuracy", m.get("test_accuracy"), v.get("test_accuracy"),
                             TOTAL_TOLERANCE, clean(v.get("reason"), 300)))
        if num(v.get("hidden_accuracy")) is not None:
            rows.append(_row(run.name, "", "hidden test accuracy (measured only)", None, v.get("hidden_accuracy"),
                             TOTAL_TOLERANCE))
        pc, vc = m.get("per_class_accuracy"), v.get("per_class_accuracy")
        if isinstance(pc, Mapping) and isinstance(vc, Mapping):
            classes = [_row(run.name, "", f"accuracy of {clean(cls, 40)}", pc.get(cls), vc.get(cls), CLASS_TOLERANCE)
                       for cls in list(pc)[:100]]
            if any(r["mismatch"] for r in classes):  # ten agreeing classes would only hide the rest
                rows += classes
        for r in (e.get("runs") or [])[:20] if isinstance(e.get("runs"), list) else []:
            if not isinstance(r, Mapping):
                continue
            chk = r.get("printed_check") if isinstance(r.get("printed_check"), Mapping) else {}
            rv = r.get("verified") if isinstance(r.get("verified"), Mapping) else {}
            measured = chk.get("verified") if num(chk.get("verified")) is not None else rv.get("test_accuracy")
            printed = chk.get("printed")
            if num(printed) is None and num(measured) is None:
                continue
            if num(measured) is None and num(printed) == num(m.get("test_accuracy")) and rows:
                continue  # the notebook's own row above says it
            rows.append(_row(run.name, clean(r.get("name"), 60), "test accuracy", printed, measured, TOTAL_TOLERANCE,
                             clean(chk.get("why") or rv.get("reason"), 300)))
    rows.sort(key=lambda r: not r["mismatch"])
    return rows[:MAX_NUMBERS]


# --- the report ------------------------------------------------------------------------------


def _report_files(st: _Student) -> list[Mapping]:
    files = st.submission.get("files") if isinstance(st.submission.get("files"), list) else []
    return [f for f in files if isinstance(f, Mapping) and f.get("kind") == "report"]


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9\u4e00-\u9fff]+", " ", s.lower().replace("&", " and ")).strip()


def _report(st: _Student, ev: dict, wanted: list[str], *, prefer: list[str]) -> None:
    """The report's sections named `wanted` (each with its page), else its first pages."""
    from grader.reportread import read_report_pages

    files = sorted(_report_files(st), key=lambda f: (str(f.get("path")) not in prefer,
                                                     "report" not in str(f.get("path", "")).lower(),
                                                     num(f.get("bytes")) or 0, str(f.get("path"))))
    ev["report_files"] = [clean(f.get("path"), 300) for f in files[:10]]
    if not files:
        ev["notes"].append("The submission has no report file.")
        return
    work_in, moved = st.work()
    if moved:
        ev["notes"].append(f"The work folder recorded at grading lies outside OUT (OUT was moved or copied): "
                           f"its report is read from work/{work_in.name} in OUT.")  # type: ignore[union-attr]
    if work_in is None:
        ev["notes"].append("The submission's files lie outside OUT, so its report was not read.")
        return
    known = [*wanted, *_lab_sections(st), *DEFAULT_SECTIONS]
    sections: list[dict] = []
    firsts: list[dict] = []
    for f in files[:MAX_REPORT_FILES]:
        rel = str(f.get("path"))
        path = _inside(work_in, work_in / rel)
        if path is None or not path.is_file():
            ev["notes"].append(f"The report {clean(rel, 300)} is not in the submission's folder under OUT.")
            continue
        # no cache on disk: the review writes nothing into OUT but its decisions (an in-process cache holds)
        got = read_report_pages(path)
        if got.status != "ok":
            ev["notes"].append(f"{clean(rel, 300)}: {clean(got.reason, 300)}")
            continue
        name = clean(rel, 300)
        sections += _sections(name, got.pages, wanted, known)
        firsts += [{"file": name, "page": p, "heading": None, **_sect_text(t)} for p, t in got.pages[:MAX_SECTIONS]
                   if t.strip()]
    ev["report"] = (sections or firsts)[:MAX_SECTIONS]


def _sect_text(text: str) -> dict:
    text = clean(text.strip(), 400_000)
    more = max(0, len(text) - MAX_SECTION_CHARS)
    return {"text": text[:MAX_SECTION_CHARS], "more": more}


def _sections(name: str, pages: tuple[tuple[int | None, str], ...], wanted: list[str], known: list[str]) -> list[dict]:
    lines = [(p, line) for p, t in pages for line in t.splitlines()]
    names = [_norm(k) for k in known if _norm(k)]

    def heading(line: str) -> bool:
        if re.match(r"\s{0,3}#{1,6}\s", line):
            return True
        n = re.sub(r"^(?:[0-9ivx]+ )+", "", _norm(line))  # "2. Results", "II Results"
        return bool(n) and len(n) <= 80 and any(n == k or (n.startswith(k) and len(n) <= len(k) + 20) for k in names)

    heads = [i for i, (_, line) in enumerate(lines) if heading(line)]
    out = []
    for want in wanted:
        w = _norm(want)
        start = next((i for i in heads if w and w in _norm(lines[i][1])), None)
        if start is None:
            continue
        end = next((i for i in heads if i > start), len(lines))
        body = "\n".join(line for _, line in lines[start + 1:end][:2000])
        out.append({"file": name, "page": lines[start][0], "heading": clean(lines[start][1].strip(" #"), 200),
                    **_sect_text(body)})
    return out
