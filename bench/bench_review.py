"""How long a TA takes to decide one item for a whole class in `dllab review`, and how far the
background re-rendering lags behind.

Builds a class of N students (LAB01 sample archives under N ids, graded in saved mode: no
kernels), starts `dllab review` as a TA would, and drives the system's Chromium with Playwright:
open the queue filtered to the hand-graded justification item, then for each student type the
points and press Enter (save and open the next pending one). Reports the seconds per decision as
the browser sees them (save + next page), the time until every re-rendered PDF and the class
summary are written after the last save, and that every decision reached grades.csv.

    .venv/bin/python bench/bench_review.py [--students 60] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ITEM = "lab1-3-justification"


def build_class(folder: Path, n: int) -> Path:
    from grader.cli import main
    from grader.rubric import builtin_rubric, load_rubric
    from grader.samples import lab1_samples, write_archive

    subs = folder / "subs"
    subs.mkdir(parents=True)
    deadline = load_rubric(builtin_rubric("lab1")).deadline.timestamp()
    sample = next(s for s in lab1_samples(epochs=1) if s.student_id == "0556001")
    for i in range(n):
        sid = f"09{i:05d}"
        write_archive(dataclasses.replace(sample, student_id=sid, archive=f"dllab_{sid}.zip"), subs,
                      mtime=deadline - 3600)
    out = folder / "out"
    t = time.monotonic()
    assert main(["grade", str(subs), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--workers", "2"]) == 0
    print(f"graded {n} students in saved mode in {time.monotonic() - t:.1f} s", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=60)
    ap.add_argument("--keep", type=Path, help="keep the class here (default: a temporary folder)")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium on this machine: install it (scripts/bootstrap.sh does)")
        return 0
    from playwright.sync_api import sync_playwright

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-review-"))
    out = build_class(folder, args.students)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "bench"
    server = subprocess.Popen([sys.executable, "-m", "grader.cli", "review", str(out), "--port", str(port),
                               "--token", token, "--who", "bench"], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"{base}/?token={token}&item={ITEM}")
            page.keyboard.press("Enter")  # open the first pending row
            page.wait_for_selector("#points")
            times = []
            t0 = time.monotonic()
            for i in range(args.students):
                t = time.monotonic()
                page.fill("#points", str(1 + i % 3))
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                times.append(time.monotonic() - t)
            t_decided = time.monotonic()
            page.goto(f"{base}/?item={ITEM}&status=all")
            progress = page.inner_text("#progress")
            browser.close()
        last = time.monotonic()
        while True:
            with urllib.request.urlopen(urllib.request.Request(f"{base}/api/status",
                                                               headers={"X-Review-Token": token})) as r:
                st = json.load(r)
            if st["running"] is None and not st["pending"]:
                break
            time.sleep(0.5)
        lag = time.monotonic() - last
    finally:
        server.terminate()
        server.wait(10)
    with open(out / "grades.csv", newline="") as f:
        totals = [float(r["total"]) for r in csv.DictReader(f)]
    rows = {(o["student_id"], o["item_id"]) for o in __import__("yaml").safe_load((out / "overrides.yaml").read_text())}
    times.sort()
    print(f"students: {args.students}; progress after: {progress}")
    print(f"decisions: {t_decided - t0:.1f} s in all, {1000 * times[len(times) // 2]:.0f} ms median, "
          f"{1000 * times[int(len(times) * 0.9)]:.0f} ms p90 per decision (save + next page, keyboard only)")
    print(f"re-rendering finished {lag:.1f} s after the last save (grades, PDFs, class summary)")
    print(f"overrides.yaml rows: {len(rows)}; grades.csv totals: min {min(totals):g}, max {max(totals):g}")
    if error := st.get("error"):
        print(f"re-rendering error: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
