"""The demo's ``report.html``: its table, the comparison chart, the domain gap and the adapted features' map, with
links to every setting's own run report. Same page frame and escaping as :mod:`transferkit.evaluate.html`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.evaluate.html import GAP_NAMES, REPORT_HTML, e, figure, page
from transferkit.evaluate.metrics import format_mean_std


def render_demo_html(summary: dict[str, Any], root: Path) -> str:
    """The page of a finished demo whose run directories are under ``root``."""
    adapted = [k.split(": ", 1)[1] for k in summary["rows"] if k.startswith("adapted: ")]
    frame = {"name": summary["name"], "source": summary["source"], "target": summary["target"],
             "backbone": summary.get("backbone"), "method": ", ".join(adapted) or None, "seeds": summary["seeds"],
             "selection": summary["selection"]}
    sections = [("results", "Results", _results(summary, root)), ("gap", "Domain gap", _gap(summary))]
    folder = next((root / f"adapt-{m}" / f"seed-{summary['seeds'][0]}" for m in adapted), None)
    if folder is not None and (folder / "feature_map.png").is_file():
        sections.append(("feature-map", "Feature map", figure(
            folder, "feature_map.png", "t-SNE of source and target features before and after adaptation",
            f"{adapted[0]}, seed {summary['seeds'][0]}: source and target features of the source-only model "
            "(before) and of the adapted one (after)")))
    sections.append(("runs", "Runs", _runs(root)))
    return page(frame, sections)


def _results(summary: dict[str, Any], root: Path) -> str:
    rows = "".join(
        f'<tr><td>{e(k)}</td><td class="num">{e(format_mean_std(v["accuracy"]["values"]))}</td>'
        f'<td class="num">{e(format_mean_std(v["macro_f1"]["values"]))}</td><td>{e(v["note"])}</td></tr>'
        for k, v in summary["rows"].items())
    return (f"<p>{e(summary['target'])} test accuracy: mean ± sample std over seeds "
            f"{e(', '.join(map(str, summary['seeds'])))}; pre-training and adaptation: {e(summary['budget'])}; "
            f"run time {summary['seconds']:.0f} s.</p>"
            '<table><thead><tr><th>setting</th><th class="num">accuracy (%)</th><th class="num">macro-F1 (%)</th>'
            f"<th>what it saw</th></tr></thead><tbody>{rows}</tbody></table>"
            + figure(root, "comparison.png", "bar chart of the table", "the table above as bars"))


def _gap(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{e(GAP_NAMES.get(g['name'], g['name']))}</td><td class=\"num\">{g['value']:.4g}</td>"
        f"<td class=\"num\">{_p_value(g['p_value'])}</td><td>{e(g['meaning'])}</td></tr>" for g in summary["gap"])
    out = (f"<p>On the pre-trained CNN's features (seed {e(summary['seeds'][0])}): {e(summary['source'])} test "
           f"digits vs unlabelled {e(summary['target'])} training images.</p>"
           '<table><thead><tr><th>measure</th><th class="num">value</th><th class="num">p-value</th>'
           f"<th>meaning</th></tr></thead><tbody>{rows}</tbody></table>")
    for method, change in summary.get("adaptation_gap", {}).items():
        cells = "".join(f"<tr><td>{e(GAP_NAMES.get(m, m))}</td><td class=\"num\">{c['before']:.4g}</td>"
                        f"<td class=\"num\">{c['after']:.4g}</td></tr>" for m, c in change.items())
        out += (f"<h3>{e(method)}: before and after (mean over seeds, source validation vs target train)</h3>"
                '<table><thead><tr><th>measure</th><th class="num">source-only features</th>'
                f'<th class="num">adapted features</th></tr></thead><tbody>{cells}</tbody></table>')
    return out


def _runs(root: Path) -> str:
    links = "".join(f'<li><a href="{e(p.parent.name)}/{REPORT_HTML}">{e(p.parent.name)}</a></li>'
                    for p in sorted(root.glob(f"*/{REPORT_HTML}")))
    return f"<p>Each setting's own report (every seed, curves, confusion matrices, config):</p><ul>{links}</ul>"


def _p_value(p: float | None) -> str:
    return "" if p is None else f"{p:.3g}"
