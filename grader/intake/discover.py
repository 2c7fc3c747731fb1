"""Finding submissions in whatever folder a TA has, and deciding whose each one is.

Accepted inputs: zip files, a folder of zips, a Moodle "download all submissions" folder
(one `<Full Name>_<participant id>_assignsubmission_file_/` folder per student), or a
student's unpacked folder (self-check). Every archive-looking file becomes a candidate,
even misnamed ones, so no student is silently dropped; several candidates for one student
are reduced to the newest, and the rest are recorded as duplicates; but never the uploads of two
LMS participants, which are each graded on their own (grader.intake.owners).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from grader.errors import GraderError
from grader.intake.extract import is_junk
from grader.intake.naming import (
    DEFAULT_PATTERN,
    MoodleFolder,
    NamePattern,
    NameReading,
    archive_ext,
    moodle_file,
    moodle_folder,
    placeholder_id,
)
from grader.intake.owners import resolve_owners, where
from grader.intake.problems import problem
from grader.model import Problem
from grader.safename import safe_name, shown_name, unsafe_reason

_CODE_EXTS = (".ipynb", ".py")
_MAX_DEPTH = 3


@dataclass(frozen=True, slots=True)
class Candidate:
    """One student's submission as found on disk, before anything is unpacked."""

    student_id: str
    """The id read from the name, or a placeholder flagged by a `no-student-id` problem."""
    path: Path
    """The archive, single file or unpacked folder to read."""
    kind: Literal["file", "folder"]
    """`file` (an archive or a lone file) or `folder` (already unpacked)."""
    problems: tuple[Problem, ...] = ()
    """Problems with the name or with how it was handed in."""
    duplicates: tuple[Path, ...] = ()
    """Older files for the same student, not used."""
    submitted_at: str | None = None
    """ISO 8601 time of the file (its mtime; an LMS download sets it to the upload time)."""
    submitted_at_source: str = "unknown"
    """Where `submitted_at` came from."""
    student_name: str | None = None
    """The name shown by the LMS download folder."""
    lms_participant_id: str | None = None
    """The LMS participant id from the download folder name."""
    copy_number: int = 0
    """The `(n)` a browser added to a second download of the same name; breaks mtime ties."""
    lms_plugin: str | None = None
    """The Moodle plugin it came from: `file` (uploads) or `onlinetext` (text typed into Moodle)."""
    expected_name: str = ""
    """The name the rubric's pattern asks for, for messages (`dllab_0556001.zip`)."""
    claimed_id: str | None = None
    """The id the file's name claims, when uploads of several LMS participants claim it:
    `student_id` is then `<id>-moodle-<participant>`, one per participant (grader.intake.owners)."""


def discover(
    paths: Sequence[Path | str], *, pattern: str = DEFAULT_PATTERN, exclude: Sequence[Path] = ()
) -> list[Candidate]:
    """All submissions under `paths`, exactly one per student, sorted by student id.

    `exclude` lists folders never to look into (the run's own work and output folders).
    """
    names = NamePattern(pattern)
    skip = {os.path.realpath(p) for p in exclude}
    found: list[Candidate] = []
    for raw in dict.fromkeys(os.path.realpath(p) for p in paths):  # the same input twice is one input
        path = Path(raw)
        if not path.exists():
            raise GraderError(f"{path}: no such file or folder")
        if path.is_file():
            found.append(_file_candidate(path, names, None))
        else:
            _scan_dir(path, names, found, skip, depth=0)
    found = list({os.path.realpath(c.path): c for c in found}.values())  # a file inside a folder also given
    chosen = _one_per_student(resolve_owners(_unique_placeholders(_join_online_text(found))))
    return [_flag_unsafe_id(c) for c in chosen]


def _flag_unsafe_id(c: Candidate) -> Candidate:
    """An id that cannot be a file name as it is (107 digits, `CON`) is that submission's
    problem, said on its grade; its files go under `safe_name(id)` (grader.safename)."""
    why = unsafe_reason(c.student_id)
    if why is None:
        return c
    flag = problem("unsafe-id", c.path.name, name=c.path.name, why=why, safe=safe_name(c.student_id))
    return replace(c, problems=(*c.problems, flag))


def _scan_dir(folder: Path, names: NamePattern, found: list[Candidate], skip: set[str], *, depth: int) -> None:
    if os.path.realpath(folder) in skip:
        return
    moodle = moodle_folder(shown_name(folder.name))
    if moodle is not None:
        found.extend(_moodle_candidates(folder, names, moodle))
        return
    if _looks_unpacked(folder, names):
        found.append(_folder_candidate(folder, names, None, sorted(folder.iterdir())))
        return
    for child in sorted(folder.iterdir()):
        if is_junk((child.name,)) or os.path.realpath(child) in skip:
            continue
        if child.is_dir() and not child.is_symlink():
            if depth < _MAX_DEPTH:
                _scan_dir(child, names, found, skip, depth=depth + 1)
        elif child.is_file() and (archive_ext(child.name) or _lone_submission(child, names)):
            found.append(_file_candidate(child, names, None))


def _lone_submission(path: Path, names: NamePattern) -> bool:
    """`dllab_0556001.ipynb` handed in without a zip; not the TA's `roster_20241003.csv`."""
    return path.suffix.lower() in _CODE_EXTS and names.read(_own_name(path.name)).student_id is not None


def _own_name(name: str) -> str:
    """The student's own file name: a flat Moodle file's name without Moodle's
    `<Full Name>_<participant id>_assignsubmission_file_` before it, else `name`."""
    flat = moodle_file(name)
    return flat[1] if flat else name


def _looks_unpacked(folder: Path, names: NamePattern) -> bool:
    """A student's own folder (code inside, no archives) rather than a folder of submissions."""
    children = [c for c in folder.iterdir() if not is_junk((c.name,))]
    if any(c.is_file() and archive_ext(c.name) for c in children):
        return False
    code = [c for c in children if c.is_file() and c.suffix.lower() in _CODE_EXTS]
    if code:  # several students' lone notebooks make a folder of submissions
        return len({names.read(_own_name(c.name)).student_id for c in code} - {None}) <= 1
    # `dllab_0556001/src/lab1.ipynb`: named like a submission, holds no archives.
    return names.read_folder(folder.name).match == "exact" and bool(children)


def _moodle_candidates(folder: Path, names: NamePattern, moodle: MoodleFolder) -> list[Candidate]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not is_junk(p.relative_to(folder).parts))
    archives = [p for p in files if archive_ext(p.name)]
    if not archives:
        if len(files) == 1:
            return [_file_candidate(files[0], names, moodle)]
        return [_folder_candidate(folder, names, moodle, files)]
    extras = tuple(problem("extra-file", p.name, name=p.name) for p in files if p not in archives)
    out = []
    for path in archives:
        c = _file_candidate(path, names, moodle)
        out.append(replace(c, problems=c.problems + extras))
    return out


def _file_candidate(path: Path, names: NamePattern, moodle: MoodleFolder | None) -> Candidate:
    name = shown_name(path.name)  # bytes that are not UTF-8 read as `\xff`: a loose name at worst
    flat = moodle_file(name) if moodle is None else None
    if flat is not None:  # older Moodle's flat file: the id is in the student's own file name
        moodle, name = flat
    reading = names.read(name)
    problems = _name_problems(name, reading, names, moodle, lone=archive_ext(name) is None)
    mtime = path.stat().st_mtime
    return Candidate(
        expected_name=names.expected(reading.student_id or "<student_id>"),
        student_id=reading.student_id or _placeholder(shown_name(path.name), moodle),
        path=path,
        kind="file",
        problems=problems,
        submitted_at=datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat(timespec="seconds"),
        submitted_at_source="file-mtime",
        student_name=moodle.student_name if moodle else None,
        lms_participant_id=moodle.participant_id if moodle else None,
        copy_number=reading.copy_number,
        lms_plugin=moodle.plugin if moodle else None,
    )


def _folder_candidate(folder: Path, names: NamePattern, moodle: MoodleFolder | None, files: Sequence[Path] = ()) -> Candidate:
    """An unpacked folder: a student's own (self-check), or loose files uploaded to Moodle.

    Its name is not something the student handed in, so only a missing id is a naming
    problem; files uploaded to Moodle without a zip are `not-an-archive`.
    """
    folder_name = shown_name(folder.name)
    reading = names.read_folder(folder_name) if moodle is None else NameReading(None, "none", 0)
    for f in files:  # no id in the folder's name: take it from a file's (`dllab_0556001.ipynb`)
        if reading.student_id is None:
            reading = names.read(shown_name(f.name))
    if reading.student_id is None:
        problems = _name_problems(folder_name, reading, names, moodle, lone=False)
    elif moodle is not None:
        shown = ", ".join(shown_name(f.name) for f in files)
        problems = (problem("not-an-archive", shown, name=shown, expected=names.expected(reading.student_id)),)
    else:
        problems = ()
    return Candidate(
        expected_name=names.expected(reading.student_id or "<student_id>"),
        student_id=reading.student_id or _placeholder(folder_name, moodle),
        path=folder,
        kind="folder",
        problems=problems,
        student_name=moodle.student_name if moodle else None,
        lms_participant_id=moodle.participant_id if moodle else None,
        lms_plugin=moodle.plugin if moodle else None,
    )


def _name_problems(name: str, reading: NameReading, names: NamePattern, moodle: MoodleFolder | None, *, lone: bool) -> tuple[Problem, ...]:
    if reading.student_id is None:
        lms = f"; Moodle lists it under {moodle.student_name}, participant {moodle.participant_id}" if moodle else ""
        sid = _placeholder(name, moodle)
        return (problem("no-student-id", name, name=name, expected=names.expected(), lms=lms, student_id=sid),)
    expected = names.expected(reading.student_id)
    if lone:
        return (problem("not-an-archive", name, name=name, expected=expected),)
    if reading.match == "loose":
        return (problem("bad-name", name, name=name, expected=expected, student_id=reading.student_id),)
    return ()


def _placeholder(name: str, moodle: MoodleFolder | None) -> str:
    if moodle is not None:
        return f"moodle-{moodle.participant_id}"
    return placeholder_id(Path(name).stem)


def _join_online_text(found: list[Candidate]) -> list[Candidate]:
    """Moodle's online-text entry (`<Name>_<pid>_assignsubmission_onlinetext_/onlinetext.html`) is
    not a submission of its own: beside the same participant's uploads it is noted on them and
    left out; a participant who only typed text keeps it as their submission (so the TA sees it)."""
    uploads = {c.lms_participant_id for c in found if c.lms_participant_id and c.lms_plugin == "file"}
    typed = [c for c in found if c.lms_plugin not in (None, "file") and c.lms_participant_id in uploads]
    if not typed:
        return found
    out = []
    for c in found:
        if c in typed:
            continue
        notes = tuple(problem("online-text", t.path.name, name=t.path.name) for t in typed
                      if t.lms_participant_id == c.lms_participant_id and c.lms_plugin == "file")
        out.append(replace(c, problems=c.problems + notes) if notes else c)
    return out


def _unique_placeholders(found: list[Candidate]) -> list[Candidate]:
    """Two unreadable names must not merge into one student: number the placeholders."""
    seen: dict[str, int] = {}
    out = []
    for c in found:
        if any(p.code == "no-student-id" for p in c.problems):
            n = seen.get(c.student_id, 0) + 1
            seen[c.student_id] = n
            if n > 1:
                c = replace(c, student_id=f"{c.student_id}-{n}")
        out.append(c)
    return out


def _one_per_student(found: list[Candidate]) -> list[Candidate]:
    groups: dict[str, list[Candidate]] = {}
    for c in found:
        groups.setdefault(c.student_id.casefold(), []).append(c)
    out = []
    for group in groups.values():
        group.sort(key=lambda c: (_mtime(c.path), c.copy_number), reverse=True)
        chosen, older = group[0], group[1:]
        if older:
            dup = problem(
                "duplicate",
                count=len(group),
                student_id=chosen.student_id,
                chosen=where(chosen),
                others=", ".join(f"`{where(c)}`" for c in older),
            )
            chosen = replace(chosen, problems=(*chosen.problems, dup), duplicates=tuple(c.path for c in older))
        out.append(chosen)
    return sorted(out, key=lambda c: c.student_id.casefold())


def _mtime(path: Path) -> float:
    return path.stat().st_mtime
