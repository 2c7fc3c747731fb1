"""Issue 13 G4: deeply nested JSON from a student (a 20 000-deep notebook, a kernel message) is
reported as what it is, never a grader crash or "the kernel died".

The notebook case runs for real: `dllab grade --mode saved` on a zip holding one. The kernel
message case runs for real once (one sandboxed kernel, about 3 s: cells send deep outputs, which
become placeholders, then a deep status, which ends the run), and its parts are unit-tested
without a kernel: the decoding (jupyter_client's Session with the grader's decoder), nbclient's
handling of the placeholder, and the run loop (driver.Runner._cells) with a client that receives it.
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
from grader.execute import CellRecord, SandboxLimits, SandboxSpec, _Log
from grader.kernelmsg import (
    DROPPED,
    UndecodableMessage,
    bounded_deserialize,
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


def deep_frames(depth: int, msg_type: str = "display_data", key: bytes = b"secret",
                content: bytes | None = None) -> tuple[list[bytes], Session, dict]:
    """A message as a hostile kernel sends it (content packed by hand, as
    `kernel.session.send(..., content=bytes)` lets student code do), signed with the key, in
    reply to a request `parent`; and the grader's Session, with the grader's decoder, to read it."""
    sender = Session(key=key, username="kernel")
    parent = sender.msg("execute_request", content={"code": "display_deep()"})["header"]
    if content is None:
        content = b'{"data": {"application/json": ' + b"[" * depth + b"]" * depth + b'}, "metadata": {}}'
    msg = sender.msg(msg_type, content={}, parent=parent)
    frames = sender.serialize(dict(msg, content=content))
    idx = frames.index(b"<IDS|MSG>")
    receiver = Session(key=key, username="grader")
    receiver.unpack = bounded_unpack  # as _SandboxKernelManager.client sets them
    receiver.deserialize = bounded_deserialize(receiver)
    return frames[idx + 1:], receiver, parent


@pytest.mark.parametrize("msg_type", ["display_data", "execute_result", "update_display_data", "comm_msg"])
def test_a_deep_output_message_becomes_a_placeholder_for_the_cell_that_sent_it(msg_type: str) -> None:
    """Issue 13 G4: the output the grader refuses costs only itself; the header and the parent
    header are the kernel's, so nbclient gives the placeholder to the cell that asked."""
    frames, receiver, parent = deep_frames(20000, msg_type)
    msg = receiver.deserialize(frames)
    assert msg["msg_type"] == msg["header"]["msg_type"] == "stream"
    assert msg["parent_header"]["msg_id"] == parent["msg_id"]
    assert msg["content"] == {"name": "stderr",
                              "text": "[dllab: an output nested 20002 levels deep was dropped by the grader]\n"}
    assert isinstance(msg[DROPPED], UndecodableMessage) and msg[DROPPED].depth == 20002
    # the signature is still remembered: the same frames replayed are refused as before
    with pytest.raises(ValueError, match="Duplicate Signature"):
        receiver.deserialize(frames)
    bad, receiver, _ = deep_frames(0, content=b"{not json")
    assert "could not decode (Expecting property name" in receiver.deserialize(bad)["content"]["text"]
    ok_frames, ok, _ = deep_frames(5)
    assert ok.deserialize(ok_frames)["content"]["data"]["application/json"] == [[[[[]]]]]


@pytest.mark.parametrize("msg_type", ["execute_reply", "status"])
def test_a_deep_message_the_run_needs_is_undecodable(msg_type: str) -> None:
    frames, receiver, _ = deep_frames(20000, msg_type, content=b'{"status": "ok", "x": ' + b"[" * 20000
                                      + b"]" * 20000 + b"}")
    with pytest.raises(UndecodableMessage) as info:
        receiver.deserialize(frames)
    assert "nested 20001" in info.value.detail


def test_a_deep_header_is_undecodable_whatever_the_message() -> None:
    sender = Session(key=b"k", username="kernel")
    frames = sender.serialize(sender.msg("display_data", content={"data": {}, "metadata": {}}))
    frames = frames[frames.index(b"<IDS|MSG>") + 1:]
    frames[1] = b'{"msg_id": "x", "msg_type": "display_data", "v": ' + b"[" * 500 + b"]" * 500 + b"}"
    frames[0] = sender.sign(frames[1:5])
    receiver = Session(key=b"k", username="grader")
    receiver.unpack = bounded_unpack
    receiver.deserialize = bounded_deserialize(receiver)
    with pytest.raises(UndecodableMessage, match="nested 501"):
        receiver.deserialize(frames)


def _runner(tmp_path: Path, nb):
    from grader.driver import Runner

    runner = Runner(nb, "lab.ipynb", run_dir=tmp_path, submission_dir=tmp_path, spec=SandboxSpec(),
                    limits=SandboxLimits(), uid=None, log=_Log(tmp_path / "log.txt"), started=time.time())
    runner.cells_started = time.time()
    return runner


def test_the_placeholder_is_kept_in_the_cell_with_a_note_and_later_outputs_follow(tmp_path: Path) -> None:
    """nbclient's own message handling (the grader's client) on the decoded messages of one cell."""
    from grader.execute import _CappedClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("display_deep()\nprint('after')")])
    runner = _runner(tmp_path, nb)
    client = _CappedClient(nb, runner=runner)
    client.reset_execution_trackers()
    client.clear_before_next_output = False  # set per cell by nbclient
    frames, receiver, _ = deep_frames(900)
    cell = nb.cells[0]
    client.process_message(receiver.deserialize(frames), cell, 0)
    more, _, _ = deep_frames(901)  # signed with the same key
    client.process_message(receiver.deserialize(more), cell, 0)
    sender = Session(key=b"secret", username="kernel")
    after = sender.serialize(sender.msg("stream", content={"name": "stdout", "text": "after\n"}))
    client.process_message(receiver.deserialize(after[after.index(b"<IDS|MSG>") + 1:]), cell, 0)
    assert [(o.output_type, o.name, o.text) for o in cell.outputs] == [
        ("stream", "stderr", "[dllab: an output nested 902 levels deep was dropped by the grader]\n"
                             "[dllab: an output nested 903 levels deep was dropped by the grader]\n"),
        ("stream", "stdout", "after\n")]
    [note] = runner.notes  # once per cell
    assert note["code"] == "output-dropped"
    assert note["message"].startswith("cell 1 sent an output nested 902 levels deep, more than the 100")


class _ReceivingClient:
    """Stands in for nbclient in Runner._cells: cell 0's reply is the deep message, decoded by the
    real Session + the grader's decoder, which raises inside execute as nbclient's does."""

    def __init__(self) -> None:
        self.timeout = 0
        self.replies: dict[int, dict] = {}
        self.timed_out: dict[int, int] = {}
        self.frames, self.session, _ = deep_frames(20000, "execute_reply")

    async def async_execute_cell(self, cell, index: int) -> None:
        self.session.deserialize(self.frames)

    def add_markers(self, cell) -> None:
        pass

    def record(self, cell, index: int, duration: float) -> CellRecord:
        return CellRecord(index, "ok", duration)


def test_a_deep_reply_ends_the_run_with_that_reason_not_a_dead_kernel(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("display_deep()"),
                                         nbformat.v4.new_code_cell("print('after')")])
    runner = _runner(tmp_path, nb)
    status, reason = asyncio.run(runner._cells(_ReceivingClient()))
    assert status == "killed"
    assert "the kernel sent a message the grader could not decode" in reason and "nested 2000" in reason
    assert "died" not in reason and "crash" not in reason
    assert runner.stop is not None and runner.stop["kind"] == "limit" and runner.stop["cell"] == 0
    assert [(r.index, r.status, r.ename) for r in runner.records] == [(0, "error", "UndecodableMessage"),
                                                                       (1, "not-run", "")]


HOSTILE = """\
k = get_ipython().kernel
deep = b'{"data": {"application/json": ' + b'[' * 20000 + b']' * 20000 + b'}, "metadata": {}}'
# content given as bytes is sent as it is: past the kernel's own json.dumps, signed with its key
k.session.send(k.iopub_socket, '{kind}', content=deep, parent=k.get_parent(), ident=k._topic('{kind}'))
print('sent')
"""
DEEP_REPR = """\
import json
from IPython.display import display
class Deep:
    def _repr_json_(self):
        return json.loads('[' * 900 + ']' * 900)
display(Deep())
print('after deep display')
"""


@pytest.mark.kernel
def test_a_kernels_deep_outputs_cost_only_themselves_and_a_deep_status_ends_the_run(tmp_path: Path) -> None:
    """The attack of issue 13 G4 on the kernel side, for real: a 20 000-deep display sent raw over
    iopub and a `_repr_json_` nested 900 levels (the tester's case) each become a placeholder in
    their cell, the run goes on; a deep `status`, which the grader needs, ends the run at that
    cell with that reason, not "the kernel died", and the grader's process is unharmed."""
    from grader import sandbox
    from grader.execute import GiB, MiB, run_notebook

    try:
        sandbox.check_bwrap()
    except Exception as exc:  # pragma: no cover - depends on the host
        pytest.skip(f"bubblewrap unusable here: {exc}")
    nb_path = tmp_path / "sub" / "lab.ipynb"
    nb_path.parent.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('before')"),
                                         nbformat.v4.new_code_cell(HOSTILE.replace("{kind}", "display_data")),
                                         nbformat.v4.new_code_cell(DEEP_REPR),
                                         nbformat.v4.new_code_cell(HOSTILE.replace("{kind}", "status")),
                                         nbformat.v4.new_code_cell("print('never')")])
    nb_path.write_text(nbformat.writes(nb))
    limits = SandboxLimits(memory_bytes=2 * GiB, max_processes=128, max_file_bytes=64 * MiB,
                           max_work_bytes=64 * MiB, cell_timeout_s=30, wall_timeout_s=60)
    r = run_notebook(nb_path, submission_dir=nb_path.parent, out_dir=tmp_path / "out", spec=SandboxSpec(),
                     limits=limits)
    assert [(c.index, c.status) for c in r.cells] == [(0, "ok"), (1, "ok"), (2, "ok"), (3, "error"), (4, "not-run")]
    executed = nbformat.read(tmp_path / "out" / "executed.ipynb", as_version=4)
    texts = ["".join(o.get("text", "") for o in c.outputs) for c in executed.cells]
    assert "an output nested 20002 levels deep was dropped by the grader" in texts[1] and "sent" in texts[1]
    assert "an output nested 902 levels deep was dropped by the grader" in texts[2]
    assert "after deep display" in texts[2]
    assert [n["code"] for n in r.notes] == ["output-dropped", "output-dropped"]
    assert r.status == "killed", r.reason
    assert "cell 4" in r.reason and "the kernel sent a message the grader could not decode" in r.reason
    assert "nested 2000" in r.reason and "died" not in r.reason and "crash" not in r.reason
    assert r.cells[3].ename == "UndecodableMessage"
