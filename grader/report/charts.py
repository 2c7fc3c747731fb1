"""Charts for the feedback and the summary: matplotlib (Agg) to PNG data URIs."""

from __future__ import annotations

import base64
import io
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def per_class_bars(classes: Sequence[str], student: Mapping[str, float], reference: Mapping | None) -> str:
    """The student's accuracy per class beside the reference's mean ± std."""
    fig, ax = plt.subplots(figsize=(7.2, 2.6))
    x = range(len(classes))
    width = 0.4 if reference else 0.7
    ax.bar([i - (width / 2 if reference else 0) for i in x], [100 * student.get(c, 0) for c in classes],
           width=width, label="you", color="#3b6ea8")
    if reference:
        means = [100 * ((reference.get(c) or {}).get("mean") or 0) for c in classes]
        stds = [100 * ((reference.get(c) or {}).get("std") or 0) for c in classes]
        ax.bar([i + width / 2 for i in x], means, yerr=stds, width=width, label="reference", color="#b9c4d0",
               capsize=2)
    ax.set_xticks(list(x), [c[:12] for c in classes], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)", fontsize=8)
    ax.set_ylim(0, 100)
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def score_histogram(totals: Sequence[float], maximum: float) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 2.4))
    bins = [maximum * i / 10 for i in range(11)]
    ax.hist([min(t, maximum) for t in totals], bins=bins, color="#3b6ea8", edgecolor="white")
    ax.set_xlabel("total points", fontsize=8)
    ax.set_ylabel("students", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)


def curves(series: Mapping[str, Sequence[Sequence[float]]]) -> str | None:
    """Training curves the student printed (loss/accuracy per epoch or step)."""
    usable = {k: v for k, v in series.items() if len(v) >= 2}
    if not usable:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 2.4))
    for name, points in sorted(usable.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.2)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _uri(fig)
