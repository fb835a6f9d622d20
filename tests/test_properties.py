"""Property-based tests (hypothesis) for the adaptation losses, the domain-gap and transferability measures,
the classification metrics and config parsing.

Reproducibility: every test runs under ``settings(database=None, derandomize=True)`` (see ``_PROFILE``): the
examples are derived from each test's name, not from a random seed or a local example database, so CI and a
developer's machine draw the same inputs. ``deadline=None``: the first call of a torch or POT function pays
for lazy imports and would trip hypothesis' per-example deadline.

What is asserted, and what deliberately is not (properties a definition does not have):

- MMD² (``mmd2_unbiased``) with equal batch sizes is Gretton et al.'s U-statistic over *pairs* ``(x_i, y_i)``
  (eq. 3 of the JMLR paper): it is exactly 0 for identical batches, symmetric, and invariant to one
  permutation applied to both batches, but *not* to permuting only one of them. With unequal sizes the cross
  term runs over all pairs, so each batch may be permuted on its own. It can be slightly negative.
- ``mmd2`` (the measure) always uses the all-pairs cross term: invariant to permuting either sample, and for
  identical samples it equals ``-(2/m)·(1 - mean off-diagonal kernel)`` (in ``[-2/m, 0]``), not 0.
- The linear-time MMD pairs consecutive rows, so it is not invariant to row order; it is symmetric and
  exactly 0 on identical batches.
- The adversarial losses are not symmetric in (source, target): the domain BCE is symmetric only under the
  label swap ``(d_s, d_t) -> (-d_t, -d_s)``; MDD is only checked for being finite, non-negative and
  order-invariant.
- The proxy A-distance depends on row order (its cross-validation folds are not shuffled): only its range is
  checked.
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import BaseModel

from transferkit.adapt.losses import (
    afn_loss,
    bnm_loss,
    coral_loss,
    domain_accuracy,
    domain_bce,
    entropy_loss,
    entropy_weights,
    jmmd2_unbiased,
    mcc_loss,
    mdd_loss,
    mmd2_linear,
    mmd2_unbiased,
)
from transferkit.adapt.losses.mmd import multi_gaussian_kernel
from transferkit.config import AdaptConfig, FinetuneConfig, RunConfig, TrainConfig, parse_config, parse_override
from transferkit.errors import ConfigError
from transferkit.evaluate.metrics import classification_metrics, mean_std
from transferkit.measure import transferability as tr
from transferkit.measure.discrepancy import (
    coral_distance,
    mmd2,
    mmd_test,
    proxy_a_distance,
    sliced_wasserstein,
    wasserstein,
)

_PROFILE = settings(
    max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
FEW = settings(_PROFILE, max_examples=15)
BOUND = 100.0  # feature values in [-BOUND, BOUND]: "sensible" activations, far from float overflow


# -- strategies --------------------------------------------------------------------------------------------------
def _finite32(bound: float = BOUND) -> st.SearchStrategy[float]:
    return st.floats(-bound, bound, width=32, allow_nan=False, allow_infinity=False)


@st.composite
def _matrix(draw: st.DrawFn, rows: int, dims: int, bound: float = BOUND) -> np.ndarray:
    """A (rows, dims) array of float32 values, sometimes with a constant column and/or a duplicated row, sometimes
    made of only 1-3 distinct rows (a collapsed batch: most pairs at distance 0, the median bandwidth at its floor).

    Returned as float64, half the time scaled by 1/3: float32 values have 24-bit mantissas, so in float64 their
    products and short sums are exact and rounding-sensitive code (``‖a‖² + ‖b‖² - 2a·b``) would never be
    exercised; scaled, they use the whole mantissa as computed features do.
    """
    x = draw(arrays(np.float32, (rows, dims), elements=_finite32(bound)))
    if draw(st.integers(0, 3)) == 0:
        x = x[draw(st.lists(st.integers(0, min(rows, 3) - 1), min_size=rows, max_size=rows))]
    if draw(st.booleans()):
        x[:, draw(st.integers(0, dims - 1))] = draw(_finite32(bound))
    if rows >= 2 and draw(st.booleans()):
        i, j = draw(st.integers(0, rows - 1)), draw(st.integers(0, rows - 1))
        x[j] = x[i]
    return x.astype(np.float64) * draw(st.sampled_from([1.0, 1.0 / 3.0]))


def _collapsed(pool: list[list[float]], pattern: list[int]) -> np.ndarray:
    """Rows ``pool[i]`` for ``i`` in ``pattern``: a batch with only ``len(pool)`` distinct rows."""
    return np.array(pool, dtype=np.float64)[pattern]


# Regression examples for the rounding noise of ``torch.cdist`` at a collapsed bandwidth (fixed in
# adapt/losses/mmd.py, ``pairwise_sq_dists``): MMD² of this batch with itself was -0.0036 instead of 0, and the
# measure's MMD² of the pair below changed by 0.003 when source and target were swapped.
COLLAPSED_16 = _collapsed([[25 / 3, 19 / 3], [5.0, 8 / 3]], [0] * 5 + [1] * 11)
COLLAPSED_PAIR = (
    _collapsed([[14 / 3, 5.0], [22 / 3, 28 / 3]], [0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1,
                                                    0, 0, 1, 0, 0, 0, 0, 1, 0]),
    _collapsed([[14 / 3, 5.0], [22 / 3, 28 / 3]], [0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1,
                                                    0, 1, 0, 0, 1, 0, 1]),
)


@st.composite
def features(draw: st.DrawFn, min_rows: int = 2, max_rows: int = 16, max_dims: int = 8) -> np.ndarray:
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, max_dims))
    return draw(_matrix(n, d))


@st.composite
def feature_pairs(
    draw: st.DrawFn, min_rows: int = 2, max_rows: int = 16, max_dims: int = 8, equal_rows: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Source and target features of the same width; ``equal_rows``: same batch size (True), different (False)."""
    d = draw(st.integers(1, max_dims))
    m = draw(st.integers(min_rows, max_rows))
    if equal_rows:
        n = m
    elif equal_rows is False:
        n = draw(st.integers(min_rows, max_rows).filter(lambda k: k != m))
    else:
        n = draw(st.integers(min_rows, max_rows))
    return draw(_matrix(m, d)), draw(_matrix(n, d))


def _perm(n: int) -> st.SearchStrategy[np.ndarray]:
    return st.permutations(range(n)).map(np.array)


@st.composite
def labelled(draw: st.DrawFn, max_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) and labels 0..C-1 with every class present (what the transferability scores require)."""
    c = draw(st.integers(2, max_classes))
    n = draw(st.integers(max(c, 3), 16))
    extra = draw(st.lists(st.integers(0, c - 1), min_size=n - c, max_size=n - c))
    y = np.array(draw(st.permutations(list(range(c)) + extra)), dtype=np.int64)
    return draw(_matrix(n, draw(st.integers(1, 6)))), y


@st.composite
def logits_and_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    c = draw(st.integers(2, 6))
    n = draw(st.integers(1, 24))
    return draw(_matrix(n, c, bound=20.0)), np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))


def t64(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def close(a: float, b: float, rel: float = 1e-5, abs_: float = 1e-9) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


def scale(*xs: np.ndarray) -> float:
    """The largest |value|, at least 1: absolute tolerances grow with the data (rounding in ‖x‖² and x xᵀ)."""
    return max(1.0, *(float(np.abs(x).max()) for x in xs))


# == losses ======================================================================================================
@_PROFILE
@given(feature_pairs())
def test_mmd_losses_are_finite_bounded_and_symmetric(pair: tuple[np.ndarray, np.ndarray]) -> None:
    xs, xt = t64(pair[0]), t64(pair[1])
    u, u_swapped = float(mmd2_unbiased(xs, xt)), float(mmd2_unbiased(xt, xs))
    assert math.isfinite(u) and -2.0 - 1e-9 <= u <= 2.0 + 1e-9  # kernel values lie in [0, 1]
    assert close(u, u_swapped, abs_=1e-12)
    j = float(jmmd2_unbiased([xs], [xt]))
    assert close(j, u, abs_=1e-12)  # one layer: the joint MMD is the MMD
    if min(len(xs), len(xt)) >= 2:
        lin, lin_swapped = float(mmd2_linear(xs, xt)), float(mmd2_linear(xt, xs))
        assert math.isfinite(lin) and -2.0 - 1e-9 <= lin <= 2.0 + 1e-9
        assert close(lin, lin_swapped, abs_=1e-12)


@_PROFILE
@given(features())
@example(COLLAPSED_16)
def test_mmd_losses_of_a_batch_with_itself_are_zero(x: np.ndarray) -> None:
    xt = t64(x)
    # equal sizes: the pairwise U-statistic, whose terms cancel pair by pair
    assert abs(float(mmd2_unbiased(xt, xt.clone()))) <= 1e-9
    assert abs(float(jmmd2_unbiased([xt, xt.softmax(1)], [xt.clone(), xt.softmax(1)]))) <= 1e-9
    assert float(mmd2_linear(xt, xt.clone())) == 0.0


@_PROFILE
@given(st.data())
def test_mmd_loss_is_invariant_to_the_order_of_items(data: st.DataObject) -> None:
    xs, xt = data.draw(feature_pairs())
    m, n = len(xs), len(xt)
    ps = data.draw(_perm(m))
    # equal sizes pair x_i with y_i (Gretton's eq. 3): only a permutation of both batches at once leaves it alone
    pt = ps if m == n else data.draw(_perm(n))
    base = float(mmd2_unbiased(t64(xs), t64(xt)))
    permuted = float(mmd2_unbiased(t64(xs[ps]), t64(xt[pt])))
    assert close(base, permuted, abs_=1e-10)
    joint = float(jmmd2_unbiased([t64(xs), t64(xs[:, :1])], [t64(xt), t64(xt[:, :1])]))
    joint_p = float(jmmd2_unbiased([t64(xs[ps]), t64(xs[ps][:, :1])], [t64(xt[pt]), t64(xt[pt][:, :1])]))
    assert close(joint, joint_p, abs_=1e-10)


@_PROFILE
@given(st.data())
def test_coral_loss_is_symmetric_zero_on_itself_and_order_and_shift_invariant(data: st.DataObject) -> None:
    xs, xt = data.draw(feature_pairs())
    ps, pt = data.draw(_perm(len(xs))), data.draw(_perm(len(xt)))
    shift = data.draw(arrays(np.float64, (xs.shape[1],), elements=st.floats(-BOUND, BOUND)))
    tol = 1e-9 * scale(xs, xt, shift) ** 4  # covariances are quadratic, the loss is their square
    value = float(coral_loss(t64(xs), t64(xt)))
    assert math.isfinite(value) and value >= 0.0
    assert float(coral_loss(t64(xt), t64(xs))) == value
    assert float(coral_loss(t64(xs), t64(xs).clone())) == 0.0
    assert close(float(coral_loss(t64(xs[ps]), t64(xt[pt]))), value, abs_=tol)
    assert close(float(coral_loss(t64(xs) + t64(shift), t64(xt))), value, rel=1e-4, abs_=tol)


@_PROFILE
@given(st.data())
def test_prediction_losses_are_finite_bounded_and_order_invariant(data: st.DataObject) -> None:
    logits = data.draw(features(max_dims=8).filter(lambda a: a.shape[1] >= 2))
    n, c = logits.shape
    perm = data.draw(_perm(n))
    z, zp = t64(logits), t64(logits[perm])

    ent = float(entropy_loss(z))
    assert -1e-12 <= ent <= math.log(c) + 1e-9
    assert close(float(entropy_loss(zp)), ent, abs_=1e-12)

    bnm = float(bnm_loss(z))  # -‖P‖_*/N with 0 < ‖P‖_* <= Σ_i ‖p_i‖ <= N
    assert -1.0 - 1e-9 <= bnm < 0.0
    assert close(float(bnm_loss(zp)), bnm, abs_=1e-12)

    mcc = float(mcc_loss(z))  # rows of the class-confusion matrix sum to 1: (C - trace)/C in [0, 1]
    assert -1e-12 <= mcc <= 1.0 + 1e-12
    assert close(float(mcc_loss(zp)), mcc, abs_=1e-12)
    cols = data.draw(_perm(c))  # renaming the classes renames the rows and columns of the confusion matrix
    assert close(float(mcc_loss(z[:, cols])), mcc, abs_=1e-12)

    w = entropy_weights(z)
    assert torch.isfinite(w).all() and (w > 0).all() and abs(float(w.mean()) - 1.0) < 1e-9
    assert torch.allclose(entropy_weights(zp), w[perm], rtol=1e-9, atol=1e-12)


@_PROFILE
@given(features(), st.floats(0.01, 10.0))
def test_afn_loss_is_delta_squared(x: np.ndarray, delta: float) -> None:
    # the target norm is the detached norm + Δr, so the value is Δr² whatever the features
    assert close(float(afn_loss(t64(x), delta)), delta**2, rel=1e-6, abs_=1e-6 * scale(x))


@_PROFILE
@given(st.data())
def test_loss_gradients_are_finite(data: st.DataObject) -> None:
    """Constant columns and duplicated rows (zero distances, repeated singular values) must not give NaN grads."""
    xs, xt = data.draw(feature_pairs(equal_rows=data.draw(st.booleans())))
    for loss in (mmd2_unbiased, mmd2_linear, coral_loss):
        a, b = t64(xs).requires_grad_(), t64(xt).requires_grad_()
        loss(a, b).backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all(), loss.__name__
    if xs.shape[1] >= 2:
        for loss in (entropy_loss, bnm_loss, mcc_loss):
            z = t64(xs / BOUND * 10.0).requires_grad_()
            loss(z).backward()
            assert torch.isfinite(z.grad).all(), loss.__name__


@_PROFILE
@given(st.data())
def test_domain_bce_is_label_swap_symmetric_and_order_invariant(data: st.DataObject) -> None:
    ds = data.draw(arrays(np.float64, data.draw(st.integers(1, 16)), elements=st.floats(-50, 50)))
    dt = data.draw(arrays(np.float64, data.draw(st.integers(1, 16)), elements=st.floats(-50, 50)))
    s, t = torch.from_numpy(ds), torch.from_numpy(dt)
    loss = float(domain_bce(s, t))
    assert math.isfinite(loss) and loss >= 0.0
    # not symmetric in (source, target); symmetric when the domains swap *labels* too (logit d -> -d)
    assert close(float(domain_bce(-t, -s)), loss, abs_=1e-12)
    ps, pt = data.draw(_perm(len(ds))), data.draw(_perm(len(dt)))
    assert close(float(domain_bce(s[ps], t[pt])), loss, abs_=1e-12)
    acc = domain_accuracy(s, t)
    assert 0.0 <= acc <= 1.0 and acc == domain_accuracy(s[ps], t[pt])


@_PROFILE
@given(st.data())
def test_mdd_loss_is_finite_non_negative_and_order_invariant(data: st.DataObject) -> None:
    c = data.draw(st.integers(2, 6))
    ns, nt = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    ls, adv_s = (t64(data.draw(_matrix(ns, c, bound=30.0))) for _ in range(2))
    lt, adv_t = (t64(data.draw(_matrix(nt, c, bound=30.0))) for _ in range(2))
    margin = data.draw(st.floats(0.1, 8.0))
    value = float(mdd_loss(ls, adv_s, lt, adv_t, margin))
    assert math.isfinite(value) and value >= 0.0
    ps, pt = data.draw(_perm(ns)), data.draw(_perm(nt))
    assert close(float(mdd_loss(ls[ps], adv_s[ps], lt[pt], adv_t[pt], margin)), value, abs_=1e-10)


# == domain-gap measures =========================================================================================
@_PROFILE
@given(feature_pairs(), st.randoms(use_true_random=False))
@example(COLLAPSED_PAIR, random.Random(0))
def test_mmd2_measure_is_finite_symmetric_and_order_invariant(
    pair: tuple[np.ndarray, np.ndarray], rnd: random.Random
) -> None:
    xs, xt = pair
    ps, pt = np.array(rnd.sample(range(len(xs)), len(xs))), np.array(rnd.sample(range(len(xt)), len(xt)))
    value = mmd2(xs, xt)
    assert math.isfinite(value) and -2.0 - 1e-9 <= value <= 2.0 + 1e-9
    assert close(mmd2(xt, xs), value, abs_=1e-10)
    assert close(mmd2(xs[ps], xt[pt]), value, abs_=1e-10)
    assert close(mmd2(xs, xt, block_size=3), value, abs_=1e-10)  # tiling changes nothing but the summation order


@_PROFILE
@given(features())
def test_mmd2_measure_of_a_sample_with_itself(x: np.ndarray) -> None:
    """All-pairs cross term: Σ_{i≠j}k/(m(m-1))·2 - 2(Σ_{i≠j}k + m)/m² = -(2/m)(1 - mean_{i≠j} k), in [-2/m, 0]."""
    m = len(x)
    k = multi_gaussian_kernel(t64(np.concatenate([x, x])))[:m, :m]  # the same pooled bandwidths as mmd2(x, x)
    mean_off = float((k.sum() - k.diagonal().sum()) / (m * (m - 1)))
    value = mmd2(x, x)
    assert close(value, -(2.0 / m) * (1.0 - mean_off), abs_=1e-10)
    assert -2.0 / m - 1e-12 <= value <= 1e-12


@FEW
@given(feature_pairs(max_rows=10, max_dims=4))
def test_mmd_test_statistic_is_mmd2_and_its_p_value_a_probability(pair: tuple[np.ndarray, np.ndarray]) -> None:
    xs, xt = pair
    gap = mmd_test(xs, xt, num_permutations=50)
    assert close(gap.value, mmd2(xs, xt), abs_=1e-10)
    assert gap.p_value is not None and 1.0 / 51 - 1e-12 <= gap.p_value <= 1.0
    assert gap.samples == (len(xs), len(xt))


@_PROFILE
@given(st.data())
def test_coral_distance_is_symmetric_zero_on_itself_and_order_invariant(data: st.DataObject) -> None:
    xs, xt = data.draw(feature_pairs())
    ps, pt = data.draw(_perm(len(xs))), data.draw(_perm(len(xt)))
    value = coral_distance(xs, xt)
    assert math.isfinite(value) and value >= 0.0
    assert coral_distance(xt, xs) == value
    assert coral_distance(xs, xs.copy()) == 0.0
    assert close(coral_distance(xs[ps], xt[pt]), value, abs_=1e-9 * scale(xs, xt) ** 4)


@_PROFILE
@given(st.data())
def test_wasserstein_is_a_metric_on_samples(data: st.DataObject) -> None:
    d = data.draw(st.integers(1, 6))
    xs, xt, xu = (data.draw(_matrix(data.draw(st.integers(2, 12)), d)) for _ in range(3))
    ps, pt = data.draw(_perm(len(xs))), data.draw(_perm(len(xt)))
    # POT's Euclidean cost is sqrt(‖a‖² + ‖b‖² - 2a·b): identical rows cost up to about √ε·‖x‖, not 0
    tol = 1e-7 * math.sqrt(d) * scale(xs, xt, xu)
    value = wasserstein(xs, xt)
    assert math.isfinite(value) and value >= 0.0
    assert close(wasserstein(xt, xs), value, abs_=tol)
    assert abs(wasserstein(xs, xs.copy())) <= tol
    assert close(wasserstein(xs[ps], xt[pt]), value, abs_=tol)
    assert value <= wasserstein(xs, xu) + wasserstein(xu, xt) + tol  # triangle inequality
    shift = data.draw(arrays(np.float64, (d,), elements=st.floats(-BOUND, BOUND)))
    # a translation moves every point by ‖a‖, and no plan does better (test with the linear potential a/‖a‖)
    assert close(wasserstein(xs, xs + shift), float(np.linalg.norm(shift)), rel=1e-6, abs_=tol * scale(shift))


@_PROFILE
@given(st.data())
def test_sliced_wasserstein_is_symmetric_zero_on_itself_and_order_invariant(data: st.DataObject) -> None:
    xs, xt = data.draw(feature_pairs())
    ps, pt = data.draw(_perm(len(xs))), data.draw(_perm(len(xt)))
    tol = 1e-7 * scale(xs, xt)
    value = sliced_wasserstein(xs, xt, projections=20)
    assert math.isfinite(value) and value >= 0.0
    assert close(sliced_wasserstein(xt, xs, projections=20), value, abs_=tol)
    assert abs(sliced_wasserstein(xs, xs.copy(), projections=20)) <= tol
    assert close(sliced_wasserstein(xs[ps], xt[pt], projections=20), value, abs_=tol)


@FEW
@given(feature_pairs(min_rows=5, max_rows=12, max_dims=4))
def test_proxy_a_distance_lies_in_its_range(pair: tuple[np.ndarray, np.ndarray]) -> None:
    value = proxy_a_distance(*pair)
    assert math.isfinite(value) and -2.0 <= value <= 2.0


# == transferability scores ======================================================================================
def _source_probs(data: st.DataObject, n: int) -> np.ndarray:
    z = data.draw(st.integers(1, 5))
    raw = data.draw(arrays(np.float64, (n, z), elements=st.floats(0.0, 1.0)))
    raw[:, 0] += 1e-3  # rows may not be all zero
    return raw / raw.sum(1, keepdims=True)


@st.composite
def _relabelled(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels, an order of the items and a renaming of the classes."""
    f, y = draw(labelled())
    return f, y, draw(_perm(len(y))), np.array(draw(st.permutations(range(int(y.max()) + 1))))


# Regression example (fixed in measure/transferability.py, ``_tridiagonalize``): duplicated rows make FFᵀ singular;
# its zero eigenvalues came out as rounding noise (1e-13 or 3e-14 depending on the row order), and with class 3's
# search stopped at t = 1e-12·σ_max that noise moved LogME by 1.3e-5 (relative) when two items swapped places.
LOGME_SINGULAR = (
    np.array([[0, 5.3125, 7, 7, 7, 7], [0, 7, 0, 7, 7, 7], [0, 5.3125, 7, 7, 7, 7], [0, 7, 7, 7, 7, 7],
              [0, 7, 0, 7, 7, 7]], dtype=np.float64),
    np.array([0, 1, 2, 3, 0]), np.array([0, 1, 2, 4, 3]), np.arange(4),
)


@_PROFILE
@given(_relabelled())
@example(LOGME_SINGULAR)
def test_feature_scores_are_finite_and_invariant_to_item_order_and_label_names(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    f, y, perm, rename = case
    c = int(y.max()) + 1
    for name, fn in (("logme", tr.logme), ("hscore", tr.hscore), ("gbc", tr.gbc), ("transrate", tr.transrate)):
        value = fn(f, y)
        assert math.isfinite(value), name
        assert close(fn(f[perm], y[perm]), value, rel=1e-5, abs_=1e-8), name
        assert close(fn(f, rename[y]), value, rel=1e-5, abs_=1e-8), name
    assert -c * (c - 1) - 1e-9 <= tr.gbc(f, y) <= 0.0
    assert -1e-9 <= tr.hscore(f, y) <= min(c - 1, f.shape[1]) + 1e-6


@_PROFILE
@given(st.data())
def test_leep_and_nce_are_at_most_zero_and_order_invariant(data: st.DataObject) -> None:
    _, y = data.draw(labelled())
    n = len(y)
    probs = _source_probs(data, n)
    perm = data.draw(_perm(n))
    for name, fn in (("leep", tr.leep), ("nce", tr.nce)):
        value = fn(probs, y)
        assert math.isfinite(value) and value <= 1e-12, name
        assert close(fn(probs[perm], y[perm]), value, abs_=1e-12), name
    hard = probs.argmax(1)
    if len(np.unique(hard % 2)) == 2:  # labels that are a function of the source prediction: nothing is uncertain
        assert tr.nce(hard, hard % 2) == 0.0 and tr.leep(hard, hard % 2) == 0.0


# == classification metrics ======================================================================================
@_PROFILE
@given(st.data())
def test_classification_metrics_lie_in_range_and_ignore_item_order(data: st.DataObject) -> None:
    logits, labels = data.draw(logits_and_labels())
    n, c = logits.shape
    classes = [f"c{i}" for i in range(c)]
    m = classification_metrics(torch.from_numpy(logits), torch.from_numpy(labels), classes)
    for key in ("accuracy", "macro_f1", "ece"):
        assert math.isfinite(m[key]) and 0.0 <= m[key] <= 1.0, key
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == n and close(m["accuracy"], np.trace(cm) / n, abs_=1e-6)
    perm = data.draw(_perm(n))
    mp = classification_metrics(torch.from_numpy(logits[perm]), torch.from_numpy(labels[perm]), classes)
    assert mp["confusion_matrix"] == m["confusion_matrix"] and mp["per_class_accuracy"] == m["per_class_accuracy"]
    for key in ("accuracy", "macro_f1", "ece"):
        assert close(mp[key], m[key], abs_=1e-6), key


@_PROFILE
@given(logits_and_labels(), st.floats(0.5, 20.0))
def test_predictions_equal_to_the_labels_score_one(case: tuple[np.ndarray, np.ndarray], margin: float) -> None:
    logits, labels = case
    c = logits.shape[1]
    perfect = np.zeros_like(logits, dtype=np.float32)
    perfect[np.arange(len(labels)), labels] = margin
    m = classification_metrics(torch.from_numpy(perfect), torch.from_numpy(labels), [str(i) for i in range(c)])
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0  # classes absent from labels and predictions don't count
    present = set(labels.tolist())
    assert m["per_class_accuracy"] == {str(i): (1.0 if i in present else None) for i in range(c)}
    assert 0.0 <= m["ece"] <= 1.0


@_PROFILE
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=10), st.randoms(use_true_random=False))
def test_mean_std_is_order_invariant_and_bounded(values: list[float], rnd: random.Random) -> None:
    m, s = mean_std(values)
    shuffled = list(values)
    rnd.shuffle(shuffled)
    m2, s2 = mean_std(shuffled)
    assert close(m, m2, abs_=1e-6) and close(s, s2, abs_=1e-6)
    assert min(values) - 1e-6 <= m <= max(values) + 1e-6 and s >= 0.0


# == config parsing ==============================================================================================
def _method_names() -> list[str]:
    from transferkit.adapt.methods import list_methods

    return ["none", *sorted(list_methods())]


def _validator_names() -> list[str]:
    from transferkit.measure.selection import VALIDATORS

    return sorted(VALIDATORS)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True).filter(lambda s: ".." not in s)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)


def _pos(hi: float) -> st.SearchStrategy[float]:
    return st.floats(0.0, hi, exclude_min=True)


def _opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid raw mapping: any subset of sections and fields, each with a value in its documented range."""
    def lit(model: type[BaseModel], field: str) -> st.SearchStrategy[str]:
        return st.sampled_from(typing.get_args(model.model_fields[field].annotation))

    sections = {
        "data": st.fixed_dictionaries({}, optional={
            "source": _text.filter(bool), "target": _opt(_text), "train_split": _text,
            "source_per_class": _opt(st.integers(1, 10_000)), "val_fraction": st.floats(0.0, 0.9, exclude_max=True),
            "batch_size": st.integers(1, 65536), "eval_batch_size": st.integers(1, 65536),
            "num_workers": st.integers(0, 64), "augment": st.booleans(), "augment_min_scale": _pos(1.0),
            "cache_mb": st.integers(0, 10**6), "root": _opt(_text),
        }),
        "model": st.fixed_dictionaries({}, optional={
            "backbone": st.sampled_from(["lenet", "mlp", "logmel-cnn", "timm:resnet18", "hf:some/model"]),
            "pretrained": st.booleans(), "backbone_kwargs": st.dictionaries(_text, _json, max_size=3),
            "head_dropout": st.floats(0.0, 1.0, exclude_max=True), "bottleneck_dim": _opt(st.integers(1, 4096)),
        }),
        "finetune": st.fixed_dictionaries({}, optional={
            "strategy": lit(FinetuneConfig, "strategy"), "freeze_stages": st.integers(0, 10),
            "backbone_lr_mult": st.floats(0.0, 10.0), "layer_decay": _opt(_pos(1.0)), "lp_epochs": st.integers(1, 50),
            "lp_lr": _opt(_pos(10.0)), "freeze_bn": st.booleans(), "lora_r": st.integers(1, 1024),
            "lora_alpha": _pos(100.0), "lora_dropout": st.floats(0.0, 1.0, exclude_max=True),
            "lora_targets": _opt(st.lists(_text, max_size=3)),
        }),
        "adapt": st.fixed_dictionaries({}, optional={
            "method": st.sampled_from(_method_names()), "weight": _opt(st.floats(0.0, 100.0)),
            "schedule": lit(AdaptConfig, "schedule"), "options": st.dictionaries(_text, _json, max_size=3),
            "guard": st.booleans(), "guard_max_source_drop": st.floats(0.0, 1.0),
            "guard_gap_alpha": _opt(st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)),
            "guard_validator": _opt(st.sampled_from(_validator_names())),
        }),
        "train": st.fixed_dictionaries({}, optional={
            "epochs": st.integers(1, 100_000), "lr": _pos(10.0), "optimizer": lit(TrainConfig, "optimizer"),
            "momentum": st.floats(0.0, 1.0, exclude_max=True), "weight_decay": st.floats(0.0, 1.0),
            "scheduler": lit(TrainConfig, "scheduler"), "warmup_epochs": st.floats(0.0, 100.0),
            "grad_accum_steps": st.integers(1, 1024), "max_grad_norm": _opt(_pos(1e3)),
            "label_smoothing": st.floats(0.0, 1.0, exclude_max=True),
            "mixed_precision": lit(TrainConfig, "mixed_precision"), "device": lit(TrainConfig, "device"),
            "early_stopping_patience": _opt(st.integers(1, 100)), "keep_checkpoints": st.integers(1, 10),
            "threads": _opt(st.integers(1, 64)),
        }),
    }
    top = {
        "name": _name, "output_dir": _text, "online": st.booleans(),
        "seeds": st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5, unique=True),
    }
    return draw(st.fixed_dictionaries({}, optional={**top, **sections}))


@_PROFILE
@given(raw_configs())
def test_config_round_trips_through_yaml(raw: dict[str, Any]) -> None:
    cfg = parse_config(raw)
    for section, fields in raw.items():  # every drawn value arrived where it was put
        if isinstance(fields, dict):
            for key, value in fields.items():
                assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"
        else:
            assert getattr(cfg, section) == fields, section
    again = parse_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()


_NUMERIC_FIELDS = {"train.lr": (0.0, 10.0), "train.weight_decay": (0.0, 1e6), "adapt.weight": (0.0, 1e6),
                   "finetune.backbone_lr_mult": (0.0, 10.0), "train.warmup_epochs": (0.0, 1e6)}


@_PROFILE
@given(
    st.sampled_from(sorted(_NUMERIC_FIELDS)), st.floats(1e-12, 10.0), st.sampled_from(["r", "e", "E", "g", ".3e"]),
)
@example("train.lr", 1e-4, "r")
@example("train.lr", 1e-4, "g")
@example("train.lr", 3e-5, ".3e")
def test_override_round_trips_numbers(key: str, value: float, fmt: str) -> None:
    text = repr(value) if fmt == "r" else format(value, fmt)  # 1e-05, 1.000000e-05, 1.000000E-05, 1e-05, 1.000e-05
    lo, hi = _NUMERIC_FIELDS[key]
    expected = float(text)
    parsed_key, parsed = parse_override(f"{key}={text}")
    # "1" (format(1.0, "g")) is read as the int 1, which pydantic accepts for a float field
    assert parsed_key == key and type(parsed) in (int, float) and parsed == expected
    if lo < expected <= hi:
        section, field = key.split(".")
        assert getattr(getattr(parse_config({}, {key: parsed}), section), field) == expected


@_PROFILE
@given(st.sampled_from(["train.epochs", "data.batch_size", "train.grad_accum_steps"]), st.integers(1, 1024))
def test_override_round_trips_integers(key: str, value: int) -> None:
    assert parse_override(f"{key}={value}") == (key, value)
    section, field = key.split(".")
    assert getattr(getattr(parse_config({}, dict([parse_override(f" {key} = {value} ")])), section), field) == value


def _sections() -> dict[str, type[BaseModel]]:
    return {name: f.annotation for name, f in RunConfig.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}


def _all_fields() -> list[tuple[str | None, str]]:
    top = [(None, name) for name in RunConfig.model_fields if name not in _sections()]
    return top + [(s, f) for s, model in _sections().items() for f in model.model_fields]


@_PROFILE
@given(st.data())
def test_unknown_keys_are_config_errors(data: st.DataObject) -> None:
    sections = _sections()
    where = data.draw(st.sampled_from([None, *sorted(sections)]))
    known = set(RunConfig.model_fields) if where is None else set(sections[where].model_fields)
    key = data.draw((_text | st.integers() | st.none()).filter(lambda k: k not in known))
    value = data.draw(_json)
    raw = {key: value} if where is None else {where: {key: value}}
    with pytest.raises(ConfigError):
        parse_config(raw)


_JUNK = (
    st.none() | st.booleans() | st.integers() | st.floats() | _text | st.lists(st.integers(), max_size=3)
    | st.dictionaries(_text, st.integers(), max_size=2) | st.just(object()) | st.just(b"\x00bytes")
)


@_PROFILE
@given(st.sampled_from(_all_fields()), _JUNK, st.booleans())
def test_junk_field_values_are_config_errors_or_valid(
    where: tuple[str | None, str], junk: Any, as_override: bool
) -> None:
    """Any value for any field either validates or raises ConfigError: never a raw pydantic or type error. A value
    that validates makes a valid config: the run writes it to config.yaml and a resume reads it back, so it must
    come back as the same settings (a value the schema let through without making it its own type would not)."""
    section, field = where
    dotted = field if section is None else f"{section}.{field}"
    try:
        cfg = parse_config({}, {dotted: junk}) if as_override else parse_config(
            {field: junk} if section is None else {section: {field: junk}})
    except ConfigError:
        return
    assert parse_config(yaml.safe_load(cfg.to_yaml())) == cfg


@_PROFILE
@given(st.sampled_from(sorted(_sections())), _JUNK.filter(lambda v: not isinstance(v, dict)))
def test_a_section_that_is_not_a_mapping_is_a_config_error(section: str, junk: Any) -> None:
    with pytest.raises(ConfigError):
        parse_config({section: junk})
    with pytest.raises(ConfigError):  # an override that reaches through it
        parse_config({section: junk}, {f"{section}.x": 1})


_NASTY_YAML = ["2020-13-45", "2021-02-30", "2020-01-01 25:00:00", "!!int x", "!!float y", "!!timestamp 1-2-3"]


@settings(_PROFILE, report_multiple_bugs=False)
@given(st.sampled_from(["data.source", "train.lr", "name"]), st.sampled_from(_NASTY_YAML) | _text)
@example("data.source", "2020-13-45")
def test_override_values_that_yaml_cannot_construct_are_config_errors(key: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_override(f"{key}={value}")


@settings(_PROFILE, report_multiple_bugs=False)
@given(st.sampled_from([f"data: {{source: {v}}}" for v in _NASTY_YAML]) | _text)
@example("train: {lr: !!float x}")
def test_any_config_file_text_is_loaded_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text(text, encoding="utf-8")
        with contextlib.suppress(ConfigError):
            RunConfig.from_yaml(path)


def test_a_self_referencing_yaml_alias_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_config(yaml.safe_load("adapt: {options: &a {x: *a}}"))
