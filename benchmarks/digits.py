"""MNIST <-> USPS with a LeNet-style CNN trained from scratch: source-only and every adaptation method.

Protocol (as in the Transfer-Learning-Library digits tables): 28x28 grey inputs (USPS 16x16 resized), source
train split labelled, target train split unlabelled, scored on the target test split; the checkpoint is chosen
on a source validation split (10% of the source train split). Target labels choose nothing. (The
Transfer-Learning-Library scripts select their best epoch on the target test set itself, which favours them.)

    .venv/bin/python benchmarks/digits.py --tasks mnist-usps,usps-mnist --seeds 0,1,2 --epochs 20
    .venv/bin/python benchmarks/digits.py --methods none,dann --seeds 0 --epochs 2 --limit 2000   # smoke run
    # closer to the reference recipe (SGD, batch 128, bottleneck 256), 4 runs at a time on one GPU:
    .venv/bin/python benchmarks/digits.py --optimizer sgd --lr mnist-usps=0.01,usps-mnist=0.1 \\
        --weight-decay 1e-3 --batch-size 128 --bottleneck-dim 256 --epochs 40 --jobs 4

Each (task, method, seed) runs in its own process (``--jobs`` of them at a time, one torch thread each); a
finished run is appended to ``--results-jsonl`` at once, so an interrupted benchmark keeps what it measured,
and ``--skip-done`` picks up where it stopped.

Needs the benchmark data root: TRANSFERKIT_DATA (e.g. ../shared/data) with mnist/ and usps/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import torch

from transferkit.adapt.methods import list_methods
from transferkit.evaluate.metrics import format_mean_std

REFERENCE = {  # Transfer-Learning-Library benchmark tables, target accuracy %
    "mnist-usps": {"none": 82.1, "dan": 86.0, "dann": 91.7, "cdan": 96.0, "mdd": 94.8, "mcc": 95.1},
    "usps-mnist": {"none": 74.6, "dan": 89.5, "dann": 95.2, "cdan": 97.7, "mdd": 97.8, "mcc": 94.6},
}


def per_task(text: str, task: str) -> float:
    """``0.01`` for every task, or ``mnist-usps=0.01,usps-mnist=0.1``."""
    if "=" not in text:
        return float(text)
    values = dict(part.split("=") for part in text.split(","))
    return float(values[task])


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train and score one (task, method, seed) in this process."""
    from transferkit.config import parse_config
    from transferkit.experiment import fit
    from transferkit.runs import read_jsonl

    a = job["args"]
    source, target = job["task"].split("-")
    model: dict[str, Any] = {"backbone": "lenet"}
    if a["bottleneck_dim"]:
        model["bottleneck_dim"] = a["bottleneck_dim"]
    name = f"{job['task']}-{job['method'].replace('+', 'plus')}-s{job['seed']}"  # run names: no '+'
    cfg = parse_config({
        "name": name, "output_dir": a["output_dir"], "seeds": [job["seed"]],
        "data": {"source": source, "target": target, "val_fraction": 0.1, "batch_size": a["batch_size"],
                 "eval_batch_size": 1024},
        "model": model,
        "adapt": {"method": job["method"], "guard": a["guard"]},  # off by default: measure the method itself
        "train": {"epochs": a["epochs"], "lr": per_task(a["lr"], job["task"]), "optimizer": a["optimizer"],
                  "weight_decay": a["weight_decay"], "threads": a["threads"], "device": a["device"],
                  "mixed_precision": a["mixed_precision"], "compile": a["compile"],
                  "sync_every_steps": a["sync_every_steps"]},
    })
    if a["limit"]:  # smoke runs: a class-balanced subset of the source
        cfg.data.source_per_class = a["limit"] // 10
    t0 = time.perf_counter()
    report = fit(cfg, overwrite=True, progress=False)
    metrics = Path(cfg.run_path) / "metrics.jsonl"
    epochs = [r["epoch_time_s"] for r in read_jsonl(metrics)] if metrics.exists() else []
    return {
        "task": job["task"], "method": job["method"], "seed": job["seed"],
        "acc": report["summary"]["target"]["accuracy"]["values"][0],
        "seconds": round(time.perf_counter() - t0, 1),
        # after the first epoch where there are more (the first holds any compilation and warm-up)
        "epoch_s": round(statistics.median(epochs[1:] or epochs), 3) if epochs else None,
        "first_epoch_s": round(epochs[0], 3) if epochs else None,
        "compile": a["compile"],
        "device": "cuda" if torch.cuda.is_available() and a["device"] != "cpu" else "cpu",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mnist-usps,usps-mnist")
    p.add_argument("--methods", default="none," + ",".join(list_methods()))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", default="1e-3", help="one value, or per task: mnist-usps=0.01,usps-mnist=0.1")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bottleneck-dim", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="use only N source train items (smoke runs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--guard", action="store_true", help="keep transferkit's negative-transfer guard on")
    p.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="no")
    p.add_argument("--compile", choices=["off", "default", "reduce-overhead"], default="off",
                   help="train.compile (reduce-overhead: CUDA graphs on a GPU)")
    p.add_argument("--sync-every-steps", type=int, default=None,
                   help="train.sync_every_steps (default: every step on a CPU, every 50 on a GPU)")
    p.add_argument("--output-dir", default="runs/bench-digits")
    p.add_argument("--results-jsonl", default=None, help="append each finished run here (default: under --results)")
    p.add_argument("--skip-done", action="store_true", help="skip runs already in --results-jsonl")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(json.loads(Path(args.child).read_text()))), flush=True)
        return

    seeds = [int(s) for s in args.seeds.split(",")]
    command = " ".join([Path(sys.executable).name, *sys.argv])
    results = Path(args.results_jsonl or Path(args.results) / f"digits-{date.today()}.jsonl")
    results.parent.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else "none"
    print(f"# digits benchmark, {date.today()}\n\ncommand: `{command}`")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, GPU {gpu}; torch {torch.__version__}; "
          f"{args.jobs} runs at a time, {args.threads} torch thread(s) each")
    print(f"epochs {args.epochs}, {args.optimizer} lr {args.lr}, weight decay {args.weight_decay}, batch "
          f"{args.batch_size} (+ the same of target), bottleneck {args.bottleneck_dim}, seeds {seeds}\n", flush=True)

    done = set()
    if args.skip_done and results.exists():
        done = {(r["task"], r["method"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())}
    jobs = [{"task": t, "method": m, "seed": s, "args": vars(args)}
            for m in args.methods.split(",") for t in args.tasks.split(",") for s in seeds
            if (t, m, s) not in done]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(lambda job: _spawn(job, results), jobs):
            if row is not None:
                print(f"{row['task']} {row['method']} seed {row['seed']}: {row['acc'] * 100:.1f}% "
                      f"({row['seconds']:.0f} s, {row['epoch_s']} s/epoch)", flush=True)
    print("\n" + summary_table(results, args.tasks.split(","), args.methods.split(",")))


def _spawn(job: dict[str, Any], results: Path) -> dict[str, Any] | None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    env = {**os.environ, "OMP_NUM_THREADS": str(job["args"]["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--child", f.name], capture_output=True, text=True, env=env)
    os.unlink(f.name)
    if proc.returncode != 0:
        print(f"FAILED {job['task']} {job['method']} seed {job['seed']}:\n{proc.stderr[-2000:]}", flush=True)
        return None
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    with results.open("a") as out:  # one short line per write: appends from several threads stay whole
        out.write(json.dumps(row) + "\n")
    return row


def summary_table(results: Path, tasks: list[str], methods: list[str]) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    lines = ["| task | method | target acc. % (mean ± std) | seeds | reference % | s/epoch (median) |",
             "|---|---|---|---|---|---|"]
    for t in tasks:
        for m in methods:
            mine = [r for r in rows if r["task"] == t and r["method"] == m]
            if not mine:
                continue
            accs = [r["acc"] for r in sorted(mine, key=lambda r: r["seed"])]
            epoch_s = [r["epoch_s"] for r in mine if r.get("epoch_s")]
            ref = REFERENCE.get(t, {}).get(m)
            lines.append(f"| {t} | {m} | {format_mean_std(accs)} | {len(accs)} | {ref if ref is not None else '–'} | "
                         f"{statistics.median(epoch_s) if epoch_s else '–'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
