"""bf16 autocast on the CPU against fp32: the same runs, full length, accuracy and time side by side.

MNIST -> USPS with LeNet at the default step budget (what `transferkit fit` does without flags), source-only, DANN
and MCC (the guard off: the method's own model is scored), seeds 0, 1, 2, once with ``train.mixed_precision no``
(fp32) and once with ``bf16`` (torch's CPU autocast through Accelerate: matmuls and convolutions in bfloat16,
weights, optimiser and losses in fp32). Columns: target accuracy % (mean ± std over seeds) and training seconds.
bf16 is fast only on CPUs with native bfloat16 (AVX512-BF16 or AMX); elsewhere it is emulated and slower.

    TRANSFERKIT_DATA=~/data .venv/bin/python benchmarks/precision.py --jobs 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import Job, common_args, header, mean_std, run_all

METHODS = ("none", "dann", "mcc")
PRECISIONS = ("no", "bf16")


def run(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    cfg = parse_config({
        "name": f"{job['method']}-{job['precision']}-s{job['seed']}", "output_dir": job["output_dir"],
        "seeds": [job["seed"]],
        "data": {"source": job["source"], "target": job["target"], "root": job["root"]},
        "model": {"backbone": "lenet"},
        "adapt": {"method": job["method"], "guard": False},
        "train": {"mixed_precision": job["precision"]},
    })
    report = fit(cfg, overwrite=True, progress=False)
    seed = report["per_seed"][0]
    return {"r_target_acc": report["summary"]["target"]["accuracy"]["mean"], "r_steps": seed["fit"].get("steps"),
            "r_train_seconds": seed["fit"].get("seconds")}


def main() -> None:
    import os

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(p, "precision")
    p.add_argument("--source", default="mnist")
    p.add_argument("--target", default="usps")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--root", default=os.environ.get("TRANSFERKIT_DATA"))
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="a subset re-runs one side only")
    args = p.parse_args()
    header(args)
    jobs = [{"source": args.source, "target": args.target, "method": m, "precision": prec, "seed": int(s),
             "root": args.root, "output_dir": args.output_dir}
            for m in args.methods.split(",") for s in args.seeds.split(",") for prec in args.precisions.split(",")]
    rows = run_all(jobs, run, args)
    print(f"\n{args.source} -> {args.target}, LeNet, default budget; target accuracy % and training seconds")
    print("| method | fp32 | bf16 | fp32 s | bf16 s | time bf16/fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in args.methods.split(","):
        acc = {prec: [r["r_target_acc"] for r in rows if r["method"] == m and r["precision"] == prec]
               for prec in PRECISIONS}
        sec = {prec: [r["r_train_seconds"] for r in rows if r["method"] == m and r["precision"] == prec]
               for prec in PRECISIONS}
        if not all(sec.values()):  # one side only: its mean
            print(f"| {m} | " + " | ".join(mean_std(acc[p]) if acc[p] else "–" for p in PRECISIONS) + " | "
                  + " | ".join(f"{statistics.mean(sec[p]):.0f}" if sec[p] else "–" for p in PRECISIONS) + " | – |")
            continue
        t = {prec: statistics.mean(v) for prec, v in sec.items()}
        print(f"| {m} | {mean_std(acc['no'])} | {mean_std(acc['bf16'])} | {t['no']:.0f} | {t['bf16']:.0f} | "
              f"{t['bf16'] / t['no']:.2f} |")


if __name__ == "__main__":
    main()
