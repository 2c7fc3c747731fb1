"""Run records (grader.runrecords): one record per training run, built from hand-written
evidence as the probe and the host write it (no kernel): a loop with a reused name, a re-run
cell, a crash, typed numbers, printed lines cut at the probe's offsets or read by cell, saved
mode, and the wiring into the pipeline and rescore."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from grader import runtext
from grader.evidence_model import validate
from grader.runrecords import build_runs, runs_for

MLP_SHAPES = {"fc1.weight": [100, 784], "fc1.bias": [100], "fc2.weight": [100, 100], "fc2.bias": [100],
              "fc3.weight": [10, 100], "fc3.bias": [10]}
MLP_DIMS = [["fc1", "Linear", 784, 100], ["act", "ReLU", None, None], ["fc2", "Linear", 100, 100],
            ["fc3", "Linear", 100, 10]]


def _nb(cells: list[tuple[int, str, str]]) -> dict[str, Any]:
    """A notebook of code cells (In[n], source, stdout)."""
    nb = new_notebook(cells=[new_code_cell(src, execution_count=n, outputs=[new_output(
        "stream", name="stdout", text=out)] if out else []) for n, src, out in cells])
    return json.loads(json.dumps(nb))


def _ev(**records: Any) -> dict[str, Any]:
    base = {"path": "lab4a.ipynb", "mode": "execute", "status": "ok", "models": [], "optimizers": [],
            "training": [], "evaluations": [], "dataloaders": [], "schedulers": [], "errors": [],
            "verified_runs": [], "metrics": {}}
    base.update(records)
    return base


def _model(ref: int, cell: int, dims: list | None = None) -> dict[str, Any]:
    return {"ref": ref, "class": "MLP", "cell": cell, "index": cell - 1, "parameters": 89610, "names": ["model"],
            "layers": [[d[0], d[1]] for d in (dims or MLP_DIMS)], "dims": dims or MLP_DIMS}


def _opt(ref: int, model: int, cell: int, lr: float, *, steps: int = 20, out_at: list | None = None,
         **more: Any) -> dict[str, Any]:
    o = {"ref": ref, "type": "SGD", "lr": lr, "lr_changes": [[1, lr]], "momentum": 0.0, "weight_decay": 0.0,
         "model_refs": [model], "model_ref": model, "cells_stepped": [cell] if steps else [], "cell": cell,
         "index": cell - 1, "steps": steps, "weights_changed": bool(steps),
         "checksum_start": [float(ref), 1.0], "checksum_now": [float(ref) + 0.5, 2.0]}
    if out_at:
        o["out_at"] = out_at
    o.update(more)
    return o


def _session(model: int, cell: int, out_at: list | None = None, loss: float = 5.0, **more: Any) -> dict[str, Any]:
    t = {"model_ref": model, "cell": cell, "index": cell - 1, "samples": 600, "batches": 10, "dataset": "mnist",
         "dataset_length": 600, "loader": ["train_loader"], "split": "train", "loss": "CrossEntropyLoss",
         "loss_sum": loss, "loss_n": 10}
    if out_at:
        t["out_at"] = out_at
    t.update(more)
    return t


def _eval(model: int, cell: int, at: int | None = None) -> dict[str, Any]:
    e = {"model_ref": model, "cell": cell, "index": cell - 1, "samples": 1000, "batches": 10, "dataset": "mnist",
         "split": "test", "loader": ["test_loader"]}
    if at is not None:
        e["out_at"] = [at, at]
    return e


LOOP_SRC = "for lr in [0.002, 0.02, 0.2]:\n    model = MLP()\n    opt = optim.SGD(model.parameters(), lr=lr)\n" \
           "    train(model, opt, 2)\n"
LOOP_BLOCKS = [("lr 0.002\n", "epoch 1 loss 0.50\n", "epoch 2 loss 0.30\n", "Test accuracy: 95.12 %\n"),
               ("lr 0.02\n", "epoch 1 loss 0.40\n", "epoch 2 loss 0.20\n", "Test accuracy: 97.34 %\n"),
               ("lr 0.2\n", "epoch 1 loss 2.30\n", "epoch 2 loss 2.31\n", "Test accuracy: 11.35 %\n")]


def _loop(offsets: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Three runs trained in a loop in In[4], one name `model` for all; printed lines of the
    three in one output. The probe's offsets: first step after the `lr` line, last step
    before the epoch-2 line, the evaluation after it."""
    text, models, opts, sessions, evals = "", [], [], [], []
    for k, (head, e1, e2, test) in enumerate(LOOP_BLOCKS):
        lr = [0.002, 0.02, 0.2][k]
        m, o = 10 * (k + 1), 10 * (k + 1) + 1
        first = len(text) + len(head)
        last = first + len(e1)
        ev_at = last + len(e2)
        text += head + e1 + e2 + test
        models.append(_model(m, 4))
        opts.append(_opt(o, m, 4, lr, out_at=[first, last] if offsets else None))
        sessions += [_session(m, 4, [first, first + len(e1)] if offsets else None, loss=5.0 - k),
                     _session(m, 4, [first + len(e1), last] if offsets else None, loss=3.0 - k)]
        evals.append(_eval(m, 4, ev_at if offsets else None))
    verified = [{"optimizer": 11, "test_accuracy": 0.951, "n": 10000, "hidden_accuracy": 0.95, "hidden_n": 2000,
                 "digest": "aa", "shapes": MLP_SHAPES, "ops": {"linear": 3, "relu": 2}},
                {"optimizer": 21, "test_accuracy": 0.9734, "n": 10000, "digest": "bb", "shapes": MLP_SHAPES,
                 "ops": {"aten::linear": 3, "aten::relu_": 2}}]
    ev = _ev(models=models, optimizers=opts, training=sessions, evaluations=evals, verified_runs=verified,
             dataloaders=[{"loader": ["train_loader"], "dataset": "mnist", "batch_size": 60, "split": "train"},
                          {"loader": ["test_loader"], "dataset": "mnist", "batch_size": 100, "split": "test"}])
    nb = _nb([(1, "import torch", ""), (2, "class MLP: ...", ""), (3, "def train(model, opt, n): ...", ""),
              (4, LOOP_SRC, text)])
    return ev, nb


def _check_loop(runs: list[dict[str, Any]]) -> None:
    assert [r["name"] for r in runs] == ["run 1", "run 2", "run 3"]
    assert [r["lr"] for r in runs] == [0.002, 0.02, 0.2]
    assert [r["metrics"].get("test_accuracy") for r in runs] == pytest.approx([0.9512, 0.9734, 0.1135])
    assert [r["curves"]["train_loss (printed)"] for r in runs] == [[[1.0, 0.5], [2.0, 0.3]], [[1.0, 0.4], [2.0, 0.2]],
                                                                   [[1.0, 2.3], [2.0, 2.31]]]
    assert all(r["status"] == "trained" and r["cells"] == [4] for r in runs)


def test_a_loop_with_one_reused_name_gives_one_record_per_run_cut_at_the_offsets() -> None:
    ev, nb = _loop()
    runs = build_runs(ev, notebook=nb)
    _check_loop(runs)
    first = runs[0]
    assert first["structure"] == {"kind": "mlp", "linear_layers": 3, "hidden_widths": [100, 100], "conv_layers": 0,
                                  "conv_channels": [], "activations": {"relu": 2}, "params": 89610,
                                  "source": "host", "dims": "784-100-100-10"}
    assert runs[1]["structure"]["activations"] == {"relu": 2}  # aten names read as op names
    # not captured: the probe's dims stand in
    assert runs[2]["structure"]["source"] == "probe" and runs[2]["structure"]["hidden_widths"] == [100, 100]
    assert first["label"] == "MLP 784-100-100-10 · SGD lr 0.002 · 2 epochs"
    assert (first["epochs"], first["full_epochs"], first["samples"], first["batches"], first["batch_size"]) == \
           (2.0, 2, 1200, 20, 60)
    assert first["loss"] == "CrossEntropyLoss" and first["train_dataset"] == "mnist"
    # two loaders under one name: the size that fits its passes (600 samples in 10 batches)
    ev2 = copy.deepcopy(ev)
    ev2["dataloaders"].append({"loader": ["train_loader"], "dataset": "mnist", "batch_size": 128, "split": "train"})
    assert build_runs(ev2)[0]["batch_size"] == 60
    assert first["curves"]["loss (recorded)"] == [[1.0, 0.5], [2.0, 0.3]]
    assert first["verified"] == {"test_accuracy": 0.951, "n": 10000, "hidden_accuracy": 0.95, "hidden_n": 2000,
                                 "digest": "aa"}
    assert "reason" in runs[2]["verified"] and "test_accuracy" not in runs[2]["verified"]
    assert first["printed_check"]["typed"] is False and first["printed_check"]["delta"] == pytest.approx(0.0002)
    assert runs[2]["printed_check"] == {"printed": pytest.approx(0.1135), "verified": None, "delta": None,
                                        "typed": False, "why": runs[2]["printed_check"]["why"]}
    validate({**ev, "runs": runs})  # the records are what evidence.json holds


def test_without_offsets_a_loop_cell_is_read_whole_and_shared_by_its_evaluations_and_restarts() -> None:
    ev, nb = _loop(offsets=False)
    _check_loop(build_runs(ev, notebook=nb))
    # and without the notebook: the printed lines evidence kept (metrics.mentions) stand in
    mentions = [{"cell": 3, "kind": "test_accuracy", "raw": line.strip(), "value": 0.0}
                for block in LOOP_BLOCKS for line in block[1:]]
    runs = build_runs({**ev, "metrics": {"mentions": mentions}})
    _check_loop(runs)


def test_offsets_that_do_not_fit_the_captured_text_fall_back_to_the_cell() -> None:
    ev, nb = _loop()
    ev["optimizers"][2]["out_at"] = [10_000, 10_050]  # beyond the text (an output cut to its cap)
    _check_loop(build_runs(ev, notebook=nb))


def test_two_runs_in_one_cell_keep_their_own_final_metrics_when_the_cell_prints_more() -> None:
    """An extra summary line after the second run is that run's; a first-run header before
    its first step is nobody's; the lines after run 1's last step are run 1's until run 2 steps."""
    text = ("== start ==\n" "epoch 1 loss 0.9\n" "Test accuracy: 91.00 %\n" "val accuracy: 90.00 %\n"
            "epoch 1 loss 0.7\n" "Test accuracy: 96.00 %\n" "Test accuracy: 96.50 %\n")
    a0 = len("== start ==\n")
    a1 = a0  # run 1 steps once, before its epoch line
    b0 = text.index("epoch 1 loss 0.7")
    ev = _ev(models=[_model(10, 5), _model(20, 5)],
             optimizers=[_opt(11, 10, 5, 0.1, steps=10, out_at=[a0, a1]),
                         _opt(21, 20, 5, 0.01, steps=10, out_at=[b0, b0])],
             training=[_session(10, 5), _session(20, 5)])
    runs = build_runs(ev, notebook=_nb([(5, "run both", text)]))
    assert runs[0]["metrics"] == {"train_loss": 0.9, "test_accuracy": 0.91, "val_accuracy": 0.9}
    assert runs[1]["metrics"] == {"train_loss": 0.7, "test_accuracy": 0.965}


def test_a_re_run_cell_supersedes_the_earlier_run_of_the_same_configuration() -> None:
    src = "model = MLP()\nopt = optim.SGD(model.parameters(), lr=0.02)\ntrain(model, opt, 1)\n"
    ev = _ev(models=[_model(10, 5), _model(20, 7), _model(30, 9), _model(40, 9)],
             optimizers=[_opt(11, 10, 5, 0.02), _opt(21, 20, 7, 0.02), _opt(31, 30, 9, 0.02),
                         _opt(41, 40, 9, 0.02)],
             training=[_session(10, 5), _session(20, 7), _session(30, 9), _session(40, 9)])
    nb = _nb([(5, src, ""), (6, "print('x')", ""), (7, src + "\n", ""), (9, "for s in range(2):\n" + src, "")])
    runs = build_runs(ev, notebook=nb)
    assert [r["status"] for r in runs] == ["superseded", "trained", "trained", "trained"]
    assert runs[0]["notes"] == ["superseded by run 2: the same configuration run again by the same code later"]
    # a loop repeating one configuration in one cell supersedes nothing: the repeat is named
    assert runs[3]["notes"] == ["same configuration as run 2"]
    # another configuration by the same code is another run
    ev2 = copy.deepcopy(ev)
    ev2["optimizers"][1]["lr"] = ev2["optimizers"][1]["lr_changes"][0][1] = 0.002
    assert [r["status"] for r in build_runs(ev2, notebook=nb)][:2] == ["trained", "trained"]


def test_a_crashed_run_is_named_with_its_error_and_a_run_before_it_in_the_loop_is_not() -> None:
    small = [["fc1", "Linear", 784, 100], ["fc2", "Linear", 100, 10]]
    deep = [["fc1", "Linear", 784, 100], ["fc2", "Linear", 200, 100], ["fc3", "Linear", 100, 10]]
    err = {"cell": 6, "index": 5, "ename": "RuntimeError",
           "evalue": "mat1 and mat2 shapes cannot be multiplied (64x100 and 200x100)"}
    ev = _ev(models=[_model(10, 6, small), _model(20, 6, deep)],
             optimizers=[_opt(11, 10, 6, 0.02), _opt(21, 20, 6, 0.02, steps=0)],
             training=[_session(10, 6), _session(20, 6, samples=64, batches=1, dataset_length=600)],
             errors=[err, {"cell": 9, "index": 8, "ename": "NameError", "evalue": "name 'plt' is not defined"}])
    runs = build_runs(ev)
    assert [r["status"] for r in runs] == ["trained", "crashed"]
    assert runs[1]["error"] == {"cell": 6, "ename": "RuntimeError", "evalue": err["evalue"]}
    assert runs[1]["structure"]["linear_layers"] == 3 and runs[1]["label"].startswith("MLP 784-100-100-10")
    # a model that crashed before any optimizer was built is a run too
    ev["optimizers"] = ev["optimizers"][:1]
    runs = build_runs(ev)
    assert [(r["status"], r["optimizer_ref"], r["model_refs"]) for r in runs] == [
        ("trained", 11, [10]), ("crashed", None, [20])]
    # an optimizer built in the cell that crashed in its first batch knows no model yet: one run
    ev["optimizers"] = [ev["optimizers"][0], _opt(21, 20, 6, 0.02, steps=0, model_refs=[], model_ref=None)]
    runs = build_runs(ev)
    assert [(r["status"], r["optimizer_ref"], r["model_refs"], r["epochs"]) for r in runs] == [
        ("trained", 11, [10], 1.0), ("crashed", 21, [20], 0.11)]
    # a run that finished and was evaluated before an error in its own cell trained
    ev = _ev(models=[_model(10, 6)], optimizers=[_opt(11, 10, 6, 0.02)], training=[_session(10, 6)],
             evaluations=[_eval(10, 6)], errors=[err])
    [run] = build_runs(ev)
    assert run["status"] == "trained" and run["notes"][0].startswith("an error followed its training in In[6]")
    ev["evaluations"].append(_eval(10, 8))  # evaluated again later: its cells name that cell too
    assert build_runs(ev)[0]["cells"] == [6, 8]
    ev["evaluations"].pop()
    ev["evaluations"] = []
    assert build_runs(ev)[0]["status"] == "crashed"


def test_a_printed_accuracy_typed_into_the_code_or_far_from_the_measure_is_flagged() -> None:
    ev = _ev(models=[_model(10, 3), _model(20, 5), _model(30, 7)],
             optimizers=[_opt(11, 10, 3, 0.02), _opt(21, 20, 5, 0.02, momentum=0.9), _opt(31, 30, 7, 0.002)],
             training=[_session(10, 3), _session(20, 5), _session(30, 7)],
             verified_runs=[{"optimizer": 11, "test_accuracy": 0.9812, "n": 10000},
                            {"optimizer": 21, "test_accuracy": 0.9105, "n": 10000},
                            {"optimizer": 31, "test_accuracy": 0.9001, "n": 10000}])
    nb = _nb([(2, "note = 'the linear model: 98.10 %'", ""), (3, "train()", "Test accuracy: 98.10 %\n"),
              (5, "train()", "Test accuracy: 97.80 %\n"), (7, "train()  # momentum 0.9", "Test accuracy: 90.00 %\n")])
    literal, far, honest = (r["printed_check"] for r in build_runs(ev, notebook=nb))
    assert literal["typed"] is True and literal["why"] == "the printed 98.10 is written in the notebook's code"
    assert far["typed"] is True and "measures 91.05 % on 10000 test images" in far["why"]
    assert honest["typed"] is False and honest["delta"] == pytest.approx(-0.0001)
    # a literal written only in a LATER cell is not what printed it
    nb["cells"][0], nb["cells"][1] = nb["cells"][1], nb["cells"][0]
    assert build_runs(ev, notebook=nb)[0]["printed_check"]["typed"] is False


def test_what_counts_as_the_number_as_written() -> None:
    assert runtext.written_as(0.981, "acc: 98.10 % (epoch 5)") == "98.10"
    assert runtext.written_as(0.9734, "Accuracy of the network: 0.9734") == "0.9734"
    assert runtext.written_as(0.5, "epoch 5 acc 97") is None
    assert runtext.literal_in("98.10", ["x = 98.10"]) and not runtext.literal_in("98.10", ["x = 198.105"])
    assert not runtext.literal_in("0.9", ["momentum=0.9"])  # too few digits to say it was typed
    assert runtext.tolerance(0.98, 10000) == pytest.approx(0.01 + 2 * (0.98 * 0.02 / 10000) ** 0.5)


def test_continued_training_and_one_optimizer_for_two_models_are_noted() -> None:
    a = _opt(11, 10, 3, 0.02)
    b = _opt(21, 20, 5, 0.002, checksum_start=a["checksum_now"])
    c = _opt(31, 30, 7, 0.02, model_refs=[30, 40])
    ev = _ev(models=[_model(10, 3), _model(20, 5), _model(30, 7), _model(40, 7)], optimizers=[a, b, c],
             training=[_session(10, 3), _session(20, 5), _session(30, 7), _session(40, 7)])
    runs = build_runs(ev)
    assert runs[1]["notes"] == ["continued training of run 1 (it began from the weights run 1 ended with)"]
    assert runs[2]["notes"] == ["one optimizer for 2 models"] and runs[2]["samples"] == 1200
    ev["training"][0]["loss_sum"] = None  # the probe writes None for a sum that is not finite
    assert build_runs(ev)[0]["notes"] == ["its recorded loss was not finite (the run diverged)"]


def test_saved_mode_reads_runs_from_printed_lines_only(tmp_path: Path) -> None:
    from grader import collect

    out = "".join(f"lr {lr}\nepoch 1 loss {l1}\nepoch 2 loss {l2}\nTest accuracy: {acc} %\n"
                  for lr, l1, l2, acc in ((0.01, 0.9, 0.5, 90.5), (0.1, 0.8, 0.4, 93.25)))
    nb = new_notebook(cells=[new_code_cell("import torch", execution_count=1),
                             new_code_cell("for lr in [0.01, 0.1]:\n    train(lr)", execution_count=2,
                                           outputs=[new_output("stream", name="stdout", text=out)]),
                             new_code_cell("train(0.5)", execution_count=3, outputs=[new_output(
                                 "stream", name="stdout", text="epoch 1 loss 0.7\nepoch 2 loss 0.6\n")]),
                             new_code_cell("print(test())", execution_count=4, outputs=[new_output(
                                 "stream", name="stdout", text="Test accuracy: 95.00 %\n")])])
    path = tmp_path / "lab.ipynb"
    path.write_text(json.dumps(nb))
    ev = collect.from_saved(path, "lab.ipynb", run_dir=tmp_path / "run")
    runs = build_runs(ev)
    assert [(r["status"], r["lr"], r["metrics"]["test_accuracy"], r["cells"]) for r in runs] == [
        ("not-run", 0.01, 0.905, [2]), ("not-run", 0.1, 0.9325, [2]), ("not-run", None, 0.95, [3, 4])]
    assert runs[1]["curves"]["train_loss (printed)"] == [[1.0, 0.8], [2.0, 0.4]]
    assert runs[0]["verified"] == {"reason": "saved mode: nothing was run"}
    validate({**ev, "runs": runs})


def test_the_pipeline_fills_runs_after_the_run_and_rescore_fills_an_old_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grader import pipeline
    from grader.evidence_model import write_evidence
    from grader.rescore import stored_evidence

    ev, nb = _loop()

    def fake_execute(path: Path, rel: str, *, run_dir: Path, **_: Any) -> dict[str, Any]:
        (run_dir / "executed.ipynb").write_text(json.dumps(nb))
        return copy.deepcopy(ev)

    monkeypatch.setattr(pipeline, "_execute", fake_execute)
    monkeypatch.setattr(pipeline, "run_cache_key", lambda *a, **k: "key")
    monkeypatch.setattr(pipeline, "_to_cache", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "_limits", lambda rubric: type("L", (), {"max_host_bytes": 10 ** 9})())
    run_dir = tmp_path / "out" / "runs" / "s1" / "lab4a.ipynb"
    run_dir.mkdir(parents=True)
    settings = pipeline.GradeSettings(rubric_path=tmp_path / "rubric.yaml", out=tmp_path / "out")
    got = pipeline.run_one(tmp_path / "lab4a.ipynb", "lab4a.ipynb", submission_dir=tmp_path, run_dir=run_dir,
                           settings=settings, rubric=None, inputs="")
    _check_loop(got["runs"])
    # a folder graded before run records: rescore builds them from what it stored
    write_evidence(run_dir / "evidence.json", {**ev, "runs": []})
    [stored] = stored_evidence(tmp_path / "out", "s1")
    _check_loop(stored["runs"])


def test_odd_records_never_lose_the_evidence() -> None:
    ev = _ev(optimizers=[{"ref": "x", "steps": "many", "lr": "fast", "cells_stepped": [None, "a"],
                          "out_at": [5]}, "not a record"],
             training=[{"model_ref": None, "samples": -1}], errors=[{"cell": None}],
             verified_runs=[{"optimizer": None, "reason": "no run model was evaluated: timeout"}])
    runs = runs_for(ev, None)
    assert [r["status"] for r in runs] == ["not-trained"]
    assert runs[0]["verified"] == {"reason": "no run model was evaluated: timeout"}
    validate({**ev, "optimizers": [], "runs": runs})


def test_records_of_a_real_probe_run_are_cut_into_runs() -> None:
    """What the probe of branch i15-probe wrote for its kernel test's notebook (three runs in a
    loop under one name, printing a `\\r` progress bar and a line per epoch, then one cell
    twice), with the executed notebook's stdout: each run gets its own lines."""
    doc = json.loads((Path(__file__).parent / "data" / "runrecords_probe_loop.json").read_text())
    runs = build_runs(doc["evidence"], notebook=doc["notebook"])
    assert [(r["status"], r["label"], r["loss"]) for r in runs] == [
        ("trained", "Linear 784-10 · SGD lr 0.05 · 2 epochs", "CrossEntropyLoss"),
        ("trained", "MLP 784-32-10 · SGD lr 0.05 · 2 epochs", "cross_entropy"),
        ("trained", "MLP 784-32-32-10 · SGD lr 0.05 · 2 epochs", "CrossEntropyLoss"),
        ("superseded", "MLP 784-16-10 · Adam lr 0.01 · 1 epoch", "nll_loss"),
        ("trained", "MLP 784-16-10 · Adam lr 0.01 · 1 epoch", "nll_loss")]
    assert [r["metrics"]["test_accuracy"] for r in runs] == [0.546, 0.514, 0.322, 0.28, 0.342]
    for r in runs:  # the mean loss each run printed per epoch is the one the probe summed
        printed, recorded = r["curves"]["train_loss (printed)"], r["curves"]["loss (recorded)"]
        assert [x for x, _ in printed] == [x for x, _ in recorded]
        assert [v for _, v in printed] == pytest.approx([v for _, v in recorded], abs=1e-5)


def test_a_summary_cell_after_silent_runs_gives_each_run_its_printed_accuracy_in_order() -> None:
    # Lab 4B sample 4b04: runs trained silently in a loop (In[4]), their accuracies printed later
    # in a cell that trains and evaluates nothing (In[5]): typed there, so flagged per run
    ev = _ev(models=[_model(10, 4), _model(20, 4)],
             optimizers=[_opt(11, 10, 4, 0.02), _opt(21, 20, 4, 0.002)],
             training=[_session(10, 4), _session(20, 4)],
             verified_runs=[{"optimizer": 11, "test_accuracy": 0.9712, "n": 10000},
                            {"optimizer": 21, "test_accuracy": 0.9301, "n": 10000}])
    typed = 'print("lr 0.02: test accuracy 98.10 %")\nprint("lr 0.002: test accuracy 93.00 %")'
    printed = "lr 0.02: test accuracy 98.10 %\nlr 0.002: test accuracy 93.00 %\n"
    first, second = build_runs(ev, notebook=_nb([(4, "for lr in rates: train(lr)", ""), (5, typed, printed)]))
    assert (first["metrics"]["test_accuracy"], second["metrics"]["test_accuracy"]) == pytest.approx((0.981, 0.93))
    assert first["printed_check"]["typed"] is True and second["printed_check"]["typed"] is True
    # computed numbers printed the same way are not typed, and a cell whose count of accuracies
    # does not match the runs waiting for one gives none (no guessing)
    honest = build_runs(ev, notebook=_nb([(4, "for lr in rates: train(lr)", ""),
                                          (5, "for k, v in results.items(): print(k, v)",
                                           "lr 0.02: test accuracy 97.12 %\nlr 0.002: test accuracy 93.01 %\n")]))
    assert [r["printed_check"]["typed"] for r in honest] == [False, False]
    one = build_runs(ev, notebook=_nb([(4, "for lr in rates: train(lr)", ""),
                                       (5, "print(best)", "best: test accuracy 97.12 %\n")]))
    assert [r["metrics"].get("test_accuracy") for r in one] == [None, None]


def test_a_run_tested_then_trained_further_is_two_runs_the_tested_state_unverified() -> None:
    # Lab 4B: 10 epochs in In[5], tested in In[6] (77.20 %), 20 more epochs in In[7], tested in In[8]
    sessions = [_session(10, 5) for _ in range(10)] + [_session(10, 7) for _ in range(20)]
    o = _opt(11, 10, 5, 0.001, steps=300, cells_stepped=[5, 7])
    ev = _ev(models=[_model(10, 4)], optimizers=[o], training=sessions, evaluations=[_eval(10, 6), _eval(10, 8)],
             verified_runs=[{"optimizer": 11, "test_accuracy": 0.844, "n": 10000, "digest": "end"}])
    nb = _nb([(5, "train(model, opt, 10)", ""), (6, "test(model)", "Test accuracy: 77.20 %\n"),
              (7, "train(model, opt, 20)", ""), (8, "test(model)", "Test accuracy: 84.40 %\n")])
    early, late = build_runs(ev, notebook=nb)
    assert (early["full_epochs"], late["full_epochs"]) == (10, 30)
    assert (early["metrics"]["test_accuracy"], late["metrics"]["test_accuracy"]) == pytest.approx((0.772, 0.844))
    assert early["status"] == late["status"] == "trained"
    assert early["verified"].get("test_accuracy") is None and "earlier state" in early["verified"]["reason"]
    assert late["verified"]["test_accuracy"] == 0.844 and any("trained further" in n for n in late["notes"])
    # never tested in between: one run of 30 epochs, as before
    one = build_runs({**ev, "evaluations": [_eval(10, 8)]}, notebook=nb)
    assert len(one) == 1 and one[0]["full_epochs"] == 30


def test_results_printed_after_a_silent_loop_are_each_runs_in_order() -> None:
    # the loop trains three runs printing only epoch lines; three accuracy lines follow the loop
    # in the same cell (after run 3's last step): one per run, in order, typed here
    text, models, opts, sessions = "", [], [], []
    for k, lr in enumerate([0.002, 0.02, 0.2]):
        m, o = 10 * (k + 1), 10 * (k + 1) + 1
        head, e1, e2 = f"lr {lr}\n", "epoch 1 loss 0.50\n", "epoch 2 loss 0.30\n"
        first = len(text) + len(head)
        last = first + len(e1)
        text += head + e1 + e2
        models.append(_model(m, 4))
        opts.append(_opt(o, m, 4, lr, out_at=[first, last]))
        sessions += [_session(m, 4, [first, first + len(e1)]), _session(m, 4, [first + len(e1), last])]
    tail = "a: test accuracy 98.10 %\nb: test accuracy 98.20 %\nc: test accuracy 98.30 %\n"
    src = LOOP_SRC + 'print("a: test accuracy 98.10 %")\nprint("b: test accuracy 98.20 %")\n' \
                     'print("c: test accuracy 98.30 %")\n'
    ev = _ev(models=models, optimizers=opts, training=sessions,
             verified_runs=[{"optimizer": 10 * (k + 1) + 1, "test_accuracy": 0.9, "n": 10000} for k in range(3)])
    runs = build_runs(ev, notebook=_nb([(4, src, text + tail)]))
    assert [r["metrics"].get("test_accuracy") for r in runs] == pytest.approx([0.981, 0.982, 0.983])
    assert [r["printed_check"].get("typed") for r in runs] == [True, True, True]
    # honest lines counted differently (two for three runs) stay the last run's, as before
    two = build_runs(ev, notebook=_nb([(4, LOOP_SRC, text + "best: test accuracy 90.00 %\nmean: test accuracy "
                                                          "89.00 %\n")]))
    assert [r["metrics"].get("test_accuracy") for r in two] == [None, None, 0.89]
