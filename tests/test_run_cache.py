"""The run cache answers only for a run that could read exactly the same files."""

from __future__ import annotations

from pathlib import Path

from grader.model import SubmittedFile, Submission
from grader.pipeline import GradeSettings, inputs_digest, run_cache_key
from grader.rubric import builtin_rubric, load_rubric


def _sub(tmp: Path, files: dict[str, str]) -> Submission:
    import hashlib

    listed = []
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
        listed.append(SubmittedFile(path=rel, kind="script" if rel.endswith(".py") else "notebook",
                                    bytes=len(text), sha256=hashlib.sha256(text.encode()).hexdigest()))
    return Submission(student_id="s", source=str(tmp), source_sha256=None, submitted_at=None,
                      submitted_at_source="unknown", work_dir=str(tmp), files=tuple(listed), problems=())


def _key(tmp: Path, files: dict[str, str], rel: str = "part1/lab1-1.ipynb") -> str:
    rubric_path = builtin_rubric("lab1")
    settings = GradeSettings(rubric_path=rubric_path, out=tmp / "out")
    sub = _sub(tmp, files)
    return run_cache_key(tmp / rel, rel, settings, load_rubric(rubric_path), inputs=inputs_digest(sub))


def test_the_same_notebook_beside_another_module_is_another_run(tmp_path: Path) -> None:
    nb = '{"cells": []}'
    a = _key(tmp_path / "a", {"part1/lab1-1.ipynb": nb, "part1/mynet.py": "K = 1\n"})
    b = _key(tmp_path / "b", {"part1/lab1-1.ipynb": nb, "part1/mynet.py": "K = 2\n"})
    c = _key(tmp_path / "c", {"part1/lab1-1.ipynb": nb, "part1/mynet.py": "K = 1\n"})
    assert a != b, "a different helper module the notebook imports changes the run"
    assert a == c, "the same files give the same run, so the cache still serves copies"


def test_an_extra_data_file_or_another_folder_is_another_run(tmp_path: Path) -> None:
    nb = '{"cells": []}'
    base = _key(tmp_path / "a", {"part1/lab1-1.ipynb": nb})
    assert base != _key(tmp_path / "b", {"part1/lab1-1.ipynb": nb, "part1/labels.csv": "0,1\n"})
    # the kernel starts in the notebook's folder: the same bytes elsewhere read other paths
    assert base != _key(tmp_path / "c", {"lab1-1.ipynb": nb}, rel="lab1-1.ipynb")
