"""The run report: ``report.json`` for programs, ``report.md``, PNG plots and a self-contained ``report.html``
(:mod:`transferkit.evaluate.html`) for people.

Every report says how the checkpoint was chosen, because a number is only as honest as its selection rule:
transferkit selects on the source validation split (or keeps the last epoch), never on target labels.

``transferkit report`` rebuilds a report from a run folder that may come from someone else: its numbers, seeds,
evaluation names and files pass the allow-lists of :mod:`transferkit.evaluate.run_files` before any becomes a
path, a plot or a float, and nothing is read or written through a link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.evaluate.html import LEARNT_WEIGHTS, REPORT_HTML, render_html
from transferkit.evaluate.html import scalar_columns as _scalar_columns
from transferkit.evaluate.metrics import format_mean_std, mean_std
from transferkit.evaluate.plots import plot_confusion_matrix, plot_feature_map, plot_learning_curves
from transferkit.evaluate.run_files import check_numbers, check_role, check_seed, load_feature_map, refuse_link
from transferkit.runs import RunDir, atomic_write_json, atomic_write_text, read_jsonl
from transferkit.tasks import KIND_SCALARS, scalars_of

SCALARS = ("accuracy", "macro_f1", "ece")  # a classification head's; see transferkit.tasks.KIND_SCALARS for others
FEATURE_MAP = "feature_map.npz"  # written by transferkit.pipeline.report.save_feature_map


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{role: {metric: {"mean", "std", "values"}}}`` over the seeds' evaluations."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    roles = [r for r in per_seed[0]["evaluations"]] if per_seed else []
    for role in roles:
        out[role] = {}
        for metric, *_ in scalars_of(per_seed[0]["evaluations"][role]):
            values = [rep["evaluations"][role][metric] for rep in per_seed if role in rep["evaluations"]]
            m, s = mean_std(values)
            out[role][metric] = {"mean": m, "std": s, "values": values}
    return out


def write_report(run: RunDir, report: dict[str, Any], *, draw_plots: bool = True) -> dict[str, Any]:
    """Write report.json, report.md and the plots of one seed's run. ``draw_plots=False`` leaves the PNGs undrawn
    (a t-SNE takes seconds, each other plot a fraction of one): a multi-seed run draws them for its first seed, whose
    images its overview page shows, and ``transferkit report`` on any seed's directory draws that seed's."""
    check_numbers(report, run.report_json)
    report.pop("plots_note", None)
    if draw_plots:
        plots = _draw_plots(run, report)
    else:
        plots = {}
        report.pop("feature_map", None)
        report["plots_note"] = (f"drawn for the first seed only, to keep small runs quick: `transferkit report "
                                f"{run.path}` draws this seed's")
    report["plots"] = plots
    atomic_write_json(run.report_json, report)
    atomic_write_text(run.report_md, render_markdown(report))
    atomic_write_text(run.path / REPORT_HTML, render_html(report, run.path))
    return report


def _draw_plots(run: RunDir, report: dict[str, Any]) -> dict[str, str]:
    """The seed's PNGs (learning curves, a confusion matrix per scored split, the feature map), by title."""
    plots: dict[str, str] = {}
    curves = plot_learning_curves(_metrics(run), run.path / "learning_curves.png", report.get("name", ""))
    if curves is not None:
        plots["learning curves"] = curves.name
    for role, metrics in report.get("evaluations", {}).items():
        check_role(role, run.report_json)  # it becomes part of a file name
        if "confusion_matrix" not in metrics:
            continue  # a regression or multi-label primary head
        png = plot_confusion_matrix(
            metrics["confusion_matrix"], report["classes"], run.path / f"confusion_{role}.png",
            f"{role}: {metrics.get('domain', '')} (acc {metrics['accuracy']:.3f})",
        )
        if png is not None:  # too many classes to draw (the per-class table has them)
            plots[f"confusion matrix ({role})"] = png.name
    fmap = _plot_feature_map(run, report)
    if fmap is not None:
        plots["feature map"] = fmap.name
    return plots


# what plot_learning_curves reads from a record besides its counters: numbers (or absent)
CURVE_VALUES = ("train_loss", "val_loss", "train_acc", "val_acc", "val_mae", "val_micro_f1")
MAX_EPOCH = 10**9


def _metrics(run: RunDir) -> list[dict[str, Any]]:
    """The records of the seed's ``metrics.jsonl`` that can be plotted (not through a link out of the folder)."""
    refuse_link(run.metrics, "metrics file")
    return plottable(read_jsonl(run.metrics))


def plottable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records the learning curves can draw: an epoch count, a training loss, numbers for values, a text phase.
    A metrics file from elsewhere may hold anything a flat JSON record can; the rest is skipped like a torn line."""
    def number(v: Any) -> bool:
        if v is None:
            return True
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return abs(v) < MAX_EPOCH if isinstance(v, int) else True

    return [r for r in records
            if isinstance(r.get("epoch"), int) and 0 <= r["epoch"] < MAX_EPOCH and r.get("train_loss") is not None
            and isinstance(r.get("phase", ""), str) and all(number(r.get(k)) for k in CURVE_VALUES)]


def _plot_feature_map(run: RunDir, report: dict[str, Any]) -> Path | None:
    """``feature_map.png`` from the seed's ``feature_map.npz`` (source and target features, before and after
    adaptation); ``report["feature_map"]`` says what it shows. None (and no such key) without a readable npz of
    the shapes the run writes (:func:`transferkit.evaluate.run_files.load_feature_map`)."""
    report.pop("feature_map", None)
    arrays = load_feature_map(run.path / FEATURE_MAP)
    if arrays is None:
        return None  # absent or unreadable: the report says there is no map rather than failing
    after = (arrays["after_source"], arrays["after_target"])
    before = (arrays["before_source"], arrays["before_target"]) if "before_source" in arrays else None
    png, method = plot_feature_map(after, run.path / "feature_map.png", before=before,
                                   source_labels=arrays.get("source_labels"), classes=report.get("classes"),
                                   title=report.get("name", ""))
    text = {k: str(arrays[k])[:200] if k in arrays else default
            for k, default in (("source_split", "source"), ("target_split", "target"), ("note", ""))}
    report["feature_map"] = {"embedding": method, "n_source": len(after[0]), "n_target": len(after[1]),
                             "before": before is not None, **text}
    return png


def write_aggregate_report(run: RunDir, per_seed: list[dict[str, Any]], header: dict[str, Any]) -> dict[str, Any]:
    """Top-level report of a multi-seed run: mean ± std per evaluated domain and metric.

    The seeds' reports may have been read back from the run folder (``transferkit report``, a resume): each seed
    must be an integer before it names a ``seed-<s>`` folder, and no seed folder that is a link is read or
    written."""
    check_numbers(header, run.report_json)
    check_numbers(per_seed, run.report_json)
    seeds = [check_seed(r["seed"], run.report_json) for r in per_seed]
    report = {**header, "seeds": seeds, "summary": aggregate(per_seed), "per_seed": per_seed}
    records = []
    for seed_run in run.seed_dirs():
        if not seed_run.path.is_symlink():
            records.extend(_metrics(seed_run))
    curves = plot_learning_curves(records, run.path / "learning_curves.png", header.get("name", ""))
    report["plots"] = {"learning curves": curves.name} if curves else {}
    atomic_write_json(run.report_json, report)
    atomic_write_text(run.report_md, render_markdown(report))
    for seed_report in per_seed:  # the aggregate page links each seed's page: write any that is missing
        seed_run = run.seed(seed_report["seed"])
        if (seed_run.path.is_dir() and not seed_run.path.is_symlink()
                and not (seed_run.path / REPORT_HTML).exists()):
            atomic_write_text(seed_run.path / REPORT_HTML, render_html(seed_report, seed_run.path))
    atomic_write_text(run.path / REPORT_HTML, render_html(report, run.path))
    return report


def _sources(source: Any) -> str:
    return " + ".join(source) if isinstance(source, list) else str(source)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# transferkit run `{report.get('name', '')}`", ""]
    lines += [
        f"- backbone: `{report.get('backbone')}`, strategy: `{report.get('strategy')}`",
        f"- source: `{_sources(report.get('source'))}`"
        + (f", target: `{report['target']}`" if report.get("target") else ""),
        f"- checkpoint selection: {report.get('selection', 'n/a')}",
        f"- seeds: {report.get('seeds', report.get('seed'))}",
        "",
    ]
    if "summary" in report:
        for role, metrics in report["summary"].items():
            cols = [c for c in _scalar_columns(report) if c[0] in metrics]
            if role == next(iter(report["summary"])):
                lines += ["| evaluated on | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
            cells = [format_mean_std(metrics[k]["values"], scale=scale, digits=1 if scale > 1 else 3)
                     for k, _, scale, _ in cols]
            lines.append(f"| {role} | " + " | ".join(cells) + " |")
        lines += ["", "Mean ± sample std over seeds.", ""]
    else:
        evals = report.get("evaluations", {})
        cols = _scalar_columns(report)
        lines += ["| evaluated on | domain | n | " + " | ".join(c[1] for c in cols) + " |",
                  "|---" * (len(cols) + 3) + "|"]
        for role, m in evals.items():
            cells = [f"{scale * m[k]:.{2 if scale > 1 else 3}f}" for k, _, scale, _ in cols]
            lines.append(f"| {role} | {m.get('domain', '')} | {m['n']} | " + " | ".join(cells) + " |")
        lines += _head_lines(evals)
        if report.get("source_weights"):
            lines += ["", "Source weights (MMD² to the target, measured before training; mean 1): "
                      + ", ".join(f"{name} {w:.2f}" for name, w in report["source_weights"].items())]
        if evals and all("per_class_accuracy" in m for m in evals.values()):
            lines += ["", "## Per-class accuracy (%)", ""]
            roles = list(evals)
            lines.append("| class | " + " | ".join(roles) + " |")
            lines.append("|---" * (len(roles) + 1) + "|")
            for c in report["classes"]:
                cells = []
                for r in roles:
                    v = evals[r]["per_class_accuracy"].get(c)
                    cells.append("–" if v is None else f"{100 * v:.1f}")
                lines.append(f"| {c} | " + " | ".join(cells) + " |")
        fit = report.get("fit")
        if fit and fit.get("solver"):
            lines += ["", f"Fitted in {fit['seconds']:.1f} s: {fit['solver']}."]
        elif fit:
            lines += ["", f"Trained {fit['epochs_run']} epochs in {fit['seconds']:.1f} s; "
                      f"selected epoch {fit['best_epoch'] + 1}"
                      + (f" (source val acc {fit['best_val_acc']:.4f})" if fit.get("best_val_acc") is not None else "")
                      + (f" (source val MAE {fit['best_val_mae']:.4f})" if fit.get("best_val_mae") is not None else "")
                      + (f" (source val micro-F1 {fit['best_val_micro_f1']:.4f})"
                         if fit.get("best_val_micro_f1") is not None else "")
                      + (", stopped early" if fit.get("stopped_early") else "") + "."]
            if fit.get("head_weights"):
                lines += ["", LEARNT_WEIGHTS + ", ".join(f"{n} {w:.2f}" for n, w in fit["head_weights"].items())]
    lines += _auto_lines(report)
    lines += _guard_lines(report)
    if report.get("plots"):
        lines += ["", "## Plots", ""]
        for title, file in report["plots"].items():
            lines.append(f"![{title}]({Path(file).name})")
    elif report.get("plots_note"):
        lines += ["", f"Plots: {report['plots_note']}."]
    return "\n".join(lines) + "\n"


def _head_lines(evals: dict[str, Any]) -> list[str]:
    """Every head's metrics (multi-task runs)."""
    rows = [(role, name, h) for role, m in evals.items() for name, h in m.get("heads", {}).items()]
    if not rows:
        return []
    lines = ["", "## Heads", "", "| evaluated on | head | kind | n | metrics |", "|---|---|---|---|---|"]
    for role, name, h in rows:
        shown = ", ".join(f"{label} {scale * h[k]:.{2 if scale > 1 else 3}f}" for k, label, scale, _ in
                          KIND_SCALARS[h["kind"]])
        n = f"{h['n']} (+{h['unknown']} of a class the source lacks, not scored)" if h.get("unknown") else h["n"]
        lines.append(f"| {role} | {name} | {h['kind']} | {n} | {shown} |")
    return lines


def _by_seed(report: dict[str, Any], key: str) -> list[tuple[Any, Any]]:
    """``(seed, report[key])`` of a single seed's report, or of each seed of an aggregate that has ``key``."""
    if key in report:
        return [(report.get("seed"), report[key])]
    return [(r.get("seed"), r[key]) for r in report.get("per_seed", []) if key in r]


def _auto_lines(report: dict[str, Any]) -> list[str]:
    """``adapt.method auto``: every candidate of each seed, its label-free score, what was chosen and why."""
    seeds = _by_seed(report, "auto")
    if not seeds:
        return []
    lines = ["", "## Method auto", "",
             "Each candidate trained the same steps from the same seed; the guard rejected some, the validator chose "
             "among the rest and source-only (`transferkit.adapt.auto`). Target accuracy, where the target has labels, "
             "is shown here only: it decided nothing.", ""]
    for seed, a in seeds:
        left_out = "".join(f" Not tried: {m} ({why})." for m, why in (a.get("left_out") or {}).items())
        lines += [f"Seed {seed}: chose **{a['chosen']}**: {a['why']}.{left_out}", "",
                  f"| candidate | guard | {a['validator']} | target accuracy | seconds |", "|---|---|---:|---:|---:|"]
        for name, c in a["candidates"].items():
            verdict = "reference" if name == "source-only" else (
                "kept" if c.get("kept") else "rejected: " + "; ".join(c.get("reasons", [])))
            sc = a["scores"].get(name)
            acc = c.get("target_accuracy")
            lines.append(f"| {name} | {verdict} | {'–' if sc is None else f'{sc:.4g}'} | "
                         f"{'–' if acc is None else f'{100 * acc:.1f}'} | {c.get('seconds') or 0:.1f} |")
        if a.get("ensemble_target_accuracy") is not None:
            lines += ["", f"The mean prediction of source-only and the kept candidates would have scored "
                          f"{100 * a['ensemble_target_accuracy']:.1f}% on the target (shown only)."]
        lines.append("")
    return lines


def _guard_lines(report: dict[str, Any]) -> list[str]:
    """The negative-transfer guard's decision(s), with the reasons (see transferkit.measure.guard)."""
    seeds = _by_seed(report, "guard")
    if not seeds:
        return []
    lines = ["", "## Negative-transfer guard", "",
             "The source-only twin of each seed was trained too; the final model is the one kept below "
             "(rule: `transferkit.measure.guard`; target labels take no part).", ""]
    for seed, g in seeds:
        acc = g["numbers"]["source_val_accuracy"]
        why = "; ".join(g["reasons"]) if g["reasons"] else "no sign of negative transfer"
        lines.append(f"- seed {seed}: kept **{g['keep']}** ({why}); source-val accuracy source-only "
                     f"{100 * acc['source-only']:.1f}%, adapted {100 * acc['adapted']:.1f}%")
        gap = g.get("gap")
        if gap:
            before, after = gap["source-only"], gap["adapted"]
            pad = (f"; proxy A-distance {before['proxy_a']['value']:.2f} → {after['proxy_a']['value']:.2f}"
                   if "proxy_a" in before and "proxy_a" in after else "")  # too few items for its 5 folds
            lines.append(
                f"  - domain gap on the model's features (source validation vs target): MMD² "
                f"{before['mmd2']['value']:.4f} (p {before['mmd2']['p_value']:.3f}) before → "
                f"{after['mmd2']['value']:.4f} (p {after['mmd2']['p_value']:.3f}) after adaptation{pad}"
            )
    return lines
