"""Moodle's "download all submissions" zip: unpacked (safely) into the run, then read as a folder.

The bundle holds one `<Full Name>_<participant id>_assignsubmission_file_/` folder per
student (older Moodle: one flat `<Full Name>_<participant id>_assignsubmission_file_<file>` per
upload). Moodle stamps each entry with the upload time, so extraction keeps those times and the
submissions found inside say `submitted_at_source="lms-archive-entry"`. Zip times carry no time
zone: they are read in the deadline's time zone (`zip_tz`), the one the course's Moodle runs in.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from grader.errors import GraderError
from grader.intake.discover import Candidate
from grader.intake.extract import Budget, IntakeLimits, is_junk, safe_parts, scan_zip, write_entries
from grader.intake.names import member_name, open_zip
from grader.intake.classify import sha256_file
from grader.intake.naming import DEFAULT_PATTERN, NamePattern, moodle_file, moodle_folder
from grader.model import Problem

# A bundle holds a whole class: its caps are a class's worth of single-submission caps.
_CLASS_SIZE = 300
# Written last into an extracted bundle's folder: the extraction finished and can be reused.
_COMPLETE = ".dllab-complete"
# Beside it: what extraction refused, by participant (attach_bundle_problems).
_PROBLEMS = ".dllab-problems.json"


def is_moodle_bundle(path: Path) -> bool:
    """A zip whose top level holds only Moodle's per-student submission folders or flat files
    (a student's zip with their own files beside such a folder is theirs, not a class's)."""
    try:
        zf, fixed = open_zip(path)
        with zf:
            tops = {(safe_parts(member_name(i, fixed)) or ("",))[0] for i in zf.infolist()}
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
    if budget.problems():  # a class's worth of caps exhausted: the TA's download, not one student's upload
        raise GraderError(f"{path}: the LMS download could not be unpacked completely: {budget.problems()[0].message}")
    _keep_member_problems(dest, [*scan.problems, *problems])


def _keep_member_problems(dest: Path, problems: list[Problem]) -> None:
    """A member refused or damaged (an upload over the size limit, a link) is its participant's
    problem, never the batch's: kept beside the extraction for `attach_bundle_problems`, with the
    participant's folder made so they are graded (and told) even when nothing of theirs was written."""
    kept = []
    for p in problems:
        top = (p.path or "").split("/")[0]
        who = moodle_folder(top) or (moodle_file(top) or (None, ""))[0]
        if who is None:
            raise GraderError(f"{dest.name}: the LMS download holds `{top}`, which is no participant's: {p.message}")
        (dest / f"{who.student_name}_{who.participant_id}_assignsubmission_{who.plugin}_").mkdir(exist_ok=True)
        kept.append({"participant": who.participant_id, "code": p.code, "message": p.message, "path": p.path})
    (dest / _PROBLEMS).write_text(json.dumps(kept))


def attach_bundle_problems(candidates: list[Candidate], folders: list[Path]) -> list[Candidate]:
    """Each participant's candidates from an extracted bundle carry what extraction refused of theirs."""
    by_pid: dict[tuple[Path, str], list[Problem]] = {}
    for folder in folders:
        try:
            rows = json.loads((folder / _PROBLEMS).read_text())
        except (OSError, ValueError):
            continue
        for r in rows:
            by_pid.setdefault((folder, r["participant"]), []).append(Problem(code=r["code"], message=r["message"],
                                                                             path=r["path"]))
    out = []
    for c in candidates:
        found = [p for f in folders if f in c.path.parents for p in by_pid.get((f, c.lms_participant_id or ""), [])]
        out.append(replace(c, problems=(*c.problems, *found)) if found else c)
    return out


def mark_lms_times(candidates: list[Candidate], folders: list[Path]) -> list[Candidate]:
    """Candidates found inside an extracted bundle carry Moodle's upload time, not a download time."""
    return [
        replace(c, submitted_at_source="lms-archive-entry")
        if c.submitted_at is not None and any(f in c.path.parents for f in folders)
        else c
        for c in candidates
    ]
