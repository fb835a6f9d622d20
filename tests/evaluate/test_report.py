"""Reports: valid PNG plots, a Markdown report that states its selection rule and numbers, and seed aggregation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transferkit.evaluate.plots import plot_bars, plot_confusion_matrix, plot_learning_curves
from transferkit.evaluate.report import aggregate, render_markdown, write_aggregate_report, write_report
from transferkit.runs import RunDir, append_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SELECTION = "best source-validation accuracy (target labels never used)"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 1024
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"


def _records(seed: int = 0, epochs: int = 3, phase: str = "train") -> list[dict[str, Any]]:
    return [
        {
            "phase": phase,
            "seed": seed,
            "epoch": e,
            "train_loss": 1.0 / (e + 1),
            "train_acc": 0.5 + 0.1 * e,
            "val_loss": 1.2 / (e + 1),
            "val_acc": 0.45 + 0.1 * e,
        }
        for e in range(epochs)
    ]


def _evaluation(acc: float, f1: float, ece: float, domain: str = "mnist") -> dict[str, Any]:
    return {
        "domain": domain,
        "n": 200,
        "accuracy": acc,
        "macro_f1": f1,
        "ece": ece,
        "per_class_accuracy": {"zero": 0.9, "one": None},
        "confusion_matrix": [[90, 10], [0, 0]],
    }


def _report(seed: int = 0, acc: float = 0.9123, f1: float = 0.8877, ece: float = 0.0456) -> dict[str, Any]:
    return {
        "name": "demo",
        "seed": seed,
        "backbone": "lenet",
        "strategy": "full",
        "source": "mnist",
        "target": "usps",
        "selection": SELECTION,
        "classes": ["zero", "one"],
        "evaluations": {
            "source_test": _evaluation(acc, f1, ece),
            "target": _evaluation(acc - 0.2, f1 - 0.2, ece, "usps"),
        },
        "fit": {"epochs_run": 3, "seconds": 12.34, "best_epoch": 1, "best_val_acc": 0.95, "stopped_early": True},
    }


# -- plots -------------------------------------------------------------------------------------
def test_plots_are_valid_pngs(tmp_path: Path) -> None:
    curves = plot_learning_curves(_records(0) + _records(1) + _records(0, phase="lp"), tmp_path / "c.png", "t")
    assert curves == tmp_path / "c.png"
    _assert_png(curves)
    cm = plot_confusion_matrix([[5, 1, 0], [2, 3, 0], [0, 0, 0]], ["a", "b", "c"], tmp_path / "cm.png")
    _assert_png(cm)
    bars = plot_bars({"full": (0.9, 0.01), "linear-probe": (0.8, 0.02)}, tmp_path / "bars.png", "strategies")
    _assert_png(bars)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png", "c.png", "cm.png"]  # no temp files left


def test_learning_curves_without_records_or_validation(tmp_path: Path) -> None:
    assert plot_learning_curves([], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    no_val = [{k: v for k, v in r.items() if not k.startswith("val")} for r in _records()]
    _assert_png(plot_learning_curves(no_val, tmp_path / "noval.png"))


def test_large_confusion_matrix_plots(tmp_path: Path) -> None:
    cm = np.random.default_rng(0).integers(0, 20, size=(31, 31)).tolist()
    _assert_png(plot_confusion_matrix(cm, [f"class{i}" for i in range(31)], tmp_path / "big.png"))


# -- Markdown ----------------------------------------------------------------------------------
def test_render_markdown_of_one_seed() -> None:
    md = render_markdown(_report())
    assert md.startswith("# transferkit run `demo`\n")
    assert f"- checkpoint selection: {SELECTION}" in md
    assert "- backbone: `lenet`, strategy: `full`" in md
    assert "- source: `mnist`, target: `usps`" in md
    assert "| source_test | mnist | 200 | 91.23 | 88.77 | 4.56 |" in md
    assert "| target | usps | 200 | 71.23 | 68.77 | 4.56 |" in md
    assert "| zero | 90.0 | 90.0 |" in md
    assert "| one | – | – |" in md  # an absent class is not reported as 0
    assert "Trained 3 epochs in 12.3 s; selected epoch 2 (source val acc 0.9500), stopped early." in md


def test_render_markdown_without_selection_says_so() -> None:
    rep = _report()
    del rep["selection"], rep["target"]
    md = render_markdown(rep)
    assert "- checkpoint selection: n/a" in md
    assert "- source: `mnist`\n" in md


# -- aggregation -------------------------------------------------------------------------------
def test_aggregate_over_seeds() -> None:
    accs = [0.90, 0.92, 0.97]
    per_seed = [_report(seed=s, acc=a, f1=a - 0.05, ece=0.01 * (s + 1)) for s, a in enumerate(accs)]
    summary = aggregate(per_seed)
    assert set(summary) == {"source_test", "target"}
    src = summary["source_test"]
    assert src["accuracy"]["values"] == accs
    assert src["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert src["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert src["macro_f1"]["mean"] == pytest.approx(np.mean(accs) - 0.05)
    assert src["ece"]["values"] == [0.01, 0.02, 0.03]
    assert summary["target"]["accuracy"]["mean"] == pytest.approx(np.mean(accs) - 0.2)
    assert aggregate([]) == {}


def test_aggregate_markdown_shows_mean_and_std() -> None:
    per_seed = [_report(seed=s, acc=a) for s, a in enumerate([0.78, 0.80, 0.82])]
    rep = {"name": "demo", "selection": SELECTION, "seeds": [0, 1, 2], "summary": aggregate(per_seed)}
    md = render_markdown(rep)
    assert f"- checkpoint selection: {SELECTION}" in md
    assert "- seeds: [0, 1, 2]" in md
    assert "| source_test | 80.0 ± 2.0 | 88.8 ± 0.0 | 4.6 ± 0.0 |" in md
    assert "| target | 60.0 ± 2.0 |" in md
    assert "Mean ± sample std over seeds." in md


# -- written reports ---------------------------------------------------------------------------
def test_write_report(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.prepare()
    for r in _records():
        append_jsonl(run.metrics, r)
    out = write_report(run, _report())
    assert out["plots"] == {
        "learning curves": "learning_curves.png",
        "confusion matrix (source_test)": "confusion_source_test.png",
        "confusion matrix (target)": "confusion_target.png",
    }
    for name in out["plots"].values():
        _assert_png(run.path / name)
    saved = json.loads(run.report_json.read_text(encoding="utf-8"))
    assert saved["evaluations"]["source_test"]["accuracy"] == 0.9123
    md = run.report_md.read_text(encoding="utf-8")
    assert "![learning curves](learning_curves.png)" in md and SELECTION in md


def test_write_aggregate_report(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    per_seed = []
    for s, a in [(0, 0.8), (1, 0.9)]:
        run.seed(s).prepare()
        for r in _records(seed=s):
            append_jsonl(run.seed(s).metrics, r)
        per_seed.append(_report(seed=s, acc=a))
    out = write_aggregate_report(run, per_seed, {"name": "demo", "selection": SELECTION})
    assert out["seeds"] == [0, 1]
    assert out["summary"]["source_test"]["accuracy"]["mean"] == pytest.approx(0.85)
    _assert_png(run.path / "learning_curves.png")
    saved = json.loads(run.report_json.read_text(encoding="utf-8"))
    assert saved["summary"]["source_test"]["accuracy"]["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert "| source_test | 85.0 ± 7.1 |" in run.report_md.read_text(encoding="utf-8")
