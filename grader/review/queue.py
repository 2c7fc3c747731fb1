"""The review queue: everything in a graded folder a person must decide, and what is decided.

An entry is either one student's rubric item or one of a grade's flags:
  * items graded by hand (`check: manual`) and items a check handed to a TA (status `manual`),
    items whose check could not run (status `error`), and any item a TA has decided already;
  * every flag of a grade that asks for a look (mismatch, notebook-error, sandbox-limit, late,
    bad-name, duplicate, ...): all but `manual-pending` and `override-applied`, which the item
    entries themselves stand for.
Entries come in rubric order (all students of one item together, the order a TA grades a
justification item for the class in), then the flags by name, each by student id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from grader.review.store import Decision

QUIET_FLAGS = frozenset({"manual-pending", "override-applied"})
"""Flags that are not entries of their own (the items they mark are)."""
STATUSES = ("pending", "decided", "all")


@dataclass(frozen=True)
class Entry:
    """One decision to make."""

    kind: str
    """`item` or `flag`."""
    student_id: str
    key: str
    """Rubric item id or flag."""
    title: str
    """The item's title, or what the flag means."""
    part: str
    """The item's part id (`bonus` for a bonus item); empty for a flag."""
    why: str
    """Why it is in the queue, in a few words."""
    status: str
    """The grade's status of the item (pass|partial|fail|error|manual); `flag` for a flag."""
    points: float | None
    """Points the grade gives the item now (None for a flag)."""
    max: float | None
    """Points the item is worth (None for a flag)."""
    message: str
    """The check's message for the item (the automatic hint), or empty."""
    decision: Decision | None
    """The latest decision (possibly a `clear`), or None."""

    @property
    def decided(self) -> bool:
        """Whether a TA settled it: a manual item needs points set; any other item a `set` or a
        `keep`; a flag a `reviewed`."""
        d = self.decision
        if d is None or not d.decided:
            return False
        if self.kind == "flag":
            return d.action == "reviewed"
        # `keep` sets no points, so an item waiting for a TA's points (status manual) stays waiting
        return d.action == "set" or (d.action == "keep" and self.status != "manual")

    @property
    def path(self) -> str:
        """The decision page's path (quoted)."""
        from urllib.parse import quote

        return f"/decide/{self.kind}/{quote(self.student_id, safe='')}/{quote(self.key, safe='')}"


def _read_grade(path: Path) -> dict[str, Any] | None:
    """The grade in `path` when it reads as one (a student id and parts), else None."""
    try:
        g = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(g, dict) and isinstance(g.get("student_id"), str) and isinstance(g.get("parts"), list)
    return g if ok else None


def load_grades(out: Path) -> list[dict[str, Any]]:
    """Every OUT/grades/*.json that reads as a grade, by student id."""
    grades = [g for p in sorted((Path(out) / "grades").glob("*.json")) if (g := _read_grade(p)) is not None]
    return sorted(grades, key=lambda g: g["student_id"])


def load_grade(out: Path, student_id: str) -> dict[str, Any] | None:
    """One student's grade (OUT/grades/<safe name>.json, as grading writes it), or None: one file
    read, not the class's."""
    from grader.safename import safe_name

    g = _read_grade(Path(out) / "grades" / f"{safe_name(student_id)}.json")
    return g if g is not None and g["student_id"] == student_id else None


def item_order(grades: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Rubric item id -> its place in the rubric (from the grades' part and item order)."""
    order: dict[str, int] = {}
    for g in grades:
        for part in list(g.get("parts") or []) + ([g["bonus"]] if g.get("bonus") else []):
            for item in part.get("items") or []:
                order.setdefault(str(item.get("id")), len(order))
    return order


def entries(grades: Sequence[Mapping[str, Any]], latest: Mapping[tuple[str, str, str], Decision], *,
            hand_graded: frozenset[str] | set[str] = frozenset()) -> list[Entry]:
    """Every entry of the class, in queue order (see the module docstring). `hand_graded`: the
    rubric's `check: manual` item ids (said apart from items a check handed to a TA)."""
    from grader.report.student import FLAG_TEXT

    order = item_order(grades)
    found: list[Entry] = []
    for g in grades:
        sid = g["student_id"]
        for part in list(g.get("parts") or []) + ([g["bonus"]] if g.get("bonus") else []):
            for item in part.get("items") or []:
                iid, status = str(item.get("id")), str(item.get("status"))
                decision = latest.get(("item", sid, iid))
                why = _why(status, bool(item.get("overridden")), iid in hand_graded)
                if why is None and decision is None:
                    continue
                found.append(Entry("item", sid, iid, str(item.get("title", iid)), str(part.get("id", "")),
                                   why or "decided by a TA", status, _num(item.get("points")), _num(item.get("max")),
                                   str(item.get("message") or ""), decision))
        for flag in g.get("flags") or []:
            flag = str(flag)
            if flag in QUIET_FLAGS:
                continue
            title = FLAG_TEXT.get(flag) or (f"code or outputs match {flag.split(':', 1)[1]}'s (dllab similarity): "
                                             "compare them side by side; never a deduction by itself"
                                             if flag.startswith("similar-to:") else flag)
            found.append(Entry("flag", sid, flag, title, "", "flagged", "flag", None, None, "",
                               latest.get(("flag", sid, flag))))
    found.sort(key=lambda e: (e.kind != "item", order.get(e.key, len(order)) if e.kind == "item" else 0, e.key,
                              e.student_id))
    return found


def _why(status: str, overridden: bool, hand: bool) -> str | None:
    if hand:
        return "graded by hand"
    if status == "manual":
        return "handed to a TA by its check"
    if status == "error":
        return "its check could not run"
    if overridden:
        return "points set by a TA (in the review or an overrides file)"
    return None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def select(found: Sequence[Entry], *, item: str = "", flag: str = "", status: str = "all",
           student: str = "") -> list[Entry]:
    """The entries a filter keeps: one item id, one flag, pending/decided/all, a student id substring."""
    out = []
    for e in found:
        if item and not (e.kind == "item" and e.key == item):
            continue
        if flag and not (e.kind == "flag" and e.key == flag):
            continue
        if status == "pending" and e.decided or status == "decided" and not e.decided:
            continue
        if student and student.lower() not in e.student_id.lower():
            continue
        out.append(e)
    return out
