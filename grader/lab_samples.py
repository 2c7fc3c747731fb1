"""A lab package's sample submissions as zips, and whether a grade is the outcome a sample expects.

A sample is a folder of files under the lab (`labs.Sample`); its zip holds those files, sorted,
as stored members dated 2018-09-29 12:00 (a fixed date, so the same folder always gives the
same bytes: the run cache keys on them). The zip's mtime says when it was handed in:
`late_days` days after one hour before the rubric's deadline, so a sample with `late_days: 0`
is on time and one with `late_days: 2` is two days late. These are the bytes
`grader.samples.write_archive` writes for the generated LAB01 samples.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

from grader.labs import LabPackage, Sample, sample_files

ZIP_DATE = (2018, 9, 29, 12, 0, 0)
"""Date and time of every member of a sample zip."""

_BEFORE_DEADLINE_S = 3600.0


def sample_mtime(deadline_epoch: float | None, late_days: float) -> float | None:
    """The zip's mtime in epoch seconds: `late_days` days (of 86400 s) after one hour before the
    deadline; None (the file's own time is kept) when the rubric has no deadline."""
    if deadline_epoch is None:
        return None
    return deadline_epoch - _BEFORE_DEADLINE_S + late_days * 86400.0


def zip_members(files: Mapping[str, bytes], path: Path, *, mtime: float | None = None) -> Path:
    """Writes `files` (member name → bytes) to the zip `path` in sorted order, each member dated
    `ZIP_DATE`; sets the file's mtime (epoch seconds) when given. Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), files[name])
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_sample_zip(pkg: LabPackage, sample: Sample, folder: Path, *,
                     deadline_epoch: float | None) -> Path:
    """`folder/<sample.archive>` holding the sample folder's files. Raises LabError when the
    sample's folder does not exist."""
    return zip_members(sample_files(pkg, sample), Path(folder) / sample.archive,
                       mtime=sample_mtime(deadline_epoch, sample.late_days))


def write_sample_zips(pkg: LabPackage, folder: Path, *, deadline_epoch: float | None) -> list[Path]:
    """Every sample of the lab as a zip in `folder`, plus `outcomes.json` (archive name →
    student_id and outcome, in manifest order). Raises LabError for a missing sample folder."""
    paths, outcomes = [], {}
    for sample in pkg.manifest.samples:
        paths.append(write_sample_zip(pkg, sample, folder, deadline_epoch=deadline_epoch))
        outcomes[sample.archive] = {"student_id": sample.student_id, "outcome": sample.outcome}
    (Path(folder) / "outcomes.json").write_text(json.dumps(outcomes, indent=2) + "\n")
    return paths


def expect_differences(sample: Sample, grade: Mapping[str, Any] | None) -> list[str]:
    """What differs between the grade (a Grade as JSON) and what the sample expects: one line
    per difference (total within 0.01 point, each named item's status, each flag); [] when it
    gets its stated outcome."""
    want = sample.expect
    if grade is None:
        return [f"{sample.student_id}: not graded (expected total {want.total})"]
    out: list[str] = []
    if want.total is not None and abs(float(grade["total"]) - want.total) > 0.01:
        out.append(f"{sample.student_id}: total {grade['total']:g}, expected {want.total:g}")
    parts = [*grade.get("parts", []), *([grade["bonus"]] if grade.get("bonus") else [])]
    status = {it["id"]: it["status"] for part in parts for it in part["items"]}
    for item, expected in want.items.items():
        got = status.get(item, "absent")
        if got != expected:
            out.append(f"{sample.student_id}: item {item} is {got}, expected {expected}")
    for flag in want.flags:
        if flag not in grade.get("flags", []):
            out.append(f"{sample.student_id}: flag {flag} missing (has {', '.join(grade.get('flags', [])) or 'none'})")
    return out
