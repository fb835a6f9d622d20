"""Cross-domain topic classification on 20 Newsgroups: "A or B", with different sub-categories in source and target.

Domains: ``20newsgroups-A-vs-B-source`` / ``-target`` (``transferkit.data.newsgroups``: each group's sub-categories
in sorted order go alternately to the source and the target). Inductive protocol: the source's bydate train split
is labelled (10% held out, stratified per seed, to choose the epoch on source accuracy), the target's train split
is the unlabelled adaptation set, the target's test split (never seen in training) scores; target labels choose
nothing. Features: the frozen ``st:all-MiniLM-L6-v2`` (posts truncated to 256 word pieces), extracted once per
domain and split; a 256-d bottleneck and a linear head trained on them, the methods align the bottleneck. AdamW
lr 1e-3, 10 epochs, batch 64 + 64, each method's default λ, the negative-transfer guard off (the method itself is
measured). ``target-supervised`` (not adaptation: the target's labelled train split as the source) is the upper
bound each method would reach with target labels.

    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/newsgroups_pairs.py --jobs 2
"""

from __future__ import annotations

import argparse
from typing import Any

from _runner import Job, common_args, header, mean_std, run_warm


def run_one(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    a = job["args"]
    pair = f"20newsgroups-{job['task']}"
    oracle = job["method"] == "target-supervised"  # the upper bound: trained on the target's own labelled train split
    cfg = parse_config({
        "name": f"{job['task']}-{job['method']}-s{job['seed']}", "output_dir": a["output_dir"],
        "seeds": [job["seed"]],
        "data": {"source": f"{pair}-{'target' if oracle else 'source'}", "target": f"{pair}-target",
                 "val_fraction": 0.1, "batch_size": 64},
        "model": {"backbone": "st:all-MiniLM-L6-v2", "bottleneck_dim": 256},
        "finetune": {"strategy": "linear-probe"},
        "adapt": {"method": "none" if oracle else job["method"], "guard": False},
        "train": {"epochs": a["epochs"], "lr": 1e-3, "threads": job.get("threads", 1), "device": "cpu",
                  "checkpoint_every_minutes": None},
    })
    ev = fit(cfg, overwrite=True, progress=False)["per_seed"][0]["evaluations"]
    return {"r_target": ev["target"]["accuracy"], "r_source": ev["source"]["accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="comp-vs-rec,comp-vs-sci,comp-vs-talk,rec-vs-sci,rec-vs-talk,sci-vs-talk")
    p.add_argument("--methods", default="none,dan,dann,cdan,mcc")
    p.add_argument("--epochs", type=int, default=10)
    common_args(p, "newsgroups-pairs")
    args = p.parse_args()
    header(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    first = [{"task": t, "method": methods[0], "seed": seeds[0], "args": vars(args)} for t in tasks]
    rows = run_warm(first, [{"task": t, "method": m, "seed": s, "args": vars(args)} for t in tasks for m in methods
                            for s in seeds], run_one, args)
    print(f"\n### target test accuracy %, mean ± std over seeds {args.seeds}\n")
    print("| task | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for t in tasks:
        cells = [mean_std([r["r_target"] for r in rows if r["task"] == t and r["method"] == m]) for m in methods]
        print(f"| {t} | " + " | ".join(cells) + " |")
    print("\nsource test accuracy %: " + "; ".join(
        f"{t} {mean_std([r['r_source'] for r in rows if r['task'] == t and r['method'] == 'none'])}" for t in tasks))


if __name__ == "__main__":
    main()
