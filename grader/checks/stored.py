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


def _label(cell: Mapping) -> str:
    return f"In[{cell['cell']}]" if isinstance(cell.get("cell"), int) else f"cell {cell.get('index', 0) + 1}"


def _remade_after_training(cells: list[Mapping], evaluation: list[Mapping],
                           training: list[Mapping]) -> tuple[Mapping, Mapping, str, Mapping] | None:
    """(the cell that made the model anew, the test cell, the model's name, the last training
    cell before it) when a test cell evaluates a model that a later cell than every training
    cell bound to a fresh instance (`net = Net()`), with no weights loaded in between.

    Cells are taken in the order they last ran (their In[n]) when every one involved has one,
    else in notebook order."""
    by_count = all(isinstance(c.get("cell"), int) for c in [*evaluation, *training])

    def order(c: Mapping) -> int:
        return c["cell"] if by_count else c.get("index", 0)

    pool = [c for c in cells if isinstance(c.get("cell"), int)] if by_count else cells
    for test in evaluation:
        before = sorted((c for c in pool if order(c) <= order(test)), key=order)
        trained_at = [i for i, c in enumerate(before) if c.get("trains")]
        if not trained_at:
            continue
        after = before[trained_at[-1] + 1:]
        used = set(test.get("names") or [])
        for i, cell in enumerate(after):
            name = next((n for n in cell.get("makes") or [] if n in used), None)
            if name is not None and not any(c.get("loads") or c.get("trains") for c in after[i:]):
                return cell, test, name, before[trained_at[-1]]
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
        remade = _remade_after_training(list(by_index.values()), evaluation, training)
        if remade is None:
            return None
        made, test, name, trained = remade
        return (f"the model `{name}` that {_label(test)} evaluates was made anew by {_label(made)}, after the "
                f"training cell {_label(trained)} ran, and no weights were loaded into it since; the test "
                f"accuracy printed, {fmt_pct(printed)}, is what an untrained model gets ({chance_text}). The "
                f"notebook was not run by the grader, so a TA checks which model was evaluated.",
                where(ev, test.get("cell")))
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
