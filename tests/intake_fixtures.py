"""Generators for intake's fixture archives, each named by the outcome it should get.

Every function writes into the folder it is given (a test's tmp_path) and returns the path
it wrote. Nothing binary is committed: hostile archives (zip slip, links, devices, bombs,
encrypted, legacy-encoded names) are built with `zipfile` and, where Python will not write
such a thing, by patching the header bytes afterwards.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
Member = tuple[str | zipfile.ZipInfo, bytes]


def notebook_bytes(source: str = "print('accuracy', 0.70)") -> bytes:
    nb = new_notebook(cells=[new_markdown_cell("# LAB 1-1"), new_code_cell(source)])
    return nbformat.writes(nb).encode()


def good_members(notebook: str = "lab1.ipynb") -> list[Member]:
    return [(notebook, notebook_bytes()), ("report.pdf", PDF), ("model.pth", b"\x80\x02fake-weights")]


def zip_bytes(members: list[Member]) -> bytes:
    """A zip of `members`, in memory (an upload inside an LMS bundle)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def write_zip(path: Path, members: list[Member], *, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so the mode bits mean what they say
    info.external_attr = mode << 16
    return info


# --------------------------------------------------------------------------- good and misnamed


def good_zip(folder: Path, student_id: str = "0556001", *, name: str | None = None, mtime: float | None = None) -> Path:
    return write_zip(folder / (name or f"dllab_{student_id}.zip"), good_members(), mtime=mtime)


def duplicate_pair(folder: Path, student_id: str = "0556001") -> tuple[Path, Path]:
    """`dllab_<id>.zip` (older) and `dllab_<id> (1).zip` (newer, with a different notebook)."""
    old = write_zip(folder / f"dllab_{student_id}.zip", good_members("old.ipynb"), mtime=1_700_000_000)
    new = write_zip(folder / f"dllab_{student_id} (1).zip", good_members("new.ipynb"), mtime=1_700_003_600)
    return old, new


def seven_zip(folder: Path, student_id: str = "0556004") -> Path:
    path = folder / f"dllab_{student_id}.7z"
    path.write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 64)
    return path


def moodle_folder(folder: Path, student_id: str | None, *, person: str, participant: str, extra: bool = False) -> Path:
    """`<Full Name>_<participant>_assignsubmission_file_/dllab_<id>.zip` as Moodle's download-all gives."""
    sub = folder / f"{person}_{participant}_assignsubmission_file_"
    zip_name = f"dllab_{student_id}.zip" if student_id else "作業.zip"
    write_zip(sub / zip_name, good_members())
    if extra:
        (sub / "report_extra.pdf").write_bytes(PDF)
    return sub


def single_top_folder(folder: Path, student_id: str = "0556001") -> Path:
    top = f"dllab_{student_id}/"
    return write_zip(folder / f"dllab_{student_id}.zip", [(top + n, d) for n, d in good_members()])


def junk_files(folder: Path, student_id: str = "0556001") -> Path:
    junk = [
        ("__MACOSX/._lab1.ipynb", b"\x00\x05\x16\x07"),
        (".DS_Store", b"\x00\x00\x00\x01Bud1"),
        (".ipynb_checkpoints/lab1-checkpoint.ipynb", notebook_bytes()),
        ("__pycache__/util.cpython-311.pyc", b"\x00" * 16),
        ("Thumbs.db", b"\x00" * 8),
    ]
    return write_zip(folder / f"dllab_{student_id}.zip", good_members() + junk)


def invalid_notebook(folder: Path, student_id: str = "0556001") -> Path:
    return write_zip(folder / f"dllab_{student_id}.zip", [
        ("lab1.ipynb", b'{"cells": [ {"cell_type": "code", '),  # cut-off JSON
        ("lab2.ipynb", b'{"cells": 3, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'),
        ("report.md", b"# Report\n"),
    ])


def unpacked_folder(folder: Path, student_id: str = "0556001") -> Path:
    root = folder / f"dllab_{student_id}"
    root.mkdir(parents=True)
    (root / "lab1.ipynb").write_bytes(notebook_bytes())
    (root / "report.md").write_text("# 報告\n", encoding="utf-8")
    (root / "escape").symlink_to("/etc")
    outside = folder / "outside.txt"
    outside.write_text("not the student's")
    os.link(outside, root / "notes.txt")  # a hard link reaches whatever it was made from
    return root


# --------------------------------------------------------------------------- hostile paths and types


def zip_slip(folder: Path, student_id: str = "0556010") -> Path:
    return write_zip(folder / f"dllab_{student_id}.zip", good_members() + [
        ("../../evil_slip.txt", b"pwned"),
        ("..\\..\\evil_win.txt", b"pwned"),
        ("ok/../../../evil_mid.txt", b"pwned"),
    ])


def absolute_path(folder: Path, target: Path, student_id: str = "0556011") -> Path:
    """A member named by the absolute path `target`, and one with a Windows drive letter."""
    return write_zip(folder / f"dllab_{student_id}.zip", good_members() + [
        (str(target), b"pwned"),
        ("C:\\Windows\\evil.txt", b"pwned"),
    ])


def symlink_member(folder: Path, student_id: str = "0556012") -> Path:
    """A link to `..`, then a file written "through" it: the classic two-step escape."""
    link = 0o120777  # S_IFLNK | 0o777
    return write_zip(folder / f"dllab_{student_id}.zip", good_members() + [
        (_info("escape", link), b"../.."),
        (_info("escape/evil_link.txt", 0o100644), b"pwned"),
        (_info("passwd", link), b"/etc/passwd"),
    ])


def device_member(folder: Path, student_id: str = "0556013") -> Path:
    return write_zip(folder / f"dllab_{student_id}.zip", good_members() + [
        (_info("null", stat.S_IFCHR | 0o666), b""),
        (_info("fifo", stat.S_IFIFO | 0o644), b""),
    ])


def nul_in_name(folder: Path, student_id: str = "0556023") -> Path:
    """A name with a NUL byte in it: zipfile would silently cut the name there."""
    members = [(n.encode(), d) for n, d in good_members()]
    return legacy_names_zip(folder / f"dllab_{student_id}.zip", members + [(b"evil.ipynb\x00.py", b"print(1)")])


def zip_bomb(folder: Path, student_id: str = "0556014", *, megabytes: int = 20) -> Path:
    """`megabytes` of zeros that deflate to a few KiB (ratio about 1000)."""
    return write_zip(folder / f"dllab_{student_id}.zip", good_members() + [
        ("data/zeros.bin", bytes(megabytes * 1024 * 1024)),
    ])


def many_files(folder: Path, count: int, student_id: str = "0556015") -> Path:
    return write_zip(folder / f"dllab_{student_id}.zip",
                     good_members() + [(f"data/{i:04d}.csv", b"1,2\n") for i in range(count)])


def lying_header(folder: Path, student_id: str = "0556016") -> Path:
    """A member whose headers claim 100 bytes but whose data inflates to 2 MiB."""
    path = write_zip(folder / f"dllab_{student_id}.zip", good_members() + [("liar.txt", b"A" * (2 * 1024 * 1024))])
    data = bytearray(path.read_bytes())
    _patch_member(data, b"liar.txt", local=(22, struct.pack("<I", 100)), central=(24, struct.pack("<I", 100)))
    path.write_bytes(bytes(data))
    return path


def encrypted(folder: Path, student_id: str = "0556017") -> Path:
    """Python cannot write encrypted zips, so set the "encrypted" flag bit in the headers."""
    path = write_zip(folder / f"dllab_{student_id}.zip", good_members())
    data = bytearray(path.read_bytes())
    for name, _ in good_members():
        flags_local = struct.unpack_from("<H", data, _find_local(data, name.encode()) + 6)[0] | 1
        flags_central = struct.unpack_from("<H", data, _find_central(data, name.encode()) + 8)[0] | 1
        _patch_member(data, name.encode(), local=(6, struct.pack("<H", flags_local)),
                      central=(8, struct.pack("<H", flags_central)))
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------- broken archives


def corrupt(folder: Path, student_id: str = "0556018") -> Path:
    path = folder / f"dllab_{student_id}.zip"
    path.write_bytes(b"This is not a zip file, it is a note.\n" * 20)
    return path


def truncated(folder: Path, student_id: str = "0556019") -> Path:
    whole = write_zip(folder / f"dllab_{student_id}.zip", good_members()).read_bytes()
    path = folder / f"dllab_{student_id}.zip"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def empty(folder: Path, student_id: str = "0556020") -> Path:
    return write_zip(folder / f"dllab_{student_id}.zip", [])


def zero_bytes(folder: Path, student_id: str = "0556021") -> Path:
    path = folder / f"dllab_{student_id}.zip"
    path.write_bytes(b"")
    return path


def crc_error(folder: Path, student_id: str = "0556022") -> Path:
    """A readable archive whose notebook's stored bytes were damaged (CRC mismatch)."""
    path = folder / f"dllab_{student_id}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("lab1.ipynb", notebook_bytes())
        zf.writestr("report.pdf", PDF)
    data = bytearray(path.read_bytes())
    start = _find_local(data, b"lab1.ipynb") + 30 + len(b"lab1.ipynb")
    data[start + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------- file name encodings


def legacy_names_zip(path: Path, members: list[tuple[bytes, bytes]]) -> Path:
    """A zip whose names are raw bytes in a Windows code page (no UTF-8 flag), as old tools write."""
    placeholders = [(chr(ord("A") + i) * len(raw)).encode() for i, (raw, _) in enumerate(members)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for ph, (_, content) in zip(placeholders, members):
            zf.writestr(ph.decode(), content)
    data = buf.getvalue()
    for ph, (raw, _) in zip(placeholders, members):
        assert data.count(ph) == 2, "placeholder must appear once per header"
        data = data.replace(ph, raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def big5_names(folder: Path, student_id: str = "0556030") -> Path:
    return legacy_names_zip(folder / f"dllab_{student_id}.zip", [
        ("實驗報告.pdf".encode("big5"), PDF),
        ("程式碼/實驗一.ipynb".encode("big5"), notebook_bytes()),
        ("資料.csv".encode("big5"), b"a,b\n"),
    ])


def gbk_names(folder: Path, student_id: str = "0556031") -> Path:
    return legacy_names_zip(folder / f"dllab_{student_id}.zip", [
        ("实验报告.pdf".encode("gbk"), PDF),
        ("作业一.ipynb".encode("gbk"), notebook_bytes()),
        ("数据.csv".encode("gbk"), b"a,b\n"),
    ])


def cp437_names(folder: Path, student_id: str = "0556032") -> Path:
    return legacy_names_zip(folder / f"dllab_{student_id}.zip", [
        ("Résumé.txt".encode("cp437"), b"report"),
        ("München.ipynb".encode("cp437"), notebook_bytes()),
        ("模型.py".encode("utf-8"), b"print(1)"),  # UTF-8 without the flag, as some tools write
    ])


# --------------------------------------------------------------------------- nesting


def zip_of_zip(folder: Path, student_id: str = "0556040") -> Path:
    """The student zipped their zip: the inner one is the real submission."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        for name, data in good_members():
            zf.writestr(name, data)
    return write_zip(folder / f"dllab_{student_id}.zip", [(f"dllab_{student_id}.zip", inner.getvalue())])


def nested_zip(folder: Path, student_id: str = "0556041") -> Path:
    """A notebook next to `code.zip`, which holds a script and `deeper.zip` (not opened)."""
    deeper = io.BytesIO()
    with zipfile.ZipFile(deeper, "w") as zf:
        zf.writestr("hidden.py", "print('too deep')")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("code/train.py", "print('train')")
        zf.writestr("code/deeper.zip", deeper.getvalue())
        zf.writestr("../../evil_nested.txt", "pwned")
    return write_zip(folder / f"dllab_{student_id}.zip", good_members() + [("code.zip", code.getvalue())])


# --------------------------------------------------------------------------- byte patching


def _find_local(data: bytearray, name: bytes) -> int:
    i = data.find(b"PK\x03\x04")
    while i >= 0:
        (n,) = struct.unpack_from("<H", data, i + 26)
        if data[i + 30 : i + 30 + n] == name:
            return i
        i = data.find(b"PK\x03\x04", i + 4)
    raise KeyError(name)


def _find_central(data: bytearray, name: bytes) -> int:
    i = data.find(b"PK\x01\x02")
    while i >= 0:
        (n,) = struct.unpack_from("<H", data, i + 28)
        if data[i + 46 : i + 46 + n] == name:
            return i
        i = data.find(b"PK\x01\x02", i + 4)
    raise KeyError(name)


def _patch_member(data: bytearray, name: bytes, *, local: tuple[int, bytes], central: tuple[int, bytes]) -> None:
    li = _find_local(data, name) + local[0]
    data[li : li + len(local[1])] = local[1]
    ci = _find_central(data, name) + central[0]
    data[ci : ci + len(central[1])] = central[1]


def moodle_bundle(folder: Path, students: dict[str, tuple[str, str]], *, uploaded: tuple[int, ...]) -> Path:
    """Moodle's "download all submissions" zip: {student_id: (name, participant)} folders of zips."""
    path = folder / "DL-2024-LAB1-提交作業-12345.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for sid, (person, participant) in students.items():
            inner = io.BytesIO()
            with zipfile.ZipFile(inner, "w") as z:
                for name, data in good_members():
                    z.writestr(name, data)
            info = zipfile.ZipInfo(f"{person}_{participant}_assignsubmission_file_/dllab_{sid}.zip", uploaded)
            zf.writestr(info, inner.getvalue())
    return path


# --------------------------------------------------------------------------- notebooks Jupyter opens, and ones it cannot


def _nb_doc(outputs: str = "", *, title: str = "# LAB 1-1 \u2013 it\u2019s my CNN") -> dict:
    """A notebook as JSON data, with one stored stdout output when `outputs` is given."""
    import json

    from nbformat.v4 import new_output

    cell = new_code_cell("evaluate()", execution_count=1,
                         outputs=[new_output("stream", name="stdout", text=outputs)] if outputs else [])
    doc = json.loads(nbformat.writes(new_notebook(cells=[new_markdown_cell(title), cell])))
    for i, c in enumerate(doc["cells"]):
        c["id"] = f"c{i}"
    return doc


def _dump(doc: dict) -> bytes:
    import json

    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")


def bom_and_44_ids(outputs: str = "") -> bytes:
    """nbformat 4.4 that still has cell ids, saved with a UTF-8 byte-order mark (VS Code on Windows)."""
    doc = _nb_doc(outputs)
    doc["nbformat_minor"] = 4
    return b"\xef\xbb\xbf" + _dump(doc)


def cp1252_byte_no_metadata(outputs: str = "") -> bytes:
    """A hand-edited notebook: no top-level metadata, one Windows-1252 apostrophe in the markdown."""
    doc = _nb_doc(outputs)
    del doc["metadata"]
    return _dump(doc).replace("\u2019".encode(), b"\x92")


def code_cells_without_outputs() -> bytes:
    """Written by a script, not Jupyter: code cells lack `outputs` and `execution_count`."""
    doc = _nb_doc()
    for c in doc["cells"]:
        c.pop("outputs", None)
        c.pop("execution_count", None)
    return _dump(doc)


def clean_notebook(outputs: str = "") -> bytes:
    return _dump(_nb_doc(outputs))


def repaired_notebooks(folder: Path, student_id: str = "0556050") -> Path:
    return write_zip(folder / f"dllab_{student_id}.zip", [
        ("lab1-1.ipynb", bom_and_44_ids()), ("lab1-2.ipynb", cp1252_byte_no_metadata()),
        ("lab1-3.ipynb", code_cells_without_outputs()), ("report.pdf", PDF)])


def renamed_notebooks(folder: Path, student_id: str = "0556051") -> Path:
    """Notebooks under other names, an unreadable one named as a notebook, and files that are not notebooks."""
    cut = clean_notebook()
    return write_zip(folder / f"dllab_{student_id}.zip", [
        ("lab1-1.ipynb.json", clean_notebook()), ("lab1-2", bom_and_44_ids()),
        ("lab1-3.ipynb.txt", cut[: len(cut) // 2]), ("lab1.ipynb.pdf", PDF),
        ("results.json", b'{"metadata": {"seed": 1}, "accuracy": 0.7}'), ("report.md", b"# Report\n")])


def nested_encrypted(folder: Path, student_id: str = "0556052") -> Path:
    """A readable zip whose only content is a password-protected inner zip."""
    inner_dir = folder / "_inner"
    inner = encrypted(inner_dir, student_id).read_bytes()
    for p in inner_dir.iterdir():
        p.unlink()
    inner_dir.rmdir()
    return write_zip(folder / f"dllab_{student_id}.zip", [(f"dllab_{student_id}.zip", inner)])


def lone_rar(folder: Path, student_id: str = "0556053") -> Path:
    path = folder / f"dllab_{student_id}.rar"
    path.write_bytes(b"Rar!\x1a\x07\x01\x00" + b"\x00" * 64)
    return path
