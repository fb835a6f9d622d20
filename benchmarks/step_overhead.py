"""What a training step costs besides the network's own work: the input path, reading numbers back, compilation.

One DANN run of LeNet (batch 128 source + 128 target, synthetic 28x28 digits-shaped images: timing only) in the
engine, timed on its second epoch (the first holds any compilation), under each variant in the same process:

- ``dataloader+read-every-step``: torch's DataLoader (Accelerate copies each batch to the device) and the step's
  numbers read back to the host every step (the engine before the resident path and ``train.sync_every_steps``);
- ``resident+read-every-step``: the preprocessed dataset indexed where the model trains (``ResidentBatches``);
- ``resident+read-every-50``: the numbers stay on the device between read-backs (the GPU default);
- ``compiled``: the same plus ``train.compile`` (``reduce-overhead`` on a GPU: CUDA graphs; ``default`` on a CPU).

Ratios are against the first variant of the same run. On a CPU the network dominates and the variants differ by
little; the point of the last three is a GPU, where a LeNet step is a few dozen kernels shorter than their launch.

    .venv/bin/python benchmarks/step_overhead.py --threads 1               # this machine's CPU
    python benchmarks/step_overhead.py --device cuda --steps 400            # on a GPU
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import numpy as np
import torch

from transferkit.adapt.methods import build_method
from transferkit.config import TrainConfig
from transferkit.data.domain import DomainDataset
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.train import engine as engine_module
from transferkit.train.engine import Engine, source_cross_entropy

VARIANTS = ("dataloader+read-every-step", "resident+read-every-step", "resident+read-every-50", "compiled")


def _data(steps: int, batch: int) -> tuple[DomainDataset, DomainDataset]:
    rng = np.random.default_rng(0)
    n = steps * batch
    classes = [str(i) for i in range(10)]
    source = DomainDataset(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10, "s", classes,
                           "image")
    target = DomainDataset(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), None, "t", classes, "image")
    return source, target


def second_epoch_ms(variant: str, source: DomainDataset, target: DomainDataset, args: argparse.Namespace,
                    device: str) -> float:
    """Milliseconds per step of the run's second epoch."""
    torch.manual_seed(0)
    model = TransferModel(create_backbone("lenet"), source.classes, bottleneck_dim=256)
    terms = [source_cross_entropy(), *build_method(args.method, model.feature_dim, 10)]
    compile_mode = "off" if variant != "compiled" else ("reduce-overhead" if device == "cuda" else "default")
    cfg = TrainConfig(epochs=2, device=device, optimizer="sgd", lr=0.01, mixed_precision="no", compile=compile_mode,
                      sync_every_steps=50 if variant in ("resident+read-every-50", "compiled") else 1)
    original = engine_module.resident_loader
    if variant.startswith("dataloader"):
        engine_module.resident_loader = lambda *a, **k: None  # type: ignore[assignment]
    try:
        result = Engine(model, cfg, loss_terms=terms, batch_size=args.batch_size, progress=False).fit(
            source, target=target)
    finally:
        engine_module.resident_loader = original
    return 1000.0 * result.history[1]["epoch_time_s"] / args.steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=100, help="steps per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--method", default="dann")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    source, target = _data(args.steps, args.batch_size)
    variants = args.variants.split(",")
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none"
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, GPU {gpu}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s); {args.method} on LeNet, batch "
          f"{args.batch_size}+{args.batch_size}, {args.steps} steps per epoch, the second epoch timed")
    times: dict[str, list[float]] = {v: [] for v in variants}
    failed: dict[str, str] = {}
    for r in range(args.repeats):
        for v in variants if r % 2 == 0 else reversed(variants):  # alternate the order: drift hits all alike
            if v in failed:
                continue
            try:
                times[v].append(second_epoch_ms(v, source, target, args, args.device))
            except Exception as e:  # a variant that fails here (a compiler's error) must not hide the others
                failed[v] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    base: Any = min(times[variants[0]]) if times[variants[0]] else float("nan")
    print("\n| variant | ms per step (best of repeats) | ratio |\n|---|---|---|")
    for v in variants:
        if v in failed:
            print(f"| {v} (failed: {failed[v][:200]}) | – | – |")
            continue
        best = min(times[v])
        print(f"| {v} | {best:.2f} | {best / base:.2f} |")


if __name__ == "__main__":
    main()
