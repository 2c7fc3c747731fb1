"""Lab packages: one folder per lab, everything the grader knows about that lab as data.

A lab package is `labs/<lab_id>/` (or any folder given by path) holding:

- `lab.yaml`: the manifest (this module's `LabManifest`): id, title, which file is the
  rubric, the reference solution of each part, the report policy, the quick self-check's
  settings, the demo's settings and the sample submissions with the outcome each must get;
- `rubric.yaml`: the grading rubric (`grader.rubric`): submission pattern, deadline and late
  policy, datasets and their sandbox mounts, limits, parts, items, bonus. It stays one file
  because it is the file a TA copies and edits each term (`--rubric FILE`) and the one copied
  into a graded folder for `rescore`;
- `reference/`: self-contained training files, each with
  `train(*, data, device, seed, epochs) -> dict` (`data` maps a dataset name to its folder);
- `handout/` (optional): the notebooks students start from;
- `samples/` (optional): one folder per sample submission, whose files are zipped as listed.

Lab ids are normalized in one place (`normalize_lab_id`): `LAB-1`, `lab_1` and `lab1` are
the same lab. Nothing here imports or runs a reference file except `import_reference`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable, Sequence

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from grader import yamlsafe
from grader.errors import GraderError
from grader.resources import resource_dir

LAB_FILE = "lab.yaml"
"""The manifest's file name inside a lab folder."""

LABS_ENV = "DLLAB_LABS"
"""Environment variable: extra folders holding lab packages (os.pathsep-separated)."""

_PART = r"^[a-z0-9][a-z0-9_-]*$"


def _relative(value: str) -> str:
    parts = Path(value).parts
    if not value or Path(value).is_absolute() or ".." in parts:
        raise ValueError(f"{value!r} must be a path inside the lab folder (relative, without '..')")
    return value


RelPath = Annotated[str, AfterValidator(_relative)]
"""A path inside the lab folder (relative, no `..`)."""


class LabError(GraderError):
    """A lab folder that does not load, or a lab id that names no lab."""


def normalize_lab_id(text: str) -> str:
    """The one lab-id normalizer: lower case without spaces, `-` and `_` (`LAB-1` → `lab1`)."""
    return re.sub(r"[\s_-]", "", str(text).strip().lower())


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reference(_Model):
    """The reference solution of one rubric part."""

    file: RelPath
    """Python file under the lab folder, e.g. `reference/lab1_1_cifar10.py`."""
    datasets: Annotated[tuple[str, ...], Field(min_length=1)]
    """Dataset names (registry names) its `train` needs in `data`."""
    title: str = ""
    """What the part trains (shown by `reference run`)."""


class ReportPolicy(_Model):
    """What a written report must hold."""

    sections: tuple[str, ...] = ()
    """Section headings the report should have (the `report_sections` check's default)."""
    formats: tuple[str, ...] = ("pdf", "docx", "md", "txt", "html")
    """File types accepted as a report."""


class Quick(_Model):
    """`dllab check --quick`: the student's self-check on small stand-in data."""

    size: str = "tiny"
    """Stand-in dataset size."""
    unjudged: tuple[str, ...] = ()
    """Extra check kinds reported as not judged in a quick check."""


class DemoReference(_Model):
    parts: tuple[str, ...] = ()
    """Reference parts trained for the demo (empty: all)."""
    seeds: Annotated[int, Field(ge=1)] = 2
    epochs: Annotated[int, Field(ge=1)] | None = None
    """Epochs each reference trains for in the demo (None: the reference's own)."""


class Demo(_Model):
    """`dllab demo --lab ID`."""

    size: str = "small"
    datasets: tuple[str, ...] = ()
    """Stand-ins generated (empty: the rubric's datasets)."""
    real: tuple[str, ...] = ()
    """Datasets taken real from an installed package where the registry knows how (the demo falls
    back to the stand-in, saying so, when the package is missing)."""
    reference: DemoReference = DemoReference()
    workers: Annotated[int, Field(ge=1)] = 2


class Expect(_Model):
    """The outcome a sample must get."""

    total: float | None = None
    """Total points after late penalty (None: not checked)."""
    items: dict[str, str] = {}
    """Item id → status (`pass`, `partial`, `fail`, `manual`, ...)."""
    flags: tuple[str, ...] = ()
    """Flags the grade must carry."""


class Sample(_Model):
    """One sample submission: the files of `samples/<folder>/` zipped as `archive`."""

    student_id: str
    archive: str
    """File name of the zip, e.g. `dllab_0556001.zip`."""
    folder: RelPath
    """Folder under the lab whose files (sorted, recursively) become the zip's members."""
    outcome: str = ""
    """What the sample shows, in a few words."""
    late_days: float = 0.0
    """Its time: this many days after (deadline - 1 h)."""
    expect: Expect = Expect()


class LabManifest(_Model):
    """`lab.yaml`."""

    id: Annotated[str, StringConstraints(pattern=_PART)]
    title: Annotated[str, StringConstraints(min_length=1)]
    rubric: RelPath = "rubric.yaml"
    references: dict[str, Reference] = {}
    """Rubric part id → its reference solution. Only these parts get expected metrics."""
    report: ReportPolicy = ReportPolicy()
    handout: tuple[RelPath, ...] = ()
    quick: Quick = Quick()
    demo: Demo = Demo()
    samples: tuple[Sample, ...] = ()


@dataclass(frozen=True)
class LabPackage:
    """A loaded lab folder."""

    dir: Path
    manifest: LabManifest

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def title(self) -> str:
        return self.manifest.title

    @property
    def rubric_path(self) -> Path:
        return self.dir / self.manifest.rubric

    def reference_path(self, part: str) -> Path:
        """The reference file of `part`. Raises LabError for a part without one."""
        ref = self.manifest.references.get(part)
        if ref is None:
            raise LabError(f"lab {self.id} has no reference solution for part {part!r}"
                           f" (it has: {', '.join(self.manifest.references) or 'none'})")
        return self.dir / ref.file


def load_lab(folder: Path) -> LabPackage:
    """Reads `folder/lab.yaml`. Raises LabError naming the file and, as rubric errors do, each
    problem's key path, line and what was expected (a "did you mean" for an unknown key)."""
    from grader.rubric import RubricError, key_lines, validation_problems

    folder = Path(folder)
    path = folder / LAB_FILE
    if not path.is_file():
        raise LabError(f"{folder} is not a lab folder: it has no {LAB_FILE}")
    try:
        text = path.read_text(encoding="utf-8")
        lines, duplicate = key_lines(text)
        data = yamlsafe.load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LabError(f"{path}: not readable YAML: {exc}") from None
    if duplicate is not None:
        raise LabError(str(RubricError(str(path), [duplicate])))
    if not isinstance(data, dict):
        raise LabError(f"{path}: expected a mapping with keys id, title, references, ...")
    try:
        manifest = LabManifest.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, lines, LabManifest)
        problems = [_plain_id(p, data.get("id")) if p.path == "id" else p for p in problems]
        raise LabError(str(RubricError(str(path), problems))) from None
    return LabPackage(folder.resolve(), manifest)


def _plain_id(problem, given: object):
    """The id problem in words: what an id is, and the spelling that would do."""
    from grader.rubric import Problem

    if not isinstance(given, str) or not given.strip():
        return problem
    fixed = re.sub(r"[^a-z0-9_-]", "", given.strip().lower().replace(" ", "-"))
    hint = (f"; write `{fixed}` (on the command line `--lab {given}` names it too, as ids are compared "
            f"without case, spaces, '-' and '_')" if fixed and re.match(_PART, fixed) else "")
    return Problem(problem.path, problem.line, f"the lab id must be lower-case letters, digits, '-' and '_', "
                                               f"starting with a letter or digit; got {given!r}{hint}")


def lab_roots(extra: Iterable[Path | str] = ()) -> list[Path]:
    """Folders searched for lab packages, in order: `extra`, `$DLLAB_LABS`, the shipped `labs/`."""
    roots = [Path(p) for p in extra]
    roots += [Path(p) for p in os.environ.get(LABS_ENV, "").split(os.pathsep) if p]
    roots.append(resource_dir("labs"))
    return roots


def scan_labs(extra: Iterable[Path | str] = ()) -> list[LabPackage]:
    """Every loadable lab package under the roots, in search order, labs with the same id
    included (a folder under two roots once). A folder that fails to load is skipped here;
    `dllab lab validate` reports it."""
    out: list[LabPackage] = []
    seen: set[Path] = set()
    for root in lab_roots(extra):
        if not root.is_dir():
            continue
        for lab_yaml in sorted(root.glob(f"*/{LAB_FILE}")):
            try:
                pkg = load_lab(lab_yaml.parent)
            except LabError:
                continue
            if pkg.dir not in seen:
                seen.add(pkg.dir)
                out.append(pkg)
    return out


def list_labs(extra: Iterable[Path | str] = ()) -> list[LabPackage]:
    """The labs `--lab ID` can name: of two under the roots with the same normalized id, the
    first found (scan_labs lists the others too)."""
    first: dict[str, LabPackage] = {}
    for pkg in scan_labs(extra):
        first.setdefault(normalize_lab_id(pkg.id), pkg)
    return list(first.values())


def labs_with_id(lab_id: str, extra: Iterable[Path | str] = ()) -> list[LabPackage]:
    """The labs under the roots whose id is `lab_id` after normalization, first found first
    (the one `--lab ID` picks)."""
    key = normalize_lab_id(lab_id)
    return [pkg for pkg in scan_labs(extra) if normalize_lab_id(pkg.id) == key]


def find_lab(arg: str | Path, extra: Iterable[Path | str] = ()) -> LabPackage:
    """The lab named by `arg`: a folder holding lab.yaml, or a lab id (normalized) found
    under `lab_roots(extra)`. Raises LabError listing the known ids."""
    as_path = Path(arg)
    if (as_path / LAB_FILE).is_file():
        return load_lab(as_path)
    key = normalize_lab_id(str(arg))
    labs = list_labs(extra)
    for pkg in labs:
        if normalize_lab_id(pkg.id) == key:
            return pkg
    ids = sorted(p.id for p in labs)
    close = difflib.get_close_matches(key, ids, n=1, cutoff=0.6)
    suggest = f"; did you mean `{close[0]}`?" if close else ""
    hint = " (a folder path must hold lab.yaml)" if os.sep in str(arg) else ""
    raise LabError(f"unknown lab {str(arg)!r}{hint}{suggest} (known labs: {', '.join(ids) or 'none'}; "
                   f"for a lab elsewhere give its folder, or add the folder holding it to ${LABS_ENV})")


def import_reference(pkg: LabPackage, part: str, *, fresh: bool = False) -> types.ModuleType:
    """Imports the reference file of `part` as a module of the package
    `dllab_lab_<id>_<folder hash>.reference`, so its relative imports (`from .common import ...`)
    work and two folders of the same lab never share modules. `fresh` imports the lab's files
    again (after they were edited: `dllab lab validate`). Raises LabError when the file is
    missing or fails to import."""
    path = pkg.reference_path(part)
    if not path.is_file():
        raise LabError(f"lab {pkg.id}: reference file {path} of part {part!r} does not exist")
    ref_dir = path.parent
    digest = hashlib.sha1(str(pkg.dir).encode()).hexdigest()[:8]
    base = f"dllab_lab_{re.sub(r'[^a-z0-9_]', '_', normalize_lab_id(pkg.id))}_{digest}"
    if fresh:
        for name in [n for n in sys.modules if n == base or n.startswith(base + ".")]:
            del sys.modules[name]
    package = f"{base}.{re.sub(r'[^A-Za-z0-9_]', '_', ref_dir.name)}"
    for name, location in ((base, pkg.dir), (package, ref_dir)):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(location)]
            sys.modules[name] = mod
    name = f"{package}.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LabError(f"lab {pkg.id}: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise LabError(f"lab {pkg.id}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    return module


def sample_files(pkg: LabPackage, sample: Sample) -> dict[str, bytes]:
    """The zip members of a sample: every file under its folder, by relative POSIX path."""
    folder = pkg.dir / sample.folder
    if not folder.is_dir():
        raise LabError(f"lab {pkg.id}: sample {sample.student_id}'s folder {folder} does not exist")
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def references_for(pkg: LabPackage, only: Sequence[str] = ()) -> list[tuple[str, Reference]]:
    """(part id, reference) pairs in manifest order, optionally only `only`. Raises LabError
    for an unknown part."""
    refs = list(pkg.manifest.references.items())
    if only:
        unknown = sorted(set(only) - {p for p, _ in refs})
        if unknown:
            raise LabError(f"unknown part {unknown[0]!r} of {pkg.id}: choose from "
                           f"{', '.join(p for p, _ in refs) or 'none'}")
        refs = [(p, r) for p, r in refs if p in only]
    return refs


@dataclass(frozen=True)
class LabChoice:
    """What `--lab ID|DIR` and `--rubric FILE` chose."""

    rubric_path: Path
    """The rubric to grade with: the lab's own, or the TA's file given with --rubric."""
    package: LabPackage | None
    """The lab package (None: a rubric file that belongs to no known lab)."""

    @property
    def lab_dir(self) -> Path:
        """Where the rubric's relative files (handout, `custom` checks) are: its own folder."""
        return self.rubric_path.resolve().parent

    @property
    def report_sections(self) -> tuple[str, ...]:
        """The lab's report sections (lab.yaml `report.sections`); () without a lab package."""
        return self.package.manifest.report.sections if self.package else ()


def choose_lab(lab: str | Path | None, rubric: Path | None, extra: Iterable[Path | str] = ()) -> LabChoice:
    """Resolves `--lab` (an id or a lab folder) and `--rubric FILE` (a TA's edited copy wins
    over the lab's own rubric). With only a rubric file, its lab package is the one in the
    same folder, else the known lab with the rubric's `lab` id, else None. Raises LabError
    (a GraderError) when neither is given, the file is missing or the lab is unknown."""
    pkg = find_lab(lab, extra) if lab else None
    if rubric is not None:
        rubric = Path(rubric)
        if not rubric.is_file():
            raise LabError(f"rubric {rubric} does not exist")
        return LabChoice(rubric, pkg if pkg is not None else lab_of_rubric(rubric, extra))
    if pkg is None:
        raise LabError("say which lab with --lab ID (e.g. --lab lab1) or --lab FOLDER (holding lab.yaml), "
                       "or give --rubric FILE")
    if not pkg.rubric_path.is_file():
        raise LabError(f"lab {pkg.id}: its rubric {pkg.rubric_path} does not exist")
    return LabChoice(pkg.rubric_path, pkg)


def lab_of_rubric(rubric: Path, extra: Iterable[Path | str] = ()) -> LabPackage | None:
    """The lab package a rubric file belongs to: the lab folder holding it (its lab.yaml
    names it), else the known lab whose id is the rubric's `lab:`; None if neither."""
    rubric = Path(rubric).resolve()
    for folder in (rubric.parent, rubric.parent.parent):
        if (folder / LAB_FILE).is_file():
            try:
                pkg = load_lab(folder)
            except LabError:
                continue
            if pkg.rubric_path.resolve() == rubric:
                return pkg
    try:
        data = yamlsafe.load(rubric.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    lab_id = data.get("lab") if isinstance(data, dict) else None
    if not isinstance(lab_id, str) or not lab_id.strip():
        return None
    try:
        return find_lab(lab_id, extra)
    except LabError:
        return None
