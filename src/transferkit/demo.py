"""The built-in demo: does transfer beat training from scratch when the target has 10 labels per class?

1. Pre-train a LeNet-style CNN on ``mnist-5k`` (5,000 MNIST digits), selecting on MNIST validation, and
   measure it on ``digits-uci`` (UCI optdigits, another scanner, 8x8 pixels): the source-only accuracy.
2. Adapt to the unlabelled ``digits-uci`` images (DANN, MCC): MNIST labels only, same selection rule.
3. Fine-tune the pre-trained CNN on 10 labelled ``digits-uci`` images per class with every strategy, and
   train the same CNN from scratch on the same 10 per class (each seed draws another 10 per class).
4. Score everything on the held-out ``digits-uci`` test split, print a table and write the run directory.

The few-shot runs train a fixed number of epochs (no validation split: with 10 images per class there is
nothing to spare), so no target test label chooses anything.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from transferkit.config import parse_config
from transferkit.evaluate.metrics import format_mean_std, mean_std
from transferkit.evaluate.plots import plot_bars
from transferkit.experiment import fit
from transferkit.runs import RunDir, atomic_write_json, atomic_write_text
from transferkit.train.callbacks import console

SOURCE, TARGET = "mnist-5k", "digits-uci"
ADAPT_METHODS = ("dann", "mcc")  # fixed before looking at results: the classic adversarial one, a recent strong one

# Fine-tuning settings per strategy: (finetune section, train overrides). Set by hand from the training
# curves (a strategy that cannot fit its 100 training images gets more LR), never from target test accuracy.
STRATEGY_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "linear-probe": ({"strategy": "linear-probe"}, {"lr": 1e-2}),
    "partial": ({"strategy": "partial", "freeze_stages": 2}, {"lr": 1e-3}),
    "full": ({"strategy": "full"}, {"lr": 1e-3}),
    "lp-ft": ({"strategy": "lp-ft", "lp_epochs": 20, "lp_lr": 1e-2, "backbone_lr_mult": 0.1}, {"lr": 1e-3}),
}


def run_demo(
    output_dir: str | Path = "runs",
    name: str | None = None,
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    shots: int = 10,
    pretrain_epochs: int = 15,
    finetune_epochs: int = 60,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo and return its summary (also written to ``<output_dir>/<name>/report.{json,md}``)."""
    t_start = time.perf_counter()
    name = name or f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    root = RunDir(Path(output_dir) / name)
    root.prepare(overwrite=overwrite)
    out = str(root.path)

    def source_run(run_name: str, method: str) -> dict[str, Any]:
        return fit(parse_config({
            "name": run_name, "output_dir": out, "seeds": list(seeds),
            "data": {"source": SOURCE, "target": TARGET, "val_fraction": 0.1, "batch_size": 64},
            "model": {"backbone": "lenet"},
            "adapt": {"method": method},
            "train": {"epochs": pretrain_epochs, "lr": 1e-3},
        }), progress=progress)

    console.rule(f"[bold]1. pre-train LeNet on {SOURCE} (source only), seeds {list(seeds)}")
    pre = source_run("pretrain", "none")
    pretrained = RunDir(root.path / "pretrain").find_model(seeds[0] if len(seeds) > 1 else None)
    rows: dict[str, dict[str, Any]] = {
        "source only (no target labels)": {
            "target": pre["summary"]["target"],
            "note": f"trained on {SOURCE}, scored on {TARGET}",
        }
    }
    console.rule(f"[bold]2. adapt to unlabelled {TARGET} images (no target labels), seeds {list(seeds)}")
    for method in ADAPT_METHODS:
        rep = source_run(f"adapt-{method}", method)
        kept = [r["guard"]["keep"] for r in rep["per_seed"] if "guard" in r]
        rows[f"adapted: {method} (no target labels)"] = {
            "target": rep["summary"]["target"],
            "note": f"{SOURCE} labels + unlabelled {TARGET} images; the negative-transfer guard kept the adapted "
                    f"model in {kept.count('adapted')} of {len(kept)} seeds",
        }
    console.rule(f"[bold]3. fine-tune on {shots} labelled {TARGET} images per class, seeds {list(seeds)}")
    settings: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("scratch", "lenet", {"strategy": "full"}, {"lr": 1e-3})
    ]
    settings += [(k, f"file:{pretrained}", ft, tr) for k, (ft, tr) in STRATEGY_SETTINGS.items()]
    for label, backbone, ft, tr in settings:
        cfg = parse_config({
            "name": f"finetune-{label}", "output_dir": out, "seeds": list(seeds),
            "data": {"source": TARGET, "source_per_class": shots, "val_fraction": 0.0, "batch_size": 32},
            "model": {"backbone": backbone},
            "finetune": ft,
            "train": {"epochs": finetune_epochs, **tr},
        })
        console.print(f"[bold]{label}[/] ({backbone if label == 'scratch' else 'from the pre-trained CNN'})")
        rep = fit(cfg, progress=progress)
        rows[label if label != "scratch" else f"scratch ({shots}/class)"] = {
            "target": rep["summary"]["source"],  # the fine-tuning domain *is* the target here
            "note": f"{shots} labelled {TARGET} images per class",
        }

    seconds = time.perf_counter() - t_start
    summary = {
        "name": name,
        "source": SOURCE,
        "target": TARGET,
        "shots_per_class": shots,
        "seeds": list(seeds),
        "pretrain_epochs": pretrain_epochs,
        "finetune_epochs": finetune_epochs,
        "seconds": seconds,
        "evaluated_on": f"{TARGET} test split (898 images)",
        "selection": "pre-training and adaptation: best MNIST validation accuracy; fine-tuning: last epoch "
        "(fixed budget); target test labels choose nothing",
        "rows": {k: {"accuracy": v["target"]["accuracy"], "macro_f1": v["target"]["macro_f1"], "note": v["note"]}
                 for k, v in rows.items()},
    }
    _write(root, summary)
    print_table(summary)
    return summary


def print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['target']} test accuracy: transfer from {summary['source']} vs scratch "
                        f"({summary['shots_per_class']} labels/class, seeds {summary['seeds']})")
    table.add_column("setting")
    table.add_column("accuracy (%)", justify="right")
    table.add_column("macro-F1 (%)", justify="right")
    table.add_column("what it saw")
    for k, v in summary["rows"].items():
        table.add_row(k, format_mean_std(v["accuracy"]["values"]), format_mean_std(v["macro_f1"]["values"]), v["note"])
    console.print(table)
    console.print(f"Finished in {summary['seconds']:.0f} s. Report: {summary.get('report', '')}")


def _write(root: RunDir, summary: dict[str, Any]) -> None:
    bars = {k: mean_std(v["accuracy"]["values"]) for k, v in summary["rows"].items()}
    png = plot_bars(bars, root.path / "comparison.png", f"{summary['target']} test accuracy (mean ± std)")
    summary["report"] = str(root.report_md)
    atomic_write_json(root.report_json, summary)
    lines = [
        f"# transferkit demo: {summary['source']} -> {summary['target']}",
        "",
        f"Trained a LeNet-style CNN on {summary['source']} ({summary['pretrain_epochs']} epochs) alone and with "
        f"unlabelled {summary['target']} images (adaptation), then fine-tuned the source-only CNN on "
        f"{summary['shots_per_class']} labelled {summary['target']} images per class. "
        f"Scored on the {summary['evaluated_on']}; mean ± sample std over seeds {summary['seeds']}.",
        f"Checkpoint selection: {summary['selection']}.",
        "",
        "| setting | accuracy (%) | macro-F1 (%) | what it saw |",
        "|---|---|---|---|",
    ]
    for k, v in summary["rows"].items():
        lines.append(f"| {k} | {format_mean_std(v['accuracy']['values'])} | "
                     f"{format_mean_std(v['macro_f1']['values'])} | {v['note']} |")
    lines += ["", f"Run time: {summary['seconds']:.0f} s.", "", f"![comparison]({png.name})", "",
              "Each setting's own run directory (config, metrics, checkpoints, plots) is in this folder."]
    atomic_write_text(root.report_md, "\n".join(lines) + "\n")
