"""Why a run went wrong, in words a TA can act on: how the kernel ended (an exit the
student's code asked for, a crash, a limit) and what the grading machine lacked (a package,
a GPU, the network).

Pure functions over cell records, execute replies, exit statuses and notebook sources: no
kernel and no I/O, so each rule is tested on in-memory data (tests/test_diagnose.py).
`execute` uses them while a run is going on, `pipeline` to set the grade's flags.

Flags (codes on the Grade) and what the TA can do about each:

* `kernel-exit`: the code ended its own kernel (`exit()`, `quit()`, `sys.exit()`, `raise
  SystemExit`, `os._exit()`) before its last cell, or with a failure status; the cells after
  it did not run. Nothing the grader can change: remove the call and grade again if it was
  left in by mistake.
* `kernel-crash`: the kernel was killed by a signal the grader did not send (a segmentation
  fault in a C extension, `os.abort()`, the machine's out-of-memory killer).
* `sandbox-limit`: a limit of the rubric's `limits:` stopped a cell or the run (time, memory,
  processes, disk, shared memory, output); the message names the limit and its rubric key. Also
  the run's share of its GPU's memory (`--runs-per-gpu`, grader.gpu) when CUDA ran out of it.
* `missing-package`: an import failed because the module is not installed on the grader
  (nor a file of the submission); install it into the grader's environment and grade again.
  Only for a known package (grader.diagnose.KNOWN_PACKAGES) or one the notebook pip-installs.
* `missing-module`: an import of a module that is neither in the submission nor a known
  package (`from mynet import Net`, no mynet.py in the zip): a file is probably missing from
  the zip, the student's mistake; the cells are graded as they ran, not deferred.
* `needs-gpu`: the code uses CUDA unconditionally and the run had no GPU; grade the
  student again on a GPU machine with `--gpus`.
* `needs-mps`: the code uses Apple's MPS device (`device='mps'`), which exists only on a Mac;
  no grading machine has it, so the TA grades what depends on it by hand.
* `colab-only`: the code imports `google.colab` (drive.mount, files.upload), which exists only
  on Google Colab; the TA grades what depends on it by hand.
* `needs-network`: the code downloads something (pretrained weights, a dataset into another
  folder than ./data, a file fetched with `!wget`/`curl`/`gdown`/`kaggle`/`git clone` that a
  later cell does not find) and the sandbox has no network; the TA grades what depends on it.
* `files-not-placed` (also a note, below): a cell failed reading a file of the submission the
  grader could not place where the code runs.

Items of a part whose notebook failed for one of these reasons are not failed: they go to
the TA (`manual`), the reason in their message (`deferred_item`).

Notes on a run (`RunResult.notes`), flags too, for what is no cell's error:

* `files-not-placed`: a file of the submission could not be put in the folder the code runs
  in (a dataset mount lies at its place, or the work quota was full); the message lists them.
* `process-cap`: the run touched its process limit for a moment; whatever tried to start a
  process or thread then failed (BlockingIOError), so results may be missing.
* `processes-left`: processes were still running after the last cell, even one (a
  background job, a fork bomb started late); the end of the run killed them.
* `process-cap` is not raised for a run the cap killed: `sandbox-limit` names that.
* `output-dropped`: the kernel sent an output the grader would not decode (JSON nested deeper
  than grader.jsondepth reads): it was replaced by a placeholder in its cell, the run went on.
* `sandbox-limit` (as a note): a step of the grader's after the last cell (the model's capture,
  the independent evaluation) ran out of the time it was given (grader.runbudget.finish_cut).
"""

from __future__ import annotations

import posixpath
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

StopKind = Literal["exit", "crash", "limit"]

STOP_FLAGS: dict[str, str] = {"exit": "kernel-exit", "crash": "kernel-crash", "limit": "sandbox-limit"}
"""The grade flag for each way a run can stop early."""

ENVIRONMENT_FLAGS = ("missing-package", "needs-gpu", "needs-mps", "colab-only", "needs-network", "files-not-placed")
NOTE_FLAGS = ("files-not-placed", "process-cap", "processes-left", "output-dropped", "sandbox-limit",
              "invalid-evidence")
STUDENT_FLAGS = ("missing-module",)
"""Problems found like ENVIRONMENT_FLAGS, but the student's: flagged, never deferred to the TA."""

FLAG_HELP: dict[str, str] = {
    "kernel-exit": "the code ended its own kernel (exit(), sys.exit(), os._exit()) before its last "
                   "cell or with a failure status; the cells after it did not run",
    "kernel-crash": "the kernel crashed (a signal the grader did not send: segmentation fault, "
                    "os.abort(), the machine's out-of-memory killer)",
    "missing-package": "a module the code imports is not installed on the grader; install it and "
                       "grade again",
    "missing-module": "the code imports a module that is neither in the submission nor a package the grader "
                      "knows: a file is probably missing from the zip; graded as it ran (if it is a PyPI "
                      "package, install it and grade again)",
    "needs-gpu": "the code needs a CUDA GPU and the run had none; grade again on a GPU machine with --gpus",
    "needs-mps": "the code uses Apple's MPS device (device='mps'), which only a Mac has; the items that "
                 "depend on it wait for a TA",
    "colab-only": "the code imports google.colab (drive.mount, files.upload), which exists only on Google "
                  "Colab; the items that depend on it wait for a TA",
    "needs-network": "the code downloads something (pretrained weights, a dataset into another folder than "
                     "./data) and the sandbox has no network; the items that depend on it wait for a TA",
    "files-not-placed": "some files of the submission were not placed in the folder the code runs in "
                        "(a dataset mount lies there, or the work quota was full); see the message",
    "process-cap": "the run reached its process limit for a moment: processes or threads started then "
                   "failed, so results may be missing",
    "processes-left": "processes were still running after the last cell (background jobs, a fork bomb); "
                      "they were killed when the run ended",
    "output-dropped": "the kernel sent an output nested deeper than the grader reads; it was replaced by a "
                      "placeholder and the run went on",
}
"""One line per flag this module raises, for the TA's views."""


@dataclass(frozen=True)
class Ending:
    """How a run stopped before its last cell, or how its kernel ended."""

    kind: StopKind
    what: str
    """What happened, to follow "cell 3 ...": "called exit()", "crashed with SIGSEGV (...)"."""
    ename: str
    """The name recorded as the cell's error: "SystemExit", the signal's name, "SandboxLimit"."""
    code: int | None = None
    """The exit status for an exit; None otherwise."""

    @property
    def clean(self) -> bool:
        """An exit with status 0: the code meant to stop there."""
        return self.kind == "exit" and self.code == 0


@dataclass(frozen=True)
class Problem:
    """Something the grading machine lacked, found from a failing cell."""

    code: str
    """An ENVIRONMENT_FLAGS code (`missing-package`, `needs-gpu`, ...) or a STUDENT_FLAGS one."""
    cell: int
    """The cell's index in the notebook (markdown cells count)."""
    label: str
    """The cell as the student sees it: "cell 3" (its execution count)."""
    subject: str
    """The missing module, or "CUDA"."""
    message: str
    """One or two sentences for the TA."""


# --------------------------------------------------------------------- cell names


# What an exception raised with no message means, when its name alone does not say.
_NO_MESSAGE = {
    "KeyboardInterrupt": "the cell was interrupted before it finished (a Stop/Interrupt, or the code "
                         "raised KeyboardInterrupt itself)",
    "StopIteration": "an iterator ran out of items",
    "AssertionError": "an `assert` failed",
}


def error_text(ename: object, evalue: object, limit: int = 120) -> str:
    """`ZeroDivisionError: division by zero`; for an exception with no message, what it
    means instead of a bare colon (`KeyboardInterrupt (the cell was interrupted ...)`)."""
    name = str(ename or "an error")
    value = str(evalue or "").strip()
    if value:
        return f"{name}: {value[:limit]}"
    why = _NO_MESSAGE.get(name)
    return f"{name} ({why})" if why else f"{name} (with no message)"


def cell_numbers(cells: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Index in the notebook -> the number the student sees in `In [n]` when the notebook is
    run top to bottom: each non-empty code cell counts once (markdown and empty cells don't)."""
    numbers: dict[int, int] = {}
    n = 0
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "code" and str(cell.get("source", "")).strip():
            n += 1
            numbers[i] = n
    return numbers


def cell_label(cells: Sequence[Mapping[str, Any]], index: int) -> str:
    """"cell 3": the execution count a cell had (or would have had), as the feedback names
    failing cells; "cell #7" (its position) only for a cell that is not a code cell."""
    count = cells[index].get("execution_count") if 0 <= index < len(cells) else None
    if isinstance(count, int) and count > 0:
        return f"cell {count}"
    number = cell_numbers(cells).get(index)
    return f"cell {number}" if number is not None else f"cell #{index + 1}"


# ------------------------------------------------------------ exits and crashes


def exit_request(reply: Mapping[str, Any]) -> Ending | None:
    """The exit a cell asked for while its kernel kept running, from its execute_reply content.

    `exit()`/`quit()` reach ipykernel as an `ask_exit` payload (ipykernel 7 keeps running,
    older ones stop 0.1 s after replying); `sys.exit(n)`/`raise SystemExit(n)` are caught by
    IPython and come back as an error named SystemExit whose value is the status.
    """
    for item in reply.get("payload") or ():
        if isinstance(item, Mapping) and item.get("source") == "ask_exit" and not item.get("keepkernel"):
            return Ending("exit", "called exit() (or quit())", "SystemExit", 0)
    if reply.get("status") == "error" and reply.get("ename") == "SystemExit":
        value = str(reply.get("evalue", "")).strip()
        if value in ("", "None", "0"):
            return Ending("exit", f"called sys.exit({'' if value == 'None' else value})", "SystemExit", 0)
        code = int(value) if re.fullmatch(r"-?\d+", value) else 1
        return Ending("exit", f"called sys.exit({value if code != 1 or value == '1' else repr(value)}), "
                              f"a failure exit with status {code}", "SystemExit", code)
    return None


_SIGNAL_WORDS = {
    "SIGSEGV": "a segmentation fault, usually from ctypes or a C extension",
    "SIGBUS": "a bus error: a C extension, or shared memory (/dev/shm) that ran out",
    "SIGILL": "an illegal instruction: a library built for another processor",
    "SIGFPE": "an arithmetic fault in C code",
    "SIGABRT": "an abort: os.abort() or a failed check inside C code",
    "SIGKILL": "killed from outside the grader's own limits, most likely by the machine's "
               "out-of-memory killer: the machine ran short of memory (fewer --workers may help)",
}


_SELF_SIGNAL = re.compile(r"\b(?:os\.kill|os\.killpg|signal\.raise_signal|os\.abort|kill\s+-(?:9|KILL|SIGKILL)\b)")


def sends_signal(source: str, name: str) -> bool:
    """Whether a cell's source sends signal `name` ("SIGKILL") itself: `os.kill(os.getpid(),
    signal.SIGKILL)`, `os.kill(pid, 9)`, `signal.raise_signal(...)`, `!kill -9 ...`."""
    if not _SELF_SIGNAL.search(source):
        return False
    number = getattr(signal, name, None)
    return name in source or (number is not None and re.search(rf"[,(]\s*{int(number)}\s*\)", source) is not None) \
        or (name == "SIGKILL" and re.search(r"kill\s+-(?:9|KILL)\b", source) is not None)


def process_ending(returncode: int | None, *, cell_source: str = "") -> Ending:
    """How the kernel ended, from the sandbox's exit status (bwrap exits with 128 + N when
    the process it runs was killed by signal N, as a shell does; Popen gives -N).
    `cell_source`, the code of the cell that was running: a signal it sends itself is
    named as such, not blamed on the machine (SIGKILL is otherwise the out-of-memory killer)."""
    if returncode is None:
        return Ending("crash", "stopped answering (its exit status could not be read)", "KernelDied")
    signum = -returncode if returncode < 0 else returncode - 128 if 128 < returncode <= 128 + 64 else 0
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        words = _SIGNAL_WORDS.get(name)
        if sends_signal(cell_source, name):
            words = f"the cell sends {name} itself, e.g. os.kill(os.getpid(), signal.{name})"
        return Ending("crash", f"crashed with {name}" + (f" ({words})" if words else ""), name)
    if returncode == 0:
        return Ending("exit", "ended the kernel with exit status 0 (os._exit(0) or exit() in an "
                              "older ipykernel)", "SystemExit", 0)
    return Ending("exit", f"ended the kernel with exit status {returncode} (os._exit({returncode}) "
                          f"or a library that exits the process)", "SystemExit", returncode)


# ------------------------------------------------------ the run's GPU memory

_GPU_OOM_WORDS = ("cuda out of memory", "cuda error: out of memory", "cublas_status_alloc_failed",
                  "cudnn_status_alloc_failed", "cudaerrormemoryallocation")


def gpu_out_of_memory(ename: str, evalue: str) -> bool:
    """A cell's error is CUDA running out of device memory: torch's OutOfMemoryError (its
    allocator's fraction or the GPU itself), cudaErrorMemoryAllocation (an MPS limit), cuBLAS's
    or cuDNN's failed allocation; never the host's memory."""
    text = f"{ename}: {evalue}".lower()
    return ename == "OutOfMemoryError" or any(w in text for w in _GPU_OOM_WORDS)


def gpu_memory_message(share: str) -> str:
    """The stop reason of a run whose GPU memory ran out; `share` as grader.gpu.GpuShare.words
    says it ("35942 MiB of GPU 1, 1/4"), empty when unknown."""
    if share:
        return f"the run's GPU memory share ({share}) was exhausted (CUDA out of memory)"
    return "the GPU's memory was exhausted (CUDA out of memory)"


# ------------------------------------------------------ what the machine lacked

_NO_MODULE = re.compile(r"No module named '([^']+)'")
_CUDA_WORDS = (
    "torch not compiled with cuda enabled", "found no nvidia driver", "no cuda gpus are available",
    "no cuda-capable device is detected", "cuda driver initialization failed",
    "attempting to deserialize object on a cuda device", "cuda is not available",
    "the nvidia driver on your system is too old", "cudagetdevicecount",
)
_PIP = re.compile(r"^\s*(?:!|%)\s*(?:\{[^}]*\}\s+-m\s+|python3?\s+-m\s+)?(?:pip3?|conda|mamba)\s+install\s+(.+)$",
                  re.MULTILINE)
_PIP_CALL = re.compile(r"\bpip3?['\"]?\s*,\s*['\"]install['\"]|-m\s+pip\s+install|\bpip3?\s+install\b")


def pip_installs(sources: Sequence[str]) -> dict[str, int]:
    """Packages a notebook tries to install (`!pip install x`, `%pip install x`, `%conda
    install x`, `!{sys.executable} -m pip install x`) -> the index of the first cell doing so."""
    found: dict[str, int] = {}
    for i, src in enumerate(sources):
        for m in _PIP.finditer(src):
            for word in m.group(1).split():
                if word.startswith("-") or "=" in word and word.startswith("--"):
                    continue
                name = re.split(r"[<>=!~\[;@ ]", word, maxsplit=1)[0].strip("'\"").lower()
                if name and name not in found:
                    found[name] = i
    return found


_DISTRIBUTIONS = {"scikit-learn": "sklearn", "opencv-python": "cv2", "opencv-python-headless": "cv2",
                  "pillow": "PIL", "pyyaml": "yaml", "python-docx": "docx", "beautifulsoup4": "bs4",
                  "scikit-image": "skimage", "tensorflow": "tensorflow", "pytorch-lightning": "pytorch_lightning",
                  "umap-learn": "umap", "python-dateutil": "dateutil", "protobuf": "google.protobuf"}
_PIP_NAME = {"cv2": "opencv-python", "PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml",
             "docx": "python-docx", "bs4": "beautifulsoup4", "skimage": "scikit-image", "umap": "umap-learn",
             "dateutil": "python-dateutil", "Crypto": "pycryptodome", "attr": "attrs", "fitz": "pymupdf"}
"""Modules whose pip distribution has another name (`import cv2` -> `pip install opencv-python`)."""


def _import_name(package: str) -> str:
    """A pip distribution name as the module it installs, for the common mismatches."""
    return _DISTRIBUTIONS.get(package, package.replace("-", "_"))


KNOWN_PACKAGES = frozenset({
    # what DL labs import besides the standard library: a missing one is the grader's to install
    "numpy", "pandas", "matplotlib", "seaborn", "scipy", "sklearn", "tqdm", "torch", "torchvision",
    "torchaudio", "torchtext", "torchsummary", "torchinfo", "torchstat", "torchviz", "torchmetrics", "timm",
    "albumentations", "tensorboard", "tensorboardX", "wandb", "PIL", "cv2", "skimage", "yaml", "h5py",
    "einops", "transformers", "datasets", "accelerate", "lightning", "pytorch_lightning", "thop", "ptflops",
    "plotly", "ipywidgets", "imageio", "requests", "gdown", "kaggle", "opendatasets", "natsort", "termcolor",
    "rich", "prettytable", "tabulate", "pynvml", "GPUtil", "psutil", "onnx", "onnxruntime", "keras",
    "tensorflow", "jax", "optuna", "ray", "mlflow", "graphviz", "hiddenlayer", "numba", "xgboost",
    "lightgbm", "catboost", "statsmodels", "sympy", "networkx", "openpyxl", "xlrd", "joblib", "umap", "bs4",
    "lxml", "nltk", "spacy", "gensim", "jieba", "fastai", "mmcv", "segmentation_models_pytorch",
    "efficientnet_pytorch", "pretrainedmodels", "torch_optimizer", "visdom", "imblearn", "captum",
    "pytorch_grad_cam", "shap", "lime", "kornia", "monai", "dill", "cloudpickle", "pydot", "Crypto", "attr",
    "fitz", "docx", "dateutil", "google", "IPython", "ipykernel", "tensorrt", "pycocotools", "torchsampler",
    "pytorch_model_summary", "colorama", "pyarrow", "polars", "tiktoken", "sentencepiece", "tokenizers",
    "safetensors", "huggingface_hub", "openai", "torch_lr_finder", "lr_finder", "torchnet",
})
"""Packages a lab's code may import that the grading machine could lack; an unknown module
missing from the submission is taken for a file left out of the zip (`missing-module`)."""


def pip_name(module: str) -> str:
    """What to `pip install` for a missing top-level module: `cv2` -> `opencv-python`."""
    return _PIP_NAME.get(module, module)


_MPS_WORDS = ("not linked with support for mps", "mps backend", "mps device", "'mps'", "mps is not available")
_NETWORK_WORDS = (
    "temporary failure in name resolution", "name or service not known", "network is unreachable",
    "failed to establish a new connection", "max retries exceeded", "nodename nor servname",
    "no address associated with hostname", "connection refused", "urlopen error", "getaddrinfo failed",
)
_NETWORK_ENAMES = ("URLError", "HTTPError", "ConnectionError", "gaierror", "SSLError", "ConnectTimeout",
                   "ReadTimeout", "ProxyError")
_WEIGHTS = re.compile(r"pretrained\s*=\s*True|weights\s*=\s*['\"A-Za-z]|load_state_dict_from_url|torch\.hub\.load|"
                      r"from_pretrained\(")
_DOWNLOAD_ROOT = re.compile(r"root\s*=\s*(['\"])([^'\"]*)\1")


_SHELL_DOWNLOAD = re.compile(r"^\s*[!%]\s*(?:(?:wget|curl|gdown|kaggle)\b|git\s+clone\b).*$", re.MULTILINE)
_MISSING_FILE = re.compile(r"No such file or directory: ['\"]([^'\"]+)['\"]")


def missing_file(evalue: str) -> str | None:
    """The path a FileNotFoundError (or an OSError like it) names, as the code wrote it."""
    m = _MISSING_FILE.search(evalue)
    return m.group(1) if m else None


def _relative(path: str, workdir: str) -> str:
    """A path the code used, relative to the submission's root (the run's working copy)."""
    from grader.sandbox import CWD  # sandbox imports nothing of ours; diagnose stays light

    if path.startswith(CWD + "/"):
        return path[len(CWD) + 1:]
    if path.startswith("/"):
        return path
    return posixpath.normpath(posixpath.join(workdir if workdir not in ("", ".") else "", path))


def _shell_download(sources: Sequence[str], upto: int, name: str) -> tuple[int, str] | None:
    """The shell download command (`!wget`, `!curl`, `!gdown`, `!kaggle`, `!git clone`) in a
    cell up to `upto` that most likely was to fetch the file `name`: one naming it, else the
    last one; (cell index, command)."""
    found = [(i, m.group(0).strip()) for i, src in enumerate(sources[:upto + 1]) for m in _SHELL_DOWNLOAD.finditer(src)]
    naming = [f for f in found if name and name in f[1]]
    return (naming or found or [None])[-1]


def _network_problem(label: str, source: str, text: str) -> str:
    """The TA's sentence for a cell that needed the network: what it tried to download."""
    if _WEIGHTS.search(source) or any(w in text for w in ("load_state_dict_from_url", "hub.py", "hf_hub")):
        return (f"{label} downloads pretrained weights (e.g. resnet18(pretrained=True)) and the grading sandbox "
                f"has no network: put the weights in the grader's torch hub cache (~/.cache/torch/hub) and grade "
                f"again, or grade the items that depend on it by hand")
    if "download" in source.lower() or "download" in text:
        root = _DOWNLOAD_ROOT.search(source)
        where = f" into `{root.group(2)}`" if root else ""
        return (f"{label} downloads a dataset{where} and the grading sandbox has no network: the grader "
                f"provides the datasets under ./data (and the handout's dataset folders), so code that "
                f"downloads into another folder finds nothing; grade the items that depend on it by hand")
    return (f"{label} needs the network and the grading sandbox has none; grade the items that depend "
            f"on it by hand")


def environment_problems(errors: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]], *,
                         submitted_modules: Sequence[str] = (), has_gpu: bool = False,
                         not_placed: Sequence[str] = (), workdir: str = "") -> list[Problem]:
    """Failing cells whose cause is the grading machine, not the student's code.

    `errors` are the failing cells (`index`, `ename`, `evalue`); `cells` the notebook's
    cells; `submitted_modules` the module names the submission's own .py files provide (a
    missing one of those is the student's mistake, not the grader's); `has_gpu` whether the
    run was given a GPU; `not_placed` the submission's files the grader could not place
    (relative to its root; grader.sandbox.Placement.files) and `workdir` the notebook's folder,
    from which its relative paths start. One problem per module or per need, at its first cell.
    """
    sources = [str(c.get("source", "")) if c.get("cell_type") == "code" else "" for c in cells]
    pips = {_import_name(p): (p, i) for p, i in pip_installs(sources).items()}
    own = {m.split(".")[0] for m in submitted_modules}
    out: list[Problem] = []
    seen: set[str] = set()

    def once(need: str, problem: Problem) -> None:  # one problem per need, at its first cell
        if need not in seen:
            seen.add(need)
            out.append(problem)

    for err in errors:
        index = err.get("index")
        if not isinstance(index, int):
            continue
        ename, evalue = str(err.get("ename", "")), str(err.get("evalue", ""))
        label = cell_label(cells, index)
        m = _NO_MODULE.search(evalue) if ename in ("ModuleNotFoundError", "ImportError") else None
        if m and (m.group(1).startswith("google.colab") or m.group(1) == "google" and "google.colab" in sources[index]):
            once("colab", Problem("colab-only", index, label, "google.colab",
                                  f"{label} imports google.colab (drive.mount, files.upload), which exists only on "
                                  f"Google Colab, not on the grading machine: no package provides it; grade the "
                                  f"items that depend on it by hand."))
            continue
        if m:
            module = m.group(1).split(".")[0]
            if module in own or module in seen:
                continue
            seen.add(module)
            if module not in pips and module not in KNOWN_PACKAGES and module not in _PIP_NAME:
                out.append(Problem("missing-module", index, label, module,
                                   f"{label} imports `{module}`, but the submission has no module `{module}` "
                                   f"({module}.py or a {module}/ folder) and it is no package the grader knows: "
                                   f"a file is probably missing from the zip, so the cells that need it failed "
                                   f"as the student's error (if `{module}` is a package on PyPI, install it "
                                   f"into the grader's environment and grade again)."))
                continue
            msg = (f"{label} imports {module}, which is not installed on the grading machine: install it "
                   f"into the grader's environment (pip install {pip_name(module)}) and grade this student again")
            if module in pips:
                package, at = pips[module]
                msg += (f"; the notebook runs `pip install {package}` in {cell_label(cells, at)}, which cannot "
                        f"work in the sandbox (no network)")
            out.append(Problem("missing-package", index, label, module, msg + "."))
            continue
        text = f"{ename}: {evalue}".lower()
        source = sources[index] if 0 <= index < len(sources) else ""
        lost = missing_file(evalue)
        if lost is not None:
            rel = _relative(lost, workdir)
            placed_not = next((f for f in not_placed if f == rel or not rel.startswith("/") and f.endswith("/" + rel)),
                              None)
            if placed_not is not None:
                once("placed", Problem("files-not-placed", index, label, placed_not,
                                       f"{label} failed reading `{placed_not}`, a file of the submission the grader "
                                       f"could not place where the code runs (the grader's dataset mount lies "
                                       f"there, or the work quota was full): not the student's error; grade the "
                                       f"items that depend on it by hand."))
                continue
            download = _shell_download(sources, index, posixpath.basename(lost))
            if download is not None:
                at, command = download
                once("network", Problem("needs-network", index, label, "network",
                                        f"{cell_label(cells, at)} downloads with `{command[:80]}` and the grading "
                                        f"sandbox has no network, so {label} found no `{lost}`; grade the items "
                                        f"that depend on it by hand."))
                continue
        if "mps" not in seen and (any(w in text for w in _MPS_WORDS) and "mps" in source.lower()):
            seen.add("mps")
            out.append(Problem("needs-mps", index, label, "MPS",
                               f"{label} uses Apple's MPS device (device='mps'), which exists only on a Mac: no "
                               f"grading machine has it, so the cells that depend on it failed for that reason; "
                               f"grade the items that depend on it by hand."))
            continue
        if "network" not in seen and (ename in _NETWORK_ENAMES or any(w in text for w in _NETWORK_WORDS)):
            seen.add("network")
            trace = str(err.get("traceback", "")).lower()
            out.append(Problem("needs-network", index, label, "network",
                               _network_problem(label, source, trace) + "."))
            continue
        if not has_gpu and "cuda" not in seen and any(w in text for w in _CUDA_WORDS):
            seen.add("cuda")
            out.append(Problem(
                "needs-gpu", index, label, "CUDA",
                f"{label} uses CUDA (.cuda(), device='cuda' or a GPU checkpoint) and this run had no GPU: "
                f"grade this student again on a machine with a GPU (dllab grade ... --gpus 0); the "
                f"cells that depend on it failed for that reason, not for the student's code."))
    return out


_STUDENT_REASON = {
    "needs-gpu": "{label} needs a CUDA GPU (.cuda(), device='cuda') and the grading machine had none",
    "needs-mps": "{label} uses Apple's MPS device (device='mps'), which only a Mac has",
    "missing-package": "{label} imports {subject}, which is not installed on the grading machine",
    "colab-only": "{label} imports google.colab, which exists only on Google Colab",
    "needs-network": "{label} downloads from the internet, and the grader runs code without a network",
    "files-not-placed": "{label} reads `{subject}`, a file of your submission the grader could not place "
                        "where your code runs",
}


def deferral_message(problems: Sequence[Mapping[str, Any]], *, path: str = "") -> str:
    """The student's sentence for an item sent to the TA because the run failed for want of
    something the grading machine lacks (`problems`: Problem dicts of one run, `path` its
    notebook): the first reason, then what happens next."""
    where = f" of `{path}`" if path else ""
    for p in problems:
        template = _STUDENT_REASON.get(str(p.get("code")))
        if template is not None:
            reason = template.format(label=f"{p.get('label') or 'a cell'}{where}", subject=p.get("subject", ""))
            return (f"This item was not graded automatically: {reason}, so the cells that depend on it could "
                    f"not run here. A TA will grade it by hand; it is not counted against you.")
    return ""


def run_flags(ev: Mapping[str, Any]) -> set[str]:
    """The grade flags one evidence record (evidence.json) calls for.

    Evidence written before these fields existed falls back to the status alone.
    """
    flags: set[str] = set()
    status = ev.get("status")
    stop = ev.get("stop") if isinstance(ev.get("stop"), Mapping) else None
    if stop and stop.get("kind") in STOP_FLAGS:
        flags.add(STOP_FLAGS[stop["kind"]])
    elif status == "killed":
        flags.add("sandbox-limit")
    if status == "timeout":
        flags.add("sandbox-limit")
    problems = [p for p in ev.get("environment") or () if isinstance(p, Mapping)]
    flags.update(str(p["code"]) for p in problems if p.get("code") in (*ENVIRONMENT_FLAGS, *STUDENT_FLAGS))
    flags.update(str(n["code"]) for n in ev.get("notes") or () if isinstance(n, Mapping) and n.get("code") in NOTE_FLAGS)
    errors = [e for e in ev.get("errors") or () if isinstance(e, Mapping)]
    explained = {p.get("cell") for p in problems if p.get("code") in ENVIRONMENT_FLAGS}  # not the student's
    if stop and stop.get("kind") == "exit":
        explained.add(stop.get("cell"))
    # A failing cell the environment explains, and the cascade after it, are not the
    # student's bug; an unexplained failure before it is.
    first = next((e for e in errors if e.get("ename") not in ("timeout",)), None)
    if status == "error" and (first is None and not stop or first is not None and first.get("index") not in explained):
        flags.add("notebook-error")
    return flags
