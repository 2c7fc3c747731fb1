"""Issue 13 G4: deeply nested JSON from a student (a 20 000-deep notebook, a kernel message) is
reported as what it is, never a grader crash or "the kernel died".

The notebook case runs for real: `dllab grade --mode saved` on a zip holding one. The kernel
message case runs for real once (one sandboxed kernel, about 3 s: a cell sends the message over
iopub), and its parts are unit-tested without a kernel: the decoding (jupyter_client's Session
with the grader's unpacker) and the run loop (driver.Runner._cells) with a client that receives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path

import intake_fixtures as fx
import nbformat
import pytest
from jupyter_client.session import Session

from grader import jsondepth
from grader.cli import main
from grader.entrypoints import notebook_source
from grader.execute import (
    CellRecord,
    SandboxLimits,
    SandboxSpec,
    UndecodableMessage,
    _Log,
    bounded_unpack,
)
from grader.nbread import UnreadableNotebook, reads_notebook

LOG = "Accuracy of the network on the 10000 test images: 54 %\n"


def deep_notebook(depth: int, *, where: str = "metadata") -> bytes:
    """A LAB 1-1 notebook with `depth` nested lists in its metadata (or in an output's JSON)."""
    doc = json.loads(fx.clean_notebook(LOG))
    nest = "[" * depth + "]" * depth
    if where == "metadata":
        doc["metadata"]["x"] = "@NEST@"
    else:
        doc["cells"][1]["outputs"].append({"output_type": "display_data", "metadata": {},
                                           "data": {"application/json": {"v": "@NEST@"}}})
    return json.dumps(doc).replace('"@NEST@"', nest).encode()


# --------------------------------------------------------------------------- the bound itself


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4),
    ('{"a": "[[[[{{{{", "b": ["\\"]]]["]}', 2),  # brackets inside strings, escaped quotes
    ("[" * 20000 + "]" * 20000, 20000),
])
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert jsondepth.nesting_depth(text) == depth
    assert jsondepth.nesting_depth(text.encode()) == depth


def test_loads_refuses_too_deep_as_a_value_error() -> None:
    assert jsondepth.loads("[" * 100 + "]" * 100) is not None
    with pytest.raises(ValueError, match="nested 101 levels deep"):
        jsondepth.loads("[" * 101 + "]" * 101)


# --------------------------------------------------------------------------- notebooks


@pytest.mark.parametrize("where", ["metadata", "output"])
def test_a_deep_notebook_is_unreadable_with_its_depth(where: str) -> None:
    with pytest.raises(UnreadableNotebook) as info:
        reads_notebook(deep_notebook(20000, where=where))
    assert info.value.reason.startswith("the notebook's JSON is nested 2000")
    assert "more than the 100 the grader reads" in info.value.reason
    assert reads_notebook(deep_notebook(50, where=where)).nb.cells  # a deep-ish real one still reads


def test_the_run_planner_reads_a_deep_notebook_without_crashing(tmp_path: Path) -> None:
    path = tmp_path / "lab.ipynb"
    path.write_bytes(deep_notebook(20000))
    assert notebook_source(path) == ""


def test_a_20000_deep_notebook_is_that_students_unreadable_notebook(tmp_path: Path) -> None:
    """The attack of issue 13 G4, for real: the deep notebook's student gets `unreadable-notebook`
    with the depth, the other student in the batch is graded, `grade` exits 0."""
    inc = tmp_path / "in"
    fx.write_zip(inc / "dllab_0556001.zip", [("lab1-1.ipynb", deep_notebook(20000)), ("report.pdf", fx.PDF)])
    fx.write_zip(inc / "dllab_0556002.zip", [("lab1-1.ipynb", fx.clean_notebook(LOG)), ("report.pdf", fx.PDF)])
    out = tmp_path / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["grade", str(inc), "--lab", "lab1", "--mode", "saved", "--no-pdf", "--out", str(out),
                     "--workers", "1"])
    assert code == 0, err.getvalue()
    deep = json.loads((out / "grades" / "0556001.json").read_text())
    assert "unreadable-notebook" in deep["flags"] and "grader-crash" not in deep["flags"]
    [p] = [p for p in deep["problems"] if p["flag"] == "unreadable-notebook"]
    assert "the notebook's JSON is nested 20002 levels deep, more than the 100 the grader reads" in p["message"]
    ran = {i["id"]: i for part in deep["parts"] for i in part["items"]}["lab1-1-ran"]
    assert "could not be read" in ran["message"] or "unreadable" in ran["message"].lower(), ran["message"]
    other = json.loads((out / "grades" / "0556002.json").read_text())
    assert "unreadable-notebook" not in other["flags"]
    ev = json.loads((out / "runs" / "0556002" / "lab1-1.ipynb" / "evidence.json").read_text())
    assert ev["metrics"]["test_accuracy"] == pytest.approx(0.54)


# --------------------------------------------------------------------------- kernel messages


def deep_iopub_frames(depth: int, key: bytes = b"secret") -> tuple[list[bytes], Session]:
    """A display_data message as a hostile kernel sends it on iopub (content packed by hand, as
    `kernel.session.send(..., content=bytes)` lets student code do), signed with the key."""
    sender = Session(key=key, username="kernel")
    content = b'{"data": {"application/json": ' + b"[" * depth + b"]" * depth + b'}, "metadata": {}}'
    msg = sender.msg("display_data", content={})
    frames = sender.serialize(dict(msg, content=content))
    idx = frames.index(b"<IDS|MSG>")
    return frames[idx + 1:], Session(key=key, username="grader")


def test_the_hosts_decoder_refuses_a_deep_kernel_message_as_undecodable() -> None:
    frames, receiver = deep_iopub_frames(20000)
    receiver.unpack = bounded_unpack  # as _SandboxKernelManager.client sets it
    with pytest.raises(UndecodableMessage) as info:
        receiver.deserialize(frames)
    assert "nested 2000" in info.value.detail
    ok_frames, ok = deep_iopub_frames(5)
    ok.unpack = bounded_unpack
    assert ok.deserialize(ok_frames)["content"]["data"]["application/json"] == [[[[[]]]]]
    with pytest.raises(UndecodableMessage, match="Expecting property name"):
        bounded_unpack(b"{not json")


class _ReceivingClient:
    """Stands in for nbclient in Runner._cells: cell 0's iopub stream carries the deep message,
    decoded by the real Session + bounded_unpack, which raises inside execute as nbclient's does."""

    def __init__(self) -> None:
        self.timeout = 0
        self.replies: dict[int, dict] = {}
        self.timed_out: dict[int, int] = {}
        self.frames, self.session = deep_iopub_frames(20000)
        self.session.unpack = bounded_unpack

    async def async_execute_cell(self, cell, index: int) -> None:
        self.session.deserialize(self.frames)

    def add_markers(self, cell) -> None:
        pass

    def record(self, cell, index: int, duration: float) -> CellRecord:
        return CellRecord(index, "ok", duration)


def test_a_deep_kernel_message_ends_the_run_with_that_reason_not_a_dead_kernel(tmp_path: Path) -> None:
    from grader.driver import Runner

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("display_deep()"),
                                         nbformat.v4.new_code_cell("print('after')")])
    runner = Runner(nb, "lab.ipynb", run_dir=tmp_path, submission_dir=tmp_path, spec=SandboxSpec(),
                    limits=SandboxLimits(), uid=None, log=_Log(tmp_path / "log.txt"), started=time.time())
    runner.cells_started = time.time()
    status, reason = asyncio.run(runner._cells(_ReceivingClient()))
    assert status == "killed"
    assert "the kernel sent a message the grader could not decode" in reason and "nested 2000" in reason
    assert "died" not in reason and "crash" not in reason
    assert runner.stop is not None and runner.stop["kind"] == "limit" and runner.stop["cell"] == 0
    assert [(r.index, r.status, r.ename) for r in runner.records] == [(0, "error", "UndecodableMessage"),
                                                                       (1, "not-run", "")]


HOSTILE_DISPLAY = """\
k = get_ipython().kernel
deep = b'{"data": {"application/json": ' + b'[' * 20000 + b']' * 20000 + b'}, "metadata": {}}'
# content given as bytes is sent as it is: past the kernel's own json.dumps, signed with its key
k.session.send(k.iopub_socket, 'display_data', content=deep, parent=k.get_parent(), ident=k._topic('display_data'))
print('sent')
"""


@pytest.mark.kernel
def test_a_kernel_sending_a_20000_deep_message_is_told_apart_from_a_dead_kernel(tmp_path: Path) -> None:
    """The attack of issue 13 G4 on the kernel side, for real: a notebook's kernel sends a
    20 000-deep display over iopub. The run ends with that reason at that cell, not "the kernel
    died", and the grader's process is unharmed."""
    from grader import sandbox
    from grader.execute import GiB, MiB, run_notebook

    try:
        sandbox.check_bwrap()
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    nb_path = tmp_path / "sub" / "lab.ipynb"
    nb_path.parent.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('before')"),
                                         nbformat.v4.new_code_cell(HOSTILE_DISPLAY),
                                         nbformat.v4.new_code_cell("print('after')")])
    nb_path.write_text(nbformat.writes(nb))
    limits = SandboxLimits(memory_bytes=2 * GiB, max_processes=128, max_file_bytes=64 * MiB,
                           max_work_bytes=64 * MiB, cell_timeout_s=30, wall_timeout_s=60)
    r = run_notebook(nb_path, submission_dir=nb_path.parent, out_dir=tmp_path / "out", spec=SandboxSpec(),
                     limits=limits)
    assert r.status == "killed", r.reason
    assert "the kernel sent a message the grader could not decode" in r.reason and "nested 2000" in r.reason
    assert "died" not in r.reason and "crash" not in r.reason
    assert [(c.index, c.status) for c in r.cells] == [(0, "ok"), (1, "error"), (2, "not-run")]
    assert r.cells[1].ename == "UndecodableMessage"
