"""Parsers for the metrics students print: total test accuracy and loss, per-class
accuracy and training curves, from stdout/stderr, text/plain and text/html outputs.

Accuracies always come out as fractions 0..1; class names in their dataset's canonical
spelling (CIFAR-10 'airplane', not the tutorial's 'plane').
"""

from __future__ import annotations

# The class lists are the registry's (grader.datasets); these names stay importable from here.
from grader.datasets import CIFAR10_CLASSES, FOOD11_CLASSES, MNIST_CLASSES  # noqa: F401

from .classes import CLASS_SETS, canonical_class
from .curves import parse_curves
from .html import parse_html
from .notebook import parse_notebook
from .records import CurvePoint, MetricMention, ParsedMetrics
from .text import parse_text

__all__ = [
    "CLASS_SETS", "CurvePoint",
    "MetricMention", "ParsedMetrics", "canonical_class", "parse_curves", "parse_html",
    "parse_notebook", "parse_text",
]
