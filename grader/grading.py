"""The checks stage: which notebook serves which part, then every rubric item's check.

Pure: from evidence dicts (as in evidence.json), the submission and the reference to
`CheckResult`s; it never executes anything, so `dllab rescore` can call it over stored runs.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from grader.checks import run_check
from grader.checks.base import CheckContext
from grader.rubric import Item, Rubric
from grader.score import CheckResult


MANUAL_MESSAGE = "A TA grades this item by hand after reading your work."

# Checks that read the submission's files or the whole submission, not one part's notebooks.
FILE_CHECKS = {"report_sections", "files_present", "normalization", "custom"}


def _name(ev: Mapping) -> str:
    return PurePosixPath(str(ev.get("path", ""))).name.lower()


def notebooks_for(spec, evidence: Sequence[Mapping]) -> list[Mapping]:
    """The notebooks a part is graded on: by file name first, else by the dataset trained on.

    A part with no `notebook:` spec sees every notebook. One notebook may serve several parts.
    """
    if spec is None:
        return list(evidence)
    by_name = [ev for ev in evidence if any(fnmatch.fnmatch(_name(ev), p.lower()) for p in spec.patterns)]
    if by_name:
        return by_name
    if spec.dataset:
        return [ev for ev in evidence if ev.get("dataset") == spec.dataset
                or (ev.get("metrics") or {}).get("dataset") == spec.dataset]
    return []


def _groups(rubric: Rubric):
    for part in rubric.parts:
        yield part.id, part.notebook, part.items
    if rubric.bonus:
        yield "bonus", rubric.bonus.notebook, rubric.bonus.items


def _message(item: Item, status: str, detail: str) -> str:
    """The rubric's feedback for the outcome, then what the check found."""
    fb = item.feedback
    lead = {"pass": fb.pass_, "partial": fb.partial or fb.fail, "fail": fb.fail}.get(status, "")
    return f"{lead} {detail}".strip() if lead and detail else (lead or detail)


def _unreadable_message(part_id: str, spec, unreadable: Sequence[Mapping]) -> str | None:
    """For a part no readable notebook serves: the files found but unreadable that may hold it."""
    named = notebooks_for(spec, unreadable) if spec is not None else list(unreadable)
    candidates = named or list(unreadable)
    if not candidates:
        return None
    which = "; ".join(f"`{u.get('path')}` {u.get('what') or 'was found but could not be read as a notebook'} "
                      f"({u.get('reason')})" for u in candidates[:3])
    if named:
        return f"{which}, so nothing for {part_id} could be graded."
    return f"no readable notebook for {part_id} was found: {which}."


def run_checks(rubric: Rubric, *, student_id: str, evidence: Sequence[Mapping], files: Sequence[Mapping],
               work_dir: str | None, reference: Mapping | None,
               dataset_stats: Mapping[str, Mapping],
               unreadable: Sequence[Mapping] = ()) -> tuple[dict[str, CheckResult], list[str]]:
    """Every item's result, and the flags the checks raised (e.g. `mismatch`).

    `unreadable` lists files intake found but could not read (`{"path", "reason"}`, and `what`
    for other than a notebook, e.g. "could not be opened" for a zip): a part they would serve
    says "found but unreadable", naming the file and why, not "not found".
    """
    results: dict[str, CheckResult] = {}
    flags: set[str] = set()
    ref_parts = (reference or {}).get("parts") or {}
    for part_id, spec, items in _groups(rubric):
        serving = notebooks_for(spec, evidence)
        unread = None if serving else _unreadable_message(part_id, spec, unreadable)
        for item in items:
            ref_part = (item.params or {}).get("reference_part", part_id)
            ctx = CheckContext(student_id=student_id, part_id=part_id,
                               dataset=(item.params or {}).get("dataset") or (spec.dataset if spec else None),
                               evidence=tuple(serving), all_evidence=tuple(evidence), files=tuple(files),
                               work_dir=work_dir, reference=ref_parts.get(ref_part),
                               dataset_stats=dataset_stats)
            if item.check == "manual":
                hint = run_check(item.hint.check, ctx, item.hint.params, rubric_dir=rubric.base_dir) \
                    if item.hint else None
                # The hint is for the TA only: it goes into the evidence pointers, not the message.
                tip = (f"TA hint ({item.hint.check}): {hint.status}: {hint.message}",) if hint else ()
                results[item.id] = CheckResult(item.id, "manual", 0.0, MANUAL_MESSAGE,
                                               tip + tuple(hint.evidence if hint else ()))
                continue
            out = run_check(item.check, ctx, item.params or {}, rubric_dir=rubric.base_dir or Path("."))
            flags.update(out.flags)
            fraction = min(max(float(out.fraction), 0.0), 1.0)
            # With no notebook for the part, the rubric's generic feedback ("the notebook
            # stopped with an error") would mislead; the check's own sentence says what is missing.
            message = out.message if not serving and item.check not in FILE_CHECKS \
                else _message(item, out.status, out.message)
            if unread and item.check not in FILE_CHECKS:
                message = unread
            results[item.id] = CheckResult(item.id, out.status, fraction, message, tuple(out.evidence))
    return results, sorted(flags)
