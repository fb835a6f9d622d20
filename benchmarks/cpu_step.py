"""One training step of LeNet (source-only) and LeNet + a DANN discriminator on the CPU: the memory layout
(contiguous vs channels-last), bf16 autocast, and AdamW's per-tensor loop vs torch's fused kernel, each as ms per
step in the same run. Synthetic 28x28 RGB batches of 64 (source) and 64 + 64 (DANN).

    .venv/bin/python benchmarks/cpu_step.py --threads 2
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

from transferkit.models.backbones import create_backbone


def _step_ms(dann: bool, channels_last: bool, bf16: bool, fused: bool, repeats: int) -> float:
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

    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.platform()}, {args.threads} threads, torch {torch.__version__}")
    print("| step | layout | bf16 | AdamW | ms/step |\n|---|---|---|---|---:|")
    for dann in (False, True):
        for channels_last, bf16, fused in ((False, False, False), (False, False, True), (True, False, True),
                                           (True, True, True)):
            ms = _step_ms(dann, channels_last, bf16, fused, args.repeats)
            print(f"| {'DANN' if dann else 'source-only'} | {'channels-last' if channels_last else 'contiguous'} | "
                  f"{'yes' if bf16 else 'no'} | {'fused' if fused else 'per-tensor'} | {ms:.1f} |")


if __name__ == "__main__":
    main()
