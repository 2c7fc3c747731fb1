"""Moodle's "download all submissions" zip: unpacked (safely) into the run, then read as a folder.

The bundle holds one `<Full Name>_<participant id>_assignsubmission_file_/` folder per
student. Moodle stamps each entry with the upload time, so extraction keeps those times
and the submissions found inside say `submitted_at_source="lms-archive-entry"`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from grader.errors import GraderError
from grader.intake.discover import Candidate
from grader.intake.extract import Budget, IntakeLimits, safe_parts, scan_zip, write_entries
from grader.intake.names import member_name
from grader.intake.naming import moodle_folder

# A bundle holds a whole class: its caps are a class's worth of single-submission caps.
_CLASS_SIZE = 300


def is_moodle_bundle(path: Path) -> bool:
    """A zip whose top-level folders are Moodle's per-student submission folders."""
    try:
        with zipfile.ZipFile(path) as zf:
            tops = {(safe_parts(member_name(i)) or ("",))[0] for i in zf.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError, IndexError):
        return False
    return any(moodle_folder(t) for t in tops)


def expand_bundles(paths: Sequence[Path | str], work_root: Path, limits: IntakeLimits) -> tuple[list[Path], list[Path]]:
    """`paths` with each Moodle bundle replaced by the folder it was extracted into, and those folders."""
    out: list[Path] = []
    folders: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not (path.is_file() and is_moodle_bundle(path)):
            out.append(path)
            continue
        dest = work_root / "_lms" / path.stem
        n = 1
        while dest.exists():
            n += 1
            dest = work_root / "_lms" / f"{path.stem}-{n}"
        dest.mkdir(parents=True)
        class_limits = replace(
            limits,
            max_total_bytes=limits.max_total_bytes * _CLASS_SIZE,
            max_files=limits.max_files * _CLASS_SIZE,
        )
        budget = Budget(class_limits)
        zf, scan = scan_zip(path, path.name)
        if zf is None:
            raise GraderError(f"{path}: the LMS download could not be read ({scan.problems[0].message})")
        with zf:
            _, problems = write_entries(scan.entries, dest, budget)
        problems += budget.problems() + scan.problems
        if problems:
            raise GraderError(f"{path}: the LMS download could not be unpacked completely: {problems[0].message}")
        out.append(dest)
        folders.append(dest)
    return out, folders


def mark_lms_times(candidates: list[Candidate], folders: list[Path]) -> list[Candidate]:
    """Candidates found inside an extracted bundle carry Moodle's upload time, not a download time."""
    return [
        replace(c, submitted_at_source="lms-archive-entry")
        if c.submitted_at is not None and any(f in c.path.parents for f in folders)
        else c
        for c in candidates
    ]
