"""YAML read safely, with libyaml's parser where PyYAML was built with it (about ten times faster
than the pure-Python one: a batch reads every lab's lab.yaml and rubric, and each submission
its rubric), else the pure-Python SafeLoader; both give the same data, nodes and line marks."""

from __future__ import annotations

from typing import Any

import yaml

LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""yaml.CSafeLoader where available, else yaml.SafeLoader."""


def load(text: str) -> Any:
    """yaml.safe_load(text), faster; raises yaml.YAMLError as it does."""
    return yaml.load(text, Loader=LOADER)  # noqa: S506 - a safe loader


def compose(text: str) -> yaml.Node | None:
    """yaml.compose(text, Loader=yaml.SafeLoader), faster: the node tree with line marks."""
    return yaml.compose(text, Loader=LOADER)
