"""Code similarity between submissions: document fingerprinting by winnowing (Schleimer, Wilkerson
and Aiken, "Winnowing: local algorithms for document fingerprinting", SIGMOD 2003, the method of
MOSS), through the `copydetect` package.

A submission's code is its notebooks' code cells and its `.py` scripts, read from its files in OUT
(IPython magics and shell lines dropped), joined into one document with a comment naming each
cell. copydetect tokenizes it with Pygments and replaces every name with one letter (variables V,
functions F, classes O) and every string with S, and drops comments and whitespace, so renamed
variables and reformatted code fingerprint alike; fingerprints are a set, so reordered cells
match too. Fingerprints of the handout's code (the lab's handout notebooks and any template
given) and fingerprints found in many submissions of the class (the code everyone starts from,
as MOSS's `-m`) are removed before comparing, so two honest students from one handout share
little. A pair's score is the larger of the two shares of a document's fingerprinted code found
in the other (0..1).
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from grader.outread import inside as _inside
from grader.outread import work_folder

K = 25
"""k-gram length in filtered characters (copydetect's default noise threshold)."""
WINDOW = 6
"""Winnowing window: any match of K + WINDOW - 1 = 30 filtered characters is found."""
MAX_CODE_CHARS = 400_000
"""Code read per submission (characters)."""
MAX_FILE_BYTES = 16 << 20
"""Largest notebook or script read (bytes)."""
_MAGIC = re.compile(r"^\s*[%!]")


@dataclass
class CodeDoc:
    """One submission's code and its fingerprints (copydetect's CodeFingerprint)."""

    student_id: str
    text: str
    """The code as shown side by side: each cell after a `# ---- <file> cell <n>` line."""
    fp: Any = None
    """copydetect.CodeFingerprint of `text` (hashes, hash_idx, offsets, token_coverage)."""
    files: list[str] = field(default_factory=list)
    """The notebooks and scripts read."""
    notes: list[str] = field(default_factory=list)
    """What could not be read, for a TA."""


def notebook_code(path: Path) -> list[tuple[int, str]]:
    """(cell index, source) of a notebook's code cells; magics and shell lines dropped.
    Raises ValueError for a file that is not a notebook."""
    data = json.loads(path.read_bytes()[:MAX_FILE_BYTES].decode("utf-8", "replace"))
    cells = data.get("cells")
    if cells is None and isinstance(data.get("worksheets"), list) and data["worksheets"]:
        cells = data["worksheets"][0].get("cells")  # nbformat 3
    if not isinstance(cells, list):
        raise ValueError("no cells")
    found = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", cell.get("input", ""))
        src = "".join(src) if isinstance(src, list) else str(src)
        src = "\n".join(line for line in src.splitlines() if not _MAGIC.match(line)).strip()
        if src:
            found.append((i, src))
    return found


SEP = "\u00a4"
"""Starts each cell's header line (`¤ # ---- file cell n`): the normalization keeps it (it is no
name, string or comment), and every k-gram that holds it is dropped, so no k-gram runs from one
cell into the next (the handout's last line and a student's first line never match as one)."""
SEP_HASH = -1
"""The hash every k-gram holding SEP gets (removed with the boilerplate)."""


def document(parts: Iterable[tuple[str, int | None, str]]) -> str:
    """The document of (file, cell or None, code) parts, each after a SEP header line."""
    out = []
    for name, cell, src in parts:
        where = f"{name} cell {cell}" if cell is not None else name
        out.append(f"{SEP} # ---- {where}\n{src}\n")
    return "\n".join(out)[:MAX_CODE_CHARS]


def submission_code(out: Path, student_id: str) -> CodeDoc:
    """The code of one graded submission in OUT (never raises for a bad file: it is noted)."""
    from grader.safename import safe_name

    root = out.resolve()
    sub_path = _inside(root, root / "runs" / safe_name(student_id) / "submission.json")
    doc = CodeDoc(student_id, "")
    try:
        sub = json.loads(sub_path.read_text(encoding="utf-8")) if sub_path else {}
    except (OSError, ValueError):
        sub = {}
    work = work_folder(root, sub if isinstance(sub, dict) else {}, student_id)[0]
    if work is None:
        doc.notes.append("the submission's files are not in the output folder")
        return doc
    parts: list[tuple[str, int | None, str]] = []
    for f in sub.get("files") or []:
        if not isinstance(f, dict) or f.get("kind") not in ("notebook", "script"):
            continue
        rel = str(f.get("path"))
        path = _inside(work, work / rel)
        if path is None or not path.is_file():
            doc.notes.append(f"{rel}: not found in the submission's folder")
            continue
        try:
            if rel.lower().endswith(".ipynb"):
                parts += [(rel, i, src) for i, src in notebook_code(path)]
            else:
                parts.append((rel, None, path.read_bytes()[:MAX_FILE_BYTES].decode("utf-8", "replace")))
            doc.files.append(rel)
        except (OSError, ValueError) as exc:
            doc.notes.append(f"{rel}: could not be read ({type(exc).__name__})")
    doc.text = document(parts)
    return doc


def handout_code(paths: Sequence[Path]) -> str:
    """The code of the handout notebooks and template scripts (unreadable ones skipped)."""
    parts: list[tuple[str, int | None, str]] = []
    for p in paths:
        try:
            if p.suffix.lower() == ".ipynb":
                parts += [(p.name, i, src) for i, src in notebook_code(p)]
            elif p.is_file():
                parts.append((p.name, None, p.read_text(encoding="utf-8", errors="replace")))
        except (OSError, ValueError):
            continue
    return document(parts)


def stable_kgram_hashes(text: str, k: int) -> Any:
    """Hashes of every k-gram of `text` (int64 array, len(text) - k + 1), the same in every
    process: a polynomial hash over the characters' code points, modulo 2**64. copydetect's own
    uses Python's hash(), which is salted per process, so its scores changed from run to run."""
    import numpy as np

    if len(text) < k:
        return np.array([], dtype=np.int64)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = len(codes) - k + 1
    h = np.zeros(n, dtype=np.uint64)
    base = np.uint64(1_000_003)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * base + codes[j:j + n]
    out = h.view(np.int64).copy()
    seps = np.concatenate([[0], np.cumsum(codes == ord(SEP))])
    out[(seps[k:] - seps[:n]) > 0] = SEP_HASH  # k-grams across a cell boundary
    return out


def _stable_copydetect() -> None:
    import copydetect.utils as utils

    utils.hashed_kgrams = stable_kgram_hashes  # get_document_fingerprints looks it up in its module


def fingerprint(docs: Sequence[CodeDoc], *, handout: str = "", common_share: float = 0.3,
                common_at_least: int = 3) -> set[int]:
    """Fingerprints every document in place and removes the boilerplate: the handout's
    fingerprints and those found in more than max(common_at_least, common_share × N) documents.
    Returns the boilerplate hashes removed."""
    from copydetect import CodeFingerprint
    from copydetect.utils import get_token_coverage

    _stable_copydetect()
    for d in docs:
        d.fp = CodeFingerprint(f"{d.student_id}.py", K, WINDOW, language="python", fp=io.StringIO(d.text))
    boiler: set[int] = {SEP_HASH}
    if handout.strip():
        boiler |= CodeFingerprint("handout.py", K, WINDOW, language="python", fp=io.StringIO(handout)).hashes
    counts = Counter(h for d in docs for h in d.fp.hashes)
    limit = max(common_at_least, common_share * len(docs))
    boiler |= {h for h, n in counts.items() if n > limit}
    for d in docs:
        drop = d.fp.hashes & boiler
        if drop:
            d.fp.hashes = d.fp.hashes - drop
            d.fp.hash_idx = {h: i for h, i in d.fp.hash_idx.items() if h not in drop}
            d.fp.token_coverage = get_token_coverage(d.fp.hash_idx, K, len(d.fp.filtered_code))
    return boiler


@dataclass(frozen=True)
class CodeMatch:
    """How much of two documents' code matches."""

    score: float
    """max(share_a, share_b), 0..1."""
    share_a: float
    """Share of a's fingerprinted code found in b (0..1)."""
    share_b: float
    overlap: int
    """Matching filtered characters (in a)."""
    slices_a: list[tuple[int, int]]
    """Matching regions as (start, end) character offsets into a's text."""
    slices_b: list[tuple[int, int]]


def compare(a: CodeDoc, b: CodeDoc) -> CodeMatch:
    """The match between two fingerprinted documents (copydetect.compare_files)."""
    from copydetect import compare_files

    if not a.fp or not b.fp or not a.fp.hashes or not b.fp.hashes or not (a.fp.hashes & b.fp.hashes):
        return CodeMatch(0.0, 0.0, 0.0, 0, [], [])
    overlap, (sa, sb), (slices_a, slices_b) = compare_files(a.fp, b.fp)
    pairs = lambda s: [(int(x), int(y)) for x, y in zip(s[0], s[1])] if len(s) and len(s[0]) else []
    sa, sb = float(min(1.0, sa)), float(min(1.0, sb))
    return CodeMatch(round(max(sa, sb), 4), round(sa, 4), round(sb, 4), int(overlap), pairs(slices_a), pairs(slices_b))


def segments(text: str, slices: Sequence[tuple[int, int]]) -> list[tuple[str, bool]]:
    """`text` cut into (piece, matched) runs by the matching slices (for the side-by-side view;
    the template escapes every piece)."""
    out: list[tuple[str, bool]] = []
    at = 0
    for start, end in sorted(slices):
        start, end = max(start, at), min(end, len(text))
        if start >= end:
            continue
        if start > at:
            out.append((text[at:start], False))
        out.append((text[start:end], True))
        at = end
    if at < len(text):
        out.append((text[at:], False))
    return out
