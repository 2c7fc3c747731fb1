"""Where one submission's grading time goes, stage by stage (issue 21's profile).

    .venv/bin/python bench/bench_profile.py [--n 8] [--lab1 [IDS]] [--pdf]

1. `--n` trivial one-notebook submissions (bench_batch's: three small cells), run one after
   another by bare `jupyter nbconvert --execute`, then graded by `dllab grade` with 1 worker and
   with 2 workers (`--no-pdf`, so the report stage is the HTML alone; add `--pdf` for PDFs).
2. `--lab1`: LAB01 samples (default 0556001, three trained notebooks; `--lab1 0556001,0556002`
   for a batch), their notebooks run one after another by bare `jupyter nbconvert --execute`
   (stand-in data `small` at the paths the rubric mounts, the stand-in's CIFAR-10 checksums
   registered on the notebook's own import of torchvision, as in the grader: IPython's start-up
   folder holds grader.probe.startup.hooks_source), then the same samples graded by `dllab
   grade` with 1 worker. The hostile sample 0556006 is refused: bare nbconvert does not confine it.
   Each notebook gets a comment naming its sample, so that the grader's run cache, which runs
   a notebook identical to one already run once (samples share notebooks), runs every one.

Printed: the wall times and their ratios, then the mean seconds per stage over the batch's
submissions, from each submission's OUT/runs/<id>/timings.json (grader.stagetimes): intake,
run cache lookup, sandbox and kernel start, start-up code and probe, cells, teardown (probe
export), capture/shutdown/reaping, evidence, verification (of which its sandboxes), checks and
score, report; "other" is the rest of the submission's total.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat

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
    ap.add_argument("--lab1", nargs="?", const="0556001", default="",
                    help="also LAB01's samples, comma-separated (default 0556001) against bare nbconvert")
    args = ap.parse_args(argv)
    pdf = [] if args.pdf else ["--no-pdf"]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        work = Path(tmp)
        if args.n:
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
            lab1(work, [i for i in args.lab1.split(",") if i], pdf)


LAB1_ROOTS = ("/tmp/dataset-nctu", "/tmp/datasets-nctu")
"""Where LAB01's rubric mounts its datasets (CIFAR-10 at both, Food-11 under the second)."""


def lab1(work: Path, ids: list[str], pdf: list[str]) -> None:
    """LAB01 samples `ids`: bare nbconvert, then `dllab grade` (1 worker), with their cells' times."""
    import datetime as dt

    from grader.datasets import registry, synth
    from grader.datasets.standins import sandbox_readable
    from grader.lab_samples import write_sample, write_times_csv
    from grader.labs import find_lab
    from grader.probe.startup import hooks_source
    from grader.rubric import load_rubric

    if "0556006" in ids:
        raise SystemExit("0556006 is the hostile sample: bare nbconvert would run it unconfined")
    taken = [p for p in LAB1_ROOTS if os.path.lexists(p)]
    if taken:
        raise SystemExit(f"{', '.join(taken)} already exist(s): bare nbconvert needs them for the stand-in data")
    data = work / "datasets"
    synth(data, size="small", seed=0, names=["cifar10", "food11"])
    sandbox_readable(data)
    pkg = find_lab("lab1")
    samples = [s for s in pkg.manifest.samples if s.student_id in ids]
    if len(samples) != len(ids):
        raise SystemExit(f"unknown LAB01 sample(s) among {ids}")
    rubric = load_rubric(pkg.dir / "rubric.yaml", base_dir=pkg.dir)
    deadline = rubric.deadline or dt.datetime.now(dt.timezone.utc)
    for sample in samples:
        # The grader runs a notebook identical to one it already ran (its run cache) once: samples
        # share notebooks (0556002's LAB 1-2 is 0556001's), so each gets a comment of its own.
        path = write_sample(pkg, sample, work / "lab1", deadline_epoch=deadline.timestamp())
        _own_bytes(path, sample.student_id)
    times = write_times_csv(samples, deadline, work / "submitted_at.csv")

    # bare nbconvert: the notebooks as the student runs them, the data where the rubric mounts it
    ipython = work / "ipython"
    (ipython / "profile_default" / "startup").mkdir(parents=True)
    hook = registry.get("cifar10").sandbox_startup
    (ipython / "profile_default" / "startup" / "00-standins.py").write_text(hooks_source([(hook, LAB1_ROOTS)]))
    notebooks = []
    for sample in samples:
        folder = work / "nbconvert-lab1" / sample.student_id
        with zipfile.ZipFile(work / "lab1" / sample.archive) as zf:
            zf.extractall(folder)
        notebooks += sorted(folder.rglob("*.ipynb"))
    scratch = [Path("/tmp/work") / f"Food-11_{s.student_id}" for s in samples]  # lab1-2's copy of Food-11
    jupyter = Path(sys.executable).parent / "jupyter"
    try:
        for root in LAB1_ROOTS:
            os.symlink(data, root)
        t0 = time.perf_counter()
        for nb in notebooks:
            subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
                            "--ExecutePreprocessor.timeout=1800", str(nb), "--output", nb.stem + ".out.ipynb"],
                           check=True, capture_output=True, cwd=nb.parent, env={**os.environ, "IPYTHONDIR": str(ipython)})
        bare = time.perf_counter() - t0
    finally:
        for root in LAB1_ROOTS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(root)
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)
    bare_cells = sum(cells_seconds(nb.with_name(nb.stem + ".out.ipynb")) for nb in notebooks)

    wall = _grade(work / "lab1", work / "out-lab1", ["--lab", "lab1", "--data", str(data), "--workers", "1",
                                                     "--submitted-at", str(times), *pdf])
    cells = sum(c["duration_s"] for p in (work / "out-lab1" / "runs").glob("*/*/run.json")
                for c in json.loads(p.read_text())["cells"])
    grades = {r["student_id"]: r for r in csv.DictReader((work / "out-lab1" / "grades.csv").open())}
    print(f"\nLAB01 samples {', '.join(ids)} ({len(notebooks)} notebooks, 1 worker)")
    print(f"  nbconvert --execute, one after another  {bare:7.1f} s  (its cells {bare_cells:.1f} s)")
    print(f"  dllab grade                             {wall:7.1f} s  (its cells {cells:.1f} s)")
    print(f"  dllab grade / nbconvert                 {wall / bare:7.2f}x")
    print(f"  dllab grade / the cells under nbconvert {wall / bare_cells:7.2f}x")
    print("  totals: " + ", ".join(f"{i} {grades.get(i, {}).get('total', '?')}" for i in ids))
    print_stages(f"LAB01 samples {', '.join(ids)}", work / "out-lab1")


def _own_bytes(archive: Path, student_id: str) -> None:
    """Rewrites `archive` with a comment naming `student_id` at the end of each notebook's first
    code cell (nothing else changes; its time stays)."""
    stat = archive.stat()
    with zipfile.ZipFile(archive) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            if info.filename.endswith(".ipynb"):
                nb = nbformat.reads(data.decode("utf-8"), as_version=4)
                code = next(c for c in nb.cells if c.cell_type == "code")
                code.source += f"\n# {student_id}'s copy"
                data = nbformat.writes(nb).encode("utf-8")
            zf.writestr(info, data)
    os.utime(archive, (stat.st_atime, stat.st_mtime))


def cells_seconds(notebook: Path) -> float:
    """Seconds between each code cell's execute_input and execute_reply, as nbclient records them."""
    import datetime as dt

    total = 0.0
    for cell in nbformat.read(notebook, as_version=4).cells:
        ex = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
            start, end = (dt.datetime.fromisoformat(ex[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            total += (end - start).total_seconds()
    return total

if __name__ == "__main__":
    main()
