"""Check kinds: one small function each, from evidence + parameters + reference to a result.

Every check takes a `CheckContext` and its kind's typed params (grader.checks.params) and
returns an `Outcome` (status, fraction earned, message, evidence pointers). A check never
raises for a bad submission; `run_check` turns an unexpected exception into an `error`
outcome that names the check, so one broken check cannot crash a batch. The kinds, their
params and how the pipeline treats them are in grader.checks.registry (`KINDS`).
"""

from __future__ import annotations

from grader.checks.registry import KINDS, CheckKind, load_custom, run_check

__all__ = ["KINDS", "CheckKind", "load_custom", "run_check"]
