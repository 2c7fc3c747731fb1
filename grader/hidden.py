"""What of the grader's own installation the sandbox hides from student code.

The sandbox mounts the Python installation it runs in (and /usr, and the dataset folders),
and the grader is installed in one of them: as a wheel (`site-packages/grader/`, its rubrics
and templates in `grader/_data/`), editable (a `.pth` file and `grader/_data/` in
site-packages, the code in a checkout), or as a plain checkout beside a venv. Nothing of it
is needed inside: the kernel gets the probe and the startup code as source text
(grader/probe/recorder.py `bootstrap_source`, grader/probe/startup.py), and the evaluator as
a script of its own (grader/verify.py). So every path of the installation that a mount would
show is covered: a folder by an empty tmpfs, a file by an empty file.

The paths come from the installation itself, not from guesses about names: the folders the
`grader` and `reference` packages import from, the checkout around them (a folder with the
project's pyproject.toml), and every file the `dllab-grader` distribution's RECORD lists (the
dist-info folder, the editable `.pth`, the `dllab` script, `grader/_data/`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DISTRIBUTION = "dllab-grader"
PACKAGES = ("grader", "reference")


@dataclass(frozen=True)
class Installation:
    """The grader's own paths on the host, resolved (no symlinks)."""

    folders: tuple[Path, ...]
    """Hidden whole: the packages, the checkout, the dist-info folder."""
    files: tuple[Path, ...]
    """Hidden one by one: files the distribution put beside other packages (`.pth`, scripts)."""


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(os.path.realpath(next(iter(spec.submodule_search_locations))))


def _is_checkout(folder: Path) -> bool:
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'name = "{DISTRIBUTION}"' in text


def _pth_folders(pth: Path) -> list[Path]:
    try:
        lines = pth.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [Path(os.path.realpath(ln.strip())) for ln in lines[:50]
            if ln.strip().startswith("/") and Path(ln.strip()).is_dir()]


@functools.lru_cache(maxsize=1)
def installation() -> Installation:
    """Every path of this grader's installation that student code must not see (looked up
    once per process: it does not move while the grader runs)."""
    folders: set[Path] = set()
    files: set[Path] = set()
    for name in PACKAGES:
        d = _package_dir(name)
        if d is not None:
            folders.add(d)
            if _is_checkout(d.parent):
                folders.add(d.parent)
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for entry in (dist.files or []) if dist is not None else []:
        parts = PurePosixPath(str(entry)).parts
        if len(parts) > 1 and parts[0] != "..":
            # a top-level folder of site-packages that the distribution made (grader/, its dist-info)
            folders.add(Path(os.path.realpath(str(dist.locate_file(parts[0])))))
        else:
            path = Path(os.path.realpath(str(dist.locate_file(entry))))
            files.add(path)
            if path.suffix == ".pth":  # an editable install: the checkout it points at
                folders.update(d for d in _pth_folders(path) if _is_checkout(d))
    return Installation(tuple(sorted(folders)), tuple(sorted(files)))


def _inside(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return path == folder or folder in path.parents


def hide_args(binds: Sequence[tuple[str, str]], *, empty_file: str,
              found: Installation | None = None) -> list[str]:
    """bwrap arguments, to come after `binds`, that hide the installation wherever they show it.

    `binds` are the read-only mounts as (host folder, sandbox path); `empty_file` is a host
    file with nothing in it, bound over each hidden file. A bind whose host folder lies inside
    a hidden folder (a venv inside the checkout) is mounted again over the tmpfs, so what the
    sandbox needs stays and only the rest of the folder goes.
    """
    found = found if found is not None else installation()
    pairs = [(PurePosixPath(os.path.realpath(h)), PurePosixPath(t)) for h, t in binds]
    # (sandbox path, kind) of everything the binds would show
    shown: list[tuple[PurePosixPath, str]] = []
    for kind, paths in (("dir", found.folders), ("file", found.files)):
        for path in paths:
            p = PurePosixPath(path)
            for host, target in pairs:
                if _inside(p, host):
                    shown.append((target / p.relative_to(host), kind))
    bind_targets = {t: h for h, t in pairs}
    hidden_dirs = [p for p, kind in shown if kind == "dir"]

    def visible(path: PurePosixPath) -> bool:
        # the deepest hidden folder or bind strictly above `path` decides; none: it is visible
        above = [(len(d.parts), "hidden") for d in hidden_dirs if d != path and d in path.parents]
        above += [(len(t.parts), "bind") for t in bind_targets if t != path and t in path.parents]
        return not above or max(above)[1] == "bind"

    # Shallow first: a bind made again over a hidden folder comes right after that folder's
    # tmpfs, and whatever is hidden inside the bind (deeper) after it.
    args: list[str] = []
    for path, kind in sorted(set(shown), key=lambda x: (len(x[0].parts), str(x[0]))):
        if not visible(path):
            continue
        if kind == "file":
            args += ["--ro-bind", empty_file, str(path)]
            continue
        args += ["--tmpfs", str(path)]
        for target in sorted(bind_targets, key=lambda t: len(t.parts)):
            if path in target.parents:
                args += ["--ro-bind", str(bind_targets[target]), str(target)]
    return args
