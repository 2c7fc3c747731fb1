"""What a check sees and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from grader.datasets import registry

Status = Literal["pass", "partial", "fail", "error", "manual"]

# Class lists checks count against; names as the datasets' own metadata spells them.
CLASSES: dict[str, tuple[str, ...]] = registry.class_sets()

# Statistics students copy from elsewhere; a normalization check names them when it sees them.
KNOWN_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    k.label: (k.mean, k.std) for k in registry.known_stats()}
# The rubric's `reject:` names for those pairs.
KNOWN_NAMES: dict[str, str] = {k.key: k.label for k in registry.known_stats()}


UNCONFIRMED = "unconfirmed-evidence"
"""Flag of an item that went to a TA because the probe's record of it (which student code can
forge) was not corroborated by anything the host checked itself (grader.corroborate), or because
the accuracy it judges was only printed: the grader ran the notebook but could not measure the
model itself (grader.checks.metrics)."""


@dataclass(frozen=True)
class Outcome:
    """A check's verdict on one rubric item."""

    status: Status
    """pass, partial, fail, error (the grader could not decide) or manual (a TA decides)."""
    fraction: float
    """Share of the item's points earned, 0..1."""
    message: str
    """One or two sentences for the student: what was found, and what to fix."""
    evidence: tuple[str, ...] = ()
    """Pointers into the evidence, e.g. `lab1-1.ipynb#cell 7`."""
    flags: tuple[str, ...] = ()
    """Flags for the TA raised by this item (e.g. `mismatch`)."""
    own_words: bool = False
    """The message stands alone: the rubric's generic feedback for this status would say the
    wrong thing ("no test accuracy was reported" for an untrained model's printed one)."""


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may read about one submission and one rubric part."""

    student_id: str
    """Whose submission this is."""
    part_id: str
    """The rubric part the item belongs to."""
    dataset: str | None
    """The dataset the part is about (from the rubric), e.g. `cifar10`."""
    evidence: Sequence[Mapping] = ()
    """evidence.json of each notebook or script that serves this part."""
    all_evidence: Sequence[Mapping] = ()
    """evidence.json of every notebook and script in the submission."""
    files: Sequence[Mapping] = ()
    """The submission's files: `{"path", "kind", "bytes"}` each."""
    work_dir: str | None = None
    """Where the submission was unpacked, to read reports from."""
    reference: Mapping | None = None
    """The reference's expected metrics for this part (`parts[<id>]` of the expected file)."""
    dataset_stats: Mapping[str, Mapping] = field(default_factory=dict)
    """Per-dataset training-split `{"mean": [...], "std": [...]}`, from `dllab data stats`."""
    references: Mapping[str, Mapping] = field(default_factory=dict)
    """The reference's expected metrics of every part (`parts` of the expected file), for an
    item comparing with another part's reference (`reference_part`)."""
    test_split_size: int | None = None
    """Images in the mounted test split of the part's dataset (its manifest or the dataset's
    registered count); None when the grader was not told (checks then read it from the run)."""
    rubric_dir: str | None = None
    """The rubric's folder: where a `custom` check's .py file lives."""
    report_sections: Sequence[str] = ()
    """The lab's report sections (lab.yaml `report.sections`): what a `report_sections` item
    asks for when it names none."""


def where(ev: Mapping, cell: int | None = None) -> str:
    """An evidence pointer a student can follow: `notebook.ipynb#cell 7`."""
    name = str(ev.get("path", "?")).rsplit("/", 1)[-1]
    return f"{name}#cell {cell}" if cell is not None else name


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"
