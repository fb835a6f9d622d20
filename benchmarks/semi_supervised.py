"""A few labelled target images: MNIST <-> USPS with K = 1, 5, 10 labelled target images per class (issue 8).

Five ways to use them, LeNet from scratch, the same seed choosing the same K items per class for every way
(``DomainDataset.per_class_indices``):

- ``target-only``: train on the K·10 labelled target items alone.
- ``fine-tune``: pre-train on the labelled source (the ``source-only`` run below), then train on the K·10 items
  from its weights (``model.init_from``): sequential transfer.
- ``joint``: labelled source and labelled target batches in one run, L = L_s + λ_t·L_t (``--target-labels
  K``), no adaptation method.
- ``semi-da``: joint plus an unsupervised method (``--method``, default MCC) on the unlabelled rest of the target.
- K = 0 rows: ``source-only`` and the same method without labels (``unsupervised-da``), the curve's start.

Steps: every run that sees the source takes the same number of optimiser steps: ``--epochs`` epochs as long as the
longer domain (runs without unlabelled target batches get as many epochs of the source as make the same count).
Checkpoints: the source runs select on a 10% source validation split; runs that train on the K·10 target items
alone have no validation split (K = 1 leaves nothing to hold out) and keep their last epoch, after ``--few-steps``
optimiser steps. Target test labels only score.

    TRANSFERKIT_DATA=../shared/data .venv/bin/python benchmarks/semi_supervised.py --jobs 2

Source size: ``--source-per-class`` labelled source items per class (default 500, i.e. 5,000 MNIST or USPS
images) keeps the CPU table within minutes; the target train split is used whole (unlabelled apart from the K).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from _runner import Job, common_args, header, mean_std, run_all


def _base(job: Job) -> dict[str, Any]:
    a = job["args"]
    return {"output_dir": a["output_dir"], "seeds": [job["seed"]],
            "model": {"backbone": "lenet"},
            "adapt": {"guard": False},
            "train": {"epochs": 1, "lr": 1e-3, "threads": 1, "device": "cpu",
                      "checkpoint_every_minutes": None}}


def _per_task(text: str, task: str) -> int:
    """``5`` for every task, or ``mnist-usps=5,usps-mnist=1``."""
    if "=" not in text:
        return int(text)
    return int(dict(part.split("=") for part in text.split(","))[task])


TARGET_TRAIN = {"usps": 7291, "mnist": 60000}


def _source_items(a: dict[str, Any]) -> int:
    return round(10 * a["source_per_class"] * 0.9)  # 10% held out for validation


def _steps(job: Job) -> int:
    """Optimiser steps of a run that pairs source and target batches (an epoch as long as the longer domain)."""
    tgt = job["task"].split("-")[1]
    per_epoch = math.ceil(max(_source_items(job["args"]), TARGET_TRAIN[tgt]) / 64)
    return _per_task(job["args"]["epochs"], job["task"]) * per_epoch


def _source_run(job: Job) -> str:
    return f"{job['task']}-source-only-k0-s{job['seed']}"


def run_one(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    a = job["args"]
    src, tgt = job["task"].split("-")
    way, k = job["way"], job["k"]
    raw = _base(job)
    raw["train"]["epochs"] = _per_task(a["epochs"], job["task"])
    raw["name"] = f"{job['task']}-{way}-k{k}-s{job['seed']}"
    few = way in ("target-only", "fine-tune")
    if few:  # the K·10 labelled target items alone
        steps_per_epoch = math.ceil(10 * k / 64)
        raw["data"] = {"source": tgt, "source_per_class": k, "val_fraction": 0.0, "eval_split": "test"}
        raw["train"]["epochs"] = max(1, a["few_steps"] // steps_per_epoch)
        raw["train"]["keep_checkpoints"] = 1
        if way == "fine-tune":
            raw["model"]["init_from"] = str(Path(a["output_dir"]) / _source_run(job) / "model.safetensors")
    else:
        raw["data"] = {"source": src, "target": tgt, "source_per_class": a["source_per_class"], "val_fraction": 0.1}
        if k:
            raw["data"]["target_labels_per_class"] = k
        raw["adapt"]["method"] = a["method"] if way in ("semi-da", "unsupervised-da") else "none"
        if raw["adapt"]["method"] == "none":
            # without unlabelled target batches an epoch is one pass over the source: give these runs as many steps
            # as the runs that pair every source batch with a target batch
            raw["train"]["epochs"] = math.ceil(_steps(job) / math.ceil(_source_items(a) / 64))
    report = fit(parse_config(raw), overwrite=True, progress=False)
    role = "source" if few else "target"  # a target-only run's "source" is the target domain
    return {"r_acc": report["summary"][role]["accuracy"]["values"][0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mnist-usps,usps-mnist")
    p.add_argument("--ks", default="1,5,10")
    p.add_argument("--method", default="mcc")
    p.add_argument("--epochs", default="mnist-usps=5,usps-mnist=1",
                   help="epochs of the runs that see the source: one number, or per task (an epoch is as long as "
                   "the longer domain: 114 steps for MNIST(5,000)->USPS, 938 for USPS->MNIST(60,000))")
    p.add_argument("--few-steps", type=int, default=300, help="optimiser steps of the runs on the K·10 items alone")
    p.add_argument("--source-per-class", type=int, default=500)
    common_args(p, "semi-supervised")
    args = p.parse_args()
    header(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    tasks = args.tasks.split(",")
    shared = {"args": vars(args)}
    first = [{"task": t, "way": w, "k": 0, "seed": s, **shared} for t in tasks for s in seeds
             for w in ("source-only", "unsupervised-da")]
    rest = [{"task": t, "way": w, "k": k, "seed": s, **shared} for t in tasks for s in seeds for k in ks
            for w in ("target-only", "fine-tune", "joint", "semi-da")]
    rows = run_all(first, run_one, args)  # fine-tune starts from the source-only runs
    rows += run_all(rest, run_one, args)
    for t in tasks:
        print(f"\n### {t}: target test accuracy %, mean ± std over seeds {args.seeds}\n")
        print("| K labelled / class | " + " | ".join(("target-only", "fine-tune", "joint", f"semi-DA ({args.method})"))
              + " |")
        print("|---|---|---|---|---|")
        zero = {w: [r["r_acc"] for r in rows if r["task"] == t and r["way"] == w and r["k"] == 0]
                for w in ("source-only", "unsupervised-da")}
        print(f"| 0 | – | – | {mean_std(zero['source-only'])} (source-only) | "
              f"{mean_std(zero['unsupervised-da'])} (unsupervised {args.method}) |")
        for k in ks:
            cells = [mean_std([r["r_acc"] for r in rows if r["task"] == t and r["way"] == w and r["k"] == k])
                     for w in ("target-only", "fine-tune", "joint", "semi-da")]
            print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
