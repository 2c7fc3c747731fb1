"""Reading a student's report on the host is bounded, done once, and a failure says what it is
(issue 13 G1): PDFs built to keep pypdf busy or to blow up its memory end as a report item
for the TA ("could not be read within N s"), never as "no report" and never as a stalled batch.
"""

from __future__ import annotations

import json
import time
import zipfile
import zlib
from pathlib import Path

import pytest

import intake_fixtures as fx
from grader import reportread
from grader.checks import run_check
from grader.checks import files as files_check
from grader.checks.base import CheckContext
from grader.reportread import read_report

SECTIONS = ["Problems & solutions", "Experiment setup", "Results", "Analysis"]


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF file of these objects (1 is the catalog), with a correct cross-reference table."""
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _pages_pdf(content: bytes, pages: int, *, raw_stream: bytes | None = None) -> bytes:
    """`pages` pages that all draw one Flate content stream (`content`, or `raw_stream` as is)."""
    stream = raw_stream if raw_stream is not None else zlib.compress(content, 9)
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents 4 0 R >>")
    return _pdf([b"<< /Type /Catalog /Pages 2 0 R >>",
                 b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
                 b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
                 b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
                 *[page] * pages])


def shared_stream_pdf() -> bytes:
    """The issue's report.pdf: 31 KB, 50 pages sharing one 8 MB content stream."""
    op = b"BT /F1 12 Tf 72 712 Td (Results) Tj ET\n"
    return _pages_pdf(op * ((8 << 20) // len(op)), 50)


def bomb_pdf() -> bytes:
    """One page whose content stream inflates to 1.5 GiB (1.5 MB on disk), over the reader's memory."""
    z = zlib.compressobj(9)
    chunk = b"\0" * (64 << 20)
    stream = b"".join(z.compress(chunk) for _ in range(24)) + z.flush()
    return _pages_pdf(b"", 1, raw_stream=stream)


def text_pdf(text: str) -> bytes:
    lines = b"".join(b"BT /F1 12 Tf 72 %d Td (%s) Tj ET\n" % (700 - 20 * i, s.encode())
                     for i, s in enumerate(text.splitlines()))
    return _pages_pdf(lines, 1)


def _ctx(work: Path, *names: str) -> CheckContext:
    files = [{"path": n, "kind": "report", "bytes": (work / n).stat().st_size} for n in names]
    return CheckContext(student_id="0556001", part_id="report", dataset=None, files=files, work_dir=str(work))


@pytest.fixture(autouse=True)
def _fresh_cache():
    reportread._cached.cache_clear()
    yield
    reportread._cached.cache_clear()


def test_shared_content_stream_report_goes_to_the_ta_within_the_time_limit(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work" / "0556001"
    work.mkdir(parents=True)
    data = shared_stream_pdf()
    assert len(data) < 40_000  # the issue's 31 KB file
    (work / "report.pdf").write_bytes(data)
    monkeypatch.setattr(reportread, "TIMEOUT_S", 2.0)
    calls: list[str] = []
    child = reportread._child
    monkeypatch.setattr(reportread, "_child", lambda path, **kw: calls.append(str(path)) or child(path, **kw))
    started = time.monotonic()
    first = run_check("report_sections", _ctx(work, "report.pdf"), {"sections": SECTIONS})
    took = time.monotonic() - started
    assert first.status == "manual" and first.fraction == 0.0
    assert "could not be read within 2 s" in first.message and "not found" not in first.message
    assert took < 2.0 + 10  # the child was killed at its limit, not left to run a minute per page
    # the second item that reads the report (and every rescore) reuses the outcome
    again = run_check("report_sections", _ctx(work, "report.pdf"), {"sections": ["Results"]})
    assert again.status == "manual" and len(calls) == 1
    reportread._cached.cache_clear()  # a new process, as `rescore` is: the outcome is on disk
    monkeypatch.setattr(reportread, "_child", lambda path, **kw: pytest.fail("read twice"))
    assert run_check("report_sections", _ctx(work, "report.pdf"), {"sections": SECTIONS}).status == "manual"
    assert len(list((tmp_path / "work" / ".report-text").glob("*.json"))) == 1


def test_a_readable_report_is_still_read_and_judged(tmp_path: Path) -> None:
    work = tmp_path / "work" / "s"
    work.mkdir(parents=True)
    (work / "report.pdf").write_bytes(text_pdf("Problems & solutions\nExperiment setup\nResults"))
    out = run_check("report_sections", _ctx(work, "report.pdf"), {"sections": SECTIONS})
    assert out.status == "partial" and "Analysis" in out.message


def test_reference_loop_and_huge_page_count_are_bounded(tmp_path: Path) -> None:
    # /Kids pointing back at its own page tree, and a tree that claims 10^9 pages
    loop = _pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"])
    many = _pages_pdf(b"BT /F1 12 Tf 72 712 Td (Results) Tj ET\n", 20_000)
    for name, data in (("loop.pdf", loop), ("many.pdf", many)):
        (tmp_path / name).write_bytes(data)
        got = read_report(tmp_path / name, timeout_s=10)
        assert got.status in ("ok", "error", "timeout")
        assert got.status != "ok" or len(got.text) <= reportread.MAX_CHARS
        if got.status != "ok":
            assert got.reason.startswith("the report could not be read")
    got = read_report(tmp_path / "many.pdf", timeout_s=10)
    if got.status == "ok":  # only the first MAX_PAGES pages are read
        assert got.text.count("Results") == reportread.MAX_PAGES


def test_a_decompression_bomb_report_in_a_saved_mode_grade(tmp_path: Path) -> None:
    from grader.cli import main

    inc = tmp_path / "in"
    inc.mkdir()
    with zipfile.ZipFile(inc / "dllab_0556001.zip", "w") as zf:  # stored: the PDF is compressed already
        zf.writestr("lab1.ipynb", fx.notebook_bytes())
        zf.writestr("report.pdf", bomb_pdf())
    out = tmp_path / "out"
    assert main(["grade", str(inc), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf",
                 "--workers", "1"]) == 0
    grade = json.loads((out / "grades" / "0556001.json").read_text())
    item = next(i for p in grade["parts"] for i in p["items"] if i["id"] == "report-sections")
    assert item["status"] == "manual", item
    assert "report.pdf: the report could not be read" in item["message"]
    # pypdf's own inflate limit or the child's memory limit, whichever comes first: said as such
    assert any(w in item["message"] for w in ("LimitReached", "MiB of memory", "within"))
    cached = list((out / "work" / ".report-text").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["status"] in ("error", "timeout")
    stamp = cached[0].stat().st_mtime_ns
    assert main(["rescore", str(out), "--no-pdf"]) == 0  # served from the cache, not read again
    assert cached[0].stat().st_mtime_ns == stamp
    regraded = json.loads((out / "grades" / "0556001.json").read_text())
    assert next(i for p in regraded["parts"] for i in p["items"] if i["id"] == "report-sections") == item


def test_a_submission_of_many_reports_costs_a_few_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Eight PDFs, each slow to read and each a little different (so no cache helps): the grader
    # reads a few, the one named like a report first, and a TA gets the rest, never a fail.
    work = tmp_path / "work" / "s"
    work.mkdir(parents=True)
    names = [f"notes{i}.pdf" for i in range(8)]
    for i, n in enumerate(names):
        (work / n).write_bytes(text_pdf(f"Results\nrun {i}"))
    calls: list[str] = []
    child = reportread._child
    monkeypatch.setattr(reportread, "_child", lambda path, **kw: calls.append(str(path)) or child(path, **kw))
    out = run_check("report_sections", _ctx(work, *names), {"sections": SECTIONS})
    assert len(calls) == files_check.MAX_REPORTS_READ < len(names)
    assert out.status == "manual" and "4 more report file(s) were not read" in out.message
    (work / "my_report.pdf").write_bytes(text_pdf("\n".join(SECTIONS)))
    calls.clear()
    out = run_check("report_sections", _ctx(work, *names, "my_report.pdf"), {"sections": SECTIONS})
    assert out.status == "pass" and "my_report.pdf" in out.message
    assert calls and calls[0].endswith("my_report.pdf")  # read first; the others read before are cached
