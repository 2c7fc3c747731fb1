"""Fairness: an honest LAB01 submission graded alone, and beside a hostile one, with 2 workers.

    .venv/bin/python bench/bench_fairness.py [--size small] [--cell-timeout 180] [--compare]

The honest submission is the lab's sample 0556001 (LAB 1-1, 1-2 and the learning-rate study,
all of them trained); the hostile ones are one notebook each:

- fork bomb: `while True: os.fork()` (the cap is the rubric's limits.processes, 256);
- busy loop: `while True: pass`, held until the cell timeout (it cannot be told from training);
- busy processes: the same loop in a Pool of 4 processes (as a DataLoader's workers would spin);
- memory hog: a multiprocessing Pool whose 4 processes each fill 3.6 GiB: under the 8 GiB
  per-process RLIMIT_DATA, over the run's whole-tree memory cap (8 GiB + its /tmp and /dev/shm,
  14 GiB), and within what this 24 GiB host holds without the cap.

Every scenario is one `dllab grade --workers 2 --no-pdf --no-similarity` of a fresh OUT on the
same stand-in datasets, with the lab's rubric except the cell timeout (`--cell-timeout`, so the
busy loop ends within the bench). Printed per scenario: the honest submission's run time (the
sum of its notebooks' run.json `duration_s`, kernel start to the last cell) and its ratio to
its time alone, the hostile run's status and how long it held its worker (its run's
`duration_s`), and the batch's wall time. `--compare` repeats every scenario with the per-run
cgroups turned off (DLLAB_CGROUPS=0: the rlimits alone, as before issue 20).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HONEST = "0556001"
HOSTILE = {
    "fork bomb": ("import os\nwhile True:\n    os.fork()",),
    "busy loop": ("while True:\n    pass",),
    "busy processes": ("import multiprocessing as mp\ndef spin(i):\n    while True:\n        pass\n"
                       "with mp.Pool(4) as pool:\n    pool.map(spin, range(4))",),
    "memory hog": ("import multiprocessing as mp\n"
                   "def hog(i):\n    x = bytearray(3700 << 20)\n    for j in range(0, len(x), 4096):\n        x[j] = 1\n"
                   "    return len(x)\n"
                   "with mp.Pool(4) as pool:\n    print(sum(pool.map(hog, range(4))))",),
}
HOSTILE_ID = "0556999"


def _hostile_zip(folder: Path, cells: tuple[str, ...]) -> Path:
    nb = new_notebook(cells=[new_markdown_cell("# LAB 1-1"), new_code_cell("print('start')"),
                             *(new_code_cell(c) for c in cells), new_code_cell("print('never')")])
    path = folder / f"dllab_{HOSTILE_ID}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("lab1-1.ipynb", nbformat.writes(nb))
    return path


def _runs(out: Path, sid: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs" / sid).glob("*/run.json"))]


def _grade(subs: Path, out: Path, *, lab: Path, data: Path, cgroups: bool) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({} if cgroups else {"DLLAB_CGROUPS": "0"})}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(subs), "--lab", str(lab),
                           "--data", str(data), "--out", str(out), "--workers", "2", "--no-pdf", "--no-similarity"],
                          capture_output=True, text=True, env=env, timeout=3 * 3600)
    if done.returncode != 0:
        raise SystemExit(f"dllab grade failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", help="stand-in dataset size (tiny, small)")
    ap.add_argument("--cell-timeout", type=int, default=180, help="seconds (the busy loop's hold)")
    ap.add_argument("--only", action="append", choices=sorted(HOSTILE), help="scenarios (default: all)")
    ap.add_argument("--compare", action="store_true", help="also with the cgroups off (DLLAB_CGROUPS=0)")
    args = ap.parse_args(argv)

    from grader import cgroups
    from grader.datasets import synth
    from grader.datasets.standins import sandbox_readable
    from grader.lab_samples import write_sample
    from grader.labs import find_lab

    version, why = cgroups.available()
    print(f"host: {os.cpu_count()} cores; per-run cgroups: {f'v{version}' if version else 'none (' + why + ')'}")
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
        work = Path(tmp)
        pkg = find_lab("lab1")
        lab = work / "lab1"
        shutil.copytree(pkg.dir, lab)
        rubric = lab / "rubric.yaml"
        text = rubric.read_text()
        assert "cell_timeout: 30m" in text
        rubric.write_text(text.replace("cell_timeout: 30m", f"cell_timeout: {args.cell_timeout}s"))
        data = work / "datasets"
        synth(data, size=args.size, seed=0, names=["cifar10", "food11"])
        sandbox_readable(data)
        sample = next(s for s in find_lab(str(lab)).manifest.samples if s.student_id == HONEST)
        modes = [True, False] if args.compare else [True]
        rows = []
        for on in modes:
            label = "cgroups" if on else "rlimits only"
            subs = work / f"alone-{on}"
            write_sample(find_lab(str(lab)), sample, subs, deadline_epoch=None)
            out = work / f"out-alone-{on}"
            wall = _grade(subs, out, lab=lab, data=data, cgroups=on)
            alone = sum(r["duration_s"] for r in _runs(out, HONEST))
            rows.append((label, "alone", alone, 1.0, "", "", wall))
            print(f"[{label}] alone: honest {alone:.1f} s (batch {wall:.0f} s)", flush=True)
            for name in args.only or sorted(HOSTILE):
                subs = work / f"{name.replace(' ', '-')}-{on}"
                write_sample(find_lab(str(lab)), sample, subs, deadline_epoch=None)
                _hostile_zip(subs, HOSTILE[name])
                out = work / f"out-{name.replace(' ', '-')}-{on}"
                wall = _grade(subs, out, lab=lab, data=data, cgroups=on)
                honest = sum(r["duration_s"] for r in _runs(out, HONEST))
                (hostile,) = _runs(out, HOSTILE_ID)
                rows.append((label, name, honest, honest / alone, hostile["status"], f"{hostile['duration_s']:.1f}", wall))
                print(f"[{label}] beside {name}: honest {honest:.1f} s ({honest / alone:.2f}x), hostile "
                      f"{hostile['status']} after {hostile['duration_s']:.1f} s: {hostile.get('reason', '')[:160]}",
                      flush=True)
    print()
    print(f"| mode | beside | honest run (s) | x alone | hostile status | hostile held (s) | batch wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for label, name, honest, ratio, status, held, wall in rows:
        print(f"| {label} | {name} | {honest:.1f} | {ratio:.2f} | {status} | {held} | {wall:.0f} |")


if __name__ == "__main__":
    main()
