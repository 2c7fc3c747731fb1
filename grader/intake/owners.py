"""Whose upload is it: in an LMS download, the participant who uploaded a file owns it.

The student id is read from a file name the student chose, so one participant can name their
zip after a classmate (`dllab_<Bob's id>.zip`). Where the LMS folder says who uploaded a file,
an id is never a reason to merge two participants' uploads or to let one replace the other:

- an id claimed by uploads of two or more participants is a conflict: each participant's upload
  is graded on its own, as `<id>-moodle-<participant>`, and every one is flagged;
- a participant whose uploads carry several ids has each graded on its own, all flagged;
- files inside an archive named for another id are flagged by `unpack` (`inner_ids`).

The flag (`id-conflict`) withholds the grade from the Moodle import until a TA decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from grader.intake.naming import NamePattern
from grader.intake.problems import problem

if TYPE_CHECKING:
    from grader.intake.discover import Candidate

__all__ = ["inner_ids", "resolve_owners"]


def _real_id(c: Candidate) -> bool:
    return not any(p.code == "no-student-id" for p in c.problems)


def resolve_owners(found: list[Candidate]) -> list[Candidate]:
    """The candidates with every id conflict between LMS participants made explicit: claims of
    one id by several participants get an id of their own each, and all are flagged."""
    lms = [c for c in found if c.lms_participant_id and _real_id(c)]
    claimants: dict[str, dict[str, Candidate]] = {}
    ids_of: dict[str, dict[str, str]] = {}
    for c in lms:
        claimants.setdefault(c.student_id.casefold(), {}).setdefault(str(c.lms_participant_id), c)
        ids_of.setdefault(str(c.lms_participant_id), {}).setdefault(c.student_id.casefold(), c.student_id)
    out = []
    for c in found:
        if c not in lms:
            out.append(c)
            continue
        pid = str(c.lms_participant_id)
        added = []
        others = claimants[c.student_id.casefold()]
        if len(others) > 1:
            who = "; ".join(f"{o.student_name or '?'} (participant {p}, `{o.path.name}`)" for p, o in sorted(others.items()))
            unique = f"{c.student_id}-moodle-{pid}"
            added.append(problem("claimed-id", c.path.name, claimed=c.student_id, count=len(others), who=who,
                                 student_id=unique, participant=pid))
            c = replace(c, student_id=unique, claimed_id=c.student_id)
        ids = ids_of[pid]
        if len(ids) > 1:
            shown = ", ".join(sorted(ids.values()))
            added.append(problem("several-ids", c.path.name, person=c.student_name or "?", participant=pid,
                                 count=len(ids), ids=shown))
        out.append(replace(c, problems=(*c.problems, *added)) if added else c)
    return out


def inner_ids(student_id: str, paths: Iterable[str], pattern: NamePattern) -> list[tuple[str, str]]:
    """(path, id) for each path inside a submission whose name carries another student id: named
    by the lab's pattern (`dllab_0556002.ipynb`, `dllab_0556002/`), or holding a number as long
    as the submission's own all-digit id (`lab1_0556002.ipynb` in 0556001's zip). Only ids as
    long as the submission's own count, so `dllab_lab1.ipynb` or a date is not taken for one."""
    n = len(student_id)
    prefix = pattern.pattern.split("{student_id}")[0]
    by_prefix = re.compile(rf"(?i)(?<![A-Za-z0-9]){re.escape(prefix)}((?=[A-Za-z]*\d)[A-Za-z0-9]{{{n}}})(?![A-Za-z0-9])") \
        if prefix else None
    digits = re.compile(rf"(?<![A-Za-z0-9])(\d{{{n}}})(?![A-Za-z0-9])") if student_id.isdigit() else None
    own = student_id.casefold()
    found: list[tuple[str, str]] = []
    for path in paths:
        for part in path.split("/"):
            named = [m.group(1) for rx in (by_prefix, digits) if rx is not None for m in rx.finditer(part)]
            other = next((n for n in named if n.casefold() != own), None)
            if other is not None and not any(n.casefold() == own for n in named):
                found.append((path, other))
                break
    return found
