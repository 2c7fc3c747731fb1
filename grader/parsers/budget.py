"""How much of a notebook's printed text the host reads: a bound on the work per notebook.

Reading metrics costs about 0.1-0.3 ms per line, so a notebook of 32 cells that each printed
1 MiB of metric lines in alternating forms (which `notebook.squeeze_floods` cannot thin: no
two consecutive lines share a form) cost minutes of host time. The parser therefore reads
at most `CELL_LINES` lines and `CELL_CHARS` characters of one cell's outputs, and at most
`TOTAL_LINES` lines and `TOTAL_CHARS` characters of the whole notebook, after looking at
no more than `RAW_CHARS` characters of it in all (to thin its floods).

The notebook's budget is shared by max-min fairness (water-filling): a cell that printed
little is read whole, the cells that printed most share what is left equally, so a short
"Test accuracy" cell after 31 flooded ones is always read. A cell over its share keeps its
first and last lines (results are printed last), every line of a form seen only a few
times in it (per-class results in the middle of a log), then lines evenly spaced from the
rest (a training curve keeps its shape); the count of lines left unread is reported.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .values import MAX_LINE

CELL_LINES = 4_000
"""Lines of one cell's outputs read at most."""
CELL_CHARS = 1 << 20
"""Characters of one cell's outputs read at most (the execute-mode cap per cell)."""
TOTAL_LINES = 12_000
"""Lines of a whole notebook's outputs read at most."""
TOTAL_CHARS = 2 << 20
"""Characters of a whole notebook's outputs read at most."""
RAW_CHARS = 8 << 20
"""Characters of a whole notebook's outputs looked at at all (floods thinned, forms compared)."""
_RARE = 3
"""A line whose form occurs at most this often in its text is never thinned out."""

def _clip(line: str) -> str:
    """At most MAX_LINE characters of a line, as the parser reads it: the end of a line redrawn
    with '\r' (what is on screen), else its start."""
    if len(line) <= MAX_LINE:
        return line
    return line[-MAX_LINE:] if "\r" in line else line[:MAX_LINE]


_BLANKS = re.compile(r"\s+")
_NUMBER = re.compile(r"[\s\d]*\d[\s\d]*")


def blank_numbers(line: str) -> str:
    """`line` with blanks collapsed and each number, with the blanks around it ("%6d"),
    replaced by "0".

    Blanks are collapsed first: on a long run of blanks without a digit the number pattern
    backtracks quadratically (32 000 spaces took 9 s); over single blanks it is linear."""
    return _NUMBER.sub("0", _BLANKS.sub(" ", line))


def share(wants: list[int], total: int) -> list[int]:
    """Max-min fair shares of `total` for demands `wants` (water-filling): every demand under
    the common level is met in full, the others get the level. Sum of shares <= total."""
    out = [0] * len(wants)
    left, pending = total, sorted(range(len(wants)), key=lambda i: wants[i])
    while pending:
        level = left // len(pending)
        i = pending[0]
        if wants[i] <= level:
            out[i] = wants[i]
            left -= wants[i]
            pending.pop(0)
            continue
        for j in pending:
            out[j] = level
        break
    return out


@dataclass
class Thinned:
    """One text cut down to its share: what is read, and how much was not."""

    text: str
    lines_skipped: int = 0
    chars_skipped: int = 0


def thin(text: str, max_lines: int, max_chars: int, form=blank_numbers) -> Thinned:
    """`text` with at most `max_lines` lines and about `max_chars` characters, lines kept in
    their order: the first and the last quarter of the line budget, every line whose form
    (`form(line)`) is rare in the text, then evenly spaced lines of the rest."""
    lines = text.split("\n")
    size = len(text)
    if len(lines) <= max_lines and size <= max_chars:
        return Thinned(text)
    if max_lines <= 0 or max_chars <= 0:
        return Thinned("", len(lines), size)
    avg = max(1, size // max(1, len(lines)))
    budget = max(1, min(max_lines, max_chars // avg))
    edge = max(1, budget // 4)
    n = len(lines)
    middle = range(min(edge, n), max(edge, n - edge))
    # In the order they are worth keeping: the end (results), the start, rare forms, a sample.
    order = [*range(n - 1, max(n - edge, 0) - 1, -1), *range(min(edge, n))]
    if middle and budget > len(order):
        forms = [form(lines[i][:400]) for i in middle]
        counts = Counter(forms)
        rare = [i for i, f in zip(middle, forms) if counts[f] <= _RARE]
        order += rare[: budget - len(order)]
        if budget > len(order):
            taken = set(rare)
            rest = [i for i in middle if i not in taken]
            want = budget - len(order)
            step = len(rest) / want if want < len(rest) else 1
            order += [rest[int(k * step)] for k in range(min(want, len(rest)))]
    keep, chars = set(), 0
    for i in order:
        if len(keep) >= budget:
            break
        cost = min(len(lines[i]), MAX_LINE) + 1
        if chars + cost > max_chars:
            continue
        keep.add(i)
        chars += cost
    kept = [_clip(lines[i]) for i in sorted(keep)]
    out = "\n".join(kept)
    return Thinned(out, len(lines) - len(kept), max(0, size - len(out)))
