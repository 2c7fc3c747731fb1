"""`dllab demo`: everything on generated data, offline, in a few minutes.

Stand-in datasets → reference metrics → a small class of sample submissions (complete,
partial, broken, hostile, misnamed and late) → graded in parallel in the sandbox → PDFs,
class summary and gradebook. Nothing here is faked: every number comes from a real run.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Callable

from grader.errors import GraderError

Log = Callable[[str], None]


def _world_readable(root: Path) -> None:
    """The sandbox runs student code as another uid when the grader is root. The grader-only
    hidden splits (`dllab-hidden/`, grader.hidden_split) stay 0700: only the grader reads them."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "dllab-hidden"]  # grader.hidden_split.HIDDEN_DIR
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            mode = p.lstat().st_mode
            if not stat.S_ISLNK(mode):
                p.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0))
    root.chmod(root.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)


def run_demo(out: Path, *, size: str = "small", workers: int = 2, sandbox: str = "bwrap", pdf: bool = True,
             log: Log = print) -> dict:
    """Runs the whole demo into `out`; returns {student_id: grade}."""
    from grader import config
    from grader.batch import grade_batch
    from grader.datasets import locate, synth
    from grader.fsutil import write_json_atomic
    from grader.reference_run import run_reference
    from grader.rescore import finish
    from grader.rubric import builtin_rubric, load_rubric
    from grader.samples import write_lab1_samples

    t0 = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "datasets"
    if not (data_root / "cifar-10-batches-py" / "manifest.json").is_file():
        log(f"[1/5] generating stand-in datasets ({size}) in {data_root}")
        synth(data_root, size=size, seed=0, names=["cifar10", "food11"], overwrite=True)
    else:
        log(f"[1/5] stand-in datasets already in {data_root}")
    _world_readable(data_root)
    data = {name: locate(name, data_root) for name in ("cifar10", "food11")}

    graded = out / "graded"
    graded.mkdir(exist_ok=True)
    ref_path = graded / "reference.json"
    if not ref_path.is_file():
        log("[2/5] training the LAB 1-1 and LAB 1-2 reference solutions (2 seeds, CPU)")
        doc = run_reference("lab1", data=data, device="auto", seeds=2, only=["lab1-1", "lab1-2"], log=log)
        write_json_atomic(ref_path, doc)
    else:
        log(f"[2/5] reference metrics already in {ref_path}")

    rubric = load_rubric(builtin_rubric("lab1"))
    subs = out / "submissions"
    log(f"[3/5] writing sample submissions to {subs} (see outcomes.json there)")
    deadline = rubric.deadline.timestamp() if rubric.deadline else None
    write_lab1_samples(subs, epochs=1, deadline_epoch=deadline)

    log(f"[4/5] grading them with {workers} workers, sandbox: {sandbox}")
    if sandbox == "none":
        from grader.sandbox import NONE_WARNING
        log(NONE_WARNING)
    settings = config.prepare(lab="lab1", rubric=None, out=graded, data_args=data, reference=ref_path,
                              mode="execute", sandbox=sandbox, pdf=pdf, log=log)
    grades = grade_batch([subs], settings, workers=workers, log=log)
    log("[5/5] class summary and gradebook")
    finish(graded, grades, pdf=pdf)

    outcomes = json.loads((subs / "outcomes.json").read_text())
    by_id = {g["student_id"]: g for g in grades}
    log("")
    log(f"{'student':>9}  {'score':>13}  built to show")
    for archive, o in outcomes.items():
        g = by_id.get(o["student_id"])
        score = f"{g['total']:6.2f} / {g['max']:g}" if g else "missing"
        log(f"{o['student_id']:>9}  {score:>13}  {o['outcome']}")
    log("")
    log(f"done in {time.perf_counter() - t0:.0f} s. Look at:")
    log(f"  {graded / 'summary.html'}   the class at a glance (also summary.pdf)")
    log(f"  {graded / 'feedback'}/<id>.pdf   each student's feedback")
    log(f"  {graded / 'grades.csv'}   the gradebook (moodle_grades.csv for an LMS import)")
    log(f"  {graded / 'runs'}/<id>/<notebook>/   executed notebooks, evidence.json, figures, logs")
    log(f"Re-score after editing a rubric, without running anything: "
        f".venv/bin/dllab rescore {graded} --rubric rubrics/lab1.yaml")
    if not grades:
        raise GraderError("the demo graded nothing; see the messages above")
    return by_id
