"""What comes out of the sandbox's probe folder: only the files the grader expects.

The probe writes its events, figure renderings and the model for verification into a folder
the sandbox can write (execute.PROBE_DIR_TOKEN); student code can write there too. After the
run, `copy_out` copies to the run's output folder only the files `PROBE_FILES` names, as
regular files (never through a link), within caps; anything else a notebook left there (an
HTML page, a link, a folder of its own) stays behind and is only named in the run's log.
What is copied is validated again where it is read (grader.collect, grader.evidence,
grader.verify).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path

MiB = 1 << 20
MAX_BYTES = 64 * MiB
MAX_FILES = 2000
PROBE_FILES: tuple[re.Pattern[str], ...] = (
    re.compile(r"events\.jsonl"),  # the probe's events (grader.collect reads them, capped)
    re.compile(r"verify/spec\.json"), re.compile(r"verify/model\.pt"),  # grader.verify's input
    # a generative lab's captures (grader.probe.rec_gen; grader.verify.generative reads them)
    re.compile(r"verify/gen\.json"), re.compile(r"verify/g\d{1,2}(-encode|-decode)?\.pt"),
    re.compile(r"fig/fig-\d{4,6}\.png"),  # the probe's figure renderings (grader.evidence.PNG_NAME)
    # the models of the notebook's other datasets, then one per training run (grader.verify.runs)
    re.compile(r"verify/more\d\.json"), re.compile(r"verify/more\d\.pt"), re.compile(r"verify/run\d{1,2}\.pt"),
    # a lab reading architectures: each trained model's blocks (grader.probe.rec_arch; grader.verify.arch)
    re.compile(r"verify/arch\.json"), re.compile(r"verify/a\d{1,2}b\d{1,2}(-short|-plain)?\.pt"),
    # a split the student made (cats-vs-dogs): each run's files and the models export_runs did not
    # capture (grader.verify.splits)
    re.compile(r"verify/splits\.json"), re.compile(r"verify/split\d{1,2}\.pt"),
)
"""The only files copied out of the probe folder, in this order of priority under the caps:
the student's code can write there too, and anything else it leaves is not copied."""


def copy_out(src: Path, dest: Path, allowed: tuple[re.Pattern[str], ...] = PROBE_FILES) -> list[str]:
    """Copies what the probe left that `allowed` names (paths relative to `src`): regular
    files only, never through a link, within MAX_FILES and MAX_BYTES.
    Returns the other entries found (relative paths, at most 20), which are not copied."""
    if not src.is_dir() or src.is_symlink():
        return []
    folders = {pat.pattern.split("/", 1)[0] for pat in allowed if "/" in pat.pattern}
    wanted: list[tuple[int, str, Path, int]] = []
    ignored: list[str] = []
    for entry, rel in _entries(src, folders):
        rank = next((i for i, pat in enumerate(allowed) if pat.fullmatch(rel)), None)
        try:
            regular = entry.is_file(follow_symlinks=False)
            size = entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
        if rank is not None and regular:
            wanted.append((rank, rel, Path(entry.path), size))
        elif len(ignored) < 20:
            ignored.append(rel)
    total = files = 0
    for _, rel, path, size in sorted(wanted):
        if files >= MAX_FILES or total + size > MAX_BYTES:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        total += size
        files += 1
    return ignored


def _entries(src: Path, folders: set[str]) -> list[tuple[os.DirEntry[str], str]]:
    """The entries of `src`, and of its sub-folders named in `folders` (real folders, not
    links), with their paths relative to `src`; at most MAX_FILES of each folder."""
    found: list[tuple[os.DirEntry[str], str]] = []
    with os.scandir(src) as top:
        for entry in itertools.islice(top, MAX_FILES):
            if entry.name in folders and entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as inner:
                    found += [(e, f"{entry.name}/{e.name}") for e in itertools.islice(inner, MAX_FILES)]
            else:
                found.append((entry, entry.name))
    return sorted(found, key=lambda x: x[1])
