"""Scoring: check results + rubric + TA overrides + submission time -> `Grade`. Arithmetic only.

Rules (also stated for TAs in `labs/lab1/rubric.yaml`):
  * an item earns points × fraction (pass/partial), 0 otherwise, rounded to 0.01;
  * a missing result is an `error` item worth 0, never a crash;
  * a `manual` item earns 0 and flags `manual-pending` until an override gives it points;
  * bonus points are summed, then capped at the rubric's `cap`;
  * the late penalty is taken off the earned total *including* bonus, never below 0;
  * same inputs -> byte-identical JSON (sorted keys, no timestamps, sorted flags).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from grader import yamlsafe
from grader.errors import GraderError
from grader.rubric import Item, LatePolicy, Rubric, did_you_mean

Status = Literal["pass", "partial", "fail", "error", "manual"]
STATUSES = ("pass", "partial", "fail", "error", "manual")
MISSING = "no result for this item"
PENDING = "graded by hand; the TA has not entered points yet"

# --------------------------------------------------------------------------- records


class _JSON:
    """`to_json()` / `from_json()` for the frozen records below (until model.py consolidates)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        """Deterministic JSON text: sorted keys, 2-space indent, trailing newline."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """Rebuild from `to_dict()` output; unknown or missing fields are errors."""
        return _build(cls, data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Any:
        """Rebuild from `to_json()` output."""
        return _build(cls, json.loads(text))


@dataclass(frozen=True)
class CheckResult(_JSON):
    """What one check found for one rubric item."""

    item_id: str
    """The rubric item this result is for."""
    status: Status
    """pass | partial | fail | error (the check could not run) | manual (needs a TA)."""
    fraction: float
    """Share of the item's points earned, 0..1 (used for pass and partial only)."""
    message: str = ""
    """One line for the student (or, for a manual item's hint, for the TA)."""
    evidence: tuple[str, ...] = ()
    """Pointers into the run's evidence (cells, figures, metric keys) backing the result."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CheckResult {self.item_id}: status {self.status!r} not in {STATUSES}")
        if not (isinstance(self.fraction, (int, float)) and 0.0 <= self.fraction <= 1.0):
            raise ValueError(f"CheckResult {self.item_id}: fraction {self.fraction!r} not in 0..1")
        object.__setattr__(self, "evidence", tuple(self.evidence))


@dataclass(frozen=True)
class Override(_JSON):
    """A TA's decision for one student's item, from an overrides file."""

    student_id: str
    """Whose grade it changes."""
    item_id: str
    """Which rubric item."""
    points: float | None
    """Points to give instead of the check's; None keeps them and only adds the comment."""
    comment: str = ""
    """Shown to the student next to the item."""


@dataclass(frozen=True)
class ItemGrade(_JSON):
    """One item's outcome in a grade."""

    id: str
    """Rubric item id."""
    title: str
    """Rubric item title."""
    status: Status
    """Status after overrides (an override's points decide pass/partial/fail)."""
    points: float
    """Points earned, rounded to 0.01."""
    max: float
    """Points the item is worth."""
    message: str
    """The check's message (or why there is none)."""
    overridden: bool = False
    """Whether a TA override set the points."""
    comment: str = ""
    """The TA's comment, if any."""
    evidence: tuple[str, ...] = ()
    """Where the check looked (cells, files); for a manual item, the TA's hint first."""


@dataclass(frozen=True)
class PartGrade(_JSON):
    """One part's (or the bonus') outcome."""

    id: str
    """Rubric part id, or `bonus`."""
    title: str
    """Rubric part title."""
    points: float
    """Points earned (for the bonus: after the cap)."""
    max: float
    """Part points (for the bonus: the cap)."""
    items: tuple[ItemGrade, ...]
    """Every item of the part, in rubric order."""


@dataclass(frozen=True)
class LateGrade(_JSON):
    """How late the submission was and what it cost."""

    minutes_late: int
    """Whole minutes after the deadline, rounded up; 0 when on time or unknown."""
    days_late: int
    """Started days late counted for the penalty (0 within the grace period)."""
    penalty_points: float
    """Points taken off the earned total (never more than it)."""
    source: str
    """Where the submission time came from (e.g. lms, zip-mtime, unknown)."""


@dataclass(frozen=True)
class Grade(_JSON):
    """A student's grade for one lab."""

    student_id: str
    """The student."""
    lab: str
    """Rubric lab id."""
    total: float
    """Parts + bonus − late penalty, at least 0."""
    max: float
    """Sum of the parts' points (bonus excluded)."""
    parts: tuple[PartGrade, ...]
    """One entry per rubric part, in rubric order."""
    bonus: PartGrade | None
    """The bonus, or None if the rubric has none."""
    late: LateGrade
    """Lateness and its penalty."""
    flags: tuple[str, ...]
    """Sorted, de-duplicated markers for the TA (late, manual-pending, override-applied, ...)."""

# --------------------------------------------------------------------------- scoring


def score(rubric: Rubric, results: Mapping[str, CheckResult], *, student_id: str,
          submitted_at: datetime | None, submitted_at_source: str,
          overrides: Sequence[Override] = (), flags_in: Sequence[str] = ()) -> Grade:
    """The grade for one student; deterministic in its inputs."""
    for key, result in results.items():
        if key != result.item_id:
            raise GraderError(f"result filed under {key!r} is for item {result.item_id!r}")
    mine = _overrides_for(rubric, student_id, overrides)
    flags = set(flags_in)
    parts = tuple(_part(p.id, p.title, p.points, p.points, p.items, results, mine, flags) for p in rubric.parts)
    bonus = None
    if rubric.bonus:
        b = rubric.bonus
        bonus = _part("bonus", b.title, b.cap, b.cap, b.items, results, mine, flags)
    earned = _r2(sum(p.points for p in parts) + (bonus.points if bonus else 0.0))
    late = late_penalty(rubric.late, rubric.deadline, submitted_at, max_points=rubric.max_points,
                        earned=earned, source=submitted_at_source)
    if late.days_late:
        flags.add("late")
    if late.days_late > rubric.late.max_days:
        flags.add("past-max-days")  # the whole lab lost or capped: worth a TA's look, unlike a day late
    if rubric.deadline is not None and submitted_at is None and "time-in-future" not in flags:
        flags.add("time-unknown")  # a time in the future is known to be wrong, and says so itself
    return Grade(student_id=student_id, lab=rubric.lab, total=_r2(max(0.0, earned - late.penalty_points)),
                 max=_r2(rubric.max_points), parts=parts, bonus=bonus, late=late, flags=tuple(sorted(flags)))


def late_penalty(policy: LatePolicy, deadline: datetime | None, submitted_at: datetime | None, *,
                 max_points: float, earned: float, source: str) -> LateGrade:
    """Minutes and started days late, and the points that costs (see `labs/lab1/rubric.yaml`)."""
    if deadline is None or submitted_at is None:
        return LateGrade(0, 0, 0.0, source)
    if submitted_at.tzinfo is None:
        raise GraderError(f"submission time {submitted_at.isoformat()} has no timezone")
    seconds = (submitted_at - deadline).total_seconds()
    minutes = max(0, math.ceil(seconds / 60))
    if minutes <= policy.grace_minutes:
        return LateGrade(minutes, 0, 0.0, source)
    days = math.ceil(minutes / 1440)
    if days > policy.max_days and policy.after_max == "zero":
        penalty = earned
    else:
        basis = max_points if policy.basis == "max" else earned
        penalty = basis * policy.per_day_percent / 100 * min(days, policy.max_days)
    return LateGrade(minutes, days, _r2(min(max(earned, 0.0), penalty)), source)


def _part(pid: str, title: str, cap: float, max_: float, items: Sequence[Item],
          results: Mapping[str, CheckResult], mine: Mapping[str, Override], flags: set[str]) -> PartGrade:
    graded = tuple(_item(item, results.get(item.id), mine.get(item.id), flags) for item in items)
    return PartGrade(id=pid, title=title, points=_r2(min(cap, sum(g.points for g in graded))),
                     max=_r2(max_), items=graded)


def _item(item: Item, result: CheckResult | None, ovr: Override | None, flags: set[str]) -> ItemGrade:
    if item.check == "manual":
        status: Status = "manual"
        points = 0.0
        message = result.message if result and result.message else PENDING
    elif result is None:
        status, points, message = "error", 0.0, MISSING
    else:
        status, message = result.status, result.message
        points = _r2(item.points, result.fraction) if status in ("pass", "partial") else 0.0
    overridden = ovr is not None and ovr.points is not None
    if overridden:
        assert ovr is not None and ovr.points is not None
        if not 0 <= ovr.points <= item.points:
            raise GraderError(f"override for {ovr.student_id}/{item.id}: {ovr.points:g} points is outside "
                              f"0..{item.points:g}")
        points = _r2(ovr.points)
        status = _status_from_points(points, item.points, status)
        flags.add("override-applied")
    elif status == "manual":
        flags.add("manual-pending")
    return ItemGrade(id=item.id, title=item.title, status=status, points=points, max=_r2(item.points),
                     message=message, overridden=overridden, comment=ovr.comment if ovr else "",
                     evidence=tuple(result.evidence) if result else ())


def _status_from_points(points: float, max_: float, before: Status) -> Status:
    if max_ == 0:  # informational item: the points say nothing, keep the check's verdict
        return "pass" if before == "manual" else before
    return "pass" if points >= max_ else "fail" if points <= 0 else "partial"


def _overrides_for(rubric: Rubric, student_id: str, overrides: Sequence[Override]) -> dict[str, Override]:
    ids = [item.id for _, item in rubric.all_items()]
    out: dict[str, Override] = {}
    for o in overrides:
        if o.student_id != student_id:
            continue
        if o.item_id not in ids:
            raise GraderError(f"override for {student_id}: unknown item `{o.item_id}`{did_you_mean(o.item_id, ids)}")
        if o.item_id in out:
            raise GraderError(f"two overrides for {student_id}/{o.item_id}")
        out[o.item_id] = o
    return out


def _r2(x: float, times: float = 1.0) -> float:
    """x × times rounded half up to 0.01, computed in decimal: 10 × 0.1235 -> 1.24, as on paper."""
    exact = Decimal(repr(float(x))) * Decimal(repr(float(times)))
    return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)) + 0.0  # + 0.0: no -0.0

# --------------------------------------------------------------------------- overrides files

_OVERRIDE_KEYS = ("student_id", "item_id", "points", "comment")


def load_overrides(path: Path, *, rubric: Rubric) -> list[Override]:
    """Overrides from a `.csv` (header student_id,item_id,points,comment) or `.yaml` list.

    Strict: every problem names the file and line; unknown item ids suggest the near miss;
    points must be within 0..the item's points (empty = comment only); a student may have
    one override per item.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraderError(f"{path}: cannot read overrides: {exc}") from None
    rows = _csv_rows(path, text) if path.suffix.lower() == ".csv" else _yaml_rows(path, text)
    items = {item.id: item for _, item in rubric.all_items()}
    out: list[Override] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in rows:
        where = f"{path}:{line}"
        sid, iid = row.get("student_id"), row.get("item_id")
        if not isinstance(sid, str) or not sid.strip():
            raise GraderError(f"{where}: student_id must be text (quote it in YAML to keep leading zeros)")
        if not isinstance(iid, str) or iid not in items:
            raise GraderError(f"{where}: unknown item id `{iid}`{did_you_mean(str(iid), items)}")
        points = _points(where, row.get("points"), items[iid])
        comment = row.get("comment") or ""
        if not isinstance(comment, str):
            raise GraderError(f"{where}: comment must be text")
        key = (sid.strip(), iid)
        if key in seen:
            raise GraderError(f"{where}: a second override for {key[0]}/{iid} (first on line {seen[key]})")
        seen[key] = line
        out.append(Override(student_id=key[0], item_id=iid, points=points, comment=comment.strip()))
    return out


def _points(where: str, value: Any, item: Item) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        points = float(value)
    except (TypeError, ValueError):
        raise GraderError(f"{where}: points must be a number or empty, got {value!r}") from None
    if not (math.isfinite(points) and 0 <= points <= item.points):
        raise GraderError(f"{where}: points {points:g} outside 0..{item.points:g} for item `{item.id}`")
    return points


def _check_keys(where: str, keys: Sequence[str]) -> None:
    for key in keys:
        if key not in _OVERRIDE_KEYS:
            raise GraderError(f"{where}: unknown column `{key}`{did_you_mean(key, _OVERRIDE_KEYS)}")
    for key in ("student_id", "item_id"):
        if key not in keys:
            raise GraderError(f"{where}: missing `{key}`")


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines(), strict=True)
    _check_keys(f"{path}:1", [k.strip() for k in reader.fieldnames or ()])
    rows = []
    try:
        for row in reader:
            if None in row:
                raise GraderError(f"{path}:{reader.line_num}: more fields than columns")
            rows.append((reader.line_num, {k.strip(): v for k, v in row.items()}))
    except csv.Error as exc:
        raise GraderError(f"{path}:{reader.line_num}: {exc}") from None
    return rows


def _yaml_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        root = yamlsafe.compose(text)
        data = yamlsafe.load(text)
    except yaml.YAMLError as exc:
        raise GraderError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode):
        raise GraderError(f"{path}: expected a list of {{student_id, item_id, points, comment}} entries")
    rows = []
    for node, row in zip(root.value, data):
        line = node.start_mark.line + 1
        if not isinstance(row, dict):
            raise GraderError(f"{path}:{line}: expected student_id, item_id, points, comment")
        _check_keys(f"{path}:{line}", [str(k) for k in row])
        rows.append((line, row))
    return rows

# --------------------------------------------------------------------------- JSON rebuild


def _build(tp: Any, data: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{tp.__name__}: expected an object")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        if set(data) - names:
            raise ValueError(f"{tp.__name__}: unknown field(s) {sorted(set(data) - names)}")
        return tp(**{k: _build(hints[k], v) for k, v in data.items()})
    if origin is typing.Union or (origin is not None and type(None) in args):
        if data is None:
            return None
        return _build(next(a for a in args if a is not type(None)), data)
    if origin is tuple:
        return tuple(_build(args[0], v) for v in data)
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    return data

