"""Which code printed a line, and whether that code trains or evaluates (read with `ast`, nothing runs).

A printed `loss: 2.263` names no split; the code that printed it usually does. A `print` inside a
loop that calls `loss.backward()` or `optimizer.step()` reports training; one under
`torch.no_grad()`, in a loop over a test loader or in a function named like `test`/`evaluate`
reports an evaluation. Each call that prints (`print`, `tqdm.write`, `logger.info`,
`set_description`, ...) becomes a `PrintSite`: the lines it can print as a pattern (the format
string's text literal, every value a wildcard) and the phase of the code around it.

A cell's sites include those of the notebook functions it calls (an earlier `def train(...)`).
When no site matches a line, the cell as a whole decides: a cell that trains and evaluates
nothing printed a training line. Code that does not parse, or a line no site explains, gives
no phase: the caller then keeps what the text alone says.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Phase = Literal["train", "eval"]

_MAX_SOURCE = 200_000  # characters of code per cell; more is not a hand-written cell
_MAX_SITES = 400  # print calls kept per notebook
_MAX_WILDCARDS = 24  # values in one printed line: more is a dump, not a metric line
_MAGIC = re.compile(r"^(\s*)[%!].*$", re.MULTILINE)
_PRINTERS = {"print", "write", "info", "debug", "warning", "set_description", "set_postfix_str", "log"}
_NO_GRAD = {"no_grad", "inference_mode"}
# Parts of names and keys that are about held-out data: `testloader`, `val_loader`, `loaders['val']`.
_HELD_OUT_PART = re.compile(r"^(?:test\w*|val|valid|validation|eval|evaluation|dev|holdout)"
                            r"(?:loader|set|data|dataset|dl|ds|iter|images)?s?$", re.IGNORECASE)
_NAME_PARTS = re.compile(r"[_\W]+|(?<=[a-z])(?=[A-Z])")
_EVAL_FUNCTION = re.compile(r"^(?:test|eval|evaluate|validate|valid|validation|inference|predict|accuracy|"
                            r"compute_acc\w*|calc\w*_acc\w*|get_acc\w*|check_acc\w*)(?:_\w+)?$|"
                            r"^\w*_(?:test|eval|evaluate|validate|accuracy)$", re.IGNORECASE)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_LETTERS = re.compile(r"[A-Za-z\u4e00-\u9fff]")
_WILD = "\x00"  # stands for a printed value while a pattern is being built


@dataclass(frozen=True)
class PrintSite:
    """One call that prints, as the lines it can print and the phase of the code around it."""

    lines: tuple[re.Pattern[str], ...]
    """One pattern per line the call prints (its text literal; values are wildcards)."""
    phase: Phase | None
    """'train' inside training code, 'eval' inside evaluation code, None when it cannot tell."""


@dataclass(frozen=True)
class CellCode:
    """What one code cell (with the notebook functions it calls) does, as far as its code says."""

    trains: bool
    """It (or a function it calls) calls `.backward()` or steps an optimizer."""
    evaluates: bool
    """It (or a function it calls) evaluates: `no_grad`, `.eval()`, a loop over held-out data."""
    sites: tuple[PrintSite, ...] = ()

    def phase_of(self, line: str) -> Phase | None:
        """The phase of the code that printed `line` (stripped, as a mention's `raw`), else None.

        The sites whose pattern matches decide when they agree; with none matching, a cell
        that trains and evaluates nothing printed a training line, and one that only
        evaluates an evaluation line.
        """
        matched = {s.phase for s in self.sites if any(_fits(p, line) for p in s.lines)}
        if matched:
            return matched.pop() if len(matched) == 1 else None
        if self.trains and not self.evaluates:
            return "train"
        if self.evaluates and not self.trains:
            return "eval"
        return None


def _fits(pattern: re.Pattern[str], line: str) -> bool:
    # A mention's raw line is cut at 200 characters; a longer printed line still fits its start.
    return bool(pattern.fullmatch(line) if len(line) < 200 else pattern.match(line))


def _parse(source: str) -> ast.Module | None:
    source = _MAGIC.sub(lambda m: m.group(1) + "pass", source[:_MAX_SOURCE])
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _name_of(node: ast.AST) -> str:
    """`optimizer` of `self.optimizer.step`, `net` of `net`; '' for anything else."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _called(node: ast.Call) -> str:
    return _name_of(node.func)


def _held_out_name(name: str) -> bool:
    return any(_HELD_OUT_PART.match(p) for p in _NAME_PARTS.split(name) if p)


def _mentions_held_out(node: ast.AST) -> bool:
    """An expression that names held-out data: `testloader`, `loaders['val']`, `test_set`."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and _held_out_name(sub.id):
            return True
        if isinstance(sub, ast.Attribute) and _held_out_name(sub.attr):
            return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and _HELD_OUT_PART.match(sub.value):
            return True
    return False


def _walk_code(node: ast.AST) -> Iterable[ast.AST]:
    """`ast.walk` that does not enter the functions and classes `node` defines (they run when called)."""
    todo = [node]
    while todo:
        cur = todo.pop()
        yield cur
        for child in ast.iter_child_nodes(cur):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                todo.append(child)


class _Notebook:
    """The notebook's functions (as the cells define them, in order) and what each one does."""

    def __init__(self) -> None:
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.trees: list[ast.AST] = []  # kept alive: `_does` is keyed by node ids
        self._does: dict[tuple[int, str], bool] = {}

    def does(self, node: ast.AST, what: str, depth: int = 0) -> bool:
        """Whether `node` trains (`what='train'`) or evaluates ('eval'), following the
        notebook's own functions it calls (a few levels deep)."""
        key = (id(node), what)
        if key in self._does:
            return self._does[key]
        self._does[key] = False  # recursion guard
        found = False
        for sub in _walk_code(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else \
                (n for stmt in node.body for n in _walk_code(stmt)):
            if isinstance(sub, ast.Call):
                name = _called(sub)
                if what == "train":
                    if name == "backward" or (name == "step" and isinstance(sub.func, ast.Attribute)
                                              and re.search(r"optim|^opt", _name_of(sub.func.value), re.I)):
                        found = True
                else:
                    if name in _NO_GRAD or name == "eval" and isinstance(sub.func, ast.Attribute) or \
                            (_EVAL_FUNCTION.match(name) and name not in self.functions):
                        found = True
                    elif name == "set_grad_enabled" and sub.args and isinstance(sub.args[0], ast.Constant) \
                            and sub.args[0].value is False:
                        found = True
                fn = self.functions.get(name) if isinstance(sub.func, ast.Name) else None
                if not found and fn is not None and fn is not node and depth < 4:
                    found = (what == "eval" and bool(_EVAL_FUNCTION.match(fn.name))) or \
                        self.does(fn, what, depth + 1)
            elif what == "eval" and isinstance(sub, (ast.For, ast.AsyncFor)) and _mentions_held_out(sub.iter):
                found = True
            if found:
                break
        self._does[key] = found
        return found


def _literal(node: ast.AST) -> str:
    """The text an expression prints, with `_WILD` for every value it fills in."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else _WILD
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else _WILD
                       for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
            and isinstance(node.left.value, str):
        return _PERCENT_SPEC.sub(lambda m: "%" if m.group(0) == "%%" else _WILD, node.left.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left) + _literal(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
            and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str):
        try:
            pieces = list(string.Formatter().parse(node.func.value.value))
        except ValueError:
            return _WILD
        return "".join(text + (_WILD if field is not None else "") for text, field, _, _ in pieces)
    return _WILD


def _printed(call: ast.Call) -> str | None:
    """What a printing call writes, with `_WILD` for values; None when it prints nothing readable."""
    name = _called(call)
    if name not in _PRINTERS or not call.args:
        return None
    if name != "print":
        return _literal(call.args[0])
    kw = {k.arg: k.value for k in call.keywords if k.arg}
    sep = kw.get("sep")
    sep_text = sep.value if isinstance(sep, ast.Constant) and isinstance(sep.value, str) else \
        (" " if sep is None else _WILD)
    text = sep_text.join(_literal(a) for a in call.args)
    end = kw.get("end")
    if end is not None and not (isinstance(end, ast.Constant) and end.value == "\n"):
        text += _WILD  # the line goes on with whatever is printed next
    return text


def _patterns(text: str) -> tuple[re.Pattern[str], ...]:
    """One pattern per printed line that carries enough text to be recognised."""
    out = []
    for line in text.replace("\r", "\n").split("\n"):
        line = line.strip()
        if len(_LETTERS.findall(line.replace(_WILD, ""))) < 3 or line.count(_WILD) > _MAX_WILDCARDS:
            continue
        parts = [re.sub(r"\\ ", r"\\s+", re.escape(p)) for p in line.split(_WILD)]
        out.append(re.compile(r"\s*" + "(?:.*?)".join(parts) + r"\s*", re.DOTALL))
    return tuple(out)


class _Sites:
    """Collects the print sites under one scope (a cell's body or a function's)."""

    def __init__(self, book: _Notebook, scope: ast.AST, eval_scope: bool) -> None:
        self.book = book
        self.scope_trains = book.does(scope, "train")
        self.scope_evaluates = eval_scope or book.does(scope, "eval")
        self.eval_scope = eval_scope
        self.found: list[PrintSite] = []
        self.last: Phase | None = None
        """What the statements run so far in this scope did last: trained, or evaluated."""

    def walk(self, body: Iterable[ast.stmt], loops: tuple[ast.AST, ...] = (), quiet: bool = False,
             held_out: bool = False) -> None:
        """`quiet`: under `no_grad()`; `held_out`: inside a loop over held-out data."""
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # a function's prints are its own sites, added where it is called
            if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
                head = node.iter if isinstance(node, (ast.For, ast.AsyncFor)) else node.test
                self._calls(head, loops, quiet, held_out)
                self.walk([*node.body, *node.orelse], (*loops, node), quiet,
                          held_out or (not isinstance(node, ast.While) and _mentions_held_out(head)))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                grad_off = any(isinstance(i.context_expr, ast.Call) and (
                    _called(i.context_expr) in _NO_GRAD or _called(i.context_expr) == "set_grad_enabled")
                    for i in node.items)
                for i in node.items:
                    self._calls(i.context_expr, loops, quiet, held_out)
                self.walk(node.body, loops, quiet or grad_off, held_out)
            elif isinstance(node, ast.If):
                self._calls(node.test, loops, quiet, held_out)
                self.walk(node.body, loops, quiet, held_out)
                self.walk(node.orelse, loops, quiet, held_out)
            elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
                for part in (node.body, *[h.body for h in node.handlers], node.orelse,  # type: ignore[attr-defined]
                             node.finalbody):  # type: ignore[attr-defined]
                    self.walk(part, loops, quiet, held_out)
            else:
                self._calls(node, loops, quiet, held_out)
            trains, evaluates = self.book.does(node, "train"), self.book.does(node, "eval")
            if trains or evaluates:
                self.last = None if trains and evaluates else "train" if trains else "eval"

    def _calls(self, node: ast.AST, loops: tuple[ast.AST, ...], quiet: bool, held_out: bool) -> None:
        for sub in _walk_code(node):
            if isinstance(sub, ast.Call) and len(self.found) < _MAX_SITES:
                text = _printed(sub)
                lines = _patterns(text) if text else ()
                if lines:
                    self.found.append(PrintSite(lines, self._phase(sub, loops, quiet, held_out)))

    def _phase(self, call: ast.Call, loops: tuple[ast.AST, ...], quiet: bool, held_out: bool) -> Phase | None:
        if held_out:
            return None  # one batch of an evaluation: neither training nor the total
        if quiet or self.eval_scope:
            return "eval"
        if any(_mentions_held_out(a) for a in [*call.args, *(k.value for k in call.keywords)]):
            return None  # `print(epoch, train_loss, test_acc)`: a held-out value on a training line
        training = [lp for lp in loops if self.book.does(lp, "train")]
        if training:
            # The innermost training loop: its lines are training ones unless it evaluates too
            # (a per-epoch test pass printed on the same line).
            return None if self.book.does(training[-1], "eval") else "train"
        if self.last is not None:
            # after a training loop ("Finished Training. Final loss: 2.26"), or after an evaluation
            return self.last
        if self.scope_trains != self.scope_evaluates:
            return "train" if self.scope_trains else "eval"
        return None


def read_print_sites(cells: Sequence[Mapping[str, Any]]) -> dict[int, CellCode]:
    """What each code cell does and prints, by cell index (cells read in notebook order)."""
    book = _Notebook()
    fn_sites: dict[int, tuple[PrintSite, ...]] = {}
    out: dict[int, CellCode] = {}
    total = 0
    for index, cell in enumerate(cells):
        if not isinstance(cell, Mapping) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(s for s in src if isinstance(s, str)) if isinstance(src, list) else str(src)
        tree = _parse(src)
        if tree is None:
            continue
        book.trees.append(tree)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                book.functions[node.name] = node
        sites: list[PrintSite] = []
        if total < _MAX_SITES:
            top = _Sites(book, tree, eval_scope=False)
            top.walk(tree.body)
            sites += top.found
            for fn in _called_functions(book, tree):
                if id(fn) not in fn_sites:
                    inner = _Sites(book, fn, eval_scope=bool(_EVAL_FUNCTION.match(fn.name)))
                    inner.walk(fn.body)
                    fn_sites[id(fn)] = tuple(inner.found)
                sites += fn_sites[id(fn)]
            total += len(sites)
        out[index] = CellCode(book.does(tree, "train"), book.does(tree, "eval"), tuple(sites))
    return out


def _called_functions(book: _Notebook, tree: ast.AST, depth: int = 0,
                      seen: set[int] | None = None) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The notebook functions `tree` calls, and those they call (a few levels deep)."""
    seen = set() if seen is None else seen
    found = []
    body = tree.body if isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)) else [tree]
    for sub in (n for stmt in body for n in _walk_code(stmt)):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name):
            fn = book.functions.get(sub.func.id)
            if fn is not None and id(fn) not in seen:
                seen.add(id(fn))
                found.append(fn)
                if depth < 4:
                    found += _called_functions(book, fn, depth + 1, seen)
    return found
