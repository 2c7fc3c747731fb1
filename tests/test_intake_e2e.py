"""End to end (issue 12 A, K, N): `dllab grade` on real zips, in the real sandbox, read back.

A LAB 1-1 notebook that really trains, saved the way Jupyter-compatible editors sometimes
save it (a byte-order mark, nbformat 4.4 with cell ids, no top-level metadata, code cells
without outputs, a Windows-1252 apostrophe), is run and earns the LAB 1-1 items; an
encrypted zip in the same batch is flagged in the grade and the gradebook; the example
rubric's 2018 deadline is called out on stderr before grading.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import nbformat
import pytest

import intake_fixtures as fx
from grader.cli import main
from grader.samples import lab1_1

pytestmark = pytest.mark.kernel


def messy_lab1_1() -> bytes:
    """The sample LAB 1-1 notebook (1 epoch), with every envelope fault of issue 12 A at once."""
    doc = json.loads(nbformat.writes(lab1_1(epochs=1)))
    doc["nbformat_minor"] = 4  # but the cells keep their ids
    del doc["metadata"]
    doc["cells"][0]["source"] = "# LAB 1-1: CIFAR-10 CNN \u2013 it\u2019s my first one"
    for cell in doc["cells"]:
        if cell["cell_type"] == "code":
            del cell["outputs"], cell["execution_count"]
    text = json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")
    return b"\xef\xbb\xbf" + text.replace("\u2019".encode(), b"\x92")


@pytest.fixture(scope="module")
def graded(tiny_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from grader.datasets.standins import sandbox_readable

    sandbox_readable(tiny_datasets)
    subs = tmp_path_factory.mktemp("subs")
    fx.write_zip(subs / "dllab_0556101.zip", [("lab1-1.ipynb", messy_lab1_1()), ("report.pdf", fx.PDF)])
    fx.encrypted(subs, "0556102")
    out = tmp_path_factory.mktemp("out")
    capture = io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(capture):
        code = main(["grade", str(subs), "--lab", "lab1", "--data", str(tiny_datasets), "--out", str(out),
                     "--workers", "1", "--no-pdf"])
    assert code == 0, capture.getvalue()
    return out, capture.getvalue()


def test_repaired_notebook_is_run_in_the_sandbox_and_earns_its_items(graded: tuple[Path, str]) -> None:
    out, _ = graded
    g = json.loads((out / "grades" / "0556101.json").read_text())
    ev = json.loads((out / "runs" / "0556101" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["status"] == "ok", ev.get("reason")
    assert ev["dataset"] == "cifar10" and len(ev["metrics"]["per_class_accuracy"]) == 10
    items = {i["id"]: i for p in g["parts"] for i in p["items"]}
    for item in ("lab1-1-ran", "lab1-1-test-metrics", "lab1-1-per-class", "lab1-1-weights"):
        assert items[item]["status"] == "pass", (item, items[item]["message"])
    lab1_1_part = next(p for p in g["parts"] if p["id"] == "lab1-1")
    assert lab1_1_part["points"] > 0
    assert "notebook-repaired" in g["flags"]
    [repair] = [p for p in g["problems"] if p["flag"] == "notebook-repaired"]
    for words in ("byte-order mark", "format 4.4", "0x92", "`metadata`", "`outputs`"):
        assert words in repair["message"], (words, repair["message"])
    executed = nbformat.read(out / "runs" / "0556101" / "lab1-1.ipynb" / "executed.ipynb", as_version=4)
    assert executed.cells[0].source.endswith("it\u2019s my first one")
    assert (out / "work" / "0556101" / "lab1-1.ipynb").read_bytes() == messy_lab1_1(), "the student's bytes stay"


def test_encrypted_zip_is_flagged_in_the_grade_and_the_gradebook(graded: tuple[Path, str]) -> None:
    out, _ = graded
    g = json.loads((out / "grades" / "0556102.json").read_text())
    assert "encrypted" in g["flags"] and g["total"] == 0
    rows = {r["student_id"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    assert "encrypted" in rows["0556102"]["flags"].split(";") and "password-protected" in rows["0556102"]["problems"]
    assert "notebook-repaired" in rows["0556101"]["flags"].split(";")
    summary = (out / "summary.html").read_text()
    assert "encrypted: " in summary and "password-protected" in summary


def test_the_2018_deadline_is_called_out_and_visible(graded: tuple[Path, str]) -> None:
    out, stderr = graded
    warning = stderr[: stderr.index("to grade with")] if "to grade with" in stderr else stderr
    assert "warning: every submission is about" in stderr and "past the deadline" in stderr, stderr
    assert stderr.index("warning: every submission") < stderr.index("to grade with"), "said before grading"
    assert "2018-09-30 23:59 +08:00" in warning
    g = json.loads((out / "grades" / "0556101.json").read_text())
    assert {"late", "past-max-days"} <= set(g["flags"]) and g["total"] == 0  # loud now, not silent
    summary = (out / "summary.html").read_text()
    assert "Deadline in use: <b>2018-09-30 23:59 +08:00</b>" in summary
    assert "the archive file&#39;s modification time (2)" in summary
