"""Transferability metrics against direct, loop-based computations and their known properties."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.covariance import ledoit_wolf

from transferkit.errors import ConfigError, DataError
from transferkit.measure import transferability as tr
from transferkit.measure.transferability import (
    METRICS,
    gbc,
    hscore,
    leep,
    list_metrics,
    logme,
    nce,
    score,
    transrate,
)


def _class_features(n: int, d: int, c: int, sep: float, seed: int = 0,
                    rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around random means (every class present); ``rank`` < d makes the features low-rank."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    r = rank or d
    latent = rng.normal(size=(n, r)) + sep * rng.normal(size=(c, r))[y]
    f = latent if rank is None else latent @ rng.normal(size=(r, d))
    return f, y


def _source_probs(y: np.ndarray, z: int, sharpness: float, seed: int = 0) -> np.ndarray:
    """Softmax outputs of a made-up source model with ``z`` classes that partly follow the target labels."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), z))
    logits[np.arange(len(y)), y % z] += sharpness
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# -- direct computations: one class, one sample, one pair at a time --------------------------------------------
def _dense_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    return float(
        n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
        - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m - 0.5 * np.linalg.slogdet(a)[1]
    )


def _null_evidence(y: np.ndarray) -> float:
    """Evidence / N of the model ``w = 0`` with its best noise precision ``β = N/‖y‖²``: the limit ``α/β -> ∞``
    that MacKay's updates head for when the features say nothing about ``y``."""
    n = len(y)
    return -0.5 * (1.0 + math.log(2 * math.pi)) - 0.5 * math.log(float(y @ y) / n)


def _direct_logme(f: np.ndarray, y: np.ndarray) -> float:
    """MacKay's updates with dense matrices in the original space, one class after another.

    Where the features carry no signal for a class the updates run towards ``α/β -> ∞``: the effective number of
    parameters γ = D - α·tr(A⁻¹) is then a difference of two nearly equal numbers and can round to zero or below
    (on some CPUs' BLAS, not others). The reference then takes the limit itself (the evidence of ``w = 0``), as the
    library does, instead of feeding a non-positive α to a logarithm.
    """
    n, d = f.shape
    top = float(np.linalg.eigvalsh(f.T @ f).max())
    out = []
    for c in range(int(y.max()) + 1):
        yc = (y == c).astype(float)
        alpha, beta, limit = 1.0, 1.0, False
        for _ in range(5000):
            a = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a, f.T @ yc)
            gamma = d - alpha * np.trace(np.linalg.inv(a))
            if not gamma > 0 or not m @ m > 0:
                limit = True
                break
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / np.sum((f @ m - yc) ** 2)
            change = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta)
            alpha, beta = new_alpha, new_beta
            if alpha / beta > 1e12 * max(top, 1.0):
                limit = True
                break
            if change < 1e-13:
                break
        out.append(_null_evidence(yc) if limit else _dense_evidence(f, yc, alpha, beta) / n)
    return float(np.mean(out))


def _direct_leep(p: np.ndarray, y: np.ndarray) -> float:
    n, z = p.shape
    c = int(y.max()) + 1
    joint = [[sum(p[i, k] for i in range(n) if y[i] == j) / n for k in range(z)] for j in range(c)]
    marg = [sum(joint[j][k] for j in range(c)) for k in range(z)]
    total = 0.0
    for i in range(n):
        total += math.log(sum(joint[y[i]][k] / marg[k] * p[i, k] for k in range(z) if marg[k] > 0))
    return total / n


def _direct_nce(z: np.ndarray, y: np.ndarray) -> float:
    pairs = Counter(zip(y.tolist(), z.tolist(), strict=True))
    per_z = Counter(z.tolist())
    n = len(y)
    return sum(cnt / n * math.log(cnt / per_z[zz]) for (_, zz), cnt in pairs.items())


def _direct_hscore(f: np.ndarray, y: np.ndarray, shrinkage: bool) -> float:
    n, d = f.shape
    mu = sum(f[i] for i in range(n)) / n
    if shrinkage:
        cov, a = ledoit_wolf(f)  # sklearn centres the data itself here
    else:
        cov, a = sum(np.outer(f[i] - mu, f[i] - mu) for i in range(n)) / n, 0.0
    between = np.zeros((d, d))
    for c in range(int(y.max()) + 1):
        members = [f[i] for i in range(n) if y[i] == c]
        mc = sum(members) / len(members)
        between += len(members) / n * np.outer(mc - mu, mc - mu)
    inv = np.linalg.inv(cov) if shrinkage else np.linalg.pinv(cov)
    return float(np.trace(inv @ ((1 - a) * between)))


def _direct_gbc(f: np.ndarray, y: np.ndarray, min_variance: float = 1e-4) -> float:
    n, d = f.shape
    c = int(y.max()) + 1
    floor = min_variance * np.mean([np.var(f[:, k]) for k in range(d)])
    stats = []
    for j in range(c):
        rows = [f[i] for i in range(n) if y[i] == j]
        mean = sum(rows) / len(rows)
        var = sum((r - mean) ** 2 for r in rows) / len(rows)
        stats.append((mean, np.diag(np.maximum(var, floor))))
    total = 0.0
    for i in range(c):
        for j in range(c):
            if i == j:
                continue
            (mi, si), (mj, sj) = stats[i], stats[j]
            s = (si + sj) / 2
            db = (mi - mj) @ np.linalg.inv(s) @ (mi - mj) / 8 + 0.5 * math.log(
                np.linalg.det(s) / math.sqrt(np.linalg.det(si) * np.linalg.det(sj))
            )
            total += math.exp(-db)
    return -total


def _direct_transrate(f: np.ndarray, y: np.ndarray, eps: float = 1e-4) -> float:
    def rate(z: np.ndarray) -> float:
        n, d = z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]

    z = f - f.mean(0)
    c = int(y.max()) + 1
    return rate(z) - sum(rate(z[y == k]) for k in range(c)) / c


# -- LogME -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "d", "c", "rank", "sep"),
    [
        (80, 6, 3, None, 1.5),  # N > D: FᵀF
        (200, 20, 4, None, 1.5),
        (150, 10, 3, None, 0.2),  # weak signal: flat evidence, where repeating the updates crawls
        (100, 30, 3, None, 0.0),  # no signal at all
        (30, 50, 3, 10, 1.5),  # N <= D: FFᵀ; low rank so the labels are not fitted exactly
        (40, 40, 3, 20, 1.5),
        (50, 1, 2, None, 1.5),  # a single feature
    ],
)
def test_logme_matches_dense_fixed_point(n: int, d: int, c: int, rank: int | None, sep: float) -> None:
    f, y = _class_features(n, d, c, sep=sep, seed=n + d, rank=rank)
    assert logme(f, y, tol=1e-13, max_iter=5000) == pytest.approx(_direct_logme(f, y), rel=1e-9, abs=1e-11)


def test_logme_of_features_that_say_nothing_is_the_evidence_of_w_zero() -> None:
    # Features orthogonal to every class indicator (and centred): Fᵀy = 0, so the posterior mean is 0 for any α, β
    # and the evidence rises all the way to α/β -> ∞. The library must take that limit itself, with no log(0).
    rng = np.random.default_rng(4)
    n, c = 90, 3
    y = np.arange(n) % c
    indicators = np.eye(c)[y]
    raw = rng.normal(size=(n, 12))
    f = raw - indicators @ np.linalg.lstsq(indicators, raw, rcond=None)[0]  # each class's mean removed
    assert np.abs(f.T @ indicators).max() < 1e-9
    expected = float(np.mean([_null_evidence((y == k).astype(float)) for k in range(c)]))
    assert logme(f, y) == pytest.approx(expected, rel=1e-9)
    assert logme(f, y) == pytest.approx(_direct_logme(f, y), rel=1e-9)


def test_logme_is_the_maximum_of_the_evidence() -> None:
    f, y = _class_features(40, 3, 2, sep=1.0, seed=3)
    best = []
    for c in range(2):
        yc = (y == c).astype(float)
        res = minimize(
            lambda p, yc=yc: -_dense_evidence(f, yc, math.exp(p[0]), math.exp(p[1])),
            x0=[0.0, 0.0],
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000},
        )
        best.append(-res.fun / len(f))
    assert logme(f, y, tol=1e-13) == pytest.approx(np.mean(best), abs=1e-8)


def test_logme_primal_and_dual_agree() -> None:
    f, y = _class_features(60, 12, 3, sep=1.0, seed=5)
    y1h = tr._one_hot(y, 3)
    primal = tr._logme_fixed_point(tr._tridiagonalize(f.T @ f, f.T @ y1h), y1h.sum(0), 60, False, 5000, 1e-13)
    dual = tr._logme_fixed_point(tr._tridiagonalize(f @ f.T, y1h), y1h.sum(0), 60, True, 5000, 1e-13)
    np.testing.assert_allclose(primal[0], dual[0], rtol=1e-9)


def test_logme_unchanged_when_label_names_are_permuted() -> None:
    f, y = _class_features(90, 8, 5, sep=1.0, seed=7)
    perm = np.array([3, 0, 4, 1, 2])
    assert logme(f, perm[y]) == pytest.approx(logme(f, y), rel=1e-10)


def test_logme_does_not_depend_on_the_scale_of_the_features() -> None:
    # scaling F by k is absorbed by the prior precision α -> k²α: the maximised evidence is the same
    f, y = _class_features(120, 8, 4, sep=1.0, seed=3)
    assert logme(1e-3 * f, y) == pytest.approx(logme(f, y), rel=1e-9)
    assert logme(1e3 * f, y) == pytest.approx(logme(f, y), rel=1e-9)


def test_logme_higher_for_informative_than_random_features() -> None:
    f, y = _class_features(300, 16, 4, sep=2.0, seed=1)
    noise = np.random.default_rng(1).normal(size=f.shape)
    assert logme(f, y) > logme(noise, y) + 0.1


def test_logme_of_features_that_carry_nothing_is_the_noise_only_evidence() -> None:
    y = np.repeat([0, 1, 2], [10, 20, 30])
    n_c = np.array([10, 20, 30])
    expected = np.mean(-0.5 * (1 + math.log(2 * math.pi)) - 0.5 * np.log(n_c / 60))
    assert logme(np.zeros((60, 4)), y) == pytest.approx(expected, rel=1e-12)


# -- LEEP and NCE ----------------------------------------------------------------------------------------------
def test_leep_matches_direct() -> None:
    _, y = _class_features(60, 2, 4, sep=0.0, seed=2)
    p = _source_probs(y, 6, sharpness=2.0, seed=2)
    assert leep(p, y) == pytest.approx(_direct_leep(p, y), rel=1e-12)


def test_leep_is_at_most_zero_and_zero_for_a_perfect_source() -> None:
    rng = np.random.default_rng(0)
    for seed in range(5):
        _, y = _class_features(50, 2, 3, sep=0.0, seed=seed)
        p = rng.dirichlet(np.ones(7), size=50)
        assert leep(p, y) <= 0.0
    assert leep(np.eye(3)[y], y) == pytest.approx(0.0, abs=1e-12)


def test_leep_with_hard_predictions_is_nce() -> None:
    _, y = _class_features(70, 2, 3, sep=0.0, seed=4)
    z = np.random.default_rng(4).integers(0, 5, size=70)
    assert leep(z, y) == pytest.approx(nce(z, y), rel=1e-12)


def test_nce_matches_direct_and_is_at_most_zero() -> None:
    _, y = _class_features(80, 2, 4, sep=0.0, seed=6)
    p = _source_probs(y, 5, sharpness=1.0, seed=6)
    z = p.argmax(1)
    assert nce(p, y) == pytest.approx(_direct_nce(z, y), rel=1e-12)
    assert nce(z, y) == pytest.approx(_direct_nce(z, y), rel=1e-12)
    assert nce(p, y) <= 0.0
    assert nce(y * 2, y) == pytest.approx(0.0, abs=1e-12)  # y is a function of z


# -- H-score, GBC, TransRate -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shrinkage", [True, False])
def test_hscore_matches_direct(shrinkage: bool) -> None:
    f, y = _class_features(60, 5, 3, sep=1.0, seed=8)
    assert hscore(f, y, shrinkage=shrinkage) == pytest.approx(_direct_hscore(f, y, shrinkage), rel=1e-9)


def test_hscore_higher_for_separable_than_shuffled_labels() -> None:
    f, y = _class_features(150, 10, 3, sep=2.0, seed=9)
    shuffled = np.random.default_rng(9).permutation(y)
    assert hscore(f, y) > 5 * hscore(f, shuffled)
    assert 0.0 <= hscore(f, shuffled) < hscore(f, y) <= 2.0  # at most min(C - 1, D)


def test_gbc_matches_direct_and_lies_in_range() -> None:
    f, y = _class_features(45, 4, 3, sep=1.0, seed=10)
    f[y == 2, 0] = 1.5  # a constant feature in one class: its variance is floored
    assert gbc(f, y) == pytest.approx(_direct_gbc(f, y), rel=1e-10)
    assert -6.0 <= gbc(f, y) <= 0.0
    far, yf = _class_features(45, 4, 3, sep=50.0, seed=10)
    assert gbc(far, yf) > gbc(f, y)
    assert gbc(far * 1e-3, yf) == pytest.approx(gbc(far, yf), rel=1e-9)  # independent of the features' scale


def test_transrate_matches_direct() -> None:
    f, y = _class_features(40, 12, 3, sep=1.0, seed=11)  # 13-14 items per class: ZZᵀ per class, ZᵀZ overall
    assert transrate(f, y) == pytest.approx(_direct_transrate(f, y), rel=1e-10)
    assert transrate(f, y, eps=0.3) == pytest.approx(_direct_transrate(f, y, eps=0.3), rel=1e-10)


# -- the registry ----------------------------------------------------------------------------------------------
def test_list_metrics_describes_every_metric() -> None:
    described = list_metrics()
    assert set(described) == set(METRICS) == {"logme", "leep", "nce", "hscore", "gbc", "transrate"}
    for name, line in described.items():
        assert "\n" not in line and "20" in line, name  # one line, with the paper's year
    assert {n for n, s in METRICS.items() if s.needs_source_probs} == {"leep", "nce"}


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_score_dispatches_and_ignores_label_names(metric: str) -> None:
    f, y = _class_features(60, 5, 3, sep=1.0, seed=12)
    p = _source_probs(y, 4, sharpness=1.5, seed=12)
    direct = {
        "logme": lambda: logme(f, y),
        "leep": lambda: leep(p, y),
        "nce": lambda: nce(p, y),
        "hscore": lambda: hscore(f, y),
        "gbc": lambda: gbc(f, y),
        "transrate": lambda: transrate(f, y),
    }[metric]()
    value = score(metric, f, y, source_probs=p)
    assert isinstance(value, float) and math.isfinite(value)
    assert value == pytest.approx(direct, rel=1e-12)
    perm = np.array([2, 0, 1])
    assert score(metric, f, perm[y], source_probs=p) == pytest.approx(value, rel=1e-9, abs=1e-12)


# -- bad input -------------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors() -> None:
    f, y = _class_features(30, 4, 3, sep=1.0, seed=13)
    with pytest.raises(DataError, match="29 labels for 30 rows"):
        score("logme", f, y[:-1])
    with pytest.raises(DataError, match="shape"):
        logme(f[:, 0], y)
    bad = f.copy()
    bad[4, 2] = np.nan
    with pytest.raises(DataError, match=r"1 NaN/Inf value.*row 4"):
        hscore(bad, y)
    with pytest.raises(DataError, match="at least 2 classes"):
        gbc(f, np.zeros(30, dtype=int))
    with pytest.raises(DataError, match="never occur"):
        transrate(f, np.where(y == 1, 3, y))  # labels 0, 2, 3: no class 1
    with pytest.raises(DataError, match=r"0\.\.C-1"):
        logme(f, np.where(y == 0, -1, y))
    with pytest.raises(DataError, match="whole numbers"):
        logme(f, y + 0.5)
    with pytest.raises(ValueError):  # a DataError is a ValueError too
        logme(f, y.astype(str))


def test_leep_and_nce_need_source_predictions() -> None:
    f, y = _class_features(30, 4, 3, sep=1.0, seed=14)
    for metric in ("leep", "nce"):
        with pytest.raises(DataError, match="source_probs"):
            score(metric, f, y)
    with pytest.raises(DataError, match="source"):
        leep(None, y)
    with pytest.raises(DataError, match="not logits"):
        leep(np.random.default_rng(0).normal(size=(30, 5)), y)
    with pytest.raises(DataError, match=r"shape \(30, Z\)"):
        nce(np.full((20, 5), 0.2), y)


def test_unknown_metric_is_a_config_error() -> None:
    f, y = _class_features(30, 4, 3, sep=1.0, seed=15)
    with pytest.raises(ConfigError, match=r"unknown transferability metric 'logmee'.*logme"):
        score("logmee", f, y)


def test_gbc_reduces_wide_features_with_pca_first() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    informative = rng.normal(size=(300, 200)) + 0.2 * np.eye(3)[y] @ rng.normal(size=(3, 200))
    noise = rng.normal(size=(300, 200))
    assert gbc(informative, y) > gbc(noise, y)
    centred = informative - informative.mean(0)
    top = centred @ np.linalg.svd(centred, full_matrices=False)[2][:64].T  # written out: the top 64 PCs
    assert gbc(informative, y) == pytest.approx(gbc(top, y, pca_dim=None), rel=1e-9)
    assert gbc(informative[:, :50], y) == gbc(informative[:, :50], y, pca_dim=None)  # narrow: untouched
