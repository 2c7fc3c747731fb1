"""Intake: from the files a TA downloaded to one `Submission` per student, safely unpacked.

    candidates = discover(paths, pattern=rubric.submission_pattern)
    submissions = [unpack(c, work_root, limits=limits) for c in candidates]

or `intake(paths, work_root)` for both. A bad archive is never an exception: it becomes a
`Submission` whose `problems` say what is wrong. `GraderError` is raised only for a missing
input path, a bad name pattern or a work folder that already holds a submission.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grader.errors import GraderError
from grader.intake.classify import classify, sha256_file
from grader.intake.discover import Candidate, discover
from grader.intake.extract import (
    Budget,
    IntakeLimits,
    Scan,
    scan_folder,
    scan_zip,
    single_file,
    strip_single_folder,
    write_entries,
)
from grader.intake.lms import attach_bundle_problems, expand_bundles, mark_lms_times
from grader.intake.naming import DEFAULT_PATTERN, NamePattern, archive_ext
from grader.intake.owners import inner_ids
from grader.intake.problems import MESSAGES, code_unopened, problem
from grader.model import Problem, Submission, SubmittedFile
from grader.safename import safe_name, shown_name

__all__ = ["Candidate", "IntakeLimits", "MESSAGES", "discover", "intake", "source_digest", "unpack"]

# Magic numbers of archives students hand in instead of a zip.
_MAGIC = {
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07": "RAR",
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_CONTENT_KINDS = ("notebook", "script")


def intake(
    paths: Sequence[Path | str],
    work_root: Path | str,
    *,
    pattern: str = DEFAULT_PATTERN,
    limits: IntakeLimits = IntakeLimits(),
    zip_tz: dt.tzinfo | None = None,
) -> list[Submission]:
    """Discover every submission under `paths` and unpack each into `work_root/<student_id>/`.

    A Moodle "download all submissions" zip among `paths` is first unpacked into
    `work_root/_lms/` and read as the folder it contains; its upload times are read in `zip_tz`
    (the deadline's time zone), else the machine's local zone.
    """
    work_root = Path(work_root)
    work_root.mkdir(parents=True, exist_ok=True)
    work_root = work_root.resolve()  # discover compares real paths
    paths, bundles, zips = expand_bundles(paths, work_root, limits, pattern=pattern, zip_tz=zip_tz)
    candidates = discover(paths, pattern=pattern, exclude=[work_root, *zips])
    candidates = attach_bundle_problems(mark_lms_times(candidates, bundles), bundles)
    return [unpack(c, work_root, limits=limits, pattern=pattern) for c in candidates]


def unpack(candidate: Candidate, work_root: Path | str, *, limits: IntakeLimits = IntakeLimits(),
           pattern: str = DEFAULT_PATTERN) -> Submission:
    """Extract one candidate into `work_root/<safe_name(student_id)>/` and describe what it contains;
    `pattern` (the lab's submission name) tells files inside named for another student id."""
    dest = Path(work_root).absolute() / safe_name(candidate.student_id)
    try:
        dest.mkdir(mode=0o755, parents=True)
    except FileExistsError:
        raise GraderError(f"{dest} already exists; intake needs a fresh work folder") from None
    budget = Budget(limits)
    problems: list[Problem] = list(candidate.problems)

    zf, scan, format_problems = _scan_source(candidate)
    try:
        entries, stripped = strip_single_folder(scan.entries)
        written, found = write_entries(entries, dest, budget)
    finally:
        if zf is not None:
            zf.close()
    problems += format_problems + scan.problems + found

    readable, junk, notes = not scan.fatal, scan.junk, {}
    lone = len(written) == 1
    for rel in [w for w in written if w.lower().endswith(".zip")]:
        inner = _open_nested(dest, rel, budget, only=lone)
        written += inner.written
        problems += inner.problems
        junk += inner.junk
        notes[rel] = inner.note
        readable = readable and not (lone and inner.fatal)  # a zip of a broken zip says it all

    problems += budget.problems()
    files, file_problems = classify(dest, written, notes)
    problems += file_problems
    problems += _inner_id_problems(candidate, stripped, files, written, pattern)
    if readable:
        if not any(f.kind in _CONTENT_KINDS for f in files) and not code_unopened(problems):
            problems.append(problem("no-notebook"))
        if not any(f.kind == "report" for f in files):
            problems.append(problem("no-report"))

    source = candidate.path
    return Submission(
        student_id=candidate.student_id,
        source=shown_name(str(source)),
        source_sha256=source_digest(candidate),
        submitted_at=candidate.submitted_at,
        submitted_at_source=candidate.submitted_at_source,
        work_dir=str(dest),
        files=tuple(files),
        problems=tuple(problems),
        duplicates=tuple(shown_name(str(p)) for p in candidate.duplicates),
        stripped_prefix=stripped,
        junk_skipped=junk,
        student_name=candidate.student_name,
        lms_participant_id=candidate.lms_participant_id,
        claimed_id=candidate.claimed_id,
    )


def _inner_id_problems(candidate: Candidate, stripped: str | None, files: Sequence[SubmittedFile],
                       written: Sequence[str], pattern: str) -> list[Problem]:
    """`inner-id` for each notebook, script, zip or top folder inside the submission that is named
    for another student id than the one it is graded as (someone else's work handed in, or a typo)."""
    if any(p.code == "no-student-id" for p in candidate.problems):
        return []
    own = candidate.claimed_id or candidate.student_id
    paths = [stripped] if stripped else []
    paths += [f.path for f in files if f.kind in _CONTENT_KINDS]
    paths += [w for w in written if w.lower().endswith(".zip")]
    return [problem("inner-id", path, name=candidate.path.name, other=other, student_id=own)
            for path, other in inner_ids(own, paths, NamePattern(pattern))]


def _scan_source(candidate: Candidate) -> tuple[zipfile.ZipFile | None, Scan, list[Problem]]:
    """Check the candidate's entries (nothing written yet): a zip, a folder, or a lone file."""
    source, name = candidate.path, shown_name(candidate.path.name)
    if candidate.kind == "folder":
        return None, scan_folder(source), []
    fmt = _archive_format(source)
    if fmt == "zip":
        zf, scan = scan_zip(source, name)
        return zf, scan, []
    if fmt is not None:
        unsupported = problem("unsupported-format", name, name=name, format=fmt, expected=candidate.expected_name)
        return None, Scan(fatal=True), [unsupported]
    return None, single_file(source, name), []


@dataclass(frozen=True, slots=True)
class _Nested:
    written: list[str]
    problems: list[Problem]
    junk: int
    note: str
    fatal: bool


def _open_nested(dest: Path, rel: str, budget: Budget, *, only: bool) -> _Nested:
    """Open a zip found inside the submission, one level deep, sharing the size budget.

    A lone inner zip (a zip of a zip) is unpacked in place; otherwise into a folder named
    after it. Zips inside it are kept as files and reported, not opened.
    """
    zf, scan = scan_zip(dest / rel, rel, prefix=rel + "/")
    problems = list(scan.problems)
    if zf is None:
        return _Nested([], problems, scan.junk, "zip archive that could not be opened", True)
    parent, _, zip_name = rel.rpartition("/")
    target = parent
    if not only:
        target = "/".join(filter(None, (parent, zip_name[: -len(".zip")])))
        if (dest / target).exists():
            target += "_unzipped"
    with zf:
        entries, _ = strip_single_folder(scan.entries)
        (dest / target).mkdir(mode=0o755, parents=True, exist_ok=True)
        written, found = write_entries(entries, dest / target, budget, prefix=rel + "/")
    problems += found
    inner = ["/".join(filter(None, (target, w))) for w in written]
    problems += [problem("nested-too-deep", p) for p in inner if p.lower().endswith(".zip")]
    return _Nested(inner, problems, scan.junk, f"zip archive, opened into `{target or '.'}/`", scan.fatal)


def _archive_format(path: Path) -> str | None:
    """`zip`, another archive format's name, or None for a plain file (a lone notebook)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return "zip"  # let scan_zip report it as unreadable
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    ext = archive_ext(path.name)
    if ext == ".zip":
        return "zip"  # damaged or empty: scan_zip explains which
    if ext is not None:
        return ext.lstrip(".")
    return None


def source_digest(candidate: Candidate) -> str:
    """sha256 of what the student handed in (the archive, or every file of an unpacked folder)."""
    return _tree_sha256(candidate.path) if candidate.kind == "folder" else sha256_file(candidate.path)


def _tree_sha256(folder: Path) -> str:
    """One hash for a folder: over the sorted relative paths and hashes of its regular files."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath, f)
            if p.is_file() and not p.is_symlink():
                # the name's own bytes: one that is not UTF-8 is hashed as it is, never a crash
                line = f"{p.relative_to(folder).as_posix()}\0{sha256_file(p)}\n"
                digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
