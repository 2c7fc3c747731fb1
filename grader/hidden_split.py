"""Grader-only hidden test splits: images from the test split's distribution no student saw.

A model that memorized the (mounted, labelled) test split scores 100 % on it and chance on
fresh images of the same distribution; an honest model scores the same on both, up to
sampling noise. So the independent evaluation also scores a hidden split the sandbox never
mounts (grader.verify), and a large gap is flagged for the TA (`hidden-gap`).

Layout: a folder laid out like the dataset's own folder, holding only its test split:
CIFAR-10 `test_batch` (+ `batches.meta`), MNIST `raw/t10k-images-idx3-ubyte` and
`raw/t10k-labels-idx1-ubyte`, Food-11 `evaluation/<class>_<n>.jpg`. `dllab data synth --out
DIR` writes one per verified dataset under `DIR/dllab-hidden/<dataset folder>/`, from the same
generator and distribution as the visible split (its own random stream, so the visible files
stay byte-identical). `grade` finds that sibling of a `--data` folder by itself; for a real
dataset the TA names the split kept back with `--hidden NAME=DIR`. Either way the folder must
not lie inside anything the sandbox mounts (checked by `check_hidden`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from grader.datasets import (
    _FOLDER,
    _STYLE,
    CIFAR10_CLASSES,
    DATASETS,
    _balanced,
    _Files,
    _food11_counts,
    _idx,
    _py2_pickle,
    _refuse_existing,
    _render,
    _render_digit,
    _staged,
    _write_manifest,
)
from grader.errors import DatasetError

HIDDEN_DIR = "dllab-hidden"
"""The folder beside the datasets (never inside one) that `data synth` writes hidden splits to."""
VERIFIED = ("cifar10", "food11", "mnist")
"""The datasets the independent evaluation rebuilds, hence those with a hidden split."""
_STREAM = 1  # the random stream of a hidden split: [seed, dataset index, _STREAM]


def default_folder(dataset_folder: Path) -> Path:
    """Where `data synth` puts the hidden split of the dataset in `dataset_folder` (its own
    folder, as grader.datasets.locate gives it): `<parent>/dllab-hidden/<folder name>`."""
    return Path(dataset_folder).parent / HIDDEN_DIR / Path(dataset_folder).name


def hidden_data_folder(name: str, folder: Path) -> Path:
    """The folder grader.verify.data.read_split reads for dataset `name`'s hidden split."""
    return Path(folder) / "evaluation" if name == "food11" else Path(folder)


def is_hidden_split(name: str, folder: Path) -> bool:
    """Whether `folder` holds a hidden split of `name` in the layout above."""
    folder = Path(folder)
    if name == "cifar10":
        return (folder / "test_batch").is_file()
    if name == "mnist":
        return all((folder / "raw" / f).is_file() for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    if name == "food11":
        return (folder / "evaluation").is_dir()
    return False


def in_root(root: Path) -> dict[str, Path]:
    """The hidden splits in `root` (laid out like `DIR/dllab-hidden/`): name -> folder."""
    return {name: Path(root) / _FOLDER[name] for name in VERIFIED
            if is_hidden_split(name, Path(root) / _FOLDER[name])}


def _write(name: str, files: _Files, rng: np.random.Generator, size: str) -> dict[str, int]:
    from grader.datasets import _COUNTS

    if name == "cifar10":
        n = _COUNTS[size]["cifar10"][1]
        labels = _balanced(rng, n, 10)
        pixels = np.concatenate([_render(rng, labels[i:i + 1000], 10, 32, 32, _STYLE["cifar10"])
                                 for i in range(0, n, 1000)])
        batch = {"batch_label": "hidden testing batch 1 of 1", "labels": labels.tolist(),
                 "data": pixels.transpose(0, 3, 1, 2).reshape(n, 3072),
                 "filenames": [f"{CIFAR10_CLASSES[c]}_h_{i:06d}.png" for i, c in enumerate(labels.tolist())]}
        files.put("test_batch", _py2_pickle(batch), images=n)
        files.put("batches.meta", _py2_pickle({"num_cases_per_batch": n, "label_names": list(CIFAR10_CLASSES),
                                               "num_vis": 3072}), images=0)
        return {"test": n}
    if name == "mnist":
        n = _COUNTS[size]["mnist"][1]
        labels = _balanced(rng, n, 10).astype(np.uint8)
        files.put("raw/t10k-images-idx3-ubyte", _idx(np.stack([_render_digit(rng, d) for d in labels])), n)
        files.put("raw/t10k-labels-idx1-ubyte", _idx(labels), images=0)
        return {"test": n}
    counts = _food11_counts(size)
    for c in range(11):
        for k in range(counts[c][2]):
            files.jpeg(f"evaluation/{c}_{k}.jpg", rng, c, 11, size, _STYLE["food11"])
    return {"evaluation": sum(row[2] for row in counts)}


def synth_hidden(out: Path, *, size: str, seed: int, names: Sequence[str], overwrite: bool = False) -> dict[str, Path]:
    """Write the hidden test split of each verified dataset in `names` under out/dllab-hidden/;
    return name -> folder. The folder is made 0700: only the grader reads it."""
    names = [n for n in names if n in VERIFIED]
    root = Path(out) / HIDDEN_DIR
    for name in names:
        _refuse_existing(root / _FOLDER[name], overwrite)
    made = {}
    for name in names:
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        rng = np.random.default_rng([seed, DATASETS.index(name), _STREAM])
        with _staged(root / _FOLDER[name], overwrite=overwrite) as tmp:
            files = _Files(tmp, lambda k=1: None)
            splits = _write(name, files, rng, size)
            _write_manifest(tmp, {"name": name, "hidden": True, "synthetic": True, "size": size, "seed": seed,
                                  "splits": splits, "files": files.entries})
        made[name] = root / _FOLDER[name]
    return made


def resolve_hidden(data: Mapping[str, str], given: Mapping[str, Path]) -> dict[str, str]:
    """Dataset name -> hidden split folder: the one given (`--hidden NAME=DIR`, which must be
    a hidden split), else the `dllab-hidden` sibling of the dataset's folder when it holds one.
    Raises DatasetError for a given folder that is not a hidden split, or one the sandbox sees."""
    out: dict[str, str] = {}
    for name, folder in given.items():
        if name not in VERIFIED:
            raise DatasetError(f"--hidden {name}: the grader verifies only {', '.join(VERIFIED)}")
        path = Path(folder)
        if (path / _FOLDER[name]).is_dir() and not is_hidden_split(name, path):
            path = path / _FOLDER[name]  # a root holding it, as for --data
        if not is_hidden_split(name, path):
            raise DatasetError(f"--hidden {name}={folder}: no hidden {name} test split there "
                               f"(expected the layout of grader.hidden_split)")
        out[name] = str(path.resolve())
    for name, folder in data.items():
        if name in VERIFIED and name not in out and is_hidden_split(name, default_folder(Path(folder))):
            out[name] = str(default_folder(Path(folder)).resolve())
    check_hidden(out.values(), [*data.values(), *map(str, _python_roots())])
    return out


def _python_roots() -> list[Path]:
    from grader.sandbox import python_roots

    return python_roots()


def check_hidden(hidden: Iterable[str], visible: Iterable[str]) -> None:
    """Raise DatasetError when a hidden split lies inside a folder the sandbox mounts (a dataset
    folder, the Python installation): students would see it, so it would not be hidden."""
    seen = [Path(v).resolve() for v in visible]
    for folder in hidden:
        path = Path(folder).resolve()
        for v in seen:
            if path == v or v in path.parents:
                raise DatasetError(f"the hidden test split {path} is inside {v}, which the sandbox mounts for "
                                   f"students: move it out (e.g. beside the dataset folder)")
