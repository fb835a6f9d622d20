"""One training step of LeNet (source-only) and LeNet + a DANN discriminator on the CPU: the memory layout
(contiguous vs channels-last), bf16 autocast, and AdamW's per-tensor loop vs torch's fused kernel, each as ms per
step in the same run. Synthetic 28x28 RGB batches of 64 (source) and 64 + 64 (DANN).

A roofline line follows: the FLOPs of one step (forward and backward, counted by torch's FlopCounterMode), the
FLOP/s each variant achieves, and this CPU's FLOP/s on a large matmul in fp32 and bf16 in the same run (the
ceiling a step of small convolutions cannot reach: it is bound by memory traffic and per-op overhead).

    .venv/bin/python benchmarks/cpu_step.py --threads 2
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

import torch
from torch import nn

from transferkit.models.backbones import create_backbone


def _step(dann: bool, channels_last: bool, bf16: bool, fused: bool) -> Any:
    torch.manual_seed(0)
    backbone = create_backbone("lenet", in_chans=3)
    head = nn.Linear(500, 10)
    disc = nn.Sequential(nn.Linear(500, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(1024, 1))
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    params = [*backbone.parameters(), *head.parameters(), *(disc.parameters() if dann else ())]
    opt = torch.optim.AdamW(params, 1e-3, fused=fused)
    x = torch.randn(128 if dann else 64, 3, 28, 28)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    domain = torch.cat([torch.ones(64), torch.zeros(64)])

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            f = backbone(x)
            loss = nn.functional.cross_entropy(head(f[:64]), y)
            if dann:
                loss = loss + nn.functional.binary_cross_entropy_with_logits(disc(f).squeeze(1).float(), domain)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _step_ms(dann: bool, channels_last: bool, bf16: bool, fused: bool, repeats: int) -> float:
    step = _step(dann, channels_last, bf16, fused)
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return 1000 * (time.perf_counter() - t0) / repeats


def _step_flops(dann: bool) -> int:
    """Forward + backward FLOPs of one step (the optimiser's elementwise update is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    step = _step(dann, False, False, True)
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def _matmul_flops_per_s(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.platform()}, {args.threads} threads, torch {torch.__version__}")
    peak = {"fp32": _matmul_flops_per_s(torch.float32), "bf16": _matmul_flops_per_s(torch.bfloat16)}
    print(f"# matmul 2048x2048: fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s")
    print("| step | layout | bf16 | AdamW | ms/step | GFLOP/s | of the matmul's |\n|---|---|---|---|---:|---:|---:|")
    for dann in (False, True):
        flops = _step_flops(dann)
        for channels_last, bf16, fused in ((False, False, False), (False, False, True), (True, False, True),
                                           (True, True, True)):
            ms = _step_ms(dann, channels_last, bf16, fused, args.repeats)
            rate = flops / (ms / 1000)
            share = rate / peak["bf16" if bf16 else "fp32"]
            print(f"| {'DANN' if dann else 'source-only'} ({flops / 1e6:.0f} MFLOP) | "
                  f"{'channels-last' if channels_last else 'contiguous'} | {'yes' if bf16 else 'no'} | "
                  f"{'fused' if fused else 'per-tensor'} | {ms:.1f} | {rate / 1e9:.1f} | {100 * share:.1f}% |")


if __name__ == "__main__":
    main()
