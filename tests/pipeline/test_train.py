"""Step 3, ``pipeline/train.py`` alone: one model trained by its strategy (the engine, the probe on cached features,
the probe solved as logistic regression), for a fixed number of steps where asked, and the per-source weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from transferkit.config import RunConfig
from transferkit.errors import ConfigError
from transferkit.pipeline.data import load_run_data
from transferkit.pipeline.model import build_model
from transferkit.pipeline.train import PROBE_KEYS, discrepancy_weights, train_model
from transferkit.runs import RunDir

Config = Callable[..., RunConfig]


def _train(cfg: RunConfig, tmp_path: Path, **kw: object) -> tuple[dict, dict[str, torch.Tensor],
                                                                 dict[str, torch.Tensor]]:
    """``(result, weights before, weights after)`` of one training of a fresh model (seed 0)."""
    data = load_run_data(cfg, 0)
    torch.manual_seed(0)
    model = build_model(cfg, data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_model(cfg, model, data, RunDir(tmp_path / "run"), 0, resume=False, progress=False, **kw)
    return result, before, model.state_dict()


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_fine_tuning_trains_the_whole_model_through_the_engine(config: Config, tmp_path: Path) -> None:
    result, before, after = _train(config(), tmp_path)
    assert {"best_epoch", "epochs_run", "steps", "budget", "precision"} <= set(result)
    assert result["epochs_run"] == 2 and result["steps"] > 0
    assert _changed(before, after, "backbone.") and _changed(before, after, "head.")
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def test_steps_fix_the_length_of_the_training(config: Config, tmp_path: Path) -> None:
    result, _, _ = _train(config(), tmp_path, steps=3)
    assert result["steps"] == 3


def test_a_linear_probe_trains_the_head_on_a_frozen_backbone(config: Config, tmp_path: Path) -> None:
    result, before, after = _train(config(**{"finetune.strategy": "linear-probe"}), tmp_path)  # 2 epochs: SGD
    assert not _changed(before, after, "backbone.") and _changed(before, after, "head.")
    assert result["epochs_run"] == 2 and not set(PROBE_KEYS) & set(result)


def test_a_plain_linear_probe_is_solved_as_logistic_regression(config: Config, tmp_path: Path) -> None:
    cfg = config(**{"finetune.strategy": "linear-probe", "train.epochs": None})
    result, before, after = _train(cfg, tmp_path)
    assert set(PROBE_KEYS) <= set(result) and result["steps"] is None and result["solver_iterations"] > 0
    assert not _changed(before, after, "backbone.") and _changed(before, after, "head.")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no engine ran


def test_discrepancy_weights_need_several_sources(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann"})
    data = load_run_data(cfg, 0)
    with pytest.raises(ConfigError, match="needs several sources"):
        discrepancy_weights(cfg, build_model(cfg, data), data, progress=False)
