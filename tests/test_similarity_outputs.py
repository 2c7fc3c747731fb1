"""Output similarity (grader.similarity.outputs) on graded folders built in tmp_path: no kernels."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import pytest

from grader.similarity.outputs import (OutputPrints, common_outputs, compare_outputs, distinctive,
                                       output_prints)

CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _nb(cells: list[tuple[str, list[str]]]) -> dict:
    """A notebook: one code cell per (source, printed lines), In[1], In[2], ..."""
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "execution_count": i, "id": f"c{i}", "metadata": {}, "source": src,
         # as nbformat writes a notebook file: the text as a list of lines
         "outputs": [{"output_type": "stream", "name": "stdout", "text": [f"{t}\n" for t in text]}]}
        for i, (src, text) in enumerate(cells, start=1)]}


def _log(rng: random.Random, epochs: int = 6) -> list[str]:
    return [f"[{e}, 2000] loss: {rng.uniform(0.5, 2.3):.3f} acc {rng.uniform(30, 70):.2f} %"
            for e in range(1, epochs + 1)]


def _student(out: Path, sid: str, *, lines: list[str], per_class: dict | None = None, code: str = "train()",
             figures: list[tuple[bytes, str]] = (), mode: str = "execute", nb_name: str = "lab1-1.ipynb") -> Path:
    run = out / "runs" / sid / nb_name
    run.mkdir(parents=True)
    nb = _nb([("import torch", ["10000 2000"]), (code, lines)])
    if mode == "execute":
        (run / "executed.ipynb").write_text(json.dumps(nb))
    else:
        work = out / "work" / sid
        work.mkdir(parents=True, exist_ok=True)
        (work / nb_name).write_text(json.dumps(nb))
    figs = []
    for i, (png, kind) in enumerate(figures, start=1):
        (run / "figures").mkdir(exist_ok=True)
        (run / "figures" / f"fig-{i:04d}.png").write_bytes(png)
        figs.append({"png": f"figures/fig-{i:04d}.png", "kind": kind, "cell": 2})
    mentions = [{"cell": 2, "class": c, "kind": "class_accuracy", "value": v} for c, v in (per_class or {}).items()]
    ev = {"path": nb_name, "mode": mode, "status": "ok", "figures": figs,
          "metrics": {"per_class_accuracy": per_class or {}, "mentions": mentions}}
    (run / "evidence.json").write_text(json.dumps(ev))
    (out / "runs" / sid / "submission.json").write_text(json.dumps(
        {"student_id": sid, "work_dir": str(out / "work" / sid)}))
    return run


def _curve(values: list[float], *, size: tuple[float, float] = (4, 3), dpi: int = 100) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    ax.plot(range(1, len(values) + 1), values, marker="o", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _reencoded(png: bytes, scale: float) -> bytes:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    jpg = io.BytesIO()
    img.save(jpg, "JPEG", quality=85)  # lossy, then back to PNG at another size
    img = Image.open(io.BytesIO(jpg.getvalue())).resize((int(img.width * scale), int(img.height * scale)))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def test_identical_per_class_table_under_different_code_is_found(tmp_path: Path) -> None:
    table = {c: round(random.Random(1).uniform(0.3, 0.9) + i / 100, 2) for i, c in enumerate(CLASSES)}
    _student(tmp_path, "s1", lines=_log(random.Random(1)), per_class=table, code="net = Net()\ntrain(net)")
    _student(tmp_path, "s2", lines=_log(random.Random(2)), per_class=dict(reversed(table.items())),
             code="model = MyCNN()\nfit(model, epochs=6)")
    a, b = output_prints(tmp_path, "s1"), output_prints(tmp_path, "s2")
    got = compare_outputs(a, b, common=common_outputs([a, b]))
    assert got["score"] == 1.0
    assert len(got["tables"]) == 1 and got["tables"][0][1:] == ("lab1-1.ipynb#cell 2", "lab1-1.ipynb#cell 2")
    assert not got["lines"]
    assert "per-class accuracies" in got["reasons"][0]


def test_two_honest_runs_do_not_match(tmp_path: Path) -> None:
    rng1, rng2 = random.Random(11), random.Random(12)
    for sid, rng in (("s1", rng1), ("s2", rng2)):
        table = {c: round(rng.uniform(0.3, 0.9), 3) for c in CLASSES}
        curve = _curve([2.3 - k * rng.uniform(0.1, 0.3) for k in range(6)])
        _student(tmp_path, sid, lines=_log(rng), per_class=table, figures=[(curve, "line")])
    a, b = output_prints(tmp_path, "s1"), output_prints(tmp_path, "s2")
    assert len(a.lines) == 6 and len(a.tables) == 1 and len(a.images) == 1
    got = compare_outputs(a, b, common=common_outputs([a, b]))
    assert got == {"lines": [], "tables": [], "images": [], "score": 0.0, "reasons": []}


def test_a_copied_log_scores_full_and_part_of_one_is_graded(tmp_path: Path) -> None:
    log = _log(random.Random(3))
    _student(tmp_path, "s1", lines=log)
    _student(tmp_path, "s2", lines=log)
    _student(tmp_path, "s3", lines=log[:2] + _log(random.Random(4))[2:])
    a, b, c = (output_prints(tmp_path, s) for s in ("s1", "s2", "s3"))
    assert compare_outputs(a, b, common=set())["score"] == 1.0
    part = compare_outputs(a, c, common=set())
    assert len(part["lines"]) == 2 and 0 < part["score"] < 1


def test_a_line_everyone_prints_is_ignored(tmp_path: Path) -> None:
    everyone = "mean [0.4914 0.4822 0.4465] std [0.2470 0.2435 0.2616]"
    for i in range(6):
        _student(tmp_path, f"s{i}", lines=[everyone] + _log(random.Random(100 + i)))
    prints = [output_prints(tmp_path, f"s{i}") for i in range(6)]
    assert everyone in prints[0].lines
    common = common_outputs(prints)
    assert common == {everyone}
    got = compare_outputs(prints[0], prints[1], common=common)
    assert got["score"] == 0.0 and not got["lines"]
    # without the class's common outputs the one line would count
    assert compare_outputs(prints[0], prints[1], common=set())["lines"]


def test_an_identical_figure_reencoded_and_resized_is_found(tmp_path: Path) -> None:
    values = [2.3, 1.7, 1.2, 0.9, 0.8, 0.7]
    png = _curve(values)
    _student(tmp_path, "s1", lines=[], figures=[(png, "line")])
    _student(tmp_path, "s2", lines=[], figures=[(_reencoded(png, 0.92), "line")])
    # the same axes, title and legend with another student's curve: the 64-bit phash alone is near
    _student(tmp_path, "s3", lines=[], figures=[(_curve([2.2, 1.9, 1.5, 1.4, 1.0, 0.95]), "line")])
    a, b, c = (output_prints(tmp_path, s) for s in ("s1", "s2", "s3"))
    got = compare_outputs(a, b, common=set())
    assert got["score"] == 1.0 and len(got["images"]) == 1
    ha, hb, wa, wb, d = got["images"][0]
    assert len(ha) == 16 and d <= 4 and wa.split(" · ")[0] == wb.split(" · ")[0] == "lab1-1.ipynb#cell 2" and wa.endswith(".png")
    assert "line figure" in got["reasons"][0]
    assert compare_outputs(a, c, common=set())["images"] == []


def test_a_blank_or_broken_figure_is_not_hashed(tmp_path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(buf, "PNG")
    _student(tmp_path, "s1", lines=[], figures=[(buf.getvalue(), "line"), (b"\x89PNG\r\n\x1a\nnot really", "line")])
    assert output_prints(tmp_path, "s1").images == {}


def test_paths_outside_out_are_not_read(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    outside.mkdir()
    secret = "stolen 0.123456 0.654321"
    (outside / "lab1-1.ipynb").write_text(json.dumps(_nb([("x", [secret])])))
    (outside / "curve.png").write_bytes(_curve([3, 2, 1]))
    run = _student(out, "s1", lines=[], mode="saved")
    # a forged evidence.json points at a figure and a notebook outside OUT
    ev = json.loads((run / "evidence.json").read_text())
    ev["figures"] = [{"png": "../../../../elsewhere/curve.png", "kind": "line", "cell": 1}]
    ev["path"] = "../../../elsewhere/lab1-1.ipynb"
    (run / "evidence.json").write_text(json.dumps(ev))
    assert Path(os.path.normpath(out / "work" / "s1" / ev["path"])).is_file()
    assert Path(os.path.normpath(run / ev["figures"][0]["png"])).is_file()
    # and a work folder recorded outside OUT, and a student's run folder that is a link out of OUT
    (out / "runs" / "s1" / "submission.json").write_text(json.dumps({"work_dir": str(outside)}))
    (outside / "runs-s2").mkdir()
    _student(outside / "fake", "s2", lines=[secret], mode="execute")
    (out / "runs" / "s2").symlink_to(outside / "fake" / "runs" / "s2")
    for sid in ("s1", "s2"):
        got = output_prints(out, sid)
        assert got.lines == {} and got.images == {}, sid
    assert output_prints(out, "s2").notes == ["No run folder of this student was found under OUT/runs."]
    assert any("could not be read" in n for n in output_prints(out, "s1").notes)


def test_a_saved_mode_notebook_is_read_from_work(tmp_path: Path) -> None:
    log = _log(random.Random(5))
    _student(tmp_path, "s1", lines=log, mode="saved", nb_name="lab1-1 (final).ipynb")
    # OUT was moved since grading: the recorded work folder no longer exists
    (tmp_path / "runs" / "s1" / "submission.json").write_text(json.dumps({"work_dir": "/nowhere/work/s1"}))
    got = output_prints(tmp_path, "s1")
    assert set(got.lines) == set(log) and got.notes == []
    assert got.lines[log[0]] == ["lab1-1 (final).ipynb#cell 2"]


def test_handout_outputs_are_skipped(tmp_path: Path) -> None:
    from grader.collect import output_digest

    log = _log(random.Random(6))
    run = _student(tmp_path, "s1", lines=log)
    # the handout's digests come from notebooks nbformat read (their text joined into one string)
    handout = frozenset({output_digest({"output_type": "stream", "text": "".join(f"{t}\n" for t in log)})})
    assert json.loads((run / "executed.ipynb").read_text())["cells"][1]["outputs"][0]["text"][0] == log[0] + "\n"
    assert output_prints(tmp_path, "s1", handout=handout).lines == {}
    assert len(output_prints(tmp_path, "s1").lines) == len(log)


def test_prints_round_trip_through_json(tmp_path: Path) -> None:
    _student(tmp_path, "s1", lines=_log(random.Random(7)), per_class={c: i / 10 for i, c in enumerate(CLASSES)},
             figures=[(_curve([1, 2, 3]), "line")])
    got = output_prints(tmp_path, "s1")
    back = OutputPrints.from_json(json.loads(json.dumps(got.to_json())))
    assert back == got and back.fine and back.kinds
    assert OutputPrints.from_json({"lines": "junk", "tables": {"x": ["a"]}}).tables == {"x": ["a"]}


@pytest.mark.parametrize(("line", "kept"), [
    ("[1,   100] loss: 2.301", "[1, 100] loss: 2.301"),
    ("[baseline] epoch  1  train loss 0.697  train acc 0.494", "[baseline] epoch 1 train loss 0.697 train acc 0.494"),
    ("\x1b[32mepoch 3 loss 0.6931\x1b[0m", "epoch 3 loss 0.6931"),
    ("10000 2000", None),
    ("Test loss: 0.5768", None),
    ("lr 0.1 epoch 1 test acc 10.00 %", None),
    ("lr 0.001 momentum 0.9", None),
    (" 45%|████▌     | 450/1000 [00:12<00:15, 36.61it/s]", None),
])
def test_distinctive_lines(line: str, kept: str | None) -> None:
    assert distinctive(line) == kept


def test_a_degenerate_table_is_not_evidence(tmp_path: Path) -> None:
    diverged = {c: (1.0 if c == "plane" else 0.0) for c in CLASSES}
    _student(tmp_path, "s1", lines=[], per_class=diverged)
    assert output_prints(tmp_path, "s1").tables == {}
