"""The versioned schema of `evidence.json`: what one notebook's run (or its saved outputs) showed.

`Evidence` is validated when the file is written (`write_evidence`) and when it is read back
(`read_evidence`, by `rescore`, the self-check and the run cache). In memory evidence stays a
plain dict, the model's dump, so checks read it as before. The dump holds every top-level key
in both modes, execute and saved (a key the mode cannot know is `None` or empty), so a reader
never depends on which mode wrote the file.

Records the checks depend on are typed (figures with a `kind` from `FIGURE_KINDS`,
normalizations with `applied`, the printed metrics); the probe's other records stay open
dicts. A typed record keeps the keys it was given (no defaults are added inside records).

Optional parts for labs beyond classification: `runs` (several training runs per notebook:
name, cells, optimizer and learning rate, named metrics, curves), `metrics.named` (ELBO, KL,
D/G loss: any metric by name) and the figure kind `"samples"` (generated samples). The
report shows them only when present.

Versions: 1 (`"schema": 1`, grader before issue 14) is read through `upgrade_v1`; 2 is
`SCHEMA_VERSION`. A file that does not validate is never a crash: `stored_or_invalid` gives
the notebook a not-run result saying why, flagged `invalid-evidence` for a TA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer

from grader.fsutil import write_json_atomic

__all__ = ["FIGURE_KINDS", "SCHEMA_VERSION", "Evidence", "Figure", "InvalidEvidence", "Metrics", "Normalization",
           "Run", "invalid_result", "read_evidence", "stored_or_invalid", "upgrade_v1", "validate", "write_evidence"]

SCHEMA_VERSION = 2
FIGURE_KINDS = ("histogram", "line", "heatmap", "image", "image-grid", "samples", "other")
"""What a figure shows: the probe's classification of its axes, the saved-mode reading of the
code and pixels, or `samples` (a grid of generated samples: a VAE's decodings, a GAN's fakes)."""
FigureKind = Literal["histogram", "line", "heatmap", "image", "image-grid", "samples", "other"]
RunStatus = Literal["ok", "error", "timeout", "killed", "not-run"]
INVALID_FLAG = "invalid-evidence"


class InvalidEvidence(ValueError):
    """An evidence document that does not match the schema; `problem` says what, in one line."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _Record(BaseModel):
    """A typed record that keeps unknown keys and adds no defaulted keys to the dump."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _as_given(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        given = self.model_fields_set | set(self.__pydantic_extra__ or {})
        return {k: v for k, v in data.items() if k in given}


class Figure(_Record):
    """One figure; `kind` None when the grader could not tell (saved mode, unreadable image)."""

    kind: FigureKind | None = None
    png: str | None = None
    """The kept image, relative to the run folder (`figures/...`), or None."""
    subjects: list[str] = []
    """Parameters (layer names) a histogram shows."""
    run: str | None = None
    """For a generated-sample figure: the `Run.name` whose model drew it, when known."""

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, v: object) -> object:
        # The probe's kind comes from the student's process: an unknown word is just "other".
        return "other" if isinstance(v, str) and v not in FIGURE_KINDS else v


class Normalization(_Record):
    """A Normalize the data went through; `applied` False when it was built but never used."""

    applied: bool | None = None
    mean: Any = None
    std: Any = None
    dataset: str | None = None


class Metrics(_Record):
    """What the notebook printed: test accuracy (fraction 0..1) and loss, per class, curves
    (series -> [[x, value], ...]) and `named`: any other metric by name (`elbo`, `kl`,
    `d_loss`, `g_loss`), its last value as printed."""

    dataset: str | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    per_class_accuracy: dict[str, float | None] = {}
    curves: dict[str, list[Any]] = {}
    mentions: list[dict[str, Any]] = []
    from_validation: dict[str, Any] = {}
    named: dict[str, float | None] = {}


RunState = Literal["trained", "crashed", "not-trained", "superseded", "not-run"]


class Run(_Record):
    """One training run of a notebook that trains several (an LR study, the two runs of an
    exercise that compares them, a GAN's D and G, a VAE per latent size): what it did as it
    executed, built on the host from the probe's records (grader.runrecords.build_runs).

    Units: `lr` is the learning rate of the optimizer's first step; `epochs` is samples trained
    / training-set length (a float: 0.5 is half a pass); accuracies are fractions 0..1;
    curves map a series name to [[epoch or step, value], ...]. Every field but `name` may be
    missing or None: None means the grader could not tell, never "zero" or "absent"."""

    name: str
    """`run 3`: numbered in the order runs first stepped, from 1."""
    label: str | None = None
    """One line for people: `MLP 784-100-100-10 · SGD lr 0.002 · 5 epochs`."""
    cells: list[int] = []
    """Execution counts (In[n]) of the cells the run stepped or was evaluated in."""
    status: RunState | None = None
    """trained; crashed (an error in one of its cells, see `error`); not-trained (built, never
    stepped, or stepped without changing a weight); superseded (the same configuration run again
    later, e.g. a re-run cell: the later run counts); not-run (saved mode: read from outputs)."""
    optimizer_ref: int | None = None
    model_refs: list[int] = []
    structure: dict[str, Any] = {}
    """kind (`linear`, `mlp`, `cnn`, `other`), linear_layers, hidden_widths [int, ...] (in
    forward order), conv_layers, conv_channels [int, ...], activations {name: count}, params
    (trainable parameter count), source (`host`: read from the captured model; `probe`)."""
    optimizer: str | None = None
    lr: float | None = None
    lr_changes: list[list[Any]] = []
    schedulers: list[str] = []
    momentum: float | None = None
    weight_decay: float | None = None
    epochs: float | None = None
    full_epochs: int | None = None
    batches: int | None = None
    samples: int | None = None
    batch_size: int | None = None
    train_dataset: str | None = None
    loss: str | None = None
    """Loss function class seen in training (`CrossEntropyLoss`, `nll_loss`); a hint."""
    metrics: dict[str, float | None] = {}
    """Final metrics the run printed, attributed to it (test_accuracy, test_loss, ...)."""
    curves: dict[str, list[list[float]]] = {}
    verified: dict[str, Any] = {}
    """The host's own evaluation of this run's captured model: test_accuracy, n,
    hidden_accuracy, hidden_n, digest (sha256 of its parameters), reason (why not measured);
    for a dataset the student splits themselves (cats-vs-dogs): train_accuracy, train_n,
    val_accuracy, val_n on the student's own training and validation files (n: images evaluated,
    at most 2000 per split, a uniform sample of train_files / val_files when more), and gap
    (train_accuracy - val_accuracy, a fraction); gap_transform (the validation pipeline's steps
    it was evaluated with), gap_agreement (share 0..1 of the sampled validation images on which
    the captured model predicted what the notebook's did), val_overlap (validation files that
    are also training files), gap_note (what a reader should know: sampled, copies, random steps
    left out), gap_reason (why the gap was not measured): grader.verify.splits."""
    regularizers: dict[str, Any] = {}
    """What regularized this run while it trained, each tied to its steps (grader.regularizers
    builds it; the probe's part is grader/probe/rec_reg.py): weight_decay (the largest of the
    stepping optimizer's param groups), penalty ({kind: L1|L2|L1+L2|None, params, steps,
    analyzed}: a norm of the weights inside the loss its optimizer stepped on, in `steps` of the
    `analyzed` backward passes), dropout and batchnorm ({modules, train, train_nograd, eval,
    eval_grad, eval_cell, by_module, declared}: forward calls in training mode with gradients /
    without, in eval mode (eval_grad: with gradients, i.e. training passes in eval mode) during
    its steps; eval_cell: the model's last .eval(); declared: such layers of its model),
    augmentation ({train: [...], eval: [...], splits: {val|test: [...]}}: random transforms of
    the data it trained on and was evaluated on), selection ({how: early-stopping|best-checkpoint,
    split: val|test|train|None, cell, snapshots, basis: probe|code}), unstepped ([{optimizer,
    weight_decay, cell}]: optimizers built with weight decay that never stepped), written
    (regularizers the notebook's code names: the host's reading), captured (dropout/batchnorm in
    the graph of its captured model)."""
    architecture: dict[str, Any] = {}
    """Residual and squeeze-and-excitation structure of this run's model, read from its
    captured graph and confirmed by a functional test in the verification sandbox
    (grader.probe.rec_arch, grader.verify.arch): blocks ([{name, class, index (order they ran
    in), kind: residual|plain|se|None, shortcut: identity|projection|none, projection {kernel,
    stride, bn}, in_shape, out_shape (per sample), shrinks (the map changes size or channels),
    residual, gate ({pool, fc, activation, sigmoid, position: branch|after-add|shortcut|no-add,
    force} or None), graph: fx|export|hooks, layers, zero (the parameters the test zeroes)}]),
    depth (convolutions and Linear layers that ran, less projection shortcuts and gates), params
    (trainable), graph, graph_errors, input_shape, functional ({block name: {skip:
    identity|projection|none|unclear|None, gate: sigmoid|no-sigmoid|None, how}}),
    functional_reason (why the test did not run), reason (why nothing was read). Empty when the
    lab reads no architectures."""
    printed_check: dict[str, Any] = {}
    """printed, verified, delta, typed (bool: the printed number is a literal in the source or
    far from what the model measures), why (one line)."""
    error: dict[str, Any] = {}
    """cell, ename, evalue of the error that stopped a crashed run."""
    notes: list[str] = []
    """What a TA should know: `continued training of run 2`, `one optimizer for two models`."""


_Records = list[dict[str, Any]]


class Evidence(BaseModel):
    """evidence.json, schema version 2: every key is present in both modes."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = SCHEMA_VERSION
    path: str
    mode: Literal["execute", "saved"]
    status: RunStatus
    reason: str | None = None
    dataset: str | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    figures: list[Figure] = []
    normalization: list[Normalization] = []
    runs: list[Run] = []
    # the probe's records (execute mode; empty in saved mode)
    datasets: _Records = []
    dataloaders: _Records = []
    models: _Records = []
    optimizers: _Records = []
    schedulers: _Records = []
    evaluations: _Records = []
    training: _Records = []
    weights_loaded: _Records = []
    probe: dict[str, Any] | None = None
    errors: _Records = []
    warnings: list[str] = []
    sections: _Records = []
    output_truncated: bool = False
    output_truncated_cells: _Records = []
    evidence_truncated: dict[str, Any] | None = None
    # how the run went (execute mode; None in saved mode)
    cells: dict[str, Any] | None = None
    duration_s: float | None = None
    startup_s: float | None = None
    figures_dropped: int | None = None
    stop: dict[str, Any] | None = None
    environment: _Records = []
    notes: _Records = []
    cache: dict[str, Any] | None = None
    verified: dict[str, Any] = Field(default_factory=dict)
    verified_runs: _Records = []
    verified_more: _Records = []
    architecture: list[dict[str, Any]] | dict[str, Any] | None = None
    """Each trained model's residual and SE blocks (execute mode, a lab with a
    `residual_architecture` item; None otherwise): one record per captured model, joined to its
    run by `optimizer` (grader.verify.arch), or {reason} when none could be read. Run.architecture
    holds each run's."""
    generative: dict[str, Any] | None = None
    """Generative models captured after the last cell and measured by the host (execute mode, a
    lab with `generative:` in its rubric; None otherwise): `captures` (what the probe captured:
    grader.probe.rec_gen, validated), `measures` (one per captured generator, decoder or VAE:
    grader.verify.generative), `instrument` (name, digest, test accuracy), `seconds`, and
    `reason` when nothing could be measured. Units: nats per image, fractions 0..1."""
    # what only the stored outputs show (saved mode; None in execute mode)
    handout_outputs_ignored: int | None = None
    stored_cells: _Records | None = None
    data_use: _Records | None = None
    lr_settings: _Records | None = None


KEYS = frozenset(Evidence.model_fields)
"""Every top-level key of evidence.json (version 2)."""


def _problem(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def validate(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence as the schema holds it (a plain dict with every key); raises
    InvalidEvidence saying what does not match."""
    try:
        return Evidence.model_validate(dict(doc)).model_dump()
    except ValidationError as e:
        raise InvalidEvidence(_problem(e)) from None


def upgrade_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 document (`"schema": 1`, or no version: a folder graded before issue 14)
    as version 2: the version key replaced, keys version 2 does not know dropped (named in
    `warnings`), missing keys left to the schema's defaults. Raises InvalidEvidence when it is
    not an evidence document at all."""
    if not isinstance(doc, Mapping):
        raise InvalidEvidence("the document is not a JSON object")
    out = {k: v for k, v in doc.items() if k != "schema"}
    unknown = sorted(k for k in out if k not in KEYS)
    for k in unknown:
        del out[k]
    out["schema_version"] = SCHEMA_VERSION
    if unknown:
        kept = [w for w in out.get("warnings") or [] if isinstance(w, str)]
        out["warnings"] = [*kept, f"evidence schema 1 keys not kept: {', '.join(unknown)}"[:300]]
    return out


def read_evidence(path: Path) -> dict[str, Any]:
    """evidence.json at `path`, any known version, validated; raises InvalidEvidence (not
    JSON, a newer version, not matching the schema) and OSError (cannot be read)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        raise InvalidEvidence(f"not JSON: {e}"[:300]) from None
    if not isinstance(doc, Mapping):
        raise InvalidEvidence("the document is not a JSON object")
    version = doc.get("schema_version", doc.get("schema", 1))
    if version == SCHEMA_VERSION:
        return validate(doc)
    if version == 1:
        return validate(upgrade_v1(doc))
    raise InvalidEvidence(f"evidence schema version {version!r}, this grader reads 1 and {SCHEMA_VERSION}"[:300])


def invalid_result(rel: str, mode: str, problem: str) -> dict[str, Any]:
    """The evidence of a notebook whose evidence did not validate: not run, saying why, with
    a note that flags it for a TA (the grade's `invalid-evidence`)."""
    message = f"the grader's evidence of this notebook is invalid ({problem}); a TA will look at it"[:600]
    return validate({"path": rel, "mode": mode if mode in ("execute", "saved") else "execute", "status": "not-run",
                     "reason": message, "verified": {"reason": message},
                     "notes": [{"code": INVALID_FLAG, "message": message}]})


def write_evidence(path: Path, ev: Mapping[str, Any]) -> dict[str, Any]:
    """Validates `ev` and writes it to `path` (sorted keys, atomic); returns what was written,
    which the caller grades with, so a grade and its rescore read the same dict. Evidence that
    does not validate is written as `invalid_result`, never raised."""
    try:
        doc = validate(ev)
    except InvalidEvidence as e:
        doc = invalid_result(str(ev.get("path") or Path(path).parent.name), str(ev.get("mode")), e.problem)
    write_json_atomic(Path(path), doc)
    return doc


def stored_or_invalid(path: Path) -> dict[str, Any]:
    """evidence.json read back for grading: the evidence, or `invalid_result` saying why it
    cannot be used (one notebook's result, never an exception for the batch)."""
    try:
        return read_evidence(path)
    except (InvalidEvidence, OSError, UnicodeDecodeError) as e:
        rel, mode = Path(path).parent.name, "execute"
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            if isinstance(doc, Mapping):
                rel = doc["path"] if isinstance(doc.get("path"), str) else rel
                mode = str(doc.get("mode"))
        except (OSError, ValueError, RecursionError):
            pass
        return invalid_result(rel, mode, getattr(e, "problem", None) or f"{type(e).__name__}: {e}")
