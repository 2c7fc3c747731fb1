"""Shared fixtures: the tiny stand-in datasets are generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding every stand-in dataset at size `tiny` (seed 0)."""
    from grader.datasets import synth

    root = tmp_path_factory.mktemp("datasets")
    synth(root, size="tiny", seed=0)
    return root
