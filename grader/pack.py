"""`dllab pack`: a student's working folder -> a correctly named `dllab_<id>.zip`.

What goes in: notebooks, scripts, reports, and small supporting files (configs, figures).
What stays out, each listed with its reason: editor and VCS folders, virtual environments,
dataset folders (the grader mounts the datasets itself), model weights and checkpoints (the
grader retrains), archives, and anything large. The zip is deterministic (sorted members,
fixed timestamps), so an unchanged folder packs to the same bytes and a repeated
`dllab check` reuses its earlier run. The result is then read back by the grader's own
intake, so what the student sees is what the TA's run will see.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from grader.datasets import registry
from grader.errors import GraderError
from grader.intake.classify import kind_of
from grader.intake.naming import ARCHIVE_EXTS, NamePattern
from grader.intake.problems import human_bytes
from grader.model import Submission

MiB = 1024 * 1024
MAX_FILE = 20 * MiB
"""Any file larger than this is left out: no notebook, script or report is that big."""
MAX_SUPPORT = 1 * MiB
"""A file that is not code or a report goes in only up to this size (configs, figures)."""
DATASET_IMAGES = 200
"""A folder holding more images than this (anywhere below it) is a dataset."""
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
"""Every member's timestamp: the same folder always packs to the same bytes."""

# Folder names that hold datasets: the usual roots, every dataset's own (grader.datasets.registry).
_DATASET_DIRS = {"data", "dataset", "datasets", "imagenet", "datasets-nctu", "dataset-nctu"} | registry.folder_names()
_CACHE_DIRS = {".ipynb_checkpoints": "Jupyter's autosave copies", "__pycache__": "Python's bytecode cache",
               "__macosx": "macOS archive metadata", ".git": "version control history",
               ".svn": "version control history", "node_modules": "JavaScript packages",
               "wandb": "experiment-tracking logs", "lightning_logs": "training logs",
               "mlruns": "experiment-tracking logs", "checkpoints": "model checkpoints",
               "checkpoint": "model checkpoints"}
_JUNK_FILES = {".ds_store", "thumbs.db", "desktop.ini"}
_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_NOT_REPORT = ("readme", "license", "licence", "changelog", "requirements")


@dataclass(frozen=True)
class LeftOut:
    """A file or folder of the working folder that is not packed, and why."""

    path: str
    """Posix path relative to the folder; folders end in `/`."""
    reason: str
    """Why it stays out, said to the student."""
    bytes: int = 0
    """Its size (a folder: everything below it)."""
    files: int = 1
    """How many files that is."""


@dataclass(frozen=True)
class PackPlan:
    """What `pack` puts in the zip, what it leaves out, and what the student should look at."""

    root: Path
    """The working folder."""
    members: tuple[str, ...]
    """Posix paths (relative to `root`) that go into the zip, sorted."""
    left_out: tuple[LeftOut, ...]
    """Everything else, sorted by path."""
    warnings: tuple[str, ...]
    """Things to fix before handing in, each saying what to do."""

    def of_kind(self, kind: str) -> tuple[str, ...]:
        return tuple(m for m in self.members if _kind(m) == kind)


@dataclass(frozen=True)
class PackResult:
    """A written zip and what the grader's intake made of it."""

    zip_path: Path
    plan: PackPlan
    submission: Submission
    """The zip as the grader's intake reads it."""


def _kind(path: str) -> str:
    kind = kind_of(path)
    name = path.rsplit("/", 1)[-1].lower()
    if kind == "report" and name.startswith(_NOT_REPORT):
        return "other"  # a README is not the lab report
    return kind


def _images_below(root: Path) -> dict[str, int]:
    """Relative folder -> images anywhere below it, to spot datasets by their contents."""
    counts: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root).as_posix()
        n = sum(Path(f).suffix.lower() in _IMAGE_EXTS for f in filenames)
        if not n:
            continue
        parts = [] if rel == "." else rel.split("/")
        for i in range(len(parts) + 1):
            key = "/".join(parts[:i]) or "."
            counts[key] = counts.get(key, 0) + n
    return counts


def _tree_size(folder: Path) -> tuple[int, int]:
    size = files = 0
    for dirpath, _, filenames in os.walk(folder, followlinks=False):
        for f in filenames:
            try:
                size += os.lstat(os.path.join(dirpath, f)).st_size
                files += 1
            except OSError:
                pass
    return size, files


def _skip_dir(folder: Path, rel: str, images: dict[str, int]) -> str | None:
    """Why a folder is left out whole, or None to look inside it."""
    name = folder.name.lower()
    if folder.is_symlink():
        return "a linked folder (links are not followed; copy what you need into the folder)"
    if name in _CACHE_DIRS:
        return _CACHE_DIRS[name]
    if (folder / "pyvenv.cfg").is_file() or (folder / "conda-meta").is_dir():
        return "a Python environment (the grader has its own)"
    if name.startswith("dllab-check-"):
        return "output of `dllab check`"
    if name in _DATASET_DIRS or ((folder / "manifest.json").is_file() and _is_dataset_manifest(folder)):
        return "a dataset folder (the grader mounts the datasets itself, at the handout's paths)"
    if images.get(rel, 0) > DATASET_IMAGES:
        return f"a dataset folder ({images[rel]} images; the grader mounts the datasets itself)"
    if name.startswith("."):
        return "a hidden folder"
    return None


def _is_dataset_manifest(folder: Path) -> bool:
    try:
        doc = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "format" in doc and "splits" in doc


def _skip_file(path: Path, rel: str) -> str | None:
    """Why a file is left out, or None to pack it."""
    name = path.name.lower()
    if name in _JUNK_FILES or name.startswith("._"):
        return "operating-system clutter"
    if name.startswith("."):
        return "a hidden file (settings or secrets such as .env stay on your machine)"
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid text (UTF-8); rename it if it belongs in the submission"
    if path.is_symlink() and not path.resolve().is_file():
        return "a link to something that is not a file"
    kind = kind_of(rel)
    if kind == "weights":
        return "model weights or a checkpoint (the grader trains your model itself)"
    if name.endswith(ARCHIVE_EXTS):
        return "an archive (only one zip is handed in; the grader does not open zips inside it)"
    size = path.stat().st_size
    if size > MAX_FILE:
        return f"larger than {human_bytes(MAX_FILE)}"
    if _kind(rel) not in ("notebook", "script", "report") and size > MAX_SUPPORT:
        return (f"not code or a report, and larger than {human_bytes(MAX_SUPPORT)} (have the notebook "
                f"create it, or load it from the mounted datasets)")
    if name.endswith((".pyc", ".pyo", ".so", ".dll", ".dylib", ".exe", ".o")):
        return "a compiled file"
    if name.endswith((".swp", ".swo", "~", ".tmp", ".log")):
        return "an editor or log file"
    return None


def plan_pack(folder: Path, *, exclude: tuple[Path, ...] = ()) -> PackPlan:
    """Decide what goes into the zip; nothing is written."""
    root = Path(folder)
    if not root.is_dir():
        raise GraderError(f"{root} is not a folder: give the folder holding your notebooks and report")
    images = _images_below(root)
    skip = {os.path.realpath(p) for p in exclude}
    members: list[str] = []
    left: list[LeftOut] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in sorted(dirnames):
            rel = (here / d).relative_to(root).as_posix()
            why = _skip_dir(here / d, rel, images)
            if why is not None:
                dirnames.remove(d)
                size, count = (0, 0) if (here / d).is_symlink() else _tree_size(here / d)
                left.append(LeftOut(rel + "/", why, size, count))
        for f in sorted(filenames):
            full = here / f
            if os.path.realpath(full) in skip:
                continue
            rel = full.relative_to(root).as_posix()
            why = _skip_file(full, rel)
            if why is None:
                members.append(rel)
            else:
                left.append(LeftOut(rel, why, full.lstat().st_size))
    members.sort()
    left.sort(key=lambda x: x.path)
    return PackPlan(root=root, members=tuple(members), left_out=tuple(left),
                    warnings=tuple(_warnings(root, members)))


def _warnings(root: Path, members: list[str]) -> list[str]:
    out: list[str] = []
    notebooks = [m for m in members if _kind(m) == "notebook"]
    if not notebooks and not any(_kind(m) == "script" for m in members):
        out.append(f"no notebook (.ipynb) or script (.py) found in {root}: run the command on the folder "
                   f"that holds your lab notebooks.")
    if not any(_kind(m) == "report" for m in members):
        out.append("no report found (pdf, docx, md, txt or html): write it with the sections Problems & "
                   "solutions, Experiment setup, Results, Analysis, save it in the folder (e.g. report.pdf) "
                   "and pack again.")
    for m in notebooks:
        out.extend(notebook_warnings(root / m, m))
    return out


def notebook_warnings(path: Path, rel: str) -> list[str]:
    """What a student should fix in a notebook before handing it in."""
    from grader.nbread import UnreadableNotebook, read_notebook

    try:
        read = read_notebook(path)
    except (UnreadableNotebook, OSError) as error:
        return [f"{rel} is not a valid notebook ({error}): open it in Jupyter, save it, and pack again."]
    if read.repairs:
        return [f"{rel} does not quite follow the notebook format ({'; '.join(read.repairs[:3])}): the grader "
                f"repairs this, but open it in Jupyter, save it, and pack again to be safe."]
    doc = read.nb
    code = [c for c in doc.get("cells", []) if c.get("cell_type") == "code" and "".join(c.get("source", "")).strip()]
    if code and not any(c.get("outputs") for c in code):
        return [f"{rel} has no outputs: run all cells (Kernel > Restart & Run All) and save before packing; "
                f"TAs may grade the saved outputs."]
    for i, c in enumerate(doc.get("cells", []), start=1):
        errs = [o for o in c.get("outputs") or [] if o.get("output_type") == "error"]
        if errs:
            return [f"{rel}: the saved output of cell {i} is an error ({errs[0].get('ename', 'error')}): "
                    f"fix it, run all cells again and save before packing."]
    return []


def write_zip(plan: PackPlan, dest: Path) -> Path:
    """Writes the plan's members to `dest` atomically (a temporary file, then renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in plan.members:
                info = zipfile.ZipInfo(rel, date_time=ZIP_TIME)  # non-ASCII names get the UTF-8 flag
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(plan.root / rel, "rb") as src, zf.open(info, "w") as out:
                    shutil.copyfileobj(src, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def zip_name(pattern: str, student_id: str) -> str:
    """The archive name the rubric asks for; refuses an id the grader could not read back."""
    names = NamePattern(pattern)
    name = names.expected(student_id)
    reading = names.read(name)
    if reading.match != "exact" or reading.student_id != student_id:
        raise GraderError(f"--student-id {student_id!r}: use your student id as letters and digits only "
                          f"(e.g. --student-id 0556001)")
    return name


def read_back(zip_path: Path, pattern: str) -> Submission:
    """The zip as the grader's intake sees it (unpacked into a temporary folder, then removed)."""
    from grader.intake import discover, unpack

    candidates = discover([zip_path], pattern=pattern)
    with tempfile.TemporaryDirectory(prefix="dllab-pack-") as tmp:
        return unpack(candidates[0], tmp)


def pack(folder: Path, *, student_id: str, pattern: str, out_dir: Path, force: bool = False) -> PackResult:
    """Plans, writes and reads back `out_dir/<pattern with student_id>`."""
    dest = Path(out_dir) / zip_name(pattern, student_id)
    if dest.exists() and not force:
        raise GraderError(f"{dest} already exists: pass --force to replace it, or --out DIR to write elsewhere")
    plan = plan_pack(folder, exclude=(dest,))
    if not plan.members:
        raise GraderError(f"nothing to pack in {folder}: no notebooks, scripts or reports were found")
    write_zip(plan, dest)
    return PackResult(zip_path=dest, plan=plan, submission=read_back(dest, pattern))
