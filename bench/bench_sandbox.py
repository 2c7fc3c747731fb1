"""The sandbox's fixed cost: start to first cell, and total, against plain nbconvert.

    .venv/bin/python bench/bench_sandbox.py [--runs 5]

Both run the same three-cell notebook; its first cell prints `time.time()`, so "start to
first cell" is measured the same way for both (from just before launching, to the moment
the first student cell runs). Prints medians over `--runs` runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grader.execute import SandboxLimits, SandboxSpec, run_notebook  # noqa: E402

CELLS = ("import time; print(repr(time.time()))", "x = sum(range(10**6))", "print(x)")


def _first_cell_time(nb_path: Path) -> float:
    nb = nbformat.read(nb_path, as_version=4)
    return float(nb.cells[0].outputs[0]["text"].strip())


def bench_sandbox(nb: Path, work: Path, sandbox: str) -> tuple[float, float]:
    out = work / f"out-{sandbox}"
    t0 = time.time()
    r = run_notebook(nb, submission_dir=nb.parent, out_dir=out, spec=SandboxSpec(sandbox=sandbox),  # type: ignore[arg-type]
                     limits=SandboxLimits())
    total = time.time() - t0
    assert r.status == "ok", r.reason
    return _first_cell_time(Path(r.executed_notebook_path)) - t0, total


def bench_nbconvert(nb: Path, work: Path) -> tuple[float, float]:
    out = work / "nbconvert.ipynb"
    jupyter = Path(sys.executable).parent / "jupyter"
    t0 = time.time()
    subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute", str(nb),
                    "--output", str(out)], check=True, capture_output=True)
    total = time.time() - t0
    return _first_cell_time(out) - t0, total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sub = work / "submission"
        sub.mkdir()
        nb = sub / "trivial.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS]), nb)
        rows = {"nbconvert --execute": [], "dllab sandbox=bwrap": [], "dllab sandbox=none": []}
        for _ in range(args.runs):  # interleaved so drift in machine load hits all alike
            rows["nbconvert --execute"].append(bench_nbconvert(nb, work))
            rows["dllab sandbox=bwrap"].append(bench_sandbox(nb, work, "bwrap"))
            rows["dllab sandbox=none"].append(bench_sandbox(nb, work, "none"))
    print(f"median of {args.runs} runs, seconds")
    print(f"{'runner':24} {'start->first cell':>18} {'total':>8}")
    for name, samples in rows.items():
        first = statistics.median(s[0] for s in samples)
        total = statistics.median(s[1] for s in samples)
        print(f"{name:24} {first:18.3f} {total:8.3f}")


if __name__ == "__main__":
    main()
