"""The run cache answers only for a run that could read exactly the same files."""

from __future__ import annotations

from pathlib import Path

from grader.model import Submission, SubmittedFile
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


def test_renaming_a_helper_or_adding_an_empty_folder_or_a_link_is_another_run(tmp_path: Path) -> None:
    nb = '{"cells": []}'
    base = _key(tmp_path / "a", {"part1/lab1-1.ipynb": nb, "part1/mynet.py": "K = 1\n"})
    assert base != _key(tmp_path / "b", {"part1/lab1-1.ipynb": nb, "part1/my_net.py": "K = 1\n"})
    empty = tmp_path / "c"
    (empty / "part1" / "checkpoints").mkdir(parents=True)  # os.listdir shows it
    assert base != _key(empty, {"part1/lab1-1.ipynb": nb, "part1/mynet.py": "K = 1\n"})
    link = tmp_path / "d"
    (link / "part1").mkdir(parents=True)
    (link / "part1" / "latest.pt").symlink_to("mynet.py")
    assert base != _key(link, {"part1/lab1-1.ipynb": nb, "part1/mynet.py": "K = 1\n"})


def test_two_students_with_the_same_notebook_and_other_helpers_get_their_own_runs(
        tmp_path: Path, monkeypatch) -> None:
    """The byte-identical notebook beside another `model.py` is executed again, not served
    the first student's cached evidence; a third student with the same files is served it."""
    from grader import pipeline

    executed: list[str] = []

    def fake_execute(path: Path, rel: str, *, submission_dir: Path, run_dir: Path, settings, rubric, wall_s=None) -> dict:
        executed.append(submission_dir.name)
        (run_dir / "executed.ipynb").write_text("{}")
        # what the run printed depends on the helper module, as a real run's would (kept in
        # `reason`: the cached evidence is validated against grader.evidence_model's schema)
        return {"path": rel, "mode": "execute", "status": "ok",
                "reason": (submission_dir / "part1" / "model.py").read_text()}

    monkeypatch.setattr(pipeline, "_execute", fake_execute)
    rubric_path = builtin_rubric("lab1")
    settings = GradeSettings(rubric_path=rubric_path, out=tmp_path / "out")
    rubric = load_rubric(rubric_path)
    nb = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    results = {}
    for student, helper in (("alice", "ACC = 0.91\n"), ("bob", "ACC = 0.42\n"), ("carol", "ACC = 0.91\n")):
        sub = _sub(tmp_path / student, {"part1/lab1-1.ipynb": nb, "part1/model.py": helper})
        run_dir = tmp_path / "runs" / student
        run_dir.mkdir(parents=True)
        results[student] = pipeline.run_one(tmp_path / student / "part1" / "lab1-1.ipynb", "part1/lab1-1.ipynb",
                                            submission_dir=tmp_path / student, run_dir=run_dir, settings=settings,
                                            rubric=rubric, inputs=inputs_digest(sub))
    assert executed == ["alice", "bob"]
    assert results["bob"]["reason"] == "ACC = 0.42\n" and "cache" not in results["bob"]
    assert results["carol"]["reason"] == "ACC = 0.91\n" and results["carol"]["cache"]["hit"] is True
