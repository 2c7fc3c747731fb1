"""Charts as PNG bytes. Uses matplotlib's object API with the Agg canvas directly, so no
pyplot state, no GUI backend and no figure registry that could leak across students."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

_FONTS = ["DejaVu Sans", "Noto Sans CJK TC", "Noto Sans CJK SC"]
_STUDENT = "#2b6cb0"
_REFERENCE = "#a0aec0"
_DPI = 120


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _new_figure(width_in: float, height_in: float):  # type: ignore[no-untyped-def]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, *, top: float = 0.88, bottom: float = 0.2, left: float = 0.08) -> bytes:  # type: ignore[no-untyped-def]
    # Fixed margins: constrained layout costs more than drawing the chart.
    fig.subplots_adjust(left=left, right=0.99, top=top, bottom=bottom)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI)
    fig.clear()
    return out.getvalue()


def _context():  # type: ignore[no-untyped-def]
    import matplotlib

    # Scoped settings: class names and series names may be Chinese.
    return matplotlib.rc_context({
        "font.family": _FONTS, "font.size": 8, "axes.spines.top": False,
        "axes.spines.right": False,
    })


def per_class_bars(rows: Sequence[Mapping[str, object]], *, lo: float = 0.0) -> bytes:
    """Grouped bars per class: the student's accuracy next to the reference mean ± std.

    rows: {"name", "student": float|None, "ref_mean": float|None, "ref_std": float|None}.
    """
    names = [str(r["name"])[:18] for r in rows]
    student = [_f(r.get("student")) for r in rows]
    ref = [_f(r.get("ref_mean")) for r in rows]
    err = [_f(r.get("ref_std")) or 0.0 for r in rows]
    with _context():
        fig = _new_figure(6.6, 2.5)
        ax = fig.add_subplot()
        xs = range(len(rows))
        width = 0.4
        ax.bar([x - width / 2 for x in xs], [s if s is not None else 0 for s in student],
               width, label="you", color=_STUDENT)
        if any(r is not None for r in ref):
            ax.bar([x + width / 2 for x in xs], [r if r is not None else 0 for r in ref], width,
                   yerr=err, capsize=2, label="reference (mean ± std)", color=_REFERENCE,
                   error_kw={"elinewidth": 0.8, "ecolor": "#4a5568"})
        ax.set_xticks(list(xs), names, rotation=30 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else "center")
        ax.set_ylim(lo, 1.0)
        ax.set_ylabel("accuracy")
        ax.yaxis.set_major_formatter(_percent_formatter())
        ax.grid(axis="y", linewidth=0.4, alpha=0.6)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, borderaxespad=0.2)
        return _png(fig, bottom=0.27 if len(rows) > 6 else 0.12)


def curves(series: Mapping[str, Sequence[tuple[float, float]]], *, xlabel: str, ylabel: str) -> bytes:
    """One line per series (a learning-rate study: accuracy or loss per epoch)."""
    with _context():
        fig = _new_figure(6.6, 2.6)
        ax = fig.add_subplot()
        for name, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=str(name)[:40],
                    linewidth=1.2, marker="o" if len(points) <= 20 else None, markersize=2.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(linewidth=0.4, alpha=0.6)
        if all(float(p[0]).is_integer() for pts in series.values() for p in pts):
            ax.xaxis.get_major_locator().set_params(integer=True)
        if series:
            ax.legend(fontsize=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.01),
                      ncol=min(4, len(series)), borderaxespad=0)
        return _png(fig, top=0.86, bottom=0.17)


def score_histogram(totals: Sequence[float], *, max_points: float) -> bytes:
    """The class's totals in bins of 5 % of the maximum, with the median marked."""
    top = max([max_points, *totals]) if totals else max_points
    step = max(top / 20.0, 1e-9)
    bins = [i * step for i in range(21)]
    with _context():
        fig = _new_figure(6.6, 2.3)
        ax = fig.add_subplot()
        ax.hist(list(totals), bins=bins, color=_STUDENT, edgecolor="white", linewidth=0.6)
        if totals:
            ordered = sorted(totals)
            median = ordered[len(ordered) // 2] if len(ordered) % 2 else (
                ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
            ax.axvline(median, color="#c53030", linewidth=1, linestyle="--")
            ax.annotate(f"median {median:g}", (median, 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -10), textcoords="offset points", color="#c53030", fontsize=7)
        ax.set_xlim(0, top)
        ax.set_xlabel(f"total points (of {max_points:g})")
        ax.set_ylabel("students")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", linewidth=0.4, alpha=0.6)
        return _png(fig, top=0.95, bottom=0.2, left=0.07)


def _percent_formatter():  # type: ignore[no-untyped-def]
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def _f(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
