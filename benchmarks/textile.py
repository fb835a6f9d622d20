"""Textile defect inspection: linear probe, full fine-tuning, LP-FT and training from scratch, per-class accuracy.

The 2,000 simulated fabric images of the pip package ``conformal-clip-data`` (nominal / global defect / local
defect), written as an ImageFolder tree by ``examples/textile_defects.py`` (70/30 stratified train/val split,
seed 0; written here under ``--data`` when absent). One backbone, ``torchvision:mobilenet_v2``:

- ``linear-probe``: ImageNet weights frozen, features extracted once (cached), only the head trains;
- ``full``: ImageNet weights, every layer fine-tuned;
- ``lp-ft``: the linear probe first, then full fine-tuning from that head (Kumar et al., 2022);
- ``scratch``: the same architecture randomly initialised (``pretrained: false``), trained like ``full``.

Everything that trains the backbone sees timm's training preprocessing (RandomResizedCrop with area
``--min-scale``..1 and horizontal flips); evaluation is resize + centre crop. The checkpoint is chosen on
accuracy on a source-validation share of train/ (``--val-fraction``); val/ only scores the chosen model, with
accuracy, macro-F1 and per-class accuracy. Time per epoch is the median over the backprop epochs of the run
(the ``train`` or ``ft`` phase in ``metrics.jsonl``); "fit s" is the training time the run report records
(for the linear probe and LP-FT it includes extracting the features, the first seed only: later seeds read the
cache, which lives under ``--output-dir``).

160 px keeps the 12 runs near 45 minutes on a shared 2-core CPU, but it blurs the pixel-level speckle of a local
defect: on seed 0, full fine-tuning found 0% of local defects at 160 px (1 or 3 epochs) and 86% at 224 px
(2 epochs). See docs/vision.md.

    .venv/bin/python benchmarks/textile.py                       # 4 strategies x 3 seeds, 160 px, 1 thread
    .venv/bin/python benchmarks/textile.py --epochs 3 --name textile-3ep   # longer fine-tuning, where time allows
    .venv/bin/python benchmarks/textile.py --strategies linear-probe --seeds 0 --image-size 224 --name textile-lp224
    .venv/bin/python benchmarks/textile.py --strategies full --seeds 0 --epochs 2 --image-size 224 --name full224
    .venv/bin/python benchmarks/textile.py --limit 20 --epochs 1 --seeds 0 --name textile-smoke   # smoke run

Each finished run is appended to ``OUTPUT_DIR/<name>-rows.jsonl`` at once; ``--skip-done`` continues an
interrupted benchmark from there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from transferkit.config import parse_config
from transferkit.evaluate.metrics import format_mean_std
from transferkit.experiment import fit
from transferkit.runs import read_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("linear-probe", "full", "lp-ft", "scratch")


def _example() -> Any:
    """``examples/textile_defects.py`` as a module: the one place the tree is written."""
    spec = importlib.util.spec_from_file_location("textile_defects", ROOT / "examples" / "textile_defects.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_tree(data: Path, limit: int | None) -> str:
    """Write the ImageFolder tree at ``data`` unless the example already wrote it there with the same split."""
    ex = _example()
    if ex.tree_matches(data, limit=limit):
        return f"reused {data} (written by examples/textile_defects.py)"
    if data.exists() and any(data.iterdir()):
        raise SystemExit(f"{data} is not empty and was not written by examples/textile_defects.py with seed 0, "
                         f"val fraction 0.3, limit {limit}: pass another --data, or remove it")
    t0 = time.perf_counter()
    counts = ex.write_textile_tree(data, limit=limit)
    n = sum(sum(c.values()) for c in counts.values())
    return f"wrote {data} ({n} images, {time.perf_counter() - t0:.1f} s)"


def run_config(strategy: str, seed: int, args: argparse.Namespace) -> Any:
    finetune: dict[str, Any] = {"strategy": "full" if strategy == "scratch" else strategy}
    if strategy == "lp-ft":
        finetune.update(lp_epochs=args.lp_epochs, lp_lr=args.lp_lr)
    probe = strategy == "linear-probe"
    return parse_config({
        "name": f"{args.name}-{strategy}-s{seed}", "output_dir": str(args.output_dir), "seeds": [seed],
        "data": {"source": str(args.data), "eval_split": "val", "val_fraction": args.val_fraction,
                 "batch_size": args.batch_size, "eval_batch_size": 100, "augment": not probe,
                 "augment_min_scale": args.min_scale},
        "model": {"backbone": args.backbone, "pretrained": strategy != "scratch",
                  "backbone_kwargs": {"image_size": args.image_size}},
        "finetune": finetune,
        "train": {"epochs": args.lp_epochs if probe else args.epochs, "lr": args.lp_lr if probe else args.lr,
                  "scheduler": "cosine", "threads": args.threads, "device": "cpu", "mixed_precision": "no"},
    })


def run_one(strategy: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    cfg = run_config(strategy, seed, args)
    t0 = time.perf_counter()
    report = fit(cfg, overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    seed_report = report["per_seed"][0]
    ev = seed_report["evaluations"]["source"]  # data.eval_split = val: the held-out val/ folder
    records = read_jsonl(Path(cfg.run_path) / "metrics.jsonl")
    backprop = [r["epoch_time_s"] for r in records if r.get("phase") in ("train", "ft")]
    probe = [r["epoch_time_s"] for r in records if r.get("phase") == "lp"]
    return {
        "strategy": strategy, "seed": seed, "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"],
        "per_class_accuracy": ev["per_class_accuracy"], "n_val": ev["n"],
        "best_epoch": seed_report["fit"]["best_epoch"], "best_source_val_acc": seed_report["fit"]["best_val_acc"],
        "epoch_s": round(statistics.median(backprop), 2) if backprop else None,
        "lp_epoch_s": round(statistics.median(probe), 3) if probe else None,
        "backprop_epochs": len(backprop), "fit_s": round(seed_report["fit"]["seconds"], 1), "wall_s": round(wall, 1),
    }


def summary_table(rows: list[dict[str, Any]], strategies: list[str], classes: list[str]) -> str:
    head = ["strategy", "seeds", "accuracy %", "macro-F1 %", *(f"{c} %" for c in classes),
            "s/epoch (backprop)", "fit s per seed"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for s in strategies:
        mine = sorted((r for r in rows if r["strategy"] == s), key=lambda r: r["seed"])
        if not mine:
            continue
        per_class = [format_mean_std([r["per_class_accuracy"][c] for r in mine]) for c in classes]
        epoch = [r["epoch_s"] for r in mine if r["epoch_s"] is not None]
        lp = [r["lp_epoch_s"] for r in mine if r["lp_epoch_s"] is not None]
        epoch_cell = f"{statistics.median(epoch):.0f}" if epoch else f"– (head only: {statistics.median(lp):.2f})"
        fit_cell = " / ".join(f"{r['fit_s']:.0f}" for r in mine)
        lines.append(f"| {s} | {len(mine)} | {format_mean_std([r['accuracy'] for r in mine])} | "
                     f"{format_mean_std([r['macro_f1'] for r in mine])} | {' | '.join(per_class)} | {epoch_cell} | "
                     f"{fit_cell} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="the ImageFolder tree, written there by examples/textile_defects.py when absent "
                   "(default: OUTPUT_DIR/data, or OUTPUT_DIR/data-limitN with --limit)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--backbone", default="torchvision:mobilenet_v2")
    p.add_argument("--image-size", type=int, default=160, help="input pixels (the weights' own: 224)")
    p.add_argument("--epochs", type=int, default=1,
                   help="backprop epochs: full, scratch, and LP-FT's second phase (1 fits a busy 2-core CPU)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the backprop epochs")
    p.add_argument("--lp-epochs", type=int, default=30, help="head-only epochs: linear probe and LP-FT's first phase")
    p.add_argument("--lp-lr", type=float, default=1e-2, help="learning rate of the head-only epochs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-scale", type=float, default=0.8, help="data.augment_min_scale (see the example config)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of train/ held out to pick the checkpoint")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--limit", type=int, default=None, help="only N images per class in the tree (smoke runs)")
    p.add_argument("--name", default="textile", help="results file stem and run-name prefix")
    p.add_argument("--output-dir", type=Path, default=Path("runs/bench-textile"))
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--skip-done", action="store_true", help="skip runs already in OUTPUT_DIR/<name>-rows.jsonl")
    args = p.parse_args()
    strategies = args.strategies.split(",")
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        p.error(f"unknown strategies {sorted(unknown)}; choose from {', '.join(STRATEGIES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.data is None:
        args.data = args.output_dir / ("data" if args.limit is None else f"data-limit{args.limit}")

    # The feature cache of this benchmark lives with its runs, so the first seed's extraction is timed.
    os.environ.setdefault("TRANSFERKIT_CACHE", str(args.output_dir / "cache"))
    torch.set_num_threads(args.threads)  # train.threads reaches the engine only; feature extraction comes first
    command = " ".join([".venv/bin/python", *sys.argv])
    machine = {"cpu": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
               "torch": torch.__version__, "threads": args.threads, "loadavg_start": os.getloadavg()}
    print(f"# textile defects, {date.today()}\n\ncommand: `{command}`")
    print(f"machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['platform']}; torch {machine['torch']}, "
          f"{args.threads} thread(s); load average at start {machine['loadavg_start'][0]:.1f}")
    print(f"{args.backbone} at {args.image_size} px; backprop epochs {args.epochs} (AdamW lr {args.lr:g}, cosine), "
          f"head-only epochs {args.lp_epochs} (lr {args.lp_lr:g}); batch {args.batch_size}; RandomResizedCrop area "
          f"{args.min_scale:g}..1 + flip; checkpoint on {args.val_fraction:g} of train/; seeds {seeds}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    print(ensure_tree(args.data, args.limit) + "\n", flush=True)

    rows_file = args.output_dir / f"{args.name}-rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if args.skip_done and \
        rows_file.exists() else []
    if not args.skip_done:
        rows_file.unlink(missing_ok=True)
    done = {(r["strategy"], r["seed"]) for r in rows}
    t_all = time.perf_counter()
    for seed in seeds:  # seed by seed: an interrupted benchmark still compares every strategy
        for strategy in strategies:
            if (strategy, seed) in done:
                continue
            row = run_one(strategy, seed, args)
            rows.append(row)
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            per = ", ".join(f"{c} {100 * v:.1f}" for c, v in row["per_class_accuracy"].items())
            print(f"{strategy} seed {seed}: {100 * row['accuracy']:.1f}% ({per}); {row['epoch_s']} s/epoch, "
                  f"fit {row['fit_s']:.0f} s, {row['wall_s']:.0f} s in all", flush=True)
    machine["loadavg_end"] = os.getloadavg()
    total = time.perf_counter() - t_all
    classes = list(rows[0]["per_class_accuracy"]) if rows else []
    table = summary_table(rows, strategies, classes)
    n_val = rows[0]["n_val"] if rows else 0
    text = "\n".join([
        f"# Textile defects: strategies compared ({date.today()})", "",
        f"command: `{command}`", "",
        f"machine: {machine['cpu']}, {machine['cpus']} CPUs ({machine['platform']}), torch {machine['torch']}, "
        f"{args.threads} torch thread(s); load average {machine['loadavg_start'][0]:.1f} at start, "
        f"{machine['loadavg_end'][0]:.1f} at end (the CPUs were shared with other jobs); {total / 60:.0f} min in all.",
        "",
        f"{args.backbone} at {args.image_size} px; backprop epochs {args.epochs} (AdamW lr {args.lr:g}, cosine); "
        f"head-only epochs {args.lp_epochs} (lr {args.lp_lr:g}); batch {args.batch_size}; training crops "
        f"RandomResizedCrop area {args.min_scale:g}..1 + flip. Scored on val/ ({n_val} images), mean ± sample std "
        f"over seeds {seeds}; checkpoint chosen on {args.val_fraction:g} of train/ (source validation), never on "
        "val/.", "",
        table, "",
    ])
    print("\n" + table)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text(text)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"date": str(date.today()), "command": command, "machine": machine, "settings": settings,
         "total_s": round(total, 1), "rows": rows}, indent=1) + "\n")
    print(f"\nwritten: {args.results / (args.name + '.md')}, {args.results / (args.name + '.json')}")


if __name__ == "__main__":
    main()
