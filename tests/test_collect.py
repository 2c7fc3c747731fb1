"""Evidence from stored outputs (`--mode saved`), on notebooks built in memory."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from grader.collect import from_saved, handout_digests
from grader.datasets import FOOD11_CLASSES
from grader.rubric import RubricError, load_rubric_text

TUTORIAL_LOG = ("Accuracy of the network on the 10000 test images: 54 %\n"
                + "".join(f"Accuracy of {c:>5s} : 50 %\n" for c in
                          ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")))


def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.hist([1, 2, 2, 3])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def notebook(path: Path, *outputs: str, png: bool = False) -> Path:
    cells = [new_code_cell("evaluate()", outputs=[new_output("stream", name="stdout", text=t)]) for t in outputs]
    if png:
        cells.append(new_code_cell("plt.hist(w)", outputs=[new_output("display_data", data={"image/png": _png()})]))
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_saved_outputs_are_parsed_without_running(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "lab1-1.ipynb", "[1,  2000] loss: 2.189\n", TUTORIAL_LOG, png=True)
    ev = from_saved(nb, "lab1-1.ipynb", run_dir=tmp_path / "run")
    assert ev["mode"] == "saved" and ev["status"] == "ok"
    assert ev["metrics"]["test_accuracy"] == pytest.approx(0.54)
    assert len(ev["metrics"]["per_class_accuracy"]) == 10
    # `plt.hist(w)` with `w` from nowhere: a histogram of data the code does not say, left to a TA
    fig = ev["figures"][0]
    assert fig["kind"] == "histogram" and fig["subjects"] == [] and fig["uncertain"] is True
    assert (tmp_path / "run" / ev["figures"][0]["png"]).is_file()
    assert ev["optimizers"] == [] and ev["probe"] is None


def test_outputs_copied_from_the_handout_are_not_credited(tmp_path: Path) -> None:
    handout = notebook(tmp_path / "handout.ipynb", TUTORIAL_LOG)
    digests = handout_digests([handout])
    copied = notebook(tmp_path / "copied.ipynb", TUTORIAL_LOG)
    ev = from_saved(copied, "copied.ipynb", run_dir=tmp_path / "r1", handout=digests)
    assert ev["metrics"]["test_accuracy"] is None and ev["metrics"]["per_class_accuracy"] == {}
    assert ev["handout_outputs_ignored"] == 1 and "handout" in ev["reason"]
    own = notebook(tmp_path / "own.ipynb", TUTORIAL_LOG.replace("54 %", "61 %"))
    ev = from_saved(own, "own.ipynb", run_dir=tmp_path / "r2", handout=digests)
    assert ev["metrics"]["test_accuracy"] == pytest.approx(0.61)


def test_rubric_handout_must_exist_next_to_it(tmp_path: Path) -> None:
    text = ("lab: x\ntitle: t\nhandout: [missing.ipynb]\nparts:\n - id: a\n   title: b\n   points: 1\n"
            "   items:\n    - {id: i, title: t, check: files_present, params: {patterns: ['*.ipynb']}, points: 1}\n")
    with pytest.raises(RubricError, match="handout notebook `missing.ipynb` not found"):
        load_rubric_text(text, name="r.yaml", base_dir=tmp_path)
    notebook(tmp_path / "missing.ipynb", "x")
    assert load_rubric_text(text, name="r.yaml", base_dir=tmp_path).handout_paths() == [tmp_path / "missing.ipynb"]


# --- execute-mode evidence: the probe's dataset decides the class list (issue 12 J1) ------

def _executed(tmp_path: Path, text: str, events: list[dict]) -> dict:
    """evidence.json of a run whose executed notebook printed `text`, with these probe events."""
    import json

    from grader.collect import from_run
    from grader.execute import CellRecord, RunResult

    nb_path = tmp_path / "executed.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("train()", outputs=[new_output("stream", name="stdout",
                                                                                     text=text)])]), nb_path)
    events_path = tmp_path / "events.jsonl"
    events_path.write_text("".join(json.dumps({"t": 0.0, "cell": 0, **e}) + "\n" for e in events))
    run = RunResult(path="lab.ipynb", status="ok", reason="", cells=(CellRecord(0, "ok", 1.0),), started_at=0.0,
                    duration_s=1.0, startup_s=0.1, executed_notebook_path=str(nb_path), log_path="",
                    figures_kept=0, figures_dropped=0, output_truncated=False)
    return from_run(run, run_dir=tmp_path, events_path=events_path, figures_dir=None)


PETS_LOG = "Test accuracy: 71.5%\nTest loss: 0.561\nAccuracy of cat : 70 %\nAccuracy of dog : 73 %\n"


def _folder(root: str, classes: list[str] | None = None) -> dict:
    event = {"id": 1, "kind": "dataset", "class": "ImageFolder", "module": "torchvision.datasets.folder",
             "via": "init", "root": root}
    return {**event, "classes": classes} if classes is not None else event


@pytest.mark.parametrize(("root", "classes", "dataset", "per_class"), [
    # the case: an ImageFolder whose path names no known dataset
    ("/tmp/work/pets/train", ["cat", "dog"], "catsdogs", {"cat": 0.70, "dog": 0.73}),
    ("/tmp/work/pets/train", None, "imagefolder", {"cat": 0.70, "dog": 0.73}),
    # any cats-vs-dogs notebook, however the folder is spelt
    ("./data/cats-vs-dogs/train", ["cat", "dog"], "catsdogs", {"cat": 0.70, "dog": 0.73}),
    ("/home/me/Dogs vs Cats/train", None, "catsdogs", {"cat": 0.70, "dog": 0.73}),
    ("/tmp/work/kaggle_cats_and_dogs", ["Cats", "Dogs"], "catsdogs", {"cat": 0.70, "dog": 0.73}),
    # Food-11 restructured at a path without "food": recognised from its classes
    ("/tmp/work/restructured/evaluation", [c.lower() for c in FOOD11_CLASSES], "food11", {}),
])
def test_unknown_or_catsdogs_dataset_keeps_every_printed_metric(tmp_path: Path, root: str, classes: list[str] | None,
                                                                dataset: str, per_class: dict) -> None:
    ev = _executed(tmp_path, PETS_LOG, [_folder(root, classes)])
    assert "parse_error" not in ev["metrics"]
    assert ev["dataset"] == dataset and ev["metrics"]["dataset"] == dataset
    assert ev["metrics"]["test_accuracy"] == pytest.approx(0.715)
    assert ev["metrics"]["test_loss"] == pytest.approx(0.561)
    assert ev["metrics"]["per_class_accuracy"] == {k: pytest.approx(v) for k, v in per_class.items()}
