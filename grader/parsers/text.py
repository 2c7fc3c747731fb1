"""Metric mentions in printed text: total accuracy and loss, and per-class accuracy.

A line is read in three passes that share one rule -- a keyword or class name, a little
filler, then a number: class names first (their numbers are claimed), then metric
keywords ('Test Accuracy', 'val_loss'), then a bare list of per-class numbers. Lines under
a recognised table header are read as table rows instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .classes import ClassSpan, find_classes
from .records import MetricMention
from .tables import Header, make_header, row_hits
from .values import (MAX_LINE, NOT_A_METRIC_AFTER, SPLIT_RX, SPLIT_WORD, VALUE, MetricToken, Reading,
                     Split, first_split, last_split, mask_line, metric_tokens, read_value, split_of)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
_FILL_VALUE = re.compile(r"(?P<fill>[^\d\n]{0,60}?)" + VALUE, re.IGNORECASE)
_CLASS_FILL_VALUE = re.compile(r"(?P<fill>[^\d\n]{0,40}?)" + VALUE, re.IGNORECASE)
# Words between a class name and a number that mean the number is not its accuracy.
_CLASS_FILL_BAD = re.compile(r"loss|precision|f1|support|prob|score|confidence|images?|samples?|"
                             r"count|total|wrong|lr|[\[;]", re.IGNORECASE)
# Lines about one prediction ('Predicted: cat 0.92'), not about accuracy.
_PREDICTION_LINE = re.compile(r"predict|probab|confidence|ground ?truth|softmax|logit", re.IGNORECASE)
# What marks a line as a training progress line (its unlabelled numbers are training ones):
# a counter ("Epoch 3", "epoch3", "EPOCH-3", "global_step=100", "7 epoch,", "minibatch 2000",
# "Round 3", "i=1999", "it 2000", "第3輪 第100批"), the tutorial's "[1, 2000]", "[3/10]", "[3]",
# "(3, 2000)", "#3" or Keras' "1563/1563 [===" / "1563/1563 - 10s" at the start, a Keras or
# tqdm bar or rate ("6ms/step", "100%|████", "12.5it/s"), or a line that announces the end of
# training ("Finished Training. Final loss: 2.26": the loss of the last training batch).
_COUNTER_WORD = r"(?<![A-Za-z])(?:epoch|ep|iter(?:ation)?s?|step|(?:mini[-_ ]?)?batch|round)"
_CJK_COUNTER = r"第\s*\d+\s*(?:個|个)?\s*(?:輪|轮|批|回合|代|次|epoch|batch|step|iter)"
PROGRESS_RX = re.compile(
    _COUNTER_WORD + r"[\s_\-]*(?:[:#=\[(]\s*)?\d+"
    r"|(?<!after )(?<!in )(?<!for )(?<!of )\b\d+\s*(?:st|nd|rd|th)?\s*epoch\b(?!s)"
    r"|(?<![A-Za-z])(?:i|it|idx)\s*[=:]\s*\d+|(?<![A-Za-z])it\s+\d+(?![\d.%])"
    r"|^\s*\[\s*\d+\s*(?:[,/]\s*\d+\s*)?\]|^\s*\(\s*\d+\s*,\s*\d+\s*\)|^\s*#\s*\d+\b"
    r"|^\s*\d+\s*/\s*\d+\s+(?:\[|-\s)"
    r"|\d+ms/step|\d+(?:\.\d+)?(?:it/s|s/it)|\d%\|[█▉▊▋▌▍▎▏#\s]*\||\[=+[>.]*\]|" + _CJK_COUNTER +
    r"|finish(?:ed)?\s+(?:the\s+)?training|end\s+of\s+training|training\s+(?:is\s+|has\s+)?"
    r"(?:finished|done|complete[d]?|over|ended)|訓練(?:完成|結束)|训练(?:完成|结束)", re.IGNORECASE)
# "Loss after epoch 3: 1.2": the number right after a counter word is the counter.
_COUNTER_BEFORE = re.compile(_COUNTER_WORD + r"s?[\s_\-]*(?:[:#=\[(]\s*)?$", re.IGNORECASE)
_COUNTER_NUMBER = re.compile(r"\d+(?:\s*/\s*\d+)?\s*[\])]?")
# A line that only counts ("Epoch 3/10", "Epoch 1", "=== Epoch 2 done ===", "Round 3:", "第2輪")
# heads the training lines below it, up to a blank line or a line without numbers.
EPOCH_HEADER = re.compile(r"^[\W_]*(?:(?:epoch|round)[\s_\-:#]*\d+(?:\s*(?:/|of)\s*\d+)?|" + _CJK_COUNTER + r")"
                          r"[\W_]*(?:(?:is\s+)?(?:done|finished|complete[d]?|start(?:ed|ing)?|begins?)[\W_]*)?$",
                          re.IGNORECASE)
# Words before a metric that make it a training one: "batch loss", "running loss", "minibatch acc".
_TRAIN_QUALIFIER = re.compile(r"(?<![A-Za-z])(?:running|(?:mini[-_ ]?)?batch|iteration|step)\W{0,3}"
                              r"(?:(?:avg\.?|average|mean)\W{0,3})?$", re.IGNORECASE)
_LINE_START_SPLIT = re.compile(r"^[\W_]*" + SPLIT_RX.pattern, re.IGNORECASE)
_SUFFIX_SPLIT = re.compile(r"\s*[(\[]?\s*(?:on|for|in|of)?\s*(?:the\s+)?" + SPLIT_RX.pattern, re.IGNORECASE)
# "Epoch 2: Loss 0.9 Accuracy 54.4% on test": a split named at the very end covers the whole line.
_LINE_END_SPLIT = re.compile(r"(?:\bon|\bfor|\bin|\bof|[(\[])\s*(?:the\s+)?" + SPLIT_RX.pattern +
                             r"(?:\s*(?:set|split|data(?:set)?|images|samples))?\s*[)\]]?[\s.!:]*$", re.IGNORECASE)
_LIST = re.compile(r"\[([-+0-9.eE%,\s]+)\]")
_ACC_WORD = re.compile(r"ac{1,2}u?a?r", re.IGNORECASE)
_SEPARATOR_ROW = re.compile(r"^[\s\-=+|:_─━═│┃║┼╋╪┿┌┐└┘├┤┬┴╭╮╯╰]*$")
_PIPES = re.compile(r"[|│┃║]")
# "test acc 0.70 best acc 0.72": the best-so-far is not the final test accuracy.
_BEST = re.compile(r"\b(?:best|max|highest|top)\W*$", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"\d|nan|inf", re.IGNORECASE)
_DONE = re.compile(r"finish|done|complete|完成|結束|结束", re.IGNORECASE)
_SECTION_WORD = re.compile(rf"(?<![A-Za-z0-9_]){SPLIT_WORD}(?![A-Za-z0-9_])", re.IGNORECASE)


def clean_lines(text: str) -> list[str]:
    """Lines as a terminal would show them: ANSI codes dropped, '\\r' overwrites applied."""
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    out = []
    for line in text.split("\n"):
        if "\r" in line:
            segs = [s for s in line.split("\r") if s.strip()]
            line = segs[-1] if segs else ""
        out.append(line[:MAX_LINE])
    return out


@dataclass(frozen=True)
class Scanned:
    """A metric keyword with its value, as found in one line."""

    token: MetricToken
    reading: Reading
    start: int
    end: int
    split: Split | None
    """Split the line names for this value; None when it says nothing."""


def scan_metrics(line: str, masked: str, spans: Sequence[ClassSpan] = (),
                 claimed: Sequence[tuple[int, int]] = ()) -> list[Scanned]:
    """Every 'keyword filler value' in a line, with the split the text gives it."""
    toks = metric_tokens(masked)
    out: list[Scanned] = []
    prev_end, prev_split = 0, None
    start_m = _LINE_START_SPLIT.match(masked)
    line_split = split_of(start_m.group(1)) if start_m and not re.match(
        r"[\W_]*train(?:ing)?\s+(?:finish|done|complete)", masked, re.IGNORECASE) else None
    end_m = _LINE_END_SPLIT.search(masked)
    end_split = split_of(end_m.group(1)) if end_m else None
    for i, t in enumerate(toks):
        stop = toks[i + 1].start if i + 1 < len(toks) else len(masked)
        m = _FILL_VALUE.match(masked, t.end, stop)
        for _ in range(3):
            # A count is not the value: "Loss after epoch 3: 1.2", "loss over 100 batches: 2.3".
            if m and _COUNTER_BEFORE.search(m.group("fill")):
                counter = _COUNTER_NUMBER.match(masked, m.start("num"))
                m = _FILL_VALUE.match(masked, counter.end() if counter else m.end(), stop)
            elif m and (unit := NOT_A_METRIC_AFTER.match(masked, m.end())):
                m = _FILL_VALUE.match(masked, unit.end(), stop)
            else:
                break
        if not m:
            continue
        vs, ve = m.start("num"), m.end()
        fill = masked[t.end:vs]
        if "[" in fill or any(t.end <= s.start < vs for s in spans) or any(a < ve and vs < b for a, b in claimed):
            continue
        if NOT_A_METRIC_AFTER.match(masked, ve) or len(fill) > 60:
            continue
        reading = read_value(m, line)
        if reading is None:
            continue
        if "%" in fill and reading.unit == "bare":
            reading = Reading(reading.value, "pct")
        back = masked[max(prev_end, t.start - 30):t.start]
        back = re.split(r"[.!?;]\s", back)[-1]
        suffix = _SUFFIX_SPLIT.match(masked, ve, min(len(masked), ve + 40))
        if suffix and i + 1 < len(toks) and suffix.start(1) >= toks[i + 1].start:
            suffix = None  # "acc 0.9 test_acc 0.8": the split word belongs to the next metric
        split = (t.split or first_split(fill) or last_split(back)
                 or (split_of(suffix.group(1)) if suffix else None)
                 or ("train" if _TRAIN_QUALIFIER.search(back) else None) or end_split
                 or (None if _BEST.search(back) else
                     (prev_split if t.start - prev_end <= 20 else None) or line_split))
        out.append(Scanned(t, reading, vs, ve, split))
        prev_end, prev_split = ve, split
    return _keras_convention(out)


def _keras_convention(found: list[Scanned]) -> list[Scanned]:
    """'loss: 0.3 - accuracy: 0.9 - val_loss: 0.5': a bare metric printed before the same
    metric with a split prefix is the training one (Keras' and most loggers' convention)."""
    prefixed = {(sc.token.kind, sc.start) for sc in found if sc.token.split in ("val", "test")}
    if not prefixed:
        return found
    return [Scanned(sc.token, sc.reading, sc.start, sc.end, "train")
            if sc.split is None and any(k == sc.token.kind and start > sc.start for k, start in prefixed)
            else sc for sc in found]


@dataclass(frozen=True)
class Hit:
    """A mention before its unit is settled (see `settle`)."""

    kind: str
    """'test_accuracy' or 'test_loss' for a total (`settle` renames it by its split), or 'class_accuracy'."""
    reading: Reading
    class_name: str | None
    raw: str
    split: Split | None
    run: int
    """Consecutive lines with class hits share a run; a run is read in one unit."""
    inferred: bool = False
    """The split is 'train' only because the line counts progress (no split word): see MetricMention."""


def _class_hits(line: str, masked: str, spans: list[ClassSpan]) -> list[tuple[ClassSpan, Reading, int, int]]:
    if _PREDICTION_LINE.search(line):
        return []
    out = []
    for i, s in enumerate(spans):
        stop = spans[i + 1].start if i + 1 < len(spans) else len(masked)
        m = _CLASS_FILL_VALUE.match(masked, s.end, stop)
        if not m or _CLASS_FILL_BAD.search(m.group("fill")) or NOT_A_METRIC_AFTER.match(masked, m.end()):
            continue
        if s.by_id and not m.group("fill").strip():
            continue  # "class 3 0.41" is too ambiguous without ':' or '='
        r = read_value(m, line)
        if r is not None:
            out.append((s, r, m.start("num"), m.end()))
    return out


_BARE_ID_LINE = re.compile(r"^\s*(\d{1,2})\s*[:=)\]]\s*" + VALUE + r"\s*$", re.IGNORECASE)
# The tutorial's loop reused with classes ('0', ..., '9'): "Accuracy of     3 : 97 %".
_ACC_OF_ID = re.compile(r"^\s*(?:test\s+)?ac{1,2}u?a?r{1,2}a?c[yi]\s+(?:of|for)\s+(\d{1,2})\s*(?:is)?\s*[:=]\s*"
                        + VALUE, re.IGNORECASE)


def _table_cells(line: str, spans: Sequence[ClassSpan]) -> list[str]:
    """Cells of a text table row; a class name with spaces ('Dairy product') stays one cell."""
    if _PIPES.search(line):
        cells = [c.strip() for c in _PIPES.split(line)]
        while cells and not cells[0]:
            cells.pop(0)
        while cells and not cells[-1]:
            cells.pop()
        return cells
    keep: dict[str, str] = {}
    parts, pos = [], 0
    for i, s in enumerate(spans):
        key = f"\x00{i}\x00"
        keep[key] = line[s.start:s.end]
        parts += [line[pos:s.start], f" {key} "]
        pos = s.end
    parts.append(line[pos:])
    cells: list[str] = []
    for tok in "".join(parts).split():
        if cells and not re.search(r"[\w\x00]", tok):
            cells[-1] += tok  # "54.0 %", "Accuracy (%)"
        else:
            cells.append(keep.get(tok, tok))
    return cells


def _join_arrays(lines: list[str]) -> list[str]:
    """numpy wraps long arrays over lines; put a per-class list back on one line."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        j = i
        if "[" in line and "]" not in line[line.rfind("["):] and _ACC_WORD.search(line):
            buf = line
            while j + 1 < len(lines) and j - i < 6 and re.fullmatch(r"[-+0-9.eE%,\s\]]*", lines[j + 1]):
                j += 1
                buf += " " + lines[j].strip()
                if "]" in lines[j]:
                    break
            if "]" in buf[buf.rfind("["):]:
                out.append(buf)
                i = j + 1
                continue
        out.append(line)
        i += 1
    return out


def _list_hits(masked: str, classes: Sequence[str] | None) -> list[tuple[str, Reading]]:
    for m in _LIST.finditer(masked):
        if not _ACC_WORD.search(masked[max(0, m.start() - 60):m.start()]):
            continue
        nums = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*%?", m.group(1))
        names = (list(classes) if classes is not None and len(nums) == len(classes)
                 else [str(i) for i in range(len(nums))] if classes is None and len(nums) in (10, 11)
                 else None)
        if names:
            return [(n, Reading(float(v.rstrip(" %")), "pct" if "%" in v else "bare"))
                    for n, v in zip(names, nums)]
    return []


def scan_text(text: str, classes: Sequence[str] | None) -> Iterator[Hit]:
    """Hits in reading order, before units are settled (see `settle`)."""
    header: Header | None = None
    blank_run, run = 0, 0
    section: Split | None = None
    epoch_block = False  # under an "Epoch 3" line: unlabelled numbers are training ones
    for line in _join_arrays(clean_lines(text)):
        try:
            if not line.strip() or _SEPARATOR_ROW.match(line):
                blank_run += 1
                if not line.strip():
                    epoch_block = False  # an epoch's block of lines ends at a blank line
                if blank_run > 2:
                    header = None
                continue
            blank_run = 0
            masked = mask_line(line)
            spans = find_classes(line, classes)
            raw = line.strip()[:200]
            line_hits: list[Hit] = []
            cells = _table_cells(line, spans)
            new_header = make_header(cells, classes)
            has_number = _ANY_NUMBER.search(line)
            if not has_number and (new_header is not None or header is None):
                # A line without numbers ("==== Testing ====") names the split for what follows.
                if len(line) <= 80 and _SECTION_WORD.search(line):
                    section = last_split(line)
                if _DONE.search(line):
                    section = None
            if new_header is not None:
                header = new_header
                run += 1
                continue
            if not has_number:
                epoch_block = False
                run += header is None
                continue
            if header is not None:
                got = row_hits(header, cells, classes)
                if got is None:
                    header = None
                else:
                    section_or = None if _PREDICTION_LINE.search(line) else section
                    for h in got:
                        kind = "class_accuracy" if h.class_name else "test_accuracy"
                        line_hits.append(Hit(kind, h.reading, h.class_name, raw, h.split or section_or, run))
            if header is None:
                line_hits = _free_line(line, masked, spans, classes, raw, run, section, epoch_block)
            epoch_block = epoch_block or bool(EPOCH_HEADER.match(line))
            if header is None and not any(h.class_name for h in line_hits):
                run += 1  # the next class line starts a new block
            yield from line_hits
        except Exception:  # noqa: BLE001 - one hostile line must not cost the rest of the evidence
            continue


def _free_line(line: str, masked: str, spans: list[ClassSpan], classes: Sequence[str] | None,
               raw: str, run: int, section: Split | None, epoch_block: bool) -> list[Hit]:
    hits: list[Hit] = []
    chits = _class_hits(line, masked, spans)
    if not spans:
        m = _BARE_ID_LINE.match(masked) or _ACC_OF_ID.match(masked)  # MNIST's "7: 98.1%"
        if m and not _PREDICTION_LINE.search(line):
            idx = int(m.group(1))
            name = (classes[idx] if idx < len(classes) else None) if classes is not None else str(idx)
            r = read_value(m, line)
            if name is not None and r is not None:
                span = ClassSpan(m.start(1), m.end(1), name, True)
                spans = [*spans, span]  # so that the index is not read as a total below
                chits.append((span, r, m.start(1), m.end()))
    class_split = None
    if chits:
        # The split word is outside the class names ("Test Accuracy of airplane").
        outside, pos = [], 0
        for s in spans:
            outside.append(masked[pos:s.start])
            pos = max(pos, s.end)
        outside.append(masked[pos:])
        class_split = last_split(" ".join(outside)) or section
    for s, r, _, _ in chits:
        hits.append(Hit("class_accuracy", r, s.name, raw, class_split, run))
    claimed = [(a, b) for _, _, a, b in chits]
    progress = epoch_block or bool(PROGRESS_RX.search(masked))
    for sc in scan_metrics(line, masked, spans, claimed):
        if sc.token.kind == "lr":
            continue
        kind = "test_accuracy" if sc.token.kind == "acc" else "test_loss"
        split = sc.split or section or ("train" if progress else None)
        hits.append(Hit(kind, sc.reading, None, raw, split, run, inferred=split is not None and not (sc.split or section)))
    if not chits and not spans:
        for name, r in _list_hits(masked, classes):
            hits.append(Hit("class_accuracy", r, name, raw, section, run))
    return hits


# A total on the training or validation split is named as such: only test-split (or
# unlabelled) totals are test metrics.
_TOTAL_KIND = {("test_accuracy", "train"): "train_accuracy", ("test_loss", "train"): "train_loss",
               ("test_accuracy", "val"): "val_accuracy", ("test_loss", "val"): "val_loss"}


def settle(hits: Sequence[Hit], *, cell: int | None, source: str) -> list[MetricMention]:
    """Convert readings to the grader's units; drop what cannot be an accuracy or a loss.

    A run of per-class numbers printed without '%' is in percent when most of them are
    above 1 ('plane 54.0 / cat 0.8' means 0.8 %, not 80 %).
    """
    bare: dict[int, list[float]] = {}
    for h in hits:
        if h.kind == "class_accuracy" and h.reading.unit == "bare":
            bare.setdefault(h.run, []).append(h.reading.value)
    pct_runs = {run for run, vs in bare.items() if 2 * sum(v > 1 for v in vs) > len(vs)}
    out = []
    for h in hits:
        if h.kind == "test_loss":
            v = h.reading.loss()
        else:
            v = h.reading.accuracy(True if h.kind == "class_accuracy" and h.run in pct_runs else None)
        if v is None:
            continue
        kind = _TOTAL_KIND.get((h.kind, h.split), h.kind)
        out.append(MetricMention(kind, v, h.class_name, h.raw, cell, source, h.split,  # type: ignore[arg-type]
                                 h.inferred))
    return out


def parse_text(text: str, *, classes: Sequence[str] | None = None, cell: int | None = None,
               source: str = "stdout") -> list[MetricMention]:
    """Metric mentions in printed text. Never raises on odd text; returns [] when nothing is found."""
    if not isinstance(text, str) or not text:
        return []
    return settle(list(scan_text(text, classes)), cell=cell, source=source)
