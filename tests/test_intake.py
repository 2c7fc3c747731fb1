"""Intake: every bad input gets its own clear problem, and nothing lands outside the work folder."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from datetime import datetime
from pathlib import Path

import pytest

import intake_fixtures as fx
from grader.errors import GraderError
from grader.intake import MESSAGES, IntakeLimits, discover, intake, unpack
from grader.intake.names import decode_legacy_name
from grader.intake.naming import NamePattern
from grader.model import Problem, Submission, SubmittedFile, record_from_json, record_to_json

KiB, MiB = 1024, 1024 * 1024


# --------------------------------------------------------------------------- helpers


class Area:
    """`incoming/` for originals and `run/work/` for intake, inside one sentinel parent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.incoming.mkdir()
        self.work = root / "run" / "work"

    def snapshot(self) -> dict[str, str]:
        """Every file under the sentinel parent outside the work folder, with its hash."""
        out = {}
        for dirpath, _, filenames in os.walk(self.root):
            for f in filenames:
                p = Path(dirpath, f)
                if self.work in p.parents:
                    continue
                out[str(p)] = "link" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
        return out


@pytest.fixture
def area(tmp_path: Path) -> Area:
    return Area(tmp_path)


def run_one(area: Area, make, *args, limits: IntakeLimits = IntakeLimits(), **kwargs) -> Submission:
    """Build one fixture in `incoming/`, intake it, check the safety invariants, return it."""
    make(area.incoming, *args, **kwargs)
    before = area.snapshot()
    subs = intake([area.incoming], area.work, limits=limits)
    assert area.snapshot() == before, "intake wrote outside its work folder or changed an original"
    assert len(subs) == 1
    _check_work_dir(subs[0])
    return subs[0]


def _check_work_dir(sub: Submission) -> None:
    """Only regular files and folders, no exec bits, and `files` lists exactly what is there."""
    root = Path(sub.work_dir)
    on_disk = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            assert not p.is_symlink(), p
            if p.is_file():
                assert p.stat().st_mode & 0o111 == 0, p
                on_disk.add(p.relative_to(root).as_posix())
    assert on_disk == {f.path for f in sub.files}


def codes(sub: Submission) -> list[str]:
    return sorted(p.code for p in sub.problems)


def paths(sub: Submission) -> set[str]:
    return {f.path for f in sub.files}


# --------------------------------------------------------------------------- good input


def test_good_zip_is_read_without_problems(area: Area) -> None:
    sub = run_one(area, fx.good_zip)
    assert sub.student_id == "0556001"
    assert sub.problems == ()
    assert {f.path: f.kind for f in sub.files} == {"lab1.ipynb": "notebook", "report.pdf": "report", "model.pth": "weights"}
    assert [f.path for f in sub.notebooks] == ["lab1.ipynb"]
    assert sub.reports[0].path == "report.pdf"
    assert sub.source_sha256 == hashlib.sha256(Path(sub.source).read_bytes()).hexdigest()
    assert sub.submitted_at_source == "file-mtime" and sub.submitted_at


def test_submission_round_trips_through_json(area: Area) -> None:
    sub = run_one(area, fx.big5_names)
    text = json.dumps(record_to_json(sub), ensure_ascii=False)
    assert record_from_json(Submission, json.loads(text)) == sub
    assert Submission.loads(sub.dumps()) == sub
    with pytest.raises(ValueError, match="unknown field"):
        record_from_json(Problem, {"code": "x", "message": "y", "typo": 1})
    with pytest.raises(ValueError):
        record_from_json(SubmittedFile, {"path": "a", "kind": "movie", "bytes": 1, "sha256": "0"})


def test_single_top_folder_is_looked_through(area: Area) -> None:
    sub = run_one(area, fx.single_top_folder)
    assert sub.stripped_prefix == "dllab_0556001"
    assert paths(sub) == {"lab1.ipynb", "report.pdf", "model.pth"}
    assert sub.problems == ()


def test_junk_is_skipped_and_counted(area: Area) -> None:
    sub = run_one(area, fx.junk_files)
    assert paths(sub) == {"lab1.ipynb", "report.pdf", "model.pth"}
    assert sub.junk_skipped == 5
    assert sub.problems == ()


def test_invalid_notebooks_are_problems_not_crashes(area: Area) -> None:
    sub = run_one(area, fx.invalid_notebook)
    assert codes(sub) == ["unreadable-notebook", "unreadable-notebook"]
    by_path = {p.path: p.message for p in sub.problems}
    assert "not valid JSON" in by_path["lab1.ipynb"] and "cut off" in by_path["lab1.ipynb"]
    assert "no list of `cells`" in by_path["lab2.ipynb"]
    assert all(f.note for f in sub.notebooks)


def test_unpacked_folder_for_self_check(area: Area) -> None:
    folder = fx.unpacked_folder(area.incoming)
    before = area.snapshot()
    (sub,) = intake([folder], area.work)
    assert area.snapshot() == before
    assert sub.student_id == "0556001"
    assert paths(sub) == {"lab1.ipynb", "report.md"}
    assert codes(sub) == ["link", "link"]
    assert {p.path for p in sub.problems} == {"escape", "notes.txt"}
    _check_work_dir(sub)


# --------------------------------------------------------------------------- hostile archives


def test_zip_slip_is_refused(area: Area) -> None:
    sub = run_one(area, fx.zip_slip)
    assert codes(sub) == ["unsafe-path"] * 3
    assert paths(sub) == {"lab1.ipynb", "report.pdf", "model.pth"}
    assert not list(area.root.rglob("evil_*"))


def test_absolute_paths_are_kept_inside_the_work_folder(area: Area) -> None:
    """An absolute name (POSIX or with a drive letter) is made relative, as unzip does: written
    inside the student's work folder, never at the absolute place (issue 12 K; was: refused)."""
    target = area.root / "abs_evil.txt"
    sub = run_one(area, fx.absolute_path, target)
    assert codes(sub) == []
    assert not target.exists()
    assert {target.relative_to("/").as_posix(), "Windows/evil.txt"} <= paths(sub)


def test_windows_absolute_path_is_graded_in_its_own_folder(area: Area) -> None:
    """`C:\\Users\\stu\\Desktop\\lab1\\lab1-1.ipynb` (tester 1's 0460002): the drive goes, the
    folders above the student's lab folder are stripped like any common leading folder, and the
    notebook keeps its module beside it."""
    fx.write_zip(area.incoming / "dllab_0460002.zip", [
        ("C:\\Users\\stu\\Desktop\\lab1\\lab1-1.ipynb", fx.notebook_bytes()),
        ("C:\\Users\\stu\\Desktop\\lab1\\mynet.py", b"class Net: pass\n")])
    (sub,) = intake([area.incoming], area.work)
    assert paths(sub) == {"lab1/lab1-1.ipynb", "lab1/mynet.py"}
    assert sub.stripped_prefix == "Users/stu/Desktop"
    assert "unsafe-path" not in codes(sub) and "no-notebook" not in codes(sub)
    _check_work_dir(sub)


@pytest.mark.parametrize("name", ["C:..\\..\\evil.ipynb", "D:\\lab\\..\\..\\evil.ipynb", "//server/../evil.ipynb"])
def test_zip_slip_behind_a_drive_or_root_is_still_refused(area: Area, name: str) -> None:
    sub = run_one(area, lambda folder: fx.write_zip(folder / "dllab_0556001.zip", fx.good_members() + [
        (name, b"pwned")]))
    assert codes(sub) == ["unsafe-path"]
    assert not list(area.root.rglob("evil*"))


def test_a_name_too_long_for_the_disk_is_shortened_not_dropped(area: Area) -> None:
    """Tester 1's 0470004: a 300-character notebook name was refused (ENAMETOOLONG), then the
    lab was "not found"; it is extracted under a shortened name that keeps `.ipynb`, and two long
    names sharing their first 200 bytes stay two files."""
    long1, long2 = "lab1-1 " + "x" * 300 + ".ipynb", "lab1-1 " + "x" * 300 + "y.ipynb"
    folder = "資料夾" * 30  # a long folder name in UTF-8 (3 bytes a character)
    sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", [
        (long1, fx.notebook_bytes()), (long2, fx.notebook_bytes()), (f"{folder}/report.pdf", fx.PDF)]))
    assert codes(sub) == ["renamed-member"] * 3
    notebooks = [f.path for f in sub.files if f.kind == "notebook"]
    assert len(notebooks) == 2 and all(n.startswith("lab1-1 xxx") and n.endswith(".ipynb") for n in notebooks)
    assert all(len(part.encode()) <= 200 for f in sub.files for part in f.path.split("/"))
    assert "shortened" in sub.problems[0].message and "no-notebook" not in codes(sub)


@pytest.mark.parametrize(("name", "kept"), [
    ("lab1-1 .ipynb ", "lab1-1 .ipynb"),  # tester 1's 0470003
    ("lab1-1.ipynb.", "lab1-1.ipynb"),
    ("part1 /lab1-1.ipynb", "part1/lab1-1.ipynb"),
])
def test_trailing_spaces_and_dots_that_hide_an_extension_are_removed(area: Area, name: str, kept: str) -> None:
    sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", [(name, fx.notebook_bytes()),
                                                                        ("report.pdf", fx.PDF)]))
    assert {f.path: f.kind for f in sub.files}[kept] == "notebook"
    assert codes(sub) == ["renamed-member"] and "no-notebook" not in codes(sub)
    assert f"graded as `{kept.rsplit('/', 1)[-1]}`" in sub.problems[0].message


def test_an_unpacked_folder_with_a_trailing_space_name_is_graded_too(area: Area) -> None:
    root = area.incoming / "dllab_0556001"
    root.mkdir()
    (root / "lab1-1.ipynb ").write_bytes(fx.notebook_bytes())
    (sub,) = intake([root], area.work)
    assert {f.path: f.kind for f in sub.files} == {"lab1-1.ipynb": "notebook"}
    assert "renamed-member" in codes(sub)


def test_symlinks_are_refused_and_nothing_goes_through_them(area: Area) -> None:
    sub = run_one(area, fx.symlink_member)
    assert codes(sub) == ["link", "link"]
    # The file "behind" the refused link becomes an ordinary file inside the work folder.
    assert "escape/evil_link.txt" in paths(sub)
    assert not (area.root / "evil_link.txt").exists()


def test_devices_and_nul_names_are_refused(area: Area) -> None:
    assert codes(run_one(area, fx.device_member)) == ["special-file", "special-file"]


def test_nul_in_name_is_refused(area: Area) -> None:
    sub = run_one(area, fx.nul_in_name)
    assert codes(sub) == ["bad-filename"]
    assert "evil.ipynb" not in paths(sub)


def test_zip_bomb_is_refused_by_ratio(area: Area) -> None:
    sub = run_one(area, fx.zip_bomb)
    assert codes(sub) == ["suspicious-compression"]
    assert sub.problems[0].path == "data/zeros.bin"
    assert "zip bomb" in sub.problems[0].message
    assert paths(sub) == {"lab1.ipynb", "report.pdf", "model.pth"}


def test_size_caps_can_be_raised_and_lowered(area: Area) -> None:
    fx.zip_bomb(area.incoming, megabytes=3)
    relaxed = IntakeLimits(max_ratio=10_000)
    (sub,) = intake([area.incoming], area.work / "a", limits=relaxed)
    assert sub.problems == () and "data/zeros.bin" in paths(sub)
    (sub,) = intake([area.incoming], area.work / "b", limits=IntakeLimits(max_ratio=10_000, max_file_bytes=1 * MiB))
    assert codes(sub) == ["file-too-large"]
    (sub,) = intake([area.incoming], area.work / "c", limits=IntakeLimits(max_ratio=10_000, max_total_bytes=2 * MiB))
    assert codes(sub) == ["archive-too-large"]
    # What gets graded is extracted first, so the budget is lost on data, not on the notebook.
    assert {"lab1.ipynb", "report.pdf"} <= paths(sub)


def test_too_many_files(area: Area) -> None:
    sub = run_one(area, fx.many_files, 30, limits=IntakeLimits(max_files=10))
    assert codes(sub) == ["too-many-files"]
    assert len(sub.files) == 10
    assert {"lab1.ipynb", "report.pdf"} <= paths(sub)


def test_lying_size_header_cannot_get_past_the_cap(area: Area) -> None:
    sub = run_one(area, fx.lying_header)
    assert codes(sub) == ["member-corrupt"]
    assert "liar.txt" not in paths(sub)
    assert all(f.bytes < 1 * MiB for f in sub.files)


def test_encrypted(area: Area) -> None:
    sub = run_one(area, fx.encrypted)
    assert codes(sub) == ["encrypted"]
    assert "password" in sub.problems[0].message
    assert sub.files == ()


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (fx.corrupt, "corrupt", "damaged"),
        (fx.truncated, "truncated", "cut off"),
        (fx.empty, "empty", "no files"),
        (fx.zero_bytes, "empty", "no files"),
    ],
)
def test_broken_archives_get_one_clear_problem(area: Area, make, code: str, words: str) -> None:
    sub = run_one(area, make)
    assert codes(sub) == [code]  # and no pile-on of no-notebook / no-report
    assert words in sub.problems[0].message
    assert sub.files == ()


def test_crc_error_in_one_member(area: Area) -> None:
    """The notebook was there but damaged: that is said, and "no notebook was found" is not
    (issue 12 K; was: member-corrupt and no-notebook)."""
    sub = run_one(area, fx.crc_error)
    assert codes(sub) == ["member-corrupt"]
    assert paths(sub) == {"report.pdf"}


def test_one_encrypted_notebook_beside_a_clean_report(area: Area) -> None:
    """Tester 1's 0400017: the locked member is named (not the first locked file whatever it
    is), and no `no-notebook` piles on."""
    fx.write_zip(area.incoming / "dllab_0556001.zip", [("notes.txt", b"x"), ("lab1-1.ipynb", fx.notebook_bytes()),
                                                      ("lab1-2.ipynb", fx.notebook_bytes()), ("report.pdf", fx.PDF)])
    path = area.incoming / "dllab_0556001.zip"
    data = bytearray(path.read_bytes())
    for name in (b"notes.txt", b"lab1-1.ipynb", b"lab1-2.ipynb"):
        fx._patch_member(data, name, local=(6, struct.pack("<H", 1)), central=(8, struct.pack("<H", 1)))
    path.write_bytes(bytes(data))
    (sub,) = intake([area.incoming], area.work)
    assert codes(sub) == ["encrypted", "encrypted"]
    assert {p.path for p in sub.problems} == {"lab1-1.ipynb", "lab1-2.ipynb"}
    assert paths(sub) == {"report.pdf"}


def test_a_refused_notebook_is_not_no_notebook(area: Area) -> None:
    sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", [("../lab1-1.ipynb", fx.notebook_bytes()),
                                                                        ("report.pdf", fx.PDF)]))
    assert codes(sub) == ["unsafe-path"]


# --------------------------------------------------------------------------- names inside archives


def test_big5_names_are_readable(area: Area) -> None:
    sub = run_one(area, fx.big5_names)
    assert paths(sub) == {"實驗報告.pdf", "程式碼/實驗一.ipynb", "資料.csv"}
    assert sub.problems == ()


def test_gbk_names_are_readable(area: Area) -> None:
    sub = run_one(area, fx.gbk_names)
    assert paths(sub) == {"实验报告.pdf", "作业一.ipynb", "数据.csv"}


def test_cp437_and_unflagged_utf8_names_are_readable(area: Area) -> None:
    sub = run_one(area, fx.cp437_names)
    assert paths(sub) == {"Résumé.txt", "München.ipynb", "模型.py"}


@pytest.mark.parametrize(("name", "encoding"), [("作業1-1.ipynb", "cp950"), ("報告.md", "cp950"),
                                              ("实验报告.pdf", "gbk"), ("程式碼/實驗一.ipynb", "cp950")])
def test_names_garbled_once_and_stored_as_utf8_are_read_again(area: Area, name: str, encoding: str) -> None:
    """Tester 1's 0400010: Big5 bytes read as CP437 and written back with the UTF-8 flag
    (`º@╖~1-1.ipynb`) are turned back into their bytes and read as Chinese."""
    garbled = name.encode(encoding).decode("cp437")
    sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", [(garbled, fx.notebook_bytes() if name.endswith(".ipynb") else b"x"),
                                                                        ("lab1.ipynb", fx.notebook_bytes()),
                                                                        ("report.pdf", fx.PDF)]))
    assert name in paths(sub) and codes(sub) == []


@pytest.mark.parametrize("name", ["▓▓▓.ipynb", "lab1-1 ▒.ipynb"])
def test_a_name_that_stays_garbled_is_flagged_not_passed_off(area: Area, name: str) -> None:
    sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", [(name, fx.notebook_bytes()),
                                                                        ("report.pdf", fx.PDF)]))
    assert codes(sub) == ["garbled-name"] and name in paths(sub)
    assert "code page" in sub.problems[0].message


@pytest.mark.parametrize("name", ["Übung München.ipynb", "café – final.ipynb", "α=0.01.ipynb", "深度學習.ipynb"])
def test_real_utf8_names_are_left_alone(area: Area, name: str) -> None:
    sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", [(name, fx.notebook_bytes()),
                                                                        ("report.pdf", fx.PDF)]))
    assert name in paths(sub) and codes(sub) == []


@pytest.mark.parametrize("text", ["報告", "程式碼.py", "深度學習_作業一.ipynb", "陳偉_報告.pdf", "資料"])
def test_big5_decoding(text: str) -> None:
    assert decode_legacy_name(text.encode("cp950")) == text


@pytest.mark.parametrize("text", ["报告", "实验报告.pdf", "作业一.ipynb", "深度学习", "数据.csv", "陈伟_报告.pdf"])
def test_gbk_decoding(text: str) -> None:
    assert decode_legacy_name(text.encode("gbk")) == text


# --------------------------------------------------------------------------- nesting


def test_zip_of_zip_is_opened_in_place(area: Area) -> None:
    sub = run_one(area, fx.zip_of_zip)
    assert {"lab1.ipynb", "report.pdf", "model.pth"} <= paths(sub)
    assert sub.problems == ()
    assert sub.of_kind("other")[0].note.startswith("zip archive, opened")


def test_nested_zip_one_level_deep(area: Area) -> None:
    sub = run_one(area, fx.nested_zip)
    assert "code/train.py" in paths(sub)  # inner single top folder `code/` looked through
    assert "code/deeper.zip" in paths(sub) and "code/hidden.py" not in paths(sub)
    assert codes(sub) == ["nested-too-deep", "unsafe-path"]
    assert {p.path for p in sub.problems} == {"code/deeper.zip", "code.zip/../../evil_nested.txt"}
    assert not list(area.root.rglob("evil_*"))


def test_nested_bomb_shares_the_budget(area: Area) -> None:
    inner = fx.zip_bomb(area.root / "inner", megabytes=3)
    fx.write_zip(area.incoming / "dllab_0556042.zip", fx.good_members() + [("data.zip", inner.read_bytes())])
    (sub,) = intake([area.incoming], area.work, limits=IntakeLimits(max_ratio=10_000, max_total_bytes=2 * MiB))
    assert "archive-too-large" in codes(sub)
    assert sum(f.bytes for f in sub.files) <= 2 * MiB


# --------------------------------------------------------------------------- whose submission


@pytest.mark.parametrize(
    ("name", "student_id", "match"),
    [
        ("dllab_0556001.zip", "0556001", "exact"),
        ("DLLAB_0556001.ZIP", "0556001", "exact"),
        ("dllab_0556001 (1).zip", "0556001", "exact"),
        ("dllab_r09922001.zip", "r09922001", "exact"),
        ("DLlab-0556001.zip", "0556001", "loose"),
        ("0556001.zip", "0556001", "loose"),
        ("dllab_0556001.7z", "0556001", "loose"),
        ("LAB1_0556001_陳偉.zip", "0556001", "loose"),
        ("homework.zip", None, "none"),
    ],
)
def test_student_id_from_name(name: str, student_id: str | None, match: str) -> None:
    reading = NamePattern().read(name)
    assert (reading.student_id, reading.match) == (student_id, match)


def test_pattern_from_rubric() -> None:
    names = NamePattern("Lab1_{student_id}_final.zip")
    assert names.read("lab1_0556001_FINAL.zip").match == "exact"
    assert names.read("lab1-0556001.zip").student_id == "0556001"
    with pytest.raises(GraderError):
        NamePattern("dllab.zip")


def test_duplicates_take_the_newest(area: Area) -> None:
    old, new = fx.duplicate_pair(area.incoming)
    (sub,) = intake([area.incoming], area.work)
    assert sub.source == str(new)
    assert sub.duplicates == (str(old),)
    assert codes(sub) == ["duplicate"]
    assert "new.ipynb" in paths(sub)


def test_misnamed_archives_are_reported_and_still_graded(area: Area) -> None:
    fx.good_zip(area.incoming, name="DLlab-0556002.zip")
    fx.good_zip(area.incoming, name="0556003.zip")
    fx.seven_zip(area.incoming)
    fx.good_zip(area.incoming, name="homework.zip")
    subs = {s.student_id: s for s in intake([area.incoming], area.work)}
    assert codes(subs["0556002"]) == ["bad-name"]
    assert "dllab_0556002.zip" in subs["0556002"].problems[0].message
    assert codes(subs["0556003"]) == ["bad-name"]
    assert codes(subs["0556004"]) == ["bad-name", "unsupported-format"]
    assert "7z" in subs["0556004"].problems[1].message
    assert codes(subs["unknown-homework"]) == ["no-student-id"]
    assert subs["unknown-homework"].notebooks  # still unpacked for the TA to look at


def test_moodle_download_folder(area: Area) -> None:
    fx.moodle_folder(area.incoming, "0556005", person="Chen Wei", participant="123456", extra=True)
    fx.moodle_folder(area.incoming, None, person="王小明", participant="234567")
    subs = {s.student_id: s for s in intake([area.incoming], area.work)}
    assert set(subs) == {"0556005", "moodle-234567"}
    chen = subs["0556005"]
    assert (chen.student_name, chen.lms_participant_id) == ("Chen Wei", "123456")
    assert codes(chen) == ["extra-file"]
    wang = subs["moodle-234567"]
    assert codes(wang) == ["no-student-id"]
    assert "234567" in wang.problems[0].message and "王小明" in wang.problems[0].message


def test_work_folder_must_be_fresh(area: Area) -> None:
    fx.good_zip(area.incoming)
    (cand,) = discover([area.incoming])
    unpack(cand, area.work)
    with pytest.raises(GraderError, match="already exists"):
        unpack(cand, area.work)


def test_missing_input_is_a_configuration_error(area: Area) -> None:
    with pytest.raises(GraderError, match="no such file"):
        discover([area.root / "nope"])


def test_every_message_template_fills() -> None:
    for code in MESSAGES:
        from grader.intake.problems import problem

        msg = problem(code, "x", name="n", expected="e", student_id="s", count=2, chosen="c", others="o",
                      format="7z", detail="d", size="1 KiB", limit=1, skipped=1, ratio=300.0, lms="").message
        assert "{" not in msg and msg.endswith(".")


# --------------------------------------------------------------------------- the whole folder at once


def test_mixed_folder_in_one_pass(area: Area) -> None:
    inc = area.incoming
    fx.good_zip(inc, "0556001")
    old, new = fx.duplicate_pair(inc, "0556100")
    fx.good_zip(inc, name="DLlab-0556002.zip")
    fx.good_zip(inc, name="0556003.zip")
    fx.seven_zip(inc, "0556004")
    fx.moodle_folder(inc, "0556005", person="Chen Wei", participant="123456")
    fx.zip_slip(inc)
    fx.absolute_path(inc, area.root / "abs_evil.txt")
    fx.symlink_member(inc)
    fx.device_member(inc)
    fx.zip_bomb(inc, megabytes=4)
    fx.encrypted(inc)
    fx.corrupt(inc)
    fx.truncated(inc)
    fx.empty(inc)
    fx.big5_names(inc)
    fx.nested_zip(inc)
    fx.good_zip(inc, name="homework.zip")
    (inc / "index.html").write_text("<html>not a submission</html>")
    before = area.snapshot()

    t0 = time.monotonic()
    subs = intake([inc], area.work)
    assert time.monotonic() - t0 < 10

    assert area.snapshot() == before  # originals byte-identical, nothing written outside work/
    assert not (area.root / "abs_evil.txt").exists()
    ids = [s.student_id for s in subs]
    assert len(ids) == len(set(ids))
    expected = {
        "0556001": [],
        "0556100": ["duplicate"],
        "0556002": ["bad-name"],
        "0556003": ["bad-name"],
        "0556004": ["bad-name", "unsupported-format"],
        "0556005": [],
        "0556010": ["unsafe-path"] * 3,
        "0556011": [],
        "0556012": ["link", "link"],
        "0556013": ["special-file", "special-file"],
        "0556014": ["suspicious-compression"],
        "0556017": ["encrypted"],
        "0556018": ["corrupt"],
        "0556019": ["truncated"],
        "0556020": ["empty"],
        "0556030": [],
        "0556041": ["nested-too-deep", "unsafe-path"],
        "unknown-homework": ["no-student-id"],
    }
    assert {s.student_id: codes(s) for s in subs} == expected
    for sub in subs:
        assert Path(sub.work_dir).parent == area.work
        assert all(p.message[0].isupper() or p.message[0] == "`" for p in sub.problems)
        _check_work_dir(sub)
    assert next(s for s in subs if s.student_id == "0556100").duplicates == (str(old),)


def test_moodle_download_all_zip(area: Area) -> None:
    fx.moodle_bundle(area.incoming, {"0556001": ("陳偉", "111"), "0556002": ("Lin Mei", "222")},
                     uploaded=(2024, 10, 3, 23, 59, 30))
    before = area.snapshot()
    subs = intake([area.incoming / "DL-2024-LAB1-提交作業-12345.zip"], area.work)
    assert area.snapshot() == before
    assert [(s.student_id, s.student_name, s.problems) for s in subs] == [("0556001", "陳偉", ()), ("0556002", "Lin Mei", ())]
    local = time.mktime((2024, 10, 3, 23, 59, 30, 0, 0, -1))
    for sub in subs:
        assert sub.submitted_at_source == "lms-archive-entry"
        assert datetime.fromisoformat(sub.submitted_at).timestamp() == local
        assert (area.work / "_lms") in Path(sub.source).parents


@pytest.mark.parametrize(("data", "what", "fix"), [
    ((b'<!DOCTYPE html>\n<html><head><meta name="generator" content="nbconvert"></head>'
      b'<body class="jp-Notebook"></body></html>'), "an HTML export of a notebook", "hand in the .ipynb file itself"),
    (b"%PDF-1.5\n...", "it is a PDF", "hand in the .ipynb file itself"),
    (b'{"cells": [', "not valid JSON", "open it in Jupyter, save it again"),
])
def test_an_export_named_ipynb_says_what_it_is_and_what_to_hand_in(area: Area, data: bytes, what: str, fix: str) -> None:
    """Tester 1's 13: an HTML export named `.ipynb` was only "not valid JSON: Expecting value"."""
    sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", [("lab1-1.ipynb", data), ("report.pdf", fx.PDF)]))
    [p] = sub.problems
    assert p.code == "unreadable-notebook" and what in p.message and fix in p.message, p.message


def test_moodle_download_all_zip_inside_the_folder_given(area: Area) -> None:
    """The TA saves the download-all zip among other zips and gives the folder: the bundle is
    expanded (not read as one student's zip), and a student's own `dllab_<id>.zip` is never
    taken for a bundle, whatever folders it holds."""
    fx.moodle_bundle(area.incoming, {"0556001": ("陳偉", "111")}, uploaded=(2024, 10, 3, 23, 59, 30))
    fx.write_zip(area.incoming / "dllab_0556002.zip", [
        ("Lin Mei_222_assignsubmission_file_/lab1-1.ipynb", fx.notebook_bytes()), ("report.pdf", fx.PDF)])
    subs = intake([area.incoming], area.work)
    assert [(s.student_id, s.submitted_at_source) for s in subs] == [("0556001", "lms-archive-entry"),
                                                                     ("0556002", "file-mtime")]
    again = intake([area.incoming], area.root / "work2")
    assert [s.student_id for s in again] == ["0556001", "0556002"]


def test_damaged_archives_never_crash(area: Area) -> None:
    """Flip bytes all over a good zip: every result is a Submission, never an exception."""
    import random

    rng = random.Random(0)
    good = fx.good_zip(area.root / "src").read_bytes()
    for i in range(80):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = area.incoming / f"dllab_{i:07d}.zip"
        path.write_bytes(bytes(data[: rng.randint(len(data) // 2, len(data))] if i % 4 == 0 else data))
    before = area.snapshot()
    subs = intake([area.incoming], area.work)
    assert len(subs) == 80
    assert area.snapshot() == before
    for sub in subs:
        _check_work_dir(sub)


def test_lone_notebooks_are_graded_and_ta_files_are_ignored(area: Area) -> None:
    (area.incoming / "dllab_0556050.ipynb").write_bytes(fx.notebook_bytes())
    (area.incoming / "dllab_0556051.ipynb").write_bytes(fx.notebook_bytes())
    (area.incoming / "roster_20241003.csv").write_text("id\n0556050\n")
    subs = intake([area.incoming], area.work)
    assert [s.student_id for s in subs] == ["0556050", "0556051"]
    assert codes(subs[0]) == ["no-report", "not-an-archive"]
    assert [f.path for f in subs[0].notebooks] == ["dllab_0556050.ipynb"]


def test_self_check_folder_takes_the_id_from_the_notebook(area: Area) -> None:
    mine = area.incoming / "my work"
    mine.mkdir()
    (mine / "dllab_0556060.ipynb").write_bytes(fx.notebook_bytes())
    (mine / "report.pdf").write_bytes(fx.PDF)
    (sub,) = intake([mine], area.work)
    assert (sub.student_id, sub.problems) == ("0556060", ())
    assert paths(sub) == {"dllab_0556060.ipynb", "report.pdf"}


def test_loose_files_uploaded_to_moodle(area: Area) -> None:
    sub_dir = area.incoming / "Lin Mei_345678_assignsubmission_file_"
    sub_dir.mkdir()
    (sub_dir / "dllab_0556070.ipynb").write_bytes(fx.notebook_bytes())
    (sub_dir / "report.pdf").write_bytes(fx.PDF)
    (sub,) = intake([area.incoming], area.work)
    assert (sub.student_id, codes(sub), sub.lms_participant_id) == ("0556070", ["not-an-archive"], "345678")
    assert paths(sub) == {"dllab_0556070.ipynb", "report.pdf"}


# --------------------------------------------------------------------------- notebooks Jupyter opens (issue 12 A)


def test_notebooks_jupyter_opens_are_repaired_not_refused(area: Area) -> None:
    sub = run_one(area, fx.repaired_notebooks)
    assert codes(sub) == ["notebook-repaired"] * 3
    assert [f.path for f in sub.notebooks] == ["lab1-1.ipynb", "lab1-2.ipynb", "lab1-3.ipynb"]
    by_path = {p.path: p.message for p in sub.problems}
    assert "byte-order mark" in by_path["lab1-1.ipynb"] and "format 4.4" in by_path["lab1-1.ipynb"]
    assert "0x92" in by_path["lab1-2.ipynb"] and "`metadata`" in by_path["lab1-2.ipynb"]
    assert "`outputs`" in by_path["lab1-3.ipynb"]
    assert all("Your file is unchanged" in m for m in by_path.values())
    # The work folder keeps the student's bytes; repairs happen where the notebook is read.
    work = Path(sub.work_dir)
    assert (work / "lab1-1.ipynb").read_bytes() == fx.bom_and_44_ids()
    assert (work / "lab1-2.ipynb").read_bytes() == fx.cp1252_byte_no_metadata()


def test_notebooks_under_other_names_are_found_by_content(area: Area) -> None:
    sub = run_one(area, fx.renamed_notebooks)
    kinds = {f.path: f.kind for f in sub.files}
    assert kinds == {"lab1-1.ipynb.json": "notebook", "lab1-2": "notebook", "lab1-3.ipynb.txt": "notebook",
                     "lab1.ipynb.pdf": "report", "results.json": "data", "report.md": "report"}
    found = sorted((p.code, p.path) for p in sub.problems)
    assert found == [("notebook-renamed", "lab1-1.ipynb.json"), ("notebook-renamed", "lab1-2"),
                     ("notebook-repaired", "lab1-2"), ("unreadable-notebook", "lab1-3.ipynb.txt")]
    unreadable = next(p for p in sub.problems if p.code == "unreadable-notebook")
    assert "`lab1-3.ipynb.txt` was found but could not be read" in unreadable.message
    assert "cut off" in unreadable.message


def test_unreadable_notebooks_are_listed_with_their_reason(area: Area) -> None:
    from grader.intake.classify import unreadable_notebooks

    sub = run_one(area, fx.invalid_notebook)
    listed = unreadable_notebooks(sub.files, sub.problems)
    assert [u["path"] for u in listed] == ["lab1.ipynb", "lab2.ipynb"]
    assert "cut off" in listed[0]["reason"] and "no list of `cells`" in listed[1]["reason"]


def test_every_problem_code_has_a_flag_the_ta_can_read() -> None:
    from grader.intake.problems import FLAGS
    from grader.report.student import FLAG_TEXT

    assert set(MESSAGES) <= set(FLAGS), "a new problem code needs its flag"
    for code, flag in FLAGS.items():
        assert flag == flag.lower() and " " not in flag, flag
        assert FLAG_TEXT.get(flag), f"flag {flag} (from {code}) is not explained"


# --------------------------------------------------------------------------- re-tester round 1: Moodle bundles


def _bundle(path: Path, entries: list[tuple[str, bytes | str, tuple[int, ...]]]) -> Path:
    """A Moodle download-all zip with the given entries and their (zone-less) upload times."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data, when in entries:
            zf.writestr(zipfile.ZipInfo(name, date_time=when), data)
    return path


def _student_zip(area: Area) -> bytes:
    return fx.write_zip(area.root / "inner.zip", fx.good_members()).read_bytes()


@pytest.mark.parametrize("name", ["LAB01-Lab 1-1234567.zip", "DL 2026-Assignment-0556001.zip",
                                  "dllab-1234567-all.zip"])
def test_a_download_all_named_like_an_id_is_still_a_bundle(area: Area, name: str) -> None:
    """Re-tester's 2: Moodle names the download `COURSE-Assignment-<number>.zip`; next to a loose
    dllab zip it was skipped for the id its name seems to carry and graded as one bogus student."""
    inner = _student_zip(area)
    _bundle(area.incoming / name, [
        ("王小明_123457_assignsubmission_file_/dllab_0460102.zip", inner, (2026, 11, 20, 10, 0, 0)),
        ("林美_123458_assignsubmission_file_/dllab_0460103.zip", inner, (2026, 11, 20, 10, 0, 0))])
    fx.good_zip(area.incoming, "0460104")
    subs = intake([area.incoming], area.work)
    assert [(s.student_id, [p.code for p in s.problems]) for s in subs] == [
        ("0460102", []), ("0460103", []), ("0460104", [])]
    assert [s.submitted_at_source for s in subs] == ["lms-archive-entry"] * 2 + ["file-mtime"]


def test_a_student_zip_named_by_the_pattern_is_never_a_bundle(area: Area) -> None:
    """The other side of 2: `dllab_<id>.zip` is the student's own, even given as a file."""
    fx.write_zip(area.incoming / "dllab_0556002.zip", [
        ("Lin Mei_222_assignsubmission_file_/lab1-1.ipynb", fx.notebook_bytes()), ("report.pdf", fx.PDF)])
    subs = intake([area.incoming / "dllab_0556002.zip"], area.work)
    assert [s.student_id for s in subs] == ["0556002"]


@pytest.mark.parametrize(("zone", "hours"), [(8, 8), (-5, -5), (0, 0)])
def test_bundle_times_are_read_in_the_deadline_zone(area: Area, zone: int, hours: int) -> None:
    """Re-tester's 3: an entry stamped 23:30 with the deadline 23:59+08:00 was read as UTC (7.5 h
    late); zip times carry no zone and are read in the zone `zip_tz` (the deadline's)."""
    from datetime import timedelta, timezone

    tz = timezone(timedelta(hours=zone))
    _bundle(area.incoming / "LAB01-Lab 1-1234567.zip", [
        ("林美_123458_assignsubmission_file_/dllab_0460103.zip", _student_zip(area), (2026, 11, 20, 23, 30, 0))])
    (sub,) = intake([area.incoming], area.work, zip_tz=tz)
    assert datetime.fromisoformat(sub.submitted_at) == datetime(2026, 11, 20, 23, 30, tzinfo=tz)
    # a later run in another zone extracts again rather than reuse the times read in this one
    other = timezone(timedelta(hours=hours + 1))
    (again,) = intake([area.incoming], area.root / "w2", zip_tz=other)
    (third,) = intake([area.incoming], area.work / "x", zip_tz=other)
    assert datetime.fromisoformat(again.submitted_at) == datetime(2026, 11, 20, 23, 30, tzinfo=other)
    assert third.submitted_at == again.submitted_at


@pytest.mark.parametrize(("flat", "sid", "person", "pid"), [
    ("Wang Xiaoming_123456_assignsubmission_file_dllab_0460101.zip", "0460101", "Wang Xiaoming", "123456"),
    ("王小明_1234567_assignsubmission_file_DLLab-0460102.zip", "0460102", "王小明", "1234567"),
])
def test_older_flat_moodle_names_take_the_id_from_the_students_file(area: Area, flat: str, sid: str,
                                                                   person: str, pid: str) -> None:
    """Re-tester's 4a: `<Name>_<pid>_assignsubmission_file_dllab_0460101.zip` was graded as the
    participant id 123456 with bad-name; the id in the student's own file name wins."""
    _bundle(area.incoming / "LAB01-download-all.zip", [(flat, _student_zip(area), (2026, 11, 20, 10, 0, 0))])
    (sub,) = intake([area.incoming], area.work)
    assert (sub.student_id, sub.student_name, sub.lms_participant_id) == (sid, person, pid)
    assert [p.code for p in sub.problems] == ([] if flat.split("_file_")[1].startswith("dllab_") else ["bad-name"])
    assert sub.submitted_at_source == "lms-archive-entry"


def test_online_text_joins_the_participants_upload(area: Area) -> None:
    """Re-tester's 4b: Moodle's online-text entry became an extra student `moodle-123458`
    (0/100, no-notebook); it is noted on the same participant's upload instead."""
    _bundle(area.incoming / "LAB01-Lab 1-1234567.zip", [
        ("林美_123458_assignsubmission_file_/dllab_0460103.zip", _student_zip(area), (2026, 11, 20, 10, 0, 0)),
        ("林美_123458_assignsubmission_onlinetext_/onlinetext.html", "<p>see zip</p>", (2026, 11, 20, 10, 0, 0)),
        ("Lee Ann_123459_assignsubmission_onlinetext_/onlinetext.html", "<p>forgot</p>", (2026, 11, 20, 10, 0, 0)),
        ("Lee Ann_123459_assignsubmission_file_/dllab_0460104.zip", _student_zip(area), (2026, 11, 20, 10, 0, 0))])
    subs = intake([area.incoming], area.work)
    assert [s.student_id for s in subs] == ["0460103", "0460104"]
    for sub in subs:
        [p] = sub.problems
        assert p.code == "online-text" and "onlinetext.html" in p.message and "not graded" in p.message


def test_online_text_alone_stays_visible(area: Area) -> None:
    """A participant who only typed text (no upload) is still listed, under Moodle's id."""
    _bundle(area.incoming / "LAB01-download-all.zip", [
        ("林美_123458_assignsubmission_onlinetext_/onlinetext.html", "<p>no zip</p>", (2026, 11, 20, 10, 0, 0)),
        ("Lee Ann_123459_assignsubmission_file_/dllab_0460104.zip", _student_zip(area), (2026, 11, 20, 10, 0, 0))])
    subs = intake([area.incoming], area.work)
    assert [s.student_id for s in subs] == ["0460104", "moodle-123458"]
    assert [p.code for p in subs[0].problems] == []


def test_a_loosely_named_student_zip_with_its_own_files_is_not_a_bundle(area: Area) -> None:
    """Told by contents: `DLlab-0556003.zip` holding the student's notebook next to a Moodle-looking
    folder is the student's own zip, not a class's download."""
    fx.write_zip(area.incoming / "DLlab-0556003.zip", [
        ("lab1-1.ipynb", fx.notebook_bytes()), ("report.pdf", fx.PDF),
        ("Lin Mei_222_assignsubmission_file_/old.ipynb", fx.notebook_bytes())])
    (sub,) = intake([area.incoming], area.work)
    assert sub.student_id == "0556003" and [p.code for p in sub.problems] == ["bad-name"]


def _dotted_notebook(megabytes: int) -> bytes:
    """A saved notebook whose training cell printed a progress dot per batch: a few MB that
    deflate 200-300 times, then the results (rt2's 0001434)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("for i, batch in enumerate(loader):\n    print('.', end='')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="." * (megabytes << 20) + "\nAccuracy 55 %\n")]
    nb.cells = [cell]
    return nbformat.writes(nb).encode()


def test_notebooks_and_logs_that_compress_well_are_not_zip_bombs(area: Area) -> None:
    fx.write_zip(area.incoming / "dllab_0556043.zip", [
        ("lab1.ipynb", _dotted_notebook(4)),
        ("train_log.txt", b"Warning: the dataloader is slow\n" * 100_000),  # 3.2 MB of one line
        ("src/train.py", b"# " + b"=" * (2 << 20) + b"\nprint('hi')\n"),
        ("data/zeros.bin", bytes(3 << 20)),  # a binary bomb of the same size is still refused
    ])
    (sub,) = intake([area.incoming], area.work)
    assert codes(sub) == ["suspicious-compression"] and sub.problems[0].path == "data/zeros.bin"
    assert {"lab1.ipynb", "train_log.txt", "src/train.py"} <= paths(sub)
    assert "Accuracy 55 %" in (Path(sub.work_dir) / "lab1.ipynb").read_text()


def test_of_two_members_with_one_name_the_first_is_extracted_as_the_message_says(area: Area) -> None:
    """Issue 13 H: the smaller copy was written (extraction sorts by size) while the message said
    the first was used. Now the first copy in the archive is extracted, whichever is smaller, in
    the top zip and in a nested one alike."""
    import io
    import warnings
    import zipfile

    first, second = fx.notebook_bytes("print('first', 0.70)" + " " * 400), fx.notebook_bytes("print('second')")
    inner = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name: that is the point
        with zipfile.ZipFile(inner, "w") as z:
            z.writestr("model.py", "A = 'first'" + " " * 400)
            z.writestr("model.py", "A = 'second'")
        members = [("lab1-1.ipynb", first), ("report.pdf", fx.PDF), ("lab1-1.ipynb", second),
                   ("helpers.zip", inner.getvalue())]
        sub = run_one(area, lambda f: fx.write_zip(f / "dllab_0556001.zip", members))
    assert len(second) < len(first)
    work = Path(sub.work_dir)
    assert (work / "lab1-1.ipynb").read_bytes() == first
    assert (work / "helpers" / "model.py").read_text().startswith("A = 'first'")
    dups = [p for p in sub.problems if p.code == "duplicate-member"]
    assert sorted(p.path for p in dups) == ["helpers.zip/model.py", "lab1-1.ipynb"]
    assert all("only the first copy was used" in p.message for p in dups)
