"""Step 4, ``pipeline/choose.py`` alone: auto's candidate configs, the guard's decision between two given models
(no training), and the cached-feature view a linear probe is scored through."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from transferkit.config import RunConfig
from transferkit.errors import ConfigError
from transferkit.evaluate.predict import predict_outputs
from transferkit.pipeline.choose import auto_configs, evaluation_view, guard_decision, is_cached, preprocessed_for
from transferkit.pipeline.data import load_run_data
from transferkit.pipeline.model import build_model

Config = Callable[..., RunConfig]
KW = {"batch_size": 64, "num_workers": 0, "device": "cpu"}


def test_auto_trains_each_candidate_with_the_runs_other_settings(config: Config) -> None:
    cfg = config(**{"adapt.method": "auto", "adapt.auto_methods": ["dan", "mcc"]})
    configs, left_out = auto_configs(cfg)
    assert list(configs) == ["dan", "mcc"] and left_out == {}
    for name, each in configs.items():
        assert each.adapt.method == name
        assert each.model_dump(exclude={"adapt"}) == cfg.model_dump(exclude={"adapt"})


def test_auto_leaves_out_what_cannot_train_and_says_why(config: Config) -> None:
    cfg = config(**{"adapt.method": "auto", "adapt.auto_methods": ["dan", "mcc"], "finetune.strategy": "linear-probe"})
    configs, left_out = auto_configs(cfg)
    assert list(configs) == ["mcc"] and "aligns features" in left_out["dan"]
    with pytest.raises(ConfigError, match=r"none of adapt\.auto_methods"):
        auto_configs(config(**{"adapt.method": "auto", "adapt.auto_methods": ["dan"],
                               "finetune.strategy": "linear-probe"}))


@pytest.mark.parametrize("over", [{"adapt.weight": 0.5}, {"adapt.options": {"hidden": 8}}], ids=["weight", "options"])
def test_auto_refuses_settings_of_one_method(config: Config, over: dict) -> None:
    with pytest.raises(ConfigError, match="at its own default"):
        auto_configs(config(**{"adapt.method": "auto", **over}))


def test_the_guard_keeps_an_adapted_model_no_worse_than_its_twin(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann"})
    data = load_run_data(cfg, 0)
    torch.manual_seed(0)
    model = build_model(cfg, data)
    decision, gap, (source_only, adapted) = guard_decision(cfg, model, copy.deepcopy(model), data, KW)
    assert decision.keep == "adapted" and decision.reasons == []
    assert set(gap) == {"source-only", "adapted"} and gap["adapted"] == gap["source-only"]  # the same features
    assert "signals" in decision.numbers  # the label-free validators, for the report
    assert len(adapted.target_logits) == len(data.target_train)  # scored on the unlabelled target train split
    assert len(source_only.source_val_labels) == len(data.source_train)  # no validation split: the source's train


def test_the_guard_keeps_the_twin_when_the_adapted_predictions_collapse(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann"})
    data = load_run_data(cfg, 0)
    torch.manual_seed(0)
    twin = build_model(cfg, data)
    collapsed = copy.deepcopy(twin)
    with torch.no_grad():  # every item predicted as class a
        collapsed.head.fc.weight.zero_()
        collapsed.head.fc.bias.copy_(torch.tensor([5.0, -5.0]))
    decision, _, _ = guard_decision(cfg, collapsed, twin, data, KW)
    assert decision.keep == "source-only" and any("collapsed" in r for r in decision.reasons)


def test_a_fine_tuned_model_is_scored_as_it_is(config: Config) -> None:
    cfg = config()
    data = load_run_data(cfg, 0)
    model = build_model(cfg, data)
    view, vdata = evaluation_view(cfg, model, data, progress=False)
    assert view(model) is model and vdata is data


def test_a_linear_probe_is_scored_by_its_head_on_cached_features(config: Config) -> None:
    cfg = config(**{"finetune.strategy": "linear-probe", "model.bottleneck_dim": 4})
    data = load_run_data(cfg, 0)
    torch.manual_seed(0)
    model = build_model(cfg, data).eval()
    view, vdata = evaluation_view(cfg, model, data, progress=False)
    assert tuple(vdata.target_eval.inputs.shape) == (30, 8)  # the frozen backbone's 8 features, not the 2 inputs
    _, direct, labels = predict_outputs(model, data.target_eval, **KW)
    _, through_head, same = predict_outputs(view(model), vdata.target_eval, **KW)
    assert torch.allclose(direct, through_head, atol=1e-5) and torch.equal(labels, same)


def test_nothing_is_preprocessed_for_a_model_without_a_transform(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann"})
    data = load_run_data(cfg, 0)
    model = build_model(cfg, data)  # an mlp reads the vectors as they are
    shared = preprocessed_for(data, model, 2**20)
    assert shared.target_train is data.target_train and shared.source_train is data.source_train
    assert not is_cached(shared.target_eval)
