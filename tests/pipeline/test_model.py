"""Step 2, ``pipeline/model.py`` alone: the model a run builds from its data, the loss terms it trains with, the
source-only config of the guard's twin, and the settings refused together."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.config import RunConfig
from transferkit.data.standardize import statistics
from transferkit.errors import ConfigError
from transferkit.models.backbones import Standardize
from transferkit.pipeline.data import load_run_data
from transferkit.pipeline.model import build_model, check_combination, loss_terms, source_only_config

Config = Callable[..., RunConfig]


def test_the_model_reads_its_input_width_and_classes_from_the_data(config: Config) -> None:
    cfg = config()
    data = load_run_data(cfg, 0)
    model = build_model(cfg, data)
    assert model.classes == ["a", "b"] and model.feature_dim == 8 and model.bottleneck_dim is None
    features, logits = model(torch.zeros(3, 2))  # 2 input features
    assert features.shape == (3, 8) and logits.shape == (3, 2)
    first = next(iter(model.backbone.body.children()))
    assert isinstance(first, Standardize)  # per-domain standardisation: the source's statistics, saved with it
    mean, sd = statistics(np.asarray(data.source_train.inputs))
    assert torch.allclose(first.mean, torch.as_tensor(mean)) and torch.allclose(first.std, torch.as_tensor(sd))


def test_a_bottleneck_is_built_where_configured(config: Config) -> None:
    cfg = config(**{"model.bottleneck_dim": 4})
    assert build_model(cfg, load_run_data(cfg, 0)).bottleneck_dim == 4


def test_init_from_takes_an_earlier_models_weights(config: Config, tmp_path: Path) -> None:
    cfg = config()
    data = load_run_data(cfg, 0)
    torch.manual_seed(1)
    earlier = build_model(cfg, data)
    earlier.save(tmp_path / "earlier.safetensors")
    torch.manual_seed(2)
    again = build_model(config(**{"model.init_from": str(tmp_path / "earlier.safetensors")}), data)
    for key, value in earlier.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_init_from_a_missing_file_is_refused(config: Config, tmp_path: Path) -> None:
    cfg = config(**{"model.init_from": str(tmp_path / "none.safetensors")})
    with pytest.raises(ConfigError, match="is not a file"):
        build_model(cfg, load_run_data(cfg, 0))


@pytest.mark.parametrize(("over", "names"), [
    ({}, ["source_ce"]),
    ({"adapt.method": "dann"}, ["source_ce", "dann"]),
    ({"data.target_labels_per_class": 2}, ["source_ce", "target_ce"]),
    ({"adapt.method": "mcc", "finetune.regularizers": ["l2-sp", "bss"]}, ["source_ce", "mcc", "l2_sp", "bss"]),
], ids=["source-only", "method", "labelled-target", "regularisers"])
def test_the_loss_terms_of_a_run(config: Config, over: dict, names: list[str]) -> None:
    cfg = config(**over)
    assert [t.name for t in loss_terms(cfg, build_model(cfg, load_run_data(cfg, 0)))] == names


def test_the_source_only_config_drops_only_the_method(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann", "adapt.weight": 0.3, "data.target_labels_per_class": 2})
    twin = source_only_config(cfg)
    assert twin.adapt.method == "none" and cfg.adapt.method == "dann"  # a copy: the run's config is unchanged
    assert twin.model_dump(exclude={"adapt"}) == cfg.model_dump(exclude={"adapt"})
    assert twin.adapt.model_dump(exclude={"method"}) == cfg.adapt.model_dump(exclude={"method"})


@pytest.mark.parametrize(("over", "message"), [
    ({"finetune.strategy": "linear-probe", "adapt.method": "dann"}, "aligns features"),
    ({"finetune.strategy": "linear-probe", "data.augment": True}, "data.augment has no effect"),
    ({"adapt.method": "dann", "data.batch_size": 1}, "data.batch_size must be >= 2"),
    ({"data.source_weighting": "discrepancy"}, "weighs several sources"),
], ids=["aligning-frozen-features", "augmenting-a-probe", "batch-of-one", "weighting-one-source"])
def test_settings_that_cannot_work_together_are_refused(config: Config, over: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_combination(config(**over))


def test_settings_that_work_together_pass(config: Config) -> None:
    check_combination(config())
    check_combination(config(**{"finetune.strategy": "linear-probe", "adapt.method": "dann",
                                "model.bottleneck_dim": 4}))  # a trainable layer to align
