"""Multi-task heads on the Free Spoken Digit Dataset: which digit, and who says it (issue 8).

One ``logmel-cnn`` from scratch (the CNN of ``benchmarks/fsdd.py``: 8 kHz, 32 log-mel bands, 1-D convolutions
64-64-64), all six speakers, recordings 10-49 to train, 5-9 to choose the epoch (the primary head's validation
accuracy), 0-4 to score (FSDD's conventional test split). Ways:

- ``digit``: one head, the digit (10 classes).
- ``speaker``: one head, the speaker (6 classes, FSDD's ``speaker`` field).
- ``both``: two heads on one backbone, losses summed with weights 1 and 1; the epoch is chosen on the digit.
- ``both-uncertainty``: the same two heads, their weights learnt (Kendall et al., 2018).
- ``speaker-first``: both heads with the speaker head primary (the epoch is chosen on the speaker).

    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/multi_task.py --jobs 2
    # less data: K training recordings per digit (over all speakers), chosen by seed
    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/multi_task.py --jobs 2 --per-class 10,30
"""

from __future__ import annotations

import argparse
from typing import Any

from _runner import Job, common_args, header, mean_std, run_all

DIGIT = {"name": "digit"}
SPEAKER = {"name": "speaker", "kind": "classification", "field": "speaker"}
HEADS = {"digit": [DIGIT], "speaker": [SPEAKER], "both": [DIGIT, SPEAKER], "both-uncertainty": [DIGIT, SPEAKER],
         "speaker-first": [SPEAKER, DIGIT]}


def run_one(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    a = job["args"]
    way = job["way"]
    cfg = parse_config({
        "name": f"fsdd-{way}-k{job['per_class']}-s{job['seed']}", "output_dir": a["output_dir"], "seeds": [job["seed"]],
        "data": {"source": "fsdd", "train_split": "fit", "val_split": "val", "eval_split": "test", "batch_size": 64,
                 "source_per_class": job["per_class"]},
        "model": {"backbone": "logmel-cnn",
                  "backbone_kwargs": {"sample_rate": 8000, "seconds": 1.0, "n_mels": 32, "hop_length": 160,
                                      "conv": "1d", "channels": [64, 64, 64]},
                  "heads": HEADS[way],
                  "head_weighting": "uncertainty" if way == "both-uncertainty" else "fixed"},
        "train": {"epochs": a["epochs"], "lr": 3e-3, "threads": 1, "device": "cpu", "checkpoint_every_minutes": None},
    })
    report = fit(cfg, overwrite=True, progress=False)
    ev = report["per_seed"][0]["evaluations"]["source"]
    heads = ev.get("heads") or {HEADS[way][0]["name"]: ev}
    return {f"r_{name}": h["accuracy"] for name, h in heads.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ways", default=",".join(HEADS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--per-class", default=None, help="train on K recordings per digit only (comma-separated Ks)")
    common_args(p, "multi-task")
    args = p.parse_args()
    header(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    ways = args.ways.split(",")
    sizes = [int(k) for k in args.per_class.split(",")] if args.per_class else [None]
    jobs = [{"way": w, "per_class": k, "seed": s, "args": vars(args)} for k in sizes for w in ways for s in seeds]
    rows = run_all(jobs, run_one, args)
    for k in sizes:
        data = "recordings 10-49 of every digit and speaker" if k is None else f"{k} recordings per digit"
        print(f"\n### trained on {data}; FSDD test split (recordings 0-4 of all six speakers), accuracy %, "
              f"mean ± std over seeds {args.seeds}\n")
        print("| heads | digit | speaker |")
        print("|---|---|---|")
        for w in ways:
            cells = [mean_std([r[f"r_{h}"] for r in rows if r["way"] == w and r["per_class"] == k and f"r_{h}" in r])
                     for h in ("digit", "speaker")]
            print(f"| {w} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
