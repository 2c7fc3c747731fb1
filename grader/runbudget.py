"""How many of a submission's files run, in which order, and in how much time, by the rubric.

A submission may hold any number of notebooks and scripts; each run is a sandbox, a kernel and a
verification, minutes each. The rubric caps what one submission gets: `limits.runs_per_submission`
runs and `limits.submission_timeout` seconds for all of them. The files the lab's parts name
(`notebook.patterns`) run first, a plain name before a marked copy, one per part in turn, so a
cap never costs a part its notebook while a stray script runs; then the other notebooks, then
the scripts. Files over the cap, and runs the time left cannot start, are evidence of status
`not-run` with a note saying which limit (flags `runs-capped`, `submission-time`).

Every piece of work done for a submission draws from that one budget: a run's kernel start and
cells end at the submission's deadline as at the run's own wall time (grader.driver), and the
grader's own steps after the cells, the model's capture in the student's kernel (the teardown)
and its independent evaluation (grader.verify), get at most what is left of both, plus
FINISH_GRACE_S (`finish_window`; the pipeline's `finish_notes` and `verify_in_time`). A step cut
short that way is said on the run (`finish_cut`) and the model is not verified ("the time limit ...").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from grader.rubric import Rubric, format_duration
from grader.sources import is_checkpoint, marks, named_for

__all__ = ["BUDGET_FLAGS", "FINISH_GRACE_S", "budget_problems", "capped", "finish_cut", "finish_notes",
           "finish_window", "order_runs", "out_of_time", "shortened", "verify_in_time"]

BUDGET_FLAGS = ("runs-capped", "submission-time")
"""The grade flags of the submission's run budget (also the codes of their evidence notes)."""
FINISH_GRACE_S = 60.0
"""How far past the end of a run's time (its wall time, or the submission's) the grader's own steps
after the cells may go, the teardown and the evaluator together (seconds): a notebook that used
all of its time still gets its model captured and verified, and no step after the cells ends
later than this after the submission's deadline (then the bounded kill and shutdown of a
sandbox, seconds, see grader.driver)."""

Cut = Literal["sandbox-limit", "submission-time"]


def finish_window(*, now: float, cap_s: float, run_end: float | None,
                  submission_end: float | None) -> tuple[float, Cut | None]:
    """The seconds a step after the cells (the teardown, the evaluator) may take, and which limit
    cut that below the step's own `cap_s`: `sandbox-limit` (the run's wall time, ending at
    `run_end`) or `submission-time` (the submission's, ending at `submission_end`), None when
    `cap_s` itself applies. `now` and both ends are on one clock (Unix seconds); an end of
    None does not apply. The window is never negative: 0 means the step must not start."""
    window: float = cap_s
    cut: Cut | None = None
    # the submission's deadline named when both end together (its time left set the wall time)
    ends: tuple[tuple[Cut, float | None], ...] = (("submission-time", submission_end), ("sandbox-limit", run_end))
    for flag, end in ends:
        if end is not None and end + FINISH_GRACE_S - now < window:
            window, cut = max(0.0, end + FINISH_GRACE_S - now), flag
    return window, cut


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


def finish_cut(rel: str, step: Literal["teardown", "evaluation"], *, cut: Cut | None, given_s: float,
               limit_s: float, started: bool = True) -> dict[str, str]:
    """The note on a step after the cells (the model's capture, `teardown`, or its independent
    `evaluation`) stopped at, or not started for, the time it was given (`given_s`): by the
    submission's time (`submission-time`, `limit_s` its total), the run's wall time
    (`sandbox-limit`, `limit_s` the wall time) or the step's own limit (`cut` None, `limit_s` it)."""
    what = ("the grader's capture of the trained model in the kernel after the last cell (the teardown)"
            if step == "teardown" else "the independent evaluation of the trained model")
    fate = "ran past it and was stopped" if started else "could not start"
    if cut == "submission-time":
        given = (f"was given only the {given_s:.0f} s left of the submission's {format_duration(limit_s)} for all "
                 f"runs (rubric limits.submission_timeout, with {FINISH_GRACE_S:.0f} s allowed after it)")
    elif cut == "sandbox-limit":
        given = (f"was given only the {given_s:.0f} s left of the notebook's wall time of "
                 f"{format_duration(limit_s)} (rubric limits.wall_timeout, with {FINISH_GRACE_S:.0f} s allowed after it)")
    else:
        given = f"was given the grader's limit of {format_duration(limit_s)} for it"
    return {"code": cut or "sandbox-limit",
            "message": f"For `{rel}`, {what} {given}, and {fate}: the model was not verified."}


def _limit_of(cut: str | None, *, rubric: Rubric, limits: Any, own_s: float) -> float:
    """The limit a step after the cells was cut by (grader.runbudget.finish_window), in seconds."""
    return {"submission-time": rubric.limits.submission_timeout, "sandbox-limit": limits.wall_timeout_s}.get(cut, own_s)


def finish_notes(result: Any, rel: str, *, rubric: Rubric, limits: Any, wall_s: float | None) -> list[dict[str, str]]:
    """Notes on a run (`result`, a grader.execute.RunResult, run under `limits` with `wall_s`
    seconds left of the submission's time) stopped at the end of the submission's time
    (`shortened`), and on its teardown when it ran out of time (`finish_cut`)."""
    from grader.execute import TEARDOWN_TIMEOUT_S

    notes = []
    if result.deadline_hit and wall_s is not None:
        notes.append(shortened(rel, given_s=wall_s, limit_s=rubric.limits.submission_timeout))
    td = result.teardown or {}
    if td.get("status") in ("timeout", "not-run"):
        notes.append(finish_cut(rel, "teardown", cut=td.get("cut"), given_s=float(td.get("given_s") or 0.0),
                                limit_s=_limit_of(td.get("cut"), rubric=rubric, limits=limits, own_s=TEARDOWN_TIMEOUT_S),
                                started=td["status"] == "timeout"))
    return notes


def verify_in_time(result: Any, rel: str, *, rubric: Rubric, limits: Any, submission_end: float | None,
                   verify_run: Callable[..., dict[str, Any]], **kw: Any) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The `verified` block of `result` (a grader.execute.RunResult) from `verify_run`
    (grader.verify.verify_run, given `kw`), the evaluator given at most what is left of the run's
    wall time and of the submission's time (ending at `submission_end`, Unix seconds) plus
    FINISH_GRACE_S; with the note to add when that time cut it, or left none to start it."""
    from grader.verify.host import VERIFY_TIMEOUT_S

    if (result.teardown or {}).get("status") in ("timeout", "not-run"):
        # nothing was captured in time (noted already): verify_run says so, evaluating nothing
        return verify_run(limits=limits, timeout_s=0.0, **kw), None
    run_end = result.started_at + result.startup_s + limits.wall_timeout_s
    given, cut = finish_window(now=time.time(), cap_s=VERIFY_TIMEOUT_S, run_end=run_end, submission_end=submission_end)
    limit_s = _limit_of(cut, rubric=rubric, limits=limits, own_s=VERIFY_TIMEOUT_S)
    if given < 1.0:
        note = finish_cut(rel, "evaluation", cut=cut, given_s=given, limit_s=limit_s, started=False)
        return {"reason": "the time limit left no time for the independent evaluation of the trained model "
                          "(see the run's notes)"}, note
    verified = verify_run(limits=limits, timeout_s=given, **kw)
    if verified.pop("timed_out", False):
        return verified, finish_cut(rel, "evaluation", cut=cut, given_s=given, limit_s=limit_s)
    return verified, None


def budget_problems(evidence: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The grade's `problems` rows (`{flag, code, message, path}`) of every run-budget note."""
    return [{"flag": n["code"], "code": n["code"], "message": str(n.get("message", "")), "path": ev.get("path")}
            for ev in evidence for n in ev.get("notes") or ()
            if isinstance(n, Mapping) and n.get("code") in BUDGET_FLAGS]
