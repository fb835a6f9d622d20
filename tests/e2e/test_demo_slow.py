"""The demo with its default settings (slow: about three minutes on a 2-core CPU)."""

import pytest

from transferkit.demo import run_demo
from transferkit.evaluate.metrics import mean_std


@pytest.mark.slow
def test_demo_adaptation_and_transfer_help(tmp_path) -> None:
    summary = run_demo(tmp_path, "demo", progress=False)
    acc = {k: mean_std(v["accuracy"]["values"])[0] for k, v in summary["rows"].items()}
    assert acc["adapted: dann"] > acc["source only"]
    assert acc["fine-tuned: full (10/class)"] > acc["scratch (10/class)"]


@pytest.mark.slow
def test_full_demo_runs_every_strategy_and_both_methods(tmp_path) -> None:
    summary = run_demo(tmp_path, "full", seeds=(0,), full=True, steps=5, finetune_epochs=1, progress=False)
    assert set(summary["rows"]) == {"source only", "adapted: dann", "adapted: mcc", "scratch (10/class)"} | {
        f"fine-tuned: {k} (10/class)" for k in ("full", "linear-probe", "partial", "lp-ft")}
    assert set(summary["adaptation_gap"]) == {"dann", "mcc"}
    assert (tmp_path / "full" / "report.html").is_file()
