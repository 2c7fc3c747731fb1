"""The lenient notebook reader: what Jupyter opens is read (with the repairs named), the rest is refused clearly.

Every case is a notebook's bytes as a TA really meets them; the reader must keep the
student's code and outputs intact while repairing the envelope.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.nbread import UnreadableNotebook, looks_like_notebook, read_notebook, reads_notebook

CODE = "print('test accuracy', 0.70)"
OUTPUT = "Accuracy of the network on the 10000 test images: 70 %\n"


def clean_doc(minor: int = 5) -> dict:
    """A small LAB 1-1 notebook as JSON data: markdown with a curly quote, code with its output."""
    nb = new_notebook(cells=[new_markdown_cell("# LAB 1-1 \u2013 it\u2019s my CNN"),
                             new_code_cell(CODE, execution_count=1,
                                           outputs=[new_output("stream", name="stdout", text=OUTPUT)])])
    doc = json.loads(nbformat.writes(nb))
    doc["nbformat_minor"] = minor
    for i, cell in enumerate(doc["cells"]):
        cell["id"] = f"c{i}"
    if minor < 5:
        for cell in doc["cells"]:
            del cell["id"]
    return doc


def as_bytes(doc: dict) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")


def assert_intact(nb: nbformat.NotebookNode) -> None:
    """The student's work survived the repair: code, its output and the markdown text."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == CODE
    assert "".join(o.get("text", "") for o in code[0].outputs) == OUTPUT
    assert nb.nbformat == 4
    assert nbformat.validator.isvalid(nb), "a repaired notebook follows the format"


def test_clean_notebook_needs_no_repair() -> None:
    read = reads_notebook(as_bytes(clean_doc()))
    assert read.repairs == ()
    assert_intact(read.nb)


# --------------------------------------------------------------------------- the cases issue 12 names


def test_utf8_byte_order_mark_is_ignored() -> None:
    read = reads_notebook(b"\xef\xbb\xbf" + as_bytes(clean_doc()))
    assert_intact(read.nb)
    assert read.repairs == ("a UTF-8 byte-order mark at its start was ignored",)


def test_nbformat_4_4_with_cell_ids_is_read_as_4_5() -> None:
    doc = clean_doc(minor=4)
    for i, cell in enumerate(doc["cells"]):
        cell["id"] = f"keep-{i}"
    read = reads_notebook(as_bytes(doc))
    assert_intact(read.nb)
    assert read.nb.nbformat_minor == 5 and [c.id for c in read.nb.cells] == ["keep-0", "keep-1"]
    assert "format 4.4 does not allow" in read.repairs[0]


def test_invalid_and_duplicated_ids_are_replaced() -> None:
    doc = clean_doc()
    doc["cells"].append(dict(doc["cells"][1], id="c1"))  # a copied cell keeps its id
    doc["cells"][0]["id"] = "my cell!"
    read = reads_notebook(as_bytes(doc))
    ids = [c.id for c in read.nb.cells]
    assert len(set(ids)) == 3 and ids[1] == "c1" and nbformat.validator.isvalid(read.nb)
    assert set(read.repairs) == {"invalid cell ids were replaced", "duplicated cell ids were replaced"}
    assert reads_notebook(as_bytes(doc)).nb.cells[0].id == ids[0], "the same file gets the same ids"


def test_code_cells_without_outputs_or_execution_count() -> None:
    doc = clean_doc()
    doc["cells"].append({"cell_type": "code", "metadata": {}, "source": ["x = 1\n", "print(x)"], "id": "new"})
    read = reads_notebook(as_bytes(doc))
    assert_intact(read.nb)
    added = read.nb.cells[-1]
    assert added.outputs == [] and added.execution_count is None and added.source == "x = 1\nprint(x)"
    assert "code cells without `outputs` were given an empty list" in read.repairs


def test_missing_top_level_metadata() -> None:
    doc = clean_doc()
    del doc["metadata"]
    read = reads_notebook(as_bytes(doc))
    assert_intact(read.nb)
    assert read.nb.metadata == {} and read.repairs == ("the missing top-level `metadata` was added",)


def test_one_stray_cp1252_byte_in_a_markdown_cell() -> None:
    data = as_bytes(clean_doc()).replace("\u2019".encode(), b"\x92")  # Word's apostrophe, saved as cp1252
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    read = reads_notebook(data)
    assert_intact(read.nb)
    assert read.nb.cells[0].source == "# LAB 1-1 \u2013 it\u2019s my CNN", "decoded to the character meant"
    assert read.repairs[0].startswith("1 byte(s) that are not UTF-8 (the first, 0x92, on line")


# --------------------------------------------------------------------------- more of the same kind


def test_windows_line_endings_in_the_json() -> None:
    doc = clean_doc()
    doc["cells"][1]["source"] = ["import torch\r\n", "print(1)\r\n"]
    data = as_bytes(doc).replace(b"\n", b"\r\n")
    read = reads_notebook(data)
    assert read.repairs == ()
    assert read.nb.cells[1].source == "import torch\r\nprint(1)\r\n"


def test_nbformat_3_is_converted() -> None:
    v3 = nbformat.v3
    nb3 = v3.new_notebook(worksheets=[v3.new_worksheet(cells=[
        v3.new_text_cell("markdown", source="# LAB 1-1"),
        v3.new_code_cell(input=CODE, prompt_number=1, outputs=[v3.new_output("stream", output_text=OUTPUT)])])])
    read = reads_notebook(nbformat.writes(nb3, version=3).encode())
    assert_intact(read.nb)
    assert read.repairs == ("it was converted from the old notebook format 3 to format 4",)


def test_source_list_holding_none_and_numbers() -> None:
    doc = clean_doc()
    doc["cells"][0]["source"] = ["# LAB 1-1\n", None, 3]
    doc["cells"][1]["outputs"][0]["text"] = [OUTPUT, None]
    read = reads_notebook(as_bytes(doc))
    assert_intact(read.nb)
    assert read.nb.cells[0].source == "# LAB 1-1\n3"
    assert "`source` lists holding None or numbers were read as text" in read.repairs


def test_colab_notebook_with_widget_state_and_odd_cell_metadata() -> None:
    doc = clean_doc()
    doc["metadata"].update({"colab": {"provenance": [], "gpuType": "T4"}, "accelerator": "GPU",
                            "widgets": {"application/vnd.jupyter.widget-state+json": {
                                "0f3a": {"model_module": "@jupyter-widgets/controls", "model_name": "HBoxModel"}}}})
    doc["cells"][1]["metadata"] = {"colab": {"base_uri": "https://localhost:8080/"}, "outputId": "9c1e",
                                   "collapsed": "yes"}
    doc["cells"][1]["outputs"].append({"output_type": "display_data", "metadata": {},
                                       "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "0f3a"},
                                                "text/plain": ["HBox(children=(", "FloatProgress()))"]}})
    read = reads_notebook(as_bytes(doc))
    assert_intact(read.nb)
    assert "widgets" not in read.nb.metadata and read.nb.metadata.colab.gpuType == "T4"
    assert read.nb.cells[1].metadata.outputId == "9c1e" and "collapsed" not in read.nb.cells[1].metadata
    assert read.nb.cells[1].outputs[1].data["text/plain"] == "HBox(children=(FloatProgress()))"
    assert any("Colab" in r for r in read.repairs) and any("collapsed" in r for r in read.repairs)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_utf16_text_with_or_without_a_mark(encoding: str) -> None:
    read = reads_notebook(json.dumps(clean_doc(), ensure_ascii=False).encode(encoding))
    assert_intact(read.nb)
    assert read.repairs == ("it was saved as UTF-16 text, not UTF-8, and was read as UTF-16",)


def test_whole_file_in_big5() -> None:
    doc = clean_doc()
    doc["cells"][0]["source"] = "# 實驗一：CIFAR-10 卷積神經網路，訓練與測試結果"
    read = reads_notebook(json.dumps(doc, ensure_ascii=False).encode("cp950"))
    assert read.nb.cells[0].source == doc["cells"][0]["source"]
    assert read.repairs == ("it is not UTF-8 text and was read as Big5 (Traditional Chinese Windows)",)


def test_nul_padding_after_a_crashed_save() -> None:
    read = reads_notebook(as_bytes(clean_doc()) + b"\x00" * 4096)
    assert_intact(read.nb)
    assert read.repairs == ("4096 NUL byte(s) after the end of the notebook were ignored",)


def test_missing_nbformat_and_unknown_keys() -> None:
    doc = clean_doc()
    del doc["nbformat"], doc["nbformat_minor"]
    doc["saved_by"] = "vscode"
    doc["cells"].insert(0, "stray")
    doc["cells"][2]["attachments"] = {}  # allowed on markdown cells only
    read = reads_notebook(as_bytes(doc))
    assert_intact(read.nb)
    assert len(read.nb.cells) == 2 and "attachments" not in read.nb.cells[1]
    assert set(read.repairs) == {
        "unknown top-level key(s) saved_by were ignored", "a missing or invalid `nbformat_minor` was replaced",
        "it did not say which notebook format it uses and was read as format 4",
        "cells that were not objects were dropped", "keys a code cell may not have (attachments) were ignored"}


# --------------------------------------------------------------------------- truly unreadable


@pytest.mark.parametrize(("data", "words"), [
    (b"", "the file is empty"),
    (b"   \n", "the file is empty"),
    (b"{ not a notebook", "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 3"),
    # exports handed in under the notebook's name say what they are (issue 12, tester 1's 13)
    (b"%PDF-1.4 not a notebook", "it is a PDF (a notebook printed or exported as PDF), not the .ipynb itself"),
    ((b'<!DOCTYPE html>\n<html>\n<head><meta name="generator" content="nbconvert"></head>'
      b'<body class="jp-Notebook"></body></html>'),
     "it is an HTML export of a notebook (File > Download as HTML), not the .ipynb itself"),
    (b"\xef\xbb\xbf  <html><body>Jupyter Notebook</body></html>", "HTML export of a notebook"),
    (b"<html><body>my homepage</body></html>", "it is an HTML page, not a notebook"),
    (b"#!/usr/bin/env python\n# coding: utf-8\n\n# In[1]:\n\n\nimport torch\n", "it is Python source code"),
    (b"PK\x03\x04\x14\x00\x00\x00", "it is a zip archive, not a notebook"),
    (b"# My notes\n\nNo code here", "not valid JSON: Expecting value at line 1, column 1"),
    (b"[1, 2, 3]", "its JSON is list, not a notebook"),
    (b'{"name": "config", "value": 3}', "not a notebook (no `cells` and no `nbformat`)"),
    (b'{"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}', "format 5"),
    (b"<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> theirs\n", "merge-conflict markers"),
])
def test_unreadable_files_say_why(data: bytes, words: str) -> None:
    with pytest.raises(UnreadableNotebook) as info:
        reads_notebook(data)
    assert words in info.value.reason


def test_a_cut_off_file_is_called_cut_off() -> None:
    data = as_bytes(clean_doc())
    with pytest.raises(UnreadableNotebook, match="cut off while saving or uploading"):
        reads_notebook(data[: len(data) * 2 // 3])
    with pytest.raises(UnreadableNotebook, match="not valid JSON: Expecting"):
        reads_notebook(data.replace(b'"cells": [', b'"cells": [,', 1))  # broken, not cut off


def test_unreadable_survives_pickling_between_worker_processes() -> None:
    err = pickle.loads(pickle.dumps(UnreadableNotebook("it is not valid JSON")))
    assert isinstance(err, UnreadableNotebook) and err.reason == "it is not valid JSON"


def test_the_file_on_disk_is_never_changed(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + as_bytes(clean_doc(minor=4)).replace("\u2019".encode(), b"\x92")
    path = tmp_path / "lab1-1.ipynb"
    path.write_bytes(data)
    read = read_notebook(path)
    assert len(read.repairs) == 2
    assert path.read_bytes() == data


# --------------------------------------------------------------------------- recognizing a notebook by content


def test_notebook_json_is_recognized_in_jupyter_and_colab_key_order(tmp_path: Path) -> None:
    jupyter = tmp_path / "lab1-1.ipynb.json"
    jupyter.write_bytes(as_bytes(clean_doc()))  # Jupyter: "cells" first, "nbformat" last
    colab = tmp_path / "lab1-2"
    doc = clean_doc()
    colab.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 0, "metadata": doc["metadata"],
                                 "cells": doc["cells"] * 2000}))  # Colab: "nbformat" first, "cells" last, big
    with_bom = tmp_path / "notes.txt"
    with_bom.write_bytes(b"\xef\xbb\xbf" + as_bytes(clean_doc()))
    assert looks_like_notebook(jupyter) and looks_like_notebook(colab) and looks_like_notebook(with_bom)
    data = tmp_path / "results.json"
    data.write_text(json.dumps({"metadata": {"run": 1}, "accuracy": 0.7}))
    report = tmp_path / "report.txt"
    report.write_text("The cells of my notebook use nbformat 4.")
    assert not looks_like_notebook(data) and not looks_like_notebook(report)


def test_version_numbers_written_as_text() -> None:
    doc = clean_doc()
    doc["nbformat"], doc["nbformat_minor"] = "4", "5"
    read = reads_notebook(as_bytes(doc))
    assert_intact(read.nb)
    assert read.nb.nbformat_minor == 5 and len(read.repairs) == 2
