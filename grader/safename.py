"""The one name a student id becomes on disk and in links: `grades/<name>.json`, `runs/<name>/`,
`work/<name>/`, `feedback/<name>.pdf`, the gradebook's feedback column, the class summary's links.

A student id is read from a file name a student chose, so it can be anything: 107 digits,
Chinese, `..`, `CON`, empty. `safe_name` never fails: a plain id (`0556001`) is its own name;
any other id becomes a short readable slug plus a digest of the exact id, so the name is
bounded, made of safe characters, and different ids never share a name (two ids equal after
cleaning differ in their digests). A name with a digest contains `--`, which no plain id may,
so a plain id can never take another id's name either.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_NAME_CHARS", "safe_name", "shown_name", "unsafe_reason", "written_name"]

MAX_NAME_CHARS = 64
"""Longest name (characters, all ASCII) before `.json`/`.pdf`: far under every file system's 255."""
_SLUG_CHARS = 40
_DIGEST_CHARS = 16  # 64 bits: no two ids of a class (or of any plausible batch) collide
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Names Windows refuses for a file whatever its extension (the TA may copy OUT to Windows).
_RESERVED = re.compile(r"(?i)(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(?:\..*)?")


def shown_name(name: str) -> str:
    """A file system name as text that can go anywhere (JSON, CSV, a message, an id).

    Linux file names are bytes; Python gives the bytes that are not UTF-8 as lone surrogates
    (`dllab_05560\\udcff01.zip`; intake gives a zip member's false UTF-8 name the same way), which
    no UTF-8 writer accepts. Every name read from the disk or a zip passes here before it becomes
    an id, a message or a record: each such byte is shown as `\\xff` (so the TA sees which byte
    it was), and valid text is returned unchanged. `written_name` is its form for a file name."""
    return _escape_bytes(name, "\\x{:02x}")


def written_name(part: str) -> str:
    """One path component as the grader writes it to disk: like `shown_name`, but each byte that
    is not UTF-8 as `%FF` (a backslash would read as a folder separator in a zip name or on Windows)."""
    return _escape_bytes(part, "%{:02X}")


def _escape_bytes(name: str, fmt: str) -> str:
    if name.isascii() or not any("\ud800" <= ch <= "\udfff" for ch in name):
        return name
    out = []
    for ch in name:
        if "\udc80" <= ch <= "\udcff":  # one byte the file system (or zip) gave that is not UTF-8
            out.append(fmt.format(ord(ch) - 0xDC00))
        elif "\ud800" <= ch <= "\udfff":  # a lone surrogate of any other origin
            out.append(f"U+{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def unsafe_reason(student_id: str) -> str | None:
    """Why `student_id` cannot be used as a file name as it is, or None when it can."""
    if not student_id:
        return "it is empty"
    if len(student_id) > MAX_NAME_CHARS:
        return f"it is {len(student_id)} characters long, more than the {MAX_NAME_CHARS} a file name may take"
    if not _PLAIN.fullmatch(student_id) or student_id.endswith("."):
        return "it holds characters other than letters, digits, `.`, `_` and `-` (or starts or ends with one)"
    if "--" in student_id:
        return "it holds `--`, which marks the grader's own cleaned-up names"
    if _RESERVED.fullmatch(student_id):
        return "Windows reserves that name for a device"
    return None


def safe_name(student_id: object) -> str:
    """The file name (without extension) for `student_id`: itself when it is plain, else
    `<slug>--<digest>` (at most `MAX_NAME_CHARS` ASCII characters). Deterministic, so every
    stage finds a student's files from the id alone; injective, so no two ids share files."""
    sid = "" if student_id is None else str(student_id)
    if unsafe_reason(sid) is None:
        return sid
    digest = hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", sid).strip("-")[:_SLUG_CHARS].strip("-") or "id"
    return f"{slug}--{digest}"
