"""The evidence beside a review decision (grader.review.evidence): read from OUT only, bounded,
plain text; rendered escaped by templates/review/_evidence.html.j2. Small graded folders are
built in tmp_path; no kernel runs."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import jinja2
import pytest

from grader.review import evidence as E
from grader.review.evidence import entry_evidence

SID = "0556001"
NB = "lab1-1.ipynb"


def _png() -> bytes:
    """A valid 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff")) + chunk(b"IEND", b""))


def _code(count: int, source: str, outputs: list | None = None) -> dict:
    return {"cell_type": "code", "execution_count": count, "metadata": {}, "source": source,
            "outputs": outputs or []}


def _stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def _grade(items: list[dict], **more) -> dict:
    return {"student_id": SID, "lab": "lab1", "flags": [], "parts": [
        {"id": "lab1-1", "title": "LAB 1-1", "items": items, "points": 0, "max": 10}],
        "sources": {"lab1-1": {"notebook": NB}}, **more}


def _item(evidence: list[str], *, status: str = "manual", item_id: str = "it") -> dict:
    return {"id": item_id, "title": "An item", "status": status, "points": 0, "max": 3, "message": "m",
            "evidence": evidence}


def _out(tmp_path: Path, *, ev: dict | None = None, cells: list | None = None, executed: bool = True,
         files: list | None = None, work_dir: str | None = None) -> Path:
    out = tmp_path / "OUT"
    run = out / "runs" / SID / NB
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "fig-0001.png").write_bytes(_png())
    evidence = {"path": NB, "mode": "execute", "status": "ok", "errors": [], "metrics": {},
                "figures": [{"cell": 2, "kind": "histogram", "subjects": ["conv1.weight"],
                             "png": "figures/fig-0001.png"}]}
    evidence.update(ev or {})
    (run / "evidence.json").write_text(json.dumps(evidence))
    if executed:
        nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
              "cells": cells if cells is not None else [_code(1, "print(1)", [_stream("1\n")])]}
        (run / "executed.ipynb").write_text(json.dumps(nb))
    work = out / "work" / SID
    work.mkdir(parents=True)
    sub = {"student_id": SID, "source": "/somewhere/else/dllab_0556001.zip", "problems": [], "duplicates": [],
           "files": files or [], "work_dir": work_dir or str(work), "submitted_at": None,
           "submitted_at_source": "unknown"}
    (out / "runs" / SID / "submission.json").write_text(json.dumps(sub))
    return out


def _render(ev: dict, files_base: str = "/files/0556001/") -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parents[1] / "templates" / "review")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("_evidence.html.j2").render(evidence=ev, files_base=files_base)


def test_a_figure_path_outside_the_run_folder_is_dropped(tmp_path):
    out = _out(tmp_path, ev={"figures": [
        {"cell": 2, "kind": "line", "png": "../../x.png"},           # OUT/runs/x.png: outside the run folder
        {"cell": 2, "kind": "line", "png": "/etc/passwd"},
        {"cell": 2, "kind": "line", "png": "figures/link.png"},       # a link to a PNG outside
        {"cell": 2, "kind": "line", "png": "figures/fake.png"},       # not a PNG
        {"cell": 2, "kind": "histogram", "png": "figures/fig-0001.png", "subjects": ["conv1.weight"]}]})
    (out / "runs" / "x.png").write_bytes(_png())
    (tmp_path / "outside.png").write_bytes(_png())
    run = out / "runs" / SID / NB
    (run / "figures" / "link.png").symlink_to(tmp_path / "outside.png")
    (run / "figures" / "fake.png").write_text("<svg onload=alert(1)>")
    got = entry_evidence(out, _grade([_item([f"{NB}#cell 2"])]), item_id="it")
    assert [f["path"] for f in got["figures"]] == [f"{NB}/figures/fig-0001.png"]
    assert got["figures_from"] == "cited cells"
    assert got["figures"][0] | {"path": None} == {"notebook": NB, "cell": 2, "kind": "histogram", "title": "",
                                                   "subjects": ["conv1.weight"], "path": None,
                                                   "url_path": f"{NB}/figures/fig-0001.png"}


def test_the_url_path_is_quoted_per_segment(tmp_path):
    out = _out(tmp_path, ev={"figures": [{"cell": 2, "kind": "other", "png": "figures/a b#?.png"}]})
    (out / "runs" / SID / NB / "figures" / "a b#?.png").write_bytes(_png())
    fig = entry_evidence(out, _grade([_item([f"{NB}#cell 2"])]), item_id="it")["figures"][0]
    assert fig["path"] == f"{NB}/figures/a b#?.png"
    assert fig["url_path"] == f"{NB}/figures/a%20b%23%3F.png"


def test_caps_hold(tmp_path):
    big = "x" * 10_000
    cells = [_code(i, f"print({i})", [_stream(big)]) for i in range(1, 11)]
    figs = [{"cell": 1, "kind": "line", "png": f"figures/f{i}.png"} for i in range(20)]
    out = _out(tmp_path, cells=cells, ev={"figures": figs},
               files=[{"path": "report.md", "kind": "report", "bytes": 1}])
    for i in range(20):
        (out / "runs" / SID / NB / "figures" / f"f{i}.png").write_bytes(_png())
    sections = ["Problems & solutions", "Experiment setup", "Results", "Analysis", "Extra"]
    (out / "work" / SID / "report.md").write_text("".join(f"## {s}\n{'word ' * 1500}\n" for s in sections))
    (out / "rubric.yaml").write_text(json.dumps({"parts": [{"id": "lab1-1", "items": [
        {"id": "it", "check": "manual", "hint": {"check": "report_sections", "params": {"sections": sections}}}]}]}))
    got = entry_evidence(out, _grade([_item([f"{NB}#cell {i}" for i in range(1, 11)])]), item_id="it")
    assert len(got["figures"]) == E.MAX_FIGURES and got["figures_more"] == 8
    assert len(got["cells"]) == E.MAX_CELLS and got["cells_more"] == 4
    out0 = got["cells"][0]["outputs"][0]
    assert len(out0["text"]) == E.MAX_OUTPUT_CHARS and out0["more"] == 10_000 - E.MAX_OUTPUT_CHARS
    assert [s["heading"] for s in got["report"]] == ["Problems & solutions", "Experiment setup", "Results"]
    assert all(len(s["text"]) <= E.MAX_SECTION_CHARS and s["more"] > 0 for s in got["report"])
    assert got["order"][0] == "report"
    json.dumps(got)  # JSON-able


def test_ansi_colours_are_stripped_from_a_failing_cell(tmp_path):
    tb = ["\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
          "\x1b[0;31mNameError\x1b[0m                                 Traceback (most recent call last)",
          "\x1b[0;31mNameError\x1b[0m: name 'dataiter' is not defined"]
    cells = [_code(1, "import torch"),
             _code(2, "images, labels = dataiter.next()",
                   [_stream("\x1b[1mbold\x1b[0m\n"),
                    {"output_type": "error", "ename": "NameError", "evalue": "name 'dataiter' is not defined",
                     "traceback": tb}])]
    out = _out(tmp_path, cells=cells, ev={"status": "error", "errors": [
        {"cell": 2, "index": 1, "ename": "NameError", "evalue": "name 'dataiter' is not defined",
         "source": "images, labels = dataiter.next()", "traceback": ""}]})
    grade = _grade([_item([NB], status="partial", item_id="lab1-1-ran")], flags=["notebook-error"])
    for got in (entry_evidence(out, grade, item_id="lab1-1-ran"), entry_evidence(out, grade, flag="notebook-error")):
        (cell,) = got["cells"]
        assert cell["why"] == "error" and cell["cell"] == 2
        assert cell["error"]["ename"] == "NameError"
        assert "NameError: name 'dataiter' is not defined" in cell["error"]["traceback"]
        assert "\x1b" not in json.dumps(got)
        assert cell["outputs"][0]["text"] == "bold\n"
    assert got["subject"]["text"].startswith("a notebook stopped with an error")


def test_a_pdf_reports_sections_carry_their_page(tmp_path):
    weasyprint = pytest.importorskip("weasyprint")
    pdf = weasyprint.HTML(string=(
        "<h1>Problems &amp; solutions</h1><p>None at all.</p><h1>Experiment setup</h1><p>SGD with lr 0.01.</p>"
        "<h1 style='page-break-before: always'>Analysis</h1><p>0.01 with step decay trained fastest.</p>")).write_pdf()
    out = _out(tmp_path, files=[{"path": "report.pdf", "kind": "report", "bytes": len(pdf)}])
    (out / "work" / SID / "report.pdf").write_bytes(pdf)
    (out / "rubric.yaml").write_text(
        "parts:\n- id: lab1-1\n  items:\n  - id: it\n    check: manual\n"
        "    hint: {check: report_sections, params: {sections: [Experiment setup, Analysis]}}\n")
    got = entry_evidence(out, _grade([_item(["TA hint (report_sections): pass", "report.pdf"])]), item_id="it")
    assert [(s["file"], s["page"], s["heading"]) for s in got["report"]] == [
        ("report.pdf", 1, "Experiment setup"), ("report.pdf", 2, "Analysis")]
    assert "SGD with lr 0.01." in got["report"][0]["text"]
    assert "step decay" in got["report"][1]["text"]


def test_a_report_without_the_named_sections_shows_its_first_pages(tmp_path):
    out = _out(tmp_path, files=[{"path": "notes.txt", "kind": "report", "bytes": 5}])
    (out / "work" / SID / "notes.txt").write_text("I tried three rates.")
    got = entry_evidence(out, _grade([_item([NB])]), item_id="it")
    assert got["report"] == [{"file": "notes.txt", "page": None, "heading": None, "text": "I tried three rates.",
                              "more": 0}]


def test_a_missing_executed_notebook_is_said_not_a_crash(tmp_path):
    out = _out(tmp_path, executed=False)
    got = entry_evidence(out, _grade([_item([f"{NB}#cell 4"])]), item_id="it")
    (cell,) = got["cells"]
    assert cell["note"] == "the executed notebook is missing or unreadable" and cell["source"] == ""
    assert any("executed.ipynb" in n for n in got["notes"])
    assert "executed.ipynb" in _render(got)


def test_a_work_dir_outside_out_is_said_not_read(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "report.md").write_text("## Analysis\nsecret")
    out = _out(tmp_path, work_dir=str(elsewhere), files=[{"path": "report.md", "kind": "report", "bytes": 5}])
    got = entry_evidence(out, _grade([_item(["report.md"])]), item_id="it")
    assert got["report"] == [] and "secret" not in json.dumps(got)
    assert any("outside OUT" in n for n in got["notes"])


def test_flags_gather_their_own_evidence(tmp_path):
    out = _out(tmp_path, ev={"status": "killed", "reason": "cell 3 was stopped: the memory limit was reached",
                             "stop": {"cell": 3, "reason": "the memory limit was reached"},
                             "metrics": {"test_accuracy": 0.91, "per_class_accuracy": {"cat": 0.5, "dog": 0.9}},
                             "verified": {"test_accuracy": 0.71, "per_class_accuracy": {"cat": 0.5, "dog": 0.6}}},
               cells=[_code(3, "hog = []")])
    (out / "runs" / SID / NB / "log.txt").write_text("start\n" + "line\n" * 100 + "killing the sandbox\n")
    sub = json.loads((out / "runs" / SID / "submission.json").read_text())
    sub["problems"] = [{"code": "bad-name", "flag": "bad-name", "message": "named `DLlab-0556001.zip`",
                        "path": "DLlab-0556001.zip"}]
    (out / "runs" / SID / "submission.json").write_text(json.dumps(sub))
    grade = _grade([], flags=["late", "bad-name", "mismatch", "sandbox-limit"], submitted_at="2018-10-02T22:59:00+08:00",
                   submitted_at_source="submitted-at-csv",
                   late={"days_late": 2, "minutes_late": 2820, "penalty_points": 20.0, "source": "submitted-at-csv"})
    late = entry_evidence(out, grade, flag="late")["late"]
    assert late["days_late"] == 2 and late["submitted_at"] == "2018-10-02T22:59:00+08:00"
    sub_ev = entry_evidence(out, grade, flag="bad-name")["submission"]
    assert sub_ev["source_name"] == "dllab_0556001.zip" and sub_ev["problems"][0]["code"] == "bad-name"
    nums = entry_evidence(out, grade, flag="mismatch")
    assert nums["order"][0] == "numbers"
    first = nums["numbers"][0]
    assert first["mismatch"] and first["printed"] == 0.91 and first["verified"] == 0.71
    assert first["delta"] == pytest.approx(0.2)
    assert [n["what"] for n in nums["numbers"] if n["mismatch"]] == ["test accuracy", "accuracy of dog"]
    limit = entry_evidence(out, grade, flag="sandbox-limit")
    (run,) = limit["runs"]
    assert run["status"] == "killed" and run["log_tail"].endswith("killing the sandbox")
    assert len(run["log_tail"].splitlines()) == E.MAX_LOG_LINES
    assert [(c["cell"], c["why"], c["reason"]) for c in limit["cells"]] == [(3, "stopped", "the memory limit was reached")]


def test_a_student_without_a_run_folder_is_said(tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    grade = _grade([_item([f"{NB}#cell 1"])], flags=["bad-name"])
    for got in (entry_evidence(out, grade, item_id="it"), entry_evidence(out, grade, flag="bad-name")):
        assert got["figures"] == [] and got["cells"] == []
        assert any("No run folder" in n for n in got["notes"])


def test_exactly_one_subject_and_a_known_item(tmp_path):
    out = _out(tmp_path)
    with pytest.raises(ValueError):
        entry_evidence(out, _grade([]))
    with pytest.raises(ValueError):
        entry_evidence(out, _grade([_item([])]), item_id="it", flag="late")
    with pytest.raises(KeyError):
        entry_evidence(out, _grade([]), item_id="nope")


def test_student_text_is_rendered_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    cells = [_code(1, f"print('{evil}')", [_stream(evil + "\n")])]
    out = _out(tmp_path, cells=cells, ev={"path": NB, "figures": [
        {"cell": 1, "kind": "line", "title": evil, "subjects": [evil], "png": "figures/fig-0001.png"}]},
        files=[{"path": "r.md", "kind": "report", "bytes": 1}])
    (out / "work" / SID / "r.md").write_text(f"# Analysis\n{evil}")
    got = entry_evidence(out, _grade([_item([f"{NB}#cell 1"])]), item_id="it")
    html = _render(got, files_base='/files/"x"/')
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'src="/files/&#34;x&#34;/lab1-1.ipynb/figures/fig-0001.png"' in html
    assert set(got) == set(E.EMPTY)
    assert _render(dict(E.EMPTY, order=["cells", "numbers", "report", "runs", "late", "submission"]))


def test_a_saved_mode_notebook_shows_the_students_own_cells_and_traceback(tmp_path):
    tb = {"output_type": "error", "ename": "RuntimeError", "evalue": "size mismatch",
          "traceback": ["\x1b[0;31mRuntimeError\x1b[0m Traceback", "Cell In[5], line 3", "RuntimeError: size mismatch"]}
    out = _out(tmp_path, ev={"mode": "saved", "status": "error",
                             "errors": [{"cell": 5, "ename": "RuntimeError", "evalue": "size mismatch"}]},
               executed=False)
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [_code(5, "x = net(images)", [tb])]}
    (out / "work" / SID / NB).write_text(json.dumps(nb))
    grade = _grade([_item([NB])], flags=["notebook-error"])
    got = entry_evidence(out, grade, flag="notebook-error")
    assert [c["source"] for c in got["cells"]] == ["x = net(images)"]
    assert "RuntimeError: size mismatch" in got["cells"][0]["error"]["traceback"] and "\x1b" not in json.dumps(got)
    assert not any("executed.ipynb" in n for n in got["notes"])
    # without the student's notebook either, the note says what was looked for
    (out / "work" / SID / NB).unlink()
    got = entry_evidence(out, grade, flag="notebook-error")
    assert any("as the student saved it" in n for n in got["notes"])
