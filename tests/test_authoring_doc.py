"""docs/authoring-a-lab.md stays true to the code: every check kind and each of its params is
documented, every example item validates against its kind's params model, every registered
dataset and well-known-statistics name is listed. No kernel."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from grader.checks.base import KNOWN_NAMES
from grader.checks.registry import KINDS
from grader.datasets import DATASETS

DOC = Path(__file__).resolve().parent.parent / "docs" / "authoring-a-lab.md"


def _kind_sections() -> dict[str, str]:
    """`#### `kind`` heading → the text up to the next heading."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^#### `([a-z_]+)`\n", text, flags=re.M)
    return {name: re.split(r"^#{1,4} ", body, flags=re.M)[0] for name, body in zip(parts[1::2], parts[2::2])}


def test_every_check_kind_is_documented_with_each_of_its_params() -> None:
    sections = _kind_sections()
    assert sorted(sections) == sorted(KINDS), "docs/authoring-a-lab.md: a kind is missing or not a kind"
    for name, kind in KINDS.items():
        for param in kind.params.model_fields:
            assert f"- `{param}`" in sections[name], f"{name}'s param {param} is not documented"
        documented = set(re.findall(r"^- `([a-z_]+)`", sections[name], flags=re.M))
        assert documented <= set(kind.params.model_fields), f"{name}: documented params it does not take"


def test_every_example_item_in_the_kinds_section_validates() -> None:
    for name, body in _kind_sections().items():
        blocks = re.findall(r"```yaml\n(.*?)```", body, flags=re.S)
        assert blocks, f"{name} has no example"
        item = yaml.safe_load(blocks[0])
        assert item["check"] == name
        KINDS[name].params.model_validate(item.get("params") or {})
        if "hint" in item:
            KINDS[item["hint"]["check"]].params.model_validate(item["hint"].get("params") or {})


def test_the_registered_datasets_and_known_statistics_are_named() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in DATASETS:
        assert f"| `{name}` |" in text, f"dataset {name} missing from the datasets table"
    for name in KNOWN_NAMES:
        assert f"`{name}`" in text, f"well-known statistics {name!r} missing from normalization's reject"
