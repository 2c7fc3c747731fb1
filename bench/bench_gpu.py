"""Runs per GPU: LAB 1-1 notebooks graded at K = 1, 2, 4, 8, 16 runs per GPU, and the references' epochs.

    .venv/bin/python bench/bench_gpu.py --quick             # sized for ~8 minutes on one H200 (estimated)
    .venv/bin/python bench/bench_gpu.py [--gpu 0] [--ks 1,2,4,8,16] [--n N] [--epochs E]
        [--size tiny|small|full] [--out FILE]

1. Data: the CIFAR-10 and Food-11 stand-ins (`dllab data synth`, `--size`, default small:
   10 000 CIFAR-10 training images), in a temporary folder.
2. Submissions: LAB 1-1 notebooks written as the handout's example does it (the PyTorch
   CIFAR-10 tutorial: its network, batch size 4, SGD lr 0.001 momentum 0.9) with the tutorial's
   "Training on GPU" lines (`device = torch.device('cuda:0' if torch.cuda.is_available() ...)`,
   `net.to(device)`, each batch `.to(device)`), `--epochs` epochs, each notebook's bytes its own
   (the run cache would otherwise run one of them).
3. For each K: `dllab grade SUBS --lab lab1 --gpus G --runs-per-gpu K --no-pdf --no-similarity`
   (K x len(gpus) workers: the real pipeline, sandbox, probe and GPU verification) on N
   submissions (default 2K, at least 4; `--quick`: K, at least 2), nvidia-smi sampled every
   0.5 s. Printed per K: submissions per hour and the speed-up over K = 1, the GPU's utilization
   (mean and 95th percentile over the batch), the peak memory of a process on the GPU
   (nvidia-smi, CUDA context included: kernels and verification evaluators alike), the peak the
   notebook's own allocator reserved (torch.cuda.max_memory_reserved), the median training
   time of one notebook, and how many runs ended `ok` on the GPU.
4. The lab's reference solutions trained on the GPU (`dllab reference run lab1 --device cuda`,
   seed 0): seconds per epoch for each part.

On a machine without a GPU (no nvidia-smi, none listed, or torch sees none) it says so and exits
0. It needs bubblewrap like `dllab grade`. `--quick`: K = 1, 2, 4, 8, 16 with N = K (2 at
K = 1), 1 epoch, references 1 epoch of LAB 1-1 and LAB 1-2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DLLAB = [sys.executable, "-m", "grader.cli"]
MARK = "dllab-bench"


def gpu_notebook(student: int, epochs: int) -> nbformat.NotebookNode:
    """The sample LAB 1-1 notebook (grader.samples) with the tutorial's GPU lines and the
    bench's own prints: training seconds, the device, the allocator's peak."""
    from grader.samples import cells, notebook

    def edit(text: str, old: str, new: str) -> str:
        assert old in text, f"the sample cells changed: {old!r} not found"
        return text.replace(old, new)

    model = edit(cells.LENET, "net = Net()\n",
                 "net = Net()\ndevice = torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')\n"
                 "net.to(device)\nprint(device)\n")
    train = edit(cells.cifar_train(epochs), "        inputs, labels = data\n",
                 "        inputs, labels = data[0].to(device), data[1].to(device)\n")
    train = f"import time\nstarted = time.time()\n{train}\nprint('{MARK} train_s %.2f' % (time.time() - started))\n"
    test = edit(cells.CIFAR_TEST, "        images, labels = data\n",
                "        images, labels = data[0].to(device), data[1].to(device)\n")
    per_class = edit(cells.CIFAR_PER_CLASS, "        images, labels = data\n",
                     "        images, labels = data[0].to(device), data[1].to(device)\n")
    peak = (f"print('{MARK} device', device, 'peak_reserved_mib', "
            f"torch.cuda.max_memory_reserved() // 2**20 if torch.cuda.is_available() else 0)")
    return notebook(f"# submission {student}\n" + cells.CIFAR_DATA, model, train, test, per_class,
                    cells.WEIGHT_HISTS, peak, title="LAB 1-1: CIFAR-10 CNN")


def write_batch(folder: Path, n: int, epochs: int, first: int) -> None:
    folder.mkdir(parents=True)
    for i in range(first, first + n):
        with zipfile.ZipFile(folder / f"dllab_{9100000 + i}.zip", "w") as zf:
            zf.writestr("lab1-1.ipynb", nbformat.writes(gpu_notebook(i, epochs)))


class Sampler:
    """nvidia-smi every `every_s`: the GPU's utilization and memory, and each process's memory on it."""

    def __init__(self, index: int, uuid: str, every_s: float = 0.5) -> None:
        self.index, self.uuid, self.every_s = index, uuid, every_s
        self.util: list[int] = []
        self.used: list[int] = []
        self.per_pid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _smi(self, *args: str) -> list[list[str]]:
        try:
            out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [[f.strip() for f in line.split(",")] for line in out.splitlines() if line.strip()]

    def _run(self) -> None:
        while not self._stop.is_set():
            for util, used in self._smi("--query-gpu=utilization.gpu,memory.used", "-i", str(self.index)):
                if util.isdigit() and used.isdigit():
                    self.util.append(int(util))
                    self.used.append(int(used))
            for row in self._smi("--query-compute-apps=gpu_uuid,pid,used_memory"):
                if len(row) == 3 and row[0] == self.uuid and row[1].isdigit() and row[2].isdigit():
                    self.per_pid[int(row[1])] = max(self.per_pid.get(int(row[1]), 0), int(row[2]))
            self._stop.wait(self.every_s)


def _p95(values: list[int]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else float("nan")


def read_runs(out: Path) -> list[dict]:
    """Per graded notebook: its status, the device it trained on, its training seconds and peak."""
    runs = []
    for folder in sorted((out / "runs").glob("*/lab1-1.ipynb")):
        run = {"student": folder.parent.name}
        try:
            run["status"] = json.loads((folder / "run.json").read_text())["status"]
            nb = nbformat.read(folder / "executed.ipynb", as_version=4)
        except (OSError, ValueError, KeyError):
            runs.append({**run, "status": "missing"})
            continue
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        for line in text.splitlines():
            words = line.split()
            if words[:2] == [MARK, "train_s"]:
                run["train_s"] = float(words[2])
            elif words[:2] == [MARK, "device"] and len(words) >= 5:
                run["device"], run["peak_reserved_mib"] = words[2], int(words[4])
        log = (folder / "log.txt").read_text(errors="replace") if (folder / "log.txt").is_file() else ""
        run["gpu_log"] = [ln for ln in log.splitlines() if "GPU" in ln][:3]
        runs.append(run)
    return runs


def grade_at(k: int, *, n: int, gpus: list[int], uuid: str, data: Path, work: Path, epochs: int) -> dict:
    subs, out = work / f"subs-k{k}", work / f"out-k{k}"
    write_batch(subs, n, epochs, first=1000 * k)
    cmd = [*DLLAB, "grade", str(subs), "--lab", "lab1", "--data", f"cifar10={data}", "--data", f"food11={data}",
           "--out", str(out), "--gpus", ",".join(map(str, gpus)), "--runs-per-gpu", str(k), "--no-pdf",
           "--no-similarity"]
    env = {k_: v for k_, v in os.environ.items() if k_ != "DLLAB_RUN_CACHE"}
    with Sampler(gpus[0], uuid) as sampler:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    runs = read_runs(out)
    trains = [r["train_s"] for r in runs if "train_s" in r]
    peaks = [r["peak_reserved_mib"] for r in runs if "peak_reserved_mib" in r]
    pids = sorted(sampler.per_pid.values())
    return {"k": k, "n": n, "exit": done.returncode, "wall_s": round(wall, 1),
            "per_hour": round(n / wall * 3600, 1),
            "ok_on_gpu": sum(r.get("status") == "ok" and str(r.get("device", "")).startswith("cuda") for r in runs),
            "gpu_util_mean": round(statistics.fmean(sampler.util), 1) if sampler.util else None,
            "gpu_util_p95": _p95(sampler.util), "gpu_used_max_mib": max(sampler.used, default=None),
            "process_peak_max_mib": pids[-1] if pids else None,
            "process_peak_median_mib": statistics.median(pids) if pids else None,
            "reserved_peak_max_mib": max(peaks, default=None),
            "train_s_median": round(statistics.median(trains), 2) if trains else None,
            "gpu_log": runs[0]["gpu_log"] if runs else [],
            "stderr_tail": done.stderr.strip().splitlines()[-3:] if done.returncode else []}


def reference_epochs(data: Path, *, epochs: int | None, parts: list[str]) -> dict:
    from grader.reference_run import run_reference

    doc = run_reference(ROOT / "labs" / "lab1", data={"cifar10": data, "food11": data}, device="cuda",
                        epochs=epochs, seeds=1, only=parts)
    return {p: {"epochs": v["epochs"], "wall_per_epoch_s": v["timing"]["wall_per_epoch_s"]}
            for p, v in doc["parts"].items()}


def no_gpu() -> str | None:
    """Why this machine has no GPU to measure, or None."""
    from grader.gpu import host_gpus

    gpus, why = host_gpus()
    if not gpus:
        return why
    import torch

    return None if torch.cuda.is_available() else "torch sees no CUDA device"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one wave per K, 1 epoch (sized for ~8 min on an H200)")
    ap.add_argument("--gpu", default="0", help="GPU indices to grade on, e.g. 0 or 0,1 (default 0)")
    ap.add_argument("--ks", default="1,2,4,8,16", help="runs per GPU to measure (default 1,2,4,8,16)")
    ap.add_argument("--n", type=int, help="submissions per K (default 2K, at least 4; --quick: K, at least 2)")
    ap.add_argument("--epochs", type=int, help="epochs each notebook trains (default 2; --quick 1)")
    ap.add_argument("--size", default="small", choices=("tiny", "small", "full"), help="stand-in size (default small)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)

    why = no_gpu()
    if why is not None:
        print(f"bench_gpu: no GPU on this machine ({why}): nothing to measure")
        return 0
    from grader import sandbox
    from grader.errors import GraderError
    from grader.gpu import host_gpus, mps_pipe

    try:
        sandbox.check_bwrap()
    except GraderError as exc:
        print(f"bench_gpu: the sandbox cannot run here: {exc}", file=sys.stderr)
        return 2
    gpus = [int(g) for g in args.gpu.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    epochs = args.epochs or (1 if args.quick else 2)
    info = {g.index: g for g in host_gpus()[0]}
    first = info[gpus[0]]
    import torch

    # nvidia-smi's name: no CUDA context in this process while the batches run
    name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(gpus[0])],
                          capture_output=True, text=True, check=False).stdout.strip()
    print(f"GPU {gpus[0]}: {name}, {first.memory_mib} MiB; {os.cpu_count()} CPU cores; "
          f"MPS: {mps_pipe() or 'none'}; torch {torch.__version__}; {len(gpus)} GPU(s) graded on")
    results: dict = {"gpus": gpus, "gpu_name": name, "memory_mib": first.memory_mib,
                     "cpu_cores": os.cpu_count(), "mps": str(mps_pipe() or ""), "epochs": epochs, "size": args.size,
                     "batches": []}
    with tempfile.TemporaryDirectory(prefix="dllab-bench-gpu-") as tmp:
        work = Path(tmp)
        from grader.datasets import synth

        t0 = time.perf_counter()
        synth(work / "data", size=args.size, names=["cifar10", "food11"])
        print(f"stand-in data ({args.size}) in {time.perf_counter() - t0:.0f} s; LAB 1-1, batch size 4, "
              f"{epochs} epoch(s) per notebook")
        print(f"{'K':>3} {'subs':>4} {'wall s':>7} {'subs/h':>7} {'x 1st':>6} {'util %':>6} {'p95 %':>6} "
              f"{'proc MiB':>8} {'alloc MiB':>9} {'train s':>7} {'ok/gpu':>6}")
        base = None
        for k in ks:
            n = args.n or (max(2, k) if args.quick else max(4, 2 * k)) * len(gpus)
            r = grade_at(k, n=n, gpus=gpus, uuid=first.uuid, data=work / "data", work=work, epochs=epochs)
            results["batches"].append(r)
            base = base or r["per_hour"]
            print(f"{k:>3} {n:>4} {r['wall_s']:>7.1f} {r['per_hour']:>7.1f} {r['per_hour'] / base:>6.2f} "
                  f"{r['gpu_util_mean'] if r['gpu_util_mean'] is not None else '-':>6} {r['gpu_util_p95']:>6} "
                  f"{r['process_peak_max_mib'] or '-':>8} {r['reserved_peak_max_mib'] or '-':>9} "
                  f"{r['train_s_median'] or '-':>7} {r['ok_on_gpu']:>3}/{n:<2}", flush=True)
            if r["exit"] not in (0, 1):
                print(f"    dllab grade exited {r['exit']}: {' | '.join(r['stderr_tail'])}")
        for line in results["batches"][-1]["gpu_log"] if results["batches"] else []:
            print(f"  run log (K={ks[-1]}): {line}")
        parts = ["lab1-1", "lab1-2"] if args.quick else ["lab1-1", "lab1-2", "lab1-3"]
        t0 = time.perf_counter()
        refs = reference_epochs(work / "data", epochs=1 if args.quick else None, parts=parts)
        results["references"] = refs
        print(f"references on the GPU (seed 0, {time.perf_counter() - t0:.0f} s): " + "; ".join(
            f"{p} {v['wall_per_epoch_s']:.2f} s/epoch ({v['epochs']} epoch(s))" for p, v in refs.items()
            if v["wall_per_epoch_s"] is not None))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
