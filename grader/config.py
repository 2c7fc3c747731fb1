"""Turn command-line choices into one frozen `GradeSettings`, saved beside the results.

`OUT/settings.json` and `OUT/rubric.yaml` let `dllab rescore OUT` recompute every grade
later from the stored runs alone, with the same datasets' statistics and reference; the
rubric's handout and custom files stay in the lab folder settings.json names (`lab_dir`).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from grader.errors import GraderError
from grader.fsutil import write_json_atomic
from grader.pipeline import GradeSettings

Log = Callable[[str], None]


def resolve_rubric(lab: str | Path | None, rubric: Path | None) -> Path:
    """The rubric `--lab ID|DIR` / `--rubric FILE` name (grader.labs.choose_lab). Raises
    LabError (a GraderError) for an unknown lab or a missing file."""
    from grader.labs import choose_lab

    return choose_lab(lab, rubric).rubric_path


def dataset_stats(names: Sequence[str], data: Mapping[str, str], *, out: Path, log: Log) -> dict[str, dict]:
    """Training-split mean/std of each dataset, cached in OUT by the dataset's manifest digest."""
    from grader.datasets import channel_stats, manifest_digest

    cache_path = out / "dataset-stats.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    stats: dict[str, dict] = {}
    for name in names:
        folder = Path(data[name])
        digest = manifest_digest(folder)
        hit = cache.get(name)
        if hit and hit.get("digest") == digest:
            stats[name] = {"mean": hit["mean"], "std": hit["std"]}
            continue
        log(f"computing {name}'s training mean/std (once; cached in {cache_path.name})")
        s = channel_stats(name, folder, progress=False)
        cache[name] = {"digest": digest, "mean": list(s.mean), "std": list(s.std), "images": s.count}
        stats[name] = {"mean": list(s.mean), "std": list(s.std)}
    write_json_atomic(cache_path, cache)
    return stats


def read_submitted_at(path: Path | None) -> dict[str, str]:
    """`student_id,submitted_at` CSV (ISO 8601 times, with a timezone) -> {id: time}."""
    if path is None:
        return {}
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"student_id", "submitted_at"} <= set(reader.fieldnames):
            raise GraderError(f"{path}: expected the columns student_id,submitted_at")
        for line, row in enumerate(reader, start=2):
            try:
                when = dt.datetime.fromisoformat(row["submitted_at"].strip())
            except ValueError:
                raise GraderError(f"{path}:{line}: {row['submitted_at']!r} is not an ISO 8601 time "
                                  f"(like 2018-09-30T23:59:00+08:00)") from None
            if when.tzinfo is None:
                raise GraderError(f"{path}:{line}: the time has no timezone (add e.g. +08:00)")
            out[row["student_id"].strip()] = when.isoformat()
    return out


def match_submitted_at(times: Mapping[str, str], student_ids: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """--submitted-at rows keyed by the batch's own student ids, and warnings for the TA.

    A spreadsheet drops leading zeros (`110001` for `0110001`) and may write the id as a number
    (`110001.0`): such a row is matched to the one student whose id is the same number. A row that
    matches nobody, and a student with no row (graded on the archive's time instead), are each
    reported rather than silently ignored.
    """
    ids = set(student_ids)
    by_number: dict[str, list[str]] = {}
    for sid in ids:
        by_number.setdefault(id_number(sid), []).append(sid)
    out: dict[str, str] = {}
    fixed: list[str] = []
    unmatched: list[str] = []
    for row_id, when in times.items():
        same = by_number.get(id_number(row_id), [])
        if row_id in ids:
            out[row_id] = when
        elif len(same) == 1 and same[0] not in times:
            out[same[0]] = when
            fixed.append(f"{row_id} -> {same[0]}")
        else:
            unmatched.append(row_id)
            out[row_id] = when  # kept: a student added to the batch later may have this id
    warnings = []
    if fixed:
        warnings.append(f"{len(fixed)} --submitted-at row(s) name a student without the id's leading zeros "
                        f"or as a decimal number (a spreadsheet writes ids so) and were matched by number: "
                        f"{_few(fixed)}")
    if unmatched:
        warnings.append(f"{len(unmatched)} --submitted-at row(s) match no submission in this batch, so their "
                        f"times are not used: {_few(unmatched)}; check the student_id column")
    missing = sorted(ids - set(out))
    if times and missing:
        warnings.append(f"{len(missing)} submission(s) have no row in --submitted-at, so their archives' own "
                        f"times are used for lateness: {_few(missing)}")
    return out, warnings


def id_number(student_id: str) -> str:
    """A student id as the number a spreadsheet may have made of it: `0150001`, `150001` and
    `150001.0` are all `150001`; an id with letters stays itself."""
    return re.sub(r"\.0*$", "", student_id.strip()).lstrip("0")


def merge_submitted_at(earlier: Mapping[str, str], new: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """A new --submitted-at CSV for a folder graded with an earlier one: the new rows win, and the
    earlier rows of students the new file does not mention (by id number) are kept; also the ids
    kept that way, for the TA."""
    named = {id_number(k) for k in new}
    kept = {k: v for k, v in earlier.items() if id_number(k) not in named}
    return {**kept, **new}, sorted(kept)


def _few(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def prepare(*, lab: str | Path | None, rubric: Path | None, out: Path, data_args: Mapping[str, Path],
            reference: Path | None, mode: str, sandbox: str, pdf: bool, gpus: Sequence[int] = (),
            runs_per_gpu: int = 1, submitted_at: Path | None = None, log: Log = lambda s: None,
            hidden_args: Mapping[str, Path] | None = None) -> GradeSettings:
    """Validates everything a batch needs before any submission is touched. `lab` is a lab id
    or folder, `rubric` a TA's rubric file (grader.labs.choose_lab); the rubric is copied to
    OUT and the folder it came from is recorded (`lab_dir`) for its handout and custom files.
    `hidden_args` names grader-only hidden test splits (grader.hidden_split); a `dllab-hidden`
    sibling of a dataset folder is used without being named."""
    from grader.datasets import locate
    from grader.labs import choose_lab
    from grader.rubric import load_rubric

    choice = choose_lab(lab, rubric)
    rubric_path = choice.rubric_path
    earlier_doc = json.loads((out / "settings.json").read_text()) if (out / "settings.json").is_file() else {}
    lab_dir = choice.lab_dir
    if rubric_path.resolve() == (out / "rubric.yaml").resolve():
        # OUT's own copy graded again: its files are still in the folder it was taken from
        lab_dir = _lab_dir(earlier_doc.get("lab_dir")) or lab_dir
    r = load_rubric(rubric_path, base_dir=lab_dir)
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, str] = {}
    for name in r.datasets:
        if name in data_args:
            data[name] = str(locate(name, data_args[name]).resolve())
        elif mode == "execute":
            raise GraderError(f"{r.lab} mounts the {name} dataset: pass --data {name}=DIR (the dataset's "
                              f"folder, or a root holding it; stand-ins: dllab data synth --out DIR)")
    from grader.datasets.registry import verified_names
    from grader.hidden_split import resolve_hidden

    hidden = resolve_hidden(data, {k: v for k, v in (hidden_args or {}).items() if k in data})
    for name in r.datasets:
        if name in data and name in verified_names():
            log(f"{name}: hidden test split {hidden[name]}" if name in hidden else
                f"{name}: no hidden test split (dllab data synth writes one; --hidden {name}=DIR names yours), "
                f"so a model that memorized the test split is not caught")
    if sandbox == "bwrap" and mode == "execute":
        from grader import sandbox as sb
        sb.check_bwrap()
    ref_path = reference
    if ref_path is None and (out / "reference.json").is_file():
        ref_path = out / "reference.json"
    if ref_path is not None and not ref_path.is_file():
        raise GraderError(f"reference file {ref_path} does not exist (make one with dllab reference run)")
    if ref_path is None:
        log("no reference metrics given (--reference FILE): accuracy items use the rubric's floors only")
    times = read_submitted_at(submitted_at)
    earlier: dict[str, str] = earlier_doc.get("submitted_at") or {}
    if submitted_at is not None and earlier:
        # A second CSV often lists only the students it corrects: the others keep their times.
        given = len(times)
        times, kept = merge_submitted_at(earlier, times)
        if kept:
            log(f"{submitted_at.name} lists {given} student id(s); the earlier --submitted-at times of "
                f"{len(kept)} student(s) it does not list are kept: {_few(kept)}")
    if submitted_at is None:
        # Given once, the LMS's times stay (like overrides): a plain rerun to resume must not
        # silently switch the graded students back to file times.
        times = earlier
        if times:
            log(f"the --submitted-at times given before ({len(times)} student(s)) are kept for this folder; "
                f"pass --submitted-at again to replace them")
    stats = dataset_stats(list(data), data, out=out, log=log) if data else {}
    kept_rubric = out / "rubric.yaml"
    if rubric_path.resolve() != kept_rubric.resolve():
        shutil.copyfile(rubric_path, kept_rubric)
    settings = GradeSettings(rubric_path=kept_rubric.resolve(), out=out.resolve(), data=data, hidden=hidden,
                             reference_path=ref_path.resolve() if ref_path else None, dataset_stats=stats,
                             mode=mode, sandbox=sandbox, pdf=pdf, gpus=tuple(gpus), runs_per_gpu=runs_per_gpu,
                             submitted_at=times,
                             run_cache=os.environ.get("DLLAB_RUN_CACHE") or None,
                             lab_dir=lab_dir,
                             report_sections=choice.report_sections)
    save(settings)
    return settings


def save(settings: GradeSettings) -> None:
    doc = asdict(settings)
    doc.update(rubric_path=str(settings.rubric_path), out=str(settings.out),
               reference_path=str(settings.reference_path) if settings.reference_path else None,
               gpus=list(settings.gpus), lab_dir=str(settings.lab_dir) if settings.lab_dir else None,
               report_sections=list(settings.report_sections))
    write_json_atomic(settings.out / "settings.json", doc)


def load(out: Path, *, rubric: Path | None = None, pdf: bool | None = None) -> GradeSettings:
    """The settings a graded folder was made with; `rubric` replaces its rubric for a rescore."""
    path = out / "settings.json"
    if not path.is_file():
        raise GraderError(f"{out} is not a graded folder (no settings.json): run dllab grade first")
    doc = json.loads(path.read_text())
    # The rubric kept in OUT, not the absolute path written when grading: a copied or moved
    # OUT folder must not read (or rescore with) the original folder's rubric.
    kept = out / "rubric.yaml"
    rubric_path = kept.resolve() if kept.is_file() else Path(doc["rubric_path"])
    reference = Path(doc["reference_path"]) if doc.get("reference_path") else None
    if reference is not None and doc.get("out") and reference.parent == Path(doc["out"]) \
            and (out / reference.name).is_file():
        reference = (out / reference.name).resolve()  # the reference kept in OUT moves with it
    settings = GradeSettings(rubric_path=rubric_path, out=out.resolve(), data=doc["data"],
                             hidden=doc.get("hidden") or {}, reference_path=reference,
                             dataset_stats=doc["dataset_stats"], mode=doc["mode"], sandbox=doc["sandbox"],
                             pdf=doc["pdf"], gpus=tuple(doc.get("gpus", ())),
                             runs_per_gpu=int(doc.get("runs_per_gpu") or 1),
                             submitted_at=doc.get("submitted_at", {}), run_cache=doc.get("run_cache"),
                             lab_dir=_lab_dir(doc.get("lab_dir")),
                             report_sections=tuple(doc.get("report_sections") or ()))
    if rubric is not None:
        rubric_path = resolve_rubric(None, rubric).resolve()
        if rubric_path != kept.resolve():  # OUT's own copy, edited in place, keeps its lab folder
            settings = replace(settings, rubric_path=rubric_path, lab_dir=rubric_path.parent)
    if pdf is not None:
        settings = replace(settings, pdf=pdf)
    return settings


def _lab_dir(recorded: str | None) -> Path | None:
    """settings.json's `lab_dir`; None when absent (a folder graded before it was recorded)
    or gone (a moved lab folder), so the rubric's files are looked for beside OUT's copy."""
    if not recorded or not Path(recorded).is_dir():
        return None
    return Path(recorded)


def keep_rubric(out: Path, rubric: Path) -> None:
    """Makes `rubric` (a TA's edited copy given to `rescore --rubric`) OUT's rubric: copied to
    OUT/rubric.yaml, and its folder recorded as settings.json's `lab_dir`, where its handout
    and `custom` files are found from now on."""
    kept = out / "rubric.yaml"
    if Path(rubric).resolve() == kept.resolve():
        return  # OUT's own copy, edited in place: its lab folder stays
    shutil.copyfile(rubric, kept)
    path = out / "settings.json"
    doc = json.loads(path.read_text())
    doc["lab_dir"] = str(Path(rubric).resolve().parent)
    write_json_atomic(path, doc)
