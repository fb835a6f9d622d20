"""Free Spoken Digit Dataset, leave one speaker out: source-only and adaptation methods, two audio backbones.

Protocol. FSDD has six speakers (the domains), 50 recordings of each digit by each speaker, 8 kHz. Each of the
six tasks trains on the other five speakers (``fsdd-not-<speaker>``, labelled) and adapts to the held-out
speaker (``fsdd-<speaker>``, unlabelled); the score is the held-out speaker's conventional test split (index
0-4 of every digit, 50 recordings). Training uses index 10-49 (split ``fit``): the source's index 5-9 (split
``val``, 250 recordings of the five source speakers) chooses the checkpoint (the epoch with the best source
validation accuracy, the earliest on ties), and the target's index 10-49 are its unlabelled training data.
Target labels choose nothing. The negative-transfer guard is off (``adapt.guard: false``): the table measures
each method itself. Each method runs with its own default λ and options.

Backbones:

- ``cnn``: ``logmel-cnn`` trained from scratch at 8 kHz: 32 mel bins every 20 ms (1 s clips), three 1-D temporal
  conv-BN-ReLU-pool blocks of 64 channels, global average pooling (64-d); AdamW lr 3e-3, cosine, batch 64.
- ``embedding``: Google's speech embedding (``onnx:speech-embedding``, the ONNX files openwakeword 0.4.0 ships)
  frozen, 1.5 s clips at 16 kHz, mean-pooled 96-d; ``finetune.strategy: linear-probe`` with a 64-d
  Linear-BN-ReLU bottleneck (``model.bottleneck_dim``) and the linear head on top; AdamW lr 1e-3, batch 64.

    .venv/bin/python benchmarks/fsdd.py --threads 1 --out benchmarks/results/fsdd.md        # everything
    .venv/bin/python benchmarks/fsdd.py --backbones embedding --speakers george --methods none,dann --seeds 0

Every finished run is appended to ``--results-jsonl`` at once; ``--skip-done`` continues an interrupted
benchmark. CPU time is this process's (``time.process_time``), so other work on a shared machine does not count;
frozen-feature extraction is included (a fresh feature cache unless ``--cache-dir``).

Needs the benchmark data root: TRANSFERKIT_DATA (e.g. ../shared/data) with fsdd/recordings/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from machine import cpu_name, write_results

from transferkit.data.benchmarks import FSDD_SPEAKERS
from transferkit.evaluate.metrics import format_mean_std

METHODS = "none,dann,cdan,mcc,dan"
REFERENCE = "MFCC + logistic regression: 55-70 per held-out speaker (../shared/data/README.md)"
GOAL_EMBEDDING = 0.95  # issue 5: the best adapted model's 6-task mean with the speech embedding
BACKBONES: dict[str, dict[str, Any]] = {
    "cnn": {
        "model": {"backbone": "logmel-cnn",
                  "backbone_kwargs": {"sample_rate": 8000, "seconds": 1.0, "n_mels": 32, "hop_length": 160,
                                      "conv": "1d", "channels": [64, 64, 64]}},
        "finetune": {"strategy": "full"},
    },
    "embedding": {
        "model": {"backbone": "onnx:speech-embedding", "backbone_kwargs": {"seconds": 1.5, "pooling": "mean"},
                  "bottleneck_dim": 64},
        "finetune": {"strategy": "linear-probe"},
    },
}


def run_config(kind: str, speaker: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    base = BACKBONES[kind]
    model = json.loads(json.dumps(base["model"]))
    if kind == "embedding":
        model["bottleneck_dim"] = args.bottleneck_dim
    return {
        "name": f"{kind}-{speaker}-{method.replace('+', 'plus')}-s{seed}",
        "output_dir": args.output_dir,
        "seeds": [seed],
        "data": {"source": f"fsdd-not-{speaker}", "target": f"fsdd-{speaker}", "train_split": "fit",
                 "val_split": "val", "eval_split": "test", "batch_size": args.batch_size, "root": args.root},
        "model": model,
        "finetune": base["finetune"],
        "adapt": {"method": method, "guard": False},  # measure the method itself
        "train": {"epochs": args.cnn_epochs if kind == "cnn" else args.emb_epochs,
                  "lr": args.cnn_lr if kind == "cnn" else args.emb_lr, "threads": args.threads},
    }


def run_one(kind: str, speaker: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    cfg = parse_config(run_config(kind, speaker, method, seed, args))
    t0, c0 = time.perf_counter(), time.process_time()
    report = fit(cfg, overwrite=True, progress=False)
    fit_info = report["per_seed"][0]["fit"]
    return {
        "backbone": kind, "speaker": speaker, "method": method, "seed": seed,
        "acc": report["summary"]["target"]["accuracy"]["values"][0],
        "source_acc": report["summary"]["source"]["accuracy"]["values"][0],
        "best_epoch": fit_info["best_epoch"], "best_val_acc": fit_info["best_val_acc"],
        "cpu_s": round(time.process_time() - c0, 2), "wall_s": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="embedding,cnn", help="embedding and/or cnn")
    p.add_argument("--speakers", default=",".join(FSDD_SPEAKERS), help="held-out speakers (default: all six)")
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cnn-epochs", type=int, default=5)
    p.add_argument("--emb-epochs", type=int, default=6)
    p.add_argument("--cnn-lr", type=float, default=3e-3)
    p.add_argument("--emb-lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bottleneck-dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch (and onnxruntime) intra-op threads")
    p.add_argument("--root", default=None, help="benchmark data root (default: $TRANSFERKIT_DATA)")
    p.add_argument("--output-dir", default="runs/bench-fsdd")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: a fresh temporary folder)")
    p.add_argument("--results-jsonl", default="benchmarks/results/fsdd.jsonl")
    p.add_argument("--skip-done", action="store_true", help="skip runs already in --results-jsonl")
    p.add_argument("--out", default=None, help="write the report (markdown) here, and its numbers as .json")
    args = p.parse_args()
    kinds, speakers, methods = args.backbones.split(","), args.speakers.split(","), args.methods.split(",")
    bad = [s for s in speakers if s not in FSDD_SPEAKERS] + [k for k in kinds if k not in BACKBONES]
    if bad:
        p.error(f"unknown speaker(s)/backbone(s) {bad}; speakers {', '.join(FSDD_SPEAKERS)}; backbones cnn, embedding")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    os.environ["TRANSFERKIT_CACHE"] = args.cache_dir or tempfile.mkdtemp(prefix="fsdd-features-")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    results = Path(args.results_jsonl)
    results.parent.mkdir(parents=True, exist_ok=True)

    header = [
        f"# FSDD leave-one-speaker-out benchmark, {date.today()}",
        "",
        f"command: `{command}`",
        "",
        f"machine: {platform.platform()}, {cpu_name()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s)",
        f"versions: Python {platform.python_version()}, torch {torch.__version__}, transferkit "
        f"{version('transferkit')}, onnxruntime {version('onnxruntime')}, openwakeword files "
        f"{_package_version('openwakeword')}, numpy {version('numpy')}",
        f"setup: cnn = logmel-cnn from scratch, {args.cnn_epochs} epochs, lr {args.cnn_lr}; embedding = frozen "
        f"onnx:speech-embedding + {args.bottleneck_dim}-d bottleneck + linear head (linear-probe), {args.emb_epochs} "
        f"epochs, lr {args.emb_lr}; AdamW, cosine, batch {args.batch_size} (+ the same of target); seeds {seeds}; "
        "train on index 10-49, checkpoint = best accuracy on the source speakers' index 5-9, score the held-out "
        "speaker's index 0-4; guard off; each method's default λ",
        "",
    ]
    print("\n".join(header), flush=True)

    done: set[tuple[str, str, str, int]] = set()
    if args.skip_done and results.exists():
        done = {(r["backbone"], r["speaker"], r["method"], r["seed"]) for r in _read(results)}
    elif results.exists():
        results.unlink()  # a fresh benchmark: do not mix old rows into this table
    t_all, c_all = time.perf_counter(), time.process_time()
    for kind in kinds:
        for seed in seeds:
            for speaker in speakers:
                for method in methods:
                    if (kind, speaker, method, seed) in done:
                        continue
                    row = run_one(kind, speaker, method, seed, args)
                    with results.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"{kind} {speaker} {method} seed {seed}: {100 * row['acc']:.1f}% (source "
                          f"{100 * row['source_acc']:.1f}%, best epoch {row['best_epoch']}, {row['cpu_s']:.0f} s CPU)",
                          flush=True)
    cpu_total, wall_total = time.process_time() - c_all, time.perf_counter() - t_all

    rows = [r for r in _read(results) if r["backbone"] in kinds and r["speaker"] in speakers
            and r["method"] in methods and r["seed"] in seeds]
    lines = [*header]
    for kind in kinds:
        lines += [f"## {kind}: {BACKBONES[kind]['model']['backbone']}", "", *results_table(rows, kind, speakers,
                                                                                            methods, seeds), ""]
    cpu = {k: sum(r["cpu_s"] for r in rows if r["backbone"] == k) for k in kinds}
    lines.append("CPU time of the runs in the table: " + ", ".join(f"{k} {cpu[k] / 60:.1f} min" for k in kinds)
                 + f"; this invocation {cpu_total / 60:.1f} min CPU, {wall_total / 60:.1f} min wall.")
    lines.append(f"Reference: {REFERENCE}.")
    print("\n".join(lines[len(header):]), flush=True)
    if args.out:
        write_results(args.out, lines, {
            "command": command, "date": str(date.today()), "seeds": seeds, "runs": rows,
            "cpu_seconds": cpu, "invocation_cpu_seconds": cpu_total, "invocation_wall_seconds": wall_total})


def results_table(rows: list[dict[str, Any]], kind: str, speakers: list[str], methods: list[str],
                  seeds: list[int]) -> list[str]:
    """Held-out speaker accuracy % (mean ± std over seeds) per task and method, the 6-task mean, and CPU time.

    The mean's ± is the std over seeds of each seed's task mean (seed noise, not task spread)."""
    mine = [r for r in rows if r["backbone"] == kind]

    def accs(speaker: str, method: str) -> list[float]:
        return [r["acc"] for r in sorted(mine, key=lambda r: r["seed"])
                if r["speaker"] == speaker and r["method"] == method]

    lines = ["| held-out speaker | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for s in speakers:
        lines.append(f"| {s} | " + " | ".join(format_mean_std(accs(s, m)) if accs(s, m) else "–" for m in methods)
                     + " |")
    complete = {m: all(len(accs(s, m)) == len(seeds) for s in speakers) for m in methods}
    means = {m: [statistics.fmean(accs(s, m)[i] for s in speakers) for i in range(len(seeds))]
             for m in methods if complete[m]}
    lines.append(f"| **mean ({len(speakers)} tasks)** | "
                 + " | ".join(f"**{format_mean_std(means[m])}**" if m in means else "–" for m in methods) + " |")
    cpu = {m: sum(r["cpu_s"] for r in mine if r["method"] == m) for m in methods}
    lines.append("| CPU time (all tasks, seeds) | " + " | ".join(f"{cpu[m] / 60:.1f} min" for m in methods) + " |")
    lines.append("")
    lines.append("Held-out speaker test accuracy %, mean ± sample std over seeds.")
    adapted = {m: statistics.fmean(v) for m, v in means.items() if m != "none"}
    if adapted and "none" in means:
        best = max(adapted, key=adapted.get)
        base = statistics.fmean(means["none"])
        verdict = f"Best adapted: {best} {100 * adapted[best]:.1f} vs source-only {100 * base:.1f} " + (
            f"({'above' if adapted[best] > base else 'not above'} source-only)")
        if kind == "embedding":
            verdict += f"; goal > {100 * GOAL_EMBEDDING:.0f}: {'met' if adapted[best] > GOAL_EMBEDDING else 'not met'}"
        lines.append(verdict + ".")
    return lines


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _package_version(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "not installed"


if __name__ == "__main__":
    main()
