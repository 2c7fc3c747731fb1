"""How many of a submission's files run, in which order, and in how much time, by the rubric.

A submission may hold any number of notebooks and scripts; each run is a sandbox, a kernel and a
verification, minutes each. The rubric caps what one submission gets: `limits.runs_per_submission`
runs and `limits.submission_timeout` seconds for all of them. The files the lab's parts name
(`notebook.patterns`) run first, a plain name before a marked copy, one per part in turn, so a
cap never costs a part its notebook while a stray script runs; then the other notebooks, then
the scripts. Files over the cap, and runs the time left cannot start, are evidence of status
`not-run` with a note saying which limit (flags `runs-capped`, `submission-time`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grader.rubric import Rubric, format_duration
from grader.sources import is_checkpoint, marks, named_for

__all__ = ["BUDGET_FLAGS", "budget_problems", "capped", "order_runs", "out_of_time", "shortened"]

BUDGET_FLAGS = ("runs-capped", "submission-time")
"""The grade flags of the submission's run budget (also the codes of their evidence notes)."""


def order_runs(paths: Sequence[str], rubric: Rubric) -> list[str]:
    """`paths` (the files to run, as planned) with the lab's own first: for each part in turn its
    best-named file (plain names before copies), then each part's next; then the other notebooks,
    then scripts, then `.ipynb_checkpoints` copies, each group in the planned order."""
    specs = [p.notebook for p in rubric.parts if p.notebook is not None]
    if rubric.bonus is not None and rubric.bonus.notebook is not None:
        specs.append(rubric.bonus.notebook)
    place = {p: i for i, p in enumerate(paths)}
    turn: dict[str, tuple[int, int]] = {}
    for k, spec in enumerate(specs):
        named = sorted((p for p in paths if not is_checkpoint(p) and named_for(p, spec)),
                       key=lambda p: (bool(marks(p)), place[p]))
        for rank, p in enumerate(named):
            turn[p] = min(turn.get(p, (rank, k)), (rank, k))

    def key(p: str) -> tuple[int, int, int, int]:
        if p in turn:
            return (0, *turn[p], place[p])
        group = 3 if is_checkpoint(p) else 1 if p.lower().endswith(".ipynb") else 2
        return (group, 0, 0, place[p])

    return sorted(paths, key=key)


def capped(rel: str, *, count: int, limit: int) -> dict[str, str]:
    """The note on a file not run because the submission has more files than the cap."""
    return {"code": "runs-capped",
            "message": f"`{rel}` was not run: the submission has {count} notebooks and scripts to run, more than "
                       f"the {limit} the lab runs per submission (rubric limits.runs_per_submission); the "
                       f"notebooks the lab's parts name ran first."}


def out_of_time(rel: str, *, limit_s: float) -> dict[str, str]:
    """The note on a file not started because the submission's total run time was spent."""
    return {"code": "submission-time",
            "message": f"`{rel}` was not started: the submission's runs had used all of their "
                       f"{format_duration(limit_s)} together (rubric limits.submission_timeout)."}


def shortened(rel: str, *, given_s: float, limit_s: float) -> dict[str, str]:
    """The note on a run stopped at the wall time it had left of the submission's total."""
    return {"code": "submission-time",
            "message": f"`{rel}` was given only the {given_s:.0f} s left of the submission's "
                       f"{format_duration(limit_s)} for all runs (rubric limits.submission_timeout), and "
                       f"ran past it."}


def budget_problems(evidence: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The grade's `problems` rows (`{flag, code, message, path}`) of every run-budget note."""
    return [{"flag": n["code"], "code": n["code"], "message": str(n.get("message", "")), "path": ev.get("path")}
            for ev in evidence for n in ev.get("notes") or ()
            if isinstance(n, Mapping) and n.get("code") in BUDGET_FLAGS]
