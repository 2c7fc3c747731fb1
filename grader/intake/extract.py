"""Safe extraction: every member is checked before a byte is written, and counted while written.

Nothing is ever written outside the destination folder: `..`, links and device entries are
refused; an absolute name (`C:\\Users\\stu\\lab1\\x.ipynb`, `/home/stu/x.ipynb`) is kept relative,
as unzip and 7-Zip do; files are created with O_EXCL|O_NOFOLLOW (so an existing path is never
followed or overwritten) and without exec bits. A name the disk cannot hold as it is (over-long,
or ending in spaces that make `lab1-1.ipynb ` not a notebook) is changed, and the change reported. Sizes are capped by
`IntakeLimits`, on the declared sizes first and again on the bytes actually produced, so a
header that lies cannot get past the caps. The original archive is only ever opened for
reading.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import stat
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from grader.errors import GraderError
from grader.intake.names import looks_garbled, member_name, open_zip
from grader.intake.problems import human_bytes, problem
from grader.model import Problem
from grader.safename import written_name

KiB, MiB, GiB = 1024, 1024**2, 1024**3
_CHUNK = 1 * MiB
_ENCRYPTED_FLAG = 0x1
_JUNK_DIRS = {"__macosx", ".ipynb_checkpoints", "__pycache__", ".git", ".svn"}
_JUNK_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
# `C:` or `C:/` at the start of a Windows absolute name, then any leading separators (`//server/`).
_ROOT = re.compile(r"^(?:[A-Za-z]:)?/*")
# Longest file name kept as it is, in UTF-8 bytes: most Linux file systems allow 255 (NAME_MAX),
# encrypted home folders fewer; a shortened name keeps its extension and a digest of the original.
_NAME_MAX_BYTES = 200
# Members whose loss costs a part: a notebook, a script, or a zip that may hold them.
CODE_EXTS = (".ipynb", ".py", ".zip")
# Text that compresses far better than 200x without being a bomb (see IntakeLimits.text_ratio_min_bytes).
_TEXT_EXTS = (".ipynb", ".py", ".txt", ".log", ".csv", ".json", ".md")
# Extract what gets graded first, so a submission over the size budget loses its data, not its code.
_PRIORITY = {".ipynb": 0, ".py": 0, ".pdf": 1, ".docx": 1, ".md": 1, ".txt": 1, ".html": 1, ".zip": 2}


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    """Caps on what one submission may unpack to; a TA can raise them per run."""

    max_total_bytes: int = 1 * GiB
    """Total unpacked size of one submission, nested zips included."""
    max_files: int = 2000
    """Number of files in one submission, nested zips included."""
    max_file_bytes: int = 512 * MiB
    """Unpacked size of any single file."""
    max_ratio: float = 200.0
    """Largest unpacked/packed size ratio, per member and per archive (zip bombs)."""
    ratio_min_bytes: int = 1 * MiB
    """Members smaller than this are not ratio-checked: a small file of zeros is harmless."""
    text_ratio_min_bytes: int = 64 * MiB
    """The same floor for notebooks, scripts and text logs, which compress 100-300 times on
    their own (a notebook of stored progress dots or repeated warnings): below it only the size
    caps apply, so a few MB of honest output never costs the student a part."""


@dataclass(slots=True)
class Budget:
    """What one submission has used of its limits so far, shared with its nested zips."""

    limits: IntakeLimits
    total_bytes: int = 0
    files: int = 0
    over_size: list[str] = field(default_factory=list)
    over_count: list[str] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        out = []
        if self.over_size:
            out.append(problem("archive-too-large", self.over_size[0], skipped=len(self.over_size),
                               limit=human_bytes(self.limits.max_total_bytes)))
        if self.over_count:
            out.append(problem("too-many-files", self.over_count[0], skipped=len(self.over_count),
                               limit=self.limits.max_files))
        return out


@dataclass(frozen=True, slots=True)
class Entry:
    """One file or folder to copy into the work folder, already checked for its path."""

    parts: tuple[str, ...]
    """Path components inside the submission."""
    label: str
    """The name as the student wrote it, for messages."""
    size: int
    """Declared size (zip header or stat)."""
    packed: int | None
    """Compressed size inside a zip, None for a plain file."""
    opener: Callable[[], BinaryIO] | None
    """Opens the content for reading; None for a folder."""
    mtime: float | None = None
    """Modification time recorded in the archive (an LMS bundle's upload time), if any."""


@dataclass(slots=True)
class Scan:
    """The entries of a source that passed the path checks, and what was refused."""

    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    junk: int = 0
    fatal: bool = False
    """The source could not be read at all (corrupt, truncated, empty, all encrypted)."""


def is_junk(parts: Iterable[str]) -> bool:
    parts = list(parts)
    if any(p.lower() in _JUNK_DIRS for p in parts[:-1]):
        return True
    last = parts[-1].lower() if parts else ""
    return last in _JUNK_DIRS or last in _JUNK_FILES or last.startswith("._")


def safe_parts(name: str) -> tuple[str, ...] | None:
    """Path components of an archive name, or None when it would escape the folder."""
    return member_path(name)[0]


def member_path(name: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """Where an archive name is extracted to, and what had to change in it for the TA.

    None when it would escape the folder (`..`: zip slip). A drive letter and leading
    separators are dropped (the name stays relative to the submission, as unzip does: a
    student's `C:\\Users\\stu\\Desktop\\lab1\\lab1-1.ipynb` is their lab1 folder, not an attack,
    and the folders above it are removed with the other common leading folders). Each component
    then loses trailing spaces and dots (which Windows cannot even create, and which hide an
    extension: `lab1-1.ipynb `), and one longer than the disk allows is shortened; those two
    changes are returned, one phrase each, for a `renamed-member` problem.
    """
    norm = _ROOT.sub("", name.replace("\\", "/"))  # Windows tools sometimes write backslashes
    raw = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in raw:
        return None, ()
    return clean_parts(tuple(raw))


def clean_parts(parts: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`parts` with trailing spaces and dots removed and over-long names shortened (see
    `member_path`), and a phrase per change."""
    out: list[str] = []
    changes: list[str] = []
    for part in parts:
        written = written_name(part)
        if written != part:  # bytes that are not UTF-8 (a Linux folder, a zip tool): no record could hold it
            changes.append("its name holds bytes that are not UTF-8 text, so each was written as `%XX`")
            part = written
        trimmed = part.rstrip(" .\t")
        if trimmed != part and trimmed not in ("", ".", ".."):
            changes.append("its name ends in a space or a dot, which hides its extension, so those were removed")
            part = trimmed
        if len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX_BYTES:
            part = _shorten(part)
            changes.append(f"its name is longer than the {_NAME_MAX_BYTES} bytes the grader keeps, so it was "
                           f"shortened, keeping its extension")
        out.append(part)
    return tuple(out), tuple(changes)


def _shorten(part: str) -> str:
    """`<first bytes of the stem>~<digest><extension>`, at most `_NAME_MAX_BYTES` bytes, distinct
    for distinct originals."""
    stem, dot, ext = part.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        stem, ext = part, ""
    ext = f".{ext}" if ext else ""
    tag = "~" + hashlib.sha256(part.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    room = _NAME_MAX_BYTES - len(tag.encode()) - len(ext.encode("utf-8", "surrogateescape"))
    head = stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore").rstrip(" .")
    return head + tag + ext


def scan_zip(path: Path, label: str, *, prefix: str = "",
             zip_tz: dt.tzinfo | None = None) -> tuple[zipfile.ZipFile | None, Scan]:
    """Open `path` read-only and check every member's name and type; nothing is written.

    `label` names the archive in messages; `prefix` goes before member names (nested zips).
    Member times (which carry no zone) are read in `zip_tz`, else the machine's local zone.
    """
    scan = Scan(fatal=True)
    head = b""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if not head:
            scan.problems.append(problem("empty", label, name=label))
            return None, scan
        zf, fixed = open_zip(path)
    except Exception as exc:  # noqa: BLE001 - a hostile archive may raise anything zipfile can

        if head == b"PK\x03\x04" and not _has_end_record(path):
            scan.problems.append(problem("truncated", label, name=label))
        else:
            scan.problems.append(problem("corrupt", label, name=label, detail=_detail(exc)))
        return None, scan
    encrypted: list[str] = []
    infos = zf.infolist()
    for info in infos:
        name = member_name(info, fixed)
        shown = prefix + name.replace("\\", "/")
        ftype = stat.S_IFMT(info.external_attr >> 16)
        parts, changes = member_path(name)
        if parts is not None and parts and is_junk(parts):
            scan.junk += 1
        elif "\x00" in name:
            scan.problems.append(problem("bad-filename", shown, detail="it contains a NUL character"))
        elif ftype == stat.S_IFLNK:
            scan.problems.append(problem("link", shown))
        elif ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
            scan.problems.append(problem("special-file", shown))
        elif parts is None:
            scan.problems.append(problem("unsafe-path", shown))
        elif not parts:
            continue
        elif info.flag_bits & _ENCRYPTED_FLAG:
            encrypted.append(shown)
        else:
            is_dir = info.is_dir() or name.endswith("\\") or ftype == stat.S_IFDIR
            opener = None if is_dir else (lambda info=info: zf.open(info))
            if opener is not None and looks_garbled(name):
                scan.problems.append(problem("garbled-name", shown))
            if changes and opener is not None:
                scan.problems.append(problem("renamed-member", shown, detail="; ".join(changes), name=parts[-1]))
            scan.entries.append(Entry(parts, name.replace("\\", "/"), info.file_size, info.compress_size,
                                      opener, _zip_mtime(info, zip_tz)))
    files = [e for e in scan.entries if e.opener is not None]
    if encrypted and not files:
        scan.problems.append(problem("encrypted", label))  # the whole archive: nothing to read
    elif encrypted:
        # Each locked notebook, script or zip by name, so the part it serves says so (not "not found").
        code = [e for e in encrypted if e.lower().endswith(CODE_EXTS)]
        scan.problems += [problem("encrypted", e) for e in code or encrypted[:1]]
    if not infos or (not files and not scan.problems):
        scan.problems.append(problem("empty", label, name=label))
    scan.fatal = not files
    return zf, scan


def scan_folder(root: Path) -> Scan:
    """Check a student's unpacked folder the same way; links and special files are refused."""
    scan = Scan()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root).parts
        keep = []
        for d in sorted(dirnames):
            p = Path(dirpath, d)
            if is_junk((*rel, d)):
                scan.junk += 1
            elif p.is_symlink():
                scan.problems.append(problem("link", "/".join((*rel, d))))
            else:
                keep.append(d)
                scan.entries.append(Entry(clean_parts((*rel, d))[0], "/".join((*rel, d)), 0, None, None))
        dirnames[:] = keep
        for f in sorted(filenames):
            scan.entries.extend(_folder_file(scan, Path(dirpath, f), (*rel, f)))
    return scan


def single_file(path: Path, name: str) -> Scan:
    """A notebook or report handed in on its own, as if it were the only member of a zip."""
    scan = Scan()
    scan.entries.extend(_folder_file(scan, path, (name,)))
    scan.fatal = not scan.entries
    return scan


def _folder_file(scan: Scan, path: Path, parts: tuple[str, ...]) -> list[Entry]:
    label = "/".join(parts)
    if is_junk(parts):
        scan.junk += 1
        return []
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        scan.problems.append(problem("link", label))
        return []
    if not stat.S_ISREG(st.st_mode):
        scan.problems.append(problem("special-file", label))
        return []
    if st.st_nlink > 1:  # a hard link may point at anything on the TA's disk
        scan.problems.append(problem("link", label))
        return []
    clean, changes = clean_parts(parts)
    if changes:
        scan.problems.append(problem("renamed-member", label, detail="; ".join(changes), name=clean[-1]))
    return [Entry(clean, label, st.st_size, None, lambda: open(path, "rb"))]


def strip_single_folder(entries: list[Entry]) -> tuple[list[Entry], str | None]:
    """Look through one top-level folder that holds everything (`dllab_0556001/...`)."""
    stripped: list[str] = []
    for _ in range(3):  # a zip of a folder of a folder happens; more is not "single"
        files = [e for e in entries if e.opener is not None]
        tops = {e.parts[0] for e in entries}
        if not files or len(tops) != 1 or any(len(e.parts) < 2 for e in files):
            break
        stripped.append(tops.pop())
        entries = [replace(e, parts=e.parts[1:]) for e in entries if len(e.parts) > 1]
    return entries, "/".join(stripped) or None


def write_entries(entries: list[Entry], dest: Path, budget: Budget, *, prefix: str = "") -> tuple[list[str], list[Problem]]:
    """Write `entries` under `dest`; returns the written paths (relative to dest) and problems."""
    limits = budget.limits
    problems: list[Problem] = []
    written: list[str] = []
    entries = _first_copies(entries, problems, prefix)
    real_dest = os.path.realpath(dest)
    total_packed = sum(e.packed or 0 for e in entries)
    total_size = sum(e.size for e in entries if e.packed is not None)
    archive_bomb = (
        total_packed > 0 and total_size >= limits.ratio_min_bytes and total_size / total_packed > limits.max_ratio
    )

    def ratio_floor(entry: Entry) -> int:
        text = entry.parts[-1].lower().endswith(_TEXT_EXTS) if entry.parts else False
        return max(limits.ratio_min_bytes, limits.text_ratio_min_bytes) if text else limits.ratio_min_bytes

    for entry in sorted(entries, key=_order):
        rel = "/".join(entry.parts)
        label = prefix + entry.label
        target = os.path.join(real_dest, *entry.parts)
        if not os.path.realpath(target).startswith(real_dest + os.sep):
            problems.append(problem("unsafe-path", label))  # unreachable after safe_parts; kept on purpose
            continue
        if entry.opener is None:
            if not _make_dirs(real_dest, entry.parts):
                problems.append(problem("duplicate-member", label))
            continue
        ratio = entry.size / max(entry.packed or 1, 1)
        if entry.size > limits.max_file_bytes:
            problems.append(problem("file-too-large", label, size=human_bytes(entry.size),
                                    limit=human_bytes(limits.max_file_bytes)))
            continue
        if entry.packed is not None and entry.size >= ratio_floor(entry) and (
            ratio > limits.max_ratio or archive_bomb
        ):
            problems.append(problem("suspicious-compression", label, ratio=ratio, limit=limits.max_ratio))
            continue
        if budget.files >= limits.max_files:
            budget.over_count.append(label)
            continue
        if budget.total_bytes + entry.size > limits.max_total_bytes:
            budget.over_size.append(label)
            continue
        if not _make_dirs(real_dest, entry.parts[:-1]):
            problems.append(problem("duplicate-member", label))
            continue
        cap = min(entry.size, limits.max_file_bytes, limits.max_total_bytes - budget.total_bytes)
        outcome, detail = _copy(entry, target, cap)
        if outcome == "exists":
            problems.append(problem("duplicate-member", label))
        elif outcome == "too-large":
            problems.append(problem("file-too-large", label, size=f"more than {human_bytes(cap)}",
                                    limit=human_bytes(min(limits.max_file_bytes, cap))))
        elif outcome == "bad-filename":
            problems.append(problem("bad-filename", label, detail=_detail(detail)))
        elif outcome == "corrupt":
            problems.append(problem("member-corrupt", label, detail=_detail(detail)))
        else:
            budget.files += 1
            budget.total_bytes += detail
            written.append(rel)
            if entry.mtime is not None:
                os.utime(target, (entry.mtime, entry.mtime), follow_symlinks=False)
    return written, problems


def _first_copies(entries: list[Entry], problems: list[Problem], prefix: str) -> list[Entry]:
    """The first copy of each file name, in archive order: what the `duplicate-member` message
    promises, and what unzip's "do not overwrite" keeps. Writing sorts by size, so without this a
    smaller later copy would be the one written."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for entry in entries:
        if entry.opener is not None and entry.parts in seen:
            problems.append(problem("duplicate-member", prefix + entry.label))
            continue
        if entry.opener is not None:
            seen.add(entry.parts)
        kept.append(entry)
    return kept


def _order(entry: Entry) -> tuple[int, int, int]:
    if entry.opener is None:
        return (0, 0, 0)
    ext = os.path.splitext(entry.parts[-1])[1].lower()
    return (1, _PRIORITY.get(ext, 3), entry.size)


def _make_dirs(root: str, parts: tuple[str, ...]) -> bool:
    """Create folders one component at a time, refusing anything that is not a plain folder."""
    current = root
    for part in parts:
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            st = os.lstat(current)
            if not stat.S_ISDIR(st.st_mode):
                return False
        except OSError:
            return False
    return True


def _copy(entry: Entry, target: str, cap: int) -> tuple[str, int | BaseException | None]:
    """Stream the entry to a new file, stopping as soon as it produces more than `cap` bytes.

    Returns ("ok", bytes written) or an outcome code with the exception: "exists",
    "too-large", "bad-filename" (the OS refused the name), "corrupt" (reading failed).
    """
    assert entry.opener is not None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        return "exists", None
    except OSError as exc:  # name too long, invalid for the file system...
        return "bad-filename", exc
    count = 0
    try:
        with os.fdopen(fd, "wb") as out, entry.opener() as src:
            while chunk := src.read(min(_CHUNK, cap - count + 1)):
                count += len(chunk)
                if count > cap:
                    raise _TooLarge
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _WriteFailed from exc
    except _TooLarge:
        os.unlink(target)
        return "too-large", None
    except _WriteFailed as exc:  # the grader's disk, not the student's archive
        os.unlink(target)
        raise GraderError(f"cannot write {target}: {exc.__cause__}") from exc
    except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, zlib.error, EOFError,
        # struct.error, NotImplementedError... on hostile input; all mean "this member is damaged"
        os.unlink(target)
        return "corrupt", exc
    return "ok", count


def _zip_mtime(info: zipfile.ZipInfo, tz: dt.tzinfo | None = None) -> float | None:
    """A zip entry's date and time as a timestamp (seconds since the epoch). Zip stores no time
    zone: the time is read in `tz` (the deadline's zone for an LMS download), else local time."""
    try:
        if tz is not None:
            return dt.datetime(*info.date_time, tzinfo=tz).timestamp()
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


class _TooLarge(Exception):
    pass


class _WriteFailed(Exception):
    pass


def _has_end_record(path: Path) -> bool:
    """Does the file still hold zip's end-of-central-directory record? A cut-off upload does not."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - (66 * KiB + 22)))
        return b"PK\x05\x06" in fh.read()


def _detail(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
