"""`dllab lab validate`: everything in a lab folder checked before a class is graded with it.

Static checks (no training, no kernel): the manifest, the rubric (every item's params), the
datasets named (registered, and the references' a subset of the rubric's), the references
(importable, `train(*, data, device, seed, epochs)` returning a value (a dict literal: with
`test_accuracy`), a `hyp` dict, for rubric parts only), every `accuracy_vs_reference` item's
reference part has a reference, the handout files, the quick self-check's kinds, the demo's choices and the samples (folders
present, archives named as the rubric's submission pattern says, expected items exist).
A lab whose id collides with another known lab's (after normalization) is reported too.

With `--samples` (grader.lab_samples) each sample is zipped and graded, and its grade is
compared with the outcome lab.yaml states for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from grader.errors import GraderError
from grader.intake.naming import NamePattern
from grader.labs import (LabError, LabPackage, find_lab, import_reference, load_lab,
                         normalize_lab_id)


def known_kinds() -> frozenset[str]:
    """Every check kind a rubric item may name (grader.checks.registry)."""
    from grader.checks.registry import KINDS

    return frozenset(KINDS)


def known_datasets() -> tuple[str, ...]:
    """Registered dataset names (grader.datasets.registry)."""
    from grader.datasets import registry

    return registry.names()


def validate_lab(arg: str | Path, extra: Iterable[Path | str] = ()) -> tuple[LabPackage | None, list[str]]:
    """The lab `arg` (an id or a folder) and every problem found in it, each one line naming
    the file and key. The package is None when lab.yaml itself does not load; a lab id that
    names no lab raises LabError."""
    extra = list(extra)
    as_path = Path(arg)
    try:
        pkg = load_lab(as_path) if as_path.is_dir() else find_lab(arg, extra)
    except LabError as exc:
        if as_path.is_dir():
            return None, [str(exc)]
        raise
    problems: list[str] = []
    problems += _collisions(pkg, extra)
    rubric = _rubric(pkg, problems)
    _datasets(pkg, rubric, problems)
    _references(pkg, rubric, problems)
    for rel in pkg.manifest.handout:
        if not (pkg.dir / rel).exists():
            problems.append(f"{pkg.dir / 'lab.yaml'}: handout: {rel} does not exist in the lab folder")
        elif rel.endswith(".ipynb"):
            problem = _notebook_problem(pkg.dir / rel)
            if problem:
                problems.append(f"{pkg.dir / 'lab.yaml'}: handout: {rel} is not a readable notebook ({problem})")
    kinds = known_kinds()
    for kind in pkg.manifest.quick.unjudged:
        if kind not in kinds:
            problems.append(f"{pkg.dir / 'lab.yaml'}: quick.unjudged: unknown check kind `{kind}`")
    _demo(pkg, rubric, problems)
    _samples(pkg, rubric, problems)
    return pkg, problems


def _notebook_problem(path: Path) -> str | None:
    import nbformat

    try:
        nbformat.validate(nbformat.read(str(path), as_version=4))
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds; each is the TA's to fix
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _collisions(pkg: LabPackage, extra: list) -> list[str]:
    """Other labs with the same normalized id in the folders `--lab ID` searches, when this lab
    is in one of them (then `--lab ID` would name either). A copy elsewhere, named by its
    path, collides with nothing."""
    key = normalize_lab_id(pkg.id)
    roots = _roots(extra)
    if pkg.dir.parent not in roots:
        return []
    out = []
    for root in roots:
        for lab_yaml in sorted(root.glob("*/lab.yaml")) if root.is_dir() else []:
            folder = lab_yaml.parent.resolve()
            if folder == pkg.dir:
                continue
            try:
                other = load_lab(folder)
            except LabError:
                continue
            if normalize_lab_id(other.id) == key:
                out.append(f"{pkg.dir / 'lab.yaml'}: id `{pkg.id}` is also the id of {folder} "
                           f"(`{other.id}`): lab ids must differ after normalization ({key}), or "
                           f"`--lab {pkg.id}` names the first one found")
    return out


def id_warnings(pkg: LabPackage, extra: Iterable[Path | str] = ()) -> list[str]:
    """Warnings (not problems) for a lab named by its path, outside the folders `--lab ID`
    searches, whose id is also the id of a lab in them: `--lab ID` picks that one, not this."""
    if pkg.dir.parent in _roots(list(extra)):
        return []  # a clash inside the roots is a problem (_collisions)
    from grader.labs import labs_with_id

    others = [o for o in labs_with_id(pkg.id, extra) if o.dir != pkg.dir]
    if not others:
        return []
    also = "; also " + ", ".join(str(o.dir) for o in others[1:]) if len(others) > 1 else ""
    return [(f"warning: {pkg.dir / 'lab.yaml'}: id `{pkg.id}` is also the id of {others[0].dir} "
             f"(`{others[0].id}`){also}: `--lab {pkg.id}` picks {others[0].dir}, not this folder; name this "
             f"lab by its path (--lab {pkg.dir}) or give it another id")]


def _roots(extra: list) -> list[Path]:
    from grader.labs import lab_roots

    return [r.resolve() for r in lab_roots(extra)]


def _rubric(pkg: LabPackage, problems: list[str]):
    from grader.rubric import load_rubric

    if not pkg.rubric_path.is_file():
        problems.append(f"{pkg.dir / 'lab.yaml'}: rubric: {pkg.manifest.rubric} does not exist in the lab folder")
        return None
    try:
        rubric = load_rubric(pkg.rubric_path)
    except GraderError as exc:
        problems.extend(str(exc).splitlines())
        return None
    if normalize_lab_id(rubric.lab) != normalize_lab_id(pkg.id):
        problems.append(f"{pkg.rubric_path}: lab: `{rubric.lab}` is not this lab's id `{pkg.id}` (lab.yaml)")
    kinds = known_kinds()
    for _, item in rubric.all_items():
        if item.check not in kinds:
            problems.append(f"{pkg.rubric_path}: item {item.id}: unknown check kind `{item.check}`")
    return rubric


def _datasets(pkg: LabPackage, rubric, problems: list[str]) -> None:
    registered = set(known_datasets())
    where = pkg.dir / "lab.yaml"
    for name in (rubric.datasets if rubric is not None else ()):
        if name not in registered:
            problems.append(f"{pkg.rubric_path}: datasets: `{name}` is not a registered dataset "
                            f"(known: {', '.join(sorted(registered))})")
    for part, ref in pkg.manifest.references.items():
        for name in ref.datasets:
            if name not in registered:
                problems.append(f"{where}: references.{part}.datasets: `{name}` is not a registered dataset "
                                f"(known: {', '.join(sorted(registered))})")
            elif rubric is not None and name not in rubric.datasets:
                problems.append(f"{where}: references.{part}.datasets: `{name}` is not under the rubric's "
                                f"datasets (students' runs would not see it)")


def _references(pkg: LabPackage, rubric, problems: list[str]) -> None:
    from grader.reference_run import train_return_problem, train_signature_problem

    where = pkg.dir / "lab.yaml"
    part_ids = {p.id for p in rubric.parts} if rubric is not None else None
    with_ref = list(pkg.manifest.references)
    for part_id, item in rubric.all_items() if rubric is not None else ():
        if item.check != "accuracy_vs_reference":
            continue
        target = getattr(item.params, "reference_part", None) or part_id
        if target not in pkg.manifest.references:
            how = (f"its params.reference_part `{target}`" if getattr(item.params, "reference_part", None)
                   else f"its own part `{target}` (no params.reference_part)")
            problems.append(f"{pkg.rubric_path}: item {item.id}: accuracy_vs_reference compares with the reference "
                            f"of {how}, but {where} has no reference for `{target}`, so it would grade against "
                            f"the floor alone (parts with a reference: {', '.join(with_ref) or 'none'})")
    for i, part in enumerate(pkg.manifest.references):
        if part_ids is not None and part not in part_ids:
            problems.append(f"{where}: references: `{part}` is not a part of the rubric "
                            f"(its parts: {', '.join(sorted(part_ids)) or 'none'})")
        try:
            module = import_reference(pkg, part, fresh=i == 0)  # the files as they are now
        except LabError as exc:
            problems.append(str(exc))
            continue
        path = pkg.reference_path(part)
        problem = train_signature_problem(getattr(module, "train", None))
        problem = problem or train_return_problem(module.train)
        if problem:
            problems.append(f"{path}: {problem}")
        if not isinstance(getattr(module, "hyp", None), dict):
            problems.append(f"{path}: no `hyp` dict at the top (the hyperparameters, with their units "
                            f"commented; written into the expected-metrics file)")


def _demo(pkg: LabPackage, rubric, problems: list[str]) -> None:
    where = pkg.dir / "lab.yaml"
    demo = pkg.manifest.demo
    for part in demo.reference.parts:
        if part not in pkg.manifest.references:
            problems.append(f"{where}: demo.reference.parts: `{part}` has no reference under references:")
    if rubric is not None:
        for name in demo.datasets:
            if name not in rubric.datasets:
                problems.append(f"{where}: demo.datasets: `{name}` is not under the rubric's datasets")
    from grader.datasets import registry

    for name in demo.real:
        if name not in registry.names():
            problems.append(f"{where}: demo.real: `{name}` is not a known dataset ({', '.join(registry.names())})")
        elif registry.get(name).install_real is None:
            problems.append(f"{where}: demo.real: `{name}` has no real copy offline (only its stand-in)")
        elif name not in (demo.datasets or (rubric.datasets if rubric is not None else (name,))):
            problems.append(f"{where}: demo.real: `{name}` is not among the demo's datasets")


def _samples(pkg: LabPackage, rubric, problems: list[str]) -> None:
    where = pkg.dir / "lab.yaml"
    seen: dict[str, str] = {}
    items = {item.id for _, item in rubric.all_items()} if rubric is not None else None
    for i, sample in enumerate(pkg.manifest.samples):
        at = f"{where}: samples[{i}] ({sample.student_id})"
        for key in (sample.student_id, sample.archive):
            if key in seen:
                problems.append(f"{at}: `{key}` is used by sample {seen[key]} too")
            seen.setdefault(key, sample.student_id)
        folder = pkg.dir / sample.folder
        if not folder.is_dir():
            problems.append(f"{at}: folder {sample.folder} does not exist in the lab folder")
        elif not any(p.is_file() for p in folder.rglob("*")):
            problems.append(f"{at}: folder {sample.folder} holds no files")
        if rubric is not None:
            # A sample may be misnamed on purpose (to show the bad-name flag), but the intake
            # must still read it as this student, and the sample must say it expects the flag.
            reading = NamePattern(rubric.submission.pattern).read(sample.archive)
            if reading.student_id != sample.student_id:
                problems.append(f"{at}: archive `{sample.archive}` is not read as student {sample.student_id} "
                                f"(the rubric's submission name is `{rubric.submission.pattern}`)")
            elif reading.match != "exact" and "bad-name" not in sample.expect.flags:
                problems.append(f"{at}: archive `{sample.archive}` is not the rubric's submission name "
                                f"`{rubric.submission.pattern}`; a sample misnamed on purpose lists "
                                f"`bad-name` under expect.flags")
        for item_id in sample.expect.items:
            if items is not None and item_id not in items:
                problems.append(f"{at}: expect.items: no rubric item `{item_id}`")


def summary(pkg: LabPackage) -> str:
    """One line about a valid lab, for `lab validate` and `lab list`."""
    m = pkg.manifest
    return (f"{pkg.id}: {pkg.title} ({pkg.dir}); {len(m.references)} reference(s), "
            f"{len(m.samples)} sample(s)")


def listing(extra: Iterable[Path | str] = ()) -> list[tuple[str, str, str, str, str, str]]:
    """(id, title, parts, datasets, folder, note) of every lab under the roots, for `dllab lab
    list`; a lab shadowed by an earlier one with the same normalized id is listed with a note
    saying which one `--lab ID` picks."""
    from grader.labs import scan_labs
    from grader.rubric import load_rubric

    rows = []
    first: dict[str, LabPackage] = {}
    for pkg in scan_labs(extra):
        try:
            r = load_rubric(pkg.rubric_path)
            parts, datasets = ", ".join(p.id for p in r.parts), ", ".join(r.datasets)
        except GraderError:
            parts, datasets = "(rubric does not load: dllab lab validate)", ""
        winner = first.setdefault(normalize_lab_id(pkg.id), pkg)
        note = "" if winner is pkg else (f"shadowed: `{winner.id}` in {winner.dir} has the same id, and "
                                         f"`--lab {pkg.id}` picks that one; name this lab by its folder")
        rows.append((pkg.id, pkg.title, parts, datasets, str(pkg.dir), note))
    return rows
