"""The checks stage: which notebook serves which part, then every rubric item's check.

Each part is graded on exactly one notebook, or on its section of a notebook that holds
several parts (`grader.sources` says which and why, `grader.sections` cuts the evidence);
every check then reads that one view, unchanged.

Pure: from evidence dicts (as in evidence.json), the submission and the reference to
`CheckResult`s; it never executes anything, so `dllab rescore` can call it over stored runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from grader.checks import KINDS, run_check
from grader.checks.base import UNCONFIRMED, CheckContext, Outcome, where
from grader.corroborate import verified_blocks, verified_for
from grader.rubric import Item, Rubric
from grader.score import CheckResult
from grader.sources import (
    Source,
    better_ignored,
    choose,
    ignored_paths,
    is_checkpoint,
    named_for,
    settle,
    worked_on,
)


MANUAL_MESSAGE = "A TA grades this item by hand after reading your work."

# Checks that read the submission's files or the whole submission, not one part's notebooks.
FILE_CHECKS = frozenset(k for k, spec in KINDS.items() if spec.scope == "submission")
# Checks that credit what a part's run printed or what the probe recorded (its metrics, its
# model, that it ran), all of which the student's code can print or forge. In execute mode they
# stand only beside the host's own evaluation of a model of the part's dataset in the serving
# notebook (`grader.corroborate.verified_for`); the accuracy and verification checks demand that
# themselves (grader.checks.metrics), and figures and normalization are corroborated their own way.
CORROBORATED = frozenset(k for k, spec in KINDS.items() if spec.corroborated)


def _groups(rubric: Rubric):
    for part in rubric.parts:
        yield part.id, part.notebook, part.items, part.title
    if rubric.bonus:
        yield "bonus", rubric.bonus.notebook, rubric.bonus.items, rubric.bonus.title


def _message(item: Item, status: str, detail: str) -> str:
    """The rubric's feedback for the outcome, then what the check found."""
    fb = item.feedback
    lead = {"pass": fb.pass_, "partial": fb.partial or fb.fail, "fail": fb.fail}.get(status, "")
    if lead and detail:
        # The check's sentence follows the rubric's: it starts a sentence of its own, unless
        # it starts with a name that must keep its spelling (`lab1-1.ipynb#cell 3`, `conv1`).
        first = detail.split(" ", 1)[0]
        if first.isalpha() and first.islower():
            detail = detail[:1].upper() + detail[1:]
        return f"{lead}{'' if _ends_sentence(lead) else '.'} {detail}".strip()
    return lead or detail


_SENTENCE_END = ".!?:;…。！？：；"
"""Final punctuation after which the check's sentence may follow the rubric's text directly."""


def _ends_sentence(text: str) -> bool:
    """Whether the TA's text ends with final punctuation (`Well done.`, `(see above).`, `"ok!"`);
    a text without (`ok`) gets a full stop before the check's sentence."""
    return text.rstrip().rstrip(")]\"'’”」』").endswith(tuple(_SENTENCE_END))


def choose_sources(rubric: Rubric, *, student_id: str, evidence: Sequence[Mapping], files: Sequence[Mapping],
                   work_dir: str | None, reference: Mapping | None,
                   dataset_stats: Mapping[str, Mapping],
                   test_split_sizes: Mapping[str, int] | None = None,
                   report_sections: Sequence[str] = ()) -> list[Source]:
    """For every part (and the bonus), the one notebook or section it is graded on and the
    candidates that were not (the rule is `grader.sources.RULE`)."""
    specs = [spec for _, spec, _, _ in _groups(rubric) if spec is not None]
    out = []
    for part_id, spec, items, title in _groups(rubric):
        if spec is None:
            continue

        def context(item: Item, ev: Mapping, part_id: str = part_id, spec=spec) -> CheckContext:
            return _context(item, part_id, spec, (ev,), student_id=student_id, evidence=evidence, files=files,
                            work_dir=work_dir, reference=reference, dataset_stats=dataset_stats,
                            test_split_sizes=test_split_sizes, rubric_dir=rubric.base_dir,
                            report_sections=report_sections)
        out.append(choose(part_id, title, spec, specs, items, evidence, context=context))
    return settle(out)


def _context(item: Item, part_id: str, spec, serving: Sequence[Mapping], *, student_id: str,
             evidence: Sequence[Mapping], files: Sequence[Mapping], work_dir: str | None,
             reference: Mapping | None, dataset_stats: Mapping[str, Mapping],
             test_split_sizes: Mapping[str, int] | None = None, rubric_dir: Path | None = None,
             report_sections: Sequence[str] = ()) -> CheckContext:
    """What `item`'s check sees: the part's dataset is the item's `dataset` param when its kind
    has one (grader.checks.registry `dataset_fields`), else the part's notebook's."""
    named = [getattr(item.params, f) for f in KINDS[item.check].dataset_fields]
    dataset = next((d for d in named if d), None) or (spec.dataset if spec else None)
    parts = (reference or {}).get("parts") or {}
    return CheckContext(student_id=student_id, part_id=part_id, dataset=dataset,
                        evidence=tuple(serving), all_evidence=tuple(evidence), files=tuple(files),
                        work_dir=work_dir, reference=parts.get(part_id), references=parts,
                        dataset_stats=dataset_stats, test_split_size=(test_split_sizes or {}).get(dataset or ""),
                        rubric_dir=str(rubric_dir) if rubric_dir else None,
                        report_sections=tuple(report_sections))


def _unreadable_message(part_id: str, spec, unreadable: Sequence[Mapping]) -> str | None:
    """For a part no readable notebook serves: the files found but unreadable that may hold it
    (those named like the part first, else any)."""
    if not unreadable:
        return None
    named = [u for u in unreadable if spec is None or named_for(str(u.get("path", "")), spec)]
    candidates = named or list(unreadable)
    which = "; ".join(f"`{u.get('path')}` {u.get('what') or 'was found but could not be read as a notebook'} "
                      f"({u.get('reason')})" for u in candidates[:3])
    if named:
        return f"{which}, so nothing for {part_id} could be graded."
    return f"no readable notebook for {part_id} was found: {which}."


def _unrecognised_message(part_id: str, spec, evidence: Sequence[Mapping], sources: Sequence[Source]) -> str | None:
    """For a part no notebook serves: the notebooks found but graded for no part at all (a
    name the rule does not know, `實驗一/作業一.ipynb`), named with why each was not taken,
    so that a missing part is not reported as a missing file."""
    if spec is None:
        return None
    graded = {s.chosen.path for s in sources if s.chosen}
    left = [ev for ev in evidence if str(ev.get("path", "")) not in graded
            and not is_checkpoint(str(ev.get("path", "")))]
    if not left:
        return None
    names = ", ".join(f"`{p}`" for p in spec.patterns)
    found = []
    for ev in left[:3]:
        used = worked_on(ev)
        data = ("the grader could not tell what it trained on" if used is None else
                "the grader saw it train or evaluate on no dataset" if not used else
                f"it trained or evaluated on {', '.join(sorted(used))}, not {spec.dataset}")
        found.append(f"`{ev.get('path')}` ({data})")
    return (f"no notebook was recognised as {part_id}, but {'; '.join(found)} "
            f"{'was' if len(found) == 1 else 'were'} found and graded for no part: a notebook is taken for "
            f"{part_id} when its name matches {names}, else when it trains or evaluates on {spec.dataset}. If one of them "
            f"is this part, rename it (e.g. `{part_id}.ipynb`) or ask the TA to grade it.")


def _from_text(out: Outcome, ev: Mapping, part_id: str, dataset: str | None) -> Outcome:
    """An item of a part whose notebook was taken for it from its text alone (its run showed no
    work on the part's dataset, see `grader.sources`): what it would earn goes to a TA."""
    if out.status not in ("pass", "partial"):
        return out
    unnamed = ", ".join(f"`{u}`" for u in ev.get("unnamed") or [])
    did = (f"its run trained or evaluated on data the grader could not name ({unnamed}) and nothing else it "
           f"showed says it was {dataset or 'the dataset'}" if unnamed else
           f"its run recorded no work on {dataset or 'the dataset'}")
    return Outcome("manual", 0.0, f"`{ev.get('path')}` was taken for {part_id} from its text only: {did}, "
                                  f"so a TA confirms this item "
                                  f"({out.status} from the outputs: {out.message})", out.evidence,
                   tuple(dict.fromkeys((*out.flags, "part-from-text"))), own_words=True)


def _needs_host(item: Item, ev: Mapping, whole: Mapping, dataset: str | None) -> bool:
    """Whether `item`'s pass or partial on the serving view `ev` (of notebook `whole`) lacks the
    host's corroboration: a part taken from the probe's records alone (every item), or in execute
    mode a check that credits printed or recorded work while the grader tested no model of
    `dataset` from that notebook (in the view's own section, or elsewhere in the notebook: a
    whole lab in one notebook has its last-tested model evaluated, which may be another section's)."""
    if item.check in FILE_CHECKS:
        return False
    if ev.get("attributed") == "probe":
        return True
    return item.check in CORROBORATED and ev.get("mode") == "execute" and bool(dataset) \
        and verified_for(ev, dataset) is None and verified_for(whole, dataset) is None


def _unconfirmed(out: Outcome, item: Item, ev: Mapping, part_id: str, dataset: str | None) -> Outcome:
    """An item whose pass or partial no host evaluation of a `dataset` model backs (`_needs_host`):
    0 points for now, `manual` and flagged; the message says what it would earn and why the grader
    could not confirm it. A fail stays a fail: an absence needs no corroboration."""
    if out.status not in ("pass", "partial"):
        return out
    name = f"`{ev.get('path')}`"
    data = dataset or "the part's dataset"
    others = sorted({str(v.get("dataset")) for v in verified_blocks(ev) if v.get("dataset")})
    if others:
        why = f"the model the grader tested itself was evaluated on {', '.join(others)}"
    else:
        reason = str((ev.get("verified") or {}).get("reason") or "no independent evaluation was made").rstrip(".")
        why = reason[:1].lower() + reason[1:]
    probe = ev.get("attributed") == "probe"
    taken = (f"{name} was taken for {part_id} because the records of its run say it trained or evaluated on "
             f"{data}, but " if probe else "")
    earn = round(float(item.points) * min(max(float(out.fraction), 0.0), 1.0), 2)
    source = "records" if probe or item.check == "model_architecture" else "outputs"  # a model is only recorded
    would = (f"{out.status} from the {source}: {earn:g} of {float(item.points):g} "
             f"points; {out.message.rstrip('.')}")
    return Outcome("manual", 0.0, f"{taken}the grader could not confirm this item: no model of {data} was captured "
                                  f"and tested by the grader in {name} ({why}), so a TA checks it; this is not a "
                                  f"finding against you ({would}).",
                   out.evidence or (where(ev),), tuple(dict.fromkeys((*out.flags, UNCONFIRMED))), own_words=True)


def run_checks(rubric: Rubric, *, student_id: str, evidence: Sequence[Mapping], files: Sequence[Mapping],
               work_dir: str | None, reference: Mapping | None,
               dataset_stats: Mapping[str, Mapping],
               sources: Sequence[Source] | None = None,
               unreadable: Sequence[Mapping] = (),
               test_split_sizes: Mapping[str, int] | None = None,
               report_sections: Sequence[str] = ()) -> tuple[dict[str, CheckResult], list[str]]:
    """Every item's result, and the flags the checks raised (e.g. `mismatch`).

    Each part's items read one notebook (or one section of one), from `sources` (computed
    here with `choose_sources` when not given); `ignored-notebook` is raised when a candidate
    notebook was graded for no part.

    `unreadable` lists files intake found but could not read (`{"path", "reason"}`, and `what`
    for other than a notebook, e.g. "could not be opened" for a zip): a part they would serve
    says "found but unreadable", naming the file and why, not "not found".

    `test_split_sizes` maps a dataset to the images in its mounted test split (a test_metrics
    item's bar); a dataset not in it has its size read from the runs. `report_sections`: the
    lab's (lab.yaml), asked for by a `report_sections` item that names none.
    """
    common = dict(student_id=student_id, evidence=evidence, files=files, work_dir=work_dir,
                  reference=reference, dataset_stats=dataset_stats, test_split_sizes=test_split_sizes,
                  report_sections=report_sections)
    if sources is None:
        sources = choose_sources(rubric, **common)  # type: ignore[arg-type]
    common["rubric_dir"] = rubric.base_dir
    by_part = {s.part_id: s for s in sources}
    results: dict[str, CheckResult] = {}
    flags: set[str] = {"ignored-notebook"} if ignored_paths(sources) else set()
    if better_ignored(sources):
        flags.add("better-copy-ignored")
    for part_id, spec, items, _ in _groups(rubric):
        source = by_part.get(part_id)
        if spec is None:
            serving: list[Mapping] = list(evidence)
        else:
            serving = [source.chosen.view] if source and source.chosen else []
        unread = None if serving else (_unreadable_message(part_id, spec, unreadable)
                                       or _unrecognised_message(part_id, spec, evidence, sources))
        for item in items:
            ctx = _context(item, part_id, spec, serving, **common)  # type: ignore[arg-type]
            if KINDS[item.check].by_hand:
                hint = run_check(item.hint.check, ctx, item.hint.params) if item.hint else None
                # The hint is for the TA only: it goes into the evidence pointers, not the message.
                tip = (f"TA hint ({item.hint.check}): {hint.status}: {hint.message}",) if hint else ()
                results[item.id] = CheckResult(item.id, "manual", 0.0, MANUAL_MESSAGE,
                                               tip + tuple(hint.evidence if hint else ()))
                continue
            out = run_check(item.check, ctx, item.params)
            if serving and serving[0].get("attributed") == "text" and item.check not in FILE_CHECKS:
                out = _from_text(out, serving[0], part_id, spec.dataset if spec else None)
            elif serving and spec is not None and source and source.chosen \
                    and _needs_host(item, serving[0], source.chosen.ev, spec.dataset):
                out = _unconfirmed(out, item, serving[0], part_id, spec.dataset)
            flags.update(out.flags)
            fraction = min(max(float(out.fraction), 0.0), 1.0)
            # With no notebook for the part, the rubric's generic feedback ("the notebook
            # stopped with an error") would mislead; the check's own sentence says what is missing.
            message = out.message if (not serving and item.check not in FILE_CHECKS) or out.own_words \
                else _message(item, out.status, out.message)
            if unread and item.check not in FILE_CHECKS:
                message = unread
            results[item.id] = CheckResult(item.id, out.status, fraction, message, tuple(out.evidence))
    return results, sorted(flags)
