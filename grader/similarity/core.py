"""`dllab similarity OUT [--against DIR]...`: pairs of submissions whose code or outputs match.

Every pair of the class is compared on its own code (grader.similarity.code: winnowing, handout
and common code removed) and on its outputs (grader.similarity.outputs: identical training logs,
per-class tables, figures); with `--against`, every student is also compared with the graded
folders of earlier terms (read, never re-graded). A pair over the lab's thresholds (the rubric's
`similarity:`) is flagged on both grades as `similar-to:<id>` (for a TA; never a deduction, and
never shown to the student), and listed on the class page `OUT/similarity.html` with a
side-by-side view of the matching regions `OUT/similarity/<a>--<b>.html`. Results are written to
`OUT/similarity.json` (atomically), which grading and rescoring read for the flags.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from grader.errors import GraderError
from grader.fsutil import write_json_atomic
from grader.similarity.code import CodeDoc, compare, fingerprint, handout_code, segments, submission_code

Log = Callable[[str], None]
RESULTS = "similarity.json"
FLAG = "similar-to:"
MAX_LISTED = 40
"""Unflagged pairs listed on the class page for context (the highest scores)."""


@dataclass(frozen=True)
class Member:
    """One submission compared: of this class (`term` empty) or of an earlier term's folder."""

    student_id: str
    term: str
    out: Path

    @property
    def label(self) -> str:
        """The id as pages show it: `0556001`, or `2024/0556001` for an earlier term."""
        return f"{self.term}/{self.student_id}" if self.term else self.student_id


def members(out: Path, term: str = "") -> list[Member]:
    """The submissions graded in OUT (from runs/*/submission.json)."""
    found = []
    for p in sorted(Path(out).glob("runs/*/submission.json")):
        try:
            sid = json.loads(p.read_text(encoding="utf-8")).get("student_id")
        except (OSError, ValueError):
            continue
        if isinstance(sid, str) and sid:
            found.append(Member(sid, term, Path(out)))
    return found


def flags_for(out: Path, student_id: str) -> set[str]:
    """`similar-to:<id>` flags OUT/similarity.json gives this student (empty when none or unreadable)."""
    try:
        data = json.loads((Path(out) / RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    flags = data.get("flags") if isinstance(data, dict) else None
    got = flags.get(student_id) if isinstance(flags, dict) else None
    return {f"{FLAG}{x}" for x in got if isinstance(x, str)} if isinstance(got, list) else set()


def run_similarity(out: Path, *, against: Sequence[Path] = (), handout: Sequence[Path] = (),
                   log: Log = lambda s: None) -> dict[str, Any]:
    """Compares every pair (and every student with `against`'s folders), writes OUT/similarity.json,
    the class page and the side-by-side pages; returns the results. Raises GraderError when OUT is
    not a graded folder or an `against` folder holds no graded submission."""
    from grader import config
    from grader.rubric import load_rubric

    out = Path(out)
    t0 = time.monotonic()
    if not (out / "settings.json").is_file():
        raise GraderError(f"{out} is not a graded output folder (no settings.json): run `dllab grade` first")
    settings = config.load(out)
    rubric = load_rubric(settings.rubric_path, base_dir=settings.lab_dir)
    th = rubric.similarity
    mine = members(out)
    if len(mine) < 1:
        raise GraderError(f"{out} holds no graded submission")
    missing = [str(h) for h in handout if not Path(h).is_file()]
    if missing:
        raise GraderError(f"--handout {', '.join(missing)}: no such file")
    others: list[Member] = []
    for folder, term in _terms(out, against):
        found = members(Path(folder), term=term)
        if not found:
            raise GraderError(f"--against {folder}: no graded submission there (runs/*/submission.json)")
        others += found
    everyone = mine + others
    docs = {m.label: submission_code(m.out, m.student_id) for m in everyone}
    handouts = [*rubric.handout_paths(), *map(Path, handout), *_lab_handout(settings.lab_dir)]
    template = handout_code(handouts)
    fingerprint(list(docs.values()), handout=template, common_share=th.common_share)
    warning = ""
    if not template.strip() and len(everyone) < 8:
        warning = (f"no handout code is known and the class is small ({len(everyone)} submissions): code every "
                   "student got from the handout counts as their own here, so honest students may be paired; give "
                   "the handout with --handout or the rubric's `handout:`")
        log(f"similarity: {warning}")
    removed = "handout and common code removed" if template.strip() else "common code removed; no handout known"
    prints = _output_prints(everyone)
    common = _common_outputs(list(prints.values()), th.common_share)
    pairs = []
    for a, b in _candidates(mine, others, docs, prints):
        match = compare(docs[a.label], docs[b.label])
        outputs = _compare_outputs(prints.get(a.label), prints.get(b.label), common)
        code_hit = match.score >= th.code and match.overlap >= th.min_overlap
        out_hit = outputs is not None and float(outputs.get("score") or 0) >= th.outputs
        reasons = []
        if code_hit:
            reasons.append(f"{math.floor(match.score * 100)}% of one's own code ({removed}) is in the other's")
        if out_hit:
            reasons += [str(r) for r in outputs.get("reasons") or []][:4]  # type: ignore[union-attr]
        pairs.append({"a": a.label, "b": b.label, "a_term": a.term, "b_term": b.term,
                      "code": {"score": match.score, "share_a": match.share_a, "share_b": match.share_b,
                               "overlap": match.overlap},
                      "outputs": _public_outputs(outputs), "flagged": code_hit or out_hit, "reasons": reasons,
                      "_match": match})
    pairs.sort(key=lambda p: (not p["flagged"], -max(p["code"]["score"], p["outputs"]["score"]), p["a"], p["b"]))
    flags: dict[str, list[str]] = defaultdict(list)
    ids = {m.label: m.student_id for m in mine}
    for p in pairs:
        if p["flagged"]:
            for me, other in ((p["a"], p["b"]), (p["b"], p["a"])):
                if me in ids:  # an earlier term's grade is never touched
                    flags[ids[me]].append(other)
    listed = [p for p in pairs if p["flagged"]] + [p for p in pairs if not p["flagged"]][:MAX_LISTED]
    scores = sorted(p["code"]["score"] for p in pairs)
    result = {
        "lab": rubric.lab, "made": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "students": len(mine), "against": [str(Path(f).resolve()) for f in against], "earlier": len(others),
        "handout": [str(Path(h).resolve()) for h in handout], "warning": warning,
        "pairs_compared": len(mine) * (len(mine) - 1) // 2 + len(mine) * len(others),
        "pairs_scored": len(pairs), "thresholds": th.model_dump(),
        "code_scores": {"median": statistics.median(scores) if scores else 0.0,
                        "p95": scores[int(0.95 * (len(scores) - 1))] if scores else 0.0,
                        "max": scores[-1] if scores else 0.0},
        "flags": {k: sorted(set(v)) for k, v in sorted(flags.items())},
        "pairs": [{k: v for k, v in p.items() if not k.startswith("_")} for p in listed],
        "notes": {m.label: docs[m.label].notes for m in everyone if docs[m.label].notes},
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json_atomic(out / RESULTS, result)
    _pages(out, result, [p for p in listed if p["flagged"] or p["code"]["score"] > 0], docs, prints, everyone)
    log(f"similarity: {result['pairs_compared']} pairs compared, {sum(p['flagged'] for p in pairs)} flagged, "
        f"in {result['seconds']:.1f} s; {out / 'similarity.html'}")
    return result


def _terms(out: Path, against: Sequence[Path]) -> list[tuple[Path, str]]:
    """(folder, its label) for each earlier term: the folder's name, made unique with its parent's
    (`y2024-graded`) when two share one. Raises GraderError for OUT itself or a folder given twice."""
    me = Path(out).resolve()
    seen: dict[Path, str] = {}
    for folder in against:
        f = Path(folder).resolve()
        if f == me:
            raise GraderError(f"--against {folder} is the folder being checked; give an earlier term's graded folder")
        if f in seen:
            raise GraderError(f"--against {folder} is given twice")
        label = f.name
        if label in seen.values():
            label = f"{f.parent.name}-{f.name}"
        n = 2
        while label in seen.values():
            label, n = f"{f.name}-{n}", n + 1
        seen[f] = label
    return list(seen.items())


def _lab_handout(lab_dir: Path | None) -> list[Path]:
    """The lab package's handout/ notebooks and scripts (the code every student starts from)."""
    folder = Path(lab_dir) / "handout" if lab_dir else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".ipynb", ".py") and p.is_file())


def _candidates(mine: Sequence[Member], others: Sequence[Member], docs: Mapping[str, CodeDoc],
                prints: Mapping[str, Any]) -> list[tuple[Member, Member]]:
    """Pairs that share at least one code fingerprint or one output key: the only ones that can
    score above 0 (an inverted index instead of comparing all N² pairs)."""
    index: dict[Any, list[int]] = defaultdict(list)
    everyone = list(mine) + list(others)
    for i, m in enumerate(everyone):
        fp = docs[m.label].fp
        keys: set[Any] = set(fp.hashes) if fp is not None else set()
        keys |= {("out", k) for k in _output_keys(prints.get(m.label))}
        for k in keys:
            index[k].append(i)
    n_mine = len(mine)
    found: set[tuple[int, int]] = set()
    for ids in index.values():
        if len(ids) > 200:  # everyone's: removed as common already, or a key too frequent to mean copying
            continue
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                i, j = ids[x], ids[y]
                if i < n_mine or j < n_mine:  # an earlier term's pair is not this class's business
                    found.add((i, j))
    return [(everyone[i], everyone[j]) for i, j in sorted(found)]


# --------------------------------------------------------------------------- outputs (grader.similarity.outputs)

def _output_prints(everyone: Sequence[Member]) -> dict[str, Any]:
    try:
        from grader.similarity.outputs import output_prints
    except ImportError:
        return {}
    return {m.label: output_prints(m.out, m.student_id) for m in everyone}


def _common_outputs(prints: list[Any], share: float) -> set[str]:
    if not prints:
        return set()
    from grader.similarity.outputs import common_outputs

    return common_outputs(prints, share=share)


def _output_keys(p: Any) -> set[str]:
    if p is None:
        return set()
    return set(p.lines) | set(p.tables) | set(p.images)


def _compare_outputs(a: Any, b: Any, common: set[str]) -> dict[str, Any] | None:
    if a is None or b is None:
        return None
    from grader.similarity.outputs import compare_outputs

    return compare_outputs(a, b, common=common)


def _public_outputs(o: Mapping[str, Any] | None) -> dict[str, Any]:
    if not o:
        return {"score": 0.0, "lines": 0, "tables": 0, "images": 0}
    return {"score": float(o.get("score") or 0.0), "lines": len(o.get("lines") or []),
            "tables": len(o.get("tables") or []), "images": len(o.get("images") or [])}


# --------------------------------------------------------------------------- pages

def pair_page_name(a: str, b: str) -> str:
    """The side-by-side page's file name for a pair (safe names; `/` of an earlier term replaced)."""
    from grader.safename import safe_name

    return f"{safe_name(a.replace('/', '__'))}--{safe_name(b.replace('/', '__'))}.html"


def _pages(out: Path, result: Mapping[str, Any], pairs: Sequence[Mapping[str, Any]], docs: Mapping[str, CodeDoc],
           prints: Mapping[str, Any], everyone: Sequence[Member]) -> None:
    from grader.fsutil import write_text_atomic
    from grader.report.text import environment

    env = environment()
    folder = out / "similarity"
    folder.mkdir(exist_ok=True)
    by_label = {m.label: m for m in everyone}
    rows = []
    for p in pairs:
        name = pair_page_name(p["a"], p["b"])
        rows.append({**p, "page": f"similarity/{name}"})
        match = p.get("_match")
        if match is None:
            continue
        outputs = _compare_outputs(prints.get(p["a"]), prints.get(p["b"]), set()) if prints else None
        figures = [(_figure_src(runs_a, wa), _figure_src(runs_b, wb), wa.split(" · ")[0], wb.split(" · ")[0], d)
                   for _, _, wa, wb, d in (outputs or {}).get("images") or []
                   for runs_a, runs_b in [(_runs_link(out, by_label[p["a"]]), _runs_link(out, by_label[p["b"]]))]]
        html = env.get_template("similarity_pair.html.j2").render(
            pair=p, a=docs[p["a"]], b=docs[p["b"]], seg_a=segments(docs[p["a"]].text, match.slices_a),
            seg_b=segments(docs[p["b"]].text, match.slices_b),
            outputs={"lines": [], "tables": [], "images": [], **(outputs or {})}, figures=figures,
            runs_a=_runs_link(out, by_label[p["a"]]), runs_b=_runs_link(out, by_label[p["b"]]))
        write_text_atomic(folder / name, html)
    write_text_atomic(out / "similarity.html", env.get_template("similarity.html.j2").render(result=result, rows=rows))


def _figure_src(runs: str, where: str) -> str:
    """The figure's URL from its `where` ("<nb>#cell n · <path under the runs folder>"), or empty."""
    from urllib.parse import quote

    _, sep, rel = where.partition(" · ")
    return runs + quote(rel) if sep and rel.lower().endswith(".png") and ".." not in rel.split("/") else ""


def _runs_link(out: Path, m: Member) -> str:
    """A link from OUT/similarity/ to the member's runs folder (relative for this class)."""
    from grader.safename import safe_name

    if not m.term:
        return f"../runs/{safe_name(m.student_id)}/"
    return (m.out.resolve() / "runs" / safe_name(m.student_id)).as_uri() + "/"


def update(out: Path, *, against: Sequence[Path] = (), handout: Sequence[Path] = (),
           log: Log = lambda s: None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """run_similarity, then new grades (and feedback) for the students whose `similar-to:` flags
    changed; returns (the results, those new grades). Nothing is executed."""
    from grader import config
    from grader.rescore import rescore_students

    before = _all_flags(out)
    if not against and not handout:  # a later `grade` or `similarity` compares as the last one did
        against, handout = _last_options(out)
    result = run_similarity(out, against=against, handout=handout, log=log)
    after = {k: set(v) for k, v in result["flags"].items()}
    changed = sorted(s for s in set(before) | set(after) if before.get(s, set()) != after.get(s, set()))
    grades = rescore_students(changed, config.load(out), workers=1) if changed else []
    return result, grades


def _last_options(out: Path) -> tuple[list[Path], list[Path]]:
    """The --against folders and --handout files of the last run (those that still exist)."""
    try:
        data = json.loads((Path(out) / RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], []
    pick = lambda key, ok: [Path(x) for x in data.get(key) or [] if isinstance(x, str) and ok(Path(x))]
    return pick("against", Path.is_dir), pick("handout", Path.is_file)


def _all_flags(out: Path) -> dict[str, set[str]]:
    try:
        data = json.loads((Path(out) / RESULTS).read_text(encoding="utf-8"))
        return {str(k): set(v) for k, v in (data.get("flags") or {}).items() if isinstance(v, list)}
    except (OSError, ValueError, AttributeError):
        return {}


def with_similarity(out: Path, grades: list[dict[str, Any]], *, log: Log = lambda s: None) -> list[dict[str, Any]]:
    """The end of a batch (`grade`, `demo`): `update`, and the batch's grades with the re-scored
    ones in place. A failure is said and the grades stay as they are: integrity pairs are extra,
    never a crashed batch."""
    try:
        _, changed = update(out, log=log)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log(f"similarity could not be computed ({type(exc).__name__}: {exc}); run `dllab similarity {out}`")
        return grades
    new = {g["student_id"]: g for g in changed}
    return [new.get(g["student_id"], g) for g in grades]
