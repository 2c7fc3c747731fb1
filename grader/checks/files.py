"""Checks on the files handed in: the report and its sections, required files."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Mapping

from grader.checks.base import CheckContext, Outcome

REPORT_SUFFIXES = (".pdf", ".docx", ".md", ".txt", ".html", ".htm")


def read_report_text(path: Path, *, max_chars: int = 200_000) -> str:
    """Plain text of a pdf, docx, markdown, text or html report; '' when it cannot be read."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            from pypdf import PdfReader
            return "\n".join((p.extract_text() or "") for p in PdfReader(str(path)).pages[:50])[:max_chars]
        if suffix == ".docx":
            import docx
            return "\n".join(p.text for p in docx.Document(str(path)).paragraphs)[:max_chars]
        text = path.read_bytes()[: max_chars * 4].decode("utf-8", errors="replace")
        if suffix in (".html", ".htm"):
            text = re.sub(r"<[^>]+>", " ", text)
        return text[:max_chars]
    except Exception:  # noqa: BLE001 - an unreadable report is reported, not raised
        return ""


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9\u4e00-\u9fff]+", " ", s.lower().replace("&", " and ")).strip()


def report_sections(ctx: CheckContext, params: Mapping) -> Outcome:
    """A report is present with the sections the handout asks for."""
    sections = list(params.get("sections") or ["Problems & solutions", "Experiment setup", "Results", "Analysis"])
    reports = [f for f in ctx.files if f.get("kind") == "report"
               and str(f.get("path", "")).lower().endswith(REPORT_SUFFIXES)]
    if not reports:
        return Outcome("fail", 0.0, f"no report was found: add a pdf, docx or md file with the sections "
                                    f"{', '.join(sections)}.")
    best_found, best_path, unreadable = [], None, []
    for f in reports:
        text = read_report_text(Path(ctx.work_dir or ".") / f["path"]) if ctx.work_dir else ""
        if not text.strip():
            unreadable.append(f["path"])
            continue
        body = _norm(text)
        found = [s for s in sections if _norm(s) in body]
        if len(found) > len(best_found) or best_path is None:
            best_found, best_path = found, f["path"]
    if best_path is None:
        return Outcome("fail", 0.0, f"the report ({', '.join(unreadable)}) has no text the grader can read; "
                                    f"hand in a text-based pdf, docx or md.")
    missing = [s for s in sections if s not in best_found]
    if not missing:
        return Outcome("pass", 1.0, f"report {best_path} has every section.", (best_path,))
    fraction = len(best_found) / len(sections)
    return Outcome("partial" if best_found else "fail", fraction,
                   f"report {best_path} is missing the section(s): {', '.join(missing)}.", (best_path,))


def files_present(ctx: CheckContext, params: Mapping) -> Outcome:
    """Files matching each required pattern are in the submission."""
    patterns = list(params.get("patterns") or ["*.ipynb"])
    paths = [str(f.get("path", "")) for f in ctx.files]
    missing = [p for p in patterns if not any(fnmatch.fnmatch(x.lower(), p.lower()) for x in paths)]
    if not missing:
        return Outcome("pass", 1.0, "all required files are present.")
    got = len(patterns) - len(missing)
    return Outcome("partial" if got else "fail", got / len(patterns),
                   f"missing file(s) matching: {', '.join(missing)}.")
