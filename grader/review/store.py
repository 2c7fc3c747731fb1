"""The TA's decisions in review: one record per decision, and `OUT/overrides.yaml` made from them.

Every decision a TA saves is its own file under `OUT/review/decisions/`, written atomically and
never changed afterwards: who decided, when, what (points, a comment, or "keep the check's
points"), and which earlier decision it replaced (`base`). The latest decision of each item is
what counts; `OUT/overrides.yaml` (what `dllab rescore` reads) is written from them, atomically,
after every save. Nothing a TA typed is lost: a crash leaves at most a half-written temporary
file, never a half-written record, and every replaced decision stays on disk.

Two TAs (two tabs, two browsers, two `dllab review` servers on one folder) saving the same item
are told apart by `base`: a save names the decision it was made over; when another decision was
saved in between, the save is refused with that decision (a conflict, shown to the TA), never
written over it. Saves are serialized with an advisory lock (`fcntl.flock`) on
`OUT/review/.lock`, which works across threads and processes on one host.

An overrides file already in OUT (`overrides.csv` or `overrides.yaml`, from `rescore --overrides`
or typed by hand) is taken in as decisions the first time, and again whenever it was changed
outside the review (its digest differs from the one the store last wrote): its rows become
decisions "by" the file, so nothing in it is dropped when the store rewrites the file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import yaml

from grader.errors import GraderError
from grader.fsutil import write_json_atomic, write_text_atomic

Kind = Literal["item", "flag"]
Action = Literal["set", "keep", "clear", "reviewed"]
KINDS = ("item", "flag")
ACTIONS: Mapping[str, tuple[str, ...]] = {"item": ("set", "keep", "clear"), "flag": ("reviewed", "clear")}
MAX_COMMENT = 4000
"""Characters a comment may hold."""
MAX_WHO = 80
"""Characters of a reviewer's name."""
_DIGEST = "overrides.sha256"
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


@dataclass(frozen=True)
class Decision:
    """One decision a TA saved (or one row taken in from an overrides file)."""

    id: str
    """Unique id of this record (also in its file name)."""
    kind: Kind
    """`item` (a rubric item of one student) or `flag` (one of a grade's flags)."""
    student_id: str
    """Whose grade (the id itself, as in the grade)."""
    key: str
    """The rubric item id, or the flag."""
    action: Action
    """item: `set` (points), `keep` (the check's points stand; a comment may be added) or `clear`
    (the decision is withdrawn); flag: `reviewed` or `clear`."""
    points: float | None
    """Points given, for `set`; None otherwise."""
    comment: str
    """Shown to the student next to the item (items); the TA's note (flags)."""
    who: str
    """The reviewer's name as they gave it."""
    when: str
    """When it was saved, ISO 8601 in UTC."""
    base: str | None
    """The decision this one was made over (the latest when the TA opened the item), or None."""
    source: str = "review"
    """`review`, or the overrides file it was taken in from."""
    status_before: str = ""
    """The grade's status of the item when the TA decided (pass|partial|fail|error|manual; empty
    for a flag or a row taken in from a file): after the first decision the grade shows the TA's
    points, so the check's own outcome is kept here."""
    points_before: float | None = None
    """The grade's points for the item when the TA decided."""

    @property
    def decided(self) -> bool:
        """Whether this decision settles its item or flag (a `clear` withdraws it)."""
        return self.action != "clear"


@dataclass(frozen=True)
class Conflict:
    """A save refused because another decision was saved after the one the TA saw."""

    current: Decision
    """The decision saved in between (the latest now)."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


class DecisionStore:
    """The decision records of one output folder (see the module docstring)."""

    def __init__(self, out: Path, *, max_points: Mapping[str, float]) -> None:
        """`max_points`: rubric item id -> the points it is worth (what a `set` is checked against)."""
        self.out = Path(out)
        self.folder = self.out / "review" / "decisions"
        self.max_points = dict(max_points)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken_in = 0  # students whose decisions came from an overrides file, so far
        with self._locked():
            self._take_in_file()

    # ------------------------------------------------------------------ reading

    def records(self) -> list[Decision]:
        """Every record, oldest first. A file that is not a valid record (never written by the
        store: records are written atomically) is skipped."""
        out = []
        for p in sorted(self.folder.glob("*.json")):
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
                out.append(Decision(**data))
            except (OSError, ValueError, TypeError):
                continue
        return out

    def latest(self) -> dict[tuple[str, str, str], Decision]:
        """(kind, student_id, key) -> its latest decision (a `clear` included)."""
        out: dict[tuple[str, str, str], Decision] = {}
        for r in self.records():
            out[(r.kind, r.student_id, r.key)] = r
        return out

    def history(self, kind: str, student_id: str, key: str) -> list[Decision]:
        """Every decision on one item or flag, oldest first."""
        return [r for r in self.records() if (r.kind, r.student_id, r.key) == (kind, student_id, key)]

    # ------------------------------------------------------------------ saving

    def decide(self, *, kind: str, student_id: str, key: str, action: str, points: Any = None,
               comment: str = "", who: str, base: str | None, status_before: str = "",
               points_before: float | None = None) -> Decision | Conflict:
        """Saves one decision made over `base` (the id of the latest decision the TA saw, None if
        there was none) and rewrites OUT/overrides.yaml. Returns the saved record, or a
        `Conflict` (nothing written) when the latest decision is no longer `base`.

        Raises GraderError for a decision that cannot be saved: an unknown kind, action or item,
        points that are not a number within 0..the item's points, a `set` without points, a
        comment over MAX_COMMENT characters."""
        if kind not in KINDS:
            raise GraderError(f"unknown decision kind {kind!r}")
        if action not in ACTIONS[kind]:
            raise GraderError(f"{'an' if kind == 'item' else 'a'} {kind} decision is one of {', '.join(ACTIONS[kind])}, not {action!r}")
        if not isinstance(student_id, str) or not student_id or not isinstance(key, str) or not key:
            raise GraderError("a decision needs a student id and an item or flag")
        if kind == "item" and key not in self.max_points:
            raise GraderError(f"unknown rubric item `{key}`")
        value = self._points(key, points) if action == "set" else None
        if action == "set" and value is None:
            raise GraderError("give the points to set")
        comment = comment if isinstance(comment, str) else ""
        if len(comment) > MAX_COMMENT:
            raise GraderError(f"a comment is at most {MAX_COMMENT} characters ({len(comment)} given)")
        who = (who if isinstance(who, str) else "").strip()[:MAX_WHO] or "unknown"
        with self._locked():
            self._take_in_file()
            current = self.latest().get((kind, student_id, key))
            if current is not None and current.id != (base or None):
                return Conflict(current)
            record = Decision(id=uuid.uuid4().hex[:12], kind=kind, student_id=student_id, key=key,  # type: ignore[arg-type]
                              action=action, points=value, comment=comment.strip(), who=who,  # type: ignore[arg-type]
                              when=_now(), base=current.id if current else None, status_before=status_before,
                              points_before=points_before)
            self._write(record)
            self._write_overrides()
        return record

    def _points(self, key: str, points: Any) -> float | None:
        if points is None or (isinstance(points, str) and not points.strip()):
            return None
        try:
            if isinstance(points, bool) or (isinstance(points, str) and not _NUMBER.fullmatch(points.strip())):
                raise ValueError  # "0_9", "1e3", "0x2", "inf": Python reads them, a TA did not mean them
            value = float(points)
        except (TypeError, ValueError):
            raise GraderError(f"points must be a number like 2 or 2.5, not {str(points)[:40]!r}") from None
        top = self.max_points[key]
        if not (math.isfinite(value) and 0 <= value <= top):
            raise GraderError(f"points {value:g} outside 0..{top:g} for item `{key}`")
        return round(value, 2) + 0.0  # + 0.0: no -0.0

    def _write(self, record: Decision) -> None:
        name = f"{time.time_ns():020d}-{record.id}.json"
        write_json_atomic(self.folder / name, asdict(record))

    # ------------------------------------------------------------------ overrides.yaml

    def overrides(self) -> list[dict[str, Any]]:
        """The rows of OUT/overrides.yaml the decisions make: each item's latest `set` (points and
        comment) or `keep` with a comment (the comment alone), sorted by student and item."""
        rows = []
        for (kind, sid, key), r in sorted(self.latest().items()):
            if kind != "item" or r.action == "clear" or (r.action == "keep" and not r.comment):
                continue
            rows.append({"student_id": sid, "item_id": key, "points": r.points, "comment": r.comment})
        return rows

    def _write_overrides(self) -> None:
        text = _yaml_text(self.overrides())
        target = self.out / "overrides.yaml"
        write_text_atomic(target, text)
        write_text_atomic(self.out / "review" / _DIGEST, _sha(text))
        (self.out / "overrides.csv").unlink(missing_ok=True)  # rescore would read it before the yaml

    def refresh(self) -> set[str]:
        """Takes in an overrides file changed outside the review (see _take_in_file); returns the
        students whose decisions that changed."""
        with self._locked():
            return self._take_in_file()

    def _take_in_file(self) -> set[str]:
        """Rows of an overrides file the store did not write (or that changed since) become
        decisions of that file: a new or changed row a `set` or `keep`, and, in an overrides.yaml
        the store wrote before, a row taken out a `clear`. Then the file is rewritten from the
        decisions. Returns the students whose decisions changed. The caller holds the lock."""
        from grader.pipeline import kept_overrides

        kept = kept_overrides(self.out)
        if kept is None:
            return set()
        text = kept.read_text(encoding="utf-8-sig", errors="replace")
        digest_file = self.out / "review" / _DIGEST
        ours_before = kept.name == "overrides.yaml" and digest_file.is_file()
        if ours_before and digest_file.read_text().strip() == _sha(text):
            return set()
        rows = _rows(kept, self.max_points)
        latest = self.latest()
        source, changed = kept.name, set()
        for row in rows:
            current = latest.get(("item", row["student_id"], row["item_id"]))
            action = "set" if row["points"] is not None else "keep"
            if current is not None and current.action == action and current.points == row["points"] \
                    and current.comment == row["comment"]:
                continue
            self._write(self._from_file(row["student_id"], row["item_id"], action, row["points"], row["comment"],
                                        source, current))
            changed.add(row["student_id"])
        if ours_before:  # a row the store wrote and a hand took out: withdrawn
            listed = {(r["student_id"], r["item_id"]) for r in rows}
            for (kind, sid, key), current in latest.items():
                in_file = current.action == "set" or (current.action == "keep" and bool(current.comment))
                if kind == "item" and (sid, key) not in listed and in_file:
                    self._write(self._from_file(sid, key, "clear", None, "", source, current))
                    changed.add(sid)
        self.taken_in += len(changed)
        self._write_overrides()
        return changed

    @staticmethod
    def _from_file(sid: str, key: str, action: str, points: float | None, comment: str, source: str,
                   current: Decision | None) -> Decision:
        return Decision(id=uuid.uuid4().hex[:12], kind="item", student_id=sid, key=key, action=action,  # type: ignore[arg-type]
                        points=points, comment=comment, who=f"the file {source}", when=_now(),
                        base=current.id if current else None, source=source)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.out / "review" / ".lock"
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _rows(path: Path, max_points: Mapping[str, float]) -> list[dict[str, Any]]:
    """An overrides file's rows, read as `rescore` reads it (grader.score.load_overrides)."""
    from grader.score import load_overrides

    class _Items:  # load_overrides needs only all_items() of the rubric
        def all_items(self) -> list[tuple[None, Any]]:
            return [(None, _Item(k, v)) for k, v in max_points.items()]

    try:
        found = load_overrides(path, rubric=_Items())  # type: ignore[arg-type]
    except GraderError as exc:
        raise GraderError(f"the overrides file in the output folder cannot be taken into the review: {exc}") from None
    return [{"student_id": o.student_id, "item_id": o.item_id, "points": o.points, "comment": o.comment}
            for o in found]


@dataclass(frozen=True)
class _Item:
    id: str
    points: float


def _yaml_text(rows: list[dict[str, Any]]) -> str:
    head = ("# The TA's decisions, written by `dllab review` from OUT/review/decisions/ (one record per\n"
            "# decision, with who and when). Edits here are taken in as decisions of this file.\n")
    return head + (yaml.safe_dump(rows, sort_keys=False, allow_unicode=True) if rows else "[]\n")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
