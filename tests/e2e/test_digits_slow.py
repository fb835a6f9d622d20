"""MNIST -> USPS with DANN on the real benchmark data (slow; needs TRANSFERKIT_DATA with mnist/ and usps/)."""

from pathlib import Path

import pytest

from transferkit.config import parse_config
from transferkit.experiment import fit


def _run(root: Path, out: Path, method: str) -> float:
    cfg = parse_config({
        "name": method, "output_dir": str(out), "seeds": [0],
        "data": {"source": "mnist", "target": "usps", "root": str(root), "source_per_class": 200},
        "model": {"backbone": "lenet", "bottleneck_dim": 256},
        "adapt": {"method": method},
        "train": {"epochs": 2, "lr": 1e-3, "device": "cpu", "threads": 2},
    })
    report = fit(cfg, progress=False)
    return report["summary"]["target"]["accuracy"]["values"][0]


@pytest.mark.slow
def test_dann_beats_source_only_on_mnist_to_usps(data_root: Path, tmp_path: Path) -> None:
    source_only = _run(data_root, tmp_path, "none")
    dann = _run(data_root, tmp_path, "dann")
    assert dann > source_only + 0.03, (source_only, dann)
