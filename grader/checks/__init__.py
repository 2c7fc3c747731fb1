"""Check kinds: one small function each, from evidence + parameters + reference to a result.

Every check takes a `CheckContext` and the item's `params` and returns a `Outcome`
(status, fraction earned, message, evidence pointers). A check never raises for a bad
submission; `run_check` turns an unexpected exception into an `error` outcome that names
the check, so one broken check cannot crash a batch.
"""

from __future__ import annotations

import importlib.util
import traceback
from pathlib import Path
from typing import Callable, Mapping

from grader.checks.base import CheckContext, Outcome
from grader.checks import metrics, figures, lrstudy, setup, files

CheckFn = Callable[[CheckContext, Mapping], Outcome]

REGISTRY: dict[str, CheckFn] = {
    "per_class_accuracy": metrics.per_class_accuracy,
    "test_metrics": metrics.test_metrics,
    "accuracy_vs_reference": metrics.accuracy_vs_reference,
    "metrics_verified": metrics.metrics_verified,
    "weight_histograms": figures.weight_histograms,
    "lr_study": lrstudy.lr_study,
    "model_architecture": setup.model_architecture,
    "normalization": setup.normalization,
    "ran_without_errors": setup.ran_without_errors,
    "report_sections": files.report_sections,
    "files_present": files.files_present,
}


def load_custom(rubric_dir: Path, spec: str) -> CheckFn:
    """`file.py:function` next to the rubric: a course's own check, loaded only when grading."""
    file_name, _, func = spec.partition(":")
    path = (rubric_dir / file_name).resolve()
    module_spec = importlib.util.spec_from_file_location(f"dllab_custom_{path.stem}", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, func)


def run_check(kind: str, ctx: CheckContext, params: Mapping, *, rubric_dir: Path | None = None) -> Outcome:
    """Runs one check; an exception inside a check becomes an `error` outcome, never a crash."""
    try:
        if kind == "manual":
            return setup.manual(ctx, params)
        if kind == "custom":
            fn = load_custom(rubric_dir or Path("."), params["function"])
            return fn(ctx, dict(params.get("args") or {}))
        return REGISTRY[kind](ctx, params)
    except Exception as e:  # noqa: BLE001 - the boundary that keeps a batch alive
        last = traceback.extract_tb(e.__traceback__)[-1]
        return Outcome("error", 0.0, f"the {kind} check failed ({type(e).__name__}: {e} at "
                                     f"{Path(last.filename).name}:{last.lineno}); a TA should look at this item")
