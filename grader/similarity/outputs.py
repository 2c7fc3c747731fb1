"""Output similarity: the printed numbers and figures two submissions share.

Code similarity misses a student who renamed every variable; the outputs do not. Two students who
trained separately never print the same training log, the same per-class accuracies or the same
training curve to the last digit and pixel; one who copied a notebook with its outputs (or its
seeded code) does. So each submission's outputs become an `OutputPrints`: its distinctive printed
lines, its per-class accuracy tables and the perceptual hashes of its figures, each with where it
was seen (`lab1-1.ipynb#cell 4`, 4 being the cell's `In[4]`). `common_outputs` finds what most of
the class prints (dataset sizes, a fixed grid of test images, the handout's seeded log) so that it
is never taken as evidence, and `compare_outputs` scores one pair for a TA.

Everything is read from the graded folder OUT and only from it: every path is resolved and must
lie inside OUT (a symlink or a forged `../../` path is not followed). Everything read came from a
student, so everything is bounded: run folders, notebook bytes, characters, lines, figures, pixels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.outread import inside as _inside
from grader.outread import read_json as _read_json
from grader.outread import work_folder
from grader.safename import safe_name

__all__ = ["OutputPrints", "common_outputs", "compare_outputs", "distinctive", "output_prints"]

MAX_RUN_FOLDERS = 40
"""Notebooks (run folders) read per student."""
MAX_JSON_BYTES = 32 << 20
"""Largest evidence.json or submission.json read (bytes)."""
MAX_NOTEBOOK_BYTES = 64 << 20
"""Largest notebook read (bytes)."""
MAX_TEXT_CHARS = 2_000_000
"""Printed characters read per notebook; the rest is not read (a runaway log)."""
MAX_LINE_CHARS = 400
"""A longer printed line (a tensor dump, a progress bar) is not a distinctive line."""
MAX_LINES = 3000
"""Distinctive lines kept per student."""
MAX_FIGURES = 60
"""Figures hashed per student."""
MAX_PNG_BYTES = 8 << 20
MAX_PIXELS = 25_000_000
"""Larger figures are not decoded (a decompression bomb)."""
MAX_WHERE = 5
"""Places kept per key (the same line printed in many cells)."""
FULL_MATCH_LINES = 5
"""Identical distinctive lines that by themselves score 1.0."""
MIN_DIGITS = 4
"""Significant digits the decimal numbers of a line must hold in all to make it distinctive."""
CURVE_KINDS = frozenset({"line", "histogram", "curve", "bar"})
"""Figure kinds (evidence.json `figures[].kind`) drawn from a student's own training: identical is 1.0."""
FINE_BITS = 40
"""Bits of the 1024-bit confirming hash two figures may differ by and still be the same figure.
Measured on the demo and tester folders: a figure re-encoded (JPEG 85) or resized by 0.9 or 1.25
moves it by at most 26 bits; two different figures of one template (axes, legend and title
alike, different curves) lie 64 or more apart, though their 64-bit phash may differ by 2 bits."""
OTHER_IMAGE_SCORE = 0.5
"""Score of an identical figure of another kind (a grid of images, which may be deterministic)."""

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SPACE = re.compile(r"\s+")
# A progress bar's counters and rates differ on every run; they are noise, not a log.
_PROGRESS = re.compile(r"\d\s*(?:it/s|s/it)\b|\|\s*\d+/\d+\s*\[|\d+%\|")


@dataclass(frozen=True)
class OutputPrints:
    """One submission's outputs, reduced to what can be compared with another's (JSON-able)."""

    student_id: str
    """The student id, as in OUT/grades/<id>.json."""
    lines: dict[str, list[str]]
    """Normalized distinctive printed line -> where it was printed (`lab1-1.ipynb#cell 4`)."""
    tables: dict[str, list[str]]
    """Per-class accuracy table, normalized (`car=61.2|plane=58|...`, percent, classes sorted) -> where."""
    images: dict[str, list[str]]
    """Perceptual hash of a figure (imagehash.phash, 64 bits as 16 hex digits) -> where."""
    kinds: dict[str, str] = field(default_factory=dict)
    """Image hash -> what the figure shows as evidence.json says (`line`, `histogram`, `image`, ...)."""
    fine: dict[str, str] = field(default_factory=dict)
    """Image hash -> a 1024-bit phash (256 hex digits) confirming a match: the 64-bit hash mostly
    sees a figure's layout, so two students' different curves on like axes can be 2 bits apart."""
    notes: list[str] = field(default_factory=list)
    """What could not be read, in words for a TA."""

    def to_json(self) -> dict[str, Any]:
        """This as plain JSON data (`from_json` reads it back)."""
        return {"student_id": self.student_id, "lines": self.lines, "tables": self.tables,
                "images": self.images, "kinds": self.kinds, "fine": self.fine, "notes": self.notes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OutputPrints:
        """The prints `to_json` wrote; anything malformed is left out, never raised."""
        def places(value: object) -> dict[str, list[str]]:
            if not isinstance(value, Mapping):
                return {}
            return {str(k): [str(w) for w in v][:MAX_WHERE] for k, v in value.items() if isinstance(v, list)}

        kinds, fine = data.get("kinds"), data.get("fine")
        notes = data.get("notes")
        return cls(student_id=str(data.get("student_id") or ""), lines=places(data.get("lines")),
                   tables=places(data.get("tables")), images=places(data.get("images")),
                   kinds={str(k): str(v) for k, v in kinds.items()} if isinstance(kinds, Mapping) else {},
                   fine={str(k): str(v) for k, v in fine.items()} if isinstance(fine, Mapping) else {},
                   notes=[str(n) for n in notes] if isinstance(notes, list) else [])

    def keys(self) -> set[str]:
        """Every line, table and image hash of this submission."""
        return {*self.lines, *self.tables, *self.images}


# --- reading one submission ------------------------------------------------------------------

def output_prints(out: Path, student_id: str, *, handout: frozenset[str] = frozenset()) -> OutputPrints:
    """The outputs of `student_id`'s graded submission in OUT.

    Reads only under `out`: for each run folder OUT/runs/<safe_name(id)>/<nb>/ its evidence.json
    (per-class accuracies, figure kinds), its figures/*.png, and the printed text of the notebook
    as graded: executed.ipynb in execute mode; in saved mode (nothing ran) the student's own
    notebook in the submission's work folder (submission.json `work_dir` when inside OUT, else
    OUT/work/<safe_name(id)>). Outputs whose digest (`grader.collect.output_digest`) is in
    `handout` are the handout's own and are skipped. Never raises for what a student wrote:
    what could not be read is said in `notes`."""
    root_out = Path(out).resolve()
    lines: dict[str, list[str]] = {}
    tables: dict[str, list[str]] = {}
    images: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    fine: dict[str, str] = {}
    notes: list[str] = []
    sid = safe_name(student_id)
    root = _inside(root_out, root_out / "runs" / sid)
    if root is None or not root.is_dir():
        notes.append("No run folder of this student was found under OUT/runs.")
        return OutputPrints(str(student_id), lines, tables, images, kinds, fine, notes)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if len(folders) > MAX_RUN_FOLDERS:
        notes.append(f"Only the first {MAX_RUN_FOLDERS} of {len(folders)} run folders were read.")
    sub = _read_json(root / "submission.json", MAX_JSON_BYTES)
    work = work_folder(root_out, sub if isinstance(sub, dict) else {}, student_id)[0]
    figures_left = [MAX_FIGURES]
    for folder in folders[:MAX_RUN_FOLDERS]:
        run = _inside(root, folder)
        ev = _read_json(run / "evidence.json", MAX_JSON_BYTES) if run is not None else None
        if run is None or not isinstance(ev, dict):
            continue
        name = str(ev.get("path") or folder.name)[:300]
        nb = _notebook(run, ev, name, work, notes)
        if nb is not None:
            _read_lines(nb, name, lines, handout)
        _read_table(ev, name, tables)
        _read_figures(run, ev, name, images, kinds, fine, figures_left, notes)
    if len(lines) >= MAX_LINES:
        notes.append(f"Only the first {MAX_LINES} distinctive printed lines were kept.")
    return OutputPrints(str(student_id), lines, tables, images, kinds, fine, notes)


def _notebook(run: Path, ev: Mapping[str, Any], name: str, work: Path | None, notes: list[str]) -> dict | None:
    if ev.get("mode") == "saved":
        own = _inside(work, work / name) if work is not None else None
        nb = _read_json(own, MAX_NOTEBOOK_BYTES) if own is not None else None
        if nb is None and name.endswith(".ipynb"):
            notes.append(f"{name}: the notebook as the student saved it could not be read under OUT "
                         "(graded in saved mode), so its printed outputs were not compared.")
    else:
        nb = _read_json(run / "executed.ipynb", MAX_NOTEBOOK_BYTES)
        if nb is None and name.endswith(".ipynb") and ev.get("status") not in ("not-run", "skipped"):
            notes.append(f"{name}: its executed notebook (executed.ipynb) is missing or could not be read, "
                         "so its printed outputs were not compared.")
    return nb if isinstance(nb, dict) else None


def _read_lines(nb: Mapping[str, Any], name: str, lines: dict[str, list[str]], handout: frozenset[str]) -> None:
    cells = nb.get("cells")
    budget = MAX_TEXT_CHARS
    digest: Callable[[Mapping[str, Any]], str | None] | None = None
    if handout:
        from grader.collect import output_digest

        digest = output_digest
    for index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code" or not isinstance(cell.get("outputs"), list):
            continue
        count = cell.get("execution_count")
        where = f"{name}#cell {count}" if isinstance(count, int) and not isinstance(count, bool) else \
            f"{name}#cell {index}"
        for output in cell["outputs"]:
            if not isinstance(output, dict) or budget <= 0:
                continue
            if digest is not None and _handout_output(output, digest, handout):
                continue
            text = _output_text(output)[:budget]
            budget -= len(text)
            for line in _split(text):
                if len(lines) < MAX_LINES or line in lines:
                    places = lines.setdefault(line, [])
                    if where not in places and len(places) < MAX_WHERE:
                        places.append(where)


def _handout_output(output: Mapping[str, Any], digest: Callable[[Mapping[str, Any]], str | None],
                    handout: frozenset[str]) -> bool:
    """Whether `output` is one of the handout's. The digests were taken from notebooks read by
    nbformat, which joins the list of lines a notebook file stores into one string: so here too."""
    def joined(value: object) -> object:
        return "".join(str(v) for v in value) if isinstance(value, list) else value

    data = output.get("data")
    same = {**output, "text": joined(output.get("text", "")),
            "data": {k: joined(v) for k, v in data.items()} if isinstance(data, dict) else {}}
    try:
        return digest(same) in handout
    except Exception:  # noqa: BLE001 -- a malformed output is simply not the handout's
        return False


def _output_text(output: Mapping[str, Any]) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        value = output.get("text")
    elif kind in ("execute_result", "display_data"):
        data = output.get("data")
        value = data.get("text/plain") if isinstance(data, dict) else None
    else:
        return ""
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _split(text: str) -> Iterable[str]:
    for raw in re.split(r"[\r\n]+", text):
        line = distinctive(raw)
        if line is not None:
            yield line


def distinctive(line: str) -> str | None:
    """`line` normalized (ANSI codes dropped, whitespace collapsed) when it is distinctive, else None.

    Distinctive: it holds at least 2 numbers, at least one with a decimal part, and its decimal
    numbers hold at least `MIN_DIGITS` significant digits in all (`[1, 100] loss: 2.301` and
    `train loss 0.697 val acc 0.477` are; `10000 2000`, `lr 0.1 test acc 10.00 %` and
    `lr 0.001 momentum 0.9` are not: sizes, chance accuracy and hyperparameters are printed
    alike by students who never met). Progress bars and over-long lines are not."""
    if len(line) > 4 * MAX_LINE_CHARS:
        return None
    text = _SPACE.sub(" ", _ANSI.sub("", line)).strip()
    if not text or len(text) > MAX_LINE_CHARS or _PROGRESS.search(text):
        return None
    numbers = _NUMBER.findall(text)
    if len(numbers) < 2:
        return None
    digits = 0
    for number in numbers:
        mantissa = re.split(r"[eE]", number.lstrip("+-"))[0]
        if "." not in mantissa:
            continue
        digits += len(mantissa.replace(".", "").strip("0")) or 0
    has_decimal = any("." in re.split(r"[eE]", n)[0] for n in numbers)
    return text if has_decimal and digits >= MIN_DIGITS else None


def _read_table(ev: Mapping[str, Any], name: str, tables: dict[str, list[str]]) -> None:
    metrics = ev.get("metrics")
    per_class = metrics.get("per_class_accuracy") if isinstance(metrics, dict) else None
    key = table_key(per_class) if isinstance(per_class, dict) else None
    if key is None:
        return
    cells = {m.get("cell") for m in metrics.get("mentions") or [] if isinstance(m, dict) and m.get("class")
             and isinstance(m.get("cell"), int)} if isinstance(metrics.get("mentions"), list) else set()
    where = f"{name}#cell {min(cells)}" if cells else name
    places = tables.setdefault(key, [])
    if where not in places and len(places) < MAX_WHERE:
        places.append(where)


def table_key(per_class: Mapping[str, Any]) -> str | None:
    """A per-class accuracy table (class -> fraction 0..1) as one normalized key, or None when it
    is too small or degenerate to tell students apart (under 3 classes or 3 distinct values: a
    model that diverged prints 0 for every class but one, whoever trained it)."""
    values: dict[str, float] = {}
    for cls, value in list(per_class.items())[:200]:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            values[_SPACE.sub(" ", str(cls)).strip()[:80]] = float(value)
    if len(values) < 3 or len({round(v, 6) for v in values.values()}) < 3:
        return None
    return "|".join(f"{c}={round(v * 100, 3):g}" for c, v in sorted(values.items(), key=lambda kv: kv[0].lower()))


def _read_figures(run: Path, ev: Mapping[str, Any], name: str, images: dict[str, list[str]],
                  kinds: dict[str, str], fine: dict[str, str], left: list[int], notes: list[str]) -> None:
    listed: dict[Path, tuple[str | None, object]] = {}
    for fig in ev.get("figures") or [] if isinstance(ev.get("figures"), list) else []:
        png = fig.get("png") if isinstance(fig, dict) else None
        path = _inside(run, run / str(png)) if isinstance(png, str) and png else None
        if path is not None and path.suffix.lower() == ".png":
            kind = fig.get("kind")
            listed.setdefault(path, (kind if isinstance(kind, str) else None, fig.get("cell")))
    fig_dir = _inside(run, run / "figures")
    if fig_dir is not None and fig_dir.is_dir():
        for path in sorted(fig_dir.glob("*.png"))[:MAX_FIGURES]:
            got = _inside(run, path)
            if got is not None:
                listed.setdefault(got, (None, None))
    for path, (kind, cell) in listed.items():
        if left[0] <= 0:
            notes.append(f"Only the first {MAX_FIGURES} figures were compared.")
            return
        left[0] -= 1
        hashes = image_hash(path)
        if hashes is None:
            continue
        digest, detail = hashes
        fine.setdefault(digest, detail)
        where = f"{name}#cell {cell}" if isinstance(cell, int) and not isinstance(cell, bool) else name
        try:  # the PNG itself, for the side-by-side page: "<where> · <path under OUT/runs/<id>/>"
            where += f" · {path.relative_to(run.parent).as_posix()}"
        except ValueError:
            pass
        places = images.setdefault(digest, [])
        if where not in places and len(places) < MAX_WHERE:
            places.append(where)
        if kind and digest not in kinds:
            kinds[digest] = kind[:40]


def image_hash(path: Path) -> tuple[str, str] | None:
    """(imagehash.phash of the PNG at `path` as 16 hex digits, its 1024-bit phash as 256 hex
    digits), or None when it is not a readable, bounded image or is blank (one colour: every
    blank figure would match every other)."""
    import imagehash
    from PIL import Image

    try:
        if not path.is_file() or path.stat().st_size > MAX_PNG_BYTES:
            return None
        with Image.open(path) as img:
            if img.format != "PNG" or img.width * img.height > MAX_PIXELS:
                return None
            img.load()
            gray = img.convert("L")
            low, high = gray.getextrema()
            if high - low < 8:
                return None
            rgb = img.convert("RGB")
            return str(imagehash.phash(rgb)), str(imagehash.phash(rgb, hash_size=32))
    except Exception:  # noqa: BLE001 -- any broken image is a figure not compared, never a crash
        return None


# --- comparing ---------------------------------------------------------------------------------

def common_outputs(prints: Sequence[OutputPrints], *, share: float = 0.2, at_least: int = 3,
                   image_bits: int = 4) -> set[str]:
    """Keys (lines, tables, image hashes) found in more than max(`at_least`, `share` * N)
    submissions: outputs every honest student prints (dataset sizes, a fixed grid of test images,
    the handout's seeded log), never evidence of copying. An image counts as found in a
    submission holding the same figure (within `image_bits` bits, confirmed by its fine hash:
    a re-rendered or re-encoded copy)."""
    limit = max(at_least, share * len(prints))
    counts: dict[str, int] = {}
    for p in prints:
        for key in {*p.lines, *p.tables}:
            counts[key] = counts.get(key, 0) + 1
    common = {k for k, n in counts.items() if n > limit}
    figures = [[(k, h, p.fine.get(k)) for k in p.images if (h := _int_hash(k, 16)) is not None] for p in prints]
    seen: dict[str, str | None] = {}
    for figs in figures:
        for key, _, detail in figs:
            seen.setdefault(key, detail)
    for key, detail in seen.items():
        h = _int_hash(key, 16)
        found = sum(1 for figs in figures
                    if any(_same_figure(h, detail, g, d, image_bits) is not None for _, g, d in figs))
        if found > limit:
            common.add(key)
    return common


def compare_outputs(a: OutputPrints, b: OutputPrints, *, common: set[str], image_bits: int = 4) -> dict[str, Any]:
    """What `a` and `b` printed and drew alike, leaving out `common` (see `common_outputs`).

    Returns {"lines": [(line, where_a, where_b)], "tables": [(table, where_a, where_b)],
    "images": [(hash_a, hash_b, where_a, where_b, distance)], "score": 0..1, "reasons": [...]},
    each list sorted; `distance` is the bits the 64-bit hashes differ by (a match is also
    confirmed by the fine hashes, when both prints have them).
    Score 1.0: an identical per-class table, or at least `FULL_MATCH_LINES` identical distinctive
    lines, or an identical (within `image_bits` bits) training-curve or histogram figure. Else
    the larger of: shared lines / max(FULL_MATCH_LINES, fewer distinctive lines of the two), and
    `OTHER_IMAGE_SCORE` for an identical figure of another kind."""
    def where(places: list[str]) -> str:
        return ", ".join(places[:3])

    lines = sorted((k, where(a.lines[k]), where(b.lines[k])) for k in a.lines.keys() & b.lines.keys()
                   if k not in common)
    tables = sorted((k, where(a.tables[k]), where(b.tables[k])) for k in a.tables.keys() & b.tables.keys()
                    if k not in common)
    images: list[tuple[str, str, str, str, int]] = []
    curve = False
    for ha in sorted(a.images):
        ia = _int_hash(ha, 16)
        if ia is None or ha in common:
            continue
        best: tuple[int, str] | None = None
        for hb in b.images:
            ib = _int_hash(hb, 16)
            if ib is None or hb in common:
                continue
            d = _same_figure(ia, a.fine.get(ha), ib, b.fine.get(hb), image_bits)
            if d is not None and (best is None or (d, hb) < best):
                best = (d, hb)
        if best is not None:
            d, hb = best
            images.append((ha, hb, where(a.images[ha]), where(b.images[hb]), d))
            curve = curve or a.kinds.get(ha) in CURVE_KINDS or b.kinds.get(hb) in CURVE_KINDS
    own_a = sum(1 for k in a.lines if k not in common)
    own_b = sum(1 for k in b.lines if k not in common)
    line_score = min(1.0, len(lines) / max(FULL_MATCH_LINES, min(own_a, own_b))) if lines else 0.0
    if tables or len(lines) >= FULL_MATCH_LINES or curve:
        score = 1.0
    else:
        score = max(line_score, OTHER_IMAGE_SCORE if images else 0.0)
    return {"lines": lines, "tables": tables, "images": images, "score": round(score, 3),
            "reasons": _reasons(a, b, lines, tables, images, own_a, own_b)}


def _same_figure(ha: int | None, fa: str | None, hb: int | None, fb: str | None, bits: int) -> int | None:
    """The 64-bit distance of two figures when they are the same figure, else None."""
    if ha is None or hb is None:
        return None
    d = (ha ^ hb).bit_count()
    if d > bits:
        return None
    xa, xb = _int_hash(fa or "", 256), _int_hash(fb or "", 256)
    if xa is not None and xb is not None and (xa ^ xb).bit_count() > FINE_BITS:
        return None
    return d


def _reasons(a: OutputPrints, b: OutputPrints, lines: list, tables: list, images: list,
             own_a: int, own_b: int) -> list[str]:
    out: list[str] = []
    for key, wa, wb in tables[:3]:
        out.append(f"The same per-class accuracies, to the last digit ({_clip(key, 120)}): {wa} and {wb}.")
    if lines:
        out.append(f"{len(lines)} identical printed line(s) holding measured numbers (of {own_a} and {own_b}), "
                   f"e.g. \u201c{_clip(lines[0][0], 100)}\u201d ({lines[0][1]} and {lines[0][2]}).")
    for ha, hb, wa, wb, d in images[:3]:
        kind = a.kinds.get(ha) or b.kinds.get(hb) or "figure"
        alike = "identical" if d == 0 else f"nearly identical ({d} of 64 bits differ)"
        out.append(f"An {alike} {kind} figure: {wa} and {wb}.")
    return out


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _int_hash(key: str, digits: int) -> int | None:
    if len(key) != digits:
        return None
    try:
        return int(key, 16)
    except ValueError:
        return None
