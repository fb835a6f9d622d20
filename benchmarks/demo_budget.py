"""The demo's pair at other budgets: mnist-5k -> mnist-m-5k, source-only and DANN, 3 seeds each.

How the demo's budget (1,000 steps of 64) was chosen: the shortest one tried where DANN's gain over source-only
held across seeds; the table is in benchmarks/README.md.

    .venv/bin/python benchmarks/demo_budget.py --steps 1000 --batch-size 64
    .venv/bin/python benchmarks/demo_budget.py --steps 1000 --batch-size 64 --set adapt.options.hidden=512
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

from transferkit.config import parse_config, parse_override
from transferkit.experiment import fit


def run(method: str, steps: int, batch_size: int, seeds: list[int], overrides: list[str], out: str) -> dict:
    fields = {
        "name": method, "output_dir": out, "seeds": seeds,
        "data": {"source": "mnist-5k", "target": "mnist-m-5k", "batch_size": batch_size},
        "model": {"backbone": "lenet", "backbone_kwargs": {"in_chans": 3}},
        "adapt": {"method": method, "guard": False}, "train": {"steps": steps},
    }
    t0 = time.perf_counter()
    report = fit(parse_config(fields, dict(parse_override(t) for t in overrides)), progress=False)
    values = [round(100 * v, 1) for v in report["summary"]["target"]["accuracy"]["values"]]
    return {"method": method, "target_accuracy": values, "mean": round(sum(values) / len(values), 1),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", action="append", default=[], help="section.field=value for both runs")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"# {platform.platform()}; {args.steps} steps of {args.batch_size}; overrides {args.set}")
    with tempfile.TemporaryDirectory() as out:
        rows = [run(m, args.steps, args.batch_size, seeds, args.set, out) for m in ("none", "dann")]
    for row in rows:
        print(json.dumps(row))
    print(f"DANN - source-only: {rows[1]['mean'] - rows[0]['mean']:+.1f} points")


if __name__ == "__main__":
    main()
