"""What the negative-transfer guard costs: a guarded DANN run against an unguarded one, with the source-only twin
reused from an identical earlier run (the twin cache) and trained afresh, on the demo's pair (one seed).

    .venv/bin/python benchmarks/guard_cost.py --steps 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from transferkit.config import RunConfig, parse_config
from transferkit.experiment import fit


def _cfg(name: str, method: str, guard: bool, out: Path, steps: int) -> RunConfig:
    return parse_config({
        "name": name, "output_dir": str(out), "seeds": [0],
        "data": {"source": "mnist-5k", "target": "mnist-m-5k", "batch_size": 64},
        "model": {"backbone": "lenet", "backbone_kwargs": {"in_chans": 3}},
        "adapt": {"method": method, "guard": guard}, "train": {"steps": steps},
    })


def _timed(cfg: RunConfig) -> float:
    t0 = time.perf_counter()
    fit(cfg, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    args = p.parse_args()
    print(f"# {platform.platform()}; {args.steps} steps of 64, one seed")
    with tempfile.TemporaryDirectory() as tmp:
        shared, fresh = Path(tmp) / "shared", Path(tmp) / "fresh"
        _timed(_cfg("warm-up", "none", True, Path(tmp) / "warm", args.steps))  # imports and first-call costs
        row = {
            "source_only_s": _timed(_cfg("plain", "none", True, shared, args.steps)),
            "dann_unguarded_s": _timed(_cfg("unguarded", "dann", False, shared, args.steps)),
            "dann_guarded_twin_reused_s": _timed(_cfg("guarded", "dann", True, shared, args.steps)),
            "dann_guarded_twin_trained_s": _timed(_cfg("guarded", "dann", True, fresh, args.steps)),
        }
        twin = json.loads((shared / "guarded" / "report.json").read_text())["guard"]["twin"]
    row = {k: round(v, 1) for k, v in row.items()}
    row["guarded / unguarded, twin reused"] = round(row["dann_guarded_twin_reused_s"] / row["dann_unguarded_s"], 2)
    row["guarded / unguarded, twin trained"] = round(row["dann_guarded_twin_trained_s"] / row["dann_unguarded_s"], 2)
    print(json.dumps(row, indent=1))
    print("twin of the reused run:", twin)


if __name__ == "__main__":
    main()
