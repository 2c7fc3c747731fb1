"""Output caps while a cell runs: carriage returns collapsed first, then head and tail kept.

The logic is tested on the client's own `output` hook with kernel messages built in memory;
the kernel tests run the issue's cells in the real sandbox and parse the executed notebook.
"""

from __future__ import annotations

import random
import re
import time
import types
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from grader.capture import collapse_cr, join_stream
from grader.execute import SandboxLimits, _CappedClient
from grader.parsers import CIFAR10_CLASSES, parse_notebook

NAMES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RESULTS = ("Test loss: 1.2345\nAccuracy of the network on the 10000 test images: 55 %\n"
           + "".join(f"Accuracy of {n:>5s} : {40 + i} %\n" for i, n in enumerate(NAMES)))
PER_CLASS = {c: pytest.approx((40 + i) / 100) for i, c in enumerate(CIFAR10_CLASSES)}
_NBCLIENT_CR = re.compile(r".*\r(?=[^\n])")  # nbclient's and nbconvert's own rule


# --- carriage returns ---------------------------------------------------------------------

def test_collapse_matches_jupyters_rule() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(["a", "bc", "\r", "\n", "\r\n", " 10%", "\r\r"]) for _ in range(rng.randint(0, 30)))
        assert collapse_cr(text) == _NBCLIENT_CR.sub("", text), repr(text)


def test_streams_joined_in_pieces_collapse_like_one_stream() -> None:
    rng = random.Random(3)
    for _ in range(500):
        text = "".join(rng.choice(["ab", "\r", "\n", "\r\n", "x"]) for _ in range(rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(3, len(text) + 1)))
        joined = ""
        for a, b in zip([0, *cuts], [*cuts, len(text)]):
            joined = join_stream(joined, text[a:b])
        assert joined == collapse_cr(text), repr(text)


def test_collapse_is_linear_on_a_long_line() -> None:
    start = time.perf_counter()
    assert collapse_cr("x" * 2_000_000 + "\r") == "x" * 2_000_000 + "\r"  # the regex takes minutes here
    assert collapse_cr("\r".join(["y" * 100] * 20000) + "\n") == "y" * 100 + "\n"
    assert time.perf_counter() - start < 2


# --- the client's output hook, fed kernel messages -----------------------------------------

class _Cell:
    """One cell fed stream messages through `_CappedClient.output`, as nbclient does."""

    def __init__(self, per_cell: int = 1 << 20, total: int = 32 << 20) -> None:
        limits = SandboxLimits(max_output_bytes_per_cell=per_cell, max_output_bytes_total=total)
        self.runner = types.SimpleNamespace(limits=limits, figures_kept=0, figures_dropped=0, total_bytes=0,
                                            truncated=False)
        self.nb = new_notebook(cells=[new_code_cell("train()")])
        self.client = _CappedClient(self.nb, runner=self.runner)
        self.client.reset_execution_trackers()
        self.client.clear_before_next_output = False
        self.outs = self.nb.cells[0].outputs

    def send(self, msg_type: str, **content: object) -> None:
        msg = {"msg_type": msg_type, "header": {"msg_type": msg_type}, "parent_header": {"msg_id": "m"},
               "content": content}
        if msg_type == "clear_output":
            self.client.clear_output(self.outs, msg, 0)
        else:
            self.client.output(self.outs, msg, None, 0)

    def stream(self, text: str, name: str = "stdout") -> None:
        self.send("stream", name=name, text=text)

    def done(self) -> nbformat.NotebookNode:
        self.client.add_markers(self.nb.cells[0])
        return self.nb

    def text(self) -> str:
        return "".join(o.get("text", "") for o in self.outs)


def _bars(epochs: int = 3, updates: int = 9500) -> list[str]:
    """tqdm-like redraws, about 100 characters each, a few per message (as tqdm flushes them)."""
    msgs = []
    for e in range(1, epochs + 1):
        batch = ""
        for i in range(updates):
            batch += (f"\rEpoch {e}: {100 * i / updates:5.1f}%|{'#' * (10 * i // updates):10s}| {i}/{updates} "
                      f"[00:{i % 60:02d}<00:59, 1234.56it/s, loss={2.3 - i / updates:.4f}, acc={i / updates:.3f}]")
            if len(batch) > 2000:
                msgs.append(batch)
                batch = ""
        msgs.append(batch + "\n")
    return msgs


def test_redrawn_progress_bars_cost_only_what_is_on_screen() -> None:
    cell = _Cell()
    sent = 0
    for i, m in enumerate(_bars()):
        cell.stream(m, name="stderr")
        sent += len(m)
        if m.endswith("\n"):
            cell.stream(f"epoch {i} train loss 1.5\n")
    cell.stream(RESULTS)
    nb = cell.done()
    assert sent > 2_500_000  # the 2.5 MB of bars
    assert not cell.runner.truncated and "dllab" not in nb.cells[0].metadata
    assert len(cell.text()) < 2000 and "[output truncated" not in cell.text()
    r = parse_notebook(nb)
    assert r.test_accuracy == pytest.approx(0.55) and r.test_loss == pytest.approx(1.2345)
    assert r.per_class_accuracy == PER_CLASS
    # each bar's last state and each epoch line are training-curve points, nothing else
    assert {p.series for p in r.curves} == {"train_loss", "train_acc"}
    assert [p.value for p in r.curves if p.series == "train_loss"].count(1.5) == 3


def test_distinct_lines_over_the_cap_keep_head_and_tail_with_a_marker() -> None:
    cell = _Cell()
    lines = [f"batch {i:7d} grad norm {i * 7919 % 100003:6d} .........................\n" for i in range(50000)]
    for k in range(0, len(lines), 500):
        cell.stream("".join(lines[k:k + 500]))
    cell.stream(RESULTS)
    nb = cell.done()
    text = cell.text()
    assert cell.runner.truncated and len(text) <= (1 << 20) + 500
    assert text.startswith(lines[0]) and text.endswith(RESULTS)
    marker = [o for o in cell.outs if "[output truncated by dllab:" in o.get("text", "")]
    assert len(marker) == 1 and marker[0] is not cell.outs[0] and marker[0] is not cell.outs[-1]
    cut = nb.cells[0].metadata["dllab"]["output_truncated"]
    assert cut["omitted_chars"] == len("".join(lines)) + len(RESULTS) - cut["kept_chars"]
    assert f"{cut['omitted_chars']} characters omitted" in marker[0]["text"]
    # the tail starts on a whole line
    tail = cell.outs[cell.outs.index(marker[0]) + 1]["text"]
    assert tail.startswith("batch ")
    r = parse_notebook(nb)
    assert r.test_accuracy == pytest.approx(0.55) and r.per_class_accuracy == PER_CLASS


def test_error_after_a_flood_is_kept_and_the_notebook_total_is_shared() -> None:
    cell = _Cell(per_cell=64 * 1024, total=100 * 1024)
    cell.stream("x" * 1000 + "\n")
    for _ in range(50):
        cell.stream(("y" * 99 + "\n") * 100)
    cell.send("error", ename="RuntimeError", evalue="CUDA out of memory", traceback=["Traceback", "boom"])
    cell.done()
    assert cell.outs[-1]["output_type"] == "error" and cell.outs[0]["text"].startswith("x" * 1000)
    assert cell.runner.total_bytes <= 64 * 1024 + 100
    # the next cell gets what is left of the notebook's total, not a fresh 64 KiB
    assert cell.client.caps[0].budget == 64 * 1024
    other: list = []
    cell.client.output(other, {"msg_type": "stream", "header": {"msg_type": "stream"},
                               "parent_header": {"msg_id": "m"}, "content": {"name": "stdout", "text": "z" * 90_000}},
                       None, 1)
    assert cell.client.caps[1].budget == 100 * 1024 - cell.client.caps[0].kept


def test_clear_output_starts_the_cell_over() -> None:
    # Live progress drawn with IPython's clear_output(wait=True), then the results.
    cell = _Cell(per_cell=64 * 1024)
    for i in range(300):
        cell.send("clear_output", wait=True)
        cell.stream(f"step {i}\n" + "." * 1000 + "\n")
    cell.stream(RESULTS)
    nb = cell.done()
    assert not cell.runner.truncated
    assert cell.text().startswith("step 299\n") and cell.text().endswith(RESULTS)
    assert parse_notebook(nb).test_accuracy == pytest.approx(0.55)


# --- display updates, metadata, errors: what nbclient rewrites counts too (issue 13 F) -------

def _display(cell: _Cell, data: dict, display_id: str | None = None, *, update: bool = False,
             metadata: dict | None = None, index: int = 0) -> None:
    """A display_data (or update_display_data) message through nbclient's own path."""
    kind = "update_display_data" if update else "display_data"
    msg = {"msg_type": kind, "header": {"msg_type": kind}, "parent_header": {"msg_id": "m"},
           "content": {"data": data, "metadata": metadata or {}, "transient": {"display_id": display_id}}}
    if display_id:
        cell.client._update_display_id(display_id, msg)
    if not update:
        cell.client.output(cell.nb.cells[index].outputs, msg, display_id, index)


def _written(nb: nbformat.NotebookNode) -> int:
    return len(nbformat.writes(nb).encode())


def test_one_update_of_a_display_shown_a_thousand_times_is_counted_once_per_copy() -> None:
    # The attack: 1000 one-byte displays of one id, then one 1 MB update (1.0 GB written).
    cell = _Cell()  # the default caps: 1 MiB per cell, 32 MiB in all
    for _ in range(1000):
        _display(cell, {"text/plain": "x"}, "d")
    _display(cell, {"text/plain": "y" * 1_000_000}, "d", update=True)
    nb = cell.done()
    assert _written(nb) < 2 * (1 << 20)  # was 1000 copies
    assert cell.client.kept_total <= (1 << 20) and cell.runner.truncated
    cut = nb.cells[0].metadata["dllab"]["output_truncated"]
    assert cut["updates_dropped"] > 0
    assert any("display update(s) not applied by dllab" in o.get("text", "") for o in cell.outs)


def test_many_updates_of_one_display_never_grow_past_the_caps() -> None:
    cell = _Cell(per_cell=64 * 1024, total=100 * 1024)
    _display(cell, {"text/plain": "start"}, "bar")
    for i in range(2000):  # a live display rewritten 2000 times, ever larger
        _display(cell, {"text/html": "<b>" + "z" * (i * 50) + "</b>"}, "bar", update=True)
    nb = cell.done()
    assert cell.client.kept_total <= 64 * 1024 and _written(nb) < 70 * 1024
    # a small update that fits is still applied: the display shows its latest state
    _display(cell, {"text/plain": "done"}, "bar", update=True)
    assert cell.outs[0]["data"] == {"text/plain": "done"}


def test_displays_of_one_id_beyond_the_cap_are_not_rewritten() -> None:
    from grader.execute import MAX_DISPLAY_TARGETS

    cell = _Cell()
    for _ in range(5 * MAX_DISPLAY_TARGETS):
        _display(cell, {"text/plain": "x"}, "d")
    assert sum(len(v) for v in cell.client._display_id_map["d"].values()) <= MAX_DISPLAY_TARGETS
    _display(cell, {"text/plain": "new"}, "d", update=True)
    assert sum(o["data"] == {"text/plain": "new"} for o in cell.outs) == MAX_DISPLAY_TARGETS


def test_metadata_and_big_mime_bundles_count_against_the_cell() -> None:
    cell = _Cell(per_cell=64 * 1024, total=1 << 20)
    for _ in range(20):  # output metadata is written to the notebook: it counts
        _display(cell, {"text/plain": "."}, metadata={"junk": "m" * 30_000})
    _display(cell, {"application/json": {"k": ["v" * 100] * 5000}})
    _display(cell, {"text/html": "<td>" * 200_000})
    nb = cell.done()
    assert cell.runner.truncated and cell.client.kept_total <= 64 * 1024
    assert _written(nb) < 64 * 1024 + 30_000 + 10_000  # the budget, at most one whole output over


def test_repeated_tracebacks_keep_a_few_errors() -> None:
    from grader.execute import MAX_ERRORS_PER_CELL

    cell = _Cell(per_cell=64 * 1024)
    for i in range(500):  # get_ipython().showtraceback() in a loop: errors are never cut otherwise
        cell.send("error", ename="E", evalue=f"boom {i}", traceback=["t" * 3000])
    nb = cell.done()
    assert sum(o["output_type"] == "error" for o in cell.outs) == MAX_ERRORS_PER_CELL
    assert _written(nb) < 64 * 1024 and cell.runner.truncated


def test_clear_output_wait_loop_of_big_displays_stays_within_the_cell() -> None:
    cell = _Cell(per_cell=64 * 1024, total=100 * 1024)
    for i in range(300):
        cell.send("clear_output", wait=True)
        _display(cell, {"text/html": f"<p>{i}</p>" + "h" * 50_000}, "live")
        _display(cell, {"text/html": "u" * 60_000}, "live", update=True)
    nb = cell.done()
    assert _written(nb) < 64 * 1024 + 2000 and cell.client.kept_total <= 64 * 1024


def test_saved_notebook_with_a_flood_in_one_output_still_reads_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.parsers import notebook

    # The parser reads at most _MAX_OUTPUT characters of an output (1 MiB): a smaller cap here
    # keeps the test fast; the rule is the same.
    monkeypatch.setattr(notebook, "_MAX_OUTPUT", 100_000)
    flood = "".join(f"debug line {i} ...........................\n" for i in range(20_000))  # ~0.9 MB
    nb = new_notebook(cells=[new_code_cell("train()", outputs=[new_output("stream", name="stdout",
                                                                           text=flood + RESULTS)])])
    r = parse_notebook(nb)
    assert r.test_accuracy == pytest.approx(0.55) and r.per_class_accuracy == PER_CLASS


# --- saved mode: floods thinned, what is still too long flagged (issue 12 round 2, finding 8) ---

PER_CLASS_LINES = "".join(f"Accuracy of {n:>5s} : {40 + i} %\n" for i, n in enumerate(NAMES))
TOTALS = "Test loss: 1.2345\nAccuracy of the network on the 10000 test images: 55 %\n"


def _saved_one_cell(tmp_path: Path, text: str) -> dict:
    from grader.collect import from_saved

    path = tmp_path / "lab1-1.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("evaluate()", execution_count=4, outputs=[
        new_output("stream", name="stdout", text=text)])]), path)
    return from_saved(path, "lab1-1.ipynb", run_dir=tmp_path / "run")


def test_per_image_flood_around_the_per_class_lines_is_thinned_not_cut(tmp_path: Path) -> None:
    # 0000804: a per-image log, then the per-class lines, then more log, then the totals, in one
    # stored stream of several MB; the per-class lines in the middle were lost with no flag
    from grader.parsers.notebook import squeeze_floods

    rng = random.Random(3)
    flood = "".join(f"image {j:6d}: predicted {rng.choice(NAMES)}, truth {rng.choice(NAMES)}\n"
                    for j in range(60_000))
    text = flood + PER_CLASS_LINES + flood + TOTALS
    assert len(text) > 4_000_000
    thinned = squeeze_floods(text)
    assert thinned.count("\n") < 2 * 1200 + 20 and PER_CLASS_LINES in thinned and thinned.endswith(TOTALS)
    start = time.perf_counter()
    ev = _saved_one_cell(tmp_path, text)
    assert time.perf_counter() - start < 30  # was minutes on a loaded machine
    assert ev["metrics"]["per_class_accuracy"] == PER_CLASS
    assert ev["metrics"]["test_accuracy"] == pytest.approx(0.55) and ev["metrics"]["test_loss"] == pytest.approx(1.2345)
    assert ev["output_truncated"] is False and ev["output_truncated_cells"] == []


def test_long_training_log_keeps_both_ends_of_its_curve() -> None:
    # invented: 10 epochs x 5000 steps of one form: thinned, but the curve keeps its first and last
    # epochs and the last loss is the last one printed
    log = "".join(f"Epoch [{e}/10], Step [{s}/5000], Loss: {2.3 - e / 10 - s / 1e5:.4f}\n"
                  for e in range(1, 11) for s in range(1, 5001))
    r = parse_notebook(new_notebook(cells=[new_code_cell("train()", outputs=[
        new_output("stream", name="stdout", text=log + TOTALS)])]))
    xs = [p.x for p in r.curves if p.series == "train_loss"]
    assert 1200 <= len(xs) <= 1300 and min(xs) < 1.01 and max(xs) > 9.99 and xs == sorted(xs)
    assert [m.value for m in r.mentions if m.kind == "train_loss"][-1] == pytest.approx(2.3 - 1 - 0.05)
    assert r.test_accuracy == pytest.approx(0.55)


def test_distinct_lines_over_the_cap_are_cut_and_flagged_in_saved_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # invented: a flood whose lines all differ (a hash per image) cannot be thinned: the middle is
    # cut as in execute mode, the evidence says so, the per-class item goes to a TA with the flag
    from grader.parsers import notebook
    from grader.report.summary import attention_reasons

    monkeypatch.setattr(notebook, "_MAX_OUTPUT", 100_000)  # the rule at 1/10 of the size: faster
    rng = random.Random(7)
    flood = "".join(f"{rng.getrandbits(64):x} {rng.choice(['ok', 'bad', 'skip'])} {'x' * rng.randint(0, 9)}\n"
                    for _ in range(6_000))
    ev = _saved_one_cell(tmp_path, flood + PER_CLASS_LINES + flood + TOTALS)
    assert ev["output_truncated"] is True and ev["metrics"]["per_class_accuracy"] == {}
    (cut,) = ev["output_truncated_cells"]
    assert cut["cell"] == 4 and cut["index"] == 0 and cut["omitted_chars"] > 100_000
    assert ev["metrics"]["test_accuracy"] == pytest.approx(0.55)  # the tail is still read
    grade = _grade_one(ev)
    per_class = next(it for p in grade["parts"] for it in p["items"] if it["id"] == "lab1-1-per-class")
    assert per_class["status"] == "manual" and "output-truncated" in grade["flags"]
    assert any("output of cell 4 truncated" in r for r in attention_reasons(grade, [ev]))
    assert _saved_one_cell(tmp_path, TOTALS)["output_truncated"] is False


def _grade_one(ev: dict) -> dict:
    from grader.model import Submission
    from grader.pipeline import GradeSettings, grade_from_runs
    from grader.resources import resource_dir
    from grader.rubric import load_rubric

    rubric = load_rubric(resource_dir("labs") / "lab1" / "rubric.yaml")
    sub = Submission(student_id="0556001", source="dllab_0556001.zip", source_sha256=None, submitted_at=None,
                     submitted_at_source="unknown", work_dir="/nonexistent", files=(), problems=())
    return grade_from_runs(rubric, sub, [ev], settings=GradeSettings(rubric_path=Path("unused.yaml"),
                                                                      out=Path("/nonexistent")))


# --- the real thing -------------------------------------------------------------------------

PROGRESS_CELL = r'''
import sys
names = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
sent = 0
for e in range(1, 4):
    batch = ""
    for i in range(9500):
        batch += ("\rEpoch %d: %5.1f%%|%-10s| %d/9500 [00:%02d<00:59, 1234.56it/s, loss=%.4f, acc=%.3f]"
                  % (e, 100 * i / 9500, "#" * (10 * i // 9500), i, i % 60, 2.3 - i / 9500, i / 9500))
        if len(batch) > 2000:  # many small stream messages, as tqdm flushes them
            sys.stderr.write(batch); sys.stderr.flush(); sent += len(batch); batch = ""
    sys.stderr.write(batch + "\n"); sys.stderr.flush(); sent += len(batch)
    print("epoch %d train loss %.3f" % (e, 2.0 - e / 10))
print("Test loss: 1.2345")
print("Accuracy of the network on the 10000 test images: 55 %")
for i, n in enumerate(names):
    print("Accuracy of %5s : %d %%" % (n, 40 + i))
assert sent > 2_500_000
'''

FLOOD_CELL = r'''
for i in range(50000):  # 3 MB of distinct lines
    print("batch %7d grad norm %6d ..........................." % (i, i * 7919 % 100003))
print("Test loss: 0.9876")
print("Accuracy of the network on the 10000 test images: 61 %")
'''


@pytest.mark.kernel
def test_real_kernel_progress_bars_and_a_flood(tmp_path: Path) -> None:
    from grader import sandbox
    from grader.collect import from_run
    from grader.execute import SandboxSpec, run_notebook

    try:
        sandbox.check_bwrap()
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    sub = tmp_path / "sub"
    sub.mkdir()
    path = sub / "lab1-1.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(PROGRESS_CELL), new_code_cell(FLOOD_CELL)]), path)
    limits = SandboxLimits(cell_timeout_s=120, wall_timeout_s=300)  # the default 1 MiB per cell
    result = run_notebook(path, submission_dir=sub, out_dir=tmp_path / "out", spec=SandboxSpec(), limits=limits)
    assert result.status == "ok", result.reason
    nb = nbformat.read(result.executed_notebook_path, as_version=4)
    progress, flood = nb.cells
    # the bars collapsed to what a terminal shows: nothing cut, every result read
    assert "dllab" not in progress.metadata
    r = parse_notebook(new_notebook(cells=[progress]))
    assert r.test_accuracy == pytest.approx(0.55) and r.test_loss == pytest.approx(1.2345)
    assert r.per_class_accuracy == PER_CLASS
    # the distinct lines: head and tail kept, the cut said in the notebook and in the evidence
    text = "".join(o.get("text", "") for o in flood.outputs)
    assert text.startswith("batch       0 ") and text.rstrip().endswith("images: 61 %")
    assert "[output truncated by dllab:" in text and len(text) < (1 << 20) + 1000
    r = parse_notebook(new_notebook(cells=[flood]))
    assert r.test_accuracy == pytest.approx(0.61) and r.test_loss == pytest.approx(0.9876)
    assert result.output_truncated
    ev = from_run(result, run_dir=tmp_path / "out", events_path=None, figures_dir=None)
    assert ev["output_truncated"] and [c["index"] for c in ev["output_truncated_cells"]] == [1]
    assert ev["output_truncated_cells"][0]["omitted_chars"] > 1_500_000
    assert ev["metrics"]["test_accuracy"] == pytest.approx(0.61)
    assert ev["metrics"]["per_class_accuracy"] == PER_CLASS


def test_truncated_output_flags_the_grade_and_names_the_cell_for_the_ta() -> None:
    from grader.model import Submission
    from grader.pipeline import GradeSettings, grade_from_runs
    from grader.report.summary import attention_reasons
    from grader.resources import resource_dir
    from grader.rubric import load_rubric

    rubric = load_rubric(resource_dir("labs") / "lab1" / "rubric.yaml")
    sub = Submission(student_id="0556001", source="dllab_0556001.zip", source_sha256=None, submitted_at=None,
                     submitted_at_source="unknown", work_dir="/nonexistent", files=(), problems=())
    settings = GradeSettings(rubric_path=Path("unused.yaml"), out=Path("/nonexistent"))
    ev = {"path": "lab1-1.ipynb", "mode": "execute", "status": "ok", "metrics": {"test_accuracy": 0.55},
          "figures": [], "output_truncated": True,
          "output_truncated_cells": [{"cell": 3, "index": 4, "omitted_chars": 1_500_000, "kept_chars": 1_048_000}]}
    grade = grade_from_runs(rubric, sub, [ev], settings=settings)
    assert "output-truncated" in grade["flags"]
    reasons = attention_reasons(grade, [ev])
    assert any("cell 3 truncated (1500000 characters" in r for r in reasons)
    assert "output-truncated" not in reasons  # said precisely instead
    clean = grade_from_runs(rubric, sub, [dict(ev, output_truncated=False, output_truncated_cells=[])],
                            settings=settings)
    assert "output-truncated" not in clean["flags"]
