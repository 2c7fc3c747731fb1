"""The text of a student's report, read once per file, in a child process with limits.

A PDF or a docx is a program for its reader: a 31 KB PDF of 50 pages sharing one 8 MB content
stream kept pypdf busy about a minute per page, twice per student (two rubric items read the
report) and again on every rescore. So a PDF or docx is read in a child Python process with a
wall-time limit (killed when it runs over), an address-space limit (RLIMIT_AS) and a cap on
the text it returns; the outcome, good or bad, is kept in a cache keyed by the file's bytes
(beside the unpacked submissions: OUT/work/.report-text/), so every later read (the second
item, `rescore`) costs nothing. A report that could not be read is reported as that, with
why ("could not be read within 20 s"), never as a report without text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TIMEOUT_S = 20.0
"""Wall time one report may take to read (seconds)."""
MEMORY_BYTES = 1 << 30
"""Address space of the child process that reads it (bytes)."""
MAX_CHARS = 200_000
"""Characters of text kept (and returned by the child) per report."""
MAX_PAGES = 50
"""PDF pages read."""
_VERSION = 1  # of the cached records: a change of the reader must not reuse old outcomes

Status = Literal["ok", "timeout", "error"]


@dataclass(frozen=True)
class ReportText:
    """What reading one report gave."""

    status: Status
    """ok (`text` is what it says, possibly empty), timeout or error (the grader could not read it)."""
    text: str = ""
    reason: str = ""
    """Why it could not be read, in one sentence for the TA; empty when ok."""


def _run_reader(path: Path, *, timeout_s: float, memory_bytes: int, max_chars: int) -> tuple[Status, bytes, str]:
    """(status, the child's output, why it failed) of reading a pdf or docx in the limited child."""
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _CHILD_PAGES, str(path), str(max_chars), str(MAX_PAGES),
                               str(memory_bytes)], capture_output=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    except subprocess.TimeoutExpired:
        return "timeout", b"", f"the report could not be read within {timeout_s:g} s"
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        last = err[-1][:200] if err else f"exit status {done.returncode}"
        if "MemoryError" in last:
            return "error", b"", f"the report could not be read within {memory_bytes >> 20} MiB of memory"
        return "error", b"", f"the report could not be read: {last}"
    return "ok", done.stdout, ""


def _keep(entry: Path | None, data: dict) -> None:
    """Writes one cache entry atomically; the cache is optional, so a failure is ignored."""
    if entry is None:
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, entry)
    except OSError:
        pass


def _plain(path: Path, max_chars: int) -> str:
    with open(path, "rb") as f:
        text = f.read(max_chars * 4).decode("utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        text = re.sub(r"<[^>]{0,2000}>", " ", text)
    return text[:max_chars]


def read_report(path: Path, *, cache_dir: Path | None = None, timeout_s: float | None = None,
                memory_bytes: int | None = None, max_chars: int = MAX_CHARS) -> ReportText:
    """The text of a pdf, docx, markdown, text or html report, read under the limits above
    (TIMEOUT_S and MEMORY_BYTES unless given); with `cache_dir`, read once per distinct file
    content (the outcome is cached as JSON there): read_report_pages' pages, joined."""
    got = read_report_pages(path, cache_dir=cache_dir, timeout_s=timeout_s, memory_bytes=memory_bytes,
                            max_chars=max_chars)
    return ReportText(got.status, "\n".join(t for _, t in got.pages)[:max_chars], got.reason)


# The child reads a pdf or docx under the limits; a TA who must find the passage in the student's
# own file gets its pages (read_report_pages), the checks their text joined (read_report).
_CHILD_PAGES = r"""
import json, resource, sys
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
path, max_chars, max_pages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out, n = [], 0
if path.lower().endswith(".pdf"):
    from pypdf import PdfReader
    for page in PdfReader(path).pages[:max_pages]:
        t = (page.extract_text() or "")[: max(0, max_chars - n)]
        out.append(t)
        n += len(t)
        if n >= max_chars:
            break
else:
    import docx
    parts = []
    for p in docx.Document(path).paragraphs:
        parts.append(p.text)
        n += len(p.text)
        if n >= max_chars:
            break
    out.append("\n".join(parts)[:max_chars])
sys.stdout.write(json.dumps(out))
"""


@dataclass(frozen=True)
class ReportPages:
    """What reading one report page by page gave."""

    status: Status
    """ok, timeout or error (as ReportText's)."""
    pages: tuple[tuple[int | None, str], ...] = ()
    """(page number from 1, its text) per PDF page read; one (None, text) for a docx, md, txt or html."""
    reason: str = ""
    """Why it could not be read, in one sentence for the TA; empty when ok."""


def read_report_pages(path: Path, *, cache_dir: Path | None = None, timeout_s: float | None = None,
                      memory_bytes: int | None = None, max_chars: int = MAX_CHARS) -> ReportPages:
    """The text of a report per page (a PDF's first MAX_PAGES pages; a docx, markdown, text or
    html report is one page without a number), read under the same limits as read_report
    (`max_chars` characters in all); with `cache_dir`, read once per distinct file content.
    Never raises for a bad file: its status says timeout or error, with the reason."""
    path = Path(path)
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    memory_bytes = MEMORY_BYTES if memory_bytes is None else memory_bytes
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return ReportPages("error", reason=f"the report could not be opened: {exc.strerror or exc}")
    return _cached(str(path), digest, str(cache_dir) if cache_dir else "", timeout_s, memory_bytes, max_chars)


def _child(path: Path, *, timeout_s: float, memory_bytes: int, max_chars: int) -> ReportPages:
    status, output, reason = _run_reader(path, timeout_s=timeout_s, memory_bytes=memory_bytes, max_chars=max_chars)
    if status != "ok":
        return ReportPages(status, reason=reason)
    try:
        texts = json.loads(output[: max_chars * 8 + 65536].decode("utf-8", "replace"))
    except ValueError:
        return ReportPages("error", reason="the report's reader gave output the grader could not parse")
    if not isinstance(texts, list):
        return ReportPages("error", reason="the report's reader gave output the grader could not parse")
    texts = [str(t)[:max_chars] for t in texts[:MAX_PAGES]]
    if path.suffix.lower() == ".pdf":
        return ReportPages("ok", tuple((i + 1, t) for i, t in enumerate(texts)))
    return ReportPages("ok", ((None, texts[0] if texts else ""),))


@functools.lru_cache(maxsize=64)
def _cached(path: str, digest: str, cache_dir: str, timeout_s: float, memory_bytes: int,
            max_chars: int) -> ReportPages:
    entry = Path(cache_dir) / (f"{digest}-pages{_VERSION}-{int(timeout_s * 1000)}-{memory_bytes}-"
                               f"{max_chars}.json") if cache_dir else None
    if entry is not None and entry.is_file():
        try:
            raw = json.loads(entry.read_text())
            return ReportPages(raw["status"], tuple((p, str(t)) for p, t in raw["pages"]), raw["reason"])
        except (OSError, ValueError, TypeError, KeyError):
            pass
    if Path(path).suffix.lower() in (".pdf", ".docx"):
        got = _child(Path(path), timeout_s=timeout_s, memory_bytes=memory_bytes, max_chars=max_chars)
    else:
        got = ReportPages("ok", ((None, _plain(Path(path), max_chars)),))
    _keep(entry, {"status": got.status, "pages": [list(p) for p in got.pages], "reason": got.reason})
    return got
