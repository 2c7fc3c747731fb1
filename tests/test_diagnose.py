"""How a run ended and what the grader lacked, from in-memory replies, statuses and notebooks."""

from __future__ import annotations

import dataclasses

import nbformat
import pytest

from grader.diagnose import (
    cell_label,
    deferral_message,
    environment_problems,
    error_text,
    exit_request,
    pip_installs,
    process_ending,
    run_flags,
)


def _cells(*sources: str, markdown_first: bool = True) -> list:
    cells = [nbformat.v4.new_markdown_cell("# Lab")] if markdown_first else []
    return cells + [nbformat.v4.new_code_cell(s) for s in sources]


# ---------------------------------------------------------------- cell names


def test_cell_label_is_the_number_the_student_sees_not_the_list_index() -> None:
    cells = _cells("import os", "", "exit()")
    cells.insert(2, nbformat.v4.new_markdown_cell("text"))
    # index 4 is the 3rd code cell, but the empty one is never run: In [2]
    assert cell_label(cells, 4) == "cell 2"
    cells[4].execution_count = 7  # what the kernel really showed wins
    assert cell_label(cells, 4) == "cell 7"
    assert cell_label(cells, 0) == "cell #1"  # a markdown cell has no In [n]


# ------------------------------------------------------------ exits and crashes


@pytest.mark.parametrize(("reply", "code", "words"), [
    ({"status": "ok", "payload": [{"source": "ask_exit", "keepkernel": False}]}, 0, "exit()"),
    ({"status": "error", "ename": "SystemExit", "evalue": ""}, 0, "sys.exit()"),
    ({"status": "error", "ename": "SystemExit", "evalue": "0"}, 0, "sys.exit(0)"),
    ({"status": "error", "ename": "SystemExit", "evalue": "None"}, 0, "sys.exit()"),
    ({"status": "error", "ename": "SystemExit", "evalue": "3"}, 3, "status 3"),
    ({"status": "error", "ename": "SystemExit", "evalue": "usage: train.py"}, 1, "status 1"),
])
def test_exit_requests_the_kernel_survives(reply: dict, code: int, words: str) -> None:
    ending = exit_request(reply)
    assert ending is not None and ending.kind == "exit" and ending.code == code
    assert ending.clean == (code == 0) and words in ending.what


@pytest.mark.parametrize("reply", [
    {"status": "ok", "payload": [{"source": "ask_exit", "keepkernel": True}]},  # exit(keep_kernel=True)
    {"status": "ok", "payload": [{"source": "page", "data": {}}]},
    {"status": "error", "ename": "ValueError", "evalue": "0"},
    {},
])
def test_other_replies_are_not_exits(reply: dict) -> None:
    assert exit_request(reply) is None


@pytest.mark.parametrize(("returncode", "kind", "ename", "words"), [
    (0, "exit", "SystemExit", "os._exit(0)"),
    (3, "exit", "SystemExit", "exit status 3"),
    (139, "crash", "SIGSEGV", "segmentation fault"),   # bwrap: 128 + 11
    (-11, "crash", "SIGSEGV", "segmentation fault"),   # Popen: -11
    (134, "crash", "SIGABRT", "os.abort()"),
    (137, "crash", "SIGKILL", "out-of-memory killer"),
    (135, "crash", "SIGBUS", "/dev/shm"),
    (None, "crash", "KernelDied", "stopped answering"),
])
def test_process_endings(returncode: int | None, kind: str, ename: str, words: str) -> None:
    ending = process_ending(returncode)
    assert (ending.kind, ending.ename) == (kind, ename)
    assert words in ending.what
    assert ending.clean == (returncode == 0)


# ------------------------------------------------------ what the machine lacked


def _err(index: int, ename: str, evalue: str) -> dict:
    return {"index": index, "ename": ename, "evalue": evalue}


def test_missing_tqdm_is_a_missing_package_naming_the_module() -> None:
    cells = _cells("from tqdm import tqdm", "for i in tqdm(range(3)): pass")
    found = environment_problems([_err(1, "ModuleNotFoundError", "No module named 'tqdm'"),
                                  _err(2, "NameError", "name 'tqdm' is not defined")], cells)
    assert [(p.code, p.subject, p.cell, p.label) for p in found] == [("missing-package", "tqdm", 1, "cell 1")]
    assert "pip install tqdm" in found[0].message and "grade this student again" in found[0].message


def test_submodule_and_pip_install_in_the_notebook() -> None:
    cells = _cells("!pip install -q scikit-learn==1.2 wandb", "from sklearn.metrics import f1_score",
                   "import wandb.sdk")
    found = environment_problems([_err(2, "ModuleNotFoundError", "No module named 'sklearn'"),
                                  _err(3, "ModuleNotFoundError", "No module named 'wandb.sdk'")], cells)
    assert [p.subject for p in found] == ["sklearn", "wandb"]
    assert all("no network" in p.message and "cell 1" in p.message for p in found)
    assert "pip install scikit-learn" in found[0].message


def test_a_module_the_student_forgot_to_submit_is_not_the_graders_fault() -> None:
    """rt1 #7: `from mynet import Net`, no mynet.py in the zip: the student's missing file,
    not a package to install (it was `missing-package`, deferred as the machine's fault)."""
    cells = _cells("from mynet import Net", "net = Net()")
    err = [_err(1, "ModuleNotFoundError", "No module named 'mynet'"), _err(2, "NameError", "name 'Net' is not defined")]
    assert environment_problems(err, cells, submitted_modules=["mynet"]) == []
    [p] = environment_problems(err, cells)
    assert (p.code, p.subject, p.label) == ("missing-module", "mynet", "cell 1")
    assert "no module `mynet`" in p.message and "missing from the zip" in p.message
    assert "pip install mynet" not in p.message
    env = [dataclasses.asdict(p)]
    # flagged, and still the student's error: no deferral, the notebook error stands
    assert run_flags({"status": "error", "errors": err, "environment": env}) == {"missing-module", "notebook-error"}
    from grader.diagnose import ENVIRONMENT_FLAGS
    from grader.report.student import FLAG_TEXT

    assert "missing-module" not in ENVIRONMENT_FLAGS and "not in the zip" in FLAG_TEXT["missing-module"]


def test_an_own_package_folder_missing_is_a_missing_module_but_known_packages_are_not() -> None:
    cells = _cells("from models.resnet import ResNet18", "import torchsummary", "import utils_lab1")
    err = [_err(1, "ModuleNotFoundError", "No module named 'models'"),
           _err(2, "ModuleNotFoundError", "No module named 'torchsummary'"),
           _err(3, "ModuleNotFoundError", "No module named 'utils_lab1'")]
    found = environment_problems(err, cells)
    assert [(p.code, p.subject) for p in found] == [("missing-module", "models"), ("missing-package", "torchsummary"),
                                                  ("missing-module", "utils_lab1")]
    # an unknown name the notebook itself pip-installs is a package after all
    [p] = environment_problems([_err(2, "ModuleNotFoundError", "No module named 'somepkg'")],
                               _cells("!pip install somepkg", "import somepkg"))
    assert p.code == "missing-package" and "pip install somepkg" in p.message


@pytest.mark.parametrize(("ename", "evalue"), [
    ("RuntimeError", "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU"),
    ("AssertionError", "Torch not compiled with CUDA enabled"),
    ("RuntimeError", "No CUDA GPUs are available"),
    ("RuntimeError", "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False."),
])
def test_cuda_on_a_cpu_grader_needs_a_gpu(ename: str, evalue: str) -> None:
    cells = _cells("net = Net().cuda()", "x = x.to('cuda')")
    errs = [_err(1, ename, evalue), _err(2, ename, evalue)]
    found = environment_problems(errs, cells)
    assert [(p.code, p.cell) for p in found] == [("needs-gpu", 1)]  # once, at the first cell
    assert "--gpus" in found[0].message
    assert environment_problems(errs, cells, has_gpu=True) == []  # with a GPU it is the code's bug


def test_pip_installs_forms() -> None:
    found = pip_installs(["!pip install tqdm", "%pip install --upgrade seaborn>=0.12",
                          "!{sys.executable} -m pip install torchsummary", "%conda install -y pandas",
                          "print('pip install x')"])
    assert found == {"tqdm": 0, "seaborn": 1, "torchsummary": 2, "pandas": 3}


# ------------------------------------------------------------------ the flags


def test_flags_per_ending() -> None:
    exit_ev = {"status": "error", "stop": {"kind": "exit", "cell": 3},
               "errors": [{"index": 3, "ename": "SystemExit"}]}
    assert run_flags(exit_ev) == {"kernel-exit"}
    assert run_flags({"status": "killed", "stop": {"kind": "crash", "cell": 2},
                      "errors": [{"index": 2, "ename": "SIGSEGV"}]}) == {"kernel-crash"}
    assert run_flags({"status": "killed", "stop": {"kind": "limit", "cell": 2}}) == {"sandbox-limit"}
    assert run_flags({"status": "killed"}) == {"sandbox-limit"}  # evidence from before `stop`
    assert run_flags({"status": "timeout", "errors": [{"index": 1, "ename": "timeout"}]}) == {"sandbox-limit"}
    assert run_flags({"status": "error", "errors": [{"index": 1, "ename": "ValueError"}]}) == {"notebook-error"}
    assert run_flags({"status": "ok"}) == set()


def test_an_explained_failure_is_not_also_a_notebook_error() -> None:
    env = [{"code": "missing-package", "cell": 1}]
    cascade = [{"index": 1, "ename": "ModuleNotFoundError"}, {"index": 2, "ename": "NameError"}]
    assert run_flags({"status": "error", "errors": cascade, "environment": env}) == {"missing-package"}
    earlier = [{"index": 0, "ename": "ValueError"}, *cascade]
    assert run_flags({"status": "error", "errors": earlier, "environment": env}) == {"missing-package",
                                                                                     "notebook-error"}
    gpu = [{"code": "needs-gpu", "cell": 2}]
    assert run_flags({"status": "error", "errors": [{"index": 2, "ename": "RuntimeError"}],
                      "environment": gpu}) == {"needs-gpu"}


# ---------------------------------------------------------------- error wording


@pytest.mark.parametrize(("ename", "evalue", "words"), [
    ("KeyboardInterrupt", "", "KeyboardInterrupt (the cell was interrupted before it finished"),  # tester 1's 13
    ("StopIteration", None, "StopIteration (an iterator ran out of items)"),
    ("AssertionError", "  ", "AssertionError (an `assert` failed)"),
    ("MyError", "", "MyError (with no message)"),
    ("ZeroDivisionError", "division by zero", "ZeroDivisionError: division by zero"),
])
def test_an_error_with_no_message_is_worded_not_left_as_a_bare_colon(ename, evalue, words: str) -> None:
    text = error_text(ename, evalue)
    assert text.startswith(words) and not text.rstrip(" .").endswith(":")


def test_error_text_cuts_long_messages() -> None:
    assert error_text("ValueError", "x" * 500, 50) == "ValueError: " + "x" * 50


@pytest.mark.parametrize(("source", "own"), [
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", True),
    ("import os\nos.kill(os.getpid(), 9)", True),
    ("!kill -9 $PPID", True),
    ("import signal\nsignal.raise_signal(signal.SIGKILL)", True),
    ("x = [bytearray(1 << 30) for _ in range(64)]", False),  # the machine's OOM killer
    ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", False),  # another signal
])
def test_a_sigkill_the_cell_sends_itself_is_not_blamed_on_memory(source: str, own: bool) -> None:
    ending = process_ending(137, cell_source=source)
    assert (ending.kind, ending.ename) == ("crash", "SIGKILL")
    assert ("out-of-memory" not in ending.what) == own, ending.what
    assert ("sends SIGKILL itself" in ending.what) == own
    assert "sends SIGSEGV itself" in process_ending(-11, cell_source="os.kill(os.getpid(), signal.SIGSEGV)").what


@pytest.mark.parametrize(("module", "pip"), [("cv2", "opencv-python"), ("PIL", "pillow"),
                                             ("sklearn", "scikit-learn"), ("tqdm", "tqdm")])
def test_missing_package_names_the_pip_distribution(module: str, pip: str) -> None:
    [p] = environment_problems([_err(1, "ModuleNotFoundError", f"No module named '{module}'")],
                               _cells(f"import {module}"))
    assert p.code == "missing-package" and f"pip install {pip})" in p.message


@pytest.mark.parametrize("evalue", ["No module named 'google.colab'", "No module named 'google'"])
def test_google_colab_is_colab_only_not_a_package(evalue: str) -> None:
    cells = _cells("from google.colab import drive\ndrive.mount('/content/drive')", "print(1)")
    [p] = environment_problems([_err(1, "ModuleNotFoundError", evalue)], cells)
    assert (p.code, p.subject) == ("colab-only", "google.colab")
    assert "only on Google Colab" in p.message and "pip install" not in p.message
    # `google` alone, without google.colab in the cell, is an ordinary missing package
    [q] = environment_problems([_err(1, "ModuleNotFoundError", "No module named 'google'")],
                               _cells("import google.protobuf"))
    assert q.code == "missing-package"


@pytest.mark.parametrize("evalue", [
    "PyTorch is not linked with support for mps devices",
    "Could not run 'aten::empty.memory_format' with arguments from the 'MPS' backend.",
])
def test_device_mps_is_its_own_problem(evalue: str) -> None:
    cells = _cells("device = torch.device('mps')\nnet = Net().to(device)")
    [p] = environment_problems([_err(1, "RuntimeError", evalue)], cells)
    assert p.code == "needs-mps" and "only on a Mac" in p.message
    assert run_flags({"status": "error", "errors": [{"index": 1, "ename": "RuntimeError"}],
                      "environment": [{"code": "needs-mps", "cell": 1}]}) == {"needs-mps"}


@pytest.mark.parametrize(("source", "ename", "evalue", "words"), [
    ("net = torchvision.models.resnet18(pretrained=True)", "URLError",
     "<urlopen error [Errno -3] Temporary failure in name resolution>", "pretrained weights"),
    ("m = resnet18(weights='IMAGENET1K_V1')", "URLError", "<urlopen error [Errno -2] Name or service not known>",
     "pretrained weights"),
    ("ds = CIFAR10(root='./cifar_data', train=True, download=True)", "URLError",
     "<urlopen error [Errno -3] Temporary failure in name resolution>", "into `./cifar_data`"),
    ("r = requests.get('https://example.com/x.zip')", "ConnectionError",
     "HTTPSConnectionPool(host='example.com', port=443): Max retries exceeded", "needs the network"),
])
def test_needing_the_network_is_its_own_problem(source: str, ename: str, evalue: str, words: str) -> None:
    [p] = environment_problems([_err(1, ename, evalue), _err(2, "NameError", "name 'ds' is not defined")],
                               _cells(source, "print(len(ds))"))
    assert p.code == "needs-network" and words in p.message
    assert "no network" in p.message or "has none" in p.message
    assert run_flags({"status": "error", "errors": [{"index": 1, "ename": ename}, {"index": 2, "ename": "NameError"}],
                      "environment": [{"code": "needs-network", "cell": 1}]}) == {"needs-network"}


def test_an_ordinary_error_is_not_the_environment() -> None:
    assert environment_problems([_err(1, "ValueError", "device 'mps' is wrong")], _cells("x = 1")) == []
    assert environment_problems([_err(1, "KeyError", "'cuda'")], _cells("d['cuda']")) == []


def test_deferral_message_names_the_cell_and_the_lack() -> None:
    msg = deferral_message([{"code": "needs-gpu", "label": "cell 4", "subject": "CUDA"}], path="part1/lab1-1.ipynb")
    assert msg.startswith("This item was not graded automatically: cell 4 of `part1/lab1-1.ipynb` needs a CUDA GPU")
    assert deferral_message([{"code": "missing-package", "label": "cell 2", "subject": "cv2"}]).count("cv2") == 1
    assert deferral_message([{"code": "kernel-exit"}]) == ""


def test_a_file_the_grader_could_not_place_is_the_graders_reason() -> None:
    """rt1 #8: data/Food-11/notes.txt lay under the dataset mount, so it was not placed; the
    cell reading it failed for the grader's reason, not the student's."""
    cells = _cells("import torchvision", "print(open('data/Food-11/notes.txt').read())", "print(classes)")
    err = [_err(2, "FileNotFoundError", "[Errno 2] No such file or directory: 'data/Food-11/notes.txt'"),
           _err(3, "NameError", "name 'classes' is not defined")]
    [p] = environment_problems(err, cells, not_placed=["data/Food-11/notes.txt"])
    assert (p.code, p.subject, p.label) == ("files-not-placed", "data/Food-11/notes.txt", "cell 2")
    assert "could not place" in p.message
    assert run_flags({"status": "error", "errors": err, "environment": [dataclasses.asdict(p)]}) == {"files-not-placed"}
    assert "could not place" in deferral_message([dataclasses.asdict(p)], path="lab1-1.ipynb")
    # any other missing file is still the student's
    assert environment_problems(err, cells, not_placed=["data/Food-11/other.txt"]) == []


def test_a_file_not_placed_is_found_from_the_notebooks_folder_and_by_absolute_path() -> None:
    cells = _cells("x = open('./data/Food-11/notes.txt')", "y = open('/tmp/work/submission/part1/data/Food-11/a.csv')")
    rel = [_err(1, "FileNotFoundError", "[Errno 2] No such file or directory: './data/Food-11/notes.txt'")]
    hidden = ["part1/data/Food-11/notes.txt", "part1/data/Food-11/a.csv"]
    assert [p.code for p in environment_problems(rel, cells, not_placed=hidden, workdir="part1")] == ["files-not-placed"]
    absolute = [_err(2, "FileNotFoundError",
                     "[Errno 2] No such file or directory: '/tmp/work/submission/part1/data/Food-11/a.csv'")]
    [p] = environment_problems(absolute, cells, not_placed=hidden, workdir="part1")
    assert p.subject == "part1/data/Food-11/a.csv"
    # an absolute path elsewhere (a Colab drive) is not the grader's placement
    colab = [_err(1, "FileNotFoundError", "[Errno 2] No such file or directory: '/content/drive/data/Food-11/notes.txt'")]
    assert environment_problems(colab, cells, not_placed=hidden, workdir="part1") == []


def test_a_shell_download_before_a_missing_file_needs_the_network() -> None:
    """rt1 #9: `!wget -q https://...` fails silently without a network, then torch.load finds nothing."""
    cells = _cells("!wget -q https://example.org/lab1/weights.pth", "import torch",
                   "net.load_state_dict(torch.load('weights.pth'))")
    err = [_err(3, "FileNotFoundError", "[Errno 2] No such file or directory: 'weights.pth'")]
    [p] = environment_problems(err, cells)
    assert (p.code, p.label) == ("needs-network", "cell 3")
    assert "cell 1 downloads with `!wget -q https://example.org/lab1/weights.pth`" in p.message
    assert "found no `weights.pth`" in p.message
    assert run_flags({"status": "error", "errors": err, "environment": [dataclasses.asdict(p)]}) == {"needs-network"}
    # without a download before it, a missing file is the student's own error
    assert environment_problems(err, _cells("import torch", "x = 1", "torch.load('weights.pth')")) == []


@pytest.mark.parametrize(("command", "opened"), [
    ("!gdown 1AbCdEf -O model.pt", "model.pt"),
    ("!curl -L -o food.zip https://x.org/food.zip\n!unzip -q food.zip", "food/train.csv"),
    ("%kaggle datasets download -d someone/food11", "food11/labels.csv"),
    ("!git clone https://github.com/someone/lab1-helpers", "lab1-helpers/classes.txt"),
])
def test_other_shell_downloads_are_named(command: str, opened: str) -> None:
    cells = _cells("import os", command, f"open('{opened}')")
    err = [_err(3, "FileNotFoundError", f"[Errno 2] No such file or directory: '{opened}'")]
    [p] = environment_problems(err, cells)
    assert p.code == "needs-network" and f"cell 2 downloads with `{command.splitlines()[0]}`" in p.message
