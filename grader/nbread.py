"""One lenient reader for every student notebook: what Jupyter would open, the grader reads.

`read_notebook(path)` returns the notebook as nbformat 4 plus the list of repairs it made,
each a short phrase for the student and the TA; it raises `UnreadableNotebook` only for a
file that truly cannot be read (not JSON, cut off, not a notebook at all, nested deeper than
`grader.jsondepth.MAX_DEPTH` levels, which would exhaust the grader's stack). Repairs happen in
memory: the file on disk is never changed, so the student's bytes stay as they were handed in.

Repaired: a byte-order mark; UTF-16 text; bytes that are not UTF-8 (a stray Windows-1252
byte, or a whole file in Big5/GBK); NUL padding after the JSON; raw control characters in
strings; notebook format 3 and older (converted); a missing `nbformat`, `nbformat_minor` or
top-level `metadata`; cell ids in a 4.4 notebook (read as 4.5), invalid or duplicated ids;
code cells without `outputs` or `execution_count`; `source` given as a list holding None or
numbers; malformed outputs; unknown keys; metadata that breaks the schema (Colab's widget
state, a `collapsed: "yes"`).
"""

from __future__ import annotations

import codecs
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbformat.validator import normalize

from grader.jsondepth import TooDeep, check_depth

__all__ = ["ReadNotebook", "UnreadableNotebook", "looks_like_notebook", "read_notebook", "reads_notebook"]

# Up to this many stray bytes are one editor's slip (a Windows-1252 quote typed in a cell);
# more suggest a file saved whole in a legacy code page.
_FEW_BAD_BYTES = 8
_LEGACY_ENCODINGS = {"cp950": "Big5 (Traditional Chinese Windows)", "gbk": "GBK (Simplified Chinese Windows)"}
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOP_KEYS = {"cells", "metadata", "nbformat", "nbformat_minor"}
_CELL_KEYS = {
    "code": {"id", "cell_type", "metadata", "source", "outputs", "execution_count"},
    "markdown": {"id", "cell_type", "metadata", "source", "attachments"},
    "raw": {"id", "cell_type", "metadata", "source", "attachments"},
}
_OUTPUT_KEYS = {
    "stream": {"output_type", "name", "text"},
    "display_data": {"output_type", "data", "metadata", "transient"},
    "execute_result": {"output_type", "data", "metadata", "execution_count", "transient"},
    "error": {"output_type", "ename", "evalue", "traceback"},
}
_HEAD = re.compile(rb'^\s*\{\s*"(cells|metadata|nbformat|nbformat_minor|worksheets)"\s*:')
_SNIFF_BYTES = 8192


class UnreadableNotebook(ValueError):
    """The file cannot be read as a notebook; `reason` says why in one short phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReadNotebook:
    """A notebook as read, and what had to be repaired to read it."""

    nb: NotebookNode
    """The notebook in nbformat 4 (4.5 when its cells have ids)."""
    repairs: tuple[str, ...]
    """Short phrases, one per kind of repair ("a UTF-8 byte-order mark at its start was ignored")."""


def read_notebook(path: Path | str) -> ReadNotebook:
    """Read `path` leniently; raises `UnreadableNotebook` (or OSError) when it cannot be."""
    return reads_notebook(Path(path).read_bytes())


def reads_notebook(data: bytes | str) -> ReadNotebook:
    """Like `read_notebook`, from the file's bytes (or already decoded text)."""
    repairs: list[str] = []
    text = data if isinstance(data, str) else _decode(data, repairs)
    doc = _parse(text, repairs)
    doc = _to_v4(doc, repairs)
    _normalize_v4(doc, repairs)
    nb = nbformat.v4.to_notebook(doc)  # as nbformat.reads: lists of lines become strings
    problem = _validation_error(nb)
    if problem:
        repairs.append(f"it still does not fully follow the notebook format ({problem}) and was read as it is")
    return ReadNotebook(nb, tuple(repairs))


def looks_like_notebook(path: Path | str) -> bool:
    """Does the file's text look like notebook JSON, whatever its name (`lab1.ipynb.json`)?

    Reads at most 16 KiB: the head and the tail, since Jupyter writes `cells` first and
    `nbformat` last, and Colab the other way round.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(len(head), size - _SNIFF_BYTES))
            tail = fh.read(_SNIFF_BYTES)
    except OSError:
        return False
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if head.startswith(bom):
            head = head[len(bom):]
    if head[:1] == b"\x00" or head[1:2] == b"\x00":  # UTF-16 without a mark: compare as ASCII
        head, tail = head.replace(b"\x00", b""), tail.replace(b"\x00", b"")
    both = head + tail
    return bool(_HEAD.match(head)) and b'"nbformat"' in both and (b'"cells"' in both or b'"worksheets"' in both)


# --------------------------------------------------------------------------- bytes to JSON


def _decode(data: bytes, repairs: list[str]) -> str:
    if not data.strip():
        raise UnreadableNotebook("the file is empty")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise UnreadableNotebook("it starts like UTF-16 text but is not") from None
        repairs.append("it was saved as UTF-16 text, not UTF-8, and was read as UTF-16")
        return text
    if len(data) > 1 and (data[0] == 0) != (data[1] == 0):  # UTF-16 without a mark: `{` is 7B 00 or 00 7B
        try:
            text = data.decode("utf-16-le" if data[1] == 0 else "utf-16-be")
        except UnicodeDecodeError:
            raise UnreadableNotebook("it looks like UTF-16 text but is not") from None
        repairs.append("it was saved as UTF-16 text, not UTF-8, and was read as UTF-16")
        return text
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        repairs.append("a UTF-8 byte-order mark at its start was ignored")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="surrogateescape")
    bad = [i for i, ch in enumerate(text) if "\udc80" <= ch <= "\udcff"]
    if len(bad) > _FEW_BAD_BYTES:
        for enc, name in _LEGACY_ENCODINGS.items():
            try:
                whole = data.decode(enc)
            except UnicodeDecodeError:
                continue
            repairs.append(f"it is not UTF-8 text and was read as {name}")
            return whole
    first = bad[0]
    line = text.count("\n", 0, first) + 1
    byte = ord(text[first]) - 0xDC00
    fixed = "".join(_cp1252(ch) if "\udc80" <= ch <= "\udcff" else ch for ch in text)
    repairs.append(f"{len(bad)} byte(s) that are not UTF-8 (the first, 0x{byte:02X}, on line {line}) "
                   f"were read as Windows-1252 characters")
    return fixed


def _cp1252(ch: str) -> str:
    raw = bytes([ord(ch) - 0xDC00])
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined
        return raw.decode("latin-1")


def _parse(text: str, repairs: list[str]) -> Any:
    if text.startswith("\ufeff"):
        text = text[1:]
        repairs.append("a byte-order mark at its start was ignored")
    if not text.strip():
        raise UnreadableNotebook("the file is empty")
    try:
        check_depth(text)  # before any parser: each level costs them a stack frame
    except TooDeep as exc:
        raise UnreadableNotebook(f"the notebook's JSON is nested {exc.depth} levels deep, more than the "
                                 f"{exc.limit} the grader reads (and more than any notebook Jupyter writes)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        first = exc
    other = _other_format(text)
    if other:
        raise UnreadableNotebook(other)
    if re.search(r"^<<<<<<< ", text, re.MULTILINE) and re.search(r"^>>>>>>> ", text, re.MULTILINE):
        raise UnreadableNotebook("it holds unresolved git merge-conflict markers (<<<<<<< ... >>>>>>>)")
    body = text.lstrip()
    for strict in (True, False):
        try:
            doc, end = json.JSONDecoder(strict=strict).raw_decode(body)
        except json.JSONDecodeError:
            continue
        rest = body[end:]
        if rest.strip(" \t\r\n\x00"):
            break
        if not strict:
            repairs.append("raw control characters (tabs, line breaks) inside its strings were accepted")
        if rest.strip(" \t\r\n"):
            repairs.append(f"{rest.count(chr(0))} NUL byte(s) after the end of the notebook were ignored")
        return doc
    where = f"line {first.lineno}, column {first.colno}"
    at_end = first.pos >= len(text.rstrip()) - 1 or first.msg.startswith("Unterminated string")
    if at_end and _unclosed(body):
        lines = body.count("\n") + 1
        raise UnreadableNotebook(f"it is not valid JSON: the file stops (at line {lines}) before the notebook "
                                 f"ends, so it was probably cut off while saving or uploading")
    raise UnreadableNotebook(f"it is not valid JSON: {first.msg} at {where}")


_PYTHON_START = re.compile(r"(#|import\s|from\s+[\w.]+\s+import\s|def\s|class\s|print\()")


def _other_format(text: str) -> str | None:
    """What a file that is not JSON really is, when it is something students often hand in
    under a notebook's name (an export of it), in the words of the menu that made it."""
    head = text.lstrip()[:4096]
    low = head.lower()
    if low.startswith(("<!doctype html", "<html")) or (low.startswith("<") and "<html" in low):
        body = text[:200_000].lower()
        if any(mark in body for mark in ("jp-notebook", "jupyter", "ipynb", "nbconvert", "colab")):
            return "it is an HTML export of a notebook (File > Download as HTML), not the .ipynb itself"
        return "it is an HTML page, not a notebook"
    if head.startswith("%PDF-"):
        return "it is a PDF (a notebook printed or exported as PDF), not the .ipynb itself"
    if head.startswith("PK\x03\x04"):
        return "it is a zip archive, not a notebook"
    if _PYTHON_START.match(head) and re.search(r"^(import|from)\s|^def\s|^print\(", head, re.MULTILINE):
        return "it is Python source code (as File > Download as .py writes it), not a notebook"
    return None


def _unclosed(text: str) -> bool:
    """Does the text end inside a string or with brackets still open (a file cut off)?"""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return in_string or depth > 0


# --------------------------------------------------------------------------- notebook structure


def _to_v4(doc: Any, repairs: list[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise UnreadableNotebook(f"its JSON is {type(doc).__name__ if doc is not None else 'null'}, "
                                 f"not a notebook")
    major = doc.get("nbformat")
    if isinstance(major, str) and major.strip().isdigit():
        repairs.append(f"its `nbformat` was the text {major!r}, read as the number")
        major = doc["nbformat"] = int(major)
    if "worksheets" in doc or (isinstance(major, int) and not isinstance(major, bool) and major < 4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                doc = json.loads(nbformat.writes(nbformat.reads(json.dumps(doc), as_version=4), version=4))
        except Exception as exc:  # noqa: BLE001 - nbformat's converters raise anything on odd input
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise UnreadableNotebook(f"it is in the old notebook format {major} and could not be converted: "
                                     f"{first}") from None
        repairs.append(f"it was converted from the old notebook format {major or 3} to format 4")
        return doc
    if major is None:
        if not isinstance(doc.get("cells"), list):
            raise UnreadableNotebook("it is JSON but not a notebook (no `cells` and no `nbformat`)")
        repairs.append("it did not say which notebook format it uses and was read as format 4")
        doc["nbformat"] = 4
    elif major != 4:
        raise UnreadableNotebook(f"it says notebook format {major!r}, which Jupyter does not know")
    if not isinstance(doc.get("cells"), list):
        raise UnreadableNotebook("it has no list of `cells`")
    return doc


def _normalize_v4(doc: dict[str, Any], repairs: list[str]) -> None:
    dropped = sorted(k for k in doc if k not in _TOP_KEYS)
    for k in dropped:
        del doc[k]
    if dropped:
        repairs.append(f"unknown top-level key(s) {', '.join(dropped)} were ignored")
    if not isinstance(doc.get("metadata"), dict):
        repairs.append("the missing top-level `metadata` was added")
        doc["metadata"] = {}
    minor = doc.get("nbformat_minor")
    has_ids = any(isinstance(c, dict) and "id" in c for c in doc["cells"])
    if not isinstance(minor, int) or isinstance(minor, bool) or minor < 0:
        repairs.append("a missing or invalid `nbformat_minor` was replaced")
        minor = 5 if has_ids else 4
    elif minor < 5 and has_ids:
        repairs.append(f"its cells have ids, which format 4.{minor} does not allow, so it was read as format 4.5")
        minor = 5
    doc["nbformat_minor"] = minor
    notes: dict[str, int] = {}
    cells = []
    for cell in doc["cells"]:
        if not isinstance(cell, dict):
            notes["cells that were not objects were dropped"] = notes.get("cells that were not objects were dropped", 0) + 1
            continue
        _cell(cell, notes)
        cells.append(cell)
    doc["cells"] = cells
    if minor >= 5:
        _ids(cells, notes)
    _notebook_metadata(doc["metadata"], notes)
    before = _metadata_keys(doc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        changes, fixed = normalize(doc, strip_invalid_metadata=True)
    if changes:
        doc.clear()
        doc.update(fixed)
        gone = before - _metadata_keys(doc)
        if gone:
            names = sorted({name for _, name in gone})
            notes[f"metadata that breaks the notebook format ({', '.join(names[:4])}) was dropped"] = len(gone)
    repairs.extend(f"{what} ({n}×)" if n > 1 else what for what, n in notes.items())


def _note(notes: dict[str, int], what: str) -> None:
    notes[what] = notes.get(what, 0) + 1


def _cell(cell: dict[str, Any], notes: dict[str, int]) -> None:
    kind = cell.get("cell_type")
    if kind not in _CELL_KEYS:
        guess = "code" if "outputs" in cell or "execution_count" in cell else "markdown"
        _note(notes, f"a cell of unknown type {kind!r} was read as {guess}" if kind is not None
              else f"a cell without `cell_type` was read as {guess}")
        cell["cell_type"] = kind = guess
    cell["source"] = _text(cell.get("source"), notes, "source")
    if not isinstance(cell.get("metadata"), dict):
        if "metadata" in cell:
            _note(notes, "cell metadata that was not an object was replaced by an empty one")
        cell["metadata"] = {}
    if kind == "code":
        if not isinstance(cell.get("outputs"), list):
            _note(notes, "code cells without `outputs` were given an empty list")
            cell["outputs"] = []
        count = cell.get("execution_count")
        if "execution_count" not in cell or not (count is None or (isinstance(count, int) and count >= 0)):
            _note(notes, "code cells without a valid `execution_count` were given none")
            cell["execution_count"] = None
        cell["outputs"] = [o for o in (_output(o, notes) for o in cell["outputs"]) if o is not None]
    extra = [k for k in cell if k not in _CELL_KEYS[kind]]
    for k in extra:
        del cell[k]
    if extra:
        _note(notes, f"keys a {kind} cell may not have ({', '.join(sorted(extra))}) were ignored")


def _text(value: Any, notes: dict[str, int], what: str) -> str | list[str]:
    """A string or list of strings, as nbformat stores multi-line text; None and numbers fixed."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return value
        _note(notes, f"`{what}` lists holding None or numbers were read as text")
        return ["" if v is None else v if isinstance(v, str) else json.dumps(v) for v in value]
    _note(notes, f"a missing or non-text `{what}` was read as text")
    return "" if value is None else json.dumps(value)


def _output(out: Any, notes: dict[str, int]) -> dict[str, Any] | None:
    kind = out.get("output_type") if isinstance(out, dict) else None
    if kind not in _OUTPUT_KEYS:
        _note(notes, "outputs of unknown type were dropped")
        return None
    if kind == "stream":
        if out.get("name") not in ("stdout", "stderr"):
            _note(notes, "stream outputs without a valid `name` were read as stdout")
            out["name"] = "stdout"
        out["text"] = _text(out.get("text"), notes, "text")
    elif kind == "error":
        for key in ("ename", "evalue"):
            if not isinstance(out.get(key), str):
                out[key] = "" if out.get(key) is None else str(out[key])
                _note(notes, "error outputs with missing fields were completed")
        tb = out.get("traceback")
        out["traceback"] = [str(t) for t in tb] if isinstance(tb, list) else []
    else:
        if not isinstance(out.get("data"), dict):
            out["data"] = {}
            _note(notes, "display outputs without `data` were given an empty one")
        out["data"] = {str(k): v if _is_json_mime(str(k)) else _text(v, notes, "data")
                       for k, v in out["data"].items()}
        if not isinstance(out.get("metadata"), dict):
            out["metadata"] = {}
        if kind == "execute_result":
            count = out.get("execution_count")
            if not (count is None or (isinstance(count, int) and count >= 0)):
                out["execution_count"] = None
            out.setdefault("execution_count", None)
    for k in [k for k in out if k not in _OUTPUT_KEYS[kind]]:
        del out[k]
    return out


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _ids(cells: list[dict[str, Any]], notes: dict[str, int]) -> None:
    """Every cell gets a valid, unique id; new ids are numbered, so a re-read gives the same ones."""
    seen: set[str] = set()
    taken = {c["id"] for c in cells if isinstance(c.get("id"), str)}
    counter = 0
    for cell in cells:
        cid = cell.get("id")
        fresh = None
        if cid is None:
            fresh = "missing"  # nbformat fills these in silently too: not worth a word
        elif not isinstance(cid, str) or not _ID.match(cid):
            _note(notes, "invalid cell ids were replaced")
            fresh = "invalid"
        elif cid in seen:
            _note(notes, "duplicated cell ids were replaced")
            fresh = "duplicate"
        if fresh:
            counter += 1
            while f"cell-{counter}" in taken or f"cell-{counter}" in seen:
                counter += 1
            cid = cell["id"] = f"cell-{counter}"
        seen.add(cid)


def _notebook_metadata(meta: dict[str, Any], notes: dict[str, int]) -> None:
    """Colab's widget state without `state`, and half-written kernelspecs, break later readers."""
    widgets = meta.get("widgets")
    if widgets is not None:
        state = widgets.get("application/vnd.jupyter.widget-state+json") if isinstance(widgets, dict) else None
        if not (isinstance(state, dict) and isinstance(state.get("state"), dict)):
            del meta["widgets"]
            _note(notes, "widget state without a `state` key (as Colab saves it) was dropped")
    spec = meta.get("kernelspec")
    if spec is not None and not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
                                 and isinstance(spec.get("display_name"), str)):
        del meta["kernelspec"]
        _note(notes, "an incomplete `kernelspec` was dropped")
    info = meta.get("language_info")
    if info is not None and not (isinstance(info, dict) and isinstance(info.get("name"), str)):
        del meta["language_info"]
        _note(notes, "an incomplete `language_info` was dropped")


def _metadata_keys(doc: dict[str, Any]) -> set[tuple[int, str]]:
    """(cell index, key) of every metadata entry; -1 for the notebook's own metadata."""
    keys = {(-1, f"metadata.{k}") for k in doc.get("metadata") or {}}
    for i, cell in enumerate(doc.get("cells") or []):
        keys |= {(i, f"cell metadata.{k}") for k in (cell.get("metadata") or {})}
    return keys


def _validation_error(nb: NotebookNode) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        return str(exc.message)[:160]
    except Exception as exc:  # noqa: BLE001 - nbformat's validator can trip on odd shapes
        return (str(exc).splitlines() or [type(exc).__name__])[0][:160]
    return None
