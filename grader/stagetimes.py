"""Where the time of grading one submission goes: seconds per stage, written beside its runs.

`dllab grade` writes OUT/runs/<id>/timings.json for each submission it grades (issue 21's profile):
intake (unpacking, the run plan), per notebook the sandboxed run split as its RunResult says
(sandbox and kernel start, the grader's start-up code with the probe, the cells, the teardown, and
the rest: capture, shutdown, reaping), the evidence (parsing the probe's events and the notebook),
each verification sandbox, then the checks and scoring, the report, and the files written.
`bench/bench_profile.py` reads them into a table.

Stages are recorded by whoever does the work (`stage("verify")`) into the submission's `Timings`,
found through a context variable, so the functions between need no extra argument; with none
active (a test calling a function directly), nothing is recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from typing import Any

_CURRENT: contextvars.ContextVar["Timings | None"] = contextvars.ContextVar("dllab_timings", default=None)


class Timings:
    """Seconds per stage (wall clock, time.perf_counter), summed over repeats, in first-seen order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

    def to_json(self) -> dict[str, Any]:
        """{"stages": {name: seconds}, "total_s": seconds since this began} (3 decimals)."""
        return {"stages": {k: round(v, 3) for k, v in self.seconds.items()},
                "total_s": round(time.perf_counter() - self.started, 3)}


@contextlib.contextmanager
def recording() -> Iterator[Timings]:
    """Makes a fresh Timings the current one for the block (one submission)."""
    timings = Timings()
    token = _CURRENT.set(timings)
    try:
        yield timings
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Adds the block's wall time to stage `name` of the current Timings, if any."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings = _CURRENT.get()
        if timings is not None:
            timings.add(name, time.perf_counter() - t0)


def now() -> float:
    """The stage clock (time.perf_counter, seconds): for a stage whose start and end are not one
    block, `t0 = now()` ... `add(name, now() - t0)`."""
    return time.perf_counter()


def add(name: str, seconds: float) -> None:
    """Adds `seconds` to stage `name` of the current Timings, if any."""
    timings = _CURRENT.get()
    if timings is not None:
        timings.add(name, seconds)

