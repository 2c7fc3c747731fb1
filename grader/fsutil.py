"""Atomic writes (a reader, or a resumed run, never sees a half-written file) and the digest
of a folder tree (the run cache keys on what a run can read)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes to a temporary file in the same folder, fsyncs, then renames over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON with sorted keys and a trailing newline, so equal data gives equal bytes."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def tree_digest(root: Path) -> str:
    """SHA-256 (hex) of everything under `root` a process could read there: each folder (an
    empty one shows in a listing), each file's path and bytes, each link's target; links are
    not followed. Paths are relative to `root`, so the same tree elsewhere has the same digest."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames + sorted(filenames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                digest.update(f"l\0{rel}\0{os.readlink(path)}\n".encode("utf-8", "surrogateescape"))
            elif path.is_dir():
                digest.update(f"d\0{rel}\n".encode("utf-8", "surrogateescape"))
            elif path.is_file():
                file_hash = hashlib.sha256()
                with path.open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        file_hash.update(chunk)
                digest.update(f"f\0{rel}\0{file_hash.hexdigest()}\n".encode("utf-8", "surrogateescape"))
            else:
                digest.update(f"o\0{rel}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
