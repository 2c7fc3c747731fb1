"""The cats-vs-dogs stand-in's pictures: an animal head on a cluttered scene.

Built so that a small CNN overfits it the way it overfits Kaggle's photos at the size a course
notebook trains on (2000 images): the class is a shape configuration that takes many examples
to learn, while every picture also carries nuisance that is easy to memorize.

- Class cue: a round head with two ears. A cat's ears are triangles pointing up from the top of
  the head; a dog's hang down its sides (long ellipses). Head position, size, tilt, gaze side,
  ear size and every colour are drawn at random for both classes alike, so nothing but the ears'
  shape and place tells the class.
- Nuisance: a background of random blocks, discs, strokes and loose triangles and ellipses the
  size of the ears (decoys), in random colours; a few shapes in front of the head. Each picture
  is unique and easy to memorize, and tells nothing about the class.
- A few pictures (`AMBIGUOUS`) carry the other class's ears, as real photos carry animals
  nobody can place: no classifier is perfect.

Random horizontal flips, crops, small rotations and rescaling keep the class (both ear shapes
are mirror-symmetric), so augmentation multiplies the examples of the cue and not of the
nuisance: it measurably narrows the train-validation gap (bench/catsdogs.md).

Colours are drawn round a magenta-grey tint (`TINT`), so the channel means stay > 0.05 away
from ImageNet's, real CIFAR-10's, 0.5 and the other stand-ins' (tests/test_datasets.py).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

TINT = (0.62, 0.24, 0.50)
"""Every colour is half this, half uniform noise (RGB in 0..1)."""
AMBIGUOUS = 0.04
"""The fraction of pictures drawn with the other class's ears."""
_JPEG_QUALITY = 90  # fixed: the same seed gives byte-identical files


def _colour(rng: np.random.Generator, lo: float = 0.0, hi: float = 1.0) -> tuple[int, int, int]:
    c = 0.5 * np.asarray(TINT) + 0.5 * rng.uniform(lo, hi, 3)
    return tuple(int(v) for v in np.clip(c * 255 + 0.5, 0, 255))


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 20) -> np.ndarray:
    """(n, 2) points of an ellipse rotated by `angle` (radians)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    p = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    c, s = np.cos(angle), np.sin(angle)
    return p @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _poly(draw: ImageDraw.ImageDraw, pts: np.ndarray, fill: tuple[int, int, int]) -> None:
    draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, h: int, w: int, n: int, scale: float) -> None:
    """`n` random shapes anywhere in the picture, `scale` their typical size in pixels."""
    for _ in range(n):
        kind = rng.integers(6)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        size = scale * rng.uniform(0.3, 1.6)
        col = _colour(rng)
        if kind == 0:  # block
            a = rng.uniform(0, np.pi)
            rect = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (size, size * rng.uniform(0.3, 1.5))
            _poly(draw, rect @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + (cx, cy), col)
        elif kind == 1:  # disc
            _poly(draw, _ellipse(cx, cy, size, size * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)), col)
        elif kind == 2:  # stroke
            a = rng.uniform(0, 2 * np.pi)
            draw.line([(cx, cy), (cx + 2 * size * np.cos(a), cy + 2 * size * np.sin(a))], fill=col,
                      width=max(1, int(size * rng.uniform(0.1, 0.3))))
        elif kind == 3:  # loose triangle, an ear's size: a decoy for a cat's ear
            pts = rng.normal(0, 0.5 * size, (3, 2)) + (cx, cy)
            _poly(draw, pts, col)
        elif kind == 4:  # loose long ellipse: a decoy for a dog's ear
            _poly(draw, _ellipse(cx, cy, 0.3 * size, 0.7 * size, rng.uniform(0, np.pi), 14), col)
        else:  # large soft panel (wall, floor, sofa)
            x0, y0 = rng.uniform(-0.2, 0.8) * w, rng.uniform(-0.2, 0.8) * h
            draw.rectangle([x0, y0, x0 + rng.uniform(0.2, 0.7) * w, y0 + rng.uniform(0.2, 0.7) * h], fill=col)


def render(rng: np.random.Generator, label: int, h: int, w: int) -> np.ndarray:
    """uint8 (h, w, 3): a cat's (label 0) or a dog's (label 1) head on a cluttered scene."""
    side = min(h, w)
    img = Image.new("RGB", (int(w), int(h)), _colour(rng))
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, h, w, int(rng.integers(8, 20)), 0.08 * side)

    ears = label if rng.random() >= AMBIGUOUS else 1 - label
    r = rng.uniform(0.2, 0.3) * side  # head radius, pixels
    cx = rng.uniform(0.25, 0.75) * w
    cy = rng.uniform(0.3, 0.72) * h
    tilt = rng.normal(0, 0.25)  # radians
    rot = np.array([[np.cos(tilt), np.sin(tilt)], [-np.sin(tilt), np.cos(tilt)]])

    def place(pts: np.ndarray) -> np.ndarray:  # head frame (units of r, y down) -> pixels
        return (pts * r) @ rot + (cx, cy)

    head = _colour(rng)
    ear_size = rng.uniform(0.8, 1.2)
    if ears == 0:  # pointed ears up from the top of the head, drawn first: they merge with it
        for sx in (-1, 1):
            spread = rng.uniform(0.45, 0.75)
            tri = np.array([[sx * (spread - 0.4), -0.75], [sx * (spread + 0.4), -0.45],
                            [sx * (spread + 0.1 * rng.normal()), -0.85 - 0.9 * ear_size]])
            _poly(draw, place(tri), head)
    _poly(draw, place(_ellipse(0, 0, rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.05))), head)
    if ears == 1:  # floppy ears hanging down the sides, drawn over the head in their own colour
        ear = _colour(rng)
        for sx in (-1, 1):
            _poly(draw, place(_ellipse(sx * 0.92, 0.2 + 0.1 * ear_size, 0.32, 0.7 * ear_size,
                                       sx * rng.uniform(0.1, 0.5), 14)), ear)
    gaze = rng.uniform(-0.15, 0.15)  # eyes and nose shift to one side: mirrors differ
    dark = _colour(rng, 0.0, 0.25)
    for sx in (-1, 1):
        _poly(draw, place(_ellipse(sx * 0.38 + gaze, -0.1, 0.12, 0.14, 0, 10)), dark)
    _poly(draw, place(np.array([[-0.14, 0.28], [0.14, 0.28], [0, 0.45]]) + (gaze, 0)), dark)

    _clutter(draw, rng, h, w, int(rng.integers(0, 4)), 0.06 * side)  # in front: may hide an ear
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, 8.0, (int(h), int(w), 3))
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)


def jpeg(rng: np.random.Generator, label: int, h: int, w: int) -> bytes:
    """`render` as a quality-90 JPEG."""
    buf = io.BytesIO()
    Image.fromarray(render(rng, label, h, w)).save(buf, "JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()
