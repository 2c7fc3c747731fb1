"""Writes labs/lab1/samples/<student_id>/ from grader.samples.lab1_samples(epochs=1).

Run once, from the repository root, when the generated LAB01 samples change:

    PYTHONPATH=. .venv/bin/python scripts/make_lab1_samples.py [--check]

Each sample's files are written with the bytes `grader.samples.write_archive` puts in its zip
(notebooks through nbformat.writes, text as UTF-8), so zipping a folder
(grader.lab_samples.write_sample) gives the same archive. The `samples:` block of
labs/lab1/lab.yaml (archive name, outcome, late_days, expected grade) is kept by hand.
tests/test_lab_samples.py fails when the folders and the generator disagree.
With --check nothing is written; the exit code is 1 when the folders differ.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

from grader.samples import lab1_samples

SAMPLES = Path(__file__).resolve().parent.parent / "labs" / "lab1" / "samples"


def expected_files() -> dict[str, dict[str, bytes]]:
    """student_id → (member name → bytes), exactly as write_archive would zip them."""
    out: dict[str, dict[str, bytes]] = {}
    for s in lab1_samples(epochs=1):
        out[s.student_id] = {name: (body if isinstance(body, str) else nbformat.writes(body)).encode("utf-8")
                             for name, body in s.files.items()}
    return out


def on_disk(root: Path) -> dict[str, dict[str, bytes]]:
    return {d.name: {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
            for d in sorted(root.iterdir()) if d.is_dir()} if root.is_dir() else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the folders differ")
    ap.add_argument("--out", type=Path, default=SAMPLES, help=f"samples folder (default {SAMPLES})")
    args = ap.parse_args(argv)
    want = expected_files()
    if args.check:
        same = on_disk(args.out) == want
        print("labs/lab1/samples matches grader.samples" if same else "labs/lab1/samples differs from grader.samples")
        return 0 if same else 1
    if args.out.exists():
        shutil.rmtree(args.out)
    for sid, files in want.items():
        for name, data in files.items():
            path = args.out / sid / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    print(f"wrote {sum(len(f) for f in want.values())} files for {len(want)} samples under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
