"""Which notebook (and which section of it) each rubric part is graded on: exactly one.

The rule, stated once (`RULE`, shown in the feedback and in the rubric's comments):

1. Candidates are the notebooks whose file name matches one of the part's `patterns`; when
   none does, the notebooks that trained or evaluated a model on the part's `dataset` (the
   probe's sessions; in saved mode the code that trains or evaluates): copying, listing or
   opening its files is not working on it, and neither is a guess from the notebook's text. `.ipynb_checkpoints/`
   copies are never candidates (intake already drops them as junk). A part whose notebook is
   not `shared` (the GAN lab's: one model per notebook) takes no notebook that another part on
   its dataset names better (by an earlier pattern), nor by dataset one that another part
   names at all, unless a section of it is headed for this part.
2. Names first: a plain name beats one marked as a copy (`Copy of`, `(1)`, `-checkpoint`,
   `copy`, `draft`, `old`, `backup`, ...), and a name matching an earlier pattern beats one
   matching a later pattern. The student's own name for the file says which one they meant;
   a marked copy is a leftover far more often than the final version.
3. Among equal names, the most complete run: one that shows something for the part's items,
   then one that ran without errors, then fewer errors, then more of the part's points.
4. The part is graded on the chosen one alone; every other candidate is listed, with why,
   for the TA and the student (and a complete run that lost on its name is said to be one).

A notebook holding several sections (`grader.sections`) serves each part with the section
whose heading matches the part's patterns (`# LAB 1-3`), on the part's dataset first, else
on any (LAB 1-3 may study Food-11); with no such heading, the section on the part's dataset,
and when it has several, the parts on that dataset take them in order.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable, Mapping, Sequence

from grader.checks import KINDS, run_check
from grader.checks.base import CheckContext
from grader.corroborate import verified_blocks, verified_for
from grader.parsers.classes import CLASS_SETS, dataset_of_classes
from grader.sections import view

RULE = ("One notebook is graded per part: of the notebooks whose name matches the part (else those "
        "that trained or evaluated on its dataset), a plain name beats a copy (`Copy of`, `(1)`, `-checkpoint`, `draft`, "
        "`old`, `backup`), then the most complete run wins (something shown for the part, then no errors, "
        "then fewer errors, then more points). A notebook holding several parts is graded part by part, "
        "each on its own cells.")
# Checks that say nothing about how much of the part a candidate shows: those reading files
# or every notebook, and the run's own status (rule step 3 weighs that first, on its own).
_NOT_SCORED = frozenset(k for k, spec in KINDS.items() if not spec.ranks_candidates)
_MARKS = re.compile(r"(?<![a-z0-9])(copy|checkpoint|draft|old|backup|bak|tmp|temp|scratch|untitled|unused)"
                    r"(?![a-z])|\(\d+\)|副本|複製|复制|舊|旧|備份|备份|草稿", re.IGNORECASE)
_STATUS_RANK = {"ok": 0, "error": 1, "timeout": 2, "killed": 2, "not-run": 3}


@dataclass(frozen=True)
class Candidate:
    """One notebook (or some of its sections) that could serve a part."""

    ev: Mapping[str, Any]
    """The notebook's whole evidence."""
    view: Mapping[str, Any]
    """What the part's checks read: the evidence cut to `sections` (or the whole of it)."""
    sections: tuple[str, ...]
    """Section ids the view is made of; empty for the whole notebook."""
    pattern: int
    """Index of the first of the part's patterns the name matches; len(patterns) when chosen by dataset."""
    marks: tuple[str, ...]
    """Copy markers in the path (`copy`, `(1)`, ...)."""
    score: float = 0.0
    """Points the part's notebook checks give this candidate alone."""

    @property
    def path(self) -> str:
        return str(self.ev.get("path", "?"))

    def key(self) -> tuple:
        """Sort key: smaller is better (rule steps 2 and 3)."""
        errors = len(self.view.get("errors") or [])
        return (bool(self.marks), self.pattern, self.score <= 0,
                _STATUS_RANK.get(str(self.view.get("status")), 3), errors, -self.score, self.path)


@dataclass(frozen=True)
class Source:
    """The notebook a part is graded on, and the candidates that were not."""

    part_id: str
    title: str
    chosen: Candidate | None
    why: str
    """One sentence: why this one (empty when there was only one candidate)."""
    ignored: tuple[tuple[Candidate, str], ...] = ()
    """Every other candidate, with one or two sentences on why it was not graded."""
    basis: str = ""
    """`why` without what it was preferred over (`settle` words that once the parts are known)."""


def is_checkpoint(path: str) -> bool:
    return ".ipynb_checkpoints" in PurePosixPath(path).parts


def marks(path: str) -> tuple[str, ...]:
    """Copy markers in a path: `Copy of lab1-1.ipynb` -> ('copy',)."""
    return tuple(dict.fromkeys(m.group(0).lower() for m in _MARKS.finditer(path)))


def _norm_title(text: str) -> str:
    """`Lab 1.2 – Food` -> `lab 1-2 - food`: headings write part numbers in many ways."""
    return re.sub(r"(\d)\s*[._\u2013\u2014-]\s*(?=\d)", r"\1-", text.lower())


def _match(name: str, patterns: Sequence[str]) -> int | None:
    return next((k for k, p in enumerate(patterns) if fnmatch.fnmatch(name, p.lower())), None)


def named_for(path: str, spec: Any) -> bool:
    """Whether the file at `path` is named like the part `spec` describes (its patterns)."""
    return _match(path.rsplit("/", 1)[-1].lower(), spec.patterns) is not None


# ---------------------------------------------------------------- sections of one notebook


def _on(section: Mapping[str, Any], dataset: str) -> bool:
    return section.get("dataset") == dataset or (section.get("metrics") or {}).get("dataset") == dataset


def _owner(titles: Sequence[Any], specs: Sequence[Any]) -> tuple[str, ...] | None:
    """The patterns of the part that `titles` (most prominent first) name best, if one does."""
    best: tuple[int, tuple[str, ...]] | None = None
    tied = False
    for title in titles:
        if not title:
            continue
        for spec in specs:
            k = _match(_norm_title(str(title)), spec.patterns)
            if k is not None and (best is None or k < best[0]):
                best, tied = (k, tuple(spec.patterns)), False
            elif k is not None and best is not None and k == best[0] and tuple(spec.patterns) != best[1]:
                tied = True
        if best is not None:
            break  # the most prominent heading that matches anything decides
    return None if best is None or tied else best[1]


def section_owner(section: Mapping[str, Any], specs: Sequence[Any]) -> tuple[str, ...] | None:
    """The part (its patterns) a section's headings name: its own headings against every part
    (`## LAB 1-3` over a Food-11 study is LAB 1-3's, whatever the dataset), else the heading
    it sits under against the parts on its dataset."""
    own = section.get("headings") or []
    if own and (owner := _owner([section.get("title"), *own], specs)) is not None:
        return owner
    return _owner([section.get("title"), *own], [sp for sp in specs if _on(section, sp.dataset)])


def _runs(sections: Sequence[Mapping[str, Any]], owners: Mapping[str, Any],
          position: Mapping[str, int]) -> list[tuple[tuple[str, ...] | None, list[str]]]:
    """`sections` (in order) in groups: one part's sections, with the untitled ones right after
    them (a continuation), unless a learning-rate study follows a single run or the reverse."""
    groups: list[tuple[tuple[str, ...] | None, list[str], Mapping[str, Any]]] = []
    for s in sections:
        owner = owners[s["id"]]
        if groups:
            g_owner, ids, last = groups[-1]
            contiguous = position[s["id"]] == position[last["id"]] + 1 \
                and bool(s.get("rate_study")) == bool(last.get("rate_study"))
            if (owner is None and contiguous) or (owner is not None and owner == g_owner):
                ids.append(s["id"])
                groups[-1] = (g_owner or owner, ids, s)
                continue
        groups.append((owner, [s["id"]], s))
    return [(owner, ids) for owner, ids, _ in groups]


def section_ids(ev: Mapping[str, Any], spec: Any, specs: Sequence[Any]) -> tuple[str, ...] | None:
    """The sections of `ev` that serve a part with notebook `spec`: () for the whole notebook,
    None when the notebook has sections but none for the part.

    In turn: the sections on the part's dataset whose headings name it; those on another
    dataset whose own headings name it (a heading beats the dataset); the untitled ones on
    its dataset, taken in order by the parts on that dataset that no heading names; else
    the last of its dataset's sections."""
    sections = [s for s in ev.get("sections") or [] if isinstance(s, Mapping) and isinstance(s.get("id"), str)]
    if len(sections) < 2 or spec is None or not spec.dataset:
        return ()
    position = {s["id"]: k for k, s in enumerate(sections)}
    owners = {s["id"]: section_owner(s, specs) for s in sections}
    mine = tuple(spec.patterns)
    on = [s for s in sections if _on(s, spec.dataset)]
    groups = _runs(on, owners, position)
    owned = [ids for owner, ids in groups if owner == mine]
    if not owned:
        owned = [ids for owner, ids in _runs([s for s in sections if not _on(s, spec.dataset)], owners, position)
                 if owner == mine]
    if owned:
        ids = owned[0]
    elif not groups:
        return None
    else:  # no heading names this part: the parts on this dataset that no heading names take
        # the untitled groups in order
        named = set(owners.values())
        slots = list(dict.fromkeys(tuple(sp.patterns) for sp in specs
                                   if sp.dataset == spec.dataset and tuple(sp.patterns) not in named))
        free = [ids for owner, ids in groups if owner is None] or [groups[-1][1]]
        ids = free[min(slots.index(mine) if mine in slots else len(free) - 1, len(free) - 1)]
    return () if len(ids) == len(sections) else tuple(ids)  # all of it: the whole notebook


# ---------------------------------------------------------------- candidates and the choice


def _claimed(name: str, k: int | None, spec: Any, specs: Sequence[Any]) -> bool:
    """Whether another part on `spec`'s dataset names the file `name` (lower case) better, for a
    part whose notebook is not `shared`: by a pattern of its own (one `spec` does not also list)
    where `spec` matches it by none or by a pattern both list (`*gan*`), or, both by their own,
    by an earlier one than `spec`'s (`k`: the index of `spec`'s match, None for none). Parts on
    one dataset cannot tell their notebooks apart by the dataset, so the name decides: a
    `cgan.ipynb` is the cGAN part's, not the GAN part's by the catch-all `*gan*`, nor the GAN
    part's by the dataset when no GAN notebook was handed in."""
    if getattr(spec, "shared", True):
        return False
    for other in specs:
        if other is spec or tuple(other.patterns) == tuple(spec.patterns) or other.dataset != spec.dataset:
            continue
        j = _match(name, other.patterns)
        if j is None or other.patterns[j] in spec.patterns:
            continue  # no claim, or only by a pattern both parts list
        if k is None or spec.patterns[k] in other.patterns or j < k:
            return True
    return False


def _candidates(spec: Any, specs: Sequence[Any], evidence: Sequence[Mapping[str, Any]]) -> list[Candidate]:
    usable = [ev for ev in evidence if not is_checkpoint(str(ev.get("path", "")))]
    named = [(ev, k) for ev in usable
             if (k := _match(PurePosixPath(str(ev.get("path", ""))).name.lower(), spec.patterns)) is not None]
    found: list[Candidate] = []
    for ev, k in named:
        ids = section_ids(ev, spec, specs)
        if _claimed(PurePosixPath(str(ev.get("path", ""))).name.lower(), k, spec, specs) \
                and not _headed(ev, ids or (), spec, specs):
            continue  # another part's notebook by its name, with no section headed for this part
        found.append(Candidate(ev, view(ev, ids) if ids else ev, ids or (), k, marks(str(ev.get("path", "")))))
    if found or not spec.dataset:
        return found
    for ev in usable:
        ids = section_ids(ev, spec, specs)
        if ids is None:
            continue
        if _claimed(PurePosixPath(str(ev.get("path", ""))).name.lower(), None, spec, specs) \
                and not _headed(ev, ids, spec, specs):
            continue
        seen = view(ev, ids) if ids else ev
        if not _works_on(ev, seen, ids, spec, specs):
            continue
        used = worked_on(seen)
        if ev.get("mode") == "execute" and spec.dataset not in (used or set()):
            # taken by what its text names, not by what its run did: grading.run_checks credits
            # no item of the part from it alone (`unnamed`: the datasets the probe could not name)
            seen = dict(seen, attributed="text", unnamed=sorted((used or set()) - set(CLASS_SETS)))
        elif (other := _verified_elsewhere(ev, spec.dataset)) and not _headed(ev, ids, spec, specs):
            # only the probe's records (which the student's code can write) say it worked on the
            # part's dataset, while the model the host evaluated itself was tested on another:
            # taken, but every item goes to a TA (grading.run_checks)
            seen = dict(seen, attributed="probe", verified_on=other)
        found.append(Candidate(ev, seen, ids, len(spec.patterns), marks(str(ev.get("path", "")))))
    return found


def _verified_elsewhere(ev: Mapping[str, Any], dataset: str) -> str | None:
    """The dataset(s) the independent evaluation tested an executed notebook's captured models
    on, when none of them is `dataset` (`grader.corroborate.verified_for`), else None."""
    if ev.get("mode") != "execute" or verified_for(ev, dataset) is not None:
        return None
    others = sorted({v["dataset"] for v in verified_blocks(ev) if isinstance(v.get("dataset"), str)})
    return ", ".join(others) or None


def _headed(ev: Mapping[str, Any], ids: Sequence[str], spec: Any, specs: Sequence[Any]) -> bool:
    """Whether sections `ids` of `ev` are the part's by their own headings (not the records)."""
    mine = tuple(spec.patterns)
    return bool(ids) and all(section_owner(sec, specs) == mine and sec.get("headings")
                             for sec in ev.get("sections") or [] if sec.get("id") in ids)


def _works_on(ev: Mapping[str, Any], seen: Mapping[str, Any], ids: Sequence[str], spec: Any,
              specs: Sequence[Any]) -> bool:
    """Whether `seen` (`ev`, or its sections `ids`) may serve `spec`'s part by its dataset.

    By dataset, only what really trained or evaluated on it counts: a notebook that copies,
    lists or opens Food-11's files while training on CIFAR-10 (or on nothing) is no Food-11
    notebook, whatever its text names. Sections of an executed notebook are already cut by
    what the probe saw run; a saved notebook's are cut by the datasets its code names, so
    theirs must also train or evaluate on the part's dataset, unless their own headings name
    the part (`## LAB 1-3` over a Food-11 study)."""
    used = worked_on(seen)
    if not ids:
        if used is None:  # the run gave nothing (its probe never started): its text, crediting nothing
            return spec.dataset in {ev.get("dataset"), (ev.get("metrics") or {}).get("dataset")}
        return spec.dataset in used or _maybe_unnamed(seen, used, spec.dataset)
    if ev.get("mode") != "saved" or used is None or spec.dataset in used:
        return True
    mine = tuple(spec.patterns)
    return all(section_owner(sec, specs) == mine and sec.get("headings")
               for sec in ev.get("sections") or [] if sec.get("id") in ids)


def _maybe_unnamed(seen: Mapping[str, Any], used: set[str], dataset: str) -> bool:
    """Whether an executed run that fed its models from a dataset the probe could not name may
    have worked on `dataset`: nothing it showed says which dataset that was, or its clues allow
    `dataset` among others, or disagree. The grader cannot tell, so the part is not failed
    for it: the notebook is taken, by its text, for a TA to confirm (see `_candidates`)."""
    if seen.get("mode") != "execute" or not used - set(CLASS_SETS):
        return False
    hints = unnamed_hints(seen)
    return hints is None or not hints or dataset in hints


def worked_on(ev: Mapping[str, Any]) -> set[str] | None:
    """The datasets a notebook (or a view of some of its sections) trained or evaluated a
    model on: the probe's training and evaluation sessions in execute mode (and the dataset the
    independent evaluation tested its captured model on), the cells whose
    code trains or evaluates on a dataset in saved mode (`data_use`, read statically) or the
    dataset whose classes its stored per-class accuracy names. None
    when the evidence cannot tell: saved evidence written before `data_use` existed, or a run
    whose probe never started or left no record (it saw nothing, which is not "trained on
    nothing")."""
    if ev.get("mode") == "saved" and not isinstance(ev.get("data_use"), list):
        return None
    probe = ev.get("probe")
    if ev.get("mode") == "execute" and not (isinstance(probe, Mapping) and probe.get("started", True)):
        return None
    recs = [*(ev.get("training") or []), *(ev.get("evaluations") or []), *(ev.get("data_use") or [])]
    used = {r["dataset"] for r in recs if isinstance(r, Mapping) and isinstance(r.get("dataset"), str) and r["dataset"]}
    if ev.get("mode") == "execute" and (unnamed := used - set(CLASS_SETS)):
        # a dataset the probe could not name (a TensorDataset of cached arrays): what the
        # model it fed and the run's own outputs say it was, when they agree on one
        hints = unnamed_hints(ev)
        if hints is not None and len(hints) == 1:
            used = (used - unnamed) | hints
    if ev.get("mode") == "execute":  # the host evaluated its trained models on these datasets' test splits
        used.update(v["dataset"] for v in verified_blocks(ev) if isinstance(v.get("dataset"), str))
    metrics = ev.get("metrics") or {}
    per_class = metrics.get("per_class_accuracy") or {}
    if ev.get("mode") == "saved" and per_class and set(per_class) <= set(CLASS_SETS.get(metrics.get("dataset"), ())):
        # a stored per-class accuracy in a dataset's own classes is an evaluation on it, also
        # when the code reads the data in a way the static reading cannot name
        used.add(metrics["dataset"])
    return used


def unnamed_hints(ev: Mapping[str, Any]) -> set[str] | None:
    """The lab datasets that data an executed run fed its models, from datasets the probe could
    not name (a TensorDataset of cached arrays), may be: the datasets that every clue allows.
    Clues: the output count of the models fed from it (11 outputs: Food-11; 10: CIFAR-10 or
    MNIST), the classes those datasets report, the classes its printed per-class accuracy
    names, and the dataset the independent evaluation tested the captured model on. None when nothing says; an empty set when the clues disagree."""
    recs = [r for r in [*(ev.get("training") or []), *(ev.get("evaluations") or [])]
            if isinstance(r, Mapping) and isinstance(r.get("dataset"), str) and r["dataset"] not in CLASS_SETS]
    names = {r["dataset"] for r in recs}
    clues: list[set[str]] = []
    for m in ev.get("models") or []:
        if isinstance(m, Mapping) and isinstance(m.get("num_outputs"), int) and any(
                r.get("model_ref") == m.get("ref") if r.get("model_ref") is not None
                else r.get("model") in (m.get("names") or []) for r in recs):
            clues.append({d for d, known in CLASS_SETS.items() if len(known) == m["num_outputs"]})
    for d in ev.get("datasets") or []:
        if isinstance(d, Mapping) and d.get("dataset") in names and d.get("classes"):
            found = dataset_of_classes([str(c) for c in d["classes"]])
            clues.append({found} if found else set())
    per_class = (ev.get("metrics") or {}).get("per_class_accuracy") or {}
    if isinstance(per_class, Mapping) and per_class:
        clues.append({d for d, known in CLASS_SETS.items() if set(per_class) <= set(known)})
    tested = {v["dataset"] for v in verified_blocks(ev) if v.get("dataset") in CLASS_SETS}
    if tested:
        clues.append(tested)  # the host tested a captured model on one of these datasets
    return set.intersection(*clues) if clues else None


def _state(c: Candidate) -> str:
    v = c.view
    status = str(v.get("status"))
    errors = v.get("errors") or []
    if status == "ok" and not errors:
        return "ran without errors"
    if errors:
        e = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"stopped with {e.get('ename') or 'an error'} in cell {e.get('cell') or e.get('index')}{more}"
    return {"timeout": "ran out of time", "killed": "was stopped by the grader"}.get(status, "did not run")


def _why_not(lost: Candidate, won: Candidate, max_points: float) -> str:
    """Why `lost` was not graded, from the first rule step that tells them apart."""
    a, b = f"`{won.path}`", f"`{lost.path}`"
    if bool(lost.marks) != bool(won.marks):
        text = f"its name marks it as a copy ({', '.join(f'`{m}`' for m in lost.marks)}) and {a} has a plain name"
    elif lost.pattern != won.pattern:
        text = f"{a}'s name matches the part's name patterns more closely"
    elif (lost.score <= 0) != (won.score <= 0):
        text = f"it shows nothing for this part's items and {a} does"
    elif lost.key()[3:5] != won.key()[3:5]:
        text = f"{a} {_state(won)} and {b} {_state(lost)}"
    elif lost.score != won.score:
        text = f"{a} shows more of this part (results worth {won.score:g} vs {lost.score:g} of {max_points:g} points)"
    else:
        text = f"both are equally complete and {a} comes first by name"
    note = ""
    if lost.key()[2:6] < won.key()[2:6]:  # it lost on its name but is the more complete run
        results = (f" and its results would earn {lost.score:g} of {max_points:g} points against {won.score:g}"
                   if lost.score != won.score else "")
        note = (f" Note: {b} {_state(lost)}{results}; if it is the one you meant to hand in, ask the TA to "
                f"grade it instead.")
    elif _state(lost) != "ran without errors" and b not in text:
        note = f" It {_state(lost)}; that does not count against this part."
    return f"{b} was not graded: {text}.{note}"


def choose(part_id: str, title: str, spec: Any, specs: Sequence[Any], items: Sequence[Any],
           evidence: Sequence[Mapping[str, Any]], *,
           context: Callable[[Any, Mapping[str, Any]], CheckContext]) -> Source:
    """The one candidate a part is graded on. `context(item, view)` is the CheckContext the
    item's check would get with `view` as the part's only notebook (to score candidates)."""
    found = _candidates(spec, specs, evidence)
    if not found:
        return Source(part_id, title, None, "")
    auto = [it for it in items if it.check not in _NOT_SCORED]
    max_points = float(sum(it.points for it in auto))
    scored = []
    for c in found:
        score = 0.0
        for it in auto if len(found) > 1 else ():  # a lone candidate needs no score
            out = run_check(it.check, context(it, c.view), it.params)
            if out.status in ("pass", "partial"):
                score += it.points * min(max(float(out.fraction), 0.0), 1.0)
        scored.append(Candidate(c.ev, c.view, c.sections, c.pattern, c.marks, round(score, 2)))
    scored.sort(key=Candidate.key)
    won, rest = scored[0], scored[1:]
    how = f"its name matches `{spec.patterns[won.pattern]}`" if won.pattern < len(spec.patterns) \
        else f"it trains or evaluates on {spec.dataset}"
    if won.sections:
        sec = won.view.get("section") or {}
        first, last = sec.get("span") or (-1, -1)
        how += f" (its cells {first + 1}–{last + 1}, the section on {sec.get('dataset')}" \
               + (f" under “{sec['title']}”" if sec.get("title") else "") + ")"
    basis = f"`{won.path}` is graded for this part: {how}"
    why = basis + (f"; it was preferred over {len(rest)} other candidate(s)." if rest else ".")
    return Source(part_id, title, won, why, tuple((c, _why_not(c, won, max_points)) for c in rest), basis)


def settle(sources: Sequence[Source]) -> list[Source]:
    """Drops from each part's ignored list the notebooks another part is graded on: only a
    notebook graded for no part at all was really left out. `why` then counts only those, and
    names the part each other candidate serves (`_v1` preferred for LAB 1-1 but graded for
    LAB 1-3 is not "preferred over 1 other" with nothing ignored)."""
    serves: dict[str, list[str]] = {}
    for s in sources:
        if s.chosen:
            serves.setdefault(s.chosen.path, []).append(s.title or s.part_id)
    out = []
    for s in sources:
        kept = tuple((c, r) for c, r in s.ignored if c.path not in serves)
        why = s.why
        if s.basis and len(kept) != len(s.ignored):
            elsewhere = [f"`{c.path}` is graded for {' and '.join(serves[c.path])}"
                         for c, _ in s.ignored if c.path in serves]
            why = s.basis + (f"; it was preferred over {len(kept)} other candidate(s)" if kept else "") \
                + f" ({'; '.join(elsewhere)})."
        out.append(Source(s.part_id, s.title, s.chosen, why, kept, s.basis))
    return out


def better_ignored(sources: Sequence[Source]) -> list[tuple[str, str]]:
    """(path, reason) of each notebook graded for no part although it is the more complete run
    (it lost on its name alone: `lab1-1 (1).ipynb` beside a broken `lab1-1.ipynb`), once per
    notebook, with the reason of the part where it would earn most. Its points are lost unless a
    TA acts, so this must reach the TA's tables and the student, not only the feedback PDF."""
    graded = {s.chosen.path for s in sources if s.chosen}
    best: dict[str, tuple[float, str]] = {}
    for s in sources:
        for c, reason in s.ignored:
            if s.chosen is None or c.path in graded or not c.key()[2:6] < s.chosen.key()[2:6]:
                continue
            gain = c.score - s.chosen.score
            if c.path not in best or gain > best[c.path][0]:
                best[c.path] = (gain, reason)
    return [(path, reason) for path, (_, reason) in sorted(best.items())]


def to_json(sources: Sequence[Source]) -> dict[str, Any]:
    """The grade's `sources` entry: part id -> where it was graded, and what was not."""
    out: dict[str, Any] = {}
    for s in sources:
        c = s.chosen
        sec = (c.view.get("section") or {}) if c else {}
        out[s.part_id] = {
            "title": s.title, "notebook": c.path if c else None, "sections": list(c.sections) if c else [],
            "span": sec.get("span"), "section_title": sec.get("title"), "dataset": sec.get("dataset"),
            "why": s.why, "ignored": [{"notebook": ig.path, "sections": list(ig.sections), "reason": reason}
                                      for ig, reason in s.ignored]}
    return out


def ignored_paths(sources: Sequence[Source]) -> list[str]:
    """Notebooks that were a candidate for some part and are graded for none."""
    graded = {s.chosen.path for s in sources if s.chosen}
    return sorted({ig.path for s in sources for ig, _ in s.ignored} - graded)


def report_evidence(evidence: Sequence[Mapping[str, Any]], sources: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The notebooks as the feedback shows them: a notebook graded part by part appears once
    per section it was graded on (cut to that section), each says which part(s) it was graded
    for, and a notebook graded for no part says why it was left out."""
    out: list[dict[str, Any]] = []
    for ev in evidence:
        path = ev.get("path")
        uses = [(pid, s) for pid, s in sources.items() if isinstance(s, Mapping) and s.get("notebook") == path]
        left: dict[str, list[str]] = {}  # reason -> the parts it was given for
        for pid, s in sources.items():
            for ig in (s.get("ignored") or []) if isinstance(s, Mapping) else []:
                if ig.get("notebook") == path:
                    left.setdefault(str(ig.get("reason")), []).append(str(s.get("title") or pid))
        by_sections: dict[tuple[str, ...], list[tuple[str, Mapping[str, Any]]]] = {}
        for pid, s in uses:
            by_sections.setdefault(tuple(s.get("sections") or ()), []).append((pid, s))
        if not by_sections:
            out.append(dict(ev, not_graded=[f"For {' and '.join(parts)}: {reason}" for reason, parts in left.items()]))
            continue
        for ids, parts in by_sections.items():
            shown = dict(view(ev, ids)) if ids else dict(ev)
            shown["graded_for"] = [str(s.get("title") or pid) for pid, s in parts]
            if ids:  # compared with the reference of the part this section is
                shown["part"] = next((pid for pid, _ in parts if pid != "bonus"), parts[0][0])
            out.append(shown)
    return out
