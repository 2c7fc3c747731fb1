"""Reading a graded output folder safely, for the tools that read it after grading (the review's
evidence, similarity): every path is resolved and must stay inside OUT (a link or `..` planted by
a submission, or a forged path in a record, leads nowhere), and JSON is read under a size cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def inside(root: Path, path: Path) -> Path | None:
    """`path` resolved, or None unless it lies inside `root` (already resolved)."""
    try:
        got = path.resolve()
    except (OSError, RuntimeError):
        return None
    return got if got.is_relative_to(root) else None


def read_json(path: Path, cap: int) -> Any:
    """The JSON in `path`, or None when it is missing, over `cap` bytes or not JSON."""
    try:
        if not path.is_file() or path.stat().st_size > cap:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def work_folder(out: Path, submission: Mapping[str, Any], student_id: object) -> tuple[Path | None, bool]:
    """(the submission's unpacked files under OUT or None, whether that is OUT/work/<safe id>
    because the folder recorded at grading lies outside OUT: OUT was moved or copied since).
    `out` is resolved."""
    from grader.safename import safe_name

    recorded = submission.get("work_dir")
    found = inside(out, Path(recorded)) if isinstance(recorded, str) and recorded else None
    if found is not None and found.is_dir():
        return found, False
    moved = inside(out, out / "work" / safe_name(student_id))
    return (moved, True) if moved is not None and moved.is_dir() else (None, False)
