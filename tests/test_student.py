"""`dllab pack` and `dllab check`: what a student runs before handing in.

Pack and the student's view are tested without a kernel; two end-to-end checks run the
sample submissions in the real sandbox on tiny stand-in datasets.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from grader import pack, sandbox, student
from grader.cli import main
from grader.samples import lab1_samples, write_archive

PATTERN = "dllab_{student_id}.zip"


def _nb(path: Path, *, outputs: bool = True, error: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = new_code_cell("print('hi')")
    if outputs:
        cell.outputs = [new_output("stream", name="stdout", text="hi\n")]
    if error:
        cell.outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]
    nbformat.write(new_notebook(cells=[cell]), path)


def _write(path: Path, data: bytes | str = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def working_folder(tmp_path: Path) -> Path:
    """A student's folder as it really looks: work, plus everything that must stay out."""
    root = tmp_path / "lab1"
    _nb(root / "lab1-1.ipynb")
    _nb(root / "lab1-2.ipynb")
    _nb(root / "src" / "lab1-3.ipynb")
    _write(root / "utils.py", "def f():\n    return 1\n")
    _write(root / "report.pdf", b"%PDF-1.4 report")
    _write(root / "figs" / "loss.png", b"\x89PNG" + b"0" * 100)
    _write(root / "README.md", "# notes")
    _nb(root / ".ipynb_checkpoints" / "lab1-1-checkpoint.ipynb")
    _write(root / "__pycache__" / "utils.cpython-311.pyc")
    _write(root / ".git" / "HEAD", "ref: refs/heads/main")
    _write(root / "data" / "cifar-10-batches-py" / "data_batch_1", b"0" * 1000)
    for i in range(pack.DATASET_IMAGES + 1):  # a dataset folder recognized by its contents
        _write(root / "food" / "training" / f"0_{i}.jpg", b"\xff\xd8")
    _write(root / "model.pth", b"w" * 100)
    _write(root / "runs" / "epoch3.ckpt", b"w" * 100)
    _write(root / ".venv" / "pyvenv.cfg", "home = /usr/bin")
    _write(root / ".venv" / "lib" / "site.py", "x = 1")
    _write(root / "big.npy", b"0" * (pack.MAX_SUPPORT + 1))
    _write(root / "old.zip", b"PK\x05\x06" + b"\0" * 18)
    _write(root / ".DS_Store")
    _write(root / ".env", "WANDB_API_KEY=secret")
    return root


EXPECTED_MEMBERS = ["README.md", "figs/loss.png", "lab1-1.ipynb", "lab1-2.ipynb", "report.pdf",
                    "src/lab1-3.ipynb", "utils.py"]
EXPECTED_LEFT_OUT = [".DS_Store", ".env", ".git/", ".ipynb_checkpoints/", ".venv/", "__pycache__/", "big.npy", "data/",
                     "food/", "model.pth", "old.zip", "runs/epoch3.ckpt"]


# --------------------------------------------------------------------------- pack


def test_pack_includes_work_and_lists_everything_left_out(working_folder: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["pack", str(working_folder), "--student-id", "0556001", "--lab", "lab1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    zpath = out / "dllab_0556001.zip"
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == EXPECTED_MEMBERS
    for left in EXPECTED_LEFT_OUT:
        assert f"  - {left} (" in printed
    assert "a dataset folder" in printed and "model weights" in printed and "Jupyter's autosave" in printed
    assert "no problems" in printed and "warning" not in printed
    assert f"dllab check {zpath} --lab lab1 --quick" in printed
    # What the grader's own intake makes of it.
    sub = pack.read_back(zpath, PATTERN)
    assert sub.student_id == "0556001" and sub.problems == ()


def test_pack_is_deterministic(working_folder: Path, tmp_path: Path) -> None:
    plan = pack.plan_pack(working_folder)
    a = pack.write_zip(plan, tmp_path / "a" / "x.zip").read_bytes()
    b = pack.write_zip(plan, tmp_path / "b" / "x.zip").read_bytes()
    assert a == b


def test_pack_warns_about_missing_report_and_unsaved_notebooks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "w"
    _nb(root / "lab1-1.ipynb", outputs=False)
    _nb(root / "lab1-2.ipynb", error=True)
    _write(root / "broken.ipynb", "{ not json")
    _write(root / "README.md", "# not a report")
    assert main(["pack", str(root), "--student-id", "0556001", "--lab", "lab1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "warning: no report found" in printed and "report.pdf" in printed
    assert "lab1-1.ipynb has no outputs: run all cells" in printed
    assert "lab1-2.ipynb: the saved output of cell 1 is an error (ZeroDivisionError)" in printed
    assert "broken.ipynb is not a valid notebook" in printed
    assert (tmp_path / "dllab_0556001.zip").is_file()


def test_pack_refuses_to_overwrite(working_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["pack", str(working_folder), "--student-id", "0556001", "--lab", "lab1", "--out", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "dllab_0556001.zip").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists: pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "dllab_0556001.zip").read_bytes() == before


@pytest.mark.parametrize("bad", ["0556 001", "../x", "ab_c"])
def test_pack_rejects_an_id_the_grader_cannot_read(bad: str, working_folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["pack", str(working_folder), "--student-id", bad, "--lab", "lab1", "--out", str(tmp_path)]) == 2
    assert "letters and digits" in capsys.readouterr().err


def test_pack_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["pack", str(tmp_path / "nope"), "--student-id", "1", "--lab", "lab1"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["pack", str(tmp_path / "empty"), "--student-id", "1", "--lab", "lab1", "--out", str(tmp_path)]) == 2
    assert "nothing to pack" in capsys.readouterr().err
    assert main(["pack", str(tmp_path), "--student-id", "1", "--lab", "lab1", "--out", "x.zip"]) == 2
    assert "give the folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- the student's view


def _result(items: list[tuple[str, str, str, float, float]], *, problems: tuple = (), quick: bool = False,
            unjudged: frozenset = frozenset(), manual: frozenset = frozenset()) -> student.SelfCheck:
    """A SelfCheck from (part, item id, status, points, max) rows, without running anything."""
    parts: dict[str, list] = {}
    for part, iid, status, pts, mx in items:
        parts.setdefault(part, []).append({"id": iid, "title": iid.title(), "status": status, "points": pts,
                                           "max": mx, "message": f"{iid} says why"})
    grade = {"student_id": "0556001", "lab": "lab1", "max": 100.0, "total": 0.0,
             "parts": [{"id": p, "items": it} for p, it in parts.items() if p != "bonus"],
             "bonus": {"id": "bonus", "points": 5.0, "items": parts["bonus"]} if "bonus" in parts else None}
    return student.SelfCheck(
        grade=grade, submission={"source": "/x/dllab_0556001.zip", "problems": list(problems)}, evidence=(),
        unjudged=unjudged, manual=manual, quick=quick, datasets=("cifar10",), deadline="2018-09-30 23:59 +0800",
        expected_name="dllab_0556001.zip", source=Path("dllab_0556001.zip"), packed=False, out=Path("/x"),
        feedback=(), render_error=None, reused=False, seconds=1.0)


def test_exit_code_counts_only_required_automatic_items() -> None:
    ok = [("p1", "a", "pass", 10, 10), ("p1", "verified", "manual", 0, 5), ("p1", "info", "fail", 0, 0),
          ("p2", "acc", "fail", 0, 8), ("bonus", "norm", "fail", 0, 5)]
    res = _result(ok, quick=True, unjudged=frozenset({"acc"}), manual=frozenset({"verified"}))
    assert student.exit_code(res) == 0
    assert [r.status for r in student.rows(res)] == ["pass", "manual", "fail", "skipped", "fail"]
    assert student.summary(res) == ("1 of 1 required items pass; est. 10/100 (+5 bonus), not counting 5 points "
                                    "graded by hand and 8 points measured on the full datasets")
    partial = _result([("p1", "a", "partial", 5, 10)])
    assert student.exit_code(partial) == 0 and student.exit_code(partial, strict=True) == 1
    assert student.exit_code(_result([("p1", "a", "error", 0, 10)])) == 1
    misnamed = _result([("p1", "a", "pass", 10, 10)], problems=({"code": "bad-name", "message": "misnamed"},))
    assert student.exit_code(misnamed) == 1
    assert student.problems(misnamed, lab="lab1") == [
        ("misnamed", "rename the zip to `dllab_0556001.zip` (or build it with "
                     "`dllab pack YOUR_FOLDER --student-id ID --lab lab1`)")]


def test_view_hides_the_tas_hint_and_says_what_to_do(capsys: pytest.CaptureFixture) -> None:
    from rich.console import Console

    res = _result([("p1", "why", "manual", 0, 3), ("p1", "per-class", "fail", 0, 16)], quick=True,
                  manual=frozenset({"why"}))
    res.grade["parts"][0]["items"][0]["message"] = "for the TA: pass: report has every section."
    student.show(res, lab="lab1", strict=False, console=Console(width=200, force_terminal=False))
    out = capsys.readouterr().out
    assert "for the TA" not in out and student._HAND in out
    assert student.QUICK_NOTICE in out and "deadline 2018-09-30" in out
    assert "✗ fail" in out and "per-class says why" in out
    assert "next: fix the items marked ✗" in out and "dllab check dllab_0556001.zip --lab lab1 --quick" in out


def test_check_needs_datasets_or_quick(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    zpath = write_archive(lab1_samples(epochs=1)[1], tmp_path)
    assert main(["check", str(zpath), "--lab", "lab1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "add --quick" in err and "--data cifar10=DIR --data food11=DIR" in err


def test_check_without_bubblewrap_says_to_pass_sandbox_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    monkeypatch.setenv("DLLAB_CACHE", str(tmp_path / "cache"))
    zpath = write_archive(lab1_samples(epochs=1)[1], tmp_path)
    assert main(["check", str(zpath), "--lab", "lab1", "--quick", "--out", str(tmp_path / "o")]) == 2
    assert "add --sandbox none" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing is made before the usage error


def test_host_mounts_links_only_missing_paths_and_removes_them(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    mine = tmp_path / "mine"
    mine.mkdir()
    mounts = {str(tmp_path / "made" / "cifar"): str(host), str(tmp_path / "made" / "food"): str(host),
              str(mine / "cifar"): str(host), "data/cifar": str(host)}
    notes: list[str] = []
    with student.host_mounts(mounts, log=notes.append):
        assert (tmp_path / "made" / "cifar").resolve() == host.resolve()
        assert (tmp_path / "made" / "food").is_symlink()
        assert not (mine / "cifar").exists()  # never inside a folder we did not make
    assert not (tmp_path / "made").exists()
    assert any("left as it is" in n for n in notes)


def test_quick_datasets_are_made_once_and_world_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLAB_CACHE", str(tmp_path))
    made = student.quick_datasets(["food11"], log=lambda s: None)
    folder = made["food11"] / "Food-11"
    assert all(p.stat().st_mode & 0o004 for p in folder.rglob("*"))
    hidden = made["food11"] / "dllab-hidden"  # the grader-only split stays the grader's
    assert hidden.is_dir() and not hidden.stat().st_mode & 0o077
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    student.quick_datasets(["food11"], log=lambda s: None)
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------- end to end


def _skip_without_bwrap() -> None:
    try:
        sandbox.check_bwrap()
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")


@pytest.fixture(scope="module")
def quick_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dllab-cache")


@pytest.mark.kernel
def test_check_quick_on_a_defective_submission(tmp_path: Path, quick_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    _skip_without_bwrap()
    monkeypatch.setenv("DLLAB_CACHE", str(quick_cache))
    sample = next(s for s in lab1_samples(epochs=1) if s.student_id == "0556002")  # no per-class, no report
    # its LAB 1-1 notebook alone: every line checked below is LAB 1-1's or the submission's, and
    # LAB 1-2's notebook would only train a second model in a second kernel
    sample = dataclasses.replace(sample, files={"lab1-1.ipynb": sample.files["lab1-1.ipynb"]})
    zpath = write_archive(sample, tmp_path / "in")
    out = tmp_path / "check"
    assert main(["check", str(zpath), "--lab", "lab1", "--quick", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert student.QUICK_NOTICE in printed
    assert "No report (pdf, docx, md, txt or html) was found" in printed
    assert "✗ fail" in printed and "No accuracy for each class was found" in printed
    # LAB 1-2's accuracy item, not judged on stand-in data when its notebook is there, fails with
    # the rest of the part when there is none: that is as true on the full datasets
    assert "not judged" not in printed and "no notebook or script for lab1-2 was found" in printed
    grade = json.loads((out / "grades" / "0556002.json").read_text())
    assert grade["late"]["days_late"] == 0  # a self-check is never late
    per_class = next(i for p in grade["parts"] for i in p["items"] if i["id"] == "lab1-1-per-class")
    assert per_class["status"] == "fail"


@pytest.mark.parametrize("quick, ename, says", [
    (True, "IndexError", "the quick check's stand-in datasets are smaller than the real ones"),
    (True, "RuntimeError", "fix that cell"),
    (False, "IndexError", "fix that cell"),
])
def test_an_error_a_smaller_stand_in_can_cause_is_not_blamed_on_the_cell(
        capsys: pytest.CaptureFixture, quick: bool, ename: str, says: str) -> None:
    """`Subset(mnist, range(20000))` on the 6000-image stand-in raises IndexError in a quick check."""
    from dataclasses import replace

    from rich.console import Console

    res = _result([("p1", "a", "fail", 0, 10)], quick=quick)
    res = replace(res, evidence=({"path": "gan.ipynb", "status": "error", "duration_s": 3.0,
                                  "errors": [{"cell": 2, "ename": ename, "evalue": "index 6000 is out of bounds"}]},))
    student.show(res, lab="gan", strict=False, console=Console(width=300, force_terminal=False))
    assert says in capsys.readouterr().out
