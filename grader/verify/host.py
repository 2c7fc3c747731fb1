"""The host side of verification: run the evaluator, validate what it returns, score it.

`verify_run` reads spec.json and model.pt (grader.verify.spec, .archive), finds the test split
on the lab's read-only folders (.plan), reads its images and labels itself, and the hidden
split's (.data), starts the evaluator (.evaluator) in a fresh sandbox with nothing labelled in
it, validates its predictions and parameter statistics, and computes the accuracies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grader import sandbox, stagetimes
from grader.execute import PROBE_DIR_TOKEN, SandboxLimits, SandboxSpec
from grader.parsers.classes import CLASS_SETS
from grader.verify import server
from grader.verify.archive import model_format
from grader.verify.data import Split, read_split, write_inputs
from grader.verify.evaluator import MAX_PARAMETERS, QUANTILES, evaluator_source
from grader.verify.plan import plan
from grader.verify.runs import check_runs, run_facts, run_files, runs_block
from grader.verify.spec import (
    CAPTURES,
    NotVerified,
    is_int,
    read_spec,
    regular,
    transform_text,
)

VERIFY_TIMEOUT_S = 600.0
"""The evaluator's wall time at most (sandbox start, loading, both splits); the pipeline gives it
no more than what is left of the run's and the submission's time (grader.runbudget.finish_window)."""
MAX_MODEL_BYTES = 2 << 30
MAX_STDOUT_BYTES = 8 << 20
"""What the host keeps of the evaluator's stdout (bytes): predictions and 256 x 257 quantiles."""
MIN_AGREEMENT = 0.95
"""Share of the sampled test images on which the captured model must predict what the
student's own model predicted in the kernel."""
HIDDEN_MIN_GAP = 0.10
"""Visible minus hidden accuracy (fraction) from which a gap can be flagged ..."""
HIDDEN_Z = 3.0
"""... when a one-sided two-proportion z-test also gives z at least this (p < 0.0014): an
honest model scores the same on two samples of one distribution, up to sampling noise.
Exactly (binomial, worst accuracy 10..95 %), an honest model is flagged at most 0.14 % of the
time with 66 images on each side (Food-11 tiny), 0.08 % with 500 (CIFAR-10 tiny), ~0 from
2000. A full memorizer (100 % visible, 38 % hidden) is flagged every time at every size; a
partial one (63 % against 38 %) 44 % of the time with 66 images, 99 % with 220 (small), always
at real sizes. A lower z buys little at 66 images (z 2.58: 64 % caught, 0.57 % false alarms),
since the visible accuracy itself is only known to about 6 points there."""


def teardown_source() -> str:
    """Code for `run_notebook(teardown_code=...)`: captures the model for `verify_run`."""
    return (
        "def __dllab_verify():\n"
        "    import sys\n"
        "    probe = sys.modules.get('_dllab_probe')\n"
        "    if probe is None or not hasattr(probe, 'export_for_verification'):\n"
        "        print('dllab teardown: the probe is not loaded')\n"
        "        return\n"
        f"    print('dllab teardown:', probe.export_for_verification({PROBE_DIR_TOKEN + '/verify'!r}))\n"
        f"    more = getattr(probe, 'export_generative', lambda folder: None)({PROBE_DIR_TOKEN + '/verify'!r})\n"
        "    if more:\n"
        "        print('dllab teardown:', more)\n"
        f"    arch = getattr(probe, 'export_architecture', lambda folder: None)({PROBE_DIR_TOKEN + '/verify'!r})\n"
        "    if arch:\n"
        "        print('dllab teardown:', arch)\n"
        "__dllab_verify()\n"
        "del __dllab_verify\n"
    )


def verify_run(*, run_dir: Path, probe_dir: Path, spec: SandboxSpec, limits: SandboxLimits,
               dataset_hint: str | None, timeout_s: float = VERIFY_TIMEOUT_S, workdir: str = "",
               hidden: Mapping[str, str] | None = None, capture: str = "model") -> dict[str, Any]:
    """The `verified` block of evidence.json for one executed notebook.

    `run_dir` holds the run's `run.json`; `probe_dir` is what execute harvested from the
    sandbox (`run_dir/probe`); `spec` and `limits` are the ones the notebook ran with.
    `dataset_hint` (a registered dataset's name) names the lab's dataset when the test data
    alone does not (an ImageFolder). `workdir` is the notebook's folder in the submission,
    where the run had its own `./data` (grader.sandbox.place_mounts). `hidden` maps a dataset
    name to its grader-only hidden test split (grader.hidden_split), never mounted for students.
    `timeout_s`: the evaluator's time (seconds); when it runs out the block has `timed_out`.
    `capture`: "model" (the primary capture, with its `runs`: grader.verify.runs) or "more<k>"
    (the model of another dataset the notebook evaluated, `more<k>.json`/`.pt`). Never raises for anything the submission did.
    """
    started = time.monotonic()
    job_spec: dict[str, Any] = {}
    try:
        _check_run(run_dir)
        primary = capture == "model"
        job_spec = read_spec(probe_dir / "verify" / ("spec.json" if primary else f"{capture}.json"),
                             model_file=f"{capture}.pt")
        model = _model_file(probe_dir / "verify" / f"{capture}.pt", job_spec)
        fmt = model_format(model)
        job = plan(job_spec, mounts=spec.mounts, dataset_hint=dataset_hint, workdir=workdir)
        visible = read_split(job["kind"], Path(job["root"]))
        held, hidden_reason = _hidden_split(job["kind"], (hidden or {}).get(job["kind"]), visible)
        splits = [visible] + ([held] if held is not None else [])
        preds, parameters, _, _ = _evaluate(job, model, fmt, splits, spec=spec, limits=limits, timeout_s=timeout_s)
        block = _block(job_spec, job, visible, preds[0], seconds=time.monotonic() - started)
        block.update(hidden_block(visible, preds[0], held, preds[1] if held is not None else None,
                                  job["mapping"], reason=hidden_reason))
        block["method"], block["parameters"] = fmt, parameters  # what the file is, not what spec.json says
        if primary:
            runs = run_files(probe_dir / "verify", job_spec["runs"])
            left = timeout_s - (time.monotonic() - started)
            run_preds, facts = _evaluate_runs(job, [r for r in runs if "path" in r], splits, spec=spec,
                                              limits=limits, timeout_s=left)
            block["runs"] = runs_block(runs, run_preds, job, visible, held, facts)
        return block
    except NotVerified as exc:
        # the cell says which model the reason is about, once the capture is known
        return {"reason": str(exc), **({"cell": job_spec["cell"]} if job_spec.get("cell") is not None else {}),
                **({"timed_out": True} if isinstance(exc, OutOfTime) else {})}
    except Exception as exc:  # noqa: BLE001 - one notebook's verification must not stop a batch
        return {"reason": f"the grader's verification failed ({type(exc).__name__}: {str(exc)[:200]}); "
                          f"please report this"}


class OutOfTime(NotVerified):
    """The evaluator ran past the time it was given."""


def _check_run(run_dir: Path) -> None:
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return
    status = run.get("status") if isinstance(run, dict) else None
    if status == "killed":
        raise NotVerified("the run was killed, so the trained model could not be captured")
    if status == "not-run":
        raise NotVerified("the notebook did not run, so there is no trained model to evaluate")
    teardown = run.get("teardown") if isinstance(run, dict) else None
    if isinstance(teardown, dict) and teardown.get("status") in ("timeout", "not-run"):
        # what a cut-off capture left behind is not evaluated: it may be half written
        raise NotVerified("the time limit ran out while the grader captured the trained model after the last "
                          "cell (see the run's notes), so the model could not be verified")


def _model_file(path: Path, job_spec: Mapping[str, Any]) -> Path:
    if not os.path.lexists(path):
        size = job_spec["model"]["bytes"]
        raise NotVerified(f"the captured model ({size / 2**20:.0f} MiB) did not come out of the "
                          f"sandbox (over the copy limit?)")
    regular(path, MAX_MODEL_BYTES, "captured model file")
    return path


def _hidden_split(kind: str, folder: str | None, visible: Split) -> tuple[Split | None, str | None]:
    """The hidden split of `kind`, or None and why not (said in the block, never fatal)."""
    from grader.hidden_split import hidden_data_folder

    if not folder:
        return None, f"no hidden test split of {kind} was given to the grader"
    try:
        held = read_split(kind, hidden_data_folder(kind, Path(folder)))
    except NotVerified as exc:
        return None, f"the hidden test split could not be read: {exc}"
    if held.pixels is not None and held.pixels.shape[1:] != visible.pixels.shape[1:]:  # type: ignore[union-attr]
        return None, "the hidden test split's images are not the size of the visible split's"
    return held, None


# ---------------------------------------------------------------- running the evaluator


def _evaluate_runs(job: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], splits: Sequence[Split], *,
                   spec: SandboxSpec, limits: SandboxLimits, timeout_s: float
                   ) -> tuple[list[list[list[int]] | str], list[dict[str, Any] | str]]:
    """Predictions per split of each run model (grader.verify.runs), or why there are none, and
    each one's measured structure (grader.verify.runs.check_facts) or why there is none: a
    second evaluator run after the primary one, in the time left, so that the run models can
    never cost the primary verification."""
    if not runs:
        return [], []
    if timeout_s < 1.0:
        why = "no time was left to evaluate it after the primary model"
        return [why] * len(runs), [why] * len(runs)
    try:
        first, _, rest, facts = _evaluate(job, runs[0]["path"], runs[0]["format"], splits, spec=spec,
                                          limits=limits, timeout_s=timeout_s, runs=runs[1:], facts=True)
    except NotVerified as exc:
        why = f"the run models were not evaluated ({str(exc).rstrip('.')})"
        return [why] * len(runs), [why] * len(runs)
    return [first, *rest], facts


def _evaluate(job: Mapping[str, Any], model: Path, fmt: str, splits: Sequence[Split], *, spec: SandboxSpec,
              limits: SandboxLimits, timeout_s: float, runs: Sequence[Mapping[str, Any]] = (), facts: bool = False
              ) -> tuple[list[list[int]], dict[str, Any], list[list[list[int]] | str], list[dict[str, Any] | str]]:
    """Predictions per split (in each split's order), the parameters' statistics, per run
    model of `runs` (`{"path", "format"}`, grader.verify.runs) its predictions per split or
    the evaluator's error text, and, when `facts` (else []), the measured structure of `model`
    then of each run model (grader.verify.runs.run_facts)."""
    work, kdir = job_folder("dllab-verify-")
    try:
        shutil.copyfile(model, kdir / "model.pt")
        for k, run in enumerate(runs):
            shutil.copyfile(run["path"], kdir / f"run{k}.pt")
            os.chmod(kdir / f"run{k}.pt", 0o644)
        inputs = write_inputs(kdir, list(splits))
        # No labels, no keys, no dataset paths: only how to read the images and the model.
        evaluator_job = {"format": fmt, "steps": job["steps"], "flatten_input": job["flatten_input"],
                         "storage": inputs.storage, "mode": inputs.mode, "count": len(inputs.order), "facts": facts,
                         "runs": [{"file": f"run{k}.pt", "format": r["format"]} for k, r in enumerate(runs)]}
        (kdir / "job.json").write_text(json.dumps(evaluator_job), encoding="utf-8")
        (kdir / "evaluate.py").write_text(evaluator_source(), encoding="utf-8")
        for name in ("model.pt", "job.json", "evaluate.py"):
            os.chmod(kdir / name, 0o644)
        stdout, stderr, code = run_job(kdir / "evaluate.py", kdir / "job.json", work=work, spec=spec, limits=limits,
                                       timeout_s=timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if code == "timeout":
        raise OutOfTime(f"the time limit of {timeout_s:.0f} s given to the independent evaluation ran out "
                        f"before it finished (see the run's notes)")
    result = _result_line(stdout, stderr, code)
    preds = check_result(result, len(inputs.order))

    def by_split(flat: Sequence[int]) -> list[list[int]]:
        per_split: list[list[int]] = [[0] * len(s) for s in splits]
        for pos, (s, i) in enumerate(inputs.order):
            per_split[s][i] = flat[pos]
        return per_split
    return by_split(preds), result["parameters"], [
        by_split(r) if isinstance(r, list) else r for r in check_runs(result, len(runs), len(inputs.order))
    ], run_facts(result, len(runs)) if facts else []


def _result_line(stdout: bytes, stderr: bytes, code: int | str) -> dict[str, Any]:
    results = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(ValueError, RecursionError):
            value = json.loads(line)
            if isinstance(value, dict) and "ok" in value:
                results.append(value)
    if len(results) > 1:  # only the evaluator writes there: a second line is forged
        raise NotVerified("the evaluator's output holds more than one result line, so none of them is trusted")
    if not results:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {code}"]
        raise NotVerified(f"the evaluator crashed without a result ({tail[0][:200]})")
    if results[0].get("ok") is not True:
        raise NotVerified(f"the evaluator failed: {str(results[0].get('error'))[:300]}")
    return results[0]


def job_folder(prefix: str) -> tuple[Path, Path]:
    """A fresh job folder for run_job: (work, work/k), with work/sub beside k, all readable and not
    writable by the sandbox uid; inside the submission's warm evaluator's folder when there is one
    (grader.verify.server). The caller removes `work` when done."""
    warm = server.current()
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=warm.jobs if warm is not None else None))
    kdir = work / "k"
    kdir.mkdir()
    (work / "sub").mkdir()
    for p in (work, kdir, work / "sub"):
        os.chmod(p, 0o755)  # readable, not writable, by the sandbox uid
    return work, kdir


def run_job(script: Path, job: Path, *, work: Path, spec: SandboxSpec, limits: SandboxLimits,
            timeout_s: float) -> tuple[bytes, bytes, int | str]:
    """`python -I -B script job` in a sandbox whose kernel folder is `job`'s (work/k) and
    submission folder work/sub, no dataset mounted, or under `limits` alone for sandbox `none`:
    (stdout, stderr, exit code or "timeout"), both outputs capped (_run_capped). No dataset is
    mounted: a captured model could read any file it sees (TorchScript has `aten::from_file`),
    so it sees nothing labelled. The run's GPU (`spec.gpus`, `spec.gpu`) is its only device
    passed through, with the same memory share; a run without one gives none.

    Within a submission's grading (grader.verify.server.session) the job runs in a child forked
    by that submission's warm evaluator, whose sandbox has the same settings and has imported
    torch and torchvision once; a job whose server dies before it ends runs again afresh, in the
    time left."""
    t0 = time.monotonic()
    with stagetimes.stage("verification: its sandboxes"):
        warm = server.current()
        if warm is not None and job.is_relative_to(warm.jobs):
            done = warm.run(_server_key(spec, limits), _server_start(spec, limits), script, job, timeout_s=timeout_s)
            if done is not None:
                return done
        with contextlib.ExitStack() as stack:
            cmd, _ = _job_command([sys.executable, "-I", "-B", str(script), str(job)], run_dir=work,
                                  kernel_dir=job.parent, submission=work / "sub", spec=spec, limits=limits, stack=stack)
            return _run_capped(cmd, cwd=str(work), timeout_s=max(0.0, timeout_s - (time.monotonic() - t0)))


def warm_up(spec: SandboxSpec, limits: SandboxLimits) -> bool:
    """Starts the submission's warm evaluator for jobs under `spec` and `limits` now, at the
    lowest CPU weight (grader.verify.server.Session.prestart), so that it imports torch on CPU
    the notebook's run leaves idle; False where there is no session or no group to hold it back."""
    warm = server.current()
    return warm is not None and warm.prestart(_server_key(spec, limits), _server_start(spec, limits))


def _server_key(spec: SandboxSpec, limits: SandboxLimits) -> tuple[Any, ...]:
    """What a job's warm evaluator must share with the job: its sandbox, GPU, CPU share and the
    caps of its sandbox (not the time limits, which the host keeps per job)."""
    caps = dataclasses.replace(limits, cell_timeout_s=0.0, wall_timeout_s=0.0, startup_timeout_s=0.0)
    return spec.sandbox, tuple(spec.gpus), spec.gpu, spec.cpu_share, caps


def _server_start(spec: SandboxSpec, limits: SandboxLimits) -> server.Start:
    """How the warm evaluator for `spec` and `limits` starts (grader.verify.server.Session.run)."""
    def start(run_dir: Path, kernel_dir: Path, submission: Path) -> tuple[list[str], contextlib.ExitStack, Any]:
        code = kernel_dir / "server.py"
        code.write_text(server.server_source(), encoding="utf-8")
        os.chmod(code, 0o644)
        sweep = [] if spec.sandbox == "none" else ["--sweep"]
        stack = contextlib.ExitStack()
        try:
            cmd, group = _job_command([sys.executable, "-I", "-B", str(code), *sweep], run_dir=run_dir,
                                      kernel_dir=kernel_dir, submission=submission, spec=spec, limits=limits,
                                      stack=stack)
        except BaseException:
            stack.close()
            raise
        return cmd, stack, group
    return start


def _job_command(inner: list[str], *, run_dir: Path, kernel_dir: Path, submission: Path, spec: SandboxSpec,
                 limits: SandboxLimits, stack: contextlib.ExitStack) -> tuple[list[str], Any]:
    """`inner` under the run's confinement (run_job): its sandbox with `kernel_dir` and `submission`,
    its GPU and cgroup caps, or `limits` alone for sandbox `none`; with its cgroup (None: none).
    The uid and the group are released by `stack`."""
    if spec.sandbox == "none":
        return [*sandbox.rlimit_prefix(limits), *inner], None
    from grader import cgroups
    from grader.execute import _sandbox_env

    uid = stack.enter_context(sandbox.allocate_uid()) if sandbox.is_root() else None
    # the run's own GPU, with its memory share, when it had one (grader.gpu); else none
    gpu_only = SandboxSpec(gpus=spec.gpus, gpu=spec.gpu)
    cmd = sandbox.build_command(
        inner, run_dir=run_dir, kernel_dir=kernel_dir, submission=submission, mounts={},
        limits=limits, env=_sandbox_env(gpu_only), uid=uid, gpus=spec.gpus,
        bwrap=sandbox.bwrap_path() or "bwrap")
    # the run's own cgroup caps (its CPU share above all): a model evaluated beside
    # other runs takes no more of the host than the run that trained it
    group, _ = cgroups.for_run(limits, cpu_share=spec.cpu_share, name="verify")
    if group is not None:
        stack.callback(group.remove)
        cmd = [*group.prefix(), *cmd]
    return cmd, group


def _run_capped(cmd: list[str], *, cwd: str, timeout_s: float) -> tuple[bytes, bytes, int | str]:
    """Run `cmd` in its own process group; keep at most MAX_STDOUT_BYTES of each stream."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    kept: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}

    def drain(stream: Any, buf: bytearray) -> None:
        with contextlib.suppress(Exception):
            for chunk in iter(lambda: stream.read1(65536), b""):
                if len(buf) < MAX_STDOUT_BYTES:
                    buf += chunk[:MAX_STDOUT_BYTES - len(buf)]

    threads = [threading.Thread(target=drain, args=(proc.stdout, kept[1]), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, kept[2]), daemon=True)]
    for t in threads:
        t.start()
    try:
        code: int | str = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        code = "timeout"
    finally:
        sandbox.kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    for t in threads:
        t.join(timeout=5)
    return bytes(kept[1]), bytes(kept[2]), code


# ---------------------------------------------------------------- validating what came out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_result(result: Mapping[str, Any], count: int) -> list[int]:
    """The predictions of an `ok` evaluator result (see grader.verify.evaluator), validated:
    one int per input image and a well-formed `parameters`; raises NotVerified."""
    preds = result.get("predictions")
    if not (isinstance(preds, list) and len(preds) == count and all(is_int(p) for p in preds)):
        raise NotVerified("the evaluator's result is malformed (not one predicted class per test image)")
    if not valid_parameters(result.get("parameters")):
        raise NotVerified("the evaluator's parameter statistics are malformed")
    return preds


def valid_parameters(params: Any) -> bool:
    """Whether `params` follows the `parameters` contract of grader.verify.evaluator."""
    if not isinstance(params, dict) or len(params) > MAX_PARAMETERS:
        return False
    for name, st in params.items():
        if not (isinstance(name, str) and 0 < len(name) <= 300 and isinstance(st, dict) and is_int(st.get("numel"))):
            return False
        if st.get("finite") is False:
            if set(st) != {"numel", "finite"}:
                return False
            continue
        qs = st.get("quantiles")
        if not (set(st) == {"numel", "min", "max", "mean", "std", "quantiles"} and st["numel"] > 0
                and all(_finite(st[k]) for k in ("min", "max", "mean", "std"))
                and isinstance(qs, list) and len(qs) == QUANTILES and all(_finite(q) for q in qs)
                and all(a <= b for a, b in itertools.pairwise(qs)) and qs[0] == st["min"] and qs[-1] == st["max"]
                and st["min"] <= st["mean"] <= st["max"] and st["std"] >= 0):
            return False
    return True


# ---------------------------------------------------------------- scoring on the host


def score(split: Split, preds: Sequence[int], mapping: Sequence[int]) -> list[list[int]]:
    """[correct, total] per canonical class: prediction p is right when mapping[p] is the label."""
    per_class = [[0, 0] for _ in range(len(CLASS_SETS[split.kind]))]
    for p, y in zip(preds, split.labels):
        per_class[y][1] += 1
        per_class[y][0] += int(0 <= p < len(mapping) and mapping[p] == y)
    return per_class


def gap_test(visible: tuple[int, int], hidden: tuple[int, int]) -> tuple[float, float]:
    """(visible minus hidden accuracy, one-sided two-proportion z), from (correct, total) pairs."""
    (c1, n1), (c2, n2) = visible, hidden
    p1, p2 = c1 / n1, c2 / n2
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return p1 - p2, ((p1 - p2) / se if se > 0 else (math.inf if p1 > p2 else 0.0))


def hidden_block(visible: Split, visible_preds: Sequence[int], held: Split | None,
                 held_preds: Sequence[int] | None, mapping: Sequence[int], *, reason: str | None) -> dict[str, Any]:
    """The hidden split's keys of the `verified` block: its accuracy, and whether the gap to
    the visible accuracy is flagged (`hidden_gap_flagged`), or `hidden_reason` when there is none."""
    if held is None or held_preds is None:
        return {"hidden_reason": reason or "no hidden test split was evaluated"}
    seen, kept = score(visible, visible_preds, mapping), score(held, held_preds, mapping)
    v = (sum(c for c, _ in seen), len(visible))
    h = (sum(c for c, _ in kept), len(held))
    gap, z = gap_test(v, h)
    classes = CLASS_SETS[held.kind]
    return {"hidden_accuracy": round(h[0] / h[1], 4), "hidden_n": h[1],
            "hidden_per_class_accuracy": {classes[i]: round(c / t, 4) for i, (c, t) in enumerate(kept) if t},
            "hidden_gap": round(gap, 4), "hidden_z": round(z, 2) if math.isfinite(z) else 99.0,
            "hidden_gap_flagged": gap_flagged(v, h)}


def gap_flagged(visible: tuple[int, int], hidden: tuple[int, int]) -> bool:
    """Whether the visible accuracy is far enough above the hidden one, (correct, total) each,
    to flag: at least HIDDEN_MIN_GAP (a fraction) and HIDDEN_Z in `gap_test`."""
    gap, z = gap_test(visible, hidden)
    return gap >= HIDDEN_MIN_GAP and z >= HIDDEN_Z


def _block(job_spec: Mapping[str, Any], job: Mapping[str, Any], visible: Split, preds: Sequence[int], *,
           seconds: float) -> dict[str, Any]:
    index = {k: i for i, k in enumerate(visible.keys)}
    same = compared = 0
    for k, p in zip(job["sample_keys"], job["sample_preds"]):
        i = index.get(k)
        if i is not None:
            compared += 1
            same += int(preds[i] == p)
    if job.get("require_sample") and not compared:
        raise NotVerified("none of the sampled test images could be found again, so the grader cannot "
                          "tell that it read them as the notebook's own dataset class does")
    if compared and same < MIN_AGREEMENT * compared:
        raise NotVerified(f"the captured model predicted differently from the notebook's own model on "
                          f"{compared - same} of {compared} sampled test images, so its capture or the "
                          f"test transform could not be reproduced faithfully")
    per_class = score(visible, preds, job["mapping"])
    classes = CLASS_SETS[job["kind"]]
    block: dict[str, Any] = {
        "test_accuracy": round(sum(c for c, _ in per_class) / len(visible), 4),
        "per_class_accuracy": {classes[i]: round(c / t, 4) for i, (c, t) in enumerate(per_class) if t},
        "test_images": len(visible),
        "model": job_spec["model"]["class"], "method": CAPTURES[job_spec["model"]["capture"]],
        "capture": job_spec["model"]["capture"], "transform": transform_text(job["steps"]),
        "dataset": job["kind"], "split": job["split"],
        "sample_agreement": round(same / compared, 4) if compared else None,
        "seconds": round(seconds, 2),
        # In[n] of the evaluation whose model this is: a notebook of several sections credits
        # the verification only to the section holding that cell (grader/sections.py).
        "cell": job_spec.get("cell")}
    notes = [job["note"]] if job.get("note") else []
    model = job_spec["model"]
    if model.get("evaluated_in_train_mode") is True and model.get("mode_sensitive") is True:
        notes.append("the notebook evaluated the model in training mode (no model.eval()); "
                     "it was verified in eval mode, so small differences are expected")
    if notes:
        block["note"] = "; ".join(notes)
    return block
