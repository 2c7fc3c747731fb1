"""The grader's instruments: models trained on real data that measure what students built.

An instrument is used only inside the verification sandbox (grader.verify.generative), never in
a student's kernel. Each one is a TorchScript file with its provenance beside it, trained by
`dllab reference run LAB --instrument` from the training code in this package:

    grader/instruments/<name>.py     train(*, data, device, seed, epochs) -> dict
    grader/instruments/<name>.pt     TorchScript: forward(x) -> logits (N, C); features(x) -> (N, D)
    grader/instruments/<name>.json   provenance: data source and digests, seed, epochs, test
                                     accuracy, torch version, date, seconds, the real test split's
                                     feature statistics and scores (the measures' "real" column)

Inputs are (N, 1, 28, 28) float images with pixels in 0..1 (the instrument normalizes itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.errors import GraderError

HERE = Path(__file__).resolve().parent

INSTRUMENTS: dict[str, str] = {
    "mnist-classifier": "a CNN trained on the real MNIST training split (>= 99 % test accuracy)",
}
"""Registered instruments: name -> what it is."""


class InstrumentError(GraderError):
    """An instrument is unknown, or its weights or provenance are missing or unreadable."""


@dataclass(frozen=True)
class Instrument:
    name: str
    weights: Path
    """The TorchScript file."""
    provenance: dict[str, Any]
    """The JSON beside it (see the module docstring)."""


def load(name: str, folder: Path | None = None) -> Instrument:
    """The instrument `name` from `folder` (default: this package). Raises InstrumentError when the
    name is not registered or its `.pt`/`.json` are missing or unreadable."""
    if name not in INSTRUMENTS:
        raise InstrumentError(f"unknown instrument {name!r}; known: {', '.join(sorted(INSTRUMENTS))}")
    base = folder or HERE
    weights, meta = base / f"{name}.pt", base / f"{name}.json"
    if not weights.is_file() or not meta.is_file():
        raise InstrumentError(f"the instrument {name!r} is not trained ({weights} missing): "
                              f"run `dllab reference run LAB --instrument --data mnist=DIR` on real MNIST for a lab that uses it")
    try:
        provenance = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InstrumentError(f"the instrument's provenance {meta} cannot be read: {exc}") from exc
    if not isinstance(provenance, dict):
        raise InstrumentError(f"the instrument's provenance {meta} is not a JSON object")
    return Instrument(name=name, weights=weights, provenance=provenance)
