"""What a saved notebook's stored state says about how its cells were last run.

Saved mode runs nothing, but the notebook remembers its last run: each code cell's
execution count (`In[n]`, null when never run), its outputs, and an error output when it
raised. Together with which cells train (read from the code, nothing executed), this shows
a model evaluated without training: the training cell's stored output is an error, it was
never run while the test cell was, or it ran after the test cell. grader.checks.stored
turns that into a verdict for a TA; this module only reads the notebook.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Mapping, Sequence

from grader.cellflow import cell_text, parse_cell

_BACKWARD = re.compile(r"\.backward\s*\(")


def _is_backward(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward"


def _called(node: ast.AST) -> set[str]:
    """Names called as plain functions inside `node` (`fit(net, loader)`)."""
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


class _Trains:
    """Which functions the notebook defines train a model (call `.backward()`, themselves or
    through another function of the notebook), as the cells define them, in order."""

    def __init__(self) -> None:
        self.direct: dict[str, bool] = {}
        self.calls: dict[str, set[str]] = {}

    def define(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.direct[fn.name] = any(_is_backward(n) for n in ast.walk(fn))
        self.calls[fn.name] = _called(fn) - {fn.name}

    def trains(self, names: set[str]) -> bool:
        seen: set[str] = set()
        todo = [n for n in names if n in self.direct]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if self.direct.get(name):
                return True
            todo.extend(n for n in self.calls.get(name, ()) if n in self.direct)
        return False


def _cell_trains(source: str, tree: ast.Module | None, known: _Trains) -> bool:
    """Whether running this cell trains: its own code calls `.backward()` (outside the functions
    it only defines) or it calls a notebook function that does. `tree` is `source` parsed
    (None when it does not parse: then a `.backward(` in the text decides)."""
    if tree is None:
        return bool(_BACKWARD.search(source))
    run: list[ast.AST] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            known.define(node)
        elif not isinstance(node, ast.ClassDef):
            run.append(node)
    return any(_is_backward(n) for node in run for n in ast.walk(node)) or \
        known.trains(set().union(*(_called(node) for node in run)) if run else set())


_LOADS = ("load_state_dict", "load")  # `net.load_state_dict(...)`, `torch.load(...)`
MAX_NAMES = 100
"""Names kept per cell (what the cell's code reads), enough for a test cell's model."""


def _models_made(tree: ast.Module | None, classes: set[str]) -> list[str]:
    """Names this cell binds to a new instance of a model class the notebook defines
    (`net = Net()`): a model made anew holds untrained weights until trained or loaded."""
    made: list[str] = []
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name) and func.id in classes:
                made += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return sorted(set(made))


def _loads(tree: ast.Module | None, source: str) -> bool:
    if tree is None:
        return "load" in source
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _LOADS
               for n in ast.walk(tree))


def _names(tree: ast.Module | None) -> list[str]:
    if tree is None:
        return []
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})[:MAX_NAMES]


def stored_cells(cells: Sequence[Any]) -> list[dict[str, Any]]:
    """One record per code cell: `index` (position in the notebook), `cell` (its stored In[n],
    None when never run), `outputs` (how many are stored), `error` (the stored error's name, or
    None), `trains` (its code trains a model, read statically), `makes` (names it binds to a new
    instance of a model class the notebook defines), `loads` (it loads weights or a checkpoint)
    and `names` (the names its code uses, at most MAX_NAMES)."""
    known = _Trains()
    classes: set[str] = set()
    out: list[dict[str, Any]] = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, Mapping) or cell.get("cell_type") != "code":
            continue
        outputs = [o for o in cell.get("outputs") or [] if isinstance(o, Mapping)] \
            if isinstance(cell.get("outputs"), list) else []
        error = next((str(o.get("ename") or "error")[:200] for o in outputs if o.get("output_type") == "error"), None)
        count = cell.get("execution_count")
        source = cell_text(cell.get("source"))
        tree = parse_cell(source)
        classes |= {n.name for n in (tree.body if tree is not None else []) if isinstance(n, ast.ClassDef)}
        out.append({"index": index, "cell": count if isinstance(count, int) and not isinstance(count, bool) else None,
                    "outputs": len(outputs), "error": error, "trains": _cell_trains(source, tree, known),
                    "makes": _models_made(tree, classes), "loads": _loads(tree, source), "names": _names(tree)})
    return out
