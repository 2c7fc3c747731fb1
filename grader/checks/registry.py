"""Every check kind a rubric item can name, in one explicit table (`KINDS`).

A kind declares its parameters as one typed model (grader.checks.params), which validates the
rubric and is what its check receives, and how the pipeline treats it: whether it reads one
part's notebooks or the whole submission, whether it ranks the candidate notebooks of a part,
whether a quick self-check on stand-in data can judge it. Every list of kinds elsewhere
(grading, sources, student, pipeline) is a query on this table.
"""

from __future__ import annotations

import importlib.util
import json
import re
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

from pydantic import ValidationError

from grader.datasets import registry
from grader.checks import figures, files, genarch, generative, genvae, lrstudy, metrics, resarch, runcompare, setup
from grader.checks import genlogs  # generative labs: logged losses, figure origins
from grader.checks import overfit  # cats-vs-dogs: the overfitting gap
from grader.checks import regularization  # cats-vs-dogs: regularizers in effect
from grader.checks import params as P
from grader.checks.base import CheckContext, Outcome

Scope = Literal["part", "submission"]


def load_custom(rubric_dir: Path, spec: str) -> Callable[[CheckContext, dict[str, Any]], Outcome]:
    """`file.py:function` next to the rubric: a course's own check, loaded only when grading."""
    file_name, _, func = spec.partition(":")
    path = (rubric_dir / file_name).resolve()
    module_spec = importlib.util.spec_from_file_location(f"dllab_custom_{path.stem}", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, func)


@P.takes(P.Custom)
def custom(ctx: CheckContext, params: P.Custom) -> Outcome:
    """A course's own check, `function(ctx, args)`, from a .py file next to the rubric."""
    function, args = params.function, dict(params.args)
    return load_custom(Path(ctx.rubric_dir or "."), function)(ctx, args)


@dataclass(frozen=True)
class CheckKind:
    """One check kind: its parameters, its check, and how the pipeline treats its items."""

    name: str
    """What a rubric item writes after `check:`."""
    params: type[P.Params]
    """The parameters model; rubric items are validated with it and the check receives it."""
    run: Callable[[CheckContext, Any], Outcome]
    """The check: (context, params model) -> Outcome."""
    meaning: str
    """One line for TAs (`describe_kinds`, docs)."""
    scope: Scope
    """`part`: judges the notebook(s) serving one part; `submission`: reads the submission's
    files or every notebook, so which notebook serves a part does not change its result."""
    ranks_candidates: bool
    """Counted when two notebooks compete for a part (grader.sources): says how much of the
    part a candidate shows. Kinds reading files, every notebook, or the run's own status
    (which the ranking weighs first, on its own) do not."""
    judged_in_quick: bool = True
    """Meaningful in `dllab check --quick` on stand-in data (an accuracy is not)."""
    corroborated: bool = False
    """Credits what a run printed or recorded, which the student's code can forge: in execute
    mode it stands only beside the host's own evaluation of a model of the part's dataset."""
    by_hand: bool = False
    """A TA grades it (`manual`); the pipeline never scores it."""
    hint: bool = True
    """May be a manual item's `hint:` (run for the TA only)."""
    dataset_fields: tuple[str, ...] = ()
    """Params naming a dataset: cross-checked against the rubric's `datasets`."""
    part_fields: tuple[str, ...] = ()
    """Params naming a rubric part: cross-checked against its parts."""
    example: Mapping[str, Any] = field(default_factory=dict)
    """Params of a typical item (required ones included): `describe_kinds`, tests."""


_EXAMPLE_DATASET = registry.names()[0]
"""The dataset the examples name: the first registered one."""

KINDS: Mapping[str, CheckKind] = MappingProxyType({k.name: k for k in (
    CheckKind("test_metrics", P.TestMetrics, metrics.test_metrics,
              "total test loss and accuracy printed, evaluated on the whole test split (not one batch)",
              "part", ranks_candidates=True, corroborated=True, dataset_fields=("dataset",),
              example={"dataset": _EXAMPLE_DATASET, "test_images": 10000, "require": ["loss", "accuracy"]}),
    CheckKind("per_class_accuracy", P.PerClassAccuracy, metrics.per_class_accuracy,
              "the test accuracy of every class of the dataset printed",
              "part", ranks_candidates=True, corroborated=True, dataset_fields=("dataset",),
              example={"dataset": _EXAMPLE_DATASET, "classes": 10}),
    CheckKind("accuracy_vs_reference", P.AccuracyVsReference, metrics.accuracy_vs_reference,
              "test accuracy against the reference run's at the student's own training budget",
              "part", ranks_candidates=True, judged_in_quick=False, dataset_fields=("dataset",),
              part_fields=("reference_part",),
              example={"floor": 0.45, "band": "reference", "reference_part": "lab1-1"}),
    CheckKind("metrics_verified", P.MetricsVerified, metrics.metrics_verified,
              "printed metrics agree with the grader's own evaluation of the trained model",
              "part", ranks_candidates=True, example={"tolerance": 0.01}),
    CheckKind("weight_histograms", P.WeightHistograms, figures.weight_histograms,
              "a histogram of each named layer's weights (and biases) plotted, as the model held them; "
              "not whether it trained",
              "part", ranks_candidates=True, example={"layers": ["conv1", "fc1"], "require_bias": True}),
    CheckKind("lr_study", P.LrStudy, lrstudy.lr_study,
              "several learning rates or schedules trained and compared",
              "part", ranks_candidates=True,
              example={"min_runs": 2, "require_scheduler": False, "require_plot": True}),
    # corroborated=False: it backs each run by the host's own evaluation of that run's model
    # (runcompare._doubt) and goes to a TA itself when that is missing
    CheckKind("run_comparison", P.RunComparison, runcompare.run_comparison,
              "two runs that differ in one factor (optimizer, lr, depth, width, conv layers, epochs, model kind, "
              "loss) and agree on the others, both trained and evaluated, and compared",
              "submission", ranks_candidates=False,
              example={"factor": "depth", "values": [2, 4], "agree_on": ["width", "optimizer", "lr", "epochs"],
                       "shown": "any"}),
    # cats-vs-dogs (issue 17): the gap from the printed curves and from the host's evaluation of
    # each run's model on its own training and validation files (grader.verify.splits)
    CheckKind("overfitting_gap", P.OverfittingGap, overfit.overfitting_gap,
              "the gap between training and validation accuracy, from the printed curves and measured by the "
              "grader on each run's own split: a baseline shown, regularized runs compared with it, claims checked",
              "submission", ranks_candidates=False, judged_in_quick=False,
              example={"role": "regularized", "min_runs": 2, "tolerance": 0.05}),
    # generative labs (issue 16): the host's own measurements of the captured models, so none is
    # `corroborated`; none but the architecture means anything on stand-in data
    CheckKind("generated_samples", P.GeneratedSamples, generative.generated_samples,
              "samples of the captured generator (or VAE decoder) measured by the grader's classifier: classifier "
              "score, digits covered, Fréchet distance, against the reference's; mode collapse flagged",
              "part", ranks_candidates=True, judged_in_quick=False,
              example={"role": "generator", "architecture": "mlp", "score_ratio": 0.85}),
    CheckKind("conditional_generation", P.ConditionalGeneration, generative.conditional_generation,
              "how often the conditional generator's G(z, y) is classified as y, against the reference's; a "
              "generator ignoring its label fails, flagged",
              "part", ranks_candidates=True, judged_in_quick=False, example={"accuracy_ratio": 0.9}),
    CheckKind("vae_bound", P.VaeBound, genvae.vae_bound,
              "the VAE's test negative ELBO recomputed in nats per image on the real test split, its KL term and "
              "active units, against the reference's; posterior collapse and a printed loss that disagrees flagged",
              "part", ranks_candidates=True, judged_in_quick=False, example={"nelbo_margin": 10.0}),
    CheckKind("generative_architecture", P.GenerativeArchitecture, genarch.generative_architecture,
              "the handout's diagram in the captured graphs: DCGAN layers, a cGAN's label fed to both networks, a "
              "VAE's reparameterization",
              "part", ranks_candidates=True, example={"expect": "vae", "latent": 20}),
    # proved by the host's functional test of each block (grader.verify.arch); graph-only is flagged
    CheckKind("residual_architecture", P.ResidualArchitecture, resarch.residual_architecture,
              "residual blocks adding their input to their output, 1x1 projections where the map shrinks, SE "
              "gates with their sigmoid: read from the model's graph and confirmed by a functional test",
              "part", ranks_candidates=True,
              example={"kind": "resnet", "min_blocks": 3, "projection": True, "max_params": 1000000}),
    CheckKind("model_architecture", P.ModelArchitecture, setup.model_architecture,
              "a model was defined whose last layer has one output per class; not whether it trained",
              "part", ranks_candidates=True, corroborated=True, dataset_fields=("dataset",),
              example={"num_outputs": 10}),
    CheckKind("normalization", P.Normalization, setup.normalization,
              "inputs normalized with the dataset's own training mean and std (not copied constants)",
              "submission", ranks_candidates=False, dataset_fields=("dataset",),
              example={"dataset": _EXAMPLE_DATASET, "tolerance": 0.02, "reject": ["imagenet", "half"]}),
    CheckKind("ran_without_errors", P.RanWithoutErrors, setup.ran_without_errors,
              "the part's notebook ran from top to bottom without an exception",
              "part", ranks_candidates=False, corroborated=True, example={"max_errors": 0}),
    CheckKind("report_sections", P.ReportSections, files.report_sections,
              "a report (pdf, docx, md, txt, html) with the named sections",
              "submission", ranks_candidates=False,
              example={"sections": ["Experiment setup", "Results", "Analysis"]}),
    CheckKind("files_present", P.FilesPresent, files.files_present,
              "files matching each pattern are in the submission",
              "submission", ranks_candidates=False, example={"patterns": ["*.ipynb", "report.*"]}),
    # ---- generative labs: logged losses and figure origins (grader.checks.genlogs)
    CheckKind("logged_losses", P.LoggedLosses, genlogs.logged_losses,
              "a GAN's D and G losses (or a VAE's loss, reconstruction and KL) printed or plotted as curves, "
              "and the printed ones what their optimizer stepped on",
              "part", ranks_candidates=True, example={"model": "gan"}),
    CheckKind("figure_origin", P.FigureOrigin, genlogs.figure_origin,
              "a figure of samples, reconstructions, a per-class grid or the latent space, told apart by where "
              "its images came from (not by captions)",
              "part", ranks_candidates=True, example={"want": "samples"}),
    # ---- end of generative labs: logged losses and figure origins
    # a probe hint earns points only beside what the host read itself (the code, the captured graph)
    CheckKind("regularization", P.Regularization, regularization.regularization,
              "a regularizer in effect in a trained run, not just written: weight decay on the optimizer that "
              "stepped, an L1/L2 term in the stepped loss, Dropout/BatchNorm run in training mode, random transforms "
              "of the training data only, early stopping on the validation split",
              "part", ranks_candidates=True, example={"require": ["dropout", "weight_decay"], "min_runs": 2}),
    CheckKind("manual", P.Manual, setup.manual,
              "graded by a TA (0 points until an override); an optional `hint:` check is shown to the TA",
              "part", ranks_candidates=False, by_hand=True, hint=False, example={}),
    CheckKind("custom", P.Custom, custom,
              "a course's own Python check, function(ctx, args) -> Outcome, in a file next to the rubric",
              "submission", ranks_candidates=False, hint=False,
              example={"function": "checks.py:my_check", "args": {"threshold": 0.5}}),
)})
"""Every check kind by name, in the order `describe_kinds` lists them (read-only)."""


def validate_params(name: str, raw: Mapping[str, Any] | P.Params | None) -> P.Params:
    """`raw` as kind `name`'s params model; pydantic's ValidationError when it does not fit."""
    model = KINDS[name].params
    return raw if isinstance(raw, model) else model.model_validate(dict(raw or {}))


def run_check(name: str, ctx: CheckContext, params: P.Params | Mapping[str, Any] | None = None, *,
              rubric_dir: Path | None = None) -> Outcome:
    """Runs one check; an exception inside a check becomes an `error` outcome, never a crash.
    Plain `{key: value}` params are validated into the kind's model first; `rubric_dir` is
    where a `custom` check's file lives (default: the context's)."""
    try:
        typed = validate_params(name, params)
    except ValidationError as e:
        first = e.errors()[0]
        return Outcome("error", 0.0, f"the {name} check cannot take these params ({'.'.join(map(str, first['loc']))}: "
                                     f"{first['msg']}); a TA should fix the rubric")
    if rubric_dir is not None and ctx.rubric_dir is None:
        ctx = replace(ctx, rubric_dir=str(rubric_dir))
    try:
        return KINDS[name].run(ctx, typed)
    except Exception as e:  # noqa: BLE001 - the boundary that keeps a batch alive
        last = traceback.extract_tb(e.__traceback__)[-1]
        return Outcome("error", 0.0, f"the {name} check failed ({type(e).__name__}: {e} at "
                                     f"{Path(last.filename).name}:{last.lineno}); a TA should look at this item")


def describe_kinds() -> str:
    """Every check kind, its params (type, default or `required`) and one-line meanings, as
    YAML comments: the reference a rubric skeleton (`dllab lab new`) and the docs print."""
    out = ["# Check kinds: an item's `check:` names one, its `params:` are listed under it",
           "# (`name: what it must be = default`; `required` when the rubric must give it)."]
    for k in KINDS.values():
        where = "graded by hand" if k.by_hand else \
            "reads the whole submission" if k.scope == "submission" else "reads the part's notebook"
        notes = [where] + ([] if k.judged_in_quick else ["not judged by a quick self-check"])
        out += ["#", f"# {k.name}: {k.meaning}", f"#   ({'; '.join(notes)})"]
        if not k.params.model_fields:
            out.append("#   (no params)")
        for pname, f in k.params.model_fields.items():
            default = "required" if f.is_required() else "optional" if f.default is None \
                else f"default {_yaml(f.default)}"
            out.append(f"#   {pname}: {P.expected(f)}, {default}; {f.description}")
        if k.example:
            out.append(f"#   e.g. params: {_yaml(dict(k.example))}")
    return "\n".join(out) + "\n"


def _yaml(value: Any) -> str:
    """A default or example as YAML flow text: `[a, b]`, `{k: v}`, `null`, `true`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_ .&/-]*(:[A-Za-z0-9_]+)?", text) and text.strip() == text \
        and text.lower() not in ("null", "true", "false", "yes", "no", "on", "off", "~")
    return text if plain else json.dumps(text)
