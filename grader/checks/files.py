"""Checks on the files handed in: the report and its sections, required files."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from grader.checks import params as P
from grader.checks.params import DEFAULT_SECTIONS
from grader.checks.base import CheckContext, Outcome
from grader.reportread import ReportText, read_report

REPORT_SUFFIXES = (".pdf", ".docx", ".md", ".txt", ".html", ".htm")
MAX_REPORTS_READ = 4
"""Report files read per submission (each within grader.reportread's time and memory limits)."""


def read_report_text(path: Path, *, max_chars: int = 200_000) -> str:
    """Plain text of a pdf, docx, markdown, text or html report; '' when it cannot be read
    (grader.reportread gives the reason)."""
    got = read_report(path, max_chars=max_chars)
    return got.text if got.status == "ok" else ""


def _cache_dir(work_dir: str) -> Path:
    """Beside the unpacked submissions (OUT/work/<id>), never inside one: a run sees its own."""
    return Path(work_dir).resolve().parent / ".report-text"


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9\u4e00-\u9fff]+", " ", s.lower().replace("&", " and ")).strip()


@P.takes(P.ReportSections)
def report_sections(ctx: CheckContext, params: P.ReportSections) -> Outcome:
    """A report is present with the sections the handout asks for (and `min_words` words, when set)."""
    sections = list(params.sections or ctx.report_sections or DEFAULT_SECTIONS)
    min_words = params.min_words
    reports = [f for f in ctx.files if f.get("kind") == "report"
               and str(f.get("path", "")).lower().endswith(REPORT_SUFFIXES)]
    if not reports:
        return Outcome("fail", 0.0, f"no report was found: add a pdf, docx or md file with the sections "
                                    f"{', '.join(sections)}.")
    # Each read may cost the host up to reportread's time limit: a submission gets a few, the
    # files named like a report first, then the smallest (a zip may hold hundreds of PDFs).
    reports.sort(key=lambda f: ("report" not in str(f.get("path", "")).lower(), f.get("bytes") or 0,
                                str(f.get("path", ""))))
    reports, unread = reports[:MAX_REPORTS_READ], reports[MAX_REPORTS_READ:]
    best_found, best_path, best_words, unreadable, failed = [], None, 0, [], []
    skipped = (f"{len(unread)} more report file(s) were not read (the grader reads at most {MAX_REPORTS_READ} "
               f"per submission): {', '.join(str(f['path']) for f in unread[:5])}" if unread else "")
    for f in reports:
        got = read_report(Path(ctx.work_dir) / f["path"], cache_dir=_cache_dir(ctx.work_dir)) \
            if ctx.work_dir else ReportText("ok")
        if got.status != "ok":
            failed.append(f"{f['path']}: {got.reason}")
            continue
        text = got.text
        if not text.strip():
            unreadable.append(f["path"])
            continue
        body = _norm(text)
        found = [s for s in sections if _norm(s) in body]
        if len(found) > len(best_found) or best_path is None:
            best_found, best_path, best_words = found, f["path"], len(text.split())
    if (failed or skipped) and (best_path is None or len(best_found) < len(sections)):
        # The grader's reader gave up (time, memory) or read only some: a TA reads them, the
        # student is not failed.
        found = f" ({best_path} has {len(best_found)} of {len(sections)} sections)" if best_path else ""
        said = "; ".join([*failed, *([skipped] if skipped else [])])
        return Outcome("manual", 0.0, f"{said}{found}; a TA will read the report.",
                       tuple([*(f.split(':', 1)[0] for f in failed), *(str(f["path"]) for f in unread)]))
    if best_path is None:
        return Outcome("fail", 0.0, f"the report ({', '.join(unreadable)}) has no text the grader can read; "
                                    f"hand in a text-based pdf, docx or md.")
    missing = [s for s in sections if s not in best_found]
    short = (f"; it has {best_words:,} words, fewer than the {min_words:,} asked for"
             if min_words is not None and best_words < min_words else "")
    if not missing and short:
        return Outcome("partial", 0.5, f"report {best_path} has every section{short}.", (best_path,))
    if not missing:
        return Outcome("pass", 1.0, f"report {best_path} has every section.", (best_path,))
    fraction = len(best_found) / len(sections)
    return Outcome("partial" if best_found else "fail", fraction,
                   f"report {best_path} is missing the section(s): {', '.join(missing)}{short}.", (best_path,))


@P.takes(P.FilesPresent)
def files_present(ctx: CheckContext, params: P.FilesPresent) -> Outcome:
    """Files matching each required pattern are in the submission."""
    patterns = list(params.patterns)
    paths = [str(f.get("path", "")) for f in ctx.files]
    missing = [p for p in patterns if not any(fnmatch.fnmatch(x.lower(), p.lower()) for x in paths)]
    if not missing:
        return Outcome("pass", 1.0, "all required files are present.")
    got = len(patterns) - len(missing)
    return Outcome("partial" if got else "fail", got / len(patterns),
                   f"missing file(s) matching: {', '.join(missing)}.")
