"""Shared fixtures: the tiny stand-in datasets are generated once per test session.

Tests marked `slow` (a whole lab's samples graded in real kernels: many minutes) run only with
`DLLAB_SLOW=1`; `make test` and CI leave them out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DLLAB_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: grades a lab's samples in real kernels; run with DLLAB_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding every stand-in dataset at size `tiny` (seed 0)."""
    from grader.datasets import synth

    root = tmp_path_factory.mktemp("datasets")
    synth(root, size="tiny", seed=0)
    return root
