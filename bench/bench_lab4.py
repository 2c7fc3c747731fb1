"""Lab 4A / 4B timings: the references, one student's full notebook, one 4B submission.

    .venv/bin/python bench/bench_lab4.py reference --mnist DIR [--seeds 3] [--out FILE]
    .venv/bin/python bench/bench_lab4.py reference4b [--size tiny] [--seeds 3] [--out FILE]
    .venv/bin/python bench/bench_lab4.py notebook --mnist DIR [--work DIR]
    .venv/bin/python bench/bench_lab4.py submission4b [--size tiny] [--work DIR]

`reference`: Lab 4A's whole reference (every run of ex1..ex4 and the optional exercise) on the
real MNIST at DIR (`dllab data mnist`), CPU, 2 threads; prints each configuration's seconds and
test accuracy (mean ± std over seeds) and the total, and writes the expected-metrics document
of ex1..ex4 (`dllab reference run`'s format) to --out. `reference4b`: the same for Lab 4B on a
CIFAR-10 stand-in. `notebook`: grades one student-style full Lab 4A notebook (DataLoader over
torchvision MNIST with ToTensor(), every run of every exercise, 60000 images, 5 epochs) in the
sandbox with the lab's rubric; prints the wall time of the grading and of the notebook.
`submission4b`: grades Lab 4B's complete sample on the stand-in. Each prints the load average
before and after: the machine is shared, so a number is only as good as its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f} %"
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f} %"


def _reference(lab: str, parts: list[str], extra: list[str], *, dataset: str, folder: Path, seeds: int,
               out: Path | None, threads: int = 2) -> None:
    """Trains the lab's references (parts) and extra reference files, `seeds` seeds."""
    import torch

    from grader.labs import find_lab
    from grader.reference_run import run_reference

    torch.set_num_threads(threads)
    print(f"load before: {_load()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    doc = run_reference(str(REPO / "labs" / lab), data={dataset: folder}, device="cpu", seeds=seeds,
                        only=parts, threads=threads, log=lambda s: print(s, flush=True))
    pkg = find_lab(str(REPO / "labs" / lab))
    bonus = {}
    for name in extra:
        module = import_reference_file(pkg, name)
        results = [module.train(data={dataset: folder}, device="cpu", seed=s, epochs=None) for s in range(seeds)]
        bonus[name] = results
    total = time.perf_counter() - t0
    print(f"\n{'configuration':<42} {'test accuracy (mean ± std)':>28} {'s / seed':>9}")
    seen: dict[str, tuple[str, float]] = {}
    for part, entry in doc["parts"].items():
        for cfg in entry["summary"]["configs"]:
            secs = [sum((r2.get("history") or {}).get("wall_s") or []) for r in entry["runs"]
                    for r2 in r["runs"] if r2["name"] == cfg["name"]]
            accs = [r2["test_accuracy"] for r in entry["runs"] for r2 in r["runs"] if r2["name"] == cfg["name"]]
            print(f"{part + ': ' + cfg['name']:<42} {_spread(accs):>28} {statistics.fmean(secs):>9.1f}")
            seen[json.dumps(cfg.get("factors"), sort_keys=True)] = (cfg["name"], statistics.fmean(secs))
    for name, results in bonus.items():
        for i, run in enumerate(results[0]["runs"]):
            accs = [r["runs"][i]["test_accuracy"] for r in results]
            secs = statistics.fmean(sum(r["runs"][i]["history"]["wall_s"]) for r in results)
            print(f"{name + ': ' + run['name']:<42} {_spread(accs):>28} {secs:>9.1f}")
            seen[json.dumps(run.get("factors"), sort_keys=True)] = (run["name"], secs)
    distinct = sum(s for _, s in seen.values())
    print(f"\ndistinct configurations: {len(seen)}, training {distinct:.1f} s per seed "
          f"(a run two exercises share is trained once per seed)")
    print(f"total wall, {seeds} seed(s), data loading and evaluation included: {total:.1f} s")
    print(f"load after: {_load()}")
    if out is not None:
        doc["bonus"] = {name: [{k: v for k, v in r.items() if k != "classes"} for r in res]
                        for name, res in bonus.items()}
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {out}")


def import_reference_file(pkg, name: str):
    """A reference file of the lab that is not a rubric part (the optional exercise), imported
    as a sibling of the parts' files so its relative imports share their module."""
    import importlib

    from grader.labs import import_reference

    first = next(iter(pkg.manifest.references))
    package = import_reference(pkg, first).__name__.rsplit(".", 1)[0]
    return importlib.import_module(f"{package}.{name}")


def _grade(zip_path: Path, lab: str, data: str, out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader.cli", "grade", str(zip_path), "--lab", str(REPO / "labs" / lab),
                    "--data", data, "--out", str(out), "--workers", "1", "--no-pdf"], cwd=REPO, check=False,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - t0


def _report(out: Path) -> None:
    for ev_path in sorted(out.glob("runs/*/*/evidence.json")):
        ev = json.loads(ev_path.read_text())
        print(f"{ev_path.parent.name}: status {ev.get('status')}, notebook {ev.get('duration_s')} s, "
              f"{len(ev.get('runs') or [])} run record(s), {len(ev.get('verified_runs') or [])} verified run(s)")
    for g in sorted(out.glob("grades/*.json")):
        grade = json.loads(g.read_text())
        print(f"grade {grade['student_id']}: {grade['total']} / {grade['max']}; "
              + ", ".join(f"{i['id']} {i['status']}" for p in grade["parts"] for i in p["items"]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("reference")
    r.add_argument("--mnist", type=Path, required=True)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--out", type=Path)
    r.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2: the machine's cores)")
    r4 = sub.add_parser("reference4b")
    r4.add_argument("--size", default="tiny")
    r4.add_argument("--seeds", type=int, default=3)
    r4.add_argument("--out", type=Path)
    r4.add_argument("--threads", type=int, default=2)
    n = sub.add_parser("notebook")
    n.add_argument("--mnist", type=Path, required=True)
    n.add_argument("--work", type=Path)
    s4 = sub.add_parser("submission4b")
    s4.add_argument("--size", default="tiny")
    s4.add_argument("--work", type=Path)
    args = ap.parse_args(argv)

    if args.what == "reference":
        _reference("lab4a", ["ex1", "ex2", "ex3", "ex4"], ["bonus"], dataset="mnist", folder=args.mnist,
                   seeds=args.seeds, out=args.out, threads=args.threads)
        return
    work = Path(getattr(args, "work", None) or tempfile.mkdtemp(prefix="bench-lab4-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.what == "reference4b" or args.what == "submission4b":
        from grader.datasets import locate, synth
        from grader.datasets.standins import sandbox_readable

        root = Path(tempfile.mkdtemp(prefix="bench-lab4b-data-")) if args.what == "reference4b" else work / "data"
        synth(root, size=args.size, seed=0, names=["cifar10"], overwrite=True)
        sandbox_readable(root)
        folder = locate("cifar10", root)
        if args.what == "reference4b":
            _reference("lab4b", ["ex1", "ex2", "ex3"], ["bonus"], dataset="cifar10", folder=folder,
                       seeds=args.seeds, out=args.out, threads=args.threads)
            return
        from scripts.make_lab4_samples import zip_folder

        zip_path = zip_folder(REPO / "labs" / "lab4b" / "samples" / "4b01", work / "dllab_0440001.zip")
        print(f"load before: {_load()}")
        secs = _grade(zip_path, "lab4b", f"cifar10={folder}", work / "out")
        print(f"graded one Lab 4B submission (complete sample, {args.size} stand-in) in {secs:.1f} s")
        _report(work / "out")
        print(f"load after: {_load()}")
        return
    from scripts.make_lab4_samples import full_lab4a_notebook, write_notebook

    nb_dir = work / "submission"
    nb_dir.mkdir(exist_ok=True)
    write_notebook(full_lab4a_notebook(), nb_dir / "lab4a.ipynb")
    from scripts.make_lab4_samples import zip_folder

    zip_path = zip_folder(nb_dir, work / "dllab_0449999.zip")
    print(f"load before: {_load()}")
    secs = _grade(zip_path, "lab4a", f"mnist={args.mnist}", work / "out")
    print(f"graded one full student-style Lab 4A notebook (60000 images, DataLoader + ToTensor) in {secs:.1f} s")
    _report(work / "out")
    print(f"load after: {_load()}")


if __name__ == "__main__":
    main()
