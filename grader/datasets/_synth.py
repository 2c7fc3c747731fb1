"""What the stand-ins share: rendering, file writing with a manifest, staging, progress.

Each CIFAR-10 and Food-11 image is a class-tinted blob of class-oriented stripes, so a small CNN
learns well above chance but not perfectly (cats-vs-dogs draws its own: grader.datasets._pets), and each stand-in's channel statistics differ clearly from
ImageNet's, the real datasets' and 0.5: a notebook that normalizes with copied constants is told
apart from one that computed them. The dataset modules (grader.datasets.<name>) lay the images
out in their real on-disk formats.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from grader.errors import DatasetError

SIZES = ("tiny", "small", "full")
# JPEG sides vary like the real photos'; "full" stays under the real ~512 px so that
# 16k + 37k images take minutes, not an hour.
_JPEG_SIDES = {"tiny": (48, 96), "small": (96, 160), "full": (128, 384)}
_JPEG_QUALITY = 90  # fixed: the same seed gives byte-identical files
HINT = " (run `dllab data synth --out DIR`)"


@dataclass(frozen=True)
class _Style:
    """How one colour stand-in looks; `background` mostly sets its channel means."""

    background: tuple[float, float, float]
    hue0: float  # hue of class 0's tint; the classes step round `hue_span` of the wheel
    hue_span: float
    saturation: float
    value: float


# Cool CIFAR, warm Food-11 (and magenta cats-vs-dogs, drawn by grader.datasets._pets): each mean
# is > 0.05 away from ImageNet's, real CIFAR-10's, 0.5 and the others in some channel
# (tests/test_datasets.py checks).

def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _render(rng: np.random.Generator, labels: np.ndarray, n_classes: int, h: int, w: int,
            style: _Style) -> np.ndarray:
    """uint8 (n, h, w, 3): a class-tinted blob of class-oriented stripes on a jittered background."""
    n = len(labels)
    # Two cues per class: the stripes' angle and frequency (half the classes fine, half
    # coarse) and the tint's hue. Some images (10..40% by class) borrow a neighbour's stripes
    # and later classes get a looser hue: classes overlap, so no classifier is perfect and
    # per-class accuracy differs.
    borrow = rng.random(n) < 0.1 + 0.15 * (labels % 3)
    pattern = np.where(borrow, (labels + rng.choice([-1, 1], n)) % n_classes, labels)
    n_angles = -(-n_classes // 2)
    angle = (pattern % n_angles) * np.pi / n_angles + rng.normal(0, 0.15, n)
    freq = np.where(pattern < n_angles, 2.5, 5.0) * rng.uniform(0.8, 1.2, n)  # cycles per side
    hue_jitter = rng.normal(0, 1, n) * (0.2 + 0.4 * labels / max(n_classes - 1, 1))
    hue = (style.hue0 + style.hue_span * (labels + hue_jitter) / n_classes) % 1.0
    tint = _hsv_to_rgb(hue, style.saturation * rng.uniform(0.8, 1.0, n), style.value * rng.uniform(0.8, 1.05, n))
    side = max(h, w)  # coordinates in units of the longer side: the look is size-independent
    yy, xx = np.mgrid[0:h, 0:w] / side
    cy, cx = (rng.uniform(0.38, 0.62, (2, n)) * np.array([[h], [w]]) / side)[:, :, None, None]
    ry, rx = rng.uniform(0.3, 0.45, (2, n))[:, :, None, None]
    mask = np.clip((1.15 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2) * 4, 0, 1)[..., None]
    along = xx * np.cos(angle)[:, None, None] + yy * np.sin(angle)[:, None, None]
    stripes = np.sin(2 * np.pi * freq[:, None, None] * along + rng.uniform(0, 2 * np.pi, (n, 1, 1)))
    obj = tint[:, None, None, :] * (0.72 + 0.28 * stripes[..., None])
    # The tint also washes over the background: a global colour cue that the tutorial's
    # LeNet picks up within a few hundred SGD steps, before it has learned the stripes.
    bg = 0.5 * np.asarray(style.background) + 0.5 * tint[:, None, None, :] + rng.normal(0, 0.07, (n, 1, 1, 3))
    bg = bg + rng.normal(0, 0.12, (n, 1, 1, 1)) * (yy - 0.5)[None, :, :, None]  # uneven lighting
    img = bg * (1 - mask) + obj * mask + rng.normal(0, 0.06, (n, h, w, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 17)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


# Pen strokes of each digit in a unit box, x right and y down.
_DIGITS = {
    0: [_ellipse(0.5, 0.5, 0.27, 0.4)],
    1: [[(0.38, 0.25), (0.55, 0.08), (0.55, 0.92)]],
    2: [[(0.25, 0.3), (0.35, 0.13), (0.55, 0.08), (0.72, 0.2), (0.72, 0.38), (0.25, 0.9), (0.8, 0.9)]],
    3: [[(0.25, 0.12), (0.72, 0.12), (0.45, 0.45), (0.7, 0.58), (0.72, 0.8), (0.5, 0.92), (0.25, 0.85)]],
    4: [[(0.65, 0.92), (0.65, 0.08), (0.2, 0.65), (0.82, 0.65)]],
    5: [[(0.74, 0.1), (0.32, 0.1), (0.27, 0.45), (0.55, 0.4), (0.73, 0.56), (0.7, 0.8), (0.5, 0.92),
         (0.25, 0.85)]],
    6: [[(0.66, 0.08), (0.42, 0.28), (0.28, 0.6), (0.32, 0.85), (0.5, 0.93), (0.7, 0.8), (0.7, 0.6),
         (0.5, 0.5), (0.3, 0.62)]],
    7: [[(0.22, 0.1), (0.8, 0.1), (0.42, 0.92)]],
    8: [_ellipse(0.5, 0.29, 0.2, 0.19), _ellipse(0.5, 0.7, 0.25, 0.22)],
    9: [_ellipse(0.5, 0.32, 0.22, 0.22), [(0.72, 0.32), (0.62, 0.92)]],
}


def _render_digit(rng: np.random.Generator, digit: int) -> np.ndarray:
    """uint8 (28, 28): jittered pen strokes, white on black, drawn 4x larger then box-filtered."""
    s = 4
    img = Image.new("L", (28 * s, 28 * s), 0)
    draw = ImageDraw.Draw(img)
    rot, shear, zoom = rng.normal(0, 0.18), rng.normal(0, 0.15), rng.uniform(0.8, 1.05)
    m = zoom * np.array([[np.cos(rot), -np.sin(rot) + shear], [np.sin(rot), np.cos(rot)]])
    shift = rng.normal(0, 0.05, 2)
    # Thicker than MNIST's pen, so the mean (~0.175) is not MNIST's well-known 0.1307.
    width = int(rng.uniform(3.2, 4.6) * s)
    for stroke in _DIGITS[digit]:
        pts = np.asarray(stroke) - 0.5 + rng.normal(0, 0.03, (len(stroke), 2))
        xy = [tuple(p) for p in ((pts @ m.T + 0.5 + shift) * 20 * s + 4 * s).tolist()]  # MNIST's 20x20 centre
        draw.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(img.resize((28, 28), Image.BOX))


def _py2_pickle(obj: Any) -> bytes:
    """Pickle `obj` as Python 2's cPickle (protocol 2) wrote the real CIFAR-10 batches.

    Strings are Python 2 `str` opcodes, so `pickle.load(f, encoding="latin1")` (torchvision)
    gives "data" keys and `encoding="bytes"` (the CIFAR web page's recipe) gives b"data",
    exactly as with the real files; a Python 3 pickle can only do one of the two. Handles
    what a batch holds: None, bool, int, str, bytes, tuple, list, dict, 2-D uint8 arrays.
    """
    out = bytearray(b"\x80\x02")

    def put(o: Any) -> None:
        if o is None or isinstance(o, bool):
            out.extend({None: b"N", True: b"\x88", False: b"\x89"}[o])
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        elif isinstance(o, (str, bytes)):
            b = o.encode("latin1") if isinstance(o, str) else o
            out.extend((b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b)
        elif isinstance(o, (tuple, list, dict)):
            out.extend({tuple: b"(", list: b"](", dict: b"}("}[type(o)])
            for item in (o if not isinstance(o, dict) else [x for kv in o.items() for x in kv]):
                put(item)
            out.extend({tuple: b"t", list: b"e", dict: b"u"}[type(o)])
        elif isinstance(o, np.ndarray) and o.dtype == np.uint8 and o.ndim == 2:
            # _reconstruct(ndarray, (0,), "b") then its state (1, shape, dtype("u1"), False, raw
            # bytes); numpy.core.multiarray is the name the real files carry, numpy 2 loads it.
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n")
            put((0,))
            put(b"b")
            out.extend(b"tR(K\x01")
            put(o.shape)
            out.extend(b"cnumpy\ndtype\n")
            put(("u1", False, True))
            out.extend(b"R")
            put((3, "|", None, None, None, -1, -1, 0))
            out.extend(b"b\x89")
            put(np.ascontiguousarray(o).tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(f"cannot write {type(o).__name__} in a CIFAR batch")

    put(obj)
    return bytes(out + b".")


def _idx(arr: np.ndarray) -> bytes:
    """An MNIST IDX file: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, then the bytes."""
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


class _Files:
    """Writes files under a folder and records each one's size and md5 for the manifest."""

    def __init__(self, root: Path, advance: Callable[[int], None]) -> None:
        self.root, self.advance = root, advance
        self.entries: dict[str, dict[str, Any]] = {}

    def put(self, rel: str, data: bytes, images: int = 1) -> None:
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(data)
        self.entries[rel] = {"bytes": len(data), "md5": hashlib.md5(data).hexdigest()}
        self.advance(images)

    def jpeg(self, rel: str, rng: np.random.Generator, label: int, n_classes: int, size: str, style: _Style) -> None:
        h, w = rng.integers(_JPEG_SIDES[size][0], _JPEG_SIDES[size][1] + 1, 2)
        buf = io.BytesIO()
        Image.fromarray(_render(rng, np.array([label]), n_classes, int(h), int(w), style)[0]).save(
            buf, "JPEG", quality=_JPEG_QUALITY)
        self.put(rel, buf.getvalue())


def _balanced(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_classes)


@contextmanager
def _bar(enabled: bool, total: int, what: str) -> Iterator[Callable[[int], None]]:
    """Yields advance(k): a rich progress bar on stderr when enabled, else a no-op."""
    if not enabled:
        yield lambda k=1: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task(what, total=total)
        yield lambda k=1: progress.advance(task, k)


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise DatasetError(f"{target} already exists and is not empty: pass overwrite=True to replace it")


@contextmanager
def _staged(target: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary sibling folder that replaces `target` only once the body succeeds,
    so an interrupted run never leaves a half-written dataset that looks complete."""
    _refuse_existing(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        # mkdtemp makes the folder 0700; datasets are read by the sandbox's own uid.
        tmp.chmod(0o755)
        if target.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    # Sorted keys, no timestamp: the same seed gives a byte-identical manifest.
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    (folder / "manifest.json").write_text(text, encoding="utf-8")

def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest.json, or None when it has none (a real dataset)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"unreadable manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise DatasetError(f"unreadable manifest {path}: not a JSON object")
    return manifest


def manifest_digest(folder: Path) -> str:
    """sha256 naming the dataset's content: of its canonical manifest, else of its file names and sizes."""
    manifest = read_manifest(folder)
    if manifest is None:
        folder = Path(folder)
        manifest = sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()



def jpeg_blocks(paths: Sequence[Path], max_side: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """(1, uint8 (3, pixels)) per JPEG file; `max_side` shrinks larger ones first (approximate)."""
    for p in paths:
        with Image.open(p) as img:
            if max_side is not None and max(img.size) > max_side:
                img.draft("RGB", (max_side, max_side))  # libjpeg decodes at 1/2..1/8 scale
                img.thumbnail((max_side, max_side))
            yield 1, np.asarray(img.convert("RGB")).reshape(-1, 3).T


def read_capped(path: Path, what: str, limit: int) -> bytes:
    """The bytes of `path`, at most `limit` of them; DatasetError naming `what` otherwise."""
    try:
        if path.stat().st_size > limit:
            raise DatasetError(f"the {what} {path} is too large to read")
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"the {what} cannot be read ({exc.strerror or exc})") from None
