"""Does transferability rank backbones the way their trained accuracy does? Kendall's τ per metric and task.

A zoo of candidates available offline — EfficientNet-Lite0 and MobileNetV2 with ImageNet weights (pip packages)
and the same two architectures randomly initialised, a LeNet trained on ``mnist-5k`` here (a source-trained
model, like the demo's) and a random LeNet — is scored on each target task's train split by every metric
(``transferkit rank``'s code path), then each candidate is trained on the same split and scored on the task's
test split. ``--train probe`` (default) trains a linear probe on the frozen features; ``--train full`` fine-tunes
every layer (one recipe for all: Adam, cosine schedule), which on this CPU needs ``--image-size`` well below the
weights' 224 px (scores and training then both see that size). τ compares the metric's order with the accuracy
order (1 = identical).

    .venv/bin/python benchmarks/rank_tau.py                      # digits-uci, and usps when TRANSFERKIT_DATA is set
    .venv/bin/python benchmarks/rank_tau.py --train full --image-size 112 --epochs 5 --lr 3e-4

Checks from the issue: LogME τ >= 0.6 on both tasks; each ImageNet backbone above its random twin.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch
from scipy.stats import kendalltau

from transferkit.config import parse_config
from transferkit.data import load_data
from transferkit.experiment import fit
from transferkit.measure.ranking import rank_backbones

ZOO = ["timm:tf_efficientnet_lite0+pretrained", "timm:tf_efficientnet_lite0", "torchvision:mobilenet_v2+pretrained",
       "torchvision:mobilenet_v2", "lenet"]
METRICS = ["logme", "hscore", "gbc", "transrate"]


def source_lenet(out: Path) -> str:
    """A LeNet trained on mnist-5k (5 epochs, seed 0): the source-trained candidate."""
    cfg = parse_config({"name": "lenet-mnist5k", "output_dir": str(out), "data": {"source": "mnist-5k"},
                        "model": {"backbone": "lenet"}, "train": {"epochs": 5, "lr": 1e-3}})
    fit(cfg, overwrite=True, progress=False)
    return f"file:{Path(cfg.run_path) / 'model.safetensors'}"


def trained_accuracy(task: str, candidate: str, per_class: int | None, out: Path, args: argparse.Namespace) -> float:
    spec, pretrained = (candidate[: -len("+pretrained")], True) if candidate.endswith("+pretrained") else (candidate,
                                                                                                           False)
    name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in f"{task}-{candidate}")[:120]
    cfg = parse_config({
        "name": name, "output_dir": str(out), "seeds": [0],
        "data": {"source": task, "val_fraction": 0.0, "source_per_class": per_class, "batch_size": 64},
        "model": {"backbone": spec, "pretrained": pretrained, "backbone_kwargs": _size(spec, args.image_size)},
        "finetune": {"strategy": "linear-probe" if args.train == "probe" else "full"},
        "train": {"epochs": args.epochs, "lr": args.lr, "scheduler": "cosine"},
    })
    report = fit(cfg, overwrite=True, progress=False)
    return float(report["summary"]["source"]["accuracy"]["values"][0])


def _size(spec: str, image_size: int | None) -> dict[str, int]:
    return {"image_size": image_size} if image_size and spec.startswith(("timm:", "torchvision:")) else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_tasks = "digits-uci,usps" if os.environ.get("TRANSFERKIT_DATA") else "digits-uci"
    p.add_argument("--tasks", default=default_tasks)
    p.add_argument("--per-class", type=int, default=100, help="train items per class (usps); digits-uci uses all")
    p.add_argument("--train", choices=["probe", "full"], default="probe", help="linear probe or full fine-tuning")
    p.add_argument("--epochs", type=int, default=30, help="training epochs")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (Adam)")
    p.add_argument("--image-size", type=int, default=None, help="resize for timm/torchvision candidates")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output-dir", default="runs/bench-rank-tau")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    print(f"# transferability vs trained accuracy, {date.today()}\n\ncommand: `{' '.join(sys.argv)}`")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
          f"torch {torch.__version__}\n", flush=True)
    zoo = [*ZOO, source_lenet(out)]
    results = {}
    for task in args.tasks.split(","):
        per_class = None if task == "digits-uci" else args.per_class
        ds = load_data(task, "train")
        if per_class is not None:
            ds = ds.per_class(per_class, seed=0)
        t0 = time.perf_counter()
        rows = {r.candidate: r for r in rank_backbones(ds, zoo, METRICS, progress=False, image_size=args.image_size)}
        acc = {c: trained_accuracy(task, c, per_class, out, args) for c in zoo}
        taus = {m: float(kendalltau([rows[c].scores[m] for c in zoo], [acc[c] for c in zoo])[0]) for m in METRICS}
        results[task] = {"n": len(ds), "scores": {c: rows[c].scores for c in zoo}, "accuracy": acc, "tau": taus}
        took = time.perf_counter() - t0
        how = "linear probe" if args.train == "probe" else f"full fine-tuning, {args.epochs} epochs, lr {args.lr:g}"
        size = f", images {args.image_size} px" if args.image_size else ""
        print(f"## {task} ({len(ds)} train items, {how}{size}, scored on the test split; {took:.0f} s)\n")
        print("| candidate | " + " | ".join(METRICS) + " | trained acc. % |\n|---|" + "---:|" * (len(METRICS) + 1))
        for c in sorted(zoo, key=lambda c: -acc[c]):
            short = c if not c.startswith("file:") else "lenet trained on mnist-5k (file:)"
            cells = " | ".join(f"{rows[c].scores[m]:.4g}" for m in METRICS)
            print(f"| {short} | {cells} | {100 * acc[c]:.1f} |")
        print("| **Kendall τ** | " + " | ".join(f"**{taus[m]:.2f}**" for m in METRICS) + " | |\n", flush=True)
        for arch in ("timm:tf_efficientnet_lite0", "torchvision:mobilenet_v2"):
            better = rows[arch + "+pretrained"].scores["logme"] > rows[arch].scores["logme"]
            print(f"LogME ranks {arch}+pretrained {'above' if better else 'BELOW'} its random twin")
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
