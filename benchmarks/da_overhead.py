"""Seconds per epoch of each adaptation method against source-only training on the same batches.

Same network (LeNet), same data (mnist-5k as source, digits-uci train as the unlabelled target), same batch
size and number of steps; methods are timed in turn, each repeat in a new order, with pinned threads.

    .venv/bin/python benchmarks/da_overhead.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from transferkit.adapt.methods import build_method, list_methods
from transferkit.config import TrainConfig
from transferkit.data import load_data
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.train.engine import Engine, source_cross_entropy


def one_epoch(method: str, source, target, batch_size: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = TransferModel(create_backbone("lenet"), source.classes)
    terms = [source_cross_entropy(), *build_method(method, model.feature_dim, len(source.classes))]
    engine = Engine(model, TrainConfig(epochs=1, mixed_precision="no", device="cpu"), loss_terms=terms,
                    batch_size=batch_size, seed=seed, progress=False)
    t0 = time.perf_counter()
    # source-only trains on source batches alone; the source is the longer side, so the step count is the same
    engine.fit(source, target=None if method == "none" else target)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="none," + ",".join(list_methods()))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"machine: {platform.platform()}; torch {torch.__version__}, {args.threads} thread(s)")
    source = load_data("mnist-5k", "train")
    target = load_data("digits-uci", "train").unlabelled()
    methods = args.methods.split(",")
    print(f"source {len(source)} items, target {len(target)} items, batch {args.batch_size} + {args.batch_size}; "
          f"{args.repeats} repeats\n")
    times: dict[str, list[float]] = {m: [] for m in methods}
    rng = np.random.default_rng(0)
    for r in range(args.repeats):
        for m in rng.permutation(methods):
            times[str(m)].append(one_epoch(str(m), source, target, args.batch_size, seed=r))
    base = statistics.median(times["none"]) if "none" in times else None
    print("| method | s/epoch min | median | max | × source-only (median) |")
    print("|---|---:|---:|---:|---:|")
    for m in methods:
        ts = times[m]
        ratio = f"{statistics.median(ts) / base:.2f}x" if base else "–"
        print(f"| {m} | {min(ts):.2f} | {statistics.median(ts):.2f} | {max(ts):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
