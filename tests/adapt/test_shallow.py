"""Shallow adapters: each undoes the kind of shift it is built for, on seeded synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from helpers import two_blobs
from transferkit.adapt.shallow import CoralAligner, ImportanceReweighter, OTMapper, SubspaceAligner
from transferkit.errors import DataError


def _two_classes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """400 items of two classes at x = -2 and x = 2 (float64), drawn from ``rng``."""
    return two_blobs(400, rng, centre=2.0, noise=0.6, dtype=None)


def _rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return x @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]).T


def _accuracy(xs, ys, xt, yt, sample_weight=None) -> float:
    clf = LogisticRegression().fit(xs, ys, sample_weight=sample_weight)
    return float((clf.predict(xt) == yt).mean())


def test_coral_recolours_the_source_with_the_target_covariance() -> None:
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(500, 3))
    xt = rng.normal(size=(500, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 3.0]])
    mapped = CoralAligner(eps=1e-6).fit(xs, xt).transform_source(xs)
    assert np.allclose(np.cov(mapped.T), np.cov(xt.T), atol=1e-3)


def test_subspace_alignment_follows_a_rotated_class_axis() -> None:
    rng = np.random.default_rng(0)
    xs, ys = _two_classes(rng)  # the classes differ along the first principal axis
    xt, yt = _two_classes(rng)
    xt = _rotate(xt, 75.0)
    sa = SubspaceAligner(n_components=1).fit(xs, xt)  # align the 1-D principal subspaces
    before = _accuracy(xs, ys, xt, yt)
    after = _accuracy(sa.transform_source(xs), ys, sa.transform_target(xt), yt)
    assert before < 0.8 and after > 0.95


def test_ot_mapping_undoes_a_translation() -> None:
    rng = np.random.default_rng(0)
    xs, ys = _two_classes(rng)
    xt, yt = _two_classes(rng)
    xt = xt + np.array([2.0, 0.0])  # the target moved along the class axis
    ot = OTMapper(reg=0.5).fit(xs, xt)
    before = _accuracy(xs, ys, xt, yt)
    after = _accuracy(ot.transform_source(xs), ys, ot.transform_target(xt), yt)
    assert before < 0.8 and after > 0.95


def test_importance_weights_favour_source_points_near_the_target() -> None:
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(600, 1))
    xt = rng.normal(size=(600, 1)) + 1.5
    w = ImportanceReweighter(max_weight=50).fit(xs, xt).weights(xs)
    assert w.shape == (600,) and (w > 0).all()
    assert np.corrcoef(xs[:, 0], w)[0, 1] > 0.5  # weight grows towards the target's side
    assert w.max() <= 50


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(DataError, match="widths"):
        CoralAligner().fit(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(DataError, match="NaN"):
        SubspaceAligner().fit(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(DataError, match="at least 2"):
        OTMapper().fit(np.zeros((1, 2)), np.zeros((5, 2)))
