"""Issue 13 E (finding 5), run for real: file names with bytes that are not UTF-8, and ids typed in
full-width digits, through `dllab grade --mode saved` (no kernel), with every output read back.

Linux names are bytes; Python hands the undecodable ones over as lone surrogates, which crashed the
grade of `dllab_05560\\xff01.zip` (and its resume) when its record was written. Every such name is
now shown as `\\xff` (grader.safename.shown_name) and written to disk as `%FF` (written_name); an id
is read in ASCII digits, so Moodle's ID number matches.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import intake_fixtures as fx
import pytest
from test_intake_owners import accuracy, grade, graded, rows, upload

from grader.intake.naming import NamePattern, ascii_digits
from grader.safename import safe_name, shown_name, written_name


def _bytes_path(folder: Path, name: bytes) -> Path:
    """`folder/name` for a name that is not UTF-8; skips the test where the file system refuses it."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.path.join(os.fsencode(folder), name)
    try:
        with open(raw, "wb"):
            pass
    except OSError as exc:
        pytest.skip(f"the file system refuses a name that is not UTF-8: {exc}")
    os.unlink(raw)
    return Path(os.fsdecode(raw))


def _false_utf8_zip(path: Path, members: list[tuple[bytes, bytes]]) -> Path:
    """A zip whose member names carry the UTF-8 flag but hold other bytes (Python's zipfile refuses it)."""
    buf = io.BytesIO()
    holders = []
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (raw, data) in enumerate(members):
            holder = ("é" * (len(raw) // 2) + chr(ord("a") + i) * (len(raw) % 2)).encode()  # flagged, same length
            assert len(holder) == len(raw)
            zf.writestr(holder.decode(), data)
            holders.append(holder)
    blob = buf.getvalue()
    for holder, (raw, _) in zip(holders, members):
        assert blob.count(holder) == 2
        blob = blob.replace(holder, raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def test_a_non_utf8_byte_in_an_archive_name_is_a_flag_not_a_crash(tmp_path: Path) -> None:
    """The tester's `dllab_05560\\xff01.zip` (no id readable) and `dllab_0556061\\xff.zip` (id readable):
    each gets a grade of its own with the byte shown as `\\xff`, no grader-crash; a resume regrades nothing."""
    inc = tmp_path / "in"
    unreadable = _bytes_path(inc, b"dllab_05560\xff01.zip")
    fx.write_zip(unreadable, upload(30))
    fx.write_zip(_bytes_path(inc, b"dllab_0556061\xff.zip"), upload(61))
    fx.write_zip(inc / "dllab_0556001.zip", upload(60))
    out = tmp_path / "out"
    code, err = grade([inc], out)
    assert code == 0, err
    grades = graded(out)
    placeholder = "unknown-dllab-05560-xff01"
    assert set(grades) == {placeholder, "0556061", "0556001"}
    assert all("grader-crash" not in g["flags"] and not g.get("error") for g in grades.values())
    assert accuracy(out, placeholder) == pytest.approx(0.30) and accuracy(out, "0556061") == pytest.approx(0.61)
    [p] = [p for p in grades[placeholder]["problems"] if p["flag"] == "no-student-id"]
    assert "`dllab_05560\\xff01.zip`" in p["message"] and p["path"] == "dllab_05560\\xff01.zip"
    [p] = [p for p in grades["0556061"]["problems"] if p["flag"] == "bad-name"]
    assert "`dllab_0556061\\xff.zip`" in p["message"] and "`dllab_0556061.zip`" in p["message"]
    submission = json.loads((out / "runs" / safe_name(placeholder) / "submission.json").read_text(encoding="utf-8"))
    assert submission["source"] == str(inc / "dllab_05560\\xff01.zip")
    table = {r["student_id"]: r for r in rows(out / "grades.csv")}
    assert set(table) == set(grades) and "no-student-id" in table[placeholder]["flags"]
    assert "dllab_05560\\xff01.zip" in table[placeholder]["problems"]
    assert placeholder in (out / "summary.html").read_text(encoding="utf-8")
    code, err = grade([inc], out)
    assert code == 0 and "3 already graded" in err, err
    assert graded(out) == grades


def test_non_utf8_names_inside_zips_folders_and_moodle_folders_are_graded(tmp_path: Path) -> None:
    """Of the same kind: a notebook whose zip name claims UTF-8 but is not (zipfile refused the whole
    archive: `corrupt`), a member without the flag, a file in an unpacked student folder, and a Moodle
    participant folder, each with a byte that is not UTF-8; and an id in full-width digits."""
    inc = tmp_path / "in"
    _false_utf8_zip(inc / "dllab_0556071.zip", [(b"lab1-1\xff.ipynb", fx.clean_notebook(
        "Accuracy of the network on the 10000 test images: 71 %\n")), (b"report.pdf", fx.PDF)])
    fx.legacy_names_zip(inc / "dllab_0556072.zip", [(b"lab1-1.ipynb", fx.clean_notebook(
        "Accuracy of the network on the 10000 test images: 72 %\n")), (b"rep\xff\x80.pdf", fx.PDF)])
    mine = inc / "dllab_0556073"
    mine.mkdir(parents=True)
    for name, data in upload(73):
        (mine / name).write_bytes(data)
    _bytes_path(mine, b"notes\xff.txt").write_bytes(b"x")
    person = _bytes_path(inc / "moodle", b"Bj\xf6rn Lee_1074_assignsubmission_file_")
    fx.write_zip(person / "dllab_0556074.zip", upload(74))
    fx.write_zip(inc / "dllab_\uff10\uff15\uff15\uff16\uff10\uff17\uff15.zip", upload(75))  # ０５５６０７５
    out = tmp_path / "out"
    code, err = grade([inc], out)
    assert code == 0, err
    grades = graded(out)
    assert set(grades) == {"0556071", "0556072", "0556073", "0556074", "0556075"}
    assert all("grader-crash" not in g["flags"] for g in grades.values())
    for sid, percent in [("0556071", 71), ("0556072", 72), ("0556073", 73), ("0556074", 74), ("0556075", 75)]:
        assert accuracy(out, sid) == pytest.approx(percent / 100), sid
    assert "corrupt-archive" not in grades["0556071"]["flags"]
    [p] = [p for p in grades["0556071"]["problems"] if p["code"] == "renamed-member"]
    assert "`lab1-1\\xff.ipynb`" in p["message"] and "`lab1-1%FF.ipynb`" in p["message"]
    [p] = [p for p in grades["0556073"]["problems"] if p["code"] == "renamed-member"]
    assert "`notes\\xff.txt`" in p["message"] and "`notes%FF.txt`" in p["message"]
    sub = json.loads((out / "runs" / "0556074" / "submission.json").read_text(encoding="utf-8"))
    assert sub["student_name"] == "Bj\\xf6rn Lee" and sub["lms_participant_id"] == "1074"
    [p] = [p for p in grades["0556075"]["problems"] if p["flag"] == "bad-name"]
    assert "`dllab_０５５６０７５.zip`" in p["message"] and "`dllab_0556075.zip`" in p["message"]
    assert "unsafe-id" not in grades["0556075"]["flags"]
    assert ("0556075", "0") in {(r["ID number"], r["Grade"]) for r in rows(out / "moodle_grades.csv")}


def test_names_are_shown_and_written_without_their_undecodable_bytes() -> None:
    assert shown_name("dllab_05560\udcff01.zip") == "dllab_05560\\xff01.zip"
    assert written_name("dllab_05560\udcff01.zip") == "dllab_05560%FF01.zip"
    assert shown_name("a\ud800b") == "aU+D800b" and written_name("a\ud800b") == "aU+D800b"
    for text in ["dllab_0556001.zip", "報告.pdf", "a\\xffb", ""]:
        assert shown_name(text) == text and written_name(text) == text
    for text in [shown_name("x\udcff\udc80"), written_name("x\udcff\udc80")]:
        text.encode("utf-8")  # writable anywhere
    assert "/" not in written_name("\udcaf\udc2f") and "\\" not in written_name("a\udcff")


@pytest.mark.parametrize("name, sid", [("dllab_０５５６００１.zip", "0556001"), ("dllab_٠٥٥٦٠٠١.zip", "0556001"),
                                       ("作業_０５５６００７.zip", "0556007"), ("dllab_b０９９０１２３.zip", "b0990123")])
def test_ids_in_other_digits_are_read_as_ascii_and_called_loose(name: str, sid: str) -> None:
    reading = NamePattern().read(name)
    assert reading.student_id == sid and reading.match == "loose"
    assert ascii_digits("０５٥") == "055"
