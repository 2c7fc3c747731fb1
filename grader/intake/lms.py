"""Moodle's "download all submissions" zip: unpacked (safely) into the run, then read as a folder.

The bundle holds one `<Full Name>_<participant id>_assignsubmission_file_/` folder per
student (older Moodle: one flat `<Full Name>_<participant id>_assignsubmission_file_<file>` per
upload). Moodle stamps each entry with the upload time, so extraction keeps those times and the
submissions found inside say `submitted_at_source="lms-archive-entry"`. Zip times carry no time
zone: they are read in the deadline's time zone (`zip_tz`), the one the course's Moodle runs in.
"""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from grader.errors import GraderError
from grader.intake.discover import Candidate
from grader.intake.extract import Budget, IntakeLimits, is_junk, safe_parts, scan_zip, write_entries
from grader.intake.names import member_name
from grader.intake.classify import sha256_file
from grader.intake.naming import DEFAULT_PATTERN, NamePattern, moodle_file, moodle_folder

# A bundle holds a whole class: its caps are a class's worth of single-submission caps.
_CLASS_SIZE = 300
# Written last into an extracted bundle's folder: the extraction finished and can be reused.
_COMPLETE = ".dllab-complete"


def is_moodle_bundle(path: Path) -> bool:
    """A zip whose top level holds only Moodle's per-student submission folders or flat files
    (a student's zip with their own files beside such a folder is theirs, not a class's)."""
    try:
        with zipfile.ZipFile(path) as zf:
            tops = {(safe_parts(member_name(i)) or ("",))[0] for i in zf.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError, IndexError):
        return False
    tops = {t for t in tops if t and not is_junk((t,))}
    return bool(tops) and all(moodle_folder(t) or moodle_file(t) for t in tops)


def find_bundles(paths: Sequence[Path | str], *, pattern: str = DEFAULT_PATTERN) -> list[Path]:
    """The Moodle bundles among `paths` and directly inside the folders given (where a TA saves
    the download), told by what they hold, whatever their name (Moodle names the download
    `COURSE-Assignment-<number>.zip`, which reads like an id); but never a zip named exactly by
    the lab's pattern (`dllab_<id>.zip`): that is a student's own, whatever it holds."""
    names = NamePattern(pattern)
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            children = [path]
        elif path.is_dir():
            children = sorted(c for c in path.iterdir() if c.is_file() and c.suffix.lower() == ".zip")
        else:
            continue
        found += [c for c in children if names.read(c.name).match != "exact" and is_moodle_bundle(c)]
    return list(dict.fromkeys(found))


def expand_bundles(paths: Sequence[Path | str], work_root: Path, limits: IntakeLimits, *,
                   pattern: str = DEFAULT_PATTERN,
                   zip_tz: dt.tzinfo | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    """What to discover: `paths` plus the folder each Moodle bundle was extracted into; those
    folders; and the bundle zips themselves, which discovery must skip (a bundle read as one
    student's zip would merge the whole class into one bogus grade).

    Entry times (the upload times) are read in `zip_tz`, the deadline's time zone; None means
    the grader machine's local zone. A bundle is extracted once into
    `work_root/_lms/<name>-<digest>/` and reused by a later run on the same bundle read in the same
    zone, so a resumed batch sees the same files (and skips what it graded).
    """
    bundles = find_bundles(paths, pattern=pattern)
    out = [Path(p) for p in paths if Path(p) not in bundles]
    folders: list[Path] = []
    zone = _zone_label(zip_tz)
    for path in bundles:
        dest = work_root / "_lms" / f"{path.stem}-{sha256_file(path)[:12]}"
        marker = dest / _COMPLETE
        if not marker.is_file() or marker.read_text() != zone:
            # a half-done extraction of an earlier run, or one whose times were read in another zone
            shutil.rmtree(dest, ignore_errors=True)
            _extract(path, dest, limits, zip_tz)
            marker.write_text(zone)
        out.append(dest)
        folders.append(dest)
    return out, folders, bundles


def _zone_label(tz: dt.tzinfo | None) -> str:
    """What an extraction's times were read in, kept beside it: `zip times read in UTC+08:00`."""
    if tz is None:
        return "zip times read in the grader's local time"
    return f"zip times read in {tz.tzname(None) or tz}"


def _extract(path: Path, dest: Path, limits: IntakeLimits, zip_tz: dt.tzinfo | None) -> None:
    dest.mkdir(parents=True)
    class_limits = replace(
        limits,
        max_total_bytes=limits.max_total_bytes * _CLASS_SIZE,
        max_files=limits.max_files * _CLASS_SIZE,
    )
    budget = Budget(class_limits)
    zf, scan = scan_zip(path, path.name, zip_tz=zip_tz)
    if zf is None:
        raise GraderError(f"{path}: the LMS download could not be read ({scan.problems[0].message})")
    with zf:
        _, problems = write_entries(scan.entries, dest, budget)
    problems += budget.problems() + scan.problems
    if problems:
        raise GraderError(f"{path}: the LMS download could not be unpacked completely: {problems[0].message}")


def mark_lms_times(candidates: list[Candidate], folders: list[Path]) -> list[Candidate]:
    """Candidates found inside an extracted bundle carry Moodle's upload time, not a download time."""
    return [
        replace(c, submitted_at_source="lms-archive-entry")
        if c.submitted_at is not None and any(f in c.path.parents for f in folders)
        else c
        for c in candidates
    ]
