"""`dllab lab new ID`: a commented lab package skeleton that `dllab lab validate` accepts.

It writes `lab.yaml`, `rubric.yaml` (one part with a few items, every key commented),
`reference/model.py` (a small MLP with `train(*, data, device, seed, epochs)` and a `hyp`
dict) and empty `handout/` and `samples/` folders, from the files in the shipped templates'
`lab-skeleton/` folder. The check kinds with their params,
types and defaults are appended to rubric.yaml as comments, generated from the check-kind
registry, so the skeleton cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from grader.labs import LAB_FILE, LabError, lab_roots, load_lab, normalize_lab_id
from grader.resources import resource_dir

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

SKELETON = "lab-skeleton"
"""Folder under the shipped templates holding the skeleton's files (str.format templates)."""

FILES = {"lab.yaml.in": LAB_FILE, "rubric.yaml.in": "rubric.yaml", "model.py.in": "reference/model.py"}
"""Template file -> where it goes in the new lab."""


def kinds_comment() -> str:
    """Every check kind with its params, types and defaults, as YAML comments (generated from
    the check-kind registry, so the skeleton cannot drift from the code)."""
    from grader.checks.registry import describe_kinds

    lines = [ln if ln.startswith("#") else f"# {ln}".rstrip() for ln in describe_kinds().splitlines()]
    return "\n".join(lines) + "\n"


def new_lab(lab_id: str, labs_dir: Path, *, title: str | None = None, extra: Iterable[Path | str] = ()) -> Path:
    """Writes the skeleton of lab `lab_id` as `labs_dir/<lab_id>/`; returns the folder. Raises
    LabError for an id that is not lower-case letters, digits, `-`, `_`, a folder that already
    exists, or an id that is, after normalization (`lab_1` = `lab1`), the id of a lab in
    `labs_dir` or in the folders `--lab ID` searches (`extra`, $DLLAB_LABS, the shipped labs)."""
    if not _ID.match(lab_id or ""):
        raise LabError(f"lab id {lab_id!r}: use lower-case letters, digits, '-' and '_' (like lab4a)")
    folder = Path(labs_dir) / lab_id
    if folder.exists():
        raise LabError(f"{folder} already exists: choose another id or remove it")
    clash = _same_id(lab_id, [Path(labs_dir), *extra])
    if clash:
        raise LabError(f"lab id {lab_id!r} is the id of the lab in {clash} after normalization "
                       f"({normalize_lab_id(lab_id)}): `--lab {lab_id}` could not tell them apart; choose another id")
    title = title or f"{lab_id}: a new lab"
    part = f"{normalize_lab_id(lab_id)}-1"
    fields = dict(lab_id=lab_id, title=title.replace('"', "'"), part=part, folder=folder, kinds=kinds_comment())
    templates = resource_dir("templates") / SKELETON
    (folder / "reference").mkdir(parents=True)
    for name, target in FILES.items():
        text = (templates / name).read_text(encoding="utf-8")
        (folder / target).write_text(text.format(**fields), encoding="utf-8")
    (folder / "reference" / "__init__.py").write_text(f'"""Reference solutions of {lab_id}."""\n', encoding="utf-8")
    for empty, text in _README.items():
        (folder / empty).mkdir()
        (folder / empty / "README.md").write_text(text, encoding="utf-8")
    return folder


def _same_id(lab_id: str, roots: list) -> Path | None:
    """The folder of a lab (its lab.yaml's id, or the folder's name when it does not load) whose
    id normalizes like `lab_id`, under `roots` and the folders `--lab ID` searches."""
    key = normalize_lab_id(lab_id)
    for root in lab_roots(roots):
        for lab_yaml in sorted(root.glob(f"*/{LAB_FILE}")) if root.is_dir() else []:
            try:
                other = load_lab(lab_yaml.parent).id
            except LabError:
                other = lab_yaml.parent.name
            if normalize_lab_id(other) == key:
                return lab_yaml.parent.resolve()
    return None


_README = {
    "handout": "Notebooks handed out to students, listed in lab.yaml `handout:`.\n",
    "samples": "One folder per sample submission (its files become the zip's members), listed in\n"
               "lab.yaml `samples:` with the outcome each must get (`dllab lab validate --samples`).\n",
}
