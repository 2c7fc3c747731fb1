"""Stand-in datasets made on demand for the sandbox: the demo, `lab validate --samples` and a
student's quick self-check all need the same thing, generated once and readable by the
unprivileged uid a root-run sandbox executes student code as."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Sequence

HIDDEN_DIR = "dllab-hidden"
"""grader.hidden_split's folder of grader-only test images: never opened to other users."""


def sandbox_readable(root: Path) -> None:
    """Makes every file and folder under `root` readable (folders enterable) by other users,
    except the grader-only hidden splits (`dllab-hidden/`, grader.hidden_split), which stay
    0700. Links are left as they are."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != HIDDEN_DIR]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            mode = p.lstat().st_mode
            if not stat.S_ISLNK(mode):
                p.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0))
    root.chmod(root.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)


def stand_ins(names: Sequence[str], root: Path, *, size: str, seed: int = 0,
              log: Callable[[str], None] = lambda s: None) -> dict[str, Path]:
    """Stand-ins of the registered datasets `names` under `root`: the ones not already there
    are generated (grader.datasets.synth, `size` as in SIZES); all of them made
    `sandbox_readable`. Returns {name: root} (each dataset is located under the root).
    Raises DatasetError for an unknown name or size."""
    from grader.datasets import locate, synth
    from grader.errors import DatasetError

    missing = []
    for name in names:
        try:
            locate(name, root)
        except DatasetError:
            missing.append(name)
    if missing:
        log(f"making {size} stand-in datasets ({', '.join(missing)}) in {root}")
        synth(root, size=size, seed=seed, names=missing, overwrite=True)
    sandbox_readable(root)
    return {name: root for name in names}
