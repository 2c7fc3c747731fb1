"""Host-side parsing of printed metrics: seconds, evidence.json bytes and curve points.

    PYTHONPATH=$PWD .venv/bin/python bench/host_parsing.py [--cells 32] [--mib 1.0]

Builds issue 13's G2 attack in memory: a saved notebook of `--cells` code cells, each
holding `--mib` MiB of printed metric lines (train and validation lines alternating, so no
flood of one form is thinned), then times `grader.collect.from_saved` on it (the parse the
host does for every notebook, in both modes: execute mode parses the executed notebook the
same way) and prints the seconds, the evidence.json size and the number of curve points.

Measured on the shared 2-core dev machine (loaded), 32 cells x 1 MiB:
  before (main 865cd33): parse_notebook 209 s CPU, collect.from_saved 242 s CPU,
                         evidence.json 84.3 MiB, 1 469 600 curve points
  after (parse budget):  parse_notebook 9.5 s CPU, collect.from_saved 14 s CPU,
                         evidence.json 0.46 MiB, 7 360 curve points (<= 2000 per series),
                         parse_budget reports 32 cells thinned; test_accuracy still read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def attack_notebook(cells: int, mib: float) -> dict:
    """A notebook whose every cell printed `mib` MiB of alternating metric lines."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    size = int(mib * (1 << 20))
    for c in range(cells):
        lines, n, i = [], 0, 0
        while n < size:
            line = (f"Epoch {i // 100 + 1} step {i % 100} train loss: {1 / (i + 2):.4f} train acc: {i % 97}.5%"
                    if i % 2 == 0 else f"val loss {0.5 + (i % 13) / 100:.3f} | val accuracy = {0.3 + (i % 50) / 100:.3f}")
            lines.append(line)
            n += len(line) + 1
            i += 1
        cell = nbformat.v4.new_code_cell(f"train({c})", execution_count=c + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="\n".join(lines) + "\n")]
        nb.cells.append(cell)
    last = nbformat.v4.new_code_cell("test()", execution_count=cells + 1)
    last.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Test accuracy: 61.2 %\n")]
    nb.cells.append(last)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=32)
    parser.add_argument("--mib", type=float, default=1.0, help="MiB printed per cell")
    args = parser.parse_args(argv)

    import nbformat

    from grader import collect

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "attack.ipynb"
        nbformat.write(nbformat.from_dict(attack_notebook(args.cells, args.mib)), path)
        from grader.parsers import parse_notebook

        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter(), time.process_time()
        parse_notebook(nb)
        parse_only = time.perf_counter() - t0[0], time.process_time() - t0[1]
        t0 = time.perf_counter(), time.process_time()
        ev = collect.from_saved(path, "attack.ipynb", run_dir=Path(tmp) / "run")
        took = time.perf_counter() - t0[0], time.process_time() - t0[1]
    data = json.dumps(ev, indent=2, sort_keys=True, ensure_ascii=False).encode()
    curves = (ev.get("metrics") or {}).get("curves") or {}
    points = {k: len(v) for k, v in curves.items()}
    sections = sum(len(c) for s in ev.get("sections") or () for c in ((s.get("metrics") or {}).get("curves") or {}).values())
    print(f"notebook: {args.cells} cells x {args.mib:g} MiB printed ({path.name})")
    print(f"parse_notebook: {parse_only[0]:.1f} s wall, {parse_only[1]:.1f} s CPU")
    print(f"collect.from_saved (read, parse, sections, figures): {took[0]:.1f} s wall, {took[1]:.1f} s CPU")
    print(f"evidence.json: {len(data) / (1 << 20):.2f} MiB")
    print(f"curve points: {sum(points.values())} in {len(points)} series {points}; in sections: {sections}")
    print(f"test_accuracy: {(ev.get('metrics') or {}).get('test_accuracy')}; "
          f"output_truncated: {ev.get('output_truncated')}; warnings: {ev.get('warnings')}")
    budget = (ev.get("metrics") or {}).get("parse_budget")
    if budget:
        print(f"parse budget: {budget}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
