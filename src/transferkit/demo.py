"""The built-in demo: the whole transfer loop on MNIST -> MNIST-M in about three minutes on two CPU cores.

``mnist-m-5k`` is MNIST-M's construction (Ganin & Lempitsky, 2015) applied offline to the 5,000 MNIST digits that
``mnist-5k`` holds: each digit blended onto a patch of a colour photograph shipped by scikit-image. Same digits,
new colours and textures: a CNN trained on the grey digits loses about half its accuracy there.

1. Pre-train a LeNet-style CNN on ``mnist-5k`` (labels), selecting on MNIST validation.
2. Measure the domain gap on its features (MMD² with a permutation test, proxy A-distance): is there one to close?
3. Adapt to the unlabelled ``mnist-m-5k`` training images with DANN; the negative-transfer guard compares with
   the source-only model of step 1 (the same settings and seed: reused, not retrained) and keeps the better.
4. Fine-tune the step-1 CNN on 10 labelled ``mnist-m-5k`` images per class, and train the same CNN from scratch
   on the same images (each seed draws another 10 per class).
5. Score everything on the held-out ``mnist-m-5k`` test split; write ``report.html``, ``report.md`` and the table.

Nothing in it reads a target test label before scoring: pre-training and adaptation select on MNIST validation,
the few-shot runs train a fixed number of epochs (with 10 images per class there is nothing to spare).
``--full`` trains the default step budget and adds MCC and every fine-tuning strategy.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from transferkit.config import parse_config, run_name_problem
from transferkit.data import load_data
from transferkit.errors import ConfigError
from transferkit.evaluate.demo_html import render_demo_html
from transferkit.evaluate.metrics import format_mean_std, mean_std
from transferkit.evaluate.plots import plot_bars
from transferkit.experiment import fit
from transferkit.features import feature_matrix
from transferkit.measure.discrepancy import measure_gap
from transferkit.models.heads import TransferModel
from transferkit.runs import RunDir, atomic_write_json, atomic_write_text
from transferkit.ui import console

SOURCE, TARGET = "mnist-5k", "mnist-m-5k"
MODEL = {"backbone": "lenet", "backbone_kwargs": {"in_chans": 3}}  # grey MNIST enters as RGB, like MNIST-M
# The quick demo's budget: 1,000 steps of 64 (about 16 passes over the 4,050 training digits; the default budget is
# 20 passes, 1,140 steps). Measured, 3 seeds, DANN minus source-only on mnist-m-5k test: +6.6 points at 1,200 steps
# of 32, +8.7 at 800 of 64, +15.9 at 1,000 of 64: the adversarial game needs its length (benchmarks/README.md).
QUICK = {"steps": 1000, "batch_size": 64}
ADAPT_QUICK, ADAPT_FULL = ("dann",), ("dann", "mcc")
GAP_MEASURES = ("mmd2", "proxy_a")

# Fine-tuning settings per strategy: (finetune section, train overrides). Set by hand from the training
# curves (a strategy that cannot fit its 100 training images gets more LR), never from target test accuracy.
STRATEGY_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "full": ({"strategy": "full"}, {"lr": 1e-3}),
    "linear-probe": ({"strategy": "linear-probe"}, {"lr": 1e-2}),
    "partial": ({"strategy": "partial", "freeze_stages": 2}, {"lr": 1e-3}),
    "lp-ft": ({"strategy": "lp-ft", "lp_epochs": 20, "lp_lr": 1e-2, "backbone_lr_mult": 0.1}, {"lr": 1e-3}),
}
QUICK_STRATEGIES = ("full",)


def run_demo(
    output_dir: str | Path = "runs",
    name: str | None = None,
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    shots: int = 10,
    full: bool = False,
    finetune_epochs: int = 40,
    steps: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo and return its summary (also written to ``<output_dir>/<name>/report.{json,md,html}``).

    ``steps`` overrides the pre-training and adaptation length (tests use a tiny one)."""
    t_start = time.perf_counter()
    name = name or f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    problem = run_name_problem(name)
    if problem is not None:  # `../escape` would put the demo outside --output-dir; 300 characters, no folder at all
        raise ConfigError(f"demo --name {name[:120]!r}: {problem}")
    root = RunDir(Path(output_dir) / name)
    root.prepare(overwrite=overwrite)
    out = str(root.path)
    budget: dict[str, Any] = {} if full else {"steps": QUICK["steps"]}
    if steps is not None:
        budget = {"steps": steps}
    batch = QUICK["batch_size"]

    def source_run(run_name: str, method: str) -> dict[str, Any]:
        return fit(parse_config({
            "name": run_name, "output_dir": out, "seeds": list(seeds),
            "data": {"source": SOURCE, "target": TARGET, "batch_size": batch},
            "model": MODEL, "adapt": {"method": method}, "train": budget,
        }), progress=progress)

    lap = _Laps()
    console.rule(f"[bold]1. pre-train LeNet on {SOURCE} (source only), seeds {list(seeds)}")
    pre = source_run("pretrain", "none")
    lap.done("1. pre-train")
    rows: dict[str, dict[str, Any]] = {
        "source only": {"target": pre["summary"]["target"], "note": f"{SOURCE} labels only"},
    }
    console.rule(f"[bold]2. measure the domain gap on the pre-trained CNN's features (seed {seeds[0]})")
    pretrained = RunDir(root.path / "pretrain").find_model(seeds[0] if len(seeds) > 1 else None)
    gap = measure_demo_gap(pretrained, progress=progress)
    _print_gap(gap)
    lap.done("2. measure the gap")

    console.rule(f"[bold]3. adapt to the unlabelled {TARGET} images (no target labels), seeds {list(seeds)}")
    adapted, adapt_gaps = _adapt(source_run, ADAPT_FULL if full else ADAPT_QUICK)
    rows.update(adapted)
    lap.done("3. adapt")

    console.rule(f"[bold]4. fine-tune on {shots} labelled {TARGET} images per class, seeds {list(seeds)}")
    rows.update(_finetune(out, pretrained, seeds, shots, finetune_epochs, full, progress))
    lap.done("4. fine-tune")
    seconds = time.perf_counter() - t_start
    summary = {
        "name": name,
        "source": SOURCE,
        "target": TARGET,
        "backbone": "lenet",
        "shots_per_class": shots,
        "seeds": list(seeds),
        "budget": (f"{budget['steps']} steps of batch {batch}" if "steps" in budget else
                   f"the default step budget, batch {batch}"),
        "finetune_epochs": finetune_epochs,
        "seconds": seconds,
        "phase_seconds": lap.phases,
        "evaluated_on": f"{TARGET} test split (1,000 images)",
        "selection": "pre-training and adaptation: best MNIST validation accuracy; fine-tuning: last epoch "
        "(fixed budget); target test labels choose nothing",
        "gap": gap,
        "adaptation_gap": adapt_gaps,
        "rows": {k: {"accuracy": v["target"]["accuracy"], "macro_f1": v["target"]["macro_f1"], "note": v["note"]}
                 for k, v in rows.items()},
    }
    _write(root, summary)
    print_table(summary)
    return summary


class _Laps:
    """Wall seconds of each phase, for the report."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._clock = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(now - self._clock, 1)
        self._clock = now


def _print_gap(gap: list[dict[str, Any]]) -> None:
    for g in gap:
        p = "" if g["p_value"] is None else f" (permutation test p = {g['p_value']:.3g})"
        console.print(f"  {g['name']}: {g['value']:.4g}{p}: {g['meaning']}", highlight=False, soft_wrap=True)


def _adapt(source_run: Any, methods: tuple[str, ...]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Step 3: each method on the unlabelled target under the guard; the rows and how each changed the gap."""
    rows, gaps = {}, {}
    for method in methods:
        rep = source_run(f"adapt-{method}", method)
        guards = [r["guard"] for r in rep["per_seed"] if "guard" in r]
        kept = [g["keep"] for g in guards]
        rows[f"adapted: {method}"] = {
            "target": rep["summary"]["target"],
            "note": f"{SOURCE} labels + unlabelled {TARGET} images; the negative-transfer guard kept the adapted "
                    f"model in {kept.count('adapted')} of {len(kept)} seeds",
        }
        gaps[method] = _gap_change(guards)
    return rows, gaps


def _finetune(out: str, pretrained: Path, seeds: tuple[int, ...], shots: int, epochs: int, full: bool,
              progress: bool) -> dict[str, dict[str, Any]]:
    """Step 4: ``shots`` labelled target images per class, from scratch and from the step-1 CNN."""
    settings: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        (f"scratch ({shots}/class)", "lenet", {"strategy": "full"}, {"lr": 1e-3})
    ]
    strategies = STRATEGY_SETTINGS if full else {k: STRATEGY_SETTINGS[k] for k in QUICK_STRATEGIES}
    settings += [(f"fine-tuned: {k} ({shots}/class)", f"file:{pretrained}", ft, tr) for k, (ft, tr) in
                 strategies.items()]
    rows = {}
    for label, backbone, ft, tr in settings:
        model = {**MODEL, "backbone": backbone} if backbone == "lenet" else {"backbone": backbone}
        cfg = parse_config({
            "name": label.split(" (")[0].replace(": ", "-"), "output_dir": out, "seeds": list(seeds),
            "data": {"source": TARGET, "source_per_class": shots, "val_fraction": 0.0, "batch_size": 32},
            "model": model, "finetune": ft, "train": {"epochs": epochs, **tr},
        })
        console.print(f"[bold]{label}[/] ({'from scratch' if backbone == 'lenet' else 'from the step-1 CNN'})")
        rep = fit(cfg, progress=progress)
        rows[label] = {
            "target": rep["summary"]["source"],  # the fine-tuning domain *is* the target here
            "note": f"{shots} labelled {TARGET} images per class" + ("" if backbone == "lenet" else
                                                                    f", starting from the {SOURCE} CNN"),
        }
    return rows


def measure_demo_gap(model_path: Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """The gap between the source test digits and the unlabelled target training images on ``model_path``'s
    features: what ``transferkit measure --backbone file:MODEL`` prints."""
    backbone = TransferModel.load(model_path).backbone
    xs = feature_matrix(load_data(SOURCE, "test"), backbone, progress=progress)
    xt = feature_matrix(load_data(TARGET, "train").unlabelled(), backbone, progress=progress)
    gaps = measure_gap(xs, xt, measures=list(GAP_MEASURES), max_samples=500, num_permutations=200, seed=0)
    return [g.to_dict() for g in gaps]


def _gap_change(guards: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each gap measure before (the source-only twin) and after adaptation."""
    out: dict[str, Any] = {}
    for measure in GAP_MEASURES:
        pairs = [(g["gap"]["source-only"][measure]["value"], g["gap"]["adapted"][measure]["value"])
                 for g in guards if measure in g.get("gap", {}).get("source-only", {})
                 and measure in g.get("gap", {}).get("adapted", {})]
        if pairs:
            out[measure] = {"before": sum(b for b, _ in pairs) / len(pairs),
                            "after": sum(a for _, a in pairs) / len(pairs), "seeds": len(pairs)}
    return out


def print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['target']} test accuracy, transfer from {summary['source']} "
                        f"(seeds {summary['seeds']})")
    table.add_column("setting")
    table.add_column("accuracy (%)", justify="right")
    table.add_column("macro-F1 (%)", justify="right")
    table.add_column("what it saw")
    for k, v in summary["rows"].items():
        table.add_row(k, format_mean_std(v["accuracy"]["values"]), format_mean_std(v["macro_f1"]["values"]), v["note"])
    console.print(table)
    for method, change in summary.get("adaptation_gap", {}).items():
        if "proxy_a" in change:
            c = change["proxy_a"]
            console.print(f"{method}: proxy A-distance {c['before']:.2f} (source-only features) -> {c['after']:.2f} "
                          f"(adapted), mean of {c['seeds']} seed{'s' if c['seeds'] != 1 else ''} (0: domains "
                          "indistinguishable, 2: separable)",
                          highlight=False)
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in summary.get("phase_seconds", {}).items())
    console.print(f"Finished in {summary['seconds']:.0f} s ({steps}). Open {summary.get('html', '')} in a browser "
                  f"(the same in markdown: {summary.get('report', '')}).", highlight=False, soft_wrap=True)


def _write(root: RunDir, summary: dict[str, Any]) -> None:
    bars = {k: mean_std(v["accuracy"]["values"]) for k, v in summary["rows"].items()}
    png = plot_bars(bars, root.path / "comparison.png", f"{summary['target']} test accuracy (mean ± std)")
    summary["report"] = str(root.report_md)
    summary["html"] = str(root.path / "report.html")
    atomic_write_json(root.report_json, summary)
    lines = [
        f"# transferkit demo: {summary['source']} -> {summary['target']}",
        "",
        f"Trained a LeNet-style CNN on {summary['source']} ({summary['budget']}) alone and with unlabelled "
        f"{summary['target']} images (adaptation), then fine-tuned the source-only CNN on "
        f"{summary['shots_per_class']} labelled {summary['target']} images per class "
        f"({summary['finetune_epochs']} epochs). Scored on the {summary['evaluated_on']}; mean ± sample std over "
        f"seeds {summary['seeds']}.",
        f"Checkpoint selection: {summary['selection']}.",
        "",
        "| setting | accuracy (%) | macro-F1 (%) | what it saw |",
        "|---|---|---|---|",
    ]
    for k, v in summary["rows"].items():
        lines.append(f"| {k} | {format_mean_std(v['accuracy']['values'])} | "
                     f"{format_mean_std(v['macro_f1']['values'])} | {v['note']} |")
    lines += ["", "Domain gap on the pre-trained CNN's features (source test vs unlabelled target train, "
              f"seed {summary['seeds'][0]}):", ""]
    for g in summary["gap"]:
        p = "" if g["p_value"] is None else f" (p = {g['p_value']:.3g})"
        lines.append(f"- {g['name']}: {g['value']:.4g}{p}")
    for method, change in summary["adaptation_gap"].items():
        lines += [f"- after {method}: " + ", ".join(f"{m} {c['before']:.4g} -> {c['after']:.4g}"
                                                    for m, c in change.items()) + " (mean over seeds)"]
    lines += ["", f"Run time: {summary['seconds']:.0f} s.", "", f"![comparison]({png.name})", "",
              "Each setting's own run directory (config, metrics, checkpoints, plots, report.html) is in this folder."]
    atomic_write_text(root.report_md, "\n".join(lines) + "\n")
    atomic_write_text(root.path / "report.html", render_demo_html(summary, root.path))
