"""Rubric files: one YAML per lab, loaded strictly into frozen, typed models.

Every problem is reported with the file, the key path (`parts[0].items[2].points`), the
line, and what was expected; unknown keys get a "did you mean" suggestion. Loading never
imports or runs anything: a `custom` check's Python file is only checked to exist inside
the rubric's folder. Semantics of each field are documented for TAs in `labs/lab1/rubric.yaml`;
an item's `params:` are validated with its check kind's model (grader.checks.registry,
whose `describe_kinds()` lists every kind and param).
"""

from __future__ import annotations

import difflib
import math
import re
import string
import types
import typing
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, StringConstraints,
                      ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from grader import yamlsafe
from grader.checks import params as P
from grader.checks.registry import KINDS
from grader.datasets import registry
from grader.errors import GraderError

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rubric file."""

    path: str
    """Key path such as `parts[0].items[2].points` (empty for the whole file)."""
    line: int | None
    """1-based line in the file, when known."""
    message: str
    """What is wrong and what was expected."""

    def __str__(self) -> str:
        where = self.path or "(top level)"
        return f"{where}{f' (line {self.line})' if self.line else ''}: {self.message}"


class RubricError(GraderError):
    """A rubric file that does not load; `problems` lists every issue found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        if len(problems) == 1:
            text = f"{source}: {problems[0]}"
        else:
            text = f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)
        super().__init__(text)


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """`; did you mean `x`?` for the nearest choice, else the list of valid choices."""
    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; expected one of: {', '.join(options)}" if options else ""


def _fail(message: str, *subpath: str | int) -> PydanticCustomError:
    # pydantic only substitutes `{name}` for names in the context, and the only one is `subpath`.
    return PydanticCustomError("rubric", message, {"subpath": subpath})

# --------------------------------------------------------------------------- units

_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_size(value: object) -> int:
    """Bytes from `512MiB`, `8GiB`, `1.5 GiB` or a plain whole number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value) if isinstance(value, str) else None
    if m and (m.group(2) or "B") in _SIZE_UNITS:
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "B"])
    hint = ""
    if m and m.group(2).upper() in {"KB", "MB", "GB", "TB", "K", "M", "G", "T"}:
        hint = f" (did you mean `{m.group(1)}{m.group(2)[0].upper()}iB`?)"
    raise ValueError(f"expected a size such as 512MiB or 8GiB (units B, KiB, MiB, GiB, TiB), got {value!r}{hint}")


def parse_duration(value: object) -> float:
    """Seconds from `90s`, `30m`, `2h`, `1h30m` or a plain number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _DURATION_RE.fullmatch(value.replace(" ", "")) if isinstance(value, str) and value.strip() else None
    if not m:
        raise ValueError(f"expected a duration such as 90s, 30m, 2h or 1h30m (units s, m, h), got {value!r}")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def format_size(n: int) -> str:
    """`8GiB` for 8·1024³; the largest unit that divides evenly."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if n and n % _SIZE_UNITS[unit] == 0:
            return f"{n // _SIZE_UNITS[unit]}{unit}"
    return f"{n}B"


def format_duration(s: float) -> str:
    """`2h`, `30m`, `1h30m`, `45s`."""
    h, rest = divmod(int(s), 3600)
    m, sec = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v) or "0s"


def _parse_deadline(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"expected an ISO date-time such as 2018-09-30T23:59:00+08:00, got {value!r}") from None
    if not isinstance(value, datetime):
        got = f"the date {value} without a time" if isinstance(value, date) else repr(value)
        raise ValueError(f"expected an ISO date-time such as 2018-09-30T23:59:00+08:00, got {got}")
    if value.tzinfo is None:
        raise ValueError("the deadline needs a timezone offset, e.g. 2018-09-30T23:59:00+08:00")
    return value

# --------------------------------------------------------------------------- check parameters


def _check_params(kind: str, value: Any) -> P.Params:
    """`value` as kind `kind`'s params model (grader.checks.registry); the first problem as a
    rubric error naming the param, what it must be, and the near miss of an unknown one."""
    model = KINDS[kind].params
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _fail(f"expected a mapping (key: value), got {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
    loc, fields = tuple(err["loc"]), model.model_fields
    key = str(loc[0]) if loc else ""
    if err["type"] == "extra_forbidden":
        allowed = did_you_mean(key, fields) if fields else f"; `{kind}` takes no params"
        raise _fail(f"unknown param `{key}` for check `{kind}`{allowed}", key)
    if err["type"] == "missing":
        raise _fail(f"check `{kind}` requires param `{key}`", key)
    if err["type"] == "literal_error" and len(loc) == 2 and isinstance(loc[1], int):
        entry = err.get("input")
        choices = typing.get_args(typing.get_args(_unwrap(fields[key].annotation))[0])
        raise _fail(f"unknown entry `{entry}`{did_you_mean(str(entry), choices)}", key, loc[1])
    raise _fail(f"expected {P.expected(fields[key])}, got {value.get(key)!r}", key)

# --------------------------------------------------------------------------- models

_ID, _LAB, _ABS = r"^[A-Za-z0-9][A-Za-z0-9._-]*$", r"^[a-z0-9][a-z0-9_-]*$", r"^/"
_PATTERNS = {_ID: "an id of letters, digits, '.', '_' or '-' (like lab1-1)",
             _LAB: "a lowercase id of letters, digits, '_' or '-' (like lab1)",
             _ABS: "an absolute path inside the sandbox (starting with /)"}
Id = Annotated[str, StringConstraints(pattern=_ID)]
Points = Annotated[float, Field(strict=True, ge=0)]
Text = Annotated[str, StringConstraints(min_length=1)]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)


class Feedback(_Model):
    """Text shown to the student for each outcome of an item."""

    pass_: str = Field("", alias="pass")
    partial: str = ""
    fail: str = ""


class Hint(_Model):
    """An automatic check run for a manual item; its result is shown to the TA, never scored."""

    check: str
    params: Annotated[Any, Field(validate_default=True)] = None
    """The check kind's params model (grader.checks.params), validated from the YAML mapping."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"check": data} if isinstance(data, str) else data

    @field_validator("check")
    @classmethod
    def _kind(cls, v: str) -> str:
        hints = [k for k, spec in KINDS.items() if spec.hint]
        if v not in hints:
            raise _fail(f"unknown hint check kind `{v}`{did_you_mean(v, hints)}")
        return v

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, v: Any, info: ValidationInfo) -> Any:
        return _check_params(info.data["check"], v) if "check" in info.data else v


class Item(_Model):
    """One graded thing: a check kind, its params, its points and feedback text."""

    id: Id
    title: Text
    check: str
    params: Annotated[Any, Field(validate_default=True)] = None
    """The check kind's params model (grader.checks.params), validated from the YAML mapping."""
    points: Points
    feedback: Feedback = Feedback()
    hint: Hint | None = None

    @field_validator("check")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in KINDS:
            raise _fail(f"unknown check kind `{v}`{did_you_mean(v, KINDS)}")
        return v

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, v: Any, info: ValidationInfo) -> Any:
        return _check_params(info.data["check"], v) if "check" in info.data else v

    @model_validator(mode="after")
    def _hint_only_for_manual(self) -> Item:
        if self.hint is not None and self.check != "manual":
            raise _fail("`hint` is only for items with `check: manual`", "hint")
        return self


class Notebook(_Model):
    """Which notebook or script of a submission a part is graded on."""

    dataset: str | None = None
    patterns: Annotated[tuple[Text, ...], Field(min_length=1)]
    shared: bool = True
    """Whether the part may be graded on a notebook that another part on its dataset names (by
    an earlier pattern of its own, or at all when taken by dataset): LAB 1-3's study often sits
    in the LAB 1-1 notebook. False (the GAN lab's gan, cgan, dcgan: one model per notebook): a
    notebook named for another part is this part's only when one of its sections is headed for
    it, so a student who handed in cgan.ipynb alone has no GAN notebook (grader.sources)."""


class Part(_Model):
    """A lab part (LAB 1-1, ...) worth `points`, the sum of its items."""

    id: Id
    title: Text
    points: Points
    notebook: Notebook | None = None
    items: Annotated[tuple[Item, ...], Field(min_length=1)]


class Bonus(_Model):
    """Extra items whose points together count at most `cap`."""

    title: Text = "Bonus"
    cap: Points
    notebook: Notebook | None = None
    items: Annotated[tuple[Item, ...], Field(min_length=1)]

    @property
    def id(self) -> str:
        return "bonus"


class Submission(_Model):
    """How submission files must be named."""

    pattern: str = "dllab_{student_id}.zip"
    report: bool = True
    """The handout asks for a report file (pdf, docx, md, txt, html) beside the code; false for a
    lab whose notebooks are the whole submission (no `no-report` problem is raised)."""

    @field_validator("pattern")
    @classmethod
    def _one_placeholder(cls, v: str) -> str:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError:
            names = ["?"]
        if names != ["student_id"]:
            raise _fail(f"expected a file name with `{{student_id}}` once, e.g. dllab_{{student_id}}.zip, got {v!r}")
        return v


class LatePolicy(_Model):
    """Points off for late work: `per_day_percent` of the basis per started day."""

    grace_minutes: Annotated[int, Field(strict=True, ge=0)] = 0
    per_day_percent: Annotated[float, Field(strict=True, ge=0, le=100)] = 10.0
    max_days: Annotated[int, Field(strict=True, ge=0)] = 7
    after_max: Literal["zero", "cap"] = "zero"
    basis: Literal["max", "earned"] = "max"


class Dataset(_Model):
    """Where a dataset appears inside the sandbox (read-only)."""

    mount: Annotated[tuple[Annotated[str, StringConstraints(pattern=_ABS)], ...], Field(min_length=1)]


class Similarity(_Model):
    """When `dllab similarity` pairs two submissions (grader.similarity): a flag for a TA, never a
    deduction. Defaults chosen from the scores of honest and copied submissions (bench/similarity.md)."""

    code: Annotated[float, Field(ge=0, le=1)] = 0.6
    """Share of one submission's own code (handout and common code removed) found in the other."""
    min_overlap: Annotated[int, Field(strict=True, ge=0)] = 150
    """...and at least this much matching code, in normalized characters (about 3-4 lines)."""
    outputs: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Output score (grader.similarity.outputs): 1.0 = an identical per-class table, training log or figure."""
    common_share: Annotated[float, Field(gt=0, le=1)] = 0.3
    """Code or output found in more than this share of the class is everyone's (the handout), not copied."""


class Limits(_Model):
    """Execution limits per notebook, and per submission; sizes in bytes, times in seconds."""

    memory: Size = 8 * 1024**3
    processes: Annotated[int, Field(strict=True, ge=1)] = 256
    file_size: Size = 1024**3
    work_disk: Size = 4 * 1024**3
    shared_memory: Size = 2 * 1024**3
    """/dev/shm: DataLoader workers pass batches there, share_memory_() and multiprocessing use
    it; RAM like `work_disk`, counted apart."""
    cell_timeout: Duration = 1800.0
    wall_timeout: Duration = 7200.0
    """The notebook's cells together, counted from when its kernel is ready (start-up has its own limit)."""
    output_per_cell: Size = 1024**2
    figures: Annotated[int, Field(strict=True, ge=0)] = 200
    runs_per_submission: Annotated[int, Field(strict=True, ge=1)] = 8
    """Notebooks and scripts run per submission at most, those the lab's parts name first
    (grader.runbudget); the rest are listed as not run (`runs-capped`)."""
    captured_runs: Annotated[int, Field(strict=True, ge=1, le=24)] = 6
    """Training runs per notebook whose models are captured and evaluated by the host (the
    newest ones), at most 24: the host reads back 25 run entries (grader.verify.spec
    MAX_RUN_ENTRIES), one of them the note on older runs. Lab 4A, which trains 9, raises it."""
    submission_timeout: Duration = 6 * 3600.0
    """All runs of one submission together, verification included: a run is started only while
    some is left, and gets no more wall time than is left (`submission-time`)."""


class Generative(_Model):
    """A lab whose notebooks train generative models (a GAN's generator, a VAE): after the last
    cell the probe captures them (grader.probe.rec_gen) and the host measures their samples with
    a classifier trained on real data, the grader's instrument (grader.instruments), in a fresh
    sandbox (grader.verify.generative). Absent: nothing generative is captured or measured."""

    instrument: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    """A registered instrument's name (grader.instruments.INSTRUMENTS), e.g. the classifier of the
    dataset the generators imitate."""
    samples: Annotated[int, Field(strict=True, ge=100, le=50000)] = 10000
    """Samples drawn from each captured generator (and decoder) for the measures."""
    seed: Annotated[int, Field(strict=True, ge=0)] = 0
    """Seed of the latent noise and labels drawn: the same model gives the same numbers."""
    timeout: Duration = 300.0
    """The measuring sandbox's wall time at most (seconds), within what is left of the submission's."""


class Rubric(_Model):
    """A whole lab's rubric."""

    lab: Annotated[str, StringConstraints(pattern=_LAB)]
    title: Text
    submission: Submission = Submission()
    deadline: Annotated[datetime | None, BeforeValidator(_parse_deadline)] = None
    late: LatePolicy = LatePolicy()
    datasets: dict[str, Dataset] = {}
    limits: Limits = Limits()
    total: Points | None = None
    parts: Annotated[tuple[Part, ...], Field(min_length=1)]
    bonus: Bonus | None = None
    handout: tuple[Text, ...] = ()
    similarity: Similarity = Similarity()
    """Thresholds of `dllab similarity` (see Similarity)."""
    generative: Generative | None = None
    """Capture and measure generative models (GANs, VAEs): see Generative."""
    """Notebooks handed out with the TA's own outputs (paths next to the rubric): in saved
    mode, an output identical to one of theirs is not credited to the student."""

    _source: str = PrivateAttr("<string>")
    _base_dir: Path | None = PrivateAttr(None)

    @property
    def source(self) -> str:
        """The file the rubric came from (or the name given to `load_rubric_text`)."""
        return self._source

    @property
    def base_dir(self) -> Path | None:
        """The rubric's folder; `custom` check files are resolved against it."""
        return self._base_dir

    @property
    def max_points(self) -> float:
        """Sum of the parts' points (bonus excluded)."""
        return sum(p.points for p in self.parts)

    def all_items(self) -> Iterator[tuple[str, Item]]:
        """(part id, item) for every item, bonus items last with part id `bonus`."""
        for part in self.parts:
            for item in part.items:
                yield part.id, item
        if self.bonus:
            for item in self.bonus.items:
                yield "bonus", item

    def item(self, item_id: str) -> Item:
        """The item with this id; `KeyError` if none."""
        for _, item in self.all_items():
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def handout_paths(self) -> list[Path]:
        """The handout notebooks, resolved next to the rubric."""
        return [(self._base_dir or Path(".")) / name for name in self.handout]

    def custom_function(self, item: Item) -> tuple[Path, str]:
        """(file, function name) of a `custom` item; the file was checked to exist at load."""
        file, func = item.params.function.rsplit(":", 1)
        assert self._base_dir is not None
        return (self._base_dir / file).resolve(), func

# --------------------------------------------------------------------------- loading


def load_rubric(path: Path, *, base_dir: Path | None = None) -> Rubric:
    """Load and validate a rubric file; `RubricError` lists every problem found. Its handout
    and `custom` files are found in `base_dir` (default: the rubric's own folder; a graded
    folder's copy passes the lab folder it came from, `GradeSettings.lab_dir`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraderError(f"{path}: cannot read rubric: {exc}") from None
    folder = Path(base_dir).resolve() if base_dir is not None else path.resolve().parent
    return load_rubric_text(text, name=str(path), base_dir=folder)


def load_rubric_text(text: str, *, name: str = "<string>", base_dir: Path | None = None) -> Rubric:
    """Validate rubric YAML held in memory; `base_dir` is where `custom` check files live."""
    try:
        lines = _line_map(text)
        data = yamlsafe.load(text)
    except _DuplicateKey as exc:
        raise RubricError(name, [Problem(exc.path, exc.line, f"key `{exc.key}` appears twice")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise RubricError(name, [Problem("", line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(data, dict):
        raise RubricError(name, [Problem("", None, "expected a mapping with keys lab, title, parts, ...")])
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as exc:
        raise RubricError(name, validation_problems(exc, lines, Rubric)) from None
    problems = [Problem(path, _line_of(path_t, lines), msg) for path_t, path, msg in _cross_checks(rubric, base_dir)]
    if problems:
        raise RubricError(name, problems)
    rubric._source = name
    rubric._base_dir = base_dir
    return rubric


def builtin_rubric(lab: str | Path) -> Path:
    """The rubric file of the lab package `lab`: a lab id (normalized by
    grader.labs.normalize_lab_id, so `LAB-1` is `lab1`) or a folder holding lab.yaml.
    Raises LabError (a GraderError) naming the known labs."""
    from grader.labs import find_lab

    return find_lab(lab).rubric_path


def summarize(rubric: Rubric) -> str:
    """What `dllab rubric validate` prints: parts, items, checks and points."""
    out = [f"{rubric.lab}: {rubric.title}  ({rubric.source})"]
    if rubric.deadline:
        lp = rubric.late
        after = "then 0 points" if lp.after_max == "zero" else "no further penalty"
        grace = f" after {lp.grace_minutes} min grace" if lp.grace_minutes else ""
        out.append(f"deadline {rubric.deadline.isoformat()}; late{grace}: -{lp.per_day_percent:g}% of the "
                   f"{'maximum' if lp.basis == 'max' else 'earned points'} per started day, "
                   f"up to {lp.max_days} days, {after}")
    lim = rubric.limits
    out.append(f"limits: memory {format_size(lim.memory)}, cell {format_duration(lim.cell_timeout)}, "
               f"wall {format_duration(lim.wall_timeout)}, {lim.processes} processes; per submission "
               f"{lim.runs_per_submission} runs in {format_duration(lim.submission_timeout)}")
    groups = [(p.id, p.title, p.points, p.items) for p in rubric.parts]
    if rubric.bonus:
        groups.append(("bonus", rubric.bonus.title, rubric.bonus.cap, rubric.bonus.items))
    n_items = 0
    for pid, title, points, items in groups:
        out.append(f"{pid:<12} {points:>6g}  {title}")
        for item in items:
            n_items += 1
            hint = f"  (hint for the TA: {item.hint.check})" if item.hint else ""
            out.append(f"  {item.id:<28} {item.check:<22} {item.points:>5g}{hint}")
    bonus = f" + bonus {rubric.bonus.cap:g}" if rubric.bonus else ""
    out.append(f"{len(rubric.parts)} parts, {n_items} items, {rubric.max_points:g} points{bonus}")
    return "\n".join(out)

# --------------------------------------------------------------------------- helpers


class _DuplicateKey(Exception):
    def __init__(self, path: str, line: int, key: str) -> None:
        self.path, self.line, self.key = path, line, key


def _line_map(text: str) -> dict[tuple[str | int, ...], int]:
    """Line of every key path in the YAML; raises `_DuplicateKey` (PyYAML silently keeps the last)."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark.line)
                if key in seen:
                    raise _DuplicateKey(_dotted(path + (key,)), k.start_mark.line + 1, key)
                seen.add(key)
                walk(v, path + (key,))
                lines[path + (key,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    root = yamlsafe.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def key_lines(text: str) -> tuple[dict[tuple[str | int, ...], int], Problem | None]:
    """The line of every key path in YAML `text`, and a Problem for a key that appears twice
    (PyYAML silently keeps the last) or None. Raises yaml.YAMLError for text that is not YAML."""
    try:
        return _line_map(text), None
    except _DuplicateKey as exc:
        return {}, Problem(exc.path, exc.line, f"key `{exc.key}` appears twice")


def validation_problems(exc: ValidationError, lines: dict[tuple[str | int, ...], int],
                        root: type[BaseModel]) -> list[Problem]:
    """pydantic's errors for a `root` model read from YAML as Problems, by line: key path, line,
    what was expected, and a "did you mean" for an unknown key (the keys `root` allows there)."""
    problems = {_translate(err, lines, root) for err in exc.errors() if not _spurious(err)}
    return sorted(problems, key=lambda p: (p.line or 0, p.path))


def _dotted(loc: typing.Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


_EXPECT = {
    "float_type": "a number", "float_parsing": "a number", "int_type": "a whole number",
    "int_parsing": "a whole number", "int_from_float": "a whole number", "string_type": "text",
    "bool_type": "true or false", "bool_parsing": "true or false", "tuple_type": "a list",
    "list_type": "a list", "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)", "datetime_type": "a date-time with timezone",
    "string_too_short": "non-empty text",
}


_BOUNDS = {"greater_than_equal": "≥", "less_than_equal": "≤", "greater_than": ">", "less_than": "<"}


def _translate(err: Any, lines: dict[tuple[str | int, ...], int], root: Any = None) -> Problem:
    """A pydantic error rewritten as file-relative path + what was expected."""
    loc = tuple(err["loc"])
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        msg = f"unknown key `{loc[-1]}`{did_you_mean(str(loc[-1]), _fields_at(loc[:-1], root))}"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "rubric":
        loc = loc + tuple(ctx.get("subpath", ()))
        msg = err["msg"]
    elif kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    elif kind == "literal_error":
        msg = f"expected one of {ctx.get('expected')}, got {got!r}"
    elif kind in _BOUNDS:
        bound = next(v for k, v in ctx.items() if k in ("ge", "le", "gt", "lt"))
        msg = f"expected a number {_BOUNDS[kind]} {bound:g}, got {got!r}"
    elif kind in ("too_short",):
        msg = f"expected at least {ctx.get('min_length')} entr{'y' if ctx.get('min_length') == 1 else 'ies'}"
    elif kind == "string_pattern_mismatch":
        msg = f"expected {_PATTERNS.get(ctx.get('pattern'), 'text matching ' + str(ctx.get('pattern')))}, got {got!r}"
    elif kind in _EXPECT:
        shown = type(got).__name__ if isinstance(got, (dict, list)) else repr(got)
        msg = f"expected {_EXPECT[kind]}, got {shown}"
    else:
        msg = err["msg"]
    return Problem(_dotted(loc), _line_of(loc, lines), msg)


def _spurious(err: Any) -> bool:
    # pydantic re-checks a list's length after dropping invalid entries; those are reported already.
    got, ctx = err.get("input"), err.get("ctx") or {}
    return err["type"] == "too_short" and isinstance(got, list) and len(got) >= ctx.get("min_length", 0)


def _fields_at(loc: tuple[str | int, ...], root: Any = None) -> list[str]:
    """Key names allowed at `loc` of a `root` model (default Rubric; aliases where set), for
    "did you mean" suggestions."""
    tp: Any = root or Rubric
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            by_key = {(f.alias or n): f.annotation for n, f in tp.model_fields.items()}
            tp = by_key.get(str(part))
        elif typing.get_origin(tp) in (tuple, list):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp


def _cross_checks(r: Rubric, base_dir: Path | None) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Rules between keys: sums, unique ids, references to datasets and parts, custom files."""
    found: list[tuple[tuple[str | int, ...], str, str]] = []

    def add(loc: tuple[str | int, ...], msg: str) -> None:
        found.append((loc, _dotted(loc), msg))

    for i, name in enumerate(r.handout):
        if base_dir is None or not (base_dir / name).is_file():
            add(("handout", i), f"handout notebook `{name}` not found next to the rubric")
    for name in r.datasets:  # grader.datasets.registry knows how to locate, mount and verify each
        if name not in registry.names():
            add(("datasets", name), f"dataset `{name}` is not registered"
                                    f"{did_you_mean(registry.canonical(name) or name, registry.names())}")
    part_ids = [p.id for p in r.parts]
    groups: list[tuple[tuple[str | int, ...], Any]] = [(("parts", i), p) for i, p in enumerate(r.parts)]
    if r.bonus:
        groups.append((("bonus",), r.bonus))
    seen_parts: set[str] = set()
    seen_items: dict[str, str] = {}
    for loc, group in groups:
        if group.id in seen_parts or (loc == ("bonus",) and "bonus" in part_ids):
            add(loc + ("id",), f"part id `{group.id}` is used twice")
        seen_parts.add(group.id)
        if group.notebook and group.notebook.dataset and group.notebook.dataset not in r.datasets:
            add(loc + ("notebook", "dataset"), _unknown_dataset(group.notebook.dataset, r))
        item_sum = sum(it.points for it in group.items)
        if loc != ("bonus",) and not math.isclose(item_sum, group.points, abs_tol=1e-9):
            add(loc + ("points",), f"the items of part `{group.id}` add up to {item_sum:g} "
                                   f"but the part is worth {group.points:g}")
        if loc == ("bonus",) and group.cap > item_sum + 1e-9:
            add(loc + ("cap",), f"cap {group.cap:g} is more than the bonus items' {item_sum:g} points")
        for j, item in enumerate(group.items):
            iloc = loc + ("items", j)
            if item.id in seen_items:
                add(iloc + ("id",), f"item id `{item.id}` is already used in part `{seen_items[item.id]}`")
            seen_items[item.id] = group.id
            checked = [((), item.check, item.params)] + ([(("hint",), item.hint.check, item.hint.params)]
                                                         if item.hint else [])
            for pl, kind, params in checked:
                for key in KINDS[kind].dataset_fields:
                    name = getattr(params, key)
                    if name is not None and name not in r.datasets:
                        add(iloc + pl + ("params", key), _unknown_dataset(name, r))
                for key in KINDS[kind].part_fields:
                    ref = getattr(params, key)
                    if ref is not None and ref not in part_ids:
                        add(iloc + pl + ("params", key), f"no part `{ref}`{did_you_mean(ref, part_ids)}")
                if (msg := _class_count_problem(params, group)) is not None:
                    add(iloc + pl + ("params", "classes"), msg)
            if item.check == "custom":
                msg = _custom_problem(item.params.function, base_dir)
                if msg:
                    add(iloc + ("params", "function"), msg)
    if r.total is not None and not math.isclose(r.max_points, r.total, abs_tol=1e-9):
        add(("total",), f"the parts add up to {r.max_points:g} but total is {r.total:g}")
    return found


def _class_count_problem(params: P.Params, group: Part | Bonus) -> str | None:
    """Why an item's `classes` (the class count it was written for) cannot be its dataset's: the
    item's `dataset`, else its part's notebook dataset, as registered (grader.datasets.registry);
    None when it matches or no registered dataset is named (the check then decides at grading)."""
    expected = getattr(params, "classes", None) if "classes" in type(params).model_fields else None
    own = getattr(params, "dataset", None) if "dataset" in type(params).model_fields else None
    name = own or (group.notebook.dataset if group.notebook else None)
    spec = registry.find(name) if name is not None else None
    if expected is None or spec is None:
        return None
    count = len(spec.classes)
    if count == expected:
        return None
    whose = "" if own else " (the part's notebook dataset)"
    return f"dataset `{name}`{whose} has {count} classes, not {expected}: fix `classes` or the dataset"


def _unknown_dataset(name: str, r: Rubric) -> str:
    if not r.datasets:
        return f"dataset `{name}` is not declared under `datasets`"
    return f"dataset `{name}` is not declared under `datasets`{did_you_mean(name, r.datasets)}"


def _custom_problem(ref: str, base_dir: Path | None) -> str | None:
    """Why a `file.py:function` reference is unusable, or None. Never imports the file."""
    if base_dir is None:
        return "custom checks need the rubric loaded from a file (their .py file sits next to it)"
    file = ref.rsplit(":", 1)[0]
    root = base_dir.resolve()
    target = (root / file).resolve()
    if Path(file).is_absolute() or not target.is_relative_to(root):
        return f"{file} is outside the rubric's folder {root}; put the .py file next to the rubric"
    if not target.is_file():
        return f"{file} does not exist in the rubric's folder {root}"
    return None
