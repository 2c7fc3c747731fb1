"""Batch grading: overhead against plain nbconvert, 1 vs 2 workers, rescore throughput.

    .venv/bin/python bench/bench_batch.py [--n 8] [--rescore-n 100]

1. Overhead: N submissions whose notebook does trivial compute, graded end to end by
   `dllab grade` (intake, sandbox, probe, evidence, checks, score, HTML+PDF feedback, summary)
   with 1 worker, against the same notebooks run one after another with
   `jupyter nbconvert --to notebook --execute`. Printed as a ratio.
2. Scaling: the same batch with 2 workers.
3. Rescore: a graded folder with `--rescore-n` students (the N real runs copied under new
   ids, so every student has real stored evidence), then `dllab rescore` with PDFs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
DLLAB = [sys.executable, "-m", "grader.cli"]
CELLS = ["x = sum(i * i for i in range(10**5))", "print('Accuracy of the network on the 10000 test images: 54 %')",
         "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); plt.show()"]


def make_batch(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        # distinct bytes per student, or the run cache would execute only the first one
        nb = new_notebook(cells=[new_code_cell(f"# student {i}\n" + CELLS[0])] + [new_code_cell(c) for c in CELLS[1:]])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        p = folder / f"dllab_{9000000 + i}.zip"
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("lab1-1.ipynb", nbformat.writes(nb))
        paths.append(p)
    return paths


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0


def nbconvert_all(zips: list[Path], work: Path) -> float:
    jupyter = Path(sys.executable).parent / "jupyter"
    nbs = []
    for z in zips:
        d = work / z.stem
        d.mkdir(parents=True)
        with zipfile.ZipFile(z) as zf:
            zf.extractall(d)
        nbs.append(d / "lab1-1.ipynb")
    t0 = time.perf_counter()
    for nb in nbs:
        subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute", str(nb), "--output",
                        str(nb.with_suffix(".out.ipynb"))], check=True, capture_output=True)
    return time.perf_counter() - t0


def clone_students(out: Path, n: int) -> None:
    """Copies the graded runs under new ids until the folder holds `n` students."""
    real = sorted(p.name for p in (out / "runs").iterdir())
    for i in range(n - len(real)):
        src, sid = real[i % len(real)], f"8{i:06d}"
        shutil.copytree(out / "runs" / src, out / "runs" / sid)
        sub = json.loads((out / "runs" / sid / "submission.json").read_text())
        sub["student_id"] = sid
        (out / "runs" / sid / "submission.json").write_text(json.dumps(sub))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="submissions in the batch")
    ap.add_argument("--rescore-n", type=int, default=100, help="students in the rescore benchmark")
    args = ap.parse_args(argv)
    rubric = ROOT / "bench" / "trivial.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        zips = make_batch(work / "subs", args.n)
        base = nbconvert_all(zips, work / "nbconvert")
        common = [*DLLAB, "grade", str(work / "subs"), "--rubric", str(rubric), "--mode", "execute"]
        one = timed([*common, "--out", str(work / "out1"), "--workers", "1"])
        two = timed([*common, "--out", str(work / "out2"), "--workers", "2"])
        clone_students(work / "out1", args.rescore_n)
        rescore = timed([*DLLAB, "rescore", str(work / "out1"), "--workers", "2"])
        pdfs = len(list((work / "out1" / "feedback").glob("*.pdf")))
    print(f"batch of {args.n} trivial submissions")
    print(f"  nbconvert --execute, one after another  {base:7.1f} s  ({base / args.n:.2f} s each)")
    print(f"  dllab grade, 1 worker (with PDFs)       {one:7.1f} s  ratio {one / base:.2f}x")
    print(f"  dllab grade, 2 workers                  {two:7.1f} s  speed-up {one / two:.2f}x over 1 worker")
    print(f"rescore + PDF re-render of {args.rescore_n} students: {rescore:.1f} s ({pdfs} PDFs)")


if __name__ == "__main__":
    main()
