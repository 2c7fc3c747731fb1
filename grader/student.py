"""Student-facing commands: `dllab check` and `dllab pack` (being built)."""

from __future__ import annotations

import argparse


def add_student_commands(sub: "argparse._SubParsersAction") -> None:
    """Registers `check` and `pack` on the `dllab` parser."""
