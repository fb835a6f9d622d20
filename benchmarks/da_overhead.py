"""Seconds per epoch of each adaptation method against source-only training on the same batches.

Same network (LeNet), same data (mnist-5k as source, digits-uci train as the unlabelled target), same batch
size and number of steps; methods are timed in turn, each repeat in a new order, with pinned threads.

    .venv/bin/python benchmarks/da_overhead.py --threads 1 --repeats 3
    .venv/bin/python benchmarks/da_overhead.py --precisions no,bf16 --hidden 1024,auto   # fast path, widths

``--precisions`` times every method under each ``train.mixed_precision`` (ratios against source-only of the same
precision); ``--hidden`` times the methods with a discriminator (DANN, CDAN, MDD) at each ``adapt.options.hidden``.
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


def one_epoch(method: str, source, target, batch_size: int, seed: int, precision: str = "no",
              options: dict | None = None) -> float:
    torch.manual_seed(seed)
    model = TransferModel(create_backbone("lenet"), source.classes)
    terms = [source_cross_entropy(), *build_method(method, model.feature_dim, len(source.classes), options=options)]
    engine = Engine(model, TrainConfig(epochs=1, mixed_precision=precision, device="cpu"), loss_terms=terms,
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
    p.add_argument("--precisions", default="no", help="train.mixed_precision values: no (fp32), bf16")
    p.add_argument("--hidden", default="", help="adapt.options.hidden values for DANN/CDAN/MDD, e.g. 1024,auto")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"machine: {platform.platform()}; torch {torch.__version__}, {args.threads} thread(s)")
    source = load_data("mnist-5k", "train")
    target = load_data("digits-uci", "train").unlabelled()
    methods = args.methods.split(",")
    print(f"source {len(source)} items, target {len(target)} items, batch {args.batch_size} + {args.batch_size}; "
          f"{args.repeats} repeats\n")
    widths = [w if w == "auto" else int(w) for w in args.hidden.split(",") if w]
    arms: list[tuple[str, str, dict]] = []  # (row label, method, options), then under each precision
    for m in methods:
        has_width = m != "none" and "hidden" in list_methods()[m].options
        for w in widths if has_width and widths else [None]:
            arms.append((m if w is None else f"{m} (hidden {w})", m, {} if w is None else {"hidden": w}))
    precisions = args.precisions.split(",")
    times: dict[tuple[str, str], list[float]] = {(a[0], prec): [] for a in arms for prec in precisions}
    rng = np.random.default_rng(0)
    for r in range(args.repeats):
        for i in rng.permutation(len(arms) * len(precisions)):
            (label, m, opts), prec = arms[i // len(precisions)], precisions[i % len(precisions)]
            times[(label, prec)].append(one_epoch(m, source, target, args.batch_size, seed=r, precision=prec,
                                                  options=opts))
    print("| method | precision | s/epoch min | median | max | × source-only fp32 (median) | × source-only, same "
          "precision |")
    print("|---|---|---:|---:|---:|---:|---:|")
    fp32 = statistics.median(times[("none", "no")]) if ("none", "no") in times else None
    for label, _, _ in arms:
        for prec in precisions:
            ts = times[(label, prec)]
            base = statistics.median(times[("none", prec)]) if ("none", prec) in times else None
            vs_fp32 = f"{statistics.median(ts) / fp32:.2f}x" if fp32 else "–"
            vs_same = f"{statistics.median(ts) / base:.2f}x" if base else "–"
            print(f"| {label} | {'fp32' if prec == 'no' else prec} | {min(ts):.2f} | {statistics.median(ts):.2f} | "
                  f"{max(ts):.2f} | {vs_fp32} | {vs_same} |")

if __name__ == "__main__":
    main()
