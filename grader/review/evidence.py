"""Placeholder until the evidence gatherer lands (replaced at merge)."""
from pathlib import Path
from typing import Any


def entry_evidence(out: Path, grade: dict, *, item_id: str | None = None, flag: str | None = None) -> dict[str, Any]:
    return {}
