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
