"""Whose upload is it: in an LMS download, the participant who uploaded a file owns it.

The student id is read from a file name the student chose, so one participant can name their
zip after a classmate (`dllab_<Bob's id>.zip`). Where the LMS folder says who uploaded a file,
an id is never a reason to merge two participants' uploads or to let one replace the other:

- an id claimed by uploads of two or more participants is a conflict: each participant's upload
  is graded on its own, as `<id>-moodle-<participant>`, and every one is flagged;
- a participant whose uploads carry several ids has each graded on its own, all flagged;
- files inside an archive named for another id are flagged by `unpack` (`inner_ids`);
- a file with no known uploader (a loose zip the TA put beside the Moodle download, an e-mailed
  "resubmission") that claims an id a participant uploaded never replaces that upload, although
  its copy time always looks newer: both are graded on their own, the loose one as `<id>-loose`,
  the participant's as `<id>-moodle-<participant>`, and both are flagged. Several loose files for
  one id are still one student's duplicates among themselves (the newest is graded).

The flag (`id-conflict`) withholds the grade from the Moodle import until a TA decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from grader.intake.naming import NamePattern
from grader.intake.problems import problem
from grader.safename import shown_name

if TYPE_CHECKING:
    from grader.intake.discover import Candidate

__all__ = ["inner_ids", "resolve_owners", "where"]


def where(c: Candidate) -> str:
    """A candidate as a TA can find it among files of the same name: its folder and name
    (`Bob Chen_1002_assignsubmission_file_/dllab_0556002.zip`, `late/dllab_0556002.zip`)."""
    return shown_name(f"{c.path.parent.name}/{c.path.name}" if c.path.parent.name else c.path.name)


def _real_id(c: Candidate) -> bool:
    return not any(p.code == "no-student-id" for p in c.problems)


def resolve_owners(found: list[Candidate]) -> list[Candidate]:
    """The candidates with every id conflict made explicit: claims of one id by several LMS
    participants, or by a participant and a file of no known uploader, get an id of their own
    each, and all are flagged."""
    lms = [c for c in found if c.lms_participant_id and _real_id(c)]
    loose: dict[str, list[Candidate]] = {}
    for c in found:
        if not c.lms_participant_id and _real_id(c):
            loose.setdefault(c.student_id.casefold(), []).append(c)
    claimants: dict[str, dict[str, Candidate]] = {}
    ids_of: dict[str, dict[str, str]] = {}
    for c in lms:
        claimants.setdefault(c.student_id.casefold(), {}).setdefault(str(c.lms_participant_id), c)
        ids_of.setdefault(str(c.lms_participant_id), {}).setdefault(c.student_id.casefold(), c.student_id)
    out = []
    for c in found:
        if c not in lms:
            owners = claimants.get(c.student_id.casefold()) if c.lms_participant_id is None and _real_id(c) else None
            out.append(_loose_claim(c, owners) if owners else c)
            continue
        pid = str(c.lms_participant_id)
        added = []
        others = claimants[c.student_id.casefold()]
        strays = loose.get(c.student_id.casefold(), [])
        if strays:
            files = ", ".join(f"`{where(s)}`" for s in strays)
            added.append(problem("loose-claim", c.path.name, claimed=c.student_id, participant=pid, files=files,
                                 student_id=f"{c.student_id}-moodle-{pid}"))
        if len(others) > 1 or strays:
            unique = f"{c.student_id}-moodle-{pid}"
            c = replace(c, student_id=unique, claimed_id=c.student_id)
        if len(others) > 1:
            who = "; ".join(f"{o.student_name or '?'} (participant {p}, `{o.path.name}`)" for p, o in sorted(others.items()))
            added.append(problem("claimed-id", c.path.name, claimed=c.claimed_id, count=len(others), who=who,
                                 student_id=c.student_id, participant=pid))
        ids = ids_of[pid]
        if len(ids) > 1:
            shown = ", ".join(sorted(ids.values()))
            added.append(problem("several-ids", c.path.name, person=c.student_name or "?", participant=pid,
                                 count=len(ids), ids=shown))
        out.append(replace(c, problems=(*c.problems, *added)) if added else c)
    return out


def _loose_claim(c: Candidate, owners: dict[str, Candidate]) -> Candidate:
    """A file of no known uploader claiming an id that LMS participants uploaded: graded on its own
    as `<id>-loose` and flagged, never in place of their uploads."""
    who = "; ".join(f"{o.student_name or '?'} (participant {p}, `{where(o)}`)" for p, o in sorted(owners.items()))
    unique = f"{c.student_id}-loose"
    flag = problem("unowned-claim", c.path.name, name=where(c), claimed=c.student_id, who=who, student_id=unique)
    return replace(c, student_id=unique, claimed_id=c.student_id, problems=(*c.problems, flag))


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
