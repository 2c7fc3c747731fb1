"""Sample LAB01 submissions, each named by the outcome it should get.

Used by the end-to-end tests, and by scripts/make_lab1_samples.py, which writes them once as
labs/lab1/samples/ (the demo's class): real notebooks that really train on the
stand-in datasets mounted where the handout says (`/tmp/dataset-nctu`, `/tmp/datasets-nctu`),
with the defects TAs actually see.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grader.samples import cells


@dataclass(frozen=True)
class Sample:
    """One generated submission and the outcome it is built to get."""

    student_id: str
    """The id in the archive name."""
    archive: str
    """Archive file name (some are deliberately misnamed)."""
    outcome: str
    """What a TA should see, in a few words."""
    files: dict
    """Archive member name -> notebook node or text."""
    late_days: float = 0.0
    """How long after the deadline the archive was handed in."""


def notebook(*sources: str, title: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}")] + [new_code_cell(s.strip("\n")) for s in sources])
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # nbformat's random ids would make every generated zip differ
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def lab1_1(*, epochs: int, per_class: bool = True, histograms: str = "weights", fabricated: bool = False,
           crash: bool = False) -> nbformat.NotebookNode:
    parts = [cells.CIFAR_DATA, cells.LENET, cells.cifar_train(epochs)]
    if crash:
        parts.append(cells.CRASH)
    parts.append(cells.CIFAR_TEST)
    if per_class:
        parts.append(cells.FAKE_PER_CLASS if fabricated else cells.CIFAR_PER_CLASS)
    parts.append({"weights": cells.WEIGHT_HISTS, "inputs": cells.INPUT_HISTS, "none": ""}[histograms])
    return notebook(*[p for p in parts if p], title="LAB 1-1: CIFAR-10 CNN")


def lab1_2(*, epochs: int, normalization: str = "own") -> nbformat.NotebookNode:
    norm = {"own": cells.FOOD_OWN_STATS, "imagenet": cells.FOOD_IMAGENET_STATS}[normalization]
    return notebook(cells.FOOD_RESTRUCTURE, norm, cells.FOOD_DATA, cells.FOOD_MODEL, cells.food_train(epochs),
                    cells.FOOD_TEST, title="LAB 1-2: Food-11")


def lab1_3(*, epochs: int, step_scheduler: bool = True) -> nbformat.NotebookNode:
    return notebook(cells.CIFAR_DATA, cells.LENET, cells.lr_study(epochs, step_scheduler=step_scheduler),
                    cells.LR_PLOT, title="LAB 1-3: learning rate and decay")


REPORT = """# LAB01 report

## Problems & solutions
Food-11 is flat, so I restructured it into one folder per class under /tmp/work.

## Experiment setup
LeNet-style CNN, SGD with momentum 0.9, batch size 4, cross-entropy loss.

## Results
See the notebooks for the test accuracy, per-class accuracy and weight histograms.

## Analysis
A learning rate of 0.01 with step decay trained fastest; 0.1 diverged.
"""


def lab1_samples(*, epochs: int = 1) -> list[Sample]:
    """The demo class: one complete submission and one for each common defect."""
    full = {"lab1-1.ipynb": lab1_1(epochs=epochs), "lab1-2.ipynb": lab1_2(epochs=epochs),
            "lab1-3.ipynb": lab1_3(epochs=epochs), "report.md": REPORT}
    return [
        Sample("0556001", "dllab_0556001.zip", "complete: full marks and the bonus", full),
        Sample("0556002", "dllab_0556002.zip", "no per-class accuracy, no report",
               {"lab1-1.ipynb": lab1_1(epochs=epochs, per_class=False), "lab1-2.ipynb": lab1_2(epochs=epochs)}),
        Sample("0556003", "dllab_0556003.zip", "histograms of the inputs, ImageNet normalization",
               {"lab1-1.ipynb": lab1_1(epochs=epochs, histograms="inputs"),
                "lab1-2.ipynb": lab1_2(epochs=epochs, normalization="imagenet"),
                "lab1-3.ipynb": lab1_3(epochs=epochs), "report.md": REPORT}),
        Sample("0556004", "dllab_0556004.zip", "typed per-class accuracies, scheduler never stepped",
               {"lab1-1.ipynb": lab1_1(epochs=epochs, fabricated=True),
                "lab1-3.ipynb": lab1_3(epochs=epochs, step_scheduler=False), "report.md": REPORT}),
        Sample("0556005", "dllab_0556005.zip", "a cell raises; later cells still graded",
               {"lab1-1.ipynb": lab1_1(epochs=epochs, crash=True), "broken.ipynb": "{ not json",
                "report.md": REPORT}),
        Sample("0556006", "dllab_0556006.zip", "hostile: network, other files, memory bomb; contained",
               {"lab1-1.ipynb": notebook(*cells.HOSTILE, title="nothing to see here")}),
        Sample("0556007", "DLlab-0556007.zip", "misnamed archive, handed in two days late", full, late_days=2.0),
    ]


def write_archive(sample: Sample, folder: Path, *, mtime: float | None = None) -> Path:
    """Writes the sample's zip (deterministic member order); sets its mtime when given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sample.archive
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(sample.files):
            body = sample.files[name]
            text = body if isinstance(body, str) else nbformat.writes(body)
            zf.writestr(zipfile.ZipInfo(name, date_time=(2018, 9, 29, 12, 0, 0)), text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_lab1_samples(folder: Path, *, epochs: int = 1, deadline_epoch: float | None = None) -> list[Path]:
    """All LAB01 samples as zips in `folder`, plus `outcomes.json` saying what each should get."""
    paths, outcomes = [], {}
    for s in lab1_samples(epochs=epochs):
        mtime = None if deadline_epoch is None else deadline_epoch - 3600 + s.late_days * 86400
        paths.append(write_archive(s, folder, mtime=mtime))
        outcomes[s.archive] = {"student_id": s.student_id, "outcome": s.outcome}
    (folder / "outcomes.json").write_text(json.dumps(outcomes, indent=2) + "\n")
    return paths
