"""Step 1, ``pipeline/data.py`` alone: which splits a run gets, what it may see of the target, the validation share,
the standardisation of feature vectors into an mlp, and the size checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from helpers import vector_dataset
from transferkit.config import RunConfig
from transferkit.errors import ConfigError, DataError
from transferkit.pipeline.data import (
    MIN_VAL_PER_CLASS,
    check_sizes,
    load_run_data,
    load_sources,
    trained_on,
    validation_share,
)

Config = Callable[..., RunConfig]


def test_a_source_only_run_gets_no_target_training_data(config: Config) -> None:
    data = load_run_data(config(), 0)
    assert (len(data.source_train), len(data.source_eval), len(data.target_eval)) == (90, 30, 30)
    assert data.target_train is None and data.target_labelled is None  # nothing of the target trains
    assert data.classes == ["a", "b"] and [t.name for t in data.tasks] == ["label"]
    assert data.source_val is None and "too few to hold out" in data.val_note  # 9 items < 10 per class


def test_an_adaptation_method_sees_the_target_train_split_without_labels(config: Config) -> None:
    data = load_run_data(config(**{"adapt.method": "dann"}), 0)
    assert data.target_train is not None and len(data.target_train) == 90
    assert not data.target_train.is_labelled  # dropped at load: nothing later can read them
    assert data.target_eval is not None and data.target_eval.is_labelled  # they only score


def test_a_few_labelled_target_items_per_class_and_the_rest_unlabelled(config: Config) -> None:
    few = load_run_data(config(**{"data.target_labels_per_class": 3}), 0)
    assert few.target_labelled.class_counts() == {"a": 3, "b": 3}
    assert few.target_train is None  # no method: only the labelled few are trained on
    both = load_run_data(config(**{"data.target_labels_per_class": 3, "adapt.method": "mcc"}), 0)
    assert len(both.target_train) == 84 and not both.target_train.is_labelled  # the other 84, unlabelled
    other = load_run_data(config(**{"data.target_labels_per_class": 3}), 1)
    assert not np.array_equal(other.target_labelled.inputs, few.target_labelled.inputs)  # chosen by the seed


def test_a_method_without_a_target_is_refused(config: Config) -> None:
    with pytest.raises(ConfigError, match="needs a target domain"):
        load_run_data(config(**{"adapt.method": "dann", "data.target": None}), 0)


def test_the_validation_share_rule() -> None:
    small, large = vector_dataset(100, 2), vector_dataset(200, 2)
    share, why = validation_share(None, small)
    assert share == 0.0 and "too few" in why  # 10 items < 10 per class for 2 classes
    assert validation_share(None, large) == (0.1, None)  # 20 items: 10 per class
    assert validation_share(0.25, small) == (0.25, None)  # as configured, whatever the size
    assert validation_share(0.0, large) == (0.0, "data.val_fraction = 0")
    assert MIN_VAL_PER_CLASS == 10


def test_a_configured_validation_fraction_is_held_out_of_the_source(config: Config) -> None:
    data = load_run_data(config(**{"data.val_fraction": 0.2}), 0)
    assert (len(data.source_train), len(data.source_val)) == (72, 18) and data.val_note is None


def test_dense_vectors_into_an_mlp_are_standardised_per_domain(config: Config) -> None:
    data = load_run_data(config(), 0)
    assert data.standardize[0] == "per-domain" and data.standardize[1].startswith("auto: dense")
    assert data.target_eval.meta.get("standardized") == "per-domain"  # mapped onto the source's statistics
    assert data.source_train.meta.get("standardized") is None  # the model's first layer standardises the source
    kept = load_run_data(config(**{"model.backbone_kwargs.standardize": "none"}), 0)
    assert kept.standardize == ("none", "model.backbone_kwargs.standardize")
    assert kept.target_eval.meta.get("standardized") is None


def test_what_a_source_only_model_is_trained_on(config: Config) -> None:
    data = load_run_data(config(**{"data.target_labels_per_class": 2}), 0)
    assert trained_on(data) == [data.source_train, data.source_val, data.target_labelled]


def test_batch_statistics_need_two_items_per_domain(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann"})
    data = load_run_data(cfg, 0)
    check_sizes(cfg, data)  # 90 and 90: fine
    one = data.source_train.subset(np.array([0]))
    with pytest.raises(DataError, match="has 1 training item"):
        check_sizes(cfg, type(data)(**{**data.__dict__, "source_train": one}))
    check_sizes(config(), type(data)(**{**data.__dict__, "source_train": one}))  # no method, no bottleneck: fine


def test_several_sources_load_as_one_dataset_with_their_index(domains: tuple[str, str]) -> None:
    both = load_sources(list(domains), "train", None)
    assert len(both) == 180 and both.emit == ("source_index",)
    assert np.bincount(both.meta["source_index"]).tolist() == [90, 90]
    assert load_sources([domains[0]], "train", None).emit == ()  # one source: the dataset itself
