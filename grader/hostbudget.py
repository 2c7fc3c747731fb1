"""What one run may write on the host: the executed notebook, evidence.json, the run folder.

The caps on a running cell's outputs (grader.capture) bound what the kernel sends; these bound
what the grader writes from it, measured as written:

* `write_notebook`: executed.ipynb is serialized first; over its cap, the outputs of the cells
  holding most are replaced by one marker each until it fits (the cell says so, and its
  metadata marks it cut like any truncated cell, so the output-truncated flag follows).
* `bound_evidence`: evidence.json over MAX_EVIDENCE_BYTES loses its longest lists (their middle)
  and strings first; `evidence_truncated` says what was cut.
* `bound_run_folder`: the whole run folder over the run's host budget loses its largest files
  that the grade does not rest on (figure PNGs, the probe's raw events) until it fits; a note
  `host-budget` says what was removed. The run cache copies this folder, so the cache copy
  of a run is bounded by the same number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat

MiB = 1 << 20
MAX_EVIDENCE_BYTES = 8 * MiB
"""evidence.json of one run, as written (curves are downsampled before: parsers.curves)."""
_STRING_CAP = 20_000
_LIST_KEEP = 200


def write_notebook(nb: nbformat.NotebookNode, path: Path, max_bytes: int) -> int:
    """Writes `nb` to `path` in at most `max_bytes` (UTF-8, as serialized), emptying the
    outputs of the largest cells first; returns how many cells were emptied. When the
    sources alone are over the cap every output is emptied and the notebook is still written."""
    text = nbformat.writes(nb)
    emptied = 0
    if len(text.encode("utf-8")) > max_bytes:
        sizes = sorted(((len(json.dumps(c.get("outputs", []))), i) for i, c in enumerate(nb.cells)
                        if c.get("cell_type") == "code" and c.get("outputs")), reverse=True)
        total = len(text.encode("utf-8"))
        for size, i in sizes:
            cell = nb.cells[i]
            cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=(
                f"[outputs removed by dllab: {size} characters; the executed notebook is kept "
                f"under {max_bytes // MiB} MiB]\n"))]
            cell.metadata.setdefault("dllab", {})["output_truncated"] = {
                "omitted_chars": size, "kept_chars": 0, "budget_chars": 0, "notebook_cap": max_bytes}
            emptied += 1
            total -= size
            if total <= max_bytes:
                break
        text = nbformat.writes(nb)
    Path(path).write_text(text, encoding="utf-8")
    return emptied


def _json_size(obj: Any) -> int:
    return len(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def _shrink(obj: Any, string_cap: int, list_keep: int, cut: list[str], where: str = "") -> Any:
    if isinstance(obj, str):
        if len(obj) > string_cap:
            cut.append(f"{where or '.'}: text cut to {string_cap} characters")
            return obj[:string_cap // 2] + " … " + obj[-string_cap // 2:]
        return obj
    if isinstance(obj, list):
        items = obj
        if len(obj) > list_keep:
            cut.append(f"{where or '.'}: {len(obj) - list_keep} of {len(obj)} entries left out")
            items = obj[:list_keep // 2] + obj[-list_keep // 2:]
        return [_shrink(v, string_cap, list_keep, cut, f"{where}[]") for v in items]
    if isinstance(obj, dict):
        return {k: _shrink(v, string_cap, list_keep, cut, f"{where}.{k}") for k, v in obj.items()}
    return obj


def bound_evidence(ev: dict[str, Any], max_bytes: int = MAX_EVIDENCE_BYTES) -> dict[str, Any]:
    """`ev` as written within `max_bytes`: unchanged when it fits, else with its strings and
    lists cut (halving the caps until it fits) and `evidence_truncated` listing what was cut.
    The scalars the checks read (status, metrics' totals) are never cut."""
    if _json_size(ev) <= max_bytes:
        return ev
    string_cap, list_keep = _STRING_CAP, _LIST_KEEP
    while True:
        cut: list[str] = []
        out = _shrink(ev, string_cap, list_keep, cut)
        out["evidence_truncated"] = {"max_bytes": max_bytes, "cut": cut[:50]}
        if _json_size(out) <= max_bytes or (string_cap <= 200 and list_keep <= 4):
            return out
        string_cap, list_keep = max(200, string_cap // 2), max(4, list_keep // 2)


def folder_bytes(root: Path) -> int:
    """Bytes of the regular files under `root` (links not followed)."""
    return sum(p.lstat().st_size for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())


def bound_run_folder(run_dir: Path, ev: dict[str, Any], max_bytes: int) -> dict[str, Any] | None:
    """Removes the run folder's largest figure PNGs, then the probe's raw files, until the
    folder with `ev` written fits in `max_bytes`. Updates `ev` in place (a removed figure's
    `png` becomes None and it is marked `uncertain`, so its item goes to a TA) and returns
    the `host-budget` note, or None when nothing was removed."""
    run_dir = Path(run_dir)
    total = folder_bytes(run_dir) + _json_size(ev)
    if total <= max_bytes:
        return None
    removable = sorted(((p.lstat().st_size, p) for sub in ("figures", "probe")
                        for p in (run_dir / sub).rglob("*") if p.is_file() and not p.is_symlink()),
                       key=lambda t: (not str(t[1]).startswith(str(run_dir / "figures")), -t[0]))
    removed: list[str] = []
    for size, path in removable:
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        rel = path.relative_to(run_dir).as_posix()
        removed.append(rel)
        for fig in ev.get("figures") or []:
            if isinstance(fig, dict) and fig.get("png") == rel:
                fig["png"], fig["uncertain"] = None, True
                fig["unreadable"] = "not kept: the run wrote more than the grader keeps on disk"
    note = {"code": "host-budget", "paths": removed[:50],
            "message": (f"The run wrote more than the {max_bytes // MiB} MiB the grader keeps per notebook; "
                        f"{len(removed)} file(s) (figures first) were not kept, and items that needed them "
                        f"wait for a TA.")}
    ev.setdefault("notes", []).append(note)
    return note
