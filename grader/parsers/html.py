"""Metric mentions in `text/html` outputs: pandas DataFrames and other tables, plus text."""

from __future__ import annotations

from collections.abc import Sequence
from html.parser import HTMLParser

from .records import MetricMention
from .tables import grid_hits
from .text import Hit, scan_text, settle

_BLOCK_TAGS = {"br", "p", "div", "tr", "li", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "table",
               "ul", "ol", "section", "hr"}
_MAX_HTML = 2_000_000  # a rendered DataFrame is far smaller; more is noise or an attack


class _Grabber(HTMLParser):
    """Tables as rows of cell texts, and the text outside tables with line breaks kept."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._depth = 0  # nested tables are read as part of the outer one
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._skip = 0  # inside <script>/<style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "table":
            self._depth += 1
            if self._depth == 1:
                self.tables.append([])
        elif tag == "tr" and self._depth:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in _BLOCK_TAGS and not self._depth:
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag == "table" and self._depth:
            self._depth -= 1
            self.text.append("\n")
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            if self._cell is not None:  # unclosed <td>
                self._row.append(" ".join("".join(self._cell).split()))
                self._cell = None
            self.tables[-1].append(self._row)
            self._row = None
        elif tag in _BLOCK_TAGS and not self._depth:
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._cell is not None:
            self._cell.append(data)
        elif not self._depth:
            self.text.append(data)


def parse_html(html: str, *, classes: Sequence[str] | None = None, cell: int | None = None,
               source: str = "text/html") -> list[MetricMention]:
    """Metric mentions in an HTML output. Never raises on malformed HTML."""
    if not isinstance(html, str) or not html:
        return []
    g = _Grabber()
    try:
        g.feed(html[:_MAX_HTML])
        g.close()
    except Exception:  # html.parser is lenient, but hostile markup must not stop grading
        pass
    hits: list[Hit] = []
    for run, rows in enumerate(g.tables, start=1):
        got, has_header = grid_hits(rows, classes)
        if has_header:
            for h, raw in got:
                kind = "class_accuracy" if h.class_name else "test_accuracy"
                hits.append(Hit(kind, h.reading, h.class_name, raw[:200], h.split, -run))
        else:  # no header: read each row as a line of text ("plane | 54 %")
            hits.extend(scan_text("\n".join("  |  ".join(r) for r in rows), classes))
    hits.extend(scan_text("".join(g.text), classes))
    return settle(hits, cell=cell, source=source)
