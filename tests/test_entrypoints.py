"""Which .py files of a submission run as scripts: decided by reading the code, never running it."""

from __future__ import annotations

from pathlib import Path

import nbformat

from grader.entrypoints import plan_runs, references


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".ipynb"):
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Lab")]
                                          + [nbformat.v4.new_code_cell(c) for c in text.split("\n#--\n")])
            nbformat.write(nb, path)
        else:
            path.write_text(text)
    return root


def _plan(root: Path, files: dict[str, str]):
    _tree(root, files)
    return plan_runs(root, sorted(f for f in files if f.endswith(".ipynb")),
                     sorted(f for f in files if f.endswith(".py")))


TRAINING = "import torch\nfor epoch in range(2):\n    print(epoch)\n"


def test_a_module_the_notebook_imports_is_not_run_as_a_script(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"part1/lab1-1.ipynb": "%matplotlib inline\nimport mynet\n#--\nnet = mynet.Net()",
                            "part1/mynet.py": "import torch\nclass Net(torch.nn.Module):\n    pass\nprint('loaded')\n"})
    assert plan.run == ("part1/lab1-1.ipynb",)
    assert "imported by part1/lab1-1.ipynb" in plan.not_run["part1/mynet.py"]


def test_packages_and_from_imports(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"lab.ipynb": "from models.net import Net\nfrom data import loaders",
                            "models/__init__.py": "", "models/net.py": "X = 1\nprint(X)\n",
                            "data.py": "print('loading')\nloaders = []\n", "train.py": TRAINING})
    assert plan.run == ("lab.ipynb", "train.py")
    assert set(plan.not_run) == {"models/__init__.py", "models/net.py", "data.py"}
    assert "__init__.py is a package or helper module" in plan.not_run["models/__init__.py"]


def test_a_script_imported_by_another_script_runs_only_inside_it(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"main.py": "from model import build\nif __name__ == '__main__':\n    build()\n",
                            "model.py": "def build():\n    return 1\nif __name__ == '__main__':\n    print(build())\n"})
    assert plan.run == ("main.py",)
    assert "imported by main.py" in plan.not_run["model.py"]


def test_scripts_a_notebook_runs_itself(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"lab.ipynb": "%run prepare.py\n#--\n!python train.py --epochs 2",
                            "prepare.py": TRAINING, "train.py": TRAINING, "other.py": TRAINING})
    assert plan.run == ("lab.ipynb", "other.py")
    assert "run by lab.ipynb (`prepare.py`)" in plan.not_run["prepare.py"]
    assert "run by lab.ipynb (`train.py`)" in plan.not_run["train.py"]


def test_helpers_and_definition_only_files_are_not_run(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"lab.ipynb": "print(1)",
                            "utils.py": "def f():\n    return 1\nprint('side effect')\n",
                            "layers.py": '"""Layers."""\nimport torch\nK = 3\ntry:\n    import tqdm\nexcept ImportError:\n'
                                         '    tqdm = None\ndef conv():\n    return torch.nn.Conv2d(3, 8, K)\n',
                            "train.py": "def main():\n    print('hi')\n\nif __name__ == '__main__':\n    main()\n",
                            "broken.py": "def f(:\n"})
    assert plan.run == ("lab.ipynb", "broken.py", "train.py")  # a file that does not parse is run: its error shows
    assert "helper module by its name" in plan.not_run["utils.py"]
    assert "only defines" in plan.not_run["layers.py"]


def test_a_submission_of_scripts_only_still_runs_something(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"lab1.py": "import torch\ndef train():\n    pass\n",
                            "net.py": "class Net:\n    pass\n", "run.py": "import net\nnet.Net()\n"})
    assert plan.run == ("run.py",)  # net.py is imported; lab1.py defines only
    only_defs = _plan(tmp_path / "b", {"lab1.py": "def train():\n    pass\n"})
    assert only_defs.run == ("lab1.py",) and not only_defs.not_run


def test_references_tolerate_syntax_errors_and_dynamic_imports() -> None:
    mods, paths = references("import os, mynet as m\nfrom . import helpers\nx = (\n")
    assert {"os", "mynet", "helpers"} <= mods
    mods, paths = references("net = importlib.import_module('mynet')\nexec(open('setup_data.py').read())")
    assert "mynet" in mods and "setup_data.py" in paths
