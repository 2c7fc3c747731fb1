"""Reading a student id from a file name, by the pattern the lab's rubric sets."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Literal

from grader.errors import GraderError

DEFAULT_PATTERN = "dllab_{student_id}.zip"
_PLACEHOLDER = "{student_id}"
_ID = r"[A-Za-z0-9]+"
# Browsers and LMSes add " (1)", "(2)", "-1"... to a second download of the same name.
_COPY_SUFFIX = re.compile(r"(?:\s*\(\d+\)|\s+-\s*copy|\s*-\s*複製|\s*-\s*副本)$", re.IGNORECASE)
# Extensions that make a name an archive, longest first so `.tar.gz` wins over `.gz`.
ARCHIVE_EXTS = (".tar.gz", ".tar.bz2", ".tar.xz", ".zip", ".7z", ".rar", ".tar", ".tgz", ".gz", ".bz2", ".xz")
# Moodle "download all submissions": one folder per student.
_MOODLE = re.compile(r"^(?P<name>.+?)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_?$")
# Older Moodle (and "download without folders"): one flat file per upload,
# `<Full Name>_<participant id>_assignsubmission_file_<the student's file name>`.
_MOODLE_FILE = re.compile(r"^(?P<name>.+?)_(?P<pid>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<file>.+)$")

Match = Literal["exact", "loose", "none"]


@dataclass(frozen=True, slots=True)
class NameReading:
    """What a file or folder name says about whose submission it is."""

    student_id: str | None
    """The id read from the name, or None."""
    match: Match
    """`exact` when the name follows the pattern, `loose` when the id was still readable."""
    copy_number: int
    """1 for `x (1).zip`, 0 without such a suffix: breaks ties between duplicates."""


@dataclass(frozen=True, slots=True)
class MoodleFolder:
    """A folder `<Full Name>_<participant id>_assignsubmission_file_` from Moodle."""

    student_name: str
    participant_id: str
    plugin: str = "file"
    """Moodle's submission plugin: `file` (uploads) or `onlinetext` (text typed into Moodle)."""


class NamePattern:
    """A rubric's submission name pattern such as `dllab_{student_id}.zip`, case-insensitive."""

    def __init__(self, pattern: str = DEFAULT_PATTERN) -> None:
        if pattern.count(_PLACEHOLDER) != 1:
            raise GraderError(f"submission name pattern {pattern!r} must contain {_PLACEHOLDER} exactly once")
        self.pattern = pattern
        before, after = pattern.split(_PLACEHOLDER)
        self._exact = re.compile(
            re.escape(before) + f"(?P<id>{_ID})" + re.escape(after), re.IGNORECASE
        )
        # Loose: the pattern's words in any case with any separators, each part optional,
        # any extension; the id must contain a digit so `homework.zip` is not read as an id.
        after_stem = _strip_ext(after)
        self._loose = re.compile(
            _loose_literal(before)
            + rf"(?P<id>(?=[A-Za-z]*\d){_ID})"
            + _loose_literal(after_stem),
            re.IGNORECASE,
        )
        self._digits = re.compile(r"(?<![A-Za-z0-9])(?P<id>[0-9]{6,12})(?![A-Za-z0-9])")

    def expected(self, student_id: str = "<student_id>") -> str:
        return self.pattern.replace(_PLACEHOLDER, student_id)

    def read(self, name: str) -> NameReading:
        """Read the id from a file name (`dllab_0556001 (1).zip`) or folder name (`dllab_0556001`).

        The id is always ASCII: full-width or other scripts' digits (`dllab_０５５６００１.zip`, typed
        with a CJK input method) are read as the digits they are, since the LMS's ID number is
        ASCII; such a name is only `loose`, so the student is told how it was read."""
        ascii_name = ascii_digits(name)
        if ascii_name != name:
            reading = self.read(ascii_name)
            return reading if reading.match == "none" else replace(reading, match="loose")
        stem, ext = _split_ext(name)
        copy = 0
        m = _COPY_SUFFIX.search(stem)
        if m:
            digits = re.sub(r"\D", "", m.group(0))
            copy = int(digits) if digits else 1
            stem = stem[: m.start()]
        m = self._exact.fullmatch(stem + ext)
        if m:
            return NameReading(m.group("id"), "exact", copy)
        m = self._loose.fullmatch(stem.strip())
        if m is None:
            m = self._digits.search(stem)
        if m:
            return NameReading(m.group("id"), "loose", copy)
        return NameReading(None, "none", copy)

    def read_folder(self, name: str) -> NameReading:
        """Like `read`, for an unpacked folder: `dllab_0556001/` counts as an exact name."""
        return self.read(name + _pattern_ext(self.pattern))


def moodle_folder(name: str) -> MoodleFolder | None:
    """Moodle's per-student folder `<Full Name>_<participant id>_assignsubmission_<plugin>_`, or None."""
    m = _MOODLE.match(name)
    if m is None:
        return None
    return MoodleFolder(student_name=m.group("name").strip(), participant_id=m.group("pid"), plugin=m.group("plugin"))


def moodle_file(name: str) -> tuple[MoodleFolder, str] | None:
    """A flat Moodle file `<Full Name>_<pid>_assignsubmission_file_<file name>`: who uploaded it,
    and the file's own name (which carries the student id), or None."""
    if moodle_folder(name) is not None:
        return None
    m = _MOODLE_FILE.match(name)
    if m is None:
        return None
    who = MoodleFolder(student_name=m.group("name").strip(), participant_id=m.group("pid"), plugin=m.group("plugin"))
    return who, m.group("file")


def ascii_digits(text: str) -> str:
    """`text` with compatibility forms folded (NFKC: full-width `０５５６` to `0556`) and any other
    script's decimal digits (Arabic-Indic, Devanagari...) written as ASCII digits."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(str(unicodedata.decimal(ch)) if not ch.isascii() and ch.isdecimal() else ch for ch in folded)


def archive_ext(name: str) -> str | None:
    """The archive extension of `name` (`.zip`, `.7z`, `.tar.gz`...), or None."""
    lower = name.lower()
    for ext in ARCHIVE_EXTS:
        if lower.endswith(ext):
            return ext
    return None


def placeholder_id(stem: str) -> str:
    """A clearly-not-real id for a submission whose name gives none: `unknown-homework`."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower()[:40]
    return f"unknown-{slug or 'submission'}"


def _split_ext(name: str) -> tuple[str, str]:
    ext = archive_ext(name)
    if ext is None:
        dot = name.rfind(".")
        ext = name[dot:] if dot > 0 else ""
    return name[: len(name) - len(ext)], name[len(name) - len(ext):]


def _strip_ext(literal: str) -> str:
    return _split_ext(literal)[0] if literal.startswith(".") or "." in literal else literal


def _pattern_ext(pattern: str) -> str:
    return _split_ext(pattern)[1]


def _loose_literal(literal: str) -> str:
    """`dllab_` -> a regex for `DLlab-`, `dl lab_`, `dllab`, or nothing at all."""
    words = re.findall(r"[A-Za-z0-9]+", literal)
    if not words:
        return r"[\W_]*"
    chars = r"[\W_]*".join(re.escape(c) for c in "".join(words))
    return rf"[\W_]*(?:{chars})?[\W_]*"
