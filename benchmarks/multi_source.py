"""Multi-source adaptation on Amazon reviews: three domains -> the fourth, for each of the four (issue 8).

The same MLP 5000-50-2 as ``benchmarks/amazon.py`` (raw 5,000-d counts, AdamW lr 1e-3, cosine, batch 64 + 64,
10% of the source train split held out to choose the epoch, seeds 0, 1, 2). Ways, fixed before the run:

- ``pooled-none``: the three sources as one labelled domain, no adaptation (source-only).
- ``pooled <m>``: the three as one source domain, method ``m`` (a binary discriminator for DANN, one MMD for DAN).
- ``per-source <m>``: one discriminator per source against the target (DANN, as MDAN), or one MMD per source,
  averaged (DAN).
- ``k+1-way dann``: one discriminator naming each item's domain (the three sources and the target).
- ``per-source <m> weighted``: per-source with each source weighted by its measured MMD² to the target
  (``data.source_weighting discrepancy``: the source's items in the task loss and its transfer loss).

    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/multi_source.py --jobs 2
"""

from __future__ import annotations

import argparse
from typing import Any

from _runner import Job, common_args, header, mean_std, run_all

DOMAINS = ("books", "dvd", "electronics", "kitchen")


def run_one(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    a = job["args"]
    target = job["target"]
    sources = [f"amazon-{d}" for d in DOMAINS if d != target]
    mode, method, *weighted = job["way"].split(" ")
    cfg = parse_config({
        "name": f"to-{target}-{job['way'].replace(' ', '-').replace('+', 'plus')}-s{job['seed']}",
        "output_dir": a["output_dir"], "seeds": [job["seed"]],
        "data": {"source": sources, "target": f"amazon-{target}", "val_fraction": 0.1, "multi_source": mode,
                 "source_weighting": "discrepancy" if weighted else "none"},
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 50, "depth": 1, "dropout": 0.0}},
        "adapt": {"method": method, "guard": False},
        "train": {"epochs": a["epochs"], "lr": 1e-3, "threads": 1, "device": "cpu", "checkpoint_every_minutes": None},
    })
    report = fit(cfg, overwrite=True, progress=False)
    seed = report["per_seed"][0]
    return {"r_acc": report["summary"]["target"]["accuracy"]["values"][0],
            "r_weights": seed.get("source_weights")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(DOMAINS))
    p.add_argument("--methods", default="dann,dan")
    p.add_argument("--epochs", type=int, default=20)
    common_args(p, "multi-source")
    args = p.parse_args()
    header(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    targets = args.targets.split(",")
    ways = ["pooled none"]
    for m in args.methods.split(","):
        ways += [f"pooled {m}", f"per-source {m}", f"per-source {m} weighted"] + (["k+1-way dann"] if m == "dann"
                                                                                  else [])
    jobs = [{"target": t, "way": w, "seed": s, "args": vars(args)} for t in targets for w in ways for s in seeds]
    rows = run_all(jobs, run_one, args)
    print(f"\n### three sources -> target, target test accuracy %, mean ± std over seeds {args.seeds}\n")
    print("| target | " + " | ".join(ways) + " |")
    print("|---" * (len(ways) + 1) + "|")
    for t in [*targets, "average"]:
        cells = []
        for w in ways:
            if t == "average":  # each seed's 4-target average, then mean ± std over seeds
                per_seed = [[r["r_acc"] for r in rows if r["way"] == w and r["seed"] == s] for s in seeds]
                vals = [sum(v) / len(v) for v in per_seed if len(v) == len(targets)]
            else:
                vals = [r["r_acc"] for r in rows if r["target"] == t and r["way"] == w]
            cells.append(mean_std(vals))
        print(f"| {t} | " + " | ".join(cells) + " |")
    print("\nsource weights (discrepancy), seed 0:")
    for r in rows:
        if r["seed"] == seeds[0] and r.get("r_weights"):
            print(f"  -> {r['target']} ({r['way']}): " + ", ".join(f"{k}: {v:.2f}" for k, v in r["r_weights"].items()))


if __name__ == "__main__":
    main()
