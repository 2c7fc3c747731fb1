"""Issue 13 C (fix round, finding 1): a student cannot regenerate the grader's hidden split.

`dllab data synth` is public code with a default seed, so a hidden split derived from the seed
could be rebuilt byte for byte and memorized (the tester's b5b: 100 % on both splits, not
flagged). It is now drawn from a secret taken at synth time and never stored, while the visible
files stay byte-identical for a given seed. Also here: the flagging criterion's false-alarm
rate for an honest model, computed exactly at the sample sizes the grader meets.
"""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import numpy as np

from grader.datasets import synth
from grader.hidden_split import HIDDEN_DIR, synth_hidden
from grader.verify import gap_flagged, hidden_block
from grader.verify.data import Split, read_split


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_synths_with_one_seed_share_the_visible_files_not_the_hidden_ones(tmp_path: Path) -> None:
    a, b = tmp_path / "grader", tmp_path / "student"
    for out in (a, b):
        synth(out, size="tiny", seed=0, names=["cifar10", "food11"])
    for folder in ("cifar-10-batches-py", "Food-11"):
        assert _files(a / folder) == _files(b / folder)  # visible: byte-identical, as before
    held_a, held_b = _files(a / HIDDEN_DIR), _files(b / HIDDEN_DIR)
    assert held_a.keys() == held_b.keys()  # the same layout and counts ...
    images = [k for k in held_a if k.endswith(("test_batch", ".jpg"))]
    assert len(images) == 1 + 66 and all(held_a[k] != held_b[k] for k in images)  # ... other images
    # the secret is not written down anywhere a student or a TA's copy could take it from
    for name in ("cifar-10-batches-py", "Food-11"):
        manifest = json.loads((a / HIDDEN_DIR / name / "manifest.json").read_text())
        assert "seed" not in manifest and "secret" in manifest["seeded_from"]
    assert stat.S_IMODE((a / HIDDEN_DIR).stat().st_mode) == 0o700


def _nearest(bank: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> list[int]:
    """b5b's model: the label of the nearest stored image (squared distance on raw pixels)."""
    x, q = bank.reshape(len(bank), -1).astype(np.float32), queries.reshape(len(queries), -1).astype(np.float32)
    d = (q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :]
    return labels[d.argmin(1)].tolist()


def _memorizer_block(grader_root: Path, regenerated: Path) -> dict:
    """The hidden keys of `verified` for b5b's memorizer: it stores the visible test split (the
    sandbox mounts it) and the hidden split a student regenerated with `data synth`."""
    visible = read_split("cifar10", grader_root / "cifar-10-batches-py")
    held = read_split("cifar10", grader_root / HIDDEN_DIR / "cifar-10-batches-py")
    copy = read_split("cifar10", regenerated / HIDDEN_DIR / "cifar-10-batches-py")
    bank = np.concatenate([visible.pixels, copy.pixels])
    labels = np.array(visible.labels + copy.labels)
    return hidden_block(visible, _nearest(bank, labels, visible.pixels), held, _nearest(bank, labels, held.pixels),
                        list(range(10)), reason=None)


def test_a_memorizer_of_a_regenerated_hidden_split_is_caught(tmp_path: Path) -> None:
    grader_root, student_root = tmp_path / "grader", tmp_path / "student"
    synth(grader_root, size="tiny", seed=0, names=["cifar10"])
    synth(student_root, size="tiny", seed=0, names=["cifar10"])  # what a student can run
    block = _memorizer_block(grader_root, student_root)
    assert block["hidden_gap_flagged"] is True and block["hidden_accuracy"] < 0.9, block
    # the control: a hidden split drawn from a known value (as the seed was) is memorized whole
    for root in (grader_root, student_root):
        synth_hidden(root, size="tiny", names=["cifar10"], overwrite=True, secret=0)
    known = _memorizer_block(grader_root, student_root)
    assert known["hidden_accuracy"] == 1.0 and known["hidden_gap_flagged"] is False, known


def _flag_rate(n1: int, n2: int, p1: float, p2: float) -> float:
    """Exact probability that `gap_flagged` fires for binomial accuracies p1 (visible, n1
    images) and p2 (hidden, n2 images)."""
    b1 = [math.comb(n1, k) * p1 ** k * (1 - p1) ** (n1 - k) for k in range(n1 + 1)]
    b2 = [math.comb(n2, k) * p2 ** k * (1 - p2) ** (n2 - k) for k in range(n2 + 1)]
    return sum(b1[c1] * b2[c2] for c1 in range(n1 + 1) for c2 in range(n2 + 1)
               if b1[c1] * b2[c2] > 1e-15 and gap_flagged((c1, n1), (c2, n2)))


def test_an_honest_model_is_almost_never_flagged_and_a_memorizer_always_is() -> None:
    """The numbers stated at grader.verify.host.HIDDEN_Z: 66 images is Food-11 tiny's split."""
    worst = max(_flag_rate(66, 66, p, p) for p in (0.1, 0.3, 0.5, 0.7, 0.9))
    assert worst < 0.002, worst  # an honest model: at most ~1 false flag in 700 notebooks
    assert _flag_rate(66, 66, 1.0, 0.38) > 0.999  # memorized test split over an honest net
    partial = _flag_rate(66, 66, 0.63, 0.38)  # the tester's partial memorizer: 66 images cannot tell
    assert 0.3 < partial < 0.6, partial
    assert _flag_rate(220, 220, 0.63, 0.38) > 0.98  # Food-11 small: caught


def test_making_the_datasets_readable_for_the_sandbox_keeps_the_hidden_split_private(tmp_path: Path) -> None:
    from grader.datasets.standins import sandbox_readable

    synth(tmp_path, size="tiny", seed=0, names=["mnist"])
    sandbox_readable(tmp_path)
    assert stat.S_IMODE((tmp_path / "MNIST").stat().st_mode) & 0o005 == 0o005
    assert stat.S_IMODE((tmp_path / HIDDEN_DIR).stat().st_mode) == 0o700
