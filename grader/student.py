"""Student-facing commands: `dllab check` (the TA's checks on your own machine) and `dllab pack`.

`check` runs the real pipeline (`grade_submission`: intake, sandboxed execution, evidence,
checks, score, feedback) on one submission and shows the student's view of the grade: a
table of items with status, points and what to fix, intake problems first. A quick check
trains on tiny stand-in datasets, so accuracy items are shown but not judged, and lateness
is never applied (the check runs before the deadline).

Exit codes of `check`: 0 when nothing required is missing; 1 when the archive has an intake
problem or a required item (points > 0, not graded by hand, not the bonus) is `fail` or
`error` (with `--strict`, also `partial`); 2 on usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from grader.errors import GraderError
from grader.safename import safe_name

if TYPE_CHECKING:
    from grader.labs import LabPackage

Log = Callable[[str], None]

QUICK_SIZE = "tiny"
"""Stand-in dataset size of `check --quick` when the lab's lab.yaml sets no `quick.size`."""


def quick_unjudged() -> frozenset[str]:
    """Check kinds whose result means nothing on stand-in data (grader.checks.registry); a
    lab adds its own in lab.yaml `quick.unjudged` (`unjudged_kinds`)."""
    from grader.checks import KINDS

    return frozenset(k for k, spec in KINDS.items() if not spec.judged_in_quick)

# Errors a smaller stand-in can cause in a cell that is right on the full dataset.
_SIZE_ERRORS = frozenset({"IndexError", "StopIteration"})
QUICK_NOTICE = ("quick check: stand-in datasets, the measured numbers (accuracies, sample measures) are NOT "
                "your graded ones (the TA runs your notebooks on the full datasets)")
_HAND = "graded by hand by a TA after you hand in"
_PACK = "dllab pack YOUR_FOLDER --student-id ID --lab {lab}"
# What to do about each intake problem; the problem's own message says what is wrong.
FIXES: dict[str, str] = {
    "bad-name": "rename the zip to `{expected}` (or build it with `" + _PACK + "`)",
    "no-student-id": "name the zip `{expected}` with your student id (or build it with `" + _PACK + "`)",
    "not-an-archive": "hand in one zip: `" + _PACK + "` builds it",
    "no-report": "{report}, put it in the zip as report.pdf, .docx or .md",
    "no-notebook": "put your .ipynb notebooks in the zip (`" + _PACK + "` finds them)",
    "unreadable-notebook": "open the notebook in Jupyter, run all cells, save, and zip again",
    "notebook-repaired": "open the notebook in Jupyter, save it, and zip again",
    "notebook-renamed": "rename the notebook to end in .ipynb",
    "renamed-member": "give the file a short name with no spaces or dots at its end",
    "garbled-name": "zip with a tool that writes UTF-8 names: `" + _PACK + "` does",
    "file-too-large": "leave large files (weights, datasets) out: `" + _PACK + "` does",
    "archive-too-large": "leave weights and datasets out: `" + _PACK + "` does",
    "too-many-files": "leave datasets and caches out: `" + _PACK + "` does",
}
_FIX_DEFAULT = "build the zip again with `" + _PACK + "`"
_SYMBOL = {"pass": ("✓ pass", "green"), "partial": ("~ partial", "yellow"), "fail": ("✗ fail", "red"),
           "error": ("! error", "red"), "manual": ("? by hand", "cyan"), "skipped": ("– not judged", "dim")}


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- datasets


def cache_root() -> Path:
    """`$DLLAB_CACHE`, else the user's cache folder (`~/.cache/dllab`)."""
    if os.environ.get("DLLAB_CACHE"):
        return Path(os.environ["DLLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dllab"


def quick_datasets(names: Sequence[str], *, size: str = QUICK_SIZE, seed: int = 0, log: Log = _info) -> dict[str, Path]:
    """Stand-in datasets for a quick check, made once into the cache and world-readable.

    World-readable because a root-run sandbox executes as an unprivileged uid.
    """
    from grader.datasets.standins import stand_ins

    return stand_ins(names, cache_root() / f"datasets-{size}-{seed}", size=size, seed=seed, log=log)


def unjudged_kinds(package: "LabPackage | None") -> frozenset[str]:
    """Check kinds a quick check shows but does not judge: the registry's (`quick_unjudged`)
    and the lab's (lab.yaml `quick.unjudged`)."""
    return quick_unjudged() | frozenset(package.manifest.quick.unjudged if package else ())


def _is_stand_in(folder: str) -> bool:
    from grader.datasets import read_manifest

    try:
        return bool((read_manifest(Path(folder)) or {}).get("synthetic"))
    except GraderError:
        return False


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class SelfCheck:
    """One submission checked the way the TA will grade it, plus what the student's view needs."""

    grade: dict[str, Any]
    """The Grade JSON (lateness left out: the check runs before the deadline)."""
    submission: dict[str, Any]
    """The Submission JSON written by intake."""
    evidence: tuple[dict[str, Any], ...]
    """evidence.json of every notebook and script run."""
    unjudged: frozenset[str]
    """Item ids shown but not judged (accuracy on stand-in data)."""
    manual: frozenset[str]
    """Item ids a TA grades by hand."""
    quick: bool
    """Stand-in datasets were used."""
    datasets: tuple[str, ...]
    """The datasets the lab trains on."""
    deadline: str
    """The rubric's deadline, as shown to the student."""
    expected_name: str
    """The archive name the lab asks for."""
    source: Path
    """What the student asked to check: a zip, or a working folder (packed first)."""
    packed: bool
    """`source` is a working folder that was packed as `dllab pack` would."""
    out: Path
    """The check's output folder."""
    feedback: tuple[Path, ...]
    """The feedback files written (HTML, and PDF when asked for)."""
    render_error: str | None
    """Why the feedback could not be rendered, if it could not."""
    reused: bool
    """The notebooks were not run again: the same archive was checked before."""
    seconds: float
    """Wall time of the check."""


@contextlib.contextmanager
def host_mounts(mounts: dict[str, str], *, log: Log = _info) -> Iterator[None]:
    """Without a sandbox, the handout's absolute dataset paths (`/tmp/dataset-nctu`) do not exist:
    link them to the datasets for the run, then remove the links.

    Only paths that do not exist are made, never inside a folder we did not create ourselves
    (a student's own `/tmp/dataset-nctu` with the real data is used as it is).
    """
    made: list[Path] = []
    try:
        for inside, host in sorted(mounts.items()):
            target = Path(inside)
            if not target.is_absolute():
                continue  # relative mounts are made by execute in the working copy
            if target.exists() or target.is_symlink():
                if not (target.is_symlink() and os.path.realpath(target) == os.path.realpath(host)):
                    log(f"note: {target} exists on this machine; without a sandbox your notebooks read it, "
                        f"not the check's datasets")
                continue
            parent = target.parent
            if parent.exists() and parent not in made and parent not in (Path("/tmp"), Path(tempfile.gettempdir())):
                log(f"note: {parent} exists on this machine and has no {target.name}; it is left as it is")
                continue
            for p in [p for p in reversed(target.parents) if not p.exists()]:
                p.mkdir()
                made.append(p)
            target.symlink_to(host, target_is_directory=True)
            made.append(target)
    except OSError as e:  # e.g. Windows without the right to make links
        log(f"note: could not link the datasets at the handout's paths ({e}); notebooks that read "
            f"/tmp/dataset-nctu will not find them")
    try:
        yield
    finally:
        for p in reversed(made):
            with contextlib.suppress(OSError):
                p.unlink() if p.is_symlink() else p.rmdir()


def _default_out(student_id: str, source: Path) -> Path:
    here = Path.cwd() / f"dllab-check-{safe_name(student_id)}"
    if source.is_dir() and here.resolve().is_relative_to(source.resolve()):
        return source.resolve().parent / here.name  # never write into the folder being checked
    return here


def _candidate(path: Path, *, pattern: str, student_id: str | None, out: Path | None, lab: str, log: Log,
               sections: Sequence[str] = ()):
    """(candidate, output folder, packed?): a working folder is first packed as `dllab pack` would."""
    from grader import pack
    from grader.intake import discover
    from grader.intake.naming import NamePattern

    given, packed = path, False
    if not path.exists():
        raise GraderError(f"{path}: no such file or folder (give your zip, or the folder with your notebooks)")
    if path.is_dir():
        plan = pack.plan_pack(path)
        if plan.of_kind("notebook") or plan.of_kind("script"):
            names = NamePattern(pattern)
            sid = student_id or names.read_folder(path.name).student_id or next(
                (r.student_id for m in plan.members if (r := names.read(Path(m).name)).match == "exact"), None)
            if sid is None:
                sid = "student"
                log(f"no student id given: checking as {names.expected(sid)}; add --student-id ID for yours")
            folder = out or _default_out(sid, path)
            dest = folder / "packed" / pack.zip_name(pattern, sid)
            dest.unlink(missing_ok=True)
            plan = pack.plan_pack(path, exclude=(folder,), sections=sections)
            pack.write_zip(plan, dest)
            log(f"packed {len(plan.members)} file(s) of {path} into {dest} (as `dllab pack` would; "
                f"{len(plan.left_out)} left out)")
            for w in plan.warnings:
                log(f"warning: {w}")
            path, out, packed = dest, folder, True
    found = discover([path], pattern=pattern, exclude=[out] if out else [])
    if not found:
        raise GraderError(f"no submission found in {path}: give your dllab zip or the folder with your notebooks")
    if len(found) > 1:
        raise GraderError(f"{path} holds {len(found)} submissions ({', '.join(c.path.name for c in found)}); "
                          f"check one at a time: dllab check {found[0].path} --lab {lab}")
    c = found[0]
    return c, (out or _default_out(c.student_id, given)), packed


def self_check(path: Path, *, lab: str | None, rubric: Path | None, data_args: dict[str, Path], quick: bool,
               sandbox: str, pdf: bool, out: Path | None, student_id: str | None,
               reference: Path | None, rerun: bool = False, log: Log = _info) -> SelfCheck:
    """Grades one submission with the real pipeline and returns the student's view of it."""
    from grader import config, sandbox as sb
    from grader.batch import is_done
    from grader.fsutil import write_json_atomic
    from grader.model import Submission, record_from_json
    from grader.pipeline import _render, grade_from_runs, grade_submission, sandbox_mounts
    from grader.rescore import stored_evidence
    from grader.rubric import load_rubric

    from grader.labs import choose_lab

    started = time.monotonic()
    choice = choose_lab(lab, rubric)
    rubric_path = choice.rubric_path
    r = load_rubric(rubric_path)
    not_judged = unjudged_kinds(choice.package)
    data = dict(data_args)
    absent = [n for n in r.datasets if n not in data]
    if absent and not quick:
        raise GraderError(f"{r.lab} trains on {', '.join(r.datasets)}: add --quick to run on small stand-in "
                          f"datasets (about a minute), or give the full datasets with "
                          + " ".join(f"--data {n}=DIR" for n in absent))
    if sandbox == "bwrap":
        try:
            sb.check_bwrap()
        except GraderError as e:
            if sys.platform != "linux":
                raise GraderError("the grader's sandbox (bubblewrap) exists only on Linux: on your own "
                                  "machine run the check without it by adding --sandbox none") from None
            raise GraderError(f"{e}; to check your own work on your own machine add --sandbox none") from None
    else:
        log(sb.NONE_WARNING)
    if absent:
        size = choice.package.manifest.quick.size if choice.package else QUICK_SIZE
        data.update(quick_datasets(absent, size=size, log=log))
    candidate, out, packed = _candidate(path, pattern=r.submission.pattern, student_id=student_id, out=out,
                                lab=r.lab, log=log,
                                sections=choice.report_sections)
    settings = config.prepare(lab=lab, rubric=rubric_path, out=out, data_args=data, reference=reference,
                              mode="execute", sandbox=sandbox, pdf=pdf, log=_quiet(log))
    quick = quick or any(_is_stand_in(f) for f in settings.data.values())
    # Lateness does not apply to a self-check: grade as if handed in at the deadline.
    when = r.deadline or dt.datetime.now(dt.timezone.utc)
    settings = replace(settings, submitted_at={candidate.student_id: when.isoformat()})
    config.save(settings)
    sid = candidate.student_id
    name = safe_name(sid)  # the id's file name in OUT
    runs = settings.out / "runs" / name
    reused = not rerun and is_done(candidate, settings)
    render_error = None
    if reused:
        log(f"{candidate.path.name} is unchanged since its last check in {out}: reusing the runs "
            f"(add --rerun to run the notebooks again)")
    else:
        (runs / "done.json").unlink(missing_ok=True)
        log(f"running the notebooks of {candidate.path.name} "
            f"({'stand-in' if quick else 'given'} datasets, sandbox {sandbox}) ...")
        with host_mounts(sandbox_mounts(r, settings.data) if sandbox == "none" else {}, log=log):
            try:
                grade_submission(candidate, settings)
            except Exception as e:  # noqa: BLE001 - after done.json only the feedback rendering is left
                if not (runs / "done.json").is_file():
                    raise
                render_error = f"{type(e).__name__}: {e}"
    sub_doc = json.loads((runs / "submission.json").read_text())
    evidence = stored_evidence(settings.out, sid)
    grade = grade_from_runs(r, record_from_json(Submission, sub_doc), evidence, settings=settings)
    if render_error:  # grade_submission stopped before writing it
        write_json_atomic(settings.out / "grades" / f"{name}.json", grade)
    feedback_dir = settings.out / "feedback"
    if reused and not any(feedback_dir.glob(f"{name}.pdf" if pdf else f"{name}.*")):
        try:
            _render(grade, record_from_json(Submission, sub_doc), evidence, settings)
        except Exception as e:  # noqa: BLE001 - the table does not need the feedback files
            render_error = f"{type(e).__name__}: {e}"
    from grader.checks import KINDS

    items = {item.id: item for _, item in r.all_items()}
    unjudged = frozenset(i for i, it in items.items() if quick and it.check in not_judged)
    manual = frozenset(i for i, it in items.items() if KINDS[it.check].by_hand)
    feedback = tuple(p for p in sorted(feedback_dir.glob(f"{name}.*")) if p.suffix in (".html", ".pdf"))
    return SelfCheck(grade=grade, submission=sub_doc, evidence=tuple(evidence), unjudged=unjudged, manual=manual,
                     quick=quick, datasets=tuple(r.datasets),
                     deadline=r.deadline.strftime("%Y-%m-%d %H:%M %z") if r.deadline else "none set",
                     expected_name=candidate.expected_name,
                     source=path, packed=packed, out=settings.out, feedback=feedback, render_error=render_error,
                     reused=reused, seconds=time.monotonic() - started)


def _quiet(log: Log) -> Log:
    """The TA-facing remark about reference metrics means nothing to a student."""
    return lambda s: None if s.startswith("no reference metrics") else log(s)


@dataclass(frozen=True)
class Row:
    """One line of the student's table."""

    part: str
    title: str
    status: str
    points: float
    max: float
    message: str
    required: bool
    """Counts for the exit code: worth points, not the bonus, judged automatically."""


# An item failed because the part has no notebook at all: as true in a quick check as in grading.
_NO_NOTEBOOK = re.compile(r"no notebook (?:or script )?for \S+ was found")


def rows(result: SelfCheck) -> list[Row]:
    out: list[Row] = []
    parts = [*result.grade["parts"], *([result.grade["bonus"]] if result.grade.get("bonus") else [])]
    for part in parts:
        for it in part["items"]:
            status, message = it["status"], it["message"]
            if it["id"] in result.unjudged and not _NO_NOTEBOOK.match(message):
                status = "skipped"
                message = (f"not judged in a quick check: the graded numbers come from training on the full "
                           f"datasets (the quick run, on a small stand-in, for your information only: {message})")
            elif it["id"] in result.manual or status == "manual":
                status = "manual"
                if it["id"] in result.manual or message.startswith("for the TA"):
                    message = _HAND
            required = (part["id"] != "bonus" and it["max"] > 0 and status not in ("manual", "skipped"))
            out.append(Row(part["id"], it["title"], status, it["points"], it["max"], message, required))
    return out


def report_sections(lab: str | None, rubric: Path | None = None) -> tuple[str, ...]:
    """The section headings the lab's report should have (lab.yaml `report.sections`) for
    `--lab` and `--rubric` as given; () for a rubric that belongs to no lab package, a lab that
    names none, or a lab that cannot be found (the command reports that itself)."""
    from grader.labs import LabError, choose_lab, find_lab

    try:
        pkg = choose_lab(lab, rubric).package if rubric else find_lab(lab) if lab else None
    except LabError:
        return ()
    return pkg.manifest.report.sections if pkg else ()


def problems(result: SelfCheck, *, lab: str) -> list[tuple[str, str]]:
    """(what is wrong, what to do) for every intake problem."""
    expected = result.expected_name
    report = "write the report" + (f" ({', '.join(s)})" if (s := report_sections(lab)) else "")
    return [(p["message"], FIXES.get(p["code"], _FIX_DEFAULT).format(expected=expected, lab=lab, report=report))
            for p in result.submission["problems"]]


def exit_code(result: SelfCheck, *, strict: bool = False) -> int:
    """0 when nothing required is missing, else 1 (see the module docstring)."""
    bad = {"fail", "error", "partial"} if strict else {"fail", "error"}
    missing = any(r.required and r.status in bad for r in rows(result))
    return 1 if missing or result.submission["problems"] else 0


def show(result: SelfCheck, *, lab: str, strict: bool, console=None) -> None:
    """The student's view: intake problems, runs, the item table, a summary and what to do next."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from grader.diagnose import error_text

    console = console or Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)
    g, deadline = result.grade, result.deadline
    what = f"{result.source} (packed as {Path(result.submission['source']).name})" if result.packed \
        else result.source.name
    console.print(f"[bold]dllab check[/bold] {escape(what)} · {escape(g['lab'])} · "
                  f"student {escape(g['student_id'])} · deadline {deadline}")
    if result.quick:
        console.print(f"[bold yellow]{QUICK_NOTICE}[/bold yellow]")
    found = problems(result, lab=lab)
    if found:
        console.print(f"\n[bold red]Fix before handing in ({len(found)}):[/bold red]")
        for what, fix in found:
            console.print(Text(f"  ✗ {what}\n    → {fix}"))
    console.print("\n[bold]Notebooks run[/bold]" + (" (reused from the last check)" if result.reused else ""))
    for ev in result.evidence:
        line = f"  {ev.get('path')}: {ev.get('status')}"
        if ev.get("duration_s") is not None:
            line += f", {ev['duration_s']:.1f} s"
        errs = ev.get("errors") or []
        if errs:
            e = errs[0]
            line += f"; cell {e.get('cell')} raised {error_text(e.get('ename'), e.get('evalue'))} "
            if result.quick and e.get("ename") in _SIZE_ERRORS:
                # Subset(range(20000)) of a 6000-image stand-in: the cell may be right on the real data
                line += ("→ the quick check's stand-in datasets are smaller than the real ones: if that cell "
                         "indexes the data by a fixed count, it may run on the full datasets; check it there")
            else:
                line += "→ fix that cell, restart the kernel and run all cells"
        console.print(Text(line))
    if not result.evidence:
        console.print("  none: the zip holds no notebook or script that could be run")
    if console.is_terminal:
        table = Table(show_lines=False, expand=True)
        for col, kw in (("part", {"no_wrap": True}), ("item", {"ratio": 2}), ("status", {"no_wrap": True}),
                        ("points", {"justify": "right", "no_wrap": True}), ("what to do", {"ratio": 4})):
            table.add_column(col, **kw)
        for row in rows(result):
            label, color = _SYMBOL.get(row.status, (row.status, ""))
            table.add_row(row.part, row.title, Text(label, style=color), _points(row), Text(row.message))
        console.print(table, soft_wrap=False)
    else:  # a pipe or a log file: one item per line pair, easy to grep
        console.print("\nItems")
        for row in rows(result):
            label = _SYMBOL.get(row.status, (row.status, ""))[0]
            console.print(Text(f"  {label:13s}{_points(row):>6s}  {row.part}: {row.title}\n"
                               f"  {'':13s}{'':6s}  {row.message}"))
    console.print("\n" + summary(result))
    for line in next_steps(result, lab=lab, strict=strict):
        console.print(Text(line))


def _points(row: Row) -> str:
    return "–" if row.max == 0 else f"?/{row.max:g}" if row.status == "skipped" else f"{row.points:g}/{row.max:g}"


def summary(result: SelfCheck) -> str:
    """`N of M required items pass; est. X/100 (+bonus)` and what the estimate leaves out."""
    rs = rows(result)
    req = [r for r in rs if r.required]
    passed = sum(r.status == "pass" for r in req)
    bonus = result.grade["bonus"]["points"] if result.grade.get("bonus") else 0.0
    skipped = [r for r in rs if r.status == "skipped"]
    est = sum(r.points for r in rs if r.part != "bonus" and r.status != "skipped")
    hand = [r for r in rs if r.status == "manual" and r.max > 0]
    text = f"{passed} of {len(req)} required items pass; est. {est:g}/{result.grade['max']:g}"
    text += f" (+{bonus:g} bonus)" if bonus else ""
    extra = []
    if hand:
        extra.append(f"{sum(r.max for r in hand):g} points graded by hand")
    if skipped:
        extra.append(f"{sum(r.max for r in skipped):g} points measured on the full datasets")
    return text + (f", not counting {' and '.join(extra)}" if extra else "")


def next_steps(result: SelfCheck, *, lab: str, strict: bool) -> list[str]:
    lines = []
    code = exit_code(result, strict=strict)
    again = f"dllab check {result.source} --lab {lab}" + (" --quick" if result.quick else "")
    if code:
        lines.append("next: fix the items marked ✗ above (and ~ if you can), run all cells, save"
                     + ("" if result.packed else ", zip again") + f", and check again: {again}")
    elif result.packed:
        sid = result.grade["student_id"]
        lines.append(f"next: nothing required is missing; build the zip to hand in: dllab pack {result.source} "
                     f"--student-id {sid if sid != 'student' else 'ID'} --lab {lab}")
    else:
        lines.append(f"next: nothing required is missing; hand in {result.source.name}")
    if result.quick and not code:
        data = " ".join(f"--data {n}=DIR" for n in result.datasets)
        lines.append(f"(a quick check does not judge accuracy; to run on the full datasets: {again.replace(' --quick', '')} "
                     f"{data})")
    if result.feedback:
        lines.append("feedback as the TA will see it: " + ", ".join(str(p) for p in result.feedback))
    if result.render_error:
        lines.append(f"the feedback file could not be made ({result.render_error[:200]}); the items above say "
                     f"the same")
    lines.append(f"checked in {result.seconds:.0f} s; everything is in {result.out}")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    from grader.cli import parse_data_args
    from grader.datasets import DATASETS

    result = self_check(args.path, lab=args.lab, rubric=args.rubric,
                        data_args=parse_data_args(args.data, names=DATASETS), quick=args.quick,
                        sandbox=args.sandbox, pdf=args.pdf, out=args.out,
                        student_id=args.student_id, reference=args.reference, rerun=args.rerun)
    lab = args.lab or result.grade["lab"]
    show(result, lab=lab, strict=args.strict)
    return exit_code(result, strict=args.strict)


# --------------------------------------------------------------------------- pack


def cmd_pack(args: argparse.Namespace) -> int:
    from grader import config, pack
    from grader.intake.problems import human_bytes
    from grader.rubric import load_rubric

    r = load_rubric(config.resolve_rubric(args.lab, args.rubric))
    out_dir = args.out or Path(".")
    if out_dir.suffix.lower() == ".zip":
        raise GraderError(f"--out {out_dir}: give the folder to write into; the zip's name is set by the lab "
                          f"({pack.zip_name(r.submission.pattern, args.student_id)})")
    res = pack.pack(args.dir, student_id=args.student_id, pattern=r.submission.pattern, out_dir=out_dir,
                    force=args.force, sections=report_sections(args.lab, args.rubric))
    plan = res.plan
    print(f"packed {res.zip_path} ({human_bytes(res.zip_path.stat().st_size)}):")
    for m in plan.members:
        print(f"  + {m}")
    if plan.left_out:
        print(f"left out ({len(plan.left_out)}):")
        for x in plan.left_out:
            size = f"{x.files} file{'' if x.files == 1 else 's'}, {human_bytes(x.bytes)}" if x.path.endswith("/") else human_bytes(x.bytes)
            print(f"  - {x.path} ({size}): {x.reason}")
    for w in plan.warnings:
        print(f"warning: {w}")
    shown = {"no-report", "no-notebook", "bad-notebook", "unreadable-notebook"}  # already warned about above
    intake = [p for p in res.submission.problems if p.code not in shown]
    for p in intake:
        print(f"intake problem: {p.message}")
    kinds = {k: len(res.submission.of_kind(k)) for k in ("notebook", "script", "report")}
    print(f"the grader's intake reads {res.zip_path.name} as student {res.submission.student_id}: "
          + ", ".join(f"{n} {k}(s)" for k, n in kinds.items())
          + ("" if intake else ", no problems"))
    from grader.cli import lab_words

    print(f"next: dllab check {res.zip_path} {lab_words(args, r.lab)} --quick   (runs the TA's checks on it)")
    return 0


# --------------------------------------------------------------------------- parser


def add_student_commands(sub: "argparse._SubParsersAction") -> None:
    """Registers `check` and `pack` on the `dllab` parser."""
    c = sub.add_parser(
        "check", help="check your own submission the way the TA will grade it",
        description="Run the TA's checks on your zip (or working folder) and show what to fix.",
        epilog="Exit code: 0 nothing required is missing; 1 an intake problem, or a required item failed "
               "(with --strict, also a partial one); 2 usage errors.")
    c.add_argument("path", type=Path, metavar="ZIP_OR_DIR", help="your dllab_<id>.zip, or your working folder")
    c.add_argument("--lab", metavar="ID|DIR", help="the lab: an id such as lab1, or a lab folder holding lab.yaml")
    c.add_argument("--rubric", type=Path, metavar="FILE", help="a rubric YAML instead of the built-in one")
    c.add_argument("--quick", action="store_true",
                   help="train on tiny stand-in datasets (about a minute on a laptop CPU); "
                        "accuracies are then not your graded ones")
    c.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                   help="a dataset folder as NAME=DIR (the lab's datasets), a root holding them, or the TA's mini pack")
    c.add_argument("--sandbox", choices=("bwrap", "none"), default="bwrap",
                   help="none: no isolation (macOS, Windows, or Linux without bubblewrap); your own work only")
    c.add_argument("--pdf", action="store_true", help="also write the feedback PDF the TA would produce")
    c.add_argument("--out", type=Path, metavar="DIR", help="output folder (default ./dllab-check-<id>)")
    c.add_argument("--student-id", metavar="ID", help="your id, when checking a folder (the zip is named from it)")
    c.add_argument("--reference", type=Path, metavar="FILE", help="expected metrics from `dllab reference run`, if the TA shares them")
    c.add_argument("--strict", action="store_true", help="exit 1 also when a required item is only partly done")
    c.add_argument("--rerun", action="store_true", help="run the notebooks again even if the zip is unchanged")
    from grader.cli import _labs_dir

    _labs_dir(c, for_lab=True)
    c.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "pack", help="build a correctly named submission zip from your working folder",
        description="Zip your notebooks, scripts and report as dllab_<id>.zip, leaving out datasets, "
                    "checkpoints, weights and caches, then read it back as the grader will.")
    p.add_argument("dir", type=Path, metavar="DIR", help="your working folder")
    p.add_argument("--student-id", required=True, metavar="ID", help="your student id, e.g. 0556001")
    p.add_argument("--lab", metavar="ID|DIR", help="the lab: an id such as lab1, or a lab folder holding lab.yaml "
                                                   "(sets the zip's name)")
    p.add_argument("--rubric", type=Path, metavar="FILE", help="a rubric YAML instead of the built-in one")
    p.add_argument("--out", type=Path, metavar="DIR", help="folder to write the zip into (default: the current folder)")
    p.add_argument("--force", action="store_true", help="replace an existing zip of the same name")
    _labs_dir(p, for_lab=True)
    p.set_defaults(func=cmd_pack)
