"""What intake found reaches the grade and the TA's views (issue 12 A and K), without a kernel.

Each submission is graded by the real pipeline (`grade_submission`) in saved mode, which reads
stored outputs and runs nothing; then the gradebook and the class summary are written by the
same `finish` the batch uses, and read back.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

import intake_fixtures as fx
from grader.intake import discover
from grader.pipeline import GradeSettings, grade_submission
from grader.rescore import finish
from grader.rubric import builtin_rubric

LOG = ("Accuracy of the network on the 10000 test images: 54 %\nTest loss: 1.2870\n"
       + "".join(f"Accuracy of {c:>5s} : 50 %\n" for c in
                 ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")))


def settings(out: Path) -> GradeSettings:
    return GradeSettings(rubric_path=builtin_rubric("lab1"), out=out, mode="saved", pdf=False)


def grade_all(folder: Path, out: Path) -> dict[str, dict]:
    """Grades every zip in `folder` as a batch does, writes the gradebook and summary; grades by id."""
    s = settings(out)
    grades = [grade_submission(c, s) for c in discover([folder], exclude=[out])]
    finish(out, grades, pdf=False)
    return {g["student_id"]: g for g in grades}


def items(grade: dict) -> dict[str, dict]:
    return {i["id"]: i for p in grade["parts"] + [grade["bonus"]] for i in p["items"]}


def csv_rows(path: Path) -> dict[str, dict]:
    rows = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    return {r.get("student_id") or r.get("ID number"): r for r in rows}


# --------------------------------------------------------------------------- A: repaired notebooks are graded


def test_repaired_notebooks_are_graded_like_the_clean_ones(tmp_path: Path) -> None:
    inc = tmp_path / "in"
    fx.write_zip(inc / "dllab_0556060.zip", [("lab1-1.ipynb", fx.clean_notebook(LOG)), ("report.pdf", fx.PDF)])
    fx.write_zip(inc / "dllab_0556061.zip", [("lab1-1.ipynb", fx.bom_and_44_ids(LOG)), ("report.pdf", fx.PDF)])
    fx.write_zip(inc / "dllab_0556062.zip", [("lab1-1.ipynb", fx.cp1252_byte_no_metadata(LOG)),
                                             ("report.pdf", fx.PDF)])
    fx.write_zip(inc / "dllab_0556063.zip", [("lab1-1.ipynb.json", fx.clean_notebook(LOG)), ("report.pdf", fx.PDF)])
    grades = grade_all(inc, tmp_path / "out")
    clean = items(grades["0556060"])
    assert clean["lab1-1-test-metrics"]["status"] == "pass", clean["lab1-1-test-metrics"]["message"]
    for sid in ("0556061", "0556062", "0556063"):
        got = items(grades[sid])
        assert {k: (v["status"], v["points"]) for k, v in got.items()} == \
            {k: (v["status"], v["points"]) for k, v in clean.items()}, sid
        assert grades[sid]["total"] == grades["0556060"]["total"]
    assert "notebook-repaired" in grades["0556061"]["flags"] and "notebook-repaired" in grades["0556062"]["flags"]
    assert "notebook-renamed" in grades["0556063"]["flags"]
    assert not {"notebook-repaired", "notebook-renamed"} & set(grades["0556060"]["flags"])
    ev = json.loads((tmp_path / "out" / "runs" / "0556061" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["status"] == "ok" and ev["metrics"]["test_accuracy"] == pytest.approx(0.54)
    warning = next(p for p in grades["0556061"]["problems"] if p["flag"] == "notebook-repaired")
    assert "byte-order mark" in warning["message"] and warning["path"] == "lab1-1.ipynb"


def test_unreadable_notebook_items_say_found_but_unreadable(tmp_path: Path) -> None:
    inc = tmp_path / "in"
    cut = fx.clean_notebook(LOG)
    fx.write_zip(inc / "dllab_0556064.zip", [("lab1-1.ipynb", cut[: len(cut) // 2]),
                                             ("notes.ipynb", b"{ this is not json"), ("report.pdf", fx.PDF)])
    g = grade_all(inc, tmp_path / "out")["0556064"]
    assert "unreadable-notebook" in g["flags"]
    it = items(g)
    for item in ("lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-weights"):
        msg = it[item]["message"]
        assert it[item]["points"] == 0
        assert "`lab1-1.ipynb`" in msg and "was found but could not be read" in msg and "cut off" in msg, msg
        assert "notes.ipynb" not in msg, "the notebook named for the part is the one meant"
        assert "no notebook for" not in msg and "not found" not in msg, msg
    # No notebook is named for LAB 1-2: the unreadable ones are named as what may hold it.
    msg = it["lab1-2-test-metrics"]["message"]
    assert msg.startswith("no readable notebook for lab1-2 was found: ") and "`notes.ipynb`" in msg, msg
    assert "not valid JSON: Expecting property name" in msg, "a broken file is not called cut off"
    assert not (tmp_path / "out" / "runs" / "0556064" / "lab1-1.ipynb" / "evidence.json").exists()
    row = csv_rows(tmp_path / "out" / "grades.csv")["0556064"]
    assert "unreadable-notebook" in row["flags"].split(";") and "cut off" in row["problems"]


# --------------------------------------------------------------------------- K: intake problems in the TA's views

BAD_INTAKE = [
    (fx.encrypted, "0556017", "encrypted", "password-protected"),
    (fx.truncated, "0556019", "truncated-archive", "cut off"),
    (fx.zip_bomb, "0556014", "zip-bomb", "zip bombs"),
    (fx.empty, "0556020", "empty-submission", "contains no files"),
    (fx.corrupt, "0556018", "corrupt-archive", "damaged"),
    (fx.nested_encrypted, "0556052", "encrypted", "password-protected"),
    (fx.lone_rar, "0556053", "unsupported-format", "RAR archive"),
    (fx.crc_error, "0556022", "corrupt-member", "damaged"),
]


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    inc = tmp_path_factory.mktemp("in")
    for make, sid, _, _ in BAD_INTAKE:
        make(inc, sid)
    out = tmp_path_factory.mktemp("out")
    return out, grade_all(inc, out)


@pytest.mark.parametrize(("make", "sid", "flag", "words"), BAD_INTAKE, ids=[c[2] + "-" + c[1] for c in BAD_INTAKE])
def test_intake_problem_is_a_flag_with_its_message_everywhere(bad_batch, make, sid: str, flag: str, words: str) -> None:
    out, grades = bad_batch
    g = grades[sid]
    assert flag in g["flags"]
    on_disk = json.loads((out / "grades" / f"{sid}.json").read_text())
    assert flag in on_disk["flags"] and any(p["flag"] == flag and words in p["message"] for p in on_disk["problems"])
    row = csv_rows(out / "grades.csv")[sid]
    assert flag in row["flags"].split(";") and words in row["problems"]
    moodle = csv_rows(out / "moodle_grades.csv")[sid]
    assert words in moodle["Feedback"], moodle["Feedback"]
    html = (out / "summary.html").read_text()
    block = html[html.index("Needs a TA"):html.index("Notebook runs")]
    assert f"{flag}: " in block and words in block
    legend = html[html.index("What the flags mean"):]
    assert flag in legend


def test_a_fatal_archive_does_not_pile_on_no_notebook(bad_batch) -> None:
    _, grades = bad_batch
    for sid in ("0556017", "0556019", "0556020", "0556018", "0556053"):
        assert "no-notebook" not in grades[sid]["flags"], sid
    # The only notebook was damaged: it was found, so "no notebook was found" would be false
    # (issue 12, tester 1's 9; was: no-notebook as well).
    assert "no-notebook" not in grades["0556022"]["flags"] and "corrupt-member" in grades["0556022"]["flags"]


def test_a_notebook_found_but_not_unpacked_is_never_not_found(tmp_path: Path) -> None:
    """Tester 1's 0400017 (one encrypted notebook beside a clean report), a refused `../` notebook
    and a Windows absolute path: the items and Moodle say what happened to the notebook, and no
    `no-notebook` is raised; the Windows one is simply graded."""
    import struct

    inc = tmp_path / "in"
    nb = fx.clean_notebook(LOG)
    locked = fx.write_zip(inc / "dllab_0556081.zip", [("lab1-1.ipynb", nb), ("report.pdf", fx.PDF)])
    data = bytearray(locked.read_bytes())
    fx._patch_member(data, b"lab1-1.ipynb", local=(6, struct.pack("<H", 1)), central=(8, struct.pack("<H", 1)))
    locked.write_bytes(bytes(data))
    fx.write_zip(inc / "dllab_0556082.zip", [("../lab1-1.ipynb", nb), ("report.pdf", fx.PDF)])
    fx.write_zip(inc / "dllab_0556083.zip", [("C:\\Users\\stu\\Desktop\\lab1\\lab1-1.ipynb", nb),
                                             ("C:\\Users\\stu\\Desktop\\lab1\\report.pdf", fx.PDF)])
    grades = grade_all(inc, tmp_path / "out")
    moodle = csv_rows(tmp_path / "out" / "moodle_grades.csv")
    for sid, words in (("0556081", "`lab1-1.ipynb` could not be extracted (it is password-protected)"),
                       ("0556082", "`../lab1-1.ipynb` was refused (its path points outside the submission folder)")):
        g = grades[sid]
        assert "no-notebook" not in g["flags"], sid
        msg = items(g)["lab1-1-test-metrics"]["message"]
        assert words in msg and "so nothing for lab1-1 could be graded" in msg, msg
        assert "No notebook" not in moodle[sid]["Feedback"], moodle[sid]["Feedback"]
    assert not {"refused-member", "no-notebook"} & set(grades["0556083"]["flags"])
    assert items(grades["0556083"])["lab1-1-test-metrics"]["status"] == "pass"


@pytest.mark.parametrize(("sid", "words"), [
    ("0556017", "`dllab_0556017.zip` could not be opened (it is password-protected)"),
    ("0556019", "`dllab_0556019.zip` could not be opened (it is cut off)"),
    ("0556053", "`dllab_0556053.rar` could not be opened (it is not a zip archive)"),
    ("0556052", "`dllab_0556052.zip` could not be opened (it is password-protected)"),
    ("0556022", "`lab1.ipynb` could not be extracted (it is damaged inside the zip)"),
])
def test_items_name_what_could_not_be_opened_not_not_found(bad_batch, sid: str, words: str) -> None:
    _, grades = bad_batch
    msg = items(grades[sid])["lab1-1-test-metrics"]["message"]
    assert msg.startswith("no readable notebook for lab1-1 was found: ") and words in msg, msg
