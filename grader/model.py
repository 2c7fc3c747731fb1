"""The typed, frozen records that stages pass to each other, and their JSON round trip.

Every record is a frozen dataclass whose fields are JSON-friendly (str, int, float, bool,
None, tuples of those, dicts with str keys, other records). `record_to_json` and
`record_from_json` turn any such record into plain JSON data and back, so each stage can
write its output to disk and a later stage can be re-run from it alone.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")

FileKind = Literal["notebook", "script", "report", "weights", "data", "other"]


# --------------------------------------------------------------------------- JSON round trip


def record_to_json(obj: Any) -> Any:
    """Plain JSON data (dicts, lists, str, numbers, None) for a record or a value inside one."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: record_to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [record_to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): record_to_json(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"{type(obj).__name__} is not a JSON-serializable record value")


def record_from_json(cls: type[T], data: Any) -> T:
    """Rebuild a record of type `cls` (or any annotated type) from `record_to_json` output."""
    return _from_json(cls, data)


def _from_json(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return data
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{tp.__name__}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{tp.__name__}: unknown field(s) {sorted(unknown)}")
        kwargs = {k: _from_json(hints[k], v) for k, v in data.items()}
        return tp(**kwargs)
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _from_json(arg, data)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{data!r} matches none of {args}: {'; '.join(errors)}")
    if origin is Literal:
        if data not in args:
            raise ValueError(f"{data!r} is not one of {args}")
        return data
    if origin is tuple:
        if not isinstance(data, list | tuple):
            raise ValueError(f"expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], v) for v in data)
        return tuple(_from_json(a, v) for a, v in zip(args, data, strict=True))
    if origin is list:
        return [_from_json(args[0], v) for v in data]
    if origin is dict:
        return {k: _from_json(args[1], v) for k, v in data.items()}
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if isinstance(tp, type) and isinstance(data, tp) and not (tp is int and isinstance(data, bool)):
        return data
    raise ValueError(f"expected {getattr(tp, '__name__', tp)}, got {data!r}")


class Record:
    """Mixin giving a frozen dataclass `to_json()`, `from_json()` and `dumps()`/`loads()`."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return record_to_json(self)

    @classmethod
    def from_json(cls: type[T], data: dict[str, Any]) -> T:
        return record_from_json(cls, data)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2)

    @classmethod
    def loads(cls: type[T], text: str) -> T:
        return record_from_json(cls, json.loads(text))


# --------------------------------------------------------------------------- intake


@dataclass(frozen=True, slots=True)
class Problem(Record):
    """Something wrong with a submission, told so that the student understands it."""

    code: str
    """Short stable code, e.g. `bad-name`, `zip-slip`, `bad-notebook`."""
    message: str
    """One or two sentences addressed to the student."""
    path: str | None = None
    """The archive member or file the problem is about (posix, as in the archive), if any."""


@dataclass(frozen=True, slots=True)
class SubmittedFile(Record):
    """One file of a submission, as extracted into the work folder."""

    path: str
    """Path relative to the submission's work folder, posix separators."""
    kind: FileKind
    """What the file is used as: notebook, script, report, weights, data or other."""
    bytes: int
    """Size on disk after extraction."""
    sha256: str
    """Hex SHA-256 of the extracted content."""
    note: str | None = None
    """Anything intake noticed about this file (e.g. an invalid notebook), else None."""


_REPORT_WORDS = ("report", "報告", "报告", "writeup")


@dataclass(frozen=True, slots=True)
class Submission(Record):
    """One student's submission after intake: where it came from, what is in it, what is wrong."""

    student_id: str | None
    """Id read from the file name; a placeholder (flagged `no-student-id`) when it cannot be read."""
    source: str
    """The original archive, file or folder this was read from (never modified)."""
    source_sha256: str | None
    """Hex SHA-256 of the original file (of a sorted listing of hashes for a folder)."""
    submitted_at: str | None
    """ISO 8601 submission time, if known."""
    submitted_at_source: str
    """Where `submitted_at` comes from: `file-mtime`, `lms-archive-entry` or `unknown`."""
    work_dir: str
    """Folder the submission was extracted into; all `files` paths are relative to it."""
    files: tuple[SubmittedFile, ...]
    """Every extracted file (junk skipped), sorted by path."""
    problems: tuple[Problem, ...]
    """Everything intake found wrong, in the order found."""
    duplicates: tuple[str, ...] = ()
    """Other files handed in for the same student that were not used (older copies)."""
    stripped_prefix: str | None = None
    """A single top-level folder that was looked through (removed from paths), if any."""
    junk_skipped: int = 0
    """How many OS/editor junk entries (`__MACOSX/`, `.DS_Store`, ...) were skipped."""
    student_name: str | None = None
    """The student's name as the LMS download folder shows it, if any."""
    lms_participant_id: str | None = None
    """The LMS (Moodle) participant id from the download folder name, if any."""
    claimed_id: str | None = None
    """The id the file's name claims when several LMS participants claim it (`student_id` is then
    made unique per participant, and the grade is withheld from the LMS import: `id-conflict`)."""

    def of_kind(self, kind: FileKind) -> tuple[SubmittedFile, ...]:
        return tuple(f for f in self.files if f.kind == kind)

    @property
    def notebooks(self) -> tuple[SubmittedFile, ...]:
        return self.of_kind("notebook")

    @property
    def scripts(self) -> tuple[SubmittedFile, ...]:
        return self.of_kind("script")

    @property
    def reports(self) -> tuple[SubmittedFile, ...]:
        """Report files, the most report-looking first (name says report, then pdf/docx)."""

        def rank(f: SubmittedFile) -> tuple[int, int, str]:
            name = f.path.rsplit("/", 1)[-1].lower()
            named = any(w in name for w in _REPORT_WORDS)
            formal = name.endswith((".pdf", ".docx"))
            return (0 if named else 1, 0 if formal else 1, f.path)

        return tuple(sorted(self.of_kind("report"), key=rank))

    @property
    def problem_codes(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.problems)


__all__ = [
    "FileKind",
    "Problem",
    "Record",
    "SubmittedFile",
    "Submission",
    "record_from_json",
    "record_to_json",
]
