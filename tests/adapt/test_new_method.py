"""Adding a method is its builder plus one registry call: config validation, the pipeline, ``auto``'s candidate
check and the contract test read the registry, and nothing else is edited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.adapt.methods import MethodSpec, list_methods, register_method, unregister_method
from transferkit.config import parse_config
from transferkit.experiment import fit
from transferkit.train.terms import StepOutputs


def _mean_gap(d: int, c: int, options: dict) -> tuple:
    """A toy transfer loss: the squared distance between the domains' mean features."""

    def loss(out: StepOutputs) -> torch.Tensor:
        assert out.target_features is not None
        return (out.source_features.mean(0) - out.target_features.mean(0)).pow(2).sum()

    return loss, None


@pytest.fixture
def toy_method() -> Iterator[str]:
    register_method(MethodSpec("mean-gap", "distance between domain means (a test's toy)", "this test", _mean_gap,
                               aligns_features=True))
    try:
        yield "mean-gap"
    finally:
        unregister_method("mean-gap")


def _domains(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, shift in (("src", 0.0), ("tgt", 1.5)):
        x = rng.normal(0, 1, (120, 6)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int64)
        x[:, 1:] += shift
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
        paths.append(path)
    return paths[0], paths[1]


def test_a_registered_method_trains_end_to_end_and_is_guarded(tmp_path: Path, toy_method: str) -> None:
    src, tgt = _domains(tmp_path)
    assert toy_method in list_methods()
    cfg = parse_config({"name": "toy", "output_dir": str(tmp_path / "runs"), "seeds": [0],
                        "data": {"source": str(src), "target": str(tgt), "val_fraction": 0},
                        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 8}},
                        "adapt": {"method": toy_method}, "train": {"steps": 20}})
    report = fit(cfg, progress=False)
    seed = json.loads((tmp_path / "runs" / "toy" / "report.json").read_text())
    assert report["method"] == toy_method and seed["guard"]["keep"] in ("adapted", "source-only")
    metrics = [json.loads(line) for line in (tmp_path / "runs" / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert any(f"loss/{toy_method}" in r for r in metrics)  # its term was summed into the loss


def test_an_unregistered_method_is_a_config_error_again(tmp_path: Path, toy_method: str) -> None:
    from transferkit.errors import ConfigError

    src, tgt = _domains(tmp_path)
    unregister_method(toy_method)
    cfg = parse_config({"name": "gone", "output_dir": str(tmp_path / "runs"),
                        "data": {"source": str(src), "target": str(tgt)}, "model": {"backbone": "mlp"},
                        "adapt": {"method": toy_method}})
    with pytest.raises(ConfigError, match="mean-gap"):
        fit(cfg, progress=False)
    assert not (tmp_path / "runs" / "gone").exists()


def test_names_cannot_be_registered_twice_or_shadow_none_and_auto() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_method(MethodSpec("dann", "again", "", _mean_gap))
    with pytest.raises(ValueError, match="reserved"):
        register_method(MethodSpec("auto", "no", "", _mean_gap))
