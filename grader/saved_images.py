"""Images stored in a notebook's outputs: validated before use, and told apart by what they show.

A saved notebook is student-controlled JSON: an `image/png` payload may be truncated
base64, another format, a decompression bomb or megabytes of junk. `decode_image` accepts
only a PNG or JPEG within size caps and returns PNG bytes (JPEG re-encoded, so the reports'
thumbnail code sees one format), or says in one phrase why the payload was refused.

`looks_like_histogram` classifies a figure from its pixels when its code cannot tell:
histogram bars are flat areas of one colour that stand side by side on a shared baseline,
with heights that vary. A line plot has thin strokes, a grid of images has many colours, a
heatmap's cells have equal heights; none of them passes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

import numpy as np

from grader.evidence import MAX_PNG_BYTES

MAX_IMAGE_PIXELS = 40_000_000
"""A figure is at most this many pixels (a 20 x 20 inch figure at 300 dpi is 36 M)."""
_MAX_B64_CHARS = MAX_PNG_BYTES * 4 // 3 + 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def decode_image(payload: Any, mime: str = "image/png") -> tuple[bytes | None, str | None]:
    """(PNG bytes, None) for a valid PNG or JPEG payload, else (None, why it was refused)."""
    if isinstance(payload, list):
        if not all(isinstance(p, str) for p in payload):
            return None, "the image data is not text"
        payload = "".join(payload)
    if not isinstance(payload, str):
        return None, "the image data is not text"
    if len(payload) > _MAX_B64_CHARS:
        return None, f"the image is larger than {MAX_PNG_BYTES // 2**20} MiB"
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        return None, "the image data is not valid base64"
    want = _PNG_MAGIC if mime == "image/png" else _JPEG_MAGIC
    if not data.startswith(want):
        return None, f"the data stored as {mime} is not a {'PNG' if mime == 'image/png' else 'JPEG'} image"
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            if im.width <= 0 or im.height <= 0 or im.width * im.height > MAX_IMAGE_PIXELS:
                return None, f"the image is {im.width} x {im.height} pixels, over the limit"
            if mime == "image/png":
                im.verify()  # chunk CRCs and structure; the pixels are decoded only when needed
                return data, None
            im.load()
            out = io.BytesIO()
            im.convert("RGB").save(out, format="PNG")
            return out.getvalue(), None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad image, never a crash
        if type(exc).__name__ == "DecompressionBombError":  # Pillow's own pixel cap, met before ours
            return None, "the image has more pixels than a figure can have, over the limit"
        return None, f"the image cannot be decoded ({type(exc).__name__})"


MAX_SVG_CHARS = 4 * 1024 * 1024
"""An SVG figure is at most this many characters (a histogram of 60 000 bars is ~3 M)."""
_SVG_ROOT = re.compile(r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<svg[\s>]", re.DOTALL)


def check_svg(payload: Any) -> str | None:
    """None for text that is an SVG document within the size cap, else why it was refused.

    The grader does not draw SVG (no renderer is installed); a valid one is kept as a figure
    whose kind is read from its cell's code, an invalid one is reported as unreadable.
    """
    if isinstance(payload, list):
        if not all(isinstance(p, str) for p in payload):
            return "the image data is not text"
        payload = "".join(payload)
    if not isinstance(payload, str):
        return "the image data is not text"
    if len(payload) > MAX_SVG_CHARS:
        return f"the SVG image is larger than {MAX_SVG_CHARS // 2**20} MiB"
    if not _SVG_ROOT.match(payload[:4096]) or "</svg>" not in payload[-4096:]:
        return "the data stored as image/svg+xml is not a complete SVG image"
    return None


MAX_CLASSIFY_PIXELS = 16_000_000
"""Largest image whose pixels are classified (a 300-dpi matplotlib figure is ~6 M): a larger
one is left unclassified (None), so what it should show goes to a TA, and one student's
40-M-pixel images cannot cost the host a second and a gigabyte each."""


def _pixels(png: bytes, max_side: int = 1000) -> np.ndarray | None:
    """RGB pixels (H, W, 3) of a PNG, shrunk by whole steps (nearest: colours stay exact)."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            if im.width * im.height > MAX_CLASSIFY_PIXELS:
                return None
            # shrink first, in the image's own mode: the RGBA copies below are then small
            step = max(1, -(-max(im.size) // max_side))
            small = im.resize((im.width // step, im.height // step), Image.NEAREST) if step > 1 else im
            rgba = small.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    except Exception:  # noqa: BLE001
        return None


def _run_heights(mask: np.ndarray) -> np.ndarray:
    """For each pixel, how many mask pixels stand in an unbroken column ending there."""
    run = np.zeros(mask.shape, dtype=np.int32)
    run[0] = mask[0]
    for y in range(1, mask.shape[0]):
        run[y] = np.where(mask[y], run[y - 1] + 1, 0)
    return run


def _bars_on_a_baseline(mask: np.ndarray) -> bool:
    """True when one row is the baseline of side-by-side columns of varying height."""
    run = _run_heights(mask)
    below = np.zeros_like(mask)
    below[:-1] = mask[1:]
    bottoms = mask & ~below
    counts = bottoms.sum(axis=1)
    for y in np.argsort(counts)[::-1][:5]:
        xs = np.flatnonzero(bottoms[y])
        if len(xs) < 12:
            break
        # the longest stretch of columns with at most 5-pixel gaps (edge lines between bars)
        breaks = np.flatnonzero(np.diff(xs) > 5)
        segments = np.split(xs, breaks + 1)
        seg = max(segments, key=len)
        if len(seg) < 12:
            continue
        heights = run[y, seg]
        if np.median(heights) < 3 or (heights >= 2).mean() < 0.8:
            continue
        distinct = np.unique(heights // 2)
        if len(distinct) < 4 or heights.std() < 0.1 * heights.max():
            continue
        # a heatmap's cells stack in multiples of one cell height; bars do not
        unit = int(heights.min())
        if unit >= 8 and np.all(np.abs(heights / unit - np.round(heights / unit)) * unit <= 1):
            continue
        return True
    return False


def looks_like_histogram(png: bytes) -> bool | None:
    """True when the image shows histogram bars, False when it does not, None when unreadable."""
    px = _pixels(png)
    if px is None or px.size == 0:
        return None
    codes = (px[..., 0].astype(np.int32) << 16) | (px[..., 1].astype(np.int32) << 8) | px[..., 2]
    light = (px.min(axis=2) > 235)  # the background and near-white
    values, counts = np.unique(codes[~light], return_counts=True)
    if not len(values):
        return False
    order = np.argsort(counts)[::-1]
    for i in order[:4]:
        if counts[i] < 0.002 * codes.size:
            break
        if _bars_on_a_baseline(codes == values[i]):
            return True
    return False
