"""Where the shipped lab packages and the templates live, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str, *, package: Path = _PKG) -> Path:
    """The folder `labs` or `templates`: `grader/_data/<name>` inside a wheel (pyproject.toml
    force-includes them there), else `<name>` at the checkout's root beside `grader/`.
    `package` is the `grader` folder to look from (tests pass a fake layout)."""
    packaged = package / "_data" / name
    if packaged.is_dir():
        return packaged
    return package.parent / name
