"""Static reading of a notebook's cell sources: what each cell defines, uses and reads.

No code is run. For every cell: the names it binds and the names it reads (a call to a
function defined earlier also reads that function's free names, as they are when it is
called), the datasets its code names (`CIFAR10(...)`, a path with `Food-11` in it, or a
variable bound earlier to such a thing), the names it uses as models (`x.parameters()`,
`x.eval()`), and, for markdown cells, the heading. `grader.sections` uses this to tell which
cells belong to which experiment, in saved mode alone and in execute mode next to the probe.

Student code may not parse (IPython magics, shell escapes, a syntax error): magic lines are
dropped first, and a cell that still does not parse is read with a coarse regular
expression instead, never skipped and never an exception.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from grader.datasets import registry

MAX_SOURCE = 200_000
"""Characters of one cell's source read; a cell longer than this is a data dump, not code."""

# Calls that only an nn.Module answers (optimizers also have zero_grad and state_dict).
_MODEL_METHODS = {"parameters", "named_parameters", "eval", "train", "modules", "named_modules", "children"}
_MAGIC = re.compile(r"^\s*(?:[%!?]|.*=\s*!)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_HTML_HEADING = re.compile(r"<h([1-6])[^>]*>(.*?)</h\1>", re.IGNORECASE | re.DOTALL)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_]*)*)\s*=(?!=)", re.MULTILINE)
_STRING = re.compile(r"""(['"])((?:\\.|(?!\1).){1,400})\1""")
KNOWN_DATASETS = tuple(n for n in registry.known_names() if n not in registry.GENERATED_NAMES)
"""Datasets a cell's words can name: the registered ones and other real ones (not FakeData)."""
# Text that describes rather than reads data: what is printed, plotted or saved. A Food-11
# notebook copied from the CIFAR-10 tutorial still prints "cifar" and saves `cifar_net.pth`.
_DESCRIBING = {"print", "title", "set_title", "suptitle", "xlabel", "ylabel", "set_xlabel", "set_ylabel",
               "legend", "text", "annotate", "savefig", "save", "format", "write", "display", "Markdown",
               "HTML", "info", "warning", "warn", "set_description", "set_postfix"}
_OUTPUT_FILE = re.compile(r"\.(pth|pt|ckpt|h5|pkl|pickle|pdf|svg|csv|txt|json|npy|npz|log)$", re.IGNORECASE)


@dataclass(frozen=True)
class CellFacts:
    """What one cell's source says, read statically."""

    index: int
    """Position in the notebook's cell list (markdown cells count)."""
    code: bool
    """A code cell (else markdown or raw)."""
    heading: tuple[int, str] | None = None
    """(level 1..6, text) of a markdown cell that starts with a heading."""
    defines: frozenset[str] = frozenset()
    """Names the cell binds (assignments, imports, def, class, for targets)."""
    uses: frozenset[str] = frozenset()
    """Names the cell reads, including the free names of functions it calls."""
    datasets: frozenset[str] = frozenset()
    """Datasets the cell's code names or reads through a variable bound to one."""
    models: frozenset[str] = frozenset()
    """Names the cell uses as torch models (`x.parameters()`, `x.eval()`, ...)."""
    deps: Mapping[str, int] = field(default_factory=dict)
    """Name read -> the cell index that last bound it before this cell (this cell itself when
    it binds the name before reading it)."""
    rates: frozenset[float] = frozenset()
    """Learning rates the code sets: `lr=0.01` literals, the values of a loop over rates
    (`for lr in [0.1, 0.01]`) or of a list of them (`lrs = [...]`)."""
    decay: bool = False
    """The code builds a learning-rate scheduler (`StepLR(...)`) or sets a group's `lr`."""


def keyword_dataset(text: str) -> str | None:
    """The course's dataset a word or path names (`CIFAR10`, `/data/Food-11/x`), else None:
    a registered name or another real dataset's, else the dataset whose looser keyword it has
    (any `food` is Food-11's, DatasetSpec.keyword)."""
    name = registry.guess_name(text)
    if name in KNOWN_DATASETS:
        return name
    return next((s.name for s in registry.by_priority() if s.keyword and re.search(s.keyword, text, re.IGNORECASE)),
                None)


def heading_of(source: str) -> tuple[int, str] | None:
    """The first heading of a markdown cell: `# LAB 1-2` or `<h2>LAB 1-2</h2>`."""
    for line in source.splitlines()[:20]:
        if not line.strip():
            continue
        m = _HEADING.match(line)
        if m:
            return len(m.group(1)), m.group(2).strip()[:200]
        h = _HTML_HEADING.search(line)
        if h:
            return int(h.group(1)), re.sub(r"<[^>]+>", "", h.group(2)).strip()[:200]
        return None
    return None


# A heading that names a part of the lab: `LAB 1-3`, `Lab 1.2 - Food`, `1-3 Learning rate`.
# `LAB 1` alone names the whole lab, not a part; `Part 4: Test` and `1.2 Define a network`
# are steps inside one part far more often than parts of the lab.
_PART = re.compile(r"\blab\s*\d+\s*[-._\u2013\u2014]\s*\d+|^\s*\d+\s*[-\u2013\u2014]\s*\d+\b", re.IGNORECASE)


def part_named(text: str) -> str | None:
    """`1-3` for a heading naming part 1-3 of a lab (`LAB 1.3: tuning`), else None."""
    m = _PART.search(text)
    return "-".join(re.findall(r"\d+", m.group(0))) if m else None


def cell_text(value: Any) -> str:
    """A cell's source as one string (nbformat stores a list of lines), cut to MAX_SOURCE."""
    if isinstance(value, list):
        value = "".join(v for v in value if isinstance(v, str))
    return value[:MAX_SOURCE] if isinstance(value, str) else ""


def parse_cell(source: str) -> ast.Module | None:
    """The cell's code parsed, retried with IPython magics and `!` lines blanked; None when
    it does not parse either way."""
    for text in (source, "\n".join("" if _MAGIC.match(l) else l for l in source.splitlines())):
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return None


class _Stmt:
    """One top-level statement: what it binds, reads, calls and names."""

    def __init__(self) -> None:
        self.binds: list[str] = []
        self.reads: list[str] = []
        self.calls: list[str] = []
        self.words: list[str] = []  # identifiers and string constants, for dataset keywords
        self.models: list[str] = []
        self.free: dict[str, set[str]] = {}  # functions/classes defined here -> their free names


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for elt in node.elts for n in _targets(elt)]
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return []


def _free_names(node: ast.AST) -> set[str]:
    """Names a function or class body reads and does not bind itself (coarse: no scopes)."""
    loads, stores = set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (loads if isinstance(sub.ctx, ast.Load) else stores).add(sub.id)
        elif isinstance(sub, ast.arg):
            stores.add(sub.arg)
    return loads - stores


def _read_stmt(node: ast.stmt) -> _Stmt:
    st = _Stmt()
    deferred: list[ast.AST] = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        st.binds.append(node.name)
        st.free[node.name] = _free_names(node)
        # decorators and base classes are read now; the body only when called
        eager: list[ast.AST] = list(node.decorator_list)
        if isinstance(node, ast.ClassDef):
            eager += list(node.bases) + [k.value for k in node.keywords]
        deferred = [node]
        roots = eager
    else:
        roots = [node]
    for root in roots:
        quiet = _describing(root)
        for sub in ast.walk(root):
            _note(sub, st, quiet)
    for root in deferred:  # keywords in a function body still say which dataset it is about
        quiet = _describing(root)
        for sub in ast.walk(root):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and id(sub) not in quiet:
                st.words.append(sub.value[:400])
            elif (model := _model_call(sub)) is not None:
                st.models.append(model)
    return st


def _describing(root: ast.AST) -> set[int]:
    """ids of the string constants under `root` that describe (printed, plotted, saved, a
    `label=`) or name an output file: they say nothing about the data a cell reads."""
    quiet: set[int] = set()
    for sub in ast.walk(root):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and _OUTPUT_FILE.search(sub.value.strip()):
            quiet.add(id(sub))
        if not isinstance(sub, ast.Call):
            continue
        name = sub.func.id if isinstance(sub.func, ast.Name) else \
            sub.func.attr if isinstance(sub.func, ast.Attribute) else ""
        parts: list[ast.AST] = [k.value for k in sub.keywords if k.arg == "label"]
        if name in _DESCRIBING:
            parts += [*sub.args, *(k.value for k in sub.keywords)]
            if isinstance(sub.func, ast.Attribute):
                parts.append(sub.func.value)  # "...".format(...)
        for part in parts:
            quiet.update(id(n) for n in ast.walk(part) if isinstance(n, ast.Constant))
    return quiet


def _model_call(sub: ast.AST) -> str | None:
    """`net` of `net.parameters()`, `net.eval()`, ...; None for anything else."""
    if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in _MODEL_METHODS \
            and isinstance(sub.func.value, ast.Name):
        return sub.func.value.id
    return None


def _note(sub: ast.AST, st: _Stmt, quiet: set[int] | frozenset[int] = frozenset()) -> None:
    if isinstance(sub, ast.Name):
        if isinstance(sub.ctx, ast.Load):
            st.reads.append(sub.id)
            st.words.append(sub.id)  # a name only bound here (`food_net = Net(11)`) reads no data
        else:
            st.binds.append(sub.id)
    elif isinstance(sub, (ast.Import, ast.ImportFrom)):
        st.binds += [(a.asname or a.name).split(".")[0] for a in sub.names if a.name != "*"]
    elif isinstance(sub, ast.Attribute):
        st.words.append(sub.attr)
    elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
        if id(sub) not in quiet:
            st.words.append(sub.value[:400])
    elif isinstance(sub, ast.Call):
        if isinstance(sub.func, ast.Name):
            st.calls.append(sub.func.id)
        elif (model := _model_call(sub)) is not None:
            st.models.append(model)
    elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        st.binds.append(sub.name)
        st.free[sub.name] = _free_names(sub)


def _regex_stmt(source: str) -> _Stmt:
    """A cell that does not parse: every identifier is read, `a, b = ...` lines bind."""
    st = _Stmt()
    st.binds = [n.strip() for m in _ASSIGN.finditer(source) for n in m.group(1).split(",")]
    st.reads = _WORD.findall(source)
    st.words = st.reads + [m.group(2) for m in _STRING.finditer(source)]
    st.models = re.findall(r"([A-Za-z_]\w*)\.(?:%s)\(" % "|".join(sorted(_MODEL_METHODS)), source)
    return st


def _header(exprs: Iterable[ast.AST | None], targets: Iterable[ast.AST | None] = ()) -> _Stmt:
    """The part of a compound statement that runs before its body: `for x in loader:`."""
    st = _Stmt()
    for expr in exprs:
        quiet = _describing(expr) if expr is not None else set()
        for sub in ast.walk(expr) if expr is not None else ():
            _note(sub, st, quiet)
    for target in targets:
        st.binds += _targets(target) if target is not None else []
    return st


def _flatten(nodes: Iterable[ast.stmt]) -> Iterator[_Stmt]:
    """Statements in the order they run, compound ones opened up, so that a name bound in a
    loop body (`for inputs, labels in loader: loss = ...`) is bound before it is read."""
    for node in nodes:
        if isinstance(node, (ast.For, ast.AsyncFor)):
            yield _header([node.iter], [node.target])
            yield from _flatten([*node.body, *node.orelse])
        elif isinstance(node, (ast.While, ast.If)):
            yield _header([node.test])
            yield from _flatten([*node.body, *node.orelse])
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            yield _header([i.context_expr for i in node.items], [i.optional_vars for i in node.items])
            yield from _flatten(node.body)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            yield from _flatten(node.body)  # type: ignore[attr-defined]
            for handler in node.handlers:  # type: ignore[attr-defined]
                head = _header([handler.type])
                head.binds += [handler.name] if handler.name else []
                yield head
                yield from _flatten(handler.body)
            yield from _flatten([*node.orelse, *node.finalbody])  # type: ignore[attr-defined]
        else:
            yield _read_stmt(node)


def _statements(source: str) -> tuple[list[_Stmt], ast.Module | None]:
    tree = parse_cell(source)
    if tree is None:
        return [_regex_stmt(source)], None
    return list(_flatten(tree.body)), tree


_RATE_NAME = re.compile(r"(?:^|_)(?:lrs?|learning_rates?)(?:_|$)|^lr", re.IGNORECASE)
_SCHEDULER = re.compile(r"(?:LR|Scheduler|Plateau|lr_scheduler)$")
_RATE_TEXT = re.compile(r"\blr\s*=\s*([0-9.]+(?:e-?\d+)?)\b", re.IGNORECASE)


def _numbers(node: ast.AST | None) -> set[float]:
    """The numeric constants of a literal list/tuple/set (or a lone number)."""
    elts = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else [node]
    return {float(e.value) for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, (int, float))
            and not isinstance(e.value, bool) and 0 < e.value < 10}


def rate_settings(tree: ast.Module | None, source: str = "") -> tuple[frozenset[float], bool]:
    """(learning rates a cell sets, whether it decays one), read from its code: what tells a
    learning-rate study (several rates, or a schedule) from a single training run."""
    if tree is None:  # unparsable: `lr=0.01` in the text is still a rate
        return frozenset(float(x) for x in _RATE_TEXT.findall(source) if _is_float(x)), "lr_scheduler" in source
    rates: set[float] = set()
    decay = False
    for sub in ast.walk(tree):
        if isinstance(sub, ast.Call):
            rates |= {r for k in sub.keywords if k.arg == "lr" for r in _numbers(k.value)}
            name = sub.func.attr if isinstance(sub.func, ast.Attribute) else \
                sub.func.id if isinstance(sub.func, ast.Name) else ""
            decay |= bool(_SCHEDULER.search(name))
        elif isinstance(sub, (ast.For, ast.comprehension)) and any(_RATE_NAME.search(n) for n in _targets(sub.target)):
            rates |= _numbers(sub.iter)
        elif isinstance(sub, ast.Assign):
            if any(_RATE_NAME.search(n) for t in sub.targets for n in _targets(t)):
                rates |= _numbers(sub.value)
            # `param_group['lr'] = ...`: a hand-made schedule
            decay |= any(isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant) and t.slice.value == "lr"
                         for t in sub.targets)
    return frozenset(rates), decay


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_cells(cells: Sequence[Mapping[str, Any]]) -> list[CellFacts]:
    """The facts of every cell, in order; bindings flow from one cell to the next."""
    bound_ds: dict[str, str | None] = {}   # name -> dataset it holds (None: holds no dataset)
    last_def: dict[str, int] = {}          # name -> cell index that bound it last
    free: dict[str, set[str]] = {}         # function/class name -> its free names
    out: list[CellFacts] = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, Mapping):
            out.append(CellFacts(index, False))
            continue
        source = cell_text(cell.get("source"))
        if cell.get("cell_type") != "code":
            heading = heading_of(source) if cell.get("cell_type") == "markdown" else None
            out.append(CellFacts(index, False, heading=heading))
            continue
        defines: set[str] = set()
        uses: set[str] = set()
        datasets: set[str] = set()
        models: set[str] = set()
        deps: dict[str, int] = {}
        statements, tree = _statements(source)
        for st in statements:
            reads = set(st.reads)
            for fn in st.calls:
                reads |= free.get(fn, set())
            for name in reads:
                if name in last_def and name not in deps:
                    deps[name] = last_def[name]
            named = {d for w in st.words if (d := keyword_dataset(w))}
            held = {bound_ds[n] for n in reads if bound_ds.get(n)}
            stmt_ds = named | held
            for name in st.binds:
                # a name bound from exactly one dataset holds it; anything else holds none
                bound_ds[name] = next(iter(stmt_ds)) if len(stmt_ds) == 1 else None
                last_def[name] = index
            free.update(st.free)
            defines.update(st.binds)
            uses |= reads
            datasets |= {d for d in stmt_ds if d}
            models.update(st.models)
        rates, decay = rate_settings(tree, source)
        out.append(CellFacts(index, True, None, frozenset(defines), frozenset(uses), frozenset(datasets),
                             frozenset(models), deps, rates, decay))
    return out


def model_names(facts: Iterable[CellFacts]) -> frozenset[str]:
    """Every name the notebook uses as a model somewhere."""
    return frozenset(n for f in facts for n in f.models)
