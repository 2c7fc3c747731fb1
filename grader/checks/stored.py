"""Saved mode: does the stored notebook show the test numbers came before any training?

Nothing is run in saved mode, so the probe cannot say whether the evaluated model was
trained. The notebook's stored state can still tell (grader.storedrun records it as
evidence `stored_cells`): every cell whose code trains stored an error, was never run while
the test cell was, or ran after it. With a printed accuracy near chance that is an untrained
model's look, but a TA decides: a checkpoint loaded elsewhere, or a run interrupted after
training, looks the same from the stored outputs alone.
"""

from __future__ import annotations

from typing import Mapping

from grader.checks.base import fmt_pct, where

_EVALUATION_KINDS = ("test_accuracy", "test_loss", "class_accuracy")


def _state(cell: Mapping, tested: list[int]) -> str | None:
    """How a training cell was last run, if that means no training before the test cell."""
    if cell.get("error"):
        return "error"
    if cell.get("cell") is None and not cell.get("outputs") and tested:
        return "never"
    if isinstance(cell.get("cell"), int) and tested and cell["cell"] > max(tested):
        return "after"
    return None


def stored_untrained(ev: Mapping, *, printed: float | None, near: float, chance_text: str) -> tuple[str, str] | None:
    """(message for the student, pointer) when the stored notebook shows that the test numbers
    (printed accuracy `printed`, a fraction, at most `near`) were printed with no training run
    before them; None when the notebook does not show that or the accuracy is above `near`."""
    cells = ev.get("stored_cells")
    if not isinstance(cells, list) or not isinstance(printed, (int, float)) or printed > near:
        return None
    by_index = {c.get("index"): c for c in cells if isinstance(c, Mapping)}
    shown = {m.get("cell") for m in (ev.get("metrics") or {}).get("mentions") or []
             if isinstance(m, Mapping) and m.get("kind") in _EVALUATION_KINDS}
    evaluation = [by_index[i] for i in sorted(i for i in shown if isinstance(i, int)) if i in by_index]
    training = [c for c in by_index.values() if c.get("trains")]
    if not evaluation or not training or any(c.get("trains") for c in evaluation):
        return None  # no training code found, or the cell that printed the numbers also trains
    tested = [c["cell"] for c in evaluation if isinstance(c.get("cell"), int)]
    states = [(c, _state(c, tested)) for c in training]
    if any(s is None for _, s in states):
        return None
    cell, state = states[-1]
    test_at = f"the test cell In[{max(tested)}]" if tested else "the test cell"
    what = {"error": f"the training cell In[{cell.get('cell')}] stored an error ({cell.get('error')}), so training "
                     f"stopped before it finished",
            "never": f"the training cell (cell {cell['index'] + 1} of the notebook) was never run: it has no output "
                     f"and no In[ ] number, while {test_at} was",
            "after": f"the training cell In[{cell.get('cell')}] ran after {test_at}"}[state]
    more = (f" (and none of the other {len(states) - 1} training cell(s) ran before the test either)"
            if len(states) > 1 else "")
    return (f"{what}{more}; the test accuracy printed, {fmt_pct(printed)}, is what an untrained model gets "
            f"({chance_text}). The notebook was not run by the grader, so a TA checks whether the model was "
            f"trained before it was evaluated.", where(ev, cell.get("cell")))
