"""Numbers, units, split words and metric keywords: the pieces every format shares."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from grader.datasets import registry

Unit = Literal["pct", "count", "bare"]
Split = Literal["train", "val", "test"]

# Long lines (a tqdm bar without newlines, a dumped tensor) are cut so that no regex
# here can run for long on hostile output.
MAX_LINE = 4000

# A dataset's name followed by a number ("CIFAR-10", "food11"): the number is not a metric.
_DATASET_NUMBER = re.compile(r"\b(?:" + "|".join(s.keyword for s in registry.SPECS if s.keyword) + r")[-_ ]?\d+",
                             re.IGNORECASE)
_NUM = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
# The number may follow a CJK word directly ("準確率55.2%"), but not a Latin letter or digit.
VALUE = (
    rf"(?<![A-Za-z0-9_\-.+])(?P<num>{_NUM}|(?<![A-Za-z])(?:nan|inf)(?![A-Za-z]))"
    r"(?:(?:\s*/\s*|\s+(?:correct\s+)?(?:out\s+of|of)\s+)(?P<den>\d+)(?![.\d]))?"
    r"(?P<pct>\s*[%％])?(?!\.?\d)"
)
VALUE_RX = re.compile(VALUE, re.IGNORECASE)
# "71% (712/1000)": the exact count is better than the rounded percent.
_COUNT_AFTER = re.compile(r"\s*[(\[]\s*(\d+)\s*/\s*(\d+)\s*[)\]]")
NOT_A_METRIC_AFTER = re.compile(
    r"\s*(?:images?|samples?|examples?|pictures?|imgs?|photos?|files?|ms|s/it|it/s|sec|seconds?|"
    r"params|parameters|steps?|batch(?:es)?|epochs?|mb|gb|kb)\b", re.IGNORECASE)

# Chinese: 訓練/训练 training, 驗證/验证 validation, 測試/测试 and 評估/评估 test.
SPLIT_WORD = (r"(train(?:ing)?|trn|val(?:id(?:ation)?)?|dev|test(?:ing)?|eval(?:uation)?"
              r"|訓練|训练|驗證|验证|測試|测试|評估|评估|評測|评测)")
SPLIT_RX = re.compile(rf"(?<![A-Za-z]){SPLIT_WORD}(?![A-Za-z])", re.IGNORECASE)
_SPLIT_OF = {"train": "train", "training": "train", "trn": "train", "val": "val", "valid": "val",
             "validation": "val", "dev": "val", "test": "test", "testing": "test", "eval": "test",
             "evaluation": "test", "訓練": "train", "训练": "train", "驗證": "val", "验证": "val",
             "測試": "test", "测试": "test", "評估": "test", "评估": "test", "評測": "test", "评测": "test"}
# "Finished Training", "after training": the words name a phase, not the split measured.
_PHASE_RX = re.compile(r"(?:finish(?:ed)?|after|end of|done|complete[d]?|start(?:ing)?|begin)\s+"
                       r"(?:the\s+)?(?:train|training)\b|\b(?:train|training)\s+(?:is\s+)?"
                       r"(?:finish(?:ed)?|done|complete[d]?|over|ended)", re.IGNORECASE)


def split_of(word: str) -> Split | None:
    """'Validation' -> 'val', 'eval' -> 'test' (Food-11's 'evaluation' folder is its test set)."""
    return _SPLIT_OF.get(word.lower())  # type: ignore[return-value]


def first_split(text: str) -> Split | None:
    """The first split word in `text` that does not merely name the training phase."""
    masked = _PHASE_RX.sub(lambda m: "#" * len(m.group(0)), text)
    m = SPLIT_RX.search(masked)
    return split_of(m.group(1)) if m else None


def last_split(text: str) -> Split | None:
    """The last split word in `text`, ignoring 'finished training'-style phrases."""
    masked = _PHASE_RX.sub(lambda m: "#" * len(m.group(0)), text)
    found = None
    for m in SPLIT_RX.finditer(masked):
        found = m.group(1)
    return split_of(found) if found else None


@dataclass(frozen=True)
class Reading:
    """One printed number before it is interpreted as an accuracy or a loss."""

    value: float
    """The number as printed (a percent not yet divided), or a/b for a count."""
    unit: Unit
    """'pct' when a % sign (or a % column) says so, 'count' for a/b, else 'bare'."""

    def accuracy(self, bare_as_percent: bool | None = None) -> float | None:
        """As a fraction 0..1, or None when it cannot be an accuracy.

        A bare number above 1 is read as a percent (`print('Accuracy: %d' % acc)`);
        `bare_as_percent` overrides that when a whole block is known to be in percent.
        """
        v = self.value
        if self.unit == "pct" or (self.unit == "bare" and (bare_as_percent or
                                                           (bare_as_percent is None and v > 1))):
            v = v / 100.0
        return v if math.isfinite(v) and 0.0 <= v <= 1.0 else None

    def loss(self) -> float | None:
        """As a loss (finite, not negative), or None."""
        if self.unit != "bare" or not math.isfinite(self.value) or self.value < 0:
            return None
        return self.value


def read_value(m: re.Match[str], text: str) -> Reading | None:
    """The Reading of a VALUE match, preferring a following '(a/b)' count."""
    try:
        num = float(m.group("num"))
    except (TypeError, ValueError):
        return None
    if m.group("den") is not None:
        den = float(m.group("den"))
        if not math.isfinite(num) or den <= 0 or num < 0 or num > den or num != int(num):
            return None
        return Reading(num / den, "count")
    after = _COUNT_AFTER.match(text, m.end())
    if after and m.group("pct") and int(after.group(2)) > 0:
        a, b = int(after.group(1)), int(after.group(2))
        if a <= b:
            return Reading(a / b, "count")
    return Reading(num, "pct" if m.group("pct") else "bare")


def read_cell(cell: str) -> Reading | None:
    """A table cell that is exactly one value ('0.54', '54.0 %', '250/368', 'tensor(0.54)')."""
    s = cell.strip()
    s = re.sub(r"^(?:tensor|array|np\.float\d*|float\d*)\((.*?)(?:,.*)?\)$", r"\1", s)
    m = VALUE_RX.fullmatch(s.strip())
    return read_value(m, s) if m else None


def is_number_cell(cell: str) -> bool:
    """True when a table cell holds a number (used to tell headers from rows)."""
    return read_cell(cell) is not None


_IMAGES = r"\s+(?:[A-Za-z]+\s+){0,2}(?:images|samples|examples|pictures|imgs|photos)\b"
_IMAGE_COUNT = re.compile(rf"\b\d+(?=(?:\s*(?:/|of)\s*\d+)?{_IMAGES})", re.IGNORECASE)
"""A count of images in a metric line ('on the 10000 test images', 'on 100 of 500 test images',
'100/500 images'), which is not a metric value."""
_PART_OF = re.compile(rf"\b(\d+)\s*(?:/|of)\s*\d+(?={_IMAGES})", re.IGNORECASE)
"""'100 of 500 test images', '100/500 images': the first number is the images measured on."""
_CORRECT_OF = re.compile(r"\b\d+\s*/\s*(\d+)\s+correct\b|\b(?:correct|acc(?:uracy)?)\w*\s*[:=]?\s*\d+\s*/\s*(\d+)\b"
                         r"|%\s*[(\[]\s*\d+\s*/\s*(\d+)\s*[)\]]", re.IGNORECASE)
"""'(74/100 correct)', 'correct: 74/100', 'Accuracy: 9800/10000 (98%)' (PyTorch's MNIST example),
'74 % (7400/10000)': the second number is the images measured on."""


def image_count(line: str) -> int | None:
    """The number of images a metric line says it was measured on ('Accuracy of the network on
    the 100 test images: 74 %' -> 100, 'on 100 of 500 test images' -> 100, '(74/100 correct)'
    -> 100), or None when it names none or several different counts."""
    part = {int(m.group(1)) for m in _PART_OF.finditer(line)}
    if len(part) == 1:
        return part.pop()
    counts = {int(m.group(0)) for m in _IMAGE_COUNT.finditer(line)}
    if not counts:
        counts = {int(next(g for g in m.groups() if g)) for m in _CORRECT_OF.finditer(line)}
    return counts.pop() if len(counts) == 1 else None


def mask_line(line: str) -> str:
    """Same-length copy of `line` with digits that are not metric values hidden.

    'the 10000 test images', 'top-1', 'acc@1' carry digits between a keyword and its
    value; hiding them lets one simple 'keyword, filler, number' rule read them all.
    """
    def hide(m: re.Match[str]) -> str:
        return re.sub(r"\d", "#", m.group(0))

    line = _IMAGE_COUNT.sub(hide, line)
    line = re.sub(r"(?:top[-_ ]?|@)1(?!\d)", hide, line, flags=re.IGNORECASE)
    return _DATASET_NUMBER.sub(hide, line)


MetricKind = Literal["acc", "loss", "lr"]

_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9@#]*(?:[_\-][A-Za-z0-9@#]+)*")
_KIND_PART = re.compile(
    r"(?P<split>train(?:ing)?|val(?:id)?|test|eval)?"
    r"(?:(?P<acc>acc|accu|ac{1,2}u?a?r{1,2}a?c[yi])(?:@?[#1])?|(?P<loss>loss(?:es)?|nll)|(?P<lr>lr))")
# Parts that turn an accuracy into something else: top-5, per-class, a history list...
_SPOILERS = {"precision", "recall", "f1", "error", "err", "per", "class", "classes", "history", "hist", "list", "curve", "curves", "log", "logs", "top5",
             "balanced", "weighted", "macro", "micro", "total_correct"}


# Parts of an identifier that make an unlabelled metric a training one: 'tr_acc',
# 'batch_loss', 'running_loss', 'minibatch_acc', 'iter_loss'.
_TRAIN_PARTS = {"tr", "trn", "batch", "minibatch", "mb", "running", "iter", "step"}
# Chinese metric words: 準確率/准确率/正確率/正确率/準確度/精確度/精度 (accuracy), 損失/损失 (loss),
# 學習率/学习率 (learning rate), with an optional split word before them ("測試集準確率").
_CJK_METRIC = re.compile(r"(?P<split>訓練|训练|驗證|验证|測試|测试|評估|评估|評測|评测)?(?:集|資料|数据|資料集|数据集)?(?:的|上的)?"
                         r"(?:(?P<acc>準確率|准确率|正確率|正确率|準確度|准确度|精確度|精确度|精度|正確度|正确度)"
                         r"|(?P<loss>損失|损失|誤差|误差)|(?P<lr>學習率|学习率))")
_PART_SPLIT = re.compile(r"[_\-]|(?<=[a-z])(?=[A-Z])")
_TOP_OR_NUMBER = re.compile(r"top\d+|\d+")
_TOP_K_BEFORE = re.compile(r"top[-_ ]?\d+[\s_\-(]*$", re.IGNORECASE)


@dataclass(frozen=True)
class MetricToken:
    """A metric keyword found in a line ('val_acc', 'Test Accuracy', 'loss', 'lr')."""

    start: int
    end: int
    kind: MetricKind
    split: Split | None
    """The split named inside the identifier itself ('val_acc', 'testLoss')."""


def metric_tokens(masked: str) -> list[MetricToken]:
    """Metric keywords in a masked line, left to right."""
    out: list[MetricToken] = []
    for m in _TOKEN.finditer(masked):
        tok = m.group(0)
        end = m.end()
        if tok.lower() == "learning":
            nxt = re.match(r"[\s_]rate\b", masked[end:], re.IGNORECASE)
            if nxt:
                out.append(MetricToken(m.start(), end + nxt.end(), "lr", None))
            continue
        parts = [p.lower() for p in _PART_SPLIT.split(tok) if p]
        kind: MetricKind | None = None
        split: Split | None = None
        spoiled = qualified = False
        for i, p in enumerate(parts):
            km = _KIND_PART.fullmatch(p)
            if km:
                if kind is not None:
                    spoiled = True
                kind = "acc" if km.group("acc") else "loss" if km.group("loss") else "lr"
                if km.group("split"):
                    split = split_of(km.group("split"))
            elif p in _SPOILERS or _TOP_OR_NUMBER.fullmatch(p):
                spoiled = True
            elif split_of(p):
                split = split_of(p)
            elif p in _TRAIN_PARTS:
                qualified = True
        if split is None and qualified:
            split = "train"
        if kind == "lr" and len(parts) > 2:
            kind = None
        if _TOP_K_BEFORE.search(masked, max(0, m.start() - 10), m.start()):
            spoiled = True  # "top-5 accuracy"; top-1 was masked to "top-#" and stays
        if kind is not None and not spoiled:
            out.append(MetricToken(m.start(), end, kind, split))
    if not masked.isascii():
        for m in _CJK_METRIC.finditer(masked):
            kind = "acc" if m.group("acc") else "loss" if m.group("loss") else "lr"
            out.append(MetricToken(m.start(), m.end(), kind,
                                   split_of(m.group("split")) if m.group("split") else None))
        out.sort(key=lambda t: t.start)
    return out
