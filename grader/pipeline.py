"""grade_submission(): the recipe of ../shared/DESIGN.md, one submission end to end.

intake → execute (sandbox + probe) → evidence → checks → score → report. Every stage's
output is written under OUT before the next starts; `grades/<id>.json` is written last, so
its presence (with a matching input key) means the student is done and a resumed batch
skips them. All writes are atomic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, Mapping

from grader import __version__, hostbudget, stagetimes
from grader.fsutil import tree_digest, write_json_atomic
from grader.model import Submission, record_to_json
from grader.safename import safe_name

if TYPE_CHECKING:
    from grader.dataset_id import DataMount

Mode = Literal["execute", "saved"]
# A TA's overrides file, once given to `rescore`, is kept in OUT and applied on every grading.
OVERRIDES_KEPT = ("overrides.csv", "overrides.yaml")


def kept_overrides(out: Path) -> Path | None:
    return next((out / n for n in OVERRIDES_KEPT if (out / n).is_file()), None)


@dataclass(frozen=True)
class GradeSettings:
    """Everything a worker needs to grade one submission; picklable for Dask."""

    rubric_path: Path
    """The rubric YAML."""
    out: Path
    """The output folder (DESIGN.md layout)."""
    data: Mapping[str, str] = field(default_factory=dict)
    """Dataset name -> the dataset's own folder on this host."""
    hidden: Mapping[str, str] = field(default_factory=dict)
    """Dataset name -> its grader-only hidden test split (grader.hidden_split), never mounted."""
    reference_path: Path | None = None
    """Expected-metrics JSON from `dllab reference run`, if any."""
    dataset_stats: Mapping[str, Mapping] = field(default_factory=dict)
    """Dataset name -> training-split {"mean", "std"}."""
    mode: Mode = "execute"
    """Run the notebooks, or read only their stored outputs."""
    sandbox: Literal["bwrap", "none"] = "bwrap"
    """`none` only for a student's own machine."""
    pdf: bool = True
    """Render the feedback PDF (the HTML is always written)."""
    gpus: tuple[int, ...] = ()
    """The batch's GPUs (nvidia-smi indices). The batch hands each run one of them (grader.gpu.Slots)
    in a copy of these settings holding that one; a run given several uses the first."""
    runs_per_gpu: int = 1
    """K: runs sharing one GPU at most, each with 1/K of its memory (grader.gpu)."""
    submitted_at: Mapping[str, str] = field(default_factory=dict)
    """Student id -> ISO time from a `--submitted-at` CSV, overriding the archive's time."""
    cpu_threads: int = 0
    """CPU threads each run may use (0: all); the batch sets cores ÷ workers."""
    cpu_share: float = 0.0
    """CPU cores each run may use at most, enforced by its cgroup's CPU quota (0: no quota); the
    batch sets cores ÷ workers, so a busy loop takes no more than its worker's share."""
    run_cache: str | None = None
    """Folder of finished runs keyed by content ($DLLAB_RUN_CACHE); None: OUT/cache."""
    lab_dir: Path | None = None
    """The folder the rubric was taken from (the lab package's, for `--lab`): `rubric_path` is
    OUT's copy, so its handout and `custom` files are found here. None: beside the copy (folders
    graded before it was recorded)."""
    report_sections: tuple[str, ...] = ()
    """The lab package's report sections (lab.yaml `report.sections`); empty: none declared."""


def settings_key(settings: GradeSettings, source_sha256: str) -> str:
    """What a finished result depends on besides the rubric (which `rescore` may change): a
    grade made by other grader code (an upgrade between two runs of the same batch) is made
    again on resume, as the run cache's entries are, rather than kept beside newer ones."""
    blob = json.dumps({"v": __version__, "code": grader_digest(), "src": source_sha256, "mode": settings.mode,
                       "sandbox": settings.sandbox, "data": dict(settings.data),
                       **({"hidden": dict(settings.hidden)} if settings.hidden else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _safe_name(rel: str) -> str:
    """A run folder name for a notebook path inside the submission."""
    name = PurePosixPath(rel).as_posix().replace("/", "__")
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[:120] or "notebook"


def sandbox_mounts(rubric, data: Mapping[str, str]) -> dict[str, str]:
    """Sandbox path -> host folder for every dataset the rubric mounts.

    A mount path named like the dataset's own folder (`/tmp/datasets-nctu/Food-11`) gets that
    folder; any other path is a root the folder appears under (`/tmp/dataset-nctu` holds
    `cifar-10-batches-py`), and `data/` in the working copy is such a root too, for code
    that calls `download=True`.
    """
    return {m.inside if m.relative is None else m.relative: m.host for m in _mounts(rubric, data)}


def _split_datasets(rubric, data: Mapping[str, str]) -> dict[str, str]:
    """The lab's datasets (name -> host folder) that students split into training and validation
    themselves (a registered split verifier: cats-vs-dogs)."""
    from grader.datasets import registry

    return {name: str(data[name]) for name in rubric.datasets if name in data and name in registry.names()
            and registry.get(name).split_verifier is not None}


def dataset_mounts(rubric, data: Mapping[str, str]) -> tuple[DataMount, ...]:
    """The registered datasets a run can read, with their absolute sandbox paths: what the
    evidence names a dataset by (grader.dataset_id)."""
    from grader.dataset_id import DataMount

    return tuple(DataMount(name=m.name, inside=m.inside, host=m.host) for m in _mounts(rubric, data))


@dataclass(frozen=True)
class _Mount:
    name: str
    inside: str
    relative: str | None
    host: str


def _mounts(rubric, data: Mapping[str, str]) -> list[_Mount]:
    from grader.datasets import registry
    from grader.sandbox import CWD

    out = []
    for name, ds in rubric.datasets.items():
        host = data.get(name)
        if host is None:
            continue
        # the dataset's usual folder name (cats-vs-dogs, cifar-10-batches-py, MNIST), whatever the
        # TA's copy is called: a Kaggle download in dogs-vs-cats/ is still ./data/cats-vs-dogs
        own = registry.get(name).folder if name in registry.names() else Path(host).name
        for inside in (*ds.mount, "data"):
            target = inside if PurePosixPath(inside).name == own else f"{inside.rstrip('/')}/{own}"
            relative = None if target.startswith("/") else target
            out.append(_Mount(name, target if relative is None else os.path.normpath(f"{CWD}/{target}"),
                              relative, str(host)))
    return out


def _limits(rubric):
    from grader.execute import SandboxLimits

    lim = rubric.limits
    return SandboxLimits(memory_bytes=lim.memory, max_processes=lim.processes, max_file_bytes=lim.file_size,
                         max_work_bytes=lim.work_disk, max_shm_bytes=lim.shared_memory,
                         cell_timeout_s=lim.cell_timeout,
                         wall_timeout_s=lim.wall_timeout, max_output_bytes_per_cell=lim.output_per_cell,
                         max_figures=lim.figures)


CACHED_FILES = ("evidence.json", "executed.ipynb", "log.txt", "run.json")


@functools.lru_cache(maxsize=16)
def _dataset_digest(folder: str) -> str:
    from grader.datasets import manifest_digest

    return manifest_digest(Path(folder))


@functools.lru_cache(maxsize=1)
def grader_digest() -> str:
    """A digest of the grader's own code: a run recorded by other code (another probe, other
    evidence fields) must not answer for this one, whatever `__version__` says."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def inputs_digest(sub: Submission) -> str:
    """What a run of any of the submission's files can read of it: the whole tree the sandbox
    copies into its working folder, every file's path and bytes, every folder and link (a
    notebook imports its own `model.py`, reads its own CSV, lists its folder), read from the
    disk rather than from intake's listing."""
    return tree_digest(Path(sub.work_dir))[:24]


def run_cache_key(path: Path, rel: str, settings: GradeSettings, rubric, *, inputs: str) -> str:
    """A run depends on the file (its bytes and its place in the submission: the kernel starts
    in its folder), every other file of the submission (`inputs`, see `inputs_digest`), the
    datasets, the grader's code, the limits and the mode."""
    blob = json.dumps({"file": hashlib.sha256(path.read_bytes()).hexdigest(), "rel": rel, "inputs": inputs,
                       "v": __version__, "code": grader_digest(),
                       "data": {k: _dataset_digest(v) for k, v in sorted(settings.data.items())},
                       **({"hidden": {k: _dataset_digest(v) for k, v in sorted(settings.hidden.items())}}
                          if settings.hidden else {}),
                       "limits": rubric.limits.model_dump(mode="json"), "mode": settings.mode,
                       # a run without a GPU (a `needs-gpu` failure) must not answer for one with
                       "gpu": bool(settings.gpus),
                       "sandbox": settings.sandbox, "mounts": {k: list(v.mount) for k, v in rubric.datasets.items()},
                       # measured generative models depend on the rubric's settings and the instrument's weights
                       **({"generative": {**rubric.generative.model_dump(mode="json"),
                                          "weights": _instrument_digest(rubric.generative.instrument)}}
                          if getattr(rubric, "generative", None) is not None else {}),
                       # a lab reading architectures captures and tests blocks (grader.verify.arch)
                       **({"architecture": 1} if _reads_architecture(rubric) else {})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _reads_architecture(rubric: Any) -> bool:
    from grader.verify.arch import reads_architecture

    return reads_architecture(rubric)


def _instrument_digest(name: str) -> str:
    """sha256 of the instrument's weights (grader.instruments), or why there is none."""
    from grader.instruments import InstrumentError, load

    try:
        weights = load(name).weights
        return hashlib.sha256(weights.read_bytes()).hexdigest()
    except (InstrumentError, OSError) as exc:
        return f"unavailable: {type(exc).__name__}"


@functools.lru_cache(maxsize=4)
def _handout(paths: tuple[Path, ...]) -> frozenset[str]:
    from grader.collect import handout_digests

    return handout_digests(list(paths))


def _cache_dir(settings: GradeSettings) -> Path:
    return Path(settings.run_cache) if settings.run_cache else settings.out / "cache"


def _from_cache(key: str, rel: str, run_dir: Path, settings: GradeSettings) -> dict[str, Any] | None:
    from grader.evidence_model import InvalidEvidence, read_evidence

    entry = _cache_dir(settings) / key
    if not (entry / "evidence.json").is_file():
        return None
    try:  # the key holds the grader's code digest: an entry of another schema is not found, or is a miss here
        ev = read_evidence(entry / "evidence.json")
    except (InvalidEvidence, OSError, UnicodeDecodeError):
        return None
    shutil.copytree(entry, run_dir, dirs_exist_ok=True)
    ev["path"] = rel  # the same bytes may sit under another name
    ev["cache"] = {"hit": True, "key": key}
    return ev


def _to_cache(key: str, run_dir: Path, ev: dict[str, Any], settings: GradeSettings) -> None:
    """Copies a finished run into the cache: built in a temporary folder, then renamed."""
    from grader.evidence_model import write_evidence

    root = _cache_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        for name in CACHED_FILES:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, tmp / name)
        if (run_dir / "figures").is_dir():
            shutil.copytree(run_dir / "figures", tmp / "figures")
        write_evidence(tmp / "evidence.json", ev)
        os.replace(tmp, root / key)
    except OSError:
        pass  # another worker cached the same run first, or the disk is full: the cache is optional
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def problems_for_lab(problems: list[Any], rubric: Any) -> list[Any]:
    """The intake's problems that count for this lab: `no-report` only when the rubric's
    `submission.report` asks for a report file."""
    return [p for p in problems if rubric.submission.report or p.code != "no-report"]


def run_one(path: Path, rel: str, *, submission_dir: Path, run_dir: Path, settings: GradeSettings,
            rubric, inputs: str, wall_s: float | None = None) -> dict[str, Any]:
    """Executes one notebook or script with the probe, or reuses a cached run of the same file
    beside the same other files (`inputs`, see `inputs_digest`). `wall_s`: the seconds left of
    the submission's total (grader.runbudget), when fewer than the rubric's wall time."""
    with stagetimes.stage("run cache lookup"):
        key = run_cache_key(path, rel, settings, rubric, inputs=inputs)
        cached = _from_cache(key, rel, run_dir, settings)
    if cached is not None:
        return cached
    ev = _execute(path, rel, submission_dir=submission_dir, run_dir=run_dir, settings=settings, rubric=rubric,
                  wall_s=wall_s)
    # One record per training run (grader.runrecords), after the host evaluated the run models
    # (`verified_runs`); the notebook gives the cells' stdout to cut and the code (saved: the student's).
    from grader.runrecords import runs_for

    with stagetimes.stage("evidence"):
        notebook = path if ev.get("mode") == "saved" else run_dir / "executed.ipynb"
        ev["runs"] = runs_for(ev, notebook)
        if getattr(rubric, "generative", None) is not None:  # D/G losses, a VAE's loss, recon and KL as printed
            _generative_curves(ev, notebook)
        # What the run leaves on the host is bounded as written (grader.hostbudget); the cache copy
        # below is of the same bounded files.
        ev = hostbudget.bound_evidence(ev)
        hostbudget.bound_run_folder(run_dir, ev, _limits(rubric).max_host_bytes)
    # A run stopped by a limit may have been starved by a busy machine, and one whose capture or
    # evaluation was cut got only what was left of this submission's time: only finished runs are kept.
    cut = any(isinstance(n, Mapping) and n.get("code") in ("submission-time", "sandbox-limit") for n in ev.get("notes") or ())
    if ev.get("status") in ("ok", "error") and not cut:
        _to_cache(key, run_dir, ev, settings)
    return ev


def run_stages(result: Any, seconds: float) -> None:
    """The stages of one sandboxed run (`result`, a grader.execute.RunResult, which took `seconds`
    in all) added to the current stage times (grader.stagetimes): sandbox and kernel start, the
    grader's start-up code with the probe, the cells, the teardown, and the rest (capture,
    shutdown, reaping)."""
    kernel = result.kernel_start_s if result.kernel_start_s is not None else result.startup_s
    cells = sum(c.duration_s for c in result.cells)
    teardown = float((result.teardown or {}).get("seconds") or 0.0)
    stagetimes.add("sandbox and kernel start", kernel)
    stagetimes.add("start-up code and probe", result.startup_s - kernel)
    stagetimes.add("cells", cells)
    stagetimes.add("teardown (probe export)", teardown)
    stagetimes.add("capture, shutdown, reaping", seconds - result.startup_s - cells - teardown)


def _execute(path: Path, rel: str, *, submission_dir: Path, run_dir: Path, settings: GradeSettings,
             rubric, wall_s: float | None = None) -> dict[str, Any]:
    """Executes one notebook or script with the probe and returns its evidence. `wall_s`: the
    seconds left of the submission's time; the run, its teardown and its evaluation end by then
    (the last two with grader.runbudget.FINISH_GRACE_S more)."""
    from grader import collect
    from grader.evidence import figure_file
    from grader.execute import PROBE_DIR_TOKEN, SandboxSpec, run_notebook, run_script
    from grader.gpu import STARTUP as GPU_STARTUP
    from grader.gpu import plan as plan_gpu
    from grader.probe.recorder import bootstrap_source
    from grader.runbudget import finish_notes, verify_in_time
    from grader.sections import verification_hint
    from grader.verify import teardown_source, verify_run
    from grader.verify.arch import reads_architecture
    from grader.verify.host import warm_up

    if settings.mode == "saved":
        if path.suffix.lower() == ".py":  # a notebook may be named `lab1.ipynb.json`: intake knows
            return collect.not_run(rel, "saved mode: a script has no stored outputs to read")
        return collect.from_saved(path, rel, run_dir=run_dir, handout=_handout(tuple(rubric.handout_paths())))
    limits = _limits(rubric)
    submission_end = None if wall_s is None else time.time() + wall_s
    if wall_s is not None and wall_s < limits.wall_timeout_s:  # what is left of the submission's time
        limits = dataclasses.replace(limits, wall_timeout_s=max(1.0, wall_s))
    # One GPU per run, with its share of the GPU's memory (grader.gpu).
    gpu = plan_gpu(settings.gpus[0], runs_per_gpu=settings.runs_per_gpu,
                   sandbox=settings.sandbox) if settings.gpus else None
    if gpu is not None:
        limits = dataclasses.replace(limits, gpu_memory=gpu.words())
    # The probe writes into a folder the sandbox gives it; execute copies it to run_dir/probe.
    # The probe captures the models of the newest `captured_runs` training runs (grader.verify.runs).
    startup = bootstrap_source(events_path=f"{PROBE_DIR_TOKEN}/events.jsonl", figures_dir=f"{PROBE_DIR_TOKEN}/fig",
                               max_figures=limits.max_figures, max_runs=rubric.limits.captured_runs,
                               generative=1 if rubric.generative is not None else 0,
                               architecture=1 if reads_architecture(rubric) else 0,
                               split_runs=1 if _split_datasets(rubric, settings.data) else 0)
    if gpu is not None and gpu.allocator_capped:
        # Before the probe: it handles torch imported ahead of it (the start-up code's own import).
        startup = GPU_STARTUP + startup
    spec = SandboxSpec(mounts=sandbox_mounts(rubric, settings.data), gpus=(gpu.node,) if gpu else (), gpu=gpu,
                       sandbox=settings.sandbox,
                       cpu_threads=settings.cpu_threads, cpu_share=settings.cpu_share or None)
    runner = run_script if path.suffix.lower() == ".py" else run_notebook
    if spec.mounts:  # a lab with a dataset: its models will be evaluated, by a warm evaluator started now
        warm_up(spec, limits)
    t0 = stagetimes.now()
    result = runner(path, submission_dir=submission_dir, out_dir=run_dir, spec=spec, limits=limits,
                    startup_code=_with_probe_dir(startup), teardown_code=teardown_source(), deadline=submission_end)
    run_stages(result, stagetimes.now() - t0)
    probe_dir = run_dir / "probe"
    with stagetimes.stage("evidence"):
        ev = collect.from_run(result, run_dir=run_dir, events_path=probe_dir / "events.jsonl",
                              figures_dir=probe_dir / "fig", mounts=dataset_mounts(rubric, settings.data))
    # How the run stopped and what the machine lacked: the grade's flags (grader.diagnose).
    ev["stop"] = result.stop
    ev["environment"] = list(result.environment)
    ev["notes"] = list(result.notes)  # files not placed, the process cap touched (grader.diagnose)
    ev["notes"] += finish_notes(result, rel, rubric=rubric, limits=limits, wall_s=wall_s)
    # The trained model, evaluated again in a fresh sandbox the student's code never ran in,
    # in what is left of the run's and the submission's time (grader.runbudget.finish_window).
    workdir = str(PurePosixPath(rel).parent)  # the run's own ./data is there too
    t_verify = stagetimes.now()
    ev["verified"], note = verify_in_time(result, rel, run_dir=run_dir, probe_dir=probe_dir, spec=spec, limits=limits,
                                   rubric=rubric, submission_end=submission_end, verify_run=verify_run,
                                   dataset_hint=verification_hint(ev), workdir="" if workdir == "." else workdir,
                                   hidden=settings.hidden)
    ev["notes"] += [note] if note else []
    # One model per training run, evaluated with the primary one (grader.verify.runs).
    ev["verified_runs"] = ev["verified"].pop("runs", None) or (
        [{"optimizer": None, "reason": "no run model was evaluated: " + str(ev["verified"]["reason"])}]
        if ev["verified"].get("reason") else [])
    # A dataset the student splits (cats-vs-dogs): each run's model on its own training and
    # validation files, the measured overfitting gap (grader.verify.splits).
    split_data = _split_datasets(rubric, settings.data)
    if split_data:
        from grader.verify.splits import merge_runs, verify_splits

        block, note = verify_in_time(result, rel, run_dir=run_dir, probe_dir=probe_dir, spec=spec, limits=limits,
                                     rubric=rubric, submission_end=submission_end, verify_run=verify_splits,
                                     data=split_data, workdir="" if workdir == "." else workdir)
        ev["verified_runs"] = merge_runs(ev["verified_runs"], block)
        ev["notes"] += [note] if note else []
    # The models of the other datasets the notebook evaluated on a test split (one notebook
    # for several parts), verified like the primary one in what time is left.
    ev["verified_more"] = []
    for more in sorted((probe_dir / "verify").glob("more[0-9].json"))[:3]:
        block, note = verify_in_time(result, rel, run_dir=run_dir, probe_dir=probe_dir, spec=spec, limits=limits,
                                     rubric=rubric, submission_end=submission_end, verify_run=verify_run,
                                     dataset_hint=None, workdir="" if workdir == "." else workdir,
                                     hidden=settings.hidden, capture=more.stem)
        ev["verified_more"].append(block)
        ev["notes"] += [note] if note else []
    # The generators and VAEs the notebook trained, measured with the lab's instrument in a
    # fresh sandbox, in what time is left (grader.verify.generative).
    ev["generative"] = None
    if rubric.generative is not None:
        from grader.verify.generative import measure_in_time

        ev["generative"], note = measure_in_time(
            result, rel, rubric=rubric, limits=limits, submission_end=submission_end, run_dir=run_dir,
            probe_dir=probe_dir, spec=spec, data={m.name: m.host for m in dataset_mounts(rubric, settings.data)})
        ev["notes"] += [note] if note else []
    # Each trained model's residual and SE blocks, read from their graphs and tested in a fresh
    # sandbox (grader.verify.arch), in what time is left.
    ev["architecture"] = None
    if reads_architecture(rubric):
        from grader.verify.arch import measure_in_time as arch_in_time

        ev["architecture"], note = arch_in_time(result, rel, limits=limits, submission_end=submission_end,
                                                run_dir=run_dir, probe_dir=probe_dir, spec=spec)
        ev["notes"] += [note] if note else []
    stagetimes.add("verification", stagetimes.now() - t_verify)
    shutil.rmtree(probe_dir / "verify", ignore_errors=True)  # model.pt can be tens of MB
    figures = run_dir / "figures"
    for fig in ev["figures"]:
        src = figure_file(probe_dir / "fig", PurePosixPath(fig["png"]).name) if fig.get("png") else None
        if src is None:
            fig["png"] = None
            continue
        figures.mkdir(exist_ok=True)
        shutil.copyfile(src, figures / src.name)
    shutil.rmtree(probe_dir / "fig", ignore_errors=True)
    return ev


def _generative_curves(ev: dict[str, Any], notebook: Path) -> None:
    """Adds the loss curves of a generative lab's notebook (grader.parsers.genlogs: D and G losses,
    a VAE's loss, reconstruction and KL terms, as printed) to `ev["metrics"]["curves"]`, keeping
    any series already there. Only for labs with `generative:`: elsewhere a printed `MSE: 0.3`
    is not a loss curve. A notebook that cannot be read adds nothing."""
    from grader.nbread import UnreadableNotebook, read_notebook
    from grader.parsers.genlogs import gen_curves, notebook_texts

    if notebook.suffix.lower() == ".py" or not notebook.is_file():
        return
    try:
        nb = read_notebook(notebook).nb
    except (UnreadableNotebook, OSError, ValueError):
        return
    metrics = ev.setdefault("metrics", {})
    curves = metrics.setdefault("curves", {})
    for series, points in gen_curves(notebook_texts(nb)).items():
        curves.setdefault(series, points)


def _with_probe_dir(startup: str) -> str:
    from grader.execute import PROBE_DIR_TOKEN

    return f"import os as _o; _o.makedirs('{PROBE_DIR_TOKEN}/fig', exist_ok=True); del _o\n" + startup


def _submitted_at(sub: Submission, settings: GradeSettings) -> tuple[dt.datetime | None, str]:
    return submission_time(sub.student_id, sub.submitted_at, sub.submitted_at_source, settings)


def submission_time(student_id: str | None, submitted_at: str | None, source: str,
                    settings: GradeSettings) -> tuple[dt.datetime | None, str]:
    """The time lateness is judged on and where it came from: the --submitted-at CSV first."""
    if student_id in settings.submitted_at:
        return dt.datetime.fromisoformat(settings.submitted_at[student_id]), "submitted-at-csv"
    if submitted_at:
        when = dt.datetime.fromisoformat(submitted_at)
        if when.tzinfo is None:
            when = when.astimezone()  # the grader machine's local time, as the LMS download is
        return when, source
    return None, "unknown"


def grade_submission(candidate, settings: GradeSettings) -> dict[str, Any]:
    """Grades one discovered submission; returns its Grade as JSON data. Where the time went is
    written to OUT/runs/<id>/timings.json (grader.stagetimes). Its verification jobs share one
    warm evaluator (grader.verify.server), stopped when it is graded."""
    from grader.verify import server

    with stagetimes.recording() as timings, server.session():
        grade = _grade_submission(candidate, settings)
    runs_root = settings.out / "runs" / safe_name(candidate.student_id)
    write_json_atomic(runs_root / "timings.json", timings.to_json())
    return grade


def _grade_submission(candidate, settings: GradeSettings) -> dict[str, Any]:
    from grader import collect
    from grader.entrypoints import plan_runs
    from grader.evidence_model import write_evidence
    from grader.intake import unpack
    from grader.intake.problems import UNREADABLE_CODES
    from grader.rubric import load_rubric
    from grader.runbudget import capped, order_runs, out_of_time, shortened
    from grader.score import load_overrides

    t_intake = stagetimes.now()
    rubric = load_rubric(settings.rubric_path, base_dir=settings.lab_dir)
    out = settings.out
    name = safe_name(candidate.student_id)  # never the id itself: it came from a file name
    work_root = out / "work"
    shutil.rmtree(work_root / name, ignore_errors=True)  # a half-done earlier attempt of ours
    sub = unpack(candidate, work_root, pattern=rubric.submission.pattern)
    sub = dataclasses.replace(sub, problems=type(sub.problems)(problems_for_lab(list(sub.problems), rubric)))
    runs_root = out / "runs" / name
    shutil.rmtree(runs_root, ignore_errors=True)
    write_json_atomic(runs_root / "submission.json", record_to_json(sub))

    evidence: list[dict[str, Any]] = []
    bad = {p.path for p in sub.problems if p.code in UNREADABLE_CODES}
    # Each notebook runs; a .py runs only when it is a program, not a module another file
    # imports (grader/entrypoints.py); plan.json says why each other .py did not run.
    plan = plan_runs(Path(sub.work_dir), [f.path for f in sub.notebooks if f.path not in bad],
                     [f.path for f in sub.scripts if f.path not in bad])
    # The rubric's budget per submission: so many runs, the lab's own notebooks first, in so much time.
    lim = rubric.limits
    order = order_runs(plan.run, rubric)
    over = {rel: capped(rel, count=len(order), limit=lim.runs_per_submission)
            for rel in order[lim.runs_per_submission:]}
    planned = plan.to_json()
    planned["run"] = [rel for rel in order if rel not in over]
    planned["not_run"] += [{"path": rel, "reason": note["message"]} for rel, note in over.items()]
    write_json_atomic(runs_root / "plan.json", planned)
    inputs = inputs_digest(sub)
    stagetimes.add("intake", stagetimes.now() - t_intake)
    deadline = time.monotonic() + lim.submission_timeout
    for rel in order:
        run_dir = runs_root / _safe_name(rel)
        run_dir.mkdir(parents=True, exist_ok=True)
        left = deadline - time.monotonic()
        if rel in over or left <= 0:
            note = over.get(rel) or out_of_time(rel, limit_s=lim.submission_timeout)
            ev = dict(collect.not_run(rel, note["message"]), mode=settings.mode, notes=[note])
        else:
            ev = run_one(Path(sub.work_dir) / rel, rel, submission_dir=Path(sub.work_dir), run_dir=run_dir,
                         settings=settings, rubric=rubric, inputs=inputs, wall_s=left)
            if ev.get("status") == "timeout" and left < lim.wall_timeout \
                    and not any(n.get("code") == "submission-time" for n in ev.get("notes") or ()):
                ev["notes"] = [*(ev.get("notes") or []), shortened(rel, given_s=left, limit_s=lim.submission_timeout)]
        # Validated as written (grader.evidence_model); graded as written, so a rescore reads the same.
        with stagetimes.stage("evidence"):
            evidence.append(write_evidence(run_dir / "evidence.json", ev))
    with stagetimes.stage("checks and score"):
        kept = kept_overrides(out)
        overrides = load_overrides(kept, rubric=rubric) if kept else ()
        grade = grade_from_runs(rubric, sub, evidence, settings=settings, overrides=overrides)
    write_json_atomic(runs_root / "done.json", {"key": settings_key(settings, sub.source_sha256)})
    with stagetimes.stage("report (HTML, PDF)"):
        _render(grade, sub, evidence, settings)
    write_json_atomic(out / "grades" / f"{name}.json", grade)
    return grade


@functools.lru_cache(maxsize=4)
@functools.lru_cache(maxsize=16)
def _test_split_size(name: str, folder: str) -> int | None:
    """Images in the test split of the stand-in dataset `name` given as `folder` (its manifest's
    count); None for a real dataset (no manifest) or one not found there: a test_metrics item's
    bar then comes from the runs."""
    from grader.datasets import locate, read_manifest, registry
    from grader.errors import DatasetError

    spec = registry.find(name)
    try:
        manifest = read_manifest(locate(name, Path(folder))) if spec else None
    except DatasetError:
        return None
    count = ((manifest or {}).get("splits") or {}).get(spec.test_split) if spec else None
    return count if isinstance(count, int) and count > 0 else None


def _reference(path: Path | None) -> dict[str, Any] | None:
    """The expected-metrics file, read once per worker process rather than twice per student.

    Callers only read it."""
    return json.loads(Path(path).read_text()) if path else None


def grade_from_runs(rubric, sub: Submission, evidence: list[dict[str, Any]], *,
                    settings: GradeSettings, overrides=()) -> dict[str, Any]:
    """checks + score over stored evidence: all that `rescore` repeats."""
    from grader.diagnose import run_flags
    from grader.grading import choose_sources, run_checks
    from grader.intake.classify import unreadable_notebooks
    from grader.intake.problems import flag_of, unopened
    from grader.lateness import is_future
    from grader.runbudget import budget_problems
    from grader.score import score
    from grader.sources import better_ignored, ignored_paths, to_json

    reference = _reference(settings.reference_path)
    files = [{"path": f.path, "kind": f.kind, "bytes": f.bytes} for f in sub.files]
    common = dict(student_id=sub.student_id, evidence=evidence, files=files, work_dir=sub.work_dir,
                  reference=reference, dataset_stats=settings.dataset_stats,
                  report_sections=settings.report_sections,
                  test_split_sizes={name: n for name, folder in sorted(settings.data.items())
                                    if (n := _test_split_size(name, str(folder))) is not None})
    sources = choose_sources(rubric, **common)
    results, flags = run_checks(rubric, **common, sources=sources,
                                unreadable=unreadable_notebooks(sub.files, sub.problems) + unopened(sub.problems))
    results = defer_to_ta(rubric, results, sources, evidence)
    # The run budget is the submission's, whichever notebook it left out: said before any is ignored.
    budget = budget_problems(evidence)
    # A candidate notebook graded for no part (a broken `Copy of ...`) raises no run flags.
    ignored = set(ignored_paths(sources))
    evidence = [ev for ev in evidence if ev.get("path") not in ignored]
    flags_in = set(flags)
    flags_in.update(row["flag"] for row in budget)
    flags_in.update(flag_of(p.code) for p in sub.problems)  # every intake problem is visible to the TA
    from grader.similarity.core import flags_for
    flags_in |= flags_for(settings.out, sub.student_id)  # `dllab similarity`: similar-to:<id>, for a TA
    for ev in evidence:
        flags_in |= run_flags(ev)  # how each run stopped, what the grader's machine lacked
    if any(ev.get("output_truncated") for ev in evidence):
        flags_in.add("output-truncated")  # the middle of a long output was not read
    if any(isinstance(f, dict) and f.get("unreadable") for ev in evidence for f in ev.get("figures") or []):
        flags_in.add("unreadable-figure")  # a stored image is corrupt: its item waits for a TA
    recorded, recorded_source = _submitted_at(sub, settings)
    when, source = recorded, recorded_source
    # A time the TA states (--submitted-at) is used as stated: a sample's fixture time, or a
    # deadline still ahead; only a recorded clock (file time, LMS) can be wrong.
    if (recorded is not None and recorded_source != "submitted-at-csv"
            and is_future(recorded, dt.datetime.now(dt.timezone.utc))):
        when, source = None, f"{source}, in the future: not used"  # a wrong clock, not an early student
        flags_in.add("time-in-future")
    grade = score(rubric, results, student_id=sub.student_id, submitted_at=when, submitted_at_source=source,
                  overrides=overrides, flags_in=sorted(flags_in))
    doc = json.loads(grade.to_json())
    doc["submitted_at"] = recorded.isoformat() if recorded else None  # the class summary checks the deadline
    doc["submitted_at_source"] = recorded_source
    if sub.claimed_id:  # the id several LMS participants claim: the gradebook's LMS id, grade withheld
        doc["claimed_id"] = sub.claimed_id
    # What each intake flag stands for, in the student's words, for the TA's views.
    doc["problems"] = [{"flag": flag_of(p.code), "code": p.code, "message": p.message, "path": p.path}
                       for p in sub.problems]
    # A more complete copy left ungraded by the naming rule costs points: said where the TA looks.
    doc["problems"] += [{"flag": "better-copy-ignored", "code": "better-copy-ignored", "message": reason,
                         "path": path} for path, reason in better_ignored(sources)]
    doc["problems"] += run_problems(evidence) + budget  # what the runs lacked, could not place, were not given
    doc["sources"] = to_json(sources)  # which notebook (and cells) each part was graded on, and what was not
    return doc


def _environment(ev: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    from grader.diagnose import ENVIRONMENT_FLAGS

    return [p for p in ev.get("environment") or () if isinstance(p, Mapping) and p.get("code") in ENVIRONMENT_FLAGS]


def defer_to_ta(rubric, results: Mapping[str, Any], sources, evidence: list[dict[str, Any]]) -> dict[str, Any]:
    """Items that failed (or partly) on a notebook whose run failed for want of something the grading
    machine lacks (a GPU, a package, Colab, the network: grader.diagnose.ENVIRONMENT_FLAGS)
    go to the TA (`manual`) with the reason, instead of failing the student for the grader's
    shortcoming. The check's own finding is kept in the item's evidence for the TA. Items that
    read files rather than runs (grading.FILE_CHECKS), and items that passed, are kept."""
    from grader.checks import KINDS
    from grader.diagnose import deferral_message
    from grader.grading import _groups
    from grader.score import CheckResult

    chosen = {s.part_id: s.chosen.ev for s in sources if s.chosen is not None}
    out = dict(results)
    for part_id, spec, items, _ in _groups(rubric):
        runs = [chosen[part_id]] if spec is not None and part_id in chosen else [] if spec is not None else evidence
        lacking = [(ev, _environment(ev)) for ev in runs if _environment(ev)]
        if not lacking:
            continue
        ev, problems = lacking[0]
        message = deferral_message(problems, path=str(ev.get("path") or ""))
        for item in items:
            res = out.get(item.id)
            kind = KINDS[item.check]
            if res is None or kind.scope == "submission" or kind.by_hand or res.status not in ("fail", "partial", "error"):
                continue
            found = f"automatic check ({res.status}): {res.message}"
            out[item.id] = CheckResult(item.id, "manual", 0.0, message, (found, *res.evidence))
    return out


def run_problems(evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each run lacked (grader.diagnose.Problem) and its notes (files not placed, the
    process cap touched), as the grade's `problems` rows: `{flag, code, message, path}`."""
    rows: list[dict[str, Any]] = []
    from grader.diagnose import STUDENT_FLAGS
    from grader.runbudget import BUDGET_FLAGS

    for ev in evidence:
        own = [p for p in ev.get("environment") or () if isinstance(p, Mapping) and p.get("code") in STUDENT_FLAGS]
        for p in [*_environment(ev), *own]:
            rows.append({"flag": p["code"], "code": p["code"], "message": str(p.get("message", "")), "path": ev.get("path")})
        for n in ev.get("notes") or ():
            if isinstance(n, Mapping) and n.get("code") and n.get("code") not in BUDGET_FLAGS:  # budget_problems
                rows.append({"flag": n["code"], "code": n["code"], "message": str(n.get("message", "")),
                             "path": ev.get("path")})
    return rows


def _render(grade: dict, sub: Submission, evidence: list[dict], settings: GradeSettings) -> None:
    from grader.report import render_student
    from grader.sources import report_evidence

    reference = _reference(settings.reference_path)
    runs_root = settings.out / "runs" / safe_name(sub.student_id)
    enriched = [dict(ev, run_dir=str(runs_root / _safe_name(ev["path"])))
                for ev in report_evidence(evidence, grade.get("sources") or {})]
    render_student(grade, evidence=enriched, reference=reference, dataset_stats=dict(settings.dataset_stats),
                   problems=[record_to_json(p) for p in sub.problems], out_dir=settings.out,
                   name=sub.student_name, pdf=settings.pdf)
