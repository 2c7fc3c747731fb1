"""The student's own figures as thumbnails: read safely, shrunk, embedded as data: URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grader.report.text import clean, num

THUMB_WIDTH = 360
"""Pixels; a figure with many panels (one per layer) gets twice that and a full row."""
MAX_THUMBS = 12
MAX_FIGURE_BYTES = 8 * 1024 * 1024
MAX_FIGURE_PIXELS = 40_000_000


def figures_view(ev: Mapping) -> dict[str, Any]:
    figures = [f for f in ev.get("figures") or [] if isinstance(f, Mapping)]

    def is_hist(f: Mapping) -> bool:  # uncertain: a saved figure the grader could not read for sure
        return f.get("kind") == "histogram" or "histogram" in (f.get("axes_kinds") or []) or bool(f.get("uncertain"))

    hist = [f for f in figures if is_hist(f)]
    thumbs, unreadable = [], 0
    run_dir = Path(str(ev.get("run_dir") or "")) if ev.get("run_dir") else None
    for f in hist[:MAX_THUMBS]:
        panels = max(len(f.get("axes_kinds") or []), len(f.get("subjects") or []))
        wide = panels > 3
        uri = _thumbnail(run_dir, f.get("png"), width=THUMB_WIDTH * (2 if wide else 1)) if run_dir else None
        if uri is None:
            unreadable += 1
            continue
        subjects = [clean(s, 60) for s in (f.get("subjects") or [])[:12]]
        thumbs.append({"uri": uri, "cell": num(f.get("cell")), "wide": wide,
                       "title": clean(f.get("title"), 120), "subjects": subjects,
                       "more_subjects": max(0, len(f.get("subjects") or []) - 12)})
    kinds: dict[str, int] = {}
    for f in figures:
        if not is_hist(f):
            k = clean(f.get("kind") or "other", 20)
            kinds[k] = kinds.get(k, 0) + 1
    return {"thumbs": thumbs, "histograms": len(hist), "not_shown": max(0, len(hist) - MAX_THUMBS),
            "unreadable": unreadable, "other_kinds": kinds, "dropped": num(ev.get("figures_dropped")) or 0}


def _thumbnail(run_dir: Path, rel: object, *, width: int) -> str | None:
    """A small PNG of a student's figure as a data URI; None unless it is a sane PNG inside
    the run folder (the path and the file came out of the sandbox)."""
    if not isinstance(rel, str) or not rel:
        return None
    try:
        from PIL import Image

        root = run_dir.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file() or path.stat().st_size > MAX_FIGURE_BYTES:
            return None
        with Image.open(path) as im:
            if im.format != "PNG" or im.width * im.height > MAX_FIGURE_PIXELS:
                return None
            im.thumbnail((width, width * 3))
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, "white")
                im.paste(rgba, mask=rgba.getchannel("A"))
            else:
                im = im.convert("RGB")
            out = io.BytesIO()
            im.save(out, format="PNG", compress_level=3)
    except Exception:  # noqa: BLE001 - an unreadable figure is counted, not fatal
        return None
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")
