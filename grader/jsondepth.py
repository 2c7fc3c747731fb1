"""How deeply a piece of JSON nests, found without parsing it: a bound for student-controlled JSON.

Python's json module, nbformat's validator and every walk over the result recurse once per
level, so a 20 000-deep notebook or kernel message raises RecursionError (or overflows the C
stack) in the grader's own process. `check_depth` reads the brackets outside strings in one
linear pass (C speed: a regex and numpy) and refuses anything deeper than `MAX_DEPTH` before a
parser sees it. Real notebooks nest under 20 levels (Plotly figures, widget state).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

__all__ = ["MAX_DEPTH", "TooDeep", "check_depth", "loads", "nesting_depth"]

MAX_DEPTH = 100
"""Deepest nesting of arrays and objects the grader reads."""
# A JSON string: quotes around anything but a quote or backslash, or an escaped character.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class TooDeep(ValueError):
    """JSON nested deeper than the grader reads; `depth` is how deep (levels)."""

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"the JSON is nested {depth} levels deep, more than the {limit} the grader reads")
        self.depth = depth
        self.limit = limit

    def __reduce__(self) -> tuple[type[TooDeep], tuple[int, int]]:
        # Rebuilt from the constructor's arguments (`args` holds only the message), so the
        # error crosses a process boundary intact (tests/test_pickling.py).
        return TooDeep, (self.depth, self.limit)


def nesting_depth(data: bytes | str) -> int:
    """The deepest nesting of `[`/`{` outside strings (0 for a plain value). For invalid JSON
    (a cut-off string) it may overcount, never undercount."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets.translate(_STEP), dtype=np.int8)
    return int(np.cumsum(steps, dtype=np.int64).max())


def check_depth(data: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Raises `TooDeep` when `data` nests deeper than `limit` levels."""
    opening = data.count("[") + data.count("{") if isinstance(data, str) else data.count(b"[") + data.count(b"{")
    if opening <= limit:  # cannot nest deeper than it opens: most kernel messages stop here
        return
    depth = nesting_depth(data)
    if depth > limit:
        raise TooDeep(depth, limit)


def loads(data: bytes | str, *, limit: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """`json.loads` of student-controlled text, refusing nesting deeper than `limit` (`TooDeep`,
    a ValueError like json's own errors)."""
    check_depth(data, limit)
    return json.loads(data, **kwargs)
