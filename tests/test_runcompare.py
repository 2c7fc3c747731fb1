"""run_comparison on hand-written run records (grader.evidence_model.Run dumps): each factor, the
best pair, the credits that multiply down, what is missing or crashed, one model counted once,
typed numbers, unknown values, saved mode, and LAB 1-3's study as its lr_or_schedule use. No kernel."""

from __future__ import annotations

from typing import Any

import pytest

from grader.checks import run_check
from grader.checks.base import UNCONFIRMED, CheckContext
from grader.evidence_model import Run
from honest import line_figure, runs_evidence

MLP2 = {"kind": "mlp", "linear_layers": 3, "hidden_widths": [100, 100], "activations": {"relu": 2}, "params": 89610}


def run(k: int, **kw: Any) -> dict[str, Any]:
    """An honest trained MLP run, `run k`, in cell In[k + 2]: SGD 0.02, 5 epochs, batch 64, printed
    and verified 97.5 %, a digest of its own; `kw` replaces fields (`structure` merges)."""
    base: dict[str, Any] = {
        "name": f"run {k}", "cells": [k + 2], "status": "trained", "optimizer_ref": 100 + k, "model_refs": [k],
        "structure": dict(MLP2), "optimizer": "SGD", "lr": 0.02, "schedulers": [], "full_epochs": 5, "epochs": 5.0,
        "batch_size": 64, "train_dataset": "mnist", "loss": "CrossEntropyLoss",
        "metrics": {"test_accuracy": 0.975},
        "verified": {"test_accuracy": 0.975, "n": 10000, "digest": f"d{k}"}}
    structure = kw.pop("structure", {})
    base.update(kw)
    base["structure"] = {**base["structure"], **structure}
    return Run.model_validate(base).model_dump()  # as evidence.json holds it


def ev(*runs: dict, path: str = "lab4a.ipynb", **kw: Any) -> dict[str, Any]:
    base = {"path": path, "mode": "execute", "status": "ok", "runs": list(runs), "figures": [], "evaluations": [],
            "optimizers": [], "metrics": {}}
    base.update(kw)
    return base


def ctx(*evidence: dict) -> CheckContext:
    return CheckContext(student_id="0556001", part_id="ex2", dataset="mnist", evidence=evidence[:1],
                        all_evidence=evidence)


def check(*evidence: dict, **params: Any):
    return run_check("run_comparison", ctx(*evidence), params)


PAIRS = {  # factor -> (fields of run 1, fields of run 2): two runs differing in that factor alone
    "optimizer": ({}, {"optimizer": "RMSprop"}),
    "lr": ({"lr": 0.002}, {}),
    "depth": ({}, {"structure": {"linear_layers": 5, "hidden_widths": [100] * 4, "activations": {"relu": 4}}}),
    "width": ({}, {"structure": {"hidden_widths": [200, 200]}}),
    "epochs": ({}, {"full_epochs": 10, "epochs": 10.0}),
    "loss": ({}, {"loss": "nll_loss"}),
    "batch_size": ({}, {"batch_size": 128}),
    # a linear model has no hidden layer nor activation: model kind changes those by itself
    "model_kind": ({"structure": {"kind": "linear", "linear_layers": 1, "hidden_widths": [], "activations": {}}}, {}),
    # four conv layers change the FC head too: not a second difference
    "conv_layers": ({"structure": {"kind": "cnn", "conv_layers": 2, "hidden_widths": [120, 84]}},
                    {"structure": {"kind": "cnn", "conv_layers": 4, "hidden_widths": [256]}}),
    "any": ({}, {"optimizer": "Adam"}),
}


@pytest.mark.parametrize("factor", sorted(PAIRS))
def test_each_factor_finds_its_pair_and_nothing_else(factor: str) -> None:
    one, two = PAIRS[factor]
    out = check(ev(run(1, **one), run(2, **two)), factor=factor)
    assert (out.status, out.fraction) == ("pass", 1.0), out.message
    assert "run 1" in out.message and "run 2" in out.message
    # the same two runs compared on another factor they share: no pair
    other = "loss" if factor not in ("loss", "any") else "batch_size"
    assert check(ev(run(1, **one), run(2, **two)), factor=other).status == "fail"


def test_pair_message_names_the_runs_their_values_and_our_accuracies() -> None:
    deep = run(2, structure=PAIRS["depth"][1]["structure"], verified={"test_accuracy": 0.971, "n": 10000,
                                                                     "digest": "d2"})
    out = check(ev(run(1, verified={"test_accuracy": 0.976, "n": 10000, "digest": "d1"}), deep),
                factor="depth", values=[2, 4])
    assert out.status == "pass"
    assert "run 1 (2 hidden layers) vs run 2 (4 hidden layers)" in out.message
    assert "97.6 % vs 97.1 %" in out.message and "grader" in out.message
    assert out.evidence[:2] == ("lab4a.ipynb#cell 3", "lab4a.ipynb#cell 4")


def test_better_result_of_either_run_is_never_graded() -> None:
    worse_deep = run(2, structure=PAIRS["depth"][1]["structure"], verified={"test_accuracy": 0.90, "digest": "x"})
    better_deep = run(2, structure=PAIRS["depth"][1]["structure"], verified={"test_accuracy": 0.99, "digest": "x"})
    a, b = check(ev(run(1), worse_deep), factor="depth"), check(ev(run(1), better_deep), factor="depth")
    assert (a.status, a.fraction) == (b.status, b.fraction) == ("pass", 1.0)


def test_off_the_handout_values_earns_off_values_credit() -> None:
    out = check(ev(run(1, lr=0.1), run(2, lr=0.01)), factor="lr", values=[0.002, 0.02])
    assert out.status == "partial" and out.fraction == pytest.approx(0.75)
    assert "lr 0.002 and lr 0.02" in out.message
    assert check(ev(run(1, lr=0.02), run(2, lr=0.002)), factor="lr", values=[0.002, 0.02]).fraction == 1.0
    names = check(ev(run(1, optimizer="rmsprop"), run(2)), factor="optimizer", values=["RMSprop", "SGD"])
    assert names.fraction == 1.0  # names in any case


def test_a_second_difference_is_partial_and_named_and_a_clean_pair_is_preferred() -> None:
    deep_long = run(2, structure=PAIRS["depth"][1]["structure"], full_epochs=10, epochs=10.0)
    out = check(ev(run(1), deep_long), factor="depth", values=[2, 4])
    assert out.status == "partial" and out.fraction == pytest.approx(0.5)
    assert "also differ in epochs (5 epochs vs 10 epochs)" in out.message
    # a third run makes a clean pair with run 2: that one is chosen
    clean = check(ev(run(1), deep_long, run(3, full_epochs=10, epochs=10.0)), factor="depth", values=[2, 4])
    assert (clean.status, clean.fraction) == ("pass", 1.0) and "run 3" in clean.message
    # agree_on narrows what must be shared: epochs not asked, so not a difference
    assert check(ev(run(1), deep_long), factor="depth", agree_on=["width", "optimizer"]).fraction == 1.0
    # an extra difference off the handout's values: the credits multiply
    off = check(ev(run(1, lr=0.1), run(2, lr=0.01, optimizer="Adam")), factor="lr", values=[0.002, 0.02])
    assert off.fraction == pytest.approx(0.5 * 0.75) and "optimizer (SGD vs Adam)" in off.message


def test_not_shown_earns_not_shown_credit_and_a_chart_after_both_runs_shows_it() -> None:
    quiet = {"metrics": {}}
    evaluated = [{"model_ref": 1, "split": "test", "cell": 9}, {"model_ref": 2, "split": "test", "cell": 9}]
    runs = (run(1, **quiet), run(2, lr=0.002, **quiet))
    out = check(ev(*runs, evaluations=evaluated), factor="lr")
    assert out.status == "partial" and out.fraction == pytest.approx(0.75) and "not shown" in out.message
    chart = check(ev(*runs, evaluations=evaluated, figures=[{**line_figure(9), "n_lines": 2}]), factor="lr")
    assert chart.fraction == 1.0 and "lab4a.ipynb#cell 9" in chart.evidence
    # a chart drawn before the second run, or of one line, does not compare them
    early = check(ev(*runs, evaluations=evaluated, figures=[{**line_figure(3), "n_lines": 2}]), factor="lr")
    one_line = check(ev(*runs, evaluations=evaluated, figures=[{**line_figure(9), "n_lines": 1}]), factor="lr")
    assert early.fraction == one_line.fraction == pytest.approx(0.75)
    # both accuracies printed, but the rubric asks for a chart
    assert check(ev(run(1), run(2, lr=0.002)), factor="lr", shown="plot").fraction == pytest.approx(0.75)
    assert check(ev(*runs, evaluations=evaluated), factor="lr", shown="none").fraction == 1.0


def test_a_run_never_evaluated_on_the_test_split_earns_not_evaluated_credit() -> None:
    runs = (run(1), run(2, lr=0.002, metrics={}))
    out = check(ev(*runs), factor="lr", shown="none")
    assert out.status == "partial" and out.fraction == pytest.approx(0.5) and "never evaluated" in out.message
    on_val = [{"model_ref": 2, "split": "train", "cell": 5}]
    assert check(ev(*runs, evaluations=on_val), factor="lr", shown="none").fraction == pytest.approx(0.5)
    on_test = [{"model_ref": 2, "split": "test", "cell": 5}]
    assert check(ev(*runs, evaluations=on_test), factor="lr", shown="none").fraction == 1.0


def test_one_run_only_fails_naming_the_missing_run() -> None:
    out = check(ev(run(2), run(3)), factor="depth", values=[2, 4])
    assert out.status == "fail" and out.fraction == 0
    assert out.message.startswith("no run with 4 hidden layers; runs found: 2 hidden layers (run 2, run 3)")
    unnamed = check(ev(run(1)), factor="optimizer")
    assert unnamed.status == "fail" and "no two runs that differ in optimizer" in unnamed.message
    assert "SGD (run 1)" in unnamed.message


def test_a_crashed_run_counts_as_not_trained_and_its_error_is_shown() -> None:
    crashed = run(2, status="crashed", structure=PAIRS["depth"][1]["structure"], verified={}, metrics={},
                  error={"cell": 12, "ename": "RuntimeError",
                         "evalue": "mat1 and mat2 shapes cannot be multiplied (64x100 and 200x10)"})
    out = check(ev(run(1), crashed), factor="depth", values=[2, 4])
    assert out.status == "fail"
    assert "no run with 4 hidden layers" in out.message
    assert "run 2 (4 hidden layers) crashed in In[12]: RuntimeError: mat1 and mat2 shapes" in out.message


def test_runs_of_one_model_are_one_run() -> None:
    twin = run(2, lr=0.002, verified={"test_accuracy": 0.975, "n": 10000, "digest": "d1"})
    out = check(ev(run(1), twin), factor="lr")
    assert out.status == "fail" and "no two runs that differ in lr" in out.message
    # an unknown digest is not "the same"
    assert check(ev(run(1, verified={"test_accuracy": 0.97}), run(2, lr=0.002, verified={"test_accuracy": 0.96})),
                 factor="lr").status == "pass"


def test_typed_numbers_are_flagged_and_named_but_do_not_change_the_credit() -> None:
    typed = run(2, lr=0.002, printed_check={"printed": 0.981, "verified": 0.912, "delta": 0.069, "typed": True,
                                            "why": "98.10 is a literal in In[4]"})
    out = check(ev(run(1), typed), factor="lr")
    assert (out.status, out.fraction) == ("pass", 1.0)
    assert "mismatch" in out.flags and "run 2's printed 98.1 %" in out.message and "literal" in out.message
    assert "mismatch" not in check(ev(run(1), run(2, lr=0.002)), factor="lr").flags


def test_an_unknown_value_is_never_a_difference_but_is_named() -> None:
    out = check(ev(run(1, loss=None), run(2, structure=PAIRS["depth"][1]["structure"])), factor="depth")
    assert (out.status, out.fraction) == ("pass", 1.0)
    assert "unknown, not counted as a difference: loss of run 1" in out.message
    # the factor itself unknown on one side: no pair, never a guess, and no "not found" either:
    # the grader could not tell, so a TA looks
    blind = check(ev(run(1, optimizer=None), run(2, optimizer="Adam")), factor="optimizer")
    assert blind.status == "manual" and UNCONFIRMED in blind.flags and "optimizer of run 1" in blind.message


def test_pair_across_two_notebooks_of_the_submission() -> None:
    a, b = ev(run(1), path="ex4_a.ipynb"), ev(run(1, lr=0.002, verified={"test_accuracy": 0.93, "digest": "e"}),
                                              path="ex4_b.ipynb")
    out = check(a, b, factor="lr", values=[0.002, 0.02])
    assert out.status == "pass" and set(out.evidence[:2]) == {"ex4_a.ipynb#cell 3", "ex4_b.ipynb#cell 3"}
    # both notebooks number their runs from 1: the message says whose
    assert "ex4_a.ipynb run 1" in out.message and "ex4_b.ipynb run 1" in out.message, out.message


def test_a_pair_within_one_notebook_is_preferred_to_one_across_notebooks() -> None:
    # exercise 1 in its own notebook; the 200-unit MLP of another notebook is not its MLP
    ex1 = ev(run(1), run(2, structure=LINEAR), path="lab4a-ex1.ipynb")
    ex3 = ev(run(1, structure={"hidden_widths": [200, 200]}), path="lab4a-ex3.ipynb")
    out = check(ex3, ex1, factor="model_kind", values=["mlp", "linear"])
    assert out.status == "pass" and "lab4a-ex1.ipynb run 1" in out.message and "lab4a-ex3" not in out.message


def test_fewer_values_than_min_settings_is_partial() -> None:
    out = check(ev(run(1), run(2, lr=0.002)), factor="lr", min_settings=3)
    assert out.status == "partial" and out.fraction == pytest.approx(2 / 3, abs=1e-3) and "3 asked" in out.message


def test_an_unconfirmed_run_that_would_make_the_pair_goes_to_a_ta() -> None:
    uncaptured = run(2, lr=0.002, verified={"reason": "the run model could not be captured"})
    out = check(ev(run(1), uncaptured), factor="lr")
    assert out.status == "manual" and UNCONFIRMED in out.flags
    assert "could not be captured" in out.message and "not a finding against your work" in out.message
    # beside a confirmed pair it decides nothing
    done = check(ev(run(1), uncaptured, run(3, lr=0.002)), factor="lr")
    assert (done.status, done.fraction) == ("pass", 1.0) and "run 3" in done.message
    # a model at chance level by the grader's evaluation is not backed either
    chance = run(2, lr=5.0, verified={"test_accuracy": 0.101, "n": 10000, "digest": "c"})
    e = ev(run(1), chance, verified_runs=[{"optimizer": 102, "classes": 10, "test_accuracy": 0.101, "n": 10000}])
    assert check(e, factor="lr").status == "manual"


def test_saved_mode_goes_to_a_ta_with_the_printed_runs() -> None:
    printed = [run(1, status="not-run", label="lr 0.02", verified={}), run(2, status="not-run", label="lr 0.002",
                                                                          verified={}, metrics={"test_accuracy": 0.93})]
    out = check(ev(*printed, mode="saved"), factor="lr", values=[0.002, 0.02])
    assert out.status == "manual" and "Saved mode" in out.message
    assert "run 1 (lr 0.02" in out.message and "run 2 (lr 0.002, printed 93.0 %)" in out.message
    assert check(ev(mode="saved"), factor="lr").status == "manual"


def test_no_run_and_no_optimizer_fails_and_stepped_optimizers_without_records_go_to_a_ta() -> None:
    assert check(ev(), factor="lr").status == "fail"
    out = check(ev(optimizers=[{"ref": 1, "steps": 50}]), factor="lr")
    assert out.status == "manual" and UNCONFIRMED in out.flags


def test_lr_or_schedule_is_lab_1_3s_study() -> None:
    e = {"path": "lab1-3.ipynb", "status": "ok", "metrics": {}, "figures": [line_figure(4)], "normalization": [],
         "schedulers": [], "errors": [], **runs_evidence((0.1, 0.01))}
    for study, compare in [({"min_runs": 2, "require_plot": True}, {"shown": "plot"}),
                           ({"min_runs": 2, "require_plot": False, "require_scheduler": True},
                            {"shown": "any", "require_scheduler": True}),
                           ({"min_runs": 3, "require_plot": True}, {"shown": "plot", "min_settings": 3})]:
        for figures in ([line_figure(4)], []):
            c = CheckContext(student_id="s", part_id="lab1-3", dataset="cifar10", evidence=({**e, "figures": figures},))
            a = run_check("lr_study", c, study)
            b = run_check("run_comparison", c, {"factor": "lr_or_schedule", "agree_on": [], **compare})
            assert (a.status, a.fraction, a.message) == (b.status, b.fraction, b.message)
    # runs records are not needed for it: the probe's records are what it reads
    c = CheckContext(student_id="s", part_id="lab1-3", dataset="cifar10", evidence=(e,))
    assert run_check("run_comparison", c, {"factor": "lr_or_schedule", "shown": "plot"}).status == "pass"


LINEAR = {"kind": "linear", "linear_layers": 1, "hidden_widths": [], "activations": {}}


def test_a_linear_model_is_no_depth_or_width_run_so_a_crashed_deep_run_still_fails_the_exercise() -> None:
    # Lab 4A sample 4a05: ex1's linear run and the 2-layer MLP are there, the 4-layer run crashed.
    crashed = run(4, status="crashed", structure=PAIRS["depth"][1]["structure"], verified={}, metrics={},
                  error={"cell": 4, "ename": "RuntimeError", "evalue": "mat1 and mat2 shapes cannot be multiplied"})
    out = check(ev(run(1), run(2, structure=LINEAR), run(3, structure={"hidden_widths": [200, 200]}), crashed),
                factor="depth", values=[2, 4])
    assert (out.status, out.fraction) == ("fail", 0.0), out.message
    assert "no run with 4 hidden layers" in out.message and "run 4 (4 hidden layers) crashed in In[4]" in out.message
    assert "0 hidden layers" not in out.message, "the linear run is not listed among the MLP depths"
    width = check(ev(run(1), run(2, structure=LINEAR)), factor="width", values=[100, 200])
    assert width.status == "fail" and "width unknown" not in width.message
    cnn = {"kind": "cnn", "conv_layers": 2, "hidden_widths": [120]}
    assert check(ev(run(1), run(2, structure=cnn)), factor="conv_layers").status == "fail"


def test_the_closest_earliest_pair_stands_for_the_exercise() -> None:
    # linear vs the base MLP (runs 1, 2), not vs the 200-unit MLP of exercise 3 trained later
    wide = run(3, structure={"hidden_widths": [200, 200]})
    out = check(ev(run(1), run(2, structure=LINEAR), wide), factor="model_kind", values=["mlp", "linear"])
    assert out.status == "pass" and out.message.startswith("run 1") and "run 2" in out.message, out.message


def test_typed_numbers_of_runs_outside_the_pair_flag_the_item_without_a_sentence() -> None:
    typed = {"printed": 0.981, "verified": 0.912, "delta": 0.069, "typed": True, "why": "a literal"}
    out = check(ev(run(1), run(2, lr=0.002), run(3, loss="nll_loss", printed_check=typed)), factor="lr")
    assert out.status == "pass" and "mismatch" in out.flags and "run 3" not in out.message


def test_a_run_that_printed_nothing_while_training_is_backed_by_the_hosts_evaluation() -> None:
    # lrstudy's rule asks for output in the cells a run stepped in; a run model the host itself
    # measured above chance needs none (Lab 4B sample 4b04 trains silently, prints later)
    silent = [{"ref": 100 + k, "model_refs": [k], "cells_stepped": [k + 2], "weights_changed": True,
               "host_output": False, "steps": 50} for k in (1, 2)]
    models = [{"ref": k, "names": ["model"]} for k in (1, 2)]
    training = [{"model_ref": k, "cell": k + 2, "batches": 50, "loader": ["train_loader"]} for k in (1, 2)]
    entries = [{"optimizer": 100 + k, "classes": 10, "test_accuracy": 0.975, "n": 10000} for k in (1, 2)]
    e = ev(run(1), run(2, lr=0.002), optimizers=silent, models=models, training=training, verified_runs=entries)
    assert check(e, factor="lr").status == "pass"
    # without the host's evaluation of one of them, the same silent run goes to a TA
    e2 = ev(run(1), run(2, lr=0.002, verified={"reason": "not captured"}), optimizers=silent, models=models,
            training=training, verified_runs=entries[:1])
    assert check(e2, factor="lr").status == "manual"


def test_a_run_whose_factor_the_grader_could_not_read_sends_a_missing_pair_to_a_ta() -> None:
    # a custom module the structure reader could not classify: its depth is unknown, so "no run
    # with 4 hidden layers" would be a false "not found"
    odd = run(2, structure={"kind": "other", "hidden_widths": None, "linear_layers": None})
    out = check(ev(run(1), odd), factor="depth", values=[2, 4])
    assert out.status == "manual" and UNCONFIRMED in out.flags and "could not tell the depth of run 2" in out.message
    # every run read: the missing run is a finding
    assert check(ev(run(1), run(2, lr=0.002)), factor="depth", values=[2, 4]).status == "fail"
