"""Where one submission's grading time goes, stage by stage (issue 21's profile).

    .venv/bin/python bench/bench_profile.py [--n 8] [--lab1]

1. `--n` trivial one-notebook submissions (bench_batch's: three small cells), run one after
   another by bare `jupyter nbconvert --execute`, then graded by `dllab grade` with 1 worker and
   with 2 workers (`--no-pdf`, so the report stage is the HTML alone; add `--pdf` for PDFs).
2. `--lab1`: the lab's sample 0556001 (three trained notebooks) graded alone with 1 worker.

Printed: the wall times and their ratios, then the mean seconds per stage over the batch's
submissions, from each submission's OUT/runs/<id>/timings.json (grader.stagetimes): intake,
run cache lookup, sandbox and kernel start, start-up code and probe, cells, teardown (probe
export), capture/shutdown/reaping, evidence, verification (of which its sandboxes), checks and
score, report; "other" is the rest of the submission's total.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_batch import DLLAB, make_batch, nbconvert_all  # noqa: E402


ORDER = ("intake", "run cache lookup", "sandbox and kernel start", "start-up code and probe", "cells",
         "teardown (probe export)", "capture, shutdown, reaping", "evidence", "verification",
         "verification: its sandboxes", "checks and score", "report (HTML, PDF)")
"""The stages in the order a submission goes through them (grader.stagetimes' names)."""


def _grade(subs: Path, out: Path, extra: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([*DLLAB, "grade", str(subs), "--out", str(out), "--no-similarity", *extra],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"dllab grade failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def stage_table(out: Path) -> tuple[dict[str, float], float]:
    """Mean seconds per stage over OUT's submissions, and the mean total."""
    docs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/timings.json"))]
    if not docs:
        raise SystemExit(f"no timings.json under {out / 'runs'}")
    names = [k for k in ORDER if any(k in d["stages"] for d in docs)]
    for d in docs:
        names += [k for k in d["stages"] if k not in names]
    means = {k: statistics.mean(d["stages"].get(k, 0.0) for d in docs) for k in names}
    total = statistics.mean(d["total_s"] for d in docs)
    return means, total


def print_stages(title: str, out: Path) -> None:
    means, total = stage_table(out)
    nested = {k: v for k, v in means.items() if k.startswith("verification: ")}
    top = {k: v for k, v in means.items() if k not in nested}
    print(f"\n{title}: mean per submission, {total:.2f} s in all")
    print("| stage | seconds | share |")
    print("|---|---|---|")
    for k, v in top.items():
        print(f"| {k} | {v:.2f} | {100 * v / total:.0f} % |")
        if k == "verification":
            for n, nv in nested.items():
                print(f"| &nbsp;&nbsp;{n.removeprefix('verification: ')} | {nv:.2f} | {100 * nv / total:.0f} % |")
    other = total - sum(top.values())
    print(f"| other | {other:.2f} | {100 * other / total:.0f} % |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="trivial submissions")
    ap.add_argument("--pdf", action="store_true", help="render the PDFs too")
    ap.add_argument("--lab1", action="store_true", help="also profile LAB01's sample 0556001")
    args = ap.parse_args(argv)
    pdf = [] if args.pdf else ["--no-pdf"]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        work = Path(tmp)
        zips = make_batch(work / "subs", args.n)
        base = nbconvert_all(zips, work / "nbconvert")
        rubric = ["--rubric", str(ROOT / "bench" / "trivial.yaml")]
        one = _grade(work / "subs", work / "out1", [*rubric, "--workers", "1", *pdf])
        two = _grade(work / "subs", work / "out2", [*rubric, "--workers", "2", *pdf])
        print(f"{args.n} trivial submissions")
        print(f"  nbconvert --execute, one after another  {base:7.1f} s  ({base / args.n:.2f} s each)")
        print(f"  dllab grade, 1 worker                   {one:7.1f} s  {one / base:.2f}x nbconvert")
        print(f"  dllab grade, 2 workers                  {two:7.1f} s  {one / two:.2f}x faster than 1 worker")
        print_stages("trivial notebook, 1 worker", work / "out1")
        print_stages("trivial notebook, 2 workers", work / "out2")
        if args.lab1:
            from grader.datasets import synth
            from grader.datasets.standins import sandbox_readable
            from grader.lab_samples import write_sample
            from grader.labs import find_lab

            data = work / "datasets"
            synth(data, size="small", seed=0, names=["cifar10", "food11"])
            sandbox_readable(data)
            pkg = find_lab("lab1")
            sample = next(s for s in pkg.manifest.samples if s.student_id == "0556001")
            write_sample(pkg, sample, work / "lab1", deadline_epoch=None)
            wall = _grade(work / "lab1", work / "out-lab1", ["--lab", "lab1", "--data", str(data),
                                                             "--workers", "1", *pdf])
            cells = sum(c["duration_s"] for p in (work / "out-lab1" / "runs" / "0556001").glob("*/run.json")
                        for c in json.loads(p.read_text())["cells"])
            print(f"\nLAB01 sample 0556001: dllab grade {wall:.1f} s, its cells {cells:.1f} s "
                  f"({wall / cells:.2f}x its cells)")
            print_stages("LAB01 sample 0556001", work / "out-lab1")


if __name__ == "__main__":
    main()
