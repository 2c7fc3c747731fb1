"""Lab 4A / 4B packages (issue 15), without a kernel: the packages load and validate, the
references import and return studies whose runs carry their factors, the samples match their
generator, and the feedback's runs table renders from a hand-written evidence.

Grading the samples (`dllab lab validate labs/lab4a --samples`) runs real kernels: it is the
`slow` test at the end (and the lead's demo runs)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from grader.checks.registry import KINDS
from grader.labs import find_lab, import_reference
from grader.reference_run import result_problems, summarize, train_return_problem, train_signature_problem
from grader.report import render_student
from grader.report.extras import exercises, run_factors, runs_view

REPO = Path(__file__).resolve().parent.parent
LABS = {"lab4a": ["ex1", "ex2", "ex3", "ex4"], "lab4b": ["ex1", "ex2", "ex3"]}


@pytest.mark.parametrize("lab", sorted(LABS))
def test_manifest_lists_the_handouts_parts_and_samples(lab: str) -> None:
    pkg = find_lab(str(REPO / "labs" / lab))
    assert list(pkg.manifest.references) == LABS[lab]
    assert pkg.manifest.samples, "every lab package lists its demo class"
    for sample in pkg.manifest.samples:
        assert (pkg.dir / sample.folder).is_dir(), sample.folder


@pytest.mark.parametrize("lab", sorted(LABS))
def test_lab_validates_with_parts_in_the_handouts_order(lab: str) -> None:
    from grader.lab_validate import validate_lab
    from grader.rubric import load_rubric

    pkg, problems = validate_lab(REPO / "labs" / lab)
    assert problems == []
    rubric = load_rubric(pkg.rubric_path)
    assert [p.id for p in rubric.parts] == LABS[lab]
    assert rubric.bonus is not None and rubric.limits.captured_runs == 16
    for part in rubric.parts:  # each exercise: the pair of runs, then the TA's reading of it
        assert [i.check for i in part.items] == ["run_comparison", "manual"]
        assert part.items[1].hint is not None and part.items[1].hint.check == "run_comparison"
        assert part.items[1].hint.params.factor == part.items[0].params.factor
    assert sum(p.points for p in rubric.parts) == rubric.total


def test_rubric_values_are_the_handouts() -> None:
    import yaml

    want = {"lab4a": {"ex1": ("model_kind", ["mlp", "linear"]), "ex2": ("depth", [2, 4]), "ex3": ("width", [100, 200]),
                      "ex4": ("lr", [0.002, 0.02])},
            "lab4b": {"ex1": ("conv_layers", [2, 4]), "ex2": ("optimizer", ["RMSprop", "SGD"]),
                      "ex3": ("epochs", [10, 30])}}
    for lab, parts in want.items():
        doc = yaml.safe_load((REPO / "labs" / lab / "rubric.yaml").read_text())
        got = {p["id"]: (p["items"][0]["params"]["factor"], p["items"][0]["params"]["values"]) for p in doc["parts"]}
        assert got == parts, lab
    ex3 = yaml.safe_load((REPO / "labs" / "lab4b" / "rubric.yaml").read_text())["parts"][2]["items"][0]
    assert ex3["params"]["shown"] == "plot", "10 vs 30 epochs: the curves show whether 30 overfit"


@pytest.mark.parametrize("lab", sorted(LABS))
def test_references_import_and_take_the_reference_signature(lab: str) -> None:
    pkg = find_lab(str(REPO / "labs" / lab))
    for part in LABS[lab]:
        module = import_reference(pkg, part, fresh=True)
        assert train_signature_problem(module.train) is None
        assert train_return_problem(module.train) is None
        assert isinstance(module.hyp, dict) and len(module.RUNS) >= 2
    package = import_reference(pkg, LABS[lab][0]).__name__.rsplit(".", 1)[0]
    bonus = __import__(f"{package}.bonus", fromlist=["train"])  # the optional exercise: no rubric part
    assert train_signature_problem(bonus.train) is None


def test_lab4a_study_runs_carry_their_factors(tiny_datasets: Path) -> None:
    """Exercise 2's study on the tiny stand-in, one epoch: two runs that differ in depth only,
    which summarize keeps per configuration."""
    pkg = find_lab(str(REPO / "labs" / "lab4a"))
    module = import_reference(pkg, "ex2", fresh=True)
    result = module.train(data={"mnist": tiny_datasets / "MNIST"}, device="cpu", seed=0, epochs=1)
    assert result_problems(result) == []
    a, b = (r["factors"] for r in result["runs"])
    assert (a["depth"], b["depth"]) == (2, 4)
    assert {k for k in a if a[k] != b[k]} == {"depth"}
    assert [len(r["accuracy_by_epoch"]) for r in result["runs"]] == [1, 1]
    configs = summarize([result])["configs"]
    assert [c["factors"]["depth"] for c in configs] == [2, 4] and configs[0]["lr"] == 0.02
    assert exercises({"ex2": {"summary": {"configs": configs}}}) == [("ex2", "depth", [2, 4])]


def test_study_factors_must_be_plain_values() -> None:
    bad = {"runs": [{"name": "a", "test_accuracy": 0.9, "factors": {"depth": [2]}}], "best": "a"}
    assert any("factors" in p for p in result_problems(bad))


def test_samples_match_their_generator() -> None:
    out = subprocess.run([sys.executable, "scripts/make_lab4_samples.py", "--check"], cwd=REPO,
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ the feedback's runs table

def _run(name: str, *, widths: list[int], lr: float, ours: float | None, printed: float | None, **more) -> dict:
    kind = "mlp" if widths else "linear"
    return {"name": name, "label": f"{kind} · SGD lr {lr:g} · 1 epoch", "status": "trained", "cells": [4],
            "structure": {"kind": kind, "linear_layers": len(widths) + 1, "hidden_widths": widths, "source": "host"},
            "optimizer": "SGD", "lr": lr, "epochs": 1.0, "full_epochs": 1, "loss": "CrossEntropyLoss",
            "verified": {"test_accuracy": ours, "n": 10000} if ours is not None else {"reason": "the run crashed"},
            "printed_check": {"printed": printed, "verified": ours,
                              "delta": None if printed is None or ours is None else printed - ours, "typed": False},
            "metrics": {"test_accuracy": printed} if printed is not None else {},
            "curves": {"test accuracy (printed)": [[1, printed]]} if printed is not None else {}, **more}


RUNS = [
    _run("run 1", widths=[100, 100], lr=0.02, ours=0.9751, printed=0.9751,
         curves={"loss (recorded)": [[1, 0.61], [2, 0.22]], "test accuracy (printed)": [[1, 0.951], [2, 0.9751]]}),
    {**_run("run 2", widths=[], lr=0.02, ours=0.9213, printed=0.981), "printed_check": {
        "printed": 0.981, "verified": 0.9213, "delta": 0.0597, "typed": True, "why": "98.10 is typed in In[5]"}},
    _run("run 3", widths=[100, 100, 100, 100], lr=0.02, ours=None, printed=None, status="crashed",
         error={"cell": 7, "ename": "RuntimeError", "evalue": "mat1 and mat2 shapes cannot be multiplied (64x100 and 200x100)"}),
    _run("run 4", widths=[100, 100], lr=0.002, ours=0.9302, printed=0.9502),
    _run("run 5", widths=[200, 200], lr=0.02, ours=0.9770, printed=0.9770, status="superseded"),
]
REF = {"ex1": {"summary": {"configs": [{"name": "MLP", "factors": {"model_kind": "mlp", "depth": 2, "lr": 0.02}},
                                       {"name": "linear", "factors": {"model_kind": "linear", "depth": 0, "lr": 0.02}}]}},
       "ex4": {"summary": {"configs": [{"name": "a", "factors": {"model_kind": "mlp", "lr": 0.002}},
                                       {"name": "b", "factors": {"model_kind": "mlp", "lr": 0.02}}]}}}


def test_run_factors_read_the_run_record() -> None:
    assert run_factors(RUNS[0]) == {"model_kind": "mlp", "depth": 2, "width": 100, "optimizer": "SGD", "lr": 0.02,
                                    "loss": "CrossEntropyLoss", "epochs": 1}
    assert run_factors(RUNS[1])["depth"] == 0 and "width" not in run_factors(RUNS[1])
    assert run_factors({"name": "run 9"}) == {}, "what the record does not say is left out, never guessed"


def test_runs_view_rows_flags_and_exercises() -> None:
    view = runs_view(copy.deepcopy(RUNS), REF)
    assert view is not None
    rows = {r["name"]: r for r in view["rows"]}
    assert rows["run 1"]["flags"] == [] and rows["run 1"]["ours"] == 0.9751
    assert rows["run 1"]["exercises"] == ["ex1: model = mlp", "ex4: lr = 0.02"]
    assert rows["run 2"]["flags"] == ["typed"] and rows["run 2"]["exercises"][0] == "ex1: model = linear"
    assert rows["run 3"]["flags"] == ["crashed"] and "mat1 and mat2" in rows["run 3"]["error"]
    assert rows["run 3"]["ours"] is None and rows["run 3"]["ours_why"] == "the run crashed"
    assert rows["run 4"]["flags"] == ["mismatch"] and rows["run 4"]["exercises"] == ["ex1: model = mlp", "ex4: lr = 0.002"]
    assert rows["run 5"]["flags"] == ["superseded"] and "units = 200" in rows["run 5"]["setup"]
    assert len(view["charts"]) == 2, "accuracies and losses on their own axes"
    assert runs_view([]) is None and runs_view(None) is None
    # one run of a lab that compares none (LAB 1-1's notebooks) shows no runs block; the same run
    # in a lab whose reference compares runs does
    assert runs_view(copy.deepcopy(RUNS[:1])) is None
    assert runs_view(copy.deepcopy(RUNS[:1]), REF) is not None
    assert runs_view(copy.deepcopy(RUNS[:2])) is not None


def test_runs_table_in_the_feedback(tmp_path: Path) -> None:
    ev = {"path": "lab4a.ipynb", "mode": "execute", "status": "ok", "runs": copy.deepcopy(RUNS),
          "metrics": {}, "figures": [], "errors": []}
    grade = {"student_id": "0440001", "lab": "lab4a", "total": 20, "max": 40, "parts": []}
    html = render_student(grade, evidence=[ev], reference={"parts": REF}, dataset_stats={}, problems=[],
                          out_dir=tmp_path, pdf=False).read_text()
    table = html.split("Your training runs")[1].split("</table>")[0]
    for text in ("run 1", "ex1: model = mlp", "97.5", "typed", "crashed", "mismatch", "superseded", "mat1 and mat2"):
        assert text in table, text
    assert html.count('alt="curves of the training runs, labelled by run"') == 2


@pytest.mark.slow
@pytest.mark.kernel
@pytest.mark.parametrize("lab", sorted(LABS))
def test_samples_get_their_stated_outcomes(lab: str, tmp_path: Path) -> None:
    """`dllab lab validate labs/lab4X --samples` on the stand-ins (minutes: real kernels)."""
    from grader.cli import main

    assert main(["lab", "validate", str(REPO / "labs" / lab), "--samples", "--out", str(tmp_path), "--no-pdf"]) == 0
