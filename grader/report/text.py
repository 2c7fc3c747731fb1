"""Shared helpers for the reports: cleaning student text, numbers, the jinja2 environment."""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import jinja2

from grader.resources import resource_dir

STATUSES = ("pass", "partial", "fail", "error", "manual")
RUN_STATUSES = ("ok", "error", "timeout", "killed", "not-run")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
# XML 1.0 cannot hold these; a student's output can.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def clean(value: object, limit: int = 2000) -> str:
    """Student-controlled text as plain text: no ANSI colours or control bytes, capped."""
    if value is None:
        return ""
    text = _CONTROL.sub("", _ANSI.sub("", str(value)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_lines(value: object, *, lines: int = 40, width: int = 200, keep: str = "head") -> tuple[str, int]:
    """At most `lines` lines of at most `width` characters; returns (text, lines dropped).

    keep="tail" keeps the end (where a traceback names the error)."""
    rows = clean(value, limit=200_000).splitlines()
    dropped = max(0, len(rows) - lines)
    rows = rows[-lines:] if keep == "tail" else rows[:lines]
    rows = [r if len(r) <= width else r[: width - 1] + "…" for r in rows]
    return "\n".join(rows), dropped


def num(value: object) -> float | None:
    """A finite float, or None for anything else (missing, NaN, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt_points(value: object) -> str:
    """52.0 -> "52", 52.5 -> "52.5", 52.25 -> "52.25"."""
    x = num(value)
    if x is None:
        return "–"
    return f"{x:.2f}".rstrip("0").rstrip(".")


def fmt_pct(value: object, digits: int = 1) -> str:
    x = num(value)
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def fmt_num(value: object, digits: int = 3) -> str:
    x = num(value)
    if x is None:
        return "–"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    text = f"{x:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_vec(values: object, digits: int = 3) -> str:
    if not isinstance(values, (list, tuple)) or not values:
        return "–"
    return "(" + ", ".join(fmt_num(v, digits) for v in values[:8]) + ")"


def status_of(value: object, allowed: tuple[str, ...] = STATUSES, default: str = "error") -> str:
    """A known status word (it becomes a CSS class), else `default`."""
    return value if isinstance(value, str) and value in allowed else default


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(pts=fmt_points, pct=fmt_pct, num=fmt_num, vec=fmt_vec)
    return env


def render_template(name: str, context: dict[str, Any], *, inline_css: str | None) -> str:
    """The template's HTML; `inline_css` is embedded for the browser copy, None for the PDF
    (which gets the parsed, cached stylesheet instead)."""
    return environment().get_template(name).render(**context, inline_css=inline_css)

