"""The parameters of each check kind: one frozen pydantic model per kind.

The same model validates a rubric item's `params:` (grader.rubric) and is the argument its
check receives, so a check reads its parameters as attributes (`params.tolerance`) and a
parameter the model does not declare cannot be read. Every default that a check applies
lives here, as the field's default; each field's `description` is the one-line meaning
`grader.checks.registry.describe_kinds` prints for TAs.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any, Callable, Literal, Mapping, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints
from pydantic.fields import FieldInfo

from grader.checks.base import KNOWN_NAMES, CheckContext, Outcome
from grader.datasets import registry

Whole = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
Flag = Annotated[bool, Strict()]
Name = Annotated[str, Strict(), StringConstraints(pattern=r"\S")]
Names = Annotated[tuple[Name, ...], Field(min_length=1)]
Fraction = Annotated[float, Strict(), Field(ge=0, le=1)]
FUNCTION_PATTERN = r"^([A-Za-z0-9_./-]+\.py):([A-Za-z_][A-Za-z0-9_]*)$"
"""A `custom` check: `file.py:function`, the file next to the rubric."""

# The rubric's `reject:` names: the well-known constant pairs grader.checks.base names.
StatsName = Literal[tuple(KNOWN_NAMES)]  # type: ignore[valid-type]

DEFAULT_REJECT: tuple[str, ...] = tuple(dict.fromkeys(k.family for k in registry.known_stats()))
"""`normalization`'s default `reject:`: every well-known pair's family (ImageNet's, 0.5, each
registered dataset's published statistics)."""

DEFAULT_SECTIONS = ("Problems & solutions", "Experiment setup", "Results", "Analysis")
"""The report sections asked for when a `report_sections` item names none."""


class Params(BaseModel):
    """Base of every kind's parameters: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PerClassAccuracy(Params):
    dataset: Name | None = Field(None, description="dataset whose classes are counted; default: the part's")
    classes: Annotated[Whole, Field(ge=2)] | None = Field(
        None, description="how many classes the dataset must have (a rubric written for another dataset is an error)")
    min_fraction: Fraction = Field(1.0, description="share of the classes that must be shown for full points")


class TestMetrics(Params):
    __test__ = False  # not a pytest class

    dataset: Name | None = Field(None, description="dataset of the test split; default: the part's")
    test_images: Annotated[Whole, Field(ge=1)] | None = Field(
        None, description="test images the evaluation must cover (capped at the mounted test split's size); "
                          "default: the whole mounted test split")
    require: Annotated[tuple[Literal["accuracy", "loss"], ...], Field(min_length=1)] = Field(
        ("accuracy", "loss"), description="which totals must be printed")


class AccuracyVsReference(Params):
    floor: Fraction = Field(0.0, description="test accuracy (0..1) at or below which no points are earned")
    band: Literal["reference"] | Fraction = Field(
        "reference", description='full points from the reference mean minus this band; "reference": 2 std of '
                                 "its seeds, at least 0.05")
    reference_part: Name | None = Field(None, description="whose reference result to compare with; default: "
                                                          "the item's own part")
    dataset: Name | None = Field(None, description="dataset of the accuracy (sets chance level); default: the part's")


class MetricsVerified(Params):
    tolerance: Fraction = Field(0.02, description="largest |printed - measured| test accuracy that still agrees")
    consistency_tolerance: Fraction = Field(
        0.1, description="largest |mean of per-class - total| accuracy on a balanced test split, when nothing "
                         "could be measured")


class WeightHistograms(Params):
    layers: Names | None = Field(None, description="layer names whose weights must be plotted (e.g. conv1); "
                                                   "default: every layer the trained model has")
    require_bias: Flag = Field(False, description="the biases must be plotted too")


class LrStudy(Params):
    min_runs: Annotated[Whole, Field(ge=1)] = Field(2, description="distinct learning-rate settings trained")
    require_scheduler: Flag = Field(False, description="a learning-rate schedule must have stepped")
    require_plot: Flag = Field(True, description="the runs must be compared in a chart")


Factor = Literal["optimizer", "lr", "depth", "width", "conv_layers", "epochs", "model_kind", "loss",
                 "batch_size", "lr_or_schedule", "se", "any"]
"""What two runs of a comparison differ in (grader.checks.runcompare): `depth` counts hidden
layers of an MLP, `width` its hidden units, `conv_layers` Conv2d layers, `model_kind` linear
vs MLP vs CNN, `epochs` full passes over the training set, `lr` the first step's learning
rate, `lr_or_schedule` either the rate or a schedule (LAB 1-3), `se` SE-ResNet vs ResNet (the
run's architecture as the grader read it: grader.verify.arch), `any` one of optimizer/loss/lr."""


class RunComparison(Params):
    factor: Factor = Field(description="what the two runs must differ in")
    values: tuple[Union[Name, Number, Whole], ...] | None = Field(
        None, description="the handout's values of the factor (e.g. [2, 4], [0.002, 0.02], [RMSprop, SGD]); "
                          "default: any two different values")
    off_values_credit: Fraction = Field(0.75, description="share of the points when the pair differs in the "
                                                          "factor but not at the handout's values")
    agree_on: tuple[Factor, ...] | None = Field(
        None, description="factors the two runs must share; default: every comparable factor the named one "
                          "does not change by itself")
    extra_factor_credit: Fraction = Field(0.5, description="share of the points when the pair also differs in "
                                                           "a factor it should share (named in the message)")
    shown: Literal["any", "plot", "numbers", "none"] = Field(
        "any", description="how the comparison must be shown: a chart with both, both numbers printed, either")
    not_shown_credit: Fraction = Field(0.75, description="share of the points when the comparison is not shown")
    not_evaluated_credit: Fraction = Field(0.5, description="share of the points when a run of the pair was "
                                                            "trained but never evaluated on the test split")
    min_settings: Annotated[Whole, Field(ge=2)] = Field(2, description="distinct values of the factor trained")
    require_scheduler: Flag = Field(False, description="a learning-rate schedule must have stepped "
                                                       "(lr_or_schedule)")


class OverfittingGap(Params):
    role: Literal["baseline", "regularized"] = Field(
        "baseline", description="baseline: a run whose gap is shown (training and validation curves) and measured; "
                                "regularized: other runs with a regularizer, each compared with the baseline")
    min_runs: Annotated[Whole, Field(ge=1)] = Field(2, description="regularized runs needed (role regularized)")
    tolerance: Fraction = Field(0.05, description="largest difference (a fraction) between a run's printed "
                                                  "validation accuracy and the one the grader measured; beyond it a "
                                                  "TA compares them")
    not_shown_credit: Fraction = Field(0.5, description="share of the points when the baseline's gap is measured but "
                                                        "no training and validation curves were printed")
    claim_margin: Fraction = Field(0.0, description="a claimed reduction of the gap smaller than this (a fraction) "
                                                    "counts as contradicted by the measurement")


class ModelArchitecture(Params):
    num_outputs: Annotated[Whole, Field(ge=1)] | None = Field(
        None, description="outputs of the last layer; default: the dataset's class count")
    layers: Names | None = Field(None, description="layer names the model must have (e.g. conv1, fc3)")
    dataset: Name | None = Field(None, description="dataset the model is for; default: the part's")


class Normalization(Params):
    dataset: Name | None = Field(None, description="dataset whose own training mean/std must be used; "
                                                   "default: the part's")
    tolerance: Fraction = Field(0.02, description="largest |difference| per channel from the training statistics")
    reject: Annotated[tuple[StatsName, ...], Field(min_length=1)] = Field(  # type: ignore[valid-type]
        DEFAULT_REJECT, description="well-known constants that earn nothing even when close")


class ReportSections(Params):
    sections: Names | None = Field(None, description="section titles the report must contain; default: the "
                                                     "lab's (lab.yaml report.sections)")
    min_words: Annotated[Whole, Field(ge=0)] | None = Field(None, description="fewest words the report must have; "
                                                                              "default: no limit")


class RanWithoutErrors(Params):
    max_errors: Annotated[Whole, Field(ge=0)] = Field(0, description="errors tolerated before points are lost")


class FilesPresent(Params):
    patterns: Names = Field(("*.ipynb",), description="file name patterns (fnmatch, case-insensitive) that must "
                                                      "each match a file")


GenRole = Literal["generator", "cgenerator", "vae"]
"""Which captured generative model an item judges (grader.probe.rec_gen roles): a generator (z ->
image), a conditional one ((z, label) -> image), a VAE (its decoder applied to noise for samples)."""
GenArchitecture = Literal["any", "mlp", "conv"]
"""`conv`: the model's graph has conv or conv_transpose ops; `mlp`: it has none; `any`: either."""
_ROLE = "which captured model: generator (z -> image), cgenerator ((z, label) -> image) or vae"
_ARCH = ("conv: its graph has conv or conv_transpose ops, mlp: none, any: either; several matching: the one with "
         "the most optimizer steps, then the newest")


class GeneratedSamples(Params):
    role: GenRole = Field("generator", description=_ROLE)
    architecture: GenArchitecture = Field("any", description=_ARCH)
    score_ratio: Fraction = Field(0.85, description="full points when the classifier score is at least this share "
                                                    "of the reference's")
    min_score: Annotated[Number, Field(ge=1)] = Field(
        7.5, description="classifier score for full points when the reference has none (the real test images "
                         "score about 9.9 with a digit classifier)")
    coverage_slack: Annotated[Whole, Field(ge=0)] = Field(
        1, description="digits the samples may cover fewer than the reference's (without a reference: than all "
                       "classes) and still earn full points")
    frechet_ratio: Annotated[Number, Field(ge=1)] = Field(
        2.0, description="full points when the Fréchet distance is at most this multiple of the reference's")
    max_frechet: Annotated[Number, Field(gt=0)] | None = Field(
        None, description="Fréchet distance for full points when the reference has none; default: shown, not graded "
                          "(it has no scale of its own)")
    partial_from: Fraction = Field(
        0.6, description="a measure short of its full-points bar earns partial_credit while it reaches this share of "
                         "the bar (a distance: while the bar is this share of it)")
    partial_credit: Fraction = Field(0.5, description="share of a measure's points earned in that band")
    collapse_credit: Fraction = Field(0.0, description="the most the item earns (a share) when the samples show mode "
                                                       "collapse (flag mode-collapse)")


class ConditionalGeneration(Params):
    architecture: GenArchitecture = Field("any", description=_ARCH)
    accuracy_ratio: Fraction = Field(0.9, description="full points when the conditional accuracy is at least this "
                                                      "share of the reference's")
    min_accuracy: Fraction = Field(0.8, description="conditional accuracy (0..1) for full points when the reference "
                                                    "has none")
    ignored_below: Fraction = Field(0.2, description="at or below this conditional accuracy the generator ignores "
                                                     "its label (chance is 1 / classes): fail, flag label-ignored")
    partial_from: Fraction = Field(
        0.6, description="short of full points, partial_credit while the accuracy reaches this share of the bar")
    partial_credit: Fraction = Field(0.5, description="share of the points earned in that band")


class VaeBound(Params):
    architecture: GenArchitecture = Field("any", description=_ARCH)
    nelbo_margin: Annotated[Number, Field(ge=0)] = Field(
        10.0, description="nats per image above the reference's test negative ELBO that still earn full points")
    max_nelbo: Annotated[Number, Field(gt=0)] = Field(
        120.0, description="test negative ELBO (nats per image) for full points when the reference has none (the "
                           "PyTorch example reaches about 104 after 10 epochs)")
    partial_margin: Annotated[Number, Field(ge=0)] = Field(
        30.0, description="nats per image beyond the full-points bar that still earn partial_credit")
    partial_credit: Fraction = Field(0.5, description="share of the points earned in that band")
    collapse_credit: Fraction = Field(0.0, description="the most the item earns (a share) on posterior collapse "
                                                       "(flag posterior-collapse)")
    printed_tolerance: Annotated[Number, Field(ge=0)] = Field(
        5.0, description="nats per image the printed test loss (rescaled) may differ from the grader's before it is "
                         "flagged mismatch for a TA (points do not change)")


class GenerativeArchitecture(Params):
    expect: Literal["dcgan", "cgan", "vae"] = Field(
        description="dcgan: generator with conv_transpose, batch_norm and relu, discriminator with stride-2 convs and "
                    "leaky_relu; cgan: the label fed to both networks; vae: encoder giving mu and logvar, the forward "
                    "sampling with exp and randn or normal")
    latent: Annotated[Whole, Field(ge=1)] | None = Field(
        None, description="the latent size the handout asks for (e.g. 20); default: any, recorded")


class ResidualArchitecture(Params):
    kind: Literal["resnet", "se"] = Field("resnet", description="resnet: blocks adding their input to their output; "
                                                                "se: those with squeeze-and-excitation gates too")
    min_blocks: Annotated[Whole, Field(ge=1)] = Field(2, description="residual blocks the model must have")
    projection: Flag = Field(True, description="1x1 projection shortcuts (stride 2 where the map halves) exactly where "
                                               "the feature map changes size or channels, identity ones elsewhere")
    projection_credit: Fraction = Field(0.5, description="share of the points when a projection is missing where the "
                                                         "map shrinks or present where it does not (se: a gate off "
                                                         "the residual branch)")
    min_depth: Annotated[Whole, Field(ge=1)] | None = Field(None, description="fewest weighted layers on the main path "
                                                                              "(convolutions and FC); default: any")
    max_depth: Annotated[Whole, Field(ge=1)] | None = Field(None, description="most weighted layers; default: any")
    max_params: Annotated[Whole, Field(ge=1)] | None = Field(None, description="most trainable parameters; default: any")
    limits_credit: Fraction = Field(0.5, description="share of the points when depth or parameters are out of bounds")
    se_position: Literal["branch", "any"] = Field("branch", description="se: where the gate must sit: on the residual "
                                                                        "branch before the addition, or anywhere")
    se_every_block: Flag = Field(False, description="se: every residual block must have its gate")


class Manual(Params):
    message: Name | None = Field(None, description="what the student reads until a TA grades the item")


class Custom(Params):
    function: Annotated[str, Strict(), StringConstraints(pattern=FUNCTION_PATTERN)] = Field(
        description="`file.py:function` next to the rubric, called as function(ctx, args) -> Outcome")
    args: dict[str, Any] = Field({}, description="passed to the function as a dict")


# ---- generative labs: logged losses and figure origins (grader.checks.genlogs)


class LoggedLosses(Params):
    model: Literal["gan", "vae"] = Field(description="whose losses: gan = the D and G losses; vae = the loss "
                                                     "(with reconstruction and KL terms when require_terms)")
    require_terms: Flag = Field(False, description="vae: the reconstruction and KL terms must be logged too")
    min_points: Annotated[Whole, Field(ge=2)] = Field(2, description="points (distinct epochs or steps) a curve "
                                                                     "must have")
    tolerance: Annotated[float, Strict(), Field(ge=0)] = Field(
        0.5, description="how far (a share of the stepped values' span) a printed loss may lie outside what its "
                         "optimizer stepped on")
    not_stepped_credit: Fraction = Field(0.5, description="share of the points when a printed loss is not what "
                                                          "its optimizer stepped on")


class FigureOrigin(Params):
    want: Literal["samples", "reconstructions", "class-grid", "latent"] = Field(
        description="what a figure must show, by where its images came from: samples (generator or decoder on "
                    "noise), reconstructions (a model on test images), class-grid (a conditional generator on "
                    "labels in order), latent (an encoder's means or a decoder over a lattice of z)")
# ---- end of generative labs: logged losses and figure origins


Regularizer = Literal["weight_decay", "penalty", "dropout", "augmentation", "batchnorm", "early_stopping"]
"""A regularizer a run may have had in effect (grader.checks.regularization, grader.regularizers)."""


class Regularization(Params):
    require: Annotated[tuple[Regularizer, ...], Field(min_length=1)] = Field(
        ("weight_decay", "penalty", "dropout", "augmentation", "batchnorm", "early_stopping"),
        description="the regularizers that count: a run is regularized when one of them was in effect while it "
                    "trained (weight decay on the optimizer that stepped, an L1/L2 term in the stepped loss, Dropout "
                    "or BatchNorm run in training mode, random transforms of its training data, early stopping on "
                    "the validation split)")
    each: Flag = Field(False, description="every regularizer named must be in effect in some trained run (else "
                                          "any one of them counts)")
    min_runs: Annotated[Whole, Field(ge=1)] = Field(1, description="trained runs with a regularizer in effect "
                                                                   "needed for full points")
    augmented_eval_credit: Fraction = Field(
        0.5, description="share of a run's credit when the data it was evaluated on (validation/test) went "
                         "through random transforms too")


P = TypeVar("P", bound=Params)


def takes(model: type[P]) -> Callable[[Callable[[CheckContext, P], Outcome]],
                                      Callable[[CheckContext, P | Mapping[str, Any]], Outcome]]:
    """A check that receives `model`; a caller holding plain `{key: value}` params (a test, a
    script) gets them validated into it first (pydantic's ValidationError when they do not fit)."""
    def wrap(check: Callable[[CheckContext, P], Outcome]) -> Callable[[CheckContext, P | Mapping[str, Any]], Outcome]:
        @functools.wraps(check)
        def run(ctx: CheckContext, params: P | Mapping[str, Any]) -> Outcome:
            return check(ctx, model.model_validate(params) if isinstance(params, Mapping) else params)
        run.params_model = model  # type: ignore[attr-defined]
        return run
    return wrap


def expected(field: Any) -> str:
    """What a value of `field` (a pydantic FieldInfo) must be, as rubric errors and
    `describe_kinds` say it: `a whole number ≥ 2`, `"reference" or a number between 0 and 1`."""
    return _describe(field.annotation, list(field.metadata))


def _describe(tp: Any, metadata: list[Any]) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _describe(args[0], [*args[1:], *metadata])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a, metadata) for a in args if a is not type(None))
    if origin is Literal:
        return " or ".join(f'"{a}"' for a in args)
    if origin is tuple:
        inner = args[0]
        choices = typing.get_args(inner) if typing.get_origin(inner) is Literal else ()
        return f"a list drawn from {', '.join(choices)}" if choices else "a non-empty list of text"
    if origin is dict or tp is dict:
        return "a mapping (key: value)"
    flat = [x for m in metadata for x in ([m, *m.metadata] if isinstance(m, FieldInfo) else [m])]
    if tp is bool:
        return "true or false"
    if tp is str:
        pattern = next((getattr(m, "pattern", None) for m in flat if getattr(m, "pattern", None)), None)
        return 'a reference "file.py:function" to a file next to the rubric' if pattern == FUNCTION_PATTERN \
            else "non-empty text"
    lo = next((m.ge for m in flat if getattr(m, "ge", None) is not None), None)
    hi = next((m.le for m in flat if getattr(m, "le", None) is not None), None)
    bounds = f" between {lo:g} and {hi:g}" if lo is not None and hi is not None else \
        f" ≥ {lo:g}" if lo is not None else ""
    return ("a whole number" if tp is int else "a number") + bounds
