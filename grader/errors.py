"""The one exception type the CLI turns into a one-line message and exit code 2.

A `GraderError` means the grader itself is misconfigured or was called wrongly (a bad
rubric, a missing dataset folder, an unknown lab). A bad *submission* is never an
exception: it becomes a result that carries the reason.
"""

from __future__ import annotations


class GraderError(Exception):
    """A configuration or usage error, shown to the user as one line."""


class DatasetError(GraderError):
    """A dataset folder is missing or not in the expected on-disk format."""
