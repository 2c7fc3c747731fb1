"""What each extracted file is: notebook, script, report, weights, data or other.

Nothing is executed or unpickled here: weights and data are only recorded. Notebooks are
read with the lenient reader (`grader.nbread`), so a broken one is a problem on the
submission, not a crash later, and one Jupyter would open is graded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from grader.intake.problems import UNREADABLE_CODES, problem, unreadable_fix
from grader.model import FileKind, Problem, SubmittedFile
from grader.nbread import UnreadableNotebook, looks_like_notebook, read_notebook

_KINDS: dict[str, FileKind] = {
    ".ipynb": "notebook",
    ".py": "script",
    **dict.fromkeys((".pdf", ".docx", ".md", ".txt", ".html", ".htm"), "report"),
    **dict.fromkeys(
        (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".h5", ".hdf5", ".keras",
         ".onnx", ".safetensors", ".joblib"),
        "weights",
    ),
    **dict.fromkeys(
        (".csv", ".tsv", ".npy", ".npz", ".json", ".jpg", ".jpeg", ".png", ".gif", ".bmp",
         ".tif", ".tiff", ".webp", ".svg", ".mat", ".parquet"),
        "data",
    ),
}
# Names a notebook hides under when saved by a browser or an editor; their content decides.
_SNIFFED_EXTS = (".json", ".txt", "")
_RENAMED = re.compile(r"\.ipynb(\.json|\.txt|\s*\(\d+\))$")
# How intake notes an unreadable notebook on its `SubmittedFile` (the reason follows).
UNREADABLE_NOTE = "unreadable notebook: "
# `.txt` files that are clearly not a report.
_NOT_REPORT_PREFIXES = ("requirements", "license")


def kind_of(path: str) -> FileKind:
    name = path.rsplit("/", 1)[-1].lower()
    ext = name[name.rfind("."):] if "." in name else ""
    kind = _KINDS.get(ext, "other")
    if kind == "report" and ext == ".txt" and name.startswith(_NOT_REPORT_PREFIXES):
        return "other"
    return kind


def classify(root: Path, paths: list[str], notes: dict[str, str]) -> tuple[list[SubmittedFile], list[Problem]]:
    """Describe every written file under `root`; `notes` adds intake's remarks by path.

    A notebook is recognized by its content as well as by its name (`lab1-1.ipynb.json`,
    a notebook saved without extension), and read leniently: what can be repaired is a
    `notebook-repaired` warning, what cannot is `unreadable-notebook`.
    """
    files: list[SubmittedFile] = []
    problems: list[Problem] = []
    for rel in sorted(paths):
        full = root / rel
        kind = kind_of(rel)
        note = notes.get(rel)
        if kind == "notebook" or _maybe_notebook(rel, kind, full):
            kind, note, found = _read(full, rel, renamed=kind != "notebook", note=note)
            problems += found
        files.append(SubmittedFile(path=rel, kind=kind, bytes=full.stat().st_size,
                                   sha256=sha256_file(full), note=note))
    return files, problems


def _maybe_notebook(rel: str, kind: FileKind, full: Path) -> bool:
    """A notebook under another name: `x.ipynb.json`, `x.ipynb.txt`, `x.ipynb (1)`, or JSON that is one.

    Exports of a notebook (`x.ipynb.pdf`, `x.ipynb.html`) and editor backups (`x.ipynb~`)
    are not notebooks to grade.
    """
    name = rel.rsplit("/", 1)[-1].lower()
    if _RENAMED.search(name):
        return True
    ext = name[name.rfind("."):] if "." in name else ""
    return ext in _SNIFFED_EXTS and looks_like_notebook(full)


def _read(full: Path, rel: str, *, renamed: bool, note: str | None) -> tuple[FileKind, str | None, list[Problem]]:
    """Kind, note and problems of a notebook file after a lenient read."""
    try:
        read = read_notebook(full)
    except UnreadableNotebook as exc:
        return "notebook", UNREADABLE_NOTE + exc.reason, [problem("unreadable-notebook", rel, detail=exc.reason,
                                                                            fix=unreadable_fix(exc.reason))]
    except OSError as exc:
        reason = f"the file could not be read ({exc.strerror or exc})"
        return "notebook", UNREADABLE_NOTE + reason, [problem("unreadable-notebook", rel, detail=reason,
                                                                            fix=unreadable_fix(reason))]
    found: list[Problem] = []
    if renamed:
        found.append(problem("notebook-renamed", rel, name=rel.rsplit("/", 1)[-1]))
        note = "a notebook saved under another name"
    if read.repairs:
        detail = "; ".join(read.repairs[:6]) + (f"; and {len(read.repairs) - 6} more" if len(read.repairs) > 6 else "")
        found.append(problem("notebook-repaired", rel, detail=detail))
        note = f"repaired for grading: {detail}"
    return "notebook", note, found


def unreadable_notebooks(files: Sequence[SubmittedFile], problems: Sequence[Problem]) -> list[dict[str, str]]:
    """`{"path", "reason"}` of every notebook intake found but could not read."""
    bad = {p.path for p in problems if p.code in UNREADABLE_CODES}
    out = []
    for f in files:
        if f.path in bad:
            note = f.note or ""
            reason = note[len(UNREADABLE_NOTE):] if note.startswith(UNREADABLE_NOTE) else note.removeprefix("invalid notebook: ")
            out.append({"path": f.path, "reason": reason or "it could not be read as a notebook"})
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
