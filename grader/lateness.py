"""Is the deadline in use plausible for this batch? Said before grading, and in the class summary.

A rubric copied from an earlier term (the example's deadline is 2018-09-30) would quietly give
every student 0 for lateness; archive times that are really copy times, times in the future,
or no times at all would charge students for what the grader cannot know. `batch_warnings`
turns a batch's submission times into one sentence per such finding, for the TA.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grader.rubric import LatePolicy

# Far more than a term: late by this much, the deadline is the wrong one whatever max_days says.
TERM_S = 180 * 86400.0
# Clocks disagree a little; a time this far ahead of the grader's is wrong, not early.
FUTURE_SLACK_S = 3600.0
# Archive times spread less than this look like one copy operation, not a class handing in.
COPIED_SPREAD_S = 60.0

SOURCE_TEXT = {
    "file-mtime": "the archive file's modification time",
    "lms-archive-entry": "the LMS download's upload time (archive times, read in the deadline's time zone)",
    "submitted-at-csv": "the --submitted-at file",
    "unknown": "unknown (no time recorded)",
}


@dataclass(frozen=True, slots=True)
class When:
    """One submission's time as far as the grader knows it."""

    at: dt.datetime | None
    """When it was handed in (timezone-aware), or None when unknown."""
    source: str
    """Where the time came from: a `SOURCE_TEXT` key."""


def is_future(at: dt.datetime, now: dt.datetime) -> bool:
    """A submission time later than the grader's clock (beyond clock skew) cannot be true."""
    return (at - now).total_seconds() > FUTURE_SLACK_S


def span(seconds: float) -> str:
    """`about 8 years`, `about 3 months`, `about 12 days`, `about 5 hours`: a duration for people."""
    s = abs(seconds)
    for unit, size in (("year", 365.25 * 86400), ("month", 30.44 * 86400), ("day", 86400), ("hour", 3600)):
        if s >= size * (2 if unit in ("year", "month") else 1):
            n = round(s / size)
            return f"about {n} {unit}{'s' if n != 1 else ''}"
    return f"about {max(1, round(s / 60))} minute(s)"


def fmt_deadline(deadline: dt.datetime) -> str:
    """`2018-09-30 23:59 +08:00`."""
    off = deadline.strftime("%z")
    return deadline.strftime("%Y-%m-%d %H:%M ") + (f"{off[:3]}:{off[3:]}" if off else "")


def batch_warnings(deadline: dt.datetime | None, policy: LatePolicy, times: Sequence[When], *,
                   now: dt.datetime, where: str = "the rubric") -> list[str]:
    """Sentences for the TA about the batch's times against the deadline; empty when all is plausible.

    `where` names the deadline's origin in the message (the rubric file).
    """
    if deadline is None or not times:
        return []
    out: list[str] = []
    # --submitted-at times are the TA's statement, used as given (grader.pipeline does too).
    future = [t for t in times if t.at is not None and t.source != "submitted-at-csv" and is_future(t.at, now)]
    known = [t for t in times if t.at is not None and t not in future]
    unknown = [t for t in times if t.at is None]
    late_s = sorted((t.at - deadline).total_seconds() for t in known if t.at is not None)
    too_late = [s for s in late_s if s > policy.max_days * 86400 or s > TERM_S]
    if too_late and 2 * len(too_late) >= len(late_s):
        who = (f"every submission is" if len(too_late) == len(times) else
               f"{len(too_late)} of {len(times)} submissions are")
        typical = span(too_late[len(too_late) // 2])
        cost = ("so each gets 0 points" if policy.after_max == "zero"
                else f"so each loses {policy.max_days * policy.per_day_percent:g} % for lateness")
        out.append(f"{who} {typical} past the deadline in {where} ({fmt_deadline(deadline)}), more than the "
                   f"{policy.max_days} days late work is accepted, {cost}: set this term's deadline "
                   f"(`deadline:` in the rubric) or pass --submitted-at CSV with the real submission times")
    if future:
        latest = max(t.at for t in future if t.at is not None)
        out.append(f"{len(future)} submission time(s) are later than now (the latest {latest.isoformat()}): "
                   f"the clock that stamped them was wrong, so they are not charged for lateness and are "
                   f"flagged time-in-future; pass --submitted-at CSV to set them")
    if unknown:
        out.append(f"{len(unknown)} submission(s) have no known time (unpacked folders): they are not charged "
                   f"for lateness and are flagged time-unknown; pass --submitted-at CSV to set them")
    mtimes = [t.at for t in known if t.source == "file-mtime" and t.at is not None]
    # Two are enough: two students handing in within a minute of each other, and nobody else
    # in the batch, is far less likely than a TA copying two files (tester 1's sN3).
    if len(mtimes) >= 2 and len(mtimes) == len(known) and (max(mtimes) - min(mtimes)).total_seconds() < COPIED_SPREAD_S:
        spread = (max(mtimes) - min(mtimes)).total_seconds()
        out.append(f"all {len(mtimes)} archive times lie within {spread:.0f} s of each other ({max(mtimes).isoformat()}): "
                   f"they are probably when the files were copied, not when they were handed in; pass "
                   f"--submitted-at CSV with the LMS's times, or grade the LMS's download-all zip")
    return out


def sources(times: Sequence[When]) -> list[tuple[str, int]]:
    """(what the time came from, how many submissions) for the summary, most common first."""
    counts = Counter(SOURCE_TEXT.get(t.source, t.source) if t.at is not None else SOURCE_TEXT["unknown"]
                     for t in times)
    return counts.most_common()


def policy_text(policy: LatePolicy) -> str:
    """The late policy in one line: `−10 % of the maximum per started day, at most 7 days, then 0`."""
    basis = "the maximum" if policy.basis == "max" else "the points earned"
    grace = f" after {policy.grace_minutes} min of grace" if policy.grace_minutes else ""
    after = "then 0 points" if policy.after_max == "zero" else "no further penalty"
    return (f"−{policy.per_day_percent:g} % of {basis} per started day late{grace}, "
            f"for at most {policy.max_days} days; {after}")


def class_view(deadline: dt.datetime | None, policy: LatePolicy, grades: Sequence[Mapping[str, Any]], *,
               now: dt.datetime, where: str = "the rubric") -> dict[str, Any]:
    """The class summary's view of lateness: the deadline in use and `where` it is set, its policy,
    where the times came from, and `batch_warnings` over the grades (a crashed grade's time is not
    counted)."""
    if deadline is None:
        return {"deadline": "none", "where": where, "policy": "no deadline set: lateness is not applied",
                "sources": [], "warnings": []}
    times = []
    for g in grades:
        if g.get("error"):
            continue
        try:
            at = dt.datetime.fromisoformat(str(g["submitted_at"])) if g.get("submitted_at") else None
        except ValueError:
            at = None
        late = g.get("late") if isinstance(g.get("late"), Mapping) else {}
        times.append(When(at if at is None or at.tzinfo else None,
                          str(g.get("submitted_at_source") or late.get("source") or "unknown")))
    return {"deadline": fmt_deadline(deadline), "where": where, "policy": policy_text(policy),
            "sources": sources(times), "warnings": batch_warnings(deadline, policy, times, now=now)}
