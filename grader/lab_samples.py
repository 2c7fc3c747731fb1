"""`dllab lab validate --samples`: grade a lab's sample submissions and compare each with the
outcome lab.yaml states for it (`samples[].expect`: total, item statuses, flags).

Each sample's folder is zipped the way grader.samples.write_archive zips (sorted members, one
fixed member time, stored), with the archive's time set `late_days` after one hour before the
deadline; those stated times are also passed as `--submitted-at` times (write_times_csv), so a
sample is graded at its time even when the deadline is still ahead. The samples are graded in execute mode, in the sandbox, on stand-in datasets
(`dllab data synth`, size `tiny` unless told) or on the datasets given, with the expected
metrics of the lab's references: a `--reference FILE`, or trained here as lab.yaml's `demo:`
says (parts and seeds), as the demo does.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from grader.datasets.standins import stand_ins
from grader.labs import LabPackage, Sample, sample_files

Log = Callable[[str], None]

MEMBER_TIME = (2018, 9, 29, 12, 0, 0)
"""Every member's time in a sample zip (grader.samples.write_archive's), so the bytes are fixed."""


@dataclass(frozen=True)
class SampleResult:
    """One sample's grade against its stated outcome."""

    student_id: str
    archive: str
    total: float | None
    """Points it got (None: no grade was written)."""
    expected_total: float | None
    differences: tuple[str, ...]
    """One line per way the grade differs from `expect`; empty when it matches."""


def write_sample(pkg: LabPackage, sample: Sample, folder: Path, *, deadline_epoch: float | None) -> Path:
    """The sample's zip in `folder`; its time is `late_days` after (deadline - 1 h) when the
    rubric has a deadline. Raises LabError when the sample's folder is missing."""
    files = sample_files(pkg, sample)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sample.archive
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, date_time=MEMBER_TIME), files[name])
    if deadline_epoch is not None:
        mtime = deadline_epoch - 3600 + sample.late_days * 86400
        os.utime(path, (mtime, mtime))
    return path


def sample_time(sample: Sample, deadline: dt.datetime) -> dt.datetime:
    """A sample's stated submission time: `late_days` days after one hour before the deadline."""
    return deadline - dt.timedelta(hours=1) + dt.timedelta(days=sample.late_days)


def write_times_csv(samples: Sequence[Sample], deadline: dt.datetime | None, path: Path) -> Path | None:
    """The samples' stated times as a `--submitted-at` CSV (student_id,submitted_at), so they are
    graded at those times for any deadline, this term's included (a time after "now" is the
    fixture's, not a wrong clock). None when the rubric has no deadline."""
    if deadline is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{s.student_id},{sample_time(s, deadline).isoformat()}" for s in samples]
    path.write_text("student_id,submitted_at\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def real_datasets(data_root: Path, names: Sequence[str], *, log: Log = lambda s: None) -> list[str]:
    """Installs each dataset of `names` real (the registry's `install_real`) under `data_root`,
    once; returns those now real there. One that cannot be installed (its package is missing)
    is left to the stand-in, saying so."""
    from grader.datasets import locate, read_manifest, registry
    from grader.errors import DatasetError

    done = []
    for name in names:
        spec = registry.get(name)
        try:
            manifest = read_manifest(locate(name, data_root))
        except DatasetError:
            manifest = None
        if manifest is not None and manifest.get("synthetic") is False:
            log(f"the real {spec.title} already in {data_root}")
            done.append(name)
            continue
        if spec.install_real is None:
            log(f"no real {spec.title} offline: its stand-in is used")
            continue
        try:
            folder = spec.install_real(data_root)
        except DatasetError as exc:
            log(f"the real {spec.title} is not installed ({exc}): its stand-in is used")
            continue
        log(f"the real {spec.title} copied to {folder}")
        done.append(name)
    return done


def grade_samples(pkg: LabPackage, *, out: Path, data_args: Mapping[str, Path], size: str = "tiny",
                  reference: Path | None = None, workers: int | None = None, sandbox: str = "bwrap",
                  pdf: bool = False, log: Log = lambda s: None) -> list[SampleResult]:
    """Grades every sample of `pkg` into `out` (submissions/, datasets/, graded/) and compares
    each grade with its `expect`. Raises GraderError (LabError) when the lab has no samples,
    a sample folder is missing or grading cannot start."""
    from grader import config
    from grader.batch import grade_batch
    from grader.errors import GraderError
    from grader.fsutil import write_json_atomic
    from grader.rescore import finish
    from grader.rubric import load_rubric

    samples = pkg.manifest.samples
    if not samples:
        raise GraderError(f"lab {pkg.id} lists no samples in lab.yaml (samples:), so --samples has nothing to grade")
    rubric = load_rubric(pkg.rubric_path)
    out = out.resolve()
    data = {name: Path(folder) for name, folder in data_args.items() if name in rubric.datasets}
    absent = [name for name in rubric.datasets if name not in data]
    # lab.yaml demo.real: the datasets its samples' outcomes are for, real where a package ships them
    real = real_datasets(out / "datasets", [n for n in pkg.manifest.demo.real if n in absent], log=log)
    data.update({name: out / "datasets" for name in real})
    absent = [name for name in absent if name not in real]
    if absent:
        data.update(stand_ins(absent, out / "datasets", size=size, log=log))
    graded = out / "graded"
    graded.mkdir(parents=True, exist_ok=True)
    if reference is None and pkg.manifest.references:
        reference = graded / "reference.json"
        if not reference.is_file():
            from grader.reference_run import run_reference

            demo = pkg.manifest.demo.reference
            log(f"training {pkg.id}'s references ({', '.join(demo.parts) or 'all parts'}, "
                f"{demo.seeds} seed(s)) for the samples' expected metrics")
            doc = run_reference(pkg.dir, data=data, device="auto", seeds=demo.seeds, only=demo.parts,
                                epochs=demo.epochs, log=log)
            write_json_atomic(reference, doc)
    deadline = rubric.deadline.timestamp() if rubric.deadline else None
    subs = out / "submissions"
    for sample in samples:
        write_sample(pkg, sample, subs, deadline_epoch=deadline)
    times = write_times_csv(samples, rubric.deadline, out / "submitted_at.csv")
    settings = config.prepare(lab=str(pkg.dir), rubric=None, out=graded, data_args=data, reference=reference,
                              mode="execute", sandbox=sandbox, pdf=pdf, submitted_at=times, log=log)
    grades = grade_batch([subs], settings, workers=workers, log=log)
    finish(settings.out, grades, pdf=pdf)
    by_id = {str(g["student_id"]): g for g in grades}
    return [compare(sample, by_id.get(sample.student_id)) for sample in samples]


def _items(grade: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for part in list(grade.get("parts") or []) + ([grade["bonus"]] if grade.get("bonus") else []):
        for item in part.get("items") or []:
            out[str(item.get("id"))] = item
    return out


def compare(sample: Sample, grade: Mapping[str, Any] | None) -> SampleResult:
    """How `grade` differs from the sample's `expect` (nothing when it matches)."""
    expect = sample.expect
    if grade is None:
        return SampleResult(sample.student_id, sample.archive, None, expect.total,
                            (f"no grade: {sample.archive} was not graded (see the messages above)",))
    diffs: list[str] = []
    total = float(grade.get("total") or 0.0)
    if expect.total is not None and abs(total - expect.total) > 1e-6:
        diffs.append(f"total {total:g}, expected {expect.total:g}")
    items = _items(grade)
    for item_id, status in expect.items.items():
        got = items.get(item_id)
        if got is None:
            diffs.append(f"item {item_id}: not in the grade, expected {status}")
        elif got.get("status") != status:
            diffs.append(f"item {item_id}: {got.get('status')} ({got.get('points', 0):g} points), expected {status}")
    flags = set(grade.get("flags") or [])
    for flag in expect.flags:
        if flag not in flags:
            diffs.append(f"flag {flag} missing (flags: {', '.join(sorted(flags)) or 'none'})")
    return SampleResult(sample.student_id, sample.archive, total, expect.total, tuple(diffs))
