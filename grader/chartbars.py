"""Histogram bars read back from the pixels of a chart the host captured.

A probe record says which numbers a histogram drew; the student's code can write any record.
What the kernel client captured (the executed notebook's `image/png` outputs) is drawn by the
student's code too, but the host reads it itself: `read_panels` finds the histogram panels of
a PNG and the height of their bars in each pixel column, and `profile_agrees` says whether a
record's bars are the ones a panel shows. A record that agrees with a panel of the image its
cell showed, and with the trained model's parameter (grader.corroborate), ties the picture to
the parameter.

How a panel is found (matplotlib's default look, seaborn's histplot on it included): an axes
is framed by spines, so its bottom is a long straight line of one colour with a line of the
same colour rising from its left (or right) end. Inside that frame, the bars are the most
common colour other than the axes' face and the frame; a column's bar height is counted from
the bottom line to the topmost pixel of the bar colour in that column, so filled bars, bars
with white edges between them (seaborn) and `histtype='step'` outlines read alike, and gaps
of a pixel or two (bar edges, vertical grid lines) are filled from their neighbours. The
panel's horizontal extent is the bars' own (first to last non-empty column), which is what a
record's bars, trimmed of empty bars at both ends, span. A chart drawn another way (no frame,
e.g. seaborn's darkgrid theme; bars the frame's colour) yields no panel: the caller sends
what it cannot read to a TA.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

MAX_READ_PIXELS = 16_000_000
"""Largest PNG whose bars are read (a 300-dpi matplotlib figure is ~6 M pixels)."""
MAX_SIDE = 2400
"""Longest side (pixels) the image is decoded at: a larger one is shrunk by whole steps, keeping
thin spines (their width grows with the dpi that made the image large)."""
MIN_PANEL = 24
"""Fewest pixels a panel's frame is wide and high at the decoded size."""
MAX_CANDIDATES = 4000
"""Straight runs examined as possible panel bottoms: a picture with more is not read (None)."""
GAP_FILL = 3
"""Widest run of empty columns (pixels, decoded size) between bars that is a bar edge or a grid
line, filled from its neighbours, rather than an empty bar."""
MEAN_ERROR = 0.05
"""Largest mean distance (0..1 of the tallest bar) between a panel's column heights and a
record's bars resampled onto the same columns, each column compared with the record's bars
within WINDOW columns of it (a bar edge one pixel off is no difference)."""
BAD_COLUMNS = 0.06
"""Largest fraction of columns farther than 0.2 of the tallest bar from the record's bars."""
WINDOW = 2


@dataclass(frozen=True)
class Panel:
    """One histogram panel: `heights[i]` the bar height (pixels) in its i-th column, from the
    first to the last column with a bar; `box` (left, top, right, bottom) of its frame and
    `colour` (0xRRGGBB) of its bars, at the decoded size; `scale` the decoded size's shrink."""

    heights: np.ndarray
    box: tuple[int, int, int, int]
    colour: int
    scale: int


def png_pixels(png: bytes) -> int | None:
    """Width x height a PNG's header declares (nothing decoded), or None when it is no PNG."""
    if len(png) < 24 or not png.startswith(b"\x89PNG\r\n\x1a\n") or png[12:16] != b"IHDR":
        return None
    return int.from_bytes(png[16:20], "big") * int.from_bytes(png[20:24], "big")


def _pixels(png: bytes) -> tuple[np.ndarray, int] | None:
    """(codes (H, W) int32 of 0xRRGGBB over a white background, shrink step) or None."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            if im.format != "PNG" or im.width * im.height > MAX_READ_PIXELS or min(im.size) < MIN_PANEL:
                return None
            step = max(1, -(-max(im.size) // MAX_SIDE))
            small = im.resize((im.width // step, im.height // step), Image.NEAREST) if step > 1 else im
            rgba = small.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            px = np.asarray(Image.alpha_composite(white, rgba).convert("RGB")).astype(np.int32)
    except Exception:  # noqa: BLE001 - any decoder failure is an unreadable image, never a crash
        return None
    return (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2], step


def _runs(codes: np.ndarray, min_len: int, background: int) -> list[tuple[int, int, int]]:
    """(row, first column, last column) of each horizontal run of one colour, not the
    background, at least `min_len` long, that is the top row of its line."""
    h, w = codes.shape
    flat = codes.reshape(-1)
    change = np.ones(flat.size, dtype=bool)
    change[1:] = flat[1:] != flat[:-1]
    change[::w] = True
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, flat.size))
    keep = (lengths >= min_len) & (flat[starts] != background)
    out = []
    for s, n in zip(starts[keep], lengths[keep]):
        y, x = divmod(int(s), w)
        if y and np.mean(codes[y - 1, x:x + n] == flat[s]) > 0.5:
            continue  # not the top row of this line (a thick spine, a filled area)
        out.append((y, x, x + int(n) - 1))
    return out


def _rise(codes: np.ndarray, y: int, x: int, colour: int) -> int:
    """How many pixels of `colour` stand in an unbroken column at x, from row y upward."""
    col = codes[: y + 1, x][::-1] == colour
    return int(np.argmin(col)) if not col.all() else len(col)


def _fill_gaps(heights: np.ndarray) -> np.ndarray:
    """Empty runs of at most GAP_FILL columns between bars (a bar edge, or a grid line) are
    filled from their neighbours: the edge line between two bars is centred on their common
    edge, so its left half takes the left bar's height, its right half the right one's, and a
    middle column the lower of the two. (All the lower height made a tall bar between short ones
    3 columns narrower per side when bars have a dark `edgecolor`, T4 1420004.)"""
    out = heights.copy()
    filled = np.flatnonzero(out > 0)
    for a, b in zip(filled[:-1], filled[1:]):
        if 1 < b - a <= GAP_FILL + 1:
            half = (b - a - 1) // 2
            out[a + 1:b] = min(out[a], out[b])
            out[a + 1:a + 1 + half] = out[a]
            out[b - half:b] = out[b]
    return out


def _rgb(codes: np.ndarray) -> np.ndarray:
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.float64)


def _bar_pixels(inner: np.ndarray, frame: int) -> tuple[int, np.ndarray | None]:
    """(bar colour, mask of the bar pixels) inside a panel's frame, or (0, None). The face is
    the commonest colour along the inside of the frame (bars keep a margin from it, or leave
    the left and right ends free); the bar colour is the commonest colour far from the face,
    not the frame's, a chromatic one before a grey (grid lines are grey). A pixel is a bar's
    when it lies on the way from the face to the bar colour, at least 35 % along it
    (antialiased edges and step outlines)."""
    rim = np.concatenate([inner[:2].ravel(), inner[:, :2].ravel(), inner[:, -2:].ravel()])
    rim_values, rim_counts = np.unique(rim, return_counts=True)
    face = int(rim_values[rim_counts.argmax()])
    values, where, counts = np.unique(inner, return_inverse=True, return_counts=True)
    rgb = _rgb(values)
    far = (np.abs(rgb - _rgb(np.array(face))).max(axis=1) > 60) & (values != frame) & (counts >= MIN_PANEL // 2)
    if not far.any():
        return 0, None
    chromatic = far & (np.ptp(rgb, axis=1) > 30)
    pool = chromatic if chromatic.any() else far
    colour = int(values[np.flatnonzero(pool)[counts[pool].argmax()]])
    f, b = _rgb(np.array(face)), _rgb(np.array(colour))
    px = rgb - f  # per distinct colour, then mapped back onto the pixels
    span = b - f
    t = (px @ span) / float(span @ span)
    off = np.linalg.norm(px - t[:, None] * span, axis=-1)
    return colour, ((t >= 0.35) & (off <= 40))[where.reshape(inner.shape)]


def _panel(codes: np.ndarray, y: int, x0: int, x1: int, frame: int, step: int) -> Panel | None:
    """The panel whose frame's bottom line is row y, columns x0..x1, or None."""
    rise = max([(_rise(codes, y, x, frame), x) for x in (x0, x0 + 1, x0 + 2, x1, x1 - 1, x1 - 2)])
    height = rise[0]
    if height < MIN_PANEL:
        return None
    top = y - height + 1
    # inside the frame: skip its lines (a thick spine, the left and right spines)
    left, right = x0, x1
    while left < right and _rise(codes, y, left, frame) >= height // 2:
        left += 1
    while right > left and _rise(codes, y, right, frame) >= height // 2:
        right -= 1
    inner = codes[top + 1:y, left:right + 1]
    inner = inner[np.any(inner != frame, axis=1)]  # drop the top spine's rows
    if inner.shape[0] < MIN_PANEL // 2 or inner.shape[1] < MIN_PANEL:
        return None
    colour, mask = _bar_pixels(inner, frame)
    if mask is None:
        return None
    rows = mask.shape[0]
    has = mask.any(axis=0)
    heights = np.where(has, rows - np.argmax(mask, axis=0), 0).astype(np.float64)
    cols = np.flatnonzero(heights > 0)
    if len(cols) < 3 or cols[-1] - cols[0] < MIN_PANEL // 3 or np.count_nonzero(mask[-2:].any(axis=0)) < 2:
        return None  # bars (and a step outline's ends) stand on the frame's bottom; a line chart need not
    heights = _fill_gaps(heights[cols[0]:cols[-1] + 1])
    return Panel(heights=heights, box=(x0, top, x1, y), colour=colour, scale=step)


def read_panels(png: bytes) -> list[Panel] | None:
    """The histogram panels of a PNG in reading order (top to bottom, left to right), [] when
    it shows none this reader recognizes, None when the image cannot be read (not a PNG, over
    MAX_READ_PIXELS, undecodable, or too busy to search)."""
    got = _pixels(png)
    if got is None:
        return None
    codes, step = got
    h, w = codes.shape
    border = np.concatenate([codes[0], codes[-1], codes[:, 0], codes[:, -1]])
    values, counts = np.unique(border, return_counts=True)
    background = int(values[counts.argmax()])
    runs = _runs(codes, max(MIN_PANEL, w // 40), background)
    if len(runs) > MAX_CANDIDATES:
        return None
    panels: list[Panel] = []
    for y, x0, x1 in sorted(runs, reverse=True):  # bottom up: a frame before the grid lines inside it
        if any(p.box[0] <= x0 <= p.box[2] and p.box[1] <= y <= p.box[3] for p in panels):
            continue  # a line inside a panel already found (a grid line, a bar's edge)
        p = _panel(codes, y, x0, x1, int(codes[y, x0]), step)
        if p is not None:
            panels.append(p)
    return sorted(panels, key=lambda p: (p.box[1] // max(MIN_PANEL, 1), p.box[0]))


# ---------------------------------------------------------------- comparing with a record


def record_profile(counts: list[float] | np.ndarray, edges: list[float] | np.ndarray, columns: int,
                   least: float = 0.0) -> np.ndarray | None:
    """A record's bars (counts in `edges`), trimmed at both ends of bars of at most `least`,
    resampled onto `columns` evenly spaced columns; None when no bar is left or its edges are
    not increasing."""
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if c.ndim != 1 or e.shape != (len(c) + 1,) or not len(c) or not np.isfinite(c).all() \
            or not np.isfinite(e).all() or np.any(np.diff(e) <= 0) or columns < 1:
        return None
    filled = np.flatnonzero(c > max(least, 0.0))
    if not len(filled):
        return None
    c, e = c[filled[0]:filled[-1] + 1], e[filled[0]:filled[-1] + 2]
    # each column shows the tallest bar within it (its topmost pixel), as the reader reads it
    bounds = e[0] + np.arange(columns + 1) / columns * (e[-1] - e[0])
    first = np.clip(np.searchsorted(e, bounds[:-1], side="right") - 1, 0, len(c) - 1)
    last = np.clip(np.searchsorted(e, bounds[1:], side="left") - 1, first, len(c) - 1)
    out = c[first]
    for k in range(1, int((last - first).max()) + 1):
        out = np.maximum(out, c[np.minimum(first + k, last)])
    return out


def _error(pixels: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(mean error, fraction of bad columns) of `pixels` against `want`, both 0..1, each column
    against the range of `want` within WINDOW columns."""
    pad = np.pad(want, WINDOW, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(pad, 2 * WINDOW + 1)
    lo, hi = windows.min(axis=1), windows.max(axis=1)
    err = np.maximum(lo - pixels, 0) + np.maximum(pixels - hi, 0)
    return float(err.mean()), float(np.mean(err > 0.2))


def profile_agrees(panel: Panel, counts: list[float] | np.ndarray, edges: list[float] | np.ndarray) -> bool:
    """Whether `panel` shows the record's bars: their shapes, each scaled to its tallest bar,
    agree column by column on a linear count axis (counts or density) or on a log one (an
    affine map of log(count), fitted, as `log=True` or `plt.yscale('log')` draws them)."""
    pix = panel.heights
    if pix.max() <= 0 or not len(counts):
        return False
    p = pix / pix.max()
    try:
        tallest = float(np.max(np.asarray(counts, dtype=np.float64)))
    except (TypeError, ValueError, OverflowError):
        return False
    # Bars at the ends lower than a pixel or two may not show (an edge line covers them): the
    # record is also tried without them.
    for least in (0.0, 1.5, 3.0):
        want = record_profile(counts, edges, len(p), least * tallest / pix.max())
        if want is None or not want.max() > 0:
            break
        mean, bad = _error(p, want / want.max())
        if mean <= MEAN_ERROR and bad <= BAD_COLUMNS:
            return True
    want = record_profile(counts, edges, len(p))  # a log axis shows even a bar of one
    if want is None or not want.max() > 0:
        return False
    shown = (want > 0) & (p > 0)
    if shown.sum() < 3 or np.ptp(np.log(want[shown])) <= 0:
        return False
    slope, offset = np.polyfit(np.log(want[shown]), p[shown], 1)
    if slope <= 0:
        return False
    logged = np.where(want > 0, np.clip(slope * np.log(np.where(want > 0, want, 1)) + offset, 0, None), 0)
    mean, bad = _error(p, logged / max(logged.max(), 1e-12))
    return mean <= MEAN_ERROR and bad <= BAD_COLUMNS


def assign(fits: list[list[int]]) -> list[int | None]:
    """A distinct panel for as many records as possible: `fits[r]` lists the panels record r
    agrees with; the answer gives each record its panel or None (maximum bipartite matching,
    so no panel serves two records)."""
    owner: dict[int, int] = {}

    def place(r: int, seen: set[int]) -> bool:
        for p in fits[r]:
            if p in seen:
                continue
            seen.add(p)
            if p not in owner or place(owner[p], seen):
                owner[p] = r
                return True
        return False

    for r in range(len(fits)):
        place(r, set())
    got: list[int | None] = [None] * len(fits)
    for p, r in owner.items():
        got[r] = p
    return got
