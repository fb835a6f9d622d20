"""The tiny two-domain vector task every pipeline step is tested on: two Gaussian classes in 2-D, the target moved
by 1 along both axes (120 items of each domain, 90 to train, 30 to test)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import mlp_config, save_splits, two_blobs
from transferkit.config import RunConfig


@pytest.fixture
def domains(tmp_path: Path) -> tuple[str, str]:
    """``(source, target)``: ``.npz`` files of the task above, classes a and b."""
    paths = []
    for name, shift, seed in (("src", 0.0, 0), ("tgt", 1.0, 1)):
        x, y = two_blobs(120, seed, shift=(shift, shift))
        paths.append(str(save_splits(tmp_path / f"{name}.npz", x, y, 90, ("a", "b"))))
    return paths[0], paths[1]


@pytest.fixture
def config(tmp_path: Path, domains: tuple[str, str]) -> Callable[..., RunConfig]:
    """``config(**dotted)``: a 2-epoch run of a small MLP from the source to the target (no adaptation unless
    ``"adapt.method"`` says so), with dotted overrides."""

    def make(**dotted: object) -> RunConfig:
        return mlp_config(tmp_path / "runs", "step", *domains, mlp={"hidden": 8, "depth": 1, "dropout": 0.0},
                          train={"epochs": 2, "lr": 0.05, "device": "cpu"}, **dotted)

    return make
