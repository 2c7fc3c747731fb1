"""Every problem intake can report: a short code and the sentence a student reads, written once."""

from __future__ import annotations

from collections.abc import Sequence

from grader.model import Problem
from grader.safename import shown_name

# Fields in braces are filled by `problem(code, **fields)`. Write to the student, say what
# was expected, and say what the grader did about it.
MESSAGES: dict[str, str] = {
    # naming and handing in
    "bad-name": "The file is named `{name}` but the lab expects `{expected}`; "
    "it was still graded as student {student_id}.",
    "no-student-id": "No student id could be read from `{name}` (the lab expects `{expected}`){lms}; "
    "it is listed as `{student_id}` until a TA fixes it.",
    "duplicate": "Student {student_id} handed in {count} files; the newest, `{chosen}`, "
    "was graded and the older ones were ignored: {others}.",
    "extra-file": "`{name}` was uploaded next to the archive instead of inside it, so it was not graded.",
    "online-text": "The text typed into Moodle's online-text box (`{name}`) was not graded: the lab is "
    "graded from the uploaded files; the TA can still read it in Moodle.",
    "claimed-id": "Student id {claimed} is claimed by uploads of {count} Moodle participants: {who}. "
    "Whose id it is cannot be told from the files, so each upload was graded on its own and none replaces "
    "another's grade; this one (participant {participant}) is listed as `{student_id}` until a TA decides.",
    "loose-claim": "Student id {claimed} of this upload (Moodle participant {participant}) is also claimed by "
    "{files}, given to the grader beside the Moodle download with no known uploader; neither replaces the other, "
    "each was graded on its own, and this one is listed as `{student_id}` until a TA decides whose work is whose.",
    "unowned-claim": "`{name}` claims student id {claimed}, but Moodle lists that id as uploaded by {who}, and who "
    "handed in this file is not known (it was not in the Moodle download); it was graded on its own as "
    "`{student_id}` and replaces no upload until a TA decides.",
    "several-ids": "Moodle participant {person} ({participant}) uploaded archives for {count} different student "
    "ids ({ids}); each was graded on its own and none replaces another student's grade until a TA decides.",
    "inner-id": "`{name}` holds `{path}`, whose name carries another student id ({other}); it was graded as "
    "{student_id}, the id in the archive's name, and a TA will check whose work it is.",
    "unsafe-id": "The student id read from `{name}` cannot be used as a file name as it is ({why}); this "
    "submission was graded on its own, and its files are named `{safe}` (grades/{safe}.json, feedback/{safe}.pdf).",
    "not-an-archive": "`{name}` was handed in on its own; the lab expects everything in one zip "
    "named `{expected}`. It was graded as if it had been inside that zip.",
    # the archive as a whole
    "unsupported-format": "`{name}` is a {format} archive, which the grader cannot open; "
    "hand in a .zip file named `{expected}`.",
    "corrupt": "`{name}` is damaged and could not be read as a zip archive ({detail}).",
    "truncated": "`{name}` ends too early: the upload or download was probably cut off. "
    "Zip your work again and re-upload it.",
    "empty": "`{name}` contains no files.",
    "encrypted": "`{path}` is password-protected, so the grader cannot open it; "
    "zip your work again without a password.",
    # single members
    "unsafe-path": "`{path}` points outside the submission folder (through `..`), so it was not extracted.",
    "link": "`{path}` is a link; links are not accepted in submissions, so it was not extracted.",
    "special-file": "`{path}` is a device, pipe or other special file, so it was not extracted.",
    "bad-filename": "The file name `{path}` cannot be used ({detail}), so it was not extracted.",
    "garbled-name": "The name `{path}` looks garbled: it was probably written in a Windows code page the grader "
    "could not recognise. The file was extracted and graded under this name; zipping it with a UTF-8 tool "
    "(7-Zip, or Windows 11's own) avoids this.",
    "renamed-member": "`{path}` could not be unpacked under its own name: {detail}. It was extracted "
    "and graded as `{name}`.",
    "duplicate-member": "`{path}` appears more than once in the archive (or clashes with a folder); "
    "only the first copy was used.",
    "member-corrupt": "`{path}` inside the archive is damaged and could not be extracted ({detail}).",
    "file-too-large": "`{path}` is {size} when unpacked, more than the {limit} allowed for one file, "
    "so it was not extracted.",
    "archive-too-large": "The submission unpacks to more than the {limit} allowed; "
    "{skipped} file(s) were not extracted, starting with `{path}`.",
    "too-many-files": "The submission has more than {limit} files; {skipped} file(s) were not "
    "extracted, starting with `{path}`.",
    "suspicious-compression": "`{path}` expands {ratio:.0f} times when unpacked (more than the "
    "{limit:.0f} allowed), which is how zip bombs work, so it was not extracted.",
    "nested-too-deep": "`{path}` is an archive inside an archive inside the zip; only one level "
    "of nested zip is opened, so its contents were not graded.",
    # contents
    "unreadable-notebook": "`{path}` was found but could not be read as a Jupyter notebook: {detail}. "
    "It was not run and nothing in it was graded; {fix}.",
    "notebook-repaired": "`{path}` does not quite follow the notebook format ({detail}); the grader repaired "
    "its own copy and graded that. Your file is unchanged; saving it again in Jupyter avoids this.",
    "notebook-renamed": "`{path}` is a Jupyter notebook saved under another name; it was graded as a notebook. "
    "Keep notebooks named `*.ipynb`.",
    "no-notebook": "No notebook (.ipynb) or Python script (.py) was found in the submission.",
    "no-report": "No report (pdf, docx, md, txt or html) was found in the submission.",
}


# Problems that mean a notebook was found but could not be read (`bad-notebook`: older grades).
UNREADABLE_CODES = frozenset({"unreadable-notebook", "bad-notebook"})

# Every problem code -> the flag it puts on the grade, so the TA's views (grades.csv, the class
# summary, the Moodle export) show what went wrong at intake, not only 0 points.
FLAGS: dict[str, str] = {
    "bad-name": "bad-name", "no-student-id": "no-student-id", "duplicate": "duplicate",
    "claimed-id": "id-conflict", "several-ids": "id-conflict",
    "loose-claim": "id-conflict", "unowned-claim": "id-conflict", "inner-id": "id-conflict", "unsafe-id": "unsafe-id",
    "extra-file": "extra-file", "online-text": "online-text", "not-an-archive": "not-an-archive",
    "unsupported-format": "unsupported-format", "corrupt": "corrupt-archive", "truncated": "truncated-archive",
    "empty": "empty-submission", "encrypted": "encrypted",
    "unsafe-path": "refused-member", "link": "refused-member", "special-file": "refused-member",
    "bad-filename": "refused-member", "renamed-member": "renamed-member", "garbled-name": "garbled-name", "duplicate-member": "duplicate-member", "member-corrupt": "corrupt-member",
    "file-too-large": "file-too-large", "archive-too-large": "archive-too-large", "too-many-files": "too-many-files",
    "suspicious-compression": "zip-bomb", "nested-too-deep": "nested-too-deep",
    "unreadable-notebook": "unreadable-notebook", "bad-notebook": "unreadable-notebook",
    "notebook-repaired": "notebook-repaired", "notebook-renamed": "notebook-renamed",
    "no-notebook": "no-notebook", "no-report": "no-report",
}

# What each intake flag means, in a few words (the feedback PDF and the class summary show it).
FLAG_TEXT: dict[str, str] = {
    "no-student-id": "no student id could be read from the file name",
    "id-conflict": "whose work this is is in doubt (one student id claimed by uploads of two Moodle participants, "
                   "or by a participant's upload and a file beside the download with no known uploader, one "
                   "participant uploading several ids, or a file inside named for another id): each upload is "
                   "graded on its own, and the grade is left out of the Moodle import until a TA decides",
    "unsafe-id": "the student id in the file name cannot be a file name as it is (too long, odd characters, "
                 "a reserved name): the submission's files are named by a safe form of it",
    "extra-file": "a file was uploaded next to the zip, not inside it",
    "online-text": "text typed into Moodle's online-text box was not graded (the uploaded files were)",
    "not-an-archive": "files were handed in without a zip",
    "unsupported-format": "the archive is not a zip and could not be opened",
    "corrupt-archive": "the zip is damaged and could not be opened",
    "truncated-archive": "the zip is cut off (an incomplete upload)",
    "empty-submission": "the submission contains no files",
    "encrypted": "the zip (or a file in it) is password-protected",
    "refused-member": "a file in the zip was refused (a link, a device, or a path outside the folder)",
    "renamed-member": "a file's name had to be changed to unpack it (trailing spaces, an over-long name, "
                      "bytes that are not UTF-8)",
    "garbled-name": "a file name in the zip looks garbled (a code page the grader could not recognise)",
    "duplicate-member": "a file appears twice in the zip",
    "corrupt-member": "a file in the zip is damaged",
    "file-too-large": "a file is over the size limit and was not unpacked",
    "archive-too-large": "the submission unpacks to more than the size limit",
    "too-many-files": "the submission has more files than the limit",
    "zip-bomb": "a file expands suspiciously much (a zip bomb) and was not unpacked",
    "nested-too-deep": "a zip inside a zip inside the submission was not opened",
    "unreadable-notebook": "a notebook was found but could not be read",
    "notebook-repaired": "a notebook was repaired to be read (graded as repaired)",
    "notebook-renamed": "a notebook was saved under another name",
    "no-notebook": "no notebook or script was found",
    "no-report": "no report was found",
}


# Problems that keep an archive, or a notebook inside it, from being read, and why as a clause:
# "`x.zip` could not be opened (it is password-protected)".
_UNOPENED: dict[str, str] = {
    "encrypted": "it is password-protected", "corrupt": "it is damaged", "truncated": "it is cut off",
    "empty": "it contains no files", "unsupported-format": "it is not a zip archive",
    "member-corrupt": "it is damaged inside the zip", "file-too-large": "it is larger than the size limit",
    "suspicious-compression": "it expands suspiciously much, like a zip bomb",
    "archive-too-large": "the submission is over the size limit", "too-many-files": "the submission has too many files",
    "unsafe-path": "its path points outside the submission folder", "link": "it is a link",
    "special-file": "it is a device or pipe, not a file", "bad-filename": "its name cannot be used",
}
# Problems that refuse a member outright (it is never written), rather than fail to read it.
_REFUSED = ("unsafe-path", "link", "special-file", "bad-filename")
_WHOLE_ARCHIVE = ("corrupt", "truncated", "empty", "unsupported-format")


def unopened(problems: Sequence[Problem]) -> list[dict[str, str]]:
    """`{"path", "what", "reason"}` for each archive, or notebook/script/zip inside one, that could not
    be unpacked: the checks name it for a part that has no notebook, instead of "not found"."""
    out = []
    for p in problems:
        path = p.path or "the submission"
        low = path.lower()
        if p.code not in _UNOPENED or not (p.code in _WHOLE_ARCHIVE or low.endswith((".ipynb", ".py", ".zip"))):
            continue
        archive = p.code in _WHOLE_ARCHIVE or (low.endswith(".zip") and p.code not in _REFUSED)
        what = "could not be opened" if archive else "was refused" if p.code in _REFUSED else "could not be extracted"
        out.append({"path": path, "what": what, "reason": _UNOPENED[p.code]})
    return out


def code_unopened(problems: Sequence[Problem]) -> bool:
    """Was a notebook, script or zip found but not unpacked (locked, damaged, refused)? Then
    "no notebook was found" would be false: the submission has one the grader could not read."""
    return any(u["path"].lower().endswith((".ipynb", ".py", ".zip")) for u in unopened(problems))


def flag_of(code: str) -> str:
    """The grade flag for an intake problem code (the code itself for one not listed)."""
    return FLAGS.get(code, code)


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def unreadable_fix(reason: str) -> str:
    """What to do about a notebook that could not be read: an export (HTML, PDF, .py) handed in
    under the notebook's name needs the .ipynb itself, not another save."""
    if "not the .ipynb itself" in reason or "not a notebook" in reason:
        return "hand in the .ipynb file itself (the one Jupyter opens and saves), not an export of it"
    if "levels deep" in reason:
        return "hand in the notebook as Jupyter saves it, without the deeply nested data"
    return "open it in Jupyter, save it again and re-submit"


def problem(code: str, path: str | None = None, **fields: object) -> Problem:
    """The `Problem` for `code`, its message filled in from `fields` (and `path`).

    Names and details come from hostile archives: in the message they are shown printable
    and short; `Problem.path` keeps the exact name, with bytes that are not UTF-8 shown as
    `\\xff` (`shown_name`) so the record can be written.
    """
    shown = {k: printable(v, 600 if k == "detail" else 120) if isinstance(v, str) else v for k, v in fields.items()}
    message = MESSAGES[code].format_map(_Blank(shown, path=printable(path or "")))
    return Problem(code=code, message=message, path=None if path is None else shown_name(path))


def printable(text: str, limit: int = 120) -> str:
    """Control characters as `?`, bytes that are not UTF-8 as `\\xff`, and at most `limit` characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in shown_name(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def human_bytes(n: int) -> str:
    """`1536` -> `1.5 KiB`: sizes in messages a student reads."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover
