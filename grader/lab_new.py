"""`dllab lab new ID`: a commented lab package skeleton that `dllab lab validate` accepts.

It writes `lab.yaml`, `rubric.yaml` (one part on MNIST with a few items, every key
commented), `reference/model.py` (a small MLP with `train(*, data, device, seed, epochs)` and
a `hyp` dict) and empty `handout/` and `samples/` folders. The check kinds with their params,
types and defaults are appended to rubric.yaml as comments, generated from the check-kind
registry, so the skeleton cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

from grader.labs import LAB_FILE, LabError, normalize_lab_id

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

LAB_YAML = '''\
# {title}: the lab package manifest (see docs/authoring-a-lab.md).
# Check the whole folder with:  dllab lab validate {folder}
# (add --samples once samples: below lists sample submissions with the outcome each must get)

id: {lab_id}                 # the id on the command line (--lab {lab_id}); LAB-1, lab_1, lab1 are one id
title: "{title}"
rubric: rubric.yaml          # points, deadline, limits, dataset mounts: the file a TA edits each term

# The reference solution of each rubric part (only these parts get expected metrics, from
# `dllab reference run {lab_id} --data DIR`). Each file has train(*, data, device, seed, epochs) -> dict.
references:
  {part}:
    file: reference/model.py
    datasets: [mnist]          # registered dataset names its train() gets in `data`
    title: "An MLP on MNIST"

report:
  sections: [Results]          # headings the report should have (report_sections' default)
  # formats: [pdf, docx, md, txt, html]

# handout: [handout/{lab_id}.ipynb]   # notebooks students start from (files in this folder)

quick:                         # dllab check --quick: the student's self-check on stand-in data
  size: tiny
  unjudged: []                 # extra check kinds whose result means nothing on stand-ins

demo:
  size: tiny
  datasets: [mnist]
  reference: {{parts: [{part}], seeds: 1}}

# Sample submissions, each graded by `dllab lab validate --samples` and compared with `expect`:
# samples:
#   - student_id: "0000001"
#     archive: dllab_0000001.zip
#     folder: samples/complete      # its files are the zip's members
#     outcome: "everything done"
#     late_days: 0
#     expect: {{total: 100, items: {{{part}-metrics: pass}}, flags: []}}
'''

RUBRIC_YAML = '''\
# {title}: grading rubric. Validate with:  dllab rubric validate {folder}
# Every check kind, its params, their types and defaults are listed at the end of this file.

lab: {lab_id}
title: "{title}"

submission:
  pattern: "dllab_{{student_id}}.zip"   # required zip name; {{student_id}} appears once

# deadline: 2030-01-31T23:59:00+08:00   # with its timezone; no deadline: no late penalty
late:
  grace_minutes: 0
  per_day_percent: 10
  max_days: 7
  after_max: zero                         # zero: 0 points after max_days; cap: penalty stops growing
  basis: max                              # max: % of the lab's maximum; earned: of the student's points

# Where each dataset appears, read-only, inside the sandbox (./data is mounted too).
datasets:
  mnist:
    mount: [/tmp/datasets-nctu]

limits:                                   # sizes B/KiB/MiB/GiB; times s/m/h (1h30m)
  memory: 2GiB
  cell_timeout: 2m
  wall_timeout: 5m
  runs_per_submission: 2

total: 100                                # the parts' points add up to this (bonus not included)

parts:
  - id: {part}
    title: "Train an MLP on MNIST"
    points: 100                           # = the sum of its items' points
    notebook:
      dataset: mnist
      patterns: ["*.ipynb"]               # which notebook in the zip serves this part
    items:
      - id: {part}-metrics
        title: "Test loss and accuracy on the whole test set"
        check: test_metrics
        params:
          dataset: mnist
          test_images: 10000
          require: [loss, accuracy]
        points: 60
        feedback:
          pass: "Test loss and accuracy over the whole test set are reported."
          partial: "Only one of them, or not on the whole test set."
          fail: "No test loss or accuracy was reported."

      - id: {part}-runs
        title: "The notebook runs without errors"
        check: ran_without_errors
        points: 40
        feedback:
          pass: "The notebook ran from top to bottom."
          fail: "The notebook stopped with an error."

{kinds}'''

REFERENCE = '''\
"""{title}: the reference solution of part {part}.

A small MLP (784-128-10) trained with SGD on MNIST; reports the standard keys every check
compares with: test_accuracy, test_loss (mean cross-entropy per image), per_class_accuracy and
classes (fractions), train_images, history (test_accuracy from epoch 0, wall_s, cpu_s per
epoch) and normalization. Replace the model and hyperparameters with your lab's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import torch
import torchvision
from torch import nn
from torchvision import transforms

hyp = {{
    "epochs": 1,            # passes over the training split
    "batch_size": 64,       # images per SGD step
    "lr": 0.1,              # SGD learning rate, per step
    "mean": (0.1307,),      # Normalize() mean, pixel values in 0..1 (MNIST's training split)
    "std": (0.3081,),       # Normalize() std
}}


def _evaluate(model: nn.Module, loader, classes: list[str]) -> dict:
    model.eval()
    correct = [0] * len(classes)
    seen = [0] * len(classes)
    loss = 0.0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            for t, p in zip(y.tolist(), logits.argmax(1).tolist()):
                seen[t] += 1
                correct[t] += int(t == p)
    n = max(sum(seen), 1)
    return {{"test_accuracy": sum(correct) / n, "test_loss": loss / n, "test_images": sum(seen),
            "per_class_accuracy": {{c: (correct[i] / seen[i] if seen[i] else None) for i, c in enumerate(classes)}}}}


def train(*, data: Mapping[str, Path], device: torch.device, seed: int, epochs: int | None = None) -> dict:
    """Trains once; `data["mnist"]` is the MNIST folder (torchvision's root is its parent)."""
    torch.manual_seed(seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(hyp["mean"], hyp["std"])])
    root = str(Path(data["mnist"]).parent)
    train_set = torchvision.datasets.MNIST(root, train=True, download=False, transform=tf)
    test_set = torchvision.datasets.MNIST(root, train=False, download=False, transform=tf)
    classes = [str(c) for c in range(10)]
    loader = torch.utils.data.DataLoader(train_set, batch_size=hyp["batch_size"], shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=hyp["lr"])
    history = {{"test_accuracy": [_evaluate(model, test_loader, classes)["test_accuracy"]], "wall_s": [], "cpu_s": []}}
    for _ in range(epochs or hyp["epochs"]):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train()
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        history["wall_s"].append(time.perf_counter() - wall)
        history["cpu_s"].append(time.process_time() - cpu)
        history["test_accuracy"].append(_evaluate(model, test_loader, classes)["test_accuracy"])
    return {{**_evaluate(model, test_loader, classes), "classes": classes, "train_images": len(train_set),
            "history": history, "normalization": {{"mean": list(hyp["mean"]), "std": list(hyp["std"])}}}}
'''


def kinds_comment() -> str:
    """Every check kind with its params, as YAML comments (from the check-kind registry)."""
    try:
        from grader.checks.registry import describe_kinds
    except ImportError:
        describe_kinds = None
    if describe_kinds is not None:
        text = describe_kinds()
    else:
        # TODO(lead): grader.checks.registry.describe_kinds() is not on this branch yet; once
        # it is, this list of names gives way to its params, types and defaults.
        from grader.lab_validate import known_kinds
        text = ("Check kinds (see docs/authoring-a-lab.md for each one's params):\n"
                + "\n".join(f"  {k}" for k in sorted(known_kinds())))
    lines = [ln if ln.startswith("#") else f"# {ln}".rstrip() for ln in text.splitlines()]
    return "\n".join(lines) + "\n"


def new_lab(lab_id: str, labs_dir: Path, *, title: str | None = None) -> Path:
    """Writes the skeleton of lab `lab_id` as `labs_dir/<lab_id>/`; returns the folder. Raises
    LabError for an id that is not lower-case letters, digits, `-`, `_`, or a folder that
    already exists."""
    if not _ID.match(lab_id or ""):
        raise LabError(f"lab id {lab_id!r}: use lower-case letters, digits, '-' and '_' (like lab4a)")
    folder = Path(labs_dir) / lab_id
    if folder.exists():
        raise LabError(f"{folder} already exists: choose another id or remove it")
    title = title or f"{lab_id}: a new lab"
    part = f"{normalize_lab_id(lab_id)}-1"
    fields = dict(lab_id=lab_id, title=title.replace('"', "'"), part=part, folder=folder)
    (folder / "reference").mkdir(parents=True)
    (folder / "handout").mkdir()
    (folder / "samples").mkdir()
    (folder / LAB_FILE).write_text(LAB_YAML.format(**fields), encoding="utf-8")
    (folder / "rubric.yaml").write_text(RUBRIC_YAML.format(**fields, kinds=kinds_comment()), encoding="utf-8")
    (folder / "reference" / "__init__.py").write_text(f'"""Reference solutions of {lab_id}."""\n', encoding="utf-8")
    (folder / "reference" / "model.py").write_text(REFERENCE.format(**fields), encoding="utf-8")
    for empty in ("handout", "samples"):
        (folder / empty / "README.md").write_text(_README[empty], encoding="utf-8")
    return folder


_README = {
    "handout": "Notebooks handed out to students, listed in lab.yaml `handout:`.\n",
    "samples": "One folder per sample submission (its files become the zip's members), listed in\n"
               "lab.yaml `samples:` with the outcome each must get (`dllab lab validate --samples`).\n",
}
