"""Learning rates a saved notebook tried, as printed in its outputs and as written in its code.

Saved mode runs nothing, so the optimizers a learning-rate study created are not observed.
What the student printed while the study ran ("lr 0.01 epoch 1 test acc 41.2 %") says which
rates were trained; the code (`for lr in [0.1, 0.01]`, `optim.SGD(..., lr=0.001)`) says which
were meant to be, and serves when the outputs say nothing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# "lr 0.1", "lr=1e-3", "learning rate: 0.01", "LR = .001", "init_lr 0.1"; not "lr_scheduler".
_PRINTED_LR = re.compile(rf"(?<![A-Za-z])(?:(?:init(?:ial)?[_ ]?)?lr|learning[\s_-]*rate)s?\s*(?:[:=]\s*)?(?:\(\s*)?({_NUM})(?![\d.])",
                         re.IGNORECASE)
# Written as `\s*(?:[:=]\s*)?` rather than `\s*[:=]?\s*`: adjacent optional blanks backtrack
# polynomially over a long run of spaces ("lr" and 4000 spaces took longer than 5 minutes).
_EPOCH = re.compile(r"(?<![A-Za-z])epoch\s*(?:[:=#\[(]\s*)?(\d+)", re.IGNORECASE)
_LR_NAME = re.compile(r"^(?:init(?:ial)?_?)?(?:lr|learning_?rate)s?(?:_\w+)?$|^\w*_lrs?$", re.IGNORECASE)
MAX_LINES = 200_000
MAX_LINE = 4000


def _rate(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if 0 < v <= 10 else None  # a learning rate, not an epoch count or a percentage


def printed_lrs(texts: Iterable[str]) -> list[float]:
    """The distinct learning rates printed, sorted.

    On lines that also count epochs only the first epoch's rate counts: a scheduler's decayed
    rate printed every epoch is one run, not one per epoch.
    """
    first: dict[float, int] = {}
    plain: set[float] = set()
    lines = 0
    for text in texts:
        for line in text.splitlines():
            lines += 1
            if lines > MAX_LINES:
                break
            line = line[:MAX_LINE]  # no regex runs over a runaway line
            m = _PRINTED_LR.search(line)
            v = _rate(m.group(1)) if m else None
            if v is None:
                continue
            e = _EPOCH.search(line)
            if e is None:
                plain.add(v)
            else:
                first[v] = min(first.get(v, 1 << 30), int(e.group(1)))
    start = min(first.values(), default=0)
    return sorted(plain | {v for v, e in first.items() if e == start})


def code_lrs(sources: Iterable[str]) -> list[float]:
    """The distinct learning rates the code writes: `lr=` keywords and lists of rates looped over."""
    found: set[float] = set()
    for src in sources:
        try:
            tree = ast.parse(re.sub(r"^(\s*)[%!].*$", r"\1pass", src, flags=re.MULTILINE))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in ast.walk(tree):
            values: list[ast.AST] = []
            if isinstance(node, ast.keyword) and node.arg and _LR_NAME.match(node.arg):
                values = [node.value]
            elif isinstance(node, (ast.Assign, ast.For)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and _LR_NAME.match(t.id) for t in targets):
                    values = [node.value if isinstance(node, ast.Assign) else node.iter]
            for v in values:
                items = v.elts if isinstance(v, (ast.List, ast.Tuple, ast.Set)) else [v]
                for it in items:
                    if isinstance(it, ast.Constant) and isinstance(it.value, (int, float)) \
                            and not isinstance(it.value, bool):
                        r = _rate(str(it.value))
                        if r is not None:
                            found.add(r)
    return sorted(found)
