"""Domain-gap measures against direct computations and their known properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferkit.errors import DataError
from transferkit.measure.discrepancy import (
    MEASURES,
    coral_distance,
    measure_gap,
    median_bandwidths,
    mmd2,
    mmd_test,
    per_class_gap,
    proxy_a_distance,
    sliced_wasserstein,
    wasserstein,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _direct_mmd2(x: np.ndarray, y: np.ndarray, sigma2: np.ndarray) -> float:
    """Gretton's unbiased MMD², written out pair by pair."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        d = float(((a - b) ** 2).sum())
        return float(np.mean([math.exp(-d / s) for s in sigma2]))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_blocked_mmd2_equals_the_direct_sum() -> None:
    x, y = _rng(0).normal(size=(23, 3)), _rng(1).normal(size=(17, 3)) + 0.5
    sigma2 = median_bandwidths(x, y).numpy()
    expected = _direct_mmd2(x, y, sigma2)
    for block in (4, 7, 2048):  # tiles that do and do not divide the sample sizes
        assert mmd2(x, y, block_size=block) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_mmd2_of_identical_samples_is_about_zero_and_grows_with_the_shift() -> None:
    x = _rng(0).normal(size=(500, 4))
    assert abs(mmd2(x, x)) < 0.01
    shifts = [mmd2(x, _rng(1).normal(size=(500, 4)) + s) for s in (0.0, 0.5, 1.0)]
    assert shifts[0] < shifts[1] < shifts[2]


def test_linear_estimator_agrees_in_sign_and_rough_size() -> None:
    x, y = _rng(0).normal(size=(2000, 2)), _rng(1).normal(size=(2000, 2)) + 1.0
    lin, quad = mmd2(x, y, estimator="linear"), mmd2(x, y)
    assert lin > 0 and quad > 0 and abs(lin - quad) < 0.5 * quad
    with pytest.raises(ValueError, match="estimator"):
        mmd2(x, y, estimator="cubic")


def test_permutation_test_matches_the_blocked_statistic_and_detects_a_shift() -> None:
    x, y = _rng(0).normal(size=(60, 3)), _rng(1).normal(size=(40, 3)) + 1.0
    gap = mmd_test(x, y, num_permutations=200, seed=0)
    assert gap.value == pytest.approx(mmd2(x, y), rel=1e-9)  # no subsampling below max_samples
    assert gap.p_value == pytest.approx(1 / 201)  # no permutation reaches a real shift
    assert gap.samples == (60, 40)


def test_false_positive_rate_under_the_null_is_about_alpha() -> None:
    rng = _rng(42)
    rejections = 0
    for i in range(200):
        pooled = rng.normal(size=(60, 3))
        rejections += mmd_test(pooled[:30], pooled[30:], num_permutations=100, seed=i).p_value <= 0.05
    assert 0.02 <= rejections / 200 <= 0.09


def test_proxy_a_distance_is_near_0_for_one_domain_and_near_2_for_separate_ones() -> None:
    x = _rng(0).normal(size=(400, 5))
    assert proxy_a_distance(x, _rng(1).normal(size=(300, 5))) < 0.3
    assert proxy_a_distance(x, _rng(1).normal(size=(300, 5)) + 4.0) > 1.9


def test_coral_distance_against_numpy() -> None:
    x = _rng(0).normal(size=(100, 3))
    y = _rng(1).normal(size=(80, 3)) * np.array([1.0, 2.0, 0.5])
    cs, ct = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    assert coral_distance(x, y) == pytest.approx(((cs - ct) ** 2).sum() / (4 * 9), rel=1e-9)
    assert coral_distance(x, x + 5.0) == pytest.approx(0.0, abs=1e-12)


def test_wasserstein_of_a_translated_sample_is_the_translation_length() -> None:
    x = _rng(0).normal(size=(50, 2))
    v = np.array([3.0, 4.0])
    assert wasserstein(x, x + v) == pytest.approx(5.0, rel=1e-6)
    x1 = _rng(1).normal(size=(300, 1))
    assert sliced_wasserstein(x1, x1 - 2.0, projections=10) == pytest.approx(2.0, rel=1e-6)


def test_measure_gap_reports_every_measure_with_sizes() -> None:
    x, y = _rng(0).normal(size=(300, 3)), _rng(1).normal(size=(200, 3)) + 1.0
    gaps = measure_gap(x, y, max_samples=150, num_permutations=50)
    assert [g.name for g in gaps] == list(MEASURES)
    by = {g.name: g for g in gaps}
    assert by["mmd2"].samples == (150, 150) and by["mmd2"].p_value is not None and by["mmd2"].p_value < 0.05
    assert by["proxy_a"].samples == (150, 150) and by["coral"].samples == (300, 200)
    assert all(g.p_value is None for g in gaps if g.name != "mmd2") and all(g.meaning for g in gaps)
    assert set(by["mmd2"].to_dict()) == {"name", "value", "p_value", "meaning", "samples"}
    with pytest.raises(ValueError, match="unknown measure"):
        measure_gap(x, y, measures=["kl"])


def test_per_class_gap_with_labels_and_pseudo_labels() -> None:
    rng = _rng(0)
    xs = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 6.0])
    ys = np.r_[np.zeros(40, int), np.ones(40, int)]
    xt = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(3, 2)) + 6.0])  # class 1 barely present
    yt = np.r_[np.zeros(40, int), np.ones(3, int)]
    with_labels = per_class_gap(xs, ys, xt, yt, classes=["a", "b"])
    assert with_labels["b"] is None and with_labels["a"] is not None and abs(with_labels["a"]) < 0.1
    pseudo = per_class_gap(xs, ys, xt, measure="coral")
    assert set(pseudo) == {"0", "1"} and pseudo["1"] is None


@pytest.mark.parametrize(
    ("source", "target", "pattern"),
    [
        (np.zeros(5), np.zeros((5, 1)), "expected feature vectors"),
        (np.zeros((1, 2)), np.zeros((5, 2)), "at least 2 samples"),
        (np.full((4, 2), np.nan), np.zeros((5, 2)), "NaN"),
        (np.zeros((4, 2)), np.zeros((5, 3)), "differ in width"),
    ],
)
def test_bad_input_is_a_clear_data_error(source: np.ndarray, target: np.ndarray, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        mmd2(source, target)


def test_bandwidths_follow_the_median_heuristic() -> None:
    x, y = _rng(0).normal(size=(30, 2)), _rng(1).normal(size=(30, 2))
    z = torch.from_numpy(np.concatenate([x, y]))
    sq = torch.cdist(z, z).pow(2)
    median = sq[~torch.eye(60, dtype=torch.bool)].median()
    bw = median_bandwidths(x, y, num_kernels=3, mult=2.0)
    assert torch.allclose(bw, median * torch.tensor([0.5, 1.0, 2.0], dtype=bw.dtype))
