"""The ``transferkit`` command line: parses arguments and calls the public API, nothing more.

Every command exits with code 2 and a one-line reason on bad input (a :class:`TransferkitError`).

Over 500 lines as one module: each command is its flags (most of the lines, as typer declares them) and a call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from transferkit.errors import TransferkitError
from transferkit.field_help import FIELD_HELP
from transferkit.ui import console

app = typer.Typer(
    name="transferkit",
    help="Transfer learning from the command line: fine-tune pre-trained backbones, extract features, "
    "evaluate and report. Offline unless you pass --online.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _help(key: str) -> str:
    """A flag that sets a config field shows that field's description (written once, in field_help.py)."""
    return FIELD_HELP[key]


SeedsOpt = Annotated[str | None, typer.Option("--seeds", help=_help("seeds"))]
TrustPickleOpt = Annotated[bool, typer.Option("--trust-pickle", help=_help("model.trust_pickle"))]
TrustCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="let a transformers model folder run the Python code its config names")]


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


@app.callback()
def _every_command() -> None:
    """Every command starts offline (:mod:`transferkit.network`); only ``--online`` lifts it."""
    from transferkit.network import set_offline

    set_offline(True)


def _offline(online: bool) -> None:
    """Offline for every library of this process (hub variables and sockets) unless the user passed --online."""
    from transferkit.network import set_offline

    set_offline(not online)


def _interrupted(message: str) -> None:
    """Ctrl-C: one line saying what was kept, and the shell's usual exit code for SIGINT (130)."""
    console.print(f"\n[yellow]interrupted:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(130)


def _trust_code(ctx: typer.Context, trust: bool) -> None:
    """Code in model folders may run for the rest of this command only if the user passed --trust-remote-code."""
    from transferkit.models.pretrained import trusting_remote_code

    ctx.with_resource(trusting_remote_code(trust))


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        _fail(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}")
    if not seeds:
        _fail("--seeds is empty")
    return seeds


def _within(low: int, high: int | None = None) -> Any:
    """A callback that keeps an integer flag in [low, high] (typer's own ``min=`` widens every --help's type
    column past 80 characters): a usage error and exit code 2 before any work, not a traceback after it."""

    def check(value: int | None) -> int | None:
        if value is not None and (value < low or (high is not None and value > high)):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise typer.BadParameter(f"{value} is out of range: give a whole number {bounds}")
        return value

    return check


def _device(value: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, checked before any work starts (torch's own error for ``foo`` is a
    traceback, and comes after the data has loaded)."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")
    if ":" in value:
        import torch

        count = torch.cuda.device_count()
        if int(value.split(":")[1]) >= count:
            raise typer.BadParameter(f"{value!r}: this machine has {count} CUDA device(s) (cuda:0 is the first)")
    return value


DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (feature extraction)", callback=_device)]
OverwriteFileOpt = Annotated[bool, typer.Option("--overwrite", help="replace an existing output file")]
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096  # backbone_kwargs.image_size's range (models/backbones.py)


def _write_json_out(path: Path, obj: Any, overwrite: bool) -> None:
    """``--json``: checked before the work (``check_output_file``) and again as it is moved into place."""
    from transferkit.runs import atomic_path

    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    except TransferkitError as exc:
        _fail(str(exc))
    console.print(f"wrote {path}")


# `transferkit fit`'s flags that set a config key (a test checks that every key exists in RunConfig)
FIT_FLAG_KEYS = {
    "name": "name", "source": "data.source", "target": "data.target", "backbone": "model.backbone",
    "weights": "model.weights", "init_from": "model.init_from", "pretrained": "model.pretrained",
    "strategy": "finetune.strategy", "method": "adapt.method", "lam": "adapt.weight",
    "target_labels_per_class": "data.target_labels_per_class", "epochs": "train.epochs", "lr": "train.lr",
    "batch_size": "data.batch_size", "seeds": "seeds", "output_dir": "output_dir", "online": "online",
    "trust_pickle": "model.trust_pickle", "log_to": "tracking.log_to",
}


@app.command()
def fit(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config (flags override it)")] = None,
    name: Annotated[str | None, typer.Option(help=_help("name"))] = None,
    source: Annotated[list[str] | None, typer.Option(help=_help("data.source"))] = None,
    target: Annotated[str | None, typer.Option(help=_help("data.target"))] = None,
    backbone: Annotated[str | None, typer.Option(help=_help("model.backbone"))] = None,
    weights: Annotated[str | None, typer.Option(help=_help("model.weights"))] = None,
    init_from: Annotated[str | None, typer.Option(help=_help("model.init_from"))] = None,
    pretrained: Annotated[bool | None, typer.Option("--pretrained", help=_help("model.pretrained"))] = None,
    strategy: Annotated[str | None, typer.Option(help=_help("finetune.strategy"))] = None,
    method: Annotated[str | None, typer.Option(help=_help("adapt.method"))] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help=_help("adapt.weight"))] = None,
    target_labels_per_class: Annotated[int | None, typer.Option(
        "--target-labels", help=_help("data.target_labels_per_class"))] = None,
    epochs: Annotated[int | None, typer.Option(help=_help("train.epochs"))] = None,
    lr: Annotated[float | None, typer.Option(help=_help("train.lr"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=_help("data.batch_size"))] = None,
    seeds: SeedsOpt = None,
    output_dir: Annotated[str | None, typer.Option(help=_help("output_dir"))] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any field: section.field=value")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    resume: Annotated[bool, typer.Option(help="continue a killed run from its last checkpoint")] = False,
    online: Annotated[bool, typer.Option(help=_help("online"))] = False,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustCodeOpt = False,
    log_to: Annotated[str | None, typer.Option("--log-to", help=_help("tracking.log_to"))] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Fine-tune a backbone on labelled source data and score it on the source and target test splits.

    Example:

        transferkit fit --source mnist-5k --target digits-uci --backbone lenet --epochs 5 --name mnist-lenet

        transferkit fit -c examples/mnist_to_digits.yaml --set train.lr=0.01 --seeds 0,1,2

        transferkit fit --method dann --source mnist --target usps --epochs 20 --set adapt.schedule=ramp

        transferkit fit -c examples/mnist_to_digits.yaml --log-to tensorboard,mlflow,csv

        transferkit fit --source amazon-books --source amazon-dvd --source amazon-electronics --target amazon-kitchen
        --backbone mlp --method dann
    """
    from transferkit.config import RunConfig, parse_config, parse_override

    _offline(online)
    _trust_code(ctx, trust_remote_code)
    try:
        flags = {
            "name": name, "source": (source[0] if len(source) == 1 else source) if source else None,
            "target": target, "backbone": backbone, "weights": weights, "init_from": init_from,
            "pretrained": pretrained, "strategy": strategy, "method": method, "lam": lam,
            "target_labels_per_class": target_labels_per_class, "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "seeds": _parse_seeds(seeds), "output_dir": output_dir,
            "online": online or None, "trust_pickle": trust_pickle or None,
            "log_to": [k.strip() for k in log_to.split(",") if k.strip()] if log_to else None,
        }
        overrides: dict[str, Any] = {FIT_FLAG_KEYS[f]: v for f, v in flags.items() if v is not None}
        for item in set_ or []:
            k, v = parse_override(item)
            overrides[k] = v
        cfg = RunConfig.from_yaml(config, overrides) if config else parse_config({}, overrides, source="flags")
        from transferkit.experiment import fit as run_fit
        from transferkit.pipeline.model import check_names
        from transferkit.train.tracking import check_tracking

        check_names(cfg, str(Path(config)) if config else "flags")  # registered names, worded as the parse words them
        check_tracking(cfg.tracking.log_to, cfg.tracking.mlflow_uri)  # before the run folder exists

        report = run_fit(cfg, overwrite=overwrite, resume=resume, progress=progress)
    except TransferkitError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(f"run {cfg.run_path} stopped; its last checkpoint is kept: continue it with the same command "
                     "and --resume")
    if not report:  # another process of an `accelerate launch`: the main one reports
        return
    _print_summary(report)
    console.print(f"run directory: {cfg.run_path}")


def _print_summary(report: dict[str, Any]) -> None:
    from transferkit.evaluate.html import scalar_columns
    from transferkit.evaluate.metrics import format_mean_std

    table = Table(title=f"{report['name']}: {report['backbone']} ({report['strategy']}), seeds {report['seeds']}")
    cols = scalar_columns(report)
    table.add_column("evaluated on")
    for _, label, _, _ in cols:
        table.add_column(label, justify="right")
    for role, m in report["summary"].items():
        table.add_row(role, *(format_mean_std(m[k]["values"], scale, 1 if scale > 1 else 3) if k in m else "–"
                              for k, _, scale, _ in cols))
    console.print(table)
    console.print(f"checkpoint selection: {report['selection']}")
    autos = [r["auto"] for r in report.get("per_seed", []) if "auto" in r]
    if autos:  # which candidate each seed kept, and why (every candidate is in the report)
        chosen = ", ".join(f"{a['chosen']}" for a in autos)
        console.print(f"method auto kept: {chosen} (by seed; {autos[0]['validator']} among source-only and the "
                      "candidates the guard kept; the report lists every candidate)")


@app.command()
def evaluate(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="run directory written by `transferkit fit`")],
    data: Annotated[str, typer.Option(help="labelled data to score on: a dataset name or a path")],
    split: Annotated[str, typer.Option(help="split of --data")] = "test",
    seed: Annotated[int | None, typer.Option(help="which seed's model, for multi-seed runs",
                                             callback=_within(0))] = None,
    batch_size: Annotated[int, typer.Option(help="batch size", callback=_within(1, 65536))] = 256,
    trust_remote_code: TrustCodeOpt = False,
) -> None:
    """Score a trained run on labelled data: accuracy, macro-F1, ECE, per-class accuracy.

    The result is also written to RUN/evaluations/<data>-<split>.json.

    Example:

        transferkit evaluate runs/mnist-lenet --data digits-uci --split test
    """
    _offline(False)
    _trust_code(ctx, trust_remote_code)
    try:
        from transferkit.evaluate.run_files import evaluations_folder
        from transferkit.evaluate.score_run import evaluate_run

        evaluations_folder(run)  # a link there would carry the write out of the run folder: refused before scoring
        metrics, out = evaluate_run(run, data, split, seed=seed, batch_size=batch_size)
    except TransferkitError as exc:
        _fail(str(exc))
    from transferkit.tasks import scalars_of

    table = Table(title=f"{run} on {data} ({split}), n={metrics['n']}")
    for _, label, _, _ in scalars_of(metrics):
        table.add_column(label, justify="right")
    table.add_row(*(f"{scale * metrics[k]:.{2 if scale > 1 else 3}f}" for k, _, scale, _ in scalars_of(metrics)))
    console.print(table)
    if "per_class_accuracy" in metrics:
        per = ", ".join(f"{c}: {'–' if v is None else f'{100 * v:.1f}'}"
                        for c, v in metrics["per_class_accuracy"].items())
        console.print(f"per-class accuracy (%): {per}")
    for name, h in metrics.get("heads", {}).items():
        shown = ", ".join(f"{label} {scale * h[k]:.{2 if scale > 1 else 3}f}" for k, label, scale, _ in scalars_of(h))
        left_out = f"; {h['unknown']} item(s) of a class the source lacks, not scored" if h.get("unknown") else ""
        console.print(f"head {name} ({h['kind']}): {shown}{left_out}")
    console.print(f"written: {out}")


@app.command()
def predict(
    ctx: typer.Context,
    run: Annotated[Path, typer.Argument(help="run directory written by `transferkit fit`")],
    data: Annotated[str, typer.Option(help="data to predict: a dataset name or a path (see `transferkit fit`)")],
    out: Annotated[Path, typer.Option(help="CSV file to write")] = Path("predictions.csv"),
    split: Annotated[str, typer.Option(help="split of --data")] = "test",
    seed: Annotated[int | None, typer.Option(help="which seed's model, for multi-seed runs",
                                             callback=_within(0))] = None,
    batch_size: Annotated[int, typer.Option(help="batch size", callback=_within(1, 65536))] = 256,
    overwrite: OverwriteFileOpt = False,
    trust_remote_code: TrustCodeOpt = False,
) -> None:
    """Predict classes for new data and write a CSV (index, input, label, prediction, confidence); a model with
    several heads or a regression head writes one column per head instead.

    Example:

        transferkit predict runs/mnist-lenet --data digits-uci --split test --out preds.csv
    """
    _offline(False)
    _trust_code(ctx, trust_remote_code)
    try:
        from transferkit.data import load_data
        from transferkit.evaluate.predictions_csv import write_predictions_csv
        from transferkit.models.heads import TransferModel
        from transferkit.runs import RunDir, check_output_file

        check_output_file(out, overwrite=overwrite)  # before the model and the data load
        model = TransferModel.load(RunDir(run).find_model(seed))
        ds = model.prepare(load_data(data, split))
        write_predictions_csv(model, ds, out, batch_size=batch_size, overwrite=overwrite)
    except TransferkitError as exc:
        _fail(str(exc))
    console.print(f"wrote {len(ds)} predictions to {out}")


@app.command()
def extract(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="data to embed: a dataset name or a path")],
    out: Annotated[Path, typer.Option(help=".npz file to write (features, labels, classes, domain)")],
    backbone: Annotated[str, typer.Option(help="backbone spec")] = "lenet",
    weights: Annotated[str | None, typer.Option(help="local weights file")] = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="pretrained weights from an installed package")
    ] = False,
    split: Annotated[str, typer.Option(help="split of --data")] = "train",
    batch_size: Annotated[int | None, typer.Option(help="batch size (default: 16 on CPU, 128 on GPU)",
                                                   callback=_within(1, 65536))] = None,
    num_workers: Annotated[int, typer.Option(help="data-loading worker processes", callback=_within(0, 64))] = 0,
    device: DeviceOpt = "auto",
    overwrite: OverwriteFileOpt = False,
    online: Annotated[bool, typer.Option(help=_help("online"))] = False,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustCodeOpt = False,
) -> None:
    """Embed a dataset with a frozen backbone; features are streamed to an .npz batch by batch.

    Example:

        transferkit extract --data digits-uci --backbone timm:tf_efficientnet_lite0 --pretrained --out uci.npz
    """
    _offline(online)
    _trust_code(ctx, trust_remote_code)
    try:
        from transferkit.data import load_data
        from transferkit.features import extract_to_npz
        from transferkit.models.backbones import backbone_for, check_input_kind
        from transferkit.models.pretrained import trusting_pickle
        from transferkit.runs import check_output_file

        if out.suffix != ".npz":
            _fail(f"--out must end in .npz, got {out}")
        check_output_file(out, overwrite=overwrite)
        ds = load_data(data, split)
        with trusting_pickle(trust_pickle):
            bb = backbone_for(backbone, ds, weights=weights, pretrained=pretrained, online=online)
        check_input_kind(bb, ds)
        extract_to_npz(bb, ds, out, batch_size=batch_size, num_workers=num_workers, device=device)
    except TransferkitError as exc:
        _fail(str(exc))
    console.print(f"wrote features of {len(ds)} items ({bb.out_features}-d, {bb.spec}) to {out}")


@app.command()
def sweep(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="YAML run config: the base of every run")],
    over: Annotated[list[str], typer.Option(
        "--over", help="key=v1,v2,... or key=low:high[:log] (method, lambda, lr, epochs, or a.b)")],
    select: Annotated[str, typer.Option(help="label-free validator: dev, iwcv, snd, entropy, info_max, ...")]
    = "dev",
    trials: Annotated[int | None, typer.Option(help="runs Optuna proposes when an axis is a range (default 8)",
                                               callback=_within(1))] = None,
    name: Annotated[str | None, typer.Option(help="sweep name: the folder under the config's output_dir")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a base field: section.field=value")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing sweep directory")] = False,
    online: Annotated[bool, typer.Option(help=_help("online"))] = False,
    trust_remote_code: TrustCodeOpt = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train a grid of runs and choose one without target labels (collapsed candidates are rejected).

    Example:

        transferkit sweep examples/mnist_to_digits.yaml --over method=dann,mcc --over lambda=0.1,1 --select dev

        transferkit sweep examples/mnist_to_digits.yaml --over method=dann --over lambda=0.01:3:log --trials 6
    """
    from transferkit.config import RunConfig, parse_override

    _offline(online)
    _trust_code(ctx, trust_remote_code)
    try:
        overrides: dict[str, Any] = {"name": name} if name else {}
        for item in set_ or []:
            k, v = parse_override(item)
            overrides[k] = v
        base = RunConfig.from_yaml(config, overrides)
        from transferkit.pipeline.model import check_names
        from transferkit.sweep import run_sweep
        from transferkit.train.tracking import check_tracking

        check_names(base, str(Path(config)))  # method and validator names, as the parse words them
        check_tracking(base.tracking.log_to, base.tracking.mlflow_uri)  # before the sweep folder exists

        result = run_sweep(base, over, select, trials=trials, overwrite=overwrite, progress=progress)
    except TransferkitError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(f"sweep {base.run_path} stopped; its finished runs are kept")
    table = Table(title=f"sweep {base.name}: chosen by {select} (label-free)")
    labelled = "with_target_labels" in result
    for col in ("run", select, "collapse check", *(["target acc. % (labels: reported only)"] if labelled else [])):
        table.add_column(col, overflow="fold")
    for r in result["rows"]:
        mark = " ◀ chosen" if r["name"] == result["chosen"] else ""
        cells = [r["name"] + mark, f"{r['score']:.4g}", "collapsed" if r["collapsed"] else "ok"]
        if labelled:
            cells.append("–" if r["target_accuracy"] is None else f"{100 * r['target_accuracy']:.1f}")
        table.add_row(*cells)
    console.print(table)
    for r in result["rows"]:
        if r["collapsed"]:
            console.print(f"  {r['name']}: {r['collapsed']}", highlight=False, soft_wrap=True)
    if result["chosen"] is None:
        console.print("[yellow]every candidate collapsed on the target: none chosen[/]")
    if labelled:
        w = result["with_target_labels"]
        gap = "" if w["gap"] is None else f"; the label-free choice is {100 * w['gap']:.1f} points below it"
        console.print(f"target labels would have chosen {w['would_choose']}{gap} (labels chose nothing)")
    console.print(f"sweep directory: {base.run_path} (sweep.json)")


@app.command()
def rank(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="labelled target data: a dataset name or a path")],
    backbones: Annotated[str, typer.Option(help="comma-separated candidates; SPEC+pretrained for package weights")],
    metrics: Annotated[str, typer.Option(help="comma-separated: logme, hscore, gbc, transrate, leep, nce")]
    = "logme,hscore,transrate",
    split: Annotated[str, typer.Option(help="split of --data to score on")] = "train",
    limit: Annotated[int | None, typer.Option(help="score on a class-balanced subset of this many items",
                                              callback=_within(2))]
    = None,
    image_size: Annotated[int | None, typer.Option(help="resize images to this many pixels (timm/torchvision)",
                                                   callback=_within(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE))] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the ranking to this JSON file")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing --json file")] = False,
    device: DeviceOpt = "auto",
    online: Annotated[bool, typer.Option(help=_help("online"))] = False,
    trust_remote_code: TrustCodeOpt = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Rank backbones for a labelled target task by transferability, before fine-tuning any of them.

    Example:

        transferkit rank --data digits-uci --backbones timm:tf_efficientnet_lite0+pretrained,timm:tf_efficientnet_lite0
    """
    _offline(online)
    _trust_code(ctx, trust_remote_code)
    try:
        from transferkit.data import load_data
        from transferkit.measure.ranking import rank_backbones
        from transferkit.runs import check_output_file

        if json_out is not None:
            check_output_file(json_out, overwrite=overwrite, flag="--json")
        ds = load_data(data, split)
        if limit is not None:
            if limit < 2 * ds.num_classes:
                _fail(f"--limit must be at least 2 per class ({2 * ds.num_classes})")
            ds = ds.per_class(max(2, limit // ds.num_classes), seed=0)
        names = [m.strip() for m in metrics.split(",") if m.strip()]
        rows = rank_backbones(ds, [b for b in backbones.split(",") if b.strip()], names, device=device,
                              online=online, progress=progress, image_size=image_size)
    except TransferkitError as exc:
        _fail(str(exc))
    table = Table(title=f"transferability to {data} ({split}, {len(ds)} items), ranked by {names[0]}")
    table.add_column("#")
    table.add_column("candidate", overflow="fold")
    table.add_column("dim", justify="right")
    for m in names:
        table.add_column(m, justify="right")
    table.add_column("seconds (extract; scores)", justify="right")
    for i, r in enumerate(rows, 1):
        cells = ["–" if r.scores[m] is None else f"{r.scores[m]:.4g}" for m in names]
        timing = f"{r.extract_seconds:.1f}; " + ", ".join(f"{r.seconds[m]:.2f}" for m in names if m in r.seconds)
        table.add_row(str(i), r.candidate, str(r.feature_dim), *cells, timing)
    console.print(table)
    if any(r.scores[m] is None for r in rows for m in names):
        console.print("–: LEEP and NCE need a source classifier (a model file from `transferkit fit`)")
    if json_out is not None:
        _write_json_out(json_out, {"data": data, "split": split, "n": len(ds), "rows": [r.__dict__ for r in rows]},
                        overwrite)


@app.command()
def measure(
    ctx: typer.Context,
    source: Annotated[str, typer.Option(help="source data: a dataset name or a path")],
    target: Annotated[str, typer.Option(help="target data: a dataset name or a path")],
    backbone: Annotated[str | None, typer.Option(help="measure on this backbone's features (default: raw inputs)")]
    = None,
    weights: Annotated[str | None, typer.Option(help="local weights file for the backbone")] = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="pretrained weights from an installed package")
    ] = False,
    split: Annotated[str, typer.Option(help="split of both datasets")] = "train",
    measures: Annotated[
        str | None, typer.Option(help="comma-separated: mmd2, proxy_a, coral, wasserstein, sliced_wasserstein")
    ] = None,
    max_samples: Annotated[int, typer.Option(help="per domain, for the permutation test, A-distance and OT",
                                             callback=_within(10))] = 1000,
    permutations: Annotated[int, typer.Option(help="permutations of the MMD test", callback=_within(1))] = 500,
    per_class: Annotated[bool, typer.Option("--per-class", help="also MMD² per source class")] = False,
    seed: Annotated[int, typer.Option(help="seed of the subsamples and permutations",
                                     callback=_within(0, 2**32 - 1))] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the results to this JSON file")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing --json file")] = False,
    device: DeviceOpt = "auto",
    online: Annotated[bool, typer.Option(help=_help("online"))] = False,
    trust_pickle: TrustPickleOpt = False,
    trust_remote_code: TrustCodeOpt = False,
) -> None:
    """Measure the gap between two domains: MMD² with a permutation test, proxy A-distance, CORAL, Wasserstein.

    Example:

        transferkit measure --source mnist-5k --target digits-uci --backbone timm:tf_efficientnet_lite0 --pretrained
    """
    _offline(online)
    _trust_code(ctx, trust_remote_code)
    try:
        from transferkit.measure.domain_gap import measure_domains
        from transferkit.models.pretrained import trusting_pickle
        from transferkit.runs import check_output_file

        if json_out is not None:
            check_output_file(json_out, overwrite=overwrite, flag="--json")
        with trusting_pickle(trust_pickle):
            result = measure_domains(
                source, target, split=split, backbone=backbone, weights=weights, pretrained=pretrained,
                online=online, measures=[m.strip() for m in measures.split(",")] if measures else None,
                max_samples=max_samples, permutations=permutations, per_class=per_class, seed=seed, device=device)
    except (TransferkitError, ValueError) as exc:
        _fail(str(exc))
    table = Table(title=f"gap {source} → {target} ({split} split), on {result.features}")
    for col in ("measure", "value", "p-value", "samples (source / target)"):
        table.add_column(col)
    for g in result.gaps:
        p = "" if g.p_value is None else f"{g.p_value:.3g}"
        table.add_row(g.name, f"{g.value:.4g}", p, f"{g.samples[0]} / {g.samples[1]}")
    console.print(table)
    for g in result.gaps:
        console.print(f"  {g.name}: {g.meaning}", highlight=False, soft_wrap=True)
    if result.per_class is not None:
        console.print(f"MMD² per class (target classes from {result.per_class_from}): "
                      + ", ".join(f"{k} {'–' if v is None else f'{v:.3g}'}" for k, v in result.per_class.items()))
    if json_out is not None:
        _write_json_out(json_out, result.to_dict(), overwrite)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="run directory written by `transferkit fit`")],
) -> None:
    """Rebuild a run's report.md and plots from its report.json and metrics, and print the summary.

    Example:

        transferkit report runs/mnist-lenet
    """
    try:
        from transferkit.evaluate.report import write_aggregate_report, write_report
        from transferkit.evaluate.run_files import refuse_link
        from transferkit.runs import RunDir

        rd = RunDir(run)
        refuse_link(rd.report_json, "report")  # a run folder from elsewhere: read nothing through a link out of it
        if not rd.report_json.exists():
            _fail(f"{rd.report_json} does not exist: has `transferkit fit` finished for this run?")
        from transferkit.runs import read_json

        data = read_json(rd.report_json, "report")
        if not isinstance(data, dict):
            _fail(f"{rd.report_json} is not a transferkit report (it holds a {type(data).__name__})")
        try:
            if "per_seed" in data:
                header = {k: v for k, v in data.items() if k not in ("per_seed", "summary", "seeds", "plots")}
                data = write_aggregate_report(rd, data["per_seed"], header)
            elif "evaluations" in data:
                data = write_report(rd, data)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError, ArithmeticError) as exc:  # foreign
            why = " ".join(str(exc).split())[:160]  # one line, whatever the exception's text holds
            _fail(f"{rd.report_json} is not a report transferkit can rebuild ({type(exc).__name__}: {why})")
    except TransferkitError as exc:
        _fail(str(exc))
    console.print(rd.report_md.read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"report: {rd.report_md} and {rd.path / 'report.html'}")


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option(help="parent folder of the demo's run directory")] = Path("runs"),
    name: Annotated[str | None, typer.Option(help="run name (default demo-<timestamp>)")] = None,
    seeds: SeedsOpt = "0,1,2",
    full: Annotated[bool, typer.Option("--full", help="the default step budget, MCC and every fine-tuning "
                                       "strategy (longer)")] = False,
    steps: Annotated[int | None, typer.Option(help="pre-training and adaptation steps (default 1000; with "
                                                   "--full, the default budget)", min=1)] = None,
    shots: Annotated[int, typer.Option(help="labelled target images per class", callback=_within(1))] = 10,
    finetune_epochs: Annotated[int, typer.Option(help="epochs of each few-shot fine-tuning",
                                                 callback=_within(1, 100000))] = 40,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """MNIST -> MNIST-M: pre-train, measure the gap, adapt, fine-tune on 10 labels/class (no download, ~3 min).

    Example:

        transferkit demo --seeds 0,1,2
    """
    _offline(False)
    try:
        from transferkit.demo import run_demo

        run_demo(output_dir, name, seeds=tuple(_parse_seeds(seeds) or (0,)), shots=shots, full=full,
                 steps=steps, finetune_epochs=finetune_epochs, overwrite=overwrite, progress=progress)
    except TransferkitError as exc:
        _fail(str(exc))


@app.command()
def datasets() -> None:
    """List the built-in and benchmark dataset names.

    Example:

        transferkit datasets
    """
    from transferkit.data import list_datasets

    for k, v in list_datasets().items():
        console.print(f"[bold]{k}[/]: {v}", highlight=False)


@app.command()
def methods() -> None:
    """List the domain-adaptation methods with one line each, their options and the paper.

    Example:

        transferkit methods
    """
    from transferkit.adapt.methods import list_methods

    table = Table(title="domain adaptation: L = L_source + λ(p) · L_transfer  (--method NAME, --lambda λ)")
    for col in ("method", "what it does", "default λ", "options (adapt.options)", "reference"):
        table.add_column(col)
    for name, spec in list_methods().items():
        opts = ", ".join(f"{k}={v}" for k, v in spec.options.items())
        table.add_row(name, spec.summary, f"{spec.default_weight:g}", opts, spec.reference)
    console.print(table)
    console.print("--method auto: trains source-only and adapt.auto_methods (default dan, mcc) at equal steps, "
                  "rejects what the negative-transfer guard rejects and keeps the adapt.auto_validator's (default "
                  "info_max) choice; the report shows every candidate (docs/defaults.md).")


@app.command()
def backbones() -> None:
    """List backbone specs and the pretrained weights available offline.

    Example:

        transferkit backbones
    """
    from transferkit.models.backbones import list_backbones
    from transferkit.models.pretrained import list_package_weights

    for k, v in list_backbones().items():
        console.print(f"[bold]{k}[/]: {v}", highlight=False)
    for arch, pkg in list_package_weights().items():
        console.print(f"offline ImageNet weights: [bold]{arch}[/] (from pip package {pkg}); use --pretrained")


def main() -> None:
    try:
        app()
    except TransferkitError as exc:  # raised outside a command's own handler
        console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:  # a command without its own message: nothing half-written is kept
        console.print("\n[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
