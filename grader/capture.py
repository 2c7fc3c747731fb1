"""How a cell's output is kept under its byte cap while the kernel is still sending it.

Two rules, in this order, as each output message arrives (see `execute._CappedClient.output`):

1. Stream text is shown the way a terminal and Jupyter show it: consecutive stream messages
   of one name are one output, and a carriage return overwrites its line (`tqdm` redraws its
   bar thousands of times; only the last state is on screen). This happens before anything
   is counted, so 2.5 MB of redrawn progress bars cost what is left on screen.
2. What is still over the cell's budget keeps its head and its tail: the first half of the
   budget stays in place, then one marker output says how much was left out, then a rolling
   tail of the latest output. The results a cell prints last (test accuracy, per-class lines)
   therefore survive a flood printed before them. An error output is never dropped.

Sizes are counted in characters of text (as `execute._output_size` does), a close stand-in
for bytes that needs no encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import nbformat

# A tail cut lands at the next line break when one is this close, so the tail starts on a
# whole line (a half line could read as another metric).
_LINE_SLACK = 400


def collapse_cr(text: str) -> str:
    """`text` with each line's carriage-return overwrites applied, as Jupyter shows it.

    Same result as nbclient's and nbconvert's `.*\\r(?=[^\\n])` substitution (a trailing
    '\\r' stays, since the next message may continue the line), in linear time: that regex
    backtracks quadratically over a long line without '\\r'.
    """
    if "\r" not in text:
        return text
    out = []
    for line in text.split("\n"):
        cut = line.rfind("\r", 0, len(line) - 1)  # the last '\r' with something after it
        out.append(line[cut + 1:] if cut >= 0 else line)
    return "\n".join(out)


def join_stream(prev: str, new: str) -> str:
    """`prev` + `new` as one stream, overwrites applied; only prev's last line can change."""
    start = prev.rfind("\n") + 1
    return prev[:start] + collapse_cr(prev[start:] + new)


OUTPUT_OVERHEAD = 64
"""Characters a display or result output is counted for beyond its data: its JSON framing in
the written notebook, so that a million one-byte displays cost what they take on disk."""


def output_size(out: Any) -> int:
    """Characters an output holds: stream text, error text, or its data and its metadata
    (both are written to the notebook) plus OUTPUT_OVERHEAD."""
    import json

    if out.get("output_type") == "stream":
        return len(out.get("text", ""))
    if out.get("output_type") == "error":
        return len(out.get("evalue", "")) + sum(len(t) for t in out.get("traceback", []))
    meta = out.get("metadata")
    return (OUTPUT_OVERHEAD + (len(json.dumps(meta)) if meta else 0)
            + sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in (out.get("data") or {}).values()))


def marker_text(omitted: int, kept: int) -> str:
    """What the notebook shows where a cell's output was cut."""
    return (f"\n[output truncated by dllab: {omitted} characters omitted here; the first and the last "
            f"{kept // 2} characters of this cell's output are kept]\n")


@dataclass
class CellCap:
    """The byte budget of one cell's outputs and where it was cut."""

    budget: int
    """Characters the cell may keep (its share of the per-cell and the notebook caps)."""
    base: int = 0
    """Characters the notebook had kept before this cell (for the notebook-wide total)."""
    marker: Any = None
    """The marker output between head and tail, once the cell went over its budget."""
    tail: list[Any] = field(default_factory=list)
    """Outputs after the marker, oldest first."""
    head_used: int = 0
    tail_used: int = 0
    omitted: int = 0
    """Characters left out so far."""
    seen: int = 0
    """len(outs) after the last call; anything else means outputs were cleared meanwhile."""

    @property
    def kept(self) -> int:
        return self.head_used + self.tail_used

    def grow(self, out: Any, delta: int) -> None:
        """An output already counted (in the head or the tail) changed size by `delta`
        characters (a display update replaced its data)."""
        if self.marker is not None and any(o is out for o in self.tail):
            self.tail_used += delta
        else:
            self.head_used += delta

    def resync(self, outs: list[Any], new: Any) -> None:
        """Start over from what is in `outs` now (a clear_output emptied it meanwhile)."""
        if self.marker is not None and not any(o is self.marker for o in outs):
            self.marker, self.tail = None, []
        if self.marker is None:
            self.head_used = sum(output_size(o) for o in outs if o is not new)
            self.tail_used = 0
        else:
            self.tail = [o for o in self.tail if any(o is x for x in outs)]
            self.tail_used = sum(output_size(o) for o in self.tail)

    def add(self, outs: list[Any], out: Any, delta: int, *, on_cut: Callable[[], None]) -> None:
        """`out` (already in `outs`) grew by `delta` characters; cut the cell back to its budget.

        `on_cut` is called the first time the cell goes over its budget.
        """
        if self.marker is None:
            self.head_used += delta
            if self.head_used > self.budget:
                self._cut(outs)
                on_cut()
        else:
            if not any(o is out for o in self.tail):
                self.tail.append(out)
            self.tail_used += delta
        if self.marker is not None:
            self._trim(outs)
        self.seen = len(outs)

    def _cut(self, outs: list[Any]) -> None:
        """Keep the first half of the budget in place; the rest becomes the tail."""
        half = self.budget // 2
        used, split_at = 0, len(outs)
        for i, o in enumerate(outs):
            size = output_size(o)
            if used + size <= half or o.get("output_type") == "error":
                used += size
                continue
            split_at = i
            if o.get("output_type") == "stream" and half > used:
                text, keep = o["text"], half - used
                nl = text.rfind("\n", max(0, keep - _LINE_SLACK), keep)
                keep = nl + 1 if nl >= 0 else keep
                rest = nbformat.v4.new_output("stream", name=o.get("name", "stdout"), text=text[keep:])
                o["text"] = text[:keep]
                used += keep
                outs.insert(i + 1, rest)
                split_at = i + 1
            break
        self.marker = nbformat.v4.new_output("stream", name="stderr", text="")
        outs.insert(split_at, self.marker)
        self.tail = outs[split_at + 1:]
        self.head_used = used
        self.tail_used = sum(output_size(o) for o in self.tail)

    def _trim(self, outs: list[Any]) -> None:
        """Drop the oldest tail output (or the start of it) until the cell fits."""
        excess = self.head_used + self.tail_used - self.budget
        i = 0
        while excess > 0 and i < len(self.tail):
            o = self.tail[i]
            if o.get("output_type") == "error":
                i += 1  # the error says why the cell stopped: it is always kept
                continue
            size = output_size(o)
            if o.get("output_type") == "stream" and size > excess:
                text = o["text"]
                nl = text.find("\n", excess - 1, excess + _LINE_SLACK)
                cut = nl + 1 if nl >= 0 and nl + 1 < len(text) else excess
                o["text"] = text[cut:]
                self.tail_used -= cut
                self.omitted += cut
                excess -= cut
                continue
            del self.tail[i]
            for j, x in enumerate(outs):
                if x is o:
                    del outs[j]
                    break
            self.tail_used -= size
            self.omitted += size
            excess -= size
        self.marker["text"] = marker_text(self.omitted, self.budget)
