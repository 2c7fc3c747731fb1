"""Which files of a submission are run: every notebook, and the `.py` files that are
programs rather than modules.

A `.py` that a notebook or another script imports (`import mynet`, `from models.net import
Net`, `%run mynet.py`, `!python train.py`) is part of that program: it runs when it is
imported, in the importer's kernel, and running it again on its own would grade a module as
if it were a lab. Files that only define things (functions, classes, constants) and helper
modules by their usual names have nothing to run either. The decision is made by reading
the code (the `ast` of each file, magics and shell lines of notebooks included); nothing is
executed. Every file left out gets a reason for the TA (`runs/<id>/plan.json`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grader import jsondepth

HELPER_NAMES = frozenset({"utils", "util", "helpers", "helper", "__init__", "setup", "conftest"})
"""Module names that are libraries by convention (a package's __init__, packaging, pytest)."""
MAX_SOURCE_BYTES = 2 << 20
"""Larger files are not parsed (they are run, the safe default)."""


@dataclass(frozen=True)
class RunPlan:
    """The files to run, in order, and why each `.py` left out is not run."""

    run: tuple[str, ...]
    not_run: dict[str, str] = field(default_factory=dict)
    """Path -> one sentence for the TA."""

    def to_json(self) -> dict[str, object]:
        return {"run": list(self.run), "not_run": [{"path": p, "reason": r} for p, r in self.not_run.items()]}


# ---------------------------------------------------------------- reading sources

_MAGIC_RUN = re.compile(r"^\s*%run\s+(?:-\S+\s+)*['\"]?([^\s'\"]+\.py)", re.MULTILINE)
_SHELL_PY = re.compile(r"^\s*!\s*(?:\S*python[\d.]*|\{[^}]*\})\s+(?:-\S+\s+)*['\"]?([^\s'\"]+\.py)", re.MULTILINE)
_STRING_RUN = re.compile(
    r"(?:exec\(\s*open\(|runpy\.run_path\(|subprocess\.\w+\(\s*\[?[^\]\n]*?)\s*['\"]([^'\"\n]+\.py)['\"]")
_DYNAMIC = re.compile(r"(?:importlib\.import_module|__import__)\(\s*['\"]([\w.]+)['\"]")


def _python_lines(source: str) -> str:
    """Notebook cell source as Python: magics and shell escapes become blank lines."""
    return "\n".join("" if re.match(r"^\s*[!%]", line) else line for line in source.splitlines())


def references(source: str) -> tuple[set[str], set[str]]:
    """(dotted module names imported, `.py` paths run) by one cell or file.

    Tolerant: a file that does not parse falls back to matching `import`/`from` lines.
    """
    modules: set[str] = set(_DYNAMIC.findall(source))
    paths = set(_MAGIC_RUN.findall(source)) | set(_SHELL_PY.findall(source)) | set(_STRING_RUN.findall(source))
    try:
        tree = ast.parse(_python_lines(source))
    except (SyntaxError, ValueError, RecursionError):
        for m in re.finditer(r"^\s*(?:from\s+(\.*[\w.]*)\s+import\s+([\w, ]+)|import\s+([\w., ]+))", source, re.MULTILINE):
            if m.group(3):
                modules.update(n.strip().split(" as ")[0] for n in m.group(3).split(","))
            else:
                base = m.group(1).lstrip(".")
                modules.update(f"{base}.{n.strip()}" if base else n.strip() for n in m.group(2).split(","))
                if base:
                    modules.add(base)
        return {m for m in modules if m}, paths
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base:
                modules.add(base)
            # `from pkg import mod` may import a module file; `from . import mod` too.
            modules.update(f"{base}.{a.name}" if base else a.name for a in node.names if a.name != "*")
    return modules, paths


def notebook_source(path: Path) -> str:
    """The code cells of a notebook, joined; empty when it cannot be read."""
    try:
        nb = jsondepth.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    except (OSError, ValueError, RecursionError):  # TooDeep is a ValueError
        return ""
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):  # nbformat 3 keeps cells under worksheets
        cells = [c for ws in (nb.get("worksheets") or []) if isinstance(ws, dict)
                 for c in ws.get("cells") or []] if isinstance(nb, dict) else []
    out = []
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            src = cell.get("source", cell.get("input", ""))
            out.append("".join(src) if isinstance(src, list) else str(src))
    return "\n\n".join(out)


# ------------------------------------------------------------------ the decision


def _names(rel: str) -> set[str]:
    """Dotted names a file can be imported as, from any folder above it on sys.path."""
    parts = list(PurePosixPath(rel).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return {".".join(parts[i:]) for i in range(len(parts)) if parts[i:]}


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in ast.dump(node.test) and "__main__" in ast.dump(node.test)


def _definitions_only(source: str) -> bool:
    """True when the file's top level only imports, defines and assigns (nothing to run)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return False
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                             ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Pass)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        if isinstance(node, ast.Try) and all(isinstance(n, (ast.Import, ast.ImportFrom, ast.Pass, ast.Assign))
                                             for n in node.body):
            continue  # try: import x / except ImportError: ...
        return False
    return True


def plan_runs(root: Path, notebooks: Sequence[str], scripts: Sequence[str]) -> RunPlan:
    """Every notebook, then the scripts that are programs; `notebooks` and `scripts` are
    paths relative to `root` (the unpacked submission)."""
    sources: dict[str, str] = {}
    for rel in notebooks:
        sources[rel] = notebook_source(root / rel)
    for rel in scripts:
        path = root / rel
        try:
            sources[rel] = path.read_text(encoding="utf-8", errors="replace") \
                if path.stat().st_size <= MAX_SOURCE_BYTES else ""
        except OSError:
            sources[rel] = ""
    refs = {rel: references(src) for rel, src in sources.items()}
    not_run: dict[str, str] = {}
    for rel in scripts:
        reason = _why_not(rel, sources[rel], refs, root)
        if reason:
            not_run[rel] = reason
    runnable = [s for s in scripts if s not in not_run]
    if not notebooks and not runnable and scripts:
        # Nothing would run at all: run the scripts no other file imports, so the student's
        # code is at least tried (a lab written as definitions plus nothing is still graded).
        runnable = [s for s in scripts if "imported by" not in not_run[s] and "run by" not in not_run[s]]
        for s in runnable:
            del not_run[s]
    return RunPlan(tuple([*notebooks, *runnable]), not_run)


def _why_not(rel: str, source: str, refs: dict[str, tuple[set[str], set[str]]], root: Path) -> str:
    names = _names(rel)
    posix = PurePosixPath(rel)
    for other, (modules, paths) in refs.items():
        if other == rel:
            continue
        hit = next((m for m in sorted(modules) if m in names or any(m.startswith(n + ".") for n in names)), None)
        if hit is not None and posix.name != "__init__.py":
            return f"imported by {other} (`{hit}`): a module of that program, run when it is imported, not a separate script"
        folder = PurePosixPath(other).parent
        for p in paths:
            if _same_file(folder, p, posix) or PurePosixPath(p).name == posix.name and not p.startswith(("/", "..")):
                return f"run by {other} (`{p}`), inside that run"
    stem = posix.stem
    if stem in HELPER_NAMES:
        return f"{posix.name} is a package or helper module by its name, not a program"
    if source and _definitions_only(source):
        return "it only defines functions, classes or constants: there is no top-level code to run"
    return ""


def _same_file(folder: PurePosixPath, ref: str, target: PurePosixPath) -> bool:
    parts: list[str] = []
    for part in (folder / ref).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return PurePosixPath(*parts) == target if parts else False

