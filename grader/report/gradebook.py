"""The gradebook: `grades.csv` for the TAs and `moodle_grades.csv` for Moodle's grade import.

Importing `moodle_grades.csv` into Moodle (Course → Grades → Import → CSV file):

1. Upload the file; encoding UTF-8, separator comma. The preview shows the columns
   "ID number", "Grade", "Feedback", "Feedback file".
2. "Identify user": *Map from* "ID number", *Map to* "ID number" (the user profile field that
   holds the student id). If your site keeps the student id in the username instead, map to
   "Username".
3. "Grade item mappings": map "Grade" to the lab's grade item and "Feedback" to
   "Feedback: <the same item>"; leave "Feedback file" on "Ignore".
4. Import. A student whose grade could not be computed (a grader error) has an empty Grade,
   which Moodle skips, so a crash never overwrites a grade with 0. So has every grade flagged
   `id-conflict` (one student id claimed by several participants' uploads): a TA decides whose
   it is, so one student's upload never sets a classmate's grade. Such an id has one row,
   with no feedback file: `grades.csv` lists each claimant's grade under its own name
   (`<id>-moodle-<participant>`, `<id>-loose`), with its PDF under that name.

"Feedback file" maps each student to their PDF (`feedback/<id>.pdf`, relative to the output
folder) for uploading by hand or by a script; Moodle's grade import does not carry files.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader.fsutil import write_text_atomic
from grader.report.text import clean, fmt_points, num
from grader.safename import safe_name

MOODLE_COLUMNS = ("ID number", "Grade", "Feedback", "Feedback file")
# Intake (and notebook-choice) problems that cost points, told in Moodle's one-line feedback; the PDF has them all.
_TELL = frozenset({"unsupported-format", "corrupt-archive", "truncated-archive", "empty-submission", "encrypted",
                   "refused-member", "corrupt-member", "file-too-large", "archive-too-large", "too-many-files",
                   "zip-bomb", "nested-too-deep", "unreadable-notebook", "no-notebook", "better-copy-ignored"})


def write_gradebook(grades: list[dict], *, out_dir: Path) -> list[Path]:
    """Writes `grades.csv` (student_id, total, max, one column per part id, bonus,
    late_penalty, flags, problems: one row per student, sorted by id) and `moodle_grades.csv`;
    returns both paths. `problems` holds what went wrong at intake, `flag: message` each."""
    out_dir = Path(out_dir)
    by_id: dict[str, Mapping] = {}
    for g in grades:
        if isinstance(g, Mapping):
            by_id[str(g.get("student_id"))] = g  # the last grade of a student wins
    ordered = [by_id[k] for k in sorted(by_id)]
    part_ids = _part_ids(ordered)
    table = [["student_id", "total", "max", *part_ids, "bonus", "late_penalty", "flags", "problems"]]
    moodle = [list(MOODLE_COLUMNS)]
    conflicted: set[str] = set()
    for g in ordered:
        points = {p.get("id"): p.get("points") for p in g.get("parts") or [] if isinstance(p, Mapping)}
        bonus = g.get("bonus") if isinstance(g.get("bonus"), Mapping) else {}
        late = g.get("late") if isinstance(g.get("late"), Mapping) else {}
        table.append([_cell(str(g.get("student_id"))), _n(g.get("total")), _n(g.get("max")),
                      *[_n(points.get(pid)) for pid in part_ids],
                      _n(bonus.get("points")) if bonus else "", _n(late.get("penalty_points") or 0),
                      _cell(";".join(str(f) for f in g.get("flags") or [])),
                      _cell(" | ".join(f"{p.get('flag')}: {clean(p.get('message'), 400)}" for p in _problems(g)))])
        # Whose work an `id-conflict` grade is waits for a TA: Moodle gets no grade for it (an
        # empty Grade is skipped), so one participant's upload never lands on a classmate's id.
        withheld = bool(g.get("error")) or "id-conflict" in (g.get("flags") or [])
        id_number = str(g.get("claimed_id") or g.get("student_id"))
        if "id-conflict" in (g.get("flags") or []):
            # One row per claimed id, with no feedback file: Moodle imports each row onto that
            # id's record, so a claimant's row would bring their feedback onto the owner's.
            if id_number in conflicted:
                continue
            conflicted.add(id_number)
            moodle.append([_cell(id_number), "", _cell(moodle_feedback(g)), ""])
            continue
        moodle.append([_cell(id_number), "" if withheld else _n(g.get("total")),
                       _cell(moodle_feedback(g)), f"feedback/{safe_name(g.get('student_id'))}.pdf"])
    paths = [out_dir / "grades.csv", out_dir / "moodle_grades.csv"]
    for path, rows in zip(paths, (table, moodle)):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        write_text_atomic(path, buf.getvalue())
    return paths


def moodle_feedback(g: Mapping) -> str:
    """One line: total, points per part, bonus, late penalty, and what is still pending."""
    if g.get("error"):
        return "Your submission could not be graded automatically; a TA will grade it."
    if "id-conflict" in (g.get("flags") or []):
        return ("Your grade waits for a TA: whose work this upload is is in doubt (the same student id was "
                "handed in by more than one Moodle participant or in a file Moodle does not list, or the upload names "
                "another id).")
    bits = [f"{p.get('id')} {fmt_points(p.get('points'))}/{fmt_points(p.get('max'))}"
            for p in g.get("parts") or [] if isinstance(p, Mapping)]
    bonus = g.get("bonus") if isinstance(g.get("bonus"), Mapping) else None
    if bonus and num(bonus.get("points")):
        bits.append(f"bonus {fmt_points(bonus.get('points'))}/{fmt_points(bonus.get('max'))}")
    late = g.get("late") if isinstance(g.get("late"), Mapping) else {}
    if num(late.get("penalty_points")):
        bits.append(f"late {late.get('days_late')} day(s) -{fmt_points(late.get('penalty_points'))}")
    text = f"Total {fmt_points(g.get('total'))}/{fmt_points(g.get('max'))} ({'; '.join(bits)})."
    # The student's own words for what went wrong at intake (an encrypted zip explains the 0).
    told = [clean(p.get("message"), 300) for p in _problems(g) if p.get("flag") in _TELL][:3]
    if told:
        text += " " + " ".join(told)
    pending = sum(1 for p in _all_parts(g) for it in p.get("items") or []
                  if isinstance(it, Mapping) and it.get("status") == "manual" and not it.get("overridden"))
    if pending:
        text += f" Provisional: {pending} item(s) wait for a TA."
    return clean(text + " Details in your feedback PDF.", 1000)


def _problems(g: Mapping) -> list[Mapping]:
    return [p for p in g.get("problems") or [] if isinstance(p, Mapping)]


def _all_parts(g: Mapping) -> list[Mapping]:
    parts = [p for p in g.get("parts") or [] if isinstance(p, Mapping)]
    return parts + ([g["bonus"]] if isinstance(g.get("bonus"), Mapping) else [])


def _part_ids(grades: Sequence[Mapping]) -> list[str]:
    ids: list[str] = []
    for g in grades:
        for p in g.get("parts") or []:
            if isinstance(p, Mapping) and p.get("id") is not None and str(p["id"]) not in ids:
                ids.append(str(p["id"]))
    return ids


def _n(value: Any) -> str:
    return "" if num(value) is None else fmt_points(value)


def _cell(text: str) -> str:
    """Text a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
