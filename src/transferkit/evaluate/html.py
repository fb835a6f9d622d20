"""``report.html``: a run's report as one self-contained page, to open in any browser or attach to a message.

One job: turn a report dict (what :mod:`transferkit.evaluate.report` writes to ``report.json``) and the PNG
plots beside it into HTML. Everything is inline: the CSS, and the images as base64 ``data:`` URIs; the page
loads nothing and runs no script. Every string that comes from a user (run name, dataset specs, class names,
the config, the guard's reasons) goes through :func:`html.escape`. A report may come from someone else: only the
plots transferkit draws, as regular PNG files directly in the run's folders, are embedded
(:mod:`transferkit.evaluate.run_files`), never a file a report merely names.

Over 500 lines as one module: one page, whose sections share the escaping and layout helpers.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transferkit import __version__
from transferkit.errors import RunDirError
from transferkit.evaluate.metrics import format_mean_std
from transferkit.evaluate.run_files import config_text, read_plot, seed_folder
from transferkit.tasks import KIND_SCALARS, scalars_of

REPORT_HTML = "report.html"
# model.head_weighting uncertainty: exp(-s_i) per head, as the selected epoch left them
LEARNT_WEIGHTS = "Learnt head weights exp(−s_i) at the selected epoch: "
SCALARS = (("accuracy", "accuracy (%)"), ("macro_f1", "macro-F1 (%)"), ("ece", "ECE (%)"))


def scalar_columns(report: dict[str, Any]) -> tuple[tuple[str, str, float, bool], ...]:
    """The primary head's scalar metrics in ``report``: accuracy / macro-F1 / ECE, MAE / RMSE / R² (regression) or
    micro-F1 / macro-F1 / exact match (multi-label), as ``(key, label, scale, higher is better)``."""
    evals = report.get("evaluations") or {}
    first = next(iter(evals.values()), None)
    if first is None:
        summary = report.get("summary") or {}
        first = {k: v["mean"] for k, v in next(iter(summary.values()), {}).items()}
    return scalars_of(first) or KIND_SCALARS["classification"]


def _value(x: Any, scale: float) -> str:
    return _pct(x, 2) if scale > 1 else _num(x, 3)
ROLE_NOTES = {
    "source": "the selected model on the source evaluation split",
    "target": "the final model on the target (its labels score it, nothing else)",
    "target_adapted": "the adapted model on the target, kept or not",
    "target_source_only": "the source-only twin on the target, kept or not",
}
ROLE_ORDER = ("target", "source", "target_adapted", "target_source_only")
NAV = {"auto": "Auto", "guard": "Guard", "feature-map": "Feature map", "per-class": "Per class", "config": "Config"}

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --soft: #f6f8fa; --accent: #3b6fb6;
        --ok-bg: #dafbe1; --ok: #116329; --warn-bg: #fff1c5; --warn: #7d4e00; }
* { box-sizing: border-box; }
html { background: #f3f5f8; }
body { margin: 0; color: var(--fg); font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto,
       "Helvetica Neue", Arial, sans-serif; }
header.top { background: #1f2a3a; color: #fff; padding: 28px 0 22px; }
.wrap { max-width: 1100px; margin: 0 auto; padding: 0 28px; }
header.top .kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: #9fb3cc; }
header.top h1 { margin: 4px 0 6px; font-size: 28px; font-weight: 650; word-break: break-word; }
header.top .route { font-size: 17px; color: #dbe6f3; }
header.top .route .arrow { color: #7fb0ff; padding: 0 6px; }
.pills { margin-top: 14px; display: flex; flex-wrap: wrap; gap: 8px; }
.pill { background: rgba(255,255,255,.1); border: 1px solid rgba(255,255,255,.18); border-radius: 999px;
        padding: 2px 11px; font-size: 13px; color: #e6edf5; }
.pill b { color: #9fb3cc; font-weight: 500; margin-right: 4px; }
nav.toc { background: #fff; border-bottom: 1px solid var(--line); font-size: 13.5px; }
nav.toc .wrap { display: flex; flex-wrap: wrap; gap: 4px 18px; padding-top: 9px; padding-bottom: 9px; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
main { padding-top: 8px; padding-bottom: 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 24px 20px;
          margin: 18px 0; }
h2 { font-size: 19px; margin: 0 0 12px; font-weight: 620; }
h3 { font-size: 15px; margin: 18px 0 8px; font-weight: 620; }
p { margin: 8px 0; }
.muted, figcaption, .note { color: var(--muted); }
.note { font-size: 13.5px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 14px; }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { text-align: left; font-weight: 600; background: var(--soft); border-bottom: 2px solid var(--line); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:hover td { background: #fafbfc; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
code { background: var(--soft); padding: 1px 5px; border-radius: 4px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px;
      overflow: auto; max-height: 560px; }
details { margin: 8px 0; }
details > summary { cursor: pointer; color: var(--accent); font-weight: 550; }
figure { margin: 10px 0 4px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; margin-top: 6px; text-align: center; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); gap: 18px; align-items: start; }
.badge { display: inline-block; border-radius: 6px; padding: 3px 10px; font-weight: 650; font-size: 14px; }
.badge.ok { background: var(--ok-bg); color: var(--ok); }
.badge.warn { background: var(--warn-bg); color: var(--warn); }
.better { color: var(--ok); } .worse { color: #b42318; }
ul.reasons { margin: 8px 0 8px 0; padding-left: 20px; }
footer { color: var(--muted); font-size: 12.5px; text-align: center; padding: 8px 0 28px; }
@media print { html { background: #fff; } section { break-inside: avoid; border: none; } nav.toc { display: none; } }
"""


def e(value: Any) -> str:
    """Escaped text of any value (quotes too: safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


# -- the two pages -------------------------------------------------------------------------------
def render_html(report: dict[str, Any], run_dir: str | Path) -> str:
    """The page of one report: a single seed's (``evaluations``) or a multi-seed run's (``per_seed``), with the
    PNGs named in ``report["plots"]`` read from ``run_dir`` and embedded."""
    run_dir = Path(run_dir)
    if "per_seed" in report and "evaluations" not in report:
        return _aggregate_page(report, run_dir)
    return _seed_page(report, run_dir)


def _seed_page(report: dict[str, Any], run_dir: Path) -> str:
    plots = report.get("plots", {})
    sections = [("results", "Results", _results_single(report))]
    if report.get("auto"):
        sections.append(("auto", "Method auto", _auto_table(report["auto"])))
    guard = report.get("guard")
    if guard is not None:
        sections.append(("guard", "Negative-transfer guard", _guard_single(guard)))
    sections.append(("gap", "Domain gap", _gap_single(report)))
    sections.append(("feature-map", _map_heading(report), _feature_map_section(report, run_dir, plots)))
    sections.append(("curves", "Learning curves", _curves(report, run_dir, plots)))
    sections.append(("confusion", "Confusion matrices", _confusions(report, run_dir, plots)))
    if report.get("evaluations") and all("per_class_accuracy" in m for m in report["evaluations"].values()):
        sections.append(("per-class", "Per-class accuracy", _per_class(report)))
    sections.append(("config", "Configuration", _config(run_dir)))
    up = ""
    if run_dir.name.startswith("seed-") and (run_dir.parent / "config.yaml").is_file():
        up = f'<a href="../{REPORT_HTML}">← all seeds of this run</a>'
    return page(report, sections, up)


def _aggregate_page(report: dict[str, Any], run_dir: Path) -> str:
    per_seed = report.get("per_seed", [])
    plots = report.get("plots", {})
    first = per_seed[0] if per_seed else {}
    first_dir = seed_folder(run_dir, first.get("seed"))  # None: not a seed's own folder (the page says so)
    first_plots = first.get("plots", {})
    note = (f'<p class="note">Images below are from seed {e(first.get("seed"))}, the first seed; each seed\'s own '
            "report has its images.</p>") if per_seed else ""
    sections = [("results", "Results over seeds", _results_aggregate(report))]
    if any("auto" in r for r in per_seed):
        sections.append(("auto", "Method auto", "".join(
            f"<h3>Seed {e(r.get('seed'))}</h3>" + _auto_table(r["auto"]) for r in per_seed if "auto" in r)))
    if any("guard" in r for r in per_seed):
        sections.append(("guard", "Negative-transfer guard", _guard_aggregate(per_seed)))
    sections.append(("gap", "Domain gap", _gap_aggregate(report)))
    sections.append(("feature-map", _map_heading(first), note + _feature_map_section(first, first_dir, first_plots)))
    sections.append(("curves", "Learning curves", _curves(report, run_dir, plots)))
    sections.append(("confusion", "Confusion matrices", note + _confusions(first, first_dir, first_plots)))
    sections.append(("seeds", "Seeds", _seed_links(run_dir, per_seed)))
    sections.append(("config", "Configuration", _config(run_dir)))
    return page(report, sections)


# -- page frame ------------------------------------------------------------------------------------
def page(report: dict[str, Any], sections: list[tuple[str, str, str]], nav_extra: str = "") -> str:
    name = report.get("name") or "run"
    source = report.get("source")
    route = f'<span class="src">{e(" + ".join(source) if isinstance(source, list) else source)}</span>'
    if report.get("target"):
        route += f'<span class="arrow">→</span><span class="tgt">{e(report["target"])}</span>'
    seeds = report.get("seeds", [report["seed"]] if "seed" in report else [])
    pills = [("backbone", report.get("backbone")), ("strategy", report.get("strategy")),
             ("method", report.get("method") or "none"), ("seed" + ("s" if len(seeds) > 1 else ""),
                                                         ", ".join(str(s) for s in seeds))]
    pill_html = "".join(f'<span class="pill"><b>{e(k)}</b>{e(v)}</span>' for k, v in pills if v not in (None, ""))
    toc = "".join(f'<a href="#{e(i)}">{e(NAV.get(i, h))}</a>' for i, h, _ in sections) + nav_extra
    body = "".join(f'<section id="{e(i)}"><h2>{e(h)}</h2>{b}</section>' for i, h, b in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(name)} · transferkit report</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header class="top"><div class="wrap"><div class="kicker">transferkit run report</div>'
        f"<h1>{e(name)}</h1><div class=\"route\">{route}</div><div class=\"pills\">{pill_html}</div></div></header>\n"
        f'<nav class="toc"><div class="wrap">{toc}</div></nav>\n'
        f'<main class="wrap">\n<p class="note"><b>Checkpoint selection:</b> {e(report.get("selection", "n/a"))}</p>\n'
        f"{body}\n</main>\n"
        f"<footer>written by transferkit {e(__version__)} · self-contained: no external resources, no "
        "scripts</footer>\n</body>\n</html>\n"
    )


# -- results -------------------------------------------------------------------------------------
def _ordered(roles: Iterable[str]) -> list[str]:
    roles = list(roles)
    return [r for r in ROLE_ORDER if r in roles] + [r for r in roles if r not in ROLE_ORDER]


def _results_single(report: dict[str, Any]) -> str:
    evals = report.get("evaluations", {})
    if not evals:
        return '<p class="muted">Nothing was scored (no labelled evaluation split).</p>'
    cols = scalar_columns(report)
    head = "<tr><th>evaluated on</th><th>domain</th><th class=\"num\">n</th>" + "".join(
        f'<th class="num">{e(label)}</th>' for _, label, _, _ in cols) + "</tr>"
    rows = []
    for role in _ordered(evals):
        m = evals[role]
        cells = "".join(f'<td class="num">{_value(m.get(k), scale)}</td>' for k, _, scale, _ in cols)
        rows.append(f'<tr><td><b>{e(role)}</b><div class="note">{e(ROLE_NOTES.get(role, ""))}</div></td>'
                    f'<td>{e(m.get("domain", ""))}</td><td class="num">{e(m.get("n", ""))}</td>{cells}</tr>')
    out = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>" + _heads_table(evals)
    if report.get("source_weights"):
        shown = ", ".join(f"{name} {w:.2f}" for name, w in report["source_weights"].items())
        out += (f"<p>Source weights (MMD² to the target, measured before training; mean 1): {e(shown)}.</p>")
    fit = report.get("fit")
    if fit and fit.get("solver"):
        out += f"<p>Fitted in {_num(fit.get('seconds'), 1)} s: {e(fit['solver'])}.</p>"
    elif fit:
        best = fit.get("best_epoch")
        text = (f"Trained {e(fit.get('epochs_run'))} epochs in {_num(fit.get('seconds'), 1)} s; selected epoch "
                f"{e(best + 1 if isinstance(best, int) else best)}")
        if fit.get("best_val_acc") is not None:
            text += f" (source validation accuracy {_pct(fit['best_val_acc'], 2)}%)"
        if fit.get("best_val_mae") is not None:
            text += f" (source validation MAE {_num(fit['best_val_mae'], 4)})"
        if fit.get("best_val_micro_f1") is not None:
            text += f" (source validation micro-F1 {_pct(fit['best_val_micro_f1'], 2)}%)"
        text += ", stopped early." if fit.get("stopped_early") else "."
        out += f"<p>{text}</p>"
        if fit.get("head_weights"):
            shown = ", ".join(f"{name} {w:.2f}" for name, w in fit["head_weights"].items())
            out += f"<p>{e(LEARNT_WEIGHTS)}{e(shown)}.</p>"
    return out


def _results_aggregate(report: dict[str, Any]) -> str:
    summary = report.get("summary", {})
    per_seed = report.get("per_seed", [])
    if not summary:
        return '<p class="muted">Nothing was scored (no labelled evaluation split).</p>'
    cols = scalar_columns(report)
    head = "<tr><th>evaluated on</th>" + "".join(f'<th class="num">{e(label)}</th>' for _, label, _, _ in cols)
    head += "</tr>"
    rows = []
    for role in _ordered(summary):
        cells = "".join(
            f'<td class="num">{e(format_mean_std(summary[role][k]["values"], scale, 1 if scale > 1 else 3))}</td>'
            for k, _, scale, _ in cols)
        rows.append(f'<tr><td><b>{e(role)}</b><div class="note">{e(ROLE_NOTES.get(role, ""))}</div></td>{cells}</tr>')
    n = len(per_seed) or len(next(iter(summary.values()))[cols[0][0]]["values"])
    out = (f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
           f'<p class="note">Mean ± sample standard deviation over {n} seeds.</p>')
    if per_seed:
        seeds = [r.get("seed") for r in per_seed]
        key, label, scale, _ = cols[0]
        head = f"<tr><th>{e(label)}</th>" + "".join(f'<th class="num">seed {e(s)}</th>' for s in seeds) + "</tr>"
        rows = []
        for role in _ordered(summary):
            cells = "".join(
                f'<td class="num">{_value(r.get("evaluations", {}).get(role, {}).get(key), scale)}</td>'
                for r in per_seed)
            rows.append(f"<tr><td>{e(role)}</td>{cells}</tr>")
        out += f"<h3>Per seed</h3><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return out


def _heads_table(evals: dict[str, Any]) -> str:
    """Every head's metrics, when the model has several (multi-task)."""
    rows = []
    for role in _ordered(evals):
        for name, h in evals[role].get("heads", {}).items():
            shown = ", ".join(f"{label} {_value(h.get(k), scale)}" for k, label, scale, _ in KIND_SCALARS[h["kind"]])
            n = f"{h.get('n', '')} (+{h['unknown']} not scored: a class the source lacks)" if h.get("unknown") else \
                h.get("n", "")
            rows.append(f"<tr><td>{e(role)}</td><td>{e(name)}</td><td>{e(h['kind'])}</td>"
                        f'<td class="num">{e(n)}</td><td>{e(shown)}</td></tr>')
    if not rows:
        return ""
    return ("<h3>Every head</h3><table><thead><tr><th>evaluated on</th><th>head</th><th>kind</th>"
            f'<th class="num">n</th><th>metrics</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _per_class(report: dict[str, Any]) -> str:
    evals = report["evaluations"]
    roles = _ordered(evals)
    head = "<tr><th>class</th>" + "".join(f'<th class="num">{e(r)}</th>' for r in roles) + "</tr>"
    rows = []
    for c in report.get("classes", []):
        cells = "".join(f'<td class="num">{_pct(evals[r].get("per_class_accuracy", {}).get(c), 1)}</td>'
                        for r in roles)
        rows.append(f"<tr><td>{e(c)}</td>{cells}</tr>")
    table = f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    classes = report.get("classes", [])
    summary = f"Accuracy (%) per true class, {len(classes)} classes (– : no item of the class)"
    return f"<details{' open' if len(classes) <= 12 else ''}><summary>{e(summary)}</summary>{table}</details>"


# -- method auto ---------------------------------------------------------------------------------------
def _auto_table(auto: dict[str, Any]) -> str:
    """Every candidate of ``adapt.method auto``: the guard's verdict, the validator's score, the target accuracy
    (shown, never used to choose)."""
    rows = []
    for name, c in auto.get("candidates", {}).items():
        chosen = name == auto.get("chosen")
        verdict = "reference" if name == "source-only" else ("kept" if c.get("kept") else "rejected")
        reasons = "; ".join(c.get("reasons") or [])
        score = auto.get("scores", {}).get(name)
        badge = ' <span class="badge ok">chosen</span>' if chosen else ""
        rows.append(f"<tr><td>{e(name)}{badge}</td>"
                    f"<td>{e(verdict)}{': ' + e(reasons) if reasons else ''}</td>"
                    f'<td class="num">{"–" if score is None else f"{score:.4g}"}</td>'
                    f'<td class="num">{_pct(c.get("target_accuracy"), 1)}</td>'
                    f'<td class="num">{e(round(c.get("seconds") or 0, 1))}</td></tr>')
    return (f"<p>Chose <b>{e(auto.get('chosen'))}</b>: {e(auto.get('why'))}. Each candidate trained the same steps "
            "from the same seed; the negative-transfer guard rejected some, and the label-free validator chose among "
            "the rest and source-only (<code>transferkit.adapt.auto</code>). Target accuracy is shown, never used."
            f'</p><table><thead><tr><th>candidate</th><th>guard</th><th class="num">{e(auto.get("validator"))}</th>'
            '<th class="num">target acc. (%)</th><th class="num">seconds</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


# -- the guard and the gap -----------------------------------------------------------------------
def _guard_single(guard: dict[str, Any]) -> str:
    keep = guard.get("keep", "?")
    cls = "ok" if keep == "adapted" else "warn"
    out = (f'<p>Kept: <span class="badge {cls}">{e(keep)}</span> — the source-only twin (same model, seed and '
           "settings, no transfer loss) was trained too; the rule (<code>transferkit.measure.guard</code>) reads "
           "no target label.</p>")
    reasons = guard.get("reasons") or []
    if reasons:
        out += "<p>Reasons to fall back:</p><ul class=\"reasons\">" + "".join(f"<li>{e(r)}</li>" for r in reasons)
        out += "</ul>"
    else:
        out += "<p>No sign of negative transfer: every check passed.</p>"
    numbers = guard.get("numbers", {})
    rows = []
    acc = numbers.get("source_val_accuracy")
    if acc:
        rows.append(("source-validation accuracy (%)", _pct(acc.get("source-only"), 2), _pct(acc.get("adapted"), 2),
                     f"may drop by at most {_pct(numbers.get('max_source_drop'), 0)} points"))
    col = numbers.get("collapse")
    if col:
        rows.append(("top-class share of target predictions (%)", _pct(col["source-only"].get("top_class_share"), 1),
                     _pct(col["adapted"].get("top_class_share"), 1),
                     "collapsed: " + e(col["adapted"].get("reason")) if col["adapted"].get("collapsed") else ""))
    sure = numbers.get("sure_half")
    if sure:
        rows.append(("surest target half relabelled (%)", "", _pct(sure.get("relabelled"), 1),
                     f"limit: the twin's estimated target error {_pct(sure.get('source_only_error_estimate'), 1)}% "
                     + (f"(the larger of ATC {_pct(sure['atc'], 1)}% and DoC {_pct(sure['doc'], 1)}%)"
                        if "doc" in sure else "(ATC)")))
    absent = numbers.get("absent_classes")
    if absent:
        names = ", ".join(str(c) for c in absent.get("classes", [])) or "none"
        rows.append(("target share in classes absent from it (%)", _pct(absent.get("source_only_share"), 1),
                     _pct(absent.get("adapted_share"), 1), f"absent classes: {e(names)}"))
    val = numbers.get("validator")
    if val:
        rows.append((f"validator {val.get('name')}", _num(val.get("source-only"), 4), _num(val.get("adapted"), 4),
                     "must not be lower after adaptation"))
    if rows:
        out += ('<table><thead><tr><th>check</th><th class="num">source-only</th><th class="num">adapted</th>'
                "<th>rule</th></tr></thead><tbody>"
                + "".join(f'<tr><td>{e(a)}</td><td class="num">{b}</td><td class="num">{c}</td>'
                          f'<td class="note">{d}</td></tr>' for a, b, c, d in rows)
                + "</tbody></table>")
    signals = numbers.get("signals")
    if signals:
        out += ("<details><summary>Other label-free signals (recorded, not part of the rule)</summary>"
                + _pair_table(signals) + "</details>")
    return out


def _guard_aggregate(per_seed: list[dict[str, Any]]) -> str:
    rows = []
    for r in per_seed:
        g = r.get("guard")
        if g is None:
            continue
        keep = g.get("keep", "?")
        acc = g.get("numbers", {}).get("source_val_accuracy", {})
        reasons = "; ".join(g.get("reasons") or []) or "no sign of negative transfer"
        rows.append(f'<tr><td class="num">{e(r.get("seed"))}</td><td><span class="badge '
                    f'{"ok" if keep == "adapted" else "warn"}">{e(keep)}</span></td>'
                    f'<td class="num">{_pct(acc.get("source-only"), 1)}</td>'
                    f'<td class="num">{_pct(acc.get("adapted"), 1)}</td><td>{e(reasons)}</td></tr>')
    return ('<p>Each seed\'s source-only twin was trained too; the model kept per seed (the rule, '
            "<code>transferkit.measure.guard</code>, reads no target label):</p>"
            '<table><thead><tr><th class="num">seed</th><th>kept</th><th class="num">source-val acc. (%) '
            'source-only</th><th class="num">adapted</th><th>reasons</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


GAP_NAMES = {"mmd2": "MMD²", "proxy_a": "proxy A-distance"}


def _gap_single(report: dict[str, Any]) -> str:
    gap = (report.get("guard") or {}).get("gap")
    if not gap:
        return f'<p class="muted">Not measured: {e(_no_gap_reason(report))}</p>'
    before, after = gap.get("source-only", {}), gap.get("adapted", {})
    rows = []
    for key in [k for k in before if k in after]:
        b, a = before[key], after[key]
        change = _change(b.get("value"), a.get("value"))
        samples = b.get("samples")
        n = f"{samples[0]} / {samples[1]}" if isinstance(samples, list | tuple) and len(samples) == 2 else ""
        rows.append(f"<tr><td>{e(GAP_NAMES.get(key, key))}</td>"
                    f'<td class="num">{_num(b.get("value"), 4)}{_p(b.get("p_value"))}</td>'
                    f'<td class="num">{_num(a.get("value"), 4)}{_p(a.get("p_value"))}</td>'
                    f'<td class="num">{change}</td><td class="num">{e(n)}</td></tr>')
    return ("<p>How far apart source and target are on each model's own features (source validation vs the "
            "unlabelled target train split). Adaptation is meant to shrink it.</p>"
            '<table><thead><tr><th>measure</th><th class="num">before (source-only)</th>'
            '<th class="num">after (adapted)</th><th class="num">change</th>'
            '<th class="num">items source / target</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>"
            '<p class="note">MMD²: multi-Gaussian-kernel maximum mean discrepancy, with its permutation-test '
            "p-value; proxy A-distance: 2(1 − 2·error) of a cross-validated linear domain classifier (0: "
            "indistinguishable, 2: fully separable).</p>")


def _gap_aggregate(report: dict[str, Any]) -> str:
    per_seed = [r for r in report.get("per_seed", []) if (r.get("guard") or {}).get("gap")]
    if not per_seed:
        return f'<p class="muted">Not measured: {e(_no_gap_reason(report))}</p>'
    keys = [k for k in ("mmd2", "proxy_a") if all(k in r["guard"]["gap"].get("adapted", {}) for r in per_seed)]
    head = '<tr><th class="num">seed</th>' + "".join(
        f'<th class="num">{e(GAP_NAMES[k])} before</th><th class="num">after</th>' for k in keys) + "</tr>"
    rows = []
    for r in per_seed:
        g = r["guard"]["gap"]
        cells = "".join(f'<td class="num">{_num(g["source-only"][k]["value"], 4)}</td>'
                        f'<td class="num">{_num(g["adapted"][k]["value"], 4)}</td>' for k in keys)
        rows.append(f'<tr><td class="num">{e(r.get("seed"))}</td>{cells}</tr>')
    if len(per_seed) > 1:
        cells = ""
        for k in keys:
            for side in ("source-only", "adapted"):
                values = [r["guard"]["gap"][side][k]["value"] for r in per_seed]
                cells += f'<td class="num">{e(format_mean_std(values, scale=1.0, digits=4))}</td>'
        rows.append(f"<tr><td><b>mean ± std</b></td>{cells}</tr>")
    return ("<p>Source vs target on each model's own features, before (source-only twin) and after "
            "adaptation, per seed.</p>"
            f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")


def _no_gap_reason(report: dict[str, Any]) -> str:
    if not report.get("target"):
        return "the run has no target domain."
    if (report.get("method") or "none") == "none":
        return ("a source-only run has no 'after' (transferkit measure --source S --target T measures the gap of any "
                "backbone).")
    return "the negative-transfer guard was off (adapt.guard false), which is what measures it before and after."


# -- figures -------------------------------------------------------------------------------------
def _map_heading(report: dict[str, Any]) -> str:
    return "Feature map: before and after adaptation" if (report.get("feature_map") or {}).get("before") else (
        "Feature map")


def _feature_map_section(report: dict[str, Any], run_dir: Path, plots: dict[str, str]) -> str:
    info = report.get("feature_map")
    file = plots.get("feature map")
    if report.get("plots_note"):
        return _not_drawn(report)
    if not info or not file:
        if not report.get("target"):
            why = "the run has no target domain."
        else:
            why = "the run directory has no feature_map.npz (a run written before transferkit had it)."
        return f'<p class="muted">No feature map: {e(why)}</p>'
    what = (f"{info.get('embedding')} of {info.get('n_source')} {info.get('source_split')} items (blue) and "
            f"{info.get('n_target')} {info.get('target_split')} items (orange)")
    if info.get("before"):
        what += (", each model's features embedded on their own (axes are not comparable between panels). "
                 "Coloured by domain; the lower row colours the source by its class (target labels take no part).")
    else:
        what += ". Coloured by domain; on the right, the source by its class (target labels take no part)."
    if info.get("before"):
        caption = "Left: before adaptation (the guard's source-only twin). Right: after (the adapted model"
        kept = (report.get("guard") or {}).get("keep")
        caption += ", not kept by the guard). " if kept == "source-only" else "). "
    else:
        caption = f"'Before' is unavailable: {info.get('note') or 'no source-only model was trained'}. "
    if info.get("embedding") == "PCA":
        what += " PCA, not t-SNE: too few points for t-SNE's neighbourhoods."
    return figure(run_dir, file, "2-D map of source and target features", caption + what)


def _not_drawn(report: dict[str, Any]) -> str:
    return f'<p class="muted">Not drawn here: {e(report["plots_note"])}.</p>'


def _curves(report: dict[str, Any], run_dir: Path, plots: dict[str, str]) -> str:
    if report.get("plots_note"):
        return _not_drawn(report)
    file = plots.get("learning curves")
    if not file:
        return '<p class="muted">No learning curves: metrics.jsonl has no record.</p>'
    return figure(run_dir, file, "learning curves",
                   "Loss and accuracy per epoch on the source training data (solid) and the source validation "
                   "split (dashed), one line per phase" + (" and seed." if "per_seed" in report else "."))


def _confusions(report: dict[str, Any], run_dir: Path, plots: dict[str, str]) -> str:
    if report.get("plots_note"):
        return _not_drawn(report)
    evals = report.get("evaluations", {})
    figures: dict[str, str] = {}
    for role in _ordered(evals):
        file = plots.get(f"confusion matrix ({role})")
        if file:
            m = evals[role]
            figures[role] = figure(run_dir, file, f"confusion matrix ({role})",
                                    f"{role}: {m.get('domain', '')}, {m.get('n', '')} items, accuracy "
                                    f"{_pct(m.get('accuracy'), 2)}%. Rows: true class; cells: counts, shaded by "
                                    "the share of the row.")
    if not figures:
        return '<p class="muted">No confusion matrix: nothing was scored.</p>'
    candidates = [r for r in ("target_adapted", "target_source_only") if r in figures]
    main = [f for r, f in figures.items() if r not in candidates]
    out = f'<div class="grid">{"".join(main)}</div>'
    if candidates:  # the guard's two models on the target: one of them is "target" again
        out += ("<details><summary>Both of the guard's candidates on the target (the kept one is the model above)"
                f'</summary><div class="grid">{"".join(figures[r] for r in candidates)}</div></details>')
    return out


def figure(folder: Path | None, name: Any, alt: str, caption: str) -> str:
    """``<figure>`` of the PNG ``name`` in ``folder``, embedded as a ``data:`` URI; a note instead when the name is
    not one transferkit draws or the file is missing, a link, not a regular file or not a PNG (a report from
    elsewhere may name any path: only the run's own plots are embedded)."""
    if folder is None:
        return f'<p class="muted">{e(alt)}: the seed has no folder of its own in the run directory.</p>'
    try:
        data = base64.b64encode(read_plot(folder, name)).decode("ascii")
    except RunDirError as exc:
        missing = str(exc).endswith("does not exist")
        return f'<p class="muted">{e(alt)}: {"missing from the run directory" if missing else e(exc)}.</p>'
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(alt)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


# -- seeds and config ----------------------------------------------------------------------------
def _seed_links(run_dir: Path, per_seed: list[dict[str, Any]]) -> str:
    items = []
    for r in per_seed:
        seed = r.get("seed")
        target = r.get("evaluations", {}).get("target", {}).get("accuracy")
        tail = f" — target accuracy {_pct(target, 2)}%" if target is not None else ""
        folder = seed_folder(run_dir, seed)
        href = f"seed-{seed}/{REPORT_HTML}"
        link = (f'<a href="{e(href)}">seed {e(seed)}</a>' if folder is not None and (folder / REPORT_HTML).is_file()
                else f"seed {e(seed)} (no report.html)")
        items.append(f"<li>{link}{tail}</li>")
    return ("<p>Each seed's own report (in <code>seed-&lt;s&gt;/</code>), with its confusion matrices, feature map "
            f"and guard numbers:</p><ul>{''.join(items)}</ul>")


def _config(run_dir: Path) -> str:
    # a seed of a multi-seed run shares the run's config, one level up
    shared = [run_dir.parent / "config.yaml"] if run_dir.name.startswith("seed-") else []
    for path in [run_dir / "config.yaml", *shared]:
        if path.is_symlink() or path.exists():
            text, why = config_text(path)
            if text is None:  # a link, a FIFO, not UTF-8: say so and name the file, rather than fail the report
                return f'<p class="muted">The configuration is not shown: {e(why)}.</p>'
            return (f"<details><summary>The resolved configuration (<code>{e(path.name)}</code>, every default "
                    f"filled in): {len(text.splitlines())} lines</summary><pre>{e(text)}</pre></details>")
    return '<p class="muted">No config.yaml found beside the report.</p>'


# -- formatting ----------------------------------------------------------------------------------
def _finite(x: Any) -> bool:
    """A number that formats as a float: a report from elsewhere may hold a 400-digit integer (OverflowError)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _pct(x: Any, digits: int) -> str:
    return f"{100 * float(x):.{digits}f}" if _finite(x) else "–"


def _num(x: Any, digits: int) -> str:
    return f"{float(x):.{digits}f}" if _finite(x) else "–"


def _p(p: Any) -> str:
    return f' <span class="note">(p {float(p):.3f})</span>' if _finite(p) else ""


def _change(before: Any, after: Any) -> str:
    if not (_finite(before) and _finite(after)):
        return "–"
    d = after - before
    cls = "better" if d < 0 else "worse" if d > 0 else ""
    return f'<span class="{cls}">{d:+.4f}</span>'


def _pair_table(signals: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and {"source-only", "adapted"} <= set(value):
            rows.append((prefix, _num(value["source-only"], 4), _num(value["adapted"], 4)))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix} · {k}" if prefix else str(k), v)
        elif _finite(value):
            rows.append((prefix, "", _num(value, 4)))

    walk("", signals)
    body = "".join(f'<tr><td>{e(a)}</td><td class="num">{b}</td><td class="num">{c}</td></tr>' for a, b, c in rows)
    return ('<table><thead><tr><th>signal</th><th class="num">source-only</th><th class="num">adapted</th></tr>'
            f"</thead><tbody>{body}</tbody></table>")

