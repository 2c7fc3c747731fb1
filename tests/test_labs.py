"""Lab packages without a kernel: ids, finding and listing labs, `lab validate`'s static
checks and their messages, `lab new` then `lab validate`, the wheel layout, settings.json's
lab folder, sample zips and the comparison with a sample's stated outcome."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from grader.cli import main
from grader.errors import GraderError
from grader.lab_new import new_lab
from grader.lab_validate import validate_lab
from grader.labs import (LABS_ENV, LabError, choose_lab, find_lab, import_reference, list_labs, load_lab,
                         normalize_lab_id)
from grader.resources import resource_dir

REPO = Path(__file__).resolve().parents[1]
LAB1_RUBRIC_SHA256 = "c9e60bfd1096d813f3bf6d941f584c70cbc7e8ee9abaa744a9880eed8786bf2f"
"""sha256 of rubrics/lab1.yaml's content (parsed, as sorted JSON) at 52d9996, before it moved to
labs/lab1/rubric.yaml: only its comments may change (they name the new path)."""


@pytest.fixture
def skeleton(tmp_path: Path) -> Path:
    """A fresh `dllab lab new` lab, to break one thing at a time."""
    return new_lab("mylab", tmp_path / "labs")


def _edit_yaml(path: Path, change) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def _problems(folder: Path) -> list[str]:
    pkg, problems = validate_lab(folder)
    return problems


# ----------------------------------------------------------------------------- ids, find, list


@pytest.mark.parametrize("text", ["lab1", "LAB1", "Lab-1", "lab_1", " LAB 1 ", "l-a_b1"])
def test_lab_ids_are_normalized_in_one_place(text: str) -> None:
    assert normalize_lab_id(text) == "lab1"
    assert find_lab(text).dir == (REPO / "labs" / "lab1").resolve()


def test_a_lab_is_found_by_id_or_by_folder_and_the_builtin_rubric_is_its_rubric() -> None:
    from grader.rubric import builtin_rubric

    by_folder = find_lab(REPO / "labs" / "lab1")
    assert by_folder.id == "lab1" and by_folder.rubric_path == REPO / "labs" / "lab1" / "rubric.yaml"
    assert builtin_rubric("LAB-1") == builtin_rubric(str(REPO / "labs" / "lab1")) == by_folder.rubric_path


def test_an_unknown_lab_names_the_known_ones_and_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"did you mean `lab1`\?.*known labs: [a-z0-9, ]*\blab1\b"):
        find_lab("lab11")
    with pytest.raises(LabError, match="a folder path must hold lab.yaml"):
        find_lab(str(tmp_path / "nothing"))


def test_labs_dir_and_env_add_labs_and_list_shows_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    new_lab("extra-lab", tmp_path / "a")
    new_lab("envlab", tmp_path / "b")
    monkeypatch.setenv(LABS_ENV, str(tmp_path / "b"))
    ids = [p.id for p in list_labs([tmp_path / "a"])]
    assert ids[:2] == ["extra-lab", "envlab"] and "lab1" in ids, "--labs-dir, then $DLLAB_LABS, then the shipped labs"
    assert find_lab("EXTRA_LAB", [tmp_path / "a"]).dir == (tmp_path / "a" / "extra-lab").resolve()
    assert find_lab("envlab").id == "envlab"
    with pytest.raises(LabError):
        find_lab("extralab")  # not without its --labs-dir
    assert main(["lab", "list", "--labs-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "extra-lab" in out and "envlab" in out and "lab1" in out and "parts: lab1-1, lab1-2, lab1-3" in out
    assert "datasets: mnist" in out and str((tmp_path / "a" / "extra-lab").resolve()) in out


def test_lab1_reference_files_import_as_a_package_with_keyword_only_train() -> None:
    from grader.reference_run import train_signature_problem

    pkg = find_lab("lab1")
    for part in pkg.manifest.references:
        module = import_reference(pkg, part)
        assert train_signature_problem(module.train) is None, part
        assert isinstance(module.hyp, dict)
    study = import_reference(pkg, "lab1-3")
    assert study.load is import_reference(pkg, "lab1-1").load, "relative import of the lab's own files"
    assert "reference" not in sys.modules, "no top-level `reference` package any more"


# ----------------------------------------------------------------------------- validate


def test_lab1_validates_and_the_cli_says_ok(capsys: pytest.CaptureFixture) -> None:
    assert validate_lab("lab1")[1] == []
    assert main(["lab", "validate", "lab1"]) == 0
    assert capsys.readouterr().out.startswith("ok  lab1: LAB01")


def test_lab_new_then_validate_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["lab", "new", "lab9", "--dir", str(tmp_path), "--title", "LAB9 – VAE"]) == 0
    folder = tmp_path / "lab9"
    assert {p.name for p in folder.iterdir()} == {"lab.yaml", "rubric.yaml", "reference", "handout", "samples"}
    assert main(["lab", "validate", str(folder)]) == 0, capsys.readouterr().out
    assert main(["rubric", "validate", str(folder)]) == 0
    text = (folder / "rubric.yaml").read_text()
    for kind in ("test_metrics", "per_class_accuracy", "normalization", "custom", "manual"):
        assert kind in text, "every check kind is listed in the skeleton's comments"
    assert main(["lab", "new", "lab9", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["lab", "new", "Lab 4", "--dir", str(tmp_path)]) == 2
    assert "lower-case letters" in capsys.readouterr().err


def test_validate_reports_a_bad_manifest_with_its_key(skeleton: Path) -> None:
    _edit_yaml(skeleton / "lab.yaml", lambda d: d.update(refrences={}))
    (problem,) = _problems(skeleton)
    assert "lab.yaml" in problem and "refrences" in problem


def test_validate_reports_rubric_and_dataset_problems(skeleton: Path) -> None:
    _edit_yaml(skeleton / "rubric.yaml", lambda d: d.update(lab="otherlab"))
    _edit_yaml(skeleton / "lab.yaml", lambda d: d["references"]["mylab-1"].update(datasets=["mnist", "cifar10"]))
    problems = _problems(skeleton)
    assert any("lab: `otherlab` is not this lab's id `mylab`" in p for p in problems), problems
    assert any("references.mylab-1.datasets: `cifar10` is not under the rubric's datasets" in p
               for p in problems), problems
    _edit_yaml(skeleton / "lab.yaml", lambda d: d["references"]["mylab-1"].update(datasets=["imagenet"]))
    assert any("`imagenet` is not a registered dataset" in p for p in _problems(skeleton))


def test_validate_reports_a_rubric_that_does_not_load(skeleton: Path) -> None:
    _edit_yaml(skeleton / "rubric.yaml", lambda d: d["parts"][0].update(points=90))
    problems = _problems(skeleton)
    assert problems and "rubric.yaml" in problems[0], problems


def test_validate_reports_reference_problems(skeleton: Path) -> None:
    model = skeleton / "reference" / "model.py"
    model.write_text(model.read_text().replace("def train(*, data: Mapping[str, Path],", "def train(data: Mapping[str, Path], *,").replace("hyp = {", "HYP = {")
                     .replace('hyp["', 'HYP["'))
    _edit_yaml(skeleton / "lab.yaml", lambda d: d["references"].update(
        {"mylab-9": {"file": "reference/missing.py", "datasets": ["mnist"]}}))
    problems = _problems(skeleton)
    text = "\n".join(problems)
    assert "train's data must be keyword-only" in text
    assert "no `hyp` dict" in text
    assert "references: `mylab-9` is not a part of the rubric" in text
    assert "missing.py of part 'mylab-9' does not exist" in text
    model.write_text("raise RuntimeError('broken on import')\n")
    assert any("importing" in p and "RuntimeError: broken on import" in p for p in _problems(skeleton))


def test_validate_reports_handout_quick_demo_and_sample_problems(skeleton: Path) -> None:
    (skeleton / "samples" / "ok").mkdir()
    (skeleton / "samples" / "ok" / "a.ipynb").write_text("{}")

    def change(d: dict) -> None:
        d["handout"] = ["handout/lab.ipynb"]
        d["quick"]["unjudged"] = ["accuracy_vs_referense"]
        d["demo"]["reference"]["parts"] = ["mylab-2"]
        d["samples"] = [
            {"student_id": "0000001", "archive": "dllab_0000001.zip", "folder": "samples/ok",
             "expect": {"total": 100, "items": {"mylab-1-metric": "pass"}}},
            {"student_id": "0000002", "archive": "lab_0000002.zip", "folder": "samples/gone"},
            {"student_id": "0000001", "archive": "dllab_0000003.zip", "folder": "samples/ok"},
            {"student_id": "0000004", "archive": "DLlab-0000004.zip", "folder": "samples/ok",
             "expect": {"flags": ["bad-name"]}},
            {"student_id": "0000005", "archive": "homework.zip", "folder": "samples/ok",
             "expect": {"flags": ["bad-name"]}},
        ]
    _edit_yaml(skeleton / "lab.yaml", change)
    text = "\n".join(_problems(skeleton))
    assert "handout: handout/lab.ipynb does not exist" in text
    (skeleton / "handout" / "lab.ipynb").write_text("{}")
    assert any("handout: handout/lab.ipynb is not a readable notebook" in p for p in _problems(skeleton))
    assert "quick.unjudged: unknown check kind `accuracy_vs_referense`" in text
    assert "demo.reference.parts: `mylab-2` has no reference" in text
    assert "expect.items: no rubric item `mylab-1-metric`" in text
    assert "samples[1] (0000002): folder samples/gone does not exist" in text
    assert "archive `lab_0000002.zip` is not the rubric's submission name" in text and "lists `bad-name`" in text
    assert "samples[2] (0000001): `0000001` is used by sample 0000001 too" in text
    assert "samples[3]" not in text, "misnamed on purpose, and says so"
    assert "samples[4] (0000005): archive `homework.zip` is not read as student 0000005" in text


def test_two_labs_whose_ids_collide_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    new_lab("my-lab", tmp_path / "a")
    new_lab("my_lab", tmp_path / "b")
    pkg, problems = validate_lab(tmp_path / "a" / "my-lab", [tmp_path / "a", tmp_path / "b"])
    assert any("is also the id of" in p and "(mylab)" in p for p in problems), problems
    assert main(["lab", "validate", "my-lab", "--labs-dir", str(tmp_path / "a"), "--labs-dir",
                 str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "my_lab" in out
    assert validate_lab(tmp_path / "a" / "my-lab", [tmp_path / "b"])[1] == [], "a copy outside the roots"
    shutil.copytree(REPO / "labs" / "lab1", tmp_path / "copy" / "lab1")
    assert validate_lab(tmp_path / "copy" / "lab1")[1] == [], "a TA's copy of a shipped lab, named by its path"


def test_validate_of_an_unknown_id_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["lab", "validate", "nolab"]) == 2
    assert "unknown lab 'nolab'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- layout


def test_resource_dir_finds_labs_in_a_checkout_and_in_a_wheel(tmp_path: Path) -> None:
    assert resource_dir("labs") == REPO / "labs"
    checkout = tmp_path / "checkout"
    (checkout / "grader").mkdir(parents=True)
    assert resource_dir("labs", package=checkout / "grader") == checkout / "labs"
    wheel = tmp_path / "site-packages" / "grader"
    (wheel / "_data" / "labs" / "lab1").mkdir(parents=True)
    assert resource_dir("labs", package=wheel) == wheel / "_data" / "labs"


def test_the_wheel_ships_the_labs_and_no_reference_package() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["grader"]
    assert wheel["force-include"]["labs"] == "grader/_data/labs"
    assert not list(REPO.glob("reference/*.py")) and not list(REPO.glob("rubrics/*.yaml"))


def test_the_lab1_rubric_moved_with_identical_content() -> None:
    import hashlib
    import json

    import yaml

    content = yaml.safe_load((REPO / "labs" / "lab1" / "rubric.yaml").read_text(encoding="utf-8"))
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    assert digest == LAB1_RUBRIC_SHA256



# ----------------------------------------------------------------------------- --lab / --rubric


def test_a_rubric_file_finds_its_lab_by_folder_or_by_its_lab_id(tmp_path: Path) -> None:
    lab1 = find_lab("lab1")
    assert choose_lab(None, lab1.rubric_path).package == lab1
    edited = tmp_path / "ta" / "lab1-spring.yaml"
    edited.parent.mkdir()
    shutil.copyfile(lab1.rubric_path, edited)
    choice = choose_lab(None, edited)
    assert choice.rubric_path == edited and choice.package == lab1 and choice.lab_dir == edited.parent.resolve()
    assert choose_lab("lab1", edited).rubric_path == edited, "--rubric wins over the lab's own"
    with pytest.raises(LabError, match="--lab ID"):
        choose_lab(None, None)
    with pytest.raises(LabError, match="does not exist"):
        choose_lab("lab1", tmp_path / "none.yaml")


def test_quick_unjudged_kinds_come_from_the_grader_and_the_lab(skeleton: Path) -> None:
    from grader.student import quick_unjudged, unjudged_kinds

    _edit_yaml(skeleton / "lab.yaml", lambda d: d["quick"].update(unjudged=["per_class_accuracy"]))
    assert unjudged_kinds(load_lab(skeleton)) == quick_unjudged() | {"per_class_accuracy"}
    assert unjudged_kinds(None) == quick_unjudged() == {"accuracy_vs_reference", "generated_samples",
                                                        "conditional_generation", "vae_bound", "overfitting_gap"}


def _lab_with_custom_check(tmp_path: Path) -> Path:
    folder = new_lab("customlab", tmp_path / "labs")
    import nbformat

    (folder / "handout" / "start.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    (folder / "mychecks.py").write_text("def always(ctx, args):\n    raise AssertionError('not run here')\n")

    def change(d: dict) -> None:
        d["handout"] = ["handout/start.ipynb"]
        d["parts"][0]["items"][1] = {"id": "customlab-1-own", "title": "The course's own check",
                                     "check": "custom", "params": {"function": "mychecks.py:always"},
                                     "points": 40}
    _edit_yaml(folder / "rubric.yaml", change)
    return folder


def test_settings_record_the_lab_folder_so_a_graded_folder_finds_handout_and_custom_files(tmp_path: Path) -> None:
    from grader import config
    from grader.rubric import load_rubric

    lab = _lab_with_custom_check(tmp_path)
    out = tmp_path / "out"
    settings = config.prepare(lab=str(lab), rubric=None, out=out, data_args={}, reference=None, mode="saved",
                              sandbox="none", pdf=False)
    assert settings.lab_dir == lab.resolve() and settings.report_sections == ("Results",)
    doc = json.loads((out / "settings.json").read_text())
    assert doc["lab_dir"] == str(lab.resolve()) and doc["report_sections"] == ["Results"]
    with pytest.raises(GraderError, match="mychecks.py"):
        load_rubric(out / "rubric.yaml")  # OUT's copy alone: its files are not beside it
    again = config.load(out)
    rubric = load_rubric(again.rubric_path, base_dir=again.lab_dir)
    assert rubric.custom_function(rubric.item("customlab-1-own"))[0] == (lab / "mychecks.py").resolve()
    assert rubric.handout_paths()[0].resolve() == (lab / "handout" / "start.ipynb").resolve()


def test_settings_written_before_the_lab_folder_still_load(tmp_path: Path) -> None:
    from grader import config
    from grader.rubric import load_rubric

    out = tmp_path / "out"
    config.prepare(lab="lab1", rubric=None, out=out, data_args={}, reference=None, mode="saved", sandbox="none",
                   pdf=False)
    doc = json.loads((out / "settings.json").read_text())
    del doc["lab_dir"], doc["report_sections"]
    (out / "settings.json").write_text(json.dumps(doc))
    old = config.load(out)
    assert old.lab_dir is None and old.report_sections == ()
    assert load_rubric(old.rubric_path, base_dir=old.lab_dir).lab == "lab1", "beside OUT's copy, as before"


def test_a_ta_rubric_given_to_rescore_becomes_the_lab_folder(tmp_path: Path) -> None:
    from grader import config

    lab = _lab_with_custom_check(tmp_path)
    out = tmp_path / "out"
    config.prepare(lab=str(lab), rubric=None, out=out, data_args={}, reference=None, mode="saved", sandbox="none",
                   pdf=False)
    ta = tmp_path / "ta"
    shutil.copytree(lab, ta)
    given = config.load(out, rubric=ta / "rubric.yaml")
    assert given.lab_dir == (ta).resolve()
    config.keep_rubric(out, ta / "rubric.yaml")
    assert config.load(out).lab_dir == ta.resolve()
    config.keep_rubric(out, out / "rubric.yaml")  # OUT's own copy, edited in place
    assert config.load(out, rubric=out / "rubric.yaml").lab_dir == ta.resolve()
    again = config.prepare(lab=None, rubric=out / "rubric.yaml", out=out, data_args={}, reference=None,
                           mode="saved", sandbox="none", pdf=False)
    assert again.lab_dir == ta.resolve(), "graded again with OUT's own copy: the recorded folder stays"


# ----------------------------------------------------------------------------- samples


def test_a_sample_zip_has_the_bytes_grader_samples_writes(tmp_path: Path) -> None:
    import nbformat

    from grader.lab_samples import write_sample
    from grader.labs import Sample
    from grader.samples import lab1_samples, write_archive

    made = lab1_samples(epochs=1)[0]
    lab = new_lab("ziplab", tmp_path / "labs")
    folder = lab / "samples" / made.student_id
    for name, body in made.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body if isinstance(body, str) else nbformat.writes(body), encoding="utf-8")
    sample = Sample(student_id=made.student_id, archive=made.archive, folder=f"samples/{made.student_id}",
                    late_days=1.5)
    deadline = 1_538_323_140.0
    ours = write_sample(load_lab(lab), sample, tmp_path / "ours", deadline_epoch=deadline)
    theirs = write_archive(made, tmp_path / "theirs", mtime=deadline - 3600 + 1.5 * 86400)
    assert ours.read_bytes() == theirs.read_bytes()
    assert os.stat(ours).st_mtime == os.stat(theirs).st_mtime


def test_a_grade_is_compared_with_the_samples_stated_outcome() -> None:
    from grader.lab_samples import compare
    from grader.labs import Sample

    sample = Sample.model_validate({"student_id": "1", "archive": "dllab_1.zip", "folder": "samples/1",
                                    "expect": {"total": 82, "items": {"a": "pass", "b": "fail", "z": "pass"},
                                               "flags": ["late"]}})
    grade = {"total": 84.0, "flags": ["ignored-notebook"],
             "parts": [{"items": [{"id": "a", "status": "pass", "points": 10},
                                  {"id": "b", "status": "partial", "points": 2.5}]}],
             "bonus": {"items": [{"id": "z", "status": "pass", "points": 5}]}}
    result = compare(sample, grade)
    assert result.total == 84.0 and result.expected_total == 82
    assert result.differences == ("total 84, expected 82", "item b: partial (2.5 points), expected fail",
                                   "flag late missing (flags: ignored-notebook)")
    grade.update(total=82.0, flags=["late"])
    grade["parts"][0]["items"][1]["status"] = "fail"
    assert compare(sample, grade).differences == ()
    assert compare(sample, None).differences[0].startswith("no grade")


# ----------------------------------------------------------------------------- reference run


def _fake_lab(root: Path, train_src: str) -> Path:
    """A lab whose one reference trains nothing: it returns numbers from its seed."""
    folder = new_lab("fakelab", root)
    (folder / "reference" / "model.py").write_text(textwrap.dedent(train_src))
    return folder


def test_reference_run_reads_the_package_and_summarizes_by_the_results_shape(tmp_path: Path,
                                                                             tiny_datasets: Path) -> None:
    from grader.reference_run import run_reference

    plain = _fake_lab(tmp_path / "a", '''
        hyp = {"epochs": 3, "batch_size": 10}
        def train(*, data, device, seed, epochs=None):
            assert set(data) == {"mnist"} and data["mnist"].name == "MNIST"
            return {"test_accuracy": 0.5 + seed / 10, "test_loss": 1.0, "classes": ["a", "b"],
                    "per_class_accuracy": {"a": 0.4, "b": 0.6}, "train_images": 100,
                    "history": {"test_accuracy": [0.1, 0.5 + seed / 10], "wall_s": [1.0], "cpu_s": [2.0]}}
    ''')
    doc = run_reference(str(plain), data={"mnist": tiny_datasets}, device="cpu", seeds=2)
    part = doc["parts"]["fakelab-1"]
    assert doc["lab"] == "fakelab" and part["dataset"] == "mnist" and part["epochs"] == 3
    assert part["summary"]["test_accuracy"]["mean"] == pytest.approx(0.55)
    assert [p["epoch"] for p in part["summary"]["curve"]] == [0, 1] and part["summary"]["curve"][1]["batches"] == 10
    assert part["timing"]["cpu_per_epoch_s"] == 2.0

    study = _fake_lab(tmp_path / "b", '''
        hyp = {"epochs": 1}
        def train(*, data, device, seed, epochs=None):
            runs = [{"name": n, "lr": lr, "test_accuracy": acc, "accuracy_by_epoch": [acc],
                     "history": {"wall_s": [1.0], "cpu_s": [1.0]}} for n, lr, acc in (("slow", 0.01, 0.3), ("fast", 0.1, 0.6))]
            return {"runs": runs, "best": "fast", "best_accuracy": 0.6}
    ''')
    summary = run_reference(study, data={"mnist": tiny_datasets}, device="cpu")["parts"]["fakelab-1"]["summary"]
    assert summary["best"] == "fast" and [c["name"] for c in summary["configs"]] == ["slow", "fast"]


def test_reference_run_refuses_a_positional_train_and_a_missing_dataset(tmp_path: Path, tiny_datasets: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    folder = _fake_lab(tmp_path, '''
        hyp = {}
        def train(data, device, seed, epochs=None):
            return {}
    ''')
    assert main(["reference", "run", str(folder), "--data", str(tiny_datasets)]) == 2
    err = capsys.readouterr().err
    assert "model.py train's data, device, seed, epochs must be keyword-only" in err and len(err.splitlines()) == 1
    assert main(["reference", "run", str(folder)]) == 2
    assert "fakelab-1 needs the mnist dataset: pass --data mnist=DIR" in capsys.readouterr().err


def test_rubric_validate_takes_a_file_an_id_or_a_lab_folder(capsys: pytest.CaptureFixture) -> None:
    for arg in ("labs/lab1/rubric.yaml", "LAB_1", str(REPO / "labs" / "lab1")):
        assert main(["rubric", "validate", str(REPO / arg) if arg.startswith("labs/") else arg]) == 0
        assert capsys.readouterr().out.startswith("lab1: LAB01")
    assert main(["rubric", "validate", "nope.yaml"]) == 2
    assert "rubric nope.yaml does not exist" in capsys.readouterr().err


def test_a_lab_with_handout_and_custom_check_is_graded_and_rescored_from_its_folder(tmp_path: Path) -> None:
    """OUT/rubric.yaml is a copy: the handout and the custom check's file are read from the lab
    folder settings.json records, in the grade and in every rescore (saved mode, no kernel)."""
    import zipfile

    import nbformat

    lab = _lab_with_custom_check(tmp_path)
    (lab / "mychecks.py").write_text(textwrap.dedent('''
        from grader.checks.base import Outcome
        def always(ctx, args):
            return Outcome("pass", 1.0, "the course's own check ran from the lab folder")
    '''))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hello')")]
    subs = tmp_path / "subs"
    subs.mkdir()
    with zipfile.ZipFile(subs / "dllab_0000001.zip", "w") as zf:
        zf.writestr("mnist.ipynb", nbformat.writes(nb))
        zf.writestr("report.md", "# Results\nwords\n")
    out = tmp_path / "out"
    assert main(["grade", str(subs), "--lab", str(lab), "--mode", "saved", "--no-pdf", "--workers", "1",
                 "--out", str(out)]) == 0

    def own_item() -> dict:
        grade = json.loads((out / "grades" / "0000001.json").read_text())
        return next(i for p in grade["parts"] for i in p["items"] if i["id"] == "customlab-1-own")

    assert own_item()["status"] == "pass"
    assert main(["rescore", str(out), "--no-pdf", "--workers", "1"]) == 0
    assert own_item()["status"] == "pass"
    ta = tmp_path / "ta"  # a TA's edited copy, with its own check file beside it
    shutil.copytree(lab, ta)
    (ta / "mychecks.py").write_text((lab / "mychecks.py").read_text().replace('"pass", 1.0', '"fail", 0.0'))
    assert main(["rescore", str(out), "--rubric", str(ta / "rubric.yaml"), "--no-pdf", "--workers", "1"]) == 0
    assert own_item()["status"] == "fail"
    assert main(["rescore", str(out), "--no-pdf", "--workers", "1"]) == 0
    assert own_item()["status"] == "fail", "the edited rubric's folder is kept for later rescores"


def test_lab_new_refuses_an_id_that_normalizes_to_an_existing_lab(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`lab_1` and `lab1` are the shipped lab1's id; `my_lab` is the id of a lab already in the
    target folder or in a --labs-dir (tester 14's finding 3)."""
    for lab_id in ("lab_1", "lab1"):
        assert main(["lab", "new", lab_id, "--dir", str(tmp_path / "new")]) == 2
        err = capsys.readouterr().err
        assert f"lab id '{lab_id}' is the id of the lab in {(REPO / 'labs' / 'lab1').resolve()}" in err
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())
    new_lab("my-lab", tmp_path / "a")
    with pytest.raises(LabError, match=r"is the id of the lab in .*a/my-lab"):
        new_lab("my_lab", tmp_path / "a")
    with pytest.raises(LabError, match=r"is the id of the lab in .*a/my-lab"):
        new_lab("mylab", tmp_path / "b", extra=[tmp_path / "a"])
    assert new_lab("mylab", tmp_path / "b").name == "mylab", "a folder --lab ID does not search"


def test_validate_by_path_warns_and_list_notes_a_lab_shadowed_by_the_same_id(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(REPO / "labs" / "lab1", tmp_path / "mine" / "lab_1")
    assert main(["lab", "validate", str(tmp_path / "mine" / "lab_1")]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and f"`--lab lab1` picks {(REPO / 'labs' / 'lab1').resolve()}" in out
    assert "ok  lab1" in out
    new_lab("hw2", tmp_path / "dup")
    shutil.copytree(tmp_path / "dup" / "hw2", tmp_path / "elsewhere" / "hw2")
    assert main(["lab", "list", "--labs-dir", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out
    assert out.count("lab1\tLAB01") == 2, "both lab1s are listed"
    assert f"note: shadowed: `lab1` in {(tmp_path / 'mine' / 'lab_1').resolve()} has the same id" in out
    assert "--lab lab1` picks that one" in out
    assert main(["lab", "validate", str(tmp_path / "elsewhere" / "hw2"), "--labs-dir", str(tmp_path / "dup")]) == 0
    assert f"picks {(tmp_path / 'dup' / 'hw2').resolve()}" in capsys.readouterr().out
    assert main(["lab", "validate", str(tmp_path / "elsewhere" / "hw2")]) == 0
    assert "warning" not in capsys.readouterr().out, "no other hw2 where --lab looks"


@pytest.mark.parametrize("ret, expected", [
    ('{"acc": 0.9}', "train() returned no `test_accuracy` (keys: acc)"),
    ('{"test_accuracy": 79.0}', "`test_accuracy` is 79.0, expected a fraction 0..1 (accuracies are fractions"),
    ('[0.9]', "train() returned list, expected a dict"),
    ('{"test_accuracy": 0.8, "test_loss": "low", "history": {"test_accuracy": [0.1, 80]}}',
     "`test_loss` is 'low', expected a number >= 0; `history.test_accuracy` must be a list of fractions"),
    ('{"runs": [{"name": "a", "test_accuracy": 0.5}], "best": "b"}', "`best` is 'b', expected the name of one of `runs`"),
])
def test_reference_run_checks_what_train_returns(ret: str, expected: str, tmp_path: Path, tiny_datasets: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """A wrong result is a one-line error naming the file, the key and what was expected, not a
    crash in the CLI nor a percentage written as expected metrics (tester 14's finding 7)."""
    folder = _fake_lab(tmp_path, f'''
        hyp = {{}}
        def train(*, data, device, seed, epochs=None):
            result = {ret}
            return result
    ''')
    assert main(["reference", "run", str(folder), "--data", str(tiny_datasets), "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "model.py (part fakelab-1, seed 0)" in err and expected in err, err
    assert not (tmp_path / "e.json").exists()


def test_validate_sees_a_train_that_returns_nothing_or_a_dict_without_test_accuracy(tmp_path: Path) -> None:
    folder = _fake_lab(tmp_path / "a", '''
        hyp = {}
        def train(*, data, device, seed, epochs=None):
            def helper():
                return 1
            print("trained")
    ''')
    assert any("train returns nothing" in p for p in _problems(folder)), _problems(folder)
    folder = _fake_lab(tmp_path / "b", '''
        hyp = {}
        def train(*, data, device, seed, epochs=None):
            return {"acc": 0.9, "loss": 1.0}
    ''')
    assert any("train returns a dict without `test_accuracy`" in p and "acc, loss" in p for p in _problems(folder))
    folder = _fake_lab(tmp_path / "c", '''
        hyp = {}
        def train(*, data, device, seed, epochs=None):
            metrics = {"test_accuracy": 0.5}
            return {**metrics, "classes": []}
    ''')
    assert _problems(folder) == []


def test_validate_reports_an_accuracy_item_whose_part_has_no_reference(skeleton: Path) -> None:
    """`reference_part: report` names a part without a reference: graded against the floor
    alone, so lab validate says so and lists the parts that have one (tester 14's finding 12).
    An item in a part with no reference and no reference_part is the same mistake."""
    assert _problems(skeleton) == []
    rubric = skeleton / "rubric.yaml"

    def add(doc: dict, params: dict) -> None:
        doc["parts"].append({"id": "mylab-2", "title": "Report", "points": 0, "items": []})
        item = {"id": "mylab-2-acc", "title": "Accuracy", "check": "accuracy_vs_reference", "points": 0,
                "params": {"floor": 0.3, **params}}
        doc["parts"][-1]["items"].append(item)

    original = rubric.read_text()
    _edit_yaml(rubric, lambda d: add(d, {"reference_part": "mylab-2"}))
    (problem,) = _problems(skeleton)
    assert "item mylab-2-acc: accuracy_vs_reference compares with the reference of its params.reference_part " \
           "`mylab-2`" in problem and "parts with a reference: mylab-1" in problem and "floor alone" in problem
    rubric.write_text(original)
    _edit_yaml(rubric, lambda d: add(d, {}))
    (problem,) = _problems(skeleton)
    assert "its own part `mylab-2` (no params.reference_part)" in problem
    rubric.write_text(original)
    _edit_yaml(rubric, lambda d: add(d, {"reference_part": "mylab-1"}))
    assert _problems(skeleton) == []


def test_lab_yaml_problems_read_like_rubric_problems(skeleton: Path) -> None:
    """Key path, line, "did you mean" for a misspelt key, the id rule in words (finding 10)."""
    text = (skeleton / "lab.yaml").read_text()
    (skeleton / "lab.yaml").write_text(text.replace("id: mylab", "id: My-Lab", 1).replace("  sections:", "  section:")
                                       + "refrences: {}\n")
    with pytest.raises(LabError) as err:
        load_lab(skeleton)
    msg = str(err.value)
    assert "lab.yaml: 3 problems" in msg and "did you mean `references`?" in msg and "did you mean `sections`?" in msg
    n = len(text.splitlines())
    assert f"refrences (line {n + 1}): unknown key `refrences`" in msg and "report.section (line 18)" in msg
    assert "id (line 5): the lab id must be lower-case letters" in msg and "write `my-lab`" in msg
    assert "Extra inputs" not in msg and "String should match" not in msg
    (skeleton / "lab.yaml").write_text(text + "title: again\n")
    with pytest.raises(LabError, match=r"title \(line \d+\): key `title` appears twice"):
        load_lab(skeleton)


def test_labs_dir_works_wherever_lab_is_taken_and_pack_suggests_the_lab_as_given(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """grade, check, pack and demo take --labs-dir (one argparse helper); `pack --lab DIR`
    suggests `check ... --lab DIR`, `pack --lab ID --labs-dir D` the same pair (finding 8)."""
    from grader.cli import build_parser

    parser = build_parser()
    for argv in (["grade", "x"], ["check", "x"], ["pack", "x", "--student-id", "1"], ["demo"],
                 ["reference", "run", "x"], ["lab", "validate", "x"], ["lab", "new", "x"], ["rubric", "validate", "x"]):
        assert parser.parse_args(argv + ["--labs-dir", "d"]).labs_dir == [Path("d")], argv
    lab = shutil.copytree(REPO / "labs" / "lab1", tmp_path / "labs" / "hw2")
    _edit_yaml(lab / "lab.yaml", lambda d: d.update(id="hw2"))
    _edit_yaml(lab / "rubric.yaml", lambda d: d.update(lab="hw2"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "lab1.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    for i, given in enumerate(([str(lab)], ["hw2", "--labs-dir", str(tmp_path / "labs")], ["HW_2", "--labs-dir",
                                                                                          str(tmp_path / "labs")])):
        out = tmp_path / f"out{i}"
        assert main(["pack", str(work), "--student-id", "1100001", "--lab", *given, "--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert f"next: dllab check {out / 'dllab_1100001.zip'} --lab {' '.join(given)} --quick" in text, text
    assert main(["pack", str(work), "--student-id", "1100001", "--lab", "hw2", "--out", str(tmp_path / "o")]) == 2
    assert "unknown lab 'hw2'" in capsys.readouterr().err, "not without its --labs-dir"
