"""Report rendering speed: seconds per student feedback PDF and for the class summary.

    .venv/bin/python bench/bench_report.py [--n 20] [--cjk-every 2]

Renders N synthetic students (the good / partial / broken / hostile shapes of
tests/test_report.py, cycled, with fresh ids; every `--cjk-every`-th cycle has Chinese
names) in one process, as `dllab grade` and `dllab rescore` do, and prints the median and
90th percentile of the seconds per student (HTML + PDF, charts and thumbnails included),
split by whether the report holds Chinese text, and the summary's time. The first student
is timed apart: it pays for imports and the per-process font set-up.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--cjk-every", type=int, default=2, help="every k-th cycle of the 4 shapes has Chinese names (0: none)")
    args = parser.parse_args(argv)

    from test_report import REFERENCE, STATS, cohort  # the test's builders: one source of fake data

    from grader.report import render_student, render_summary, write_gradebook

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        shapes = list(cohort(out / "src").values())
        grades, runs, times = [], {}, []
        for k in range(args.n + 1):
            s = copy.deepcopy(shapes[k % len(shapes)])
            sid = f"09{k:05d}"
            s["grade"]["student_id"] = sid
            # by whole cycles of shapes, so both groups hold the same mix of report sizes
            cjk = bool(args.cjk_every) and (k // len(shapes)) % args.cjk_every == 0
            name = "陳偉" if cjk else "Lin Mei"
            t0 = time.perf_counter()
            render_student(s["grade"], evidence=s["evidence"], reference=REFERENCE, dataset_stats=STATS,
                           problems=s["problems"], out_dir=out, name=name)
            dt = time.perf_counter() - t0
            if k == 0:
                print(f"first student (imports, font set-up): {dt:.2f} s")
            else:
                times.append((dt, cjk))
            grades.append(s["grade"])
            runs[sid] = s["evidence"]
        t0 = time.perf_counter()
        render_summary(grades, runs=runs, out_dir=out)
        write_gradebook(grades, out_dir=out)
        summary_s = time.perf_counter() - t0

    def line(label: str, xs: list[float]) -> None:
        if xs:
            xs = sorted(xs)
            p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
            print(f"{label:<28} n={len(xs):3d}  median {statistics.median(xs):.3f} s  p90 {p90:.3f} s")

    line("per student PDF, all", [t for t, _ in times])
    line("  with Chinese text", [t for t, c in times if c])
    line("  Latin text only", [t for t, c in times if not c])
    print(f"summary + gradebook ({len(grades)} students): {summary_s:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
