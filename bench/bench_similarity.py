"""`dllab similarity` on a class of N (default 200) LAB01 submissions: the time it takes, and the
code scores of honest pairs against copied pairs (what the lab's thresholds are chosen from).

The class: every student starts from the handout's cells (tests/test_similarity.py); each honest
student then writes three cells of their own (lines of the shapes students write, with names,
numbers and structure drawn at random: synthetic, but code of their own) and prints a training
log and a per-class table of their own numbers; every tenth student hands in a copy of an earlier
classmate's notebook with the names changed and the cells reordered.
Graded in saved mode (no kernel), then `dllab similarity` is timed alone.

    .venv/bin/python bench/bench_similarity.py [--students 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_similarity import HANDOUT, _log, _notebook, _rename, _table  # noqa: E402

NAMES = ["net", "model", "x", "y", "loss", "opt", "data", "batch", "acc", "total", "out", "pred", "i", "k"]
WORDS = ["alpha", "beta", "gamma", "val", "tmp", "res", "cnt", "buf", "cur", "nxt", "img", "lbl", "mdl", "crit"]


def _statement(r: random.Random) -> str:
    """One random line of the shapes students write (names, numbers, structure drawn at random):
    honest students write code of their own, so their normalized code differs in structure."""
    v = lambda: r.choice(NAMES + WORDS)
    n = lambda: str(r.choice([r.randint(0, 512), round(r.uniform(0, 1), r.randint(1, 4))]))
    shapes = [
        lambda: f"{v()} = {v()}({v()}, {n()})",
        lambda: f"{v()} += {v()} * {n()} - {v()}",
        lambda: f"for {v()} in range({n()}):\n    {v()}.{v()}({v()}[{n()}:])",
        lambda: f"if {v()} > {n()}:\n    print({v()}, {v()} / {n()})",
        lambda: f"{v()} = [{v()} ** {n()} for {v()} in {v()}]",
        lambda: f"{v()} = torch.{v()}({v()}, dim={r.randint(0, 3)}).{v()}()",
        lambda: f"def {v()}({v()}, {v()}={n()}):\n    return {v()} @ {v()} + {n()}",
        lambda: f"while {v()} < {n()}:\n    {v()} = {v()} // {r.randint(2, 9)}",
    ]
    return r.choice(shapes)()


def honest(r: random.Random, sid: int) -> list[tuple[str, str]]:
    """The handout's cells, then three cells of the student's own code and outputs."""
    cells = [(HANDOUT[0], ""), (HANDOUT[1], "")]
    for _ in range(3):
        cells.append(("\n".join(_statement(r) for _ in range(r.randint(6, 12))), ""))
    cells[2] = (cells[2][0], _log(sid))
    cells.append(("print_table(per_class)", _table([r.randint(30, 80) for _ in range(10)])))
    return cells


def main() -> int:
    from grader.cli import main as dllab
    from grader.samples import Sample, write_archive

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=200)
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-sim-"))
    subs = folder / "subs"
    subs.mkdir(parents=True, exist_ok=True)
    r = random.Random(0)
    made: dict[str, list] = {}
    copies: dict[str, str] = {}
    for n in range(args.students):
        sid = f"07{n:05d}"
        if n % 10 == 9 and made:
            src_id = r.choice(sorted(made))
            cells = [(_rename(c, {"net": "mynet", "classes": "cls"}), o) for c, o in made[src_id]]
            cells = cells[:2] + list(reversed(cells[2:]))
            copies[sid] = src_id
        else:
            cells = honest(r, n)
        made[sid] = cells
        write_archive(Sample(sid, f"dllab_{sid}.zip", "bench", {"lab1-1.ipynb": _notebook(cells)}), subs)
    out = folder / "out"
    t = time.monotonic()
    assert dllab(["grade", str(subs), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf",
                  "--no-similarity", "--workers", "2"]) == 0
    print(f"graded {args.students} in saved mode in {time.monotonic() - t:.1f} s", file=sys.stderr)
    from grader.similarity.core import run_similarity

    t = time.monotonic()
    result = run_similarity(out)
    took = time.monotonic() - t
    flagged = {frozenset((p["a"], p["b"])) for p in result["pairs"] if p["flagged"]}
    found = sum(frozenset((a, b)) in flagged for a, b in copies.items())
    data = json.loads((out / "similarity.json").read_text())
    copy_pairs = {frozenset(x) for x in copies.items()}
    honest_scores = [p["code"]["score"] for p in data["pairs"] if frozenset((p["a"], p["b"])) not in copy_pairs]
    copy_scores = [p["code"]["score"] for p in data["pairs"] if frozenset((p["a"], p["b"])) in copy_pairs]
    print(f"students {args.students}: {result['pairs_compared']} pairs, {result['pairs_scored']} sharing anything; "
          f"similarity took {took:.1f} s")
    print(f"copies handed in: {len(copies)}; paired: {found}; pairs flagged in all: {len(flagged)}")
    if copy_scores:
        print(f"code score of copied pairs: min {min(copy_scores):.2f}, median {statistics.median(copy_scores):.2f}")
    if honest_scores:
        print(f"code score of the other listed pairs (highest {len(honest_scores)}): max {max(honest_scores):.2f}, "
              f"median {statistics.median(honest_scores):.2f}")
    print(f"all pairs: median {data['code_scores']['median']:.2f}, p95 {data['code_scores']['p95']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
