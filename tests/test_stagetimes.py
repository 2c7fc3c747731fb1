"""Where grading time goes (grader.stagetimes): stages recorded only inside a submission's
recording, summed over repeats; `dllab grade` writes them to OUT/runs/<id>/timings.json."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from grader import stagetimes

ROOT = Path(__file__).resolve().parents[1]


def test_stages_sum_inside_a_recording_and_nothing_outside() -> None:
    with stagetimes.stage("outside"):
        pass
    stagetimes.add("outside", 5.0)
    with stagetimes.recording() as timings:
        with stagetimes.stage("a"):
            time.sleep(0.02)
        stagetimes.add("b", 1.5)
        stagetimes.add("b", 0.5)
        t0 = stagetimes.now()
        time.sleep(0.01)
        stagetimes.add("c", stagetimes.now() - t0)
        stagetimes.add("d", -3.0)  # never negative
    doc = timings.to_json()
    assert list(doc["stages"]) == ["a", "b", "c", "d"]
    assert doc["stages"]["a"] >= 0.02 and doc["stages"]["b"] == 2.0 and doc["stages"]["c"] >= 0.01
    assert doc["stages"]["d"] == 0.0 and "outside" not in doc["stages"]
    assert doc["total_s"] >= doc["stages"]["a"] + doc["stages"]["c"]


def test_grade_writes_each_submissions_stage_times(tmp_path: Path) -> None:
    """One trivial notebook graded for real: its timings.json names every stage of its run, and
    the run's parts add up to no more than the submission's total."""
    subs = tmp_path / "subs"
    subs.mkdir()
    nb = new_notebook(cells=[new_code_cell("print('Accuracy of the network on the 10000 test images: 54 %')")])
    with zipfile.ZipFile(subs / "dllab_9100001.zip", "w") as zf:
        zf.writestr("lab1-1.ipynb", nbformat.writes(nb))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(subs), "--rubric",
                           str(ROOT / "bench" / "trivial.yaml"), "--out", str(out), "--no-pdf", "--no-similarity"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((out / "runs" / "9100001" / "timings.json").read_text())
    stages = doc["stages"]
    for name in ("intake", "run cache lookup", "sandbox and kernel start", "start-up code and probe", "cells",
                 "teardown (probe export)", "capture, shutdown, reaping", "evidence", "verification",
                 "checks and score", "report (HTML, PDF)"):
        assert name in stages, (name, stages)
    assert stages["sandbox and kernel start"] > 0 and stages["cells"] > 0
    top = sum(v for k, v in stages.items() if not k.startswith("verification: "))
    assert top <= doc["total_s"] + 0.01
    run = json.loads((out / "runs" / "9100001" / "lab1-1.ipynb" / "run.json").read_text())
    assert 0 < run["kernel_start_s"] <= run["startup_s"]
