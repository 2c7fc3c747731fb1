"""Grade a batch: local worker processes or a Dask cluster, resumable, with live progress.

A student is done when `grades/<id>.json` exists and `runs/<id>/done.json` holds the key of
the same input (archive digest, mode, sandbox, datasets, grader version); a rerun of the
same command skips them, so `kill -9` mid-batch costs only the submissions in flight.
A submission that crashes its worker process (not just its sandbox) is retried once, then
recorded as an error grade.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from grader.errors import GraderError
from grader.fsutil import write_json_atomic
from grader.pipeline import GradeSettings, grade_submission, settings_key
from grader.safename import safe_name

Log = Callable[[str], None]


@dataclass
class Progress:
    """Counts for the live display; ETA from the mean time of finished submissions."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    running: int = 0
    started: float = 0.0
    durations: list[float] | None = None

    def eta_s(self, workers: int) -> float | None:
        if not self.durations:
            return None
        left = self.total - self.done - self.skipped
        return sum(self.durations) / len(self.durations) * left / max(workers, 1)

    def line(self, workers: int) -> str:
        eta = self.eta_s(workers)
        return (f"{self.done + self.skipped}/{self.total} done ({self.skipped} already graded), "
                f"{self.running} running, {self.failed} need a TA's look"
                + (f", about {eta / 60:.1f} min left" if eta is not None else ""))


def is_done(candidate, settings: GradeSettings) -> bool:
    from grader.intake import source_digest

    name = safe_name(candidate.student_id)
    grade = settings.out / "grades" / f"{name}.json"
    marker = settings.out / "runs" / name / "done.json"
    if not (grade.is_file() and marker.is_file()):
        return False
    try:
        key = json.loads(marker.read_text())["key"]
        # Graded without the GPU its code needs: the TA's rerun with --gpus grades it again.
        if settings.gpus and "needs-gpu" in (json.loads(grade.read_text()).get("flags") or []):
            return False
    except (ValueError, KeyError, OSError, AttributeError):
        return False
    if settings.gpus and gpu_share_ran_out(settings.out / "runs" / name, settings.runs_per_gpu):
        return False  # stopped at 1/K of a GPU's memory: a rerun with a smaller K grades it again
    return key == settings_key(settings, source_digest(candidate))


_GPU_SHARE = re.compile(r"GPU memory share \([^()]*, 1/(\d+)\) was exhausted")


def gpu_share_ran_out(runs: Path, runs_per_gpu: int) -> bool:
    """Whether a run under `runs` (OUT/runs/<id>) stopped because its GPU memory share, 1/K of a
    GPU with K above `runs_per_gpu`, ran out (grader.diagnose.gpu_memory_message): a batch with
    fewer runs per GPU gives it a larger share, so it is graded again."""
    for path in runs.glob("*/run.json"):
        try:
            found = _GPU_SHARE.search(str(json.loads(path.read_text()).get("reason") or ""))
        except (OSError, ValueError, AttributeError):
            continue
        if found and int(found.group(1)) > runs_per_gpu:
            return True
    return False


def crash_grade(candidate, settings: GradeSettings, reason: str) -> dict[str, Any]:
    """The grade of a submission that crashed the grader's worker twice: every item `error`."""
    from grader.rubric import load_rubric
    from grader.score import score

    rubric = load_rubric(settings.rubric_path, base_dir=settings.lab_dir)
    grade = json.loads(score(rubric, {}, student_id=candidate.student_id, submitted_at=None,
                             submitted_at_source="unknown", flags_in=["grader-crash"]).to_json())
    grade["error"] = reason
    write_json_atomic(settings.out / "grades" / f"{safe_name(candidate.student_id)}.json", grade)
    return grade


def in_worker(task: Callable[..., dict], candidate: Any, settings: GradeSettings) -> dict:
    """`task(candidate, settings)` in a worker process, with any exception it raises made fit
    to cross back to the batch. A `GraderError` (a rubric edited mid-batch) pickles whole and
    stops the batch with its own message, as it would in one process; an exception that
    cannot be pickled would otherwise reach the batch as a dead worker (the pool broken, the
    submission retried and recorded as "died twice"), so it is sent as a RuntimeError naming
    it (a GraderError stays one). Raises whatever `task` raises, so converted."""
    try:
        return task(candidate, settings)
    except Exception as e:
        try:
            pickle.loads(pickle.dumps(e))
        except Exception:  # noqa: BLE001 - any failure to pickle or rebuild it
            what = f"{type(e).__name__}: {e} (sent from the worker as text: the error does not pickle)"
            raise (GraderError if isinstance(e, GraderError) else RuntimeError)(what) from None
        raise


def grade_on_gpu(candidate: Any, settings: GradeSettings) -> dict:
    """A Dask task's `grade_submission` when the batch has GPUs: the run gets the one of
    `settings.gpus` with the fewest runs in flight in this worker process (grader.gpu.worker_slots:
    a worker started with `--nthreads N*K --resources GPU=N*K` runs N*K tasks, K on each GPU)."""
    from grader.gpu import worker_slots

    with worker_slots(settings.gpus, settings.runs_per_gpu).held() as g:
        return grade_submission(candidate, replace(settings, gpus=(g,)))


def grade_in_dask(candidate: Any, settings: GradeSettings) -> dict:
    """A Dask task: `grade_submission` (or `grade_on_gpu` when the batch has GPUs) with this
    machine's share of its cores for the run: cores ÷ the worker's threads, as CPU threads and
    as its cgroup's CPU quota (the batch cannot know each worker machine's cores)."""
    settings = with_worker_share(settings)
    return (grade_on_gpu if settings.gpus else grade_submission)(candidate, settings)


def with_worker_share(settings: GradeSettings) -> GradeSettings:
    """`settings` with cpu_threads and cpu_share set for the Dask worker this runs in, from its
    thread count (`--nthreads`), where the batch did not set them; unchanged outside a worker."""
    if settings.cpu_threads and settings.cpu_share:
        return settings
    try:
        from distributed import get_worker

        threads = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError, TypeError):
        return settings
    return with_share(settings, threads)


def with_share(settings: GradeSettings, runs: int) -> GradeSettings:
    """`settings` with each run's CPU threads (cores ÷ `runs`, at least 1) and CPU quota
    (`cpu_share(runs)`) where not set already, for `runs` runs at once on this host."""
    return replace(settings, cpu_threads=settings.cpu_threads or max(1, (os.cpu_count() or 1) // max(1, runs)),
                   cpu_share=settings.cpu_share or cpu_share(runs))


def _needs_attention(grade: dict) -> bool:
    return bool(set(grade.get("flags") or []) - {"late"})


def _drain(items: Sequence, settings: GradeSettings, *, workers: int, progress: Progress,
           tick: Callable[[], None], task: Callable[..., dict]) -> list:
    """Grades `items` in a pool of `workers` processes. Returns the candidates that were in
    flight when a worker process died (the pool is then rebuilt for the rest). With GPUs, each
    task's settings name one GPU, the one with the fewest tasks in flight, held until it ends."""
    import multiprocessing

    from grader.gpu import Slots

    ctx = multiprocessing.get_context("forkserver")
    queue, suspects = list(items), []
    # Uncapped: it never waits. With at most GPUs x K tasks in flight (check_gpu_workers), the
    # least loaded GPU holds fewer than K whenever a task starts.
    slots = Slots(settings.gpus) if settings.gpus else None
    while queue:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        futures: dict[Future, Any] = {}
        held: dict[Future, int] = {}
        broken = False
        try:
            while (queue and not broken) or futures:
                while queue and not broken and len(futures) < workers:
                    c = queue.pop(0)
                    g = slots.take() if slots is not None else None
                    fut = pool.submit(in_worker, task, c, settings if g is None else replace(settings, gpus=(g,)))
                    fut.started = time.monotonic()  # type: ignore[attr-defined]
                    futures[fut] = c
                    if g is not None:
                        held[fut] = g
                progress.running = len(futures)
                tick()
                finished, _ = wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
                for fut in finished:
                    c = futures.pop(fut)
                    if fut in held:
                        slots.give(held.pop(fut))  # type: ignore[union-attr]
                    try:
                        grade = fut.result()
                    except BrokenProcessPool:
                        suspects.append(c)
                        broken = True
                        continue
                    except GraderError:
                        raise
                    except Exception as e:  # noqa: BLE001 - a grader bug on one submission
                        grade = crash_grade(c, settings, f"{type(e).__name__}: {e}")
                    progress.done += 1
                    progress.durations.append(time.monotonic() - fut.started)  # type: ignore[attr-defined]
                    progress.failed += _needs_attention(grade)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        progress.running = 0
    return suspects


def run_local(todo: Sequence, settings: GradeSettings, *, workers: int, progress: Progress,
              tick: Callable[[], None], task: Callable[..., dict] = grade_submission) -> None:
    """Grades `todo` in `workers` processes; `task(candidate, settings)` is grade_submission.

    When a worker process dies (not a sandbox: those end as results), every submission that
    was in flight is retried once on its own, so the one that kills its worker again is
    recorded as an error grade and the others are graded normally.
    """
    suspects = _drain(todo, settings, workers=workers, progress=progress, tick=tick, task=task)
    for c in suspects:
        if _drain([c], settings, workers=1, progress=progress, tick=tick, task=task):
            crash_grade(c, settings, "the grader's worker process died twice on this submission")
            progress.done += 1
            progress.failed += 1


def run_dask(todo: Sequence, settings: GradeSettings, *, scheduler: str, progress: Progress,
             tick: Callable[[], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise GraderError("--scheduler needs Dask: pip install 'dllab-grader[dask]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as e:
        raise GraderError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    with client:
        # With GPUs, a task holds one `GPU` resource, and its worker gives it one GPU (grade_on_gpu).
        resources = {"GPU": 1} if settings.gpus else None
        # retries=1: a task whose worker died is run once more elsewhere.
        futures = [client.submit(in_worker, grade_in_dask, c, settings, key=f"grade-{safe_name(c.student_id)}",
                                 retries=1, resources=resources, pure=False) for c in todo]
        by_key = {f.key: c for f, c in zip(futures, todo)}
        progress.running = min(len(futures), sum(client.nthreads().values()))
        tick()
        for fut in as_completed(futures):
            c = by_key[fut.key]
            try:
                grade = fut.result()
                write_json_atomic(settings.out / "grades" / f"{safe_name(c.student_id)}.json", grade)
            except GraderError:
                raise
            except Exception as e:  # noqa: BLE001 - KilledWorker and grader bugs alike
                grade = crash_grade(c, settings, f"{type(e).__name__}: {e}")
            progress.done += 1
            progress.failed += _needs_attention(grade)
            tick()


def default_workers(gpus: Sequence[int], runs_per_gpu: int = 1) -> int:
    """`runs_per_gpu` runs per GPU when there are GPUs, else half the cores (each run trains with
    2 threads)."""
    if gpus:
        return len(gpus) * runs_per_gpu
    return max(1, (os.cpu_count() or 2) // 2)


def check_gpu_workers(workers: int, settings: GradeSettings) -> None:
    """Raises GraderError when `workers` local runs would not each find a place on the batch's
    GPUs (len(gpus) x runs_per_gpu): a run over K on a GPU would find its memory share taken."""
    places = len(settings.gpus) * settings.runs_per_gpu
    if settings.gpus and workers > places:
        raise GraderError(f"--workers {workers} is more than the GPUs' {places} place(s) (--gpus "
                          f"{','.join(map(str, settings.gpus))} x --runs-per-gpu {settings.runs_per_gpu}): "
                          f"every run holds one; raise --runs-per-gpu or give fewer workers")


def check_gpus_present(settings: GradeSettings) -> None:
    """Raises GraderError when this machine's nvidia-smi does not list every GPU of `--gpus` (a
    local batch only: a Dask worker's machine has its own): a run given a GPU that is not there
    would train on the CPU without a word, and time out where the rubric counts on a GPU."""
    from grader.gpu import host_gpus

    if not settings.gpus:
        return
    found, why = host_gpus()
    missing = [g for g in settings.gpus if g not in {info.index for info in found}]
    if missing:
        have = (f"nvidia-smi lists GPU {', '.join(str(info.index) for info in found)}" if found else why)
        raise GraderError(f"--gpus {','.join(map(str, settings.gpus))}: this machine has no GPU "
                          f"{', '.join(map(str, missing))} ({have}); grade without --gpus, or on the machine "
                          f"that has them (with --scheduler, the workers' machines are not checked here)")


def gpu_line(settings: GradeSettings, *, scheduler: str | None = None) -> str:
    """The batch log's line on its GPUs: how many runs share each and each run's memory share
    (as this machine's nvidia-smi tells; a Dask worker's machine may differ)."""
    from grader.gpu import host_gpus, mps_pipe

    k = settings.runs_per_gpu
    known = {g.index: g for g in host_gpus()[0]}
    shares = [f"GPU {g}: {known[g].memory_mib // k} MiB" if g in known and known[g].memory_mib else f"GPU {g}: 1/{k}"
              for g in settings.gpus]
    pipe = mps_pipe()
    how = (f"NVIDIA MPS limits where a sandboxed client can use it ({pipe}), else the caching allocator's "
           f"fraction" if pipe else "the caching allocator's fraction (no NVIDIA MPS here)")
    where = " on each Dask worker's GPUs" if scheduler else ""
    if k == 1:
        return f"1 run per GPU{where}, each seeing only its own GPU, all of its memory"
    return (f"{k} runs per GPU{where}, each seeing only its own GPU; memory per run: {', '.join(shares)}, "
            f"held by {how}; see each run's log.txt")


def cpu_share(workers: int) -> float:
    """The CPU cores one run may use when `workers` runs share this host: cores ÷ workers
    (e.g. 1.0 for 2 workers on 2 cores), rounded down to 0.01 core, at least 0.1."""
    return max(0.1, int(100 * (os.cpu_count() or 1) / max(1, workers)) / 100)


def grade_batch(paths: Sequence[Path], settings: GradeSettings, *, workers: int | None = None,
                scheduler: str | None = None, log: Log = lambda s: None) -> list[dict[str, Any]]:
    """Grades every submission under `paths` not already graded; returns all grades in OUT."""
    from grader.intake import IntakeLimits, discover, expand_bundles, mark_lms_times
    from grader.intake.lms import attach_bundle_problems
    from grader.lateness import fmt_deadline
    from grader.rubric import load_rubric

    rubric = load_rubric(settings.rubric_path, base_dir=settings.lab_dir)
    pattern = rubric.submission.pattern
    # An LMS "download all" zip is a folder of the class's submissions, not one student's zip.
    # Its entry times carry no zone: they are read in the deadline's (the course's Moodle's).
    zip_tz = rubric.deadline.tzinfo if rubric.deadline is not None else None
    paths, folders, bundles = expand_bundles(paths, settings.out / "work", IntakeLimits(), pattern=pattern,
                                             zip_tz=zip_tz)
    for bundle in bundles:
        zone = (f"the deadline's time zone ({fmt_deadline(rubric.deadline).rsplit(' ', 1)[-1]})"
                if rubric.deadline is not None else "the grader's local time")
        log(f"{bundle.name} is the LMS's download of all submissions: graded as the folders inside it; "
            f"its archive times (upload times, stored without a time zone) are read in {zone}")
    candidates = discover(paths, pattern=pattern, exclude=[settings.out, *bundles])
    candidates = attach_bundle_problems(mark_lms_times(candidates, folders), folders)
    if not candidates:
        raise GraderError(f"no submissions found under {', '.join(map(str, paths))} "
                          f"(expected files named like {rubric.submission.pattern.format(student_id='0556001')})")
    if settings.submitted_at:
        from grader import config

        times, warnings = config.match_submitted_at(settings.submitted_at, [c.student_id for c in candidates])
        for warning in warnings:
            log(f"warning: {warning}")
        if times != dict(settings.submitted_at):
            settings = replace(settings, submitted_at=times)
            config.save(settings)  # `rescore` must use the same matched times
    for warning in lateness_warnings(candidates, rubric, settings):
        log(f"warning: {warning}")
    todo = [c for c in candidates if not is_done(c, settings)]
    restamp = stale_times([c.student_id for c in candidates if c not in todo], settings)
    progress = Progress(total=len(candidates), skipped=len(candidates) - len(todo), started=time.monotonic(),
                        durations=[])
    workers = workers or default_workers(settings.gpus, settings.runs_per_gpu)
    if not scheduler:
        check_gpus_present(settings)
        check_gpu_workers(workers, settings)
    if not scheduler:  # Dask: each machine's own cores are unknown here (grade_in_dask)
        settings = with_share(settings, workers)
    log(f"{len(candidates)} submission(s); {progress.skipped} already graded, {len(todo)} to grade "
        f"with {'Dask at ' + scheduler if scheduler else f'{workers} worker(s)'}")
    if settings.gpus and todo:
        log(gpu_line(settings, scheduler=scheduler))
    if restamp:
        from grader.rescore import rescore_students

        log(f"{len(restamp)} already graded student(s) have a new submission time (--submitted-at): "
            f"their lateness is scored again from the stored runs ({', '.join(restamp[:5])}"
            f"{', ...' if len(restamp) > 5 else ''})")
        rescore_students(restamp, settings, workers=workers)
    with _display(progress, workers, log) as tick:
        if todo and scheduler:
            run_dask(todo, settings, scheduler=scheduler, progress=progress, tick=tick)
        elif todo:
            run_local(todo, settings, workers=workers, progress=progress, tick=tick)
    names = {safe_name(c.student_id) for c in candidates}
    return [json.loads(p.read_text()) for p in sorted((settings.out / "grades").glob("*.json"))
            if p.stem in names]


def stale_times(student_ids: Sequence[str], settings: GradeSettings) -> list[str]:
    """The graded students whose grade was scored with another submission time than `settings`
    now give them (a --submitted-at CSV given, changed or dropped since): their runs stand, only
    lateness must be scored again."""
    from grader.model import Submission, record_from_json
    from grader.pipeline import submission_time

    stale = []
    for sid in student_ids:
        try:
            grade = json.loads((settings.out / "grades" / f"{safe_name(sid)}.json").read_text())
            sub = record_from_json(Submission, json.loads(
                (settings.out / "runs" / safe_name(sid) / "submission.json").read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            continue  # not a finished grade: is_done already sent it to be graded
        when, source = submission_time(sid, sub.submitted_at, sub.submitted_at_source, settings)
        was = grade.get("submitted_at")
        try:
            was_when = datetime.fromisoformat(was) if was else None
        except ValueError:
            was_when = None
        if source != grade.get("submitted_at_source") or (when is None) != (was_when is None) or (
                when is not None and was_when is not None and _instant(when) != _instant(was_when)):
            stale.append(sid)
    return stale


def _instant(when: datetime) -> float:
    return (when if when.tzinfo else when.astimezone()).timestamp()


def lateness_warnings(candidates: Sequence, rubric, settings: GradeSettings, *,
                      now: datetime | None = None) -> list[str]:
    """What looks wrong with the batch's submission times against the rubric's deadline, before
    anything is graded (a deadline from another term, copy times, clocks in the future)."""
    from grader.lateness import When, batch_warnings
    from grader.pipeline import submission_time

    times = [When(*submission_time(c.student_id, c.submitted_at, c.submitted_at_source, settings))
             for c in candidates]
    return batch_warnings(rubric.deadline, rubric.late, times, now=now or datetime.now(timezone.utc))


class _display:
    """A live progress line on a terminal; a plain log line per change otherwise."""

    def __init__(self, progress: Progress, workers: int, log: Log) -> None:
        self.progress, self.workers, self.log = progress, workers, log
        self.last = ""
        self.live = None

    def __enter__(self) -> Callable[[], None]:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live("", console=Console(stderr=True), refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self.tick

    def tick(self) -> None:
        line = self.progress.line(self.workers)
        if self.live is not None:
            self.live.update(line)
        elif line.split(",")[0] != self.last.split(",")[0] or not self.last:
            self.log(line)
        self.last = line

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
        self.log(self.progress.line(self.workers))
