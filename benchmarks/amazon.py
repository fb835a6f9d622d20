"""The 12 Amazon review tasks on the 5,000-d count features: an MLP, source-only and adaptation methods.

Protocol (as in the DANN paper, Ganin et al., JMLR 2016, sentiment experiments): the four domains books (B),
dvd (D), electronics (E) and kitchen (K) of Blitzer et al. (2007) as the paper's 5,000-d unigram/bigram count
vectors, labels negative/positive. For each of the 12 ordered pairs the source's 2,000 train reviews are
labelled, the target's 2,000 train reviews are unlabelled, and the target's test split (3,586-5,945 reviews) is
scored. The network is the paper's: one hidden layer of 50 ReLU units on the raw counts (backbone ``mlp``,
depth 1, no dropout), then a linear softmax head; domain methods align the 50-d hidden layer.

Hyperparameters are fixed a priori, never tuned on target labels: AdamW, lr 1e-3 with a cosine decay, weight
decay 1e-4, batch 64 source + 64 target, 20 epochs, each method's own default λ and options. The checkpoint is
the epoch with the best accuracy on a source validation split (10% of the source train split, stratified,
drawn per seed). Target labels choose nothing.

    .venv/bin/python benchmarks/amazon.py --threads 1                                  # everything
    .venv/bin/python benchmarks/amazon.py --tasks B-D,K-E --methods none,dann --seeds 0 --epochs 2  # smoke run

Needs the benchmark data root: TRANSFERKIT_DATA (e.g. ../shared/data) with amazon_svmlight/.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import write_results

from transferkit.adapt.methods import list_methods
from transferkit.config import parse_config
from transferkit.evaluate.metrics import format_mean_std
from transferkit.experiment import fit

DOMAINS = {"B": "books", "D": "dvd", "E": "electronics", "K": "kitchen"}
TASKS = [f"{s}-{t}" for s in DOMAINS for t in DOMAINS if s != t]
# DANN paper (Ganin et al., JMLR 2016, Table 2), target accuracy %: DANN on the mSDA-reduced features.
# On the raw 5,000-d features (what this script uses) the paper's DANN has e.g. B->D 78.4.
REFERENCE_MSDA_DANN = {
    "B-D": 82.9, "B-E": 80.4, "B-K": 84.3, "D-B": 82.5, "D-E": 80.9, "D-K": 84.9,
    "E-B": 77.4, "E-D": 78.1, "E-K": 88.1, "K-B": 71.8, "K-D": 78.9, "K-E": 85.6,
}
GOAL = 82.0  # issue 3: our best method's 12-task average on the raw features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help="source-target pairs of B, D, E, K (default: all 12)")
    p.add_argument("--methods", default="none," + ",".join(list_methods()))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=50, help="hidden units of the MLP (the DANN paper: 50)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="source share held out to choose the epoch")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--root", default=None, help="benchmark data root (default: $TRANSFERKIT_DATA)")
    p.add_argument("--output-dir", default="runs/bench-amazon")
    p.add_argument("--out", default=None, help="also write the report (markdown) here, and its numbers as .json")
    args = p.parse_args()
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        p.error(f"unknown task(s) {bad}; tasks are {', '.join(TASKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    command = shlex.join([Path(sys.executable).name, *sys.argv])

    header = [
        f"# Amazon reviews benchmark, {date.today()}",
        "",
        f"command: `{command}`",
        "",
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads",
        f"versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"transferkit {version('transferkit')}, scikit-learn {version('scikit-learn')}, numpy {version('numpy')}",
        f"setup: MLP 5000-{args.hidden}-2 (ReLU, dropout {args.dropout}) on the raw counts; AdamW lr {args.lr}, "
        f"cosine, {args.epochs} epochs, batch {args.batch_size} (+ the same of target); seeds {seeds}; "
        f"checkpoint: best source validation accuracy ({args.val_fraction:.0%} of the source train split)",
        "",
    ]
    print("\n".join(header), flush=True)

    values: dict[str, dict[str, list[float]]] = {m: {} for m in methods}  # method -> task -> per-seed accuracy
    best_epochs: dict[str, dict[str, list[int]]] = {m: {} for m in methods}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    t_all = time.perf_counter()
    for task in tasks:
        source, target = (f"amazon-{DOMAINS[c]}" for c in task.split("-"))
        for method in methods:
            t0 = time.perf_counter()
            cfg = parse_config({
                "name": f"{task}-{method.replace('+', 'plus')}", "output_dir": args.output_dir, "seeds": seeds,
                "data": {"source": source, "target": target, "val_fraction": args.val_fraction,
                         "batch_size": args.batch_size, "root": args.root},
                "model": {"backbone": "mlp",
                          "backbone_kwargs": {"hidden": args.hidden, "depth": 1, "dropout": args.dropout}},
                "adapt": {"method": method, "guard": False},  # measure the method itself
                "train": {"epochs": args.epochs, "lr": args.lr, "threads": args.threads},
            })
            report = fit(cfg, overwrite=True, progress=False)
            values[method][task] = [float(v) for v in report["summary"]["target"]["accuracy"]["values"]]
            best_epochs[method][task] = [int(r["fit"]["best_epoch"]) for r in report["per_seed"]]
            dt = time.perf_counter() - t0
            seconds[method] += dt
            print(f"{task} {method}: {format_mean_std(values[method][task])} (best epochs "
                  f"{best_epochs[method][task]}, {dt:.0f} s)", flush=True)
    total = time.perf_counter() - t_all

    lines = [*header, *results_table(tasks, methods, values, len(seeds)), ""]
    lines.append("Time per method (all tasks and seeds): "
                 + ", ".join(f"{m} {seconds[m] / 60:.1f} min" for m in methods) + f"; total {total / 60:.1f} min.")
    print("\n".join(lines[len(header):]), flush=True)
    if args.out:
        write_results(args.out, lines, {
            "command": command, "date": str(date.today()), "seeds": seeds, "target_accuracy": values,
            "best_epoch": best_epochs, "seconds": seconds, "total_seconds": total})


def results_table(
    tasks: list[str], methods: list[str], values: dict[str, dict[str, list[float]]], n_seeds: int
) -> list[str]:
    """Target accuracy % per task (mean ± std over seeds) and the task average, one column per method.

    The average's ± is the std over seeds of each seed's task average, so it shows seed noise, not task spread.
    """
    lines = ["| task | " + " | ".join(methods) + " | DANN paper (mSDA features) |",
             "|---|" + "---:|" * (len(methods) + 1)]
    for task in tasks:
        cells = [format_mean_std(values[m][task]) for m in methods]
        ref = REFERENCE_MSDA_DANN.get(task)
        lines.append(f"| {task.replace('-', '->')} | " + " | ".join(cells) + f" | {ref if ref else '–'} |")
    averages = {m: [statistics.fmean(values[m][t][i] for t in tasks) for i in range(n_seeds)] for m in methods}
    ref_avg = statistics.fmean(REFERENCE_MSDA_DANN[t] for t in tasks)
    lines.append(f"| **average ({len(tasks)} tasks)** | "
                 + " | ".join(f"**{format_mean_std(averages[m])}**" for m in methods) + f" | {ref_avg:.1f} |")
    best = max(methods, key=lambda m: statistics.fmean(averages[m]))
    best_avg = 100 * statistics.fmean(averages[best])
    lines += ["", "Target test accuracy %, mean ± sample std over seeds. "
              f"Best {len(tasks)}-task average: {best} {best_avg:.1f}"
              + (f" (goal >= {GOAL}: {'met' if best_avg >= GOAL else f'short by {GOAL - best_avg:.1f}'})."
                 if len(tasks) == len(TASKS) else ".")]
    return lines


if __name__ == "__main__":
    main()
