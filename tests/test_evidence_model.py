"""The evidence schema (grader.evidence_model): validated when written and read, the same keys
in both modes, version 1 folders upgraded, invalid evidence a notebook's result, the cache."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader import collect
from grader.evidence_model import (KEYS, SCHEMA_VERSION, InvalidEvidence, read_evidence, stored_or_invalid,
                                   upgrade_v1, validate, write_evidence)

import intake_fixtures as fx

DATA = Path(__file__).parent / "data"
V1 = DATA / "evidence_v1_execute.json"
"""An execute-mode evidence.json of the LAB01 demo (0556001 lab1-1), written by the grader
before the schema was versioned, with its `"schema": 1` taken out."""


def _saved_notebook(path: Path) -> Path:
    """A notebook with stored outputs: a printed test accuracy and loss and a figure."""
    png = base64.b64encode((DATA / "t4_1420004_fc2_bias.png").read_bytes()).decode()
    nb = new_notebook(cells=[
        new_markdown_cell("# LAB 1-1"),
        new_code_cell("print('Test accuracy: 0.7012, test loss: 0.8801')", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="Test accuracy: 0.7012, test loss: 0.8801\n")]),
        new_code_cell("plt.hist(model.fc2.bias.detach().numpy()); plt.show()", execution_count=2,
                      outputs=[new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})]),
    ])
    path.write_text(nbformat.writes(nb))
    return path


# ----------------------------------------------------------------------------- versions


def test_a_version_1_file_is_read_with_every_value_kept() -> None:
    raw = json.loads(V1.read_text())
    assert "schema" not in raw and "schema_version" not in raw
    ev = read_evidence(V1)
    assert ev["schema_version"] == SCHEMA_VERSION and set(ev) == KEYS
    for key, value in raw.items():  # nothing the checks read changed
        assert ev[key] == value, key
    assert ev["figures"] and ev["normalization"] and ev["metrics"]["test_accuracy"] == raw["metrics"]["test_accuracy"]


def test_upgrade_v1_takes_the_old_version_key_and_names_keys_it_drops() -> None:
    doc = {"schema": 1, "path": "a.ipynb", "mode": "saved", "status": "ok", "old_field": 3}
    up = upgrade_v1(doc)
    assert "schema" not in up and up["schema_version"] == 2 and "old_field" not in up
    assert up["warnings"] == ["evidence schema 1 keys not kept: old_field"]
    assert validate(up)["status"] == "ok"
    with pytest.raises(InvalidEvidence):
        upgrade_v1([1, 2])  # type: ignore[arg-type]


def test_a_newer_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps({"schema_version": 3, "path": "a.ipynb", "mode": "saved", "status": "ok"}))
    with pytest.raises(InvalidEvidence, match="schema version 3, this grader reads 1 and 2"):
        read_evidence(path)
    path.write_text('{"path": "a.ipynb", ')
    with pytest.raises(InvalidEvidence, match="not JSON"):
        read_evidence(path)


def test_validation_says_where_a_document_is_wrong() -> None:
    ev = {"path": "a.ipynb", "mode": "execute", "status": "ok", "normalization": [{"applied": "sometimes"}]}
    with pytest.raises(InvalidEvidence, match=r"^normalization\.0\.applied: "):
        validate(ev)
    with pytest.raises(InvalidEvidence, match="made_up"):
        validate({"path": "a.ipynb", "mode": "saved", "status": "ok", "made_up": 1})  # top level is closed
    with pytest.raises(InvalidEvidence, match="status"):
        validate({"path": "a.ipynb", "mode": "saved", "status": "finished"})


# ----------------------------------------------------------------------------- both modes


def test_saved_execute_and_not_run_evidence_have_the_same_keys(tmp_path: Path) -> None:
    saved = collect.from_saved(_saved_notebook(tmp_path / "lab1-1.ipynb"), "lab1-1.ipynb", run_dir=tmp_path / "run")
    assert saved["metrics"]["test_accuracy"] == pytest.approx(0.7012) and saved["figures"]
    run = SimpleNamespace(executed_notebook_path=None, path="lab1-1.ipynb", status="ok", reason="", duration_s=1.0,
                          startup_s=0.5, cells=[], figures_dropped=0, output_truncated=False)
    executed = collect.from_run(run, run_dir=tmp_path, events_path=None, figures_dir=None)
    docs = {"saved": validate(saved), "execute": validate(executed), "demo": read_evidence(V1),
            "not-run": validate(collect.not_run("x.py", "saved mode: a script has no stored outputs to read"))}
    for name, doc in docs.items():
        assert set(doc) == KEYS, name
    # what a mode cannot know is None or empty, never guessed
    assert docs["saved"]["duration_s"] is None and docs["saved"]["cells"] is None
    assert docs["execute"]["stored_cells"] is None and docs["execute"]["lr_settings"] is None
    assert docs["saved"]["stored_cells"] and docs["saved"]["figures"][0]["png"].startswith("figures/saved-")


def test_grading_in_saved_mode_writes_and_grades_the_validated_evidence(tmp_path: Path) -> None:
    """The CLI's saved-mode grade writes every key; a rescore reads the files back to the same grade."""
    from grader.cli import main
    from grader.rescore import rescore

    fx.write_zip(tmp_path / "in" / "dllab_0556001.zip",
                 [("lab1-1.ipynb", _saved_notebook(tmp_path / "nb.ipynb").read_bytes()), ("report.pdf", fx.PDF)])
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path / "in"), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf",
                 "--workers", "1"]) == 0
    [path] = (out / "runs" / "0556001").glob("*/evidence.json")
    doc = json.loads(path.read_text())
    assert set(doc) == KEYS and doc["schema_version"] == 2 and doc["mode"] == "saved"
    before = json.loads((out / "grades" / "0556001.json").read_text())
    [after] = rescore(out, workers=1, pdf=False)
    assert [(i["id"], i["status"], i["points"]) for p in after["parts"] for i in p["items"]] == \
           [(i["id"], i["status"], i["points"]) for p in before["parts"] for i in p["items"]]


# ----------------------------------------------------------------------------- invalid evidence


def test_write_evidence_turns_an_invalid_document_into_the_notebooks_result(tmp_path: Path) -> None:
    path = tmp_path / "run" / "evidence.json"
    doc = write_evidence(path, {"path": "lab1-1.ipynb", "mode": "saved", "status": "ok", "figures": ["not a figure"]})
    assert json.loads(path.read_text()) == doc
    assert doc["status"] == "not-run" and doc["mode"] == "saved" and "figures.0" in doc["reason"]
    assert doc["notes"][0]["code"] == "invalid-evidence"


def test_rescore_of_a_folder_with_an_invalid_file_grades_that_notebook_as_not_run(tmp_path: Path) -> None:
    """One corrupt evidence.json is that notebook's result (not run, flagged), not a batch crash."""
    from grader.cli import main

    fx.write_zip(tmp_path / "in" / "dllab_0556001.zip", [("lab1-1.ipynb", _saved_notebook(tmp_path / "nb.ipynb").read_bytes())])
    out = tmp_path / "out"
    assert main(["grade", str(tmp_path / "in"), "--lab", "lab1", "--mode", "saved", "--out", str(out), "--no-pdf"]) == 0
    [path] = (out / "runs" / "0556001").glob("*/evidence.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "finished"}))
    assert main(["rescore", str(out), "--no-pdf"]) == 0
    grade = json.loads((out / "grades" / "0556001.json").read_text())
    assert "invalid-evidence" in grade["flags"]
    [row] = [p for p in grade["problems"] if p["code"] == "invalid-evidence"]
    assert row["path"] == "lab1-1.ipynb" and "status" in row["message"]
    ev = stored_or_invalid(path)
    assert ev["status"] == "not-run" and ev["path"] == "lab1-1.ipynb" and ev["mode"] == "saved"


def test_an_unreadable_file_is_named_by_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "lab1-2.ipynb" / "evidence.json"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe not json")
    ev = stored_or_invalid(path)
    assert ev["path"] == "lab1-2.ipynb" and ev["status"] == "not-run" and set(ev) == KEYS


# ----------------------------------------------------------------------------- typed records, new parts


def test_records_keep_their_keys_and_new_labs_parts_validate() -> None:
    figure = {"cell": 3, "kind": "line", "png": None, "trigger": "show", "subjects": [], "title": None}
    ev = validate({
        "path": "gan.ipynb", "mode": "execute", "status": "ok",
        "figures": [figure, {"kind": "samples", "png": "figures/fig-0002.png", "run": "dcgan"},
                    {"kind": "a-student-made-up-kind"}],
        "metrics": {"named": {"d_loss": 0.69, "g_loss": 2.1, "elbo": -101.5, "kl": 12.0}},
        "runs": [{"name": "dcgan", "cells": [4, 5], "optimizer": "Adam", "lr": 2e-4,
                  "metrics": {"d_loss": 0.69, "g_loss": 2.1}, "curves": {"d_loss": [[1, 1.3], [2, 0.9]]}}],
    })
    assert ev["figures"][0] == figure, "a typed record adds no keys and drops none"
    assert ev["figures"][1] == {"kind": "samples", "png": "figures/fig-0002.png", "run": "dcgan"}
    assert ev["figures"][2] == {"kind": "other"}
    assert ev["metrics"] == {"named": {"d_loss": 0.69, "g_loss": 2.1, "elbo": -101.5, "kl": 12.0}}
    assert ev["runs"][0]["lr"] == 2e-4 and ev["runs"][0]["curves"]["d_loss"] == [[1.0, 1.3], [2.0, 0.9]]
    with pytest.raises(InvalidEvidence, match=r"runs\.0\.name"):
        validate({"path": "a", "mode": "execute", "status": "ok", "runs": [{"cells": [1]}]})


def test_not_a_number_survives_validation() -> None:
    ev = validate({"path": "a", "mode": "execute", "status": "ok",
                   "metrics": {"test_loss": float("nan"), "curves": {"loss": [[1, float("nan")]]}}})
    assert ev["metrics"]["test_loss"] != ev["metrics"]["test_loss"]  # NaN, not None
    assert ev["metrics"]["curves"]["loss"][0][1] != ev["metrics"]["curves"]["loss"][0][1]


# ----------------------------------------------------------------------------- the run cache


def test_cache_keys_follow_the_graders_code_and_old_entries_are_read_or_missed(tmp_path: Path, monkeypatch) -> None:
    from grader import pipeline
    from grader.pipeline import GradeSettings
    from grader.rubric import builtin_rubric, load_rubric

    rubric = load_rubric(builtin_rubric("lab1"))
    settings = GradeSettings(rubric_path=builtin_rubric("lab1"), out=tmp_path / "out")
    nb = tmp_path / "sub" / "lab1-1.ipynb"
    nb.parent.mkdir()
    nb.write_text("{}")
    key = pipeline.run_cache_key(nb, "lab1-1.ipynb", settings, rubric, inputs="x")
    monkeypatch.setattr(pipeline, "grader_digest", lambda: "another-grader")
    assert pipeline.run_cache_key(nb, "lab1-1.ipynb", settings, rubric, inputs="x") != key, \
        "an entry written by other grader code (another schema) is never looked up"
    entry = tmp_path / "out" / "cache" / key
    entry.mkdir(parents=True)
    shutil.copyfile(V1, entry / "evidence.json")  # an entry of schema 1 under a key that matches
    hit = pipeline._from_cache(key, "renamed.ipynb", tmp_path / "run1", settings)
    assert hit is not None and hit["schema_version"] == 2 and hit["path"] == "renamed.ipynb" and hit["cache"]["hit"]
    (entry / "evidence.json").write_text('{"schema_version": 2, "path": 1}')
    assert pipeline._from_cache(key, "lab1-1.ipynb", tmp_path / "run2", settings) is None, "invalid: a miss"
    assert not (tmp_path / "run2").exists()


# ----------------------------------------------------------------------------- the feedback's optional blocks


def _feedback(tmp_path: Path, ev: dict) -> str:
    from grader.report.student import render_student

    grade = {"student_id": "0556001", "lab": "gan", "total": 10, "max": 20, "parts": [], "flags": []}
    path = render_student(grade, evidence=[ev], reference=None, dataset_stats={}, problems=[], out_dir=tmp_path,
                          pdf=False)
    return path.read_text()


def test_feedback_shows_named_metrics_runs_and_samples_only_when_present(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "figures").mkdir(parents=True)
    shutil.copyfile(DATA / "t4_1420004_fc2_bias.png", run_dir / "figures" / "fig-0001.png")
    ev = validate({"path": "gan.ipynb", "mode": "execute", "status": "ok",
                   "metrics": {"named": {"d_loss": 0.6931, "g_loss": 2.25}},
                   "runs": [{"name": "dcgan", "optimizer": "Adam", "lr": 2e-4, "metrics": {"fid": 41.5},
                             "curves": {"g_loss": [[1, 3.0], [2, 2.5], [3, 2.25]]}}],
                   "figures": [{"kind": "samples", "png": "figures/fig-0001.png", "cell": 7, "run": "dcgan"}]})
    html = _feedback(tmp_path / "with", {**ev, "run_dir": str(run_dir)})
    assert "Metrics your notebook printed" in html and "d_loss" in html and "0.6931" in html
    assert "Your training runs" in html and "fid 41.5" in html and "curves of the training runs" in html
    assert "Your generated samples" in html and "generated samples from cell 7" in html and "run dcgan" in html
    plain = _feedback(tmp_path / "without", {**read_evidence(V1), "run_dir": str(run_dir)})
    for heading in ("Metrics your notebook printed", "Your training runs", "Your generated samples"):
        assert heading not in plain
