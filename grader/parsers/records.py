"""The records the parsers hand to the checks stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MentionKind = Literal["test_accuracy", "test_loss", "train_accuracy", "train_loss", "val_accuracy",
                      "val_loss", "class_accuracy"]


@dataclass(frozen=True)
class MetricMention:
    """One metric a student printed, already converted to the grader's units."""

    kind: MentionKind
    """A total on the test split, or on an unnamed one ('test_accuracy', 'test_loss'), on the training
    split ('train_accuracy', 'train_loss': progress lines, never a test metric) or the validation split
    ('val_accuracy', 'val_loss'); 'class_accuracy' is one class (see split_hint for its split)."""
    value: float
    """Accuracies always as a fraction 0..1 (percent divided by 100, a/b counts divided); losses as printed."""
    class_name: str | None
    """Canonical class name for 'class_accuracy' (an index string like '3' when no class list was known)."""
    raw: str
    """The line the value was read from, trimmed to 200 characters, for the TA to see."""
    cell: int | None
    """Index of the notebook cell whose output held the line, if known."""
    source: str
    """Where the text came from: 'stdout', 'stderr', 'text/plain', 'text/html' or 'saved'."""
    split_hint: str | None
    """'test', 'val' or 'train' when the text says which split was measured, else None."""
    inferred: bool = False
    """True when split_hint is 'train' only because the line counts training progress (an epoch or
    batch counter, an "Epoch 3" line above it) rather than naming the split; the notebook's code may
    still show the line is printed by an evaluation (`parsers.printsites`)."""


@dataclass(frozen=True)
class CurvePoint:
    """One point of a training curve read from a progress line."""

    series: str
    """'train_loss', 'train_acc', 'val_loss', 'val_acc', 'test_loss', 'test_acc' or 'lr'."""
    x: float
    """Epoch (fractional within an epoch when the line gives the iteration), else a step or line count."""
    value: float
    """Accuracy as a fraction 0..1, loss and learning rate as printed."""
    cell: int | None
    """Index of the notebook cell whose output held the line, if known."""


@dataclass(frozen=True)
class ParsedMetrics:
    """What a notebook's outputs say about the trained model, with the evidence."""

    test_accuracy: float | None
    """Final total test accuracy (fraction), from the last test-split (or unlabelled) mention."""
    test_loss: float | None
    """Final total test loss, chosen the same way."""
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    """Canonical class -> accuracy fraction, from the last complete (else largest) block."""
    dataset_guess: str | None = None
    """'cifar10', 'food11', 'mnist', 'catsdogs' as given, recognised from the dataset's own class
    list or guessed from the class names seen; another name as given (read with no known class list)."""
    mentions: tuple[MetricMention, ...] = ()
    """Every mention found, in notebook order."""
    curves: tuple[CurvePoint, ...] = ()
    """Every training-curve point found, in notebook order."""
    truncated: tuple[tuple[int, int], ...] = ()
    """(cell index, characters left out) for each cell whose output was longer than the parser
    reads (`parsers.notebook._MAX_OUTPUT` after floods are thinned, or the parse budget of
    `parsers.budget`): its middle was not read."""
    unread: tuple[tuple[int, int], ...] = ()
    """(cell index, lines left unread) for each cell thinned to the parse budget (`parsers.budget`)."""
