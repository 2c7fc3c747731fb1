"""What each extracted file is: notebook, script, report, weights, data or other.

Nothing is executed or unpickled here: weights and data are only recorded. Notebooks are
parsed as JSON and validated against the nbformat schema, so a broken one is a problem on
the submission, not a crash later.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import nbformat

from grader.intake.problems import problem
from grader.model import FileKind, Problem, SubmittedFile

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
    """Describe every written file under `root`; `notes` adds intake's remarks by path."""
    files: list[SubmittedFile] = []
    problems: list[Problem] = []
    for rel in sorted(paths):
        full = root / rel
        kind = kind_of(rel)
        note = notes.get(rel)
        if kind == "notebook":
            error = notebook_error(full)
            if error is not None:
                problems.append(problem("bad-notebook", rel, detail=error))
                note = f"invalid notebook: {error}"
        files.append(SubmittedFile(path=rel, kind=kind, bytes=full.stat().st_size,
                                   sha256=sha256_file(full), note=note))
    return files, problems


def notebook_error(path: Path) -> str | None:
    """Why `path` is not a valid notebook, in one short line, or None if it is fine."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return "the file is not UTF-8 text"
    try:
        json.loads(text)
    except ValueError as exc:
        return f"the file is not valid JSON: {exc}"[:200]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing cell ids etc. are fine for grading
            nbformat.validate(nbformat.reads(text, as_version=4))
    except nbformat.ValidationError as exc:
        return f"it does not follow the notebook format: {exc.message}"[:200]
    except Exception as exc:  # nbformat's upgrade code raises a zoo of errors on odd input
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"it does not follow the notebook format: {first}"[:200]
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
