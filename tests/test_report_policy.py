"""The report sections a student is told to write come from the lab's lab.yaml
(`report.sections`), not from text in the core. No kernel."""

from __future__ import annotations

import json
from pathlib import Path

from grader import pack
from grader.labs import find_lab
from grader.student import SelfCheck, problems, report_sections


def _lab(folder: Path, sections: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "lab.yaml").write_text(f"id: essay\ntitle: Essay\nreport: {{sections: {json.dumps(sections)}}}\n")
    return folder


def _working_folder(root: Path) -> Path:
    root.mkdir()
    (root / "lab.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return root


def test_report_sections_are_the_lab_packages(tmp_path: Path) -> None:
    assert report_sections("lab1") == find_lab("lab1").manifest.report.sections
    assert report_sections("lab1") == ("Problems & solutions", "Experiment setup", "Results", "Analysis")
    assert report_sections(str(_lab(tmp_path / "essay", ["Method", "Findings"]))) == ("Method", "Findings")
    assert report_sections(str(_lab(tmp_path / "none", []))) == ()
    assert report_sections("no-such-lab") == () and report_sections(None) == ()


def test_pack_names_the_labs_sections_when_no_report_is_found(tmp_path: Path) -> None:
    folder = _working_folder(tmp_path / "w")
    named = pack.plan_pack(folder, sections=("Method", "Findings")).warnings
    assert any("no report found" in w and "write it with the sections Method, Findings, save it" in w for w in named)
    plain = pack.plan_pack(folder).warnings
    assert any("no report found (pdf, docx, md, txt or html): write it, save it in the folder" in w for w in plain)
    assert not any("Problems & solutions" in w for w in named + plain)


def _selfcheck(problem_codes: list[str]) -> SelfCheck:
    return SelfCheck(grade={}, submission={"problems": [{"code": c, "message": f"{c}!"} for c in problem_codes]},
                     evidence=(), unjudged=frozenset(), manual=frozenset(), quick=True, datasets=(), deadline="",
                     expected_name="dllab_1.zip", source=Path("x"), packed=False, out=Path("x"), feedback=(),
                     render_error=None, reused=False, seconds=0.0)


def test_the_no_report_fix_names_the_labs_sections(tmp_path: Path) -> None:
    essay = str(_lab(tmp_path / "essay", ["Method", "Findings"]))
    result = _selfcheck(["no-report"])
    assert problems(result, lab=essay) == [
        ("no-report!", "write the report (Method, Findings), put it in the zip as report.pdf, .docx or .md")]
    assert problems(result, lab="lab1")[0][1].startswith(
        "write the report (Problems & solutions, Experiment setup, Results, Analysis), put it")
    assert problems(result, lab=str(_lab(tmp_path / "none", [])))[0][1] == \
        "write the report, put it in the zip as report.pdf, .docx or .md"


def test_dllab_pack_with_a_lab_folder_names_that_labs_sections(tmp_path: Path, capsys) -> None:
    from grader.cli import main

    folder = _working_folder(tmp_path / "w")
    lab = Path(__file__).parent / "labs" / "mnist_mlp"
    assert main(["pack", str(folder), "--student-id", "0000001", "--lab", str(lab), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "no report found (pdf, docx, md, txt or html): write it with the sections Results, save it" in printed
    assert main(["pack", str(folder), "--student-id", "0000002", "--rubric", str(lab / "rubric.yaml"),
                 "--out", str(tmp_path)]) == 0
    assert "write it with the sections Results, save it" in capsys.readouterr().out
