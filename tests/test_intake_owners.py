"""Issue 13 D and E, run for real: `dllab grade --mode saved` (no kernel) on built LMS folders and
zips, with grades.csv, grades/*.json, the Moodle export and the summary read back.

D: in a Moodle download, the participant who uploaded a file owns it: an id claimed by two
participants is a conflict flagged on both, each graded from their own upload, never merged, and
no upload replaces another's grade (the Moodle export withholds both). E: a student id that
cannot be a file name (107 digits, full-width digits, `CON`, two ids equal for 200 characters) is
that submission's own flag and gets a grade of its own under a safe name; the batch finishes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import zipfile
from pathlib import Path

import intake_fixtures as fx
import pytest

from grader.cli import main
from grader.intake import discover
from grader.intake.naming import NamePattern
from grader.intake.owners import inner_ids
from grader.safename import MAX_NAME_CHARS, safe_name, unsafe_reason


def log(percent: int) -> bytes:
    """A LAB 1-1 notebook whose stored output reports `percent` % test accuracy."""
    return fx.clean_notebook(f"Accuracy of the network on the 10000 test images: {percent} %\n")


def upload(percent: int, notebook: str = "lab1-1.ipynb") -> list[fx.Member]:
    return [(notebook, log(percent)), ("report.pdf", fx.PDF)]


def grade(paths: list[Path], out: Path) -> tuple[int, str]:
    """`dllab grade PATHS --mode saved`: the exit code and what it said on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["grade", *map(str, paths), "--lab", "lab1", "--mode", "saved", "--no-pdf",
                     "--out", str(out), "--workers", "1"])
    return code, err.getvalue()


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def graded(out: Path) -> dict[str, dict]:
    """Every grade file by its student id, checking each lies under the id's safe name."""
    grades = {}
    for p in sorted((out / "grades").glob("*.json")):
        g = json.loads(p.read_text())
        assert p.stem == safe_name(g["student_id"])
        grades[g["student_id"]] = g
    return grades


def accuracy(out: Path, sid: str) -> float:
    [ev] = [json.loads(p.read_text()) for p in (out / "runs" / safe_name(sid)).glob("*/evidence.json")]
    return ev["metrics"]["test_accuracy"]


# --------------------------------------------------------------------------- D: who owns an upload


def test_alice_uploading_bobs_id_replaces_nothing(tmp_path: Path) -> None:
    """The attack of issue 13 D: Alice (participant 1001) uploads `dllab_<Bob's id>.zip`, newer
    than Bob's own. Both are graded, each from their own upload, both flagged, neither merged."""
    inc = tmp_path / "moodle"
    fx.write_zip(inc / "Bob Lee_1002_assignsubmission_file_" / "dllab_0556002.zip", upload(60), mtime=1_700_000_000)
    fx.write_zip(inc / "Alice Smith_1001_assignsubmission_file_" / "dllab_0556002.zip", upload(5),
                 mtime=1_700_003_600)
    out = tmp_path / "out"
    code, err = grade([inc], out)
    assert code == 0, err
    grades = graded(out)
    assert set(grades) == {"0556002-moodle-1001", "0556002-moodle-1002"}
    assert accuracy(out, "0556002-moodle-1002") == pytest.approx(0.60), "Bob graded from Bob's zip"
    assert accuracy(out, "0556002-moodle-1001") == pytest.approx(0.05), "Alice graded from Alice's zip"
    for sid, g in grades.items():
        assert "id-conflict" in g["flags"] and "duplicate" not in g["flags"]
        assert g["claimed_id"] == "0556002"
        [p] = [p for p in g["problems"] if p["flag"] == "id-conflict"]
        assert "Alice Smith (participant 1001" in p["message"] and "Bob Lee (participant 1002" in p["message"]
        assert "none replaces another's grade" in p["message"]
        submission = json.loads((out / "runs" / safe_name(sid) / "submission.json").read_text())
        assert submission["duplicates"] == [] and submission["claimed_id"] == "0556002"
    table = {r["student_id"]: r for r in rows(out / "grades.csv")}
    assert set(table) == set(grades) and all("id-conflict" in r["flags"].split(";") for r in table.values())
    moodle = rows(out / "moodle_grades.csv")
    assert [(r["ID number"], r["Grade"], r["Feedback file"]) for r in moodle] == [("0556002", "", "")], \
        "neither upload sets the grade of id 0556002 until a TA decides, nor brings its feedback onto it"
    assert "waits for a TA" in moodle[0]["Feedback"]
    html = (out / "summary.html").read_text()
    legend = html[html.index("What the flags mean"):]
    assert "id-conflict" in legend and "claimed by uploads of two Moodle participants" in legend


def test_a_moodle_bundle_zip_is_expanded_into_its_participants(tmp_path: Path) -> None:
    """The download-all zip itself given to `grade`: the same claim inside it, plus Alice uploading a
    second zip with a third id, and Carol's zip holding a notebook named for another id. Every
    participant is graded from their own upload; nobody is graded as the bundle."""
    bundle = tmp_path / "DL-LAB1-Assignment-123.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        for folder, name, members, hour in [
            ("Bob Lee_1002", "dllab_0556002.zip", upload(60), 9),
            ("Alice Smith_1001", "dllab_0556002.zip", upload(5), 10),
            ("Alice Smith_1001", "dllab_0556003.zip", upload(7), 11),
            ("Carol Wu_1003", "dllab_0556004.zip", upload(40, "lab1-1_0556005.ipynb"), 12),
            ("Dan Ho_1004", "dllab_0556006.zip", upload(50, "lab1-1_0556006.ipynb"), 12),
        ]:
            info = zipfile.ZipInfo(f"{folder}_assignsubmission_file_/{name}", (2024, 10, 1, hour, 0, 0))
            zf.writestr(info, fx.zip_bytes(members))
    out = tmp_path / "out"
    code, err = grade([bundle], out)
    assert code == 0, err
    assert "download of all submissions" in err
    grades = graded(out)
    assert set(grades) == {"0556002-moodle-1001", "0556002-moodle-1002", "0556003", "0556004", "0556006"}
    assert accuracy(out, "0556002-moodle-1002") == pytest.approx(0.60)
    assert accuracy(out, "0556002-moodle-1001") == pytest.approx(0.05)
    assert accuracy(out, "0556003") == pytest.approx(0.07)
    codes = {sid: {p["code"] for p in g["problems"] if p["flag"] == "id-conflict"} for sid, g in grades.items()}
    assert codes == {"0556002-moodle-1001": {"claimed-id", "several-ids"}, "0556002-moodle-1002": {"claimed-id"},
                     "0556003": {"several-ids"}, "0556004": {"inner-id"}, "0556006": set()}
    carol = next(p for p in grades["0556004"]["problems"] if p["code"] == "inner-id")
    assert "lab1-1_0556005.ipynb" in carol["message"] and "0556005" in carol["message"]
    moodle = {(r["ID number"], r["Grade"]) for r in rows(out / "moodle_grades.csv")}
    assert moodle == {("0556002", ""), ("0556003", ""), ("0556004", ""), ("0556006", "0")}


def test_a_participant_reuploading_one_id_is_still_a_duplicate(tmp_path: Path) -> None:
    """One participant's two uploads of the same id are theirs: the newest is graded, as before."""
    folder = tmp_path / "Bob Lee_1002_assignsubmission_file_"
    fx.write_zip(folder / "dllab_0556002.zip", upload(10), mtime=1_700_000_000)
    fx.write_zip(folder / "dllab_0556002 (1).zip", upload(20), mtime=1_700_003_600)
    [c] = discover([tmp_path])
    assert c.student_id == "0556002" and [p.code for p in c.problems] == ["duplicate"]


def test_inner_ids_only_reads_ids_shaped_like_the_submissions() -> None:
    names = NamePattern("dllab_{student_id}.zip")
    paths = ["dllab_lab1.ipynb", "20241003_lab1.ipynb", "lab1-1 xxx-0a1234567b.ipynb", "dllab_0556001.ipynb",
             "DLLAB_0556002.ipynb", "src/0556003/train.py", "mine_0556001_and_0556009.ipynb"]
    assert inner_ids("0556001", paths, names) == [("DLLAB_0556002.ipynb", "0556002"),
                                                  ("src/0556003/train.py", "0556003")]
    assert inner_ids("b0990123", ["dllab_b0990124.ipynb", "dllab_lab1-1.ipynb"], names) == \
        [("dllab_b0990124.ipynb", "b0990124")]


# --------------------------------------------------------------------------- E: ids as file names


def test_a_107_digit_id_is_graded_under_a_safe_name_and_the_batch_finishes(tmp_path: Path) -> None:
    """The attack of issue 13 E, with others of its kind in the same batch: ids that cannot be file
    names each get their own flagged grade; everyone else is graded; a resume ends the same way."""
    inc = tmp_path / "in"
    long_id = "1" * 107
    twins = ["7" * 200 + "1", "7" * 200 + "2"]  # unique only after 200 characters
    fx.write_zip(inc / f"dllab_{long_id}.zip", upload(30))
    for i, sid in enumerate(twins):
        fx.write_zip(inc / f"dllab_{sid}.zip", upload(31 + i))
    fx.write_zip(inc / "dllab_CON.zip", upload(33))  # Windows's console device
    fx.write_zip(inc / "作業_０５５６００７.zip", upload(34))  # full-width digits: read as the ASCII id
    fx.write_zip(inc / "dllab_0556001.zip", upload(60))
    out = tmp_path / "out"
    code, err = grade([inc], out)
    assert code == 0, err
    grades = graded(out)
    expected = {long_id, *twins, "CON", "0556007", "0556001"}
    assert set(grades) == expected
    assert accuracy(out, twins[0]) == pytest.approx(0.31) and accuracy(out, twins[1]) == pytest.approx(0.32)
    # the full-width id is the ID number Moodle knows, told as a misnamed file quoting the original
    assert "unsafe-id" not in grades["0556007"]["flags"] and "bad-name" in grades["0556007"]["flags"]
    [p] = [p for p in grades["0556007"]["problems"] if p["flag"] == "bad-name"]
    assert "`作業_０５５６００７.zip`" in p["message"] and "`dllab_0556007.zip`" in p["message"]
    for sid in expected - {"0556001", "0556007"}:
        name = safe_name(sid)
        assert name != sid and len(name) <= MAX_NAME_CHARS and name.isascii()
        assert "unsafe-id" in grades[sid]["flags"]
        [p] = [p for p in grades[sid]["problems"] if p["flag"] == "unsafe-id"]
        assert f"grades/{name}.json" in p["message"]
        assert (out / "runs" / name / "submission.json").is_file()
        assert (out / "feedback" / f"{name}.html").is_file()
    assert "unsafe-id" not in grades["0556001"]["flags"] and (out / "feedback" / "0556001.html").is_file()
    assert {r["student_id"] for r in rows(out / "grades.csv")} == expected
    feedback = {r["ID number"]: r["Feedback file"] for r in rows(out / "moodle_grades.csv")}
    assert feedback[long_id] == f"feedback/{safe_name(long_id)}.pdf"
    html = (out / "summary.html").read_text()
    assert f'href="feedback/{safe_name(long_id)}.html"' in html and "unsafe-id" in html
    # every resume ends the same way: nothing to grade again, and the same files
    code, err = grade([inc], out)
    assert code == 0 and f"{len(expected)} already graded" in err, err
    assert set(graded(out)) == expected


@pytest.mark.parametrize("sid", ["", "..", ".", "../../etc/passwd", "a/b", "CON", "con.txt", "LPT1", "NUL",
                                 "王小明", "０５５６００１", "x" * 65, "a--b", "a b", "-rf", "id.", "\x00"])
def test_safe_name_is_plain_bounded_and_never_the_unsafe_id(sid: str) -> None:
    name = safe_name(sid)
    assert unsafe_reason(sid) is not None and name != sid
    assert 0 < len(name) <= MAX_NAME_CHARS and name.isascii() and "/" not in name and name not in (".", "..")
    assert unsafe_reason(name.replace("--", "-")) is None, "everything but the digest marker is plain"
    assert safe_name(sid) == name, "deterministic"


def test_safe_names_never_collide() -> None:
    ids = ["0556001", "a b", "a_b", "a-b", "a--b", "王小明", "王小紅", "", "..", "CON", "con",
           "9" * 300, "9" * 300 + "1", "9" * 200 + "8" * 100, "x" * 64, "x" * 65]
    names = [safe_name(s) for s in ids]
    assert len(set(names)) == len(ids)
    assert len({n.casefold() for n in names if "--" in n}) == len([n for n in names if "--" in n])
    assert safe_name("0556001") == "0556001" and safe_name("x" * 64) == "x" * 64


def test_two_ids_equal_after_cleaning_get_two_feedback_files(tmp_path: Path) -> None:
    """`a b` and `a_b` (or `王小明` and `王小紅`) clean to the same slug: their reports and gradebook
    rows stay apart, and an empty or `..` id is written inside feedback/ like any other."""
    from grader.report import render_student, write_gradebook

    ids = ["a b", "a_b", "王小明", "王小紅", "", ".."]
    grades = [{"student_id": s, "lab": "lab1", "total": i, "max": 100, "parts": []} for i, s in enumerate(ids)]
    paths = [render_student(g, evidence=[], reference=None, dataset_stats={}, problems=[], out_dir=tmp_path, pdf=False)
             for g in grades]
    assert len(set(paths)) == len(ids) and all(p.parent == tmp_path / "feedback" for p in paths)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(p.name for p in paths)
    write_gradebook(grades, out_dir=tmp_path)
    files = [r["Feedback file"] for r in rows(tmp_path / "moodle_grades.csv")]
    assert sorted(files) == sorted(f"feedback/{p.stem}.pdf" for p in paths)


def test_one_participants_refused_upload_in_a_bundle_is_theirs_not_the_batchs(tmp_path: Path) -> None:
    """A bundle member extraction refuses (here a link where Alice's zip should be) aborted the
    whole `grade` (exit 2, nothing graded). Now Alice gets a grade saying what was refused, and
    Bob is graded from his upload."""
    bundle = tmp_path / "DL-LAB1-Assignment-124.zip"
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as z:
        for name, data in upload(60):
            z.writestr(name, data)
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr(zipfile.ZipInfo("Bob Lee_1002_assignsubmission_file_/dllab_0556002.zip", (2024, 10, 1, 9, 0, 0)),
                    good.getvalue())
        link = zipfile.ZipInfo("Alice Smith_1001_assignsubmission_file_/dllab_0556001.zip", (2024, 10, 1, 9, 0, 0))
        link.create_system = 3
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    out = tmp_path / "out"
    code, err = grade([bundle], out)
    assert code == 0, err
    grades = graded(out)
    assert set(grades) == {"0556002", "moodle-1001"}
    alice = grades["moodle-1001"]
    assert "refused-member" in alice["flags"] and alice["total"] == 0
    [p] = [p for p in alice["problems"] if p["flag"] == "refused-member"]
    assert "is a link" in p["message"] and p["path"].endswith("dllab_0556001.zip")
    assert accuracy(out, "0556002") == pytest.approx(0.60)
    assert not list(out.rglob("passwd"))


# --------------------------------------------------------------------------- D: files of no known uploader


def test_a_loose_zip_beside_a_moodle_bundle_replaces_no_participants_upload(tmp_path: Path) -> None:
    """The tester's case of issue 13 D (finding 4): the Moodle download-all zip (Bob 1002, Carol 1004)
    and, beside it, a loose `dllab_<Bob's id>.zip` nobody is known to have uploaded, newer since its
    time is when it was copied. It was graded as Bob and Bob's upload ignored; now both are graded
    on their own, both flagged, and Moodle gets no grade for the id until a TA decides."""
    inc = tmp_path / "s11"
    inc.mkdir()
    with zipfile.ZipFile(inc / "CS101-Assignment-9.zip", "w") as zf:
        for folder, sid, percent in [("Bob Chen_1002", "0556002", 60), ("Carol Wu_1004", "0556004", 40)]:
            info = zipfile.ZipInfo(f"{folder}_assignsubmission_file_/dllab_{sid}.zip", (2024, 3, 1, 10, 0, 0))
            zf.writestr(info, fx.zip_bytes(upload(percent)))
    fx.write_zip(inc / "dllab_0556002.zip", upload(5))  # mtime: now, newer than any upload
    out = tmp_path / "out"
    code, err = grade([inc], out)
    assert code == 0, err
    grades = graded(out)
    assert set(grades) == {"0556002-moodle-1002", "0556002-loose", "0556004"}
    assert accuracy(out, "0556002-moodle-1002") == pytest.approx(0.60), "Bob graded from Bob's own upload"
    assert accuracy(out, "0556002-loose") == pytest.approx(0.05), "the loose file graded on its own"
    assert accuracy(out, "0556004") == pytest.approx(0.40)
    for sid in ("0556002-moodle-1002", "0556002-loose"):
        g = grades[sid]
        assert "id-conflict" in g["flags"] and "duplicate" not in g["flags"] and g["claimed_id"] == "0556002"
    [bob] = [p for p in grades["0556002-moodle-1002"]["problems"] if p["flag"] == "id-conflict"]
    assert "`s11/dllab_0556002.zip`" in bob["message"] and "participant 1002" in bob["message"]
    [loose] = [p for p in grades["0556002-loose"]["problems"] if p["flag"] == "id-conflict"]
    assert "`s11/dllab_0556002.zip`" in loose["message"]
    assert "Bob Chen (participant 1002, `Bob Chen_1002_assignsubmission_file_/dllab_0556002.zip`)" in loose["message"]
    assert "id-conflict" not in grades["0556004"]["flags"]
    table = {r["student_id"]: r for r in rows(out / "grades.csv")}
    assert set(table) == set(grades) and "id-conflict" in table["0556002-loose"]["flags"].split(";")
    moodle = sorted((r["ID number"], r["Grade"], r["Feedback file"]) for r in rows(out / "moodle_grades.csv"))
    assert moodle == [("0556002", "", ""), ("0556004", "0", "feedback/0556004.pdf")], \
        "Bob's id gets no grade from a file of no known uploader, and one row only"


def test_an_ownerless_folder_claims_nothing_and_ownerless_twins_stay_duplicates(tmp_path: Path) -> None:
    """Of the same kind: an unpacked `dllab_<Bob's id>/` folder in a `late/` folder beside Bob's Moodle
    folder is graded apart from Bob; two loose zips of an id no participant uploaded are one student's
    duplicates as before (the newest graded), and the message tells the two files apart by folder."""
    moodle, late = tmp_path / "moodle", tmp_path / "late"
    fx.write_zip(moodle / "Bob Lee_1002_assignsubmission_file_" / "dllab_0556002.zip", upload(60), mtime=1_700_000_000)
    (late / "dllab_0556002").mkdir(parents=True)
    for name, data in upload(5):
        (late / "dllab_0556002" / name).write_bytes(data)
    fx.write_zip(late / "dllab_0556003.zip", upload(10), mtime=1_700_000_000)
    fx.write_zip(late / "dllab_0556003 (1).zip", upload(20), mtime=1_700_003_600)
    out = tmp_path / "out"
    code, err = grade([moodle, late], out)
    assert code == 0, err
    grades = graded(out)
    assert set(grades) == {"0556002-moodle-1002", "0556002-loose", "0556003"}
    assert accuracy(out, "0556002-moodle-1002") == pytest.approx(0.60)
    assert accuracy(out, "0556002-loose") == pytest.approx(0.05)
    assert all("id-conflict" in grades[s]["flags"] for s in ("0556002-moodle-1002", "0556002-loose"))
    [p] = [p for p in grades["0556002-loose"]["problems"] if p["flag"] == "id-conflict"]
    assert "`late/dllab_0556002`" in p["message"]
    assert accuracy(out, "0556003") == pytest.approx(0.20), "the newest of one student's own files"
    assert "id-conflict" not in grades["0556003"]["flags"] and "duplicate" in grades["0556003"]["flags"]
    [dup] = [p for p in grades["0556003"]["problems"] if p["flag"] == "duplicate"]
    assert "`late/dllab_0556003 (1).zip`" in dup["message"] and "`late/dllab_0556003.zip`" in dup["message"]
    assert {(r["ID number"], r["Grade"]) for r in rows(out / "moodle_grades.csv")} == {("0556002", ""), ("0556003", "0")}
