"""The full demo with its default settings (slow: about four minutes on a 2-core CPU)."""

import pytest

from transferkit.demo import run_demo
from transferkit.evaluate.metrics import mean_std


@pytest.mark.slow
def test_full_demo_transfer_beats_scratch(tmp_path) -> None:
    summary = run_demo(tmp_path, "demo", progress=False)
    rows = summary["rows"]
    scratch = mean_std(rows["scratch (10/class)"]["accuracy"]["values"])[0]
    strategies = ("linear-probe", "partial", "full", "lp-ft")
    best_transfer = max(mean_std(rows[k]["accuracy"]["values"])[0] for k in strategies)
    assert best_transfer > scratch
