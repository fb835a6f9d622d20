"""The negative-transfer guard on real tasks: adapted (no guard), source-only and guarded target accuracy.

Each run trains the adapted model and its source-only twin (same seed and settings); the guard decides without
target labels which one to keep (`transferkit.measure.guard`). The report of every run scores all three on the
target test split, so one run per (task, method, seed) gives the whole comparison. Issue 4's goals: the guarded
result never more than 1 point below source-only where adaptation hurts, and at least 90% of the adaptation's
gain kept where it helps.

    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/guard.py --methods dan,mcc   # Amazon, 12 tasks
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from transferkit.config import parse_config
from transferkit.experiment import fit

DOMAINS = {"B": "books", "D": "dvd", "E": "electronics", "K": "kitchen"}
TASKS = [f"{s}-{t}" for s in DOMAINS for t in DOMAINS if s != t]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--methods", default="dan,mcc")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output-dir", default="runs/bench-guard")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"# negative-transfer guard, {date.today()}\n\ncommand: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s); "
          f"torch {torch.__version__}; Amazon MLP 5000-50-2 as in benchmarks/amazon.py, {args.epochs} epochs, "
          f"seeds {seeds}\n", flush=True)
    rows: dict[str, dict[str, dict[str, list[float]]]] = {}
    t_all = time.perf_counter()
    for method in args.methods.split(","):
        rows[method] = {}
        for task in args.tasks.split(","):
            s, t = task.split("-")
            cfg = parse_config({
                "name": f"{task}-{method.replace('+', 'plus')}", "output_dir": args.output_dir, "seeds": seeds,
                "data": {"source": f"amazon-{DOMAINS[s]}", "target": f"amazon-{DOMAINS[t]}", "val_fraction": 0.1},
                "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 50, "depth": 1, "dropout": 0.0}},
                "adapt": {"method": method, "guard": True},
                "train": {"epochs": args.epochs, "lr": 1e-3, "threads": args.threads},
            })
            report = fit(cfg, overwrite=True, progress=False)
            per = report["per_seed"]
            rows[method][task] = {
                "adapted": [r["evaluations"]["target_adapted"]["accuracy"] for r in per],
                "source_only": [r["evaluations"]["target_source_only"]["accuracy"] for r in per],
                "guarded": [r["evaluations"]["target"]["accuracy"] for r in per],
                "kept_adapted": [r["guard"]["keep"] == "adapted" for r in per],
            }
            r = rows[method][task]
            print(f"{method} {task}: adapted {100 * statistics.fmean(r['adapted']):.1f}, source-only "
                  f"{100 * statistics.fmean(r['source_only']):.1f}, guarded {100 * statistics.fmean(r['guarded']):.1f}"
                  f" (kept adapted {sum(r['kept_adapted'])}/{len(seeds)})", flush=True)
    print("\n| method | task | adapted (no guard) | source-only | guarded | kept adapted |")
    print("|---|---|---:|---:|---:|---:|")
    for method, tasks in rows.items():
        for task, r in tasks.items():
            print(f"| {method} | {task} | " + " | ".join(f"{100 * statistics.fmean(r[k]):.1f}"
                                                        for k in ("adapted", "source_only", "guarded"))
                  + f" | {sum(r['kept_adapted'])}/{len(seeds)} |")
        mean = {k: 100 * statistics.fmean(statistics.fmean(r[k]) for r in tasks.values())
                for k in ("adapted", "source_only", "guarded")}
        gain = mean["adapted"] - mean["source_only"]
        kept = (mean["guarded"] - mean["source_only"]) / gain if gain > 0 else None
        print(f"| {method} | **average** | {mean['adapted']:.1f} | {mean['source_only']:.1f} | {mean['guarded']:.1f} | "
              + (f"{100 * kept:.0f}% of the gain kept |" if kept is not None else
                 f"guarded − source-only {mean['guarded'] - mean['source_only']:+.1f} |"))
    print(f"\ntotal {(time.perf_counter() - t_all) / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
