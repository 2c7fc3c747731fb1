"""Every problem intake can report: a short code and the sentence a student reads, written once."""

from __future__ import annotations

from grader.model import Problem

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
    "unsafe-path": "`{path}` points outside the submission folder (an absolute path or `..`), "
    "so it was not extracted.",
    "link": "`{path}` is a link; links are not accepted in submissions, so it was not extracted.",
    "special-file": "`{path}` is a device, pipe or other special file, so it was not extracted.",
    "bad-filename": "The file name `{path}` cannot be used ({detail}), so it was not extracted.",
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
    "bad-notebook": "`{path}` is not a valid Jupyter notebook ({detail}); "
    "open it in Jupyter, save it again and re-submit.",
    "no-notebook": "No notebook (.ipynb) or Python script (.py) was found in the submission.",
    "no-report": "No report (pdf, docx, md, txt or html) was found in the submission.",
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def problem(code: str, path: str | None = None, **fields: object) -> Problem:
    """The `Problem` for `code`, its message filled in from `fields` (and `path`).

    Names and details come from hostile archives: in the message they are shown printable
    and short; `Problem.path` keeps the exact name.
    """
    shown = {k: printable(v) if isinstance(v, str) else v for k, v in fields.items()}
    message = MESSAGES[code].format_map(_Blank(shown, path=printable(path or "")))
    return Problem(code=code, message=message, path=path)


def printable(text: str, limit: int = 120) -> str:
    """Control characters as `?`, and at most `limit` characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def human_bytes(n: int) -> str:
    """`1536` -> `1.5 KiB`: sizes in messages a student reads."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover
