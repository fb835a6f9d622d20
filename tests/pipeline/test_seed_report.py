"""Step 5, ``pipeline/report.py`` alone: the report's header (what ran, how the checkpoint was chosen, what the
target labels did), the feature map's sample, and a single seed's summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from transferkit.config import RunConfig
from transferkit.pipeline.data import load_run_data
from transferkit.pipeline.model import build_model
from transferkit.pipeline.report import (
    FEATURE_MAP_ITEMS,
    _leading_components,
    _sample,
    report_header,
    save_feature_map,
    single_summary,
)
from transferkit.runs import RunDir
from transferkit.tasks import KIND_SCALARS

Config = Callable[..., RunConfig]


def test_the_header_says_what_ran_and_how_the_checkpoint_was_chosen(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann"})
    header = report_header(cfg, load_run_data(cfg, 0))
    assert (header["backbone"], header["strategy"], header["method"], header["classes"]) == \
        ("mlp", "full", "dann", ["a", "b"])
    assert header["selection"].startswith("last epoch (no validation split: the source's 90 items are too few")
    assert header["selection"].endswith("target labels are used only to score the selected model")
    assert header["standardize"].startswith("per-domain (auto: dense")
    assert "heads" not in header and "multi_source" not in header


def test_the_header_of_a_validated_run_with_labelled_target_items(config: Config) -> None:
    cfg = config(**{"data.val_fraction": 0.2, "data.target_labels_per_class": 2,
                    "model.backbone_kwargs.standardize": "none"})
    selection = report_header(cfg, load_run_data(cfg, 0))["selection"]
    assert selection.startswith("best source-validation accuracy; 2 labelled target item(s) per class")


def test_a_plain_linear_probe_is_solved_not_selected(config: Config) -> None:
    cfg = config(**{"finetune.strategy": "linear-probe", "train.epochs": None})
    selection = report_header(cfg, load_run_data(cfg, 0))["selection"]
    assert selection.startswith("none: the linear probe is solved by L-BFGS")


def test_the_feature_map_samples_the_same_items_every_time() -> None:
    assert _sample(10).tolist() == list(range(10))  # fewer than the limit: all of them
    picked = _sample(5000)
    assert len(picked) == FEATURE_MAP_ITEMS and np.all(np.diff(picked) > 0)
    assert np.array_equal(picked, _sample(5000)) and not np.array_equal(picked, _sample(5000, seed=1))


def test_wide_features_are_projected_onto_their_leading_components() -> None:
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(30, 80)), rng.normal(size=(20, 80))
    s, t = _leading_components(source, target)
    assert s.shape == (30, 50) and t.shape == (20, 50) and s.dtype == np.float32
    narrow_s, narrow_t = _leading_components(source[:, :5], target[:, :5])
    assert np.allclose(narrow_s, source[:, :5]) and np.allclose(narrow_t, target[:, :5])  # kept as they are


def test_a_source_only_run_maps_its_features_after_training_only(config: Config, tmp_path: Path) -> None:
    cfg = config()
    data = load_run_data(cfg, 0)
    torch.manual_seed(0)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    save_feature_map(run, build_model(cfg, data), data, None, {"batch_size": 64, "num_workers": 0, "device": "cpu"})
    saved = np.load(run.path / "feature_map.npz")
    # no validation split and no target train split: the evaluation splits, 30 items each, 8 features
    assert saved["after_source"].shape == (30, 8) and saved["after_target"].shape == (30, 8)
    assert str(saved["source_split"]) == "source evaluation" and str(saved["target_split"]) == "target evaluation"
    assert "before_source" not in saved and "adapt.method none" in str(saved["note"])


def test_one_seeds_summary_is_its_scores_with_no_spread() -> None:
    scores = {name: 0.25 * (i + 1) for i, (name, *_) in enumerate(KIND_SCALARS["classification"])}
    summary = single_summary({"evaluations": {"target": {**scores, "n": 4}}})
    assert summary["target"] == {m: {"mean": v, "std": 0.0, "values": [v]} for m, v in scores.items()}
