"""Regularised fine-tuning with few target labels: L2-SP and BSS against plain fine-tuning.

The few-labels path of transfer learning: a model pre-trained on the source (labels of the source only), then
fine-tuned on K labelled target items per class (drawn by seed), scored on the target's test split. Arms:
``none`` (plain fine-tuning, weight decay towards zero), ``l2-sp`` (α = ``--alphas``), ``bss`` (η = 0.001, k = 1)
and ``l2-sp+bss``, all with the library's defaults otherwise (auto step budget, no validation split at these
sizes). Tasks:

- ``digits``: the demo's LeNet pre-trained on mnist-5k (15 epochs), fine-tuned (``full``) on digits-uci;
- ``amazon``: the default ``mlp`` pre-trained on amazon-books, fine-tuned on amazon-kitchen's count vectors
  (``--init-from``);
- ``minilm``: the default ``mlp`` pre-trained on MiniLM embeddings of amazon-text-books (the defaults suite's
  vector file, made by ``benchmarks/defaults.py``), fine-tuned on amazon-text-kitchen's.

    .venv/bin/python benchmarks/regularized_finetune.py --tasks digits,amazon --shots 5,10,20 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import Job, common_args, header, run_all

TASKS = {
    # name: (source, target, backbone spec for pre-training, fine-tuning strategy)
    "digits": ("mnist-5k", "digits-uci", "lenet"),
    "amazon": ("amazon-books", "amazon-kitchen", "mlp"),
    "minilm": ("runs/bench-defaults/vectors/vec-minilm/amazon-text-books.npz",
               "runs/bench-defaults/vectors/vec-minilm/amazon-text-kitchen.npz", "mlp"),
}


def _pretrained(task: str, seed: int, args: argparse.Namespace) -> Path:
    """The source-only model of ``task`` for ``seed`` (trained once, then reused)."""
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    source, _, backbone = TASKS[task]
    run = Path(args.output_dir) / f"pretrain-{task}-s{seed}"
    model = run / "model.safetensors"
    if not model.exists():
        train = {"epochs": 15} if backbone == "lenet" else {}
        fit(parse_config({"name": run.name, "output_dir": args.output_dir, "seeds": [seed],
                          "data": {"source": source, "root": args.root}, "model": {"backbone": backbone},
                          "train": train}), overwrite=True, progress=False)
    return model


def run_job(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    args = argparse.Namespace(**job["args"])
    _, target, backbone = TASKS[job["task"]]
    model = _pretrained(job["task"], job["seed"], args)
    regs = [] if job["arm"] == "none" else job["arm"].split("+")
    raw: dict[str, Any] = {
        "name": f"ft-{job['task']}-{job['shots']}-{job['arm'].replace('+', 'plus')}-a{job['alpha']}-s{job['seed']}",
        "output_dir": args.output_dir, "seeds": [job["seed"]],
        "data": {"source": target, "source_per_class": job["shots"], "root": args.root},
        "finetune": {"strategy": "full", "regularizers": regs, "l2_sp_alpha": job["alpha"]},
    }
    if backbone == "lenet":
        raw["model"] = {"backbone": f"file:{model}"}
    else:
        raw["model"] = {"backbone": backbone, "init_from": str(model)}
    report = fit(parse_config(raw), overwrite=True, progress=False)
    return {"r_target_acc": report["summary"]["source"]["accuracy"]["mean"]}  # the fine-tuning domain is the target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="digits,amazon,minilm")
    p.add_argument("--shots", default="5,10,20")
    p.add_argument("--arms", default="none,l2-sp,bss,l2-sp+bss")
    p.add_argument("--alphas", default="0.01", help="L2-SP α values tried (for the arms with l2-sp)")
    p.add_argument("--root", default=os.environ.get("TRANSFERKIT_DATA"))
    p.add_argument("--table-only", action="store_true")
    common_args(p, "regularized-finetune")
    args = p.parse_args()
    header(args)
    passed = {k: v for k, v in vars(args).items() if k in ("output_dir", "root")}
    jobs = [{"task": t, "shots": int(k), "arm": arm, "alpha": float(a), "seed": int(s), "args": passed}
            for t in args.tasks.split(",") for k in args.shots.split(",") for s in args.seeds.split(",")
            for arm in args.arms.split(",") for a in (args.alphas.split(",") if "l2-sp" in arm else ["0.01"])]
    if args.table_only:
        rows = [json.loads(x) for x in Path(args.results_jsonl).read_text().splitlines() if x.strip()]
    else:
        for t in args.tasks.split(","):  # pre-train once per task and seed, before the jobs run in parallel
            for s in args.seeds.split(","):
                _pretrained(t, int(s), args)
        rows = run_all(jobs, run_job, args)
    cells: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        arm = r["arm"] + (f" α={r['alpha']:g}" if "l2-sp" in r["arm"] else "")
        cells[(r["task"], r["shots"])][arm].append(100 * r["r_target_acc"])
    arms = sorted({a for c in cells.values() for a in c}, key=lambda a: (a != "none", a))
    print("| task | labels/class | " + " | ".join(arms) + " |\n|---|---|" + "---:|" * len(arms))
    for (task, shots), c in sorted(cells.items()):
        print(f"| {task} | {shots} | " + " | ".join(
            f"{statistics.mean(c[a]):.1f} ± {statistics.stdev(c[a]) if len(c[a]) > 1 else 0:.1f}" if c.get(a)
            else "–" for a in arms) + " |")


if __name__ == "__main__":
    main()
