"""MNIST <-> USPS with a LeNet-style CNN trained from scratch: source-only and every adaptation method.

Protocol (as in the Transfer-Learning-Library digits tables): 28x28 grey inputs (USPS 16x16 resized), source
train split labelled, target train split unlabelled, scored on the target test split; the checkpoint is chosen
on a source validation split (10% of the source train split). Target labels choose nothing.

    .venv/bin/python benchmarks/digits.py --tasks mnist-usps,usps-mnist --seeds 0,1,2 --epochs 20
    .venv/bin/python benchmarks/digits.py --methods none,dann --seeds 0 --epochs 2 --limit 2000   # smoke run

Needs the benchmark data root: TRANSFERKIT_DATA (e.g. ../shared/data) with mnist/ and usps/.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from transferkit.adapt.methods import list_methods
from transferkit.config import parse_config
from transferkit.evaluate.metrics import format_mean_std
from transferkit.experiment import fit

REFERENCE = {  # Transfer-Learning-Library benchmark tables, target accuracy %
    "mnist-usps": {"none": 82.1, "dan": 86.0, "dann": 91.7, "cdan": 96.0, "mdd": 94.8, "mcc": 95.1},
    "usps-mnist": {"none": 74.6, "dan": 89.5, "dann": 95.2, "cdan": 97.7, "mdd": 97.8, "mcc": 94.6},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mnist-usps,usps-mnist")
    p.add_argument("--methods", default="none," + ",".join(list_methods()))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="use only the first N source train items (smoke runs)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output-dir", default="runs/bench-digits")
    p.add_argument("--results", default="benchmarks/results")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"# digits benchmark, {date.today()}\n\ncommand: `{command}`")
    print(f"machine: {platform.platform()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
    print(f"epochs {args.epochs}, lr {args.lr}, batch {args.batch_size} (+ the same of target), seeds {seeds}\n")

    rows = []
    for task in args.tasks.split(","):
        source, target = task.split("-")
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            cfg = parse_config({
                "name": f"{task}-{method}", "output_dir": args.output_dir, "seeds": seeds,
                "data": {"source": source, "target": target, "val_fraction": 0.1, "batch_size": args.batch_size},
                "model": {"backbone": "lenet"},
                "adapt": {"method": method},
                "train": {"epochs": args.epochs, "lr": args.lr, "threads": args.threads},
            })
            if args.limit:  # smoke runs: a class-balanced subset of the source
                cfg.data.source_per_class = args.limit // 10
            report = fit(cfg, overwrite=True, progress=False)
            acc = report["summary"]["target"]["accuracy"]["values"]
            ref = REFERENCE.get(task, {}).get(method)
            rows.append((task, method, format_mean_std(acc), ref, time.perf_counter() - t0))
            print(f"| {task} | {method} | {rows[-1][2]} | {ref if ref is not None else '–'} | {rows[-1][4]:.0f} s |",
                  flush=True)

    table = ["| task | method | target acc. % (mean ± std) | reference % | time |", "|---|---|---|---|---|"]
    table += [f"| {t} | {m} | {a} | {r if r is not None else '–'} | {s:.0f} s |" for t, m, a, r, s in rows]
    print("\n" + "\n".join(table))
    out = Path(args.results) / f"digits-{date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
